//! Delivery of StateChange pushes (behaviour B6): fan-out to a user's
//! subscriptions, message building and splitting, the push-service answer
//! table, durable pending changes and retries.
//!
//! Durability: a change that could not be delivered is kept in the
//! subscription's pending record with a due entry, so a restart or another
//! host process sharing the store delivers it later. A change is only
//! acknowledged to the host (the `state-changed` call returns) after its
//! push was answered or stored as pending.

pub mod pending;
pub mod policy;
pub mod push;

use crate::crypto::keys::ReceiverKeys;
use std::collections::BTreeMap;

use crate::lifecycle::PluginError;
use crate::ports::{
    Condition, HttpRequest, LogLevel, PushAction, PushKind, StartedBatch, StoreError,
};
use crate::repo::{self, DueEntry, DueKind};
use crate::subscription::Subscription;
use crate::{Env, Plugin};
use pending::{merge, pending_key, Changed, Pending};
use policy::Answer;
use push::OutgoingPush;

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
        for _ in 0..8 {
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
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    send = Some(None);
                }
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
                    break;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
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
            // Stale entry: the record was rescheduled.
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
            env.log(
                LogLevel::Warn,
                &format!(
                    "pending push for {} given up after {} attempts ({})",
                    sub.id, p.attempts, p.reason
                ),
            );
            env.store.delete(&key, Condition::Version(e.version)).ok();
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
fn split_with_json(env: &mut Env<'_>, changed: &Changed, max: usize) -> Vec<(Changed, Vec<u8>)> {
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
fn message(env: &Env<'_>, sub: &Subscription, changed: &Changed, payload: Vec<u8>) -> OutgoingPush {
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

/// Requests in the first `start-batch` piece of a large fan-out: small, so
/// the first pushes leave while the rest are encrypted. Fan-outs up to this
/// size are one `send-batch`.
pub const PIPELINE_FIRST: usize = 16;

/// Largest `start-batch` piece. Pieces double from [`PIPELINE_FIRST`] up to
/// this: each piece costs the host a wake-up of its I/O threads, which on a
/// CPU-bound fan-out is measurable (a 1,000-way loopback fan-out took ~134
/// ms in pieces of 16 and ~122 ms in pieces of 256), while the first
/// requests still leave after 16 encryptions.
pub const PIPELINE_MAX: usize = 256;

/// Size of the `index`-th `start-batch` piece of a fan-out (from 0):
/// 16, 32, 64, 128, 256, 256, ...
pub fn pipeline_piece(index: usize) -> usize {
    PIPELINE_FIRST
        .checked_shl(index.min(16) as u32)
        .map_or(PIPELINE_MAX, |n| n.min(PIPELINE_MAX))
}

/// Sends every job's messages (pipelined in pieces of [`pipeline_piece`])
/// and applies the answer table.
fn send_jobs(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    jobs: Vec<Job>,
    report: &mut DeliveryReport,
) -> Result<(), PluginError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let now_secs = env.now_secs();
    let max = env.config.max_plaintext_octets as usize;
    // (job index, the part of its change this request carries)
    let mut requests: Vec<HttpRequest> = Vec::new();
    let mut owners: Vec<(usize, Changed)> = Vec::new();
    // Requests are prepared, then encrypted a piece at a time (one batched
    // key agreement per piece), and go out in growing pieces while the next
    // ones are encrypted (`start-batch`); the answers are collected in order
    // below. `to_seal`: (index in `requests`, keys) of the bodies not yet
    // encrypted.
    let mut to_seal: Vec<(usize, ReceiverKeys)> = Vec::new();
    let mut started: Vec<(StartedBatch, usize)> = Vec::new();
    {
        let mut signer = plugin.keyring.signer(env)?;
        for (i, job) in jobs.iter().enumerate() {
            for (part, payload) in split_with_json(env, &job.changed, max) {
                let msg = message(env, &job.sub, &part, payload);
                match push::prepare_request(
                    env.config,
                    signer.as_deref_mut(),
                    &job.sub,
                    &msg,
                    now_secs,
                ) {
                    Ok((r, keys)) => {
                        if let Some(keys) = keys {
                            to_seal.push((requests.len(), keys));
                        }
                        requests.push(r);
                        owners.push((i, part));
                        if requests.len() == pipeline_piece(started.len()) {
                            seal_piece(
                                env,
                                &jobs,
                                &mut requests,
                                &mut owners,
                                &mut to_seal,
                                report,
                            );
                            let chunk = std::mem::take(&mut requests);
                            let n = chunk.len();
                            started.push((env.http.start_batch(chunk), n));
                        }
                    }
                    Err(e) => build_failed(env, &job.sub.id, &e, report),
                }
            }
        }
    }
    seal_piece(env, &jobs, &mut requests, &mut owners, &mut to_seal, report);
    let answers: Vec<_> = if started.is_empty() {
        env.http.send_batch(requests)
    } else {
        if !requests.is_empty() {
            let n = requests.len();
            started.push((env.http.start_batch(requests), n));
        }
        started
            .into_iter()
            .flat_map(|(batch, n)| env.http.finish_batch(batch, n))
            .collect()
    };
    // Per job: the parts still owed (to keep pending) and the worst answer.
    let mut results: Vec<Vec<(Changed, Answer)>> = vec![Vec::new(); jobs.len()];
    for ((i, part), answer) in owners.into_iter().zip(answers) {
        let a = policy::classify(&answer, now_secs, env.config.retry_after_cap_secs);
        results[i].push((part, a));
    }
    // 413: split by account and resend once.
    let mut retry_requests = Vec::new();
    let mut retry_owners = Vec::new();
    {
        let mut signer = plugin.keyring.signer(env)?;
        for (i, parts) in results.iter_mut().enumerate() {
            let mut keep = Vec::new();
            for (part, a) in parts.drain(..) {
                if a == Answer::TooLarge && part.len() > 1 {
                    env.push_outcome(
                        &jobs[i].sub.id,
                        &jobs[i].sub.url,
                        PushKind::StateChange,
                        a.reason(),
                        PushAction::Split,
                    );
                    for (account, types) in &part {
                        let mut one = Changed::new();
                        one.insert(account.clone(), types.clone());
                        let json = state_change_json(&one);
                        let msg = message(env, &jobs[i].sub, &one, json);
                        if let Ok(r) = push::build_request(
                            env.config,
                            signer.as_deref_mut(),
                            &jobs[i].sub,
                            &msg,
                            now_secs,
                        ) {
                            retry_requests.push(r);
                            retry_owners.push((i, one));
                        }
                    }
                } else {
                    keep.push((part, a));
                }
            }
            *parts = keep;
        }
    }
    if !retry_requests.is_empty() {
        let answers = env.http.send_batch(retry_requests);
        for ((i, part), answer) in retry_owners.into_iter().zip(answers) {
            let a = policy::classify(&answer, now_secs, env.config.retry_after_cap_secs);
            results[i].push((part, a));
        }
    }
    for (job, parts) in jobs.into_iter().zip(results) {
        apply_answers(env, job, parts, report)?;
    }
    Ok(())
}

/// Encrypts the bodies of the current piece (`requests`, whose owners are
/// the last `requests.len()` of `owners`) that `to_seal` names, with one
/// batched key agreement.
///
/// Lengths were checked by [`push::prepare_request`], so this fails only
/// when the random source fails; then the whole piece is dropped (logged
/// and counted as `dropped`/`build`, as a push that cannot be built always
/// was) and nothing of it is sent.
fn seal_piece(
    env: &mut Env<'_>,
    jobs: &[Job],
    requests: &mut Vec<HttpRequest>,
    owners: &mut Vec<(usize, Changed)>,
    to_seal: &mut Vec<(usize, ReceiverKeys)>,
    report: &mut DeliveryReport,
) {
    let sealed = push::seal_in_place(env.config, requests, to_seal);
    to_seal.clear();
    if let Err(e) = sealed {
        for _ in 0..requests.len() {
            if let Some((job, _)) = owners.pop() {
                build_failed(env, &jobs[job].sub.id, &e, report);
            }
        }
        requests.clear();
    }
}

/// Logs and counts a push that could not be built.
fn build_failed(
    env: &mut Env<'_>,
    id: &str,
    e: &push::PushBuildError,
    report: &mut DeliveryReport,
) {
    env.log(LogLevel::Error, &format!("push for {id} not built: {e}"));
    report.count("dropped", "build");
}

/// The outcomes of a subscription that was just erased: whatever was not
/// delivered is gone with it (nothing of it will be sent again).
fn erased(mut outcomes: Vec<(String, PushAction)>) -> Vec<(String, PushAction)> {
    for (_, action) in &mut outcomes {
        if *action != PushAction::Delivered {
            *action = PushAction::Destroyed;
        }
    }
    outcomes
}

/// Reports each request's outcome for `sub` (`host.report-push`).
fn report_outcomes(env: &mut Env<'_>, sub: &Subscription, outcomes: Vec<(String, PushAction)>) {
    for (answer, action) in outcomes {
        env.push_outcome(&sub.id, &sub.url, PushKind::StateChange, answer, action);
    }
}

/// Applies the answer table to one subscription's results.
fn apply_answers(
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
    if delivered && env.config.min_push_interval_secs > 0 {
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
            for _ in 0..8 {
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
                        break;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        None => {
            // Nothing owed: clear the pending record we held, unless newer
            // changes arrived meanwhile (then they become due at once).
            if let Some((sent, version)) = job.pending {
                match env.store.delete(&pkey, Condition::Version(version)) {
                    Ok(_) => {}
                    Err(StoreError::Conflict) => {
                        if let Some(e) = env.store.get(&pkey)? {
                            let mut p = Pending::from_record(&e.value).unwrap_or_default();
                            for (a, ts) in &sent.changed {
                                if let Some(slot) = p.changed.get_mut(a) {
                                    slot.retain(|t, s| ts.get(t) != Some(s));
                                }
                            }
                            p.changed.retain(|_, ts| !ts.is_empty());
                            if p.changed.is_empty() {
                                env.store.delete(&pkey, Condition::Version(e.version)).ok();
                            } else {
                                let old = p.next_attempt_ms;
                                p.next_attempt_ms = now;
                                if env
                                    .store
                                    .put(&pkey, &encode(&p), Condition::Version(e.version))
                                    .is_ok()
                                {
                                    env.store.put(
                                        &repo::due_key(now, DueKind::Push, &sub.id),
                                        b"",
                                        Condition::Any,
                                    )?;
                                    env.store.delete(
                                        &repo::due_key(old, DueKind::Push, &sub.id),
                                        Condition::Any,
                                    )?;
                                }
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
                env.store.delete(
                    &repo::due_key(sent.next_attempt_ms, DueKind::Push, &sub.id),
                    Condition::Any,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// Native tests of the delivery engine with a fake clock and a scripted
/// push service: what needs time to pass (24 h refusal runs, give-up age)
/// is tested here, where `now_ms` is a plain number.
#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::config::Config;
    use crate::ports::{HttpError, HttpOut, HttpRequest, HttpResponse, MemoryStore, NoLog, Store};
    use crate::subscription::{Owner, Subscription, VerificationState};
    use std::collections::VecDeque;

    /// Answers from a queue (default 201) and records requests.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<u16>,
        sent: Vec<HttpRequest>,
    }

    impl HttpOut for Scripted {
        fn send_batch(
            &mut self,
            requests: Vec<HttpRequest>,
        ) -> Vec<Result<HttpResponse, HttpError>> {
            requests
                .into_iter()
                .map(|r| {
                    self.sent.push(r);
                    Ok(HttpResponse {
                        status: self.answers.pop_front().unwrap_or(201),
                        headers: Vec::new(),
                        body_prefix: Vec::new(),
                    })
                })
                .collect()
        }
    }

    const HOUR_MS: u64 = 3_600_000;

    fn subscription(store: &mut MemoryStore, now_ms: u64) -> String {
        subscription_with_id(store, now_ms, "sub1")
    }

    fn subscription_with_id(store: &mut MemoryStore, now_ms: u64, id: &str) -> String {
        let owner = Owner {
            username: "alice".into(),
            credential_id: None,
        };
        let sub = Subscription {
            id: id.into(),
            owner: owner.clone(),
            device_client_id: format!("d-{id}"),
            url: format!("https://push.example.net/{id}"),
            keys: None,
            verification_code: "c".into(),
            verification: VerificationState {
                verified: true,
                delivered: true,
                attempts: 0,
                next_attempt_ms: None,
            },
            expires: now_ms / 1000 + 30 * 24 * 3600,
            types: None,
            created: now_ms / 1000,
            vapid_key: None,
            refusals: Default::default(),
            last_push_ms: 0,
        };
        repo::save(store, &sub, Condition::Any).unwrap();
        store
            .put(
                &format!("{}{}", repo::owner_prefix(&owner), sub.id),
                b"",
                Condition::Any,
            )
            .unwrap();
        sub.id
    }

    fn event(state: &str) -> StateChange {
        let mut changed = Changed::new();
        changed
            .entry("a1".into())
            .or_default()
            .insert("Email".into(), state.into());
        StateChange {
            username: "alice".into(),
            changed,
        }
    }

    fn fire(
        store: &mut MemoryStore,
        http: &mut dyn HttpOut,
        config: &Config,
        now_ms: u64,
        state: &str,
    ) -> DeliveryReport {
        let mut log = NoLog;
        let mut env = Env {
            store,
            http,
            log: &mut log,
            config,
            now_ms,
        };
        state_changed(&mut Plugin::new(), &mut env, &event(state)).unwrap()
    }

    #[test]
    fn a_run_of_refusals_destroys_only_after_the_limit_and_24_hours() {
        let config = Config {
            permanent_failure_limit: 3,
            ..Config::default()
        };
        let mut store = MemoryStore::new();
        let mut http = Scripted::default();
        let t0 = 1_800_000_000_000;
        subscription(&mut store, t0);
        // Three refusals within an hour: over the count, not over 24 h.
        for i in 0..3 {
            http.answers.push_back(403);
            let r = fire(
                &mut store,
                &mut http,
                &config,
                t0 + i * 60_000,
                &format!("s{i}"),
            );
            assert_eq!((r.dropped, r.destroyed), (1, 0));
        }
        assert!(repo::load(&mut store, "sub1").unwrap().is_some());
        // A success resets the run.
        let r = fire(&mut store, &mut http, &config, t0 + HOUR_MS, "ok");
        assert_eq!(r.delivered, 1);
        let sub = repo::load(&mut store, "sub1").unwrap().unwrap().0;
        assert_eq!(sub.refusals.count, 0);
        // A new run over more than 24 h reaching the limit destroys it.
        for (i, at) in [2 * HOUR_MS, 14 * HOUR_MS, 27 * HOUR_MS].iter().enumerate() {
            http.answers.push_back(400);
            let r = fire(&mut store, &mut http, &config, t0 + at, &format!("r{i}"));
            if i < 2 {
                assert_eq!(r.destroyed, 0, "refusal {i}");
            } else {
                assert_eq!(r.destroyed, 1, "third refusal after 25 h: {r:?}");
            }
        }
        assert!(repo::load(&mut store, "sub1").unwrap().is_none());
    }

    #[test]
    fn every_push_reports_its_origin_answer_and_action_without_the_path() {
        use crate::ports::RecordingLog;
        let config = Config {
            permanent_failure_limit: 1,
            ..Config::default()
        };
        let mut store = MemoryStore::new();
        let mut http = Scripted::default();
        let t0 = 1_800_000_000_000;
        subscription(&mut store, t0);
        let mut log = RecordingLog::default();
        let mut run = |store: &mut MemoryStore, http: &mut Scripted, at: u64, state: &str| {
            let mut env = Env {
                store,
                http,
                log: &mut log,
                config: &config,
                now_ms: at,
            };
            state_changed(&mut Plugin::new(), &mut env, &event(state)).unwrap();
        };
        for (i, status) in [201u16, 429, 503, 403].into_iter().enumerate() {
            http.answers.push_back(status);
            run(
                &mut store,
                &mut http,
                t0 + i as u64 * 60_000,
                &format!("s{i}"),
            );
        }
        // A refusal that ends a run of refusals (limit 1, after 24 h).
        http.answers.push_back(400);
        run(&mut store, &mut http, t0 + 30 * HOUR_MS, "late");
        let got: Vec<(&str, &str, PushKind, &str, PushAction)> = log
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.subscription_id.as_str(),
                    o.origin.as_str(),
                    o.kind,
                    o.answer.as_str(),
                    o.action,
                )
            })
            .collect();
        let origin = "https://push.example.net";
        let k = PushKind::StateChange;
        assert_eq!(
            got,
            [
                ("sub1", origin, k, "2xx", PushAction::Delivered),
                ("sub1", origin, k, "429", PushAction::Deferred),
                ("sub1", origin, k, "503", PushAction::Deferred),
                ("sub1", origin, k, "403", PushAction::Dropped),
                ("sub1", origin, k, "400", PushAction::Destroyed),
            ]
        );
        assert!(repo::load(&mut store, "sub1").unwrap().is_none());
    }

    #[test]
    fn a_413_split_and_a_410_are_reported_per_request() {
        use crate::ports::RecordingLog;
        let config = Config::default();
        let mut store = MemoryStore::new();
        let mut http = Scripted::default();
        let t0 = 1_800_000_000_000;
        subscription(&mut store, t0);
        let mut log = RecordingLog::default();
        let mut two_accounts = event("s1");
        two_accounts
            .changed
            .entry("a2".into())
            .or_default()
            .insert("Mailbox".into(), "m1".into());
        // 413 for both accounts together, then 201 and 410 for each alone.
        http.answers.extend([413, 201, 410]);
        let mut env = Env {
            store: &mut store,
            http: &mut http,
            log: &mut log,
            config: &config,
            now_ms: t0,
        };
        state_changed(&mut Plugin::new(), &mut env, &two_accounts).unwrap();
        let got: Vec<(&str, PushAction)> = log
            .outcomes
            .iter()
            .map(|o| (o.answer.as_str(), o.action))
            .collect();
        assert_eq!(
            got,
            [
                ("413", PushAction::Split),
                ("2xx", PushAction::Delivered),
                ("410", PushAction::Destroyed),
            ]
        );
        assert_eq!(http.sent.len(), 3);
        assert!(repo::load(&mut store, "sub1").unwrap().is_none());
    }

    #[test]
    fn a_pending_change_is_given_up_after_the_configured_age() {
        let config = Config {
            give_up_after_secs: 3600,
            ..Config::default()
        };
        let mut store = MemoryStore::new();
        let mut http = Scripted::default();
        let t0 = 1_800_000_000_000;
        subscription(&mut store, t0);
        http.answers.push_back(503);
        let r = fire(&mut store, &mut http, &config, t0, "s1");
        assert_eq!(r.deferred, 1);
        assert!(store.get(&pending_key("sub1")).unwrap().is_some());
        // Two hours later the retry is due but too old: dropped, not sent.
        let sent_before = http.sent.len();
        let due: Vec<DueEntry> = store
            .keys()
            .filter_map(repo::parse_due_key)
            .filter(|e| e.kind == DueKind::Push)
            .collect();
        assert_eq!(due.len(), 1);
        let mut log = NoLog;
        let mut env = Env {
            store: &mut store,
            http: &mut http,
            log: &mut log,
            config: &config,
            now_ms: t0 + 2 * HOUR_MS,
        };
        let r = send_due(&mut Plugin::new(), &mut env, due).unwrap();
        assert_eq!(r.dropped, 1, "{r:?}");
        assert_eq!(http.sent.len(), sent_before, "nothing sent");
        assert!(store.get(&pending_key("sub1")).unwrap().is_none());
    }

    /// A host that returns handles from `start-batch` and answers at
    /// `finish-batch`; logs the order of the calls.
    #[derive(Default)]
    struct Pipelined {
        calls: Vec<String>,
        started: BTreeMap<u64, Vec<HttpRequest>>,
        next: u64,
        gone: String,
    }

    impl HttpOut for Pipelined {
        fn send_batch(
            &mut self,
            requests: Vec<HttpRequest>,
        ) -> Vec<Result<HttpResponse, HttpError>> {
            self.calls.push(format!("send {}", requests.len()));
            requests.iter().map(|r| self.answer(r)).collect()
        }

        fn start_batch(&mut self, requests: Vec<HttpRequest>) -> StartedBatch {
            self.calls.push(format!("start {}", requests.len()));
            self.next += 1;
            self.started.insert(self.next, requests);
            StartedBatch::Handle(self.next)
        }

        fn finish_handle(&mut self, handle: u64) -> Vec<Result<HttpResponse, HttpError>> {
            self.calls.push(format!("finish {handle}"));
            let requests = self.started.remove(&handle).unwrap_or_default();
            requests.iter().map(|r| self.answer(r)).collect()
        }
    }

    impl Pipelined {
        fn answer(&self, r: &HttpRequest) -> Result<HttpResponse, HttpError> {
            Ok(HttpResponse {
                status: if r.url.ends_with(&self.gone) {
                    410
                } else {
                    201
                },
                headers: Vec::new(),
                body_prefix: Vec::new(),
            })
        }
    }

    #[test]
    fn pipeline_pieces_double_up_to_the_cap() {
        let pieces: Vec<usize> = (0..8).map(pipeline_piece).collect();
        assert_eq!(pieces, [16, 32, 64, 128, 256, 256, 256, 256]);
        assert_eq!(pipeline_piece(usize::MAX), PIPELINE_MAX);
    }

    #[test]
    fn large_fan_outs_are_pipelined_and_answers_reach_the_right_subscription() {
        let config = Config::default();
        let mut store = MemoryStore::new();
        let t0 = 1_800_000_000_000;
        let n = pipeline_piece(0) + pipeline_piece(1) + 5;
        for i in 0..n {
            subscription_with_id(&mut store, t0, &format!("s{i:03}"));
        }
        let mut http = Pipelined {
            gone: "/s020".into(),
            ..Default::default()
        };
        let r = fire(&mut store, &mut http, &config, t0, "x");
        assert_eq!((r.delivered, r.destroyed), (n as u32 - 1, 1), "{r:?}");
        // Every chunk is started before the first is awaited.
        assert_eq!(
            http.calls,
            [
                format!("start {PIPELINE_FIRST}"),
                format!("start {}", 2 * PIPELINE_FIRST),
                "start 5".to_string(),
                "finish 1".to_string(),
                "finish 2".to_string(),
                "finish 3".to_string(),
            ]
        );
        assert!(
            repo::load(&mut store, "s020").unwrap().is_none(),
            "the 410 one is gone"
        );
        assert!(repo::load(&mut store, "s019").unwrap().is_some());
        assert!(repo::load(&mut store, "s021").unwrap().is_some());
    }

    #[test]
    fn a_small_fan_out_is_one_send_batch_and_missing_answers_are_errors() {
        let config = Config::default();
        let mut store = MemoryStore::new();
        let t0 = 1_800_000_000_000;
        for i in 0..3 {
            subscription_with_id(&mut store, t0, &format!("s{i}"));
        }
        let mut http = Pipelined {
            gone: "/nobody".into(),
            ..Default::default()
        };
        let r = fire(&mut store, &mut http, &config, t0, "x");
        assert_eq!(r.delivered, 3);
        assert_eq!(http.calls, ["send 3"]);
        // A host that loses a batch: every request of it counts as failed.
        let mut lost = Pipelined::default();
        let started = lost.start_batch(vec![]);
        let answers = lost.finish_batch(StartedBatch::Handle(99), 2);
        drop(started);
        assert_eq!(answers.len(), 2);
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(HttpError::Other(_)))));
    }

    #[test]
    fn shards_partition_the_subscriptions() {
        let ids: Vec<String> = (0..1000).map(|i| format!("id{i}")).collect();
        for count in 1..5u32 {
            let mut seen = vec![0u32; count as usize];
            for id in &ids {
                seen[shard_of(id, count) as usize] += 1;
            }
            assert_eq!(seen.iter().sum::<u32>(), 1000);
            assert!(seen.iter().all(|n| *n > 1000 / count / 2), "{seen:?}");
        }
    }

    #[test]
    fn unencrypted_push_headers() {
        let config = Config::default();
        let mut store = MemoryStore::new();
        let mut http = Scripted::default();
        subscription(&mut store, 1_800_000_000_000);
        fire(&mut store, &mut http, &config, 1_800_000_000_000, "s1");
        let req = &http.sent[0];
        assert_eq!(req.header("TTL"), Some("86400"));
        assert_eq!(
            req.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            req.header("Authorization"),
            None,
            "no VAPID without a contact"
        );
        assert_eq!(
            String::from_utf8(req.body.clone()).unwrap(),
            r#"{"@type":"StateChange","changed":{"a1":{"Email":"s1"}}}"#
        );
    }
}
