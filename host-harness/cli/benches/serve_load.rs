//! End-to-end load through `serve`: events posted to `POST /events` by
//! several clients, 10 verified subscriptions per user (10,000 over 1,000
//! users) on the embedded store, every push encrypted, VAPID-signed and
//! sent over loopback HTTP to a push service running on its own core.
//!
//! Reports:
//! - saturation: events/s and pushes/s with 16 clients posting back to back;
//! - at half that rate (events sent on a fixed schedule): p50 and p99 of the
//!   time from an event's arrival to its answer, which `serve` gives once
//!   every push of the event has been answered;
//! - the reference: one sandboxed encryption, measured in the same run, and
//!   the goal `0.7 x cores for serve x encryptions/s`.
//!
//! Run: `cargo bench -p jmap-web-push --bench serve_load`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{keys, pin_to_cpus, populate_into, Instant201};
use jmap_web_push::gateway::Gateway;
use jmap_web_push::server;
use jmap_web_push::settings::{Settings, StoreKind};
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::{AccountChanges, PluginConfig, PushPlugin, StateChange, TypeState};

const ADMIN: &str = "bench-admin";
const USERS: usize = 1_000;
const PER_USER: usize = 10;
const CLIENTS: usize = 16;

fn plugin_config() -> PluginConfig {
    PluginConfig {
        insecure_test_mode: true,
        vapid_contact: Some("mailto:bench@example.com".into()),
        ..PluginConfig::default()
    }
}

/// One sandboxed encryption, in seconds: a 1,000-subscription fan-out on
/// one instance with keys minus the same without keys, no network.
fn sandboxed_encryption() -> f64 {
    let k = keys();
    let store = Arc::new(MemoryStore::new());
    populate_into(&*store, 1_000, 1, "keyed", "http://127.0.0.1:9/k", Some(&k));
    populate_into(&*store, 1_000, 1, "plain", "http://127.0.0.1:9/p", None);
    let plugin = PushPlugin::builder()
        .config(plugin_config())
        .store(store)
        .http_client(Arc::new(Instant201))
        .fanout_shards(1)
        .build()
        .expect("plugin");
    let run = |user: &str, i: usize| {
        let t = Instant::now();
        let r = plugin
            .state_changed(&StateChange {
                username: user.into(),
                changed: vec![AccountChanges {
                    account_id: "a1".into(),
                    changes: vec![TypeState {
                        type_name: "Email".into(),
                        state: format!("r{i}"),
                    }],
                }],
            })
            .expect("no trap")
            .expect("delivered");
        assert_eq!(r.delivered, 1_000);
        t.elapsed().as_secs_f64()
    };
    let mut per_push = Vec::new();
    for i in 0..7 {
        let keyed = run("keyed0", i);
        let plain = run("plain0", i);
        per_push.push((keyed - plain) / 1_000.0);
    }
    per_push.sort_by(|a, b| a.total_cmp(b));
    per_push[per_push.len() / 2]
}

fn event(user: usize, state: u64) -> String {
    format!(
        r#"{{"type":"StateChange","username":"u{user}","changed":{{"a1":{{"Email":"s{state}"}}}}}}"#
    )
}

