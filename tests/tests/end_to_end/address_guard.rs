//! Outbound HTTP: the address guard refuses every forbidden
//! destination form, literal or resolved, and redirects are never followed.
//! Also the connection limits: requests in flight per origin are bounded,
//! keep-alive connections are reused, a saturated origin does not hold
//! up another, and an origin that speaks HTTP/2 gets more streams in flight
//! (on one connection) than an HTTP/1.1 origin gets connections.

use std::net::IpAddr;
use std::time::Duration;

use jmap_web_push::gateway::{Answer, Gateway};
use jmap_web_push_host::net::{check_addr, OutError, OutRequest};
use jmap_web_push_host::{HttpClient, HttpPolicy};

fn post(url: &str) -> OutRequest {
    OutRequest {
        url: url.into(),
        headers: vec![("TTL".into(), "60".into())],
        body: b"x".to_vec(),
        timeout_ms: 2000,
    }
}

/// Hosts as written in a URL; every one must be refused before any byte
/// leaves the machine (loopback ones are refused even though a server
/// could answer there).
const BLOCKED_HOSTS: &[&str] = &[
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "017700000001",
    "0.0.0.0",
    "0",
    "10.0.0.1",
    "012.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "198.51.100.10",
    "203.0.113.10",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::127.0.0.1]",
    "[fd00::1]",
    "[fc00::1]",
    "[fe80::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    "[64:ff9b::7f00:1]",
    "[2001:db8::1]",
    "localhost",
    "LOCALHOST",
    "[::ffff:10.1.2.3]",
];

#[test]
fn every_forbidden_destination_is_refused() {
    let client = HttpClient::new(HttpPolicy::default()).unwrap();
    let urls: Vec<String> = BLOCKED_HOSTS
        .iter()
        .map(|h| format!("https://{h}:8443/push/x"))
        .collect();
    assert!(urls.len() >= 30);
    let results = client.send_batch(urls.iter().map(|u| post(u)).collect());
    for (url, r) in urls.iter().zip(results) {
        match r {
            Err(OutError::DeniedByPolicy(why)) => assert!(!why.is_empty()),
            other => panic!("{url}: expected a policy refusal, got {other:?}"),
        }
    }
}

#[test]
fn plain_http_and_userinfo_are_refused_without_test_mode() {
    let client = HttpClient::new(HttpPolicy::default()).unwrap();
    let r = client.send_batch(vec![
        post("http://push.example.net/x"),
        post("https://user:pw@push.example.net/x"),
    ]);
    assert!(
        r.iter()
            .all(|r| matches!(r, Err(OutError::DeniedByPolicy(_)))),
        "{r:?}"
    );
}

#[test]
fn public_addresses_pass_the_guard() {
    // Checked with the guard function only: this machine reaches no public
    // address, and none is contacted.
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(check_addr(ip, false), Ok(()), "{ip}");
    }
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(check_addr(lo, false).is_err());
    assert_eq!(check_addr(lo, true), Ok(()), "test mode allows loopback");
    let private: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(
        check_addr(private, true).is_err(),
        "test mode allows only loopback"
    );
}

#[test]
fn redirects_are_not_followed() {
    let gateway = Gateway::start();
    gateway.script(
        "moved",
        [Answer::status(301).header("Location", &gateway.url("elsewhere"))],
    );
    gateway.script(
        "temp",
        [Answer::status(307).header("Location", &gateway.url("elsewhere"))],
    );
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    let r = client.send_batch(vec![
        post(&gateway.url("moved")),
        post(&gateway.url("temp")),
    ]);
    assert_eq!(r[0].as_ref().unwrap().status, 301);
    assert_eq!(r[1].as_ref().unwrap().status, 307);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        gateway.received_on("elsewhere").is_empty(),
        "redirect was followed"
    );
}

#[test]
fn loopback_gateway_is_refused_unless_test_mode() {
    let gateway = Gateway::start();
    let strict = HttpClient::new(HttpPolicy::default()).unwrap();
    let r = strict.send_batch(vec![post(&gateway.url("p").replace("http://", "https://"))]);
    assert!(matches!(r[0], Err(OutError::DeniedByPolicy(_))), "{r:?}");
    assert!(gateway.received().is_empty());
}

