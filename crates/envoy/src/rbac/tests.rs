use envoy_types::pb::envoy::config::rbac::v3::{permission::Rule, Permission};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use prost::Message;
use trellis_config::Authorization;

use super::{http_filters, network_filters, tcp_reading, Reader};

/// Every field and condition key, both polarities, every value form; conditions with the
/// request's side (destination, headers, server name) before the source's, which is the
/// order they read back in.
const POLICIES: &str = r#"
policies:
  - name: default.audit-admin
    action: AUDIT
    rules: [{ to: [{ operation: { paths: ["/admin/{*}/x", "/files/{**}"] } }] }]
  - name: default.deny-bad
    action: DENY
    rules:
      - from: [{ source: { not_request_principals: ["*"], ip_blocks: ["10.0.0.0/8", "2001:db8::/32"] } }]
        to: [{ operation: { not_methods: [CONNECT], hosts: ["*.example.com", "Shop.Example"] } }]
      - from: [{ source: { remote_ip_blocks: ["192.0.2.7"], not_remote_ip_blocks: ["::1"] } }]
  - name: default.dry
    action: DENY
    dry_run: true
    rules: [{ to: [{ operation: { ports: ["8080"] } }] }]
  - name: default.nothing
    action: ALLOW
  - name: default.reviews
    action: ALLOW
    rules:
      - from:
          - source: { principals: ["cluster.local/ns/default/sa/productpage", "cluster.local/ns/a*", "*/sa/ratings", "*"] }
          - source: { namespaces: [default, "team-*", "*-prod", "*"], not_namespaces: [kube-system] }
          - source: { service_accounts: [default/reviews, "ops/*"], trust_domains: [cluster.local, "*.corp"], not_trust_domains: [evil.example] }
          - source: { request_principals: ["https://issuer.example/alice", "iss/*"] }
        to:
          - operation: { methods: [GET, "HEAD"], paths: ["/reviews/*", "*.json", /exact, "*"], not_paths: ["/reviews/secret"] }
          - operation: { ports: ["9080", "15000"], not_ports: ["22"], not_hosts: ["internal"] }
          - operation: {}
        when:
          - { key: "request.headers[x-user]", values: [jason, "j*"], not_values: [bob] }
          - { key: destination.ip, values: ["10.1.2.3", "fd00::/8"] }
          - { key: destination.port, not_values: ["81"] }
          - { key: connection.sni, values: ["*.svc.cluster.local"] }
          - { key: source.ip, values: ["127.0.0.1"] }
          - { key: remote.ip, not_values: ["203.0.113.0/24"] }
          - { key: source.namespace, values: [default] }
          - { key: source.principal, values: ["cluster.local/ns/default/sa/x"] }
          - { key: source.serviceAccount, values: [default/x] }
          - { key: source.trustDomain, values: [cluster.local] }
          - { key: request.auth.principal, values: ["iss/sub"] }
          - { key: request.auth.audiences, values: [app, "web*"] }
          - { key: request.auth.presenter, not_values: [evil] }
          - { key: "request.auth.claims[groups]", values: [admins] }
          - { key: "request.auth.claims[realm][role]", values: ["*"] }
      - {}
"#;

fn read(http: bool, filters: &[envoy_types::pb::google::protobuf::Any]) -> Option<Authorization> {
    let mut r = Reader::default();
    for f in filters {
        match http {
            true => r.http(f),
            false => r.network(f),
        }
        .unwrap();
    }
    r.finish()
}

#[test]
fn policies_read_back_from_http_rbac_as_they_were_written() {
    let a: Authorization = serde_yaml::from_str(POLICIES).unwrap();
    let filters = http_filters(&a).unwrap();
    // AUDIT (LOG), DENY (with its dry-run policy as shadow rules), ALLOW.
    assert_eq!(filters.len(), 3);
    let deny = HttpRbac::decode(filters[1].value.as_slice()).unwrap();
    assert!(deny.rules.is_some() && deny.shadow_rules.is_some());
    let mut names: Vec<_> = deny.rules.unwrap().policies.into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["default.deny-bad/rule[0]", "default.deny-bad/rule[1]"]
    );
    assert_eq!(read(true, &filters), Some(a.clone()));
    // The same bytes every time (the policies are a map).
    assert_eq!(http_filters(&a).unwrap(), filters);
}

