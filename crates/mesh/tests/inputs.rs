//! Istio YAML in, accepted / warned / refused out: every refusal names the file, the
//! resource and the field, and never takes the other resources with it.

use trellis_mesh::{generate, load_dir, Registry};

const GOOD: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=19080" }
spec:
  address: 127.0.0.1
  ports: { http: 29080 }
  labels: { app: reviews, version: v1 }
  serviceAccount: reviews
  locality: us-east/a
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - route: [{ destination: { host: reviews } }]
"#;

/// One invalid document per case, with what its refusal must say.
const BAD: &[(&str, &str, &[&str])] = &[
    (
        "wrong-type.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: wrong-type }\nspec:\n  hosts: reviews\n",
        &["wrong-type.yaml#1", "VirtualService default/wrong-type", "hosts", "invalid type"],
    ),
    (
        "unknown-kind.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ProxyConfig\nmetadata: { name: pc }\nspec: {}\n",
        &["unknown-kind.yaml#1", "ProxyConfig default/pc", "kind ProxyConfig"],
    ),
    (
        "gateway.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: gw }\nspec: {}\n",
        &["gateway.yaml#1", "Gateway default/gw", "spec.servers: at least one server is required"],
    ),
    (
        "unknown-api.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: { name: w }\nspec: {}\n",
        &["unknown-api.yaml#1", "apiVersion example.com/v1"],
    ),
    (
        "bad-regex.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: bad-regex }\nspec:\n  hosts: [ratings]\n  http:\n    - match: [{ uri: { regex: \"/(unclosed\" } }]\n      route: [{ destination: { host: ratings } }]\n",
        &["bad-regex.yaml#1", "spec.http[0].match[0].uri.regex", "not a valid regular expression"],
    ),
    (
        "weights.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: weights }\nspec:\n  hosts: [details]\n  http:\n    - route:\n        - { destination: { host: details, subset: v1 }, weight: 0 }\n        - { destination: { host: details, subset: v2 } }\n",
        &["weights.yaml#1", "spec.http[0].route", "total destination weight is 0"],
    ),
    (
        "zz-conflict.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: reviews-again }\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  http: [{ route: [{ destination: { host: reviews } }] }]\n",
        &["zz-conflict.yaml#1", "reviews.default.svc.cluster.local is already routed by", "good.yaml#3"],
    ),
    (
        "bad-duration.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: slow }\nspec:\n  hosts: [slow]\n  http: [{ timeout: soon, route: [{ destination: { host: slow } }] }]\n",
        &["bad-duration.yaml#1", "spec.http[0].timeout", "soon"],
    ),
    (
        "bad-action.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ext }\nspec:\n  action: CUSTOM\n",
        &["bad-action.yaml#1", "AuthorizationPolicy default/ext", "spec.action", "CUSTOM"],
    ),
    (
        "bad-mode.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: pa }\nspec:\n  mtls: { mode: SOMETIMES }\n",
        &["bad-mode.yaml#1", "PeerAuthentication default/pa", "SOMETIMES"],
    ),
    (
        "no-name.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {}\nspec: { host: x }\n",
        &["no-name.yaml#1", "metadata.name is required"],
    ),
    (
        "http-egress.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: web }\nspec:\n  egress:\n    - port: { number: 8080, protocol: HTTP, name: http }\n      hosts: [./web.default.svc.cluster.local]\n",
        &["http-egress.yaml#1", "Sidecar default/web", "spec.egress[0].port", "HTTP port"],
    ),
    (
        "two-hosts.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: db }\nspec:\n  egress:\n    - port: { number: 5432, protocol: TCP, name: pg }\n      bind: 127.0.0.1\n      hosts: [./db-a.default.svc.cluster.local, ./db-b.default.svc.cluster.local]\n",
        &["two-hosts.yaml#1", "spec.egress[0].hosts", "exactly one"],
    ),
    (
        "bad-bind.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: cache }\nspec:\n  egress:\n    - port: { number: 6379, name: tcp-redis }\n      bind: localhost\n      captureMode: IPTABLES\n      hosts: [./redis.default.svc.cluster.local]\n",
        &["bad-bind.yaml#1", "spec.egress[0].bind", "\"localhost\" is not an IP address"],
    ),
    (
        "not-yaml.yaml",
        "apiVersion: [unclosed\n",
        &["not-yaml.yaml#1", "not YAML"],
    ),
];

