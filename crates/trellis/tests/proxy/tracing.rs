//! Distributed tracing as Istio configures it, end to end: meshConfig names an
//! OpenTelemetry collector, a mesh-wide Telemetry resource turns tracing on, and a
//! request through four sidecars (a client's, then productpage → reviews → ratings, each
//! app calling the next and propagating the trace headers as Bookinfo's apps do) leaves
//! six spans in one trace at a real OTLP/gRPC receiver (the OpenTelemetry project's
//! protos under grpcio), each a child of the one before.

use super::control::{eventually, python_with, sidecar, Workload};
use super::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The OTLP receiver (`fixtures/otlp/receiver.py`), writing each span as a JSON line.
struct Receiver {
    proc: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Receiver {
    fn start(python: &str) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp/receiver.py");
        let ready = dir.path().join("ready.json");
        let proc = std::process::Command::new(python)
            .arg(script)
            .arg(&ready)
            .arg(dir.path().join("spans.jsonl"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let doc: Value = serde_json::from_str(&text).unwrap();
                break doc["port"].as_u64().unwrap() as u16;
            }
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver did not start: {}",
                std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver { proc, dir, port }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("spans.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace_id` once there are `n` of them.
    async fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of trace {trace_id}: {spans:#?}\nthe receiver's stderr: {}",
                spans.len(),
                std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn python() -> Option<String> {
    python_with(
        "grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        "grpcio opentelemetry-proto",
    )
}

fn service(name: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: {name}, namespace: default }}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 9080, name: http, protocol: HTTP }}]
  workloadSelector: {{ labels: {{ app: {name} }} }}
---
"#
    )
}

/// Istio's configuration of an OpenTelemetry collector (as istio.io's "OpenTelemetry"
/// task writes it), the collector itself outside the mesh on loopback.
/// With an access log provider too (JSON lines to `log`), named by the same Telemetry.
fn tracing_config(collector_port: u16, sampling: u32, log: &Path) -> String {
    let log = log.display();
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: istio, namespace: istio-system }}
data:
  mesh: |
    extensionProviders:
      - name: otel-tracing
        opentelemetry:
          port: {collector_port}
          service: opentelemetry-collector.observability.svc.cluster.local
      - name: json-log
        envoyFileAccessLog:
          path: {log}
          logFormat:
            labels:
              code: "%RESPONSE_CODE%"
              authority: "%REQ(:AUTHORITY)%"
              traceparent: "%REQ(TRACEPARENT)%"
              upstream_cluster: "%UPSTREAM_CLUSTER%"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: opentelemetry-collector, namespace: observability }}
spec:
  hosts: [opentelemetry-collector.observability.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{ number: {collector_port}, name: grpc-otlp, protocol: GRPC }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{ name: otel-demo, namespace: istio-system }}
spec:
  tracing:
    - providers: [{{ name: otel-tracing }}]
      randomSamplingPercentage: {sampling}
      customTags:
        team: {{ literal: {{ value: bookinfo }} }}
  accessLogging:
    - providers: [{{ name: json-log }}]
"#
    )
}

