//! Outbound HTTP to real push services: `https://` push
//! services are reached over TLS with the certificate checked, over HTTP/2
//! when ALPN offers it (every request a stream on one connection) and over
//! HTTP/1.1 with reused keep-alive connections otherwise; a keep-alive
//! connection the push service closed is not used again (the push goes on
//! a new connection).
//!
//! The HTTPS push service here is hyper behind rustls on loopback, with a
//! certificate for `localhost` made at test time; the client trusts it
//! through `HttpPolicy::extra_root_certificates`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jmap_web_push_host::net::{read_pem_certificates, OutError, OutRequest};
use jmap_web_push_host::{HttpClient, HttpPolicy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A loopback HTTPS push service answering 201 with a short body.
struct TlsPushService {
    port: u16,
    certificate: Vec<u8>,
    /// The same certificate, PEM.
    certificate_pem: String,
    connections: Arc<AtomicUsize>,
    /// Protocol and body length of every request, in arrival order.
    seen: Arc<Mutex<Vec<(Version, usize)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsPushService {
    /// Starts one that offers `alpn` (in order of preference).
    fn start(alpn: &[&[u8]]) -> TlsPushService {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let certificate = made.cert.der().to_vec();
        let certificate_pem = made.cert.pem();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(certificate.clone())], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), seen.clone());
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let version = req.version();
                            let body = req.into_body().collect().await?.to_bytes();
                            log.lock().unwrap().push((version, body.len()));
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(201)
                                    .body(Full::new(Bytes::from_static(b"created")))
                                    .unwrap(),
                            )
                        }
                    });
                    let io = TokioIo::new(tls);
                    let _ = if http2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                });
            }
        });
        TlsPushService {
            port,
            certificate,
            certificate_pem,
            connections,
            seen,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/{path}", self.port)
    }

    fn seen(&self) -> Vec<(Version, usize)> {
        self.seen.lock().unwrap().clone()
    }
}

fn push(url: String) -> OutRequest {
    OutRequest {
        url,
        headers: vec![
            ("TTL".into(), "60".into()),
            ("Content-Encoding".into(), "aes128gcm".into()),
        ],
        body: vec![7; 300],
        timeout_ms: 5000,
    }
}

/// A test-mode client (loopback allowed) trusting `service`'s certificate.
fn client_trusting(service: &TlsPushService, per_origin: usize) -> HttpClient {
    HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        max_connections_per_origin: per_origin,
        extra_root_certificates: vec![service.certificate.clone()],
        ..HttpPolicy::default()
    })
    .unwrap()
}

fn assert_all_created(answers: &[Result<jmap_web_push_host::net::OutResponse, OutError>]) {
    for a in answers {
        match a {
            Ok(r) => {
                assert_eq!(r.status, 201, "{r:?}");
                assert_eq!(r.body_prefix, b"created");
            }
            Err(e) => panic!("a push failed: {e}"),
        }
    }
}

/// Sends `rounds` batches of `per_round` pushes to `service`, every one
/// answered 201; then checks the service saw them all over `version`,
/// bodies whole.
fn push_in_rounds(
    client: &HttpClient,
    service: &TlsPushService,
    rounds: usize,
    per_round: usize,
    version: Version,
) {
    for round in 0..rounds {
        let answers = client.send_batch(
            (0..per_round)
                .map(|i| push(service.url(&format!("p{round}-{i}"))))
                .collect(),
        );
        assert_all_created(&answers);
    }
    let seen = service.seen();
    assert_eq!(seen.len(), rounds * per_round);
    assert!(
        seen.iter().all(|(v, len)| *v == version && *len == 300),
        "{seen:?}"
    );
}

/// Reads one pushed request (headers, then the 300-octet body) from a
/// plain TCP stream and answers 201 without `Connection: close`; `false`
/// if the client closed first.
fn answer_one_push(stream: &mut std::net::TcpStream) -> bool {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            if request.len() >= end + 4 + 300 {
                break;
            }
        }
    }
    stream
        .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
        .is_ok()
}

#[test]
fn an_https_push_service_offering_http2_gets_every_push_as_a_stream_on_one_connection() {
    let service = TlsPushService::start(&[b"h2", b"http/1.1"]);
    let client = client_trusting(&service, 4);
    push_in_rounds(&client, &service, 2, 60, Version::HTTP_2);
    assert_eq!(
        service.connections.load(Ordering::SeqCst),
        1,
        "one TLS connection for 120 pushes"
    );
}

/// After the shared HTTP/2 connection closed (here: idle past the idle
/// timeout), the next burst again opens one connection, not one per
/// request.
#[test]
fn a_burst_after_the_http2_connection_closed_opens_one_connection() {
    let service = TlsPushService::start(&[b"h2", b"http/1.1"]);
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        max_connections_per_origin: 4,
        extra_root_certificates: vec![service.certificate.clone()],
        idle_timeout: std::time::Duration::from_millis(200),
        ..HttpPolicy::default()
    })
    .unwrap();
    push_in_rounds(&client, &service, 1, 60, Version::HTTP_2);
    assert_eq!(service.connections.load(Ordering::SeqCst), 1);
    // Idle for well past the idle timeout: the pool closes the connection.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let answers = client.send_batch(
        (0..60)
            .map(|i| push(service.url(&format!("again-{i}"))))
            .collect(),
    );
    assert_all_created(&answers);
    assert_eq!(
        service.connections.load(Ordering::SeqCst),
        2,
        "one new TLS connection for the second burst"
    );
}

