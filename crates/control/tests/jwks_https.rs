//! The control plane fetches a `jwksUri` over HTTPS, verifying the server against the
//! system's CA certificates (here `SSL_CERT_FILE`, which this test binary alone sets),
//! and refuses a server it cannot verify.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslAcceptor, SslMethod};
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::{X509Name, X509};
use trellis_control::JwksResolver;
use trellis_mesh::{load_str, Loaded};

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

/// A CA, and a server certificate for 127.0.0.1 it signed.
fn pki() -> (X509, X509, PKey<Private>) {
    let ca_key = key();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name("test issuer CA")).unwrap();
    b.set_issuer_name(&name("test issuer CA")).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.append_extension(&BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let server_key = key();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name("127.0.0.1")).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&server_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(&san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (ca, b.build(), server_key)
}

/// An HTTPS server answering every request with `body`, on its own thread.
fn serve(cert: X509, key: PKey<Private>, body: String) -> u16 {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.set_private_key(&key).unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(mut tls) = acceptor.accept(tcp) else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = tls.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes());
            let _ = tls.shutdown();
        }
    });
    port
}

fn request_authentication(uri: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(
        &format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: ra, namespace: default }}\nspec:\n  jwtRules: [{{ issuer: test-issuer-1@istio.io, jwksUri: \"{uri}\", timeout: 2s }}]\n"
        ),
        "ra.yaml",
        &mut loaded,
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    loaded
}

fn write(path: &Path, cert: &X509) {
    std::fs::write(path, cert.to_pem().unwrap()).unwrap();
}

#[tokio::test]
async fn jwks_uri_over_https_is_verified_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki();
    let roots = dir.path().join("roots.pem");
    write(&roots, &ca);
    // This test binary has one test, and the variable is set before anything reads it.
    std::env::set_var("SSL_CERT_FILE", &roots);
    let jwks = serde_json::from_str::<serde_json::Value>(include_str!(
        "../../trellis/tests/fixtures/jwt/istio.json"
    ))
    .unwrap()["jwks"]
        .as_str()
        .unwrap()
        .to_string();
    let port = serve(cert, key, jwks.clone());

    let resolver = JwksResolver::new();
    let trusted = format!("https://127.0.0.1:{port}/jwks.json");
    let mut loaded = request_authentication(&trusted);
    resolver.resolve(&mut loaded.inputs);
    assert!(loaded.inputs.jwks[&trusted].is_err(), "not fetched yet");
    assert!(resolver.fetch_due().await, "a set was fetched");
    let mut loaded = request_authentication(&trusted);
    resolver.resolve(&mut loaded.inputs);
    assert_eq!(loaded.inputs.jwks[&trusted], Ok(jwks.clone()));

    // A server whose certificate no trusted CA signed: refused, no keys.
    let (_, other_cert, other_key) = pki();
    let other = serve(other_cert, other_key, jwks);
    let untrusted = format!("https://127.0.0.1:{other}/jwks.json");
    let resolver = JwksResolver::new();
    let mut loaded = request_authentication(&untrusted);
    resolver.resolve(&mut loaded.inputs);
    assert!(!resolver.fetch_due().await);
    let mut loaded = request_authentication(&untrusted);
    resolver.resolve(&mut loaded.inputs);
    let why = loaded.inputs.jwks[&untrusted].clone().unwrap_err();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}
