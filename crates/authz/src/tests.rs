//! Cases from Istio's AuthorizationPolicy documentation and reference.

use super::*;
use http::HeaderValue;

/// The same policies under every matching mode; `decide` checks that they agree.
struct Engines(Vec<Engine>);

fn modes() -> Vec<MatchMode> {
    let mut m = vec![MatchMode::Sequential];
    m.extend(
        trellis_matcher::Engine::available()
            .iter()
            .map(|e| MatchMode::Compiled(*e)),
    );
    m
}

fn engine(yaml: &str) -> Engines {
    let a: Authorization = serde_yaml::from_str(yaml).unwrap();
    Engines(
        modes()
            .into_iter()
            .map(|m| Engine::with_mode(&a, m).unwrap())
            .collect(),
    )
}

impl Engines {
    fn evaluate(&self, a: &Attributes) -> Verdict {
        let mut verdicts = self.0.iter().map(|e| e.evaluate(a));
        let first = verdicts.next().unwrap();
        for v in verdicts {
            assert_eq!(v.decision, first.decision);
            assert_eq!(v.audited, first.audited);
            assert_eq!(v.dry_run, first.dry_run);
        }
        first
    }
}

struct Req {
    ip: &'static str,
    principal: Option<&'static str>,
    port: u16,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    tcp: bool,
    remote_ip: Option<&'static str>,
    sni: Option<&'static str>,
    /// A verified JWT: issuer, subject, audiences, presenter, claims.
    jwt: Option<Jwt>,
}

struct Jwt {
    iss: &'static str,
    sub: &'static str,
    aud: Vec<String>,
    azp: Option<&'static str>,
    claims: Map<String, Value>,
}

fn jwt(iss: &'static str, sub: &'static str, claims: Value) -> Option<Jwt> {
    Some(Jwt {
        iss,
        sub,
        aud: vec!["app".into()],
        azp: Some("web"),
        claims: claims.as_object().cloned().unwrap_or_default(),
    })
}

fn req() -> Req {
    Req {
        ip: "10.1.2.3",
        principal: Some("cluster.local/ns/default/sa/sleep"),
        port: 8080,
        method: "GET",
        path: "/info",
        host: "httpbin.foo:8000",
        headers: vec![],
        tcp: false,
        remote_ip: None,
        sni: None,
        jwt: None,
    }
}

fn decide(e: &Engines, r: &Req) -> Decision {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.insert(*k, HeaderValue::from_static(v));
    }
    let a = Attributes {
        source_ip: r.ip.parse().unwrap(),
        remote_ip: r.remote_ip.unwrap_or(r.ip).parse().unwrap(),
        principal: r.principal,
        destination_ip: "10.9.9.9".parse().unwrap(),
        destination_port: r.port,
        sni: r.sni,
        http: (!r.tcp).then_some(HttpAttributes {
            method: r.method,
            path: r.path,
            host: r.host,
            headers: &headers,
            auth: r.jwt.as_ref().map(|j| RequestAuth {
                issuer: j.iss,
                subject: j.sub,
                audiences: &j.aud,
                presenter: j.azp,
                claims: &j.claims,
            }),
        }),
    };
    e.evaluate(&a).decision
}

fn allowed(e: &Engines, r: &Req) -> bool {
    decide(e, r) == Decision::Allow
}

#[test]
fn no_policies_allow_everything() {
    assert!(allowed(&engine("policies: []"), &req()));
}

#[test]
fn allow_nothing_and_deny_all_and_allow_all() {
    // `spec: {}` is an ALLOW policy with no rules: it matches nothing.
    assert!(!allowed(
        &engine("policies: [{ name: allow-nothing }]"),
        &req()
    ));
    let deny_all = engine("policies: [{ name: deny-all, action: DENY, rules: [{}] }]");
    assert_eq!(decide(&deny_all, &req()), Decision::Deny("deny-all".into()));
    assert!(allowed(
        &engine("policies: [{ name: allow-all, action: ALLOW, rules: [{}] }]"),
        &req()
    ));
}

