//! Delivery of StateChange pushes through the real component —
//! types filter, the push-service answer table (B6), durable retries across
//! restarts, several hosts on one store, headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmap_web_push_host::store::embedded::EmbeddedStore;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{DeliveryReport, PushPlugin};
use jmap_web_push_tests::*;
use serde_json::{json, Value};

fn setup() -> (Gateway, Arc<MemoryStore>, PushPlugin) {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), test_config());
    (gateway, store, plugin)
}

fn fire(plugin: &PushPlugin, user: &str, changes: &[(&str, &str, &str)]) -> DeliveryReport {
    plugin
        .state_changed(&state_change(user, changes))
        .expect("no trap")
        .expect("state change accepted")
}

/// StateChange pushes received on `path`, decrypted.
fn changes_on(gateway: &Gateway, client: &PushClient, path: &str) -> Vec<Value> {
    gateway
        .received_on(path)
        .iter()
        .map(|r| client.decrypt_json(&r.body).expect("decrypts"))
        .filter(|v| v["@type"] == "StateChange")
        .collect()
}

#[test]
fn types_filter_and_null_types_receive_future_types() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &alice,
        "email-only",
        json!(["Email"]),
    );
    verified_subscription(&plugin, &gateway, &client, &alice, "all", Value::Null);

    // "CalendarEvent" is not a configured type: invented after the
    // subscriptions were made.
    let r = fire(
        &plugin,
        "alice",
        &[
            ("a1", "Email", "e1"),
            ("a1", "CalendarEvent", "c1"),
            ("a1", "Mailbox", "m1"),
        ],
    );
    assert_eq!(r.delivered, 2);
    let only = changes_on(&gateway, &client, "email-only");
    assert_eq!(
        only,
        vec![json!({"@type": "StateChange", "changed": {"a1": {"Email": "e1"}}})]
    );
    let all = changes_on(&gateway, &client, "all");
    assert_eq!(
        all,
        vec![
            json!({"@type": "StateChange", "changed": {"a1": {"Email": "e1", "CalendarEvent": "c1", "Mailbox": "m1"}}})
        ]
    );

    // A change of no wanted type sends nothing to email-only.
    fire(&plugin, "alice", &[("a1", "Mailbox", "m2")]);
    assert_eq!(changes_on(&gateway, &client, "email-only").len(), 1);
    assert_eq!(changes_on(&gateway, &client, "all").len(), 2);
}

#[test]
fn unverified_expired_and_foreign_subscriptions_receive_nothing() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    // Unverified: created, verification delivered, code never echoed.
    call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"create": {"u": {"deviceClientId": "u", "url": gateway.url("unverified"), "keys": client.keys_json()}}}),
    )
    .unwrap();
    // Expired: verified, then its expiry moved into the past in the store.
    let expired = verified_subscription(&plugin, &gateway, &client, &alice, "expired", Value::Null);
    let key = format!("sub/{expired}");
    let e = store.get(&key).unwrap().unwrap();
    let mut rec: Value = serde_json::from_slice(&e.value).unwrap();
    rec["expires"] = json!(1_000_000);
    store
        .put(
            &key,
            &serde_json::to_vec(&rec).unwrap(),
            jmap_web_push_host::store::Condition::Any,
        )
        .unwrap();
    // Foreign: bob's subscription.
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("bob", None),
        "bob",
        Value::Null,
    );
    let baseline = gateway.received().len();

    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(r.delivered, 0, "{r:?}");
    assert_eq!(gateway.received().len(), baseline, "nothing sent");
}

#[test]
fn answer_2xx_delivers_and_nothing_stays_pending() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let id = verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "p",
        Value::Null,
    );
    for status in [200, 201, 202, 204] {
        gateway.script("p", [Answer::status(status)]);
        let r = fire(&plugin, "alice", &[("a1", "Email", &format!("s{status}"))]);
        assert_eq!((r.delivered, r.deferred, r.dropped), (1, 0, 0), "{status}");
    }
    assert!(store.get(&format!("pending/{id}")).unwrap().is_none());
    let tick = plugin.tick().unwrap().unwrap();
    assert_eq!(tick.delivery.delivered, 0, "no retry of delivered pushes");
}

