//! The live edge: a segment delivered while the packager is still writing it.
//!
//! A player that waits for a segment to be listed sees its first frame a whole segment (2 s)
//! after the frame was encoded. The transcoder writes each segment as a run of small CMAF
//! fragments (`-streaming 1`, a fragment every [`FRAGMENT_SECONDS`]), flushed to
//! `<name>.tmp` as it goes and renamed to `<name>` once whole. A request for a segment that
//! is not whole yet is answered from the `.tmp` file as it grows, with chunked transfer, and
//! ends when the rename says the segment is complete: the frames reach the player a fragment
//! after they were encoded. This is what low-latency DASH players (dash.js, with the MPD's
//! `availabilityTimeComplete="false"`) and LHLS players do: ask for the next segment early
//! and read it as it arrives. The bytes are exactly the finished file's, so caches may keep
//! the response as they keep the whole segment.
//!
//! One follower task per growing file reads it and shares what it read with every viewer
//! asking for it, so a thousand viewers at the edge cost one reader, not a thousand. The file
//! is polled ([`EdgeSettings::poll`]); a handful of files are growing at any time per show, and
//! a poll every few milliseconds of each costs far less than an inotify watch per request.
//!
//! Only a segment that is being written or comes next is waited for (its `.tmp` exists, or
//! the segment before it is whole), and only for so long, so a request for a made-up or a
//! long-gone name is still a quick 404.

use crate::cmaf::{Fragment, FragmentReader};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

/// How much media each CMAF fragment of a segment holds: what a viewer at the live edge waits
/// for beyond the encoder. Three frames at 30 fps; each fragment costs a `moof` box (about
/// 100 bytes), a few percent of an AAC stream's bytes at this rate.
pub const FRAGMENT_SECONDS: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// How often a growing file is checked for new bytes.
    pub poll: Duration,
    /// How long a request may wait for the next segment's file to appear.
    pub start_wait: Duration,
    /// A file that grows no more for this long was abandoned (its ffmpeg died).
    pub stall: Duration,
    /// Growing files followed at once on this node.
    pub max_growing: usize,
}

impl EdgeSettings {
    /// For segments of `segment` length.
    pub fn for_segments(segment: Duration) -> EdgeSettings {
        EdgeSettings {
            poll: Duration::from_millis(5),
            start_wait: segment + Duration::from_millis(500),
            stall: segment * 2,
            max_growing: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("too many segments are being followed on this node")]
    Busy,
}

/// What a follower has read of a growing file so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    chunks: Vec<Bytes>,
    /// The whole fragments among them, in order: a low-latency HLS playlist's parts.
    fragments: Vec<Fragment>,
    /// The follower has read all the file held at some point: what it has is not just the
    /// start of what is already there.
    caught_up: bool,
    end: Option<End>,
}

impl Progress {
    /// Bytes `start..end` of what was read, which must all be in.
    fn range(&self, start: u64, end: u64) -> Bytes {
        let mut out = BytesMut::with_capacity(usize::try_from(end - start).unwrap_or(0));
        let mut at = 0u64;
        for chunk in &self.chunks {
            let chunk_end = at + chunk.len() as u64;
            if chunk_end > start && at < end {
                let from = start.saturating_sub(at) as usize;
                let to = (end.min(chunk_end) - at) as usize;
                out.extend_from_slice(&chunk[from..to]);
            }
            at = chunk_end;
            if at >= end {
                break;
            }
        }
        out.freeze()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Renamed into place: every byte has been read.
    Complete,
    /// Never appeared, stopped growing, or could not be read.
    Abandoned,
}

/// Segments still being written, followed for the viewers who asked for them early.
pub struct LiveEdge {
    settings: EdgeSettings,
    growing: Mutex<HashMap<PathBuf, watch::Receiver<Progress>>>,
    /// The fragments of whole segments, for the parts of a low-latency playlist: a follower
    /// leaves its segment's here when it completes; others are read once when first needed.
    fragments: moka::sync::Cache<PathBuf, Arc<Vec<Fragment>>>,
    /// Init segments' timescales.
    timescales: moka::sync::Cache<PathBuf, u32>,
    /// Each rendition's LL-HLS part target, by init segment: it must not change during a run.
    part_targets: moka::sync::Cache<PathBuf, f64>,
}

impl LiveEdge {
    pub fn new(settings: EdgeSettings) -> Arc<LiveEdge> {
        Arc::new(LiveEdge {
            settings,
            growing: Mutex::new(HashMap::new()),
            // A few segments per rendition per show are listed with parts.
            fragments: moka::sync::Cache::new(4_096),
            timescales: moka::sync::Cache::new(1_024),
            part_targets: moka::sync::Cache::new(1_024),
        })
    }

