#![allow(unsafe_code)] // one direct kernel call, after the CPU check
//! The multi-buffer kernels against BoringSSL: raw RSA private operations must give the
//! identical result for every key size, lane count, mix of keys and edge input; PKCS#1
//! v1.5 and PSS signatures built on them must verify with BoringSSL. Skipped (with a
//! message) on a CPU without AVX-512 IFMA.

use boring::bn::BigNum;
use boring::pkey::Private;
use boring::rsa::{Padding, Rsa};
use std::sync::OnceLock;
use trellis_cryptomb::lanes::{get_lane, limbs_from_be, set_lane, zero, Vec8};
use trellis_cryptomb::{ifma, private_batch, scalar, RsaError, RsaKey};

fn ifma_or_skip() -> bool {
    if !trellis_cryptomb::ifma_available() {
        eprintln!(
            "SKIPPED: this CPU has no AVX-512 IFMA; the multi-buffer path is not testable here"
        );
        return false;
    }
    true
}

/// Keys are slow to make; share a few per size across tests.
fn keys(bits: u32) -> &'static [(Rsa<Private>, RsaKey)] {
    static K2048: OnceLock<Vec<(Rsa<Private>, RsaKey)>> = OnceLock::new();
    static K3072: OnceLock<Vec<(Rsa<Private>, RsaKey)>> = OnceLock::new();
    static K4096: OnceLock<Vec<(Rsa<Private>, RsaKey)>> = OnceLock::new();
    let (cell, count) = match bits {
        2048 => (&K2048, 8),
        3072 => (&K3072, 3),
        _ => (&K4096, 2),
    };
    cell.get_or_init(|| {
        (0..count)
            .map(|_| {
                let rsa = Rsa::generate(bits).unwrap();
                let key = RsaKey::new(&rsa).unwrap();
                (rsa, key)
            })
            .collect()
    })
}

fn boring_raw(rsa: &Rsa<Private>, input: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa.private_decrypt(input, &mut out, Padding::NONE).unwrap();
    out.truncate(n);
    out
}

/// A random input below n.
fn random_below(rsa: &Rsa<Private>) -> Vec<u8> {
    let mut r = BigNum::new().unwrap();
    rsa.n().rand_range(&mut r).unwrap();
    r.to_vec_padded(rsa.size() as usize).unwrap()
}

fn check(ops: &[(&Rsa<Private>, &RsaKey, Vec<u8>)]) {
    let batch: Vec<(&RsaKey, &[u8])> = ops.iter().map(|(_, k, i)| (*k, i.as_slice())).collect();
    let results = private_batch(&batch);
    assert_eq!(results.len(), ops.len());
    for ((rsa, _, input), got) in ops.iter().zip(results) {
        assert_eq!(got.unwrap(), boring_raw(rsa, input));
    }
}

#[test]
fn amm_matches_the_scalar_reference() {
    if !ifma_or_skip() {
        return;
    }
    let (rsa, _) = &keys(2048)[0];
    let p = rsa.p().unwrap().to_vec();
    let mut pl = vec![0u64; 20];
    limbs_from_be(&p, &mut pl);
    let k0 = scalar::k0(pl[0]);
    let mut a = zero::<20>();
    let mut b = zero::<20>();
    let mut m = zero::<20>();
    let mut inputs = Vec::new();
    for lane in 0..8 {
        let mut x = vec![0u64; 20];
        let mut y = vec![0u64; 20];
        limbs_from_be(&random_below(rsa)[128..], &mut x);
        limbs_from_be(&random_below(rsa)[130..], &mut y);
        set_lane(&mut a, lane, &x);
        set_lane(&mut b, lane, &y);
        set_lane(&mut m, lane, &pl);
        inputs.push((x, y));
    }
    // SAFETY: IFMA was detected above.
    let got = unsafe { ifma::amm(&a, &b, &m, &Vec8::splat(k0)) };
    // SAFETY: as above.
    let squared = unsafe { ifma::amm_sqr(&a, &m, &Vec8::splat(k0)) };
    for (lane, (x, y)) in inputs.iter().enumerate() {
        let mut out = vec![0u64; 20];
        get_lane(&got, lane, &mut out);
        assert_eq!(out, scalar::amm(x, y, &pl, k0), "lane {lane}");
        get_lane(&squared, lane, &mut out);
        assert_eq!(out, scalar::amm(x, x, &pl, k0), "square, lane {lane}");
    }
}

