//! The plugin configuration as the host reads it (serde, with defaults) and
//! its conversion to the WIT `config` record.

use serde::{Deserialize, Serialize};

use crate::bindings::jmap::web_push::types as wit;

/// RFC 8030 urgency, as written in configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// `very-low`
    VeryLow,
    /// `low`
    Low,
    /// `normal`
    Normal,
    /// `high`
    High,
}

impl From<Urgency> for wit::Urgency {
    fn from(u: Urgency) -> Self {
        match u {
            Urgency::VeryLow => wit::Urgency::VeryLow,
            Urgency::Low => wit::Urgency::Low,
            Urgency::Normal => wit::Urgency::Normal,
            Urgency::High => wit::Urgency::High,
        }
    }
}

/// Every setting of the plugin (the WIT `config` record); see
/// `wit/plugin.wit` for each field's contract. Defaults match the WIT docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Data type names a subscription may name.
    pub known_types: Vec<String>,
    /// Longest subscription lifetime, seconds (>= 48 h).
    pub max_lifetime_secs: u64,
    /// Subscriptions per owner.
    pub max_subscriptions_per_owner: u32,
    /// Creates per owner per hour.
    pub max_creates_per_hour: u32,
    /// `maxObjectsInGet`.
    pub max_objects_in_get: u32,
    /// `maxObjectsInSet`.
    pub max_objects_in_set: u32,
    /// Push `TTL`, seconds.
    pub push_ttl_secs: u32,
    /// Type name → urgency.
    pub urgency: std::collections::BTreeMap<String, Urgency>,
    /// Urgency when no rule matches.
    pub default_urgency: Urgency,
    /// Largest plaintext per push (<= 3993).
    pub max_plaintext_octets: u32,
    /// VAPID contact (`mailto:` or `https:`); none disables VAPID.
    pub vapid_contact: Option<String>,
    /// VAPID private key (base64url scalar); none = generated and stored.
    pub vapid_private_key: Option<String>,
    /// VAPID token lifetime, seconds (<= 86400).
    pub vapid_token_lifetime_secs: u32,
    /// Reject `keys: null`.
    pub require_keys: bool,
    /// Minimum seconds between pushes to one subscription.
    pub min_push_interval_secs: u32,
    /// First retry delay, ms.
    pub retry_initial_ms: u32,
    /// Largest retry delay, ms.
    pub retry_max_ms: u32,
    /// Cap on `Retry-After`, seconds.
    pub retry_after_cap_secs: u32,
    /// Give up on a pending change after, seconds.
    pub give_up_after_secs: u32,
    /// Consecutive refusals before destroying.
    pub permanent_failure_limit: u32,
    /// Per-request timeout, ms.
    pub http_timeout_ms: u32,
    /// TEST ONLY: allow http:// and loopback push URLs.
    pub insecure_test_mode: bool,
}

impl Default for PluginConfig {
    fn default() -> Self {
        let d = jmap_web_push_guest::config::Config::default();
        PluginConfig {
            known_types: d.known_types,
            max_lifetime_secs: d.max_lifetime_secs,
            max_subscriptions_per_owner: d.max_subscriptions_per_owner,
            max_creates_per_hour: d.max_creates_per_hour,
            max_objects_in_get: d.max_objects_in_get,
            max_objects_in_set: d.max_objects_in_set,
            push_ttl_secs: d.push_ttl_secs,
            urgency: [("EmailDelivery".to_string(), Urgency::High)]
                .into_iter()
                .collect(),
            default_urgency: Urgency::Normal,
            max_plaintext_octets: d.max_plaintext_octets,
            vapid_contact: None,
            vapid_private_key: None,
            vapid_token_lifetime_secs: d.vapid_token_lifetime_secs,
            require_keys: d.require_keys,
            min_push_interval_secs: d.min_push_interval_secs,
            retry_initial_ms: d.retry_initial_ms,
            retry_max_ms: d.retry_max_ms,
            retry_after_cap_secs: d.retry_after_cap_secs,
            give_up_after_secs: d.give_up_after_secs,
            permanent_failure_limit: d.permanent_failure_limit,
            http_timeout_ms: d.http_timeout_ms,
            insecure_test_mode: false,
        }
    }
}

impl PluginConfig {
    /// The WIT record handed to the guest.
    pub fn to_wit(&self) -> wit::Config {
        wit::Config {
            known_types: self.known_types.clone(),
            max_lifetime_secs: self.max_lifetime_secs,
            max_subscriptions_per_owner: self.max_subscriptions_per_owner,
            max_creates_per_hour: self.max_creates_per_hour,
            max_objects_in_get: self.max_objects_in_get,
            max_objects_in_set: self.max_objects_in_set,
            push_ttl_secs: self.push_ttl_secs,
            urgency_rules: self
                .urgency
                .iter()
                .map(|(t, u)| wit::UrgencyRule {
                    type_name: t.clone(),
                    urgency: (*u).into(),
                })
                .collect(),
            default_urgency: self.default_urgency.into(),
            max_plaintext_octets: self.max_plaintext_octets,
            vapid_contact: self.vapid_contact.clone(),
            vapid_private_key: self.vapid_private_key.clone(),
            vapid_token_lifetime_secs: self.vapid_token_lifetime_secs,
            require_keys: self.require_keys,
            min_push_interval_secs: self.min_push_interval_secs,
            retry_initial_ms: self.retry_initial_ms,
            retry_max_ms: self.retry_max_ms,
            retry_after_cap_secs: self.retry_after_cap_secs,
            give_up_after_secs: self.give_up_after_secs,
            permanent_failure_limit: self.permanent_failure_limit,
            http_timeout_ms: self.http_timeout_ms,
            insecure_test_mode: self.insecure_test_mode,
        }
    }
}
