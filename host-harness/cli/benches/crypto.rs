//! Crypto and fan-out throughput (issue 3, items 4-5), single-threaded, in
//! one run:
//!
//! - (a) native `ece::encrypt` of a ~200-octet payload, and (a') per
//!   message of `ece::encrypt_batch` of 64 (the fan-out's batched key
//!   agreement);
//! - (b) native VAPID signing, fresh token each time and cached;
//! - (c) pushes per second through the real component (portable and wide
//!   flavours): one `state_changed` fanned out to N verified subscriptions,
//!   with an `HttpSend` that answers 201 at once (guest crypto + VAPID
//!   (cached) + store work, no network);
//! - (d) Mozilla's `ece` crate (OpenSSL) encrypting the same payload;
//! - (e) npm `web-push` `generateRequestDetails` and `encrypt`, when
//!   `.tools/node` has it (`scripts/setup.sh`).
//!
//! Run: `cargo bench -p jmap-web-push --bench crypto`.
//! Environment: `BENCH_FANOUT` (N, default 500), `BENCH_ROUND_SECS`
//! (default 0.6), `BENCH_ROUNDS` (default 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::keys::ReceiverKeys;
use jmap_web_push_guest::crypto::vapid::{VapidKey, VapidSigner};
use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode, random_array};
use jmap_web_push_host::net::{OutError, OutRequest, OutResponse};
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::{
    AccountChanges, Caller, Flavour, HttpSend, PluginConfig, PushPlugin, SandboxOptions,
    StateChange, TypeState,
};
use serde_json::{json, Value};

const ACCOUNT: &str = "accountid-0123456789";
const TYPES: [&str; 4] = ["Email", "Mailbox", "Thread", "EmailDelivery"];

