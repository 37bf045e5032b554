//! Clusters: a named set of endpoints with a load balancer, connection pools,
//! circuit breakers and passive outlier detection. A cluster survives config
//! reloads unchanged when its config is unchanged, keeping its connections and state.

mod happy_eyeballs;
mod lb;
pub mod outlier;
mod pool;

use crate::body::{Body, BoxError};
use crate::stats::Metrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use lb::Balancer;
use outlier::{Clock, EndpointHealth, Outcome};
use pool::{EndpointPool, Sender};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use trellis_config::{Cluster as ClusterConfig, DiscoveryType};

pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Reached without the cluster's TLS (an endpoint without a sidecar).
    pub plaintext: bool,
    pub health: EndpointHealth,
    active_requests: AtomicU32,
    pool: EndpointPool,
}

impl Endpoint {
    fn new(addr: SocketAddr, weight: u32, plaintext: bool) -> Arc<Self> {
        Endpoint::with_additional(addr, &[], weight, plaintext)
    }

    fn with_additional(
        addr: SocketAddr,
        additional: &[SocketAddr],
        weight: u32,
        plaintext: bool,
    ) -> Arc<Self> {
        Arc::new(Endpoint {
            addr,
            weight,
            plaintext,
            health: EndpointHealth::default(),
            active_requests: AtomicU32::new(0),
            pool: EndpointPool::new(addr, additional, plaintext),
        })
    }
    pub fn active_requests(&self) -> u32 {
        self.active_requests.load(Ordering::Relaxed)
    }
}

struct HostSet {
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
}

#[derive(Default)]
struct Limits {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
    /// Woken when a connection is returned idle or closes.
    released: Notify,
}

#[derive(Debug)]
pub enum UpstreamError {
    /// A circuit breaker refused the request; names the breaker.
    Overflow(&'static str),
    ConnectFailure(String),
    Reset(String),
    /// The per-try timeout expired before response headers.
    Timeout,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Overflow(b) => write!(f, "circuit breaker {b} overflow"),
            UpstreamError::ConnectFailure(e) => write!(f, "upstream connect error: {e}"),
            UpstreamError::Reset(e) => write!(f, "upstream reset: {e}"),
            UpstreamError::Timeout => write!(f, "upstream per-try timeout"),
        }
    }
}

pub struct Cluster {
    pub name: String,
    pub config: ClusterConfig,
    pub stats: crate::stats::LazyClusterStats,
    hosts: ArcSwap<HostSet>,
    rr: AtomicUsize,
    limits: Limits,
    clock: Clock,
    /// Upstream TLS, rebuilt when the cluster changes and on every reload and
    /// certificate rotation, so that new certificates take effect for new connections
    /// while the cluster keeps its state.
    pub tls: arc_swap::ArcSwapOption<trellis_tls::ClientTls>,
    /// The mesh service behind it, for Istio's metrics.
    pub istio_service: Option<crate::istio_stats::Service>,
    /// A mesh service reached over mutual TLS: requests carry this workload's metadata.
    pub in_mesh: bool,
    /// An `original_dst` cluster's hosts: one per destination seen, with when it was
    /// last picked (ms), kept for the next connection there and dropped once unused.
    original_dst: Mutex<HashMap<SocketAddr, (Arc<Endpoint>, u64)>>,
}

/// How long an `original_dst` host stays after its last use (Envoy's default
/// `cleanup_interval`), and how many are kept at most (more are made per connection).
const ORIGINAL_DST_CLEANUP: Duration = Duration::from_secs(5);
const ORIGINAL_DST_HOSTS: usize = 4096;

