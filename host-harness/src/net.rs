//! Outbound HTTP for the `http-out` import: a pooled reqwest/rustls client
//! that sends a batch concurrently, never follows redirects, bounds time,
//! concurrency and response size, and refuses forbidden destinations.
//!
//! The address guard runs at two points: IP-literal URLs are checked before
//! sending (as the URL parser reads them, so `0x7f.1` is 127.0.0.1), and
//! every address a host name resolves to is checked inside the resolver the
//! connector uses, so the address connected to is always one that was
//! checked (no DNS-rebinding gap).
//!
//! Connections: at most [`HttpPolicy::max_connections_per_origin`] requests
//! to one origin are in flight at once, and the pool keeps that many idle
//! connections per origin, so a large fan-out to one push service reuses a
//! bounded set of keep-alive connections instead of opening (and then
//! dropping) one per concurrent request. Once an origin has answered over
//! HTTP/2 (negotiated by ALPN, as the large push services do), its requests
//! are streams multiplexed on one connection, and its limit rises to
//! [`HttpPolicy::max_streams_per_http2_origin`] (at most half of all
//! requests in flight, so a stalled one cannot take every slot): with 32
//! requests in flight and a 50 ms round trip, one push service could
//! otherwise take only ~640 pushes/s, well below what the plugin encrypts
//! on two cores.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;

use jmap_web_push_guest::addr::{classify, DeniedRange};

/// One outbound POST (the WIT `http-out.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Total timeout asked for, ms.
    pub timeout_ms: u32,
}

/// An answer (the WIT `http-out.response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The first octets of the body.
    pub body_prefix: Vec<u8>,
}

/// Why no answer (the WIT `http-out.error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutError {
    /// Timed out.
    #[error("timed out")]
    Timeout,
    /// Connection failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// Name did not resolve.
    #[error("DNS failure: {0}")]
    Dns(String),
    /// TLS failed.
    #[error("TLS failure: {0}")]
    Tls(String),
    /// Refused by policy.
    #[error("refused by policy: {0}")]
    DeniedByPolicy(String),
    /// Request too large.
    #[error("too large")]
    TooLarge,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Limits and the test-only loopback allowance.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Test only: allow `http://` URLs and loopback addresses. Off by
    /// default; logged when on.
    pub allow_insecure_loopback: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Upper bound on any request's total time.
    pub max_timeout: Duration,
    /// Most requests in flight at once (across all batches).
    pub max_concurrency: usize,
    /// Most requests in flight at once to one origin (scheme, host, port),
    /// and the number of idle keep-alive connections kept per origin.
    pub max_connections_per_origin: usize,
    /// Most requests in flight at once to an origin that answered over
    /// HTTP/2 (streams on one connection). Used as at most half of
    /// `max_concurrency`, so one stalled push service can never hold every
    /// slot, and never below `max_connections_per_origin`. If the origin
    /// later answers over HTTP/1.x, its limit falls back to
    /// `max_connections_per_origin`.
    pub max_streams_per_http2_origin: usize,
    /// Test only: speak HTTP/2 without TLS (h2c with prior knowledge), to
    /// test against loopback HTTP/2 servers. Real push services negotiate
    /// HTTP/2 over TLS (ALPN) without this.
    pub http2_prior_knowledge: bool,
    /// Most response body octets read (the rest is discarded).
    pub max_body_prefix: usize,
    /// Largest request body sent.
    pub max_request_body: usize,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            allow_insecure_loopback: false,
            connect_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(30),
            max_concurrency: 256,
            max_connections_per_origin: 32,
            max_streams_per_http2_origin: 128,
            http2_prior_knowledge: false,
            max_body_prefix: 4096,
            max_request_body: 8192,
        }
    }
}

/// The address guard: `Err` with the reason when `ip` may not be contacted.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), DeniedRange> {
    match classify(ip) {
        None => Ok(()),
        Some(DeniedRange::Loopback) if allow_loopback => Ok(()),
        Some(r) => Err(r),
    }
}

#[derive(Debug)]
struct DeniedAddress(String);

impl std::fmt::Display for DeniedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeniedAddress {}

