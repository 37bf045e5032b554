//! The ADS server: one task per stream, woken by requests and by its node's snapshot.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::{Request, Status, Streaming};

pub(crate) mod body;
mod held;
mod push;
mod thread;

pub use thread::ServerThread;

use crate::name::absent_from;
use crate::snapshot::Named;
use crate::wanted::Wanted;
use crate::wire::request::{DeltaRequest, SotwRequest, WireDecoder, WireRequest};
use crate::wire::response::{DeltaResponse, Encoded, Flavor, Response, SotwResponse};
use crate::wire::{DELTA_PATH, SDS_DELTA_PATH, SDS_SOTW_PATH, SOTW_PATH};
use crate::{is_wildcard_type, short_type, Cache, Snapshot, Versioned};
use body::ResponseBody;
use held::{Diff, Held};
pub(crate) use push::{Phase, Push};

/// Counters the control plane exports.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub streams_open: AtomicU64,
    pub responses: AtomicU64,
    pub resources_sent: AtomicU64,
    /// Responses that carried a shared base's whole set of a type, encoded once for
    /// every stream.
    pub whole_sets_shared: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    /// What each node refuses now: (node id, resource type) → the proxy's reason, from
    /// its last NACK of that type; an ACK of the type clears it.
    pub rejected: std::sync::Mutex<std::collections::BTreeMap<(String, String), String>>,
    /// The nodes with a stream open now, and how many each has.
    pub connected: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

/// A node's open stream, counted in [`ServerStats::connected`] until dropped.
struct Connected<'a> {
    stats: &'a ServerStats,
    node: String,
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        let mut nodes = self
            .stats
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                nodes.remove(&self.node);
            }
        }
    }
}

impl ServerStats {
    /// What nodes refuse now: (node id, resource type, the proxy's reason).
    pub fn rejections(&self) -> Vec<(String, String, String)> {
        let rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        rejected
            .iter()
            .map(|((node, kind), message)| (node.clone(), kind.clone(), message.clone()))
            .collect()
    }

