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

/// Builds the HTTP request for `push` to `sub`: [`prepare_request`] and, for
/// a subscription with keys, [`seal_in_place`].
///
/// # Errors
/// As [`prepare_request`] and [`seal_in_place`].
pub fn build_request(
    config: &Config,
    signer: Option<&mut VapidSigner>,
    sub: &Subscription,
    push: &OutgoingPush,
    now_secs: u64,
) -> Result<HttpRequest, PushBuildError> {
    let (mut request, keys) = prepare_request(config, signer, sub, push, now_secs)?;
    if let Some(keys) = keys {
        seal_in_place(config, std::slice::from_mut(&mut request), &[(0, keys)])?;
    }
    Ok(request)
}

/// The request for `push` to `sub` with headers (`TTL`, `Urgency`, `Topic`,
/// content coding and type, VAPID `Authorization`) and the plaintext as
/// body, and the receiver keys to encrypt that body for (`None`: the push
/// goes unencrypted). A fan-out encrypts a whole piece of such requests in
/// one [`seal_in_place`].
///
/// # Errors
/// [`PushBuildError::Keys`] when the stored keys no longer parse,
/// [`PushBuildError::TooLong`] for an unencrypted payload over the limit,
/// [`PushBuildError::Encrypt`] for one too long to encrypt,
/// [`PushBuildError::Vapid`] when signing fails.
pub fn prepare_request(
    config: &Config,
    signer: Option<&mut VapidSigner>,
    sub: &Subscription,
    push: &OutgoingPush,
    now_secs: u64,
) -> Result<(HttpRequest, Option<ReceiverKeys>), PushBuildError> {
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
            // Checked here, so that sealing a piece cannot fail for one
            // request.
            ece::check_plaintext_len(push.payload.len(), max).map_err(PushBuildError::Encrypt)?;
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
    let request = HttpRequest {
        url: sub.url.clone(),
        headers,
        body: push.payload.clone(),
        timeout_ms: config.http_timeout_ms,
    };
    Ok((request, keys))
}

/// Encrypts, in place, the plaintext body of `requests[i]` for the keys of
/// every `(i, keys)` of `to_seal` (RFC 8291, each message with its own fresh
/// ephemeral key and salt, in one [`ece::encrypt_batch`]). Every `i` MUST
/// be an index of `requests`.
///
/// # Errors
/// [`PushBuildError::Encrypt`] when a body cannot be encrypted: over the
/// limit (which [`prepare_request`] has already checked) or the random
/// source failed. The requests MUST NOT be sent then: some bodies are still
/// plaintext.
pub fn seal_in_place(
    config: &Config,
    requests: &mut [HttpRequest],
    to_seal: &[(usize, ReceiverKeys)],
) -> Result<(), PushBuildError> {
    let mut messages: Vec<(&[u8], &ReceiverKeys)> = Vec::with_capacity(to_seal.len());
    for (i, keys) in to_seal {
        messages.push((requests[*i].body.as_slice(), keys));
    }
    let bodies = ece::encrypt_batch(&messages, config.max_plaintext_octets as usize);
    for ((i, _), body) in to_seal.iter().zip(bodies) {
        requests[*i].body = body.map_err(PushBuildError::Encrypt)?;
    }
    Ok(())
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
