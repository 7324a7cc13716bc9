//! `PushSubscription/set` (RFC 8620 §7.2.2, behaviour B3 and B4).

use crate::json::{self, Map, Value};

use super::errors::{MethodError, MethodErrorType, SetError, SetErrorType};
use crate::delivery::policy;
use crate::delivery::push;
use crate::ports::{Condition, PushKind, StoreError};
use crate::repo::{self, DueKind};
use crate::subscription::{
    self, check_create, check_expires, check_types, NewSubscription, Owner, Subscription,
    VerificationState,
};
use crate::verification::{self, VerificationOutcome};
use crate::{Env, Plugin};

/// How long a create or a claimed retry owns a pending verification before
/// another attempt may start (crash safety), ms.
pub const CLAIM_LEASE_MS: u64 = 60_000;

/// How often a conflicting compare-and-swap is retried.
const CAS_ATTEMPTS: usize = 8;

/// Runs `PushSubscription/set` for `owner`. `created_ids` is the request's
/// createdIds map; creations are added to it.
pub fn set(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    owner: &Owner,
    args: &Map<String, Value>,
    created_ids: &mut Vec<(String, String)>,
) -> Result<Value, MethodError> {
    if args.get("ifInState").is_some_and(|v| !v.is_null()) {
        return Err(MethodError::invalid_arguments(
            "PushSubscription/set has no ifInState (RFC 8620 §7.2.2)",
        ));
    }
    let create = object_map(args.get("create"), "create")?;
    let update = object_map(args.get("update"), "update")?;
    let destroy: Vec<String> = match args.get("destroy") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(MethodError::invalid_arguments(
                    "destroy must be an array of ids",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(MethodError::invalid_arguments(
                "destroy must be an array of ids or null",
            ))
        }
    };
    let ops = create.len() + update.len() + destroy.len();
    if ops > env.config.max_objects_in_set as usize {
        return Err(MethodError::new(
            MethodErrorType::RequestTooLarge,
            format!(
                "{ops} operations; maxObjectsInSet is {}",
                env.config.max_objects_in_set
            ),
        ));
    }

    // A "#creationId" reference names the id created under it (this call's
    // or an earlier call's of the same request).
    let resolve = |id: &str, created_ids: &[(String, String)]| -> Option<String> {
        match id.strip_prefix('#') {
            Some(cid) => created_ids
                .iter()
                .find(|(c, _)| c == cid)
                .map(|(_, id)| id.clone()),
            None => Some(id.to_string()),
        }
    };

    // RFC 8620 §5.3 judges the state after the whole call (B1, B3): the
    // destroys of existing subscriptions run first, so that `destroy: [old]`
    // with a create of the same deviceClientId (how a client replaces its
    // keys), or one more create at the quota, succeeds. A destroy cannot
    // depend on a create or an update of the same call except through a
    // "#creationId" reference; those run last, after the creates.
    // ("#creationId" references to creates of earlier calls of the request
    // are existing ids too.)
    let mut destroy_results: Vec<Option<(String, Result<(), SetError>)>> = destroy
        .iter()
        .map(|d| {
            let created_here = d
                .strip_prefix('#')
                .is_some_and(|cid| create.iter().any(|(c, _)| c == cid));
            if created_here {
                return None;
            }
            resolve(d, created_ids).map(|id| {
                let r = destroy_one(env, owner, &id);
                (id, r)
            })
        })
        .collect();

    let mut created = Map::new();
    let mut not_created = Map::new();
    create_all(
        plugin,
        env,
        owner,
        &create,
        created_ids,
        &mut created,
        &mut not_created,
    )?;

    // Resolve the other "#creationId" references now that this call's
    // creates exist.
    let destroy_ids: Vec<(String, Option<String>)> = destroy
        .iter()
        .map(|d| (d.clone(), resolve(d, created_ids)))
        .collect();

    let mut updated = Map::new();
    let mut not_updated = Map::new();
    for (key, patch) in &update {
        // Responses name the real id when a "#creationId" resolved.
        let shown = resolve(key, created_ids).unwrap_or_else(|| key.clone());
        let result = match resolve(key, created_ids) {
            None => Err(SetError::not_found(key)),
            Some(id)
                if destroy_ids
                    .iter()
                    .any(|(_, d)| d.as_deref() == Some(id.as_str())) =>
            {
                Err(SetError::new(
                    SetErrorType::WillDestroy,
                    "this id is also destroyed in this call",
                ))
            }
            Some(id) => update_one(env, owner, &id, patch),
        };
        match result {
            Ok(v) => {
                updated.insert(shown, v);
            }
            Err(e) => {
                not_updated.insert(shown, e.to_json());
            }
        }
    }

    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    for ((key, id), done) in destroy_ids.into_iter().zip(destroy_results.iter_mut()) {
        let (shown, result) = match (done.take(), id) {
            (Some(done), _) => done,
            (None, None) => (key.clone(), Err(SetError::not_found(&key))),
            (None, Some(id)) => {
                let r = destroy_one(env, owner, &id);
                (id, r)
            }
        };
        match result {
            Ok(()) => destroyed.push(Value::String(shown)),
            Err(e) => {
                not_destroyed.insert(shown, e.to_json());
            }
        }
    }

    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    Ok(json::object([
        ("created", or_null(created)),
        ("updated", or_null(updated)),
        (
            "destroyed",
            if destroyed.is_empty() {
                Value::Null
            } else {
                Value::Array(destroyed)
            },
        ),
        ("notCreated", or_null(not_created)),
        ("notUpdated", or_null(not_updated)),
        ("notDestroyed", or_null(not_destroyed)),
    ]))
}

