//! P-256 ECDH for message encryption: the x-coordinate of `k·R` for the
//! ephemeral secret `k` and a receiver's public key `R`.
//!
//! This is the one hot spot of a push (three quarters of its CPU time with
//! `p256`'s generic point arithmetic). It computes the same value as
//! `p256::SecretKey::diffie_hellman`, about twice as fast, with:
//!
//! - a P-256-specific Montgomery field (`Fe`: four 64-bit limbs, `u128`
//!   products, which `+wide-arithmetic` turns into `i64.mul_wide_u` in
//!   wasm);
//! - Jacobian coordinates with the `a = -3` doubling (`dbl-2001-b`) and the
//!   general addition (`add-2007-bl`) from the Explicit-Formulas Database;
//! - a signed radix-16 fixed window over a table of `1·R … 8·R`;
//! - for many messages at once ([`key_agreements`], a fan-out), the tables
//!   and results of the whole batch made affine with one inversion each
//!   (Montgomery's trick), so that the window additions are mixed
//!   additions and each message's two inversions become a few
//!   multiplications.
//!
//! **Constant time in the secret scalar**: every table lookup scans all
//! entries with masks, negation and the "digit is zero" / "accumulator is
//! the identity" cases are masked selects, and the loop shape does not depend
//! on the scalar. Field operations are straight-line carry chains with a
//! masked final subtraction.
//!
//! **Exceptional cases** of the incomplete Jacobian addition (`P == Q`,
//! `P == -Q`, identity operands): before the last digit the accumulator is
//! `16·m·R` with `16·m` either 0 (handled as the identity) or at least 16,
//! while the table point is `d·R` with `|d| <= 8` and `16·m < n - 8`, so they
//! never coincide; only the last addition can meet `P == ±Q` (when
//! `k ≡ 2d (mod n)`), and there the doubling is computed too and selected.
//! `P == -Q` yields `Z = 0`, the identity, by the formula itself.
//!
//! The receiver key comes in as a [`PublicPoint`] (validated on the curve,
//! not the identity) and the scalar as a [`SecretScalar`] (in `[1, n-1]`),
//! so the types carry the preconditions. The field inversion is Fermat's
//! `a^(p-2)` along a fixed addition chain (255 squarings, 12
//! multiplications), constant time.
//!
//! This module is the per-message ECDH of the hot path; the plugin's
//! VAPID signing key uses the `p256` crate. The tests check every
//! operation here against `p256` (random and edge scalars, random points,
//! field operations near `p`).

use core::fmt;

/// p = 2^256 - 2^224 + 2^192 + 2^96 - 1, little-endian limbs.
const P: [u64; 4] = [
    0xffff_ffff_ffff_ffff,
    0x0000_0000_ffff_ffff,
    0x0000_0000_0000_0000,
    0xffff_ffff_0000_0001,
];

/// R^2 mod p with R = 2^256 (to enter the Montgomery domain).
const R2: [u64; 4] = [
    0x0000_0000_0000_0003,
    0xffff_fffb_ffff_ffff,
    0xffff_ffff_ffff_fffe,
    0x0000_0004_ffff_fffd,
];

/// A field element in Montgomery form (`a·R mod p`), fully reduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fe([u64; 4]);

/// `a - b` over four limbs: the difference and the final borrow (0 or 1).
#[inline(always)]
pub fn sub4(a: &[u64; 4], b: &[u64; 4]) -> ([u64; 4], u64) {
    let mut out = [0u64; 4];
    let mut borrow = 0u64;
    for i in 0..4 {
        let d = (a[i] as u128)
            .wrapping_sub(b[i] as u128)
            .wrapping_sub(borrow as u128);
        out[i] = d as u64;
        borrow = ((d >> 64) as u64) & 1;
    }
    (out, borrow)
}

/// All ones when `x == 0`, else zero, hidden from the optimiser so that
/// masked selects on it are not turned back into branches.
#[inline(always)]
fn zero_mask(x: u64) -> u64 {
    core::hint::black_box((((x | x.wrapping_neg()) >> 63) ^ 1).wrapping_neg())
}

/// All ones when `bit` (0 or 1) is 1, hidden from the optimiser.
#[inline(always)]
fn bit_mask(bit: u64) -> u64 {
    core::hint::black_box(bit.wrapping_neg())
}

/// `mask ? a : b` limb-wise (`mask` is all ones or zero).
#[inline(always)]
fn select4(mask: u64, a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    [
        (a[0] & mask) | (b[0] & !mask),
        (a[1] & mask) | (b[1] & !mask),
        (a[2] & mask) | (b[2] & !mask),
        (a[3] & mask) | (b[3] & !mask),
    ]
}

/// Reduces `t + hi·2^256` (known to be below `2m`) into `[0, m)` without
/// branching.
#[inline(always)]
pub fn reduce_below(t: [u64; 4], hi: u64, m: &[u64; 4]) -> [u64; 4] {
    let (r, borrow) = sub4(&t, m);
    // Keep `t` only when t < m as a 257-bit number: borrow and no high bit.
    let keep_t = bit_mask(borrow & (hi ^ 1));
    select4(keep_t, &t, &r)
}

/// `(a + b) mod m` for `a, b < m`, without branching.
#[inline(always)]
pub fn add_below(a: &[u64; 4], b: &[u64; 4], m: &[u64; 4]) -> [u64; 4] {
    let mut t = [0u64; 4];
    let mut carry = 0u64;
    for (i, limb) in t.iter_mut().enumerate() {
        let s = a[i] as u128 + b[i] as u128 + carry as u128;
        *limb = s as u64;
        carry = (s >> 64) as u64;
    }
    reduce_below(t, carry, m)
}

/// Reduces `t + hi·2^256` (known to be below 2p) into `[0, p)`.
#[inline(always)]
fn reduce_once(t: [u64; 4], hi: u64) -> [u64; 4] {
    reduce_below(t, hi, &P)
}

