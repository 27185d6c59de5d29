//! The RTMP ingest over real TCP: a publisher speaking RTMP (`rml_rtmp`'s client session, as
//! an encoder would) against the listener, and clients that misbehave.

use bytes::Bytes;
use marquee_media::{spawn_rtmp_listener, IngestLimits, LiveStreams, PublishGate, StreamStatus};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(10);

/// Stream keys → streams (events).
struct Keys(HashMap<String, String>);

#[async_trait::async_trait]
impl PublishGate for Keys {
    async fn stream_for(&self, _app: &str, stream_key: &str) -> Option<String> {
        self.0.get(stream_key).cloned()
    }
}

struct Ingest {
    addr: SocketAddr,
    streams: Arc<LiveStreams>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn ingest(limits: IngestLimits) -> Ingest {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let streams = LiveStreams::new(Duration::from_secs(2));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gate = Arc::new(Keys(HashMap::from([
        ("key-a".to_string(), "event-a".to_string()),
        ("key-b".to_string(), "event-b".to_string()),
    ])));
    spawn_rtmp_listener(listener, gate, streams.clone(), limits, stopped);
    Ingest {
        addr,
        streams,
        _stop: stop,
    }
}

/// An encoder: handshake, connect, publish, then media.
struct Encoder {
    socket: TcpStream,
    session: ClientSession,
}

impl Encoder {
    async fn send(&mut self, results: Vec<ClientSessionResult>) -> std::io::Result<()> {
        for result in results {
            if let ClientSessionResult::OutboundResponse(packet) = result {
                self.socket.write_all(&packet.bytes).await?;
            }
        }
        Ok(())
    }

    /// Reads until `wanted` is raised; `Err` with what happened instead.
    async fn until(&mut self, wanted: fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let mut buffer = vec![0u8; 8192];
        loop {
            let read = tokio::time::timeout(PATIENCE, self.socket.read(&mut buffer))
                .await
                .map_err(|_| "no answer".to_string())?
                .map_err(|error| error.to_string())?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
            let results = self
                .session
                .handle_input(&buffer[..read])
                .map_err(|error| format!("{error:?}"))?;
            let mut found = false;
            let mut refused = None;
            for result in &results {
                if let ClientSessionResult::RaisedEvent(event) = result {
                    if wanted(event) {
                        found = true;
                    }
                    if let ClientSessionEvent::UnhandleableAmf0Command {
                        command_name,
                        additional_values,
                        ..
                    } = event
                    {
                        if command_name == "onStatus" {
                            refused = Some(format!("{additional_values:?}"));
                        }
                    }
                }
            }
            self.send(results)
                .await
                .map_err(|error| error.to_string())?;
            if found {
                return Ok(());
            }
            if let Some(refused) = refused {
                return Err(refused);
            }
        }
    }

