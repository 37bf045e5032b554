//! Prometheus metrics. Handles are resolved once per listener, route and cluster
//! when a config is built, so the request path only touches atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub virtual_host: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCodeLabels {
    pub listener: String,
    pub virtual_host: String,
    pub route: String,
    pub code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterCodeLabels {
    pub cluster: String,
    pub code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub cluster: String,
    pub breaker: &'static str,
}

/// A per-listener outcome: TLS handshakes (success, failure), policy decisions
/// (allowed, denied).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerResultLabels {
    pub listener: String,
    pub result: &'static str,
}

/// Why a listener refused a client's certificate (`trellis_tls::peer_rejection`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyOpLabels {
    pub provider: &'static str,
    pub op: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FillLabels {
    pub fill: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// One counter per result for a listener.
/// A listener's authorization decisions, enforced and dry-run.
#[derive(Clone)]
pub struct RbacCounters {
    pub allowed: Counter,
    pub denied: Counter,
    pub dry_run_allowed: Counter,
    pub dry_run_denied: Counter,
}

/// A listener's RequestAuthentication outcomes.
#[derive(Clone)]
pub struct JwtCounters {
    pub verified: Counter,
    pub no_token: Counter,
    pub denied: Counter,
}

fn by_result<const K: usize>(
    family: &Family<ListenerResultLabels, Counter>,
    listener: &str,
    results: [&'static str; K],
) -> [Counter; K] {
    results.map(|result| {
        family
            .get_or_create(&ListenerResultLabels {
                listener: listener.to_string(),
                result,
            })
            .clone()
    })
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    pub registry: Registry,
    downstream_cx_total: Family<ListenerLabels, Counter>,
    downstream_cx_active: Family<ListenerLabels, Gauge>,
    downstream_cx_overflow: Family<ListenerLabels, Counter>,
    tcp_bytes_received: Family<ListenerLabels, Counter>,
    tcp_bytes_sent: Family<ListenerLabels, Counter>,
    http_requests: Family<RouteCodeLabels, Counter>,
    http_duration: HistFamily<RouteLabels>,
    http_no_route: Family<ListenerLabels, Counter>,
    upstream_rq: Family<ClusterCodeLabels, Counter>,
    upstream_duration: HistFamily<ClusterLabels>,
    upstream_cx_active: Family<ClusterLabels, Gauge>,
    upstream_cx_total: Family<ClusterLabels, Counter>,
    upstream_cx_connect_fail: Family<ClusterLabels, Counter>,
    upstream_rq_retry: Family<ClusterLabels, Counter>,
    upstream_rq_timeout: Family<ClusterLabels, Counter>,
    upstream_rq_reset: Family<ClusterLabels, Counter>,
    breaker_overflow: Family<BreakerLabels, Counter>,
    ejections_total: Family<ClusterLabels, Counter>,
    ejections_active: Family<ClusterLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub access_log_dropped: Counter,
    /// Spans exported, dropped (queue full) and failed (collector unreachable).
    pub spans: trellis_trace::ExportCounters,
    tls_handshakes: Family<ListenerResultLabels, Counter>,
    tls_peer_rejected: Family<ListenerReasonLabels, Counter>,
    pub private_key_ops: Family<KeyOpLabels, Counter>,
    upstream_tls_fail: Family<ClusterLabels, Counter>,
    pub identity_renewals: Family<ResultLabels, Counter>,
    rbac: Family<ListenerResultLabels, Counter>,
    rbac_dry_run: Family<ListenerResultLabels, Counter>,
    jwt_authn: Family<ListenerResultLabels, Counter>,
    cryptomb_batches: Family<FillLabels, Counter>,
    cryptomb_wait: Histogram,
    cryptomb_fallbacks: Counter,
    cryptomb_errors: Counter,
    pub identity_expiry: Gauge,
    xds_updates: Family<ResultLabels, Counter>,
    xds_connected: Gauge,
    xds_decoded: Counter,
    /// Istio's standard metrics (`istio_*`), exported beside these.
    pub istio: Arc<crate::istio_stats::IstioMetrics>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trellis");
        macro_rules! fam {
            ($name:literal, $help:literal) => {{
                let f = Family::default();
                registry.register($name, $help, f.clone());
                f
            }};
        }
        macro_rules! hist {
            ($name:literal, $help:literal) => {{
                let f: HistFamily<_> = Family::new_with_constructor(latency_histogram);
                registry.register($name, $help, f.clone());
                f
            }};
        }
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let spans = trellis_trace::ExportCounters::default();
        registry.register(
            "tracing_spans_exported",
            "Spans the OTLP collector took",
            spans.exported.clone(),
        );
        registry.register(
            "tracing_spans_dropped",
            "Spans dropped because the export queue was full",
            spans.dropped.clone(),
        );
        registry.register(
            "tracing_spans_failed",
            "Spans of batches the OTLP collector did not take",
            spans.failed.clone(),
        );
        let cryptomb_wait = Histogram::new(exponential_buckets(0.000_01, 2.0, 16));
        registry.register(
            "cryptomb_queue_wait_seconds",
            "Time a private-key operation waited in the cryptomb queue",
            cryptomb_wait.clone(),
        );
        let cryptomb_fallbacks = Counter::default();
        registry.register(
            "cryptomb_fallbacks",
            "cryptomb operations that took the single-operation path",
            cryptomb_fallbacks.clone(),
        );
        let cryptomb_errors = Counter::default();
        registry.register(
            "cryptomb_errors",
            "cryptomb operations that failed (including failed result checks)",
            cryptomb_errors.clone(),
        );
        let xds_connected = Gauge::default();
        registry.register(
            "xds_connected",
            "1 while the xDS stream to the control plane is up",
            xds_connected.clone(),
        );
        let xds_decoded = Counter::default();
        registry.register(
            "xds_resources_decoded",
            "Listeners and clusters decoded from xDS updates (an unchanged one, with what it names unchanged, is kept as it was)",
            xds_decoded.clone(),
        );
        let identity_expiry = Gauge::default();
        registry.register(
            "identity_cert_expiry_timestamp_seconds",
            "When the installed workload certificate expires (Unix time)",
            identity_expiry.clone(),
        );
        Arc::new(Metrics {
            downstream_cx_total: fam!("downstream_cx", "Downstream connections accepted"),
            downstream_cx_active: fam!("downstream_cx_active", "Downstream connections open"),
            downstream_cx_overflow: fam!(
                "downstream_cx_overflow",
                "Downstream connections closed at accept because of max_downstream_connections"
            ),
            tcp_bytes_received: fam!(
                "tcp_downstream_rx_bytes",
                "Bytes received from TCP proxy clients"
            ),
            tcp_bytes_sent: fam!("tcp_downstream_tx_bytes", "Bytes sent to TCP proxy clients"),
            http_requests: fam!(
                "http_requests",
                "HTTP requests by route and response code class"
            ),
            http_duration: hist!(
                "http_request_duration_seconds",
                "Time from request headers to response headers, by route"
            ),
            http_no_route: fam!(
                "http_no_route",
                "Requests that matched no virtual host or route"
            ),
            upstream_rq: fam!(
                "upstream_rq",
                "Upstream request attempts by response code class"
            ),
            upstream_duration: hist!(
                "upstream_rq_duration_seconds",
                "Upstream attempt time to response headers"
            ),
            upstream_cx_active: fam!("upstream_cx_active", "Upstream connections open"),
            upstream_cx_total: fam!("upstream_cx", "Upstream connections opened"),
            upstream_cx_connect_fail: fam!(
                "upstream_cx_connect_fail",
                "Upstream connection attempts that failed or timed out"
            ),
            upstream_rq_retry: fam!("upstream_rq_retry", "Upstream request retries"),
            upstream_rq_timeout: fam!(
                "upstream_rq_timeout",
                "Requests that hit the route or per-try timeout"
            ),
            upstream_rq_reset: fam!(
                "upstream_rq_reset",
                "Upstream requests reset before a response"
            ),
            breaker_overflow: fam!(
                "circuit_breaker_overflow",
                "Requests refused by a circuit breaker, by breaker"
            ),
            ejections_total: fam!(
                "outlier_ejections",
                "Endpoints ejected by outlier detection"
            ),
            ejections_active: fam!("outlier_ejections_active", "Endpoints ejected now"),
            config_reloads: fam!("config_reloads", "Config reloads by result"),
            tls_handshakes: fam!(
                "downstream_tls_handshakes",
                "Downstream TLS handshakes by listener and result"
            ),
            tls_peer_rejected: fam!(
                "downstream_tls_peer_rejected",
                "Downstream TLS handshakes that refused the client's certificate, by listener and reason"
            ),
            private_key_ops: fam!(
                "private_key_operations",
                "TLS private key operations by provider, operation and result"
            ),
            upstream_tls_fail: fam!(
                "upstream_tls_handshake_fail",
                "Upstream TLS handshakes that failed (including refused identities)"
            ),
            identity_renewals: fam!(
                "identity_cert_requests",
                "Workload certificate requests to the CA by result"
            ),
            identity_expiry,
            xds_updates: fam!(
                "xds_updates",
                "Complete xDS updates by result (accepted, or rejected and NACKed)"
            ),
            xds_connected,
            xds_decoded,
            cryptomb_batches: fam!(
                "cryptomb_batches",
                "Multi-buffer batches computed, by lanes filled (1..8)"
            ),
            cryptomb_wait,
            cryptomb_fallbacks,
            cryptomb_errors,
            rbac: fam!(
                "rbac_decisions",
                "AuthorizationPolicy decisions by listener and result (allowed, denied)"
            ),
            rbac_dry_run: fam!(
                "rbac_dry_run_decisions",
                "What AuthorizationPolicy decisions would have been with the dry-run policies \
                 enforced, by listener and result (allowed, denied); never enforced"
            ),
            jwt_authn: fam!(
                "jwt_authn_requests",
                "Requests through RequestAuthentication by listener and result \
                 (verified, no_token, denied)"
            ),
            access_log_dropped,
            spans,
            registry,
            istio: Arc::default(),
        })
    }

    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        encode_registry(&mut out, &self.istio.registry)
            .and_then(|()| encode_registry(&mut out, &self.registry))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }

    pub fn listener(&self, name: &str) -> ListenerStats {
        let l = ListenerLabels {
            listener: name.to_string(),
        };
        ListenerStats {
            cx_total: self.downstream_cx_total.get_or_create(&l).clone(),
            cx_active: self.downstream_cx_active.get_or_create(&l).clone(),
            cx_overflow: self.downstream_cx_overflow.get_or_create(&l).clone(),
            tcp_rx: self.tcp_bytes_received.get_or_create(&l).clone(),
            tcp_tx: self.tcp_bytes_sent.get_or_create(&l).clone(),
            no_route: self.http_no_route.get_or_create(&l).clone(),
        }
    }

    pub fn cryptomb(&self) -> trellis_cryptomb_provider::CryptoMbMetrics {
        trellis_cryptomb_provider::CryptoMbMetrics {
            batches_by_fill: std::array::from_fn(|i| {
                self.cryptomb_batches
                    .get_or_create(&FillLabels { fill: i as u8 + 1 })
                    .clone()
            }),
            queue_wait: self.cryptomb_wait.clone(),
            fallbacks: self.cryptomb_fallbacks.clone(),
            errors: self.cryptomb_errors.clone(),
        }
    }

    pub fn xds_update(&self, result: &'static str) {
        self.xds_updates
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn xds_decoded(&self, resources: usize) {
        self.xds_decoded.inc_by(resources as u64);
    }

    pub fn xds_connected(&self, up: bool) {
        self.xds_connected.set(i64::from(up));
    }

    /// The counters of a listener's authorization decisions.
    pub fn rbac(&self, listener: &str) -> RbacCounters {
        let [allowed, denied] = by_result(&self.rbac, listener, ["allowed", "denied"]);
        let [dry_run_allowed, dry_run_denied] =
            by_result(&self.rbac_dry_run, listener, ["allowed", "denied"]);
        RbacCounters {
            allowed,
            denied,
            dry_run_allowed,
            dry_run_denied,
        }
    }

    /// The counters of a listener's JWT verification.
    pub fn jwt_authn(&self, listener: &str) -> JwtCounters {
        let [verified, no_token, denied] = by_result(
            &self.jwt_authn,
            listener,
            ["verified", "no_token", "denied"],
        );
        JwtCounters {
            verified,
            no_token,
            denied,
        }
    }

    pub fn handshakes(&self, listener: &str) -> HandshakeCounters {
        let [success, failure] = by_result(&self.tls_handshakes, listener, ["success", "failure"]);
        HandshakeCounters {
            success,
            failure,
            rejected: self.tls_peer_rejected.clone(),
            listener: listener.into(),
        }
    }

    /// A route's stats, made when it takes its first request: a route table of 10 000
    /// virtual hosts is built without 60 000 series nobody may ever use.
    pub fn route(self: &Arc<Self>, listener: &str, virtual_host: &str, route: &str) -> RouteStats {
        RouteStats {
            metrics: self.clone(),
            labels: Box::new(RouteLabels {
                listener: listener.to_string(),
                virtual_host: virtual_host.to_string(),
                route: route.to_string(),
            }),
            made: std::sync::OnceLock::new(),
        }
    }

    fn route_series(&self, l: &RouteLabels) -> RouteSeries {
        RouteSeries {
            by_class: CODE_CLASSES.map(|code_class| {
                self.http_requests
                    .get_or_create(&RouteCodeLabels {
                        listener: l.listener.clone(),
                        virtual_host: l.virtual_host.clone(),
                        route: l.route.clone(),
                        code_class,
                    })
                    .clone()
            }),
            duration: self.http_duration.get_or_create(l).clone(),
        }
    }

    /// A cluster's stats, made when first used: a view of 10 000 clusters is applied
    /// without 190 000 series, most of which would stay at zero.
    pub fn cluster(self: &Arc<Self>, name: &str) -> LazyClusterStats {
        LazyClusterStats {
            metrics: self.clone(),
            name: name.into(),
            made: std::sync::OnceLock::new(),
        }
    }

    fn cluster_series(&self, name: &str) -> ClusterStats {
        let l = ClusterLabels {
            cluster: name.to_string(),
        };
        let by_class = CODE_CLASSES.map(|code_class| {
            self.upstream_rq
                .get_or_create(&ClusterCodeLabels {
                    cluster: name.to_string(),
                    code_class,
                })
                .clone()
        });
        let breaker = |b: &'static str| {
            self.breaker_overflow
                .get_or_create(&BreakerLabels {
                    cluster: name.to_string(),
                    breaker: b,
                })
                .clone()
        };
        ClusterStats {
            rq_by_class: by_class,
            rq_duration: self.upstream_duration.get_or_create(&l).clone(),
            cx_active: self.upstream_cx_active.get_or_create(&l).clone(),
            cx_total: self.upstream_cx_total.get_or_create(&l).clone(),
            cx_connect_fail: self.upstream_cx_connect_fail.get_or_create(&l).clone(),
            tls_fail: self.upstream_tls_fail.get_or_create(&l).clone(),
            rq_retry: self.upstream_rq_retry.get_or_create(&l).clone(),
            rq_timeout: self.upstream_rq_timeout.get_or_create(&l).clone(),
            rq_reset: self.upstream_rq_reset.get_or_create(&l).clone(),
            overflow_connections: breaker("max_connections"),
            overflow_pending: breaker("max_pending_requests"),
            overflow_requests: breaker("max_requests"),
            overflow_retries: breaker("max_retries"),
            ejections_total: self.ejections_total.get_or_create(&l).clone(),
            ejections_active: self.ejections_active.get_or_create(&l).clone(),
        }
    }
}

