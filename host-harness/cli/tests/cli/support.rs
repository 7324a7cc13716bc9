//! What the binary-level tests share: a temporary directory, a loopback
//! push service that records what it receives, a browser's receiver keys,
//! a running `serve` process, configuration files and a fresh PostgreSQL
//! database.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jmap_web_push::server::auth::token_sha256;
use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use serde_json::{json, Value};

pub(crate) const LAPTOP: &str = "laptop-token-19ce";
pub(crate) const PHONE: &str = "phone-token-5d20";
pub(crate) const BOB: &str = "bob-token-a8e4";

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// The admin token of the configuration at `file`: its own per test, so
/// that no test can reach another's server by a port reused in between.
pub(crate) fn admin_token(file: &Path) -> String {
    format!("admin-{}", &token_sha256(&file.display().to_string())[..16])
}

/// A free loopback port (bound, then released for the server to take; a
/// server that loses the race is started again, see [`Serve::start_on`]).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("jwp-ops-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The harness's loopback push service (answers 201 unless scripted).
pub(crate) use jmap_web_push::gateway::{Gateway as PushService, Received};

/// The `k=` of a push's VAPID `Authorization` header.
pub(crate) fn vapid_key(push: &Received) -> String {
    let auth = push.header("authorization").expect("VAPID authorization");
    auth.split(',')
        .map(str::trim)
        .find_map(|p| {
            p.strip_prefix("k=")
                .or_else(|| p.split(' ').find_map(|w| w.strip_prefix("k=")))
        })
        .expect("k= in the authorization header")
        .to_string()
}

