//! Sidecar egress listeners with a port, checked against the registry.
//!
//! Such a listener is bound in the sidecar's own network namespace. Two sidecars at one
//! address (a local mesh, where every workload is on 127.0.0.1) cannot both bind it:
//! the control plane refuses such a Sidecar, naming the workloads and the port, instead
//! of letting every sidecar after the first refuse its listener updates from then on.
//! One that names a service or port the registry does not have is warned about.

use trellis_control::ControlPlane;
use trellis_xds::{Cache, LISTENER};

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: shop, namespace: default }
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: shop } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: postgres, namespace: default }
spec:
  hosts: [postgres.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 5432, name: tcp-postgres, protocol: TCP }]
  workloadSelector: { labels: { app: postgres } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: postgres-1, namespace: default }
spec:
  address: 10.0.0.9
  ports: { tcp-postgres: 5432 }
  labels: { app: postgres }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: shop-1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=9001", sidecar.trellis.dev/outbound: "127.0.0.1:15101" }
spec:
  address: ADDRESS_1
  ports: { http: 16001 }
  labels: { app: shop }
  serviceAccount: shop
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: shop-2
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=9002", sidecar.trellis.dev/outbound: "127.0.0.1:15102" }
spec:
  address: ADDRESS_2
  ports: { http: 16002 }
  labels: { app: shop }
  serviceAccount: shop
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: shop, namespace: default }
spec:
  workloadSelector: { labels: { app: shop } }
  egress:
    - hosts: ["./*"]
    - port: { number: 5432, protocol: TCP, name: tcp-postgres }
      bind: 127.0.0.1
      hosts: ["./postgres.default.svc.cluster.local"]
"#;

fn node(workload: &str, address: &str) -> String {
    format!("sidecar~{address}~{workload}.default~default.svc.cluster.local")
}

/// The listener names in `node`'s view.
fn listeners(cache: &Cache, node: &str) -> Vec<String> {
    let view = cache.get(node).expect("a view");
    view.iter(LISTENER).map(|(n, _)| n.clone()).collect()
}

#[test]
fn a_sidecar_whose_egress_port_two_sidecars_on_one_address_would_bind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = |a1: &str, a2: &str| MESH.replace("ADDRESS_1", a1).replace("ADDRESS_2", a2);
    let cache = Cache::new();
    let plane = ControlPlane::new(&[dir.path().to_path_buf()], cache.clone());

    // Two hosts: each sidecar binds its own 127.0.0.1:5432.
    std::fs::write(dir.path().join("mesh.yaml"), mesh("10.0.0.1", "10.0.0.2")).unwrap();
    plane.reload().unwrap();
    assert!(plane.status().borrow().refused.is_empty());
    for (w, a) in [("shop-1", "10.0.0.1"), ("shop-2", "10.0.0.2")] {
        let l = listeners(&cache, &node(w, a));
        assert!(l.contains(&"127.0.0.1_5432".to_string()), "{w}: {l:?}");
    }

    // One host: refused, naming the file, the resource, the workloads and the port; the
    // sidecars keep the rest of their views, without the listener only one could bind.
    std::fs::write(dir.path().join("mesh.yaml"), mesh("127.0.0.1", "127.0.0.1")).unwrap();
    plane.reload().unwrap();
    let refused = plane.status().borrow().refused.clone();
    assert_eq!(refused.len(), 1, "{refused:?}");
    for part in [
        "mesh.yaml",
        "Sidecar default/shop",
        "spec.egress",
        "127.0.0.1",
        "shop-1.default, shop-2.default",
        "port 5432",
    ] {
        assert!(refused[0].contains(part), "{part:?} in {}", refused[0]);
    }
    for w in ["shop-1", "shop-2"] {
        let l = listeners(&cache, &node(w, "127.0.0.1"));
        assert!(!l.iter().any(|n| n.ends_with("_5432")), "{w}: {l:?}");
        assert!(!l.is_empty(), "{w} keeps its other listeners");
    }

    // Apart again: accepted.
    std::fs::write(dir.path().join("mesh.yaml"), mesh("10.0.0.1", "10.0.0.2")).unwrap();
    plane.reload().unwrap();
    assert!(plane.status().borrow().refused.is_empty());
    let l = listeners(&cache, &node("shop-2", "10.0.0.2"));
    assert!(l.contains(&"127.0.0.1_5432".to_string()), "{l:?}");
}

