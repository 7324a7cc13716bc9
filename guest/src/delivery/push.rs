//! Building one push request: body (encrypted when the subscription has
//! keys) and headers (behaviour B6 step 4-5, B7, B8).

use sha2::{Digest, Sha256};
use std::fmt;

use crate::config::{Config, Urgency};
use crate::crypto::b64url_encode;
use crate::crypto::ece::{self, EceError};
use crate::crypto::keys::{KeyError, ReceiverKeys};
use crate::crypto::vapid::{VapidError, VapidSigner};
use crate::ports::HttpRequest;
use crate::subscription::Subscription;

/// One message to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPush {
    /// The plaintext JSON.
    pub payload: Vec<u8>,
    /// `Topic` header, if any.
    pub topic: Option<String>,
    /// `Urgency` header.
    pub urgency: Urgency,
}

/// Why a push could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushBuildError {
    /// The stored keys no longer parse.
    Keys(KeyError),
    /// Encryption failed (for example the plaintext is too long).
    Encrypt(EceError),
    /// VAPID signing failed.
    Vapid(VapidError),
    /// Unencrypted plaintext over the size limit.
    TooLong {
        /// Octets.
        len: usize,
        /// Limit.
        max: usize,
    },
}

impl fmt::Display for PushBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushBuildError::Keys(e) => write!(f, "subscription keys: {e}"),
            PushBuildError::Encrypt(e) => write!(f, "encryption: {e}"),
            PushBuildError::Vapid(e) => write!(f, "VAPID: {e}"),
            PushBuildError::TooLong { len, max } => {
                write!(f, "payload of {len} octets exceeds {max}")
            }
        }
    }
}

impl std::error::Error for PushBuildError {}

/// Builds the HTTP request for `push` to `sub`: [`prepare_request`] and
/// [`seal_requests`] for one request.
pub fn build_request(
    config: &Config,
    signer: Option<&mut VapidSigner>,
    sub: &Subscription,
    push: &OutgoingPush,
    now_secs: u64,
) -> Result<HttpRequest, PushBuildError> {
    let unsealed = prepare_request(config, signer, sub, push, now_secs)?;
    seal_requests(config, vec![unsealed])
        .pop()
        .unwrap_or(Err(PushBuildError::Encrypt(EceError::Internal(
            "no request sealed",
        ))))
}

/// A push request whose body is still the plaintext: everything of
/// [`build_request`] but the encryption, so that a fan-out can encrypt a
/// whole piece of requests in one [`seal_requests`] call.
#[derive(Debug)]
pub struct UnsealedRequest {
    /// The request, with the plaintext as body and every header.
    request: HttpRequest,
    /// The receiver's keys when the body is to be encrypted.
    keys: Option<ReceiverKeys>,
}

/// The request for `push` to `sub` with headers (`TTL`, `Urgency`, `Topic`,
/// content coding and type, VAPID `Authorization`) and the body not yet
/// encrypted.
///
/// # Errors
/// [`PushBuildError::Keys`] when the stored keys no longer parse,
/// [`PushBuildError::TooLong`] for an unencrypted payload over the limit,
/// [`PushBuildError::Vapid`] when signing fails.
pub fn prepare_request(
    config: &Config,
    signer: Option<&mut VapidSigner>,
    sub: &Subscription,
    push: &OutgoingPush,
    now_secs: u64,
) -> Result<UnsealedRequest, PushBuildError> {
    let max = config.max_plaintext_octets as usize;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(6);
    headers.push(("TTL".into(), config.push_ttl_secs.to_string()));
    headers.push(("Urgency".into(), push.urgency.header_value().into()));
    if let Some(topic) = &push.topic {
        headers.push(("Topic".into(), topic.clone()));
    }
    let keys = match &sub.keys {
        Some(k) => {
            let keys = k.parse().map_err(PushBuildError::Keys)?;
            headers.push(("Content-Encoding".into(), "aes128gcm".into()));
            headers.push(("Content-Type".into(), "application/octet-stream".into()));
            Some(keys)
        }
        None => {
            if push.payload.len() > max {
                return Err(PushBuildError::TooLong {
                    len: push.payload.len(),
                    max,
                });
            }
            headers.push((
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            ));
            None
        }
    };
    if let Some(signer) = signer {
        let auth = signer
            .authorization(&sub.url, now_secs)
            .map_err(PushBuildError::Vapid)?;
        headers.push(("Authorization".into(), auth));
    }
    Ok(UnsealedRequest {
        request: HttpRequest {
            url: sub.url.clone(),
            headers,
            body: push.payload.clone(),
            timeout_ms: config.http_timeout_ms,
        },
        keys,
    })
}

/// Encrypts the bodies of `unsealed` that have receiver keys (RFC 8291,
/// each with its own fresh ephemeral key and salt, in one
/// [`ece::encrypt_batch`]) and returns the requests in the same order.
///
/// # Errors
/// Per request: [`PushBuildError::Encrypt`] when its plaintext is over the
/// limit or the random source fails.
pub fn seal_requests(
    config: &Config,
    unsealed: Vec<UnsealedRequest>,
) -> Vec<Result<HttpRequest, PushBuildError>> {
    let max = config.max_plaintext_octets as usize;
    let messages: Vec<(&[u8], &ReceiverKeys)> = unsealed
        .iter()
        .filter_map(|u| u.keys.as_ref().map(|k| (u.request.body.as_slice(), k)))
        .collect();
    let mut bodies = ece::encrypt_batch(&messages, max).into_iter();
    unsealed
        .into_iter()
        .map(|u| {
            let mut request = u.request;
            if u.keys.is_some() {
                request.body = bodies
                    .next()
                    .unwrap_or(Err(EceError::Internal("no body encrypted")))
                    .map_err(PushBuildError::Encrypt)?;
            }
            Ok(request)
        })
        .collect()
}

/// The `Topic` for a message to subscription `id` about these
/// (account, type) keys: base64url (no padding) of the first 24 octets of
/// SHA-256 over the id and the sorted keys = 32 characters, the RFC 8030
/// §5.4 maximum. Equal key sets give equal topics, so a newer message
/// replaces an undelivered older one at the push service.
pub fn topic<'a>(id: &str, keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut keys: Vec<(&str, &str)> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    for (account, type_name) in keys {
        h.update([0u8]);
        h.update(account.as_bytes());
        h.update([1u8]);
        h.update(type_name.as_bytes());
    }
    let digest = h.finalize();
    b64url_encode(&digest[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_is_32_base64url_chars_and_order_independent() {
        let a = topic("sub1", [("a1", "Email"), ("a1", "Mailbox")]);
        let b = topic("sub1", [("a1", "Mailbox"), ("a1", "Email")]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, topic("sub2", [("a1", "Email"), ("a1", "Mailbox")]));
        assert_ne!(a, topic("sub1", [("a1", "Email")]));
    }
}
