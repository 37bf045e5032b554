//! `trellis control` with sidecars: Istio resources on disk → xDS → `trellis proxy`
//! sidecars talking mTLS with certificates from the embedded CA.

use super::harness::*;
use std::path::Path;
use std::time::Duration;

pub(super) struct Workload {
    pub name: &'static str,
    pub labels: &'static str,
    pub sa: &'static str,
    pub inbound: u16,
    pub app: u16,
    pub outbound: u16,
}

impl Workload {
    pub fn new(name: &'static str, labels: &'static str, sa: &'static str) -> Self {
        Workload {
            name,
            labels,
            sa,
            inbound: free_port(),
            app: free_port(),
            outbound: free_port(),
        }
    }

    pub fn entry(&self) -> String {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
  annotations:
    sidecar.trellis.dev/app-ports: "http={app}"
    sidecar.trellis.dev/outbound: "127.0.0.1:{out}"
spec:
  address: 127.0.0.1
  ports: {{ http: {inbound} }}
  labels: {{ {labels} }}
  serviceAccount: {sa}
---
"#,
            name = self.name,
            app = self.app,
            out = self.outbound,
            inbound = self.inbound,
            labels = self.labels,
            sa = self.sa
        )
    }

    pub fn node_id(&self) -> String {
        format!(
            "sidecar~127.0.0.1~{}.default~default.svc.cluster.local",
            self.name
        )
    }
}

pub(super) const SERVICES: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
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
kind: DestinationRule
metadata: { name: reviews, namespace: default }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
"#;

fn routing(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: reviews, namespace: default }}
spec:
  hosts: [reviews]
  http:
    - match: [{{ uri: {{ prefix: /admin }} }}]
      directResponse: {{ status: 404, body: {{ string: "no admin here" }} }}
    - route:
        - {{ destination: {{ host: reviews, subset: v1 }}, weight: {v1} }}
        - {{ destination: {{ host: reviews, subset: v2 }}, weight: {v2} }}
"#
    )
}

/// A sidecar: identity from the control plane's CA, everything else over xDS.
pub(super) fn sidecar(c: &Control, w: &Workload, dir: &Path) -> Proxy {
    sidecar_with(c, w, dir, "")
}

/// A sidecar whose bootstrap adds `extra` (top-level YAML).
pub(super) fn sidecar_with(c: &Control, w: &Workload, dir: &Path, extra: &str) -> Proxy {
    let boot = format!(
        "identity:\n  ca_address: \"{}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n{extra}",
        c.ca.addr,
        c.ca.root_file(dir),
        c.ca.token_file(
            dir,
            &format!("spiffe://cluster.local/ns/default/sa/{}", w.sa)
        ),
    );
    // xDS over mutual TLS on the CA port, as `trellis up` connects its sidecars.
    let xds = c.ca.addr.to_string();
    proxy_with(
        &boot,
        &["--xds", &xds, "--xds-tls", "--node-id", &w.node_id()],
    )
}

