//! Lifecycle (behaviour B5, B8) and the periodic task: expiry, credential
//! revocation, user deletion, VAPID key rotation, due verification
//! re-sends, and the Session capability.

use crate::json;
use sha2::{Digest, Sha256};

use crate::crypto::b64url_encode;
use crate::delivery::{policy, push};
use crate::error::PluginError;
use crate::ports::{Condition, LogLevel, PushKind, StoreError};
use crate::repo::{self, DueEntry, DueKind};
use crate::subscription::{Owner, Subscription};
use crate::verification::{self, VerificationOutcome};
use crate::{Env, Plugin};

/// The URI of the RFC 9749 capability.
pub const VAPID_CAPABILITY: &str = "urn:ietf:params:jmap:webpush-vapid";

/// What the host puts in its Session object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// (URI, JSON value) pairs.
    pub capabilities: Vec<(String, String)>,
    /// Changes whenever a capability value changes.
    pub state: String,
}

/// The Session capabilities (RFC 9749 when VAPID is configured).
pub fn session(plugin: &mut Plugin, env: &mut Env<'_>) -> Result<SessionInfo, PluginError> {
    let mut capabilities = Vec::new();
    if let Some(key) = plugin.keyring.public_key(env)? {
        capabilities.push((
            VAPID_CAPABILITY.to_string(),
            json::object([("applicationServerKey", key.into())]).to_string(),
        ));
    }
    let mut h = Sha256::new();
    for (uri, value) in &capabilities {
        h.update(uri.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        h.update([0]);
    }
    let state = b64url_encode(&h.finalize()[..12]);
    Ok(SessionInfo {
        capabilities,
        state,
    })
}

fn erase_ids(
    env: &mut Env<'_>,
    ids: &[String],
    keep: impl Fn(&Subscription) -> bool,
) -> Result<u32, PluginError> {
    let mut n = 0;
    for (sub, _) in repo::load_many(env.store, ids)? {
        if !keep(&sub) && repo::erase(env.store, &sub)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Destroys every subscription created with this credential.
pub fn credential_revoked(
    env: &mut Env<'_>,
    username: &str,
    credential_id: &str,
) -> Result<u32, PluginError> {
    let owner = Owner {
        username: username.to_string(),
        credential_id: Some(credential_id.to_string()),
    };
    let ids = repo::owner_ids(env.store, &owner)?;
    erase_ids(env, &ids, |s| s.owner != owner)
}

/// Destroys every subscription of a user, whatever the credential.
pub fn user_deleted(env: &mut Env<'_>, username: &str) -> Result<u32, PluginError> {
    let ids = repo::user_ids(env.store, username)?;
    erase_ids(env, &ids, |s| s.owner.username != username)
}

/// What [`rotate_vapid_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new public key (`applicationServerKey`), base64url.
    pub application_server_key: String,
    /// How many subscriptions of the old key were destroyed.
    pub destroyed: u32,
}

/// Rotates the VAPID key and destroys the subscriptions created under the
/// old one.
pub fn rotate_vapid_key(plugin: &mut Plugin, env: &mut Env<'_>) -> Result<Rotation, PluginError> {
    // Make sure a key exists, so "old" is well defined.
    plugin.keyring.public_key(env)?;
    let (old, new) = plugin.keyring.rotate(env)?;
    let mut destroyed = 0u32;
    let keys = repo::list_all(env.store, repo::SUB_PREFIX)?;
    let ids: Vec<String> = keys
        .iter()
        .filter_map(|k| repo::sub_id_of_key(k).map(str::to_string))
        .collect();
    for chunk in ids.chunks(200) {
        destroyed += erase_ids(env, chunk, |s| s.vapid_key.is_none() || s.vapid_key != old)?;
    }
    env.log(
        LogLevel::Info,
        &format!("VAPID key rotated; {destroyed} subscriptions of the old key destroyed"),
    );
    env.store
        .put(repo::VAPID_IN_FORCE, new.as_bytes(), Condition::Any)?;
    plugin.reconciled_key = Some(new.clone());
    Ok(Rotation {
        application_server_key: new,
        destroyed,
    })
}

/// Most subscriptions one call of [`reconcile_vapid_key`] looks at; the
/// rest waits for the next `tick` (a store of a million subscriptions is
/// never read in one call, which the CPU deadline would cut off).
pub const RECONCILE_BUDGET: usize = 2_000;

/// Handles a VAPID key replaced outside [`rotate_vapid_key`] (a new
/// `vapid-private-key` in the configuration, or a configured key where a
/// generated one was in force) as a rotation (B8): every subscription
/// created under another key is destroyed, since its push service only
/// accepts pushes signed with the key it was subscribed with.
/// Subscriptions created while VAPID was off (no key) are kept, as
/// rotation keeps them.
///
/// The store keeps the public key the subscriptions are reconciled with
/// ([`repo::VAPID_IN_FORCE`]: `<key>` when done, `<key>\n<cursor>` while a
/// scan is under way). The process that first records a new key there
/// (compare-and-swap) starts the scan; it goes on in pages of at most
/// [`RECONCILE_BUDGET`] subscriptions per call, from the recorded cursor,
/// whichever process makes the call. Each instance checks the marker once
/// per key. `tick` calls this first, so a host that calls `tick` at start
/// (as it SHOULD) reconciles before its first deliveries.
///
/// Returns how many subscriptions were destroyed and whether more remain
/// (then `tick` asks to run again at once).
pub fn reconcile_vapid_key(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
) -> Result<(u32, bool), PluginError> {
    let Some(current) = plugin.keyring.public_key(env)? else {
        return Ok((0, false));
    };
    if plugin.reconciled_key.as_deref() == Some(current.as_str()) {
        return Ok((0, false));
    }
    let marker = env.store.get(repo::VAPID_IN_FORCE)?;
    // `<key>` or `<key>\n<cursor>`.
    let (recorded_key, cursor) = match &marker {
        None => (None, None),
        Some(e) => {
            let text = String::from_utf8_lossy(&e.value);
            match text.split_once('\n') {
                Some((k, c)) => (Some(k.to_string()), Some(c.to_string())),
                None => (Some(text.into_owned()), None),
            }
        }
    };
    let (cursor, version) = if recorded_key.as_deref() == Some(current.as_str()) {
        match (cursor, &marker) {
            (Some(c), Some(e)) => (c, e.version),
            _ => {
                plugin.reconciled_key = Some(current);
                return Ok((0, false));
            }
        }
    } else {
        // Record the new key first: whoever does starts the scan.
        let condition = match &marker {
            Some(e) => Condition::Version(e.version),
            None => Condition::Absent,
        };
        let value = format!("{current}\n");
        match env
            .store
            .put(repo::VAPID_IN_FORCE, value.as_bytes(), condition)
        {
            Ok(v) => (String::new(), v),
            // Another process recorded a key meanwhile: look again next time.
            Err(StoreError::Conflict) => return Ok((0, true)),
            Err(e) => return Err(e.into()),
        }
    };
    let mut after = (!cursor.is_empty()).then_some(cursor);
    let (mut looked, mut destroyed, mut done) = (0usize, 0u32, false);
    while looked < RECONCILE_BUDGET {
        let page = env
            .store
            .list_keys(repo::SUB_PREFIX, after.as_deref(), 200)?;
        let ids: Vec<String> = page
            .keys
            .iter()
            .filter_map(|k| repo::sub_id_of_key(k).map(str::to_string))
            .collect();
        looked += ids.len();
        destroyed += erase_ids(env, &ids, |s| {
            s.vapid_key.as_deref().is_none_or(|k| k == current)
        })?;
        match page.next {
            Some(next) => after = Some(next),
            None => {
                done = true;
                break;
            }
        }
    }
    if destroyed > 0 {
        env.log(
            LogLevel::Warn,
            &format!(
                "the VAPID key in force changed (configuration); {destroyed} subscriptions \
                 of other keys destroyed, as a rotation does"
            ),
        );
    }
    let value = if done {
        current.clone()
    } else {
        format!("{current}\n{}", after.unwrap_or_default())
    };
    match env.store.put(
        repo::VAPID_IN_FORCE,
        value.as_bytes(),
        Condition::Version(version),
    ) {
        Ok(_) => {}
        // Another process moved the cursor on: it continues from there.
        Err(StoreError::Conflict) => return Ok((destroyed, true)),
        Err(e) => return Err(e.into()),
    }
    if done {
        plugin.reconciled_key = Some(current);
    }
    Ok((destroyed, !done))
}

/// What one `tick` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Pushes delivered, deferred, dropped, destroyed.
    pub delivery: crate::delivery::DeliveryReport,
    /// Expired subscriptions destroyed.
    pub expired: u32,
    /// Verification pushes sent.
    pub verifications_sent: u32,
    /// When due work remains, ms from now.
    pub next_run_in_ms: Option<u64>,
}

/// Most due entries one tick handles.
pub const TICK_BUDGET: usize = 500;

/// Does due work (expiry, verification re-sends, pending pushes).
pub fn tick(plugin: &mut Plugin, env: &mut Env<'_>) -> Result<TickReport, PluginError> {
    let mut report = TickReport::default();
    let (_, reconciling) = reconcile_vapid_key(plugin, env)?;
    let now = env.now_ms;
    let page = env
        .store
        .list_keys(repo::DUE_PREFIX, None, TICK_BUDGET as u32 + 1)?;
    let mut verifications: Vec<(DueEntry, Subscription, u64)> = Vec::new();
    let mut pushes: Vec<DueEntry> = Vec::new();
    let mut next: Option<u64> = None;
    for key in page.keys.iter().take(TICK_BUDGET) {
        let Some(entry) = repo::parse_due_key(key) else {
            env.store.delete(key, Condition::Any)?;
            continue;
        };
        if entry.at_ms > now {
            next = Some(entry.at_ms - now);
            break;
        }
        match entry.kind {
            DueKind::Expiry => {
                if let Some((sub, _)) = repo::load(env.store, &entry.id)? {
                    if sub.expires * 1000 <= now {
                        if repo::erase(env.store, &sub)? {
                            report.expired += 1;
                        }
                    } else {
                        // A stale entry (the expiry was moved, maybe by a
                        // racing update): make sure the one in force is
                        // there before this one goes, so the subscription
                        // still expires.
                        env.store.put(
                            &repo::due_key(sub.expires * 1000, DueKind::Expiry, &sub.id),
                            b"",
                            Condition::Any,
                        )?;
                    }
                }
                env.store.delete(&entry.key, Condition::Any)?;
            }
            DueKind::Verification => {
                if let Some(claimed) = claim_verification(env, &entry)? {
                    verifications.push((entry, claimed.0, claimed.1));
                }
            }
            DueKind::Push => pushes.push(entry),
        }
    }
    if next.is_none() && page.keys.len() > TICK_BUDGET {
        next = Some(0);
    }
    report.verifications_sent = resend_verifications(plugin, env, verifications)?;
    if !pushes.is_empty() {
        let d = crate::delivery::send_due(plugin, env, pushes)?;
        report.delivery = d;
    }
    // Work scheduled by this tick (new retries) may be due before `next`.
    if let Some(first) = env.store.list_keys(repo::DUE_PREFIX, None, 1)?.keys.first() {
        if let Some(e) = repo::parse_due_key(first) {
            let wait = e.at_ms.saturating_sub(env.now_ms);
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
    }
    if reconciling {
        next = Some(0);
    }
    report.next_run_in_ms = next;
    Ok(report)
}

/// Claims a due verification with compare-and-swap so that only one host
/// process re-sends it; the claim is a lease (a due entry `CLAIM_LEASE_MS`
/// later), so a crash leads to another attempt, not to a lost one.
fn claim_verification(
    env: &mut Env<'_>,
    entry: &DueEntry,
) -> Result<Option<(Subscription, u64)>, PluginError> {
    let Some((mut sub, version)) = repo::load(env.store, &entry.id)? else {
        env.store.delete(&entry.key, Condition::Any)?;
        return Ok(None);
    };
    let stale = sub.verification.delivered
        || sub.verification.verified
        || sub.verification.next_attempt_ms != Some(entry.at_ms);
    if stale {
        env.store.delete(&entry.key, Condition::Any)?;
        return Ok(None);
    }
    if sub.is_expired(env.now_secs()) {
        repo::erase(env.store, &sub)?;
        env.store.delete(&entry.key, Condition::Any)?;
        return Ok(None);
    }
    let lease = env.now_ms + crate::jmap::set::CLAIM_LEASE_MS;
    env.store.put(
        &repo::due_key(lease, DueKind::Verification, &sub.id),
        b"",
        Condition::Any,
    )?;
    sub.verification.next_attempt_ms = Some(lease);
    match repo::save(env.store, &sub, Condition::Version(version)) {
        Ok(v) => {
            env.store.delete(&entry.key, Condition::Any)?;
            Ok(Some((sub, v)))
        }
        // Another process claimed it first.
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn resend_verifications(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    claimed: Vec<(DueEntry, Subscription, u64)>,
) -> Result<u32, PluginError> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let now_secs = env.now_secs();
    let mut signer = plugin.keyring.signer(env)?;
    let mut requests = Vec::new();
    let mut built = Vec::new();
    for (_, sub, _) in &claimed {
        let msg = verification::message(env.config, &sub.id, &sub.verification_code);
        match push::build_request(env.config, signer.as_deref_mut(), sub, &msg, now_secs) {
            Ok(r) => {
                requests.push(r);
                built.push(true);
            }
            Err(e) => {
                env.log(
                    LogLevel::Error,
                    &format!("verification push not built: {e}"),
                );
                built.push(false);
            }
        }
    }
    let sent = requests.len() as u32;
    let mut answers = env.http.send_batch(requests).into_iter();
    for ((_, mut sub, version), ok) in claimed.into_iter().zip(built) {
        // Only built requests were sent: an unbuilt one takes no answer.
        let outcome = if !ok {
            VerificationOutcome::Refused("the verification push could not be built".into())
        } else {
            match answers.next() {
                Some(a) => {
                    let answer = policy::classify(&a, now_secs, env.config.retry_after_cap_secs);
                    let outcome = verification::outcome(&answer);
                    env.push_outcome(
                        &sub.id,
                        &sub.url,
                        PushKind::Verification,
                        answer.reason(),
                        outcome.action(),
                    );
                    outcome
                }
                None => VerificationOutcome::Retry(None),
            }
        };
        let lease_key = sub
            .verification
            .next_attempt_ms
            .map(|at| repo::due_key(at, DueKind::Verification, &sub.id));
        match outcome {
            VerificationOutcome::Delivered => {
                sub.verification.delivered = true;
                sub.verification.next_attempt_ms = None;
            }
            VerificationOutcome::Refused(why) => {
                env.log(
                    LogLevel::Info,
                    &format!(
                        "subscription {} destroyed: verification refused: {why}",
                        sub.id
                    ),
                );
                repo::erase(env.store, &sub)?;
                if let Some(k) = lease_key {
                    env.store.delete(&k, Condition::Any)?;
                }
                continue;
            }
            VerificationOutcome::Retry(after) => {
                let delay = after.unwrap_or_else(|| {
                    policy::backoff_ms(
                        sub.verification.attempts,
                        env.config.retry_initial_ms,
                        env.config.retry_max_ms,
                        policy::random_jitter(),
                    )
                });
                sub.verification.attempts += 1;
                let at = env.now_ms + delay;
                sub.verification.next_attempt_ms = Some(at);
                env.store.put(
                    &repo::due_key(at, DueKind::Verification, &sub.id),
                    b"",
                    Condition::Any,
                )?;
            }
        }
        crate::jmap::set::update_verification(env, &sub, version)?;
        if let Some(k) = lease_key {
            env.store.delete(&k, Condition::Any)?;
        }
    }
    Ok(sent)
}
