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
    /// The last store count: when, subscriptions, pending pushes. One
    /// scrape counts at a time; the others wait and take its figures.
    gauges: tokio::sync::Mutex<Option<StoreCount>>,
}

/// A store count: when, subscriptions, pending pushes (`None`: the store
/// could not count).
type StoreCount = (Instant, Option<u64>, Option<u64>);

impl Metrics {
    /// The subscriptions and pending-push gauges, counted by the store
    /// (off the async workers) when the last count is older than
    /// `max_age`; `None` for a count the store could not give.
    pub async fn store_gauges(
        &self,
        store: &Arc<dyn KvStore>,
        max_age: Duration,
    ) -> (Option<u64>, Option<u64>) {
        let mut last = self.gauges.lock().await;
        if let Some((at, subs, pending)) = *last {
            if at.elapsed() < max_age {
                return (subs, pending);
            }
        }
        let store = store.clone();
        let counted = tokio::task::spawn_blocking(move || {
            (
                store.count_prefix(SUB_PREFIX).ok(),
                store.count_prefix(PENDING_PREFIX).ok(),
            )
        })
        .await
        .unwrap_or((None, None));
        *last = Some((Instant::now(), counted.0, counted.1));
        counted
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