/// Sends `n` requests to `reviews` through the productpage sidecar's outbound
/// listener (used as an HTTP proxy); returns who served them.
pub(super) async fn call_reviews(outbound: u16, n: usize) -> Vec<String> {
    let mut served = Vec::new();
    for _ in 0..n {
        let r = send(
            Req::get(&format!("http://127.0.0.1:{outbound}/reviews/1"))
                .header("host", "reviews:9080"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        served.push(r.served_by());
    }
    served
}

/// Waits until the sidecar whose outbound port is `outbound` routes to reviews (a 200).
pub(super) async fn reaches_reviews(outbound: u16, timeout: Duration) {
    eventually(
        "the mesh routes the client to reviews",
        timeout,
        async || {
            send(Req::get(&format!("http://127.0.0.1:{outbound}/")).header("host", "reviews:9080"))
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
}

pub(super) async fn eventually(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {timeout:?}: {what}");
}

#[tokio::test]
async fn sidecars_route_over_mtls_and_follow_config_edits() {
    let _quiet = quiet().await;
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let r2 = Workload::new("reviews-v2", "app: reviews, version: v2", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        [&page, &r1, &r2]
            .iter()
            .map(|w| w.entry())
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(mesh.path().join("reviews-vs.yaml"), routing(100, 0)).unwrap();

    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let _a2 = app_on("reviews-v2", &format!("127.0.0.1:{}", r2.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let s_page = sidecar(&c, &page, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());
    let _s2 = sidecar(&c, &r2, dir.path());

    reaches_reviews(page.outbound, Duration::from_secs(10)).await;
    assert!(call_reviews(page.outbound, 20)
        .await
        .iter()
        .all(|s| s == "reviews-v1"));

    // The hop between sidecars is mutual TLS: reviews' sidecar saw productpage's identity.
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/headers", page.outbound))
            .header("host", "reviews:9080"),
    )
    .await
    .unwrap();
    assert!(
        r.body
            .contains("spiffe://cluster.local/ns/default/sa/productpage"),
        "x-forwarded-client-cert names the caller: {}",
        r.body
    );
    // A VirtualService direct response.
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/admin", page.outbound))
            .header("host", "reviews:9080"),
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (404, "no admin here"));

    // An edit on disk moves all traffic to v2 within a second.
    let t = std::time::Instant::now();
    std::fs::write(mesh.path().join("reviews-vs.yaml"), routing(0, 100)).unwrap();
    eventually("traffic on v2", Duration::from_secs(1), async || {
        call_reviews(page.outbound, 1).await[0] == "reviews-v2"
    })
    .await;
    eprintln!("edit to traffic shift: {:?}", t.elapsed());
    assert!(call_reviews(page.outbound, 20)
        .await
        .iter()
        .all(|s| s == "reviews-v2"));

    // reviews-v2's sidecar moves to another inbound port: only an endpoint moved, so the
    // control plane takes its short path (that cluster and reviews-v2's own view are
    // made again, nothing else), and traffic follows within a second.
    let old_port = r2.inbound;
    let r2 = Workload {
        inbound: free_port(),
        ..r2
    };
    let t = std::time::Instant::now();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        [&page, &r1, &r2]
            .iter()
            .map(|w| w.entry())
            .collect::<String>(),
    )
    .unwrap();
    eventually(
        "traffic on v2's new port",
        Duration::from_secs(1),
        async || {
            let r = send(
                Req::get(&format!("http://127.0.0.1:{}/reviews/1", page.outbound))
                    .header("host", "reviews:9080"),
            )
            .await;
            // The old port closed, the new one open, and productpage reaches v2 on the
            // new one. Its sidecar's endpoint list says so: a request can still succeed
            // over a pooled connection to the old port (a removed listener drains), and
            // only the next new connection would show the old endpoint.
            let open = |port: u16| async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            };
            let clusters = s_page.admin_get("/clusters").await.body;
            !open(old_port).await
                && open(r2.inbound).await
                && !clusters.contains(&format!(":{old_port}\""))
                && clusters.contains(&format!(":{}\"", r2.inbound))
                && r.is_ok_and(|r| r.status == 200 && r.served_by() == "reviews-v2")
        },
    )
    .await;
    eprintln!(
        "endpoint move to traffic on the new port: {:?}",
        t.elapsed()
    );
    assert!(
        c.ca.proc.log().contains("endpoints moved: 1 WorkloadEntry"),
        "{}",
        c.ca.proc.log()
    );
    assert!(call_reviews(page.outbound, 20)
        .await
        .iter()
        .all(|s| s == "reviews-v2"));

    // A sidecar may have only its own view: reviews' certificate asking for
    // productpage's node is refused (PERMISSION_DENIED), and gets no config.
    let impostor_dir = tempfile::tempdir().unwrap();
    let boot = format!(
        "identity:\n  ca_address: \"{}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n",
        c.ca.addr,
        c.ca.root_file(impostor_dir.path()),
        c.ca.token_file(
            impostor_dir.path(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        ),
    );
    let impostor = proxy_with(
        &boot,
        &[
            "--xds",
            &c.ca.addr.to_string(),
            "--xds-tls",
            "--node-id",
            &page.node_id(),
        ],
    );
    eventually("the impostor is refused", Duration::from_secs(5), async || {
        c.ca.proc.log().contains(
            "spiffe://cluster.local/ns/default/sa/reviews is not the identity of workload default/productpage-v1",
        )
    })
    .await;
    assert_eq!(
        impostor
            .metric("trellis_xds_updates_total{result=\"accepted\"}")
            .await,
        0.0
    );
    drop(impostor);

    // An invalid edit is refused and the last good routing stays.
    std::fs::write(mesh.path().join("reviews-vs.yaml"), routing(0, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.ca.proc.log().contains("total destination weight is 0"),
        "{}",
        c.ca.proc.log()
    );
    assert!(call_reviews(page.outbound, 10)
        .await
        .iter()
        .all(|s| s == "reviews-v2"));

    // The control plane goes away; traffic keeps flowing on the last config.
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(call_reviews(page.outbound, 20)
        .await
        .iter()
        .all(|s| s == "reviews-v2"));
}

/// A service with endpoints with and without sidecars (a workload not yet in the mesh):
/// the one without is reached in plaintext, the sidecar behind STRICT mutual TLS still
/// in mutual TLS, from one cluster. (Before, the cluster fell back to plaintext for
/// every endpoint, which the STRICT sidecar refused.)
#[tokio::test]
async fn endpoints_without_a_sidecar_get_plaintext_and_the_others_keep_mtls() {
    let _quiet = quiet().await;
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let legacy_port = free_port();
    let legacy = format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: reviews-legacy, namespace: default }}\nspec:\n  address: 127.0.0.1\n  ports: {{ http: {legacy_port} }}\n  labels: {{ app: reviews, version: legacy }}\n---\n"
    );
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec:\n  mtls: { mode: STRICT }\n";
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("strict.yaml"), strict).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &r1.entry() + &legacy,
    )
    .unwrap();

    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let _legacy = app_on("reviews-legacy", &format!("127.0.0.1:{legacy_port}"), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let s_page = sidecar(&c, &page, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());

    // Both endpoints serve; the sidecar's only once its inbound listener is up.
    eventually(
        "both endpoints of reviews serve",
        Duration::from_secs(10),
        async || {
            let served = call_headers(page.outbound, 4).await;
            served.iter().any(|(by, _)| by == "reviews-v1")
                && served.iter().any(|(by, _)| by == "reviews-legacy")
        },
    )
    .await;
    let served = call_headers(page.outbound, 20).await;
    assert!(
        served
            .iter()
            .all(|(by, _)| by == "reviews-v1" || by == "reviews-legacy"),
        "{served:?}"
    );
    for (by, headers) in &served {
        // Only the sidecar's hop is mutual TLS: its sidecar saw productpage's identity.
        let xfcc = headers.contains("spiffe://cluster.local/ns/default/sa/productpage");
        assert_eq!(xfcc, by == "reviews-v1", "{by}: {headers}");
    }
    let clusters = s_page.admin_get("/clusters").await.body;
    let json: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let tls_of = |port: u16| {
        let address = format!("127.0.0.1:{port}");
        let reviews = json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "outbound|9080||reviews.default.svc.cluster.local");
        let endpoints = reviews.unwrap()["endpoints"].as_array().unwrap();
        let e = endpoints.iter().find(|e| e["address"] == address.as_str());
        e.unwrap_or_else(|| panic!("no endpoint {address}: {clusters}"))["tls"] == true
    };
    assert!(tls_of(r1.inbound), "{clusters}");
    assert!(!tls_of(legacy_port), "{clusters}");
}

