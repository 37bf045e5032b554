//! The cost of verifying a peer against trust bundles of N roots (N = 1, 10, 100): a
//! whole mutual TLS 1.3 handshake (P-256 certificates, in memory, one thread), the
//! server holding N trust domains of one root each (a tenant federated with N - 1
//! others), against the same N roots as one plain store with a trust-domain check
//! (`client_roots`, the form without tenants).
//!
//! Also what building a cluster's client context with N roots costs (done per cluster
//! on every config update that changes it).
//!
//! Usage: cargo bench -p trellis-tls --bench bundles

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::{X509Name, X509};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;
use trellis_tls::{
    CertifiedKey, ClientTls, ClientTlsConfig, InMemoryKey, ServerCertificate, ServerTls,
    ServerTlsConfig, TlsVersion, TrustDomainRoots,
};

fn key() -> PKey<Private> {
    PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap()
}

fn cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    uri: Option<&str>,
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.0.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    match uri {
        Some(u) => {
            let ext = SubjectAlternativeName::new()
                .uri(u)
                .build(&b.x509v3_context(issuer.map(|i| i.0.as_ref()), None))
                .unwrap();
            b.append_extension(&ext).unwrap();
        }
        None => b
            .append_extension(&BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap(),
    }
    b.sign(issuer.map_or(key, |i| i.1), MessageDigest::sha256())
        .unwrap();
    b.build()
}

fn leaf(root: &X509, root_key: &PKey<Private>, uri: &str) -> CertifiedKey {
    let k = key();
    CertifiedKey {
        chain: vec![cert("leaf", &k, Some((root, root_key)), Some(uri))],
        provider: Arc::new(InMemoryKey::new(k).unwrap()),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let roots: Vec<(X509, PKey<Private>)> = (0..100)
        .map(|i| {
            let k = key();
            (cert(&format!("root {i}"), &k, None, None), k)
        })
        .collect();
    // The client is of the last tenant (t{n-1}), so its root is found last in a list.
    let mut group = c.benchmark_group("mutual_handshake");
    for n in [1usize, 10, 100] {
        let (own, own_key) = &roots[n - 1];
        let server_cert = leaf(
            own,
            own_key,
            &format!("spiffe://t{}.example/ns/s/sa/server", n - 1),
        );
        let client_cert = leaf(
            own,
            own_key,
            &format!("spiffe://t{}.example/ns/c/sa/client", n - 1),
        );
        let bundles: Vec<TrustDomainRoots> = roots[..n]
            .iter()
            .enumerate()
            .map(|(i, (r, _))| TrustDomainRoots {
                trust_domain: format!("t{i}.example"),
                roots: vec![r.clone()],
            })
            .collect();
        let all: Vec<X509> = roots[..n].iter().map(|(r, _)| r.clone()).collect();
        let domains: Vec<String> = (0..n).map(|i| format!("t{i}.example")).collect();
        for form in ["bundles", "roots"] {
            let by_bundle = form == "bundles";
            let server = ServerTls::new(ServerTlsConfig {
                certificates: vec![ServerCertificate {
                    key: server_cert.clone(),
                    server_names: vec![],
                }],
                alpn: vec![],
                min_version: TlsVersion::Tls13,
                max_version: TlsVersion::Tls13,
                client_roots: (!by_bundle).then(|| all.clone()),
                require_client_certificate: true,
                client_trust_domains: if by_bundle { vec![] } else { domains.clone() },
                client_bundles: if by_bundle { bundles.clone() } else { vec![] },
                session_resumption: false,
                key_op_hook: None,
            })
            .unwrap();
            let client = ClientTls::new(ClientTlsConfig {
                roots: if by_bundle { vec![] } else { all.clone() },
                bundles: if by_bundle { bundles.clone() } else { vec![] },
                certificate: Some(client_cert.clone()),
                sni: None,
                alpn: vec![],
                min_version: TlsVersion::Tls13,
                max_version: TlsVersion::Tls13,
                expected_identities: vec![],
                key_op_hook: None,
            })
            .unwrap();
            group.bench_with_input(BenchmarkId::new(form, n), &n, |b, _| {
                b.iter(|| {
                    rt.block_on(async {
                        let (a, z) = tokio::io::duplex(16 * 1024);
                        let (s, c) = tokio::join!(server.accept(a), client.connect(z));
                        let s = s.unwrap();
                        c.unwrap();
                        assert!(!s.peer_identities.is_empty());
                    })
                })
            });
        }
    }
    group.finish();
    // What each cluster's context costs on a config update: its store of N roots.
    let mut group = c.benchmark_group("client_context");
    for n in [1usize, 10, 100] {
        let (own, own_key) = &roots[0];
        let cert = leaf(own, own_key, "spiffe://t0.example/ns/c/sa/client");
        let bundles: Vec<TrustDomainRoots> = roots[..n]
            .iter()
            .enumerate()
            .map(|(i, (r, _))| TrustDomainRoots {
                trust_domain: format!("t{i}.example"),
                roots: vec![r.clone()],
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("bundles", n), &n, |b, _| {
            b.iter(|| {
                ClientTls::new(ClientTlsConfig {
                    roots: vec![],
                    bundles: bundles.clone(),
                    certificate: Some(cert.clone()),
                    sni: None,
                    alpn: vec![],
                    min_version: TlsVersion::Tls13,
                    max_version: TlsVersion::Tls13,
                    expected_identities: vec![],
                    key_op_hook: None,
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
