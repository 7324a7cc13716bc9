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

/// Receivers: a general RFC 8188 decryptor (several records, any record
/// size, key id and padding) and the RFC 8291 user-agent side on top of it,
/// for clients written in Rust, the demo and tests.
pub mod receiver {
    use super::*;

    /// Why a body did not decrypt. Record numbers start at 0.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum DecryptError {
        /// Shorter than the 21-octet fixed header, or than the header's key id.
        TruncatedHeader,
        /// Record size below 18 (RFC 8188 §2.1).
        RecordSizeTooSmall(u32),
        /// No ciphertext after the header.
        NoRecords,
        /// A record (the last one) is shorter than a tag plus one octet.
        RecordTooShort {
            /// Index of the record, from 0.
            record: usize,
        },
        /// The tag of a record did not verify.
        Authentication {
            /// Index of the record, from 0.
            record: usize,
        },
        /// A record holds only zero octets (no delimiter).
        NoDelimiter {
            /// Index of the record, from 0.
            record: usize,
        },
        /// A delimiter other than 0x01 (non-last) / 0x02 (last).
        WrongDelimiter {
            /// Index of the record, from 0.
            record: usize,
            /// The delimiter octet found.
            delimiter: u8,
        },
        /// Data continues after the record with delimiter 0x02, or the last
        /// record ends with 0x01 (truncated message).
        Truncated,
        /// RFC 8291: the key id is not a 65-octet P-256 public key.
        BadKeyId,
        /// Key import or key derivation failed.
        Crypto(String),
        /// The header is valid RFC 8188 but not what B7 prescribes
        /// (rs = 4096, 65-octet key id, one record, at most 4096 octets).
        NotB7 {
            /// The record size of the header.
            rs: u32,
            /// The key id length of the header.
            idlen: usize,
            /// The whole body length.
            len: usize,
        },
    }

    impl fmt::Display for DecryptError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                DecryptError::TruncatedHeader => f.write_str("body shorter than its header"),
                DecryptError::RecordSizeTooSmall(rs) => write!(f, "record size {rs} is below 18"),
                DecryptError::NoRecords => f.write_str("no records after the header"),
                DecryptError::RecordTooShort { record } => {
                    write!(f, "record {record} is too short")
                }
                DecryptError::Authentication { record } => {
                    write!(f, "record {record} failed authentication")
                }
                DecryptError::NoDelimiter { record } => {
                    write!(f, "record {record} has no delimiter")
                }
                DecryptError::WrongDelimiter { record, delimiter } => {
                    write!(f, "record {record} has delimiter {delimiter:#04x}")
                }
                DecryptError::Truncated => f.write_str("message truncated or extended"),
                DecryptError::BadKeyId => f.write_str("key id is not a P-256 public key"),
                DecryptError::Crypto(m) => write!(f, "key derivation failed: {m}"),
                DecryptError::NotB7 { rs, idlen, len } => {
                    write!(f, "not the B7 shape (rs {rs}, idlen {idlen}, {len} octets)")
                }
            }
        }
    }

    impl std::error::Error for DecryptError {}

    /// Checks the B7 shape of a body we produced: rs = 4096, a 65-octet key
    /// id, a single record and a total of at most 4096 octets. (RFC 8188 does
    /// not authenticate `rs`: a receiver accepts any `rs` that does not move a
    /// record boundary, so only this check notices such a change.)
    pub fn check_b7_shape(body: &[u8]) -> Result<(), DecryptError> {
        let h = parse_header(body)?;
        if h.rs != RECORD_SIZE
            || h.keyid.len() != P256DH_OCTETS
            || h.payload.len() > RECORD_SIZE as usize
            || body.len() > RECORD_SIZE as usize
        {
            return Err(DecryptError::NotB7 {
                rs: h.rs,
                idlen: h.keyid.len(),
                len: body.len(),
            });
        }
        Ok(())
    }

    /// A parsed RFC 8188 header.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Header<'a> {
        /// The 16-octet salt.
        pub salt: &'a [u8],
        /// The record size.
        pub rs: u32,
        /// The key id (the sender's public key in RFC 8291).
        pub keyid: &'a [u8],
        /// The records.
        pub payload: &'a [u8],
    }

    /// Splits a body into header fields and the record data.
    pub fn parse_header(body: &[u8]) -> Result<Header<'_>, DecryptError> {
        if body.len() < 21 {
            return Err(DecryptError::TruncatedHeader);
        }
        let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
        let idlen = usize::from(body[20]);
        if body.len() < 21 + idlen {
            return Err(DecryptError::TruncatedHeader);
        }
        if rs < 18 {
            return Err(DecryptError::RecordSizeTooSmall(rs));
        }
        Ok(Header {
            salt: &body[..16],
            rs,
            keyid: &body[21..21 + idlen],
            payload: &body[21 + idlen..],
        })
    }

    /// RFC 8188 decryption with a given IKM; returns the plaintext and the key id.
    pub fn decrypt_records(ikm: &[u8], body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DecryptError> {
        let h = parse_header(body)?;
        let (_, cek, nonce) =
            derive_content_keys(ikm, h.salt).map_err(|e| DecryptError::Crypto(e.to_string()))?;
        let plaintext = decrypt_payload(&cek, &nonce, h.rs, h.payload)?;
        Ok((plaintext, h.keyid.to_vec()))
    }

    /// Decrypts the records following the header.
    pub fn decrypt_payload(
        cek: &[u8; 16],
        nonce: &[u8; 12],
        rs: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        if payload.is_empty() {
            return Err(DecryptError::NoRecords);
        }
        let rs = rs as usize;
        let cipher = Aes128Gcm::new(&(*cek).into());
        let mut out = Vec::new();
        let mut seen_last = false;
        for (seq, chunk) in payload.chunks(rs).enumerate() {
            if seen_last {
                return Err(DecryptError::Truncated);
            }
            if chunk.len() < TAG_OCTETS + 1 {
                return Err(DecryptError::RecordTooShort { record: seq });
            }
            let mut iv = *nonce;
            for (i, b) in (seq as u128).to_be_bytes()[4..].iter().enumerate() {
                iv[i] ^= b;
            }
            let (ct, tag) = chunk.split_at(chunk.len() - TAG_OCTETS);
            let mut buf = ct.to_vec();
            let tag: [u8; 16] = tag
                .try_into()
                .map_err(|_| DecryptError::RecordTooShort { record: seq })?;
            cipher
                .decrypt_inout_detached(&iv.into(), &[], buf.as_mut_slice().into(), &tag.into())
                .map_err(|_| DecryptError::Authentication { record: seq })?;
            let Some(pos) = buf.iter().rposition(|&b| b != 0) else {
                return Err(DecryptError::NoDelimiter { record: seq });
            };
            let is_final_chunk = seq * rs + chunk.len() == payload.len();
            match buf[pos] {
                0x02 => seen_last = true,
                0x01 if !is_final_chunk => {}
                0x01 => return Err(DecryptError::Truncated),
                d => {
                    return Err(DecryptError::WrongDelimiter {
                        record: seq,
                        delimiter: d,
                    })
                }
            }
            out.extend_from_slice(&buf[..pos]);
        }
        if !seen_last {
            return Err(DecryptError::Truncated);
        }
        Ok(out)
    }

    /// RFC 8291 receiver side: the user agent's private key and auth secret
    /// open a Web Push body (the sender key is taken from the key id).
    pub fn webpush_decrypt(
        ua_private: &[u8; 32],
        auth: &[u8; 16],
        body: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        let h = parse_header(body)?;
        let ua = SecretScalar::from_bytes(ua_private)
            .ok_or_else(|| DecryptError::Crypto("bad ua private key".into()))?;
        let ua_public = ua.public_key().to_uncompressed();
        let as_public: [u8; 65] = h.keyid.try_into().map_err(|_| DecryptError::BadKeyId)?;
        let as_key = PublicPoint::from_uncompressed(&as_public).ok_or(DecryptError::BadKeyId)?;
        let shared = crate::ecdh::shared_secret(&ua, &as_key)
            .map_err(|e| DecryptError::Crypto(e.to_string()))?;
        let salt: [u8; 16] = h
            .salt
            .try_into()
            .map_err(|_| DecryptError::TruncatedHeader)?;
        let d = derive(&shared, auth, &ua_public, &as_public, &salt)
            .map_err(|e| DecryptError::Crypto(e.to_string()))?;
        decrypt_payload(&d.cek, &d.nonce, h.rs, h.payload)
    }
}

