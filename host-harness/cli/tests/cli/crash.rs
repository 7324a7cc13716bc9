//! Crash safety: `serve` killed with SIGKILL at random moments while a
//! client creates, verifies and destroys subscriptions and the mail server
//! posts events. After every restart, every acknowledged subscription is
//! there, none acknowledged as destroyed comes back, and each verified
//! subscription eventually receives the newest state acknowledged for it.
//!
//! `JWP_CRASH_CYCLES` sets the number of kills per store (default 3, what CI
//! runs; RELIABILITY.md reports a run of 50).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::*;

pub(crate) const TOKEN: &str = "crash-test-token-41c2";
pub(crate) const USER: &str = "carol@example.com";

/// What the client saw acknowledged.
#[derive(Default)]
struct Model {
    /// Subscription id → its push path, created and not destroyed.
    alive: BTreeMap<String, String>,
    /// Acknowledged as destroyed.
    destroyed: BTreeSet<String>,
    /// Acknowledged as verified.
    verified: BTreeSet<String>,
    /// Push path → the newest event state acknowledged while the
    /// subscription there was verified.
    expected: BTreeMap<String, u64>,
    /// Destroys cut short by the kill: either outcome is right.
    uncertain: BTreeSet<String>,
    /// Operations acknowledged, all cycles.
    acked: usize,
}

/// xorshift64: reproducible enough, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cycles() -> usize {
    std::env::var("JWP_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A configuration for [`USER`] with [`TOKEN`] and no subscription limits.
pub(crate) fn config(file: &Path, port: u16, store: &str) {
    let users = format!(
        "[[users]]\nname = \"{USER}\"\ncredentials = [{{ id = \"t\", token_sha256 = \"{}\" }}]\n",
        jmap_web_push::server::auth::token_sha256(TOKEN)
    );
    write_config(
        file,
        port,
        store,
        &format!("max_subscriptions_per_owner = 100000\nmax_creates_per_hour = 1000000\n{users}"),
    );
}

/// POSTs `body` with `token`; the JSON answer, or `None` when the server
/// did not answer with a success (it was killed).
fn post_json(url: String, token: &str, body: Value) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async move {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    })
}

/// One JMAP call's response arguments.
pub(crate) fn call(server: &Serve, method: &str, args: Value) -> Option<Value> {
    let body =
        json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [[method, args, "c"]]});
    let v = post_json(format!("{}/jmap/api", server.base), TOKEN, body)?;
    Some(v["methodResponses"][0][1].clone())
}

/// One StateChange for the user; its delivery result.
pub(crate) fn post_event(server: &Serve, state: u64) -> Option<Value> {
    let body = json!({"type": "StateChange", "username": USER,
                      "changed": {"a1": {"Email": format!("s{state}")}}});
    let v = post_json(format!("{}/events", server.base), &server.admin, body)?;
    Some(v["results"][0].clone())
}

