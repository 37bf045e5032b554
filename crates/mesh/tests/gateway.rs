//! Istio Gateways: what is refused, which VirtualServices bind where, and a gateway
//! proxy's listeners.

use trellis_mesh::{gateway::generate_gateway, generate, load_str, Loaded, Registry};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews.shop.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: gw, namespace: edge }
spec: { address: 10.0.0.1, labels: { istio: ingressgateway } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web
  namespace: shop
  annotations: { sidecar.trellis.dev/app-ports: "http=18000" }
spec: { address: 127.0.0.1, ports: { http: 28000 }, labels: { app: web } }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: public, namespace: edge }
spec:
  selector: { istio: ingressgateway }
  servers:
    - port: { number: 80, name: http, protocol: HTTP }
      hosts: ["shop/*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop, namespace: shop }
spec:
  hosts: [shop.example.com, reviews]
  gateways: [edge/public]
  http:
    - route: [{ destination: { host: reviews, port: { number: 9080 } } }]
      headers: { response: { add: { x-via: gateway } } }
"#;

fn load(extra: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(extra, "extra.yaml", &mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    loaded
}

#[test]
fn a_gateway_serves_the_hosts_its_servers_admit_of_the_virtual_services_bound_to_it() {
    let loaded = load("");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate_gateway(&loaded.inputs, &registry, "edge", "gw").unwrap();
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.name, "0.0.0.0_80");
    assert!(l.bind_to_port && !l.use_original_dst);
    let hosts = &l.http.as_ref().unwrap().virtual_hosts;
    // `reviews` is not a host the server admits (shop/*.example.com).
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["shop.example.com:80"]);
    assert!(c
        .clusters
        .iter()
        .any(|c| c.name == "outbound|9080||reviews.shop.svc.cluster.local"));

    // The VirtualService is bound to the gateway only: the sidecars' routes to reviews
    // are the default ones.
    let web = generate(&loaded.inputs, &registry, "shop", "web").unwrap();
    let out = web.listeners.iter().find(|l| l.name == "outbound").unwrap();
    let vh = out
        .http
        .as_ref()
        .unwrap()
        .virtual_hosts
        .iter()
        .find(|v| v.name.starts_with("reviews."))
        .unwrap();
    assert!(
        vh.routes
            .iter()
            .all(|r| r.response_headers_to_add.is_empty()),
        "{vh:?}"
    );
}

#[test]
fn what_a_gateway_cannot_honour_is_refused_by_field() {
    for (server, says) in [
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com] }", "tls: server must have TLS settings for HTTPS/TLS protocols"),
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: SIMPLE, credentialName: a-cert, serverCertificate: /c, privateKey: /k } }", "only one of credentialName or serverCertificate/privateKey"),
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: SIMPLE, credentialNames: [a-rsa, a-ecdsa] } }", "credentialNames: several credentials per server are not supported"),
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: ISTIO_MUTUAL, serverCertificate: /c } }", "tls.serverCertificate: ISTIO_MUTUAL TLS cannot have associated serverCertificate"),
        ("{ port: { number: 9000, name: tcp, protocol: TCP }, hosts: [a.example.com], tls: { mode: SIMPLE, serverCertificate: /c, privateKey: /k } }", "server cannot have TLS settings for non HTTPS/TLS ports"),
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: OPTIONAL_MUTUAL, serverCertificate: /c, privateKey: /k } }", "tls.caCertificates: required for OPTIONAL_MUTUAL when credentialName is not set"),
        ("{ port: { number: 80, name: http, protocol: HTTP }, hosts: [a.example.com], bind: 10.0.0.1 }", "bind: not supported"),
        ("{ port: { number: 80, name: http, protocol: HTTP }, hosts: [a/b/c] }", "is not <host> or <namespace>/<host>"),
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: SIMPLE, serverCertificate: /c, privateKey: /k, cipherSuites: [not-a-cipher-suite] } }", "cipherSuites: none of [\"not-a-cipher-suite\"] is a cipher suite Istio knows"),
        // A field Trellis does not read would be a pinning left unenforced: refused.
        ("{ port: { number: 443, name: https, protocol: HTTPS }, hosts: [a.example.com], tls: { mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, verifyCertificateHash: [ab12] } }", "spec.servers[0].tls.verifyCertificateHash is not supported"),
    ] {
        let loaded = load(&format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{ name: bad, namespace: edge }}\nspec:\n  selector: {{ istio: ingressgateway }}\n  servers: [{server}]\n"
        ));
        assert_eq!(loaded.refused.len(), 1, "{server}: {:?}", loaded.refused);
        assert!(loaded.refused[0].message.contains(says), "{server}: {}", loaded.refused[0].message);
    }
}