    fn connect(&self, node: &str) -> Connected<'_> {
        let mut nodes = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        *nodes.entry(node.to_string()).or_default() += 1;
        Connected {
            stats: self,
            node: node.to_string(),
        }
    }

    /// Counts a response of `own` resources written for its stream and, if any, a
    /// shared run.
    fn responded(&self, own: usize, shared: Option<&Encoded>) {
        if shared.is_some() {
            self.whole_sets_shared.fetch_add(1, Ordering::Relaxed);
        }
        self.responses.fetch_add(1, Ordering::Relaxed);
        let count = own + shared.map_or(0, |s| s.count);
        self.resources_sent
            .fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Decides whether the caller of a stream (its request extensions: the transport's
/// peer identity) may ask for the view of a node id; the error is the reason.
pub type Authorize = Arc<dyn Fn(&tonic::Extensions, &str) -> Result<(), String> + Send + Sync>;

/// [`Authorize`] bound to one stream's caller.
type NodeCheck = Box<dyn Fn(&str) -> Result<(), String> + Send>;

#[derive(Clone)]
pub struct AdsServer {
    cache: Cache,
    stats: Arc<ServerStats>,
    authorize: Option<Authorize>,
    first_view_timeout: Duration,
}

/// How long a stream waits for its node's first view before it ends with UNAVAILABLE.
pub const FIRST_VIEW_TIMEOUT: Duration = Duration::from_secs(30);

impl AdsServer {
    pub fn new(cache: Cache) -> Self {
        AdsServer {
            cache,
            stats: Arc::default(),
            authorize: None,
            first_view_timeout: FIRST_VIEW_TIMEOUT,
        }
    }

    /// A node's streams answer nothing until the control plane has made its view (an
    /// empty first response would make an Envoy drop every listener and cluster it
    /// holds, as istiod never does); after `timeout` without one, the stream ends with
    /// UNAVAILABLE, naming the node, and the client reconnects.
    pub fn with_first_view_timeout(mut self, timeout: Duration) -> Self {
        self.first_view_timeout = timeout;
        self
    }

    /// Checks every stream's node id with `authorize` before serving it; a refused
    /// stream ends with PERMISSION_DENIED.
    pub fn with_authorization(mut self, authorize: Authorize) -> Self {
        self.authorize = Some(authorize);
        self
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The gRPC service, `envoy.service.discovery.v3.AggregatedDiscoveryService`.
    pub fn into_service(self) -> AdsService {
        Discovery(self, std::marker::PhantomData)
    }

    /// The same server as `envoy.service.secret.v3.SecretDiscoveryService`: a node
    /// agent's secrets for its local Envoy, whose TLS contexts name SDS on a cluster of
    /// their own rather than ADS.
    pub fn into_sds_service(self) -> SdsService {
        Discovery(self, std::marker::PhantomData)
    }
}

/// A gRPC discovery service's name and its two methods' paths (the messages are ADS's).
pub trait DiscoveryMethods: Send + Sync + 'static {
    const NAME: &'static str;
    const SOTW: &'static str;
    const DELTA: &'static str;
}

pub struct Ads;
impl DiscoveryMethods for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
    const SOTW: &'static str = SOTW_PATH;
    const DELTA: &'static str = DELTA_PATH;
}

pub struct Sds;
impl DiscoveryMethods for Sds {
    const NAME: &'static str = "envoy.service.secret.v3.SecretDiscoveryService";
    const SOTW: &'static str = SDS_SOTW_PATH;
    const DELTA: &'static str = SDS_DELTA_PATH;
}

/// [`AdsServer`] as a gRPC service for tonic's router. Written by hand rather than
/// generated so that responses can be `Wire` messages over shared resources.
pub struct Discovery<M>(AdsServer, std::marker::PhantomData<M>);

impl<M> Clone for Discovery<M> {
    fn clone(&self) -> Self {
        Discovery(self.0.clone(), std::marker::PhantomData)
    }
}

/// Aggregated discovery: every type on one stream.
pub type AdsService = Discovery<Ads>;
/// Secret discovery, on a stream of its own.
pub type SdsService = Discovery<Sds>;

const MAX_REQUEST: usize = 64 << 20;
const MAX_RESPONSE: usize = 256 << 20;

impl<M: DiscoveryMethods> tonic::server::NamedService for Discovery<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: DiscoveryMethods, B> tower::Service<http::Request<B>> for Discovery<M>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.0.clone();
        let path = req.uri().path();
        if path == M::SOTW {
            Box::pin(serve::<Sotw, B>(server, req))
        } else if path == M::DELTA {
            Box::pin(serve::<Delta, B>(server, req))
        } else {
            Box::pin(async {
                Ok(Status::unimplemented(format!("not a method of {}", M::NAME)).into_http())
            })
        }
    }
}

/// One ADS call of variant `V`: tonic decodes the requests; [`ResponseBody`] frames the
/// responses.
async fn serve<V, B>(
    server: AdsServer,
    req: http::Request<B>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible>
where
    V: Variant + Send + 'static,
    V::Req: Send,
    V::Resp: Response + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    if req.headers().contains_key("grpc-encoding") {
        // Nothing here offers compression (no grpc-accept-encoding), so none is used.
        return Ok(Status::unimplemented("compressed requests are not supported").into_http());
    }
    let request = Request::from_http(req.map(|body| {
        Streaming::new_request(
            WireDecoder::<V::Req>::default(),
            body,
            None,
            Some(MAX_REQUEST),
        )
    }));
    let body = ResponseBody::new(server.spawn_stream::<V>(request), MAX_RESPONSE);
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

impl AdsServer {
    /// Runs one stream of either variant on its own task; its responses are the output.
    fn spawn_stream<V: Variant + Send + 'static>(
        &self,
        request: Request<Streaming<V::Req>>,
    ) -> mpsc::Receiver<Result<V::Resp, Status>>
    where
        V::Req: Send,
        V::Resp: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let (cache, stats) = (self.cache.clone(), self.stats.clone());
        let first_view = self.first_view_timeout;
        let check: Option<NodeCheck> = self.authorize.clone().map(|a| {
            let extensions = request.extensions().clone();
            Box::new(move |node: &str| a(&extensions, node)) as Box<_>
        });
        let requests = request.into_inner();
        tokio::spawn(async move {
            stats.streams_open.fetch_add(1, Ordering::Relaxed);
            let run = stream::<V>(cache, requests, &tx, &stats, check, first_view);
            if let Err(status) = run.await {
                let _ = tx.send(Err(status)).await;
            }
            stats.streams_open.fetch_sub(1, Ordering::Relaxed);
        });
        rx
    }
}

