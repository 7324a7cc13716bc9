//! Operating a running server, behind the admin token (`Authorization:
//! Bearer <server.admin_token>`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin/vapid` | the `applicationServerKey` in force |
//! | `POST /admin/vapid/rotate` | a new VAPID key; the old key's subscriptions are destroyed |
//! | `POST /admin/reload` | re-reads the configuration file ([`reload`]) |
//!
//! Answers are JSON objects; failures are RFC 7807 problem JSON. Every
//! admin action is logged (target `jmap_web_push::admin`) with what it
//! changed, never with a secret.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::Authenticator;
use super::{
    base_url, build_http, build_plugin_on, json_response, plugin_session, problem, trap, AppState,
    Current,
};
use crate::settings::{Settings, SettingsError, User};
use jmap_web_push_host::PluginError;

/// The `tracing` target of admin actions.
pub const ADMIN_LOG_TARGET: &str = "jmap_web_push::admin";

/// The refusal of a request without the admin token (`None`: it has it):
/// 403 when no token is configured (the admin routes and the event intake
/// are off), 401 with a `WWW-Authenticate` challenge for `realm` otherwise.
pub(super) fn admin_refusal(
    current: &Current,
    headers: &HeaderMap,
    realm: &'static str,
) -> Option<Response> {
    let Some(token) = current.settings.server.admin_token.as_deref() else {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "about:blank",
            "disabled: server.admin_token is not set",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if Authenticator::is_admin(given, Some(token)) {
        return None;
    }
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "about:blank",
        "the admin token is required",
    );
    let challenge = match realm {
        "events" => "Bearer realm=\"events\"",
        _ => "Bearer realm=\"admin\"",
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(r)
}

/// `GET /admin/vapid`: `{"applicationServerKey", "sessionState",
/// "store"}` (the key `null` when VAPID is off; `store` is
/// [`super::store_fingerprint`]).
pub(super) async fn vapid_show(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let current = state.current();
    if let Some(r) = admin_refusal(&current, &headers, "admin") {
        return r;
    }
    let (caps, session_state) = match plugin_session(&state, &current).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let key = caps
        .iter()
        .find(|(uri, _)| uri == "urn:ietf:params:jmap:webpush-vapid")
        .and_then(|(_, v)| v.get("applicationServerKey").cloned())
        .unwrap_or(Value::Null);
    json_response(json!({
        "applicationServerKey": key,
        "sessionState": session_state,
        "store": super::store_fingerprint(&current.settings),
    }))
}

/// `POST /admin/vapid/rotate`: `{"applicationServerKey", "destroyed",
/// "sessionState"}`; 409 when the key is set in the configuration or VAPID
/// is off.
pub(super) async fn vapid_rotate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let current = state.current();
    if let Some(r) = admin_refusal(&current, &headers, "admin") {
        return r;
    }
    let plugin = current.plugin.clone();
    let rotation = match tokio::task::spawn_blocking(move || plugin.rotate_vapid_key()).await {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(PluginError::BadConfig(why)))) => {
            tracing::warn!(target: ADMIN_LOG_TARGET, action = "vapid-rotate", error = %why, "VAPID key rotation refused");
            return problem(StatusCode::CONFLICT, "about:blank", why);
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(target: ADMIN_LOG_TARGET, action = "vapid-rotate", error = ?e, "VAPID key rotation failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "about:blank",
                format!("the rotation failed: {e:?}"),
            );
        }
        Ok(Err(e)) => return trap(&state, e),
        Err(e) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "about:blank",
                e.to_string(),
            )
        }
    };
    tracing::info!(
        target: ADMIN_LOG_TARGET,
        action = "vapid-rotate",
        application_server_key = %rotation.application_server_key,
        destroyed = rotation.destroyed,
        "VAPID key rotated"
    );
    let session_state = match plugin_session(&state, &current).await {
        Ok((_, s)) => Value::String(s),
        Err(_) => Value::Null,
    };
    json_response(json!({
        "applicationServerKey": rotation.application_server_key,
        "destroyed": rotation.destroyed,
        "sessionState": session_state,
        "store": super::store_fingerprint(&current.settings),
    }))
}

/// `POST /admin/reload`: the [`ReloadReport`], or 400 naming what is wrong
/// with the file (the running configuration stays). The reload runs in a
/// task of its own: a client that goes away does not cut it short.
pub(super) async fn reload_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_refusal(&state.current(), &headers, "admin") {
        return r;
    }
    let task = tokio::spawn(async move { reload(&state).await });
    match task.await {
        Ok(Ok(report)) => json_response(serde_json::to_value(report).unwrap_or(Value::Null)),
        Ok(Err(e @ (ReloadError::Invalid(_) | ReloadError::NoConfigFile))) => {
            problem(StatusCode::BAD_REQUEST, "about:blank", e.to_string())
        }
        Ok(Err(e)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "about:blank",
            e.to_string(),
        ),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "about:blank",
            e.to_string(),
        ),
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReloadReport {
    /// Dotted keys whose value changed and is now in force (`users` for
    /// any change of users or credentials).
    pub changed: Vec<String>,
    /// Dotted keys that changed in the file but need a restart
    /// (`server.listen`, `store.*`...): the running values stay.
    pub restart_required: Vec<String>,
    /// Credentials revoked: no longer in the file or with another secret
    /// (and those a failed revocation left, done now).
    pub revoked: Vec<RevokedCredential>,
    /// Revocations that failed; they are tried again on every tick and
    /// reload until they succeed.
    pub revocation_failed: Vec<FailedRevocation>,
}

