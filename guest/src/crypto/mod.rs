//! Everything cryptographic a Web Push needs, in pure Rust (no OpenSSL).
//!
//! The hot path (P-256 ECDH, RFC 8291 encryption, receiver keys, base64url,
//! randomness) is the `jmap-web-push-crypto` crate, re-exported here whole
//! and built at opt-level 3. VAPID, which signs one token per push service
//! per hour, lives in this crate, built for size:
//!
//! * [`vapid`]: RFC 8292 VAPID signing keys, JWTs and the `Authorization`
//!   header value, plus the RFC 9749 `applicationServerKey` (B8), on the
//!   `p256` crate's ECDSA (ES256, RFC 6979).

pub use jmap_web_push_crypto::*;

pub mod vapid;

pub use vapid::{audience, VapidError, VapidKey, VapidSigner};
