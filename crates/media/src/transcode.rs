//! The transcoder: one supervised ffmpeg per live stream, decoding once and encoding the
//! ladder, packaged as CMAF segments with both an HLS master playlist and a DASH MPD over the
//! same files, and the show recorded (video copied) beside them.
//!
//! Why ffmpeg as a child process rather than linked libav: an encoder crash (or a hostile
//! bitstream that trips one) takes down a child, not the server, and the supervisor starts it
//! again; the ladder, the 2-second keyframe cadence and the packaging are all ffmpeg options
//! that operators already know. ffmpeg's `dash` muxer writes the HLS playlists too
//! (`-hls_playlist`), so HLS and DASH players fetch the same segments and any cache holds
//! each segment once.
//!
//! Every file of a stream is in `<root>/<stream>/`. Each run of ffmpeg (the first, and each
//! restart after a crash) names its segments with its run number
//! (`chunk-r1764707712346-1-00007.m4s`; runs count on from the show's start in milliseconds),
//! so neither a restart nor a later show rewrites a segment that a player or a cache already
//! holds under that name: segments are immutable, only the playlists and the MPD change.

use crate::flv;
use crate::ladder::{self, Rendition, SourceError};
use crate::streams::{LiveStreams, StreamStatus};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct TranscodeSettings {
    pub ffmpeg: PathBuf,
    /// Where each stream's output directory is made.
    pub output_root: PathBuf,
    /// Segment (and keyframe) interval.
    pub segment_seconds: u32,
    /// Segments a live playlist lists.
    pub window_segments: u32,
    /// x264 preset of the renditions.
    pub preset: String,
    /// How long a stream may send no H.264 configuration before it is refused.
    pub source_timeout: Duration,
    /// Crashes of one stream's ffmpeg after which the stream is ended.
    pub max_restarts: u32,
    /// How long a stopping ffmpeg may take to write its last segments before it is killed.
    pub stop_timeout: Duration,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            ffmpeg: PathBuf::from("ffmpeg"),
            output_root: PathBuf::from("live"),
            segment_seconds: 2,
            window_segments: 10,
            preset: "veryfast".into(),
            source_timeout: Duration::from_secs(10),
            max_restarts: 5,
            stop_timeout: Duration::from_secs(15),
        }
    }
}

/// A finished recording, handed on to be stored.
#[derive(Debug, Clone)]
pub struct FinishedRecording {
    pub stream: String,
    pub path: PathBuf,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
}

/// Where the transcoder reports to: the platform keeps recordings.
#[async_trait]
pub trait TranscodeEvents: Send + Sync + 'static {
    async fn recording_finished(&self, recording: FinishedRecording);
}

