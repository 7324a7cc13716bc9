//! Receiver keys of a push subscription (RFC 8291 §2, JMAP `keys`).
//!
//! `p256dh` is the user agent's P-256 ECDH public key and `auth` its 16-octet
//! authentication secret, both base64url as produced by
//! `PushSubscription.getKey()` in browsers. Validation happens once, when the
//! subscription is created; the parsed key is kept in [`ReceiverKeys`] so
//! encryption never parses it again.

use core::fmt;

use zeroize::Zeroizing;

use super::{
    b64url_decode, b64url_decode_secret, b64url_encode, b64url_encode_secret, Base64UrlError,
    PublicPoint,
};

/// Length of an uncompressed P-256 point: `0x04 || X (32) || Y (32)`.
pub const P256DH_OCTETS: usize = 65;
/// Length of the Web Push authentication secret (RFC 8291 §3.2).
pub const AUTH_OCTETS: usize = 16;

/// Validated receiver keys: a 65-octet uncompressed P-256 point that lies on
/// the curve and is not the identity, plus a 16-octet authentication secret.
///
/// Only obtainable through [`parse_receiver_keys`] or
/// [`ReceiverKeys::from_bytes`], so holding one proves the keys are usable for
/// [`crate::ece::encrypt`]. `Debug` does not print the auth secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiverKeys {
    p256dh: [u8; P256DH_OCTETS],
    public_key: PublicPoint,
    auth: [u8; AUTH_OCTETS],
}

impl ReceiverKeys {
    /// Validates raw (already decoded) key octets, e.g. as kept in the store.
    ///
    /// # Errors
    /// The same [`KeyError`]s as [`parse_receiver_keys`], except
    /// [`KeyError::NotBase64Url`].
    pub fn from_bytes(p256dh: &[u8], auth: &[u8]) -> Result<Self, KeyError> {
        let (p256dh, public_key) = validate_p256dh(p256dh)?;
        let auth: [u8; AUTH_OCTETS] = auth
            .try_into()
            .map_err(|_| KeyError::AuthWrongLength { len: auth.len() })?;
        Ok(Self {
            p256dh,
            public_key,
            auth,
        })
    }

    /// The 65-octet uncompressed public key (`0x04 || X || Y`).
    #[must_use]
    pub fn p256dh(&self) -> &[u8; P256DH_OCTETS] {
        &self.p256dh
    }

    /// The 16-octet authentication secret.
    #[must_use]
    pub fn auth(&self) -> &[u8; AUTH_OCTETS] {
        &self.auth
    }

    /// The parsed public key (for ECDH).
    #[must_use]
    pub fn public_key(&self) -> &PublicPoint {
        &self.public_key
    }

    /// `p256dh` as unpadded base64url (canonical form of the JMAP property).
    #[must_use]
    pub fn p256dh_base64url(&self) -> String {
        b64url_encode(&self.p256dh)
    }

    /// `auth` as unpadded base64url (canonical form of the JMAP property),
    /// encoded in constant time and wiped when dropped.
    #[must_use]
    pub fn auth_base64url(&self) -> Zeroizing<String> {
        b64url_encode_secret(&self.auth)
    }
}

impl fmt::Debug for ReceiverKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverKeys")
            .field("p256dh", &self.p256dh_base64url())
            .field("auth", &"<redacted>")
            .finish()
    }
}

/// Which member of `keys` an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// `keys.p256dh`.
    P256dh,
    /// `keys.auth`.
    Auth,
}

impl fmt::Display for KeyField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::P256dh => "p256dh",
            Self::Auth => "auth",
        })
    }
}

/// Why receiver keys were rejected. Each variant's `Display` tells the client
/// what to send instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The field is not base64url (standard base64 `+`/`/`, whitespace, other
    /// characters, truncated value).
    NotBase64Url {
        /// The field at fault.
        field: KeyField,
        /// What exactly is wrong.
        error: Base64UrlError,
    },
    /// `p256dh` is a 33-octet compressed point (first octet 0x02 or 0x03).
    CompressedPoint,
    /// `p256dh` looks like an ASN.1 DER structure such as a SubjectPublicKeyInfo
    /// (first octet 0x30).
    SpkiDer {
        /// Decoded length in octets.
        len: usize,
    },
    /// `p256dh` encodes the point at infinity (a single 0x00 octet) or is all
    /// zeros (including `0x04` followed by 64 zero octets).
    Identity,
    /// `p256dh` is 65 octets but does not start with 0x04 (e.g. a hybrid 0x06/0x07
    /// encoding).
    UnsupportedPointFormat {
        /// The first octet found.
        first_octet: u8,
    },
    /// `p256dh` has the uncompressed form but the point is not on P-256 (or a
    /// coordinate is out of range).
    OffCurve,
    /// `p256dh` has a length no P-256 point encoding has.
    WrongLength {
        /// Decoded length in octets.
        len: usize,
    },
    /// `auth` is not exactly 16 octets.
    AuthWrongLength {
        /// Decoded length in octets.
        len: usize,
    },
}

