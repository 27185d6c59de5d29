//! Issue #33 (5): connection limits on every listener — a half-sent request head is closed
//! after the header read timeout (the hyper path, the lean SSE path, the operators' listener),
//! and a listener at its connection cap accepts nothing more until a connection closes.

use crate::support::TestApp;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(600);

/// Sends `partial` (a request head cut short) and waits for the server to hang up; returns how
/// long it took, or `None` if it still had not after `patience`.
async fn time_to_hang_up(addr: SocketAddr, partial: &[u8], patience: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(partial).await.expect("write");
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                // An error answer (408/400) is fine; what counts is the hang-up.
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
        config.http.header_read_timeout = HEADER_READ_TIMEOUT;
    })
    .await;
    let server = app.server.as_ref().expect("server");
    let public = server.addr;
    let admin = server.admin_addr.expect("admin listener");
    let cases: [(&str, SocketAddr, &[u8]); 4] = [
        (
            "hyper path",
            public,
            b"GET /api/v1/events HTTP/1.1\r\nhost: x\r\nx-slow: ",
        ),
        (
            "lean SSE path",
            public,
            b"GET /api/v1/push/sse?channel=user:x HTTP/1.1\r\nhost: x\r\n",
        ),
        ("nothing at all", public, b""),
        (
            "operators' listener",
            admin,
            b"GET /metrics HTTP/1.1\r\nhost: x\r\n",
        ),
    ];
    for (name, addr, partial) in cases {
        let took = time_to_hang_up(addr, partial, Duration::from_secs(8)).await;
        let took = took.unwrap_or_else(|| panic!("{name}: the connection is still open after 8 s"));
        assert!(
            took >= HEADER_READ_TIMEOUT / 2,
            "{name}: closed after {took:?}, before its time"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_listener_at_its_connection_cap_accepts_nothing_more() {
    let app = TestApp::spawn_with(|config| {
        config.http.max_connections = 4;
    })
    .await;
    let addr = app.server.as_ref().expect("server").addr;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the node accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let mut fifth = TcpStream::connect(addr)
        .await
        .expect("the backlog takes it");
    fifth.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(800), fifth.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "a fifth connection was served at a cap of four: {}",
        String::from_utf8_lossy(&answer)
    );
    // One closes: the waiting connection is accepted and answered.
    drop(idle.pop());
    tokio::time::timeout(Duration::from_secs(10), fifth.read_to_end(&mut answer))
        .await
        .expect("answered once a place is free")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(idle);
    app.stop().await;
}
