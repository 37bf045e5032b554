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

#[path = "../tests/support/pki.rs"]
mod pki;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pki::{ca, leaf, Ca};
use trellis_tls::{
    ClientTls, ClientTlsConfig, ServerCertificate, ServerTls, ServerTlsConfig, TlsVersion,
    TrustDomainRoots,
};

/// The first `n` roots, each the root of trust domain t<i>.example.
fn first(roots: &[Ca], n: usize) -> Vec<TrustDomainRoots> {
    pki::bundles(
        roots[..n]
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("t{i}.example"), r)),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let roots: Vec<Ca> = (0..100).map(|i| ca(&format!("root {i}"))).collect();
    // The client is of the last tenant (t{n-1}), so its root is found last in a list.
    let mut group = c.benchmark_group("mutual_handshake");
    for n in [1usize, 10, 100] {
        let own = &roots[n - 1];
        let server_cert = leaf(own, &format!("spiffe://t{}.example/ns/s/sa/server", n - 1));
        let client_cert = leaf(own, &format!("spiffe://t{}.example/ns/c/sa/client", n - 1));
        let bundles = first(&roots, n);
        let all: Vec<_> = roots[..n].iter().map(|r| r.cert.clone()).collect();
        let domains: Vec<String> = (0..n).map(|i| format!("t{i}.example")).collect();
        for form in ["bundles", "roots"] {
            let by_bundle = form == "bundles";
            let server = ServerTls::new(ServerTlsConfig {
                cipher_suites: Vec::new(),
                client_sans: Vec::new(),
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
                stream_alpn: Vec::new(),
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
        let cert = leaf(&roots[0], "spiffe://t0.example/ns/c/sa/client");
        let bundles = first(&roots, n);
        group.bench_with_input(BenchmarkId::new("bundles", n), &n, |b, _| {
            b.iter(|| {
                ClientTls::new(ClientTlsConfig {
                    roots: vec![],
                    bundles: bundles.clone(),
                    certificate: Some(cert.clone()),
                    sni: None,
                    alpn: vec![],
                    stream_alpn: Vec::new(),
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