#[test]
fn timeouts_are_typed() {
    let gateway = Gateway::start();
    gateway.script(
        "slow",
        [Answer::status(201).delayed(Duration::from_secs(3))],
    );
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    let mut req = post(&gateway.url("slow"));
    req.timeout_ms = 300;
    let r = client.send_batch(vec![req]);
    assert_eq!(r[0], Err(OutError::Timeout));
}

/// Most arrivals the gateway saw within any window shorter than `delay`:
/// each request is answered `delay` after it arrives, so that many were in
/// flight at once.
fn most_in_flight(gateway: &Gateway, delay: Duration) -> usize {
    let mut at: Vec<_> = gateway.received().iter().map(|r| r.at).collect();
    at.sort();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t - at[i] < delay).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn requests_per_origin_are_bounded_and_connections_reused() {
    let gateway = Gateway::start();
    let delay = Duration::from_millis(60);
    gateway.set_default("p", Answer::status(201).delayed(delay));
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        max_connections_per_origin: 4,
        ..HttpPolicy::default()
    })
    .unwrap();
    for round in 0..3 {
        let answers = client.send_batch((0..24).map(|_| post(&gateway.url("p"))).collect());
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(|a| a.status == 201)),
            "round {round}: {answers:?}"
        );
    }
    assert_eq!(gateway.received().len(), 72);
    let most = most_in_flight(&gateway, delay);
    assert!(
        most <= 4,
        "{most} requests were in flight to one origin at once"
    );
    assert!(
        most >= 2,
        "requests were not sent concurrently ({most} at most)"
    );
    // Three batches of 24 over at most 4 connections, kept alive between
    // batches.
    assert!(
        gateway.connections() <= 4,
        "{} connections opened for 72 requests",
        gateway.connections()
    );
}

#[test]
fn a_saturated_origin_does_not_hold_up_another() {
    let slow = Gateway::start();
    let fast = Gateway::start();
    slow.set_default("p", Answer::status(201).delayed(Duration::from_millis(400)));
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        max_concurrency: 2,
        max_connections_per_origin: 1,
        ..HttpPolicy::default()
    })
    .unwrap();
    let start = std::time::Instant::now();
    let patient = |url: String| OutRequest {
        timeout_ms: 10_000,
        ..post(&url)
    };
    let mut batch: Vec<OutRequest> = (0..6).map(|_| patient(slow.url("p"))).collect();
    batch.push(patient(fast.url("q")));
    let answers = client.send_batch(batch);
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|a| a.status == 201)),
        "{answers:?}"
    );
    // The slow origin's six requests go one after another (>= 2.4 s); the
    // other origin's request is not queued behind them.
    let fast_at = fast.received()[0].at.duration_since(start);
    let slow_last = slow
        .received()
        .iter()
        .map(|r| r.at.duration_since(start))
        .max()
        .unwrap();
    assert!(
        slow_last >= Duration::from_millis(2000),
        "slow origin not serialised: {slow_last:?}"
    );
    assert!(
        fast_at < Duration::from_millis(1000),
        "fast origin waited {fast_at:?}"
    );
}

#[test]
fn waiting_for_a_connection_slot_counts_against_the_timeout() {
    // One slot for a push service that answers after 5 s: the first request
    // times out after its 300 ms, and so do the four queued behind it,
    // measured from when they were handed over, not 300 ms each in turn.
    let gateway = Gateway::start();
    gateway.set_default(
        "stalled",
        Answer::status(201).delayed(Duration::from_secs(5)),
    );
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        max_connections_per_origin: 1,
        ..HttpPolicy::default()
    })
    .unwrap();
    let batch = (0..5)
        .map(|_| {
            let mut r = post(&gateway.url("stalled"));
            r.timeout_ms = 300;
            r
        })
        .collect();
    let start = std::time::Instant::now();
    let answers = client.send_batch(batch);
    let took = start.elapsed();
    assert!(
        answers.iter().all(|a| *a == Err(OutError::Timeout)),
        "{answers:?}"
    );
    assert!(
        took < Duration::from_millis(1200),
        "queued requests waited {took:?}"
    );
}