#[test]
fn a_route_matching_another_port_is_left_out_of_a_gateway_listener() {
    let loaded = load(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: admin, namespace: shop }\nspec:\n  hosts: [admin.example.com]\n  gateways: [edge/public]\n  http:\n    - match: [{ port: 8443 }]\n      route: [{ destination: { host: reviews } }]\n    - match: [{ port: 80, uri: { prefix: /status } }]\n      route: [{ destination: { host: reviews } }]\n",
    );
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate_gateway(&loaded.inputs, &registry, "edge", "gw").unwrap();
    let hosts = &c.listeners[0].http.as_ref().unwrap().virtual_hosts;
    let admin = hosts
        .iter()
        .find(|h| h.name == "admin.example.com:80")
        .unwrap();
    assert_eq!(admin.routes.len(), 1, "{admin:?}");
    assert_eq!(admin.routes[0].matches.prefix.as_deref(), Some("/status"));
}

#[test]
fn a_port_is_plaintext_or_https_never_both() {
    // Within one Gateway.
    let loaded = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: mixed, namespace: edge }\nspec:\n  selector: { istio: other }\n  servers:\n    - { port: { number: 8443, name: a, protocol: HTTP }, hosts: [a.example.com] }\n    - { port: { number: 8443, name: b, protocol: HTTPS }, hosts: [b.example.com], tls: { mode: SIMPLE, serverCertificate: /c, privateKey: /k } }\n");
    assert_eq!(loaded.refused.len(), 1, "{:?}", loaded.refused);
    assert!(
        loaded.refused[0]
            .message
            .contains("8443 is HTTPS here but plaintext HTTP in servers[0]"),
        "{}",
        loaded.refused[0].message
    );
    // Across Gateways on the same proxies: the later is refused, the first serves on.
    let loaded = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: secure, namespace: edge }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n    - { port: { number: 80, name: https, protocol: HTTPS }, hosts: [b.example.com], tls: { mode: SIMPLE, serverCertificate: /c, privateKey: /k } }\n");
    assert_eq!(loaded.refused.len(), 1, "{:?}", loaded.refused);
    assert!(
        loaded.refused[0]
            .message
            .contains("port 80 is HTTPS here but plaintext HTTP in Gateway edge/public"),
        "{}",
        loaded.refused[0].message
    );
    assert_eq!(loaded.inputs.gateways.len(), 1);
}

const PASSTHROUGH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: nginx, namespace: shop }
spec:
  hosts: [nginx.example.com, www.example.com]
  ports: [{ number: 443, name: https, protocol: TLS }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { https: 18443 } }]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db, namespace: shop }
spec:
  hosts: [db.example.com]
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { tcp: 15432 } }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: edge-l4, namespace: edge }
spec:
  selector: { istio: ingressgateway }
  servers:
    - port: { number: 443, name: tls, protocol: TLS }
      hosts: ["*.example.com"]
      tls: { mode: PASSTHROUGH }
    - port: { number: 5432, name: tcp, protocol: TCP }
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: nginx, namespace: shop }
spec:
  hosts: [nginx.example.com, www.example.com, other.org]
  gateways: [edge/edge-l4]
  tls:
    - match: [{ sniHosts: [nginx.example.com, other.org], port: 443 }]
      route: [{ destination: { host: nginx.example.com } }]
    - match: [{ sniHosts: [www.example.com], port: 8443 }]
      route: [{ destination: { host: nginx.example.com } }]
  tcp:
    - route:
        - { destination: { host: db.example.com }, weight: 90 }
        - { destination: { host: nginx.example.com }, weight: 10 }
"#;

#[test]
fn tls_routes_become_sni_routes_and_tcp_routes_a_tcp_proxy_on_a_gateway() {
    let loaded = load(PASSTHROUGH);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate_gateway(&loaded.inputs, &registry, "edge", "gw").unwrap();
    c.check("gateway").unwrap();
    let l = c
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_443")
        .unwrap();
    assert!(
        l.tls.is_none() && l.http.is_none() && l.tcp.is_none(),
        "{l:?}"
    );
    // other.org is not a host the server admits; the 8443 match is for another port.
    assert_eq!(l.sni_routes.len(), 1, "{:?}", l.sni_routes);
    assert_eq!(l.sni_routes[0].server_names, ["nginx.example.com"]);
    assert_eq!(
        l.sni_routes[0].tcp.cluster,
        "outbound|443||nginx.example.com"
    );
    let db = c
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_5432")
        .unwrap();
    let weights: Vec<(&str, u32)> = db
        .tcp
        .as_ref()
        .unwrap()
        .weighted_clusters
        .iter()
        .map(|w| (w.name.as_str(), w.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|5432||db.example.com", 90),
            ("outbound|443||nginx.example.com", 10)
        ]
    );
}

