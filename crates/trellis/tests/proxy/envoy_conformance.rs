//! What a stock Envoy would make of Trellis's xDS: a client that subscribes as Envoy does
//! and checks every resource with Envoy's own classes and load-time rules
//! (`fixtures/envoy/conformance.py`, Python grpcio + xds-protos), over state of the world
//! and delta, NACKs and reconnects. A sidecar and a gateway are reached the way an Envoy
//! is deployed beside `trellis agent`: from the bootstrap the agent writes, xDS through
//! the agent's socket (carried to the control plane over mutual TLS) and the workload
//! certificate and roots over SDS on the agent's other socket; a proxyless client
//! connects to the control plane directly. Every one must be free of problems.

use super::control::{Workload, SERVICES};
use super::harness::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The conformance client against `target` (an xDS address, or the bootstrap an agent
/// wrote) as node `node` (`-`: the bootstrap's).
fn conformance(python: &str, target: &str, node: &str, mode: &str) -> BTreeSet<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envoy/conformance.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([target, node, mode, "10"])
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
    if summary["Listener"].as_u64() == Some(0) {
        problems.insert(format!("no listeners: {summary}"));
    }
    problems
}

#[tokio::test]
async fn a_client_subscribing_as_envoy_does_finds_no_problem() {
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
    let proxyless = "grpc~default~conformance";
    for mode in ["sotw", "delta"] {
        // An agent for the sidecar and one for the gateway, with the bootstrap each
        // writes for its Envoy.
        let mut agents = Vec::new();
        for (name, account, router) in [
            (reviews.name, "reviews", false),
            ("ingressgateway", "ingressgateway", true),
        ] {
            agents.push(agent(&c, name, account, router, mode == "sotw"));
        }
        let mut targets: Vec<(String, String)> = agents
            .iter()
            .map(|(_, bootstrap)| (bootstrap.display().to_string(), "-".to_string()))
            .collect();
        targets.push((c.xds.to_string(), proxyless.to_string()));
        for (target, node) in targets {
            let (python, m) = (python.clone(), mode.to_string());
            let (t, n) = (target.clone(), node.clone());
            let problems = tokio::task::spawn_blocking(move || conformance(&python, &t, &n, &m))
                .await
                .unwrap();
            let logs: String = agents.iter().map(|(p, _)| p.log()).collect();
            assert_eq!(
                problems,
                BTreeSet::new(),
                "{target} ({node}) over {mode}; agents' logs:\n{logs}"
            );
        }
    }
}

/// `trellis agent` for workload `name` with a token for service account `account`; the
/// bootstrap it writes.
fn agent(c: &Control, name: &str, account: &str, router: bool, sotw: bool) -> (Proc, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = c.ca.root_file(dir.path());
    let token = c.ca.token_file(
        dir.path(),
        &format!("spiffe://cluster.local/ns/default/sa/{account}"),
    );
    let sockets = dir.path().join("run");
    let bootstrap = sockets.join("envoy.json");
    let ca = c.ca.addr.to_string();
    let sockets_arg = sockets.display().to_string();
    let mut args = vec![
        "agent",
        "--control",
        &ca,
        "--ca-root",
        &root,
        "--token-file",
        &token,
        "--name",
        name,
        "--dir",
        &sockets_arg,
    ];
    if router {
        args.push("--router");
    }
    if sotw {
        args.push("--xds-sotw");
    }
    let mut p = Proc::spawn(&args, dir);
    // The bootstrap is written at start; the certificate comes after, and the agent's
    // sockets wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !bootstrap.exists() {
        assert!(
            p.wait_exit(std::time::Duration::from_millis(20)).is_none(),
            "the agent exited:\n{}",
            p.log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no bootstrap:\n{}",
            p.log()
        );
    }
    (p, bootstrap)
}
