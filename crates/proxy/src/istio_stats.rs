//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`) with Istio's names, buckets and labels,
//! and the peer metadata sidecars exchange to fill them (Istio's HTTP metadata exchange:
//! `x-envoy-peer-metadata` carries a base64 `google.protobuf.Struct` of the sender's
//! workload, `x-envoy-peer-metadata-id` its id).
//!
//! The client's sidecar sends its metadata with requests to mesh services (clusters with
//! a service and mutual TLS) and reads the server's from the response; the server's
//! sidecar reads the client's from the request, removes it before the app sees it, and
//! answers with its own. The source principal on the server's side is the verified
//! client certificate's, never a header's.
//!
//! Label values are shared `Arc<str>`s, and a peer's header is parsed once and kept (a
//! bounded cache), so recording a request allocates only for a label set not seen
//! before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message;
use trellis_config as tc;

use crate::http::flags::Flags;
use crate::metric_overrides::{Shape, Shapes};
use trellis_config::IstioMetric;

pub const PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
pub const PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// Envoy's default histogram buckets, which Istio's metrics use (milliseconds and bytes).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// How many peers' metadata are kept parsed; the cache starts over when full.
const PEER_CACHE: usize = 4096;

/// A label value, shared by every series that has it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Text(Arc<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn new(s: &str) -> Text {
        Text(if s.is_empty() {
            "unknown".into()
        } else {
            s.into()
        })
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

/// A workload as the labels name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: Text,
    pub namespace: Text,
    pub principal: Text,
    pub app: Text,
    pub version: Text,
    pub cluster: Text,
}

impl Peer {
    pub fn unknown() -> Peer {
        let u = Text::new("");
        Peer {
            workload: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u.clone(),
            cluster: u,
        }
    }

    /// A client known only by its certificate's SPIFFE ID: its principal, and the
    /// namespace the ID names.
    pub fn of_principal(id: Option<&str>) -> Peer {
        let mut p = Peer::unknown();
        if let Some(id) = id {
            p.principal = Text::new(id);
            if let Some(ns) = id
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split('/').next())
            {
                p.namespace = Text::new(ns);
            }
        }
        p
    }

    pub fn of(w: &tc::WorkloadMetadata) -> Peer {
        Peer {
            workload: Text::new(&w.name),
            namespace: Text::new(&w.namespace),
            principal: Text::new(&w.principal),
            app: Text::new(&w.app),
            version: Text::new(&w.version),
            cluster: Text::new(&w.cluster),
        }
    }
}

/// The service behind a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub host: Text,
    pub name: Text,
    pub namespace: Text,
}

impl Service {
    pub fn of(s: &tc::ServiceRef) -> Service {
        Service {
            host: Text::new(&s.host),
            name: Text::new(&s.name),
            namespace: Text::new(&s.namespace),
        }
    }
}

/// The labels every Istio metric has: who reported, and both sides.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Sides {
    reporter: Text,
    source_workload: Text,
    source_workload_namespace: Text,
    source_principal: Text,
    source_app: Text,
    source_version: Text,
    source_cluster: Text,
    source_canonical_service: Text,
    source_canonical_revision: Text,
    destination_workload: Text,
    destination_workload_namespace: Text,
    destination_principal: Text,
    destination_app: Text,
    destination_version: Text,
    destination_service: Text,
    destination_service_name: Text,
    destination_service_namespace: Text,
    destination_cluster: Text,
    destination_canonical_service: Text,
    destination_canonical_revision: Text,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    request_protocol: Text,
    response_code: Text,
    grpc_response_status: Text,
    response_flags: Text,
    connection_security_policy: Text,
    // Last: the derive hands its encoder on to a flattened field.
    #[prometheus(flatten)]
    sides: Sides,
}

