//! Adapter component: the plugin's `jmap:web-push/http-out` interface over
//! `wasi:http/outgoing-handler@0.2.x`, world `http-out-adapter` in
//! `wit/adapters.wit`.
//!
//! A batch is sent as concurrently as `wasi:http` allows: every request is
//! started (`handle`, body written and finished without waiting) before any
//! response is awaited; then one `wasi:io/poll` loop waits for all of them
//! and for the batch deadline (the largest `timeout-ms` of the batch).
//! Requests still pending at the deadline answer `timeout`. `start-batch`
//! does the first half (every request started, handle returned) and
//! `finish-batch` the second, so the plugin's pipelined fan-out overlaps
//! encryption with the network here too.
//!
//! Contract details (see `http-out` in `wit/plugin.wit`):
//! - the adapter sets `Content-Length` itself, so the body is never sent
//!   `chunked`; `Host`, `Content-Length`, `Transfer-Encoding` and
//!   `Connection` given by the plugin are dropped (the runtime owns them);
//! - redirects are never followed (`wasi:http` does not follow them);
//! - at most [`BODY_PREFIX_LIMIT`] octets of each response body are kept;
//! - the address policy is the runtime's: a runtime that refuses a
//!   destination answers `HTTP-request-denied` or
//!   `destination-IP-prohibited`, which map to `denied-by-policy`.
//!
//! URL splitting and header shaping are plain Rust ([`split_url`],
//! [`outgoing_headers`]), tested natively; the wit-bindgen glue (wasm32
//! only) is a thin layer.

#![warn(missing_docs)]

use std::fmt;

/// How many octets of a response body are returned (the WIT asks for at
/// least 1024).
pub const BODY_PREFIX_LIMIT: usize = 4096;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://` (only useful in test setups; the plugin refuses it outside
    /// test mode).
    Http,
    /// `https://`
    Https,
}

/// The parts of an absolute URL that `wasi:http` wants separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// The scheme.
    pub scheme: Scheme,
    /// `host[:port]` as written (IPv6 literals keep their brackets).
    pub authority: String,
    /// Path and query, at least `/`; the fragment is dropped.
    pub path_with_query: String,
}

/// Why a request could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The URL is not an absolute `http`/`https` URL with a host.
    BadUrl(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::BadUrl(m) => write!(f, "bad push URL: {m}"),
        }
    }
}

/// Splits an absolute `http(s)` URL. The plugin has already validated push
/// URLs, so this only needs to be exact, not forgiving: userinfo, missing
/// hosts and other schemes are refused.
pub fn split_url(url: &str) -> Result<UrlParts, RequestError> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
        _ => return Err(RequestError::BadUrl("not an http(s) URL".into())),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(RequestError::BadUrl("no host".into()));
    }
    if authority.contains('@') {
        return Err(RequestError::BadUrl("userinfo is not allowed".into()));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RequestError::BadUrl("invalid character in host".into()));
    }
    let path_with_query = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(UrlParts {
        scheme,
        authority: authority.to_string(),
        path_with_query,
    })
}

/// Headers the runtime owns; the plugin's values for them are dropped.
const RUNTIME_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// The headers to send: the plugin's, in order, without the runtime's own,
/// plus `content-length` for `body_len` (so the body is not sent chunked).
pub fn outgoing_headers(headers: &[(String, String)], body_len: usize) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(n, _)| !RUNTIME_HEADERS.iter().any(|r| n.eq_ignore_ascii_case(r)))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    out.push(("content-length".into(), body_len.to_string().into_bytes()));
    out
}

/// Response headers as the WIT wants them: names lower-cased, values that
/// are not UTF-8 dropped.
pub fn response_headers(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    entries
        .into_iter()
        .filter_map(|(n, v)| {
            String::from_utf8(v)
                .ok()
                .map(|v| (n.to_ascii_lowercase(), v))
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
mod bindings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_wasi_http_parts() {
        let table: &[(&str, Scheme, &str, &str)] = &[
            (
                "https://push.example/p/abc",
                Scheme::Https,
                "push.example",
                "/p/abc",
            ),
            ("https://push.example", Scheme::Https, "push.example", "/"),
            (
                "https://push.example?x=1",
                Scheme::Https,
                "push.example",
                "/?x=1",
            ),
            (
                "HTTPS://push.example:8443/a?b#frag",
                Scheme::Https,
                "push.example:8443",
                "/a?b",
            ),
            ("http://127.0.0.1:9/x", Scheme::Http, "127.0.0.1:9", "/x"),
            ("http://[::1]:80/", Scheme::Http, "[::1]:80", "/"),
        ];
        for (url, scheme, authority, path) in table {
            let p = split_url(url).unwrap();
            assert_eq!(p.scheme, *scheme, "{url}");
            assert_eq!(p.authority, *authority, "{url}");
            assert_eq!(p.path_with_query, *path, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "ftp://x/",
            "push.example/x",
            "https:///x",
            "https://user:pw@push.example/",
            "https://pu sh/",
            "",
        ] {
            assert!(split_url(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn runtime_headers_are_replaced_by_content_length() {
        let h = outgoing_headers(
            &[
                ("TTL".into(), "60".into()),
                ("Host".into(), "evil".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
                ("Content-Length".into(), "1".into()),
                ("Content-Encoding".into(), "aes128gcm".into()),
            ],
            144,
        );
        assert_eq!(
            h,
            vec![
                ("ttl".to_string(), b"60".to_vec()),
                ("content-encoding".to_string(), b"aes128gcm".to_vec()),
                ("content-length".to_string(), b"144".to_vec()),
            ]
        );
    }

    #[test]
    fn non_utf8_response_headers_are_dropped() {
        let h = response_headers(vec![
            ("Retry-After".into(), b"30".to_vec()),
            ("x-bin".into(), vec![0xff, 0xfe]),
        ]);
        assert_eq!(h, vec![("retry-after".to_string(), "30".to_string())]);
    }
}
