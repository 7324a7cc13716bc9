//! P-256 ECDH for message encryption: the x-coordinate of `k·R` for the
//! ephemeral secret `k` and a receiver's public key `R`.
//!
//! This is the one hot spot of a push. It computes the same value as
//! `p256::SecretKey::diffie_hellman`, about three times as fast (BENCHMARKS.md),
//! with:
//!
//! - the field arithmetic of `fiat-crypto` (`p256_64`: Montgomery form,
//!   formally verified, the code BoringSSL and Go use); this module writes
//!   no field arithmetic of its own;
//! - Jacobian coordinates with the `a = -3` doubling (`dbl-2001-b`) and the
//!   mixed addition (`madd-2007-bl`) from the Explicit-Formulas Database;
//! - a signed radix-16 fixed window over a table of `1·R … 8·R`;
//! - for many messages at once ([`key_agreements`], a fan-out), the tables
//!   and results of the whole batch made affine with one inversion each
//!   (Montgomery's trick), so that the window additions are mixed
//!   additions and each message's two inversions become a few
//!   multiplications. A point at infinity in a batch (impossible for
//!   validated inputs) refuses the whole batch ([`EcdhError`]).
//!
//! **Constant time in the secret scalar**: every table lookup scans all
//! entries with masks, negation and the "digit is zero" / "accumulator is
//! the identity" cases are masked selects, and the loop shape does not depend
//! on the scalar. The field operations are `fiat-crypto`'s straight-line
//! code.
//!
//! **Exceptional cases** of the incomplete Jacobian addition (`P == Q`,
//! `P == -Q`, identity operands): before the last digit the accumulator is
//! `16·m·R` with `16·m` either 0 (handled as the identity) or at least 16,
//! while the table point is `d·R` with `|d| <= 8` and `16·m < n - 8`, so they
//! never coincide; only the last addition can meet `P == ±Q` (when
//! `k ≡ 2d (mod n)`), and there the doubling is computed too and selected.
//! `P == -Q` yields `Z = 0`, the identity, by the formula itself.
//!
//! The receiver key comes in as a [`PublicPoint`] (validated by
//! `p256::PublicKey::from_sec1_bytes`: on the curve, not the identity) and
//! the scalar as a [`SecretScalar`] (in `[1, n-1]`, checked by `p256`), so
//! the types carry the preconditions. The field inversion is Fermat's
//! `a^(p-2)` along a fixed addition chain (255 squarings, 12
//! multiplications), constant time.
//!
//! The tests check every operation against `p256` (random and edge
//! scalars, random points), run the Wycheproof ECDH vectors
//! (`tests/wycheproof.rs`), and a differential run against `p256` is in
//! `examples/ecdh_differential.rs` (BENCHMARKS.md has its figures).

use core::fmt;

use fiat_crypto::p256_64::{
    fiat_p256_add, fiat_p256_from_bytes, fiat_p256_from_montgomery,
    fiat_p256_montgomery_domain_field_element as MontFe, fiat_p256_mul,
    fiat_p256_non_montgomery_domain_field_element as PlainFe, fiat_p256_nonzero, fiat_p256_opp,
    fiat_p256_selectznz, fiat_p256_set_one, fiat_p256_square, fiat_p256_sub, fiat_p256_to_bytes,
    fiat_p256_to_montgomery,
};

/// A field element in Montgomery form (`a·R mod p`, `R = 2^256`), fully
/// reduced. Every operation is a call into `fiat-crypto`'s formally
/// verified, constant-time `p256_64` code; this module adds no field
/// arithmetic of its own.
#[derive(Clone, Copy)]
pub(crate) struct Fe(MontFe);

impl PartialEq for Fe {
    fn eq(&self, other: &Fe) -> bool {
        self.0 .0 == other.0 .0
    }
}

impl Eq for Fe {}

impl fmt::Debug for Fe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fe({:016x?})", self.0 .0)
    }
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

impl Fe {
    const ZERO: Fe = Fe(MontFe([0; 4]));
    /// 1 in Montgomery form (R mod p).
    const ONE: Fe = {
        let mut one = MontFe([0; 4]);
        fiat_p256_set_one(&mut one);
        Fe(one)
    };

