//! The PushSubscription model (RFC 8620 §7.2) and every validation rule of
//! behaviour B1.

use std::fmt;

use crate::addr::{check_push_url, UrlError};
use crate::config::Config;
use crate::crypto::keys::{parse_receiver_keys, KeyError, ReceiverKeys};
use serde::{Deserialize, Deserializer, Serialize};

use crate::json::{self, Map, RecordError, Value};
use crate::utcdate;

/// The principal a subscription belongs to: user name plus, when the host
/// gives one, the credential id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// User name.
    pub username: String,
    /// Credential id, if the host ties subscriptions to credentials.
    pub credential_id: Option<String>,
}

/// The stored encryption keys of a subscription, as the client sent them
/// (already validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeys {
    /// base64url of the 65-octet uncompressed P-256 point, as received.
    pub p256dh: String,
    /// base64url of the 16-octet authentication secret, as received.
    pub auth: String,
}

impl StoredKeys {
    /// Parses the keys for encryption.
    pub fn parse(&self) -> Result<ReceiverKeys, KeyError> {
        parse_receiver_keys(&self.p256dh, &self.auth)
    }
}

/// Verification progress of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerificationState {
    /// Whether the client has echoed the code.
    pub verified: bool,
    /// Whether the PushVerification reached the push service.
    pub delivered: bool,
    /// Failed sending attempts so far.
    pub attempts: u32,
    /// When to re-send, Unix ms (when not delivered).
    pub next_attempt_ms: Option<u64>,
}

/// A stored PushSubscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Server-set id.
    pub id: String,
    /// Whose it is.
    pub owner: Owner,
    /// Client-set device id, unique per owner.
    pub device_client_id: String,
    /// The push service URL.
    pub url: String,
    /// Encryption keys, or `None` for unencrypted pushes.
    pub keys: Option<StoredKeys>,
    /// The verification code the plugin generated.
    pub verification_code: String,
    /// Verification progress.
    pub verification: VerificationState,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Type filter; `None` = all types, including future ones.
    pub types: Option<Vec<String>>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Public key (base64url) of the VAPID key in force at creation, if any.
    pub vapid_key: Option<String>,
    /// Consecutive permanent refusals (400/401/403/other 4xx/3xx).
    /// Absent or `null` in records of older versions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub refusals: Refusals,
    /// When the last push was sent, Unix ms (for the minimum interval).
    /// Absent in records of older versions.
    #[serde(default)]
    pub last_push_ms: u64,
}

/// A run of permanent refusals by the push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Refusals {
    /// How many in a row.
    pub count: u32,
    /// When the first of the run happened, Unix ms.
    pub since_ms: u64,
}

impl Subscription {
    /// Whether the subscription wants pushes about `type_name`.
    pub fn wants(&self, type_name: &str) -> bool {
        match &self.types {
            None => true,
            Some(t) => t.iter().any(|x| x == type_name),
        }
    }

    /// Whether it has expired at `now_secs`.
    pub fn is_expired(&self, now_secs: u64) -> bool {
        self.expires <= now_secs
    }

    /// The JMAP object with the given properties (`id` always included).
    pub fn to_json(&self, properties: &[Property]) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        for p in properties {
            let v = match p {
                Property::Id => continue,
                Property::DeviceClientId => Value::String(self.device_client_id.clone()),
                Property::Url => Value::String(self.url.clone()),
                Property::Keys => match &self.keys {
                    Some(k) => crate::json::object([
                        ("p256dh", k.p256dh.as_str().into()),
                        ("auth", k.auth.as_str().into()),
                    ]),
                    None => Value::Null,
                },
                Property::VerificationCode => {
                    if self.verification.verified {
                        Value::String(self.verification_code.clone())
                    } else {
                        Value::Null
                    }
                }
                Property::Expires => Value::String(utcdate::format(self.expires)),
                Property::Types => types_json(&self.types),
            };
            m.insert(p.name().into(), v);
        }
        Value::Object(m)
    }
    /// The stored record's JSON text. Members are named and ordered as the
    /// fields are declared (the `serde` form every version wrote).
    pub fn to_record(&self) -> String {
        // A plain struct of strings, integers and options: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored record written by [`Subscription::to_record`] (or by
    /// an earlier version). `refusals` and `last_push_ms` default when
    /// absent; unknown members are ignored.
    pub fn from_record(bytes: &[u8]) -> Result<Subscription, RecordError> {
        json::from_record(bytes)
    }
}

