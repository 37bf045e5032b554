//! ECDSA P-256 signing for up to eight keys at once: `r = x(k·G) mod n`,
//! `s = k⁻¹·(e + r·d) mod n`, with the eight scalar multiplications and inversions
//! computed together in the lanes of [`p256`](crate::p256).
//!
//! Side channels: the nonce k and the key d only meet constant-time code — table reads
//! that touch every entry, complete addition formulas without special cases, Fermat
//! inversion with the public exponent n − 2, Montgomery products with masked final
//! reductions. Nonces come from BoringSSL's CSPRNG, drawn until below n (that check is
//! constant-time too), hedged with the key and the digest. There is no CRT here, so the RSA-style fault check does not
//! apply; the differential tests verify signatures with BoringSSL.

#![allow(unsafe_code)]

use crate::ifma;
use crate::lanes::{get_lane, limbs_from_be, limbs_to_be, set_lane, Vec8, LANES};
use crate::p256::{self, Fe, LIMBS};
use boring::ec::EcKeyRef;
use boring::nid::Nid;
use boring::pkey::Private;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcdsaError {
    #[error("the key is not on P-256 (prime256v1)")]
    NotP256,
    #[error("this CPU has no AVX-512 IFMA")]
    NoIfma,
    /// r or s came out zero (probability 2^-256); sign again.
    #[error("degenerate signature; retry")]
    Degenerate,
    #[error("BoringSSL: {0}")]
    Boring(String),
}

/// A P-256 private key prepared for the kernels.
pub struct EcdsaKey {
    d: [u64; LIMBS],
}

impl EcdsaKey {
    pub fn new(key: &EcKeyRef<Private>) -> Result<EcdsaKey, EcdsaError> {
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(EcdsaError::NotP256);
        }
        let bytes = key
            .private_key()
            .to_vec_padded(32)
            .map_err(|e| EcdsaError::Boring(e.to_string()))?;
        let mut d = [0u64; LIMBS];
        limbs_from_be(&bytes, &mut d);
        Ok(EcdsaKey { d })
    }
}

/// The leftmost 256 bits of a digest, as ECDSA takes them (big-endian, left-padded).
fn digest_limbs(digest: &[u8]) -> [u64; LIMBS] {
    let mut buf = [0u8; 32];
    let take = digest.len().min(32);
    buf[32 - take..].copy_from_slice(&digest[..take]);
    let mut out = [0u64; LIMBS];
    limbs_from_be(&buf, &mut out);
    out
}

/// A nonce in [1, n−1], hedged as BoringSSL does: SHA-512 over the private key, the
/// digest and 32 bytes from the CSPRNG, so that a weak or repeated random source alone
/// cannot repeat a nonce for different messages (which would reveal the key). The range
/// test runs the same instructions for every candidate; only the (public, ~2^-32) fact
/// of a rejection is observable.
fn nonce(n: &[u8; 32], key: &EcdsaKey, digest: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    limbs_to_be(&key.d, &mut d);
    for counter in 0u32.. {
        let mut fresh = [0u8; 32];
        boring::rand::rand_bytes(&mut fresh).expect("CSPRNG");
        let mut h =
            boring::hash::Hasher::new(boring::hash::MessageDigest::sha512()).expect("SHA-512");
        for part in [&d[..], digest, &fresh, &counter.to_be_bytes()] {
            h.update(part).expect("SHA-512");
        }
        let out = h.finish().expect("SHA-512");
        let mut k = [0u8; 32];
        k.copy_from_slice(&out[..32]);
        let mut borrow = 0u16;
        let mut any = 0u8;
        for i in (0..32).rev() {
            let t = (k[i] as u16).wrapping_sub(n[i] as u16).wrapping_sub(borrow);
            borrow = (t >> 8) & 1;
            any |= k[i];
        }
        // borrow = 1 exactly when k < n.
        if borrow == 1 && any != 0 {
            return k;
        }
    }
    unreachable!("a nonce below n within 2^32 draws")
}