fn node_id(
    node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
) -> Result<String, Status> {
    match node {
        Some(n) if !n.id.is_empty() => Ok(n.id.clone()),
        _ => Err(Status::invalid_argument(
            "the first request on a stream must carry node.id",
        )),
    }
}

fn nack_message(status: &envoy_types::pb::google::rpc::Status) -> &str {
    if status.message.is_empty() {
        "(no message)"
    } else {
        &status.message
    }
}

/// The types of `types` in make-before-break order.
fn push_order(mut types: Vec<String>) -> Vec<String> {
    let rank = |t: &str| match t {
        crate::SECRET => 0,
        crate::CLUSTER => 1,
        crate::ENDPOINT => 2,
        crate::LISTENER => 3,
        crate::ROUTE => 4,
        _ => 5,
    };
    types.sort_by_key(|t| (rank(t), t.clone()));
    types
}

/// What differs between the two ADS variants; [`stream`] is the loop they share.
trait Variant: Default {
    type Req: WireRequest;
    type Resp;
    fn node(req: &Self::Req) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    /// Takes a request into the subscriptions; returns the type to answer now, if any.
    fn on_request(&mut self, req: Self::Req, node: &str, stats: &ServerStats) -> Option<String>;
    /// The response due for one type, if its subscriber lacks something.
    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        push: Push<'_>,
        nonce: &mut u64,
        stats: &ServerStats,
    ) -> Option<Self::Resp>;
    fn types(&self) -> Vec<String>;
}

async fn stream<V: Variant>(
    cache: Cache,
    mut requests: Streaming<V::Req>,
    tx: &mpsc::Sender<Result<V::Resp, Status>>,
    stats: &ServerStats,
    check: Option<NodeCheck>,
    first_view: Duration,
) -> Result<(), Status> {
    let Some(first) = requests.message().await? else {
        return Ok(());
    };
    let node = node_id(V::node(&first))?;
    if let Some(check) = check {
        if let Err(reason) = check(&node) {
            tracing::warn!(%node, "xDS stream refused: {reason}");
            return Err(Status::permission_denied(format!("node {node}: {reason}")));
        }
    }
    let _connected = stats.connect(&node);
    let mut snapshots: watch::Receiver<Arc<Snapshot>> = cache.subscribe(&node);
    // Nothing is answered before the node's view exists: an empty first answer would
    // make a proxy drop what it holds. Requests wait in the stream meanwhile.
    match tokio::time::timeout(first_view, snapshots.wait_for(|s| s.is_sealed())).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Ok(()),
        Err(_) => {
            tracing::warn!(%node, "no view for this node after {first_view:?}; stream ended");
            return Err(Status::unavailable(format!(
                "node {node}: the control plane has no configuration for it after {first_view:?} (is there a workload by that name?)"
            )));
        }
    }
    let mut previous = snapshots.borrow_and_update().clone();
    let mut variant = V::default();
    let mut nonce = 0u64;
    let mut pending = Some(first);
    let send = |r: V::Resp| async {
        tx.send(Ok(r))
            .await
            .map_err(|_| Status::cancelled("stream closed"))
    };
    loop {
        if let Some(req) = pending.take() {
            if let Some(type_url) = variant.on_request(req, &node, stats) {
                let snapshot = snapshots.borrow().clone();
                let push = Push {
                    previous: &previous,
                    changes: None,
                    phase: Phase::All,
                };
                let r = variant.respond(&type_url, &snapshot, push, &mut nonce, stats);
                if let Some(r) = r {
                    send(r).await?;
                }
            }
        }
        tokio::select! {
            req = requests.message() => match req? {
                Some(req) => pending = Some(req),
                None => return Ok(()),
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let snapshot = snapshots.borrow_and_update().clone();
                let changes = snapshot.changes_since(&previous);
                let order = push_order(variant.types());
                for type_url in &order {
                    let push = Push { previous: &previous, changes: changes.as_ref(), phase: Phase::Upserts };
                    let r = variant.respond(type_url, &snapshot, push, &mut nonce, stats);
                    if let Some(r) = r {
                        send(r).await?;
                    }
                }
                for type_url in order.iter().rev() {
                    let push = Push { previous: &previous, changes: changes.as_ref(), phase: Phase::Removals };
                    let r = variant.respond(type_url, &snapshot, push, &mut nonce, stats);
                    if let Some(r) = r {
                        send(r).await?;
                    }
                }
                previous = snapshot;
            }
        }
    }
}

