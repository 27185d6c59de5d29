//! Events: creation rules, the lifecycle, visibility of drafts, patches, seats and lists.

use crate::support::{event_body, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Fixture {
    app: TestApp,
    organizer: String,
    venue_id: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    Fixture {
        venue_id: venue["id"].as_str().expect("id").to_string(),
        app,
        organizer,
    }
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn an_organizer_creates_a_draft() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let event = app.create_event(&organizer, &venue_id).await;
    assert_eq!(event["status"], "draft");
    assert_eq!(event["version"], 1);
    assert_eq!(event["venue"]["city"], "London");
    assert_eq!(event["min_price_cents"], 6500);
    assert_eq!(event["currency"], "GBP");
    assert_eq!(event["tags"], json!(["metal", "rock"]));
    assert_eq!(event["waiting_room"]["enabled"], true);
    assert_eq!(event["limits"]["max_seats_per_order"], 8);
    assert_eq!(event["starts_at"], "2031-06-01T19:00:00Z");
    app.stop().await;
}

#[tokio::test]
async fn every_section_must_be_priced_exactly_once() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let tiers = |tiers: Value| {
        let mut body = event_body(&venue_id);
        body["price_tiers"] = tiers;
        body
    };
    let cases = [
        (
            json!([{"name": "Stalls", "price_cents": 8900, "currency": "GBP", "sections": ["Stalls"]}]),
            "section_unpriced",
        ),
        (
            json!([
                {"name": "All", "price_cents": 8900, "currency": "GBP", "sections": ["Stalls", "Standing"]},
                {"name": "Standing", "price_cents": 6500, "currency": "GBP", "sections": ["Standing"]}
            ]),
            "section_priced_twice",
        ),
        (
            json!([{"name": "All", "price_cents": 8900, "currency": "GBP", "sections": ["Stalls", "Standing", "Roof"]}]),
            "unknown_section",
        ),
        (
            json!([
                {"name": "Stalls", "price_cents": 8900, "currency": "GBP", "sections": ["Stalls"]},
                {"name": "Standing", "price_cents": 6500, "currency": "EUR", "sections": ["Standing"]}
            ]),
            "mixed_currencies",
        ),
    ];
    for (price_tiers, reason) in cases {
        let response = app
            .post("/api/v1/events", Some(&organizer), tiers(price_tiers))
            .await;
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_price_tiers");
        assert_eq!(response.body["error"]["reason"], reason);
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_event_fields_are_named() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let with = |key: &str, value: Value| {
        let mut body = event_body(&venue_id);
        body[key] = value;
        body
    };
    let cases = [
        (
            with("ends_at", json!("2031-06-01T18:00:00Z")),
            vec!["ends_at"],
        ),
        (with("starts_at", json!("next tuesday")), vec!["starts_at"]),
        (
            with("on_sale_at", json!("2031-07-01T00:00:00Z")),
            vec!["on_sale_at"],
        ),
        (with("title", json!("")), vec!["title"]),
        (with("category", json!("Rock & Roll!")), vec!["category"]),
        (
            with("limits", json!({"max_seats_per_order": 0})),
            vec!["limits.max_seats_per_order"],
        ),
        (
            with(
                "waiting_room",
                json!({"enabled": true, "pass_ttl_seconds": 5}),
            ),
            vec!["waiting_room.pass_ttl_seconds"],
        ),
        (
            with(
                "price_tiers",
                json!([{"name": "X", "price_cents": -1, "currency": "pounds", "sections": ["Stalls"]}]),
            ),
            vec!["price_tiers[0].currency", "price_tiers[0].price_cents"],
        ),
        (with("price_tiers", json!([])), vec!["price_tiers"]),
        // The end of chrono's range once panicked on `starts_at + 3h` (found by fuzzing).
        (
            {
                let mut body = with("starts_at", json!("+262142-12-31T23:59:59Z"));
                body.as_object_mut().expect("object").remove("ends_at");
                body
            },
            vec!["ends_at", "starts_at"],
        ),
    ];
    for (body, fields) in cases {
        let response = app
            .post("/api/v1/events", Some(&organizer), body.clone())
            .await;
        response.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert_eq!(response.field_names(), fields, "body: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn events_are_created_only_at_your_own_known_venue() {
    let Fixture {
        app,
        organizer: _,
        venue_id,
    } = fixture().await;
    let (other, _) = app.register("organizer").await;
    app.post("/api/v1/events", Some(&other), event_body(&venue_id))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.post(
        "/api/v1/events",
        Some(&other),
        event_body("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    let (fan, _) = app.register("fan").await;
    app.post("/api/v1/events", Some(&fan), event_body(&venue_id))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn a_draft_is_visible_only_to_its_owner_until_published() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let id = id_of(&app.create_event(&organizer, &venue_id).await);
    let path = format!("/api/v1/events/{id}");
    let (fan, _) = app.register("fan").await;
    let (other, _) = app.register("organizer").await;

    app.get(&path, Some(&organizer))
        .await
        .expect(StatusCode::OK);
    for token in [None, Some(fan.as_str()), Some(other.as_str())] {
        app.get(&path, token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        app.get(&format!("{path}/seats"), token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    // Another organizer cannot even learn that the draft exists by trying to change it.
    app.patch(&path, Some(&other), json!({"title": "Mine now"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post(&format!("{path}/publish"), Some(&other), json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let published = app
        .post(&format!("{path}/publish"), Some(&organizer), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(published["status"], "published");
    assert_eq!(published["version"], 2);
    let public = app.get(&path, None).await.expect(StatusCode::OK);
    assert_eq!(public["status"], "published");
    // Once public, a stranger's change is forbidden rather than hidden.
    app.patch(&path, Some(&other), json!({"title": "Mine now"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn the_lifecycle_only_moves_forward() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let id = id_of(&app.create_event(&organizer, &venue_id).await);
    let path = format!("/api/v1/events/{id}");
    let token = Some(organizer.as_str());
    app.post(&format!("{path}/publish"), token, json!({}))
        .await
        .expect(StatusCode::OK);
    app.post(&format!("{path}/publish"), token, json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_state");
    let cancelled = app
        .post(&format!("{path}/cancel"), token, json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    app.post(&format!("{path}/cancel"), token, json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_state");
    app.post(&format!("{path}/publish"), token, json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_state");
    app.patch(&path, token, json!({"title": "Back from the dead"}))
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_state");
    let public = app.get(&path, None).await.expect(StatusCode::OK);
    assert_eq!(public["status"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let created = app.create_event(&organizer, &venue_id).await;
    let path = format!("/api/v1/events/{}", id_of(&created));
    let token = Some(organizer.as_str());
    let patched = app
        .patch(
            &path,
            token,
            json!({"title": "Metallica — Night Two", "tags": ["Thrash"]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["title"], "Metallica — Night Two");
    assert_eq!(patched["tags"], json!(["thrash"]));
    assert_eq!(patched["description"], created["description"]);
    assert_eq!(patched["price_tiers"], created["price_tiers"]);
    assert_eq!(patched["version"], 2);

    let backwards = app
        .patch(&path, token, json!({"ends_at": "2031-05-01T00:00:00Z"}))
        .await;
    backwards.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(backwards.field_names(), vec!["ends_at"]);
    app.patch(&path, token, json!({"title": 42}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    app.patch(
        &path,
        token,
        json!({"price_tiers": [{"name": "All", "price_cents": 1, "currency": "GBP", "sections": ["Stalls"]}]}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_price_tiers");

    app.post(&format!("{path}/publish"), token, json!({}))
        .await
        .expect(StatusCode::OK);
    app.patch(
        &path,
        token,
        json!({"price_tiers": [{"name": "All", "price_cents": 1, "currency": "GBP", "sections": ["Stalls", "Standing"]}]}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "invalid_state");
    let renamed = app
        .patch(
            &path,
            token,
            json!({"description": "Now with pyrotechnics."}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed["status"], "published");
    app.stop().await;
}

#[tokio::test]
async fn the_seat_map_lists_every_seat_with_its_price() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let id = id_of(&app.create_event(&organizer, &venue_id).await);
    let venue = app
        .get(&format!("/api/v1/venues/{venue_id}"), None)
        .await
        .expect(StatusCode::OK);
    let seats = app
        .get(&format!("/api/v1/events/{id}/seats"), Some(&organizer))
        .await
        .expect(StatusCode::OK);
    assert_eq!(seats["event_id"], id.as_str());
    assert!(seats["version"].as_i64().is_some());
    let list = seats["seats"].as_array().expect("seats");
    assert_eq!(list.len(), 42);
    assert_eq!(
        list[0]["id"],
        venue["sections"][0]["rows"][0]["seats"][0]["id"]
    );
    assert_eq!(list[0]["section"], "Stalls");
    assert_eq!(list[0]["row"], "A");
    assert_eq!(list[0]["number"], 1);
    assert_eq!(list[0]["tier"], "Stalls");
    assert_eq!(list[0]["price_cents"], 8900);
    assert!(list.iter().all(|seat| seat["status"] == "available"));
    assert_eq!(
        seats["general_admission"],
        json!([{"section": "Standing", "capacity": 500, "available": 500, "tier": "Standing", "price_cents": 6500}])
    );
    app.stop().await;
}

#[tokio::test]
async fn lists_show_the_public_only_what_is_published() {
    let Fixture {
        app,
        organizer,
        venue_id,
    } = fixture().await;
    let token = Some(organizer.as_str());
    let mut published = Vec::new();
    for index in 0..4 {
        let id = id_of(&app.create_event(&organizer, &venue_id).await);
        if index % 2 == 0 {
            app.post(&format!("/api/v1/events/{id}/publish"), token, json!({}))
                .await
                .expect(StatusCode::OK);
            published.push(Value::String(id));
        }
    }
    let public = app.get("/api/v1/events", None).await.expect(StatusCode::OK);
    let ids: Vec<Value> = public["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|event| event["id"].clone())
        .collect();
    assert_eq!(ids, published);
    assert!(public["next_cursor"].is_null());

    let mine = app
        .get("/api/v1/events?mine=true", token)
        .await
        .expect(StatusCode::OK);
    assert_eq!(mine["items"].as_array().expect("items").len(), 4);
    let drafts = app
        .get("/api/v1/events?mine=true&status=draft", token)
        .await
        .expect(StatusCode::OK);
    assert_eq!(drafts["items"].as_array().expect("items").len(), 2);

    app.get("/api/v1/events?mine=true", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get("/api/v1/events?status=draft", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    app.get("/api/v1/events?status=sideways&mine=true", token)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_is_not_found() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV/seats", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}
