//! Adapter component: the plugin's `jmap:web-push/host` (and the types-only
//! `types`) interface from the WASI environment, world `host-adapter` in
//! `wit/adapters.wit`.
//!
//! - `get-config` reads the environment variable [`CONFIG_VAR`]: a JSON
//!   object with the keys of the host harness's `[plugin]` settings section
//!   (snake_case, every key optional, defaults as documented in
//!   `wit/plugin.wit`; the type is `jmap-web-push-config`'s). Unknown keys and wrong types are errors: the adapter
//!   then logs the error to stderr on every `get-config` and answers the
//!   defaults, which are the safe settings (no test mode, VAPID off).
//! - `log` writes `LEVEL message` lines to `wasi:cli/stderr`.
//!
//! The parsing is plain Rust ([`parse_config`]), tested natively; the
//! wit-bindgen glue (wasm32 only) is a thin layer.

#![warn(missing_docs)]

use std::fmt;

/// The plugin's settings: the one definition in `jmap-web-push-config`
/// (the same keys as the host harness's `[plugin]` section).
pub use jmap_web_push_config::{Config, Urgency};

/// The environment variable holding the configuration JSON.
pub const CONFIG_VAR: &str = "JMAP_WEB_PUSH_CONFIG";

/// Why the configuration variable could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The variable is not a JSON object of known keys with the right types.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(m) => write!(f, "{CONFIG_VAR} is invalid: {m}"),
        }
    }
}

/// Parses the value of [`CONFIG_VAR`]; `None` (unset) or an empty string
/// gives the defaults.
pub fn parse_config(value: Option<&str>) -> Result<Config, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Config::default()),
        Some(json) => {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if !value.is_object() {
                return Err(ConfigError::Invalid("not a JSON object".into()));
            }
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))
        }
    }
}

/// The configuration in force: the parsed variable, or the defaults and the
/// error to log.
pub fn config_or_defaults(value: Option<&str>) -> (Config, Option<ConfigError>) {
    match parse_config(value) {
        Ok(c) => (c, None),
        Err(e) => (Config::default(), Some(e)),
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_and_empty_give_the_defaults() {
        assert_eq!(parse_config(None).unwrap(), Config::default());
        assert_eq!(parse_config(Some("  ")).unwrap(), Config::default());
        let d = Config::default();
        assert!(!d.insecure_test_mode);
        assert_eq!(d.vapid_contact, None);
        assert_eq!(d.urgency.get("EmailDelivery"), Some(&Urgency::High));
    }

    #[test]
    fn keys_override_and_the_rest_keep_defaults() {
        let c = parse_config(Some(
            r#"{"insecure_test_mode": true, "vapid_contact": "mailto:ops@example.com",
                "urgency": {"Email": "low"}, "push_ttl_secs": 60}"#,
        ))
        .unwrap();
        assert!(c.insecure_test_mode);
        assert_eq!(c.vapid_contact.as_deref(), Some("mailto:ops@example.com"));
        assert_eq!(c.urgency.len(), 1);
        assert_eq!(c.urgency.get("Email"), Some(&Urgency::Low));
        assert_eq!(c.push_ttl_secs, 60);
        assert_eq!(c.max_subscriptions_per_owner, 50);
    }

    #[test]
    fn bad_json_unknown_keys_and_wrong_types_are_errors() {
        for bad in [
            "{",
            "[]",
            r#"{"insecure_test_mod": true}"#,
            r#"{"push_ttl_secs": "60"}"#,
            r#"{"push_ttl_secs": -1}"#,
            r#"{"default_urgency": "urgent"}"#,
        ] {
            let (cfg, err) = config_or_defaults(Some(bad));
            assert!(err.is_some(), "{bad} accepted");
            assert_eq!(cfg, Config::default(), "{bad} did not fall back");
            assert!(err.unwrap().to_string().contains(CONFIG_VAR));
        }
    }
}
