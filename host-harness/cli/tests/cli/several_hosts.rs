//! Several `serve` processes on one PostgreSQL database: subscriptions
//! created on one host are verified on another, events go to all three at
//! once, and the push service counts what it receives. Each (subscription,
//! state) is pushed exactly once. Then one host is killed with SIGKILL in
//! the middle of a fan-out; the event, sent again to another host (as a
//! mail server does when its POST got no answer), reaches every
//! subscription: nothing is lost, and what the killed host had already
//! sent goes out a second time (at-least-once across a crash).
//!
//! RELIABILITY.md reports the figures this test prints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jmap_web_push::gateway::Answer;
use serde_json::json;

use super::crash::{call, config, post_event};
use super::support::*;

const HOSTS: usize = 3;
const SUBSCRIPTIONS: usize = 24;
const EVENTS_PER_HOST: u64 = 10;

/// The Email states each path received after its verification, counted.
fn states_received(push: &PushService, browser: &Browser, path: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for r in push.received_on(path).iter().skip(1) {
        let v = browser.open(r);
        if let Some(n) = v["changed"]["a1"]["Email"]
            .as_str()
            .and_then(|s| s.trim_start_matches('s').parse::<u64>().ok())
        {
            *seen.entry(n).or_default() += 1;
        }
    }
    seen
}

#[test]
fn three_hosts_on_one_postgres_push_each_state_once_and_a_host_killed_mid_fan_out_loses_nothing() {
    let Some(pg) = pg_url() else { return };
    let db = Database::create(&pg);
    let dir = TempDir::new("several-hosts");
    let store = format!("[store]\nkind = \"postgres\"\nurl = \"{}\"", db.url);
    let push = PushService::start();
    let browser = Browser::new();
    let mut hosts: Vec<Option<Serve>> = (0..HOSTS)
        .map(|i| {
            let file = dir.0.join(format!("host{i}.toml"));
            Some(Serve::start_on(&file, &[], |port| {
                config(&file, port, &store)
            }))
        })
        .collect();
    let host = |i: usize| hosts[i].as_ref().expect("host running");

    // Created on one host, verified on the next.
    let mut paths = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let path = format!("h{i}");
        let r = call(
            host(i % HOSTS),
            "PushSubscription/set",
            json!({"create": {"c": {
                "deviceClientId": format!("device-{i}"),
                "url": push.url(&path),
                "keys": {"p256dh": browser.public, "auth": b64(&browser.auth)},
            }}}),
        )
        .expect("create answered");
        let id = r["created"]["c"]["id"]
            .as_str()
            .expect("created")
            .to_string();
        let code = browser.open(&wait_for(&push, &path, 1))["verificationCode"].clone();
        let r = call(
            host((i + 1) % HOSTS),
            "PushSubscription/set",
            json!({"update": {id.clone(): {"verificationCode": code}}}),
        )
        .expect("verify answered");
        assert!(r["updated"].get(&id).is_some(), "{r}");
        paths.push(path);
    }

    // Events to all three hosts at once.
    let next_state = AtomicU64::new(1);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..HOSTS {
            let (server, next_state) = (host(i), &next_state);
            scope.spawn(move || {
                for _ in 0..EVENTS_PER_HOST {
                    let state = next_state.fetch_add(1, Ordering::SeqCst);
                    let result = post_event(server, state).expect("event answered");
                    assert_eq!(result["delivered"], SUBSCRIPTIONS, "{result}");
                }
            });
        }
    });
    let took = started.elapsed();
    let events = HOSTS as u64 * EVENTS_PER_HOST;
    for path in &paths {
        let seen = states_received(&push, &browser, path);
        for state in 1..=events {
            assert_eq!(
                seen.get(&state).copied().unwrap_or(0),
                1,
                "{path}: state s{state} pushed {:?} times",
                seen.get(&state)
            );
        }
    }
    eprintln!(
        "{HOSTS} hosts: {events} events to {SUBSCRIPTIONS} subscriptions, {} pushes, each \
         (subscription, state) exactly once, in {took:?}",
        events as usize * SUBSCRIPTIONS
    );

    // Host 0 killed in the middle of a fan-out (the push service answers
    // after 400 ms, so the fan-out is still under way 150 ms in).
    for path in &paths {
        push.set_default(
            path,
            Answer::status(201).delayed(Duration::from_millis(400)),
        );
    }
    let state = 1_000;
    let pid = host(0).child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    assert!(
        post_event(host(0), state).is_none(),
        "the killed host did not answer"
    );
    killer.join().expect("killer");
    hosts[0] = None;
    let sent_before = paths
        .iter()
        .map(|p| {
            states_received(&push, &browser, p)
                .get(&state)
                .copied()
                .unwrap_or(0)
        })
        .sum::<usize>();
    // The mail server sends it again, to another host.
    let result = post_event(hosts[1].as_ref().expect("host 1"), state).expect("answered");
    assert!(result.get("error").is_none(), "{result}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<&String> = paths
            .iter()
            .filter(|p| !states_received(&push, &browser, p).contains_key(&state))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered to {missing:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = paths
        .iter()
        .map(|p| {
            states_received(&push, &browser, p)
                .get(&state)
                .copied()
                .unwrap_or(0)
        })
        .sum::<usize>();
    let listed = call(
        hosts[2].as_ref().expect("host 2"),
        "PushSubscription/get",
        json!({"ids": null, "properties": ["id"]}),
    )
    .expect("a live host answers")["list"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(listed, SUBSCRIPTIONS, "no subscription lost");
    assert!(
        total - SUBSCRIPTIONS <= sent_before,
        "only what the killed host sent goes out twice"
    );
    eprintln!(
        "host killed mid-fan-out: {sent_before} of {SUBSCRIPTIONS} pushes sent before the kill; \
         after the event was sent again: all {SUBSCRIPTIONS} reached, {} duplicates, 0 lost",
        total - SUBSCRIPTIONS
    );
}
