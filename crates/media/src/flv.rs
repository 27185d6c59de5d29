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
    fn sequence_headers_are_recognised() {
        assert!(is_video_sequence_header(&[0x17, 0, 0, 0, 0]));
        assert!(!is_video_sequence_header(&[0x17, 1]));
        assert!(is_audio_sequence_header(&[0xAF, 0]));
        assert!(!is_audio_sequence_header(&[0xAF, 1]));
    }
}
