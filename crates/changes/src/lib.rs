//! The change stream as a node's followers see it: the catalog's outbox, in order.
//!
//! A follower (the search indexer, the push change feed, the caches) asks a [`ChangeFeed`] for
//! the changes after the last position it applied, and waits a little when there are none.
//!
//! - [`OutboxFeed`] (embedded) reads the store's outbox directly. It waits on the store's
//!   change signal where the store has one (PostgreSQL's `LISTEN/NOTIFY`: a change committed
//!   on any node wakes every follower at once), polling slowly as a fallback, and polls
//!   otherwise. One node over one database needs nothing more.
//! - [`JetStreamFeed`] (scale-out) follows a NATS JetStream stream that one [`Relay`] per
//!   cluster fills from the PostgreSQL outbox. Without it, every follower of every node polls
//!   the database (N nodes × 2 followers × 10–40 queries a second, whether or not anything
//!   changed); with it, a change reaches each node as one push.
//!
//! ## Why the outbox stays the source of truth
//!
//! A node keeps the stream's live edge in memory (a bounded window). A follower behind that
//! window (a node that was down, a new node, a search index rebuilt from an old commit) catches
//! up from the store's outbox and then joins the window, so the stream needs no retention
//! guarantees for correctness: it carries the live edge; the database keeps the history. While
//! NATS is unreachable, followers read the outbox directly (as the embedded feed does) and return
//! to the stream when it is back; nothing stalls and nothing is skipped, because both sources
//! are the same ordered sequence of positions.
//!
//! ## Exactly once into the stream
//!
//! The relay publishes each outbox record as one message whose `Nats-Msg-Id` is its position,
//! and with `Nats-Expected-Last-Sequence` set to the stream sequence it last wrote. JetStream
//! refuses a message whose expectation is stale, so two relays (a lease that expired under a
//! paused process, say) cannot interleave: the loser re-reads the stream's tail and carries on
//! from there. The message id de-duplicates a publish retried after a lost acknowledgement. A
//! relay that restarts reads the position of the stream's last message and continues after it.
//! Only one relay runs at a time anyway: it holds a lease (the `lease` block: on Redis when the
//! cluster has Redis) and stops relaying the moment it cannot extend it.
//!
//! Each message also carries `Marquee-Previous`, the position of the record before it, so a
//! node can tell a gap-free window (every position between two records is absent from the
//! outbox itself, not lost) from a jump (it re-subscribed somewhere else, or the stream was
//! trimmed) and fall back to the store for the part it cannot vouch for.
//!
//! Why `async-nats` and not a hand-written client: it is the NATS maintainers' own client, with
//! reconnection and ordered consumers (re-created at the next stream sequence after a server
//! restart) built in; those are the hard parts.

mod jetstream;

pub use crate::jetstream::{
    connect_nats, ensure_stream, relay_batch, spawn_relay, JetStreamFeed, RelaySettings,
    StreamTail, DUPLICATE_WINDOW,
};
pub use jetstream::read_tail;

use async_trait::async_trait;
use marquee_store::{CatalogStore, ChangePosition, ChangeRecord, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ChangeFeedError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error(
        "the stream {stream} has relayed position {stream_position}, beyond the database's newest \
         ({database_position}): it belongs to another database"
    )]
    ForeignStream {
        stream: String,
        stream_position: ChangePosition,
        database_position: ChangePosition,
    },
}

impl ChangeFeedError {
    pub(crate) fn nats(error: impl std::fmt::Display) -> ChangeFeedError {
        ChangeFeedError::Nats(error.to_string())
    }
}

/// What a follower reads: the outbox's records in position order.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// `"outbox"` or `"jetstream"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Records with a position greater than `after`, oldest first, at most `limit`. When there
    /// are none yet, waits up to `wait` for the first before answering with none.
    async fn read(
        &self,
        after: ChangePosition,
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ChangeRecord>, ChangeFeedError>;

    /// The newest committed position (from the database, which is the truth).
    async fn latest(&self) -> Result<ChangePosition, ChangeFeedError>;

    /// Answers when the feed's own transport is up (the store has its own check).
    async fn check(&self) -> Result<(), ChangeFeedError>;
}

/// The embedded feed: the store's outbox, polled.
pub struct OutboxFeed {
    store: Arc<dyn CatalogStore>,
    poll: Duration,
}

impl OutboxFeed {
    /// Polls every `poll` while a reader waits.
    pub fn new(store: Arc<dyn CatalogStore>, poll: Duration) -> OutboxFeed {
        OutboxFeed { store, poll }
    }
}

#[async_trait]
impl ChangeFeed for OutboxFeed {
    fn backend(&self) -> &'static str {
        "outbox"
    }

    async fn read(
        &self,
        after: ChangePosition,
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ChangeRecord>, ChangeFeedError> {
        poll_store(self.store.as_ref(), after, limit, wait, self.poll).await
    }

    async fn latest(&self) -> Result<ChangePosition, ChangeFeedError> {
        Ok(self.store.latest_change().await?)
    }

    async fn check(&self) -> Result<(), ChangeFeedError> {
        Ok(())
    }
}

/// How long a follower of a store that signals new changes waits between reads when no signal
/// comes: only a notification lost with its connection is waited for this long.
pub const SIGNALLED_POLL: Duration = Duration::from_millis(250);

pub(crate) async fn poll_store(
    store: &dyn CatalogStore,
    after: ChangePosition,
    limit: u32,
    wait: Duration,
    poll: Duration,
) -> Result<Vec<ChangeRecord>, ChangeFeedError> {
    let deadline = Instant::now() + wait;
    let mut signal = store.change_signal();
    loop {
        // Marked seen before the read, so a change that commits during the read wakes the
        // next wait instead of being slept through.
        if let Some(signal) = signal.as_mut() {
            signal.borrow_and_update();
        }
        let records = store.read_changes(after, limit).await?;
        let now = Instant::now();
        if !records.is_empty() || now >= deadline {
            return Ok(records);
        }
        wait_for_change(signal.as_mut(), poll, deadline - now).await;
    }
}

/// Waits for the store's signal, or `poll` without one; never longer than `limit`.
pub(crate) async fn wait_for_change(
    signal: Option<&mut tokio::sync::watch::Receiver<u64>>,
    poll: Duration,
    limit: Duration,
) {
    match signal {
        Some(signal) => {
            let nap = SIGNALLED_POLL.max(poll).min(limit);
            if let Ok(Err(_)) = tokio::time::timeout(nap, signal.changed()).await {
                // The store is gone; fall back to polling rather than spin.
                tokio::time::sleep(poll.min(limit)).await;
            }
        }
        None => tokio::time::sleep(poll.min(limit)).await,
    }
}
