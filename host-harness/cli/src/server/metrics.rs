//! `GET /metrics`: the `prometheus-client` crate's registry and its
//! OpenMetrics text encoding (escaping, `_total` suffixes, `# EOF`), with
//! the store gauges counted at scrape time.
//!
//! The `outcome` and `reason` labels come from the plugin's delivery
//! reports, across the sandbox boundary: the host takes them as untrusted
//! text. An outcome other than the four the plugin defines is counted as
//! `other`, a reason is cut to [`MAX_REASON_LEN`] characters, and once
//! [`MAX_PUSH_SERIES`] distinct pairs exist a new pair is counted under
//! `reason="other"`, so a misbehaving plugin cannot grow the scrape or the
//! host's memory without bound.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

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

/// Most distinct (outcome, reason) series; later new pairs count as
/// `reason="other"`.
pub const MAX_PUSH_SERIES: usize = 64;

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
        let Ok(mut series) = self.push_series.lock() else {
            return;
        };
        for d in &report.details {
            let outcome = if OUTCOMES.contains(&d.outcome.as_str()) {
                d.outcome.clone()
            } else {
                "other".to_string()
            };
            let mut reason: String = d.reason.chars().take(MAX_REASON_LEN).collect();
            if !series.contains(&(outcome.clone(), reason.clone())) {
                if series.len() >= MAX_PUSH_SERIES {
                    reason = "other".to_string();
                }
                series.insert((outcome.clone(), reason.clone()));
            }
            self.pushes
                .get_or_create(&PushLabels { outcome, reason })
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
