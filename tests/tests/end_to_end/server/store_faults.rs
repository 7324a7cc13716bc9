//! The store rows of the fault matrix, end to end through `serve`: the
//! store unavailable for some seconds (injected, and a real PostgreSQL
//! outage through a TCP front), a conflict on every conditional write,
//! values larger than the store accepts. For every case:
//!
//! - no subscription is lost;
//! - no change is lost: an event the store cannot take is answered 503
//!   and, sent again as a mail server does, delivered exactly once;
//! - nothing stays pending;
//! - JMAP keeps answering meanwhile (with a method error where the store
//!   is needed), in under 2 s.
//!
//! RELIABILITY.md reports the table.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmap_web_push::gateway::{Answer, Gateway};
use jmap_web_push::settings::StoreKind;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_tests::faulty_store::FaultyStore;
use jmap_web_push_tests::{PushClient, TestServer};
use serde_json::{json, Value};

use super::faulty_front::FaultyFront;
use super::{verified_at, ADMIN};

fn event(state: &str) -> String {
    json!({"type": "StateChange", "username": TestServer::USER,
           "changed": {"a1": {"Email": state}}})
    .to_string()
}

/// Posts `body` the way a mail server does: again after `Retry-After`
/// while it is answered 503, for at most 60 s. Returns the number of 503
/// answers and the final answer.
fn post_until_taken(s: &TestServer, body: &str) -> (usize, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        let (status, v) = s.event(Some(&format!("Bearer {ADMIN}")), body);
        match status {
            200 => return (refused, v),
            503 => {
                assert!(v["notTaken"].as_u64() >= Some(1), "{v}");
                refused += 1;
            }
            other => panic!("event answered {other}: {v}"),
        }
        assert!(Instant::now() < deadline, "never taken: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How many pushes on `path` after its verification carry Email state
/// `state` (answered or not).
fn deliveries_of(gateway: &Gateway, client: &PushClient, path: &str, state: &str) -> usize {
    gateway
        .received_on(path)
        .iter()
        .skip(1)
        .filter(|p| {
            client
                .decrypt_json(&p.body)
                .is_ok_and(|v| v["changed"]["a1"]["Email"] == state)
        })
        .count()
}

/// A JMAP request answers within 2 s: its method responses, or, when the
/// store is out, the request-level `serverUnavailable` (503) at once.
fn assert_jmap_answers(s: &TestServer) {
    let t = Instant::now();
    let body = json!({"using": ["urn:ietf:params:jmap:core"],
                      "methodCalls": [["PushSubscription/get", {"ids": null}, "0"]]})
    .to_string();
    let (status, v, _) = s.api(Some(&TestServer::basic()), &body);
    match status {
        200 => assert!(v["methodResponses"][0][0].is_string(), "{v}"),
        503 => assert_eq!(
            v["type"], "urn:ietf:params:jmap:error:serverUnavailable",
            "{v}"
        ),
        other => panic!("JMAP answered {other}: {v}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

/// The number of subscriptions `PushSubscription/get` lists.
fn listed(s: &TestServer) -> usize {
    s.call("PushSubscription/get", json!({"ids": null}))["list"]
        .as_array()
        .map_or(0, Vec::len)
}

fn pending(s: &TestServer) -> u64 {
    s.gauge("jmap_push_pending_deliveries")
}

/// Waits until nothing is pending (the tick task sends what was deferred).
fn settle(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending(s) > 0 {
        assert!(Instant::now() < deadline, "still pending");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_store_unavailable_for_some_seconds_refuses_events_with_503_and_loses_nothing() {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let s = TestServer::start_on_store(|_| {}, store.clone());
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_at(&s, &gateway, &gateway.url("p"), &client, "p", "phone");

    store.unavailable.store(true, Ordering::SeqCst);
    let (status, v) = s.event(Some(&format!("Bearer {ADMIN}")), &event("s1"));
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["notTaken"], 1, "{v}");
    assert_jmap_answers(&s);
    let restorer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            store.unavailable.store(false, Ordering::SeqCst);
        })
    };
    let (refused, v) = post_until_taken(&s, &event("s1"));
    restorer.join().expect("restorer");
    assert!(refused >= 1, "the outage was seen: {v}");
    settle(&s);
    assert_eq!(deliveries_of(&gateway, &client, "p", "s1"), 1);
    assert_eq!(listed(&s), 1);
}

#[test]
fn a_postgresql_outage_refuses_events_with_503_and_loses_nothing() {
    let Some(server_url) = crate::store_contract::pg_url() else {
        return;
    };
    let db = Database::create(&server_url);
    let front = FaultyFront::start(db.addr);
    // The server's user and password, through the front, on the new
    // database.
    // (`Config::host` adds a host, so a new configuration.)
    let mut through_front = postgres::Config::new();
    through_front
        .user(db.config.get_user().unwrap_or("postgres"))
        .host("127.0.0.1")
        .port(front.port())
        .dbname(&db.name);
    if let Some(password) = db.config.get_password() {
        through_front.password(password);
    }
    let url = pg_url_of(&through_front);
    let s = TestServer::start_configured(|settings| {
        settings.store.kind = StoreKind::Postgres;
        settings.store.url = Some(url);
    });
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_at(&s, &gateway, &gateway.url("p"), &client, "p", "phone");

    front.cut();
    let t = Instant::now();
    let (status, v) = s.event(Some(&format!("Bearer {ADMIN}")), &event("s1"));
    assert_eq!(status, 503, "{v}");
    eprintln!("refused after {:?}", t.elapsed());
    assert_jmap_answers(&s);
    let restorer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        front.restore();
        front
    });
    let (refused, _) = post_until_taken(&s, &event("s1"));
    let _front = restorer.join().expect("restorer");
    assert!(refused >= 1);
    settle(&s);
    assert_eq!(deliveries_of(&gateway, &client, "p", "s1"), 1);
    assert_eq!(listed(&s), 1);
}

#[test]
fn a_conflict_on_every_write_refuses_what_it_cannot_keep_and_loses_nothing() {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let s = TestServer::start_on_store(|_| {}, store.clone());
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_at(&s, &gateway, &gateway.url("p"), &client, "p", "phone");

    store.conflict_writes.store(true, Ordering::SeqCst);
    // A create cannot reserve its records: refused for this object only.
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "tablet", "url": gateway.url("q"),
                                "keys": client.keys_json()}}}),
    );
    assert_eq!(r["notCreated"]["c"]["type"], "serverFail", "{r}");
    // The push service refuses the first push: the owed change cannot be
    // kept, so the event is not taken.
    gateway.script("p", [Answer::status(503)]);
    let (status, v) = s.event(Some(&format!("Bearer {ADMIN}")), &event("s1"));
    assert_eq!(status, 503, "{v}");
    assert_jmap_answers(&s);
    store.conflict_writes.store(false, Ordering::SeqCst);
    let (_, v) = post_until_taken(&s, &event("s1"));
    assert_eq!(v["results"][0]["delivered"], 1, "{v}");
    settle(&s);
    // The push the service refused with 503, then the one it took.
    assert_eq!(deliveries_of(&gateway, &client, "p", "s1"), 2);
    assert_eq!(listed(&s), 1, "the refused create left nothing behind");
    // Nothing half-created: the same device can be created now.
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "tablet", "url": gateway.url("q"),
                                "keys": client.keys_json()}}}),
    );
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

