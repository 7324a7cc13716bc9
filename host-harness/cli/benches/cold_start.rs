//! Cold and warm start of `jmap-web-push serve` on the embedded store:
//! the time until `/healthz` answers and the resident memory one second
//! later (total, anonymous, file-backed), with an empty AOT cache (the
//! component is compiled, as after an upgrade) and with the cache the cold
//! start wrote. Rounds alternate cold and warm (`JWP_COLD_START_ROUNDS`
//! pairs, default 3); the figures of each round are printed.
//!
//! Run: `cargo bench -p jmap-web-push --bench cold_start` (Linux: it reads
//! /proc).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, spawn_serve, status_kib, KillOnDrop};

/// Starts `serve` with `dir` as its AOT cache and store directory; returns
/// the time until `/healthz` answered and (RSS, anonymous, file) in KiB a
/// second later.
fn start_once(dir: &Path) -> (Duration, [u64; 3]) {
    let port = free_port();
    let config = dir.join("cold.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token = "cold-start-admin"
[store]
kind = "embedded"
path = "{}"
[plugin]
vapid_contact = "mailto:cold@example.com"
[sandbox]
aot_cache_dir = "{}"
[[users]]
name = "cold@example.com"
credentials = [{{ id = "t", token_sha256 = "{}" }}]
"#,
            dir.join("store.redb").display(),
            dir.join("aot").display(),
            "0".repeat(64),
        ),
    )
    .expect("config written");
    let started = Instant::now();
    let child = spawn_serve(&config);
    let pid = child.id();
    let _serve = KillOnDrop(child);
    while !healthy(port) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss = ["VmRSS", "RssAnon", "RssFile"].map(|f| status_kib(pid, f));
    (ready, rss)
}

/// Whether `GET /healthz` on `port` answers 200.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut answer = String::new();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .and_then(|()| s.read_to_string(&mut answer))
        .is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

fn main() {
    let pairs: usize = std::env::var("JWP_COLD_START_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("jwp-cold-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("start  ready      RSS      anonymous  file-backed");
    for _ in 0..pairs {
        for cold in [true, false] {
            if cold {
                let _ = std::fs::remove_dir_all(dir.join("aot"));
            }
            let (ready, [rss, anon, file]) = start_once(&dir);
            println!(
                "{:<5}  {:>6.0} ms  {:>5.1} MiB  {:>5.1} MiB  {:>5.1} MiB",
                if cold { "cold" } else { "warm" },
                ready.as_secs_f64() * 1e3,
                mib(rss),
                mib(anon),
                mib(file),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
