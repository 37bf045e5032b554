//! The YAML schema, shaped like Envoy's listener → route → cluster model.
//!
//! Every struct denies unknown fields so that a typo is an error naming the field,
//! never a silently ignored setting.

use crate::Dur;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub matcher: Matcher,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// The workload identity agent: gets and rotates this proxy's certificate from the
    /// CA. TLS settings use it with `certificate_chain: "sds://default"` and
    /// `trusted_ca: "sds://ROOTCA"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Certificates with their keys, and CA bundles, that TLS settings name as
    /// `sds://<name>` (Envoy's SDS secrets): how a gateway's credentials reach it over
    /// xDS. The PEM is held in the config itself, not in files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
}

/// One SDS secret: a certificate with its key, or a validation context (Envoy's
/// `Secret` oneof).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<SecretCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_context: Option<SecretValidation>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretCertificate {
    /// PEM, leaf first.
    pub certificate_chain: String,
    /// PEM.
    pub private_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretValidation {
    /// PEM CA certificates.
    pub trusted_ca: String,
}

/// Never prints key material.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("tls_certificate", &self.tls_certificate.is_some())
            .field("validation_context", &self.validation_context)
            .finish()
    }
}

impl std::fmt::Debug for SecretCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCertificate { .. }")
    }
}

/// `sds://<name>`: the SDS secret a TLS setting names, when it names one.
pub fn sds_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("sds://")
}

/// The secret names that refer to the identity agent (Istio's SDS names).
pub const SDS_WORKLOAD_CERT: &str = "sds://default";
pub const SDS_ROOT_CA: &str = "sds://ROOTCA";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// RSA-2048 (Istio's default).
    #[default]
    Rsa,
    /// ECDSA P-256.
    Ecdsa,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `host:port` of the CA (`trellis ca` or istiod).
    pub ca_address: String,
    /// A name in the CA's serving certificate (DNS name or IP).
    #[serde(default = "default_ca_server_name")]
    pub ca_server_name: String,
    /// PEM roots: verifies the CA, and is the mesh trust bundle (`sds://ROOTCA`).
    pub ca_root: String,
    /// File with the bearer token for the first certificate (a bootstrap token or a
    /// Kubernetes ServiceAccount token); renewals authenticate with the current
    /// certificate and fall back to the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default)]
    pub key_type: KeyType,
    /// How the workload key signs: in memory (default) or through `cryptomb` batches,
    /// as for a file certificate (`{ cryptomb: { poll_delay: 1ms } }`).
    #[serde(
        default,
        with = "serde_yaml::with::singleton_map",
        skip_serializing_if = "is_memory"
    )]
    pub private_key_provider: PrivateKeyProvider,
    /// Requested lifetime (the CA may cap it). Rotation at half of it, ±1% jitter.
    #[serde(default = "default_cert_ttl")]
    pub cert_ttl: Dur,
    /// The trust domain a Kubernetes ServiceAccount token's account is named in, in
    /// the CSR (Istio's TRUST_DOMAIN).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Istio's `CERT_SIGNER` proxy metadata: sent with every certificate request (the
    /// CA refuses one that names another tenant's signer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_signer: Option<String>,
}

fn default_trust_domain() -> String {
    "cluster.local".into()
}

fn is_memory(p: &PrivateKeyProvider) -> bool {
    *p == PrivateKeyProvider::Memory
}

fn default_ca_server_name() -> String {
    "localhost".into()
}

fn default_cert_ttl() -> Dur {
    Dur::secs(24 * 3600)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin and metrics endpoints listen. Read once at start.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:15000".into()
}

