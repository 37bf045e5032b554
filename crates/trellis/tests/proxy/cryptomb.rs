//! The cryptomb provider through the real binary: many concurrent TLS 1.3 handshakes
//! with an RSA-2048 certificate are signed in multi-buffer batches (the metrics show
//! batches of more than one), TLS 1.2 signs with PKCS#1 v1.5 and decrypts for RSA key
//! exchange, and an ECDSA certificate takes the counted fallback path.

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
          private_key_provider: {{ cryptomb: {{ poll_delay: 5ms }} }}
{extra}    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: "signed" }} }}]
"#
    )
}

async fn handshake(tls: Arc<ClientTls>, addr: SocketAddr) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    tls.connect(tcp).await.is_ok()
}

#[tokio::test]
async fn concurrent_handshakes_are_signed_in_batches() {
    let pki = Pki::new("root");
    let rsa = pki.leaf("rsa", &["DNS:localhost"], false);
    let ec = pki.leaf("ec", &["DNS:localhost"], true);
    let yaml = "listeners:\n".to_string()
        + &listener("rsa", &rsa.cert, &rsa.key, "")
        + &listener("ec", &ec.cert, &ec.key, "");
    let p = proxy(&yaml);
    let client = |max: TlsVersion| {
        Arc::new(
            ClientTls::new(ClientTlsConfig {
                roots: trellis_tls::load_trust_bundle(&pki.root_path()).unwrap(),
                certificate: None,
                sni: Some("localhost".into()),
                alpn: vec!["http/1.1".into()],
                min_version: TlsVersion::Tls12,
                max_version: max,
                expected_identities: vec!["localhost".into()],
                key_op_hook: None,
            })
            .unwrap(),
        )
    };

    // 96 full TLS 1.3 handshakes, 32 at a time.
    let tls13 = client(TlsVersion::Tls13);
    let addr = p.addr("rsa");
    let mut ok = 0;
    for _ in 0..3 {
        let rounds: Vec<_> = (0..32)
            .map(|_| tokio::spawn(handshake(tls13.clone(), addr)))
            .collect();
        for r in rounds {
            ok += r.await.unwrap() as usize;
        }
    }
    assert_eq!(ok, 96, "{}", p.proc.log());
    let signs = p
        .metric("trellis_private_key_operations_total{provider=\"cryptomb\",op=\"sign\",result=\"success\"}")
        .await;
    assert!(signs >= 96.0, "{signs}");

    // TLS 1.2: ECDHE with a PKCS#1 v1.5 signature, and RSA key exchange (decrypt).
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

    // ECDSA is not batched yet: it works through the counted fallback.
    assert!(handshake(tls13.clone(), p.addr("ec")).await);
    assert!(p.metric("trellis_cryptomb_fallbacks_total").await >= 1.0);
    assert_eq!(p.metric("trellis_cryptomb_errors_total").await, 0.0);

    if !trellis_cryptomb::ifma_available() {
        eprintln!("SKIPPED batch-fill check: this CPU has no AVX-512 IFMA (every RSA operation fell back)");
        return;
    }
    // Under concurrency the queue fills: on average well over one operation a batch.
    let (mut batches, mut batched_ops) = (0.0, 0.0);
    for fill in 1..=8 {
        let n = p
            .metric(&format!(
                "trellis_cryptomb_batches_total{{fill=\"{fill}\"}}"
            ))
            .await;
        batches += n;
        batched_ops += n * fill as f64;
    }
    assert!(batched_ops >= 96.0, "{batched_ops}");
    assert!(
        batched_ops / batches >= 2.0,
        "mean fill {:.2} over {batches} batches",
        batched_ops / batches
    );
    assert!(p.metric("trellis_cryptomb_queue_wait_seconds_count").await >= 96.0);
}
