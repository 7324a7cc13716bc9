//! The PushSubscription conformance suite.
//!
//! Every scenario of Apache James's method contract suite (named after it,
//! in snake_case), with the RFC 8620-correct outcome where James deviates
//! (`docs/behaviour.md`, "Where other servers differ"), plus the behaviour
//! of `docs/behaviour.md` B1–B5 and B9 that James does not test. Each test
//! drives the real component
//! through the host harness with JSON exactly as a client sends it, against
//! the loopback `Gateway`, and checks responses, gateway traffic and the
//! store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode};
use jmap_web_push_guest::repo::{due_key, DueKind};
use jmap_web_push_guest::utcdate;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::{Condition, KvStore};
use jmap_web_push_host::{Caller, MethodError, PluginConfig, PushPlugin};
use jmap_web_push_tests::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A gateway, a memory store and a plugin on it.
struct Fixture {
    gateway: Gateway,
    store: Arc<MemoryStore>,
    plugin: PushPlugin,
}

fn fixture() -> Fixture {
    fixture_with(test_config())
}

fn fixture_with(config: PluginConfig) -> Fixture {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), config);
    Fixture {
        gateway,
        store,
        plugin,
    }
}

fn alice() -> Caller {
    caller("alice", Some("cred-a"))
}

fn bob() -> Caller {
    caller("bob", Some("cred-b"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A UTCDate `secs` from now.
fn in_secs(secs: u64) -> String {
    utcdate::format(now_secs() + secs)
}

const DAY: u64 = 86_400;
/// The default maximum lifetime (7 days).
const MAX_LIFETIME: u64 = 7 * DAY;

/// A random id with JMAP Id syntax that no subscription has.
fn random_id() -> String {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).expect("random");
    b64url_encode(&b)
}

/// `PushSubscription/set`, which must not fail at method level.
fn set(plugin: &PushPlugin, who: &Caller, args: Value) -> Value {
    call(plugin, who, "PushSubscription/set", args.clone())
        .unwrap_or_else(|e| panic!("set {args} failed: {e:?}"))
}

/// `PushSubscription/get`, which must not fail at method level.
fn get(plugin: &PushPlugin, who: &Caller, args: Value) -> Value {
    call(plugin, who, "PushSubscription/get", args.clone())
        .unwrap_or_else(|e| panic!("get {args} failed: {e:?}"))
}

/// The method error of a call that must fail.
fn method_error(r: Result<Value, MethodError>) -> MethodError {
    match r {
        Ok(v) => panic!("expected a method error, got {v}"),
        Err(e) => e,
    }
}

/// A create object at gateway `path` with `extra` members merged in.
fn create_obj(f: &Fixture, path: &str, extra: Value) -> Value {
    let mut obj = json!({
        "deviceClientId": format!("device-{path}"),
        "url": f.gateway.url(path),
    });
    if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    obj
}

/// Creates one subscription; returns the whole /set response.
fn create(f: &Fixture, who: &Caller, path: &str, extra: Value) -> Value {
    set(
        &f.plugin,
        who,
        json!({"create": {"c": create_obj(f, path, extra)}}),
    )
}

/// Creates one subscription that must succeed; returns its id.
fn create_id(f: &Fixture, who: &Caller, path: &str, extra: Value) -> String {
    let r = create(f, who, path, extra);
    r["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {r}"))
        .to_string()
}

/// Creates an encrypted subscription and verifies it; returns its id.
fn verified(f: &Fixture, client: &PushClient, who: &Caller, path: &str, types: Value) -> String {
    verified_subscription(&f.plugin, &f.gateway, client, who, path, types)
}

/// The verification code of the last push on `path` (unencrypted).
fn last_code_plain(f: &Fixture, path: &str) -> String {
    let got = f.gateway.received_on(path);
    let last = got.last().expect("a push was received");
    let v: Value = serde_json::from_slice(&last.body).expect("plain JSON verification");
    assert_eq!(v["@type"], "PushVerification");
    v["verificationCode"]
        .as_str()
        .expect("code is a string")
        .to_string()
}

/// The stored record `sub/<id>`.
fn record(store: &MemoryStore, id: &str) -> Option<Value> {
    store
        .get(&format!("sub/{id}"))
        .expect("store readable")
        .map(|e| serde_json::from_slice(&e.value).expect("record is JSON"))
}

/// Overwrites one field of the stored record `sub/<id>`.
fn patch_record(store: &MemoryStore, id: &str, field: &str, value: Value) {
    let key = format!("sub/{id}");
    let e = store.get(&key).unwrap().expect("record exists");
    let mut v: Value = serde_json::from_slice(&e.value).unwrap();
    v[field] = value;
    store
        .put(
            &key,
            &serde_json::to_vec(&v).unwrap(),
            Condition::Version(e.version),
        )
        .expect("record rewritten");
}

/// Every (key, value) in the store.
fn dump(store: &MemoryStore) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_keys("", after.as_deref(), 1000).unwrap();
        for k in page.keys {
            if let Some(e) = store.get(&k).unwrap() {
                out.push((k, e.value));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Whether any key or value of the store contains `needle`.
fn store_mentions(store: &MemoryStore, needle: &str) -> Vec<String> {
    dump(store)
        .into_iter()
        .filter(|(k, v)| k.contains(needle) || String::from_utf8_lossy(v).contains(needle))
        .map(|(k, _)| k)
        .collect()
}

/// The SetError `type` and `properties` of `r[map][key]`.
fn set_error(r: &Value, map: &str, key: &str) -> (String, Vec<String>) {
    let e = &r[map][key];
    let kind = e["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no {map}[{key}] in {r}"))
        .to_string();
    let props = e["properties"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        e["description"].as_str().is_some_and(|d| !d.is_empty()),
        "SetError without description: {e}"
    );
    (kind, props)
}

fn assert_invalid(r: &Value, map: &str, key: &str, property: &str) {
    let (kind, props) = set_error(r, map, key);
    assert_eq!(kind, "invalidProperties", "{r}");
    assert_eq!(props, vec![property.to_string()], "{r}");
}

fn assert_not_found(r: &Value, map: &str, key: &str) {
    let (kind, _) = set_error(r, map, key);
    assert_eq!(kind, "notFound", "{r}");
}

/// Asserts a create failed with `invalidProperties [property]`, sent
/// nothing and stored nothing.
fn assert_rejected_create(f: &Fixture, obj: Value, property: &str) {
    let before = f.gateway.received().len();
    let keys_before = dump(&f.store).len();
    let r = set(&f.plugin, &alice(), json!({"create": {"c": obj}}));
    assert!(r["created"].is_null(), "{r}");
    assert_invalid(&r, "notCreated", "c", property);
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    let subs = dump(&f.store)
        .into_iter()
        .filter(|(k, _)| k.starts_with("sub/"))
        .count();
    assert_eq!(subs, 0, "nothing stored");
    assert!(
        dump(&f.store).len() <= keys_before + 1,
        "at most the rate record"
    );
}

/// The list of a /get for `ids`.
fn get_list(f: &Fixture, who: &Caller, ids: Value) -> Vec<Value> {
    get(&f.plugin, who, json!({ "ids": ids }))["list"]
        .as_array()
        .expect("list")
        .clone()
}

/// One object by id (all default properties), or None.
fn get_one(f: &Fixture, who: &Caller, id: &str) -> Option<Value> {
    let r = get(&f.plugin, who, json!({ "ids": [id] }));
    r["list"].as_array().and_then(|l| l.first().cloned())
}

fn is_utcdate(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The plaintext JSON of an unencrypted push.
fn plain(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("plain JSON push")
}

// ---------------------------------------------------------------------------
// James: PushSubscriptionSetMethodContract / GetMethodContract
// ---------------------------------------------------------------------------

#[test]
fn set_method_should_not_require_account_id() {
    let f = fixture();
    let r = create(&f, &alice(), "p1", json!({}));
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
    for absent in ["accountId", "oldState", "newState"] {
        assert!(r.get(absent).is_none(), "{absent} in {r}");
    }
    let r = get(&f.plugin, &alice(), json!({"accountId": "ignored"}));
    assert_eq!(r["list"].as_array().unwrap().len(), 1, "{r}");
    for absent in ["accountId", "state"] {
        assert!(r.get(absent).is_none(), "{absent} in {r}");
    }
}

#[test]
fn update_should_modify_types() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Email", "Mailbox"]}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert!(r["updated"][&id].is_null(), "nothing server-changed: {r}");
    let got = get_one(&f, &alice(), &id).unwrap();
    assert_eq!(got["types"], json!(["Email", "Mailbox"]));
}

#[test]
fn update_with_missing_types_property_should_not_update_types() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": in_secs(3 * DAY)}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    let got = get_one(&f, &alice(), &id).unwrap();
    assert_eq!(got["types"], json!(["Mailbox"]));
}

#[test]
fn update_should_accept_null_types_and_update_to_all_types() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": null}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    // RFC 8620: null means all types, now and future: stays null.
    let got = get_one(&f, &alice(), &id).unwrap();
    assert!(got["types"].is_null(), "{got}");
    assert!(record(&f.store, &id).unwrap()["types"].is_null());
}

#[test]
fn update_should_accept_and_store_unconfigured_types() {
    // B1: clients send lists such as [Email, Mailbox, CalendarEvent] to
    // mail-only servers; the names are kept for when the host reports them.
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Mailbox", "CalendarEvent"]}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["types"],
        json!(["Mailbox", "CalendarEvent"])
    );
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": []}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert_eq!(get_one(&f, &alice(), &id).unwrap()["types"], json!([]));
}

#[test]
fn update_should_reject_bad_types() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    for bad in [
        json!("Email"),
        json!([1]),
        json!({"Email": true}),
        json!(["Not a type"]),
        json!(["Email", "Email"]),
        json!(true),
    ] {
        let r = set(
            &f.plugin,
            &alice(),
            json!({"update": {id.clone(): {"types": bad}}}),
        );
        assert_invalid(&r, "notUpdated", &id, "types");
    }
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["types"],
        json!(["Mailbox"])
    );
}