#[test]
fn raw_results_equal_boringssl_for_every_size_and_lane_count() {
    if !ifma_or_skip() {
        return;
    }
    for bits in [2048, 3072, 4096] {
        let ks = keys(bits);
        // One key in every lane, for 1..=8 lanes.
        for lanes in 1..=8 {
            let (rsa, key) = &ks[0];
            let ops: Vec<_> = (0..lanes).map(|_| (rsa, key, random_below(rsa))).collect();
            check(&ops);
        }
        // Different keys across the lanes.
        let ops: Vec<_> = (0..8)
            .map(|i| {
                let (rsa, key) = &ks[i % ks.len()];
                (rsa, key, random_below(rsa))
            })
            .collect();
        check(&ops);
    }
}

#[test]
fn edge_inputs() {
    if !ifma_or_skip() {
        return;
    }
    for bits in [2048, 4096] {
        let (rsa, key) = &keys(bits)[0];
        let size = rsa.size() as usize;
        let mut n_minus_1 = rsa.n().to_owned().unwrap();
        n_minus_1.sub_word(1).unwrap();
        let mut one = vec![0u8; size];
        one[size - 1] = 1;
        let inputs = [vec![0u8; size], one, n_minus_1.to_vec_padded(size).unwrap()];
        let ops: Vec<_> = inputs.iter().map(|i| (rsa, key, i.clone())).collect();
        check(&ops);
        // All-ones and n itself are not below n: refused, like BoringSSL does.
        let all_ones = vec![0xffu8; size];
        let n = rsa.n().to_vec_padded(size).unwrap();
        for bad in [all_ones, n] {
            let r = private_batch(&[(key, bad.as_slice())]);
            assert_eq!(r[0], Err(RsaError::InputTooLarge));
            let mut out = vec![0u8; size];
            assert!(rsa.private_decrypt(&bad, &mut out, Padding::NONE).is_err());
        }
        let r = private_batch(&[(key, &[1u8, 2, 3][..])]);
        assert_eq!(r[0], Err(RsaError::BadLength(3, size)));
    }
}

#[test]
fn a_bad_lane_does_not_spoil_the_others() {
    if !ifma_or_skip() {
        return;
    }
    let (rsa, key) = &keys(2048)[1];
    let good = random_below(rsa);
    let bad = vec![0xffu8; 256];
    let r = private_batch(&[
        (key, good.as_slice()),
        (key, bad.as_slice()),
        (key, good.as_slice()),
    ]);
    assert_eq!(r[0].as_ref().unwrap(), &boring_raw(rsa, &good));
    assert_eq!(r[1], Err(RsaError::InputTooLarge));
    assert_eq!(r[2].as_ref().unwrap(), &boring_raw(rsa, &good));
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Arbitrary bytes (reduced below n when they are not) through mixed lanes.
        #[test]
        fn arbitrary_inputs_match_boringssl(raw in proptest::collection::vec(any::<u8>(), 256 * 8), lanes in 1usize..=8) {
            if !trellis_cryptomb::ifma_available() {
                return Ok(());
            }
            let ks = keys(2048);
            let mut ops = Vec::new();
            for i in 0..lanes {
                let (rsa, key) = &ks[i % ks.len()];
                let mut bytes = raw[i * 256..(i + 1) * 256].to_vec();
                let v = BigNum::from_slice(&bytes).unwrap();
                if v.ucmp(rsa.n()).is_ge() {
                    bytes[0] %= 0x80; // below any 2048-bit n, which has its top bit set
                }
                ops.push((rsa, key, bytes));
            }
            check(&ops);
        }
    }
}

#[test]
fn a_faulty_crt_half_is_caught_by_the_public_exponent_check() {
    if !ifma_or_skip() {
        return;
    }
    let (rsa, _) = &keys(2048)[2];
    let c = |b: &boring::bn::BigNumRef| b.to_owned().unwrap();
    let mut bad_dp = c(rsa.dmp1().unwrap());
    bad_dp.add_word(2).unwrap();
    let faulty = Rsa::from_private_components(
        c(rsa.n()),
        c(rsa.e()),
        c(rsa.d()),
        c(rsa.p().unwrap()),
        c(rsa.q().unwrap()),
        bad_dp,
        c(rsa.dmq1().unwrap()),
        c(rsa.iqmp().unwrap()),
    )
    .unwrap();
    let key = RsaKey::new(&faulty).unwrap();
    let input = random_below(rsa);
    let r = private_batch(&[(&key, input.as_slice())]);
    assert_eq!(r[0], Err(RsaError::Fault));
}
