//! A thousand fans at once for 500 seats and a standing area, over HTTP, on each lease backend:
//! no seat sold twice, standing never oversold, the seat map agreeing with the tickets, and every
//! hold answered 201, 409 or 422. The same race over three nodes is in `cluster.rs`, whose
//! helpers this uses.

use crate::cluster::{self, assert_nothing_sold_twice, fans, on_sale, progress};
use crate::support::TestApp;

const FANS: usize = 1000;

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
    let sale = on_sale(&app).await;
    assert_eq!(sale.seat_ids.len(), 500);
    // Fans are made in the store directly: a thousand argon2 hashes would only test argon2.
    let store = app.server.as_ref().expect("server").state.store.clone();
    let tokens = fans(store.as_ref(), FANS).await;
    let outcomes = cluster::race(
        std::slice::from_ref(&app.url),
        &sale,
        &tokens,
        FANS,
        progress(),
    )
    .await;
    for outcome in &outcomes {
        assert!(
            [201, 409, 422].contains(&outcome.hold),
            "hold answered {}: {}",
            outcome.hold,
            outcome.hold_code
        );
        assert!(
            outcome.order.is_none_or(|order| order == 201),
            "a live hold is bought"
        );
    }
    assert!(
        outcomes.iter().any(|outcome| outcome.hold == 201),
        "some fans got seats"
    );
    assert!(
        outcomes.iter().any(|outcome| outcome.hold == 409),
        "fans really collided on seats"
    );
    assert_nothing_sold_twice(&outcomes, &app, &sale).await;
    app.stop().await;
}
