//! The ADS server: one task per stream, woken by requests and by its node's snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{is_wildcard_type, short_type, Cache, Snapshot};

/// Counters the control plane exports.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub streams_open: AtomicU64,
    pub responses: AtomicU64,
    pub resources_sent: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
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
}

impl AdsServer {
    pub fn new(cache: Cache) -> Self {
        AdsServer {
            cache,
            stats: Arc::default(),
            authorize: None,
        }
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

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AdsServer {
    /// Runs one stream of either variant on its own task; its responses are the output.
    fn spawn_stream<V: Variant + Send + 'static>(
        &self,
        request: Request<Streaming<V::Req>>,
    ) -> Out<V::Resp>
    where
        V::Req: Send,
        V::Resp: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let (cache, stats) = (self.cache.clone(), self.stats.clone());
        let check: Option<NodeCheck> = self.authorize.clone().map(|a| {
            let extensions = request.extensions().clone();
            Box::new(move |node: &str| a(&extensions, node)) as Box<_>
        });
        let requests = request.into_inner();
        tokio::spawn(async move {
            stats.streams_open.fetch_add(1, Ordering::Relaxed);
            if let Err(status) = stream::<V>(cache, requests, &tx, &stats, check).await {
                let _ = tx.send(Err(status)).await;
            }
            stats.streams_open.fetch_sub(1, Ordering::Relaxed);
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn_stream::<Sotw>(request)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn_stream::<Delta>(request)))
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

/// Which part of a change a response carries. A change is pushed make-before-break,
/// as the xDS protocol asks: first what is new or changed, clusters → endpoints →
/// listeners → routes, so that nothing refers to what a proxy does not have yet; then
/// removals, in the reverse order, once nothing refers to them any more (a removed
/// subset's cluster goes only after the routes that used it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Answering a request: the whole current state.
    All,
    Upserts,
    Removals,
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
    type Req: prost::Message + Default + 'static;
    type Resp;
    fn node(req: &Self::Req) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    /// Takes a request into the subscriptions; returns the type to answer now, if any.
    fn on_request(&mut self, req: Self::Req, node: &str, stats: &ServerStats) -> Option<String>;
    /// The response due for one type, if its subscriber lacks something (in `phase`;
    /// `previous` is the snapshot before this change).
    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        previous: &Snapshot,
        phase: Phase,
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
    let mut snapshots: watch::Receiver<Arc<Snapshot>> = cache.subscribe(&node);
    let mut previous = snapshots.borrow().clone();
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
                let r = variant.respond(
                    &type_url,
                    &snapshot,
                    &previous,
                    Phase::All,
                    &mut nonce,
                    stats,
                );
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
                let order = push_order(variant.types());
                for type_url in &order {
                    let r = variant.respond(type_url, &snapshot, &previous, Phase::Upserts, &mut nonce, stats);
                    if let Some(r) = r {
                        send(r).await?;
                    }
                }
                for type_url in order.iter().rev() {
                    let r = variant.respond(type_url, &snapshot, &previous, Phase::Removals, &mut nonce, stats);
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
    if let Some(err) = error {
        stats.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%node, r#type = short_type(type_url), nonce = %req_nonce, "NACK: {}", nack_message(err));
    } else if !req_nonce.is_empty() {
        stats.acks.fetch_add(1, Ordering::Relaxed);
    }
}

/// One type's subscription on a state-of-the-world stream.
#[derive(Default)]
struct SotwWatch {
    /// None: every resource of the type.
    names: Option<BTreeSet<String>>,
    /// What the last response carried, to send again only on change.
    sent: Option<(String, Option<BTreeSet<String>>)>,
    nonce: String,
}

#[derive(Default)]
struct Sotw {
    watches: HashMap<String, SotwWatch>,
}

impl Variant for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn types(&self) -> Vec<String> {
        self.watches.keys().cloned().collect()
    }

    fn on_request(
        &mut self,
        req: DiscoveryRequest,
        node: &str,
        stats: &ServerStats,
    ) -> Option<String> {
        let w = self.watches.entry(req.type_url.clone()).or_default();
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
        let wildcard = is_wildcard_type(&req.type_url)
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"));
        w.names = (!wildcard).then(|| req.resource_names.iter().cloned().collect());
        if req.response_nonce.is_empty() && !req.version_info.is_empty() && w.sent.is_none() {
            // A reconnecting client already holds this version of the set.
            w.sent = Some((req.version_info.clone(), w.names.clone()));
        }
        Some(req.type_url)
    }

    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        previous: &Snapshot,
        phase: Phase,
        nonce: &mut u64,
        stats: &ServerStats,
    ) -> Option<DiscoveryResponse> {
        let w = self.watches.get_mut(type_url)?;
        let empty = Default::default();
        let set = snapshot.get(type_url).unwrap_or(&empty);
        let wanted = |name: &String| w.names.as_ref().is_none_or(|n| n.contains(name));
        let mut chosen: Vec<_> = set.items.iter().filter(|(name, _)| wanted(name)).collect();
        if phase == Phase::Upserts {
            // A state-of-the-world response replaces the whole set: keep what is going
            // away for one more response, until the removal phase.
            let old = previous.get(type_url).unwrap_or(&empty);
            chosen.extend(
                old.items
                    .iter()
                    .filter(|(name, _)| wanted(name) && !set.items.contains_key(*name)),
            );
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
        let resources: Vec<_> = chosen.into_iter().map(|(_, r)| r.body.clone()).collect();
        *nonce += 1;
        w.nonce = nonce.to_string();
        w.sent = Some(current);
        stats.responses.fetch_add(1, Ordering::Relaxed);
        stats
            .resources_sent
            .fetch_add(resources.len() as u64, Ordering::Relaxed);
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_string(),
            nonce: w.nonce.clone(),
            ..Default::default()
        })
    }
}

