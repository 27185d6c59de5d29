//! The SRT ingest's parsing of what a caller controls: the stream id of its handshake, and the
//! FLV the remuxer makes of its MPEG-TS, read by `FlvReader` in arbitrary pieces. Neither may
//! panic; a stream id that parses names a key, and every tag read lies within the bytes given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_media::flv::{FlvReader, TagKind};
use marquee_media::parse_stream_id;

fuzz_target!(|input: (String, Vec<u16>, Vec<u8>)| {
    let (stream_id, cuts, bytes) = input;
    if let Ok((_app, key)) = parse_stream_id(&stream_id) {
        assert!(!key.is_empty(), "a parsed stream id names a key");
    }

    let mut reader = FlvReader::new();
    let mut rest: &[u8] = &bytes;
    let mut cut = cuts.into_iter().map(usize::from);
    let mut body_bytes = 0usize;
    while !rest.is_empty() {
        let size = cut.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        reader.push(piece);
        loop {
            match reader.next_tag() {
                Ok(Some(tag)) => {
                    assert!(matches!(tag.kind, TagKind::Audio | TagKind::Video));
                    // Each tag costs its 11-byte header and 4-byte trailer beyond its body.
                    body_bytes += tag.body.len() + 15;
                    assert!(body_bytes <= bytes.len(), "a tag read beyond the input");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
