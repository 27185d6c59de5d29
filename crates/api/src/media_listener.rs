//! The media origin's lean HTTP/1.1 path: a keep-alive connection whose first request is
//! `GET /live/…` (picked by [`crate::lean_listener`]) is served here, request after request,
//! until it asks for something this path does not serve; then it goes to hyper with the bytes
//! read so far ([`ZeroCopyStream::replaying`]), and hyper answers it as it answers the rest.
//!
//! Why: a viewer fetches a playlist and a segment every two seconds, or a playlist and a part
//! every 0.1 s with low-latency HLS, so these requests outnumber all others and the origin's
//! requests per second are what a show's audience costs. Under hyper and the router, `perf`
//! put 29 % of the node's CPU in its own code while it served 200 KB segments: hyper's owned
//! `Request` and header maps, the router's state clone and extractors, the middleware's
//! futures and label strings, allocations for all of them. That left the origin level with
//! nginx serving the same files (`marquee-bench live`, BENCHMARKS.md). Here a request is
//! parsed by `httparse` into a head borrowed from the read buffer, answered by the very
//! handler axum's route calls ([`serve_media`]), and written in as few system calls as the
//! kernel allows: the head with `MSG_MORE`, the body with `sendfile` ([`crate::zero_copy`]).
//!
//! What the route's middleware does is done here too: `x-marquee-node`,
//! `x-content-type-options`, the request-id scope for error bodies, request metrics under the
//! route's template, and a panic caught into the contract's 500 body.
//!
//! Anything unusual goes to hyper rather than being judged here: another method or path, a
//! request with a body, an upgrade or an `Expect`, a path that does not decode as UTF-8, a
//! malformed or oversized head. So this path never answers differently from hyper; it only
//! answers the common requests with less work.

use crate::routes::live::{serve_media, verify_playback};
use crate::zero_copy::ZeroCopyStream;
use crate::{ApiError, AppState};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use marquee_media::Viewer;
use marquee_telemetry::names;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{IoSlice, Write as _};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head served here (as hyper's default); a larger one goes to hyper, which
/// refuses it.
pub const MAX_HEAD: usize = 8 * 1024;
/// Header lines parsed; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 2 * 1024;
/// A write the client takes nothing of within this ends the connection. Each write gets its
/// own: a slow viewer may take longer than this for a whole segment, but not stall this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The route's template, the label its metrics carry under the router too.
const ROUTE: &str = "/live/{event}/{token}/{file}";

/// Serves `stream` until it closes, or returns it (with what was read of it) for hyper.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: AppState,
) -> Option<ZeroCopyStream> {
    // Responses are written whole; Nagle would hold the end of one back until the client's
    // delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut stream = ZeroCopyStream::new(stream);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut shutdown = state.push.shutdown.clone();
    let mut connection = Connection::new(&state);
    // A request head begun must be complete by its deadline (the whole head, not each read:
    // otherwise a byte every few seconds would hold the connection forever); a keep-alive
    // connection idle between requests is closed after the node's idle timeout.
    let limits = state.settings.http;
    let mut head_deadline: Option<tokio::time::Instant> = None;
    loop {
        match parse(&buffer) {
            Parsed::Media { request, len } => {
                let keep_alive = request.keep_alive;
                if !respond(&mut stream, &state, &mut connection, request).await {
                    return None;
                }
                buffer.advance(len);
                if !keep_alive {
                    let _ = stream.shutdown().await;
                    return None;
                }
                continue;
            }
            Parsed::Other => {
                tracing::trace!(%peer, "media: handing a connection to hyper");
                return Some(stream.replaying(buffer.freeze()));
            }
            Parsed::Partial => {}
        }
        let idle = buffer.is_empty();
        let deadline = if idle {
            head_deadline = None;
            tokio::time::Instant::now() + limits.idle_timeout
        } else {
            *head_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + limits.header_read_timeout)
        };
        buffer.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buffer)) => read,
            // Between requests, a stopping node closes the connection; a request begun is
            // answered first.
            () = crate::push::stopping(&mut shutdown), if idle => return None,
        };
        match read {
            Ok(Ok(read)) if read > 0 => {}
            // Closed, failed or timed out: a request begun and cut off is not answered.
            _ => return None,
        }
    }
}