#[test]
fn set_create_should_accept_null_types_property_in_creation_request() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": null}));
    assert!(get_one(&f, &alice(), &id).unwrap()["types"].is_null());
}

#[test]
fn create_with_empty_or_unconfigured_types_is_accepted_and_stored() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": []}));
    assert_eq!(get_one(&f, &alice(), &id).unwrap()["types"], json!([]));
    assert_eq!(record(&f.store, &id).unwrap()["types"], json!([]));
    let types = json!(["Email", "Mailbox", "CalendarEvent"]);
    let id = create_id(&f, &alice(), "p2", json!({ "types": types }));
    assert_eq!(get_one(&f, &alice(), &id).unwrap()["types"], types);
}

#[test]
fn default_known_types_are_the_registered_data_types() {
    let types = PluginConfig::default().known_types;
    for t in [
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
    ] {
        assert!(types.iter().any(|k| k == t), "{t} missing from {types:?}");
    }
}

#[test]
fn get_should_return_empty_when_none() {
    let f = fixture();
    let r = get(&f.plugin, &alice(), json!({}));
    assert_eq!(r, json!({"list": [], "notFound": []}));
    let r = get(&f.plugin, &alice(), json!({"ids": null}));
    assert_eq!(r, json!({"list": [], "notFound": []}));
}

#[test]
fn get_should_return_all_records() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let b = create_id(&f, &alice(), "p2", json!({}));
    let r = get(&f.plugin, &alice(), json!({"ids": null}));
    let list = r["list"].as_array().unwrap();
    let mut ids: Vec<&str> = list.iter().map(|o| o["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(r["notFound"], json!([]));
    for o in list {
        let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "deviceClientId",
                "expires",
                "id",
                "types",
                "verificationCode"
            ],
            "default properties exclude url and keys: {o}"
        );
    }
}

#[test]
fn get_should_return_validated_verification_code() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    assert!(get_one(&f, &alice(), &id).unwrap()["verificationCode"].is_null());
    let code = last_code_plain(&f, "p1");
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["verificationCode"],
        json!(code)
    );
}

#[test]
fn get_should_not_return_expired_subscription_and_trigger_the_deletion() {
    let f = fixture();
    let live = create_id(&f, &alice(), "p1", json!({}));
    let dead = create_id(&f, &alice(), "p2", json!({}));
    patch_record(&f.store, &dead, "expires", json!(now_secs() - 10));

    let r = get(&f.plugin, &alice(), json!({"ids": null}));
    let ids: Vec<&str> = r["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![live.as_str()]);
    assert!(record(&f.store, &dead).is_none(), "expired record deleted");
    assert!(store_mentions(&f.store, &f.gateway.url("p2")).is_empty());
    let r = get(&f.plugin, &alice(), json!({"ids": [dead.clone()]}));
    assert_eq!(r["list"], json!([]));
    assert_eq!(r["notFound"], json!([dead]));
}

#[test]
fn get_expired_by_id_is_not_found_and_deleted() {
    let f = fixture();
    let dead = create_id(&f, &alice(), "p2", json!({}));
    patch_record(&f.store, &dead, "expires", json!(now_secs() - 10));
    let r = get(&f.plugin, &alice(), json!({"ids": [dead.clone()]}));
    assert_eq!(r, json!({"list": [], "notFound": [dead]}));
    assert!(record(&f.store, &dead).is_none(), "expired record deleted");
}

#[test]
fn get_by_id_should_return_records() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let _b = create_id(&f, &alice(), "p2", json!({}));
    let r = get(&f.plugin, &alice(), json!({"ids": [a.clone()]}));
    let list = r["list"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], json!(a));
    assert_eq!(list[0]["deviceClientId"], "device-p1");
    assert_eq!(list[0]["types"], json!(["Email"]));
    assert_eq!(r["notFound"], json!([]));
}

#[test]
fn get_by_id_should_return_not_found() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({}));
    let missing = random_id();
    let r = get(
        &f.plugin,
        &alice(),
        json!({"ids": [a.clone(), missing.clone(), "not an id!"]}),
    );
    assert_eq!(r["list"].as_array().unwrap().len(), 1);
    assert_eq!(r["notFound"], json!([missing, "not an id!"]));
}

#[test]
fn get_should_filter_properties() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let r = get(
        &f.plugin,
        &alice(),
        json!({"ids": [a.clone()], "properties": ["types"]}),
    );
    assert_eq!(r["list"], json!([{"id": a, "types": ["Email"]}]));
    let r = get(
        &f.plugin,
        &alice(),
        json!({"ids": null, "properties": ["expires", "id"]}),
    );
    let o = &r["list"][0];
    assert_eq!(o.as_object().unwrap().len(), 2, "{o}");
    assert!(is_utcdate(o["expires"].as_str().unwrap()));
    let r = get(&f.plugin, &alice(), json!({"ids": null, "properties": []}));
    assert_eq!(r["list"], json!([{"id": a}]));
}

#[test]
fn set_method_should_not_created_when_invalid_url_property() {
    let f = fixture();
    for url in [
        json!("not a url"),
        json!("ftp://push.example.com/x"),
        json!("https://user:pw@push.example.com/x"),
        json!("https://10.0.0.1/push"),
        json!("https://[::ffff:10.0.0.1]/push"),
        json!("https://169.254.169.254/latest"),
        json!(format!("https://push.example.com/{}", "a".repeat(2100))),
        json!("https://push..example.com/x"),
        json!(format!("https://{}.example.com/x", "a".repeat(64))),
        json!(42),
        json!(null),
    ] {
        let obj = json!({"deviceClientId": "d", "url": url});
        assert_rejected_create(&f, obj, "url");
    }
    // Without the test-only setting, plain http and loopback are refused.
    let strict = fixture_with(PluginConfig {
        insecure_test_mode: false,
        ..test_config()
    });
    for url in [
        strict.gateway.url("p1"),
        "http://push.example.com/x".to_string(),
        "https://127.0.0.1/x".to_string(),
    ] {
        let obj = json!({"deviceClientId": "d", "url": url});
        assert_rejected_create(&strict, obj, "url");
    }
}

#[test]
fn every_spelling_of_a_local_name_is_refused_at_create() {
    let strict = fixture_with(PluginConfig {
        insecure_test_mode: false,
        ..test_config()
    });
    for host in [
        "localhost",
        "localhost.",
        "LOCALHOST",
        "LocalHost.",
        "push.localhost",
        "a.b.LOCALHOST.",
        "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}",
        "localhost\u{3002}",
        "loc%61lhost",
    ] {
        let obj = json!({"deviceClientId": "d", "url": format!("https://{host}:8443/push")});
        let r = set(&strict.plugin, &alice(), json!({"create": {"c": obj}}));
        assert_invalid(&r, "notCreated", "c", "url");
        assert!(r["created"].is_null(), "{host}: {r}");
    }
    // A Unicode host name is accepted, and its VAPID audience is the
    // punycode origin the host connects to.
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {"c": {"deviceClientId": "d", "url": "https://p\u{fc}sh.example.invalid/x"}}}),
    );
    // The name does not resolve here: the create is kept for a retry, but
    // never refused as "could not be built".
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

#[test]
fn set_method_should_not_created_when_creation_request_has_verification_code_property() {
    let f = fixture();
    let obj = create_obj(&f, "p1", json!({"verificationCode": "abc"}));
    assert_rejected_create(&f, obj, "verificationCode");
}

#[test]
fn set_method_should_not_created_when_creation_request_has_id_property() {
    let f = fixture();
    let obj = create_obj(&f, "p1", json!({"id": random_id()}));
    assert_rejected_create(&f, obj, "id");
}

#[test]
fn set_method_should_not_created_when_in_valid_expires_property() {
    let f = fixture();
    for bad in [
        json!("tomorrow"),
        json!("2030-13-01T00:00:00Z"),
        json!("2030-01-01T00:00:00+02:00"),
        json!(1_900_000_000),
        json!(utcdate::format(now_secs() - 60)),
    ] {
        let obj = create_obj(&f, "p1", json!({ "expires": bad }));
        assert_rejected_create(&f, obj, "expires");
    }
}

#[test]
fn set_method_should_not_created_when_in_valid_types_property() {
    let f = fixture();
    for bad in [
        json!(["Bo gus"]),
        json!(["9Email"]),
        json!("Email"),
        json!([1]),
        json!(["Email", "Email"]),
    ] {
        let obj = create_obj(&f, "p1", json!({ "types": bad }));
        assert_rejected_create(&f, obj, "types");
    }
}

#[test]
fn set_method_should_not_created_when_device_client_id_exists() {
    let f = fixture();
    let first = create_id(&f, &alice(), "p1", json!({}));
    let before = f.gateway.received().len();
    let obj = json!({"deviceClientId": "device-p1", "url": f.gateway.url("p2")});
    let r = set(&f.plugin, &alice(), json!({"create": {"c": obj}}));
    assert_invalid(&r, "notCreated", "c", "deviceClientId");
    let e = &r["notCreated"]["c"];
    assert!(
        e["existingId"] == json!(first) || e["description"].as_str().unwrap().contains(&first),
        "names the existing id: {e}"
    );
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 1);
    // Another owner may use the same deviceClientId.
    let obj = json!({"deviceClientId": "device-p1", "url": f.gateway.url("p3")});
    let r = set(&f.plugin, &bob(), json!({"create": {"c": obj}}));
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

#[test]
fn set_method_should_accept_valid_expires_property() {
    let f = fixture();
    let expires = in_secs(2 * DAY);
    let r = create(&f, &alice(), "p1", json!({ "expires": expires }));
    let c = &r["created"]["c"];
    let id = c["id"].as_str().unwrap();
    // `expires` is always reported (B3); unchanged here.
    assert_eq!(c["expires"], json!(expires), "{r}");
    assert_eq!(
        get_one(&f, &alice(), id).unwrap()["expires"],
        json!(expires)
    );
}

