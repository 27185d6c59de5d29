//! FLV framing: how ingested audio and video leave the ingest (and enter a transcoder's
//! `-f flv -i pipe:0`). RTMP's media messages are FLV tag bodies already; a tag adds an 11-byte
//! header and a trailing size.

use bytes::{BufMut, Bytes, BytesMut};

/// The file header for a stream with audio and video, followed by the first (zero) previous
/// tag size.
pub const HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 0b0000_0101, 0, 0, 0, 9, 0, 0, 0, 0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio = 8,
    Video = 9,
    Script = 18,
}

/// One tag: kind, timestamp (milliseconds, 32 bits), body; then the previous-tag-size field.
pub fn tag(kind: TagKind, timestamp: u32, body: &[u8]) -> Bytes {
    let size = body.len().min(0x00FF_FFFF);
    let mut tag = BytesMut::with_capacity(11 + size + 4);
    tag.put_u8(kind as u8);
    tag.put_uint(size as u64, 3);
    tag.put_uint(u64::from(timestamp & 0x00FF_FFFF), 3);
    tag.put_u8((timestamp >> 24) as u8);
    tag.put_uint(0, 3);
    tag.put_slice(&body[..size]);
    tag.put_u32((11 + size) as u32);
    tag.freeze()
}

/// An AVC (H.264) decoder configuration record: what a decoder needs before any frame.
pub fn is_video_sequence_header(body: &[u8]) -> bool {
    body.len() >= 2 && body[0] & 0x0F == 7 && body[1] == 0
}

/// An AAC AudioSpecificConfig.
pub fn is_audio_sequence_header(body: &[u8]) -> bool {
    body.len() >= 2 && body[0] >> 4 == 10 && body[1] == 0
}

/// A tag read back: its kind and body.
pub struct ParsedTag<'a> {
    pub kind: TagKind,
    pub timestamp: u32,
    pub body: &'a [u8],
}

/// The audio and video tags in `bytes` (tags as [`tag`] makes them, after an optional file
/// header); script tags and anything malformed are skipped or end the iteration.
pub fn tags_of(bytes: &[u8]) -> impl Iterator<Item = ParsedTag<'_>> {
    let mut rest = if bytes.starts_with(b"FLV") {
        bytes.get(HEADER.len()..).unwrap_or_default()
    } else {
        bytes
    };
    std::iter::from_fn(move || loop {
        if rest.len() < 11 {
            return None;
        }
        let size = usize::from(rest[1]) << 16 | usize::from(rest[2]) << 8 | usize::from(rest[3]);
        let total = 11 + size + 4;
        if rest.len() < total {
            return None;
        }
        let (tag, after) = rest.split_at(total);
        rest = after;
        let kind = match tag[0] {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            _ => continue,
        };
        return Some(ParsedTag {
            kind,
            timestamp: timestamp_of(tag),
            body: &tag[11..11 + size],
        });
    })
}

/// The timestamp of a tag made by [`tag`] (0 if it is too short to have one).
pub fn timestamp_of(tag: &[u8]) -> u32 {
    if tag.len() < 8 {
        return 0;
    }
    u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_carries_kind_size_timestamp_and_its_own_length() {
        let tag = tag(TagKind::Video, 0x0102_0304, &[0x17, 0, 1, 2]);
        assert_eq!(
            tag.as_ref(),
            [9, 0, 0, 4, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0x17, 0, 1, 2, 0, 0, 0, 15]
        );
    }

    #[test]
    fn tags_read_back_as_written() {
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&tag(TagKind::Audio, 7, &[0xAF, 0]));
        bytes.extend_from_slice(&tag(TagKind::Script, 0, b"meta"));
        bytes.extend_from_slice(&tag(TagKind::Video, 0x0102_0304, &[0x17, 0, 9]));
        bytes.extend_from_slice(&[9, 0, 0]);
        let tags: Vec<(TagKind, u32, Vec<u8>)> = tags_of(&bytes)
            .map(|tag| (tag.kind, tag.timestamp, tag.body.to_vec()))
            .collect();
        assert_eq!(
            tags,
            [
                (TagKind::Audio, 7, vec![0xAF, 0]),
                (TagKind::Video, 0x0102_0304, vec![0x17, 0, 9])
            ]
        );
    }

    #[test]
    fn sequence_headers_are_recognised() {
        assert!(is_video_sequence_header(&[0x17, 0, 0, 0, 0]));
        assert!(!is_video_sequence_header(&[0x17, 1]));
        assert!(is_audio_sequence_header(&[0xAF, 0]));
        assert!(!is_audio_sequence_header(&[0xAF, 1]));
    }
}
