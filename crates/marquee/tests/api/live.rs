//! Live streaming end to end: a real ffmpeg publishes ffmpeg's test sources over RTMP or SRT to a real
//! node, whose supervised ffmpeg transcodes and packages them; the test fetches the playlists
//! and segments over HTTP with playback tokens and checks them with ffprobe.

use crate::holds::{on_sale, OnSale};
use crate::support::{TestApp, JWT_SECRET};
use marquee_media::PlaybackTokens;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A node with RTMP and SRT ingest on ephemeral ports.
async fn live_node(max_transcodes: usize) -> TestApp {
    live_node_with_grace(max_transcodes, Duration::from_secs(2)).await
}

async fn live_node_with_grace(max_transcodes: usize, grace: Duration) -> TestApp {
    TestApp::spawn_with(move |config| {
        config.live.rtmp_listen = Some(([127, 0, 0, 1], 0).into());
        config.live.srt_listen = Some(([127, 0, 0, 1], 0).into());
        config.live.max_transcodes = max_transcodes;
        config.live.reconnect_grace = grace;
        config.live.preset = "ultrafast".into();
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    })
    .await
}

async fn buy_ticket(sale: &OnSale, seat: usize) -> String {
    let (fan, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&fan, json!({"seat_ids": [sale.seat_ids[seat]]}))
        .await
        .expect(StatusCode::CREATED);
    sale.order(&fan, hold["id"].as_str().expect("hold id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    fan
}

async fn issue_key(sale: &OnSale) -> Value {
    sale.app
        .post(
            &format!("/api/v1/events/{}/stream", sale.event_id),
            Some(&sale.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::CREATED)
}

/// Where an encoder publishes with the key `issue_key` answered: `{rtmp_url}/{stream_key}`.
fn rtmp_publish_url(key: &Value) -> String {
    format!(
        "{}/{}",
        key["rtmp_url"].as_str().expect("rtmp_url"),
        key["stream_key"].as_str().expect("key")
    )
}

/// ffmpeg publishing `seconds` of test picture and tone, in real time, as an encoder would:
/// H.264 with a keyframe every 2 s, AAC.
fn publish(url: &str, seconds: u32, video: &[&str], audio: bool) -> Child {
    publish_as(url, seconds, video, audio, "flv")
}

/// Like [`publish`], in `format` (`flv` for RTMP, `mpegts` for SRT).
fn publish_as(url: &str, seconds: u32, video: &[&str], audio: bool, format: &str) -> Child {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"]);
    if !video.is_empty() {
        command.args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=15"]);
    }
    if audio {
        command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    command.args(["-t", &seconds.to_string()]);
    command.args(video);
    if audio {
        command.args(["-c:a", "aac", "-b:a", "96k"]);
    }
    command
        .args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (scripts/test installs it)")
}

const H264: [&str; 14] = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "30",
    "-keyint_min",
    "30",
    "-sc_threshold",
    "0",
];

async fn stream_of(app: &TestApp, event: &str, token: &str) -> Value {
    app.get(&format!("/api/v1/events/{event}/stream"), Some(token))
        .await
        .expect(StatusCode::OK)
}

/// Waits for the stream to reach `status`, following `event:{id}:stream` by long polling (each
/// poll returns as soon as the status changes).
async fn await_status(app: &TestApp, event: &str, token: &str, status: &str) -> Value {
    let mut since = 0;
    for _ in 0..60 {
        let stream = stream_of(app, event, token).await;
        if stream["status"] == status {
            return stream;
        }
        let polled = app
            .get(
                &format!(
                    "/api/v1/push/poll?channel=event:{event}:stream&since={since}&timeout_s=5"
                ),
                Some(token),
            )
            .await
            .expect(StatusCode::OK);
        if let Some(offset) = polled
            .as_array()
            .and_then(|messages| messages.last())
            .and_then(|message| message["offset"].as_u64())
        {
            since = offset;
        }
    }
    panic!("the stream never became {status}");
}

/// The path part of an absolute or relative playback URL.
fn path_of(url: &str) -> String {
    match url.find("/live/") {
        Some(at) => url[at..].to_string(),
        None => url.to_string(),
    }
}

/// The body at `path`, which must be served (`what` names it in a failure).
async fn fetch_bytes(app: &TestApp, path: &str, what: &str) -> bytes::Bytes {
    let response = fetch(app, path).await;
    assert_eq!(response.status(), StatusCode::OK, "{what}: {path}");
    response.bytes().await.expect(what)
}

async fn fetch(app: &TestApp, path: &str) -> reqwest::Response {
    reqwest::get(format!("{}{path}", app.url))
        .await
        .expect("media request")
}

/// Frames of a segment (its init segment before it): the video's size, and per frame whether
/// it is a keyframe and its timestamp.
async fn probe_segment(init: &[u8], segment: &[u8]) -> (u64, u64, Vec<(bool, f64)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("segment.mp4");
    let mut bytes = init.to_vec();
    bytes.extend_from_slice(segment);
    tokio::fs::write(&file, bytes).await.expect("write");
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=width,height:frame=key_frame,pts_time",
        ])
        .args(["-of", "json"])
        .arg(&file)
        .output()
        .await
        .expect("ffprobe runs");
    assert!(output.status.success(), "ffprobe: {output:?}");
    let probed: Value = serde_json::from_slice(&output.stdout).expect("ffprobe json");
    let stream = &probed["streams"][0];
    let frames = probed["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|frame| {
            (
                frame["key_frame"] == 1,
                frame["pts_time"]
                    .as_str()
                    .and_then(|time| time.parse().ok())
                    .unwrap_or(f64::NAN),
            )
        })
        .collect();
    (
        stream["width"].as_u64().unwrap_or(0),
        stream["height"].as_u64().unwrap_or(0),
        frames,
    )
}

/// A segment (of 15 fps video) is `size`, starts on a keyframe and spans 2 s.
async fn assert_two_second_segment(init: &[u8], segment: &[u8], size: (u64, u64)) {
    let (width, height, frames) = probe_segment(init, segment).await;
    assert_eq!((width, height), size);
    assert!(
        frames.first().is_some_and(|frame| frame.0),
        "starts on a keyframe"
    );
    let span = frames.last().map_or(0.0, |frame| frame.1) - frames[0].1 + 1.0 / 15.0;
    assert!((span - 2.0).abs() < 0.15, "frames span 2 s: {span}");
}

