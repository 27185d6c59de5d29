//! The HTTP/1.1 fast path: what almost every request through the gateway is (a clear-text
//! HTTP/1.1 request with no body or a `Content-Length` one) carried from client to node and back
//! as bytes, the way nginx does it.
//!
//! **Why by hand.** Behind hyper's server and its pooled client, one proxied request cost two
//! header maps, a trip through the pool's channel to a separate connection task, and wake-ups on
//! both sides; the gateway reached 0.74 of nginx's throughput on the same upstream (BENCHMARKS.md).
//! Here a request is parsed once with `httparse` (hyper's own parser), its head rewritten
//! straight into the bytes the node is sent, and the node's answer parsed and passed on, on the
//! client connection's own task with the node connection it took from this worker's pool: four
//! system calls for a small exchange and no allocation but the two heads.
//!
//! **What it does not carry.** Anything else is handed to the general server (hyper, in
//! `lib.rs`) with the bytes already read, before a byte of it has been answered: HTTP/2 (prior
//! knowledge), HTTP/1.0, upgrades (WebSocket, h2c), chunked or `Expect`ing request bodies,
//! `Connection` headers naming other headers, targets that are not paths. TLS connections go to
//! hyper from the start. Both paths share every edge decision ([`Proxy::authenticate`],
//! [`Proxy::admit`], the balancer, the retry budget), so a request is treated the same either way.
//!
//! **Framing is the security boundary.** The node is never sent the client's framing: the head
//! is rebuilt with one `Content-Length` (conflicting ones are refused, `Transfer-Encoding` goes
//! to hyper's stricter handling), so no request can be smuggled past the edge checks. Answers are
//! framed per RFC 9112 §6.3; a chunked answer passes through as it comes (SSE stays live), its
//! end found by [`ChunkedEnd`].

use crate::proxy::{
    is_idempotent, request_id_from, EdgeError, Exchange, Proxy, BUFFERED_RESPONSE_BYTES,
};
use crate::Connection;
use bytes::{Buf, Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::retry::budget::Budget as _;

/// Headers a request or answer may have (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// A node's answer head larger than this is treated as a broken node.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// An idle client connection is closed after this (nginx's `keepalive_timeout` default).
const IDLE_KEEP_ALIVE: Duration = Duration::from_secs(75);
/// A pooled node connection idle longer than this is not reused (the node may have closed it).
const POOLED_LIFETIME: Duration = Duration::from_secs(50);
const MAX_IDLE_PER_NODE: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Headers that describe one hop (RFC 9110 §7.6.1), never passed on in either direction.
/// `transfer-encoding` is one too, but an answer's is decided by its framing.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Request headers the gateway writes itself, so the client's are dropped.
const WRITTEN_BY_GATEWAY: [&str; 7] = [
    "transfer-encoding",
    "host",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

fn named_in(list: &[&str], name: &str) -> bool {
    list.iter().any(|listed| name.eq_ignore_ascii_case(listed))
}

// ---------------------------------------------------------------------------------------------
// Request heads

/// How a request head is to be handled.
pub enum RequestVerdict<'h, 'b> {
    /// Not all of the head has arrived.
    Partial,
    /// An ordinary request this path carries itself.
    Forward(RequestHead<'h, 'b>),
    /// The general server takes the connection from here (see the module docs).
    HandOff,
    /// Answered with an error, and the connection closed.
    Refuse(HeadRefusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    Malformed(&'static str),
    TooLarge,
}

impl HeadRefusal {
    fn into_error(self) -> EdgeError {
        match self {
            HeadRefusal::Malformed(message) => EdgeError::BadRequest(message),
            HeadRefusal::TooLarge => EdgeError::HeadersTooLarge,
        }
    }
}

/// A complete HTTP/1.1 request head the fast path carries.
pub struct RequestHead<'h, 'b> {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    pub method: &'b str,
    pub target: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    pub content_length: Option<u64>,
    /// False when the client asked to close after this request.
    pub keep_alive: bool,
}

impl RequestHead<'_, '_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    }
}

/// Reads a request head from the start of `buf`.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    max_head: usize,
) -> RequestVerdict<'h, 'b> {
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return RequestVerdict::Partial;
    }
    if buf.starts_with(H2_PREFACE) {
        return RequestVerdict::HandOff;
    }
    let mut request = httparse::Request::new(headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return RequestVerdict::Refuse(HeadRefusal::TooLarge)
        }
        Ok(httparse::Status::Partial) => return RequestVerdict::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return RequestVerdict::Refuse(HeadRefusal::TooLarge)
        }
        Err(_) => {
            return RequestVerdict::Refuse(HeadRefusal::Malformed(
                "the request is not valid HTTP/1.1",
            ))
        }
    };
    if len > max_head {
        return RequestVerdict::Refuse(HeadRefusal::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return RequestVerdict::Refuse(HeadRefusal::Malformed("the request is not valid HTTP/1.1"));
    };
    if version != 1 || !target.starts_with('/') {
        return RequestVerdict::HandOff;
    }
    let headers: &'h [httparse::Header<'b>] = request.headers;
    let mut content_length = None;
    let mut keep_alive = true;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = parse_length(header.value) else {
                return RequestVerdict::Refuse(HeadRefusal::Malformed(
                    "Content-Length is not a number",
                ));
            };
            if content_length.is_some_and(|seen| seen != length) {
                return RequestVerdict::Refuse(HeadRefusal::Malformed(
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return RequestVerdict::HandOff;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|byte| *byte == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !(token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive")) {
                    // It names more hop-by-hop headers (or an upgrade): hyper's path strips them.
                    return RequestVerdict::HandOff;
                }
            }
        }
    }
    RequestVerdict::Forward(RequestHead {
        len,
        method,
        target,
        headers,
        content_length,
        keep_alive,
    })
}

