//! Soak: the `jmap-web-push serve` binary on the embedded store under a
//! steady load for 30 minutes (`JWP_SOAK_SECS`, default 1800), sampled
//! every minute: the process's resident memory, its open file descriptors
//! and the store file's size must stay flat.
//!
//! The load, 5 rounds a second: create a subscription and verify it
//! (reading the code from the verification push), post a StateChange for
//! the user (pushed to every verified subscription, about 20), and destroy
//! the oldest subscription once 20 are alive, so the population is steady.
//!
//! Verdict: between the first sample after the warm-up (2 minutes, or a
//! tenth of the run) and the last, RSS may grow at most 10 % + 4 MiB, open
//! descriptors by at most 8, the store file by at most 10 % + 1 MiB. The
//! bench exits non-zero otherwise.
//!
//! Run: `cargo bench -p jmap-web-push --bench soak` (Linux: it reads /proc).

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{free_port, spawn_serve, status_kib, KillOnDrop};
use jmap_web_push::gateway::Gateway;
use jmap_web_push::server::auth::token_sha256;
use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use serde_json::{json, Value};

const TOKEN: &str = "soak-token-7f1e";
const ADMIN: &str = "soak-admin-2b9c";
const USER: &str = "soak@example.com";
const ALIVE: usize = 20;
const ROUNDS_PER_SEC: u64 = 5;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    /// The anonymous part of RSS (heap, stacks, linear memories); the rest
    /// is file-backed (the binary's and the compiled component's pages).
    anon_kib: u64,
    fds: usize,
    store_octets: u64,
    rounds: u64,
    pushes: u64,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn start_serve(dir: &Path, store: &Path) -> (Child, String) {
    let port = free_port();
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token = "{ADMIN}"
[store]
kind = "embedded"
path = "{}"
[plugin]
vapid_contact = "mailto:soak@example.com"
insecure_test_mode = true
max_subscriptions_per_owner = 100000
max_creates_per_hour = 10000000
[[users]]
name = "{USER}"
credentials = [{{ id = "t", token_sha256 = "{}" }}]
"#,
            store.display(),
            token_sha256(TOKEN)
        ),
    )
    .expect("config written");
    let child = spawn_serve(&config);
    (child, format!("http://127.0.0.1:{port}"))
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn post(&self, path: &str, token: &str, body: Value) -> Option<Value> {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .body(body.to_string())
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            serde_json::from_slice(&r.bytes().await.ok()?).ok()
        })
    }

    fn call(&self, method: &str, args: Value) -> Value {
        let body = json!({"using": ["urn:ietf:params:jmap:core"],
                          "methodCalls": [[method, args, "c"]]});
        self.post("/jmap/api", TOKEN, body)
            .map(|v| v["methodResponses"][0][1].clone())
            .unwrap_or_else(|| panic!("{method} failed"))
    }
}