impl Sides {
    /// Leaves the labels `shape` removes empty (`ISTIO_LABELS`' first 20 are these, in
    /// this order).
    fn remove(&mut self, shape: Shape, empty: &Text) {
        let fields = [
            &mut self.reporter,
            &mut self.source_workload,
            &mut self.source_workload_namespace,
            &mut self.source_principal,
            &mut self.source_app,
            &mut self.source_version,
            &mut self.source_cluster,
            &mut self.source_canonical_service,
            &mut self.source_canonical_revision,
            &mut self.destination_workload,
            &mut self.destination_workload_namespace,
            &mut self.destination_principal,
            &mut self.destination_app,
            &mut self.destination_version,
            &mut self.destination_service,
            &mut self.destination_service_name,
            &mut self.destination_service_namespace,
            &mut self.destination_cluster,
            &mut self.destination_canonical_service,
            &mut self.destination_canonical_revision,
        ];
        for (i, f) in fields.into_iter().enumerate() {
            if shape.removes(i) {
                *f = empty.clone();
            }
        }
    }
}

impl RequestLabels {
    /// These labels as the metric of `shape` has them.
    fn shaped(&self, shape: Shape, empty: &Text) -> RequestLabels {
        let mut l = self.clone();
        if shape.removed == 0 {
            return l;
        }
        l.sides.remove(shape, empty);
        for (i, f) in [
            &mut l.request_protocol,
            &mut l.response_code,
            &mut l.grpc_response_status,
            &mut l.response_flags,
            &mut l.connection_security_policy,
        ]
        .into_iter()
        .enumerate()
        {
            if shape.removes(20 + i) {
                *f = empty.clone();
            }
        }
        l
    }
}

impl TcpLabels {
    fn shaped(&self, shape: Shape, empty: &Text) -> TcpLabels {
        let mut l = self.clone();
        if shape.removed == 0 {
            return l;
        }
        l.sides.remove(shape, empty);
        // request_protocol, response_flags, connection_security_policy in ISTIO_LABELS.
        for (i, f) in [
            (20, &mut l.request_protocol),
            (23, &mut l.response_flags),
            (24, &mut l.connection_security_policy),
        ] {
            if shape.removes(i) {
                *f = empty.clone();
            }
        }
        l
    }
}

/// Istio's TCP metrics' labels: the request ones but the response's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    request_protocol: Text,
    response_flags: Text,
    connection_security_policy: Text,
    #[prometheus(flatten)]
    sides: Sides,
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every proxy's Istio metrics, in a registry of their own (no `trellis_` prefix).
pub struct IstioMetrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    peers: Mutex<HashMap<Bytes, Peer>>,
    /// `response_code` and `grpc_response_status` values, by number.
    numbers: Vec<Text>,
    flags: Mutex<HashMap<Flags, Text>>,
    texts: [Text; 8],
    /// The label sets made so far (by hash), against `max_series`.
    label_sets: Mutex<std::collections::HashSet<u64>>,
    pub max_series: std::sync::atomic::AtomicUsize,
    /// Requests and connections counted under the overflow label set.
    overflow: Counter,
}

const REPORTER_SOURCE: usize = 0;
const REPORTER_DESTINATION: usize = 1;
const HTTP: usize = 2;
const GRPC: usize = 3;
const MUTUAL_TLS: usize = 4;
const NONE: usize = 5;
const UNKNOWN: usize = 6;
const TCP: usize = 7;

