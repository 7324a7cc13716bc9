//! The outbound HTTP client: `hyper-util`'s pooled client on its own small
//! tokio runtime, with the guard, the limits, the batch API and the error
//! classification.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use super::connector::{ConnectTimedOut, NoConnectionSlot, OriginCapped};
use super::guard::{precheck, Denied, DnsFailed, GuardedResolver};
use super::limits::{origin_key, OriginLimits};
use super::{HttpPolicy, Observer, OutError, OutRequest, OutResponse, PendingBatch};

/// The connector stack: TCP with the guarded resolver, TLS (and ALPN) by
/// `hyper-rustls`, each connection counted against its origin.
type Connector = OriginCapped<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>>;
/// The pooled client.
type Client = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// The `User-Agent` sent unless the plugin sets one.
const USER_AGENT: &str = concat!("jmap-web-push/", env!("CARGO_PKG_VERSION"));

/// Headers the client writes itself from the URL, the body and the
/// connection; a plugin's value for them is ignored.
const HOST_OWNED_HEADERS: [HeaderName; 5] = [
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::UPGRADE,
];

/// The outbound HTTP client (see the module docs of [`super`]).
pub struct HttpClient {
    shared: Arc<Shared>,
    /// Always `Some` until dropped (taken in `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    observer: Option<Observer>,
}

/// What every request of every batch uses.
struct Shared {
    policy: HttpPolicy,
    client: Client,
    user_agent: HeaderValue,
    permits: Arc<Semaphore>,
    origins: Arc<OriginLimits>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// The TLS set-up: the system's root certificates and the policy's extra
/// ones, TLS 1.2 and 1.3 (ALPN, offering HTTP/2 and HTTP/1.1, is set by
/// `hyper-rustls`).
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
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The pooled client for `policy`: the guarded resolver, TLS with ALPN
/// (HTTP/2 and HTTP/1.1), the pool sized and timed by the policy. It
/// follows no redirects and knows no proxies.
fn pooled_client(policy: &HttpPolicy, origins: Arc<OriginLimits>) -> anyhow::Result<Client> {
    let mut tcp = HttpConnector::new_with_resolver(GuardedResolver {
        allow_loopback: policy.allow_insecure_loopback,
    });
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(policy.connect_timeout));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(policy)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    let connector = OriginCapped {
        inner: tls,
        limits: origins,
        wait: policy.connect_timeout,
    };
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(policy.idle_timeout)
            .pool_max_idle_per_host(policy.max_connections_per_origin.max(1))
            .http2_only(policy.http2_prior_knowledge)
            // Pings while streams are open, so an HTTP/2 connection whose
            // path died silently is found within 40 s, not at the kernel's
            // TCP timeout.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector),
    )
}

