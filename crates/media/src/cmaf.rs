//! Just enough ISO BMFF to cut CMAF segments into their fragments as the bytes arrive: the
//! track's timescale from the init segment, and for each `moof` + `mdat` pair where it ends in
//! the segment, its decode time, its samples' durations and whether it starts on a sync sample.
//!
//! The low-latency HLS playlist lists each fragment as a part (`crate::llhls`), the origin
//! serves parts as byte ranges of the segment, and `marquee-bench live` times frames by
//! fragment. The `mp4` crates parse whole files into owned trees and want the `moov`; this
//! reads a few fields out of boxes that may be cut anywhere, and never allocates per sample
//! beyond the durations it returns.

/// Boxes of `data` (complete ones) as (type, body).
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let (size, header) = box_size(data)?;
        if size > data.len() {
            return None;
        }
        let kind = [data[4], data[5], data[6], data[7]];
        let body = &data[header..size];
        data = &data[size..];
        Some((kind, body))
    })
}

/// A box's whole size and header length, if its header is all there.
fn box_size(data: &[u8]) -> Option<(usize, usize)> {
    let size = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?);
    match size {
        1 => {
            let large = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
            Some((usize::try_from(large).ok()?.max(16), 16))
        }
        0 => None, // "to the end of the file": not in fragments
        size => Some((usize::try_from(size).ok()?.max(8), 8)),
    }
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data)
        .find(|(found, _)| found == kind)
        .map(|(_, body)| body)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The media timescale of the (first) track of an init segment.
pub fn timescale(init: &[u8]) -> Option<u32> {
    let mdhd = child(
        child(child(child(init, b"moov")?, b"trak")?, b"mdia")?,
        b"mdhd",
    )?;
    // version 1 has 64-bit creation and modification times.
    u32_at(mdhd, if mdhd.first()? == &1 { 20 } else { 12 })
}

/// One `moof` and its `mdat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Where the fragment's `mdat` ends, counted from the first byte pushed: the fragment
    /// (with any boxes before its `moof`) ends here and the next one starts here.
    pub end: u64,
    pub decode_time: u64,
    pub sample_durations: Vec<u32>,
    /// Its first sample is a sync sample: a player may start decoding here.
    pub independent: bool,
}

impl Fragment {
    /// Its duration in timescale units.
    pub fn duration(&self) -> u64 {
        self.sample_durations.iter().map(|&d| u64::from(d)).sum()
    }
}

/// Reads a segment's bytes as they arrive and hands out each fragment once whole.
#[derive(Debug, Default)]
pub struct FragmentReader {
    pending: Vec<u8>,
    /// Bytes already consumed out of `pending`.
    consumed: u64,
    moof: Option<Moof>,
}

#[derive(Debug)]
struct Moof {
    decode_time: u64,
    sample_durations: Vec<u32>,
    independent: bool,
}

impl FragmentReader {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Fragment> {
        self.pending.extend_from_slice(bytes);
        let mut whole = Vec::new();
        let mut at = 0;
        while let Some((size, header)) = box_size(&self.pending[at..]) {
            if size > self.pending.len() - at {
                break;
            }
            let body = &self.pending[at + header..at + size];
            match &self.pending[at + 4..at + 8] {
                b"moof" => self.moof = parse_moof(body),
                b"mdat" => {
                    if let Some(moof) = self.moof.take() {
                        whole.push(Fragment {
                            end: self.consumed + (at + size) as u64,
                            decode_time: moof.decode_time,
                            sample_durations: moof.sample_durations,
                            independent: moof.independent,
                        });
                    }
                }
                _ => {}
            }
            at += size;
        }
        // An `mdat` is read into `pending` whole before it is handed out, so what is kept is
        // at most one fragment's bytes.
        self.pending.drain(..at);
        self.consumed += at as u64;
        whole
    }
}

