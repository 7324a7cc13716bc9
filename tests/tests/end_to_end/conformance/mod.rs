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

mod james_create;
mod james_types_and_get;
mod james_update_and_destroy;
mod lifecycle;
mod owners_and_limits;
mod set_semantics;
mod verification;
mod whole_call;

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

fn get_list_of(plugin: &PushPlugin, who: &Caller) -> Vec<Value> {
    get(plugin, who, json!({"ids": null}))["list"]
        .as_array()
        .unwrap()
        .clone()
}