    #[inline(never)]
    fn mul(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_mul(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline(never)]
    fn square(&self) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_square(&mut out, &self.0);
        Fe(out)
    }

    #[inline]
    fn add(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_add(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline]
    fn sub(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_sub(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline(always)]
    fn double(&self) -> Fe {
        self.add(self)
    }

    #[inline(always)]
    fn neg(&self) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_opp(&mut out, &self.0);
        Fe(out)
    }

    /// All ones when zero, else zero.
    #[inline(always)]
    fn is_zero_mask(&self) -> u64 {
        let mut or = 0u64;
        fiat_p256_nonzero(&mut or, &self.0 .0);
        zero_mask(or)
    }

    /// `mask ? a : b` (`mask` all ones or zero), in constant time.
    #[inline(always)]
    fn select(mask: u64, a: &Fe, b: &Fe) -> Fe {
        let mut out = [0u64; 4];
        fiat_p256_selectznz(&mut out, (mask & 1) as u8, &b.0 .0, &a.0 .0);
        Fe(MontFe(out))
    }

    /// From canonical big-endian octets (the caller guarantees `< p`: a
    /// coordinate `p256` validated, or a curve constant).
    fn from_be_bytes(bytes: &[u8; 32]) -> Fe {
        let mut le = *bytes;
        le.reverse();
        let mut plain = PlainFe([0; 4]);
        fiat_p256_from_bytes(&mut plain.0, &le);
        let mut out = MontFe([0; 4]);
        fiat_p256_to_montgomery(&mut out, &plain);
        Fe(out)
    }

    /// To canonical big-endian octets.
    fn to_be_bytes(self) -> [u8; 32] {
        let mut plain = PlainFe([0; 4]);
        fiat_p256_from_montgomery(&mut plain, &self.0);
        let mut out = [0u8; 32];
        fiat_p256_to_bytes(&mut out, &plain.0);
        out.reverse();
        out
    }

    /// `self^(2^k)`.
    #[inline(never)]
    fn square_times(self, k: usize) -> Fe {
        let mut r = self;
        for _ in 0..k {
            r = r.square();
        }
        r
    }

    /// The inverse (zero for zero): `self^(p-2)` along a fixed addition
    /// chain of `fiat-crypto` squarings and multiplications, so constant
    /// time. `p - 2` in 32-bit words from the top: `ffffffff 00000001
    /// 00000000 00000000 00000000 ffffffff ffffffff fffffffd`. Callers that
    /// must not go on with a zero check [`Fe::is_zero_mask`] of the input.
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

/// Overwrites `items` with zeros in a way the optimiser keeps.
pub(crate) fn wipe<T: Copy + Default>(items: &mut [T]) {
    for x in items.iter_mut() {
        // SAFETY: `x` is a valid, aligned, exclusive reference.
        unsafe { core::ptr::write_volatile(x, T::default()) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Why a key agreement produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EcdhError {
    /// A point to be made affine was the identity (`Z = 0`), so the batched
    /// inversion had nothing to invert. Validated keys and scalars in
    /// `[1, n-1]` never produce one; the whole batch is refused rather than
    /// giving an all-zero key or shared secret.
    IdentityInBatch,
}

impl fmt::Display for EcdhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdentityInBatch => f.write_str(
                "a P-256 key agreement met the point at infinity; the batch was refused",
            ),
        }
    }
}

impl std::error::Error for EcdhError {}

/// A P-256 secret scalar in `[1, n-1]` (an ECDH private key). `Debug`
/// prints nothing of it; it is wiped when dropped.
#[derive(Clone)]
pub struct SecretScalar([u8; 32]);

impl SecretScalar {
    /// The scalar with these big-endian octets, if it is in `[1, n-1]`
    /// (checked in constant time by `p256`'s `NonZeroScalar`).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<SecretScalar> {
        let repr = zeroize::Zeroizing::new(p256::FieldBytes::from(*bytes));
        // Whether the octets are a valid scalar is not secret; the scalar
        // `p256` made of them is, and is wiped.
        let mut scalar = Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(*repr));
        let valid = scalar.is_some();
        if let Some(s) = scalar.as_mut() {
            zeroize::Zeroize::zeroize(s);
        }
        valid.then_some(SecretScalar(*bytes))
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
/// (affine, big-endian coordinates below p), as validated by `p256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicPoint {
    x: [u8; 32],
    y: [u8; 32],
}

impl PublicPoint {
    /// Parses the 65-octet uncompressed SEC1 form `0x04 || x || y`; `None`
    /// unless it has that form and `p256::PublicKey::from_sec1_bytes`
    /// accepts it (both coordinates below p, `y^2 = x^3 - 3x + b`; the
    /// identity has no such form).
    #[must_use]
    pub fn from_uncompressed(bytes: &[u8]) -> Option<PublicPoint> {
        let raw: &[u8; 65] = bytes.try_into().ok()?;
        if raw[0] != 0x04 {
            return None;
        }
        p256::PublicKey::from_sec1_bytes(raw).ok()?;
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&raw[1..33]);
        y.copy_from_slice(&raw[33..]);
        Some(PublicPoint { x, y })
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

/// A table entry (an affine point: the batch makes every table affine):
/// a masked select, a `y` to negate, and an addition to a Jacobian
/// accumulator.
trait TableEntry: Copy {
    fn select(mask: u64, a: &Self, b: &Self) -> Self;
    fn y_mut(&mut self) -> &mut Fe;
    /// `acc + self`, with the exceptional cases of [`Jacobian::add_affine`].
    fn added_to(&self, acc: &Jacobian) -> Jacobian;
    fn to_jacobian(&self) -> Jacobian;
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
///
/// # Errors
/// [`EcdhError::IdentityInBatch`] if the product were the identity, which
/// a validated point and a scalar in `[1, n-1]` never give.
pub fn shared_secret(secret: &SecretScalar, public: &PublicPoint) -> Result<[u8; 32], EcdhError> {
    #[cfg(feature = "p256-ecdh")]
    {
        p256_reference::shared_secret(secret, public)
    }
    #[cfg(not(feature = "p256-ecdh"))]
    {
        own_shared_secret(secret, public)
    }
}

#[cfg_attr(feature = "p256-ecdh", allow(dead_code))]
fn own_shared_secret(secret: &SecretScalar, public: &PublicPoint) -> Result<[u8; 32], EcdhError> {
    // A batch of one: the same code path as a fan-out's, with its checks.
    let agreements = own_key_agreements(&[(secret, public)])?;
    agreements
        .first()
        .map(|(_, shared)| *shared)
        .ok_or(EcdhError::IdentityInBatch)
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

/// `k·R` from the table `[1·R, …, 8·R]` (affine, for the cheaper
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

/// The inverses of the `Z`s of `points` with one field inversion
/// (Montgomery's trick: `3(N-1)` multiplications instead of `N-1` more
/// inversions).
///
/// A zero `Z` (an identity point) makes the running product zero, and
/// every "inverse" after it would be zero too. The product is computed in
/// full whatever the values, and only then is it tested, once, so the time
/// does not tell which point was the identity; a zero refuses the whole
/// batch.
fn z_inverses(points: &[Jacobian]) -> Result<Vec<Fe>, EcdhError> {
    // out[i] = Z_0 · ... · Z_i, then, from the top, 1 / Z_i.
    let mut out: Vec<Fe> = Vec::with_capacity(points.len());
    let mut running = Fe::ONE;
    for p in points {
        running = running.mul(&p.z);
        out.push(running);
    }
    if running.is_zero_mask() != 0 {
        return Err(EcdhError::IdentityInBatch);
    }
    let mut inv = running.invert(); // 1 / (Z_0 · ... · Z_i)
    for i in (0..points.len()).rev() {
        let z_inv = if i == 0 { inv } else { inv.mul(&out[i - 1]) };
        inv = inv.mul(&points[i].z);
        out[i] = z_inv;
    }
    Ok(out)
}

/// The affine form of `p` given `1/Z`.
fn affine_with(p: &Jacobian, z_inv: &Fe) -> Affine {
    let z_inv2 = z_inv.square();
    Affine {
        x: p.x.mul(&z_inv2),
        y: p.y.mul(&z_inv2.mul(z_inv)),
    }
}

/// Affine forms of `points` with one field inversion.
///
/// # Errors
/// [`EcdhError::IdentityInBatch`] when one of them is the identity.
fn batch_to_affine(points: &[Jacobian]) -> Result<Vec<Affine>, EcdhError> {
    Ok(points
        .iter()
        .zip(z_inverses(points)?)
        .map(|(p, z_inv)| affine_with(p, &z_inv))
        .collect())
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
            // j·16^i·G for j <= 16 is never the identity (16 < n).
            let affine = batch_to_affine(&points)
                .expect("multiples of the generator below n are not the identity");
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
///
/// Unlike the batched path it does not test for a point at infinity: `k·G`
/// for `k ∈ [1, n-1]` never is one (the generator has prime order `n`), and
/// [`SecretScalar`] guarantees the range.
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
///
/// # Errors
/// [`EcdhError::IdentityInBatch`] if a table entry or a result were the
/// identity anyway: the whole batch is refused (no all-zero key or secret).
pub fn key_agreements(
    pairs: &[(&SecretScalar, &PublicPoint)],
) -> Result<Vec<KeyAgreement>, EcdhError> {
    #[cfg(feature = "p256-ecdh")]
    {
        p256_reference::key_agreements(pairs)
    }
    #[cfg(not(feature = "p256-ecdh"))]
    {
        own_key_agreements(pairs)
    }
}

#[cfg_attr(feature = "p256-ecdh", allow(dead_code))]
fn own_key_agreements(
    pairs: &[(&SecretScalar, &PublicPoint)],
) -> Result<Vec<KeyAgreement>, EcdhError> {
    let mut tables: Vec<Jacobian> = Vec::with_capacity(8 * pairs.len());
    for (_, public) in pairs {
        tables.extend_from_slice(&point_table(&public.x, &public.y));
    }
    let affine_tables = batch_to_affine(&tables)?;
    let mut points: Vec<Jacobian> = Vec::with_capacity(2 * pairs.len());
    for ((secret, _), table) in pairs.iter().zip(affine_tables.chunks_exact(8)) {
        points.push(base_mul(secret));
        points.push(window_mul(&secret.0, table));
    }
    let z_invs = z_inverses(&points)?;
    let mut out = Vec::with_capacity(pairs.len());
    for (p, z) in points.chunks_exact(2).zip(z_invs.chunks_exact(2)) {
        let public = affine_with(&p[0], &z[0]);
        let shared_x = p[1].x.mul(&z[1].square()).to_be_bytes();
        out.push((encode_uncompressed(&public), shared_x));
    }
    Ok(out)
}

/// The same key agreements on `p256` alone (`diffie_hellman` and
/// `public_key`), built in with the `p256-ecdh` feature: the comparison
/// build that decides whether this module's scalar multiplication is worth
/// keeping (BENCHMARKS.md). Not for production builds.
#[cfg(feature = "p256-ecdh")]
mod p256_reference {
    use super::{EcdhError, KeyAgreement, PublicPoint, SecretScalar};
    use p256::elliptic_curve::sec1::ToSec1Point as _;

    pub(super) fn shared_secret(
        secret: &SecretScalar,
        public: &PublicPoint,
    ) -> Result<[u8; 32], EcdhError> {
        Ok(key_agreement(secret, public)?.1)
    }

    pub(super) fn key_agreements(
        pairs: &[(&SecretScalar, &PublicPoint)],
    ) -> Result<Vec<KeyAgreement>, EcdhError> {
        pairs.iter().map(|(k, r)| key_agreement(k, r)).collect()
    }

    fn key_agreement(
        secret: &SecretScalar,
        public: &PublicPoint,
    ) -> Result<KeyAgreement, EcdhError> {
        let sk = p256::SecretKey::from_bytes(&secret.0.into())
            .map_err(|_| EcdhError::IdentityInBatch)?;
        let pk = p256::PublicKey::from_sec1_bytes(&public.to_uncompressed())
            .map_err(|_| EcdhError::IdentityInBatch)?;
        let shared: [u8; 32] = (*sk.diffie_hellman(&pk).raw_secret_bytes()).into();
        let encoded = sk.public_key().to_sec1_point(false);
        let public_key: [u8; 65] = encoded
            .as_bytes()
            .try_into()
            .map_err(|_| EcdhError::IdentityInBatch)?;
        Ok((public_key, shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // This module's own implementations, also under `--all-features`
    // (where the public functions are `p256`'s).
    use super::{own_key_agreements as key_agreements, own_shared_secret as shared_secret};
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

    /// Our wrapper of `fiat-crypto` (byte order, Montgomery conversions,
    /// selects, the inversion chain) against `p256`'s field.
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
            assert_eq!(Fe::select(u64::MAX, &fa, &fb), fa);
            assert_eq!(Fe::select(0, &fa, &fb), fb);
        }
        assert_eq!(Fe::ONE.to_be_bytes(), bytes_of(P256Fe::ONE));
        assert_eq!(Fe::ZERO.to_be_bytes(), [0u8; 32]);
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
            assert_eq!(shared_secret(&a, &b).unwrap(), reference(&a, &b));
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
                    shared_secret(&s, point).unwrap(),
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
            let batch = key_agreements(&pairs).unwrap();
            assert_eq!(batch.len(), n);
            for ((k, r), (public, shared)) in pairs.iter().zip(&batch) {
                assert_eq!(*public, reference_public(k));
                assert_eq!(*shared, reference(k, r));
                assert_eq!(*public, public_key_uncompressed(k));
                assert_eq!(*shared, shared_secret(k, r).unwrap());
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
        for ((k, r), (public_key, shared)) in pairs.iter().zip(key_agreements(&pairs).unwrap()) {
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
        assert_eq!(
            shared_secret(&scalar(as_private), &ua).unwrap().to_vec(),
            expected
        );
    }

    #[test]
    fn secret_scalars_are_exactly_1_to_n_minus_1() {
        use p256::elliptic_curve::ff::PrimeField;
        let n_plus = |k: u64| {
            // n + k as big-endian octets: n - 1 is the largest scalar, so
            // (n - 1) + (k + 1) with a carry-free add on the low octets.
            let mut b: [u8; 32] = (-p256::Scalar::ONE).to_repr().into();
            let low = u64::from_be_bytes(b[24..].try_into().unwrap()) + k + 1;
            b[24..].copy_from_slice(&low.to_be_bytes());
            b
        };
        let mut cases = edge_scalars();
        cases.push([0u8; 32]);
        cases.push([0xff; 32]);
        for k in 0..40u64 {
            cases.push(n_plus(k));
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

    /// A point at infinity anywhere in a batch refuses the whole batch: the
    /// off-curve point (0, 0) (never a validated key) doubles to `Z = 0` in
    /// its table. Without the check the batch would come back with
    /// all-zero keys and secrets for every message.
    #[test]
    fn a_point_at_infinity_refuses_the_whole_batch() {
        let bogus = PublicPoint {
            x: [0u8; 32],
            y: [0u8; 32],
        };
        let good = crate::random_secret_key().unwrap().public_key();
        let k1 = crate::random_secret_key().unwrap();
        let k2 = crate::random_secret_key().unwrap();
        assert_eq!(
            key_agreements(&[(&k1, &good), (&k2, &bogus)]),
            Err(EcdhError::IdentityInBatch)
        );
        assert_eq!(
            key_agreements(&[(&k2, &bogus), (&k1, &good)]),
            Err(EcdhError::IdentityInBatch)
        );
        assert_eq!(key_agreements(&[(&k1, &good)]).map(|v| v.len()), Ok(1));
        assert_eq!(shared_secret(&k1, &bogus), Err(EcdhError::IdentityInBatch));
        let identity = Jacobian {
            x: Fe::ONE,
            y: Fe::ONE,
            z: Fe::ZERO,
        };
        let g = base_mul(&k1);
        assert!(z_inverses(&[g, identity, g]).is_err());
        assert!(z_inverses(&[g, g]).is_ok());
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
        // Coordinates at or above p: x = p.
        const P_BE: [u8; 32] =
            be_hex(b"ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
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
}