    async fn publish(addr: SocketAddr, key: &str) -> Result<Encoder, String> {
        let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| format!("{e:?}"))?;
        socket.write_all(&p0p1).await.map_err(|e| e.to_string())?;
        let mut buffer = vec![0u8; 8192];
        let remaining = loop {
            let read = socket.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("closed during the handshake".into());
            }
            match handshake
                .process_bytes(&buffer[..read])
                .map_err(|e| format!("{e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                    break remaining_bytes;
                }
            }
        };
        let (session, initial) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
        let mut encoder = Encoder { socket, session };
        encoder.send(initial).await.map_err(|e| e.to_string())?;
        if !remaining.is_empty() {
            let results = encoder
                .session
                .handle_input(&remaining)
                .map_err(|e| format!("{e:?}"))?;
            encoder.send(results).await.map_err(|e| e.to_string())?;
        }
        let request = encoder
            .session
            .request_connection("live".into())
            .map_err(|e| format!("{e:?}"))?;
        encoder
            .send(vec![request])
            .await
            .map_err(|e| e.to_string())?;
        encoder
            .until(|event| matches!(event, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        let request = encoder
            .session
            .request_publishing(key.into(), PublishRequestType::Live)
            .map_err(|e| format!("{e:?}"))?;
        encoder
            .send(vec![request])
            .await
            .map_err(|e| e.to_string())?;
        encoder
            .until(|event| matches!(event, ClientSessionEvent::PublishRequestAccepted))
            .await?;
        Ok(encoder)
    }

    async fn video(&mut self, timestamp: u32, body: &[u8]) {
        let packet = self
            .session
            .publish_video_data(
                Bytes::copy_from_slice(body),
                RtmpTimestamp::new(timestamp),
                false,
            )
            .expect("publishing");
        self.send(vec![packet]).await.expect("sent");
    }

    async fn stop(mut self) {
        let results = self.session.stop_publishing().expect("stop");
        self.send(results).await.expect("sent");
        let _ = self.socket.shutdown().await;
    }
}

fn timestamp_of(tag: &[u8]) -> u32 {
    u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]])
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_publisher_with_the_current_key_goes_live_and_its_frames_arrive_as_flv() {
    let ingest = ingest(IngestLimits::default()).await;
    let mut encoder = Encoder::publish(ingest.addr, "key-a")
        .await
        .expect("accepted");
    assert_eq!(ingest.streams.status("event-a"), StreamStatus::Live);
    let (head, mut tags) = ingest.streams.subscribe("event-a").expect("stream");
    assert_eq!(&head[..3], b"FLV");
    encoder.video(0, &[0x17, 0, 0, 0, 0, 1, 2, 3]).await;
    encoder.video(40, &[0x27, 1, 0, 0, 0, 9]).await;
    let first = tokio::time::timeout(PATIENCE, tags.recv())
        .await
        .expect("tag")
        .expect("open");
    let second = tokio::time::timeout(PATIENCE, tags.recv())
        .await
        .expect("tag")
        .expect("open");
    assert_eq!(first[0], 9, "a video tag");
    assert_eq!(&first[11..19], &[0x17, 0, 0, 0, 0, 1, 2, 3]);
    assert_eq!((timestamp_of(&first), timestamp_of(&second)), (0, 40));
    // A reader joining now starts with the H.264 configuration.
    let (late, _) = ingest.streams.subscribe("event-a").expect("stream");
    assert_eq!(late.len(), 13 + 11 + 8 + 4);
    let mut changes = ingest.streams.changes();
    encoder.stop().await;
    let ended = tokio::time::timeout(PATIENCE, changes.recv())
        .await
        .expect("the stream ends when the encoder stops")
        .expect("changes");
    assert_eq!(ended.stream, "event-a");
    assert_eq!(ended.status, StreamStatus::Ended);
}

#[tokio::test]
async fn a_wrong_key_and_a_second_publisher_on_a_live_key_are_refused() {
    let ingest = ingest(IngestLimits::default()).await;
    let refused = Encoder::publish(ingest.addr, "not-a-key")
        .await
        .err()
        .expect("refused");
    assert!(
        refused.contains("not valid") || refused.contains("closed"),
        "{refused}"
    );
    assert_eq!(ingest.streams.status("event-a"), StreamStatus::Idle);
    let _live = Encoder::publish(ingest.addr, "key-a").await.expect("first");
    let second = Encoder::publish(ingest.addr, "key-a")
        .await
        .err()
        .expect("second refused");
    assert!(
        second.contains("another publisher") || second.contains("closed"),
        "{second}"
    );
    // Another event's key is its own stream.
    let _other = Encoder::publish(ingest.addr, "key-b")
        .await
        .expect("other event");
    assert_eq!(ingest.streams.status("event-b"), StreamStatus::Live);
}

#[tokio::test]
async fn a_publisher_that_drops_and_comes_back_continues_the_same_stream() {
    let ingest = ingest(IngestLimits::default()).await;
    let (_, mut tags) = {
        let mut encoder = Encoder::publish(ingest.addr, "key-a")
            .await
            .expect("accepted");
        let subscription = ingest.streams.subscribe("event-a").expect("stream");
        encoder.video(0, &[0x17, 1, 0, 0, 0]).await;
        encoder.video(2_000, &[0x27, 1, 0, 0, 0]).await;
        let mut tags = subscription.1;
        for _ in 0..2 {
            tokio::time::timeout(PATIENCE, tags.recv())
                .await
                .expect("tag")
                .expect("open");
        }
        // The network drops: no goodbye.
        drop(encoder);
        (subscription.0, tags)
    };
    let streams = ingest.streams.clone();
    eventually("the ingest to notice the drop", move || {
        !streams.has_publisher("event-a")
    })
    .await;
    assert_eq!(
        ingest.streams.status("event-a"),
        StreamStatus::Live,
        "within the grace"
    );
    let mut back = Encoder::publish(ingest.addr, "key-a").await.expect("back");
    back.video(0, &[0x17, 1, 0, 0, 0]).await;
    let tag = tokio::time::timeout(PATIENCE, tags.recv())
        .await
        .expect("tag")
        .expect("open");
    assert_eq!(timestamp_of(&tag), 2_001, "the same stream, time moving on");
}

