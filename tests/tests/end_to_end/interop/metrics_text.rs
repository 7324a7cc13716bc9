//! `GET /metrics` read by the Prometheus project's own OpenMetrics parser
//! (python `prometheus_client`, strict), from a live `serve` and from
//! delivery reports with hostile labels (quotes, backslashes, line feeds,
//! unknown outcomes, more distinct reasons than the bound). How the labels
//! are bounded is tested beside the code (`server::metrics`).

use std::io::Write;
use std::process::{Command, Stdio};

use jmap_web_push::server::metrics::{Metrics, CONTENT_TYPE, MAX_PUSH_SERIES, OVERFLOW_REASON};
use jmap_web_push_host::{DeliveryReport, OutcomeCount};
use jmap_web_push_tests::{Gateway, PushClient, TestServer};
use serde_json::{json, Value};

use super::{python, repo_root};

/// The samples the reference parser reads from `text`; panics with its
/// error when it refuses the text.
fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(repo_root().join("scripts/interop/parse_openmetrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    // A write error (python gone early) shows in its status and stderr.
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes());
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success() && written.is_ok(),
        "the OpenMetrics parser refused the text ({written:?}): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("samples JSON")
        .as_array()
        .expect("samples")
        .clone()
}

/// The value of the sample `name` with exactly `labels`.
fn sample(samples: &[Value], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn live_metrics_parse_with_the_reference_openmetrics_parser() {
    let s = TestServer::start(Vec::new());
    let gateway = Gateway::start();
    let client = PushClient::new();
    let r = s.call(
        "PushSubscription/set",
        json!({"create": {"c": {"deviceClientId": "d", "url": gateway.url("m"),
                                "keys": client.keys_json()}}}),
    );
    assert!(r["created"]["c"]["id"].is_string(), "{r}");
    let response = s
        .http
        .get(format!("{}/metrics", s.base()))
        .send()
        .expect("metrics");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(CONTENT_TYPE)
    );
    let samples = parse(&response.text().expect("metrics text"));
    // The verification push, timed and counted by result.
    let requests = sample(
        &samples,
        "jmap_push_gateway_requests_total",
        json!({"result": "2xx"}),
    );
    assert_eq!(requests, Some(1.0), "{samples:?}");
    let count = sample(
        &samples,
        "jmap_push_gateway_latency_seconds_count",
        json!({}),
    );
    assert_eq!(count, Some(1.0), "{samples:?}");
    let inf = sample(
        &samples,
        "jmap_push_gateway_latency_seconds_bucket",
        json!({"le": "+Inf"}),
    );
    assert_eq!(inf, Some(1.0), "{samples:?}");
    let api = sample(&samples, "jmap_push_api_requests_total", json!({}));
    assert_eq!(api, Some(1.0), "{samples:?}");
    let subscriptions = sample(&samples, "jmap_push_subscriptions", json!({}));
    assert_eq!(subscriptions, Some(1.0), "{samples:?}");
}

#[test]
fn hostile_delivery_labels_are_escaped_and_bounded() {
    let metrics = Metrics::default();
    let detail = |outcome: &str, reason: &str, count: u32| OutcomeCount {
        outcome: outcome.to_string(),
        reason: reason.to_string(),
        count,
    };
    let hostile = "a\"b\\c\nd} 9\n# EOF";
    let mut details = vec![
        detail("delivered", "2xx", 3),
        detail("deferred", hostile, 2),
        detail("exploded\"\n", "x", 5),
        detail("deferred", "503", 4),
    ];
    details.extend((0..200).map(|i| detail("dropped", &format!("reason-{i}"), 1)));
    let total: u32 = details.iter().map(|d| d.count).sum();
    metrics.record_report(&DeliveryReport {
        delivered: 3,
        deferred: 6,
        dropped: 200,
        destroyed: 5,
        details,
    });
    let text = metrics.render(Some(7), None);
    let samples = parse(&text);
    let pushes: Vec<&Value> = samples
        .iter()
        .filter(|s| s["name"] == "jmap_push_pushes_total")
        .collect();

    // Every push is counted, once.
    let counted: f64 = pushes.iter().filter_map(|s| s["value"].as_f64()).sum();
    assert_eq!(counted, f64::from(total), "{pushes:?}");
    let pushes_of = |outcome: &str, reason: &str| {
        sample(
            &samples,
            "jmap_push_pushes_total",
            json!({"outcome": outcome, "reason": reason}),
        )
    };
    // The hostile reason reads back as it was given.
    assert_eq!(pushes_of("deferred", hostile), Some(2.0), "{text}");
    assert_eq!(pushes_of("deferred", "503"), Some(4.0), "{text}");
    // An outcome the plugin does not define is `other`.
    assert_eq!(pushes_of("other", "x"), Some(5.0), "{text}");
    // Past the bound, new reasons share one series.
    assert_eq!(pushes.len(), MAX_PUSH_SERIES + 1, "{text}");
    assert_eq!(
        pushes_of("dropped", OVERFLOW_REASON),
        Some((204 - MAX_PUSH_SERIES) as f64),
        "{text}"
    );
    assert_eq!(
        sample(&samples, "jmap_push_subscriptions", json!({})),
        Some(7.0)
    );
    assert!(
        !samples
            .iter()
            .any(|s| s["name"] == "jmap_push_pending_deliveries"),
        "an unknown gauge is left out"
    );
}
