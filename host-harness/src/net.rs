//! Outbound HTTP for the `http-out` import: a pooled hyper/rustls client
//! that sends a batch concurrently, never follows redirects, bounds time,
//! concurrency and response size, and refuses forbidden destinations.
//!
//! The address guard runs at two points: IP-literal URLs are checked before
//! sending (as the URL parser reads them, so `0x7f.1` is 127.0.0.1), and
//! every address a host name resolves to is checked before it is connected
//! to, so the address connected to is always one that was checked (no
//! DNS-rebinding gap).
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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use hyper::{Method, Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use jmap_web_push_guest::addr::{classify, DeniedRange};

/// A request body: the whole body in memory (push messages are small).
type ReqBody = Full<Bytes>;

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
    /// DER certificates trusted as roots besides the system's (a private
    /// push service's certificate authority; tests).
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// How long an unused keep-alive connection is kept for reuse; a
    /// background sweep closes older ones (every half of this, at most
    /// every 30 s).
    pub idle_timeout: Duration,
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
            extra_root_certificates: Vec::new(),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// The certificates (DER) in the PEM file `path`, for
/// [`HttpPolicy::extra_root_certificates`]; an error naming the file when
/// it cannot be read or holds no certificate.
pub fn read_pem_certificates(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|found| found.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{}: no PEM certificate in the file", path.display());
    }
    Ok(certificates.into_iter().map(|c| c.to_vec()).collect())
}

/// The address guard: `Err` with the reason when `ip` may not be contacted.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), DeniedRange> {
    match classify(ip) {
        None => Ok(()),
        Some(DeniedRange::Loopback) if allow_loopback => Ok(()),
        Some(r) => Err(r),
    }
}

