//! The hot path of a Web Push, in pure Rust (no OpenSSL), built at
//! opt-level 3 inside a component otherwise built for size. The plugin
//! re-exports it as `jmap_web_push_guest::crypto`, next to its VAPID signing.
//!
//! * [`keys`]: parsing and validation of a subscription's receiver keys
//!   (`p256dh`, `auth`) as sent by `PushManager.subscribe()` (B1).
//! * [`ecdh`]: the P-256 ECDH shared secret of message encryption
//!   (constant-time, about twice as fast as `p256`'s generic arithmetic).
//! * [`ece`]: RFC 8291 message encryption with the RFC 8188 `aes128gcm`
//!   content coding, one record of 4096 octets (B7).
//!
//! This crate also holds the base64url helpers and the randomness source
//! (and the P-256 scalar and point types of the ECDH). Randomness comes from `getrandom`, which uses
//! `wasi:random` on `wasm32-wasip2` and the operating system natively.

use core::fmt;

pub mod ecdh;
pub mod ece;
pub mod keys;

pub use ecdh::{PublicPoint, SecretScalar};
pub use ece::{encrypt, EceError, MAX_PLAINTEXT_OCTETS};
pub use keys::{parse_receiver_keys, KeyError, KeyField, ReceiverKeys};

/// The base64url alphabet (RFC 4648 §5).
const B64URL_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 6-bit value of a base64url symbol.
fn b64url_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Encodes `bytes` as base64url (RFC 4648 §5) **without** `=` padding, the
/// form used by Web Push, JWS and JMAP.
#[must_use]
pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let symbol = |v: u32| char::from(B64URL_ALPHABET[(v & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(symbol(n >> (18 - 6 * i)));
        }
    }
    out
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding.
///
/// Accepts only the URL-safe alphabet (`A-Z a-z 0-9 - _`) plus trailing `=`
/// padding. Rejects the standard alphabet's `+` and `/`, whitespace, any other
/// character, impossible lengths and encodings whose last symbol carries
/// non-zero unused bits (so every accepted string decodes to exactly one
/// octet sequence). The empty string decodes to no octets.
///
/// # Errors
/// A [`Base64UrlError`] naming the first problem found.
pub fn b64url_decode(input: &str) -> Result<Vec<u8>, Base64UrlError> {
    let bytes = input.as_bytes();
    let n = bytes.len();
    let invalid = |offset: usize| Base64UrlError::InvalidCharacter {
        offset,
        byte: bytes[offset],
    };
    // The errors and their order are those of the `base64` crate this
    // function replaced (a test compares the two): a lone final octet
    // outside the alphabet is reported first.
    if n % 4 == 1 && bytes[n - 1] != b'=' && b64url_value(bytes[n - 1]).is_none() {
        return Err(invalid(n - 1));
    }
    // Every quad before the last holds four symbols.
    let last_quad = if n.is_multiple_of(4) {
        n.saturating_sub(4)
    } else {
        n - n % 4
    };
    let mut out = Vec::with_capacity(n / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut symbols = 0;
    let mut first_padding: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        if i >= last_quad {
            // The last quad: 2-4 symbols, then optional `=` from its third
            // position on.
            if b == b'=' {
                if i - last_quad < 2 {
                    return Err(invalid(i));
                }
                first_padding.get_or_insert(i);
                continue;
            }
            if let Some(p) = first_padding {
                return Err(invalid(p));
            }
            symbols += 1;
        }
        let v = b64url_value(b).ok_or_else(|| invalid(i))?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if n > 0 && symbols < 2 {
        return Err(Base64UrlError::InvalidLength {
            len: last_quad + symbols,
        });
    }
    if acc != 0 {
        return Err(Base64UrlError::NonCanonical {
            offset: last_quad + symbols - 1,
        });
    }
    Ok(out)
}

/// Why a string is not valid base64url (see [`b64url_decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64UrlError {
    /// A character outside the base64url alphabet (or a misplaced `=`) at
    /// octet `offset` of the input.
    InvalidCharacter {
        /// Octet offset in the input string.
        offset: usize,
        /// The offending octet (for non-ASCII input, one octet of its UTF-8 form).
        byte: u8,
    },
    /// The number of base64 symbols cannot encode whole octets (one symbol too
    /// many or too few, typically a truncated value).
    InvalidLength {
        /// Number of symbols seen.
        len: usize,
    },
    /// The last symbol (at `offset`) has non-zero unused bits: the value was
    /// altered or truncated.
    NonCanonical {
        /// Octet offset of the symbol in the input string.
        offset: usize,
    },
    /// `=` padding is present but not of the right length.
    InvalidPadding,
}

impl fmt::Display for Base64UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidCharacter { offset, byte } => match byte {
                b'+' | b'/' => write!(
                    f,
                    "'{}' at offset {offset} belongs to the standard base64 alphabet; \
                     use base64url ('-' instead of '+', '_' instead of '/')",
                    char::from(byte)
                ),
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => write!(
                    f,
                    "whitespace at offset {offset}; base64url values must not contain \
                     spaces or line breaks"
                ),
                b'=' => write!(
                    f,
                    "misplaced '=' at offset {offset}; padding may only end the value"
                ),
                0x21..=0x7e => write!(
                    f,
                    "character '{}' at offset {offset} is not in the base64url alphabet \
                     (A-Z a-z 0-9 - _)",
                    char::from(byte)
                ),
                _ => write!(
                    f,
                    "octet 0x{byte:02x} at offset {offset} is not in the base64url alphabet \
                     (A-Z a-z 0-9 - _)"
                ),
            },
            Self::InvalidLength { len } => write!(
                f,
                "{len} base64url symbols cannot encode whole octets; the value looks truncated"
            ),
            Self::NonCanonical { offset } => write!(
                f,
                "the last base64url symbol (offset {offset}) has non-zero unused bits; \
                 the value looks altered or truncated"
            ),
            Self::InvalidPadding => write!(f, "wrong '=' padding"),
        }
    }
}

