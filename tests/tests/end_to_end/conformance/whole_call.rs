//! `/set` judged on the state after the whole call (RFC 8620 §5.3, B1, B3):
//! replacing a device's subscription in one call, at the quota, by
//! reference, across hosts.

use super::*;

/// The ids of `who`'s subscriptions with this deviceClientId.
pub(super) fn ids_with_device(plugin: &PushPlugin, who: &Caller, dcid: &str) -> Vec<String> {
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
