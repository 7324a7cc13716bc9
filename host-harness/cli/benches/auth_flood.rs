//! Authentication under attack: the latency of a legitimate bearer-token
//! request (`GET /.well-known/jmap`) while 32 clients send wrong Basic
//! passwords as fast as they can, side by side in one run:
//!
//! - no attack (the baseline);
//! - the flood with Argon2 on 64 threads and no failure limit (what
//!   running Argon2 wherever a request lands amounts to);
//! - the flood with Argon2 on the bounded password pool, no failure limit;
//! - the flood with the pool and the failure limit (the defaults: 10
//!   failures per address per minute, then 429).
//!
//! Plus the time to refuse a wrong password and an unknown user name (they
//! should not be told apart).
//!
//! Run: `cargo bench -p jmap-web-push --bench auth_flood`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jmap_web_push::server::{self, auth};
use jmap_web_push::settings::{Credential, Settings, StoreKind, User};

const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "legitimate-token";
const ATTACKERS: usize = 32;
const LEGIT_REQUESTS: usize = 200;

fn settings(password_threads: usize, max_failures: u32) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".parse().expect("address");
    s.server.password_check_threads = password_threads;
    s.server.max_auth_failures = max_failures;
    s.store.kind = StoreKind::Memory;
    s.plugin.vapid_contact = Some("mailto:ops@example.com".into());
    s.users = vec![User {
        name: "alice@example.com".into(),
        credentials: vec![
            Credential {
                id: "laptop".into(),
                password_hash: Some(auth::hash_password(PASSWORD).expect("hash")),
                token_sha256: None,
            },
            Credential {
                id: "phone".into(),
                password_hash: None,
                token_sha256: Some(auth::token_sha256(TOKEN)),
            },
        ],
    }];
    s
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Row {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    attempts_per_s: f64,
    refused_429: u64,
}

/// Runs one phase: a server as configured, `attackers` clients sending
/// wrong passwords, and `LEGIT_REQUESTS` sequential bearer requests timed.
fn phase(name: &'static str, settings: Settings, attackers: usize) -> Row {
    let server_rt = tokio::runtime::Runtime::new().expect("runtime");
    let running = server_rt
        .block_on(server::start(settings))
        .expect("server starts");
    let url = format!("{}/.well-known/jmap", running.base_url);
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let attack = {
        let (url, stop, attempts, throttled) = (
            url.clone(),
            stop.clone(),
            attempts.clone(),
            throttled.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let mut tasks = Vec::new();
                for i in 0..attackers {
                    let (client, url, stop, attempts, throttled) = (
                        client.clone(),
                        url.clone(),
                        stop.clone(),
                        attempts.clone(),
                        throttled.clone(),
                    );
                    tasks.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            n += 1;
                            let auth = basic("alice@example.com", &format!("guess-{i}-{n}"));
                            if let Ok(r) =
                                client.get(&url).header("Authorization", auth).send().await
                            {
                                attempts.fetch_add(1, Ordering::Relaxed);
                                if r.status().as_u16() == 429 {
                                    throttled.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    // Let the flood reach its steady state.
    std::thread::sleep(Duration::from_millis(if attackers > 0 { 1500 } else { 0 }));
    let started = Instant::now();
    let attempts_before = attempts.load(Ordering::Relaxed);
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut times = client_rt.block_on(async {
        let client = reqwest::Client::new();
        let mut times = Vec::with_capacity(LEGIT_REQUESTS);
        for _ in 0..LEGIT_REQUESTS {
            let t = Instant::now();
            let r = client
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("legitimate request");
            assert_eq!(r.status().as_u16(), 200, "the legitimate request");
            let _ = r.bytes().await;
            times.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times
    });
    let elapsed = started.elapsed();
    let attempts_during = attempts.load(Ordering::Relaxed) - attempts_before;
    stop.store(true, Ordering::Relaxed);
    let _ = attack.join();
    server_rt.block_on(running.shutdown()).expect("shutdown");
    times.sort();
    Row {
        name,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        attempts_per_s: attempts_during as f64 / elapsed.as_secs_f64(),
        refused_429: throttled.load(Ordering::Relaxed),
    }
}

/// Mean time to refuse `auth` over `n` tries (no failure limit).
fn refusal_time(auth: impl Fn(usize) -> String, n: usize) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let running = rt.block_on(server::start(settings(1, 0))).expect("server");
    let url = format!("{}/.well-known/jmap", running.base_url);
    let total = rt.block_on(async {
        let client = reqwest::Client::new();
        // Warm up the connection and the plugin.
        let _ = client.get(&url).bearer_auth(TOKEN).send().await;
        let t = Instant::now();
        for i in 0..n {
            let r = client
                .get(&url)
                .header("Authorization", auth(i))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 401);
        }
        t.elapsed()
    });
    rt.block_on(running.shutdown()).expect("shutdown");
    total / n as u32
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "auth flood: {ATTACKERS} clients sending wrong Basic passwords; {LEGIT_REQUESTS} \
         bearer-token requests (GET /.well-known/jmap, 10 ms apart) timed; {cores} cores"
    );
    let rows = [
        phase("no attack", settings(0, 10), 0),
        phase(
            "flood, Argon2 on 64 threads, no failure limit",
            settings(64, 0),
            ATTACKERS,
        ),
        phase(
            "flood, password pool (default), no failure limit",
            settings(0, 0),
            ATTACKERS,
        ),
        phase(
            "flood, password pool + failure limit (defaults)",
            settings(0, 10),
            ATTACKERS,
        ),
    ];
    println!("| case | legit p50 ms | legit p99 ms | attacker requests/s | answered 429 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {} |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            r.attempts_per_s,
            r.refused_429
        );
    }
    let wrong = refusal_time(|i| basic("alice@example.com", &format!("wrong-{i}")), 20);
    let unknown = refusal_time(|i| basic(&format!("nobody-{i}@example.com"), "x"), 20);
    println!(
        "time to refuse (mean of 20): wrong password {} ms, unknown user {} ms",
        ms(wrong),
        ms(unknown)
    );
}