/// How route tables are compiled for lookup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Matcher {
    pub engine: MatcherEngine,
    /// Upper bound on one route table's compiled regex program, in MiB; a bigger
    /// table is refused with the pattern that crossed it.
    pub max_regex_program_mb: u32,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher {
            engine: MatcherEngine::Automata,
            max_regex_program_mb: 256,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatcherEngine {
    /// One compiled index per route table; regexes in one lazy DFA (pure Rust).
    Automata,
    /// One compiled index per route table; regexes in one Hyperscan database
    /// (binaries built with the `hyperscan` feature).
    Hyperscan,
    /// Envoy's behaviour: each route tried in order.
    Sequential,
}

/// Limits that protect the proxy from bad or hostile downstream clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request header block, in KiB (Envoy: 60).
    pub max_request_headers_kb: u32,
    /// Most request headers (Envoy: 100).
    pub max_request_headers_count: u32,
    /// Time a client has to send a complete request header block (slowloris guard).
    pub request_headers_timeout: Dur,
    /// A downstream connection with no traffic for this long is closed.
    pub idle_timeout: Dur,
    /// Downstream connections accepted at once across all listeners; more are closed at accept.
    pub max_downstream_connections: u32,
    /// How long SIGTERM (or a removed listener) waits for in-flight requests.
    pub drain_timeout: Dur,
    /// Largest request body buffered so that it can be retried or mirrored.
    pub retry_buffer_bytes: u32,
    /// Most label sets of Istio's standard metrics (HTTP and TCP together); past it a
    /// new set is counted under one whose workload and service labels are `unknown`
    /// (and refused sets in `trellis_istio_series_overflow_total`), so that many peers
    /// cannot grow the proxy's memory and every scrape without bound.
    pub max_istio_series: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_headers_kb: 60,
            max_request_headers_count: 100,
            request_headers_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(3600),
            max_downstream_connections: 100_000,
            drain_timeout: Dur::secs(15),
            retry_buffer_bytes: 1 << 20,
            max_istio_series: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// One address, or several with `addresses` (dual stack: `0.0.0.0:80` and `[::]:80`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `tcp`, `http`, or both: then each connection's first bytes decide (an HTTP/1.x
    /// request line or the HTTP/2 preface: `http`; anything else, or nothing within
    /// 100 ms: `tcp`), as Istio does for ports whose protocol is not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpManager>,
    /// Terminate TLS on this listener (downstream TLS, mutual with `trusted_ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DownstreamTls>,
    /// Istio AuthorizationPolicy semantics for traffic on this listener (the L4 subset
    /// on TCP listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Istio RequestAuthentication for HTTP requests on this listener: JWTs are
    /// verified before authorization, and a request with an invalid one gets 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuthn>,
    /// The capture listener (Envoy's `use_original_dst`): a connection redirected here
    /// by `trellis init`'s rules is handed to the listener whose address is its original
    /// destination (exact address first, then the wildcard address of its family and
    /// port); one that no listener claims is served by this listener itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_original_dst: bool,
    /// `false`: no socket is bound; the listener only takes connections a capture
    /// listener hands to it (Envoy's `bind_to_port`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub bind_to_port: bool,
    /// TLS passthrough (Envoy's `tls_inspector` with filter chains matched by
    /// `server_names`): the client's ClientHello is read, not terminated, and the
    /// connection is spliced by the route whose names match its SNI (exact, then the
    /// longest `*.suffix`, then `*`); `tcp`, if set, takes connections no route names.
    /// Without a match the connection is closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_routes: Vec<SniRoute>,
    /// Istio's standard metrics (`istio_requests_total`, ...) for this listener's
    /// traffic, reported as the client's side or the server's, with this workload's
    /// metadata, which also goes to the peer (Istio's metadata exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio_stats: Option<IstioStats>,
}

/// Which side of a request a proxy reports (Istio's `reporter` label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The client's sidecar or a gateway (outbound).
    #[default]
    Source,
    /// The server's sidecar (inbound).
    Destination,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IstioStats {
    #[serde(default)]
    pub reporter: Reporter,
    /// The proxy's own workload. Listeners that several workloads share (a captured
    /// sidecar's outbound ones) leave it out: the proxy then uses the one its other
    /// listeners name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadMetadata>,
    /// The Telemetry API's metric overrides, in order: a later one wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricOverride>,
}

impl IstioStats {
    /// Reporting as `reporter`, with the proxy's own workload and no overrides.
    pub fn new(reporter: Reporter) -> IstioStats {
        IstioStats {
            reporter,
            workload: None,
            overrides: Vec::new(),
        }
    }
}

/// One of Istio's metric overrides: a metric turned off or on, or labels left off its
/// series (`tagOverrides` with `operation: REMOVE`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOverride {
    pub metric: IstioMetric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Istio's label names (`source_principal`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_labels: Vec<String>,
}

/// Istio's names of its standard metrics (the Telemetry API's `match.metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    AllMetrics,
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
}

