//! RFC 8291 message encryption for Web Push, using the RFC 8188 `aes128gcm`
//! content coding with exactly one record.
//!
//! Body layout (RFC 8188 §2.1, RFC 8291 §4):
//!
//! ```text
//! salt (16) || rs (u32 BE = 4096) || idlen (1 = 65) || keyid (65-octet ephemeral public key)
//! || AES-128-GCM(plaintext || 0x02) || tag (16)
//! ```
//!
//! Every call to [`encrypt`] uses a fresh ephemeral P-256 key and a fresh
//! 16-octet salt. There is deliberately no public way to choose either.

use core::fmt;

use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use sha2::Sha256;

use super::keys::{ReceiverKeys, P256DH_OCTETS};
use super::{random_array, random_secret_key, RandomError};
use super::{EcdhError, PublicPoint, SecretScalar};

/// Largest plaintext that fits one 4096-octet push message (RFC 8291 §4):
/// 4096 − 86 (header) − 16 (tag) − 1 (padding delimiter).
pub const MAX_PLAINTEXT_OCTETS: usize = 3993;
/// Record size written into the header.
pub const RECORD_SIZE: u32 = 4096;
/// Salt length (RFC 8188 §2.1).
pub const SALT_OCTETS: usize = 16;
/// AES-GCM authentication tag length.
pub const TAG_OCTETS: usize = 16;
/// Header length: salt (16) + rs (4) + idlen (1) + keyid (65).
pub const HEADER_OCTETS: usize = SALT_OCTETS + 4 + 1 + P256DH_OCTETS;

/// `info` prefix for combining the ECDH secret with the auth secret (RFC 8291 §3.4).
const WEBPUSH_INFO: &[u8] = b"WebPush: info\0";
/// `info` for the content-encryption key (RFC 8188 §2.2).
const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
/// `info` for the nonce (RFC 8188 §2.3).
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";
/// Padding delimiter of the last (here: only) record.
const LAST_RECORD_DELIMITER: u8 = 0x02;

/// Why a message could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EceError {
    /// The plaintext is longer than the limit (the smaller of the caller's
    /// limit and [`MAX_PLAINTEXT_OCTETS`]); split it or shorten it.
    PlaintextTooLong {
        /// Plaintext length in octets.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// Fresh randomness for the ephemeral key or salt was unavailable.
    Random(RandomError),
    /// An injected ephemeral secret is not a valid P-256 scalar (tests only).
    InvalidEphemeralKey,
    /// The key agreement refused its batch (a point at infinity, which
    /// validated keys never give); every message of the batch fails.
    KeyAgreement(EcdhError),
    /// A primitive failed where it cannot fail for valid inputs (a bug).
    Internal(&'static str),
}

impl fmt::Display for EceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlaintextTooLong { len, max } => write!(
                f,
                "push plaintext is {len} octets, more than the {max} octets that fit one \
                 aes128gcm record"
            ),
            Self::Random(e) => write!(f, "cannot encrypt push: {e}"),
            Self::InvalidEphemeralKey => {
                write!(f, "the ephemeral secret is not a valid P-256 scalar")
            }
            Self::KeyAgreement(e) => write!(f, "cannot encrypt push: {e}"),
            Self::Internal(what) => write!(f, "internal encryption error: {what}"),
        }
    }
}

impl std::error::Error for EceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Random(e) => Some(e),
            Self::KeyAgreement(e) => Some(e),
            _ => None,
        }
    }
}

/// Length of the body [`encrypt`] produces for a plaintext of `plaintext_len`
/// octets: header + plaintext + delimiter + tag (use for `Content-Length`).
#[must_use]
pub const fn encrypted_len(plaintext_len: usize) -> usize {
    HEADER_OCTETS + plaintext_len + 1 + TAG_OCTETS
}

/// Encrypts one push message for `keys` (RFC 8291 with RFC 8188 `aes128gcm`).
///
/// Uses a fresh ephemeral P-256 key and a fresh 16-octet salt, record size
/// 4096, a single record with padding delimiter 0x02 and no further padding,
/// and the 65-octet ephemeral public key as key id. The result is the complete
/// HTTP body (`Content-Encoding: aes128gcm`), [`encrypted_len`] octets long.
///
/// `max_plaintext` lowers the plaintext limit below [`MAX_PLAINTEXT_OCTETS`]
/// (larger values are capped at it).
///
/// # Errors
/// [`EceError::PlaintextTooLong`] when `plaintext.len()` exceeds
/// `min(max_plaintext, MAX_PLAINTEXT_OCTETS)`; [`EceError::Random`] when the
/// random source fails.
pub fn encrypt(
    plaintext: &[u8],
    keys: &ReceiverKeys,
    max_plaintext: usize,
) -> Result<Vec<u8>, EceError> {
    one(encrypt_batch(&[(plaintext, keys)], max_plaintext))
}