#[test]
fn tls_and_tcp_routes_are_checked_as_istio_does_and_refused_for_sidecars() {
    let vs = |spec: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: v, namespace: shop }}\nspec:\n{spec}")
    };
    for (spec, says) in [
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tls: [{ route: [{ destination: { host: a.example.com } }] }]\n", "spec.tls[0].match: TLS route must have at least one match condition"),
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tls: [{ match: [{ port: 443 }], route: [{ destination: { host: a.example.com } }] }]\n", "spec.tls[0].match[0].sniHosts: TLS match must have at least one SNI host"),
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tls: [{ match: [{ sniHosts: [b.example.com] }], route: [{ destination: { host: a.example.com } }] }]\n", "SNI host \"b.example.com\" is not a compatible subset of any of the virtual service hosts"),
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tls: [{ match: [{ sniHosts: [a.example.com] }] }]\n", "spec.tls[0].route: TLS route is required"),
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tcp: [{ match: [{ port: 5432 }] }]\n", "spec.tcp[0].route: TCP route is required"),
        ("  hosts: [a.example.com]\n  gateways: [edge/edge-l4]\n  tcp: [{ match: [{ sourceLabels: { app: a } }], route: [{ destination: { host: a.example.com } }] }]\n", "spec.tcp[0].match[0].sourceLabels: not supported by Trellis yet"),
        ("  hosts: [a.example.com]\n  tcp: [{ route: [{ destination: { host: a.example.com } }] }]\n", "spec.tcp: TCP routes for sidecars (gateways: mesh) are not supported by Trellis yet"),
        ("  hosts: [a.example.com]\n  gateways: [mesh, edge/edge-l4]\n  tls: [{ match: [{ sniHosts: [a.example.com] }], route: [{ destination: { host: a.example.com } }] }]\n", "spec.tls: TLS (SNI) routes for sidecars"),
    ] {
        let loaded = load(&vs(spec));
        assert_eq!(loaded.refused.len(), 1, "{spec}: {:?}", loaded.refused);
        assert!(loaded.refused[0].message.contains(says), "{spec}: {}", loaded.refused[0].message);
    }
    // A wildcard VirtualService host admits SNI hosts under it (Istio's SubsetOf).
    let loaded = load(&vs("  hosts: [\"*.example.com\"]\n  gateways: [edge/edge-l4]\n  tls: [{ match: [{ sniHosts: [a.example.com, \"*.b.example.com\"] }], route: [{ destination: { host: a.example.com } }] }]\n"));
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
}

#[test]
fn cipher_suites_are_filtered_as_istio_filters_them_and_offered() {
    let loaded = load(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: front, namespace: edge }\nspec:\n  selector: { istio: edgegateway }\n  servers:\n    - port: { number: 443, name: https, protocol: HTTPS }\n      hosts: [a.example.com]\n      tls: { mode: SIMPLE, serverCertificate: /c, privateKey: /k, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, not-a-cipher-suite, ECDHE-RSA-AES128-GCM-SHA256, -AES128-SHA] }\n",
    );
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let warned: Vec<_> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(
        warned.iter().any(|w| w.contains("servers[0].tls.cipherSuites: ignoring invalid or duplicate cipher suites [\"not-a-cipher-suite\", \"ECDHE-RSA-AES128-GCM-SHA256\"]")),
        "{warned:?}"
    );
    let gw = loaded
        .inputs
        .gateways
        .iter()
        .find(|g| g.name == "front")
        .unwrap();
    let tls = gw.spec.servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.cipher_suites().0,
        ["ECDHE-RSA-AES128-GCM-SHA256", "-AES128-SHA"]
    );
}

