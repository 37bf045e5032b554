//! One-lane Montgomery arithmetic on the same 52-bit limbs, in portable Rust: the
//! reference the vector kernels are tested against, and the arithmetic for the
//! per-key blinding updates. Constant time: fixed loops, no value-dependent branches.

use crate::lanes::LIMB_MASK;

/// `a·b·2^(-52n) mod m`, below 2m when `a, b < 2m` and `4m ≤ 2^(52n)`.
pub fn amm(a: &[u64], b: &[u64], m: &[u64], k0: u64) -> Vec<u64> {
    let n = m.len();
    let mut acc = vec![0u128; n + 1];
    for &bi in b {
        for j in 0..n {
            let p = a[j] as u128 * bi as u128;
            acc[j] += p & LIMB_MASK as u128;
            acc[j + 1] += p >> 52;
        }
        let y = ((acc[0] as u64).wrapping_mul(k0)) & LIMB_MASK;
        for j in 0..n {
            let p = m[j] as u128 * y as u128;
            acc[j] += p & LIMB_MASK as u128;
            acc[j + 1] += p >> 52;
        }
        let carry = acc[0] >> 52;
        acc.remove(0);
        acc.push(0);
        acc[0] += carry;
    }
    let mut out = vec![0u64; n];
    let mut carry = 0u128;
    for j in 0..n {
        let v = acc[j] + carry;
        out[j] = if j + 1 < n {
            (v as u64) & LIMB_MASK
        } else {
            v as u64
        };
        carry = v >> 52;
    }
    out
}

/// `-m⁻¹ mod 2^52` for odd `m0` (Newton's iteration doubles the correct bits).
pub fn k0(m0: u64) -> u64 {
    let mut inv: u64 = 1;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(m0.wrapping_mul(inv)));
    }
    0u64.wrapping_sub(inv) & LIMB_MASK
}

/// `x - m` if `x ≥ m`, else `x`, without a branch on the values.
pub fn reduce_once(x: &[u64], m: &[u64]) -> Vec<u64> {
    let mut diff = vec![0u64; x.len()];
    let mut borrow = 0u64;
    for j in 0..x.len() {
        let t = x[j].wrapping_sub(m[j]).wrapping_sub(borrow);
        borrow = t >> 63;
        diff[j] = t & LIMB_MASK;
    }
    let keep_x = 0u64.wrapping_sub(borrow);
    x.iter()
        .zip(&diff)
        .map(|(a, d)| (a & keep_x) | (d & !keep_x))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k0_inverts() {
        for m0 in [1u64, 3, 0x000F_FFFF_FFFF_FFFF, 0x0001_2345_6789_ABCD] {
            let k = k0(m0);
            assert_eq!(m0.wrapping_mul(k).wrapping_add(1) & LIMB_MASK, 0, "{m0:#x}");
        }
    }
}
