//! Acting on push services' answers (the B6 table): delivered, destroyed,
//! dropped, deferred with the pending change kept and merged, refusal runs;
//! one `host.report-push` per request.

use super::pending::{merge, Changed, Pending};
use super::policy::{self, Answer};
use super::{encode, DeliveryReport, Job};
use crate::error::PluginError;
use crate::ports::{Condition, LogLevel, PushAction, PushKind, StoreError};
use crate::repo::pending_key;
use crate::repo::{self, DueKind};
use crate::subscription::Subscription;
use crate::Env;

/// The outcomes of a subscription that was just erased: whatever was not
/// delivered is gone with it (nothing of it will be sent again).
pub(super) fn erased(mut outcomes: Vec<(String, PushAction)>) -> Vec<(String, PushAction)> {
    for (_, action) in &mut outcomes {
        if *action != PushAction::Delivered {
            *action = PushAction::Destroyed;
        }
    }
    outcomes
}

/// Reports each request's outcome for `sub` (`host.report-push`).
pub(super) fn report_outcomes(
    env: &mut Env<'_>,
    sub: &Subscription,
    outcomes: Vec<(String, PushAction)>,
) {
    for (answer, action) in outcomes {
        env.push_outcome(&sub.id, &sub.url, PushKind::StateChange, answer, action);
    }
}