/// A TCP service (a database, say) reached through the app's sidecar: Istio's Sidecar
/// egress listener with a port of its own, bound on loopback (sidecars run without
/// capture), forwarding over mutual TLS to the service's sidecar, which accepts nothing
/// else (STRICT).
#[tokio::test]
async fn a_tcp_service_is_reached_through_a_sidecar_egress_listener() {
    let _quiet = quiet().await;
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let db = Workload::new("db-v1", "app: db", "db");
    let db_port = free_port();
    let db_service = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: db, namespace: default }}\nspec:\n  hosts: [db.default.svc.cluster.local]\n  ports: [{{ number: {db_port}, name: tcp, protocol: TCP }}]\n  workloadSelector: {{ labels: {{ app: db }} }}\n---\n"
    );
    let sidecar_resource = format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{ name: productpage, namespace: default }}\nspec:\n  workloadSelector: {{ labels: {{ app: productpage }} }}\n  egress:\n    - hosts: [\"./*\"]\n    - port: {{ number: {db_port}, protocol: TCP, name: tcp-db }}\n      bind: 127.0.0.1\n      captureMode: NONE\n      hosts: [\"./db.default.svc.cluster.local\"]\n"
    );
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec:\n  mtls: { mode: STRICT }\n";
    std::fs::write(
        mesh.path().join("services.yaml"),
        SERVICES.to_string() + "---\n" + &db_service,
    )
    .unwrap();
    std::fs::write(mesh.path().join("sidecar.yaml"), sidecar_resource).unwrap();
    std::fs::write(mesh.path().join("strict.yaml"), strict).unwrap();
    // Istio's mesh-wide access log, in JSON: both sidecars log each TCP connection.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    std::fs::write(
        mesh.path().join("mesh.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: istio, namespace: istio-system }}\ndata:\n  mesh: |\n    accessLogFile: {}\n    accessLogEncoding: JSON\n",
            log.display()
        ),
    )
    .unwrap();
    // The database's sidecar serves its TCP port; the app behind it speaks HTTP, which
    // the TCP hop carries as bytes.
    let db_entry = db
        .entry()
        .replace("http=", "tcp=")
        .replace("{ http:", "{ tcp:");
    std::fs::write(mesh.path().join("workloads.yaml"), page.entry() + &db_entry).unwrap();
    let _db_app = app_on("db-v1", &format!("127.0.0.1:{}", db.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let s_page = sidecar(&c, &page, dir.path());
    let s_db = sidecar(&c, &db, dir.path());

    let url = format!("http://127.0.0.1:{db_port}/headers");
    eventually(
        "the app reaches db through its sidecar",
        Duration::from_secs(10),
        async || send(Req::get(&url)).await.is_ok_and(|r| r.status == 200),
    )
    .await;
    for _ in 0..10 {
        let r = send(Req::get(&url)).await.unwrap();
        assert_eq!((r.status, r.served_by()), (200, "db-v1".to_string()));
    }
    // reviews has no workload here: its cluster is empty, which costs its own requests
    // a 503 and nothing else (it used to fail the sidecar's whole update).
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/", page.outbound)).header("host", "reviews:9080"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    let clusters = s_page.admin_get("/clusters").await.body;
    let json: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let name = format!("outbound|{db_port}||db.default.svc.cluster.local");
    let c = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str());
    let endpoint = &c.unwrap_or_else(|| panic!("no {name}: {clusters}"))["endpoints"][0];
    assert_eq!(endpoint["address"], format!("127.0.0.1:{}", db.inbound));
    assert_eq!(endpoint["tls"], true, "{clusters}");
    assert!(
        s_page
            .metric(&format!(
                "trellis_tcp_downstream_rx_bytes_total{{listener=\"127.0.0.1_{db_port}\"}}"
            ))
            .await
            > 0.0
    );
    // Istio's TCP metrics on both sides. The sidecars exchanged their workloads'
    // metadata at the start of each stream (ALPN istio-peer-exchange), so each names
    // the other; the server's side takes the client's principal from its certificate.
    // The app behind got the bytes without the frames (it answered each HTTP request).
    use super::telemetry::sum;
    let server = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/productpage",
        ),
        ("source_workload_namespace", "default"),
        ("destination_workload", "db-v1"),
        ("destination_app", "db"),
        ("destination_service", "db.default.svc.cluster.local"),
        ("request_protocol", "tcp"),
        ("connection_security_policy", "mutual_tls"),
        ("response_flags", "-"),
    ];
    let client = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("destination_workload", "db-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "db"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/db",
        ),
        ("destination_service", "db.default.svc.cluster.local"),
        ("request_protocol", "tcp"),
    ];
    eventually(
        "Istio's TCP metrics count the connections, closed and their bytes",
        Duration::from_secs(10),
        async || {
            let db_text = s_db.admin_get("/stats/prometheus").await.body;
            let page_text = s_page.admin_get("/stats/prometheus").await.body;
            sum(&db_text, "istio_tcp_connections_opened_total", &server) >= 10.0
                && sum(&db_text, "istio_tcp_connections_closed_total", &server) >= 10.0
                && sum(&db_text, "istio_tcp_received_bytes_total", &server) > 0.0
                && sum(&db_text, "istio_tcp_sent_bytes_total", &server) > 0.0
                && sum(&page_text, "istio_tcp_connections_opened_total", &client) >= 10.0
                && sum(&page_text, "istio_tcp_sent_bytes_total", &client) > 0.0
        },
    )
    .await;
    // A line per connection from each side, in Istio's JSON format: the HTTP fields
    // null, the response code 0, the bytes both ways, the upstream.
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let db_cluster = format!("outbound|{db_port}||db.default.svc.cluster.local");
    eventually(
        "both sidecars log the TCP connections",
        Duration::from_secs(10),
        async || {
            let lines = lines();
            let count = |cluster: &str| {
                lines
                    .iter()
                    .filter(|l| l["upstream_cluster"] == cluster && l["response_flags"] == "-")
                    .count()
            };
            count(&db_cluster) >= 10 && count(&format!("inbound|{}||", db.inbound)) >= 10
        },
    )
    .await;
    // Connections made before the database's sidecar was up failed (UF), and say so.
    for l in lines() {
        if l["upstream_cluster"] != db_cluster.as_str() {
            continue;
        }
        assert_eq!(l["response_code"], 0, "{l}");
        assert_eq!(l["method"], serde_json::Value::Null, "{l}");
        assert_eq!(l["protocol"], serde_json::Value::Null, "{l}");
        if l["response_flags"] == "UF" {
            assert_eq!(l["bytes_sent"], 0, "{l}");
            continue;
        }
        assert_eq!(l["response_flags"], "-", "{l}");
        assert!(l["bytes_sent"].as_u64().unwrap() > 0, "{l}");
        assert!(l["bytes_received"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(
            l["upstream_host"],
            format!("127.0.0.1:{}", db.inbound),
            "{l}"
        );
    }
}

/// Sends `n` requests for `/headers` to `reviews` through productpage's sidecar: who
/// served each, and the headers it saw.
async fn call_headers(outbound: u16, n: usize) -> Vec<(String, String)> {
    let mut served = Vec::new();
    for _ in 0..n {
        let r = send(
            Req::get(&format!("http://127.0.0.1:{outbound}/headers"))
                .header("host", "reviews:9080"),
        )
        .await;
        match r {
            Ok(r) if r.status == 200 => served.push((r.served_by(), r.body)),
            Ok(r) => served.push((format!("status {}", r.status), r.body)),
            Err(e) => served.push(("error".into(), e.to_string())),
        }
    }
    served
}

/// The Python interpreter with grpcio (`./run test` makes one; TRELLIS_PYTHON names it).
pub(super) fn python_with_grpcio() -> Option<String> {
    python_with("grpc", "grpcio")
}

/// The Python interpreter that can import `modules` (from the PyPI `packages`); without
/// one the test skips, saying why, except in CI or under TRELLIS_REQUIRE_GRPCIO, where
/// it fails.
pub(super) fn python_with(modules: &str, packages: &str) -> Option<String> {
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = std::env::var_os("TRELLIS_REQUIRE_GRPCIO").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    if required {
        panic!("{python} cannot import {modules}, and CI or TRELLIS_REQUIRE_GRPCIO requires it");
    }
    eprintln!(
        "SKIPPED: {python} cannot import {modules} (pip install {packages}, or run ./run test)"
    );
    None
}

#[tokio::test]
async fn a_proxyless_grpc_client_resolves_a_service_through_the_control_plane() {
    let _quiet = quiet().await;
    let Some(python) = python_with_grpcio() else {
        return;
    };
    let mesh = tempfile::tempdir().unwrap();
    let server_port = free_port();
    std::fs::write(
        mesh.path().join("echo.yaml"),
        format!(
            r#"{ECHO_SERVICE}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: echo-v1, namespace: default }}
spec:
  address: 127.0.0.1
  ports: {{ grpc: {server_port} }}
  labels: {{ app: echo }}
"#
        ),
    )
    .unwrap();
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = grpc_bootstrap(&c, dir.path(), serde_json::Value::Null);
    let out = xds_client(&python, server_port, "insecure", "20", &bootstrap).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "pong:hello",
        "stdout: {stdout}\nstderr: {}\ncontrol log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.ca.proc.log()
    );
}

