//! Health, readiness, metrics, OpenAPI, request ids and the shape of every error.

use crate::support::{TestApp, JWT_SECRET};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{Role, UserId};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn admin_token() -> String {
    let secret = SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret");
    TokenIssuer::new(&secret, Duration::from_secs(3600))
        .issue(&UserId::generate(), Role::Admin)
        .expect("issue")
}

#[tokio::test]
async fn probes_answer() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz", None).await.expect(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let ready = app.get("/readyz", None).await.expect(StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    assert!(ready["checks"]["store"]
        .as_str()
        .expect("store")
        .contains("sqlite"));
    app.stop().await;
}

#[tokio::test]
async fn every_response_has_a_request_id_and_node() {
    let app = TestApp::spawn().await;
    let generated = app.get("/healthz", None).await;
    let id = generated.headers["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(generated.headers["x-marquee-node"], "test-node");

    let echoed = app
        .client
        .get(format!("{}/api/v1/events/nope", app.url))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");
    let body: serde_json::Value = echoed.json().await.expect("json");
    assert_eq!(body["error"]["request_id"], "client-chosen-42");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_contract_errors() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/nothing-here", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.request(reqwest::Method::DELETE, "/api/v1/venues", None, None)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_for_admins_on_the_public_listener() {
    let app = TestApp::spawn().await;
    let (fan, _) = app.register("fan").await;
    app.get("/api/v1/venues/unknown", None).await;
    app.get("/metrics", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get("/metrics", Some(&fan))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let metrics = app.get("/metrics", Some(&admin_token())).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().expect("text").to_string();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/venues/{id}",status="404"}"#
        ),
        "per-route counters: {text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"le="0.005""#), "explicit buckets");
    app.stop().await;
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_without_a_token() {
    let app = TestApp::spawn_with(|config| {
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    let admin_addr = app
        .server
        .as_ref()
        .and_then(|server| server.admin_addr)
        .expect("admin listener");
    let response = reqwest::get(format!("http://{admin_addr}/metrics"))
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let ready = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .expect("sent");
    assert_eq!(ready.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let document = app
        .get("/api/v1/openapi.json", None)
        .await
        .expect(StatusCode::OK);
    assert!(document["openapi"]
        .as_str()
        .expect("version")
        .starts_with("3.1"));
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/venues", "post"),
        ("/api/v1/venues", "get"),
        ("/api/v1/venues/{id}", "get"),
        ("/api/v1/events", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/events/{id}", "get"),
        ("/api/v1/events/{id}", "patch"),
        ("/api/v1/events/{id}/publish", "post"),
        ("/api/v1/events/{id}/cancel", "post"),
        ("/api/v1/events/{id}/seats", "get"),
        ("/api/v1/events/{id}/holds", "post"),
        ("/api/v1/events/{id}/checkin", "post"),
        ("/api/v1/holds/{id}", "get"),
        ("/api/v1/holds/{id}", "delete"),
        ("/api/v1/holds/{id}/extend", "post"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/refund", "post"),
        ("/api/v1/orders/{id}/history", "get"),
        ("/api/v1/me/orders", "get"),
    ];
    for (path, method) in expected {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["CreateVenueRequest"].is_object());
    app.stop().await;
}

/// The repository's copy of the OpenAPI document (`docs/openapi.json`, the API reference
/// readers find without running a server) is the one the server serves. After changing the API,
/// `MARQUEE_UPDATE_OPENAPI=1 cargo test -p marquee --test api openapi` writes it again.
#[tokio::test]
async fn the_committed_openapi_document_is_the_served_one() {
    let app = TestApp::spawn().await;
    let served = app
        .get("/api/v1/openapi.json", None)
        .await
        .expect(StatusCode::OK);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let rendered = format!(
        "{}\n",
        serde_json::to_string_pretty(&served).expect("render")
    );
    if std::env::var_os("MARQUEE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &rendered).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/openapi.json is not what the server serves; run \
         MARQUEE_UPDATE_OPENAPI=1 cargo test -p marquee --test api openapi"
    );
    app.stop().await;
}

#[tokio::test]
async fn oversized_and_mistyped_bodies_get_precise_errors() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(1024 * 1024 + 10));
    let response = app
        .post_raw(
            "/api/v1/venues",
            Some(&organizer),
            "application/json",
            huge.into_bytes(),
        )
        .await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let malformed = app
        .post_raw(
            "/api/v1/venues",
            Some(&organizer),
            "application/json",
            b"{\"name\":".to_vec(),
        )
        .await;
    malformed.expect_error(StatusCode::BAD_REQUEST, "malformed_json");

    let not_json = app
        .post_raw(
            "/api/v1/venues",
            Some(&organizer),
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    not_json.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    let array = app
        .post("/api/v1/venues", Some(&organizer), json!([1, 2]))
        .await;
    array.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    app.stop().await;
}

#[tokio::test]
async fn the_contract_works_end_to_end_on_postgres() {
    let app = TestApp::spawn_postgres().await;
    let ready = app.get("/readyz", None).await.expect(StatusCode::OK);
    assert!(ready["checks"]["store"]
        .as_str()
        .expect("store")
        .contains("postgres"));
    let (organizer, _) = app.register("organizer").await;
    let venue = app.create_venue(&organizer).await;
    let event = app
        .create_event(&organizer, venue["id"].as_str().expect("id"))
        .await;
    let id = event["id"].as_str().expect("id");
    app.post(
        &format!("/api/v1/events/{id}/publish"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let public = app
        .get(&format!("/api/v1/events/{id}"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(public["status"], "published");
    let seats = app
        .get(&format!("/api/v1/events/{id}/seats"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(seats["seats"].as_array().expect("seats").len(), 42);
    app.stop().await;
}

/// A TCP relay to PostgreSQL that the test can cut, to take the database away from a running
/// node without touching the shared server.
async fn start_relay(
    target: &'static str,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cut, cut_signal) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let mut signal = cut_signal.clone();
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { break };
                    let mut connection_cut = cut_signal.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = async { let _ = connection_cut.wait_for(|cut| *cut).await; } => {
                                let _ = client.shutdown().await;
                            }
                        }
                    });
                }
                () = async { let _ = signal.wait_for(|cut| *cut).await; } => break,
            }
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn readiness_names_the_store_when_the_database_goes_away() {
    let (relay, cut) = start_relay("127.0.0.1:5432").await;
    let schema = format!("ready_{}", crate::support::ulid_lower());
    let base = crate::support::postgres_url().replace("127.0.0.1:5432", &relay.to_string());
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&crate::support::postgres_url())
        .await
        .expect("postgres");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("schema");
    let app = TestApp::spawn_with(|config| {
        config.database_url = Some(url);
        config.database_max_connections = 2;
    })
    .await;
    app.get("/readyz", None).await.expect(StatusCode::OK);
    cut.send(true).expect("cut");
    let down = app.get("/readyz", None).await;
    down.expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(down.body["error"]["dependency"], "store");
    app.stop().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop");
}

/// Issue #33 (9): with Redis gone, `/readyz` (and a request needing Redis) answers the error
/// code, the dependency and a request id — not the Redis client's error text, which is logged.
#[tokio::test]
async fn a_dependency_down_answers_without_its_internal_message() {
    let (relay, cut) = start_relay("127.0.0.1:6379").await;
    let app = TestApp::spawn_with(|config| {
        config.redis_url = Some(format!("redis://{relay}"));
        config.redis_prefix = format!("t{}:", crate::support::ulid_lower());
    })
    .await;
    app.get("/readyz", None).await.expect(StatusCode::OK);
    cut.send(true).expect("cut");
    let down = app.get("/readyz", None).await;
    down.expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(down.body["error"]["dependency"], "redis");
    assert!(
        down.body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "a request id to quote: {}",
        down.body
    );
    let message = down.body["error"]["message"]
        .as_str()
        .expect("message")
        .to_lowercase();
    for internal in [
        "error",
        "refused",
        "reset",
        "broken",
        "pipe",
        "io ",
        "os ",
        "closed",
        "timed",
        "connection",
        "6379",
        "127.0.0.1",
    ] {
        assert!(
            !message.contains(internal),
            "no internal detail ({internal:?}) in {}",
            down.body
        );
    }
    app.stop().await;
}

/// This machine's address on its default route, if it has one that is not loopback (to reach
/// a listener as a remote peer would).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Issue #33 (7): without an operator token the operators' listener answers loopback peers
/// only, even when bound to every address.
#[tokio::test]
async fn the_operators_listener_serves_only_loopback_without_a_token() {
    let Some(remote) = non_loopback_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let app = TestApp::spawn_with(|config| {
        config.admin_listen = Some(([0, 0, 0, 0], 0).into());
    })
    .await;
    let port = app
        .server
        .as_ref()
        .and_then(|server| server.admin_addr)
        .expect("admin listener")
        .port();
    let from_afar = format!("http://{}", std::net::SocketAddr::new(remote, port));
    for path in ["/metrics", "/readyz"] {
        let response = reqwest::get(format!("{from_afar}{path}"))
            .await
            .expect("sent");
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{path} from {remote}"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let publish = reqwest::Client::new()
        .post(format!("{from_afar}/push/publish"))
        .json(&json!({"channel": "queue:abc", "type": "note"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(publish.status(), StatusCode::FORBIDDEN);
    let health = reqwest::get(format!("{from_afar}/healthz"))
        .await
        .expect("sent");
    assert_eq!(health.status(), StatusCode::OK, "health probes stay open");
    let local = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("sent");
    assert_eq!(local.status(), StatusCode::OK);
    app.stop().await;
}

/// Issue #33 (7): with an operator token, the operators' listener wants it from everyone.
#[tokio::test]
async fn the_operators_listener_requires_its_token_when_one_is_set() {
    let app = TestApp::spawn_with(|config| {
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
        config.operator_token = Some("operator-secret".into());
    })
    .await;
    let admin = app
        .server
        .as_ref()
        .and_then(|server| server.admin_addr)
        .expect("admin listener");
    let client = reqwest::Client::new();
    for token in [None, Some("wrong"), Some("operator-secre")] {
        for path in ["/metrics", "/readyz"] {
            let mut request = client.get(format!("http://{admin}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {token:?}"
            );
        }
        let mut publish = client
            .post(format!("http://{admin}/push/publish"))
            .json(&json!({"channel": "queue:abc", "type": "note"}));
        if let Some(token) = token {
            publish = publish.bearer_auth(token);
        }
        assert_eq!(
            publish.send().await.expect("sent").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for path in ["/metrics", "/readyz"] {
        let response = client
            .get(format!("http://{admin}{path}"))
            .bearer_auth("operator-secret")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let published = client
        .post(format!("http://{admin}/push/publish"))
        .bearer_auth("operator-secret")
        .json(&json!({"channel": "queue:abc", "type": "note"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(published.status(), StatusCode::OK);
    app.stop().await;
}

/// Issue #33 (7): the gateway's operators' listener (`/upstreams`) wants the token too.
#[tokio::test]
async fn the_gateways_operators_listener_requires_its_token() {
    let listen = crate::support::own_address();
    let admin = crate::support::own_address();
    let _gateway = crate::gateway_processes::marquee()
        .args(["gateway", "--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--operator-token", "gateway-operator-secret"])
        .args(["--upstream", "http://127.0.0.1:9"])
        .spawn()
        .expect("marquee gateway starts");
    let client = reqwest::Client::new();
    let health = async {
        loop {
            if let Ok(response) = client.get(format!("http://{admin}/healthz")).send().await {
                return response.status();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let health = tokio::time::timeout(Duration::from_secs(30), health)
        .await
        .expect("the operators' listener answers");
    assert_eq!(health, StatusCode::OK);
    let refused = client
        .get(format!("http://{admin}/upstreams"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let allowed = client
        .get(format!("http://{admin}/upstreams"))
        .bearer_auth("gateway-operator-secret")
        .send()
        .await
        .expect("sent");
    assert_eq!(allowed.status(), StatusCode::OK);
}