impl IstioMetric {
    /// Each metric, in the order the proxy keeps them.
    pub const EACH: [IstioMetric; 8] = [
        IstioMetric::RequestCount,
        IstioMetric::RequestDuration,
        IstioMetric::RequestSize,
        IstioMetric::ResponseSize,
        IstioMetric::TcpOpenedConnections,
        IstioMetric::TcpClosedConnections,
        IstioMetric::TcpSentBytes,
        IstioMetric::TcpReceivedBytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IstioMetric::AllMetrics => "ALL_METRICS",
            IstioMetric::RequestCount => "REQUEST_COUNT",
            IstioMetric::RequestDuration => "REQUEST_DURATION",
            IstioMetric::RequestSize => "REQUEST_SIZE",
            IstioMetric::ResponseSize => "RESPONSE_SIZE",
            IstioMetric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
            IstioMetric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
            IstioMetric::TcpSentBytes => "TCP_SENT_BYTES",
            IstioMetric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
        }
    }

    pub fn of_name(name: &str) -> Option<IstioMetric> {
        std::iter::once(IstioMetric::AllMetrics)
            .chain(IstioMetric::EACH)
            .find(|m| m.name() == name)
    }

    /// Whether an override of `self` applies to `m`.
    pub fn covers(self, m: IstioMetric) -> bool {
        self == IstioMetric::AllMetrics || self == m
    }
}

/// The labels of Istio's standard metrics.
pub const ISTIO_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// A workload as Istio's metrics name it (the peer metadata sidecars exchange).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadMetadata {
    /// The workload (a Deployment's name, a WorkloadEntry's).
    pub name: String,
    pub namespace: String,
    /// `app` / `service.istio.io/canonical-name`.
    pub app: String,
    /// `version` / `service.istio.io/canonical-revision`.
    pub version: String,
    /// Istio's `CLUSTER_ID`.
    pub cluster: String,
    /// `spiffe://...` of the workload's identity.
    pub principal: String,
}