impl Cluster {
    /// Builds a cluster; DNS clusters start empty and resolve in the background.
    pub fn new(config: &ClusterConfig, metrics: &Arc<Metrics>) -> Arc<Self> {
        let endpoints = match config.discovery {
            DiscoveryType::Static => config
                .endpoints
                .iter()
                .filter_map(|e| {
                    let addr = e.address().parse().ok()?;
                    let additional: Vec<SocketAddr> = e
                        .additional_addresses()
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    Some(Endpoint::with_additional(
                        addr,
                        &additional,
                        e.weight(),
                        e.plaintext(),
                    ))
                })
                .collect(),
            DiscoveryType::Dns | DiscoveryType::OriginalDst => Vec::new(),
        };
        Arc::new(Cluster {
            name: config.name.clone(),
            config: config.clone(),
            stats: metrics.cluster(&config.name),
            hosts: ArcSwap::from_pointee(HostSet {
                balancer: Balancer::build(config.lb_policy, &endpoints),
                endpoints,
            }),
            rr: AtomicUsize::new(0),
            limits: Limits::default(),
            clock: Clock::default(),
            tls: arc_swap::ArcSwapOption::empty(),
            istio_service: config.service.as_ref().map(crate::istio_stats::Service::of),
            in_mesh: config.service.is_some() && config.tls.is_some(),
            original_dst: Mutex::new(HashMap::new()),
        })
    }