#[test]
fn answers_404_and_410_destroy_the_subscription() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let a = verified_subscription(&plugin, &gateway, &client, &alice, "gone404", Value::Null);
    let b = verified_subscription(&plugin, &gateway, &client, &alice, "gone410", Value::Null);
    let c = verified_subscription(&plugin, &gateway, &client, &alice, "fine", Value::Null);
    gateway.script("gone404", [Answer::status(404)]);
    gateway.script("gone410", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!((r.delivered, r.destroyed), (1, 2));
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [a, b, c.clone()]}),
    )
    .unwrap();
    assert_eq!(got["list"].as_array().unwrap().len(), 1);
    assert_eq!(got["list"][0]["id"], c.as_str());
    assert_eq!(got["notFound"].as_array().unwrap().len(), 2);
}

#[test]
fn answer_413_splits_by_account_and_resends_once() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(&plugin, &gateway, &client, &alice, "small", Value::Null);
    gateway.script("small", [Answer::status(413)]);
    let r = fire(
        &plugin,
        "alice",
        &[("a1", "Email", "e1"), ("a2", "Email", "f1")],
    );
    assert_eq!(r.delivered, 2, "{r:?}");
    let pushes = changes_on(&gateway, &client, "small");
    assert_eq!(pushes.len(), 3, "one refused + one per account");
    assert_eq!(pushes[1]["changed"].as_object().unwrap().len(), 1);
    assert_eq!(pushes[2]["changed"].as_object().unwrap().len(), 1);

    // A single-account message still refused is dropped, not retried.
    gateway.script("small", [Answer::status(413)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e2")]);
    assert_eq!((r.delivered, r.dropped, r.deferred), (0, 1, 0));
    assert_eq!(changes_on(&gateway, &client, "small").len(), 4);
}

/// An IMF-fixdate `secs` from now.
fn http_date_in(secs: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let utc = jmap_web_push_guest::utcdate::format(t); // YYYY-MM-DDTHH:MM:SSZ
    let days = t / 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months[utc[5..7].parse::<usize>().unwrap() - 1];
    format!(
        "{weekday}, {} {month} {} {} GMT",
        &utc[8..10],
        &utc[0..4],
        &utc[11..19]
    )
}

fn retry_after_is_honoured(value: String, wait: Duration) {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "slow-down",
        Value::Null,
    );
    gateway.script(
        "slow-down",
        [Answer::status(429).header("Retry-After", &value)],
    );
    let start = Instant::now();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(r.deferred, 1);
    // Ticking before Retry-After sends nothing.
    plugin.tick().unwrap().unwrap();
    assert_eq!(changes_on(&gateway, &client, "slow-down").len(), 1);
    assert!(tick_until(&plugin, wait + Duration::from_secs(3), || {
        changes_on(&gateway, &client, "slow-down").len() == 2
    }));
    assert!(
        start.elapsed() >= wait - Duration::from_millis(1000),
        "sent too early: {:?}",
        start.elapsed()
    );
}

#[test]
fn answer_429_retry_after_seconds() {
    retry_after_is_honoured("2".into(), Duration::from_secs(2));
}

#[test]
fn answer_429_retry_after_http_date() {
    retry_after_is_honoured(http_date_in(2), Duration::from_secs(2));
}

