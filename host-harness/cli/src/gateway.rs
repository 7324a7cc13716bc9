//! A loopback push service for the demo and tests: records every request
//! and answers as scripted per channel path (201 by default). Not a
//! production push service: it binds 127.0.0.1 only.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

/// One request the gateway received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path after the first `/`.
    pub path: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Delay before answering.
    pub delay: Duration,
}

impl Answer {
    /// Answer with `status` at once.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delays the answer.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct GatewayState {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<Answer>>,
    defaults: HashMap<String, Answer>,
}

/// A loopback push service: records requests, answers 201 unless scripted.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<Mutex<GatewayState>>,
    connections: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

async fn handle(
    State(state): State<Arc<Mutex<GatewayState>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let answer = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.received.push(Received {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        let scripted = s.scripts.get_mut(&path).and_then(|q| q.pop_front());
        scripted
            .or_else(|| s.defaults.get(&path).cloned())
            .unwrap_or_else(|| Answer::status(201))
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut h = HeaderMap::new();
    for (n, v) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(n.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, h, "")
}

impl Gateway {
    /// Starts a gateway on 127.0.0.1 with a random port.
    ///
    /// # Panics
    /// If no runtime or loopback port can be had (tests and the demo only).
    pub fn start() -> Gateway {
        Self::try_start().expect("loopback push gateway starts")
    }

    /// Starts a gateway on 127.0.0.1 with a random port.
    pub fn try_start() -> std::io::Result<Gateway> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("push-gateway")
            .enable_all()
            .build()?;
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(handle))
            .with_state(state.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "loopback gateway stopped");
            }
        });
        Ok(Gateway {
            addr,
            state,
            connections,
            _runtime: runtime,
        })
    }

    /// The URL of push channel `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path)
    }

    /// TCP connections accepted so far (a client that reuses keep-alive
    /// connections opens few).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Queues answers for `path` (used in order, then the default).
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.scripts
            .entry(path.to_string())
            .or_default()
            .extend(answers);
    }

    /// Sets the answer for `path` once the script is used up.
    pub fn set_default(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .defaults
            .insert(path.to_string(), answer);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
            .clone()
    }

    /// Everything received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
            .clear();
    }
}
