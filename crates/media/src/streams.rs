//! Live streams: one per event, fed by at most one publisher at a time, read as FLV by whoever
//! subscribes (the transcoder).
//!
//! A publisher that drops is given `grace` to come back: within it the stream stays live and
//! the returning publisher's timestamps are moved on past the last one sent, so readers see one
//! continuous stream. After it, the stream ends. A second publisher while one is live is
//! refused. Sequence headers (H.264 and AAC configuration) are kept so a reader that joins late
//! starts decodable.

use crate::flv::{self, TagKind};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Tags a slow reader may fall behind before it misses some (and is told it lagged).
const READER_BUFFER: usize = 2_048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Idle,
    Live,
    Ended,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Idle => "idle",
            StreamStatus::Live => "live",
            StreamStatus::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefusal {
    #[error("another publisher is live")]
    AlreadyLive,
    #[error("the stream has ended")]
    Ended,
    #[error("every transcoder of this node is busy")]
    AtCapacity,
}

struct Stream {
    status: StreamStatus,
    /// The attached publisher's number; `None` while it is away (within the grace).
    publisher: Option<u64>,
    tags: broadcast::Sender<Bytes>,
    video_header: Option<Bytes>,
    audio_header: Option<Bytes>,
    /// Added to the current publisher's timestamps.
    offset: u32,
    /// The last timestamp sent, after the offset.
    last: u32,
    bytes: u64,
    /// Why the stream cannot be played as sent, when it cannot.
    problem: Option<String>,
}

/// What a status change says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub stream: String,
    pub status: StreamStatus,
    pub problem: Option<String>,
}

/// Every live stream of this node.
pub struct LiveStreams {
    streams: Mutex<HashMap<String, Stream>>,
    grace: Duration,
    /// Streams that may be live at once: each costs a transcoder.
    max_live: usize,
    next_publisher: std::sync::atomic::AtomicU64,
    changes: broadcast::Sender<StatusChange>,
}

impl LiveStreams {
    pub fn new(grace: Duration) -> Arc<LiveStreams> {
        Self::with_limit(grace, usize::MAX)
    }

