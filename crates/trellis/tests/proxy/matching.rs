//! Route tables compiled into one index, on every engine, through the real binary.

use crate::harness::*;
use std::time::Duration;

fn engines() -> Vec<&'static str> {
    let mut e = vec!["sequential", "automata"];
    if cfg!(feature = "hyperscan") {
        e.push("hyperscan");
    }
    e
}

/// 1,000 regex routes between a few exact, prefix and method-specific ones; every
/// route answers with its own index.
fn big_table(engine: &str) -> String {
    let mut routes = String::new();
    let mut add = |m: String| {
        let i = routes.matches("- match").count();
        routes.push_str(&format!(
            "- match: {m}\n  direct_response: {{ status: 200, body: \"r{i}\" }}\n"
        ));
    };
    add(r#"{ path: "/healthz" }"#.into());
    add(r#"{ regex: "/users/[0-9]+", methods: [DELETE] }"#.into());
    add(r#"{ prefix: "/API/", ignore_case: true }"#.into());
    for i in 0..1000 {
        add(match i % 4 {
            0 => format!(r#"{{ regex: "/api/v{i}/users/[0-9]+" }}"#),
            1 => format!(r#"{{ regex: "/svc-{i}/[a-z]+/items/[0-9]{{1,8}}" }}"#),
            2 => format!(r#"{{ regex: "/static/{i}/.*\\.(js|css|png)" }}"#),
            _ => format!(r#"{{ regex: "/(en|fr|de)/shop-{i}/product/[A-Za-z0-9_-]+" }}"#),
        });
    }
    add(r#"{ regex: "/users/[0-9]+" }"#.into());
    add(r#"{ regex: "(?i)/caf[eé]/.*" }"#.into());
    format!("matcher: {{ engine: {engine} }}\n") + &http_listener(&routes)
}

#[tokio::test]
async fn every_engine_gives_the_first_matching_route() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("GET", "/healthz", Some("r0")),
        ("DELETE", "/users/7", Some("r1")),
        ("GET", "/users/7", Some("r1003")),
        ("GET", "/api/anything", Some("r2")),
        ("GET", "/api/v0/users/12", Some("r2")), // the ignore-case prefix comes first
        ("GET", "/svc-1/books/items/42", Some("r4")),
        ("GET", "/static/502/app/main.css", Some("r505")),
        ("GET", "/fr/shop-999/product/Blue_Shirt-42", Some("r1002")),
        ("GET", "/de/shop-999/product/a/b", None),
        ("GET", "/CAFE/x", Some("r1004")),
        ("GET", "/svc-1/books/items/123456789", None),
    ];
    for engine in engines() {
        let p = proxy(&big_table(engine));
        for (method, path, want) in cases {
            let r = send(Req::get(&p.url("web", path)).method(method))
                .await
                .unwrap();
            match want {
                Some(body) => assert_eq!(
                    (r.status, r.body.as_str()),
                    (200, *body),
                    "{engine}: {method} {path}"
                ),
                None => assert_eq!(r.status, 404, "{engine}: {method} {path}: {}", r.body),
            }
        }
    }
}

#[tokio::test]
async fn a_route_table_the_engine_refuses_names_the_route_and_pattern() {
    let good = |engine: &str| {
        format!("matcher: {{ engine: {engine}, max_regex_program_mb: 1 }}\n")
            + &http_listener(
                "- match: { regex: \"/ok/[0-9]+\" }\n  direct_response: { status: 200, body: \"ok\" }\n",
            )
    };
    let p = proxy(&good("automata"));
    let path = p.config_path().display().to_string();
    assert_eq!(get(&p.url("web", "/ok/1")).await.body, "ok");

    // Over the program budget: refused, naming the route that crossed it.
    let mut routes = String::new();
    for i in 0..400 {
        routes.push_str(&format!(
            "- match: {{ regex: \"/r{i}/[a-z0-9]{{1,60}}\" }}\n  direct_response: {{ status: 200 }}\n"
        ));
    }
    let big = "matcher: { engine: automata, max_regex_program_mb: 1 }\n".to_string()
        + &http_listener(&routes);
    p.write_config(&big);
    p.wait_log("config refused", Duration::from_secs(10)).await;
    let log = p.proc.log();
    assert!(
        log.contains(&format!(
            "{path}: listeners \"web\": virtual_hosts[0].routes["
        )) && log.contains("regex set too large"),
        "{log}"
    );
    assert_eq!(get(&p.url("web", "/ok/1")).await.body, "ok");

    // Hyperscan: a construct it lacks is refused by name; without the feature, the
    // engine itself is refused.
    let hs = "matcher: { engine: hyperscan }\n".to_string()
        + &http_listener(
            "- match: { regex: \"/ok/[0-9]+\" }\n  direct_response: { status: 200, body: \"ok\" }\n- match: { regex: \"/a^b\" }\n  direct_response: { status: 200 }\n",
        );
    p.write_config(&hs);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let log = p.proc.log();
    let want = if cfg!(feature = "hyperscan") {
        "virtual_hosts[0].routes[1].match.regex: invalid regex \"/a^b\": hyperscan:"
    } else {
        "not in this build (rebuild with --features hyperscan)"
    };
    assert!(log.contains(want), "{log}");
    assert_eq!(
        p.metric("trellis_config_reloads_total{result=\"failure\"}")
            .await,
        2.0
    );
    assert_eq!(get(&p.url("web", "/ok/1")).await.body, "ok");
}
