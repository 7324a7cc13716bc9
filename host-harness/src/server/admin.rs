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
use std::sync::Arc;

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
use crate::settings::{Settings, SettingsError};
use crate::PluginError;

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

/// `GET /admin/vapid`: `{"applicationServerKey": ...}` (`null` when VAPID
/// is off).
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
    json_response(json!({"applicationServerKey": key, "sessionState": session_state}))
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
    }))
}

/// `POST /admin/reload`: the [`ReloadReport`], or 400 naming what is wrong
/// with the file (the running configuration stays).
pub(super) async fn reload_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_refusal(&state.current(), &headers, "admin") {
        return r;
    }
    match reload(&state).await {
        Ok(report) => json_response(serde_json::to_value(report).unwrap_or(Value::Null)),
        Err(e @ (ReloadError::Invalid(_) | ReloadError::NoConfigFile)) => {
            problem(StatusCode::BAD_REQUEST, "about:blank", e.to_string())
        }
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
    /// (`server.listen`, `store.*`): the running values stay.
    pub restart_required: Vec<String>,
    /// Whether the plugin was built anew (`[plugin]`, `[http]` or
    /// `[sandbox]` changed).
    pub plugin_rebuilt: bool,
    /// Credentials no longer in the file (or whose secret changed), each
    /// revoked: its subscriptions destroyed.
    pub revoked: Vec<RevokedCredential>,
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

/// Why a reload did not happen (the running configuration stays) or did
/// not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was started without a configuration file.
    #[error("the server was started without a configuration file; there is nothing to reload")]
    NoConfigFile,
    /// The file is unreadable or invalid; names the key.
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    /// The plugin could not be built with the new settings.
    #[error("the new plugin settings cannot be used: {0:#}")]
    Plugin(anyhow::Error),
    /// The new configuration is in force, but revoking a removed
    /// credential failed; a later reload or a `CredentialRevoked` event
    /// can finish it.
    #[error(
        "the configuration is in force, but revoking {username}/{credential_id} failed: {reason}"
    )]
    Revocation {
        /// The user.
        username: String,
        /// The credential id.
        credential_id: String,
        /// What failed.
        reason: String,
    },
}

/// Settings read once at start: a change needs a restart (besides
/// `store.*`).
const RESTART_ONLY: &[&str] = &[
    "server.listen",
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
fn credentials(settings: &Settings) -> BTreeSet<(String, String, Option<String>, Option<String>)> {
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

/// Re-reads the configuration file and applies it:
///
/// - users and credentials are replaced; a credential no longer in the
///   file, or whose password hash or token changed, is revoked: requests
///   with it are refused from now on and its subscriptions are destroyed
///   (as a `CredentialRevoked` event does);
/// - `[server]` limits and capabilities, `[plugin]`, `[http]` and
///   `[sandbox]` take effect for requests that start after the reload (the
///   plugin is built anew when one of the last three changed; calls in
///   flight finish on the old one);
/// - `server.listen` and `store.*` need a restart: a change is reported in
///   [`ReloadReport::restart_required`] and the running values stay.
///
/// A file that does not load leaves everything as it was
/// ([`ReloadError::Invalid`] names the key).
pub async fn reload(state: &AppState) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = state.reloading.lock().await;
    let path = state.config_file.clone().ok_or(ReloadError::NoConfigFile)?;
    let loaded = tokio::task::spawn_blocking(move || Settings::load(Some(&path), std::env::vars()))
        .await
        .map_err(|e| ReloadError::Plugin(e.into()))?;
    let mut next = match loaded {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: ADMIN_LOG_TARGET, action = "reload", error = %e, "configuration not reloaded; the running one stays");
            return Err(e.into());
        }
    };
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
    next.server.max_auth_failures = old.server.max_auth_failures;
    next.server.auth_failure_window_secs = old.server.auth_failure_window_secs;
    next.server.password_check_threads = old.server.password_check_threads;
    next.store = old.store.clone();

    let section_changed = |section: &str| {
        report
            .changed
            .iter()
            .any(|k| k == section || k.starts_with(&format!("{section}.")))
    };
    let http_changed = section_changed("http");
    let rebuild = http_changed || section_changed("plugin") || section_changed("sandbox");
    let (plugin, http) = if rebuild {
        let http = if http_changed {
            build_http(&next, &state.metrics).map_err(ReloadError::Plugin)?
        } else {
            current.http.clone()
        };
        let (s, store, h) = (next.clone(), state.store.clone(), http.clone());
        let plugin = tokio::task::spawn_blocking(move || build_plugin_on(&s, store, h))
            .await
            .map_err(|e| ReloadError::Plugin(e.into()))?
            .map_err(ReloadError::Plugin)?;
        (Arc::new(plugin), http)
    } else {
        (current.plugin.clone(), current.http.clone())
    };
    report.plugin_rebuilt = rebuild;

    let kept = credentials(&next);
    let revoked: Vec<(String, String)> = credentials(old)
        .into_iter()
        .filter(|c| !kept.contains(c))
        .map(|(user, id, _, _)| (user, id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    state.replace_current(Arc::new(Current {
        auth: Arc::new(Authenticator::new(next.users.clone())),
        base_url: base_url(&next, state.addr),
        settings: next,
        plugin: plugin.clone(),
        http,
    }));
    for (username, credential_id) in revoked {
        let (p, u, c) = (plugin.clone(), username.clone(), credential_id.clone());
        let result = tokio::task::spawn_blocking(move || p.credential_revoked(&u, &c)).await;
        let outcome = match result {
            Ok(Ok(Ok(n))) => Ok(n),
            Ok(Ok(Err(e))) => Err(format!("{e:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let destroyed = match outcome {
            Ok(n) => n,
            Err(reason) => {
                tracing::error!(target: ADMIN_LOG_TARGET, action = "revoke-credential", username = %username, credential_id = %credential_id, error = %reason, "revoking a removed credential failed");
                return Err(ReloadError::Revocation {
                    username,
                    credential_id,
                    reason,
                });
            }
        };
        tracing::info!(
            target: ADMIN_LOG_TARGET,
            action = "revoke-credential",
            username = %username,
            credential_id = %credential_id,
            destroyed,
            "credential removed from the configuration: revoked"
        );
        report.revoked.push(RevokedCredential {
            username,
            credential_id,
            destroyed,
        });
    }
    state.tick_wake.notify_one();
    tracing::info!(
        target: ADMIN_LOG_TARGET,
        action = "reload",
        changed = ?report.changed,
        restart_required = ?report.restart_required,
        plugin_rebuilt = report.plugin_rebuilt,
        revoked = report.revoked.len(),
        "configuration reloaded"
    );
    Ok(report)
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
