//! Operating a running `serve` through the binary: VAPID key rotation while
//! it runs (one host and two on one PostgreSQL), SIGHUP and `POST
//! /admin/reload`, and JSON log lines without secrets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use jmap_web_push_host::server::auth::token_sha256;
use serde_json::{json, Value};

const LAPTOP: &str = "laptop-token-19ce";
const PHONE: &str = "phone-token-5d20";
const BOB: &str = "bob-token-a8e4";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// The admin token of the configuration at `file`: its own per test, so
/// that no test can reach another's server by a port reused in between.
fn admin_token(file: &Path) -> String {
    format!("admin-{}", &token_sha256(&file.display().to_string())[..16])
}

/// A free loopback port (bound, then released for the server to take; a
/// server that loses the race is started again, see [`Serve::start_on`]).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
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

/// One request a push service received.
#[derive(Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `k=` of the VAPID `Authorization` header.
    fn vapid_key(&self) -> String {
        let auth = self.header("authorization").expect("VAPID authorization");
        auth.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("k="))
            .or_else(|| {
                auth.split(' ')
                    .find_map(|p| p.trim_matches(',').strip_prefix("k="))
            })
            .expect("k= in the authorization header")
            .to_string()
    }
}

/// A loopback HTTP/1.1 push service that answers 201 to everything and
/// keeps what it received.
struct PushService {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl PushService {
    fn start() -> PushService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || serve_connection(stream, &keep));
            }
        });
        PushService { addr, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Waits for the `n`-th request (from 1) to `path`.
    fn wait_for(&self, path: &str, n: usize) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Received> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.path == format!("/{path}"))
                .cloned()
                .collect();
            if got.len() >= n {
                return got[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no push #{n} to /{path}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_connection(stream: TcpStream, keep: &Mutex<Vec<Received>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        keep.lock().unwrap().push(Received {
            path,
            headers,
            body,
        });
        if writer
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A browser-style subscription's keys.
struct Browser {
    private: [u8; 32],
    public: String,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Browser {
        let key = VapidKey::generate().unwrap();
        Browser {
            private: b64_decode(&key.to_base64url()).try_into().unwrap(),
            public: key.public_key_base64url(),
            auth: jmap_web_push_guest::crypto::random_array().unwrap(),
        }
    }

    fn open(&self, push: &Received) -> Value {
        let plain = webpush_decrypt(&self.private, &self.auth, &push.body).expect("decrypts");
        serde_json::from_slice(&plain).unwrap()
    }
}