fn count_reply(
    req_nonce: &str,
    error: Option<&envoy_types::pb::google::rpc::Status>,
    node: &str,
    type_url: &str,
    stats: &ServerStats,
) {
    let key = (node.to_string(), short_type(type_url).to_string());
    if let Some(err) = error {
        stats.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%node, r#type = short_type(type_url), nonce = %req_nonce, "NACK: {}", nack_message(err));
        let mut rejected = stats.rejected.lock().unwrap_or_else(|e| e.into_inner());
        rejected.insert(key, nack_message(err).to_string());
    } else if !req_nonce.is_empty() {
        stats.acks.fetch_add(1, Ordering::Relaxed);
        let mut rejected = stats.rejected.lock().unwrap_or_else(|e| e.into_inner());
        rejected.remove(&key);
    }
}

/// One type's subscription on a state-of-the-world stream.
#[derive(Default)]
struct SotwWatch {
    /// None: every resource of the type.
    names: Option<Wanted>,
    names_hash: u64,
    /// Listeners and clusters: what the last response carried (every response carries
    /// the whole set), to send again only on change.
    sent: Option<(String, Option<Wanted>)>,
    /// Routes and endpoints: responses carry only what changed (the client keeps what a
    /// response leaves out, and drops what it no longer asks for), so the stream keeps
    /// what the client holds.
    held: Held,
    /// The version a reconnecting client said it holds, until the first response.
    resumed: Option<String>,
    responded: bool,
    nonce: String,
}

#[derive(Default)]
struct Sotw {
    watches: HashMap<String, SotwWatch>,
}

impl Variant for Sotw {
    type Req = SotwRequest;
    type Resp = SotwResponse;

    fn node(req: &SotwRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn types(&self) -> Vec<String> {
        self.watches.keys().cloned().collect()
    }

    fn on_request(&mut self, req: SotwRequest, node: &str, stats: &ServerStats) -> Option<String> {
        let w = self.watches.entry(req.type_url.clone()).or_default();
        // Every answer counts for what the client holds, even one overtaken by a newer
        // response: a refused route or endpoint set is held no more.
        w.held
            .answered(&req.response_nonce, req.error_detail.is_some());
        if !req.response_nonce.is_empty() && req.response_nonce != w.nonce {
            // An answer to an older response; the newer one is in flight.
            return None;
        }
        count_reply(
            &req.response_nonce,
            req.error_detail.as_ref(),
            node,
            &req.type_url,
            stats,
        );
        // An ACK naming the same 10 000 endpoint sets is recognised by a hash of the
        // names, without building a set of them.
        let hash = req.names.hash();
        if !req.response_nonce.is_empty() && hash == w.names_hash {
            // An ACK or a NACK of the same subscription: nothing to send until the
            // snapshot changes.
            return None;
        }
        w.names_hash = hash;
        let wildcard =
            is_wildcard_type(&req.type_url) && (req.names.is_empty() || req.names.contains("*"));
        let names: Option<Wanted> = (!wildcard).then(|| req.names.shared().collect());
        if let Some(names) = &names {
            // The client drops what it no longer asks for. Both in name order: one walk,
            // not a lookup of each of 10 000 held names.
            let mut unasked = absent_from(names.iter());
            let gone: Vec<String> = (w.held.versions.keys())
                .filter(|held| unasked(held.as_bytes()))
                .cloned()
                .collect();
            for name in gone {
                w.held.versions.remove(&name);
            }
        }
        w.names = names;
        if req.response_nonce.is_empty() && !req.version_info.is_empty() && !w.responded {
            // A reconnecting client already holds this version of the set.
            w.sent = Some((req.version_info.clone(), w.names.clone()));
            w.resumed = Some(req.version_info);
        }
        Some(req.type_url)
    }

    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        push: Push<'_>,
        nonce: &mut u64,
        stats: &ServerStats,
    ) -> Option<SotwResponse> {
        let w = self.watches.get_mut(type_url)?;
        let (version, picked) = if is_wildcard_type(type_url) {
            whole_set(w, type_url, snapshot, push)?
        } else {
            changed_only(w, type_url, snapshot, push)?
        };
        *nonce += 1;
        w.nonce = nonce.to_string();
        w.responded = true;
        let track = !is_wildcard_type(type_url);
        // The snapshot's own resources, shared: the encoder writes their bytes.
        let (resources, shared): (Vec<_>, _) = match picked {
            Picked::Some(diff) => {
                if track {
                    w.held.sent(&w.nonce, &diff);
                }
                let resources = diff.upserts.into_iter().map(|(_, r)| r.clone());
                (resources.collect(), None)
            }
            Picked::Whole(shared, own) => {
                if track {
                    w.held.sent_whole(&w.nonce, snapshot, type_url);
                }
                (own.into_iter().map(|(_, r)| r).collect(), Some(shared))
            }
        };
        stats.responded(resources.len(), shared.as_ref());
        Some(SotwResponse {
            version_info: version,
            resources,
            shared,
            type_url: type_url.to_string(),
            nonce: w.nonce.clone(),
        })
    }
}