/// A `Content-Length` value: decimal digits only, no sign, no list.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The head a node is sent, but for its `Host` line, which each attempt writes for its own node
/// at `host_at`.
pub struct UpstreamHead {
    bytes: Vec<u8>,
    host_at: usize,
}

impl UpstreamHead {
    /// The client's head minus hop-by-hop headers and `Host`, plus the forwarding headers this
    /// gateway vouches for, with the body's length stated once.
    pub fn new(
        head: &RequestHead<'_, '_>,
        client_ip: IpAddr,
        request_id: &[u8],
        tls: bool,
    ) -> Self {
        let mut bytes = Vec::with_capacity(head.len + 160);
        bytes.extend_from_slice(head.method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(head.target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        let host_at = bytes.len();
        let mut host = None;
        for header in head.headers {
            if header.name.eq_ignore_ascii_case("host") {
                host.get_or_insert(header.value);
            }
            if named_in(&HOP_BY_HOP, header.name) || named_in(&WRITTEN_BY_GATEWAY, header.name) {
                continue;
            }
            push_header(&mut bytes, header.name.as_bytes(), header.value);
        }
        let _ = write!(bytes, "x-forwarded-for: {client_ip}\r\n");
        push_header(
            &mut bytes,
            b"x-forwarded-proto",
            if tls { b"https" } else { b"http" },
        );
        if let Some(host) = host {
            push_header(&mut bytes, b"x-forwarded-host", host);
        }
        push_header(&mut bytes, b"x-request-id", request_id);
        if let Some(length) = head.content_length {
            let _ = write!(bytes, "content-length: {length}\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        UpstreamHead { bytes, host_at }
    }

    /// The whole request for the node at `authority`: head and body, in one buffer so it goes
    /// out in one write.
    pub fn write_for(&self, authority: &str, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.bytes.len() + authority.len() + 8 + body.len());
        out.extend_from_slice(&self.bytes[..self.host_at]);
        push_header(out, b"host", authority.as_bytes());
        out.extend_from_slice(&self.bytes[self.host_at..]);
        out.extend_from_slice(body);
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------------------------
// Answer heads

/// How the body of an answer is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the node closes; the client's connection closes after it too.
    UntilClose,
}

pub enum ResponseVerdict {
    Partial,
    /// A 1xx answer of this many bytes, to be skipped: the final one follows.
    Interim(usize),
    Head(ResponseHead),
    Malformed,
}

/// A node's answer head, rewritten for the client.
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub body: BodyFraming,
    /// The node's connection may carry another request after this answer.
    pub reusable: bool,
    /// The client's connection closes after this answer.
    pub client_close: bool,
    /// The head as the client is sent it.
    pub client_head: Vec<u8>,
}

/// Reads a node's answer head from the start of `buf`. `head_request` says the request was
/// `HEAD` (no body follows whatever the headers say); `client_close`, that the client's
/// connection closes after this answer anyway.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    request_id: &[u8],
    client_close: bool,
) -> ResponseVerdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ResponseVerdict::Partial,
        Err(_) => return ResponseVerdict::Malformed,
    };
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return ResponseVerdict::Malformed;
    };
    if status == 101 || !(100..=999).contains(&status) {
        // Nobody asked this node to switch protocols on this path.
        return ResponseVerdict::Malformed;
    }
    if status < 200 {
        return ResponseVerdict::Interim(len);
    }
    let headers: &[httparse::Header<'_>] = response.headers;
    let mut chunked = None;
    let mut length = None;
    let mut node_close = version == 0;
    let mut named_by_connection: Vec<&[u8]> = Vec::new();
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header
                .value
                .rsplit(|byte| *byte == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match parse_length(header.value) {
                Some(value) if length.is_none_or(|seen| seen == value) => length = Some(value),
                _ => return ResponseVerdict::Malformed,
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|byte| *byte == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    node_close = true;
                } else if !token.is_empty() {
                    named_by_connection.push(token);
                }
            }
        }
    }
    let body = if head_request || status == 204 || status == 304 {
        BodyFraming::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => BodyFraming::UntilClose,
            (None, Some(0)) => BodyFraming::Empty,
            (None, Some(length)) => BodyFraming::Length(length),
            (None, None) => BodyFraming::UntilClose,
        }
    };
    let client_close = client_close || body == BodyFraming::UntilClose;
    let mut head = Vec::with_capacity(len + 64);
    let reason = response
        .reason
        .filter(|reason| !reason.is_empty())
        .or_else(|| StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("");
    let _ = write!(head, "HTTP/1.1 {status} {reason}\r\n");
    for header in headers {
        let name = header.name;
        let dropped = name.eq_ignore_ascii_case("x-request-id")
            || named_in(&HOP_BY_HOP, name)
            || named_by_connection
                .iter()
                .any(|named| name.as_bytes().eq_ignore_ascii_case(named))
            // A length beside a transfer coding is wrong and ignored (RFC 9112 §6.3).
            || (chunked.is_some() && name.eq_ignore_ascii_case("content-length"));
        if !dropped {
            push_header(&mut head, name.as_bytes(), header.value);
        }
    }
    push_header(&mut head, b"x-request-id", request_id);
    if client_close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    ResponseVerdict::Head(ResponseHead {
        len,
        status,
        body,
        reusable: !node_close && body != BodyFraming::UntilClose,
        client_close,
        client_head: head,
    })
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies

/// Finds where a chunked body ends while its bytes pass through unchanged.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy)]
enum ChunkState {
    Size { value: u64, digits: u8 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkProgress {
    /// Everything fed so far belongs to the body; more follows.
    More,
    /// The body ends after this many bytes of the last input.
    Done(usize),
    Malformed,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkedEnd {
    pub fn feed(&mut self, bytes: &[u8]) -> ChunkProgress {
        let mut at = 0;
        while at < bytes.len() {
            if let ChunkState::Data { left } = self.state {
                let take = left.min((bytes.len() - at) as u64);
                at += take as usize;
                self.state = if take == left {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data { left: left - take }
                };
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = match (self.state, byte) {
                (ChunkState::Size { value, digits }, _) if byte.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return ChunkProgress::Malformed;
                    }
                    let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                    ChunkState::Size {
                        value: value * 16 + digit,
                        digits: digits + 1,
                    }
                }
                (ChunkState::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    ChunkState::Extension { value }
                }
                (ChunkState::Size { value, digits }, b'\r') if digits > 0 => {
                    ChunkState::SizeLf { value }
                }
                (ChunkState::Extension { value }, b'\r') => ChunkState::SizeLf { value },
                (ChunkState::Extension { .. }, b'\n') => return ChunkProgress::Malformed,
                (ChunkState::Extension { value }, _) => ChunkState::Extension { value },
                (ChunkState::SizeLf { value: 0 }, b'\n') => ChunkState::TrailerStart,
                (ChunkState::SizeLf { value }, b'\n') => ChunkState::Data { left: value },
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size {
                    value: 0,
                    digits: 0,
                },
                (ChunkState::TrailerStart, b'\r') => ChunkState::FinalLf,
                (ChunkState::TrailerStart | ChunkState::Trailer, b'\n') => {
                    return ChunkProgress::Malformed
                }
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf,
                (ChunkState::TrailerStart | ChunkState::Trailer, _) => ChunkState::Trailer,
                (ChunkState::TrailerLf, b'\n') => ChunkState::TrailerStart,
                (ChunkState::FinalLf, b'\n') => return ChunkProgress::Done(at),
                _ => return ChunkProgress::Malformed,
            };
        }
        ChunkProgress::More
    }
}

// ---------------------------------------------------------------------------------------------
// Node connections

/// One worker's connections to the nodes: at most `per_node` open to each, the idle ones reused
/// most recently used first (a warm connection is likelier still open, and the rest age out).
///
/// The cap is what keeps a burst of new clients from turning into a burst of connects to one
/// node (thousands of SYNs at once overflow its accept queue, and a dropped SYN costs a second):
/// past it, requests wait for a connection to come back, within their response deadline.
pub(crate) struct Pool {
    nodes: Vec<NodeConnections>,
    per_node: usize,
}

struct NodeConnections {
    state: Mutex<NodeState>,
    returned: tokio::sync::Notify,
}

#[derive(Default)]
struct NodeState {
    idle: Vec<(TcpStream, Instant)>,
    /// Idle, busy and being connected.
    open: usize,
}

/// What [`Pool::acquire`] got: a kept connection, or the right to open one.
enum Acquired<'p> {
    Reused(NodeStream<'p>),
    MayConnect(ConnectSlot<'p>),
}

/// A counted place for a connection being opened; given back if the connect fails.
struct ConnectSlot<'p> {
    pool: &'p Pool,
    index: usize,
}

impl<'p> ConnectSlot<'p> {
    fn fill(self, stream: TcpStream) -> NodeStream<'p> {
        let slot = std::mem::ManuallyDrop::new(self);
        NodeStream {
            stream: Some(stream),
            pool: slot.pool,
            index: slot.index,
        }
    }
}

impl Drop for ConnectSlot<'_> {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

/// A connection to a node, counted against the pool's cap until it is dropped (closed) or
/// given back ([`NodeStream::keep`]).
pub(crate) struct NodeStream<'p> {
    stream: Option<TcpStream>,
    pool: &'p Pool,
    index: usize,
}

impl NodeStream<'_> {
    fn io(&mut self) -> &mut TcpStream {
        // Only `keep` takes the stream, and it consumes the guard.
        self.stream
            .as_mut()
            .expect("a node stream in use has its connection")
    }

    /// Back to the pool for the next request.
    fn keep(mut self) {
        if let Some(stream) = self.stream.take() {
            self.pool.give(self.index, stream);
        }
    }
}

