//! Security resources never fail open: a field Trellis cannot honour refuses the
//! resource, and a refused policy leaves its workloads with the strictest reading of it
//! (unless its earlier version keeps serving). Auto mTLS follows the destination's
//! PeerAuthentication.

use trellis_config::{AuthorizationAction, AuthorizationPolicy};
use trellis_mesh::{generate, load_str, Inputs, Loaded, Registry};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: httpbin, namespace: foo }
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  ports: [{ number: 8000, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: httpbin } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: sleep, namespace: foo }
spec:
  hosts: [sleep.foo.svc.cluster.local]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: sleep } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: httpbin-v1
  namespace: foo
  annotations: { sidecar.trellis.dev/app-ports: "http=18000" }
spec:
  address: 127.0.0.1
  ports: { http: 28000 }
  labels: { app: httpbin, version: v1 }
  serviceAccount: httpbin
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: sleep
  namespace: foo
  annotations: { sidecar.trellis.dev/app-ports: "http=18001" }
spec:
  address: 127.0.0.2
  ports: { http: 28001 }
  labels: { app: sleep }
  serviceAccount: sleep
"#;

fn load(policies: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(policies, "policy.yaml", &mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    loaded
        .inputs
        .keep_previous(&Inputs::default(), &mut loaded.refused);
    loaded
}

/// A workload's inbound listener.
fn inbound(loaded: &Loaded, workload: &str) -> trellis_config::Listener {
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "foo", workload).unwrap();
    config
        .listeners
        .into_iter()
        .find(|l| l.name.starts_with("inbound|"))
        .expect("an inbound listener")
}

/// The authorization policies of a workload's inbound listener.
fn policies_of(loaded: &Loaded, workload: &str) -> Vec<AuthorizationPolicy> {
    inbound(loaded, workload)
        .authorization
        .map(|a| a.policies)
        .unwrap_or_default()
}

fn refusal(loaded: &Loaded) -> String {
    assert_eq!(loaded.refused.len(), 1, "{:#?}", loaded.refused);
    loaded.refused[0].to_string()
}

/// The JWT settings of a workload's inbound listener.
fn jwt_of(loaded: &Loaded, workload: &str) -> Option<trellis_config::JwtAuthn> {
    inbound(loaded, workload).jwt
}

/// Istio's JWK Set of its JWT tests (tests/common/jwt/jwks.json).
const ISTIO_JWKS: &str = r#"{ "keys":[ {"e":"AQAB","kid":"tT_w9LRNrY7wJalGsTYSt7rutZi86Gvyc0EKR4CaQAw","kty":"RSA","n":"raJ7ZEhMfrBUo2werGKOow9an1B6Ukc6dKY2hNi10eaQe9ehJCjLpmJpePxoqaCi2VYt6gncLfhEV71JDGsodbfYMlaxwWTt6lXBcjlVXHWDXLC45rHVfi9FjSSXloHqmSStpjv3mrW3R6fx2VeVVP_mrA6ZHtcynq6ecJqO11STvVoeeM3lEsASVSWsUrKltC1Crfo0sI7YG34QjophVTEi8B9gVepAJZV-Bso5sinRABnxfLUM7DU5c8MO114uvXThgSIuAOM9PbViSC3X6Y9Gsjsy881HGO-EJaUCrwSWnwQW5sp0TktrYL70-M4_ug-X51Yt_PErmncKupx8Hw"}]}"#;

#[test]
fn require_jwt_policy_and_request_authentication_reach_the_listener() {
    // istio.io "Authorization with JWT": a RequestAuthentication and an ALLOW policy on
    // request principals; plus a namespace-wide rule whose keys are at a jwksUri.
    let loaded = load(&format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: jwt-example, namespace: foo }}
