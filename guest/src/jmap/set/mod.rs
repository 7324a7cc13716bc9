//! `PushSubscription/set` (RFC 8620 §7.2.2, behaviour B3 and B4): the
//! call as a whole here (argument checks, "#creationId" references, the
//! order destroys, creates and updates run in); one module per operation.

mod create;
mod update;

#[cfg(test)]
mod store_fault_tests;

pub(crate) use update::update_verification;

use crate::json::{self, Map, Value};

use super::errors::{MethodError, MethodErrorType, SetError, SetErrorType};
use crate::repo;
use crate::subscription::Owner;
use crate::Env;
use crate::Plugin;
use create::create_all;
use update::update_one;

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
pub(super) type Keyed = (String, Map<String, Value>);

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