#[test]
fn set_method_should_created_several_valid_creation_request() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {
            "c1": create_obj(&f, "p1", json!({})),
            "c2": create_obj(&f, "p2", json!({"types": ["Email"]})),
        }}),
    );
    let id1 = r["created"]["c1"]["id"].as_str().expect("c1 created");
    let id2 = r["created"]["c2"]["id"].as_str().expect("c2 created");
    assert_ne!(id1, id2);
    assert!(r["notCreated"].is_null(), "{r}");
    assert_eq!(
        plain(&f.gateway.received_on("p1")[0])["pushSubscriptionId"],
        json!(id1)
    );
    assert_eq!(
        plain(&f.gateway.received_on("p2")[0])["pushSubscriptionId"],
        json!(id2)
    );
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 2);
}

#[test]
fn set_method_should_success_when_mix_case() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {
            "good": create_obj(&f, "p1", json!({})),
            "bad": create_obj(&f, "p2", json!({"types": ["No pe"]})),
        }}),
    );
    assert!(r["created"]["good"]["id"].is_string(), "{r}");
    assert!(r["created"].get("bad").is_none(), "{r}");
    assert_invalid(&r, "notCreated", "bad", "types");
    assert!(f.gateway.received_on("p2").is_empty());
    assert_eq!(f.gateway.received_on("p1").len(), 1);
}

#[test]
fn update_should_validate_verification_code() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let code = last_code_plain(&f, "p1");
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert_eq!(
        record(&f.store, &id).unwrap()["verification"]["verified"],
        json!(true)
    );
    // Stays verified when other properties change later.
    set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Email"], "expires": in_secs(3 * DAY)}}}),
    );
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["verificationCode"],
        json!(code)
    );
}

#[test]
fn set_method_should_reject_invalid_key() {
    let f = fixture();
    let client = PushClient::new();
    let good = client.keys_json();
    let public = client.public_key();
    // SPKI/DER wrapping of the same point (what James accepts).
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(&public);
    let mut compressed = vec![0x02 | (public[64] & 1)];
    compressed.extend_from_slice(&public[1..33]);
    let mut off_curve = public;
    off_curve[64] ^= 1;
    let mut identity = [0u8; 65];
    identity[0] = 0x04;
    let auth = good["auth"].clone();
    let p256dh = good["p256dh"].clone();
    for keys in [
        json!({"p256dh": b64url_encode(&spki), "auth": auth}),
        json!({"p256dh": b64url_encode(&compressed), "auth": auth}),
        json!({"p256dh": b64url_encode(&off_curve), "auth": auth}),
        json!({"p256dh": b64url_encode(&identity), "auth": auth}),
        json!({"p256dh": "not base64 !!", "auth": auth}),
        json!({"p256dh": p256dh, "auth": b64url_encode(&[1u8; 15])}),
        json!({"p256dh": p256dh, "auth": b64url_encode(&[1u8; 32])}),
        json!({"p256dh": p256dh}),
        json!({"p256dh": p256dh, "auth": auth, "extra": "x"}),
        json!("keys"),
    ] {
        let obj = create_obj(&f, "p1", json!({ "keys": keys }));
        assert_rejected_create(&f, obj, "keys");
    }
}

#[test]
fn set_method_should_accept_valid_key() {
    let f = fixture();
    let client = PushClient::new();
    // Raw 65-octet keys as browsers give them, unpadded and padded.
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let got = f.gateway.received_on("p1");
    let v = client.decrypt_json(&got[0].body).expect("decrypts");
    assert_eq!(v["pushSubscriptionId"], json!(id));
    let client2 = PushClient::new();
    let padded = json!({
        "p256dh": format!("{}=", b64url_encode(&client2.public_key())),
        "auth": format!("{}==", b64url_encode(&client2.auth())),
    });
    let id2 = create_id(&f, &alice(), "p2", json!({ "keys": padded }));
    let got = f.gateway.received_on("p2");
    let v = client2.decrypt_json(&got[0].body).expect("decrypts");
    assert_eq!(v["pushSubscriptionId"], json!(id2));
}

#[test]
fn update_mixed() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let b = create_id(&f, &alice(), "p2", json!({"types": ["Email"]}));
    let missing = random_id();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {
            a.clone(): {"types": ["Mailbox"]},
            b.clone(): {"types": ["Bo gus"]},
            missing.clone(): {"types": ["Mailbox"]},
        }}),
    );
    assert!(r["updated"].get(&a).is_some(), "{r}");
    assert_invalid(&r, "notUpdated", &b, "types");
    assert_not_found(&r, "notUpdated", &missing);
    assert_eq!(
        get_one(&f, &alice(), &a).unwrap()["types"],
        json!(["Mailbox"])
    );
    assert_eq!(
        get_one(&f, &alice(), &b).unwrap()["types"],
        json!(["Email"])
    );
}

#[test]
fn update_should_not_validate_verification_code_when_wrong() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let code = last_code_plain(&f, "p1");
    let mut wrong = code.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    for bad in [json!(wrong), json!(""), json!(5), json!(format!("{code}x"))] {
        let r = set(
            &f.plugin,
            &alice(),
            json!({"update": {id.clone(): {"verificationCode": bad}}}),
        );
        assert_invalid(&r, "notUpdated", &id, "verificationCode");
    }
    assert!(get_one(&f, &alice(), &id).unwrap()["verificationCode"].is_null());
    assert_eq!(
        record(&f.store, &id).unwrap()["verification"]["verified"],
        json!(false)
    );
}

#[test]
fn update_valid_expires_should_succeed() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let expires = in_secs(3 * DAY);
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": expires}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    assert!(r["updated"][&id].is_null(), "not server-changed: {r}");
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["expires"],
        json!(expires)
    );
}

#[test]
fn update_invalid_expires_string_should_fail() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let before = get_one(&f, &alice(), &id).unwrap();
    for bad in [json!("whatever"), json!("2030-02-30T00:00:00Z"), json!(12)] {
        let r = set(
            &f.plugin,
            &alice(),
            json!({"update": {id.clone(): {"expires": bad}}}),
        );
        assert_invalid(&r, "notUpdated", &id, "expires");
    }
    assert_eq!(get_one(&f, &alice(), &id).unwrap(), before);
}

#[test]
fn update_with_bigger_expires_than_server_limit_should_set_to_server_limit_and_explicitly_returned()
{
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let t0 = now_secs();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": in_secs(60 * DAY)}}}),
    );
    let t1 = now_secs();
    let reported = r["updated"][&id]["expires"]
        .as_str()
        .unwrap_or_else(|| panic!("clamped expires reported: {r}"));
    let t = utcdate::parse(reported).unwrap();
    assert!(
        t >= t0 + MAX_LIFETIME && t <= t1 + MAX_LIFETIME,
        "{reported}"
    );
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["expires"],
        json!(reported)
    );
}

#[test]
fn update_outdated_expires_should_fail() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let before = get_one(&f, &alice(), &id).unwrap();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": utcdate::format(now_secs() - 3600)}}}),
    );
    assert_invalid(&r, "notUpdated", &id, "expires");
    assert_eq!(get_one(&f, &alice(), &id).unwrap(), before);
}

#[test]
fn update_should_fail_when_unknown_property() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"color": "red"}}}),
    );
    assert_invalid(&r, "notUpdated", &id, "color");
    // Immutable properties: a changed value is refused, an echo is fine.
    for (prop, value) in [
        ("deviceClientId", json!("other")),
        ("url", json!(f.gateway.url("elsewhere"))),
        ("keys", PushClient::new().keys_json()),
        ("id", json!(random_id())),
    ] {
        let r = set(
            &f.plugin,
            &alice(),
            json!({"update": {id.clone(): {prop: value}}}),
        );
        assert_invalid(&r, "notUpdated", &id, prop);
    }
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"deviceClientId": "device-p1", "url": f.gateway.url("p1"), "id": id.clone()}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "echo accepted: {r}");
    // A patch path into `types` may be refused with invalidPatch.
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types/0": "Email"}}}),
    );
    let (kind, _) = set_error(&r, "notUpdated", &id);
    assert!(kind == "invalidPatch" || kind == "invalidProperties", "{r}");
}

#[test]
fn update_should_fail_when_invalid_id() {
    let f = fixture();
    let long = "a".repeat(2000);
    for bad in ["not an id!", "", "../sub", long.as_str()] {
        let r = set(
            &f.plugin,
            &alice(),
            json!({"update": {bad: {"types": ["Email"]}}}),
        );
        assert_not_found(&r, "notUpdated", bad);
    }
}

#[test]
fn update_should_fail_when_not_found() {
    let f = fixture();
    let missing = random_id();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {missing.clone(): {"types": ["Email"]}}}),
    );
    assert_not_found(&r, "notUpdated", &missing);
    assert!(r["updated"].is_null());
}

#[test]
fn set_method_create_should_call_verification_to_push_server() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let got = f.gateway.received_on("p1");
    assert_eq!(got.len(), 1);
    let v = plain(&got[0]);
    assert_eq!(v["@type"], "PushVerification");
    assert_eq!(v["pushSubscriptionId"], json!(id));
    let code = v["verificationCode"].as_str().unwrap();
    assert!(b64url_decode(code).unwrap().len() >= 16, "128-bit code");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    assert!(got[0].header("ttl").is_some());
    assert!(got[0]
        .header("authorization")
        .unwrap()
        .starts_with("vapid "));
}

#[test]
fn set_method_create_should_not_created_when_call_verification_to_push_server_has_error() {
    let f = fixture();
    for status in [404u16, 410, 400, 401, 403] {
        let path = format!("refuse{status}");
        f.gateway.set_default(&path, Answer::status(status));
        let url = f.gateway.url(&path);
        let r = set(
            &f.plugin,
            &alice(),
            json!({"create": {"c": {"deviceClientId": "same", "url": url}}}),
        );
        assert!(r["created"].is_null(), "{status}: {r}");
        assert_invalid(&r, "notCreated", "c", "url");
        let d = r["notCreated"]["c"]["description"].as_str().unwrap();
        assert!(d.contains(&status.to_string()), "status in {d:?}");
        assert_eq!(f.gateway.received_on(&path).len(), 1, "one verification");
        let sent = plain(&f.gateway.received_on(&path)[0]);
        let id = sent["pushSubscriptionId"].as_str().unwrap();
        assert!(
            store_mentions(&f.store, id).is_empty(),
            "{status}: nothing left for {id}: {:?}",
            store_mentions(&f.store, id)
        );
        assert!(store_mentions(&f.store, &url).is_empty());
    }
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 0);
    // The deviceClientId is free again.
    create_id(&f, &alice(), "ok", json!({"deviceClientId": "same"}));
}