/// The ffmpeg command line for run `run`: input FLV on stdin, the ladder as CMAF with
/// `manifest.mpd` and `master.m3u8` in `dir`, and `recording-r{run}.mp4` (fragmented, so a
/// crash leaves it playable) beside them.
pub fn ffmpeg_args(
    settings: &TranscodeSettings,
    renditions: &[Rendition],
    has_audio: bool,
    dir: &Path,
    run: u64,
) -> Vec<String> {
    let seconds = settings.segment_seconds.max(1);
    let mut args: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "warning",
        "-nostats",
        "-nostdin",
        "-progress",
        "pipe:1",
        // The decoder's default frame threading holds one frame per thread before it hands
        // the first one out: a frame of latency per core. Slice threading adds none, and one
        // decode feeds every rendition, so it is not the bottleneck.
        "-thread_type",
        "slice",
        "-f",
        "flv",
        "-i",
        "pipe:0",
    ]
    .map(String::from)
    .to_vec();
    // Every rendition is encoded, the source's size too: a copied source would keep the
    // encoder's keyframes and timestamps, and players that switch between it and the
    // renditions (Chromium's own HLS, for one) fail on the mismatch.
    let mut graph = format!("[0:v]split={}", renditions.len());
    for index in 0..renditions.len() {
        graph.push_str(&format!("[s{index}]"));
    }
    // The scaler keeps the display aspect ratio (an 854-wide 480p gets a sample aspect ratio
    // just off 1:1), which the DASH muxer requires of one adaptation set.
    for (index, rendition) in renditions.iter().enumerate() {
        if index == 0 {
            graph.push_str(&format!(";[s{index}]null[v{index}]"));
        } else {
            graph.push_str(&format!(
                ";[s{index}]scale={}:{}[v{index}]",
                rendition.width, rendition.height
            ));
        }
    }
    args.extend(["-filter_complex".into(), graph]);
    for index in 0..renditions.len() {
        args.extend(["-map".into(), format!("[v{index}]")]);
    }
    if has_audio {
        args.extend(["-map".into(), "0:a:0".into()]);
    }
    for (stream, rendition) in renditions.iter().enumerate() {
        let kbps = rendition.video_kbps.unwrap_or(1_000);
        args.extend([
            format!("-c:v:{stream}"),
            "libx264".into(),
            format!("-b:v:{stream}"),
            format!("{kbps}k"),
            format!("-maxrate:v:{stream}"),
            format!("{}k", kbps * 3 / 2),
            format!("-bufsize:v:{stream}"),
            format!("{}k", kbps * 2),
        ]);
    }
    {
        args.extend(
            [
                "-preset",
                &settings.preset,
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
                "-sc_threshold",
                "0",
            ]
            .map(String::from),
        );
        // Keyframes on every segment boundary, the same instants in every rendition.
        args.extend([
            "-force_key_frames".into(),
            format!("expr:gte(t,n_forced*{seconds})"),
        ]);
    }
    if has_audio {
        args.extend(["-c:a", "aac", "-b:a", "128k", "-ac", "2"].map(String::from));
    }
    let sets = if has_audio {
        "id=0,streams=v id=1,streams=a"
    } else {
        "id=0,streams=v"
    };
    args.extend(
        [
            "-f",
            "dash",
            "-seg_duration",
            &seconds.to_string(),
            "-use_template",
            "1",
            "-use_timeline",
            "1",
            "-window_size",
            &settings.window_segments.to_string(),
            // Segments stay on disk a while after they leave the playlist, for players and
            // caches that fetched the playlist just before.
            "-extra_window_size",
            &settings.window_segments.to_string(),
            "-adaptation_sets",
            sets,
            // Each segment is written as it is encoded, a small CMAF fragment at a time, so
            // the origin can hand it to viewers at the live edge before it is whole
            // (`crate::edge`); the MPD says so (`availabilityTimeComplete="false"`).
            "-streaming",
            "1",
            "-ldash",
            "1",
            "-frag_type",
            "duration",
            "-frag_duration",
            &crate::edge::FRAGMENT_SECONDS.to_string(),
            "-hls_playlist",
            "1",
            "-hls_master_name",
            "master.m3u8",
            "-format_options",
            "movflags=cmaf",
            "-init_seg_name",
            &format!("init-r{run}-$RepresentationID$.$ext$"),
            "-media_seg_name",
            &format!("chunk-r{run}-$RepresentationID$-$Number%05d$.$ext$"),
            "-remove_at_exit",
            "0",
        ]
        .map(String::from),
    );
    args.push(dir.join("manifest.mpd").display().to_string());
    // The recording: the source as sent, fragmented MP4.
    args.extend(["-map".into(), "0:v:0".into()]);
    if has_audio {
        args.extend(["-map".into(), "0:a:0".into()]);
    }
    args.extend(
        [
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-f",
            "mp4",
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof",
        ]
        .map(String::from),
    );
    args.push(recording_path(dir, run).display().to_string());
    args
}

fn recording_path(dir: &Path, run: u64) -> PathBuf {
    dir.join(format!("recording-r{run}.mp4"))
}

