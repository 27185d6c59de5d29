//! The catalog store: users, venues, seat maps and events, and the **outbox** — an ordered record
//! of every change, appended in the same transaction as the change itself. Search, push and caches
//! follow the catalog by reading the outbox from a position, so they never see a change that was
//! rolled back and never miss one that was committed.
//!
//! Two engines: [`SqliteStore`] (the embedded default, one file in the data dir) and
//! [`PostgresStore`] (the scale-out source of truth). They differ where the engines do — how
//! writers are kept apart and how outbox positions come to be in commit order (SQLite: one
//! writer; PostgreSQL: numbered after commit, below) — and each engine's module says how, with
//! no runtime test of which engine it is. Everything else is written once, in `common`, so the
//! engines cannot drift apart in what they store or announce: the catalog and inventory
//! operations, generic over a crate-private engine trait (`common::engine`: a write
//! transaction that appends to the outbox and commits, numbering the outbox before it is read,
//! and the booking operations each engine runs its own way), the reads (one SQL text), turning
//! rows into domain values, and the payloads of the outbox. The schema keeps to a dialect both
//! accept (times as Unix milliseconds, JSON as text), with a migration set per engine, and one
//! conformance suite (`tests/conformance.rs`) runs against both.
//!
//! Both engines still talk through `sqlx::Any`: on PostgreSQL the jobs queue keeps its tables in
//! the catalog's database and shares the store's pool, an `AnyPool`, so that a node opens no
//! more connections than `--database-max-connections`. A typed `PgPool` needs the jobs queue to
//! take one too.
//!
//! [`SqlCatalogStore`] opens the engine a URL names (`sqlite:…` or `postgres://…`). It is an enum
//! over the two engines rather than an `Arc<dyn CatalogStore>` because the node's start-up needs
//! more than the trait: the pool the jobs share ([`SqlCatalogStore::pool`]) and closing it, which
//! are not catalog operations and have no place on the trait. The trait methods pass each call
//! on to the engine; the set of engines is closed, so a third one is a compile error at every
//! `match`, not a missed branch.
//!
//! ## Outbox positions on PostgreSQL
//!
//! Positions must be gap-free and in one order every follower agrees on, and a follower at
//! position P must never find a new change at or below P. An identity column gives neither
//! (values are handed out before commit, so 8 can commit before 7, and a rollback leaves a
//! hole), and serialising appends under one advisory lock held to commit serialised every write
//! of the cluster. So positions are numbered **after commit**:
//!
//! - A writer inserts its outbox rows with `position` NULL and `txid = pg_current_xact_id()`,
//!   and `pg_notify('marquee_outbox')`, which PostgreSQL delivers at commit. It takes no lock
//!   other writers take; seat changes no longer bump a counter on the event row either.
//! - The assigner, `outbox_assign()` (migration 0006), numbers rows after they commit. It takes
//!   `LOCK TABLE outbox_assigner IN EXCLUSIVE MODE` (a table nobody writes; only the assigner
//!   locks it), then, in a snapshot taken after the lock, numbers every committed row without a
//!   position in `(txid, id)` order, consecutively after `MAX(position)`, and gives each seat
//!   change the next **seat version** of its event (also written into its payload's `version`).
//!   The lock serialises assigners of every node, and each one's snapshot includes the numbers
//!   of the one before, so no row is numbered twice and no number is skipped. A row committed
//!   late is numbered by the next assigner, after everything numbered before it; numbers never
//!   change once given. The assigner needs no `pg_snapshot_xmin` horizon: it only ever sees
//!   committed rows, and the order is whatever it numbers, so a long transaction elsewhere in
//!   the cluster does not hold it back (only a writer's own uncommitted rows wait, for its
//!   commit).
//! - Every read of the outbox's order on PostgreSQL (`read_changes`, `latest_change`,
//!   `seat_version`, `seat_snapshot`) runs the assigner first ("assign, then read"): it is
//!   idempotent, costs one index probe when there is nothing to number, and a caller that has
//!   seen its write commit reads it numbered. The relay and every follower wake on the
//!   notification (`CatalogStore::change_signal`) and poll slowly only as a fallback.
//! - **Seat snapshots.** A snapshot's `version` must be the seat version of the last change it
//!   includes. It is read in a REPEATABLE READ transaction; when that snapshot sees no
//!   unnumbered seat change of the event, the newest seat version it sees is the answer (a
//!   change it does not see commits later and is numbered above it). Otherwise it is read
//!   again in a REPEATABLE READ transaction that takes the assigner's lock before its first
//!   query (`LOCK TABLE` is not a query, so the snapshot is taken after it),
//!   runs the assigner in that snapshot (numbering every change the snapshot sees) and reads
//!   the seats and the newest seat version in the same snapshot: every change it includes has a
//!   version ≤ `version`, and every change it does not include commits after its snapshot and is
//!   numbered by a later assigner, above it. Seat versions stay dense per event (1, 2, 3…),
//!   because push channels treat a jump in offsets as lost history.
//!
//! Failure modes: the assigner is one short transaction at a time for the whole cluster (it
//! bounds the *numbering* rate, not the commit rate: one assigner run numbers everything
//! committed since the last). A writer that keeps its transaction open delays only its own
//! changes. `NOTIFY` takes a database-wide lock in its commit, so notifying commits queue
//! briefly on each other's commit record; a lost notification (the listening connection
//! dropped) is covered by the followers' slow poll. A row whose transaction died is never
//! numbered, leaving no hole.
//!
//! On SQLite, the booking hot path's writes skip `sqlx` for `rusqlite` on one writer thread that
//! commits them in groups: `sqlx-sqlite` hands every statement to a worker thread and back, which
//! under load kept SQLite's single write lock held across run-queue waits (see `sqlite::writer`).
//! Both crates link the same `libsqlite3-sys`, so `rusqlite` stays on the version `sqlx` uses.
//!
//! **Boundary:** this crate knows SQL and the domain types; it knows nothing of HTTP or JSON wire
//! formats, and it does not validate — it stores values the domain already validated.

