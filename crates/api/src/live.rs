//! Live streaming as the platform sees it: stream keys checked at the ingest, the stream's
//! status kept in the catalog (so every node answers `GET …/stream` and pushes
//! `event:{id}:stream`), recordings stored and listed, and viewers counted.

use crate::AppState;
use async_trait::async_trait;
use marquee_domain::EventId;
use marquee_media::{
    FinishedRecording, LiveStreams, PlaybackTokens, RecordingStore, StreamStatus, TranscodeEvents,
};
use marquee_store::CatalogStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where encoders and players are sent, and for how long a playback URL works.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// `rtmp://host:port/live`, as encoders should be told (the key goes in its own box).
    pub rtmp_url: String,
    /// `srt://host:port`, when SRT ingest is on.
    pub srt_url: Option<String>,
    /// The origin's base URL for playback (`http://host:port`); `None` gives relative URLs.
    pub public_url: Option<String>,
    pub token_ttl: Duration,
    /// Where the transcoders write each stream's files.
    pub media_root: PathBuf,
}

/// The live-streaming parts of a node.
pub struct Live {
    pub streams: Arc<LiveStreams>,
    pub tokens: PlaybackTokens,
    pub settings: LiveSettings,
    pub recordings: RecordingStore,
    /// Per event: viewers (by token) and when they last fetched a playlist.
    viewers: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Segments recently served, by path: every viewer of a show asks for the same few files
    /// within seconds, and segments never change under their name (see
    /// `marquee_media::transcode`). Bounded by bytes; concurrent misses of one file make one
    /// read. Each is file-backed (`crate::zero_copy`): served with `sendfile` from its file.
    pub segments: moka::future::Cache<PathBuf, bytes::Bytes>,
    /// Segments still being written, for viewers who ask for them early.
    pub edge: Arc<marquee_media::LiveEdge>,
}

/// Bytes of segments the origin keeps in memory: about a minute of a 3-rendition 720p show
/// for a few shows at once.
const SEGMENT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Each cached segment holds its file open (to send it with `sendfile`), so a segment weighs
/// at least this much: at most 1,024 descriptors, whatever the segments' sizes (the node
/// raises its soft limit to the hard one at start-up; 1,024 fits under the most common soft
/// limit even where it cannot).
const SEGMENT_MIN_WEIGHT: usize = (SEGMENT_CACHE_BYTES / 1024) as usize;
/// A segment nobody asked for in this long has left every live window.
const SEGMENT_IDLE: Duration = Duration::from_secs(60);

/// A viewer counts as watching this long after their last playlist fetch.
const VIEWER_WINDOW: Duration = Duration::from_secs(30);

