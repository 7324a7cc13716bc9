//! VAPID (RFC 8292) application-server identification and the RFC 9749
//! `applicationServerKey`.
//!
//! A [`VapidKey`] is a P-256 signing key, distinct from any encryption key.
//! A [`VapidSigner`] turns it into the `Authorization` header value of a push:
//!
//! ```text
//! vapid t=<JWT>, k=<base64url 65-octet uncompressed public key>
//! ```
//!
//! The JWT header is exactly `{"typ":"JWT","alg":"ES256"}`, the claims are
//! `{"aud":<origin of the push URL>,"exp":<now + lifetime>,"sub":<contact>}`
//! and the signature is the 64-octet raw `r || s` (JWS), computed
//! deterministically (RFC 6979).
//!
//! Everything that touches the long-lived VAPID private key goes through
//! the `p256` crate (RustCrypto): key import and range check
//! (`SigningKey::from_slice`), the public key, and the ES256 signature
//! (`p256::ecdsa`, RFC 6979 nonces). The key is zeroized on drop.

use core::fmt;

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};

use super::{b64url_decode_secret, b64url_encode, b64url_encode_secret, random_array};
use super::{Base64UrlError, RandomError};

/// Default token lifetime: 12 hours.
pub const DEFAULT_LIFETIME_SECS: u32 = 12 * 3600;
/// Longest token lifetime RFC 8292 §2 allows: 24 hours.
pub const MAX_LIFETIME_SECS: u32 = 24 * 3600;
/// A cached token is re-signed once it is this close to its `exp` (1 hour;
/// half the lifetime when the lifetime is shorter than 2 hours).
pub const RESIGN_BEFORE_EXP_SECS: u32 = 3600;
/// At most this many audiences keep a cached token.
const CACHE_CAPACITY: usize = 256;
/// Longest accepted contact URI, in octets.
const MAX_CONTACT_OCTETS: usize = 1024;

/// base64url of `{"typ":"JWT","alg":"ES256"}`.
const JWT_HEADER_B64: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9";

/// Why a URL has no usable origin: the one URL parser's error
/// ([`crate::addr::parse_http_url`]).
pub use crate::addr::UrlSyntaxError as UrlError;

/// Why a VAPID key, signer or header could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VapidError {
    /// The random source failed while generating a key.
    Random(RandomError),
    /// A serialized key is not base64url.
    KeyNotBase64Url(Base64UrlError),
    /// A serialized key is not 32 octets.
    KeyWrongLength {
        /// Decoded length in octets.
        len: usize,
    },
    /// A serialized key is zero or not below the P-256 group order.
    KeyOutOfRange,
    /// The push URL has no usable origin for the `aud` claim.
    InvalidPushUrl(UrlError),
    /// The contact is not a valid `mailto:` or `https:` URI.
    InvalidContact(&'static str),
    /// The `https:` contact URL is malformed.
    InvalidContactUrl(UrlError),
    /// The contact's host is `localhost`, `*.local` or `*.invalid`, which push
    /// services (Apple's) reject; allowed only in test mode.
    TestContact {
        /// The offending host.
        host: String,
    },
    /// A primitive failed where it cannot fail for valid inputs (a bug).
    Internal(&'static str),
}

impl fmt::Display for VapidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random(e) => write!(f, "cannot generate a VAPID key: {e}"),
            Self::KeyNotBase64Url(e) => write!(f, "the VAPID private key is not base64url: {e}"),
            Self::KeyWrongLength { len } => write!(
                f,
                "the VAPID private key is {len} octets; it must be the raw 32-octet P-256 \
                 scalar, base64url"
            ),
            Self::KeyOutOfRange => write!(
                f,
                "the VAPID private key is not a valid P-256 scalar (zero or not below the \
                 group order)"
            ),
            Self::InvalidPushUrl(e) => write!(f, "invalid push URL: {e}"),
            Self::InvalidContact(why) => write!(
                f,
                "invalid VAPID contact: {why}; use mailto:admin@example.com or an https: URL"
            ),
            Self::InvalidContactUrl(e) => write!(f, "invalid VAPID contact URL: {e}"),
            Self::TestContact { host } => write!(
                f,
                "the VAPID contact uses the host '{host}'; push services (Apple's) reject \
                 localhost, .local and .invalid contacts. Configure a real address \
                 (allowed only in test mode)"
            ),
            Self::Internal(what) => write!(f, "internal VAPID error: {what}"),
        }
    }
}

