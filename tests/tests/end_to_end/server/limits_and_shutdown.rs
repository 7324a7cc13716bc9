//! Limits and lifecycle of `serve`: request size and concurrency limits, a
//! missing CA file, graceful shutdown.

use super::*;

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