    /// The fragments of the segment at `path` if it is known to be whole (a follower saw it
    /// complete, or it was read whole), without reading anything.
    pub fn known_whole(&self, path: &Path) -> Option<Arc<Vec<Fragment>>> {
        self.fragments.get(path)
    }

    /// The part target fixed for the rendition of `init`: `candidate` the first time, and
    /// after that only ever raised, to cover a longer part than any before.
    pub fn part_target(&self, init: &Path, candidate: f64) -> f64 {
        let target = self
            .part_targets
            .get(init)
            .map_or(candidate, |fixed| fixed.max(candidate));
        self.part_targets.insert(init.to_path_buf(), target);
        target
    }

    /// The fragments of the whole segment at `path` (`data`, when the caller has read it).
    pub async fn fragments_of(
        &self,
        path: &Path,
        data: Option<&Bytes>,
    ) -> std::io::Result<Arc<Vec<Fragment>>> {
        if let Some(fragments) = self.fragments.get(path) {
            return Ok(fragments);
        }
        let fragments = Arc::new(match data {
            Some(data) => crate::cmaf::fragments(data),
            None => crate::cmaf::fragments(&tokio::fs::read(path).await?),
        });
        self.fragments
            .insert(path.to_path_buf(), Arc::clone(&fragments));
        Ok(fragments)
    }

    /// The timescale of the init segment at `path`; `None` while it is not (wholly) there.
    pub async fn timescale(&self, path: &Path) -> Option<u32> {
        if let Some(timescale) = self.timescales.get(path) {
            return Some(timescale);
        }
        let init = tokio::fs::read(path).await.ok()?;
        let timescale = crate::cmaf::timescale(&init).filter(|&timescale| timescale > 0)?;
        self.timescales.insert(path.to_path_buf(), timescale);
        Some(timescale)
    }

    /// The segment at `path`, as it is written, if it is being written or comes next; `None`
    /// when it is not expected (the caller answers 404).
    pub async fn follow(
        self: &Arc<Self>,
        path: &Path,
    ) -> Result<Option<GrowingSegment>, EdgeError> {
        self.follow_within(path, true).await
    }

    /// Like [`LiveEdge::follow`], for the segment a media playlist names as next. Not counted
    /// against [`EdgeSettings::max_growing`]: there is one such segment per rendition of each
    /// show this node packages, however many viewers ask, and a playlist must not lose its
    /// parts because viewers' own requests filled the node.
    pub async fn follow_for_playlist(self: &Arc<Self>, path: &Path) -> Option<GrowingSegment> {
        self.follow_within(path, false).await.ok().flatten()
    }

    async fn follow_within(
        self: &Arc<Self>,
        path: &Path,
        capped: bool,
    ) -> Result<Option<GrowingSegment>, EdgeError> {
        if let Some(progress) = self.lock().get(path) {
            return Ok(Some(GrowingSegment::new(progress.clone())));
        }
        if !is_expected(path, &self.settings).await {
            return Ok(None);
        }
        let progress = {
            let mut growing = self.lock();
            if let Some(progress) = growing.get(path) {
                progress.clone()
            } else {
                if capped && growing.len() >= self.settings.max_growing {
                    return Err(EdgeError::Busy);
                }
                let (sender, progress) = watch::channel(Progress::default());
                growing.insert(path.to_path_buf(), progress.clone());
                let edge = Arc::clone(self);
                let path = path.to_path_buf();
                tokio::spawn(async move {
                    metrics::gauge!("marquee_media_growing_segments").increment(1.0);
                    let end = read_growing(&path, &edge.settings, &sender).await;
                    if end == End::Complete {
                        let fragments = sender.borrow().fragments.clone();
                        edge.fragments.insert(path.clone(), Arc::new(fragments));
                    }
                    sender.send_modify(|progress| progress.end = Some(end));
                    edge.lock().remove(&path);
                    metrics::gauge!("marquee_media_growing_segments").decrement(1.0);
                });
                progress
            }
        };
        Ok(Some(GrowingSegment::new(progress)))
    }

