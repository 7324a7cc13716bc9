//! The `demo` subcommand: the whole flow on this machine, with a readable
//! trace. It starts `serve` in-process (embedded store in a fresh temporary
//! directory, one demo user) and a local push service, then acts as a JMAP
//! client over HTTP (Session, API) and as the mail server (`POST /events`):
//! a subscription with browser-style keys, verification, state changes, and
//! the push service's 429 and 410 answers. Exits non-zero when any step does
//! not do what it should.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use jmap_web_push::gateway::{Answer, Gateway, Received};
use jmap_web_push::server::{self, auth};
use jmap_web_push::settings::{Credential, Settings, StoreKind, User};
use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode};
use jmap_web_push_host::PluginConfig;

const USER: &str = "alice@example.com";
const PASSWORD: &str = "demo password";
const ADMIN: &str = "demo admin token";

/// A browser-style push subscription's keys (what PushManager.subscribe()
/// creates): a P-256 key pair and a 16-octet auth secret.
struct Browser {
    private: [u8; 32],
    public: [u8; 65],
    auth: [u8; 16],
}

impl Browser {
    fn new() -> anyhow::Result<Self> {
        let key = VapidKey::generate().context("generating the browser key")?;
        let mut private = [0u8; 32];
        private.copy_from_slice(&b64url_decode(&key.to_base64url())?);
        let auth: [u8; 16] = jmap_web_push_guest::crypto::random_array()?;
        Ok(Browser {
            private,
            public: *key.public_key_bytes(),
            auth,
        })
    }

    fn open(&self, push: &Received) -> anyhow::Result<Value> {
        let plain = webpush_decrypt(&self.private, &self.auth, &push.body)
            .map_err(|e| anyhow::anyhow!("the push did not decrypt: {e}"))?;
        Ok(serde_json::from_slice(&plain)?)
    }
}

fn step(n: &mut u32, title: &str) {
    *n += 1;
    println!("\n── Step {n}: {title}");
}

fn show_json(label: &str, v: &Value) {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    println!("  {label}:");
    for line in pretty.lines() {
        println!("    {line}");
    }
}

fn show_push(p: &Received) {
    println!(
        "  push service received POST /{} ({} octets)",
        p.path,
        p.body.len()
    );
    for name in [
        "ttl",
        "urgency",
        "topic",
        "content-encoding",
        "content-type",
        "authorization",
    ] {
        if let Some(v) = p.header(name) {
            let v = if name == "authorization" && v.len() > 60 {
                format!("{}…", &v[..60])
            } else {
                v.to_string()
            };
            println!("    {name}: {v}");
        }
    }
}

/// The demo's HTTP side: a JMAP client and the mail server's event feed.
struct Http {
    rt: tokio::runtime::Runtime,
    api_url: String,
    base: String,
}

/// One request to the demo's own server (plain HTTP on loopback, no
/// proxy); the JSON answer, or an error naming the request when the status
/// is not 2xx.
async fn request(
    method: reqwest::Method,
    url: &str,
    authorization: &str,
    body: Option<String>,
) -> anyhow::Result<Value> {
    let what = format!("{method} {url}");
    let client = reqwest::Client::builder().no_proxy().build()?;
    let response = client
        .request(method, url)
        .header(reqwest::header::AUTHORIZATION, authorization)
        .body(body.unwrap_or_default())
        .send()
        .await
        .with_context(|| what.clone())?;
    let status = response.status();
    ensure!(status.is_success(), "{what} answered {status}");
    let answer = response.bytes().await.with_context(|| what.clone())?;
    serde_json::from_slice(&answer).with_context(|| format!("{what}: the answer is not JSON"))
}

impl Http {
    fn basic() -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        )
    }

    fn session(&self) -> anyhow::Result<Value> {
        self.rt.block_on(request(
            reqwest::Method::GET,
            &format!("{}/.well-known/jmap", self.base),
            &Self::basic(),
            None,
        ))
    }

    /// One JMAP method call, printed as it goes.
    fn call(&self, method: &str, args: Value) -> anyhow::Result<Value> {
        show_json(&format!("client → [\"{method}\", …]"), &args);
        let body =
            json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [[method, args, "c0"]]});
        let v = self.rt.block_on(request(
            reqwest::Method::POST,
            &self.api_url,
            &Self::basic(),
            Some(body.to_string()),
        ))?;
        let response = &v["methodResponses"][0];
        ensure!(response[0] == method, "method error: {}", response[1]);
        show_json("server →", &response[1]);
        Ok(response[1].clone())
    }

    /// The mail server reports an event.
    fn event(&self, event: Value) -> anyhow::Result<Value> {
        show_json("mail server → POST /events", &event);
        let v = self.rt.block_on(request(
            reqwest::Method::POST,
            &format!("{}/events", self.base),
            &format!("Bearer {ADMIN}"),
            Some(event.to_string()),
        ))?;
        println!("  delivery report: {}", v["results"][0]);
        Ok(v["results"][0].clone())
    }
}

