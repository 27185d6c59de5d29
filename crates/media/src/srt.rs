//! SRT ingest: encoders that publish MPEG-TS over SRT (OBS, ffmpeg, hardware encoders on lossy
//! uplinks) with the event's stream key as their stream id.
//!
//! Why `srt-tokio`: it speaks the SRT protocol (handshake v5, ARQ, TSBPD) against libsrt
//! callers, and it hands each connection request to the application before accepting it,
//! which is where the stream key is checked. An ffmpeg listener (`-i srt://:port?mode=listener`)
//! could not do that: it takes one caller and cannot refuse one by stream id.
//!
//! What arrives is MPEG-TS. Each accepted publisher's TS is remuxed (`-c copy`, no decoding)
//! to FLV by a child ffmpeg and fed into the same [`LiveStreams`] as RTMP: one format inside,
//! so the grace on reconnect, the source probe and the transcoder are the same for both
//! ingests. A TS that ffmpeg cannot remux to FLV (no H.264, say) ends the stream with ffmpeg's
//! reason as its problem.
//!
//! SRT has no "unpublish" message, but a caller that closes its socket sends a shutdown, and
//! the connection ends right after its last packet; one whose network dropped (or that was
//! killed) goes silent, and the connection ends only past the peer idle timeout. `srt-tokio`
//! does not say which happened, so the ingest tells them apart by that silence: a connection
//! that ends within half the idle timeout of its last packet was closed, and the show ends
//! as it does on an RTMP unpublish; any other end starts the reconnect grace.

use crate::flv::{FlvReader, TagKind};
use crate::rtmp::PublishGate;
use crate::streams::{LiveStreams, Publisher, StreamRefusal};
use futures::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SrtListener, SrtSocket};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The SRT ingest's settings.
#[derive(Debug, Clone)]
pub struct SrtSettings {
    /// The ffmpeg that remuxes each publisher's TS to FLV.
    pub ffmpeg: PathBuf,
    /// SRT receive latency: how long SRT may wait to recover a lost packet.
    pub latency: Duration,
    /// A publisher that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
}

impl Default for SrtSettings {
    fn default() -> Self {
        SrtSettings {
            ffmpeg: PathBuf::from("ffmpeg"),
            latency: Duration::from_millis(120),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The app and key a caller's stream id names: `KEY`, `live/KEY`, or SRT's access-control
/// form `#!::r=live/KEY,m=publish` (`m` other than `publish` is refused: this port only
/// ingests). A percent-encoded id is decoded first: ffmpeg 5 sends the `streamid` of an
/// `srt://` URL as written, and `#!::` has to be encoded in a URL.
pub fn parse_stream_id(stream_id: &str) -> Result<(String, String), &'static str> {
    let decoded = percent_encoding::percent_decode_str(stream_id)
        .decode_utf8()
        .map_err(|_| "the stream id is not UTF-8")?;
    let stream_id: &str = &decoded;
    let resource = if let Some(fields) = stream_id.strip_prefix("#!::") {
        let mut resource = None;
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("r", value)) => resource = Some(value),
                Some(("m", mode)) if mode != "publish" => {
                    return Err("this port only accepts publishers (m=publish)")
                }
                _ => {}
            }
        }
        resource.ok_or("the stream id names no resource (r=)")?
    } else {
        stream_id
    };
    let (app, key) = match resource.split_once('/') {
        Some((app, key)) => (app, key),
        None => ("live", resource),
    };
    if key.is_empty() {
        return Err("the stream id carries no stream key");
    }
    Ok((app.to_string(), key.to_string()))
}

