//! The P-256 field for the key agreement: `fiat-crypto`'s `p256_64`
//! (Montgomery form, formally verified, constant time) behind a small
//! value type. No field arithmetic is written here: every operation is a
//! call into `fiat-crypto`, and the inversion is a fixed addition chain of
//! its multiplications and squarings.

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
pub(super) struct Fe(pub(super) MontFe);

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
pub(super) fn zero_mask(x: u64) -> u64 {
    core::hint::black_box((((x | x.wrapping_neg()) >> 63) ^ 1).wrapping_neg())
}

/// All ones when `bit` (0 or 1) is 1, hidden from the optimiser.
#[inline(always)]
pub(super) fn bit_mask(bit: u64) -> u64 {
    core::hint::black_box(bit.wrapping_neg())
}

impl Fe {
    pub(super) const ZERO: Fe = Fe(MontFe([0; 4]));
    /// 1 in Montgomery form (R mod p).
    pub(super) const ONE: Fe = {
        let mut one = MontFe([0; 4]);
        fiat_p256_set_one(&mut one);
        Fe(one)
    };

    #[inline(never)]
    pub(super) fn mul(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_mul(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline(never)]
    pub(super) fn square(&self) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_square(&mut out, &self.0);
        Fe(out)
    }

    #[inline]
    pub(super) fn add(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_add(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline]
    pub(super) fn sub(&self, rhs: &Fe) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_sub(&mut out, &self.0, &rhs.0);
        Fe(out)
    }

    #[inline(always)]
    pub(super) fn double(&self) -> Fe {
        self.add(self)
    }

    #[inline(always)]
    pub(super) fn neg(&self) -> Fe {
        let mut out = MontFe([0; 4]);
        fiat_p256_opp(&mut out, &self.0);
        Fe(out)
    }

    /// All ones when zero, else zero.
    #[inline(always)]
    pub(super) fn is_zero_mask(&self) -> u64 {
        let mut or = 0u64;
        fiat_p256_nonzero(&mut or, &self.0 .0);
        zero_mask(or)
    }

    /// `mask ? a : b` (`mask` all ones or zero), in constant time.
    #[inline(always)]
    pub(super) fn select(mask: u64, a: &Fe, b: &Fe) -> Fe {
        let mut out = [0u64; 4];
        fiat_p256_selectznz(&mut out, (mask & 1) as u8, &b.0 .0, &a.0 .0);
        Fe(MontFe(out))
    }

    /// From canonical big-endian octets (the caller guarantees `< p`: a
    /// coordinate `p256` validated, or a curve constant).
    pub(super) fn from_be_bytes(bytes: &[u8; 32]) -> Fe {
        let mut le = *bytes;
        le.reverse();
        let mut plain = PlainFe([0; 4]);
        fiat_p256_from_bytes(&mut plain.0, &le);
        let mut out = MontFe([0; 4]);
        fiat_p256_to_montgomery(&mut out, &plain);
        Fe(out)
    }

    /// To canonical big-endian octets.
    pub(super) fn to_be_bytes(self) -> [u8; 32] {
        let mut plain = PlainFe([0; 4]);
        fiat_p256_from_montgomery(&mut plain, &self.0);
        let mut out = [0u8; 32];
        fiat_p256_to_bytes(&mut out, &plain.0);
        out.reverse();
        out
    }

    /// `self^(2^k)`.
    #[inline(never)]
    pub(super) fn square_times(self, k: usize) -> Fe {
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
    pub(super) fn invert(self) -> Fe {
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
pub(super) const GX_BE: [u8; 32] =
    be_hex(b"6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
/// The generator's y, big-endian.
pub(super) const GY_BE: [u8; 32] =
    be_hex(b"4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");

/// 32 octets from 64 hex digits, at compile time.
pub(super) const fn be_hex(hex: &[u8; 64]) -> [u8; 32] {
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