#[test]
fn a_value_larger_than_the_store_accepts_is_refused_as_too_large_and_loses_nothing() {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let s = TestServer::start_on_store(|_| {}, store.clone());
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_at(&s, &gateway, &gateway.url("p"), &client, "p", "phone");

    // The stored subscription's record fits; one naming 40 long type
    // names does not.
    store.max_value.store(1_000, Ordering::SeqCst);
    let types: Vec<String> = (0..40)
        .map(|i| format!("Type{i}{}", "x".repeat(30)))
        .collect();
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "tablet", "url": gateway.url("q"),
                                "keys": client.keys_json(), "types": types}}}),
    );
    assert_eq!(r["notCreated"]["c"]["type"], "tooLarge", "{r}");
    assert_jmap_answers(&s);
    // Events whose records fit are unaffected.
    let (_, v) = post_until_taken(&s, &event("s1"));
    assert_eq!(v["results"][0]["delivered"], 1, "{v}");
    settle(&s);
    assert_eq!(deliveries_of(&gateway, &client, "p", "s1"), 1);
    store.max_value.store(usize::MAX, Ordering::SeqCst);
    assert_eq!(listed(&s), 1, "the refused create left nothing behind");
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "tablet", "url": gateway.url("q"),
                                "keys": client.keys_json(), "types": types}}}),
    );
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
}

/// `postgres://user[:password]@host:port/dbname` of a configuration with
/// one TCP host.
fn pg_url_of(config: &postgres::Config) -> String {
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{db}")
}

/// A database of its own on the test PostgreSQL server, dropped on drop.
struct Database {
    admin_url: String,
    /// The server's configuration (user, password, host, port).
    config: postgres::Config,
    name: String,
    addr: std::net::SocketAddr,
}

impl Database {
    fn create(server_url: &str) -> Database {
        let name = format!(
            "jwp_faults_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0)
        );
        let config: postgres::Config = server_url.parse().expect("a PostgreSQL URL");
        let mut client = config.connect(postgres::NoTls).expect("test PostgreSQL");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            other => panic!("the test server must be reached over TCP, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut a| a.next())
            .expect("the server's address");
        Database {
            admin_url: server_url.to_owned(),
            config,
            name,
            addr,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