#[test]
fn on_tcp_allow_rules_naming_http_go_and_deny_rules_lose_their_http_fields() {
    let a: Authorization = serde_yaml::from_str(POLICIES).unwrap();
    let tcp = tcp_reading(&a);
    let rules = |name: &str| {
        tcp.policies
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .rules
            .clone()
    };
    // Both ALLOW rules of reviews name HTTP attributes, or none (the empty rule stays).
    assert_eq!(rules("default.reviews").len(), 1);
    assert!(rules("default.reviews")[0].from.is_empty());
    let deny = rules("default.deny-bad");
    assert!(deny[0].from[0].source.not_request_principals.is_empty());
    assert_eq!(deny[0].from[0].source.ip_blocks.len(), 2);
    assert!(deny[0].to[0].operation.not_methods.is_empty());
    assert!(deny[0].to[0].operation.hosts.is_empty());
    assert_eq!(read(false, &network_filters(&a, "l").unwrap()), Some(tcp));
}

#[test]
fn rbac_trellis_did_not_write_is_refused_by_name() {
    let a: Authorization = serde_yaml::from_str(
        "policies: [{ name: p, rules: [{ to: [{ operation: { methods: [GET] } }] }] }]",
    )
    .unwrap();
    let good = HttpRbac::decode(http_filters(&a).unwrap()[0].value.as_slice()).unwrap();
    let refused = |change: &dyn Fn(&mut HttpRbac)| {
        let mut r = good.clone();
        change(&mut r);
        let any = crate::any(super::HTTP_RBAC_TYPE, &r);
        let mut reader = Reader::default();
        reader.http(&any).expect_err("refused")
    };
    let policy = |r: &mut HttpRbac| {
        r.rules
            .as_mut()
            .unwrap()
            .policies
            .get_mut("p/rule[0]")
            .unwrap()
            .clone()
    };
    let set = |r: &mut HttpRbac, p| {
        r.rules
            .as_mut()
            .unwrap()
            .policies
            .insert("p/rule[0]".into(), p);
    };
    let e = refused(&|r| {
        let mut p = policy(r);
        p.permissions.push(Permission {
            rule: Some(Rule::Any(true)),
        });
        set(r, p)
    });
    assert!(e.contains("one permission and one principal"), "{e}");
    let e = refused(&|r| {
        let mut p = policy(r);
        p.permissions = vec![Permission {
            rule: Some(Rule::Any(true)),
        }];
        set(r, p)
    });
    assert!(e.contains("permissions[0]"), "{e}");
    let e = refused(&|r| {
        let mut p = policy(r);
        p.condition = Some(Default::default());
        set(r, p)
    });
    assert!(e.contains("CEL"), "{e}");
    let e = refused(&|r| r.rules.as_mut().unwrap().action = 7);
    assert!(e.contains("action"), "{e}");
    let e =
        refused(&|r| r.rules.as_mut().unwrap().audit_logging_options = Some(Default::default()));
    assert!(e.contains("audit_logging_options"), "{e}");
    let e = refused(&|r| r.matcher = Some(Default::default()));
    assert!(e.contains("matcher"), "{e}");
    // Two ALLOW filters must both allow in Envoy: not Istio's model.
    let any = http_filters(&a).unwrap().remove(0);
    let mut reader = Reader::default();
    reader.http(&any).unwrap();
    assert!(reader.http(&any).unwrap_err().contains("second"));
}

#[test]
fn an_allow_filter_without_policies_allows_nothing() {
    let any = crate::any(
        super::HTTP_RBAC_TYPE,
        &crate::structs::HttpRbac {
            rules: Some(crate::structs::RbacRules::default()),
            ..Default::default()
        },
    );
    let a = read(true, &[any]).unwrap();
    assert_eq!(a.policies.len(), 1);
    assert!(a.policies[0].rules.is_empty());
}
