//! The lean SSE path: a connection whose request is an SSE stream is served here rather than
//! by hyper (see [`crate::lean_listener`], which picks the connections).
//!
//! Why: an idle SSE connection is the common case (a fan watching a seat map), and under hyper
//! each one keeps hyper's HTTP/1 buffers — a read buffer that grows to 16 KiB and an 8 KiB header
//! buffer — for its whole life, which put a node at ~29 KiB of memory per idle connection
//! (`marquee-bench push`). Here an SSE request is recognised by peeking at its request line,
//! its head is read into a buffer that is freed once parsed, and events are written straight
//! to the socket, so an idle connection costs its task and its subscription only. Everything
//! else — authentication, cursors, limits, replay — is the same [`SseSession`] the axum route
//! uses (which still serves SSE over HTTP/2 and behind [`router`](crate::router) in tests).
//!
//! The response is `Connection: close` and not chunked: the stream ends when the connection
//! does, which is what EventSource expects.

use crate::routes::push::{SseFrame, SseSession};
use crate::{ApiError, AppState};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use futures::FutureExt;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted on this path (as hyper's default).
const MAX_HEAD: usize = 8 * 1024;
/// Most bytes of already-waiting events put into one write.
const COALESCE_BYTES: usize = 64 * 1024;
/// A write the client does not take within this ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The parsed head of an SSE request.
struct Head {
    query: Option<String>,
    headers: HeaderMap,
}

/// Reads the request head; a client that sends no complete head by `deadline` (the node's
/// header read timeout after the connection's start) is dropped.
async fn read_head(
    stream: &mut TcpStream,
    deadline: tokio::time::Instant,
) -> Result<Head, &'static str> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
            if n == 0 {
                return Err("closed");
            }
            buffer.extend_from_slice(&chunk[..n]);
            if buffer.windows(4).any(|window| window == b"\r\n\r\n") {
                return Ok(());
            }
            if buffer.len() > MAX_HEAD {
                return Err("head too large");
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| "head timed out")??;
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(&buffer) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed request"),
    }
    let path = request.path.unwrap_or("/");
    let query = path.split_once('?').map(|(_, query)| query.to_string());
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        // `x-forwarded-for` is kept (every occurrence, in order) because behind a trusted
        // proxy it names the client that the per-IP connection cap must count, not the proxy.
        if matches!(
            name.as_str(),
            "authorization" | "last-event-id" | "x-request-id" | "x-forwarded-for"
        ) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(header.value),
            ) {
                headers.append(name, value);
            }
        }
    }
    Ok(Head { query, headers })
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

pub(crate) async fn serve_sse(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: AppState,
    head_deadline: tokio::time::Instant,
) {
    // Each event is one complete write that should leave now, not wait for an ACK (Nagle).
    let _ = stream.set_nodelay(true);
    let head = match read_head(&mut stream, head_deadline).await {
        Ok(head) => head,
        Err(reason) => {
            tracing::debug!(%peer, reason, "push: dropped an SSE request");
            let _ = write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
            return;
        }
    };
    let request_id = head
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 200)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let node = &state.settings.node_id;
    let peer = state
        .settings
        .trusted_proxies
        .client_addr(peer, &head.headers);
    let opened = crate::request_context::scope(
        request_id.clone(),
        SseSession::open(&state, peer, &head.headers, head.query.as_deref()),
    )
    .await;
    drop(head);
    let mut session = match opened {
        Ok(session) => session,
        Err(error) => {
            let bytes = crate::request_context::scope(
                request_id.clone(),
                error_response(error, node, &request_id),
            )
            .await;
            let _ = write_all(&mut stream, &bytes).await;
            return;
        }
    };
    metrics::counter!("http_requests_total", "route" => "/api/v1/push/sse", "status" => "200")
        .increment(1);
    let response_head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         x-accel-buffering: no\r\nx-request-id: {request_id}\r\nx-marquee-node: {node}\r\n\
         connection: close\r\n\r\n"
    );
    if !write_all(&mut stream, response_head.as_bytes()).await {
        return;
    }
    drop(response_head);
    let mut heartbeat = tokio::time::interval(state.push.settings.heartbeat);
    heartbeat.tick().await;
    let mut shutdown = session.shutdown_signal();
    let stopping = crate::push::stopping(&mut shutdown);
    tokio::pin!(stopping);
    let (mut reader, mut writer) = stream.split();
    let mut scratch = [0u8; 64];
    loop {
        let frame = tokio::select! {
            frame = session.next_message() => Some(frame),
            () = &mut stopping => None,
            _ = heartbeat.tick() => {
                if !send(&mut writer, b": heartbeat\n\n").await {
                    return;
                }
                continue;
            }
            read = reader.read(&mut scratch) => {
                // The client hung up (or sent something it should not on an event stream).
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                continue;
            }
        };
        let frame = frame.unwrap_or_else(SseFrame::shutdown);
        let mut bytes = Vec::new();
        let last = encode(frame, &mut bytes) || encode_waiting(&mut session, &mut bytes);
        let written = send(&mut writer, &bytes).await;
        if !written || last {
            let _ = writer.shutdown().await;
            return;
        }
    }
}

/// Appends whatever else is already waiting, so that when a hot channel outpaces the socket one
/// syscall carries several events instead of one each; true when the stream ends with them.
///
/// A plain function on purpose: the futures it polls live on its stack frame, not in every
/// connection's task (which would add kilobytes to each idle connection).
fn encode_waiting(session: &mut SseSession, bytes: &mut Vec<u8>) -> bool {
    while bytes.len() < COALESCE_BYTES {
        match session.next_message().now_or_never() {
            Some(frame) => {
                if encode(frame, bytes) {
                    return true;
                }
            }
            None => return false,
        }
    }
    false
}

/// Appends a frame's wire form; true when it is the last one of the stream.
fn encode(frame: SseFrame, bytes: &mut Vec<u8>) -> bool {
    match frame {
        SseFrame::Message { id, message } => {
            bytes.reserve(message.json.len() + id.len() + message.kind.len() + 24);
            bytes.extend_from_slice(b"id: ");
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(b"\nevent: ");
            bytes.extend_from_slice(message.kind.as_bytes());
            bytes.extend_from_slice(b"\ndata: ");
            bytes.extend_from_slice(&message.json);
            bytes.extend_from_slice(b"\n\n");
            false
        }
        SseFrame::Final { kind, json } => {
            bytes.extend_from_slice(format!("event: {kind}\ndata: {json}\n\n").as_bytes());
            true
        }
    }
}

/// Writes `bytes`, at once when the socket takes them (the common case, with no timer), else
/// waiting at most [`WRITE_TIMEOUT`] for a client that is slow to read.
async fn send(writer: &mut tokio::net::tcp::WriteHalf<'_>, bytes: &[u8]) -> bool {
    let sent = match writer.try_write(bytes) {
        Ok(sent) => sent,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if sent == bytes.len() {
        return true;
    }
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes[sent..])).await,
        Ok(Ok(()))
    )
}

/// The contract's error body as a complete HTTP/1.1 response.
async fn error_response(error: ApiError, node: &str, request_id: &str) -> Vec<u8> {
    let response = error.into_response();
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in response.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    head.push_str(&format!(
        "content-length: {}\r\nx-request-id: {request_id}\r\nx-marquee-node: {node}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}
