//! Push transports: Server-Sent Events, WebSocket and long polling over one follower that merges
//! a connection's channels, replays what a client missed, and never sends an offset twice.
//!
//! Cursors: one channel's position is `channel@offset`; a connection following several channels
//! has the comma-joined positions of all of them as its SSE `id`, so `Last-Event-ID` resumes
//! every channel at once.

use crate::extract::CurrentUser;
use crate::push::{authorize_channel, push_unavailable, ConnectionSlot};
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use marquee_push::{Channel, PushMessage, Start, Subscription};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamMap;

/// Longest query string or `Last-Event-ID` accepted.
const MAX_CURSOR_LEN: usize = 8 * 1024;
/// Messages one long poll returns at most.
const MAX_POLL_MESSAGES: usize = 500;

/// What a follower yields.
enum Next {
    Message(Arc<PushMessage>),
    /// The client fell a whole buffer behind: it is disconnected rather than let memory grow.
    SlowConsumer,
}

/// The channels of one connection, merged.
#[derive(Default)]
struct Follower {
    cursors: HashMap<Channel, u64>,
    pending: VecDeque<Arc<PushMessage>>,
    streams: StreamMap<Channel, BroadcastStream<Arc<PushMessage>>>,
}

impl Follower {
    fn add(&mut self, subscription: Subscription, since: Option<u64>) {
        let channel = subscription.channel.clone();
        let cursor = match subscription.start {
            Start::Live { offset } => offset,
            Start::Replay(messages) => {
                self.pending.extend(messages);
                since.unwrap_or(0)
            }
            Start::Reset { offset } => {
                self.pending
                    .push_back(Arc::new(PushMessage::reset(channel.clone(), offset)));
                offset
            }
        };
        self.cursors.insert(channel.clone(), cursor);
        self.streams
            .insert(channel, BroadcastStream::new(subscription.live));
    }

    fn remove(&mut self, channel: &Channel) -> bool {
        self.cursors.remove(channel);
        self.pending.retain(|message| &message.channel != channel);
        self.streams.remove(channel).is_some()
    }

    fn len(&self) -> usize {
        self.streams.len()
    }

    /// The messages ready now, without waiting.
    fn ready(&mut self, limit: usize) -> Vec<Arc<PushMessage>> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.next().now_or_never() {
                Some(Some(Next::Message(message))) => out.push(message),
                _ => break,
            }
        }
        out
    }

    /// The next message for the client, in offset order per channel, each offset once. Pends
    /// forever when nothing is followed.
    async fn next(&mut self) -> Option<Next> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                if let Some(cursor) = self.cursors.get_mut(&message.channel) {
                    *cursor = (*cursor).max(message.offset);
                }
                return Some(Next::Message(message));
            }
            if self.streams.is_empty() {
                std::future::pending::<()>().await;
            }
            let (channel, item) = self.streams.next().await?;
            let message = match item {
                Ok(message) => message,
                Err(BroadcastStreamRecvError::Lagged(_)) => return Some(Next::SlowConsumer),
            };
            let cursor = self.cursors.get(&channel).copied().unwrap_or(0);
            if message.offset <= cursor {
                continue;
            }
            if message.offset > cursor + 1 {
                // The hub itself has a hole here (its history restarted): say so, then go on.
                self.pending.push_back(Arc::new(PushMessage::reset(
                    channel.clone(),
                    message.offset - 1,
                )));
            }
            self.pending.push_back(message);
        }
    }

    /// `channel@offset` for each followed channel, comma-joined.
    fn cursor_id(&self) -> String {
        let mut positions: Vec<String> = self
            .cursors
            .iter()
            .map(|(channel, offset)| format!("{channel}@{offset}"))
            .collect();
        positions.sort();
        positions.join(",")
    }
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Parses `channel@offset[,channel@offset…]` (a `Last-Event-ID`). Channel names are checked
/// later, when each is authorised.
pub fn parse_cursor(raw: &str) -> Result<HashMap<String, u64>, ApiError> {
    if raw.len() > MAX_CURSOR_LEN {
        return Err(bad_request("invalid_cursor", "the cursor is too long"));
    }
    raw.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (channel, offset) = part.trim().rsplit_once('@').ok_or_else(|| {
                bad_request(
                    "invalid_cursor",
                    "a cursor is `channel@offset[,channel@offset…]`",
                )
            })?;
            Ok((channel.to_string(), parse_offset(offset)?))
        })
        .collect()
}

