//! `serve` end to end — Session, API envelope and request errors,
//! authentication, result references, the event intake, metrics, and the
//! `jmap-client` crate (Stalwart's JMAP client) as a real client.

mod events_and_delivery;
mod fault_matrix;
mod faulty_front;
mod jmap_api;
mod limits_and_shutdown;
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