/// Checks an ended show's packaging: the master playlist lists the source (720p) and every
/// lower rung; every segment of every rendition starts on a keyframe, is its rendition's size
/// and lasts about 2 s; the MPD lists the same renditions and segments. Returns the
/// playlists' base path.
async fn assert_packaged(app: &TestApp, hls: &str, dash: &str) -> String {
    // The master playlist lists the source and every lower rung, never an upscale.
    let response = fetch(app, hls).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=1",
        "playlists are short-lived"
    );
    let master_text = response.bytes().await.expect("master");
    let master = match m3u8_rs::parse_playlist_res(&master_text) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) => master,
        other => panic!("not a master playlist: {other:?}"),
    };
    let mut sizes: Vec<(u64, u64)> = master
        .variants
        .iter()
        .map(|variant| {
            let resolution = variant.resolution.expect("resolution");
            (resolution.width, resolution.height)
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [(640, 360), (854, 480), (1280, 720)]);
    let base = hls.trim_end_matches("master.m3u8").to_string();

    // Every segment of every rendition starts on a keyframe, is the rendition's size and
    // lasts about 2 s.
    let mut hls_segments = Vec::new();
    for variant in &master.variants {
        let resolution = variant.resolution.expect("resolution");
        let text = fetch(app, &format!("{base}{}", variant.uri))
            .await
            .bytes()
            .await
            .expect("media playlist");
        let playlist = match m3u8_rs::parse_playlist_res(&text) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(playlist)) => playlist,
            other => panic!("not a media playlist: {other:?}"),
        };
        assert!(playlist.end_list, "an ended show's playlist is complete");
        assert_eq!(playlist.target_duration, 2);
        let init_uri = playlist.segments[0]
            .map
            .as_ref()
            .expect("EXT-X-MAP")
            .uri
            .clone();
        let init = fetch(app, &format!("{base}{init_uri}"))
            .await
            .bytes()
            .await
            .expect("init");
        let whole = playlist.segments.len() - 1;
        assert!(
            whole >= 4,
            "12 s make at least 5 segments: {}",
            playlist.segments.len()
        );
        for segment in &playlist.segments[..whole] {
            assert!(
                (segment.duration - 2.0).abs() < 0.15,
                "segments last 2 s: {}",
                segment.duration
            );
            let response = fetch(app, &format!("{base}{}", segment.uri)).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            let bytes = response.bytes().await.expect("segment");
            assert_two_second_segment(&init, &bytes, (resolution.width, resolution.height)).await;
        }
        hls_segments.push(playlist.segments.len());
    }

    // The MPD parses and agrees: the same sizes, the same number of segments.
    let mpd_text = fetch(app, dash).await.text().await.expect("mpd");
    let mpd = roxmltree::Document::parse(&mpd_text).expect("the MPD is XML");
    let mut mpd_sizes: Vec<(u64, u64)> = mpd
        .descendants()
        .filter(|node| node.has_tag_name("Representation") && node.attribute("width").is_some())
        .map(|node| {
            let number = |name| {
                node.attribute(name)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            (number("width"), number("height"))
        })
        .collect();
    mpd_sizes.sort_unstable();
    assert_eq!(mpd_sizes, sizes);
    let timelines: Vec<usize> = mpd
        .descendants()
        .filter(|node| node.has_tag_name("SegmentTimeline"))
        .map(|timeline| {
            timeline
                .children()
                .filter(|node| node.has_tag_name("S"))
                .map(|s| {
                    1 + s
                        .attribute("r")
                        .and_then(|r| r.parse::<usize>().ok())
                        .unwrap_or(0)
                })
                .sum()
        })
        .collect();
    for count in &hls_segments {
        assert!(
            timelines.iter().any(|timeline| timeline == count),
            "HLS and DASH list the same segments: {hls_segments:?} / {timelines:?}"
        );
    }
    base
}

/// The event's recordings once the transcoder has stored one (it does so after writing the
/// show's last segments and playlists).
async fn await_recording(sale: &OnSale) -> Value {
    await_recordings(sale, 1).await
}

