//! Holds and orders over HTTP: the happy path, every refusal, lapse, fencing, idempotency.

use crate::support::{event_body, Response, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

pub struct OnSale {
    pub app: TestApp,
    pub organizer: String,
    pub event_id: String,
    pub seat_ids: Vec<String>,
}

/// A published event on sale now at the contract's example venue (42 seats, 500 standing).
pub async fn on_sale(app: TestApp) -> OnSale {
    on_sale_with_room(app, json!({"enabled": false})).await
}

/// The same, with the waiting room described by `waiting_room`.
pub async fn on_sale_with_room(app: TestApp, waiting_room: Value) -> OnSale {
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    let seat_ids = venue["sections"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    let mut body = event_body(venue["id"].as_str().expect("id"));
    body.as_object_mut().expect("object").remove("on_sale_at");
    body["waiting_room"] = waiting_room;
    let event = app
        .post("/api/v1/events", Some(&organizer), body)
        .await
        .expect(StatusCode::CREATED);
    let event_id = event["id"].as_str().expect("id").to_string();
    app.post(
        &format!("/api/v1/events/{event_id}/publish"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    OnSale {
        app,
        organizer,
        event_id,
        seat_ids,
    }
}

impl OnSale {
    pub async fn hold(&self, token: &str, body: Value) -> Response {
        self.app
            .post(
                &format!("/api/v1/events/{}/holds", self.event_id),
                Some(token),
                body,
            )
            .await
    }

    pub async fn order(&self, token: &str, hold_id: &str, card: &str) -> Response {
        self.app
            .post(
                "/api/v1/orders",
                Some(token),
                json!({"hold_id": hold_id, "payment": {"method": "card", "token": card}}),
            )
            .await
    }

    pub async fn seat_statuses(&self) -> Value {
        self.app
            .get(&format!("/api/v1/events/{}/seats", self.event_id), None)
            .await
            .expect(StatusCode::OK)
    }

    pub async fn status_of(&self, seat: &str) -> String {
        let seats = self.seat_statuses().await;
        seats["seats"]
            .as_array()
            .expect("seats")
            .iter()
            .find(|entry| entry["id"] == seat)
            .and_then(|entry| entry["status"].as_str())
            .unwrap_or("missing")
            .to_string()
    }

    /// Polls the seat map until `seat` has `status`; the hold TTL drives the change.
    pub async fn await_status(&self, seat: &str, status: &str) {
        for _ in 0..200 {
            if self.status_of(seat).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("seat {seat} never became {status}");
    }
}

#[tokio::test]
async fn a_fan_holds_seats_and_buys_them() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let seats = &sale.seat_ids[..2];
    let hold = sale
        .hold(&fan, json!({"seat_ids": seats}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(hold["seat_ids"], json!(seats));
    assert!(hold["fencing_token"].as_u64().is_some());
    assert!(hold["expires_at"].is_string());
    let before = sale.seat_statuses().await;
    assert_eq!(sale.status_of(&seats[0]).await, "held");
    assert!(before["version"].as_i64().expect("version") > 0);

    let hold_id = hold["id"].as_str().expect("id");
    let order = sale
        .order(&fan, hold_id, "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total_cents"], 2 * 8900);
    assert_eq!(order["currency"], "GBP");
    let tickets = order["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0]["section"], "Stalls");
    assert!(tickets[0]["code"].as_str().expect("code").len() > 30);
    assert_eq!(sale.status_of(&seats[0]).await, "sold");
    // The change stream tells followers (push, search) the same story, in order.
    let store = sale
        .app
        .server
        .as_ref()
        .expect("server")
        .state
        .store
        .clone();
    let seat_changes: Vec<(String, Value)> = store
        .read_changes(0, 1000)
        .await
        .expect("changes")
        .into_iter()
        .filter(|change| {
            change.entity_id == sale.event_id && change.kind.as_str().starts_with("seats.")
        })
        .map(|change| (change.kind.as_str().to_string(), change.payload))
        .collect();
    assert_eq!(seat_changes.len(), 2, "{seat_changes:?}");
    assert_eq!(seat_changes[0].0, "seats.held");
    assert_eq!(seat_changes[0].1["status"], "held");
    assert_eq!(seat_changes[1].0, "seats.sold");
    assert_eq!(seat_changes[1].1["status"], "sold");
    assert_eq!(seat_changes[1].1["seat_ids"], json!(seats));
    let after = sale.seat_statuses().await;
    assert!(after["version"].as_i64() > before["version"].as_i64());

    let mine = sale
        .app
        .get("/api/v1/me/orders", Some(&fan))
        .await
        .expect(StatusCode::OK);
    assert_eq!(mine["items"][0]["id"], order["id"]);
    let order_path = format!("/api/v1/orders/{}", order["id"].as_str().expect("id"));
    sale.app
        .get(&order_path, Some(&fan))
        .await
        .expect(StatusCode::OK);
    sale.app
        .get(&order_path, Some(&sale.organizer))
        .await
        .expect(StatusCode::OK);
    let (stranger, _) = sale.app.register("fan").await;
    sale.app
        .get(&order_path, Some(&stranger))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // Sold seats are never held again.
    let again = sale.hold(&stranger, json!({"seat_ids": [seats[1]]})).await;
    again.expect_error(StatusCode::CONFLICT, "seats_unavailable");
    assert_eq!(again.body["error"]["seat_ids"], json!([seats[1]]));
    // A hold is bought once.
    sale.order(&fan, hold_id, "tok_visa")
        .await
        .expect_error(StatusCode::CONFLICT, "hold_expired");
    sale.app.stop().await;
}

#[tokio::test]
async fn held_seats_are_refused_to_others_and_named() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    sale.hold(
        &ann,
        json!({"seat_ids": [sale.seat_ids[0], sale.seat_ids[1]]}),
    )
    .await
    .expect(StatusCode::CREATED);
    let refused = sale
        .hold(
            &bob,
            json!({"seat_ids": [sale.seat_ids[1], sale.seat_ids[2]]}),
        )
        .await;
    refused.expect_error(StatusCode::CONFLICT, "seats_unavailable");
    assert_eq!(refused.body["error"]["seat_ids"], json!([sale.seat_ids[1]]));
    // All or nothing: seat 2 was not left held.
    assert_eq!(sale.status_of(&sale.seat_ids[2]).await, "available");
    sale.hold(&ann, json!({"seat_ids": [sale.seat_ids[5]]}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    sale.app.stop().await;
}

#[tokio::test]
async fn bad_hold_requests_get_precise_errors() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let other_venue = sale.app.create_venue(&sale.organizer).await;
    let foreign_seat = other_venue["sections"][0]["rows"][0]["seats"][0]["id"].clone();
    let ten_thousand: Vec<String> = (0..10_000).map(|i| format!("seat-{i}")).collect();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"seat_ids": ["no-such-seat"]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"seat_ids": [foreign_seat]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"seat_ids": [sale.seat_ids[0], sale.seat_ids[0]]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"seat_ids": []}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"seat_ids": ten_thousand}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"quantity": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"quantity": -3}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"quantity": 9}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_exceeded",
        ),
        (
            json!({"seat_ids": &sale.seat_ids[..9]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_exceeded",
        ),
        (
            json!({"general_admission": {"section": "Stalls", "quantity": 2}}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"quantity": 2, "section": "Standing"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_input"),
        (
            json!({"quantity": 2, "seat_ids": [sale.seat_ids[0]]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ];
    for (body, status, code) in cases {
        let response = sale.hold(&fan, body.clone()).await;
        assert_eq!(response.status, status, "{body}: {}", response.body);
        assert_eq!(response.code(), code, "{body}");
    }
    let seats = sale.seat_statuses().await;
    assert!(seats["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .all(|seat| seat["status"] == "available"));
    sale.app.stop().await;
}

#[tokio::test]
async fn drafts_cancelled_and_future_sales_refuse_holds() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let (fan, _) = app.register("fan").await;
    let venue = app.create_venue(&organizer).await;
    let venue_id = venue["id"].as_str().expect("id");
    let seat = venue["sections"][0]["rows"][0]["seats"][0]["id"].clone();
    let future = app.create_event(&organizer, venue_id).await;
    let id = future["id"].as_str().expect("id");
    let path = format!("/api/v1/events/{id}/holds");
    app.post(&path, Some(&fan), json!({"seat_ids": [seat]}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post(&path, Some(&organizer), json!({"seat_ids": [seat]}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "not_on_sale");
    app.post(
        &format!("/api/v1/events/{id}/publish"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    app.post(&path, Some(&fan), json!({"seat_ids": [seat]}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "not_on_sale");
    app.post(
        &format!("/api/v1/events/{id}/cancel"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    app.post(&path, Some(&fan), json!({"seat_ids": [seat]}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "not_on_sale");
    app.post(&path, None, json!({"seat_ids": [seat]}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn best_available_and_general_admission() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let best = sale
        .hold(&ann, json!({"quantity": 3, "section": "Stalls"}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        best["seat_ids"],
        json!(&sale.seat_ids[..3]),
        "adjacent, front row first"
    );
    let standing = sale
        .hold(
            &bob,
            json!({"general_admission": {"section": "Standing", "quantity": 4}}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(standing["general_admission"]["quantity"], 4);
    let seats = sale.seat_statuses().await;
    assert_eq!(seats["general_admission"][0]["available"], 496);
    sale.order(&bob, standing["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    let seats = sale.seat_statuses().await;
    assert_eq!(seats["general_admission"][0]["available"], 496);
    sale.app.stop().await;
}

#[tokio::test]
async fn release_and_extend_follow_the_rules() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let (stranger, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let path = format!("/api/v1/holds/{}", hold["id"].as_str().expect("id"));
    sale.app
        .get(&path, Some(&stranger))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    sale.app
        .request(Method::DELETE, &path, Some(&stranger), None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let extended = sale
        .app
        .post(&format!("{path}/extend"), Some(&fan), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(extended["extended"], true);
    sale.app
        .post(&format!("{path}/extend"), Some(&fan), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "already_extended");
    let released = sale
        .app
        .request(Method::DELETE, &path, Some(&fan), None)
        .await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "available");
    sale.app
        .request(Method::DELETE, &path, Some(&fan), None)
        .await
        .expect_error(StatusCode::CONFLICT, "hold_expired");
    let read = sale.app.get(&path, Some(&fan)).await.expect(StatusCode::OK);
    assert_eq!(read["status"], "released");
    // Released: the fan may hold again.
    sale.hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_declined_card_keeps_the_hold() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let id = hold["id"].as_str().expect("id");
    sale.order(&fan, id, "tok_declined")
        .await
        .expect_error(StatusCode::PAYMENT_REQUIRED, "payment_declined");
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "held");
    sale.order(&fan, id, "not-a-token")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    sale.order(&fan, id, "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    sale.app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_result() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let body = json!({"hold_id": hold["id"], "payment": {"method": "card", "token": "tok_visa"}});
    let send = |body: Value| {
        sale.app
            .client
            .post(format!("{}/api/v1/orders", sale.app.url))
            .bearer_auth(&fan)
            .header("idempotency-key", "order-attempt-1")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.expect("sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let retry = send(body.clone()).await.expect("sent");
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first["id"]);
    let mut other = body;
    other["payment"]["token"] = json!("tok_mastercard");
    let reused = send(other).await.expect("sent");
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reused: Value = reused.json().await.expect("json");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    let orders = sale
        .app
        .get("/api/v1/me/orders", Some(&fan))
        .await
        .expect(StatusCode::OK);
    assert_eq!(orders["items"].as_array().expect("items").len(), 1);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_retry_whose_first_answer_was_never_recorded_gets_the_order_that_exists() {
    // A node that dies between committing an order and recording its idempotency key leaves
    // the order with no record: the fan's retry (under its key, on another node) finds none.
    // A second key on a bought hold is that retry's situation.
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let body = json!({"hold_id": hold["id"], "payment": {"method": "card", "token": "tok_visa"}});
    let send = |key: &'static str| {
        sale.app
            .client
            .post(format!("{}/api/v1/orders", sale.app.url))
            .bearer_auth(&fan)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("attempt-on-node-a").await.expect("sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let retry = send("attempt-on-node-b").await.expect("sent");
    assert_eq!(retry.status(), StatusCode::CREATED);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first["id"], "the same order, not a second one");
    assert_eq!(retry["tickets"], first["tickets"]);
    let orders = sale
        .app
        .get("/api/v1/me/orders", Some(&fan))
        .await
        .expect(StatusCode::OK);
    assert_eq!(orders["items"].as_array().expect("items").len(), 1);
    // Without a key, buying a bought hold is still the contract's conflict.
    sale.order(&fan, hold["id"].as_str().expect("hold id"), "tok_visa")
        .await
        .expect_error(StatusCode::CONFLICT, "hold_expired");
    sale.app.stop().await;
}

#[tokio::test]
async fn a_hold_lapses_by_itself_and_a_lapsed_holder_is_fenced_out() {
    let app = TestApp::spawn_with(|config| config.hold_ttl = Duration::from_millis(600)).await;
    let sale = on_sale(app).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let seat = sale.seat_ids[0].clone();
    let stale = sale
        .hold(&ann, json!({"seat_ids": [seat]}))
        .await
        .expect(StatusCode::CREATED);
    sale.await_status(&seat, "available").await;
    let read = sale
        .app
        .get(
            &format!("/api/v1/holds/{}", stale["id"].as_str().expect("id")),
            Some(&ann),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(read["status"], "lapsed");
    let fresh = sale
        .hold(&bob, json!({"seat_ids": [seat]}))
        .await
        .expect(StatusCode::CREATED);
    assert!(fresh["fencing_token"].as_u64() > stale["fencing_token"].as_u64());
    // Ann tries to buy with her lapsed hold, at the same moment Bob buys with his.
    let (ann_order, bob_order) = tokio::join!(
        sale.order(&ann, stale["id"].as_str().expect("id"), "tok_visa"),
        sale.order(&bob, fresh["id"].as_str().expect("id"), "tok_visa"),
    );
    ann_order.expect_error(StatusCode::CONFLICT, "hold_expired");
    bob_order.expect(StatusCode::CREATED);
    assert_eq!(sale.status_of(&seat).await, "sold");
    sale.app.stop().await;
}

async fn buy(sale: &OnSale, fan: &str, body: Value) -> Value {
    let hold = sale.hold(fan, body).await.expect(StatusCode::CREATED);
    sale.order(fan, hold["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED)
}

#[tokio::test]
async fn a_refund_puts_the_seats_back_on_sale() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let (stranger, _) = sale.app.register("fan").await;
    let order = buy(&sale, &fan, json!({"seat_ids": [sale.seat_ids[0]]})).await;
    let path = format!("/api/v1/orders/{}", order["id"].as_str().expect("id"));
    sale.app
        .post(&format!("{path}/refund"), Some(&stranger), json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let refunded = sale
        .app
        .post(&format!("{path}/refund"), Some(&fan), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "available");
    sale.app
        .post(&format!("{path}/refund"), Some(&fan), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "already_refunded");
    let read = sale.app.get(&path, Some(&fan)).await.expect(StatusCode::OK);
    assert_eq!(read["status"], "refunded", "state derived from the history");
    let history = sale
        .app
        .get(&format!("{path}/history"), Some(&fan))
        .await
        .expect(StatusCode::OK);
    let kinds: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|entry| entry["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["created", "paid", "refunded"]);
    // The refunded seat sells again, to someone else.
    buy(&sale, &stranger, json!({"seat_ids": [sale.seat_ids[0]]})).await;
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "sold");
    sale.app.stop().await;
}

#[tokio::test]
async fn cancelling_an_event_refunds_every_order() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let first = buy(
        &sale,
        &ann,
        json!({"seat_ids": [sale.seat_ids[0], sale.seat_ids[1]]}),
    )
    .await;
    let second = buy(
        &sale,
        &bob,
        json!({"general_admission": {"section": "Standing", "quantity": 3}}),
    )
    .await;
    sale.app
        .post(
            &format!("/api/v1/events/{}/cancel", sale.event_id),
            Some(&sale.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    for (order, fan) in [(&first, &ann), (&second, &bob)] {
        let read = sale
            .app
            .get(
                &format!("/api/v1/orders/{}", order["id"].as_str().expect("id")),
                Some(fan),
            )
            .await
            .expect(StatusCode::OK);
        assert_eq!(read["status"], "refunded");
    }
    let seats = sale.seat_statuses().await;
    assert!(seats["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .all(|seat| seat["status"] == "available"));
    assert_eq!(seats["general_admission"][0]["available"], 500);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_hold_cannot_be_paid_once_its_event_is_cancelled() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    sale.app
        .post(
            &format!("/api/v1/events/{}/cancel", sale.event_id),
            Some(&sale.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    sale.order(&fan, hold["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "not_on_sale");
    let orders = sale
        .app
        .get("/api/v1/me/orders", Some(&fan))
        .await
        .expect(StatusCode::OK);
    assert_eq!(orders["items"], json!([]), "no order, no charge: {orders}");
    sale.app.stop().await;
}

#[tokio::test]
async fn a_ticket_checks_in_once_and_forged_codes_never() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let order = buy(&sale, &fan, json!({"seat_ids": [sale.seat_ids[0]]})).await;
    let code = order["tickets"][0]["code"]
        .as_str()
        .expect("code")
        .to_string();
    let path = format!("/api/v1/events/{}/checkin", sale.event_id);
    sale.app
        .post(&path, Some(&fan), json!({"code": code}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let admitted = sale
        .app
        .post(&path, Some(&sale.organizer), json!({"code": code}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(admitted["ticket"]["id"], order["tickets"][0]["id"]);
    assert!(admitted["ticket"]["checked_in_at"].is_string());
    let again = sale
        .app
        .post(&path, Some(&sale.organizer), json!({"code": code}))
        .await;
    again.expect_error(StatusCode::CONFLICT, "already_checked_in");

    let (id, signature) = code.split_once('.').expect("id.signature");
    let mut tampered = signature.to_string();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for forged in [
        format!("{id}.{tampered}"),
        format!("01ARZ3NDEKTSV4RRFFQ69G5FAV.{signature}"),
        "guess".to_string(),
    ] {
        sale.app
            .post(&path, Some(&sale.organizer), json!({"code": forged}))
            .await
            .expect_error(StatusCode::NOT_FOUND, "ticket_not_found");
    }
    let history = sale
        .app
        .get(
            &format!(
                "/api/v1/orders/{}/history",
                order["id"].as_str().expect("id")
            ),
            Some(&fan),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        history.as_array().expect("history").last().expect("entry")["kind"],
        "checked_in"
    );
    sale.app.stop().await;
}

#[tokio::test]
async fn holds_orders_refunds_and_check_in_work_on_postgres() {
    let sale = on_sale(TestApp::spawn_postgres().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let seats = json!([sale.seat_ids[0], sale.seat_ids[1]]);
    let order = buy(&sale, &ann, json!({"seat_ids": seats})).await;
    sale.hold(&bob, json!({"seat_ids": [sale.seat_ids[1]]}))
        .await
        .expect_error(StatusCode::CONFLICT, "seats_unavailable");
    let standing = buy(
        &sale,
        &bob,
        json!({"general_admission": {"section": "Standing", "quantity": 2}}),
    )
    .await;
    assert_eq!(standing["tickets"].as_array().expect("tickets").len(), 2);
    let code = order["tickets"][0]["code"].as_str().expect("code");
    let checkin = format!("/api/v1/events/{}/checkin", sale.event_id);
    sale.app
        .post(&checkin, Some(&sale.organizer), json!({"code": code}))
        .await
        .expect(StatusCode::OK);
    sale.app
        .post(&checkin, Some(&sale.organizer), json!({"code": code}))
        .await
        .expect_error(StatusCode::CONFLICT, "already_checked_in");
    let path = format!("/api/v1/orders/{}", order["id"].as_str().expect("id"));
    sale.app
        .post(&format!("{path}/refund"), Some(&sale.organizer), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "available");
    buy(&sale, &bob, json!({"seat_ids": [sale.seat_ids[0]]})).await;
    let history = sale
        .app
        .get(&format!("{path}/history"), Some(&ann))
        .await
        .expect(StatusCode::OK);
    let kinds: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|entry| entry["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["created", "paid", "checked_in", "refunded"]);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_slow_payment_times_out_and_keeps_the_hold() {
    let app =
        TestApp::spawn_with(|config| config.payment_timeout = Duration::from_millis(200)).await;
    let sale = on_sale(app).await;
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let id = hold["id"].as_str().expect("id");
    let slow = sale.order(&fan, id, "tok_slow").await;
    slow.expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(slow.body["error"]["dependency"], "payments");
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "held");
    sale.order(&fan, id, "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    sale.app.stop().await;
}

#[tokio::test]
async fn a_rush_on_a_seat_map_reads_its_snapshot_once_per_seat_change() {
    let sale = on_sale(TestApp::spawn().await).await;
    let stats = || {
        sale.app
            .server
            .as_ref()
            .expect("server")
            .state
            .seat_maps
            .stats()
    };
    let first = sale.seat_statuses().await;
    let loads = stats().loads;
    let rush = (0..50).map(|_| sale.seat_statuses());
    let maps = futures::future::join_all(rush).await;
    assert!(maps.iter().all(|map| map["version"] == first["version"]));
    assert_eq!(
        stats().loads,
        loads,
        "50 reads of an unchanged map made no load"
    );
    // A change on this node is on the very next read, however fresh the cached copy.
    let (fan, _) = sale.app.register("fan").await;
    sale.hold(&fan, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(sale.status_of(&sale.seat_ids[0]).await, "held");
    assert_eq!(stats().loads, loads + 1, "one load for the new version");
    // The change stream then drops the copy (as it does for changes made on other nodes).
    let state = &sale.app.server.as_ref().expect("server").state;
    let latest = state.store.latest_change().await.expect("latest");
    let mut applied = state.push.applied();
    applied
        .wait_for(|position| *position >= latest)
        .await
        .expect("the change feed runs");
    let after = sale.seat_statuses().await;
    assert!(after["version"].as_i64() > first["version"].as_i64());
    let settled = stats().loads;
    assert!(
        settled <= loads + 2,
        "at most one more load, after the change stream's invalidation: {}",
        settled - loads
    );
    let _ = sale.seat_statuses().await;
    assert_eq!(stats().loads, settled, "then served from the cache again");
    sale.app.stop().await;
}

/// Forgets every recorded idempotent answer, as a node that died between its commit and the
/// record would have.
async fn forget_answers(app: &TestApp) {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", app.data_dir().join("marquee.db").display());
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .expect("the node's database");
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&pool)
        .await
        .expect("delete");
    pool.close().await;
}

#[tokio::test]
async fn a_hold_retried_under_its_key_after_the_answer_was_lost_is_the_same_hold() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (fan, _) = sale.app.register("fan").await;
    let path = format!("/api/v1/events/{}/holds", sale.event_id);
    let body = json!({"general_admission": {"section": "Standing", "quantity": 2}});
    let send = |key: &'static str| {
        let (path, fan, body) = (path.clone(), fan.clone(), body.clone());
        let app = &sale.app;
        async move {
            app.post_with_headers(&path, Some(&fan), &[("idempotency-key", key)], body)
                .await
        }
    };
    let first = send("hold-attempt").await.expect(StatusCode::CREATED);
    forget_answers(&sale.app).await;
    let retry = send("hold-attempt").await.expect(StatusCode::CREATED);
    assert_eq!(retry["id"], first["id"], "the hold the first attempt made");
    assert_eq!(retry["fencing_token"], first["fencing_token"]);
    // Another request (another key) is still one hold too many.
    send("another-request")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    // Once the hold has ended, the same retry is told what became of it, not given a second.
    let hold_id = first["id"].as_str().expect("id");
    let released = sale
        .app
        .request(
            Method::DELETE,
            &format!("/api/v1/holds/{hold_id}"),
            Some(&fan),
            None,
        )
        .await;
    assert!(released.status.is_success(), "{}", released.body);
    forget_answers(&sale.app).await;
    let late = send("hold-attempt").await.expect(StatusCode::CREATED);
    assert_eq!(late["id"], first["id"]);
    assert_eq!(late["status"], "released");
    let seats = sale.seat_statuses().await;
    assert_eq!(
        seats["general_admission"][0]["available"], 500,
        "nothing stays held: {seats}"
    );
    sale.app.stop().await;
}
