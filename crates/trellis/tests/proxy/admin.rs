use crate::harness::*;
use std::time::Duration;

#[tokio::test]
async fn admin_endpoints_and_metrics() {
    let a = app("a", &[]);
    let yaml = http_listener(
        r#"- name: api
  match: { prefix: "/api" }
  route: { cluster: a }
- name: missing
  match: { prefix: "/missing" }
  direct_response: { status: 404 }"#,
    ) + "clusters:\n"
        + &cluster("a", &[a.addr], "");
    let p = proxy(&yaml);
    for _ in 0..5 {
        get(&p.url("web", "/api/x")).await;
    }
    get(&p.url("web", "/missing")).await;
    get(&p.url("web", "/api/fail?status=502")).await;
    assert_eq!(p.admin_get("/ready").await.body, "LIVE\n");
    assert_eq!(p.admin_get("/healthz").await.status, 200);
    let dump = p.admin_get("/config_dump").await.json();
    assert_eq!(dump["listeners"][0]["name"], "web");
    assert_eq!(
        dump["clusters"][0]["circuit_breakers"]["max_requests"],
        1024
    );
    let clusters = p.admin_get("/clusters").await.json();
    assert_eq!(clusters[0]["endpoints"][0]["address"], a.addr.to_string());
    assert_eq!(clusters[0]["endpoints"][0]["health"], "healthy");
    let route = "listener=\"web\",virtual_host=\"all\",route=\"api\"";
    assert_eq!(
        p.metric(&format!(
            "trellis_http_requests_total{{{route},code_class=\"2xx\"}}"
        ))
        .await,
        5.0
    );
    assert_eq!(
        p.metric(&format!(
            "trellis_http_requests_total{{{route},code_class=\"5xx\"}}"
        ))
        .await,
        1.0
    );
    assert_eq!(
        p.metric(&format!(
            "trellis_http_request_duration_seconds_count{{{route}}}"
        ))
        .await,
        6.0
    );
    assert_eq!(
        p.metric("trellis_http_requests_total{listener=\"web\",virtual_host=\"all\",route=\"missing\",code_class=\"4xx\"}").await,
        1.0
    );
    assert_eq!(
        p.metric("trellis_upstream_rq_total{cluster=\"a\",code_class=\"2xx\"}")
            .await,
        5.0
    );
    assert_eq!(
        p.metric("trellis_upstream_cx_active{cluster=\"a\"}").await,
        1.0,
        "keep-alive reuses one connection"
    );
    assert_eq!(
        p.metric("trellis_upstream_cx_total{cluster=\"a\"}").await,
        1.0
    );
    assert!(
        p.metric("trellis_downstream_cx_total{listener=\"web\"}")
            .await
            >= 7.0
    );
    assert_eq!(p.admin_get("/nope").await.status, 404);
}