/// Starts a transcoder for every stream that goes live on `streams`, until `stop`.
pub fn spawn_transcoders(
    streams: Arc<LiveStreams>,
    settings: TranscodeSettings,
    events: Arc<dyn TranscodeEvents>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = streams.changes();
        let mut running: Vec<JoinHandle<()>> = Vec::new();
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            running.retain(|task| !task.is_finished());
            match change {
                Ok(change) if change.status == StreamStatus::Live => {
                    let Some((head, tags)) = streams.subscribe(&change.stream) else {
                        continue;
                    };
                    let supervisor = Supervisor {
                        stream: change.stream,
                        streams: Arc::clone(&streams),
                        settings: settings.clone(),
                        events: Arc::clone(&events),
                    };
                    running.push(tokio::spawn(supervisor.run(head, tags)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "transcoders: status changes missed");
                }
                Err(RecvError::Closed) => break,
            }
        }
        // Shutting down: every stream ends, so every ffmpeg finishes its files.
        for task in running {
            let _ = task.await;
        }
    })
}

struct Supervisor {
    stream: String,
    streams: Arc<LiveStreams>,
    settings: TranscodeSettings,
    events: Arc<dyn TranscodeEvents>,
}

/// What the source turned out to be, from its first tags.
struct Source {
    renditions: Vec<Rendition>,
    has_audio: bool,
    /// Tags read while finding out, fed to ffmpeg first.
    buffered: Vec<Bytes>,
}

enum Probe {
    Ready(Source),
    Refused(String),
    Ended,
}

