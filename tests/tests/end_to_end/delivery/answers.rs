//! The push-service answer table (B6): 2xx, 404/410, 413 split, 429 with
//! Retry-After in seconds and as an HTTP-date, 5xx and connection errors,
//! other 4xx.

use super::*;

#[test]
fn answer_2xx_delivers_and_nothing_stays_pending() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let id = verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "p",
        Value::Null,
    );
    for status in [200, 201, 202, 204] {
        gateway.script("p", [Answer::status(status)]);
        let r = fire(&plugin, "alice", &[("a1", "Email", &format!("s{status}"))]);
        assert_eq!((r.delivered, r.deferred, r.dropped), (1, 0, 0), "{status}");
    }
    assert!(store.get(&format!("pending/{id}")).unwrap().is_none());
    let tick = plugin.tick().unwrap().unwrap();
    assert_eq!(tick.delivery.delivered, 0, "no retry of delivered pushes");
}

#[test]
fn answers_404_and_410_destroy_the_subscription() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let a = verified_subscription(&plugin, &gateway, &client, &alice, "gone404", Value::Null);
    let b = verified_subscription(&plugin, &gateway, &client, &alice, "gone410", Value::Null);
    let c = verified_subscription(&plugin, &gateway, &client, &alice, "fine", Value::Null);
    gateway.script("gone404", [Answer::status(404)]);
    gateway.script("gone410", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!((r.delivered, r.destroyed), (1, 2));
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [a, b, c.clone()]}),
    )
    .unwrap();
    assert_eq!(got["list"].as_array().unwrap().len(), 1);
    assert_eq!(got["list"][0]["id"], c.as_str());
    assert_eq!(got["notFound"].as_array().unwrap().len(), 2);
}

#[test]
fn answer_413_splits_by_account_and_resends_once() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(&plugin, &gateway, &client, &alice, "small", Value::Null);
    gateway.script("small", [Answer::status(413)]);
    let r = fire(
        &plugin,
        "alice",
        &[("a1", "Email", "e1"), ("a2", "Email", "f1")],
    );
    assert_eq!(r.delivered, 2, "{r:?}");
    let pushes = changes_on(&gateway, &client, "small");
    assert_eq!(pushes.len(), 3, "one refused + one per account");
    assert_eq!(pushes[1]["changed"].as_object().unwrap().len(), 1);
    assert_eq!(pushes[2]["changed"].as_object().unwrap().len(), 1);

    // A single-account message still refused is dropped, not retried.
    gateway.script("small", [Answer::status(413)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e2")]);
    assert_eq!((r.delivered, r.dropped, r.deferred), (0, 1, 0));
    assert_eq!(changes_on(&gateway, &client, "small").len(), 4);
}

/// An IMF-fixdate `secs` from now.
fn http_date_in(secs: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let utc = jmap_web_push_guest::utcdate::format(t); // YYYY-MM-DDTHH:MM:SSZ
    let days = t / 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months[utc[5..7].parse::<usize>().unwrap() - 1];
    format!(
        "{weekday}, {} {month} {} {} GMT",
        &utc[8..10],
        &utc[0..4],
        &utc[11..19]
    )
}

fn retry_after_is_honoured(value: String, wait: Duration) {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "slow-down",
        Value::Null,
    );
    gateway.script(
        "slow-down",
        [Answer::status(429).header("Retry-After", &value)],
    );
    let start = Instant::now();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(r.deferred, 1);
    // Ticking before Retry-After sends nothing.
    plugin.tick().unwrap().unwrap();
    assert_eq!(changes_on(&gateway, &client, "slow-down").len(), 1);
    assert!(tick_until(&plugin, wait + Duration::from_secs(3), || {
        changes_on(&gateway, &client, "slow-down").len() == 2
    }));
    assert!(
        start.elapsed() >= wait - Duration::from_millis(1000),
        "sent too early: {:?}",
        start.elapsed()
    );
}