impl Live {
    pub fn new(
        streams: Arc<LiveStreams>,
        tokens: PlaybackTokens,
        settings: LiveSettings,
        recordings: RecordingStore,
    ) -> Live {
        Live {
            streams,
            tokens,
            settings,
            recordings,
            viewers: Mutex::new(HashMap::new()),
            segments: moka::future::Cache::builder()
                .max_capacity(SEGMENT_CACHE_BYTES)
                .weigher(|path: &PathBuf, bytes: &bytes::Bytes| {
                    let weight = (bytes.len() + path.as_os_str().len()).max(SEGMENT_MIN_WEIGHT);
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .time_to_idle(SEGMENT_IDLE)
                .build(),
            edge: marquee_media::LiveEdge::new(marquee_media::EdgeSettings::for_segments(
                Duration::from_secs(u64::from(
                    marquee_media::TranscodeSettings::default().segment_seconds,
                )),
            )),
        }
    }

    /// Notes a playlist fetch by `viewer` and updates the event's viewer gauge.
    pub fn saw_viewer(&self, event: &str, viewer: &str) {
        let mut all = self
            .viewers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let viewers = all.entry(event.to_string()).or_default();
        viewers.insert(viewer.to_string(), now);
        viewers.retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
        metrics::gauge!("marquee_stream_viewers", "event" => event.to_string())
            .set(viewers.len() as f64);
    }

    /// Viewers of `event` seen within the window.
    pub fn viewers(&self, event: &str) -> usize {
        let all = self
            .viewers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        all.get(event).map_or(0, |viewers| {
            viewers
                .values()
                .filter(|seen| now.duration_since(**seen) < VIEWER_WINDOW)
                .count()
        })
    }

    /// The playback URL of `file` (`master.m3u8`, `manifest.mpd`) for `viewer`.
    pub fn playback_url(&self, event: &str, viewer: &str, file: &str) -> String {
        let expires = chrono::Utc::now().timestamp()
            + i64::try_from(self.settings.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let token = self.tokens.sign(event, viewer, expires);
        let base = self.settings.public_url.as_deref().unwrap_or("");
        format!("{}/live/{event}/{token}/{file}", base.trim_end_matches('/'))
    }
}

/// Who may watch an event's stream (and follow `event:{id}:stream`): its ticket holders, its
/// organizer and admins. A draft is hidden (404) from everyone else, a published event is 403.
/// Returns whether the viewer manages the event.
pub(crate) async fn may_watch(
    state: &AppState,
    viewer: &crate::extract::CurrentUser,
    event: &marquee_domain::Event,
) -> Result<bool, crate::ApiError> {
    if viewer.may_manage(&event.owner_id) {
        return Ok(true);
    }
    if !crate::access::is_public(event) {
        return Err(crate::ApiError::not_found("event"));
    }
    if !state.store.holds_ticket(&viewer.id, &event.id).await? {
        return Err(crate::ApiError::forbidden(
            "the stream is for the event's ticket holders",
        ));
    }
    Ok(false)
}

/// The ingest's question, answered from the catalog: a key is good while it is its event's
/// current key and that event's stream has not ended.
pub struct StreamKeyGate {
    pub store: Arc<dyn CatalogStore>,
}

#[async_trait]
impl marquee_media::PublishGate for StreamKeyGate {
    async fn stream_for(&self, app: &str, stream_key: &str) -> Option<String> {
        if app != "live" || stream_key.is_empty() || stream_key.len() > 128 {
            return None;
        }
        let hash = marquee_media::stream_key_hash(stream_key);
        let event = match self.store.stream_by_key_hash(&hash).await {
            Ok(event) => event?,
            Err(error) => {
                tracing::warn!(%error, "stream key lookup failed");
                return None;
            }
        };
        match self.store.stream(&event).await {
            Ok(Some(stream)) if stream.status != "ended" => Some(event.as_str().to_string()),
            _ => None,
        }
    }
}

/// Stores each finished recording and lists it on the event.
pub struct RecordingKeeper {
    pub store: Arc<dyn CatalogStore>,
    pub recordings: RecordingStore,
}

#[async_trait]
impl TranscodeEvents for RecordingKeeper {
    async fn recording_finished(&self, recording: FinishedRecording) {
        let id = format!("rec_{}", ulid::Ulid::new().to_string().to_lowercase());
        let key = format!("{}/{id}.mp4", recording.stream);
        let stored = match self.recordings.upload(&key, &recording.path).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%error, stream = %recording.stream, "recording upload failed");
                metrics::counter!("marquee_recordings_failed_total").increment(1);
                return;
            }
        };
        let row = marquee_store::Recording {
            id,
            event_id: EventId::from_string(recording.stream.clone()),
            object_key: stored.key,
            bytes: i64::try_from(stored.bytes).unwrap_or(i64::MAX),
            duration_ms: (recording.ended_at - recording.started_at).num_milliseconds(),
            started_at: recording.started_at,
            ended_at: recording.ended_at,
        };
        if let Err(error) = self.store.add_recording(&row).await {
            tracing::error!(%error, stream = %recording.stream, "recording not listed");
            return;
        }
        let _ = tokio::fs::remove_file(&recording.path).await;
        metrics::counter!("marquee_recordings_total").increment(1);
    }
}

/// Writes every status change of this node's streams to the catalog (from where it is pushed
/// on `event:{id}:stream` by every node's change feed).
pub fn spawn_status_recorder(
    state: AppState,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = state.live.streams.changes();
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = crate::push::stopping(&mut stopped) => return,
            };
            let change = match change {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "stream status changes missed");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let event = EventId::from_string(change.stream.clone());
            let status = match change.status {
                StreamStatus::Idle => "idle",
                StreamStatus::Live => "live",
                StreamStatus::Ended => "ended",
            };
            for attempt in 0..5u64 {
                match state
                    .store
                    .set_stream_status(&event, status, change.problem.as_deref())
                    .await
                {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, attempt, "stream status not recorded yet");
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
            }
        }
    })
}