/// Montgomery reduction of a 512-bit `t < p·R` (little-endian limbs):
/// `t·R^-1 mod p`, fully reduced.
///
/// Four word steps; in each the multiplier is the low limb `m` (for P-256,
/// `-p^-1 ≡ 1 mod 2^64`), and of `m·p` only `m·p[3]` needs a product:
/// `t[i] + m·p[0] = m·2^64` (the limb clears, carrying `m`), `m·p[1] + m =
/// m·2^32`, and `p[2] = 0`. Each step's top carry lands in the column the
/// next step adds to, so one carry word runs along.
#[inline(always)]
fn montgomery_reduce(mut t: [u64; 8]) -> Fe {
    let mut top = 0u64;
    for i in 0..4 {
        let m = t[i];
        let s = t[i + 1] as u128 + ((m as u128) << 32);
        t[i + 1] = s as u64;
        let s = t[i + 2] as u128 + (s >> 64);
        t[i + 2] = s as u64;
        let s = t[i + 3] as u128 + (m as u128) * (P[3] as u128) + (s >> 64);
        t[i + 3] = s as u64;
        let s = t[i + 4] as u128 + (s >> 64) + top as u128;
        t[i + 4] = s as u64;
        top = (s >> 64) as u64;
    }
    Fe(reduce_once([t[4], t[5], t[6], t[7]], top))
}

impl Fe {
    const ZERO: Fe = Fe([0; 4]);
    /// 1 in Montgomery form (R mod p).
    const ONE: Fe = Fe([
        0x0000_0000_0000_0001,
        0xffff_ffff_0000_0000,
        0xffff_ffff_ffff_ffff,
        0x0000_0000_ffff_fffe,
    ]);

    /// Montgomery multiplication: the 512-bit product (16 limb products),
    /// then [`montgomery_reduce`].
    #[inline(never)]
    fn mul(&self, rhs: &Fe) -> Fe {
        let (a, b) = (&self.0, &rhs.0);
        let mut t = [0u64; 8];
        for i in 0..4 {
            let mut c = 0u64;
            for j in 0..4 {
                let uv = t[i + j] as u128 + (a[j] as u128) * (b[i] as u128) + c as u128;
                t[i + j] = uv as u64;
                c = (uv >> 64) as u64;
            }
            t[i + 4] = c;
        }
        montgomery_reduce(t)
    }

    /// Montgomery squaring: the 512-bit square from 6 cross products
    /// (doubled) and 4 squares, then [`montgomery_reduce`].
    #[inline(never)]
    fn square(&self) -> Fe {
        let a = &self.0;
        let mut t = [0u64; 8];
        // Cross products a[i]·a[j], i < j, at limb i + j.
        for i in 0..3 {
            let mut c = 0u64;
            for j in (i + 1)..4 {
                let uv = t[i + j] as u128 + (a[i] as u128) * (a[j] as u128) + c as u128;
                t[i + j] = uv as u64;
                c = (uv >> 64) as u64;
            }
            t[i + 4] = c;
        }
        // Doubled (the top bit of t[6] goes to t[7], which is still 0).
        t[7] = t[6] >> 63;
        for k in (2..7).rev() {
            t[k] = (t[k] << 1) | (t[k - 1] >> 63);
        }
        t[1] <<= 1;
        // Plus the squares a[i]^2 at limb 2i.
        let mut c = 0u64;
        for i in 0..4 {
            let sq = (a[i] as u128) * (a[i] as u128);
            let lo = t[2 * i] as u128 + (sq as u64) as u128 + c as u128;
            t[2 * i] = lo as u64;
            let hi = t[2 * i + 1] as u128 + (sq >> 64) + (lo >> 64);
            t[2 * i + 1] = hi as u64;
            c = (hi >> 64) as u64;
        }
        montgomery_reduce(t)
    }

    #[inline]
    fn add(&self, rhs: &Fe) -> Fe {
        Fe(add_below(&self.0, &rhs.0, &P))
    }

    #[inline]
    fn sub(&self, rhs: &Fe) -> Fe {
        let (d, borrow) = sub4(&self.0, &rhs.0);
        // Add p back when the subtraction wrapped.
        let mask = bit_mask(borrow);
        let p_masked = [P[0] & mask, P[1] & mask, P[2] & mask, P[3] & mask];
        let mut out = [0u64; 4];
        let mut carry = 0u64;
        for i in 0..4 {
            let s = d[i] as u128 + p_masked[i] as u128 + carry as u128;
            out[i] = s as u64;
            carry = (s >> 64) as u64;
        }
        Fe(out)
    }

    #[inline(always)]
    fn double(&self) -> Fe {
        self.add(self)
    }

    #[inline(always)]
    fn neg(&self) -> Fe {
        Fe::ZERO.sub(self)
    }

    /// All ones when zero, else zero.
    #[inline(always)]
    fn is_zero_mask(&self) -> u64 {
        let or = self.0[0] | self.0[1] | self.0[2] | self.0[3];
        zero_mask(or)
    }

    #[inline(always)]
    fn select(mask: u64, a: &Fe, b: &Fe) -> Fe {
        Fe(select4(mask, &a.0, &b.0))
    }

    /// From canonical big-endian octets (the caller guarantees `< p`).
    fn from_be_bytes(bytes: &[u8; 32]) -> Fe {
        Fe(limbs_be(bytes)).mul(&Fe(R2))
    }

    /// To canonical big-endian octets.
    fn to_be_bytes(self) -> [u8; 32] {
        be_bytes(&self.mul(&Fe([1, 0, 0, 0])).0)
    }

    /// `self^(2^k)`. Not inlined: unrolled into [`Fe::invert`] the eleven
    /// runs of squarings cost 8 KB of component for no measurable speed.
    #[inline(never)]
    fn square_times(self, k: usize) -> Fe {
        let mut r = self;
        for _ in 0..k {
            r = r.square();
        }
        r
    }