#[test]
fn answer_429_retry_after_seconds() {
    retry_after_is_honoured("2".into(), Duration::from_secs(2));
}

#[test]
fn answer_429_retry_after_http_date() {
    retry_after_is_honoured(http_date_in(2), Duration::from_secs(2));
}

#[test]
fn answer_429_then_three_changes_arrive_as_one_merged_push() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    verified_subscription(
        &plugin,
        &gateway,
        &client,
        &caller("alice", None),
        "p",
        Value::Null,
    );
    gateway.script("p", [Answer::status(429).header("Retry-After", "1")]);
    fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    for (t, s) in [("Email", "e2"), ("Mailbox", "m1"), ("Email", "e3")] {
        let r = fire(&plugin, "alice", &[("a1", t, s)]);
        assert_eq!(r.deferred, 1, "merged while waiting");
    }
    assert_eq!(changes_on(&gateway, &client, "p").len(), 1);
    assert!(tick_until(&plugin, Duration::from_secs(4), || changes_on(
        &gateway, &client, "p"
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(300));
    plugin.tick().unwrap().unwrap();
    let pushes = changes_on(&gateway, &client, "p");
    assert_eq!(pushes.len(), 2, "exactly one push after the 429");
    assert_eq!(
        pushes[1]["changed"],
        json!({"a1": {"Email": "e3", "Mailbox": "m1"}})
    );
}

#[test]
fn answer_5xx_and_connection_errors_back_off_and_keep_the_change() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "flaky", Value::Null);
    gateway.script("flaky", [Answer::status(503), Answer::status(500)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(r.deferred, 1);
    assert!(
        store.get(&format!("pending/{id}")).unwrap().is_some(),
        "pending kept in the store"
    );
    let r = fire(&plugin, "alice", &[("a1", "Mailbox", "m1")]);
    assert_eq!(r.deferred, 1, "merged into the pending change, not sent");
    // Backoff: retried by tick (500 again, then 201 by default).
    assert!(tick_until(&plugin, Duration::from_secs(5), || changes_on(
        &gateway, &client, "flaky"
    )
    .len()
        == 3));
    let pushes = changes_on(&gateway, &client, "flaky");
    assert_eq!(
        pushes[2]["changed"],
        json!({"a1": {"Email": "e1", "Mailbox": "m1"}})
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        store.get(&format!("pending/{id}")).unwrap().is_none(),
        "pending cleared after delivery"
    );

    // A connection error (nothing listens on the port) is also deferred.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sub_key = format!("sub/{id}");
    let e = store.get(&sub_key).unwrap().unwrap();
    let mut rec: Value = serde_json::from_slice(&e.value).unwrap();
    rec["url"] = json!(format!("http://127.0.0.1:{dead}/x"));
    store
        .put(
            &sub_key,
            &serde_json::to_vec(&rec).unwrap(),
            jmap_web_push_host::store::Condition::Any,
        )
        .unwrap();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e2")]);
    assert_eq!(r.deferred, 1, "{r:?}");
    assert!(r.details.iter().any(|d| d.reason == "connection"), "{r:?}");
}

#[test]
fn other_4xx_is_not_retried_and_the_subscription_stays() {
    let (gateway, store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    let id = verified_subscription(&plugin, &gateway, &client, &alice, "p", Value::Null);
    for status in [400, 401, 403, 418, 301] {
        gateway.script("p", [Answer::status(status)]);
        let r = fire(&plugin, "alice", &[("a1", "Email", &format!("e{status}"))]);
        assert_eq!((r.dropped, r.deferred, r.destroyed), (1, 0, 0), "{status}");
    }
    assert!(store.get(&format!("pending/{id}")).unwrap().is_none());
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id]}),
    )
    .unwrap();
    assert_eq!(
        got["list"].as_array().unwrap().len(),
        1,
        "subscription stays"
    );
}