impl Default for IstioMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "istio_requests",
            "Requests, by source and destination (Istio's standard metric)",
            requests.clone(),
        );
        let hist = |registry: &mut Registry, name: &str, help: &str| {
            let f: Histograms = Family::new_with_constructor(histogram);
            registry.register(name, help, f.clone());
            f
        };
        let duration = hist(
            &mut registry,
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds (Istio's standard metric)",
        );
        let request_bytes = hist(
            &mut registry,
            "istio_request_bytes",
            "Request body sizes in bytes (Istio's standard metric)",
        );
        let response_bytes = hist(
            &mut registry,
            "istio_response_bytes",
            "Response body sizes in bytes (Istio's standard metric)",
        );
        let mut counter = |name: &str, help: &str| {
            let f = Family::<TcpLabels, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let tcp_sent = counter(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream on TCP connections (Istio's standard metric)",
        );
        let tcp_received = counter(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream on TCP connections (Istio's standard metric)",
        );
        let tcp_opened = counter(
            "istio_tcp_connections_opened",
            "TCP connections opened (Istio's standard metric)",
        );
        let tcp_closed = counter(
            "istio_tcp_connections_closed",
            "TCP connections closed (Istio's standard metric)",
        );
        let overflow = Counter::default();
        registry.register(
            "trellis_istio_series_overflow",
            "New label sets refused because limits.max_istio_series was reached (their traffic is counted with unknown workloads and services)",
            overflow.clone(),
        );
        IstioMetrics {
            label_sets: Mutex::default(),
            max_series: std::sync::atomic::AtomicUsize::new(10_000),
            overflow,
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_sent,
            tcp_received,
            tcp_opened,
            tcp_closed,
            peers: Mutex::default(),
            numbers: (0..600).map(|n| Text::new(&n.to_string())).collect(),
            flags: Mutex::default(),
            texts: [
                "source",
                "destination",
                "http",
                "grpc",
                "mutual_tls",
                "none",
                "unknown",
                "tcp",
            ]
            .map(Text::new),
        }
    }
}

impl IstioMetrics {
    /// Whether a series of `labels` may be made: it exists already, or there is room.
    fn admits(&self, labels: &impl std::hash::Hash) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(labels);
        let mut sets = self.label_sets.lock().unwrap();
        if sets.contains(&hash) {
            return true;
        }
        if sets.len() >= self.max_series.load(std::sync::atomic::Ordering::Relaxed) {
            self.overflow.inc();
            return false;
        }
        sets.insert(hash);
        true
    }

    /// The label set of what did not fit: who reported, and all else unknown.
    fn overflow_sides(&self, reporter: &Text) -> Sides {
        let u = || self.texts[UNKNOWN].clone();
        Sides {
            reporter: reporter.clone(),
            source_workload: u(),
            source_workload_namespace: u(),
            source_principal: u(),
            source_app: u(),
            source_version: u(),
            source_cluster: u(),
            source_canonical_service: u(),
            source_canonical_revision: u(),
            destination_workload: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_service: u(),
            destination_service_name: u(),
            destination_service_namespace: u(),
            destination_cluster: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
        }
    }
}

/// The Struct Istio's metadata exchange sends.
pub(crate) fn metadata_struct(w: &tc::WorkloadMetadata) -> Struct {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut labels = HashMap::new();
    for (k, v) in [
        ("app", &w.app),
        ("version", &w.version),
        ("service.istio.io/canonical-name", &w.app),
        ("service.istio.io/canonical-revision", &w.version),
    ] {
        labels.insert(k.to_string(), s(v));
    }
    let mut fields = HashMap::new();
    for (k, v) in [
        ("NAME", &w.name),
        ("WORKLOAD_NAME", &w.name),
        ("NAMESPACE", &w.namespace),
        ("CLUSTER_ID", &w.cluster),
        // Not Istio's (it reads the peer certificate): the client's side has no
        // certificate of the server's to read.
        ("TRELLIS_PRINCIPAL", &w.principal),
    ] {
        fields.insert(k.to_string(), s(v));
    }
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    Struct { fields }
}

fn parse_peer(b64: &[u8]) -> Option<Peer> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = Struct::decode(bytes.as_slice()).ok()?;
    Some(peer_of(&s))
}

/// The workload a metadata Struct names (Istio's fields; absent ones `unknown`).
pub(crate) fn peer_of(s: &Struct) -> Peer {
    let text = |st: &Struct, k: &str| match st.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => Text::new(v),
        _ => Text::new(""),
    };
    let labels = match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l.clone(),
        _ => Struct::default(),
    };
    let label = |keys: [&str; 2]| {
        keys.iter()
            .map(|k| text(&labels, k))
            .find(|t| &*t.0 != "unknown")
            .unwrap_or_else(|| Text::new(""))
    };
    let workload = match text(s, "WORKLOAD_NAME") {
        t if &*t.0 == "unknown" => text(s, "NAME"),
        t => t,
    };
    Peer {
        workload,
        namespace: text(s, "NAMESPACE"),
        principal: text(s, "TRELLIS_PRINCIPAL"),
        app: label(["service.istio.io/canonical-name", "app"]),
        version: label(["service.istio.io/canonical-revision", "version"]),
        cluster: text(s, "CLUSTER_ID"),
    }
}