/// The addresses to connect to for `url`'s host and `port`: an IP literal
/// as it is (the precheck has already checked it), a host name through the
/// system resolver with every forbidden address dropped; an error when none
/// is left. Connecting only to addresses that passed here leaves no
/// DNS-rebinding gap.
async fn resolve_guarded(
    url: &url::Url,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, OutError> {
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(url::Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(url::Host::Domain(d)) => d,
        None => return Err(OutError::Other("URL has no host".into())),
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| OutError::Dns(format!("{host}: {e}")))?
        .collect();
    let mut denied = None;
    let ok: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match check_addr(a.ip(), allow_loopback) {
            Ok(()) => true,
            Err(r) => {
                denied = Some(format!("{host} resolves to {} ({r})", a.ip()));
                false
            }
        })
        .collect();
    if ok.is_empty() {
        return Err(match denied {
            Some(why) => OutError::DeniedByPolicy(why),
            None => OutError::Dns(format!("{host} has no addresses")),
        });
    }
    Ok(ok)
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

/// The outbound HTTP client: hyper connections over tokio (and rustls for
/// `https`), pooled per origin.
pub struct HttpClient {
    shared: Arc<Shared>,
    /// Always `Some` until dropped (taken in `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    observer: Option<Observer>,
}

/// What every request of every batch uses.
struct Shared {
    policy: HttpPolicy,
    tls: tokio_rustls::TlsConnector,
    user_agent: HeaderValue,
    permits: Arc<Semaphore>,
    origins: OriginLimits,
}

/// One slot per origin, created on first use. Entries nobody holds are
/// dropped when the map grows past [`OriginLimits::TRACKED`], so many
/// distinct push hosts cannot grow it without bound.
struct OriginLimits {
    per_origin: usize,
    per_http2_origin: usize,
    map: Mutex<HashMap<String, Arc<OriginSlot>>>,
}

/// The protocol of an origin's connections is not known yet.
const PROTOCOL_UNKNOWN: u8 = 0;
/// The origin's connections speak HTTP/1.1.
const PROTOCOL_HTTP1: u8 = 1;
/// The origin's connection speaks HTTP/2.
const PROTOCOL_HTTP2: u8 = 2;
/// The last attempt to connect to the origin failed.
const PROTOCOL_UNREACHABLE: u8 = 3;

/// Whether the next connection to an origin in state `protocol` may be an
/// HTTP/2 connection the origin's other requests can share.
fn may_be_shared(protocol: u8) -> bool {
    protocol == PROTOCOL_UNKNOWN || protocol == PROTOCOL_HTTP2
}

/// One origin: its in-flight limit and its connections.
struct OriginSlot {
    permits: Arc<Semaphore>,
    /// Whether the origin last answered over HTTP/2 (and so has the
    /// raised limit).
    http2: AtomicBool,
    /// What the last connection made to the origin speaks
    /// (`PROTOCOL_*`).
    protocol: AtomicU8,
    /// Held while a connection that may turn out to be HTTP/2 is made, so
    /// that a burst of requests shares one HTTP/2 connection instead of
    /// opening one each.
    connecting: tokio::sync::Mutex<()>,
    /// Connections ready for reuse.
    idle: Mutex<IdleConnections>,
}

/// An origin's reusable connections.
#[derive(Default)]
struct IdleConnections {
    /// Idle HTTP/1.1 connections and since when they are idle (the most
    /// recently used last).
    http1: Vec<(http1::SendRequest<ReqBody>, Instant)>,
    /// The HTTP/2 connection every request to the origin shares, and when
    /// a request last took it.
    http2: Option<(http2::SendRequest<ReqBody>, Instant)>,
}

/// A connection to send one request on.
enum Connection {
    Http1(http1::SendRequest<ReqBody>),
    /// An HTTP/2 connection (a handle on the shared one).
    Http2(http2::SendRequest<ReqBody>),
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
            http2: AtomicBool::new(false),
            protocol: AtomicU8::new(PROTOCOL_UNKNOWN),
            connecting: tokio::sync::Mutex::new(()),
            idle: Mutex::new(IdleConnections::default()),
        });
        map.insert(origin.to_string(), s.clone());
        s
    }

    /// Records the protocol an origin answered with: the first HTTP/2
    /// answer raises its limit to `per_http2_origin`, a later HTTP/1.x
    /// answer lowers it again (permits in use are taken back as they are
    /// returned).
    fn answered_with(&self, slot: &OriginSlot, version: Version) {
        let extra = self.per_http2_origin.saturating_sub(self.per_origin.max(1));
        if extra == 0 {
            return;
        }
        let http2 = version == Version::HTTP_2;
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

impl OriginSlot {
    /// A pooled connection that is still open: the shared HTTP/2 one, else
    /// the most recently used idle HTTP/1.1 one. Connections found closed
    /// or unused for longer than `idle_timeout` are dropped on the way.
    fn checkout(&self, idle_timeout: Duration) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h2, used)) = &mut idle.http2 {
            if !h2.is_closed() && used.elapsed() < idle_timeout {
                *used = Instant::now();
                return Some(Connection::Http2(h2.clone()));
            }
            idle.http2 = None;
        }
        while let Some((tx, since)) = idle.http1.pop() {
            if !tx.is_closed() && since.elapsed() < idle_timeout {
                return Some(Connection::Http1(tx));
            }
        }
        None
    }

    /// Drops the connections that closed or were not used for
    /// `idle_timeout` (dropping the last handle of an idle connection
    /// closes it; requests still running on an HTTP/2 one keep it open
    /// until they end).
    fn sweep(&self, idle_timeout: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.http1
            .retain(|(tx, since)| !tx.is_closed() && since.elapsed() < idle_timeout);
        if idle
            .http2
            .as_ref()
            .is_some_and(|(h2, used)| h2.is_closed() || used.elapsed() >= idle_timeout)
        {
            idle.http2 = None;
        }
    }

    /// Returns an HTTP/1.1 connection whose exchange is complete to the
    /// pool, which keeps at most `keep` of them.
    fn checkin(&self, tx: http1::SendRequest<ReqBody>, keep: usize) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.http1.len() < keep {
            idle.http1.push((tx, Instant::now()));
        }
    }
}