impl Drop for NodeStream<'_> {
    fn drop(&mut self) {
        if self.stream.take().is_some() {
            self.pool.release(self.index);
        }
    }
}

impl Pool {
    pub(crate) fn new(nodes: usize, per_node: usize) -> Pool {
        Pool {
            nodes: (0..nodes)
                .map(|_| NodeConnections {
                    state: Mutex::new(NodeState::default()),
                    returned: tokio::sync::Notify::new(),
                })
                .collect(),
            per_node: per_node.max(1),
        }
    }

    pub(crate) fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn per_node(&self) -> usize {
        self.per_node
    }

    fn state(&self, index: usize) -> Option<std::sync::MutexGuard<'_, NodeState>> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        let node = self.nodes.get(index)?;
        Some(
            node.state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// An idle connection to node `index`, or the right to open one, waiting while the node is
    /// at the cap. With `check`, an idle connection the node has closed meanwhile is skipped (a
    /// cheap non-blocking read): for requests that must not be sent twice.
    async fn acquire(&self, index: usize, check: bool) -> Option<Acquired<'_>> {
        let node = self.nodes.get(index)?;
        loop {
            let returned = node.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a return between the look and the wait is not missed.
            returned.as_mut().enable();
            {
                let mut state = self.state(index)?;
                while let Some((stream, since)) = state.idle.pop() {
                    let usable = since.elapsed() <= POOLED_LIFETIME
                        && (!check || {
                            let mut probe = [0u8; 1];
                            matches!(
                                stream.try_read(&mut probe),
                                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
                            )
                        });
                    if usable {
                        return Some(Acquired::Reused(NodeStream {
                            stream: Some(stream),
                            pool: self,
                            index,
                        }));
                    }
                    // Closed, reset, aged or sent bytes nobody asked for: not safe to reuse.
                    state.open -= 1;
                }
                if state.open < self.per_node {
                    state.open += 1;
                    return Some(Acquired::MayConnect(ConnectSlot { pool: self, index }));
                }
            }
            returned.await;
        }
    }

