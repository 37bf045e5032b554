use crate::harness::*;
use std::collections::HashMap;

/// (method, path and query, request headers, expected body)
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn routing_table_first_match_every_match_kind() {
    let a = app("a", &[]);
    let yaml = format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: api
          domains: ["api.example.com"]
          routes:
            - match: {{ prefix: "/" }}
              direct_response: {{ status: 200, body: "vh-api" }}
        - name: wild
          domains: ["*.example.com"]
          routes:
            - match: {{ prefix: "/" }}
              direct_response: {{ status: 200, body: "vh-wild" }}
        - name: default
          domains: ["*"]
          routes:
            - match: {{ path: "/exact" }}
              direct_response: {{ status: 200, body: "exact" }}
            - match: {{ prefix: "/api/", methods: [POST, PUT] }}
              direct_response: {{ status: 200, body: "api-write" }}
            - match: {{ regex: "/items/[0-9]+" }}
              direct_response: {{ status: 200, body: "item" }}
            - match: {{ prefix: "/h", headers: [{{ name: x-canary, exact: "true" }}] }}
              direct_response: {{ status: 200, body: "canary" }}
            - match: {{ prefix: "/h", headers: [{{ name: x-user, regex: "adm.*" }}, {{ name: x-debug, present: true }}] }}
              direct_response: {{ status: 200, body: "admin-debug" }}
            - match: {{ prefix: "/h", headers: [{{ name: x-env, prefix: "prod" }}] }}
              direct_response: {{ status: 200, body: "prod" }}
            - match: {{ prefix: "/h", headers: [{{ name: x-block, present: false }}] }}
              direct_response: {{ status: 200, body: "not-blocked" }}
            - match: {{ prefix: "/q", query_params: [{{ name: version, exact: "2" }}] }}
              direct_response: {{ status: 200, body: "query-v2" }}
            - match: {{ prefix: "/Mixed", ignore_case: true }}
              direct_response: {{ status: 200, body: "ignore-case" }}
            - match: {{ prefix: "/up/" }}
              route: {{ cluster: a, prefix_rewrite: "/v2/" }}
            - match: {{ prefix: "/" }}
              direct_response: {{ status: 200, body: "fallback" }}
clusters:
{}"#,
        cluster("a", &[a.addr], "")
    );
    let p = proxy(&yaml);
    let base = p.url("web", "");
    let cases: &[Case] = &[
        ("GET", "/exact", &[], "exact"),
        ("GET", "/exact/", &[], "fallback"),
        ("POST", "/api/users", &[], "api-write"),
        ("GET", "/api/users", &[], "fallback"),
        ("GET", "/items/17", &[], "item"),
        ("GET", "/items/17x", &[], "fallback"),
        ("GET", "/h", &[("x-canary", "true")], "canary"),
        (
            "GET",
            "/h",
            &[("x-user", "admin"), ("x-debug", "1")],
            "admin-debug",
        ),
        ("GET", "/h", &[("x-user", "admin")], "not-blocked"),
        (
            "GET",
            "/h",
            &[("x-env", "production"), ("x-block", "1")],
            "prod",
        ),
        ("GET", "/h", &[("x-block", "1")], "fallback"),
        ("GET", "/q?a=b&version=2", &[], "query-v2"),
        ("GET", "/q?version=3", &[], "fallback"),
        ("GET", "/mIxEd/path", &[], "ignore-case"),
        ("GET", "/", &[("host", "api.example.com")], "vh-api"),
        ("GET", "/", &[("host", "shop.example.com:8080")], "vh-wild"),
        ("GET", "/", &[("host", "example.org")], "fallback"),
    ];
    for (method, path, headers, want) in cases {
        let mut req = Req::get(&format!("{base}{path}")).method(method);
        for (k, v) in *headers {
            req = req.header(k, v);
        }
        let r = send(req).await.unwrap();
        assert_eq!(r.body, *want, "{method} {path} {headers:?}");
    }
    let r = get(&format!("{base}/up/x?y=1")).await;
    assert_eq!(r.json()["path"], "/v2/x");
    assert_eq!(r.json()["query"], "y=1");
}

#[tokio::test]
async fn weighted_split_within_tolerance() {
    let a = app("a", &[]);
    let b = app("b", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/" }
  route:
    weighted_clusters: [{ name: a, weight: 75 }, { name: b, weight: 25 }]"#,
    ) + "clusters:\n"
        + &cluster("a", &[a.addr], "")
        + &cluster("b", &[b.addr], "");
    let p = proxy(&yaml);
    let url = p.url("web", "/");
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        *counts.entry(get(&url).await.served_by()).or_default() += 1;
    }
    let share_a = f64::from(counts["a"]) / 1000.0;
    assert!(
        (0.70..=0.80).contains(&share_a),
        "a got {share_a}: {counts:?}"
    );
    assert_eq!(counts["a"] + counts["b"], 1000);
}