    /// The inverse (zero for zero): `self^(p-2)` along a fixed addition
    /// chain, so constant time. `p - 2` in 32-bit words from the top:
    /// `ffffffff 00000001 00000000 00000000 00000000 ffffffff ffffffff
    /// fffffffd`.
    fn invert(self) -> Fe {
        // x_k = self^(2^k - 1)
        let x2 = self.square().mul(&self);
        let x3 = x2.square().mul(&self);
        let x6 = x3.square_times(3).mul(&x3);
        let x12 = x6.square_times(6).mul(&x6);
        let x15 = x12.square_times(3).mul(&x3);
        let x30 = x15.square_times(15).mul(&x15);
        let x32 = x30.square_times(2).mul(&x2);
        let r = x32.square_times(32).mul(&self); // ffffffff 00000001
        let r = r.square_times(128).mul(&x32); // 00000000 x3, ffffffff
        let r = r.square_times(32).mul(&x32); // ffffffff
        let r = r.square_times(30).mul(&x30); // 30 ones
        r.square_times(2).mul(&self) // 01
    }
}

/// p, big-endian.
const P_BE: [u8; 32] = be_hex(b"ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
/// The group order n, big-endian.
pub const N_BE: [u8; 32] =
    be_hex(b"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// The curve coefficient b (`y^2 = x^3 - 3x + b`), big-endian.
const B_BE: [u8; 32] = be_hex(b"5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");
/// The generator's x, big-endian.
const GX_BE: [u8; 32] = be_hex(b"6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
/// The generator's y, big-endian.
const GY_BE: [u8; 32] = be_hex(b"4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");

/// 32 octets from 64 hex digits, at compile time.
const fn be_hex(hex: &[u8; 64]) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (digit(hex[2 * i]) << 4) | digit(hex[2 * i + 1]);
        i += 1;
    }
    out
}

/// Big-endian octets as little-endian 64-bit limbs.
pub fn limbs_be(bytes: &[u8; 32]) -> [u64; 4] {
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[32 - 8 * (i + 1)..32 - 8 * i]);
        *limb = u64::from_be_bytes(w);
    }
    limbs
}

/// Little-endian 64-bit limbs as big-endian octets (the inverse of
/// [`limbs_be`]).
pub fn be_bytes(limbs: &[u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, limb) in limbs.iter().enumerate() {
        out[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&limb.to_be_bytes());
    }
    out
}

/// Whether `a < b` as 256-bit big-endian numbers, in constant time.
pub fn less_than_be(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let (_, borrow) = sub4(&limbs_be(a), &limbs_be(b));
    borrow == 1
}

/// Overwrites `items` with zeros in a way the optimiser keeps.
pub fn wipe<T: Copy + Default>(items: &mut [T]) {
    for x in items.iter_mut() {
        // SAFETY: `x` is a valid, aligned, exclusive reference.
        unsafe { core::ptr::write_volatile(x, T::default()) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// A P-256 secret scalar in `[1, n-1]` (an ECDH or ECDSA private key).
/// `Debug` prints nothing of it; it is wiped when dropped.
#[derive(Clone)]
pub struct SecretScalar([u8; 32]);

impl SecretScalar {
    /// The scalar with these big-endian octets, if it is in `[1, n-1]`
    /// (checked in constant time).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<SecretScalar> {
        let nonzero = bytes.iter().fold(0u8, |acc, &b| acc | b) != 0;
        (nonzero & less_than_be(bytes, &N_BE)).then_some(SecretScalar(*bytes))
    }

    /// The big-endian octets.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The public point `k·G`.
    #[must_use]
    pub fn public_key(&self) -> PublicPoint {
        let encoded = public_key_uncompressed(self);
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&encoded[1..33]);
        y.copy_from_slice(&encoded[33..]);
        PublicPoint { x, y }
    }
}

impl Drop for SecretScalar {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretScalar(..)")
    }
}

/// A P-256 public point that lies on the curve and is not the identity
/// (affine, big-endian coordinates below p).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicPoint {
    x: [u8; 32],
    y: [u8; 32],
}

impl PublicPoint {
    /// Parses the 65-octet uncompressed SEC1 form `0x04 || x || y`; `None`
    /// unless it has that form, both coordinates are below p and
    /// `y^2 = x^3 - 3x + b`. (The identity has no such form.)
    #[must_use]
    pub fn from_uncompressed(bytes: &[u8]) -> Option<PublicPoint> {
        let raw: &[u8; 65] = bytes.try_into().ok()?;
        if raw[0] != 0x04 {
            return None;
        }
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&raw[1..33]);
        y.copy_from_slice(&raw[33..]);
        if !less_than_be(&x, &P_BE) || !less_than_be(&y, &P_BE) {
            return None;
        }
        let (fx, fy) = (Fe::from_be_bytes(&x), Fe::from_be_bytes(&y));
        let three_x = fx.double().add(&fx);
        let rhs = fx
            .square()
            .mul(&fx)
            .sub(&three_x)
            .add(&Fe::from_be_bytes(&B_BE));
        (fy.square() == rhs).then_some(PublicPoint { x, y })
    }

    /// The 65-octet uncompressed SEC1 form `0x04 || x || y`.
    #[must_use]
    pub fn to_uncompressed(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }
}

