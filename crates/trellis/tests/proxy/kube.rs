//! Kubernetes mode end to end: `trellis control --kubeconfig` against the replaying
//! API server (recorded lists of a bookinfo namespace, then recorded watch events),
//! sidecars for the recorded pods on their pod IPs (127.244.0.0/16 in the fixtures, so
//! that they can be bound here), mTLS between them, and routing that follows the
//! cluster's changes.

use super::harness::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_kube::fake::FakeApiServer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/fixtures")
}

fn event(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("events").join(name)).unwrap()
}

/// A recorded pod with a sidecar: its IP, name, service account and app port (from its
/// `sidecar.trellis.dev/app-ports` annotation).
struct Pod {
    ip: &'static str,
    name: &'static str,
    sa: &'static str,
    app: u16,
}

const PRODUCTPAGE: Pod = Pod {
    ip: "127.244.1.5",
    name: "productpage-v1-7d4cc7b8f5-9wzlk",
    sa: "bookinfo-productpage",
    app: 29180,
};
const REVIEWS_V1: Pod = Pod {
    ip: "127.244.1.6",
    name: "reviews-v1-5c9b7d6f8d-k2x7p",
    sa: "bookinfo-reviews",
    app: 29181,
};
const REVIEWS_V2: Pod = Pod {
    ip: "127.244.2.7",
    name: "reviews-v2-6f8d9c4b7c-q8m4n",
    sa: "bookinfo-reviews",
    app: 29182,
};
const RATINGS: Pod = Pod {
    ip: "127.244.2.8",
    name: "ratings-v1-85c6b7f9d4-h5t2r",
    sa: "bookinfo-ratings",
    app: 29183,
};

fn sidecar(c: &Control, p: &Pod, dir: &Path) -> Proxy {
    let boot = format!(
        "identity:\n  ca_address: \"{}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n",
        c.ca.addr,
        c.ca.root_file(dir),
        c.ca.token_file(dir, &format!("spiffe://cluster.local/ns/shop/sa/{}", p.sa)),
    );
    let node = format!("sidecar~{}~{}.shop~shop.svc.cluster.local", p.ip, p.name);
    proxy_with(
        &boot,
        &[
            "--xds",
            &c.ca.addr.to_string(),
            "--xds-tls",
            "--node-id",
            &node,
        ],
    )
}

/// Through productpage's sidecar (its outbound listener on the pod IP) to `host`.
async fn call(host: &str, path: &str) -> Result<Resp, String> {
    send(Req::get(&format!("http://{}:15001{path}", PRODUCTPAGE.ip)).header("host", host)).await
}

/// Who served `n` calls to reviews (failures as `status:<code>`).
async fn reviews(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(match call("reviews:9080", "/reviews/1").await {
            Ok(r) if r.status == 200 => r.served_by(),
            Ok(r) => format!("status:{}", r.status),
            Err(e) => format!("error:{e}"),
        });
    }
    out
}