spec:
  selector: {{ matchLabels: {{ app: httpbin }} }}
  jwtRules:
    - issuer: "testing@secure.istio.io"
      jwks: '{ISTIO_JWKS}'
      fromHeaders: [{{ name: x-jwt, prefix: "Bearer " }}]
      outputClaimToHeaders: [{{ header: x-sub, claim: sub }}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: namespace-wide, namespace: foo }}
spec:
  jwtRules:
    - issuer: "https://accounts.example"
      jwksUri: "https://accounts.example/jwks.json"
      audiences: [app]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: require-jwt, namespace: foo }}
spec:
  selector: {{ matchLabels: {{ app: httpbin }} }}
  action: ALLOW
  rules:
    - from: [{{ source: {{ requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"] }} }}]
      when: [{{ key: "request.auth.claims[groups]", values: [group1] }}]
"#
    ));
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let p = policies_of(&loaded, "httpbin-v1");
    assert_eq!(
        p[0].rules[0].from[0].source.request_principals,
        ["testing@secure.istio.io/testing@secure.istio.io"]
    );
    let jwt = jwt_of(&loaded, "httpbin-v1").expect("httpbin verifies JWTs");
    assert_eq!(jwt.rules.len(), 2, "its own rule and the namespace's");
    assert_eq!(jwt.rules[0].jwks, ISTIO_JWKS);
    assert_eq!(jwt.rules[0].from_headers[0].name, "x-jwt");
    assert_eq!(jwt.rules[0].output_claim_to_headers[0].header, "x-sub");
    assert_eq!(jwt.rules[1].issuer, "https://accounts.example");
    assert_eq!(
        jwt.rules[1].jwks, "",
        "not fetched: no keys, its tokens are refused"
    );
    assert_eq!(jwt.rules[1].audiences, ["app"]);
    let sleep = jwt_of(&loaded, "sleep").expect("the namespace-wide rule");
    assert_eq!(sleep.rules.len(), 1);
}

#[test]
fn request_authentications_are_validated_as_istio_validates_them() {
    for (spec, problem) in [
        ("jwtRules: [{ jwksUri: \"https://a/j\", audiences: [\"\"] }]", "audiences"),
        ("jwtRules: [{ jwks: \"{}\" }]", "issuer or jwksUri is required"),
        ("jwtRules: [{ issuer: a, jwksUri: \"ftp://x/j\" }]", "jwksUri"),
        ("jwtRules: [{ issuer: a, jwks: \"{not json\" }]", "jwks"),
        ("jwtRules: [{ issuer: a, jwksUri: \"https://a/j\", fromHeaders: [{ prefix: x }] }]", "fromHeaders[0].name"),
        ("jwtRules: [{ issuer: a, jwksUri: \"https://a/j\", outputClaimToHeaders: [{ header: \"bad header\", claim: sub }] }]", "outputClaimToHeaders[0].header"),
        ("jwtRules: [{ issuer: a, jwksUri: \"https://a/j\", timeout: 5 }]", "timeout"),
    ] {
        let loaded = load(&format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: ra, namespace: foo }}\nspec:\n  {spec}\n"
        ));
        let why = refusal(&loaded);
        assert!(why.contains(problem), "{spec}: {why}");
        assert!(why.contains("refuse requests with a JWT"), "{why}");
        // The stand-in: any issuer, no keys.
        let jwt = jwt_of(&loaded, "httpbin-v1").expect("a stand-in rule");
        assert_eq!(jwt.rules, vec![trellis_config::JwtRule::default()]);
    }
}