    fn give(&self, index: usize, stream: TcpStream) {
        let Some(mut state) = self.state(index) else {
            return;
        };
        if state.idle.len() < MAX_IDLE_PER_NODE {
            state.idle.push((stream, Instant::now()));
        } else {
            state.open -= 1;
        }
        drop(state);
        self.nodes[index].returned.notify_one();
    }

    fn release(&self, index: usize) {
        if let Some(mut state) = self.state(index) {
            state.open = state.open.saturating_sub(1);
        }
        if let Some(node) = self.nodes.get(index) {
            node.returned.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The connection loop

/// What one request needs once its head has been read, owned so the buffer can move on.
struct Prepared {
    head_len: usize,
    method: Method,
    target: String,
    content_length: Option<u64>,
    keep_alive: bool,
    request_id: HeaderValue,
    client_ip: IpAddr,
    claims: Result<Option<marquee_auth::AccessClaims>, EdgeError>,
    upstream_head: UpstreamHead,
    /// Idempotent, or carrying an `Idempotency-Key`: safe to send again.
    repeatable: bool,
}

impl Prepared {
    fn new(
        head: &RequestHead<'_, '_>,
        proxy: &Proxy,
        connection: Connection,
    ) -> Result<Prepared, HeadRefusal> {
        let method = Method::from_bytes(head.method.as_bytes())
            .map_err(|_| HeadRefusal::Malformed("the method is not valid"))?;
        let client_ip = proxy.trusted.client_ip_from(
            connection.peer.ip(),
            head.headers
                .iter()
                .filter(|header| header.name.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|header| header.value),
        );
        let request_id = request_id_from(head.header("x-request-id"));
        let (path, query) = split_target(head.target);
        let claims = proxy.authenticate(&method, path, head.header("authorization"), query);
        let repeatable = is_idempotent(&method) || head.header("idempotency-key").is_some();
        Ok(Prepared {
            head_len: head.len,
            upstream_head: UpstreamHead::new(
                head,
                client_ip,
                request_id.as_bytes(),
                connection.tls,
            ),
            method,
            target: head.target.to_owned(),
            content_length: head.content_length,
            keep_alive: head.keep_alive,
            request_id,
            client_ip,
            claims,
            repeatable,
        })
    }

    fn path(&self) -> &str {
        split_target(&self.target).0
    }
}

fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Serves a clear-text connection: fast path while its requests allow, then hyper.
pub(crate) async fn serve(
    mut client: TcpStream,
    connection: Connection,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    first_request_deadline: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut inbound = BytesMut::with_capacity(8 * 1024);
    let mut from_node = BytesMut::new();
    let mut wire = Vec::new();
    // Until when the head being read must be complete; `None` while idle between requests.
    let mut head_deadline = Some(tokio::time::Instant::now() + first_request_deadline);
    loop {
        let next = loop {
            let verdict = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match parse_request(&inbound, &mut headers, proxy.max_header_bytes) {
                    RequestVerdict::Partial => None,
                    RequestVerdict::Forward(head) => {
                        Some(Prepared::new(&head, &proxy, connection).map(Some))
                    }
                    RequestVerdict::HandOff => Some(Ok(None)),
                    RequestVerdict::Refuse(refusal) => Some(Err(refusal)),
                }
            };
            if let Some(verdict) = verdict {
                break verdict;
            }
            let deadline =
                head_deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE_KEEP_ALIVE);
            inbound.reserve(READ_CHUNK);
            let idle = inbound.is_empty();
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, client.read_buf(&mut inbound)) => read,
                _ = signalled(&mut shutdown), if idle => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {
                    head_deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + proxy.header_read_timeout
                    });
                }
                Err(_) => {
                    if head_deadline.is_some() {
                        metrics::counter!("gateway_connections_timed_out_total").increment(1);
                    }
                    return;
                }
            }
        };
        let request = match next {
            Ok(Some(request)) => request,
            Ok(None) => {
                let replay = inbound.split().freeze();
                crate::serve(
                    Replay::new(replay, client),
                    connection,
                    proxy,
                    &builder,
                    first_request_deadline,
                    shutdown,
                )
                .await;
                return;
            }
            Err(refusal) => {
                let request_id = request_id_from(None);
                let parts = refusal.into_error().into_parts(&request_id);
                let _ = respond(&mut client, parts, &request_id, false).await;
                return;
            }
        };
        inbound.advance(request.head_len);
        head_deadline = None;
        let io = Buffers {
            inbound: &mut inbound,
            from_node: &mut from_node,
            wire: &mut wire,
        };
        if !exchange(&mut client, io, request, &proxy).await || *shutdown.borrow() {
            return;
        }
    }
}

