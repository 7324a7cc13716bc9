//! The updates of `PushSubscription/set`: patches of `expires`, `types`
//! and `verificationCode`; the other properties are immutable.

use crate::json::{Map, Value};

use super::CAS_ATTEMPTS;
use crate::jmap::errors::{SetError, SetErrorType};
use crate::ports::{Condition, StoreError};
use crate::repo::{self, DueKind};
use crate::subscription::{
    self, check_expires, check_types, Owner, Subscription, VerificationState,
};
use crate::Env;
use subtle::ConstantTimeEq;

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

pub(super) fn update_one(
    env: &mut Env<'_>,
    owner: &Owner,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, SetError> {
    let now = env.now_secs();
    // Ids without JMAP Id syntax cannot exist; keep them away from the store.
    if !crate::jmap::get::is_jmap_id(id) {
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
                if bool::from(code.as_bytes().ct_eq(sub.verification_code.as_bytes())) {
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