#[test]
fn an_http2_origin_gets_more_streams_in_flight_on_one_connection() {
    // The loopback gateway speaks HTTP/2 without TLS when the client opens
    // with the HTTP/2 preface (prior knowledge); real push services
    // negotiate it over TLS.
    let gateway = Gateway::start();
    let delay = Duration::from_millis(150);
    gateway.set_default("p", Answer::status(201).delayed(delay));
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        http2_prior_knowledge: true,
        max_connections_per_origin: 4,
        max_streams_per_http2_origin: 40,
        ..HttpPolicy::default()
    })
    .unwrap();
    // The first answer tells the client the origin speaks HTTP/2.
    let first = client.send_batch(vec![post(&gateway.url("p"))]);
    assert!(
        first[0].as_ref().is_ok_and(|a| a.status == 201),
        "{first:?}"
    );
    gateway.clear();
    let answers = client.send_batch((0..100).map(|_| post(&gateway.url("p"))).collect());
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|a| a.status == 201)),
        "{answers:?}"
    );
    let most = most_in_flight(&gateway, delay);
    assert!(
        most > 4,
        "only {most} requests in flight to an HTTP/2 origin (the HTTP/1.1 limit is 4)"
    );
    assert!(
        most <= 40,
        "{most} requests in flight to one HTTP/2 origin (limit 40)"
    );
    assert_eq!(
        gateway.connections(),
        1,
        "HTTP/2 streams should share one connection"
    );
}

#[test]
fn a_stalled_http2_origin_does_not_take_every_slot() {
    // max_concurrency 8: an HTTP/2 origin may have at most 4 (half) in
    // flight even though 100 streams are allowed per HTTP/2 origin, so the
    // other origin's request is not queued behind the stalled one's.
    let slow = Gateway::start();
    let fast = Gateway::start();
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        http2_prior_knowledge: true,
        max_concurrency: 8,
        max_connections_per_origin: 2,
        max_streams_per_http2_origin: 100,
        ..HttpPolicy::default()
    })
    .unwrap();
    // The slow origin is known to speak HTTP/2 before it stalls.
    let first = client.send_batch(vec![post(&slow.url("p"))]);
    assert!(
        first[0].as_ref().is_ok_and(|a| a.status == 201),
        "{first:?}"
    );
    slow.set_default("p", Answer::status(201).delayed(Duration::from_secs(3)));
    slow.clear();
    let patient = |url: String| OutRequest {
        timeout_ms: 10_000,
        ..post(&url)
    };
    let start = std::time::Instant::now();
    let mut batch: Vec<OutRequest> = (0..20).map(|_| patient(slow.url("p"))).collect();
    batch.push(patient(fast.url("q")));
    let pending = client.start_batch(batch);
    // While the slow origin holds its streams, at most 4 of them are in
    // flight and the fast origin is answered at once.
    std::thread::sleep(Duration::from_millis(1500));
    let in_flight = slow.received().len();
    let fast_at = fast.received().first().map(|r| r.at.duration_since(start));
    drop(pending);
    assert!(
        (1..=4).contains(&in_flight),
        "{in_flight} requests in flight to the stalled HTTP/2 origin (at most 4)"
    );
    assert!(
        fast_at.is_some_and(|t| t < Duration::from_millis(1000)),
        "fast origin answered at {fast_at:?}"
    );
}

#[test]
fn framing_headers_are_the_clients_own() {
    // A plugin's Host, Content-Length or Connection header would make the
    // request ambiguous or point it elsewhere: the client writes its own.
    let gateway = Gateway::start();
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    let mut request = post(&gateway.url("p"));
    request.headers.extend([
        ("Host".to_string(), "push.attacker.example".to_string()),
        ("Content-Length".to_string(), "999".to_string()),
        ("Connection".to_string(), "close".to_string()),
    ]);
    let answers = client.send_batch(vec![request]);
    assert!(
        answers[0].as_ref().is_ok_and(|a| a.status == 201),
        "{answers:?}"
    );
    let received = gateway.received_on("p");
    assert_eq!(received.len(), 1);
    let values = |name: &str| -> Vec<&str> {
        received[0]
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        values("host"),
        vec![format!("127.0.0.1:{}", gateway.port())]
    );
    assert_eq!(values("content-length"), vec!["1"]);
    assert!(values("connection").is_empty());
    assert_eq!(received[0].body, b"x");
    assert_eq!(received[0].header("ttl"), Some("60"));
}
