//! NIST P-256 arithmetic in eight lanes: field elements mod p and scalars mod n as five
//! 52-bit limbs in the Montgomery domain (R = 2^260), the fixed-base scalar
//! multiplication `k·G` that ECDSA signing needs, and inversion by Fermat.
//!
//! `k·G` sums one table point per 4-bit digit of k (`T[i][d] = d·16^i·G`, 64 windows,
//! no doublings). The addition is Renes–Costello–Batina's complete mixed addition for
//! a = −3 (eprint 2015/1060, algorithm 5): one formula for every input pair, so adding
//! a point to itself or to the point at infinity takes no special branch. A zero digit
//! adds `T[i][1]` and the lane keeps its previous sum by mask. Table reads touch all
//! sixteen entries of a window.

#![allow(unsafe_code)]

use crate::ifma;
use crate::lanes::{limbs_from_be, Num, Vec8, LANES};
use crate::scalar;
use boring::bn::{BigNum, BigNumContext};
use boring::ec::{EcGroup, EcPoint};
use boring::nid::Nid;
use std::sync::OnceLock;

pub const LIMBS: usize = 5;
pub type Fe = Num<LIMBS>;

/// One affine table point, the same for every lane, in Montgomery form: x's limbs,
/// then y's.
type Entry = [u64; 2 * LIMBS];

/// The curve's constants in the forms the kernels use.
pub struct Curve {
    pub p: Fe,
    /// 2p: coordinates stay below it between operations (see [`Lazy`]).
    p2: Fe,
    pub k0_p: Vec8,
    /// R² mod p, to enter the Montgomery domain.
    pub rr_p: Fe,
    /// 1 in the Montgomery domain (R mod p).
    pub one_p: Fe,
    /// The coefficient b·R mod p.
    b: Fe,
    pub n: Fe,
    pub k0_n: Vec8,
    pub rr_n: Fe,
    /// 1 in the Montgomery domain mod n.
    one_n: Fe,
    /// n, big-endian (nonces are drawn below it).
    pub n_be: [u8; 32],
    /// The plain number 1: `amm(x, 1)` leaves the Montgomery domain.
    pub plain_one: Fe,
    /// The public exponents of Fermat inversion, big-endian.
    p_minus_2: [u8; 32],
    n_minus_2: [u8; 32],
    /// `table[i][d] = d·16^i·G`; entry 0 repeats entry 1 (a zero digit's sum is
    /// computed and discarded, so that it costs what any digit costs).
    table: Vec<[Entry; 16]>,
}

fn splat(bytes: &[u8]) -> Fe {
    let mut limbs = [0u64; LIMBS];
    limbs_from_be(bytes, &mut limbs);
    limbs.map(Vec8::splat)
}

fn limbs(bn: &BigNum) -> [u64; LIMBS] {
    let mut l = [0u64; LIMBS];
    limbs_from_be(&bn.to_vec(), &mut l);
    l
}

fn be32(bn: &BigNum) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&bn.to_vec_padded(32).expect("32 bytes"));
    out
}

/// The constants, computed once with BoringSSL (public values only).
pub fn curve() -> &'static Curve {
    static CURVE: OnceLock<Curve> = OnceLock::new();
    CURVE.get_or_init(|| build().expect("P-256 constants"))
}

fn build() -> Result<Curve, boring::error::ErrorStack> {
    let mut ctx = BigNumContext::new()?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let (mut p, mut a, mut b) = (BigNum::new()?, BigNum::new()?, BigNum::new()?);
    group.components_gfp(&mut p, &mut a, &mut b, &mut ctx)?;
    let mut n = BigNum::new()?;
    group.order(&mut n, &mut ctx)?;
    let mut r = BigNum::new()?;
    r.lshift(&*BigNum::from_u32(1)?, 260)?;
    let mont = |x: &BigNum, m: &BigNum, ctx: &mut BigNumContext| -> Result<BigNum, _> {
        let mut out = BigNum::new()?;
        out.mod_mul(x, &r, m, ctx)?;
        Ok::<_, boring::error::ErrorStack>(out)
    };
    let rr = |m: &BigNum, ctx: &mut BigNumContext| -> Result<BigNum, _> {
        let mut out = BigNum::new()?;
        out.mod_mul(&r, &r, m, ctx)?;
        Ok::<_, boring::error::ErrorStack>(out)
    };
    let one = BigNum::from_u32(1)?;
    let two = BigNum::from_u32(2)?;
    let (mut pm2, mut nm2) = (BigNum::new()?, BigNum::new()?);
    pm2.checked_sub(&p, &two)?;
    nm2.checked_sub(&n, &two)?;

    let mut table = Vec::with_capacity(64);
    let mut base = group.generator().to_owned(&group)?;
    for _ in 0..64 {
        let mut entries = [[0u64; 2 * LIMBS]; 16];
        let mut point = base.to_owned(&group)?;
        for entry in entries.iter_mut().skip(1) {
            let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
            point.affine_coordinates_gfp(&group, &mut x, &mut y, &mut ctx)?;
            entry[..LIMBS].copy_from_slice(&limbs(&mont(&x, &p, &mut ctx)?));
            entry[LIMBS..].copy_from_slice(&limbs(&mont(&y, &p, &mut ctx)?));
            let mut next = EcPoint::new(&group)?;
            next.add(&group, &point, &base, &mut ctx)?;
            point = next;
        }
        // `point` is now 16·base: the next window's base.
        entries[0] = entries[1];
        table.push(entries);
        base = point;
    }
    let k0 = |m: &BigNum| Vec8::splat(scalar::k0(limbs(m)[0]));
    Ok(Curve {
        p: splat(&p.to_vec()),
        p2: splat(&{
            let mut p2 = BigNum::new()?;
            p2.lshift1(&p)?;
            p2.to_vec()
        }),
        k0_p: k0(&p),
        rr_p: splat(&rr(&p, &mut ctx)?.to_vec()),
        one_p: splat(&mont(&one, &p, &mut ctx)?.to_vec()),
        b: splat(&mont(&b, &p, &mut ctx)?.to_vec()),
        n: splat(&n.to_vec()),
        k0_n: k0(&n),
        rr_n: splat(&rr(&n, &mut ctx)?.to_vec()),
        one_n: splat(&mont(&one, &n, &mut ctx)?.to_vec()),
        n_be: be32(&n),
        plain_one: splat(&[1]),
        p_minus_2: be32(&pm2),
        n_minus_2: be32(&nm2),
        table,
    })
}