    /// Files followed now.
    pub fn growing(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, watch::Receiver<Progress>>> {
        self.growing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `data`, just read from the packager's file `name`, is all of that file. Media
/// segments are renamed into place once whole, so any read of one is. Init segments are
/// written in place (not through `.tmp`), so a read as one is written can come up empty or
/// short; such a read must not be served or kept.
pub fn is_whole_file(name: &str, data: &[u8]) -> bool {
    !name.starts_with("init-") || is_whole_init(data)
}

/// Whether `data` is a whole init segment: top-level boxes that end exactly at its end, a
/// `moov` among them.
fn is_whole_init(data: &[u8]) -> bool {
    let mut rest = data;
    let mut moov = false;
    while !rest.is_empty() {
        let Some(size) = rest.get(0..4).and_then(|size| size.try_into().ok()) else {
            return false;
        };
        let size = u32::from_be_bytes(size) as usize;
        // 0 ("to the end") and 1 (64-bit size) are not written in init segments.
        if size < 8 || size > rest.len() {
            return false;
        }
        moov |= &rest[4..8] == b"moov";
        rest = &rest[size..];
    }
    moov
}

/// The packager's in-progress name for `path`.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Whether the segment at `path` is being written now or is the next to be.
async fn is_expected(path: &Path, settings: &EdgeSettings) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let Some(before) = crate::transcode::preceding_file(name) else {
        return false;
    };
    if let Ok(tmp) = tokio::fs::metadata(temporary(path)).await {
        // One a dead ffmpeg left behind is not coming.
        return tmp
            .modified()
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|since| since < settings.stall);
    }
    tokio::fs::metadata(path.with_file_name(before))
        .await
        .is_ok_and(|before| before.len() > 0)
}

/// Reads the file at `path` (from `path.tmp` while it is written) into `progress` until it is
/// whole or abandoned.
async fn read_growing(
    path: &Path,
    settings: &EdgeSettings,
    progress: &watch::Sender<Progress>,
) -> End {
    let tmp = temporary(path);
    let started = Instant::now();
    let mut file = loop {
        if let Ok(file) = tokio::fs::File::open(&tmp).await {
            break file;
        }
        // Renamed between the check and the open: the segment is whole.
        if let Ok(file) = tokio::fs::File::open(path).await {
            break file;
        }
        if started.elapsed() > settings.start_wait {
            return End::Abandoned;
        }
        tokio::time::sleep(settings.poll).await;
    };
    let mut grew = Instant::now();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut reader = FragmentReader::default();
    let mut take = |read: &[u8]| {
        let chunk = Bytes::copy_from_slice(read);
        let fragments = reader.push(&chunk);
        progress.send_modify(|progress| {
            progress.chunks.push(chunk);
            progress.fragments.extend(fragments);
        });
    };
    loop {
        match file.read(&mut buffer).await {
            Ok(0) => {
                if !progress.borrow().caught_up {
                    progress.send_modify(|progress| progress.caught_up = true);
                }
            }
            Ok(read) => {
                take(&buffer[..read]);
                grew = Instant::now();
                continue;
            }
            Err(_) => return End::Abandoned,
        }
        // At the end of what is written. ffmpeg closes the file before it renames it, so once
        // the final name exists, what is left to read is the last of it.
        if tokio::fs::try_exists(path).await.unwrap_or(false) {
            loop {
                match file.read(&mut buffer).await {
                    Ok(0) => return End::Complete,
                    Ok(read) => take(&buffer[..read]),
                    Err(_) => return End::Abandoned,
                }
            }
        }
        if grew.elapsed() > settings.stall {
            return End::Abandoned;
        }
        tokio::time::sleep(settings.poll).await;
    }
}

/// One viewer's read of a growing segment.
pub struct GrowingSegment {
    progress: watch::Receiver<Progress>,
    sent: usize,
    done: bool,
}

/// The segment was abandoned before it was whole: the response must not look complete.
#[derive(Debug, thiserror::Error)]
#[error("the segment was abandoned before it was complete")]
pub struct Abandoned;

impl GrowingSegment {
    fn new(progress: watch::Receiver<Progress>) -> GrowingSegment {
        GrowingSegment {
            progress,
            sent: 0,
            done: false,
        }
    }

    /// Waits for the segment's first bytes: `false` if it ends with none (the file never
    /// came), so the caller can still answer 404.
    pub async fn started(&mut self) -> bool {
        let outcome = self
            .progress
            .wait_for(|progress| !progress.chunks.is_empty() || progress.end.is_some())
            .await;
        outcome.is_ok_and(|progress| !progress.chunks.is_empty())
    }

    /// The whole fragments so far, and whether the segment is complete (`Some(true)`) or was
    /// abandoned (`Some(false)`).
    pub fn fragments(&self) -> (Vec<Fragment>, Option<bool>) {
        let progress = self.progress.borrow();
        (
            progress.fragments.clone(),
            progress.end.map(|end| end == End::Complete),
        )
    }

