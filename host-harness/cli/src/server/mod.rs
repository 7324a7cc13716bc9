//! `serve`: a JMAP server for push subscriptions in front of the plugin.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /.well-known/jmap` | the Session object (authenticated) |
//! | `POST /jmap/api` | the JMAP API: `PushSubscription/get`, `/set`, `Core/echo` |
//! | `POST /events` | the mail server's event intake (admin token) |
//! | `GET /metrics` | OpenMetrics text (`prometheus-client`) |
//! | `GET /healthz` | liveness |
//! | `POST /admin/vapid/rotate`, `GET /admin/vapid`, `POST /admin/reload` | operations (admin token), see [`admin`] |
//!
//! A reload ([`Running::reload`], SIGHUP in the binary, `POST
//! /admin/reload`) re-reads the configuration file and swaps in what the
//! requests see ([`Current`]): users and credentials, server limits and,
//! when `[plugin]`, `[http]` or `[sandbox]` changed, a plugin built anew
//! on the same store.
//!
//! Plugin calls block, so they run on tokio's blocking pool; a background
//! task calls `tick` when the plugin asks for it (at least every 30 s).
//!
//! The Session is in `session.rs`, `POST /jmap/api` in `api_route.rs` (it
//! enforces the limits the Session advertises, `server.max_size_request`
//! and `server.max_concurrent_requests`, RFC 8620 §3.6.1, see `limits.rs`),
//! who is asking in `login.rs`, `POST /events` in `events.rs`.
//!
//! Account ids: the Session names each user's one account by
//! [`account_id`], a JMAP Id derived from the user name.

pub mod admin;
/// The JMAP request envelope, from [`jmap_web_push_protocol`].
pub use jmap_web_push_protocol::envelope as api;
mod api_route;
pub mod auth;
mod events;
mod limits;
mod login;
mod session;

use api_route::api_handler;
use session::{plugin_session, session, supported_capabilities};
pub mod metrics;
pub mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::settings::{FlavourSetting, Settings, StoreKind};
use auth::Authenticator;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{
    CallError, Caller, Flavour, HttpClient, HttpPolicy, PushPlugin, SandboxOptions,
};
use limits::{close_connection, read_body, ApiSlot, BodyError};
use metrics::Metrics;

/// What a reload replaces: the settings in force and what is built from
/// them. A request takes one snapshot ([`AppState::current`]) and uses it
/// throughout, so it never sees half of a reload.
pub struct Current {
    settings: Settings,
    auth: Arc<Authenticator>,
    plugin: Arc<PushPlugin>,
    base_url: String,
}

/// Everything a request handler needs.
pub struct AppState {
    current: RwLock<Arc<Current>>,
    store: Arc<dyn KvStore>,
    /// The bound address (the default base URL).
    addr: SocketAddr,
    /// The file a reload re-reads; `None`: reloads are refused.
    config_file: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Failed authentications per client address and user name.
    limiter: throttle::FailureLimiter,
    /// Credentials a reload revoked whose subscriptions are not yet all
    /// destroyed (retried on every tick).
    pending_revocations: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Where Argon2 verifications run.
    passwords: throttle::PasswordPool,
    metrics: Arc<Metrics>,
    /// JMAP API requests in flight per user name (`maxConcurrentRequests`).
    in_flight: Mutex<HashMap<String, u32>>,
    /// Wakes the tick task early: a call may have left work due sooner
    /// than the task's current sleep (a 429's Retry-After, a 5xx backoff,
    /// a verification to re-send).
    tick_wake: tokio::sync::Notify,
}

/// The JMAP account id of `username`'s account: `"a"` followed by the
/// base64url (no padding) of the first 15 octets of SHA-256 of the UTF-8
/// user name, 21 characters in all.
///
/// RFC 8620 §1.2 Ids are 1-255 characters of `A-Za-z0-9-_`; a user name
/// such as `alice@example.com` is not one. The derivation depends on the
/// user name only, so the id is the same in every Session, across restarts
/// and on every process serving the user; the leading letter keeps it from
/// starting with a digit or a dash, as §1.2 advises. 120 bits make
/// collisions between users negligible.
pub fn account_id(username: &str) -> String {
    let digest = Sha256::digest(username.as_bytes());
    format!(
        "a{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..15])
    )
}

/// A short fingerprint of the store `settings` name (its kind and a hash
/// of its canonical path or URL), so that a command can tell whether a
/// running server uses the store of its own configuration without either
/// side revealing the path or the URL (which may hold a password).
pub fn store_fingerprint(settings: &Settings) -> String {
    let (kind, location) = match settings.store.kind {
        StoreKind::Memory => ("memory", String::new()),
        StoreKind::Embedded => (
            "embedded",
            std::fs::canonicalize(&settings.store.path)
                .unwrap_or_else(|_| settings.store.path.clone())
                .display()
                .to_string(),
        ),
        StoreKind::Postgres => ("postgres", settings.store.url.clone().unwrap_or_default()),
    };
    let digest = Sha256::digest(location.as_bytes());
    format!(
        "{kind}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..9])
    )
}

