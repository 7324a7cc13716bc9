//! `GET /metrics`: the `prometheus-client` crate's registry and its
//! OpenMetrics text encoding (escaping, `_total` suffixes, `# EOF`), with
//! the store gauges counted at scrape time.
//!
//! The `outcome` and `reason` labels come from the plugin's delivery
//! reports, across the sandbox boundary, and a reason may carry a push
//! service's HTTP status, which whoever runs that service chooses. So the
//! host bounds them ([`push_labels`]): an outcome other than the four the
//! plugin defines is `other`; a status is kept for the statuses in
//! [`KEPT_STATUSES`] and counted by class (`4xx`, ...) otherwise (any three
//! digits from 100 to 999, as HTTP clients pass them on); any other
//! reason is cut to [`MAX_REASON_LEN`] characters, and once
//! [`MAX_PUSH_SERIES`] distinct pairs exist a new pair is counted under
//! `reason="_overflow"` (one such series per outcome at most). A scrape
//! and the host's memory stay bounded whatever the plugin or the push
//! services send.
//!
//! Compared with the hand-written Prometheus 0.0.4 text of earlier
//! versions: the same metric names, bucket bounds written as floats
//! (`le="1.0"`, as Prometheus 3 normalises them anyway), no HELP/TYPE
//! lines for a family with no series yet, and `# EOF` at the end.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use std::time::{Duration, Instant};

use jmap_web_push_guest::repo::{PENDING_PREFIX, SUB_PREFIX};

use jmap_web_push_host::net::{OutError, OutResponse};
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::DeliveryReport;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the gateway latency histogram, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The outcomes a delivery report may name; anything else is `other`.
const OUTCOMES: [&str; 4] = ["delivered", "deferred", "dropped", "destroyed"];

/// Most distinct (outcome, reason) series before new pairs count as
/// `reason="_overflow"` (plus one such series per outcome).
pub const MAX_PUSH_SERIES: usize = 64;

/// The reason new pairs count under past [`MAX_PUSH_SERIES`].
pub const OVERFLOW_REASON: &str = "_overflow";

/// HTTP statuses kept as reasons; any other status counts by its class.
pub const KEPT_STATUSES: [u16; 12] = [400, 401, 403, 404, 408, 410, 413, 429, 500, 502, 503, 504];

/// Longest reason label kept, in characters.
pub const MAX_REASON_LEN: usize = 64;

/// Labels of `jmap_push_pushes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    outcome: String,
    reason: String,
}

/// Labels of `jmap_push_gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    result: String,
}

/// Everything `/metrics` reports that is counted as it happens.
#[derive(Debug)]
pub struct Metrics {
    /// The counters and the histogram, registered once.
    registry: Registry,
    /// Pushes by (outcome, reason).
    pushes: Family<PushLabels, Counter>,
    /// The (outcome, reason) pairs counted so far (bounded).
    push_series: Mutex<BTreeSet<(String, String)>>,
    /// Requests to push services by result class (`2xx`, `timeout`, ...).
    requests: Family<RequestLabels, Counter>,
    /// Time until a push service answered.
    latency: Histogram,
    /// Guest traps and deadline overruns.
    pub traps: Counter,
    /// JMAP API requests served.
    pub api_requests: Counter,
    /// Events accepted on `/events`.
    pub events: Counter,
    /// The store gauges and the count that refreshes them.
    gauges: Mutex<StoreGauges>,
    /// Woken when a count finishes.
    counted: tokio::sync::Notify,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let pushes = Family::<PushLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(BUCKETS);
        let (traps, api_requests, events) =
            (Counter::default(), Counter::default(), Counter::default());
        let mut registry = Registry::default();
        registry.register(
            "jmap_push_pushes",
            "Pushes by outcome and reason",
            pushes.clone(),
        );
        registry.register(
            "jmap_push_gateway_requests",
            "Requests to push services by result",
            requests.clone(),
        );
        registry.register(
            "jmap_push_gateway_latency_seconds",
            "Time until a push service answered",
            latency.clone(),
        );
        registry.register(
            "jmap_push_guest_traps",
            "Plugin calls that trapped or overran the CPU deadline",
            traps.clone(),
        );
        registry.register(
            "jmap_push_api_requests",
            "JMAP API requests",
            api_requests.clone(),
        );
        registry.register(
            "jmap_push_events",
            "Events accepted on /events",
            events.clone(),
        );
        Metrics {
            registry,
            pushes,
            push_series: Mutex::default(),
            requests,
            latency,
            traps,
            api_requests,
            events,
            gauges: Mutex::default(),
            counted: tokio::sync::Notify::new(),
        }
    }
}

/// The last figures the store gave, kept when a later count fails.
#[derive(Debug, Default)]
struct StoreGauges {
    /// When the last count finished (successful or not).
    counted_at: Option<Instant>,
    /// A count is running.
    counting: bool,
    subscriptions: Option<u64>,
    pending: Option<u64>,
}