    /// Starts DNS refresh and the outlier sweep; both stop when the cluster is dropped.
    pub async fn start(self: &Arc<Self>) {
        if self.config.discovery == DiscoveryType::Dns {
            self.resolve().await;
            let weak = Arc::downgrade(self);
            let every = self.config.dns_refresh_rate.get();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(c) = weak.upgrade() else { return };
                    c.resolve().await;
                }
            });
        }
        if self.config.discovery == DiscoveryType::OriginalDst {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ORIGINAL_DST_CLEANUP).await;
                    let Some(c) = weak.upgrade() else { return };
                    c.sweep_original_dst();
                }
            });
        }
        if let Some(od) = &self.config.outlier_detection {
            let weak: Weak<Cluster> = Arc::downgrade(self);
            let every = od.interval.get();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(c) = weak.upgrade() else { return };
                    c.sweep_outliers();
                }
            });
        }
    }

    async fn resolve(&self) {
        let mut addrs: Vec<(SocketAddr, u32)> = Vec::new();
        for e in &self.config.endpoints {
            match tokio::net::lookup_host(e.address()).await {
                Ok(found) => addrs.extend(found.map(|a| (a, e.weight()))),
                Err(err) => {
                    tracing::warn!(cluster = %self.name, name = e.address(), "DNS resolution failed: {err}")
                }
            }
        }
        addrs.sort();
        addrs.dedup_by_key(|(a, _)| *a);
        let current = self.hosts.load();
        let same = current.endpoints.len() == addrs.len()
            && current
                .endpoints
                .iter()
                .zip(&addrs)
                .all(|(e, (a, w))| e.addr == *a && e.weight == *w);
        if same || (addrs.is_empty() && !current.endpoints.is_empty()) {
            // Keep the last good answer when resolution fails.
            return;
        }
        let keep: HashMap<SocketAddr, &Arc<Endpoint>> =
            current.endpoints.iter().map(|e| (e.addr, e)).collect();
        let endpoints: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|(a, w)| match keep.get(a) {
                Some(e) if e.weight == *w => Arc::clone(e),
                _ => Endpoint::new(*a, *w, false),
            })
            .collect();
        tracing::info!(cluster = %self.name, endpoints = ?addrs.iter().map(|a| a.0).collect::<Vec<_>>(), "DNS endpoints updated");
        self.hosts.store(Arc::new(HostSet {
            balancer: Balancer::build(self.config.lb_policy, &endpoints),
            endpoints,
        }));
    }

    fn original_dst_host(&self, dst: SocketAddr) -> Arc<Endpoint> {
        let now = self.clock.now_ms();
        let mut hosts = self.original_dst.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((e, used)) = hosts.get_mut(&dst) {
            *used = now;
            return e.clone();
        }
        let e = Endpoint::new(dst, 1, false);
        if hosts.len() < ORIGINAL_DST_HOSTS {
            hosts.insert(dst, (e.clone(), now));
        }
        e
    }

    /// Drops `original_dst` hosts nobody holds that were not picked for a while.
    fn sweep_original_dst(&self) {
        let now = self.clock.now_ms();
        let idle = ORIGINAL_DST_CLEANUP.as_millis() as u64;
        let mut hosts = self.original_dst.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|_, (e, used)| Arc::strong_count(e) > 1 || now.saturating_sub(*used) < idle);
    }

    fn sweep_outliers(&self) {
        let now = self.clock.now_ms();
        for e in &self.hosts.load().endpoints {
            if e.health.sweep(now) {
                self.stats.ejections_active.dec();
                tracing::info!(cluster = %self.name, endpoint = %e.addr, "endpoint returned from ejection");
            }
        }
    }

    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.hosts.load().endpoints.clone()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Chooses an endpoint, or None when the cluster has none. An `original_dst`
    /// cluster's endpoint is where the downstream connection was going, and it has none
    /// for a connection that was not captured.
    pub fn pick(
        &self,
        hash: Option<u64>,
        original_dst: Option<SocketAddr>,
    ) -> Option<Arc<Endpoint>> {
        if self.config.discovery == DiscoveryType::OriginalDst {
            return original_dst.map(|dst| self.original_dst_host(dst));
        }
        let hosts = self.hosts.load();
        let i = hosts
            .balancer
            .pick(&hosts.endpoints, &self.rr, hash, self.clock.now_ms())?;
        Some(hosts.endpoints[i].clone())
    }

    /// Feeds an attempt's outcome to outlier detection.
    pub fn record_outcome(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(od) = &self.config.outlier_detection else {
            return;
        };
        if !endpoint.health.record(od, outcome) {
            return;
        }
        let hosts = self.hosts.load();
        let now = self.clock.now_ms();
        let ejected = hosts
            .endpoints
            .iter()
            .filter(|e| !e.health.is_available(now))
            .count();
        if !endpoint.health.is_available(now)
            || ejected >= outlier::max_ejected(od, hosts.endpoints.len())
        {
            return;
        }
        let time = endpoint.health.eject(od, now);
        self.stats.ejections_total.inc();
        self.stats.ejections_active.inc();
        tracing::warn!(cluster = %self.name, endpoint = %endpoint.addr, ?outcome, ejection_time = ?time, "endpoint ejected by outlier detection");
    }

    /// The max_requests breaker: a guard per request in flight to this cluster.
    pub fn start_request(self: &Arc<Self>) -> Option<RequestGuard> {
        let max = self.config.circuit_breakers.max_requests;
        if self.limits.requests.fetch_add(1, Ordering::AcqRel) >= max {
            self.limits.requests.fetch_sub(1, Ordering::AcqRel);
            self.stats.overflow_requests.inc();
            return None;
        }
        Some(RequestGuard {
            cluster: self.clone(),
        })
    }

    /// The max_retries breaker: retries in flight at once across the cluster.
    pub fn start_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let max = self.config.circuit_breakers.max_retries;
        if self.limits.retries.fetch_add(1, Ordering::AcqRel) >= max {
            self.limits.retries.fetch_sub(1, Ordering::AcqRel);
            self.stats.overflow_retries.inc();
            return None;
        }
        self.stats.rq_retry.inc();
        Some(RetryGuard(self.clone()))
    }

    fn enter_pending(self: &Arc<Self>) -> Result<PendingGuard, UpstreamError> {
        self.stats.overflow_connections.inc();
        let max = self.config.circuit_breakers.max_pending_requests;
        if self.limits.pending.fetch_add(1, Ordering::AcqRel) >= max {
            self.limits.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.overflow_pending.inc();
            return Err(UpstreamError::Overflow("max_pending_requests"));
        }
        Ok(PendingGuard(self.clone()))
    }

    /// Sends one request attempt to `endpoint`. The response body keeps the request
    /// guard (and, for HTTP/1.1, the connection) until it has been read to the end.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        mut req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        endpoint.active_requests.fetch_add(1, Ordering::Relaxed);
        let active = ActiveGuard(endpoint.clone());
        let mut fresh = upgrade;
        loop {
            match endpoint.pool.checkout(self, fresh).await? {
                Sender::Http2(mut s) => {
                    let resp = s
                        .send_request(req)
                        .await
                        .map_err(|e| UpstreamError::Reset(e.to_string()))?;
                    return Ok(resp.map(|b| UpstreamBody::new(b, None, active)));
                }
                Sender::Http1 { mut sender, reused } => {
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            let keep = (!upgrade).then(|| PoolReturn {
                                cluster: self.clone(),
                                endpoint: endpoint.clone(),
                                sender: Some(sender),
                            });
                            return Ok(resp.map(|b| UpstreamBody::new(b, keep, active)));
                        }
                        Err(mut e) => match e.take_message() {
                            // The server closed an idle connection as we used it:
                            // nothing was sent, so try once more on a new connection.
                            Some(r) if reused => {
                                req = r;
                                fresh = true;
                            }
                            _ => return Err(UpstreamError::Reset(e.into_error().to_string())),
                        },
                    }
                }
            }
        }
    }
}