fn parse_offset(raw: &str) -> Result<u64, ApiError> {
    raw.trim().parse::<u64>().map_err(|_| {
        bad_request(
            "invalid_since",
            format!(
                "`{}` is not an offset (a whole number ≥ 0)",
                raw.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// Query parameters common to the transports. `channel` may repeat.
#[derive(Default)]
struct PushQuery {
    channels: Vec<String>,
    since: Option<u64>,
    last_event_id: Option<String>,
    access_token: Option<String>,
    timeout_s: Option<u64>,
}

fn parse_query(raw: Option<&str>) -> Result<PushQuery, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_CURSOR_LEN {
        return Err(bad_request("invalid_input", "the query string is too long"));
    }
    let mut query = PushQuery::default();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "channel" => query.channels.push(value.into_owned()),
            "since" => query.since = Some(parse_offset(&value)?),
            "last_event_id" => query.last_event_id = Some(value.into_owned()),
            "access_token" => query.access_token = Some(value.into_owned()),
            "timeout_s" => {
                query.timeout_s = Some(value.trim().parse().map_err(|_| {
                    bad_request("invalid_input", "`timeout_s` is a whole number of seconds")
                })?)
            }
            _ => {}
        }
    }
    Ok(query)
}

/// The caller from `Authorization: Bearer` or, for browsers' `EventSource` and `WebSocket`
/// which cannot set headers, the `access_token` query parameter.
fn viewer(
    state: &AppState,
    headers: &HeaderMap,
    query: &PushQuery,
) -> Result<Option<CurrentUser>, ApiError> {
    let from_header = headers
        .get(AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| {
                    let (scheme, token) = value.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_string())
                })
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "the Authorization header must be `Bearer <token>`",
                    )
                })
        })
        .transpose()?;
    let Some(token) = from_header.or_else(|| query.access_token.clone()) else {
        return Ok(None);
    };
    let claims = state.tokens.verify(&token)?;
    Ok(Some(CurrentUser {
        id: claims.user_id(),
        role: claims.role,
    }))
}

/// Authorises and subscribes every requested channel, from the cursor where one is given.
async fn follow(
    state: &AppState,
    viewer: Option<&CurrentUser>,
    channels: &[String],
    cursor: &HashMap<String, u64>,
    since: Option<u64>,
) -> Result<Follower, ApiError> {
    if channels.is_empty() {
        return Err(bad_request("invalid_input", "name at least one `channel`"));
    }
    let max = state.push.settings.max_channels;
    if channels.len() > max {
        return Err(bad_request(
            "too_many_channels",
            format!("at most {max} channels per connection"),
        ));
    }
    let mut follower = Follower::default();
    for raw in channels {
        let channel = authorize_channel(state, raw, viewer).await?;
        if follower.cursors.contains_key(&channel) {
            continue;
        }
        let since = cursor.get(raw).copied().or(since);
        let subscription = state
            .push
            .hub
            .subscribe(&channel, since)
            .await
            .map_err(push_unavailable)?;
        follower.add(subscription, since);
    }
    Ok(follower)
}

