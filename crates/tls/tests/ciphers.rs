//! Downstream cipher suites: the strict BoringSSL cipher list a Gateway's `cipherSuites`
//! become.

mod support;

use support::pki::{ca, leaf};
use trellis_tls::{ServerCertificate, ServerTls, ServerTlsConfig, TlsVersion};

/// Gateway `cipherSuites` reach BoringSSL's strict cipher list: every name Istio lets a
/// Gateway use (its `ValidCipherSuites`) is one BoringSSL knows, and a name it does not
/// know makes the context an error, never a silently wider default.
#[test]
fn cipher_suites_are_strict() {
    let root = ca("cipher-root");
    let make = |suites: &[&str]| {
        ServerTls::new(ServerTlsConfig {
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
            client_sans: Vec::new(),
            certificates: vec![ServerCertificate {
                key: leaf(&root, "spiffe://cluster.local/ns/a/sa/s"),
                server_names: vec![],
            }],
            alpn: vec![],
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            client_roots: None,
            require_client_certificate: false,
            client_trust_domains: vec![],
            client_bundles: vec![],
            session_resumption: false,
            key_op_hook: None,
        })
    };
    // istio/istio pkg/config/security/security.go, ValidCipherSuites.
    for name in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    ] {
        assert!(make(&[name]).is_ok(), "{name}");
    }
    assert!(make(&["ALL", "-AES128-SHA"]).is_ok());
    let err = make(&["ECDHE-RSA-AES128-GCM-SHA256", "not-a-cipher-suite"])
        .err()
        .expect("an unknown name is an error");
    assert!(err.to_string().contains("not-a-cipher-suite"), "{err}");
}
