//! Live media, first part: ingest. An organizer's encoder (OBS, ffmpeg, a phone) publishes an
//! event's show over RTMP with the event's current stream key; the ingest checks the key with
//! the platform ([`PublishGate`]), admits one publisher per stream at a time, keeps a stream
//! live across a short drop of its publisher, and hands the media on as FLV ([`LiveStreams`])
//! to whoever transcodes and packages it.
//!
//! Why `rml_rtmp`: the RTMP handshake (including the FP9 digest variant encoders send), chunk
//! stream multiplexing and AMF0 commands are a protocol library's job, and it is sans-I/O, which
//! lets the ingest be a state machine the fuzzer can drive ([`RtmpConnection`]). What a public
//! port needs around it (deadlines, byte and chunk-size caps, key checks, one publisher per
//! stream) is written here.
//!
//! Still to come in this block (issue 11): SRT ingest, the supervised ffmpeg transcoder (HLS
//! and DASH renditions), delivery with viewer tokens, recording, and the API that issues keys.

pub mod flv;
pub mod ladder;
mod recording;
mod rtmp;
mod streams;
mod token;
mod transcode;

pub use crate::recording::{RecordingError, RecordingStore, StoredRecording};
pub use crate::rtmp::{
    spawn_rtmp_listener, Incoming, IngestLimits, PublishGate, RtmpConnection, RtmpError,
};
pub use crate::streams::{LiveStreams, Publisher, StatusChange, StreamRefusal, StreamStatus};
pub use crate::token::{new_stream_key, stream_key_hash, PlaybackTokens, TokenError, Viewer};
pub use crate::transcode::{
    ffmpeg_args, spawn_transcoders, stream_dir, FinishedRecording, TranscodeEvents,
    TranscodeSettings,
};
