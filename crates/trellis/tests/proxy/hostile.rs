use crate::harness::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(a: std::net::SocketAddr, limits: &str) -> String {
    format!("limits:\n{}", indent(limits, 2))
        + &http_listener(
            r#"- match: { prefix: "/" }
  route: { cluster: a }"#,
        )
        + "clusters:\n"
        + &cluster("a", &[a], "")
}

/// Reads until the peer closes or `timeout`; returns what arrived and whether it closed.
async fn read_until_close(s: &mut TcpStream, timeout: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).to_string(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).to_string(), false),
        }
    }
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s, Duration::from_secs(5)).await.0
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_4xx_and_the_proxy_survives() {
    let a = app("a", &[]);
    let p = proxy(&config(
        a.addr,
        "max_request_headers_kb: 16\nmax_request_headers_count: 50",
    ));
    let addr = p.addr("web");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    assert!(raw(addr, big.as_bytes()).await.starts_with("HTTP/1.1 431"));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert!(raw(addr, many.as_bytes()).await.starts_with("HTTP/1.1 431"));
    let garbage: &[&[u8]] = &[
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x01\x02 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for g in garbage {
        let answer = raw(addr, g).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{g:?} → {answer:?}"
        );
    }
    // A broken HTTP/2 frame after a valid preface: the proxy answers with GOAWAY.
    let answer = raw(
        addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x01\x99\x99\x99\x99\x99\x99garbage",
    )
    .await;
    assert!(
        answer.contains("\0\0\u{8}\u{7}"),
        "GOAWAY expected: {answer:?}"
    );
    // A request without a Host header is refused with 400.
    let answer = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    assert_eq!(get(&p.url("web", "/")).await.status, 200, "still serving");
}

#[tokio::test]
async fn slowloris_and_half_open_connections_are_cut_off() {
    let a = app("a", &[]);
    let p = proxy(&config(a.addr, "request_headers_timeout: 1s"));
    let addr = p.addr("web");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for i in 0..20 {
            if slow
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return (started.elapsed(), true);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (_, closed) = read_until_close(&mut slow, Duration::from_millis(100)).await;
        (started.elapsed(), closed)
    });
    // Other clients are served meanwhile.
    for _ in 0..10 {
        assert_eq!(get(&p.url("web", "/")).await.status, 200);
    }
    let (elapsed, closed) = trickle.await.unwrap();
    assert!(closed, "slowloris connection still open after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    let (_, closed) = read_until_close(&mut silent, Duration::from_secs(3)).await;
    assert!(
        closed,
        "a silent connection is closed by the header timeout"
    );
}

#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    let a = app("a", &[]);
    let p = proxy(&config(
        a.addr,
        "max_downstream_connections: 3\nidle_timeout: 600ms",
    ));
    let addr = p.addr("web");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_close(&mut over, Duration::from_secs(2)).await;
    assert!(closed, "the fourth connection is closed at accept");
    assert_eq!(
        p.metric("trellis_downstream_cx_overflow_total{listener=\"web\"}")
            .await,
        1.0
    );
    // Idle keep-alive connections are closed after idle_timeout, freeing room.
    for s in &mut held {
        let (_, closed) = read_until_close(s, Duration::from_secs(3)).await;
        assert!(closed, "idle connection closed");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&p.url("web", "/")).await.status, 200);
}
