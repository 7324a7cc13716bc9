//! The event intake and delivery through `serve`: authentication and
//! validation of events, pushes that decrypt, retries after 429 and 503,
//! the metrics gauges.

use super::*;

#[test]
fn event_intake_auth_validation_and_delivery() {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    // Create and verify through the API.
    let (_, v, _) = s.api(
        Some(&basic()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/set", {"create": {"k": {
            "deviceClientId": "d", "url": gateway.url("p"), "keys": client.keys_json()}}}, "0"]]})
        .to_string(),
    );
    let id = v["methodResponses"][0][1]["created"]["k"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = client
        .decrypt_json(&gateway.received_on("p")[0].body)
        .unwrap()["verificationCode"]
        .clone();
    s.api(
        Some(&basic()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/set", {"update": {id.clone(): {"verificationCode": code}}}, "0"]]})
            .to_string(),
    );

    let event = json!({"type": "StateChange", "username": "alice@example.com", "changed": {"a1": {"Email": "s9"}}}).to_string();
    assert_eq!(s.event(None, &event).0, 401);
    assert_eq!(s.event(Some("Bearer nope"), &event).0, 401);
    let admin = format!("Bearer {ADMIN}");
    for (bad, needle) in [
        ("{", "not I-JSON"),
        (
            r#"{"type":"UserDeleted","username":"a","username":"b"}"#,
            "given twice",
        ),
        (r#"{"username":"a"}"#, "type"),
        (r#"{"type":"StateChange"}"#, "username"),
        (
            r#"{"type":"StateChange","username":"a","changed":{"a1":{"Email":5}}}"#,
            "changed.a1.Email",
        ),
        (r#"{"type":"Bogus","username":"a"}"#, "Bogus"),
        (
            r#"{"type":"CredentialRevoked","username":"a"}"#,
            "credentialId",
        ),
    ] {
        let (status, v) = s.event(Some(&admin), bad);
        assert_eq!(status, 400, "{bad}");
        assert!(v["detail"].as_str().unwrap().contains(needle), "{bad}: {v}");
    }
    let (status, v) = s.event(Some(&admin), &event);
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["delivered"], 1);
    let push = gateway.received_on("p").last().cloned().unwrap();
    assert_eq!(
        client.decrypt_json(&push.body).unwrap()["changed"]["a1"]["Email"],
        "s9"
    );

    let metrics = s
        .http
        .get(format!("{}/metrics", s.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("jmap_push_pushes_total{outcome=\"delivered\",reason=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("jmap_push_subscriptions 1"), "{metrics}");
    // One verification and one StateChange, each timed on its own.
    assert!(
        metrics.contains("jmap_push_gateway_requests_total{result=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jmap_push_gateway_latency_seconds_count 2"),
        "{metrics}"
    );

    let (status, v) = s.event(
        Some(&admin),
        &json!([{"type": "CredentialRevoked", "username": "alice@example.com", "credentialId": "laptop"}]).to_string(),
    );
    assert_eq!(
        (status, v["results"][0]["destroyed"].clone()),
        (200, json!(1))
    );
}

#[test]
fn a_client_replaces_its_keys_in_one_call_and_pushes_decrypt_with_the_new_keys_only() {
    let s = start(false);
    let gateway = Gateway::start();
    let old_client = PushClient::new();
    let old = verified_over_http(&s, &gateway, &old_client, "old", "phone");
    // One /set: destroy the old subscription, create the new one with the
    // same deviceClientId and new keys (how browsers re-subscribe).
    let new_client = PushClient::new();
    let r = s.call(
        "PushSubscription/set",
        json!({"destroy": [old.clone()],
               "create": {"n": {"deviceClientId": "phone", "url": gateway.url("new"),
                                "keys": new_client.keys_json()}}}),
    );
    let new = r["created"]["n"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("replacement not created: {r}"))
        .to_string();
    assert_eq!(r["destroyed"], json!([old]), "{r}");
    let verification = &gateway.received_on("new")[0];
    assert!(
        old_client.decrypt(&verification.body).is_err(),
        "sealed for the old keys"
    );
    let code = new_client.decrypt_json(&verification.body).unwrap()["verificationCode"].clone();
    let r = s.call(
        "PushSubscription/set",
        json!({"update": {new.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&new).is_some(), "{r}");
    let list = s.call("PushSubscription/get", json!({"ids": null}))["list"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], json!(new));

    assert_eq!(post_state_change(&s, "s7")["delivered"], 1);
    assert_eq!(gateway.received_on("old").len(), 1, "only its verification");
    let push = gateway.received_on("new").last().cloned().unwrap();
    assert!(old_client.decrypt(&push.body).is_err());
    assert_eq!(
        new_client.decrypt_json(&push.body).unwrap()["changed"]["a1"]["Email"],
        "s7"
    );
}

/// A verified subscription whose push service answers the first
/// StateChange (state `s1`) with `answer`; `meanwhile` more states follow
/// at once. Returns how long after the first event the retry reached the
/// push service, and the Email state it carried.
fn retry_after_answer(answer: Answer, meanwhile: &[&str]) -> (std::time::Duration, Value) {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_over_http(&s, &gateway, &client, "p", "phone");
    // Let the tick task settle into its long sleep (nothing is due).
    std::thread::sleep(std::time::Duration::from_millis(600));
    gateway.script("p", [answer]);
    let t0 = std::time::Instant::now();
    assert_eq!(post_state_change(&s, "s1")["deferred"], 1);
    for state in meanwhile {
        post_state_change(&s, state);
    }
    // verification + the refused push + the retry
    wait_for_pushes(&gateway, "p", 3, std::time::Duration::from_secs(10));
    let got = gateway.received_on("p");
    assert_eq!(got.len(), 3, "the retry came");
    let m = client.decrypt_json(&got[2].body).unwrap();
    (
        got[2].at.duration_since(t0),
        m["changed"]["a1"]["Email"].clone(),
    )
}

#[test]
fn a_429_with_retry_after_is_retried_on_time_with_the_newer_state() {
    // A newer state arrives meanwhile: merged, not sent before Retry-After.
    let (after, state) =
        retry_after_answer(Answer::status(429).header("Retry-After", "2"), &["s2"]);
    assert!(
        after >= std::time::Duration::from_millis(1900)
            && after <= std::time::Duration::from_secs(4),
        "retried after {after:?}, want 2-4 s"
    );
    assert_eq!(state, "s2");
}

#[test]
fn a_503_is_retried_within_the_configured_backoff() {
    let (after, state) = retry_after_answer(Answer::status(503), &[]);
    // retry_initial_ms is 200 in the test configuration: the first retry
    // is due 100-200 ms later; allow for the tick and the machine.
    assert!(
        after <= std::time::Duration::from_millis(1500),
        "retried after {after:?}"
    );
    assert_eq!(state, "s1");
}

/// The `jmap_push_subscriptions` gauge of `/metrics`.
fn subscriptions_gauge(s: &TestServer) -> u64 {
    s.gauge("jmap_push_subscriptions")
}

#[test]
fn metrics_store_gauges_are_counted_at_most_once_per_interval() {
    let gateway = Gateway::start();
    let client = PushClient::new();
    // Counted on every scrape: a new subscription shows at once.
    let fresh = TestServer::start_configured(|s| s.server.metrics_count_interval_secs = 0);
    assert_eq!(subscriptions_gauge(&fresh), 0);
    verified_over_http(&fresh, &gateway, &client, "fresh", "phone");
    assert_eq!(subscriptions_gauge(&fresh), 1);
    // Counted at most once an hour: scrapes within the hour repeat the
    // first count instead of asking the store again.
    let cached = TestServer::start_configured(|s| s.server.metrics_count_interval_secs = 3600);
    assert_eq!(subscriptions_gauge(&cached), 0);
    verified_over_http(&cached, &gateway, &client, "cached", "phone");
    assert_eq!(subscriptions_gauge(&cached), 0);
}