mod changes;
mod common;
mod error;
mod inventory;
mod postgres;
mod sql;
mod sqlite;

pub use changes::{ChangeKind, ChangePosition, ChangeRecord, EntityKind};
pub use error::StoreError;
pub use inventory::{CheckIn, InventoryStore, OrderHistoryEntry, SeatSnapshot, StoredResponse};
pub use postgres::{PostgresStore, WriteBatchStats};
pub use sql::{redact_url, Backend, SqlCatalogStore, StoreOptions, StoredSigningKey};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use marquee_domain::{Email, Event, EventId, EventStatus, User, UserId, Venue, VenueId};

/// A user together with the password hash, which only login needs to see.
#[derive(Debug, Clone)]
pub struct StoredCredentials {
    pub user: User,
    pub password_hash: String,
}

/// Which venues to list, in id (creation) order after an optional cursor.
#[derive(Debug, Clone, Default)]
pub struct VenueQuery {
    pub owner: Option<UserId>,
    pub after: Option<VenueId>,
    pub limit: u32,
}

/// Which events to list, in id (creation) order after an optional cursor.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub owner: Option<UserId>,
    pub status: Option<EventStatus>,
    pub after: Option<EventId>,
    pub limit: u32,
}

/// An organizer's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub organizer_id: UserId,
    /// Checked against the address policy when registered and again at every delivery.
    pub url: String,
    /// The event types it receives (`order.confirmed`, …).
    pub events: Vec<String>,
    pub secret: String,
    pub description: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An event's live stream as the catalog keeps it (the media itself lives on the ingest node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub event_id: EventId,
    /// `idle`, `live` or `ended`.
    pub status: String,
    /// Why the stream is not playing as sent (audio only, an unsupported codec, no transcoder
    /// free), when something is wrong.
    pub problem: Option<String>,
    /// Status changes so far: the offset of the status on `event:{id}:stream`.
    pub version: i64,
    pub key_issued_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// One recorded show, an object in blob storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub event_id: EventId,
    pub object_key: String,
    pub bytes: i64,
    pub duration_ms: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
}

/// The catalog. Every mutating method appends to the outbox in the same transaction (webhook
/// endpoints excepted: they are an organizer's settings, which no follower reads).
#[async_trait]
pub trait CatalogStore: InventoryStore + Send + Sync + 'static {
    /// Which engine answers, for `/readyz` and logs.
    fn backend(&self) -> Backend;

    /// Answers when the engine can run a query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Fails with [`StoreError::EmailTaken`] when another account has the email.
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    async fn credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError>;

    async fn create_venue(&self, venue: &Venue) -> Result<(), StoreError>;
    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError>;
    async fn list_venues(&self, query: &VenueQuery) -> Result<Vec<Venue>, StoreError>;

    async fn create_event(&self, event: &Event) -> Result<(), StoreError>;
    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError>;
    /// Writes `event` over the stored row if the stored version is still `event.version`
    /// (optimistic locking) and returns what was stored, with the version one higher.
    /// Fails with [`StoreError::VersionConflict`] when someone else wrote first.
    async fn update_event(&self, event: &Event, change: ChangeKind) -> Result<Event, StoreError>;
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;
    /// How many events there are, of one status or all (for progress of a rebuild).
    async fn count_events(&self, status: Option<EventStatus>) -> Result<u64, StoreError>;

    /// Changes with a position greater than `after`, oldest first, at most `limit`.
    async fn read_changes(
        &self,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<ChangeRecord>, StoreError>;
    /// The position of the newest change, or zero when there is none.
    async fn latest_change(&self) -> Result<ChangePosition, StoreError>;
    /// Changes whenever the outbox may have grown (a change committed on any node), for
    /// followers to wait on rather than poll fast; `None` when the engine has no such signal.
    /// A hint: a follower still polls, slowly, in case a signal was lost.
    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    async fn create_webhook(&self, webhook: &WebhookEndpoint) -> Result<(), StoreError>;
    async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// An organizer's endpoints, oldest first.
    async fn webhooks_of(&self, organizer: &UserId) -> Result<Vec<WebhookEndpoint>, StoreError>;
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;

    /// Gives `event` a new stream key (by its SHA-256); the old key stops working and the
    /// stream is idle again. Records a `stream.status` change.
    async fn issue_stream_key(
        &self,
        event: &EventId,
        key_hash: &str,
    ) -> Result<StreamRecord, StoreError>;
    /// The event whose current key hashes to `key_hash`.
    async fn stream_by_key_hash(&self, key_hash: &str) -> Result<Option<EventId>, StoreError>;
    async fn stream(&self, event: &EventId) -> Result<Option<StreamRecord>, StoreError>;
    /// Moves the stream to `status` and records a `stream.status` change; a write that would
    /// not change status or problem is skipped. `NotFound` if the event has no stream key.
    async fn set_stream_status(
        &self,
        event: &EventId,
        status: &str,
        problem: Option<&str>,
    ) -> Result<StreamRecord, StoreError>;
    /// True when `user` has a confirmed (not refunded) order for `event`.
    async fn holds_ticket(&self, user: &UserId, event: &EventId) -> Result<bool, StoreError>;
    async fn add_recording(&self, recording: &Recording) -> Result<(), StoreError>;
    async fn recordings_of(&self, event: &EventId) -> Result<Vec<Recording>, StoreError>;
}
