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
mod tests;