/// Signs up to eight digests (SHA-256 for `ecdsa_secp256r1_sha256`; longer digests are
/// truncated to 256 bits as ECDSA specifies) with fresh nonces. Each result is a DER
/// `ECDSA-Sig-Value`, as TLS carries it.
pub fn sign_batch(ops: &[(&EcdsaKey, &[u8])]) -> Vec<Result<Vec<u8>, EcdsaError>> {
    assert!((1..=LANES).contains(&ops.len()), "1..=8 operations");
    let n = p256::curve().n_be;
    let nonces: Vec<[u8; 32]> = (0..LANES)
        .map(|lane| {
            let (key, digest) = ops[lane.min(ops.len() - 1)];
            nonce(&n, key, digest)
        })
        .collect();
    sign_with_nonces(ops, &nonces)
        .into_iter()
        .map(|r| r.map(|(r, s)| der(&r, &s)))
        .collect()
}

/// (r, s) big-endian per operation with the given nonces (one per lane, each in
/// [1, n−1]). For tests that compare with a reference computation; signing uses
/// [`sign_batch`].
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn sign_with_nonces(
    ops: &[(&EcdsaKey, &[u8])],
    nonces: &[[u8; 32]],
) -> Vec<Result<([u8; 32], [u8; 32]), EcdsaError>> {
    assert!((1..=LANES).contains(&ops.len()), "1..=8 operations");
    assert!(nonces.len() >= LANES, "a nonce per lane");
    if !ifma::available() {
        return ops.iter().map(|_| Err(EcdsaError::NoIfma)).collect();
    }
    // SAFETY: AVX-512F and IFMA were detected just above; `batch` needs nothing else.
    unsafe { batch(ops, nonces) }
}

/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
#[allow(clippy::type_complexity)]
unsafe fn batch(
    ops: &[(&EcdsaKey, &[u8])],
    nonces: &[[u8; 32]],
) -> Vec<Result<([u8; 32], [u8; 32]), EcdsaError>> {
    let c = p256::curve();
    let lane_op = |lane: usize| ops[lane.min(ops.len() - 1)];
    let (mut d, mut e, mut k): (Fe, Fe, Fe) = Default::default();
    let mut digits = [Vec8::ZERO; 64];
    for (lane, nonce) in nonces.iter().enumerate().take(LANES) {
        let (key, digest) = lane_op(lane);
        set_lane(&mut d, lane, &key.d);
        set_lane(&mut e, lane, &digest_limbs(digest));
        let mut kl = [0u64; LIMBS];
        limbs_from_be(nonce, &mut kl);
        set_lane(&mut k, lane, &kl);
        for (i, digit) in digits.iter_mut().enumerate() {
            let byte = nonce[31 - i / 2];
            digit.0[lane] = ((byte >> (4 * (i % 2))) & 15) as u64;
        }
    }
    let o = c.order();
    // SAFETY: the caller guarantees the CPU features; every kernel needs only them.
    let (r, s) = unsafe {
        let x = p256::base_mul_x(&digits);
        // x < p < 2n: one conditional subtraction gives x mod n.
        let r = ifma::reduce_once(&x, &c.n);
        let e = ifma::reduce_once(&e, &c.n);
        let k_inv = p256::invert_scalar(&o.mul(&k, &c.rr_n));
        let r_m = o.mul(&r, &c.rr_n);
        let d_m = o.mul(&d, &c.rr_n);
        let e_m = o.mul(&e, &c.rr_n);
        let s_m = o.mul(&k_inv, &o.add(&e_m, &o.mul(&r_m, &d_m)));
        (r, o.mul(&s_m, &c.plain_one))
    };
    (0..ops.len())
        .map(|lane| {
            let (mut rl, mut sl) = ([0u64; LIMBS], [0u64; LIMBS]);
            get_lane(&r, lane, &mut rl);
            get_lane(&s, lane, &mut sl);
            let (mut rb, mut sb) = ([0u8; 32], [0u8; 32]);
            limbs_to_be(&rl, &mut rb);
            limbs_to_be(&sl, &mut sb);
            // r and s are public once released; a zero one is refused.
            if rb == [0; 32] || sb == [0; 32] {
                Err(EcdsaError::Degenerate)
            } else {
                Ok((rb, sb))
            }
        })
        .collect()
}

/// `SEQUENCE { INTEGER r, INTEGER s }` in DER (minimal, non-negative integers).
fn der(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    fn integer(v: &[u8], out: &mut Vec<u8>) {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let v = &v[start..];
        let pad = v[0] & 0x80 != 0;
        out.push(0x02);
        out.push((v.len() + pad as usize) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(72);
    integer(r, &mut body);
    integer(s, &mut body);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}