const SEND_UNCOMPRESSED: &str =
    "send the 65-octet uncompressed form as produced by PushManager.subscribe()";

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBase64Url { field, error } => {
                write!(f, "{field} is not base64url: {error}")
            }
            Self::CompressedPoint => write!(
                f,
                "p256dh is a compressed point (33 octets); {SEND_UNCOMPRESSED}"
            ),
            Self::SpkiDer { len } => write!(
                f,
                "p256dh looks like a DER/SubjectPublicKeyInfo structure ({len} octets); \
                 send the raw 65-octet uncompressed point as returned by \
                 PushSubscription.getKey('p256dh')"
            ),
            Self::Identity => write!(
                f,
                "p256dh is the point at infinity or all zeros, not a public key; \
                 {SEND_UNCOMPRESSED}"
            ),
            Self::UnsupportedPointFormat { first_octet } => write!(
                f,
                "p256dh is 65 octets but starts with 0x{first_octet:02x} instead of 0x04; \
                 {SEND_UNCOMPRESSED}"
            ),
            Self::OffCurve => write!(
                f,
                "p256dh is not a point on the P-256 curve (corrupted or not a P-256 key); \
                 {SEND_UNCOMPRESSED}"
            ),
            Self::WrongLength { len } => write!(f, "p256dh is {len} octets; {SEND_UNCOMPRESSED}"),
            Self::AuthWrongLength { len } => write!(
                f,
                "auth is {len} octets; it must be exactly 16 octets as returned by \
                 PushSubscription.getKey('auth')"
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotBase64Url { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Parses and validates the JMAP `keys` members `p256dh` and `auth`.
///
/// Both are base64url with or without `=` padding; the standard alphabet
/// (`+`, `/`) and whitespace are rejected. `p256dh` must decode to exactly 65
/// octets, start with 0x04 and be a point on P-256 other than the identity;
/// `auth` must decode to exactly 16 octets. `p256dh` is checked first.
///
/// # Errors
/// The most specific [`KeyError`] for the first problem found.
pub fn parse_receiver_keys(p256dh: &str, auth: &str) -> Result<ReceiverKeys, KeyError> {
    let p = b64url_decode(p256dh).map_err(|error| KeyError::NotBase64Url {
        field: KeyField::P256dh,
        error,
    })?;
    let (p256dh, public_key) = validate_p256dh(&p)?;
    let a = b64url_decode_secret(auth).map_err(|error| KeyError::NotBase64Url {
        field: KeyField::Auth,
        error,
    })?;
    let auth: [u8; AUTH_OCTETS] = a
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::AuthWrongLength { len: a.len() })?;
    Ok(ReceiverKeys {
        p256dh,
        public_key,
        auth,
    })
}

/// Classifies and validates decoded `p256dh` octets.
fn validate_p256dh(bytes: &[u8]) -> Result<([u8; P256DH_OCTETS], PublicPoint), KeyError> {
    let Some(&first) = bytes.first() else {
        return Err(KeyError::WrongLength { len: 0 });
    };
    if bytes.iter().all(|&b| b == 0)
        || (first == 0x04 && bytes.len() == P256DH_OCTETS && bytes[1..].iter().all(|&b| b == 0))
    {
        return Err(KeyError::Identity);
    }
    if bytes.len() == 33 && (first == 0x02 || first == 0x03) {
        return Err(KeyError::CompressedPoint);
    }
    if first == 0x30 {
        return Err(KeyError::SpkiDer { len: bytes.len() });
    }
    let Ok(raw) = <[u8; P256DH_OCTETS]>::try_from(bytes) else {
        return Err(KeyError::WrongLength { len: bytes.len() });
    };
    if first != 0x04 {
        return Err(KeyError::UnsupportedPointFormat { first_octet: first });
    }
    let key = PublicPoint::from_uncompressed(&raw).ok_or(KeyError::OffCurve)?;
    Ok((raw, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 Appendix A receiver key and auth secret.
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn raw_ua_public() -> Vec<u8> {
        b64url_decode(UA_PUBLIC).unwrap()
    }

    /// A P-256 SubjectPublicKeyInfo header (26 octets) followed by the point.
    fn spki_of(point: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(point);
        der
    }

    fn std_b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn valid_keys_accepted_padded_or_not() {
        let k = parse_receiver_keys(UA_PUBLIC, AUTH).unwrap();
        assert_eq!(k.p256dh().as_slice(), raw_ua_public().as_slice());
        assert_eq!(k.auth().as_slice(), b64url_decode(AUTH).unwrap().as_slice());
        assert_eq!(k.p256dh_base64url(), UA_PUBLIC);
        assert_eq!(*k.auth_base64url(), AUTH);
        // 65 octets -> 87 symbols + 1 '='; 16 octets -> 22 symbols + 2 '='.
        let padded = parse_receiver_keys(&format!("{UA_PUBLIC}="), &format!("{AUTH}==")).unwrap();
        assert_eq!(padded, k);
        let from_raw = ReceiverKeys::from_bytes(k.p256dh(), k.auth()).unwrap();
        assert_eq!(from_raw, k);
        assert!(!format!("{k:?}").contains(AUTH));
    }

    #[test]
    fn invalid_keys_table() {
        let ua = raw_ua_public();
        let compressed = {
            let mut c = vec![0x02 | (ua[64] & 1)];
            c.extend_from_slice(&ua[1..33]);
            c
        };
        let mut off_curve = ua.clone();
        off_curve[64] ^= 0x01;
        let mut zero65 = vec![0u8; 65];
        zero65[0] = 0x04;
        let mut too_long = ua.clone();
        too_long.push(0);
        let mut hybrid = ua.clone();
        hybrid[0] = 0x06;
        // x = p (out of range) with an arbitrary y.
        let mut x_eq_p = vec![0x04];
        x_eq_p.extend_from_slice(&[
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff,
        ]);
        x_eq_p.extend_from_slice(&ua[33..]);

        let e = b64url_encode;
        let nb = |field, offset, byte| KeyError::NotBase64Url {
            field,
            error: Base64UrlError::InvalidCharacter { offset, byte },
        };
        let table: Vec<(String, String, KeyError)> = vec![
            (e(&compressed), AUTH.into(), KeyError::CompressedPoint),
            (e(&off_curve), AUTH.into(), KeyError::OffCurve),
            (e(&x_eq_p), AUTH.into(), KeyError::OffCurve),
            (e(&[0x00]), AUTH.into(), KeyError::Identity),
            (e(&zero65), AUTH.into(), KeyError::Identity),
            (e(&[0u8; 65]), AUTH.into(), KeyError::Identity),
            (e(&spki_of(&ua)), AUTH.into(), KeyError::SpkiDer { len: 91 }),
            (e(&ua[..64]), AUTH.into(), KeyError::WrongLength { len: 64 }),
            (e(&too_long), AUTH.into(), KeyError::WrongLength { len: 66 }),
            (String::new(), AUTH.into(), KeyError::WrongLength { len: 0 }),
            (
                e(&hybrid),
                AUTH.into(),
                KeyError::UnsupportedPointFormat { first_octet: 0x06 },
            ),
            (
                std_b64(&ua),
                AUTH.into(),
                // The vector's first '+' or '/' in standard base64.
                {
                    let s = std_b64(&ua);
                    let (i, c) = s
                        .char_indices()
                        .find(|(_, c)| *c == '+' || *c == '/')
                        .unwrap();
                    nb(KeyField::P256dh, i, c as u8)
                },
            ),
            (
                format!("{} {}", &UA_PUBLIC[..40], &UA_PUBLIC[40..]),
                AUTH.into(),
                nb(KeyField::P256dh, 40, b' '),
            ),
            (
                format!("!{}", &UA_PUBLIC[1..]),
                AUTH.into(),
                nb(KeyField::P256dh, 0, b'!'),
            ),
            (
                UA_PUBLIC.into(),
                format!("{}+{}", &AUTH[..5], &AUTH[6..]),
                nb(KeyField::Auth, 5, b'+'),
            ),
            (
                UA_PUBLIC.into(),
                format!("{}/{}", &AUTH[..5], &AUTH[6..]),
                nb(KeyField::Auth, 5, b'/'),
            ),
            (
                UA_PUBLIC.into(),
                e(&[7u8; 15]),
                KeyError::AuthWrongLength { len: 15 },
            ),
            (
                UA_PUBLIC.into(),
                e(&[7u8; 17]),
                KeyError::AuthWrongLength { len: 17 },
            ),
            (
                UA_PUBLIC.into(),
                String::new(),
                KeyError::AuthWrongLength { len: 0 },
            ),
        ];
        for (p, a, want) in &table {
            let got = parse_receiver_keys(p, a);
            assert_eq!(got.as_ref().err(), Some(want), "p256dh={p:?} auth={a:?}");
            let msg = want.to_string();
            assert!(msg.len() > 20, "{msg}");
        }
        // A compressed point's message is actionable.
        assert_eq!(
            KeyError::CompressedPoint.to_string(),
            "p256dh is a compressed point (33 octets); send the 65-octet uncompressed form \
             as produced by PushManager.subscribe()"
        );
        assert!(KeyError::WrongLength { len: 64 }
            .to_string()
            .contains("64 octets"));
        assert!(KeyError::AuthWrongLength { len: 17 }
            .to_string()
            .contains("17 octets"));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // Every length 0..=100 with a few fill patterns, and every first octet for 65.
        for len in 0..=100usize {
            for fill in [0x00u8, 0x04, 0xff, 0x5a] {
                let mut v = vec![fill; len];
                if let Some(f) = v.first_mut() {
                    *f = 0x04;
                }
                let _ = ReceiverKeys::from_bytes(&v, &[0u8; 16]);
                let _ = ReceiverKeys::from_bytes(&[0u8; 65], &v);
            }
        }
        for first in 0..=255u8 {
            let mut v = raw_ua_public();
            v[0] = first;
            let r = ReceiverKeys::from_bytes(&v, &[0u8; 16]);
            assert_eq!(r.is_ok(), first == 4);
        }
    }
}
