//! Trust bundles per trust domain, through real handshakes over loopback: a peer's
//! chain must lead to a root of the bundle of the trust domain its SPIFFE ID names. A
//! root trusted for one trust domain does not vouch for another's identities, on
//! either side of the connection; and why a peer was refused is told apart.

mod support;

use support::pki::{ca, leaf, Ca};
use tokio::net::{TcpListener, TcpStream};
use trellis_tls::{
    peer_rejection, CertifiedKey, ClientTls, ClientTlsConfig, ServerCertificate, ServerTls,
    ServerTlsConfig, TlsVersion, TrustDomainRoots,
};

fn bundles(list: &[(&str, &Ca)]) -> Vec<TrustDomainRoots> {
    support::pki::bundles(list.iter().map(|(td, ca)| (td.to_string(), *ca)))
}

fn server(cert: CertifiedKey, client_bundles: Vec<TrustDomainRoots>) -> ServerTls {
    ServerTls::new(ServerTlsConfig {
        cipher_suites: Vec::new(),
        client_sans: Vec::new(),
        certificates: vec![ServerCertificate {
            key: cert,
            server_names: vec![],
        }],
        alpn: vec![],
        min_version: TlsVersion::Tls13,
        max_version: TlsVersion::Tls13,
        client_roots: None,
        require_client_certificate: true,
        client_trust_domains: vec![],
        client_bundles,
        session_resumption: false,
        key_op_hook: None,
    })
    .unwrap()
}

fn client(cert: CertifiedKey, bundles: Vec<TrustDomainRoots>) -> ClientTls {
    ClientTls::new(ClientTlsConfig {
        roots: vec![],
        bundles,
        certificate: Some(cert),
        sni: None,
        alpn: vec![],
        stream_alpn: Vec::new(),
        min_version: TlsVersion::Tls13,
        max_version: TlsVersion::Tls13,
        expected_identities: vec![],
        key_op_hook: None,
    })
    .unwrap()
}

/// One mutual handshake: (the server's result, the client's).
async fn handshake(s: ServerTls, c: ClientTls) -> (Result<String, String>, Result<(), String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut a = s.accept(tcp).await?;
        // TLS 1.3: the client learns of a refused certificate on its first read.
        a.stream.write_all(b"ok").await.map_err(|e| e.to_string())?;
        Ok(a.peer_identities.join(","))
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cli = match c.connect(tcp).await {
        Ok((mut stream, _)) => {
            let mut buf = [0u8; 2];
            stream
                .read_exact(&mut buf)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    (srv.await.unwrap(), cli)
}

#[tokio::test]
async fn a_root_vouches_only_for_its_own_trust_domain() {
    let (a, b, stranger) = (ca("a"), ca("b"), ca("stranger"));
    let server_cert = || leaf(&b, "spiffe://b.example/ns/team-b/sa/api");
    // b's server accepts a's clients (federated) and its own.
    let trusted = || bundles(&[("b.example", &b), ("a.example", &a)]);
    let client_bundles = || bundles(&[("a.example", &a), ("b.example", &b)]);

    let (s, c) = handshake(
        server(server_cert(), trusted()),
        client(
            leaf(&a, "spiffe://a.example/ns/team-a/sa/web"),
            client_bundles(),
        ),
    )
    .await;
    assert_eq!(s.unwrap(), "spiffe://a.example/ns/team-a/sa/web");
    c.unwrap();

    // a's root signing a b.example identity: a's root is in the store, but not for b.
    let (s, _) = handshake(
        server(server_cert(), trusted()),
        client(
            leaf(&a, "spiffe://b.example/ns/team-b/sa/api"),
            client_bundles(),
        ),
    )
    .await;
    let e = s.unwrap_err();
    assert_eq!(peer_rejection(&e), Some("other_trust_domain_root"), "{e}");

    // A trust domain without a bundle here, and a certificate without a SPIFFE ID.
    for id in ["spiffe://c.example/ns/team-c/sa/x", "https://not.spiffe/"] {
        let (s, _) = handshake(
            server(server_cert(), trusted()),
            client(leaf(&a, id), client_bundles()),
        )
        .await;
        let e = s.unwrap_err();
        assert_eq!(peer_rejection(&e), Some("trust_domain"), "{id}: {e}");
    }

    // A root nobody trusts.
    let (s, _) = handshake(
        server(server_cert(), trusted()),
        client(
            leaf(&stranger, "spiffe://a.example/ns/team-a/sa/web"),
            client_bundles(),
        ),
    )
    .await;
    let e = s.unwrap_err();
    assert_eq!(peer_rejection(&e), Some("unknown_ca"), "{e}");

    // The client side holds servers to the same rule: a server certificate of
    // b.example signed by a's root is refused by a client that trusts both roots.
    let (_, c) = handshake(
        server(leaf(&a, "spiffe://b.example/ns/team-b/sa/api"), trusted()),
        client(
            leaf(&a, "spiffe://a.example/ns/team-a/sa/web"),
            client_bundles(),
        ),
    )
    .await;
    let e = c.unwrap_err();
    assert_eq!(peer_rejection(&e), Some("other_trust_domain_root"), "{e}");
    // And a client that trusts a only refuses b's genuine server.
    let (_, c) = handshake(
        server(server_cert(), trusted()),
        client(
            leaf(&a, "spiffe://a.example/ns/team-a/sa/web"),
            bundles(&[("a.example", &a)]),
        ),
    )
    .await;
    assert_eq!(peer_rejection(&c.unwrap_err()), Some("unknown_ca"));
}