impl IstioMetrics {
    /// The peer a metadata header names (parsed once, then kept).
    fn peer(&self, value: &HeaderValue) -> Option<Peer> {
        let mut peers = self.peers.lock().unwrap();
        if let Some(p) = peers.get(value.as_bytes()) {
            return Some(p.clone());
        }
        let p = parse_peer(value.as_bytes())?;
        if peers.len() >= PEER_CACHE {
            peers.clear();
        }
        peers.insert(Bytes::copy_from_slice(value.as_bytes()), p.clone());
        Some(p)
    }

    fn number(&self, n: u16) -> Text {
        self.numbers
            .get(n as usize)
            .cloned()
            .unwrap_or_else(|| Text::new(&n.to_string()))
    }

    fn flags(&self, f: Flags) -> Text {
        let mut flags = self.flags.lock().unwrap();
        flags
            .entry(f)
            .or_insert_with(|| Text::new(&f.render()))
            .clone()
    }
}

/// This workload's metadata headers, as sent to peers.
#[derive(Clone)]
pub struct OwnHeaders {
    pub id: HeaderValue,
    pub metadata: HeaderValue,
}

impl OwnHeaders {
    pub fn insert(&self, headers: &mut HeaderMap) {
        headers.insert(PEER_METADATA_ID, self.id.clone());
        headers.insert(PEER_METADATA, self.metadata.clone());
    }
}

/// Takes a peer's metadata headers out of `headers`: the peer they name, if any.
pub fn take_peer(metrics: &IstioMetrics, headers: &mut HeaderMap) -> Option<Peer> {
    headers.remove(PEER_METADATA_ID);
    let value = headers.remove(PEER_METADATA)?;
    metrics.peer(&value)
}

/// One listener's reporting.
pub struct ListenerTelemetry {
    pub metrics: Arc<IstioMetrics>,
    pub reporter: tc::Reporter,
    pub own: Peer,
    pub headers: OwnHeaders,
    /// What the Telemetry API's overrides leave of each metric.
    shapes: Shapes,
    /// The value of a removed label (Prometheus reads an empty one as none).
    empty: Text,
    /// The series of the label sets seen, by what distinguishes them on this listener
    /// (the peer's and the service's shared strings by address, and the numbers): a
    /// request then costs one small hash and four atomic updates. Fx, not SipHash: the
    /// keys are addresses and small numbers, never text a client chose.
    series: Mutex<rustc_hash::FxHashMap<SeriesKey, Arc<Series>>>,
}

/// How many label sets a listener keeps at hand; past that the map starts over (the
/// series stay in the registry).
const SERIES_CACHE: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    /// Addresses of the peer's workload and principal texts (a parsed peer is shared),
    /// and of the service's host.
    peer: (usize, usize),
    service: usize,
    identity: usize,
    status: u16,
    grpc_status: Option<u16>,
    grpc: bool,
    flags: Flags,
}

/// A label set's series (none for a metric the overrides turn off).
struct Series {
    requests: Option<Counter>,
    duration: Option<Histogram>,
    request_bytes: Option<Histogram>,
    response_bytes: Option<Histogram>,
    /// The strings whose addresses key it, held so that no other string can take one
    /// of those addresses while it is cached.
    _keys: [Option<Arc<str>>; 4],
}

fn address(t: Option<&Text>) -> usize {
    t.map_or(0, |t| Arc::as_ptr(&t.0) as *const u8 as usize)
}

impl ListenerTelemetry {
    /// `own`: this proxy's workload (the listener's, or the one its other listeners
    /// name); `node_id` goes with the metadata.
    pub fn new(
        metrics: Arc<IstioMetrics>,
        stats: &tc::IstioStats,
        own: &tc::WorkloadMetadata,
        node_id: &str,
    ) -> ListenerTelemetry {
        let reporter = stats.reporter;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(metadata_struct(own).encode_to_vec());
        ListenerTelemetry {
            metrics,
            reporter,
            own: Peer::of(own),
            headers: OwnHeaders {
                id: HeaderValue::from_str(node_id)
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                metadata: HeaderValue::from_str(&encoded).expect("base64 is a header value"),
            },
            shapes: Shapes::of(&stats.overrides),
            empty: Text(Arc::from("")),
            series: Mutex::default(),
        }
    }

