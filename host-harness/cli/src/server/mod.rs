//! `serve`: a JMAP server for push subscriptions in front of the plugin.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /.well-known/jmap` | the Session object (authenticated) |
//! | `POST /jmap/api` | the JMAP API: `PushSubscription/get`, `/set`, `Core/echo` |
//! | `POST /events` | the mail server's event intake (admin token) |
//! | `GET /metrics` | Prometheus text format |
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
//! `POST /jmap/api` enforces the limits the Session advertises
//! (`server.max_size_request`, `server.max_concurrent_requests`; RFC 8620
//! §3.6.1), see [`limits`]; `POST /events` is in [`events`].
//!
//! Account ids: the Session names each user's one account by
//! [`account_id`], a JMAP Id derived from the user name.

pub mod admin;
pub mod api;
pub mod auth;
mod events;
mod limits;
pub mod metrics;
pub mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
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
    let metrics = Arc::new(Metrics::default());
    let s1 = settings.clone();
    // The sync PostgreSQL client must not run on an async worker.
    let store = tokio::task::spawn_blocking(move || open_store(&s1)).await??;
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
                state.metrics.traps.fetch_add(1, Ordering::Relaxed);
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

/// A request-level error as RFC 7807 problem JSON (HTTP 400).
fn request_error(e: &api::RequestError) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, e.to_json().to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// The compatibility `state` of a `PushSubscription/get` response
/// (`server.compat_push_subscription_get_state`): base64url of the first 12
/// octets of SHA-256 over the JSON text of the returned `list`.
fn push_get_state(arguments: &Value) -> String {
    let list = arguments.get("list").unwrap_or(&Value::Null).to_string();
    let digest = Sha256::digest(list.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
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

pub(super) fn json_response(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Why a request was not authenticated.
enum AuthFailure {
    /// No credentials, or wrong ones: 401.
    Unauthorized,
    /// Too many failures from this address or for this user name: 429.
    Throttled(Duration),
    /// Every password-check thread stayed busy: 503.
    Busy,
}

impl AuthFailure {
    fn response(&self) -> Response {
        let (status, detail, wait) = match self {
            AuthFailure::Unauthorized => return unauthorized(),
            AuthFailure::Throttled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentication attempts from this address or for this user name",
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ),
            AuthFailure::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "every password check is busy",
                1,
            ),
        };
        let mut r = problem(
            status,
            "about:blank",
            format!("{detail}; retry after {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        r
    }
}

/// The client's address: the peer, or, when the peer is one of
/// `server.trusted_proxies`, the nearest address in `X-Forwarded-For` that
/// is not a trusted proxy.
fn client_address(trusted: &[IpAddr], headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// Authenticates a request: bearer tokens and Basic headers verified
/// before at once; a new Basic password on the password pool, unless too
/// many failures came from the client's address or for that user name.
async fn authenticate(
    state: &AppState,
    current: &Current,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<auth::Principal, AuthFailure> {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(AuthFailure::Unauthorized);
    };
    let address = client_address(&current.settings.server.trusted_proxies, headers, peer);
    match current.auth.quick(h) {
        auth::Quick::Known(p) => Ok(p),
        auth::Quick::Refused { username } => {
            if let Some(wait) = state.limiter.blocked(address, username.as_deref()) {
                return Err(AuthFailure::Throttled(wait));
            }
            state.limiter.failed(address, username.as_deref());
            Err(AuthFailure::Unauthorized)
        }
        auth::Quick::NeedsPassword(check) => {
            let username = check.username.clone();
            if let Some(wait) = state.limiter.blocked(address, Some(&username)) {
                return Err(AuthFailure::Throttled(wait));
            }
            match state.passwords.verify(current.auth.clone(), check).await {
                Ok(Some(p)) => Ok(p),
                Ok(None) => {
                    state.limiter.failed(address, Some(&username));
                    Err(AuthFailure::Unauthorized)
                }
                Err(throttle::PoolError::Busy) => Err(AuthFailure::Busy),
            }
        }
    }
}

/// The peer address axum recorded for the connection.
fn peer_of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

pub(super) fn trap(state: &AppState, e: CallError) -> Response {
    state.metrics.traps.fetch_add(1, Ordering::Relaxed);
    tracing::error!(error = %e, "plugin call failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "urn:ietf:params:jmap:error:serverFail",
        e.to_string(),
    )
}

fn supported_capabilities(current: &Current, plugin_caps: &[(String, Value)]) -> Vec<String> {
    let mut v = vec![api::CORE.to_string()];
    v.extend(current.settings.server.extra_capabilities.iter().cloned());
    v.extend(plugin_caps.iter().map(|(u, _)| u.clone()));
    v
}

async fn plugin_session(
    state: &AppState,
    current: &Current,
) -> Result<(Vec<(String, Value)>, String), Response> {
    let plugin = current.plugin.clone();
    match tokio::task::spawn_blocking(move || plugin.session()).await {
        Ok(Ok(Ok(info))) => Ok((
            info.capabilities
                .into_iter()
                .map(|c| (c.uri, serde_json::from_str(&c.value).unwrap_or(Value::Null)))
                .collect(),
            info.state,
        )),
        Ok(Ok(Err(e))) => Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:ietf:params:jmap:error:serverUnavailable",
            format!("{e:?}"),
        )),
        Ok(Err(e)) => Err(trap(state, e)),
        Err(e) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "about:blank",
            e.to_string(),
        )),
    }
}

