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