/// Posts one event; returns its latency.
async fn post(client: &reqwest::Client, url: &str, body: String) -> Duration {
    let t = Instant::now();
    let r = client
        .post(url)
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .expect("POST /events");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON");
    assert_eq!(
        v["results"][0]["delivered"].as_u64(),
        Some(PER_USER as u64),
        "{v}"
    );
    t.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What one configuration measured.
struct Load {
    saturation: f64,
    half_rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `serve` pinned to `serve_cores`, the push service and the clients
/// pinned to `other_cores`, and measures saturation and half-load latency.
fn scenario(serve_cores: &[usize], other_cores: &[usize]) -> Load {
    pin_to_cpus(other_cores);
    let gateway = Gateway::start();
    pin_to_cpus(serve_cores);

    let dir = std::env::temp_dir().join(format!(
        "jwp-serve-load-{}-{}",
        std::process::id(),
        serve_cores.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("store.redb");
    {
        let store = jmap_web_push_host::store::embedded::EmbeddedStore::open(&path).expect("store");
        populate_into(
            &store,
            USERS * PER_USER,
            USERS,
            "u",
            &gateway.url("s"),
            Some(&keys()),
        );
    }
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.server.admin_token = Some(ADMIN.into());
    settings.store.kind = StoreKind::Embedded;
    settings.store.path = path;
    settings.plugin = plugin_config();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let running = rt.block_on(server::start(settings)).expect("serve starts");
    let url = format!("{}/events", running.base_url);

    let load = std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpus(other_cores);
            let client_rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            client_rt.block_on(clients(&url, &gateway))
        })
        .join()
        .expect("clients")
    });
    rt.block_on(running.shutdown()).expect("shutdown");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    load
}

/// The load clients: saturation with CLIENTS posters back to back, then
/// half that rate on a fixed schedule.
async fn clients(url: &str, gateway: &Gateway) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let state = Arc::new(AtomicU64::new(0));
    let measure = |secs: f64| {
        let (client, url, state) = (client.clone(), url.to_string(), state.clone());
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let (client, url, state, stop, done) = (
                    client.clone(),
                    url.clone(),
                    state.clone(),
                    stop.clone(),
                    done.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut u = c;
                    while !stop.load(Ordering::Relaxed) {
                        let n = state.fetch_add(1, Ordering::Relaxed);
                        post(&client, &url, event(u % USERS, n)).await;
                        done.fetch_add(1, Ordering::Relaxed);
                        u += CLIENTS;
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            done.load(Ordering::Relaxed)
        }
    };
    measure(1.0).await;
    gateway.clear();
    let t = Instant::now();
    let events = measure(8.0).await;
    let saturation = events as f64 / t.elapsed().as_secs_f64();
    gateway.clear();
    let half_rate = saturation / 2.0;
    let n = (half_rate * 10.0) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / half_rate);
        let (client, url) = (client.clone(), url.to_string());
        let s = state.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            post(&client, &url, event(i % USERS, s)).await
        }));
    }
    let mut times = Vec::with_capacity(n);
    for t in tasks {
        times.push(t.await.expect("task"));
    }
    gateway.clear();
    times.sort();
    Load {
        saturation,
        half_rate,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cores >= 2, "the push service needs a core of its own");
    let all: Vec<usize> = (0..cores).collect();
    let serve_cores: Vec<usize> = (0..cores - 1).collect();
    pin_to_cpus(&serve_cores);
    let enc = sandboxed_encryption();
    println!(
        "serve load: {USERS} users x {PER_USER} verified subscriptions (embedded store), encrypted and \
         VAPID-signed pushes over loopback HTTP/1.1, {CLIENTS} clients posting events; {cores} cores"
    );
    println!(
        "one sandboxed encryption: {:.1} µs ({:.0}/s per core)",
        enc * 1e6,
        1.0 / enc
    );
    println!("| serve on | push service and clients on | events/s at saturation | pushes/s | goal 0.7 x serve cores x encryptions/s | at half load: events/s | p50 ms | p99 ms |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, serve, other) in [
        (
            format!("{} core(s)", serve_cores.len()),
            serve_cores.clone(),
            vec![cores - 1],
        ),
        (format!("all {cores} cores"), all.clone(), all.clone()),
    ] {
        let l = scenario(&serve, &other);
        let goal = 0.7 * serve.len() as f64 / enc;
        println!(
            "| {name} | {} | {:.0} | {:.0} | {goal:.0} ({:.2}x) | {:.0} | {:.1} | {:.1} |",
            if other.len() == cores {
                "the same cores".to_string()
            } else {
                format!("core {}", cores - 1)
            },
            l.saturation,
            l.saturation * PER_USER as f64,
            l.saturation * PER_USER as f64 / goal,
            l.half_rate,
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3,
        );
    }
}