async fn session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Response {
    let current = state.current();
    let who = match authenticate(&state, &current, &headers, peer_of(&extensions)).await {
        Ok(who) => who,
        Err(failure) => return failure.response(),
    };
    let (caps, plugin_state) = match plugin_session(&state, &current).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The limits the plugin applies (it brings out-of-range values into
    // range), not the raw configuration.
    let p = &current.settings.plugin.clone().normalized();
    let mut capabilities = Map::new();
    capabilities.insert(
        api::CORE.into(),
        json!({
            "maxSizeUpload": 0,
            "maxConcurrentUpload": 1,
            "maxSizeRequest": current.settings.server.max_size_request,
            "maxConcurrentRequests": current.settings.server.max_concurrent_requests,
            "maxCallsInRequest": api::MAX_CALLS,
            "maxObjectsInGet": p.max_objects_in_get,
            "maxObjectsInSet": p.max_objects_in_set,
            "collationAlgorithms": ["i;ascii-casemap", "i;octet"],
        }),
    );
    let mut account_caps = Map::new();
    for uri in &current.settings.server.extra_capabilities {
        capabilities.insert(uri.clone(), json!({}));
        account_caps.insert(uri.clone(), api::placeholder_account_capability(uri));
    }
    for (uri, value) in &caps {
        capabilities.insert(uri.clone(), value.clone());
    }
    let account_id = account_id(&who.username);
    let mut primary = Map::new();
    for uri in &current.settings.server.extra_capabilities {
        primary.insert(uri.clone(), json!(account_id));
    }
    let base = &current.base_url;
    json_response(json!({
        "capabilities": capabilities,
        "accounts": {account_id.clone(): {
            "name": who.username,
            "isPersonal": true,
            "isReadOnly": false,
            "accountCapabilities": account_caps,
        }},
        "primaryAccounts": primary,
        "username": who.username,
        "apiUrl": format!("{base}/jmap/api"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
        "eventSourceUrl": format!("{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": plugin_state,
    }))
}

async fn api_handler(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let current = state.current();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let who = match authenticate(&state, &current, headers, peer_of(&parts.extensions)).await {
        Ok(who) => who,
        Err(failure) => {
            // The body is not read for a stranger: a connection that still
            // carries some of it cannot be reused.
            let has_body =
                declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
            let r = failure.response();
            return if has_body {
                close_connection(r, parts.version)
            } else {
                r
            };
        }
    };
    state.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    let limit = current.settings.server.max_size_request;
    let body = match read_body(body, limit, declared).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { drained }) => {
            let r = request_error(&api::RequestError::limit(
                "maxSizeRequest",
                format!(
                    "the request body is larger than maxSizeRequest ({limit} octets){}",
                    declared.map_or(String::new(), |n| format!(": {n} octets"))
                ),
            ));
            return if drained {
                r
            } else {
                close_connection(r, parts.version)
            };
        }
        Err(BodyError::Read(e)) => {
            return close_connection(
                problem(
                    StatusCode::BAD_REQUEST,
                    "about:blank",
                    format!("the request body could not be read: {e}"),
                ),
                parts.version,
            )
        }
    };
    let max = current.settings.server.max_concurrent_requests;
    let Some(_slot) = ApiSlot::try_acquire(&state, &who.username, max) else {
        return request_error(&api::RequestError::limit(
            "maxConcurrentRequests",
            format!(
                "{} already has {max} API requests in flight (maxConcurrentRequests); retry when one has been answered",
                who.username
            ),
        ));
    };
    let (caps, session_state) = match plugin_session(&state, &current).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let supported = supported_capabilities(&current, &caps);
    let request = match api::parse(&body, &supported) {
        Ok(r) => r,
        Err(e) => return request_error(&e),
    };
    let caller = Caller {
        username: who.username.clone(),
        credential_id: Some(who.credential_id.clone()),
    };
    let echo_created = request.created_ids.is_some();
    let mut created_ids = request.created_ids.unwrap_or_default();
    let mut responses: Vec<(String, Value, String)> = Vec::new();
    for (name, mut args, call_id) in request.calls {
        if let Err(e) = api::resolve_references(&mut args, &responses) {
            responses.push((
                "error".into(),
                json!({"type": e.kind, "description": e.description}),
                call_id,
            ));
            continue;
        }
        match name.as_str() {
            "Core/echo" => responses.push((name, Value::Object(args), call_id)),
            "PushSubscription/get" | "PushSubscription/set" => {
                let plugin = current.plugin.clone();
                let (c, n, a, ids) = (caller.clone(), name.clone(), Value::Object(args).to_string(), created_ids.clone());
                let result = tokio::task::spawn_blocking(move || plugin.call(&c, &n, &a, &ids)).await;
                if name == "PushSubscription/set" {
                    // A create may have left a verification retry due soon.
                    state.tick_wake.notify_one();
                }
                match result {
                    Ok(Ok(Ok(r))) => {
                        created_ids = r.created_ids;
                        let mut v = serde_json::from_str(&r.arguments).unwrap_or(Value::Null);
                        if name == "PushSubscription/get" && current.settings.server.compat_push_subscription_get_state {
                            let st = push_get_state(&v);
                            if let Value::Object(m) = &mut v {
                                m.entry("state").or_insert(Value::String(st));
                            }
                        }
                        responses.push((name, v, call_id));
                    }
                    Ok(Ok(Err(e))) => responses.push((
                        "error".into(),
                        json!({"type": e.error_type, "description": e.description}),
                        call_id,
                    )),
                    Ok(Err(e)) => {
                        state.metrics.traps.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "plugin call failed");
                        responses.push(("error".into(), json!({"type": "serverFail", "description": e.to_string()}), call_id));
                    }
                    Err(e) => responses.push(("error".into(), json!({"type": "serverFail", "description": e.to_string()}), call_id)),
                }
            }
            other => responses.push((
                "error".into(),
                json!({"type": "unknownMethod", "description": format!("{other} is not supported by this server")}),
                call_id,
            )),
        }
    }
    let mut out = json!({
        "methodResponses": responses.into_iter().map(|(n, v, id)| json!([n, v, id])).collect::<Vec<_>>(),
        "sessionState": session_state,
    });
    if echo_created {
        out["createdIds"] = Value::Object(
            created_ids
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        );
    }
    json_response(out)
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    let max_age = Duration::from_secs(state.current().settings.server.metrics_count_interval_secs);
    let counts = state.metrics.store_gauges(&state.store, max_age).await;
    let mut r = (StatusCode::OK, state.metrics.render(counts.0, counts.1)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not trusted: the header is the client's own claim, ignored.
        assert_eq!(client_address(&[], &h, Some(peer)), proxy);
        assert_eq!(client_address(&[proxy], &h, Some(peer)), ip("198.51.100.7"));
        // The nearest untrusted hop wins; what the client wrote further
        // left does not.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.9, 10.0.0.6"),
        );
        let both = [proxy, ip("10.0.0.6")];
        assert_eq!(client_address(&both, &h, Some(peer)), ip("203.0.113.9"));
        // Garbage stops the walk at the proxy itself.
        h.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_address(&[proxy], &h, Some(peer)), proxy);
    }

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
