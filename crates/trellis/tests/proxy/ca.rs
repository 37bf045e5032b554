//! `trellis ca` through the real binary and a real gRPC client over TLS: identities come
//! from authentication, never from the CSR; bad CSRs and bad tokens are refused;
//! renewal over mTLS; Kubernetes tokens checked by TokenReview against a fake API
//! server that replays recorded responses.

use crate::harness::*;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::rsa::Rsa;
use boring::stack::Stack;
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::{X509Name, X509Req, X509};
use std::sync::Arc;
use std::time::Duration;
use trellis_ca::{CaClient, Credential};
use trellis_tls::{peer_identities, CertifiedKey, InMemoryKey};

pub fn csr(key: &PKey<Private>, asks_for: &str) -> String {
    let mut b = X509Req::builder().unwrap();
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("O", "someone").unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_pubkey(key).unwrap();
    let mut exts = Stack::new().unwrap();
    let san = SubjectAlternativeName::new()
        .uri(asks_for)
        .build(&b.x509v3_context(None))
        .unwrap();
    exts.push(san).unwrap();
    b.add_extensions(&exts).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

pub(super) fn ec() -> PKey<Private> {
    let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
}

pub(super) fn client(ca: &Ca) -> CaClient {
    CaClient {
        address: ca.addr.to_string(),
        server_name: "localhost".into(),
        roots: X509::stack_from_pem(ca.root_pem.as_bytes()).unwrap(),
    }
}

fn lifetime_secs(leaf: &X509) -> i64 {
    trellis_ca::authority::asn1_unix(leaf.not_after())
        - trellis_ca::authority::asn1_unix(leaf.not_before())
}

#[tokio::test]
async fn issues_for_the_authenticated_identity_only() {
    let ca = ca(&[]);
    let c = client(&ca);
    let reviews = "spiffe://cluster.local/ns/default/sa/reviews";
    let token = ca.token(reviews, "1h");
    let key = ec();

    // The CSR asks for admin; the certificate names the token's identity.
    let chain = c
        .create_certificate(
            &csr(&key, "spiffe://cluster.local/ns/default/sa/admin"),
            Duration::from_secs(3600),
            Credential::Token(&token),
        )
        .await
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf then root");
    assert_eq!(chain[1].trim(), ca.root_pem.trim());
    let leaf = X509::from_pem(chain[0].as_bytes()).unwrap();
    assert_eq!(peer_identities(&leaf), vec![reviews.to_string()]);
    assert!(leaf.public_key().unwrap().public_eq(&key));
    let root = X509::from_pem(ca.root_pem.as_bytes()).unwrap();
    assert!(leaf.verify(&root.public_key().unwrap()).unwrap());
    // Requested validity is honoured below the cap (60 s of back-dating for skew) ...
    assert!((3600..=3600 + 61).contains(&lifetime_secs(&leaf)));
    // A bootstrap token is good for the key it was first used with: again with that
    // key (a retry), never with another.
    c.create_certificate(
        &csr(&key, reviews),
        Duration::from_secs(3600),
        Credential::Token(&token),
    )
    .await
    .unwrap();
    let e = c
        .create_certificate(
            &csr(&ec(), reviews),
            Duration::from_secs(3600),
            Credential::Token(&token),
        )
        .await
        .unwrap_err();
    assert!(
        e.contains("Unauthenticated") && e.contains("already used with another key"),
        "{e}"
    );
    // ... and capped at 24 h above it.
    let chain = c
        .create_certificate(
            &csr(&ec(), reviews),
            Duration::from_secs(72 * 3600),
            Credential::Token(&ca.token(reviews, "1h")),
        )
        .await
        .unwrap();
    let leaf = X509::from_pem(chain[0].as_bytes()).unwrap();
    assert!((86400..=86400 + 61).contains(&lifetime_secs(&leaf)));

    // Renewal over mTLS with the certificate just issued, no token.
    let renewal_key = ec();
    let first = c
        .create_certificate(
            &csr(&renewal_key, reviews),
            Duration::from_secs(600),
            Credential::Token(&ca.token(reviews, "1h")),
        )
        .await
        .unwrap();
    let held = CertifiedKey {
        chain: vec![X509::from_pem(first[0].as_bytes()).unwrap()],
        provider: Arc::new(InMemoryKey::new(renewal_key).unwrap()),
    };
    let renewed = c
        .create_certificate(
            &csr(&ec(), "spiffe://cluster.local/ns/default/sa/admin"),
            Duration::from_secs(600),
            Credential::Certificate(held),
        )
        .await
        .unwrap();
    let leaf = X509::from_pem(renewed[0].as_bytes()).unwrap();
    assert_eq!(peer_identities(&leaf), vec![reviews.to_string()]);
}

#[tokio::test]
async fn refuses_bad_csrs_and_bad_credentials() {
    let ca = ca(&[]);
    let c = client(&ca);
    let id = "spiffe://cluster.local/ns/default/sa/reviews";
    let token = ca.token(id, "1h");
    let ttl = Duration::from_secs(600);

    // A CSR whose signature does not verify.
    let good = csr(&ec(), id);
    let mut der = X509Req::from_pem(good.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x5a;
    let tampered = X509Req::from_der(&der)
        .map(|r| String::from_utf8(r.to_pem().unwrap()).unwrap())
        .unwrap();
    let e = c
        .create_certificate(&tampered, ttl, Credential::Token(&token))
        .await
        .unwrap_err();
    assert!(
        e.contains("InvalidArgument") && e.contains("signature"),
        "{e}"
    );
    let e = c
        .create_certificate("not a csr", ttl, Credential::Token(&token))
        .await
        .unwrap_err();
    assert!(e.contains("InvalidArgument"), "{e}");
    // A 1024-bit RSA key is too weak to certify.
    let weak = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let e = c
        .create_certificate(&csr(&weak, id), ttl, Credential::Token(&token))
        .await
        .unwrap_err();
    assert!(e.contains("InvalidArgument"), "{e}");

    // An expired token, a token of another CA, a token for another trust domain, a
    // forged token, and no credential at all.
    let expired = ca.token(id, "0s");
    let other = self::ca(&[]);
    let foreign = other.token(id, "1h");
    let other_td = ca.token("spiffe://evil.domain/ns/default/sa/reviews", "1h");
    let forged = {
        let mut p: Vec<&str> = token.split('.').collect();
        let evil = other_td.split('.').nth(1).unwrap();
        p[1] = evil;
        p.join(".")
    };
    for (name, t, want) in [
        ("expired", expired.as_str(), "expired"),
        ("other CA", foreign.as_str(), "signature"),
        ("other trust domain", other_td.as_str(), "trust domain"),
        ("forged", forged.as_str(), "signature"),
        (
            "kube token without kube",
            "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
            "not configured",
        ),
    ] {
        let e = c
            .create_certificate(&csr(&ec(), id), ttl, Credential::Token(t))
            .await
            .unwrap_err();
        assert!(e.contains(want), "{name}: {e}");
    }
    let e = c
        .create_certificate(&csr(&ec(), id), ttl, Credential::Token(""))
        .await
        .unwrap_err();
    assert!(e.contains("Unauthenticated"), "{e}");
    assert!(ca.proc.log().contains("certificate request refused"));
}

#[tokio::test]
async fn kubernetes_service_account_tokens_via_token_review() {
    let api = FakeKubeApi::start().await;
    let ca = ca(&["--kube-api", &format!("http://{}", api.addr)]);
    let c = client(&ca);
    let ttl = Duration::from_secs(600);
    let chain = c
        .create_certificate(
            &csr(&ec(), "spiffe://cluster.local/ns/default/sa/admin"),
            ttl,
            Credential::Token("sa-token-reviews"),
        )
        .await
        .unwrap();
    let leaf = X509::from_pem(chain[0].as_bytes()).unwrap();
    assert_eq!(
        peer_identities(&leaf),
        vec!["spiffe://cluster.local/ns/bookinfo/sa/reviews".to_string()]
    );
    for (token, want) in [
        ("sa-token-expired", "service account token has expired"),
        ("user-token", "not a service account token"),
    ] {
        let e = c
            .create_certificate(&csr(&ec(), "x"), ttl, Credential::Token(token))
            .await
            .unwrap_err();
        assert!(e.contains(want), "{token}: {e}");
    }
    // The CA asked with the istio-ca audience, with each token as sent.
    let seen = api.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for (req, token) in seen
        .iter()
        .zip(["sa-token-reviews", "sa-token-expired", "user-token"])
    {
        assert_eq!(req["kind"], "TokenReview");
        assert_eq!(req["spec"]["token"], token);
        assert_eq!(req["spec"]["audiences"][0], "istio-ca");
    }
}

/// Replays recorded TokenReview responses by token.
struct FakeKubeApi {
    addr: std::net::SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl FakeKubeApi {
    async fn start() -> Self {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube");
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            assert_eq!(
                                req.uri().path(),
                                "/apis/authentication.k8s.io/v1/tokenreviews"
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let file = match v["spec"]["token"].as_str().unwrap() {
                                "sa-token-reviews" => "tokenreview-authenticated.json",
                                "user-token" => "tokenreview-user.json",
                                _ => "tokenreview-unauthenticated.json",
                            };
                            seen.lock().unwrap().push(v);
                            let text = std::fs::read(format!("{fixtures}/{file}")).unwrap();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(201)
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        FakeKubeApi { addr, requests }
    }
}
