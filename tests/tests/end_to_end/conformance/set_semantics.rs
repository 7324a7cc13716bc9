//! `/set` semantics: creation-id references, willDestroy, atomic updates,
//! erasure of url and keys, what `created` and `updated` report.

use super::*;

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
