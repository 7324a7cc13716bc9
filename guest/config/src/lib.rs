//! The plugin's settings, defined once: every field with its contract,
//! its default, its limits and its serde form (snake_case keys, every key
//! optional, unknown keys refused). The plugin (`guest`), the host
//! harness (`[plugin]` of its configuration file) and the host-env adapter
//! (a JSON environment variable) all use this type.
//!
//! The WIT `config` record (`wit/plugin.wit`) carries the same fields
//! across the component boundary; [`config_to_wit!`] and
//! [`config_from_wit!`] convert between the two without restating the
//! fields anywhere else.
//!
//! Adding a setting: a field in the WIT `config` record, a field with its
//! default in [`Config`], and one line in each of the two macros.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// RFC 8030 §5.3 urgency of a push, written `very-low`, `low`, `normal`,
/// `high` (as in the WIT enum and the `Urgency` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

impl Urgency {
    /// The `Urgency` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// Smallest maximum lifetime the plugin accepts (48 h, behaviour B1).
pub const MIN_MAX_LIFETIME_SECS: u64 = 48 * 3600;
/// Largest VAPID token lifetime (24 h, RFC 8292 §2).
pub const MAX_VAPID_LIFETIME_SECS: u32 = 24 * 3600;
/// Largest plaintext of one push (RFC 8291 §4: one 4096-octet record).
pub const MAX_PLAINTEXT_OCTETS: u32 = 3993;

/// The plugin configuration; field meanings and defaults are those of the
/// WIT `config` record (`wit/plugin.wit`), which is the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data types the host reports changes for (informational: a
    /// subscription's `types` may name others, B1).
    pub known_types: Vec<String>,
    /// Longest subscription lifetime, seconds (never below 48 h).
    pub max_lifetime_secs: u64,
    /// Most subscriptions per owner.
    pub max_subscriptions_per_owner: u32,
    /// Most creates per owner per sliding hour.
    pub max_creates_per_hour: u32,
    /// `maxObjectsInGet`.
    pub max_objects_in_get: u32,
    /// `maxObjectsInSet`.
    pub max_objects_in_set: u32,
    /// `TTL` header, seconds.
    pub push_ttl_secs: u32,
    /// Urgency per data type name (the WIT `urgency-rules`).
    pub urgency: BTreeMap<String, Urgency>,
    /// Urgency when no rule matches.
    pub default_urgency: Urgency,
    /// Largest plaintext of one push, octets.
    pub max_plaintext_octets: u32,
    /// VAPID `sub` contact; `None` disables VAPID.
    pub vapid_contact: Option<String>,
    /// VAPID private key (base64url scalar) supplied by the host.
    pub vapid_private_key: Option<String>,
    /// VAPID token lifetime, seconds.
    pub vapid_token_lifetime_secs: u32,
    /// Reject `keys: null` at create.
    pub require_keys: bool,
    /// Minimum seconds between two pushes to one subscription.
    pub min_push_interval_secs: u32,
    /// First retry delay, ms.
    pub retry_initial_ms: u32,
    /// Largest retry delay, ms.
    pub retry_max_ms: u32,
    /// Cap on `Retry-After`, seconds.
    pub retry_after_cap_secs: u32,
    /// Pending changes older than this are given up, seconds.
    pub give_up_after_secs: u32,
    /// Consecutive permanent refusals before a subscription is destroyed.
    pub permanent_failure_limit: u32,
    /// Timeout of each outbound request, ms.
    pub http_timeout_ms: u32,
    /// TEST ONLY: allow `http://` and loopback push URLs. MUST stay off in
    /// production.
    pub insecure_test_mode: bool,
}

