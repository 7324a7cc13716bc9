//! The plugin configuration as the host reads it: the one definition in the
//! `jmap-web-push-config` crate (serde, with defaults; `[plugin]` of the
//! configuration file), and its conversion to the WIT `config` record.

use crate::bindings::jmap::web_push::types as wit;

/// Every setting of the plugin (the WIT `config` record); see
/// `wit/plugin.wit` for each field's contract.
pub use jmap_web_push_config::Config as PluginConfig;
/// RFC 8030 urgency, as written in configuration files.
pub use jmap_web_push_config::Urgency;

fn urgency_to_wit(u: Urgency) -> wit::Urgency {
    match u {
        Urgency::VeryLow => wit::Urgency::VeryLow,
        Urgency::Low => wit::Urgency::Low,
        Urgency::Normal => wit::Urgency::Normal,
        Urgency::High => wit::Urgency::High,
    }
}

/// The WIT record handed to the guest.
pub fn to_wit(config: &PluginConfig) -> wit::Config {
    jmap_web_push_config::config_to_wit!(config, wit::Config, wit::UrgencyRule, urgency_to_wit)
}
