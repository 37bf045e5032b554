use super::*;

const GOOD: &str = r#"
listeners:
  - name: web
    addresses: ["127.0.0.1:0", "[::1]:0"]
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: { prefix: "/api/" }
              route:
                weighted_clusters: [{ name: a, weight: 90 }, { name: b, weight: 10 }]
                retry_policy: { retry_on: "5xx,reset", num_retries: 2, per_try_timeout: 250ms }
            - match: { regex: "/items/[0-9]+" }
              direct_response: { status: 200, body: "item" }
  - name: raw
    address: 127.0.0.1:0
    tcp: { cluster: a }
clusters:
  - name: a
    endpoints: ["127.0.0.1:8080", { address: "[::1]:8080", weight: 3 }]
  - name: b
    type: dns
    endpoints: ["localhost:8081"]
    lb_policy: least_request
"#;

fn errors(yaml: &str) -> Vec<FieldError> {
    Config::parse(yaml, "mesh.yaml").unwrap_err().errors
}

#[test]
fn good_config_parses_with_defaults() {
    let c = Config::parse(GOOD, "mesh.yaml").unwrap();
    assert_eq!(c.admin.address, "127.0.0.1:15000");
    let route = c.listeners[0].http.as_ref().unwrap().virtual_hosts[0].routes[0]
        .route
        .as_ref()
        .unwrap();
    assert_eq!(route.timeout, Dur::secs(15));
    assert_eq!(c.clusters[0].circuit_breakers.max_requests, 1024);
    assert_eq!(c.clusters[0].endpoints[1].weight(), 3);
}

#[test]
fn unknown_field_names_path_and_line() {
    let yaml = GOOD.replace("num_retries: 2", "num_retrys: 2");
    let e = errors(&yaml);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].path
            .starts_with("listeners[0].http.virtual_hosts[0].routes[0].route.retry_policy"),
        "{e:?}"
    );
    assert!(e[0].message.contains("num_retrys"), "{e:?}");
}

#[test]
fn bad_regex_names_field_and_value() {
    let yaml = GOOD.replace("/items/[0-9]+", "/items/[0-9+");
    let e = errors(&yaml);
    assert_eq!(
        e[0].path,
        "listeners[0].http.virtual_hosts[0].routes[1].match.regex"
    );
    assert!(e[0].message.contains("/items/[0-9+"), "{e:?}");
}

#[test]
fn undefined_cluster_and_bad_address_are_both_reported() {
    let yaml = GOOD
        .replace("name: b, weight: 10", "name: nope, weight: 10")
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:80800\"");
    let e = errors(&yaml);
    let text = ConfigError {
        file: "mesh.yaml".into(),
        errors: e.clone(),
    }
    .to_string();
    assert!(text.contains("mesh.yaml: listeners[0].http.virtual_hosts[0].routes[0].route.weighted_clusters[1].name: cluster \"nope\" is not defined"), "{text}");
    assert!(
        text.contains("clusters[0].endpoints[0]: \"127.0.0.1:80800\" is not an IP:port"),
        "{text}"
    );
}

#[test]
fn bad_duration_and_enum() {
    let e = errors(&GOOD.replace("per_try_timeout: 250ms", "per_try_timeout: 250"));
    assert!(e[0].message.contains("no unit"), "{e:?}");
    let e = errors(&GOOD.replace("least_request", "fastest"));
    assert_eq!(e[0].path, "clusters[1].lb_policy");
}

#[test]
fn one_of_rules() {
    let yaml = GOOD.replace(
        "direct_response: { status: 200, body: \"item\" }",
        "direct_response: { status: 200 }\n              redirect: { host: x }",
    );
    let e = errors(&yaml);
    assert!(
        e[0].message.contains("exactly one of route, redirect"),
        "{e:?}"
    );
    let e = errors(&GOOD.replace("retry_on: \"5xx,reset\"", "retry_on: \"5xx,sometimes\""));
    assert!(e[0].message.contains("\"sometimes\""), "{e:?}");
}

#[test]
fn duplicate_domains_and_wildcards() {
    let yaml = GOOD.replace("domains: [\"*\"]", "domains: [\"a.*.com\", \"x\", \"X\"]");
    let e = errors(&yaml);
    assert!(e.iter().any(|e| e.path.ends_with("domains[0]")), "{e:?}");
    assert!(
        e.iter()
            .any(|e| e.path.ends_with("domains[2]") && e.message.contains("more than one")),
        "{e:?}"
    );
}

#[test]
fn yaml_syntax_error_is_reported() {
    let e = errors("listeners: [\n");
    assert_eq!(e.len(), 1);
    assert!(!e[0].message.is_empty());
}

#[test]
fn a_plaintext_endpoint_needs_a_cluster_that_originates_tls() {
    let yaml = GOOD.replace("weight: 3 }", "weight: 3, plaintext: true }");
    let e = errors(&yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "clusters[0].endpoints[1].plaintext");
    assert!(e[0].message.contains("no tls"), "{e:?}");
}

#[test]
fn a_cluster_without_endpoints_is_valid() {
    let yaml = GOOD.replace("endpoints: [\"localhost:8081\"]", "endpoints: []");
    let c = Config::parse(&yaml, "mesh.yaml").unwrap();
    assert!(c.clusters[1].endpoints.is_empty());
}

#[test]
fn weighted_cluster_header_edits_are_checked_like_a_routes() {
    let yaml = GOOD.replace(
        "{ name: b, weight: 10 }",
        "{ name: b, weight: 10, request_headers_to_add: [{ name: \"bad name\", value: x }], response_headers_to_remove: [\"x y\"] }",
    );
    let e = errors(&yaml);
    let fields: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    let wc = "listeners[0].http.virtual_hosts[0].routes[0].route.weighted_clusters[1]";
    assert!(
        fields.contains(&format!("{wc}.request_headers_to_add[0].name").as_str()),
        "{e:?}"
    );
    assert!(
        fields.contains(&format!("{wc}.response_headers_to_remove[0]").as_str()),
        "{e:?}"
    );
}