/// Follow channels as Server-Sent Events.
///
/// Each event has `id: <cursor>`, `event: <type>` and `data: {"channel","offset","type","data"}`.
/// Resume with the `Last-Event-ID` header (browsers send it on reconnect) or the
/// `last_event_id` query parameter; a single channel may also be resumed with `since`. When
/// history no longer covers the gap the first event is `reset`: refetch the snapshot.
#[utoipa::path(
    get, path = "/api/v1/push/sse", tag = "push",
    params(
        ("channel" = Vec<String>, Query, description = "`event:{id}:seats`, `queue:{token}` or `user:{id}`; repeat for several"),
        ("last_event_id" = Option<String>, Query, description = "Resume cursor, as the `Last-Event-ID` header"),
        ("since" = Option<u64>, Query, description = "Resume a channel after this offset"),
        ("access_token" = Option<String>, Query, description = "Bearer token, for clients that cannot set headers"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 400, description = "`invalid_channel`, `invalid_cursor`, `invalid_since` or `too_many_channels`", body = ErrorBody),
        (status = 401, description = "A `user:` channel without a token", body = ErrorBody),
        (status = 403, description = "Another user's channel", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 429, description = "`too_many_connections`", body = ErrorBody),
    )
)]
pub async fn sse(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let session = SseSession::open(&state, peer, &headers, raw.as_deref()).await?;
    let stream = futures::stream::unfold(Some(session), |session| async move {
        let mut session = session?;
        let frame = session.next_frame().await;
        let event = match &frame {
            SseFrame::Message { id, message } => SseEvent::default()
                .id(id.as_str())
                .event(message.kind.as_str())
                .data(message.json_str()),
            SseFrame::Final { kind, json } => SseEvent::default().event(*kind).data(*json),
        };
        let next = matches!(frame, SseFrame::Message { .. }).then_some(session);
        Some((Ok::<_, Infallible>(event), next))
    });
    let heartbeat = state.push.settings.heartbeat;
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

/// One SSE connection's state, shared by the axum handler and the lean listener path
/// ([`crate::push_listener`]).
pub(crate) struct SseSession {
    follower: Follower,
    _slot: ConnectionSlot,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// What an SSE connection sends next.
pub(crate) enum SseFrame {
    Message {
        /// The connection's cursor after this message.
        id: String,
        message: Arc<PushMessage>,
    },
    /// The last event before the stream ends.
    Final {
        kind: &'static str,
        json: &'static str,
    },
}

impl SseSession {
    /// Authenticates, parses the cursor, admits the connection and subscribes every channel.
    pub(crate) async fn open(
        state: &AppState,
        peer: SocketAddr,
        headers: &HeaderMap,
        raw_query: Option<&str>,
    ) -> Result<SseSession, ApiError> {
        let query = parse_query(raw_query)?;
        let viewer = viewer(state, headers, &query)?;
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .or_else(|| query.last_event_id.clone());
        let cursor = match &last_event_id {
            Some(raw) => parse_cursor(raw)?,
            None => HashMap::new(),
        };
        let slot = state.push.admit(peer.ip(), viewer.as_ref())?;
        let follower = follow(
            state,
            viewer.as_ref(),
            &query.channels,
            &cursor,
            query.since,
        )
        .await?;
        Ok(SseSession {
            follower,
            _slot: slot,
            shutdown: state.push.shutdown.clone(),
        })
    }

    /// The next frame, or the shutdown frame once the node is stopping.
    pub(crate) async fn next_frame(&mut self) -> SseFrame {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            frame = self.next_message() => frame,
            _ = crate::push::stopping(&mut shutdown) => SseFrame::shutdown(),
        }
    }

    /// The next frame, ignoring shutdown (callers that watch for it themselves, once per
    /// connection rather than once per message).
    pub(crate) async fn next_message(&mut self) -> SseFrame {
        match self.follower.next().await {
            Some(Next::Message(message)) => SseFrame::Message {
                id: self.follower.cursor_id(),
                message,
            },
            Some(Next::SlowConsumer) => {
                metrics::counter!("marquee_push_slow_consumers_total").increment(1);
                SseFrame::Final {
                    kind: "error",
                    json: r#"{"code":"slow_consumer","message":"the connection fell too far behind; reconnect with Last-Event-ID"}"#,
                }
            }
            None => SseFrame::Final {
                kind: "shutdown",
                json: r#"{"reason":"the stream ended"}"#,
            },
        }
    }

    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

impl SseFrame {
    pub(crate) fn shutdown() -> SseFrame {
        SseFrame::Final {
            kind: "shutdown",
            json: r#"{"reason":"the server is shutting down; reconnect with Last-Event-ID"}"#,
        }
    }
}

/// Long polling: returns at once with the messages after `since`, or waits up to `timeout_s`
/// (default 25) for the next ones and returns an empty list if none come. The body is a JSON
/// array of message objects; a `reset` message means history did not reach back to `since`.
#[utoipa::path(
    get, path = "/api/v1/push/poll", tag = "push",
    params(
        ("channel" = String, Query, description = "The channel"),
        ("since" = Option<u64>, Query, description = "The last offset the client has; omitted means only new messages"),
        ("timeout_s" = Option<u64>, Query, description = "Longest wait in seconds (default 25, at most 60)"),
        ("access_token" = Option<String>, Query, description = "Bearer token, for clients that cannot set headers"),
    ),
    responses(
        (status = 200, description = "Messages, oldest first (possibly none)"),
        (status = 400, description = "`invalid_channel`, `invalid_since` or `invalid_input`", body = ErrorBody),
        (status = 401, description = "A `user:` channel without a token", body = ErrorBody),
        (status = 403, description = "Another user's channel", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub async fn poll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_query(raw.as_deref())?;
    if query.channels.len() > 1 {
        return Err(bad_request(
            "invalid_input",
            "long polling follows one channel; use SSE or WebSocket for several",
        ));
    }
    let max_poll = state.push.settings.max_poll;
    let timeout = Duration::from_secs(query.timeout_s.unwrap_or(25));
    if timeout > max_poll {
        return Err(bad_request(
            "invalid_input",
            format!("`timeout_s` is at most {}", max_poll.as_secs()),
        ));
    }
    let viewer = viewer(&state, &headers, &query)?;
    let _slot: ConnectionSlot = state.push.admit(peer.ip(), viewer.as_ref())?;
    let mut follower = follow(
        &state,
        viewer.as_ref(),
        &query.channels,
        &HashMap::new(),
        query.since,
    )
    .await?;
    let mut messages = follower.ready(MAX_POLL_MESSAGES);
    if messages.is_empty() {
        let mut shutdown = state.push.shutdown.clone();
        tokio::select! {
            next = follower.next() => {
                if let Some(Next::Message(message)) = next {
                    messages.push(message);
                    messages.extend(follower.ready(MAX_POLL_MESSAGES - 1));
                }
            }
            _ = tokio::time::sleep(timeout) => {}
            _ = crate::push::stopping(&mut shutdown) => {}
        }
    }
    let mut body = Vec::with_capacity(2 + messages.iter().map(|m| m.json.len() + 1).sum::<usize>());
    body.push(b'[');
    for (index, message) in messages.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&message.json);
    }
    body.push(b']');
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// What a WebSocket client sends.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Option<String>,
    since: Option<u64>,
    unsubscribe: Option<String>,
}

/// Follow channels over a WebSocket. Send `{"subscribe": "<channel>", "since": <offset>?}` and
/// `{"unsubscribe": "<channel>"}`; the server sends message objects, `subscribed` and
/// `unsubscribed` acknowledgements, and `error` messages for bad requests. Pings every
/// heartbeat; a client that does not answer two is closed. Close codes: 1001 on shutdown,
/// 1003 for binary frames, 1008 for a slow consumer, 1009 for an oversized message.
#[utoipa::path(
    get, path = "/api/v1/push/ws", tag = "push",
    params(
        ("access_token" = Option<String>, Query, description = "Bearer token (browsers cannot set headers on a WebSocket)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "A token that does not verify", body = ErrorBody),
        (status = 429, description = "`too_many_connections`", body = ErrorBody),
    )
)]
pub async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let query = parse_query(raw.as_deref())?;
    let viewer = viewer(&state, &headers, &query)?;
    let slot = state.push.admit(peer.ip(), viewer.as_ref())?;
    let limit = state.push.settings.max_ws_message_bytes;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run_websocket(state, viewer, socket).await;
            drop(slot);
        }))
}

