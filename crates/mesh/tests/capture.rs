//! A captured workload's view (`sidecar.istio.io/interceptionMode: REDIRECT`): Istio's
//! listener shape, the outbound traffic policy, and what is refused.

use trellis_config::{Config, DiscoveryType};
use trellis_mesh::{generate, load_str, Loaded, Registry};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews.shop.svc.cluster.local]
  addresses: ["10.96.0.10", "fd00:96::10"]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db, namespace: shop }
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: ["10.96.0.20"]
  ports: [{ number: 5432, name: tcp-pg, protocol: TCP }]
  endpoints: [{ address: 10.1.0.9 }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: shop
  annotations: { sidecar.istio.io/interceptionMode: REDIRECT }
spec:
  address: 10.1.0.7
  ports: { http: 9080 }
  labels: { app: reviews }
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web
  namespace: shop
  annotations: { sidecar.trellis.dev/app-ports: "http=18000" }
spec:
  address: 127.0.0.1
  ports: { http: 28000 }
  labels: { app: web }
"#;

fn view(extra: &str, workload: &str) -> (Config, Loaded) {
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(extra, "extra.yaml", &mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "shop", workload).unwrap();
    (config, loaded)
}

#[test]
fn a_captured_sidecar_gets_istios_listener_shape() {
    let (c, _) = view("", "reviews-v1");
    let l = |name: &str| {
        c.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no listener {name}: {:?}",
                    c.listeners.iter().map(|l| &l.name).collect::<Vec<_>>()
                )
            })
    };
    let out = l("virtualOutbound");
    assert!(out.use_original_dst && out.bind_to_port);
    assert_eq!(out.addresses, ["0.0.0.0:15001", "[::]:15001"]);
    assert_eq!(out.tcp.as_ref().unwrap().cluster, "PassthroughCluster");
    let http = l("0.0.0.0_9080");
    assert!(!http.bind_to_port);
    let hosts = &http.http.as_ref().unwrap().virtual_hosts;
    assert!(
        hosts[0].domains.contains(&"10.96.0.10".to_string()),
        "{:?}",
        hosts[0].domains
    );
    assert!(hosts[0].domains.contains(&"[fd00:96::10]".to_string()));
    let last = hosts.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.domains.as_slice()),
        ("allow_any", &["*".to_string()][..])
    );
    let tcp = l("10.96.0.20_5432");
    assert!(!tcp.bind_to_port);
    assert_eq!(tcp.addresses, ["10.96.0.20:5432"]);
    let inbound = l("inbound|9080");
    assert!(!inbound.bind_to_port);
    assert_eq!(inbound.address.as_deref(), Some("10.1.0.7:9080"));
    let vin = l("virtualInbound");
    assert!(vin.use_original_dst);
    assert_eq!(
        vin.tcp.as_ref().unwrap().cluster,
        "InboundPassthroughCluster"
    );
    assert!(
        vin.tls.is_some(),
        "undeclared ports are under the workload's mTLS mode"
    );
    let cluster = |name: &str| c.clusters.iter().find(|c| c.name == name).unwrap();
    assert_eq!(
        cluster("PassthroughCluster").discovery,
        DiscoveryType::OriginalDst
    );
    assert_eq!(
        cluster("InboundPassthroughCluster").discovery,
        DiscoveryType::OriginalDst
    );
    // The app listens on the workload's own port; the sidecar forwards to it on loopback.
    assert_eq!(
        cluster("inbound|9080||").endpoints[0].address(),
        "127.0.0.1:9080"
    );

    // A sidecar its app uses as an HTTP proxy keeps its shape.
    let (web, _) = view("", "web");
    assert!(web
        .listeners
        .iter()
        .all(|l| !l.use_original_dst && l.bind_to_port));
    assert!(web.listeners.iter().any(|l| l.name == "outbound"));
}

#[test]
fn registry_only_from_a_sidecar_or_the_mesh_config_closes_the_passthrough() {
    for policy in [
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: default, namespace: shop }\nspec:\n  outboundTrafficPolicy: { mode: REGISTRY_ONLY }\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    ] {
        let (c, loaded) = view(policy, "reviews-v1");
        assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
        let out = c.listeners.iter().find(|l| l.name == "virtualOutbound").unwrap();
        assert_eq!(out.tcp.as_ref().unwrap().cluster, "BlackHoleCluster");
        let http = c.listeners.iter().find(|l| l.name == "0.0.0.0_9080").unwrap();
        let last = http.http.as_ref().unwrap().virtual_hosts.last().unwrap();
        assert_eq!(last.name, "block_all");
        assert_eq!(last.routes[0].direct_response.as_ref().unwrap().status, 502);
        // A Sidecar without egress listeners keeps every service visible.
        assert!(c.listeners.iter().any(|l| l.name == "10.96.0.20_5432"));
    }
}

#[test]
fn tproxy_and_unknown_interception_modes_are_refused() {
    for (mode, why) in [
        ("TPROXY", "TPROXY is not supported by Trellis"),
        ("redirect", "\"redirect\" is not REDIRECT, TPROXY or NONE"),
    ] {
        let mut loaded = Loaded::default();
        load_str(
            &format!("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w\n  namespace: shop\n  annotations: {{ sidecar.istio.io/interceptionMode: {mode} }}\nspec:\n  address: 10.1.0.8\n"),
            "w.yaml",
            &mut loaded,
        );
        assert_eq!(loaded.refused.len(), 1, "{mode}");
        assert!(
            loaded.refused[0].message.contains(why),
            "{}",
            loaded.refused[0].message
        );
    }
}