/// A request this path serves, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct MediaRequest<'a> {
    /// `HEAD` rather than `GET`.
    pub head_only: bool,
    pub version: Version,
    /// Whether the connection goes on after the answer.
    pub keep_alive: bool,
    /// The path's three segments, percent-decoded.
    pub event: Cow<'a, str>,
    pub token: Cow<'a, str>,
    pub file: Cow<'a, str>,
    /// After `?`, as sent.
    pub query: Option<&'a str>,
    /// `x-request-id`, or empty.
    pub request_id: &'a str,
}

/// What the start of the read buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole request head yet.
    Partial,
    /// A request served here, whose head is the first `len` bytes.
    Media {
        request: MediaRequest<'a>,
        len: usize,
    },
    /// Anything else: hyper's to answer.
    Other,
}

/// Reads the request head at the start of `buffer` (public for the fuzz target).
pub fn parse(buffer: &[u8]) -> Parsed<'_> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let head_only = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parsed::Other,
    };
    let mut close = false;
    let mut keep_alive = false;
    let mut request_id = "";
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            if field.value.trim_ascii() != b"0" {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in field.value.split(|byte| *byte == b',') {
                let option = option.trim_ascii();
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        } else if name.eq_ignore_ascii_case("x-request-id") {
            match std::str::from_utf8(field.value) {
                Ok(value) => request_id = value,
                Err(_) => return Parsed::Other,
            }
        }
    }
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive);
    let Some(target) = request.path else {
        return Parsed::Other;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !path.bytes().all(is_path_byte) || !query.unwrap_or("").bytes().all(is_query_byte) {
        return Parsed::Other;
    }
    let Some(rest) = path.strip_prefix("/live/") else {
        return Parsed::Other;
    };
    let mut segments = rest.split('/');
    let (Some(event), Some(token), Some(file), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Parsed::Other;
    };
    // As axum's `Path` reads them: percent-decoded, and UTF-8.
    fn decode(segment: &str) -> Option<Cow<'_, str>> {
        if segment.is_empty() {
            return None;
        }
        percent_decode_str(segment).decode_utf8().ok()
    }
    let (Some(event), Some(token), Some(file)) = (decode(event), decode(token), decode(file))
    else {
        return Parsed::Other;
    };
    Parsed::Media {
        request: MediaRequest {
            head_only,
            version,
            keep_alive,
            event,
            token,
            file,
            query,
            request_id,
        },
        len,
    }
}

/// RFC 3986 `pchar` and `/`: what a path holds unescaped. Anything else is for hyper to judge.
fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&byte)
}

/// A query's bytes: `pchar`, `/` and `?`.
fn is_query_byte(byte: u8) -> bool {
    is_path_byte(byte) || byte == b'?'
}

/// What a connection keeps from one request to the next. A player asks for file after file
/// of one stream with one token, so the token's check and the metric handles are looked up
/// once, not per request.
struct Connection {
    node: HeaderValue,
    /// The last token verified: its event, the token, and whom it names until when.
    verified: Option<(String, String, Viewer)>,
    in_flight: metrics::Gauge,
    /// Request counters and latency histograms by method and status.
    recorders: Vec<(bool, StatusCode, metrics::Counter, metrics::Histogram)>,
}

impl Connection {
    fn new(state: &AppState) -> Connection {
        Connection {
            node: HeaderValue::from_str(&state.settings.node_id)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-id")),
            verified: None,
            in_flight: metrics::gauge!(names::HTTP_REQUESTS_IN_FLIGHT),
            recorders: Vec::new(),
        }
    }