/// How long a scrape waits for a count it started or found running
/// before it answers with the figures it has.
const COUNT_WAIT: Duration = Duration::from_secs(1);

impl Metrics {
    /// The subscriptions and pending-push gauges. When the last count is
    /// older than `max_age` and none is running, a new one starts on a
    /// blocking thread; it runs to its end even if the scrape goes away,
    /// and at most one runs at a time. The scrape waits for a running
    /// count at most `COUNT_WAIT` (1 s), then answers with the last figures the
    /// store gave (`None` before the first successful count).
    pub async fn store_gauges(
        self: &Arc<Self>,
        store: &Arc<dyn KvStore>,
        max_age: Duration,
    ) -> (Option<u64>, Option<u64>) {
        // Registered before the state is read, so a count that finishes in
        // between still wakes this scrape.
        let counted = self.counted.notified();
        let (start, wait) = {
            let Ok(mut g) = self.gauges.lock() else {
                return (None, None);
            };
            let due = g.counted_at.is_none_or(|at| at.elapsed() >= max_age);
            let start = due && !g.counting;
            if start {
                g.counting = true;
            }
            (start, g.counting)
        };
        if start {
            let (me, store) = (self.clone(), store.clone());
            tokio::task::spawn_blocking(move || {
                let subscriptions = store.count_prefix(SUB_PREFIX).ok();
                let pending = store.count_prefix(PENDING_PREFIX).ok();
                if let Ok(mut g) = me.gauges.lock() {
                    g.counting = false;
                    g.counted_at = Some(Instant::now());
                    g.subscriptions = subscriptions.or(g.subscriptions);
                    g.pending = pending.or(g.pending);
                }
                me.counted.notify_waiters();
            });
        }
        if wait {
            let _ = tokio::time::timeout(COUNT_WAIT, counted).await;
        }
        match self.gauges.lock() {
            Ok(g) => (g.subscriptions, g.pending),
            Err(_) => (None, None),
        }
    }

    /// Counts a delivery report (its labels bounded as the module docs
    /// say).
    pub fn record_report(&self, report: &DeliveryReport) {
        let mut series = self
            .push_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for d in &report.details {
            let labels = push_labels(&mut series, &d.outcome, &d.reason);
            self.pushes
                .get_or_create(&labels)
                .inc_by(u64::from(d.count));
        }
    }

    fn record_request(&self, seconds: f64, result: String) {
        self.latency.observe(seconds);
        self.requests.get_or_create(&RequestLabels { result }).inc();
    }