    pub fn record(&self, r: &RequestRecord) {
        let key = SeriesKey {
            peer: (
                address(r.peer.as_ref().map(|p| &p.workload)),
                address(r.peer.as_ref().map(|p| &p.principal)),
            ),
            service: address(r.service.as_ref().map(|s| &s.host)),
            identity: r
                .peer_identity
                .as_ref()
                .map_or(0, |i| Arc::as_ptr(i) as *const u8 as usize),
            status: r.status,
            grpc_status: r.grpc_status,
            grpc: r.grpc,
            flags: r.flags,
        };
        let series = {
            let mut cache = self.series.lock().unwrap();
            match cache.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(self.series_of(r));
                    if cache.len() >= SERIES_CACHE {
                        cache.clear();
                    }
                    cache.insert(key, s.clone());
                    s
                }
            }
        };
        if let Some(c) = &series.requests {
            c.inc();
        }
        if let Some(h) = &series.duration {
            h.observe(r.duration_ms);
        }
        if let Some(h) = &series.request_bytes {
            h.observe(r.request_bytes as f64);
        }
        if let Some(h) = &series.response_bytes {
            h.observe(r.response_bytes as f64);
        }
    }

    /// What the overrides leave of `metric` on this listener; None when it is off.
    fn shape(&self, metric: IstioMetric) -> Option<Shape> {
        Some(self.shapes.get(metric)).filter(|s| !s.disabled)
    }

    /// The four series of a request's label set.
    fn series_of(&self, r: &RequestRecord) -> Series {
        let m = &*self.metrics;
        let mut labels = self.labels(r);
        if !m.admits(&labels) {
            labels.sides = m.overflow_sides(&labels.sides.reporter);
        }
        let shaped = |metric| self.shape(metric).map(|s| labels.shaped(s, &self.empty));
        Series {
            requests: shaped(IstioMetric::RequestCount)
                .map(|l| m.requests.get_or_create(&l).clone()),
            duration: shaped(IstioMetric::RequestDuration)
                .map(|l| m.duration.get_or_create(&l).clone()),
            request_bytes: shaped(IstioMetric::RequestSize)
                .map(|l| m.request_bytes.get_or_create(&l).clone()),
            response_bytes: shaped(IstioMetric::ResponseSize)
                .map(|l| m.response_bytes.get_or_create(&l).clone()),
            _keys: [
                r.peer.as_ref().map(|p| p.workload.0.clone()),
                r.peer.as_ref().map(|p| p.principal.0.clone()),
                r.service.as_ref().map(|s| s.host.0.clone()),
                r.peer_identity.clone(),
            ],
        }
    }

    /// A TCP connection's series (`peer`: the other side's workload, from the TCP
    /// metadata exchange): counted opened now, and closed and its bytes by
    /// [`TcpSeries::report`].
    pub fn tcp(
        &self,
        peer: Option<Peer>,
        peer_identity: Option<&Arc<str>>,
        service: Option<&Service>,
        flags: Flags,
    ) -> TcpSeries {
        let m = &*self.metrics;
        let (sides, connection_security_policy) = self.sides(peer, peer_identity, service.cloned());
        let mut labels = TcpLabels {
            sides,
            request_protocol: m.texts[TCP].clone(),
            response_flags: m.flags(flags),
            connection_security_policy,
        };
        if !m.admits(&labels) {
            labels.sides = m.overflow_sides(&labels.sides.reporter);
        }
        let shaped = |metric| self.shape(metric).map(|s| labels.shaped(s, &self.empty));
        let series = TcpSeries {
            sent: shaped(IstioMetric::TcpSentBytes).map(|l| m.tcp_sent.get_or_create(&l).clone()),
            received: shaped(IstioMetric::TcpReceivedBytes)
                .map(|l| m.tcp_received.get_or_create(&l).clone()),
            closed: shaped(IstioMetric::TcpClosedConnections)
                .map(|l| m.tcp_closed.get_or_create(&l).clone()),
            reported: (0, 0),
        };
        if let Some(l) = shaped(IstioMetric::TcpOpenedConnections) {
            m.tcp_opened.get_or_create(&l).inc();
        }
        series
    }

    fn labels(&self, r: &RequestRecord) -> RequestLabels {
        let m = &*self.metrics;
        let t = &m.texts;
        let (sides, connection_security_policy) =
            self.sides(r.peer.clone(), r.peer_identity.as_ref(), r.service.clone());
        RequestLabels {
            sides,
            request_protocol: if r.grpc {
                t[GRPC].clone()
            } else {
                t[HTTP].clone()
            },
            response_code: m.number(r.status),
            grpc_response_status: match r.grpc_status {
                Some(s) => m.number(s),
                None => t[UNKNOWN].clone(),
            },
            response_flags: m.flags(r.flags),
            connection_security_policy,
        }
    }

    /// Both sides of a request or connection as this listener reports it, and its
    /// `connection_security_policy`: `peer` is the other side's metadata, if it sent
    /// any; `peer_identity` the verified client certificate's (the server's side).
    fn sides(
        &self,
        peer: Option<Peer>,
        peer_identity: Option<&Arc<str>>,
        service: Option<Service>,
    ) -> (Sides, Text) {
        let t = &self.metrics.texts;
        let unknown = || t[UNKNOWN].clone();
        let (reporter, source, destination, source_principal, destination_principal, policy) =
            match self.reporter {
                tc::Reporter::Destination => {
                    // Without its metadata, the client is what its certificate says.
                    let source =
                        peer.unwrap_or_else(|| Peer::of_principal(peer_identity.map(|i| &**i)));
                    let (principal, policy) = match peer_identity {
                        Some(id) => (Text(id.clone()), t[MUTUAL_TLS].clone()),
                        None => (unknown(), t[NONE].clone()),
                    };
                    let own = self.own.clone();
                    let dp = own.principal.clone();
                    (
                        t[REPORTER_DESTINATION].clone(),
                        source,
                        own,
                        principal,
                        dp,
                        policy,
                    )
                }
                tc::Reporter::Source => {
                    let destination = peer.unwrap_or_else(Peer::unknown);
                    let dp = destination.principal.clone();
                    let own = self.own.clone();
                    let sp = own.principal.clone();
                    (
                        t[REPORTER_SOURCE].clone(),
                        own,
                        destination,
                        sp,
                        dp,
                        unknown(),
                    )
                }
            };
        let service = service.unwrap_or_else(|| Service {
            host: unknown(),
            name: unknown(),
            namespace: unknown(),
        });
        let sides = Sides {
            reporter,
            source_canonical_service: source.app.clone(),
            source_canonical_revision: source.version.clone(),
            source_workload: source.workload,
            source_workload_namespace: source.namespace,
            source_principal,
            source_app: source.app,
            source_version: source.version,
            source_cluster: source.cluster,
            destination_canonical_service: destination.app.clone(),
            destination_canonical_revision: destination.version.clone(),
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_principal,
            destination_app: destination.app,
            destination_version: destination.version,
            destination_service: service.host,
            destination_service_name: service.name,
            destination_service_namespace: service.namespace,
            destination_cluster: destination.cluster,
        };
        (sides, policy)
    }
}