#[test]
fn undeclared_protocols_are_detected_by_captured_sidecars() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: shop }
spec:
  hosts: [web.shop.svc.cluster.local]
  addresses: ["10.96.0.30"]
  ports: [{ number: 8080, name: web }]
  workloadSelector: { labels: { app: web-captured } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-captured
  namespace: shop
  annotations: { sidecar.istio.io/interceptionMode: REDIRECT }
spec:
  address: 10.1.0.8
  ports: { web: 8080 }
  labels: { app: web-captured }
"#;
    let (c, loaded) = view(extra, "reviews-v1");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let vip = c
        .listeners
        .iter()
        .find(|l| l.name == "10.96.0.30_8080")
        .unwrap();
    assert_eq!(
        vip.tcp.as_ref().unwrap().cluster,
        "outbound|8080||web.shop.svc.cluster.local"
    );
    let hosts = &vip.http.as_ref().unwrap().virtual_hosts;
    assert_eq!(hosts[0].name, "web.shop.svc.cluster.local:8080");
    let (server, _) = view(extra, "web-captured");
    let inbound = server
        .listeners
        .iter()
        .find(|l| l.name == "inbound|8080")
        .unwrap();
    assert!(
        inbound.http.is_some() && inbound.tcp.is_some(),
        "{inbound:?}"
    );
    // A sidecar used as an HTTP proxy keeps such a port TCP.
    let (web, _) = view(extra, "web");
    let outbound = web.listeners.iter().find(|l| l.name == "outbound").unwrap();
    assert!(outbound
        .http
        .as_ref()
        .unwrap()
        .virtual_hosts
        .iter()
        .all(|vh| !vh.name.starts_with("web.")));
}

#[test]
fn port_names_say_the_protocol_as_istio_reads_them() {
    use trellis_mesh::Protocol;
    for (declared, name, want) in [
        (None, "http-web", Protocol::Http),
        (None, "http2", Protocol::Http2),
        (None, "grpc-api", Protocol::Grpc),
        (None, "https", Protocol::Tls),
        (None, "tls-api", Protocol::Tls),
        (None, "tcp-db", Protocol::Tcp),
        (None, "mysql", Protocol::Tcp),
        (None, "web", Protocol::Auto),
        (None, "", Protocol::Auto),
        (Some("HTTP"), "web", Protocol::Http),
        (Some("TLS"), "http", Protocol::Tls),
        (Some("HTTPS"), "web", Protocol::Tls),
        (Some("kubernetes.io/h2c"), "web", Protocol::Http2),
        (Some("kubernetes.io/wss"), "web", Protocol::Tcp),
    ] {
        assert_eq!(Protocol::parse(declared, name), want, "{declared:?} {name}");
    }
}

#[test]
fn a_captured_sidecar_routes_tls_service_entries_by_sni() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: external-apis, namespace: shop }
spec:
  hosts: [api.example.com, "*.wikipedia.org"]
  ports: [{ number: 443, name: https, protocol: HTTPS }]
  resolution: NONE
"#;
    let (c, loaded) = view(extra, "reviews-v1");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let l = c
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_443")
        .unwrap();
    assert!(!l.bind_to_port);
    let names: Vec<&[String]> = l
        .sni_routes
        .iter()
        .map(|r| r.server_names.as_slice())
        .collect();
    assert_eq!(
        names,
        [
            ["api.example.com".to_string()],
            ["*.wikipedia.org".to_string()]
        ]
    );
    // Other names go where the app was connecting (ALLOW_ANY).
    assert_eq!(l.tcp.as_ref().unwrap().cluster, "PassthroughCluster");
}

/// A captured sidecar's outbound listeners (one per service port, shared by its scope)
/// trace and log as its Telemetry says, as its own outbound listener does: HTTP ones
/// both, TCP ones the access log; the virtual outbound listener logs too.
#[test]
fn a_captured_sidecars_outbound_listeners_trace_and_log() {
    let telemetry = r#"apiVersion: v1
kind: ConfigMap
metadata: { name: istio, namespace: istio-system }
data:
  mesh: |
    accessLogFile: /dev/stdout
    extensionProviders:
      - name: otel
        opentelemetry: { service: otel.shop.svc.cluster.local, port: 4317 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: otel, namespace: shop }
spec:
  hosts: [otel.shop.svc.cluster.local]
  ports: [{ number: 4317, name: grpc, protocol: GRPC }]
  endpoints: [{ address: 10.1.0.99 }]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  tracing: [{ providers: [{ name: otel }], randomSamplingPercentage: 5 }]
"#;
    let (c, loaded) = view(telemetry, "reviews-v1");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let l = |name: &str| c.listeners.iter().find(|l| l.name == name).unwrap();
    let http = l("0.0.0.0_9080").http.as_ref().unwrap();
    let tracing = http.tracing.as_ref().expect("the port's listener traces");
    assert_eq!(tracing.span_kind, trellis_config::SpanKind::Client);
    assert_eq!(tracing.random_sampling, 5.0);
    assert_eq!(http.access_log.as_ref().unwrap().path, "/dev/stdout");
    for tcp in ["10.96.0.20_5432", "virtualOutbound"] {
        let t = l(tcp).tcp.as_ref().unwrap();
        assert_eq!(t.access_log.as_ref().unwrap().path, "/dev/stdout", "{tcp}");
    }
    // The server's side: its inbound listener and the passthrough for undeclared ports.
    assert!(l("virtualInbound")
        .tcp
        .as_ref()
        .unwrap()
        .access_log
        .is_some());
}
