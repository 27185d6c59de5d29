//! Discovery over HTTP: what a fan types finds what an organizer published, within moments, and
//! what was cancelled is gone; every bad parameter gets a 400 naming it.

use crate::support::{event_body, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Creates and publishes an event from `body` at the example venue and returns its id.
async fn publish(app: &TestApp, organizer: &str, venue_id: &str, body: Value) -> String {
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
    let _ = venue_id;
    id
}

fn with(venue_id: &str, title: &str, performers: &[&str], category: &str) -> Value {
    let mut body = event_body(venue_id);
    body["title"] = json!(title);
    body["performers"] = json!(performers);
    body["category"] = json!(category);
    body["waiting_room"]["enabled"] = json!(false);
    body
}

/// Polls a search until `done` says its hits are as expected; the index trails the store by a
/// micro-batch, so a test waits for it instead of sleeping a fixed time.
async fn search_until(app: &TestApp, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = app
            .get(&format!("/api/v1/search?{query}"), None)
            .await
            .expect(StatusCode::OK);
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "search {query} never settled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|hit| hit["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn published_is_found_with_a_typo_and_cancelled_is_gone() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    let venue_id = venue["id"].as_str().expect("venue id");

    // A draft is not findable.
    let draft = app.create_event(&organizer, venue_id).await;
    let metallica = publish(
        &app,
        &organizer,
        venue_id,
        with(
            venue_id,
            "Metallica — M72 World Tour",
            &["Metallica"],
            "concert",
        ),
    )
    .await;
    let ballet = publish(
        &app,
        &organizer,
        venue_id,
        with(venue_id, "Swan Lake", &["Royal Ballet"], "theatre"),
    )
    .await;

    // Both published events indexed (they may land in different indexer batches).
    search_until(&app, "sort=date", |body| body["total"] == 2).await;
    let body = search_until(&app, "q=metalica", |body| !ids(body).is_empty()).await;
    assert_eq!(ids(&body), std::slice::from_ref(&metallica));
    assert!(!ids(&body).contains(&draft["id"].as_str().unwrap_or_default().to_string()));
    let hit = &body["hits"][0];
    assert_eq!(hit["title"], "Metallica — M72 World Tour");
    assert_eq!(hit["venue"]["city"], "London");
    assert_eq!(hit["category"], "concert");
    assert_eq!(hit["min_price_cents"], 6500);
    assert_eq!(hit["currency"], "GBP");
    assert!(hit["score"].as_f64().is_some());
    assert!(body["took_ms"].as_f64().is_some());
    assert_eq!(body["facets"]["category"]["concert"], 1);

    // Near the venue, with distance; far away, nothing.
    let near = app
        .get(
            "/api/v1/search?lat=51.5&lon=-0.12&radius_km=25&sort=distance",
            None,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(near["total"], 2);
    let distance = near["hits"][0]["distance_km"].as_f64().expect("distance");
    assert!((4.0..6.0).contains(&distance), "{distance}");
    let far = app
        .get("/api/v1/search?lat=40.7&lon=-74.0&radius_km=100", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(far["total"], 0);

    // Facets count every category; the filter narrows the hits only.
    let theatre = app
        .get("/api/v1/search?category=theatre", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&theatre), std::slice::from_ref(&ballet));
    assert_eq!(theatre["facets"]["category"]["concert"], 1);

    let suggest = app
        .get("/api/v1/search/suggest?q=swa", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(suggest["suggestions"], json!(["Swan Lake"]));

    let similar = app
        .get(&format!("/api/v1/events/{metallica}/similar"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&similar), std::slice::from_ref(&ballet));

    app.post(
        &format!("/api/v1/events/{metallica}/cancel"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    search_until(&app, "q=metallica", |body| body["total"] == 0).await;
    app.get(&format!("/api/v1/events/{metallica}/similar"), None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn an_edit_is_searchable_and_a_restart_resumes_the_index() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let dir = data_dir.path().to_path_buf();
    let configure = |config: &mut marquee::ServerConfig| config.data_dir = dir.clone();
    let app = TestApp::spawn_with(configure).await;
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    let venue_id = venue["id"].as_str().expect("venue id").to_string();
    let id = publish(
        &app,
        &organizer,
        &venue_id,
        with(&venue_id, "Adele Live", &["Adele"], "concert"),
    )
    .await;
    search_until(&app, "q=adele", |body| ids(body) == [id.clone()]).await;
    app.patch(
        &format!("/api/v1/events/{id}"),
        Some(&organizer),
        json!({"title": "Adele — Weekends in Munich"}),
    )
    .await
    .expect(StatusCode::OK);
    search_until(&app, "q=munich", |body| ids(body) == [id.clone()]).await;
    app.stop().await;

    // Mark the stopped node's index: drop the event from it at the same position. A node that
    // rebuilt from the store would bring it back; one that resumes from the commit keeps the
    // mark — which is how this test tells a resume from a rebuild.
    {
        let index = marquee_search::EventIndex::open(&marquee_search::IndexOptions {
            path: Some(dir.join("search")),
            ..marquee_search::IndexOptions::default()
        })
        .expect("open the stopped node's index");
        let position = index.committed_position().expect("position");
        assert!(position > 0, "the node committed its position");
        assert_eq!(index.num_docs(), 1);
        index.delete(std::slice::from_ref(&id)).expect("delete");
        index.commit(position).expect("commit");
    }
    let app = TestApp::spawn_with(|config| config.data_dir = dir.clone()).await;
    // A new event becoming findable shows the indexer is past its start (where a rebuild would
    // have happened); only then does the mark's survival mean anything.
    let second = publish(
        &app,
        &organizer,
        &venue_id,
        with(&venue_id, "Coldplay", &["Coldplay"], "concert"),
    )
    .await;
    search_until(&app, "q=coldplay", |body| ids(body) == [second.clone()]).await;
    let body = app
        .get("/api/v1/search?q=munich", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(body["total"], 0, "resumed, not rebuilt: {body}");
    // And it follows the stream from there: an edit is found.
    app.patch(
        &format!("/api/v1/events/{id}"),
        Some(&organizer),
        json!({"title": "Adele — Weekends in Munich, again"}),
    )
    .await
    .expect(StatusCode::OK);
    search_until(&app, "q=munich", |body| ids(body) == [id.clone()]).await;
    app.stop().await;
    drop(data_dir);
}

#[tokio::test]
async fn pages_follow_the_cursor_without_repeats() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    let venue_id = venue["id"].as_str().expect("venue id");
    let mut published = Vec::new();
    for i in 0..7 {
        let mut body = with(venue_id, &format!("Jazz Night {i}"), &["Trio"], "concert");
        body["starts_at"] = json!(format!("2031-05-2{}T19:00:00Z", 1 + i % 3));
        published.push(publish(&app, &organizer, venue_id, body).await);
    }
    search_until(&app, "q=jazz", |body| body["total"] == 7).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/search?limit=3&cursor={cursor}"),
            None => "/api/v1/search?limit=3".to_string(),
        };
        let body = app.get(&path, None).await.expect(StatusCode::OK);
        let starts: Vec<&str> = body["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| h["starts_at"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "by date: {starts:?}"
        );
        seen.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    seen.sort();
    published.sort();
    assert_eq!(seen, published);
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_named_in_a_400() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(String, &str)> = vec![
        ("q=".into(), "q"),
        (format!("q={long}"), "q"),
        ("q=.*%5B%5D%28%29".into(), "q"),
        ("lat=91&lon=0".into(), "lat"),
        ("lat=10&lon=-181".into(), "lon"),
        ("lat=abc&lon=0".into(), "lat"),
        ("lat=10".into(), "lon"),
        ("lat=NaN&lon=0".into(), "lat"),
        ("lat=10&lon=10&radius_km=-5".into(), "radius_km"),
        ("lat=10&lon=10&radius_km=0".into(), "radius_km"),
        ("lat=10&lon=10&radius_km=1e9".into(), "radius_km"),
        ("radius_km=10".into(), "radius_km"),
        ("sort=distance".into(), "sort"),
        ("sort=relevance".into(), "sort"),
        ("sort=popularity".into(), "sort"),
        ("cursor=not-a-cursor".into(), "cursor"),
        ("cursor=cnwwMDAwfGUwMQ".into(), "cursor"),
        ("limit=0".into(), "limit"),
        ("limit=1000".into(), "limit"),
        ("limit=ten".into(), "limit"),
        ("from=yesterday".into(), "from"),
        (
            "from=2031-02-01T00:00:00Z&to=2031-01-01T00:00:00Z".into(),
            "to",
        ),
        ("min_price_cents=-1".into(), "min_price_cents"),
        (
            "min_price_cents=500&max_price_cents=100".into(),
            "max_price_cents",
        ),
        ("category=Not%20A%20Slug!".into(), "category"),
        ("bbox=1,2,3".into(), "bbox"),
        ("bbox=0,10,10,0".into(), "bbox"),
        ("bbox=0,0,10,10&lat=1&lon=1&radius_km=5".into(), "bbox"),
    ];
    for (query, field) in cases {
        let response = app.get(&format!("/api/v1/search?{query}"), None).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            response.body
        );
        assert_eq!(response.code(), "invalid_input", "{query}");
        assert_eq!(response.field_names(), [field], "{query}");
    }
    // Unicode and regex-looking words are only words.
    app.get(
        "/api/v1/search?q=Z%C3%BCrich%20%E2%98%83%20(rock%7Cmetal)*",
        None,
    )
    .await
    .expect(StatusCode::OK);
    // A box across the antimeridian is fine.
    app.get("/api/v1/search?bbox=170,-20,-170,20", None)
        .await
        .expect(StatusCode::OK);
    app.get("/api/v1/search/suggest", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    app.get("/api/v1/events/evt_missing/similar", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}