impl std::error::Error for Base64UrlError {}

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

    /// Our base64url against the `base64` crate (URL-safe alphabet, no
    /// padding on encode, padding optional on decode), which this crate used
    /// before: the same octets, or the same error, for every string over a
    /// small alphabet that exercises each rule.
    #[test]
    fn b64url_matches_the_base64_crate() {
        use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
        use base64::engine::DecodePaddingMode;
        use base64::Engine as _;
        const REFERENCE: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let reference = |input: &str| {
            REFERENCE.decode(input).map_err(|e| match e {
                base64::DecodeError::InvalidByte(offset, byte) => {
                    Base64UrlError::InvalidCharacter { offset, byte }
                }
                base64::DecodeError::InvalidLength(len) => Base64UrlError::InvalidLength { len },
                base64::DecodeError::InvalidLastSymbol(offset, _) => {
                    Base64UrlError::NonCanonical { offset }
                }
                base64::DecodeError::InvalidPadding => Base64UrlError::InvalidPadding,
            })
        };
        // Every string of up to 6 symbols over an alphabet with zero and
        // non-zero low bits, padding, a standard-alphabet symbol and a space.
        let symbols = ["A", "B", "Q", "w", "_", "=", "+", " "];
        let mut inputs = vec![String::new()];
        let mut layer = vec![String::new()];
        for _ in 0..6 {
            layer = layer
                .iter()
                .flat_map(|p| symbols.iter().map(move |s| format!("{p}{s}")))
                .collect();
            inputs.extend(layer.iter().cloned());
        }
        for input in &inputs {
            assert_eq!(b64url_decode(input), reference(input), "{input:?}");
        }
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert_eq!(b64url_encode(&bytes), REFERENCE.encode(&bytes));
        }
    }

    #[test]
    fn b64url_round_trip_and_padding() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            let enc = b64url_encode(&data);
            assert!(!enc.contains('='));
            assert_eq!(b64url_decode(&enc).unwrap(), data);
            let padded = format!("{enc}{}", "=".repeat((4 - enc.len() % 4) % 4));
            assert_eq!(b64url_decode(&padded).unwrap(), data);
        }
    }

    #[test]
    fn b64url_rejects() {
        let table: &[(&str, Base64UrlError)] = &[
            (
                "ab+d",
                Base64UrlError::InvalidCharacter {
                    offset: 2,
                    byte: b'+',
                },
            ),
            (
                "ab/d",
                Base64UrlError::InvalidCharacter {
                    offset: 2,
                    byte: b'/',
                },
            ),
            (
                "ab d",
                Base64UrlError::InvalidCharacter {
                    offset: 2,
                    byte: b' ',
                },
            ),
            (
                "ab!d",
                Base64UrlError::InvalidCharacter {
                    offset: 2,
                    byte: b'!',
                },
            ),
            ("abcde", Base64UrlError::InvalidLength { len: 5 }),
            ("QR", Base64UrlError::NonCanonical { offset: 1 }),
        ];
        for (input, want) in table {
            assert_eq!(b64url_decode(input), Err(*want), "{input:?}");
            assert!(!want.to_string().is_empty());
        }
        assert!(b64url_decode("QQ===").is_err());
        assert!(b64url_decode("é").is_err());
        assert!(b64url_decode("\nQQ").is_err());
    }

    #[test]
    fn random_keys_differ() {
        let a = random_secret_key().unwrap();
        let b = random_secret_key().unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        let p = a.public_key().to_uncompressed();
        assert_eq!(p[0], 4);
    }
}
