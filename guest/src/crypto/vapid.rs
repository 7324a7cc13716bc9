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
mod tests;