/// One TCP connection's counters.
pub struct TcpSeries {
    sent: Option<Counter>,
    received: Option<Counter>,
    closed: Option<Counter>,
    /// What was counted so far: (received, sent).
    reported: (u64, u64),
}

impl TcpSeries {
    /// Counts the bytes moved since the last report (`received` from and `sent` to the
    /// downstream, in all), and the close when `closed`.
    pub fn report(&mut self, received: u64, sent: u64, closed: bool) {
        if let Some(c) = &self.received {
            c.inc_by(received.saturating_sub(self.reported.0));
        }
        if let Some(c) = &self.sent {
            c.inc_by(sent.saturating_sub(self.reported.1));
        }
        self.reported = (received, sent);
        if let Some(c) = self.closed.as_ref().filter(|_| closed) {
            c.inc();
        }
    }
}

/// What one request is recorded with.
pub struct RequestRecord {
    /// The other side's workload, from its metadata headers.
    pub peer: Option<Peer>,
    /// The verified client certificate's identity (the server's side).
    pub peer_identity: Option<Arc<str>>,
    pub service: Option<Service>,
    pub status: u16,
    pub grpc: bool,
    pub grpc_status: Option<u16>,
    pub flags: Flags,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reads_back_from_the_header_it_sends() {
        let w = tc::WorkloadMetadata {
            name: "reviews-v1".into(),
            namespace: "default".into(),
            app: "reviews".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            principal: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        };
        let metrics = Arc::new(IstioMetrics::default());
        let t = ListenerTelemetry::new(
            metrics.clone(),
            &tc::IstioStats::new(tc::Reporter::Source),
            &w,
            "sidecar~1",
        );
        let mut headers = HeaderMap::new();
        t.headers.insert(&mut headers);
        assert_eq!(take_peer(&metrics, &mut headers), Some(Peer::of(&w)));
        assert!(headers.is_empty());
        // Garbage is no peer, and is removed all the same.
        headers.insert(PEER_METADATA, HeaderValue::from_static("!!"));
        assert_eq!(take_peer(&metrics, &mut headers), None);
        assert!(headers.is_empty());
    }