/// A bound SRT ingest.
pub struct SrtIngest {
    pub local_addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Binds the SRT port and accepts publishers until `stop`; each publishes into `streams` after
/// `gate` named its stream.
pub async fn spawn_srt_listener(
    addr: SocketAddr,
    gate: Arc<dyn PublishGate>,
    streams: Arc<LiveStreams>,
    settings: SrtSettings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<SrtIngest> {
    let socket = UdpSocket::bind(addr).await?;
    let local_addr = socket.local_addr()?;
    let (mut listener, mut incoming) = SrtListener::builder()
        .socket(socket)
        .latency(settings.latency)
        .set(|options| options.session.peer_idle_timeout = settings.idle_timeout)
        .bind(local_addr)
        .await?;
    let task = tokio::spawn(async move {
        let requests = incoming.incoming();
        loop {
            let request = tokio::select! {
                request = requests.next() => request,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let Some(request) = request else { break };
            let (gate, streams, settings) =
                (Arc::clone(&gate), Arc::clone(&streams), settings.clone());
            tokio::spawn(async move {
                let peer = request.remote();
                if let Err(error) = serve(request, gate, streams, settings).await {
                    metrics::counter!("marquee_srt_refused_total").increment(1);
                    tracing::info!(%peer, %error, "srt connection ended");
                }
            });
        }
        listener.close().await;
    });
    Ok(SrtIngest { local_addr, task })
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

async fn refuse(
    request: ConnectionRequest,
    reason: ServerRejectReason,
    why: String,
) -> Result<(), ServeError> {
    request.reject(RejectReason::Server(reason)).await?;
    Err(ServeError::Refused(why))
}

async fn serve(
    request: ConnectionRequest,
    gate: Arc<dyn PublishGate>,
    streams: Arc<LiveStreams>,
    settings: SrtSettings,
) -> Result<(), ServeError> {
    let Some(stream_id) = request.stream_id().map(|id| id.as_str().to_string()) else {
        return refuse(
            request,
            ServerRejectReason::Unauthorized,
            "no stream id (the stream key)".into(),
        )
        .await;
    };
    let (app, key) = match parse_stream_id(&stream_id) {
        Ok(named) => named,
        Err(why) => return refuse(request, ServerRejectReason::BadRequest, why.into()).await,
    };
    let Some(stream) = gate.stream_for(&app, &key).await else {
        return refuse(
            request,
            ServerRejectReason::Unauthorized,
            "the stream key is not valid".into(),
        )
        .await;
    };
    let publisher = match streams.attach(&stream) {
        Ok(publisher) => publisher,
        Err(refusal) => {
            let reason = match refusal {
                StreamRefusal::AlreadyLive => ServerRejectReason::Conflict,
                StreamRefusal::Ended => ServerRejectReason::Notfound,
                StreamRefusal::AtCapacity => ServerRejectReason::Overload,
            };
            return refuse(request, reason, refusal.to_string()).await;
        }
    };
    let socket = request.accept(None).await?;
    metrics::counter!("marquee_srt_publishers_total").increment(1);
    match remux(socket, &publisher, &settings).await {
        Ok(Departure::Closed) => {
            publisher.finish();
            Ok(())
        }
        Ok(Departure::Dropped) => Ok(()),
        Err(problem) => {
            // What the publisher sends cannot be used: say why on the stream.
            if publisher.is_current() {
                streams.end(&stream, Some(problem.clone()));
            }
            Err(ServeError::Refused(problem))
        }
    }
}

/// How an SRT publisher that sent a usable stream went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// It closed its socket (an SRT shutdown): the show is over.
    Closed,
    /// It went silent or its remuxer stopped: it may come back within the grace.
    Dropped,
}

/// Pipes the caller's TS through `ffmpeg -c copy -f flv` into `publisher` until the caller
/// goes or the stream is ended under it. `Err` says why the stream cannot be used.
async fn remux(
    mut socket: SrtSocket,
    publisher: &Publisher,
    settings: &SrtSettings,
) -> Result<Departure, String> {
    let mut child = Command::new(&settings.ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            // ffmpeg holds its input back while it probes the streams, 5 s of it by default,
            // and the show starts only after that. 2 s still finds a keyframe (and with it the
            // picture size) in a caller that joins a 2-second GOP anywhere.
            "-analyzeduration",
            "2000000",
            "-f",
            "mpegts",
            "-i",
            "pipe:0",
            "-c",
            "copy",
            "-f",
            "flv",
            "-flvflags",
            "no_duration_filesize",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("the SRT remuxer cannot start: {error}"))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the SRT remuxer has no pipes".into());
    };
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = (&mut stderr)
            .take(16 * 1024)
            .read_to_string(&mut text)
            .await;
        text
    });
    // The caller's packets into ffmpeg; ends when the caller goes (or ffmpeg does).
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let silence_of_a_drop = settings.idle_timeout / 2;
    let feed = {
        let closed = Arc::clone(&closed);
        async move {
            // When the last packet was sent (its SRT timestamp on this host's clock), not when
            // this loop got to it: a loop running behind under load must not take the end of a
            // dropped caller's backlog for a close.
            let mut last_packet = std::time::Instant::now();
            let ended = loop {
                match socket.next().await {
                    Some(Ok((sent, packet))) => {
                        last_packet = sent;
                        metrics::counter!("marquee_srt_bytes_total").increment(packet.len() as u64);
                        if stdin.write_all(&packet).await.is_err() {
                            break false;
                        }
                    }
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            if ended && last_packet.elapsed() < silence_of_a_drop {
                closed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // Closing stdin lets ffmpeg write out what it holds and exit.
            drop(stdin);
        }
    };
    let read = async {
        let mut reader = FlvReader::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(read) => read,
            };
            reader.push(&buffer[..read]);
            while let Some(tag) = reader.next_tag().map_err(|error| error.to_string())? {
                if !publisher.is_current() {
                    return Ok(());
                }
                match tag.kind {
                    TagKind::Video => publisher.video(tag.timestamp, tag.body),
                    TagKind::Audio => publisher.audio(tag.timestamp, tag.body),
                    TagKind::Script => {}
                }
            }
        }
    };
    let fed = tokio::spawn(feed);
    let read: Result<(), String> = read.await;
    // ffmpeg is gone or the stream was ended under this publisher: stop feeding either way.
    fed.abort();
    let _ = child.start_kill();
    let status = child.wait().await;
    let errors = errors.await.unwrap_or_default();
    read?;
    // Set before stdin closed, so before ffmpeg could exit and end `read`.
    let departure = if closed.load(std::sync::atomic::Ordering::Relaxed) {
        Departure::Closed
    } else {
        Departure::Dropped
    };
    match status {
        Ok(status) if !status.success() && publisher.is_current() => {
            let reason = errors
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("the stream is not MPEG-TS with H.264")
                .trim()
                .to_string();
            // A caller that went away mid-packet is not a problem with the stream.
            if reason.is_empty() {
                Ok(departure)
            } else {
                Err(format!("the SRT stream cannot be read: {reason}"))
            }
        }
        _ => Ok(departure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_name_the_key_plainly_or_in_the_access_control_form() {
        let key = |id: &str| parse_stream_id(id).map(|(app, key)| format!("{app}/{key}"));
        assert_eq!(key("live_abc"), Ok("live/live_abc".into()));
        assert_eq!(key("live/live_abc"), Ok("live/live_abc".into()));
        assert_eq!(
            key("#!::r=live/live_abc,m=publish"),
            Ok("live/live_abc".into())
        );
        assert_eq!(key("#!::m=publish,r=live_abc"), Ok("live/live_abc".into()));
        assert_eq!(
            key("%23%21%3A%3Ar%3Dlive%2Flive_abc%2Cm%3Dpublish"),
            Ok("live/live_abc".into())
        );
        assert!(key("#!::r=live_abc,m=request").is_err(), "playback refused");
        assert!(key("#!::m=publish").is_err());
        assert!(key("live/").is_err());
        assert!(key("").is_err());
    }
}
