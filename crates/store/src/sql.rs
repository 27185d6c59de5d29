//! [`SqlCatalogStore`]: opens the engine a database URL names and answers as it.
//!
//! Callers that only read and write the catalog hold it as `Arc<dyn CatalogStore>`; the node's
//! start-up keeps the concrete type for the handful of things that are not catalog operations
//! (the connection pool the jobs share on PostgreSQL, closing the pool).

use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;
use crate::{
    CatalogStore, ChangeKind, ChangePosition, ChangeRecord, CheckIn, EventQuery, InventoryStore,
    OrderHistoryEntry, Recording, SeatSnapshot, StoreError, StoredCredentials, StoredResponse,
    StreamRecord, VenueQuery, WebhookEndpoint,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{
    Email, Event, EventId, EventStatus, Hold, HoldId, HoldStatus, Order, OrderId, TicketId, User,
    UserId, Venue, VenueId,
};
use sqlx::AnyPool;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub(crate) fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// Keeps a URL's scheme and host but never its password, so it can appear in errors and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// PostgreSQL: booking write batches in flight at once per node (see `postgres::batch`).
    pub write_batches: usize,
    /// PostgreSQL: how long a session of this node may sit idle inside a transaction before
    /// the server ends it (`idle_in_transaction_session_timeout`). A node cut off mid-transaction
    /// looks quiet, not dead, to the server, and its open transaction would keep its row locks
    /// from every other node until the network heals.
    pub idle_transaction_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            write_batches: 4,
            idle_transaction_timeout: Duration::from_secs(5),
        }
    }
}

/// A row of `signing_keys`. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub purpose: String,
    pub id: String,
    /// The key's root, hex.
    pub secret: String,
    pub derivation: String,
    /// Unix milliseconds, like the two below.
    pub created_at: i64,
    pub active_from: i64,
    pub retire_at: Option<i64>,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("purpose", &self.purpose)
            .field("id", &self.id)
            .field("secret", &"***")
            .field("derivation", &self.derivation)
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

/// The catalog on whichever engine its URL names; see the crate documentation for why this is
/// an enum.
pub enum SqlCatalogStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl SqlCatalogStore {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and applies migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        Ok(match Backend::of_url(url)? {
            Backend::Sqlite => SqlCatalogStore::Sqlite(SqliteStore::connect(url, options).await?),
            Backend::Postgres => {
                SqlCatalogStore::Postgres(PostgresStore::connect(url, options).await?)
            }
        })
    }

    /// The connection pool, for blocks that keep their tables in the catalog's PostgreSQL
    /// database (the jobs), so a node opens one pool there, not one per block.
    pub fn pool(&self) -> AnyPool {
        match self {
            SqlCatalogStore::Sqlite(store) => store.pool(),
            SqlCatalogStore::Postgres(store) => store.pool(),
        }
    }

    /// Every signing key of the cluster (see `signing_keys` in the migrations), by purpose and
    /// id.
    pub async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT purpose, id, secret, derivation, created_at, active_from, retire_at \
             FROM signing_keys ORDER BY purpose, created_at, id",
        )
        .fetch_all(&self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                use sqlx::Row;
                Ok(StoredSigningKey {
                    purpose: row.try_get("purpose")?,
                    id: row.try_get("id")?,
                    secret: row.try_get("secret")?,
                    derivation: row.try_get("derivation")?,
                    created_at: row.try_get("created_at")?,
                    active_from: row.try_get("active_from")?,
                    retire_at: row.try_get("retire_at")?,
                })
            })
            .collect()
    }

    /// Adds a key unless one with its purpose and id exists; true when this call added it.
    /// Nodes bootstrapping at once all insert `k1` and read the keys back, so they converge
    /// on the one insert that won; two rotations racing for one id leave one winner too.
    pub async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signing_keys \
             (purpose, id, secret, derivation, created_at, active_from, retire_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (purpose, id) DO NOTHING",
        )
        .bind(&key.purpose)
        .bind(&key.id)
        .bind(&key.secret)
        .bind(&key.derivation)
        .bind(key.created_at)
        .bind(key.active_from)
        .bind(key.retire_at)
        .execute(&self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets when the key stops verifying; an earlier retirement already set is kept (a key
    /// never comes back). True when the key exists.
    pub async fn retire_signing_key(
        &self,
        purpose: &str,
        id: &str,
        retire_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retire_at = $1 \
             WHERE purpose = $2 AND id = $3 AND (retire_at IS NULL OR retire_at > $1)",
        )
        .bind(retire_at)
        .bind(purpose)
        .bind(id)
        .execute(&self.pool())
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let exists = sqlx::query("SELECT id FROM signing_keys WHERE purpose = $1 AND id = $2")
            .bind(purpose)
            .bind(id)
            .fetch_optional(&self.pool())
            .await?;
        Ok(exists.is_some())
    }

    /// Closes the connection pool, waiting for connections in use to come back.
    /// How the booking writes were batched (PostgreSQL; SQLite's writer thread batches by
    /// itself and keeps no count).
    pub fn write_batch_stats(&self) -> Option<crate::WriteBatchStats> {
        match self {
            SqlCatalogStore::Sqlite(_) => None,
            SqlCatalogStore::Postgres(store) => Some(store.write_batch_stats()),
        }
    }

    pub async fn close(&self) {
        match self {
            SqlCatalogStore::Sqlite(store) => store.close().await,
            SqlCatalogStore::Postgres(store) => store.close().await,
        }
    }

    /// The engine, for the trait methods below, which only pass calls on.
    fn engine(&self) -> &dyn CatalogStore {
        match self {
            SqlCatalogStore::Sqlite(store) => store,
            SqlCatalogStore::Postgres(store) => store,
        }
    }
}