/// `scheme://host:port` of a URL, the key of the per-origin limit.
fn origin_key(url: &url::Url) -> String {
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
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// The TLS set-up: the system's root certificates and the policy's extra
/// ones, TLS 1.2 and 1.3, ALPN offering HTTP/2 and HTTP/1.1.
fn tls_config(policy: &HttpPolicy) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading the system's root certificates");
    }
    roots.add_parsable_certificates(native.certs);
    for der in &policy.extra_root_certificates {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
    }
    if roots.is_empty() {
        tracing::warn!("no trusted root certificate: every https:// push service will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
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
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&policy)?));
        let shared = Arc::new(Shared {
            tls,
            user_agent: HeaderValue::from_static(concat!(
                "jmap-web-push/",
                env!("CARGO_PKG_VERSION")
            )),
            permits: Arc::new(Semaphore::new(policy.max_concurrency.max(1))),
            origins: OriginLimits {
                per_origin: policy.max_connections_per_origin,
                per_http2_origin: policy
                    .max_streams_per_http2_origin
                    .min(policy.max_concurrency / 2)
                    .max(policy.max_connections_per_origin),
                map: Mutex::new(HashMap::new()),
            },
            policy,
        });
        runtime.spawn(sweep_idle_connections(Arc::downgrade(&shared)));
        Ok(HttpClient {
            shared,
            runtime: Some(runtime),
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
        &self.shared.policy
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
        let shared = self.shared.clone();
        let observer = self.observer.clone();
        let n = requests.len();
        let task = runtime.spawn(async move {
            let start = Instant::now();
            let sends = requests
                .into_iter()
                .map(|r| send_limited(&shared, observer.as_ref(), start, r));
            join_all(sends).await
        });
        PendingBatch(PendingInner::Task(task, n))
    }
}