/// A configuration file for `serve`.
fn write_config(file: &Path, listen: u16, store: &str, extra: &str) {
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

fn users(with_phone: bool, with_bob: bool) -> String {
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
struct Serve {
    child: Child,
    base: String,
    admin: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Writes the configuration with `write(port)` for a free port and
    /// starts `serve` on it, again on another port if that one was taken
    /// in between.
    fn start_on(config: &Path, args: &[&str], write: impl Fn(u16)) -> Serve {
        for _ in 0..5 {
            write(free_port());
            if let Some(s) = Serve::try_start(config, args) {
                return s;
            }
        }
        panic!("serve did not start on any of 5 ports");
    }

    fn try_start(config: &Path, args: &[&str]) -> Option<Serve> {
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
    fn wait_for_log(&self, needle: &str, n: usize) {
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

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Stops with SIGTERM and returns everything written to stderr.
    fn stop(mut self) -> String {
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

    fn request(
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
    fn call(&self, token: &str, method: &str, args: Value) -> Value {
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

    fn session(&self, token: &str) -> (u16, Value) {
        self.request("GET", "/.well-known/jmap", Some(token), None)
    }

    /// Creates a subscription for `token` at `push_path` and verifies it
    /// with the code from the verification push; returns its id and code.
    fn subscribe(
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
        let verification = browser.open(&push.wait_for(push_path, 1));
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

    fn state_change(&self, user: &str, state: &str) -> Value {
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

fn cli(args: &[&str]) -> (bool, String) {
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

fn embedded(dir: &Path) -> String {
    format!(
        "[store]\nkind = \"embedded\"\npath = \"{}\"",
        dir.join("store.redb").display()
    )
}

#[test]
fn vapid_rotate_asks_the_running_server_and_opens_the_store_only_when_none_runs() {
    let dir = TempDir::new("rotate");
    let file = dir.0.join("push.toml");
    let store = embedded(&dir.0);
    let server = Serve::start_on(&file, &[], |port| {
        write_config(&file, port, &store, &users(false, false))
    });
    let push = PushService::start();
    let browser = Browser::new();
    let (id, _) = server.subscribe(LAPTOP, &push, "sub-a", &browser);
    let old_key = push.wait_for("sub-a", 1).vapid_key();
    let (_, before) = server.session(LAPTOP);

    // Without the admin token: refused, nothing rotated.
    let (status, _) = server.request("POST", "/admin/vapid/rotate", None, None);
    assert_eq!(status, 401);
    let (status, _) = server.request("POST", "/admin/vapid/rotate", Some(LAPTOP), None);
    assert_eq!(status, 401, "a user's token is not the admin token");

    // The CLI, while the server holds the embedded store, goes through it.
    let (ok, out) = cli(&["vapid", "rotate", "-c", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("destroyed 1 subscriptions"), "{out}");
    assert!(out.contains("rotated by the server running at"), "{out}");
    let (ok, shown) = cli(&["vapid", "show", "-c", file.to_str().unwrap()]);
    assert!(ok, "{shown}");
    let new_key: Value = serde_json::from_str(shown.trim()).unwrap();
    let new_key = new_key["applicationServerKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_key, old_key);
    assert!(out.contains(&new_key), "{out}");

    // The Session changed; the old key's subscription is gone.
    let (_, after) = server.session(LAPTOP);
    assert_ne!(after["state"], before["state"]);
    assert_eq!(
        after["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]["applicationServerKey"],
        new_key
    );
    let list = server.call(LAPTOP, "PushSubscription/get", json!({"ids": null}));
    assert_eq!(list["list"], json!([]), "{id} destroyed");
    // New subscriptions are signed with the new key.
    server.subscribe(LAPTOP, &push, "sub-b", &browser);
    assert_eq!(push.wait_for("sub-b", 1).vapid_key(), new_key);
    drop(server);

    // No server: the CLI opens the store itself.
    let (ok, out) = cli(&["vapid", "rotate", "-c", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(!out.contains("rotated by the server"), "{out}");
    assert!(out.contains("destroyed 1 subscriptions"), "{out}");
}

/// The PostgreSQL server of scripts/test.sh, or `None` when those tests are
/// skipped on purpose (`JMAP_WEB_PUSH_SKIP_PG=1`).
fn pg_url() -> Option<String> {
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
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(server_url: &str) -> Database {
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

#[test]
fn after_a_rotation_on_one_host_every_host_on_postgres_signs_with_the_new_key() {
    let Some(pg) = pg_url() else { return };
    let db = Database::create(&pg);
    let dir = TempDir::new("two-hosts");
    let store = format!("[store]\nkind = \"postgres\"\nurl = \"{}\"", db.url);
    let (file_a, file_b) = (dir.0.join("a.toml"), dir.0.join("b.toml"));
    let start = |file: &Path| {
        Serve::start_on(file, &[], |port| {
            write_config(file, port, &store, &users(false, false))
        })
    };
    let (a, b) = (start(&file_a), start(&file_b));
    let push = PushService::start();
    let browser = Browser::new();
    // Host A signs with the key both share.
    a.subscribe(LAPTOP, &push, "old", &browser);
    let old_key = push.wait_for("old", 1).vapid_key();
    // Host B rotates.
    let (status, rotated) = b.request("POST", "/admin/vapid/rotate", Some(&b.admin), None);
    assert_eq!(status, 200, "{rotated}");
    // Host A may be reconciling the same key change at this moment and
    // destroy the subscription itself: then B's count does not include it.
    assert!(
        rotated["destroyed"].as_u64().is_some_and(|n| n <= 1),
        "{rotated}"
    );
    let list = a.call(LAPTOP, "PushSubscription/get", json!({"ids": null}));
    assert_eq!(
        list["list"],
        json!([]),
        "the old key's subscription is gone"
    );
    let new_key = rotated["applicationServerKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_key, old_key);
    // Host A's next pushes, a verification and a state change, carry the
    // new key, and its Session shows it.
    a.subscribe(LAPTOP, &push, "new", &browser);
    assert_eq!(push.wait_for("new", 1).vapid_key(), new_key);
    let report = a.state_change("alice@example.com", "s1");
    assert_eq!(report["delivered"], 1, "{report}");
    let change = push.wait_for("new", 2);
    assert_eq!(change.vapid_key(), new_key);
    assert_eq!(browser.open(&change)["@type"], "StateChange");
    let (_, session) = a.session(LAPTOP);
    assert_eq!(
        session["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]["applicationServerKey"],
        new_key
    );
    drop((a, b));
}

fn max_objects_in_get(server: &Serve, token: &str) -> Value {
    server.session(token).1["capabilities"]["urn:ietf:params:jmap:core"]["maxObjectsInGet"].clone()
}

#[test]
fn sighup_and_the_reload_route_apply_the_file_and_revoke_removed_credentials() {
    let dir = TempDir::new("reload");
    let file = dir.0.join("push.toml");
    let store = embedded(&dir.0);
    let limits = |n: u32| format!("max_objects_in_get = {n}\n");
    let listen = Arc::new(Mutex::new(0u16));
    let server = Serve::start_on(&file, &[], |port| {
        *listen.lock().unwrap() = port;
        write_config(
            &file,
            port,
            &store,
            &format!("{}{}", limits(10), users(true, false)),
        );
    });
    let listen = *listen.lock().unwrap();
    let push = PushService::start();
    let browser = Browser::new();
    server.subscribe(PHONE, &push, "phone", &browser);
    server.subscribe(LAPTOP, &push, "laptop", &browser);
    let report = server.state_change("alice@example.com", "s1");
    assert_eq!(report["delivered"], 2, "{report}");
    assert_eq!(server.session(BOB).0, 401);

    // The phone's credential removed, bob added, a plugin limit lowered,
    // the listen address changed (that needs a restart).
    write_config(
        &file,
        listen + 1,
        &store,
        &format!("{}{}", limits(7), users(false, true)),
    );
    server.signal("HUP");
    server.wait_for_log("configuration reloaded", 1);
    assert_eq!(max_objects_in_get(&server, LAPTOP), 7);
    assert_eq!(
        server.session(PHONE).0,
        401,
        "the removed credential is refused"
    );
    assert_eq!(server.session(BOB).0, 200, "the added user is let in");
    // The phone's subscription was destroyed, the laptop's kept.
    let report = server.state_change("alice@example.com", "s2");
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(
        browser.open(&push.wait_for("laptop", 3))["@type"],
        "StateChange"
    );
    let text = server.stderr.lock().unwrap().clone();
    let revocation = text
        .lines()
        .find(|l| l.contains("revoke-credential"))
        .unwrap_or_else(|| panic!("no revocation logged:\n{text}"));
    assert!(revocation.contains("credential_id=phone"), "{revocation}");
    assert!(revocation.contains("destroyed=1"), "{revocation}");
    let reloaded = text
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        reloaded.contains("server.listen"),
        "reported as needing a restart: {reloaded}"
    );

    // The route says what changed; the still-bound address is kept.
    write_config(
        &file,
        listen + 1,
        &store,
        &format!("{}{}", limits(5), users(false, true)),
    );
    let (status, answer) = server.request("POST", "/admin/reload", Some(&server.admin), None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed"],
        json!(["plugin.max_objects_in_get"]),
        "{answer}"
    );
    assert_eq!(
        answer["restartRequired"],
        json!(["server.listen"]),
        "{answer}"
    );
    assert_eq!(answer["revoked"], json!([]));
    assert_eq!(max_objects_in_get(&server, LAPTOP), 5);

    // The laptop's token replaced: the old token is refused, its
    // subscription destroyed; the new token works and starts afresh.
    const LAPTOP_NEW: &str = "laptop-token-rotated-77b1";
    let rotated = users(false, true).replace(&token_sha256(LAPTOP), &token_sha256(LAPTOP_NEW));
    write_config(
        &file,
        listen + 1,
        &store,
        &format!("{}{}", limits(5), rotated),
    );
    let (status, answer) = server.request("POST", "/admin/reload", Some(&server.admin), None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["revoked"],
        json!([{"username": "alice@example.com", "credentialId": "laptop", "destroyed": 1}]),
        "{answer}"
    );
    assert_eq!(server.session(LAPTOP).0, 401);
    assert_eq!(server.session(LAPTOP_NEW).0, 200);
    let list = server.call(LAPTOP_NEW, "PushSubscription/get", json!({"ids": null}));
    assert_eq!(list["list"], json!([]), "{list}");

    // A bad file keeps the running configuration and names the key.
    write_config(
        &file,
        listen + 1,
        &store,
        &format!("max_objects_in_get = \"many\"\n{}", users(false, false)),
    );
    let (status, answer) = server.request("POST", "/admin/reload", Some(&server.admin), None);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("plugin.max_objects_in_get"),
        "{answer}"
    );
    assert_eq!(server.session(BOB).0, 200, "bob is still let in");
    assert_eq!(max_objects_in_get(&server, LAPTOP_NEW), 5);
    server.signal("HUP");
    server.wait_for_log("configuration not reloaded", 2);
    assert_eq!(
        server.session(BOB).0,
        200,
        "a bad file on SIGHUP changes nothing"
    );
    // Without the admin token the route refuses.
    assert_eq!(
        server
            .request("POST", "/admin/reload", Some(LAPTOP_NEW), None)
            .0,
        401
    );
}

#[test]
fn json_logs_report_pushes_and_admin_actions_without_secrets() {
    let dir = TempDir::new("logs");
    let file = dir.0.join("push.toml");
    let store = embedded(&dir.0);
    let server = Serve::start_on(&file, &["--log-format", "json"], |port| {
        write_config(&file, port, &store, &users(false, false))
    });
    let push = PushService::start();
    let browser = Browser::new();
    let secret_path = "capability-3f9d2a7c";
    let (id, code) = server.subscribe(LAPTOP, &push, secret_path, &browser);
    assert_eq!(
        server.state_change("alice@example.com", "s1")["delivered"],
        1
    );
    let admin = server.admin.clone();
    let (status, rotated) = server.request("POST", "/admin/vapid/rotate", Some(&admin), None);
    assert_eq!(status, 200, "{rotated}");
    let log = server.stop();

    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let origin = format!("http://{}", push.addr);
    let push_line = |kind: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "jmap_web_push::push" && l["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} push line in {log}"))
    };
    for kind in ["verification", "state-change"] {
        let l = push_line(kind);
        assert_eq!(l["subscription_id"], id.as_str(), "{l}");
        assert_eq!(l["origin"], origin.as_str(), "{l}");
        assert_eq!(l["answer"], "2xx", "{l}");
        assert_eq!(l["action"], "delivered", "{l}");
        assert_eq!(l["level"], "INFO", "{l}");
    }
    let rotation = lines
        .iter()
        .find(|l| l["target"] == "jmap_web_push::admin" && l["action"] == "vapid-rotate")
        .unwrap_or_else(|| panic!("no rotation line in {log}"));
    assert_eq!(rotation["destroyed"], 1, "{rotation}");
    for secret in [
        secret_path,
        &code,
        &browser.public,
        &b64(&browser.auth),
        LAPTOP,
        &admin,
        &token_sha256(LAPTOP),
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
