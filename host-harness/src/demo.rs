//! The `demo` subcommand: the whole flow on this machine, with a readable
//! trace. A local push service (loopback), the embedded store in a fresh
//! temporary directory, a subscription created exactly as a JMAP client
//! would, verification, state changes, and the push service's 429 and 410
//! answers. Exits non-zero when any step does not do what it should.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use jmap_web_push_guest::crypto::ece::receiver::webpush_decrypt;
use jmap_web_push_guest::crypto::vapid::VapidKey;
use jmap_web_push_guest::crypto::{b64url_decode, b64url_encode};
use jmap_web_push_host::gateway::{Answer, Gateway, Received};
use jmap_web_push_host::store::embedded::EmbeddedStore;
use jmap_web_push_host::{
    AccountChanges, Caller, PluginConfig, PushPlugin, SandboxOptions, StateChange, TypeState,
};

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

fn call(plugin: &PushPlugin, who: &Caller, method: &str, args: Value) -> anyhow::Result<Value> {
    show_json(&format!("client → [\"{method}\", …]"), &args);
    let r = plugin.call(who, method, &args.to_string(), &[])??;
    let v: Value = serde_json::from_str(&r.arguments)?;
    show_json("server →", &v);
    Ok(v)
}

fn change(user: &str, account: &str, changes: &[(&str, &str)]) -> StateChange {
    StateChange {
        username: user.into(),
        changed: vec![AccountChanges {
            account_id: account.into(),
            changes: changes
                .iter()
                .map(|(t, s)| TypeState {
                    type_name: t.to_string(),
                    state: s.to_string(),
                })
                .collect(),
        }],
    }
}

fn wait_for(gateway: &Gateway, path: &str, n: usize) -> anyhow::Result<Vec<Received>> {
    let deadline = Instant::now() + Duration::from_secs(5);
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
    println!("The plugin runs as a WebAssembly component inside this process (wasmtime).");

    step(
        &mut n,
        "start a local push service and the plugin on the embedded store",
    );
    let dir = std::env::temp_dir().join(format!("jmap-web-push-demo-{}", std::process::id()));
    let store_path = dir.join("store.redb");
    let store = Arc::new(EmbeddedStore::open(&store_path)?);
    let gateway = Gateway::try_start()?;
    let config = PluginConfig {
        vapid_contact: Some("mailto:postmaster@example.com".into()),
        // The local push service is on 127.0.0.1 over plain HTTP, which a
        // production configuration refuses.
        insecure_test_mode: true,
        retry_initial_ms: 500,
        ..PluginConfig::default()
    };
    let t = Instant::now();
    let plugin = PushPlugin::builder()
        .config(config)
        .store(store)
        .sandbox(SandboxOptions::default())
        .build()?;
    let load = plugin.load_report();
    println!(
        "  component: {} octets, {} in {:?}; store: {}",
        load.component_size,
        if load.compiled {
            "compiled"
        } else {
            "loaded from the AOT cache"
        },
        t.elapsed(),
        store_path.display()
    );
    println!("  push service: {}", gateway.url(""));

    step(
        &mut n,
        "the Session object advertises the VAPID key (RFC 9749)",
    );
    let session = plugin.session()??;
    let cap = session
        .capabilities
        .iter()
        .find(|c| c.uri == "urn:ietf:params:jmap:webpush-vapid")
        .context("no webpush-vapid capability")?;
    let cap_value: Value = serde_json::from_str(&cap.value)?;
    show_json(&cap.uri, &cap_value);
    let server_key = cap_value["applicationServerKey"]
        .as_str()
        .context("no key")?
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
    let alice = Caller {
        username: "alice@example.com".into(),
        credential_id: Some("app-password-1".into()),
    };
    let created = call(
        &plugin,
        &alice,
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
    let updated = call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    )?;
    ensure!(
        updated["updated"].get(&id).is_some(),
        "verification update failed"
    );
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": null}),
    )?;
    ensure!(
        got["list"][0]["verificationCode"] == code,
        "/get does not show the verified code"
    );

    step(
        &mut n,
        "new mail arrives: the mail server reports a state change",
    );
    let report = plugin.state_changed(&change(
        "alice@example.com",
        "a1",
        &[
            ("Email", "e-101"),
            ("Mailbox", "m-55"),
            ("EmailDelivery", "d-9"),
            ("Thread", "t-3"),
        ],
    ))??;
    println!(
        "  delivery report: delivered {}, deferred {}, dropped {}, destroyed {}",
        report.delivered, report.deferred, report.dropped, report.destroyed
    );
    let got = wait_for(&gateway, "push/alice-laptop", 2)?;
    show_push(&got[1]);
    let sc = browser.open(&got[1])?;
    show_json("decrypted", &sc);
    ensure!(sc["@type"] == "StateChange", "not a StateChange");
    ensure!(
        sc["changed"]["a1"]["Email"] == "e-101",
        "Email state missing"
    );
    ensure!(
        sc["changed"]["a1"].get("Thread").is_none(),
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
    let r1 = plugin.state_changed(&change("alice@example.com", "a1", &[("Email", "e-102")]))??;
    println!("  first change: deferred {}", r1.deferred);
    let r2 = plugin.state_changed(&change(
        "alice@example.com",
        "a1",
        &[("Email", "e-103"), ("Mailbox", "m-56")],
    ))??;
    println!(
        "  second change while waiting: deferred {} (merged, not sent)",
        r2.deferred
    );
    ensure!(
        r1.deferred == 1 && r2.deferred == 1,
        "changes were not deferred"
    );
    ensure!(
        gateway.received_on("push/alice-laptop").len() == 3,
        "a push was sent during Retry-After"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let tick = plugin.tick()??;
    println!(
        "  tick after Retry-After: delivered {}",
        tick.delivery.delivered
    );
    let got = wait_for(&gateway, "push/alice-laptop", 4)?;
    show_push(&got[3]);
    let merged = browser.open(&got[3])?;
    show_json("decrypted (one merged push, newest states)", &merged);
    ensure!(
        merged["changed"]["a1"]["Email"] == "e-103",
        "merged push lacks the newest Email state"
    );
    ensure!(
        merged["changed"]["a1"]["Mailbox"] == "m-56",
        "merged push lacks the Mailbox change"
    );

    step(
        &mut n,
        "the browser unsubscribed: the push service answers 410 Gone",
    );
    gateway.script("push/alice-laptop", [Answer::status(410)]);
    let r = plugin.state_changed(&change("alice@example.com", "a1", &[("Email", "e-104")]))??;
    println!("  delivery report: destroyed {}", r.destroyed);
    ensure!(r.destroyed == 1, "subscription not destroyed on 410");
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id]}),
    )?;
    ensure!(
        got["notFound"][0] == id.as_str(),
        "destroyed subscription still visible"
    );

    let _ = std::fs::remove_dir_all(&dir);
    println!("\nAll {n} steps behaved as specified.");
    Ok(())
}