#[test]
fn httpbin_allow_by_principal_or_namespace_and_method_and_header() {
    // Istio reference example: ALLOW from sleep or from namespace dev, to GET on /info*,
    // when the version header is v1 or v2.
    let e = engine(
        r#"
policies:
  - name: httpbin
    action: ALLOW
    rules:
      - from:
          - source: { principals: ["cluster.local/ns/default/sa/sleep"] }
          - source: { namespaces: ["dev"] }
        to:
          - operation: { methods: ["GET"], paths: ["/info*"] }
        when:
          - key: request.headers[version]
            values: ["v1", "v2"]
"#,
    );
    let mut r = req();
    r.headers = vec![("version", "v1")];
    assert!(allowed(&e, &r));
    r.headers = vec![("version", "v3")];
    assert!(!allowed(&e, &r), "wrong header value");
    r.headers = vec![];
    assert!(!allowed(&e, &r), "missing header");
    r.headers = vec![("version", "v2")];
    r.method = "POST";
    assert!(!allowed(&e, &r), "method");
    r.method = "GET";
    r.path = "/status";
    assert!(!allowed(&e, &r), "path");
    r.path = "/info/x";
    r.principal = Some("cluster.local/ns/dev/sa/anything");
    assert!(allowed(&e, &r), "namespace from the principal");
    r.principal = None;
    assert!(!allowed(&e, &r), "plaintext has no principal or namespace");
}

#[test]
fn deny_before_allow_and_not_fields() {
    // Deny requests not from namespace foo, on top of an allow-all.
    let e = engine(
        r#"
policies:
  - name: allow-all
    rules: [{}]
  - name: deny-other-namespaces
    action: DENY
    rules:
      - from: [{ source: { not_namespaces: ["foo"] } }]
"#,
    );
    let mut r = req();
    r.principal = Some("cluster.local/ns/foo/sa/x");
    assert!(allowed(&e, &r));
    r.principal = Some("cluster.local/ns/bar/sa/x");
    assert_eq!(
        decide(&e, &r),
        Decision::Deny("deny-other-namespaces".into())
    );
    r.principal = None;
    assert!(!allowed(&e, &r), "no namespace is not foo");
}

#[test]
fn deny_paths_with_prefix_suffix_and_presence() {
    let e = engine(
        r#"
policies:
  - name: deny-admin
    action: DENY
    rules:
      - to: [{ operation: { paths: ["/admin*", "*.secret"] } }]
      - when: [{ key: "request.headers[x-debug]", values: ["*"] }]
"#,
    );
    for (path, ok) in [
        ("/admin", false),
        ("/admin/users", false),
        ("/a/b.secret", false),
        ("/public", true),
    ] {
        let mut r = req();
        r.path = path;
        assert_eq!(allowed(&e, &r), ok, "{path}");
    }
    let mut r = req();
    r.headers = vec![("x-debug", "1")];
    assert!(!allowed(&e, &r), "presence");
}

#[test]
fn ip_blocks_ports_and_hosts() {
    let e = engine(
        r#"
policies:
  - name: office
    rules:
      - from: [{ source: { ip_blocks: ["10.1.0.0/16", "2001:db8::/32"], not_ip_blocks: ["10.1.9.9"] } }]
        to: [{ operation: { ports: ["8080"], hosts: ["HTTPBIN.foo", "*.example.com"] } }]
"#,
    );
    let mut r = req();
    assert!(allowed(&e, &r), "host without port, case-insensitive");
    r.ip = "10.1.9.9";
    assert!(!allowed(&e, &r), "not_ip_blocks");
    r.ip = "::ffff:10.1.0.1";
    assert!(allowed(&e, &r), "v4-mapped");
    r.ip = "2001:db8::7";
    assert!(allowed(&e, &r), "v6 block");
    r.ip = "192.168.0.1";
    assert!(!allowed(&e, &r));
    let mut r = req();
    r.port = 9090;
    assert!(!allowed(&e, &r), "port");
    r.port = 8080;
    r.host = "api.example.com";
    assert!(allowed(&e, &r), "suffix host");
    r.host = "example.com";
    assert!(!allowed(&e, &r));
}

