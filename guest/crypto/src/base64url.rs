//! base64url (RFC 4648 §5), the encoding of Web Push keys, JWS and the
//! plugin's ids, on the `base64` crate; secrets (the `auth` secret, the
//! VAPID private key, verification codes) on `base64ct`, whose encoding and
//! decoding take the same time whatever the octets.
//!
//! Contract of both decoders: the URL-safe alphabet only (`A-Z a-z 0-9 -
//! _`), `=` padding optional and at most filling the last quad; the standard
//! alphabet's `+` and `/`, whitespace and any other character are refused,
//! and so is a last symbol with non-zero unused bits, so every accepted
//! string decodes to exactly one octet sequence. The error names the first
//! problem found ([`Base64UrlError`]).

use core::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use base64ct::Encoding as _;
use zeroize::Zeroizing;

/// URL-safe alphabet, no padding on encode, padding optional on decode,
/// non-zero trailing bits refused.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes `bytes` as base64url **without** `=` padding, the form used by
/// Web Push, JWS and JMAP.
#[must_use]
pub fn b64url_encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Decodes base64url, with or without `=` padding (see the module docs).
/// The empty string decodes to no octets.
///
/// # Errors
/// A [`Base64UrlError`] naming the first problem found.
pub fn b64url_decode(input: &str) -> Result<Vec<u8>, Base64UrlError> {
    ENGINE.decode(input).map_err(Base64UrlError::from)
}

/// [`b64url_encode`] for a secret, in constant time (`base64ct`).
#[must_use]
pub fn b64url_encode_secret(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(base64ct::Base64UrlUnpadded::encode_string(bytes))
}

/// [`b64url_decode`] for a secret: a valid input is decoded in constant
/// time (`base64ct`) into memory that is wiped when dropped. Only an input
/// that is refused anyway is decoded again by the `base64` crate, for the
/// specific error.
///
/// # Errors
/// As [`b64url_decode`].
pub fn b64url_decode_secret(input: &str) -> Result<Zeroizing<Vec<u8>>, Base64UrlError> {
    // Padding is public (it depends on the length only): `=` may follow
    // the 2 or 3 symbols of an incomplete last quad and fill it at most.
    let symbols = input.trim_end_matches('=');
    let padding = input.len() - symbols.len();
    let padding_fits = padding == 0 || (symbols.len() % 4 >= 2 && symbols.len() % 4 + padding <= 4);
    let decoded = if padding_fits {
        base64ct::Base64UrlUnpadded::decode_vec(symbols)
    } else {
        Err(base64ct::Error::InvalidEncoding)
    };
    match decoded {
        Ok(bytes) => Ok(Zeroizing::new(bytes)),
        Err(_) => match b64url_decode(input) {
            Err(e) => Err(e),
            // `base64ct` refused what `base64` accepts (the test
            // `the_secret_decoder_agrees_with_the_public_one` finds none).
            Ok(mut bytes) => {
                zeroize::Zeroize::zeroize(&mut bytes);
                Err(Base64UrlError::InvalidPadding)
            }
        },
    }
}

impl From<base64::DecodeError> for Base64UrlError {
    fn from(e: base64::DecodeError) -> Self {
        match e {
            base64::DecodeError::InvalidByte(offset, byte) => {
                Base64UrlError::InvalidCharacter { offset, byte }
            }
            base64::DecodeError::InvalidLength(len) => Base64UrlError::InvalidLength { len },
            base64::DecodeError::InvalidLastSymbol(offset, _) => {
                Base64UrlError::NonCanonical { offset }
            }
            base64::DecodeError::InvalidPadding => Base64UrlError::InvalidPadding,
        }
    }
}

/// Why a string is not valid base64url (see [`b64url_decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret decoder (`base64ct`) and the public one (`base64`) agree
    /// on every string of up to 6 symbols over an alphabet with zero and
    /// non-zero low bits, padding, a standard-alphabet symbol and a space:
    /// the same octets, or the same error.
    #[test]
    fn the_secret_decoder_agrees_with_the_public_one() {
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
            let secret = b64url_decode_secret(input).map(|b| b.to_vec());
            assert_eq!(secret, b64url_decode(input), "{input:?}");
        }
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert_eq!(*b64url_encode_secret(&bytes), b64url_encode(&bytes));
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
}