/// What a response carries.
enum Picked<'a> {
    /// These resources, encoded for this stream.
    Some(Diff<'a>),
    /// A snapshot's whole set: its base's encoded once for every stream, and its own.
    Whole(Encoded, Named),
}

/// Whether `wanted` holds every name of `names` (both in order): one pass, not a
/// lookup per name.
fn covers<'a, W: AsRef<[u8]> + 'a>(
    wanted: impl Iterator<Item = &'a W> + 'a,
    names: impl Iterator<Item = &'a String>,
) -> bool {
    let mut absent = absent_from(wanted);
    names.into_iter().all(|name| !absent(name.as_bytes()))
}

/// The snapshot's whole set of a type in two parts, if the client holds nothing of it
/// and wants all of it.
fn whole(
    held: &Held,
    names: Option<&Wanted>,
    type_url: &str,
    snapshot: &Snapshot,
    phase: Phase,
    flavor: Flavor,
) -> Option<(Encoded, Named)> {
    if phase == Phase::Removals || !held.is_empty() {
        return None;
    }
    if let Some(names) = names {
        // Usually it wants exactly the snapshot's names, which the fingerprints say at
        // once; otherwise one walk decides.
        let exactly = names.fingerprint() == snapshot.fingerprint(type_url);
        if !exactly && !covers(names.iter(), snapshot.iter(type_url).map(|(n, _)| n)) {
            return None;
        }
    }
    snapshot.split(type_url, flavor)
}

/// A listener or cluster response: the whole subscribed set, if it differs from the last.
fn whole_set<'a>(
    w: &mut SotwWatch,
    type_url: &str,
    snapshot: &'a Snapshot,
    push: Push<'a>,
) -> Option<(String, Picked<'a>)> {
    if push.unchanged(type_url) {
        return None;
    }
    let wanted = |name: &String| (w.names.as_ref()).is_none_or(|n| n.contains(name.as_bytes()));
    // A state-of-the-world response replaces the whole set: in the upsert phase, what
    // is going away stays for one more response, until the removal phase.
    let gone = |name: &String| wanted(name) && snapshot.resource(type_url, name).is_none();
    let going: Vec<_> = match (push.phase, push.changes) {
        // Only a changed name can be gone: a lookup of each, not of all 10 000.
        (Phase::Upserts, Some(changes)) => changes
            .get(type_url)
            .into_iter()
            .flatten()
            .filter_map(|name| push.previous.resource(type_url, name).map(|r| (name, r)))
            .filter(|(name, _)| gone(name))
            .collect(),
        (Phase::Upserts, None) => push
            .previous
            .iter(type_url)
            .filter(|(name, _)| gone(name))
            .collect(),
        _ => Vec::new(),
    };
    if let (None, Some(version)) = (&w.names, snapshot.version(type_url)) {
        // Everything: the snapshot's own version of the set, or with what is going
        // away, a version of the pair.
        let version = match going.is_empty() {
            true => version.to_string(),
            false => {
                let mut h = xxhash_rust::xxh64::Xxh64::new(2);
                h.update(version.as_bytes());
                for (name, r) in &going {
                    h.update(name.as_bytes());
                    h.update(r.version.as_bytes());
                }
                format!("{:016x}", h.digest())
            }
        };
        let current = (version.clone(), None);
        if w.sent.as_ref() == Some(&current) {
            return None;
        }
        w.sent = Some(current);
        // The base's set as encoded once, then the own resources and those going away
        // (a response's resources need no order).
        let picked = match snapshot.split(type_url, Flavor::Sotw) {
            Some((shared, mut own)) => {
                own.extend(
                    going
                        .iter()
                        .map(|(name, r)| ((*name).clone(), Arc::clone(r))),
                );
                Picked::Whole(shared, own)
            }
            None => {
                let upserts = snapshot
                    .iter(type_url)
                    .chain(going)
                    .map(|(name, r)| (name.clone(), r))
                    .collect();
                Picked::Some(Diff {
                    upserts,
                    removed: Vec::new(),
                })
            }
        };
        return Some((version, picked));
    }
    let mut chosen: Vec<_> = snapshot
        .iter(type_url)
        .filter(|(name, _)| wanted(name))
        .collect();
    if !going.is_empty() {
        chosen.extend(going);
        chosen.sort_by(|a, b| a.0.cmp(b.0));
    }
    // The version of what this subscriber gets, so a change elsewhere in the type
    // sends it nothing.
    let mut h = xxhash_rust::xxh64::Xxh64::new(2);
    for (name, r) in &chosen {
        h.update(name.as_bytes());
        h.update(r.version.as_bytes());
    }
    let version = format!("{:016x}", h.digest());
    let current = (version.clone(), w.names.clone());
    if w.sent.as_ref() == Some(&current) {
        return None;
    }
    w.sent = Some(current);
    let upserts = chosen
        .into_iter()
        .map(|(name, r)| (name.clone(), r))
        .collect();
    Some((
        version,
        Picked::Some(Diff {
            upserts,
            removed: Vec::new(),
        }),
    ))
}

