//! `marquee-bench live`: glass-to-glass latency of a live show beside nginx-rtmp fed the same
//! stream, the transcoder's CPU per rendition, and segment requests per second from the origin
//! beside nginx serving the same files.
//!
//! One ffmpeg publisher encodes `testsrc2` + `sine` in real time and sends the same stream to
//! both servers (`-f tee`): to a Marquee node (in this process) over RTMP, or over SRT with
//! `--ingest srt`, and to nginx with `libnginx-mod-rtmp` packaging HLS. A watcher per server
//! does what a player at the live edge does: it polls the media playlist (every 100 ms, finer
//! than a player, to see each segment as soon as it is listed) and downloads each new segment.
//! A frame at stream time `t` left the publisher at `T0 + t`. The tee has a third output, a
//! TCP socket of the bench's own, that reads the FLV as the servers get it, so `T0` owes
//! nothing to either server's ingest (and the SRT remuxer's probe counts against Marquee):
//! `T0` is the earliest of `arrival - timestamp` over its video tags, the stream's clock as
//! the encoder keeps it. (The stream's first bytes are not: ffmpeg's `-re` clock starts
//! before the tee has connected its outputs, and the first frames then leave in a burst,
//! later than their timestamps say; taking `T0` from the first bytes made every latency look
//! 0.2-0.3 s shorter than it was.) A frame can play once its segment is downloaded, so its
//! latency is `downloaded - (T0 + t)`. Every frame of every segment counts; p50 and p95 are
//! over frames.
//!
//! A third watcher plays the node's 720p rendition at the live edge, as a low-latency DASH or
//! LHLS player does: it asks for each next segment as soon as it has the last one and reads it
//! as the origin sends it while the packager writes it; a frame can play once the CMAF
//! fragment holding it has arrived. nginx-rtmp has no such mode: it lists a fragment only once
//! it is whole, and its static files are served at their length when asked.
//!
//! A fourth watcher plays the same rendition as a low-latency HLS player does (hls.js with
//! `lowLatencyMode`, Safari): blocking playlist reloads for the part after the last it has,
//! and each part downloaded whole once listed (`marquee_media::llhls`). This is standard HLS
//! (RFC 8216bis); nginx-rtmp does not offer it.
//!
//! Marquee transcodes the 720p source into 720p/480p/360p; nginx-rtmp only repackages it. The
//! latency compared is of the 720p rendition against nginx's copy of the source.

use crate::gateway::{median, wrk};
use crate::push::{free_port, nginx_private_paths, wait_for_port};
use anyhow::{bail, Context};
use marquee::{Server, ServerConfig};
use marquee_media::cmaf;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SECRET: &str = "marquee live bench secret, not for production";

/// How the publisher reaches the Marquee node (nginx-rtmp always gets RTMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    Rtmp,
    /// MPEG-TS over SRT, remuxed to FLV by the node before the same transcoder.
    Srt,
}

pub struct LiveBench {
    pub ingest: Ingest,
    /// Length of the show.
    pub seconds: u32,
    pub fps: u32,
    /// Source size, `WxH`.
    pub size: String,
    /// x264 preset of the renditions.
    pub preset: String,
    /// wrk connections and duration of each segment-serving run.
    pub connections: usize,
    pub serve_duration: Duration,
    pub rounds: usize,
    /// Media on the lean HTTP/1.1 path (the default) or through the router.
    pub media_lean_http: bool,
}

pub struct Latency {
    pub name: &'static str,
    pub segments: usize,
    /// Per frame, seconds.
    pub p50: f64,
    pub p95: f64,
    /// Per segment, from its last frame leaving the publisher to it being downloaded.
    pub newest_frame_p50: f64,
}

pub struct ServeRate {
    pub file: String,
    pub bytes: u64,
    pub marquee_rps: Vec<f64>,
    pub nginx_rps: Vec<f64>,
}

pub struct LiveReport {
    /// From the publisher's first bytes to the node's stream getting its first media.
    pub first_media: Duration,
    pub latency: Vec<Latency>,
    /// Cores the transcoder used while live, and its renditions.
    pub transcoder_cores: f64,
    pub renditions: Vec<String>,
    /// Cores nginx's workers used packaging the same stream.
    pub nginx_cores: f64,
    pub serving: Vec<ServeRate>,
}