/// The event's recordings once there are `count`: the transcoder stores each run's recording
/// after it has waited for (reaped) that run's ffmpeg, a crashed run's too.
async fn await_recordings(sale: &OnSale, count: usize) -> Value {
    let mut recordings = Value::Null;
    for _ in 0..300 {
        recordings = sale
            .app
            .get(
                &format!("/api/v1/events/{}/recordings", sale.event_id),
                Some(&sale.organizer),
            )
            .await
            .expect(StatusCode::OK);
        if recordings["items"]
            .as_array()
            .is_some_and(|items| items.len() >= count)
        {
            return recordings;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{count} recordings were never stored: {recordings}");
}

/// ffmpeg publishing `seconds` of 720p test picture and tone over SRT (MPEG-TS), as a
/// hardware encoder would.
fn publish_srt(url: &str, seconds: u32) -> Child {
    publish_as(url, seconds, &H264, true, "mpegts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_published_over_srt_plays_in_every_rendition() {
    let sale = on_sale(live_node(2).await).await;
    let fan = buy_ticket(&sale, 0).await;
    let event = sale.event_id.clone();
    let key = issue_key(&sale).await;
    let stream_key = key["stream_key"].as_str().expect("key");
    let srt_url = key["srt_url"].as_str().expect("srt_url").to_string();
    assert!(
        srt_url.starts_with("srt://127.0.0.1:")
            && srt_url.ends_with(&format!("?streamid={stream_key}")),
        "{srt_url}"
    );

    // A made-up key is refused at the SRT handshake.
    let wrong = srt_url.replace(stream_key, "live_not-a-key");
    let refused = publish_srt(&wrong, 2)
        .wait_with_output()
        .await
        .expect("ffmpeg ends");
    assert!(!refused.status.success(), "a wrong key is refused");
    assert_eq!(stream_of(&sale.app, &event, &fan).await["status"], "idle");

    let mut encoder = publish_srt(&srt_url, 12);
    let live = await_status(&sale.app, &event, &fan, "live").await;
    let hls = path_of(live["hls_url"].as_str().expect("hls_url"));
    let dash = path_of(live["dash_url"].as_str().expect("dash_url"));
    let encoded = encoder.wait().await.expect("encoder finishes");
    assert!(encoded.success(), "the encoder published the whole show");
    // The encoder closes its SRT socket at the end: the show ends as on an RTMP unpublish.
    await_status(&sale.app, &event, &fan, "ended").await;
    let recordings = await_recording(&sale).await;
    assert_packaged(&sale.app, &hls, &dash).await;
    assert!(recordings["items"][0]["bytes"].as_u64().unwrap_or(0) > 4_096);
    sale.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_published_over_rtmp_plays_in_every_rendition_for_ticket_holders_only() {
    let sale = on_sale(live_node(2).await).await;
    let fan = buy_ticket(&sale, 0).await;
    let (stranger, _) = sale.app.register("fan").await;
    let event = sale.event_id.clone();

    // Only the organizer issues keys; ticket holders, the organizer and admins see the stream.
    let (other_organizer, _) = sale.app.register("organizer").await;
    sale.app
        .post(
            &format!("/api/v1/events/{event}/stream"),
            Some(&other_organizer),
            json!({}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let first_key = issue_key(&sale).await;
    let key = issue_key(&sale).await;
    assert_ne!(
        first_key["stream_key"], key["stream_key"],
        "a new call rotates"
    );
    let rtmp_url = key["rtmp_url"].as_str().expect("rtmp_url").to_string();
    assert!(rtmp_url.starts_with("rtmp://127.0.0.1:"), "{rtmp_url}");
    sale.app
        .get(&format!("/api/v1/events/{event}/stream"), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    sale.app
        .get(&format!("/api/v1/events/{event}/stream"), Some(&stranger))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(stream_of(&sale.app, &event, &fan).await["status"], "idle");

    // The rotated-out key and a made-up one are refused by the ingest.
    for wrong in [
        first_key["stream_key"].as_str().expect("key").to_string(),
        "live_not-a-key".to_string(),
    ] {
        let refused = publish(&format!("{rtmp_url}/{wrong}"), 3, &H264, true)
            .wait_with_output()
            .await
            .expect("ffmpeg ends");
        assert!(!refused.status.success(), "a wrong key is refused");
    }
    assert_eq!(stream_of(&sale.app, &event, &fan).await["status"], "idle");

    // The show: 12 s of 720p with a keyframe every 2 s.
    let stream_key = key["stream_key"].as_str().expect("key");
    let mut encoder = publish(&format!("{rtmp_url}/{stream_key}"), 12, &H264, true);
    let live = await_status(&sale.app, &event, &fan, "live").await;
    let hls = path_of(live["hls_url"].as_str().expect("hls_url"));
    let dash = path_of(live["dash_url"].as_str().expect("dash_url"));
    assert!(hls.ends_with("/master.m3u8") && dash.ends_with("/manifest.mpd"));

    // A second publisher on the live key is refused.
    let second = publish(&format!("{rtmp_url}/{stream_key}"), 2, &H264, true)
        .wait_with_output()
        .await
        .expect("ffmpeg ends");
    assert!(!second.status.success(), "a second publisher is refused");

    let encoded = encoder.wait().await.expect("encoder finishes");
    assert!(encoded.success(), "the encoder published the whole show");
    let organizer_view = await_status(&sale.app, &event, &sale.organizer, "ended").await;
    assert!(organizer_view["viewers"].is_number());

    // The show's status ends with its publisher; the transcoder then writes its last segment,
    // the complete playlists and the recording. Its recording being listed says it is done.
    let recordings = await_recording(&sale).await;

    let base = assert_packaged(&sale.app, &hls, &dash).await;

    // Media needs a valid token of this event, unexpired.
    let tokens = PlaybackTokens::derived_from(JWT_SECRET.as_bytes());
    let now = chrono::Utc::now().timestamp();
    let expired = tokens.sign(&event, "someone", now - 1);
    let other_event = tokens.sign("01JOTHEREVENT0000000000000", "someone", now + 600);
    for token in ["nothing", expired.as_str(), other_event.as_str()] {
        let response = fetch(&sale.app, &format!("/live/{event}/{token}/master.m3u8")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token}");
    }
    let response = fetch(&sale.app, &format!("{base}../../../jwt-secret")).await;
    assert_ne!(response.status(), StatusCode::OK);

    // The status went out on the event's push channel: idle, live, ended.
    let polled = sale
        .app
        .get(
            &format!("/api/v1/push/poll?channel=event:{event}:stream&since=0&timeout_s=1"),
            Some(&fan),
        )
        .await
        .expect(StatusCode::OK);
    let statuses: Vec<String> = polled
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["data"]["status"].as_str().map(str::to_string))
        .collect();
    assert!(
        statuses.ends_with(&["live".to_string(), "ended".to_string()]),
        "{polled}"
    );

    sale.app
        .get(
            &format!("/api/v1/push/poll?channel=event:{event}:stream&since=0&timeout_s=1"),
            Some(&stranger),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // The recording is listed for the organizer (only) and plays.
    let recording = &recordings["items"][0];
    sale.app
        .get(&format!("/api/v1/events/{event}/recordings"), Some(&fan))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let download = sale
        .app
        .client
        .get(format!(
            "{}{}",
            sale.app.url,
            recording["url"].as_str().expect("url")
        ))
        .bearer_auth(&sale.organizer)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), StatusCode::OK, "{recording}");
    let bytes = download.bytes().await.expect("recording");
    assert_eq!(
        bytes.len() as u64,
        recording["bytes"].as_u64().expect("bytes")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("show.mp4");
    tokio::fs::write(&file, &bytes).await.expect("write");
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .await
        .expect("ffmpeg decodes");
    assert!(
        decoded.status.success() && decoded.stderr.is_empty(),
        "{decoded:?}"
    );
    let duration = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .await
        .expect("ffprobe");
    let seconds: f64 = String::from_utf8_lossy(&duration.stdout)
        .trim()
        .parse()
        .expect("a duration");
    assert!(
        (10.0..14.0).contains(&seconds),
        "the whole show: {seconds} s"
    );
    sale.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_unsupported_codecs_and_a_full_node_are_refused_with_a_clear_status() {
    let sale = on_sale(live_node(2).await).await;
    let organizer = sale.organizer.clone();
    let key = issue_key(&sale).await;
    let rtmp = key["rtmp_url"].as_str().expect("rtmp_url").to_string();

    // Audio only: accepted by RTMP, then ended by the transcoder with the reason.
    let mut audio_only = publish(
        &format!("{rtmp}/{}", key["stream_key"].as_str().expect("key")),
        30,
        &[],
        true,
    );
    let ended = await_status(&sale.app, &sale.event_id, &organizer, "ended").await;
    assert!(
        ended["problem"]
            .as_str()
            .is_some_and(|problem| problem.contains("audio only")),
        "{ended}"
    );
    let _ = audio_only.wait().await;

    // An unsupported codec (Sorenson H.263, FLV's own) on a new key.
    let key = issue_key(&sale).await;
    assert_eq!(
        stream_of(&sale.app, &sale.event_id, &organizer).await["status"],
        "idle",
        "a new key starts a new show"
    );
    let mut flv1 = publish(
        &format!("{rtmp}/{}", key["stream_key"].as_str().expect("key")),
        30,
        &["-c:v", "flv1"],
        false,
    );
    let ended = await_status(&sale.app, &sale.event_id, &organizer, "ended").await;
    assert!(
        ended["problem"]
            .as_str()
            .is_some_and(|problem| problem.contains("unsupported video codec")),
        "{ended}"
    );
    let _ = flv1.wait().await;

    // The node still takes a good publisher afterwards.
    let key = issue_key(&sale).await;
    let mut good = publish(
        &format!("{rtmp}/{}", key["stream_key"].as_str().expect("key")),
        4,
        &H264,
        true,
    );
    await_status(&sale.app, &sale.event_id, &organizer, "live").await;
    assert!(good.wait().await.expect("encoder").success());
    await_status(&sale.app, &sale.event_id, &organizer, "ended").await;
    sale.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_cuts_off_the_live_publisher_and_the_new_key_continues_the_show() {
    let sale = on_sale(live_node_with_grace(2, Duration::from_secs(15)).await).await;
    let event = sale.event_id.clone();
    let old = issue_key(&sale).await;
    let rtmp_url = old["rtmp_url"].as_str().expect("rtmp_url").to_string();
    let old_key = old["stream_key"].as_str().expect("key").to_string();
    let mut leaked = publish(&format!("{rtmp_url}/{old_key}"), 60, &H264, true);
    await_status(&sale.app, &event, &sale.organizer, "live").await;

    let new = issue_key(&sale).await;
    let new_key = new["stream_key"].as_str().expect("key");
    let cut_off = tokio::time::timeout(Duration::from_secs(30), leaked.wait())
        .await
        .expect("the old key's publisher is cut off")
        .expect("ffmpeg exits");
    assert!(
        !cut_off.success(),
        "the old key's publisher did not finish its show"
    );
    assert_eq!(
        stream_of(&sale.app, &event, &sale.organizer).await["status"],
        "live",
        "the show waits for the new key within the grace"
    );
    let refused = publish(&format!("{rtmp_url}/{old_key}"), 2, &H264, true)
        .wait_with_output()
        .await
        .expect("ffmpeg ends");
    assert!(!refused.status.success(), "the old key no longer publishes");
    let continued = publish(&format!("{rtmp_url}/{new_key}"), 4, &H264, true)
        .wait_with_output()
        .await
        .expect("ffmpeg ends");
    assert!(continued.status.success(), "the new key continues the show");
    // One show: no end between the two publishers; the new one's unpublish ends it.
    let polled = sale
        .app
        .get(
            &format!("/api/v1/push/poll?channel=event:{event}:stream&since=0&timeout_s=1"),
            Some(&sale.organizer),
        )
        .await
        .expect(StatusCode::OK);
    let statuses: Vec<&str> = polled
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["data"]["status"].as_str())
        .collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == "ended").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"ended"), "{statuses:?}");
    sale.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_transcoder_limit_a_publisher_is_refused() {
    let first = on_sale(live_node(1).await).await;
    let key = issue_key(&first).await;
    let rtmp = key["rtmp_url"].as_str().expect("rtmp_url").to_string();
    let mut running = publish(
        &format!("{rtmp}/{}", key["stream_key"].as_str().expect("key")),
        6,
        &H264,
        true,
    );
    await_status(&first.app, &first.event_id, &first.organizer, "live").await;

    // A second event on the same node, while the only transcoder is busy.
    let venue = first.app.create_venue(&first.organizer).await;
    let mut body = crate::support::event_body(venue["id"].as_str().expect("venue"));
    body.as_object_mut().expect("object").remove("on_sale_at");
    let second = first
        .app
        .post("/api/v1/events", Some(&first.organizer), body)
        .await
        .expect(StatusCode::CREATED);
    let second_id = second["id"].as_str().expect("id");
    let second_key = first
        .app
        .post(
            &format!("/api/v1/events/{second_id}/stream"),
            Some(&first.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::CREATED);
    let refused = publish(
        &format!("{rtmp}/{}", second_key["stream_key"].as_str().expect("key")),
        2,
        &H264,
        true,
    )
    .wait_with_output()
    .await
    .expect("ffmpeg ends");
    assert!(!refused.status.success(), "refused past the limit");
    assert_eq!(
        stream_of(&first.app, second_id, &first.organizer).await["status"],
        "idle"
    );
    assert!(running.wait().await.expect("encoder").success());
    first.app.stop().await;
}

/// A counter's value in the node's Prometheus text (summed over its labels that match).
async fn counter(app: &TestApp, name: &str, labels: &str) -> f64 {
    let admin = app
        .server
        .as_ref()
        .and_then(|server| server.admin_addr)
        .expect("an admin listener");
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// nginx running `deploy/nginx/pop.conf` in front of `origin`.
struct Pop {
    nginx: Child,
    url: String,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Pop {
    /// Stops nginx the way an operator would, so its workers go with its master (killing the
    /// master alone leaves them behind).
    async fn stop(mut self) {
        self.signal_stop();
        let _ = self.nginx.wait().await;
    }

    fn signal_stop(&self) {
        let _ = std::process::Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&self.config)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Pop {
    /// A test that fails part way still takes its nginx workers down.
    fn drop(&mut self) {
        if matches!(self.nginx.try_wait(), Ok(None)) {
            self.signal_stop();
            // The master must see its workers out before the child handle's kill reaches it.
            for _ in 0..250 {
                if !matches!(self.nginx.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

async fn start_pop(origin: &str) -> Pop {
    let dir = tempfile::tempdir().expect("tempdir");
    // nginx binds it after this probe let it go: an address no other test binds.
    let address = crate::support::own_address();
    let template = include_str!("../../../../deploy/nginx/pop.conf");
    let config = template
        .replace("@ORIGIN@", origin.trim_start_matches("http://"))
        .replace("@LISTEN@", &address.to_string())
        .replace("@CACHE_DIR@", &dir.path().display().to_string());
    let file = dir.path().join("nginx.conf");
    tokio::fs::write(&file, config).await.expect("write config");
    let nginx = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&file)
        .args(["-g", "daemon off;"])
        .kill_on_drop(true)
        .spawn()
        .expect("nginx runs (scripts/test installs it)");
    let url = format!("http://{address}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/")).await.is_ok() {
            return Pop {
                nginx,
                url,
                config: file,
                dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx never answered on {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_viewers_through_the_nginx_pop_cost_about_one_origin_request_per_segment() {
    let sale = on_sale(live_node(1).await).await;
    let event = sale.event_id.clone();
    let key = issue_key(&sale).await;
    let rtmp = key["rtmp_url"].as_str().expect("rtmp_url").to_string();
    let mut encoder = publish(
        &format!("{rtmp}/{}", key["stream_key"].as_str().expect("key")),
        10,
        &H264,
        true,
    );
    await_status(&sale.app, &event, &sale.organizer, "ended").await;
    assert!(encoder.wait().await.expect("encoder").success());

    let pop = start_pop(&sale.app.url).await;
    let client = reqwest::Client::new();
    let tokens = PlaybackTokens::derived_from(JWT_SECRET.as_bytes());
    let expires = chrono::Utc::now().timestamp() + 600;
    let before = counter(&sale.app, "marquee_media_requests_total", "segment").await;
    let auth_before = counter(&sale.app, "marquee_media_auth_total", "").await;

    // A bad token is refused at the PoP too.
    let refused = client
        .get(format!(
            "{}/live/{event}/forged.1.AAAA/master.m3u8",
            pop.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // 100 viewers, each with a token of their own, fetch the 480p rendition at once.
    let viewers = (0..100).map(|viewer| {
        let client = client.clone();
        let base = format!(
            "{}/live/{event}/{}/",
            pop.url,
            tokens.sign(&event, &format!("viewer{viewer}"), expires)
        );
        tokio::spawn(async move {
            let get = |file: String| {
                let client = client.clone();
                let url = format!("{base}{file}");
                async move {
                    let response = client.get(&url).send().await.expect("request");
                    assert_eq!(response.status(), StatusCode::OK, "{url}");
                    response.bytes().await.expect("body")
                }
            };
            let master = get("master.m3u8".into()).await;
            let Ok(m3u8_rs::Playlist::MasterPlaylist(master)) =
                m3u8_rs::parse_playlist_res(&master)
            else {
                panic!("a master playlist");
            };
            let variant = master
                .variants
                .iter()
                .find(|variant| variant.resolution.is_some_and(|size| size.height == 480))
                .expect("480p")
                .uri
                .clone();
            let media = get(variant).await;
            let Ok(m3u8_rs::Playlist::MediaPlaylist(media)) = m3u8_rs::parse_playlist_res(&media)
            else {
                panic!("a media playlist");
            };
            let mut files = vec![media.segments[0].map.as_ref().expect("map").uri.clone()];
            files.extend(media.segments.iter().map(|segment| segment.uri.clone()));
            for file in &files {
                get(file.clone()).await;
            }
            files
        })
    });
    let mut unique = std::collections::BTreeSet::new();
    for viewer in futures::future::join_all(viewers).await {
        unique.extend(viewer.expect("viewer"));
    }
    let origin = counter(&sale.app, "marquee_media_requests_total", "segment").await - before;
    let auth = counter(&sale.app, "marquee_media_auth_total", "").await - auth_before;
    eprintln!(
        "{} distinct segments, {origin} origin segment requests, {auth} token checks",
        unique.len()
    );
    assert!(unique.len() >= 5, "{unique:?}");
    assert!(
        origin <= unique.len() as f64 + 1.0,
        "one origin request per segment, not per viewer: {origin} for {}",
        unique.len()
    );
    // One token check per viewer (cached), plus the refused one.
    assert!(auth <= 101.0 + 5.0, "token checks: {auth}");

    // A valid token for another event cannot reach this event's cached media by path tricks:
    // nginx resolves `..` (and decoded `%2F`) in the path it matches and keys the cache on,
    // so the check must be made on the same values, and such paths are refused outright.
    let other = tokens.sign("someotherevent", "intruder", expires);
    for path in [
        format!("/live/someotherevent/{other}/..%2F..%2F{event}%2F{other}%2Fmaster.m3u8"),
        format!("/live/someotherevent/{other}/../../{event}/{other}/master.m3u8"),
        format!("/live/someotherevent/{other}/%2e%2e/%2e%2e/{event}/{other}/master.m3u8"),
    ] {
        let response = client
            .get(format!("{}{path}", pop.url))
            .send()
            .await
            .expect("request");
        assert_ne!(response.status(), StatusCode::OK, "{path} was served");
    }
    // And with the path taken literally, the other event's token is checked against this
    // event and refused.
    let crossed = client
        .get(format!("{}/live/{event}/{other}/master.m3u8", pop.url))
        .send()
        .await
        .expect("request");
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN);
    pop.stop().await;
    sale.app.stop().await;
}

/// The run number in the first media playlist's `init-r{run}-…` map, once it lists segments.
async fn current_run(app: &TestApp, hls: &str) -> Option<u64> {
    let master = fetch(app, hls).await.bytes().await.ok()?;
    let Ok(m3u8_rs::Playlist::MasterPlaylist(master)) = m3u8_rs::parse_playlist_res(&master) else {
        return None;
    };
    let base = hls.trim_end_matches("master.m3u8");
    let uri = &master.variants.first()?.uri;
    let text = fetch(app, &format!("{base}{uri}"))
        .await
        .text()
        .await
        .ok()?;
    if !text.contains("#EXTINF") {
        return None;
    }
    let at = text.find("init-r")? + "init-r".len();
    let run: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    run.parse().ok()
}

/// Waits for a run other than `after` to list segments, and returns its number. This polls:
/// ffmpeg writes playlists as files, and nothing announces a new one.
async fn await_run(app: &TestApp, hls: &str, after: Option<u64>) -> u64 {
    for _ in 0..120 {
        match current_run(app, hls).await {
            Some(run) if Some(run) != after => return run,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("no run after {after:?} packaged segments");
}

/// This process's child ffmpeg that packages `event` (its arguments name the event's directory).
fn transcoder_of(event: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces, so split after its `)`.
            let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (ppid == me && cmdline.contains("dash") && cmdline.contains(event)).then_some(pid)
        })
}

/// Whether `pid` is gone: exited and waited for by its parent. A zombie (exited, never
/// waited for) keeps its `/proc` entry.
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoder_that_crashes_is_reaped_and_restarted_as_a_new_run_while_the_show_goes_on() {
    let sale = on_sale(live_node(1).await).await;
    let event = sale.event_id.clone();
    let key = issue_key(&sale).await;
    let url = rtmp_publish_url(&key);
    let restarts_before = counter(&sale.app, "marquee_transcoder_restarts_total", "").await;
    let mut encoder = publish(&url, 40, &H264, true);
    let live = await_status(&sale.app, &event, &sale.organizer, "live").await;
    let hls = path_of(live["hls_url"].as_str().expect("hls_url"));

    let first_run = await_run(&sale.app, &hls, None).await;
    let (media, _, _) = newest_listed_segment(&sale.app, &hls).await;
    let listed_before = read_low_latency(&sale.app, &media).await;
    let crashed = transcoder_of(&event).expect("the transcoder is this node's child");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &crashed.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    // The crashed run's recording is kept once its ffmpeg is waited for; a new run takes over
    // under new names.
    await_recordings(&sale, 1).await;
    assert!(
        reaped(crashed),
        "the crashed ffmpeg was reaped, not left a zombie"
    );
    let second_run = await_run(&sale.app, &hls, Some(first_run)).await;
    assert!(second_run > first_run, "{second_run} after {first_run}");
    // ffmpeg numbers the new run's segments from 1 again; players' blocking reloads need the
    // media sequence to go on growing.
    let listed_after = read_low_latency(&sale.app, &media).await;
    assert!(
        listed_after.next_msn > listed_before.next_msn,
        "the media sequence grows across the restart:\n{}\n{}",
        listed_before.text,
        listed_after.text
    );
    let blocking = fetch(
        &sale.app,
        &format!("{media}?_HLS_msn={}", listed_before.next_msn),
    )
    .await;
    assert_eq!(
        blocking.status(),
        StatusCode::OK,
        "a reload blocking on the crashed run's next segment is answered"
    );
    let restarted = transcoder_of(&event).expect("a new transcoder");
    assert_ne!(restarted, crashed);
    assert_eq!(
        stream_of(&sale.app, &event, &sale.organizer).await["status"],
        "live",
        "a crash inside the show does not end it"
    );
    assert!(
        counter(&sale.app, "marquee_transcoder_restarts_total", "").await > restarts_before,
        "the restart is counted"
    );

    encoder.kill().await.expect("stop the encoder");
    await_status(&sale.app, &event, &sale.organizer, "ended").await;
    // Its ffmpeg finishes the show's files and is waited for; then its recording is stored.
    let recordings = await_recordings(&sale, 2).await;
    assert_eq!(
        recordings["items"].as_array().map(Vec::len),
        Some(2),
        "one per run"
    );
    assert!(
        reaped(restarted),
        "the show's end stops its transcoder and reaps it"
    );
    assert_eq!(transcoder_of(&event), None);
    sale.app.stop().await;
}

/// The newest segment listed in the top rendition's media playlist, with the init segment and
/// the media playlist's path, once one is listed. Polls: ffmpeg writes playlists as files.
async fn newest_listed_segment(app: &TestApp, hls: &str) -> (String, String, String) {
    let base = hls.trim_end_matches("master.m3u8");
    for _ in 0..400 {
        let master = fetch(app, hls).await.bytes().await.expect("master");
        if let Ok(m3u8_rs::Playlist::MasterPlaylist(master)) = m3u8_rs::parse_playlist_res(&master)
        {
            let top = master
                .variants
                .iter()
                .max_by_key(|variant| variant.resolution.map_or(0, |size| size.height))
                .expect("a variant");
            let media = format!("{base}{}", top.uri);
            let text = fetch(app, &media)
                .await
                .bytes()
                .await
                .expect("media playlist");
            if let Ok(m3u8_rs::Playlist::MediaPlaylist(playlist)) =
                m3u8_rs::parse_playlist_res(&text)
            {
                if let (Some(first), Some(last)) =
                    (playlist.segments.first(), playlist.segments.last())
                {
                    let init = first.map.as_ref().expect("EXT-X-MAP").uri.clone();
                    return (media, init, last.uri.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no segment was listed");
}

/// `chunk-r1-0-00007.m4s` → the same name `ahead` numbers later.
fn segment_after(name: &str, ahead: u64) -> String {
    let (stem, extension) = name.rsplit_once('.').expect("an extension");
    let (prefix, number) = stem.rsplit_once('-').expect("a numbered name");
    let next = number.parse::<u64>().expect("a number") + ahead;
    format!("{prefix}-{next:05}.{extension}")
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_being_written_is_sent_as_it_grows_and_ends_whole() {
    let sale = on_sale(live_node(1).await).await;
    let fan = buy_ticket(&sale, 0).await;
    let event = sale.event_id.clone();
    let key = issue_key(&sale).await;
    let url = rtmp_publish_url(&key);
    let mut encoder = publish(&url, 20, &H264, true);
    let publisher = encoder.id().expect("the encoder runs");
    let live = await_status(&sale.app, &event, &fan, "live").await;
    let hls = path_of(live["hls_url"].as_str().expect("hls_url"));
    let (media, init, newest) = newest_listed_segment(&sale.app, &hls).await;
    let base = media.rsplit_once('/').expect("a path").0.to_string();

    // The encoder stops: the segment after the newest cannot be finished (it needs 2 s more of
    // the show) until it goes on, so whatever arrives of it now arrived before it was whole.
    signal(publisher, "-STOP");
    let next = segment_after(&newest, 1);
    let mut growing = fetch(&sale.app, &format!("{base}/{next}")).await;
    assert_eq!(
        growing.status(),
        StatusCode::OK,
        "the next segment is followed"
    );
    assert_eq!(
        growing.headers()["cache-control"],
        "public, max-age=31536000, immutable",
        "its bytes are the finished segment's"
    );
    assert!(
        growing.headers().get("content-length").is_none(),
        "its length is not known yet"
    );
    let first = growing
        .chunk()
        .await
        .expect("a chunk")
        .expect("bytes before the segment is whole");
    let listed = fetch(&sale.app, &media)
        .await
        .text()
        .await
        .expect("playlist");
    assert!(
        !listed.contains(&next),
        "{next} is not listed while the encoder is stopped:\n{listed}"
    );
    // An HTTP/1.0 peer (no chunked transfer) gets the segment once whole, with its length,
    // so it can tell a whole segment from a cut one.
    let old_peer = {
        let address = sale.app.url.trim_start_matches("http://").to_string();
        let request = format!("GET {base}/{next} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut socket = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            socket.write_all(request.as_bytes()).await.expect("request");
            let mut response = Vec::new();
            socket.read_to_end(&mut response).await.expect("response");
            response
        })
    };
    // Far ahead of the packager: not waited for.
    fetch(&sale.app, &format!("{base}/{}", segment_after(&newest, 5)))
        .await
        .error_for_status()
        .expect_err("a segment far ahead is 404");

    signal(publisher, "-CONT");
    let mut streamed = first.to_vec();
    while let Some(chunk) = growing.chunk().await.expect("the segment completes") {
        streamed.extend_from_slice(&chunk);
    }
    let whole = fetch(&sale.app, &format!("{base}/{next}")).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.headers().get("content-length").is_some(), "now whole");
    let whole = whole.bytes().await.expect("segment");
    assert!(
        streamed[..] == whole[..],
        "the streamed segment is the finished file ({} and {} bytes)",
        streamed.len(),
        whole.len()
    );
    let init = fetch_bytes(&sale.app, &format!("{base}/{init}"), "init").await;
    assert_two_second_segment(&init, &streamed, (1280, 720)).await;
    let old_peer = old_peer.await.expect("the HTTP/1.0 request");
    let head_end = old_peer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&old_peer[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", whole.len())),
        "{head}"
    );
    assert!(
        old_peer[head_end + 4..] == whole[..],
        "the HTTP/1.0 peer got the whole segment"
    );
    assert!(
        counter(
            &sale.app,
            "marquee_media_requests_total",
            "kind=\"growing_segment\""
        )
        .await
            >= 1.0
    );

    assert!(encoder.wait().await.expect("encoder").success());
    await_status(&sale.app, &event, &fan, "ended").await;
    sale.app.stop().await;
}

/// What a low-latency HLS player reads of a media playlist: its parts (`segment msn`, URI,
/// duration, independent), the segments listed whole, and the preload hint.
struct LowLatencyPlaylist {
    text: String,
    parts: Vec<(u64, String, f64, bool)>,
    whole: Vec<String>,
    hint: Option<String>,
    /// The media sequence number of the segment after the last listed whole.
    next_msn: u64,
}

/// The media playlist at `path`, as a low-latency player reads it.
async fn read_low_latency(app: &TestApp, path: &str) -> LowLatencyPlaylist {
    low_latency(fetch(app, path).await.text().await.expect("playlist"))
}

fn low_latency(text: String) -> LowLatencyPlaylist {
    let attribute = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[start..];
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next()?.to_string(),
            None => rest.split(',').next()?.to_string(),
        })
    };
    let mut msn = text
        .lines()
        .find_map(|line| line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|value| value.parse::<u64>().ok())
        .expect("a media sequence");
    let (mut parts, mut whole, mut hint) = (Vec::new(), Vec::new(), None);
    for line in text.lines() {
        if let Some(part) = line.strip_prefix("#EXT-X-PART:") {
            parts.push((
                msn,
                attribute(part, "URI").expect("a part URI"),
                attribute(part, "DURATION")
                    .and_then(|duration| duration.parse().ok())
                    .expect("a part duration"),
                part.contains("INDEPENDENT=YES"),
            ));
        } else if let Some(preload) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            hint = attribute(preload, "URI");
        } else if !line.starts_with('#') && !line.is_empty() {
            whole.push(line.to_string());
            msn += 1;
        }
    }
    LowLatencyPlaylist {
        text,
        parts,
        whole,
        hint,
        next_msn: msn,
    }
}

/// A show 30 s long, live with a segment listed.
struct LiveShow {
    sale: OnSale,
    /// A ticket holder's media playlist of the top rendition, and the names of its init
    /// segment and of the newest segment it listed.
    media: String,
    init: String,
    newest: String,
    /// Stopped when dropped.
    _encoder: Child,
}

async fn show_with_a_segment() -> LiveShow {
    let sale = on_sale(live_node(1).await).await;
    let fan = buy_ticket(&sale, 0).await;
    let key = issue_key(&sale).await;
    let encoder = publish(&rtmp_publish_url(&key), 30, &H264, true);
    let live = await_status(&sale.app, &sale.event_id, &fan, "live").await;
    let hls = path_of(live["hls_url"].as_str().expect("hls_url"));
    let (media, init, newest) = newest_listed_segment(&sale.app, &hls).await;
    LiveShow {
        sale,
        media,
        init,
        newest,
        _encoder: encoder,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_latency_hls_player_gets_each_part_as_it_is_written_and_the_parts_make_the_segment() {
    let LiveShow {
        sale,
        media,
        init,
        _encoder,
        ..
    } = show_with_a_segment().await;
    let base = media.rsplit_once('/').expect("a path").0.to_string();

    let playlist = read_low_latency(&sale.app, &media).await;
    assert!(
        playlist
            .text
            .contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="),
        "{}",
        playlist.text
    );
    // 15 fps: two frames reach the 0.1 s the packager cuts fragments at.
    assert!(
        playlist
            .text
            .contains("#EXT-X-PART-INF:PART-TARGET=0.134\n"),
        "{}",
        playlist.text
    );
    // The segment after the last listed one is being written: follow it part by part, as a
    // player does, each playlist request blocking until the next part is there.
    let next_msn = playlist.next_msn;
    let next = playlist
        .hint
        .as_deref()
        .and_then(|hint| hint.split_once(".part"))
        .map(|(stem, _)| format!("{stem}.m4s"))
        .expect("a preload hint of the segment being written");
    assert!(!playlist.whole.contains(&next));
    let mut streamed = Vec::new();
    let mut durations = 0.0;
    let mut seen_before_whole = 0;
    for index in 0.. {
        let reload = format!("{media}?_HLS_msn={next_msn}&_HLS_part={index}");
        let response = fetch(&sale.app, &reload).await;
        assert_eq!(response.status(), StatusCode::OK, "{reload}");
        let playlist = low_latency(response.text().await.expect("playlist"));
        let listed_whole = playlist.whole.contains(&next);
        let parts: Vec<_> = playlist
            .parts
            .iter()
            .filter(|(msn, ..)| *msn == next_msn)
            .collect();
        let Some((_, uri, duration, independent)) = parts.get(index) else {
            // Answered without the part: the segment is whole, with fewer parts.
            assert!(listed_whole, "blocked for part {index}:\n{}", playlist.text);
            assert!(index > 1, "the segment had parts");
            break;
        };
        if !listed_whole {
            seen_before_whole += 1;
        }
        assert_eq!(
            *independent,
            index == 0,
            "only the first part starts on a keyframe"
        );
        durations += duration;
        let part = fetch(&sale.app, &format!("{base}/{uri}")).await;
        assert_eq!(part.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            part.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        streamed.extend_from_slice(&part.bytes().await.expect("part"));
    }
    assert!(
        seen_before_whole > 1,
        "parts were listed before their segment was whole"
    );
    let whole = fetch_bytes(&sale.app, &format!("{base}/{next}"), "segment").await;
    assert!(
        streamed[..] == whole[..],
        "the parts make up the segment ({} and {} bytes)",
        streamed.len(),
        whole.len()
    );
    assert!(
        (durations - 2.0).abs() < 0.15,
        "the parts' durations add up to the segment's: {durations}"
    );
    let init = fetch_bytes(&sale.app, &format!("{base}/{init}"), "init").await;
    assert_two_second_segment(&init, &streamed, (1280, 720)).await;
    // Parts of a whole segment are still served, from the segment.
    let first_part = fetch_bytes(
        &sale.app,
        &format!("{base}/{}", next.replace(".m4s", ".part0.m4s")),
        "part",
    )
    .await;
    assert!(whole.starts_with(&first_part));

    // What a player may not ask for.
    for (path, status) in [
        (
            format!("{media}?_HLS_msn={}", next_msn + 5),
            StatusCode::BAD_REQUEST,
        ),
        (format!("{media}?_HLS_part=1"), StatusCode::BAD_REQUEST),
        (format!("{media}?_HLS_msn=x"), StatusCode::BAD_REQUEST),
        (
            format!("{base}/{}", next.replace(".m4s", ".part999.m4s")),
            StatusCode::NOT_FOUND,
        ),
        (
            format!(
                "{base}/{}",
                segment_after(&next, 5).replace(".m4s", ".part0.m4s")
            ),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(fetch(&sale.app, &path).await.status(), status, "{path}");
    }
    // Fifteen parts of the segment followed, and the one read again.
    assert!(counter(&sale.app, "marquee_media_requests_total", "kind=\"part\"").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_waiting_on_the_same_part_through_the_nginx_pop_share_one_origin_request() {
    let LiveShow {
        sale,
        media,
        _encoder,
        ..
    } = show_with_a_segment().await;
    let event = sale.event_id.clone();
    let playlist_file = media.rsplit_once('/').expect("a path").1.to_string();
    let pop = start_pop(&sale.app.url).await;
    let tokens = PlaybackTokens::derived_from(JWT_SECRET.as_bytes());
    let expires = chrono::Utc::now().timestamp() + 600;
    let client = reqwest::Client::new();

    // A part two ahead of what is written now: every viewer's reload blocks on it.
    let now = read_low_latency(&sale.app, &media).await;
    let written = now
        .parts
        .iter()
        .filter(|(msn, ..)| *msn == now.next_msn)
        .count();
    let (msn, part) = (now.next_msn, written + 2);
    // The plain playlist is in the PoP's cache: a reload must not be answered with it.
    let plain = format!(
        "{}/live/{event}/{}/{playlist_file}",
        pop.url,
        tokens.sign(&event, "viewer-early", expires)
    );
    let cached = client.get(&plain).send().await.expect("playlist");
    assert_eq!(cached.status(), StatusCode::OK);
    // A spelling nginx keys as the viewers' blocking reload but that would not block at the
    // origin is refused there, so its answer cannot stand in the cache for theirs.
    for poison in [
        format!("_hls_msn={msn}&_hls_part={part}"),
        format!("_HLS_msn={msn}&_HLS_part={part}&_HLS_msn=0"),
    ] {
        let refused = client
            .get(format!("{plain}?{poison}"))
            .send()
            .await
            .expect("reload");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{poison}");
    }
    let playlists_before = counter(&sale.app, "marquee_media_requests_total", "playlist").await;
    let parts_before = counter(&sale.app, "marquee_media_requests_total", "kind=\"part\"").await;
    let viewers = (0..50).map(|viewer| {
        let client = client.clone();
        let base = format!(
            "{}/live/{event}/{}/",
            pop.url,
            tokens.sign(&event, &format!("viewer{viewer}"), expires)
        );
        let reload = format!("{base}{playlist_file}?_HLS_msn={msn}&_HLS_part={part}");
        tokio::spawn(async move {
            let response = client.get(&reload).send().await.expect("reload");
            assert_eq!(response.status(), StatusCode::OK, "{reload}");
            let playlist = low_latency(response.text().await.expect("playlist"));
            let (_, uri, ..) = playlist
                .parts
                .iter()
                .filter(|(at, ..)| *at == msn)
                .nth(part)
                .unwrap_or_else(|| panic!("part {part} of {msn} listed:\n{}", playlist.text))
                .clone();
            let bytes = client
                .get(format!("{base}{uri}"))
                .send()
                .await
                .expect("part")
                .error_for_status()
                .expect("part served")
                .bytes()
                .await
                .expect("part body");
            assert!(!bytes.is_empty());
            bytes
        })
    });
    let mut bodies = std::collections::HashSet::new();
    for viewer in futures::future::join_all(viewers).await {
        bodies.insert(viewer.expect("viewer"));
    }
    assert_eq!(bodies.len(), 1, "every viewer got the same part");
    let playlists =
        counter(&sale.app, "marquee_media_requests_total", "playlist").await - playlists_before;
    let parts =
        counter(&sale.app, "marquee_media_requests_total", "kind=\"part\"").await - parts_before;
    eprintln!("50 viewers: {playlists} origin playlist requests, {parts} origin part requests");
    assert!(
        playlists <= 2.0,
        "blocking reloads were collapsed: {playlists}"
    );
    assert!(parts <= 2.0, "part requests were collapsed: {parts}");
    pop.stop().await;
    sale.app.stop().await;
}

/// One answer read off a raw connection: status, header fields (names lower-case, in order, the
/// date left out as it differs by the second) and body.
#[derive(Debug, PartialEq, Eq)]
struct WireAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl WireAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads the next answer from `stream` (`buffer` keeps what was read past it); `head_only` for
/// an answer to HEAD, which has no body whatever its length says.
async fn read_answer(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    head_only: bool,
) -> WireAnswer {
    use tokio::io::AsyncReadExt;
    async fn more(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("the node answers in time")
            .expect("read");
        buffer.extend_from_slice(&chunk[..read]);
        read > 0
    }
    let (status, mut headers, head_len) = loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(len) = response.parse(buffer).expect("an HTTP answer") {
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|field| {
                    (
                        field.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(field.value).into_owned(),
                    )
                })
                .collect();
            break (response.code.expect("a status"), headers, len);
        }
        assert!(more(stream, buffer).await, "closed before the head ended");
    };
    buffer.drain(..head_len);
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<usize>().expect("a length"));
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value == "chunked");
    let mut body = Vec::new();
    if head_only {
    } else if let Some(length) = length {
        while buffer.len() < length {
            assert!(more(stream, buffer).await, "closed mid-body");
        }
        body = buffer.drain(..length).collect();
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(at) = buffer.windows(2).position(|pair| pair == b"\r\n") {
                    break at;
                }
                assert!(more(stream, buffer).await, "closed mid-chunk");
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buffer[..line_end]).expect("a chunk size"),
                16,
            )
            .expect("a hexadecimal size");
            while buffer.len() < line_end + 2 + size + 2 {
                assert!(more(stream, buffer).await, "closed mid-chunk");
            }
            body.extend_from_slice(&buffer[line_end + 2..line_end + 2 + size]);
            buffer.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while more(stream, buffer).await {}
        body = std::mem::take(buffer);
    }
    headers.retain(|(name, _)| name != "date");
    WireAnswer {
        status,
        headers,
        body,
    }
}

async fn connect(app: &TestApp) -> tokio::net::TcpStream {
    let address = app.url.trim_start_matches("http://");
    tokio::net::TcpStream::connect(address)
        .await
        .expect("connect")
}

async fn send(stream: &mut tokio::net::TcpStream, requests: &str) {
    use tokio::io::AsyncWriteExt;
    stream.write_all(requests.as_bytes()).await.expect("write");
}

/// Media requests are answered on a connection of their own by the origin's lean path, and by
/// the router once the connection has asked for something else: the answers must be the same,
/// byte for byte but the date, and a connection must go on whichever path it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_answers_are_the_same_on_the_lean_path_as_through_the_router() {
    let LiveShow {
        sale,
        media,
        init,
        newest,
        _encoder,
    } = show_with_a_segment().await;
    let base = media.rsplit_once('/').expect("a path").0.to_string();
    let token_at = base.rsplit_once('/').expect("a token").0.to_string();

    let init = format!("{base}/{init}");
    let segment = format!("{base}/{newest}");
    let cases = [
        ("GET", init.clone()),
        ("GET", segment.clone()),
        ("HEAD", segment.clone()),
        ("GET", format!("{base}/chunk-r9-0-99999.m4s")),
        ("GET", format!("{base}/..%2Fsecret")),
        ("GET", format!("{token_at}/not-a-token/{newest}")),
        ("GET", format!("/live/no-such-event/not-a-token/{newest}")),
    ];
    for (method, path) in &cases {
        let request = format!("{method} {path} HTTP/1.1\r\nhost: origin\r\n\r\n");
        let head_only = *method == "HEAD";

        let mut lean = connect(&sale.app).await;
        send(&mut lean, &request).await;
        let lean = read_answer(&mut lean, &mut Vec::new(), head_only).await;

        // The first request decides the path: after /healthz, the router answers the rest.
        let mut routed = connect(&sale.app).await;
        let mut buffer = Vec::new();
        send(
            &mut routed,
            &format!("GET /healthz HTTP/1.1\r\nhost: origin\r\n\r\n{request}"),
        )
        .await;
        let health = read_answer(&mut routed, &mut buffer, false).await;
        assert_eq!(health.status, 200);
        let mut routed = read_answer(&mut routed, &mut buffer, head_only).await;
        routed.headers.retain(|(name, _)| name != "x-request-id");
        assert_eq!(lean, routed, "{method} {path}");
        assert_eq!(lean.header("x-content-type-options"), Some("nosniff"));
        assert!(lean.header("x-marquee-node").is_some(), "{method} {path}");
    }

    // Pipelined on one connection: media, then a request the lean path hands to the router,
    // then media again, which the router answers.
    let whole = fetch_bytes(&sale.app, &segment, "segment").await;
    let mut stream = connect(&sale.app).await;
    send(
        &mut stream,
        &format!(
            "GET {segment} HTTP/1.1\r\nhost: origin\r\n\r\n\
             GET /healthz HTTP/1.1\r\nhost: origin\r\n\r\n\
             HEAD {segment} HTTP/1.1\r\nhost: origin\r\n\r\n\
             GET {init} HTTP/1.1\r\nhost: origin\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    let mut buffer = Vec::new();
    let first = read_answer(&mut stream, &mut buffer, false).await;
    assert_eq!((first.status, first.body.as_slice()), (200, &whole[..]));
    let health = read_answer(&mut stream, &mut buffer, false).await;
    assert_eq!(health.status, 200, "the router takes the connection over");
    let head = read_answer(&mut stream, &mut buffer, true).await;
    assert_eq!(
        head.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    let last = read_answer(&mut stream, &mut buffer, false).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the node closes the connection as asked");
    assert_eq!(
        (closed.expect("read"), buffer.len()),
        (0, 0),
        "nothing more"
    );

    // HTTP/1.0 without keep-alive: one answer, then the node closes.
    let mut old = connect(&sale.app).await;
    send(&mut old, &format!("GET {segment} HTTP/1.0\r\n\r\n")).await;
    let mut buffer = Vec::new();
    let answer = read_answer(&mut old, &mut buffer, false).await;
    assert_eq!((answer.status, answer.body.len()), (200, whole.len()));
    assert!(answer
        .headers
        .iter()
        .any(|(name, value)| name == "connection" && value == "close"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), old.read_to_end(&mut rest))
        .await
        .expect("an HTTP/1.0 connection ends with its answer");
    assert_eq!(closed.expect("read"), 0);

    // A media request counts under the route's template, as through the router.
    let served = counter(
        &sale.app,
        "http_requests_total",
        r#"method="GET",route="/live/{event}/{token}/{file}",status="200""#,
    )
    .await;
    assert!(served >= 3.0, "media requests are counted: {served}");
}
