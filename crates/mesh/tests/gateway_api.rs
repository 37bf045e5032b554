//! Kubernetes Gateway API resources read as Istio's controller reads them: what attaches
//! where, in which order routes match, and the conditions each resource gets.

use trellis_mesh::gateway::generate_gateway;
use trellis_mesh::gateway_api::{convert, status::Status};
use trellis_mesh::{load_str, Loaded, Registry};

const BASE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: infra }
spec:
  hosts: [web.infra.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: web } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: apps }
spec:
  hosts: [api.apps.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: api } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: edge, namespace: infra }
spec: { address: 10.0.0.1, labels: { gateway.networking.k8s.io/gateway-name: edge } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge, namespace: infra }
spec:
  gatewayClassName: trellis
  listeners:
    - { name: http, port: 80, protocol: HTTP }
    - name: shop
      port: 80
      protocol: HTTP
      hostname: "*.shop.example"
      allowedRoutes: { namespaces: { from: All } }
"#;

fn load(extra: &str) -> (Loaded, Registry, Status) {
    let mut loaded = Loaded::default();
    load_str(BASE, "base.yaml", &mut loaded);
    load_str(extra, "extra.yaml", &mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let status = convert(&mut loaded.inputs, &registry);
    (loaded, registry, status)
}

fn conditions(status: &Status, route: &str) -> Vec<(String, bool, String)> {
    let r = status.routes.iter().find(|r| r.name == route).unwrap();
    r.parents
        .iter()
        .flat_map(|p| p.conditions.iter())
        .map(|c| (c.kind.to_string(), c.status, c.reason.clone()))
        .collect()
}

#[test]
fn routes_attach_by_namespace_and_hostname_and_match_in_the_gateway_apis_order() {
    let (loaded, registry, status) = load(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: broad, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /foo/ } }]
      backendRefs: [{ name: web, port: 8080 }]
    - backendRefs: [{ name: web, port: 8080 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: narrow, namespace: infra }
spec:
  parentRefs: [{ name: edge }]
  rules:
    - matches:
        - path: { type: Exact, value: /foo }
        - path: { type: PathPrefix, value: /foo/bar }
          headers: [{ name: X-Version, value: "2" }]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: x-via, value: gateway }] }
      backendRefs: [{ name: web, port: 8080 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: shop, namespace: apps }
spec:
  parentRefs: [{ name: edge, namespace: infra }]
  hostnames: ["*.example", "cart.shop.example", "other.org"]
  rules:
    - backendRefs: [{ name: api, port: 8080 }]
"#,
    );
    for route in ["broad", "narrow", "shop"] {
        assert_eq!(
            conditions(&status, route),
            [
                ("Accepted".into(), true, "Accepted".into()),
                ("ResolvedRefs".into(), true, "ResolvedRefs".into())
            ],
            "{route}"
        );
    }
    let g = &status.gateways[0];
    let attached: Vec<u32> = g.listeners.iter().map(|l| l.attached_routes).collect();
    // broad and narrow on `http` (shop's namespace is not allowed there); narrow and
    // shop on `shop` (narrow has no hostnames: the listener's).
    assert_eq!(attached, [2, 2]);

    let c = generate_gateway(&loaded.inputs, &registry, "infra", "edge").unwrap();
    assert_eq!(c.listeners.len(), 1, "one port, one listener");
    let hosts = &c.listeners[0].http.as_ref().unwrap().virtual_hosts;
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    // `*.example` and `*.shop.example` intersect in `*.shop.example`; other.org not at all.
    assert!(names.contains(&"*:80"), "{names:?}");
    assert!(names.contains(&"cart.shop.example:80"), "{names:?}");
    assert!(names.contains(&"*.shop.example:80"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("other.org")), "{names:?}");
    let any = hosts.iter().find(|h| h.name == "*:80").unwrap();
    let order: Vec<String> = any
        .routes
        .iter()
        .map(|r| {
            let m = &r.matches;
            format!(
                "{}{}{}",
                m.path
                    .as_deref()
                    .map(|p| format!("={p}"))
                    .unwrap_or_default(),
                m.prefix
                    .as_deref()
                    .map(|p| format!("^{p}"))
                    .unwrap_or_default(),
                if m.headers.is_empty() { "" } else { "+h" },
            )
        })
        .collect();
    // Exact first; then the longest prefix (each PathPrefix is its exact path and
    // what lies under it); the rule without matches (PathPrefix /) last.
    assert_eq!(
        order,
        [
            "=/foo",
            "=/foo/bar+h",
            "^/foo/bar/+h",
            "=/foo",
            "^/foo/",
            "^/"
        ]
    );
    let via = &any.routes[0].request_headers_to_add;
    assert!(
        via.iter()
            .any(|h| h.name == "x-via" && h.value == "gateway"),
        "{via:?}"
    );
}