/// A point in Jacobian coordinates (`x = X/Z^2`, `y = Y/Z^3`); `Z = 0` is the
/// identity.
#[derive(Clone, Copy, Debug)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    /// `dbl-2001-b` (a = -3): 3M + 5S. The identity stays the identity.
    #[inline(never)]
    fn double(&self) -> Jacobian {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2_8 = gamma.square().double().double().double();
        let y3 = alpha.mul(&beta4.sub(&x3)).sub(&gamma2_8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `add-2007-bl`: 11M + 5S. Correct when neither operand is the identity
    /// and `self != other`; `self == -other` gives `Z = 0`.
    #[inline(never)]
    fn add_general(&self, other: &Jacobian) -> Jacobian {
        let z1z1 = self.z.square();
        let z2z2 = other.z.square();
        let u1 = self.x.mul(&z2z2);
        let u2 = other.x.mul(&z1z1);
        let s1 = self.y.mul(&other.z).mul(&z2z2);
        let s2 = other.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&u1);
        let i = h.double().square();
        let j = h.mul(&i);
        let r = s2.sub(&s1).double();
        let v = u1.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&s1.mul(&j).double());
        let z3 = self.z.add(&other.z).square().sub(&z1z1).sub(&z2z2).mul(&h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    #[inline(always)]
    fn select(mask: u64, a: &Jacobian, b: &Jacobian) -> Jacobian {
        Jacobian {
            x: Fe::select(mask, &a.x, &b.x),
            y: Fe::select(mask, &a.y, &b.y),
            z: Fe::select(mask, &a.z, &b.z),
        }
    }
}

/// Signed radix-16 digits of a 256-bit big-endian scalar, least
/// significant first: `k = Σ d_i·16^i`, `d_i ∈ [-8, 7]`, 65 digits.
fn radix16(scalar_be: &[u8; 32]) -> [i8; 65] {
    let mut d = [0i8; 65];
    for i in 0..32 {
        let byte = scalar_be[31 - i];
        d[2 * i] = (byte & 0x0f) as i8;
        d[2 * i + 1] = (byte >> 4) as i8;
    }
    let mut carry = 0i8;
    for digit in d.iter_mut().take(64) {
        let v = *digit + carry;
        carry = (v + 8) >> 4;
        *digit = v - (carry << 4);
    }
    d[64] = carry;
    d
}

/// A table entry: a point with a masked select, a `y` to negate, and an
/// addition to a Jacobian accumulator.
trait TableEntry: Copy {
    fn select(mask: u64, a: &Self, b: &Self) -> Self;
    fn y_mut(&mut self) -> &mut Fe;
    /// `acc + self`, with the exceptional cases of [`Jacobian::add_general`].
    fn added_to(&self, acc: &Jacobian) -> Jacobian;
    fn to_jacobian(&self) -> Jacobian;
}

impl TableEntry for Jacobian {
    #[inline(always)]
    fn select(mask: u64, a: &Self, b: &Self) -> Self {
        Jacobian::select(mask, a, b)
    }

    #[inline(always)]
    fn y_mut(&mut self) -> &mut Fe {
        &mut self.y
    }

    #[inline(always)]
    fn added_to(&self, acc: &Jacobian) -> Jacobian {
        acc.add_general(self)
    }

    #[inline(always)]
    fn to_jacobian(&self) -> Jacobian {
        *self
    }
}

/// The entry for digit `d` from a table of `1·P … 8·P` (`d·P`), read by
/// scanning every entry and negating `y` under a mask; the second value is
/// all ones when `d = 0` (the returned point is then meaningless).
#[inline(always)]
fn lookup<P: TableEntry>(table: &[P], d: i8) -> (P, u64) {
    let sign = ((d as u8) >> 7) as u64; // 1 when negative
    let abs = ((d as i16 ^ -(sign as i16)) + sign as i16) as u64; // |d|
    let mut out = table[0];
    for (j, entry) in table.iter().enumerate() {
        let hit = zero_mask((j as u64 + 1) ^ abs);
        out = P::select(hit, entry, &out);
    }
    let y = *out.y_mut();
    *out.y_mut() = Fe::select(bit_mask(sign), &y.neg(), &y);
    (out, zero_mask(abs))
}

/// The ECDH shared secret: the big-endian x-coordinate of `k·R`
/// (RFC 8291 §3.1, SEC 1 §3.3.1). Equal to
/// `secret.diffie_hellman(public).raw_secret_bytes()`.
#[must_use]
pub fn shared_secret(secret: &SecretScalar, public: &PublicPoint) -> [u8; 32] {
    scalar_mul_x(&secret.0, &public.x, &public.y)
}

/// `x(k·(x, y))` for an on-curve, non-identity point and `k ∈ [1, n-1]`.
fn scalar_mul_x(scalar_be: &[u8; 32], x: &[u8; 32], y: &[u8; 32]) -> [u8; 32] {
    let p = scalar_mul(scalar_be, x, y);
    let z_inv = p.z.invert();
    p.x.mul(&z_inv.square()).to_be_bytes()
}

/// `k·(x, y)` in Jacobian coordinates, for an on-curve, non-identity point
/// and `k ∈ [1, n-1]` (so the result is not the identity: P-256 has prime
/// order and cofactor 1).
fn scalar_mul(scalar_be: &[u8; 32], x: &[u8; 32], y: &[u8; 32]) -> Jacobian {
    window_mul(scalar_be, &point_table(x, y))
}

/// `[1·R, …, 8·R]` for `R = (x, y)`, in Jacobian coordinates. `R` is
/// affine, so the odd multiples are mixed additions (`2R`, `4R`, `6R` are
/// never `±R`: `R` has order `n`).
fn point_table(x: &[u8; 32], y: &[u8; 32]) -> [Jacobian; 8] {
    let r = Affine {
        x: Fe::from_be_bytes(x),
        y: Fe::from_be_bytes(y),
    };
    let base = Jacobian::from_affine(&r);
    let mut table = [base; 8];
    table[1] = base.double();
    table[2] = table[1].add_affine(&r);
    table[3] = table[1].double();
    table[4] = table[3].add_affine(&r);
    table[5] = table[2].double();
    table[6] = table[5].add_affine(&r);
    table[7] = table[3].double();
    table
}

/// `k·R` from the table `[1·R, …, 8·R]` (Jacobian, or affine for the cheaper
/// mixed additions): signed radix-16 digits from the top, four doublings
/// and one masked addition per digit. See the module docs for the
/// exceptional cases.
fn window_mul<P: TableEntry>(scalar_be: &[u8; 32], table: &[P]) -> Jacobian {
    let mut digits = radix16(scalar_be);
    let mut acc = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };
    for i in (0..65).rev() {
        if i != 64 {
            acc = acc.double().double().double().double();
        }
        // Only the last addition can meet acc == point (see module docs).
        acc = add_digit(&acc, table, digits[i], i == 0);
    }
    wipe(&mut digits);
    acc
}

