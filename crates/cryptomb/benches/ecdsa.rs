//! ECDSA P-256 signatures per second, on one core: eight at once with the IFMA kernels
//! against BoringSSL one at a time (the single-operation path the proxy uses without
//! IFMA). `cargo bench -p trellis-cryptomb --bench ecdsa`

use boring::ec::{EcGroup, EcKey};
use boring::ecdsa::EcdsaSig;
use boring::nid::Nid;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use trellis_cryptomb::ecdsa::sign_batch;
use trellis_cryptomb::EcdsaKey;

fn ecdsa(c: &mut Criterion) {
    let group_p256 = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group_p256).unwrap();
    let digest = [0x42u8; 32];
    let mut group = c.benchmark_group("ecdsa_p256_sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("boringssl_single", |b| {
        b.iter(|| EcdsaSig::sign(black_box(&digest), &key).unwrap())
    });
    if trellis_cryptomb::ifma_available() {
        let mb = EcdsaKey::new(&key).unwrap();
        let ops: Vec<(&EcdsaKey, &[u8])> = (0..8).map(|_| (&mb, digest.as_slice())).collect();
        group.throughput(Throughput::Elements(8));
        group.bench_function("ifma_batch_of_8", |b| {
            b.iter(|| sign_batch(black_box(&ops)))
        });
    }
    group.finish();
}

criterion_group!(benches, ecdsa);
criterion_main!(benches);
