//! Istio resources in their real YAML form (`networking.istio.io/v1`,
//! `security.istio.io/v1`): the fields Trellis honours. Fields Trellis does not know
//! are reported by the loader as warnings naming them.

use std::collections::BTreeMap;

use serde::Deserialize;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default, alias = "matchLabels")]
    pub labels: Labels,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: Labels,
}

// ---- networking.istio.io/v1 ----

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
}

/// Istio's `TLSRoute`: TLS connections routed by SNI without termination.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4Match>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Istio's `TCPRoute`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4Match>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Istio's `TLSMatchAttributes` and `L4MatchAttributes` (`sniHosts` only in TLS).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct L4Match {
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub source_labels: Labels,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// Istio's Gateway: the servers (ports, hosts, TLS) a gateway proxy selected by
/// `selector` opens; VirtualServices bind to it with `gateways:`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub selector: Labels,
    #[serde(default)]
    pub servers: Vec<GatewayServer>,
}

/// What a server makes of its port; one port serves one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Http,
    /// HTTPS terminated here, HTTP routes.
    Https,
    /// TCP routes.
    Tcp,
    /// TLS terminated here, TCP routes.
    TlsTerminated,
    /// TLS not terminated, routed by SNI (`tls` routes).
    Passthrough,
}

impl GatewayServer {
    /// What this server makes of its port (`None`: a protocol Istio does not know).
    pub fn kind(&self) -> Option<ServerKind> {
        let mode = self.tls.as_ref().and_then(|t| t.mode.as_deref());
        Some(
            match self.port.as_ref()?.protocol.to_ascii_uppercase().as_str() {
                "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => ServerKind::Http,
                "HTTPS" | "TLS" if matches!(mode, Some("PASSTHROUGH" | "AUTO_PASSTHROUGH")) => {
                    ServerKind::Passthrough
                }
                "HTTPS" => ServerKind::Https,
                "TLS" => ServerKind::TlsTerminated,
                "TCP" | "MONGO" | "MYSQL" | "REDIS" => ServerKind::Tcp,
                _ => return None,
            },
        )
    }

    /// For a server that terminates TLS, what it asks of the handshake.
    pub fn handshake(&self) -> Option<HandshakePolicy> {
        matches!(
            self.kind(),
            Some(ServerKind::Https | ServerKind::TlsTerminated)
        )
        .then(|| self.tls.as_ref().map(ServerTls::handshake_policy))
        .flatten()
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerKind::Http => "plaintext HTTP",
            ServerKind::Https => "HTTPS",
            ServerKind::Tcp => "TCP",
            ServerKind::TlsTerminated => "TLS terminated",
            ServerKind::Passthrough => "TLS passthrough",
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServer {
    pub port: Option<GatewayPort>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTls>,
    #[serde(default)]
    pub name: Option<String>,
    /// Read to refuse: binding a server to one address is not supported yet.
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub default_endpoint: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub ca_crl: Option<String>,
}

/// The cipher suites a Gateway server may name, as Istio lists them (its
/// `pkg/config/security` `ValidCipherSuites`, from `bssl ciphers -openssl-name ALL`).
pub const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

impl ServerTls {
    /// MUTUAL and OPTIONAL_MUTUAL verify client certificates (the first requires one).
    pub fn verifies_clients(&self) -> bool {
        matches!(self.mode.as_deref(), Some("MUTUAL" | "OPTIONAL_MUTUAL"))
    }

    /// `cipherSuites` as Istio filters them: the names it knows and cipher-list operators
    /// (`-X`, `!X`, `+X`, `ALL`) are kept in order, duplicates and unknown names are not
    /// (returned second, for the warning Istio gives).
    pub fn cipher_suites(&self) -> (Vec<String>, Vec<String>) {
        let (mut kept, mut dropped) = (Vec::<String>::new(), Vec::new());
        for cs in &self.cipher_suites {
            let operator = cs
                .chars()
                .next()
                .is_some_and(|c| !c.is_ascii_alphanumeric());
            let known = cs == "ALL" || operator || VALID_CIPHER_SUITES.contains(&cs.as_str());
            if known && !kept.contains(cs) {
                kept.push(cs.clone());
            } else {
                dropped.push(cs.clone());
            }
        }
        (kept, dropped)
    }

    /// What a terminating server asks of the handshake besides its certificate. Servers
    /// on one port share one handshake (the certificate is picked by SNI, the rest is
    /// the port's), so they must ask the same. MUTUAL with a `credentialName` takes its
    /// client CA from that credential, so the credential is part of it.
    pub fn handshake_policy(&self) -> HandshakePolicy {
        let mode = self.mode.clone().unwrap_or_else(|| "SIMPLE".into());
        HandshakePolicy {
            client_credential: self
                .verifies_clients()
                .then(|| self.credential_name.clone())
                .flatten(),
            mode,
            ca_certificates: self.ca_certificates.clone(),
            subject_alt_names: self.subject_alt_names.clone(),
            min_protocol_version: self.min_protocol_version.clone(),
            max_protocol_version: self.max_protocol_version.clone(),
            cipher_suites: self.cipher_suites().0,
            ca_crl: self.ca_crl.clone(),
        }
    }
}

/// See [`ServerTls::handshake_policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakePolicy {
    pub mode: String,
    pub ca_certificates: Option<String>,
    pub client_credential: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub min_protocol_version: Option<String>,
    pub max_protocol_version: Option<String>,
    pub cipher_suites: Vec<String>,
    pub ca_crl: Option<String>,
}

impl HandshakePolicy {
    /// Why a server cannot join a port whose handshake another server (`other`) set.
    pub fn differs(port: u32, other: &str) -> String {
        format!("port {port} terminates TLS with other settings in {other} (mode, client CA, subjectAltNames, versions or cipher suites); servers on one port share one handshake and may differ only in their certificate")
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFault>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default)]
    pub cors_policy: Option<CorsPolicy>,
    /// Set on the routes converted from Gateway API HTTPRoutes, never read from YAML.
    #[serde(skip)]
    pub gateway_api: Option<crate::gateway_api::RouteSemantics>,
}

