//! Shared helpers for the end-to-end suites: a scriptable loopback push
//! gateway that records every request, a push client with real P-256 keys
//! that decrypts with Mozilla's `ece` crate, and a plugin factory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode};
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{Caller, MethodError, PluginConfig, PushPlugin, SandboxOptions};

/// One request the gateway received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path after the first `/`.
    pub path: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Delay before answering.
    pub delay: Duration,
}

impl Answer {
    /// Answer with `status` at once.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delays the answer.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct GatewayState {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<Answer>>,
    defaults: HashMap<String, Answer>,
}

/// A loopback push service: records requests, answers 201 unless scripted.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<Mutex<GatewayState>>,
    _runtime: tokio::runtime::Runtime,
}

async fn handle(
    State(state): State<Arc<Mutex<GatewayState>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let answer = {
        let mut s = state.lock().unwrap();
        s.received.push(Received {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        let scripted = s.scripts.get_mut(&path).and_then(|q| q.pop_front());
        scripted
            .or_else(|| s.defaults.get(&path).cloned())
            .unwrap_or_else(|| Answer::status(201))
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut h = HeaderMap::new();
    for (n, v) in &answer.headers {
        h.insert(
            axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (StatusCode::from_u16(answer.status).unwrap(), h, "")
}

impl Gateway {
    /// Starts a gateway on 127.0.0.1 with a random port.
    pub fn start() -> Gateway {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(handle))
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Gateway {
            addr,
            state,
            _runtime: runtime,
        }
    }

    /// The URL of push channel `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Queues answers for `path` (used in order, then the default).
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut s = self.state.lock().unwrap();
        s.scripts
            .entry(path.to_string())
            .or_default()
            .extend(answers);
    }

    /// Sets the answer for `path` once the script is used up.
    pub fn set_default(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_string(), answer);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Everything received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.state.lock().unwrap().received.clear();
    }
}

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