#[test]
fn answer_429_then_three_changes_arrive_as_one_merged_push() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "p",
        Value::Null,
    );
    gateway.script("p", [Answer::status(429).header("Retry-After", "1")]);
    fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    for (t, s) in [("Email", "e2"), ("Mailbox", "m1"), ("Email", "e3")] {
        let r = fire(&plugin, "alice", &[("a1", t, s)]);
        assert_eq!(r.deferred, 1, "merged while waiting");
    }
    assert_eq!(changes_on(&gateway, &client, "p").len(), 1);
    assert!(tick_until(&plugin, Duration::from_secs(4), || changes_on(
        &gateway, &client, "p"
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(300));
    plugin.tick().unwrap().unwrap();
    let pushes = changes_on(&gateway, &client, "p");
    assert_eq!(pushes.len(), 2, "exactly one push after the 429");
    assert_eq!(
        pushes[1]["changed"],
        json!({"a1": {"Email": "e3", "Mailbox": "m1"}})
    );
}

#[test]
fn answer_5xx_and_connection_errors_back_off_and_keep_the_change() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "flaky", Value::Null);
    gateway.script("flaky", [Answer::status(503), Answer::status(500)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(r.deferred, 1);
    assert!(
        store.get(&format!("pending/{id}")).unwrap().is_some(),
        "pending kept in the store"
    );
    let r = fire(&plugin, "alice", &[("a1", "Mailbox", "m1")]);
    assert_eq!(r.deferred, 1, "merged into the pending change, not sent");
    // Backoff: retried by tick (500 again, then 201 by default).
    assert!(tick_until(&plugin, Duration::from_secs(5), || changes_on(
        &gateway, &client, "flaky"
    )
    .len()
        == 3));
    let pushes = changes_on(&gateway, &client, "flaky");
    assert_eq!(
        pushes[2]["changed"],
        json!({"a1": {"Email": "e1", "Mailbox": "m1"}})
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        store.get(&format!("pending/{id}")).unwrap().is_none(),
        "pending cleared after delivery"
    );

    // A connection error (nothing listens on the port) is also deferred.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sub_key = format!("sub/{id}");
    let e = store.get(&sub_key).unwrap().unwrap();
    let mut rec: Value = serde_json::from_slice(&e.value).unwrap();
    rec["url"] = json!(format!("http://127.0.0.1:{dead}/x"));
    store
        .put(
            &sub_key,
            &serde_json::to_vec(&rec).unwrap(),
            jmap_web_push_host::store::Condition::Any,
        )
        .unwrap();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e2")]);
    assert_eq!(r.deferred, 1, "{r:?}");
    assert!(r.details.iter().any(|d| d.reason == "connection"), "{r:?}");
}

#[test]
fn other_4xx_is_not_retried_and_the_subscription_stays() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "p", Value::Null);
    for status in [400, 401, 403, 418, 301] {
        gateway.script("p", [Answer::status(status)]);
        let r = fire(&plugin, "alice", &[("a1", "Email", &format!("e{status}"))]);
        assert_eq!((r.dropped, r.deferred, r.destroyed), (1, 0, 0), "{status}");
    }
    assert!(store.get(&format!("pending/{id}")).unwrap().is_none());
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id]}),
    )
    .unwrap();
    assert_eq!(
        got["list"].as_array().unwrap().len(),
        1,
        "subscription stays"
    );
}

#[test]
fn a_slow_push_service_does_not_delay_the_others() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(&plugin, &gateway, &client, &alice, "slow", Value::Null);
    for i in 0..5 {
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &alice,
            &format!("fast{i}"),
            Value::Null,
        );
    }
    gateway.script(
        "slow",
        [Answer::status(201).delayed(Duration::from_secs(5))],
    );
    let start = Instant::now();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    let total = start.elapsed();
    assert_eq!(r.delivered, 6);
    let latest_fast = (0..5)
        .map(|i| gateway.received_on(&format!("fast{i}")).last().unwrap().at)
        .max()
        .unwrap();
    let fast = latest_fast.duration_since(start);
    println!(
        "fast pushes all arrived after {fast:?}; the call with a 5 s push service took {total:?}"
    );
    assert!(
        fast < Duration::from_secs(1),
        "fast pushes waited for the slow one: {fast:?}"
    );
    assert!(total >= Duration::from_secs(5));
}

