//! Interoperability with independent implementations.
//!
//! - python `http_ece` (the RFC 8188 author's reference implementation)
//!   decrypts what the plugin sends, and python `cryptography` + `py_vapid`
//!   verify its VAPID header (`scripts/interop/*.py`);
//! - the npm push-service emulator `web-push-testing` accepts the plugin's
//!   pushes (its VAPID check passes), decrypts them, and answers 410 for an
//!   expired subscription, which destroys it;
//! - the npm JMAP client `jmap-jam` subscribes, verifies, receives and
//!   destroys through `serve` with that emulator as the push service
//!   ([`jam_client`]);
//! - the Prometheus project's python OpenMetrics parser reads `/metrics`
//!   ([`metrics_text`]).
//!
//! The tools live in `.tools/` (git-ignored), installed by
//! `scripts/setup.sh`. Without them these tests fail and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jmap_web_push_guest::crypto::b64url_encode;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::PushPlugin;
use jmap_web_push_tests::*;
use serde_json::{json, Value};

mod jam_client;
mod metrics_text;

const SETUP_HINT: &str =
    "run scripts/setup.sh first (it installs the interoperability tools into .tools/)";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv python, or a failure that says how to get it.
fn python() -> PathBuf {
    let p = repo_root().join(".tools/venv/bin/python");
    assert!(p.exists(), "{} is missing: {SETUP_HINT}", p.display());
    p
}

