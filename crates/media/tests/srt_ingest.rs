//! The SRT ingest over real UDP: ffmpeg (libsrt) publishing MPEG-TS as an encoder would, and
//! callers that misbehave.

use marquee_media::{flv, spawn_srt_listener, LiveStreams, PublishGate, SrtSettings, StreamStatus};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(20);

struct Keys(HashMap<String, String>);

#[async_trait::async_trait]
impl PublishGate for Keys {
    async fn stream_for(&self, app: &str, stream_key: &str) -> Option<String> {
        if app != "live" {
            return None;
        }
        self.0.get(stream_key).cloned()
    }
}

struct Ingest {
    addr: SocketAddr,
    streams: Arc<LiveStreams>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn ingest(grace: Duration) -> Ingest {
    let streams = LiveStreams::new(grace);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gate = Arc::new(Keys(HashMap::from([(
        "live_good".to_string(),
        "event-s".to_string(),
    )])));
    let ingest = spawn_srt_listener(
        ([127, 0, 0, 1], 0).into(),
        gate,
        streams.clone(),
        SrtSettings {
            idle_timeout: Duration::from_secs(3),
            ..SrtSettings::default()
        },
        stopped,
    )
    .await
    .expect("srt binds");
    Ingest {
        addr: ingest.local_addr,
        streams,
        _stop: stop,
    }
}

/// ffmpeg sending `seconds` of test picture and tone, in real time, over SRT.
fn publish(addr: SocketAddr, stream_id: &str, seconds: u32, video: &[&str]) -> Child {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"]);
    command.args(["-f", "lavfi", "-i"]);
    command.arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"));
    command.args(["-f", "lavfi", "-i"]);
    command.arg(format!("sine=frequency=440:duration={seconds}"));
    command.args(video);
    command.args(["-c:a", "aac", "-f", "mpegts"]);
    command.arg(format!(
        "srt://{addr}?streamid={}&latency=120000",
        urlencode(stream_id)
    ));
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (scripts/test installs it)")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

const H264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"];

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_srt_publisher_with_the_key_arrives_as_flv_and_ends_the_show_by_closing_its_socket() {
    // A grace far past the test's patience: only the caller's close can end the show in time.
    let ingest = ingest(Duration::from_secs(120)).await;
    let mut changes = ingest.streams.changes();
    let mut encoder = publish(ingest.addr, "#!::r=live/live_good,m=publish", 8, H264);
    let change = tokio::time::timeout(PATIENCE, changes.recv())
        .await
        .expect("goes live in time")
        .expect("change");
    assert_eq!(change.stream, "event-s");
    assert_eq!(change.status, StreamStatus::Live);
    let (_, mut tags) = ingest.streams.subscribe("event-s").expect("stream");
    let mut video_header = false;
    let mut audio_header = false;
    let mut last_video = 0;
    let mut video_frames = 0;
    while !(video_header && audio_header && video_frames >= 25) {
        let tag = tokio::time::timeout(PATIENCE, tags.recv())
            .await
            .expect("tags in time")
            .expect("tag");
        let parsed = flv::tags_of(&tag).next().expect("one tag");
        match parsed.kind {
            flv::TagKind::Video if flv::is_video_sequence_header(parsed.body) => {
                video_header = true
            }
            flv::TagKind::Audio if flv::is_audio_sequence_header(parsed.body) => {
                audio_header = true
            }
            flv::TagKind::Video => {
                assert!(video_header, "the configuration comes before frames");
                assert_eq!(parsed.body[0] & 0x0F, 7, "H.264");
                assert!(parsed.timestamp >= last_video, "timestamps move on");
                last_video = parsed.timestamp;
                video_frames += 1;
            }
            _ => {}
        }
    }
    // A second publisher on the live key is refused by the listener.
    let mut second = publish(ingest.addr, "live_good", 1, H264);
    let refused = tokio::time::timeout(PATIENCE, second.wait())
        .await
        .expect("the second publisher is answered in time")
        .expect("ffmpeg exits");
    assert!(!refused.success(), "a second publisher on a live key fails");
    assert!(ingest.streams.has_publisher("event-s"), "the first stays");
    let finished = tokio::time::timeout(PATIENCE, encoder.wait())
        .await
        .expect("the show ends in time")
        .expect("ffmpeg exits");
    assert!(finished.success(), "the publisher was not cut off");
    // ffmpeg closes its SRT socket at the end of its input (an SRT shutdown): that is the
    // caller's unpublish, and the show ends without waiting out the grace.
    eventually("the show ends on the caller's close", || {
        ingest.streams.status("event-s") == StreamStatus::Ended
    })
    .await;
    assert_eq!(ingest.streams.problem("event-s"), None, "a clean end");
}

#[tokio::test]
async fn a_wrong_key_a_playback_request_and_garbage_are_refused_and_the_port_lives_on() {
    let ingest = ingest(Duration::from_secs(1)).await;
    for stream_id in [
        "live_wrong",
        "#!::r=live/live_good,m=request",
        "other/live_good",
    ] {
        let mut refused = publish(ingest.addr, stream_id, 1, H264);
        let status = tokio::time::timeout(PATIENCE, refused.wait())
            .await
            .expect("answered in time")
            .expect("ffmpeg exits");
        assert!(!status.success(), "{stream_id} is refused");
        assert_eq!(ingest.streams.status("event-s"), StreamStatus::Idle);
    }
    // Datagrams that are not SRT, and a handshake cut short.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xFF; 1500][..],
        &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[
            0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0,
        ][..],
    ] {
        socket.send_to(garbage, ingest.addr).await.expect("send");
    }
    let mut good = publish(ingest.addr, "live_good", 2, H264);
    eventually("the right key still goes live", || {
        ingest.streams.status("event-s") == StreamStatus::Live
    })
    .await;
    let status = tokio::time::timeout(PATIENCE, good.wait())
        .await
        .expect("ends in time")
        .expect("ffmpeg exits");
    assert!(status.success());
}

#[tokio::test]
async fn an_srt_stream_ffmpeg_cannot_remux_ends_with_the_reason() {
    let ingest = ingest(Duration::from_secs(30)).await;
    // MPEG-2 video fits MPEG-TS, not FLV (or any ladder this platform builds).
    let mut encoder = publish(ingest.addr, "live_good", 4, &["-c:v", "mpeg2video"]);
    eventually("the stream ends", || {
        ingest.streams.status("event-s") == StreamStatus::Ended
    })
    .await;
    let problem = ingest.streams.problem("event-s").expect("a problem");
    assert!(problem.contains("SRT stream cannot be read"), "{problem}");
    let _ = tokio::time::timeout(PATIENCE, encoder.wait()).await;
}

#[tokio::test]
async fn an_srt_publisher_that_drops_and_comes_back_continues_the_same_stream() {
    let ingest = ingest(Duration::from_secs(15)).await;
    let mut changes = ingest.streams.changes();
    let mut first = publish(ingest.addr, "live_good", 30, H264);
    eventually("live", || {
        ingest.streams.status("event-s") == StreamStatus::Live
            && ingest.streams.bytes_received("event-s") > 0
    })
    .await;
    // The encoder dies without a word (no SRT shutdown): the ingest notices once the peer is
    // idle past its timeout and the grace starts.
    first.start_kill().expect("kill");
    let _ = first.wait().await;
    eventually("the dead publisher is noticed", || {
        !ingest.streams.has_publisher("event-s")
    })
    .await;
    let before = ingest.streams.bytes_received("event-s");
    // Long enough that its packets flow well before its close ends the show.
    let mut again = publish(ingest.addr, "live_good", 6, H264);
    eventually("the returning publisher sends", || {
        ingest.streams.bytes_received("event-s") > before
    })
    .await;
    assert_eq!(ingest.streams.status("event-s"), StreamStatus::Live);
    let status = tokio::time::timeout(PATIENCE, again.wait())
        .await
        .expect("ends in time")
        .expect("ffmpeg exits");
    assert!(status.success());
    // The returning publisher closed its socket, which ends the show.
    let mut seen = Vec::new();
    while seen.last() != Some(&StreamStatus::Ended) {
        let change = tokio::time::timeout(PATIENCE, changes.recv())
            .await
            .expect("the close ends the show in time")
            .expect("change");
        seen.push(change.status);
    }
    assert_eq!(
        seen,
        [StreamStatus::Live, StreamStatus::Ended],
        "one show, never ended in between"
    );
}