/// Every fragment of a whole segment.
pub fn fragments(segment: &[u8]) -> Vec<Fragment> {
    FragmentReader::default().push(segment)
}

/// The most samples one fragment may claim: a 0.1 s fragment holds a handful, a whole 2 s
/// segment's single fragment a few hundred.
const MAX_SAMPLES: u32 = 65_536;

/// `sample_is_non_sync_sample` in the sample flags.
const NON_SYNC: u32 = 0x0001_0000;

fn parse_moof(moof: &[u8]) -> Option<Moof> {
    let traf = child(moof, b"traf")?;
    let tfhd = child(traf, b"tfhd")?;
    let tfhd_flags = u32_at(tfhd, 0)? & 0x00ff_ffff;
    // track_ID, then the optional fields in order.
    let mut at = 8;
    if tfhd_flags & 0x01 != 0 {
        at += 8; // base_data_offset
    }
    if tfhd_flags & 0x02 != 0 {
        at += 4; // sample_description_index
    }
    let default_duration = if tfhd_flags & 0x08 != 0 {
        let duration = u32_at(tfhd, at);
        at += 4;
        duration
    } else {
        None
    };
    if tfhd_flags & 0x10 != 0 {
        at += 4; // default_sample_size
    }
    let default_flags = if tfhd_flags & 0x20 != 0 {
        u32_at(tfhd, at)
    } else {
        None
    };
    let tfdt = child(traf, b"tfdt")?;
    let decode_time = if tfdt.first()? == &1 {
        u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)
    } else {
        u64::from(u32_at(tfdt, 4)?)
    };
    let trun = child(traf, b"trun")?;
    let flags = u32_at(trun, 0)? & 0x00ff_ffff;
    let count = u32_at(trun, 4)?;
    let mut at = 8;
    if flags & 0x01 != 0 {
        at += 4; // data_offset
    }
    let first_sample_flags = if flags & 0x04 != 0 {
        let first = u32_at(trun, at);
        at += 4;
        first
    } else {
        None
    };
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|bit| flags & **bit != 0)
        .count()
        * 4;
    // A sample's flags sit after its duration and size, when those are present.
    let flags_at =
        at + if flags & 0x100 != 0 { 4 } else { 0 } + if flags & 0x200 != 0 { 4 } else { 0 };
    let first_flags = first_sample_flags
        .or_else(|| {
            (flags & 0x400 != 0)
                .then(|| u32_at(trun, flags_at))
                .flatten()
        })
        .or(default_flags)
        .unwrap_or(0);
    // The count is the file's word: what it claims must fit in the box, and with no fields
    // per sample (every sample the track's default) it is still bounded.
    if count > MAX_SAMPLES {
        return None;
    }
    if per_sample > 0
        && (count as usize).saturating_mul(per_sample) > trun.len() - at.min(trun.len())
    {
        return None;
    }
    let mut sample_durations = Vec::with_capacity((count as usize).min(4096));
    for sample in 0..count as usize {
        let duration = if flags & 0x100 != 0 {
            u32_at(trun, at + sample * per_sample)?
        } else {
            default_duration?
        };
        sample_durations.push(duration);
    }
    Some(Moof {
        decode_time,
        sample_durations,
        independent: count > 0 && first_flags & NON_SYNC == 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// A `moof` of `durations` samples at `decode_time`, its `trun` carrying durations and
    /// sizes (and the first sample's flags: sync when `independent`), followed by its `mdat`;
    /// the track's default sample flags say "not sync", as ffmpeg's video tracks do.
    pub fn fragment(decode_time: u64, durations: &[u32], independent: bool) -> Vec<u8> {
        // default-base-is-moof, default sample flags
        let mut tfhd_body = vec![0, 0x02, 0, 0x20, 0, 0, 0, 1];
        tfhd_body.extend_from_slice(&NON_SYNC.to_be_bytes());
        let tfhd = mp4_box(b"tfhd", &tfhd_body);
        let mut tfdt_body = vec![1, 0, 0, 0];
        tfdt_body.extend_from_slice(&decode_time.to_be_bytes());
        let tfdt = mp4_box(b"tfdt", &tfdt_body);
        // data offset, durations, sizes, and the first sample's flags when it is a keyframe
        let mut trun_body = vec![0, 0, 0x03, if independent { 0x05 } else { 0x01 }];
        trun_body.extend_from_slice(&(durations.len() as u32).to_be_bytes());
        trun_body.extend_from_slice(&0u32.to_be_bytes());
        if independent {
            trun_body.extend_from_slice(&0x0200_0000u32.to_be_bytes());
        }
        for duration in durations {
            trun_body.extend_from_slice(&duration.to_be_bytes());
            trun_body.extend_from_slice(&100u32.to_be_bytes());
        }
        let trun = mp4_box(b"trun", &trun_body);
        let traf = mp4_box(b"traf", &[tfhd, tfdt, trun].concat());
        let mut out = mp4_box(b"moof", &[mp4_box(b"mfhd", &[0; 8]), traf].concat());
        out.extend(mp4_box(b"mdat", &vec![0u8; 300]));
        out
    }

    #[test]
    fn fragments_are_cut_and_timed_once_their_media_is_in_however_the_bytes_arrive() {
        let styp = mp4_box(b"styp", b"msdhcmfs");
        let first = fragment(30_720, &[512, 512, 512], true);
        let second = fragment(32_256, &[512, 512], false);
        let segment = [styp.clone(), first.clone(), second.clone()].concat();
        for cut in [1, 7, 100, segment.len()] {
            let mut reader = FragmentReader::default();
            let mut fragments = Vec::new();
            for piece in segment.chunks(cut) {
                fragments.extend(reader.push(piece));
            }
            assert_eq!(fragments.len(), 2, "cut every {cut} bytes");
            assert_eq!(fragments[0].decode_time, 30_720);
            assert_eq!(fragments[0].sample_durations, vec![512, 512, 512]);
            assert_eq!(fragments[0].duration(), 1536);
            assert!(fragments[0].independent, "starts on a keyframe");
            assert_eq!(fragments[0].end, (styp.len() + first.len()) as u64);
            assert_eq!(fragments[1].decode_time, 32_256);
            assert_eq!(fragments[1].sample_durations.len(), 2);
            assert!(!fragments[1].independent);
            assert_eq!(fragments[1].end, segment.len() as u64);
        }
        // A moof without its mdat yet is not handed out.
        let mut reader = FragmentReader::default();
        assert!(reader.push(&first[..first.len() - 1]).is_empty());
        assert_eq!(reader.push(&first[first.len() - 1..]).len(), 1);
        assert_eq!(fragments(&segment).len(), 2);
    }

    /// An init segment of one track with media timescale `timescale`.
    pub fn init_segment(timescale: u32) -> Vec<u8> {
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&timescale.to_be_bytes());
        [
            mp4_box(b"ftyp", b"iso6cmfc"),
            mp4_box(
                b"moov",
                &mp4_box(b"trak", &mp4_box(b"mdia", &mp4_box(b"mdhd", &mdhd))),
            ),
        ]
        .concat()
    }

    #[test]
    fn the_timescale_comes_from_the_init_segments_media_header() {
        assert_eq!(timescale(&init_segment(15_360)), Some(15_360));
        assert_eq!(timescale(b"junk"), None);
    }

    #[test]
    fn a_sample_count_larger_than_its_box_is_not_believed() {
        let mut bad = fragment(0, &[512], true);
        // The trun's sample count (moof header 8 + mfhd 16 + traf header 8 + tfhd 20 +
        // tfdt 20 + trun header 8 + flags 4).
        let at = 8 + 16 + 8 + 20 + 20 + 8 + 4;
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(fragments(&bad).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panicking(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = fragments(&data);
            let _ = timescale(&data);
        }
    }
}
