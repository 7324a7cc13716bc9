//! The JMAP methods of the plugin: `PushSubscription/get` and
//! `PushSubscription/set`, dispatched by name.

pub mod errors;
pub mod get;
pub mod set;

use crate::json::{self, Value};

use crate::subscription::Owner;
use crate::{Env, Plugin};
use errors::{MethodError, MethodErrorType};

/// Calls method `name` with JSON `arguments` for `owner`; returns the JSON
/// response arguments. `created_ids` is the request's createdIds map.
pub fn call(
    plugin: &mut Plugin,
    env: &mut Env<'_>,
    owner: &Owner,
    name: &str,
    arguments: &str,
    created_ids: &mut Vec<(String, String)>,
) -> Result<String, MethodError> {
    if owner.username.is_empty() {
        return Err(MethodError::new(
            MethodErrorType::Forbidden,
            "the caller has no user name",
        ));
    }
    let args = json::parse(arguments).map_err(|e| {
        MethodError::invalid_arguments(format!("arguments are not valid JSON: {e}"))
    })?;
    let Value::Object(args) = args else {
        return Err(MethodError::invalid_arguments(
            "arguments must be a JSON object",
        ));
    };
    let response = match name {
        "PushSubscription/get" => get::get(env, owner, &args)?,
        "PushSubscription/set" => set::set(plugin, env, owner, &args, created_ids)?,
        other => {
            return Err(MethodError::new(
                MethodErrorType::UnknownMethod,
                format!(
                "{:?} is not a method of this plugin (PushSubscription/get, PushSubscription/set)",
                other.chars().take(64).collect::<String>()
            ),
            ))
        }
    };
    Ok(response.to_string())
}
