//! The ADS server and client against each other over real gRPC on loopback.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio_stream::StreamExt;
use trellis_xds::client::{self, ClientOptions, ClientState, Interest, Mode, Subscriber};
use trellis_xds::pb::envoy::config::cluster::v3::Cluster;
use trellis_xds::pb::envoy::config::core::v3::Node;
use trellis_xds::pb::envoy::config::listener::v3::Listener;
use trellis_xds::pb::envoy::config::route::v3::RouteConfiguration;
use trellis_xds::pb::google::protobuf::Any;
use trellis_xds::Name;
use trellis_xds::{Cache, ServerStats, ServerThread, Snapshot, CLUSTER, LISTENER, ROUTE};

/// Listeners named `l-<route>` each refer to the route configuration `<route>` through
/// their stat_prefix-free `name`; the subscriber asks for the routes its listeners name.
fn listener(route: &str, generation: u32) -> Any {
    let l = Listener {
        name: format!("l-{route}"),
        stat_prefix: format!("gen{generation}"),
        ..Default::default()
    };
    Any {
        type_url: LISTENER.into(),
        value: l.encode_to_vec(),
    }
}

fn route(name: &str, generation: u32) -> Any {
    let r = RouteConfiguration {
        name: name.into(),
        internal_only_headers: vec![format!("gen{generation}")],
        ..Default::default()
    };
    Any {
        type_url: ROUTE.into(),
        value: r.encode_to_vec(),
    }
}

fn snapshot(listeners: &[(&str, u32)], routes: &[(&str, u32)]) -> Snapshot {
    let mut s = Snapshot::new();
    s.declare(LISTENER).declare(ROUTE);
    for (r, g) in listeners {
        s.insert(format!("l-{r}"), listener(r, *g));
    }
    for (r, g) in routes {
        s.insert(*r, route(r, *g));
    }
    s
}