#[test]
fn an_https_push_service_without_http2_is_reached_over_reused_http1_connections() {
    let service = TlsPushService::start(&[b"http/1.1"]);
    let client = client_trusting(&service, 4);
    push_in_rounds(&client, &service, 3, 20, Version::HTTP_11);
    let connections = service.connections.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&connections),
        "{connections} TLS connections for 60 pushes"
    );
}

#[test]
fn an_untrusted_certificate_is_a_tls_error_and_nothing_is_sent() {
    let service = TlsPushService::start(&[b"h2", b"http/1.1"]);
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    let answers = client.send_batch(vec![push(service.url("p")), push(service.url("q"))]);
    for a in &answers {
        assert!(
            matches!(a, Err(OutError::Tls(why)) if !why.is_empty()),
            "{a:?}"
        );
    }
    assert!(service.seen().is_empty());
}

#[test]
fn a_certificate_for_another_name_is_a_tls_error() {
    let service = TlsPushService::start(&[b"http/1.1"]);
    let client = client_trusting(&service, 4);
    // Trusted, but issued for `localhost`, not for the address.
    let answers = client.send_batch(vec![push(format!("https://127.0.0.1:{}/p", service.port))]);
    assert!(matches!(&answers[0], Err(OutError::Tls(_))), "{answers:?}");
    assert!(service.seen().is_empty());
}

#[test]
fn a_keep_alive_connection_the_push_service_closed_is_not_reused() {
    // Answers one request per connection without `Connection: close`, then
    // closes it: the connection the client pooled is dead by the next push.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            answer_one_push(&mut stream);
        }
    });
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/p");
    for _ in 0..3 {
        let answers = client.send_batch(vec![push(url.clone())]);
        assert!(
            answers[0].as_ref().is_ok_and(|r| r.status == 201),
            "{answers:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_burst_to_an_unreachable_https_push_service_fails_within_about_one_connect_timeout() {
    // Accepts TCP connections and never answers the TLS handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let connect_timeout = std::time::Duration::from_millis(300);
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        connect_timeout,
        ..HttpPolicy::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let answers = client.send_batch(
        (0..8)
            .map(|i| push(format!("https://localhost:{port}/p{i}")))
            .collect(),
    );
    let took = started.elapsed();
    assert!(
        answers.iter().all(|a| *a == Err(OutError::Timeout)),
        "{answers:?}"
    );
    // The first attempt alone (the protocol might have been HTTP/2), then
    // the other seven together: about two connect timeouts, where one
    // attempt after another would take eight.
    assert!(
        took < connect_timeout * 4,
        "8 pushes took {took:?} with a {connect_timeout:?} connect timeout"
    );
}

#[test]
fn a_push_service_closing_during_the_handshake_is_a_connection_error_not_a_tls_error() {
    // Closes every connection as soon as it is accepted: a push service
    // shedding load. The pushes must stay retryable as connection errors
    // (a TLS error refuses a verification push at once).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    // Whether the reset reaches the client while it writes its hello (a
    // plain reset) or while the handshake reads (a "TLS handshake" reset)
    // depends on timing; both are connection errors.
    for _ in 0..5 {
        let answers = client.send_batch(vec![push(format!("https://localhost:{port}/p"))]);
        assert!(
            matches!(&answers[0], Err(OutError::Connection(_))),
            "{answers:?}"
        );
    }
}

/// A file under the system's temporary directory, unique to this process.
fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jmap-web-push-net-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn a_private_authority_read_from_a_pem_file_is_trusted() {
    let service = TlsPushService::start(&[b"h2", b"http/1.1"]);
    // Another authority first: every certificate in the file is read.
    let other = rcgen::generate_simple_self_signed(vec!["other.example".to_string()]).unwrap();
    let path = temp_file(
        "private-ca.pem",
        &format!("{}\n{}", other.cert.pem(), service.certificate_pem),
    );
    let roots = read_pem_certificates(&path).unwrap();
    assert_eq!(
        roots,
        vec![other.cert.der().to_vec(), service.certificate.clone()]
    );
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        extra_root_certificates: roots,
        ..HttpPolicy::default()
    })
    .unwrap();
    assert_all_created(&client.send_batch(vec![push(service.url("p"))]));
}

#[test]
fn a_pem_file_without_certificates_or_missing_is_an_error_naming_it() {
    let empty = temp_file("empty.pem", "no certificate here\n");
    let e = read_pem_certificates(&empty).unwrap_err().to_string();
    assert!(
        e.contains("empty.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let missing = empty.with_file_name("missing.pem");
    let e = read_pem_certificates(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
}

#[test]
fn an_unused_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // Answers one request and keeps the connection open; reports when the
    // client closes it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        if !answer_one_push(&mut stream) {
            return;
        }
        let answered = std::time::Instant::now();
        // Blocks until the client closes its side.
        let eof = matches!(stream.read(&mut [0u8; 64]), Ok(0));
        let _ = closed_tx.send((eof, answered.elapsed()));
    });
    let idle_timeout = std::time::Duration::from_millis(300);
    let client = HttpClient::new(HttpPolicy {
        allow_insecure_loopback: true,
        idle_timeout,
        ..HttpPolicy::default()
    })
    .unwrap();
    let answers = client.send_batch(vec![push(format!("http://127.0.0.1:{port}/p"))]);
    assert!(
        answers[0].as_ref().is_ok_and(|r| r.status == 201),
        "{answers:?}"
    );
    // The client stays alive and sends nothing more: only the sweep can
    // close the connection.
    let (eof, after) = closed_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("the idle connection was never closed");
    assert!(eof);
    assert!(
        after >= idle_timeout - std::time::Duration::from_millis(50),
        "closed after {after:?}, before the idle timeout"
    );
    drop(client);
}
