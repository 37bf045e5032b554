//! What a stock Envoy would make of Trellis's xDS: a client that subscribes as Envoy does
//! and checks every resource with Envoy's own classes and load-time rules
//! (`fixtures/envoy/conformance.py`, Python grpcio + xds-protos), over state of the world
//! and delta, NACKs and reconnects. A sidecar and a gateway are reached the way an Envoy
//! is deployed beside `trellis agent`: from the bootstrap the agent writes, xDS through
//! the agent's socket (carried to the control plane over mutual TLS) and the workload
//! certificate and roots over SDS on the agent's other socket; a proxyless client
//! connects to the control plane directly. Every one must be free of problems.

use super::agent::{agent, agent_in};
use super::control::{Workload, SERVICES};
use super::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The conformance client over `mode` against each target (an xDS address and a node
/// id, or the bootstrap an agent wrote and `-`): each target's problems, and a problem
/// for a target that got no listener.
fn conformance(
    python: &str,
    mode: &str,
    targets: &[(String, String)],
) -> BTreeMap<String, BTreeSet<String>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envoy/conformance.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([mode, "10"])
        .args(targets.iter().flat_map(|(t, n)| [t, n]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{mode}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{mode}:\n{stdout}");
    let mut problems: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut summaries = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = v["target"].as_str().unwrap().to_string();
        let mine = problems.entry(target).or_default();
        match v.get("summary") {
            Some(s) => {
                summaries += 1;
                if s["Listener"].as_u64() == Some(0) {
                    mine.insert(format!("no listeners: {s}"));
                }
            }
            None => {
                mine.insert(format!(
                    "{}: {}",
                    v["where"].as_str().unwrap(),
                    v["problem"].as_str().unwrap()
                ));
            }
        }
    }
    assert_eq!(summaries, targets.len(), "a summary per target: {stdout}");
    problems.retain(|_, p| !p.is_empty());
    problems
}

/// A Python with grpcio and xds-protos (see `control::python_with`).
fn python() -> Option<String> {
    super::control::python_with(
        "grpc, envoy.config.listener.v3.listener_pb2",
        "grpcio xds-protos",
    )
}

#[tokio::test]
async fn a_client_subscribing_as_envoy_does_finds_no_problem() {
    let _quiet = quiet().await;
    let Some(python) = python() else {
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
    // Tracing and access logs as Istio's users configure them: the HCMs carry Envoy's
    // OpenTelemetry tracer and file access logger, which Envoy's classes must decode.
    std::fs::write(
        mesh.path().join("telemetry.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata: { name: istio, namespace: istio-system }
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    extensionProviders:
      - name: otel
        opentelemetry: { service: otel.observability.svc.cluster.local, port: 4317 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: otel, namespace: observability }
spec:
  hosts: [otel.observability.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{ number: 4317, name: grpc, protocol: GRPC }]
  endpoints: [{ address: 127.0.0.1 }]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  tracing: [{ providers: [{ name: otel }], randomSamplingPercentage: 10 }]
"#,
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
            agents.push(agent(&c, name, account, router, mode == "sotw", &[]));
        }
        let mut targets = bootstraps(&agents);
        targets.push((c.xds.to_string(), proxyless.to_string()));
        let (python, m) = (python.clone(), mode.to_string());
        let problems = tokio::task::spawn_blocking(move || conformance(&python, &m, &targets))
            .await
            .unwrap();
        assert_none(mode, &problems, &agents);
    }
}

/// Each agent's bootstrap as a conformance target (the node id is the bootstrap's).
fn bootstraps(agents: &[(Proc, PathBuf)]) -> Vec<(String, String)> {
    agents
        .iter()
        .map(|(_, b)| (b.display().to_string(), "-".to_string()))
        .collect()
}

fn assert_none(
    mode: &str,
    problems: &BTreeMap<String, BTreeSet<String>>,
    agents: &[(Proc, PathBuf)],
) {
    let logs: String = agents.iter().map(|(p, _)| p.log()).collect();
    assert!(
        problems.is_empty(),
        "over {mode}: {problems:#?}\nagents' logs:\n{logs}"
    );
}

/// The bookinfo example's Istio config (`examples/bookinfo/istio`, verbatim) over a
/// registry like the one `trellis up` writes for it, grown with generated services of a
/// second namespace: TCP ports, an external host, subsets with ISTIO_MUTUAL, a TLS
/// gateway with a Secret's credentials, and TCP authorization with a dry-run policy.
fn bookinfo_and_more(dir: &std::path::Path) {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo/istio");
    for f in std::fs::read_dir(&example).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let mut registry = String::new();
    let mut port = 20000;
    let mut hosts = 0;
    // As `trellis up` declares them: bookinfo's sidecars on loopback with their app and
    // outbound ports, the generated ones on hosts of their own with traffic captured
    // (`up --netns`, and an Envoy sidecar's usual deployment).
    let mut workload = |name: &str, ns: &str, labels: &str, sa: &str, proto: &str| {
        port += 1;
        let (address, annotations, inbound) = if ns == "default" {
            (
                "127.0.0.1".to_string(),
                format!(
                    "sidecar.trellis.dev/app-ports: \"{proto}={}\", sidecar.trellis.dev/outbound: \"127.0.0.1:{}\"",
                    port + 1000,
                    port + 2000
                ),
                port,
            )
        } else {
            hosts += 1;
            (
                format!("10.9.{}.{}", hosts / 200, hosts % 200 + 1),
                "sidecar.istio.io/interceptionMode: REDIRECT".to_string(),
                if proto == "tcp" { 5432 } else { 8080 },
            )
        };
        registry += &format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: {name}, namespace: {ns}, annotations: {{ {annotations} }} }}\nspec:\n  address: {address}\n  ports: {{ {proto}: {inbound} }}\n  labels: {{ {labels} }}\n  serviceAccount: {sa}\n---\n"
        );
    };
    for (service, versions) in [
        ("productpage", 1),
        ("reviews", 3),
        ("ratings", 1),
        ("details", 1),
    ] {
        for v in 1..=versions {
            workload(
                &format!("{service}-v{v}"),
                "default",
                &format!("app: {service}, version: v{v}"),
                service,
                "http",
            );
        }
    }
    workload(
        "ingressgateway",
        "default",
        "istio: ingressgateway",
        "ingressgateway",
        "http",
    );
    workload(
        "bookinfo-gateway",
        "default",
        "gateway.networking.k8s.io/gateway-name: bookinfo-gateway",
        "bookinfo-gateway",
        "http",
    );
    workload("edge", "shop", "istio: edge", "edge", "http");
    let mut services = String::new();
    for service in ["productpage", "reviews", "ratings", "details"] {
        services += &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {service}, namespace: default }}\nspec:\n  hosts: [{service}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: 9080, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: {service} }} }}\n---\n"
        );
    }
    // The generated part: a second namespace of HTTP and TCP services.
    for i in 0..24 {
        let (proto, number) = if i % 2 == 0 {
            ("HTTP", 8080)
        } else {
            ("TCP", 5432)
        };
        let name = format!("svc-{i}");
        services += &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {name}, namespace: shop }}\nspec:\n  hosts: [{name}.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: {number}, name: {p}, protocol: {proto} }}]\n  workloadSelector: {{ labels: {{ app: {name} }} }}\n---\n",
            p = proto.to_lowercase()
        );
        for v in 1..=2 {
            workload(
                &format!("{name}-v{v}"),
                "shop",
                &format!("app: {name}, version: v{v}"),
                &name,
                &proto.to_lowercase(),
            );
        }
    }
    services += r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: payments, namespace: shop }