struct Settings {
    round: Duration,
    rounds: usize,
    fanout: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of `rounds` rounds of at least `round` each, in calls per second.
fn rate(s: &Settings, mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let mut results = Vec::with_capacity(s.rounds);
    for _ in 0..s.rounds {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < s.round {
            for _ in 0..10 {
                f();
            }
            n += 10;
        }
        results.push(n as f64 / start.elapsed().as_secs_f64());
    }
    median(results)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

/// The StateChange JSON the fan-out produces, and a payload of the same
/// length for the native figures.
fn state_json(n: u64) -> String {
    let changed: serde_json::Map<String, Value> = TYPES
        .iter()
        .map(|t| (t.to_string(), json!(state_string(n, t))))
        .collect();
    json!({"@type": "StateChange", "changed": {ACCOUNT: changed}}).to_string()
}

fn state_string(n: u64, t: &str) -> String {
    format!("state-{n:08}-{}", &t.to_ascii_lowercase()[..4])
}

fn event(user: &str, n: u64) -> StateChange {
    StateChange {
        username: user.into(),
        changed: vec![AccountChanges {
            account_id: ACCOUNT.into(),
            changes: TYPES
                .iter()
                .map(|t| TypeState {
                    type_name: t.to_string(),
                    state: state_string(n, t),
                })
                .collect(),
        }],
    }
}

/// A receiver (browser) key pair and auth secret.
struct Receiver {
    private: [u8; 32],
    public: [u8; 65],
    auth: [u8; 16],
}

impl Receiver {
    fn new() -> Receiver {
        let key = VapidKey::generate().expect("key");
        let mut private = [0u8; 32];
        private.copy_from_slice(&b64url_decode(&key.to_base64url()).expect("scalar"));
        Receiver {
            private,
            public: *key.public_key_bytes(),
            auth: random_array().expect("random"),
        }
    }
}

/// Answers 201 at once, without network; records requests while asked to.
#[derive(Default)]
struct Instant201 {
    capture: AtomicBool,
    captured: Mutex<Vec<OutRequest>>,
}

impl HttpSend for Instant201 {
    fn send_batch(&self, requests: Vec<OutRequest>) -> Vec<Result<OutResponse, OutError>> {
        let n = requests.len();
        if self.capture.load(Ordering::Relaxed) {
            self.captured.lock().unwrap().extend(requests);
        }
        (0..n)
            .map(|_| {
                Ok(OutResponse {
                    status: 201,
                    headers: Vec::new(),
                    body_prefix: Vec::new(),
                })
            })
            .collect()
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn plugin_config(fanout: usize) -> PluginConfig {
    let limit = u32::try_from(fanout * 2 + 100).expect("fits");
    PluginConfig {
        vapid_contact: Some("mailto:bench@example.com".into()),
        max_subscriptions_per_owner: limit,
        max_creates_per_hour: limit,
        max_objects_in_set: limit,
        max_objects_in_get: limit,
        ..PluginConfig::default()
    }
}

fn set(plugin: &PushPlugin, who: &Caller, args: Value) -> Value {
    let r = plugin
        .call(who, "PushSubscription/set", &args.to_string(), &[])
        .expect("no trap")
        .unwrap_or_else(|e| panic!("method error: {e:?}"));
    serde_json::from_str(&r.arguments).expect("JSON")
}

/// Creates `n` verified subscriptions for `who` through the component
/// (`encrypted`: with receiver keys; else `keys: null`, plain JSON pushes).
fn verified_subscriptions(
    plugin: &PushPlugin,
    sender: &Instant201,
    who: &Caller,
    n: usize,
    encrypted: bool,
) {
    const CHUNK: usize = 100;
    sender.capture.store(true, Ordering::Relaxed);
    let receivers: Vec<Receiver> = (0..n).map(|_| Receiver::new()).collect();
    let by_url = |url: &str| -> usize {
        url.rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("url index")
    };
    for start in (0..n).step_by(CHUNK) {
        let create: serde_json::Map<String, Value> = (start..(start + CHUNK).min(n))
            .map(|i| {
                let r = &receivers[i];
                let keys = if encrypted {
                    json!({"p256dh": b64url_encode(&r.public), "auth": b64url_encode(&r.auth)})
                } else {
                    Value::Null
                };
                (
                    format!("c{i}"),
                    json!({
                        "deviceClientId": format!("device-{i}"),
                        "url": format!("https://push.example.net/wpush/v2/{i}"),
                        "keys": keys,
                    }),
                )
            })
            .collect();
        let r = set(plugin, who, json!({ "create": create }));
        let created = r["created"].as_object().map_or(0, |m| m.len());
        assert_eq!(
            created,
            (start + CHUNK).min(n) - start,
            "creates refused: {r}"
        );
    }
    let captured = std::mem::take(&mut *sender.captured.lock().unwrap());
    sender.capture.store(false, Ordering::Relaxed);
    assert_eq!(captured.len(), n, "one verification push per create");
    let mut update = serde_json::Map::new();
    for req in captured {
        let r = &receivers[by_url(&req.url)];
        let plain = if encrypted {
            webpush_decrypt(&r.private, &r.auth, &req.body).expect("verification decrypts")
        } else {
            req.body.clone()
        };
        let v: Value = serde_json::from_slice(&plain).expect("JSON");
        update.insert(
            v["pushSubscriptionId"].as_str().expect("id").to_string(),
            json!({"verificationCode": v["verificationCode"]}),
        );
        if update.len() == CHUNK {
            let r = set(
                plugin,
                who,
                json!({ "update": std::mem::take(&mut update) }),
            );
            assert_eq!(
                r["updated"].as_object().map_or(0, |m| m.len()),
                CHUNK,
                "{r}"
            );
        }
    }
    if !update.is_empty() {
        let k = update.len();
        let r = set(plugin, who, json!({ "update": update }));
        assert_eq!(r["updated"].as_object().map_or(0, |m| m.len()), k, "{r}");
    }
}

struct FanOut {
    pushes_per_s: f64,
    median_call: Duration,
    load: String,
    component_size: usize,
}

fn fan_out(s: &Settings, flavour: Flavour, component: Option<Vec<u8>>, encrypted: bool) -> FanOut {
    let sender = Arc::new(Instant201::default());
    let plugin = PushPlugin::builder()
        .config(plugin_config(s.fanout))
        .store(Arc::new(MemoryStore::new()))
        .http_client(sender.clone())
        // One instance: these are single-thread figures (a large fan-out
        // would otherwise be sharded over every core).
        .fanout_shards(1)
        .sandbox(SandboxOptions {
            flavour,
            component,
            aot_cache_dir: Some(repo_root().join("target/aot-cache")),
            ..SandboxOptions::default()
        })
        .build()
        .expect("plugin loads");
    let report = plugin.load_report();
    let load = format!(
        "{} in {:.0} ms",
        if report.compiled {
            "compiled"
        } else {
            "AOT cache"
        },
        report.load_time.as_secs_f64() * 1e3
    );
    let component_size = report.component_size;
    let who = Caller {
        username: "bench".into(),
        credential_id: Some("cred".into()),
    };
    verified_subscriptions(&plugin, &sender, &who, s.fanout, encrypted);

    let mut n = 0u64;
    let mut fire = || {
        n += 1;
        let r = plugin
            .state_changed(&event("bench", n))
            .expect("no trap")
            .expect("delivered");
        assert_eq!(r.delivered as usize, s.fanout, "{r:?}");
    };
    // Warm up: instance, VAPID token cache, store maps.
    for _ in 0..2 {
        fire();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < s.rounds.max(3) || start.elapsed() < s.round * s.rounds as u32 {
        let t = Instant::now();
        fire();
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 200 {
            break;
        }
    }
    let call = median(times);
    FanOut {
        pushes_per_s: s.fanout as f64 / call,
        median_call: Duration::from_secs_f64(call),
        load,
        component_size,
    }
}

fn node_web_push() -> Result<Value, String> {
    let modules = repo_root().join(".tools/node/node_modules");
    if !modules.join("web-push/package.json").exists() {
        return Err(format!(
            "{} has no web-push (run scripts/setup.sh)",
            modules.display()
        ));
    }
    let out = Command::new("node")
        .arg(repo_root().join("scripts/interop/bench-web-push.js"))
        .args(["200", "0.6", "5"])
        .env("INTEROP_NODE_MODULES", &modules)
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad node output: {e}"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and then it must not run for minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("crypto bench: skipped (run it with `cargo bench --bench crypto`)");
        return;
    }
    let s = Settings {
        round: Duration::from_secs_f64(env_or("BENCH_ROUND_SECS", 0.6)),
        rounds: env_or("BENCH_ROUNDS", 5),
        fanout: env_or("BENCH_FANOUT", 500),
    };
    let payload = state_json(1).into_bytes();
    println!("machine: {}", machine());
    println!(
        "payload: {} octets (a StateChange of 4 types in one account); {} rounds of {:.1} s, medians; single thread",
        payload.len(),
        s.rounds,
        s.round.as_secs_f64()
    );
    println!();

    let receiver = Receiver::new();
    let keys = ReceiverKeys::from_bytes(&receiver.public, &receiver.auth).expect("keys");
    // Sanity: native output decrypts with the ece crate.
    {
        let body = jmap_web_push_guest::crypto::ece::encrypt(&payload, &keys, 3993).unwrap();
        let c = ece::EcKeyComponents::new(receiver.private.to_vec(), receiver.public.to_vec());
        assert_eq!(ece::decrypt(&c, &receiver.auth, &body).unwrap(), payload);
    }

    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut row = |name: &str, v: f64| {
        println!("{name:<62} {v:>10.0} /s");
        rows.push((name.to_string(), v));
    };

    // (a)
    let native_encrypt = rate(&s, || {
        std::hint::black_box(
            jmap_web_push_guest::crypto::ece::encrypt(std::hint::black_box(&payload), &keys, 3993)
                .unwrap(),
        );
    });
    row("(a) native ece::encrypt, one message", native_encrypt);
    // (a') the fan-out's way: 64 messages with one batched key agreement.
    let batch: Vec<(&[u8], &_)> = (0..64).map(|_| (payload.as_slice(), &keys)).collect();
    let native_batch = 64.0
        * rate(&s, || {
            let bodies =
                jmap_web_push_guest::crypto::ece::encrypt_batch(std::hint::black_box(&batch), 3993);
            assert!(bodies.iter().all(Result::is_ok));
            std::hint::black_box(bodies);
        });
    row("(a') native ece::encrypt_batch, 64 messages", native_batch);

    // (b)
    let vapid_key = VapidKey::generate().expect("key");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let vapid_fresh = rate(&s, || {
        let mut signer =
            VapidSigner::new(vapid_key.clone(), "mailto:bench@example.com", 0, false).unwrap();
        std::hint::black_box(
            signer
                .authorization("https://push.example.net/wpush/v2/x", now)
                .unwrap(),
        );
    });
    row("(b) native VAPID header, new JWT each time", vapid_fresh);
    let mut signer =
        VapidSigner::new(vapid_key.clone(), "mailto:bench@example.com", 0, false).unwrap();
    let vapid_cached = rate(&s, || {
        std::hint::black_box(
            signer
                .authorization("https://push.example.net/wpush/v2/x", now)
                .unwrap(),
        );
    });
    row(
        "(b) native VAPID header, cached token (same origin)",
        vapid_cached,
    );

    // (d)
    let ece_crate = rate(&s, || {
        std::hint::black_box(
            ece::encrypt(
                &receiver.public,
                &receiver.auth,
                std::hint::black_box(&payload),
            )
            .unwrap(),
        );
    });
    row("(d) Mozilla ece crate encrypt (OpenSSL)", ece_crate);

    // (c)
    let mut fan = Vec::new();
    for (name, flavour) in [("portable", Flavour::Portable), ("wide", Flavour::Wide)] {
        let f = fan_out(&s, flavour, None, true);
        println!(
            "    {name}: component {} KB, {}; one state_changed to {} subscriptions: median {:.1} ms",
            f.component_size / 1024,
            f.load,
            s.fanout,
            f.median_call.as_secs_f64() * 1e3
        );
        row(
            &format!("(c) in-sandbox pushes, {name} (encrypt+VAPID cached+store)"),
            f.pushes_per_s,
        );
        fan.push((name, f.pushes_per_s));
    }
    // Decomposition: the same fan-out to subscriptions without keys (plain
    // JSON pushes, still VAPID-signed): everything but the encryption.
    let plain = fan_out(&s, Flavour::Wide, None, false);
    println!(
        "    wide, keys null: one state_changed to {} subscriptions: median {:.1} ms",
        s.fanout,
        plain.median_call.as_secs_f64() * 1e3
    );
    row(
        "(c') in-sandbox pushes, wide, no encryption (VAPID+store only)",
        plain.pushes_per_s,
    );
    // Optional: another build of the wide guest (e.g. at opt-level 3).
    if let Some(path) = std::env::var_os("BENCH_WIDE_COMPONENT") {
        let bytes = std::fs::read(&path).expect("BENCH_WIDE_COMPONENT readable");
        let f = fan_out(&s, Flavour::Wide, Some(bytes), true);
        println!(
            "    wide from {}: component {} KB; median {:.1} ms",
            Path::new(&path).display(),
            f.component_size / 1024,
            f.median_call.as_secs_f64() * 1e3
        );
        row(
            "(c\") in-sandbox pushes, wide, BENCH_WIDE_COMPONENT build",
            f.pushes_per_s,
        );
        let plain = fan_out(
            &s,
            Flavour::Wide,
            Some(std::fs::read(&path).expect("readable")),
            false,
        );
        row(
            "(c\"') the same build, no encryption (VAPID+store only)",
            plain.pushes_per_s,
        );
    }

    // (e)
    let node = match node_web_push() {
        Ok(v) => {
            let details = v["generate_request_details_per_s"].as_f64().unwrap_or(0.0);
            let enc = v["encrypt_per_s"].as_f64().unwrap_or(0.0);
            row(
                &format!(
                    "(e) node web-push {} generateRequestDetails",
                    v["version"].as_str().unwrap_or("?")
                ),
                details,
            );
            row("(e) node web-push encrypt only", enc);
            Some(details)
        }
        Err(why) => {
            println!("(e) node web-push: skipped: {why}");
            None
        }
    };

    println!();
    println!(
        "targets (issue 3): in-sandbox push >= 2x node generateRequestDetails, >= 0.6x ece crate"
    );
    for (name, v) in &fan {
        let vs_ece = v / ece_crate;
        let vs_node = node.map(|n| v / n);
        println!(
            "  {name:<9} {:>7.0}/s: {:.2}x ece crate ({}), {}",
            v,
            vs_ece,
            if vs_ece >= 0.6 { "met" } else { "NOT met" },
            match vs_node {
                Some(x) => format!(
                    "{x:.2}x node generateRequestDetails ({})",
                    if x >= 2.0 { "met" } else { "NOT met" }
                ),
                None => "node: not measured".into(),
            }
        );
    }
}