#[tokio::test]
async fn rewrites_header_mutations_and_redirects() {
    let a = app("a", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/old/" }
  redirect: { path: "/new", response_code: 308 }
- match: { prefix: "/secure/" }
  redirect: { scheme: https, host: secure.example.com, prefix_rewrite: "/s/" }
- match: { prefix: "/svc/" }
  route: { cluster: a, prefix_rewrite: "/", host_rewrite: "internal.svc:8080" }
  request_headers_to_add: [{ name: x-mesh, value: trellis }, { name: x-env, value: forced, append: false }]
  request_headers_to_remove: [x-secret]
  response_headers_to_add: [{ name: x-route, value: svc }]
  response_headers_to_remove: [x-served-by]"#,
    ) + "clusters:\n"
        + &cluster("a", &[a.addr], "");
    let p = proxy(&yaml);
    let r = send(
        Req::get(&p.url("web", "/svc/users?id=1"))
            .header("x-secret", "s")
            .header("x-env", "dev"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/users");
    assert_eq!(j["query"], "id=1");
    assert_eq!(j["headers"]["host"], "internal.svc:8080");
    assert_eq!(j["headers"]["x-mesh"], "trellis");
    assert_eq!(j["headers"]["x-env"], "forced");
    assert!(j["headers"].get("x-secret").is_none());
    assert!(j["headers"]["x-request-id"].as_str().unwrap().len() >= 16);
    assert_eq!(r.header("x-route"), Some("svc"));
    assert_eq!(r.header("x-served-by"), None);

    let r = get(&p.url("web", "/old/thing?x=1")).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://{}/new?x=1", p.addr("web"))
    );
    let r = get(&p.url("web", "/secure/a/b")).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://secure.example.com/s/a/b")
    );
}

#[tokio::test]
async fn ipv6_listener_and_endpoints_and_dns_cluster() {
    let v6 = app_on("v6", "[::1]:0", &[]);
    let v4 = app("v4", &[]);
    let yaml = format!(
        r#"listeners:
  - name: dual
    addresses: ["127.0.0.1:0", "[::1]:0"]
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: "/v6" }}
              route: {{ cluster: six }}
            - match: {{ prefix: "/dns" }}
              route:
                cluster: named
                retry_policy: {{ retry_on: connect-failure, num_retries: 3 }}
clusters:
{}  - name: named
    type: dns
    dns_refresh_rate: 1s
    endpoints: ["localhost:{}"]
"#,
        cluster("six", &[v6.addr], ""),
        v4.addr.port()
    );
    let p = proxy(&yaml);
    let addrs = &p.listeners["dual"];
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
    for a in addrs {
        let r = get(&format!("http://{a}/v6")).await;
        assert_eq!((r.status, r.served_by()), (200, "v6".into()), "via {a}");
    }
    // "localhost" may resolve to ::1 too, where nothing listens: the connect-failure
    // retry must land every request on 127.0.0.1.
    for _ in 0..20 {
        let r = get(&p.url("dual", "/dns")).await;
        assert_eq!((r.status, r.served_by()), (200, "v4".into()));
    }
    let clusters = p.admin_get("/clusters").await.json();
    let named = clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "named")
        .unwrap();
    let eps: Vec<&str> = named["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    assert!(
        eps.contains(&format!("127.0.0.1:{}", v4.addr.port()).as_str()),
        "{eps:?}"
    );
}

#[tokio::test]
async fn load_balancing_policies() {
    let apps: Vec<App> = (0..3).map(|i| app(&format!("e{i}"), &[])).collect();
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let yaml = http_listener(
        r#"- match: { prefix: "/ring" }
  route: { cluster: ring, hash_policy: [{ header: x-user }] }
- match: { prefix: "/maglev" }
  route: { cluster: maglev, hash_policy: [{ header: x-user }] }
- match: { prefix: "/rr" }
  route: { cluster: rr }
- match: { prefix: "/lr" }
  route: { cluster: lr }
- match: { prefix: "/random" }
  route: { cluster: random }"#,
    ) + "clusters:\n"
        + &cluster("ring", &addrs, "lb_policy: ring_hash")
        + &cluster("maglev", &addrs, "lb_policy: maglev")
        + &cluster("rr", &addrs, "lb_policy: round_robin")
        + &cluster("lr", &addrs, "lb_policy: least_request")
        + &cluster("random", &addrs, "lb_policy: random");
    let p = proxy(&yaml);
    for policy in ["ring", "maglev"] {
        let mut owners = HashMap::new();
        for user in 0..30 {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let r = send(
                    Req::get(&p.url("web", &format!("/{policy}")))
                        .header("x-user", &format!("user-{user}")),
                )
                .await
                .unwrap();
                seen.push(r.served_by());
            }
            assert!(
                seen.windows(2).all(|w| w[0] == w[1]),
                "{policy}: user-{user} moved: {seen:?}"
            );
            *owners.entry(seen[0].clone()).or_insert(0) += 1;
        }
        assert!(
            owners.len() >= 2,
            "{policy}: all users on one endpoint: {owners:?}"
        );
    }
    let mut rr = Vec::new();
    for _ in 0..6 {
        rr.push(get(&p.url("web", "/rr")).await.served_by());
    }
    assert_eq!(rr[0..3], rr[3..6], "round robin repeats its cycle: {rr:?}");
    let distinct: std::collections::HashSet<_> = rr.iter().collect();
    assert_eq!(distinct.len(), 3, "{rr:?}");
    for policy in ["lr", "random"] {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..60 {
            seen.insert(get(&p.url("web", &format!("/{policy}"))).await.served_by());
        }
        assert_eq!(seen.len(), 3, "{policy}: {seen:?}");
    }
}
