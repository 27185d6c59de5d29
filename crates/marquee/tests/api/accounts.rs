//! Accounts: register, login, me, and every way a token can be wrong.

use crate::support::{TestApp, JWT_SECRET};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{Role, UserId};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

fn issuer() -> TokenIssuer {
    let secret = SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret");
    TokenIssuer::new(&secret, Duration::from_secs(3600))
}

#[tokio::test]
async fn a_new_account_gets_a_token_that_works() {
    let app = TestApp::spawn().await;
    let body = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "Ada@Example.com", "password": "correct horse", "name": "Ada"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["role"], "fan", "fan is the default role");
    assert!(body["user"].get("password_hash").is_none());
    let token = body["token"].as_str().expect("token");
    let me = app
        .get("/api/v1/me", Some(token))
        .await
        .expect(StatusCode::OK);
    assert_eq!(me["id"], body["user"]["id"]);
    assert_eq!(me["name"], "Ada");

    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "correct horse"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(login["user"]["id"], body["user"]["id"]);
    app.get("/api/v1/me", login["token"].as_str())
        .await
        .expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn organizers_may_sign_up_but_admins_may_not() {
    let app = TestApp::spawn().await;
    let organizer = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "o@example.com", "password": "correct horse", "name": "O", "role": "organizer"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(organizer["user"]["role"], "organizer");
    let admin = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "a@example.com", "password": "correct horse", "name": "A", "role": "admin"}),
        )
        .await;
    admin.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(admin.field_names(), vec!["role"]);
    app.stop().await;
}

#[tokio::test]
async fn an_email_is_registered_once_whatever_its_case() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "dup@example.com", "password": "correct horse", "name": "D"});
    app.post("/api/v1/auth/register", None, body)
        .await
        .expect(StatusCode::CREATED);
    let again = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "DUP@example.com", "password": "another pass", "name": "E"}),
        )
        .await;
    again.expect_error(StatusCode::CONFLICT, "email_taken");
    app.stop().await;
}

