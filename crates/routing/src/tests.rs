use super::*;
use trellis_config::Config;

/// Every matcher implementation at once; each answer must agree across all of them.
struct AllMatchers(Vec<(String, Box<dyn RouteMatcher>)>);

impl AllMatchers {
    fn agree<T: PartialEq + std::fmt::Debug>(&self, f: impl Fn(&dyn RouteMatcher) -> T) -> T {
        let (first_name, first) = &self.0[0];
        let want = f(first.as_ref());
        for (name, m) in &self.0[1..] {
            assert_eq!(f(m.as_ref()), want, "{name} disagrees with {first_name}");
        }
        want
    }
}

impl RouteMatcher for AllMatchers {
    fn select_virtual_host(&self, authority: &str) -> Option<usize> {
        self.agree(|m| m.select_virtual_host(authority))
    }
    fn select_route(&self, vh: usize, request: &RequestView<'_>) -> Option<usize> {
        self.agree(|m| m.select_route(vh, request))
    }
}

fn matcher(yaml_routes: &str, domains: &[&str]) -> AllMatchers {
    let mut vhosts = String::new();
    for (i, d) in domains.iter().enumerate() {
        vhosts.push_str(&format!(
            "        - name: vh{i}\n          domains: [{d}]\n          routes:\n{yaml_routes}"
        ));
    }
    let yaml = format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    http:\n      virtual_hosts:\n{vhosts}clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n"
    );
    let cfg = Config::parse(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let vhosts = &cfg.listeners[0].http.as_ref().unwrap().virtual_hosts;
    let mut all: Vec<(String, Box<dyn RouteMatcher>)> = vec![(
        "sequential".into(),
        Box::new(SequentialMatcher::new(vhosts).unwrap()),
    )];
    for &engine in Engine::available() {
        let compiled = CompiledMatcher::new(vhosts, engine, 64 << 20).unwrap();
        all.push((format!("{engine:?}"), Box::new(compiled)));
    }
    AllMatchers(all)
}

fn req(
    m: &AllMatchers,
    method: &str,
    authority: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<(usize, usize)> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let view = RequestView {
        method: &method,
        authority,
        path,
        query,
        headers: &map,
    };
    let vh = m.select_virtual_host(authority)?;
    Some((vh, m.select_route(vh, &view)?))
}

const ROUTES: &str = r#"            - match: { path: "/exact" }
              direct_response: { status: 200 }
            - match: { prefix: "/api/", methods: [POST] }
              direct_response: { status: 201 }
            - match: { regex: "/items/[0-9]+" }
              direct_response: { status: 202 }
            - match: { prefix: "/h", headers: [{ name: x-canary, exact: "1" }] }
              direct_response: { status: 203 }
            - match: { prefix: "/h", headers: [{ name: X-Debug, present: true }, { name: x-user, prefix: "adm" }] }
              direct_response: { status: 204 }
            - match: { prefix: "/h", headers: [{ name: x-env, regex: "prod|stage" , invert: true }] }
              direct_response: { status: 205 }
            - match: { prefix: "/q", query_params: [{ name: v, exact: "2" }] }
              direct_response: { status: 206 }
            - match: { prefix: "/CaSe", ignore_case: true }
              direct_response: { status: 207 }
            - match: { regex: "/ci/[a-z]+", ignore_case: true }
              direct_response: { status: 208 }
            - match: { prefix: "/" }
              direct_response: { status: 404 }
"#;

/// (method, path and query, request headers, index of the expected route)
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], usize);

#[test]
fn routes_first_match_in_order() {
    let m = matcher(ROUTES, &["\"*\""]);
    let cases: &[Case] = &[
        ("GET", "/exact", &[], 0),
        ("GET", "/exact/more", &[], 9),
        ("GET", "/exact?x=1", &[], 0),
        ("POST", "/api/users", &[], 1),
        ("GET", "/api/users", &[], 9),
        ("GET", "/items/42", &[], 2),
        ("GET", "/items/42/x", &[], 9), // full match, not search
        ("GET", "/items/", &[], 9),
        ("GET", "/h", &[("x-canary", "1")], 3),
        (
            "GET",
            "/h",
            &[("x-canary", "2"), ("x-debug", ""), ("x-user", "admin")],
            4,
        ),
        ("GET", "/h", &[("x-debug", "1"), ("x-user", "bob")], 5),
        ("GET", "/h", &[("x-env", "prod")], 9),
        ("GET", "/h", &[("x-env", "dev")], 5),
        ("GET", "/q?a=1&v=2", &[], 6),
        ("GET", "/q?v=22", &[], 9),
        ("GET", "/case/x", &[], 7),
        ("GET", "/CI/ABC", &[], 8),
        ("GET", "/ci/ab1", &[], 9),
    ];
    for (method, uri, headers, want) in cases {
        assert_eq!(
            req(&m, method, "any", uri, headers),
            Some((0, *want)),
            "{method} {uri} {headers:?}"
        );
    }
}

#[test]
fn repeated_headers_are_joined() {
    let routes = "            - match: { prefix: \"/\", headers: [{ name: x-a, exact: \"1,2\" }] }\n              direct_response: { status: 200 }\n";
    let m = matcher(routes, &["\"*\""]);
    assert_eq!(
        req(&m, "GET", "h", "/", &[("x-a", "1"), ("x-a", "2")]),
        Some((0, 0))
    );
    assert_eq!(req(&m, "GET", "h", "/", &[("x-a", "1")]), None);
}

#[test]
fn virtual_hosts_by_precedence() {
    let routes =
        "            - match: { prefix: \"/\" }\n              direct_response: { status: 200 }\n";
    let m = matcher(
        routes,
        &[
            "\"api.example.com\"",
            "\"*.example.com\"",
            "\"*.b.example.com\"",
            "\"api.*\"",
            "\"*\"",
            "\"port.test:8080\"",
        ],
    );
    let cases = [
        ("api.example.com", 0),
        ("API.Example.com:443", 0),
        ("x.example.com", 1),
        ("x.b.example.com", 2),
        (".example.com", 4), // wildcard needs at least one character
        ("api.other.org", 3),
        ("something", 4),
        ("port.test:8080", 5),
        ("port.test:9090", 4),
        ("[::1]:80", 4),
    ];
    for (authority, want) in cases {
        assert_eq!(m.select_virtual_host(authority), Some(want), "{authority}");
    }
}

#[test]
fn no_default_virtual_host_means_no_match() {
    let routes =
        "            - match: { prefix: \"/\" }\n              direct_response: { status: 200 }\n";
    let m = matcher(routes, &["\"a.com\""]);
    assert_eq!(m.select_virtual_host("b.com"), None);
    assert_eq!(m.select_virtual_host("a.com:80"), Some(0));
}