/// Istio's `HTTPRoute.corsPolicy`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<String>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (the default) or `IGNORE`.
    #[serde(default)]
    pub unmatched_preflights: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub source_labels: Labels,
    #[serde(default)]
    pub source_namespace: Option<String>,
    /// The gateways (`mesh` for the sidecars) this match applies on; all of the
    /// VirtualService's when empty.
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// Exactly one of the three, as Istio's StringMatch oneof.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    pub number: u16,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub redirect_code: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<HttpBody>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    #[serde(default)]
    pub string: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    #[serde(default)]
    pub retry_on: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpFault {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    pub fixed_delay: String,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    pub http_status: u16,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Percent {
    pub value: f64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// A traffic policy for one port; it replaces the policy it sits in for that port
/// (fields it leaves out take their defaults, not the outer policy's).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

impl TrafficPolicy {
    /// The policy for `port`: its port-level settings for that port, which replace it
    /// whole (Istio's GetPortLevelTrafficPolicy), and whether there were some.
    pub fn at_port(&self, port: u16) -> (TrafficPolicy, bool) {
        let found = self
            .port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|p| p.number == port));
        match found {
            Some(s) => (s.policy(), true),
            None => (self.clone(), false),
        }
    }
}

impl PortTrafficPolicy {
    /// The policy these settings make on their own.
    pub fn policy(&self) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: self.load_balancer.clone(),
            connection_pool: self.connection_pool.clone(),
            outlier_detection: self.outlier_detection.clone(),
            tls: self.tls.clone(),
            port_level_settings: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    /// Validated as Istio does, then not applied (warned): slow start changes how much
    /// traffic a new endpoint gets, never where traffic may go.
    #[serde(default)]
    pub warmup: Option<Warmup>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
}

/// Istio's `WarmupConfiguration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Warmup {
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub minimum_percent: Option<f64>,
    #[serde(default)]
    pub aggression: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    LeastRequest,
    Random,
    Passthrough,
    RoundRobin,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub use_source_ip: bool,
    #[serde(default)]
    pub maglev: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    #[serde(default)]
    pub tcp: Option<TcpPool>,
    #[serde(default)]
    pub http: Option<HttpPool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpPool {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPool {
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    #[serde(default)]
    pub sni: Option<String>,
    /// SIMPLE / MUTUAL origination: files on the sidecar's machine.
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Read to refuse: Kubernetes Secrets (and ConfigMaps) for origination are not
    /// served to sidecars yet.
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Read to refuse `true`: Trellis always verifies the server.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// Read to refuse: revocation lists are not checked.
    #[serde(default)]
    pub ca_crl: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    #[default]
    IstioMutual,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub target_port: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// Empty only with `network` (an endpoint reached through that network's gateway).
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub locality: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// What a sidecar does with traffic to hosts outside the registry. Trellis sidecars
/// reach registered services only (`REGISTRY_ONLY`); `ALLOW_ANY` is warned.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressListener {
    pub hosts: Vec<String>,
    /// A listener of its own on `bind:port` (sidecars run without traffic capture, so
    /// Istio's `captureMode: NONE`): the way an app reaches a TCP service.
    #[serde(default)]
    pub port: Option<EgressPort>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressPort {
    pub number: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
}

// ---- security.istio.io/v1 ----

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub mtls: Option<Mtls>,
    /// Keyed by port number; Kubernetes hands the keys over as strings (`"8080":`).
    #[serde(default, deserialize_with = "port_keys")]
    pub port_level_mtls: Option<BTreeMap<u32, Mtls>>,
}

/// A map keyed by port numbers written as numbers or as strings of digits.
fn port_keys<'de, D, V>(de: D) -> Result<Option<BTreeMap<u32, V>>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct PortKey(u32);
    impl<'de> Deserialize<'de> for PortKey {
        fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct Visit;
            impl serde::de::Visitor<'_> for Visit {
                type Value = PortKey;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a port number")
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("{v} is not a port number")))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("{v} is not a port number")))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortKey, E> {
                    v.parse::<u32>()
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("{v:?} is not a port number")))
                }
            }
            de.deserialize_any(Visit)
        }
    }
    let map: Option<BTreeMap<PortKey, V>> = Option::deserialize(de)?;
    Ok(map.map(|m| m.into_iter().map(|(k, v)| (k.0, v)).collect()))
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Mtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// None when absent (any source); `Some([])` is invalid, as in Istio.
    #[serde(default)]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default)]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct RuleFrom {
    pub source: Source,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct RuleTo {
    pub operation: Operation,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: String,
    #[serde(default)]
    pub jwks: String,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: String,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
    /// How long fetching `jwksUri` may take (the control plane's fetch).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}