impl std::error::Error for VapidError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Random(e) => Some(e),
            Self::KeyNotBase64Url(e) => Some(e),
            Self::InvalidPushUrl(e) | Self::InvalidContactUrl(e) => Some(e),
            _ => None,
        }
    }
}

/// A VAPID signing key (P-256 ECDSA) with its public key precomputed.
///
/// The stable serialized form is [`VapidKey::to_base64url`]: base64url of the
/// raw 32-octet secret scalar. `Debug` prints only the public key.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    public: [u8; 65],
}

impl PartialEq for VapidKey {
    /// Keys are equal when their public keys are (the public key determines
    /// the secret scalar, as `k ↦ k·G` is one-to-one on `[1, n-1]`).
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for VapidKey {}

impl VapidKey {
    /// Generates a fresh random key.
    ///
    /// # Errors
    /// [`VapidError::Random`] when the random source fails.
    pub fn generate() -> Result<Self, VapidError> {
        // Rejection sampling: a draw outside [1, n-1] (probability about
        // 2^-32) is drawn again; eight failures mean a broken source.
        for _ in 0..super::SCALAR_ATTEMPTS {
            let bytes = zeroize::Zeroizing::new(random_array::<32>().map_err(VapidError::Random)?);
            if let Ok(signing) = SigningKey::from_slice(bytes.as_slice()) {
                return Ok(Self::with_public(signing));
            }
        }
        Err(VapidError::Random(RandomError::BrokenSource))
    }

    fn with_public(signing: SigningKey) -> Self {
        let point = signing.verifying_key().to_sec1_point(false);
        let mut public = [0u8; 65];
        public.copy_from_slice(point.as_bytes());
        Self { signing, public }
    }

    /// Restores a key from [`VapidKey::to_base64url`] output (base64url of the
    /// 32-octet big-endian scalar, `=` padding optional).
    ///
    /// # Errors
    /// [`VapidError::KeyNotBase64Url`], [`VapidError::KeyWrongLength`] or
    /// [`VapidError::KeyOutOfRange`].
    pub fn from_base64url(encoded: &str) -> Result<Self, VapidError> {
        let raw = b64url_decode_secret(encoded).map_err(VapidError::KeyNotBase64Url)?;
        if raw.len() != 32 {
            return Err(VapidError::KeyWrongLength { len: raw.len() });
        }
        let signing = SigningKey::from_slice(&raw).map_err(|_| VapidError::KeyOutOfRange)?;
        Ok(Self::with_public(signing))
    }

    /// The stable serialized form: base64url (no padding) of the raw 32-octet
    /// secret scalar, encoded in constant time. Treat it as a secret.
    #[must_use]
    pub fn to_base64url(&self) -> String {
        let bytes = zeroize::Zeroizing::new(self.signing.to_bytes());
        b64url_encode_secret(bytes.as_slice()).as_str().to_owned()
    }

    /// The 65-octet uncompressed public key (`0x04 || X || Y`).
    #[must_use]
    pub fn public_key_bytes(&self) -> &[u8; 65] {
        &self.public
    }

    /// base64url (no padding) of the 65-octet uncompressed public key: the
    /// `k=` parameter and the RFC 9749 `applicationServerKey`.
    #[must_use]
    pub fn public_key_base64url(&self) -> String {
        b64url_encode(&self.public)
    }
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key_base64url())
            .finish_non_exhaustive()
    }
}

/// The `aud` claim for a push URL: its origin `scheme://host[:port]`.
///
/// The URL is read by the one URL parser of guest and host
/// ([`crate::addr::parse_http_url`], the `url` crate): the scheme and host
/// are lower-cased, an international host name becomes punycode, an IPv6
/// literal stays in brackets (in canonical RFC 5952 form), the port is kept
/// only when it is not the scheme's default (443 for https, 80 for http),
/// and path, query and fragment are dropped.
///
/// # Errors
/// [`VapidError::InvalidPushUrl`] for a non-http(s) scheme, user
/// information, a missing or malformed host or port, or whitespace, control
/// characters or a backslash.
pub fn audience(push_url: &str) -> Result<String, VapidError> {
    crate::addr::parse_http_url(push_url)
        .map(|u| u.origin())
        .map_err(VapidError::InvalidPushUrl)
}

/// True for hosts push services refuse in a contact: `localhost`, and names
/// ending in `.localhost`, `.local` or `.invalid`.
fn is_test_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || h == "local"
        || h == "invalid"
        || h.ends_with(".localhost")
        || h.ends_with(".local")
        || h.ends_with(".invalid")
}

