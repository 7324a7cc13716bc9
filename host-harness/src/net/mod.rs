//! Outbound HTTP for the `http-out` import, on `hyper-util`'s pooled client
//! (the client `reqwest` is built on) with `hyper-rustls` (rustls, HTTP/1.1
//! and HTTP/2 by ALPN), with what this project adds around it:
//!
//! - [`guard`]: the address guard. IP-literal URLs are checked before a
//!   request is handed to the client (as the `url` crate reads them, so
//!   `0x7f.1` is 127.0.0.1), and every address a host name resolves to is
//!   checked by the client's resolver before it is connected to, so the
//!   address connected to is always one that was checked (no DNS-rebinding
//!   gap). No redirects are followed and no proxy is taken from the
//!   environment.
//! - `limits`: at most [`HttpPolicy::max_connections_per_origin`]
//!   requests to one origin in flight at once (raised to
//!   [`HttpPolicy::max_streams_per_http2_origin`] once the origin answers
//!   over HTTP/2, at most half of all requests in flight), and
//!   [`HttpPolicy::max_concurrency`] in all; at most
//!   [`HttpPolicy::max_connections_per_origin`] connections open to one
//!   origin (`connector`), and the first contact with an `https` origin
//!   made by one request, so that an HTTP/2 push service gets one
//!   connection.
//! - [`client`]: the batch API of the WIT `http-out` (`start-batch`,
//!   `finish-batch`), the request deadline, the response-body prefix cap,
//!   and the typed errors of the WIT `http-out.error`.

use std::time::Duration;

pub mod client;
mod connector;
pub mod guard;
mod limits;

pub use client::HttpClient;
pub use guard::check_addr;

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
#[non_exhaustive]
pub enum OutError {
    /// Timed out.
    #[error("timed out")]
    Timeout,
    /// Connection failed (refused, reset, closed; also a reset during the
    /// TLS handshake).
    #[error("connection failed: {0}")]
    Connection(String),
    /// Name did not resolve.
    #[error("DNS failure: {0}")]
    Dns(String),
    /// TLS failed (certificate, protocol).
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
    /// Test only: speak HTTP/2 with prior knowledge (h2c), to test against
    /// loopback HTTP/2 servers. It applies to every connection, `https`
    /// ones included (which then fail against a server that picks
    /// HTTP/1.1). Real push services negotiate HTTP/2 over TLS (ALPN)
    /// without this.
    pub http2_prior_knowledge: bool,
    /// Most response body octets read (the rest is discarded).
    pub max_body_prefix: usize,
    /// Largest request body sent.
    pub max_request_body: usize,
    /// DER certificates trusted as roots besides the system's (a private
    /// push service's certificate authority; tests).
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// How long an unused keep-alive connection is kept for reuse (closed
    /// by the pool's idle check, which runs every `idle_timeout`, so
    /// within about twice this).
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

    /// A batch sent by `task` (`n` requests).
    fn task(task: SendTask, n: usize) -> Self {
        PendingBatch(PendingInner::Task(task, n))
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

/// Called once per request with the time from the start of its batch to
/// the answer or the error (including any wait for a connection slot) and
/// the result; for metrics.
pub type Observer = std::sync::Arc<dyn Fn(Duration, &Result<OutResponse, OutError>) + Send + Sync>;