/// Resolves with the system resolver and drops forbidden addresses; fails
/// when none is left.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                .collect();
            let mut denied = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match check_addr(a.ip(), allow) {
                    Ok(()) => true,
                    Err(r) => {
                        denied = Some(format!("{host} resolves to {} ({r})", a.ip()));
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let why = denied.unwrap_or_else(|| format!("{host} has no addresses"));
                return Err(
                    Box::new(DeniedAddress(why)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// What the runtime needs from an outbound HTTP implementation: send a
/// batch concurrently, one result per request in order. [`HttpClient`] is
/// the production one; benchmarks and tests may supply others.
pub trait HttpSend: Send + Sync {
    /// Sends `requests`; blocks until every one has an answer or an error.
    fn send_batch(&self, requests: Vec<OutRequest>) -> Vec<Result<OutResponse, OutError>>;

    /// Starts sending `requests` and returns without waiting (the WIT
    /// `start-batch`). The default sends synchronously, so an implementation
    /// only overrides it when it can send in the background.
    fn start_batch(&self, requests: Vec<OutRequest>) -> PendingBatch {
        PendingBatch::answered(self.send_batch(requests))
    }
}

impl HttpSend for HttpClient {
    fn send_batch(&self, requests: Vec<OutRequest>) -> Vec<Result<OutResponse, OutError>> {
        HttpClient::send_batch(self, requests)
    }

    fn start_batch(&self, requests: Vec<OutRequest>) -> PendingBatch {
        HttpClient::start_batch(self, requests)
    }
}

type SendTask = tokio::task::JoinHandle<Vec<Result<OutResponse, OutError>>>;

/// A batch on its way: [`PendingBatch::wait`] gives one result per request,
/// in order. Dropping it lets the requests finish unobserved.
pub struct PendingBatch(PendingInner);

enum PendingInner {
    Answered(Vec<Result<OutResponse, OutError>>),
    /// The batch's task and its number of requests.
    Task(SendTask, usize),
}

impl PendingBatch {
    /// A batch whose answers are already known.
    pub fn answered(answers: Vec<Result<OutResponse, OutError>>) -> Self {
        PendingBatch(PendingInner::Answered(answers))
    }

    /// Blocks until every request has its answer.
    pub fn wait(self) -> Vec<Result<OutResponse, OutError>> {
        match self.0 {
            PendingInner::Answered(a) => a,
            PendingInner::Task(task, n) => match futures::executor::block_on(task) {
                Ok(answers) => answers,
                Err(e) => (0..n)
                    .map(|_| Err(OutError::Other(format!("send task failed: {e}"))))
                    .collect(),
            },
        }
    }
}

impl std::fmt::Debug for PendingBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PendingInner::Answered(a) => write!(f, "PendingBatch(answered: {})", a.len()),
            PendingInner::Task(_, n) => write!(f, "PendingBatch(in flight: {n})"),
        }
    }
}

/// The outbound HTTP client.
pub struct HttpClient {
    client: reqwest::Client,
    /// Always `Some` until dropped (taken in `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    policy: HttpPolicy,
    permits: Arc<Semaphore>,
    origins: Arc<OriginLimits>,
    observer: Option<Observer>,
}

/// One semaphore per origin, created on first use. Entries nobody holds are
/// dropped when the map grows past [`OriginLimits::TRACKED`], so many
/// distinct push hosts cannot grow it without bound.
struct OriginLimits {
    per_origin: usize,
    per_http2_origin: usize,
    map: Mutex<HashMap<String, Arc<OriginSlot>>>,
}

/// One origin's in-flight limit.
struct OriginSlot {
    permits: Arc<Semaphore>,
    /// Whether the origin last answered over HTTP/2 (and so has the
    /// raised limit).
    http2: std::sync::atomic::AtomicBool,
}

impl OriginLimits {
    const TRACKED: usize = 1024;

    fn slot(&self, origin: &str) -> Arc<OriginSlot> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(origin) {
            return s.clone();
        }
        if map.len() >= Self::TRACKED {
            map.retain(|_, s| Arc::strong_count(s) > 1 || Arc::strong_count(&s.permits) > 1);
        }
        let s = Arc::new(OriginSlot {
            permits: Arc::new(Semaphore::new(self.per_origin.max(1))),
            http2: Default::default(),
        });
        map.insert(origin.to_string(), s.clone());
        s
    }

    /// Records the protocol an origin answered with: the first HTTP/2
    /// answer raises its limit to `per_http2_origin`, a later HTTP/1.x
    /// answer lowers it again (permits in use are taken back as they are
    /// returned).
    fn answered_with(&self, slot: &OriginSlot, version: reqwest::Version) {
        use std::sync::atomic::Ordering;
        let extra = self.per_http2_origin.saturating_sub(self.per_origin.max(1));
        if extra == 0 {
            return;
        }
        let http2 = version == reqwest::Version::HTTP_2;
        // Called for every answer: only a change of protocol writes the
        // flag, so concurrent answers do not bounce its cache line.
        if slot.http2.load(Ordering::Acquire) == http2
            || slot.http2.swap(http2, Ordering::AcqRel) == http2
        {
            return;
        }
        if http2 {
            slot.permits.add_permits(extra);
        } else {
            let permits = slot.permits.clone();
            tokio::spawn(async move {
                // Take the extra permits back as the streams in flight end.
                let extra = u32::try_from(extra).unwrap_or(u32::MAX);
                if let Ok(p) = permits.acquire_many_owned(extra).await {
                    p.forget();
                }
            });
        }
    }
}

