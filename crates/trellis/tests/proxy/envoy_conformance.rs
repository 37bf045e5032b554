//! What a stock Envoy would make of Trellis's xDS: a client that subscribes as Envoy does
//! and checks every resource with Envoy's own classes and load-time rules
//! (`fixtures/envoy/conformance.py`, Python grpcio + xds-protos), against the control
//! plane serving a sidecar, a gateway and a proxyless client, over state of the world
//! and delta. Its problems are pinned here: those Trellis knows of (issue #26: no SDS
//! for the workload certificate and roots) and no other, so a new incompatibility fails the test and a fixed one updates it.

use super::control::{Workload, SERVICES};
use super::harness::*;
use std::collections::BTreeSet;

fn conformance(
    python: &str,
    xds: std::net::SocketAddr,
    node: &str,
    mode: &str,
) -> BTreeSet<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envoy/conformance.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([&xds.to_string(), node, mode, "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{node} {mode}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{node} {mode}:\n{stdout}");
    let mut problems = BTreeSet::new();
    let mut summary = None;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v.get("summary") {
            Some(s) => summary = Some(s.clone()),
            None => {
                problems.insert(format!(
                    "{}: {}",
                    v["where"].as_str().unwrap(),
                    v["problem"].as_str().unwrap()
                ));
            }
        }
    }
    let summary = summary.expect("a summary line");
    assert!(
        summary["Listener"].as_u64().unwrap() > 0,
        "{node} {mode}: no listeners: {summary}"
    );
    problems
}

#[tokio::test]
async fn a_client_subscribing_as_envoy_does_finds_only_the_known_gaps() {
    let _quiet = quiet().await;
    let Some(python) = super::control::python_with(
        "grpc, envoy.config.listener.v3.listener_pb2",
        "grpcio xds-protos",
    ) else {
        return;
    };
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
    let http = free_port();
    std::fs::write(
        mesh.path().join("policy.yaml"),
        format!(
            r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: reviews, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: reviews }} }}
  rules: [{{ from: [{{ source: {{ principals: ["cluster.local/ns/default/sa/productpage"] }} }}] }}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: ingressgateway, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ istio: ingressgateway }}, serviceAccount: ingressgateway }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: bookinfo, namespace: default }}
spec:
  selector: {{ istio: ingressgateway }}
  servers: [{{ port: {{ number: {http}, name: http, protocol: HTTP }}, hosts: ["*"] }}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: bookinfo, namespace: default }}
spec:
  hosts: ["*"]
  gateways: [bookinfo]
  http: [{{ route: [{{ destination: {{ host: productpage, port: {{ number: 9080 }} }} }}] }}]
"#
        ),
    )
    .unwrap();
    let c = control(mesh.path());
    let sidecar = reviews.node_id();
    let gateway = "router~127.0.0.1~ingressgateway.default~default.svc.cluster.local";
    let proxyless = "grpc~default~conformance";
    // #26: the workload certificate and roots are not served over SDS.
    let no_sds: BTreeSet<String> = [
        "load: Secret ROOTCA named but never served".to_string(),
        "load: Secret default named but never served".into(),
    ]
    .into();
    let known: Vec<(&str, BTreeSet<String>)> = vec![
        (sidecar.as_str(), no_sds.clone()),
        (gateway, no_sds),
        (proxyless, BTreeSet::new()),
    ];
    for mode in ["sotw", "delta"] {
        for (node, expected) in &known {
            let python = python.clone();
            let (xds, node_id, m) = (c.xds, node.to_string(), mode.to_string());
            let problems =
                tokio::task::spawn_blocking(move || conformance(&python, xds, &node_id, &m))
                    .await
                    .unwrap();
            assert_eq!(&problems, expected, "{node} over {mode}");
        }
    }
}
