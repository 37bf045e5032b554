use crate::harness::*;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(a: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: "/h2up" }}
              route: {{ cluster: a_h2 }}
            - match: {{ prefix: "/", headers: [{{ name: content-type, prefix: "application/grpc" }}] }}
              route: {{ cluster: a_h2, timeout: 0 }}
            - match: {{ prefix: "/" }}
              route: {{ cluster: a }}
  - name: h2only
    address: 127.0.0.1:0
    http:
      codec: http2
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: "/" }}
              route: {{ cluster: a }}
  - name: raw
    address: 127.0.0.1:0
    tcp: {{ cluster: a }}
clusters:
{}{}"#,
        cluster("a", &[a], ""),
        cluster("a_h2", &[a], "http2: true")
    )
}

#[tokio::test]
async fn http2_downstream_and_upstream() {
    let a = app("a", &[]);
    let p = proxy(&config(a.addr));
    // h2c prior knowledge downstream, HTTP/1.1 upstream.
    let r = send(Req::get(&p.url("web", "/x")).h2()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/1.1");
    // HTTP/1.1 downstream, HTTP/2 upstream; the authority survives.
    let r = send(Req::get(&p.url("web", "/h2up")).header("host", "svc.local"))
        .await
        .unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // Many concurrent streams multiplexed on the upstream connection.
    let url = p.url("web", "/h2up");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { send(Req::get(&url).h2()).await.unwrap().status }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        p.metric("trellis_upstream_cx_total{cluster=\"a_h2\"}")
            .await,
        1.0
    );
    // An http2-only listener refuses HTTP/1.1 and serves h2c.
    assert!(send(Req::get(&p.url("h2only", "/"))).await.is_err());
    assert_eq!(
        send(Req::get(&p.url("h2only", "/")).h2())
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn grpc_passes_through_with_trailers() {
    let a = app("a", &[]);
    let p = proxy(&config(a.addr));
    // A gRPC message frame: uncompressed flag, 4-byte length, payload.
    let mut frame = vec![0u8, 0, 0, 0, 5];
    frame.extend_from_slice(b"hello");
    let r = send(
        Req::get(&p.url("web", "/demo.Echo/Say"))
            .method("POST")
            .h2()
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame.clone()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.body.as_bytes(), &frame[..]);
    let trailers = r.trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-served-by"], "a");
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let a = app("a", &[]);
    let p = proxy(&config(a.addr));
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked WebSocket text frame "ping"; the demo app echoes raw bytes.
    let frame = [
        0x81u8,
        0x84,
        1,
        2,
        3,
        4,
        b'p' ^ 1,
        b'i' ^ 2,
        b'n' ^ 3,
        b'g' ^ 4,
    ];
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 10];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame);
    }
}

#[tokio::test]
async fn tcp_proxy_splices_bytes_and_half_close() {
    let a = app("a", &[]);
    let p = proxy(&config(a.addr));
    let mut s = TcpStream::connect(p.addr("raw")).await.unwrap();
    let body = vec![b'z'; 300_000];
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    s.shutdown().await.unwrap(); // half-close: we can still read the answer
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"));
    assert!(out.ends_with(&body));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        p.metric("trellis_tcp_downstream_rx_bytes_total{listener=\"raw\"}")
            .await
            >= 300_000.0
    );
}

#[tokio::test]
async fn curl_http1_and_http2_prior_knowledge() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let a = app("a", &[]);
    let p = proxy(&config(a.addr));
    for flags in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(flags)
            .arg(p.url("web", "/hello"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let want = if flags[0] == "--http1.1" {
            "200 1.1"
        } else {
            "200 2"
        };
        assert_eq!(text, want, "{}", String::from_utf8_lossy(&out.stderr));
    }
}
