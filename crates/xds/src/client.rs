//! The proxy's side of ADS: keep the subscriptions a [`Subscriber`] asks for, hand it
//! every new state, ACK what it accepts and NACK what it refuses, and come back after
//! a lost connection with the versions already held.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::name::absent_from;
use crate::wire::client::{
    AnyIn, DeltaRequestOut, DeltaResponseIn, NameField, NamesOut, ResourceIn, SotwClientCodec,
    SotwRequestOut, SotwResponseIn,
};
use crate::wire::{DELTA_PATH, SOTW_PATH};
use crate::Name;
use crate::{is_wildcard_type, short_type, CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// A resource as the client holds it: the version the server gave it and its encoded
/// body (of the type it is held under). Both are slices of the response that carried
/// them: a full push of 20 000 resources is one buffer, not 80 000 allocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    version: Bytes,
    body: Bytes,
}

impl Resource {
    /// `version` must be UTF-8 (the client checks what it receives).
    pub fn new(version: impl Into<Bytes>, body: impl Into<Bytes>) -> Self {
        Resource {
            version: version.into(),
            body: body.into(),
        }
    }

    pub fn version(&self) -> &str {
        std::str::from_utf8(&self.version).unwrap_or_default()
    }

    /// Whether both have the same version (without reading either as text).
    pub fn same_version(&self, other: &Resource) -> bool {
        self.version == other.version
    }

    /// The encoded message.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The encoded message as the shared buffer it is a slice of (to slice further
    /// without copying).
    pub fn body_shared(&self) -> &Bytes {
        &self.body
    }
}

/// The resources the client holds, by type URL and name.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    pub types: BTreeMap<String, BTreeMap<Name, Resource>>,
    /// Per type, a stamp that changes with every change of the type (unique across
    /// states), so a subscriber can keep what it derived from an unchanged type.
    revisions: BTreeMap<String, u64>,
}

impl PartialEq for ClientState {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
    }
}

