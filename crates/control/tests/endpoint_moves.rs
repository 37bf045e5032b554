//! The short path for endpoint moves against the full rebuild: after a WorkloadEntry
//! moves (address or ports), every view the control plane serves must be exactly what
//! a control plane started fresh on the same files serves, resource for resource.

use std::path::Path;

use trellis_control::ControlPlane;
use trellis_xds::Cache;

mod common;
use common::assert_same_views;

const SERVICES: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }, { number: 9443, name: grpc-api, protocol: GRPC }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: productpage, namespace: default }
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: productpage } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: cart, namespace: shop }
spec:
  hosts: [cart.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: cart } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: payments, namespace: shop }
spec:
  hosts: [payments.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{ number: 443, name: tls, protocol: TLS }]
  endpoints: [{ address: 127.0.0.9 }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: default }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { simple: LEAST_REQUEST } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 80 }
        - { destination: { host: reviews, subset: v2 }, weight: 20 }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: shop }
spec:
  egress: [{ hosts: ["./*", "default/reviews.default.svc.cluster.local"] }]
"#;

struct Entry {
    name: &'static str,
    namespace: &'static str,
    labels: &'static str,
    address: &'static str,
    port: u16,
    sidecar: bool,
}

fn entries(list: &[Entry]) -> String {
    list.iter()
        .map(|e| {
            let annotations = if e.sidecar {
                format!(
                    "\n  annotations: {{ sidecar.trellis.dev/app-ports: \"http=9000\", sidecar.trellis.dev/outbound: \"{addr}:15001\" }}",
                    addr = e.address
                )
            } else {
                String::new()
            };
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {}\n  namespace: {}{annotations}\nspec:\n  address: {}\n  ports: {{ http: {}, grpc-api: {} }}\n  labels: {{ {} }}\n  serviceAccount: {}\n---\n",
                e.name, e.namespace, e.address, e.port, e.port + 1, e.labels, e.name
            )
        })
        .collect()
}