fn ws_json(kind: &str, data: serde_json::Value) -> Message {
    Message::Text(
        serde_json::json!({"type": kind, "data": data})
            .to_string()
            .into(),
    )
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn run_websocket(state: AppState, viewer: Option<CurrentUser>, mut socket: WebSocket) {
    let mut follower = Follower::default();
    let mut shutdown = state.push.shutdown.clone();
    let mut heartbeat = tokio::time::interval(state.push.settings.heartbeat);
    heartbeat.tick().await;
    let mut unanswered_pings = 0u8;
    loop {
        let outgoing = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    handle_client_message(&state, viewer.as_ref(), &mut follower, text.as_str()).await
                }
                Some(Ok(Message::Binary(_))) => {
                    Some(close(1003, "binary frames are not accepted; send JSON text"))
                }
                Some(Ok(Message::Pong(_))) => {
                    unanswered_pings = 0;
                    None
                }
                Some(Ok(Message::Ping(_))) => None,
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(error)) => {
                    let too_big = error.to_string().to_ascii_lowercase().contains("too long")
                        || error.to_string().to_ascii_lowercase().contains("size");
                    let frame = if too_big {
                        close(1009, "message too big")
                    } else {
                        close(1002, "protocol error")
                    };
                    let _ = socket.send(frame).await;
                    return;
                }
            },
            next = follower.next() => match next {
                Some(Next::Message(message)) => {
                    match std::str::from_utf8(&message.json) {
                        Ok(text) => Some(Message::Text(text.into())),
                        Err(_) => None,
                    }
                }
                Some(Next::SlowConsumer) => {
                    metrics::counter!("marquee_push_slow_consumers_total").increment(1);
                    Some(close(1008, "slow_consumer"))
                }
                None => None,
            },
            _ = heartbeat.tick() => {
                if unanswered_pings >= 2 {
                    let _ = socket.send(close(1001, "no pong")).await;
                    return;
                }
                unanswered_pings += 1;
                Some(Message::Ping(Vec::new().into()))
            }
            _ = crate::push::stopping(&mut shutdown) => Some(close(1001, "the server is shutting down")),
        };
        if let Some(message) = outgoing {
            let closing = matches!(message, Message::Close(_));
            if socket.send(message).await.is_err() || closing {
                return;
            }
        }
    }
}

