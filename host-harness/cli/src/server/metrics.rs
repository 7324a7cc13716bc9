//! Prometheus text-format metrics, kept by hand (a few counters and one
//! histogram need no registry crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use jmap_web_push_guest::repo::{PENDING_PREFIX, SUB_PREFIX};

use jmap_web_push_host::net::{OutError, OutResponse};
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::DeliveryReport;

/// Upper bounds of the gateway latency histogram, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Everything `/metrics` reports that is counted as it happens.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (outcome, reason) → pushes.
    pushes: Mutex<BTreeMap<(String, String), u64>>,
    /// Gateway latency histogram: bucket counts (cumulative at render).
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// Requests by result class (`2xx`, `4xx`, `timeout`, ...).
    requests: Mutex<BTreeMap<String, u64>>,
    /// Guest traps and deadline overruns.
    pub traps: AtomicU64,
    /// JMAP API requests served.
    pub api_requests: AtomicU64,
    /// Events accepted on `/events`.
    pub events: AtomicU64,
    /// The store gauges and the count that refreshes them.
    gauges: Mutex<StoreGauges>,
    /// Woken when a count finishes.
    counted: tokio::sync::Notify,
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

    /// Counts a delivery report.
    pub fn record_report(&self, report: &DeliveryReport) {
        if let Ok(mut p) = self.pushes.lock() {
            for d in &report.details {
                *p.entry((d.outcome.clone(), d.reason.clone())).or_default() += u64::from(d.count);
            }
        }
    }

    fn record_request(&self, seconds: f64, class: String) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        if let Ok(mut r) = self.requests.lock() {
            *r.entry(class).or_default() += 1;
        }
    }

    /// Renders the text format; `subscriptions` and `pending` are gauges
    /// read from the store at scrape time.
    pub fn render(&self, subscriptions: Option<u64>, pending: Option<u64>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP jmap_push_pushes_total Pushes by outcome and reason."
        );
        let _ = writeln!(out, "# TYPE jmap_push_pushes_total counter");
        if let Ok(p) = self.pushes.lock() {
            for ((outcome, reason), n) in p.iter() {
                let _ = writeln!(
                    out,
                    "jmap_push_pushes_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP jmap_push_gateway_requests_total Requests to push services by result."
        );
        let _ = writeln!(out, "# TYPE jmap_push_gateway_requests_total counter");
        if let Ok(r) = self.requests.lock() {
            for (class, n) in r.iter() {
                let _ = writeln!(
                    out,
                    "jmap_push_gateway_requests_total{{result=\"{class}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP jmap_push_gateway_latency_seconds Time until a push service answered."
        );
        let _ = writeln!(out, "# TYPE jmap_push_gateway_latency_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "jmap_push_gateway_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "jmap_push_gateway_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "jmap_push_gateway_latency_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "jmap_push_gateway_latency_seconds_count {count}");
        for (name, help, v) in [
            (
                "jmap_push_guest_traps_total",
                "Plugin calls that trapped or overran the CPU deadline.",
                self.traps.load(Ordering::Relaxed),
            ),
            (
                "jmap_push_api_requests_total",
                "JMAP API requests.",
                self.api_requests.load(Ordering::Relaxed),
            ),
            (
                "jmap_push_events_total",
                "Events accepted on /events.",
                self.events.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        if let Some(s) = subscriptions {
            let _ = writeln!(out, "# HELP jmap_push_subscriptions Stored push subscriptions.\n# TYPE jmap_push_subscriptions gauge\njmap_push_subscriptions {s}");
        }
        if let Some(p) = pending {
            let _ = writeln!(out, "# HELP jmap_push_pending_deliveries Subscriptions with a pending push.\n# TYPE jmap_push_pending_deliveries gauge\njmap_push_pending_deliveries {p}");
        }
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