#[test]
fn a_restart_between_503_and_the_retry_still_delivers_the_merged_change() {
    let dir = std::env::temp_dir().join(format!(
        "jwp-restart-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let path = dir.join("store.redb");
    let gateway = Gateway::start();
    let client = PushClient::new();
    {
        let store = Arc::new(EmbeddedStore::open(&path).unwrap());
        let plugin = plugin_with(store, test_config());
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &caller("alice", None),
            "p",
            Value::Null,
        );
        gateway.script("p", [Answer::status(503)]);
        assert_eq!(fire(&plugin, "alice", &[("a1", "Email", "e1")]).deferred, 1);
    } // the host goes away: plugin and store handle dropped
    let store = Arc::new(EmbeddedStore::open(&path).unwrap());
    let plugin = plugin_with(store, test_config());
    assert_eq!(
        fire(&plugin, "alice", &[("a1", "Mailbox", "m1")]).deferred,
        1
    );
    assert!(tick_until(&plugin, Duration::from_secs(5), || changes_on(
        &gateway, &client, "p"
    )
    .len()
        == 2));
    assert_eq!(
        changes_on(&gateway, &client, "p")[1]["changed"],
        json!({"a1": {"Email": "e1", "Mailbox": "m1"}})
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_hosts_ticking_on_one_store_deliver_each_pending_push_exactly_once() {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let a = plugin_with(store.clone(), test_config());
    let b = plugin_with(store.clone(), test_config());
    let client = PushClient::new();
    let alice = caller("alice", None);
    let n = 8;
    for i in 0..n {
        verified_subscription(&a, &gateway, &client, &alice, &format!("p{i}"), Value::Null);
        gateway.script(&format!("p{i}"), [Answer::status(503)]);
    }
    assert_eq!(fire(&a, "alice", &[("a1", "Email", "e1")]).deferred, n);
    std::thread::sleep(Duration::from_millis(600));
    std::thread::scope(|s| {
        for plugin in [&a, &b] {
            s.spawn(move || {
                for _ in 0..30 {
                    plugin.tick().unwrap().unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
    });
    for i in 0..n {
        let pushes = changes_on(&gateway, &client, &format!("p{i}"));
        assert_eq!(pushes.len(), 2, "p{i}: the 503 and exactly one retry");
    }
}

#[test]
fn headers_ttl_topic_and_content_type() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(&plugin, &gateway, &client, &alice, "enc", Value::Null);
    // An unencrypted subscription (keys: null) verified by reading the JSON body.
    call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "plain", "url": gateway.url("plain")}}}),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&gateway.received_on("plain")[0].body).unwrap();
    let r = call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"update": {v["pushSubscriptionId"].as_str().unwrap(): {"verificationCode": v["verificationCode"]}}}),
    )
    .unwrap();
    assert!(r["notUpdated"].is_null(), "{r}");

    fire(
        &plugin,
        "alice",
        &[("a1", "Email", "e1"), ("a1", "Mailbox", "m1")],
    );
    fire(
        &plugin,
        "alice",
        &[("a1", "Mailbox", "m2"), ("a1", "Email", "e2")],
    );
    fire(&plugin, "alice", &[("a1", "Email", "e3")]);
    fire(&plugin, "alice", &[("a1", "EmailDelivery", "d1")]);
    let enc = gateway.received_on("enc");
    for p in gateway.received() {
        assert_eq!(p.header("ttl"), Some("86400"), "TTL on every push");
    }
    let topics: Vec<&str> = enc[1..]
        .iter()
        .map(|p| p.header("topic").unwrap())
        .collect();
    for t in &topics {
        assert!(
            t.len() <= 32
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{t}"
        );
    }
    assert_eq!(topics[0], topics[1], "same key set, same topic");
    assert_ne!(topics[0], topics[2], "different key set, different topic");
    assert_eq!(
        enc[1].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(enc[1].header("content-encoding"), Some("aes128gcm"));
    assert_eq!(enc[1].header("urgency"), Some("normal"));
    assert_eq!(
        enc[4].header("urgency"),
        Some("high"),
        "EmailDelivery is urgent"
    );
    let plain = gateway.received_on("plain");
    let last = plain.last().unwrap();
    assert_eq!(
        last.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(last.header("content-encoding"), None);
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(
        body,
        json!({"@type": "StateChange", "changed": {"a1": {"EmailDelivery": "d1"}}})
    );
}

#[test]
fn minimum_interval_merges_changes_inside_it() {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let config = jmap_web_push_host::PluginConfig {
        min_push_interval_secs: 1,
        ..test_config()
    };
    let plugin = plugin_with(store, config);
    let client = PushClient::new();
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "p",
        Value::Null,
    );
    assert_eq!(
        fire(&plugin, "alice", &[("a1", "Email", "e1")]).delivered,
        1
    );
    assert_eq!(fire(&plugin, "alice", &[("a1", "Email", "e2")]).deferred, 1);
    assert_eq!(
        fire(&plugin, "alice", &[("a1", "Mailbox", "m1")]).deferred,
        1
    );
    assert_eq!(changes_on(&gateway, &client, "p").len(), 1);
    assert!(tick_until(&plugin, Duration::from_secs(3), || changes_on(
        &gateway, &client, "p"
    )
    .len()
        == 2));
    assert_eq!(
        changes_on(&gateway, &client, "p")[1]["changed"],
        json!({"a1": {"Email": "e2", "Mailbox": "m1"}})
    );
}