/// Applies the answer table to one subscription's results.
pub(super) fn apply_answers(
    env: &mut Env<'_>,
    job: Job,
    parts: Vec<(Changed, Answer)>,
    report: &mut DeliveryReport,
) -> Result<(), PluginError> {
    let now = env.now_ms;
    let mut sub = job.sub;
    let mut owed = Changed::new();
    let mut wait: Option<(u64, String)> = None;
    let mut gone = None;
    let mut refused: Option<String> = None;
    let mut delivered = false;
    // Per request sent: its answer class and what is done about it
    // (`Destroyed` for all that was not delivered if the subscription is
    // erased).
    let mut outcomes: Vec<(String, PushAction)> = Vec::with_capacity(parts.len());
    for (part, answer) in parts {
        let action = match &answer {
            Answer::Delivered(_) => PushAction::Delivered,
            Answer::Gone(_) => PushAction::Destroyed,
            Answer::TooLarge | Answer::Refused { .. } => PushAction::Dropped,
            Answer::RateLimited { .. } | Answer::Transient { .. } => PushAction::Deferred,
        };
        outcomes.push((answer.reason(), action));
        match &answer {
            Answer::Delivered(_) => {
                delivered = true;
                report.count("delivered", "2xx");
            }
            Answer::Gone(s) => gone = Some(*s),
            Answer::TooLarge => {
                env.log(
                    LogLevel::Warn,
                    &format!(
                        "push to {} refused as too large (413) even for one account; dropped",
                        sub.id
                    ),
                );
                report.count("dropped", "413");
            }
            Answer::RateLimited { retry_after_ms } | Answer::Transient { retry_after_ms, .. } => {
                let attempts = job.pending.as_ref().map_or(0, |(p, _)| p.attempts);
                let delay = retry_after_ms.unwrap_or_else(|| {
                    policy::backoff_ms(
                        attempts,
                        env.config.retry_initial_ms,
                        env.config.retry_max_ms,
                        policy::random_jitter(),
                    )
                });
                let reason = answer.reason();
                wait = Some(match wait {
                    Some((d, r)) if d >= delay => (d, r),
                    _ => (delay, reason.clone()),
                });
                merge(&mut owed, &part);
                report.count("deferred", &reason);
            }
            Answer::Refused { status, detail } => {
                env.log(
                    LogLevel::Warn,
                    &format!("push to {} refused: {detail}", sub.id),
                );
                refused = Some(status.to_string());
                report.count("dropped", &answer.reason());
            }
        }
    }
    let pkey = pending_key(&sub.id);
    if let Some(status) = gone {
        repo::erase(env.store, &sub)?;
        report_outcomes(env, &sub, erased(outcomes));
        report.count("destroyed", &status.to_string());
        return Ok(());
    }
    // Refusal run bookkeeping (B6: destroy after N over more than 24 h).
    let mut sub_dirty = false;
    if let Some(_status) = &refused {
        if sub.refusals.count == 0 {
            sub.refusals.since_ms = now;
        }
        sub.refusals.count += 1;
        sub_dirty = true;
        if sub.refusals.count >= env.config.permanent_failure_limit
            && now - sub.refusals.since_ms > 24 * 3600 * 1000
        {
            repo::erase(env.store, &sub)?;
            report_outcomes(env, &sub, erased(outcomes));
            report.count("destroyed", "refused");
            return Ok(());
        }
    } else if delivered && sub.refusals.count > 0 {
        sub.refusals = Default::default();
        sub_dirty = true;
    }
    let min_interval_ms = u64::from(env.config.min_push_interval_secs) * 1000;
    if delivered && min_interval_ms > 0 {
        sub.last_push_ms = now;
        sub_dirty = true;
    }
    report_outcomes(env, &sub, outcomes);
    if sub_dirty {
        match repo::save(env.store, &sub, Condition::Version(job.sub_version)) {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match wait {
        Some((delay, reason)) => {
            // Keep the owed part, merged with anything that arrived meanwhile.
            let mut kept = false;
            for _ in 0..super::MAX_CONFLICTS {
                let existing = env.store.get(&pkey)?;
                let (mut p, cond) = match &existing {
                    Some(e) => (
                        Pending::from_record(&e.value).unwrap_or_default(),
                        Condition::Version(e.version),
                    ),
                    None => (
                        Pending {
                            first_ms: now,
                            ..Pending::default()
                        },
                        Condition::Absent,
                    ),
                };
                let old_due = existing.as_ref().map(|_| p.next_attempt_ms);
                // What arrived meanwhile is newer than what we sent.
                let mut merged = owed.clone();
                if let Some((sent, _)) = &job.pending {
                    // Drop what we just sent from the stored copy, keep newer arrivals.
                    let mut newer = p.changed.clone();
                    for (a, ts) in &sent.changed {
                        if let Some(slot) = newer.get_mut(a) {
                            slot.retain(|t, s| ts.get(t) != Some(s));
                        }
                    }
                    newer.retain(|_, ts| !ts.is_empty());
                    merge(&mut merged, &newer);
                } else {
                    merge(&mut merged, &p.changed);
                }
                p.changed = merged;
                p.attempts += 1;
                p.reason = reason.clone();
                p.next_attempt_ms = now + delay;
                match env.store.put(&pkey, &encode(&p), cond) {
                    Ok(_) => {
                        env.store.put(
                            &repo::due_key(p.next_attempt_ms, DueKind::Push, &sub.id),
                            b"",
                            Condition::Any,
                        )?;
                        if let Some(at) = old_due {
                            env.store.delete(
                                &repo::due_key(at, DueKind::Push, &sub.id),
                                Condition::Any,
                            )?;
                        }
                        kept = true;
                        break;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(StoreError::TooLarge) => {
                        // Owed changes that no longer fit in the store
                        // cannot be kept; retrying would not change that.
                        env.log(
                            LogLevel::Warn,
                            &format!(
                                "{pkey}: the owed change is larger than the store accepts; dropped"
                            ),
                        );
                        report.count("dropped", "too large for the store");
                        kept = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !kept {
                // The owed change must not be dropped silently.
                return Err(super::too_many_conflicts(&pkey));
            }
        }
        None => {
            // Nothing owed: clear the pending record we held, unless newer
            // changes arrived meanwhile (then they become due at once, or
            // after the minimum push interval).
            if let Some((sent, version)) = job.pending {
                // The record's due time before and after this call rewrote
                // it, if it did (the entry in force must survive the lease's
                // removal below).
                let mut rescheduled: Option<(u64, u64)> = None;
                match env.store.delete(&pkey, Condition::Version(version)) {
                    Ok(_) => {}
                    Err(StoreError::Conflict) => {
                        // Another writer changed the record while the push
                        // was out: usually an event merged a newer change
                        // and, the record not being due, relied on the lease
                        // entry this call erases below. So take out what was
                        // sent and make the rest due (now, or after the
                        // minimum push interval), re-reading on every
                        // conflict; giving up (or any other store failure)
                        // fails the call with the lease entry still there.
                        let mut settled = false;
                        for _ in 0..super::MAX_CONFLICTS {
                            let Some(e) = env.store.get(&pkey)? else {
                                settled = true; // erased meanwhile: nothing owed
                                break;
                            };
                            let mut p = Pending::from_record(&e.value).unwrap_or_default();
                            for (a, ts) in &sent.changed {
                                if let Some(slot) = p.changed.get_mut(a) {
                                    slot.retain(|t, s| ts.get(t) != Some(s));
                                }
                            }
                            p.changed.retain(|_, ts| !ts.is_empty());
                            let written = if p.changed.is_empty() {
                                env.store
                                    .delete(&pkey, Condition::Version(e.version))
                                    .map(|_| ())
                            } else {
                                let old = p.next_attempt_ms;
                                if old == sent.next_attempt_ms {
                                    // Still on this push's lease: what is left
                                    // arrived after the claim, a fresh owed
                                    // change, due at once (or once the minimum
                                    // interval since the push just delivered
                                    // is over, as an event would have it).
                                    let wait_ms = if delivered { min_interval_ms } else { 0 };
                                    p.next_attempt_ms = now.saturating_add(wait_ms);
                                    p.first_ms = now;
                                    p.attempts = 0;
                                    // No failure of its own yet: it waits for
                                    // the interval, as an event's record does,
                                    // or for nothing.
                                    p.reason = if wait_ms > 0 {
                                        "interval".into()
                                    } else {
                                        String::new()
                                    };
                                }
                                // Otherwise another writer scheduled it (say a
                                // retry after its own 429): that schedule stays.
                                let new = p.next_attempt_ms;
                                env.store
                                    .put(&pkey, &encode(&p), Condition::Version(e.version))
                                    .map(|_| rescheduled = Some((old, new)))
                            };
                            match written {
                                Ok(()) => {
                                    settled = true;
                                    break;
                                }
                                Err(StoreError::Conflict) => continue,
                                Err(e) => return Err(e.into()),
                            }
                        }
                        if !settled {
                            return Err(super::too_many_conflicts(&pkey));
                        }
                        if let Some((old, new)) = rescheduled {
                            env.store.put(
                                &repo::due_key(new, DueKind::Push, &sub.id),
                                b"",
                                Condition::Any,
                            )?;
                            if old != new {
                                env.store.delete(
                                    &repo::due_key(old, DueKind::Push, &sub.id),
                                    Condition::Any,
                                )?;
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
                if rescheduled.is_none_or(|(_, new)| new != sent.next_attempt_ms) {
                    env.store.delete(
                        &repo::due_key(sent.next_attempt_ms, DueKind::Push, &sub.id),
                        Condition::Any,
                    )?;
                }
            }
        }
    }
    Ok(())
}
