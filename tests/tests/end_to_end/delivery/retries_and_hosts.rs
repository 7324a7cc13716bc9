//! Durable retries: a slow push service does not delay the others, a
//! restart between a 503 and its retry, two hosts ticking on one store.

use super::*;

#[test]
fn a_slow_push_service_does_not_delay_the_others() {
    let (gateway, _store, plugin) = setup();
    let client = PushClient::new();
    let alice = caller("alice", None);
    verified_subscription(&plugin, &gateway, &client, &alice, "slow", Value::Null);
    for i in 0..5 {
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &alice,
            &format!("fast{i}"),
            Value::Null,
        );
    }
    gateway.script(
        "slow",
        [Answer::status(201).delayed(Duration::from_secs(5))],
    );
    let start = Instant::now();
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    let total = start.elapsed();
    assert_eq!(r.delivered, 6);
    let latest_fast = (0..5)
        .map(|i| gateway.received_on(&format!("fast{i}")).last().unwrap().at)
        .max()
        .unwrap();
    let fast = latest_fast.duration_since(start);
    println!(
        "fast pushes all arrived after {fast:?}; the call with a 5 s push service took {total:?}"
    );
    assert!(
        fast < Duration::from_secs(1),
        "fast pushes waited for the slow one: {fast:?}"
    );
    assert!(total >= Duration::from_secs(5));
}

#[test]
fn a_restart_between_503_and_the_retry_still_delivers_the_merged_change() {
    let dir = std::env::temp_dir().join(format!(
        "jwp-restart-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let path = dir.join("store.redb");
    let gateway = Gateway::start();
    let client = PushClient::new();
    {
        let store = Arc::new(EmbeddedStore::open(&path).unwrap());
        let plugin = plugin_with(store, test_config());
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &caller("alice", None),
            "p",
            Value::Null,
        );
        gateway.script("p", [Answer::status(503)]);
        assert_eq!(fire(&plugin, "alice", &[("a1", "Email", "e1")]).deferred, 1);
    } // the host goes away: plugin and store handle dropped
    let store = Arc::new(EmbeddedStore::open(&path).unwrap());
    let plugin = plugin_with(store, test_config());
    assert_eq!(
        fire(&plugin, "alice", &[("a1", "Mailbox", "m1")]).deferred,
        1
    );
    assert!(tick_until(&plugin, Duration::from_secs(5), || changes_on(
        &gateway, &client, "p"
    )
    .len()
        == 2));
    assert_eq!(
        changes_on(&gateway, &client, "p")[1]["changed"],
        json!({"a1": {"Email": "e1", "Mailbox": "m1"}})
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_hosts_ticking_on_one_store_deliver_each_pending_push_exactly_once() {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let a = plugin_with(store.clone(), test_config());
    let b = plugin_with(store.clone(), test_config());
    let client = PushClient::new();
    let alice = caller("alice", None);
    let n = 8;
    for i in 0..n {
        verified_subscription(&a, &gateway, &client, &alice, &format!("p{i}"), Value::Null);
        gateway.script(&format!("p{i}"), [Answer::status(503)]);
    }
    assert_eq!(fire(&a, "alice", &[("a1", "Email", "e1")]).deferred, n);
    std::thread::sleep(Duration::from_millis(600));
    std::thread::scope(|s| {
        for plugin in [&a, &b] {
            s.spawn(move || {
                for _ in 0..30 {
                    plugin.tick().unwrap().unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
    });
    for i in 0..n {
        let pushes = changes_on(&gateway, &client, &format!("p{i}"));
        assert_eq!(pushes.len(), 2, "p{i}: the 503 and exactly one retry");
    }
}