/// The service the proxyless gRPC clients call (`xds:///echo.default.svc.cluster.local:7070`).
const ECHO_SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo, namespace: default }
spec:
  hosts: [echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{ number: 7070, name: grpc, protocol: GRPC }]
  workloadSelector: { labels: { app: echo } }
"#;

/// A gRPC xDS bootstrap for the control plane's plaintext port, node
/// `grpc~default~python-client`, with `certificate_providers` when given.
fn grpc_bootstrap(
    c: &Control,
    dir: &Path,
    certificate_providers: serde_json::Value,
) -> std::path::PathBuf {
    let path = dir.join("bootstrap.json");
    let mut bootstrap = serde_json::json!({
        "xds_servers": [{
            "server_uri": c.xds.to_string(),
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": { "id": "grpc~default~python-client" },
    });
    if !certificate_providers.is_null() {
        bootstrap["certificate_providers"] = certificate_providers;
    }
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    path
}

/// `fixtures/grpc/xds_client.py`: serves the echo on `app` and calls it through
/// `xds:///echo.default.svc.cluster.local:7070` with `mode` credentials.
async fn xds_client(
    python: &str,
    app: u16,
    mode: &'static str,
    timeout: &'static str,
    bootstrap: &Path,
) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc/xds_client.py");
    let (python, bootstrap) = (python.to_string(), bootstrap.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(app.to_string())
            .arg("xds:///echo.default.svc.cluster.local:7070")
            .args([mode, timeout])
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A proxyless gRPC client with xDS credentials speaks the mesh's mutual TLS to a
/// workload whose sidecar is STRICT: its clusters carry gRPC's form of the TLS (the
/// certificate provider of its bootstrap, a file watcher over a certificate from the
/// CA). The same client without xDS credentials connects in plaintext and is refused.
#[tokio::test]
async fn a_proxyless_grpc_client_speaks_mutual_tls_to_a_strict_sidecar() {
    let _quiet = quiet().await;
    let Some(python) = python_with_grpcio() else {
        return;
    };
    let mesh = tempfile::tempdir().unwrap();
    let echo = Workload::new("echo-v1", "app: echo", "echo");
    std::fs::write(
        mesh.path().join("echo.yaml"),
        format!(
            r#"{ECHO_SERVICE}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: echo-v1
  namespace: default
  annotations:
    sidecar.trellis.dev/app-ports: "grpc={app}"
    sidecar.trellis.dev/outbound: "127.0.0.1:{outbound}"
spec:
  address: 127.0.0.1
  ports: {{ grpc: {inbound} }}
  labels: {{ app: echo }}
  serviceAccount: echo
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: default }}
spec: {{ mtls: {{ mode: STRICT }} }}
"#,
            app = echo.app,
            outbound = echo.outbound,
            inbound = echo.inbound,
        ),
    )
    .unwrap();
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = sidecar(&c, &echo, dir.path());

    // The client's certificate, as a node agent would keep it for the app.
    let id = "spiffe://cluster.local/ns/default/sa/python-client";
    let key = super::ca::ec();
    let chain = super::ca::client(&c.ca)
        .create_certificate(
            &super::ca::csr(&key, id),
            Duration::from_secs(3600),
            trellis_ca::Credential::Token(&c.ca.token(id, "1h")),
        )
        .await
        .unwrap();
    let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, chain.concat()).unwrap();
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let bootstrap = grpc_bootstrap(
        &c,
        dir.path(),
        serde_json::json!({
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": cert,
                    "private_key_file": key_file,
                    "ca_certificate_file": c.ca.root_file(dir.path()),
                    "refresh_interval": "600s",
                },
            },
        }),
    );
    let call = |mode, timeout| xds_client(&python, echo.app, mode, timeout, &bootstrap);
    let out = call("xds-creds", "20").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "pong:hello",
        "stdout: {stdout}\nstderr: {}\ncontrol log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.ca.proc.log()
    );
    let out = call("insecure", "3").await;
    assert!(
        !out.status.success(),
        "plaintext reached a STRICT workload: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The threads that serve xDS and the CA: one per core unless `--workers` says.
#[test]
fn workers_sets_the_serving_threads() {
    let mesh = tempfile::tempdir().unwrap();
    let dir = mesh.path().display().to_string();
    let c = control_with(&["--config-dir", &dir, "--workers", "3"]);
    let tasks = format!("/proc/{}/task", c.ca.proc.pid());
    let workers = std::fs::read_dir(&tasks)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "tokio-rt-worker")
        .count();
    assert_eq!(workers, 3, "runtime worker threads in {tasks}");
}