#[tokio::test]
async fn a_request_through_four_sidecars_is_one_trace_of_six_spans_at_the_collector() {
    let _quiet = quiet().await;
    let Some(python) = python() else {
        return;
    };
    let receiver = Receiver::start(&python);
    let mesh = tempfile::tempdir().unwrap();
    let client = Workload::new("client", "app: client, version: v1", "client");
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let reviews = Workload::new("reviews-v2", "app: reviews, version: v2", "reviews");
    let ratings = Workload::new("ratings-v1", "app: ratings, version: v1", "ratings");
    let services = ["productpage", "reviews", "ratings"].map(service).concat();
    std::fs::write(mesh.path().join("services.yaml"), services).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        [&client, &page, &reviews, &ratings]
            .map(|w| w.entry())
            .concat(),
    )
    .unwrap();
    std::fs::write(
        mesh.path().join("tracing.yaml"),
        tracing_config(receiver.port, 100, &mesh.path().join("access.log")),
    )
    .unwrap();
    let via = |w: &Workload| format!("127.0.0.1:{}", w.outbound);
    let app = |w: &Workload, call: Option<&str>| {
        let listen = format!("127.0.0.1:{}", w.app);
        let via = via(w);
        let mut extra = Vec::new();
        if let Some(url) = call {
            extra = vec!["--call", url, "--via", &via];
        }
        app_on(w.name, &listen, &extra)
    };
    let _apps = [
        app(&page, Some("http://reviews:9080/reviews/1")),
        app(&reviews, Some("http://ratings:9080/ratings/1")),
        app(&ratings, None),
    ];
    let control = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let sidecars: Vec<Proxy> = [&client, &page, &reviews, &ratings]
        .iter()
        .map(|w| sidecar(&control, w, dir.path()))
        .collect();
    // Until every sidecar serves the whole path (the inbound listeners come last):
    // reviews reaches ratings, then productpage reaches reviews.
    let ask = |host: &'static str| {
        send(
            Req::get(&format!("http://127.0.0.1:{}/{host}", client.outbound))
                .header("host", &format!("{host}:9080")),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for host in ["reviews", "productpage"] {
        loop {
            if let Ok(r) = ask(host).await {
                let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                if r.status == 200 && body["calls"][0]["status"] == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{host} never answered:\n{}",
                sidecars.iter().map(|s| s.proc.log()).collect::<String>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let r = ask("productpage").await.unwrap();
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["calls"][0]["served_by"], "reviews-v2", "{body:#}");

    // What productpage's app saw: a W3C and a B3 context of one trace.
    let seen = &body["headers"];
    let Some(traceparent) = seen["traceparent"].as_str().map(str::to_string) else {
        panic!(
            "no traceparent: {body:#}\n{}\n{}",
            sidecars[0].admin_get("/config_dump").await.body,
            control.ca.proc.log()
        );
    };
    let trace_id = traceparent.split('-').nth(1).unwrap().to_string();
    let app_parent = traceparent.split('-').nth(2).unwrap().to_string();
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    assert_eq!(seen["x-b3-traceid"], trace_id.as_str());
    assert_eq!(seen["x-b3-spanid"], app_parent.as_str());

    let spans = receiver.trace(&trace_id, 6).await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    // Each span's parent is the one before; the first is the trace's root.
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    let root: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] == "").collect();
    assert_eq!(root.len(), 1, "{spans:#?}");
    let mut chain = vec![root[0]];
    while let Some(child) = spans
        .iter()
        .find(|s| s["parent_span_id"] == chain.last().unwrap()["span_id"])
    {
        chain.push(child);
    }
    let path: Vec<(String, String, String)> = chain
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let host = |s: &str| format!("{s}.default.svc.cluster.local:9080/*");
    assert_eq!(
        path,
        vec![
            (
                "client.default".into(),
                "CLIENT".into(),
                host("productpage")
            ),
            (
                "productpage.default".into(),
                "SERVER".into(),
                host("productpage")
            ),
            (
                "productpage.default".into(),
                "CLIENT".into(),
                host("reviews")
            ),
            ("reviews.default".into(), "SERVER".into(), host("reviews")),
            ("reviews.default".into(), "CLIENT".into(), host("ratings")),
            ("ratings.default".into(), "SERVER".into(), host("ratings")),
        ],
        "{spans:#?}"
    );
    // The app's context is its inbound sidecar's span.
    assert_eq!(chain[1]["span_id"], app_parent.as_str());
    assert_eq!(by_id.len(), 6);
    // Envoy's and Istio's tags.
    let server = chain[3]["attributes"].clone();
    assert_eq!(server["http.method"], "GET");
    assert_eq!(server["http.status_code"], 200);
    assert_eq!(server["http.url"], "http://reviews:9080/reviews/1");
    assert_eq!(server["component"], "proxy");
    assert_eq!(server["istio.canonical_service"], "reviews");
    assert_eq!(server["istio.canonical_revision"], "v2");
    assert_eq!(server["istio.namespace"], "default");
    assert_eq!(server["team"], "bookinfo");
    assert_eq!(
        server["upstream_cluster"],
        "inbound|9080||".replace("9080", &reviews.inbound.to_string())
    );
    let client_span = chain[2]["attributes"].clone();
    assert_eq!(
        client_span["upstream_cluster"],
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert!(
        client_span["guid:x-request-id"].is_string(),
        "{client_span}"
    );
    for s in &chain {
        assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s}");
    }
    // A span ends after its children.
    assert!(chain[0]["end"].as_u64() >= chain[5]["end"].as_u64());

    // The Telemetry's access log: a JSON line per request per sidecar, which names the
    // trace (the request's traceparent as each sidecar forwarded it on).
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(mesh.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    eventually(
        "six access log lines of the trace",
        Duration::from_secs(5),
        async || {
            lines()
                .iter()
                .filter(|l| {
                    l["traceparent"]
                        .as_str()
                        .is_some_and(|t| t.contains(&trace_id))
                })
                .count()
                == 6
        },
    )
    .await;
    let ours: Vec<Value> = lines()
        .into_iter()
        .filter(|l| {
            l["traceparent"]
                .as_str()
                .is_some_and(|t| t.contains(&trace_id))
        })
        .collect();
    assert!(
        ours.iter().all(|l| l["code"] == 200 || l["code"] == "200"),
        "{ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| l["upstream_cluster"] == "outbound|9080||ratings.default.svc.cluster.local"),
        "{ours:#?}"
    );

    // A caller's own trace is continued, and its decision not to sample is kept.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/productpage", client.outbound))
            .header("host", "productpage:9080")
            .header("traceparent", &sampled),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let spans = receiver.trace(caller_trace, 6).await;
    let first = spans
        .iter()
        .find(|s| s["parent_span_id"] == "00f067aa0ba902b7")
        .expect("the client sidecar's span is a child of the caller's");
    assert_eq!(first["kind"], "CLIENT");
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = format!("00-{unsampled_trace}-b7ad6b7169203331-00");
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/productpage", client.outbound))
            .header("host", "productpage:9080")
            .header("traceparent", &unsampled),
    )
    .await
    .unwrap();
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let seen = body["headers"]["traceparent"].as_str().unwrap();
    assert!(
        seen.starts_with(&format!("00-{unsampled_trace}-")) && seen.ends_with("-00"),
        "{seen}"
    );
    // Every sidecar has exported what it had by now; none of that trace.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut total = 0.0;
        for s in &sidecars {
            let text = s.admin_get("/stats/prometheus").await.body;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("trellis_tracing_spans_exported_total "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        if total >= 12.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{total} spans exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s["trace_id"] != unsampled_trace),
        "an unsampled trace was recorded"
    );
    drop(receiver);
}
