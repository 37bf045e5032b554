//! What the page shows, as the JSON it receives.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    pub title: String,
    pub uptime_s: u64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub requests: Vec<RequestRow>,
    pub config: ConfigStatus,
    /// Whether the nodes' certificate expiry is known (the sidecars were asked).
    pub certificates: bool,
}

/// A workload with its sidecar (or the client, or a gateway).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Node {
    /// The workload's name, as Istio's metrics name it (`reviews-v2`).
    pub id: String,
    pub service: String,
    pub namespace: String,
    /// `workload`, `client` or `gateway`.
    pub kind: String,
    pub tenant: String,
    pub trust_domain: String,
    /// Its SPIFFE ID.
    pub identity: String,
    /// When its certificate expires (Unix seconds), once it has one.
    pub cert_expiry: Option<f64>,
    pub xds_connected: bool,
    pub updates_accepted: f64,
    pub updates_rejected: f64,
}

/// Requests from one workload to another over the last interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub rps: f64,
    /// The share of 5xx answers.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Mutual TLS as the server's sidecar saw it (`connection_security_policy`).
    pub mtls: bool,
    /// Requests since the sidecars started.
    pub total: f64,
}

/// A line of the built-in client's traffic.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestRow {
    pub request: String,
    pub rps: f64,
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub served_by: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigStatus {
    /// The control plane's input generation.
    pub generation: u64,
    /// Resources the control plane refused, each with where it is and why.
    pub refused: Vec<String>,
    pub warnings: usize,
    /// Pushes proxies refuse now: the node, the resource type and the proxy's reason.
    pub rejected_by_proxies: Vec<String>,
}
