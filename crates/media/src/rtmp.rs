//! RTMP ingest: one connection, sans I/O ([`RtmpConnection`]), and the listener around it
//! ([`spawn_rtmp_listener`]).
//!
//! The protocol work (handshake, chunk streams, AMF commands) is `rml_rtmp`'s; what is ours is
//! what a public port needs around it: a deadline on the handshake, a cap on bytes before a
//! publish is accepted and on the chunk size a client may ask for, the stream key checked by the
//! platform before anything is accepted, and a connection that ends — never the process — on
//! anything it does not understand. The connection is a plain state machine fed bytes, so the
//! fuzz target (`fuzz/fuzz_targets/rtmp_ingest.rs`) drives exactly the code the listener runs.

use crate::streams::{LiveStreams, StreamRefusal};
use async_trait::async_trait;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Limits of one ingest connection.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// The handshake and the publish request must be done within this.
    pub setup_timeout: Duration,
    /// A publisher that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// Bytes a client may send before its publish is accepted (commands are small; a flood
    /// before authorisation is an attack).
    pub max_setup_bytes: usize,
    /// The largest chunk size a client may set (the protocol allows 2^31; encoders use 4 KiB to
    /// 64 KiB).
    pub max_chunk_size: u32,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_setup_bytes: 64 * 1024,
            max_chunk_size: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtmpError {
    #[error("bad handshake: {0}")]
    Handshake(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0} bytes before a publish was accepted")]
    SetupTooLarge(usize),
    #[error("chunk size {0} is beyond the limit")]
    ChunkSizeTooLarge(u32),
    /// `rml_rtmp` panicked on this input (0.8's chunk deserializer subtracts past zero when a
    /// header shrinks a message below what already arrived; found by the fuzz target). The
    /// connection is done: its session state cannot be trusted after it.
    #[error("the RTMP library failed on this input")]
    Library,
}

/// Runs a call into `rml_rtmp`, turning a panic into [`RtmpError::Library`].
fn contained<T>(call: impl FnOnce() -> Result<T, RtmpError>) -> Result<T, RtmpError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or(Err(RtmpError::Library))
}

/// What the bytes a connection received call for.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Bytes to send back.
    Send(Vec<u8>),
    /// The client asks to publish `stream_key` under `app`; answer with
    /// [`RtmpConnection::accept`] or [`RtmpConnection::reject`].
    PublishRequested {
        request_id: u32,
        app: String,
        stream_key: String,
    },
    Video {
        timestamp: u32,
        data: Bytes,
    },
    Audio {
        timestamp: u32,
        data: Bytes,
    },
    /// `@setDataFrame` metadata (resolution, frame rate, encoder), as the client sent it.
    Metadata,
    PublishFinished,
}

enum Stage {
    Handshake(Box<Handshake>),
    Session(Box<ServerSession>),
}

/// One RTMP connection as a state machine: bytes in, [`Incoming`] out.
pub struct RtmpConnection {
    stage: Stage,
    /// Set once the library failed: everything after is refused.
    broken: bool,
    limits: IngestLimits,
    /// Bytes received while no publish was accepted yet.
    setup_bytes: usize,
    publishing: bool,
}

impl RtmpConnection {
    pub fn new(limits: IngestLimits) -> RtmpConnection {
        RtmpConnection {
            stage: Stage::Handshake(Box::new(Handshake::new(PeerType::Server))),
            broken: false,
            limits,
            setup_bytes: 0,
            publishing: false,
        }
    }

    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Incoming>, RtmpError> {
        if self.broken {
            return Err(RtmpError::Library);
        }
        let received = contained(|| self.receive_unguarded(bytes));
        if received == Err(RtmpError::Library) {
            self.broken = true;
        }
        received
    }

