//! Every HTTP listener's connection limits, and the serve loop that applies them.
//!
//! Why: without them a client can hold a connection forever by sending a request head a byte
//! at a time (slowloris), by never sending one, by opening a keep-alive connection and going
//! quiet, or by not reading what it asked for — and enough such connections exhaust the node's
//! descriptors. So:
//! - **header read timeout**: the whole request head must arrive within it, counted from the
//!   connection's start or the end of the previous answer (hyper's own timer, which runs
//!   while a keep-alive connection waits for its next request too);
//! - **body read timeout**: a request body that stops arriving for this long fails the request;
//! - **idle timeout**: a connection on which no byte moved either way for this long while the
//!   server waits on the client (to read, or to take what is written) is closed; server-side
//!   waits (a long poll) do not count, and SSE/WebSocket heartbeats keep live streams moving;
//! - **max connections**: per listener; past it the listener stops accepting and new
//!   connections wait in the kernel's backlog until one closes.
//!
//! The lean SSE and media paths ([`crate::lean_listener`]) apply the same limits themselves.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Must exceed the longest long poll (`push.max_poll`, 60 s), which sends nothing.
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            // Idle SSE connections are the node's most numerous (~12 KiB each on the lean
            // path): this many is ~1.2 GiB, well under what a node serving them has.
            max_connections: 100_000,
        }
    }
}

/// The permits of one listener's connections.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
}

impl ConnectionCap {
    pub fn new(max_connections: usize) -> ConnectionCap {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Waits for a free place (the caller accepts only then, so excess connections wait in
    /// the kernel's backlog rather than in memory).
    pub async fn place(&self) -> OwnedSemaphorePermit {
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => permit,
            // Never closed; should it be, accept nothing more rather than without a cap.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A connection's IO that holds its place under the cap and fails once no byte has moved for
/// the idle timeout while the server waits on the client.
pub struct TimedIo<T> {
    inner: T,
    idle: Duration,
    /// Until the first byte arrives, the deadline is this (the header read timeout) instead
    /// of `idle`: hyper's own header timer starts only once it looks for a head, after the
    /// version detection of the auto server, which waits for bytes without one.
    first_byte: Option<Duration>,
    last_progress: Instant,
    /// Armed when an operation waits; checked against `last_progress` when it fires, so
    /// progress costs a clock read, not a timer reset.
    timer: Option<Pin<Box<Sleep>>>,
    _place: Option<OwnedSemaphorePermit>,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, idle: Duration, place: Option<OwnedSemaphorePermit>) -> TimedIo<T> {
        TimedIo {
            inner,
            idle,
            first_byte: None,
            last_progress: Instant::now(),
            timer: None,
            _place: place,
        }
    }

    /// Closes the connection unless its first byte arrives within `timeout`.
    pub fn first_byte_within(mut self, timeout: Duration) -> TimedIo<T> {
        self.first_byte = Some(timeout);
        self
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the inner operation is pending: `Err` once idle for too long.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let deadline = self.last_progress + self.first_byte.unwrap_or(self.idle);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle too long",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.first_byte = None;
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.progressed();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Forwarded as is: the zero-copy stream recognises cached segments in these slices.
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(written)) => {
                this.progressed();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A listener whose connections hold a place under the cap and close when idle.
pub struct Limited<L> {
    inner: L,
    cap: ConnectionCap,
    idle: Duration,
    header_read: Duration,
}

/// Puts `listener` under `limits`' connection cap and idle timeout.
pub fn limited<L: axum::serve::Listener>(listener: L, limits: &HttpLimits) -> Limited<L> {
    Limited {
        inner: listener,
        cap: ConnectionCap::new(limits.max_connections),
        idle: limits.idle_timeout,
        header_read: limits.header_read_timeout,
    }
}

impl<L> axum::serve::Listener for Limited<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = TimedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // A place first, then the connection: past the cap, connections wait in the backlog.
        let place = self.cap.place().await;
        let (io, addr) = self.inner.accept().await;
        let io = TimedIo::new(io, self.idle, Some(place)).first_byte_within(self.header_read);
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves `router` on `listener` (under `limits`' header and body timeouts; the listener
/// brings the cap and idle timeout, see [`limited`]) until `stopped`, then lets the connections in
/// flight finish (as `axum::serve` with graceful shutdown did). Handlers see the peer as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // An HTTP/2 client that stops answering pings is gone: close its connection.
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let (io, peer) = accepted;
        let io = TokioIo::new(io);
        let service = router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
