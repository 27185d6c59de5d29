//! Venues and seat maps: who may create them, what a valid map is, what comes back.

use crate::support::{venue_body, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn an_organizer_creates_a_venue_with_an_id_for_every_seat() {
    let app = TestApp::spawn().await;
    let (organizer, organizer_id) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    assert_eq!(venue["owner_id"], organizer_id.as_str());
    assert_eq!(venue["capacity"], 542);
    let sections = venue["sections"].as_array().expect("sections");
    assert_eq!(sections[0]["kind"], "reserved");
    assert_eq!(sections[1]["kind"], "general_admission");
    assert_eq!(sections[1]["capacity"], 500);
    let rows = sections[0]["rows"].as_array().expect("rows");
    assert_eq!(rows[0]["label"], "A");
    assert_eq!(rows[0]["seats"].as_array().expect("seats").len(), 20);
    assert_eq!(rows[1]["seats"].as_array().expect("seats").len(), 22);
    assert_eq!(rows[1]["seats"][21]["number"], 22);
    let ids: HashSet<&str> = rows
        .iter()
        .flat_map(|row| row["seats"].as_array().into_iter().flatten())
        .filter_map(|seat| seat["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 42, "every seat has its own id");

    let id = venue["id"].as_str().expect("id");
    let read = app
        .get(&format!("/api/v1/venues/{id}"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(read, venue);
    app.stop().await;
}

#[tokio::test]
async fn only_organizers_and_admins_create_venues() {
    let app = TestApp::spawn().await;
    let (fan, _) = app.register("fan").await;
    app.post("/api/v1/venues", Some(&fan), venue_body())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.post("/api/v1/venues", None, venue_body())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_venue_names_each_bad_field() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (with(venue_body(), "lat", json!(91.0)), &["lat"]),
        (with(venue_body(), "lon", json!(-180.5)), &["lon"]),
        (with(venue_body(), "lat", json!("north")), &["lat"]),
        (
            with(venue_body(), "country", json!("Britain")),
            &["country"],
        ),
        (with(venue_body(), "name", json!("")), &["name"]),
        (with(venue_body(), "sections", json!([])), &["sections"]),
        (
            with(
                venue_body(),
                "sections",
                json!([{"name": "S", "rows": [{"label": "A", "seats": 0}, {"label": "B", "seats": 1001}]}]),
            ),
            &["sections[0].rows[0].seats", "sections[0].rows[1].seats"],
        ),
        (
            with(
                venue_body(),
                "sections",
                json!([{"name": "S", "rows": [{"label": "A", "seats": 5}], "capacity": 10}]),
            ),
            &["sections[0]"],
        ),
        (
            with(venue_body(), "sections", json!([{"name": "S"}])),
            &["sections[0]"],
        ),
        (
            with(
                venue_body(),
                "sections",
                json!([{"name": "S", "capacity": 5}, {"name": "s", "capacity": 5}]),
            ),
            &["sections[1].name"],
        ),
    ];
    for (body, fields) in cases {
        let response = app
            .post("/api/v1/venues", Some(&organizer), body.clone())
            .await;
        response.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert_eq!(response.field_names(), fields.to_vec(), "body: {body}");
    }
    let mut missing = venue_body();
    missing.as_object_mut().expect("object").remove("name");
    let response = app.post("/api/v1/venues", Some(&organizer), missing).await;
    response.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(response.field_names(), vec!["name"]);
    app.stop().await;
}

#[tokio::test]
async fn a_venue_holds_at_most_100000_seats() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let rows: Vec<Value> = (0..101)
        .map(|index| json!({"label": format!("R{index}"), "seats": 1000}))
        .collect();
    let too_big = with(
        venue_body(),
        "sections",
        json!([{"name": "Bowl", "rows": rows}]),
    );
    let response = app.post("/api/v1/venues", Some(&organizer), too_big).await;
    response.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(response.field_names(), vec!["sections"]);

    let rows: Vec<Value> = (0..100)
        .map(|index| json!({"label": format!("R{index}"), "seats": 1000}))
        .collect();
    let largest = with(
        venue_body(),
        "sections",
        json!([{"name": "Bowl", "rows": rows}]),
    );
    let venue = app
        .post("/api/v1/venues", Some(&organizer), largest)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(venue["capacity"], 100_000);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_venue_is_not_found() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/venues/01ARZ3NDEKTSV4RRFFQ69G5FAV", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn organizers_list_their_own_venues_in_pages() {
    let app = TestApp::spawn().await;
    let (mine, _) = app.register("organizer").await;
    let (theirs, _) = app.register("organizer").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.create_venue(&mine).await["id"].clone());
        app.create_venue(&theirs).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/venues?limit=2".to_string();
    loop {
        let page = app.get(&path, Some(&mine)).await.expect(StatusCode::OK);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|venue| venue["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/venues?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, created);

    for bad in ["limit=0", "limit=101", "limit=ten", "cursor=%%%"] {
        let response = app.get(&format!("/api/v1/venues?{bad}"), Some(&mine)).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            response.body
        );
    }
    app.stop().await;
}