    fn receive_unguarded(&mut self, bytes: &[u8]) -> Result<Vec<Incoming>, RtmpError> {
        if !self.publishing {
            self.setup_bytes += bytes.len();
            if self.setup_bytes > self.limits.max_setup_bytes {
                return Err(RtmpError::SetupTooLarge(self.setup_bytes));
            }
        }
        let mut out = Vec::new();
        match &mut self.stage {
            Stage::Handshake(handshake) => {
                match handshake
                    .process_bytes(bytes)
                    .map_err(|error| RtmpError::Handshake(format!("{error:?}")))?
                {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        if !response_bytes.is_empty() {
                            out.push(Incoming::Send(response_bytes));
                        }
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        if !response_bytes.is_empty() {
                            out.push(Incoming::Send(response_bytes));
                        }
                        let mut config = ServerSessionConfig::new();
                        config.chunk_size = 4096;
                        let (session, initial) = ServerSession::new(config)
                            .map_err(|error| RtmpError::Protocol(format!("{error:?}")))?;
                        self.stage = Stage::Session(Box::new(session));
                        self.absorb(initial, &mut out)?;
                        if !remaining_bytes.is_empty() {
                            out.extend(self.session_input(&remaining_bytes)?);
                        }
                    }
                }
            }
            Stage::Session(_) => out.extend(self.session_input(bytes)?),
        }
        Ok(out)
    }

    fn session_input(&mut self, bytes: &[u8]) -> Result<Vec<Incoming>, RtmpError> {
        let Stage::Session(session) = &mut self.stage else {
            return Ok(Vec::new());
        };
        let results = session
            .handle_input(bytes)
            .map_err(|error| RtmpError::Protocol(format!("{error:?}")))?;
        let mut out = Vec::new();
        self.absorb(results, &mut out)?;
        Ok(out)
    }

    fn absorb(
        &mut self,
        results: Vec<ServerSessionResult>,
        out: &mut Vec<Incoming>,
    ) -> Result<(), RtmpError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    out.push(Incoming::Send(packet.bytes))
                }
                ServerSessionResult::RaisedEvent(event) => self.event(event, out)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        event: ServerSessionEvent,
        out: &mut Vec<Incoming>,
    ) -> Result<(), RtmpError> {
        match event {
            ServerSessionEvent::ClientChunkSizeChanged { new_chunk_size }
                if new_chunk_size > self.limits.max_chunk_size =>
            {
                return Err(RtmpError::ChunkSizeTooLarge(new_chunk_size));
            }
            // Any application name connects; the stream key is what is checked.
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                let Stage::Session(session) = &mut self.stage else {
                    return Ok(());
                };
                let results = session
                    .accept_request(request_id)
                    .map_err(|error| RtmpError::Protocol(format!("{error:?}")))?;
                self.absorb(results, out)?;
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => out.push(Incoming::PublishRequested {
                request_id,
                app: app_name,
                stream_key,
            }),
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } if self.publishing => out.push(Incoming::Video {
                timestamp: timestamp.value,
                data,
            }),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } if self.publishing => out.push(Incoming::Audio {
                timestamp: timestamp.value,
                data,
            }),
            ServerSessionEvent::StreamMetadataChanged { .. } => out.push(Incoming::Metadata),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.publishing = false;
                out.push(Incoming::PublishFinished);
            }
            // Playback is not served over RTMP (viewers watch HLS or DASH).
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                out.extend(
                    self.reject(
                        request_id,
                        "NetStream.Play.Failed",
                        "playback is not served here",
                    )?
                    .into_iter()
                    .map(Incoming::Send),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Accepts a publish request: from now on media flows.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<Vec<u8>>, RtmpError> {
        if self.broken {
            return Err(RtmpError::Library);
        }
        contained(|| self.accept_unguarded(request_id))
    }

    fn accept_unguarded(&mut self, request_id: u32) -> Result<Vec<Vec<u8>>, RtmpError> {
        let Stage::Session(session) = &mut self.stage else {
            return Ok(Vec::new());
        };
        let results = session
            .accept_request(request_id)
            .map_err(|error| RtmpError::Protocol(format!("{error:?}")))?;
        self.publishing = true;
        let mut out = Vec::new();
        self.absorb(results, &mut out)?;
        Ok(sends(out))
    }

    /// Refuses a request with an `onStatus` error the encoder shows its user.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<Vec<u8>>, RtmpError> {
        if self.broken {
            return Err(RtmpError::Library);
        }
        contained(|| self.reject_unguarded(request_id, code, description))
    }

    fn reject_unguarded(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<Vec<u8>>, RtmpError> {
        let Stage::Session(session) = &mut self.stage else {
            return Ok(Vec::new());
        };
        let results = session
            .reject_request(request_id, code, description)
            .map_err(|error| RtmpError::Protocol(format!("{error:?}")))?;
        let mut out = Vec::new();
        self.absorb(results, &mut out)?;
        Ok(sends(out))
    }
}

