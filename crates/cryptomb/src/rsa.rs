//! RSA private-key operations (raw, no padding) for up to eight keys at once, with CRT,
//! blinding and a check of every result with the public exponent.
//!
//! For each lane: `c' = c·A mod n` (blinding, A = r^e), `m1 = c'^dp mod p`,
//! `m2 = c'^dq mod q`, `h = (m1 - m2)·qInv mod p`, `m' = m2 + h·q`, `m = m'·r⁻¹ mod n`,
//! then `m^e mod n == c` or the lane fails (a faulty CRT half would otherwise leak a
//! factor of n). The eight lanes may hold eight different keys of one size.

// The batch runs the IFMA kernels; `unsafe` is confined to calling them after the CPU
// check.
#![allow(unsafe_code)]

use crate::ifma;
use crate::lanes::{get_lane, limbs_from_be, limbs_to_be, set_lane, zero, Num, Vec8, LANES};
use crate::scalar;
use boring::bn::{BigNum, BigNumContext, BigNumRef};
use boring::pkey::Private;
use boring::rsa::Rsa;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsaError {
    #[error("RSA key of {0} bits with unbalanced or missing CRT factors is not supported")]
    UnsupportedKey(u32),
    #[error("input is not below the modulus")]
    InputTooLarge,
    #[error("input length {0} does not match the modulus length {1}")]
    BadLength(usize, usize),
    #[error("result failed the public-exponent check (fault)")]
    Fault,
    #[error("this CPU has no AVX-512 IFMA")]
    NoIfma,
    #[error("BoringSSL: {0}")]
    Boring(String),
}

impl From<boring::error::ErrorStack> for RsaError {
    fn from(e: boring::error::ErrorStack) -> Self {
        RsaError::Boring(e.to_string())
    }
}

/// Blinding factors in Montgomery form (`A·R`, `A⁻¹·R` mod n); squared after each use
/// so that no two operations share them.
struct Blinding {
    a: Vec<u64>,
    a_inv: Vec<u64>,
}

/// An RSA private key prepared for the multi-buffer kernels.
pub struct RsaKey {
    bits: u32,
    bytes: usize,
    n_bn: BigNum,
    e: u64,
    n: Vec<u64>,
    k0_n: u64,
    rr_n: Vec<u64>,
    p: Vec<u64>,
    q: Vec<u64>,
    k0_p: u64,
    k0_q: u64,
    rr_p: Vec<u64>,
    rr_q: Vec<u64>,
    rrr_p: Vec<u64>,
    rrr_q: Vec<u64>,
    qinv_m: Vec<u64>,
    dp: Vec<u64>,
    dq: Vec<u64>,
    blinding: Mutex<Blinding>,
}

fn limbs(bn: &BigNumRef, len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len];
    limbs_from_be(&bn.to_vec(), &mut out);
    out
}

fn words(bn: &BigNumRef) -> Vec<u64> {
    let be = bn.to_vec();
    let mut out = vec![0u64; be.len().div_ceil(8) + 1];
    for (i, b) in be.iter().rev().enumerate() {
        out[i / 8] |= (*b as u64) << (8 * (i % 8));
    }
    out
}

/// `2^(52·limbs·k) mod m`.
fn r_pow(
    m: &BigNumRef,
    limb_count: usize,
    k: usize,
    ctx: &mut BigNumContext,
) -> Result<BigNum, RsaError> {
    let mut one = BigNum::from_u32(1)?;
    let mut big = BigNum::new()?;
    big.lshift(&one, (52 * limb_count * k) as i32)?;
    one.nnmod(&big, m, ctx)?;
    Ok(one)
}

impl RsaKey {
    /// Limbs for a half (one prime) and for the modulus, by key size.
    fn layout(bits: u32) -> Option<(usize, usize)> {
        match bits {
            2048 => Some((20, 40)),
            3072 => Some((30, 60)),
            4096 => Some((40, 80)),
            _ => None,
        }
    }