#[test]
fn when_conditions_on_source_and_destination() {
    let e = engine(
        r#"
policies:
  - name: conds
    rules:
      - when:
          - { key: source.ip, values: ["10.0.0.0/8"] }
          - { key: source.principal, values: ["cluster.local/ns/default/*"] }
          - { key: destination.port, not_values: ["9090"] }
"#,
    );
    assert!(allowed(&e, &req()));
    let mut r = req();
    r.port = 9090;
    assert!(!allowed(&e, &r));
    let mut r = req();
    r.principal = Some("cluster.local/ns/other/sa/x");
    assert!(!allowed(&e, &r));
}

#[test]
fn tcp_applies_the_l4_subset() {
    let e = engine(
        r#"
policies:
  - name: allow-get
    rules: [{ to: [{ operation: { methods: ["GET"] } }] }]
  - name: allow-sleep
    rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/sleep"] } }] }]
"#,
    );
    let mut r = req();
    r.tcp = true;
    r.principal = Some("cluster.local/ns/default/sa/other");
    // The HTTP-only ALLOW rule never matches on TCP, and the principal rule does not.
    assert!(!allowed(&e, &r));
    r.principal = Some("cluster.local/ns/default/sa/sleep");
    assert!(allowed(&e, &r));

    let deny = engine(
        r#"
policies:
  - name: deny-admin-from-ns
    action: DENY
    rules:
      - from: [{ source: { namespaces: ["default"] } }]
        to: [{ operation: { paths: ["/admin"] } }]
"#,
    );
    let mut r = req();
    r.tcp = true;
    // On TCP the path is ignored: the namespace alone denies.
    assert_eq!(
        decide(&deny, &r),
        Decision::Deny("deny-admin-from-ns".into())
    );
    r.tcp = false;
    assert!(allowed(&deny, &r), "over HTTP the path does not match");
}

#[test]
fn audit_reports_without_deciding() {
    let e = engine(
        r#"
policies:
  - name: audit-info
    action: AUDIT
    rules: [{ to: [{ operation: { paths: ["/info"] } }] }]
"#,
    );
    let mut headers = HeaderMap::new();
    headers.insert("a", HeaderValue::from_static("b"));
    let a = Attributes {
        source_ip: "127.0.0.1".parse().unwrap(),
        remote_ip: "127.0.0.1".parse().unwrap(),
        principal: None,
        destination_ip: "127.0.0.1".parse().unwrap(),
        destination_port: 80,
        sni: None,
        http: Some(HttpAttributes {
            method: "GET",
            path: "/info",
            host: "x",
            headers: &headers,
            auth: None,
        }),
    };
    let v = e.evaluate(&a);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.audited, vec!["audit-info".to_string()]);
}

#[test]
fn service_accounts_trust_domains_and_remote_ips() {
    let e = engine(
        r#"
policies:
  - name: by-identity
    rules:
      - from: [{ source: { service_accounts: ["default/sleep"], trust_domains: ["cluster.local"] } }]
  - name: by-remote
    rules:
      - from: [{ source: { remote_ip_blocks: ["192.0.2.0/24"], not_remote_ip_blocks: ["192.0.2.9"] } }]
"#,
    );
    assert!(allowed(&e, &req()), "default/sleep in cluster.local");
    let mut r = req();
    r.principal = Some("other.domain/ns/default/sa/sleep");
    assert!(!allowed(&e, &r), "another trust domain");
    r.principal = Some("cluster.local/ns/prod/sa/sleep");
    assert!(!allowed(&e, &r), "the same name in another namespace");
    r.principal = Some("cluster.local/ns/default/sa/sleep/extra");
    assert!(!allowed(&e, &r), "not a service account identity");
    r.principal = None;
    r.remote_ip = Some("192.0.2.7");
    assert!(allowed(&e, &r), "remote IP in the block");
    r.remote_ip = Some("192.0.2.9");
    assert!(!allowed(&e, &r), "remote IP excluded");
    r.ip = "192.0.2.7";
    r.remote_ip = Some("198.51.100.1");
    assert!(
        !allowed(&e, &r),
        "the peer address is not the remote address"
    );
}