/// A creation id or object id with its JSON object.
type Keyed = (String, Map<String, Value>);

fn object_map(v: Option<&Value>, name: &str) -> Result<Vec<Keyed>, MethodError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(o) => Ok((k.clone(), o.clone())),
                _ => Err(MethodError::invalid_arguments(format!(
                    "{name}[{k:?}] must be an object"
                ))),
            })
            .collect(),
        Some(_) => Err(MethodError::invalid_arguments(format!(
            "{name} must be an object or null"
        ))),
    }
}

/// A create that passed validation and is stored, awaiting its
/// verification push.
struct Prepared {
    cid: String,
    sub: Subscription,
    version: u64,
    new: NewSubscription,
    due_key: String,
    expiry_key: String,
}

fn create_all(
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
                let _ = repo::erase(env.store, &p.sub);
                let _ = env.store.delete(&p.due_key, Condition::Any);
                let _ = env.store.delete(&p.expiry_key, Condition::Any);
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
                    crate::ports::LogLevel::Error,
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
    let undo = |env: &mut Env<'_>| {
        let _ = repo::erase(env.store, &sub);
        let _ = env.store.delete(&due_key, Condition::Any);
        let _ = env.store.delete(&expiry_key, Condition::Any);
    };
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
        expiry_key,
    })
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