    /// Prepares a key. Precomputation (Montgomery constants, first blinding factors)
    /// uses BoringSSL's big numbers once per key, not per operation.
    pub fn new(rsa: &Rsa<Private>) -> Result<Self, RsaError> {
        let bits = rsa.n().num_bits() as u32;
        let (h, f) = Self::layout(bits).ok_or(RsaError::UnsupportedKey(bits))?;
        let unsupported = || RsaError::UnsupportedKey(bits);
        let (p, q) = (
            rsa.p().ok_or_else(unsupported)?,
            rsa.q().ok_or_else(unsupported)?,
        );
        let (dp, dq) = (
            rsa.dmp1().ok_or_else(unsupported)?,
            rsa.dmq1().ok_or_else(unsupported)?,
        );
        let qinv = rsa.iqmp().ok_or_else(unsupported)?;
        if p.num_bits() as u32 != bits / 2 || q.num_bits() as u32 != bits / 2 {
            return Err(unsupported());
        }
        let e_bn = rsa.e();
        if e_bn.num_bits() > 63 {
            return Err(unsupported());
        }
        let e = words(e_bn)[0];
        let mut ctx = BigNumContext::new()?;
        let n = limbs(rsa.n(), f);
        let (pl, ql) = (limbs(p, h), limbs(q, h));
        let mut qinv_r = BigNum::new()?;
        let r_p = r_pow(p, h, 1, &mut ctx)?;
        qinv_r.mod_mul(qinv, &r_p, p, &mut ctx)?;
        let rr_n = r_pow(rsa.n(), f, 2, &mut ctx)?;
        let rr_p = r_pow(p, h, 2, &mut ctx)?;
        let rr_q = r_pow(q, h, 2, &mut ctx)?;
        let rrr_p = r_pow(p, h, 3, &mut ctx)?;
        let rrr_q = r_pow(q, h, 3, &mut ctx)?;
        // First blinding factors: A = r^e, A⁻¹ = r⁻¹ for a random r, in Montgomery form.
        let mut r = BigNum::new()?;
        rsa.n().rand_range(&mut r)?;
        let mut a = BigNum::new()?;
        a.mod_exp(&r, e_bn, rsa.n(), &mut ctx)?;
        let mut a_inv = BigNum::new()?;
        a_inv.mod_inverse(&r, rsa.n(), &mut ctx)?;
        let r_n = r_pow(rsa.n(), f, 1, &mut ctx)?;
        let mut a_m = BigNum::new()?;
        a_m.mod_mul(&a, &r_n, rsa.n(), &mut ctx)?;
        let mut a_inv_m = BigNum::new()?;
        a_inv_m.mod_mul(&a_inv, &r_n, rsa.n(), &mut ctx)?;
        Ok(RsaKey {
            bits,
            bytes: rsa.size() as usize,
            n_bn: rsa.n().to_owned()?,
            e,
            k0_n: scalar::k0(n[0]),
            rr_n: limbs(&rr_n, f),
            k0_p: scalar::k0(pl[0]),
            k0_q: scalar::k0(ql[0]),
            rr_p: limbs(&rr_p, h),
            rr_q: limbs(&rr_q, h),
            rrr_p: limbs(&rrr_p, h),
            rrr_q: limbs(&rrr_q, h),
            qinv_m: limbs(&qinv_r, h),
            dp: words(dp),
            dq: words(dq),
            blinding: Mutex::new(Blinding {
                a: limbs(&a_m, f),
                a_inv: limbs(&a_inv_m, f),
            }),
            n,
            p: pl,
            q: ql,
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// This operation's blinding factors; the stored ones move on (squared).
    fn take_blinding(&self) -> (Vec<u64>, Vec<u64>) {
        let mut b = self.blinding.lock().unwrap_or_else(|p| p.into_inner());
        let current = (b.a.clone(), b.a_inv.clone());
        let square =
            |x: &[u64]| scalar::reduce_once(&scalar::amm(x, x, &self.n, self.k0_n), &self.n);
        b.a = square(&b.a);
        b.a_inv = square(&b.a_inv);
        current
    }
}

/// Raw RSA private operations (`input^d mod n`, big-endian, modulus-sized) for up to
/// eight operations whose keys all have the same size. One result per operation.
pub fn private_batch(ops: &[(&RsaKey, &[u8])]) -> Vec<Result<Vec<u8>, RsaError>> {
    assert!((1..=LANES).contains(&ops.len()), "1..=8 operations");
    let bits = ops[0].0.bits;
    assert!(
        ops.iter().all(|(k, _)| k.bits == bits),
        "one key size per batch"
    );
    if !ifma::available() {
        return ops.iter().map(|_| Err(RsaError::NoIfma)).collect();
    }
    // SAFETY: AVX-512F and IFMA were detected just above; `batch` needs nothing else.
    unsafe {
        match bits {
            2048 => batch::<20, 40>(ops),
            3072 => batch::<30, 60>(ops),
            _ => batch::<40, 80>(ops),
        }
    }
}

/// Exponent words of eight lanes; one spare word so that a window may straddle two.
const EXP_WORDS: usize = 34;

fn window(exp: &[[u64; LANES]; EXP_WORDS], pos: usize) -> Vec8 {
    let (w, off) = (pos / 64, pos % 64);
    let mut out = Vec8::ZERO;
    for (lane, o) in out.0.iter_mut().enumerate() {
        let mut v = exp[w][lane] >> off;
        // The straddle test depends only on the (public) bit position.
        if off > 59 {
            v |= exp[w + 1][lane] << (64 - off);
        }
        *o = v & 31;
    }
    out
}

/// `base^exp` in the Montgomery domain with 5-bit fixed windows: the same squarings and
/// multiplications for every exponent, and table reads that touch every entry.
///
/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn modexp<const N: usize>(
    base: &Num<N>,
    exp: &[[u64; LANES]; EXP_WORDS],
    bits: usize,
    m: &Num<N>,
    k0: &Vec8,
    one: &Num<N>,
) -> Num<N> {
    let mut table = [zero::<N>(); 32];
    table[0] = *one;
    table[1] = *base;
    for k in 2..32 {
        table[k] = ifma::amm(&table[k - 1], base, m, k0);
    }
    let windows = bits.div_ceil(5);
    let mut acc = ifma::select(&table, &window(exp, (windows - 1) * 5));
    for w in (0..windows - 1).rev() {
        for _ in 0..5 {
            acc = ifma::amm_sqr(&acc, m, k0);
        }
        let t = ifma::select(&table, &window(exp, w * 5));
        acc = ifma::amm(&acc, &t, m, k0);
    }
    acc
}

fn exps(ops: &[(&RsaKey, &[u8])], pick: impl Fn(&RsaKey) -> &[u64]) -> [[u64; LANES]; EXP_WORDS] {
    let mut out = [[0u64; LANES]; EXP_WORDS];
    for lane in 0..LANES {
        let (key, _) = ops[lane.min(ops.len() - 1)];
        for (w, v) in pick(key).iter().enumerate().take(EXP_WORDS) {
            out[w][lane] = *v;
        }
    }
    out
}

/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn batch<const H: usize, const F: usize>(
    ops: &[(&RsaKey, &[u8])],
) -> Vec<Result<Vec<u8>, RsaError>> {
    let lane_op = |lane: usize| ops[lane.min(ops.len() - 1)];
    let (mut n, mut p, mut q) = (zero::<F>(), zero::<H>(), zero::<H>());
    let (mut rr_n, mut rr_p, mut rr_q) = (zero::<F>(), zero::<H>(), zero::<H>());
    let (mut rrr_p, mut rrr_q, mut qinv) = (zero::<H>(), zero::<H>(), zero::<H>());
    let (mut c, mut a, mut a_inv) = (zero::<F>(), zero::<F>(), zero::<F>());
    let (mut k0_n, mut k0_p, mut k0_q) = (Vec8::ZERO, Vec8::ZERO, Vec8::ZERO);
    let mut e = [0u64; LANES];
    let mut valid: [Result<(), RsaError>; LANES] = std::array::from_fn(|_| Ok(()));
    let mut input = vec![0u64; F];
    for lane in 0..LANES {
        let (key, bytes) = lane_op(lane);
        set_lane(&mut n, lane, &key.n);
        set_lane(&mut p, lane, &key.p);
        set_lane(&mut q, lane, &key.q);
        set_lane(&mut rr_n, lane, &key.rr_n);
        set_lane(&mut rr_p, lane, &key.rr_p);
        set_lane(&mut rr_q, lane, &key.rr_q);
        set_lane(&mut rrr_p, lane, &key.rrr_p);
        set_lane(&mut rrr_q, lane, &key.rrr_q);
        set_lane(&mut qinv, lane, &key.qinv_m);
        k0_n.0[lane] = key.k0_n;
        k0_p.0[lane] = key.k0_p;
        k0_q.0[lane] = key.k0_q;
        e[lane] = key.e;
        // The input is public (a ciphertext or padded digest): checking it may branch.
        valid[lane] = if bytes.len() != key.bytes {
            Err(RsaError::BadLength(bytes.len(), key.bytes))
        } else if !BigNum::from_slice(bytes).is_ok_and(|b| b.ucmp(&key.n_bn).is_lt()) {
            Err(RsaError::InputTooLarge)
        } else {
            Ok(())
        };
        if valid[lane].is_ok() {
            limbs_from_be(bytes, &mut input);
        } else {
            input.fill(0);
        }
        set_lane(&mut c, lane, &input);
        // Only lanes that carry a real operation consume blinding factors.
        if lane < ops.len() {
            let (bl, bl_inv) = key.take_blinding();
            set_lane(&mut a, lane, &bl);
            set_lane(&mut a_inv, lane, &bl_inv);
        } else {
            // Padding lanes compute on zero; their results are dropped.
            set_lane(&mut a, lane, &[]);
            set_lane(&mut a_inv, lane, &[]);
        }
    }
    let mut one_h = zero::<H>();
    let mut one_f = zero::<F>();
    one_h[0] = Vec8::splat(1);
    one_f[0] = Vec8::splat(1);

    // Blind: c·A mod n.
    let cb = ifma::reduce_once(&ifma::amm(&c, &a, &n, &k0_n), &n);
    let mut c_lo = zero::<H>();
    let mut c_hi = zero::<H>();
    c_lo.copy_from_slice(&cb[..H]);
    c_hi.copy_from_slice(&cb[H..]);

    // c mod p and c mod q in Montgomery form: c_lo·R + c_hi·R² (each part below p).
    let half = |m: &Num<H>, k0: &Vec8, rr: &Num<H>, rrr: &Num<H>| {
        let lo = ifma::reduce_once(&ifma::amm(&c_lo, rr, m, k0), m);
        let hi = ifma::reduce_once(&ifma::amm(&c_hi, rrr, m, k0), m);
        ifma::add(&lo, &hi)
    };
    let cp = half(&p, &k0_p, &rr_p, &rrr_p);
    let cq = half(&q, &k0_q, &rr_q, &rrr_q);
    let one_p = ifma::reduce_once(&ifma::amm(&rr_p, &one_h, &p, &k0_p), &p);
    let one_q = ifma::reduce_once(&ifma::amm(&rr_q, &one_h, &q, &k0_q), &q);
    // Every prime in the batch has exactly half the modulus bits (checked at load).
    let half_bits = ops[0].0.bits as usize / 2;
    let m1 = modexp(&cp, &exps(ops, |k| &k.dp), half_bits, &p, &k0_p, &one_p);
    let m2 = modexp(&cq, &exps(ops, |k| &k.dq), half_bits, &q, &k0_q, &one_q);
    // Out of the Montgomery domain, fully reduced.
    let m1 = ifma::reduce_once(&ifma::amm(&m1, &one_h, &p, &k0_p), &p);
    let m2 = ifma::reduce_once(&ifma::amm(&m2, &one_h, &q, &k0_q), &q);

    // Garner: h = (m1 - m2)·qInv mod p; m' = m2 + h·q.
    let m2p = ifma::reduce_once(&m2, &p);
    let (p_minus, _) = ifma::sub(&p, &m2p);
    let diff = ifma::add(&m1, &p_minus);
    let h = ifma::reduce_once(&ifma::amm(&diff, &qinv, &p, &k0_p), &p);
    let hq = ifma::mul::<H, F>(&h, &q);
    let mut m2f = zero::<F>();
    m2f[..H].copy_from_slice(&m2);
    let mb = ifma::add(&hq, &m2f);

    // Unblind, then check m^e == c before anything leaves.
    let m = ifma::reduce_once(&ifma::amm(&mb, &a_inv, &n, &k0_n), &n);
    let mm = ifma::amm(&m, &rr_n, &n, &k0_n);
    let mut acc = ifma::reduce_once(&ifma::amm(&rr_n, &one_f, &n, &k0_n), &n);
    let e_bits = 64 - e.iter().max().copied().unwrap_or(1).leading_zeros();
    for bit in (0..e_bits).rev() {
        acc = ifma::amm(&acc, &acc, &n, &k0_n);
        let with = ifma::amm(&acc, &mm, &n, &k0_n);
        let mut mask = 0u8;
        for (lane, e) in e.iter().enumerate() {
            mask |= (((e >> bit) & 1) as u8) << lane;
        }
        acc = ifma::blend(mask, &acc, &with);
    }
    let back = ifma::reduce_once(&ifma::amm(&acc, &one_f, &n, &k0_n), &n);
    let checked = ifma::equal(&back, &c);

    let mut out = Vec::with_capacity(ops.len());
    let mut limbs = vec![0u64; F];
    for (lane, (key, _)) in ops.iter().enumerate() {
        let result = valid[lane].clone().and_then(|()| {
            if checked & (1 << lane) == 0 {
                return Err(RsaError::Fault);
            }
            get_lane(&m, lane, &mut limbs);
            let mut bytes = vec![0u8; key.bytes];
            limbs_to_be(&limbs, &mut bytes);
            Ok(bytes)
        });
        out.push(result);
    }
    out
}