#[test]
fn refused_attachments_and_backends_are_said_as_the_gateway_api_says() {
    let (loaded, registry, status) = load(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: cross, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules:
    - matches: [{ path: { value: /api } }]
      backendRefs: [{ name: api, namespace: apps, port: 8080 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: outsider, namespace: apps }
spec:
  parentRefs: [{ name: edge, namespace: infra, sectionName: http }]
  rules: [{ backendRefs: [{ name: api, port: 8080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: wrong-port, namespace: infra }
spec:
  parentRefs: [{ name: edge, port: 81 }]
  rules: [{ backendRefs: [{ name: web, port: 8080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: missing, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules:
    - matches: [{ path: { value: /missing } }]
      backendRefs: [{ name: nothing, port: 8080 }]
"#,
    );
    assert_eq!(
        conditions(&status, "cross")[1],
        ("ResolvedRefs".into(), false, "RefNotPermitted".into())
    );
    assert_eq!(
        conditions(&status, "outsider")[0],
        ("Accepted".into(), false, "NotAllowedByListeners".into())
    );
    assert_eq!(
        conditions(&status, "wrong-port")[0],
        ("Accepted".into(), false, "NoMatchingParent".into())
    );
    assert_eq!(
        conditions(&status, "missing")[1],
        ("ResolvedRefs".into(), false, "BackendNotFound".into())
    );
    assert!(status
        .problems()
        .iter()
        .any(|p| p.contains("HTTPRoute infra/cross")));
    // A backend that does not resolve answers 500, never reaches anything.
    let c = generate_gateway(&loaded.inputs, &registry, "infra", "edge").unwrap();
    let routes = &c.listeners[0].http.as_ref().unwrap().virtual_hosts[0].routes;
    for r in routes.iter().filter(|r| {
        r.matches.path.as_deref() == Some("/api") || r.matches.path.as_deref() == Some("/missing")
    }) {
        assert_eq!(
            r.direct_response.as_ref().map(|d| d.status),
            Some(500),
            "{r:?}"
        );
    }

    // A ReferenceGrant in the backend's namespace lets the route refer to it.
    let (_, _, status) = load(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: cross, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules: [{ backendRefs: [{ name: api, namespace: apps, port: 8080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: from-infra, namespace: apps }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra }]
  to: [{ group: "", kind: Service }]
"#,
    );
    assert_eq!(
        conditions(&status, "cross")[1],
        ("ResolvedRefs".into(), true, "ResolvedRefs".into())
    );
}

#[test]
fn what_the_gateway_api_refuses_is_refused_by_field() {
    for (doc, says) in [
        ("kind: HTTPRoute\nmetadata: { name: r, namespace: infra }\nspec:\n  rules: [{ matches: [{ path: { type: Exact, value: foo } }] }]", "spec.rules[0].matches[0].path.value: \"foo\" must be an absolute path"),
        ("kind: HTTPRoute\nmetadata: { name: r, namespace: infra }\nspec:\n  rules: [{ filters: [{ type: RequestRedirect, requestRedirect: { scheme: https } }, { type: URLRewrite, urlRewrite: { hostname: a.example } }] }]", "RequestRedirect and URLRewrite cannot both be set"),
        ("kind: HTTPRoute\nmetadata: { name: r, namespace: infra }\nspec:\n  rules: [{ matches: [{ path: { type: Exact, value: /a } }], filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /b } } }] }]", "ReplacePrefixMatch needs every match to be a PathPrefix match"),
        ("kind: HTTPRoute\nmetadata: { name: r, namespace: infra }\nspec:\n  rules: [{ retry: { attempts: 2 } }]", "spec.rules[0].retry: not supported by Trellis yet"),
        ("kind: HTTPRoute\nmetadata: { name: r, namespace: infra }\nspec:\n  rules: [{ matches: [{ path: { value: /a } }], timeoutz: 1 }]", "spec.rules[0].timeoutz"),
        ("kind: Gateway\nmetadata: { name: g, namespace: infra }\nspec:\n  gatewayClassName: trellis\n  listeners: [{ name: a, port: 443, protocol: HTTPS }]", "spec.listeners[0].tls: must be set for protocol HTTPS"),
        ("kind: Gateway\nmetadata: { name: g, namespace: infra }\nspec:\n  gatewayClassName: trellis\n  addresses: [{ value: 10.0.0.9 }]\n  listeners: [{ name: a, port: 80, protocol: HTTP }]", "spec.addresses: not supported by Trellis yet"),
        ("kind: Gateway\nmetadata: { name: g, namespace: infra }\nspec:\n  gatewayClassName: trellis\n  listeners: [{ name: a, port: 443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], options: { example.com/min-version: \"1.0\" } } }]", "spec.listeners[0].tls.options: not supported by Trellis"),
        ("kind: UDPRoute\nmetadata: { name: t, namespace: infra }\nspec: {}", "kind UDPRoute of the Gateway API is not supported by Trellis yet"),
        ("kind: TCPRoute\nmetadata: { name: t, namespace: infra }\nspec: { rules: [{ backendRefs: [{ name: web, port: 8080, filters: [] }] }], hostnames: [a.example] }", "hostnames"),
        ("kind: Gateway\nmetadata: { name: g, namespace: infra }\nspec:\n  gatewayClassName: trellis\n  listeners: [{ name: a, port: 443, protocol: TLS, tls: { mode: Reencrypt, certificateRefs: [{ name: c }] } }]", "spec.listeners[0].tls.mode: \"Reencrypt\" is not Terminate or Passthrough"),
        ("kind: TLSRoute\nmetadata: { name: t, namespace: infra }\nspec: { rules: [] }", "spec.rules: 1 to 16 rules"),
    ] {
        let mut loaded = Loaded::default();
        load_str(&format!("apiVersion: gateway.networking.k8s.io/v1\n{doc}\n"), "bad.yaml", &mut loaded);
        assert_eq!(loaded.refused.len(), 1, "{doc}: {:?}", loaded.refused);
        assert!(loaded.refused[0].message.contains(says), "{doc}: {}", loaded.refused[0].message);
    }
}

#[test]
fn grpc_methods_are_paths_as_istio_converts_them() {
    use trellis_mesh::gateway_api::types::GrpcRoute;
    let route: GrpcRoute = serde_yaml::from_str(
        r#"
rules:
  - matches:
      - method: { service: helloworld.Greeter, method: SayHello }
      - method: { service: helloworld.Greeter }
      - method: { method: SayHello }
      - method: { type: RegularExpression, service: "helloworld\\..*" }
      - headers: [{ name: x-tenant, value: a }]
"#,
    )
    .unwrap();
    let http = route.as_http();
    let paths: Vec<(String, String)> = http.rules[0]
        .matches
        .iter()
        .map(|m| {
            let p = m.path.clone().unwrap_or_default();
            (p.kind.unwrap_or_default(), p.value.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        paths,
        [
            (
                "Exact".to_string(),
                "/helloworld.Greeter/SayHello".to_string()
            ),
            ("PathPrefix".into(), "/helloworld.Greeter/".into()),
            ("RegularExpression".into(), "/[^/]+/SayHello".into()),
            ("RegularExpression".into(), "/helloworld\\..*/[^/]+".into()),
            (String::new(), String::new()),
        ]
    );
    assert_eq!(http.rules[0].matches[4].headers[0].name, "x-tenant");
}

/// TCP listeners and TLS listeners in Terminate mode take TCPRoutes: a TCP proxy to the
/// route's backends by weight, after the handshake with the listener's certificate.
#[test]
fn tcp_routes_attach_to_tcp_and_terminating_tls_listeners() {
    let (loaded, registry, status) = load(
        r#"apiVersion: v1
kind: Secret
metadata: { name: db-cert, namespace: infra }
type: kubernetes.io/tls
data: { tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUI=, tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUI= }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: l4, namespace: infra }
spec:
  gatewayClassName: trellis
  listeners:
    - { name: db, port: 5432, protocol: TCP }
    - name: db-tls
      port: 5433
      protocol: TLS
      tls: { mode: Terminate, certificateRefs: [{ name: db-cert }] }
    - name: http
      port: 8080
      protocol: HTTP
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: l4, namespace: infra }
spec: { address: 10.0.0.3, labels: { gateway.networking.k8s.io/gateway-name: l4 } }
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: { name: db, namespace: infra }
spec:
  parentRefs: [{ name: l4, sectionName: db }, { name: l4, sectionName: db-tls }, { name: l4, sectionName: http }]
  rules:
    - backendRefs: [{ name: web, port: 8080, weight: 3 }, { name: api, namespace: apps, port: 8080, weight: 1 }]
"#,
    );
    let c = conditions(&status, "db");
    // db and db-tls take it; the HTTP listener does not take TCPRoutes; the backend in
    // another namespace has no ReferenceGrant.
    assert_eq!(
        c,
        [
            ("Accepted".to_string(), true, "Accepted".to_string()),
            ("ResolvedRefs".into(), false, "RefNotPermitted".into()),
            ("Accepted".into(), true, "Accepted".into()),
            ("ResolvedRefs".into(), false, "RefNotPermitted".into()),
            ("Accepted".into(), false, "NotAllowedByListeners".into()),
            ("ResolvedRefs".into(), false, "RefNotPermitted".into()),
        ]
    );
    let config = generate_gateway(&loaded.inputs, &registry, "infra", "l4").unwrap();
    config.check("gateway").unwrap();
    for (name, tls) in [("0.0.0.0_5432", false), ("0.0.0.0_5433", true)] {
        let l = config.listeners.iter().find(|l| l.name == name).unwrap();
        assert_eq!(l.tls.is_some(), tls, "{l:?}");
        let tcp = l.tcp.as_ref().expect("a TCP proxy");
        assert_eq!(
            tcp.cluster, "outbound|8080||web.infra.svc.cluster.local",
            "{tcp:?}"
        );
    }
}
