//! The request limits `serve` advertises and enforces on `POST /jmap/api`
//! (RFC 8620 §3.6.1): the body is read here, not by axum's `Bytes`
//! extractor and its 2 MB default, up to `server.max_size_request`; an
//! oversized body is read to its end (at most [`DRAIN_MAX`] more octets,
//! for at most [`DRAIN_TIMEOUT`]) before the limit problem is sent, so that
//! an HTTP/1.1 keep-alive connection stays usable, and past those bounds
//! the answer says `Connection: close`. Requests in flight are counted per
//! user ([`ApiSlot`], `server.max_concurrent_requests`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Version};
use axum::response::Response;
use http_body_util::BodyExt as _;

use super::AppState;

/// How many octets past `maxSizeRequest` are read and discarded so that an
/// HTTP/1.1 connection can be kept after the limit problem; a longer body
/// gets `Connection: close` instead.
pub const DRAIN_MAX: u64 = 16 << 20;

/// How long reading and discarding an oversized body may take.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One request counted in [`AppState::in_flight`]; uncounted when dropped
/// (also when the client goes away mid-request).
pub(super) struct ApiSlot {
    state: Arc<AppState>,
    user: String,
}

impl ApiSlot {
    /// Counts a request of `user`, or `None` when `user` already has
    /// `server.max_concurrent_requests` in flight.
    pub(super) fn try_acquire(state: &Arc<AppState>, user: &str, max: u32) -> Option<ApiSlot> {
        let mut counts = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(user.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ApiSlot {
            state: state.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for ApiSlot {
    fn drop(&mut self) {
        let mut counts = self
            .state
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// Marks `r` as the last answer on its HTTP/1 connection (the request body
/// was not read to its end, so the connection cannot carry another
/// request). HTTP/2 has no such header, and needs none: a stream's unread
/// body does not affect the others.
pub(super) fn close_connection(mut r: Response, version: Version) -> Response {
    if version < Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Why a request body was not read.
pub(super) enum BodyError {
    /// Over `limit` octets; `drained` when it was read to its end anyway.
    TooLarge {
        /// The body was read (and discarded) to its end.
        drained: bool,
    },
    /// The client's body failed (the connection broke).
    Read(String),
}

/// Reads a request body of at most `limit` octets. An oversized body is
/// read to its end and discarded when that takes at most [`DRAIN_MAX`]
/// more octets and [`DRAIN_TIMEOUT`]; `declared` is the `Content-Length`.
pub(super) async fn read_body(
    body: Body,
    limit: u64,
    declared: Option<u64>,
) -> Result<Bytes, BodyError> {
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_MAX)) {
        return Err(BodyError::TooLarge { drained: false });
    }
    let mut body = body;
    let expected = declared.filter(|n| *n <= limit).unwrap_or(0);
    let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
                let bound = limit.saturating_add(DRAIN_MAX);
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        return false;
                    };
                    if let Ok(data) = frame.into_data() {
                        total = total.saturating_add(data.len() as u64);
                        if total > bound {
                            return false;
                        }
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            return Err(BodyError::TooLarge { drained });
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<usize>) -> Body {
        let frames = chunks
            .into_iter()
            .map(|n| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b' '; n]))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_and_drained_beyond() {
        let ok = read_body(chunked(vec![400, 600]), 1000, None).await;
        assert!(matches!(ok, Ok(b) if b.len() == 1000));
        let over = read_body(chunked(vec![400, 601]), 1000, None).await;
        assert!(matches!(over, Err(BodyError::TooLarge { drained: true })));
        // Far beyond the limit: not read at all when declared, given up
        // after DRAIN_MAX when not.
        let declared = 1000 + DRAIN_MAX + 1;
        let huge = read_body(chunked(vec![10]), 1000, Some(declared)).await;
        assert!(matches!(huge, Err(BodyError::TooLarge { drained: false })));
        let chunk = 1 << 20;
        let n = (DRAIN_MAX as usize) / chunk + 2;
        let endless = read_body(chunked(vec![chunk; n]), 1000, None).await;
        assert!(matches!(
            endless,
            Err(BodyError::TooLarge { drained: false })
        ));
    }
}