#[test]
fn each_invalid_resource_is_refused_alone_with_file_resource_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    for (file, text, _) in BAD {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let loaded = load_dir(dir.path()).unwrap();
    for (file, _, needles) in BAD {
        let refusal = loaded
            .refused
            .iter()
            .map(|d| d.to_string())
            .find(|d| d.contains(file))
            .unwrap_or_else(|| panic!("{file} was not refused: {:#?}", loaded.refused));
        for needle in *needles {
            assert!(
                refusal.contains(needle),
                "{file}: {refusal:?} should mention {needle:?}"
            );
        }
    }
    assert_eq!(loaded.refused.len(), BAD.len(), "{:#?}", loaded.refused);

    // The good resources all made it, and the field not honoured is a named warning.
    assert_eq!(loaded.inputs.service_entries.len(), 1);
    assert_eq!(loaded.inputs.workload_entries.len(), 1);
    assert_eq!(loaded.inputs.virtual_services.len(), 1);
    let warning = loaded
        .warnings
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        warning.contains(
            "good.yaml#2 WorkloadEntry default/reviews-v1: spec.locality: not honoured yet"
        ),
        "{warning}"
    );

    // And they still generate a working view.
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    assert!(config.listeners.iter().any(|l| l.name == "inbound|29080"));
    assert!(config
        .clusters
        .iter()
        .any(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local"));
}

#[test]
fn node_ids_name_their_workload() {
    assert_eq!(
        trellis_mesh::workload_of(
            "sidecar~10.0.0.1~reviews-v1-5d8c.default~default.svc.cluster.local"
        ),
        Some(("default".into(), "reviews-v1-5d8c".into()))
    );
    assert_eq!(trellis_mesh::workload_of("router~x"), None);
    assert_eq!(
        trellis_mesh::fqdn("reviews", "prod"),
        "reviews.prod.svc.cluster.local"
    );
    assert_eq!(
        trellis_mesh::fqdn("reviews.prod", "default"),
        "reviews.prod.svc.cluster.local"
    );
    assert_eq!(
        trellis_mesh::fqdn("api.example.com", "default"),
        "api.example.com"
    );
}

/// The document cache gives what a fresh read gives: for the whole corpus, after an
/// edit of one document, and after a document is removed.
#[test]
fn cached_reads_equal_fresh_reads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), format!("---\n{GOOD}")).unwrap();
    for (file, text, _) in BAD {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let mut cache = trellis_mesh::DocCache::default();
    let check = |cache: &mut trellis_mesh::DocCache| {
        let mut cached = trellis_mesh::Loaded::default();
        trellis_mesh::load_dir_cached(dir.path(), &mut cached, Some(cache)).unwrap();
        trellis_mesh::cross_check(&mut cached);
        cache.sweep();
        let fresh = load_dir(dir.path()).unwrap();
        assert_eq!(cached.inputs, fresh.inputs);
        assert_eq!(cached.warnings, fresh.warnings);
        // Document numbering is the same; only a syntax error's message differs (a
        // cached read refuses the one document, a fresh read the rest of the file).
        let names = |l: &trellis_mesh::Loaded| {
            l.refused
                .iter()
                .map(|d| d.resource.split(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&cached), names(&fresh));
    };
    check(&mut cache);
    check(&mut cache);
    let edited = GOOD.replace("ports: { http: 29080 }", "ports: { http: 29081 }");
    std::fs::write(dir.path().join("good.yaml"), &edited).unwrap();
    check(&mut cache);
    let mut cached = trellis_mesh::Loaded::default();
    trellis_mesh::load_dir_cached(dir.path(), &mut cached, Some(&mut cache)).unwrap();
    assert_eq!(cached.inputs.workload_entries[0].spec.ports["http"], 29081);
    let first_two: Vec<&str> = edited.split("---").take(2).collect();
    std::fs::write(dir.path().join("good.yaml"), first_two.join("---")).unwrap();
    check(&mut cache);
}

#[test]
fn a_service_with_one_http_port_is_named_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: ratings, namespace: prod }\nspec:\n  hosts: [ratings.prod.svc.cluster.local]\n  ports:\n    - { number: 9080, name: http, protocol: HTTP }\n    - { number: 9090, name: http-admin, protocol: HTTP }\n";
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("ratings.yaml"), ratings).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let outbound = config.listeners.iter().find(|l| l.name == "outbound");
    let vhosts = &outbound.unwrap().http.as_ref().unwrap().virtual_hosts;
    let domains = |name: &str| {
        let v = vhosts.iter().find(|v| v.name == name);
        v.unwrap_or_else(|| panic!("no virtual host {name}"))
            .domains
            .clone()
    };
    // The proxy matches `reviews:9080` by `reviews`; the port would only repeat it.
    assert_eq!(
        domains("reviews.default.svc.cluster.local:9080"),
        [
            "reviews.default.svc.cluster.local",
            "reviews.default",
            "reviews.default.svc",
            "reviews"
        ]
    );
    // Two HTTP ports: the port picks the virtual host. No short name from another
    // namespace.
    assert_eq!(
        domains("ratings.prod.svc.cluster.local:9090"),
        [
            "ratings.prod.svc.cluster.local",
            "ratings.prod.svc.cluster.local:9090",
            "ratings.prod:9090",
            "ratings.prod.svc:9090"
        ]
    );
}

