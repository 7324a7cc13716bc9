//! Who receives a StateChange: the types filter (null types receive future
//! types), and nothing for unverified, expired or foreign subscriptions.

use super::*;

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