#[test]
fn refused_deny_policies_deny_everything_they_could_select() {
    for (name, spec) in [
        // A source value Istio refuses.
        ("deny-empty", "action: DENY\n  rules: [{ from: [{ source: { notRequestPrincipals: [\"\"] } }] }]"),
        // Unsupported when key.
        ("deny-labels", "action: DENY\n  rules: [{ when: [{ key: \"destination.labels[app]\", values: [x] }] }]"),
        // CUSTOM (external authorization) is not implemented.
        ("ext", "action: CUSTOM\n  provider: { name: opa }\n  rules: [{}]"),
    ] {
        let loaded = load(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: foo }}\nspec:\n  {spec}\n"
        ));
        let why = refusal(&loaded);
        assert!(why.contains("deny every request"), "{name}: {why}");
        for w in ["httpbin-v1", "sleep"] {
            let p = policies_of(&loaded, w);
            assert_eq!(p.len(), 1, "{name} applies namespace-wide");
            assert_eq!(p[0].action, AuthorizationAction::Deny);
            assert_eq!(p[0].rules, vec![Default::default()], "one rule matching all");
        }
    }
}

/// Two refused documents of one name (two files, or two edits in one): both stand-ins
/// apply, each under a name of its own, and the listener still encodes for Envoy.
#[test]
fn refused_policies_of_one_name_each_stand_in() {
    let doc = |spec: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: split, namespace: foo }}\nspec:\n  {spec}\n")
    };
    let loaded = load(&format!(
        "{}---\n{}",
        doc("action: DENY\n  rules: [{ from: [{ source: { notRequestPrincipals: [\"\"] } }] }]"),
        doc("rules: [{ from: [{ source: { serviceAccounts: \"\" } }] }]"),
    ));
    let p = policies_of(&loaded, "sleep");
    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["foo.split (refused)", "foo.split (refused) #2"],
        "{p:#?}"
    );
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "foo", "sleep").unwrap();
    trellis_envoy::encode(&config).expect("the listener encodes");
}

#[test]
fn an_allow_policy_with_an_unknown_when_key_allows_nothing() {
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: by-issuer, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  rules:
    - when: [{ key: "request.auth.issuer", values: ["https://issuer.example"] }]
"#,
    );
    assert!(refusal(&loaded).contains("spec.rules[0].when[0].key"));
    let p = policies_of(&loaded, "httpbin-v1");
    assert_eq!((p.len(), p[0].rules.len()), (1, 0));
}

#[test]
fn an_earlier_version_keeps_serving_instead_of_the_stand_in() {
    let good = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  rules: [{ from: [{ source: { serviceAccounts: [sleep] } }] }]
"#;
    let before = load(good);
    assert!(before.refused.is_empty(), "{:#?}", before.refused);
    let p = policies_of(&before, "httpbin-v1");
    assert_eq!(
        p[0].rules[0].from[0].source.service_accounts,
        vec!["foo/sleep".to_string()],
        "a bare service account is of the policy's namespace"
    );

    let mut after = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut after);
    load_str(
        &good.replace(
            "serviceAccounts: [sleep]",
            "serviceAccounts: [sleep], ipBlocks: [\"10.0.0.0/33\"]",
        ),
        "policy.yaml",
        &mut after,
    );
    trellis_mesh::cross_check(&mut after);
    after
        .inputs
        .keep_previous(&before.inputs, &mut after.refused);
    let why = refusal(&after);
    assert!(why.contains("the previous version keeps serving"), "{why}");
    assert!(!why.contains("fails closed"), "{why}");
    assert!(after.inputs.fail_closed.is_empty());
    assert_eq!(policies_of(&after, "httpbin-v1"), p);
}

#[test]
fn dry_run_policies_are_marked_and_bad_annotations_refused() {
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: foo
  annotations: { "istio.io/dry-run": "true" }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/headers"] } }] }]
"#,
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let p = policies_of(&loaded, "httpbin-v1");
    assert!(p[0].dry_run);

    for (annotated, needle) in [
        (
            "kind: AuthorizationPolicy\nmetadata: { name: p, namespace: foo, annotations: { istio.io/dry-run: maybe } }\nspec: { action: DENY, rules: [{}] }",
            "is not a boolean",
        ),
        (
            "kind: AuthorizationPolicy\nmetadata: { name: p, namespace: foo, annotations: { istio.io/dry-run: \"true\" } }\nspec: { action: AUDIT, rules: [{}] }",
            "only ALLOW and DENY",
        ),
        (
            "kind: PeerAuthentication\nmetadata: { name: p, namespace: foo, annotations: { istio.io/dry-run: \"true\" } }\nspec: { mtls: { mode: STRICT } }",
            "only an AuthorizationPolicy",
        ),
    ] {
        let loaded = load(&format!("apiVersion: security.istio.io/v1\n{annotated}\n"));
        let why = refusal(&loaded);
        assert!(why.contains(needle), "{why}");
    }
}