/// Istio's auto mTLS: a workload without a sidecar is reached in plaintext, the others
/// in mutual TLS still. Before, one such workload turned its whole cluster plaintext.
#[test]
fn an_endpoint_without_a_sidecar_is_the_only_one_reached_in_plaintext() {
    let legacy = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: reviews-legacy, namespace: default }\nspec:\n  address: 127.0.0.2\n  ports: { http: 9080 }\n  labels: { app: reviews, version: legacy }\n  serviceAccount: legacy\n";
    let cluster = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("legacy.yaml"), legacy).unwrap();
        std::fs::write(dir.path().join("extra.yaml"), extra).unwrap();
        let loaded = load_dir(dir.path()).unwrap();
        assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
        let registry = Registry::from_inputs(&loaded.inputs);
        let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
        let name = "outbound|9080||reviews.default.svc.cluster.local";
        let c = config.clusters.iter().find(|c| c.name == name);
        c.unwrap_or_else(|| panic!("no cluster {name}")).clone()
    };
    let endpoints = |c: &trellis_config::Cluster| {
        c.endpoints
            .iter()
            .map(|e| (e.address().to_string(), e.plaintext()))
            .collect::<Vec<_>>()
    };

    let auto = cluster("");
    let tls = auto.tls.as_ref().expect("mutual TLS to the sidecar");
    assert_eq!(
        tls.match_identities,
        ["spiffe://cluster.local/ns/default/sa/reviews"],
        "only sidecars present identities"
    );
    assert_eq!(
        endpoints(&auto),
        [
            ("127.0.0.1:29080".to_string(), false),
            ("127.0.0.2:9080".to_string(), true)
        ]
    );

    let dr = |mode: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: reviews, namespace: default }}\nspec:\n  host: reviews\n  trafficPolicy: {{ tls: {{ mode: {mode} }} }}\n")
    };
    // Asked for explicitly, mutual TLS goes to every endpoint (as in Istio).
    let explicit = cluster(&dr("ISTIO_MUTUAL"));
    assert!(explicit.tls.is_some());
    assert!(endpoints(&explicit).iter().all(|(_, plain)| !plain));
    let disabled = cluster(&dr("DISABLE"));
    assert!(disabled.tls.is_none());
    assert!(endpoints(&disabled).iter().all(|(_, plain)| !plain));
}

/// What Istio accepts that Trellis once refused: relative weights, `redirectCode: 0`
/// and `protocol: ""` meaning unset, Go durations.
#[test]
fn forms_istio_accepts() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: details, namespace: default }
spec:
  hosts: [details.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: "" }]
  workloadSelector: { labels: { app: details } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-v1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=19080" }
spec:
  address: 127.0.0.1
  ports: { http: 29080 }
  labels: { app: details, version: v1 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: details, namespace: default }
spec:
  host: details
  subsets: [{ name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } }]
  trafficPolicy: { connectionPool: { tcp: { connectTimeout: 1m30s } } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details, namespace: default }
spec:
  hosts: [details]
  http:
    - match: [{ uri: { prefix: /old } }]
      redirect: { uri: /new, redirectCode: 0 }
    - timeout: 1m30s
      retries: { attempts: 2, perTryTimeout: 100us }
      route:
        - { destination: { host: details, subset: v1 }, weight: 3 }
        - { destination: { host: details, subset: v2 }, weight: 1 }
        - { destination: { host: details, subset: v2 } }
"#;
    let mut loaded = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(text, "istio.yaml", &mut loaded);
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let mut config = generate(&loaded.inputs, &registry, "default", "details-v1").unwrap();
    // As the sidecar checks it: with the identity section of its bootstrap.
    config.identity = Some(
        serde_yaml::from_str("{ ca_address: \"127.0.0.1:15012\", ca_root: /dev/null }").unwrap(),
    );
    config.check("the view").unwrap();
    let out = config
        .listeners
        .iter()
        .find(|l| l.http.is_some() && !l.name.starts_with("inbound"))
        .unwrap();
    let routes = &out
        .http
        .as_ref()
        .unwrap()
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d.starts_with("details")))
        .unwrap()
        .routes;
    assert_eq!(routes[0].redirect.as_ref().unwrap().response_code, 301);
    let weights: Vec<u32> = routes[1]
        .route
        .as_ref()
        .unwrap()
        .weighted_clusters
        .iter()
        .map(|w| w.weight)
        .collect();
    assert_eq!(weights, [3, 1, 0], "relative weights; none beside others");
    assert_eq!(
        routes[1].route.as_ref().unwrap().timeout.get(),
        std::time::Duration::from_secs(90)
    );
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name.starts_with("outbound|9080|v1|details"))
        .unwrap();
    assert_eq!(
        cluster.connect_timeout.get(),
        std::time::Duration::from_secs(90)
    );
}

/// `exportTo` decides which namespaces' sidecars a VirtualService and a
/// DestinationRule apply to.
#[test]
fn export_to_limits_who_sees_routing() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: details, namespace: shop }
spec:
  hosts: [details.shop.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: details } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: details-v1, namespace: shop, annotations: { sidecar.trellis.dev/app-ports: "http=19080" } }
spec: { address: 127.0.0.1, ports: { http: 29080 }, labels: { app: details } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client, namespace: other, annotations: { sidecar.trellis.dev/app-ports: "http=19081" } }
spec: { address: 127.0.0.2, ports: { http: 29081 }, labels: { app: client } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details, namespace: shop }
spec:
  hosts: [details]
  exportTo: ["."]
  http: [{ match: [{ uri: { prefix: /admin } }], directResponse: { status: 403 } }, { route: [{ destination: { host: details } }] }]
