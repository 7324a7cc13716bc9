//! Operating a running `serve` through the binary: VAPID key rotation while
//! it runs (one host and two on one PostgreSQL), SIGHUP and `POST
//! /admin/reload`, and JSON log lines without secrets.

use std::path::Path;
use std::sync::{Arc, Mutex};

use jmap_web_push::server::auth::token_sha256;
use serde_json::{json, Value};

use super::support::*;

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
    let old_key = vapid_key(&wait_for(&push, "sub-a", 1));
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
    assert_eq!(vapid_key(&wait_for(&push, "sub-b", 1)), new_key);
    drop(server);

    // No server: the CLI opens the store itself.
    let (ok, out) = cli(&["vapid", "rotate", "-c", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(!out.contains("rotated by the server"), "{out}");
    assert!(out.contains("destroyed 1 subscriptions"), "{out}");
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
    let old_key = vapid_key(&wait_for(&push, "old", 1));
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
    assert_eq!(vapid_key(&wait_for(&push, "new", 1)), new_key);
    let report = a.state_change("alice@example.com", "s1");
    assert_eq!(report["delivered"], 1, "{report}");
    let change = wait_for(&push, "new", 2);
    assert_eq!(vapid_key(&change), new_key);
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
        browser.open(&wait_for(&push, "laptop", 3))["@type"],
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
    let origin = format!("http://127.0.0.1:{}", push.port());
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