/// One type's subscription on a delta stream.
#[derive(Default)]
struct DeltaWatch {
    wildcard: bool,
    names: BTreeSet<String>,
    /// The version of each resource the client holds (as far as this server knows).
    /// Sorted like the snapshot's items, so that a response walks both in step (one
    /// comparison per resource, no hashing of 30 000 names per sidecar per change).
    client: BTreeMap<String, String>,
    /// Per unanswered response: what `client` said before it, restored on NACK so the
    /// refused resources count as not held and go out again with the next change.
    pending: HashMap<String, Vec<(String, Option<String>)>>,
    responded: bool,
}

#[derive(Default)]
struct Delta {
    watches: HashMap<String, DeltaWatch>,
}

impl Variant for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn types(&self) -> Vec<String> {
        self.watches.keys().cloned().collect()
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        node: &str,
        stats: &ServerStats,
    ) -> Option<String> {
        let fresh = !self.watches.contains_key(&req.type_url);
        let w = self.watches.entry(req.type_url.clone()).or_default();
        let before = w.pending.remove(&req.response_nonce);
        count_reply(
            &req.response_nonce,
            req.error_detail.as_ref(),
            node,
            &req.type_url,
            stats,
        );
        if req.error_detail.is_some() {
            for (name, version) in before.into_iter().flatten() {
                match version {
                    Some(v) => w.client.insert(name, v),
                    None => w.client.remove(&name),
                };
            }
        }
        let subscription_change = fresh
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty();
        if !subscription_change {
            // An ACK or a NACK: nothing new to send until the snapshot changes.
            return None;
        }
        if fresh {
            w.wildcard = is_wildcard_type(&req.type_url) && req.resource_names_subscribe.is_empty();
            w.client = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                w.wildcard = true;
            } else {
                w.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                w.wildcard = false;
            } else {
                w.names.remove(name);
                w.client.remove(name);
            }
        }
        Some(req.type_url)
    }

    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        _previous: &Snapshot,
        phase: Phase,
        nonce: &mut u64,
        stats: &ServerStats,
    ) -> Option<DeltaDiscoveryResponse> {
        let w = self.watches.get_mut(type_url)?;
        let empty = Default::default();
        let set = snapshot.get(type_url).unwrap_or(&empty);
        let wanted = |name: &str| w.wildcard || w.names.contains(name);
        let mut resources = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        // Both maps are sorted by name: walk them together.
        let mut held = w.client.iter().peekable();
        for (name, r) in &set.items {
            while let Some((h, _)) = held.next_if(|(h, _)| h.as_str() < name.as_str()) {
                // Held, no longer in the snapshot.
                if phase != Phase::Upserts {
                    removed.push(h.clone());
                }
            }
            let have = held.next_if(|(h, _)| *h == name).map(|(_, v)| v);
            let want = wanted(name);
            if phase != Phase::Removals && want && have != Some(&r.version) {
                resources.push(Resource {
                    name: name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                });
            }
            if phase != Phase::Upserts && have.is_some() && !want {
                removed.push(name.clone());
            }
        }
        if phase != Phase::Upserts {
            removed.extend(held.map(|(h, _)| h.clone()));
        }
        if resources.is_empty() && removed.is_empty() && (w.responded || phase != Phase::All) {
            return None;
        }
        *nonce += 1;
        let mut before = Vec::with_capacity(resources.len() + removed.len());
        for r in &resources {
            before.push((
                r.name.clone(),
                w.client.insert(r.name.clone(), r.version.clone()),
            ));
        }
        for name in &removed {
            before.push((name.clone(), w.client.remove(name)));
        }
        w.pending.insert(nonce.to_string(), before);
        w.responded = true;
        stats.responses.fetch_add(1, Ordering::Relaxed);
        stats
            .resources_sent
            .fetch_add(resources.len() as u64, Ordering::Relaxed);
        Some(DeltaDiscoveryResponse {
            system_version_info: set.version.clone(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.to_string(),
            ..Default::default()
        })
    }
}