/// The node_modules holding web-push-testing and web-push, or a failure.
fn node_modules() -> PathBuf {
    let p = repo_root().join(".tools/node/node_modules");
    assert!(
        p.join("web-push-testing/package.json").exists(),
        "{} has no web-push-testing: {SETUP_HINT}",
        p.display()
    );
    p
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "jmap-web-push-interop-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The plugin's `applicationServerKey` from its Session capability.
fn application_server_key(plugin: &PushPlugin) -> String {
    let session = plugin.session().expect("no trap").expect("session");
    let cap = session
        .capabilities
        .iter()
        .find(|c| c.uri == "urn:ietf:params:jmap:webpush-vapid")
        .expect("webpush-vapid capability");
    let value: Value = serde_json::from_str(&cap.value).expect("capability JSON");
    value["applicationServerKey"]
        .as_str()
        .expect("applicationServerKey")
        .to_string()
}

/// Decrypts `body` with python `http_ece` using `client`'s keys.
fn http_ece_decrypt(dir: &TempDir, name: &str, client: &PushClient, body: &[u8]) -> Vec<u8> {
    let file = dir.0.join(name);
    std::fs::write(&file, body).expect("write body");
    let out = Command::new(python())
        .arg(repo_root().join("scripts/interop/decrypt_http_ece.py"))
        .arg(&file)
        .arg(b64url_encode(&client.private_key()))
        .arg(b64url_encode(&client.auth()))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "http_ece failed to decrypt {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Verifies a VAPID header with python `cryptography` and `py_vapid`;
/// returns the claims.
fn python_verify_vapid(header: &str, aud: &str, sub: &str, k: &str) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("scripts/interop/verify_vapid.py"))
        .args([header, aud, sub, k])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python rejects the VAPID header {header:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("claims JSON")
}

#[test]
fn python_http_ece_decrypts_and_py_vapid_verifies() {
    let gateway = Gateway::start();
    let plugin = plugin_with(Arc::new(MemoryStore::new()), test_config());
    let client = PushClient::new();
    let alice = caller("alice", Some("cred-1"));
    let server_key = application_server_key(&plugin);
    let dir = TempDir::new("python");
    let aud = format!("http://127.0.0.1:{}", gateway.port());
    let sub = "mailto:push-tests@example.com";

    let id = verified_subscription(
        &plugin,
        &gateway,
        &client,
        &alice,
        "push/python",
        Value::Null,
    );
    let report = plugin
        .state_changed(&state_change(
            "alice",
            &[("acc-1", "Email", "s42"), ("acc-1", "Mailbox", "m7")],
        ))
        .expect("no trap")
        .expect("state change");
    assert_eq!(report.delivered, 1, "{report:?}");

    let got = gateway.received_on("push/python");
    assert_eq!(got.len(), 2, "a verification and a StateChange");
    for (i, push) in got.iter().enumerate() {
        let ours = client.decrypt(&push.body).expect("ece crate decrypts");
        let theirs = http_ece_decrypt(&dir, &format!("push-{i}.bin"), &client, &push.body);
        assert_eq!(
            String::from_utf8_lossy(&theirs),
            String::from_utf8_lossy(&ours),
            "http_ece and the ece crate agree on push {i}"
        );
        let claims = python_verify_vapid(
            push.header("authorization").expect("VAPID header"),
            &aud,
            sub,
            &server_key,
        );
        assert_eq!(claims["aud"], aud.as_str());
    }
    // The checker is not vacuous: a token with one signature octet changed
    // is refused.
    let header = got[1].header("authorization").unwrap();
    let (token, k) = header
        .strip_prefix("vapid t=")
        .and_then(|r| r.split_once(", k="))
        .expect("vapid t=..., k=...");
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut sig = jmap_web_push_guest::crypto::b64url_decode(sig).unwrap();
    sig[10] ^= 1;
    let forged = format!("vapid t={signed}.{}, k={k}", b64url_encode(&sig));
    let out = Command::new(python())
        .arg(repo_root().join("scripts/interop/verify_vapid.py"))
        .args([forged.as_str(), aud.as_str(), sub, server_key.as_str()])
        .output()
        .expect("run python");
    assert!(!out.status.success(), "a forged signature must be refused");
    let verification: Value =
        serde_json::from_slice(&http_ece_decrypt(&dir, "v.bin", &client, &got[0].body)).unwrap();
    assert_eq!(verification["@type"], "PushVerification");
    assert_eq!(verification["pushSubscriptionId"], id.as_str());
    let change: Value =
        serde_json::from_slice(&http_ece_decrypt(&dir, "c.bin", &client, &got[1].body)).unwrap();
    assert_eq!(change["@type"], "StateChange");
    assert_eq!(change["changed"]["acc-1"]["Email"], "s42");
    assert_eq!(change["changed"]["acc-1"]["Mailbox"], "m7");
}

/// The web-push-testing emulator, killed on drop.
struct Emulator {
    child: Child,
    // Held open: the script exits when its stdin closes, so it also ends
    // if this process dies without running Drop.
    _stdin: ChildStdin,
    port: u16,
}

impl Emulator {
    fn start() -> Emulator {
        let modules = node_modules();
        let mut child = Command::new("node")
            .arg(repo_root().join("scripts/interop/web-push-testing-server.js"))
            .arg("0")
            .env("INTEROP_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node ({e}): {SETUP_HINT}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // Build the guard before reading so a failure still kills node.
        let mut emulator = Emulator {
            child,
            _stdin: stdin,
            port: 0,
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read emulator output");
        emulator.port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("emulator did not start: {line:?}"));
        emulator
    }

    /// POSTs JSON to the emulator; returns the status and the body (JSON
    /// when it parses, else a string).
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect emulator");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read answer");
        let raw = String::from_utf8_lossy(&raw);
        let (head, rest) = raw.split_once("\r\n\r\n").expect("HTTP answer");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "unexpected chunked answer: {head}"
        );
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let value = serde_json::from_str(rest).unwrap_or_else(|_| Value::String(rest.into()));
        (status, value)
    }

    fn messages(&self, client_hash: &str) -> Vec<Value> {
        let (status, r) = self.post("/get-notifications", &json!({"clientHash": client_hash}));
        assert_eq!(status, 200, "{r}");
        r["data"]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| serde_json::from_str(m.as_str().expect("message text")).expect("JSON"))
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn web_push_testing_emulator_accepts_and_expires() {
    let emulator = Emulator::start();
    let plugin = plugin_with(Arc::new(MemoryStore::new()), test_config());
    let alice = caller("alice", Some("cred-1"));

    let (status, r) = emulator.post(
        "/subscribe",
        &json!({"applicationServerKey": application_server_key(&plugin)}),
    );
    assert_eq!(status, 200, "subscribe: {r}");
    let data = &r["data"];
    let endpoint = data["endpoint"].as_str().expect("endpoint");
    let hash = data["clientHash"].as_str().expect("clientHash");
    assert!(
        endpoint.starts_with(&format!("http://127.0.0.1:{}/", emulator.port)),
        "{endpoint}"
    );

    // Create: the verification push must pass the emulator's checks (TTL,
    // aes128gcm, VAPID signed by the applicationServerKey) and decrypt.
    let created = call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"create": {"c": {
            "deviceClientId": "emulated-browser",
            "url": endpoint,
            "keys": {"p256dh": data["keys"]["p256dh"], "auth": data["keys"]["auth"]},
        }}}),
    )
    .expect("set");
    let id = created["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_string();
    let messages = emulator.messages(hash);
    assert_eq!(messages.len(), 1, "verification delivered: {messages:?}");
    assert_eq!(messages[0]["@type"], "PushVerification");
    assert_eq!(messages[0]["pushSubscriptionId"], id.as_str());
    let code = messages[0]["verificationCode"].as_str().expect("code");

    let r = call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    )
    .expect("verify");
    assert!(r["updated"].get(&id).is_some(), "verified: {r}");

    // A StateChange goes through and decrypts.
    let report = plugin
        .state_changed(&state_change("alice", &[("acc-1", "Email", "s1")]))
        .expect("no trap")
        .expect("state change");
    assert_eq!(report.delivered, 1, "{report:?}");
    let messages = emulator.messages(hash);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[1],
        json!({"@type": "StateChange", "changed": {"acc-1": {"Email": "s1"}}})
    );

    // Expired at the push service: 410, and the subscription is destroyed.
    let (status, r) = emulator.post(&format!("/expire-subscription/{hash}"), &json!({}));
    assert_eq!(status, 200, "expire: {r}");
    let report = plugin
        .state_changed(&state_change("alice", &[("acc-1", "Email", "s2")]))
        .expect("no trap")
        .expect("state change");
    assert_eq!(report.destroyed, 1, "{report:?}");
    assert_eq!(report.delivered, 0, "{report:?}");
    let r = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id.clone()]}),
    )
    .expect("get");
    assert_eq!(r["notFound"], json!([id]), "{r}");
    assert_eq!(r["list"], json!([]), "{r}");
}