    /// Renders the OpenMetrics text ([`CONTENT_TYPE`]); `subscriptions`
    /// and `pending` are gauges read from the store at scrape time, left
    /// out while unknown.
    pub fn render(&self, subscriptions: Option<u64>, pending: Option<u64>) -> String {
        let mut gauges = Registry::default();
        for (name, help, value) in [
            (
                "jmap_push_subscriptions",
                "Stored push subscriptions",
                subscriptions,
            ),
            (
                "jmap_push_pending_deliveries",
                "Subscriptions with a pending push",
                pending,
            ),
        ] {
            if let Some(v) = value {
                let gauge = Gauge::<i64>::default();
                gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
                gauges.register(name, help, gauge);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &gauges))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// The labels one (outcome, reason) of a delivery report is counted
/// under, bounded as the module docs say; `series` holds the pairs counted
/// so far.
fn push_labels(series: &mut BTreeSet<(String, String)>, outcome: &str, reason: &str) -> PushLabels {
    let outcome = if OUTCOMES.contains(&outcome) {
        outcome
    } else {
        "other"
    };
    let status = (reason.len() == 3)
        .then(|| reason.parse::<u16>().ok())
        .flatten()
        .filter(|s| (100..=999).contains(s));
    let reason = match status {
        Some(s) if KEPT_STATUSES.contains(&s) => s.to_string(),
        Some(s) => format!("{}xx", s / 100),
        None => reason.chars().take(MAX_REASON_LEN).collect(),
    };
    let mut key = (outcome.to_string(), reason);
    if !series.contains(&key) {
        if series.len() >= MAX_PUSH_SERIES {
            key.1 = OVERFLOW_REASON.to_string();
        }
        series.insert(key.clone());
    }
    PushLabels {
        outcome: key.0,
        reason: key.1,
    }
}

impl Metrics {
    /// An observer for [`jmap_web_push_host::net::HttpClient::with_observer`] that counts
    /// every request's result and latency.
    pub fn http_observer(self: &Arc<Self>) -> jmap_web_push_host::net::Observer {
        let metrics = self.clone();
        Arc::new(move |elapsed, result: &Result<OutResponse, OutError>| {
            let class = match result {
                Ok(resp) => format!("{}xx", resp.status / 100),
                Err(OutError::Timeout) => "timeout".into(),
                Err(OutError::DeniedByPolicy(_)) => "denied".into(),
                Err(OutError::Dns(_)) => "dns".into(),
                Err(OutError::Tls(_)) => "tls".into(),
                Err(_) => "connection".into(),
            };
            metrics.record_request(elapsed.as_secs_f64(), class);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(
        series: &mut BTreeSet<(String, String)>,
        outcome: &str,
        reason: &str,
    ) -> (String, String) {
        let l = push_labels(series, outcome, reason);
        (l.outcome, l.reason)
    }

    fn pair(outcome: &str, reason: &str) -> (String, String) {
        (outcome.to_string(), reason.to_string())
    }

    #[test]
    fn push_service_statuses_map_to_a_fixed_set() {
        let mut series = BTreeSet::new();
        assert_eq!(
            labels(&mut series, "deferred", "503"),
            pair("deferred", "503")
        );
        assert_eq!(
            labels(&mut series, "destroyed", "404"),
            pair("destroyed", "404")
        );
        assert_eq!(
            labels(&mut series, "deferred", "599"),
            pair("deferred", "5xx")
        );
        assert_eq!(
            labels(&mut series, "dropped", "418"),
            pair("dropped", "4xx")
        );
        // Not a three-digit status: kept as text.
        assert_eq!(
            labels(&mut series, "dropped", "0503"),
            pair("dropped", "0503")
        );
        assert_eq!(
            labels(&mut series, "dropped", "+50"),
            pair("dropped", "+50")
        );
        // A push service choosing every status it can (hyper passes 100 to
        // 999) fills the kept statuses and nine classes, nothing more.
        let mut series = BTreeSet::new();
        for status in 100..1000 {
            labels(&mut series, "deferred", &status.to_string());
        }
        assert_eq!(series.len(), KEPT_STATUSES.len() + 9, "{series:?}");
        assert!(!series.iter().any(|(_, r)| r == OVERFLOW_REASON));
    }

    #[test]
    fn unknown_outcomes_and_long_reasons_are_bounded() {
        let mut series = BTreeSet::new();
        assert_eq!(labels(&mut series, "exploded\n", "x"), pair("other", "x"));
        let long = "é".repeat(MAX_REASON_LEN + 10);
        let (_, reason) = labels(&mut series, "dropped", &long);
        assert_eq!(reason.chars().count(), MAX_REASON_LEN);
        assert!(long.starts_with(&reason));
    }

    #[test]
    fn past_the_series_bound_new_pairs_share_one_overflow_series_per_outcome() {
        let mut series = BTreeSet::new();
        for i in 0..MAX_PUSH_SERIES {
            assert_eq!(
                labels(&mut series, "dropped", &format!("r{i}")).1,
                format!("r{i}")
            );
        }
        assert_eq!(
            labels(&mut series, "dropped", "new"),
            pair("dropped", OVERFLOW_REASON)
        );
        assert_eq!(
            labels(&mut series, "dropped", "newer"),
            pair("dropped", OVERFLOW_REASON)
        );
        assert_eq!(
            labels(&mut series, "deferred", "new"),
            pair("deferred", OVERFLOW_REASON)
        );
        // A pair counted before the bound keeps its own series.
        assert_eq!(labels(&mut series, "dropped", "r0"), pair("dropped", "r0"));
        assert_eq!(series.len(), MAX_PUSH_SERIES + 2);
        for outcome in OUTCOMES.iter().chain(&["other"]) {
            labels(&mut series, outcome, "yet another");
        }
        assert_eq!(series.len(), MAX_PUSH_SERIES + OUTCOMES.len() + 1);
    }

    #[test]
    fn every_reported_push_is_counted_once_in_the_text() {
        let metrics = Metrics::default();
        let details = (0..100)
            .map(|i| jmap_web_push_host::OutcomeCount {
                outcome: "dropped".into(),
                reason: format!("reason-{i}"),
                count: 2,
            })
            .collect();
        metrics.record_report(&DeliveryReport {
            delivered: 0,
            deferred: 0,
            dropped: 200,
            destroyed: 0,
            details,
        });
        let text = metrics.render(None, None);
        let overflow = format!(
            "jmap_push_pushes_total{{outcome=\"dropped\",reason=\"{OVERFLOW_REASON}\"}} {}",
            2 * (100 - MAX_PUSH_SERIES)
        );
        assert!(text.contains(&overflow), "{text}");
        assert!(text.contains("jmap_push_pushes_total{outcome=\"dropped\",reason=\"reason-0\"} 2"));
        assert_eq!(
            text.matches("jmap_push_pushes_total{").count(),
            MAX_PUSH_SERIES + 1
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
