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
