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

use zeroize::Zeroize as _;

mod field;
mod point;

use point::{
    affine_with, base_mul, batch_to_affine, encode_uncompressed, point_table, window_mul,
    z_inverses, Jacobian,
};

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
        self.0.zeroize();
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
mod tests;