fn sends(incoming: Vec<Incoming>) -> Vec<Vec<u8>> {
    incoming
        .into_iter()
        .filter_map(|item| match item {
            Incoming::Send(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// Who may publish: the platform's answer for a stream key.
#[async_trait]
pub trait PublishGate: Send + Sync + 'static {
    /// The stream (an event id) `stream_key` publishes to, or `None` when the key is not an
    /// event's current key.
    async fn stream_for(&self, app: &str, stream_key: &str) -> Option<String>;
}

/// Accepts RTMP connections on `listener` until `stop`; each publishes into `streams` after
/// `gate` named its stream.
pub fn spawn_rtmp_listener(
    listener: TcpListener,
    gate: Arc<dyn PublishGate>,
    streams: Arc<LiveStreams>,
    limits: IngestLimits,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.changed() => return,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let (gate, streams, limits) =
                        (Arc::clone(&gate), Arc::clone(&streams), limits.clone());
                    tokio::spawn(async move {
                        let _ = socket.set_nodelay(true);
                        if let Err(error) = serve(socket, gate, streams, limits).await {
                            metrics::counter!("marquee_rtmp_refused_total").increment(1);
                            tracing::info!(%peer, %error, "rtmp connection ended");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake and publish within the setup timeout")]
    SetupTimeout,
    #[error("idle past the timeout")]
    Idle,
    #[error("refused: {0}")]
    Refused(String),
}

async fn serve(
    mut socket: TcpStream,
    gate: Arc<dyn PublishGate>,
    streams: Arc<LiveStreams>,
    limits: IngestLimits,
) -> Result<(), ServeError> {
    let mut connection = RtmpConnection::new(limits.clone());
    let setup_deadline = tokio::time::Instant::now() + limits.setup_timeout;
    let mut buffer = vec![0u8; 16 * 1024];
    let mut publisher: Option<crate::streams::Publisher> = None;
    loop {
        let read = if publisher.is_none() {
            match tokio::time::timeout_at(setup_deadline, socket.read(&mut buffer)).await {
                Ok(read) => read?,
                Err(_) => return Err(ServeError::SetupTimeout),
            }
        } else {
            match tokio::time::timeout(limits.idle_timeout, socket.read(&mut buffer)).await {
                Ok(read) => read?,
                Err(_) => return Err(ServeError::Idle),
            }
        };
        if read == 0 {
            return Ok(());
        }
        if let Some(current) = &publisher {
            if !current.is_current() {
                let problem = streams.problem(current.stream()).unwrap_or_default();
                return Err(ServeError::Refused(format!(
                    "the stream was ended: {problem}"
                )));
            }
        }
        let incoming = connection.receive(&buffer[..read])?;
        for item in incoming {
            match item {
                Incoming::Send(bytes) => socket.write_all(&bytes).await?,
                Incoming::PublishRequested {
                    request_id,
                    app,
                    stream_key,
                } => {
                    if publisher.is_some() {
                        for bytes in connection.reject(
                            request_id,
                            "NetStream.Publish.BadName",
                            "this connection is publishing already",
                        )? {
                            socket.write_all(&bytes).await?;
                        }
                        continue;
                    }
                    let refusal = match gate.stream_for(&app, &stream_key).await {
                        None => Err("the stream key is not valid".to_string()),
                        Some(stream) => streams.attach(&stream).map_err(|refusal| match refusal {
                            StreamRefusal::AlreadyLive => {
                                "another publisher is live on this key".to_string()
                            }
                            StreamRefusal::Ended => "the stream has ended".to_string(),
                            StreamRefusal::AtCapacity => {
                                "every transcoder of this server is busy; try later".to_string()
                            }
                        }),
                    };
                    match refusal {
                        Ok(attached) => {
                            for bytes in connection.accept(request_id)? {
                                socket.write_all(&bytes).await?;
                            }
                            publisher = Some(attached);
                        }
                        Err(reason) => {
                            for bytes in connection.reject(
                                request_id,
                                "NetStream.Publish.BadName",
                                &reason,
                            )? {
                                socket.write_all(&bytes).await?;
                            }
                            let _ = socket.flush().await;
                            return Err(ServeError::Refused(reason));
                        }
                    }
                }
                Incoming::Video { timestamp, data } => {
                    if let Some(publisher) = &publisher {
                        publisher.video(timestamp, data);
                    }
                }
                Incoming::Audio { timestamp, data } => {
                    if let Some(publisher) = &publisher {
                        publisher.audio(timestamp, data);
                    }
                }
                Incoming::Metadata => {}
                Incoming::PublishFinished => {
                    if let Some(publisher) = publisher.take() {
                        publisher.finish();
                    }
                    return Ok(());
                }
            }
        }
    }
}