impl Supervisor {
    async fn run(self, head: Bytes, mut tags: broadcast::Receiver<Bytes>) {
        let source = match self.probe(&head, &mut tags).await {
            Probe::Ready(source) => source,
            Probe::Refused(problem) => {
                tracing::info!(stream = %self.stream, %problem, "stream refused");
                metrics::counter!("marquee_streams_refused_total").increment(1);
                self.streams.end(&self.stream, Some(problem));
                return;
            }
            Probe::Ended => return,
        };
        let stream_dir = self.settings.output_root.join(&self.stream);
        // A new show: what an earlier one left is gone (its recordings were stored).
        let _ = tokio::fs::remove_dir_all(&stream_dir).await;
        if let Err(error) = tokio::fs::create_dir_all(&stream_dir).await {
            self.streams.end(
                &self.stream,
                Some(format!("the media directory cannot be made: {error}")),
            );
            return;
        }
        let mut first = Some((head, source.buffered.clone()));
        let mut restarts = 0;
        // Runs are numbered by the time they start (milliseconds), so neither a restart nor a
        // later show of the same event (a new key) reuses a segment name that a player, the
        // origin's cache or a PoP holds as immutable.
        let mut run = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(1);
        loop {
            let (head, buffered) = match first.take() {
                Some(start) => start,
                None => match self.streams.subscribe(&self.stream) {
                    Some((head, receiver)) => {
                        tags = receiver;
                        (head, Vec::new())
                    }
                    None => return,
                },
            };
            let outcome = self
                .transcode(&stream_dir, run, &source, head, buffered, &mut tags)
                .await;
            match outcome {
                RunOutcome::StreamEnded => return,
                RunOutcome::Crashed(reason) => {
                    restarts += 1;
                    metrics::counter!("marquee_transcoder_restarts_total").increment(1);
                    tracing::warn!(stream = %self.stream, restarts, %reason, "ffmpeg stopped; restarting");
                    if restarts > self.settings.max_restarts {
                        self.streams.end(
                            &self.stream,
                            Some(format!("the transcoder keeps failing: {reason}")),
                        );
                        return;
                    }
                    if self.streams.status(&self.stream) != StreamStatus::Live {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(restarts))).await;
                    // The clock again, so that a run's number says when it started: LL-HLS
                    // media sequence numbers count on from it across runs (`crate::llhls`).
                    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
                    run = (run + 1).max(now);
                }
            }
        }
    }

    /// Reads tags until the video's configuration is known.
    async fn probe(&self, head: &Bytes, tags: &mut broadcast::Receiver<Bytes>) -> Probe {
        let mut buffered = Vec::new();
        let mut has_audio = false;
        let mut video_header = None;
        // Sequence headers kept from before the subscription come in `head`.
        for tag in flv::tags_of(head) {
            match tag.kind {
                flv::TagKind::Audio => has_audio = true,
                flv::TagKind::Video if flv::is_video_sequence_header(tag.body) => {
                    video_header = Some(Bytes::copy_from_slice(tag.body));
                }
                flv::TagKind::Video | flv::TagKind::Script => {}
            }
        }
        let deadline = tokio::time::Instant::now() + self.settings.source_timeout;
        while video_header.is_none() {
            let tag = match tokio::time::timeout_at(deadline, tags.recv()).await {
                Err(_) => {
                    return Probe::Refused(if has_audio {
                        "audio only: the stream carries no video".into()
                    } else {
                        "no H.264 video configuration arrived".into()
                    })
                }
                Ok(Err(RecvError::Closed)) => return Probe::Ended,
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Ok(tag)) => tag,
            };
            if let Some(parsed) = flv::tags_of(&tag).next() {
                match parsed.kind {
                    flv::TagKind::Audio => has_audio = true,
                    flv::TagKind::Video => {
                        let codec = parsed.body.first().map_or(0, |byte| byte & 0x0f);
                        if codec != 7 {
                            return Probe::Refused(
                                SourceError::UnsupportedCodec(codec).to_string(),
                            );
                        }
                        if flv::is_video_sequence_header(parsed.body) {
                            video_header = Some(Bytes::copy_from_slice(parsed.body));
                        }
                    }
                    flv::TagKind::Script => {}
                }
            }
            if buffered.len() < 4_096 {
                buffered.push(tag);
            }
        }
        let Some(video_header) = video_header else {
            return Probe::Ended;
        };
        match ladder::source_dimensions(&video_header) {
            Ok((width, height)) => Probe::Ready(Source {
                renditions: ladder::ladder(width, height),
                has_audio,
                buffered,
            }),
            Err(error) => Probe::Refused(error.to_string()),
        }
    }

    async fn transcode(
        &self,
        dir: &Path,
        run: u64,
        source: &Source,
        head: Bytes,
        buffered: Vec<Bytes>,
        tags: &mut broadcast::Receiver<Bytes>,
    ) -> RunOutcome {
        let args = ffmpeg_args(
            &self.settings,
            &source.renditions,
            source.has_audio,
            dir,
            run,
        );
        let started_at = chrono::Utc::now();
        let mut child = match Command::new(&self.settings.ffmpeg)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                return RunOutcome::Crashed(format!(
                    "cannot start {}: {error}",
                    self.settings.ffmpeg.display()
                ))
            }
        };
        metrics::gauge!("marquee_transcoders_running").increment(1.0);
        let watchers = watch_output(&mut child, &self.stream);
        let Some(mut stdin) = child.stdin.take() else {
            return RunOutcome::Crashed("ffmpeg has no stdin".into());
        };
        let fed = async {
            stdin.write_all(&head).await?;
            for tag in buffered {
                stdin.write_all(&tag).await?;
            }
            loop {
                match tags.recv().await {
                    Ok(tag) => {
                        metrics::gauge!("marquee_ingest_last_timestamp_seconds", "stream" => self.stream.clone())
                            .set(f64::from(flv::timestamp_of(&tag)) / 1_000.0);
                        stdin.write_all(&tag).await?;
                    }
                    Err(RecvError::Lagged(missed)) => {
                        metrics::counter!("marquee_ingest_dropped_tags_total").increment(missed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            stdin.shutdown().await?;
            drop(stdin);
            Ok::<(), std::io::Error>(())
        };
        tokio::pin!(fed);
        enum First {
            Fed(std::io::Result<()>),
            Exited(std::io::Result<std::process::ExitStatus>),
        }
        let first = tokio::select! {
            fed = &mut fed => First::Fed(fed),
            status = child.wait() => First::Exited(status),
        };
        let outcome = match first {
            // The stream ended: ffmpeg finishes its segments, playlists and recording.
            First::Fed(Ok(())) => {
                if tokio::time::timeout(self.settings.stop_timeout, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(stream = %self.stream, "ffmpeg did not stop in time; killed");
                    let _ = child.kill().await;
                }
                RunOutcome::StreamEnded
            }
            First::Fed(Err(error)) => {
                let status = child.wait().await;
                RunOutcome::Crashed(format!("writing to ffmpeg: {error} ({status:?})"))
            }
            First::Exited(status) => RunOutcome::Crashed(format!("ffmpeg exited: {status:?}")),
        };
        // Every run's recording is kept, a crashed run's too (fragmented MP4 plays up to the
        // last complete fragment).
        let recording = recording_path(dir, run);
        if tokio::fs::metadata(&recording)
            .await
            // A run that died before its first fragment left only a header.
            .is_ok_and(|meta| meta.len() >= 4_096)
        {
            self.events
                .recording_finished(FinishedRecording {
                    stream: self.stream.clone(),
                    path: recording,
                    started_at,
                    ended_at: chrono::Utc::now(),
                })
                .await;
        }
        // `wait` above reaped the child (or kill did): no zombie is left behind.
        let _ = child.kill().await;
        watchers.abort();
        metrics::gauge!("marquee_transcoders_running").decrement(1.0);
        outcome
    }
}

enum RunOutcome {
    StreamEnded,
    Crashed(String),
}

/// Logs ffmpeg's warnings and turns its progress reports into metrics.
fn watch_output(child: &mut Child, stream: &str) -> JoinHandle<()> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stream = stream.to_string();
    tokio::spawn(async move {
        let progress = async {
            let Some(stdout) = stdout else { return };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut last_drops = 0u64;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(value) = line.strip_prefix("out_time_us=") {
                    if let Ok(micros) = value.trim().parse::<i64>() {
                        metrics::gauge!("marquee_transcoder_output_seconds", "stream" => stream.clone())
                            .set(micros as f64 / 1e6);
                    }
                } else if let Some(value) = line.strip_prefix("drop_frames=") {
                    if let Ok(drops) = value.trim().parse::<u64>() {
                        metrics::counter!("marquee_transcoder_dropped_frames_total")
                            .increment(drops.saturating_sub(last_drops));
                        last_drops = drops;
                    }
                }
            }
        };
        let warnings = async {
            let Some(stderr) = stderr else { return };
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let started = Instant::now();
            let mut logged = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                // ffmpeg can be chatty on a bad stream: a few lines, then one a minute.
                if logged < 20 || started.elapsed().as_secs() / 60 > logged - 20 {
                    tracing::debug!(stream = %stream, "ffmpeg: {line}");
                    logged += 1;
                }
            }
        };
        tokio::join!(progress, warnings);
    })
}