/// `trellis control --check`: the whole load and every sidecar's view, without
/// serving; a refusal fails the run, and JSON says the same as text.
#[test]
fn check_mode_validates_everything_and_fails_on_a_refusal() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &r1.entry(),
    )
    .unwrap();
    std::fs::write(mesh.path().join("vs.yaml"), routing(90, 10)).unwrap();
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["control", "--check", "--config-dir"])
            .arg(mesh.path())
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("0 refused, 0 warnings; 2 services, 2 workloads, 2 sidecar views checked"),
        "{text}"
    );

    std::fs::write(mesh.path().join("vs.yaml"), routing(0, 0)).unwrap();
    std::fs::write(
        mesh.path().join("authz.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: p, namespace: default }\nspec:\n  rules: [{ when: [{ key: \"request.auth.issuer\", values: [x] }] }]\n",
    )
    .unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("total destination weight is 0"), "{text}");
    assert!(
        text.contains("authz.yaml#1 AuthorizationPolicy default/p: spec.rules[0].when[0].key"),
        "{text}"
    );
    let (code, json) = check(&["--output", "json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["refused"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(report["views"], 2);
    assert!(
        report["view_errors"].as_array().unwrap().is_empty(),
        "{json}"
    );
}

/// A ServiceEntry with `resolution: DNS`: the sidecar resolves the endpoint's name
/// (`localhost`) and reaches what listens there; before, the name was taken as an
/// address and the service had no endpoint (503).
#[tokio::test]
async fn a_dns_service_entry_is_resolved_by_the_sidecar() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let port = free_port();
    let _app = app_on("ext", &format!("127.0.0.1:{port}"), &[]);
    let external = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: ext, namespace: default }}\nspec:\n  hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  endpoints: [{{ address: localhost }}]\n  ports: [{{ number: {port}, name: http, protocol: HTTP }}]\n"
    );
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("external.yaml"), external).unwrap();
    std::fs::write(mesh.path().join("workloads.yaml"), page.entry()).unwrap();
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _s = sidecar(&c, &page, dir.path());
    eventually(
        "the name resolves and serves",
        Duration::from_secs(15),
        async || {
            let r = send(
                Req::get(&format!("http://127.0.0.1:{}/", page.outbound))
                    .header("host", &format!("ext.example.com:{port}")),
            )
            .await;
            r.is_ok_and(|r| r.status == 200 && r.served_by() == "ext")
        },
    )
    .await;
}