#[tokio::test]
async fn registration_names_every_bad_field() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "not-an-email", "password": "short", "name": "  "}),
        )
        .await;
    response.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(response.field_names(), vec!["email", "name", "password"]);

    let missing = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "x@example.com"}),
        )
        .await;
    missing.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(!missing.field_names().is_empty());

    let wrong_type = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "x@example.com", "password": 12345678, "name": "X"}),
        )
        .await;
    wrong_type.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(wrong_type.field_names(), vec!["password"]);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_look_the_same() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"email": "ada@example.com", "password": "correct horse", "name": "Ada"}),
    )
    .await
    .expect(StatusCode::CREATED);
    let wrong_password = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "wrong horse"}),
        )
        .await;
    wrong_password.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "correct horse"}),
        )
        .await;
    unknown.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        wrong_password.body["error"]["message"],
        unknown.body["error"]["message"]
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let app = TestApp::spawn().await;
    let (token, user_id) = app.register("fan").await;

    app.get("/api/v1/me", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    app.get("/api/v1/me", Some(&forged))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token");

    app.get("/api/v1/me", Some("not.a.jwt"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token");

    let foreign_secret = SigningSecret::generate();
    let foreign = TokenIssuer::new(&foreign_secret, Duration::from_secs(60))
        .issue(&UserId::from_string(user_id.clone()), Role::Admin)
        .expect("issue");
    app.get("/api/v1/me", Some(&foreign))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token");

    let expired = issuer()
        .issue_at(
            &UserId::from_string(user_id),
            Role::Fan,
            chrono::Utc::now().timestamp() - 7200,
            3600,
        )
        .expect("issue");
    app.get("/api/v1/me", Some(&expired))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_expired");

    let basic = app
        .client
        .get(format!("{}/api/v1/me", app.url))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a_token_for_a_vanished_account_is_refused_on_me() {
    let app = TestApp::spawn().await;
    let ghost = issuer()
        .issue(&UserId::generate(), Role::Fan)
        .expect("issue");
    app.get("/api/v1/me", Some(&ghost))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token");
    app.stop().await;
}

#[tokio::test]
async fn admins_are_made_on_the_command_line() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args([
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--name",
            "Root",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("MARQUEE_ADMIN_PASSWORD", "correct horse battery")
        .env("MARQUEE_LOG", "warn")
        .output()
        .expect("marquee runs");
    assert!(
        output.status.success(),
        "admin create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = data_dir.path().to_path_buf();
    let app = TestApp::spawn_with(|config| config.data_dir = dir).await;
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "root@example.com", "password": "correct horse battery"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(login["user"]["role"], "admin");

    let again = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args([
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--password",
            "x",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .output()
        .expect("marquee runs");
    assert!(!again.status.success(), "a short password is refused");
    app.stop().await;
}

/// A sign-in or registration attempt from `client` (named by `X-Forwarded-For`, which the node
/// believes from its trusted proxy, 127.0.0.1).
async fn attempt(
    app: &TestApp,
    path: &str,
    client: &str,
    body: serde_json::Value,
) -> crate::support::Response {
    app.post_with_headers(path, None, &[("x-forwarded-for", client)], body)
        .await
}

/// Issue #33 (3): sign-in and registration are throttled by default, per client IP and per
/// account; a refusal is 429 with `Retry-After` and the contract's error body, and an unknown
/// account is refused exactly like a known one.
#[tokio::test]
async fn sign_ins_and_registrations_are_throttled_by_ip_and_by_account() {
    let app = TestApp::spawn_with(|config| {
        // The product's defaults, not the harness's lifted ones.
        config.auth_limits = marquee_api::AuthLimits::default();
        config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let defaults = marquee_api::AuthLimits::default();
    let per_account = defaults.attempts_per_account_per_minute;
    let per_ip = defaults.attempts_per_ip_per_minute;
    let known = format!("known-{}@example.com", crate::support::ulid_lower());
    attempt(
        &app,
        "/api/v1/auth/register",
        "198.51.100.200",
        json!({"email": known, "password": "correct horse", "name": "K"}),
    )
    .await
    .expect(StatusCode::CREATED);

    // Per account, whoever tries: each guess from a different address, a known and an
    // unknown account alike. The allowance refills continuously (one attempt per 60/limit
    // seconds), so a slow run may earn an attempt or two more than the limit, never fewer.
    let unknown = format!("nobody-{}@example.com", crate::support::ulid_lower());
    let mut refusals = Vec::new();
    for (index, email) in [&known, &unknown].into_iter().enumerate() {
        // The registration was the known account's first attempt.
        let budget = if index == 0 {
            per_account - 1
        } else {
            per_account
        };
        let started = std::time::Instant::now();
        let mut admitted = 0;
        let refused = loop {
            let client = format!("198.51.{}.{}", index + 1, admitted + 1);
            let response = attempt(
                &app,
                "/api/v1/auth/login",
                &client,
                json!({"email": email, "password": format!("guess {admitted}")}),
            )
            .await;
            if response.status == StatusCode::TOO_MANY_REQUESTS {
                break response;
            }
            response.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
            admitted += 1;
            assert!(
                admitted <= budget + refilled(started, per_account),
                "{email} never refused"
            );
        };
        assert!(
            admitted >= budget,
            "{email} refused after {admitted} of {budget}"
        );
        refusals.push(refused);
    }
    for refused in &refusals {
        refused.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry_after: u64 = refused.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert!(refused.body["error"]["request_id"].is_string());
    }
    let strip = |response: &crate::support::Response| {
        let mut body = response.body.clone();
        body["error"]["request_id"] = json!(null);
        body["error"]["retry_after_seconds"] = json!(null);
        (response.status, body)
    };
    assert_eq!(
        strip(&refusals[0]),
        strip(&refusals[1]),
        "a known and an unknown account are refused alike"
    );
    // The right password does not get past the account's throttle either.
    attempt(
        &app,
        "/api/v1/auth/login",
        "198.51.100.201",
        json!({"email": known, "password": "correct horse"}),
    )
    .await
    .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // Per IP, across accounts and across sign-in and registration.
    let started = std::time::Instant::now();
    let mut admitted = 0;
    let email = loop {
        let email = format!("ip-{admitted}-{}@example.com", crate::support::ulid_lower());
        let path = if admitted % 2 == 0 {
            "/api/v1/auth/login"
        } else {
            "/api/v1/auth/register"
        };
        let response = attempt(
            &app,
            path,
            "203.0.113.9",
            json!({"email": email, "password": "correct horse", "name": "I"}),
        )
        .await;
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            response.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            break email;
        }
        admitted += 1;
        assert!(
            admitted <= per_ip + refilled(started, per_ip),
            "the address never refused"
        );
    };
    assert!(admitted >= per_ip, "refused after {admitted} of {per_ip}");
    // Another address is not affected.
    attempt(
        &app,
        "/api/v1/auth/register",
        "203.0.113.10",
        json!({"email": email, "password": "correct horse", "name": "I"}),
    )
    .await
    .expect(StatusCode::CREATED);
    app.stop().await;
}

/// Attempts a per-minute allowance of `limit` has earned back since `started`, plus one for
/// the rounding of the moment the test reads the clock.
fn refilled(started: std::time::Instant, limit: u32) -> u32 {
    let per_attempt = 60.0 / f64::from(limit);
    (started.elapsed().as_secs_f64() / per_attempt).ceil() as u32 + 1
}
