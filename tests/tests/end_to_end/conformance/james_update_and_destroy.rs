//! Apache James's PushSubscription contract, part three: updates
//! (verificationCode, expires, unknown properties and ids) and destroys.

use super::*;

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
