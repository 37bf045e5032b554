//! The AVX-512 IFMA kernels: Montgomery multiplication and the helpers around it, each
//! working on eight independent numbers (one per 64-bit lane) at once.
//!
//! `vpmadd52luq` / `vpmadd52huq` add the low / high 52 bits of a 52×52-bit product to
//! a 64-bit accumulator, so sums of many partial products fit without carrying on
//! every step; carries are resolved once at the end (normalize).
//!
//! Constant time: every function runs the same instruction sequence whatever the
//! values; selections use lane masks from vector compares, never branches or indices.

#![allow(unsafe_code)]

use crate::lanes::{Num, Vec8, LIMB_MASK};
use core::arch::x86_64::*;

#[inline(always)]
fn ld(v: &Vec8) -> __m512i {
    // SAFETY: Vec8 is 64 bytes, 64-byte aligned, plain integers: the same layout as
    // __m512i, and every bit pattern is valid for both.
    unsafe { core::mem::transmute::<Vec8, __m512i>(*v) }
}

#[inline(always)]
fn st(x: __m512i) -> Vec8 {
    // SAFETY: as in `ld`, the two types have the same size and any bits are valid.
    unsafe { core::mem::transmute::<__m512i, Vec8>(x) }
}

/// Whether this CPU runs the kernels (checked once by callers).
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512ifma")
}

/// Almost Montgomery multiplication: `a·b·R⁻¹ mod m` for each lane, R = 2^(52N), with
/// the result normalized to 52-bit limbs and below 2m when `a, b < 2m` and `4m ≤ R`.
/// `k0` is `-m⁻¹ mod 2^52` per lane.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 IFMA ([`available`]).
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn amm<const N: usize>(a: &Num<N>, b: &Num<N>, m: &Num<N>, k0: &Vec8) -> Num<N> {
    let zero = _mm512_setzero_si512();
    let k0 = ld(k0);
    // Step i accumulates at limbs i..i+N and then retires limb i (now a multiple of
    // 2^52) into limb i+1: the window slides instead of the data moving.
    let mut halves = [[zero; N]; 2];
    let acc = halves.as_flattened_mut();
    for (i, bi) in b.iter().enumerate() {
        let bi = ld(bi);
        for j in 0..N {
            acc[i + j] = _mm512_madd52lo_epu64(acc[i + j], ld(&a[j]), bi);
            acc[i + j + 1] = _mm512_madd52hi_epu64(acc[i + j + 1], ld(&a[j]), bi);
        }
        reduce_limb(acc, i, m, k0);
    }
    upper_half(acc)
}

/// One Montgomery reduction step: add `y·m` at limb `i`, with `y` chosen to make limb
/// `i` divisible by 2^52, and carry that limb into the next (it is then retired).
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce_limb<const N: usize>(acc: &mut [__m512i], i: usize, m: &Num<N>, k0: __m512i) {
    // Only the low 52 bits of limb i matter for y.
    let y = _mm512_madd52lo_epu64(_mm512_setzero_si512(), acc[i], k0);
    for j in 0..N {
        acc[i + j] = _mm512_madd52lo_epu64(acc[i + j], ld(&m[j]), y);
        acc[i + j + 1] = _mm512_madd52hi_epu64(acc[i + j + 1], ld(&m[j]), y);
    }
    acc[i + 1] = _mm512_add_epi64(acc[i + 1], _mm512_srli_epi64(acc[i], 52));
}

/// After N reduction steps the result is the upper N limbs of the 2N-limb window.
#[target_feature(enable = "avx512f")]
fn upper_half<const N: usize>(acc: &[__m512i]) -> Num<N> {
    let mut top = [_mm512_setzero_si512(); N];
    top.copy_from_slice(&acc[N..2 * N]);
    normalize(&top)
}

/// `a·a·R⁻¹ mod m`, as [`amm`] with `b = a` but with each cross product computed once
/// and doubled (about a quarter fewer multiplications): the square is formed in full,
/// then reduced limb by limb.
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn amm_sqr<const N: usize>(a: &Num<N>, m: &Num<N>, k0: &Vec8) -> Num<N> {
    let zero = _mm512_setzero_si512();
    let k0 = ld(k0);
    let mut halves = [[zero; N]; 2];
    let acc = halves.as_flattened_mut();
    for i in 0..N {
        let ai = ld(&a[i]);
        for j in i + 1..N {
            acc[i + j] = _mm512_madd52lo_epu64(acc[i + j], ld(&a[j]), ai);
            acc[i + j + 1] = _mm512_madd52hi_epu64(acc[i + j + 1], ld(&a[j]), ai);
        }
    }
    for i in 0..N {
        let ai = ld(&a[i]);
        acc[2 * i] = _mm512_add_epi64(acc[2 * i], acc[2 * i]);
        acc[2 * i + 1] = _mm512_add_epi64(acc[2 * i + 1], acc[2 * i + 1]);
        acc[2 * i] = _mm512_madd52lo_epu64(acc[2 * i], ai, ai);
        acc[2 * i + 1] = _mm512_madd52hi_epu64(acc[2 * i + 1], ai, ai);
    }
    for i in 0..N {
        reduce_limb(acc, i, m, k0);
    }
    upper_half(acc)
}

