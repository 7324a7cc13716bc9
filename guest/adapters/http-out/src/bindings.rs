//! The wit-bindgen glue: `http-out.send-batch` over
//! `wasi:http/outgoing-handler` (through the `wasip2` crate). The shape of
//! requests and responses is decided in the crate root; this file only moves
//! data across the interface.

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme as WasiScheme,
};
use wasip2::io::poll;
use wasip2::io::streams::StreamError;

use crate::{outgoing_headers, response_headers, split_url, Scheme, BODY_PREFIX_LIMIT};

wit_bindgen::generate!({
    world: "http-out-adapter",
    path: "../../../wit",
});

use exports::jmap::web_push::http_out::{self as wit, Error, Request, Response};

struct Component;

export!(Component);

const NANOS_PER_MS: u64 = 1_000_000;

fn map_error(e: &ErrorCode) -> Error {
    use ErrorCode as E;
    match e {
        E::DnsTimeout => Error::Timeout,
        E::DnsError(p) => Error::Dns(p.rcode.clone().unwrap_or_else(|| "DNS error".into())),
        E::DestinationNotFound => Error::Dns("destination not found".into()),
        E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionLimitReached
        | E::DestinationUnavailable
        | E::DestinationIpUnroutable
        | E::HttpResponseIncomplete
        | E::HttpProtocolError => Error::Connection(format!("{e:?}")),
        E::TlsProtocolError | E::TlsCertificateError | E::TlsAlertReceived(_) => {
            Error::Tls(format!("{e:?}"))
        }
        E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => Error::Timeout,
        E::HttpRequestBodySize(_)
        | E::HttpResponseBodySize(_)
        | E::HttpResponseHeaderSize(_)
        | E::HttpResponseHeaderSectionSize(_) => Error::TooLarge,
        E::HttpRequestDenied | E::DestinationIpProhibited => {
            Error::DeniedByPolicy(format!("{e:?}"))
        }
        other => Error::Other(format!("{other:?}")),
    }
}

/// Starts one request: headers, target, timeouts, then the body written and
/// finished without waiting for the connection (the runtime buffers it).
fn start(req: &Request) -> Result<FutureIncomingResponse, Error> {
    let url = split_url(&req.url).map_err(|e| Error::Other(e.to_string()))?;
    let fields = Fields::from_list(&outgoing_headers(&req.headers, req.body.len()))
        .map_err(|e| Error::Other(format!("header refused by the runtime: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let scheme = match url.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    let refused = |what: &str| Error::Other(format!("the runtime refused the {what}"));
    outgoing
        .set_method(&Method::Post)
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(&url.authority))
        .map_err(|()| refused("authority"))?;
    outgoing
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| refused("path"))?;
    let timeout = u64::from(req.timeout_ms.max(1)) * NANOS_PER_MS;
    let options = RequestOptions::new();
    // A runtime may not support a timeout; the batch deadline still holds.
    let _ = options.set_connect_timeout(Some(timeout));
    let _ = options.set_first_byte_timeout(Some(timeout));
    let _ = options.set_between_bytes_timeout(Some(timeout));
    let body = outgoing.body().map_err(|()| refused("body"))?;
    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(|e| map_error(&e))?;
    {
        let stream = body.write().map_err(|()| refused("body stream"))?;
        let mut rest: &[u8] = &req.body;
        while !rest.is_empty() {
            let permitted = match stream.check_write() {
                Ok(0) => {
                    stream.subscribe().block();
                    continue;
                }
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX).min(rest.len()),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Connection(e.to_debug_string()))
                }
                Err(StreamError::Closed) => {
                    return Err(Error::Connection("request body stream closed".into()))
                }
            };
            let (now, later) = rest.split_at(permitted);
            stream
                .write(now)
                .map_err(|e| Error::Connection(format!("writing the body: {e:?}")))?;
            rest = later;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| map_error(&e))?;
    Ok(future)
}

/// Reads status, headers and the first [`BODY_PREFIX_LIMIT`] octets.
fn read_response(resp: IncomingResponse) -> Response {
    let status = resp.status();
    let headers = response_headers(resp.headers().entries());
    let mut body_prefix = Vec::new();
    if let Ok(body) = resp.consume() {
        if let Ok(stream) = body.stream() {
            while body_prefix.len() < BODY_PREFIX_LIMIT {
                let want = (BODY_PREFIX_LIMIT - body_prefix.len()) as u64;
                match stream.blocking_read(want) {
                    Ok(chunk) => body_prefix.extend_from_slice(&chunk),
                    Err(_) => break,
                }
            }
        }
    }
    Response {
        status,
        headers,
        body_prefix,
    }
}

/// A started batch: per request either its early error or its future.
struct Started {
    deadline_ms: u32,
    slots: Vec<Result<FutureIncomingResponse, Error>>,
}

thread_local! {
    static BATCHES: std::cell::RefCell<(u64, std::collections::HashMap<u64, Started>)> =
        std::cell::RefCell::new((0, std::collections::HashMap::new()));
}

fn start_all(requests: &[Request]) -> Started {
    Started {
        deadline_ms: requests.iter().map(|r| r.timeout_ms).max().unwrap_or(0),
        slots: requests.iter().map(start).collect(),
    }
}

/// Waits for every future of `started` (one `wasi:io/poll` loop over all of
/// them and the batch deadline) and returns the answers in order.
fn finish_all(started: Started) -> Vec<Result<Response, Error>> {
    let deadline =
        monotonic_clock::subscribe_duration(u64::from(started.deadline_ms) * NANOS_PER_MS);
    let mut results: Vec<Option<Result<Response, Error>>> = Vec::with_capacity(started.slots.len());
    let mut waiting: Vec<(usize, FutureIncomingResponse)> = Vec::new();
    for (i, slot) in started.slots.into_iter().enumerate() {
        match slot {
            Ok(f) => {
                results.push(None);
                waiting.push((i, f));
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    while !waiting.is_empty() {
        let pollables: Vec<_> = waiting.iter().map(|(_, f)| f.subscribe()).collect();
        let mut refs: Vec<&poll::Pollable> = pollables.iter().collect();
        refs.push(&deadline);
        let ready = poll::poll(&refs);
        drop(pollables);
        let timed_out = ready.iter().any(|&r| r as usize == waiting.len());
        let mut still = Vec::with_capacity(waiting.len());
        for (i, f) in waiting {
            match f.get() {
                Some(Ok(Ok(resp))) => results[i] = Some(Ok(read_response(resp))),
                Some(Ok(Err(e))) => results[i] = Some(Err(map_error(&e))),
                Some(Err(())) => {
                    results[i] = Some(Err(Error::Other("response already taken".into())))
                }
                None if timed_out => results[i] = Some(Err(Error::Timeout)),
                None => still.push((i, f)),
            }
        }
        waiting = still;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(Error::Other("no answer".into()))))
        .collect()
}

impl wit::Guest for Component {
    fn send_batch(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
        finish_all(start_all(&requests))
    }

    fn start_batch(requests: Vec<Request>) -> u64 {
        let started = start_all(&requests);
        BATCHES.with(|b| {
            let (next, open) = &mut *b.borrow_mut();
            *next += 1;
            open.insert(*next, started);
            *next
        })
    }

    fn finish_batch(handle: u64) -> Vec<Result<Response, Error>> {
        match BATCHES.with(|b| b.borrow_mut().1.remove(&handle)) {
            Some(started) => finish_all(started),
            None => Vec::new(),
        }
    }
}
