//! `serve` end to end — Session, API envelope and request errors,
//! authentication, result references, the event intake, metrics, and the
//! `jmap-client` crate (Stalwart's JMAP client) as a real client.

mod fault_matrix;
mod faulty_front;
mod store_faults;

use jmap_web_push_tests::*;
use serde_json::{json, Value};

const PASSWORD: &str = TestServer::PASSWORD;
const TOKEN: &str = TestServer::TOKEN;
const ADMIN: &str = TestServer::ADMIN;

/// A server as the tests want it: with the capabilities jmap-client sends
/// when `jmap_client_compat`.
fn start(jmap_client_compat: bool) -> TestServer {
    let extra = if jmap_client_compat {
        jmap_client_capabilities()
    } else {
        Vec::new()
    };
    TestServer::start(extra)
}

/// jmap-client 0.4 puts these ten in `using` of every request; the server
/// accepts in `using` only what its Session advertises.
fn jmap_client_capabilities() -> Vec<String> {
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
}

/// RFC 8620 §1.2: 1-255 characters of the base64url alphabet.
fn is_jmap_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const ECHO: &str =
    r#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"n":1},"0"]]}"#;

/// A `Core/echo` request body of exactly `len` octets (JSON whitespace
/// after the object).
fn echo_of_size(len: usize) -> String {
    let mut body = ECHO.to_string();
    assert!(len >= body.len());
    body.push_str(&" ".repeat(len - body.len()));
    body
}