    /// The viewer `token` names for `event`: as verified for an earlier request of this
    /// connection while it has not expired (a token's check depends on nothing else), else
    /// checked now.
    fn viewer(&mut self, state: &AppState, event: &str, token: &str) -> Result<&Viewer, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let kept = self
            .verified
            .take()
            .filter(|(seen_event, seen_token, viewer)| {
                seen_event == event && seen_token == token && now < viewer.expires_at
            });
        let verified = match kept {
            Some(verified) => verified,
            None => (
                event.to_string(),
                token.to_string(),
                verify_playback(state, event, token)?,
            ),
        };
        Ok(&self.verified.insert(verified).2)
    }

    /// Counts a request under the route's template, as the router's middleware does.
    fn record(&mut self, head_only: bool, status: StatusCode, elapsed: Duration) {
        let at = match self
            .recorders
            .iter()
            .position(|(head, code, ..)| *head == head_only && *code == status)
        {
            Some(at) => at,
            None => {
                let method = if head_only { "HEAD" } else { "GET" };
                let labels = [
                    ("method", Cow::Borrowed(method)),
                    ("route", Cow::Borrowed(ROUTE)),
                    ("status", Cow::Owned(status.as_u16().to_string())),
                ];
                self.recorders.push((
                    head_only,
                    status,
                    metrics::counter!(names::HTTP_REQUESTS_TOTAL, &labels),
                    metrics::histogram!(names::HTTP_REQUEST_DURATION_SECONDS, &labels),
                ));
                self.recorders.len() - 1
            }
        };
        let (_, _, counter, histogram) = &self.recorders[at];
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
}

/// The answer to `request`, errors made into the contract's body.
async fn answer(
    state: &AppState,
    connection: &mut Connection,
    request: &MediaRequest<'_>,
) -> Response {
    let viewer = match connection.viewer(state, &request.event, &request.token) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    serve_media(
        state,
        &request.event,
        viewer,
        &request.file,
        request.query,
        request.version,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Answers one request; false when the connection cannot go on (the client went away or a
/// body failed midway, which must not look like a short success).
async fn respond(
    stream: &mut ZeroCopyStream,
    state: &AppState,
    connection: &mut Connection,
    request: MediaRequest<'_>,
) -> bool {
    connection.in_flight.increment(1.0);
    let started = Instant::now();
    // As through the router: the answer, error bodies included, is made inside the request
    // id's scope; a panic is caught outside it. The handler's future (about 2 KB: it can
    // wait on a playlist, a part or a growing segment) is made in place, and only a
    // pointer to it goes into the wrappers, instead of being copied into each.
    let handled = {
        let answering = std::pin::pin!(answer(state, connection, &request));
        crate::request_context::scope(
            request.request_id.to_string(),
            AssertUnwindSafe(answering).catch_unwind(),
        )
        .await
    };
    connection.in_flight.decrement(1.0);
    let response = handled.unwrap_or_else(crate::middleware::panic_response);
    let status = response.status();
    connection.record(request.head_only, status, started.elapsed());
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), "request failed");
    }
    write_response(stream, &connection.node, response, &request).await
}