#[cfg(test)]
pub(crate) use receiver as testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::{b64url_decode, b64url_encode, keys::parse_receiver_keys};

    fn d(s: &str) -> Vec<u8> {
        b64url_decode(s).unwrap()
    }
    fn arr<const N: usize>(s: &str) -> [u8; N] {
        d(s).try_into().unwrap()
    }

    // RFC 8291 Appendix A.
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const PRK_KEY: &str = "Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k";
    const KEY_INFO: &str = "V2ViUHVzaDogaW5mbwAEJXGyvs3942BVGq8e0PTNNmwRzr5VX4m8t7GGpTM5FzFo7OLr4BhZe9MEebhuPI-OztV3ylkYfpJGmQ22ggCLDgT-M_SrDepxkU21WCP3O1SUj0EwbZIHMtu5pZpTKGSCIA5Zent7wmC6HCJ5mFgJkuk5cwAvMBKiiujwa7t45ewP";
    const IKM: &str = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg";
    const PRK: &str = "09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc";
    const CEK_INFO_B64: &str = "Q29udGVudC1FbmNvZGluZzogYWVzMTI4Z2NtAA";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE_INFO_B64: &str = "Q29udGVudC1FbmNvZGluZzogbm9uY2UA";
    const NONCE: &str = "4h_95klXJ5E_qnoN";
    const HEADER: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const CIPHERTEXT_AND_TAG: &str =
        "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ";
    const BODY: &str = concat!(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    );

    fn rfc_keys() -> ReceiverKeys {
        parse_receiver_keys(UA_PUBLIC, AUTH).unwrap()
    }

    fn rfc_body() -> Vec<u8> {
        encrypt_with(
            PLAINTEXT,
            &rfc_keys(),
            &arr(AS_PRIVATE),
            &arr(SALT),
            MAX_PLAINTEXT_OCTETS,
        )
        .unwrap()
    }

    #[test]
    fn rfc8291_appendix_a_body_byte_for_byte() {
        let body = rfc_body();
        assert_eq!(body.len(), 144);
        assert_eq!(body, d(BODY));
        assert_eq!(encrypted_len(PLAINTEXT.len()), 144);
        assert_eq!(&body[..HEADER_OCTETS], d(HEADER).as_slice());
        assert_eq!(&body[HEADER_OCTETS..], d(CIPHERTEXT_AND_TAG).as_slice());
    }

    #[test]
    fn rfc8291_appendix_a_intermediate_values() {
        let as_key = SecretScalar::from_bytes(&arr::<32>(AS_PRIVATE)).unwrap();
        let as_public = as_key.public_key().to_uncompressed();
        let keys = rfc_keys();
        let shared = crate::ecdh::shared_secret(&as_key, keys.public_key()).unwrap();
        let got = derive(&shared, keys.auth(), keys.p256dh(), &as_public, &arr(SALT)).unwrap();
        let ki = key_info(keys.p256dh(), &as_public);
        let table: [(&str, &[u8], &str); 10] = [
            ("as_public", &as_public, AS_PUBLIC),
            ("ecdh_secret", &got.ecdh_secret, ECDH_SECRET),
            ("PRK_key", &got.prk_key, PRK_KEY),
            ("key_info", &ki, KEY_INFO),
            ("IKM", &got.ikm, IKM),
            ("PRK", &got.prk, PRK),
            ("cek_info", CEK_INFO, CEK_INFO_B64),
            ("CEK", &got.cek, CEK),
            ("nonce_info", NONCE_INFO, NONCE_INFO_B64),
            ("NONCE", &got.nonce, NONCE),
        ];
        for (name, value, want) in table {
            assert_eq!(b64url_encode(value), want, "{name}");
        }
        let mut header = Vec::new();
        write_header(&mut header, &arr(SALT), &as_public);
        assert_eq!(b64url_encode(&header), HEADER);
        // Padded plaintext.
        let mut padded = PLAINTEXT.to_vec();
        padded.push(LAST_RECORD_DELIMITER);
        assert_eq!(
            b64url_encode(&padded),
            "V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24C"
        );
    }

    #[test]
    fn rfc8291_body_decrypts_with_test_receiver() {
        let pt = webpush_decrypt(&arr(UA_PRIVATE), &arr(AUTH), &d(BODY)).unwrap();
        assert_eq!(pt, PLAINTEXT);
        // Through the RFC 8188 core with the RFC's IKM.
        let (pt, keyid) = decrypt_records(&d(IKM), &d(BODY)).unwrap();
        assert_eq!(pt, PLAINTEXT);
        assert_eq!(keyid, d(AS_PUBLIC));
    }

    #[test]
    fn rfc8188_section_3_1_single_record() {
        let body = d("I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg");
        assert_eq!(body.len(), 53);
        let ikm = d("yqdlZ-tYemfogSmv7Ws5PQ");
        let h = parse_header(&body).unwrap();
        assert_eq!(h.rs, 4096);
        assert!(h.keyid.is_empty());
        let (prk, cek, nonce) = derive_content_keys(&ikm, h.salt).unwrap();
        assert_eq!(
            b64url_encode(&prk),
            "zyeH5phsIsgUyd4oiSEIy35x-gIi4aM7y0hCF8mwn9g"
        );
        assert_eq!(b64url_encode(&cek), "_wniytB-ofscZDh4tbSjHw");
        assert_eq!(b64url_encode(&nonce), "Bcs8gkIRKLI8GeI8");
        let (pt, keyid) = decrypt_records(&ikm, &body).unwrap();
        assert_eq!(pt, b"I am the walrus");
        assert!(keyid.is_empty());
    }

    #[test]
    fn rfc8188_section_3_2_multiple_records() {
        let body = d("uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA");
        assert_eq!(body.len(), 73);
        let ikm = d("BO3ZVPxUlnLORbVGMpbT1Q");
        let h = parse_header(&body).unwrap();
        assert_eq!(h.rs, 25);
        assert_eq!(h.keyid, b"a1");
        let (prk, cek, nonce) = derive_content_keys(&ikm, h.salt).unwrap();
        assert_eq!(
            b64url_encode(&prk),
            "mNHRBFh-eOCdAdmmuVtym8Hf44ov7FPsQZ3f4knYjHE"
        );
        assert_eq!(b64url_encode(&cek), "u_eEOTjjVWUVrH82pQNwpw");
        assert_eq!(b64url_encode(&nonce), "VqylG1rdt-mJrNgP");
        let (pt, keyid) = decrypt_records(&ikm, &body).unwrap();
        assert_eq!(pt, b"I am the walrus");
        assert_eq!(keyid, b"a1");
        // Dropping the last record is detected as truncation.
        let cut = &body[..body.len() - 25];
        assert_eq!(decrypt_records(&ikm, cut), Err(DecryptError::Truncated));
        // Swapping the records breaks authentication (nonces differ per record).
        let mut swapped = body[..23].to_vec();
        swapped.extend_from_slice(&body[48..]);
        swapped.extend_from_slice(&body[23..48]);
        assert_eq!(
            decrypt_records(&ikm, &swapped),
            Err(DecryptError::Authentication { record: 0 })
        );
    }

    /// The UA key pair used for random round trips (the RFC's).
    fn ua() -> ([u8; 32], ReceiverKeys) {
        (arr(UA_PRIVATE), rfc_keys())
    }

    #[test]
    fn round_trip_random() {
        let (ua_private, keys) = ua();
        for len in [0usize, 1, 2, 100, 3992, MAX_PLAINTEXT_OCTETS] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let body = encrypt(&pt, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
            assert_eq!(body.len(), encrypted_len(len));
            assert!(body.len() <= 4096);
            check_b7_shape(&body).unwrap();
            let h = parse_header(&body).unwrap();
            assert_eq!(h.keyid[0], 4);
            assert_eq!(
                webpush_decrypt(&ua_private, keys.auth(), &body).unwrap(),
                pt
            );
        }
        // A fresh receiver key pair, too.
        let sk = crate::random_secret_key().unwrap();
        let auth: [u8; 16] = crate::random_array().unwrap();
        let keys = ReceiverKeys::from_bytes(&sk.public_key().to_uncompressed(), &auth).unwrap();
        let body = encrypt(b"{\"@type\":\"StateChange\"}", &keys, 4096).unwrap();
        let sk_bytes: [u8; 32] = sk.to_bytes();
        assert_eq!(
            webpush_decrypt(&sk_bytes, &auth, &body).unwrap(),
            b"{\"@type\":\"StateChange\"}"
        );
        // Wrong auth secret fails.
        assert_eq!(
            webpush_decrypt(&sk_bytes, &[0u8; 16], &body),
            Err(DecryptError::Authentication { record: 0 })
        );
    }

    #[test]
    fn fresh_salt_and_key_per_message() {
        let (_, keys) = ua();
        let a = encrypt(PLAINTEXT, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
        let b = encrypt(PLAINTEXT, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..16], b[..16], "salt reused");
        assert_ne!(a[21..86], b[21..86], "ephemeral key reused");
        assert_ne!(a[86..], b[86..]);
    }

    #[test]
    fn plaintext_limits() {
        let (_, keys) = ua();
        let big = vec![b'x'; MAX_PLAINTEXT_OCTETS + 1];
        assert_eq!(
            encrypt(&big, &keys, MAX_PLAINTEXT_OCTETS),
            Err(EceError::PlaintextTooLong {
                len: 3994,
                max: 3993
            })
        );
        // A larger caller limit is capped at the RFC maximum.
        assert_eq!(
            encrypt(&big, &keys, usize::MAX),
            Err(EceError::PlaintextTooLong {
                len: 3994,
                max: 3993
            })
        );
        assert!(encrypt(&big[..3993], &keys, usize::MAX).is_ok());
        // A configurable lower limit.
        assert_eq!(
            encrypt(&big[..101], &keys, 100),
            Err(EceError::PlaintextTooLong { len: 101, max: 100 })
        );
        assert!(encrypt(&big[..100], &keys, 100).is_ok());
        assert_eq!(
            encrypt(b"x", &keys, 0),
            Err(EceError::PlaintextTooLong { len: 1, max: 0 })
        );
        assert!(encrypt(b"", &keys, 0).is_ok());
        assert!(EceError::PlaintextTooLong { len: 1, max: 0 }
            .to_string()
            .contains("1 octets"));
        // The injection path applies the same limit and rejects bad scalars.
        assert!(matches!(
            encrypt_with(&big, &keys, &arr(AS_PRIVATE), &arr(SALT), 5000),
            Err(EceError::PlaintextTooLong { .. })
        ));
        assert_eq!(
            encrypt_with(b"x", &keys, &[0u8; 32], &arr(SALT), 100),
            Err(EceError::InvalidEphemeralKey)
        );
        assert_eq!(
            encrypt_with(b"x", &keys, &[0xff; 32], &arr(SALT), 100),
            Err(EceError::InvalidEphemeralKey)
        );
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let body = d(BODY);
        let ua_private = arr(UA_PRIVATE);
        let auth = arr(AUTH);
        assert!(webpush_decrypt(&ua_private, &auth, &body).is_ok());
        check_b7_shape(&body).unwrap();
        let mut caught_by_receiver = 0usize;
        let mut caught_by_shape_only = 0usize;
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut t = body.clone();
                t[i] ^= 1 << bit;
                let r = webpush_decrypt(&ua_private, &auth, &t);
                if (16..20).contains(&i) {
                    // rs is not authenticated by RFC 8188: an RFC receiver only
                    // notices values that move the record boundary (here: rs = 0,
                    // from flipping bit 12); the B7 shape check catches all.
                    let rs = u32::from_be_bytes(t[16..20].try_into().unwrap());
                    assert_eq!(r.is_err(), rs < 18, "rs {rs}");
                    assert!(check_b7_shape(&t).is_err(), "rs {rs}");
                    if r.is_err() {
                        caught_by_receiver += 1;
                    } else {
                        caught_by_shape_only += 1;
                    }
                } else {
                    assert!(r.is_err(), "flip of bit {bit} in octet {i} went unnoticed");
                    caught_by_receiver += 1;
                }
            }
        }
        assert_eq!(caught_by_receiver, 144 * 8 - 31);
        assert_eq!(caught_by_shape_only, 31);
        // Truncation and extension are detected too.
        for cut in 0..body.len() {
            assert!(webpush_decrypt(&ua_private, &auth, &body[..cut]).is_err());
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(webpush_decrypt(&ua_private, &auth, &longer).is_err());
    }

    #[test]
    fn decryptor_padding_rules() {
        // Build single records by hand with the RFC 8188 §3.1 keys.
        let ikm = d("yqdlZ-tYemfogSmv7Ws5PQ");
        let salt = d("I1BsxtFttlv3u_Oo94xnmw");
        let (_, cek, nonce) = derive_content_keys(&ikm, &salt).unwrap();
        let seal = |record: &[u8]| {
            let mut body = salt.clone();
            body.extend_from_slice(&4096u32.to_be_bytes());
            body.push(0);
            let mut buf = record.to_vec();
            let tag = Aes128Gcm::new(&cek.into())
                .encrypt_inout_detached(&nonce.into(), &[], buf.as_mut_slice().into())
                .unwrap();
            body.extend_from_slice(&buf);
            body.extend_from_slice(&tag);
            body
        };
        assert_eq!(
            decrypt_records(&ikm, &seal(b"abc\x02\0\0\0")).unwrap().0,
            b"abc"
        );
        assert_eq!(
            decrypt_records(&ikm, &seal(b"\0\0")),
            Err(DecryptError::NoDelimiter { record: 0 })
        );
        assert_eq!(
            decrypt_records(&ikm, &seal(b"abc\x03")),
            Err(DecryptError::WrongDelimiter {
                record: 0,
                delimiter: 3
            })
        );
        assert_eq!(
            decrypt_records(&ikm, &seal(b"abc\x01")),
            Err(DecryptError::Truncated)
        );
    }

    /// A batch encrypts every message with its own injected key and salt:
    /// the RFC 8291 example comes out byte for byte among other receivers,
    /// every other body carries its salt and key id (checked against
    /// `p256`) and opens with its receiver's key through the one-message
    /// ECDH (a separate code path from the batch's); a message too long or
    /// with an invalid scalar fails alone.
    #[test]
    fn a_batch_encrypts_each_message_for_its_own_receiver() {
        use p256::elliptic_curve::sec1::ToSec1Point as _;
        let receivers: Vec<([u8; 32], ReceiverKeys)> = (0..5)
            .map(|i| {
                if i == 2 {
                    (arr(UA_PRIVATE), rfc_keys())
                } else {
                    let sk = crate::random_secret_key().unwrap();
                    let auth: [u8; 16] = crate::random_array().unwrap();
                    let pk = sk.public_key().to_uncompressed();
                    (sk.to_bytes(), ReceiverKeys::from_bytes(&pk, &auth).unwrap())
                }
            })
            .collect();
        let too_long = vec![b'x'; 200];
        let plaintexts: [&[u8]; 5] = [b"", b"{\"a\":1}", PLAINTEXT, &too_long, b"last"];
        let mut secrets: Vec<([u8; 32], [u8; SALT_OCTETS])> = (0..5)
            .map(|_| {
                (
                    crate::random_secret_key().unwrap().to_bytes(),
                    crate::random_array().unwrap(),
                )
            })
            .collect();
        secrets[2] = (arr(AS_PRIVATE), arr(SALT));
        secrets[4].0 = [0u8; 32]; // not a valid scalar
        let messages: Vec<(&[u8], &ReceiverKeys)> = plaintexts
            .iter()
            .zip(&receivers)
            .map(|(pt, (_, keys))| (*pt, keys))
            .collect();
        let batch = encrypt_batch_with(&messages, &secrets, 100);
        assert_eq!(batch.len(), 5);
        assert_eq!(batch[2].as_deref(), Ok(d(BODY).as_slice()));
        assert_eq!(
            batch[3],
            Err(EceError::PlaintextTooLong { len: 200, max: 100 })
        );
        assert_eq!(batch[4], Err(EceError::InvalidEphemeralKey));
        for i in [0, 1, 2] {
            let (sk, keys) = &receivers[i];
            let body = batch[i].as_ref().unwrap();
            let h = parse_header(body).unwrap();
            assert_eq!(h.salt, secrets[i].1, "salt of message {i}");
            let expected = p256::SecretKey::from_bytes(&secrets[i].0.into())
                .unwrap()
                .public_key()
                .to_sec1_point(false);
            assert_eq!(h.keyid, expected.as_bytes(), "key id of message {i}");
            assert_eq!(
                webpush_decrypt(sk, keys.auth(), body).unwrap(),
                plaintexts[i],
                "message {i}"
            );
        }
        assert!(encrypt_batch_with(&[], &[], 100).is_empty());
    }

    /// [`encrypt_batch`] draws a fresh key and salt per message, and
    /// Mozilla's `ece` crate opens every body.
    #[test]
    fn a_random_batch_decrypts_with_mozilla_ece_and_never_repeats_key_or_salt() {
        let (ua_private, keys) = ua();
        let components = ::ece::EcKeyComponents::new(ua_private.to_vec(), keys.p256dh().to_vec());
        let too_long = vec![0xa5u8; MAX_PLAINTEXT_OCTETS + 1];
        let full = vec![0x5au8; MAX_PLAINTEXT_OCTETS];
        let mut plaintexts: Vec<&[u8]> = vec![PLAINTEXT; 16];
        plaintexts[5] = &too_long;
        plaintexts[9] = &full;
        let messages: Vec<(&[u8], &ReceiverKeys)> =
            plaintexts.iter().map(|pt| (*pt, &keys)).collect();
        let batch = encrypt_batch(&messages, MAX_PLAINTEXT_OCTETS);
        let mut salts = std::collections::HashSet::new();
        let mut ephemerals = std::collections::HashSet::new();
        for (i, got) in batch.iter().enumerate() {
            if i == 5 {
                assert_eq!(
                    got,
                    &Err(EceError::PlaintextTooLong {
                        len: 3994,
                        max: 3993
                    })
                );
                continue;
            }
            let body = got.as_ref().unwrap();
            assert_eq!(body.len(), encrypted_len(plaintexts[i].len()));
            check_b7_shape(body).unwrap();
            assert!(salts.insert(body[..16].to_vec()), "salt repeated");
            assert!(
                ephemerals.insert(body[21..86].to_vec()),
                "ephemeral key repeated"
            );
            assert_eq!(
                ::ece::decrypt(&components, keys.auth(), body).unwrap(),
                plaintexts[i]
            );
        }
        assert_eq!(salts.len(), 15);
    }

    /// Mozilla's `ece` crate (OpenSSL backend) opens what we encrypt.
    #[test]
    fn interop_mozilla_ece_decrypts_our_output() {
        let (ua_private, keys) = ua();
        let components = ::ece::EcKeyComponents::new(ua_private.to_vec(), keys.p256dh().to_vec());
        for pt in [&b""[..], PLAINTEXT, &vec![0xa5u8; MAX_PLAINTEXT_OCTETS][..]] {
            let body = encrypt(pt, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
            let got = ::ece::decrypt(&components, keys.auth(), &body).unwrap();
            assert_eq!(got, pt);
        }
        // And the RFC body, to pin the vector against an independent implementation.
        assert_eq!(
            ::ece::decrypt(&components, keys.auth(), &rfc_body()).unwrap(),
            PLAINTEXT
        );
        // And the other direction: our test receiver opens ece's output.
        let body = ::ece::encrypt(keys.p256dh(), keys.auth(), PLAINTEXT).unwrap();
        assert_eq!(
            webpush_decrypt(&ua_private, keys.auth(), &body).unwrap(),
            PLAINTEXT
        );
    }
}
