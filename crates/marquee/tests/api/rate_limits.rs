//! `--rate-limit` quotas over HTTP: 429 with `Retry-After` past the quota, scopes kept apart,
//! and a user's allowance keyed only by a token the node verified.

use crate::support::TestApp;
use marquee_ratelimit::ScopedQuota;
use reqwest::StatusCode;
use serde_json::json;

fn quotas(flags: &[&str]) -> Vec<ScopedQuota> {
    flags
        .iter()
        .map(|flag| flag.parse().expect("quota flag"))
        .collect()
}

#[tokio::test]
async fn an_ip_past_its_quota_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(|config| config.rate_limits = quotas(&["ip=5/m"])).await;
    for _ in 0..5 {
        app.get("/api/v1/events", None).await.expect(StatusCode::OK);
    }
    let refused = app.get("/api/v1/events", None).await;
    refused.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After header in seconds");
    // One request's worth of a 5-per-minute allowance: 12 s, rounded up to whole seconds.
    assert!(
        (1..=12).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(
        refused.body["error"]["retry_after_seconds"],
        json!(retry_after)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_route_quota_limits_only_its_route() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits = quotas(&["route=POST /api/v1/auth/login=2/m"]);
    })
    .await;
    let login = json!({"email": "nobody@example.com", "password": "not the password"});
    for _ in 0..2 {
        let response = app.post("/api/v1/auth/login", None, login.clone()).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    app.post("/api/v1/auth/login", None, login)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    for _ in 0..5 {
        app.get("/api/v1/events", None).await.expect(StatusCode::OK);
    }
    app.stop().await;
}

#[tokio::test]
async fn users_have_their_own_allowance_and_a_forged_token_counts_as_its_ip() {
    let app = TestApp::spawn_with(|config| config.rate_limits = quotas(&["user=4/m"])).await;
    // Two anonymous registrations spend two of this IP's four.
    let (alice, _) = app.register("fan").await;
    let (bob, _) = app.register("fan").await;
    for token in [&alice, &bob] {
        for _ in 0..4 {
            app.get("/api/v1/me/orders", Some(token))
                .await
                .expect(StatusCode::OK);
        }
        app.get("/api/v1/me/orders", Some(token))
            .await
            .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    }
    // A token the node cannot verify is no user: it spends the IP's allowance (two left).
    let signature_at = alice.rfind('.').expect("a JWT") + 1;
    let flipped = if alice[signature_at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    let forged = format!(
        "{}{flipped}{}",
        &alice[..signature_at],
        &alice[signature_at + 1..]
    );
    for _ in 0..2 {
        let response = app.get("/api/v1/events", Some(&forged)).await;
        assert_ne!(response.status, StatusCode::TOO_MANY_REQUESTS);
    }
    app.get("/api/v1/events", Some(&forged))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    app.stop().await;
}

/// Behind a trusted proxy (the gateway), per-IP quotas count the clients it names; anyone
/// else's `X-Forwarded-For` changes nothing.
#[tokio::test]
async fn per_ip_quotas_count_the_clients_a_trusted_proxy_names() {
    let from = |app: &TestApp, address: &str| {
        app.client
            .get(format!("{}/api/v1/events", app.url))
            .header("x-forwarded-for", address)
            .send()
    };
    let behind_gateway = TestApp::spawn_with(|config| {
        config.rate_limits = quotas(&["ip=2/m"]);
        config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    for _ in 0..2 {
        let response = from(&behind_gateway, "203.0.113.1").await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let third = from(&behind_gateway, "203.0.113.1").await.expect("sent");
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = from(&behind_gateway, "203.0.113.2").await.expect("sent");
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another client has its own allowance"
    );
    behind_gateway.stop().await;

    let exposed = TestApp::spawn_with(|config| config.rate_limits = quotas(&["ip=2/m"])).await;
    for n in 0..2 {
        let response = from(&exposed, &format!("203.0.113.{n}"))
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let forged = from(&exposed, "203.0.113.9").await.expect("sent");
    assert_eq!(
        forged.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted X-Forwarded-For does not buy a new allowance"
    );
    exposed.stop().await;
}
