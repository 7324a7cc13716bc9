//! Apache James's PushSubscription contract, part two: creates (url, keys,
//! expires, types, deviceClientId) and the verification push.

use super::*;

#[test]
fn set_method_should_not_created_when_invalid_url_property() {
    let f = fixture();
    for url in [
        json!("not a url"),
        json!("ftp://push.example.com/x"),
        json!("https://user:pw@push.example.com/x"),
        json!("https://10.0.0.1/push"),
        json!("https://[::ffff:10.0.0.1]/push"),
        json!("https://169.254.169.254/latest"),
        json!(format!("https://push.example.com/{}", "a".repeat(2100))),
        json!("https://push..example.com/x"),
        json!(format!("https://{}.example.com/x", "a".repeat(64))),
        json!(42),
        json!(null),
    ] {
        let obj = json!({"deviceClientId": "d", "url": url});
        assert_rejected_create(&f, obj, "url");
    }
    // Without the test-only setting, plain http and loopback are refused.
    let strict = fixture_with(PluginConfig {
        insecure_test_mode: false,
        ..test_config()
    });
    for url in [
        strict.gateway.url("p1"),
        "http://push.example.com/x".to_string(),
        "https://127.0.0.1/x".to_string(),
    ] {
        let obj = json!({"deviceClientId": "d", "url": url});
        assert_rejected_create(&strict, obj, "url");
    }
}

#[test]
fn every_spelling_of_a_local_name_is_refused_at_create() {
    let strict = fixture_with(PluginConfig {
        insecure_test_mode: false,
        ..test_config()
    });
    for host in [
        "localhost",
        "localhost.",
        "LOCALHOST",
        "LocalHost.",
        "push.localhost",
        "a.b.LOCALHOST.",
        "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}",
        "localhost\u{3002}",
        "loc%61lhost",
    ] {
        let obj = json!({"deviceClientId": "d", "url": format!("https://{host}:8443/push")});
        let r = set(&strict.plugin, &alice(), json!({"create": {"c": obj}}));
        assert_invalid(&r, "notCreated", "c", "url");
        assert!(r["created"].is_null(), "{host}: {r}");
    }
    // A Unicode host name is accepted, and its VAPID audience is the
    // punycode origin the host connects to.
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {"c": {"deviceClientId": "d", "url": "https://p\u{fc}sh.example.invalid/x"}}}),
    );
    // The name does not resolve here: the create is kept for a retry, but
    // never refused as "could not be built".
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

#[test]
fn set_method_should_not_created_when_creation_request_has_verification_code_property() {
    let f = fixture();
    let obj = create_obj(&f, "p1", json!({"verificationCode": "abc"}));
    assert_rejected_create(&f, obj, "verificationCode");
}

#[test]
fn set_method_should_not_created_when_creation_request_has_id_property() {
    let f = fixture();
    let obj = create_obj(&f, "p1", json!({"id": random_id()}));
    assert_rejected_create(&f, obj, "id");
}

#[test]
fn set_method_should_not_created_when_in_valid_expires_property() {
    let f = fixture();
    for bad in [
        json!("tomorrow"),
        json!("2030-13-01T00:00:00Z"),
        json!("2030-01-01T00:00:00+02:00"),
        json!(1_900_000_000),
        json!(utcdate::format(now_secs() - 60)),
    ] {
        let obj = create_obj(&f, "p1", json!({ "expires": bad }));
        assert_rejected_create(&f, obj, "expires");
    }
}

#[test]
fn set_method_should_not_created_when_in_valid_types_property() {
    let f = fixture();
    for bad in [
        json!(["Bo gus"]),
        json!(["9Email"]),
        json!("Email"),
        json!([1]),
        json!(["Email", "Email"]),
    ] {
        let obj = create_obj(&f, "p1", json!({ "types": bad }));
        assert_rejected_create(&f, obj, "types");
    }
}