/// What a peer of `workload`'s inbound port must present.
fn inbound_tls(loaded: &Loaded, workload: &str) -> Option<trellis_config::TlsMode> {
    inbound(loaded, workload).tls.map(|t| t.mode)
}

#[test]
fn port_level_mtls_takes_kubernetes_string_keys() {
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  mtls: { mode: STRICT }
  portLevelMtls:
    "18000": { mode: DISABLE }
"#,
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert_eq!(
        inbound_tls(&loaded, "httpbin-v1"),
        None,
        "DISABLE on that port"
    );
    assert_eq!(
        inbound_tls(&loaded, "sleep"),
        Some(trellis_config::TlsMode::Permissive)
    );

    for (spec, needle) in [
        ("selector: { matchLabels: { app: httpbin } }\n  portLevelMtls: { \"0\": { mode: DISABLE } }", "port 0 is outside"),
        ("portLevelMtls: { 8080: { mode: DISABLE } }", "cannot have port level mTLS"),
        ("selector: { matchLabels: { app: httpbin } }\n  portLevelMtls: { http: { mode: DISABLE } }", "not a port number"),
        ("selector: { matchLabels: { \"app*\": httpbin } }", "wildcards"),
    ] {
        let loaded = load(&format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: pa, namespace: foo }}\nspec:\n  {spec}\n"
        ));
        let why = refusal(&loaded);
        assert!(why.contains(needle), "{why}");
        assert!(why.contains("require mutual TLS"), "{why}");
    }
}

#[test]
fn a_refused_peer_authentication_makes_its_scope_strict() {
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: foo }
spec:
  mtls: { mode: PERMISSIVE }
  futureField: true
"#,
    );
    assert!(refusal(&loaded).contains("spec.futureField"));
    assert_eq!(
        inbound_tls(&loaded, "httpbin-v1"),
        Some(trellis_config::TlsMode::Strict)
    );
}

#[test]
fn clients_reach_a_disable_destination_in_plaintext() {
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  mtls: { mode: DISABLE }
"#,
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "foo", "sleep").unwrap();
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == "outbound|8000||httpbin.foo.svc.cluster.local")
        .unwrap();
    assert!(cluster.tls.is_none(), "{cluster:#?}");
}

