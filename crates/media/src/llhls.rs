//! Low-latency HLS (RFC 8216bis, "Apple LL-HLS") over the packager's segments.
//!
//! ffmpeg's HLS media playlists list a segment once it is whole, so a standard HLS player
//! sees a frame a segment (2 s) after it was encoded, and later still after it has polled.
//! The transcoder already writes each segment as a run of small CMAF fragments
//! ([`crate::FRAGMENT_SECONDS`]) that the live edge follows as they are written
//! ([`crate::LiveEdge`]). This module lists those fragments as the playlist's *parts*:
//!
//! - each fragment of the segment being written, and of the last three whole segments, is an
//!   `EXT-X-PART` with its own URI (`chunk-r1-0-00005.part3.m4s`), served as that fragment's
//!   bytes of the segment, so a cache keeps each part as a small immutable object;
//! - `EXT-X-PRELOAD-HINT` names the part being written; a request for it waits for it;
//! - `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`: a playlist request with `_HLS_msn` (and
//!   `_HLS_part`) is answered once the playlist holds that segment (part), so a player learns
//!   of each part the moment it is whole instead of polling.
//!
//! The rewrite leaves ffmpeg's lines as they are and only adds tags, so a player that knows no
//! LL-HLS sees the playlist it always saw. hls.js plays LL-HLS by default (`lowLatencyMode`).
//! Parts are named rather than given as byte ranges of the segment: a part of a segment still
//! being written has no final length to range over in a cache, and `Range` requests are a
//! CORS preflight for browsers on another origin.

use crate::cmaf::Fragment;
use crate::edge::LiveEdge;
use crate::transcode::following_file;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Whole segments at the end of the playlist that are listed with their parts: the spec's
/// "three target durations", which a player joining at the live edge starts within.
const SEGMENTS_WITH_PARTS: usize = 3;

/// How long a playlist request waits for a follower it started to read what is written.
const CATCH_UP: Duration = Duration::from_millis(100);

/// How often a blocking request rereads ffmpeg's playlist when no follower will wake it (the
/// segment is whole and about to be listed, or the run is restarting).
const PLAYLIST_RECHECK: Duration = Duration::from_millis(50);

/// The most parts a segment may have: a 2 s segment has 20; names past this are not served.
pub const MAX_PARTS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum PlaylistError {
    /// A malformed or impossible blocking request (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The segment or part asked for did not come in time (503, as the spec says).
    #[error("the requested segment did not become available in time")]
    NotYet,
    /// No such playlist (404), or it could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A blocking playlist reload: answer once segment `msn` (its part `part`) is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingRequest {
    pub msn: u64,
    pub part: Option<usize>,
}

/// The blocking request in a playlist URL's query (`_HLS_msn`, `_HLS_part`); other
/// parameters (cache busters) are ignored.
///
/// Strict, because a cache in front keys blocking reloads by these two values as it reads
/// them (nginx: the first occurrence, its name's case ignored, nothing decoded): any spelling
/// the two could read differently — a case variant, an encoded name, a repeat, a number with
/// leading zeros or a sign — is refused (400, which caches do not keep), so it can neither
/// put a non-blocking answer under a blocking request's key nor split one key into many.
pub fn blocking_request(query: Option<&str>) -> Result<Option<BlockingRequest>, PlaylistError> {
    let (mut msn, mut part) = (None, None);
    for pair in query.unwrap_or_default().split('&') {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_encoding::percent_decode_str(raw_name).decode_utf8_lossy();
        if !name.to_ascii_lowercase().starts_with("_hls_") {
            continue;
        }
        let slot = match raw_name {
            "_HLS_msn" => &mut msn,
            "_HLS_part" => &mut part,
            // No delta updates are offered (`CAN-SKIP-UNTIL`), so none is asked for.
            "_HLS_skip" => continue,
            _ => {
                return Err(PlaylistError::BadRequest(
                    "unknown or misspelt _HLS_ parameter",
                ))
            }
        };
        let canonical = !raw_value.is_empty()
            && raw_value.bytes().all(|b| b.is_ascii_digit())
            && (raw_value == "0" || !raw_value.starts_with('0'));
        let value = raw_value.parse::<u64>().ok().filter(|_| canonical).ok_or(
            PlaylistError::BadRequest("_HLS_msn and _HLS_part are whole numbers"),
        )?;
        if slot.replace(value).is_some() {
            return Err(PlaylistError::BadRequest("an _HLS_ parameter is repeated"));
        }
    }
    let part = part
        .map(|part| {
            usize::try_from(part)
                .ok()
                .filter(|&part| part < MAX_PARTS)
                .ok_or(PlaylistError::BadRequest("_HLS_part must be a part index"))
        })
        .transpose()?;
    match (msn, part) {
        (None, Some(_)) => Err(PlaylistError::BadRequest("_HLS_part needs _HLS_msn")),
        (None, None) => Ok(None),
        (Some(msn), part) => Ok(Some(BlockingRequest { msn, part })),
    }
}