/// One masked step of a scalar multiplication: `acc + d·P` for the table
/// `[1·P, …, 8·P]`, `acc` itself when `d = 0`, `d·P` when `acc` is the
/// identity. With `last`, `acc == d·P` is handled too (by the doubling,
/// computed always and selected under a mask). Shared by `k·G` and `k·R`
/// (the component has a size budget; a call per digit costs nothing
/// measurable).
#[inline(never)]
fn add_digit<P: TableEntry>(acc: &Jacobian, table: &[P], d: i8, last: bool) -> Jacobian {
    let (point, digit_zero) = lookup(table, d);
    let acc_identity = acc.z.is_zero_mask();
    let mut sum = point.added_to(acc);
    if last {
        let same = sum.x.is_zero_mask() & sum.y.is_zero_mask() & sum.z.is_zero_mask();
        let doubled = point.to_jacobian().double();
        sum = Jacobian::select(same & !acc_identity, &doubled, &sum);
    }
    let sum = Jacobian::select(acc_identity, &point.to_jacobian(), &sum);
    Jacobian::select(digit_zero, acc, &sum)
}

/// An affine point in Montgomery form (never the identity).
#[derive(Clone, Copy, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

impl Jacobian {
    /// `madd-2007-bl`: `self + other` with `other` affine, 7M + 4S. Correct
    /// when `self` is not the identity and `self != other`; `self == other`
    /// gives X = Y = Z = 0 and `self == -other` gives Z = 0.
    #[inline(never)]
    fn add_affine(&self, other: &Affine) -> Jacobian {
        let z1z1 = self.z.square();
        let u2 = other.x.mul(&z1z1);
        let s2 = other.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let hh = h.square();
        let i = hh.double().double();
        let j = h.mul(&i);
        let r = s2.sub(&self.y).double();
        let v = self.x.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&j).double());
        let z3 = self.z.add(&h).square().sub(&z1z1).sub(&hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }

    /// The affine form (the caller guarantees `Z != 0`).
    fn to_affine(self) -> Affine {
        affine_with(&self, &self.z.invert())
    }
}

/// The inverses of the `Z`s of `points` (none the identity) with one field
/// inversion (Montgomery's trick: `3(N-1)` multiplications instead of
/// `N-1` more inversions).
fn z_inverses(points: &[Jacobian]) -> Vec<Fe> {
    // out[i] = Z_0 · ... · Z_i, then, from the top, 1 / Z_i.
    let mut out: Vec<Fe> = Vec::with_capacity(points.len());
    let mut running = Fe::ONE;
    for p in points {
        running = running.mul(&p.z);
        out.push(running);
    }
    let mut inv = running.invert(); // 1 / (Z_0 · ... · Z_i)
    for i in (0..points.len()).rev() {
        let z_inv = if i == 0 { inv } else { inv.mul(&out[i - 1]) };
        inv = inv.mul(&points[i].z);
        out[i] = z_inv;
    }
    out
}

/// The affine form of `p` given `1/Z`.
fn affine_with(p: &Jacobian, z_inv: &Fe) -> Affine {
    let z_inv2 = z_inv.square();
    Affine {
        x: p.x.mul(&z_inv2),
        y: p.y.mul(&z_inv2.mul(z_inv)),
    }
}

/// Affine forms of `points` (none the identity) with one field inversion.
fn batch_to_affine(points: &[Jacobian]) -> Vec<Affine> {
    points
        .iter()
        .zip(z_inverses(points))
        .map(|(p, z_inv)| affine_with(p, &z_inv))
        .collect()
}

/// `table[i][j] = (j + 1)·16^i·G` for the 65 signed radix-16 digits.
type BaseTable = [[Affine; 8]; 65];

/// The generator's table, computed once per instance on first use (about
/// 0.6 ms natively: 65 batch inversions).
fn base_table() -> &'static BaseTable {
    static TABLE: std::sync::OnceLock<Box<BaseTable>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut window = Affine {
            x: Fe::from_be_bytes(&GX_BE),
            y: Fe::from_be_bytes(&GY_BE),
        };
        let mut table = Box::new(
            [[Affine {
                x: Fe::ZERO,
                y: Fe::ZERO,
            }; 8]; 65],
        );
        for row in table.iter_mut() {
            let base = Jacobian::from_affine(&window);
            let mut multiples = [base; 8];
            multiples[1] = base.double();
            for j in 2..8 {
                multiples[j] = if j % 2 == 1 {
                    multiples[j / 2].double()
                } else {
                    multiples[j - 1].add_affine(&window)
                };
            }
            // The eight multiples and 16·window, normalised with one
            // inversion (Montgomery's trick).
            let mut points = [base; 9];
            points[..8].copy_from_slice(&multiples);
            points[8] = multiples[7].double();
            let affine = batch_to_affine(&points);
            row.copy_from_slice(&affine[..8]);
            window = affine[8];
        }
        table
    })
}

impl TableEntry for Affine {
    #[inline(always)]
    fn select(mask: u64, a: &Self, b: &Self) -> Self {
        Affine {
            x: Fe::select(mask, &a.x, &b.x),
            y: Fe::select(mask, &a.y, &b.y),
        }
    }

    #[inline(always)]
    fn y_mut(&mut self) -> &mut Fe {
        &mut self.y
    }

    #[inline(always)]
    fn added_to(&self, acc: &Jacobian) -> Jacobian {
        acc.add_affine(self)
    }

    #[inline(always)]
    fn to_jacobian(&self) -> Jacobian {
        Jacobian::from_affine(self)
    }
}

/// The uncompressed SEC1 encoding (`0x04 || x || y`) of `k·G`: the
/// ephemeral public key of message encryption. Equal to
/// `secret.public_key()` encoded uncompressed.
///
/// Constant time in `k`: one masked table scan and one mixed addition per
/// digit, no doublings. Exceptional cases: before digit `i` the
/// accumulator is `(Σ_{j<i} d_j·16^j)·G` with `|Σ| < 16^i <= |d_i|·16^i`,
/// so accumulator and table point `d_i·16^i·G` differ as integers by less
/// than `9·16^i < n` for every `i <= 63` and can only coincide (up to sign)
/// when the accumulator is the identity, which is masked. At the top digit
/// (0 or 1) a collision would need `k ≡ 2^257 (mod n)`, whose top digit is
/// 0; the doubling is still computed and selected there, as a defence.
#[must_use]
pub fn public_key_uncompressed(secret: &SecretScalar) -> [u8; 65] {
    encode_uncompressed(&base_mul(secret).to_affine())
}

