//! The watchers against the replaying API server: recorded lists in, registry and Istio
//! inputs out; recorded watch events change them; a compacted history makes the
//! watchers list again; missing CRDs and bad credentials are reported, not fatal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trellis_kube::fake::FakeApiServer;
use trellis_kube::{Discovery, KubeInputs};
use trellis_mesh::{Loaded, Registry};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn event(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("events").join(name)).unwrap()
}

async fn connect(fake: &FakeApiServer, discovery: Discovery) -> KubeInputs {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, fake.kubeconfig()).unwrap();
    let client = trellis_kube::client(Some(&path)).await.unwrap();
    KubeInputs::start(client, discovery)
}

fn load(k: &KubeInputs) -> (Loaded, Registry) {
    let mut loaded = Loaded::default();
    let (services, workloads) = k.load_into(&mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    let registry = Registry::from_parts(&loaded.inputs, services, workloads);
    (loaded, registry)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoints(r: &Registry, host: &str) -> Vec<(String, String)> {
    let s = r
        .service(host)
        .unwrap_or_else(|| panic!("no service {host}"));
    let mut e: Vec<_> = r
        .endpoints(s, &Default::default())
        .iter()
        .map(|w| (w.name.clone(), w.address.clone()))
        .collect();
    e.sort();
    e
}

#[tokio::test]
async fn lists_become_the_registry_and_istio_inputs() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("s3cret")).unwrap();
    let k = connect(&fake, Discovery::default()).await;
    k.synced(Duration::from_secs(10)).await.unwrap();
    let (loaded, r) = load(&k);

    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let mut hosts: Vec<_> = r.services.iter().map(|s| s.host.as_str()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        [
            "invoice.legacy.svc.cluster.local",
            "kube-dns.kube-system.svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
            "productpage.shop.svc.cluster.local",
            "ratings.shop.svc.cluster.local",
            "reviews.shop.svc.cluster.local",
        ]
    );
    // ExternalName is reported, not silently dropped.
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.resource == "kubernetes Service shop/payments"
                && w.message.contains("ExternalName")),
        "{:?}",
        loaded.warnings
    );
    // The IPv4 slice of a dual-stack Service (its first family), pods by name.
    assert_eq!(
        endpoints(&r, "reviews.shop.svc.cluster.local"),
        [
            ("reviews-v1-5c9b7d6f8d-k2x7p".into(), "127.244.1.6".into()),
            ("reviews-v2-6f8d9c4b7c-q8m4n".into(), "127.244.2.7".into()),
        ]
    );
    // A selector-less Service's hand-made slice.
    assert_eq!(
        endpoints(&r, "kubernetes.default.svc.cluster.local"),
        [("kubernetes-0".into(), "172.18.0.2".into())]
    );
    let reviews = r.service("reviews.shop.svc.cluster.local").unwrap();
    let subset = [("version".to_string(), "v2".to_string())].into();
    let v2 = r.endpoints(reviews, &subset)[0];
    assert_eq!(v2.service_account, "bookinfo-reviews");
    assert_eq!(
        v2.spiffe_id(),
        "spiffe://cluster.local/ns/shop/sa/bookinfo-reviews"
    );
    assert!(v2.has_sidecar());
    // Pods are the sidecars' workloads; a named targetPort resolves to the container's.
    let ratings = r.workload("shop", "ratings-v1-85c6b7f9d4-h5t2r").unwrap();
    assert_eq!(ratings.ports.get("http"), Some(&9080));
    assert_eq!(ratings.app_ports.get("http"), Some(&29183));
    assert_eq!(ratings.outbound, "127.244.2.8:15001");
    assert!(!r
        .workload("kube-system", "coredns-668d6bf9bc-x2b7c")
        .unwrap()
        .has_sidecar());

    let i = &loaded.inputs;
    assert_eq!(i.virtual_services.len(), 1);
    assert_eq!(i.destination_rules.len(), 1);
    assert_eq!(i.peer_authentications[0].namespace, "istio-system");
    assert_eq!(i.authorization_policies[0].name, "ratings-admin");

    // A sidecar's view from Kubernetes objects: its inbound port on the pod's IP in
    // front of the app, and mTLS to the reviews pods by their SPIFFE identity.
    let view = trellis_mesh::generate(i, &r, "shop", "productpage-v1-7d4cc7b8f5-9wzlk").unwrap();
    let inbound = view
        .listeners
        .iter()
        .find(|l| l.address.as_deref() == Some("127.244.1.5:9080"))
        .expect("inbound listener on the pod IP");
    assert!(inbound.tls.is_some());
    let v1 = view
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080|v1|reviews.shop.svc.cluster.local")
        .expect("v1 subset cluster");
    // The dual-stack Service's endpoint carries the pod's other family (the fixtures'
    // IPv6 pod IPs are IPv4-mapped loopback addresses, so that no test sends anything
    // off this machine).
    assert_eq!(
        v1.endpoints,
        [trellis_config::Endpoint::with_additional(
            "127.244.1.6:9080".into(),
            1,
            false,
            vec!["[::ffff:127.244.1.6]:9080".into()]
        )]
    );
    assert_eq!(
        v1.tls.as_ref().unwrap().match_identities,
        ["spiffe://cluster.local/ns/shop/sa/bookinfo-reviews"]
    );
}