pub async fn run_live_bench(bench: &LiveBench) -> anyhow::Result<LiveReport> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path().join("node"));
    config.jwt_secret = Some(SECRET.to_string());
    config.live.rtmp_listen = Some(([127, 0, 0, 1], 0).into());
    config.live.srt_listen = Some(([127, 0, 0, 1], 0).into());
    config.live.preset = bench.preset.clone();
    config.live.reconnect_grace = Duration::from_secs(1);
    config.media_lean_http = bench.media_lean_http;
    let server = Server::start(config).await?;
    let url = server.url();
    let rtmp = server.rtmp_addr.context("the node has no RTMP listener")?;
    let srt = server.srt_addr.context("the node has no SRT listener")?;
    let client = reqwest::Client::new();
    let show = organize_show(&client, &url).await?;
    let stream_dir = dir.path().join("node").join("live").join(&show.event);

    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(nginx_dir.join("hls"))?;
    let nginx_rtmp = free_port()?;
    let nginx_http = free_port()?;
    let mut nginx = start_nginx_rtmp(&nginx_dir, nginx_rtmp, nginx_http, &stream_dir)?;
    wait_for_port(([127, 0, 0, 1], nginx_http).into()).await?;
    wait_for_port(([127, 0, 0, 1], nginx_rtmp).into()).await?;

    let outcome = async {
        let marquee_output = match bench.ingest {
            Ingest::Rtmp => format!(
                "[f=flv:onfail=ignore]rtmp://{rtmp}/live/{}",
                show.stream_key
            ),
            Ingest::Srt => format!(
                "[f=mpegts:onfail=ignore]srt://{srt}?streamid={}&latency=120000",
                show.stream_key
            ),
        };
        let nginx_url = format!("rtmp://127.0.0.1:{nginx_rtmp}/live/bench");
        // The stream's clock, read off the bench's own output of the tee.
        let clock = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let clock_url = format!("tcp://{}", clock.local_addr()?);
        let (first_bytes, first_bytes_seen) = tokio::sync::oneshot::channel();
        let stream_clock = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = clock.accept().await?;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut first_bytes = Some(first_bytes);
            let mut flv = marquee_media::flv::FlvReader::new();
            let mut origin: Option<Instant> = None;
            // Read to the end, so the tee never waits on this output.
            while let Ok(read @ 1..) = socket.read(&mut buffer).await {
                let now = Instant::now();
                if let Some(first_bytes) = first_bytes.take() {
                    let _ = first_bytes.send(now);
                }
                flv.push(&buffer[..read]);
                while let Some(tag) = flv.next_tag()? {
                    if tag.kind != marquee_media::flv::TagKind::Video {
                        continue;
                    }
                    let stamped = Duration::from_millis(u64::from(tag.timestamp));
                    let left = now.checked_sub(stamped).unwrap_or(now);
                    origin = Some(origin.map_or(left, |origin| origin.min(left)));
                }
            }
            origin.context("no video reached the bench's clock")
        });
        let _clock = AbortOnDrop(stream_clock.abort_handle());
        let going_live = server.state.live.streams.changes();
        let mut publisher = publish(bench, &marquee_output, &nginx_url, &clock_url)?;
        let publisher_pid = publisher.id();
        let first_bytes = tokio::time::timeout(Duration::from_secs(20), first_bytes_seen)
            .await
            .context("the publisher sent nothing for 20 s")?
            .context("the publisher never reached the bench's clock")?;
        let nginx_cpu_start = nginx_cpu(&nginx_dir);
        let marquee_watch = tokio::spawn(watch(
            client.clone(),
            format!("{url}{}", show.hls_path),
            true,
            bench.fps,
        ));
        let edge_watch = tokio::spawn(watch_edge(
            client.clone(),
            format!("{url}{}", show.hls_path),
        ));
        let low_latency_watch = tokio::spawn(watch_low_latency(
            client.clone(),
            format!("{url}{}", show.hls_path),
        ));
        let nginx_watch = tokio::spawn(watch(
            client.clone(),
            format!("http://127.0.0.1:{nginx_http}/hls/bench.m3u8"),
            false,
            bench.fps,
        ));
        // When the node's stream got its first media, after the publisher's first bytes: a few
        // ms over RTMP, and over SRT what the remuxer's probe holds back.
        tokio::time::timeout(
            Duration::from_secs(20),
            first_media(&server.state.live.streams, &show.event, going_live),
        )
        .await
        .context("the node never received the publisher's stream")??;
        let first_media = first_bytes.elapsed();
        // The transcoder's CPU, sampled from the middle of the show to its end.
        tokio::time::sleep(Duration::from_secs(u64::from(bench.seconds / 4).max(2))).await;
        let transcoder = transcoder_pid(publisher_pid).context("no transcoder process")?;
        let (cpu_start, wall_start) = (cpu_ticks(transcoder)?, Instant::now());
        let nginx_wall_start = Instant::now();
        let mut cpu_end = cpu_start;
        let mut wall_end = wall_start;
        loop {
            tokio::select! {
                status = publisher.wait() => {
                    let status = status?;
                    if !status.success() {
                        bail!("the publisher failed: {status}");
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if let Ok(ticks) = cpu_ticks(transcoder) {
                        cpu_end = ticks;
                        wall_end = Instant::now();
                    }
                }
            }
        }
        let transcoder_cores = (cpu_end - cpu_start) as f64
            / clock_ticks_per_second()
            / wall_end.duration_since(wall_start).as_secs_f64().max(0.001);
        let nginx_cores = (nginx_cpu(&nginx_dir) - nginx_cpu_start) as f64
            / clock_ticks_per_second()
            / nginx_wall_start.elapsed().as_secs_f64().max(0.001);
        let t0 = stream_clock.await??;
        let marquee_latency = marquee_watch.await??;
        let edge_latency = edge_watch.await??;
        let low_latency = low_latency_watch.await??;
        let nginx_latency = nginx_watch.await??;
        let renditions = renditions(&client, &format!("{url}{}", show.hls_path)).await?;

        // Segment serving: the origin (token checked on every request) beside nginx's static
        // file serving of the same directory.
        let mut serving = Vec::new();
        for file in serving_files(&stream_dir)? {
            let bytes = std::fs::metadata(stream_dir.join(&file))?.len();
            let origin = format!("{url}{}{file}", show.media_base);
            let static_url = format!("http://127.0.0.1:{nginx_http}/files/{file}");
            let mut rate = ServeRate {
                file: file.clone(),
                bytes,
                marquee_rps: Vec::new(),
                nginx_rps: Vec::new(),
            };
            // Which goes first alternates, so neither always runs on the heels of the other.
            for round in 0..bench.rounds {
                if round % 2 == 1 {
                    rate.nginx_rps
                        .push(wrk(&static_url, bench.connections, bench.serve_duration)?);
                }
                rate.marquee_rps
                    .push(wrk(&origin, bench.connections, bench.serve_duration)?);
                if round % 2 == 0 {
                    rate.nginx_rps
                        .push(wrk(&static_url, bench.connections, bench.serve_duration)?);
                }
            }
            serving.push(rate);
        }
        Ok(LiveReport {
            first_media,
            latency: vec![
                summarize(
                    match bench.ingest {
                        Ingest::Rtmp => "marquee (720p rendition)",
                        Ingest::Srt => "marquee SRT (720p rendition)",
                    },
                    &marquee_latency,
                    t0,
                ),
                summarize("nginx-rtmp (source)", &nginx_latency, t0),
                summarize(
                    match bench.ingest {
                        Ingest::Rtmp => "marquee live edge (720p)",
                        Ingest::Srt => "marquee SRT live edge (720p)",
                    },
                    &edge_latency,
                    t0,
                ),
                summarize(
                    match bench.ingest {
                        Ingest::Rtmp => "marquee LL-HLS parts (720p)",
                        Ingest::Srt => "marquee SRT LL-HLS (720p)",
                    },
                    &low_latency,
                    t0,
                ),
            ],
            transcoder_cores,
            renditions,
            nginx_cores,
            serving,
        })
    }
    .await;
    crate::push::stop_child(&mut nginx);
    server.shutdown().await?;
    outcome
}