#[test]
fn body_request_to_push_server_should_be_encrypted_when_client_assign_encryption_keys() {
    let f = fixture();
    let client = PushClient::new();
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let got = &f.gateway.received_on("p1")[0];
    assert_eq!(got.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert!(
        serde_json::from_slice::<Value>(&got.body).is_err(),
        "not plaintext"
    );
    let code = record(&f.store, &id).unwrap()["verification_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!String::from_utf8_lossy(&got.body).contains(&code));
    let v = client.decrypt_json(&got.body).expect("decrypts with ece");
    assert_eq!(
        v,
        json!({"@type": "PushVerification", "pushSubscriptionId": id, "verificationCode": code})
    );
    // Someone else's keys cannot read it.
    assert!(PushClient::new().decrypt(&got.body).is_err());
}

#[test]
fn destroy_should_succeed() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let r = set(&f.plugin, &alice(), json!({"destroy": [id.clone()]}));
    assert_eq!(r["destroyed"], json!([id]));
    assert!(r["notDestroyed"].is_null(), "{r}");
    assert!(record(&f.store, &id).is_none());
    assert_eq!(
        get(&f.plugin, &alice(), json!({"ids": [id.clone()]}))["notFound"],
        json!([id])
    );
    // The deviceClientId can be used again.
    create_id(&f, &alice(), "p1", json!({}));
}

#[test]
fn destroy_should_fail_when_invalid_id() {
    let f = fixture();
    let long = "b".repeat(2000);
    for bad in ["not an id!", "", "#", long.as_str()] {
        let r = set(&f.plugin, &alice(), json!({"destroy": [bad]}));
        assert!(r["destroyed"].is_null(), "{r}");
        assert_not_found(&r, "notDestroyed", bad);
    }
}

#[test]
fn destroy_should_handle_mixed_cases() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({}));
    let other = create_id(&f, &bob(), "p2", json!({}));
    let missing = random_id();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"destroy": [a.clone(), missing.clone(), other.clone()]}),
    );
    assert_eq!(r["destroyed"], json!([a]));
    assert_not_found(&r, "notDestroyed", &missing);
    assert_not_found(&r, "notDestroyed", &other);
    assert!(record(&f.store, &other).is_some(), "bob's stays");
}

#[test]
fn destroy_unknown_id_should_be_not_destroyed_not_found() {
    // James reports an unknown id as destroyed; RFC 8620 §5.3 says notFound.
    let f = fixture();
    let missing = random_id();
    let r = set(&f.plugin, &alice(), json!({"destroy": [missing.clone()]}));
    assert!(r["destroyed"].is_null(), "{r}");
    assert_not_found(&r, "notDestroyed", &missing);
}

// ---------------------------------------------------------------------------
// Owners, concurrency, limits
// ---------------------------------------------------------------------------

/// What `who` learns about `id` from get, update and destroy, with the id
/// itself replaced by a placeholder so that answers can be compared.
fn probe(f: &Fixture, who: &Caller, id: &str) -> Vec<String> {
    let mask = |v: Value| v.to_string().replace(id, "<ID>");
    vec![
        mask(get(&f.plugin, who, json!({"ids": [id]}))),
        mask(get(
            &f.plugin,
            who,
            json!({"ids": [id], "properties": ["id"]}),
        )),
        mask(set(
            &f.plugin,
            who,
            json!({"update": {id: {"types": ["Email"]}}}),
        )),
        mask(set(
            &f.plugin,
            who,
            json!({"update": {id: {"verificationCode": "x"}}}),
        )),
        mask(set(&f.plugin, who, json!({"destroy": [id]}))),
    ]
}

fn assert_isolated(f: &Fixture, intruder: &Caller) {
    let id = create_id(f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let before = record(&f.store, &id).unwrap();
    let for_real = probe(f, intruder, &id);
    let for_missing = probe(f, intruder, &random_id());
    assert_eq!(for_real, for_missing, "foreign id indistinguishable");
    assert!(
        for_real[0].contains("\"notFound\":[\"<ID>\"]"),
        "{:?}",
        for_real
    );
    assert_eq!(get_list(f, intruder, Value::Null).len(), 0);
    assert_eq!(record(&f.store, &id).unwrap(), before, "untouched");
    assert_eq!(
        get_one(f, &alice(), &id).unwrap()["types"],
        json!(["Mailbox"])
    );
}

#[test]
fn owner_isolation_other_user() {
    let f = fixture();
    assert_isolated(&f, &bob());
}

#[test]
fn owner_isolation_same_user_other_credential() {
    let f = fixture();
    assert_isolated(&f, &caller("alice", Some("cred-other")));
    assert_isolated(&fixture(), &caller("alice", None));
}

/// Two plugins (two hosts) on one memory store, with room for many
/// creates.
fn two_hosts() -> (Arc<MemoryStore>, PushPlugin, PushPlugin) {
    let store = Arc::new(MemoryStore::new());
    let config = PluginConfig {
        max_creates_per_hour: 1000,
        max_subscriptions_per_owner: 1000,
        ..test_config()
    };
    let p1 = plugin_with(store.clone(), config.clone());
    let p2 = plugin_with(store.clone(), config);
    (store, p1, p2)
}

/// Runs `args(tag)` as `/set` for alice on both hosts at once (released
/// together by a barrier); returns both responses.
fn race_set(p1: &PushPlugin, p2: &PushPlugin, args: impl Fn(&str) -> Value + Sync) -> Vec<Value> {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = [(p1, "a"), (p2, "b")]
            .into_iter()
            .map(|(p, tag)| {
                let (barrier, args) = (&barrier, &args);
                s.spawn(move || {
                    let a = args(tag);
                    barrier.wait();
                    set(p, &alice(), a)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_duplicate_device_client_id_from_two_hosts() {
    const ROUNDS: usize = 100;
    let gateway = Gateway::start();
    let (store, p1, p2) = two_hosts();
    let who = alice();
    for round in 0..ROUNDS {
        let dcid = format!("phone-{round}");
        let answers = race_set(&p1, &p2, |tag| {
            json!({"create": {"c": {
                "deviceClientId": dcid,
                "url": gateway.url(&format!("r{round}{tag}")),
            }}})
        });
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|r| r["created"]["c"]["id"].is_string())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one wins: {answers:?}"
        );
        let loser = answers
            .iter()
            .find(|r| !r["created"]["c"]["id"].is_string())
            .unwrap();
        assert_invalid(loser, "notCreated", "c", "deviceClientId");
    }
    let list = get_list_of(&p1, &who);
    assert_eq!(list.len(), ROUNDS, "one per deviceClientId");
    let subs = dump(&store)
        .into_iter()
        .filter(|(k, _)| k.starts_with("sub/"))
        .count();
    assert_eq!(subs, ROUNDS, "no orphan records");
}

fn get_list_of(plugin: &PushPlugin, who: &Caller) -> Vec<Value> {
    get(plugin, who, json!({"ids": null}))["list"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn over_quota() {
    let f = fixture_with(PluginConfig {
        max_subscriptions_per_owner: 2,
        ..test_config()
    });
    create_id(&f, &alice(), "p1", json!({}));
    create_id(&f, &alice(), "p2", json!({}));
    let before = f.gateway.received().len();
    let r = create(&f, &alice(), "p3", json!({}));
    let (kind, _) = set_error(&r, "notCreated", "c");
    assert_eq!(kind, "overQuota", "{r}");
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    // Per owner: bob is not affected.
    create_id(&f, &bob(), "p4", json!({}));
    // Room again after a destroy.
    let first = get_list(&f, &alice(), Value::Null)[0]["id"].clone();
    set(&f.plugin, &alice(), json!({"destroy": [first]}));
    create_id(&f, &alice(), "p3", json!({}));
}

#[test]
fn over_quota_holds_when_two_hosts_race() {
    let f = fixture_with(PluginConfig {
        max_subscriptions_per_owner: 3,
        max_creates_per_hour: 1000,
        ..test_config()
    });
    let other = jmap_web_push_tests::plugin_with(
        f.store.clone(),
        PluginConfig {
            max_subscriptions_per_owner: 3,
            max_creates_per_hour: 1000,
            ..test_config()
        },
    );
    std::thread::scope(|s| {
        for (t, plugin) in [(0, &f.plugin), (1, &other)] {
            let f = &f;
            s.spawn(move || {
                for i in 0..6 {
                    let obj = create_obj(f, &format!("q{t}-{i}"), json!({}));
                    let _ = set(plugin, &alice(), json!({"create": {"c": obj}}));
                }
            });
        }
    });
    let n = get_list(&f, &alice(), Value::Null).len();
    assert!(n <= 3, "quota exceeded: {n} subscriptions");
    assert!(n >= 1);
}

#[test]
fn rate_limit() {
    let f = fixture_with(PluginConfig {
        max_creates_per_hour: 2,
        ..test_config()
    });
    let a = create_id(&f, &alice(), "p1", json!({}));
    create_id(&f, &alice(), "p2", json!({}));
    set(&f.plugin, &alice(), json!({"destroy": [a]}));
    let before = f.gateway.received().len();
    let r = create(&f, &alice(), "p3", json!({}));
    let (kind, _) = set_error(&r, "notCreated", "c");
    assert_eq!(kind, "rateLimit", "destroying does not refund: {r}");
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    create_id(&f, &bob(), "p4", json!({}));
}

#[test]
fn request_too_large_for_get() {
    let f = fixture_with(PluginConfig {
        max_objects_in_get: 3,
        ..test_config()
    });
    let ids: Vec<String> = (0..4).map(|_| random_id()).collect();
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/get",
        json!({ "ids": ids }),
    ));
    assert_eq!(e.error_type, "requestTooLarge");
    assert!(e.description.is_some());
    let r = get(&f.plugin, &alice(), json!({"ids": &ids[..3]}));
    assert_eq!(r["notFound"].as_array().unwrap().len(), 3);
}

#[test]
fn request_too_large_for_set() {
    let f = fixture_with(PluginConfig {
        max_objects_in_set: 2,
        ..test_config()
    });
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({
            "create": {"c1": create_obj(&f, "p1", json!({})), "c2": create_obj(&f, "p2", json!({}))},
            "destroy": [random_id()],
        }),
    ));
    assert_eq!(e.error_type, "requestTooLarge");
    assert!(f.gateway.received().is_empty(), "nothing sent");
    assert!(
        dump(&f.store).iter().all(|(k, _)| !k.starts_with("sub/")),
        "nothing stored"
    );
}

#[test]
fn forbidden_when_url_or_keys_in_get_properties() {
    let f = fixture();
    create_id(&f, &alice(), "p1", json!({}));
    for props in [
        json!(["url"]),
        json!(["keys"]),
        json!(["id", "types", "url", "keys"]),
    ] {
        let e = method_error(call(
            &f.plugin,
            &alice(),
            "PushSubscription/get",
            json!({"ids": null, "properties": props}),
        ));
        assert_eq!(e.error_type, "forbidden", "{props}");
        assert!(e.description.is_some());
    }
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/get",
        json!({"properties": ["color"]}),
    ));
    assert_eq!(e.error_type, "invalidArguments");
}

