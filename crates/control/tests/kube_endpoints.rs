//! The short path in Kubernetes mode: an EndpointSlice change read from the replaying
//! API server must leave every view exactly as a control plane started fresh on the
//! same cluster serves it; any other change takes the full rebuild.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trellis_control::ControlPlane;
use trellis_kube::fake::FakeApiServer;
use trellis_kube::{Discovery, KubeInputs};
use trellis_xds::Cache;

mod common;
use common::assert_same_views;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/fixtures")
}

fn event(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("events").join(name)).unwrap()
}

const PROXYLESS: &str = "grpc~shop~client";
const PRODUCTPAGE: &str =
    "sidecar~127.244.1.5~productpage-v1-7d4cc7b8f5-9wzlk.shop~shop.svc.cluster.local";
const REVIEWS_V2: &str =
    "sidecar~127.244.2.7~reviews-v2-6f8d9c4b7c-q8m4n.shop~shop.svc.cluster.local";

/// Watchers on `fake`, listed once.
async fn inputs(fake: &FakeApiServer, dir: &Path) -> KubeInputs {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, fake.kubeconfig()).unwrap();
    let client = trellis_kube::client(Some(&path)).await.unwrap();
    let k = KubeInputs::start(client, Discovery::default());
    k.synced(Duration::from_secs(10)).await.unwrap();
    k
}

/// A control plane on the cluster that has served every sidecar and a proxyless client.
async fn plane(fake: &FakeApiServer, dir: &Path) -> (ControlPlane, Cache, KubeInputs) {
    let k = inputs(fake, dir).await;
    let cache = Cache::new();
    let plane = ControlPlane::new(&[], cache.clone()).with_kube(k.clone());
    plane.reload().unwrap();
    plane.refresh(PROXYLESS);
    (plane, cache, k)
}

/// Applies a recorded watch event and waits until `k`'s watchers have it.
async fn apply(fake: &FakeApiServer, k: &KubeInputs, event: &str) {
    let mut changes = k.changes();
    changes.borrow_and_update();
    fake.apply(event).unwrap();
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the watchers saw the event")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slice_changes_give_the_views_a_full_rebuild_gives() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (plane, cache, k) = plane(&fake, dir.path()).await;
    assert_eq!(
        cache.nodes().len(),
        5,
        "four sidecars and the proxyless client"
    );
    // Two control planes on the same cluster serve the same views.
    let (_fresh, fresh_cache, _) = plane_fresh(&fake).await;
    assert_same_views(&cache, &fresh_cache);
    let before = cache.get(PRODUCTPAGE).unwrap();
    let own_before = cache.get(REVIEWS_V2).unwrap();

    // reviews-v2's pod starts terminating: its endpoint is no longer ready.
    let terminating = event("endpointslice-reviews-v2-terminating.json");
    apply(&fake, &k, &terminating).await;
    plane.reload().unwrap();
    assert!(plane.status().borrow().endpoints_only, "the short path");
    let (_fresh, fresh_cache, _) = plane_fresh(&fake).await;
    assert_same_views(&cache, &fresh_cache);
    let after = cache.get(PRODUCTPAGE).unwrap();
    assert_ne!(
        before.version(trellis_xds::ENDPOINT),
        after.version(trellis_xds::ENDPOINT),
        "productpage's sidecar is told"
    );
    assert_eq!(
        before.version(trellis_xds::LISTENER),
        after.version(trellis_xds::LISTENER)
    );
    // The terminating pod's own sidecar keeps its inbound side.
    let own_after = cache.get(REVIEWS_V2).unwrap();
    for (name, r) in own_before.iter(trellis_xds::LISTENER) {
        let now = own_after.resource(trellis_xds::LISTENER, name).unwrap();
        assert_eq!(now.version, r.version, "{name}");
    }

    // Ready again, then the same slice twice (nothing differs): still the short path.
    let ready = terminating.replace(r#""ready": false"#, r#""ready": true"#);
    apply(&fake, &k, &ready).await;
    plane.reload().unwrap();
    assert!(plane.status().borrow().endpoints_only);
    apply(&fake, &k, &ready).await;
    plane.reload().unwrap();
    assert!(plane.status().borrow().endpoints_only);
    let (_fresh, fresh_cache, _) = plane_fresh(&fake).await;
    assert_same_views(&cache, &fresh_cache);
    assert_eq!(
        cache
            .get(PRODUCTPAGE)
            .unwrap()
            .version(trellis_xds::ENDPOINT),
        before.version(trellis_xds::ENDPOINT),
        "back where it started"
    );

    // A VirtualService edit is not an endpoint change.
    apply(&fake, &k, &event("virtualservice-reviews-v2.json")).await;
    plane.reload().unwrap();
    assert!(!plane.status().borrow().endpoints_only);
    let (_fresh, fresh_cache, _) = plane_fresh(&fake).await;
    assert_same_views(&cache, &fresh_cache);

    // Nor is a slice change together with one of another kind.
    apply(&fake, &k, &terminating).await;
    apply(&fake, &k, &event("virtualservice-reviews-deleted.json")).await;
    plane.reload().unwrap();
    assert!(!plane.status().borrow().endpoints_only);
    let (_fresh, fresh_cache, _) = plane_fresh(&fake).await;
    assert_same_views(&cache, &fresh_cache);
}

/// A control plane started now on the fake's current objects.
async fn plane_fresh(fake: &FakeApiServer) -> (ControlPlane, Cache, KubeInputs) {
    let dir = tempfile::tempdir().unwrap();
    let out = plane(fake, dir.path()).await;
    assert!(!out.0.status().borrow().endpoints_only);
    out
}