    /// Waits until the follower has read what the file held when it started (or the segment
    /// ended), or until `deadline`.
    pub async fn caught_up(&mut self, deadline: Instant) {
        let _ = tokio::time::timeout_at(
            deadline,
            self.progress
                .wait_for(|progress| progress.caught_up || progress.end.is_some()),
        )
        .await;
    }

    /// Waits until the segment has more than `known` whole fragments or has ended, or until
    /// `deadline`. Bytes that complete no fragment wake nobody.
    pub async fn more_fragments_than(&mut self, known: usize, deadline: Instant) {
        let _ = tokio::time::timeout_at(
            deadline,
            self.progress
                .wait_for(|progress| progress.fragments.len() > known || progress.end.is_some()),
        )
        .await;
    }

    /// The segment's `index`th fragment, once whole; `None` if the segment completed with
    /// fewer (the caller answers 404).
    pub async fn fragment(&mut self, index: usize) -> Result<Option<Bytes>, Abandoned> {
        let progress = self
            .progress
            .wait_for(|progress| progress.fragments.len() > index || progress.end.is_some())
            .await
            .map_err(|_| Abandoned)?;
        let Some(fragment) = progress.fragments.get(index) else {
            return match progress.end {
                Some(End::Complete) => Ok(None),
                _ => Err(Abandoned),
            };
        };
        let start = index
            .checked_sub(1)
            .and_then(|before| progress.fragments.get(before))
            .map_or(0, |before| before.end);
        Ok(Some(progress.range(start, fragment.end)))
    }

    async fn next(&mut self) -> Option<Result<Bytes, Abandoned>> {
        if self.done {
            return None;
        }
        loop {
            let (chunk, end) = {
                let progress = self.progress.borrow_and_update();
                (progress.chunks.get(self.sent).cloned(), progress.end)
            };
            if let Some(chunk) = chunk {
                self.sent += 1;
                return Some(Ok(chunk));
            }
            match end {
                Some(End::Complete) => {
                    self.done = true;
                    return None;
                }
                Some(End::Abandoned) => {
                    self.done = true;
                    return Some(Err(Abandoned));
                }
                None => {
                    if self.progress.changed().await.is_err() {
                        self.done = true;
                        return Some(Err(Abandoned));
                    }
                }
            }
        }
    }

    /// The segment's bytes as they are written; an error last if it was abandoned.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Abandoned>> + Send {
        futures::stream::unfold(self, |mut segment| async move {
            let item = segment.next().await?;
            Some((item, segment))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    fn settings() -> EdgeSettings {
        EdgeSettings {
            poll: Duration::from_millis(2),
            start_wait: Duration::from_secs(5),
            stall: Duration::from_secs(5),
            max_growing: 4,
        }
    }

    /// Writes a segment the way the packager does: `.tmp` in pieces, then renamed.
    struct Packager {
        tmp: PathBuf,
        path: PathBuf,
        file: std::fs::File,
        written: Vec<u8>,
    }

    impl Packager {
        fn start(path: &Path) -> Packager {
            let tmp = temporary(path);
            Packager {
                file: std::fs::File::create(&tmp).expect("create tmp"),
                tmp,
                path: path.to_path_buf(),
                written: Vec::new(),
            }
        }

        fn write(&mut self, bytes: &[u8]) {
            self.file.write_all(bytes).expect("write");
            self.file.flush().expect("flush");
            self.written.extend_from_slice(bytes);
        }

        fn finish(self) -> Vec<u8> {
            drop(self.file);
            std::fs::rename(&self.tmp, &self.path).expect("rename");
            self.written
        }
    }

    #[tokio::test]
    async fn a_viewer_gets_the_bytes_before_the_segment_is_whole_and_all_of_them_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("chunk-r7-0-00004.m4s"), b"before").expect("before");
        let path = dir.path().join("chunk-r7-0-00005.m4s");
        let edge = LiveEdge::new(settings());
        // Asked for before the packager starts it: its predecessor is whole, so it is next.
        let mut segment = edge
            .follow(&path)
            .await
            .expect("not busy")
            .expect("the next segment is expected");
        let mut packager = Packager::start(&path);
        packager.write(b"first fragment ");
        assert!(segment.started().await);
        // A second viewer shares the same follower.
        let second = edge
            .follow(&path)
            .await
            .expect("not busy")
            .expect("followed");
        assert_eq!(edge.growing(), 1);
        let mut stream = Box::pin(segment.into_stream());
        let first = stream
            .next()
            .await
            .expect("a chunk")
            .expect("not abandoned");
        assert_eq!(
            &first[..],
            b"first fragment ",
            "delivered before the rename"
        );
        assert!(!path.exists(), "the segment is not whole yet");
        packager.write(b"second fragment ");
        packager.write(&vec![7u8; 300 * 1024]);
        let written = packager.finish();
        let mut received = first.to_vec();
        while let Some(chunk) = stream.next().await {
            received.extend_from_slice(&chunk.expect("complete"));
        }
        assert!(
            received == written,
            "the viewer got the finished file's bytes"
        );
        let mut other = Vec::new();
        let mut stream = Box::pin(second.into_stream());
        while let Some(chunk) = stream.next().await {
            other.extend_from_slice(&chunk.expect("complete"));
        }
        assert!(other == written);
    }