/// One credential a reload revoked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RevokedCredential {
    /// The user.
    pub username: String,
    /// The credential id.
    pub credential_id: String,
    /// How many subscriptions were destroyed.
    pub destroyed: u32,
}

/// One revocation that failed (it stays due).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FailedRevocation {
    /// The user.
    pub username: String,
    /// The credential id.
    pub credential_id: String,
    /// What failed.
    pub error: String,
}

/// Why a reload did not happen; the running configuration stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was started without a configuration file.
    #[error("the server was started without a configuration file; there is nothing to reload")]
    NoConfigFile,
    /// The file is unreadable or invalid; names the key.
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    /// The HTTP client or the plugin could not be built with the new
    /// settings (for example a CA file that cannot be read).
    #[error("the new settings cannot be used: {0:#}")]
    Build(anyhow::Error),
}

/// Settings read once at start: a change needs a restart (besides
/// `store.*`).
const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.log_format",
    "server.max_auth_failures",
    "server.auth_failure_window_secs",
    "server.password_check_threads",
];

/// The dotted keys of `a` and `b` (both JSON objects of settings) whose
/// values differ, to the depth of `section.key`.
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return out;
    };
    let sections: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for section in sections {
        let (x, y) = (a.get(section), b.get(section));
        if x == y {
            continue;
        }
        match (x, y) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    if x.get(k) != y.get(k) {
                        out.push(format!("{section}.{k}"));
                    }
                }
            }
            _ => out.push(section.clone()),
        }
    }
    out
}

/// Every (user, credential id) with its secret.
type CredentialKey = (String, String, Option<String>, Option<String>);

fn credentials(settings: &Settings) -> BTreeSet<CredentialKey> {
    settings
        .users
        .iter()
        .flat_map(|u| {
            u.credentials.iter().map(move |c| {
                (
                    u.name.clone(),
                    c.id.clone(),
                    c.password_hash.clone(),
                    c.token_sha256.as_ref().map(|t| t.to_ascii_lowercase()),
                )
            })
        })
        .collect()
}

/// `users` without the credentials in `revoked`.
fn without(users: &[User], revoked: &BTreeSet<(String, String)>) -> Vec<User> {
    users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            credentials: u
                .credentials
                .iter()
                .filter(|c| !revoked.contains(&(u.name.clone(), c.id.clone())))
                .cloned()
                .collect(),
        })
        .collect()
}

/// How long a reload waits for requests that started under the previous
/// configuration before it revokes credentials anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until no request holds the configuration `old` any more (or
/// [`DRAIN_TIMEOUT`] passed).
async fn drained(old: Weak<Current>) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while old.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Re-reads the configuration file and applies it:
///
/// - users and credentials are replaced; a credential no longer in the
///   file, or whose password hash or token changed, is revoked: requests
///   with it are refused from now on and its subscriptions are destroyed
///   (as a `CredentialRevoked` event does). The revocation waits until the
///   requests that started under the previous configuration have finished,
///   and a changed credential is refused until its old subscriptions are
///   gone, so no subscription of a revoked credential survives and none of
///   the new secret is destroyed;
/// - `[server]` limits and capabilities, `[plugin]`, `[http]` and
///   `[sandbox]` take effect for requests that start after the reload (the
///   HTTP client and the plugin are built anew on the same store; calls in
///   flight finish on the old ones);
/// - `server.listen`, `server.log_format`, the login-failure settings and
///   `store.*` need a restart: a change is reported in
///   [`ReloadReport::restart_required`] and the running values stay.
///
/// A file that does not load, or settings the HTTP client or the plugin
/// cannot be built with, leave everything as it was. A revocation that
/// fails is reported, logged and tried again on every tick and reload.
pub async fn reload(state: &AppState) -> Result<ReloadReport, ReloadError> {
    let result = apply_file(state).await;
    match &result {
        Ok(report) => tracing::info!(
            target: ADMIN_LOG_TARGET,
            action = "reload",
            changed = ?report.changed,
            restart_required = ?report.restart_required,
            revoked = report.revoked.len(),
            revocation_failed = report.revocation_failed.len(),
            "configuration reloaded"
        ),
        Err(e) => tracing::error!(
            target: ADMIN_LOG_TARGET,
            action = "reload",
            error = %e,
            "configuration not reloaded; the running one stays"
        ),
    }
    result
}