    /// Like [`LiveStreams::new`], refusing a publisher past `max_live` live streams.
    pub fn with_limit(grace: Duration, max_live: usize) -> Arc<LiveStreams> {
        Arc::new(LiveStreams {
            streams: Mutex::new(HashMap::new()),
            grace,
            max_live,
            next_publisher: std::sync::atomic::AtomicU64::new(1),
            changes: broadcast::channel(256).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn status(&self, stream: &str) -> StreamStatus {
        self.lock()
            .get(stream)
            .map_or(StreamStatus::Idle, |stream| stream.status)
    }

    /// Why the stream cannot be played as sent, if it cannot.
    pub fn problem(&self, stream: &str) -> Option<String> {
        self.lock()
            .get(stream)
            .and_then(|stream| stream.problem.clone())
    }

    /// Ends a live stream now, saying why (its publisher is dropped at its next send).
    pub fn end(&self, stream: &str, problem: Option<String>) {
        let mut streams = self.lock();
        let Some(entry) = streams.get_mut(stream) else {
            return;
        };
        if entry.status != StreamStatus::Live {
            return;
        }
        entry.status = StreamStatus::Ended;
        entry.publisher = None;
        entry.problem = problem.clone();
        // Readers see the end of the tags once they have read what was sent.
        entry.tags = broadcast::channel(1).0;
        drop(streams);
        metrics::gauge!("marquee_streams_live").decrement(1.0);
        let _ = self.changes.send(StatusChange {
            stream: stream.to_string(),
            status: StreamStatus::Ended,
            problem,
        });
    }

    /// Ends every live stream (the node is stopping), so every transcoder finishes its files.
    pub fn end_all(&self, problem: Option<String>) {
        let live: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.status == StreamStatus::Live)
            .map(|(name, _)| name.clone())
            .collect();
        for stream in live {
            self.end(&stream, problem.clone());
        }
    }

    /// Cuts off the stream's publisher (its key was rotated): it is dropped at its next send,
    /// and the stream waits out the grace for a publisher with the new key, which continues
    /// the same show.
    pub fn disconnect_publisher(self: &Arc<Self>, stream: &str) {
        let publisher = self.lock().get(stream).and_then(|entry| entry.publisher);
        if let Some(publisher) = publisher {
            self.detach(stream, publisher, false);
        }
    }

    /// True while `publisher` is the stream's publisher.
    fn is_current(&self, stream: &str, publisher: u64) -> bool {
        self.lock()
            .get(stream)
            .is_some_and(|entry| entry.publisher == Some(publisher))
    }

    /// True while a publisher is attached (false while a live stream waits out its grace).
    pub fn has_publisher(&self, stream: &str) -> bool {
        self.lock()
            .get(stream)
            .is_some_and(|stream| stream.publisher.is_some())
    }

    /// Status changes of every stream, as they happen.
    pub fn changes(&self) -> broadcast::Receiver<StatusChange> {
        self.changes.subscribe()
    }

    /// Bytes of media received on `stream` so far.
    pub fn bytes_received(&self, stream: &str) -> u64 {
        self.lock().get(stream).map_or(0, |stream| stream.bytes)
    }

    /// Forgets an ended stream so its event may go live again (a new stream key was issued).
    pub fn reset(&self, stream: &str) {
        let mut streams = self.lock();
        if streams
            .get(stream)
            .is_some_and(|entry| entry.status == StreamStatus::Ended)
        {
            streams.remove(stream);
        }
    }

    /// Subscribes to a stream's tags: the FLV header and the kept sequence headers first.
    pub fn subscribe(&self, stream: &str) -> Option<(Bytes, broadcast::Receiver<Bytes>)> {
        let streams = self.lock();
        let entry = streams.get(stream)?;
        let mut head = BytesMut::from(&flv::HEADER[..]);
        for header in [&entry.video_header, &entry.audio_header]
            .into_iter()
            .flatten()
        {
            head.extend_from_slice(header);
        }
        Some((head.freeze(), entry.tags.subscribe()))
    }

    /// Makes the caller the stream's publisher.
    pub fn attach(self: &Arc<Self>, stream: &str) -> Result<Publisher, StreamRefusal> {
        let id = self
            .next_publisher
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut streams = self.lock();
        let entry = streams.entry(stream.to_string()).or_insert_with(|| Stream {
            status: StreamStatus::Idle,
            publisher: None,
            tags: broadcast::channel(READER_BUFFER).0,
            video_header: None,
            audio_header: None,
            offset: 0,
            last: 0,
            bytes: 0,
            problem: None,
        });
        match (entry.status, entry.publisher) {
            (StreamStatus::Ended, _) => return Err(StreamRefusal::Ended),
            (StreamStatus::Live, Some(_)) => return Err(StreamRefusal::AlreadyLive),
            // Back within the grace: carry on after the last timestamp sent.
            (StreamStatus::Live, None) => entry.offset = entry.last.saturating_add(1),
            (StreamStatus::Idle, _) => {}
        }
        if entry.status == StreamStatus::Idle {
            let live = streams
                .values()
                .filter(|other| other.status == StreamStatus::Live)
                .count();
            if live >= self.max_live {
                streams.remove(stream);
                return Err(StreamRefusal::AtCapacity);
            }
        }
        let Some(entry) = streams.get_mut(stream) else {
            return Err(StreamRefusal::Ended);
        };
        entry.publisher = Some(id);
        let became_live = entry.status != StreamStatus::Live;
        entry.status = StreamStatus::Live;
        drop(streams);
        if became_live {
            let _ = self.changes.send(StatusChange {
                stream: stream.to_string(),
                status: StreamStatus::Live,
                problem: None,
            });
            metrics::gauge!("marquee_streams_live").increment(1.0);
        }
        Ok(Publisher {
            streams: Arc::clone(self),
            stream: stream.to_string(),
            id,
            finished: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn send(&self, stream: &str, publisher: u64, kind: TagKind, timestamp: u32, body: Bytes) {
        let mut streams = self.lock();
        let Some(entry) = streams.get_mut(stream) else {
            return;
        };
        if entry.publisher != Some(publisher) {
            return;
        }
        entry.bytes += body.len() as u64;
        metrics::counter!("marquee_ingest_bytes_total").increment(body.len() as u64);
        let at = entry.offset.saturating_add(timestamp);
        entry.last = entry.last.max(at);
        let tag = flv::tag(kind, at, &body);
        match kind {
            TagKind::Video if flv::is_video_sequence_header(&body) => {
                entry.video_header = Some(tag.clone())
            }
            TagKind::Audio if flv::is_audio_sequence_header(&body) => {
                entry.audio_header = Some(tag.clone())
            }
            _ => {}
        }
        // Nobody reading yet is not an error: the transcoder may be starting.
        let _ = entry.tags.send(tag);
    }

    /// The publisher left: the stream waits `grace` for it (or another with the key), then
    /// ends. A publisher that said it was finished ends it at once.
    fn detach(self: &Arc<Self>, stream: &str, publisher: u64, finished: bool) {
        {
            let mut streams = self.lock();
            let Some(entry) = streams.get_mut(stream) else {
                return;
            };
            if entry.publisher != Some(publisher) {
                return;
            }
            entry.publisher = None;
        }
        let streams = Arc::clone(self);
        let stream = stream.to_string();
        let wait = if finished { Duration::ZERO } else { self.grace };
        let end = move || {
            let mut all = streams.lock();
            let Some(entry) = all.get_mut(&stream) else {
                return;
            };
            if entry.publisher.is_some() || entry.status != StreamStatus::Live {
                return;
            }
            entry.status = StreamStatus::Ended;
            entry.tags = broadcast::channel(1).0;
            drop(all);
            metrics::gauge!("marquee_streams_live").decrement(1.0);
            let _ = streams.changes.send(StatusChange {
                stream,
                status: StreamStatus::Ended,
                problem: None,
            });
        };
        if wait.is_zero() {
            end();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                end();
            });
        }
    }
}

/// The one publisher of a stream; dropping it is a disconnect (the grace starts).
pub struct Publisher {
    streams: Arc<LiveStreams>,
    stream: String,
    id: u64,
    finished: std::sync::atomic::AtomicBool,
}

impl Publisher {
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// False once the stream was ended under this publisher (a problem with what it sends).
    pub fn is_current(&self) -> bool {
        self.streams.is_current(&self.stream, self.id)
    }

    pub fn video(&self, timestamp: u32, data: Bytes) {
        self.streams
            .send(&self.stream, self.id, TagKind::Video, timestamp, data);
    }

    pub fn audio(&self, timestamp: u32, data: Bytes) {
        self.streams
            .send(&self.stream, self.id, TagKind::Audio, timestamp, data);
    }

    /// The encoder said it stopped: the stream ends now.
    pub fn finish(self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.streams.detach(&self.stream, self.id, true);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::Relaxed) {
            self.streams.detach(&self.stream, self.id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(first: u8, second: u8) -> Bytes {
        Bytes::from(vec![first, second, 0, 0, 0])
    }

    #[tokio::test(start_paused = true)]
    async fn one_publisher_at_a_time_and_a_return_within_the_grace_continues_the_stream() {
        let streams = LiveStreams::new(Duration::from_secs(5));
        let mut changes = streams.changes();
        assert_eq!(streams.status("e1"), StreamStatus::Idle);
        let first = streams.attach("e1").expect("first publisher");
        assert_eq!(streams.status("e1"), StreamStatus::Live);
        assert_eq!(streams.attach("e1").err(), Some(StreamRefusal::AlreadyLive));
        let (head, mut tags) = streams.subscribe("e1").expect("stream");
        assert_eq!(&head[..], &flv::HEADER[..]);
        first.video(0, body(0x17, 0));
        first.video(1_000, body(0x17, 1));
        drop(first);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(streams.status("e1"), StreamStatus::Live, "within the grace");
        let again = streams.attach("e1").expect("back");
        again.video(0, body(0x27, 1));
        let timestamps: Vec<u32> = (0..3)
            .map(|_| {
                let tag = tags.try_recv().expect("tag");
                u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]])
            })
            .collect();
        assert_eq!(timestamps, [0, 1_000, 1_001], "one continuous stream");
        // A late reader starts with the sequence header.
        let (head, _) = streams.subscribe("e1").expect("stream");
        assert_eq!(head.len(), flv::HEADER.len() + 11 + 5 + 4);
        again.finish();
        assert_eq!(streams.status("e1"), StreamStatus::Ended);
        assert_eq!(streams.attach("e1").err(), Some(StreamRefusal::Ended));
        let seen: Vec<StreamStatus> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|change| change.status)
            .collect();
        assert_eq!(seen, [StreamStatus::Live, StreamStatus::Ended]);
        streams.reset("e1");
        assert_eq!(streams.status("e1"), StreamStatus::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnected_publisher_is_cut_off_and_the_next_one_continues_the_show() {
        let streams = LiveStreams::new(Duration::from_secs(5));
        let first = streams.attach("e3").expect("publisher");
        first.video(0, body(0x17, 0));
        streams.disconnect_publisher("e3");
        assert!(!first.is_current(), "the old key's publisher is cut off");
        assert_eq!(streams.status("e3"), StreamStatus::Live, "within the grace");
        let (_, mut tags) = streams.subscribe("e3").expect("stream");
        first.video(40, body(0x27, 1));
        assert!(
            tags.try_recv().is_err(),
            "nothing more from the cut-off publisher"
        );
        let second = streams.attach("e3").expect("the new key's publisher");
        second.video(0, body(0x17, 1));
        let tag = tags.try_recv().expect("the new publisher's tag");
        assert_eq!(
            flv::timestamp_of(&tag),
            1,
            "the show continues after the last timestamp"
        );
        drop(first);
        assert!(
            second.is_current(),
            "dropping the old publisher changes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_gone_past_the_grace_ends_the_stream() {
        let streams = LiveStreams::new(Duration::from_secs(5));
        drop(streams.attach("e2").expect("publisher"));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(streams.status("e2"), StreamStatus::Ended);
    }
}