/// `0x04 || x || y`.
fn encode_uncompressed(p: &Affine) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[0] = 0x04;
    out[1..33].copy_from_slice(&p.x.to_be_bytes());
    out[33..].copy_from_slice(&p.y.to_be_bytes());
    out
}

/// `k·G` in Jacobian coordinates (never the identity for `k ∈ [1, n-1]`);
/// see [`public_key_uncompressed`] for the exceptional cases.
fn base_mul(secret: &SecretScalar) -> Jacobian {
    let mut digits = radix16(&secret.0);
    let table = base_table();
    let mut acc = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };
    for (i, row) in table.iter().enumerate() {
        acc = add_digit(&acc, row, digits[i], i == 64);
    }
    wipe(&mut digits);
    acc
}

/// The ephemeral public key and the ECDH shared secret of one message:
/// `(public_key_uncompressed(k), shared_secret(k, R))`.
pub type KeyAgreement = ([u8; 65], [u8; 32]);

/// [`public_key_uncompressed`] and [`shared_secret`] for many messages at
/// once, with two field inversions for all of them instead of two per
/// message (Montgomery's trick). The results are equal to the one-message
/// functions', in the same order.
///
/// A fan-out encrypts hundreds of messages in a row. Each needs `k·G` in
/// affine form and the affine `x` of `k·R`; a P-256 inversion (255
/// squarings) costs about a tenth of the two scalar multiplications. Here:
///
/// - the tables `[1·R, …, 8·R]` of every receiver key are made affine with
///   one inversion, so the 65 additions of each `k·R` are mixed additions
///   (7M + 4S instead of 11M + 5S);
/// - the `2N` results are made affine with one more inversion.
///
/// Constant time in the secrets: the products and the inversions run the
/// same operations whatever the values. No `Z` is zero: `k ∈ [1, n-1]`,
/// every validated point has order `n`, and the table holds `j·R` for
/// `j <= 8 < n`.
#[must_use]
pub fn key_agreements(pairs: &[(&SecretScalar, &PublicPoint)]) -> Vec<KeyAgreement> {
    let mut tables: Vec<Jacobian> = Vec::with_capacity(8 * pairs.len());
    for (_, public) in pairs {
        tables.extend_from_slice(&point_table(&public.x, &public.y));
    }
    let affine_tables = batch_to_affine(&tables);
    let mut points: Vec<Jacobian> = Vec::with_capacity(2 * pairs.len());
    for ((secret, _), table) in pairs.iter().zip(affine_tables.chunks_exact(8)) {
        points.push(base_mul(secret));
        points.push(window_mul(&secret.0, table));
    }
    let z_invs = z_inverses(&points);
    let mut out = Vec::with_capacity(pairs.len());
    for (p, z) in points.chunks_exact(2).zip(z_invs.chunks_exact(2)) {
        let public = affine_with(&p[0], &z[0]);
        let shared_x = p[1].x.mul(&z[1].square()).to_be_bytes();
        out.push((encode_uncompressed(&public), shared_x));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_array;
    use p256::elliptic_curve::ff::PrimeField as _;
    use p256::elliptic_curve::hazmat::FieldArithmetic;
    use p256::elliptic_curve::sec1::ToSec1Point as _;

    /// `p256`'s field element, the reference for ours.
    type P256Fe = <p256::NistP256 as FieldArithmetic>::FieldElement;

    /// p256's field element from our canonical octets.
    fn theirs(bytes: &[u8; 32]) -> P256Fe {
        P256Fe::from_repr((*bytes).into()).unwrap()
    }

    fn bytes_of(f: P256Fe) -> [u8; 32] {
        f.to_repr().into()
    }

    /// Canonical field octets: random below p, plus the edges.
    fn field_samples() -> Vec<[u8; 32]> {
        let p_minus = |k: u8| bytes_of(P256Fe::ZERO - P256Fe::from(u64::from(k)));
        let mut v = vec![
            [0u8; 32],
            bytes_of(P256Fe::ONE),
            bytes_of(P256Fe::from(2u64)),
            p_minus(1),
            p_minus(2),
            bytes_of(P256Fe::from(u64::MAX)),
        ];
        for _ in 0..2000 {
            let r: [u8; 32] = random_array().unwrap();
            v.push(bytes_of(P256Fe::from_repr(r.into()).unwrap_or(P256Fe::ONE)));
            // And values with long runs of ones / zeros (carry chains).
            let mut w = [0u8; 32];
            w[(r[0] % 32) as usize..].fill(0xff);
            if let Some(f) = Option::<P256Fe>::from(P256Fe::from_repr(w.into())) {
                v.push(bytes_of(f));
            }
        }
        v
    }

    #[test]
    fn field_operations_match_p256() {
        let samples = field_samples();
        for pair in samples.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (fa, fb) = (Fe::from_be_bytes(a), Fe::from_be_bytes(b));
            let (ta, tb) = (theirs(a), theirs(b));
            assert_eq!(fa.to_be_bytes(), *a, "round trip");
            assert_eq!(fa.mul(&fb).to_be_bytes(), bytes_of(ta * tb), "mul");
            assert_eq!(fa.square().to_be_bytes(), bytes_of(ta.square()), "square");
            assert_eq!(fa.add(&fb).to_be_bytes(), bytes_of(ta + tb), "add");
            assert_eq!(fa.sub(&fb).to_be_bytes(), bytes_of(ta - tb), "sub");
            assert_eq!(fa.neg().to_be_bytes(), bytes_of(-ta), "neg");
            assert_eq!(fa.double().to_be_bytes(), bytes_of(ta.double()), "double");
            let inv: Option<P256Fe> = ta.invert().into();
            assert_eq!(
                fa.invert().to_be_bytes(),
                bytes_of(inv.unwrap_or(P256Fe::ZERO)),
                "invert"
            );
            assert_eq!(fa.is_zero_mask() == u64::MAX, *a == [0u8; 32]);
        }
        assert_eq!(Fe::ONE.to_be_bytes(), bytes_of(P256Fe::ONE));
        // Montgomery-form limbs at the edges of the reduction's carries,
        // checked against p256 without our own reduction: the limbs `x`
        // stand for x·R^-1 mod p.
        let be = |l: [u64; 4]| {
            let mut out = [0u8; 32];
            for i in 0..4 {
                out[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&l[i].to_be_bytes());
            }
            out
        };
        let r_inv: P256Fe = Option::from(theirs(&be(Fe::ONE.0)).invert()).unwrap();
        let value = |l: [u64; 4]| theirs(&be(l)) * r_inv;
        let p_minus = |k: u64| sub4(&P, &[k, 0, 0, 0]).0;
        let mut edges = vec![
            p_minus(1),
            p_minus(2),
            [1, 0, 0, 0],
            [u64::MAX, u64::MAX, u64::MAX, P[3] - 1],
            [u64::MAX, 0, 0, 0],
            [0, 0, 0, P[3] - 1],
            [0, u64::MAX, u64::MAX, 0],
            [u64::MAX, u64::MAX, 0, P[3] - 1],
        ];
        for _ in 0..200 {
            // Random limbs below p: the top limb kept below p[3].
            let r: [u8; 32] = random_array().unwrap();
            let mut l = [0u64; 4];
            for (i, limb) in l.iter_mut().enumerate() {
                *limb = u64::from_le_bytes(r[8 * i..8 * i + 8].try_into().unwrap());
            }
            l[3] %= P[3];
            edges.push(l);
        }
        for &x in &edges {
            let fx = Fe(x);
            assert_eq!(value(fx.square().0), value(x).square(), "square {x:x?}");
            assert_eq!(fx.square(), fx.mul(&fx), "square = mul {x:x?}");
            for &y in edges.iter().take(8) {
                let got = value(fx.mul(&Fe(y)).0);
                assert_eq!(got, value(x) * value(y), "mul {x:x?} {y:x?}");
            }
        }
    }

    #[test]
    fn radix16_digits_recompose_the_scalar() {
        for _ in 0..500 {
            let k: [u8; 32] = random_array().unwrap();
            let d = radix16(&k);
            assert!(d.iter().all(|&x| (-8..=8).contains(&x)), "{d:?}");
            // Recompose with big-integer arithmetic on 64-bit limbs.
            let mut acc = [0i128; 5];
            for (i, &digit) in d.iter().enumerate() {
                let limb = i / 16;
                let shift = 4 * (i % 16);
                acc[limb] += i128::from(digit) << shift;
            }
            // Normalise into unsigned 64-bit limbs.
            let mut out = [0u64; 5];
            let mut carry = 0i128;
            for i in 0..5 {
                let v = acc[i] + carry;
                out[i] = v as u64;
                carry = v >> 64;
            }
            let mut be = [0u8; 32];
            for i in 0..4 {
                be[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&out[i].to_be_bytes());
            }
            assert_eq!(be, k);
            assert_eq!(out[4], 0);
        }
    }

    fn p256_secret(secret: &SecretScalar) -> p256::SecretKey {
        p256::SecretKey::from_bytes(&secret.to_bytes().into()).unwrap()
    }

    fn reference(secret: &SecretScalar, public: &PublicPoint) -> [u8; 32] {
        let public = p256::PublicKey::from_sec1_bytes(&public.to_uncompressed()).unwrap();
        (*p256_secret(secret)
            .diffie_hellman(&public)
            .raw_secret_bytes())
        .into()
    }

    fn scalar(bytes: [u8; 32]) -> SecretScalar {
        SecretScalar::from_bytes(&bytes).unwrap()
    }

    /// n - k for small k, big-endian.
    fn n_minus(k: u64) -> [u8; 32] {
        use p256::elliptic_curve::ff::PrimeField;
        (-p256::Scalar::from(k)).to_repr().into()
    }

    fn small(k: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&k.to_be_bytes());
        b
    }

    /// Scalars at the edges: 1..=40, n-1..=n-40, all ones (below n) and
    /// alternating 0x88 digits.
    fn edge_scalars() -> Vec<[u8; 32]> {
        let mut scalars: Vec<[u8; 32]> = (1..=40).map(small).collect();
        scalars.extend((1..=40).map(n_minus));
        let mut ones = [0xffu8; 32];
        ones[0] = 0x7f;
        scalars.push(ones);
        let mut alternating = [0x88u8; 32];
        alternating[0] = 0x08;
        scalars.push(alternating);
        scalars
    }

    #[test]
    fn shared_secret_matches_p256_for_random_keys() {
        for _ in 0..300 {
            let a = crate::random_secret_key().unwrap();
            let b = crate::random_secret_key().unwrap().public_key();
            assert_eq!(shared_secret(&a, &b), reference(&a, &b));
        }
    }

    /// [`edge_scalars`] plus scalars whose last digit makes `k ≡ 2d (mod
    /// n)` reachable, and digit patterns with long runs.
    fn ecdh_edge_scalars() -> Vec<[u8; 32]> {
        let mut scalars = edge_scalars();
        for k in [8u64, 16, 15, 17, 0x88, 0x7777, 0x8888_8888, u64::MAX] {
            scalars.push(small(k));
            scalars.push(n_minus(k));
        }
        let mut sevens = [0x77u8; 32];
        sevens[0] = 0x07;
        scalars.push(sevens);
        scalars
    }

    #[test]
    fn shared_secret_matches_p256_for_edge_scalars() {
        let public = crate::random_secret_key().unwrap().public_key();
        let generator = scalar(small(1)).public_key();
        for k in ecdh_edge_scalars() {
            let s = scalar(k);
            for point in [&public, &generator] {
                assert_eq!(
                    shared_secret(&s, point),
                    reference(&s, point),
                    "k = {k:02x?}"
                );
            }
        }
    }

    fn reference_public(secret: &SecretScalar) -> [u8; 65] {
        let point = p256_secret(secret).public_key().to_sec1_point(false);
        point.as_bytes().try_into().unwrap()
    }

    #[test]
    fn public_key_matches_p256_for_random_and_edge_scalars() {
        for _ in 0..300 {
            let k = crate::random_secret_key().unwrap();
            assert_eq!(public_key_uncompressed(&k), reference_public(&k));
        }
        let mut scalars = edge_scalars();
        for shift in 0..64 {
            // 16^shift and its neighbours: single-digit and carry patterns.
            let mut b = [0u8; 32];
            b[31 - shift / 2] = if shift % 2 == 0 { 1 } else { 0x10 };
            scalars.push(b);
            let mut nines = b;
            nines[31 - shift / 2] = if shift % 2 == 0 { 8 } else { 0x80 };
            scalars.push(nines);
        }
        for k in scalars {
            let s = scalar(k);
            assert_eq!(
                public_key_uncompressed(&s),
                reference_public(&s),
                "k = {k:02x?}"
            );
        }
    }

    #[test]
    fn key_agreements_equal_the_one_message_functions() {
        for n in [0usize, 1, 2, 3, 17] {
            let secrets: Vec<SecretScalar> = (0..n)
                .map(|i| match i {
                    // Edge scalars among random ones.
                    0 => scalar(small(1)),
                    1 => scalar(n_minus(1)),
                    _ => crate::random_secret_key().unwrap(),
                })
                .collect();
            let publics: Vec<PublicPoint> = (0..n)
                .map(|i| {
                    if i == 2 {
                        // The generator itself, and a point equal to k·G.
                        scalar(small(1)).public_key()
                    } else {
                        crate::random_secret_key().unwrap().public_key()
                    }
                })
                .collect();
            let pairs: Vec<(&SecretScalar, &PublicPoint)> =
                secrets.iter().zip(publics.iter()).collect();
            let batch = key_agreements(&pairs);
            assert_eq!(batch.len(), n);
            for ((k, r), (public, shared)) in pairs.iter().zip(&batch) {
                assert_eq!(*public, reference_public(k));
                assert_eq!(*shared, reference(k, r));
                assert_eq!(*public, public_key_uncompressed(k));
                assert_eq!(*shared, shared_secret(k, r));
            }
        }
    }

    /// The batched path (affine tables, mixed additions) on the edge
    /// scalars, against a random point and the generator (where `k·R`
    /// meets the exceptional cases), in one batch.
    #[test]
    fn key_agreements_match_p256_for_edge_scalars() {
        let public = crate::random_secret_key().unwrap().public_key();
        let generator = scalar(small(1)).public_key();
        let secrets: Vec<SecretScalar> = ecdh_edge_scalars().into_iter().map(scalar).collect();
        let pairs: Vec<(&SecretScalar, &PublicPoint)> = secrets
            .iter()
            .flat_map(|k| [(k, &public), (k, &generator)])
            .collect();
        for ((k, r), (public_key, shared)) in pairs.iter().zip(key_agreements(&pairs)) {
            assert_eq!(shared, reference(k, r), "k = {:02x?}", k.to_bytes());
            assert_eq!(public_key, reference_public(k), "k = {:02x?}", k.to_bytes());
        }
    }

    #[test]
    fn rfc8291_appendix_a_ecdh_secret() {
        use crate::b64url_decode;
        let as_private: [u8; 32] = b64url_decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
            .unwrap()
            .try_into()
            .unwrap();
        let ua_public =
            b64url_decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
                .unwrap();
        let ua = PublicPoint::from_uncompressed(&ua_public).unwrap();
        let expected = b64url_decode("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs").unwrap();
        assert_eq!(shared_secret(&scalar(as_private), &ua).to_vec(), expected);
    }

    #[test]
    fn secret_scalars_are_exactly_1_to_n_minus_1() {
        let mut cases = edge_scalars();
        cases.push([0u8; 32]);
        cases.push(N_BE);
        cases.push([0xff; 32]);
        for k in 1..=40u64 {
            // n + k - 1 .. : above the order.
            let mut limbs = limbs_be(&N_BE);
            limbs[0] += k; // n's low limb is far from overflowing
            cases.push(be_bytes(&limbs));
        }
        for _ in 0..100 {
            cases.push(random_array().unwrap());
        }
        for k in cases {
            let ours = SecretScalar::from_bytes(&k).is_some();
            let theirs = p256::SecretKey::from_bytes(&k.into()).is_ok();
            assert_eq!(ours, theirs, "k = {k:02x?}");
        }
        assert_eq!(format!("{:?}", scalar(small(7))), "SecretScalar(..)");
    }

    #[test]
    fn public_points_are_validated_like_p256() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for _ in 0..50 {
            let good = crate::random_secret_key()
                .unwrap()
                .public_key()
                .to_uncompressed();
            cases.push(good.to_vec());
            // One bit flipped anywhere: off the curve (or not 0x04).
            for bit in [0usize, 8, 9, 100, 263, 519] {
                let mut bad = good;
                bad[bit / 8] ^= 1 << (bit % 8);
                cases.push(bad.to_vec());
            }
            // y replaced by p - y is the negated point: still on the curve.
            let y = Fe::from_be_bytes(good[33..].try_into().unwrap());
            let mut neg = good;
            neg[33..].copy_from_slice(&y.neg().to_be_bytes());
            cases.push(neg.to_vec());
            cases.push(good[..64].to_vec());
        }
        // Coordinates at or above p: x = p, and x + p for a small valid x.
        let mut at_p = [0u8; 65];
        at_p[0] = 4;
        at_p[1..33].copy_from_slice(&P_BE);
        cases.push(at_p.to_vec());
        let mut identity = [0u8; 65];
        identity[0] = 4;
        cases.push(identity.to_vec());
        let g = scalar(small(1)).public_key().to_uncompressed();
        assert_eq!(&g[1..33], &GX_BE);
        assert_eq!(&g[33..], &GY_BE);
        for c in cases {
            let ours = PublicPoint::from_uncompressed(&c);
            let theirs = p256::PublicKey::from_sec1_bytes(&c).ok();
            assert_eq!(
                ours.is_some(),
                theirs.is_some() && c.len() == 65,
                "{c:02x?}"
            );
            if let Some(p) = ours {
                assert_eq!(p.to_uncompressed().as_slice(), c.as_slice());
            }
        }
    }

    #[test]
    fn less_than_is_a_256_bit_comparison() {
        let samples = field_samples();
        for a in &samples {
            for b in samples.iter().take(12) {
                assert_eq!(less_than_be(a, b), a < b, "{a:02x?} < {b:02x?}");
            }
        }
    }
}