/// A plugin on a fresh memory store that allows 100 subscriptions per
/// owner and fans large events out over `shards` instances.
fn fan_out_plugin(shards: u32) -> jmap_web_push_host::PushPlugin {
    jmap_web_push_host::PushPlugin::builder()
        .config(jmap_web_push_host::PluginConfig {
            max_subscriptions_per_owner: 100,
            max_creates_per_hour: 100,
            ..test_config()
        })
        .store(Arc::new(MemoryStore::new()))
        .fanout_shards(shards)
        .sandbox(jmap_web_push_host::SandboxOptions {
            aot_cache_dir: Some(cache_dir()),
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[test]
fn a_large_fan_out_is_sharded_and_each_subscription_gets_exactly_one_push() {
    let gateway = Gateway::start();
    let plugin = fan_out_plugin(3);
    let client = PushClient::new();
    let alice = caller("alice", None);
    let n = jmap_web_push_host::SHARD_THRESHOLD as usize + 8;
    for i in 0..n {
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &alice,
            &format!("s{i}"),
            Value::Null,
        );
    }
    gateway.script("s0", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!((r.delivered as usize, r.destroyed), (n - 1, 1), "{r:?}");
    let destroyed = r.details.iter().find(|d| d.outcome == "destroyed").unwrap();
    assert_eq!(destroyed.count, 1);
    for i in 0..n {
        assert_eq!(
            changes_on(&gateway, &client, &format!("s{i}")).len(),
            1,
            "s{i}"
        );
    }
}

#[test]
fn a_pipelined_fan_out_maps_every_answer_to_its_subscription() {
    // One instance, more subscriptions than two pipeline pieces: the pushes
    // leave in three `start-batch` pieces through the real HTTP client, and
    // each answer (201, 410, 503) lands on the right subscription. Every
    // subscription has its own receiver keys, so a body encrypted for the
    // wrong one (the key agreements of a piece are batched) fails to
    // decrypt.
    let gateway = Gateway::start();
    let plugin = fan_out_plugin(1);
    let alice = caller("alice", None);
    let n = jmap_web_push_guest::delivery::pipeline_piece(0)
        + jmap_web_push_guest::delivery::pipeline_piece(1)
        + 7;
    let clients: Vec<PushClient> = (0..n).map(|_| PushClient::new()).collect();
    for (i, client) in clients.iter().enumerate() {
        verified_subscription(
            &plugin,
            &gateway,
            client,
            &alice,
            &format!("p{i}"),
            Value::Null,
        );
    }
    gateway.script("p5", [Answer::status(410)]);
    gateway.script("p20", [Answer::status(503)]);
    gateway.script("p36", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(
        (r.delivered as usize, r.destroyed, r.deferred),
        (n - 3, 2, 1),
        "{r:?}"
    );
    for (i, client) in clients.iter().enumerate() {
        let got = changes_on(&gateway, client, &format!("p{i}"));
        assert_eq!(got.len(), 1, "p{i}");
        assert_eq!(got[0]["changed"]["a1"]["Email"], "e1");
    }
    let list = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        serde_json::json!({"ids": null}),
    )
    .unwrap();
    assert_eq!(
        list["list"].as_array().map(Vec::len),
        Some(n - 2),
        "two destroyed"
    );
}
