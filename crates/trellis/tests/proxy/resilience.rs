use crate::harness::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn retries_recover_from_failing_and_dead_endpoints() {
    let bad = app("bad", &["--fail-rate", "1"]);
    let good = app("good", &[]);
    // A port that is bound but not listening refuses connections, and stays ours.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = reserved.local_addr().unwrap();
    let yaml = http_listener(
        r#"- match: { prefix: "/5xx" }
  route:
    cluster: flaky
    retry_policy: { retry_on: "5xx", num_retries: 3 }
- match: { prefix: "/connect" }
  route:
    cluster: half_dead
    retry_policy: { retry_on: "connect-failure", num_retries: 3 }
- match: { prefix: "/none" }
  route: { cluster: flaky }"#,
    ) + "clusters:\n"
        + &cluster(
            "flaky",
            &[bad.addr, good.addr],
            "circuit_breakers: { max_retries: 100 }",
        )
        + &cluster(
            "half_dead",
            &[dead, good.addr],
            "circuit_breakers: { max_retries: 100 }",
        );
    let p = proxy(&yaml);
    for path in ["/5xx", "/connect"] {
        for _ in 0..40 {
            let r = get(&p.url("web", path)).await;
            assert_eq!((r.status, r.served_by()), (200, "good".into()), "{path}");
        }
    }
    assert!(
        p.metric("trellis_upstream_rq_retry_total{cluster=\"flaky\"}")
            .await
            >= 10.0
    );
    assert!(
        p.metric("trellis_upstream_rq_retry_total{cluster=\"half_dead\"}")
            .await
            >= 10.0
    );
    assert!(
        p.metric("trellis_upstream_cx_connect_fail_total{cluster=\"half_dead\"}")
            .await
            >= 10.0
    );
    // Without a retry policy the failures reach the client.
    let mut failures = 0;
    for _ in 0..20 {
        if get(&p.url("web", "/none")).await.status == 503 {
            failures += 1;
        }
    }
    assert!(failures >= 5, "{failures}");
}