#[test]
fn set_method_should_not_created_when_device_client_id_exists() {
    let f = fixture();
    let first = create_id(&f, &alice(), "p1", json!({}));
    let before = f.gateway.received().len();
    let obj = json!({"deviceClientId": "device-p1", "url": f.gateway.url("p2")});
    let r = set(&f.plugin, &alice(), json!({"create": {"c": obj}}));
    assert_invalid(&r, "notCreated", "c", "deviceClientId");
    let e = &r["notCreated"]["c"];
    assert!(
        e["existingId"] == json!(first) || e["description"].as_str().unwrap().contains(&first),
        "names the existing id: {e}"
    );
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 1);
    // Another owner may use the same deviceClientId.
    let obj = json!({"deviceClientId": "device-p1", "url": f.gateway.url("p3")});
    let r = set(&f.plugin, &bob(), json!({"create": {"c": obj}}));
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

#[test]
fn set_method_should_accept_valid_expires_property() {
    let f = fixture();
    let expires = in_secs(2 * DAY);
    let r = create(&f, &alice(), "p1", json!({ "expires": expires }));
    let c = &r["created"]["c"];
    let id = c["id"].as_str().unwrap();
    // `expires` is always reported (B3); unchanged here.
    assert_eq!(c["expires"], json!(expires), "{r}");
    assert_eq!(
        get_one(&f, &alice(), id).unwrap()["expires"],
        json!(expires)
    );
}

#[test]
fn set_method_should_created_several_valid_creation_request() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {
            "c1": create_obj(&f, "p1", json!({})),
            "c2": create_obj(&f, "p2", json!({"types": ["Email"]})),
        }}),
    );
    let id1 = r["created"]["c1"]["id"].as_str().expect("c1 created");
    let id2 = r["created"]["c2"]["id"].as_str().expect("c2 created");
    assert_ne!(id1, id2);
    assert!(r["notCreated"].is_null(), "{r}");
    assert_eq!(
        plain(&f.gateway.received_on("p1")[0])["pushSubscriptionId"],
        json!(id1)
    );
    assert_eq!(
        plain(&f.gateway.received_on("p2")[0])["pushSubscriptionId"],
        json!(id2)
    );
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 2);
}

#[test]
fn set_method_should_success_when_mix_case() {
    let f = fixture();
    let r = set(
        &f.plugin,
        &alice(),
        json!({"create": {
            "good": create_obj(&f, "p1", json!({})),
            "bad": create_obj(&f, "p2", json!({"types": ["No pe"]})),
        }}),
    );
    assert!(r["created"]["good"]["id"].is_string(), "{r}");
    assert!(r["created"].get("bad").is_none(), "{r}");
    assert_invalid(&r, "notCreated", "bad", "types");
    assert!(f.gateway.received_on("p2").is_empty());
    assert_eq!(f.gateway.received_on("p1").len(), 1);
}

#[test]
fn set_method_should_reject_invalid_key() {
    let f = fixture();
    let client = PushClient::new();
    let good = client.keys_json();
    let public = client.public_key();
    // SPKI/DER wrapping of the same point (what James accepts).
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(&public);
    let mut compressed = vec![0x02 | (public[64] & 1)];
    compressed.extend_from_slice(&public[1..33]);
    let mut off_curve = public;
    off_curve[64] ^= 1;
    let mut identity = [0u8; 65];
    identity[0] = 0x04;
    let auth = good["auth"].clone();
    let p256dh = good["p256dh"].clone();
    for keys in [
        json!({"p256dh": b64url_encode(&spki), "auth": auth}),
        json!({"p256dh": b64url_encode(&compressed), "auth": auth}),
        json!({"p256dh": b64url_encode(&off_curve), "auth": auth}),
        json!({"p256dh": b64url_encode(&identity), "auth": auth}),
        json!({"p256dh": "not base64 !!", "auth": auth}),
        json!({"p256dh": p256dh, "auth": b64url_encode(&[1u8; 15])}),
        json!({"p256dh": p256dh, "auth": b64url_encode(&[1u8; 32])}),
        json!({"p256dh": p256dh}),
        json!({"p256dh": p256dh, "auth": auth, "extra": "x"}),
        json!("keys"),
    ] {
        let obj = create_obj(&f, "p1", json!({ "keys": keys }));
        assert_rejected_create(&f, obj, "keys");
    }
}