/// The default `known_types`: the data types of the IANA JMAP Data Types
/// registry that can be used in a StateChange: RFC 8621 (mail), RFC 9425
/// (quotas), RFC 9661 (Sieve), RFC 9610 (contacts), RFC 9670 (sharing).
/// `Core`, `PushSubscription`, `SearchSnippet` and `MDN` have no state of
/// their own and are left out.
pub const DEFAULT_KNOWN_TYPES: &[&str] = &[
    "Mailbox",
    "Thread",
    "Email",
    "EmailDelivery",
    "EmailSubmission",
    "Identity",
    "VacationResponse",
    "Quota",
    "SieveScript",
    "AddressBook",
    "ContactCard",
    "Principal",
    "ShareNotification",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            known_types: DEFAULT_KNOWN_TYPES.iter().map(|s| s.to_string()).collect(),
            max_lifetime_secs: 7 * 24 * 3600,
            max_subscriptions_per_owner: 50,
            max_creates_per_hour: 20,
            max_objects_in_get: 500,
            max_objects_in_set: 500,
            push_ttl_secs: 86_400,
            urgency: [("EmailDelivery".to_string(), Urgency::High)].into(),
            default_urgency: Urgency::Normal,
            max_plaintext_octets: MAX_PLAINTEXT_OCTETS,
            vapid_contact: None,
            vapid_private_key: None,
            vapid_token_lifetime_secs: 12 * 3600,
            require_keys: false,
            min_push_interval_secs: 0,
            retry_initial_ms: 1_000,
            retry_max_ms: 3_600_000,
            retry_after_cap_secs: 3_600,
            give_up_after_secs: 86_400,
            permanent_failure_limit: 20,
            http_timeout_ms: 10_000,
            insecure_test_mode: false,
        }
    }
}

impl Config {
    /// The configuration with every out-of-range value brought into range
    /// (maximum lifetime at least 48 h, VAPID lifetime at most 24 h,
    /// plaintext limit at most 3993 and at least 64 octets).
    pub fn normalized(mut self) -> Self {
        self.max_lifetime_secs = self.max_lifetime_secs.max(MIN_MAX_LIFETIME_SECS);
        self.vapid_token_lifetime_secs = self
            .vapid_token_lifetime_secs
            .clamp(3_600 + 60, MAX_VAPID_LIFETIME_SECS);
        self.max_plaintext_octets = self.max_plaintext_octets.clamp(64, MAX_PLAINTEXT_OCTETS);
        self.max_objects_in_get = self.max_objects_in_get.max(1);
        self.max_objects_in_set = self.max_objects_in_set.max(1);
        self
    }

    /// The urgency of a message carrying these type names: the highest rule
    /// that matches, else the default.
    pub fn urgency_for<'a>(&self, types: impl IntoIterator<Item = &'a str>) -> Urgency {
        let mut best: Option<Urgency> = None;
        for t in types {
            if let Some(u) = self.urgency.get(t) {
                best = Some(best.map_or(*u, |b| b.max(*u)));
            }
        }
        best.unwrap_or(self.default_urgency)
    }
}

/// The WIT `config` record for a [`Config`]: `config_to_wit!(&config,
/// wit::Config, wit::UrgencyRule, urgency_to_wit)`, where the last argument
/// maps [`Urgency`] to the WIT enum. Used by the host harness and the
/// host-env adapter, whose WIT bindings are their own types.
#[macro_export]
macro_rules! config_to_wit {
    ($config:expr, $record:ty, $rule:ty, $urgency:expr) => {{
        type Record = $record;
        type Rule = $rule;
        let c: &$crate::Config = $config;
        Record {
            known_types: c.known_types.clone(),
            max_lifetime_secs: c.max_lifetime_secs,
            max_subscriptions_per_owner: c.max_subscriptions_per_owner,
            max_creates_per_hour: c.max_creates_per_hour,
            max_objects_in_get: c.max_objects_in_get,
            max_objects_in_set: c.max_objects_in_set,
            push_ttl_secs: c.push_ttl_secs,
            urgency_rules: c
                .urgency
                .iter()
                .map(|(type_name, u)| Rule {
                    type_name: type_name.clone(),
                    urgency: $urgency(*u),
                })
                .collect(),
            default_urgency: $urgency(c.default_urgency),
            max_plaintext_octets: c.max_plaintext_octets,
            vapid_contact: c.vapid_contact.clone(),
            vapid_private_key: c.vapid_private_key.clone(),
            vapid_token_lifetime_secs: c.vapid_token_lifetime_secs,
            require_keys: c.require_keys,
            min_push_interval_secs: c.min_push_interval_secs,
            retry_initial_ms: c.retry_initial_ms,
            retry_max_ms: c.retry_max_ms,
            retry_after_cap_secs: c.retry_after_cap_secs,
            give_up_after_secs: c.give_up_after_secs,
            permanent_failure_limit: c.permanent_failure_limit,
            http_timeout_ms: c.http_timeout_ms,
            insecure_test_mode: c.insecure_test_mode,
        }
    }};
}