/// WorkloadEntry `weight`: a workload's share of its service's traffic. Before, every
/// endpoint got an equal share whatever the weights said.
#[tokio::test]
async fn workload_entry_weights_share_the_traffic() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let r2 = Workload::new("reviews-v2", "app: reviews, version: v2", "reviews");
    let weighted = |w: &Workload, weight: u32| {
        w.entry().replace(
            "  serviceAccount: reviews\n",
            &format!("  serviceAccount: reviews\n  weight: {weight}\n"),
        )
    };
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &weighted(&r1, 3) + &weighted(&r2, 1),
    )
    .unwrap();
    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let _a2 = app_on("reviews-v2", &format!("127.0.0.1:{}", r2.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _s = sidecar(&c, &page, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());
    let _s2 = sidecar(&c, &r2, dir.path());
    eventually("both reviews serve", Duration::from_secs(15), async || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let r = send(
                Req::get(&format!("http://127.0.0.1:{}/", page.outbound))
                    .header("host", "reviews:9080"),
            )
            .await;
            match r {
                Ok(r) if r.status == 200 => seen.insert(r.served_by()),
                _ => return false,
            };
        }
        seen.len() == 2
    })
    .await;
    let served = call_reviews(page.outbound, 80).await;
    let v1 = served.iter().filter(|s| *s == "reviews-v1").count();
    assert_eq!(
        v1, 60,
        "3 of every 4 to the workload of weight 3: {served:?}"
    );
}