impl HttpClient {
    /// A client with its own small I/O runtime.
    ///
    /// # Errors
    /// When the runtime cannot start or the TLS set-up is invalid (an extra
    /// root certificate that does not parse).
    pub fn new(policy: HttpPolicy) -> anyhow::Result<Self> {
        if policy.allow_insecure_loopback {
            tracing::warn!("TEST MODE: outbound HTTP allows http:// and loopback destinations");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http-out")
            .enable_all()
            .build()?;
        let per_http2_origin = policy
            .max_streams_per_http2_origin
            .min(policy.max_concurrency / 2)
            .max(policy.max_connections_per_origin);
        let origins = Arc::new(OriginLimits::new(
            policy.max_connections_per_origin,
            per_http2_origin,
        ));
        let client = {
            let _inside = runtime.enter();
            pooled_client(&policy, origins.clone())?
        };
        let shared = Arc::new(Shared {
            client,
            user_agent: HeaderValue::from_static(USER_AGENT),
            permits: Arc::new(Semaphore::new(policy.max_concurrency.max(1))),
            origins,
            policy,
        });
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
        // One task per batch: its requests are polled together (the
        // connections' own tasks still run on every worker).
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
        PendingBatch::task(task, n)
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
    // The request's timeout covers the wait for a slot too, so requests
    // queued behind a stalled push service end as timeouts instead of
    // waiting unbounded.
    let timeout =
        Duration::from_millis(u64::from(r.timeout_ms.max(1))).min(shared.policy.max_timeout);
    let result = match precheck(&shared.policy, &r) {
        Err(e) => Err(e),
        Ok(url) => {
            let slot = shared.origins.slot(&origin_key(&url));
            let send = async {
                // The first request to an `https` origin (or the first after
                // its HTTP/2 connection closed) goes alone, so that if the
                // origin speaks HTTP/2 the others share its connection; the
                // others wait for it at most the connect timeout.
                let _first = if url.scheme() == "https" {
                    tokio::time::timeout(shared.policy.connect_timeout, slot.first_contact())
                        .await
                        .ok()
                        .flatten()
                } else {
                    None
                };
                // The origin's permit first: requests queued behind a slow
                // push service hold none of the global permits.
                let origin = slot.permits.clone().acquire_owned().await;
                let permit = shared.permits.clone().acquire_owned().await;
                let (head, body, version) = exchange(shared, url, r).await?;
                shared.origins.answered_with(&slot, version);
                Ok((head, body, (origin, permit)))
            };
            // Once the answer's head is in, the push service has decided
            // (a 201 means it took the message), so a body that is slow or
            // never comes must not turn the answer into a timeout, which
            // the plugin would retry and so deliver twice: the body gets
            // what is left of the timeout, at most `BODY_GRACE`, and the
            // status stands whatever of it arrives.
            let deadline = tokio::time::Instant::now() + timeout;
            let result = match tokio::time::timeout_at(deadline, send).await {
                Ok(Ok((mut head, body, _permits))) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    head.body_prefix =
                        read_body_prefix(body, shared.policy.max_body_prefix, left.min(BODY_GRACE))
                            .await;
                    Ok(head)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(OutError::Timeout),
            };
            if result.is_err() {
                slot.failed();
            }
            result
        }
    };
    if let Some(o) = observer {
        o(start.elapsed(), &result);
    }
    result
}

/// The POST through the pooled client (absolute URI; the client writes the
/// origin-form target and `Host` for HTTP/1.1, `:authority` for HTTP/2):
/// the answer's status and headers, and its body still to read
/// ([`read_body_prefix`]).
async fn exchange(
    shared: &Shared,
    url: url::Url,
    r: OutRequest,
) -> Result<(OutResponse, Incoming, http::Version), OutError> {
    let uri: Uri = url
        .as_str()
        .parse()
        .map_err(|e| OutError::Other(format!("bad URL: {e}")))?;
    let mut req = Request::new(Full::new(Bytes::from(r.body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (name, value) in &r.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| OutError::Other(format!("bad header name {name:?}: {e}")))?;
        if HOST_OWNED_HEADERS.contains(&name) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|e| OutError::Other(format!("bad value for header {name}: {e}")))?;
        h.append(name, value);
    }
    if !h.contains_key(http::header::USER_AGENT) {
        h.insert(http::header::USER_AGENT, shared.user_agent.clone());
    }
    let response = shared.client.request(req).await.map_err(|e| classify(&e))?;
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
    Ok((
        OutResponse {
            status,
            headers,
            body_prefix: Vec::new(),
        },
        response.into_body(),
        version,
    ))
}

/// How long the body of an answer may take after its head.
const BODY_GRACE: Duration = Duration::from_secs(1);

/// The first `max` octets of an answer's body, or what of them arrived
/// within `grace`: the answer is its status, and a body cut short, slow or
/// failing does not change it (the rest is not read; the connection is
/// then not reused).
async fn read_body_prefix(mut body: Incoming, max: usize, grace: Duration) -> Vec<u8> {
    let mut prefix = Vec::new();
    let read = async {
        let mut complete = body.is_end_stream();
        while !complete && prefix.len() < max {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = max - prefix.len();
                        prefix.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    complete = body.is_end_stream();
                }
                Some(Err(_)) | None => complete = true,
            }
        }
    };
    let _ = tokio::time::timeout(grace, read).await;
    prefix
}

/// A client failure as the plugin sees it (the WIT `http-out.error`): the
/// guard's refusals and DNS failures by their own error types, a
/// certificate or TLS protocol failure by `rustls::Error` (or a host name
/// TLS cannot use), a connect timeout, a wait for a connection slot or an
/// HTTP/2 ping without answer as a timeout, anything else on the way
/// (refused, reset, closed, a reset during the TLS handshake) a connection
/// error.
fn classify(e: &hyper_util::client::legacy::Error) -> OutError {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(inner) = source {
        // `io::Error` hides a wrapped error from `source()` (and TLS errors
        // come wrapped twice): look inside, level by level.
        let mut candidate = Some(inner);
        while let Some(c) = candidate {
            if let Some(d) = c.downcast_ref::<Denied>() {
                return OutError::DeniedByPolicy(d.0.clone());
            }
            if let Some(d) = c.downcast_ref::<DnsFailed>() {
                return OutError::Dns(d.0.clone());
            }
            if let Some(t) = c.downcast_ref::<rustls::Error>() {
                return OutError::Tls(t.to_string());
            }
            if c.is::<rustls::pki_types::InvalidDnsNameError>() {
                return OutError::Tls(format!("not a valid TLS server name: {c}"));
            }
            if c.is::<NoConnectionSlot>()
                || c.is::<ConnectTimedOut>()
                || c.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
            {
                return OutError::Timeout;
            }
            if c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return OutError::Timeout;
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|w| w as &(dyn std::error::Error + 'static));
        }
        chain.push(inner.to_string());
        source = inner.source();
    }
    let detail = if chain.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {}", chain.join(": "))
    };
    if e.is_connect() && detail.contains("tls handshake") {
        // The push service reset or closed the connection during the TLS
        // handshake (shedding load): retryable, unlike a TLS failure.
        OutError::Connection(format!("TLS handshake: {detail}"))
    } else {
        OutError::Connection(detail)
    }
}
