//! Building StateChange messages: the JSON, splitting what does not fit
//! one push by account (then by type), and the headers' inputs (topic,
//! urgency).

use super::pending::Changed;
use super::push::{self, OutgoingPush};
use crate::ports::LogLevel;
use crate::subscription::Subscription;
use crate::Env;

/// The StateChange JSON for `changed`.
pub fn state_change_json(changed: &Changed) -> Vec<u8> {
    /// RFC 8620 §7.1.
    #[derive(serde::Serialize)]
    struct StateChange<'a> {
        #[serde(rename = "@type")]
        kind: &'static str,
        changed: &'a Changed,
    }
    serde_json::to_vec(&StateChange {
        kind: "StateChange",
        changed,
    })
    .unwrap_or_default()
}

/// Splits `changed` into messages whose JSON fits in `max` octets: whole
/// accounts first; an account that alone is too large is split by type.
/// A single (account, type) that cannot fit is dropped (returned second).
pub fn split(changed: &Changed, max: usize) -> (Vec<Changed>, Vec<(String, String)>) {
    let mut out: Vec<Changed> = Vec::new();
    let mut dropped = Vec::new();
    let mut current = Changed::new();
    for (account, types) in changed {
        let mut single = Changed::new();
        single.insert(account.clone(), types.clone());
        let mut candidate = current.clone();
        candidate.insert(account.clone(), types.clone());
        if state_change_json(&candidate).len() <= max {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if state_change_json(&single).len() <= max {
            current = single;
            continue;
        }
        // One account too large: split its types.
        let mut part = Changed::new();
        for (t, s) in types {
            let mut cand = part.clone();
            cand.entry(account.clone())
                .or_default()
                .insert(t.clone(), s.clone());
            if state_change_json(&cand).len() <= max {
                part = cand;
                continue;
            }
            if !part.is_empty() {
                out.push(std::mem::take(&mut part));
            }
            let mut one = Changed::new();
            one.entry(account.clone())
                .or_default()
                .insert(t.clone(), s.clone());
            if state_change_json(&one).len() <= max {
                part = one;
            } else {
                dropped.push((account.clone(), t.clone()));
            }
        }
        if !part.is_empty() {
            out.push(part);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    (out, dropped)
}

/// The messages for `changed` with their StateChange JSON: one when it
/// fits in `max` octets (the JSON is written once), else [`split`]'s parts;
/// what cannot fit any push is logged.
pub(super) fn split_with_json(
    env: &mut Env<'_>,
    changed: &Changed,
    max: usize,
) -> Vec<(Changed, Vec<u8>)> {
    let whole = state_change_json(changed);
    if whole.len() <= max {
        // Every subset of the accounts fits too, so `split` would return
        // `changed` whole.
        return vec![(changed.clone(), whole)];
    }
    let (parts, dropped) = split(changed, max);
    for (account, t) in dropped {
        env.log(
            LogLevel::Warn,
            &format!("change of {t} in account {account} cannot fit one push; dropped"),
        );
    }
    parts
        .into_iter()
        .map(|part| {
            let json = state_change_json(&part);
            (part, json)
        })
        .collect()
}

/// The push for `changed` to `sub`, whose StateChange JSON is `payload`.
pub(super) fn message(
    env: &Env<'_>,
    sub: &Subscription,
    changed: &Changed,
    payload: Vec<u8>,
) -> OutgoingPush {
    let keys = changed
        .iter()
        .flat_map(|(a, ts)| ts.keys().map(move |t| (a.as_str(), t.as_str())));
    let types = changed
        .values()
        .flat_map(|ts| ts.keys().map(String::as_str));
    OutgoingPush {
        payload,
        topic: Some(push::topic(&sub.id, keys)),
        urgency: env.config.urgency_for(types),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::pending::merge;

    fn changed(n_accounts: usize, n_types: usize, state_len: usize) -> Changed {
        let mut c = Changed::new();
        for a in 0..n_accounts {
            for t in 0..n_types {
                c.entry(format!("account{a}"))
                    .or_default()
                    .insert(format!("Type{t}"), "s".repeat(state_len));
            }
        }
        c
    }

    #[test]
    fn small_change_is_one_message() {
        let c = changed(3, 2, 10);
        let (parts, dropped) = split(&c, 3993);
        assert_eq!(parts, vec![c]);
        assert!(dropped.is_empty());
    }

    #[test]
    fn large_change_splits_by_account_and_every_part_fits() {
        let c = changed(10, 5, 100);
        let (parts, dropped) = split(&c, 1500);
        assert!(parts.len() > 1);
        assert!(dropped.is_empty());
        let mut union = Changed::new();
        for p in &parts {
            assert!(state_change_json(p).len() <= 1500);
            merge(&mut union, p);
        }
        assert_eq!(union, c);
    }

    #[test]
    fn one_oversized_account_splits_by_type_and_impossible_entries_drop() {
        let c = changed(1, 20, 200);
        let (parts, _) = split(&c, 1000);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| state_change_json(p).len() <= 1000));
        let c = changed(1, 1, 5000);
        let (parts, dropped) = split(&c, 1000);
        assert!(parts.is_empty());
        assert_eq!(dropped.len(), 1);
    }
}