#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<ClientState>>>,
    /// A listener whose stat_prefix is this is refused.
    poison: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    fn last(&self) -> Option<ClientState> {
        self.applied.lock().unwrap().last().cloned()
    }

    /// (name, generation) of every held resource of `type_url`.
    fn held(&self, type_url: &str) -> Vec<(String, String)> {
        let Some(state) = self.last() else {
            return vec![];
        };
        state
            .of(type_url)
            .map(|(name, r)| {
                let generation = if type_url == LISTENER {
                    Listener::decode(r.body()).unwrap().stat_prefix
                } else {
                    RouteConfiguration::decode(r.body())
                        .unwrap()
                        .internal_only_headers
                        .join(",")
                };
                (name.to_string(), generation)
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Subscriber for Recorder {
    fn interest(&self, state: &ClientState) -> Interest {
        let routes: BTreeSet<Name> = state
            .of(LISTENER)
            .map(|(name, _)| Name::from(name.as_str().trim_start_matches("l-")))
            .collect();
        vec![(LISTENER, None), (ROUTE, Some(std::sync::Arc::new(routes)))]
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        let poison = self.poison.lock().unwrap().clone();
        for (name, r) in state.of(LISTENER) {
            let l = Listener::decode(r.body()).map_err(|e| e.to_string())?;
            if Some(&l.stat_prefix) == poison.as_ref() {
                return Err(format!(
                    "listener {name}: stat_prefix {} is not supported",
                    l.stat_prefix
                ));
            }
        }
        self.applied.lock().unwrap().push(state.clone());
        Ok(())
    }
}

async fn serve(cache: Cache, addr: Option<std::net::SocketAddr>) -> ServerThread {
    ServerThread::start(cache, addr.unwrap_or("127.0.0.1:0".parse().unwrap())).unwrap()
}

fn options(addr: std::net::SocketAddr, mode: Mode) -> ClientOptions {
    ClientOptions {
        address: addr.to_string(),
        node: Node {
            id: NODE.into(),
            ..Default::default()
        },
        mode,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        dial: None,
    }
}

fn start_client(addr: std::net::SocketAddr, mode: Mode) -> (Recorder, tokio::task::JoinHandle<()>) {
    let recorder = Recorder::default();
    let task = tokio::spawn(client::run(options(addr, mode), recorder.clone()));
    (recorder, task)
}

const NODE: &str = "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local";

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn sent(stats: &ServerStats) -> u64 {
    stats
        .resources_sent
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn subscriptions_updates_and_removals(mode: Mode) {
    let plane = serve(Cache::new(), None).await;
    plane.cache.set(
        NODE,
        snapshot(&[("a", 1), ("b", 1)], &[("a", 1), ("b", 1), ("c", 1)]),
    );
    let (rec, _client) = start_client(plane.addr, mode);
    until("listeners and their routes", || {
        rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen1")])
    })
    .await;
    assert_eq!(
        rec.held(LISTENER),
        pairs(&[("l-a", "gen1"), ("l-b", "gen1")])
    );

    // One route changes: both variants send that one resource (state of the world
    // sends whole sets of listeners and clusters only).
    let before = sent(&plane.stats);
    plane.cache.set(
        NODE,
        snapshot(&[("a", 1), ("b", 1)], &[("a", 2), ("b", 1), ("c", 1)]),
    );
    until("the changed route", || {
        rec.held(ROUTE) == pairs(&[("a", "gen2"), ("b", "gen1")])
    })
    .await;
    assert_eq!(sent(&plane.stats) - before, 1);

    // A listener goes: its route is no longer wanted and is dropped too.
    plane
        .cache
        .set(NODE, snapshot(&[("a", 1)], &[("a", 2), ("b", 1), ("c", 1)]));
    until("the removal", || {
        rec.held(LISTENER) == pairs(&[("l-a", "gen1")])
    })
    .await;
    until("the unsubscribed route", || {
        rec.held(ROUTE) == pairs(&[("a", "gen2")])
    })
    .await;

    // A new listener subscribes to route c.
    plane.cache.set(
        NODE,
        snapshot(&[("a", 1), ("c", 1)], &[("a", 2), ("b", 1), ("c", 1)]),
    );
    until("route c", || {
        rec.held(ROUTE) == pairs(&[("a", "gen2"), ("c", "gen1")])
    })
    .await;
}

#[tokio::test]
async fn delta_subscriptions_updates_and_removals() {
    subscriptions_updates_and_removals(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_subscriptions_updates_and_removals() {
    subscriptions_updates_and_removals(Mode::StateOfTheWorld).await;
}

async fn nack_keeps_the_previous_version(mode: Mode) {
    let plane = serve(Cache::new(), None).await;
    plane.cache.set(NODE, snapshot(&[("a", 1)], &[("a", 1)]));
    let (rec, _client) = start_client(plane.addr, mode);
    until("first config", || {
        rec.held(LISTENER) == pairs(&[("l-a", "gen1")])
    })
    .await;
    *rec.poison.lock().unwrap() = Some("gen2".into());
    plane
        .cache
        .set(NODE, snapshot(&[("a", 2), ("b", 1)], &[("a", 1), ("b", 1)]));
    until("the NACK", || {
        plane.stats.nacks.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        rec.held(LISTENER),
        pairs(&[("l-a", "gen1")]),
        "the refused listeners are not applied"
    );
    // The same bad version is not sent again; the next good one applies.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        plane.stats.nacks.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    plane
        .cache
        .set(NODE, snapshot(&[("a", 3), ("b", 1)], &[("a", 1), ("b", 1)]));
    until("the fixed config", || {
        rec.held(LISTENER) == pairs(&[("l-a", "gen3"), ("l-b", "gen1")])
    })
    .await;
}

/// The first response of a type is taken in one piece on both sides (the client
/// builds the type's map at once; the server records the names at once): refusing it
/// must leave nothing held on either side, so that a fixed version goes out whole.
async fn nack_of_the_first_response_holds_nothing(mode: Mode) {
    let plane = serve(Cache::new(), None).await;
    plane
        .cache
        .set(NODE, snapshot(&[("a", 1), ("b", 1)], &[("a", 1), ("b", 1)]));
    let (rec, _client) = start_client(plane.addr, mode);
    *rec.poison.lock().unwrap() = Some("gen1".into());
    until("the NACK", || {
        plane.stats.nacks.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    assert!(
        rec.held(LISTENER).is_empty(),
        "the refused listeners are not applied"
    );
    *rec.poison.lock().unwrap() = None;
    // Only listener b changes; a must come again too, since the client refused it.
    plane
        .cache
        .set(NODE, snapshot(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 1)]));
    until("the fixed config", || {
        rec.held(LISTENER) == pairs(&[("l-a", "gen1"), ("l-b", "gen2")])
            && rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen1")])
    })
    .await;
}

#[tokio::test]
async fn delta_nack_of_the_first_response_holds_nothing() {
    nack_of_the_first_response_holds_nothing(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_nack_of_the_first_response_holds_nothing() {
    nack_of_the_first_response_holds_nothing(Mode::StateOfTheWorld).await;
}

/// The server writes its responses by hand (src/wire.rs); tonic's generated client,
/// decoding with prost into Envoy's own message types, reads them as Envoy would.
#[tokio::test]
async fn generated_client_decodes_the_hand_written_responses() {
    use trellis_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use trellis_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    let plane = serve(Cache::new(), None).await;
    let s = snapshot(&[("a", 1), ("b", 1)], &[("a", 1)]);
    let expected: Vec<(String, Any)> = s
        .iter(LISTENER)
        .map(|(name, r)| (name.clone(), r.body.clone()))
        .collect();
    plane.cache.set(NODE, s);
    let mut grpc = AggregatedDiscoveryServiceClient::connect(format!("http://{}", plane.addr))
        .await
        .unwrap();
    let node = Node {
        id: NODE.into(),
        ..Default::default()
    };

    let delta = DeltaDiscoveryRequest {
        node: Some(node.clone()),
        type_url: LISTENER.into(),
        ..Default::default()
    };
    let mut responses = grpc
        .delta_aggregated_resources(tokio_stream::iter([delta]).chain(tokio_stream::pending()))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(r.type_url, LISTENER);
    assert!(!r.nonce.is_empty() && !r.system_version_info.is_empty());
    let got: Vec<(String, Any)> = r
        .resources
        .iter()
        .map(|res| (res.name.clone(), res.resource.clone().unwrap()))
        .collect();
    assert_eq!(got, expected);
    let snapshot = plane.cache.get(NODE).unwrap();
    for res in &r.resources {
        let held = snapshot.resource(LISTENER, &res.name).unwrap();
        assert_eq!(res.version, held.version, "{}", res.name);
    }

    let sotw = DiscoveryRequest {
        node: Some(node),
        type_url: ROUTE.into(),
        resource_names: vec!["a".into()],
        ..Default::default()
    };
    let mut responses = grpc
        .stream_aggregated_resources(tokio_stream::iter([sotw]).chain(tokio_stream::pending()))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!((r.type_url.as_str(), r.resources.len()), (ROUTE, 1));
    assert_eq!(
        RouteConfiguration::decode(r.resources[0].value.as_slice())
            .unwrap()
            .name,
        "a"
    );
    assert!(!r.version_info.is_empty() && !r.nonce.is_empty());
}

#[tokio::test]
async fn delta_nack_keeps_the_previous_version() {
    nack_keeps_the_previous_version(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_nack_keeps_the_previous_version() {
    nack_keeps_the_previous_version(Mode::StateOfTheWorld).await;
}

async fn reconnect_resumes_from_held_versions(mode: Mode) {
    let cache = Cache::new();
    cache.set(NODE, snapshot(&[("a", 1), ("b", 1)], &[("a", 1), ("b", 1)]));
    let plane = serve(cache.clone(), None).await;
    let (rec, _client) = start_client(plane.addr, mode);
    until("first config", || rec.held(ROUTE).len() == 2).await;
    let addr = plane.addr;
    plane.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        rec.held(ROUTE).len(),
        2,
        "the last config stays while disconnected"
    );

    // A new server with the same snapshot: the client says what it holds; nothing is resent.
    let plane = serve(cache, Some(addr)).await;
    until("the new stream", || {
        plane
            .stats
            .streams_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&plane.stats), 0, "unchanged resources are not resent");
    plane
        .cache
        .set(NODE, snapshot(&[("a", 1), ("b", 1)], &[("a", 1), ("b", 2)]));
    until("the change after reconnecting", || {
        rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen2")])
    })
    .await;
}

#[tokio::test]
async fn delta_reconnect_resumes_from_held_versions() {
    reconnect_resumes_from_held_versions(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_reconnect_resumes_from_held_versions() {
    reconnect_resumes_from_held_versions(Mode::StateOfTheWorld).await;
}

/// Listeners name the cluster they use in `stat_prefix`; a state in which a listener
/// names a missing cluster is refused, as the proxy refuses a route to a missing cluster.
#[derive(Clone, Default)]
struct Referrer {
    nacks: Arc<Mutex<Vec<String>>>,
    applied: Arc<Mutex<Vec<ClientState>>>,
}

#[tonic::async_trait]
impl Subscriber for Referrer {
    fn interest(&self, _: &ClientState) -> Interest {
        vec![(CLUSTER, None), (LISTENER, None)]
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        let clusters: BTreeSet<&str> = state.of(CLUSTER).map(|(n, _)| n.as_str()).collect();
        for (name, r) in state.of(LISTENER) {
            let uses = Listener::decode(r.body()).unwrap().stat_prefix;
            if !clusters.contains(uses.as_str()) {
                let e = format!("listener {name} uses cluster {uses}, which is not defined");
                self.nacks.lock().unwrap().push(e.clone());
                return Err(e);
            }
        }
        self.applied.lock().unwrap().push(state.clone());
        Ok(())
    }
}

fn uses(cluster: &str, clusters: &[&str], base: Option<&Arc<trellis_xds::Base>>) -> Snapshot {
    let mut s = base.map_or_else(Snapshot::new, |b| Snapshot::with_base(b.clone()));
    s.declare(LISTENER).declare(CLUSTER);
    let l = Listener {
        name: "outbound".into(),
        stat_prefix: cluster.into(),
        ..Default::default()
    };
    s.insert(
        "outbound",
        Any {
            type_url: LISTENER.into(),
            value: l.encode_to_vec(),
        },
    );
    for c in clusters {
        s.insert(*c, cluster_body(c));
    }
    s
}

fn cluster_body(name: &str) -> Any {
    let body = Cluster {
        name: name.to_string(),
        ..Default::default()
    };
    Any {
        type_url: CLUSTER.into(),
        value: body.encode_to_vec(),
    }
}

/// A change that moves a listener from one cluster to another that replaces it reaches
/// the proxy make-before-break: the new cluster, then the listener, then the removal.
/// With a base of shared clusters, the moving ones are the snapshot's own (a sidecar's
/// inbound cluster among the mesh's outbound ones): the whole set goes out as the
/// base's encoded once plus the own ones, the one going away among them.
async fn changes_are_pushed_make_before_break(mode: Mode, shared: &[&str]) {
    let base = (!shared.is_empty()).then(|| {
        let mut b = Snapshot::new();
        for c in shared {
            b.insert(*c, cluster_body(c));
        }
        trellis_xds::Base::new(b)
    });
    let uses = |cluster: &str, clusters: &[&str]| uses(cluster, clusters, base.as_ref());
    let cache = Cache::new();
    cache.set(NODE, uses("v1", &["v1"]));
    let server = serve(cache.clone(), None).await;
    let referrer = Referrer::default();
    let task = tokio::spawn(client::run(options(server.addr, mode), referrer.clone()));
    let listener_uses = |r: &Referrer| {
        r.applied.lock().unwrap().last().and_then(|s| {
            s.of(LISTENER)
                .next()
                .map(|(_, r)| Listener::decode(r.body()).unwrap().stat_prefix)
        })
    };
    until("the first state", || {
        listener_uses(&referrer).as_deref() == Some("v1")
    })
    .await;
    for (from, to) in [("v1", "v2"), ("v2", "v1"), ("v1", "v2")] {
        cache.set(NODE, uses(to, &[to]));
        until("the listener moved", || {
            let last = referrer.applied.lock().unwrap().last().cloned().unwrap();
            listener_uses(&referrer).as_deref() == Some(to)
                && last
                    .of(CLUSTER)
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    == shared.iter().copied().chain([to]).collect::<Vec<_>>()
        })
        .await;
        assert_ne!(from, to);
    }
    if base.is_some() && mode == Mode::StateOfTheWorld {
        // The first response and every change's sent the base's set as encoded once.
        let shared = server.stats.whole_sets_shared.load(Ordering::Relaxed);
        assert!(shared >= 4, "{shared} whole sets shared");
    }
    assert!(
        referrer.nacks.lock().unwrap().is_empty(),
        "{:?}",
        referrer.nacks.lock().unwrap()
    );
    task.abort();
}

#[tokio::test]
async fn delta_changes_are_pushed_make_before_break() {
    changes_are_pushed_make_before_break(Mode::Delta, &[]).await;
    changes_are_pushed_make_before_break(Mode::Delta, &["shared-a", "shared-b"]).await;
}

#[tokio::test]
async fn sotw_changes_are_pushed_make_before_break() {
    changes_are_pushed_make_before_break(Mode::StateOfTheWorld, &[]).await;
    changes_are_pushed_make_before_break(Mode::StateOfTheWorld, &["shared-a", "shared-b"]).await;
}

/// A snapshot of listeners of its own over a shared base of routes.
fn over(base: &Arc<trellis_xds::Base>, listeners: &[(&str, u32)]) -> Snapshot {
    let mut s = Snapshot::with_base(base.clone());
    s.declare(LISTENER);
    for (r, g) in listeners {
        s.insert(format!("l-{r}"), listener(r, *g));
    }
    s
}

fn versioned(body: Any) -> Arc<trellis_xds::Versioned> {
    Arc::new(trellis_xds::Versioned::new(body))
}

/// Snapshots over a shared base that changes by `Base::update`: the streams compare only
/// the names the update changed, and still converge when they miss versions between.
async fn base_updates_send_what_changed(mode: Mode) {
    let mut routes = Snapshot::new();
    routes.declare(ROUTE);
    for r in ["a", "b", "c"] {
        routes.insert(r, route(r, 1));
    }
    let base = trellis_xds::Base::new(routes);
    let plane = serve(Cache::new(), None).await;
    plane.cache.set(NODE, over(&base, &[("a", 1), ("b", 1)]));
    let (rec, _client) = start_client(plane.addr, mode);
    until("listeners and their routes", || {
        rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen1")])
    })
    .await;

    // Route b changes in the base: both variants send that one resource.
    let before = sent(&plane.stats);
    let base = base.update([("b".to_string(), versioned(route("b", 2)))], []);
    let s = plane.cache.get(NODE).unwrap().rebased(base.clone());
    plane.cache.set(NODE, s);
    until("the changed route", || {
        rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen2")])
    })
    .await;
    assert_eq!(sent(&plane.stats) - before, 1);

    // A change to a route nobody subscribed to sends nothing.
    let before = sent(&plane.stats);
    let base = base.update([("c".to_string(), versioned(route("c", 2)))], []);
    let s = plane.cache.get(NODE).unwrap().rebased(base.clone());
    plane.cache.set(NODE, s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&plane.stats), before);

    // Several updates in a row (the stream may see only the last), one of them removing
    // a subscribed route, then putting it back changed.
    let mut base = base;
    for (upserts, removals) in [
        (vec![("a".to_string(), versioned(route("a", 3)))], vec![]),
        (vec![], vec![(ROUTE.to_string(), "b".to_string())]),
        (vec![("b".to_string(), versioned(route("b", 4)))], vec![]),
    ] {
        base = base.update(upserts, removals);
        let s = plane.cache.get(NODE).unwrap().rebased(base.clone());
        plane.cache.set(NODE, s);
    }
    until("the last of several updates", || {
        rec.held(ROUTE) == pairs(&[("a", "gen3"), ("b", "gen4")])
    })
    .await;

    // A base that did not come from the stream's by update (a full rebuild) is compared
    // whole.
    let mut routes = Snapshot::new();
    routes.declare(ROUTE);
    for r in ["a", "b"] {
        routes.insert(r, route(r, 5));
    }
    plane.cache.set(
        NODE,
        over(&trellis_xds::Base::new(routes), &[("a", 1), ("b", 1)]),
    );
    until("the rebuilt base", || {
        rec.held(ROUTE) == pairs(&[("a", "gen5"), ("b", "gen5")])
    })
    .await;
}

#[tokio::test]
async fn delta_base_updates_send_what_changed() {
    base_updates_send_what_changed(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_base_updates_send_what_changed() {
    base_updates_send_what_changed(Mode::StateOfTheWorld).await;
}

fn shared_sends(stats: &ServerStats) -> u64 {
    stats
        .whole_sets_shared
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A base with listener l-a and routes a and b, shared by the views of `nodes`; each view
/// adds a listener of its own, l-b.
fn two_views_over_one_base(plane: &ServerThread, generation: u32, nodes: &[&str]) {
    let mut shared = Snapshot::new();
    shared.declare(LISTENER).declare(ROUTE);
    shared.insert("l-a", listener("a", generation));
    for r in ["a", "b"] {
        shared.insert(r, route(r, generation));
    }
    let base = trellis_xds::Base::new(shared);
    for node in nodes {
        plane.cache.set(node, over(&base, &[("b", generation)]));
    }
}

fn start_node(
    addr: std::net::SocketAddr,
    mode: Mode,
    node: &str,
) -> (Recorder, tokio::task::JoinHandle<()>) {
    let recorder = Recorder::default();
    let mut opts = options(addr, mode);
    opts.node.id = node.into();
    (recorder.clone(), tokio::spawn(client::run(opts, recorder)))
}

/// A client that holds nothing of a type and wants all of it gets the base's part as
/// one run encoded once for every stream, after its own resources: both sidecars hold
/// the same whole sets, a NACK of such a response leaves nothing held, and a view whose
/// own resource hides a base one of the same name gets its own (sent the usual way).
async fn whole_sets_go_out_encoded_once(mode: Mode) {
    const OTHER: &str = "sidecar~10.0.0.2~reviews-v2.default~default.svc.cluster.local";
    let plane = serve(Cache::new(), None).await;
    two_views_over_one_base(&plane, 1, &[NODE, OTHER]);
    let (one, _a) = start_node(plane.addr, mode, NODE);
    let (two, _b) = start_node(plane.addr, mode, OTHER);
    for rec in [&one, &two] {
        until("both whole sets", || {
            rec.held(LISTENER) == pairs(&[("l-a", "gen1"), ("l-b", "gen1")])
                && rec.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen1")])
        })
        .await;
    }
    // Listeners and routes, to each of the two streams.
    assert_eq!(shared_sends(&plane.stats), 4);

    // One route changes in the base: it goes out alone, as before.
    let before = sent(&plane.stats);
    let s = plane.cache.get(NODE).unwrap();
    let base = s
        .base()
        .unwrap()
        .update([("b".to_string(), versioned(route("b", 2)))], []);
    plane.cache.set(NODE, s.rebased(base));
    until("the changed route", || {
        one.held(ROUTE) == pairs(&[("a", "gen1"), ("b", "gen2")])
    })
    .await;
    assert_eq!(sent(&plane.stats) - before, 1);
    assert_eq!(shared_sends(&plane.stats), 4);

    // A view whose own listener l-a hides the base's: the client gets its own.
    let s = plane.cache.get(OTHER).unwrap();
    let mut hiding = Snapshot::with_base(s.base().unwrap().clone());
    hiding.declare(LISTENER);
    hiding.insert("l-a", listener("a", 7));
    hiding.insert("l-b", listener("b", 1));
    plane.cache.set(OTHER, hiding);
    until("the own listener over the base's", || {
        two.held(LISTENER) == pairs(&[("l-a", "gen7"), ("l-b", "gen1")])
    })
    .await;

    // A new client whose first whole set it refuses holds nothing on either side: the
    // fixed base then goes out whole again.
    const THIRD: &str = "sidecar~10.0.0.3~ratings-v1.default~default.svc.cluster.local";
    two_views_over_one_base(&plane, 3, &[THIRD]);
    let rec = Recorder::default();
    *rec.poison.lock().unwrap() = Some("gen3".into());
    let mut opts = options(plane.addr, mode);
    opts.node.id = THIRD.into();
    let _c = tokio::spawn(client::run(opts, rec.clone()));
    until("the NACK", || {
        plane.stats.nacks.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    assert!(rec.held(LISTENER).is_empty());
    *rec.poison.lock().unwrap() = None;
    let shared_before = shared_sends(&plane.stats);
    two_views_over_one_base(&plane, 4, &[THIRD]);
    until("the fixed whole set", || {
        rec.held(LISTENER) == pairs(&[("l-a", "gen4"), ("l-b", "gen4")])
            && rec.held(ROUTE) == pairs(&[("a", "gen4"), ("b", "gen4")])
    })
    .await;
    assert!(
        shared_sends(&plane.stats) > shared_before,
        "the refused set counts as not held: it goes out whole again"
    );
}

#[tokio::test]
async fn delta_whole_sets_go_out_encoded_once() {
    whole_sets_go_out_encoded_once(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_whole_sets_go_out_encoded_once() {
    whole_sets_go_out_encoded_once(Mode::StateOfTheWorld).await;
}

/// A node the control plane has no view for yet is answered nothing (an Envoy that got
/// an empty first answer would drop every listener and cluster it holds); its first
/// answer is its view.
async fn nothing_is_answered_before_the_node_has_a_view(mode: Mode) {
    let plane = serve(Cache::new(), None).await;
    let (rec, _client) = start_client(plane.addr, mode);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rec.applied.lock().unwrap().is_empty(),
        "a state was applied before the node had a view"
    );
    plane.cache.set(NODE, snapshot(&[("a", 1)], &[("a", 1)]));
    until("the view", || rec.held(ROUTE) == pairs(&[("a", "gen1")])).await;
    let applied = rec.applied.lock().unwrap();
    assert!(
        applied.iter().all(|s| s.of(LISTENER).count() == 1),
        "an empty state was applied"
    );
}

#[tokio::test]
async fn delta_nothing_is_answered_before_the_node_has_a_view() {
    nothing_is_answered_before_the_node_has_a_view(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_nothing_is_answered_before_the_node_has_a_view() {
    nothing_is_answered_before_the_node_has_a_view(Mode::StateOfTheWorld).await;
}

/// A node that never gets a view is told so, with its name, when the wait runs out.
#[tokio::test]
async fn a_node_without_a_view_hears_why_when_the_wait_runs_out() {
    use trellis_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use trellis_xds::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let plane = ServerThread::start_with(Cache::new(), "127.0.0.1:0".parse().unwrap(), |s| {
        s.with_first_view_timeout(Duration::from_millis(200))
    })
    .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", plane.addr))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: NODE.into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let status = responses.message().await.expect_err("no view: an error");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains(NODE), "{}", status.message());
}
