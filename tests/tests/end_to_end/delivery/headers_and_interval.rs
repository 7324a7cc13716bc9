//! What a push looks like (TTL, Topic, Content-Type) and the minimum
//! interval between pushes.

use super::*;

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