/// VirtualService corsPolicy: the client's sidecar answers a preflight from an allowed
/// origin with the policy's headers, adds the allow headers to that origin's other
/// responses, and leaves other origins alone (their preflight goes to the service).
#[tokio::test]
async fn cors_policies_answer_preflights_and_mark_responses() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - corsPolicy:
        allowOrigins: [{ exact: "https://shop.example.com" }, { regex: "https://.*[.]partner[.]example" }]
        allowMethods: [GET, POST]
        allowHeaders: [x-user]
        exposeHeaders: [x-trace]
        maxAge: 24h
        allowCredentials: true
      route: [{ destination: { host: reviews } }]
"#;
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &r1.entry(),
    )
    .unwrap();
    std::fs::write(mesh.path().join("cors.yaml"), vs).unwrap();
    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _s = sidecar(&c, &page, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());
    let url = format!("http://127.0.0.1:{}/reviews/1", page.outbound);
    let req = |origin: &str| {
        Req::get(&url)
            .header("host", "reviews:9080")
            .header("origin", origin)
    };
    eventually(
        "the mesh routes productpage → reviews",
        Duration::from_secs(15),
        async || {
            send(req("https://shop.example.com"))
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;

    let preflight = |origin: &str| {
        req(origin)
            .method("OPTIONS")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-user")
    };
    let r = send(preflight("https://shop.example.com")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-user"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("x-served-by"),
        None,
        "answered by the sidecar, not the service"
    );

    let r = send(req("https://a.partner.example")).await.unwrap();
    assert_eq!((r.status, r.served_by().as_str()), (200, "reviews-v1"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.partner.example")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some("x-trace"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    // Another origin: nothing added; its preflight goes on to the service.
    let r = send(req("https://evil.example")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = send(preflight("https://evil.example")).await.unwrap();
    assert_eq!(
        r.served_by(),
        "reviews-v1",
        "forwarded (Istio's unmatchedPreflights: FORWARD)"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

/// VirtualService matches on the client (`sourceLabels`, `sourceNamespace`): each
/// sidecar gets the routes that apply to its own workload.
#[tokio::test]
async fn source_matches_route_each_client_by_its_labels() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let other = Workload::new("ratings-v1", "app: ratings, version: v1", "ratings");
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let r2 = Workload::new("reviews-v2", "app: reviews, version: v2", "reviews");
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - match: [{ sourceLabels: { app: productpage }, sourceNamespace: default }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#;
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        [&page, &other, &r1, &r2]
            .iter()
            .map(|w| w.entry())
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(mesh.path().join("vs.yaml"), vs).unwrap();
    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let _a2 = app_on("reviews-v2", &format!("127.0.0.1:{}", r2.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _sp = sidecar(&c, &page, dir.path());
    let _so = sidecar(&c, &other, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());
    let _s2 = sidecar(&c, &r2, dir.path());
    for w in [&page, &other] {
        reaches_reviews(w.outbound, Duration::from_secs(15)).await;
    }
    assert!(call_reviews(page.outbound, 10)
        .await
        .iter()
        .all(|s| s == "reviews-v2"));
    assert!(call_reviews(other.outbound, 10)
        .await
        .iter()
        .all(|s| s == "reviews-v1"));
}

/// Per-destination `headers` of a VirtualService route: each destination's edits go
/// with the requests sent to it and their responses (before, the VirtualService was
/// refused).
#[tokio::test]
async fn destination_headers_go_with_their_destination() {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    let r2 = Workload::new("reviews-v2", "app: reviews, version: v2", "reviews");
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - headers: { request: { set: { x-route: all } } }
      route:
        - destination: { host: reviews, subset: v1 }
          weight: 50
          headers: { request: { set: { x-canary: "no" } }, response: { set: { x-version: one } } }
        - destination: { host: reviews, subset: v2 }
          weight: 50
          headers: { request: { set: { x-canary: "yes" } }, response: { add: { x-version: two } } }
"#;
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        [&page, &r1, &r2]
            .iter()
            .map(|w| w.entry())
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(mesh.path().join("vs.yaml"), vs).unwrap();
    let _a1 = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let _a2 = app_on("reviews-v2", &format!("127.0.0.1:{}", r2.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _sp = sidecar(&c, &page, dir.path());
    let _s1 = sidecar(&c, &r1, dir.path());
    let _s2 = sidecar(&c, &r2, dir.path());
    let url = format!("http://127.0.0.1:{}/headers", page.outbound);
    eventually(
        "both versions answer",
        Duration::from_secs(15),
        async || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20 {
                match send(Req::get(&url).header("host", "reviews:9080")).await {
                    Ok(r) if r.status == 200 => seen.insert(r.served_by()),
                    _ => return false,
                };
            }
            seen.len() == 2
        },
    )
    .await;
    for _ in 0..20 {
        let r = send(Req::get(&url).header("host", "reviews:9080"))
            .await
            .unwrap();
        let echoed = r.json();
        let sent = |name: &str| echoed["headers"][name].as_str().map(str::to_string);
        assert_eq!(sent("x-route").as_deref(), Some("all"), "{echoed}");
        match r.served_by().as_str() {
            "reviews-v1" => {
                assert_eq!(sent("x-canary").as_deref(), Some("no"));
                assert_eq!(r.header("x-version"), Some("one"));
            }
            "reviews-v2" => {
                assert_eq!(sent("x-canary").as_deref(), Some("yes"));
                assert_eq!(r.header("x-version"), Some("two"));
            }
            other => panic!("served by {other}"),
        }
    }
}

/// What a sidecar refuses is on the control plane's status page, with the sidecar's
/// reason, until it takes a later push: reviews' inbound port is taken, so its sidecar
/// cannot bind the listener and NACKs it; once the port is free and the listener is
/// pushed again (a policy changes it), the ACK clears the entry.
#[tokio::test]
async fn the_status_page_says_which_sidecar_refuses_a_push_and_why() {
    let _quiet = quiet().await;
    let mesh = tempfile::tempdir().unwrap();
    let reviews = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("workloads.yaml"), reviews.entry()).unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", reviews.inbound)).unwrap();
    let status_addr = format!("127.0.0.1:{}", free_port());
    let c = control_with(&[
        "--config-dir",
        &mesh.path().display().to_string(),
        "--status-listen",
        &status_addr,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let _sidecar = sidecar(&c, &reviews, dir.path());
    let rejected = || async {
        get(&format!("http://{status_addr}/status")).await.json()["rejected_by_proxies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut found = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while found.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = rejected().await;
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["node"], reviews.node_id().as_str());
    let message = found[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&reviews.inbound.to_string()) && message.contains("in use"),
        "{message}"
    );
    // The port is free again; a policy for reviews changes its inbound listener.
    drop(taken);
    std::fs::write(
        mesh.path().join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: allow-all, namespace: default }\nspec:\n  selector: { matchLabels: { app: reviews } }\n  rules: [{}]\n",
    )
    .unwrap();
    eventually(
        "the ACK clears the rejection",
        Duration::from_secs(15),
        async || rejected().await.is_empty(),
    )
    .await;
}
