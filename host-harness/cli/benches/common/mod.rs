//! What the benches share: a push service without network, receiver keys,
//! subscriptions written straight into a store, CPU pinning.

#![allow(dead_code)]

use jmap_web_push_guest::crypto::b64url_encode;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use jmap_web_push_guest::repo;
use jmap_web_push_guest::subscription::{Owner, StoredKeys, Subscription, VerificationState};
use jmap_web_push_host::net::{OutError, OutRequest, OutResponse};
use jmap_web_push_host::store::{Condition, KvStore};
use jmap_web_push_host::HttpSend;

/// Answers 201 at once, without network.
pub struct Instant201;

impl HttpSend for Instant201 {
    fn send_batch(&self, requests: Vec<OutRequest>) -> Vec<Result<OutResponse, OutError>> {
        requests
            .iter()
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

pub fn keys() -> StoredKeys {
    let k = VapidKey::generate().expect("key");
    let auth: [u8; 16] = jmap_web_push_guest::crypto::random_array().expect("random");
    StoredKeys {
        p256dh: k.public_key_base64url(),
        auth: b64url_encode(&auth),
    }
}

/// Writes `n` verified subscriptions for `users` users (round robin) whose
/// URLs point at `url_base` + index.
pub fn populate_into(
    store: &dyn KvStore,
    n: usize,
    users: usize,
    user_prefix: &str,
    url_base: &str,
    keys: Option<&StoredKeys>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..n {
        let owner = Owner {
            username: format!("{user_prefix}{}", i % users),
            credential_id: None,
        };
        let sub = Subscription {
            id: format!("{user_prefix}sub{i:07}"),
            owner: owner.clone(),
            device_client_id: format!("d{i}"),
            url: format!("{url_base}{i}"),
            keys: keys.cloned(),
            verification_code: "c".into(),
            verification: VerificationState {
                verified: true,
                delivered: true,
                attempts: 0,
                next_attempt_ms: None,
            },
            expires: now + 7 * 86_400,
            types: None,
            created: now,
            vapid_key: None,
            refusals: Default::default(),
            last_push_ms: 0,
        };
        store
            .put(&repo::sub_key(&sub.id), &repo::encode(&sub), Condition::Any)
            .unwrap();
        store
            .put(
                &format!("{}{}", repo::owner_prefix(&owner), sub.id),
                b"",
                Condition::Any,
            )
            .unwrap();
    }
}

/// Pins the calling thread (and the threads it starts from now on) to one
/// CPU, or lets it run on all `cpus` again (`None`).
///
/// `cpus` is the machine's count taken before any pinning: the standard
/// library's `available_parallelism` follows the calling thread's affinity,
/// so after pinning it says 1, and an unpin computed from it left every
/// later row (the sustained and 2-thread rows among them) on one core.
pub fn pin_to_cpu(cpu: Option<usize>, cpus: usize) {
    // SAFETY: `set` is a plain bit set that sched_setaffinity only reads.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cpus {
            if cpu.is_none_or(|only| only == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity");
    }
}

/// Pins the calling thread (and the threads it starts from now on) to the
/// CPUs in `cpus`.
pub fn pin_to_cpus(cpus: &[usize]) {
    // SAFETY: `set` is a plain bit set that sched_setaffinity only reads.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity");
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`), 0
/// when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `jmap-web-push serve -c <config>`, its output discarded.
pub fn spawn_serve(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_jmap-web-push"))
        .args(["serve", "-c"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts")
}

/// A child process (`serve`) killed and reaped on drop, however the bench
/// ends (a panic included).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