/// Waits until every one of 10 calls is served by `who`; returns when the first call
/// of those 10 had its answer (the change was in force by then: the time the other nine
/// take is the test's, and under a loaded machine it was most of a second).
async fn until_all(who: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut served = reviews(1).await;
        let first = start.elapsed();
        served.extend(reviews(9).await);
        if served.iter().all(|s| s == who) {
            return first;
        }
        assert!(
            start.elapsed() < timeout,
            "not all served by {who} after {timeout:?}: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn control_follows_a_cluster_through_its_watch_streams() {
    let _quiet = quiet().await;
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let c = control_with(&["--kubeconfig", kubeconfig.to_str().unwrap()]);

    let _apps: Vec<App> = [
        ("productpage-v1", &PRODUCTPAGE),
        ("reviews-v1", &REVIEWS_V1),
        ("reviews-v2", &REVIEWS_V2),
        ("ratings-v1", &RATINGS),
    ]
    .iter()
    .map(|(name, p)| app_on(name, &format!("127.0.0.1:{}", p.app), &[]))
    .collect();
    let _sidecars: Vec<Proxy> = [&PRODUCTPAGE, &REVIEWS_V1, &REVIEWS_V2, &RATINGS]
        .iter()
        .map(|p| sidecar(&c, p, dir.path()))
        .collect();

    // The recorded VirtualService sends everything to v1; mTLS is STRICT mesh-wide
    // (PeerAuthentication in istio-system), so reaching the app proves the handshake.
    until_all("reviews-v1", Duration::from_secs(15)).await;
    let start = Instant::now();
    let r = loop {
        let r = call("ratings.shop:9080", "/ratings/1").await.unwrap();
        // 503 until ratings' sidecar has its inbound listener.
        if r.status != 503 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by(), "ratings-v1");
    assert!(
        r.body
            .contains("spiffe://cluster.local/ns/shop/sa/bookinfo-productpage"),
        "the app sees the caller's SPIFFE identity: {}",
        r.body
    );
    // The recorded AuthorizationPolicy denies /admin* on ratings.
    let r = call("ratings.shop:9080", "/admin/users").await.unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    // A pod outside the mesh is reached in plaintext... but from this pod, only through
    // the mesh's names: an unknown host is a 404 from the sidecar, not a leak.
    let r = call("payments.shop:443", "/").await.unwrap();
    assert_eq!(r.status, 404);

    // MODIFIED VirtualService: all traffic to v2.
    fake.apply(&event("virtualservice-reviews-v2.json"))
        .unwrap();
    let took = until_all("reviews-v2", Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "edit applied after {took:?}");

    // An invalid edit is refused; the previous version keeps serving.
    fake.apply(&event("virtualservice-reviews-bad-regex.json"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.ca.proc.log().contains("uri.regex") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            c.ca.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = c.ca.proc.log();
    let refusal = &log[log.find("refused: kubernetes").unwrap()..];
    assert!(
        refusal.contains("VirtualService shop/reviews: spec.http[0].match[0].uri.regex")
            && refusal.contains("previous version keeps serving"),
        "{refusal}"
    );
    assert!(reviews(20).await.iter().all(|s| s == "reviews-v2"));

    // DELETED: the default route spreads over both versions.
    fake.apply(&event("virtualservice-reviews-deleted.json"))
        .unwrap();
    let start = Instant::now();
    loop {
        let served = reviews(20).await;
        if served.contains(&"reviews-v1".to_string()) && served.contains(&"reviews-v2".into()) {
            assert!(
                served.iter().all(|s| s.starts_with("reviews-v")),
                "{served:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{served:?}\ncontrol:\n{}\nproductpage sidecar:\n{}",
            c.ca.proc.log(),
            _sidecars[0].proc.log()
        );
    }

    // The v2 pod starts terminating: its endpoint is not ready and leaves the cluster
    // at once, while its sidecar keeps its own config.
    fake.apply(&event("endpointslice-reviews-v2-terminating.json"))
        .unwrap();
    until_all("reviews-v1", Duration::from_secs(5)).await;
    // Only an EndpointSlice changed: the control plane took the short path.
    let log = c.ca.proc.log();
    assert!(
        log.contains("endpoints changed: 1 Service (reviews.shop.svc.cluster.local)"),
        "{log}"
    );

    // The API server compacts: the EndpointSlice watch ends with 410, the control
    // plane lists again and goes on; a later change still arrives.
    fake.expire("discovery.k8s.io/v1", "EndpointSlice");
    let mut back: serde_json::Value =
        serde_json::from_str(&event("endpointslice-reviews-v2-terminating.json")).unwrap();
    back["object"]["endpoints"][1]["conditions"]["ready"] = true.into();
    fake.apply(&back.to_string()).unwrap();
    let start = Instant::now();
    loop {
        let served = reviews(20).await;
        if served.contains(&"reviews-v2".to_string()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{served:?}");
    }
    assert!(fake
        .requests()
        .iter()
        .filter(
            |r| r.starts_with("GET /apis/discovery.k8s.io/v1/endpointslices?")
                && !r.contains("watch=true")
        )
        .nth(1)
        .is_some());
}

#[test]
fn a_cluster_that_refuses_the_credentials_stops_control_with_the_reason() {
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig().replace("k8s-token", "stale")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "control",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--kube-sync-timeout",
            "2s",
            "--no-ca",
            "--xds-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(
        err.contains("did not list") && err.contains("EndpointSlice"),
        "{err}"
    );
}

/// The Gateway API in Kubernetes mode: Gateway and HTTPRoutes applied with kubectl are
/// served by `trellis gateway` for a pod labelled with the Gateway's name, and their
/// status conditions are written back to the objects, where kubectl reads them.
#[tokio::test]
async fn gateway_api_objects_are_served_and_their_status_written_back() {
    let _quiet = quiet().await;
    let fake = FakeApiServer::start(&fixtures().join("cluster"), Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(kubectl) = trellis_kube::fake::Kubectl::new(&fake, dir.path()) else {
        return;
    };
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateway-api-crds.yaml");
    kubectl.ok(&["apply", "-f", crds.to_str().unwrap()]);
    let (port, udp_port, https_port, tcp_port) =
        (free_port(), free_port(), free_port(), free_port());
    // The HTTPS listener's certificate: a Secret made as users make one.
    let pki = super::pki::Pki::new("edge-ca");
    let edge = pki.leaf("edge", &["DNS:shop.example.test"], false);
    let secret = {
        use base64::Engine as _;
        let b64 =
            |p: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: edge-cert, namespace: shop }}\ntype: kubernetes.io/tls\ndata: {{ tls.crt: {}, tls.key: {} }}\n",
            b64(&edge.cert),
            b64(&edge.key)
        )
    };
    let out = kubectl.apply(&secret);
    assert!(out.success, "{}", out.stderr);
    let out = kubectl.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge, namespace: shop }}
spec:
  gatewayClassName: istio
  listeners:
    - {{ name: http, port: {port}, protocol: HTTP }}
    - {{ name: other, port: {udp_port}, protocol: UDP }}
    - name: https
      port: {https_port}
      protocol: HTTPS
      hostname: shop.example.test
      tls: {{ certificateRefs: [{{ name: edge-cert }}] }}
    - {{ name: db, port: {tcp_port}, protocol: TCP }}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{ name: reviews-tcp, namespace: shop }}
