//! # The JMAP Web Push plugin
//!
//! Push notifications for JMAP clients (RFC 8620 §7) as a WebAssembly
//! component: `PushSubscription/get` and `/set` with verification, and, for
//! every state change the mail server reports, an RFC 8291-encrypted,
//! VAPID-signed (RFC 8292) push (RFC 8030) to each matching subscription.
//!
//! The crate is a *sans-IO core*: every rule lives in plain Rust modules
//! written against two ports ([`ports::Store`], [`ports::HttpOut`]) and an
//! explicit clock ([`Env::now_ms`]), so it compiles and is tested natively.
//! The WIT bindings (`bindings`, only on `wasm32`) are a thin layer that
//! implements the ports with the component's imports and maps the exports
//! to [`Plugin`].
//!
//! | module | concern |
//! | --- | --- |
//! | [`config`] | the typed configuration and its defaults |
//! | [`subscription`] | the PushSubscription model and its validation (B1) |
//! | [`jmap`] | `PushSubscription/get` and `/set` (B2, B3) |
//! | [`verification`] | PushVerification (B4) |
//! | [`lifecycle`] | expiry, credential revocation, user deletion, `tick` (B5) |
//! | [`delivery`] | StateChange fan-out and the push-service answer table (B6) |
//! | [`crypto`] | RFC 8291 encryption, key validation, VAPID (B7, B8) |
//! | [`keyring`] | the VAPID key in force |
//! | [`repo`] | the key layout in the store |
//! | [`addr`] | push URL rules and the address deny list |

#![warn(missing_docs)]

pub mod addr;
pub mod config;
pub mod create_rate;
pub mod crypto;
pub mod delivery;
pub mod error;
pub mod jmap;
pub mod json;
pub mod keyring;
pub mod lifecycle;
pub mod ports;
pub mod repo;
pub mod subscription;
pub mod utcdate;
pub mod verification;

#[cfg(target_arch = "wasm32")]
mod bindings;

use config::Config;
use ports::{HttpOut, Log, LogLevel, PushAction, PushKind, PushOutcome, Store};

/// Everything one call may touch: the ports, the configuration and the
/// current time.
pub struct Env<'a> {
    /// Persistence.
    pub store: &'a mut dyn Store,
    /// Outbound HTTP.
    pub http: &'a mut dyn HttpOut,
    /// The host's logger.
    pub log: &'a mut dyn Log,
    /// The configuration in force (normalized).
    pub config: &'a Config,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
}

impl Env<'_> {
    /// Now, Unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.now_ms / 1000
    }

    /// Logs a line.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.log.log(level, message);
    }

    /// Reports what one push to `push_url` came to (the WIT
    /// `host.report-push`): the URL's origin only, never its path.
    pub fn push_outcome(
        &mut self,
        subscription_id: &str,
        push_url: &str,
        kind: PushKind,
        answer: String,
        action: PushAction,
    ) {
        let origin = addr::parse_http_url(push_url)
            .map(|u| u.origin())
            .unwrap_or_else(|_| "(not a URL)".to_owned());
        self.log.push_outcome(PushOutcome {
            subscription_id: subscription_id.to_owned(),
            origin,
            kind,
            answer,
            action,
        });
    }
}

/// State kept across calls within one instance (caches only: everything
/// that matters is in the store).
#[derive(Debug, Default)]
pub struct Plugin {
    /// The VAPID signer and its token cache.
    pub keyring: keyring::Keyring,
    /// The VAPID public key this instance last reconciled the
    /// subscriptions with ([`lifecycle::reconcile_vapid_key`]).
    pub reconciled_key: Option<String>,
}

impl Plugin {
    /// A plugin with empty caches.
    pub fn new() -> Self {
        Self::default()
    }
}