    /// A removed label is the one its name says, on HTTP and TCP metrics alike: the
    /// label structs' fields and Istio's list (`trellis_config::ISTIO_LABELS`, which
    /// overrides name labels by) must stay in one order.
    #[test]
    fn each_removed_label_is_the_one_its_name_says() {
        let w = tc::WorkloadMetadata {
            name: "reviews-v1".into(),
            namespace: "default".into(),
            app: "reviews".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            principal: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        };
        let label = |line: &str, name: &str| -> Option<String> {
            let at = line.find(&format!("{name}=\""))? + name.len() + 2;
            Some(line[at..at + line[at..].find('"')?].to_string())
        };
        for name in tc::ISTIO_LABELS {
            let metrics = Arc::new(IstioMetrics::default());
            let mut stats = tc::IstioStats::new(tc::Reporter::Destination);
            stats.overrides = vec![tc::MetricOverride {
                metric: IstioMetric::AllMetrics,
                disabled: None,
                remove_labels: vec![name.to_string()],
            }];
            let t = ListenerTelemetry::new(metrics.clone(), &stats, &w, "sidecar~1");
            t.record(&RequestRecord {
                peer: Some(Peer::of(&w)),
                peer_identity: None,
                service: None,
                status: 200,
                grpc: false,
                grpc_status: None,
                flags: Flags::default(),
                duration_ms: 1.0,
                request_bytes: 0,
                response_bytes: 0,
            });
            t.tcp(Some(Peer::of(&w)), None, None, Flags::default());
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
            for family in [
                "istio_requests_total{",
                "istio_tcp_connections_opened_total{",
            ] {
                let line = text.lines().find(|l| l.starts_with(family)).unwrap();
                for other in tc::ISTIO_LABELS {
                    let Some(value) = label(line, other) else {
                        // TCP metrics have no response code or gRPC status.
                        assert!(family.starts_with("istio_tcp"), "{other} in {line}");
                        continue;
                    };
                    assert_eq!(value.is_empty(), other == name, "{name}: {other} in {line}");
                }
            }
        }
    }

    #[test]
    fn label_sets_past_the_limit_are_counted_as_unknown() {
        let workload = |i: usize| tc::WorkloadMetadata {
            name: format!("client-{i}"),
            namespace: "default".into(),
            app: "client".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            principal: format!("spiffe://cluster.local/ns/default/sa/client-{i}"),
        };
        let metrics = Arc::new(IstioMetrics::default());
        metrics
            .max_series
            .store(3, std::sync::atomic::Ordering::Relaxed);
        let t = ListenerTelemetry::new(
            metrics.clone(),
            &tc::IstioStats::new(tc::Reporter::Destination),
            &workload(0),
            "sidecar~1",
        );
        // Ten peers, two requests each: three label sets, then the overflow set.
        for i in 1..=10 {
            // A peer is parsed once and shared, as from its metadata header.
            let peer = Peer::of(&workload(i));
            for _ in 0..2 {
                t.record(&RequestRecord {
                    peer: Some(peer.clone()),
                    peer_identity: None,
                    service: None,
                    status: 200,
                    grpc: false,
                    grpc_status: None,
                    flags: Flags::default(),
                    duration_ms: 1.0,
                    request_bytes: 0,
                    response_bytes: 0,
                });
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(series.len(), 4, "{text}");
        let unknown: Vec<&&str> = series
            .iter()
            .filter(|l| l.contains("source_workload=\"unknown\""))
            .collect();
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].ends_with(" 14"), "{}", unknown[0]);
        assert!(
            text.contains("trellis_istio_series_overflow_total 7"),
            "{text}"
        );
    }
}