spec:
  parentRefs: [{{ name: edge, sectionName: db }}]
  rules: [{{ backendRefs: [{{ name: reviews, port: 9080 }}] }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: reviews, namespace: shop }}
spec:
  parentRefs: [{{ name: edge, sectionName: http }}]
  rules:
    - matches: [{{ path: {{ value: /reviews }} }}]
      backendRefs: [{{ name: reviews, port: 9080 }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: broken, namespace: shop }}
spec:
  parentRefs: [{{ name: edge, sectionName: http }}]
  rules:
    - matches: [{{ path: {{ value: /broken }} }}]
      backendRefs: [{{ name: missing, port: 9080 }}]
"#
    ));
    assert!(out.success, "{}", out.stderr);
    // Another controller already reports on the reviews route (its own parent).
    kubectl.ok(&[
        "patch",
        "httproute",
        "reviews",
        "-n",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"parents":[{"parentRef":{"name":"mesh","kind":"Service","group":""},"controllerName":"example.com/other-controller","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}]}}"#,
    ]);
    // The gateway's pod, as the cluster would report it.
    fake.apply(
        r#"{"type": "ADDED", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "edge-istio-5d9f7c6b8-x2x7q", "namespace": "shop", "labels": {"gateway.networking.k8s.io/gateway-name": "edge"}}, "spec": {"serviceAccountName": "edge-istio", "containers": [{"name": "istio-proxy"}]}, "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}}"#,
    )
    .unwrap();
    let c = control_with(&["--kubeconfig", kubectl.kubeconfig().to_str().unwrap()]);
    let gw = gateway_in(
        &c,
        "shop",
        "edge-istio-5d9f7c6b8-x2x7q",
        "spiffe://cluster.local/ns/shop/sa/edge-istio",
    );

    // Served: a route whose backend does not exist answers 500; one no route has, 404.
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while Instant::now() < deadline {
        last = send(Req::get(&url("/broken"))).await.ok();
        if last.as_ref().is_some_and(|r| r.status == 500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.map(|r| r.status), Some(500), "{}", gw.log());
    assert_eq!(send(Req::get(&url("/nothing"))).await.unwrap().status, 404);
    // The HTTPS listener serves the Secret's certificate (no route: 404 over TLS).
    let resolve = format!("shop.example.test:{https_port}:127.0.0.1");
    let https = format!("https://shop.example.test:{https_port}/");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &pki.root_path(),
            "--resolve",
            &resolve,
            &https,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{}", gw.log());

    // Written back: each route's parent conditions, the Gateway's and its listeners'.
    let conditions = |kind: &str, name: &str, path: &str| -> String {
        kubectl.ok(&[
            "get",
            kind,
            name,
            "-n",
            "shop",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    let route_of = |kind: &str, name: &str| {
        conditions(
            kind,
            name,
            "{range .status.parents[0].conditions[*]}{.type}={.status}/{.reason} {end}",
        )
    };
    let route = |name: &str| route_of("httproute", name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while route("broken").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        route("reviews").trim(),
        "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"
    );
    assert_eq!(
        route("broken").trim(),
        "Accepted=True/Accepted ResolvedRefs=False/BackendNotFound"
    );
    // A TCPRoute (an experimental-channel kind, watched as the others).
    assert_eq!(
        route_of("tcproute", "reviews-tcp").trim(),
        "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"
    );
    let controller = conditions(
        "httproute",
        "reviews",
        "{.status.parents[0].controllerName}",
    );
    assert_eq!(controller, "trellis.dev/gateway-controller");
    // The other controller's entry is still there, after ours.
    let controllers = conditions(
        "httproute",
        "reviews",
        "{.status.parents[*].controllerName}",
    );
    assert_eq!(
        controllers,
        "trellis.dev/gateway-controller example.com/other-controller"
    );
    // The HTTP listener has both routes, the TCP one its TCPRoute; the UDP one is not
    // served, and says why.
    let listeners = conditions(
        "gateway",
        "edge",
        "{range .status.listeners[*]}{.name}:{.attachedRoutes}:{range .conditions[?(@.type==\"Accepted\")]}{.status}/{.reason}{end} {end}",
    );
    assert_eq!(
        listeners.trim(),
        "http:2:True/Accepted other:0:False/UnsupportedProtocol https:0:True/Accepted db:1:True/Accepted"
    );
    let refs = conditions(
        "gateway",
        "edge",
        "{.status.listeners[2].conditions[?(@.type==\"ResolvedRefs\")].status}",
    );
    assert_eq!(refs, "True");
    let programmed = conditions(
        "gateway",
        "edge",
        "{.status.conditions[?(@.type==\"Programmed\")].status}",
    );
    assert_eq!(programmed, "True");
    // A rewrite (a new route changes the listener's count) keeps the transition time of
    // a condition whose status did not change.
    let accepted_at = || {
        conditions(
            "gateway",
            "edge",
            "{.status.listeners[0].conditions[?(@.type==\"Accepted\")].lastTransitionTime}",
        )
    };
    let before = accepted_at();
    assert!(!before.is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = kubectl.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: details, namespace: shop }\nspec:\n  parentRefs: [{ name: edge, sectionName: http }]\n  rules: [{ matches: [{ path: { value: /details } }], backendRefs: [{ name: reviews, port: 9080 }] }]\n",
    );
    assert!(out.success, "{}", out.stderr);
    let attached = || conditions("gateway", "edge", "{.status.listeners[0].attachedRoutes}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while attached() != "3" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attached(), "3");
    assert_eq!(accepted_at(), before);
    let generation = conditions("gateway", "edge", "{.metadata.generation}");
    let observed = conditions(
        "gateway",
        "edge",
        "{.status.conditions[0].observedGeneration}",
    );
    assert_eq!(observed, generation);
}
