//! The cryptomb provider through the real binary: many concurrent TLS 1.3 handshakes
//! with an RSA-2048 certificate are signed in multi-buffer batches (the metrics show
//! batches of more than one), TLS 1.2 signs with PKCS#1 v1.5 and decrypts for RSA key
//! exchange, and ECDSA P-256 certificates are signed in batches too (TLS 1.3 and 1.2).

use crate::harness::*;
use crate::pki::Pki;
use std::net::SocketAddr;
use std::sync::Arc;
use trellis_tls::{ClientTls, ClientTlsConfig, TlsVersion};

fn listener(name: &str, cert: &str, key: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: 127.0.0.1:0
    tls:
      min_version: "1.2"
      certificates:
        - certificate_chain: "{cert}"
          private_key: "{key}"
          private_key_provider: {{ cryptomb: {{ poll_delay: 5ms{extra} }} }}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: "signed" }} }}]
"#
    )
}

fn client(pki: &Pki, max: TlsVersion) -> Arc<ClientTls> {
    Arc::new(
        ClientTls::new(ClientTlsConfig {
            bundles: Vec::new(),
            roots: trellis_tls::load_trust_bundle(&pki.root_path()).unwrap(),
            certificate: None,
            sni: Some("localhost".into()),
            alpn: vec!["http/1.1".into()],
            stream_alpn: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: max,
            expected_identities: vec!["localhost".into()],
            key_op_hook: None,
        })
        .unwrap(),
    )
}

/// `n` handshakes with `tls` to `addr`, `at_once` at a time; how many succeeded.
async fn handshakes(tls: &Arc<ClientTls>, addr: SocketAddr, n: usize, at_once: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n / at_once {
        let round: Vec<_> = (0..at_once)
            .map(|_| tokio::spawn(handshake(tls.clone(), addr)))
            .collect();
        for r in round {
            ok += r.await.unwrap() as usize;
        }
    }
    ok
}

async fn handshake(tls: Arc<ClientTls>, addr: SocketAddr) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    tls.connect(tcp).await.is_ok()
}

