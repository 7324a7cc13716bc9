//! Lifecycle (B5, B8): expiry, credential revocation and user deletion, the
//! VAPID key and its rotation, and other end-to-end behaviour.

use super::*;

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

pub(super) fn vapid_capability(plugin: &PushPlugin) -> (String, String) {
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