fn change(account: &str, changes: &[(&str, &str)]) -> Value {
    let types: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(t, s)| (t.to_string(), Value::String(s.to_string())))
        .collect();
    json!({"type": "StateChange", "username": USER, "changed": {account: types}})
}

fn wait_for(gateway: &Gateway, path: &str, n: usize) -> anyhow::Result<Vec<Received>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = gateway.received_on(path);
        if got.len() >= n {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!("expected {n} pushes on /{path}, got {}", got.len());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    let mut n = 0;
    println!("JMAP Web Push plugin — demo");
    println!("The plugin runs as a WebAssembly component inside the JMAP server (wasmtime).");

    step(
        &mut n,
        "start the JMAP server (embedded store) and a local push service",
    );
    let dir = std::env::temp_dir().join(format!("jmap-web-push-demo-{}", std::process::id()));
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse()?;
    settings.server.admin_token = Some(ADMIN.into());
    settings.store.kind = StoreKind::Embedded;
    settings.store.path = dir.join("store.redb");
    settings.plugin = PluginConfig {
        vapid_contact: Some("mailto:postmaster@example.com".into()),
        // The local push service is on 127.0.0.1 over plain HTTP, which a
        // production configuration refuses.
        insecure_test_mode: true,
        retry_initial_ms: 500,
        ..PluginConfig::default()
    };
    settings.users = vec![User {
        name: USER.into(),
        credentials: vec![Credential {
            id: "alice-laptop".into(),
            password_hash: Some(auth::hash_password(PASSWORD)?),
            token_sha256: None,
        }],
    }];
    let rt = tokio::runtime::Runtime::new()?;
    let t = Instant::now();
    let running = rt.block_on(server::start(settings.clone()))?;
    println!(
        "  JMAP server: {} (ready in {:?}); store: {}",
        running.base_url,
        t.elapsed(),
        settings.store.path.display()
    );
    let gateway = Gateway::try_start()?;
    println!("  push service: {}", gateway.url(""));
    let http = Http {
        api_url: format!("{}/jmap/api", running.base_url),
        base: running.base_url.clone(),
        rt,
    };

    step(
        &mut n,
        "the client fetches the Session: it advertises the VAPID key (RFC 9749)",
    );
    let session = http.session()?;
    ensure!(
        session["apiUrl"] == http.api_url.as_str(),
        "apiUrl is not the absolute API URL"
    );
    // The mail server reports changes under the account ids its clients
    // see in the Session (one account per user here).
    let account = session["accounts"]
        .as_object()
        .and_then(|a| a.keys().next())
        .context("the Session has no account")?
        .clone();
    ensure!(
        !account.is_empty()
            && account.len() <= 255
            && account
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the account id {account:?} is not a JMAP Id (RFC 8620 §1.2)"
    );
    println!("  account id: {account}");
    let cap = session["capabilities"]["urn:ietf:params:jmap:webpush-vapid"].clone();
    show_json("urn:ietf:params:jmap:webpush-vapid", &cap);
    let server_key = cap["applicationServerKey"]
        .as_str()
        .context("no applicationServerKey")?
        .to_string();
    ensure!(
        b64url_decode(&server_key)?.len() == 65,
        "applicationServerKey is not 65 octets"
    );

    step(
        &mut n,
        "the client subscribes (browser-style P-256 keys) and creates a PushSubscription",
    );
    let browser = Browser::new()?;
    let created = http.call(
        "PushSubscription/set",
        json!({"create": {"k1": {
            "deviceClientId": "alice-laptop-firefox",
            "url": gateway.url("push/alice-laptop"),
            "keys": {"p256dh": b64url_encode(&browser.public), "auth": b64url_encode(&browser.auth)},
            "types": ["Email", "Mailbox", "EmailDelivery"],
        }}}),
    )?;
    let id = created["created"]["k1"]["id"]
        .as_str()
        .context("subscription not created")?
        .to_string();

    step(
        &mut n,
        "the push service received the PushVerification; the client decrypts it",
    );
    let got = wait_for(&gateway, "push/alice-laptop", 1)?;
    show_push(&got[0]);
    let verification = browser.open(&got[0])?;
    show_json("decrypted", &verification);
    ensure!(
        verification["@type"] == "PushVerification",
        "not a PushVerification"
    );
    ensure!(
        verification["pushSubscriptionId"] == id.as_str(),
        "wrong subscription id"
    );
    let k = got[0]
        .header("authorization")
        .and_then(|a| a.split("k=").nth(1))
        .context("no VAPID k=")?;
    ensure!(
        k == server_key,
        "VAPID key differs from the Session's applicationServerKey"
    );
    let code = verification["verificationCode"]
        .as_str()
        .context("no code")?;

    step(
        &mut n,
        "the client proves it received it: update verificationCode",
    );
    let updated = http.call(
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    )?;
    ensure!(
        updated["updated"].get(&id).is_some(),
        "verification update failed"
    );
    let got = http.call("PushSubscription/get", json!({"ids": null}))?;
    ensure!(
        got["list"][0]["verificationCode"] == code,
        "/get does not show the verified code"
    );

    step(
        &mut n,
        "new mail arrives: the mail server reports a state change",
    );
    let report = http.event(change(
        &account,
        &[
            ("Email", "e-101"),
            ("Mailbox", "m-55"),
            ("EmailDelivery", "d-9"),
            ("Thread", "t-3"),
        ],
    ))?;
    ensure!(report["delivered"] == 1, "not delivered");
    let got = wait_for(&gateway, "push/alice-laptop", 2)?;
    show_push(&got[1]);
    let sc = browser.open(&got[1])?;
    show_json("decrypted", &sc);
    ensure!(sc["@type"] == "StateChange", "not a StateChange");
    ensure!(
        sc["changed"][&account]["Email"] == "e-101",
        "Email state missing"
    );
    ensure!(
        sc["changed"][&account].get("Thread").is_none(),
        "Thread was not asked for but was pushed"
    );
    ensure!(
        got[1].header("urgency") == Some("high"),
        "EmailDelivery should be urgent"
    );

    step(
        &mut n,
        "the push service says 429 Too Many Requests (Retry-After: 1)",
    );
    gateway.script(
        "push/alice-laptop",
        [Answer::status(429).header("Retry-After", "1")],
    );
    let r1 = http.event(change(&account, &[("Email", "e-102")]))?;
    let r2 = http.event(change(&account, &[("Email", "e-103"), ("Mailbox", "m-56")]))?;
    println!("  the second change arrived while waiting: merged, not sent");
    ensure!(
        r1["deferred"] == 1 && r2["deferred"] == 1,
        "changes were not deferred"
    );
    ensure!(
        gateway.received_on("push/alice-laptop").len() == 3,
        "a push was sent during Retry-After"
    );
    println!("  … the server's tick task sends the merged change once Retry-After has passed");
    let got = wait_for(&gateway, "push/alice-laptop", 4)?;
    show_push(&got[3]);
    let merged = browser.open(&got[3])?;
    show_json("decrypted (one merged push, newest states)", &merged);
    ensure!(
        merged["changed"][&account]["Email"] == "e-103",
        "merged push lacks the newest Email state"
    );
    ensure!(
        merged["changed"][&account]["Mailbox"] == "m-56",
        "merged push lacks the Mailbox change"
    );

    step(
        &mut n,
        "the browser unsubscribed: the push service answers 410 Gone",
    );
    gateway.script("push/alice-laptop", [Answer::status(410)]);
    let r = http.event(change(&account, &[("Email", "e-104")]))?;
    ensure!(r["destroyed"] == 1, "subscription not destroyed on 410");
    let got = http.call("PushSubscription/get", json!({"ids": [id]}))?;
    ensure!(
        got["notFound"][0] == id.as_str(),
        "destroyed subscription still visible"
    );

    http.rt.block_on(running.shutdown())?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nAll {n} steps behaved as specified.");
    Ok(())
}
