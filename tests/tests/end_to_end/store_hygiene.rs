//! What the plugin leaves in the store: under a steady churn of creates,
//! verifications, pushes and destroys the number of keys stays steady, and
//! a destroyed or updated subscription leaves no entry behind to wait for
//! its old expiry (found by the soak bench: the store grew by one key per
//! destroyed subscription).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{PluginConfig, PushPlugin};
use jmap_web_push_tests::{
    call, caller, plugin_with, state_change, test_config, verified_subscription, Gateway,
    PushClient,
};
use serde_json::json;

/// Keys by their first path segment (`sub`, `due`, `owner`, ...).
fn census(store: &MemoryStore) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for key in store.list_keys("", None, 1_000_000).expect("list").keys {
        let family = key.split('/').next().unwrap_or_default().to_owned();
        *out.entry(family).or_default() += 1;
    }
    out
}

fn config() -> PluginConfig {
    PluginConfig {
        max_creates_per_hour: 100_000,
        max_subscriptions_per_owner: 100_000,
        ..test_config()
    }
}

/// Runs `rounds` rounds of churn for alice: create and verify a
/// subscription, push a StateChange to every live one, destroy the oldest
/// once more than `alive` are live; calls `after` with the round number.
fn churn(plugin: &PushPlugin, rounds: usize, alive: usize, mut after: impl FnMut(usize)) {
    let gateway = Gateway::start();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let mut live = VecDeque::new();
    for round in 0..rounds {
        let path = format!("c{round}");
        live.push_back(verified_subscription(
            plugin,
            &gateway,
            &client,
            &alice,
            &path,
            json!(null),
        ));
        let event = state_change("alice", &[("a1", "Email", &format!("s{round}"))]);
        plugin
            .state_changed(&event)
            .expect("no trap")
            .expect("taken");
        if live.len() > alive {
            let old = live.pop_front().expect("oldest");
            let r = call(
                plugin,
                &alice,
                "PushSubscription/set",
                json!({"destroy": [old]}),
            )
            .expect("destroy");
            assert_eq!(r["destroyed"].as_array().map(Vec::len), Some(1), "{r}");
        }
        gateway.clear();
        after(round);
    }
}

#[test]
fn a_steady_churn_of_subscriptions_keeps_the_number_of_keys_steady() {
    const ALIVE: usize = 10;
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), config());
    churn(&plugin, 60, ALIVE, |_| {});
    let keys = census(&store);
    for family in ["sub", "owner", "dcid"] {
        assert_eq!(keys.get(family), Some(&ALIVE), "{family}: {keys:?}");
    }
    // One expiry entry per live subscription; nothing pending.
    assert_eq!(keys.get("due"), Some(&ALIVE), "{keys:?}");
    assert_eq!(keys.get("pending"), None, "{keys:?}");
}

#[test]
fn changing_expires_keeps_one_expiry_entry() {
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), config());
    let gateway = Gateway::start();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "e", json!(null));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Five different times within the 7-day lifetime.
    for day in 1..=5 {
        let expires = jmap_web_push_guest::utcdate::format(now + day * 86_400);
        let r = call(
            &plugin,
            &alice,
            "PushSubscription/set",
            json!({"update": {id.clone(): {"expires": expires}}}),
        )
        .expect("update");
        assert!(r["updated"].get(&id).is_some(), "{r}");
    }
    let expiry_entries = store
        .list_keys("due/", None, 1_000)
        .expect("list")
        .keys
        .into_iter()
        .filter(|k| k.ends_with(&format!("/x/{id}")))
        .count();
    assert_eq!(expiry_entries, 1);
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id.clone()], "properties": ["expires"]}),
    )
    .expect("get");
    let stored = got["list"][0]["expires"]
        .as_str()
        .expect("expires")
        .to_owned();
    assert!(
        store
            .get(&format!(
                "due/{:020}/x/{id}",
                jmap_web_push_guest::utcdate::parse(&stored).expect("a UTCDate") * 1000
            ))
            .expect("get")
            .is_some(),
        "the one entry is for the expiry in force ({stored})"
    );
}

#[test]
fn tick_puts_back_the_expiry_entry_of_a_subscription_whose_entry_went_stale() {
    // An update racing another (or failing half-way) can leave only an
    // entry for an expiry no longer in force; the subscription must still
    // expire at its own time.
    use jmap_web_push_host::store::Condition;
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), config());
    let gateway = Gateway::start();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "r", json!(null));
    let entries = |store: &MemoryStore| -> Vec<String> {
        store
            .list_keys("due/", None, 1_000)
            .expect("list")
            .keys
            .into_iter()
            .filter(|k| k.ends_with(&format!("/x/{id}")))
            .collect()
    };
    let in_force = entries(&store);
    assert_eq!(in_force.len(), 1);
    store.delete(&in_force[0], Condition::Any).expect("delete");
    let stale = format!("due/{:020}/x/{id}", 1_000);
    store.put(&stale, b"", Condition::Any).expect("put");
    plugin.tick().expect("no trap").expect("tick");
    assert_eq!(
        entries(&store),
        in_force,
        "the entry in force is back, the stale one gone"
    );
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id.clone()]}),
    )
    .expect("get");
    assert_eq!(got["list"].as_array().map(Vec::len), Some(1), "{got}");
}

/// The guest's linear memory does not grow with the number of creates
/// (found by the soak bench: the owner's rate record held one time per
/// create in the last hour, so with a high `max_creates_per_hour` every
/// create read and wrote a longer one, and the instance's memory grew by
/// 64 KiB every thousand creates).
#[test]
fn a_steady_churn_keeps_the_guest_memory_steady() {
    const WARM_UP: usize = 200;
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), config());
    let mut after_warm_up = 0;
    churn(&plugin, 3000, 5, |round| {
        if round + 1 == WARM_UP {
            after_warm_up = plugin.peak_guest_memory();
        }
    });
    // The owner's rate record: one count per minute, whatever the limit
    // (it held one time per create: 33 KB after these 3,000).
    let rate = store.list_keys("rate/", None, 10).expect("list").keys;
    assert_eq!(rate.len(), 1, "{rate:?}");
    let record = store.get(&rate[0]).expect("get").expect("the record");
    assert!(
        record.value.len() < 200,
        "{} octets: {}",
        record.value.len(),
        String::from_utf8_lossy(&record.value)
    );
    // Linear memory comes in 64 KiB pages; one more page is the
    // allocator's slack, a leak of even 50 octets a round would take two.
    let grown = plugin.peak_guest_memory() - after_warm_up;
    assert!(
        grown <= 65_536,
        "guest linear memory grew by {grown} octets after {WARM_UP} rounds (from {after_warm_up})"
    );
}