#[tokio::test]
async fn route_and_per_try_timeouts() {
    let _quiet = quiet().await;
    let slow = app("slow", &["--delay", "2s"]);
    let fast = app("fast", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/route" }
  route: { cluster: slow, timeout: 300ms }
- match: { prefix: "/per-try" }
  route:
    cluster: mixed
    timeout: 5s
    retry_policy: { retry_on: "5xx", num_retries: 3, per_try_timeout: 200ms }
- match: { prefix: "/off" }
  route: { cluster: fast, timeout: 0 }"#,
    ) + "clusters:\n"
        + &cluster("slow", &[slow.addr], "")
        + &cluster(
            "mixed",
            &[slow.addr, fast.addr],
            "lb_policy: round_robin\ncircuit_breakers: { max_retries: 100 }",
        )
        + &cluster("fast", &[fast.addr], "");
    let p = proxy(&yaml);
    let t = Instant::now();
    let r = get(&p.url("web", "/route")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    for _ in 0..6 {
        let t = Instant::now();
        let r = get(&p.url("web", "/per-try")).await;
        assert_eq!((r.status, r.served_by()), (200, "fast".into()));
        assert!(t.elapsed() < Duration::from_millis(1500));
    }
    assert!(
        p.metric("trellis_upstream_rq_timeout_total{cluster=\"mixed\"}")
            .await
            >= 1.0
    );
    assert_eq!(get(&p.url("web", "/off")).await.status, 200);
}

#[tokio::test]
async fn fault_injection_delay_and_abort() {
    let a = app("a", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/abort" }
  fault: { abort: { status: 418, percent: 100 } }
  route: { cluster: a }
- match: { prefix: "/delay" }
  fault: { delay: { fixed: 300ms, percent: 100 } }
  route: { cluster: a }
- match: { prefix: "/half" }
  fault: { abort: { status: 503, percent: 50 } }
  route: { cluster: a }"#,
    ) + "clusters:\n"
        + &cluster("a", &[a.addr], "");
    let p = proxy(&yaml);
    let r = get(&p.url("web", "/abort")).await;
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    let t = Instant::now();
    let r = get(&p.url("web", "/delay")).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let mut aborted = 0;
    for _ in 0..200 {
        if get(&p.url("web", "/half")).await.status == 503 {
            aborted += 1;
        }
    }
    assert!((70..=130).contains(&aborted), "{aborted} of 200 aborted");
}

#[tokio::test]
async fn mirroring_copies_requests_to_the_shadow() {
    let main = app("main", &[]);
    let shadow = app("shadow", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/" }
  route: { cluster: main, request_mirror: { cluster: shadow } }"#,
    ) + "clusters:\n"
        + &cluster("main", &[main.addr], "")
        + &cluster("shadow", &[shadow.addr], "");
    let p = proxy(&yaml);
    for i in 0..20 {
        let r = send(
            Req::get(&p.url("web", &format!("/m/{i}")))
                .method("POST")
                .body("payload"),
        )
        .await
        .unwrap();
        assert_eq!(r.served_by(), "main");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = get(&format!("http://{}/control/stats", shadow.addr))
            .await
            .json();
        // Other tests' proxies may reach this app through a recycled port, so the
        // app's own count is a lower bound; the proxy's shadow metric is exact.
        if stats["served"].as_u64().unwrap_or(0) >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "shadow saw {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p.metric("trellis_upstream_rq_total{cluster=\"shadow\",code_class=\"2xx\"}")
            .await,
        20.0
    );
}

#[tokio::test]
async fn circuit_breakers_overflow_with_503_and_count() {
    let slow = app("slow", &["--delay", "600ms"]);
    let yaml = http_listener(
        r#"- match: { prefix: "/requests" }
  route: { cluster: by_requests }
- match: { prefix: "/pending" }
  route: { cluster: by_pending }"#,
    ) + "clusters:\n"
        + &cluster(
            "by_requests",
            &[slow.addr],
            "circuit_breakers: { max_requests: 2 }",
        )
        + &cluster(
            "by_pending",
            &[slow.addr],
            "circuit_breakers: { max_connections: 1, max_pending_requests: 1 }",
        );
    let p = proxy(&yaml);
    let cases = [
        ("/requests", "by_requests", "max_requests"),
        ("/pending", "by_pending", "max_pending_requests"),
    ];
    for (path, cluster_name, breaker) in cases {
        let url = p.url("web", path);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let url = url.clone();
                    async move { get(&url).await }
                })
            })
            .collect();
        let mut ok = 0;
        let mut overflow = 0;
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                200 => ok += 1,
                503 if r.body.contains("overflow") => overflow += 1,
                s => panic!("unexpected {s}: {}", r.body),
            }
        }
        // max_requests 2 admits two; one connection plus one pending request admits two.
        assert!((1..=2).contains(&ok), "{path}: ok {ok}");
        assert_eq!(ok + overflow, 8);
        let metric = format!("trellis_circuit_breaker_overflow_total{{cluster=\"{cluster_name}\",breaker=\"{breaker}\"}}");
        let counted = p.metric(&metric).await;
        assert_eq!(counted, f64::from(overflow), "{path}");
    }
}

#[tokio::test]
async fn outlier_detection_ejects_and_returns() {
    let bad = app("bad", &["--fail-rate", "1", "--fail-status", "500"]);
    let good = app("good", &[]);
    let yaml = http_listener(
        r#"- match: { prefix: "/" }
  route: { cluster: c }"#,
    ) + "clusters:\n"
        + &cluster(
            "c",
            &[bad.addr, good.addr],
            "lb_policy: round_robin\noutlier_detection:\n  consecutive_5xx: 3\n  interval: 100ms\n  base_ejection_time: 1s\n  max_ejection_percent: 50",
        );
    let p = proxy(&yaml);
    let mut fails = 0;
    for _ in 0..20 {
        if get(&p.url("web", "/")).await.status == 500 {
            fails += 1;
        }
    }
    assert_eq!(fails, 3, "ejected after 3 consecutive 5xx");
    let clusters = p.admin_get("/clusters").await.json();
    let eps = clusters[0]["endpoints"].as_array().unwrap().clone();
    let bad_ep = eps
        .iter()
        .find(|e| e["address"] == bad.addr.to_string())
        .unwrap();
    assert_eq!(bad_ep["health"], "ejected");
    assert_eq!(
        p.metric("trellis_outlier_ejections_total{cluster=\"c\"}")
            .await,
        1.0
    );
    // Back after base_ejection_time × 1.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let clusters = p.admin_get("/clusters").await.json();
    let eps = clusters[0]["endpoints"].as_array().unwrap().clone();
    assert!(eps.iter().all(|e| e["health"] == "healthy"), "{eps:?}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&p.url("web", "/")).await.status);
    }
    assert!(
        statuses.contains(&500),
        "the endpoint takes traffic again: {statuses:?}"
    );
}