/// Validates a VAPID contact and returns its host.
fn contact_host(contact: &str) -> Result<String, VapidError> {
    if contact.len() > MAX_CONTACT_OCTETS {
        return Err(VapidError::InvalidContact("longer than 1024 octets"));
    }
    if contact.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(VapidError::InvalidContact(
            "contains whitespace, control or non-ASCII characters",
        ));
    }
    let Some((scheme, rest)) = contact.split_once(':') else {
        return Err(VapidError::InvalidContact("no mailto: or https: scheme"));
    };
    if scheme.eq_ignore_ascii_case("mailto") {
        let address = rest.split('?').next().unwrap_or_default();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(VapidError::InvalidContact("the mailto: address has no '@'"));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(VapidError::InvalidContact(
                "the mailto: address needs a local part and a domain",
            ));
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            return Err(VapidError::InvalidContact(
                "the mailto: domain is not a valid host name",
            ));
        }
        Ok(domain.to_ascii_lowercase())
    } else if scheme.eq_ignore_ascii_case("https") {
        let url = crate::addr::parse_http_url(contact).map_err(VapidError::InvalidContactUrl)?;
        if url.scheme != "https" {
            return Err(VapidError::InvalidContactUrl(UrlError::UnsupportedScheme(
                url.scheme,
            )));
        }
        Ok(url.host())
    } else {
        Err(VapidError::InvalidContact(
            "the scheme must be mailto: or https:",
        ))
    }
}

/// A cached `Authorization` value for one audience.
#[derive(Debug, Clone)]
struct CachedToken {
    exp: u64,
    header: String,
}

/// Signs VAPID tokens with one key and contact, caching one token per
/// audience (push service origin) until [`RESIGN_BEFORE_EXP_SECS`] before its
/// expiry.
#[derive(Debug, Clone)]
pub struct VapidSigner {
    key: VapidKey,
    contact: String,
    lifetime_secs: u32,
    /// Cached tokens by audience, sorted by audience (binary search; a
    /// sorted `Vec` instead of a `HashMap` spares the component the hash
    /// table and SipHash code).
    cache: Vec<(String, CachedToken)>,
}

impl VapidSigner {
    /// Creates a signer.
    ///
    /// `contact` (the `sub` claim) must be a `mailto:` address or an `https:`
    /// URL. Its host must not be `localhost` or end in `.local`/`.invalid`
    /// unless `allow_test_contact` is true (test mode). `lifetime_secs` is the
    /// token lifetime: 0 means [`DEFAULT_LIFETIME_SECS`] (12 h), values above
    /// [`MAX_LIFETIME_SECS`] (24 h) are clamped to it.
    ///
    /// # Errors
    /// [`VapidError::InvalidContact`], [`VapidError::InvalidContactUrl`] or
    /// [`VapidError::TestContact`].
    pub fn new(
        key: VapidKey,
        contact: &str,
        lifetime_secs: u32,
        allow_test_contact: bool,
    ) -> Result<Self, VapidError> {
        let host = contact_host(contact)?;
        if !allow_test_contact && is_test_host(&host) {
            return Err(VapidError::TestContact { host });
        }
        let lifetime_secs = match lifetime_secs {
            0 => DEFAULT_LIFETIME_SECS,
            n => n.min(MAX_LIFETIME_SECS),
        };
        Ok(Self {
            key,
            contact: contact.to_owned(),
            lifetime_secs,
            cache: Vec::new(),
        })
    }

    /// The signing key.
    #[must_use]
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The contact URI used as `sub`.
    #[must_use]
    pub fn contact(&self) -> &str {
        &self.contact
    }

    /// The effective token lifetime in seconds (after defaulting and clamping).
    #[must_use]
    pub fn lifetime_secs(&self) -> u32 {
        self.lifetime_secs
    }

    /// Seconds before `exp` at which a cached token is replaced.
    fn resign_margin(&self) -> u64 {
        u64::from(RESIGN_BEFORE_EXP_SECS.min(self.lifetime_secs / 2))
    }