pub struct RequestGuard {
    cluster: Arc<Cluster>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.cluster.limits.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct RetryGuard(Arc<Cluster>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.limits.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PendingGuard(Arc<Cluster>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.limits.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

struct PoolReturn {
    cluster: Arc<Cluster>,
    endpoint: Arc<Endpoint>,
    sender: Option<hyper::client::conn::http1::SendRequest<Body>>,
}

impl PoolReturn {
    fn release(&mut self) {
        if let Some(s) = self.sender.take() {
            self.endpoint.pool.release(&self.cluster, s);
        }
    }
}

/// An upstream response body. When it has been read to the end the HTTP/1.1
/// connection goes back to the pool; dropping it early discards the connection.
pub struct UpstreamBody {
    inner: Incoming,
    keep: Option<PoolReturn>,
    _guard: Option<RequestGuard>,
    _active: ActiveGuard,
}

impl UpstreamBody {
    fn new(inner: Incoming, keep: Option<PoolReturn>, active: ActiveGuard) -> Self {
        let mut body = UpstreamBody {
            inner,
            keep,
            _guard: None,
            _active: active,
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    /// Keeps the cluster's request slot (max_requests) until the body is done.
    pub fn hold(&mut self, guard: RequestGuard) {
        self._guard = Some(guard);
    }

    fn finish(&mut self) {
        if let Some(mut k) = self.keep.take() {
            k.release();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => this.keep = None,
            _ => {}
        }
        polled.map(|o| o.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A cluster as routes, TCP proxies and tracers name it: the cluster of that name the
/// proxy serves, replaced in place when an update changes it, so that what names it is
/// not rebuilt (a route table of 10 000 services stays as it is when one changes).
#[derive(Clone)]
pub struct ClusterRef(Arc<ArcSwap<Cluster>>);

impl ClusterRef {
    fn new(cluster: Arc<Cluster>) -> Self {
        ClusterRef(Arc::new(ArcSwap::new(cluster)))
    }

    /// The cluster now; a request keeps the one it started with.
    pub fn get(&self) -> Arc<Cluster> {
        self.0.load_full()
    }
}

/// A cluster the proxy serves, with the config it was built from.
#[derive(Clone)]
struct Served {
    source: Arc<ClusterConfig>,
    cluster: Arc<Cluster>,
    by_name: ClusterRef,
}

/// Keeps clusters across updates: an unchanged config keeps its running cluster (its
/// connections, outlier state and TLS context); a changed one is built anew and put in
/// place of the old under the same [`ClusterRef`].
#[derive(Default)]
pub struct ClusterManager {
    clusters: rustc_hash::FxHashMap<String, Served>,
    /// The configs served, in the order they came: an update that lists the same `Arc`
    /// at the same place is told unchanged without a lookup.
    order: Vec<Arc<ClusterConfig>>,
}

/// The clusters of a config being applied: the running ones it keeps, the ones it builds
/// (to start, and to put in place on commit), and their names for what refers to them.
pub struct ClusterSet<'a> {
    running: &'a rustc_hash::FxHashMap<String, Served>,
    order: Vec<Arc<ClusterConfig>>,
    /// New or changed clusters, by name.
    built: HashMap<String, Served>,
    /// Running clusters the config does not have.
    removed: std::collections::HashSet<String>,
    /// Clusters made anew, to start before they serve.
    pub fresh: Vec<Arc<Cluster>>,
}

impl ClusterSet<'_> {
    /// The cluster named `name` in this config.
    pub fn get(&self, name: &str) -> Option<&ClusterRef> {
        match self.built.get(name) {
            Some(s) => Some(&s.by_name),
            None if self.removed.contains(name) => None,
            None => self.running.get(name).map(|s| &s.by_name),
        }
    }

    /// The clusters built for this config (new or changed), with their configs.
    pub fn built(&self) -> impl Iterator<Item = (&ClusterConfig, &Arc<Cluster>)> {
        self.built.values().map(|s| (&*s.source, &s.cluster))
    }

    /// What [`ClusterManager::commit`] installs.
    pub fn into_commit(self) -> Commit {
        Commit {
            built: self.built,
            removed: self.removed,
            order: self.order,
        }
    }
}

/// What [`ClusterManager::commit`] installs.
pub struct Commit {
    built: HashMap<String, Served>,
    removed: std::collections::HashSet<String>,
    order: Vec<Arc<ClusterConfig>>,
}

impl ClusterManager {
    /// The cluster set of a config: running clusters whose config is unchanged (the same
    /// `Arc`, or equal) are kept; `rebuild` builds every one anew (new certificates
    /// make new TLS contexts; the connections of a kept cluster stay). Call
    /// [`Cluster::start`] on the built clusters before they take traffic.
    pub fn build<'a>(
        &'a self,
        configs: &[Arc<ClusterConfig>],
        metrics: &Arc<Metrics>,
        rebuild: bool,
    ) -> ClusterSet<'a> {
        let (mut built, mut fresh, mut present) = (HashMap::new(), Vec::new(), 0);
        for (i, c) in configs.iter().enumerate() {
            let unchanged = self.unchanged(i, c);
            present += usize::from(unchanged.is_some());
            if unchanged == Some(true) && !rebuild {
                continue;
            }
            let running = self.clusters.get(&c.name);
            let cluster = match running {
                // Same config, rebuilt for its TLS context only: same cluster state.
                Some(s) if unchanged == Some(true) => s.cluster.clone(),
                _ => {
                    let new = Cluster::new(c, metrics);
                    fresh.push(new.clone());
                    new
                }
            };
            let by_name = match running {
                Some(s) => s.by_name.clone(),
                None => ClusterRef::new(cluster.clone()),
            };
            built.insert(
                c.name.clone(),
                Served {
                    source: c.clone(),
                    cluster,
                    by_name,
                },
            );
        }
        let removed = if present < self.clusters.len() {
            let names: std::collections::HashSet<&str> =
                configs.iter().map(|c| c.name.as_str()).collect();
            self.clusters
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect()
        } else {
            Default::default()
        };
        ClusterSet {
            running: &self.clusters,
            order: configs.to_vec(),
            built,
            removed,
            fresh,
        }
    }

    /// Serves the cluster set built: changed clusters take their names' place.
    pub fn commit(&mut self, commit: Commit) {
        for name in &commit.removed {
            self.clusters.remove(name);
        }
        for (name, served) in commit.built {
            served.by_name.0.store(served.cluster.clone());
            self.clusters.insert(name, served);
        }
        self.order = commit.order;
    }

    /// Each of `configs` with whether it is new or changed (all of them with `all`), and
    /// how many of them are running already, for checking what an update changes.
    pub fn marks<'a>(
        &self,
        configs: &'a [Arc<ClusterConfig>],
        all: bool,
    ) -> (Vec<(&'a ClusterConfig, bool)>, usize) {
        let mut running = 0;
        let marks = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let unchanged = self.unchanged(i, c);
                running += usize::from(unchanged.is_some());
                (&**c, all || unchanged != Some(true))
            })
            .collect();
        (marks, running)
    }

    /// How `c`, at place `i` of an update, stands to what runs: `None` when no cluster
    /// of its name runs, else whether it runs from this config — the same `Arc` at the
    /// same place (told without a lookup), or an equal config.
    fn unchanged(&self, i: usize, c: &Arc<ClusterConfig>) -> Option<bool> {
        if self.order.get(i).is_some_and(|o| Arc::ptr_eq(o, c)) {
            return Some(true);
        }
        let s = self.clusters.get(&c.name)?;
        Some(Arc::ptr_eq(&s.source, c) || *s.source == **c)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values().map(|s| &s.cluster)
    }

    /// How many clusters run.
    pub fn count(&self) -> usize {
        self.clusters.len()
    }
}
