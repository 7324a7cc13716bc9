//! Receivers: a general RFC 8188 decryptor (several records, any record
//! size, key id and padding) and the RFC 8291 user-agent side on top of it,
//! for clients written in Rust, the demo and tests.

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
