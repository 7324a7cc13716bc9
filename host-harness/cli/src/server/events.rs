//! `POST /events`: the mail server's event intake (Bearer
//! `server.admin_token`): one event or an array of them, `StateChange`,
//! `CredentialRevoked`, `UserDeleted`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{json_response, problem, trap, AppState};
use jmap_web_push_host::{AccountChanges, CallError, StateChange, TypeState};

/// Parses one event of the intake format.
fn parse_event(v: &Value) -> Result<Event, String> {
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("type is required (StateChange, CredentialRevoked, UserDeleted)")?;
    let username = v
        .get("username")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or("username (a non-empty string) is required")?
        .to_string();
    match kind {
        "StateChange" => {
            let changed = v
                .get("changed")
                .and_then(Value::as_object)
                .ok_or("changed must be an object: accountId → {type → state}")?;
            let mut accounts = Vec::new();
            for (account, types) in changed {
                let types = types
                    .as_object()
                    .ok_or_else(|| format!("changed.{account} must be an object: type → state"))?;
                let mut changes = Vec::new();
                for (t, s) in types {
                    let s = s
                        .as_str()
                        .ok_or_else(|| format!("changed.{account}.{t} must be a state string"))?;
                    changes.push(TypeState {
                        type_name: t.clone(),
                        state: s.to_string(),
                    });
                }
                accounts.push(AccountChanges {
                    account_id: account.clone(),
                    changes,
                });
            }
            Ok(Event::StateChange(StateChange {
                username,
                changed: accounts,
            }))
        }
        "CredentialRevoked" => {
            let c = v
                .get("credentialId")
                .and_then(Value::as_str)
                .ok_or("credentialId is required")?;
            Ok(Event::CredentialRevoked(username, c.to_string()))
        }
        "UserDeleted" => Ok(Event::UserDeleted(username)),
        other => Err(format!("unknown event type {other:?}")),
    }
}

enum Event {
    StateChange(StateChange),
    CredentialRevoked(String, String),
    UserDeleted(String),
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
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "about:blank",
                format!("the body is not JSON: {e}"),
            )
        }
    };
    let items = match v {
        Value::Array(a) => a,
        single => vec![single],
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match parse_event(item) {
            Ok(e) => parsed.push(e),
            Err(why) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "about:blank",
                    format!("event {i}: {why}"),
                )
            }
        }
    }
    let mut results = Vec::new();
    for event in parsed {
        let st = state.clone();
        let plugin = current.plugin.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<Value, CallError> {
            Ok(match event {
                Event::StateChange(e) => match plugin.state_changed(&e)? {
                    Ok(report) => {
                        st.metrics.record_report(&report);
                        if report.deferred > 0 {
                            // Retries are due, maybe before the tick
                            // task's next run.
                            st.tick_wake.notify_one();
                        }
                        json!({"delivered": report.delivered, "deferred": report.deferred,
                               "dropped": report.dropped, "destroyed": report.destroyed})
                    }
                    Err(e) => json!({"error": format!("{e:?}")}),
                },
                Event::CredentialRevoked(u, c) => match plugin.credential_revoked(&u, &c)? {
                    Ok(n) => json!({"destroyed": n}),
                    Err(e) => json!({"error": format!("{e:?}")}),
                },
                Event::UserDeleted(u) => match plugin.user_deleted(&u)? {
                    Ok(n) => json!({"destroyed": n}),
                    Err(e) => json!({"error": format!("{e:?}")}),
                },
            })
        })
        .await;
        match r {
            Ok(Ok(v)) => {
                state.metrics.events.fetch_add(1, Ordering::Relaxed);
                results.push(v)
            }
            Ok(Err(e)) => return trap(&state, e),
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