#[test]
fn set_method_should_accept_valid_key() {
    let f = fixture();
    let client = PushClient::new();
    // Raw 65-octet keys as browsers give them, unpadded and padded.
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let got = f.gateway.received_on("p1");
    let v = client.decrypt_json(&got[0].body).expect("decrypts");
    assert_eq!(v["pushSubscriptionId"], json!(id));
    let client2 = PushClient::new();
    let padded = json!({
        "p256dh": format!("{}=", b64url_encode(&client2.public_key())),
        "auth": format!("{}==", b64url_encode(&client2.auth())),
    });
    let id2 = create_id(&f, &alice(), "p2", json!({ "keys": padded }));
    let got = f.gateway.received_on("p2");
    let v = client2.decrypt_json(&got[0].body).expect("decrypts");
    assert_eq!(v["pushSubscriptionId"], json!(id2));
}

#[test]
fn set_method_create_should_call_verification_to_push_server() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let got = f.gateway.received_on("p1");
    assert_eq!(got.len(), 1);
    let v = plain(&got[0]);
    assert_eq!(v["@type"], "PushVerification");
    assert_eq!(v["pushSubscriptionId"], json!(id));
    let code = v["verificationCode"].as_str().unwrap();
    assert!(b64url_decode(code).unwrap().len() >= 16, "128-bit code");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    assert!(got[0].header("ttl").is_some());
    assert!(got[0]
        .header("authorization")
        .unwrap()
        .starts_with("vapid "));
}

#[test]
fn set_method_create_should_not_created_when_call_verification_to_push_server_has_error() {
    let f = fixture();
    for status in [404u16, 410, 400, 401, 403] {
        let path = format!("refuse{status}");
        f.gateway.set_default(&path, Answer::status(status));
        let url = f.gateway.url(&path);
        let r = set(
            &f.plugin,
            &alice(),
            json!({"create": {"c": {"deviceClientId": "same", "url": url}}}),
        );
        assert!(r["created"].is_null(), "{status}: {r}");
        assert_invalid(&r, "notCreated", "c", "url");
        let d = r["notCreated"]["c"]["description"].as_str().unwrap();
        assert!(d.contains(&status.to_string()), "status in {d:?}");
        assert_eq!(f.gateway.received_on(&path).len(), 1, "one verification");
        let sent = plain(&f.gateway.received_on(&path)[0]);
        let id = sent["pushSubscriptionId"].as_str().unwrap();
        assert!(
            store_mentions(&f.store, id).is_empty(),
            "{status}: nothing left for {id}: {:?}",
            store_mentions(&f.store, id)
        );
        assert!(store_mentions(&f.store, &url).is_empty());
    }
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 0);
    // The deviceClientId is free again.
    create_id(&f, &alice(), "ok", json!({"deviceClientId": "same"}));
}

#[test]
fn body_request_to_push_server_should_be_encrypted_when_client_assign_encryption_keys() {
    let f = fixture();
    let client = PushClient::new();
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let got = &f.gateway.received_on("p1")[0];
    assert_eq!(got.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert!(
        serde_json::from_slice::<Value>(&got.body).is_err(),
        "not plaintext"
    );
    let code = record(&f.store, &id).unwrap()["verification_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!String::from_utf8_lossy(&got.body).contains(&code));
    let v = client.decrypt_json(&got.body).expect("decrypts with ece");
    assert_eq!(
        v,
        json!({"@type": "PushVerification", "pushSubscriptionId": id, "verificationCode": code})
    );
    // Someone else's keys cannot read it.
    assert!(PushClient::new().decrypt(&got.body).is_err());
}
