//! Shared helpers for the end-to-end suites: a scriptable loopback push
//! gateway that records every request, a push client with real P-256 keys
//! that decrypts with Mozilla's `ece` crate, and a plugin factory.

#![warn(missing_docs)]

use std::sync::Arc;

use serde_json::Value;

pub use jmap_web_push::gateway::{Answer, Gateway, Received};

pub mod faulty_store;

/// Path of the misbehaving fixture component (`host-harness/fixtures/misbehave`:
/// traps, loops or allocates without bound on request), built by this
/// crate's build script.
pub const FIXTURE_PATH: &str = env!("JMAP_WEB_PUSH_GUEST_FIXTURE");

/// Path of the example mail-server component (`tests/consumer`), which
/// imports the plugin's exports; built by this crate's build script.
pub const CONSUMER_PATH: &str = env!("JMAP_WEB_PUSH_CONSUMER");

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

/// `serve` started in-process on 127.0.0.1 with a memory store, the test
/// plugin configuration, one user (`alice@example.com`, password
/// [`TestServer::PASSWORD`], bearer token [`TestServer::TOKEN`]) and the
/// admin token [`TestServer::ADMIN`].
pub struct TestServer {
    /// The runtime the server runs on.
    pub rt: tokio::runtime::Runtime,
    running: Option<jmap_web_push::server::Running>,
    /// A blocking HTTP client.
    pub http: reqwest::blocking::Client,
}

impl TestServer {
    /// The demo user's password.
    pub const PASSWORD: &'static str = "correct horse";
    /// The demo user's bearer token.
    pub const TOKEN: &'static str = "token-for-the-phone";
    /// The event intake's token.
    pub const ADMIN: &'static str = "admin-secret";
    /// The user name.
    pub const USER: &'static str = "alice@example.com";

    /// Starts a server; `extra_capabilities` as `server.extra_capabilities`.
    pub fn start(extra_capabilities: Vec<String>) -> TestServer {
        Self::start_configured(|s| s.server.extra_capabilities = extra_capabilities)
    }

    /// Starts a server with the test settings as `configure` changes them
    /// (it sees the loopback address, memory store, test plugin
    /// configuration and the one user already filled in).
    pub fn start_configured(
        configure: impl FnOnce(&mut jmap_web_push::settings::Settings),
    ) -> TestServer {
        Self::start_with(configure, None)
    }

    /// [`TestServer::start_configured`] on `store` instead of the store the
    /// settings name.
    pub fn start_on_store(
        configure: impl FnOnce(&mut jmap_web_push::settings::Settings),
        store: Arc<dyn KvStore>,
    ) -> TestServer {
        Self::start_with(configure, Some(store))
    }

    fn start_with(
        configure: impl FnOnce(&mut jmap_web_push::settings::Settings),
        store: Option<Arc<dyn KvStore>>,
    ) -> TestServer {
        use jmap_web_push::server::{self, auth};
        use jmap_web_push::settings::{Credential, Settings, StoreKind, User};
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".parse().expect("address");
        settings.server.admin_token = Some(Self::ADMIN.into());
        // Tests read the store gauges of /metrics right after changes.
        settings.server.metrics_count_interval_secs = 0;
        settings.store.kind = StoreKind::Memory;
        settings.plugin = test_config();
        settings.sandbox.aot_cache_dir = Some(cache_dir());
        settings.users = vec![User {
            name: Self::USER.into(),
            credentials: vec![
                Credential {
                    id: "laptop".into(),
                    password_hash: Some(auth::hash_password(Self::PASSWORD).expect("hash")),
                    token_sha256: None,
                },
                Credential {
                    id: "phone".into(),
                    password_hash: None,
                    token_sha256: Some(auth::token_sha256(Self::TOKEN)),
                },
            ],
        }];
        configure(&mut settings);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let running = match store {
            None => rt.block_on(server::start(settings)),
            Some(store) => rt.block_on(server::start_on_store(settings, store)),
        }
        .expect("server starts");
        TestServer {
            rt,
            running: Some(running),
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    /// The value of the gauge `name` on `GET /metrics`.
    pub fn gauge(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no gauge {name} in {text}"))
    }

    /// The base URL.
    pub fn base(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.base_url.clone())
            .unwrap_or_default()
    }

    /// `Authorization` for the user's password.
    pub fn basic() -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                Self::USER,
                Self::PASSWORD
            ))
        )
    }

    /// POSTs a raw body to the API; returns status, JSON body and content type.
    pub fn api(&self, auth: Option<&str>, body: &str) -> (u16, Value, Option<String>) {
        self.api_body(auth, body.to_string().into())
    }

    /// [`TestServer::api`] with any body (streamed, chunked, binary), on
    /// the server's keep-alive client.
    pub fn api_body(
        &self,
        auth: Option<&str>,
        body: reqwest::blocking::Body,
    ) -> (u16, Value, Option<String>) {
        let mut req = self
            .http
            .post(format!("{}/jmap/api", self.base()))
            .body(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().expect("API request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, r.json().unwrap_or(Value::Null), ct)
    }

    /// One method call as the user (Basic); returns the response arguments
    /// (or the `["error", ...]` arguments).
    pub fn call(&self, method: &str, args: Value) -> Value {
        let body = serde_json::json!({
            "using": ["urn:ietf:params:jmap:core"],
            "methodCalls": [[method, args, "0"]],
        });
        let (status, v, _) = self.api(Some(&Self::basic()), &body.to_string());
        assert_eq!(status, 200, "{v}");
        v["methodResponses"][0][1].clone()
    }

    /// POSTs to `/events`; returns status and JSON body.
    pub fn event(&self, auth: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/events", self.base()))
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().expect("event request");
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// Stops the server gracefully (in-flight requests finish) and waits.
    pub fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown()).expect("clean shutdown");
        }
    }

    /// The Session object as the user sees it.
    pub fn session(&self) -> Value {
        self.session_as(&Self::basic())
    }

    /// The Session object as seen with this `Authorization` value.
    pub fn session_as(&self, auth: &str) -> Value {
        self.http
            .get(format!("{}/.well-known/jmap", self.base()))
            .header("Authorization", auth)
            .send()
            .expect("session request")
            .json()
            .expect("session JSON")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.rt.block_on(r.shutdown());
        }
    }
}
