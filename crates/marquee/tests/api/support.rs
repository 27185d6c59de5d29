//! `TestApp`: a real node on an ephemeral port, with a client and helpers for the common steps.

pub mod network;

use marquee::{Server, ServerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const JWT_SECRET: &str = "integration-test-secret-of-more-than-32-bytes";

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    _data_dir: tempfile::TempDir,
    postgres_schema: Option<String>,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    /// The error code of a contract error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn field_names(&self) -> Vec<String> {
        self.body["error"]["fields"]
            .as_object()
            .map(|fields| fields.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "errors carry a message: {}",
            self.body
        );
    }
}

pub fn postgres_url() -> String {
    std::env::var("MARQUEE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir.path().into());
        config.jwt_secret = Some(JWT_SECRET.to_string());
        config.node_id = "test-node".to_string();
        // Tests register many accounts from 127.0.0.1; the sign-in throttle's own tests set
        // its allowances back down.
        config.auth_limits = marquee_api::AuthLimits {
            attempts_per_ip_per_minute: 1_000_000,
            attempts_per_account_per_minute: 1_000_000,
        };
        configure(&mut config);
        let server = Server::start(config).await.expect("server starts");
        TestApp {
            url: server.url(),
            client: reqwest::Client::new(),
            server: Some(server),
            _data_dir: data_dir,
            postgres_schema: None,
        }
    }

    /// A client of something else speaking the same API at `url` (a gateway in front of
    /// nodes), with the same helpers; it owns no server.
    pub fn client_of(url: String) -> TestApp {
        TestApp {
            url,
            client: reqwest::Client::new(),
            server: None,
            _data_dir: tempfile::tempdir().expect("tempdir"),
            postgres_schema: None,
        }
    }

    /// A node over its own PostgreSQL schema.
    pub async fn spawn_postgres() -> TestApp {
        let schema = format!("api_{}", ulid_lower());
        sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
        let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        let mut app = Self::spawn_with(|config| config.database_url = Some(url)).await;
        app.postgres_schema = Some(schema);
        app
    }

    /// The node's data dir (its SQLite files, among them `jobs.db`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        if let Some(schema) = self.postgres_schema.take() {
            sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_response(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    /// A JSON POST with extra headers.
    pub async fn post_with_headers(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Response {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_response(request.send().await.expect("request sent")).await
    }

    /// Sends raw bytes with a chosen content type.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_response(request.send().await.expect("request sent")).await
    }

    /// Registers a user with `role` and returns (token, user id).
    pub async fn register(&self, role: &str) -> (String, String) {
        let email = format!("{role}-{}@example.com", ulid_lower());
        let body = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": "correct horse", "name": "Test", "role": role}),
            )
            .await
            .expect(StatusCode::CREATED);
        (
            body["token"].as_str().expect("token").to_string(),
            body["user"]["id"].as_str().expect("id").to_string(),
        )
    }

    /// Creates the contract's example venue and returns its body.
    pub async fn create_venue(&self, token: &str) -> Value {
        self.post("/api/v1/venues", Some(token), venue_body())
            .await
            .expect(StatusCode::CREATED)
    }

    /// Creates a draft event at `venue_id` and returns its body.
    pub async fn create_event(&self, token: &str, venue_id: &str) -> Value {
        self.post("/api/v1/events", Some(token), event_body(venue_id))
            .await
            .expect(StatusCode::CREATED)
    }
}

async fn into_response(response: reqwest::Response) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Response {
        status,
        headers,
        body,
    }
}

/// Administrative SQL (creating and dropping a test's schema) on the shared test database.
pub async fn sqlx_admin(statement: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&postgres_url())
        .await
        .expect("postgres reachable");
    sqlx::query(statement)
        .execute(&pool)
        .await
        .expect("admin statement");
    pool.close().await;
}

/// A free port on a loopback address of this test's own (all of 127.0.0.0/8 is loopback), for
/// a server the test starts as a process, kills or restarts. On 127.0.0.1, the port it is
/// given is free again between the probe and the bind and while the server is down, and
/// another test binding port 0 may be handed it: its server then takes the traffic aimed at
/// this one (CI once saw a gateway test's only browsing slot taken by another test's
/// requests for a killed node). Nothing else binds these addresses.
pub fn own_address() -> std::net::SocketAddr {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(ulid_lower());
    let [a, b, c, ..] = random.to_le_bytes();
    // 127.0.x.x stays clear for the machine; .0 and .255 are not host addresses.
    let ip = std::net::Ipv4Addr::new(127, a.clamp(1, 254), b, c.clamp(1, 254));
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port on a loopback address")
}

pub fn ulid_lower() -> String {
    marquee_domain::UserId::generate().as_str().to_lowercase()
}

pub fn venue_body() -> Value {
    json!({
        "name": "Roundhouse", "address": "Chalk Farm Rd", "city": "London", "country": "GB",
        "lat": 51.5432, "lon": -0.1519,
        "sections": [
            {"name": "Stalls", "rows": [{"label": "A", "seats": 20}, {"label": "B", "seats": 22}]},
            {"name": "Standing", "capacity": 500}
        ]
    })
}

pub fn event_body(venue_id: &str) -> Value {
    json!({
        "title": "Metallica — M72 World Tour", "description": "Two nights, no repeats.",
        "venue_id": venue_id, "category": "concert", "tags": ["metal", "rock"],
        "performers": ["Metallica"],
        "starts_at": "2031-06-01T19:00:00Z", "ends_at": "2031-06-01T23:00:00Z",
        "on_sale_at": "2031-01-15T10:00:00Z",
        "price_tiers": [
            {"name": "Stalls", "price_cents": 8900, "currency": "GBP", "sections": ["Stalls"]},
            {"name": "Standing", "price_cents": 6500, "currency": "GBP", "sections": ["Standing"]}
        ],
        "limits": {"max_seats_per_order": 8},
        "waiting_room": {"enabled": true, "admit_per_minute": 600, "pass_ttl_seconds": 900},
        "streaming": {"enabled": true}
    })
}

/// One number from the shared test database (a count, to see what a test's schema holds).
pub async fn sqlx_scalar(query: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&postgres_url())
        .await
        .expect("postgres reachable");
    let value: i64 = sqlx::query_scalar(query)
        .fetch_one(&pool)
        .await
        .expect("scalar query");
    pool.close().await;
    value
}