/// Opens the configured store backend.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn KvStore>> {
    Ok(match settings.store.kind {
        StoreKind::Memory => Arc::new(jmap_web_push_host::store::memory::MemoryStore::new()),
        StoreKind::Embedded => Arc::new(jmap_web_push_host::store::embedded::EmbeddedStore::open(
            &settings.store.path,
        )?),
        StoreKind::Postgres => {
            let url = settings
                .store
                .url
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("store.url is required for postgres"))?;
            Arc::new(jmap_web_push_host::store::postgres::PostgresStore::open(
                url,
            )?)
        }
    })
}

impl AppState {
    /// The settings, users and plugin in force now.
    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace_current(&self, next: Arc<Current>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
    }
}

/// The base URL clients use: `server.public_url`, or `http://<bound address>`.
fn base_url(settings: &Settings, addr: SocketAddr) -> String {
    settings
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string()
}

/// Builds the plugin as the settings say, with metered outbound HTTP.
pub fn build_plugin(
    settings: &Settings,
    store: Arc<dyn KvStore>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<PushPlugin> {
    let http = build_http(settings, &metrics)?;
    build_plugin_on(settings, store, http)
}

/// The outbound HTTP client as `[http]` says, reporting to `metrics`.
fn build_http(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<HttpClient>> {
    let policy = HttpPolicy {
        allow_insecure_loopback: settings.plugin.insecure_test_mode,
        connect_timeout: Duration::from_millis(settings.http.connect_timeout_ms),
        max_timeout: Duration::from_millis(settings.http.max_timeout_ms),
        max_concurrency: settings.http.max_concurrency,
        max_connections_per_origin: settings.http.max_connections_per_origin,
        max_streams_per_http2_origin: settings.http.max_streams_per_http2_origin,
        max_body_prefix: settings.http.max_body_prefix,
        extra_root_certificates: settings
            .http
            .extra_ca_files
            .iter()
            .map(|path| jmap_web_push_host::net::read_pem_certificates(path))
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        ..HttpPolicy::default()
    };
    Ok(Arc::new(
        HttpClient::new(policy)?.with_observer(metrics.http_observer()),
    ))
}

/// The plugin as `[plugin]` and `[sandbox]` say, on `store` and `http`.
fn build_plugin_on(
    settings: &Settings,
    store: Arc<dyn KvStore>,
    http: Arc<HttpClient>,
) -> anyhow::Result<PushPlugin> {
    let defaults = SandboxOptions::default();
    PushPlugin::builder()
        .config(settings.plugin.clone())
        .store(store)
        .http_client(http)
        .sandbox(SandboxOptions {
            flavour: match settings.sandbox.flavour {
                FlavourSetting::Wide => Flavour::Wide,
                FlavourSetting::Portable => Flavour::Portable,
            },
            memory_limit: settings.sandbox.memory_limit_mib << 20,
            call_deadline: Duration::from_millis(settings.sandbox.call_deadline_ms),
            aot_cache_dir: settings
                .sandbox
                .aot_cache_dir
                .clone()
                .or(defaults.aot_cache_dir),
            ..defaults
        })
        .build()
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The base URL clients use.
    pub base_url: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    state: Arc<AppState>,
}

impl Running {
    /// Re-reads the configuration file and applies it (see [`admin::reload`]).
    pub async fn reload(&self) -> Result<admin::ReloadReport, admin::ReloadError> {
        admin::reload(&self.state).await
    }

    /// Stops accepting, finishes in-flight requests (and their pushes) and
    /// the current tick, then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }
}

/// Binds and starts the server in the current tokio runtime. Reloads are
/// refused: there is no file to re-read (see [`start_with_file`]).
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    start_with_file(settings, None).await
}

/// Binds and starts the server; `config_file` is the file `settings` were
/// read from, which a reload re-reads.
pub async fn start_with_file(
    settings: Settings,
    config_file: Option<PathBuf>,
) -> anyhow::Result<Running> {
    let s1 = settings.clone();
    // The sync PostgreSQL client must not run on an async worker.
    let store = tokio::task::spawn_blocking(move || open_store(&s1)).await??;
    start_on(settings, config_file, store).await
}

/// Binds and starts the server on a store the embedder opened (`[store]`
/// of `settings` is not used): a backend of its own, or one wrapped to
/// observe or inject faults. Reloads are refused, as for [`start`].
pub async fn start_on_store(
    settings: Settings,
    store: Arc<dyn KvStore>,
) -> anyhow::Result<Running> {
    start_on(settings, None, store).await
}

async fn start_on(
    settings: Settings,
    config_file: Option<PathBuf>,
    store: Arc<dyn KvStore>,
) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let http = build_http(&settings, &metrics)?;
    let s2 = settings.clone();
    let (st2, http2) = (store.clone(), http.clone());
    let plugin =
        Arc::new(tokio::task::spawn_blocking(move || build_plugin_on(&s2, st2, http2)).await??);
    let listener = tokio::net::TcpListener::bind(settings.server.listen).await?;
    let addr = listener.local_addr()?;
    let base_url = base_url(&settings, addr);
    if settings.server.admin_token.is_none() {
        tracing::warn!(
            "no server.admin_token: the event intake (POST /events) and /admin routes are disabled"
        );
    }
    let state = Arc::new(AppState {
        limiter: throttle::FailureLimiter::new(
            settings.server.max_auth_failures,
            Duration::from_secs(settings.server.auth_failure_window_secs),
        ),
        passwords: throttle::PasswordPool::new(settings.server.password_check_threads),
        pending_revocations: Mutex::new(Default::default()),
        current: RwLock::new(Arc::new(Current {
            auth: Arc::new(Authenticator::new(settings.users.clone())),
            settings,
            plugin,
            base_url: base_url.clone(),
        })),
        store,
        addr,
        config_file,
        reloading: tokio::sync::Mutex::new(()),
        metrics,
        in_flight: Mutex::new(HashMap::new()),
        tick_wake: tokio::sync::Notify::new(),
    });
    let app = axum::Router::new()
        .route("/.well-known/jmap", get(session))
        .route("/jmap/session", get(session))
        .route("/jmap/api", post(api_handler))
        .route("/events", post(events::events))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/vapid", get(admin::vapid_show))
        .route("/admin/vapid/rotate", post(admin::vapid_rotate))
        .route("/admin/reload", post(admin::reload_handler))
        .with_state(state.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(tick_loop(state.clone(), rx.clone()));
    let mut rx2 = rx.clone();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx2.wait_for(|stop| *stop).await;
        })
        .await?;
        ticker.await?;
        Ok(())
    });
    tracing::info!(%addr, %base_url, "serving JMAP push");
    Ok(Running {
        addr,
        base_url,
        shutdown: tx,
        task,
        state,
    })
}