#[test]
fn an_egress_listener_for_a_service_port_not_there_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new();
    let plane = ControlPlane::new(&[dir.path().to_path_buf()], cache.clone());
    let apart = MESH
        .replace("ADDRESS_1", "10.0.0.1")
        .replace("ADDRESS_2", "10.0.0.2");
    let shop_1 = node("shop-1", "10.0.0.1");

    std::fs::write(
        dir.path().join("mesh.yaml"),
        apart.replace("number: 5432, protocol: TCP", "number: 5433, protocol: TCP"),
    )
    .unwrap();
    plane.reload().unwrap();
    let status = plane.status().borrow().clone();
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    let warned = status
        .warnings
        .iter()
        .find(|w| w.contains("spec.egress[1]"));
    let warned = warned.unwrap_or_else(|| panic!("{:?}", status.warnings));
    for part in [
        "mesh.yaml",
        "Sidecar default/shop",
        "service postgres.default.svc.cluster.local has no port 5433",
    ] {
        assert!(warned.contains(part), "{part:?} in {warned}");
    }
    let l = listeners(&cache, &shop_1);
    assert!(!l.iter().any(|n| n.ends_with("_5433")), "{l:?}");

    // The port the service has: no warning, and the listener.
    std::fs::write(dir.path().join("mesh.yaml"), &apart).unwrap();
    plane.reload().unwrap();
    let status = plane.status().borrow().clone();
    assert!(
        !status.warnings.iter().any(|w| w.contains("spec.egress")),
        "{:?}",
        status.warnings
    );
    assert!(listeners(&cache, &shop_1).contains(&"127.0.0.1_5432".to_string()));
}

/// The egress listeners are shared by the sidecars of a scope (namespace and Sidecar
/// resource); one whose Telemetry differs (here a workload selector turns its access
/// log off) gets copies of its own, which hide the shared ones.
#[test]
fn a_workload_whose_telemetry_differs_from_its_scopes_gets_its_own_egress_listeners() {
    use prost::Message;
    use trellis_xds::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
    use trellis_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new();
    let plane = ControlPlane::new(&[dir.path().to_path_buf()], cache.clone());
    let mesh = MESH
        .replace("ADDRESS_1", "10.0.0.1")
        .replace("ADDRESS_2", "10.0.0.2");
    // shop-2 is a canary: its own label.
    let mesh = mesh.replace(
        "ports: { http: 16002 }\n  labels: { app: shop }",
        "ports: { http: 16002 }\n  labels: { app: shop, track: canary }",
    );
    let telemetry = r#"
---
apiVersion: v1
kind: ConfigMap
metadata: { name: istio, namespace: istio-system }
data:
  mesh: |
    accessLogFile: /dev/stdout
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: quiet-canary, namespace: default }
spec:
  selector: { matchLabels: { track: canary } }
  accessLogging: [{ disabled: true }]
"#;
    std::fs::write(dir.path().join("mesh.yaml"), mesh + telemetry).unwrap();
    plane.reload().unwrap();
    let status = plane.status().borrow().clone();
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    let logs = |node: &str| -> usize {
        let view = cache.get(node).expect("a view");
        let (_, r) = view
            .iter(LISTENER)
            .find(|(n, _)| n.as_str() == "127.0.0.1_5432")
            .expect("the egress listener");
        let l = Listener::decode(r.body.value.as_slice()).unwrap();
        let f = &l.filter_chains[0].filters.last().unwrap();
        let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no tcp_proxy config")
        };
        TcpProxy::decode(any.value.as_slice())
            .unwrap()
            .access_log
            .len()
    };
    assert_eq!(logs(&node("shop-1", "10.0.0.1")), 1);
    assert_eq!(logs(&node("shop-2", "10.0.0.2")), 0);
}