/// Resolves once shutdown is asked for; never, if the gateway is gone without asking.
async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A client connection's buffers, reused from request to request.
struct Buffers<'a> {
    /// Bytes from the client not yet consumed (the next request may be in them).
    inbound: &'a mut BytesMut,
    from_node: &'a mut BytesMut,
    /// The request as the node is sent it.
    wire: &'a mut Vec<u8>,
}

/// Why an attempt on one node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection: the request certainly never reached the node.
    Connect,
    /// The connection broke, or the answer was not HTTP.
    Broken,
    Timeout,
}

/// Carries one request to a node and its answer back; whether the client's connection stays.
async fn exchange(
    client: &mut TcpStream,
    io: Buffers<'_>,
    mut request: Prepared,
    proxy: &Proxy,
) -> bool {
    let started = Instant::now();
    let body_len = request.content_length.unwrap_or(0);
    if body_len > proxy.max_body_bytes as u64 {
        let error = EdgeError::PayloadTooLarge(proxy.max_body_bytes);
        return refuse(client, proxy, &request, started, error).await;
    }
    let Ok(body) = read_body(
        client,
        io.inbound,
        body_len as usize,
        proxy.response_timeout,
    )
    .await
    else {
        return false;
    };
    let claims = match std::mem::replace(&mut request.claims, Ok(None)) {
        Ok(claims) => claims,
        Err(error) => return refuse(client, proxy, &request, started, error).await,
    };
    let path = request.path();
    let query = split_target(&request.target).1;
    let user = claims.as_ref().map(|claims| claims.sub.as_str());
    let admission = match proxy
        .admit(&request.method, path, request.client_ip, user)
        .await
    {
        Ok(admission) => admission,
        Err(error) => return refuse(client, proxy, &request, started, error).await,
    };
    let group = &proxy.groups[admission.group];
    let affinity = crate::balancer::event_affinity(path, query);
    proxy.budget.deposit();
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let slot = match group.pick(affinity, &tried) {
            (crate::balancer::Pick::Upstream(slot), Some(index)) => {
                tried.push(index);
                slot
            }
            (crate::balancer::Pick::AllBusy, _) => {
                return refuse(client, proxy, &request, started, EdgeError::Overloaded).await
            }
            _ => return refuse(client, proxy, &request, started, EdgeError::BadGateway).await,
        };
        let upstream = Arc::clone(slot.upstream());
        match send(proxy, &upstream, &request, &body, io.from_node, io.wire).await {
            Ok((node, head)) => {
                let failed = matches!(head.status, 502..=504);
                if failed {
                    upstream.record_failure(&proxy.ejection);
                    if request.repeatable && proxy.may_retry(tried.len()) {
                        metrics::counter!("gateway_retries_total").increment(1);
                        continue;
                    }
                } else {
                    upstream.record_success();
                }
                let status = head.status;
                let client_close = head.client_close;
                let relayed = relay(client, node, head, io.from_node, slot).await;
                finish(proxy, &request, started, status, Some(&upstream.authority));
                return relayed && !client_close;
            }
            Err(failure) => {
                upstream.record_failure(&proxy.ejection);
                tracing::debug!(upstream = %upstream.authority, ?failure, "upstream request failed");
                // A request that never reached the node may go elsewhere whatever it is.
                let retry = request.repeatable || failure == Failure::Connect;
                if retry && proxy.may_retry(tried.len()) {
                    metrics::counter!("gateway_retries_total").increment(1);
                    continue;
                }
                let error = match failure {
                    Failure::Timeout => EdgeError::GatewayTimeout,
                    Failure::Connect | Failure::Broken => EdgeError::BadGateway,
                };
                return refuse(client, proxy, &request, started, error).await;
            }
        }
    }
}

/// Answers the request with the gateway's own error; whether the connection stays.
async fn refuse(
    client: &mut TcpStream,
    proxy: &Proxy,
    request: &Prepared,
    started: Instant,
    error: EdgeError,
) -> bool {
    let parts = error.into_parts(&request.request_id);
    finish(proxy, request, started, parts.0.as_u16(), None);
    respond(client, parts, &request.request_id, request.keep_alive).await
}

fn finish(proxy: &Proxy, request: &Prepared, started: Instant, status: u16, node: Option<&str>) {
    proxy.record(Exchange {
        started,
        client_ip: request.client_ip,
        method: request.method.as_str(),
        path: request.path(),
        status,
        upstream: node,
        request_id: &request.request_id,
    });
}

