//! RSA private operations per second, on one core: eight at once with the IFMA kernels
//! against BoringSSL one at a time (the single-operation path the proxy uses without
//! IFMA). `cargo bench -p trellis-cryptomb --bench rsa`

use boring::bn::BigNum;
use boring::rsa::{Padding, Rsa};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use trellis_cryptomb::{private_batch, RsaKey};

fn rsa(c: &mut Criterion) {
    let mut group = c.benchmark_group("rsa_private");
    for bits in [2048u32, 3072, 4096] {
        let rsa = Rsa::generate(bits).unwrap();
        let key = RsaKey::new(&rsa).unwrap();
        let mut r = BigNum::new().unwrap();
        rsa.n().rand_range(&mut r).unwrap();
        let input = r.to_vec_padded(rsa.size() as usize).unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("boringssl_single", bits),
            &input,
            |b, i| {
                let mut out = vec![0u8; rsa.size() as usize];
                b.iter(|| {
                    rsa.private_decrypt(black_box(i), &mut out, Padding::NONE)
                        .unwrap()
                })
            },
        );
        if trellis_cryptomb::ifma_available() {
            group.throughput(Throughput::Elements(8));
            let ops: Vec<(&RsaKey, &[u8])> = (0..8).map(|_| (&key, input.as_slice())).collect();
            group.bench_with_input(BenchmarkId::new("ifma_batch_of_8", bits), &ops, |b, ops| {
                b.iter(|| private_batch(black_box(ops)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, rsa);
criterion_main!(benches);
