//! Istio's standard metrics from real sidecars, read by a real Prometheus: productpage's
//! sidecar (the client's side, `reporter="source"`) and reviews' (the server's,
//! `reporter="destination"`) each count the requests with both workloads' labels, which
//! they learn from each other's metadata headers; the apps never see those headers.

use super::harness::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The samples of `name` in a Prometheus text exposition, each with its labels.
pub(super) fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",") {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        out.push((map, value.parse().unwrap_or(f64::NAN)));
    }
    out
}

/// The sum of the samples whose labels include `want`.
pub(super) fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Istio's labels of `istio_requests_total` (istio.io, "Istio Standard Metrics").
const ISTIO_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// A Prometheus scraping `targets` (admin addresses) every half second.
struct Prometheus {
    _proc: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self._proc.kill();
        let _ = self._proc.wait();
    }
}

fn prometheus(targets: &[std::net::SocketAddr]) -> Option<Prometheus> {
    prometheus_on(free_port(), targets)
}

/// The same on `port`.
fn prometheus_on(port: u16, targets: &[std::net::SocketAddr]) -> Option<Prometheus> {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("prometheus is not installed, and CI requires it (apt install prometheus)");
        }
        eprintln!("SKIPPED: prometheus is not installed (apt install prometheus)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        "global: {{ scrape_interval: 500ms, evaluation_interval: 500ms }}\nscrape_configs:\n  - job_name: sidecars\n    metrics_path: /stats/prometheus\n    static_configs: [{{ targets: [{}] }}]\n",
        list.join(", ")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let proc = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Some(Prometheus {
        _proc: proc,
        _dir: dir,
        port,
    })
}

impl Prometheus {
    /// The value of an instant query with one result, once it has one.
    async fn query(&self, q: &str) -> Option<f64> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            url_encode(q)
        );
        let r = send(Req::get(&url)).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Both sidecars' `/stats/prometheus` once `istio_requests_total` with the `client`