#[test]
fn every_istio_when_key_but_request_auth() {
    let e = engine(
        r#"
policies:
  - name: conds
    rules:
      - when:
          - { key: source.serviceAccount, values: ["default/sleep"] }
          - { key: source.trustDomain, values: ["cluster.*"] }
          - { key: destination.ip, values: ["10.9.0.0/16"] }
          - { key: remote.ip, not_values: ["203.0.113.0/24"] }
          - { key: connection.sni, values: ["*.svc.cluster.local"] }
"#,
    );
    let mut r = req();
    r.sni = Some("outbound_.8080_._.httpbin.foo.svc.cluster.local");
    assert!(allowed(&e, &r));
    r.remote_ip = Some("203.0.113.5");
    assert!(!allowed(&e, &r), "remote.ip notValues");
    let mut r = req();
    assert!(!allowed(&e, &r), "no SNI");
    r.sni = Some("outbound_.8080_._.httpbin.foo.svc.cluster.local");
    r.principal = Some("spiffe.example/ns/default/sa/sleep");
    assert!(!allowed(&e, &r), "trust domain");
}

#[test]
fn path_templates() {
    let e = engine(
        r#"
policies:
  - name: deny-templates
    action: DENY
    rules:
      - to: [{ operation: { paths: ["/books/{*}/pages", "/files/{**}"] } }]
"#,
    );
    for (path, ok) in [
        ("/books/1/pages", false),
        ("/books/a.b~c/pages", false),
        ("/books//pages", true),
        ("/books/1/2/pages", true),
        ("/books/1/pages/x", true),
        ("/files/", false),
        ("/files/a/b/c.txt", false),
        ("/files", true),
        ("/filesx/a", true),
    ] {
        let mut r = req();
        r.path = path;
        assert_eq!(allowed(&e, &r), ok, "{path}");
    }
}

#[test]
fn dry_run_policies_report_and_never_decide() {
    let e = engine(
        r#"
policies:
  - name: allow-all
    rules: [{}]
  - name: would-deny-post
    action: DENY
    dry_run: true
    rules: [{ to: [{ operation: { methods: ["POST"] } }] }]
  - name: would-allow-only-sleep
    dry_run: true
    rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/sleep"] } }] }]
"#,
    );
    let mut r = req();
    r.method = "POST";
    let mut headers = HeaderMap::new();
    headers.insert("a", HeaderValue::from_static("b"));
    let verdict = |r: &Req| {
        let a = Attributes {
            source_ip: r.ip.parse().unwrap(),
            remote_ip: r.ip.parse().unwrap(),
            principal: r.principal,
            destination_ip: "10.9.9.9".parse().unwrap(),
            destination_port: r.port,
            sni: None,
            http: Some(HttpAttributes {
                method: r.method,
                path: r.path,
                host: r.host,
                headers: &headers,
                auth: None,
            }),
        };
        let v = e.evaluate(&a);
        (v.decision, v.dry_run)
    };
    assert_eq!(
        verdict(&r),
        (
            Decision::Allow,
            Some(Decision::Deny("would-deny-post".into()))
        )
    );
    r.method = "GET";
    assert_eq!(verdict(&r), (Decision::Allow, Some(Decision::Allow)));
    r.principal = Some("cluster.local/ns/default/sa/other");
    assert_eq!(
        verdict(&r),
        (Decision::Allow, Some(Decision::Allow)),
        "allow-all is one of the ALLOW policies the dry run adds to"
    );
    let only_dry = engine("policies: [{ name: p, dry_run: true }]");
    let v = only_dry.evaluate(&Attributes {
        source_ip: "10.0.0.1".parse().unwrap(),
        remote_ip: "10.0.0.1".parse().unwrap(),
        principal: None,
        destination_ip: "10.0.0.2".parse().unwrap(),
        destination_port: 80,
        sni: None,
        http: None,
    });
    assert_eq!(v.decision, Decision::Allow, "a dry-run ALLOW never denies");
    assert_eq!(
        v.dry_run,
        Some(Decision::Deny("no ALLOW policy matched".into()))
    );
}

#[test]
fn refuses_bad_ip_blocks_and_keys() {
    for bad in ["10.0.0.0/33", "x", "::/129", "10.0.0.0/+8", "10.0.0.0/08"] {
        assert!(check_ip_block(bad).is_err(), "{bad}");
    }
    assert!(check_condition_key("experimental.envoy.filters.x[y]").is_err());
    assert!(check_condition_key("request.headers[bad header]").is_err());
    assert!(check_condition_key("request.headers[x-ok]").is_ok());
}

