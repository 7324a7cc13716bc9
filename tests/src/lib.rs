//! Shared helpers for the end-to-end suites: a scriptable loopback push
//! gateway that records every request, a push client with real P-256 keys
//! that decrypts with Mozilla's `ece` crate, and a plugin factory.

use std::sync::Arc;

use serde_json::Value;

pub use jmap_web_push_host::gateway::{Answer, Gateway, Received};

use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode};
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{Caller, MethodError, PluginConfig, PushPlugin, SandboxOptions};

/// A push client (a browser's PushManager subscription): a P-256 key pair
/// and an auth secret.
pub struct PushClient {
    private: [u8; 32],
    public: [u8; 65],
    auth: [u8; 16],
}

impl Default for PushClient {
    fn default() -> Self {
        Self::new()
    }
}

impl PushClient {
    /// Fresh keys.
    pub fn new() -> Self {
        let key = jmap_web_push_guest::crypto::vapid::VapidKey::generate().expect("key");
        let mut private = [0u8; 32];
        private.copy_from_slice(&b64url_decode(&key.to_base64url()).expect("scalar"));
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("random");
        PushClient {
            private,
            public: *key.public_key_bytes(),
            auth,
        }
    }

    /// The `keys` object of a PushSubscription.
    pub fn keys_json(&self) -> Value {
        serde_json::json!({
            "p256dh": b64url_encode(&self.public),
            "auth": b64url_encode(&self.auth),
        })
    }

    /// The private P-256 scalar (for handing to independent
    /// implementations in the interoperability tests).
    pub fn private_key(&self) -> [u8; 32] {
        self.private
    }

    /// The uncompressed public key (`p256dh`).
    pub fn public_key(&self) -> [u8; 65] {
        self.public
    }

    /// The auth secret.
    pub fn auth(&self) -> [u8; 16] {
        self.auth
    }

    /// Decrypts a push body with Mozilla's `ece` crate.
    pub fn decrypt(&self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let components = ece::EcKeyComponents::new(self.private.to_vec(), self.public.to_vec());
        Ok(ece::decrypt(&components, &self.auth, body)?)
    }

    /// Decrypts a push body and parses it as JSON.
    pub fn decrypt_json(&self, body: &[u8]) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.decrypt(body)?)?)
    }
}

/// Configuration for tests: loopback allowed, VAPID on, fast retries.
pub fn test_config() -> PluginConfig {
    PluginConfig {
        insecure_test_mode: true,
        vapid_contact: Some("mailto:push-tests@example.com".into()),
        retry_initial_ms: 200,
        ..PluginConfig::default()
    }
}

/// A plugin on `store` with `config`.
pub fn plugin_with(store: Arc<dyn KvStore>, config: PluginConfig) -> PushPlugin {
    PushPlugin::builder()
        .config(config)
        .store(store)
        .sandbox(SandboxOptions {
            aot_cache_dir: Some(cache_dir()),
            ..SandboxOptions::default()
        })
        .build()
        .expect("plugin loads")
}

/// The AOT cache used by tests (inside the target directory).
pub fn cache_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/aot-cache")
}

/// A caller.
pub fn caller(user: &str, credential: Option<&str>) -> Caller {
    Caller {
        username: user.into(),
        credential_id: credential.map(str::to_string),
    }
}

/// Calls a method with JSON arguments; returns the response arguments or
/// the method error.
pub fn call(
    plugin: &PushPlugin,
    who: &Caller,
    method: &str,
    args: Value,
) -> Result<Value, MethodError> {
    call_with_ids(plugin, who, method, args, &mut Vec::new())
}

/// Like [`call`], threading the request's createdIds.
pub fn call_with_ids(
    plugin: &PushPlugin,
    who: &Caller,
    method: &str,
    args: Value,
    created_ids: &mut Vec<(String, String)>,
) -> Result<Value, MethodError> {
    let r = plugin
        .call(who, method, &args.to_string(), created_ids)
        .expect("no trap")?;
    *created_ids = r.created_ids;
    Ok(serde_json::from_str(&r.arguments).expect("response is JSON"))
}

/// Parses a `vapid t=..., k=...` header; returns (claims JSON, k).
pub fn vapid_claims(header: &str) -> Option<(Value, String)> {
    let rest = header.strip_prefix("vapid ")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v.to_string());
        }
    }
    let claims = t?.split('.').nth(1)?;
    let claims = b64url_decode(claims).ok()?;
    Some((serde_json::from_slice(&claims).ok()?, k?))
}

/// Creates a subscription for `who` at gateway path `path` with `types`,
/// reads the verification push, verifies, and returns the id. The gateway
/// must answer the verification with 2xx.
pub fn verified_subscription(
    plugin: &PushPlugin,
    gateway: &Gateway,
    client: &PushClient,
    who: &Caller,
    path: &str,
    types: Value,
) -> String {
    let before = gateway.received_on(path).len();
    let r = call(
        plugin,
        who,
        "PushSubscription/set",
        serde_json::json!({"create": {"c": {
            "deviceClientId": format!("device-{path}"),
            "url": gateway.url(path),
            "keys": client.keys_json(),
            "types": types,
        }}}),
    )
    .expect("create");
    let id = r["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {r}"))
        .to_string();
    let got = gateway.received_on(path);
    assert_eq!(got.len(), before + 1, "one verification push");
    let v = client
        .decrypt_json(&got[before].body)
        .expect("verification decrypts");
    let r = call(
        plugin,
        who,
        "PushSubscription/set",
        serde_json::json!({"update": {id.clone(): {"verificationCode": v["verificationCode"]}}}),
    )
    .expect("verify");
    assert!(r["updated"].get(&id).is_some(), "verified: {r}");
    id
}

/// A state change for `user`: `(account, type, state)` triples.
pub fn state_change(user: &str, changes: &[(&str, &str, &str)]) -> jmap_web_push_host::StateChange {
    let mut accounts: Vec<jmap_web_push_host::AccountChanges> = Vec::new();
    for (account, t, s) in changes {
        let ts = jmap_web_push_host::TypeState {
            type_name: t.to_string(),
            state: s.to_string(),
        };
        match accounts.iter_mut().find(|a| a.account_id == *account) {
            Some(a) => a.changes.push(ts),
            None => accounts.push(jmap_web_push_host::AccountChanges {
                account_id: account.to_string(),
                changes: vec![ts],
            }),
        }
    }
    jmap_web_push_host::StateChange {
        username: user.into(),
        changed: accounts,
    }
}

/// Calls `tick` until `cond` holds or `timeout` passes; returns whether it held.
pub fn tick_until(
    plugin: &PushPlugin,
    timeout: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        plugin.tick().expect("no trap").expect("tick ok");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
