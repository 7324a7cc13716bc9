//! Pending changes: what could not be pushed yet, merged so that a
//! subscription receives one push with the newest states (RFC 8620 §7.2:
//! the server MUST reduce the frequency when asked to).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::json::{self, RecordError};

/// accountId → type name → state.
pub type Changed = BTreeMap<String, BTreeMap<String, String>>;

/// The stored pending record of one subscription (`pending/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Changes not yet delivered.
    pub changed: Changed,
    /// When the oldest of them arrived, Unix ms.
    pub first_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time, Unix ms (backoff, Retry-After, minimum
    /// interval, or a claim lease).
    pub next_attempt_ms: u64,
    /// Why it is waiting (`429`, `503`, `interval`, ...).
    pub reason: String,
}

impl Pending {
    /// The stored record's JSON text (members in declaration order, the
    /// `serde` form every version wrote).
    pub fn to_record(&self) -> Vec<u8> {
        json::to_record(self)
    }

    /// Reads a record written by [`Pending::to_record`].
    pub fn from_record(bytes: &[u8]) -> Result<Pending, RecordError> {
        json::from_record(bytes)
    }
}

/// `changed` as the JSON object of RFC 8620 §7.1 (accountId → type →
/// state).
pub fn changed_json(changed: &Changed) -> String {
    serde_json::to_string(changed).unwrap_or_default()
}

/// Merges `newer` into `into`: for the same (account, type) the newer
/// state wins.
pub fn merge(into: &mut Changed, newer: &Changed) {
    for (account, types) in newer {
        let slot = into.entry(account.clone()).or_default();
        for (t, state) in types {
            slot.insert(t.clone(), state.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(items: &[(&str, &str, &str)]) -> Changed {
        let mut c = Changed::new();
        for (a, t, s) in items {
            c.entry(a.to_string())
                .or_default()
                .insert(t.to_string(), s.to_string());
        }
        c
    }

    #[test]
    fn record_is_byte_identical_to_the_serde_form() {
        // As the `serde` derive of earlier versions wrote it (394720c).
        const SERDE: &str = r#"{"changed":{"a0":{"Mailbox":"m\\1"},"a1":{"Email":"s1"}},"first_ms":1,"attempts":3,"next_attempt_ms":4,"reason":"429"}"#;
        let p = Pending {
            changed: changed(&[("a1", "Email", "s1"), ("a0", "Mailbox", "m\\1")]),
            first_ms: 1,
            attempts: 3,
            next_attempt_ms: 4,
            reason: "429".into(),
        };
        assert_eq!(String::from_utf8(p.to_record()).unwrap(), SERDE);
        assert_eq!(Pending::from_record(SERDE.as_bytes()).unwrap(), p);
        let wrong = Pending::from_record(br#"{"changed":{"a":{"Email":1}},"first_ms":1,"attempts":3,"next_attempt_ms":4,"reason":""}"#);
        assert!(wrong
            .unwrap_err()
            .to_string()
            .starts_with("invalid type: integer `1`, expected a string"));
        let missing = Pending::from_record(br#"{"first_ms":1}"#);
        assert!(missing
            .unwrap_err()
            .to_string()
            .starts_with("missing field `changed`"));
    }

    #[test]
    fn newer_state_wins() {
        let mut a = changed(&[("a1", "Email", "1"), ("a1", "Mailbox", "m1")]);
        merge(
            &mut a,
            &changed(&[("a1", "Email", "2"), ("a2", "Email", "x")]),
        );
        assert_eq!(
            a,
            changed(&[
                ("a1", "Email", "2"),
                ("a1", "Mailbox", "m1"),
                ("a2", "Email", "x")
            ])
        );
    }
}