#[tokio::test]
async fn garbage_a_truncated_handshake_and_an_absurd_chunk_size_end_the_connection_not_the_server()
{
    let limits = IngestLimits {
        setup_timeout: Duration::from_millis(500),
        ..IngestLimits::default()
    };
    let ingest = ingest(limits).await;
    // Garbage: not RTMP version 3.
    let mut garbage = TcpStream::connect(ingest.addr).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert_closed(&mut garbage).await;
    // A handshake that stops half way is dropped at the setup deadline.
    let mut truncated = TcpStream::connect(ingest.addr).await.expect("connect");
    let mut handshake = Handshake::new(PeerType::Client);
    let p0p1 = handshake.generate_outbound_p0_and_p1().expect("p0p1");
    truncated.write_all(&p0p1[..700]).await.expect("write");
    assert_closed(&mut truncated).await;
    // A flood before any publish is cut off.
    let mut flood = TcpStream::connect(ingest.addr).await.expect("connect");
    let _ = flood.write_all(&[3u8; 200 * 1024]).await;
    assert_closed(&mut flood).await;
    // A chunk size of 2^31 - 1 right after the handshake.
    let mut absurd = handshaken(ingest.addr).await;
    let mut set_chunk_size = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0];
    set_chunk_size.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    absurd.write_all(&set_chunk_size).await.expect("write");
    assert_closed(&mut absurd).await;
    // And the ingest still takes a real publisher.
    Encoder::publish(ingest.addr, "key-a")
        .await
        .expect("still serving");
}

/// A connection past the handshake, speaking nothing yet.
async fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut handshake = Handshake::new(PeerType::Client);
    socket
        .write_all(&handshake.generate_outbound_p0_and_p1().expect("p0p1"))
        .await
        .expect("write");
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = socket.read(&mut buffer).await.expect("read");
        assert!(read > 0, "closed during the handshake");
        match handshake.process_bytes(&buffer[..read]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await.expect("write")
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).await.expect("write");
                return socket;
            }
        }
    }
}

async fn assert_closed(socket: &mut TcpStream) {
    let mut buffer = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let read = tokio::time::timeout_at(deadline, socket.read(&mut buffer))
            .await
            .expect("the server closes the connection");
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Completes a client handshake against a connection without a socket.
fn handshake_sans_io(connection: &mut marquee_media::RtmpConnection) {
    use marquee_media::Incoming;
    let mut client = Handshake::new(PeerType::Client);
    let mut outbound = client.generate_outbound_p0_and_p1().expect("p0p1");
    loop {
        let answer: Vec<u8> = connection
            .receive(&outbound)
            .expect("handshake")
            .into_iter()
            .filter_map(|item| match item {
                Incoming::Send(bytes) => Some(bytes),
                _ => None,
            })
            .flatten()
            .collect();
        match client.process_bytes(&answer).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => outbound = response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                connection.receive(&response_bytes).expect("c2");
                return;
            }
        }
    }
}

#[test]
fn a_header_that_shrinks_a_message_half_way_ends_the_connection_not_the_thread() {
    // Found by the `rtmp_ingest` fuzz target: rml_rtmp 0.8 subtracts past zero (a panic with
    // overflow checks, garbage without) when a type-1 header gives a message that is already
    // partly received a smaller length.
    let mut connection = marquee_media::RtmpConnection::new(IngestLimits::default());
    handshake_sans_io(&mut connection);
    // A command message of 200 bytes on chunk stream 3: its first 128 (the default chunk size).
    let mut bytes = vec![0x03, 0, 0, 0, 0, 0, 200, 20, 0, 0, 0, 0];
    bytes.extend(std::iter::repeat_n(5u8, 128));
    // Then a type-1 header on the same chunk stream saying the message is 50 bytes long.
    bytes.extend([0x43, 0, 0, 0, 0, 0, 50, 20]);
    bytes.extend(std::iter::repeat_n(5u8, 50));
    let received = connection.receive(&bytes);
    assert_eq!(received, Err(marquee_media::RtmpError::Library));
    assert!(
        connection.receive(&[0x03]).is_err(),
        "the connection stays closed"
    );
}
