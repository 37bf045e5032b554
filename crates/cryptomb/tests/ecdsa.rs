//! ECDSA P-256 in eight lanes against BoringSSL: signatures verify, and with chosen
//! nonces (r, s) equal the reference computation, for batches of 1..8, one key or eight,
//! and edge nonces and digests.

use boring::bn::{BigNum, BigNumContext};
use boring::ec::{EcGroup, EcKey, EcPoint};
use boring::ecdsa::EcdsaSig;
use boring::nid::Nid;
use boring::pkey::Private;
use proptest::prelude::*;
use trellis_cryptomb::ecdsa::{sign_batch, sign_with_nonces};
use trellis_cryptomb::{EcdsaError, EcdsaKey};

fn group() -> EcGroup {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()
}

fn order() -> BigNum {
    let mut n = BigNum::new().unwrap();
    group()
        .order(&mut n, &mut BigNumContext::new().unwrap())
        .unwrap();
    n
}

fn keys(count: usize) -> Vec<(EcKey<Private>, EcdsaKey)> {
    (0..count)
        .map(|_| {
            let k = EcKey::generate(&group()).unwrap();
            let mb = EcdsaKey::new(&k).unwrap();
            (k, mb)
        })
        .collect()
}

fn skip() -> bool {
    if !trellis_cryptomb::ifma_available() {
        eprintln!("skipped: this CPU has no AVX-512 IFMA");
        return true;
    }
    false
}

/// (r, s) as BoringSSL's arithmetic gives them for nonce k.
fn reference(key: &EcKey<Private>, digest: &[u8], k: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let (g, n) = (group(), order());
    let mut ctx = BigNumContext::new().unwrap();
    let k = BigNum::from_slice(k).unwrap();
    let mut point = EcPoint::new(&g).unwrap();
    point.mul_generator(&g, &k, &mut ctx).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    point
        .affine_coordinates_gfp(&g, &mut x, &mut y, &mut ctx)
        .unwrap();
    let mut r = BigNum::new().unwrap();
    r.nnmod(&x, &n, &mut ctx).unwrap();
    let take = digest.len().min(32);
    let e_raw = BigNum::from_slice(&digest[..take]).unwrap();
    let mut e = BigNum::new().unwrap();
    e.nnmod(&e_raw, &n, &mut ctx).unwrap();
    let mut rd = BigNum::new().unwrap();
    rd.mod_mul(&r, key.private_key(), &n, &mut ctx).unwrap();
    let mut sum = BigNum::new().unwrap();
    sum.mod_add(&e, &rd, &n, &mut ctx).unwrap();
    let mut k_inv = BigNum::new().unwrap();
    k_inv.mod_inverse(&k, &n, &mut ctx).unwrap();
    let mut s = BigNum::new().unwrap();
    s.mod_mul(&k_inv, &sum, &n, &mut ctx).unwrap();
    let be = |v: &BigNum| {
        let mut out = [0u8; 32];
        out.copy_from_slice(&v.to_vec_padded(32).unwrap());
        out
    };
    (be(&r), be(&s))
}

fn nonce_bytes(v: &BigNum) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&v.to_vec_padded(32).unwrap());
    out
}

fn edge_nonces() -> Vec<[u8; 32]> {
    let n = order();
    let mut out = Vec::new();
    for small in [1u32, 2, 15, 16, 17, 255, 256] {
        out.push(nonce_bytes(&BigNum::from_u32(small).unwrap()));
    }
    let mut n1 = BigNum::new().unwrap();
    n1.checked_sub(&n, &BigNum::from_u32(1).unwrap()).unwrap();
    out.push(nonce_bytes(&n1));
    // Mostly zero digits, and mostly 15s.
    let mut sparse = [0u8; 32];
    sparse[0] = 0x10;
    out.push(sparse);
    let mut dense = [0xffu8; 32];
    dense[0] = 0x7f;
    out.push(dense);
    out
}