fn main() {
    let secs: u64 = std::env::var("JWP_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    let dir = std::env::temp_dir().join(format!("jwp-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store: PathBuf = dir.join("store.redb");
    let (child, base) = start_serve(&dir, &store);
    let pid = child.id();
    let serve = KillOnDrop(child);
    let client = Client {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        http: reqwest::Client::new(),
        base,
    };
    let started = Instant::now();
    while client
        .rt
        .block_on(client.http.get(format!("{}/healthz", client.base)).send())
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let push = Gateway::start();
    let browser = VapidKey::generate().expect("receiver key");
    let private: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(browser.to_base64url().as_bytes())
        .expect("key")
        .try_into()
        .expect("32 octets");
    let auth: [u8; 16] = jmap_web_push_guest::crypto::random_array().expect("auth");
    let keys = json!({"p256dh": browser.public_key_base64url(), "auth": b64(&auth)});

    let warmup = Duration::from_secs((secs / 10).min(120));
    let total = Duration::from_secs(secs);
    let mut alive: VecDeque<String> = VecDeque::new();
    let mut samples: Vec<Sample> = Vec::new();
    let (mut rounds, mut pushes) = (0u64, 0u64);
    let mut next_sample = Duration::ZERO;
    let start = Instant::now();
    println!("soak: {secs} s, {ROUNDS_PER_SEC} rounds/s, {ALIVE} subscriptions alive");
    println!("| at | rounds | pushes | RSS MiB | of it anonymous MiB | open fds | store MiB |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    while start.elapsed() < total {
        let round_start = Instant::now();
        rounds += 1;
        let path = format!("s{rounds}");
        let r = client.call(
            "PushSubscription/set",
            json!({"create": {"c": {"deviceClientId": format!("d{rounds}"),
                                    "url": push.url(&path), "keys": keys}}}),
        );
        let id = r["created"]["c"]["id"]
            .as_str()
            .expect("created")
            .to_owned();
        let asked = Instant::now();
        let verification = loop {
            if let Some(p) = push.received_on(&path).first().cloned() {
                break p;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "no verification push for {path}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let plain = webpush_decrypt(&private, &auth, &verification.body).expect("decrypts");
        let code: Value = serde_json::from_slice(&plain).expect("json");
        let r = client.call(
            "PushSubscription/set",
            json!({"update": {id.clone(): {"verificationCode": code["verificationCode"]}}}),
        );
        assert!(r["updated"].get(&id).is_some(), "{r}");
        alive.push_back(id);
        let event = json!({"type": "StateChange", "username": USER,
                           "changed": {"a1": {"Email": format!("s{rounds}")}}});
        let v = client.post("/events", ADMIN, event).expect("event taken");
        pushes += v["results"][0]["delivered"].as_u64().unwrap_or(0) + 1;
        if alive.len() > ALIVE {
            let old = alive.pop_front().expect("oldest");
            let r = client.call("PushSubscription/set", json!({"destroy": [old]}));
            assert!(
                r["destroyed"].as_array().is_some_and(|d| d.len() == 1),
                "{r}"
            );
        }
        push.clear();
        let at = start.elapsed();
        if at >= next_sample {
            let s = Sample {
                at,
                rss_kib: status_kib(pid, "VmRSS"),
                anon_kib: status_kib(pid, "RssAnon"),
                fds: fds(pid),
                store_octets: std::fs::metadata(&store).map_or(0, |m| m.len()),
                rounds,
                pushes,
            };
            println!(
                "| {:.0} s | {} | {} | {:.1} | {:.1} | {} | {:.1} |",
                s.at.as_secs_f64(),
                s.rounds,
                s.pushes,
                s.rss_kib as f64 / 1024.0,
                s.anon_kib as f64 / 1024.0,
                s.fds,
                s.store_octets as f64 / 1048576.0
            );
            samples.push(s);
            next_sample += Duration::from_secs(60).min(total / 4);
        }
        let round = Duration::from_millis(1000 / ROUNDS_PER_SEC);
        if let Some(rest) = round.checked_sub(round_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
    let base = samples
        .iter()
        .find(|s| s.at >= warmup)
        .or(samples.first())
        .expect("a sample");
    let end = samples.last().expect("a sample");
    let rss_ok = end.rss_kib <= base.rss_kib + base.rss_kib / 10 + 4096;
    let fds_ok = end.fds <= base.fds + 8;
    let store_ok = end.store_octets <= base.store_octets + base.store_octets / 10 + (1 << 20);
    println!(
        "soak: from {:.0} s to {:.0} s ({} rounds, {} pushes): RSS {:.1} -> {:.1} MiB ({}; \
         anonymous {:.1} -> {:.1} MiB), open fds {} -> {} ({}), store {:.1} -> {:.1} MiB ({})",
        base.at.as_secs_f64(),
        end.at.as_secs_f64(),
        end.rounds,
        end.pushes,
        base.rss_kib as f64 / 1024.0,
        end.rss_kib as f64 / 1024.0,
        if rss_ok { "flat" } else { "GREW" },
        base.anon_kib as f64 / 1024.0,
        end.anon_kib as f64 / 1024.0,
        base.fds,
        end.fds,
        if fds_ok { "flat" } else { "GREW" },
        base.store_octets as f64 / 1048576.0,
        end.store_octets as f64 / 1048576.0,
        if store_ok { "flat" } else { "GREW" },
    );
    if !(rss_ok && fds_ok && store_ok) {
        std::process::exit(1);
    }
}
