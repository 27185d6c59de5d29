//! The waiting room over HTTP: joining, admission announced on push, passes in front of holds,
//! the organizer's controls, abandonment, limits and every refusal. The in-process room is
//! driven by the server's own driver; one test runs the same flow on Redis.

use crate::holds::{on_sale_with_room, OnSale};
use crate::support::{event_body, Response, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(15);

/// An event on sale now with a waiting room (see `holds::on_sale_with_room`).
type Room = OnSale;

impl Room {
    async fn join(&self, token: &str) -> Response {
        self.app
            .post(
                &format!("/api/v1/events/{}/queue", self.event_id),
                Some(token),
                json!({}),
            )
            .await
    }

    async fn place(&self, queue_token: &str) -> Value {
        self.app
            .get(&format!("/api/v1/queue/{queue_token}"), None)
            .await
            .expect(StatusCode::OK)
    }

    /// Polls the place until it is admitted; returns the pass.
    /// The pass of a place: at once if it is already admitted, else from the admission the
    /// driver pushes on `queue:{token}` (awaited by long polling, not by sleeping).
    async fn await_pass(&self, queue_token: &str) -> String {
        let place = self.place(queue_token).await;
        if place["status"] == "admitted" {
            return place["pass"].as_str().expect("pass").to_string();
        }
        assert_eq!(place["status"], "waiting", "{place}");
        let admitted = self.pushed_admission(queue_token).await;
        admitted["data"]["pass"]
            .as_str()
            .expect("pass on the channel")
            .to_string()
    }

    /// Long-polls `queue:{token}` until its `admitted` message arrives.
    async fn pushed_admission(&self, queue_token: &str) -> Value {
        let channel = format!("queue:{queue_token}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut since = 0;
        loop {
            let polled = self
                .app
                .get(
                    &format!("/api/v1/push/poll?channel={channel}&since={since}&timeout_s=5"),
                    None,
                )
                .await
                .expect(StatusCode::OK);
            let messages = polled.as_array().cloned().unwrap_or_default();
            if let Some(message) = messages.iter().find(|m| m["data"]["status"] == "admitted") {
                return message.clone();
            }
            if let Some(last) = messages.last() {
                since = last["offset"].as_u64().expect("offset");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no admission pushed"
            );
        }
    }

    async fn hold_with_pass(&self, token: &str, pass: Option<&str>, seat: usize) -> Response {
        let headers: Vec<(&str, &str)> = pass
            .map(|pass| ("x-marquee-pass", pass))
            .into_iter()
            .collect();
        self.app
            .post_with_headers(
                &format!("/api/v1/events/{}/holds", self.event_id),
                Some(token),
                &headers,
                json!({"seat_ids": [self.seat_ids[seat]]}),
            )
            .await
    }

    async fn control(&self, action: &str) -> Value {
        self.app
            .post(
                &format!("/api/v1/events/{}/queue/{action}", self.event_id),
                Some(&self.organizer),
                json!({}),
            )
            .await
            .expect(StatusCode::OK)
    }
}

fn token_of(joined: &Value) -> String {
    joined["token"].as_str().expect("token").to_string()
}

async fn admitted_fan_holds_with_the_pass_and_nobody_else_can(app: TestApp) {
    let room = on_sale_with_room(app, json!({"enabled": true, "admit_per_minute": 600})).await;
    let (ann, _) = room.app.register("fan").await;
    let (bob, _) = room.app.register("fan").await;

    let refused = room.hold_with_pass(&ann, None, 0).await;
    refused.expect_error(StatusCode::FORBIDDEN, "queue_required");
    assert_eq!(refused.body["error"]["reason"], "missing");

    let joined = room.join(&ann).await.expect(StatusCode::CREATED);
    let token = token_of(&joined);
    assert_eq!(joined["event_id"], room.event_id.as_str());
    assert!(
        joined["status"] == "admitted" || joined["status"] == "waiting",
        "{joined}"
    );
    let pass = room.await_pass(&token).await;
    let place = room.place(&token).await;
    assert_eq!(place["position"], 0);
    assert!(place["pass_expires_at"].is_string());

    let hold = room
        .hold_with_pass(&ann, Some(&pass), 0)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(hold["event_id"], room.event_id.as_str());

    // Bob cannot ride on Ann's pass, nor on a mangled one.
    let stolen = room.hold_with_pass(&bob, Some(&pass), 1).await;
    stolen.expect_error(StatusCode::FORBIDDEN, "queue_required");
    assert_eq!(stolen.body["error"]["reason"], "other_user");
    let mut mangled = pass.clone().into_bytes();
    let last = mangled.len() - 3;
    mangled[last] = if mangled[last] == b'A' { b'B' } else { b'A' };
    let mangled = String::from_utf8(mangled).expect("ascii");
    let forged = room.hold_with_pass(&ann, Some(&mangled), 1).await;
    forged.expect_error(StatusCode::FORBIDDEN, "queue_required");
    assert_eq!(forged.body["error"]["reason"], "forged");
    let garbage = room.hold_with_pass(&ann, Some("not a pass"), 1).await;
    assert_eq!(garbage.body["error"]["reason"], "malformed");

    // Ann's pass is for this event only.
    let other = on_sale_with_room_on(&room.app, &room.organizer).await;
    let elsewhere = room
        .app
        .post_with_headers(
            &format!("/api/v1/events/{other}/holds"),
            Some(&ann),
            &[("x-marquee-pass", &pass)],
            json!({"quantity": 1}),
        )
        .await;
    elsewhere.expect_error(StatusCode::FORBIDDEN, "queue_required");
    assert_eq!(elsewhere.body["error"]["reason"], "other_event");

    // Leaving revokes the pass.
    room.app
        .request(
            Method::DELETE,
            &format!("/api/v1/queue/{token}"),
            None,
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    let revoked = room.hold_with_pass(&ann, Some(&pass), 2).await;
    assert_eq!(
        revoked.body["error"]["reason"], "revoked",
        "{}",
        revoked.body
    );
    room.app.stop().await;
}

/// A second event with a waiting room by the same organizer; returns its id.
async fn on_sale_with_room_on(app: &TestApp, organizer: &str) -> String {
    let venue = app.create_venue(organizer).await;
    let mut body = event_body(venue["id"].as_str().expect("id"));
    body.as_object_mut().expect("object").remove("on_sale_at");
    let event = app
        .post("/api/v1/events", Some(organizer), body)
        .await
        .expect(StatusCode::CREATED);
    let id = event["id"].as_str().expect("id").to_string();
    app.post(
        &format!("/api/v1/events/{id}/publish"),
        Some(organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    id
}

#[tokio::test]
async fn admitted_fan_holds_with_the_pass_and_nobody_else_can_in_process() {
    admitted_fan_holds_with_the_pass_and_nobody_else_can(TestApp::spawn().await).await;
}

#[tokio::test]
async fn admitted_fan_holds_with_the_pass_and_nobody_else_can_on_redis() {
    let url = std::env::var("MARQUEE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let app = TestApp::spawn_with(|config| {
        config.redis_url = Some(url);
        config.redis_prefix = format!("test:{}:", ulid::Ulid::new());
    })
    .await;
    admitted_fan_holds_with_the_pass_and_nobody_else_can(app).await;
}

#[tokio::test]
async fn joining_again_keeps_the_place_and_admission_is_pushed_at_once() {
    let app = TestApp::spawn_with(|config| {
        config.queue.update_interval = Duration::from_millis(200);
    })
    .await;
    // One fan a second: the first goes straight through, the second waits about a second.
    let room = on_sale_with_room(app, json!({"enabled": true, "admit_per_minute": 60})).await;
    let (ann, _) = room.app.register("fan").await;
    let (bob, _) = room.app.register("fan").await;
    let first = room.join(&ann).await.expect(StatusCode::CREATED);
    assert_eq!(first["status"], "admitted", "{first}");
    let joined = room.join(&bob).await.expect(StatusCode::CREATED);
    let again = room.join(&bob).await.expect(StatusCode::CREATED);
    assert_eq!(token_of(&joined), token_of(&again), "one place per account");
    if joined["status"] == "waiting" {
        assert_eq!(joined["position"], 1);
        assert!(
            joined["eta_seconds"].as_u64().is_some_and(|eta| eta <= 2),
            "{joined}"
        );
    }

    // Bob listens on his queue channel; the admission arrives with the pass.
    let admitted = room.pushed_admission(&token_of(&joined)).await;
    let pass = admitted["data"]["pass"]
        .as_str()
        .expect("pass on the channel");
    room.hold_with_pass(&bob, Some(pass), 0)
        .await
        .expect(StatusCode::CREATED);
    room.app.stop().await;
}

#[tokio::test]
async fn the_organizer_sees_pauses_and_ends_the_room() {
    let room = on_sale_with_room(
        TestApp::spawn().await,
        json!({"enabled": true, "admit_per_minute": 1}),
    )
    .await;
    let before = room
        .app
        .get(
            &format!("/api/v1/events/{}/queue", room.event_id),
            Some(&room.organizer),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(before["state"], "not_started");
    let mut fans = Vec::new();
    for _ in 0..3 {
        let (fan, _) = room.app.register("fan").await;
        let place = room.join(&fan).await.expect(StatusCode::CREATED);
        fans.push((fan, token_of(&place)));
    }
    let paused = room.control("pause").await;
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["waiting"], 2, "one went straight through: {paused}");
    assert_eq!(paused["admitted_total"], 1);
    // A fan cannot see or steer the room.
    let (fan, _) = &fans[0];
    room.app
        .get(
            &format!("/api/v1/events/{}/queue", room.event_id),
            Some(fan),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    room.app
        .post(
            &format!("/api/v1/events/{}/queue/end", room.event_id),
            Some(fan),
            json!({}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Ending lets everyone through; holds need no pass any more.
    let ended = room.control("end").await;
    assert_eq!(ended["state"], "ended");
    let (last, last_token) = &fans[2];
    assert_eq!(room.place(last_token).await["status"], "admitted");
    room.hold_with_pass(last, None, 0)
        .await
        .expect(StatusCode::CREATED);
    let resumed = room.control("resume").await;
    assert_eq!(resumed["state"], "active");
    room.hold_with_pass(&fans[1].0, None, 1)
        .await
        .expect_error(StatusCode::FORBIDDEN, "queue_required");
    room.app.stop().await;
}

#[tokio::test]
async fn fans_who_stop_polling_lose_their_place() {
    let app = TestApp::spawn_with(|config| {
        config.queue_timings.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let room = on_sale_with_room(app, json!({"enabled": true, "admit_per_minute": 1})).await;
    let (ann, _) = room.app.register("fan").await;
    let (bob, _) = room.app.register("fan").await;
    let (cat, _) = room.app.register("fan").await;
    room.join(&ann).await.expect(StatusCode::CREATED);
    let bob_token = token_of(&room.join(&bob).await.expect(StatusCode::CREATED));
    let cat_token = token_of(&room.join(&cat).await.expect(StatusCode::CREATED));
    // Cat keeps polling (the pause between polls is Cat's polling pace, well inside the 500 ms
    // idle timeout: it is what keeps Cat's place); Bob goes quiet and is swept.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let cat_place = room.place(&cat_token).await;
        if cat_place["position"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{cat_place}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob_place = room.place(&bob_token).await;
    assert_eq!(bob_place["status"], "expired");
    assert!(bob_place["position"].is_null());
    // Joining again queues at the back with a new token.
    let back = room.join(&bob).await.expect(StatusCode::CREATED);
    assert_ne!(token_of(&back), bob_token);
    assert_eq!(back["position"], 2);
    room.app.stop().await;
}

#[tokio::test]
async fn bad_queue_requests_get_precise_errors() {
    let app = TestApp::spawn_with(|config| {
        config.queue.joins_per_ip_per_minute = 4;
    })
    .await;
    let room = on_sale_with_room(app, json!({"enabled": true})).await;
    let (fan, _) = room.app.register("fan").await;
    let app = &room.app;

    // Not signed in; unknown event; an event without a room.
    app.post(
        &format!("/api/v1/events/{}/queue", room.event_id),
        None,
        json!({}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.post(
        "/api/v1/events/01J0000000000000000000000Z/queue",
        Some(&fan),
        json!({}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    let plain = crate::holds::on_sale(TestApp::spawn().await).await;
    let (plain_fan, _) = plain.app.register("fan").await;
    plain
        .app
        .post(
            &format!("/api/v1/events/{}/queue", plain.event_id),
            Some(&plain_fan),
            json!({}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "waiting_room_disabled");
    plain.app.stop().await;

    // Joining long before the on-sale.
    let venue = app.create_venue(&room.organizer).await;
    let later = app
        .create_event(&room.organizer, venue["id"].as_str().expect("id"))
        .await;
    let later_id = later["id"].as_str().expect("id");
    app.post(
        &format!("/api/v1/events/{later_id}/publish"),
        Some(&room.organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let early = app
        .post(
            &format!("/api/v1/events/{later_id}/queue"),
            Some(&fan),
            json!({}),
        )
        .await;
    early.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "queue_not_open");
    assert_eq!(early.body["error"]["joinable_from"], "2031-01-15T09:30:00Z");

    // Tokens: malformed, forged (signed with another key), well formed but never issued.
    for malformed in ["x", "not-a-token", &"A".repeat(47)] {
        app.get(&format!("/api/v1/queue/{malformed}"), None)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    }
    let event = ulid::Ulid::from_string(&room.event_id).expect("ulid");
    let forged =
        marquee_waitroom::RoomSigner::new(b"some other secret of 32 bytes!!!").token(event, 0);
    app.get(&format!("/api/v1/queue/{forged}"), None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.request(
        Method::DELETE,
        &format!("/api/v1/queue/{forged}"),
        None,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");

    // Settings are validated.
    let mut body = event_body(venue["id"].as_str().expect("id"));
    body["waiting_room"] = json!({"enabled": true, "admit_per_minute": 0, "max_active": -1});
    let refused = app
        .post("/api/v1/events", Some(&room.organizer), body)
        .await;
    refused.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    let fields = refused.field_names();
    assert!(
        fields.contains(&"waiting_room.admit_per_minute".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"waiting_room.max_active".to_string()),
        "{fields:?}"
    );

    // Joins per IP are limited (4 a minute here; one was spent above on the early join).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (fan, _) = app.register("fan").await;
        statuses.push(room.join(&fan).await);
    }
    let limited = statuses.last().expect("responses");
    limited.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.headers.get("retry-after").is_some());
    room.app.stop().await;
}

#[tokio::test]
async fn the_organizer_is_told_the_room_figures_on_their_own_channel() {
    let room = on_sale_with_room(
        TestApp::spawn().await,
        json!({"enabled": true, "admit_per_minute": 1}),
    )
    .await;
    let me = room
        .app
        .get("/api/v1/me", Some(&room.organizer))
        .await
        .expect(StatusCode::OK);
    let channel = format!("user:{}", me["id"].as_str().expect("id"));
    for _ in 0..3 {
        let (fan, _) = room.app.register("fan").await;
        room.join(&fan).await.expect(StatusCode::CREATED);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut since = 0;
    loop {
        let polled = room
            .app
            .get(
                &format!("/api/v1/push/poll?channel={channel}&since={since}&timeout_s=5"),
                Some(&room.organizer),
            )
            .await
            .expect(StatusCode::OK);
        let messages = polled.as_array().cloned().unwrap_or_default();
        let latest = messages
            .iter()
            .rev()
            .find(|message| message["type"] == "queue.stats");
        if let Some(stats) = latest {
            assert_eq!(stats["data"]["event_id"], room.event_id.as_str());
            if stats["data"]["waiting"] == 2 {
                assert_eq!(stats["data"]["admitted_total"], 1);
                assert_eq!(stats["data"]["state"], "active");
                break;
            }
        }
        if let Some(last) = messages.last() {
            since = last["offset"].as_u64().expect("offset");
        }
        assert!(tokio::time::Instant::now() < deadline, "no figures pushed");
    }
    room.app.stop().await;
}