/// Encrypts many messages, each as [`encrypt`] does (its own fresh
/// ephemeral key and salt), in groups of 16 that share the field inversions
/// of their key agreements ([`crate::ecdh::key_agreements`]): about 15%
/// less work per message than one message at a time. Result `i` belongs to
/// `messages[i]`.
///
/// # Errors
/// Per message, as for [`encrypt`]: [`EceError::PlaintextTooLong`] or
/// [`EceError::Random`]; the other messages are not affected.
pub fn encrypt_batch(
    messages: &[(&[u8], &ReceiverKeys)],
    max_plaintext: usize,
) -> Vec<Result<Vec<u8>, EceError>> {
    let ephemerals = messages
        .iter()
        .map(|(plaintext, _)| {
            check_plaintext_len(plaintext.len(), max_plaintext)?;
            let secret = random_secret_key().map_err(EceError::Random)?;
            let salt: [u8; SALT_OCTETS] = random_array().map_err(EceError::Random)?;
            Ok((secret, salt))
        })
        .collect();
    encrypt_with_ephemerals(messages, ephemerals, max_plaintext)
}

/// [`encrypt_batch`] with injected ephemeral secrets and salts, so tests can
/// reproduce the RFC 8291 example. Never reachable from the public API.
///
/// # Errors
/// As [`encrypt_batch`], plus [`EceError::InvalidEphemeralKey`] for a
/// scalar that is zero or not below the group order.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn encrypt_batch_with(
    messages: &[(&[u8], &ReceiverKeys)],
    secrets: &[([u8; 32], [u8; SALT_OCTETS])],
    max_plaintext: usize,
) -> Vec<Result<Vec<u8>, EceError>> {
    let ephemerals = messages
        .iter()
        .zip(secrets)
        .map(|((plaintext, _), (secret, salt))| {
            check_plaintext_len(plaintext.len(), max_plaintext)?;
            let secret = SecretScalar::from_bytes(secret).ok_or(EceError::InvalidEphemeralKey)?;
            Ok((secret, *salt))
        })
        .collect();
    encrypt_with_ephemerals(messages, ephemerals, max_plaintext)
}

/// [`encrypt_batch_with`] for one message.
///
/// # Errors
/// As [`encrypt_batch_with`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn encrypt_with(
    plaintext: &[u8],
    keys: &ReceiverKeys,
    ephemeral_secret: &[u8; 32],
    salt: &[u8; SALT_OCTETS],
    max_plaintext: usize,
) -> Result<Vec<u8>, EceError> {
    one(encrypt_batch_with(
        &[(plaintext, keys)],
        &[(*ephemeral_secret, *salt)],
        max_plaintext,
    ))
}

/// The only result of a one-message batch.
fn one(mut results: Vec<Result<Vec<u8>, EceError>>) -> Result<Vec<u8>, EceError> {
    results
        .pop()
        .unwrap_or(Err(EceError::Internal("a batch of one gave no result")))
}

/// An ephemeral secret and salt for one message, or why it has none.
type Ephemeral = Result<(SecretScalar, [u8; SALT_OCTETS]), EceError>;

/// Messages whose key agreements [`encrypt_batch`] computes together: one
/// inversion per group of 16 already saves 30 of every 32, and a group's
/// points and secrets are still in the cache when they are used.
const KEY_AGREEMENT_GROUP: usize = 16;

/// Encrypts `messages[i]` with `ephemerals[i]` (passing its error on),
/// group by group.
fn encrypt_with_ephemerals(
    messages: &[(&[u8], &ReceiverKeys)],
    ephemerals: Vec<Ephemeral>,
    max_plaintext: usize,
) -> Vec<Result<Vec<u8>, EceError>> {
    let mut out = Vec::with_capacity(messages.len());
    for (group, ephemerals) in messages
        .chunks(KEY_AGREEMENT_GROUP)
        .zip(ephemerals.chunks(KEY_AGREEMENT_GROUP))
    {
        let mut pairs: Vec<(&SecretScalar, &PublicPoint)> = Vec::with_capacity(group.len());
        for ((_, keys), ephemeral) in group.iter().zip(ephemerals) {
            if let Ok((secret, _)) = ephemeral {
                pairs.push((secret, keys.public_key()));
            }
        }
        let (mut agreements, refused) = match super::ecdh::key_agreements(&pairs) {
            Ok(agreements) => (agreements.into_iter(), None),
            Err(e) => (Vec::new().into_iter(), Some(e)),
        };
        for ((plaintext, keys), ephemeral) in group.iter().zip(ephemerals) {
            out.push(match ephemeral {
                Ok((_, salt)) => match (refused, agreements.next()) {
                    (Some(e), _) => Err(EceError::KeyAgreement(e)),
                    (None, Some((as_public, shared))) => {
                        seal(plaintext, keys, &as_public, &shared, salt, max_plaintext)
                    }
                    (None, None) => Err(EceError::Internal("no key agreement")),
                },
                Err(e) => Err(*e),
            });
        }
    }
    out
}

/// Whether a plaintext of `len` octets fits one message under
/// `max_plaintext` (capped at [`MAX_PLAINTEXT_OCTETS`]), as [`encrypt`]
/// checks it.
///
/// # Errors
/// [`EceError::PlaintextTooLong`] when it does not.
pub fn check_plaintext_len(len: usize, max_plaintext: usize) -> Result<(), EceError> {
    let max = max_plaintext.min(MAX_PLAINTEXT_OCTETS);
    if len > max {
        Err(EceError::PlaintextTooLong { len, max })
    } else {
        Ok(())
    }
}