#[tokio::test]
async fn watch_events_change_the_inputs_and_expiry_relists() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("s3cret")).unwrap();
    let k = connect(&fake, Discovery::default()).await;
    k.synced(Duration::from_secs(10)).await.unwrap();
    let changes = k.changes();
    let seen = *changes.borrow();

    // A terminating pod leaves the endpoints at once; its workload stays (it drains).
    fake.apply(&event("endpointslice-reviews-v2-terminating.json"))
        .unwrap();
    until("v2 leaves reviews' endpoints", || {
        endpoints(&load(&k).1, "reviews.shop.svc.cluster.local").len() == 1
    })
    .await;
    assert!(*changes.borrow() > seen);
    assert!(load(&k)
        .1
        .workload("shop", "reviews-v2-6f8d9c4b7c-q8m4n")
        .is_some());

    // An invalid edit of a custom resource is refused naming it and the field.
    fake.apply(&event("virtualservice-reviews-bad-regex.json"))
        .unwrap();
    until("the bad VirtualService is refused", || {
        load(&k).0.refused.iter().any(|d| {
            let s = d.to_string();
            s.contains("VirtualService shop/reviews")
                && s.contains("spec.http[0].match[0].uri.regex")
        })
    })
    .await;
    fake.apply(&event("virtualservice-reviews-deleted.json"))
        .unwrap();
    until("the VirtualService is gone", || {
        let (l, _) = load(&k);
        l.inputs.virtual_services.is_empty() && l.refused.is_empty()
    })
    .await;

    // Compaction: the open watch ends with 410 and the watcher lists again, then
    // resumes from the new list's version; changes after that still arrive.
    let lists_before = count(&fake, "GET /apis/discovery.k8s.io/v1/endpointslices?");
    fake.expire("discovery.k8s.io/v1", "EndpointSlice");
    until("a fresh list after 410", || {
        count(&fake, "GET /apis/discovery.k8s.io/v1/endpointslices?") > lists_before
    })
    .await;
    let mut restored: serde_json::Value =
        serde_json::from_str(&event("endpointslice-reviews-v2-terminating.json")).unwrap();
    restored["object"]["endpoints"][1]["conditions"]["ready"] = true.into();
    fake.apply(&restored.to_string()).unwrap();
    until("v2 back after the relist", || {
        endpoints(&load(&k).1, "reviews.shop.svc.cluster.local").len() == 2
    })
    .await;
}

/// Lists (not watches) whose request line starts with `prefix`.
fn count(fake: &FakeApiServer, prefix: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with(prefix) && !r.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn discovery_selectors_keep_other_namespaces_out() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("s3cret")).unwrap();
    let selector = [("mesh".to_string(), "trellis".to_string())].into();
    let k = connect(
        &fake,
        Discovery {
            namespace_selector: Some(selector),
        },
    )
    .await;
    k.synced(Duration::from_secs(10)).await.unwrap();
    let (loaded, r) = load(&k);
    assert!(r.services.iter().all(|s| s.namespace == "shop"));
    assert!(r.workload("legacy", "invoice-6b5d8c7f9a-z9y8x").is_none());
    // istio-system is not selected either, so its mesh-wide PeerAuthentication is out.
    assert!(loaded.inputs.peer_authentications.is_empty());
    assert_eq!(loaded.inputs.virtual_services.len(), 1);
}

#[tokio::test]
async fn missing_crds_count_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["namespaces", "services", "endpointslices", "pods"] {
        std::fs::copy(
            fixtures().join(format!("cluster/{f}.json")),
            dir.path().join(format!("{f}.json")),
        )
        .unwrap();
    }
    let fake = FakeApiServer::start(dir.path(), None).unwrap();
    let k = connect(&fake, Discovery::default()).await;
    k.synced(Duration::from_secs(10)).await.unwrap();
    let (mut loaded, r) = load(&k);
    // Nothing but the namespaces' labels (for Tenants' selectors).
    assert!(loaded.inputs.namespace_labels.contains_key("shop"));
    loaded.inputs.namespace_labels.clear();
    assert_eq!(loaded.inputs, Default::default());
    assert!(r.service("reviews.shop.svc.cluster.local").is_some());
}

#[tokio::test]
async fn bad_credentials_never_sync_and_say_which_kinds() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("s3cret")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, fake.kubeconfig().replace("s3cret", "wrong")).unwrap();
    let client = trellis_kube::client(Some(&path)).await.unwrap();
    let k = KubeInputs::start(client, Discovery::default());
    let e = k.synced(Duration::from_millis(1500)).await.unwrap_err();
    assert!(e.contains("Service") && e.contains("VirtualService"), "{e}");
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /api/v1/services")));
}
