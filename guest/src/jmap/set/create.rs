//! The creates of `PushSubscription/set`: checks, quota and rate, the
//! deviceClientId reservation, storing the record, and the verification
//! push whose answer decides whether it stays (B3, B4).

use crate::json::{Map, Value};

use super::update::update_verification;
use super::CAS_ATTEMPTS;
use super::CLAIM_LEASE_MS;
use crate::create_rate::CreateLog;
use crate::delivery::policy;
use crate::delivery::push;
use crate::jmap::errors::{MethodError, SetError, SetErrorType};
use crate::ports::{Condition, LogLevel, PushKind, StoreError};
use crate::repo::{self, DueKind};
use crate::subscription::{check_create, NewSubscription, Owner, Subscription, VerificationState};
use crate::verification::{self, VerificationOutcome};
use crate::{Env, Plugin};

/// A create that passed validation and is stored, awaiting its
/// verification push.
struct Prepared {
    cid: String,
    sub: Subscription,
    version: u64,
    new: NewSubscription,
    due_key: String,
}

pub(super) fn create_all(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    owner: &Owner,
    create: &[(String, Map<String, Value>)],
    created_ids: &mut Vec<(String, String)>,
    created: &mut Map<String, Value>,
    not_created: &mut Map<String, Value>,
) -> Result<(), MethodError> {
    let now = env.now_secs();
    let mut prepared: Vec<Prepared> = Vec::new();
    for (cid, obj) in create {
        match prepare_create(plugin, env, owner, cid, obj, now) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                not_created.insert(cid.clone(), e.to_json());
            }
        }
    }
    if prepared.is_empty() {
        return Ok(());
    }

    // One batch of verification pushes for all creates of this call.
    let mut requests = Vec::with_capacity(prepared.len());
    let mut sendable = Vec::with_capacity(prepared.len());
    let signer_result = plugin.keyring.signer(env);
    let mut signer = match signer_result {
        Ok(s) => s,
        Err(e) => {
            for p in &prepared {
                undo_create(env, &p.sub);
                not_created.insert(
                    p.cid.clone(),
                    SetError::new(SetErrorType::ServerFail, e.to_string()).to_json(),
                );
            }
            return Ok(());
        }
    };
    for p in &prepared {
        let msg = verification::message(env.config, &p.sub.id, &p.sub.verification_code);
        match push::build_request(env.config, signer.as_deref_mut(), &p.sub, &msg, now) {
            Ok(r) => {
                requests.push(r);
                sendable.push(true);
            }
            Err(e) => {
                env.log(
                    LogLevel::Error,
                    &format!("verification push not built: {e}"),
                );
                sendable.push(false);
            }
        }
    }
    let mut answers = env.http.send_batch(requests).into_iter();

    for (p, ok) in prepared.into_iter().zip(sendable) {
        let outcome = if ok {
            match answers.next() {
                Some(a) => {
                    let answer = policy::classify(&a, now, env.config.retry_after_cap_secs);
                    let outcome = verification::outcome(&answer);
                    env.push_outcome(
                        &p.sub.id,
                        &p.sub.url,
                        PushKind::Verification,
                        answer.reason(),
                        outcome.action(),
                    );
                    outcome
                }
                None => VerificationOutcome::Retry(None),
            }
        } else {
            VerificationOutcome::Refused("the verification push could not be built".into())
        };
        match finish_create(env, p, outcome) {
            Ok((cid, id, value)) => {
                created_ids.retain(|(c, _)| *c != cid);
                created_ids.push((cid.clone(), id));
                created.insert(cid, value);
            }
            Err((cid, e)) => {
                not_created.insert(cid, e.to_json());
            }
        }
    }
    Ok(())
}