/// Resolves carries so that every limb but the top one is below 2^52.
#[target_feature(enable = "avx512f")]
fn normalize<const N: usize>(acc: &[__m512i; N]) -> Num<N> {
    let mask = _mm512_set1_epi64(LIMB_MASK as i64);
    let mut out = [Vec8::ZERO; N];
    let mut carry = _mm512_setzero_si512();
    for j in 0..N {
        let v = _mm512_add_epi64(acc[j], carry);
        carry = _mm512_srli_epi64(v, 52);
        out[j] = st(if j + 1 < N {
            _mm512_and_si512(v, mask)
        } else {
            v
        });
    }
    out
}

/// `x - m` where `x ≥ m`, else `x` (per lane); `x` below 2m gives a result below m.
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn reduce_once<const N: usize>(x: &Num<N>, m: &Num<N>) -> Num<N> {
    let (diff, borrow) = sub(x, m);
    // Lanes without a final borrow had x ≥ m: take the difference.
    let keep_diff = _mm512_cmpeq_epi64_mask(ld(&borrow), _mm512_setzero_si512());
    let mut out = [Vec8::ZERO; N];
    for j in 0..N {
        out[j] = st(_mm512_mask_blend_epi64(keep_diff, ld(&x[j]), ld(&diff[j])));
    }
    out
}

/// `x - y` per lane with the final borrow (1 where x < y; then the result wrapped).
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn sub<const N: usize>(x: &Num<N>, y: &Num<N>) -> (Num<N>, Vec8) {
    let mask = _mm512_set1_epi64(LIMB_MASK as i64);
    let mut borrow = _mm512_setzero_si512();
    let mut out = [Vec8::ZERO; N];
    for j in 0..N {
        let t = _mm512_sub_epi64(_mm512_sub_epi64(ld(&x[j]), ld(&y[j])), borrow);
        borrow = _mm512_srli_epi64(t, 63);
        out[j] = st(_mm512_and_si512(t, mask));
    }
    (out, st(borrow))
}

/// `x + y` per lane, normalized (no modular reduction).
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn add<const N: usize>(x: &Num<N>, y: &Num<N>) -> Num<N> {
    let mut acc = [_mm512_setzero_si512(); N];
    for j in 0..N {
        acc[j] = _mm512_add_epi64(ld(&x[j]), ld(&y[j]));
    }
    normalize(&acc)
}

/// The full product of two H-limb numbers per lane, as F = 2H limbs.
///
/// # Safety
/// As [`amm`]; `F == 2 * H`.
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn mul<const H: usize, const F: usize>(a: &Num<H>, b: &Num<H>) -> Num<F> {
    assert_eq!(F, 2 * H);
    let mut acc = [_mm512_setzero_si512(); F];
    for (i, bi) in b.iter().enumerate() {
        let bi = ld(bi);
        for j in 0..H {
            acc[i + j] = _mm512_madd52lo_epu64(acc[i + j], ld(&a[j]), bi);
            acc[i + j + 1] = _mm512_madd52hi_epu64(acc[i + j + 1], ld(&a[j]), bi);
        }
    }
    normalize(&acc)
}

/// `table[index]` per lane, reading every entry so that the access pattern does not
/// depend on the (secret) index.
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn select<const N: usize>(table: &[Num<N>], index: &Vec8) -> Num<N> {
    let index = ld(index);
    let mut out = [_mm512_setzero_si512(); N];
    for (k, entry) in table.iter().enumerate() {
        let hit = _mm512_cmpeq_epi64_mask(index, _mm512_set1_epi64(k as i64));
        for j in 0..N {
            out[j] = _mm512_mask_blend_epi64(hit, out[j], ld(&entry[j]));
        }
    }
    out.map(st)
}

/// `table[index]` per lane for a table that every lane shares (multiples of a curve's
/// generator), reading every entry so that the access pattern does not depend on the
/// (secret) index.
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn select_shared<const N: usize>(table: &[[u64; N]], index: &Vec8) -> Num<N> {
    let index = ld(index);
    let mut out = [_mm512_setzero_si512(); N];
    for (k, entry) in table.iter().enumerate() {
        let hit = _mm512_cmpeq_epi64_mask(index, _mm512_set1_epi64(k as i64));
        for j in 0..N {
            out[j] = _mm512_mask_blend_epi64(hit, out[j], _mm512_set1_epi64(entry[j] as i64));
        }
    }
    out.map(st)
}

/// Lanes where `x == y` in every limb, as a bit mask (bit i = lane i).
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn equal<const N: usize>(x: &Num<N>, y: &Num<N>) -> u8 {
    let mut diff = _mm512_setzero_si512();
    for j in 0..N {
        diff = _mm512_or_si512(diff, _mm512_xor_si512(ld(&x[j]), ld(&y[j])));
    }
    _mm512_cmpeq_epi64_mask(diff, _mm512_setzero_si512())
}

/// Lane-wise choice: `b` where the mask bit is set, else `a`.
///
/// # Safety
/// As [`amm`].
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn blend<const N: usize>(mask: u8, a: &Num<N>, b: &Num<N>) -> Num<N> {
    let mut out = [Vec8::ZERO; N];
    for j in 0..N {
        out[j] = st(_mm512_mask_blend_epi64(mask, ld(&a[j]), ld(&b[j])));
    }
    out
}
