//! The push-service fault matrix, end to end through `serve`: a verified,
//! encrypted subscription; the push service misbehaves as each case says;
//! then it answers 201 again. For every case:
//!
//! - no subscription is lost (unless the answer says it is gone: 404, 410);
//! - no pending change is lost: every state is delivered (answered 2xx)
//!   exactly once, and nothing stays pending;
//! - the server keeps answering JMAP (a Session request) while the fault
//!   lasts.
//!
//! RELIABILITY.md reports the table.

use std::time::{Duration, Instant, SystemTime};

use jmap_web_push::gateway::{Answer, Gateway};
use jmap_web_push_tests::{PushClient, TestServer};
use serde_json::{json, Value};

use super::faulty_front::{Fault, FaultyFront};
use super::{start, verified_at, ADMIN};

/// How the push service misbehaves for the event's first pushes.
enum Misbehaviour {
    /// It answers these, in order.
    Answers(Vec<Answer>),
    /// Its transport fails this way on this many connections.
    Transport(Fault, usize),
}

/// What the case expects once the push service answers 201 again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Every state delivered exactly once; the subscription kept.
    DeliveredOnce,
    /// The subscription destroyed; nothing pending.
    Destroyed,
}

/// The pending-deliveries gauge of `/metrics`.
fn pending(s: &TestServer) -> u64 {
    s.gauge("jmap_push_pending_deliveries")
}

/// Runs one case: `script` answers the first pushes of an event changing
/// `accounts` accounts (state `s1` each).
fn run(script: Vec<Answer>, accounts: usize, expect: Expect) {
    run_case(Misbehaviour::Answers(script), accounts, expect);
}

/// Runs one case of a transport fault on the next `connections`
/// connections, for an event changing one account.
fn run_transport(fault: Fault, connections: usize) {
    run_case(
        Misbehaviour::Transport(fault, connections),
        1,
        Expect::DeliveredOnce,
    );
}

/// Runs one case of a TLS handshake failure on the next `connections`
/// connections to an HTTPS push service, for an event changing one
/// account.
fn run_tls_failure(connections: usize) {
    run_case_over(
        Misbehaviour::Transport(Fault::NotTls, connections),
        1,
        Expect::DeliveredOnce,
        true,
    );
}

fn run_case(misbehaviour: Misbehaviour, accounts: usize, expect: Expect) {
    run_case_over(misbehaviour, accounts, expect, false);
}