/// Servers on one port share its handshake: SIMPLE beside MUTUAL would serve the MUTUAL
/// host without asking for a client certificate (or the other way round), so it is refused,
/// in one Gateway and across two on the same proxies; the first Gateway keeps serving.
#[test]
fn servers_sharing_a_port_must_share_its_handshake() {
    let server = |host: &str, tls: &str| {
        format!("    - port: {{ number: 443, name: https-{host}, protocol: HTTPS }}\n      hosts: [{host}.example.com]\n      tls: {{ {tls} }}\n")
    };
    let simple = "mode: SIMPLE, serverCertificate: /c, privateKey: /k";
    let gateway = |name: &str, servers: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{ name: {name}, namespace: edge }}\nspec:\n  selector: {{ istio: edgegateway }}\n  servers:\n{servers}")
    };
    for other in [
        "mode: MUTUAL, serverCertificate: /c2, privateKey: /k2, caCertificates: /ca",
        "mode: SIMPLE, serverCertificate: /c2, privateKey: /k2, minProtocolVersion: TLSV1_3",
        "mode: SIMPLE, serverCertificate: /c2, privateKey: /k2, cipherSuites: [AES128-SHA]",
    ] {
        let one = gateway("front", &(server("a", simple) + &server("b", other)));
        let loaded = load(&one);
        assert_eq!(loaded.refused.len(), 1, "{other}");
        assert!(
            loaded.refused[0].message.contains(
                "servers[1].tls: port 443 terminates TLS with other settings in servers[0]"
            ),
            "{}",
            loaded.refused[0].message
        );
        let two = gateway("front", &server("a", simple))
            + "---\n"
            + &gateway("partner", &server("b", other));
        let loaded = load(&two);
        assert_eq!(loaded.refused.len(), 1, "{other}");
        assert!(
            loaded.refused[0]
                .message
                .contains("port 443 terminates TLS with other settings in Gateway edge/front"),
            "{}",
            loaded.refused[0].message
        );
        let names: Vec<_> = loaded
            .inputs
            .gateways
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["public", "front"]);
    }
    // Only the certificate differs: one port, two names.
    let fine = gateway(
        "front",
        &(server("a", simple)
            + &server("b", "mode: SIMPLE, serverCertificate: /c2, privateKey: /k2")),
    );
    let loaded = load(&fine);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
}

/// AUTO_PASSTHROUGH, Istio's east-west gateway: a route per service port and subset by the
/// SNI sidecars send, to endpoints whose sidecar takes mutual TLS, passed through.
#[test]
fn auto_passthrough_routes_the_sni_sidecars_send_to_mtls_endpoints_only() {
    let loaded = load(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: shop }
spec:
  hosts: [ratings.shop.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-v1
  namespace: shop
  annotations: { sidecar.trellis.dev/app-ports: "http=19080" }
spec: { address: 127.0.0.2, ports: { http: 29080 }, labels: { app: ratings, version: v1 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: legacy, namespace: shop }
spec:
  hosts: [legacy.shop.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: legacy } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: legacy, namespace: shop }
spec: { address: 127.0.0.3, labels: { app: legacy } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings, namespace: shop }
spec:
  host: ratings.shop.svc.cluster.local
  subsets: [{ name: v1, labels: { version: v1 } }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: eastwest, namespace: edge }
spec: { address: 10.0.0.2, labels: { istio: eastwestgateway } }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: cross-network-gateway, namespace: edge }
spec:
  selector: { istio: eastwestgateway }
  servers:
    - port: { number: 15443, name: tls, protocol: TLS }
      hosts: ["*.local"]
      tls: { mode: AUTO_PASSTHROUGH }
"#,
    );
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate_gateway(&loaded.inputs, &registry, "edge", "eastwest").unwrap();
    c.check("gateway").unwrap();
    let l = c
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_15443")
        .unwrap();
    assert!(l.tls.is_none() && l.http.is_none(), "{l:?}");
    let names: Vec<&str> = l
        .sni_routes
        .iter()
        .map(|r| r.server_names[0].as_str())
        .collect();
    // reviews has no endpoint with a sidecar, legacy none at all: neither is reachable.
    assert_eq!(
        names,
        [
            "outbound_.9080_._.ratings.shop.svc.cluster.local",
            "outbound_.9080_.v1_.ratings.shop.svc.cluster.local"
        ]
    );
    for r in &l.sni_routes {
        let cluster = c.clusters.iter().find(|c| c.name == r.tcp.cluster).unwrap();
        assert!(cluster.tls.is_none(), "{cluster:?}");
        let endpoints: Vec<&str> = cluster.endpoints.iter().map(|e| e.address()).collect();
        assert_eq!(endpoints, ["127.0.0.2:29080"]);
    }
    // No mesh cluster was left behind for them.
    assert!(
        c.clusters.iter().all(|c| !c.name.starts_with("outbound|")),
        "{:?}",
        c.clusters
    );
}