    /// The `Authorization` header value for a push to `push_url` at
    /// `now_unix_secs`: `vapid t=<JWT>, k=<public key>`.
    ///
    /// The token for the URL's origin is reused while it has more than
    /// [`RESIGN_BEFORE_EXP_SECS`] left (and was not issued in the future, in
    /// case the clock went back); otherwise a new one with
    /// `exp = now + lifetime` is signed and cached.
    ///
    /// # Errors
    /// [`VapidError::InvalidPushUrl`] when the URL has no usable origin.
    pub fn authorization(
        &mut self,
        push_url: &str,
        now_unix_secs: u64,
    ) -> Result<String, VapidError> {
        let aud = audience(push_url)?;
        let lifetime = u64::from(self.lifetime_secs);
        let margin = self.resign_margin();
        let usable = |t: &CachedToken| {
            t.exp > now_unix_secs.saturating_add(margin)
                && t.exp <= now_unix_secs.saturating_add(lifetime)
        };
        let find = |cache: &[(String, CachedToken)]| {
            cache.binary_search_by(|(k, _)| k.as_str().cmp(aud.as_str()))
        };
        if let Ok(i) = find(&self.cache) {
            if usable(&self.cache[i].1) {
                return Ok(self.cache[i].1.header.clone());
            }
        }
        let exp = now_unix_secs.saturating_add(lifetime);
        let header = self.sign(&aud, exp)?;
        let token = CachedToken {
            exp,
            header: header.clone(),
        };
        if let Ok(i) = find(&self.cache) {
            self.cache[i].1 = token;
            return Ok(header);
        }
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.retain(|(_, t)| usable(t));
            if self.cache.len() >= CACHE_CAPACITY {
                let oldest = (0..self.cache.len()).min_by_key(|&i| self.cache[i].1.exp);
                if let Some(i) = oldest {
                    self.cache.remove(i);
                }
            }
        }
        match find(&self.cache) {
            Ok(i) => self.cache[i].1 = token,
            Err(i) => self.cache.insert(i, (aud, token)),
        }
        Ok(header)
    }

    /// Signs a fresh token and formats the header value.
    fn sign(&self, aud: &str, exp: u64) -> Result<String, VapidError> {
        /// JWT claims (RFC 8292 §2), in the order RFC 8292 shows them.
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: u64,
            sub: &'a str,
        }
        let claims = serde_json::to_string(&Claims {
            aud,
            exp,
            sub: &self.contact,
        })
        .map_err(|_| VapidError::Internal("the JWT claims did not serialize"))?;
        let mut jwt = String::with_capacity(JWT_HEADER_B64.len() + claims.len() * 4 / 3 + 92);
        jwt.push_str(JWT_HEADER_B64);
        jwt.push('.');
        jwt.push_str(&b64url_encode(claims.as_bytes()));
        let signature: Signature = self.key.signing.sign(jwt.as_bytes());
        jwt.push('.');
        jwt.push_str(&b64url_encode(&signature.to_bytes()));
        Ok(format!(
            "vapid t={jwt}, k={}",
            self.key.public_key_base64url()
        ))
    }
}

/// Test-side verification of `vapid t=..., k=...` header values. Other
/// modules' tests may use it to check the pushes they build.
#[cfg(test)]
pub(crate) mod testing {
    use super::super::b64url_decode;
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::VerifyingKey;

