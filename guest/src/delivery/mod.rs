//! Delivery of StateChange pushes (behaviour B6): fan-out to a user's
//! subscriptions, message building and splitting, the push-service answer
//! table, durable pending changes and retries.
//!
//! Durability: a change that could not be delivered is kept in the
//! subscription's pending record with a due entry, so a restart or another
//! host process sharing the store delivers it later. A change is only
//! acknowledged to the host (the `state-changed` call returns) after its
//! push was answered or stored as pending.
//!
//! | module | concern |
//! | --- | --- |
//! | this one | the entry points: choosing the subscriptions of an event (or the due pending pushes) and claiming their work |
//! | `message` | the StateChange JSON, splitting by account and type, topic and urgency |
//! | `send` | encrypting in pieces, pipelining through the host, the 413 resend |
//! | `answers` | the answer table: delivered, destroyed, dropped, deferred (pending kept), refusal runs |
//! | [`pending`], [`policy`], [`push`] | the pending record, classifying answers and backoff, building one request |

mod answers;
mod message;
pub mod pending;
pub mod policy;
pub mod push;
mod send;

pub use message::{split, state_change_json};
use send::send_jobs;
pub use send::{pipeline_piece, PIPELINE_FIRST, PIPELINE_MAX};

use std::collections::BTreeMap;

use crate::error::PluginError;
use crate::ports::{Condition, LogLevel, StoreError};
use crate::repo::pending_key;
use crate::repo::{self, DueEntry, DueKind};
use crate::subscription::Subscription;
use crate::{Env, Plugin};
use pending::{merge, Changed, Pending};

/// Counts of what happened to the pushes of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Delivered (2xx).
    pub delivered: u32,
    /// Kept pending for later.
    pub deferred: u32,
    /// Given up.
    pub dropped: u32,
    /// Subscriptions destroyed because of the answer.
    pub destroyed: u32,
    /// (outcome, reason) → count.
    pub details: BTreeMap<(String, String), u32>,
}

impl DeliveryReport {
    fn count(&mut self, outcome: &str, reason: &str) {
        match outcome {
            "delivered" => self.delivered += 1,
            "deferred" => self.deferred += 1,
            "dropped" => self.dropped += 1,
            _ => self.destroyed += 1,
        }
        *self
            .details
            .entry((outcome.to_string(), reason.to_string()))
            .or_default() += 1;
    }

    /// Adds another report's counts.
    pub fn add(&mut self, other: &DeliveryReport) {
        self.delivered += other.delivered;
        self.deferred += other.deferred;
        self.dropped += other.dropped;
        self.destroyed += other.destroyed;
        for (k, v) in &other.details {
            *self.details.entry(k.clone()).or_default() += v;
        }
    }
}

/// A state change for one user (the WIT `state-change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Whose subscriptions to notify.
    pub username: String,
    /// accountId → type → state.
    pub changed: Changed,
}

/// How long a claimed pending push is owned by the claimer, ms.
const LEASE_MS: u64 = 60_000;

/// Write conflicts on one pending record before an event gives up on it
/// (and fails with `StoreUnavailable`, so that it is sent again).
const MAX_CONFLICTS: usize = 8;

/// How the message of that failure ends (not an outage: the store works).
const CONFLICTS: &str = "write conflicts in a row";

/// The error of giving up on `key` after [`MAX_CONFLICTS`] conflicts: the
/// caller is told the store could not take the change (its text ends with
/// [`CONFLICTS`], which `send_jobs` tells from an outage).
fn too_many_conflicts(key: &str) -> PluginError {
    PluginError::StoreUnavailable(format!("{key}: {MAX_CONFLICTS} {CONFLICTS}"))
}

/// One subscription's work in a batch.
struct Job {
    sub: Subscription,
    sub_version: u64,
    /// The pending record's version when we hold it (claimed or read).
    pending: Option<(Pending, u64)>,
    changed: Changed,
}

/// Delivers `event` to the user's verified, unexpired subscriptions whose
/// `types` match.
pub fn state_changed(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    event: &StateChange,
) -> Result<DeliveryReport, PluginError> {
    state_changed_shard(plugin, env, event, 0, 1)
}