/// Whether `file` is one of the packager's media playlists (`media_0.m3u8`), which are
/// served with parts; the master playlist is not.
pub fn is_media_playlist(file: &str) -> bool {
    file.strip_prefix("media_")
        .and_then(|rest| rest.strip_suffix(".m3u8"))
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of part `index` of `segment`.
pub fn part_name(segment: &str, index: usize) -> String {
    let stem = segment.strip_suffix(".m4s").unwrap_or(segment);
    format!("{stem}.part{index}.m4s")
}

/// `chunk-r1-0-00005.part3.m4s` → (`chunk-r1-0-00005.m4s`, 3); `None` for other names.
pub fn parse_part_name(name: &str) -> Option<(String, usize)> {
    let (stem, index) = name.strip_suffix(".m4s")?.rsplit_once(".part")?;
    let segment = format!("{stem}.m4s");
    let index: usize = index.parse().ok()?;
    // One spelling per part, and only parts of the packager's segment names.
    (index < MAX_PARTS
        && part_name(&segment, index) == name
        && crate::transcode::preceding_file(&segment).is_some())
    .then_some((segment, index))
}

/// ffmpeg's media playlist, cut where parts go.
struct SourcePlaylist<'a> {
    /// Lines before the first segment.
    header: Vec<&'a str>,
    /// Each segment's lines, its URI last.
    segments: Vec<Vec<&'a str>>,
    /// Lines after the last segment (`#EXT-X-ENDLIST`).
    trailer: Vec<&'a str>,
    media_sequence: u64,
    target_duration: u64,
    map: Option<&'a str>,
    ended: bool,
}

impl<'a> SourcePlaylist<'a> {
    fn parse(text: &'a str) -> SourcePlaylist<'a> {
        let mut playlist = SourcePlaylist {
            header: Vec::new(),
            segments: Vec::new(),
            trailer: Vec::new(),
            media_sequence: 0,
            target_duration: 2,
            map: None,
            ended: false,
        };
        let mut pending = Vec::new();
        for line in text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
        {
            if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                playlist.media_sequence = value.trim().parse().unwrap_or(0);
            } else if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.target_duration = value.trim().parse().unwrap_or(2);
            } else if let Some(value) = line.strip_prefix("#EXT-X-MAP:") {
                playlist.map = value
                    .split_once("URI=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(uri, _)| uri);
            } else if line == "#EXT-X-ENDLIST" {
                playlist.ended = true;
            }
            let segment_line = line.starts_with("#EXTINF")
                || line.starts_with("#EXT-X-PROGRAM-DATE-TIME")
                || line.starts_with("#EXT-X-DISCONTINUITY")
                || !line.starts_with('#');
            if playlist.segments.is_empty() && pending.is_empty() && !segment_line {
                playlist.header.push(line);
                continue;
            }
            pending.push(line);
            if !line.starts_with('#') {
                playlist.segments.push(std::mem::take(&mut pending));
            }
        }
        playlist.trailer = pending;
        playlist.media_sequence += playlist.map.map_or(0, sequence_offset);
        playlist
    }

    /// A header line as served: the media sequence counted on across runs.
    fn write_header_line(&self, out: &mut String, line: &str) {
        if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
            let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }

