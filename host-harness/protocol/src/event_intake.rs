//! The event intake of `serve` (`POST /events`): one event object or an
//! array of them.
//!
//! ```json
//! {"type": "StateChange", "username": "alice",
//!  "changed": {"accountId": {"Email": "state", ...}, ...}}
//! {"type": "CredentialRevoked", "username": "alice", "credentialId": "..."}
//! {"type": "UserDeleted", "username": "alice"}
//! ```
//!
//! Contract: [`parse`] MUST accept exactly these shapes (extra members are
//! ignored), MUST refuse anything else with an [`IntakeError`] that names
//! the event and the member at fault, and MUST NOT panic on any input.

use std::fmt;

use jmap_web_push_guest::json::{self, Value};

/// One change of a type's state in an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeState {
    /// The data type (`Email`, `Mailbox`, ...).
    pub type_name: String,
    /// Its new state string.
    pub state: String,
}

/// The changes of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChanges {
    /// The JMAP account id.
    pub account_id: String,
    /// Its changed types, in the order of the JSON object (sorted by name).
    pub changes: Vec<TypeState>,
}

/// One event from the mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// States changed in some of the user's accounts.
    StateChange {
        /// The user (non-empty).
        username: String,
        /// The accounts and their changed types.
        changed: Vec<AccountChanges>,
    },
    /// A credential of the user was revoked.
    CredentialRevoked {
        /// The user (non-empty).
        username: String,
        /// The credential.
        credential_id: String,
    },
    /// The user was deleted.
    UserDeleted {
        /// The user (non-empty).
        username: String,
    },
}

/// Why a body is not an acceptable batch of events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntakeError {
    /// The body is not I-JSON (syntax, UTF-8 or a member name twice).
    NotJson(String),
    /// Event `index` (0 for a single object) is malformed.
    Event {
        /// The event's position in the array.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntakeError::NotJson(e) => write!(f, "the body is not I-JSON: {e}"),
            IntakeError::Event { index, reason } => write!(f, "event {index}: {reason}"),
        }
    }
}

impl std::error::Error for IntakeError {}

/// Parses a request body: one event object or an array of them.
///
/// # Errors
/// [`IntakeError::NotJson`] for a body that is not I-JSON, otherwise
/// [`IntakeError::Event`] for the first malformed event.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, IntakeError> {
    let v = json::parse_slice(body).map_err(|e| IntakeError::NotJson(e.to_string()))?;
    let items = match v {
        Value::Array(a) => a,
        single => vec![single],
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            parse_event(item).map_err(|reason| IntakeError::Event { index, reason })
        })
        .collect()
}

/// Parses one event object.
fn parse_event(v: &Value) -> Result<Event, String> {
    if !v.is_object() {
        return Err("an event must be a JSON object".into());
    }
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
            let mut accounts = Vec::with_capacity(changed.len());
            for (account, types) in changed {
                let types = types.as_object().ok_or_else(|| {
                    format!("changed.{} must be an object: type → state", short(account))
                })?;
                let mut changes = Vec::with_capacity(types.len());
                for (t, s) in types {
                    let s = s.as_str().ok_or_else(|| {
                        format!(
                            "changed.{}.{} must be a state string",
                            short(account),
                            short(t)
                        )
                    })?;
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
            Ok(Event::StateChange {
                username,
                changed: accounts,
            })
        }
        "CredentialRevoked" => {
            let credential_id = v
                .get("credentialId")
                .and_then(Value::as_str)
                .ok_or("credentialId is required")?
                .to_string();
            Ok(Event::CredentialRevoked {
                username,
                credential_id,
            })
        }
        "UserDeleted" => Ok(Event::UserDeleted { username }),
        other => Err(format!("unknown event type {:?}", short(other))),
    }
}

/// At most 64 characters of a name from the input, for error messages.
fn short(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_or_an_array_of_them_is_read() {
        let one = br#"{"type":"UserDeleted","username":"a","extra":1}"#;
        assert_eq!(
            parse(one).unwrap(),
            vec![Event::UserDeleted {
                username: "a".into()
            }]
        );
        let many = br#"[{"type":"StateChange","username":"a","changed":{"acc":{"Mailbox":"2","Email":"1"}}},
                        {"type":"CredentialRevoked","username":"a","credentialId":"c"}]"#;
        assert_eq!(
            parse(many).unwrap(),
            vec![
                Event::StateChange {
                    username: "a".into(),
                    changed: vec![AccountChanges {
                        account_id: "acc".into(),
                        changes: vec![
                            TypeState {
                                type_name: "Email".into(),
                                state: "1".into()
                            },
                            TypeState {
                                type_name: "Mailbox".into(),
                                state: "2".into()
                            },
                        ],
                    }],
                },
                Event::CredentialRevoked {
                    username: "a".into(),
                    credential_id: "c".into()
                },
            ]
        );
        assert_eq!(parse(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn malformed_events_are_refused_naming_the_event_and_member() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not I-JSON"),
            (
                br#"{"type":"UserDeleted","username":"a","username":"b"}"#,
                "not I-JSON",
            ),
            (b"[1]", "event 0: an event must be a JSON object"),
            (br#"{"username":"a"}"#, "event 0: type is required"),
            (
                br#"{"type":"UserDeleted","username":""}"#,
                "event 0: username",
            ),
            (
                br#"[{"type":"UserDeleted","username":"a"},{"type":"Nope","username":"a"}]"#,
                "event 1: unknown event type \"Nope\"",
            ),
            (
                br#"{"type":"StateChange","username":"a","changed":[]}"#,
                "event 0: changed must be an object",
            ),
            (
                br#"{"type":"StateChange","username":"a","changed":{"x":1}}"#,
                "event 0: changed.x must be an object",
            ),
            (
                br#"{"type":"StateChange","username":"a","changed":{"x":{"Email":1}}}"#,
                "event 0: changed.x.Email must be a state string",
            ),
            (
                br#"{"type":"CredentialRevoked","username":"a"}"#,
                "event 0: credentialId is required",
            ),
        ];
        for (body, want) in cases {
            let got = parse(body).unwrap_err().to_string();
            assert!(
                got.contains(want),
                "{}: {got}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