/// Asserts the RFC 8620 §3.6.1 limit problem naming `limit`.
fn assert_limit_problem(status: u16, v: &Value, ct: Option<&str>, limit: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(ct, Some("application/problem+json"), "{v}");
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:limit", "{v}");
    assert_eq!(v["limit"], limit, "{v}");
    assert_eq!(v["status"], 400, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
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
        let session = s.session_as(&auth);
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
fn failed_logins_are_throttled_per_address_and_per_user_name_with_retry_after() {
    let s = TestServer::start_configured(|settings| {
        settings.server.max_auth_failures = 3;
        settings.server.auth_failure_window_secs = 60;
        // Addresses come from X-Forwarded-For, as behind a reverse proxy.
        settings.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let basic_for = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let session = |auth: &str, from: &str| {
        let r = s
            .http
            .get(format!("{}/.well-known/jmap", s.base()))
            .header("Authorization", auth)
            .header("X-Forwarded-For", from)
            .send()
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (r.status().as_u16(), retry)
    };
    let wrong = basic_for(TestServer::USER, "wrong");
    // A password verified before the attack keeps working through it.
    assert_eq!(session(&basic(), "198.51.100.1").0, 200);
    for _ in 0..3 {
        assert_eq!(session(&wrong, "198.51.100.1").0, 401);
    }
    let (status, retry) = session(&wrong, "198.51.100.1");
    assert_eq!(status, 429, "the fourth try from the address");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    assert_eq!(session(&basic(), "198.51.100.1").0, 200, "verified before");
    assert_eq!(session(&bearer(), "198.51.100.1").0, 200, "a valid token");
    // The user name is blocked from everywhere for new passwords...
    // (The scheme in lower case: the same password, a header not seen
    // before.)
    let fresh = basic().replacen("Basic", "basic", 1);
    assert_eq!(session(&fresh, "203.0.113.5").0, 429);
    // ...other names and addresses are not.
    assert_eq!(session(&basic_for("mallory", "x"), "203.0.113.6").0, 401);
    // A wrong bearer token counts for its address too.
    for _ in 0..3 {
        assert_eq!(session("Bearer nope", "203.0.113.7").0, 401);
    }
    assert_eq!(session("Bearer nope", "203.0.113.7").0, 429);
    // Every client behind the proxy counts apart: another address's first
    // wrong password is a plain 401.
    assert_eq!(session(&basic_for("bob", "x"), "203.0.113.8").0, 401);
}

#[test]
fn request_level_errors_are_problem_json() {
    let s = start(false);
    let cases: &[(&str, &str)] = &[
        ("not json", "urn:ietf:params:jmap:error:notJSON"),
        // I-JSON: a member name given twice is refused, not resolved.
        (
            r#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"a":1,"a":2},"0"]]}"#,
            "urn:ietf:params:jmap:error:notJSON",
        ),
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
        ("{", "not I-JSON"),
        (
            r#"{"type":"UserDeleted","username":"a","username":"b"}"#,
            "given twice",
        ),
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

    // jmap-client 0.4 requires `state` in PushSubscription/get responses.
    let s = TestServer::start_configured(|settings| {
        settings.server.extra_capabilities = jmap_client_capabilities();
        settings.server.compat_push_subscription_get_state = true;
    });
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
    // The account jmap-client picked from the Session is a JMAP Id.
    assert!(
        is_jmap_id(client.default_account_id()),
        "{}",
        client.default_account_id()
    );
    let get = |id: &str| {
        let mut request = client.build();
        request.get_push_subscription().ids([id]);
        let mut response =
            s.rt.block_on(request.send_get_push_subscription())
                .expect("PushSubscription/get through jmap-client");
        assert!(response.not_found().is_empty());
        assert!(!response.state().is_empty());
        let mut list = response.take_list();
        assert_eq!(list.len(), 1);
        list.remove(0)
    };
    let read = get(&id);
    assert_eq!(read.id(), Some(id.as_str()));
    assert_eq!(read.device_client_id(), Some("jmap-client-device"));
    assert_eq!(read.verification_code(), None, "not verified yet");
    let verification = push.decrypt_json(&received()[0].body).unwrap();
    assert_eq!(verification["pushSubscriptionId"], id.as_str());
    let code = verification["verificationCode"].as_str().unwrap();
    s.rt.block_on(client.push_subscription_verify(&id, code))
        .expect("push_subscription_verify");
    assert_eq!(get(&id).verification_code(), Some(code));
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
    let settings = jmap_web_push::settings::Settings::parse(
        "[http]\nextra_ca_files = [\"/nonexistent/jmap-web-push/private-ca.pem\"]\n",
        Vec::new(),
    )
    .unwrap();
    let store = Arc::new(jmap_web_push_host::store::memory::MemoryStore::new());
    let metrics = Arc::new(jmap_web_push::server::metrics::Metrics::default());
    let e = jmap_web_push::server::build_plugin(&settings, store, metrics)
        .err()
        .expect("a plugin without its CA file");
    assert!(e.to_string().contains("private-ca.pem"), "{e}");
}

#[test]
fn an_oversized_request_gets_the_limit_problem_and_the_connection_stays_usable() {
    let s = start(false);
    let core = s.session()["capabilities"]["urn:ietf:params:jmap:core"].clone();
    assert_eq!(core["maxSizeRequest"], 1_000_000);
    assert_eq!(core["maxConcurrentRequests"], 16);
    // One keep-alive client (the server's pooled reqwest client) throughout:
    // each oversized request is followed by a normal one, which must not
    // land on a connection the server dropped.
    for round in 0..2 {
        // 3 MB with Content-Length: beyond axum's 2 MB default too.
        let (status, v, ct) = s.api_body(Some(&basic()), echo_of_size(3_000_000).into());
        assert_limit_problem(status, &v, ct.as_deref(), "maxSizeRequest");
        let (status, v, _) = s.api(Some(&basic()), ECHO);
        assert_eq!(status, 200, "round {round}: {v}");
        assert_eq!(v["methodResponses"][0][1]["n"], 1);
        // 1.5 MB chunked (no Content-Length): counted while read.
        let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(
            echo_of_size(1_500_000).into_bytes(),
        ));
        let (status, v, ct) = s.api_body(Some(&bearer()), chunked);
        assert_limit_problem(status, &v, ct.as_deref(), "maxSizeRequest");
        let (status, v, _) = s.api(Some(&bearer()), ECHO);
        assert_eq!(status, 200, "round {round}: {v}");
    }
}

#[test]
fn max_size_request_is_configurable_and_exact() {
    let s = TestServer::start_configured(|settings| settings.server.max_size_request = 2000);
    let core = s.session()["capabilities"]["urn:ietf:params:jmap:core"].clone();
    assert_eq!(core["maxSizeRequest"], 2000);
    let (status, v, _) = s.api(Some(&basic()), &echo_of_size(2000));
    assert_eq!(status, 200, "a body of exactly maxSizeRequest octets: {v}");
    let (status, v, ct) = s.api(Some(&basic()), &echo_of_size(2001));
    assert_limit_problem(status, &v, ct.as_deref(), "maxSizeRequest");
    // Without credentials the answer stays 401, whatever the size.
    let (status, _, _) = s.api(None, &echo_of_size(5000));
    assert_eq!(status, 401);
    let (status, _, _) = s.api(Some(&basic()), ECHO);
    assert_eq!(status, 200);
}

#[test]
fn max_concurrent_requests_is_enforced_per_user() {
    use jmap_web_push::settings::{Credential, User};
    const BOB_TOKEN: &str = "bobs-token";
    let s = TestServer::start_configured(|settings| {
        settings.server.max_concurrent_requests = 1;
        settings.users.push(User {
            name: "bob@example.org".into(),
            credentials: vec![Credential {
                id: "bob-phone".into(),
                password_hash: None,
                token_sha256: Some(jmap_web_push::server::auth::token_sha256(BOB_TOKEN)),
            }],
        });
    });
    let core = s.session()["capabilities"]["urn:ietf:params:jmap:core"].clone();
    assert_eq!(core["maxConcurrentRequests"], 1);
    // Alice's first request stays in flight while the push service takes
    // 1.5 s to answer its verification push.
    let gateway = Gateway::start();
    let client = PushClient::new();
    gateway.script(
        "slow",
        [Answer::status(201).delayed(std::time::Duration::from_millis(1500))],
    );
    let create = json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/set",
        {"create": {"k": {"deviceClientId": "d", "url": gateway.url("slow"), "keys": client.keys_json()}}}, "0"]]})
    .to_string();
    let http = s.http.clone();
    let url = format!("{}/jmap/api", s.base());
    let first = std::thread::spawn(move || {
        let r = http
            .post(url)
            .header("Authorization", basic())
            .body(create)
            .send()
            .expect("first request");
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while gateway.received_on("slow").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first request never reached the push service"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A second request of Alice's, with her other credential: refused at once.
    let (status, v, ct) = s.api(Some(&bearer()), ECHO);
    assert_limit_problem(status, &v, ct.as_deref(), "maxConcurrentRequests");
    // The limit is per user: Bob is served meanwhile.
    let (status, v, _) = s.api(Some(&format!("Bearer {BOB_TOKEN}")), ECHO);
    assert_eq!(status, 200, "{v}");
    assert!(
        !first.is_finished(),
        "the first request was not in flight any more; the test proves nothing"
    );
    let (status, v) = first.join().expect("first request thread");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["methodResponses"][0][1]["created"]["k"]["id"].is_string(),
        "{v}"
    );
    // Once it was answered, Alice is served again.
    let (status, v, _) = s.api(Some(&bearer()), ECHO);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn account_ids_are_jmap_ids_and_stable() {
    let account_of = |s: &TestServer, auth: String| -> String {
        let session = s.session_as(&auth);
        let accounts = session["accounts"].as_object().unwrap();
        assert_eq!(accounts.len(), 1, "{session}");
        let (id, account) = accounts.iter().next().unwrap();
        assert!(is_jmap_id(id), "{id:?} is not a JMAP Id");
        assert!(
            !id.starts_with(|c: char| c.is_ascii_digit() || c == '-'),
            "{id}"
        );
        assert_eq!(account["name"], TestServer::USER);
        let primary = session["primaryAccounts"].as_object().unwrap();
        assert_eq!(primary.len(), 10, "{session}");
        assert!(primary.values().all(|v| v == id.as_str()), "{session}");
        id.clone()
    };
    let s = start(true);
    let id = account_of(&s, basic());
    assert_eq!(account_of(&s, basic()), id, "two fetches");
    assert_eq!(account_of(&s, bearer()), id, "both credentials");
    s.shutdown();
    let restarted = start(true);
    assert_eq!(account_of(&restarted, basic()), id, "after a restart");
    assert_eq!(id, jmap_web_push::server::account_id(TestServer::USER));
}

#[test]
fn push_subscription_get_has_state_only_with_the_compat_setting() {
    let gateway = Gateway::start();
    let client = PushClient::new();
    for compat in [false, true] {
        let s = TestServer::start_configured(|settings| {
            settings.server.compat_push_subscription_get_state = compat
        });
        let path = format!("state-{compat}");
        let created = s.call(
            "PushSubscription/set",
            json!({"create": {"k": {"deviceClientId": "d", "url": gateway.url(&path), "keys": client.keys_json()}}}),
        );
        let id = created["created"]["k"]["id"].as_str().unwrap().to_string();
        assert!(created.get("state").is_none(), "/set: {created}");
        let got = s.call("PushSubscription/get", json!({"ids": null}));
        assert_eq!(got["list"][0]["id"], id.as_str());
        assert!(got.get("accountId").is_none(), "{got}");
        if !compat {
            assert!(
                got.get("state").is_none(),
                "RFC 8620 §7.2.1: no state: {got}"
            );
            continue;
        }
        let state = got["state"]
            .as_str()
            .unwrap_or_else(|| panic!("{got}"))
            .to_string();
        assert!(is_jmap_id(&state), "{state}");
        let again = s.call("PushSubscription/get", json!({"ids": null}));
        assert_eq!(again["state"], state.as_str(), "same list, same state");
        s.call(
            "PushSubscription/set",
            json!({"update": {id.clone(): {"types": ["Email"]}}}),
        );
        let changed = s.call("PushSubscription/get", json!({"ids": null}));
        assert_ne!(changed["state"], state.as_str(), "changed list, new state");
        // A method error stays a plain error.
        let forbidden = s.call("PushSubscription/get", json!({"properties": ["url"]}));
        assert!(forbidden.get("state").is_none(), "{forbidden}");
    }
}

/// Creates an encrypted subscription at `path` over HTTP and verifies it;
/// returns its id.
fn verified_over_http(
    s: &TestServer,
    gateway: &Gateway,
    client: &PushClient,
    path: &str,
    device: &str,
) -> String {
    verified_at(s, gateway, &gateway.url(path), client, path, device)
}

/// [`verified_over_http`] with a push URL of its own (`url` reaches
/// `gateway`'s `path`, through a proxy, say).
fn verified_at(
    s: &TestServer,
    gateway: &Gateway,
    url: &str,
    client: &PushClient,
    path: &str,
    device: &str,
) -> String {
    let before = gateway.received_on(path).len();
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": device, "url": url,
                                "keys": client.keys_json()}}}),
    );
    let id = r["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {r}"))
        .to_string();
    let code = client
        .decrypt_json(&gateway.received_on(path)[before].body)
        .unwrap()["verificationCode"]
        .clone();
    let r = s.call(
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "{r}");
    id
}