/// Arithmetic modulo one of the curve's primes (p for coordinates, n for scalars);
/// every result is fully reduced (below the modulus).
#[derive(Clone, Copy)]
pub struct Modulus<'a> {
    m: &'a Fe,
    k0: &'a Vec8,
}

impl Curve {
    pub fn field(&self) -> Modulus<'_> {
        Modulus {
            m: &self.p,
            k0: &self.k0_p,
        }
    }

    pub fn order(&self) -> Modulus<'_> {
        Modulus {
            m: &self.n,
            k0: &self.k0_n,
        }
    }
}

impl Modulus<'_> {
    /// # Safety
    /// The CPU must support AVX-512F and IFMA ([`ifma::available`]); so for every
    /// method here.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub unsafe fn mul(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: the caller guarantees the CPU features (this function's contract).
        unsafe { ifma::reduce_once(&ifma::amm(a, b, self.m, self.k0), self.m) }
    }

    /// # Safety
    /// As [`Modulus::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub unsafe fn sqr(&self, a: &Fe) -> Fe {
        // SAFETY: as in `mul`.
        unsafe { ifma::reduce_once(&ifma::amm_sqr(a, self.m, self.k0), self.m) }
    }

    /// # Safety
    /// As [`Modulus::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub unsafe fn add(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: as in `mul`; a + b < 2m, so one conditional subtraction reduces it.
        unsafe { ifma::reduce_once(&ifma::add(a, b), self.m) }
    }

    /// # Safety
    /// As [`Modulus::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub unsafe fn sub(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: as in `mul`. m − b is in (0, m] for b < m, so a + (m − b) < 2m.
        unsafe {
            let (neg, _) = ifma::sub(self.m, b);
            ifma::reduce_once(&ifma::add(a, &neg), self.m)
        }
    }

    /// `a^e` for a public big-endian exponent, with 4-bit windows (a^1..a^15 first);
    /// windows of zeros cost only their squarings.
    ///
    /// # Safety
    /// As [`Modulus::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn pow(&self, a: &Fe, e: &[u8; 32], one: &Fe) -> Fe {
        // SAFETY: as in `mul`. Branches and table indices depend on the public
        // exponent only.
        unsafe {
            let mut powers = [*one; 16];
            powers[1] = *a;
            for i in 2..16 {
                powers[i] = self.mul(&powers[i - 1], a);
            }
            let mut acc = *one;
            for (i, nibble) in e.iter().flat_map(|b| [b >> 4, b & 15]).enumerate() {
                if i > 0 {
                    for _ in 0..4 {
                        acc = self.sqr(&acc);
                    }
                }
                if nibble != 0 {
                    acc = self.mul(&acc, &powers[nibble as usize]);
                }
            }
            acc
        }
    }
}

/// Coordinate arithmetic that keeps values below 2p instead of p: a Montgomery product
/// of two such values is again below 2p (4p ≤ R), so only sums and differences need a
/// conditional subtraction, of 2p. Values leave this form through [`Modulus::mul`].
#[derive(Clone, Copy)]
struct Lazy<'a> {
    p: &'a Fe,
    p2: &'a Fe,
    k0: &'a Vec8,
}

impl Lazy<'_> {
    /// # Safety
    /// The CPU must support AVX-512F and IFMA; so for every method here.
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn mul(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { ifma::amm(a, b, self.p, self.k0) }
    }

    /// # Safety
    /// As [`Lazy::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn add(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: as in `mul`; a + b < 4p fits the limbs and reduces below 2p.
        unsafe { ifma::reduce_once(&ifma::add(a, b), self.p2) }
    }

    /// # Safety
    /// As [`Lazy::mul`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn sub(&self, a: &Fe, b: &Fe) -> Fe {
        // SAFETY: as in `mul`. 2p − b is in (0, 2p] for b < 2p, so the sum is below 4p.
        unsafe {
            let (neg, _) = ifma::sub(self.p2, b);
            ifma::reduce_once(&ifma::add(a, &neg), self.p2)
        }
    }
}