/// The body for `plaintext` once the key agreement is done: key schedule,
/// header and the single AES-128-GCM record. Not inlined: one copy of the
/// key schedule is smaller (the component has a size budget) and costs
/// nothing measurable.
#[inline(never)]
fn seal(
    plaintext: &[u8],
    keys: &ReceiverKeys,
    as_public: &[u8; P256DH_OCTETS],
    shared: &[u8; 32],
    salt: &[u8; SALT_OCTETS],
    max_plaintext: usize,
) -> Result<Vec<u8>, EceError> {
    check_plaintext_len(plaintext.len(), max_plaintext)?;
    let d = derive(shared, keys.auth(), keys.p256dh(), as_public, salt)?;

    let mut out = Vec::with_capacity(encrypted_len(plaintext.len()));
    write_header(&mut out, salt, as_public);
    out.extend_from_slice(plaintext);
    out.push(LAST_RECORD_DELIMITER);
    let cipher = Aes128Gcm::new(&d.cek.into());
    let tag = cipher
        .encrypt_inout_detached(&d.nonce.into(), &[], (&mut out[HEADER_OCTETS..]).into())
        .map_err(|_| EceError::Internal("AES-GCM refused the record"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Appends the RFC 8188 header with rs = 4096 and the 65-octet key id.
fn write_header(out: &mut Vec<u8>, salt: &[u8; SALT_OCTETS], keyid: &[u8; P256DH_OCTETS]) {
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(P256DH_OCTETS as u8);
    out.extend_from_slice(keyid);
}

/// Every intermediate value of the RFC 8291 §3.3-3.4 / RFC 8188 §2.2-2.3 key
/// schedule, kept separately so tests can compare them with the RFC.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Derived {
    /// ECDH shared secret (x coordinate).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) ecdh_secret: [u8; 32],
    /// `PRK_key = HKDF-Extract(salt = auth_secret, IKM = ecdh_secret)`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) prk_key: [u8; 32],
    /// `IKM = HKDF-Expand(PRK_key, key_info, 32)`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) ikm: [u8; 32],
    /// `PRK = HKDF-Extract(salt, IKM)`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) prk: [u8; 32],
    /// `CEK = HKDF-Expand(PRK, "Content-Encoding: aes128gcm\0", 16)`.
    pub(crate) cek: [u8; 16],
    /// `NONCE = HKDF-Expand(PRK, "Content-Encoding: nonce\0", 12)`.
    pub(crate) nonce: [u8; 12],
}

/// `key_info = "WebPush: info\0" || ua_public || as_public` (144 octets).
pub(crate) fn key_info(
    ua_public: &[u8; P256DH_OCTETS],
    as_public: &[u8; P256DH_OCTETS],
) -> [u8; 144] {
    let mut info = [0u8; 144];
    info[..14].copy_from_slice(WEBPUSH_INFO);
    info[14..79].copy_from_slice(ua_public);
    info[79..].copy_from_slice(as_public);
    info
}

/// The full key schedule from an ECDH secret (RFC 8291 §3.3-3.4, then
/// RFC 8188 §2.2-2.3).
pub(crate) fn derive(
    ecdh_secret: &[u8; 32],
    auth: &[u8; 16],
    ua_public: &[u8; P256DH_OCTETS],
    as_public: &[u8; P256DH_OCTETS],
    salt: &[u8; SALT_OCTETS],
) -> Result<Derived, EceError> {
    let (prk_key, hk) = Hkdf::<Sha256>::extract(Some(auth), ecdh_secret);
    let mut ikm = [0u8; 32];
    hk.expand(&key_info(ua_public, as_public), &mut ikm)
        .map_err(|_| EceError::Internal("HKDF-Expand of the IKM"))?;
    let (prk, cek, nonce) = derive_content_keys(&ikm, salt)?;
    Ok(Derived {
        ecdh_secret: *ecdh_secret,
        prk_key: prk_key.into(),
        ikm,
        prk,
        cek,
        nonce,
    })
}

/// RFC 8188 §2.2-2.3 output: `(PRK, CEK, NONCE)`.
pub(crate) type ContentKeys = ([u8; 32], [u8; 16], [u8; 12]);

/// RFC 8188 §2.2-2.3: `(PRK, CEK, NONCE)` from any input keying material.
pub(crate) fn derive_content_keys(ikm: &[u8], salt: &[u8]) -> Result<ContentKeys, EceError> {
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut cek = [0u8; 16];
    hk.expand(CEK_INFO, &mut cek)
        .map_err(|_| EceError::Internal("HKDF-Expand of the CEK"))?;
    let mut nonce = [0u8; 12];
    hk.expand(NONCE_INFO, &mut nonce)
        .map_err(|_| EceError::Internal("HKDF-Expand of the nonce"))?;
    Ok((prk.into(), cek, nonce))
}

pub mod receiver;

#[cfg(test)]
pub(crate) use receiver as testing;

#[cfg(test)]
mod tests;
