//! What the guest targets share: a configuration, a push service that
//! answers from a script, and the store invariant.

use jmap_web_push_guest::config::Config;
use jmap_web_push_guest::delivery::pending::Pending;
use jmap_web_push_guest::ports::{
    Condition, HttpError, HttpOut, HttpRequest, HttpResponse, MemoryStore, Store,
};
use jmap_web_push_guest::repo;
use jmap_web_push_guest::subscription::{Owner, StoredKeys, Subscription, VerificationState};

/// The receiver keys of RFC 8291 Appendix A.
pub const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
/// The authentication secret of RFC 8291 Appendix A.
pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// The plugin's defaults, with a VAPID contact so that pushes are signed.
pub fn config() -> Config {
    Config {
        vapid_contact: Some("mailto:ops@example.net".into()),
        ..Config::default()
    }
    .normalized()
}

/// A fixed "now" plus `step` seconds.
pub fn now_ms(step: usize) -> u64 {
    1_800_000_000_000 + step as u64 * 1_000
}

/// A push service that answers each request with the next status of a
/// cycle chosen by the input (201, 404, 410, 413, 429 with Retry-After, 500,
/// a connection error), so that every answer path is reachable.
pub struct ScriptedPushService {
    script: Vec<u8>,
    next: usize,
    /// Requests seen.
    pub sent: usize,
}

impl ScriptedPushService {
    /// Answers driven by `script` (201 to everything when empty).
    pub fn new(script: &[u8]) -> Self {
        Self {
            script: script.iter().take(16).copied().collect(),
            next: 0,
            sent: 0,
        }
    }

    fn answer(&mut self) -> Result<HttpResponse, HttpError> {
        let pick = if self.script.is_empty() {
            0
        } else {
            self.script[self.next % self.script.len()]
        };
        self.next += 1;
        let (status, headers): (u16, Vec<(String, String)>) = match pick % 10 {
            0..=3 => (201, vec![]),
            4 => (404, vec![]),
            5 => (410, vec![]),
            6 => (413, vec![]),
            7 => (429, vec![("Retry-After".into(), "120".into())]),
            8 => (500, vec![]),
            _ => return Err(HttpError::Connection("reset".into())),
        };
        Ok(HttpResponse {
            status,
            headers,
            body_prefix: Vec::new(),
        })
    }
}

impl HttpOut for ScriptedPushService {
    fn send_batch(&mut self, requests: Vec<HttpRequest>) -> Vec<Result<HttpResponse, HttpError>> {
        self.sent += requests.len();
        requests.iter().map(|_| self.answer()).collect()
    }
}

/// Stores a verified subscription of `username` with the RFC 8291 keys,
/// as the plugin itself would after a create and its verification.
pub fn verified_subscription(store: &mut MemoryStore, username: &str, id: &str, now_ms: u64) {
    let owner = Owner {
        username: username.to_owned(),
        credential_id: None,
    };
    let sub = Subscription {
        id: id.to_owned(),
        owner: owner.clone(),
        device_client_id: format!("device-{id}"),
        url: format!("https://push.example.net/{id}"),
        keys: Some(StoredKeys {
            p256dh: P256DH.into(),
            auth: AUTH.into(),
        }),
        verification_code: "code".into(),
        verification: VerificationState {
            verified: true,
            delivered: true,
            attempts: 0,
            next_attempt_ms: None,
        },
        expires: now_ms / 1000 + 7 * 24 * 3600,
        types: None,
        created: now_ms / 1000,
        vapid_key: None,
        refusals: Default::default(),
        last_push_ms: 0,
    };
    let saved = repo::save(store, &sub, Condition::Any).and_then(|_| {
        store.put(
            &format!("{}{id}", repo::owner_prefix(&owner)),
            b"",
            Condition::Any,
        )
    });
    if let Err(e) = saved {
        panic!("the memory store refused a write: {e}");
    }
}

/// The invariant of every guest target: each subscription and pending
/// record in the store reads back (what the plugin writes, it can read).
pub fn assert_records_read_back(store: &mut MemoryStore) {
    let keys: Vec<String> = store.keys().map(str::to_owned).collect();
    for key in keys {
        let Ok(Some(entry)) = store.get(&key) else {
            panic!("{key} listed but not readable");
        };
        if key.starts_with(repo::SUB_PREFIX) {
            if let Err(e) = Subscription::from_record(&entry.value) {
                panic!(
                    "the plugin wrote a subscription it cannot read ({e}): {}",
                    String::from_utf8_lossy(&entry.value)
                );
            }
        } else if key.starts_with(repo::PENDING_PREFIX) {
            if let Err(e) = Pending::from_record(&entry.value) {
                panic!(
                    "the plugin wrote a pending record it cannot read ({e}): {}",
                    String::from_utf8_lossy(&entry.value)
                );
            }
        }
    }
}