/// Waits for the `n`-th request (from 1) to `path` of `push`.
pub(crate) fn wait_for(push: &PushService, path: &str, n: usize) -> Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = push.received_on(path);
        if got.len() >= n {
            return got[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "no push #{n} to /{path}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A browser-style subscription's keys.
pub(crate) struct Browser {
    pub(crate) private: [u8; 32],
    pub(crate) public: String,
    pub(crate) auth: [u8; 16],
}

impl Browser {
    pub(crate) fn new() -> Browser {
        let key = VapidKey::generate().unwrap();
        Browser {
            private: b64_decode(&key.to_base64url()).try_into().unwrap(),
            public: key.public_key_base64url(),
            auth: jmap_web_push_guest::crypto::random_array().unwrap(),
        }
    }

    pub(crate) fn open(&self, push: &Received) -> Value {
        let plain = webpush_decrypt(&self.private, &self.auth, &push.body).expect("decrypts");
        serde_json::from_slice(&plain).unwrap()
    }
}

/// A configuration file for `serve`.
pub(crate) fn write_config(file: &Path, listen: u16, store: &str, extra: &str) {
    let admin = admin_token(file);
    let text = format!(
        r#"[server]
listen = "127.0.0.1:{listen}"
admin_token = "{admin}"
{store}
[plugin]
vapid_contact = "mailto:ops@example.com"
insecure_test_mode = true
{extra}
"#
    );
    std::fs::write(file, text).unwrap();
}

pub(crate) fn users(with_phone: bool, with_bob: bool) -> String {
    let mut s = format!(
        "[[users]]\nname = \"alice@example.com\"\ncredentials = [\n  {{ id = \"laptop\", token_sha256 = \"{}\" }},\n",
        token_sha256(LAPTOP)
    );
    if with_phone {
        s += &format!(
            "  {{ id = \"phone\", token_sha256 = \"{}\" }},\n",
            token_sha256(PHONE)
        );
    }
    s += "]\n";
    if with_bob {
        s += &format!(
            "[[users]]\nname = \"bob@example.com\"\ncredentials = [{{ id = \"t\", token_sha256 = \"{}\" }}]\n",
            token_sha256(BOB)
        );
    }
    s
}

/// A running `jmap-web-push serve`; killed on drop.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) stderr: Arc<Mutex<String>>,
    pub(crate) reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Writes the configuration with `write(port)` for a free port and
    /// starts `serve` on it, again on another port if that one was taken
    /// in between.
    pub(crate) fn start_on(config: &Path, args: &[&str], write: impl Fn(u16)) -> Serve {
        for _ in 0..5 {
            write(free_port());
            if let Some(s) = Serve::try_start(config, args) {
                return s;
            }
        }
        panic!("serve did not start on any of 5 ports");
    }

    pub(crate) fn try_start(config: &Path, args: &[&str]) -> Option<Serve> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jmap-web-push"))
            .arg("serve")
            .arg("-c")
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        let err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let Some(base) = first
            .trim_end()
            .rsplit_once(" (")
            .map(|(_, u)| u.trim_end_matches(')').to_string())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            let err = stderr.lock().unwrap().clone();
            assert!(
                err.contains("Address already in use"),
                "serve did not start: {first}{err}"
            );
            return None;
        };
        Some(Serve {
            child,
            base,
            admin: admin_token(config),
            stderr,
            reader: Some(reader),
        })
    }

    /// Waits until stderr holds `n` lines containing `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stderr.lock().unwrap().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {n}x {needle:?} in the log:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Stops with SIGTERM and returns everything written to stderr.
    pub(crate) fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader ends at the end of the stream.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let text = self.stderr.lock().unwrap().clone();
        text
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("{}{path}", self.base);
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let mut r = match method {
                "GET" => client.get(&url),
                _ => client.post(&url),
            };
            if let Some(t) = bearer {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = r.send().await.expect("request");
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// One JMAP method call; returns its response arguments.
    pub(crate) fn call(&self, token: &str, method: &str, args: Value) -> Value {
        let (status, v) = self.request(
            "POST",
            "/jmap/api",
            Some(token),
            Some(json!({
                "using": ["urn:ietf:params:jmap:core"],
                "methodCalls": [[method, args, "c0"]],
            })),
        );
        assert_eq!(status, 200, "{v}");
        let answer = &v["methodResponses"][0];
        assert_eq!(answer[0], method, "{v}");
        answer[1].clone()
    }

    pub(crate) fn session(&self, token: &str) -> (u16, Value) {
        self.request("GET", "/.well-known/jmap", Some(token), None)
    }

    /// Creates a subscription for `token` at `push_path` and verifies it
    /// with the code from the verification push; returns its id and code.
    pub(crate) fn subscribe(
        &self,
        token: &str,
        push: &PushService,
        push_path: &str,
        browser: &Browser,
    ) -> (String, String) {
        let created = self.call(
            token,
            "PushSubscription/set",
            json!({"create": {"c1": {
                "deviceClientId": format!("device-{push_path}"),
                "url": push.url(push_path),
                "keys": {"p256dh": browser.public, "auth": b64(&browser.auth)},
            }}}),
        );
        let id = created["created"]["c1"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("created: {created}"))
            .to_string();
        let verification = browser.open(&wait_for(push, push_path, 1));
        assert_eq!(verification["@type"], "PushVerification");
        let code = verification["verificationCode"]
            .as_str()
            .unwrap()
            .to_string();
        let updated = self.call(
            token,
            "PushSubscription/set",
            json!({"update": {id.clone(): {"verificationCode": code}}}),
        );
        assert!(updated["updated"].get(&id).is_some(), "{updated}");
        (id, code)
    }

    pub(crate) fn state_change(&self, user: &str, state: &str) -> Value {
        let (status, v) = self.request(
            "POST",
            "/events",
            Some(&self.admin),
            Some(json!({"type": "StateChange", "username": user,
                        "changed": {"a1": {"Email": state}}})),
        );
        assert_eq!(status, 200, "{v}");
        v["results"][0].clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn cli(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_jmap-web-push"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

pub(crate) fn embedded(dir: &Path) -> String {
    format!(
        "[store]\nkind = \"embedded\"\npath = \"{}\"",
        dir.join("store.redb").display()
    )
}

/// The PostgreSQL server of scripts/test.sh, or `None` when those tests are
/// skipped on purpose (`JMAP_WEB_PUSH_SKIP_PG=1`).
pub(crate) fn pg_url() -> Option<String> {
    match std::env::var("JMAP_WEB_PUSH_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("JMAP_WEB_PUSH_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: PostgreSQL test (JMAP_WEB_PUSH_SKIP_PG=1)");
            None
        }
        _ => panic!(
            "JMAP_WEB_PUSH_TEST_PG is not set: run ./scripts/test.sh, or set \
             JMAP_WEB_PUSH_SKIP_PG=1 to skip the PostgreSQL tests"
        ),
    }
}

/// A fresh database on the test server, dropped on drop.
pub(crate) struct Database {
    pub(crate) admin_url: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl Database {
    pub(crate) fn create(server_url: &str) -> Database {
        let name = format!(
            "jwp_ops_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
        );
        let mut client = postgres::Client::connect(server_url, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = server_url.rsplit_once('/').unwrap().0;
        Database {
            admin_url: server_url.to_string(),
            url: format!("{base}/{name}"),
            name,
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