/// The shard of a subscription id among `count` (FNV-1a 32 of the id).
pub fn shard_of(id: &str, count: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % count.max(1)
}

/// [`state_changed`] for the subscriptions of shard `index` of `count`
/// only (see [`shard_of`]), so a host can fan one event out over several
/// instances in parallel.
pub fn state_changed_shard(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    event: &StateChange,
    index: u32,
    count: u32,
) -> Result<DeliveryReport, PluginError> {
    if event.username.is_empty() {
        return Err(PluginError::InvalidArgument("username is empty".into()));
    }
    if count == 0 || index >= count {
        return Err(PluginError::InvalidArgument(format!(
            "shard {index} of {count}: count must be at least 1 and index below it"
        )));
    }
    let mut report = DeliveryReport::default();
    let ids: Vec<String> = repo::user_ids(env.store, &event.username)?
        .into_iter()
        .filter(|id| count == 1 || shard_of(id, count) == index)
        .collect();
    let now = env.now_ms;
    let mut jobs = Vec::new();
    let subs: Vec<(Subscription, u64)> = repo::load_many(env.store, &ids)?
        .into_iter()
        .filter(|(sub, _)| {
            sub.owner.username == event.username
                && sub.verification.verified
                && !sub.is_expired(now / 1000)
        })
        .collect();
    // One read for every pending record (not one per subscription); a
    // record that changes meanwhile is re-read by the CAS loop below.
    let pending_keys: Vec<String> = subs.iter().map(|(s, _)| pending_key(&s.id)).collect();
    let mut prefetched = env.store.get_many(&pending_keys)?.into_iter();
    for (sub, sub_version) in subs {
        let mut first_read = Some(prefetched.next().flatten());
        let mut changed = Changed::new();
        for (account, types) in &event.changed {
            // Inserts, not `collect()`: a collected BTreeMap sorts first, and
            // each sort instantiation costs kilobytes of component.
            let mut kept = BTreeMap::new();
            for (t, s) in types.iter().filter(|(t, _)| sub.wants(t)) {
                kept.insert(t.clone(), s.clone());
            }
            if !kept.is_empty() {
                changed.insert(account.clone(), kept);
            }
        }
        if changed.is_empty() {
            continue;
        }
        // Merge with what is pending; defer when the subscription must wait.
        let key = pending_key(&sub.id);
        let interval_ms = u64::from(env.config.min_push_interval_secs) * 1000;
        let mut deferred = false;
        // Set when the change goes out now: the claimed pending record, if any.
        let mut send: Option<Option<(Pending, u64)>> = None;
        let mut settled = false;
        let mut too_large = false;
        for _ in 0..MAX_CONFLICTS {
            let existing = match first_read.take() {
                Some(e) => e,
                None => env.store.get(&key)?,
            };
            let (mut p, cond) = match &existing {
                Some(e) => (
                    Pending::from_record(&e.value).unwrap_or_default(),
                    Condition::Version(e.version),
                ),
                None => (Pending::default(), Condition::Absent),
            };
            let wait_until = if existing.is_some() {
                p.next_attempt_ms
            } else if interval_ms > 0 && sub.last_push_ms + interval_ms > now {
                sub.last_push_ms + interval_ms
            } else {
                0
            };
            if wait_until <= now {
                if existing.is_some() {
                    // Due now: send the merged change (claimed below by CAS).
                    let mut merged = p.changed.clone();
                    merge(&mut merged, &changed);
                    p.changed = merged.clone();
                    p.next_attempt_ms = now + LEASE_MS;
                    match env.store.put(&key, &encode(&p), cond) {
                        Ok(v) => {
                            env.store.put(
                                &repo::due_key(p.next_attempt_ms, DueKind::Push, &sub.id),
                                b"",
                                Condition::Any,
                            )?;
                            changed = merged;
                            send = Some(Some((p, v)));
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(StoreError::TooLarge) => {
                            too_large = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    send = Some(None);
                }
                settled = true;
                break;
            }
            if existing.is_none() {
                p.first_ms = now;
                p.next_attempt_ms = wait_until;
                p.reason = "interval".into();
            }
            merge(&mut p.changed, &changed);
            match env.store.put(&key, &encode(&p), cond) {
                Ok(_) => {
                    if existing.is_none() {
                        env.store.put(
                            &repo::due_key(wait_until, DueKind::Push, &sub.id),
                            b"",
                            Condition::Any,
                        )?;
                    }
                    deferred = true;
                    settled = true;
                    break;
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::TooLarge) => {
                    too_large = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if too_large {
            // This subscription's owed changes no longer fit in the store:
            // they cannot be kept, and sending the event again would not
            // change that. The other subscriptions still get theirs.
            env.log(
                LogLevel::Warn,
                &format!("{key}: the pending change is larger than the store accepts; dropped"),
            );
            report.count("dropped", "too large for the store");
            continue;
        }
        if !settled {
            // Never drop a change silently: the caller is told the store
            // could not take it, and the event is sent again.
            return Err(too_many_conflicts(&key));
        }
        if let Some(pending) = send {
            jobs.push(Job {
                sub,
                sub_version,
                pending,
                changed,
            });
        }
        if deferred {
            report.count("deferred", "merged");
        }
    }
    send_jobs(plugin, env, jobs, &mut report)?;
    Ok(report)
}

/// Sends the due pending pushes named by `entries` (from `tick`).
pub fn send_due(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    entries: Vec<DueEntry>,
) -> Result<DeliveryReport, PluginError> {
    let mut report = DeliveryReport::default();
    let now = env.now_ms;
    let mut jobs = Vec::new();
    for entry in entries {
        let key = pending_key(&entry.id);
        let Some(e) = env.store.get(&key)? else {
            env.store.delete(&entry.key, Condition::Any)?;
            continue;
        };
        let mut p = match Pending::from_record(&e.value) {
            Ok(p) => p,
            Err(_) => {
                env.store.delete(&key, Condition::Version(e.version)).ok();
                env.store.delete(&entry.key, Condition::Any)?;
                continue;
            }
        };
        if p.next_attempt_ms != entry.at_ms {
            // Stale entry: the record was rescheduled. Its own entry is
            // written after the record, so a failure in between can leave
            // this one as its only entry: put the entry in force back
            // before this one goes (an idempotent write).
            env.store.put(
                &repo::due_key(p.next_attempt_ms, DueKind::Push, &entry.id),
                b"",
                Condition::Any,
            )?;
            env.store.delete(&entry.key, Condition::Any)?;
            continue;
        }
        let sub = repo::load(env.store, &entry.id)?;
        let Some((sub, sub_version)) =
            sub.filter(|(s, _)| s.verification.verified && !s.is_expired(env.now_secs()))
        else {
            env.store.delete(&key, Condition::Any)?;
            env.store.delete(&entry.key, Condition::Any)?;
            continue;
        };
        if now.saturating_sub(p.first_ms) > u64::from(env.config.give_up_after_secs) * 1000 {
            match env.store.delete(&key, Condition::Version(e.version)) {
                Ok(_) => {}
                // A change merged meanwhile relies on this entry: keep it,
                // the next tick reads the record again.
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            env.log(
                LogLevel::Warn,
                &format!(
                    "pending push for {} given up after {} attempts ({})",
                    sub.id, p.attempts, p.reason
                ),
            );
            env.store.delete(&entry.key, Condition::Any)?;
            report.count("dropped", "expired");
            continue;
        }
        // Claim: move the due time forward by a lease, with CAS.
        let lease = now + LEASE_MS;
        p.next_attempt_ms = lease;
        env.store.put(
            &repo::due_key(lease, DueKind::Push, &sub.id),
            b"",
            Condition::Any,
        )?;
        match env
            .store
            .put(&key, &encode(&p), Condition::Version(e.version))
        {
            Ok(v) => {
                env.store.delete(&entry.key, Condition::Any)?;
                let changed = p.changed.clone();
                jobs.push(Job {
                    sub,
                    sub_version,
                    pending: Some((p, v)),
                    changed,
                });
            }
            Err(StoreError::Conflict) => continue, // another process has it
            Err(err) => return Err(err.into()),
        }
    }
    send_jobs(plugin, env, jobs, &mut report)?;
    Ok(report)
}

fn encode(p: &Pending) -> Vec<u8> {
    p.to_record()
}

#[cfg(test)]
pub(crate) mod engine_tests;
#[cfg(test)]
mod store_fault_tests;