#[test]
fn istio_validation_rules_for_authorization_policies() {
    for (spec, needle) in [
        (
            "rules: [{ from: [{ source: { ipBlocks: [\"10.0.0.0/33\"] } }] }]",
            "spec.rules[0].from[0].source.ipBlocks",
        ),
        (
            "rules: [{ from: [{ source: { ipBlocks: [\"10.0.0.0/+8\"] } }] }]",
            "prefix length",
        ),
        (
            "rules: [{ from: [{ source: { notRemoteIpBlocks: [\"nope\"] } }] }]",
            "not an IP address",
        ),
        (
            "rules: [{ from: [{ source: {} }] }]",
            "source: must not be empty",
        ),
        (
            "rules: [{ to: [{ operation: {} }] }]",
            "operation: must not be empty",
        ),
        (
            "rules: [{ from: [] }]",
            "spec.rules[0].from: must not be empty",
        ),
        (
            "rules: [{ from: [{ source: { principals: [\"\"] } }] }]",
            "empty values",
        ),
        (
            "rules: [{ from: [{ source: { serviceAccounts: [a/b], namespaces: [c] } }] }]",
            "serviceAccounts cannot be set",
        ),
        (
            "rules: [{ from: [{ source: { serviceAccounts: [\"a/*\"] } }] }]",
            "wildcards are not allowed",
        ),
        (
            "rules: [{ from: [{ source: { serviceAccounts: [a/b/c] } }] }]",
            "namespace/serviceAccount",
        ),
        (
            "rules: [{ from: [{ source: { trustDomains: [\"a/b\"] } }] }]",
            "has no '/'",
        ),
        (
            "rules: [{ to: [{ operation: { ports: [\"http\"] } }] }]",
            "\"http\" is not a port",
        ),
        (
            "rules: [{ to: [{ operation: { paths: [\"/a/{**}/b/{*}\"] } }] }]",
            "last operator",
        ),
        (
            "rules: [{ to: [{ operation: { paths: [\"/a/{x}\"] } }] }]",
            "outside a supported path template",
        ),
        (
            "rules: [{ when: [{ key: source.ip }] }]",
            "at least one of values or notValues",
        ),
        (
            "rules: [{ when: [{ key: source.ip, values: [\"300.1.1.1\"] }] }]",
            "spec.rules[0].when[0].values",
        ),
        (
            "rules: [{ when: [{ key: destination.port, values: [\"99999\"] }] }]",
            "is not a port",
        ),
        (
            "rules: [{ when: [{ key: destination.namespace, values: [x] }] }]",
            "metadata.namespace",
        ),
        (
            "rules: [{ when: [{ key: request.headers, values: [x] }] }]",
            "request.headers[<name>]",
        ),
        (
            "rules: [{ when: [{ key: bogus, values: [x] }] }]",
            "is not an attribute",
        ),
        ("action: DENY", "DENY policy without rules"),
        ("action: MAYBE", "is not an action"),
        ("selector: { matchLabels: { \"\": x } }", "empty key"),
    ] {
        let loaded = load(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: p, namespace: foo }}\nspec:\n  {spec}\n"
        ));
        let why = refusal(&loaded);
        assert!(why.contains(needle), "{spec}: {why}");
    }
    // Valid: every Source field, every supported when key, path templates.
    let loaded = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: all, namespace: foo }
spec:
  rules:
    - from:
        - source: { principals: ["cluster.local/ns/foo/sa/sleep"], notNamespaces: [bar], ipBlocks: ["10.0.0.0/8"], notIpBlocks: ["10.0.0.1"] }
        - source: { serviceAccounts: [sleep, "bar/x"], trustDomains: ["*.local"], remoteIpBlocks: ["2001:db8::/32"] }
      to:
        - operation: { hosts: ["*.foo"], ports: ["8000"], methods: [GET], paths: ["/books/{*}", "/static/{**}"], notPaths: ["/admin*"] }
      when:
        - { key: "request.headers[x-token]", values: ["*"] }
        - { key: source.serviceAccount, notValues: ["foo/blocked"] }
        - { key: source.trustDomain, values: ["cluster.local"] }
        - { key: destination.ip, values: ["127.0.0.0/8"] }
        - { key: connection.sni, values: ["*.svc.cluster.local"] }
        - { key: remote.ip, notValues: ["192.0.2.1"] }
"#,
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let p = policies_of(&loaded, "sleep");
    assert_eq!(
        p[0].rules[0].when[1].not_values,
        vec!["foo/blocked".to_string()]
    );
    // The proxy's engine takes what the control plane accepted.
    let registry = Registry::from_inputs(&loaded.inputs);
    let config = generate(&loaded.inputs, &registry, "foo", "sleep").unwrap();
    for l in &config.listeners {
        if let Some(a) = &l.authorization {
            trellis_authz_engine(a);
        }
    }
}

fn trellis_authz_engine(a: &trellis_config::Authorization) {
    if let Err(e) = trellis_authz::Engine::new(a) {
        panic!("the proxy refuses what the control plane accepted: {e}");
    }
}
