//! The gateway's HTTP/1.1 fast path on the wire: pipelined requests, the requests it hands to
//! hyper (chunked bodies, HTTP/1.0, h2c), node connections the node closed while they idled,
//! and answers of every framing passed through byte for byte.
//!
//! Most tests run a real node. Two need a node that misbehaves on purpose (it closes every
//! connection after one answer without saying so; it answers with framings a Marquee node never
//! uses), which [`WireNode`] is: a plain HTTP/1.1 server over a TCP listener.

use crate::gateway::gateway_config;
use crate::support::TestApp;
use bytes::Bytes;
use http_body_util::BodyExt;
use marquee_gateway::Gateway;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn node_behind_a_gateway() -> (TestApp, Gateway) {
    let node = TestApp::spawn().await;
    let gateway = Gateway::start(gateway_config(std::slice::from_ref(&node.url)))
        .await
        .expect("gateway");
    (node, gateway)
}

/// Writes `bytes` and reads until the gateway closes the connection.
async fn exchange(address: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line of each answer (a body need not end in a newline, so search, not split).
fn status_lines(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.")
        .map(|(at, _)| answer[at..].split("\r\n").next().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (node, gateway) = node_behind_a_gateway().await;
    let login = r#"{"email":"nobody@example.com","password":"wrong-password"}"#;
    let pipelined = format!(
        "GET /healthz HTTP/1.1\r\nhost: a\r\nx-request-id: first\r\n\r\n\
         POST /api/v1/auth/login HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-request-id: second\r\n\r\n{login}\
         GET /api/v1/nope HTTP/1.1\r\nhost: a\r\nx-request-id: third\r\nconnection: close\r\n\r\n",
        login.len()
    );
    let answer = exchange(gateway.local_addr(), pipelined.as_bytes()).await;
    assert_eq!(
        status_lines(&answer),
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 401 Unauthorized",
            "HTTP/1.1 404 Not Found"
        ],
        "{answer}"
    );
    let ids: Vec<&str> = answer
        .lines()
        .filter_map(|line| line.strip_prefix("x-request-id: "))
        .collect();
    assert_eq!(ids, ["first", "second", "third"], "{answer}");
    assert!(answer.contains("invalid_credentials"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    gateway.shutdown().await;
    node.stop().await;
}

#[tokio::test]
async fn requests_the_fast_path_hands_to_hyper_are_served_all_the_same() {
    let (node, gateway) = node_behind_a_gateway().await;
    let address = gateway.local_addr();

    // A chunked request body, after an ordinary request on the same connection.
    let login = r#"{"email":"nobody@example.com","password":"wrong-password"}"#;
    let chunked = format!(
        "GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n\
         POST /api/v1/auth/login HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &login[..10],
        login.len() - 10,
        &login[10..]
    );
    let answer = exchange(address, chunked.as_bytes()).await;
    assert_eq!(
        status_lines(&answer),
        ["HTTP/1.1 200 OK", "HTTP/1.1 401 Unauthorized"],
        "{answer}"
    );
    assert!(answer.contains("invalid_credentials"), "{answer}");

    // HTTP/1.0.
    let answer = exchange(address, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(
        status_lines(&answer)
            .first()
            .is_some_and(|line| line.ends_with(" 200 OK")),
        "{answer}"
    );
    assert!(answer.contains("x-marquee-node: test-node"), "{answer}");

    // HTTP/2 in clear text with prior knowledge (h2c).
    let tcp = TcpStream::connect(address).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = hyper::Request::get(format!("http://{address}/api/v1/events?limit=1"))
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("h2c request");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-marquee-node"], "test-node");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert!(page["items"].is_array(), "{page}");
    }
    gateway.shutdown().await;
    node.stop().await;
}

/// A plain HTTP/1.1 server standing in for a node that misbehaves on purpose. Each request is
/// answered with `answer(method, path)`; with `close_after_answer` the connection is then
/// closed without a `Connection: close` (as a node whose keep-alive timer fired would).
struct WireNode {
    url: String,
    requests: Arc<AtomicUsize>,
    /// One message each time the node has closed a connection.
    closed: mpsc::UnboundedReceiver<()>,
}

impl WireNode {
    async fn start(
        close_after_answer: bool,
        answer: impl Fn(&str, &str) -> Vec<u8> + Send + Sync + 'static,
    ) -> WireNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let answer = Arc::new(answer);
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (answer, counter, closed_tx) =
                    (Arc::clone(&answer), Arc::clone(&counter), closed_tx.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some((method, path, used)) =
                            read_request(&mut stream, &mut buffer).await
                        else {
                            return;
                        };
                        buffer.drain(..used);
                        let health = path == "/readyz";
                        if !health {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        if stream.write_all(&answer(&method, &path)).await.is_err() {
                            return;
                        }
                        if close_after_answer && !health {
                            let _ = stream.shutdown().await;
                            drop(stream);
                            let _ = closed_tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        WireNode {
            url,
            requests,
            closed,
        }
    }
}

/// Reads one request (head and `Content-Length` body): method, path and the bytes it took.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, String, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(buffer) {
            let length: usize = request
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| std::str::from_utf8(header.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buffer.len() >= head + length {
                return Some((
                    request.method?.to_string(),
                    request.path?.to_string(),
                    head + length,
                ));
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

#[tokio::test]
async fn a_node_that_closes_idle_connections_loses_no_request_and_gets_none_twice() {
    let mut node = WireNode::start(true, |_, _| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
    })
    .await;
    let gateway = Gateway::start(gateway_config(std::slice::from_ref(&node.url)))
        .await
        .expect("gateway");
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/anything", gateway.url());
    // Every GET after the first finds its pooled connection already closed by the node.
    for n in 0..20 {
        let response = client
            .get(&url)
            .send()
            .await
            .expect("GET through the gateway");
        assert_eq!(response.status(), 200, "GET {n}");
        assert_eq!(response.text().await.expect("body"), "ok");
    }
    assert_eq!(node.requests.load(Ordering::SeqCst), 20);
    // A POST must not be sent twice, so a closed pooled connection is noticed before it is used.
    // The test waits for the node's close to be sent, so it is the gateway's check and not luck
    // that decides.
    while node.closed.try_recv().is_ok() {}
    for n in 0..20 {
        let response = client
            .post(&url)
            .body("{}")
            .send()
            .await
            .expect("POST through the gateway");
        assert_eq!(response.status(), 200, "POST {n}");
        tokio::time::timeout(PATIENCE, node.closed.recv())
            .await
            .expect("the node closed the connection");
    }
    assert_eq!(
        node.requests.load(Ordering::SeqCst),
        40,
        "every request reached the node exactly once"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn answers_of_every_framing_pass_through_byte_for_byte() {
    // 1 MiB, larger than the gateway buffers, with a pattern so a lost or shifted byte shows.
    let large: Vec<u8> = (0..1024 * 1024).map(|n: usize| (n % 251) as u8).collect();
    let expected_large = large.clone();
    let node = WireNode::start(false, move |method, path| {
        let mut out = Vec::new();
        match path {
            "/large" => {
                out.extend(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", large.len()).into_bytes());
                if method != "HEAD" {
                    out.extend(&large);
                }
            }
            "/chunked" => {
                out.extend(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-hop: 1\r\nconnection: x-hop\r\n\r\n");
                for part in ["first ", "second ", "third"] {
                    out.extend(format!("{:x}\r\n{part}\r\n", part.len()).into_bytes());
                }
                out.extend(b"0\r\nx-trailer: t\r\n\r\n");
            }
            "/interim" => {
                out.extend(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n");
                out.extend(b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone");
            }
            _ => out.extend(b"HTTP/1.1 204 No Content\r\n\r\n"),
        }
        out
    })
    .await;
    let gateway = Gateway::start(gateway_config(std::slice::from_ref(&node.url)))
        .await
        .expect("gateway");
    let client = reqwest::Client::new();
    let base = gateway.url();
    for round in 0..3 {
        let large = client
            .get(format!("{base}/large"))
            .send()
            .await
            .expect("large");
        assert_eq!(large.status(), 200);
        assert_eq!(
            large.bytes().await.expect("body").as_ref(),
            &expected_large[..],
            "round {round}"
        );
        let chunked = client
            .get(format!("{base}/chunked"))
            .send()
            .await
            .expect("chunked");
        assert!(
            chunked.headers().get("x-hop").is_none(),
            "a hop header named by Connection passed"
        );
        assert_eq!(chunked.text().await.expect("body"), "first second third");
        let interim = client
            .get(format!("{base}/interim"))
            .send()
            .await
            .expect("interim");
        assert_eq!(interim.status(), 201);
        assert_eq!(interim.text().await.expect("body"), "done");
        let head = client
            .head(format!("{base}/large"))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.headers()["content-length"], "1048576");
        let empty = client
            .get(format!("{base}/empty"))
            .send()
            .await
            .expect("204");
        assert_eq!(empty.status(), 204);
    }
    // All of that on kept connections to the node: nothing was refused or retried.
    assert_eq!(node.requests.load(Ordering::SeqCst), 15);
    gateway.shutdown().await;
}