#[tokio::test]
async fn json_access_log() {
    let a = app("a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    http:\n      access_log: {{ path: \"{}\" }}\n      virtual_hosts:\n        - name: all\n          domains: [\"*\"]\n          routes:\n            - name: api\n              match: {{ prefix: \"/\" }}\n              route: {{ cluster: a }}\nclusters:\n{}",
        log.display(),
        cluster("a", &[a.addr], "")
    );
    let p = proxy(&yaml);
    let r = send(Req::get(&p.url("web", "/logged?q=1")).header("host", "shop.local"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let line = loop {
        if let Some(l) = std::fs::read_to_string(&log)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
        {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["authority"], "shop.local");
    assert_eq!(entry["path"], "/logged?q=1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_sent"], r.body.len());
    assert_eq!(entry["upstream_host"], a.addr.to_string());
    assert_eq!(entry["route"], "api");
    assert_eq!(entry["response_flags"], "-");
    assert!(entry["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(entry["duration_ms"].as_f64().unwrap() >= 0.0);
}

/// Lines of `path` once it has `n`.
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} has {} lines, not {n}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Envoy's access log formats, as Istio's defaults write them: a text line and a JSON
/// object per request, with Envoy's response flags (UF: the upstream refused the
/// connection; NR: no route), parsed back field by field.
#[tokio::test]
async fn envoy_access_log_formats_as_istio_writes_them() {
    let a = app("a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (text, json, custom) = (
        dir.path().join("text.log"),
        dir.path().join("json.log"),
        dir.path().join("custom.log"),
    );
    let dead = free_port();
    let listener = |name: &str, log: &str| {
        format!(
            "  - name: {name}\n    address: 127.0.0.1:0\n    http:\n      access_log: {log}\n      virtual_hosts:\n        - name: all\n          domains: [\"*\"]\n          routes:\n            - {{ name: dead, match: {{ prefix: /dead }}, route: {{ cluster: dead }} }}\n            - {{ name: api, match: {{ prefix: /api }}, route: {{ cluster: a }} }}\n"
        )
    };
    let yaml = format!(
        "listeners:\n{}{}{}clusters:\n{}{}",
        listener("text", &format!("{{ path: \"{}\", text_format: istio }}", text.display())),
        listener("json", &format!("{{ path: \"{}\", json_format: istio }}", json.display())),
        listener(
            "custom",
            &format!(
                "{{ path: \"{}\", json_format: {{ code: \"%RESPONSE_CODE%\", who: \"%REQ(X-USER):3%\", line: \"%REQ(:METHOD)% %PROTOCOL%\", none: \"%REQ(X-ABSENT)%\" }} }}",
                custom.display()
            )
        ),
        cluster("a", &[a.addr], ""),
        cluster("dead", &[format!("127.0.0.1:{dead}").parse().unwrap()], ""),
    );
    let p = proxy(&yaml);
    for l in ["text", "json", "custom"] {
        let ok = send(
            Req::get(&p.url(l, "/api/logged?q=1"))
                .header("host", "shop.local")
                .header("user-agent", "trellis-test")
                .header("x-request-id", "req-1")
                .header("x-user", "jason"),
        )
        .await
        .unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(
            send(Req::get(&p.url(l, "/dead"))).await.unwrap().status,
            503
        );
        assert_eq!(
            send(Req::get(&p.url(l, "/nothing"))).await.unwrap().status,
            404
        );
    }
    let local = p.addr("text");
    let lines = log_lines(&text, 3).await;
    // [start] "GET /api/logged?q=1 HTTP/1.1" 200 - via_upstream - "-" 0 <sent> <ms> -
    // "-" "trellis-test" "req-1" "shop.local" "<upstream>" a - <local> <remote> - api
    let l = &lines[0];
    assert!(l.starts_with('[') && l[1..].contains("Z] "), "{l}");
    let rest = &l[l.find("] ").unwrap() + 2..];
    assert!(
        rest.starts_with("\"GET /api/logged?q=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 "),
        "{l}"
    );
    let tail = format!(
        " - \"-\" \"trellis-test\" \"req-1\" \"shop.local\" \"{}\" a - {local} ",
        a.addr
    );
    assert!(rest.contains(&tail), "{l}\nwanted {tail}");
    assert!(rest.ends_with(" - api"), "{l}");
    assert!(
        lines[1].contains("\"GET /dead HTTP/1.1\" 503 UF "),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(" dead"), "{}", lines[1]);
    assert!(
        lines[2].contains("\"GET /nothing HTTP/1.1\" 404 NR "),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(" -"), "{}", lines[2]);

    let lines = log_lines(&json, 3).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 24, "{v}");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/logged?q=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["user_agent"], "trellis-test");
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["authority"], "shop.local");
    assert_eq!(v["upstream_host"], a.addr.to_string());
    assert_eq!(v["upstream_cluster"], "a");
    assert_eq!(v["route_name"], "api");
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
    assert!(v["duration"].is_u64());
    assert_eq!(v["x_forwarded_for"], serde_json::Value::Null);
    let dead: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (
            dead["response_code"].as_u64(),
            dead["response_flags"].as_str()
        ),
        (Some(503), Some("UF"))
    );

    let lines = log_lines(&custom, 3).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["who"], "jas");
    assert_eq!(v["line"], "GET HTTP/1.1");
    assert_eq!(v["none"], serde_json::Value::Null);
}

/// A format Trellis cannot write is refused, naming the field and the operator.
#[test]
fn an_unknown_access_log_operator_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "admin: { address: 127.0.0.1:0 }\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    http:\n      access_log: { path: /dev/null, text_format: \"%START_TIME% %DYNAMIC_METADATA(x)%\" }\n      virtual_hosts: [{ name: all, domains: [\"*\"], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["proxy", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access_log.text_format") && err.contains("%DYNAMIC_METADATA%"),
        "{err}"
    );
}
