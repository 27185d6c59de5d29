//! Push channels: named streams of messages that clients follow live and resume after a drop.
//!
//! Every message on a channel carries an **offset** that grows by one per message. A channel
//! keeps a bounded history (by count and by age), so a client that reconnects with the last
//! offset it saw gets exactly what it missed, in order, with no duplicates; when the history no
//! longer reaches back that far, the subscription starts with a [`Start::Reset`] so the client
//! knows to refetch its snapshot.
//!
//! Offsets come from one of two places:
//! - [`PushHub::publish`] numbers messages itself (user notifications, queue positions);
//! - [`PushHub::publish_at`] takes the offset from the caller, for channels whose numbering is
//!   owned by the store (seat changes: the seat snapshot's `version` is the offset of the last
//!   change it includes, so a client loads the snapshot and subscribes from its version without a
//!   gap). Publishing an offset the channel already has is a no-op, which is what lets every node
//!   relay the same change stream into a shared hub without duplicates.
//!
//! A message is serialised to its wire form (`{"channel","offset","type","data"}`) once, when it
//! is published, and shared by reference with every subscriber. Fan-out to the subscribers of one
//! node rides a `tokio::sync::broadcast` ring per channel: its capacity bounds the memory a
//! channel holds for its subscribers, and a subscriber that falls a whole ring behind is told it
//! lagged (the transports disconnect it as a slow consumer) instead of stalling the others.
//!
//! Two implementations pass one conformance suite (`tests/conformance.rs`):
//! - [`InProcessHub`] for one node;
//! - [`RedisHub`] for many, on one Redis server or a Redis Cluster: a Redis stream per channel is
//!   the history, a Lua script assigns the offset and appends in one step, and sharded pub/sub
//!   carries each message to the nodes that have subscribers on its channel (and only those),
//!   which fan it out to them through the same local rings.
//!
//! **Boundary:** channels are validated names and messages are JSON; this crate knows nothing of
//! seats, users or HTTP. Who may subscribe to what is the caller's business.

mod channel;
mod local;
mod redis_hub;

pub use channel::{Channel, ChannelError, ChannelKind};
pub use local::InProcessHub;
pub use redis_hub::RedisHub;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// One published message, serialised once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub channel: Channel,
    pub offset: u64,
    /// The message type (`seats`, `order.confirmed`, …), also the SSE `event:` name.
    pub kind: String,
    /// `{"channel","offset","type","data"}` as sent on every transport.
    pub json: Bytes,
}

impl PushMessage {
    pub fn new(channel: Channel, offset: u64, kind: &str, data: &serde_json::Value) -> Self {
        let json = wire(&channel, offset, kind, data);
        PushMessage {
            channel,
            offset,
            kind: kind.to_string(),
            json,
        }
    }

    /// The explicit signal that history no longer covers what the client missed: refetch the
    /// snapshot, then continue from `offset`.
    pub fn reset(channel: Channel, offset: u64) -> Self {
        Self::new(channel, offset, "reset", &serde_json::json!({}))
    }

    pub fn json_str(&self) -> &str {
        // Built by `wire` from serde_json output, so always UTF-8.
        std::str::from_utf8(&self.json).unwrap_or("{}")
    }
}

/// The wire form around the offset, so a backend that assigns offsets (a Redis script) can
/// splice it in without parsing: `head + offset + tail` is the message's JSON.
pub(crate) fn wire_parts(
    channel: &Channel,
    kind: &str,
    data: &serde_json::Value,
) -> (String, String) {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    (
        format!(
            "{{\"channel\":{},\"data\":{},\"offset\":",
            quote(channel.as_str()),
            data
        ),
        format!(",\"type\":{}}}", quote(kind)),
    )
}

fn wire(channel: &Channel, offset: u64, kind: &str, data: &serde_json::Value) -> Bytes {
    let (head, tail) = wire_parts(channel, kind, data);
    Bytes::from(format!("{head}{offset}{tail}"))
}

/// How a subscription begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Live from now; nothing replayed. `offset` is the channel's last offset.
    Live { offset: u64 },
    /// The messages after the requested offset, oldest first, then live.
    Replay(Vec<Arc<PushMessage>>),
    /// History does not reach back to the requested offset (or it is from the future): the
    /// client must refetch its snapshot; live messages follow `offset`.
    Reset { offset: u64 },
}

/// A subscription: what to send first, then the live ring. Live messages at or below the last
/// offset of `start` may appear (a replay read races the ring on Redis): skip them by offset.
pub struct Subscription {
    pub channel: Channel,
    pub start: Start,
    pub live: broadcast::Receiver<Arc<PushMessage>>,
}

/// Sizes of history and buffers.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Messages kept per channel for resume.
    pub history_len: usize,
    /// How long a message stays resumable.
    pub history_age: Duration,
    /// Messages a subscriber may fall behind before it is a slow consumer.
    pub subscriber_buffer: usize,
    /// Channels one node tracks at most. Past it, channels nobody follows are forgotten first
    /// (oldest use first); a new subscription when every channel is followed is refused with
    /// [`PushError::TooManyChannels`], so memory stays bounded whatever names clients make up.
    pub max_channels: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            history_len: 1_000,
            history_age: Duration::from_secs(600),
            subscriber_buffer: 1_024,
            max_channels: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push backend: {0}")]
    Backend(String),
    /// The node tracks as many channels as it may, every one of them followed.
    #[error("this node follows {limit} channels already")]
    TooManyChannels { limit: usize },
}

impl From<redis::RedisError> for PushError {
    fn from(error: redis::RedisError) -> Self {
        PushError::Backend(error.to_string())
    }
}

#[async_trait]
pub trait PushHub: Send + Sync + 'static {
    /// Appends a message numbered by the hub; returns its offset.
    async fn publish(
        &self,
        channel: &Channel,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<u64, PushError>;

    /// Like [`PushHub::publish`], but at most once per `key` (for a day): every node may relay
    /// the same change, and the hub keeps the first. Returns `None` for a repeat. A key need only
    /// be unique on its channel (the Redis hub keeps the marks per channel).
    async fn publish_unique(
        &self,
        channel: &Channel,
        key: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<Option<u64>, PushError>;

    /// Appends a message at an offset the caller owns. Returns false (and does nothing) when the
    /// channel already has that offset. An offset beyond the next one leaves a gap that history
    /// cannot cover: subscribers resuming from before it get a reset.
    async fn publish_at(
        &self,
        channel: &Channel,
        offset: u64,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<bool, PushError>;

    /// Tells the hub that a caller-numbered channel is at `offset` already (its owner knows; the
    /// hub may have restarted). Does nothing when the hub is there or beyond.
    async fn seed(&self, channel: &Channel, offset: u64) -> Result<(), PushError>;

    /// Channels of `kind` with a live subscriber on this node (the waiting room counts a fan who
    /// listens to their `queue:{token}` channel as present, and sends them position updates).
    fn listened(&self, kind: ChannelKind) -> Vec<Channel>;

    /// Channels this node's hub tracks right now (state kept in memory: history, offsets,
    /// subscribers' rings). Bounded by [`HubLimits::max_channels`].
    fn channel_count(&self) -> usize;

    /// Subscribes from `since` (the last offset the client has), or live when `None`.
    async fn subscribe(
        &self,
        channel: &Channel,
        since: Option<u64>,
    ) -> Result<Subscription, PushError>;
}