"#;
    let mut loaded = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(text, "istio.yaml", &mut loaded);
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let routes_of = |ns: &str, w: &str| {
        let config = generate(&loaded.inputs, &registry, ns, w).unwrap();
        let out = config
            .listeners
            .iter()
            .find(|l| l.http.is_some() && !l.name.starts_with("inbound"))
            .unwrap()
            .clone();
        out.http
            .unwrap()
            .virtual_hosts
            .into_iter()
            .find(|v| v.domains.iter().any(|d| d.starts_with("details")))
            .unwrap()
            .routes
            .len()
    };
    assert_eq!(
        routes_of("shop", "details-v1"),
        3,
        "its routes, then the default route"
    );
    assert_eq!(
        routes_of("other", "client"),
        1,
        "another namespace: the default route only"
    );

    // A second VirtualService for the host, in the other namespace and kept there:
    // no conflict (one namespace never sees both), and each namespace routes by its own.
    let other = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details-for-other, namespace: other }
spec:
  hosts: [details.shop.svc.cluster.local]
  exportTo: ["."]
  http: [{ match: [{ uri: { prefix: /a } }], directResponse: { status: 404 } }, { match: [{ uri: { prefix: /b } }], directResponse: { status: 404 } }, { route: [{ destination: { host: details.shop.svc.cluster.local } }] }]
"#;
    let mut both = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(&format!("{text}{other}"), "istio.yaml", &mut both);
    trellis_mesh::cross_check(&mut both);
    assert!(both.refused.is_empty(), "{:#?}", both.refused);
    let registry = Registry::from_inputs(&both.inputs);
    let routes_in = |ns: &str, w: &str| {
        let config = generate(&both.inputs, &registry, ns, w).unwrap();
        let out = config
            .listeners
            .iter()
            .find(|l| l.name == "outbound")
            .unwrap();
        let vhosts = &out.http.as_ref().unwrap().virtual_hosts;
        let v = vhosts
            .iter()
            .find(|v| v.name.starts_with("details.shop"))
            .unwrap();
        v.routes.len()
    };
    assert_eq!(routes_in("shop", "details-v1"), 3);
    assert_eq!(
        routes_in("other", "client"),
        4,
        "its own three, then the default route"
    );
    // Exported where the first one is seen as well: a conflict, the later one refused.
    let mut clash = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(
        &format!(
            "{text}{}",
            other.replace(r#"exportTo: ["."]"#, r#"exportTo: [".", "shop"]"#)
        ),
        "istio.yaml",
        &mut clash,
    );
    trellis_mesh::cross_check(&mut clash);
    assert!(
        clash
            .refused
            .iter()
            .any(|d| d.message.contains("is already routed by")),
        "{:#?}",
        clash.refused
    );

    let mut bad = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(
        &text.replace(r#"exportTo: ["."]"#, r#"exportTo: ["~", "."]"#),
        "istio.yaml",
        &mut bad,
    );
    assert!(
        bad.refused
            .iter()
            .any(|d| d.message.contains("stands alone")),
        "{:#?}",
        bad.refused
    );
}

/// Fields read but not honoured yet are said, not dropped without a word.
#[test]
fn fields_not_honoured_yet_are_warnings() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: w, namespace: default }
spec: { address: 10.0.0.1, weight: 3, locality: us-east/a }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext, namespace: default }
spec:
  hosts: [api.example.com]
  resolution: DNS
  exportTo: ["."]
  ports: [{ number: 80, name: http }]
"#;
    let mut loaded = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(text, "istio.yaml", &mut loaded);
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let all: Vec<String> = loaded.warnings.iter().map(|d| d.to_string()).collect();
    let needle = "WorkloadEntry default/w: spec.locality: not honoured yet";
    assert!(all.iter().any(|w| w.contains(needle)), "{needle}: {all:#?}");
}

/// A match with a port belongs to that port's virtual host only (Istio's
/// `HTTPMatchRequest.port`), as in Istio's egress sample that rewrites port 80 of
/// googleapis to 443 (samples/bookinfo/networking/egress-rule-google-apis.yaml).
#[test]
fn port_matches_belong_to_the_virtual_host_of_their_port() {
    let dir = tempfile::tempdir().unwrap();
    let api = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: api, namespace: default }\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{ address: 127.0.0.2 }]\n  ports:\n    - { number: 80, name: http, protocol: HTTP }\n    - { number: 8080, name: http-alt, protocol: HTTP }\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: api, namespace: default }\nspec:\n  hosts: [api.example.com]\n  http:\n    - match: [{ port: 80, uri: { prefix: /v1 } }, { port: 9999 }]\n      route: [{ destination: { host: api.example.com, port: { number: 8080 } } }]\n    - match: [{ port: 8080 }]\n      directResponse: { status: 418 }\n";
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("api.yaml"), api).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let outbound = config
        .listeners
        .iter()
        .find(|l| l.name == "outbound")
        .unwrap();
    let vhosts = &outbound.http.as_ref().unwrap().virtual_hosts;
    let routes = |name: &str| -> Vec<(Option<String>, Option<String>, Option<u16>)> {
        let v = vhosts
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        v.routes
            .iter()
            .map(|r| {
                (
                    r.matches.prefix.clone(),
                    r.route.as_ref().and_then(|a| a.cluster.clone()),
                    r.direct_response.as_ref().map(|d| d.status),
                )
            })
            .collect()
    };
    let on_80 = routes("api.example.com:80");
    assert_eq!(
        on_80[0],
        (
            Some("/v1".into()),
            Some("outbound|8080||api.example.com".into()),
            None
        )
    );
    assert_eq!(
        on_80.len(),
        2,
        "the /v1 route, then the default route: {on_80:?}"
    );
    let on_8080 = routes("api.example.com:8080");
    assert_eq!(on_8080[0].2, Some(418), "{on_8080:?}");
    assert_eq!(on_8080.len(), 2, "{on_8080:?}");
}