/// `scheme://host:port` of a URL, the key of the per-origin limit.
fn origin_key(url: &reqwest::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Called once per request with the time from the start of its batch to
/// the answer or the error (including any wait for a connection slot) and
/// the result; for metrics.
pub type Observer = Arc<dyn Fn(Duration, &Result<OutResponse, OutError>) + Send + Sync>;

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with its own small I/O runtime.
    pub fn new(policy: HttpPolicy) -> anyhow::Result<Self> {
        if policy.allow_insecure_loopback {
            tracing::warn!("TEST MODE: outbound HTTP allows http:// and loopback destinations");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http-out")
            .enable_all()
            .build()?;
        let mut builder = reqwest::Client::builder();
        if policy.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(policy.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(policy.max_connections_per_origin.max(1))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_loopback: policy.allow_insecure_loopback,
            }))
            .https_only(!policy.allow_insecure_loopback)
            .user_agent(concat!("jmap-web-push/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpClient {
            client,
            runtime: Some(runtime),
            permits: Arc::new(Semaphore::new(policy.max_concurrency.max(1))),
            origins: Arc::new(OriginLimits {
                per_origin: policy.max_connections_per_origin,
                per_http2_origin: policy
                    .max_streams_per_http2_origin
                    .min(policy.max_concurrency / 2)
                    .max(policy.max_connections_per_origin),
                map: Mutex::new(HashMap::new()),
            }),
            policy,
            observer: None,
        })
    }

    /// Reports every request's latency and result to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// Sends every request concurrently; one result per request, in order.
    /// Blocks the calling thread (never call it from inside an async task
    /// without `spawn_blocking`).
    pub fn send_batch(&self, requests: Vec<OutRequest>) -> Vec<Result<OutResponse, OutError>> {
        self.start_batch(requests).wait()
    }

    /// Starts every request on the client's runtime and returns at once;
    /// [`PendingBatch::wait`] collects the answers.
    pub fn start_batch(&self, requests: Vec<OutRequest>) -> PendingBatch {
        let Some(runtime) = &self.runtime else {
            return PendingBatch::answered(
                requests
                    .iter()
                    .map(|_| Err(OutError::Other("HTTP client shut down".into())))
                    .collect(),
            );
        };
        // One task per batch, not one per request: the requests of a batch
        // are polled together, which saves a task and a cross-thread wake-up
        // per request (the connections' own tasks still run on every
        // worker, so the requests are as concurrent as before).
        let client = self.client.clone();
        let policy = self.policy.clone();
        let permits = self.permits.clone();
        let origins = self.origins.clone();
        let observer = self.observer.clone();
        let n = requests.len();
        let task = runtime.spawn(async move {
            let start = std::time::Instant::now();
            let sends = requests.into_iter().map(|r| {
                send_limited(
                    &client,
                    &policy,
                    &permits,
                    &origins,
                    observer.as_ref(),
                    start,
                    r,
                )
            });
            join_all(sends).await
        });
        PendingBatch(PendingInner::Task(task, n))
    }
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        // The owner may be dropped inside an async context (a server
        // shutting down); a blocking runtime drop would panic there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends one request under the per-origin and global limits, bounded by
/// its timeout (which covers the wait for a slot), and reports it to the
/// observer.
async fn send_limited(
    client: &reqwest::Client,
    policy: &HttpPolicy,
    permits: &Arc<Semaphore>,
    origins: &OriginLimits,
    observer: Option<&Observer>,
    start: std::time::Instant,
    r: OutRequest,
) -> Result<OutResponse, OutError> {
    // The request's timeout covers the wait for a connection slot too, so
    // requests queued behind a stalled push service end as timeouts
    // instead of waiting unbounded.
    let timeout = request_timeout(policy, &r);
    let send = async {
        let url = precheck(policy, &r)?;
        // The origin's permit first: requests queued behind a slow push
        // service hold none of the global permits.
        let slot = origins.slot(&origin_key(&url));
        let _origin = slot.permits.clone().acquire_owned().await;
        let _permit = permits.clone().acquire_owned().await;
        let (answer, version) = send_one(client, policy, url, r).await?;
        origins.answered_with(&slot, version);
        Ok(answer)
    };
    let result = tokio::time::timeout(timeout, send)
        .await
        .unwrap_or(Err(OutError::Timeout));
    if let Some(o) = observer {
        o(start.elapsed(), &result);
    }
    result
}

