//! Eight numbers side by side: limb `j` of all eight lanes sits in one 512-bit vector,
//! so one instruction works on the same limb of eight independent operations.
//!
//! Numbers are little-endian in 52-bit limbs (the width IFMA multiplies), so a limb's
//! products and their sums fit in 64-bit lanes with room for carries.

pub const LANES: usize = 8;
pub const LIMB_BITS: u32 = 52;
pub const LIMB_MASK: u64 = (1 << LIMB_BITS) - 1;

/// One limb position of eight lanes; 64-byte aligned for vector loads and stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Vec8(pub [u64; LANES]);

impl Vec8 {
    pub const ZERO: Vec8 = Vec8([0; LANES]);

    pub fn splat(v: u64) -> Self {
        Vec8([v; LANES])
    }
}

/// Eight numbers of `N` limbs.
pub type Num<const N: usize> = [Vec8; N];

pub fn zero<const N: usize>() -> Num<N> {
    [Vec8::ZERO; N]
}

/// Big-endian bytes to 52-bit limbs. Bytes beyond the limbs' capacity must be zero
/// (callers check lengths); no branch depends on the values.
pub fn limbs_from_be(bytes: &[u8], out: &mut [u64]) {
    out.fill(0);
    for (i, &b) in bytes.iter().rev().enumerate() {
        let bit = i * 8;
        let (limb, off) = (bit / LIMB_BITS as usize, (bit % LIMB_BITS as usize) as u32);
        if limb < out.len() {
            out[limb] |= ((b as u64) << off) & LIMB_MASK;
            if off > LIMB_BITS - 8 && limb + 1 < out.len() {
                out[limb + 1] |= (b as u64) >> (LIMB_BITS - off);
            }
        }
    }
}

/// 52-bit limbs (normalized) to big-endian bytes, `out.len()` bytes.
pub fn limbs_to_be(limbs: &[u64], out: &mut [u8]) {
    let n = out.len();
    for (i, o) in out.iter_mut().enumerate() {
        let bit = (n - 1 - i) * 8;
        let (limb, off) = (bit / LIMB_BITS as usize, (bit % LIMB_BITS as usize) as u32);
        let mut v = limbs.get(limb).copied().unwrap_or(0) >> off;
        if off > LIMB_BITS - 8 {
            v |= limbs.get(limb + 1).copied().unwrap_or(0) << (LIMB_BITS - off);
        }
        *o = v as u8;
    }
}

/// Puts one lane's limbs into position `lane` of `num`.
pub fn set_lane<const N: usize>(num: &mut Num<N>, lane: usize, limbs: &[u64]) {
    for (j, v) in num.iter_mut().enumerate() {
        v.0[lane] = limbs.get(j).copied().unwrap_or(0);
    }
}

pub fn get_lane<const N: usize>(num: &Num<N>, lane: usize, out: &mut [u64]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = num.get(j).map(|v| v.0[lane]).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_limbs() {
        for len in [1usize, 7, 13, 64, 128, 256, 384, 512] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut limbs = vec![0u64; (len * 8).div_ceil(52) + 1];
            limbs_from_be(&bytes, &mut limbs);
            assert!(limbs.iter().all(|l| *l <= LIMB_MASK));
            let mut back = vec![0u8; len];
            limbs_to_be(&limbs, &mut back);
            assert_eq!(back, bytes, "{len}");
        }
    }
}
