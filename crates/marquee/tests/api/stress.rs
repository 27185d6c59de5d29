//! A thousand fans at once for 500 seats and a standing area, over HTTP, on each lease backend:
//! no seat sold twice, standing never oversold, the seat map agreeing with the tickets, and every
//! hold answered 201, 409 or 422.

use crate::support::{TestApp, JWT_SECRET};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const FANS: usize = 1000;
const STANDING_CAPACITY: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fans_race_for_500_seats_with_in_process_leases() {
    race(TestApp::spawn().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fans_race_for_500_seats_with_redis_leases() {
    let url = std::env::var("MARQUEE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("stress:{}:", crate::support::ulid_lower());
    race(
        TestApp::spawn_with(|config| {
            config.redis_url = Some(url);
            config.redis_prefix = prefix;
        })
        .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fans_race_for_500_seats_on_postgres() {
    race(TestApp::spawn_postgres().await).await;
}

async fn race(app: TestApp) {
    let (organizer, _) = app.register("organizer").await;
    let rows: Vec<Value> = (0..10)
        .map(|row| json!({"label": format!("R{row}"), "seats": 50}))
        .collect();
    let venue = app
        .post(
            "/api/v1/venues",
            Some(&organizer),
            json!({"name": "Arena", "city": "Leeds", "country": "GB", "lat": 53.8, "lon": -1.55,
                   "sections": [{"name": "Bowl", "rows": rows},
                                {"name": "Floor", "capacity": STANDING_CAPACITY}]}),
        )
        .await
        .expect(StatusCode::CREATED);
    let seat_ids: Vec<String> = venue["sections"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(seat_ids.len(), 500);
    let event = app
        .post(
            "/api/v1/events",
            Some(&organizer),
            json!({"title": "Stress Night", "venue_id": venue["id"], "category": "concert",
                   "starts_at": "2031-01-01T20:00:00Z",
                   "limits": {"max_seats_per_order": 4},
                   "price_tiers": [
                       {"name": "Bowl", "price_cents": 5000, "currency": "GBP", "sections": ["Bowl"]},
                       {"name": "Floor", "price_cents": 3000, "currency": "GBP", "sections": ["Floor"]}]}),
        )
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

    // Fans are made in the store directly: a thousand argon2 hashes would only test argon2.
    let store = app.server.as_ref().expect("server").state.store.clone();
    let issuer = TokenIssuer::new(
        &SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret"),
        Duration::from_secs(3600),
    );
    let mut fans = Vec::with_capacity(FANS);
    for index in 0..FANS {
        let user = User {
            id: UserId::generate(),
            email: Email::parse(&format!("fan{index}@stress.test")).expect("email"),
            name: DisplayName::parse("Fan").expect("name"),
            role: Role::Fan,
            created_at: marquee_domain::timestamp_now(),
        };
        store.create_user(&user, "unused").await.expect("fan");
        fans.push((
            user.id.clone(),
            issuer.issue(&user.id, Role::Fan).expect("token"),
        ));
    }

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(FANS)
        .build()
        .expect("client");
    let seat_ids = Arc::new(seat_ids);
    let start = Arc::new(tokio::sync::Barrier::new(FANS));
    let racers: Vec<_> = fans
        .iter()
        .enumerate()
        .map(|(index, (_, token))| {
            let client = client.clone();
            let token = token.clone();
            let url = app.url.clone();
            let event_id = event_id.clone();
            let seat_ids = seat_ids.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(index as u64);
                let body = match index % 5 {
                    0 => json!({"quantity": rng.gen_range(1..=4)}),
                    1 => json!({"general_admission": {"section": "Floor", "quantity": rng.gen_range(1..=4)}}),
                    _ => {
                        // Pick from the first 150 seats so that fans collide often.
                        let count = rng.gen_range(1..=3);
                        let wanted: Vec<&String> =
                            seat_ids[..150].choose_multiple(&mut rng, count).collect();
                        json!({"seat_ids": wanted})
                    }
                };
                start.wait().await;
                let hold = client
                    .post(format!("{url}/api/v1/events/{event_id}/holds"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("hold sent");
                let status = hold.status();
                let hold: Value = hold.json().await.expect("hold body");
                assert!(
                    [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::UNPROCESSABLE_ENTITY]
                        .contains(&status),
                    "hold answered {status}: {hold}"
                );
                if status != StatusCode::CREATED {
                    return (status, None);
                }
                let order = client
                    .post(format!("{url}/api/v1/orders"))
                    .bearer_auth(&token)
                    .json(&json!({"hold_id": hold["id"], "payment": {"method": "card", "token": "tok_visa"}}))
                    .send()
                    .await
                    .expect("order sent");
                assert_eq!(order.status(), StatusCode::CREATED, "a live hold is bought");
                (status, Some(order.json::<Value>().await.expect("order body")))
            })
        })
        .collect();
    let mut orders = Vec::new();
    let (mut created, mut conflicts) = (0, 0);
    for racer in racers {
        let (status, order) = racer.await.expect("racer");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            _ => {}
        }
        orders.extend(order);
    }
    assert!(created > 0, "some fans got seats");
    assert!(conflicts > 0, "fans really collided on seats");

    let mut sold_seats = HashSet::new();
    let mut standing_sold = 0;
    for order in &orders {
        for ticket in order["tickets"].as_array().expect("tickets") {
            match ticket["seat_id"].as_str() {
                Some(seat) => assert!(
                    sold_seats.insert(seat.to_string()),
                    "seat {seat} sold twice"
                ),
                None => standing_sold += 1,
            }
        }
    }
    assert!(
        standing_sold <= STANDING_CAPACITY,
        "standing oversold: {standing_sold}"
    );

    let seats = app
        .get(&format!("/api/v1/events/{event_id}/seats"), None)
        .await
        .expect(StatusCode::OK);
    let map_sold: HashSet<String> = seats["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .filter(|seat| seat["status"] == "sold")
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(map_sold, sold_seats, "the seat map agrees with the tickets");
    let floor = &seats["general_admission"][0];
    assert_eq!(
        floor["available"].as_u64(),
        Some(STANDING_CAPACITY - standing_sold),
        "standing availability agrees with the tickets"
    );
    app.stop().await;
}