#[test]
fn invalid_arguments_for_malformed_arguments() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let cases = [
        ("PushSubscription/set", json!({"create": [1]})),
        ("PushSubscription/set", json!({"create": {"c": 5}})),
        ("PushSubscription/set", json!({"create": "x"})),
        ("PushSubscription/set", json!({"update": [id.clone()]})),
        (
            "PushSubscription/set",
            json!({"update": {id.clone(): null}}),
        ),
        ("PushSubscription/set", json!({"destroy": id.clone()})),
        ("PushSubscription/set", json!({"destroy": [1]})),
        ("PushSubscription/set", json!({"ifInState": "abc"})),
        ("PushSubscription/get", json!({"ids": id.clone()})),
        ("PushSubscription/get", json!({"ids": [1]})),
        ("PushSubscription/get", json!({"properties": "types"})),
        ("PushSubscription/get", json!({"properties": [true]})),
        ("PushSubscription/get", json!([])),
        ("PushSubscription/set", json!("create")),
        ("PushSubscription/set", json!(null)),
    ];
    for (method, args) in cases {
        let e = method_error(call(&f.plugin, &alice(), method, args.clone()));
        assert_eq!(e.error_type, "invalidArguments", "{method} {args}");
        assert!(e.description.as_deref().is_some_and(|d| !d.is_empty()));
    }
    for raw in ["", "{", "{\"ids\": [}", "\u{0}"] {
        let e = plugin_call_raw(&f.plugin, &alice(), "PushSubscription/get", raw);
        assert_eq!(e.error_type, "invalidArguments", "{raw:?}");
    }
    // I-JSON (RFC 7493 §2.3, RFC 8620 §3.1): a member name given twice is
    // refused, naming it, at any depth, rather than one value winning.
    for raw in [
        r#"{"ids": null, "ids": []}"#,
        r#"{"create": {"c": {"url": "https://a.example/1", "url": "https://b.example/2"}}}"#,
    ] {
        let method = if raw.contains("create") {
            "PushSubscription/set"
        } else {
            "PushSubscription/get"
        };
        let e = plugin_call_raw(&f.plugin, &alice(), method, raw);
        assert_eq!(e.error_type, "invalidArguments", "{raw}");
        let d = e.description.unwrap_or_default();
        assert!(d.contains("given twice"), "{raw}: {d}");
    }
    // Nesting: 127 levels parse inside the sandbox (no stack overflow on
    // the component's 256 KiB stack; the unknown argument is ignored), 200
    // are refused with a description.
    let nested = |depth: usize| format!(r#"{{"x": {}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let deep_ok = f
        .plugin
        .call(&alice(), "PushSubscription/get", &nested(126), &[])
        .expect("no trap");
    assert!(deep_ok.is_ok(), "{deep_ok:?}");
    let e = plugin_call_raw(&f.plugin, &alice(), "PushSubscription/get", &nested(200));
    assert_eq!(e.error_type, "invalidArguments");
    assert!(e
        .description
        .unwrap_or_default()
        .contains("recursion limit"));
    // Nothing was changed by any of them.
    assert!(get_one(&f, &alice(), &id).is_some());
    assert_eq!(f.gateway.received().len(), 1);
}

fn plugin_call_raw(plugin: &PushPlugin, who: &Caller, method: &str, raw: &str) -> MethodError {
    match plugin.call(who, method, raw, &[]).expect("no trap") {
        Ok(r) => panic!("expected an error, got {}", r.arguments),
        Err(e) => e,
    }
}

#[test]
fn unknown_method() {
    let f = fixture();
    for m in [
        "PushSubscription/query",
        "PushSubscription/changes",
        "Email/get",
        "pushsubscription/get",
        "",
    ] {
        let e = method_error(call(&f.plugin, &alice(), m, json!({})));
        assert_eq!(e.error_type, "unknownMethod", "{m}");
    }
}

// ---------------------------------------------------------------------------
// /set semantics
// ---------------------------------------------------------------------------

#[test]
fn creation_id_references_within_one_call() {
    let f = fixture();
    let mut ids = Vec::new();
    let r = call_with_ids(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({
            "create": {"c1": create_obj(&f, "p1", json!({})), "c2": create_obj(&f, "p2", json!({}))},
            "update": {"#c1": {"types": ["Email"]}},
            "destroy": ["#c2"],
        }),
        &mut ids,
    )
    .unwrap();
    let id1 = r["created"]["c1"]["id"].as_str().unwrap().to_string();
    let id2 = r["created"]["c2"]["id"].as_str().unwrap().to_string();
    assert!(r["updated"].get(&id1).is_some(), "{r}");
    let destroyed = r["destroyed"].as_array().expect("destroyed");
    assert!(destroyed == &[json!(id2.clone())], "{r}");
    assert!(ids.contains(&("c1".to_string(), id1.clone())), "{ids:?}");
    assert!(ids.contains(&("c2".to_string(), id2.clone())), "{ids:?}");
    assert_eq!(
        get_one(&f, &alice(), &id1).unwrap()["types"],
        json!(["Email"])
    );
    assert!(record(&f.store, &id2).is_none());
}

#[test]
fn creation_id_references_across_calls() {
    let f = fixture();
    let mut ids = vec![("earlier".to_string(), "someOtherType".to_string())];
    let r = call_with_ids(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"create": {"c1": create_obj(&f, "p1", json!({})), "c2": create_obj(&f, "p2", json!({}))}}),
        &mut ids,
    )
    .unwrap();
    let id1 = r["created"]["c1"]["id"].as_str().unwrap().to_string();
    let id2 = r["created"]["c2"]["id"].as_str().unwrap().to_string();
    assert!(ids.contains(&("earlier".to_string(), "someOtherType".to_string())));
    let r = call_with_ids(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"update": {"#c1": {"types": ["Mailbox"]}}, "destroy": ["#c2", "#nope"]}),
        &mut ids,
    )
    .unwrap();
    // Responses name the resolved ids, not the references.
    assert!(r["updated"].get(&id1).is_some(), "{r}");
    assert_eq!(r["destroyed"], json!([id2.clone()]), "{r}");
    assert_not_found(&r, "notDestroyed", "#nope");
    assert_eq!(
        get_one(&f, &alice(), &id1).unwrap()["types"],
        json!(["Mailbox"])
    );
    assert!(record(&f.store, &id2).is_none());
    // A reference passed in by another user's request resolves, but the
    // object is still not theirs.
    let r = call_with_ids(
        &f.plugin,
        &bob(),
        "PushSubscription/set",
        json!({"destroy": ["#c1"]}),
        &mut ids.clone(),
    )
    .unwrap();
    assert!(r["destroyed"].is_null(), "{r}");
    assert!(record(&f.store, &id1).is_some());
}

#[test]
fn same_id_updated_and_destroyed_gives_will_destroy() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Mailbox"]}}, "destroy": [id.clone()]}),
    );
    let (kind, _) = set_error(&r, "notUpdated", &id);
    assert_eq!(kind, "willDestroy", "{r}");
    assert_eq!(r["destroyed"], json!([id]));
    assert!(record(&f.store, &id).is_none());
}

#[test]
fn update_is_atomic() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let code = last_code_plain(&f, "p1");
    let before = get_one(&f, &alice(), &id).unwrap();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Mailbox"], "expires": "garbage"}}}),
    );
    assert_invalid(&r, "notUpdated", &id, "expires");
    assert_eq!(get_one(&f, &alice(), &id).unwrap(), before);
    // A correct code with an invalid property: not verified either.
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"verificationCode": code, "types": ["No pe"]}}}),
    );
    assert_invalid(&r, "notUpdated", &id, "types");
    assert_eq!(get_one(&f, &alice(), &id).unwrap(), before);
    assert_eq!(
        record(&f.store, &id).unwrap()["verification"]["verified"],
        json!(false)
    );
    // Two invalid properties are both named.
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"types": ["Email", "Email"], "expires": 5}}}),
    );
    let (kind, mut props) = set_error(&r, "notUpdated", &id);
    props.sort();
    assert_eq!(
        (kind.as_str(), props),
        (
            "invalidProperties",
            vec!["expires".to_string(), "types".to_string()]
        )
    );
    assert_eq!(get_one(&f, &alice(), &id).unwrap(), before);
}

