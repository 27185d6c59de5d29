//! Push over HTTP: SSE, WebSocket and long polling against a real node — snapshot and stream
//! without a gap, exact resume, reset, private channels, slow consumers, bad input.

use crate::holds::{on_sale, OnSale};
use crate::support::TestApp;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(15);

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// A minimal SSE reader over a streaming response.
pub(crate) struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    pub(crate) async fn open(app: &TestApp, query: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = app
            .client
            .get(format!("{}/api/v1/push/sse?{query}", app.url));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("connect");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream"));
        assert_eq!(response.headers()["x-marquee-node"], "test-node");
        assert!(!response.headers()["x-request-id"].is_empty());
        SseStream::from_response(response)
    }

    /// Reads an SSE response already checked by the caller.
    pub(crate) fn from_response(response: reqwest::Response) -> SseStream {
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, skipping heartbeat comments; `None` when the server ended the stream.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (heartbeat)
                }
                event.data = serde_json::from_str(&data).expect("data is JSON");
                return Some(event);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("stream readable")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

/// A user's own notification stream, from the start.
async fn user_stream(app: &TestApp, token: &str, user_id: &str) -> SseStream {
    SseStream::open(
        app,
        &format!("channel=user:{user_id}&since=0&access_token={token}"),
        None,
    )
    .await
}

async fn seat_version(sale: &OnSale) -> u64 {
    sale.seat_statuses().await["version"]
        .as_u64()
        .expect("version")
}

fn seats_channel(sale: &OnSale) -> String {
    format!("event:{}:seats", sale.event_id)
}

async fn poll(app: &TestApp, query: &str, token: Option<&str>) -> (StatusCode, Value) {
    let response = app.get(&format!("/api/v1/push/poll?{query}"), token).await;
    (response.status, response.body)
}

fn offsets(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .expect("array")
        .iter()
        .map(|message| message["offset"].as_u64().expect("offset"))
        .collect()
}

#[tokio::test]
async fn the_snapshot_and_the_stream_line_up_without_a_gap() {
    snapshot_then_stream(TestApp::spawn().await).await;
}

#[tokio::test]
async fn sse_through_hyper_behaves_the_same_as_the_lean_path() {
    snapshot_then_stream(TestApp::spawn_with(|config| config.push_lean_sse = false).await).await;
}

