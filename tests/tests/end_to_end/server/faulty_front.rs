//! A TCP front for the loopback push service that misbehaves at the
//! transport level on its next connections (resets, closes, a hang after
//! the headers), then passes connections through untouched.
//!
//! What reaches the push service behind it is what it accepted: a push
//! the front drops never reaches it, so "delivered exactly once" is
//! counted there.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the front treats a connection while a fault is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accepts, then closes at once without reading (FIN).
    CloseAfterAccept,
    /// Reads the first octets of the request, then resets (RST).
    ResetMidRequest,
    /// Reads the whole request without passing it on, writes the start of
    /// a 201 status line, then resets.
    ResetMidResponse,
    /// Passes the request on (the push service accepts it), sends the
    /// push service's status line and headers announcing a body, then
    /// never sends the body.
    HangAfterHeaders,
    /// Answers the TLS ClientHello with plain HTTP, then closes: the
    /// client's handshake fails.
    NotTls,
}

struct Shared {
    upstream: SocketAddr,
    /// Set for a front that speaks TLS (and HTTP/1.1 inside it).
    tls: Option<Arc<rustls::ServerConfig>>,
    fault: Mutex<Option<Fault>>,
    faults_left: AtomicUsize,
    live: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

/// The front: `url(path)` names the push service's `path` through it.
pub struct FaultyFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultyFront {
    /// A front on 127.0.0.1 passing connections to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultyFront {
        Self::start_with(upstream, None)
    }

    /// A front that speaks HTTPS for `localhost` (a certificate made now,
    /// returned in PEM for the client to trust) and passes each request to
    /// `upstream` over plain HTTP/1.1.
    pub fn start_tls(upstream: SocketAddr) -> (FaultyFront, String) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(made.cert.der().to_vec())], key)
            .expect("the certificate");
        (
            Self::start_with(upstream, Some(Arc::new(config))),
            made.cert.pem(),
        )
    }

    fn start_with(upstream: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> FaultyFront {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let addr = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared {
            upstream,
            tls,
            fault: Mutex::new(None),
            faults_left: AtomicUsize::new(0),
            live: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || serve(&shared, stream));
            }
        });
        FaultyFront { addr, shared }
    }

    /// `http://127.0.0.1:<port>/<path>`, or `https://localhost:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        match self.shared.tls {
            None => format!("http://{}/{path}", self.addr),
            Some(_) => format!("https://localhost:{}/{path}", self.addr.port()),
        }
    }

    /// Misbehaves as `fault` on the next `connections` connections. Every
    /// connection open now is closed first, so that the client's next
    /// push opens a new one.
    pub fn arm(&self, fault: Fault, connections: usize) {
        *self.shared.fault.lock().expect("fault") = Some(fault);
        self.shared.faults_left.store(connections, Ordering::SeqCst);
        for s in self.shared.live.lock().expect("live").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Let the client's pool see the closed connections.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// An outage: every open connection closed, every new one closed on
    /// accept, until [`FaultyFront::restore`].
    pub fn cut(&self) {
        self.arm(Fault::CloseAfterAccept, usize::MAX);
    }

    /// Ends the fault: new connections pass through again.
    pub fn restore(&self) {
        self.shared.faults_left.store(0, Ordering::SeqCst);
    }

    /// The front's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for FaultyFront {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for s in self.shared.live.lock().expect("live").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve(shared: &Shared, mut client: TcpStream) {
    let armed = shared
        .faults_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let fault = if armed {
        *shared.fault.lock().expect("fault")
    } else {
        None
    };
    match fault {
        None => match &shared.tls {
            None => pass_through(shared, client),
            Some(config) => tls_pass_through(shared, config.clone(), client),
        },
        Some(Fault::CloseAfterAccept) => drop(client),
        Some(Fault::NotTls) => {
            let mut hello = [0u8; 512];
            let _ = client.read(&mut hello);
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::ResetMidRequest) => {
            let mut first = [0u8; 64];
            let _ = client.read(&mut first);
            reset(client);
        }
        Some(Fault::ResetMidResponse) => {
            if read_request(&mut client).is_some() {
                let _ = client.write_all(b"HTTP/1.1 201 Cre");
                let _ = client.flush();
                std::thread::sleep(Duration::from_millis(50));
            }
            reset(client);
        }
        Some(Fault::HangAfterHeaders) => {
            let Some(request) = read_request(&mut client) else {
                return;
            };
            let status = forward_one(shared.upstream, &request)
                .unwrap_or_else(|| "HTTP/1.1 502 Bad Gateway".to_owned());
            let _ = client.write_all(format!("{status}\r\ncontent-length: 100\r\n\r\n").as_bytes());
            let _ = client.flush();
            // Hold the connection open, body never sent, until the client
            // gives up or the front is dropped.
            if let Ok(held) = client.try_clone() {
                shared.live.lock().expect("live").push(held);
            }
            let mut sink = [0u8; 1024];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

/// Closes with RST (SO_LINGER 0) instead of FIN.
fn reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

/// Reads one HTTP/1.1 request (or answer) with a Content-Length body.
fn read_request(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// Sends `request` to the push service on a connection of its own and
/// returns the status line of its answer.
fn forward_one(upstream: SocketAddr, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(upstream).ok()?;
    s.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
        answer.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.lines().next().map(str::to_owned)
}

/// Terminates TLS and passes each HTTP/1.1 request inside it to the push
/// service on a connection of its own, its answer back.
fn tls_pass_through(shared: &Shared, config: Arc<rustls::ServerConfig>, client: TcpStream) {
    if let Ok(c) = client.try_clone() {
        shared.live.lock().expect("live").push(c);
    }
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, client);
    while let Some(request) = read_request(&mut tls) {
        let Ok(mut upstream) = TcpStream::connect(shared.upstream) else {
            return;
        };
        if upstream.write_all(&request).is_err() {
            return;
        }
        let Some(answer) = read_request(&mut upstream) else {
            return;
        };
        if tls.write_all(&answer).and_then(|()| tls.flush()).is_err() {
            return;
        }
    }
}

/// Copies both ways between the client and the push service.
fn pass_through(shared: &Shared, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect(shared.upstream) else {
        return;
    };
    if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
        let mut live = shared.live.lock().expect("live");
        live.push(c);
        live.push(u);
    }
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = forward.join();
}