/// The service a cluster stands for (Istio's `istio.services` cluster metadata), for
/// the `destination_service*` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    /// `reviews.default.svc.cluster.local`.
    pub host: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniRoute {
    pub server_names: Vec<String>,
    pub tcp: TcpProxy,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Listener {
    /// A listener on `address` with neither behaviour yet: the other fields at their
    /// defaults (bound to its port, not a capture listener).
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Listener {
            name: name.into(),
            address: Some(address.into()),
            addresses: Vec::new(),
            tcp: None,
            http: None,
            tls: None,
            authorization: None,
            jwt: None,
            use_original_dst: false,
            bind_to_port: true,
            sni_routes: Vec::new(),
            istio_stats: None,
        }
    }

    pub fn all_addresses(&self) -> impl Iterator<Item = &String> {
        self.address.iter().chain(self.addresses.iter())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    /// The upstream cluster, or (empty) `weighted_clusters`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// One cluster picked per connection, in proportion to the weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<ClusterWeight>,
    /// A line per connection, when it closes (Envoy's tcp_proxy `access_log`: the
    /// HTTP operators read `-`, the response code `0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

impl TcpProxy {
    pub fn to(cluster: impl Into<String>) -> Self {
        TcpProxy {
            cluster: cluster.into(),
            weighted_clusters: Vec::new(),
            access_log: None,
        }
    }

    /// Every cluster the proxy may pick.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        (!self.cluster.is_empty())
            .then_some(self.cluster.as_str())
            .into_iter()
            .chain(self.weighted_clusters.iter().map(|w| w.name.as_str()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    pub name: String,
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// HTTP/1.1, or HTTP/2 when the client opens with the h2c prior-knowledge preface.
    #[default]
    Auto,
    Http1,
    Http2,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpManager {
    #[serde(default)]
    pub codec: Codec,
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// Distributed tracing (Envoy's `tracing` of the connection manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// A span per request, its context propagated in W3C and B3 headers, exported over
/// OTLP/gRPC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// `server` on a sidecar's inbound side, `client` on its outbound side and on
    /// gateways (Envoy takes it from the listener's `traffic_direction`).
    pub span_kind: SpanKind,
    /// Percent of requests without their caller's decision that are traced.
    #[serde(default = "hundred")]
    pub random_sampling: f64,
    /// Percent of requests with `x-client-trace-id` that are traced.
    #[serde(default = "hundred")]
    pub client_sampling: f64,
    /// Cap, in percent, over the decisions this proxy makes.
    #[serde(default = "hundred")]
    pub overall_sampling: f64,
    /// Literal tags on every span (Istio's `istio.canonical_service`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub provider: TraceProvider,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceProvider {
    pub opentelemetry: OpenTelemetry,
}

/// An OpenTelemetry collector taking OTLP over gRPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetry {
    /// The cluster of the collector (plaintext: spans are not sent where TLS was asked).
    pub cluster: String,
    /// The spans' `service.name`.
    pub service_name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A file path, or `stdout`.
    pub path: String,
    /// An Envoy format string of command operators (`%RESPONSE_CODE%`,
    /// `%REQ(:AUTHORITY)%`...), one line per request; `istio` is Istio's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format: Option<String>,
    /// Envoy's `json_format`: a JSON object per request, each key's value a format
    /// string; `istio` is Istio's default fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_format: Option<JsonFormat>,
}

/// A JSON access log's fields: Istio's default, or key → format string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JsonFormat {
    /// `istio`: Istio's default JSON fields.
    Named(String),
    Fields(BTreeMap<String, String>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    /// `example.com`, `*.example.com`, `example.*` or `*`. A `:port` matches only that port.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

impl VirtualHost {
    /// A virtual host without header edits of its own.
    pub fn new(name: impl Into<String>, domains: Vec<String>, routes: Vec<Route>) -> Self {
        VirtualHost {
            name: name.into(),
            domains,
            routes,
            request_headers_to_add: Vec::new(),
            request_headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            response_headers_to_remove: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
    /// Append to existing values (true) or replace them (false).
    #[serde(default = "yes")]
    pub append: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// The name of this route's spans (Envoy's `decorator.operation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Cross-origin resource sharing (Envoy's cors filter, per route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

impl Route {
    /// A route for `matches` that does nothing yet: the caller sets its `route`,
    /// `redirect` or `direct_response`.
    pub fn new(name: Option<String>, matches: RouteMatch) -> Self {
        Route {
            name,
            matches,
            operation: None,
            route: None,
            redirect: None,
            direct_response: None,
            fault: None,
            cors: None,
            request_headers_to_add: Vec::new(),
            request_headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            response_headers_to_remove: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// RE2-style full match against the path (without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Istio `ignoreUriCase`: path matching ignores ASCII case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HeaderMatcher>,
}

impl RouteMatch {
    /// Every path under `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        RouteMatch {
            prefix: Some(prefix.into()),
            ..Default::default()
        }
    }
}

/// Matches one header (or query parameter) by exactly one of the value forms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: must be present (any value); `false`: must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Negates the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// A string matched one way: `exact`, `prefix`, `suffix` or `regex` (a full match).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatcher {
    /// The same match on the value of header `name`.
    pub fn on_header(&self, name: &str) -> HeaderMatcher {
        HeaderMatcher {
            name: name.to_string(),
            exact: self.exact.clone(),
            prefix: self.prefix.clone(),
            suffix: self.suffix.clone(),
            regex: self.regex.clone(),
            present: None,
            invert: false,
        }
    }
}

/// A route's CORS policy, as Envoy's cors filter applies it: a preflight from an
/// allowed origin is answered here; an allowed origin's other requests get the
/// `access-control-allow-*` headers on their response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Vec<StringMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// A preflight from an origin not allowed goes on to the upstream (Envoy's
    /// default); with `false` it is answered here without CORS headers.
    #[serde(default = "yes")]
    pub forward_unmatched_preflights: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<WeightedCluster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Envoy's `regex_rewrite`: every match of `pattern` in the path (not the query)
    /// replaced by `substitution`, where `\1` is the first group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<RegexRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Whole-request deadline including retries (Envoy: 15 s; `0` disables).
    #[serde(default = "default_route_timeout")]
    pub timeout: Dur,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<Mirror>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_policy: Vec<HashPolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

fn default_route_timeout() -> Dur {
    Dur::secs(15)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    /// Header edits for requests that go to this cluster, and their responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Comma-separated: `5xx`, `gateway-error`, `connect-failure`, `reset`, `retriable-status-codes`.
    #[serde(default = "default_retry_on")]
    pub retry_on: String,
    #[serde(default = "one")]
    pub num_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
}

fn default_retry_on() -> String {
    "5xx,connect-failure,reset".into()
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    #[serde(default = "hundred")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default = "default_redirect_code")]
    pub response_code: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
}

fn default_redirect_code() -> u16 {
    301
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed: Dur,
    #[serde(default = "hundred")]
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub status: u16,
    #[serde(default = "hundred")]
    pub percent: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryType {
    #[default]
    Static,
    /// Endpoints are every address the names resolve to, refreshed periodically.
    Dns,
    /// No endpoints of its own: each connection goes to where the downstream connection
    /// was originally going (recovered by a capture listener), as Envoy's `ORIGINAL_DST`
    /// cluster. A connection that was not redirected has no endpoint (503, or closed).
    OriginalDst,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default, rename = "type")]
    pub discovery: DiscoveryType,
    /// None: a service scaled to zero (503), or an `original_dst` cluster.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Speak HTTP/2 (h2c) to the endpoints, multiplexing requests on one connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh_rate: Dur,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Originate TLS to the endpoints (mutual TLS with `certificate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// The mesh service behind this cluster, for Istio's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
}

fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}

fn default_dns_refresh() -> Dur {
    Dur::secs(5)
}

/// `"127.0.0.1:8080"` or `{address: "[::1]:8080", weight: 3, plaintext: true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    Address(String),
    Detailed {
        address: String,
        #[serde(default = "one")]
        weight: u32,
        /// This endpoint has no sidecar: it is reached without the cluster's TLS, which
        /// still applies to every other endpoint (Istio's `tlsMode` endpoint label).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        plaintext: bool,
        /// The same endpoint's other addresses (a dual-stack workload's other family):
        /// connections race them with Happy Eyeballs (RFC 8305: IPv6 first, the next
        /// family 250 ms later), as Envoy does with `additional_addresses`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        additional_addresses: Vec<String>,
    },
}

impl Endpoint {
    /// The short form when weight and TLS are the defaults.
    pub fn new(address: String, weight: u32, plaintext: bool) -> Self {
        Endpoint::with_additional(address, weight, plaintext, Vec::new())
    }

    /// An endpoint reachable at several addresses (dual stack).
    pub fn with_additional(
        address: String,
        weight: u32,
        plaintext: bool,
        additional_addresses: Vec<String>,
    ) -> Self {
        if weight == 1 && !plaintext && additional_addresses.is_empty() {
            Endpoint::Address(address)
        } else {
            Endpoint::Detailed {
                address,
                weight,
                plaintext,
                additional_addresses,
            }
        }
    }

    pub fn additional_addresses(&self) -> &[String] {
        match self {
            Endpoint::Address(_) => &[],
            Endpoint::Detailed {
                additional_addresses,
                ..
            } => additional_addresses,
        }
    }
    pub fn address(&self) -> &str {
        match self {
            Endpoint::Address(a) | Endpoint::Detailed { address: a, .. } => a,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            Endpoint::Address(_) => 1,
            Endpoint::Detailed { weight, .. } => *weight,
        }
    }
    /// Whether the cluster's TLS is left out for this endpoint.
    pub fn plaintext(&self) -> bool {
        matches!(
            self,
            Endpoint::Detailed {
                plaintext: true,
                ..
            }
        )
    }
}

/// Envoy's default thresholds: 1024 connections, pending and active requests; 3 retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Passive health checking with Envoy's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Consecutive 5xx (including connect failures) before ejection; 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures before ejection; 0 (default) disables.
    pub consecutive_gateway_failure: u32,
    pub interval: Dur,
    pub base_ejection_time: Dur,
    pub max_ejection_time: Dur,
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 0,
            interval: Dur::secs(10),
            base_ejection_time: Dur::secs(30),
            max_ejection_time: Dur::secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// TLS protocol versions a config may name; anything older than 1.2 is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

fn tls_max() -> TlsVersion {
    TlsVersion::V1_3
}

/// How the proxy signs with a certificate's private key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PrivateKeyProvider {
    /// The key file is read into process memory; operations run inline on the worker.
    #[default]
    Memory,
    /// RSA operations are queued and computed eight at a time with AVX-512 IFMA.
    Cryptomb(CryptoMb),
    /// The key lives in a PKCS#11 token and signs there (the identity agent generates
    /// the workload's keys in it).
    Pkcs11(Pkcs11),
}

/// A PKCS#11 token for the identity agent's keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11 {
    /// RFC 7512 URI of the token, with `object=` naming this workload's keys (a label
    /// of its own: keys left under it by an earlier run are removed) and the PIN's
    /// `pin-source` (`file:/path` or `env:NAME`):
    /// `pkcs11:token=mesh;object=reviews?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`.
    pub uri: String,
    /// Sessions (each on a thread of its own) signing in parallel.
    #[serde(default = "two")]
    pub sessions: u32,
}

fn two() -> u32 {
    2
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoMb {
    /// A queue that has not filled eight lanes is computed once its oldest operation
    /// has waited this long.
    pub poll_delay: Dur,
    /// Use the single-operation path where the batch path cannot serve (a CPU without
    /// AVX-512 IFMA, a P-384 or Ed25519 key); when false such a config is refused.
    pub fallback: bool,
    /// Compute a batch on the proxy worker that fills it (or whose timer expires), as
    /// Envoy's CryptoMB does (the default: 1.15–1.18× the handshakes/s of the batch
    /// thread here, see docs/PERFORMANCE.md); `false` computes batches on a dedicated
    /// thread, which keeps the worker free (lower p50) at some throughput.
    pub inline: bool,
}

impl Default for CryptoMb {
    fn default() -> Self {
        CryptoMb {
            poll_delay: Dur::millis(1),
            fallback: true,
            inline: true,
        }
    }
}

/// A certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM file, leaf first.
    pub certificate_chain: String,
    /// PEM file with the leaf's private key (the `memory` and `cryptomb` providers read
    /// it), or an RFC 7512 `pkcs11:` URI of a key in a token, which signs there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// `memory` (default) or `{ cryptomb: { poll_delay: 1ms, fallback: true } }`.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub private_key_provider: PrivateKeyProvider,
    /// SNI names this certificate answers for (`example.com`, `*.example.com`); the
    /// first certificate without names is the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
}

/// Istio PeerAuthentication, per listener (port): DISABLE is a listener without `tls`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Only TLS; plaintext clients are refused.
    #[default]
    Strict,
    /// TLS and plaintext on the same port, told apart by the first byte (a TLS
    /// ClientHello record starts with 0x16).
    Permissive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTls {
    #[serde(default)]
    pub mode: TlsMode,
    pub certificates: Vec<TlsCertificate>,
    /// ALPN protocols in preference order. Default: `h2, http/1.1` on HTTP listeners
    /// (as the codec allows), none on TCP listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
    #[serde(default)]
    pub min_version: TlsVersion,
    #[serde(default = "tls_max")]
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites offered, in BoringSSL's cipher-list syntax (Envoy's
    /// `tls_params.cipher_suites`); empty is BoringSSL's default. TLS 1.3 suites are
    /// fixed, as in Envoy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// PEM roots that client certificates must chain to; setting it turns on mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<String>,
    /// With `trusted_ca` or `trust_bundles`: the client's leaf must carry one of these URI
    /// or DNS SANs exactly (Istio's Gateway `subjectAltNames`); empty accepts any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_sans: Vec<String>,
    /// With `trusted_ca`: refuse clients that present no certificate.
    #[serde(default = "yes")]
    pub require_client_certificate: bool,
    /// With `trusted_ca`: the client's SPIFFE ID must be in one of these trust domains.
    /// Default: `cluster.local`; `["*"]` accepts any identity that chains to the roots.
    #[serde(default = "default_trust_domains")]
    pub trust_domains: Vec<String>,
    /// Instead of `trusted_ca` and `trust_domains`: roots per trust domain (mutual TLS);
    /// a client's chain must lead to the roots of the trust domain its SPIFFE ID names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_bundles: Vec<TrustBundle>,
    /// Session tickets and cache, so returning clients skip the full handshake.
    #[serde(default = "yes")]
    pub session_resumption: bool,
    /// A client that has not finished the handshake by then is disconnected.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
    /// Istio's TCP metadata exchange: `istio-peer-exchange` is offered first in ALPN,
    /// and a client that takes it and this proxy send each other their workload's
    /// metadata before the stream's bytes (for Istio's TCP metrics). Whatever the
    /// setting, a connection that negotiated `istio-peer-exchange` has its metadata
    /// frame taken off before the bytes reach the app.
    #[serde(default, skip_serializing_if = "is_false")]
    pub metadata_exchange: bool,
}

/// The roots that vouch for one SPIFFE trust domain (SPIFFE federation; Envoy's SPIFFE
/// certificate validator). A mesh with tenants gives each sidecar the bundles of its own
/// tenant and of the tenants it federates with, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundle {
    pub trust_domain: String,
    /// PEM certificates, inline (`-----BEGIN CERTIFICATE-----...`) or a file's path.
    pub roots: String,
}

impl TrustBundle {
    /// Whether `roots` holds the PEM itself rather than a path.
    pub fn is_inline(&self) -> bool {
        self.roots.trim_start().starts_with("-----BEGIN")
    }
}

fn default_trust_domains() -> Vec<String> {
    vec!["cluster.local".into()]
}

fn default_handshake_timeout() -> Dur {
    Dur::secs(10)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM roots the endpoints' chains must lead to (or `trust_bundles`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trusted_ca: String,
    /// Instead of `trusted_ca`: roots per trust domain; an endpoint's chain must lead to
    /// the roots of the trust domain its SPIFFE ID names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_bundles: Vec<TrustBundle>,
    /// Presented to the endpoints (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The endpoint's leaf must carry one of these URI or DNS SANs (SPIFFE IDs in the
    /// mesh); empty accepts any certificate that chains to `trusted_ca`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_identities: Vec<String>,
    #[serde(default)]
    pub min_version: TlsVersion,
    #[serde(default = "tls_max")]
    pub max_version: TlsVersion,
    /// Istio's TCP metadata exchange on TCP-proxied connections: ALPN offers
    /// `istio-peer-exchange, istio` (Istio's in-mesh ALPN), and when the endpoint takes
    /// it both sides send their workload's metadata before the stream's bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub metadata_exchange: bool,
}

/// JWT verification, as Istio's RequestAuthentication: a request may carry no token
/// (authorization then decides); a token it carries must verify under the rule for its
/// issuer, or the request gets 401.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthn {
    pub rules: Vec<JwtRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtRule {
    /// The `iss` a token must carry to be verified by this rule.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The public keys, as a JWK Set (JSON). Empty: no keys (every token of this rule
    /// is refused).
    pub jwks: String,
    /// Where tokens are read; with no location at all, `Authorization: Bearer <token>`
    /// and the `access_token` query parameter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Forwards the verified payload (base64url JSON) in this header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keeps the token in the request (by default it is removed once verified).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose space-separated string values authorization reads as lists, beside
    /// `scope` and `permission`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// Istio AuthorizationPolicy, evaluated per request (per connection on TCP listeners):
/// any matching DENY policy denies; otherwise, when ALLOW policies exist, one of them
/// must match; AUDIT policies only log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    pub policies: Vec<AuthorizationPolicy>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorizationAction {
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "AUDIT")]
    Audit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicy {
    pub name: String,
    #[serde(default)]
    pub action: AuthorizationAction,
    /// Evaluated and reported (what the decision would have been), never enforced:
    /// Istio's `istio.io/dry-run` annotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// A policy matches when any rule matches; a policy with no rules matches nothing
    /// (an ALLOW policy without rules therefore denies everything, as in Istio).
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// Every present part must match: any `from`, any `to`, and all `when` conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<RuleCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    pub source: RuleSource,
}

/// Values match exactly, by prefix (`abc*`), by suffix (`*abc`), or any value (`*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSource {
    /// Peer identities without `spiffe://` (`cluster.local/ns/default/sa/sleep`); need mTLS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// `iss/sub` of the request's verified JWT (HTTP only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// `namespace/service-account` of the peer identity; need mTLS. No wildcards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Trust domains of the peer identity; need mTLS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
    /// IPs or CIDRs of the connection's source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// IPs or CIDRs of the original client (the source, unless trusted proxies say
    /// otherwise in `X-Forwarded-For`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    pub operation: RuleOperation,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleOperation {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
}

/// The claim a `request.auth.claims[<name>]...` condition key reads: `[a][b]` after
/// the prefix is `["a", "b"]` (Istio's nested claim names, each non-empty and without
/// brackets of its own); None for another key or a malformed one.
pub fn claim_path(key: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        path.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!path.is_empty()).then_some(path)
}

/// `key` is `request.headers[<name>]`, `source.ip`, `source.namespace`,
/// `source.principal` or `destination.port`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCondition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}