/// DestinationRule portLevelSettings, as Istio merges them: a port's settings replace
/// the policy for that port (fields they leave out take defaults, not the outer
/// policy's); a subset's policy overrides field by field, and its own port-level
/// settings override every field.
#[test]
fn port_level_settings_replace_the_policy_for_their_port() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }, { number: 9090, name: http-admin, protocol: HTTP }]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings, namespace: default }
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: { simple: LEAST_REQUEST }
    connectionPool: { http: { http1MaxPendingRequests: 7 } }
    portLevelSettings:
      - port: { number: 9090 }
        loadBalancer: { simple: RANDOM }
  subsets:
    - name: v2
      labels: { version: v2 }
      trafficPolicy:
        connectionPool: { http: { http1MaxPendingRequests: 3 } }
        portLevelSettings:
          - port: { number: 9080 }
            outlierDetection: { consecutive5xxErrors: 2 }
"#;
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("ratings.yaml"), ratings).unwrap();
    // Routed to the subset, so that its clusters exist.
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ratings, namespace: default }\nspec:\n  hosts: [ratings]\n  http: [{ route: [{ destination: { host: ratings, subset: v2 } }] }]\n",
    )
    .unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("portLevelSettings")),
        "{:#?}",
        loaded.warnings
    );
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let cluster = |name: &str| {
        config
            .clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no cluster {name}: {:?}",
                    config.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
                )
            })
            .clone()
    };
    use trellis_config::LbPolicy;
    let c9080 = cluster("outbound|9080||ratings.default.svc.cluster.local");
    assert_eq!(c9080.lb_policy, LbPolicy::LeastRequest);
    let c9090 = cluster("outbound|9090||ratings.default.svc.cluster.local");
    assert_eq!(
        c9090.lb_policy,
        LbPolicy::Random,
        "the port's own load balancer"
    );
    assert_ne!(
        c9090.circuit_breakers, c9080.circuit_breakers,
        "the port's settings replace the policy: no connection pool from outside them"
    );
    // The subset on 9080: the DR's load balancer, its own pool, and its port-level
    // settings for 9080 override every field (load balancer back to the default).
    let v2 = cluster("outbound|9080|v2|ratings.default.svc.cluster.local");
    assert_eq!(v2.lb_policy, LbPolicy::RoundRobin, "{v2:?}");
    assert!(v2.outlier_detection.is_some(), "{v2:?}");

    // A port-level setting without a port, or with nothing in it, is refused as Istio
    // refuses it; MUTUAL TLS without a client certificate at port level is refused as at
    // the top.
    for (bad, says) in [
        (
            "      - loadBalancer: { simple: RANDOM }\n",
            "portLevelSettings[0].port: required",
        ),
        ("      - port: { number: 9090 }\n", "at least one field"),
        (
            "      - port: { number: 9090 }\n        tls: { mode: MUTUAL }\n",
            "portLevelSettings[0].tls.clientCertificate: client certificate required",
        ),
    ] {
        let text = ratings.replace(
            "      - port: { number: 9090 }\n        loadBalancer: { simple: RANDOM }\n",
            bad,
        );
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&text, "ratings.yaml", &mut l);
        assert!(
            l.refused.iter().any(|d| d.message.contains(says)),
            "{says}: {:#?}",
            l.refused
        );
    }
}

/// `resolution: DNS` makes a DNS cluster: the endpoints' names, or with none the host
/// itself, resolved by the proxy.
#[test]
fn dns_service_entries_are_resolved_by_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let api = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: api, namespace: default }\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: db, namespace: default }\nspec:\n  hosts: [db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  endpoints: [{ address: db1.example.com }, { address: db2.example.com, ports: { http: 8080 } }]\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n";
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("api.yaml"), api).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("resolution")),
        "{:#?}",
        loaded.warnings
    );
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let cluster = |name: &str| {
        config
            .clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    let api = cluster("outbound|80||api.example.com");
    assert_eq!(api.discovery, trellis_config::DiscoveryType::Dns);
    let addresses = |c: &trellis_config::Cluster| -> Vec<String> {
        c.endpoints
            .iter()
            .map(|e| e.address().to_string())
            .collect()
    };
    assert_eq!(addresses(&api), ["api.example.com:80"]);
    let db = cluster("outbound|80||db.example.com");
    assert_eq!(db.discovery, trellis_config::DiscoveryType::Dns);
    assert_eq!(
        addresses(&db),
        ["db1.example.com:80", "db2.example.com:8080"]
    );
}