#[test]
fn destroy_erases_url_and_keys_from_the_store() {
    let f = fixture();
    let client = PushClient::new();
    let id = verified(&f, &client, &alice(), "secret-channel-xyz", Value::Null);
    let url = f.gateway.url("secret-channel-xyz");
    let keys = client.keys_json();
    let p256dh = keys["p256dh"].as_str().unwrap();
    let auth = keys["auth"].as_str().unwrap();
    assert!(!store_mentions(&f.store, "secret-channel-xyz").is_empty());
    // A pending change (a push deferred by the gateway) is erased too.
    f.gateway
        .script("secret-channel-xyz", [Answer::status(503)]);
    f.plugin
        .state_changed(&state_change("alice", &[("a1", "Email", "s1")]))
        .unwrap()
        .unwrap();
    let r = set(&f.plugin, &alice(), json!({"destroy": [id.clone()]}));
    assert_eq!(r["destroyed"], json!([id]));
    for needle in [url.as_str(), "secret-channel-xyz", p256dh, auth] {
        assert!(
            store_mentions(&f.store, needle).is_empty(),
            "{needle} left in {:?}",
            store_mentions(&f.store, needle)
        );
    }
    assert!(record(&f.store, &id).is_none());
}

#[test]
fn created_reports_expires_and_defaulted_types_null() {
    let f = fixture();
    let t0 = now_secs();
    let r = create(&f, &alice(), "p1", json!({}));
    let t1 = now_secs();
    let c = r["created"]["c"].as_object().unwrap();
    assert!(c["id"].is_string());
    assert!(c.contains_key("types") && c["types"].is_null(), "{r}");
    let expires = c["expires"].as_str().expect("expires reported");
    assert!(is_utcdate(expires), "{expires}");
    let t = utcdate::parse(expires).unwrap();
    assert!(t >= t0 + MAX_LIFETIME && t <= t1 + MAX_LIFETIME);
    // Never the url or the code.
    assert!(c.get("url").is_none() && c.get("verificationCode").is_none());
    // When the client gave types, they are not echoed.
    let r = create(&f, &alice(), "p2", json!({"types": ["Email"]}));
    assert!(r["created"]["c"].get("types").is_none(), "{r}");
}

#[test]
fn clamped_expires_reported_in_created_and_updated() {
    let f = fixture();
    let t0 = now_secs();
    let r = create(&f, &alice(), "p1", json!({"expires": in_secs(30 * DAY)}));
    let reported = r["created"]["c"]["expires"].as_str().unwrap();
    let t = utcdate::parse(reported).unwrap();
    assert!(
        t >= t0 + MAX_LIFETIME && t <= now_secs() + MAX_LIFETIME,
        "{reported}"
    );
    let id = r["created"]["c"]["id"].as_str().unwrap().to_string();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": "2999-01-01T00:00:00Z"}}}),
    );
    let reported = r["updated"][&id]["expires"].as_str().expect("reported");
    assert!(utcdate::parse(reported).unwrap() <= now_secs() + MAX_LIFETIME);
    // Fractional seconds are dropped and the stored value reported.
    let exact = in_secs(DAY);
    let with_fraction = format!("{}.250Z", exact.trim_end_matches('Z'));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"expires": with_fraction}}}),
    );
    assert_eq!(r["updated"][&id]["expires"], json!(exact), "{r}");
}

// ---------------------------------------------------------------------------
// Verification (B4)
// ---------------------------------------------------------------------------

#[test]
fn verification_is_retried_after_503() {
    let f = fixture();
    let client = PushClient::new();
    f.gateway.script("p1", [Answer::status(503)]);
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let first = f.gateway.received_on("p1");
    assert_eq!(first.len(), 1);
    let v1 = client.decrypt_json(&first[0].body).unwrap();
    let sent = tick_until(&f.plugin, Duration::from_secs(3), || {
        f.gateway.received_on("p1").len() >= 2
    });
    assert!(sent, "verification re-sent");
    let got = f.gateway.received_on("p1");
    let v2 = client.decrypt_json(&got[1].body).unwrap();
    assert_eq!(v2, v1, "same code re-sent");
    assert_eq!(v2["pushSubscriptionId"], json!(id));
    // Delivered now: no third attempt.
    for _ in 0..5 {
        f.plugin.tick().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(f.gateway.received_on("p1").len(), 2);
    // And the code verifies.
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"verificationCode": v2["verificationCode"]}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
}

#[test]
fn verification_429_retry_after_is_honoured() {
    let f = fixture();
    f.gateway
        .script("p1", [Answer::status(429).header("retry-after", "2")]);
    let start = now_ms();
    create_id(&f, &alice(), "p1", json!({}));
    let sent = tick_until(&f.plugin, Duration::from_secs(4), || {
        f.gateway.received_on("p1").len() >= 2
    });
    assert!(sent, "verification re-sent after Retry-After");
    let got = f.gateway.received_on("p1");
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "not before Retry-After: {gap:?}"
    );
    assert!(now_ms() - start >= 2000);
    assert_eq!(last_code_plain(&f, "p1"), {
        let v = plain(&got[0]);
        v["verificationCode"].as_str().unwrap().to_string()
    });
}

#[test]
fn verification_refused_on_resend_destroys_the_subscription() {
    let f = fixture();
    f.gateway
        .script("p1", [Answer::status(503), Answer::status(410)]);
    let id = create_id(&f, &alice(), "p1", json!({"deviceClientId": "phone"}));
    assert!(record(&f.store, &id).is_some());
    let gone = tick_until(&f.plugin, Duration::from_secs(3), || {
        record(&f.store, &id).is_none()
    });
    assert!(gone, "destroyed after the 410");
    assert_eq!(f.gateway.received_on("p1").len(), 2);
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 0);
    assert!(store_mentions(&f.store, &f.gateway.url("p1")).is_empty());
    // The deviceClientId is free again.
    create_id(&f, &alice(), "p2", json!({"deviceClientId": "phone"}));
}

#[test]
fn nothing_but_verification_is_sent_to_an_unverified_subscription() {
    let f = fixture();
    let client = PushClient::new();
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let v = client
        .decrypt_json(&f.gateway.received_on("p1")[0].body)
        .unwrap();
    let report = f
        .plugin
        .state_changed(&state_change("alice", &[("a1", "Email", "s1")]))
        .unwrap()
        .unwrap();
    assert_eq!(report.delivered + report.deferred, 0);
    for _ in 0..3 {
        f.plugin.tick().unwrap().unwrap();
    }
    assert_eq!(
        f.gateway.received_on("p1").len(),
        1,
        "nothing but the verification"
    );

    set(
        &f.plugin,
        &alice(),
        json!({"update": {id: {"verificationCode": v["verificationCode"]}}}),
    );
    let report = f
        .plugin
        .state_changed(&state_change("alice", &[("a1", "Mailbox", "s2")]))
        .unwrap()
        .unwrap();
    assert_eq!(report.delivered, 1);
    let got = f.gateway.received_on("p1");
    assert_eq!(got.len(), 2);
    let m = client.decrypt_json(&got[1].body).unwrap();
    // The change from before verification was not queued for it.
    assert_eq!(
        m,
        json!({"@type": "StateChange", "changed": {"a1": {"Mailbox": "s2"}}})
    );
}

// ---------------------------------------------------------------------------
// Lifecycle (B5, B8)
// ---------------------------------------------------------------------------

#[test]
fn expired_subscription_purged_by_tick() {
    let f = fixture();
    let live = create_id(&f, &alice(), "p1", json!({}));
    let dead = create_id(&f, &alice(), "p2", json!({}));
    let past = now_secs() - 5;
    patch_record(&f.store, &dead, "expires", json!(past));
    f.store
        .put(
            &due_key(past * 1000, DueKind::Expiry, &dead),
            b"",
            Condition::Any,
        )
        .unwrap();
    let report = f.plugin.tick().unwrap().unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert!(record(&f.store, &dead).is_none());
    assert!(store_mentions(&f.store, &f.gateway.url("p2")).is_empty());
    assert!(record(&f.store, &live).is_some());
    let next = report
        .next_run_in_ms
        .expect("the live one's expiry is scheduled");
    assert!(next > 0);
    // An expired subscription gets no push either.
    let client = PushClient::new();
    let id = verified(&f, &client, &alice(), "p3", Value::Null);
    patch_record(&f.store, &id, "expires", json!(now_secs() - 1));
    let before = f.gateway.received_on("p3").len();
    f.plugin
        .state_changed(&state_change("alice", &[("a1", "Email", "s9")]))
        .unwrap()
        .unwrap();
    assert_eq!(f.gateway.received_on("p3").len(), before);
}

#[test]
fn credential_revocation_and_user_deletion_destroy_exactly_that_owner() {
    let f = fixture();
    let a1 = caller("alice", Some("cred-1"));
    let a2 = caller("alice", Some("cred-2"));
    let a0 = caller("alice", None);
    let b1 = caller("bob", Some("cred-1"));
    let x1 = create_id(&f, &a1, "a1x", json!({}));
    let y1 = create_id(&f, &a1, "a1y", json!({}));
    let z2 = create_id(&f, &a2, "a2", json!({}));
    let n0 = create_id(&f, &a0, "a0", json!({}));
    let b = create_id(&f, &b1, "b1", json!({}));

    assert_eq!(
        f.plugin
            .credential_revoked("alice", "cred-1")
            .unwrap()
            .unwrap(),
        2
    );
    assert!(record(&f.store, &x1).is_none() && record(&f.store, &y1).is_none());
    assert_eq!(get_list(&f, &a1, Value::Null).len(), 0);
    for id in [&z2, &n0, &b] {
        assert!(record(&f.store, id).is_some());
    }
    assert_eq!(
        f.plugin
            .credential_revoked("alice", "cred-1")
            .unwrap()
            .unwrap(),
        0
    );
    assert_eq!(
        f.plugin
            .credential_revoked("alice", "nope")
            .unwrap()
            .unwrap(),
        0
    );

    assert_eq!(f.plugin.user_deleted("alice").unwrap().unwrap(), 2);
    assert!(record(&f.store, &z2).is_none() && record(&f.store, &n0).is_none());
    assert!(record(&f.store, &b).is_some(), "bob untouched");
    assert_eq!(get_list(&f, &b1, Value::Null).len(), 1);
    for path in ["a1x", "a1y", "a2", "a0"] {
        assert!(store_mentions(&f.store, &f.gateway.url(path)).is_empty());
    }
    // A user whose name is a prefix of another's.
    create_id(&f, &caller("bobby", None), "bobby", json!({}));
    assert_eq!(f.plugin.user_deleted("bob").unwrap().unwrap(), 1);
    assert_eq!(get_list(&f, &caller("bobby", None), Value::Null).len(), 1);
}

