//! The public listener: connections whose first request is an SSE stream or a live media file
//! are served by lean paths of their own; every other connection goes to axum (hyper).
//!
//! Why: both are the node's most numerous connections, and hyper's general machinery costs them
//! what they do not need. An idle SSE connection under hyper keeps its read and header buffers
//! (~29 KiB a connection, `marquee-bench push`; see [`crate::push_listener`]). A viewer's
//! keep-alive connection asks for a playlist and a segment every two seconds (or a part every
//! 0.1 s), and per request hyper, routing and middleware cost about as much CPU as the kernel's
//! `sendfile` (`marquee-bench live`; see [`crate::media_listener`]).
//!
//! A connection is classified by peeking at its request line, so nothing is consumed until a
//! path takes it. The media path can still hand a connection to hyper later, with the bytes
//! it read ([`ZeroCopyStream::replaying`]), when a request on it is not one it serves.

use crate::connections::{ConnectionCap, TimedIo};
use crate::zero_copy::ZeroCopyStream;
use crate::AppState;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Which connections the lean paths take.
#[derive(Debug, Clone, Copy)]
pub struct LeanPaths {
    /// `GET /api/v1/push/sse`: served by [`crate::push_listener`].
    pub sse: bool,
    /// `GET /live/…`: served by [`crate::media_listener`].
    pub media: bool,
}

/// The request-line prefixes the lean paths serve; an SSE request's path must end there (a
/// query or the end of the path follows).
const SSE_PREFIX: &[u8] = b"GET /api/v1/push/sse";
const MEDIA_PREFIX: &[u8] = b"GET /live/";

/// An axum [`Listener`](axum::serve::Listener) fed by the classifier: connections that are not
/// served by a lean path, or were handed back by one. Their segment writes go out with
/// `sendfile` (see [`crate::zero_copy`]).
pub struct LeanListener {
    others: mpsc::Receiver<(TimedIo<ZeroCopyStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for LeanListener {
    type Io = TimedIo<ZeroCopyStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedIo<ZeroCopyStream>, SocketAddr) {
        match self.others.recv().await {
            Some(connection) => connection,
            // The acceptor stopped (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Sse,
    Media,
    Hyper,
    Close,
}

/// Accepts on `listener`, serves the `paths` taken by the lean paths, and returns the listener
/// axum serves the rest from.
pub fn lean_listener(
    listener: TcpListener,
    state: AppState,
    paths: LeanPaths,
) -> std::io::Result<LeanListener> {
    let local = listener.local_addr()?;
    let (sender, others) = mpsc::channel(1024);
    let mut shutdown = state.push.shutdown.clone();
    // One cap for the listener, whichever path serves a connection: each holds its place
    // until it closes, and past the cap nothing is accepted (connections wait in the backlog).
    let cap = ConnectionCap::new(state.settings.http.max_connections);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = async {
                    let place = cap.place().await;
                    (listener.accept().await, place)
                } => accepted,
                _ = crate::push::stopping(&mut shutdown) => return,
            };
            match accepted {
                (Ok((stream, peer)), place) => {
                    let sender = sender.clone();
                    let state = state.clone();
                    tokio::spawn(classify(stream, peer, sender, state, paths, place));
                }
                (Err(error), _) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(LeanListener { others, local })
}

async fn classify(
    stream: TcpStream,
    peer: SocketAddr,
    others: mpsc::Sender<(TimedIo<ZeroCopyStream>, SocketAddr)>,
    state: AppState,
    paths: LeanPaths,
    place: tokio::sync::OwnedSemaphorePermit,
) {
    // The request head is due within the header read timeout of the connection's start,
    // however it is split between peeking here and reading on a lean path.
    let deadline = tokio::time::Instant::now() + state.settings.http.header_read_timeout;
    let idle = state.settings.http.idle_timeout;
    let handed_back = match path_of(&stream, paths, deadline).await {
        Path::Sse => {
            crate::push_listener::serve_sse(stream, peer, state, deadline).await;
            None
        }
        Path::Media => crate::media_listener::serve(stream, peer, state).await,
        Path::Hyper => Some(ZeroCopyStream::new(stream)),
        // Nothing (or nothing decidable) by the deadline: a slow client holds no place.
        Path::Close => None,
    };
    if let Some(stream) = handed_back {
        let _ = others
            .send((TimedIo::new(stream, idle, Some(place)), peer))
            .await;
    }
}

/// Peeks at the request line, without consuming it, until it tells which path serves it.
async fn path_of(stream: &TcpStream, paths: LeanPaths, deadline: tokio::time::Instant) -> Path {
    let mut first = [0u8; SSE_PREFIX.len() + 1];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(peeked)) => peeked,
            // Closed, failed, or no request line by the deadline.
            _ => return Path::Close,
        };
        if peeked == 0 {
            return Path::Close;
        }
        match decide(&first[..peeked], paths) {
            Some(path) => return path,
            // A request line split across packets: wait for the rest.
            None => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if tokio::time::Instant::now() >= deadline {
                    return Path::Close;
                }
            }
        }
    }
}

/// The path for a connection whose first bytes are `seen`, or `None` while they could still
/// become either.
fn decide(seen: &[u8], paths: LeanPaths) -> Option<Path> {
    let could_be = |prefix: &[u8]| {
        let len = seen.len().min(prefix.len());
        seen[..len] == prefix[..len]
    };
    if paths.media && could_be(MEDIA_PREFIX) {
        return (seen.len() >= MEDIA_PREFIX.len()).then_some(Path::Media);
    }
    if paths.sse && could_be(SSE_PREFIX) {
        return match seen.get(SSE_PREFIX.len()) {
            Some(b'?' | b' ') => Some(Path::Sse),
            Some(_) => Some(Path::Hyper),
            None => None,
        };
    }
    Some(Path::Hyper)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: LeanPaths = LeanPaths {
        sse: true,
        media: true,
    };

    #[test]
    fn request_lines_pick_their_path() {
        let cases: [(&[u8], Option<Path>); 10] = [
            (b"GET /live/e/t/master.m3u8 HTTP/1.1", Some(Path::Media)),
            (b"GET /live/", Some(Path::Media)),
            (b"GET /api/v1/push/sse?channels=x ", Some(Path::Sse)),
            (b"GET /api/v1/push/sse HTTP/1.1", Some(Path::Sse)),
            (b"GET /api/v1/push/sseother ", Some(Path::Hyper)),
            (b"GET /api/v1/events HTTP/1.1", Some(Path::Hyper)),
            (b"POST /live/e/t/x HTTP/1.1", Some(Path::Hyper)),
            (b"PRI * HTTP/2.0", Some(Path::Hyper)),
            // Split request lines wait for more.
            (b"GET /li", None),
            (b"GET /api/v1/pu", None),
        ];
        for (seen, expected) in cases {
            assert_eq!(
                decide(seen, BOTH),
                expected,
                "{}",
                String::from_utf8_lossy(seen)
            );
        }
    }

    #[test]
    fn a_path_switched_off_goes_to_hyper() {
        let sse_only = LeanPaths {
            sse: true,
            media: false,
        };
        assert_eq!(decide(b"GET /live/e/t/f ", sse_only), Some(Path::Hyper));
        let media_only = LeanPaths {
            sse: false,
            media: true,
        };
        assert_eq!(
            decide(b"GET /api/v1/push/sse ", media_only),
            Some(Path::Hyper)
        );
        assert_eq!(decide(b"GET /li", media_only), None);
    }
}