async fn apply_file(state: &AppState) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = state.reloading.lock().await;
    let path = state.config_file.clone().ok_or(ReloadError::NoConfigFile)?;
    let mut next =
        tokio::task::spawn_blocking(move || Settings::load(Some(&path), std::env::vars()))
            .await
            .map_err(|e| ReloadError::Build(e.into()))??;
    let current = state.current();
    let old = &current.settings;
    let as_json = |s: &Settings| serde_json::to_value(s).unwrap_or(Value::Null);
    let mut report = ReloadReport::default();
    for key in changed_keys(&as_json(old), &as_json(&next)) {
        if RESTART_ONLY.contains(&key.as_str()) || key.starts_with("store.") || key == "store" {
            report.restart_required.push(key);
        } else {
            report.changed.push(key);
        }
    }
    // What cannot change at run time keeps its running value.
    next.server.listen = old.server.listen;
    next.server.log_format = old.server.log_format;
    next.server.max_auth_failures = old.server.max_auth_failures;
    next.server.auth_failure_window_secs = old.server.auth_failure_window_secs;
    next.server.password_check_threads = old.server.password_check_threads;
    next.store = old.store.clone();

    // Built anew every time: the CA files or `insecure_test_mode` may have
    // changed, and the plugin holds the client.
    let http = build_http(&next, &state.metrics).map_err(ReloadError::Build)?;
    let (s, store, h) = (next.clone(), state.store.clone(), http);
    let plugin = Arc::new(
        tokio::task::spawn_blocking(move || build_plugin_on(&s, store, h))
            .await
            .map_err(|e| ReloadError::Build(e.into()))?
            .map_err(ReloadError::Build)?,
    );

    let kept = credentials(&next);
    let revoked: BTreeSet<(String, String)> = credentials(old)
        .into_iter()
        .filter(|c| !kept.contains(c))
        .map(|(user, id, _, _)| (user, id))
        .collect();
    let base_url = base_url(&next, state.addr);
    let final_users = next.users.clone();
    if revoked.is_empty() {
        state.replace_current(Arc::new(Current {
            auth: Arc::new(current.auth.carry_over(final_users)),
            settings: next,
            plugin,
            base_url,
        }));
    } else {
        // 1. Refuse the revoked credentials (a changed one too, for now).
        let interim = without(&final_users, &revoked);
        let mut interim_settings = next.clone();
        interim_settings.users = interim.clone();
        state.replace_current(Arc::new(Current {
            auth: Arc::new(current.auth.carry_over(interim)),
            settings: interim_settings,
            plugin: plugin.clone(),
            base_url: base_url.clone(),
        }));
        // 2. Let requests authenticated with them finish.
        let old = Arc::downgrade(&current);
        drop(current);
        drained(old).await;
        // 3. Revoke; 4. let the changed credentials in with their new secret.
        state
            .pending_revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(revoked);
        let interim_current = state.current();
        state.replace_current(Arc::new(Current {
            auth: Arc::new(interim_current.auth.carry_over(final_users)),
            settings: next,
            plugin,
            base_url,
        }));
        drop(interim_current);
    }
    let (done, failed) = revoke_pending(state).await;
    report.revoked = done;
    report.revocation_failed = failed;
    state.tick_wake.notify_one();
    Ok(report)
}

/// Revokes every credential in [`AppState::pending_revocations`]; what
/// fails stays there for the next tick or reload.
pub(super) async fn revoke_pending(
    state: &AppState,
) -> (Vec<RevokedCredential>, Vec<FailedRevocation>) {
    let due: Vec<(String, String)> = state
        .pending_revocations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (username, credential_id) in due {
        // A credential back in the file (with another secret) is revoked
        // too: its old subscriptions were made with the old secret.
        let plugin = state.current().plugin.clone();
        let (u, c) = (username.clone(), credential_id.clone());
        let result = tokio::task::spawn_blocking(move || plugin.credential_revoked(&u, &c)).await;
        let outcome = match result {
            Ok(Ok(Ok(n))) => Ok(n),
            Ok(Ok(Err(e))) => Err(format!("{e:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(destroyed) => {
                state
                    .pending_revocations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(username.clone(), credential_id.clone()));
                tracing::info!(
                    target: ADMIN_LOG_TARGET,
                    action = "revoke-credential",
                    username = %username,
                    credential_id = %credential_id,
                    destroyed,
                    "credential revoked (removed from the configuration or given another secret)"
                );
                done.push(RevokedCredential {
                    username,
                    credential_id,
                    destroyed,
                });
            }
            Err(error) => {
                tracing::error!(
                    target: ADMIN_LOG_TARGET,
                    action = "revoke-credential",
                    username = %username,
                    credential_id = %credential_id,
                    error = %error,
                    "revoking a credential failed; it is tried again on the next tick"
                );
                failed.push(FailedRevocation {
                    username,
                    credential_id,
                    error,
                });
            }
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_section_and_key() {
        let a = json!({"server": {"listen": "a", "x": 1}, "users": [1], "store": {"kind": "m"}});
        let b = json!({"server": {"listen": "b", "x": 1}, "users": [2], "store": {"kind": "m"}});
        assert_eq!(changed_keys(&a, &b), ["server.listen", "users"]);
        assert!(changed_keys(&a, &a).is_empty());
    }
}