/// Fields whose absence would change where traffic goes are refused by name, not warned:
/// TCP and TLS routes, delegation, a Sidecar's ingress listeners. A Sidecar that asks
/// for REGISTRY_ONLY gets what Trellis does; ALLOW_ANY is warned (narrower, not wider).
#[test]
fn fields_that_would_change_routing_refuse_the_resource() {
    for (text, says) in [
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: db }\nspec:\n  hosts: [db]\n  tcp: [{ route: [{ destination: { host: db } }] }]\n",
            "spec.tcp: TCP routes",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\nspec:\n  hosts: [web]\n  tls: [{ match: [{ sniHosts: [web] }], route: [{ destination: { host: web } }] }]\n",
            "spec.tls: TLS (SNI) routes",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: root }\nspec:\n  hosts: [api]\n  http: [{ match: [{ uri: { prefix: /v1 } }], delegate: { name: v1, namespace: api } }]\n",
            "spec.http[0].delegate",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: in }\nspec:\n  ingress: [{ port: { number: 9080, protocol: HTTP, name: http }, defaultEndpoint: 127.0.0.1:8080 }]\n",
            "spec.ingress: ingress listeners",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: out }\nspec:\n  outboundTrafficPolicy: { mode: SOMETIMES }\n",
            "spec.outboundTrafficPolicy.mode: \"SOMETIMES\"",
        ),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(text, "r.yaml", &mut l);
        assert!(l.refused.iter().any(|d| d.message.contains(says)), "{says}: {:#?}", l.refused);
    }
    for (mode, warned) in [("REGISTRY_ONLY", false), ("ALLOW_ANY", true)] {
        let mut l = trellis_mesh::Loaded::default();
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{ name: out }}\nspec:\n  outboundTrafficPolicy: {{ mode: {mode} }}\n"
        );
        trellis_mesh::load_str(&text, "r.yaml", &mut l);
        assert!(l.refused.is_empty(), "{:#?}", l.refused);
        assert_eq!(!l.warnings.is_empty(), warned, "{mode}: {:#?}", l.warnings);
    }
}

/// ServiceEntry exportTo: a namespace the entry is not exported to has no virtual host
/// and no cluster for it (before, every namespace saw it, with a warning).
#[test]
fn service_entries_are_seen_where_they_are_exported() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: billing, namespace: shop }
spec:
  hosts: [billing.example.com]
  exportTo: ["."]
  location: MESH_EXTERNAL
  endpoints: [{ address: 127.0.0.9 }]
  ports: [{ number: 80, name: http, protocol: HTTP }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: cart, namespace: shop, annotations: { sidecar.trellis.dev/app-ports: "http=19080" } }
spec: { address: 127.0.0.1, ports: { http: 29080 }, labels: { app: cart } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client, namespace: other, annotations: { sidecar.trellis.dev/app-ports: "http=19081" } }
spec: { address: 127.0.0.2, ports: { http: 29081 }, labels: { app: client } }
"#;
    let mut loaded = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(text, "istio.yaml", &mut loaded);
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let registry = Registry::from_inputs(&loaded.inputs);
    let sees = |ns: &str, w: &str| {
        let config = generate(&loaded.inputs, &registry, ns, w).unwrap();
        let vhost = config
            .listeners
            .iter()
            .filter_map(|l| l.http.as_ref())
            .any(|h| {
                h.virtual_hosts
                    .iter()
                    .any(|v| v.name.starts_with("billing.example.com"))
            });
        let cluster = config
            .clusters
            .iter()
            .any(|c| c.name.ends_with("billing.example.com"));
        (vhost, cluster)
    };
    assert_eq!(sees("shop", "cart"), (true, true));
    assert_eq!(sees("other", "client"), (false, false));
}

