//! Pending changes: what could not be pushed yet, merged so that a
//! subscription receives one push with the newest states (RFC 8620 §7.2:
//! the server MUST reduce the frequency when asked to).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// accountId → type name → state.
pub type Changed = BTreeMap<String, BTreeMap<String, String>>;

/// The stored pending record of one subscription (`pending/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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

/// Key of a subscription's pending record.
pub fn pending_key(id: &str) -> String {
    format!("pending/{id}")
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