    #[tokio::test]
    async fn names_not_being_written_or_next_are_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edge = LiveEdge::new(settings());
        for name in [
            "chunk-r7-0-00009.m4s", // its predecessor is not there
            "manifest.mpd",
            "chunk-r7-0-0000x.m4s",
        ] {
            assert!(
                edge.follow(&dir.path().join(name))
                    .await
                    .expect("not busy")
                    .is_none(),
                "{name}"
            );
        }
        // The first segment of a run comes after its init segment.
        std::fs::write(dir.path().join("init-r7-0.m4s"), b"init").expect("init");
        assert!(edge
            .follow(&dir.path().join("chunk-r7-0-00001.m4s"))
            .await
            .expect("not busy")
            .is_some());
    }

    #[test]
    fn an_init_segment_is_whole_once_its_boxes_tile_it_and_it_has_a_moov() {
        assert!(
            is_whole_file("chunk-r7-0-00001.m4s", b""),
            "renamed when whole"
        );
        assert!(!is_whole_file("init-r7-0.m4s", b""));
        let mp4_box = |kind: &[u8; 4], body: &[u8]| {
            let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(kind);
            out.extend_from_slice(body);
            out
        };
        let init = [mp4_box(b"ftyp", b"iso6cmfc"), mp4_box(b"moov", &[0; 40])].concat();
        assert!(is_whole_init(&init));
        assert!(!is_whole_init(&[]), "written but not filled yet");
        assert!(!is_whole_init(&init[..init.len() - 1]), "short");
        assert!(
            !is_whole_init(&mp4_box(b"ftyp", b"iso6cmfc")),
            "no moov yet"
        );
        assert!(!is_whole_init(&[0, 0, 0, 0, b'm', b'o', b'o', b'v']));
    }

    #[tokio::test]
    async fn a_tmp_file_that_stopped_growing_long_ago_is_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chunk-r7-0-00003.m4s");
        let packager = Packager::start(&path);
        // Last written a minute ago, as a dead run leaves it.
        packager
            .file
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .expect("set mtime");
        drop(packager);
        let edge = LiveEdge::new(settings());
        assert!(edge.follow(&path).await.expect("not busy").is_none());
    }

    #[tokio::test]
    async fn a_segment_that_stops_growing_ends_in_an_error_not_a_short_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chunk-r7-0-00002.m4s");
        let mut packager = Packager::start(&path);
        packager.write(b"a fragment, then the packager dies");
        let edge = LiveEdge::new(EdgeSettings {
            stall: Duration::from_millis(50),
            ..settings()
        });
        let segment = edge
            .follow(&path)
            .await
            .expect("not busy")
            .expect("growing");
        let chunks: Vec<_> = segment.into_stream().collect().await;
        assert!(matches!(chunks.first(), Some(Ok(_))));
        assert!(matches!(chunks.last(), Some(Err(Abandoned))));
        assert_eq!(edge.growing(), 0, "the follower is gone");
    }

    #[tokio::test]
    async fn a_next_segment_that_never_comes_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("chunk-r7-0-00004.m4s"), b"last").expect("last");
        let edge = LiveEdge::new(EdgeSettings {
            start_wait: Duration::from_millis(30),
            ..settings()
        });
        let mut segment = edge
            .follow(&dir.path().join("chunk-r7-0-00005.m4s"))
            .await
            .expect("not busy")
            .expect("expected next");
        assert!(!segment.started().await, "the show ended before it");
    }

    #[tokio::test]
    async fn followers_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edge = LiveEdge::new(EdgeSettings {
            max_growing: 2,
            ..settings()
        });
        let mut packagers = Vec::new();
        for number in 1..=3 {
            let path = dir.path().join(format!("chunk-r7-{number}-00001.m4s"));
            packagers.push(Packager::start(&path));
            let followed = edge.follow(&path).await;
            if number <= 2 {
                assert!(matches!(followed, Ok(Some(_))));
            } else {
                assert!(matches!(followed, Err(EdgeError::Busy)));
            }
        }
    }
}