/// corsPolicy is checked as Istio checks it (validateCORSPolicy).
#[test]
fn cors_policies_istio_refuses_are_refused() {
    for (policy, says) in [
        (
            "{ allowOrigins: [{ exact: \"\" }] }",
            "corsPolicy.allowOrigins[0]",
        ),
        (
            "{ allowOrigins: [{ regex: \"(\" }] }",
            "corsPolicy.allowOrigins[0].regex",
        ),
        (
            "{ allowMethods: [FETCH] }",
            "corsPolicy.allowMethods[0]: \"FETCH\"",
        ),
        (
            "{ allowHeaders: [\"x user\"] }",
            "corsPolicy.allowHeaders[0]",
        ),
        ("{ maxAge: 1.5s }", "accurate only to seconds"),
        (
            "{ unmatchedPreflights: DROP }",
            "corsPolicy.unmatchedPreflights",
        ),
    ] {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web }}\nspec:\n  hosts: [web]\n  http: [{{ corsPolicy: {policy}, route: [{{ destination: {{ host: web }} }}] }}]\n"
        );
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&text, "r.yaml", &mut l);
        assert!(
            l.refused.iter().any(|d| d.message.contains(says)),
            "{says}: {:#?}",
            l.refused
        );
    }
    let mut ok = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\nspec:\n  hosts: [web]\n  http: [{ corsPolicy: { allowOrigins: [{ prefix: \"https://\" }], allowMethods: [\"*\"], allowHeaders: [\"*\"], maxAge: 10m }, route: [{ destination: { host: web } }] }]\n",
        "r.yaml",
        &mut ok,
    );
    assert!(
        ok.refused.is_empty() && ok.warnings.is_empty(),
        "{:#?} {:#?}",
        ok.refused,
        ok.warnings
    );
}

/// Header operations are checked as Istio checks them, and what Trellis does not do yet
/// (the authority set through headers, Envoy's %...% operators) is refused by name.
#[test]
fn header_operations_istio_refuses_are_refused() {
    for (headers, says) in [
        (
            "{ response: { set: { host: x } } }",
            "cannot set Host header",
        ),
        (
            "{ request: { remove: [\":path\"] } }",
            "header cannot have \":\" prefix",
        ),
        (
            "{ request: { set: { \":authority\": a.example } } }",
            "use rewrite.authority",
        ),
        (
            "{ request: { add: { x-node: \"%HOSTNAME%\" } } }",
            "%...% header value operators",
        ),
        (
            "{ response: { set: { x-bad: \"a\\u0001b\" } } }",
            "is invalid",
        ),
    ] {
        for place in ["route", "destination"] {
            let route = match place {
                "route" => {
                    format!("{{ headers: {headers}, route: [{{ destination: {{ host: web }} }}] }}")
                }
                _ => {
                    format!("{{ route: [{{ destination: {{ host: web }}, headers: {headers} }}] }}")
                }
            };
            let text = format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web }}\nspec:\n  hosts: [web]\n  http: [{route}]\n"
            );
            let mut l = trellis_mesh::Loaded::default();
            trellis_mesh::load_str(&text, "r.yaml", &mut l);
            assert!(
                l.refused.iter().any(|d| d.message.contains(says)),
                "{place} {says}: {:#?}",
                l.refused
            );
        }
    }
}

/// Host names are checked as Istio's ValidateWildcardDomain checks them, and `*` is not a
/// VirtualService host for sidecars.
#[test]
fn host_names_istio_refuses_are_refused() {
    let vs = |hosts: &str, dest: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web }}\nspec:\n  hosts: {hosts}\n  http: [{{ route: [{{ destination: {{ host: {dest} }} }}] }}]\n"
        )
    };
    for (text, says) in [
        (vs("[\"*\"]", "web"), "wildcard host * is not allowed"),
        (vs("[Web.example]", "web"), "label \"Web\" invalid"),
        (vs("[web.123]", "web"), "cannot be all-numeric"),
        (vs("[\"a.*.example\"]", "web"), "label \"*\" invalid"),
        (vs("[web]", "\"*\""), "invalid destination host *"),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: bad_host\n".to_string(),
            "spec.host: domain name \"bad_host\" invalid",
        ),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&text, "r.yaml", &mut l);
        assert!(l.refused.iter().any(|d| d.message.contains(says)), "{says}: {:#?}", l.refused);
    }
    for ok in [
        vs(
            "[\"*.example.com\", web, \"web.shop.svc.cluster.local.\", 10.0.0.1]",
            "\"*.example.com\"",
        ),
        vs("[\"*web.example\"]", "web"),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&ok, "r.yaml", &mut l);
        assert!(l.refused.is_empty(), "{ok}: {:#?}", l.refused);
    }
}

/// retryOn as Istio reads it: status codes as numbers become retriable status codes,
/// conditions Istio does not know are refused, and those the proxy does not retry on
/// are warned (fewer retries, never more).
#[test]
fn retry_on_takes_status_codes_and_refuses_unknown_conditions() {
    let text = |retry_on: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: reviews, namespace: default }}\nspec:\n  hosts: [reviews]\n  http: [{{ retries: {{ attempts: 3, retryOn: \"{retry_on}\" }}, route: [{{ destination: {{ host: reviews }} }}] }}]\n"
        )
    };
    for (bad, says) in [
        (
            "5xx,sometimes",
            "\"sometimes\" is not a valid retryOn policy",
        ),
        ("700", "\"700\""),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&text(bad), "r.yaml", &mut l);
        assert!(
            l.refused.iter().any(|d| d.message.contains(says)),
            "{says}: {:#?}",
            l.refused
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // GOOD without its VirtualService (the last document).
    let services = &GOOD[..GOOD.rfind("---").unwrap()];
    std::fs::write(dir.path().join("good.yaml"), services).unwrap();
    std::fs::write(dir.path().join("vs.yaml"), text("5xx,429,retriable-4xx")).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("\"retriable-4xx\" is not honoured yet")),
        "{:#?}",
        loaded.warnings
    );
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let outbound = config
        .listeners
        .iter()
        .find(|l| l.name == "outbound")
        .unwrap();
    let route = &outbound.http.as_ref().unwrap().virtual_hosts[0].routes[0];
    let retry = route.route.as_ref().unwrap().retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, "5xx,retriable-status-codes");
    assert_eq!(retry.retriable_status_codes, vec![429]);
    assert_eq!(retry.num_retries, 3);
}

