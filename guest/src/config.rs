//! The typed plugin configuration (the WIT `config` record) and its defaults.

/// RFC 8030 §5.3 urgency of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
/// WIT `config` record.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Urgency per data type name.
    pub urgency_rules: Vec<(String, Urgency)>,
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
    /// Test only: allow `http://` and loopback URLs.
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
            urgency_rules: vec![("EmailDelivery".to_string(), Urgency::High)],
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
            for (name, u) in &self.urgency_rules {
                if name == t {
                    best = Some(best.map_or(*u, |b| b.max(*u)));
                }
            }
        }
        best.unwrap_or(self.default_urgency)
    }
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
}