mod differential {
    //! Generated policy sets and requests: sequential matching and every compiled engine
    //! give the same decision and the same audit list.
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        let atom = prop::sample::select(vec![
            "/api",
            "/api/v1",
            "/admin",
            ".json",
            "x",
            "",
            "ns-a",
            "GET",
            "8080",
            "foo.com",
            "*.example.com",
            "café",
            "/api/{*}",
            "/{*}/v1/{**}",
        ]);
        (atom, 0..4u8).prop_map(|(a, form)| match form {
            0 => a.to_string(),
            1 => format!("{a}*"),
            2 => format!("*{a}"),
            _ => {
                if a.is_empty() {
                    "*".into()
                } else {
                    a.to_string()
                }
            }
        })
    }

    fn values() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(value(), 0..3)
    }

    fn rule() -> impl Strategy<Value = AuthorizationRule> {
        (
            values(),
            values(),
            values(),
            values(),
            values(),
            values(),
            values(),
        )
            .prop_map(|(pr, ns, m, p, np, h, hv)| {
                let mut r = AuthorizationRule::default();
                if !pr.is_empty() || !ns.is_empty() {
                    r.from.push(trellis_config::RuleFrom {
                        source: trellis_config::RuleSource {
                            principals: pr,
                            not_namespaces: ns,
                            ..Default::default()
                        },
                    });
                }
                if !m.is_empty() || !p.is_empty() || !np.is_empty() || !h.is_empty() {
                    r.to.push(trellis_config::RuleTo {
                        operation: trellis_config::RuleOperation {
                            methods: m,
                            paths: p,
                            not_paths: np,
                            hosts: h,
                            ..Default::default()
                        },
                    });
                }
                if !hv.is_empty() {
                    r.when.push(RuleCondition {
                        key: "request.headers[x-v]".into(),
                        values: hv,
                        not_values: vec![],
                    });
                }
                r
            })
    }

    fn policies() -> impl Strategy<Value = Authorization> {
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    AuthorizationAction::Allow,
                    AuthorizationAction::Deny,
                    AuthorizationAction::Audit,
                ]),
                prop::collection::vec(rule(), 0..3),
                any::<bool>(),
            ),
            0..5,
        )
        .prop_map(|ps| Authorization {
            policies: ps
                .into_iter()
                .enumerate()
                .map(
                    |(i, (action, rules, dry_run))| trellis_config::AuthorizationPolicy {
                        name: format!("p{i}"),
                        action,
                        dry_run,
                        rules,
                    },
                )
                .collect(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn every_mode_decides_alike(
            config in policies(),
            path in prop::sample::select(vec!["/api", "/api/v1/x", "/admin", "/a.json", "/", "/café"]),
            method in prop::sample::select(vec!["GET", "POST"]),
            host in prop::sample::select(vec!["foo.com:80", "a.example.com", "FOO.com", "x"]),
            principal in prop::sample::select(vec![None, Some("td/ns/ns-a/sa/x"), Some("/api"), Some("x")]),
            header in prop::sample::select(vec![None, Some("x"), Some("/api/v1"), Some("a.json")]),
            tcp in any::<bool>(),
        ) {
            let engines = Engines(modes().into_iter().map(|m| Engine::with_mode(&config, m).unwrap()).collect());
            let mut headers = HeaderMap::new();
            if let Some(h) = header {
                headers.insert("x-v", HeaderValue::from_static(h));
            }
            let a = Attributes {
                source_ip: "10.0.0.1".parse().unwrap(),
                remote_ip: "10.0.0.1".parse().unwrap(),
                principal,
                destination_ip: "10.0.0.2".parse().unwrap(),
                destination_port: 8080,
                sni: None,
                http: (!tcp).then_some(HttpAttributes { method, path, host, headers: &headers, auth: None }),
            };
            engines.evaluate(&a);
        }
    }
}

/// Istio's "require JWT" task: `request_principals: ["*"]` admits any verified token.
#[test]
fn request_principals_need_a_verified_token() {
    let require = engine(
        "policies: [{ name: require-jwt, rules: [{ from: [{ source: { request_principals: ['*'] } }] }] }]",
    );
    assert!(!allowed(&require, &req()), "no token");
    let with = Req {
        jwt: jwt(
            "testing@secure.istio.io",
            "testing@secure.istio.io",
            serde_json::json!({}),
        ),
        ..req()
    };
    assert!(allowed(&require, &with));
    let tcp = Req { tcp: true, ..with };
    assert!(
        !allowed(&require, &tcp),
        "HTTP-only on TCP: the ALLOW rule never matches"
    );

    let forms = |value: &str, iss: &'static str, sub: &'static str| {
        let e = engine(&format!(
            "policies: [{{ name: p, rules: [{{ from: [{{ source: {{ request_principals: ['{value}'] }} }}] }}] }}]"
        ));
        allowed(
            &e,
            &Req {
                jwt: jwt(iss, sub, serde_json::json!({})),
                ..req()
            },
        )
    };
    assert!(forms(
        "https://accounts.example.com/alice",
        "https://accounts.example.com",
        "alice"
    ));
    assert!(!forms(
        "https://accounts.example.com/alice",
        "https://accounts.example.com",
        "bob"
    ));
    assert!(forms(
        "https://accounts.example.com/*",
        "https://accounts.example.com",
        "bob"
    ));
    assert!(!forms(
        "https://accounts.example.com/*",
        "https://evil.example",
        "bob"
    ));
    assert!(forms("*/alice", "https://any.example", "alice"));
    assert!(forms(
        "*.example.com/alice",
        "https://accounts.example.com",
        "alice"
    ));
    assert!(forms("*alice", "https://any", "malice"));
    assert!(forms("issuer-a*", "issuer-abc", "x"));
    assert!(!forms("*", "", "x"), "* needs an issuer and a subject");

    let deny_not = engine(
        "policies: [{ name: d, action: DENY, rules: [{ from: [{ source: { not_request_principals: ['*'] } }] }] }]",
    );
    assert!(!allowed(&deny_not, &req()), "no token: denied");
    assert!(allowed(
        &deny_not,
        &Req {
            jwt: jwt("i", "s", serde_json::json!({})),
            ..req()
        }
    ));
}

#[test]
fn request_auth_conditions() {
    let claims = serde_json::json!({"groups": ["dev", "ops"], "org": {"team": "blue"},
        "scope": ["read", "write"], "admin": true});
    let with = || Req {
        jwt: jwt("iss", "sub", claims.clone()),
        ..req()
    };
    let when = |key: &str, values: &str| {
        engine(&format!(
            "policies: [{{ name: p, rules: [{{ when: [{{ key: '{key}', values: {values} }}] }}] }}]"
        ))
    };
    assert!(allowed(
        &when("request.auth.claims[groups]", "[ops]"),
        &with()
    ));
    assert!(!allowed(
        &when("request.auth.claims[groups]", "[qa]"),
        &with()
    ));
    assert!(allowed(
        &when("request.auth.claims[org][team]", "[bl*]"),
        &with()
    ));
    assert!(allowed(
        &when("request.auth.claims[scope]", "[write]"),
        &with()
    ));
    assert!(
        !allowed(&when("request.auth.claims[admin]", "['true']"), &with()),
        "strings only"
    );
    assert!(allowed(
        &when("request.auth.principal", "[iss/sub]"),
        &with()
    ));
    assert!(allowed(&when("request.auth.audiences", "[app]"), &with()));
    assert!(allowed(&when("request.auth.presenter", "['*']"), &with()));
    assert!(
        !allowed(&when("request.auth.claims[groups]", "[ops]"), &req()),
        "no token"
    );

    let deny = engine(
        "policies: [{ name: d, action: DENY, rules: [{ when: [{ key: 'request.auth.claims[groups]', not_values: [admins] }] }] }]",
    );
    assert!(!allowed(&deny, &with()));
    assert!(!allowed(&deny, &req()), "no token: notValues matches");
    assert!(
        !allowed(&deny, &Req { tcp: true, ..req() }),
        "on TCP a DENY ignores HTTP-only conditions"
    );
    assert!(check_condition_key("request.auth.claims[]").is_err());
    assert!(check_condition_key("request.auth.claims[a]b").is_err());
    assert!(check_condition_key("request.auth.claims[a[b]").is_err());
    assert!(check_condition_key("request.auth.claims[a][b]").is_ok());
}