    /// A verified VAPID header.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct VerifiedVapid {
        /// The decoded JWT header JSON, exactly as sent.
        pub(crate) header_json: String,
        /// The decoded claims JSON, exactly as sent.
        pub(crate) claims_json: String,
        pub(crate) aud: String,
        pub(crate) exp: u64,
        pub(crate) sub: String,
        /// The `k` parameter, base64url as sent.
        pub(crate) k: String,
    }

    /// Parses `vapid t=<JWT>, k=<key>`, checks the ES256 signature with `k`
    /// and decodes the claims.
    pub(crate) fn verify_authorization(value: &str) -> Result<VerifiedVapid, String> {
        let (scheme, params) = value.split_once(' ').ok_or("no scheme")?;
        if !scheme.eq_ignore_ascii_case("vapid") {
            return Err(format!("scheme {scheme}"));
        }
        let (mut t, mut k) = (None, None);
        for param in params.split(',') {
            let (name, v) = param.trim().split_once('=').ok_or("param without '='")?;
            match name {
                "t" => t = Some(v),
                "k" => k = Some(v),
                other => return Err(format!("unknown parameter {other}")),
            }
        }
        let (t, k) = (t.ok_or("no t")?, k.ok_or("no k")?);
        let parts: Vec<&str> = t.split('.').collect();
        let [h, c, s] = parts[..] else {
            return Err("JWT is not three parts".into());
        };
        let header_json = String::from_utf8(b64url_decode(h).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        // serde_json (a dev-dependency) parses independently of crate::json.
        let header: serde_json::Value =
            serde_json::from_str(&header_json).map_err(|e| e.to_string())?;
        if header != serde_json::json!({"typ": "JWT", "alg": "ES256"}) {
            return Err(format!("JWT header {header_json}"));
        }
        let key_bytes = b64url_decode(k).map_err(|e| e.to_string())?;
        if key_bytes.len() != 65 || key_bytes[0] != 4 {
            return Err("k is not a 65-octet uncompressed point".into());
        }
        let key = VerifyingKey::from_sec1_bytes(&key_bytes).map_err(|e| e.to_string())?;
        let sig_bytes = b64url_decode(s).map_err(|e| e.to_string())?;
        if sig_bytes.len() != 64 {
            return Err(format!("signature is {} octets, not 64", sig_bytes.len()));
        }
        let sig = p256::ecdsa::Signature::from_slice(&sig_bytes).map_err(|e| e.to_string())?;
        let signing_input = &t[..h.len() + 1 + c.len()];
        key.verify(signing_input.as_bytes(), &sig)
            .map_err(|_| "bad signature".to_string())?;
        let claims_json = String::from_utf8(b64url_decode(c).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let claims: serde_json::Value =
            serde_json::from_str(&claims_json).map_err(|e| e.to_string())?;
        let obj = claims.as_object().ok_or("claims not an object")?;
        if obj.len() != 3 {
            return Err(format!("unexpected claims {claims_json}"));
        }
        Ok(VerifiedVapid {
            aud: obj["aud"].as_str().ok_or("aud")?.to_owned(),
            exp: obj["exp"].as_u64().ok_or("exp")?,
            sub: obj["sub"].as_str().ok_or("sub")?.to_owned(),
            header_json,
            claims_json,
            k: k.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::crypto::b64url_decode;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn rfc8292_example_token_verifies() {
        let header = "vapid t=eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA, k=BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs";
        let v = verify_authorization(header).unwrap();
        assert_eq!(v.header_json, r#"{"typ":"JWT","alg":"ES256"}"#);
        assert_eq!(v.aud, "https://push.example.net");
        assert_eq!(v.exp, 1_453_523_768);
        assert_eq!(v.sub, "mailto:push@example.com");
        // JWK x and y are the coordinates of k.
        let k = b64url_decode(&v.k).unwrap();
        assert_eq!(
            b64url_encode(&k[1..33]),
            "DUfHPKLVFQzVvnCPGyfucbECzPDa7rWbXriLcysAjEc"
        );
        assert_eq!(
            b64url_encode(&k[33..]),
            "F6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
        );
        // A changed claim or signature no longer verifies.
        let tampered = header.replace("eyJhdWQiOiJodHRwczovL3B1c2g", "eyJhdWQiOiJodHRwczovL3B1c2k");
        assert!(verify_authorization(&tampered).is_err());
        let tampered = header.replace("i3CYb7t4", "i3CYb7t5");
        assert!(verify_authorization(&tampered).is_err());
        // Our constant header is the RFC's.
        assert_eq!(
            b64url_encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            JWT_HEADER_B64
        );
    }

    fn signer() -> VapidSigner {
        VapidSigner::new(
            VapidKey::generate().unwrap(),
            "mailto:push@example.com",
            0,
            false,
        )
        .unwrap()
    }

    #[test]
    fn signed_tokens_verify_with_exact_claims() {
        let mut s = signer();
        let value = s
            .authorization(
                "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV",
                NOW,
            )
            .unwrap();
        assert!(value.starts_with("vapid t=eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9."));
        let v = verify_authorization(&value).unwrap();
        assert_eq!(v.header_json, r#"{"typ":"JWT","alg":"ES256"}"#);
        assert_eq!(
            v.claims_json,
            format!(
                r#"{{"aud":"https://push.example.net","exp":{},"sub":"mailto:push@example.com"}}"#,
                NOW + 43_200
            )
        );
        assert_eq!(v.k, s.key().public_key_base64url());
        assert!(value.ends_with(&format!(", k={}", v.k)));
        // A token signed by another key does not verify under this k.
        let other = signer()
            .authorization("https://push.example.net/x", NOW)
            .unwrap();
        let (t_other, _) = other.split_once(", k=").unwrap();
        let forged = format!("{t_other}, k={}", v.k);
        assert!(verify_authorization(&forged).is_err());
    }

    #[test]
    fn audience_table() {
        let ok: &[(&str, &str)] = &[
            (
                "https://push.example.net/push/abc",
                "https://push.example.net",
            ),
            ("https://push.example.net:443/p", "https://push.example.net"),
            (
                "https://push.example.net:8443/p",
                "https://push.example.net:8443",
            ),
            ("http://push.example.net:80/p", "http://push.example.net"),
            (
                "http://push.example.net:8080",
                "http://push.example.net:8080",
            ),
            (
                "http://push.example.net:443/",
                "http://push.example.net:443",
            ),
            (
                "https://push.example.net:80/",
                "https://push.example.net:80",
            ),
            (
                "https://push.example.net/a/b?c=d#e",
                "https://push.example.net",
            ),
            ("https://push.example.net?x=1", "https://push.example.net"),
            ("https://push.example.net#frag", "https://push.example.net"),
            ("https://push.example.net", "https://push.example.net"),
            ("HTTPS://Push.EXAMPLE.Net/A", "https://push.example.net"),
            ("https://[2001:DB8::1]/p", "https://[2001:db8::1]"),
            (
                "https://[2001:db8:0:0:0:0:0:1]:8443/p",
                "https://[2001:db8::1]:8443",
            ),
            ("https://[::1]:443/", "https://[::1]"),
            ("https://192.0.2.1:443/", "https://192.0.2.1"),
            (
                "https://fcm.googleapis.com/fcm/send/abc:def",
                "https://fcm.googleapis.com",
            ),
            ("https://push.example.net:/p", "https://push.example.net"),
            // International names in punycode, as the host connects to them.
            (
                "https://püsh.example.net/",
                "https://xn--psh-hoa.example.net",
            ),
            (
                "https://push.example.net:0443/p",
                "https://push.example.net",
            ),
        ];
        for (url, want) in ok {
            assert_eq!(audience(url).as_deref(), Ok(*want), "{url}");
        }
        let bad: &[(&str, UrlError)] = &[
            ("https://user@push.example.net/", UrlError::Userinfo),
            ("https://user:pw@push.example.net/", UrlError::Userinfo),
            (
                "ftp://push.example.net/",
                UrlError::UnsupportedScheme("ftp".into()),
            ),
            ("mailto:a@b.c", UrlError::UnsupportedScheme("mailto".into())),
            ("push.example.net/x", UrlError::NotAbsolute),
            ("//push.example.net/x", UrlError::NotAbsolute),
            ("", UrlError::NotAbsolute),
            ("https:///x", UrlError::MissingHost),
            ("https://", UrlError::MissingHost),
            ("https://:443/", UrlError::MissingHost),
            ("https://push.example.net:65536/", UrlError::InvalidPort),
            ("https://push.example.net:12a/", UrlError::InvalidPort),
            ("https://push.example.net:1:2/", UrlError::InvalidPort),
            ("https://push.example.net:-1/", UrlError::InvalidPort),
            ("https://[2001:db8::1/", UrlError::InvalidHost),
            ("https://[not-v6]/", UrlError::InvalidHost),
            ("https://[::1]x/", UrlError::InvalidHost),
            ("https://[fe80::1%25eth0]/", UrlError::InvalidHost),
            ("https://push%2eexample.net/", UrlError::InvalidHost),
            (
                "https://push.example.net\\@evil/",
                UrlError::InvalidCharacters,
            ),
            (
                "https://push.example.net\\evil/",
                UrlError::InvalidCharacters,
            ),
            ("https://push.exa mple.net/", UrlError::InvalidCharacters),
            (" https://push.example.net/", UrlError::InvalidCharacters),
            ("https://push.example.net/\n", UrlError::InvalidCharacters),
        ];
        for (url, want) in bad {
            assert_eq!(
                audience(url),
                Err(VapidError::InvalidPushUrl(want.clone())),
                "{url}"
            );
        }
    }

    /// The header is a known answer for a fixed key, contact, audience and
    /// time: two signers (no shared cache) give byte-identical values, and
    /// the signature is the RFC 6979 one `p256` computes over the JWS
    /// signing input `header.claims`.
    #[test]
    fn authorization_is_deterministic_and_signed_over_the_jws_input() {
        let key = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
        let make = || {
            VapidSigner::new(
                VapidKey::from_base64url(key).unwrap(),
                "mailto:push@example.com",
                0,
                false,
            )
            .unwrap()
        };
        let url = "https://push.example.net/push/abc";
        let a = make().authorization(url, NOW).unwrap();
        let b = make().authorization(url, NOW).unwrap();
        assert_eq!(a, b);
        let jwt = a
            .strip_prefix("vapid t=")
            .and_then(|r| r.split_once(", k="))
            .map(|(t, _)| t)
            .unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let expected: Signature = VapidKey::from_base64url(key)
            .unwrap()
            .signing
            .sign(input.as_bytes());
        assert_eq!(b64url_decode(sig).unwrap(), expected.to_bytes().to_vec());
    }

    #[test]
    fn token_cached_per_audience_and_resigned_near_expiry() {
        let mut s = signer();
        let url = "https://push.example.net/a";
        let first = s.authorization(url, NOW).unwrap();
        let exp = verify_authorization(&first).unwrap().exp;
        assert_eq!(exp, NOW + 43_200);
        // Same origin, other path: the same token.
        assert_eq!(
            s.authorization("https://push.example.net/b", NOW + 10)
                .unwrap(),
            first
        );
        // Still reused just over an hour before exp.
        assert_eq!(s.authorization(url, exp - 3601).unwrap(), first);
        // Other origin: other token.
        let other = s
            .authorization("https://push.other.example/a", NOW)
            .unwrap();
        assert_ne!(other, first);
        assert_eq!(
            verify_authorization(&other).unwrap().aud,
            "https://push.other.example"
        );
        // Within an hour of exp: re-signed.
        let second = s.authorization(url, exp - 3600).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            verify_authorization(&second).unwrap().exp,
            exp - 3600 + 43_200
        );
        // And that one is cached in turn.
        assert_eq!(s.authorization(url, exp - 3000).unwrap(), second);
        // The clock went back a day: the cached exp would be > lifetime ahead.
        let back = s.authorization(url, NOW - 86_400).unwrap();
        assert_eq!(
            verify_authorization(&back).unwrap().exp,
            NOW - 86_400 + 43_200
        );
        // Bad URLs are rejected, not cached.
        assert!(matches!(
            s.authorization("ftp://push.example.net/", NOW),
            Err(VapidError::InvalidPushUrl(_))
        ));
    }

    #[test]
    fn cache_is_bounded() {
        let mut s = signer();
        for i in 0..(CACHE_CAPACITY + 10) {
            s.authorization(&format!("https://p{i}.example.net/"), NOW + i as u64)
                .unwrap();
            assert!(s.cache.len() <= CACHE_CAPACITY);
        }
        // The newest is still cached.
        let url = format!("https://p{}.example.net/", CACHE_CAPACITY + 9);
        let a = s.authorization(&url, NOW + 1000).unwrap();
        assert_eq!(s.authorization(&url, NOW + 1001).unwrap(), a);
    }

    #[test]
    fn lifetime_default_and_clamp() {
        let key = VapidKey::generate().unwrap();
        let c = "mailto:push@example.com";
        let table: [(u32, u32); 5] = [
            (0, 43_200),
            (3600, 3600),
            (43_200, 43_200),
            (86_400, 86_400),
            (100_000, 86_400),
        ];
        for (given, want) in table {
            let mut s = VapidSigner::new(key.clone(), c, given, false).unwrap();
            assert_eq!(s.lifetime_secs(), want);
            let v =
                verify_authorization(&s.authorization("https://p.example/", NOW).unwrap()).unwrap();
            assert_eq!(v.exp, NOW + u64::from(want));
        }
        let mut s = VapidSigner::new(key, c, u32::MAX, false).unwrap();
        let v = verify_authorization(&s.authorization("https://p.example/", NOW).unwrap()).unwrap();
        assert_eq!(v.exp - NOW, 86_400);
        // A short lifetime still caches for half its life.
        let mut s = VapidSigner::new(VapidKey::generate().unwrap(), c, 600, false).unwrap();
        let a = s.authorization("https://p.example/", NOW).unwrap();
        assert_eq!(s.authorization("https://p.example/", NOW + 299).unwrap(), a);
        assert_ne!(s.authorization("https://p.example/", NOW + 300).unwrap(), a);
    }

    #[test]
    fn contact_table() {
        let key = VapidKey::generate().unwrap();
        let ok = [
            "mailto:push@example.com",
            "MAILTO:Push@Example.com",
            "mailto:push+jmap@mail.example.com?subject=push",
            "https://example.com/contact",
            "https://example.com",
        ];
        for c in ok {
            let s = VapidSigner::new(key.clone(), c, 0, false).unwrap();
            assert_eq!(s.contact(), c);
        }
        let test_hosts = [
            "mailto:admin@localhost",
            "mailto:admin@LOCALHOST",
            "mailto:admin@mail.localhost",
            "mailto:admin@box.local",
            "mailto:admin@example.invalid",
            "mailto:admin@example.invalid.",
            "https://localhost/contact",
            "https://localhost:8443/",
            "https://printer.local/",
            "https://example.invalid",
        ];
        for c in test_hosts {
            let e = VapidSigner::new(key.clone(), c, 0, false).unwrap_err();
            assert!(matches!(e, VapidError::TestContact { .. }), "{c}: {e}");
            assert!(VapidSigner::new(key.clone(), c, 0, true).is_ok(), "{c}");
        }
        let bad = [
            "",
            "push@example.com",
            "mailto:",
            "mailto:push",
            "mailto:@example.com",
            "mailto:push@",
            "mailto:push@exa mple.com",
            "mailto:push@exa_mple.com",
            "http://example.com/contact",
            "tel:+123",
            " mailto:push@example.com",
            "mailto:push@example.com\n",
        ];
        for c in bad {
            let e = VapidSigner::new(key.clone(), c, 0, true).unwrap_err();
            assert!(matches!(e, VapidError::InvalidContact(_)), "{c:?}: {e:?}");
            assert!(e.to_string().contains("mailto:"), "{e}");
        }
        for c in [
            "https://user@example.com/",
            "https:///x",
            "https:example.com",
        ] {
            let e = VapidSigner::new(key.clone(), c, 0, true).unwrap_err();
            assert!(
                matches!(e, VapidError::InvalidContactUrl(_)),
                "{c:?}: {e:?}"
            );
        }
        let long = format!("mailto:{}@example.com", "a".repeat(1100));
        assert!(matches!(
            VapidSigner::new(key, &long, 0, false),
            Err(VapidError::InvalidContact(_))
        ));
    }

    /// RFC 6979 A.2.5 (P-256, SHA-256): the key imported through
    /// [`VapidKey::from_base64url`] signs "sample" and "test" with exactly
    /// the RFC's deterministic signatures (r, s).
    #[test]
    fn es256_signatures_are_the_rfc6979_a_2_5_vectors() {
        fn hex(h: &str) -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        }
        const X: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
        const VECTORS: [(&[u8], &str, &str); 2] = [
            (
                b"sample",
                "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
                "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
            ),
            (
                b"test",
                "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
                "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
            ),
        ];
        let key = VapidKey::from_base64url(&b64url_encode(&hex(X))).unwrap();
        // RFC 6979 A.2.5's public key 04 || Ux || Uy.
        let public = key.public_key_bytes();
        assert_eq!(public[0], 4);
        assert_eq!(
            public[1..33],
            hex("60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6")[..]
        );
        assert_eq!(
            public[33..],
            hex("7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299")[..]
        );
        for (message, r, s) in VECTORS {
            let sig: Signature = key.signing.sign(message);
            let bytes = sig.to_bytes();
            assert_eq!(bytes[..32], hex(r)[..]);
            assert_eq!(bytes[32..], hex(s)[..]);
        }
    }

    #[test]
    fn key_serialization_round_trip() {
        let k = VapidKey::generate().unwrap();
        let s = k.to_base64url();
        assert_eq!(s.len(), 43);
        let back = VapidKey::from_base64url(&s).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.public_key_base64url(), k.public_key_base64url());
        assert_eq!(VapidKey::from_base64url(&format!("{s}=")).unwrap(), k);
        let pk = k.public_key_bytes();
        assert_eq!(pk[0], 4);
        assert_eq!(
            b64url_decode(&k.public_key_base64url()).unwrap(),
            pk.to_vec()
        );
        assert_ne!(VapidKey::generate().unwrap(), k);
        assert!(!format!("{k:?}").contains(&s));

        // The RFC 8291 sender key as a known scalar -> known public key.
        let known =
            VapidKey::from_base64url("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw").unwrap();
        assert_eq!(
            known.public_key_base64url(),
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
        );

        let n = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51u8,
        ];
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        assert!(VapidKey::from_base64url(&b64url_encode(&n_minus_1)).is_ok());
        let table: [(String, VapidError); 5] = [
            (b64url_encode(&[0u8; 32]), VapidError::KeyOutOfRange),
            (b64url_encode(&n), VapidError::KeyOutOfRange),
            (
                b64url_encode(&[1u8; 31]),
                VapidError::KeyWrongLength { len: 31 },
            ),
            (
                b64url_encode(&[1u8; 33]),
                VapidError::KeyWrongLength { len: 33 },
            ),
            (
                "ab+d".into(),
                VapidError::KeyNotBase64Url(Base64UrlError::InvalidCharacter {
                    offset: 2,
                    byte: b'+',
                }),
            ),
        ];
        for (input, want) in table {
            assert_eq!(VapidKey::from_base64url(&input), Err(want));
        }
    }
}
