//! The private-key provider seam over real loopback handshakes: a handshake suspends
//! while the provider's future is pending and completes with its signature; a failing
//! provider fails the handshake; mutual TLS exposes the client's SPIFFE identity.

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::rsa::Rsa;
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::{X509Name, X509};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_tls::*;

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    n.build()
}

/// A certificate for `key` with one URI SAN, signed by `issuer` (self-signed if None).
fn cert(
    cn: &str,
    uri: Option<&str>,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_serial())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.set_pubkey(key).unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name(cn)).unwrap();
            let bc = BasicConstraints::new().critical().ca().build().unwrap();
            b.append_extension(&bc).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            if let Some(u) = uri {
                let san = SubjectAlternativeName::new()
                    .uri(u)
                    .build(&b.x509v3_context(Some(ca), None))
                    .unwrap();
                b.append_extension(&san).unwrap();
            }
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

fn rand_serial() -> u32 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) as u32
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// Wraps the in-memory key: waits `delay` before signing (as a batch or a token would),
/// or fails every operation.
struct SlowKey {
    inner: InMemoryKey,
    delay: Duration,
    fail: bool,
    calls: Arc<AtomicUsize>,
}

impl PrivateKeyProvider for SlowKey {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> KeyOpFuture {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let signed = self.inner.sign(scheme, message);
        let (delay, fail) = (self.delay, self.fail);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(KeyOpError("token unavailable".into()));
            }
            signed.await
        })
    }
    fn decrypt(&self, ciphertext: &[u8]) -> KeyOpFuture {
        self.inner.decrypt(ciphertext)
    }
}

struct Pki {
    root: X509,
    root_key: PKey<Private>,
}

impl Pki {
    fn new() -> Self {
        let root_key = rsa_key();
        let root = cert("test-root", None, &root_key, None);
        Pki { root, root_key }
    }
    fn leaf(&self, sa: &str, key: PKey<Private>) -> (X509, PKey<Private>) {
        let uri = SpiffeId::new("cluster.local", "default", sa).to_string();
        let c = cert(sa, Some(&uri), &key, Some((&self.root, &self.root_key)));
        (c, key)
    }
}

fn slow(
    key: PKey<Private>,
    delay: Duration,
    fail: bool,
) -> (Arc<dyn PrivateKeyProvider>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let p = SlowKey {
        inner: InMemoryKey::new(key).unwrap(),
        delay,
        fail,
        calls: calls.clone(),
    };
    (Arc::new(p), calls)
}

fn server(pki: &Pki, provider: Arc<dyn PrivateKeyProvider>, leaf: X509, mtls: bool) -> ServerTls {
    ServerTls::new(ServerTlsConfig {
        cipher_suites: Vec::new(),
        client_sans: Vec::new(),
        client_bundles: Vec::new(),
        certificates: vec![ServerCertificate {
            key: CertifiedKey {
                chain: vec![leaf],
                provider,
            },
            server_names: vec![],
        }],
        alpn: vec!["h2".into(), "http/1.1".into()],
        min_version: TlsVersion::Tls13,
        max_version: TlsVersion::Tls13,
        client_roots: mtls.then(|| vec![pki.root.clone()]),
        require_client_certificate: true,
        client_trust_domains: vec!["cluster.local".into()],
        session_resumption: true,
        key_op_hook: None,
    })
    .unwrap()
}

fn client(pki: &Pki, expect: &str, cert: Option<CertifiedKey>) -> ClientTls {
    ClientTls::new(ClientTlsConfig {
        bundles: Vec::new(),
        roots: vec![pki.root.clone()],
        certificate: cert,
        sni: None,
        alpn: vec!["h2".into()],
        stream_alpn: Vec::new(),
        min_version: TlsVersion::Tls13,
        max_version: TlsVersion::Tls13,
        expected_identities: vec![expect.to_string()],
        key_op_hook: None,
    })
    .unwrap()
}

/// One handshake each way over loopback; the server echoes one message and returns
/// what it learned about the client.
async fn handshake(
    server: ServerTls,
    client: ClientTls,
) -> (Result<Vec<String>, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut a = server.accept(tcp).await?;
        assert_eq!(a.alpn.as_deref(), Some(&b"h2"[..]));
        let mut buf = [0u8; 4];
        a.stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        a.stream.write_all(&buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(a.peer_identities)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cli = async {
        let (mut s, alpn) = client.connect(tcp).await?;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }
    .await;
    (srv.await.unwrap(), cli)
}

#[tokio::test]
async fn handshake_waits_for_the_providers_future() {
    let pki = Pki::new();
    for key in [rsa_key(), ec_key()] {
        let (leaf, key) = pki.leaf("reviews", key);
        let (provider, calls) = slow(key, Duration::from_millis(150), false);
        let t = Instant::now();
        let (srv, cli) = handshake(
            server(&pki, provider, leaf, false),
            client(&pki, "spiffe://cluster.local/ns/default/sa/reviews", None),
        )
        .await;
        cli.unwrap();
        assert_eq!(srv.unwrap(), Vec::<String>::new());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn a_failing_provider_fails_the_handshake() {
    let pki = Pki::new();
    let (leaf, key) = pki.leaf("reviews", rsa_key());
    let (provider, _) = slow(key, Duration::from_millis(1), true);
    let (srv, cli) = handshake(
        server(&pki, provider, leaf, false),
        client(&pki, "spiffe://cluster.local/ns/default/sa/reviews", None),
    )
    .await;
    assert!(srv.is_err() && cli.is_err());
}

#[tokio::test]
async fn mutual_tls_exposes_the_client_identity_and_checks_the_servers() {
    let pki = Pki::new();
    let (server_leaf, server_key) = pki.leaf("reviews", ec_key());
    let (client_leaf, client_key) = pki.leaf("frontend", rsa_key());
    let (sp, _) = slow(server_key.clone(), Duration::ZERO, false);
    let (cp, client_calls) = slow(client_key, Duration::from_millis(20), false);
    let client_cert = CertifiedKey {
        chain: vec![client_leaf],
        provider: cp,
    };
    let (srv, cli) = handshake(
        server(&pki, sp.clone(), server_leaf.clone(), true),
        client(
            &pki,
            "spiffe://cluster.local/ns/default/sa/reviews",
            Some(client_cert.clone()),
        ),
    )
    .await;
    cli.unwrap();
    assert_eq!(
        srv.unwrap(),
        vec!["spiffe://cluster.local/ns/default/sa/frontend".to_string()]
    );
    assert_eq!(
        client_calls.load(Ordering::Relaxed),
        1,
        "client signed through its provider"
    );

    // The client refuses a server that is not the identity it expects.
    let (srv, cli) = handshake(
        server(&pki, sp.clone(), server_leaf.clone(), true),
        client(
            &pki,
            "spiffe://cluster.local/ns/default/sa/ratings",
            Some(client_cert),
        ),
    )
    .await;
    assert!(cli.is_err() && srv.is_err());

    // The server refuses a client without a certificate.
    let (srv, _) = handshake(
        server(&pki, sp, server_leaf, true),
        client(&pki, "spiffe://cluster.local/ns/default/sa/reviews", None),
    )
    .await;
    assert!(srv.is_err());
}