fn prepare_create(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    owner: &Owner,
    cid: &str,
    obj: &Map<String, Value>,
    now: u64,
) -> Result<Prepared, SetError> {
    let new = check_create(obj, env.config, now)?;

    let existing = repo::owner_ids(env.store, owner)?;
    if existing.len() >= env.config.max_subscriptions_per_owner as usize {
        return Err(over_quota(env));
    }
    check_rate(env, owner, now)?;

    let id = verification::new_id()
        .map_err(|e| SetError::new(SetErrorType::ServerFail, e.to_string()))?;
    let code = verification::new_code()
        .map_err(|e| SetError::new(SetErrorType::ServerFail, e.to_string()))?;
    let vapid_key = plugin
        .keyring
        .public_key(env)
        .map_err(|e| SetError::new(SetErrorType::ServerFail, e.to_string()))?;
    let lease_until = env.now_ms.saturating_add(CLAIM_LEASE_MS);
    let sub = Subscription {
        id: id.clone(),
        owner: owner.clone(),
        device_client_id: new.device_client_id.clone(),
        url: new.url.clone(),
        keys: new.keys.clone(),
        verification_code: code,
        verification: VerificationState {
            verified: false,
            delivered: false,
            attempts: 0,
            next_attempt_ms: Some(lease_until),
        },
        expires: new.expires,
        types: new.types.clone(),
        created: now,
        vapid_key,
        refusals: Default::default(),
        last_push_ms: 0,
    };
    // The due entry first: if the host dies after storing the record, a
    // later `tick` still re-sends the verification.
    let due_key = repo::due_key(lease_until, DueKind::Verification, &id);
    let expiry_key = repo::due_key(new.expires * 1000, DueKind::Expiry, &id);
    let undo = |env: &mut Env<'_>| undo_create(env, &sub);
    // The record is stored before the deviceClientId is reserved, so a
    // reservation whose record is missing is always a leftover (never a
    // create still in flight on another host) and can be taken over safely.
    let stored = env
        .store
        .put(&due_key, b"", Condition::Any)
        .and_then(|_| env.store.put(&expiry_key, b"", Condition::Any))
        .and_then(|_| repo::save(env.store, &sub, Condition::Absent));
    let version = match stored {
        Ok(v) => v,
        Err(e) => {
            undo(env);
            return Err(e.into());
        }
    };
    if let Err(e) = reserve_device_client_id(env, owner, &new.device_client_id, &id) {
        undo(env);
        return Err(e);
    }
    if let Err(e) = env.store.put(
        &format!("{}{}", repo::owner_prefix(owner), id),
        b"",
        Condition::Any,
    ) {
        undo(env);
        return Err(e.into());
    }
    // Recount now that this one is indexed: of creates racing on several
    // hosts, those that find the owner over quota back out, so the quota
    // holds (at worst all racers back out and the client retries).
    match repo::owner_ids(env.store, owner) {
        Ok(ids) if ids.len() > env.config.max_subscriptions_per_owner as usize => {
            undo(env);
            return Err(over_quota(env));
        }
        Ok(_) => {}
        Err(e) => {
            undo(env);
            return Err(e.into());
        }
    }
    Ok(Prepared {
        cid: cid.to_string(),
        sub,
        version,
        new,
        due_key,
    })
}

/// Takes back a create that is reported in `notCreated`, logging it when
/// the store fails part-way. What such a failure can leave is described
/// at `repo::erase`: nothing is ever pushed for it, and once its owner
/// index is gone, `tick` erases the rest at its expiry.
fn undo_create(env: &mut Env<'_>, sub: &Subscription) {
    if let Err(e) = repo::erase(env.store, sub) {
        env.log(
            LogLevel::Error,
            &format!(
                "push subscription {} was refused but could not be erased ({e}); \
                 what is left of it is erased at its expiry, {}",
                sub.id,
                crate::utcdate::format(sub.expires)
            ),
        );
    }
}

fn over_quota(env: &Env<'_>) -> SetError {
    SetError::new(
        SetErrorType::OverQuota,
        format!(
            "at most {} push subscriptions per user; destroy one first",
            env.config.max_subscriptions_per_owner
        ),
    )
}