/// Writes the gateway's own answer; whether the connection may carry another request.
async fn respond(
    client: &mut TcpStream,
    (status, headers, body): (StatusCode, hyper::HeaderMap, Bytes),
    request_id: &HeaderValue,
    keep_alive: bool,
) -> bool {
    let close = !keep_alive || headers.contains_key(hyper::header::CONNECTION);
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &headers {
        push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    push_header(&mut out, b"x-request-id", request_id.as_bytes());
    let _ = write!(out, "content-length: {}\r\n", body.len());
    if close && !headers.contains_key(hyper::header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    client.write_all(&out).await.is_ok() && !close
}

/// The request body of `len` bytes: what is already buffered, then the rest from the client.
async fn read_body(
    client: &mut TcpStream,
    inbound: &mut BytesMut,
    len: usize,
    within: Duration,
) -> std::io::Result<Bytes> {
    if inbound.len() < len {
        inbound.reserve(len - inbound.len());
        let filled = async {
            while inbound.len() < len {
                if client.read_buf(inbound).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::time::timeout(within, filled)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    Ok(inbound.split_to(len).freeze())
}

/// One attempt on one node: the request written and the answer's head read. A pooled
/// connection the node had already closed is replaced by another, when the request is safe to
/// send again or nothing of it can have been taken in.
async fn send<'p>(
    proxy: &'p Proxy,
    upstream: &crate::balancer::Upstream,
    request: &Prepared,
    body: &[u8],
    from_node: &mut BytesMut,
    wire: &mut Vec<u8>,
) -> Result<(NodeStream<'p>, ResponseHead), Failure> {
    request
        .upstream_head
        .write_for(&upstream.authority, body, wire);
    let deadline = tokio::time::Instant::now() + proxy.response_timeout;
    let head_request = request.method == Method::HEAD;
    let mut delivered = false;
    loop {
        let acquired = proxy.pool.acquire(upstream.index, !request.repeatable);
        let acquired = match tokio::time::timeout_at(deadline, acquired).await {
            Ok(Some(acquired)) => acquired,
            Ok(None) => return Err(Failure::Connect),
            Err(_) => return Err(Failure::Timeout),
        };
        let (mut node, reused) = match acquired {
            Acquired::Reused(node) => (node, true),
            Acquired::MayConnect(slot) => {
                let connected = tokio::time::timeout(
                    proxy.connect_timeout,
                    TcpStream::connect(&*upstream.authority),
                )
                .await;
                match connected {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        (slot.fill(stream), false)
                    }
                    // Once an earlier try may have reached the node, a refusal now no longer
                    // proves the request was never taken in.
                    _ if delivered => return Err(Failure::Broken),
                    _ => return Err(Failure::Connect),
                }
            }
        };
        from_node.clear();
        let exchanged = tokio::time::timeout_at(
            deadline,
            read_head(
                node.io(),
                wire,
                from_node,
                head_request,
                request.request_id.as_bytes(),
                !request.keep_alive,
            ),
        )
        .await;
        match exchanged {
            Err(_) => return Err(Failure::Timeout),
            Ok(Ok(head)) => return Ok((node, head)),
            // Nothing came back on a kept connection: the node had closed it while it idled.
            Ok(Err(HeadFailure::NothingBack)) if reused && request.repeatable => {
                delivered = true;
                continue;
            }
            Ok(Err(_)) => return Err(Failure::Broken),
        }
    }
}

enum HeadFailure {
    /// The connection ended before a byte of an answer.
    NothingBack,
    Broken,
}

async fn read_head(
    node: &mut TcpStream,
    wire: &[u8],
    from_node: &mut BytesMut,
    head_request: bool,
    request_id: &[u8],
    client_close: bool,
) -> Result<ResponseHead, HeadFailure> {
    node.write_all(wire)
        .await
        .map_err(|_| HeadFailure::NothingBack)?;
    let mut answered = false;
    loop {
        if !from_node.is_empty() {
            match parse_response(from_node, head_request, request_id, client_close) {
                ResponseVerdict::Head(head) => return Ok(head),
                ResponseVerdict::Interim(len) => {
                    from_node.advance(len);
                    continue;
                }
                ResponseVerdict::Malformed => return Err(HeadFailure::Broken),
                ResponseVerdict::Partial if from_node.len() > MAX_RESPONSE_HEAD => {
                    return Err(HeadFailure::Broken)
                }
                ResponseVerdict::Partial => {}
            }
        }
        from_node.reserve(READ_CHUNK);
        match node.read_buf(from_node).await {
            Ok(0) | Err(_) if !answered => return Err(HeadFailure::NothingBack),
            Ok(0) | Err(_) => return Err(HeadFailure::Broken),
            Ok(_) => answered = true,
        }
    }
}

/// Passes the node's answer to the client; whether both connections ended cleanly. The node's
/// connection goes back to the pool once its answer has been read to the end.
async fn relay(
    client: &mut TcpStream,
    mut node: NodeStream<'_>,
    head: ResponseHead,
    from_node: &mut BytesMut,
    slot: crate::balancer::InFlight,
) -> bool {
    from_node.advance(head.len);
    let mut out = head.client_head;
    match head.body {
        BodyFraming::Empty => {
            let clean = from_node.is_empty();
            drop(slot);
            if head.reusable && clean {
                node.keep();
            }
            client.write_all(&out).await.is_ok()
        }
        BodyFraming::Length(length) if length <= BUFFERED_RESPONSE_BYTES as u64 => {
            // Small: read whole, so the client gets head and body in one write and a slow
            // client never holds the node's connection.
            let length = length as usize;
            while from_node.len() < length {
                from_node.reserve(length - from_node.len());
                match node.io().read_buf(from_node).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            out.extend_from_slice(&from_node[..length]);
            from_node.advance(length);
            let clean = from_node.is_empty();
            drop(slot);
            if head.reusable && clean {
                node.keep();
            }
            client.write_all(&out).await.is_ok()
        }
        BodyFraming::Length(length) => {
            let mut left = length;
            let first = from_node
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(&from_node[..first]);
            from_node.advance(first);
            left -= first as u64;
            if client.write_all(&out).await.is_err() {
                return false;
            }
            let mut buffer = vec![0u8; 64 * 1024];
            while left > 0 {
                let want = buffer
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let read = match node.io().read(&mut buffer[..want]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(read) => read,
                };
                left -= read as u64;
                if client.write_all(&buffer[..read]).await.is_err() {
                    return false;
                }
            }
            drop(slot);
            if head.reusable && from_node.is_empty() {
                node.keep();
            }
            true
        }
        BodyFraming::Chunked => {
            let mut end = ChunkedEnd::default();
            let mut pending = std::mem::take(from_node).freeze();
            loop {
                match end.feed(&pending) {
                    ChunkProgress::Malformed => {
                        let _ = client.write_all(&out).await;
                        return false;
                    }
                    ChunkProgress::Done(used) => {
                        out.extend_from_slice(&pending[..used]);
                        let clean = used == pending.len();
                        drop(slot);
                        if head.reusable && clean {
                            node.keep();
                        }
                        return client.write_all(&out).await.is_ok();
                    }
                    ChunkProgress::More => {
                        // Passed on as it comes: an event stream stays live.
                        out.extend_from_slice(&pending);
                        if client.write_all(&out).await.is_err() {
                            return false;
                        }
                        out.clear();
                    }
                }
                let mut next = BytesMut::with_capacity(READ_CHUNK);
                match node.io().read_buf(&mut next).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => pending = next.freeze(),
                }
            }
        }
        BodyFraming::UntilClose => {
            out.extend_from_slice(from_node);
            from_node.clear();
            if client.write_all(&out).await.is_err() {
                return false;
            }
            drop(slot);
            let _ = tokio::io::copy(node.io(), client).await;
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handing a connection to hyper

/// A connection whose first bytes were already read: they are read again first.
pub(crate) struct Replay<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Replay<IO> {
    pub(crate) fn new(prefix: Bytes, io: IO) -> Replay<IO> {
        Replay { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replay<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replay<IO> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 64 * 1024;

    /// The verdict on `bytes` as a short label, with the head's framing when forwarded.
    fn verdict(bytes: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_request(bytes, &mut headers, LIMIT) {
            RequestVerdict::Partial => "partial".into(),
            RequestVerdict::HandOff => "hand-off".into(),
            RequestVerdict::Refuse(HeadRefusal::TooLarge) => "too large".into(),
            RequestVerdict::Refuse(HeadRefusal::Malformed(_)) => "malformed".into(),
            RequestVerdict::Forward(head) => format!(
                "forward {} {} len={:?} keep={} head={}",
                head.method, head.target, head.content_length, head.keep_alive, head.len
            ),
        }
    }

    #[test]
    fn ordinary_requests_take_the_fast_path_and_the_rest_go_to_hyper() {
        let get = b"GET /healthz?x=1 HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(
            verdict(get),
            format!(
                "forward GET /healthz?x=1 len=None keep=true head={}",
                get.len()
            )
        );
        assert_eq!(verdict(&get[..20]), "partial");
        let post = b"POST /x HTTP/1.1\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        assert_eq!(
            verdict(post),
            "forward POST /x len=Some(5) keep=false head=58"
        );
        // The same length twice is one length.
        let twice = b"POST /x HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n";
        assert!(verdict(twice).starts_with("forward POST /x len=Some(5)"));

        for hand_off in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: keep-alive, x-private\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET http://elsewhere/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                verdict(hand_off),
                "hand-off",
                "{:?}",
                String::from_utf8_lossy(hand_off)
            );
        }
        // A prefix of the HTTP/2 preface waits for the rest rather than failing as HTTP/1.
        assert_eq!(verdict(b"PRI * HT"), "partial");
    }

    #[test]
    fn ambiguous_framing_and_oversized_heads_are_refused() {
        for malformed in [
            &b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"\x16\x03\x01 not http\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert_eq!(
                verdict(malformed),
                "malformed",
                "{:?}",
                String::from_utf8_lossy(malformed)
            );
        }
        let mut huge = b"GET / HTTP/1.1\r\nx-pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', LIMIT));
        assert_eq!(verdict(&huge), "too large");
        let many: String = (0..=MAX_HEADERS).map(|n| format!("x-{n}: 1\r\n")).collect();
        assert_eq!(
            verdict(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            "too large"
        );
    }

    fn upstream_request(client: &[u8], authority: &str, body: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let RequestVerdict::Forward(head) = parse_request(client, &mut headers, LIMIT) else {
            panic!("not forwarded");
        };
        let upstream =
            UpstreamHead::new(&head, "203.0.113.9".parse().expect("ip"), b"rid-1", false);
        let mut wire = Vec::new();
        upstream.write_for(authority, body, &mut wire);
        String::from_utf8(wire).expect("utf-8")
    }

    #[test]
    fn the_node_gets_the_gateways_forwarding_headers_and_never_the_clients() {
        let client = b"PUT /api/v1/x?y=1 HTTP/1.1\r\nHost: marquee.example\r\n\
            X-Forwarded-For: 1.2.3.4\r\nx-forwarded-proto: https\r\nX-Forwarded-Host: evil\r\n\
            x-request-id: client-chosen\r\nkeep-alive: timeout=5\r\nconnection: keep-alive\r\n\
            proxy-authorization: secret\r\nte: trailers\r\nauthorization: Bearer t\r\n\
            content-length: 2\r\n\r\n";
        let wire = upstream_request(client, "10.0.0.1:8080", b"{}");
        assert_eq!(
            wire,
            "PUT /api/v1/x?y=1 HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nauthorization: Bearer t\r\n\
             x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: marquee.example\r\nx-request-id: rid-1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    fn answer(node: &[u8], head_request: bool, client_close: bool) -> ResponseHead {
        match parse_response(node, head_request, b"rid-1", client_close) {
            ResponseVerdict::Head(head) => head,
            ResponseVerdict::Partial => panic!("partial"),
            ResponseVerdict::Interim(_) => panic!("interim"),
            ResponseVerdict::Malformed => panic!("malformed"),
        }
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says_and_stripped_of_hop_headers() {
        let plain = answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: node\r\nx-marquee-node: n1\r\n\r\nok",
            false,
            false,
        );
        assert_eq!(plain.body, BodyFraming::Length(2));
        assert!(plain.reusable && !plain.client_close);
        assert_eq!(
            String::from_utf8_lossy(&plain.client_head),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-marquee-node: n1\r\nx-request-id: rid-1\r\n\r\n"
        );
        // A length beside chunked is dropped; the named hop header too.
        let chunked = answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\
              connection: x-hop\r\nx-hop: 1\r\n\r\n",
            false,
            false,
        );
        assert_eq!(chunked.body, BodyFraming::Chunked);
        let text = String::from_utf8_lossy(&chunked.client_head).to_string();
        assert!(text.contains("transfer-encoding: chunked"), "{text}");
        assert!(
            !text.contains("content-length") && !text.contains("x-hop"),
            "{text}"
        );
        // No framing: the body runs to the close, so both connections close after it.
        let until_close = answer(b"HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert_eq!(until_close.body, BodyFraming::UntilClose);
        assert!(!until_close.reusable && until_close.client_close);
        assert!(String::from_utf8_lossy(&until_close.client_head).contains("connection: close"));
        assert_eq!(
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true, false).body,
            BodyFraming::Empty
        );
        assert_eq!(
            answer(b"HTTP/1.1 204 No Content\r\n\r\n", false, false).body,
            BodyFraming::Empty
        );
        assert!(
            !answer(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                false,
                false
            )
            .reusable
        );
        assert!(
            !answer(
                b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
                false,
                false
            )
            .reusable
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", false, b"r", false),
            ResponseVerdict::Interim(25)
        ));
        for malformed in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(matches!(
                parse_response(malformed, false, b"r", false),
                ResponseVerdict::Malformed
            ));
        }
    }

    fn chunked(body_chunks: &[Vec<u8>], trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in body_chunks.iter().filter(|chunk| !chunk.is_empty()) {
            out.extend(format!("{:x};ext=1\r\n", chunk.len()).into_bytes());
            out.extend(chunk);
            out.extend(b"\r\n");
        }
        out.extend(b"0\r\n");
        for (name, value) in trailers {
            out.extend(format!("{name}: {value}\r\n").into_bytes());
        }
        out.extend(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn a_chunked_body_ends_exactly_where_it_ends_however_it_arrives(
            body_chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            trailers in prop::collection::vec(("[a-z]{1,8}", "[a-z0-9 ]{0,12}"), 0..3),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            after in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let message = chunked(&body_chunks, &trailers);
            let mut stream = message.clone();
            stream.extend(&after);
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len())).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut end = ChunkedEnd::default();
            let mut start = 0;
            let mut found = None;
            for cut in cuts {
                match end.feed(&stream[start..cut]) {
                    ChunkProgress::More => start = cut,
                    ChunkProgress::Done(used) => { found = Some(start + used); break; }
                    ChunkProgress::Malformed => prop_assert!(false, "valid chunked body refused"),
                }
            }
            prop_assert_eq!(found, Some(message.len()));
        }

        #[test]
        fn no_bytes_make_the_chunk_reader_panic_or_overrun(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let ChunkProgress::Done(used) = ChunkedEnd::default().feed(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// Whatever the client sends, the node sees one framing: at most one Content-Length,
        /// equal to what the gateway read, and no hop-by-hop or forged forwarding header.
        #[test]
        fn the_node_never_sees_the_clients_framing_or_forwarding(
            headers in prop::collection::vec((
                prop::sample::select(vec![
                    "content-length", "Content-Length", "transfer-encoding", "connection",
                    "x-forwarded-for", "X-Forwarded-Host", "host", "x-request-id", "te",
                    "keep-alive", "accept", "x-custom",
                ]),
                "[ -~]{0,16}",
            ), 0..10),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut client = b"POST /p HTTP/1.1\r\n".to_vec();
            for (name, value) in &headers {
                client.extend(format!("{name}: {value}\r\n").into_bytes());
            }
            client.extend(b"\r\n");
            let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let RequestVerdict::Forward(head) = parse_request(&client, &mut parsed, LIMIT) else {
                return Ok(());
            };
            let length = head.content_length;
            let upstream = UpstreamHead::new(&head, "192.0.2.1".parse().expect("ip"), b"rid", false);
            let mut wire = Vec::new();
            upstream.write_for("node:1", &body, &mut wire);
            let mut seen = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
            let mut request = httparse::Request::new(&mut seen);
            let Ok(httparse::Status::Complete(_)) = request.parse(&wire) else {
                return Err(TestCaseError::fail("the node's head does not parse"));
            };
            let named = |name: &str| request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
            prop_assert_eq!(named("content-length"), usize::from(length.is_some()));
            for hop in ["transfer-encoding", "connection", "te", "keep-alive"] {
                prop_assert_eq!(named(hop), 0, "{} forwarded", hop);
            }
            prop_assert_eq!(named("x-forwarded-for"), 1);
            prop_assert_eq!(named("x-request-id"), 1);
            prop_assert_eq!(named("host"), 1);
            let xff = request.headers.iter().find(|h| h.name == "x-forwarded-for").map(|h| h.value);
            prop_assert_eq!(xff, Some(&b"192.0.2.1"[..]));
        }
    }
}