#[async_trait]
impl CatalogStore for SqlCatalogStore {
    fn backend(&self) -> Backend {
        self.engine().backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.engine().ping().await
    }

    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        self.engine().create_user(user, password_hash).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.engine().user(id).await
    }

    async fn credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        self.engine().credentials_by_email(email).await
    }

    async fn create_venue(&self, venue: &Venue) -> Result<(), StoreError> {
        self.engine().create_venue(venue).await
    }

    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError> {
        self.engine().venue(id).await
    }

    async fn list_venues(&self, query: &VenueQuery) -> Result<Vec<Venue>, StoreError> {
        self.engine().list_venues(query).await
    }

    async fn create_event(&self, event: &Event) -> Result<(), StoreError> {
        self.engine().create_event(event).await
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.engine().event(id).await
    }

    async fn update_event(&self, event: &Event, change: ChangeKind) -> Result<Event, StoreError> {
        self.engine().update_event(event, change).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.engine().list_events(query).await
    }

    async fn count_events(&self, status: Option<EventStatus>) -> Result<u64, StoreError> {
        self.engine().count_events(status).await
    }

    async fn read_changes(
        &self,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        self.engine().read_changes(after, limit).await
    }

    async fn latest_change(&self) -> Result<ChangePosition, StoreError> {
        self.engine().latest_change().await
    }

    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.engine().change_signal()
    }

    async fn create_webhook(&self, webhook: &WebhookEndpoint) -> Result<(), StoreError> {
        self.engine().create_webhook(webhook).await
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.engine().webhook(id).await
    }

    async fn webhooks_of(&self, organizer: &UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.engine().webhooks_of(organizer).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        self.engine().delete_webhook(id).await
    }

    async fn issue_stream_key(
        &self,
        event: &EventId,
        key_hash: &str,
    ) -> Result<StreamRecord, StoreError> {
        self.engine().issue_stream_key(event, key_hash).await
    }

    async fn stream_by_key_hash(&self, key_hash: &str) -> Result<Option<EventId>, StoreError> {
        self.engine().stream_by_key_hash(key_hash).await
    }

    async fn stream(&self, event: &EventId) -> Result<Option<StreamRecord>, StoreError> {
        self.engine().stream(event).await
    }

    async fn set_stream_status(
        &self,
        event: &EventId,
        status: &str,
        problem: Option<&str>,
    ) -> Result<StreamRecord, StoreError> {
        self.engine()
            .set_stream_status(event, status, problem)
            .await
    }

    async fn holds_ticket(&self, user: &UserId, event: &EventId) -> Result<bool, StoreError> {
        self.engine().holds_ticket(user, event).await
    }

    async fn add_recording(&self, recording: &Recording) -> Result<(), StoreError> {
        self.engine().add_recording(recording).await
    }

    async fn recordings_of(&self, event: &EventId) -> Result<Vec<Recording>, StoreError> {
        self.engine().recordings_of(event).await
    }
}

#[async_trait]
impl InventoryStore for SqlCatalogStore {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        self.engine().create_hold(hold, ga_capacity).await
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.engine().hold(id).await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        self.engine().end_hold(id, status).await
    }

    async fn extend_hold(
        &self,
        id: &HoldId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.engine().extend_hold(id, expires_at).await
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Hold>, StoreError> {
        self.engine().expired_holds(now, limit).await
    }

    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError> {
        self.engine().seat_snapshot(event, now).await
    }

    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError> {
        self.engine().seat_version(event).await
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        self.engine().confirm_order(order, hold).await
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.engine().order(id).await
    }

    async fn order_of_hold(&self, hold: &HoldId) -> Result<Option<Order>, StoreError> {
        self.engine().order_of_hold(hold).await
    }

    async fn orders_of(
        &self,
        user: &UserId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.engine().orders_of(user, after, limit).await
    }

    async fn orders_of_event(
        &self,
        event: &EventId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.engine().orders_of_event(event, after, limit).await
    }

    async fn refund_order(&self, order: &Order, reason: &str) -> Result<bool, StoreError> {
        self.engine().refund_order(order, reason).await
    }

    async fn order_history(&self, order: &OrderId) -> Result<Vec<OrderHistoryEntry>, StoreError> {
        self.engine().order_history(order).await
    }

    async fn check_in(
        &self,
        event: &EventId,
        ticket: &TicketId,
        at: DateTime<Utc>,
    ) -> Result<CheckIn, StoreError> {
        self.engine().check_in(event, ticket, at).await
    }

    async fn idempotent_response(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        self.engine().idempotent_response(user, key).await
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        self.engine()
            .save_idempotent_response(user, key, response)
            .await
    }

    async fn forget_idempotent_responses(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.engine()
            .forget_idempotent_responses(before, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL of the other engine (or of none) is refused before anything is opened, with the
    /// password left out of the error.
    #[tokio::test]
    async fn each_engine_opens_only_its_own_urls() {
        let refused = |outcome: Result<(), StoreError>| match outcome {
            Err(StoreError::UnsupportedUrl(url)) => url,
            other => panic!("expected UnsupportedUrl, got {other:?}"),
        };
        let postgres = "postgres://marquee:secret@db.invalid/catalog";
        let url = refused(
            SqliteStore::connect(postgres, StoreOptions::default())
                .await
                .map(drop),
        );
        assert_eq!(url, "postgres://***@db.invalid/catalog");
        refused(
            PostgresStore::connect("sqlite://catalog.db?mode=rwc", StoreOptions::default())
                .await
                .map(drop),
        );
        refused(
            SqlCatalogStore::connect("mysql://root:secret@localhost/db", StoreOptions::default())
                .await
                .map(drop),
        );
    }
}