/// ServiceEntries Istio refuses are refused (ValidateServiceEntry).
#[test]
fn service_entries_istio_refuses_are_refused() {
    let se = |spec: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: e }}\nspec:\n{spec}")
    };
    let port = "  ports: [{ number: 80, name: http, protocol: HTTP }]\n";
    for (spec, says) in [
        (format!("  hosts: [\"*\"]\n{port}"), "invalid host *"),
        (format!("  hosts: [Bad.example]\n{port}"), "label \"Bad\" invalid"),
        (format!("  hosts: [a.example]\n  resolution: NONE\n  endpoints: [{{ address: 10.0.0.1 }}]\n{port}"), "resolution type NONE"),
        (format!("  hosts: [\"*.example\"]\n  resolution: DNS\n{port}"), "hosts must be FQDN"),
        (format!("  hosts: [a.example]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{ address: a1.example }}, {{ address: a2.example }}]\n{port}"), "0 or 1 endpoint"),
        (format!("  hosts: [a.example]\n  resolution: STATIC\n  endpoints: [{{ address: a1.example }}]\n{port}"), "not a valid IP address"),
        (format!("  hosts: [a.example]\n  workloadSelector: {{ labels: {{ app: a }} }}\n  endpoints: [{{ address: 10.0.0.1 }}]\n{port}"), "only one of workloadSelector or endpoints"),
        ("  hosts: [a.example]\n  ports: [{ number: 80, name: http, protocol: HTTP }, { number: 81, name: http, protocol: HTTP }]\n".to_string(), "\"http\" already defined"),
        ("  hosts: [a.example]\n  ports: [{ number: 80, name: Web_1, protocol: HTTP }]\n".to_string(), "not a valid port name"),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&se(&spec), "r.yaml", &mut l);
        assert!(l.refused.iter().any(|d| d.message.contains(says)), "{says}: {:#?}", l.refused);
    }
}

/// Route, redirect, rewrite and direct response combinations Istio refuses are refused,
/// and rewrite forms Trellis does not do yet are refused by name (left out, they would
/// change the path or the redirect).
#[test]
fn rewrite_and_redirect_forms_istio_refuses_are_refused() {
    let vs = |route: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web }}\nspec:\n  hosts: [web]\n  http: [{route}]\n"
        )
    };
    for (route, says) in [
        ("{ redirect: { uri: /x }, rewrite: { uri: /y } }", "both rewrite and redirect"),
        ("{ redirect: { uri: /x }, fault: { abort: { httpStatus: 500 } } }", "both fault and redirect"),
        ("{ directResponse: { status: 200 }, rewrite: { uri: /y } }", "both rewrite and directResponse"),
        ("{ rewrite: {}, route: [{ destination: { host: web } }] }", "rewrite: must specify"),
        ("{ redirect: { redirectCode: 302 } }", "redirect: must specify"),
        ("{ redirect: { uri: /x, scheme: ftp } }", "redirect.scheme"),
        ("{ rewrite: { uriRegexRewrite: { match: a, rewrite: b } }, route: [{ destination: { host: web } }] }", "rewrite.uriRegexRewrite"),
        ("{ redirect: { prefixRewrite: /new } }", "redirect.prefixRewrite"),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&vs(route), "r.yaml", &mut l);
        assert!(l.refused.iter().any(|d| d.message.contains(says)), "{says}: {:#?}", l.refused);
    }
}

/// Subset names and empty traffic policies, as Istio checks them.
#[test]
fn subset_names_and_empty_policies_istio_refuses_are_refused() {
    for (text, says) in [
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  subsets: [{ name: V_1, labels: { version: v1 } }]\n", "not a valid subset name"),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  trafficPolicy: {}\n", "spec.trafficPolicy: a traffic policy must have at least one field"),
        ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: v }\nspec:\n  hosts: [web]\n  http: [{ route: [{ destination: { host: web, subset: \"v1.0\" } }] }]\n", "destination.subset: \"v1.0\""),
    ] {
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(text, "r.yaml", &mut l);
        assert!(l.refused.iter().any(|d| d.message.contains(says)), "{says}: {:#?}", l.refused);
    }
}

/// Sidecar egress hosts, as Istio checks them (namespace/FQDN or wildcard).
#[test]
fn sidecar_egress_hosts_istio_refuses_are_refused() {
    for (hosts, says) in [
        ("[]", "at least one host"),
        ("[\"./reviews\"]", "short names (non FQDN) are not allowed"),
        ("[\"./*foo.example\"]", "partial wildcard"),
        ("[\"Bad_NS/*\"]", "is not a namespace"),
        ("[\"./a..example\"]", "invalid"),
    ] {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{ name: s }}\nspec:\n  egress: [{{ hosts: {hosts} }}]\n"
        );
        let mut l = trellis_mesh::Loaded::default();
        trellis_mesh::load_str(&text, "r.yaml", &mut l);
        assert!(
            l.refused.iter().any(|d| d.message.contains(says)),
            "{says}: {:#?}",
            l.refused
        );
    }
    let ok = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: s }\nspec:\n  egress: [{ hosts: [\"./*\", \"istio-system/*\", \"*/*.example.com\", \"~/*\", \"shop/reviews.shop.svc.cluster.local\"] }]\n";
    let mut l = trellis_mesh::Loaded::default();
    trellis_mesh::load_str(ok, "r.yaml", &mut l);
    assert!(l.refused.is_empty(), "{:#?}", l.refused);
}