/// Posts one StateChange for the test user; returns the delivery result.
fn post_state_change(s: &TestServer, email_state: &str) -> Value {
    let event = json!({"type": "StateChange", "username": TestServer::USER,
                       "changed": {"a1": {"Email": email_state}}});
    let (status, v) = s.event(Some(&format!("Bearer {ADMIN}")), &event.to_string());
    assert_eq!(status, 200, "{v}");
    v["results"][0].clone()
}

/// Waits until `path` has received `n` requests (at most `timeout`).
fn wait_for_pushes(gateway: &Gateway, path: &str, n: usize, timeout: std::time::Duration) {
    let end = std::time::Instant::now() + timeout;
    while gateway.received_on(path).len() < n && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_client_replaces_its_keys_in_one_call_and_pushes_decrypt_with_the_new_keys_only() {
    let s = start(false);
    let gateway = Gateway::start();
    let old_client = PushClient::new();
    let old = verified_over_http(&s, &gateway, &old_client, "old", "phone");
    // One /set: destroy the old subscription, create the new one with the
    // same deviceClientId and new keys (how browsers re-subscribe).
    let new_client = PushClient::new();
    let r = s.call(
        "PushSubscription/set",
        json!({"destroy": [old.clone()],
               "create": {"n": {"deviceClientId": "phone", "url": gateway.url("new"),
                                "keys": new_client.keys_json()}}}),
    );
    let new = r["created"]["n"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("replacement not created: {r}"))
        .to_string();
    assert_eq!(r["destroyed"], json!([old]), "{r}");
    let verification = &gateway.received_on("new")[0];
    assert!(
        old_client.decrypt(&verification.body).is_err(),
        "sealed for the old keys"
    );
    let code = new_client.decrypt_json(&verification.body).unwrap()["verificationCode"].clone();
    let r = s.call(
        "PushSubscription/set",
        json!({"update": {new.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&new).is_some(), "{r}");
    let list = s.call("PushSubscription/get", json!({"ids": null}))["list"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], json!(new));

    assert_eq!(post_state_change(&s, "s7")["delivered"], 1);
    assert_eq!(gateway.received_on("old").len(), 1, "only its verification");
    let push = gateway.received_on("new").last().cloned().unwrap();
    assert!(old_client.decrypt(&push.body).is_err());
    assert_eq!(
        new_client.decrypt_json(&push.body).unwrap()["changed"]["a1"]["Email"],
        "s7"
    );
}

/// A verified subscription whose push service answers the first
/// StateChange (state `s1`) with `answer`; `meanwhile` more states follow
/// at once. Returns how long after the first event the retry reached the
/// push service, and the Email state it carried.
fn retry_after_answer(answer: Answer, meanwhile: &[&str]) -> (std::time::Duration, Value) {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    verified_over_http(&s, &gateway, &client, "p", "phone");
    // Let the tick task settle into its long sleep (nothing is due).
    std::thread::sleep(std::time::Duration::from_millis(600));
    gateway.script("p", [answer]);
    let t0 = std::time::Instant::now();
    assert_eq!(post_state_change(&s, "s1")["deferred"], 1);
    for state in meanwhile {
        post_state_change(&s, state);
    }
    // verification + the refused push + the retry
    wait_for_pushes(&gateway, "p", 3, std::time::Duration::from_secs(10));
    let got = gateway.received_on("p");
    assert_eq!(got.len(), 3, "the retry came");
    let m = client.decrypt_json(&got[2].body).unwrap();
    (
        got[2].at.duration_since(t0),
        m["changed"]["a1"]["Email"].clone(),
    )
}

#[test]
fn a_429_with_retry_after_is_retried_on_time_with_the_newer_state() {
    // A newer state arrives meanwhile: merged, not sent before Retry-After.
    let (after, state) =
        retry_after_answer(Answer::status(429).header("Retry-After", "2"), &["s2"]);
    assert!(
        after >= std::time::Duration::from_millis(1900)
            && after <= std::time::Duration::from_secs(4),
        "retried after {after:?}, want 2-4 s"
    );
    assert_eq!(state, "s2");
}

#[test]
fn a_503_is_retried_within_the_configured_backoff() {
    let (after, state) = retry_after_answer(Answer::status(503), &[]);
    // retry_initial_ms is 200 in the test configuration: the first retry
    // is due 100-200 ms later; allow for the tick and the machine.
    assert!(
        after <= std::time::Duration::from_millis(1500),
        "retried after {after:?}"
    );
    assert_eq!(state, "s1");
}

/// The `jmap_push_subscriptions` gauge of `/metrics`.
fn subscriptions_gauge(s: &TestServer) -> u64 {
    s.gauge("jmap_push_subscriptions")
}

#[test]
fn metrics_store_gauges_are_counted_at_most_once_per_interval() {
    let gateway = Gateway::start();
    let client = PushClient::new();
    // Counted on every scrape: a new subscription shows at once.
    let fresh = TestServer::start_configured(|s| s.server.metrics_count_interval_secs = 0);
    assert_eq!(subscriptions_gauge(&fresh), 0);
    verified_over_http(&fresh, &gateway, &client, "fresh", "phone");
    assert_eq!(subscriptions_gauge(&fresh), 1);
    // Counted at most once an hour: scrapes within the hour repeat the
    // first count instead of asking the store again.
    let cached = TestServer::start_configured(|s| s.server.metrics_count_interval_secs = 3600);
    assert_eq!(subscriptions_gauge(&cached), 0);
    verified_over_http(&cached, &gateway, &client, "cached", "phone");
    assert_eq!(subscriptions_gauge(&cached), 0);
}
