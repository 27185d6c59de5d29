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

/// An audio or video tag read from a byte stream, owning its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: TagKind,
    pub timestamp: u32,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV stream")]
    NotFlv,
}

/// Reads tags from FLV arriving in pieces (a remuxer's stdout): bytes in with
/// [`FlvReader::push`], whole audio and video tags out of [`FlvReader::next_tag`]. Script tags
/// are skipped. It holds at most one tag's worth of bytes beyond what it was given (a tag's
/// 24-bit size caps that at 16 MiB).
#[derive(Default)]
pub struct FlvReader {
    buffer: BytesMut,
    header_read: bool,
}

impl FlvReader {
    pub fn new() -> FlvReader {
        FlvReader::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole tag, `Ok(None)` when more bytes are needed.
    pub fn next_tag(&mut self) -> Result<Option<Tag>, FlvError> {
        if !self.header_read {
            if self.buffer.len() < 9 {
                return Ok(None);
            }
            if &self.buffer[..3] != b"FLV" {
                return Err(FlvError::NotFlv);
            }
            let data_offset = u32::from_be_bytes([
                self.buffer[5],
                self.buffer[6],
                self.buffer[7],
                self.buffer[8],
            ]) as usize;
            // The header, then the first previous-tag-size.
            let skip = data_offset.max(9) + 4;
            if self.buffer.len() < skip {
                return Ok(None);
            }
            let _ = self.buffer.split_to(skip);
            self.header_read = true;
        }
        loop {
            if self.buffer.len() < 11 {
                return Ok(None);
            }
            let size = usize::from(self.buffer[1]) << 16
                | usize::from(self.buffer[2]) << 8
                | usize::from(self.buffer[3]);
            let total = 11 + size + 4;
            if self.buffer.len() < total {
                return Ok(None);
            }
            let tag = self.buffer.split_to(total).freeze();
            let kind = match tag[0] & 0x1F {
                8 => TagKind::Audio,
                9 => TagKind::Video,
                _ => continue,
            };
            return Ok(Some(Tag {
                kind,
                timestamp: timestamp_of(&tag),
                body: tag.slice(11..11 + size),
            }));
        }
    }
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
    fn a_reader_fed_byte_by_byte_finds_the_same_tags() {
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&tag(TagKind::Script, 0, b"onMetaData"));
        bytes.extend_from_slice(&tag(TagKind::Video, 40, &[0x17, 1, 2, 3]));
        bytes.extend_from_slice(&tag(TagKind::Audio, 0x0100_0000, &[0xAF, 1]));
        let mut reader = FlvReader::new();
        let mut tags = Vec::new();
        for byte in &bytes {
            reader.push(std::slice::from_ref(byte));
            while let Some(tag) = reader.next_tag().expect("flv") {
                tags.push((tag.kind, tag.timestamp, tag.body.to_vec()));
            }
        }
        assert_eq!(
            tags,
            [
                (TagKind::Video, 40, vec![0x17, 1, 2, 3]),
                (TagKind::Audio, 0x0100_0000, vec![0xAF, 1])
            ]
        );
        let mut garbage = FlvReader::new();
        garbage.push(b"GET / HTTP/1.1\r\n");
        assert_eq!(garbage.next_tag(), Err(FlvError::NotFlv));
    }

    #[test]
    fn sequence_headers_are_recognised() {
        assert!(is_video_sequence_header(&[0x17, 0, 0, 0, 0]));
        assert!(!is_video_sequence_header(&[0x17, 1]));
        assert!(is_audio_sequence_header(&[0xAF, 0]));
        assert!(!is_audio_sequence_header(&[0xAF, 1]));
    }
}