fn precheck(policy: &HttpPolicy, r: &OutRequest) -> Result<reqwest::Url, OutError> {
    let url = reqwest::Url::parse(&r.url).map_err(|e| OutError::Other(format!("bad URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_loopback => {}
        s => {
            return Err(OutError::DeniedByPolicy(format!(
                "scheme {s} is not allowed"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutError::DeniedByPolicy(
            "URL carries user information".into(),
        ));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(OutError::Other("URL has no host".into())),
    };
    if let Some(ip) = literal {
        check_addr(ip, policy.allow_insecure_loopback)
            .map_err(|range| OutError::DeniedByPolicy(format!("{ip} is {range}")))?;
    }
    if r.body.len() > policy.max_request_body {
        return Err(OutError::TooLarge);
    }
    Ok(url)
}

/// The total time allowed for `r`: what the plugin asked for, at most the
/// policy's cap.
fn request_timeout(policy: &HttpPolicy, r: &OutRequest) -> Duration {
    Duration::from_millis(u64::from(r.timeout_ms.max(1))).min(policy.max_timeout)
}

/// Sends one checked request; the caller bounds the total time.
async fn send_one(
    client: &reqwest::Client,
    policy: &HttpPolicy,
    url: reqwest::Url,
    r: OutRequest,
) -> Result<(OutResponse, reqwest::Version), OutError> {
    // No reqwest timeout: the caller's `tokio::time::timeout` bounds the
    // whole exchange, body included.
    let mut builder = client.post(url);
    for (name, value) in &r.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let mut resp = builder.body(r.body).send().await.map_err(map_error)?;
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect();
    let mut body_prefix = Vec::new();
    while body_prefix.len() < policy.max_body_prefix {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = policy.max_body_prefix - body_prefix.len();
                body_prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok((
        OutResponse {
            status,
            headers,
            body_prefix,
        },
        version,
    ))
}

fn map_error(e: reqwest::Error) -> OutError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<DeniedAddress>() {
            return OutError::DeniedByPolicy(d.0.clone());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::Other && io.to_string().contains("lookup") {
                return OutError::Dns(io.to_string());
            }
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            return OutError::Tls(s.to_string());
        }
        source = s.source();
    }
    if e.is_timeout() {
        OutError::Timeout
    } else if e.is_connect() {
        let mut msg = e.to_string();
        let mut s = std::error::Error::source(&e);
        while let Some(inner) = s {
            msg = format!("{msg}: {inner}");
            s = inner.source();
        }
        if msg.contains("dns error") || msg.contains("failed to lookup") {
            OutError::Dns(msg)
        } else {
            OutError::Connection(msg)
        }
    } else {
        OutError::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_limit_follows_the_protocol_it_answered_with() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let limits = OriginLimits {
                per_origin: 4,
                per_http2_origin: 40,
                map: Mutex::new(HashMap::new()),
            };
            let slot = limits.slot("https://push.example:443");
            assert_eq!(slot.permits.available_permits(), 4);
            limits.answered_with(&slot, reqwest::Version::HTTP_11);
            assert_eq!(slot.permits.available_permits(), 4);
            limits.answered_with(&slot, reqwest::Version::HTTP_2);
            limits.answered_with(&slot, reqwest::Version::HTTP_2);
            assert_eq!(slot.permits.available_permits(), 40, "raised once");
            // Back to HTTP/1.1 while 10 streams are in flight: the extra
            // permits are taken back as the streams end.
            let in_flight = slot.permits.clone().acquire_many_owned(10).await.unwrap();
            limits.answered_with(&slot, reqwest::Version::HTTP_11);
            tokio::task::yield_now().await;
            assert!(slot.permits.available_permits() <= 30);
            drop(in_flight);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(slot.permits.available_permits(), 4);
            // The same origin is the same slot.
            assert!(Arc::ptr_eq(&slot, &limits.slot("https://push.example:443")));
        });
    }
}