/// A route or endpoint response: what changed of what the client asks for. A resource
/// cannot be removed this way; the client drops it once nothing refers to it.
fn changed_only<'a>(
    w: &mut SotwWatch,
    type_url: &str,
    snapshot: &'a Snapshot,
    push: Push<'_>,
) -> Option<(String, Picked<'a>)> {
    if w.held.unchanged(type_url, push) {
        return None;
    }
    let names = &w.names;
    let wanted = |name: &str| names.as_ref().is_none_or(|n| n.contains(name.as_bytes()));
    let version = snapshot.version(type_url).unwrap_or_default().to_string();
    if let Some(resumed) = w.resumed.take() {
        if resumed == version {
            // It holds what it asks for: nothing to send until something changes.
            w.held.resume(type_url, snapshot, wanted);
            w.responded = true;
        }
    }
    let names = w.names.as_ref();
    if let Some((shared, own)) = whole(&w.held, names, type_url, snapshot, push.phase, Flavor::Sotw)
    {
        return Some((version, Picked::Whole(shared, own)));
    }
    let mut diff = w.held.diff(type_url, snapshot, push, wanted);
    diff.removed.clear();
    if diff.upserts.is_empty() && (w.responded || push.phase != Phase::All) {
        return None;
    }
    Some((version, Picked::Some(diff)))
}

/// One type's subscription on a delta stream.
#[derive(Default)]
struct DeltaWatch {
    wildcard: bool,
    names: Wanted,
    held: Held,
    responded: bool,
}

#[derive(Default)]
struct Delta {
    watches: HashMap<String, DeltaWatch>,
}

impl Variant for Delta {
    type Req = DeltaRequest;
    type Resp = DeltaResponse;