/// The file the packager writes just before `segment` in the same rendition: the previous
/// segment (`chunk-r{run}-{rep}-{n-1}.m4s`), or the rendition's init segment before the first.
/// `None` for anything that is not one of its segment names.
pub fn preceding_file(segment: &str) -> Option<String> {
    let (run, representation, number) = segment_name(segment)?;
    Some(match number {
        0 => return None,
        1 => format!("init-r{run}-{representation}.m4s"),
        _ => format!("chunk-r{run}-{representation}-{:05}.m4s", number - 1),
    })
}

/// The segment the packager writes after `file` (a segment, or the init segment before the
/// first) in the same rendition. `None` for anything that is not one of its names.
pub fn following_file(file: &str) -> Option<String> {
    if let Some((run, representation, number)) = segment_name(file) {
        return Some(format!(
            "chunk-r{run}-{representation}-{:05}.m4s",
            number.checked_add(1)?
        ));
    }
    let rest = file.strip_prefix("init-r")?.strip_suffix(".m4s")?;
    let (run, representation) = rest.split_once('-')?;
    let (run, representation) = (canonical(run, 1)?, canonical(representation, 1)?);
    Some(format!("chunk-r{run}-{representation}-00001.m4s"))
}

/// `chunk-r{run}-{rep}-{number}.m4s` as (run, rep, number), in the spelling ffmpeg writes
/// only (no extra leading zeros), so one segment has one name: aliases would each get a
/// follower of their own at the live edge.
fn segment_name(segment: &str) -> Option<(u64, u64, u64)> {
    let rest = segment.strip_prefix("chunk-r")?.strip_suffix(".m4s")?;
    let mut parts = rest.splitn(3, '-');
    let (run, representation, number) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        canonical(run, 1)?,
        canonical(representation, 1)?,
        canonical(number, 5)?,
    ))
}