fn workloads(reviews_v2: (&'static str, u16), cart: u16) -> Vec<Entry> {
    vec![
        Entry {
            name: "productpage",
            namespace: "default",
            labels: "app: productpage",
            address: "127.0.1.1",
            port: 20001,
            sidecar: true,
        },
        Entry {
            name: "reviews-v1",
            namespace: "default",
            labels: "app: reviews, version: v1",
            address: "127.0.1.2",
            port: 20003,
            sidecar: true,
        },
        Entry {
            name: "reviews-v2",
            namespace: "default",
            labels: "app: reviews, version: v2",
            address: reviews_v2.0,
            port: reviews_v2.1,
            sidecar: false,
        },
        Entry {
            name: "cart",
            namespace: "shop",
            labels: "app: cart",
            address: "127.0.2.1",
            port: cart,
            sidecar: true,
        },
        Entry {
            name: "cart-2",
            namespace: "shop",
            labels: "app: cart",
            address: "127.0.2.2",
            port: 20011,
            sidecar: true,
        },
    ]
}

const PROXYLESS: &str = "grpc~default~client";

/// A control plane that has served every sidecar and a proxyless client.
fn plane(dir: &Path) -> (ControlPlane, Cache) {
    let cache = Cache::new();
    let plane = ControlPlane::new(&[dir.to_path_buf()], cache.clone());
    plane.reload().unwrap();
    plane.refresh(PROXYLESS);
    (plane, cache)
}

fn write(dir: &Path, reviews_v2: (&'static str, u16), cart: u16) {
    std::fs::write(
        dir.join("workloads.yaml"),
        entries(&workloads(reviews_v2, cart)),
    )
    .unwrap();
}

#[test]
fn moved_endpoints_give_the_views_a_full_rebuild_gives() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    write(dir.path(), ("127.0.1.3", 20005), 20009);
    let (moving, cache) = plane(dir.path());
    let endpoints_before = cache
        .get("sidecar~127.0.1.1~productpage.default~default.svc.cluster.local")
        .unwrap();

    // reviews-v2 (no sidecar) changes address and ports; cart (a sidecar) changes ports.
    write(dir.path(), ("127.0.1.4", 20007), 20013);
    moving.reload().unwrap();
    assert!(moving.status().borrow().endpoints_only, "the short path");
    let (fresh, fresh_cache) = plane(dir.path());
    assert!(!fresh.status().borrow().endpoints_only);
    assert_same_views(&cache, &fresh_cache);
    // The move did change what productpage's sidecar is served.
    let after = cache
        .get("sidecar~127.0.1.1~productpage.default~default.svc.cluster.local")
        .unwrap();
    assert_ne!(
        endpoints_before.version(trellis_xds::ENDPOINT),
        after.version(trellis_xds::ENDPOINT)
    );

    // Moving back, twice in a row, stays on the short path and in step.
    write(dir.path(), ("127.0.1.3", 20005), 20009);
    moving.reload().unwrap();
    write(dir.path(), ("127.0.1.5", 20005), 20009);
    moving.reload().unwrap();
    assert!(moving.status().borrow().endpoints_only);
    let (_fresh, fresh_cache) = plane(dir.path());
    assert_same_views(&cache, &fresh_cache);

    // A workload that goes away keeps an empty view through later moves in its scope.
    let gone = "sidecar~127.0.2.2~cart-2.shop~shop.svc.cluster.local";
    let mut list = workloads(("127.0.1.5", 20005), 20009);
    list.remove(4);
    std::fs::write(dir.path().join("workloads.yaml"), entries(&list)).unwrap();
    moving.reload().unwrap();
    assert!(cache.get(gone).unwrap().is_empty());
    let mut list = workloads(("127.0.1.5", 20005), 20011);
    list.remove(4);
    std::fs::write(dir.path().join("workloads.yaml"), entries(&list)).unwrap();
    moving.reload().unwrap();
    assert!(moving.status().borrow().endpoints_only);
    assert!(cache.get(gone).unwrap().is_empty(), "{gone} got a view");
}

#[test]
fn other_changes_take_the_full_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    write(dir.path(), ("127.0.1.3", 20005), 20009);
    let (moving, cache) = plane(dir.path());

    // A label change moves reviews-v2 out of a subset: not a move.
    let mut list = workloads(("127.0.1.3", 20005), 20009);
    list[2].labels = "app: reviews, version: v1";
    std::fs::write(dir.path().join("workloads.yaml"), entries(&list)).unwrap();
    moving.reload().unwrap();
    assert!(!moving.status().borrow().endpoints_only);
    let (_fresh, fresh_cache) = plane(dir.path());
    assert_same_views(&cache, &fresh_cache);

    // A sidecar's address is its node id: not a move either.
    let mut list = workloads(("127.0.1.3", 20005), 20009);
    list[3].address = "127.0.2.9";
    std::fs::write(dir.path().join("workloads.yaml"), entries(&list)).unwrap();
    moving.reload().unwrap();
    assert!(!moving.status().borrow().endpoints_only);

    // A move together with an edit of another kind: the full rebuild.
    write(dir.path(), ("127.0.1.4", 20005), 20009);
    std::fs::write(
        dir.path().join("services.yaml"),
        SERVICES
            .replace("weight: 80", "weight: 70")
            .replace("weight: 20", "weight: 30"),
    )
    .unwrap();
    moving.reload().unwrap();
    assert!(!moving.status().borrow().endpoints_only);

    // A refused move (no address) keeps the last good entry, through the full path.
    let bad = entries(&workloads(("127.0.1.4", 20005), 20009))
        .replace("address: 127.0.1.4", "address: \"\"");
    std::fs::write(dir.path().join("workloads.yaml"), bad).unwrap();
    moving.reload().unwrap();
    let status = moving.status().borrow().clone();
    assert!(!status.endpoints_only);
    assert!(
        status.refused.iter().any(|r| r.contains("reviews-v2")),
        "{:?}",
        status.refused
    );
}
