//! The connector under the client's pool: `hyper-rustls` over
//! `hyper-util`'s TCP connector with the guarded resolver, wrapped so that
//! every connection holds one of its origin's connection permits while it
//! lives. The pool may start a connection for a request that then gets an
//! idle one; that connection waits for a permit (at most the connect
//! timeout) instead of exceeding the origin's limit, so a fan-out to one
//! push service never has more than
//! [`HttpPolicy::max_connections_per_origin`](super::HttpPolicy) connections
//! open to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::OwnedSemaphorePermit;

use super::limits::{uri_origin_key, OriginLimits, OriginSlot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector whose connections are counted against their origin.
#[derive(Clone)]
pub(crate) struct OriginCapped<C> {
    pub(crate) inner: C,
    pub(crate) limits: Arc<OriginLimits>,
    /// How long a new connection waits for a permit, and then how long it
    /// may take to connect (the connect timeout).
    pub(crate) wait: Duration,
}

/// Connecting (TCP, TLS) took longer than the connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {0} timed out")]
pub(crate) struct ConnectTimedOut(String);

/// All of an origin's connections were open for the whole connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("every connection to {0} allowed is open")]
pub(crate) struct NoConnectionSlot(String);

impl<C> tower_service::Service<Uri> for OriginCapped<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Response: Connection + Send,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    type Response = Capped<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Take the connector `poll_ready` readied; a clone stays for the
        // next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = uri_origin_key(&uri);
        let slot = self.limits.slot(&key);
        let wait = self.wait;
        Box::pin(async move {
            let permit = tokio::time::timeout(wait, slot.connections.clone().acquire_owned())
                .await
                .map_err(|_| Box::new(NoConnectionSlot(key.clone())) as BoxError)?
                .map_err(|e| Box::new(e) as BoxError)?;
            // The connect timeout covers TCP, TLS and ALPN together (the
            // TCP connector's own covers TCP only): a push service that
            // accepts and never answers the handshake is a timeout.
            let io = tokio::time::timeout(wait, inner.call(uri))
                .await
                .map_err(|_| Box::new(ConnectTimedOut(key.clone())) as BoxError)?
                .map_err(Into::into)?;
            let http2 = io.connected().is_negotiated_h2();
            if http2 {
                slot.http2_opened();
            }
            Ok(Capped {
                io,
                http2: http2.then_some(slot),
                _permit: permit,
            })
        })
    }
}

/// A connection holding its origin's connection permit until it is
/// dropped (closed).
pub(crate) struct Capped<T> {
    io: T,
    /// The origin, for an HTTP/2 connection (counted while it lives).
    http2: Option<Arc<OriginSlot>>,
    _permit: OwnedSemaphorePermit,
}

impl<T> Drop for Capped<T> {
    fn drop(&mut self) {
        if let Some(slot) = &self.http2 {
            slot.http2_closed();
        }
    }
}

impl<T: Connection> Connection for Capped<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for Capped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Capped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