/// Every half idle timeout (at most every 30 s), closes the idle
/// connections of every origin that are past the idle timeout, so origins
/// that are not contacted again do not hold connections open; ends when the
/// client is dropped.
async fn sweep_idle_connections(shared: std::sync::Weak<Shared>) {
    let Some(idle_timeout) = shared.upgrade().map(|s| s.policy.idle_timeout) else {
        return;
    };
    let period = (idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let slots: Vec<Arc<OriginSlot>> = shared
            .origins
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            slot.sweep(idle_timeout);
        }
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
    shared: &Shared,
    observer: Option<&Observer>,
    start: Instant,
    r: OutRequest,
) -> Result<OutResponse, OutError> {
    // The request's timeout covers the wait for a connection slot too, so
    // requests queued behind a stalled push service end as timeouts
    // instead of waiting unbounded.
    let timeout = request_timeout(&shared.policy, &r);
    let send = async {
        let url = precheck(&shared.policy, &r)?;
        // The origin's permit first: requests queued behind a slow push
        // service hold none of the global permits.
        let slot = shared.origins.slot(&origin_key(&url));
        let _origin = slot.permits.clone().acquire_owned().await;
        let _permit = shared.permits.clone().acquire_owned().await;
        let (answer, version) = exchange(shared, &slot, &url, r).await?;
        shared.origins.answered_with(&slot, version);
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

fn precheck(policy: &HttpPolicy, r: &OutRequest) -> Result<url::Url, OutError> {
    let url = url::Url::parse(&r.url).map_err(|e| OutError::Other(format!("bad URL: {e}")))?;
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

/// Sends one checked request on a pooled connection or a new one and reads
/// the answer; the caller bounds the total time. A request that a pooled
/// connection closed before sending (a keep-alive connection the push
/// service had just closed) is sent once more, on a new connection.
async fn exchange(
    shared: &Shared,
    slot: &OriginSlot,
    url: &url::Url,
    r: OutRequest,
) -> Result<(OutResponse, Version), OutError> {
    let body = Bytes::from(r.body);
    let mut may_reuse = true;
    loop {
        let (connection, reused) = if may_reuse {
            obtain_connection(shared, slot, url).await?
        } else {
            (new_connection(shared, slot, url).await?, false)
        };
        may_reuse = false;
        // A pooled connection found closed on `ready` is dropped here; a
        // closed shared HTTP/2 one is dropped by the next checkout.
        let (result, http1) = match connection {
            Connection::Http1(mut tx) => {
                let req = build_request(url, &r.headers, body.clone(), false, &shared.user_agent)?;
                match tx.ready().await {
                    Ok(()) => (tx.try_send_request(req).await, Some(tx)),
                    Err(_) if reused => continue,
                    Err(e) => return Err(http_error(&e)),
                }
            }
            Connection::Http2(mut tx) => {
                let req = build_request(url, &r.headers, body.clone(), true, &shared.user_agent)?;
                match tx.ready().await {
                    Ok(()) => (tx.try_send_request(req).await, None),
                    Err(_) if reused => continue,
                    Err(e) => return Err(http_error(&e)),
                }
            }
        };
        match result {
            Ok(response) => return Ok(read_answer(shared, slot, response, http1).await),
            // Not sent at all: the pooled connection closed first.
            Err(e) if reused && e.message().is_some() => continue,
            Err(e) => return Err(http_error(e.error())),
        }
    }
}

/// A pooled connection to `url`'s origin (`true`) or a new one (`false`).
async fn obtain_connection(
    shared: &Shared,
    slot: &OriginSlot,
    url: &url::Url,
) -> Result<(Connection, bool), OutError> {
    if let Some(c) = slot.checkout(shared.policy.idle_timeout) {
        return Ok((c, true));
    }
    // A connection that may turn out to be HTTP/2 (an https origin whose
    // protocol is not known yet, an HTTP/2 origin whose connection closed,
    // h2c with prior knowledge) is made by one request at a time: the
    // others then share it. Once an attempt has failed, the waiting
    // requests try in parallel, so a burst to an unreachable push service
    // fails within about one connect timeout, not one after another.
    let plain_http1 = url.scheme() == "http" && !shared.policy.http2_prior_knowledge;
    let _connecting = if plain_http1 || !may_be_shared(slot.protocol.load(Ordering::Acquire)) {
        None
    } else {
        let guard = slot.connecting.lock().await;
        if let Some(c) = slot.checkout(shared.policy.idle_timeout) {
            return Ok((c, true));
        }
        may_be_shared(slot.protocol.load(Ordering::Acquire)).then_some(guard)
    };
    Ok((new_connection(shared, slot, url).await?, false))
}

/// Opens a connection to `url`'s origin within the connect timeout; an
/// HTTP/2 one becomes the origin's shared connection.
async fn new_connection(
    shared: &Shared,
    slot: &OriginSlot,
    url: &url::Url,
) -> Result<Connection, OutError> {
    let connection = tokio::time::timeout(shared.policy.connect_timeout, connect(shared, url))
        .await
        .unwrap_or(Err(OutError::Timeout))
        .inspect_err(|_| slot.protocol.store(PROTOCOL_UNREACHABLE, Ordering::Release))?;
    match &connection {
        Connection::Http1(_) => slot.protocol.store(PROTOCOL_HTTP1, Ordering::Release),
        Connection::Http2(tx) => {
            slot.protocol.store(PROTOCOL_HTTP2, Ordering::Release);
            slot.idle.lock().unwrap_or_else(|e| e.into_inner()).http2 =
                Some((tx.clone(), Instant::now()));
        }
    }
    Ok(connection)
}

/// Resolves (through the address guard), connects over TCP, TLS for
/// `https` (HTTP/2 if ALPN picks it), and starts the HTTP connection.
async fn connect(shared: &Shared, url: &url::Url) -> Result<Connection, OutError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| OutError::Other("URL has no port".into()))?;
    let addrs = resolve_guarded(url, port, shared.policy.allow_insecure_loopback).await?;
    // Each address gets an equal share of what is left of the connect
    // timeout, so one that does not answer (an IPv6 route that drops
    // packets) leaves time for the next.
    let deadline = Instant::now() + shared.policy.connect_timeout;
    let mut last_error = None;
    let mut tcp = None;
    for (i, addr) in addrs.iter().enumerate() {
        let share = deadline.saturating_duration_since(Instant::now()) / (addrs.len() - i) as u32;
        match tokio::time::timeout(share, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => {
                last_error = Some(OutError::Connection(format!("connecting to {addr}: {e}")))
            }
            Err(_) => last_error = Some(OutError::Timeout),
        }
    }
    let tcp = match (tcp, last_error) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(e),
        (None, None) => return Err(OutError::Dns("no address to connect to".into())),
    };
    // Requests are written whole; no reason to wait for more.
    let _ = tcp.set_nodelay(true);
    if url.scheme() == "https" {
        let name = match url.host() {
            Some(url::Host::Domain(d)) => rustls::pki_types::ServerName::try_from(d.to_string())
                .map_err(|e| OutError::Tls(format!("{d}: {e}")))?,
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).into(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).into(),
            None => return Err(OutError::Other("URL has no host".into())),
        };
        let tls = shared.tls.connect(name, tcp).await.map_err(|e| {
            // A certificate or protocol failure is permanent; the push
            // service resetting or closing during the handshake is not.
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                OutError::Tls(e.to_string())
            } else {
                OutError::Connection(format!("TLS handshake: {e}"))
            }
        })?;
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        start_http(tls, http2).await
    } else {
        start_http(tcp, shared.policy.http2_prior_knowledge).await
    }
}