/// A projective point (X:Y:Z) in eight lanes; (0:1:0) is the point at infinity.
#[derive(Clone, Copy)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
}

/// `p + (x2, y2)` for an affine `(x2, y2)`: complete for every projective `p`.
///
/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn add_mixed(c: &Curve, p: &Point, x2: &Fe, y2: &Fe) -> Point {
    let f = Lazy {
        p: &c.p,
        p2: &c.p2,
        k0: &c.k0_p,
    };
    // SAFETY: the caller guarantees the CPU features; every call below needs only them.
    unsafe {
        let (x1, y1, z1) = (&p.x, &p.y, &p.z);
        let mut t0 = f.mul(x1, x2);
        let mut t1 = f.mul(y1, y2);
        let mut t3 = f.add(x2, y2);
        let mut t4 = f.add(x1, y1);
        t3 = f.mul(&t3, &t4);
        t4 = f.add(&t0, &t1);
        t3 = f.sub(&t3, &t4);
        t4 = f.mul(y2, z1);
        t4 = f.add(&t4, y1);
        let mut y3 = f.mul(x2, z1);
        y3 = f.add(&y3, x1);
        let mut z3 = f.mul(&c.b, z1);
        let mut x3 = f.sub(&y3, &z3);
        z3 = f.add(&x3, &x3);
        x3 = f.add(&x3, &z3);
        z3 = f.sub(&t1, &x3);
        x3 = f.add(&t1, &x3);
        y3 = f.mul(&c.b, &y3);
        t1 = f.add(z1, z1);
        let t2 = f.add(&t1, z1);
        y3 = f.sub(&y3, &t2);
        y3 = f.sub(&y3, &t0);
        t1 = f.add(&y3, &y3);
        y3 = f.add(&t1, &y3);
        t1 = f.add(&t0, &t0);
        t0 = f.add(&t1, &t0);
        t0 = f.sub(&t0, &t2);
        t1 = f.mul(&t4, &y3);
        let t2 = f.mul(&t0, &y3);
        y3 = f.mul(&x3, &z3);
        y3 = f.add(&y3, &t2);
        x3 = f.mul(&t3, &x3);
        x3 = f.sub(&x3, &t1);
        z3 = f.mul(&t4, &z3);
        t1 = f.mul(&t3, &t0);
        z3 = f.add(&z3, &t1);
        Point {
            x: x3,
            y: y3,
            z: z3,
        }
    }
}

/// The affine x coordinate of `k·G` per lane (plain, not Montgomery), k given as 64
/// little-endian 4-bit digits per lane. k must be in [1, n−1].
///
/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn base_mul_x(digits: &[Vec8; 64]) -> Fe {
    let c = curve();
    let f = c.field();
    let mut acc = Point {
        x: [Vec8::ZERO; LIMBS],
        y: c.one_p,
        z: [Vec8::ZERO; LIMBS],
    };
    for (i, digit) in digits.iter().enumerate() {
        let zero = zero_lanes(digit);
        // SAFETY: the caller guarantees the CPU features.
        unsafe {
            let entry = ifma::select_shared(&c.table[i], digit);
            let (x2, y2) = entry.split_at(LIMBS);
            let (x2, y2): (Fe, Fe) = (x2.try_into().unwrap(), y2.try_into().unwrap());
            let sum = add_mixed(c, &acc, &x2, &y2);
            // Lanes with a zero digit keep their sum.
            acc = Point {
                x: ifma::blend(zero, &sum.x, &acc.x),
                y: ifma::blend(zero, &sum.y, &acc.y),
                z: ifma::blend(zero, &sum.z, &acc.z),
            };
        }
    }
    // SAFETY: as above.
    unsafe {
        // The coordinates are below 2p; the canonical product brings them below p.
        let z_inv = f.pow(&acc.z, &c.p_minus_2, &c.one_p);
        let x = f.mul(&acc.x, &z_inv);
        f.mul(&x, &c.plain_one)
    }
}

/// Lanes whose digit (below 16) is zero, as a blend mask (bit i = lane i), without a
/// branch: only zero wraps around when one is subtracted.
fn zero_lanes(digit: &Vec8) -> u8 {
    let mut mask = 0u8;
    for lane in 0..LANES {
        mask |= ((digit.0[lane].wrapping_sub(1) >> 63) as u8) << lane;
    }
    mask
}

/// `a⁻¹ mod n` for Montgomery-form `a` (result in Montgomery form).
///
/// # Safety
/// The CPU must support AVX-512F and IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
pub unsafe fn invert_scalar(a: &Fe) -> Fe {
    let c = curve();
    // SAFETY: the caller guarantees the CPU features.
    unsafe { c.order().pow(a, &c.n_minus_2, &c.one_n) }
}