async fn snapshot_then_stream(app: TestApp) {
    let sale = on_sale(app).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    assert_eq!(seat_version(&sale).await, 0);
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let version = seat_version(&sale).await;
    assert_eq!(version, 1, "one change, version 1");
    let mut stream = SseStream::open(
        &sale.app,
        &format!("channel={}&since={version}", seats_channel(&sale)),
        None,
    )
    .await;
    let held = sale
        .hold(&bob, json!({"seat_ids": [sale.seat_ids[1]]}))
        .await
        .expect(StatusCode::CREATED);
    let event = stream.next().await.expect("an event");
    assert_eq!(event.event, "seats");
    assert_eq!(
        event.data,
        json!({
            "channel": seats_channel(&sale),
            "offset": 2,
            "type": "seats",
            "data": {"seat_ids": [sale.seat_ids[1]], "status": "held"},
        })
    );
    assert_eq!(
        event.id.as_deref(),
        Some(format!("{}@2", seats_channel(&sale)).as_str())
    );
    sale.app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/holds/{}", held["id"].as_str().expect("id")),
            Some(&bob),
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    let released = stream.next().await.expect("an event");
    assert_eq!(released.data["offset"], 3);
    assert_eq!(released.data["data"]["status"], "available");
    assert_eq!(
        seat_version(&sale).await,
        3,
        "the snapshot is at the stream's offset"
    );
    sale.app.stop().await;
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed_in_order() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let channel = seats_channel(&sale);
    let mut stream = SseStream::open(&sale.app, &format!("channel={channel}&since=0"), None).await;
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let first = stream.next().await.expect("event");
    let last_id = first.id.clone().expect("id");
    drop(stream);
    // Missed while disconnected: a release, a hold, a purchase.
    let (bob, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&bob, json!({"seat_ids": [sale.seat_ids[5]]}))
        .await
        .expect(StatusCode::CREATED);
    sale.order(&bob, hold["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    let mut resumed =
        SseStream::open(&sale.app, &format!("channel={channel}"), Some(&last_id)).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = resumed.next().await.expect("event");
        seen.push((
            event.data["offset"].as_u64().expect("offset"),
            event.data["data"]["status"].clone(),
        ));
    }
    assert_eq!(seen, vec![(2, json!("held")), (3, json!("sold"))]);
    // The same through long polling, and the query-parameter form of Last-Event-ID.
    let (status, messages) = poll(&sale.app, &format!("channel={channel}&since=1"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(offsets(&messages), vec![2, 3]);
    let mut by_query = SseStream::open(
        &sale.app,
        &format!("channel={channel}&last_event_id={channel}%402"),
        None,
    )
    .await;
    assert_eq!(by_query.next().await.expect("event").data["offset"], 3);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_gap_history_cannot_cover_starts_with_a_reset() {
    let sale = on_sale(TestApp::spawn_with(|config| config.push_hub.history_len = 2).await).await;
    let (ann, _) = sale.app.register("fan").await;
    let channel = seats_channel(&sale);
    // Subscribe so the node knows the channel from offset 0 (live from the start).
    let mut live = SseStream::open(&sale.app, &format!("channel={channel}&since=0"), None).await;
    for seat in &sale.seat_ids[..4] {
        let hold = sale
            .hold(&ann, json!({"seat_ids": [seat]}))
            .await
            .expect(StatusCode::CREATED);
        sale.app
            .request(
                reqwest::Method::DELETE,
                &format!("/api/v1/holds/{}", hold["id"].as_str().expect("id")),
                Some(&ann),
                None,
            )
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    for expected in 1..=8 {
        assert_eq!(live.next().await.expect("event").data["offset"], expected);
    }
    let (_, messages) = poll(&sale.app, &format!("channel={channel}&since=1"), None).await;
    assert_eq!(
        messages,
        json!([{"channel": channel, "offset": 8, "type": "reset", "data": {}}])
    );
    let mut stream = SseStream::open(
        &sale.app,
        &format!("channel={channel}"),
        Some(&format!("{channel}@3")),
    )
    .await;
    let reset = stream.next().await.expect("event");
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.data["offset"], 8);
    // Still covered: the last two.
    let (_, messages) = poll(&sale.app, &format!("channel={channel}&since=6"), None).await;
    assert_eq!(offsets(&messages), vec![7, 8]);
    // From the future (a client of another deployment): reset, never silence.
    let (_, messages) = poll(&sale.app, &format!("channel={channel}&since=999999"), None).await;
    assert_eq!(messages[0]["type"], "reset");
    sale.app.stop().await;
}

#[tokio::test]
async fn user_channels_are_private_and_carry_order_notifications() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, ann_id) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let channel = format!("user:{ann_id}");
    let (status, body) = poll(&sale.app, &format!("channel={channel}&timeout_s=0"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = poll(
        &sale.app,
        &format!("channel={channel}&timeout_s=0"),
        Some(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let mut stream = user_stream(&sale.app, &ann, &ann_id).await;
    let hold = sale
        .hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let order = sale
        .order(&ann, hold["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    let confirmed = stream.next().await.expect("event");
    assert_eq!(confirmed.event, "order.confirmed");
    assert_eq!(confirmed.data["data"]["order_id"], order["id"]);
    sale.app
        .post(
            &format!("/api/v1/events/{}/cancel", sale.event_id),
            Some(&sale.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    let cancelled = stream.next().await.expect("event");
    assert_eq!(cancelled.event, "event.cancelled");
    assert_eq!(cancelled.data["data"]["event_id"], sale.event_id.as_str());
    assert_eq!(cancelled.data["offset"], 2);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_long_poll_wakes_up_on_a_change() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let channel = seats_channel(&sale);
    let (status, empty) = poll(
        &sale.app,
        &format!("channel={channel}&since=0&timeout_s=1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        empty,
        json!([]),
        "nothing new: an empty list after the timeout"
    );
    let waiting = {
        let client = sale.app.client.clone();
        let url = format!(
            "{}/api/v1/push/poll?channel={channel}&since=0&timeout_s=30",
            sale.app.url
        );
        tokio::spawn(async move {
            let response = client.get(url).send().await.expect("poll");
            response.json::<Value>().await.expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let messages = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("woken before its timeout")
        .expect("task");
    assert_eq!(offsets(&messages), vec![1]);
    assert_eq!(messages[0]["data"]["status"], "held");
    sale.app.stop().await;
}

#[tokio::test]
async fn bad_push_requests_get_clear_errors() {
    let sale = on_sale(TestApp::spawn().await).await;
    let channel = seats_channel(&sale);
    let many: Vec<String> = (0..17).map(|i| format!("channel=queue:t{i}")).collect();
    let cases = [
        (
            "channel=bogus".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            "channel=event:x:holds".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        ("".to_string(), StatusCode::BAD_REQUEST, "invalid_input"),
        (
            format!("channel={channel}&since=-1"),
            StatusCode::BAD_REQUEST,
            "invalid_since",
        ),
        (
            format!("channel={channel}&since=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_since",
        ),
        (
            format!("channel={channel}&since=99999999999999999999999"),
            StatusCode::BAD_REQUEST,
            "invalid_since",
        ),
        (many.join("&"), StatusCode::BAD_REQUEST, "too_many_channels"),
        (
            "channel=event:01ARZ3NDEKTSV4RRFFQ69G5FAV:seats".to_string(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("channel={channel}&last_event_id=garbage"),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            format!("channel={channel}&access_token=forged"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
    ];
    for (query, status, code) in &cases {
        let response = sale
            .app
            .get(&format!("/api/v1/push/sse?{query}"), None)
            .await;
        assert_eq!(response.status, *status, "sse {query}: {}", response.body);
        assert_eq!(response.code(), *code, "sse {query}");
    }
    for (query, status, code) in [
        (
            format!("channel={channel}&timeout_s=1000"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            format!("channel={channel}&channel=queue:x"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            format!("channel={channel}&since=1.5"),
            StatusCode::BAD_REQUEST,
            "invalid_since",
        ),
    ] {
        let response = sale
            .app
            .get(&format!("/api/v1/push/poll?{query}"), None)
            .await;
        assert_eq!(response.status, status, "poll {query}: {}", response.body);
        assert_eq!(response.code(), code, "poll {query}");
    }
    sale.app.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let sale =
        on_sale(TestApp::spawn_with(|config| config.push.max_connections_per_ip = 2).await).await;
    let query = format!("channel={}", seats_channel(&sale));
    let first = SseStream::open(&sale.app, &query, None).await;
    let _second = SseStream::open(&sale.app, &query, None).await;
    let refused = sale
        .app
        .get(&format!("/api/v1/push/sse?{query}"), None)
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "too_many_connections");
    drop(first);
    // The freed place is usable again once the server notices the hang-up.
    let mut admitted = false;
    for _ in 0..100 {
        let response = sale
            .app
            .client
            .get(format!("{}/api/v1/push/sse?{query}", sale.app.url))
            .send()
            .await
            .expect("connect");
        if response.status() == StatusCode::OK {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed connection frees its place");
    sale.app.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_with_a_reason() {
    let app = TestApp::spawn_with(|config| config.push_hub.subscriber_buffer = 8).await;
    let (ann, ann_id) = app.register("fan").await;
    let channel = marquee_push::Channel::user(&ann_id).expect("channel");
    let mut stream =
        SseStream::open(&app, &format!("channel={channel}&access_token={ann}"), None).await;
    // The client reads nothing while far more than the socket buffers and the 8-message
    // ring can hold is published.
    let hub = app.server.as_ref().expect("server").state.push.hub.clone();
    let big = "x".repeat(64 * 1024);
    for n in 0..400 {
        hub.publish(&channel, "note", &json!({"n": n, "pad": big}))
            .await
            .expect("publish");
    }
    let mut last = None;
    let mut count = 0;
    while let Some(event) = stream.next().await {
        count += 1;
        last = Some(event);
    }
    let last = last.expect("some events");
    assert_eq!(last.event, "error", "after {count} events");
    assert_eq!(last.data["code"], "slow_consumer");
    assert!(
        count < 400,
        "the stream ended instead of buffering everything"
    );
    app.stop().await;
}

pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame.
pub(crate) async fn ws_receive(socket: &mut WsStream) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let WsMessage::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("json");
        }
    }
}

/// The close code the server sends next.
async fn ws_close_code(socket: &mut WsStream) -> Option<u16> {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("in time")
        {
            Some(Ok(WsMessage::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn websocket_subscribes_resumes_and_refuses_bad_frames() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let channel = seats_channel(&sale);
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let ws_url = format!("{}/api/v1/push/ws", sale.app.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    socket
        .send(WsMessage::text("not json"))
        .await
        .expect("send");
    let error = ws_receive(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["data"]["code"], "invalid_input");
    socket
        .send(WsMessage::text(
            json!({"subscribe": "user:someone"}).to_string(),
        ))
        .await
        .expect("send");
    assert_eq!(
        ws_receive(&mut socket).await["data"]["code"],
        "unauthorized"
    );
    socket
        .send(WsMessage::text(
            json!({"subscribe": channel, "since": 0}).to_string(),
        ))
        .await
        .expect("send");
    let subscribed = ws_receive(&mut socket).await;
    assert_eq!(subscribed["type"], "subscribed");
    let replayed = ws_receive(&mut socket).await;
    assert_eq!(
        (
            replayed["offset"].clone(),
            replayed["data"]["status"].clone()
        ),
        (json!(1), json!("held"))
    );
    let (bob, _) = sale.app.register("fan").await;
    sale.hold(&bob, json!({"seat_ids": [sale.seat_ids[1]]}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(ws_receive(&mut socket).await["offset"], 2);
    socket
        .send(WsMessage::text(json!({"unsubscribe": channel}).to_string()))
        .await
        .expect("send");
    assert_eq!(ws_receive(&mut socket).await["type"], "unsubscribed");
    // Oversized: closed with 1009.
    socket
        .send(WsMessage::text("x".repeat(64 * 1024)))
        .await
        .expect("send");
    let close_code = ws_close_code(&mut socket).await;
    assert_eq!(close_code, Some(1009));
    // Binary: closed with 1003.
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    socket
        .send(WsMessage::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    let close_code = ws_close_code(&mut socket).await;
    assert_eq!(close_code, Some(1003));
    sale.app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_push_connections_so_the_node_can_stop() {
    let sale = on_sale(TestApp::spawn().await).await;
    let mut stream = SseStream::open(
        &sale.app,
        &format!("channel={}", seats_channel(&sale)),
        None,
    )
    .await;
    let stopping = tokio::spawn(async move { sale.app.stop().await });
    let last = stream.next().await.expect("a goodbye event");
    assert_eq!(last.event, "shutdown");
    assert!(stream.next().await.is_none(), "then the stream ends");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the node stops with a client connected")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_one_node_reaches_a_subscriber_on_another_through_redis() {
    let redis_url = std::env::var("MARQUEE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("test:{}:", crate::support::ulid_lower());
    let configure = |config: &mut marquee::ServerConfig| {
        config.redis_url = Some(redis_url.clone());
        config.redis_prefix = prefix.clone();
    };
    let node_a = TestApp::spawn_with(configure).await;
    let node_b = TestApp::spawn_with(configure).await;
    // Users live in each node's own store here; a token from one verifies on the other
    // because they share the signing secret.
    let (ann, ann_id) = node_b.register("fan").await;
    let channel = marquee_push::Channel::user(&ann_id).expect("channel");
    let mut on_b = user_stream(&node_b, &ann, &ann_id).await;
    let hub_a = node_a
        .server
        .as_ref()
        .expect("server")
        .state
        .push
        .hub
        .clone();
    for n in 1..=3u64 {
        let offset = hub_a
            .publish(&channel, "note", &json!({ "n": n }))
            .await
            .expect("publish on A");
        assert_eq!(offset, n);
    }
    for n in 1..=3u64 {
        let event = on_b.next().await.expect("event on B");
        assert_eq!(event.data["offset"], n);
        assert_eq!(event.data["data"]["n"], n);
    }
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn operators_publish_on_the_admin_listener_only() {
    let app = TestApp::spawn_with(|config| {
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    let admin = app
        .server
        .as_ref()
        .and_then(|server| server.admin_addr)
        .expect("admin listener");
    let publish = |body: Value| {
        let client = app.client.clone();
        async move {
            let response = client
                .post(format!("http://{admin}/push/publish"))
                .json(&body)
                .send()
                .await
                .expect("publish");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (fan, fan_id) = app.register("fan").await;
    let (status, body) =
        publish(json!({"channel": format!("user:{fan_id}"), "type": "note", "data": {"x": 1}}))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["offset"], 1);
    let (_, messages) = poll(&app, &format!("channel=user:{fan_id}&since=0"), Some(&fan)).await;
    assert_eq!(messages[0]["data"], json!({"x": 1}));
    let (status, body) = publish(json!({"channel": "event:x:seats", "type": "seats"})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "seat offsets belong to the store: {body}"
    );
    let (status, _) = publish(json!({"channel": "queue:abc", "type": "a\nb"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let public = app
        .post(
            "/push/publish",
            None,
            json!({"channel": "queue:abc", "type": "note"}),
        )
        .await;
    assert_eq!(
        public.status,
        StatusCode::NOT_FOUND,
        "not on the public listener"
    );
    app.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_quiet_connections_alive_on_both_transports() {
    let app =
        TestApp::spawn_with(|config| config.push.heartbeat = Duration::from_millis(100)).await;
    let (fan, fan_id) = app.register("fan").await;
    let mut response = app
        .client
        .get(format!(
            "{}/api/v1/push/sse?channel=user:{fan_id}&access_token={fan}",
            app.url
        ))
        .send()
        .await
        .expect("connect");
    let mut seen = String::new();
    while !seen.contains(": heartbeat") {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("a heartbeat in time")
            .expect("readable")
            .expect("open");
        seen.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let ws_url = format!("{}/api/v1/push/ws", app.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    let ping = loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a ping in time")
            .expect("open")
            .expect("frame");
        if let WsMessage::Ping(_) = frame {
            break true;
        }
    };
    assert!(ping);
    app.stop().await;
}

#[tokio::test]
async fn a_fan_is_reminded_a_minute_before_the_hold_lapses() {
    let sale =
        on_sale(TestApp::spawn_with(|config| config.hold_ttl = Duration::from_secs(61)).await)
            .await;
    let (ann, ann_id) = sale.app.register("fan").await;
    let mut stream = user_stream(&sale.app, &ann, &ann_id).await;
    let hold = sale
        .hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let reminder = stream.next().await.expect("event");
    assert_eq!(reminder.event, "hold.expiring");
    assert_eq!(reminder.data["data"]["hold_id"], hold["id"]);
    assert_eq!(reminder.data["data"]["expires_at"], hold["expires_at"]);
    sale.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_change_on_node_a_reaches_node_b_with_the_same_offsets() {
    let schema = format!("push_{}", crate::support::ulid_lower());
    crate::support::sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let database_url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        crate::support::postgres_url()
    );
    let redis_url = std::env::var("MARQUEE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("test:{}:", crate::support::ulid_lower());
    let configure = |config: &mut marquee::ServerConfig| {
        config.database_url = Some(database_url.clone());
        config.redis_url = Some(redis_url.clone());
        config.redis_prefix = prefix.clone();
    };
    let node_a = TestApp::spawn_with(configure).await;
    let node_b = TestApp::spawn_with(configure).await;
    let sale = on_sale(node_a).await;
    let channel = seats_channel(&sale);
    let mut on_b = SseStream::open(&node_b, &format!("channel={channel}&since=0"), None).await;
    for (index, seat) in sale.seat_ids[..3].iter().enumerate() {
        let (fan, _) = sale.app.register("fan").await;
        sale.hold(&fan, json!({"seat_ids": [seat]}))
            .await
            .expect(StatusCode::CREATED);
        let event = on_b.next().await.expect("event on B");
        assert_eq!(event.data["offset"], index + 1);
        assert_eq!(event.data["data"]["seat_ids"], json!([seat]));
    }
    // Both nodes relayed each change; B's subscriber saw each once.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_b.next())
            .await
            .is_err(),
        "no duplicates"
    );
    let snapshot = node_b
        .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(snapshot["version"], 3);
    drop(on_b);
    sale.app.stop().await;
    node_b.stop().await;
    crate::support::sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

#[tokio::test]
async fn a_lapsed_hold_frees_its_seats_on_the_stream_by_itself() {
    let sale =
        on_sale(TestApp::spawn_with(|config| config.hold_ttl = Duration::from_millis(600)).await)
            .await;
    let (ann, _) = sale.app.register("fan").await;
    let mut stream = SseStream::open(
        &sale.app,
        &format!("channel={}&since=0", seats_channel(&sale)),
        None,
    )
    .await;
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let held = stream.next().await.expect("event");
    assert_eq!(held.data["data"]["status"], "held");
    // No request and no client action: the lease lapses and the change reaches the stream.
    let lapsed = stream.next().await.expect("event");
    assert_eq!(lapsed.data["offset"], 2);
    assert_eq!(
        lapsed.data["data"],
        json!({"seat_ids": [sale.seat_ids[0]], "status": "available"})
    );
    sale.app.stop().await;
}

#[tokio::test]
async fn a_websocket_that_falls_behind_is_closed_as_a_slow_consumer() {
    let app = TestApp::spawn_with(|config| config.push_hub.subscriber_buffer = 8).await;
    // A channel the client may follow (made-up queue tokens are refused).
    let (fan, fan_id) = app.register("fan").await;
    let ws_url = format!(
        "{}/api/v1/push/ws?access_token={fan}",
        app.url.replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    socket
        .send(WsMessage::text(
            json!({"subscribe": format!("user:{fan_id}")}).to_string(),
        ))
        .await
        .expect("send");
    assert_eq!(ws_receive(&mut socket).await["type"], "subscribed");
    let hub = app.server.as_ref().expect("server").state.push.hub.clone();
    let channel = marquee_push::Channel::user(&fan_id).expect("channel");
    let big = "x".repeat(64 * 1024);
    for n in 0..400 {
        hub.publish(&channel, "note", &json!({"n": n, "pad": big}))
            .await
            .expect("publish");
    }
    // Reading only now: what was buffered, then the close with its reason.
    let close = loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("in time")
        {
            Some(Ok(WsMessage::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("expected a close frame, got {error}"),
            None => panic!("closed without a close frame"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "slow_consumer");
    app.stop().await;
}

/// Issue #33 (4): behind a trusted proxy the lean SSE path counts the clients the proxy names
/// against the per-IP connection cap, not the proxy itself.
#[tokio::test]
async fn lean_sse_counts_the_clients_a_trusted_proxy_names() {
    let sale = on_sale(
        TestApp::spawn_with(|config| {
            config.push.max_connections_per_ip = 1;
            config.push_lean_sse = true;
            config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        })
        .await,
    )
    .await;
    let query = format!("channel={}", seats_channel(&sale));
    let open = |client: &'static str| {
        // A client of its own each time: a new connection, which the lean path takes (a
        // pooled one would already be hyper's, and hyper's path reads the header right).
        let request = reqwest::Client::new()
            .get(format!("{}/api/v1/push/sse?{query}", sale.app.url))
            .header("x-forwarded-for", client);
        async move {
            let response = request.send().await.expect("connect");
            if response.status() == StatusCode::OK {
                assert_eq!(
                    response
                        .headers()
                        .get("connection")
                        .map(|value| value.as_bytes()),
                    Some(&b"close"[..]),
                    "served by the lean path"
                );
            }
            response
        }
    };
    let first = open("198.51.100.1").await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open("198.51.100.2").await;
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "another client behind the same proxy has a place of its own"
    );
    let third = open("198.51.100.1").await;
    assert_eq!(
        third.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the first client is at its cap"
    );
    drop((first, second, third));
    sale.app.stop().await;
}

/// Issue #33 (1): channel names clients make up cost the hub nothing. 20,000 made-up
/// `queue:` names over long polling (`timeout_s=0`, as fast as the client can send) and over
/// one WebSocket looping subscribe/unsubscribe are refused before the hub sees them, and the
/// hub's channel count stays where it was.
#[tokio::test]
async fn made_up_channel_names_do_not_grow_the_hub() {
    let app = TestApp::spawn().await;
    let hub = app.server.as_ref().expect("server").state.push.hub.clone();
    let before = hub.channel_count();
    let client = app.client.clone();
    let url = app.url.clone();
    let statuses: Vec<StatusCode> = futures::stream::iter(0..15_000)
        .map(|index| {
            let client = client.clone();
            let url = url.clone();
            async move {
                client
                    .get(format!(
                        "{url}/api/v1/push/poll?channel=queue:made-up-{index}&timeout_s=0"
                    ))
                    .send()
                    .await
                    .expect("poll")
                    .status()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::NOT_FOUND),
        "a made-up queue token is no place: {:?}",
        statuses
            .iter()
            .find(|status| **status != StatusCode::NOT_FOUND)
    );
    let ws_url = format!("{}/api/v1/push/ws", app.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    for index in 0..5_000 {
        let channel = format!("queue:ws-made-up-{index}");
        socket
            .send(WsMessage::text(json!({"subscribe": channel}).to_string()))
            .await
            .expect("send");
        assert_eq!(ws_receive(&mut socket).await["data"]["code"], "not_found");
        socket
            .send(WsMessage::text(json!({"unsubscribe": channel}).to_string()))
            .await
            .expect("send");
        let _ = ws_receive(&mut socket).await;
    }
    let after = hub.channel_count();
    assert!(
        after <= before + 1,
        "the hub tracks {after} channels after 20,000 made-up names (before: {before})"
    );
    app.stop().await;
}
