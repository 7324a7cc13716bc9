//! Limits per origin (scheme, host, port): requests in flight (a semaphore
//! whose size follows the protocol the origin last answered with), open
//! connections (a semaphore each connection holds while it lives; see
//! `connector`), and the first contact with an `https` origin, made by one
//! request alone so that, if the origin speaks HTTP/2, the others share its
//! connection instead of opening one each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Version;
use tokio::sync::Semaphore;

/// One slot per origin, created on first use. Entries no request and no
/// open connection uses are dropped when the map grows past
/// [`OriginLimits::TRACKED`], so many distinct push hosts cannot grow it
/// without bound.
pub(crate) struct OriginLimits {
    per_origin: usize,
    per_http2_origin: usize,
    map: Mutex<HashMap<String, Arc<OriginSlot>>>,
}

/// Nothing is known of the origin yet.
const CONTACT_NONE: u8 = 0;
/// The origin has answered.
const CONTACT_ANSWERED: u8 = 1;
/// The last attempt to reach the origin failed.
const CONTACT_FAILED: u8 = 2;

/// One origin's limits.
pub(crate) struct OriginSlot {
    /// Requests in flight.
    pub(crate) permits: Arc<Semaphore>,
    /// Open connections (each holds one permit while it lives).
    pub(crate) connections: Arc<Semaphore>,
    /// Whether the origin last answered over HTTP/2 (and so has the raised
    /// limit).
    http2: AtomicBool,
    /// `CONTACT_*`.
    contact: AtomicU8,
    /// Open HTTP/2 connections.
    http2_connections: AtomicUsize,
    /// Held by the one request that makes the first contact.
    first_contact: tokio::sync::Mutex<()>,
}

impl OriginSlot {
    /// Waits until this request may go on: at once once the origin has
    /// answered (or the last attempt failed, so that a burst to an
    /// unreachable origin fails in parallel, within one connect timeout);
    /// before that, the request that gets the returned guard goes first
    /// and the others wait until it has an answer or an error.
    pub(crate) async fn first_contact(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.contact.load(Ordering::Acquire) != CONTACT_NONE {
            return None;
        }
        let guard = self.first_contact.lock().await;
        (self.contact.load(Ordering::Acquire) == CONTACT_NONE).then_some(guard)
    }

    /// Counts an HTTP/2 connection opened to the origin.
    pub(crate) fn http2_opened(&self) {
        self.http2_connections.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an HTTP/2 connection closed; when it was the last, the next
    /// request makes a first contact again (alone), so that a burst after
    /// the connection closed (idle, GOAWAY, a lost path) opens one
    /// connection, not one per request.
    pub(crate) fn http2_closed(&self) {
        if self.http2_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.contact.store(CONTACT_NONE, Ordering::Release);
        }
    }

    /// Records that a request to the origin failed before an answer.
    pub(crate) fn failed(&self) {
        let _ = self.contact.compare_exchange(
            CONTACT_NONE,
            CONTACT_FAILED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

impl OriginLimits {
    const TRACKED: usize = 1024;

    /// `per_origin` requests in flight per origin, `per_http2_origin` for
    /// an origin answering over HTTP/2.
    pub(crate) fn new(per_origin: usize, per_http2_origin: usize) -> Self {
        OriginLimits {
            per_origin,
            per_http2_origin,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of `origin` (see [`origin_key`]).
    pub(crate) fn slot(&self, origin: &str) -> Arc<OriginSlot> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(origin) {
            return s.clone();
        }
        if map.len() >= Self::TRACKED {
            // Keep every slot still in use: held by a request, a permit in
            // flight, or an open connection.
            map.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || Arc::strong_count(&s.permits) > 1
                    || Arc::strong_count(&s.connections) > 1
            });
        }
        let s = Arc::new(OriginSlot {
            permits: Arc::new(Semaphore::new(self.per_origin.max(1))),
            connections: Arc::new(Semaphore::new(self.per_origin.max(1))),
            http2: AtomicBool::new(false),
            contact: AtomicU8::new(CONTACT_NONE),
            http2_connections: AtomicUsize::new(0),
            first_contact: tokio::sync::Mutex::new(()),
        });
        map.insert(origin.to_string(), s.clone());
        s
    }

    /// Records the protocol an origin answered with: the first HTTP/2
    /// answer raises its limit to `per_http2_origin`, a later HTTP/1.x
    /// answer lowers it again (permits in use are taken back as they are
    /// returned). Must run inside the client's runtime.
    pub(crate) fn answered_with(&self, slot: &OriginSlot, version: Version) {
        if slot.contact.load(Ordering::Acquire) != CONTACT_ANSWERED {
            slot.contact.store(CONTACT_ANSWERED, Ordering::Release);
        }
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

/// `scheme://host:port` of a URL, the key of the per-origin limits.
pub(crate) fn origin_key(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// [`origin_key`] of the URI the connector is asked for (made from the same
/// URL text, so the keys agree).
pub(crate) fn uri_origin_key(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("");
    let port = uri.port_u16().unwrap_or(match scheme {
        "https" => 443,
        "http" => 80,
        _ => 0,
    });
    format!("{scheme}://{}:{port}", uri.host().unwrap_or(""))
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
            let limits = OriginLimits::new(4, 40);
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
            // The same origin is the same slot, by URL and by URI.
            assert!(Arc::ptr_eq(&slot, &limits.slot("https://push.example:443")));
            for text in [
                "https://push.example/p",
                "https://[::1]:8443/p",
                "http://h.example/x?y",
            ] {
                let url = url::Url::parse(text).unwrap();
                let uri: http::Uri = url.as_str().parse().unwrap();
                assert_eq!(origin_key(&url), uri_origin_key(&uri), "{text}");
            }
        });
    }
}
