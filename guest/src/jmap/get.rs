//! `PushSubscription/get` (RFC 8620 §7.2.1, behaviour B2).

use crate::json::{self, Map, Value};

use super::errors::{MethodError, MethodErrorType};
use crate::repo;
use crate::subscription::{Owner, Property};
use crate::Env;

/// Runs `PushSubscription/get` for `owner`.
pub fn get(
    env: &mut Env<'_>,
    owner: &Owner,
    args: &Map<String, Value>,
) -> Result<Value, MethodError> {
    let properties = parse_properties(args.get("properties"))?;
    let ids: Option<Vec<String>> = match args.get("ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            if items.len() > env.config.max_objects_in_get as usize {
                return Err(MethodError::new(
                    MethodErrorType::RequestTooLarge,
                    format!(
                        "{} ids requested; maxObjectsInGet is {}",
                        items.len(),
                        env.config.max_objects_in_get
                    ),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        return Err(MethodError::invalid_arguments(
                            "ids must be an array of strings or null",
                        ))
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            return Err(MethodError::invalid_arguments(
                "ids must be an array of strings or null",
            ))
        }
    };

    let now = env.now_secs();
    let (wanted, explicit) = match ids {
        None => (repo::owner_ids(env.store, owner)?, false),
        Some(ids) => (ids, true),
    };
    // Ids that are not valid JMAP ids cannot exist; skip the store for them.
    // An id asked for twice is looked up (and returned) once (RFC 8620 §5.1).
    let mut lookup: Vec<String> = Vec::with_capacity(wanted.len());
    for id in wanted.iter().filter(|id| is_jmap_id(id)) {
        if !lookup.contains(id) {
            lookup.push(id.clone());
        }
    }
    let found = repo::load_many(env.store, &lookup)?;
    let mut list = Vec::new();
    let mut present: Vec<&str> = Vec::new();
    for (sub, _version) in &found {
        if sub.owner != *owner {
            continue;
        }
        if sub.is_expired(now) {
            // Never returned; purge now rather than wait for `tick` (B5).
            repo::erase(env.store, sub)?;
            continue;
        }
        list.push(sub.to_json(&properties));
        present.push(&sub.id);
    }
    let mut not_found: Vec<Value> = Vec::new();
    if explicit {
        let mut seen: Vec<&str> = Vec::new();
        for id in &wanted {
            if !present.contains(&id.as_str()) && !seen.contains(&id.as_str()) {
                not_found.push(Value::String(id.clone()));
                seen.push(id);
            }
        }
    }
    Ok(json::object([
        ("list", Value::Array(list)),
        ("notFound", Value::Array(not_found)),
    ]))
}

fn parse_properties(v: Option<&Value>) -> Result<Vec<Property>, MethodError> {
    match v {
        None | Some(Value::Null) => Ok(Property::DEFAULT_GET.to_vec()),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(name) = item else {
                    return Err(MethodError::invalid_arguments(
                        "properties must be an array of property names or null",
                    ));
                };
                match Property::from_name(name) {
                    Some(Property::Url) | Some(Property::Keys) => {
                        return Err(MethodError::new(
                            MethodErrorType::Forbidden,
                            format!(
                            "{name} is never returned by PushSubscription/get (RFC 8620 §7.2.1)"
                        ),
                        ))
                    }
                    Some(p) => {
                        if !out.contains(&p) {
                            out.push(p)
                        }
                    }
                    None => {
                        return Err(MethodError::invalid_arguments(format!(
                            "unknown property {:?}",
                            name.chars().take(64).collect::<String>()
                        )))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(MethodError::invalid_arguments(
            "properties must be an array of property names or null",
        )),
    }
}

/// Whether `s` has JMAP Id syntax (RFC 8620 §1.2).
pub fn is_jmap_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