fn vapid_capability(plugin: &PushPlugin) -> (String, String) {
    let s = plugin.session().unwrap().unwrap();
    let cap = s
        .capabilities
        .iter()
        .find(|c| c.uri == "urn:ietf:params:jmap:webpush-vapid")
        .expect("VAPID capability");
    let v: Value = serde_json::from_str(&cap.value).unwrap();
    let key = v["applicationServerKey"].as_str().unwrap().to_string();
    (key, s.state)
}

#[test]
fn session_capability_has_the_vapid_key() {
    let f = fixture();
    let (key, state) = vapid_capability(&f.plugin);
    let raw = b64url_decode(&key).unwrap();
    assert_eq!(raw.len(), 65);
    assert_eq!(raw[0], 0x04);
    assert!(!key.contains('='), "base64url without padding");
    create_id(&f, &alice(), "p1", json!({}));
    let push = &f.gateway.received_on("p1")[0];
    let (_, k) = vapid_claims(push.header("authorization").unwrap()).unwrap();
    assert_eq!(k, key);
    assert_eq!(vapid_capability(&f.plugin), (key, state), "stable");
    // Without a contact: no capability.
    let off = fixture_with(PluginConfig {
        vapid_contact: None,
        ..test_config()
    });
    let s = off.plugin.session().unwrap().unwrap();
    assert!(s
        .capabilities
        .iter()
        .all(|c| c.uri != "urn:ietf:params:jmap:webpush-vapid"));
}

#[test]
fn rotate_vapid_key_changes_key_and_state_and_destroys_old_subscriptions() {
    let f = fixture();
    let (old_key, old_state) = vapid_capability(&f.plugin);
    let old = create_id(&f, &alice(), "p1", json!({}));
    let other = create_id(&f, &bob(), "p2", json!({}));
    let rotation = f.plugin.rotate_vapid_key().unwrap().unwrap();
    assert_eq!(rotation.destroyed, 2, "both subscriptions of the old key");
    let new_key = rotation.application_server_key;
    assert_ne!(new_key, old_key);
    let (cap_key, new_state) = vapid_capability(&f.plugin);
    assert_eq!(cap_key, new_key);
    assert_ne!(new_state, old_state);
    for id in [&old, &other] {
        assert!(
            record(&f.store, id).is_none(),
            "old-key subscription destroyed"
        );
    }
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 0);
    // New subscriptions are signed with the new key and survive.
    let fresh = create_id(&f, &alice(), "p3", json!({}));
    let push = &f.gateway.received_on("p3")[0];
    let (_, k) = vapid_claims(push.header("authorization").unwrap()).unwrap();
    assert_eq!(k, new_key);
    assert!(record(&f.store, &fresh).is_some());
    // The deviceClientId of a destroyed one is free again.
    create_id(&f, &alice(), "p4", json!({"deviceClientId": "device-p1"}));
}

#[test]
fn expires_is_a_utcdate() {
    let f = fixture();
    let r = create(&f, &alice(), "p1", json!({"expires": in_secs(2 * DAY)}));
    let id = r["created"]["c"]["id"].as_str().unwrap();
    assert!(
        is_utcdate(r["created"]["c"]["expires"].as_str().unwrap()),
        "{r}"
    );
    let got = get_one(&f, &alice(), id).unwrap();
    let e = got["expires"].as_str().unwrap();
    assert!(is_utcdate(e), "{e}");
    let r = create(&f, &alice(), "p2", json!({}));
    assert!(
        is_utcdate(r["created"]["c"]["expires"].as_str().unwrap()),
        "{r}"
    );
}

#[test]
fn types_null_stays_null_in_get() {
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({"types": null}));
    let b = create_id(&f, &alice(), "p2", json!({}));
    for id in [&a, &b] {
        let got = get_one(&f, &alice(), id).unwrap();
        assert!(got.as_object().unwrap().contains_key("types"));
        assert!(got["types"].is_null(), "not expanded: {got}");
        assert!(record(&f.store, id).unwrap()["types"].is_null());
    }
    // A type the host adds later reaches a types:null subscription.
    let client = PushClient::new();
    verified(&f, &client, &alice(), "p3", Value::Null);
    f.plugin
        .state_changed(&state_change("alice", &[("a1", "CalendarEvent", "s1")]))
        .unwrap()
        .unwrap();
    let got = f.gateway.received_on("p3");
    let m = client.decrypt_json(&got.last().unwrap().body).unwrap();
    assert_eq!(m["changed"], json!({"a1": {"CalendarEvent": "s1"}}));
}

#[test]
fn get_with_repeated_ids_reports_each_once() {
    // RFC 8620 §5.1: an id given more than once is in list or notFound once.
    let f = fixture();
    let a = create_id(&f, &alice(), "p1", json!({}));
    let missing = random_id();
    let r = get(
        &f.plugin,
        &alice(),
        json!({"ids": [a.clone(), missing.clone(), a.clone(), missing.clone()]}),
    );
    assert_eq!(r["list"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["notFound"], json!([missing]));
}

#[test]
fn store_outage_is_a_server_error_and_nothing_is_half_written() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({"types": ["Email"]}));
    let before = dump(&f.store);
    f.store.set_unavailable(true);
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/get",
        json!({"ids": null}),
    ));
    assert!(e.error_type == "serverFail", "{e:?}");
    let r = call(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"create": {"c": create_obj(&f, "p2", json!({}))}, "update": {id.clone(): {"types": ["Mailbox"]}}}),
    );
    if let Ok(r) = &r {
        assert_eq!(set_error(r, "notCreated", "c").0, "serverFail", "{r}");
        assert_eq!(set_error(r, "notUpdated", &id).0, "serverFail", "{r}");
    }
    let r = call(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"destroy": [id.clone()]}),
    );
    if let Ok(r) = &r {
        assert_eq!(set_error(r, "notDestroyed", &id).0, "serverFail", "{r}");
    }
    f.store.set_unavailable(false);
    assert_eq!(dump(&f.store), before, "nothing written");
    assert!(f.gateway.received_on("p2").is_empty());
    assert_eq!(
        get_one(&f, &alice(), &id).unwrap()["types"],
        json!(["Email"])
    );
}

#[test]
fn set_method_should_not_created_when_invalid_device_client_id() {
    let f = fixture();
    let url = f.gateway.url("p1");
    for dcid in [json!(""), json!("x".repeat(256)), json!(7), json!(null)] {
        let obj = json!({"deviceClientId": dcid, "url": url});
        assert_rejected_create(&f, obj, "deviceClientId");
    }
    assert_rejected_create(&f, json!({ "url": url }), "deviceClientId");
    assert_rejected_create(&f, json!({"deviceClientId": "d"}), "url");
    // 255 octets is the limit, inclusive.
    create_id(
        &f,
        &alice(),
        "p1",
        json!({"deviceClientId": "é".repeat(127)}),
    );
}

#[test]
fn keys_required_by_host_setting() {
    let f = fixture_with(PluginConfig {
        require_keys: true,
        ..test_config()
    });
    let obj = create_obj(&f, "p1", json!({"keys": null}));
    assert_rejected_create(&f, obj, "keys");
    let obj = create_obj(&f, "p1", json!({}));
    assert_rejected_create(&f, obj, "keys");
    create_id(
        &f,
        &alice(),
        "p1",
        json!({"keys": PushClient::new().keys_json()}),
    );
}

// ---------------------------------------------------------------------------
// /set judged on the state after the whole call (RFC 8620 §5.3, B1, B3)
// ---------------------------------------------------------------------------

/// The ids of `who`'s subscriptions with this deviceClientId.
fn ids_with_device(plugin: &PushPlugin, who: &Caller, dcid: &str) -> Vec<String> {
    get_list_of(plugin, who)
        .into_iter()
        .filter(|s| s["deviceClientId"] == dcid)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn replacing_a_subscription_in_one_call_keeps_the_device_subscribed() {
    let f = fixture();
    let old_client = PushClient::new();
    let old = create_id(
        &f,
        &alice(),
        "p1",
        json!({"deviceClientId": "phone", "keys": old_client.keys_json()}),
    );
    let new_client = PushClient::new();
    let r = set(
        &f.plugin,
        &alice(),
        json!({
            "create": {"new": {"deviceClientId": "phone", "url": f.gateway.url("p2"),
                               "keys": new_client.keys_json()}},
            "destroy": [old.clone()],
        }),
    );
    let new = r["created"]["new"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("replacement not created: {r}"))
        .to_string();
    assert_eq!(r["destroyed"], json!([old]), "{r}");
    assert!(
        r["notCreated"].is_null() && r["notDestroyed"].is_null(),
        "{r}"
    );
    assert_eq!(
        ids_with_device(&f.plugin, &alice(), "phone"),
        vec![new.clone()]
    );
    assert!(record(&f.store, &old).is_none());
    // The verification of the replacement went to the new URL, sealed for
    // the new keys.
    let got = f.gateway.received_on("p2");
    let v = new_client.decrypt_json(&got[0].body).unwrap();
    assert_eq!(v["pushSubscriptionId"], json!(new));
    // The deviceClientId is held by the new subscription.
    let r = create(&f, &alice(), "p3", json!({"deviceClientId": "phone"}));
    assert_invalid(&r, "notCreated", "c", "deviceClientId");
    assert_eq!(r["notCreated"]["c"]["existingId"], json!(new));
}

#[test]
fn replacing_at_the_quota_in_one_call_succeeds() {
    let f = fixture_with(PluginConfig {
        max_subscriptions_per_owner: 2,
        ..test_config()
    });
    let a = create_id(&f, &alice(), "p1", json!({}));
    create_id(&f, &alice(), "p2", json!({}));
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {"c": create_obj(&f, "p3", json!({}))}, "destroy": [a.clone()]}),
    );
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
    assert_eq!(r["destroyed"], json!([a]));
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 2);
    // Without a destroy the quota still holds, also with two creates
    // against one destroy.
    let b = get_list(&f, &alice(), Value::Null)[0]["id"].clone();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {"c1": create_obj(&f, "p4", json!({})),
                          "c2": create_obj(&f, "p5", json!({}))},
               "destroy": [b]}),
    );
    let kinds: Vec<String> = ["c1", "c2"]
        .iter()
        .filter(|c| r["created"].get(**c).is_none())
        .map(|c| set_error(&r, "notCreated", c).0)
        .collect();
    assert_eq!(kinds, vec!["overQuota".to_string()], "{r}");
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 2);
}