/// The same emulator against `serve`: the client talks JMAP over HTTP, the
/// mail server reports through `POST /events`.
#[test]
fn web_push_testing_emulator_through_serve() {
    let emulator = Emulator::start();
    let server = TestServer::start(Vec::new());
    let key = server.session()["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]
        ["applicationServerKey"]
        .as_str()
        .expect("applicationServerKey")
        .to_string();
    let (status, r) = emulator.post("/subscribe", &json!({"applicationServerKey": key}));
    assert_eq!(status, 200, "subscribe: {r}");
    let data = &r["data"];
    let hash = data["clientHash"].as_str().expect("clientHash");
    let created = server.call(
        "PushSubscription/set",
        json!({"create": {"c": {
            "deviceClientId": "emulated-browser",
            "url": data["endpoint"],
            "keys": {"p256dh": data["keys"]["p256dh"], "auth": data["keys"]["auth"]},
        }}}),
    );
    let id = created["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_string();
    let messages = emulator.messages(hash);
    assert_eq!(messages.len(), 1, "{messages:?}");
    let code = messages[0]["verificationCode"].clone();
    let r = server.call(
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "verified: {r}");

    let admin = format!("Bearer {}", TestServer::ADMIN);
    let event = |state: &str| {
        json!({"type": "StateChange", "username": TestServer::USER,
               "changed": {"acc-1": {"Email": state}}})
        .to_string()
    };
    let (status, r) = server.event(Some(&admin), &event("s1"));
    assert_eq!(
        (status, r["results"][0]["delivered"].clone()),
        (200, json!(1)),
        "{r}"
    );
    let messages = emulator.messages(hash);
    assert_eq!(
        messages.last().cloned(),
        Some(json!({"@type": "StateChange", "changed": {"acc-1": {"Email": "s1"}}}))
    );

    let (status, _) = emulator.post(&format!("/expire-subscription/{hash}"), &json!({}));
    assert_eq!(status, 200);
    let (status, r) = server.event(Some(&admin), &event("s2"));
    assert_eq!(
        (status, r["results"][0]["destroyed"].clone()),
        (200, json!(1)),
        "{r}"
    );
    let r = server.call("PushSubscription/get", json!({"ids": [id.clone()]}));
    assert_eq!(r["notFound"], json!([id]), "{r}");
}