/// The [`Config`] a WIT `config` record carries (not yet
/// [normalized](Config::normalized)): `config_from_wit!(record,
/// urgency_from_wit)`, where the last argument maps the WIT enum to
/// [`Urgency`]. Used by the plugin's bindings.
#[macro_export]
macro_rules! config_from_wit {
    ($record:expr, $urgency:expr) => {{
        let w = $record;
        $crate::Config {
            known_types: w.known_types,
            max_lifetime_secs: w.max_lifetime_secs,
            max_subscriptions_per_owner: w.max_subscriptions_per_owner,
            max_creates_per_hour: w.max_creates_per_hour,
            max_objects_in_get: w.max_objects_in_get,
            max_objects_in_set: w.max_objects_in_set,
            push_ttl_secs: w.push_ttl_secs,
            // A type named twice (a host's own record can do that; a
            // configuration file cannot) gets the higher urgency.
            urgency: w.urgency_rules.into_iter().fold(
                ::std::collections::BTreeMap::new(),
                |mut rules, r| {
                    let u: $crate::Urgency = $urgency(r.urgency);
                    rules
                        .entry(r.type_name)
                        .and_modify(|e: &mut $crate::Urgency| *e = (*e).max(u))
                        .or_insert(u);
                    rules
                },
            ),
            default_urgency: $urgency(w.default_urgency),
            max_plaintext_octets: w.max_plaintext_octets,
            vapid_contact: w.vapid_contact,
            vapid_private_key: w.vapid_private_key,
            vapid_token_lifetime_secs: w.vapid_token_lifetime_secs,
            require_keys: w.require_keys,
            min_push_interval_secs: w.min_push_interval_secs,
            retry_initial_ms: w.retry_initial_ms,
            retry_max_ms: w.retry_max_ms,
            retry_after_cap_secs: w.retry_after_cap_secs,
            give_up_after_secs: w.give_up_after_secs,
            permanent_failure_limit: w.permanent_failure_limit,
            http_timeout_ms: w.http_timeout_ms,
            insecure_test_mode: w.insecure_test_mode,
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_clamps_limits() {
        let c = Config {
            max_lifetime_secs: 60,
            vapid_token_lifetime_secs: 999_999,
            max_plaintext_octets: 10_000,
            ..Config::default()
        }
        .normalized();
        assert_eq!(c.max_lifetime_secs, MIN_MAX_LIFETIME_SECS);
        assert_eq!(c.vapid_token_lifetime_secs, MAX_VAPID_LIFETIME_SECS);
        assert_eq!(c.max_plaintext_octets, MAX_PLAINTEXT_OCTETS);
    }

    #[test]
    fn urgency_highest_rule_wins() {
        let c = Config::default();
        assert_eq!(c.urgency_for(["Email", "Mailbox"]), Urgency::Normal);
        assert_eq!(c.urgency_for(["Email", "EmailDelivery"]), Urgency::High);
    }
    #[test]
    fn serde_form_has_every_key_optional_and_refuses_unknown_keys() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        let c: Config = serde_json::from_str(
            r#"{"max_subscriptions_per_owner": 3, "urgency": {"Email": "very-low"}, "default_urgency": "low"}"#,
        )
        .unwrap();
        assert_eq!(c.max_subscriptions_per_owner, 3);
        assert_eq!(c.urgency.get("Email"), Some(&Urgency::VeryLow));
        assert_eq!(c.default_urgency, Urgency::Low);
        assert_eq!(c.push_ttl_secs, Config::default().push_ttl_secs);
        let err = serde_json::from_str::<Config>(r#"{"max_subscriptons_per_owner": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_subscriptons_per_owner"), "{err}");
        assert!(serde_json::from_str::<Config>(r#"{"default_urgency": "urgent"}"#).is_err());
        // The serialized form reads back to the same value.
        let d = Config::default();
        let back: Config = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    /// A record type shaped like the WIT bindings' `config`, to check that
    /// the two macros carry every field both ways.
    mod wit_shaped {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Urgency {
            VeryLow,
            Low,
            Normal,
            High,
        }
        pub struct UrgencyRule {
            pub type_name: String,
            pub urgency: Urgency,
        }
        pub struct Config {
            pub known_types: Vec<String>,
            pub max_lifetime_secs: u64,
            pub max_subscriptions_per_owner: u32,
            pub max_creates_per_hour: u32,
            pub max_objects_in_get: u32,
            pub max_objects_in_set: u32,
            pub push_ttl_secs: u32,
            pub urgency_rules: Vec<UrgencyRule>,
            pub default_urgency: Urgency,
            pub max_plaintext_octets: u32,
            pub vapid_contact: Option<String>,
            pub vapid_private_key: Option<String>,
            pub vapid_token_lifetime_secs: u32,
            pub require_keys: bool,
            pub min_push_interval_secs: u32,
            pub retry_initial_ms: u32,
            pub retry_max_ms: u32,
            pub retry_after_cap_secs: u32,
            pub give_up_after_secs: u32,
            pub permanent_failure_limit: u32,
            pub http_timeout_ms: u32,
            pub insecure_test_mode: bool,
        }
    }

    fn to_shaped(u: Urgency) -> wit_shaped::Urgency {
        match u {
            Urgency::VeryLow => wit_shaped::Urgency::VeryLow,
            Urgency::Low => wit_shaped::Urgency::Low,
            Urgency::Normal => wit_shaped::Urgency::Normal,
            Urgency::High => wit_shaped::Urgency::High,
        }
    }

    fn from_shaped(u: wit_shaped::Urgency) -> Urgency {
        match u {
            wit_shaped::Urgency::VeryLow => Urgency::VeryLow,
            wit_shaped::Urgency::Low => Urgency::Low,
            wit_shaped::Urgency::Normal => Urgency::Normal,
            wit_shaped::Urgency::High => Urgency::High,
        }
    }

    #[test]
    fn wit_macros_carry_every_field_both_ways() {
        let c = Config {
            known_types: vec!["Email".into(), "X".into()],
            max_lifetime_secs: 1,
            max_subscriptions_per_owner: 2,
            max_creates_per_hour: 3,
            max_objects_in_get: 4,
            max_objects_in_set: 5,
            push_ttl_secs: 6,
            urgency: [
                ("A".to_string(), Urgency::Low),
                ("B".to_string(), Urgency::VeryLow),
            ]
            .into(),
            default_urgency: Urgency::High,
            max_plaintext_octets: 7,
            vapid_contact: Some("mailto:a@example.com".into()),
            vapid_private_key: Some("k".into()),
            vapid_token_lifetime_secs: 8,
            require_keys: true,
            min_push_interval_secs: 9,
            retry_initial_ms: 10,
            retry_max_ms: 11,
            retry_after_cap_secs: 12,
            give_up_after_secs: 13,
            permanent_failure_limit: 14,
            http_timeout_ms: 15,
            insecure_test_mode: true,
        };
        let record =
            crate::config_to_wit!(&c, wit_shaped::Config, wit_shaped::UrgencyRule, to_shaped);
        assert_eq!(record.default_urgency, wit_shaped::Urgency::High);
        let back = crate::config_from_wit!(record, from_shaped);
        assert_eq!(back, c);
    }

    #[test]
    fn a_type_named_twice_in_the_wit_record_gets_the_higher_urgency() {
        let mut record = crate::config_to_wit!(
            &Config::default(),
            wit_shaped::Config,
            wit_shaped::UrgencyRule,
            to_shaped
        );
        record.urgency_rules = [
            ("Email", wit_shaped::Urgency::High),
            ("Email", wit_shaped::Urgency::Low),
            ("Mailbox", wit_shaped::Urgency::VeryLow),
            ("Mailbox", wit_shaped::Urgency::Normal),
        ]
        .map(|(t, urgency)| wit_shaped::UrgencyRule {
            type_name: t.into(),
            urgency,
        })
        .into();
        let c = crate::config_from_wit!(record, from_shaped);
        assert_eq!(c.urgency.get("Email"), Some(&Urgency::High));
        assert_eq!(c.urgency.get("Mailbox"), Some(&Urgency::Normal));
        assert_eq!(c.urgency.len(), 2);
    }
}