/// Runs a case, the push service behind a TCP front, over HTTPS when
/// `tls` (the front's certificate trusted through `[http] extra_ca_files`).
fn run_case_over(misbehaviour: Misbehaviour, accounts: usize, expect: Expect, tls: bool) {
    let gateway = Gateway::start();
    let upstream = ([127, 0, 0, 1], gateway.port()).into();
    let (front, s) = if tls {
        let (front, pem) = FaultyFront::start_tls(upstream);
        let ca = std::env::temp_dir().join(format!(
            "jwp-fault-ca-{}-{}.pem",
            std::process::id(),
            front.port()
        ));
        std::fs::write(&ca, pem).expect("CA file");
        let s = TestServer::start_configured(|settings| {
            settings.http.extra_ca_files = vec![ca.clone()];
        });
        // Read when the server started.
        let _ = std::fs::remove_file(&ca);
        (front, s)
    } else {
        (FaultyFront::start(upstream), start(false))
    };
    let client = PushClient::new();
    verified_at(&s, &gateway, &front.url("p"), &client, "p", "phone");
    // Pushes the push service answered otherwise than 2xx, in order after
    // the verification (a transport fault keeps its pushes from it).
    let statuses: Vec<u16> = match misbehaviour {
        Misbehaviour::Answers(script) => {
            let statuses = script.iter().map(|a| a.status).collect();
            gateway.script("p", script);
            statuses
        }
        Misbehaviour::Transport(fault, connections) => {
            front.arm(fault, connections);
            Vec::new()
        }
    };
    let changed: serde_json::Map<String, Value> = (0..accounts)
        .map(|a| (format!("a{a}"), json!({"Email": "s1"})))
        .collect();
    let event = json!({"type": "StateChange", "username": TestServer::USER, "changed": changed});

    // The event, posted while JMAP is asked for the Session.
    let worst_session = std::thread::scope(|scope| {
        let poster = scope.spawn(|| s.event(Some(&format!("Bearer {ADMIN}")), &event.to_string()));
        let mut worst = Duration::ZERO;
        while !poster.is_finished() {
            let t = Instant::now();
            assert!(s.session()["apiUrl"].is_string(), "JMAP answers meanwhile");
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, v) = poster.join().expect("poster");
        assert_eq!(status, 200, "{v}");
        worst
    });
    assert!(
        worst_session < Duration::from_secs(2),
        "a Session request took {worst_session:?} during the fault"
    );

    // The verification is the first request on "p"; the pushes after it
    // get the scripted answers in order, then 201.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let pushes = gateway.received_on("p");
        let mut delivered: std::collections::BTreeMap<String, usize> = Default::default();
        for (i, push) in pushes.iter().enumerate().skip(1) {
            let answered = statuses.get(i - 1).copied().unwrap_or(201);
            if !(200..300).contains(&answered) {
                continue;
            }
            let body = client.decrypt_json(&push.body).expect("decrypts");
            for account in body["changed"].as_object().expect("changed").keys() {
                *delivered.entry(account.clone()).or_default() += 1;
            }
        }
        let done = match expect {
            Expect::DeliveredOnce => delivered.len() == accounts,
            Expect::Destroyed => true,
        };
        if done && pending(&s) == 0 {
            for (account, n) in &delivered {
                assert_eq!(*n, 1, "{account} delivered {n} times");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: delivered {delivered:?}, pending {}",
            pending(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = s.call("PushSubscription/get", json!({"ids": null}))["list"].clone();
    let kept = list.as_array().map_or(0, Vec::len);
    match expect {
        Expect::DeliveredOnce => assert_eq!(kept, 1, "the subscription is kept: {list}"),
        Expect::Destroyed => {
            assert_eq!(kept, 0, "the subscription is destroyed: {list}");
            let before = gateway.received_on("p").len();
            let event = json!({"type": "StateChange", "username": TestServer::USER,
                               "changed": {"a0": {"Email": "s2"}}});
            s.event(Some(&format!("Bearer {ADMIN}")), &event.to_string());
            assert_eq!(gateway.received_on("p").len(), before, "nothing sent to it");
        }
    }
}

#[test]
fn a_503_then_201_delivers_once() {
    run(vec![Answer::status(503)], 1, Expect::DeliveredOnce);
}

#[test]
fn a_run_of_5xx_then_201_delivers_once() {
    run(
        vec![
            Answer::status(500),
            Answer::status(502),
            Answer::status(504),
        ],
        1,
        Expect::DeliveredOnce,
    );
}

#[test]
fn a_429_with_retry_after_seconds_delivers_once() {
    run(
        vec![Answer::status(429).header("retry-after", "1")],
        1,
        Expect::DeliveredOnce,
    );
}

#[test]
fn a_429_with_retry_after_as_a_date_delivers_once() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    run(
        vec![Answer::status(429).header("retry-after", &at)],
        1,
        Expect::DeliveredOnce,
    );
}

#[test]
fn a_413_for_two_accounts_delivers_each_once_by_splitting() {
    run(vec![Answer::status(413)], 2, Expect::DeliveredOnce);
}

#[test]
fn a_slow_answer_within_the_timeout_delivers_once_and_jmap_keeps_answering() {
    run(
        vec![Answer::status(201).delayed(Duration::from_millis(1500))],
        1,
        Expect::DeliveredOnce,
    );
}

#[test]
fn a_404_destroys_the_subscription_and_leaves_nothing_pending() {
    run(vec![Answer::status(404)], 1, Expect::Destroyed);
}

#[test]
fn a_410_destroys_the_subscription_and_leaves_nothing_pending() {
    run(vec![Answer::status(410)], 1, Expect::Destroyed);
}

#[test]
fn a_connection_closed_on_accept_is_retried_and_delivers_once() {
    run_transport(Fault::CloseAfterAccept, 1);
}

#[test]
fn a_reset_in_the_middle_of_the_request_is_retried_and_delivers_once() {
    run_transport(Fault::ResetMidRequest, 1);
}

#[test]
fn a_reset_in_the_middle_of_the_response_is_retried_and_delivers_once() {
    run_transport(Fault::ResetMidResponse, 1);
}

#[test]
fn a_hang_after_the_response_headers_counts_as_the_answer_and_delivers_once() {
    run_transport(Fault::HangAfterHeaders, 1);
}

#[test]
fn several_transport_faults_in_a_row_are_retried_and_deliver_once() {
    run_transport(Fault::ResetMidResponse, 3);
}

#[test]
fn a_tls_handshake_failure_is_retried_and_delivers_once() {
    run_tls_failure(1);
}