#[tokio::test]
async fn concurrent_handshakes_are_signed_in_batches() {
    let _quiet = quiet().await;
    let pki = Pki::new("root");
    let rsa = pki.leaf("rsa", &["DNS:localhost"], false);
    let ec = pki.leaf("ec", &["DNS:localhost"], true);
    let yaml = "listeners:\n".to_string()
        + &listener("rsa", &rsa.cert, &rsa.key, "")
        + &listener("ec", &ec.cert, &ec.key, "");
    let p = proxy(&yaml);

    // 96 full TLS 1.3 handshakes, 32 at a time.
    let tls13 = client(&pki, TlsVersion::Tls13);
    let addr = p.addr("rsa");
    assert_eq!(
        handshakes(&tls13, addr, 96, 32).await,
        96,
        "{}",
        p.proc.log()
    );
    let signs = p
        .metric("trellis_private_key_operations_total{provider=\"cryptomb\",op=\"sign\",result=\"success\"}")
        .await;
    assert!(signs >= 96.0, "{signs}");

    // TLS 1.2: ECDHE with a PKCS#1 v1.5 signature, and RSA key exchange (decrypt).
    let tls12 = client(&pki, TlsVersion::Tls12);
    assert!(handshake(tls12, addr).await);
    let out = s_client(addr, &["-tls1_2", "-sigalgs", "RSA+SHA256"]);
    assert!(out.contains("New, TLSv1.2"), "{out}");
    assert!(
        out.contains("Peer signature type: RSA\n") || out.contains("Peer signature type: RSA\r"),
        "{out}"
    );
    let out = s_client(addr, &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]);
    assert!(out.contains("Cipher is AES128-GCM-SHA256"), "{out}");
    assert!(
        p.metric("trellis_private_key_operations_total{provider=\"cryptomb\",op=\"decrypt\",result=\"success\"}")
            .await
            >= 1.0
    );

    if !trellis_cryptomb::ifma_available() {
        // Every operation takes the counted single-operation path.
        assert!(handshake(tls13.clone(), p.addr("ec")).await);
        assert!(p.metric("trellis_cryptomb_fallbacks_total").await >= 1.0);
        eprintln!(
            "SKIPPED batch-fill check: this CPU has no AVX-512 IFMA (every operation fell back)"
        );
        return;
    }
    let rsa_ops = batched_ops(&p).await;
    // Under concurrency the queue fills: on average well over one operation a batch.
    assert!(rsa_ops.1 >= 96.0, "{rsa_ops:?}");
    assert!(
        rsa_ops.1 / rsa_ops.0 >= 2.0,
        "mean fill {:.2} over {} batches",
        rsa_ops.1 / rsa_ops.0,
        rsa_ops.0
    );
    assert!(p.metric("trellis_cryptomb_queue_wait_seconds_count").await >= 96.0);

    // ECDSA P-256: 64 TLS 1.3 handshakes, 32 at a time, signed in P-256 batches (the
    // clients verify every signature).
    let addr = p.addr("ec");
    assert_eq!(
        handshakes(&tls13, addr, 64, 32).await,
        64,
        "{}",
        p.proc.log()
    );
    let out = s_client(addr, &["-tls1_2", "-sigalgs", "ECDSA+SHA256"]);
    assert!(out.contains("New, TLSv1.2"), "{out}");
    assert!(out.contains("Peer signature type: ECDSA"), "{out}");
    let all = batched_ops(&p).await;
    let (ec_batches, ec_ops) = (all.0 - rsa_ops.0, all.1 - rsa_ops.1);
    assert!(ec_ops >= 65.0, "{ec_ops}");
    assert!(
        ec_ops / ec_batches >= 2.0,
        "mean ECDSA fill {:.2} over {ec_batches} batches",
        ec_ops / ec_batches
    );
    assert_eq!(p.metric("trellis_cryptomb_fallbacks_total").await, 0.0);
    assert_eq!(p.metric("trellis_cryptomb_errors_total").await, 0.0);
}

#[tokio::test]
async fn thread_batches_fill_on_the_batch_thread() {
    let _quiet = quiet().await;
    if !trellis_cryptomb::ifma_available() {
        eprintln!("SKIPPED: this CPU has no AVX-512 IFMA (batches need the kernels)");
        return;
    }
    let pki = Pki::new("root");
    let rsa = pki.leaf("rsa", &["DNS:localhost"], false);
    let ec = pki.leaf("ec", &["DNS:localhost"], true);
    let yaml = "listeners:\n".to_string()
        + &listener("rsa", &rsa.cert, &rsa.key, ", inline: false")
        + &listener("ec", &ec.cert, &ec.key, ", inline: false");
    let p = proxy(&yaml);
    let tls13 = client(&pki, TlsVersion::Tls13);
    assert_eq!(
        handshakes(&tls13, p.addr("rsa"), 64, 32).await,
        64,
        "{}",
        p.proc.log()
    );
    assert_eq!(
        handshakes(&tls13, p.addr("ec"), 64, 32).await,
        64,
        "{}",
        p.proc.log()
    );
    // A lone handshake is computed when its poll delay expires.
    assert!(handshake(tls13.clone(), p.addr("ec")).await);
    let (batches, ops) = batched_ops(&p).await;
    assert!(ops >= 129.0, "{ops}");
    assert!(
        ops / batches >= 2.0,
        "mean fill {:.2} over {batches}",
        ops / batches
    );
    assert_eq!(p.metric("trellis_cryptomb_errors_total").await, 0.0);
}

/// (batches, operations in them) so far.
async fn batched_ops(p: &Proxy) -> (f64, f64) {
    let (mut batches, mut ops) = (0.0, 0.0);
    for fill in 1..=8 {
        let n = p
            .metric(&format!(
                "trellis_cryptomb_batches_total{{fill=\"{fill}\"}}"
            ))
            .await;
        batches += n;
        ops += n * fill as f64;
    }
    (batches, ops)
}