async fn handle_client_message(
    state: &AppState,
    viewer: Option<&CurrentUser>,
    follower: &mut Follower,
    text: &str,
) -> Option<Message> {
    let error = |code: &str, message: String| {
        Some(ws_json(
            "error",
            serde_json::json!({"code": code, "message": message}),
        ))
    };
    let request: ClientMessage = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(parse) => {
            return error(
                "invalid_input",
                format!("expected {{\"subscribe\": channel, \"since\": offset?}} or {{\"unsubscribe\": channel}}: {parse}"),
            )
        }
    };
    match (request.subscribe, request.unsubscribe) {
        (Some(raw), None) => {
            let max = state.push.settings.max_channels;
            if follower.len() >= max {
                return error(
                    "too_many_channels",
                    format!("at most {max} channels per connection"),
                );
            }
            let channel = match authorize_channel(state, &raw, viewer).await {
                Ok(channel) => channel,
                Err(refused) => return error(refused.code(), refused.message().to_string()),
            };
            follower.remove(&channel);
            match state.push.hub.subscribe(&channel, request.since).await {
                Ok(subscription) => {
                    let offset = match &subscription.start {
                        Start::Live { offset } | Start::Reset { offset } => *offset,
                        Start::Replay(_) => request.since.unwrap_or(0),
                    };
                    follower.add(subscription, request.since);
                    Some(ws_json(
                        "subscribed",
                        serde_json::json!({"channel": channel.as_str(), "offset": offset}),
                    ))
                }
                Err(failure) => {
                    // Logged there; the client gets the code and our own words only.
                    let refused = push_unavailable(failure);
                    error(refused.code(), refused.message().to_string())
                }
            }
        }
        (None, Some(raw)) => match Channel::parse(&raw) {
            Ok(channel) => {
                follower.remove(&channel);
                Some(ws_json(
                    "unsubscribed",
                    serde_json::json!({"channel": channel.as_str()}),
                ))
            }
            Err(invalid) => error("invalid_channel", invalid.to_string()),
        },
        _ => error(
            "invalid_input",
            "send exactly one of `subscribe` and `unsubscribe`".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_or_are_refused() {
        let cursor = parse_cursor("event:a:seats@3,user:b@0").expect("cursor");
        assert_eq!(cursor.get("event:a:seats"), Some(&3));
        assert_eq!(cursor.get("user:b"), Some(&0));
        for bad in [
            "x",
            "user:b@",
            "user:b@-1",
            "user:b@1e3",
            "user:b@99999999999999999999999",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
        assert!(parse_cursor(&"a@1,".repeat(3000)).is_err());
    }
}

/// An operator's message on a queue or user channel (`{"channel","type","data"}`), from the
/// admin listener only: announcements, and the push benchmark's publisher. Seat channels are
/// refused: their offsets belong to the store.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorMessage {
    channel: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

pub async fn operator_publish(
    State(state): State<AppState>,
    crate::extract::JsonBody(message): crate::extract::JsonBody<OperatorMessage>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let channel = Channel::parse(&message.channel)
        .map_err(|error| bad_request("invalid_channel", error.to_string()))?;
    if matches!(
        channel.kind(),
        marquee_push::ChannelKind::EventSeats | marquee_push::ChannelKind::EventStream
    ) {
        return Err(bad_request(
            "invalid_channel",
            "event channels carry only the store's changes",
        ));
    }
    if message.kind.is_empty() || message.kind.len() > 64 || message.kind.contains(['\n', '\r']) {
        return Err(ApiError::invalid_field(
            "type",
            "1 to 64 characters, one line",
        ));
    }
    let offset = state
        .push
        .hub
        .publish(&channel, &message.kind, &message.data)
        .await
        .map_err(push_unavailable)?;
    Ok(axum::Json(
        serde_json::json!({"channel": channel.as_str(), "offset": offset}),
    ))
}