struct Show {
    event: String,
    stream_key: String,
    /// `/live/{event}/{token}/master.m3u8`
    hls_path: String,
    /// `/live/{event}/{token}/`
    media_base: String,
}

/// An organizer, a venue, a published event and its stream key, over the API.
async fn organize_show(client: &reqwest::Client, url: &str) -> anyhow::Result<Show> {
    let registered: Value = client
        .post(format!("{url}/api/v1/auth/register"))
        .json(
            &json!({"email": "organizer@bench.test", "password": "correct horse battery",
                      "name": "Bench", "role": "organizer"}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = registered["token"].as_str().context("token")?.to_string();
    let post = |path: String, body: Value| {
        let request = client
            .post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            anyhow::Ok(
                request
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Value>()
                    .await?,
            )
        }
    };
    let venue = post(
        "/api/v1/venues".into(),
        json!({"name": "Bench Hall", "city": "Leeds", "country": "GB", "lat": 53.8, "lon": -1.55,
               "sections": [{"name": "Floor", "rows": [{"label": "A", "seats": 10}]}]}),
    )
    .await?;
    let event = post(
        "/api/v1/events".into(),
        json!({"title": "Bench Live", "venue_id": venue["id"], "category": "concert",
               "starts_at": "2031-01-01T20:00:00Z",
               "price_tiers": [{"name": "Floor", "price_cents": 1000, "currency": "GBP",
                                "sections": ["Floor"]}]}),
    )
    .await?;
    let event = event["id"].as_str().context("event id")?.to_string();
    post(format!("/api/v1/events/{event}/publish"), json!({})).await?;
    let key = post(format!("/api/v1/events/{event}/stream"), json!({})).await?;
    let stream: Value = client
        .get(format!("{url}/api/v1/events/{event}/stream"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let hls_url = stream["hls_url"].as_str().context("hls_url")?;
    let hls_path = match hls_url.find("/live/") {
        Some(at) => hls_url[at..].to_string(),
        None => hls_url.to_string(),
    };
    let media_base = hls_path.trim_end_matches("master.m3u8").to_string();
    Ok(Show {
        event,
        stream_key: key["stream_key"].as_str().context("key")?.to_string(),
        hls_path,
        media_base,
    })
}

/// The publisher: one encode, teed to both servers and to the bench's clock. `marquee` is a
/// whole tee slave (`[f=…]url`): FLV over RTMP or MPEG-TS over SRT.
fn publish(
    bench: &LiveBench,
    marquee: &str,
    nginx: &str,
    clock: &str,
) -> anyhow::Result<tokio::process::Child> {
    let gop = (bench.fps * 2).to_string();
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={}:rate={}", bench.size, bench.fps))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &bench.seconds.to_string()])
        .args(["-map", "0:v", "-map", "1:a"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args(["-pix_fmt", "yuv420p", "-b:v", "3000k", "-maxrate", "3000k"])
        .args(["-bufsize", "3000k", "-g", &gop, "-keyint_min", &gop])
        .args(["-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k"])
        .args(["-flags", "+global_header", "-f", "tee"])
        .arg(format!(
            "{marquee}|[f=flv:onfail=ignore]{nginx}|[f=flv:onfail=ignore]{clock}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("running ffmpeg (apt-get install ffmpeg)")
}

/// One segment as a watcher saw it: its stream time and duration, and when each of its
/// frames (by stream time) could first be played.
struct Seen {
    start: f64,
    duration: f64,
    frames: Vec<(f64, Instant)>,
}

/// A player at the live edge: polls the (first) media playlist, downloads each new segment.
/// With `master`, `url` is a master playlist and the first variant of the source's height is
/// followed. Ends when the playlist ends or nothing new is listed for 8 s.
async fn watch(
    client: reqwest::Client,
    url: String,
    master: bool,
    fps: u32,
) -> anyhow::Result<Vec<Seen>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let media_url = if master {
        top_media_playlist(&client, &url, deadline).await?
    } else {
        url
    };
    let mut starts: HashMap<u64, f64> = HashMap::new();
    let mut done: HashSet<u64> = HashSet::new();
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_new = Instant::now();
    loop {
        if last_new.elapsed() > Duration::from_secs(8)
            || Instant::now() > deadline + Duration::from_secs(600)
        {
            break;
        }
        let response = client.get(&media_url).send().await?;
        if !response.status().is_success() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body = response.bytes().await?;
        let Ok(m3u8_rs::Playlist::MediaPlaylist(playlist)) = m3u8_rs::parse_playlist_res(&body)
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let first_sequence = playlist.media_sequence;
        for (index, segment) in playlist.segments.iter().enumerate() {
            let sequence = first_sequence + index as u64;
            if done.contains(&sequence) {
                continue;
            }
            // Stream time: the previous segment's start plus its duration; the first segment
            // seen starts the stream (the watcher starts before the show).
            let start = match starts.get(&sequence) {
                Some(start) => *start,
                None if done.is_empty() => 0.0,
                None => bail!("segment {sequence} came without its predecessor"),
            };
            let bytes = client
                .get(join(&media_url, &segment.uri))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            if bytes.is_empty() {
                bail!("an empty segment");
            }
            let downloaded = Instant::now();
            let duration = f64::from(segment.duration);
            done.insert(sequence);
            starts.insert(sequence + 1, start + duration);
            let count = (duration * f64::from(fps)).round().max(1.0) as u32;
            seen.push(Seen {
                start,
                duration,
                frames: (0..count)
                    .map(|frame| (start + f64::from(frame) / f64::from(fps), downloaded))
                    .collect(),
            });
            last_new = downloaded;
        }
        if playlist.end_list {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(seen)
}

/// The media playlist of the master playlist at `url`'s tallest variant, once it is served.
async fn top_media_playlist(
    client: &reqwest::Client,
    url: &str,
    deadline: Instant,
) -> anyhow::Result<String> {
    loop {
        if Instant::now() > deadline {
            bail!("no master playlist at {url}");
        }
        let response = client.get(url).send().await?;
        if response.status().is_success() {
            let body = response.bytes().await?;
            if let Ok(m3u8_rs::Playlist::MasterPlaylist(playlist)) =
                m3u8_rs::parse_playlist_res(&body)
            {
                let best = playlist
                    .variants
                    .iter()
                    .max_by_key(|variant| variant.resolution.map_or(0, |size| size.height))
                    .context("no variants")?;
                return Ok(join(url, &best.uri));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A low-latency player at the live edge: from the first segment listed on, it asks for each
/// next segment as soon as it has the last one, before that segment is listed or whole, and
/// reads it as the origin sends it (`marquee_media::LiveEdge`). A frame can play once the
/// CMAF fragment holding it has arrived; its stream time comes from the fragment's `tfdt` and
/// `trun`, counted from the first segment's start (as the whole-segment watcher counts). Ends
/// when the next segment never comes (the show ended).
async fn watch_edge(client: reqwest::Client, master_url: String) -> anyhow::Result<Vec<Seen>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let media_url = top_media_playlist(&client, &master_url, deadline).await?;
    let (init, mut segment) = loop {
        if Instant::now() > deadline {
            bail!("no segment listed at {media_url}");
        }
        let body = client.get(&media_url).send().await?.bytes().await?;
        if let Ok(m3u8_rs::Playlist::MediaPlaylist(playlist)) = m3u8_rs::parse_playlist_res(&body) {
            if let Some(first) = playlist.segments.first() {
                // The map tag is written once, before the first segment.
                let init = playlist
                    .segments
                    .iter()
                    .find_map(|segment| segment.map.as_ref())
                    .map(|map| map.uri.clone())
                    .context("no EXT-X-MAP (init segment) in the media playlist")?;
                break (init, first.uri.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let init = client
        .get(join(&media_url, &init))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let timescale = cmaf::timescale(&init).context("no mdhd timescale in the init segment")?;
    let mut origin: Option<u64> = None;
    let mut seen = Vec::new();
    loop {
        let mut response = client.get(join(&media_url, &segment)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        let response_status = response.status();
        if !response_status.is_success() {
            bail!("{segment}: {response_status}");
        }
        let mut reader = cmaf::FragmentReader::default();
        let mut frames = Vec::new();
        let mut span: Option<(u64, u64)> = None;
        while let Some(chunk) = response.chunk().await? {
            let arrived = Instant::now();
            for fragment in reader.push(&chunk) {
                let origin = *origin.get_or_insert(fragment.decode_time);
                let mut time = fragment.decode_time;
                for duration in &fragment.sample_durations {
                    frames.push((
                        time.saturating_sub(origin) as f64 / f64::from(timescale),
                        arrived,
                    ));
                    time += u64::from(*duration);
                }
                let (start, _) = span.get_or_insert((fragment.decode_time, time));
                span = Some((*start, time));
            }
        }
        let (Some((start, end)), Some(origin)) = (span, origin) else {
            bail!("{segment} held no fragment");
        };
        seen.push(Seen {
            start: start.saturating_sub(origin) as f64 / f64::from(timescale),
            duration: (end - start) as f64 / f64::from(timescale),
            frames,
        });
        segment = next_segment_name(&segment).context("segment names are not numbered")?;
    }
    Ok(seen)
}

/// A low-latency HLS player (hls.js with `lowLatencyMode`, Safari): it asks for the playlist
/// with `_HLS_msn`/`_HLS_part` naming the part after the last it has, so the origin answers
/// the moment that part is written, and downloads each new part whole. A frame can play once
/// the part holding it is downloaded. From the first segment listed on; ends with the
/// playlist.
async fn watch_low_latency(
    client: reqwest::Client,
    master_url: String,
) -> anyhow::Result<Vec<Seen>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let media_url = top_media_playlist(&client, &master_url, deadline).await?;
    let mut timescale = None;
    let mut origin: Option<u64> = None;
    // The next part wanted: (media sequence number, part index).
    let mut wanted: Option<(u64, usize)> = None;
    let mut seen: Vec<(u64, Seen)> = Vec::new();
    loop {
        let url = match wanted {
            Some((msn, part)) => format!("{media_url}?_HLS_msn={msn}&_HLS_part={part}"),
            None => media_url.clone(),
        };
        let response = client.get(&url).send().await?;
        if !response.status().is_success() {
            // Not there yet (before the first segment), or not in time (the show is over).
            if wanted.is_some() && Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let playlist = PartList::parse(&response.text().await?);
        if timescale.is_none() {
            let Some(map) = &playlist.map else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let init = client
                .get(join(&media_url, map))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            timescale = Some(cmaf::timescale(&init).context("no timescale in the init segment")?);
        }
        let timescale = f64::from(timescale.unwrap_or(1));
        let (mut msn, mut index) = match wanted {
            Some(wanted) => wanted,
            None => match playlist.parts.first() {
                Some((msn, ..)) => (*msn, 0),
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        for (part_msn, part_index, uri) in &playlist.parts {
            if (*part_msn, *part_index) < (msn, index) {
                continue;
            }
            if (*part_msn, *part_index) != (msn, index) {
                // The segment ended before the part asked for: the next one's first part.
                let ended_before =
                    playlist.whole.contains(&msn) && !playlist.lists_part(msn, index);
                if !(ended_before && (*part_msn, *part_index) == (msn + 1, 0)) {
                    bail!(
                        "part {index} of segment {msn} was skipped: {part_msn}/{part_index} came"
                    );
                }
                (msn, index) = (msn + 1, 0);
            }
            let bytes = client
                .get(join(&media_url, uri))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let arrived = Instant::now();
            if seen.last().map(|(last, _)| *last) != Some(msn) {
                seen.push((
                    msn,
                    Seen {
                        start: f64::MAX,
                        duration: 0.0,
                        frames: Vec::new(),
                    },
                ));
            }
            let (_, segment) = seen.last_mut().context("a segment")?;
            for fragment in cmaf::fragments(&bytes) {
                let origin = *origin.get_or_insert(fragment.decode_time);
                let start = fragment.decode_time.saturating_sub(origin) as f64 / timescale;
                let mut time = fragment.decode_time;
                for duration in &fragment.sample_durations {
                    segment
                        .frames
                        .push((time.saturating_sub(origin) as f64 / timescale, arrived));
                    time += u64::from(*duration);
                }
                segment.start = segment.start.min(start);
                segment.duration = time.saturating_sub(origin) as f64 / timescale - segment.start;
            }
            index += 1;
        }
        // Past the last part of a segment listed whole: the next segment's first part.
        if playlist.whole.contains(&msn) && !playlist.lists_part(msn, index) {
            msn += 1;
            index = 0;
        }
        wanted = Some((msn, index));
        if playlist.ended && msn >= playlist.next_msn {
            break;
        }
    }
    Ok(seen.into_iter().map(|(_, seen)| seen).collect())
}

/// What a low-latency player reads of a media playlist.
struct PartList {
    map: Option<String>,
    /// (segment's media sequence number, part index, URI), in order.
    parts: Vec<(u64, usize, String)>,
    /// Media sequence numbers of the segments listed whole.
    whole: HashSet<u64>,
    next_msn: u64,
    ended: bool,
}

impl PartList {
    fn lists_part(&self, msn: u64, index: usize) -> bool {
        self.parts
            .iter()
            .any(|(at, part, _)| (*at, *part) == (msn, index))
    }

    fn parse(text: &str) -> PartList {
        let mut list = PartList {
            map: None,
            parts: Vec::new(),
            whole: HashSet::new(),
            next_msn: 0,
            ended: false,
        };
        let uri = |line: &str| {
            line.split_once("URI=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(uri, _)| uri.to_string())
        };
        let mut index = 0;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                list.next_msn = value.trim().parse().unwrap_or(0);
            } else if line.starts_with("#EXT-X-MAP:") {
                list.map = uri(line);
            } else if line.starts_with("#EXT-X-PART:") {
                if let Some(uri) = uri(line) {
                    list.parts.push((list.next_msn, index, uri));
                    index += 1;
                }
            } else if line == "#EXT-X-ENDLIST" {
                list.ended = true;
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                list.whole.insert(list.next_msn);
                list.next_msn += 1;
                index = 0;
            }
        }
        list
    }
}

/// `chunk-r1-0-00007.m4s` → `chunk-r1-0-00008.m4s`: the number before the extension, plus one.
fn next_segment_name(name: &str) -> Option<String> {
    let (stem, extension) = name.rsplit_once('.')?;
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (prefix, number) = stem.split_at(stem.len() - digits);
    let next = number.parse::<u64>().ok()? + 1;
    Some(format!("{prefix}{next:0digits$}.{extension}"))
}

/// Returns once `stream` has its first media: after its going live is pushed on `changes`,
/// its first tag (or at once, if one came before this could subscribe).
async fn first_media(
    streams: &marquee_media::LiveStreams,
    stream: &str,
    mut changes: tokio::sync::broadcast::Receiver<marquee_media::StatusChange>,
) -> anyhow::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    while streams.status(stream) != marquee_media::StreamStatus::Live {
        if let Err(RecvError::Closed) = changes.recv().await {
            bail!("the node's streams are gone");
        }
    }
    let (_, mut tags) = streams.subscribe(stream).context("the stream is gone")?;
    if streams.bytes_received(stream) == 0 {
        if let Err(RecvError::Closed) = tags.recv().await {
            bail!("the stream ended before any media");
        }
    }
    Ok(())
}

/// Aborts its task when dropped, so no early return leaves it running.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn join(base: &str, relative: &str) -> String {
    if relative.starts_with("http://") || relative.starts_with("https://") {
        return relative.to_string();
    }
    match base.rfind('/') {
        Some(at) => format!("{}/{relative}", &base[..at]),
        None => relative.to_string(),
    }
}

/// Latency per frame: when it could play, less when it left the publisher (`t0` plus its
/// stream time).
fn summarize(name: &'static str, seen: &[Seen], t0: Instant) -> Latency {
    let since_t0 = |instant: Instant| match instant.checked_duration_since(t0) {
        Some(after) => after.as_secs_f64(),
        None => -t0.duration_since(instant).as_secs_f64(),
    };
    let mut frames = Vec::new();
    let mut newest = Vec::new();
    for segment in seen {
        for (time, available) in &segment.frames {
            frames.push(since_t0(*available) - time);
        }
        if let Some(last) = segment.frames.iter().map(|(_, available)| *available).max() {
            newest.push(since_t0(last) - (segment.start + segment.duration));
        }
    }
    Latency {
        name,
        segments: seen.len(),
        p50: percentile(&mut frames, 0.50),
        p95: percentile(&mut frames, 0.95),
        newest_frame_p50: percentile(&mut newest, 0.50),
    }
}

fn percentile(values: &mut [f64], quantile: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let at = ((values.len() - 1) as f64 * quantile).round() as usize;
    values[at]
}

/// The renditions the master playlist lists, as `WxH`.
async fn renditions(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<String>> {
    let body = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(playlist)) => Ok(playlist
            .variants
            .iter()
            .filter_map(|variant| variant.resolution)
            .map(|size| format!("{}x{}", size.width, size.height))
            .collect()),
        _ => bail!("{url} is not a master playlist"),
    }
}

/// A segment of the top and of the bottom rendition, from the middle of the show.
fn serving_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut chunks: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with("chunk-") && name.ends_with(".m4s"))
        .collect();
    chunks.sort();
    let pick = |rendition: &str| {
        let of: Vec<&String> = chunks
            .iter()
            .filter(|name| name.split('-').nth(2) == Some(rendition))
            .collect();
        of.get(of.len() / 2).map(|name| name.to_string())
    };
    let files: Vec<String> = [pick("0"), pick("2")].into_iter().flatten().collect();
    if files.is_empty() {
        bail!("no segments in {}", dir.display());
    }
    Ok(files)
}

/// nginx with the RTMP module: `live` packages HLS into `hls/` (served at `/hls/`), and the
/// node's stream directory is served statically at `/files/`.
fn start_nginx_rtmp(
    dir: &Path,
    rtmp_port: u16,
    http_port: u16,
    stream_dir: &Path,
) -> anyhow::Result<std::process::Child> {
    let module = ["/usr/lib/nginx/modules/ngx_rtmp_module.so"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .context("nginx's RTMP module is missing (apt-get install libnginx-mod-rtmp)")?;
    let config = format!(
        r#"load_module {module};
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    chunk_size 4096;
    application live {{
      live on;
      hls on;
      hls_path {dir}/hls;
      hls_fragment 2s;
      hls_playlist_length 20s;
      hls_fragment_naming sequential;
    }}
  }}
}}
http {{
{private}
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types {{
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
    video/mp4 m4s mp4;
  }}
  server {{
    listen 127.0.0.1:{http_port};
    location /hls/ {{
      alias {dir}/hls/;
      add_header Cache-Control no-cache;
    }}
    location /files/ {{
      alias {stream}/;
      add_header Cache-Control "public, max-age=31536000, immutable";
    }}
  }}
}}
"#,
        module = module.display(),
        dir = dir.display(),
        private = nginx_private_paths(dir),
        stream = stream_dir.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light libnginx-mod-rtmp)")
}

/// The transcoder: this process's ffmpeg child that is neither the publisher nor a remuxer.
fn transcoder_pid(publisher: Option<u32>) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != publisher)
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (comm, rest) = stat.split_once(") ")?;
                    let parent: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
                    Some(comm.ends_with("(ffmpeg") && parent == me)
                })
                .unwrap_or(false)
                // Not the SRT remuxer: only the transcoder reports `-progress`.
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|byte| *byte == 0).any(|arg| arg == b"-progress"))
        })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.split_once(") ").context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5); utime and stime are 14 and 15.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// The CPU ticks of nginx's worker processes (children of the master in `dir`'s pid file).
fn nginx_cpu(dir: &Path) -> u64 {
    let Some(master) = std::fs::read_to_string(dir.join("nginx.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
    else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.split_once(") ")?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .chain(std::iter::once(master))
        .filter_map(|pid| cpu_ticks(pid).ok())
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux this runs on (it is fixed by the kernel ABI for /proc).
    100.0
}

/// The report as BENCHMARKS.md shows it.
pub fn print_report(bench: &LiveBench, report: &LiveReport) {
    println!(
        "show: {} s of {} at {} fps over {} to the node, renditions {} (x264 {})",
        bench.seconds,
        bench.size,
        bench.fps,
        match bench.ingest {
            Ingest::Rtmp => "RTMP",
            Ingest::Srt => "SRT",
        },
        report.renditions.join(", "),
        bench.preset
    );
    println!(
        "{:<28} {:>9} {:>10} {:>10} {:>18}",
        "glass-to-glass", "segments", "p50 s", "p95 s", "newest frame p50"
    );
    for latency in &report.latency {
        println!(
            "{:<28} {:>9} {:>10.2} {:>10.2} {:>18.2}",
            latency.name, latency.segments, latency.p50, latency.p95, latency.newest_frame_p50
        );
    }
    println!(
        "the node's stream had its first media {:.3} s after the publisher sent its first bytes",
        report.first_media.as_secs_f64()
    );
    if let [marquee, nginx, edge, low_latency] = &report.latency[..] {
        println!(
            "latency ratio marquee / nginx-rtmp (p50), whole segments: {:.2}; LL-HLS parts: \
             {:.2}; at the live edge: {:.2}",
            marquee.p50 / nginx.p50,
            low_latency.p50 / nginx.p50,
            edge.p50 / nginx.p50
        );
    }
    let renditions = report.renditions.len().max(1) as f64;
    println!(
        "transcoder CPU: {:.2} cores for {} renditions ({:.2} per rendition); nginx-rtmp \
         repackaging: {:.2} cores",
        report.transcoder_cores,
        report.renditions.len(),
        report.transcoder_cores / renditions,
        report.nginx_cores
    );
    println!(
        "segment serving: wrk -t2 -c{} -d{}s, the origin's media path {}",
        bench.connections,
        bench.serve_duration.as_secs().max(1),
        if bench.media_lean_http {
            "lean (the default)"
        } else {
            "through hyper and the router (--media-lean-http false)"
        }
    );
    println!(
        "{:<32} {:>10} {:>14} {:>14} {:>8}",
        "segment serving (wrk)", "bytes", "origin req/s", "nginx req/s", "ratio"
    );
    for rate in &report.serving {
        let (origin, nginx) = (median(&rate.marquee_rps), median(&rate.nginx_rps));
        println!(
            "{:<32} {:>10} {:>14.0} {:>14.0} {:>8.2}",
            rate.file,
            rate.bytes,
            origin,
            nginx,
            origin / nginx
        );
        println!(
            "  rounds: origin {:?}, nginx {:?}",
            rate.marquee_rps
                .iter()
                .map(|rps| rps.round())
                .collect::<Vec<_>>(),
            rate.nginx_rps
                .iter()
                .map(|rps| rps.round())
                .collect::<Vec<_>>()
        );
        // Each round runs the origin and nginx back to back, so a round's ratio is what this
        // noisy machine disturbs least: a slow spell usually hits one round, not one server.
        let paired: Vec<f64> = rate
            .marquee_rps
            .iter()
            .zip(&rate.nginx_rps)
            .map(|(origin, nginx)| origin / nginx)
            .collect();
        println!(
            "  ratio per round {:?}, median {:.2}",
            paired
                .iter()
                .map(|ratio| (ratio * 100.0).round() / 100.0)
                .collect::<Vec<_>>(),
            median(&paired)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_segment_name_counts_on_with_its_padding() {
        assert_eq!(
            next_segment_name("chunk-r17-0-00009.m4s").as_deref(),
            Some("chunk-r17-0-00010.m4s")
        );
        assert_eq!(
            next_segment_name("chunk-r17-0-99999.m4s").as_deref(),
            Some("chunk-r17-0-100000.m4s")
        );
        assert_eq!(next_segment_name("bench.m3u8"), None);
    }

    #[test]
    fn a_low_latency_playlist_is_read_as_numbered_parts_and_whole_segments() {
        let playlist = PartList::parse(
            "#EXTM3U
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000
#EXT-X-PART-INF:PART-TARGET=0.100
#EXT-X-MEDIA-SEQUENCE:19
#EXT-X-MAP:URI=\"init-r1-0.m4s\"
#EXTINF:2.000000,
chunk-r1-0-00019.m4s
#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00020.part0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00020.part1.m4s\"
#EXTINF:0.200000,
chunk-r1-0-00020.m4s
#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00021.part0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"chunk-r1-0-00021.part1.m4s\"
",
        );
        assert_eq!(playlist.map.as_deref(), Some("init-r1-0.m4s"));
        let numbered: Vec<_> = playlist
            .parts
            .iter()
            .map(|(msn, index, _)| (*msn, *index))
            .collect();
        assert_eq!(numbered, vec![(20, 0), (20, 1), (21, 0)]);
        assert_eq!(playlist.parts[2].2, "chunk-r1-0-00021.part0.m4s");
        assert_eq!(playlist.whole, HashSet::from([19, 20]));
        assert_eq!(playlist.next_msn, 21);
        assert!(playlist.lists_part(20, 1) && !playlist.lists_part(20, 2));
        assert!(!playlist.ended);
    }
}