/// Runs operations until the server stops answering.
fn load(
    server: &Serve,
    push: &PushService,
    browser: &Browser,
    model: &Mutex<Model>,
    rng: &mut Rng,
    serial: &mut u64,
) {
    loop {
        *serial += 1;
        let n = *serial;
        match rng.below(100) {
            0..=39 => {
                let path = format!("c{n}");
                let Some(r) = call(
                    server,
                    "PushSubscription/set",
                    json!({"create": {"c": {
                        "deviceClientId": format!("device-{n}"),
                        "url": push.url(&path),
                        "keys": {"p256dh": browser.public, "auth": b64(&browser.auth)},
                    }}}),
                ) else {
                    return;
                };
                let Some(id) = r["created"]["c"]["id"].as_str().map(str::to_string) else {
                    panic!("create refused: {r}");
                };
                {
                    let mut m = model.lock().unwrap();
                    m.alive.insert(id.clone(), path.clone());
                    m.acked += 1;
                }
                let code = browser.open(&wait_for(push, &path, 1))["verificationCode"].clone();
                let Some(r) = call(
                    server,
                    "PushSubscription/set",
                    json!({"update": {id.clone(): {"verificationCode": code}}}),
                ) else {
                    return;
                };
                assert!(r["updated"].get(&id).is_some(), "{r}");
                let mut m = model.lock().unwrap();
                m.verified.insert(id);
                m.acked += 1;
            }
            40..=54 => {
                let victim = {
                    let m = model.lock().unwrap();
                    let ids: Vec<&String> = m.alive.keys().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    ids[rng.below(ids.len() as u64) as usize].clone()
                };
                let Some(r) = call(
                    server,
                    "PushSubscription/set",
                    json!({"destroy": [victim.clone()]}),
                ) else {
                    // Killed during the destroy: it may or may not have
                    // happened; the checks leave this one out.
                    let mut m = model.lock().unwrap();
                    if let Some(p) = m.alive.remove(&victim) {
                        m.expected.remove(&p);
                    }
                    m.verified.remove(&victim);
                    m.uncertain.insert(victim);
                    return;
                };
                assert_eq!(r["destroyed"], json!([victim.clone()]), "{r}");
                let mut m = model.lock().unwrap();
                let path = m.alive.remove(&victim);
                m.verified.remove(&victim);
                if let Some(p) = path {
                    m.expected.remove(&p);
                }
                m.destroyed.insert(victim);
                m.acked += 1;
            }
            _ => {
                // Which subscriptions are verified before the event is sent.
                let targets: Vec<String> = {
                    let m = model.lock().unwrap();
                    m.verified
                        .iter()
                        .filter_map(|id| m.alive.get(id).cloned())
                        .collect()
                };
                let Some(result) = post_event(server, n) else {
                    return;
                };
                assert!(result.get("error").is_none(), "{result}");
                let mut m = model.lock().unwrap();
                for path in targets {
                    m.expected.insert(path, n);
                }
                m.acked += 1;
            }
        }
    }
}

/// Checks the model against a freshly started server.
fn check(server: &Serve, push: &PushService, browser: &Browser, model: &Model) {
    let list = call(
        server,
        "PushSubscription/get",
        json!({"ids": null, "properties": ["id"]}),
    )
    .expect("the restarted server answers");
    let present: BTreeSet<String> = list["list"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    for id in model.alive.keys() {
        assert!(present.contains(id), "acknowledged subscription {id} lost");
    }
    for id in &model.destroyed {
        assert!(
            !present.contains(id),
            "destroyed subscription {id} came back"
        );
    }
    // Every verified subscription gets (at least) its newest acknowledged
    // state; a newer, unacknowledged one may have replaced it.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (path, want) in &model.expected {
        loop {
            let newest = push
                .received_on(path)
                .iter()
                .filter_map(|r| {
                    let v = browser.open(r);
                    v["changed"]["a1"]["Email"]
                        .as_str()
                        .and_then(|s| s.trim_start_matches('s').parse::<u64>().ok())
                })
                .max();
            if newest.is_some_and(|n| n >= *want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: state s{want} never delivered (newest {newest:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn run(store: &str, dir: &Path) -> (usize, usize) {
    let file = dir.join("push.toml");
    let push = PushService::start();
    let browser = Browser::new();
    let model = Mutex::new(Model::default());
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    let mut serial = 0u64;
    let kills = cycles();
    for _ in 0..kills {
        let server = Serve::start_on(&file, &[], |port| config(&file, port, store));
        check(&server, &push, &browser, &model.lock().unwrap());
        let kill_after = Duration::from_millis(100 + rng.below(1400));
        let pid = server.child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        let mut load_rng = Rng(rng.next() | 1);
        load(&server, &push, &browser, &model, &mut load_rng, &mut serial);
        killer.join().unwrap();
        drop(server);
    }
    let server = Serve::start_on(&file, &[], |port| config(&file, port, store));
    let m = model.lock().unwrap();
    check(&server, &push, &browser, &m);
    (kills, m.acked)
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write_on_the_embedded_store() {
    let dir = TempDir::new("crash-embedded");
    let (kills, acked) = run(&embedded(&dir.0), &dir.0);
    eprintln!("embedded store: {kills} kills, {acked} acknowledged operations, all checked");
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write_on_postgres() {
    let Some(pg) = pg_url() else { return };
    let db = Database::create(&pg);
    let dir = TempDir::new("crash-postgres");
    let store = format!("[store]\nkind = \"postgres\"\nurl = \"{}\"", db.url);
    let (kills, acked) = run(&store, &dir.0);
    eprintln!("PostgreSQL store: {kills} kills, {acked} acknowledged operations, all checked");
}