    fn node(req: &DeltaRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn types(&self) -> Vec<String> {
        self.watches.keys().cloned().collect()
    }

    fn on_request(&mut self, req: DeltaRequest, node: &str, stats: &ServerStats) -> Option<String> {
        let fresh = !self.watches.contains_key(&req.type_url);
        let w = self.watches.entry(req.type_url.clone()).or_default();
        w.held
            .answered(&req.response_nonce, req.error_detail.is_some());
        count_reply(
            &req.response_nonce,
            req.error_detail.as_ref(),
            node,
            &req.type_url,
            stats,
        );
        let subscription_change = fresh || !req.subscribe.is_empty() || !req.unsubscribe.is_empty();
        if !subscription_change {
            // An ACK or a NACK: nothing new to send until the snapshot changes.
            return None;
        }
        if fresh {
            w.wildcard = is_wildcard_type(&req.type_url) && req.subscribe.is_empty();
            w.held.versions = req
                .initial_resource_versions
                .into_iter()
                .map(|(name, version)| {
                    let claimed = Versioned {
                        version,
                        body: Default::default(),
                    };
                    (name, Arc::new(claimed))
                })
                .collect();
        }
        if req.subscribe.contains("*") {
            w.wildcard = true;
        }
        let subscribe = req.subscribe.shared().filter(|n| n != "*");
        if w.names.is_empty() {
            // A sidecar's first endpoint subscription names thousands of sets, in order
            // (clients keep them sorted): one bulk build, not an insert per name.
            w.names = subscribe.collect();
        } else {
            w.names.extend(subscribe);
        }
        for name in req.unsubscribe.iter() {
            if name == "*" {
                w.wildcard = false;
            } else {
                w.names.remove(name.as_bytes());
                w.held.versions.remove(name);
            }
        }
        Some(req.type_url)
    }

    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        push: Push<'_>,
        nonce: &mut u64,
        stats: &ServerStats,
    ) -> Option<DeltaResponse> {
        let w = self.watches.get_mut(type_url)?;
        if w.held.unchanged(type_url, push) {
            return None;
        }
        let (wildcard, names) = (w.wildcard, &w.names);
        let names_if_any = (!wildcard).then_some(names);
        let whole = whole(
            &w.held,
            names_if_any,
            type_url,
            snapshot,
            push.phase,
            Flavor::Delta,
        );
        let picked = match whole {
            Some((shared, own)) => Picked::Whole(shared, own),
            None => {
                let diff = w.held.diff(type_url, snapshot, push, |name| {
                    wildcard || names.contains(name.as_bytes())
                });
                if diff.upserts.is_empty()
                    && diff.removed.is_empty()
                    && (w.responded || push.phase != Phase::All)
                {
                    return None;
                }
                Picked::Some(diff)
            }
        };
        *nonce += 1;
        let nonce = nonce.to_string();
        let (resources, shared, removed_resources) = match picked {
            Picked::Whole(shared, own) => {
                w.held.sent_whole(&nonce, snapshot, type_url);
                (own, Some(shared), Vec::new())
            }
            Picked::Some(diff) => {
                w.held.sent(&nonce, &diff);
                let upserts = diff.upserts.into_iter();
                let resources = upserts.map(|(name, r)| (name, r.clone())).collect();
                (resources, None, diff.removed)
            }
        };
        w.responded = true;
        stats.responded(resources.len(), shared.as_ref());
        Some(DeltaResponse {
            system_version_info: snapshot.version(type_url).unwrap_or_default().to_string(),
            resources,
            shared,
            type_url: type_url.to_string(),
            removed_resources,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::held::Held;
    use super::{covers, whole, Phase};
    use crate::wanted::Wanted;
    use crate::wire::response::Flavor;
    use crate::{Base, Snapshot, CLUSTER};
    use envoy_types::pb::google::protobuf::Any;

    fn any(value: &str) -> Any {
        Any {
            type_url: CLUSTER.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    /// The whole set goes out to a stream that holds nothing and wants all of it,
    /// whether its names are exactly the set's (fingerprints agree) or more (the walk
    /// decides); never to one that wants part of it.
    #[test]
    fn whole_set_only_to_streams_that_want_all_of_it() {
        let mut base = Snapshot::new();
        for name in ["a", "b", "c"] {
            base.insert(name, any(name));
        }
        let mut snapshot = Snapshot::with_base(Base::new(base));
        snapshot.insert("own", any("own")).seal();
        let held = Held::default();
        let sends_whole = |names: &[&str]| {
            let wanted: Wanted = names.iter().map(|n| crate::Name::from(*n)).collect();
            let picked = whole(
                &held,
                Some(&wanted),
                CLUSTER,
                &snapshot,
                Phase::All,
                Flavor::Delta,
            );
            match picked {
                Some((shared, own)) => {
                    assert_eq!((shared.count, own.len()), (3, 1));
                    true
                }
                None => false,
            }
        };
        assert!(sends_whole(&["a", "b", "c", "own"]));
        assert!(sends_whole(&["a", "b", "c", "d", "own"]));
        assert!(!sends_whole(&["a", "b", "c"]));
        assert!(!sends_whole(&["a", "b", "d", "own"]));
        assert!(!sends_whole(&[]));
    }

    #[test]
    fn covers_checks_every_name_against_the_wanted_ones() {
        let set = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
        let case = |wanted: &[&str], names: &[&str]| covers(set(wanted).iter(), set(names).iter());
        assert!(case(&["a", "b", "c"], &["a", "c"]));
        assert!(case(&["a", "b"], &["a", "b"]));
        assert!(case(&[], &[]));
        assert!(!case(&["a", "c"], &["b"]));
        assert!(!case(&["a"], &["a", "b"]));
        assert!(!case(&[], &["a"]));
    }
}