impl ClientState {
    pub fn of(&self, type_url: &str) -> impl Iterator<Item = (&Name, &Resource)> {
        self.types.get(type_url).into_iter().flat_map(|m| m.iter())
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Resource> {
        self.types
            .get(type_url)
            .and_then(|m| m.get(name.as_bytes()))
    }

    /// How many resources of a type the client holds.
    pub fn count(&self, type_url: &str) -> usize {
        self.types.get(type_url).map_or(0, |m| m.len())
    }

    /// The type's current stamp: equal stamps mean the type did not change.
    pub fn revision(&self, type_url: &str) -> u64 {
        self.revisions.get(type_url).copied().unwrap_or(0)
    }

    /// The resources of a type, to change; the type's stamp moves.
    fn held_mut(&mut self, type_url: &str) -> &mut BTreeMap<Name, Resource> {
        static STAMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let stamp = STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.revisions.get_mut(type_url) {
            Some(r) => *r = stamp,
            None => {
                self.revisions.insert(type_url.to_string(), stamp);
            }
        }
        if !self.types.contains_key(type_url) {
            self.types.insert(type_url.to_string(), BTreeMap::new());
        }
        self.types.get_mut(type_url).expect("inserted above")
    }
}

/// What the client subscribes to per type: `None` is every resource of the type. A
/// subscriber that returns the same `Arc` for an unchanged set spares the client
/// comparing and pruning thousands of names after every response.
pub type Interest = Vec<(&'static str, Option<Arc<BTreeSet<Name>>>)>;

/// The named interest each type was last pruned against.
type Pruned = HashMap<&'static str, Arc<BTreeSet<Name>>>;

#[tonic::async_trait]
pub trait Subscriber: Send {
    /// The subscriptions wanted for `state` (asked again after every accepted update:
    /// new listeners name new route configurations, new clusters new endpoints).
    fn interest(&self, state: &ClientState) -> Interest;
    /// Validates and installs `state`. `Err` refuses it (NACK) with a precise reason;
    /// the previous state keeps serving.
    async fn apply(&mut self, state: &ClientState) -> Result<(), String>;
    /// The stream is up (true) or lost (false).
    fn connected(&mut self, _up: bool) {}
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Incremental xDS (DeltaAggregatedResources).
    #[default]
    Delta,
    /// State of the world (StreamAggregatedResources).
    StateOfTheWorld,
}

/// A byte stream to the control plane (TLS, say), made by the caller.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Opens a connection to the control plane; called for every (re)connection, so it can
/// present the certificate current at that moment.
pub type Dial = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Stream>>> + Send>,
        > + Send
        + Sync,
>;

#[derive(Clone)]
pub struct ClientOptions {
    /// `host:port` of the control plane.
    pub address: String,
    pub node: Node,
    pub mode: Mode,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How to connect; plaintext TCP when `None`.
    pub dial: Option<Dial>,
}

/// Runs forever: connects, follows the stream, reconnects with exponential backoff.
pub async fn run<S: Subscriber>(opts: ClientOptions, mut subscriber: S) {
    let mut state = ClientState::default();
    let mut backoff = opts.backoff_initial;
    loop {
        let result = match opts.mode {
            Mode::Delta => delta_session(&opts, &mut state, &mut subscriber, &mut backoff).await,
            Mode::StateOfTheWorld => {
                sotw_session(&opts, &mut state, &mut subscriber, &mut backoff).await
            }
        };
        subscriber.connected(false);
        match result {
            Ok(()) => {
                tracing::warn!(address = %opts.address, "xDS stream closed by the control plane")
            }
            Err(e) => tracing::warn!(address = %opts.address, retry_in = ?backoff, "xDS: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

/// The largest response the client accepts (a state-of-the-world cluster set of a
/// large mesh comes whole).
const MAX_RESPONSE: usize = 256 << 20;
/// The largest request (a subscription to every endpoint set of a large mesh).
const MAX_REQUEST: usize = 64 << 20;

/// One resource of a delta response, read from its slice: its name and the resource
/// to hold (none if it came without a body), or why it cannot be held.
fn delta_resource(type_url: &str, raw: Bytes) -> Result<Option<(Name, Resource)>, String> {
    let r = ResourceIn::decode(raw).map_err(|e| format!("a resource cannot be decoded: {e}"))?;
    let name = Name::from_utf8(r.name)
        .map_err(|e| format!("a resource cannot be decoded: its name is not UTF-8: {e}"))?;
    let Some(body) = r.resource else {
        return Ok(None);
    };
    check(type_url, name.as_str(), &r.version, &body)?;
    Ok(Some((name, Resource::new(r.version, body.value))))
}

/// Why a resource of a `type_url` response cannot be held, if it cannot.
fn check(type_url: &str, name: &str, version: &[u8], body: &AnyIn) -> Result<(), String> {
    if body.type_url != type_url.as_bytes() {
        return Err(format!(
            "resource {name:?}: type {} in a response of type {type_url}",
            String::from_utf8_lossy(&body.type_url)
        ));
    }
    if std::str::from_utf8(version).is_err() {
        return Err(format!("resource {name:?}: the version is not UTF-8"));
    }
    Ok(())
}

/// The HTTP/2 flow-control window the client gives the control plane, per stream and
/// per connection.
const RECEIVE_WINDOW: u32 = 16 << 20;

async fn connect(opts: &ClientOptions) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", opts.address))
        .map_err(|e| format!("--xds {}: {e}", opts.address))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // A full push is megabytes per type; HTTP/2's 64 KiB default window would have
        // the server wait for a window update every 64 KiB (Envoy's default is 256 MiB).
        .initial_stream_window_size(RECEIVE_WINDOW)
        .initial_connection_window_size(RECEIVE_WINDOW);
    let channel = match &opts.dial {
        None => endpoint.connect().await,
        Some(dial) => {
            let dial = dial.clone();
            endpoint
                .connect_with_connector(tower_service_fn(move || {
                    let dial = dial.clone();
                    async move { dial().await.map(hyper_util::rt::TokioIo::new) }
                }))
                .await
        }
    }
    .map_err(|e| format!("cannot reach the control plane at {}: {e:?}", opts.address))?;
    Ok(channel)
}

/// Connects and opens one ADS call: the requests queued on `rx`, the responses read
/// by `codec`.
async fn open<C>(
    opts: &ClientOptions,
    path: &'static str,
    rx: mpsc::Receiver<C::Encode>,
    codec: C,
) -> Result<tonic::Streaming<C::Decode>, String>
where
    C: tonic::codec::Codec + Send + 'static,
    C::Encode: Send + Sync + 'static,
    C::Decode: Send + Sync + 'static,
{
    let mut client = tonic::client::Grpc::new(connect(opts).await?)
        .max_decoding_message_size(MAX_RESPONSE)
        .max_encoding_message_size(MAX_REQUEST);
    client
        .ready()
        .await
        .map_err(|e| format!("cannot reach the control plane at {}: {e}", opts.address))?;
    let method = path.rsplit('/').next().unwrap_or(path);
    Ok(client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map_err(|e| format!("{method}: {e}"))?
        .into_inner())
}

/// A connector for tonic that ignores the URI and dials with `f`.
fn tower_service_fn<F, Fut, T>(
    f: F,
) -> impl tower::Service<http::Uri, Response = T, Error = std::io::Error, Future = Fut>
       + Clone
       + Send
       + 'static
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<T>> + Send + 'static,
{
    tower::service_fn(move |_: http::Uri| f())
}

impl Undo {
    /// The subscriber refused the update: puts the state back and makes the NACK's status.
    fn refuse(self, state: &mut ClientState, type_url: &str, reason: String) -> Option<RpcStatus> {
        self.roll_back(state);
        tracing::warn!(
            r#type = short_type(type_url),
            "xDS update refused (NACK): {reason}"
        );
        Some(RpcStatus {
            code: tonic::Code::InvalidArgument as i32,
            message: reason,
            details: Vec::new(),
        })
    }
}

async fn delta_session<S: Subscriber>(
    opts: &ClientOptions,
    state: &mut ClientState,
    subscriber: &mut S,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<DeltaRequestOut>(64);
    let mut subscribed: HashMap<&'static str, Option<Arc<BTreeSet<Name>>>> = HashMap::new();
    let mut pruned = Pruned::new();
    subscribe_delta(opts, state, subscriber, &mut subscribed, &tx).await;
    let codec = tonic_prost::ProstCodec::<DeltaRequestOut, DeltaResponseIn>::default();
    let mut responses = open(opts, DELTA_PATH, rx, codec).await?;
    subscriber.connected(true);
    while let Some(response) = responses.message().await.map_err(|e| e.to_string())? {
        *backoff = opts.backoff_initial;
        let DeltaResponseIn {
            type_url,
            resources,
            removed_resources,
            nonce,
        } = response;
        // Changed in place with an undo log: a sidecar holds thousands of resources, and
        // copying them all for every response dominated pushes at scale.
        let mut undo = Undo::default();
        let mut refused = None;
        let mut held = Vec::with_capacity(resources.len());
        for raw in resources {
            match delta_resource(&type_url, raw) {
                Ok(Some(r)) => held.push(r),
                Ok(None) => {}
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        let resources = held;
        let error_detail = if let Some(reason) = refused {
            undo.refuse(state, &type_url, reason)
        } else {
            if state.count(&type_url) == 0 {
                // The first response of a type (a full push): one bulk build.
                undo.replace_type(state, &type_url, resources.into_iter().collect());
            } else {
                for (name, v) in resources {
                    undo.insert(state, &type_url, name, Some(v));
                }
            }
            for name in removed_resources {
                match Name::from_utf8(name) {
                    Ok(name) => undo.insert(state, &type_url, name, None),
                    // Not a name the client can hold: nothing to remove.
                    Err(e) => tracing::debug!("xDS: a removed name is not UTF-8: {e}"),
                }
            }
            prune(state, subscriber, &mut undo, &mut pruned);
            match subscriber.apply(state).await {
                Ok(()) => None,
                Err(reason) => undo.refuse(state, &type_url, reason),
            }
        };
        let reply = DeltaRequestOut {
            type_url,
            response_nonce: nonce,
            error_detail,
            ..Default::default()
        };
        if tx.send(reply).await.is_err() {
            return Err("request stream closed".into());
        }
        subscribe_delta(opts, state, subscriber, &mut subscribed, &tx).await;
    }
    Ok(())
}

/// Drops what the subscriber no longer wants (routes of a removed listener, endpoints
/// of a removed cluster), so the state it is given holds only what it refers to. While
/// a type's interest is the one it was last pruned against, only the names this
/// update set can be unwanted.
fn prune<S: Subscriber>(
    state: &mut ClientState,
    subscriber: &S,
    undo: &mut Undo,
    pruned: &mut Pruned,
) {
    for (type_url, want) in subscriber.interest(state) {
        let Some(want) = want else { continue };
        let same = pruned.get(type_url).is_some_and(|p| Arc::ptr_eq(p, &want));
        let gone: Vec<Name> = if same && !undo.replaced(type_url) {
            let held = state.types.get(type_url);
            undo.entries
                .iter()
                .filter(|(t, name, _)| t == type_url && !want.contains(name))
                .filter(|(_, name, _)| held.is_some_and(|m| m.contains_key(name)))
                .map(|(_, name, _)| name.clone())
                .collect()
        } else {
            // Both sides in name order: one pass instead of a lookup per held name.
            let mut unwanted = absent_from(want.iter());
            state
                .of(type_url)
                .filter(|(name, _)| unwanted(name.as_bytes()))
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in gone {
            undo.insert(state, type_url, name, None);
        }
        pruned.insert(type_url, want);
    }
}

/// What an update changed, to put back if the subscriber refuses it.
#[derive(Default)]
struct Undo {
    entries: Vec<(String, Name, Option<Resource>)>,
    types: Vec<(String, Option<BTreeMap<Name, Resource>>)>,
}

impl Undo {
    /// Sets (or with None removes) one resource, remembering what was there.
    fn insert(&mut self, state: &mut ClientState, type_url: &str, name: Name, v: Option<Resource>) {
        let held = state.held_mut(type_url);
        let old = match v {
            Some(v) => held.insert(name.clone(), v),
            None => held.remove(&name),
        };
        self.entries.push((type_url.to_string(), name, old));
    }

    /// Whether this update replaced the whole of `type_url` (state of the world).
    fn replaced(&self, type_url: &str) -> bool {
        self.types.iter().any(|(t, _)| t == type_url)
    }

    /// Replaces a whole type (state of the world, or a type's first response),
    /// remembering the old set.
    fn replace_type(
        &mut self,
        state: &mut ClientState,
        type_url: &str,
        set: BTreeMap<Name, Resource>,
    ) {
        let existed = state.types.contains_key(type_url);
        let old = std::mem::replace(state.held_mut(type_url), set);
        self.types
            .push((type_url.to_string(), existed.then_some(old)));
    }

    fn roll_back(self, state: &mut ClientState) {
        for (type_url, name, old) in self.entries.into_iter().rev() {
            let held = state.held_mut(&type_url);
            match old {
                Some(v) => held.insert(name, v),
                None => held.remove(&name),
            };
        }
        for (type_url, old) in self.types.into_iter().rev() {
            match old {
                Some(set) => *state.held_mut(&type_url) = set,
                None => {
                    state.held_mut(&type_url);
                    state.types.remove(&type_url);
                }
            }
        }
    }
}

/// Sends what changed in the subscriptions since the last call.
async fn subscribe_delta<S: Subscriber>(
    opts: &ClientOptions,
    state: &mut ClientState,
    subscriber: &S,
    subscribed: &mut HashMap<&'static str, Option<Arc<BTreeSet<Name>>>>,
    tx: &mpsc::Sender<DeltaRequestOut>,
) {
    for (type_url, want) in subscriber.interest(state) {
        let request = match subscribed.get(type_url) {
            None => DeltaRequestOut {
                node: Some(opts.node.clone()),
                type_url: type_url.to_string(),
                resource_names_subscribe: want
                    .iter()
                    .flat_map(|w| w.iter())
                    .map(|n| n.as_shared().clone())
                    .collect(),
                initial_resource_versions: state
                    .of(type_url)
                    .filter(|(name, _)| want.as_ref().is_none_or(|w| w.contains(*name)))
                    .map(|(name, r)| (name.to_string(), r.version().to_string()))
                    .collect(),
                ..Default::default()
            },
            Some(had) if *had == want => continue,
            Some(had) => {
                let empty = BTreeSet::new();
                let (had, now) = (
                    had.as_deref().unwrap_or(&empty),
                    want.as_deref().unwrap_or(&empty),
                );
                let gone: Vec<Name> = had.difference(now).cloned().collect();
                // The server sends no removal for an unsubscribed name: forget it here.
                if !gone.is_empty() && state.types.contains_key(type_url) {
                    let held = state.held_mut(type_url);
                    for name in &gone {
                        held.remove(name);
                    }
                }
                DeltaRequestOut {
                    type_url: type_url.to_string(),
                    resource_names_subscribe: now
                        .difference(had)
                        .map(|n| n.as_shared().clone())
                        .collect(),
                    resource_names_unsubscribe: gone
                        .iter()
                        .map(|n| n.as_shared().clone())
                        .collect(),
                    ..Default::default()
                }
            }
        };
        subscribed.insert(type_url, want);
        let _ = tx.send(request).await;
    }
}

/// Per type, the names a state-of-the-world stream asks for, and them as written in
/// each of its requests.
type Asked = HashMap<&'static str, (Option<Arc<BTreeSet<Name>>>, NamesOut)>;

async fn sotw_session<S: Subscriber>(
    opts: &ClientOptions,
    state: &mut ClientState,
    subscriber: &mut S,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<SotwRequestOut>(64);
    // Per type: the names asked for and the version last accepted.
    let mut asked = Asked::new();
    let mut pruned = Pruned::new();
    let mut accepted: HashMap<String, String> = HashMap::new();
    let mut nonces: HashMap<String, String> = HashMap::new();
    let mut first = true;
    subscribe_sotw(
        opts, state, subscriber, &mut asked, &accepted, &nonces, &mut first, &tx,
    )
    .await;
    let mut responses = open(opts, SOTW_PATH, rx, SotwClientCodec).await?;
    subscriber.connected(true);
    while let Some(response) = responses.message().await.map_err(|e| e.to_string())? {
        *backoff = opts.backoff_initial;
        let SotwResponseIn {
            version_info,
            resources,
            type_url,
            nonce,
        } = response;
        // Resources come in name order: collected, then one bulk build (an insert per
        // name searched the tree from its root, 14 comparisons of long names each).
        let mut set = Vec::with_capacity(resources.len());
        let mut undecodable = None;
        // Every resource's version is the response's: one buffer shared by all.
        let version = Bytes::from(version_info.clone());
        for raw in resources {
            let body = match AnyIn::decode(raw) {
                Ok(body) => body,
                Err(e) => {
                    undecodable.get_or_insert(format!("a resource cannot be decoded: {e}"));
                    continue;
                }
            };
            let named = resource_name(&type_url, &body.value).ok_or_else(|| {
                format!(
                    "cannot read the name of a {} resource",
                    String::from_utf8_lossy(&body.type_url)
                )
            });
            let checked = named
                .and_then(|name| check(&type_url, name.as_str(), &version, &body).map(|()| name));
            match checked {
                Ok(name) => set.push((name, Resource::new(version.clone(), body.value))),
                Err(e) => {
                    undecodable.get_or_insert(e);
                }
            }
        }
        let mut undo = Undo::default();
        if is_wildcard_type(&type_url) || state.count(&type_url) == 0 {
            undo.replace_type(state, &type_url, set.into_iter().collect());
        } else {
            // Routes and endpoints: a response carries those that changed; the others
            // stay until nothing refers to them (pruned below).
            for (name, v) in set {
                undo.insert(state, &type_url, name, Some(v));
            }
        }
        prune(state, subscriber, &mut undo, &mut pruned);
        let verdict = match undecodable {
            Some(e) => Err(e),
            None => subscriber.apply(state).await,
        };
        let error_detail = match verdict {
            Ok(()) => {
                accepted.insert(type_url.clone(), version_info.clone());
                None
            }
            Err(reason) => undo.refuse(state, &type_url, reason),
        };
        nonces.insert(type_url.clone(), nonce.clone());
        let names = asked
            .get(type_url.as_str())
            .map(|(_, wire)| wire.clone())
            .unwrap_or_default();
        let reply = SotwRequestOut {
            version_info: accepted.get(&type_url).cloned().unwrap_or_default(),
            names,
            type_url,
            response_nonce: nonce,
            error_detail,
            node: None,
        };
        if tx.send(reply).await.is_err() {
            return Err("request stream closed".into());
        }
        subscribe_sotw(
            opts, state, subscriber, &mut asked, &accepted, &nonces, &mut first, &tx,
        )
        .await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn subscribe_sotw<S: Subscriber>(
    opts: &ClientOptions,
    state: &ClientState,
    subscriber: &S,
    asked: &mut Asked,
    accepted: &HashMap<String, String>,
    nonces: &HashMap<String, String>,
    first: &mut bool,
    tx: &mpsc::Sender<SotwRequestOut>,
) {
    for (type_url, want) in subscriber.interest(state) {
        if asked.get(type_url).map(|(set, _)| set) == Some(&want) {
            continue;
        }
        let wire = want.as_deref().map(NamesOut::new).unwrap_or_default();
        // Resuming: the version held tells the server what need not be sent again.
        let version = accepted.get(type_url).cloned().or_else(|| {
            state
                .types
                .get(type_url)
                .and_then(|m| m.values().next())
                .map(|r| r.version().to_string())
        });
        let request = SotwRequestOut {
            node: first.then(|| opts.node.clone()),
            version_info: version.unwrap_or_default(),
            names: wire.clone(),
            type_url: type_url.to_string(),
            response_nonce: nonces.get(type_url).cloned().unwrap_or_default(),
            error_detail: None,
        };
        *first = false;
        asked.insert(type_url, (want, wire));
        let _ = tx.send(request).await;
    }
}

/// The name of a resource of one of the four core types (state of the world sends
/// bare resources, so the client reads the names out of them): a slice of `body`.
pub fn resource_name(type_url: &str, body: &Bytes) -> Option<Name> {
    match type_url {
        LISTENER | ROUTE | CLUSTER | ENDPOINT => NameField::decode(body.clone())
            .ok()
            .and_then(|r| Name::from_utf8(r.name).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, Resource as PbResource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::bytes::BytesMut;

    #[test]
    fn bodies_and_versions_are_slices_of_the_response() {
        let body = vec![9u8; 500];
        let response = DeltaDiscoveryResponse {
            resources: vec![PbResource {
                name: "c".into(),
                version: "v1".into(),
                resource: Some(Any {
                    type_url: CLUSTER.into(),
                    value: body.clone(),
                }),
                ..Default::default()
            }],
            type_url: CLUSTER.into(),
            nonce: "1".into(),
            ..Default::default()
        };
        // What tonic hands the decoder: the message in a BytesMut.
        let mut buf = BytesMut::from(response.encode_to_vec().as_slice());
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let decoded = DeltaResponseIn::decode(&mut buf).unwrap();
        let r = &ResourceIn::decode(decoded.resources[0].clone()).unwrap();
        let value = &r.resource.as_ref().unwrap().value;
        assert_eq!(
            (value.as_ref(), r.version.as_ref()),
            (&body[..], &b"v1"[..])
        );
        for slice in [value.as_ptr(), r.version.as_ptr()] {
            assert!(
                range.contains(&(slice as usize)),
                "not copied out of the buffer"
            );
        }
    }

    /// A resource that is not a valid `Resource` (here: a name that is not UTF-8) is
    /// refused with a reason, not taken for the end of the stream.
    #[test]
    fn an_undecodable_resource_is_refused_with_a_reason() {
        let good = PbResource {
            name: "c".into(),
            version: "v1".into(),
            resource: Some(Any {
                type_url: CLUSTER.into(),
                value: vec![1, 2, 3],
            }),
            ..Default::default()
        };
        let (name, r) = delta_resource(CLUSTER, good.encode_to_vec().into())
            .unwrap()
            .unwrap();
        assert_eq!(
            (name.as_str(), r.version(), r.body()),
            ("c", "v1", &[1u8, 2, 3][..])
        );
        // Field 3 (name), length 2, bytes that are not UTF-8.
        let bad = Bytes::from_static(&[0x1a, 2, 0xff, 0xfe]);
        let e = delta_resource(CLUSTER, bad).unwrap_err();
        assert!(e.starts_with("a resource cannot be decoded: "), "{e}");
        let bodiless = PbResource {
            name: "d".into(),
            ..Default::default()
        };
        assert!(delta_resource(CLUSTER, bodiless.encode_to_vec().into())
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_delta_request_is_the_prost_message() {
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
        let ours = DeltaRequestOut {
            node: Some(Node {
                id: "sidecar~1".into(),
                ..Default::default()
            }),
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec![Bytes::from("outbound|80||a"), Bytes::new()],
            resource_names_unsubscribe: vec![Bytes::from("b")],
            initial_resource_versions: [("a".to_string(), "v1".to_string())].into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "no".into(),
                details: Vec::new(),
            }),
        };
        let theirs = DeltaDiscoveryRequest::decode(ours.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            theirs,
            DeltaDiscoveryRequest {
                node: ours.node.clone(),
                type_url: ENDPOINT.into(),
                resource_names_subscribe: vec!["outbound|80||a".into(), String::new()],
                resource_names_unsubscribe: vec!["b".into()],
                initial_resource_versions: [("a".to_string(), "v1".to_string())].into(),
                response_nonce: "7".into(),
                error_detail: ours.error_detail.clone(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_resource_of_another_type_or_a_version_not_utf8_is_named() {
        let any = |type_url: &str| AnyIn {
            type_url: Bytes::from(type_url.to_string()),
            value: Bytes::new(),
        };
        assert_eq!(check(CLUSTER, "a", b"v1", &any(CLUSTER)), Ok(()));
        let e = check(LISTENER, "a", b"v1", &any(CLUSTER)).unwrap_err();
        assert_eq!(
            e,
            format!("resource \"a\": type {CLUSTER} in a response of type {LISTENER}")
        );
        let e = check(CLUSTER, "b", &[0xff, 0xfe], &any(CLUSTER)).unwrap_err();
        assert_eq!(e, "resource \"b\": the version is not UTF-8");
    }
}