/// The HTTP/1.1 or HTTP/2 handshake on `io`; the connection is driven by
/// its own task on the client's runtime until it closes.
async fn start_http<T>(io: T, http2: bool) -> Result<Connection, OutError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if http2 {
        // Pings while streams are open, so a connection whose path died
        // silently is found within 40 s instead of at the kernel's TCP
        // timeout.
        let (tx, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(|e| http_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 push connection ended");
            }
        });
        Ok(Connection::Http2(tx))
    } else {
        let (tx, connection) = http1::handshake(io).await.map_err(|e| http_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/1.1 push connection ended");
            }
        });
        Ok(Connection::Http1(tx))
    }
}

/// Headers the client writes itself from the URL, the body and the
/// connection; a plugin's value for them is ignored.
const HOST_OWNED_HEADERS: [HeaderName; 5] = [
    HOST,
    hyper::header::CONTENT_LENGTH,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::CONNECTION,
    hyper::header::UPGRADE,
];

/// The POST for `url`: origin-form target and `Host` over HTTP/1.1, the
/// absolute URI (`:scheme`, `:authority`) over HTTP/2; the plugin's
/// headers except [`HOST_OWNED_HEADERS`]; a `User-Agent` unless the plugin
/// set one.
fn build_request(
    url: &url::Url,
    headers: &[(String, String)],
    body: Bytes,
    http2: bool,
    user_agent: &HeaderValue,
) -> Result<Request<ReqBody>, OutError> {
    let target = if http2 {
        &url[..url::Position::AfterQuery]
    } else {
        &url[url::Position::BeforePath..url::Position::AfterQuery]
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = target
        .parse::<Uri>()
        .map_err(|e| OutError::Other(format!("bad URL: {e}")))?;
    if http2 {
        *req.version_mut() = Version::HTTP_2;
    } else {
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let host = HeaderValue::from_str(authority)
            .map_err(|e| OutError::Other(format!("bad host: {e}")))?;
        req.headers_mut().insert(HOST, host);
    }
    let h = req.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| OutError::Other(format!("bad header name {name:?}: {e}")))?;
        // Framing and connection headers are the client's to write.
        if HOST_OWNED_HEADERS.contains(&name) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|e| OutError::Other(format!("bad value for header {name}: {e}")))?;
        h.append(name, value);
    }
    if !h.contains_key(USER_AGENT) {
        h.insert(USER_AGENT, user_agent.clone());
    }
    Ok(req)
}

/// Status, headers and the first [`HttpPolicy::max_body_prefix`] octets of
/// the body. An HTTP/1.1 connection whose answer was read to its end goes
/// back to the pool; one with more body left is dropped (closed).
async fn read_answer(
    shared: &Shared,
    slot: &OriginSlot,
    response: Response<hyper::body::Incoming>,
    http1: Option<http1::SendRequest<ReqBody>>,
) -> (OutResponse, Version) {
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect();
    let mut body = response.into_body();
    let max = shared.policy.max_body_prefix;
    let mut body_prefix = Vec::new();
    let mut complete = body.is_end_stream();
    while !complete && body_prefix.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = max - body_prefix.len();
                    body_prefix.extend_from_slice(&data[..data.len().min(room)]);
                }
                complete = body.is_end_stream();
            }
            Some(Err(_)) => break,
            None => complete = true,
        }
    }
    if let (true, Some(tx)) = (complete, http1) {
        slot.checkin(tx, shared.policy.max_connections_per_origin.max(1));
    }
    (
        OutResponse {
            status,
            headers,
            body_prefix,
        },
        version,
    )
}

/// An HTTP-level failure as the plugin sees it.
fn http_error(e: &hyper::Error) -> OutError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return OutError::Tls(tls.to_string());
        }
        msg = format!("{msg}: {inner}");
        source = inner.source();
    }
    if e.is_timeout() {
        OutError::Timeout
    } else if e.is_parse() || e.is_user() {
        OutError::Other(msg)
    } else {
        OutError::Connection(msg)
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
            limits.answered_with(&slot, Version::HTTP_11);
            assert_eq!(slot.permits.available_permits(), 4);
            limits.answered_with(&slot, Version::HTTP_2);
            limits.answered_with(&slot, Version::HTTP_2);
            assert_eq!(slot.permits.available_permits(), 40, "raised once");
            // Back to HTTP/1.1 while 10 streams are in flight: the extra
            // permits are taken back as the streams end.
            let in_flight = slot.permits.clone().acquire_many_owned(10).await.unwrap();
            limits.answered_with(&slot, Version::HTTP_11);
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
