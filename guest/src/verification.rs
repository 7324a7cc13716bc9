//! PushVerification (RFC 8620 §7.2.2, behaviour B4): creating codes,
//! building the verification push, and what a push service's answer to it
//! means.

use crate::json;

use crate::config::Config;
use crate::crypto::{b64url_encode, b64url_encode_secret, random_array};
use crate::delivery::policy::{Answer, TLS_FAILURE};
use crate::delivery::push::OutgoingPush;
use crate::ports::PushAction;

/// A fresh verification code: 128 random bits, base64url (22 characters,
/// encoded in constant time: the code is a secret until it is answered).
pub fn new_code() -> Result<String, crate::crypto::RandomError> {
    Ok(b64url_encode_secret(&random_array::<16>()?)
        .as_str()
        .to_owned())
}

/// A fresh subscription id: 144 random bits, base64url (24 characters,
/// JMAP Id syntax).
pub fn new_id() -> Result<String, crate::crypto::RandomError> {
    Ok(b64url_encode(&random_array::<18>()?))
}

/// The PushVerification message.
pub fn message(config: &Config, id: &str, code: &str) -> OutgoingPush {
    let payload = json::object([
        ("@type", "PushVerification".into()),
        ("pushSubscriptionId", id.into()),
        ("verificationCode", code.into()),
    ]);
    OutgoingPush {
        payload: payload.to_string().into_bytes(),
        topic: None,
        urgency: config.default_urgency.max(crate::config::Urgency::Normal),
    }
}

/// What an answer to a verification push means for the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// Reached the push service.
    Delivered,
    /// The push service or the host's policy refused it for good: the
    /// create fails (or a pending subscription is destroyed).
    Refused(String),
    /// Try again later; the optional delay was asked for by the service.
    Retry(Option<u64>),
}

impl VerificationOutcome {
    /// What the plugin does with the subscription, as `host.report-push`
    /// reports it: a refused verification destroys it (or fails its create).
    pub fn action(&self) -> PushAction {
        match self {
            VerificationOutcome::Delivered => PushAction::Delivered,
            VerificationOutcome::Refused(_) => PushAction::Destroyed,
            VerificationOutcome::Retry(_) => PushAction::Deferred,
        }
    }
}

/// Maps a classified answer to a verification outcome (B4: 404, 410, 400,
/// 401, 403, other 4xx/3xx, policy refusals and a failed TLS handshake
/// are permanent, so that a client with a URL whose certificate cannot be
/// trusted learns it at once; timeouts, connection errors, 5xx and 429
/// are retried).
pub fn outcome(answer: &Answer) -> VerificationOutcome {
    match answer {
        Answer::Transient { reason, .. } if reason == TLS_FAILURE => VerificationOutcome::Refused(
            "the push service's TLS handshake failed (is its certificate trusted?)".into(),
        ),
        Answer::Delivered(_) => VerificationOutcome::Delivered,
        Answer::Gone(s) => VerificationOutcome::Refused(format!("the push service answered {s}")),
        Answer::TooLarge => VerificationOutcome::Refused(
            "the push service answered 413 to a small verification push".into(),
        ),
        Answer::Refused { detail, .. } => {
            VerificationOutcome::Refused(format!("the push service refused it: {detail}"))
        }
        Answer::RateLimited { retry_after_ms } => VerificationOutcome::Retry(*retry_after_ms),
        Answer::Transient { retry_after_ms, .. } => VerificationOutcome::Retry(*retry_after_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_codes_are_fresh_and_well_formed() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(crate::jmap::get::is_jmap_id(&a));
        assert_eq!(new_code().unwrap().len(), 22);
    }

    #[test]
    fn a_failed_tls_handshake_refuses_the_verification_at_once() {
        assert!(matches!(
            outcome(&Answer::Transient {
                reason: TLS_FAILURE.into(),
                retry_after_ms: None
            }),
            VerificationOutcome::Refused(_)
        ));
        assert_eq!(
            outcome(&Answer::Transient {
                reason: "connection".into(),
                retry_after_ms: None
            }),
            VerificationOutcome::Retry(None)
        );
    }

    #[test]
    fn permanent_and_transient_answers() {
        assert_eq!(
            outcome(&Answer::Delivered(201)),
            VerificationOutcome::Delivered
        );
        assert!(matches!(
            outcome(&Answer::Gone(410)),
            VerificationOutcome::Refused(_)
        ));
        assert!(matches!(
            outcome(&Answer::Refused {
                status: 403,
                detail: String::new()
            }),
            VerificationOutcome::Refused(_)
        ));
        assert_eq!(
            outcome(&Answer::RateLimited {
                retry_after_ms: Some(5000)
            }),
            VerificationOutcome::Retry(Some(5000))
        );
        assert_eq!(
            outcome(&Answer::Transient {
                reason: "503".into(),
                retry_after_ms: None
            }),
            VerificationOutcome::Retry(None)
        );
    }
}