/// Writes `response` as HTTP/1.1 (or 1.0, as asked); false when the connection must close.
async fn write_response(
    stream: &mut ZeroCopyStream,
    node: &HeaderValue,
    response: Response,
    request: &MediaRequest<'_>,
) -> bool {
    let (parts, body) = response.into_parts();
    let length = axum::body::HttpBody::size_hint(&body).exact();
    // Without a length, HTTP/1.1 is chunked and HTTP/1.0 ends the body with the connection.
    let chunked = length.is_none() && request.version == Version::HTTP_11;
    let keep_alive = request.keep_alive && (length.is_some() || chunked);

    let mut head = Vec::with_capacity(320);
    head.extend_from_slice(if request.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // Framing, connection and the node are this writer's to say.
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION | header::DATE
        ) || name.as_str() == "x-marquee-node"
        {
            continue;
        }
        field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        field(&mut head, b"x-content-type-options", b"nosniff");
    }
    field(&mut head, b"x-marquee-node", node.as_bytes());
    HTTP_DATE.with_borrow_mut(|date| field(&mut head, b"date", date.now().as_bytes()));
    match length {
        // Written into the head, not formatted into a string of its own.
        Some(length) => {
            let _ = write!(head, "content-length: {length}\r\n");
        }
        None if chunked => field(&mut head, b"transfer-encoding", b"chunked"),
        None => {}
    }
    if !keep_alive {
        field(&mut head, b"connection", b"close");
    } else if request.version == Version::HTTP_10 {
        field(&mut head, b"connection", b"keep-alive");
    }
    head.extend_from_slice(b"\r\n");

    if request.head_only || length == Some(0) {
        return write_all(stream, &[&head]).await && keep_alive;
    }
    let mut body = std::pin::pin!(body);
    let mut head = Some(head);
    if chunked {
        // A body that trickles in (a segment still being written): the head goes now.
        if let Some(head) = head.take() {
            if !write_all(stream, &[&head]).await {
                return false;
            }
        }
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // Cut off mid-body: ending the connection tells the client so.
            return false;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let head = head.take().unwrap_or_default();
        let written = if chunked {
            let size = format!("{:x}\r\n", data.len());
            write_all(stream, &[&head, size.as_bytes(), &data, b"\r\n"]).await
        } else {
            write_all(stream, &[&head, &data]).await
        };
        if !written {
            return false;
        }
    }
    let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    let head = head.unwrap_or_default();
    if (!head.is_empty() || !end.is_empty()) && !write_all(stream, &[&head, end]).await {
        return false;
    }
    if !keep_alive {
        let _ = stream.shutdown().await;
    }
    keep_alive
}

fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Writes every byte of `parts`, as few system calls as the socket allows. The slices passed
/// down are the callers' own memory, so a segment's bytes are still recognised and sent from
/// its file ([`crate::zero_copy`]).
async fn write_all(stream: &mut ZeroCopyStream, parts: &[&[u8]]) -> bool {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut written = 0;
    while written < total {
        // What is left of the first few parts (a response has at most four); any after them
        // go in a later round.
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        let mut skip = written;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            if count == slices.len() {
                break;
            }
            slices[count] = IoSlice::new(&part[skip..]);
            skip = 0;
            count += 1;
        }
        let slices = &slices[..count];
        // Most writes go through at once; only one that has to wait gets a timer.
        let attempt =
            std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write_vectored(cx, slices))
                .now_or_never();
        let result = match attempt {
            Some(result) => result,
            None => match tokio::time::timeout(
                WRITE_TIMEOUT,
                std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write_vectored(cx, slices)),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => return false,
            },
        };
        match result {
            Ok(0) | Err(_) => return false,
            Ok(sent) => written += sent,
        }
    }
    true
}

thread_local! {
    /// The `Date` header's value, made once a second per thread.
    static HTTP_DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate {
            second: u64::MAX,
            text: String::new(),
        })
    };
}

struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: &[u8] = b"GET /live/ev1/tok.1.sig/chunk-r1-0-00005.m4s HTTP/1.1\r\n\
        Host: origin\r\nUser-Agent: player\r\n\r\n";

    fn media(buffer: &[u8]) -> (MediaRequest<'_>, usize) {
        match parse(buffer) {
            Parsed::Media { request, len } => (request, len),
            other => panic!("not served here: {other:?}"),
        }
    }

    #[test]
    fn a_segment_request_is_read_from_the_buffer() {
        let (request, len) = media(SEGMENT);
        assert_eq!(len, SEGMENT.len());
        assert_eq!(request.event, "ev1");
        assert_eq!(request.token, "tok.1.sig");
        assert_eq!(request.file, "chunk-r1-0-00005.m4s");
        assert_eq!(request.query, None);
        assert!(request.keep_alive, "HTTP/1.1 is keep-alive by default");
        assert!(!request.head_only);
    }

    #[test]
    fn pipelined_requests_are_read_one_at_a_time() {
        let mut two = SEGMENT.to_vec();
        two.extend_from_slice(
            b"GET /live/ev1/tok/media_0.m3u8?_HLS_msn=7&_HLS_part=2 HTTP/1.1\r\n\r\n",
        );
        let (_, len) = media(&two);
        assert_eq!(len, SEGMENT.len());
        let (second, _) = media(&two[len..]);
        assert_eq!(second.file, "media_0.m3u8");
        assert_eq!(second.query, Some("_HLS_msn=7&_HLS_part=2"));
    }

    #[test]
    fn a_head_cut_short_waits_for_more_until_it_is_too_large() {
        assert_eq!(parse(&SEGMENT[..SEGMENT.len() - 3]), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
        let mut huge = b"GET /live/e/t/f.m4s HTTP/1.1\r\nX-Padding: ".to_vec();
        huge.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse(&huge), Parsed::Other, "hyper refuses it");
    }

    #[test]
    fn connection_options_decide_keep_alive() {
        let cases: [(&[u8], bool); 5] = [
            (
                b"GET /live/e/t/f HTTP/1.1\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET /live/e/t/f HTTP/1.1\r\nConnection: TE, Close\r\n\r\n",
                false,
            ),
            (b"GET /live/e/t/f HTTP/1.0\r\n\r\n", false),
            (
                b"GET /live/e/t/f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (b"GET /live/e/t/f HTTP/1.1\r\n\r\n", true),
        ];
        for (head, keep_alive) in cases {
            assert_eq!(
                media(head).0.keep_alive,
                keep_alive,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let (head, _) = media(b"HEAD /live/e/t/f HTTP/1.0\r\n\r\n");
        assert!(head.head_only);
        assert_eq!(head.version, Version::HTTP_10);
    }

    #[test]
    fn path_segments_are_percent_decoded_as_axum_does() {
        let (request, _) = media(b"GET /live/e%76/t/media%5F0.m3u8 HTTP/1.1\r\n\r\n");
        assert_eq!(request.event, "ev");
        assert_eq!(request.file, "media_0.m3u8");
    }

    #[test]
    fn anything_unusual_is_left_to_hyper() {
        let others: [&[u8]; 14] = [
            b"POST /live/e/t/f HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /live/e/t/f HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /live/e/t/f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /live/e/t/f HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET /live/e/t/f HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /live/_auth HTTP/1.1\r\n\r\n",
            b"GET /live/e/t HTTP/1.1\r\n\r\n",
            b"GET /live/e/t/f/g HTTP/1.1\r\n\r\n",
            b"GET /live//t/f HTTP/1.1\r\n\r\n",
            b"GET /live/e/t/%FF HTTP/1.1\r\n\r\n",
            b"GET /live/e/t/f\"x HTTP/1.1\r\n\r\n",
            b"GET /api/v1/events HTTP/1.1\r\n\r\n",
            b"GET http://origin/live/e/t/f HTTP/1.1\r\n\r\n",
            b"GET /live/e/t/f HTTP/1.1\r\nBad Header\r\n\r\n",
        ];
        for head in others {
            assert_eq!(
                parse(head),
                Parsed::Other,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let empty_body = b"GET /live/e/t/f HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(empty_body), Parsed::Media { .. }));
    }

    #[test]
    fn the_date_is_an_http_date_and_kept_for_the_second() {
        let mut date = CachedDate {
            second: u64::MAX,
            text: String::new(),
        };
        let text = date.now().to_string();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
        assert!(text.ends_with(" GMT"));
    }
}