/// `null` as the type's default (records of older versions).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `types` as JSON.
pub fn types_json(types: &Option<Vec<String>>) -> Value {
    match types {
        None => Value::Null,
        Some(t) => Value::Array(t.iter().cloned().map(Value::String).collect()),
    }
}

/// The properties of a PushSubscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// `id`
    Id,
    /// `deviceClientId`
    DeviceClientId,
    /// `url`
    Url,
    /// `keys`
    Keys,
    /// `verificationCode`
    VerificationCode,
    /// `expires`
    Expires,
    /// `types`
    Types,
}

impl Property {
    /// Every property, in the order /get returns them.
    pub const ALL: [Property; 7] = [
        Property::Id,
        Property::DeviceClientId,
        Property::Url,
        Property::Keys,
        Property::VerificationCode,
        Property::Expires,
        Property::Types,
    ];

    /// What /get returns by default: everything but `url` and `keys`.
    pub const DEFAULT_GET: [Property; 5] = [
        Property::Id,
        Property::DeviceClientId,
        Property::VerificationCode,
        Property::Expires,
        Property::Types,
    ];

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Property::Id => "id",
            Property::DeviceClientId => "deviceClientId",
            Property::Url => "url",
            Property::Keys => "keys",
            Property::VerificationCode => "verificationCode",
            Property::Expires => "expires",
            Property::Types => "types",
        }
    }

    /// The property with this JSON name.
    pub fn from_name(name: &str) -> Option<Property> {
        Property::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Why a property value is invalid; becomes a SetError `invalidProperties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProperty {
    /// The property (or patch path) at fault.
    pub property: String,
    /// What is wrong, for the SetError description.
    pub reason: String,
}

impl InvalidProperty {
    /// An error for `property`.
    pub fn new(property: &str, reason: impl Into<String>) -> Self {
        InvalidProperty {
            property: property.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.reason)
    }
}

impl std::error::Error for InvalidProperty {}

/// Largest `deviceClientId`, octets.
pub const MAX_DEVICE_CLIENT_ID_OCTETS: usize = 255;

/// A validated create request (before the server fills in id and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// `deviceClientId`
    pub device_client_id: String,
    /// `url`
    pub url: String,
    /// `keys`
    pub keys: Option<StoredKeys>,
    /// Effective expiry, Unix seconds (defaulted or clamped).
    pub expires: u64,
    /// Whether `expires` differs from what the client sent.
    pub expires_changed: bool,
    /// `types`
    pub types: Option<Vec<String>>,
    /// Whether `types` was omitted (then the server defaulted it to null).
    pub types_defaulted: bool,
    /// Whether `keys` was omitted.
    pub keys_defaulted: bool,
}

/// Validates `deviceClientId`.
pub fn check_device_client_id(v: &Value) -> Result<String, InvalidProperty> {
    let name = "deviceClientId";
    match v {
        Value::String(s) if s.is_empty() => Err(InvalidProperty::new(name, "must not be empty")),
        Value::String(s) if s.len() > MAX_DEVICE_CLIENT_ID_OCTETS => Err(InvalidProperty::new(
            name,
            format!("is {} octets; at most 255 are allowed", s.len()),
        )),
        Value::String(s) => Ok(s.clone()),
        _ => Err(InvalidProperty::new(name, "must be a string")),
    }
}

/// Validates `url` (B1).
pub fn check_url(v: &Value, config: &Config) -> Result<String, InvalidProperty> {
    match v {
        Value::String(s) => check_push_url(s, config.insecure_test_mode)
            .map(|_| s.clone())
            .map_err(|e: UrlError| InvalidProperty::new("url", e.to_string())),
        _ => Err(InvalidProperty::new("url", "must be a string")),
    }
}

/// Validates `keys` (B1): `null` or `{p256dh, auth}` with nothing else.
pub fn check_keys(v: &Value, config: &Config) -> Result<Option<StoredKeys>, InvalidProperty> {
    let name = "keys";
    match v {
        Value::Null if config.require_keys => Err(InvalidProperty::new(
            name,
            "this server requires encryption keys (p256dh and auth)",
        )),
        Value::Null => Ok(None),
        Value::Object(m) => {
            if let Some(extra) = m.keys().find(|k| *k != "p256dh" && *k != "auth") {
                return Err(InvalidProperty::new(
                    name,
                    format!("unknown member {extra:?}; only p256dh and auth are allowed"),
                ));
            }
            let (Some(Value::String(p)), Some(Value::String(a))) = (m.get("p256dh"), m.get("auth"))
            else {
                return Err(InvalidProperty::new(
                    name,
                    "must have string members p256dh and auth",
                ));
            };
            parse_receiver_keys(p, a).map_err(|e| InvalidProperty::new(name, e.to_string()))?;
            Ok(Some(StoredKeys {
                p256dh: p.clone(),
                auth: a.clone(),
            }))
        }
        _ => Err(InvalidProperty::new(name, "must be an object or null")),
    }
}

/// Longest data type name, octets.
pub const MAX_TYPE_NAME_OCTETS: usize = 255;

/// Most names in `types` (the IANA registry has about twenty data types; a
/// bound keeps records and the duplicate check small).
pub const MAX_TYPES: usize = 128;

/// Whether `name` has the syntax of a JMAP data type name: an ASCII letter
/// followed by ASCII letters, digits or `_`, at most
/// [`MAX_TYPE_NAME_OCTETS`] octets (every type in the IANA JMAP Data Types
/// registry has this form: `Email`, `EmailDelivery`, `ContactCard`, ...).
pub fn is_type_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_TYPE_NAME_OCTETS
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Validates `types` (B1): null (all types), or an array of distinct data
/// type names. Names the host has not configured are accepted and stored
/// (they match no change until the host reports that type); `[]` is
/// accepted and means no pushes. Non-strings, duplicates and names without
/// type-name syntax ([`is_type_name`]) are refused.
pub fn check_types(v: &Value) -> Result<Option<Vec<String>>, InvalidProperty> {
    let name = "types";
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            if items.len() > MAX_TYPES {
                return Err(InvalidProperty::new(
                    name,
                    format!("has {} names; at most {MAX_TYPES} are allowed", items.len()),
                ));
            }
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(t) = item else {
                    return Err(InvalidProperty::new(name, "must contain only strings"));
                };
                if !is_type_name(t) {
                    return Err(InvalidProperty::new(
                        name,
                        format!(
                            "{:?} is not a data type name (an ASCII letter, then letters, digits or _; at most 255)",
                            truncate(t, 64)
                        ),
                    ));
                }
                if out.contains(t) {
                    return Err(InvalidProperty::new(name, format!("duplicate type {t:?}")));
                }
                out.push(t.clone());
            }
            Ok(Some(out))
        }
        _ => Err(InvalidProperty::new(
            name,
            "must be an array of type names or null",
        )),
    }
}

/// Validates `expires` (B1) and returns `(effective expiry, changed)`:
/// null → now + max lifetime (changed); later than that → clamped (changed);
/// in the past → error.
pub fn check_expires(
    v: &Value,
    config: &Config,
    now_secs: u64,
) -> Result<(u64, bool), InvalidProperty> {
    let max = now_secs.saturating_add(config.max_lifetime_secs);
    match v {
        Value::Null => Ok((max, true)),
        Value::String(s) => {
            let t =
                utcdate::parse(s).map_err(|e| InvalidProperty::new("expires", e.to_string()))?;
            if t <= now_secs {
                Err(InvalidProperty::new(
                    "expires",
                    format!("{s} is in the past"),
                ))
            } else if t > max {
                Ok((max, true))
            } else {
                // Fractional seconds were dropped: report the stored value.
                Ok((t, utcdate::format(t) != *s))
            }
        }
        _ => Err(InvalidProperty::new(
            "expires",
            "must be a UTCDate string or null",
        )),
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Validates a create request object (B1, B3). Every invalid property is
/// reported (RFC 8620 §5.3: `properties` lists all of them), in the order
/// the object names them, then the missing required ones.
pub fn check_create(
    obj: &Map<String, Value>,
    config: &Config,
    now_secs: u64,
) -> Result<NewSubscription, Vec<InvalidProperty>> {
    let mut bad: Vec<InvalidProperty> = Vec::new();
    for (k, v) in obj {
        match Property::from_name(k) {
            None => bad.push(InvalidProperty::new(
                k,
                "is not a PushSubscription property",
            )),
            Some(Property::Id) => bad.push(InvalidProperty::new("id", "is set by the server")),
            Some(Property::VerificationCode) if !v.is_null() => bad.push(InvalidProperty::new(
                "verificationCode",
                "must be null or absent on create; the server sends it to the push service",
            )),
            _ => {}
        }
    }
    fn check<T>(r: Result<T, InvalidProperty>, bad: &mut Vec<InvalidProperty>) -> Option<T> {
        r.map_err(|e| bad.push(e)).ok()
    }
    let device_client_id = check(
        obj.get("deviceClientId")
            .ok_or_else(|| InvalidProperty::new("deviceClientId", "is required"))
            .and_then(check_device_client_id),
        &mut bad,
    );
    let url = check(
        obj.get("url")
            .ok_or_else(|| InvalidProperty::new("url", "is required"))
            .and_then(|v| check_url(v, config)),
        &mut bad,
    );
    let keys = check(
        check_keys(obj.get("keys").unwrap_or(&Value::Null), config),
        &mut bad,
    );
    let expires = check(
        check_expires(obj.get("expires").unwrap_or(&Value::Null), config, now_secs),
        &mut bad,
    );
    let types = check(
        check_types(obj.get("types").unwrap_or(&Value::Null)),
        &mut bad,
    );
    match (device_client_id, url, keys, expires, types) {
        (
            Some(device_client_id),
            Some(url),
            Some(keys),
            Some((expires, expires_changed)),
            Some(types),
        ) if bad.is_empty() => Ok(NewSubscription {
            device_client_id,
            url,
            keys,
            expires,
            expires_changed: expires_changed || !obj.contains_key("expires"),
            types,
            types_defaulted: !obj.contains_key("types"),
            keys_defaulted: !obj.contains_key("keys"),
        }),
        _ => {
            // Required properties are reported after those the object names.
            bad.sort_by_key(|e| !obj.contains_key(&e.property));
            Err(bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const NOW: u64 = 1_800_000_000;

    /// A fixture written with `serde_json::json!`, as our JSON object.
    fn obj(v: serde_json::Value) -> Map<String, Value> {
        crate::json::parse(&v.to_string())
            .unwrap()
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn valid_create_with_defaults() {
        let c = Config::default();
        let n = check_create(
            &obj(json!({"deviceClientId": "d1", "url": "https://push.example.net/x"})),
            &c,
            NOW,
        )
        .unwrap();
        assert_eq!(n.expires, NOW + c.max_lifetime_secs);
        assert!(n.expires_changed && n.types_defaulted && n.keys_defaulted);
        assert_eq!(n.types, None);
    }

    #[test]
    fn create_errors_name_the_property() {
        let c = Config::default();
        let cases: &[(serde_json::Value, &str)] = &[
            (json!({"url": "https://a.example/"}), "deviceClientId"),
            (json!({"deviceClientId": "d"}), "url"),
            (
                json!({"deviceClientId": "", "url": "https://a.example/"}),
                "deviceClientId",
            ),
            (
                json!({"deviceClientId": 5, "url": "https://a.example/"}),
                "deviceClientId",
            ),
            (
                json!({"deviceClientId": "d", "url": "http://a.example/"}),
                "url",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://10.0.0.1/"}),
                "url",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "id": "x"}),
                "id",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "verificationCode": "x"}),
                "verificationCode",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "expires": "2000-01-01T00:00:00Z"}),
                "expires",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "expires": "tomorrow"}),
                "expires",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["1Email"]}),
                "types",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["Email Delivery"]}),
                "types",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "types": [1]}),
                "types",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["Email", "Email"]}),
                "types",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "types": "Email"}),
                "types",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": P256DH}}),
                "keys",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": P256DH, "auth": AUTH, "x": 1}}),
                "keys",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": "AAAA", "auth": AUTH}}),
                "keys",
            ),
            (
                json!({"deviceClientId": "d", "url": "https://a.example/", "bogus": 1}),
                "bogus",
            ),
        ];
        for (v, prop) in cases {
            let e = check_create(&obj(v.clone()), &c, NOW).unwrap_err();
            assert_eq!(e.len(), 1, "{v}: {e:?}");
            assert_eq!(e[0].property, *prop, "{v}");
        }
    }

    #[test]
    fn every_invalid_property_of_a_create_is_named() {
        let c = Config::default();
        let e = check_create(
            &obj(
                json!({"url": "http://a.example/", "keys": {"p256dh": "AAAA", "auth": AUTH},
                        "types": "Email", "bogus": 1, "expires": "yesterday"}),
            ),
            &c,
            NOW,
        )
        .unwrap_err();
        let mut named: Vec<&str> = e.iter().map(|p| p.property.as_str()).collect();
        // The missing required property comes last.
        assert_eq!(named.pop(), Some("deviceClientId"));
        named.sort_unstable();
        assert_eq!(named, ["bogus", "expires", "keys", "types", "url"]);
        let set_error = crate::jmap::errors::SetError::from(e);
        assert_eq!(set_error.properties.len(), 6);
        for p in ["url", "keys", "types", "bogus", "expires", "deviceClientId"] {
            assert!(
                set_error.description.contains(p),
                "{}",
                set_error.description
            );
        }
    }

    #[test]
    fn types_accept_unconfigured_names_and_the_empty_list() {
        for (types, want) in [
            (json!([]), Some(vec![])),
            (
                json!(["Email", "CalendarEvent", "Mailbox"]),
                Some(vec![
                    "Email".into(),
                    "CalendarEvent".into(),
                    "Mailbox".into(),
                ]),
            ),
            (json!(["X_1"]), Some(vec!["X_1".to_string()])),
            (json!(null), None),
        ] {
            let got = check_types(&crate::json::parse(&types.to_string()).unwrap());
            assert_eq!(got, Ok(want), "{types}");
        }
        let long = "A".repeat(256);
        let too_many: Vec<String> = (0..=MAX_TYPES).map(|i| format!("T{i}")).collect();
        for bad in [
            json!(too_many),
            json!(["Email", "Email"]),
            json!([""]),
            json!(["_Email"]),
            json!(["E-mail"]),
            json!(["Émail"]),
            json!([long]),
            json!([null]),
            json!({"Email": true}),
        ] {
            let e = check_types(&crate::json::parse(&bad.to_string()).unwrap()).unwrap_err();
            assert_eq!(e.property, "types", "{bad}");
        }
        assert!(is_type_name(&"A".repeat(255)));
    }

    #[test]
    fn expires_is_clamped_and_reported() {
        let c = Config::default();
        let far = utcdate::format(NOW + 365 * 86400);
        let n = check_create(
            &obj(json!({"deviceClientId": "d", "url": "https://a.example/", "expires": far, "keys": {"p256dh": P256DH, "auth": AUTH}, "types": ["Email"]})),
            &c,
            NOW,
        )
        .unwrap();
        assert_eq!(n.expires, NOW + c.max_lifetime_secs);
        assert!(n.expires_changed);
        let near = utcdate::format(NOW + 3600);
        let n = check_create(
            &obj(json!({"deviceClientId": "d", "url": "https://a.example/", "expires": near})),
            &c,
            NOW,
        )
        .unwrap();
        assert_eq!(n.expires, NOW + 3600);
        assert!(!n.expires_changed);
    }

    /// Records as the `serde` derive of earlier versions wrote them (printed
    /// by that code, 394720c), with the subscriptions they hold.
    const SERDE_RECORDS: [&str; 2] = [
        r#"{"id":"S1","owner":{"username":"u@example.com","credential_id":null},"device_client_id":"d\"1","url":"https://push.example.net/x","keys":{"p256dh":"P","auth":"A"},"verification_code":"c","verification":{"verified":true,"delivered":false,"attempts":2,"next_attempt_ms":123},"expires":1800000000,"types":["Email","Mailbox"],"created":1700000000,"vapid_key":null,"refusals":{"count":1,"since_ms":5},"last_push_ms":9}"#,
        r#"{"id":"S1","owner":{"username":"v","credential_id":"cred"},"device_client_id":"d\"1","url":"https://push.example.net/x","keys":null,"verification_code":"c","verification":{"verified":false,"delivered":false,"attempts":0,"next_attempt_ms":null},"expires":1800000000,"types":null,"created":1700000000,"vapid_key":"K","refusals":{"count":1,"since_ms":5},"last_push_ms":9}"#,
    ];

    fn golden_subscriptions() -> [Subscription; 2] {
        let first = Subscription {
            id: "S1".into(),
            owner: Owner {
                username: "u@example.com".into(),
                credential_id: None,
            },
            device_client_id: "d\"1".into(),
            url: "https://push.example.net/x".into(),
            keys: Some(StoredKeys {
                p256dh: "P".into(),
                auth: "A".into(),
            }),
            verification_code: "c".into(),
            verification: VerificationState {
                verified: true,
                delivered: false,
                attempts: 2,
                next_attempt_ms: Some(123),
            },
            expires: 1_800_000_000,
            types: Some(vec!["Email".into(), "Mailbox".into()]),
            created: 1_700_000_000,
            vapid_key: None,
            refusals: Refusals {
                count: 1,
                since_ms: 5,
            },
            last_push_ms: 9,
        };
        let second = Subscription {
            owner: Owner {
                username: "v".into(),
                credential_id: Some("cred".into()),
            },
            keys: None,
            types: None,
            vapid_key: Some("K".into()),
            verification: VerificationState::default(),
            ..first.clone()
        };
        [first, second]
    }

    #[test]
    fn records_are_byte_identical_to_the_serde_form() {
        for (sub, text) in golden_subscriptions().iter().zip(SERDE_RECORDS) {
            assert_eq!(sub.to_record(), text);
            assert_eq!(Subscription::from_record(text.as_bytes()).unwrap(), *sub);
        }
    }

    #[test]
    fn records_of_older_versions_and_corrupt_records() {
        // Before `refusals` and `last_push_ms` existed: they default.
        let old = SERDE_RECORDS[0].replace(
            r#","refusals":{"count":1,"since_ms":5},"last_push_ms":9"#,
            "",
        );
        let sub = Subscription::from_record(old.as_bytes()).unwrap();
        assert_eq!((sub.refusals, sub.last_push_ms), (Refusals::default(), 0));
        // Unknown members (a newer version's) are ignored.
        let newer = SERDE_RECORDS[1].replacen('{', r#"{"future":[1,{"x":null}],"#, 1);
        assert_eq!(
            Subscription::from_record(newer.as_bytes()).unwrap(),
            golden_subscriptions()[1]
        );
        for (bad, want) in [
            (
                SERDE_RECORDS[0].replace(r#""expires":1800000000,"#, ""),
                "missing field `expires`",
            ),
            (
                SERDE_RECORDS[0].replace(r#""expires":1800000000"#, r#""expires":"soon""#),
                "invalid type: string \"soon\", expected u64",
            ),
            (
                SERDE_RECORDS[0].replace(r#""attempts":2"#, r#""attempts":4294967296"#),
                "invalid value: integer `4294967296`, expected u32",
            ),
            (
                SERDE_RECORDS[0]
                    .replace(r#""types":["Email","Mailbox"]"#, r#""types":["Email",1]"#),
                "invalid type: integer `1`, expected a string",
            ),
            (
                SERDE_RECORDS[0].replace(r#""keys":{"p256dh":"P","auth":"A"}"#, r#""keys":"PA""#),
                "invalid type: string \"PA\", expected struct StoredKeys",
            ),
            (
                "[]".to_string(),
                "invalid length 0, expected struct Subscription",
            ),
        ] {
            let e = Subscription::from_record(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(want), "{bad}: {e}");
            assert!(!e.is_syntax(), "{bad}: {e}");
        }
        assert!(
            Subscription::from_record(&SERDE_RECORDS[0].as_bytes()[..40])
                .unwrap_err()
                .is_syntax()
        );
    }

    #[test]
    fn require_keys_rejects_null() {
        let c = Config {
            require_keys: true,
            ..Config::default()
        };
        assert_eq!(check_keys(&Value::Null, &c).unwrap_err().property, "keys");
    }
}
