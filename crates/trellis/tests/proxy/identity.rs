//! The identity agent end to end: two sidecars get SPIFFE certificates from a running
//! `trellis ca`, talk mTLS with them, and rotate them under continuous load (fresh
//! handshakes on every request) across a CA outage without a failed request.

use crate::harness::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity_block(ca: &Ca, dir: &std::path::Path, sa: &str, ttl: &str) -> String {
    format!(
        "identity:\n  ca_address: \"{}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n  cert_ttl: {ttl}\n  key_type: ecdsa\n",
        ca.addr,
        ca.root_file(dir),
        ca.token_file(dir, &format!("spiffe://cluster.local/ns/default/sa/{sa}")),
    )
}

const MTLS: &str = "certificate_chain: \"sds://default\"";

/// One HTTP/1.1 request on a new connection (so every request is a new mTLS
/// handshake behind the TCP listener); true on a 200.
async fn fresh_request(addr: std::net::SocketAddr) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    let req = b"GET /rotation HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    matches!(read, Ok(Ok(_))) && out.starts_with(b"HTTP/1.1 200")
}

async fn serial(p: &Proxy) -> String {
    p.admin_get("/certs").await.json()["certificates"][0]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sidecars_rotate_certificates_under_load_across_a_ca_outage() {
    let ca_dir = tempfile::tempdir().unwrap();
    let state = ca_dir.path().join("state");
    let files = tempfile::tempdir().unwrap();
    let ca = ca_at(
        tempfile::tempdir().unwrap(),
        state.clone(),
        "127.0.0.1:0",
        &["--max-cert-ttl", "30s"],
    );
    let app = app("reviews", &[]);
    let inbound = proxy(
        &(identity_block(&ca, files.path(), "reviews", "30s")
            + &format!(
                "listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ {MTLS} }}]\n      trusted_ca: \"sds://ROOTCA\"\n    tcp: {{ cluster: app }}\nclusters:\n{}",
                cluster("app", &[app.addr], "")
            )),
    );
    let outbound = proxy(
        &(identity_block(&ca, files.path(), "frontend", "30s")
            + "listeners:\n  - name: out\n    address: 127.0.0.1:0\n    tcp: { cluster: reviews }\nclusters:\n"
            + &cluster(
                "reviews",
                &[inbound.addr("inbound")],
                "tls:\n  trusted_ca: \"sds://ROOTCA\"\n  certificate: { certificate_chain: \"sds://default\" }\n  match_identities: [\"spiffe://cluster.local/ns/default/sa/reviews\"]",
            )),
    );
    let certs = outbound.admin_get("/certs").await.json();
    let c = &certs["certificates"][0];
    assert_eq!(
        c["identity"], "spiffe://cluster.local/ns/default/sa/frontend",
        "{certs}"
    );
    assert!(
        c["issuer"].as_str().unwrap().contains("Trellis root CA"),
        "{certs}"
    );
    let life = c["expiry"].as_i64().unwrap() - c["not_before"].as_i64().unwrap();
    assert!((30..=91).contains(&life), "{certs}");

    // Continuous load: a new connection (and mTLS handshake) per request.
    let out = outbound.addr("out");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if fresh_request(out).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Watch the outbound sidecar's serials; take the CA down around the second rotation.
    let started = Instant::now();
    let mut serials = vec![serial(&outbound).await];
    let ca_addr = ca.addr.to_string();
    let mut ca = Some(ca);
    let mut restarted = false;
    while started.elapsed() < Duration::from_secs(52) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = serial(&outbound).await;
        if serials.last() != Some(&s) {
            serials.push(s);
        }
        if started.elapsed() > Duration::from_secs(25) && ca.is_some() && !restarted {
            drop(ca.take()); // killed: the next rotation fails and is retried
        }
        if started.elapsed() > Duration::from_secs(33) && ca.is_none() {
            ca = Some(ca_at(
                tempfile::tempdir().unwrap(),
                state.clone(),
                &ca_addr,
                &["--max-cert-ttl", "30s"],
            ));
            restarted = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{ok} ok, {failed} failed\n{}",
        outbound.proc.log()
    );
    assert!(ok > 200, "{ok}");
    assert!(
        serials.len() >= 3,
        "rotations seen: {serials:?}\n{}",
        outbound.proc.log()
    );
    // The outage was noticed, logged and counted, and survived.
    assert!(
        outbound
            .metric("trellis_identity_cert_requests_total{result=\"failure\"}")
            .await
            >= 1.0
    );
    assert!(outbound
        .proc
        .log()
        .contains("keeping the current certificate"));
    assert!(
        inbound
            .metric(
                "trellis_downstream_tls_handshakes_total{listener=\"inbound\",result=\"success\"}"
            )
            .await
            >= ok as f64
    );
    let _ = ca_dir;
}

#[tokio::test]
async fn workload_certificate_needs_the_identity_section() {
    let p = proxy(&http_listener(
        "- match: { prefix: \"/\" }\n  direct_response: { status: 200, body: \"ok\" }",
    ));
    let yaml = http_listener("- match: { prefix: \"/\" }\n  direct_response: { status: 200 }")
        .replace(
            "    http:\n",
            "    tls:\n      certificates: [{ certificate_chain: \"sds://default\" }]\n    http:\n",
        );
    p.write_config(&yaml);
    p.wait_log("needs the identity section", Duration::from_secs(10))
        .await;
    assert_eq!(get(&p.url("web", "/")).await.body, "ok");
}

#[tokio::test]
async fn a_changed_ca_root_triggers_rotation() {
    let ca = ca(&[]);
    let files = tempfile::tempdir().unwrap();
    let app = app("reviews", &[]);
    let p = proxy(
        &(identity_block(&ca, files.path(), "reviews", "1h")
            + &format!(
                "listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ {MTLS} }}]\n      trusted_ca: \"sds://ROOTCA\"\n    tcp: {{ cluster: app }}\nclusters:\n{}",
                cluster("app", &[app.addr], "")
            )),
    );
    let first = serial(&p).await;
    assert!(!first.is_empty());
    let root = files.path().join("ca-root.pem");
    // The same root written again (a config sync would) is no change: no rotation. The
    // agent looks at the file every second.
    let same = std::fs::read(&root).unwrap();
    std::fs::write(&root, &same).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(serial(&p).await, first, "rotated for an unchanged root");
    assert!(!p.proc.log().contains("CA root changed"));
    // The root file changes (as a bundle update would): rotate now, not in 30 min.
    std::fs::write(&root, format!("{}\n", ca.root_pem)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = serial(&p).await;
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation after the root changed\n{}",
            p.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(p.proc.log().contains("CA root changed"));
}

/// The agent's workload key signs through cryptomb batches when the identity section
/// asks for it: mutual TLS between two sidecars, an ECDSA workload key on one side and
/// RSA on the other, every handshake signed by the provider on both.
#[tokio::test]
async fn workload_keys_sign_through_cryptomb() {
    let files = tempfile::tempdir().unwrap();
    let ca = ca(&[]);
    let app = app("reviews", &[]);
    let block = |sa: &str, key: &str| {
        identity_block(&ca, files.path(), sa, "1h").replace("key_type: ecdsa", key_type_line(key))
    };
    fn key_type_line(key: &str) -> &'static str {
        if key == "rsa" {
            "key_type: rsa\n  private_key_provider: { cryptomb: { poll_delay: 2ms } }"
        } else {
            "key_type: ecdsa\n  private_key_provider: { cryptomb: { poll_delay: 2ms } }"
        }
    }
    let inbound = proxy(
        &(block("reviews", "ecdsa")
            + &format!(
                "listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ {MTLS} }}]\n      trusted_ca: \"sds://ROOTCA\"\n      session_resumption: false\n    tcp: {{ cluster: app }}\nclusters:\n{}",
                cluster("app", &[app.addr], "")
            )),
    );
    let outbound = proxy(
        &(block("frontend", "rsa")
            + "listeners:\n  - name: out\n    address: 127.0.0.1:0\n    tcp: { cluster: reviews }\nclusters:\n"
            + &cluster(
                "reviews",
                &[inbound.addr("inbound")],
                "tls:\n  trusted_ca: \"sds://ROOTCA\"\n  certificate: { certificate_chain: \"sds://default\" }\n  match_identities: [\"spiffe://cluster.local/ns/default/sa/reviews\"]",
            )),
    );
    let out = outbound.addr("out");
    let requests: Vec<_> = (0..32).map(|_| tokio::spawn(fresh_request(out))).collect();
    let mut ok = 0;
    for r in requests {
        ok += r.await.unwrap() as usize;
    }
    assert_eq!(ok, 32, "{}\n{}", outbound.proc.log(), inbound.proc.log());
    let signed = "trellis_private_key_operations_total{provider=\"cryptomb\",op=\"sign\",result=\"success\"}";
    // The server signs every handshake; the client signs its CertificateVerify.
    assert!(inbound.metric(signed).await >= 32.0);
    assert!(outbound.metric(signed).await >= 32.0);
    if trellis_cryptomb::ifma_available() {
        assert_eq!(
            inbound.metric("trellis_cryptomb_fallbacks_total").await,
            0.0
        );
        assert_eq!(
            outbound.metric("trellis_cryptomb_fallbacks_total").await,
            0.0
        );
    }
}
