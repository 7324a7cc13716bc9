//! The hot path of a Web Push, in pure Rust (no OpenSSL), built at
//! opt-level 3 inside a component otherwise built for size. The plugin
//! re-exports it as `jmap_web_push_guest::crypto`, next to its VAPID signing.
//!
//! * [`keys`]: parsing and validation of a subscription's receiver keys
//!   (`p256dh`, `auth`) as sent by `PushManager.subscribe()` (B1).
//! * [`ecdh`]: the P-256 ECDH shared secret of message encryption
//!   (constant-time, on `fiat-crypto`'s verified field arithmetic; about
//!   three times as fast as `p256` alone). Keys are validated by `p256`.
//! * [`ece`]: RFC 8291 message encryption with the RFC 8188 `aes128gcm`
//!   content coding, one record of 4096 octets (B7).
//! * [`base64url`]: base64url on the `base64` crate, and on `base64ct`
//!   (constant time) for secrets.
//!
//! This crate also holds the randomness source (and the P-256 scalar and
//! point types of the ECDH). Randomness comes from `getrandom`, which uses
//! `wasi:random` on `wasm32-wasip2` and the operating system natively.
//! Secrets are wiped with `zeroize`; the crate has no `unsafe` code.

#![forbid(unsafe_code)]

use core::fmt;

pub mod base64url;
pub mod ecdh;
pub mod ece;
pub mod keys;

pub use base64url::{
    b64url_decode, b64url_decode_secret, b64url_encode, b64url_encode_secret, Base64UrlError,
};
pub use ecdh::{EcdhError, PublicPoint, SecretScalar};
pub use ece::{encrypt, EceError, MAX_PLAINTEXT_OCTETS};
pub use keys::{parse_receiver_keys, KeyError, KeyField, ReceiverKeys};

/// The randomness source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomError {
    /// The platform random source (`wasi:random` / the OS) reported an error.
    Unavailable(getrandom::Error),
    /// The random source kept producing values that are not valid P-256
    /// secret scalars (zero or >= the group order); this only happens when
    /// the source is broken (for example constant output).
    BrokenSource,
}

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "the system random source failed: {e}"),
            Self::BrokenSource => write!(
                f,
                "the system random source produced no valid P-256 secret scalar in many \
                 attempts; it is broken"
            ),
        }
    }
}

impl std::error::Error for RandomError {}

/// Fills an `N`-octet array from the system random source (`getrandom`).
///
/// # Errors
/// [`RandomError::Unavailable`] when the platform source fails.
pub fn random_array<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(RandomError::Unavailable)?;
    Ok(out)
}

/// How many 32-octet draws [`random_secret_key`] makes before giving up. A
/// draw is rejected with probability about 2^-32, so giving up means the
/// source is broken.
pub const SCALAR_ATTEMPTS: usize = 8;

/// A fresh uniformly random P-256 secret key (rejection sampling of 32 random
/// octets into `[1, n-1]`).
///
/// # Errors
/// [`RandomError`] when the random source fails or is broken.
pub fn random_secret_key() -> Result<SecretScalar, RandomError> {
    for _ in 0..SCALAR_ATTEMPTS {
        let bytes: [u8; 32] = random_array()?;
        if let Some(key) = SecretScalar::from_bytes(&bytes) {
            return Ok(key);
        }
    }
    Err(RandomError::BrokenSource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_differ() {
        let a = random_secret_key().unwrap();
        let b = random_secret_key().unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        let p = a.public_key().to_uncompressed();
        assert_eq!(p[0], 4);
    }
}