#[test]
fn replacing_a_subscription_created_earlier_in_the_request_by_reference() {
    let f = fixture();
    let mut ids = Vec::new();
    let obj = |path: &str| json!({"deviceClientId": "phone", "url": f.gateway.url(path)});
    call_with_ids(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"create": {"first": obj("p1")}}),
        &mut ids,
    )
    .unwrap();
    let r = call_with_ids(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({"create": {"second": obj("p2")}, "destroy": ["#first"]}),
        &mut ids,
    )
    .unwrap();
    let second = r["created"]["second"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(r["destroyed"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(ids_with_device(&f.plugin, &alice(), "phone"), vec![second]);
}

#[test]
fn two_creates_of_one_device_in_one_call_still_fail() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {
            "c1": {"deviceClientId": "phone", "url": f.gateway.url("p1")},
            "c2": {"deviceClientId": "phone", "url": f.gateway.url("p2")},
        }}),
    );
    let created: Vec<&str> = ["c1", "c2"]
        .into_iter()
        .filter(|c| r["created"][*c]["id"].is_string())
        .collect();
    assert_eq!(created.len(), 1, "{r}");
    let loser = if created[0] == "c1" { "c2" } else { "c1" };
    assert_invalid(&r, "notCreated", loser, "deviceClientId");
    assert_eq!(
        r["notCreated"][loser]["existingId"],
        r["created"][created[0]]["id"]
    );
    assert_eq!(ids_with_device(&f.plugin, &alice(), "phone").len(), 1);
}

#[test]
fn racing_replacements_from_two_hosts_leave_one_subscription_per_device() {
    const ROUNDS: usize = 25;
    let gateway = Gateway::start();
    let (store, p1, p2) = two_hosts();
    let who = alice();
    for round in 0..ROUNDS {
        let dcid = format!("phone-{round}");
        let first = set(
            &p1,
            &who,
            json!({"create": {"c": {"deviceClientId": dcid, "url": gateway.url(&format!("r{round}"))}}}),
        );
        let old = first["created"]["c"]["id"].as_str().unwrap().to_string();
        let answers = race_set(&p1, &p2, |tag| {
            json!({"destroy": [old], "create": {"c": {
                "deviceClientId": dcid,
                "url": gateway.url(&format!("r{round}{tag}")),
            }}})
        });
        let winners = answers
            .iter()
            .filter(|r| r["created"]["c"]["id"].is_string())
            .count();
        let left = ids_with_device(&p1, &who, &dcid);
        assert_eq!(left.len(), 1, "round {round}: {answers:?}");
        assert!(winners >= 1, "round {round}: {answers:?}");
        assert!(!left.contains(&old));
    }
    let subs = dump(&store)
        .into_iter()
        .filter(|(k, _)| k.starts_with("sub/"))
        .count();
    assert_eq!(subs, ROUNDS, "no orphan records");
}

#[test]
fn a_create_names_every_invalid_property() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {"c": {
            "url": "https://10.0.0.1/push",
            "keys": {"p256dh": "AAAA", "auth": "AAAA"},
            "types": ["Email", "Email"],
            "expires": "2000-01-01T00:00:00Z",
            "verificationCode": "guess",
        }}}),
    );
    let (kind, mut props) = set_error(&r, "notCreated", "c");
    assert_eq!(kind, "invalidProperties");
    props.sort();
    assert_eq!(
        props,
        [
            "deviceClientId",
            "expires",
            "keys",
            "types",
            "url",
            "verificationCode"
        ]
    );
    let description = r["notCreated"]["c"]["description"].as_str().unwrap();
    for p in ["deviceClientId", "expires", "keys", "types", "url"] {
        assert!(description.contains(p), "{description}");
    }
    assert!(dump(&f.store).iter().all(|(k, _)| !k.starts_with("sub/")));
}

#[test]
fn an_unbuildable_verification_resend_does_not_shift_the_answers() {
    // Three verifications to re-send in one tick; the first due cannot be
    // built (its stored keys are unusable). The other two must get their
    // own answers: both delivered, none destroyed.
    let f = fixture();
    let mut ids = Vec::new();
    for p in ["v1", "v2", "v3"] {
        f.gateway
            .script(p, [Answer::status(503), Answer::status(201)]);
        ids.push(create_id(&f, &alice(), p, json!({"deviceClientId": p})));
    }
    // Make the earliest-due one unbuildable.
    let due: Vec<String> = dump(&f.store)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("due/") && k.contains("/v/"))
        .collect();
    assert_eq!(due.len(), 3, "{due:?}");
    let first = due[0].rsplit('/').next().unwrap().to_string();
    patch_record(
        &f.store,
        &first,
        "keys",
        json!({"p256dh": "not-a-key", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}),
    );
    // All three due (retry_initial_ms 200: due within 200 ms), one tick.
    std::thread::sleep(Duration::from_millis(600));
    let report = f.plugin.tick().unwrap().unwrap();
    assert_eq!(report.verifications_sent, 2, "{report:?}");
    assert!(
        record(&f.store, &first).is_none(),
        "the unbuildable one goes"
    );
    for id in ids.iter().filter(|id| **id != first) {
        let r = record(&f.store, id).unwrap_or_else(|| panic!("{id} was destroyed"));
        assert_eq!(r["verification"]["delivered"], json!(true), "{r}");
    }
}

#[test]
fn a_vapid_key_replaced_in_the_configuration_is_handled_as_a_rotation() {
    use jmap_web_push_guest::crypto::vapid::VapidKey;
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let with_key = |key: &VapidKey| PluginConfig {
        vapid_private_key: Some(key.to_base64url()),
        ..test_config()
    };
    let (k1, k2) = (VapidKey::generate().unwrap(), VapidKey::generate().unwrap());
    let first = plugin_with(store.clone(), with_key(&k1));
    first.tick().unwrap().unwrap();
    let f = Fixture {
        gateway,
        store: store.clone(),
        plugin: first,
    };
    let old = create_id(&f, &alice(), "p1", json!({}));
    let old_state = f.plugin.session().unwrap().unwrap().state;
    // More subscriptions of the old key than one tick looks at (copies of
    // the record under other ids).
    let text = String::from_utf8(store.get(&format!("sub/{old}")).unwrap().unwrap().value).unwrap();
    let copies = jmap_web_push_guest::lifecycle::RECONCILE_BUDGET + 100;
    for i in 0..copies {
        let id = format!("copy{i:05}");
        let v = text.replace(&old, &id);
        store
            .put(&format!("sub/{id}"), v.as_bytes(), Condition::Absent)
            .unwrap();
    }
    let count_subs = || {
        dump(&store)
            .iter()
            .filter(|(k, _)| k.starts_with("sub/"))
            .count()
    };
    assert_eq!(count_subs(), copies + 1);
    // Restarted with the same key: nothing happens.
    let same = plugin_with(store.clone(), with_key(&k1));
    same.tick().unwrap().unwrap();
    assert!(record(&store, &old).is_some());
    assert_eq!(count_subs(), copies + 1);
    // Restarted with another key: the old key's subscriptions go, a page
    // per tick (the first tick asks to run again at once), the Session
    // shows the new key and a new state.
    let second = plugin_with(store.clone(), with_key(&k2));
    let report = second.tick().unwrap().unwrap();
    assert_eq!(report.next_run_in_ms, Some(0), "{report:?}");
    assert!(count_subs() > 0, "not all in one tick");
    second.tick().unwrap().unwrap();
    assert_eq!(count_subs(), 0, "old key's subscriptions kept");
    assert!(get_list_of(&second, &alice()).is_empty());
    let session = second.session().unwrap().unwrap();
    assert_ne!(session.state, old_state);
    assert!(session.capabilities[0]
        .value
        .contains(&k2.public_key_base64url()));
    // Subscriptions of the new key survive later restarts.
    let f = Fixture {
        plugin: second,
        ..f
    };
    let new = create_id(&f, &alice(), "p2", json!({}));
    plugin_with(store.clone(), with_key(&k2))
        .tick()
        .unwrap()
        .unwrap();
    assert!(record(&store, &new).is_some());
}

#[test]
fn a_create_cut_off_by_the_deadline_leaves_nothing_behind_and_can_be_retried() {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let plugin = PushPlugin::builder()
        .config(test_config())
        .store(store.clone())
        .sandbox(jmap_web_push_host::SandboxOptions {
            aot_cache_dir: Some(cache_dir()),
            call_deadline: Duration::from_millis(400),
            ..Default::default()
        })
        .build()
        .unwrap();
    // The VAPID key exists before (it is never taken back).
    plugin.session().unwrap().unwrap();
    let before = dump(&store);
    // The push service answers the verification after the call's CPU
    // deadline has passed: the plugin is interrupted as soon as it runs
    // again, after the record, the reservation and the index entry exist.
    gateway.script(
        "p1",
        [Answer::status(201).delayed(Duration::from_millis(1500))],
    );
    let obj = json!({"create": {"c": {"deviceClientId": "phone", "url": gateway.url("p1")}}});
    let outcome = plugin.call(&alice(), "PushSubscription/set", &obj.to_string(), &[]);
    assert!(
        matches!(outcome, Err(jmap_web_push_host::CallError::Deadline(_))),
        "{outcome:?}"
    );
    assert_eq!(
        gateway.received_on("p1").len(),
        1,
        "the verification went out"
    );
    assert_eq!(
        dump(&store),
        before,
        "no orphan record, reservation or index entry"
    );
    // The client retries the same create: it succeeds.
    let r = set(&plugin, &alice(), obj);
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
    assert_eq!(get_list_of(&plugin, &alice()).len(), 1);
}