/// Calls `tick` when due until shutdown.
///
/// The plugin's report says when due work is next; a `state-changed` that
/// deferred pushes or a `PushSubscription/set` may leave work due sooner
/// (a 429 with `Retry-After: 2`, a 5xx backoff, a verification retry), so
/// those wake the task ([`AppState::tick_wake`]) and the tick it runs then
/// sleeps exactly until the earliest due entry.
async fn tick_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.tick_wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let has_pending = !state
            .pending_revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if has_pending {
            admin::revoke_pending(&state).await;
        }
        let plugin = state.current().plugin.clone();
        let result = tokio::task::spawn_blocking(move || plugin.tick()).await;
        wait = match result {
            Ok(Ok(Ok(report))) => {
                state.metrics.record_report(&report.delivery);
                Duration::from_millis(report.next_run_in_ms.unwrap_or(30_000).clamp(50, 30_000))
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = ?e, "tick failed");
                Duration::from_secs(5)
            }
            Ok(Err(e)) => {
                state.metrics.traps.inc();
                tracing::error!(error = %e, "tick trapped");
                Duration::from_secs(5)
            }
            Err(e) => {
                tracing::error!(error = %e, "tick task failed");
                Duration::from_secs(5)
            }
        };
    }
}

pub(super) fn problem(status: StatusCode, kind: &str, detail: impl Into<String>) -> Response {
    let body = json!({
        "type": kind,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn unauthorized() -> Response {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "about:blank",
        "authentication required",
    );
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"jmap\", charset=\"UTF-8\""),
    );
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"jmap\""),
    );
    r
}

fn json_response(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn trap(state: &AppState, e: CallError) -> Response {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "urn:ietf:params:jmap:error:serverFail",
        trapped(state, e),
    )
}

/// Counts and logs a failed plugin call; its description.
pub(super) fn trapped(state: &AppState, e: CallError) -> String {
    state.metrics.traps.inc();
    tracing::error!(error = %e, "plugin call failed");
    e.to_string()
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    let max_age = Duration::from_secs(state.current().settings.server.metrics_count_interval_secs);
    let counts = state.metrics.store_gauges(&state.store, max_age).await;
    let mut r = (StatusCode::OK, state.metrics.render(counts.0, counts.1)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_pinned_jmap_ids() {
        // Pinned: a change would give every user a new account id.
        assert_eq!(account_id("alice@example.com"), "a_42YGfwOEr8NJIkuRZh-");
        for name in ["alice@example.com", "", "ü@例え.jp", &"x".repeat(1000)] {
            let id = account_id(name);
            assert_eq!(id.len(), 21);
            assert!(id.starts_with('a'));
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        assert_ne!(account_id("alice"), account_id("Alice"));
    }
}
