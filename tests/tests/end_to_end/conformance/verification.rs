//! The verification push (B4): retries, Retry-After, refusal on resend,
//! nothing else sent before verification.

use super::*;

#[test]
fn verification_is_retried_after_503() {
    let f = fixture();
    let client = PushClient::new();
    f.gateway.script("p1", [Answer::status(503)]);
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let first = f.gateway.received_on("p1");
    assert_eq!(first.len(), 1);
    let v1 = client.decrypt_json(&first[0].body).unwrap();
    let sent = tick_until(&f.plugin, Duration::from_secs(3), || {
        f.gateway.received_on("p1").len() >= 2
    });
    assert!(sent, "verification re-sent");
    let got = f.gateway.received_on("p1");
    let v2 = client.decrypt_json(&got[1].body).unwrap();
    assert_eq!(v2, v1, "same code re-sent");
    assert_eq!(v2["pushSubscriptionId"], json!(id));
    // Delivered now: no third attempt.
    for _ in 0..5 {
        f.plugin.tick().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(f.gateway.received_on("p1").len(), 2);
    // And the code verifies.
    let r = set(
        &f.plugin,
        &alice(),
        json!({"update": {id.clone(): {"verificationCode": v2["verificationCode"]}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
}

#[test]
fn verification_429_retry_after_is_honoured() {
    let f = fixture();
    f.gateway
        .script("p1", [Answer::status(429).header("retry-after", "2")]);
    let start = now_ms();
    create_id(&f, &alice(), "p1", json!({}));
    let sent = tick_until(&f.plugin, Duration::from_secs(4), || {
        f.gateway.received_on("p1").len() >= 2
    });
    assert!(sent, "verification re-sent after Retry-After");
    let got = f.gateway.received_on("p1");
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "not before Retry-After: {gap:?}"
    );
    assert!(now_ms() - start >= 2000);
    assert_eq!(last_code_plain(&f, "p1"), {
        let v = plain(&got[0]);
        v["verificationCode"].as_str().unwrap().to_string()
    });
}

#[test]
fn verification_refused_on_resend_destroys_the_subscription() {
    let f = fixture();
    f.gateway
        .script("p1", [Answer::status(503), Answer::status(410)]);
    let id = create_id(&f, &alice(), "p1", json!({"deviceClientId": "phone"}));
    assert!(record(&f.store, &id).is_some());
    let gone = tick_until(&f.plugin, Duration::from_secs(3), || {
        record(&f.store, &id).is_none()
    });
    assert!(gone, "destroyed after the 410");
    assert_eq!(f.gateway.received_on("p1").len(), 2);
    assert_eq!(get_list(&f, &alice(), Value::Null).len(), 0);
    assert!(store_mentions(&f.store, &f.gateway.url("p1")).is_empty());
    // The deviceClientId is free again.
    create_id(&f, &alice(), "p2", json!({"deviceClientId": "phone"}));
}

#[test]
fn nothing_but_verification_is_sent_to_an_unverified_subscription() {
    let f = fixture();
    let client = PushClient::new();
    let id = create_id(&f, &alice(), "p1", json!({"keys": client.keys_json()}));
    let v = client
        .decrypt_json(&f.gateway.received_on("p1")[0].body)
        .unwrap();
    let report = f
        .plugin
        .state_changed(&state_change("alice", &[("a1", "Email", "s1")]))
        .unwrap()
        .unwrap();
    assert_eq!(report.delivered + report.deferred, 0);
    for _ in 0..3 {
        f.plugin.tick().unwrap().unwrap();
    }
    assert_eq!(
        f.gateway.received_on("p1").len(),
        1,
        "nothing but the verification"
    );

    set(
        &f.plugin,
        &alice(),
        json!({"update": {id: {"verificationCode": v["verificationCode"]}}}),
    );
    let report = f
        .plugin
        .state_changed(&state_change("alice", &[("a1", "Mailbox", "s2")]))
        .unwrap()
        .unwrap();
    assert_eq!(report.delivered, 1);
    let got = f.gateway.received_on("p1");
    assert_eq!(got.len(), 2);
    let m = client.decrypt_json(&got[1].body).unwrap();
    // The change from before verification was not queued for it.
    assert_eq!(
        m,
        json!({"@type": "StateChange", "changed": {"a1": {"Mailbox": "s2"}}})
    );
}
