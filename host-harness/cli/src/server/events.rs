//! `POST /events`: the mail server's event intake (Bearer
//! `server.admin_token`): one event or an array of them, `StateChange`,
//! `CredentialRevoked`, `UserDeleted` (the format is
//! `jmap_web_push_protocol::event_intake`).
//!
//! The answer tells the mail server what it must send again:
//!
//! - 200 `{"results": [...]}`: every event was taken, one result each
//!   (`invalid-argument` results are events the plugin refuses for good).
//! - 503 with `Retry-After` when the store failed: the events before the
//!   failing one were taken (`results`), that one and the rest were not
//!   (`notTaken`, their count). The mail server MUST send those again.
//!   Nothing is lost, but the failing event may have reached some
//!   subscriptions before the store failed, and they get it again
//!   (at-least-once).
//! - 500 when the plugin trapped, with the same `results` and `notTaken`
//!   (and the same at-least-once for the event that trapped).
//! - 400 for a body that is not events, 401/403 for the token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{json_response, problem, trapped, AppState};
use jmap_web_push_host::{AccountChanges, CallError, PluginError, StateChange, TypeState};
use jmap_web_push_protocol::event_intake as intake;

/// The plugin's form of an intake event.
enum Event {
    StateChange(StateChange),
    CredentialRevoked(String, String),
    UserDeleted(String),
}

impl From<intake::Event> for Event {
    fn from(e: intake::Event) -> Self {
        match e {
            intake::Event::StateChange { username, changed } => Event::StateChange(StateChange {
                username,
                changed: changed
                    .into_iter()
                    .map(|a| AccountChanges {
                        account_id: a.account_id,
                        changes: a
                            .changes
                            .into_iter()
                            .map(|c| TypeState {
                                type_name: c.type_name,
                                state: c.state,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            intake::Event::CredentialRevoked {
                username,
                credential_id,
            } => Event::CredentialRevoked(username, credential_id),
            intake::Event::UserDeleted { username } => Event::UserDeleted(username),
        }
    }
}

pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let current = state.current();
    if let Some(refused) = super::admin::admin_refusal(&current, &headers, "events") {
        return refused;
    }
    let parsed: Vec<Event> = match intake::parse(&body) {
        Ok(events) => events.into_iter().map(Event::from).collect(),
        Err(e) => return problem(StatusCode::BAD_REQUEST, "about:blank", e.to_string()),
    };
    let total = parsed.len();
    let mut results = Vec::new();
    for event in parsed {
        let st = state.clone();
        let plugin = current.plugin.clone();
        let r = tokio::task::spawn_blocking(
            move || -> Result<Result<Value, PluginError>, CallError> {
                Ok(match event {
                    Event::StateChange(e) => plugin.state_changed(&e)?.map(|report| {
                        st.metrics.record_report(&report);
                        if report.deferred > 0 {
                            // Retries are due, maybe before the tick task's
                            // next run.
                            st.tick_wake.notify_one();
                        }
                        json!({"delivered": report.delivered, "deferred": report.deferred,
                           "dropped": report.dropped, "destroyed": report.destroyed})
                    }),
                    Event::CredentialRevoked(u, c) => plugin
                        .credential_revoked(&u, &c)?
                        .map(|n| json!({ "destroyed": n })),
                    Event::UserDeleted(u) => {
                        plugin.user_deleted(&u)?.map(|n| json!({ "destroyed": n }))
                    }
                })
            },
        )
        .await;
        match r {
            Ok(Ok(Ok(v))) => {
                state.metrics.events.inc();
                results.push(v)
            }
            Ok(Ok(Err(PluginError::StoreUnavailable(why)))) => {
                tracing::warn!(error = %why, "event not taken: the store is unavailable");
                let detail = format!(
                    "the store is unavailable ({why}): event {} and the {} after it were not taken; send them again",
                    results.len(),
                    total - results.len() - 1
                );
                return not_taken(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "about:blank",
                    detail,
                    results,
                    total,
                );
            }
            Ok(Ok(Err(e))) => {
                state.metrics.events.inc();
                results.push(json!({"error": format!("{e:?}")}))
            }
            Ok(Err(e)) => {
                let detail = format!(
                    "the plugin failed on event {} ({}): it and the {} after it were not taken",
                    results.len(),
                    trapped(&state, e),
                    total - results.len() - 1
                );
                return not_taken(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "urn:ietf:params:jmap:error:serverFail",
                    detail,
                    results,
                    total,
                );
            }
            Err(e) => {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    e.to_string(),
                )
            }
        }
    }
    json_response(json!({ "results": results }))
}

/// A problem answer for a batch cut short at event `results.len()`: the
/// results of the events taken before it and how many were not taken
/// (`notTaken`), which the mail server sends again; 503s say when
/// (`Retry-After`).
fn not_taken(
    status: StatusCode,
    kind: &str,
    detail: String,
    results: Vec<Value>,
    total: usize,
) -> Response {
    let body = json!({
        "type": kind,
        "status": status.as_u16(),
        "detail": detail,
        "notTaken": total - results.len(),
        "results": results,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}