    fn uri(segment: &[&'a str]) -> &'a str {
        segment.last().copied().unwrap_or_default()
    }

    /// The media sequence number of the segment after the last listed.
    fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// The name of the segment being written now.
    fn next_segment(&self) -> Option<String> {
        match self.segments.last() {
            Some(last) => following_file(Self::uri(last)),
            None => following_file(self.map?),
        }
    }
}

/// What a run's media sequence numbers start from: its start in seconds (runs are numbered
/// by their start in milliseconds, `crate::transcode`). Each ffmpeg run numbers its segments
/// from 1 again; counted on from its start, the numbers only ever grow across restarts, as a
/// player's blocking reloads need (a 2 s segment a number, a second a number), so a player
/// that asks for the next number of a run that crashed is answered with the new run's
/// playlist, not refused as asking too far ahead.
fn sequence_offset(map: &str) -> u64 {
    map.strip_prefix("init-r")
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(run, _)| run.parse::<u64>().ok())
        .map_or(0, |run| run / 1000)
}

/// The media playlist `file` of the stream in `dir` with its parts, once it satisfies
/// `request`.
pub async fn low_latency_playlist(
    edge: &Arc<LiveEdge>,
    dir: &Path,
    file: &str,
    request: Option<BlockingRequest>,
) -> Result<String, PlaylistError> {
    let path = dir.join(file);
    let started = Instant::now();
    loop {
        let text = tokio::fs::read_to_string(&path).await?;
        let source = SourcePlaylist::parse(&text);
        // The spec's limit: at most two segments past the last listed.
        if request.is_some_and(|request| request.msn > source.next_msn() + 1) {
            return Err(PlaylistError::BadRequest(
                "_HLS_msn is more than two segments ahead of the playlist",
            ));
        }
        if source.ended {
            // Nothing more is coming: what there is, is the answer.
            return Ok(render(edge, dir, &source, &[], Some(false)).await);
        }
        let next = source.next_segment().map(|next| dir.join(next));
        let mut growing = None;
        let whole = next.as_ref().and_then(|next| edge.known_whole(next));
        let (fragments, end) = match (&next, whole) {
            // Whole, but not listed yet: ffmpeg rewrites the playlist just after.
            (_, Some(whole)) => ((*whole).clone(), Some(true)),
            (Some(next), None) => {
                growing = edge.follow_for_playlist(next).await;
                match &mut growing {
                    Some(growing) => {
                        // A follower just started has read nothing yet; the parts the file
                        // already holds are listed, not only those written from now on.
                        growing.caught_up(Instant::now() + CATCH_UP).await;
                        growing.fragments()
                    }
                    None => (Vec::new(), None),
                }
            }
            (None, None) => (Vec::new(), None),
        };
        let satisfied = match request {
            None => true,
            Some(request) => {
                request.msn < source.next_msn()
                    || (request.msn == source.next_msn()
                        && request.part.is_some_and(|part| fragments.len() > part))
            }
        };
        if satisfied {
            return Ok(render(edge, dir, &source, &fragments, end).await);
        }
        // A player asks for the next part as soon as it has the last: within a part of now,
        // or, for a whole segment, a segment. Three target durations is the spec's bound.
        let deadline = started + Duration::from_secs(3 * source.target_duration.clamp(1, 10));
        let now = Instant::now();
        if now >= deadline {
            return Err(PlaylistError::NotYet);
        }
        match growing {
            // Woken by the follower as the file grows; ffmpeg rewrites the playlist just
            // after the segment completes, which is checked for a little later.
            Some(mut growing) if end.is_none() => {
                growing
                    .more_fragments_than(
                        fragments.len(),
                        deadline.min(now + Duration::from_millis(250)),
                    )
                    .await
            }
            _ => tokio::time::sleep(PLAYLIST_RECHECK).await,
        }
    }
}

/// `source` with its last segments' parts, the parts of the segment being written
/// (`growing`, `end`: whether it is complete) and a hint of the next part.
async fn render(
    edge: &LiveEdge,
    dir: &Path,
    source: &SourcePlaylist<'_>,
    growing: &[Fragment],
    end: Option<bool>,
) -> String {
    let timescale = match source.map {
        Some(map) => edge.timescale(&dir.join(map)).await,
        None => None,
    };
    let mut listed: Vec<Option<Arc<Vec<Fragment>>>> = Vec::new();
    let with_parts = source.segments.len().saturating_sub(SEGMENTS_WITH_PARTS);
    for segment in &source.segments[with_parts..] {
        let uri = SourcePlaylist::uri(segment);
        listed.push(if crate::transcode::preceding_file(uri).is_some() {
            edge.fragments_of(&dir.join(uri), None).await.ok()
        } else {
            None
        });
    }
    let Some(timescale) = timescale else {
        // No init segment to time parts by (a moment at a run's start): the plain playlist,
        // which still answers a blocking request for a listed segment.
        return plain(source);
    };
    let seconds = |fragment: &Fragment| fragment.duration() as f64 / f64::from(timescale);
    let part_target = part_target(
        listed
            .iter()
            .flatten()
            .flat_map(|fragments| fragments.iter())
            .chain(growing.iter()),
        timescale,
    );
    // Fixed for the run (the spec: it must not change), from the first playlist served.
    let part_target = match source.map {
        Some(map) => edge.part_target(&dir.join(map), part_target),
        None => part_target,
    };
    let mut out = String::with_capacity(4_096);
    for line in &source.header {
        source.write_header_line(&mut out, line);
        if line.starts_with("#EXT-X-TARGETDURATION:") {
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
                part_hold_back(part_target)
            );
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        }
    }
    let write_parts = |out: &mut String, segment: &str, fragments: &[Fragment]| {
        for (index, fragment) in fragments.iter().enumerate() {
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                seconds(fragment),
                part_name(segment, index)
            );
            out.push_str(if fragment.independent {
                ",INDEPENDENT=YES\n"
            } else {
                "\n"
            });
        }
    };
    for (index, segment) in source.segments.iter().enumerate() {
        if let Some(Some(fragments)) = index.checked_sub(with_parts).map(|at| &listed[at]) {
            write_parts(&mut out, SourcePlaylist::uri(segment), fragments);
        }
        for line in segment {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(next) = source.next_segment() {
        match end {
            // Abandoned: its parts will not all be served.
            Some(false) => {}
            Some(true) => {
                write_parts(&mut out, &next, growing);
                if let Some(after) = following_file(&next) {
                    let _ = writeln!(
                        out,
                        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                        part_name(&after, 0)
                    );
                }
            }
            None => {
                write_parts(&mut out, &next, growing);
                let _ = writeln!(
                    out,
                    "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                    part_name(&next, growing.len())
                );
            }
        }
    }
    for line in &source.trailer {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn plain(source: &SourcePlaylist<'_>) -> String {
    let mut out = String::new();
    for line in &source.header {
        source.write_header_line(&mut out, line);
    }
    for line in source.segments.iter().flatten().chain(&source.trailer) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// How far behind the live edge a player stays: the spec's three part targets, but at least
/// [`MIN_PART_HOLD_BACK`] seconds.
fn part_hold_back(part_target: f64) -> f64 {
    (part_target * 3.0).max(MIN_PART_HOLD_BACK)
}

/// The shortest hold-back offered. Three tenth-of-a-second parts leave a player no room for
/// one late part on a busy machine or network; a second does, and is still a fraction of the
/// two segments (4 s) a standard HLS player holds back.
const MIN_PART_HOLD_BACK: f64 = 1.0;

/// The part target duration, which must not change during the show and which no part may
/// exceed: the fragment length ffmpeg cuts at (the fewest frames that reach
/// [`crate::FRAGMENT_SECONDS`]), from the rendition's frame duration, or any longer part seen
/// (a variable frame rate), rounded up to milliseconds.
fn part_target<'a>(fragments: impl Iterator<Item = &'a Fragment>, timescale: u32) -> f64 {
    let timescale = f64::from(timescale);
    let mut frame = None;
    let mut longest: f64 = 0.0;
    for fragment in fragments {
        frame = frame.or(fragment.sample_durations.first().copied());
        longest = longest.max(fragment.duration() as f64 / timescale);
    }
    let nominal = frame
        .filter(|&frame| frame > 0)
        .map_or(crate::FRAGMENT_SECONDS, |frame| {
            let frame = f64::from(frame) / timescale;
            (crate::FRAGMENT_SECONDS / frame - 1e-6).ceil() * frame
        });
    (nominal.max(longest) * 1000.0).ceil() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-MAP:URI=\"init-r1-0.m4s\"
#EXTINF:2.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-12-07T03:54:54.000+0000
chunk-r1-0-00003.m4s
#EXTINF:2.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-12-07T03:54:56.000+0000
chunk-r1-0-00004.m4s
";

    #[test]
    fn ffmpegs_playlist_is_cut_into_header_and_segments() {
        let source = SourcePlaylist::parse(FFMPEG);
        assert_eq!(source.header.len(), 5);
        assert_eq!(source.segments.len(), 2);
        assert_eq!(
            SourcePlaylist::uri(&source.segments[1]),
            "chunk-r1-0-00004.m4s"
        );
        assert_eq!(source.media_sequence, 3);
        assert_eq!(source.next_msn(), 5);
        assert_eq!(
            source.next_segment().as_deref(),
            Some("chunk-r1-0-00005.m4s")
        );
        assert!(!source.ended);
        assert_eq!(plain(&source), FFMPEG);
        let empty = SourcePlaylist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"init-r1-0.m4s\"\n",
        );
        assert_eq!(
            empty.next_segment().as_deref(),
            Some("chunk-r1-0-00001.m4s")
        );
        assert_eq!(empty.next_msn(), 1);
        let ended = format!("{FFMPEG}#EXT-X-ENDLIST\n");
        let ended = SourcePlaylist::parse(&ended);
        assert!(ended.ended);
        assert_eq!(ended.trailer, vec!["#EXT-X-ENDLIST"]);
    }

    #[test]
    fn media_sequence_numbers_count_on_from_the_runs_start_across_restarts() {
        let run = |run: u64, sequence: u64| {
            format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n\
                 #EXT-X-MAP:URI=\"init-r{run}-0.m4s\"\n#EXTINF:2.000000,\nchunk-r{run}-0-{sequence:05}.m4s\n"
            )
        };
        // A run that started at 1,796,620,000 s and wrote 30 segments, then crashed; the next
        // run started 61 s later, and ffmpeg numbers from 1 again.
        let first = run(1_796_620_000_000, 30);
        let first = SourcePlaylist::parse(&first);
        let second = run(1_796_620_061_000, 1);
        let second = SourcePlaylist::parse(&second);
        assert_eq!(first.media_sequence, 1_796_620_030);
        assert!(second.media_sequence > first.next_msn());
        assert!(plain(&second).contains("#EXT-X-MEDIA-SEQUENCE:1796620062\n"));
    }

    #[test]
    fn blocking_requests_are_read_from_the_query_and_bad_ones_refused() {
        assert_eq!(blocking_request(None).expect("none"), None);
        assert_eq!(
            blocking_request(Some("_HLS_msn=7&_HLS_part=3")).expect("valid"),
            Some(BlockingRequest {
                msn: 7,
                part: Some(3)
            })
        );
        assert_eq!(
            blocking_request(Some("_HLS_msn=7&_HLS_skip=YES")).expect("valid"),
            Some(BlockingRequest { msn: 7, part: None })
        );
        assert_eq!(
            blocking_request(Some("v=3&_HLS_msn=0&_HLS_part=0")).expect("valid"),
            Some(BlockingRequest {
                msn: 0,
                part: Some(0)
            })
        );
        for bad in [
            "_HLS_part=1",
            "_HLS_msn=x",
            "_HLS_msn=-1",
            "_HLS_msn=1&_HLS_part=99999",
            // Spellings a cache could read as another request than the origin does.
            "_hls_msn=5&_hls_part=3",
            "_HLS_msn=5&_HLS_part=3&_HLS_msn=0",
            "_HLS_%6Dsn=0",
            "_HLS_msn=0005",
            "_HLS_msn=+5",
            "_HLS_msn=%35",
            "_HLS_msn=",
            "_HLS_msn",
        ] {
            assert!(
                matches!(
                    blocking_request(Some(bad)),
                    Err(PlaylistError::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn part_names_round_trip_and_only_the_packagers_are_parts() {
        assert_eq!(
            part_name("chunk-r1-0-00005.m4s", 3),
            "chunk-r1-0-00005.part3.m4s"
        );
        assert_eq!(
            parse_part_name("chunk-r1-0-00005.part3.m4s"),
            Some(("chunk-r1-0-00005.m4s".to_string(), 3))
        );
        for other in [
            "chunk-r1-0-00005.m4s",
            "chunk-r1-0-00005.part03.m4s",
            "chunk-r1-0-0005.part3.m4s",
            "init-r1-0.part3.m4s",
            "chunk-r1-0-00005.part.m4s",
            "chunk-r1-0-00005.part1000.m4s",
            "media_0.part1.m3u8",
        ] {
            assert_eq!(parse_part_name(other), None, "{other}");
        }
        assert!(is_media_playlist("media_0.m3u8"));
        assert!(is_media_playlist("media_12.m3u8"));
        assert!(!is_media_playlist("master.m3u8"));
        assert!(!is_media_playlist("media_.m3u8"));
    }

    fn fragment(durations: &[u32]) -> Fragment {
        Fragment {
            end: 0,
            decode_time: 0,
            sample_durations: durations.to_vec(),
            independent: false,
        }
    }

    #[test]
    fn the_part_target_is_the_fragment_ffmpeg_cuts_and_covers_every_part() {
        // 30 fps at a 15360 timescale: three frames make 0.1 s.
        let video = [fragment(&[512, 512, 512]), fragment(&[512])];
        assert_eq!(part_target(video.iter(), 15_360), 0.1);
        // AAC at 44.1 kHz: five 1024-sample frames, 0.1161 s.
        let audio = [fragment(&[1024; 5])];
        assert_eq!(part_target(audio.iter(), 44_100), 0.117);
        // A longer part (a variable frame rate) raises it.
        let uneven = [fragment(&[512, 512, 512]), fragment(&[512, 512, 512, 512])];
        assert_eq!(part_target(uneven.iter(), 15_360), 0.134);
        assert_eq!(part_target([].iter(), 15_360), crate::FRAGMENT_SECONDS);
    }

    #[tokio::test]
    async fn a_playlist_lists_the_parts_of_its_last_segments_and_of_the_one_being_written() {
        use crate::cmaf::tests::{fragment as cmaf_fragment, init_segment, mp4_box};
        use crate::EdgeSettings;
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("init-r1-0.m4s"), init_segment(15_360)).expect("init");
        let segment = |start: u64| {
            [
                mp4_box(b"styp", b"msdhcmfs"),
                cmaf_fragment(start, &[512, 512, 512], true),
                cmaf_fragment(start + 1536, &[512, 512, 512], false),
            ]
            .concat()
        };
        for number in [3u64, 4] {
            std::fs::write(
                dir.path().join(format!("chunk-r1-0-{number:05}.m4s")),
                segment(number * 3072),
            )
            .expect("segment");
        }
        std::fs::write(dir.path().join("media_0.m3u8"), FFMPEG).expect("playlist");
        // The fifth is being written: one fragment in.
        let mut tmp =
            std::fs::File::create(dir.path().join("chunk-r1-0-00005.m4s.tmp")).expect("tmp");
        let fifth = segment(5 * 3072);
        let first_end =
            mp4_box(b"styp", b"msdhcmfs").len() + cmaf_fragment(0, &[512; 3], true).len();
        tmp.write_all(&fifth[..first_end]).expect("write");
        let edge = LiveEdge::new(EdgeSettings {
            poll: Duration::from_millis(2),
            ..EdgeSettings::for_segments(Duration::from_secs(2))
        });
        // Blocks until the fifth segment's first part is in.
        let playlist = low_latency_playlist(
            &edge,
            dir.path(),
            "media_0.m3u8",
            Some(BlockingRequest {
                msn: 5,
                part: Some(0),
            }),
        )
        .await
        .expect("playlist");
        assert!(
            playlist.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000\n")
        );
        assert!(playlist.contains("#EXT-X-PART-INF:PART-TARGET=0.100\n"));
        assert!(playlist.contains(
            "#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00004.part0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00004.part1.m4s\"\n#EXTINF:2.000000,"
        ), "{playlist}");
        assert!(playlist.ends_with(
            "chunk-r1-0-00004.m4s\n#EXT-X-PART:DURATION=0.10000,URI=\"chunk-r1-0-00005.part0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"chunk-r1-0-00005.part1.m4s\"\n"
        ), "{playlist}");
        // The part asked for next is served as it completes, its bytes the segment's.
        let mut growing = edge
            .follow_for_playlist(&dir.path().join("chunk-r1-0-00005.m4s"))
            .await
            .expect("followed for the playlist");
        assert_eq!(edge.growing(), 1, "the playlist's follower, shared");
        let waiting = tokio::spawn(async move { growing.fragment(1).await });
        tmp.write_all(&fifth[first_end..]).expect("write");
        drop(tmp);
        let part = waiting
            .await
            .expect("joined")
            .expect("not abandoned")
            .expect("a part");
        assert_eq!(&part[..], &fifth[first_end..]);
        // Too far ahead is refused at once.
        assert!(matches!(
            low_latency_playlist(
                &edge,
                dir.path(),
                "media_0.m3u8",
                Some(BlockingRequest { msn: 7, part: None })
            )
            .await,
            Err(PlaylistError::BadRequest(_))
        ));
    }
}