/// Counts creates in the last hour ([`CreateLog`]); refuses beyond the
/// limit, else records this one (compare-and-swap, so concurrent creates
/// are all counted).
fn check_rate(env: &mut Env<'_>, owner: &Owner, now: u64) -> Result<(), SetError> {
    let key = repo::rate_key(owner);
    for _ in 0..CAS_ATTEMPTS {
        let entry = env.store.get(&key)?;
        let mut log = entry
            .as_ref()
            .map(|e| CreateLog::from_record(&e.value))
            .unwrap_or_default();
        log.expire(now);
        if log.count() >= u64::from(env.config.max_creates_per_hour) {
            return Err(SetError::new(
                SetErrorType::RateLimit,
                format!(
                    "at most {} push subscriptions may be created per hour; try again later",
                    env.config.max_creates_per_hour
                ),
            ));
        }
        log.record(now);
        let bytes = log.to_record();
        let cond = match &entry {
            Some(e) => Condition::Version(e.version),
            None => Condition::Absent,
        };
        match env.store.put(&key, &bytes, cond) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SetError::new(
        SetErrorType::ServerFail,
        "too much contention on the rate record",
    ))
}

/// Claims (owner, deviceClientId) for `id` atomically. A reservation whose
/// subscription no longer exists (left by a crash) is taken over.
fn reserve_device_client_id(
    env: &mut Env<'_>,
    owner: &Owner,
    dcid: &str,
    id: &str,
) -> Result<(), SetError> {
    let key = repo::dcid_key(owner, dcid);
    for _ in 0..CAS_ATTEMPTS {
        match env.store.put(&key, id.as_bytes(), Condition::Absent) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(e) = env.store.get(&key)? else {
            continue;
        };
        let holder = String::from_utf8_lossy(&e.value).to_string();
        if env.store.get(&repo::sub_key(&holder))?.is_some() {
            let mut err = SetError::invalid_property(
                "deviceClientId",
                format!("this deviceClientId already has push subscription {holder:?}; update or destroy it"),
            );
            err.existing_id = Some(holder);
            return Err(err);
        }
        // Stale reservation: take it over if nobody changed it meanwhile.
        match env
            .store
            .put(&key, id.as_bytes(), Condition::Version(e.version))
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SetError::new(
        SetErrorType::ServerFail,
        "too much contention on deviceClientId",
    ))
}

type Created = (String, String, Value);

fn finish_create(
    env: &mut Env<'_>,
    p: Prepared,
    outcome: VerificationOutcome,
) -> Result<Created, (String, SetError)> {
    let Prepared {
        cid,
        mut sub,
        version,
        new,
        due_key,
    } = p;
    let fail = |e: StoreError, cid: &str| (cid.to_string(), SetError::from(e));
    match outcome {
        VerificationOutcome::Refused(why) => {
            // Nothing stays stored (B4), not even the expiry entry.
            undo_create(env, &sub);
            return Err((cid, SetError::invalid_property("url", why)));
        }
        VerificationOutcome::Delivered => {
            sub.verification.delivered = true;
            sub.verification.next_attempt_ms = None;
            update_verification(env, &sub, version).map_err(|e| fail(e, &cid))?;
            let _ = env.store.delete(&due_key, Condition::Any);
        }
        VerificationOutcome::Retry(after) => {
            let delay = after.unwrap_or_else(|| {
                policy::backoff_ms(
                    0,
                    env.config.retry_initial_ms,
                    env.config.retry_max_ms,
                    policy::random_jitter(),
                )
            });
            let at = env.now_ms.saturating_add(delay);
            sub.verification.attempts = 1;
            sub.verification.next_attempt_ms = Some(at);
            env.store
                .put(
                    &repo::due_key(at, DueKind::Verification, &sub.id),
                    b"",
                    Condition::Any,
                )
                .map_err(|e| fail(e, &cid))?;
            update_verification(env, &sub, version).map_err(|e| fail(e, &cid))?;
            let _ = env.store.delete(&due_key, Condition::Any);
        }
    }
    let mut value = Map::new();
    value.insert("id".into(), Value::from(sub.id.as_str()));
    value.insert(
        "expires".into(),
        Value::from(crate::utcdate::format(sub.expires)),
    );
    if new.types_defaulted {
        value.insert("types".into(), Value::Null);
    }
    if new.keys_defaulted {
        value.insert("keys".into(), Value::Null);
    }
    Ok((cid, sub.id.clone(), Value::Object(value)))
}