/// labels counts `n` at productpage's and with the `server` labels `n` at reviews'
/// (the server's side counts a request once its response body is done).
async fn scrape_when_counted(
    m: &super::policy::Mesh,
    client: &[(&str, &str)],
    server: &[(&str, &str)],
    n: usize,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text_page = m.page_sidecar.admin_get("/stats/prometheus").await.body;
        let text_reviews = m.reviews_sidecar.admin_get("/stats/prometheus").await.body;
        let counted = (
            sum(&text_page, "istio_requests_total", client),
            sum(&text_reviews, "istio_requests_total", server),
        );
        if counted == (n as f64, n as f64) {
            return (text_page, text_reviews);
        }
        assert!(
            Instant::now() < deadline,
            "counted {counted:?} of {n}:\n{text_page}\n{text_reviews}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sidecars_export_istio_standard_metrics_that_prometheus_reads() {
    let _quiet = quiet().await;
    let m = super::policy::mesh(&[]).await;
    let n = 20;
    for _ in 0..n {
        let r = send(
            Req::get(&format!("http://127.0.0.1:{}/reviews/1", m.page.outbound))
                .header("host", "reviews:9080"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        // The metadata headers go between sidecars only.
        assert!(
            !r.body.contains("x-envoy-peer-metadata"),
            "the app saw: {}",
            r.body
        );
        assert!(
            r.header("x-envoy-peer-metadata").is_none(),
            "the client saw it"
        );
    }
    let page = "productpage-v1";
    let reviews = "reviews-v1";
    let common = [
        ("source_workload", page),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/productpage",
        ),
        ("destination_workload", reviews),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/reviews",
        ),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
    ];
    // Each side counts every request (the server's once its response body is done).
    let server = [
        &common[..],
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    ]
    .concat();
    let client = [&common[..], &[("reporter", "source")]].concat();
    let (text_page, text_reviews) = scrape_when_counted(&m, &client, &server, n).await;
    // Every one of Istio's labels, and nothing else.
    for (labels, _) in samples(&text_reviews, "istio_requests_total") {
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        let mut want = ISTIO_LABELS.to_vec();
        want.sort();
        assert_eq!(names, want);
    }
    // The histograms, with Envoy's buckets.
    assert_eq!(
        sum(
            &text_reviews,
            "istio_request_duration_milliseconds_count",
            &server
        ),
        n as f64
    );
    assert!(text_reviews.contains("le=\"0.5\"") && text_reviews.contains("le=\"3600000.0\""));
    assert_eq!(
        sum(&text_page, "istio_response_bytes_count", &client),
        n as f64
    );
    assert!(sum(&text_page, "istio_response_bytes_sum", &client) > 0.0);

    // What a dashboard asks Prometheus.
    let Some(prom) = prometheus(&[m.page_sidecar.admin, m.reviews_sidecar.admin]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let by_workload = "sum(istio_requests_total{reporter=\"destination\",destination_workload=\"reviews-v1\",source_workload=\"productpage-v1\"})";
    loop {
        if prom.query(by_workload).await == Some(n as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {n}:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The client's side, from the other target (scraped on its own schedule).
    let p50 = "histogram_quantile(0.5, sum by (le) (istio_request_duration_milliseconds_bucket{reporter=\"source\",destination_workload=\"reviews-v1\"}))";
    let p50 = loop {
        if let Some(v) = prom.query(p50).await.filter(|v| v.is_finite()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no p50 from Prometheus:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(p50 > 0.0 && p50 < 1000.0, "p50 {p50} ms");
}

/// `trellis control --dashboard --prometheus`: the control plane's page draws the service
/// graph from a real Prometheus that scrapes the sidecars (as Kiali does), beside the
/// registry's workloads and whether each sidecar holds an xDS stream.
#[tokio::test]
async fn the_control_planes_dashboard_draws_the_graph_from_prometheus() {
    use super::control::{sidecar, Workload, SERVICES};
    let _quiet = quiet().await;
    let prometheus_port = free_port();
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let reviews = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &reviews.entry(),
    )
    .unwrap();
    let _app = app_on("reviews-v1", &format!("127.0.0.1:{}", reviews.app), &[]);
    let dashboard = format!("127.0.0.1:{}", free_port());
    let c = control_with(&[
        "--config-dir",
        &mesh.path().display().to_string(),
        "--dashboard",
        &dashboard,
        "--prometheus",
        &format!("http://127.0.0.1:{prometheus_port}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let page_sidecar = sidecar(&c, &page, dir.path());
    let reviews_sidecar = sidecar(&c, &reviews, dir.path());
    let Some(_prometheus) = prometheus_on(
        prometheus_port,
        &[page_sidecar.admin, reviews_sidecar.admin],
    ) else {
        return;
    };
    // Traffic all along: a rate needs the counter to grow between two scrapes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let outbound = page.outbound;
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = send(
                    Req::get(&format!("http://127.0.0.1:{outbound}/reviews/1"))
                        .header("host", "reviews:9080"),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state: serde_json::Value =
            serde_json::from_str(&get(&format!("http://{dashboard}/api/state")).await.body)
                .unwrap_or_default();
        let edge = state["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["source"] == "productpage-v1" && e["destination"] == "reviews-v1");
        let connected = |name: &str| {
            state["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["id"] == name && n["xds_connected"] == true)
        };
        if edge.is_some_and(|e| e["rps"].as_f64() > Some(0.0) && e["mtls"] == true)
            && connected("productpage-v1")
            && connected("reviews-v1")
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed the edge: {state:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let node = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "reviews-v1")
        .unwrap();
    assert_eq!(
        node["identity"],
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    // The embedded CA's last certificate for that identity: a day from now, by default.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = node["cert_expiry"].as_f64().expect("a certificate expiry");
    assert!(
        expiry > now + 3600.0 && expiry < now + 2.0 * 86400.0,
        "{expiry} vs {now}"
    );
    assert_eq!(state["certificates"], true);
    // The page itself is served too.
    let page_html = get(&format!("http://{dashboard}/")).await;
    assert!(
        page_html.body.contains("Service graph"),
        "{}",
        page_html.body
    );
}

/// The Telemetry API's `metrics` overrides, as a user writes them: the server's side
/// stops recording the duration histogram, and the request count leaves
/// `source_principal` off (an empty value, which Prometheus stores as no label).
#[tokio::test]
async fn a_telemetry_resource_turns_a_metric_off_and_removes_a_label() {
    let _quiet = quiet().await;
    let telemetry = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  metrics:
    - providers: [{ name: prometheus }]
      overrides:
        - match: { metric: REQUEST_DURATION, mode: SERVER }
          disabled: true
        - match: { metric: REQUEST_COUNT }
          tagOverrides:
            source_principal: { operation: REMOVE }
"#;
    let m = super::policy::mesh(&[("telemetry.yaml", telemetry)]).await;
    let n = 5;
    for _ in 0..n {
        let r = send(
            Req::get(&format!("http://127.0.0.1:{}/reviews/1", m.page.outbound))
                .header("host", "reviews:9080"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let server = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_principal", ""),
        ("destination_workload", "reviews-v1"),
    ];
    let client = [
        ("reporter", "source"),
        ("destination_workload", "reviews-v1"),
    ];
    let (text_page, text_reviews) = scrape_when_counted(&m, &client, &server, n).await;
    assert!(
        !text_reviews.contains("istio_request_duration_milliseconds_bucket{"),
        "the server's side records no duration:\n{text_reviews}"
    );
    assert_eq!(
        sum(
            &text_page,
            "istio_request_duration_milliseconds_count",
            &client
        ),
        n as f64,
        "the client's side still does"
    );
    // Only the request count lost the label: the byte histograms keep it.
    assert_eq!(
        sum(
            &text_reviews,
            "istio_request_bytes_count",
            &[(
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/productpage"
            )]
        ),
        n as f64
    );
}
