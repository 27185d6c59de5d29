//! The gateway in front of real nodes, all in this process on ephemeral ports: balancing,
//! event affinity, edge auth, rate limits, client addresses, SSE and WebSocket through it, TLS
//! with HTTP/2, and hostile clients. (Killing nodes and gateways as processes is in
//! `gateway_processes`.)

use crate::holds::on_sale;
use crate::push::{ws_receive, SseStream};
use crate::support::{TestApp, JWT_SECRET};
use futures::SinkExt;
use marquee_gateway::{Gateway, GatewayConfig, UpstreamSpec};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn gateway_config(upstream_urls: &[String]) -> GatewayConfig {
    let upstreams = upstream_urls
        .iter()
        .map(|url| url.parse::<UpstreamSpec>().expect("upstream URL"))
        .collect();
    let mut config = GatewayConfig::new(([127, 0, 0, 1], 0).into(), upstreams);
    config.jwt_secret =
        Some(marquee_auth::SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret"));
    config.health.interval = Duration::from_millis(200);
    config.access_log = false;
    config
}

struct Cluster {
    nodes: Vec<TestApp>,
    gateway: Gateway,
    /// Speaks to the gateway.
    client: TestApp,
}

impl Cluster {
    async fn start(nodes: usize, configure: impl FnOnce(&mut GatewayConfig)) -> Cluster {
        let mut apps = Vec::new();
        for n in 1..=nodes {
            apps.push(TestApp::spawn_with(|config| config.node_id = format!("node-{n}")).await);
        }
        Self::in_front_of(apps, configure).await
    }

    async fn in_front_of(
        nodes: Vec<TestApp>,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Cluster {
        let urls: Vec<String> = nodes.iter().map(|node| node.url.clone()).collect();
        let mut config = gateway_config(&urls);
        configure(&mut config);
        let gateway = Gateway::start(config).await.expect("gateway starts");
        Cluster {
            client: TestApp::client_of(gateway.url()),
            nodes,
            gateway,
        }
    }

    async fn stop(self) {
        self.gateway.shutdown().await;
        for node in self.nodes {
            node.stop().await;
        }
    }
}

fn node_of(response: &crate::support::Response) -> String {
    response
        .headers
        .get("x-marquee-node")
        .map(|value| value.to_str().expect("ascii").to_string())
        .unwrap_or_else(|| "<the gateway>".to_string())
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly_over_the_nodes() {
    let cluster = Cluster::start(3, |config| {
        config.policies = vec!["round-robin".parse().expect("policy")];
    })
    .await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let response = cluster.client.get("/api/v1/events", None).await;
        assert_eq!(response.status, StatusCode::OK);
        assert!(response.headers.contains_key("x-request-id"));
        *served.entry(node_of(&response)).or_default() += 1;
    }
    let expected: HashMap<String, usize> = (1..=3).map(|n| (format!("node-{n}"), 20)).collect();
    assert_eq!(served, expected);
    cluster.stop().await;
}

#[tokio::test]
async fn least_connections_uses_every_node_under_concurrency() {
    let cluster = Cluster::start(3, |config| {
        config.policies = vec!["least-conn".parse().expect("policy")];
    })
    .await;
    let client = Arc::new(cluster.client);
    let requests = (0..90).map(|_| {
        let client = Arc::clone(&client);
        tokio::spawn(async move { node_of(&client.get("/api/v1/events", None).await) })
    });
    let mut served: HashMap<String, usize> = HashMap::new();
    for request in requests {
        *served.entry(request.await.expect("task")).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "every node took requests: {served:?}");
    assert!(!served.contains_key("<the gateway>"), "{served:?}");
    cluster.gateway.shutdown().await;
    for node in cluster.nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn one_events_requests_and_push_land_on_one_node() {
    let cluster = Cluster::start(3, |_| {}).await;
    let mut owners = std::collections::HashSet::new();
    for n in 0..24 {
        let event = format!("event-{n}");
        let page = cluster
            .client
            .get(&format!("/api/v1/events/{event}"), None)
            .await;
        let seats = cluster
            .client
            .get(&format!("/api/v1/events/{event}/seats"), None)
            .await;
        let poll = cluster
            .client
            .get(
                &format!("/api/v1/push/poll?channel=event:{event}:seats&since=0&timeout_s=0"),
                None,
            )
            .await;
        let owner = node_of(&page);
        assert_eq!(node_of(&seats), owner, "{event}");
        assert_eq!(node_of(&poll), owner, "{event}");
        owners.insert(owner);
    }
    assert!(owners.len() >= 2, "events spread over nodes: {owners:?}");
    cluster.stop().await;
}

#[tokio::test]
async fn bad_tokens_and_wrong_roles_never_reach_a_node() {
    let cluster = Cluster::start(1, |_| {}).await;
    let node = &cluster.nodes[0];
    let (fan, _) = node.register("fan").await;
    let expired = {
        let issuer = marquee_auth::TokenIssuer::new(
            &marquee_auth::SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret"),
            Duration::from_secs(60),
        );
        let two_hours_ago = chrono::Utc::now().timestamp() - 7200;
        issuer
            .issue_at(
                &marquee_domain::UserId::from_string("someone"),
                marquee_domain::Role::Admin,
                two_hours_ago,
                60,
            )
            .expect("token")
    };
    // alg "none", the classic downgrade: header.payload with an empty signature.
    let unsigned = {
        use base64::Engine;
        let encode = |value: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        format!(
            "{}.{}.",
            encode(json!({"alg": "none", "typ": "JWT"})),
            encode(
                json!({"sub": "x", "role": "admin", "iss": "marquee", "iat": 0, "exp": 4102444800u64})
            )
        )
    };
    let mut forged = fan.clone();
    forged.push('x');
    for token in [
        forged.as_str(),
        expired.as_str(),
        unsigned.as_str(),
        "garbage",
    ] {
        let response = cluster.client.get("/api/v1/events", Some(token)).await;
        response.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(node_of(&response), "<the gateway>", "refused at the edge");
    }
    // The query-parameter form browsers use for SSE and WebSocket is checked the same way.
    let query = cluster
        .client
        .get(
            &format!("/api/v1/push/sse?channel=user:someone&access_token={forged}"),
            None,
        )
        .await;
    query.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(node_of(&query), "<the gateway>");
    let basic = cluster
        .client
        .client
        .get(format!("{}/api/v1/events", cluster.client.url))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    // Roles: a fan may not create venues; nobody anonymous may hold seats.
    let venue = cluster
        .client
        .post("/api/v1/venues", Some(&fan), crate::support::venue_body())
        .await;
    venue.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(node_of(&venue), "<the gateway>");
    let hold = cluster
        .client
        .post("/api/v1/events/e/holds", None, json!({"quantity": 1}))
        .await;
    hold.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A valid token passes and the node answers.
    let me = cluster.client.get("/api/v1/me", Some(&fan)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(node_of(&me), "node-1");
    cluster.stop().await;
}

#[tokio::test]
async fn ip_quotas_are_exact_and_forged_forwarding_headers_change_nothing() {
    let cluster = Cluster::start(1, |config| {
        config.rate_limits = vec!["ip=40/h".parse().expect("quota")];
        config.rate_limiter = Some(Arc::new(marquee_ratelimit::InProcessRateLimiter::new()));
    })
    .await;
    let client = Arc::new(cluster.client);
    let requests = (0..120).map(|n| {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            // Every request claims to come from somewhere else.
            client
                .client
                .get(format!("{}/healthz", client.url))
                .header("x-forwarded-for", format!("198.51.100.{}", n % 250))
                .send()
                .await
                .expect("sent")
        })
    });
    let (mut allowed, mut refused) = (0, 0);
    for request in requests {
        let response = request.await.expect("task");
        match response.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                assert!(retry_after >= 1);
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((allowed, refused), (40, 80));
    cluster.gateway.shutdown().await;
    for node in cluster.nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client() {
    let cluster = Cluster::start(1, |config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
        config.rate_limits = vec!["ip=2/h".parse().expect("quota")];
        config.rate_limiter = Some(Arc::new(marquee_ratelimit::InProcessRateLimiter::new()));
    })
    .await;
    let from = |address: &'static str| {
        cluster
            .client
            .client
            .get(format!("{}/healthz", cluster.client.url))
            .header("x-forwarded-for", address)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            from("203.0.113.1").await.expect("sent").status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        from("203.0.113.1").await.expect("sent").status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own allowance.
    assert_eq!(
        from("203.0.113.2").await.expect("sent").status(),
        StatusCode::OK
    );
    cluster.stop().await;
}

/// Holds the sale's first seat through `through` (the gateway).
async fn hold_first_seat(through: &TestApp, sale: &crate::holds::OnSale, fan: &str) {
    through
        .post(
            &format!("/api/v1/events/{}/holds", sale.event_id),
            Some(fan),
            json!({"seat_ids": [sale.seat_ids[0]]}),
        )
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn sse_and_websocket_stream_through_the_gateway() {
    let sale = on_sale(TestApp::spawn().await).await;
    let urls = vec![sale.app.url.clone()];
    let gateway = Gateway::start(gateway_config(&urls))
        .await
        .expect("gateway");
    let through = TestApp::client_of(gateway.url());
    let (fan, _) = sale.app.register("fan").await;
    let channel = format!("event:{}:seats", sale.event_id);

    let mut sse = SseStream::open(&through, &format!("channel={channel}&since=0"), None).await;
    let ws_url = format!("{}/api/v1/push/ws", through.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("WebSocket upgrade through the gateway");
    socket
        .send(WsMessage::text(
            json!({"subscribe": channel, "since": 0}).to_string(),
        ))
        .await
        .expect("send");
    let subscribed = ws_receive(&mut socket).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    // A hold made through the gateway shows up on both streams, unbuffered.
    hold_first_seat(&through, &sale, &fan).await;
    let event = tokio::time::timeout(PATIENCE, sse.next())
        .await
        .expect("an SSE event in time")
        .expect("stream open");
    assert_eq!(event.data["data"]["status"], "held", "{:?}", event.data);
    let message = ws_receive(&mut socket).await;
    assert_eq!(message["data"]["status"], "held", "{message}");
    assert_eq!(message["data"]["seat_ids"], json!([sale.seat_ids[0]]));
    drop(socket);
    drop(sse);
    gateway.shutdown().await;
    sale.app.stop().await;
}

#[tokio::test]
async fn tls_terminates_at_the_gateway_with_http2_and_http1() {
    let node = TestApp::spawn().await;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("write key");
    let mut config = gateway_config(std::slice::from_ref(&node.url));
    config.tls = Some(marquee_gateway::TlsFiles {
        cert_chain: cert_path,
        private_key: key_path,
    });
    let gateway = Gateway::start(config).await.expect("gateway");
    assert!(gateway.url().starts_with("https://"));
    let port = gateway.local_addr().port();

    // HTTP/1.1 over TLS with a client that trusts only this certificate.
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let response = client
        .get(format!("https://localhost:{port}/api/v1/events"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-marquee-node"], "test-node");

    // HTTP/2, negotiated by ALPN.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(gateway.local_addr())
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://localhost:{port}/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("HTTP/2 request");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK.as_u16());
    assert_eq!(response.headers()["x-marquee-node"], "test-node");

    // A client that speaks plain HTTP to the TLS port gets nothing, and the port lives on.
    let mut plain = TcpStream::connect(gateway.local_addr())
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut buffer)).await;
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"));
    let again = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(again.status(), StatusCode::OK);
    gateway.shutdown().await;
    node.stop().await;
}

/// Sends raw bytes and returns whatever the gateway answers before closing (or the bound).
async fn raw_exchange(address: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The gateway may answer and close before it has read everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_at_the_edge() {
    let cluster = Cluster::start(1, |config| {
        config.max_header_bytes = 16 * 1024;
        config.max_body_bytes = 64 * 1024;
    })
    .await;
    let address = cluster.gateway.local_addr();
    let garbage = raw_exchange(address, b"\x16\x03\x01 this is not http\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let bad_line = raw_exchange(address, b"GET /healthz HTTP/9.9\r\n\r\n").await;
    assert!(!bad_line.contains("200 OK"), "{bad_line:?}");
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = raw_exchange(address, huge_header.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{:?}",
        &answer[..answer.len().min(80)]
    );
    let big_body = cluster
        .client
        .client
        .post(format!("{}/api/v1/auth/login", cluster.client.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .expect("sent");
    assert_eq!(big_body.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        big_body.headers()["connection"],
        "close",
        "the unread body stays on the connection, so the client must not reuse it"
    );
    // Everyone else is still served.
    assert_eq!(
        cluster.client.get("/healthz", None).await.status,
        StatusCode::OK
    );
    cluster.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_without_holding_up_others() {
    let cluster = Cluster::start(1, |config| {
        config.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let address = cluster.gateway.local_addr();
    // Slowloris: many connections that start a request head and never finish it, plus some
    // that never send a byte.
    let mut loris = Vec::new();
    for n in 0..50 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        if n % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await
                .expect("write");
        }
        loris.push(stream);
    }
    // Meanwhile a normal client is served.
    for _ in 0..20 {
        assert_eq!(
            cluster.client.get("/healthz", None).await.status,
            StatusCode::OK
        );
    }
    // And every slow connection is closed by the gateway.
    for mut stream in loris {
        let mut buffer = [0u8; 1024];
        let closed = tokio::time::timeout(PATIENCE, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(
            closed,
            "the gateway closed a connection that never finished its request"
        );
    }
    cluster.stop().await;
}

#[tokio::test]
async fn load_is_shed_but_checkout_keeps_its_reserve() {
    let sale = on_sale(TestApp::spawn().await).await;
    let mut config = gateway_config(std::slice::from_ref(&sale.app.url));
    // One request in flight for browsing; a second slot only for checkout.
    config.max_in_flight = 2;
    config.checkout_reserve = 1;
    let gateway = Gateway::start(config).await.expect("gateway");
    let through = TestApp::client_of(gateway.url());
    let (fan, _) = sale.app.register("fan").await;
    let version = sale
        .app
        .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
        .await
        .expect(StatusCode::OK)["version"]
        .as_u64()
        .expect("version");
    // A long poll with nothing new to wait for occupies the only browsing slot.
    let poll_url = format!(
        "{}/api/v1/push/poll?channel=event:{}:seats&since={version}&timeout_s=3",
        through.url, sale.event_id
    );
    let client = through.client.clone();
    let long_poll = tokio::spawn(async move { client.get(poll_url).send().await });
    let in_flight = async {
        while gateway.upstreams()[0].in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the long poll is in flight");
    let browse = through.get("/api/v1/events", None).await;
    browse.expect_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(browse.headers.contains_key("retry-after"));
    assert_eq!(node_of(&browse), "<the gateway>");
    // Checkout still gets through on the reserve.
    hold_first_seat(&through, &sale, &fan).await;
    let poll = long_poll.await.expect("task").expect("long poll answered");
    let status = poll.status();
    let answered_by = format!("{:?}", poll.headers().get("x-marquee-node"));
    let body = poll.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::OK,
        "the long poll, answered by {answered_by}: {body}"
    );
    // With the slot free again, browsing is served.
    assert_eq!(
        through.get("/api/v1/events", None).await.status,
        StatusCode::OK
    );
    gateway.shutdown().await;
    sale.app.stop().await;
}