/// `part` as a number, if it is written as `{:0width$}` writes it.
fn canonical(part: &str, width: usize) -> Option<u64> {
    let value: u64 = part.parse().ok()?;
    (part.bytes().all(|b| b.is_ascii_digit()) && format!("{value:0width$}") == part)
        .then_some(value)
}

/// The directory a stream's files are in.
pub fn stream_dir(output_root: &Path, stream: &str) -> PathBuf {
    output_root.join(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_after_a_segment_or_init_segment_is_the_next_segment() {
        assert_eq!(
            following_file("chunk-r17-2-00009.m4s").as_deref(),
            Some("chunk-r17-2-00010.m4s")
        );
        assert_eq!(
            following_file("init-r17-2.m4s").as_deref(),
            Some("chunk-r17-2-00001.m4s")
        );
        for name in [
            "init-r017-2.m4s",
            "chunk-r17-2-0009.m4s",
            "media_0.m3u8",
            "init-r1.m4s",
        ] {
            assert_eq!(following_file(name), None, "{name}");
        }
    }

    #[test]
    fn the_file_before_a_segment_is_its_predecessor_or_its_init_segment() {
        assert_eq!(
            preceding_file("chunk-r1764707712346-2-00010.m4s").as_deref(),
            Some("chunk-r1764707712346-2-00009.m4s")
        );
        assert_eq!(
            preceding_file("chunk-r5-0-00001.m4s").as_deref(),
            Some("init-r5-0.m4s")
        );
        assert_eq!(
            preceding_file("chunk-r5-0-123456.m4s").as_deref(),
            Some("chunk-r5-0-123455.m4s")
        );
        for other in [
            "chunk-r5-0-00000.m4s",
            "init-r5-0.m4s",
            "manifest.mpd",
            "chunk-r5-0-0001x.m4s",
            "chunk-r-0-00001.m4s",
            "chunk-r5-0-00001.m4s.tmp",
            "chunk-r5-0-000010.m4s",
            "chunk-r5-0-0001.m4s",
            "chunk-r05-0-00001.m4s",
            "chunk-r5-00-00001.m4s",
            "chunk-r5-+0-00001.m4s",
        ] {
            assert_eq!(preceding_file(other), None, "{other}");
        }
    }

    #[test]
    fn the_command_maps_every_rendition_with_aligned_keyframes() {
        let settings = TranscodeSettings::default();
        let args = ffmpeg_args(
            &settings,
            &ladder::ladder(1280, 720),
            true,
            Path::new("/out"),
            3,
        );
        let line = args.join(" ");
        assert!(
            line.contains(
                "split=3[s0][s1][s2];[s0]null[v0];[s1]scale=854:480[v1];[s2]scale=640:360[v2]"
            ),
            "{line}"
        );
        assert!(line.contains("-c:v:0 libx264 -b:v:0 2764k"));
        assert!(line.contains("-c:v:2 libx264 -b:v:2 800k"));
        assert!(line.contains("expr:gte(t,n_forced*2)"));
        assert!(
            line.contains("-thread_type slice -f flv -i pipe:0"),
            "the decoder holds no frames back: {line}"
        );
        assert!(line.contains("-seg_duration 2"));
        assert!(
            line.contains("-streaming 1 -ldash 1 -frag_type duration -frag_duration 0.1"),
            "segments are written fragment by fragment for the live edge: {line}"
        );
        assert!(line.contains("-hls_playlist 1"));
        assert!(line.contains("id=0,streams=v id=1,streams=a"));
        assert!(line.contains("chunk-r3-$RepresentationID$-$Number%05d$.$ext$"));
        assert!(line.ends_with("/out/recording-r3.mp4"));
        let without_audio = ffmpeg_args(
            &settings,
            &ladder::ladder(640, 360),
            false,
            Path::new("/o"),
            1,
        );
        assert!(!without_audio.iter().any(|arg| arg == "0:a:0"));
        assert!(without_audio
            .iter()
            .any(|arg| arg == "[s0]null[v0]" || arg.ends_with("[s0]null[v0]")));
    }
}