/// Counts creates in the last hour; refuses beyond the limit, else records
/// this one (compare-and-swap, so concurrent creates are all counted).
fn check_rate(env: &mut Env<'_>, owner: &Owner, now: u64) -> Result<(), SetError> {
    let key = repo::rate_key(owner);
    for _ in 0..CAS_ATTEMPTS {
        let entry = env.store.get(&key)?;
        let mut times: Vec<u64> = entry
            .as_ref()
            .and_then(|e| json::parse_slice(&e.value).ok())
            .and_then(|v| {
                v.as_array().and_then(|items| {
                    items
                        .iter()
                        .map(Value::as_u64)
                        .collect::<Option<Vec<u64>>>()
                })
            })
            .unwrap_or_default();
        times.retain(|t| t + 3600 > now);
        if times.len() >= env.config.max_creates_per_hour as usize {
            return Err(SetError::new(
                SetErrorType::RateLimit,
                format!(
                    "at most {} push subscriptions may be created per hour; try again later",
                    env.config.max_creates_per_hour
                ),
            ));
        }
        times.push(now);
        let bytes = Value::Array(times.into_iter().map(Value::from).collect())
            .to_string()
            .into_bytes();
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
        expiry_key,
    } = p;
    let fail = |e: StoreError, cid: &str| (cid.to_string(), SetError::from(e));
    match outcome {
        VerificationOutcome::Refused(why) => {
            // Nothing stays stored (B4), not even the expiry entry.
            repo::erase(env.store, &sub).map_err(|e| fail(e, &cid))?;
            let _ = env.store.delete(&due_key, Condition::Any);
            let _ = env.store.delete(&expiry_key, Condition::Any);
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

/// Stores new verification progress on a record that may have been updated
/// meanwhile (the client may verify while the push is in flight): only the
/// verification fields are merged in.
pub(crate) fn update_verification(
    env: &mut Env<'_>,
    sub: &Subscription,
    mut version: u64,
) -> Result<(), StoreError> {
    let mut current = sub.clone();
    for _ in 0..CAS_ATTEMPTS {
        match repo::save(env.store, &current, Condition::Version(version)) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => {
                let Some((fresh, v)) = repo::load(env.store, &sub.id)? else {
                    return Ok(()); // destroyed meanwhile
                };
                let verified = fresh.verification.verified;
                current = fresh;
                current.verification = VerificationState {
                    verified,
                    ..sub.verification.clone()
                };
                version = v;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

fn update_one(
    env: &mut Env<'_>,
    owner: &Owner,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, SetError> {
    let now = env.now_secs();
    // Ids without JMAP Id syntax cannot exist; keep them away from the store.
    if !super::get::is_jmap_id(id) {
        return Err(SetError::not_found(id));
    }
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut sub, version)) = repo::load(env.store, id)? else {
            return Err(SetError::not_found(id));
        };
        let old_expires = sub.expires;
        if sub.owner != *owner || sub.is_expired(now) {
            return Err(SetError::not_found(id));
        }
        let mut changed = Map::new();
        let mut bad: Vec<SetError> = Vec::new();
        for (path, value) in patch {
            if let Err(e) = apply(env, &mut sub, path, value, now, &mut changed) {
                bad.push(e);
            }
        }
        if let Some(first) = bad.first() {
            if first.kind != SetErrorType::InvalidProperties || bad.len() == 1 {
                return Err(first.clone());
            }
            let mut e = first.clone();
            e.properties = bad.iter().flat_map(|b| b.properties.clone()).collect();
            e.description = bad
                .iter()
                .map(|b| b.description.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(e);
        }
        match repo::save(env.store, &sub, Condition::Version(version)) {
            Ok(_) => {
                if patch.contains_key("expires") {
                    // The entry of the expiry in force (written again on a
                    // retry of the same update), then the old one goes. A
                    // failure or a race in between leaves an entry that is
                    // stale or missing; `tick` puts the right one back when
                    // it meets a stale one.
                    let key = repo::due_key(sub.expires * 1000, DueKind::Expiry, id);
                    env.store.put(&key, b"", Condition::Any)?;
                    if sub.expires != old_expires {
                        let old = repo::due_key(old_expires * 1000, DueKind::Expiry, id);
                        env.store.delete(&old, Condition::Any)?;
                    }
                }
                return Ok(if changed.is_empty() {
                    Value::Null
                } else {
                    Value::Object(changed)
                });
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SetError::new(
        SetErrorType::ServerFail,
        "too much contention on this subscription",
    ))
}

/// Applies one patch entry; records server-changed values in `changed`.
fn apply(
    env: &Env<'_>,
    sub: &mut Subscription,
    path: &str,
    value: &Value,
    now: u64,
    changed: &mut Map<String, Value>,
) -> Result<(), SetError> {
    if path.contains('/') {
        let top = path.split('/').next().unwrap_or("");
        if top == "types" {
            return Err(SetError {
                properties: vec![path.to_string()],
                ..SetError::new(
                    SetErrorType::InvalidPatch,
                    "types must be replaced as a whole",
                )
            });
        }
        return Err(SetError::invalid_property(
            path,
            format!("{path} cannot be patched"),
        ));
    }
    match path {
        "expires" => {
            let (t, was_changed) = check_expires(value, env.config, now)?;
            sub.expires = t;
            if was_changed {
                changed.insert("expires".into(), Value::from(crate::utcdate::format(t)));
            }
        }
        "types" => {
            sub.types = check_types(value)?;
        }
        "verificationCode" => match value {
            Value::String(code) => {
                if constant_time_eq(code.as_bytes(), sub.verification_code.as_bytes()) {
                    sub.verification.verified = true;
                } else {
                    return Err(SetError::invalid_property(
                        "verificationCode",
                        "verificationCode does not match the code sent to the push service",
                    ));
                }
            }
            Value::Null if !sub.verification.verified => {}
            _ => {
                return Err(SetError::invalid_property(
                    "verificationCode",
                    "verificationCode must be the string sent to the push service",
                ))
            }
        },
        "id" | "deviceClientId" | "url" | "keys" => {
            let current = sub.to_json(&[
                subscription::Property::from_name(path).unwrap_or(subscription::Property::Id)
            ]);
            if current.get(path) != Some(value) {
                return Err(SetError::invalid_property(
                    path,
                    format!("{path} is immutable"),
                ));
            }
        }
        other => {
            return Err(SetError::invalid_property(
                other,
                format!("{other:?} is not a PushSubscription property"),
            ))
        }
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn destroy_one(env: &mut Env<'_>, owner: &Owner, id: &str) -> Result<(), SetError> {
    if !super::get::is_jmap_id(id) {
        return Err(SetError::not_found(id));
    }
    let Some((sub, _)) = repo::load(env.store, id)? else {
        return Err(SetError::not_found(id));
    };
    if sub.owner != *owner || sub.is_expired(env.now_secs()) {
        return Err(SetError::not_found(id));
    }
    repo::erase(env.store, &sub)?;
    Ok(())
}
