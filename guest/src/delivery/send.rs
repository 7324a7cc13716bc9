//! Sending: every job's messages encrypted in pieces, pipelined through
//! `start-batch`/`finish-batch`, the 413 split-and-resend, then the answer
//! table ([`super::answers`]).

use super::answers::apply_answers;
use super::message::{message, split_with_json, state_change_json};
use super::pending::Changed;
use super::policy::{self, Answer};
use super::push;
use super::{DeliveryReport, Job};
use crate::crypto::keys::ReceiverKeys;
use crate::error::PluginError;
use crate::ports::{HttpRequest, LogLevel, PushAction, PushKind, StartedBatch};
use crate::{Env, Plugin};

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
pub(super) fn send_jobs(
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
                        match push::build_request(
                            env.config,
                            signer.as_deref_mut(),
                            &jobs[i].sub,
                            &msg,
                            now_secs,
                        ) {
                            Ok(r) => {
                                retry_requests.push(r);
                                retry_owners.push((i, one));
                            }
                            // As in the first pass: logged, counted, and
                            // that account's change is not kept.
                            Err(e) => build_failed(env, &jobs[i].sub.id, &e, report),
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
    // Every job's answers are acted on even when one fails on write
    // conflicts, so that as much as possible is recorded; an unreachable
    // store stops it (each further write would wait for it). A failure
    // that has the event sent again (`StoreUnavailable`) is the one
    // reported, so that no owed change is left behind.
    let mut failure: Option<PluginError> = None;
    for (job, parts) in jobs.into_iter().zip(results) {
        let Err(e) = apply_answers(env, job, parts, report) else {
            continue;
        };
        let outage =
            matches!(&e, PluginError::StoreUnavailable(m) if !m.ends_with(super::CONFLICTS));
        let resend = matches!(e, PluginError::StoreUnavailable(_));
        if failure.is_none()
            || (resend && !matches!(failure, Some(PluginError::StoreUnavailable(_))))
        {
            failure = Some(e);
        }
        if outage {
            break;
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Encrypts the bodies of the current piece (`requests`, whose owners are
/// the last `requests.len()` of `owners`) that `to_seal` names, with one
/// batched key agreement.
///
/// Lengths were checked by [`push::prepare_request`], so this fails only
/// when the random source fails; then the whole piece is dropped (logged
/// and counted as `dropped`/`build`, as a push that cannot be built always
/// was) and nothing of it is sent.
pub(super) fn seal_piece(
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
pub(super) fn build_failed(
    env: &mut Env<'_>,
    id: &str,
    e: &push::PushBuildError,
    report: &mut DeliveryReport,
) {
    env.log(LogLevel::Error, &format!("push for {id} not built: {e}"));
    report.count("dropped", "build");
}