spec:
  hosts: [api.payments.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{ number: 443, name: tls, protocol: TLS }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: svc-0, namespace: shop }
spec:
  host: svc-0.shop.svc.cluster.local
  trafficPolicy: { tls: { mode: ISTIO_MUTUAL }, connectionPool: { tcp: { maxConnections: 100 } } }
  subsets: [{ name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc-0, namespace: shop }
spec:
  hosts: [svc-0.shop.svc.cluster.local]
  http:
    - match: [{ headers: { x-canary: { exact: "1" } } }]
      route: [{ destination: { host: svc-0.shop.svc.cluster.local, subset: v2 } }]
      retries: { attempts: 2, perTryTimeout: 1s }
    - route: [{ destination: { host: svc-0.shop.svc.cluster.local, subset: v1 }, weight: 90 }, { destination: { host: svc-0.shop.svc.cluster.local, subset: v2 }, weight: 10 }]
      timeout: 3s
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: svc-1, namespace: shop }
spec:
  selector: { matchLabels: { app: svc-1 } }
  rules: [{ from: [{ source: { namespaces: [shop], principals: ["cluster.local/ns/shop/sa/*"] } }], to: [{ operation: { ports: ["5432"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: svc-1-audit, namespace: shop, annotations: { istio.io/dry-run: "true" } }
spec:
  selector: { matchLabels: { app: svc-1 } }
  action: DENY
  rules: [{ from: [{ source: { ipBlocks: ["10.0.0.0/8"] } }], when: [{ key: destination.port, values: ["5432"] }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: svc-2, namespace: shop }
spec:
  selector: { matchLabels: { app: svc-2 } }
  rules:
    - to: [{ operation: { methods: [GET], paths: ["/api/*", "/items/{*}"], notHosts: [internal.example] } }]
      when: [{ key: "request.headers[x-team]", values: [blue, "green*"] }, { key: source.namespace, values: [shop, default] }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: edge, namespace: shop }
spec:
  selector: { istio: edge }
  servers:
    - port: { number: 8443, name: https, protocol: HTTPS }
      hosts: ["*/shop.example.test"]
      tls: { mode: SIMPLE, credentialName: shop-credential }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: edge, namespace: shop }
spec:
  hosts: [shop.example.test]
  gateways: [edge]
  http: [{ route: [{ destination: { host: svc-2.shop.svc.cluster.local, port: { number: 8080 } } }] }]
"#;
    std::fs::write(dir.join("registry.yaml"), registry).unwrap();
    std::fs::write(dir.join("services.yaml"), services).unwrap();
    let pki = super::pki::Pki::new("shop");
    let leaf = pki.leaf("shop", &["DNS:shop.example.test"], false);
    let secret = super::gateway::tls_secret("shop-credential", &leaf, None)
        .replace("namespace: default", "namespace: shop");
    std::fs::write(dir.join("secret.yaml"), secret).unwrap();
}

#[tokio::test]
async fn bookinfo_and_a_larger_generated_mesh_have_no_problem_for_envoy() {
    let _quiet = quiet().await;
    let Some(python) = python() else {
        return;
    };
    let mesh = tempfile::tempdir().unwrap();
    bookinfo_and_more(mesh.path());
    let out = std::process::Command::new(BIN)
        .args(["control", "--check", "--config-dir"])
        .arg(mesh.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the mesh is accepted whole: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = control(mesh.path());
    // (workload, namespace, service account, gateway)
    let nodes = [
        ("productpage-v1", "default", "productpage", false),
        ("reviews-v2", "default", "reviews", false),
        ("details-v1", "default", "details", false),
        ("ingressgateway", "default", "ingressgateway", true),
        ("bookinfo-gateway", "default", "bookinfo-gateway", true),
        ("svc-1-v1", "shop", "svc-1", false),
        ("svc-2-v1", "shop", "svc-2", false),
        ("edge", "shop", "edge", true),
    ];
    // Both modes at once, an agent per node for each.
    let mut runs = Vec::new();
    for mode in ["sotw", "delta"] {
        let agents: Vec<_> = nodes
            .iter()
            .map(|(name, ns, account, router)| {
                agent_in(&c, name, ns, account, *router, mode == "sotw", &[])
            })
            .collect();
        let targets = bootstraps(&agents);
        let (python, m) = (python.clone(), mode.to_string());
        let run = tokio::task::spawn_blocking(move || conformance(&python, &m, &targets));
        runs.push((mode, agents, run));
    }
    for (mode, agents, run) in runs {
        assert_none(mode, &run.await.unwrap(), &agents);
    }
}