#[test]
fn signatures_verify_with_boringssl_for_every_batch_size() {
    if skip() {
        return;
    }
    let keys = keys(8);
    for size in 1..=8 {
        let digests: Vec<[u8; 32]> = (0..size)
            .map(|i| {
                boring::hash::hash(boring::hash::MessageDigest::sha256(), &[i as u8; 9])
                    .unwrap()
                    .as_ref()
                    .try_into()
                    .unwrap()
            })
            .collect();
        let ops: Vec<(&EcdsaKey, &[u8])> = (0..size)
            .map(|i| (&keys[i].1, digests[i].as_slice()))
            .collect();
        for (i, sig) in sign_batch(&ops).into_iter().enumerate() {
            let der = sig.unwrap();
            let sig = EcdsaSig::from_der(&der).unwrap();
            assert!(
                sig.verify(&digests[i], &keys[i].0).unwrap(),
                "batch of {size}, lane {i}"
            );
        }
    }
}

#[test]
fn same_key_in_all_lanes_gives_eight_different_signatures() {
    if skip() {
        return;
    }
    let keys = keys(1);
    let digest = [7u8; 32];
    let ops = vec![(&keys[0].1, digest.as_slice()); 8];
    let sigs: Vec<Vec<u8>> = sign_batch(&ops).into_iter().map(|s| s.unwrap()).collect();
    for s in &sigs {
        assert!(EcdsaSig::from_der(s)
            .unwrap()
            .verify(&digest, &keys[0].0)
            .unwrap());
    }
    let mut unique = sigs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "fresh nonce per lane");
}

#[test]
fn chosen_nonces_match_the_reference_at_the_edges() {
    if skip() {
        return;
    }
    let keys = keys(8);
    let n = order().to_vec();
    let mut all_ones = [0xffu8; 32];
    all_ones[31] = 0xff;
    let digests: Vec<Vec<u8>> = vec![
        vec![0; 32],
        n.clone(),
        all_ones.to_vec(),
        vec![1],
        vec![0xab; 48],
        vec![0x80; 32],
        vec![3; 20],
        vec![0x5a; 32],
    ];
    let nonces = edge_nonces();
    for chunk in nonces.chunks(8) {
        let mut lane_nonces = chunk.to_vec();
        while lane_nonces.len() < 8 {
            lane_nonces.push(chunk[0]);
        }
        let ops: Vec<(&EcdsaKey, &[u8])> = (0..chunk.len())
            .map(|i| (&keys[i].1, digests[i].as_slice()))
            .collect();
        for (i, got) in sign_with_nonces(&ops, &lane_nonces).into_iter().enumerate() {
            assert_eq!(
                got.unwrap(),
                reference(&keys[i].0, &digests[i], &lane_nonces[i]),
                "nonce {:02x?}, digest {:02x?}",
                lane_nonces[i],
                digests[i]
            );
        }
    }
}

#[test]
fn keys_on_other_curves_are_refused() {
    let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let k = EcKey::generate(&g).unwrap();
    assert_eq!(EcdsaKey::new(&k).err(), Some(EcdsaError::NotP256));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary digests (any length) and nonces against the reference.
    #[test]
    fn arbitrary_inputs_match_the_reference(
        digests in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..=8),
        seeds in proptest::collection::vec(any::<[u8; 32]>(), 8),
    ) {
        if skip() {
            return Ok(());
        }
        let keys = keys(digests.len());
        let n = order();
        let nonces: Vec<[u8; 32]> = seeds
            .iter()
            .map(|s| {
                // Map into [1, n−1].
                let mut ctx = BigNumContext::new().unwrap();
                let mut k = BigNum::new().unwrap();
                let mut n1 = BigNum::new().unwrap();
                n1.checked_sub(&n, &BigNum::from_u32(1).unwrap()).unwrap();
                k.nnmod(&BigNum::from_slice(s).unwrap(), &n1, &mut ctx).unwrap();
                k.add_word(1).unwrap();
                nonce_bytes(&k)
            })
            .collect();
        let ops: Vec<(&EcdsaKey, &[u8])> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| (&keys[i].1, d.as_slice()))
            .collect();
        for (i, got) in sign_with_nonces(&ops, &nonces).into_iter().enumerate() {
            prop_assert_eq!(got.unwrap(), reference(&keys[i].0, &digests[i], &nonces[i]));
        }
    }
}
