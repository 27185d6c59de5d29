//! Live media. An organizer's encoder (OBS, ffmpeg, a phone) publishes an event's show over
//! RTMP with the event's current stream key; the ingest checks the key with the platform
//! ([`PublishGate`]), admits one publisher per stream at a time and keeps a stream live across
//! a short drop of its publisher ([`LiveStreams`]); one supervised ffmpeg per show transcodes
//! the ladder and packages it as CMAF with an HLS master playlist and a DASH MPD
//! ([`spawn_transcoders`]); playback URLs carry viewer-bound tokens ([`PlaybackTokens`]); each
//! show is recorded into blob storage ([`RecordingStore`]); a segment still being written is
//! delivered to viewers at the live edge as it grows ([`LiveEdge`]), and listed fragment by
//! fragment as low-latency HLS parts ([`llhls`]).
//!
//! Why `rml_rtmp`: the RTMP handshake (including the FP9 digest variant encoders send), chunk
//! stream multiplexing and AMF0 commands are a protocol library's job, and it is sans-I/O, which
//! lets the ingest be a state machine the fuzzer can drive ([`RtmpConnection`]). What a public
//! port needs around it (deadlines, byte and chunk-size caps, key checks, one publisher per
//! stream) is written here. Why ffmpeg as a child process: see [`transcode`]. Why
//! `h264-reader`: the ladder is decided from the stream's own SPS, not the encoder's metadata.
//! Why `object_store`: one API over local files and S3-compatible stores. Why `srt-tokio`:
//! see [`spawn_srt_listener`].

pub mod cmaf;
mod edge;
pub mod flv;
pub mod ladder;
pub mod llhls;
mod recording;
mod rtmp;
mod srt;
mod streams;
mod token;
pub mod transcode;

pub use crate::edge::{
    is_whole_file, Abandoned, EdgeError, EdgeSettings, GrowingSegment, LiveEdge, FRAGMENT_SECONDS,
};
pub use crate::recording::{RecordingError, RecordingStore, StoredRecording};
pub use crate::rtmp::{
    spawn_rtmp_listener, Incoming, IngestLimits, PublishGate, RtmpConnection, RtmpError,
};
pub use crate::srt::{parse_stream_id, spawn_srt_listener, SrtIngest, SrtSettings};
pub use crate::streams::{LiveStreams, Publisher, StatusChange, StreamRefusal, StreamStatus};
pub use crate::token::{new_stream_key, stream_key_hash, PlaybackTokens, TokenError, Viewer};
pub use crate::transcode::{
    ffmpeg_args, following_file, preceding_file, spawn_transcoders, stream_dir, FinishedRecording,
    TranscodeEvents, TranscodeSettings,
};
