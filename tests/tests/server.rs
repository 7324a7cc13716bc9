//! Issue 6: `serve` end to end — Session, API envelope and request errors,
//! authentication, result references, the event intake, metrics, and the
//! `jmap-client` crate (Stalwart's JMAP client) as a real client.

use jmap_web_push_tests::*;
use serde_json::{json, Value};

const PASSWORD: &str = TestServer::PASSWORD;
const TOKEN: &str = TestServer::TOKEN;
const ADMIN: &str = TestServer::ADMIN;

/// A server as the tests want it: with the capabilities jmap-client sends
/// when `jmap_client_compat`.
fn start(jmap_client_compat: bool) -> TestServer {
    let extra = if jmap_client_compat {
        // jmap-client 0.4 puts these ten in `using` of every request; the
        // server accepts in `using` only what its Session advertises.
        [
            "mail",
            "submission",
            "vacationresponse",
            "contacts",
            "calendars",
            "websocket",
            "sieve",
            "blob",
            "quota",
            "principals",
        ]
        .iter()
        .map(|c| format!("urn:ietf:params:jmap:{c}"))
        .collect()
    } else {
        Vec::new()
    };
    TestServer::start(extra)
}

fn basic() -> String {
    TestServer::basic()
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[test]
fn session_requires_auth_and_describes_the_server() {
    let s = start(false);
    let r = s
        .http
        .get(format!("{}/.well-known/jmap", s.base()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenges: Vec<_> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );
    let bad = s
        .http
        .get(format!("{}/.well-known/jmap", s.base()))
        .header("Authorization", "Bearer wrong")
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    for auth in [basic(), bearer()] {
        let session: Value = s
            .http
            .get(format!("{}/.well-known/jmap", s.base()))
            .header("Authorization", auth)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(session["apiUrl"], format!("{}/jmap/api", s.base()));
        assert_eq!(session["username"], "alice@example.com");
        assert!(session["capabilities"]["urn:ietf:params:jmap:core"].is_object());
        let key = session["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]
            ["applicationServerKey"]
            .as_str()
            .unwrap();
        assert_eq!(
            jmap_web_push_guest::crypto::b64url_decode(key)
                .unwrap()
                .len(),
            65
        );
        assert!(session["state"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(session["capabilities"]
            .get("urn:ietf:params:jmap:mail")
            .is_none());
    }
}

#[test]
fn request_level_errors_are_problem_json() {
    let s = start(false);
    let cases: &[(&str, &str)] = &[
        ("not json", "urn:ietf:params:jmap:error:notJSON"),
        ("[1,2]", "urn:ietf:params:jmap:error:notRequest"),
        (
            r#"{"using":["urn:ietf:params:jmap:core"]}"#,
            "urn:ietf:params:jmap:error:notRequest",
        ),
        (
            r#"{"using":["urn:ietf:params:jmap:mail"],"methodCalls":[]}"#,
            "urn:ietf:params:jmap:error:unknownCapability",
        ),
        (
            r#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["x",{},"0",1]]}"#,
            "urn:ietf:params:jmap:error:notRequest",
        ),
    ];
    for (body, kind) in cases {
        let (status, v, ct) = s.api(Some(&basic()), body);
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["type"], *kind, "{body}");
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (status, _, _) = s.api(None, r#"{"using":[],"methodCalls":[]}"#);
    assert_eq!(status, 401);
}

#[test]
fn api_methods_references_and_created_ids() {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    let body = json!({
        "using": ["urn:ietf:params:jmap:core"],
        "methodCalls": [
            ["PushSubscription/set", {"create": {"k1": {
                "deviceClientId": "dev1", "url": gateway.url("p1"), "keys": client.keys_json()}}}, "0"],
            ["PushSubscription/get", {"ids": null, "properties": ["id"]}, "1b"],
            ["PushSubscription/get", {"#ids": {"resultOf": "1b", "name": "PushSubscription/get", "path": "/list/*/id"}, "properties": ["deviceClientId"]}, "1"],
            ["Mailbox/get", {}, "2"],
            ["Core/echo", {"hello": true}, "3"],
            ["PushSubscription/get", {"#ids": {"resultOf": "9", "name": "PushSubscription/set", "path": "/x"}}, "4"],
        ],
        "createdIds": {},
    });
    let (status, v, _) = s.api(Some(&basic()), &body.to_string());
    assert_eq!(status, 200, "{v}");
    let mut r = v["methodResponses"].as_array().unwrap().clone();
    let id = r[0][1]["created"]["k1"]["id"].as_str().unwrap().to_string();
    assert_eq!(r[1][1]["list"][0]["id"], id.as_str());
    r.remove(1);
    let id = id.as_str();
    assert_eq!(r[1][0], "PushSubscription/get");
    assert_eq!(r[1][1]["list"][0]["id"], id);
    assert_eq!(r[1][1]["list"][0]["deviceClientId"], "dev1");
    assert_eq!(
        r[2],
        json!(["error", {"type": "unknownMethod", "description": "Mailbox/get is not supported by this server"}, "2"])
    );
    assert_eq!(r[3], json!(["Core/echo", {"hello": true}, "3"]));
    assert_eq!(r[4][1]["type"], "invalidResultReference");
    assert_eq!(v["createdIds"]["k1"], id);
    assert!(v["sessionState"].as_str().is_some());
    // The verification went out; a different credential of the same user
    // does not see the subscription (subscriptions are tied to credentials).
    assert_eq!(gateway.received_on("p1").len(), 1);
    let (_, v, _) = s.api(
        Some(&bearer()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/get", {"ids": [id]}, "0"]]}).to_string(),
    );
    assert_eq!(v["methodResponses"][0][1]["notFound"][0], id);
}

#[test]
fn event_intake_auth_validation_and_delivery() {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    // Create and verify through the API.
    let (_, v, _) = s.api(
        Some(&basic()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/set", {"create": {"k": {
            "deviceClientId": "d", "url": gateway.url("p"), "keys": client.keys_json()}}}, "0"]]})
        .to_string(),
    );
    let id = v["methodResponses"][0][1]["created"]["k"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = client
        .decrypt_json(&gateway.received_on("p")[0].body)
        .unwrap()["verificationCode"]
        .clone();
    s.api(
        Some(&basic()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/set", {"update": {id.clone(): {"verificationCode": code}}}, "0"]]})
            .to_string(),
    );

    let event = json!({"type": "StateChange", "username": "alice@example.com", "changed": {"a1": {"Email": "s9"}}}).to_string();
    assert_eq!(s.event(None, &event).0, 401);
    assert_eq!(s.event(Some("Bearer nope"), &event).0, 401);
    let admin = format!("Bearer {ADMIN}");
    for (bad, needle) in [
        ("{", "not JSON"),
        (r#"{"username":"a"}"#, "type"),
        (r#"{"type":"StateChange"}"#, "username"),
        (
            r#"{"type":"StateChange","username":"a","changed":{"a1":{"Email":5}}}"#,
            "changed.a1.Email",
        ),
        (r#"{"type":"Bogus","username":"a"}"#, "Bogus"),
        (
            r#"{"type":"CredentialRevoked","username":"a"}"#,
            "credentialId",
        ),
    ] {
        let (status, v) = s.event(Some(&admin), bad);
        assert_eq!(status, 400, "{bad}");
        assert!(v["detail"].as_str().unwrap().contains(needle), "{bad}: {v}");
    }
    let (status, v) = s.event(Some(&admin), &event);
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["delivered"], 1);
    let push = gateway.received_on("p").last().cloned().unwrap();
    assert_eq!(
        client.decrypt_json(&push.body).unwrap()["changed"]["a1"]["Email"],
        "s9"
    );

    let metrics = s
        .http
        .get(format!("{}/metrics", s.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("jmap_push_pushes_total{outcome=\"delivered\",reason=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("jmap_push_subscriptions 1"), "{metrics}");
    // One verification and one StateChange, each timed on its own.
    assert!(
        metrics.contains("jmap_push_gateway_requests_total{result=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jmap_push_gateway_latency_seconds_count 2"),
        "{metrics}"
    );

    let (status, v) = s.event(
        Some(&admin),
        &json!([{"type": "CredentialRevoked", "username": "alice@example.com", "credentialId": "laptop"}]).to_string(),
    );
    assert_eq!(
        (status, v["results"][0]["destroyed"].clone()),
        (200, json!(1))
    );
}

#[test]
fn jmap_client_crate_against_serve() {
    use jmap_client::client::Client;
    use jmap_client::push_subscription::Keys;
    use jmap_client::DataType;

    let s = start(true);
    let gateway = Gateway::start();
    let push = PushClient::new();
    let base = s.base();
    let keys = push.keys_json();
    let url = gateway.url("jc");
    let received = || gateway.received_on("jc");
    let client =
        s.rt.block_on(
            Client::new()
                .credentials(("alice@example.com", PASSWORD))
                .follow_redirects(["127.0.0.1"])
                .connect(&base),
        )
        .expect("jmap-client connects");
    let keys = Keys::new(
        &jmap_web_push_guest::crypto::b64url_decode(keys["p256dh"].as_str().unwrap()).unwrap(),
        &jmap_web_push_guest::crypto::b64url_decode(keys["auth"].as_str().unwrap()).unwrap(),
    );
    let created =
        s.rt.block_on(client.push_subscription_create("jmap-client-device", &url, Some(keys)))
            .expect("push_subscription_create");
    let id = created.id().unwrap().to_string();
    let verification = push.decrypt_json(&received()[0].body).unwrap();
    assert_eq!(verification["pushSubscriptionId"], id.as_str());
    s.rt.block_on(
        client.push_subscription_verify(&id, verification["verificationCode"].as_str().unwrap()),
    )
    .expect("push_subscription_verify");
    s.rt.block_on(client.push_subscription_update_types(&id, Some([DataType::Email])))
        .expect("push_subscription_update_types");
    let (status, v) = s.event(
        Some(&format!("Bearer {ADMIN}")),
        &json!({"type": "StateChange", "username": "alice@example.com",
                "changed": {"a1": {"Email": "e7", "Mailbox": "m7"}}})
        .to_string(),
    );
    assert_eq!(
        (status, v["results"][0]["delivered"].clone()),
        (200, json!(1))
    );
    let got = push.decrypt_json(&received().last().unwrap().body).unwrap();
    assert_eq!(
        got,
        json!({"@type": "StateChange", "changed": {"a1": {"Email": "e7"}}})
    );
    s.rt.block_on(client.push_subscription_destroy(&id))
        .expect("push_subscription_destroy");
    drop(client);
}

#[test]
fn graceful_shutdown_finishes_in_flight_pushes() {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    let created = s.call(
        "PushSubscription/set",
        json!({"create": {"k": {"deviceClientId": "d", "url": gateway.url("slow"), "keys": client.keys_json()}}}),
    );
    let id = created["created"]["k"]["id"].as_str().unwrap().to_string();
    let code = client
        .decrypt_json(&gateway.received_on("slow")[0].body)
        .unwrap()["verificationCode"]
        .clone();
    s.call(
        "PushSubscription/set",
        json!({"update": {id: {"verificationCode": code}}}),
    );
    gateway.script(
        "slow",
        [Answer::status(201).delayed(std::time::Duration::from_millis(1500))],
    );
    let event = json!({"type": "StateChange", "username": TestServer::USER, "changed": {"a1": {"Email": "x"}}}).to_string();
    let http = s.http.clone();
    let url = format!("{}/events", s.base());
    let in_flight = std::thread::spawn(move || {
        let r = http
            .post(url)
            .header("Authorization", format!("Bearer {ADMIN}"))
            .body(event)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    s.shutdown();
    let (status, v) = in_flight.join().unwrap();
    assert_eq!(
        (status, v["results"][0]["delivered"].clone()),
        (200, json!(1)),
        "{v}"
    );
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "shutdown did not wait"
    );
    assert_eq!(gateway.received_on("slow").len(), 2);
}

#[test]
fn a_missing_ca_file_stops_the_plugin_from_starting_and_is_named() {
    use std::sync::Arc;
    let settings = jmap_web_push_host::settings::Settings::parse(
        "[http]\nextra_ca_files = [\"/nonexistent/jmap-web-push/private-ca.pem\"]\n",
        Vec::new(),
    )
    .unwrap();
    let store = Arc::new(jmap_web_push_host::store::memory::MemoryStore::new());
    let metrics = Arc::new(jmap_web_push_host::server::metrics::Metrics::default());
    let e = jmap_web_push_host::server::build_plugin(&settings, store, metrics)
        .err()
        .expect("a plugin without its CA file");
    assert!(e.to_string().contains("private-ca.pem"), "{e}");
}