fn class_index(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, 5) - 1
}

#[derive(Clone)]
pub struct ListenerStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_overflow: Counter,
    pub tcp_rx: Counter,
    pub tcp_tx: Counter,
    pub no_route: Counter,
}

#[derive(Clone)]
pub struct HandshakeCounters {
    pub success: Counter,
    pub failure: Counter,
    rejected: Family<ListenerReasonLabels, Counter>,
    listener: Arc<str>,
}

impl HandshakeCounters {
    /// A failed handshake; when it refused the client's certificate, why.
    pub fn failed(&self, error: &str) {
        self.failure.inc();
        if let Some(reason) = trellis_tls::peer_rejection(error) {
            self.rejected
                .get_or_create(&ListenerReasonLabels {
                    listener: self.listener.to_string(),
                    reason,
                })
                .inc();
        }
    }
}

/// A route's series, made on first use.
pub struct RouteStats {
    metrics: Arc<Metrics>,
    labels: Box<RouteLabels>,
    made: std::sync::OnceLock<Box<RouteSeries>>,
}

struct RouteSeries {
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteStats {
    pub fn record(&self, status: u16, seconds: f64) {
        let series = self
            .made
            .get_or_init(|| Box::new(self.metrics.route_series(&self.labels)));
        series.by_class[class_index(status)].inc();
        series.duration.observe(seconds);
    }
}

/// [`ClusterStats`] made on first use.
pub struct LazyClusterStats {
    metrics: Arc<Metrics>,
    name: Box<str>,
    made: std::sync::OnceLock<Box<ClusterStats>>,
}

impl std::ops::Deref for LazyClusterStats {
    type Target = ClusterStats;

    fn deref(&self) -> &ClusterStats {
        self.made
            .get_or_init(|| Box::new(self.metrics.cluster_series(&self.name)))
    }
}

#[derive(Clone)]
pub struct ClusterStats {
    rq_by_class: [Counter; 5],
    rq_duration: Histogram,
    pub cx_active: Gauge,
    pub cx_total: Counter,
    pub cx_connect_fail: Counter,
    pub tls_fail: Counter,
    pub rq_retry: Counter,
    pub rq_timeout: Counter,
    pub rq_reset: Counter,
    pub overflow_connections: Counter,
    pub overflow_pending: Counter,
    pub overflow_requests: Counter,
    pub overflow_retries: Counter,
    pub ejections_total: Counter,
    pub ejections_active: Gauge,
}

impl ClusterStats {
    pub fn record(&self, status: u16, seconds: f64) {
        self.rq_by_class[class_index(status)].inc();
        self.rq_duration.observe(seconds);
    }
}
