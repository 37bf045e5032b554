//! Arbitrary inputs through the multi-buffer RSA kernels against BoringSSL: the first
//! byte picks how many lanes (1..8) and which of four RSA-2048 keys each lane uses; the
//! rest is the lanes' inputs. Inputs at or above n must be refused, others must equal
//! BoringSSL's raw private operation.
//! Run: `cd crates/cryptomb/fuzz && cargo fuzz run rsa_raw -s none`.

#![no_main]

use boring::bn::BigNum;
use boring::pkey::Private;
use boring::rsa::{Padding, Rsa};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use trellis_cryptomb::{private_batch, RsaError, RsaKey};

fn keys() -> &'static [(Rsa<Private>, RsaKey)] {
    static KEYS: OnceLock<Vec<(Rsa<Private>, RsaKey)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..4)
            .map(|_| {
                let rsa = Rsa::generate(2048).unwrap();
                let key = RsaKey::new(&rsa).unwrap();
                (rsa, key)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if !trellis_cryptomb::ifma_available() {
        return;
    }
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let lanes = (sel as usize % 8) + 1;
    let ks = keys();
    let key_of = |lane: usize| (lane + (sel as usize >> 3)) % ks.len();
    let ops_bytes: Vec<Vec<u8>> = (0..lanes)
        .map(|lane| {
            let mut bytes = vec![0u8; 256];
            let chunk = rest.get(lane * 256..).unwrap_or_default();
            let n = chunk.len().min(256);
            bytes[256 - n..].copy_from_slice(&chunk[..n]);
            bytes
        })
        .collect();
    let ops: Vec<(&RsaKey, &[u8])> = ops_bytes
        .iter()
        .enumerate()
        .map(|(lane, b)| (&ks[key_of(lane)].1, b.as_slice()))
        .collect();
    let results = private_batch(&ops);
    for (lane, got) in results.into_iter().enumerate() {
        let rsa = &ks[key_of(lane)].0;
        let below = BigNum::from_slice(&ops_bytes[lane])
            .unwrap()
            .ucmp(rsa.n())
            .is_lt();
        if below {
            let mut want = vec![0u8; 256];
            let n = rsa
                .private_decrypt(&ops_bytes[lane], &mut want, Padding::NONE)
                .unwrap();
            want.truncate(n);
            assert_eq!(got.unwrap(), want);
        } else {
            assert_eq!(got, Err(RsaError::InputTooLarge));
        }
    }
});
