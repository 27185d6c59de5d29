//! The rendition ladder: what a source is transcoded into.
//!
//! The source's size is always offered (re-encoded like the rest, so that every rendition has
//! its keyframes at the same instants), plus every rung of 720p, 480p and 360p below the
//! source's height. Nothing is upscaled, and a rung equal to the source is the
//! source. The source's size comes from its H.264 sequence parameter set, not from what the
//! encoder's metadata claims.

use h264_reader::avcc::AvcDecoderConfigurationRecord;

/// One output of the transcoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// `source`, `720p`, `480p` or `360p`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate in kbit/s.
    pub video_kbps: Option<u32>,
}

/// Rungs below the source: (height, video kbit/s).
const RUNGS: [(u32, u32); 3] = [(720, 2_800), (480, 1_400), (360, 800)];

/// The ladder for a source of `width`×`height`.
pub fn ladder(width: u32, height: u32) -> Vec<Rendition> {
    let mut renditions = vec![Rendition {
        name: "source".into(),
        width,
        height,
        video_kbps: Some(source_kbps(width, height)),
    }];
    for (rung, kbps) in RUNGS {
        if rung < height {
            // Keep the aspect ratio, with an even width (the encoder's 4:2:0 needs it).
            let scaled = (u64::from(width) * u64::from(rung) / u64::from(height.max(1))) as u32;
            renditions.push(Rendition {
                name: format!("{rung}p"),
                width: (scaled + 1) & !1,
                height: rung,
                video_kbps: Some(kbps),
            });
        }
    }
    renditions
}

/// The source-size rendition's bitrate: about 0.1 bit per pixel at 30 frames a second,
/// between 800 kbit/s and 12 Mbit/s.
fn source_kbps(width: u32, height: u32) -> u32 {
    let pixels = u64::from(width) * u64::from(height);
    ((pixels * 30 / 10_000) as u32).clamp(800, 12_000)
}

/// Why a source cannot be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("unsupported video codec (FLV codec id {0}); publish H.264")]
    UnsupportedCodec(u8),
    #[error("the H.264 configuration cannot be read: {0}")]
    BadConfiguration(String),
    #[error("the video is {0}x{1}; at most 3840x2160 is accepted")]
    TooLarge(u32, u32),
}

/// The picture size in an FLV video tag body holding an AVC sequence header.
pub fn source_dimensions(video_tag_body: &[u8]) -> Result<(u32, u32), SourceError> {
    let codec = video_tag_body.first().map_or(0, |byte| byte & 0x0f);
    if codec != 7 {
        return Err(SourceError::UnsupportedCodec(codec));
    }
    let record = video_tag_body
        .get(5..)
        .ok_or_else(|| SourceError::BadConfiguration("truncated".into()))?;
    let record = AvcDecoderConfigurationRecord::try_from(record)
        .map_err(|error| SourceError::BadConfiguration(format!("{error:?}")))?;
    let context = record
        .create_context()
        .map_err(|error| SourceError::BadConfiguration(format!("{error:?}")))?;
    let sps = context
        .sps()
        .next()
        .ok_or_else(|| SourceError::BadConfiguration("no sequence parameter set".into()))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|error| SourceError::BadConfiguration(format!("{error:?}")))?;
    if width > 3_840 || height > 2_160 {
        return Err(SourceError::TooLarge(width, height));
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(width: u32, height: u32) -> Vec<(String, u32, u32)> {
        ladder(width, height)
            .into_iter()
            .map(|rendition| (rendition.name, rendition.width, rendition.height))
            .collect()
    }

    #[test]
    fn every_rung_below_the_source_and_none_above() {
        assert_eq!(
            sizes(1920, 1080),
            [
                ("source".into(), 1920, 1080),
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
            ]
        );
        // A rung equal to the source is the source.
        assert_eq!(
            sizes(1280, 720),
            [
                ("source".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
            ]
        );
        assert_eq!(sizes(426, 240), [("source".into(), 426, 240)]);
        // Portrait keeps its aspect with even widths.
        assert_eq!(sizes(720, 1280)[1], ("720p".into(), 406, 720));
    }

    #[test]
    fn a_sequence_header_that_is_not_h264_or_is_garbage_is_refused() {
        assert_eq!(
            source_dimensions(&[0x1c, 0, 0, 0, 0, 1, 2, 3]),
            Err(SourceError::UnsupportedCodec(12))
        );
        assert!(matches!(
            source_dimensions(&[0x17, 0, 0, 0, 0, 1, 2]),
            Err(SourceError::BadConfiguration(_))
        ));
        assert!(source_dimensions(&[]).is_err());
    }
}
