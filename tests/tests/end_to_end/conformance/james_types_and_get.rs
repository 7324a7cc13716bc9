//! Apache James's PushSubscription contract, part one: `types` on create
//! and update, and `PushSubscription/get`.

use super::*;

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
