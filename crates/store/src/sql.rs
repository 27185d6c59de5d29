//! [`SqlCatalogStore`]: the catalog on SQLite or PostgreSQL through `sqlx::Any`.
//!
//! Two engine differences matter and are handled here, nowhere else:
//! - **Writers.** SQLite allows one writer at a time and upgrades a reading transaction to a
//!   writing one by failing with `SQLITE_BUSY` under contention, so writes take an in-process
//!   gate first. The embedded store belongs to one process, which makes that gate sufficient.
//!   The booking hot path's writes (holds, orders, idempotency keys) skip `sqlx` on SQLite and
//!   go to a writer thread that commits them in groups under the same gate (`sqlite_writer`).
//! - **Outbox order.** PostgreSQL hands out identity values before commit, so two concurrent
//!   writers could commit positions 8 then 7, and a reader at 7 would skip 8 forever. Appending
//!   takes a transaction-scoped advisory lock first, so positions commit in order. The lock is
//!   taken as the last step of a write, keeping the serialised section short.

use crate::sqlite_writer::SqliteWriter;
use crate::{
    rows, CatalogStore, ChangeKind, ChangePosition, ChangeRecord, EventQuery, StoreError,
    StoredCredentials, VenueQuery,
};
use async_trait::async_trait;
use marquee_domain::{Email, Event, EventId, EventStatus, User, UserId, Venue, VenueId};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the PostgreSQL advisory lock that orders outbox appends ("MRQOUTBX" in ASCII).
pub(crate) const OUTBOX_LOCK_KEY: i64 = 0x4D52_514F_5554_4258;

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

    fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// The file of a `sqlite://path?options` (or `sqlite:path`) URL.
fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

pub struct SqlCatalogStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// Present for SQLite only; see the module comment.
    sqlite_write_gate: Option<Arc<Mutex<()>>>,
    /// SQLite only: the booking hot path's writes, one hand-off each, committed in groups.
    pub(crate) sqlite_writer: Option<SqliteWriter>,
    /// PostgreSQL: this process's turn at the outbox (see [`SqlCatalogStore::take_outbox_turn`]).
    outbox_turn: Arc<Mutex<()>>,
}

/// A write transaction and, on SQLite, the gate that keeps it the only writer; on PostgreSQL,
/// once it reaches the outbox, this process's turn there. Both are released when it is dropped,
/// after its commit.
pub(crate) struct WriteTransaction<'a> {
    pub(crate) transaction: Transaction<'static, Any>,
    _gate: Option<MutexGuard<'a, ()>>,
    outbox_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SqlCatalogStore {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and applies migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            // A connection to a local file does not go stale the way a network one does, and
            // the liveness ping sqlx sends on every acquire is one more hand-off to SQLite's
            // worker thread on every query and transaction.
            pool_options = pool_options.test_before_acquire(false);
            pool_options = pool_options.after_connect(|connection, _| {
                Box::pin(async move {
                    // No auto-checkpoints: the writer's checkpoint thread does them (see
                    // `sqlite_writer`), never a `sqlx` write.
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                             PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 0;",
                        )
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect(url).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let (sqlite_write_gate, sqlite_writer) = match backend {
            Backend::Sqlite => {
                let gate = Arc::new(Mutex::new(()));
                let writer = SqliteWriter::start(&sqlite_path(url), gate.clone())?;
                (Some(gate), Some(writer))
            }
            Backend::Postgres => (None, None),
        };
        Ok(SqlCatalogStore {
            pool,
            backend,
            sqlite_write_gate,
            sqlite_writer,
            outbox_turn: Arc::new(Mutex::new(())),
        })
    }

    /// The connection pool, for blocks that keep their tables in the catalog's PostgreSQL
    /// database (the jobs), so a node opens one pool there, not one per block.
    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    /// Closes the connection pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<WriteTransaction<'_>, StoreError> {
        let gate = match &self.sqlite_write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        Ok(WriteTransaction {
            transaction: self.pool.begin().await?,
            _gate: gate,
            outbox_turn: None,
        })
    }

    /// On PostgreSQL, waits for this process's turn at the outbox and keeps it until `write`
    /// commits. From its first statement under the outbox lock (and the event row, for seat
    /// changes) to its commit, a writer makes every other writer of the cluster wait; when tens
    /// of them queue inside PostgreSQL for one hot row and one advisory lock, each release
    /// wakes them all and throughput falls as concurrency rises. Queued here instead, at most
    /// one writer per node waits in the database. Taken before the transaction locks the event
    /// row or the outbox, and nothing is locked after it but those two, so it cannot deadlock.
    pub(crate) async fn take_outbox_turn(&self, write: &mut WriteTransaction<'_>) {
        if self.backend == Backend::Postgres && write.outbox_turn.is_none() {
            write.outbox_turn = Some(Arc::clone(&self.outbox_turn).lock_owned().await);
        }
    }

    pub(crate) async fn append_change(
        &self,
        write: &mut WriteTransaction<'_>,
        kind: ChangeKind,
        entity_id: &str,
        payload: &impl Serialize,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(payload)?;
        self.take_outbox_turn(write).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK_KEY)
                .execute(&mut *write.transaction)
                .await?;
        }
        sqlx::query(
            "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind.entity().as_str())
        .bind(entity_id)
        .bind(kind.as_str())
        .bind(payload)
        .bind(rows::millis(marquee_domain::timestamp_now()))
        .execute(&mut *write.transaction)
        .await?;
        Ok(())
    }

    pub(crate) async fn fetch_optional<'q, T>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        map: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        query
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(map)
            .transpose()
    }

    pub(crate) async fn fetch_all<'q, T>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        map: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        query.fetch_all(&self.pool).await?.iter().map(map).collect()
    }
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.is_unique_violation())
}

#[derive(Serialize)]
struct UserChange<'a> {
    id: &'a UserId,
    name: &'a str,
    role: &'a str,
}

const USER_COLUMNS: &str = "id, email, name, role, created_at";
const VENUE_COLUMNS: &str =
    "id, owner_id, name, address, city, country, lat, lon, seat_map, created_at";
const EVENT_COLUMNS: &str =
    "id, owner_id, venue_id, status, version, details, created_at, updated_at";

#[async_trait]
impl CatalogStore for SqlCatalogStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut write = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, role, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(password_hash)
        .bind(rows::millis(user.created_at))
        .execute(&mut *write.transaction)
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => return Err(StoreError::EmailTaken),
            other => other?,
        };
        let change = UserChange {
            id: &user.id,
            name: user.name.as_str(),
            role: user.role.as_str(),
        };
        self.append_change(
            &mut write,
            ChangeKind::UserRegistered,
            user.id.as_str(),
            &change,
        )
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(id.as_str()), rows::user)
            .await
    }

    async fn credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
        self.fetch_optional(sqlx::query(&sql).bind(email.as_str()), |row| {
            Ok(StoredCredentials {
                user: rows::user(row)?,
                password_hash: sqlx::Row::try_get(row, "password_hash")?,
            })
        })
        .await
    }

    async fn create_venue(&self, venue: &Venue) -> Result<(), StoreError> {
        let seat_map = serde_json::to_string(&venue.seat_map)?;
        let capacity = i64::try_from(venue.seat_map.capacity())
            .map_err(|_| StoreError::Corrupt("capacity overflows".into()))?;
        let mut write = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO venues (id, owner_id, name, address, city, country, lat, lon, seat_map, \
             capacity, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(venue.id.as_str())
        .bind(venue.owner_id.as_str())
        .bind(&venue.details.name)
        .bind(&venue.details.address)
        .bind(&venue.details.city)
        .bind(&venue.details.country)
        .bind(venue.details.location.lat())
        .bind(venue.details.location.lon())
        .bind(seat_map)
        .bind(capacity)
        .bind(rows::millis(venue.created_at))
        .execute(&mut *write.transaction)
        .await?;
        self.append_change(
            &mut write,
            ChangeKind::VenueCreated,
            venue.id.as_str(),
            venue,
        )
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError> {
        let sql = format!("SELECT {VENUE_COLUMNS} FROM venues WHERE id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(id.as_str()), rows::venue)
            .await
    }

    async fn list_venues(&self, query: &VenueQuery) -> Result<Vec<Venue>, StoreError> {
        let sql = format!(
            "SELECT {VENUE_COLUMNS} FROM venues \
             WHERE ($1 IS NULL OR owner_id = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        );
        let statement = sqlx::query(&sql)
            .bind(query.owner.as_ref().map(|id| id.as_str().to_string()))
            .bind(query.after.as_ref().map(|id| id.as_str().to_string()))
            .bind(i64::from(query.limit));
        self.fetch_all(statement, rows::venue).await
    }

    async fn create_event(&self, event: &Event) -> Result<(), StoreError> {
        let details = serde_json::to_string(&event.details)?;
        let mut write = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO events (id, owner_id, venue_id, status, version, title, starts_at, \
             details, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(event.id.as_str())
        .bind(event.owner_id.as_str())
        .bind(event.venue_id.as_str())
        .bind(event.status.as_str())
        .bind(event.version)
        .bind(&event.details.title)
        .bind(rows::millis(event.details.starts_at))
        .bind(details)
        .bind(rows::millis(event.created_at))
        .bind(rows::millis(event.updated_at))
        .execute(&mut *write.transaction)
        .await?;
        self.append_change(
            &mut write,
            ChangeKind::EventCreated,
            event.id.as_str(),
            event,
        )
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(id.as_str()), rows::event)
            .await
    }

    async fn update_event(&self, event: &Event, change: ChangeKind) -> Result<Event, StoreError> {
        let mut stored = event.clone();
        stored.version = event.version + 1;
        stored.updated_at = marquee_domain::timestamp_now();
        let details = serde_json::to_string(&stored.details)?;
        let mut write = self.begin_write().await?;
        // The event row is locked from here to the commit, and seat writers lock it after their
        // outbox turn: take the turn first.
        self.take_outbox_turn(&mut write).await;
        let updated = sqlx::query(
            "UPDATE events SET status = $1, version = $2, title = $3, starts_at = $4, \
             details = $5, updated_at = $6 WHERE id = $7 AND version = $8",
        )
        .bind(stored.status.as_str())
        .bind(stored.version)
        .bind(&stored.details.title)
        .bind(rows::millis(stored.details.starts_at))
        .bind(details)
        .bind(rows::millis(stored.updated_at))
        .bind(event.id.as_str())
        .bind(event.version)
        .execute(&mut *write.transaction)
        .await?;
        if updated.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM events WHERE id = $1")
                .bind(event.id.as_str())
                .fetch_optional(&mut *write.transaction)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::VersionConflict {
                    expected: event.version,
                }
            } else {
                StoreError::NotFound
            });
        }
        self.append_change(&mut write, change, stored.id.as_str(), &stored)
            .await?;
        write.transaction.commit().await?;
        Ok(stored)
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE ($1 IS NULL OR owner_id = $1) AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        );
        let statement = sqlx::query(&sql)
            .bind(query.owner.as_ref().map(|id| id.as_str().to_string()))
            .bind(query.status.map(|status| status.as_str().to_string()))
            .bind(query.after.as_ref().map(|id| id.as_str().to_string()))
            .bind(i64::from(query.limit));
        self.fetch_all(statement, rows::event).await
    }

    async fn read_changes(
        &self,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let statement = sqlx::query(
            "SELECT position, entity_id, kind, payload, recorded_at FROM outbox \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit));
        self.fetch_all(statement, rows::change).await
    }

    async fn count_events(&self, status: Option<EventStatus>) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS count FROM events WHERE ($1 IS NULL OR status = $1)")
                .bind(status.map(|status| status.as_str().to_string()))
                .fetch_one(&self.pool)
                .await?;
        let count: i64 = sqlx::Row::try_get(&row, "count")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn latest_change(&self) -> Result<ChangePosition, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS position FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(sqlx::Row::try_get(&row, "position")?)
    }

    async fn create_webhook(&self, webhook: &crate::WebhookEndpoint) -> Result<(), StoreError> {
        let mut write = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, organizer_id, url, events, secret, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(webhook.id.as_str())
        .bind(webhook.organizer_id.as_str())
        .bind(webhook.url.as_str())
        .bind(serde_json::to_string(&webhook.events)?)
        .bind(webhook.secret.as_str())
        .bind(webhook.description.as_str())
        .bind(rows::millis(webhook.created_at))
        .execute(&mut *write.transaction)
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn webhook(&self, id: &str) -> Result<Option<crate::WebhookEndpoint>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(id), rows::webhook)
            .await
    }

    async fn webhooks_of(
        &self,
        organizer: &UserId,
    ) -> Result<Vec<crate::WebhookEndpoint>, StoreError> {
        let sql =
            format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE organizer_id = $1 ORDER BY id");
        self.fetch_all(sqlx::query(&sql).bind(organizer.as_str()), rows::webhook)
            .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut write = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *write.transaction)
            .await?;
        write.transaction.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }
    async fn issue_stream_key(
        &self,
        event: &EventId,
        key_hash: &str,
    ) -> Result<crate::StreamRecord, StoreError> {
        let now = rows::millis(marquee_domain::timestamp_now());
        let mut write = self.begin_write().await?;
        self.take_outbox_turn(&mut write).await;
        let exists = sqlx::query("SELECT 1 FROM events WHERE id = $1")
            .bind(event.as_str())
            .fetch_optional(&mut *write.transaction)
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO event_streams \
             (event_id, key_hash, status, problem, version, key_issued_at, updated_at) \
             VALUES ($1, $2, 'idle', NULL, 1, $3, $3) \
             ON CONFLICT (event_id) DO UPDATE SET key_hash = excluded.key_hash, \
             status = CASE WHEN event_streams.status = 'live' THEN 'live' ELSE 'idle' END, \
             problem = NULL, version = event_streams.version + 1, \
             key_issued_at = excluded.key_issued_at, updated_at = excluded.updated_at",
        )
        .bind(event.as_str())
        .bind(key_hash)
        .bind(now)
        .execute(&mut *write.transaction)
        .await?;
        let sql = format!("SELECT {STREAM_COLUMNS} FROM event_streams WHERE event_id = $1");
        let row = sqlx::query(&sql)
            .bind(event.as_str())
            .fetch_one(&mut *write.transaction)
            .await?;
        let stream = rows::stream(&row)?;
        self.append_change(
            &mut write,
            ChangeKind::StreamStatus,
            event.as_str(),
            &stream_payload(&stream),
        )
        .await?;
        write.transaction.commit().await?;
        Ok(stream)
    }

    async fn stream_by_key_hash(&self, key_hash: &str) -> Result<Option<EventId>, StoreError> {
        let row = sqlx::query("SELECT event_id FROM event_streams WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            sqlx::Row::try_get::<String, _>(&row, "event_id")
                .map(EventId::from_string)
                .map_err(StoreError::from)
        })
        .transpose()
    }

    async fn stream(&self, event: &EventId) -> Result<Option<crate::StreamRecord>, StoreError> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM event_streams WHERE event_id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(event.as_str()), rows::stream)
            .await
    }

    async fn set_stream_status(
        &self,
        event: &EventId,
        status: &str,
        problem: Option<&str>,
    ) -> Result<crate::StreamRecord, StoreError> {
        let mut write = self.begin_write().await?;
        self.take_outbox_turn(&mut write).await;
        let sql = format!("SELECT {STREAM_COLUMNS} FROM event_streams WHERE event_id = $1");
        let row = sqlx::query(&sql)
            .bind(event.as_str())
            .fetch_optional(&mut *write.transaction)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut stream = rows::stream(&row)?;
        if stream.status == status && stream.problem.as_deref() == problem {
            return Ok(stream);
        }
        stream.status = status.to_string();
        stream.problem = problem.map(str::to_string);
        stream.version += 1;
        stream.updated_at = marquee_domain::timestamp_now();
        sqlx::query(
            "UPDATE event_streams SET status = $1, problem = $2, version = $3, updated_at = $4 \
             WHERE event_id = $5",
        )
        .bind(status)
        .bind(problem)
        .bind(stream.version)
        .bind(rows::millis(stream.updated_at))
        .bind(event.as_str())
        .execute(&mut *write.transaction)
        .await?;
        self.append_change(
            &mut write,
            ChangeKind::StreamStatus,
            event.as_str(),
            &stream_payload(&stream),
        )
        .await?;
        write.transaction.commit().await?;
        Ok(stream)
    }

    async fn holds_ticket(&self, user: &UserId, event: &EventId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM orders WHERE user_id = $1 AND event_id = $2 \
             AND status = 'confirmed' LIMIT 1",
        )
        .bind(user.as_str())
        .bind(event.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn add_recording(&self, recording: &crate::Recording) -> Result<(), StoreError> {
        let mut write = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO recordings \
             (id, event_id, object_key, bytes, duration_ms, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(recording.id.as_str())
        .bind(recording.event_id.as_str())
        .bind(recording.object_key.as_str())
        .bind(recording.bytes)
        .bind(recording.duration_ms)
        .bind(rows::millis(recording.started_at))
        .bind(rows::millis(recording.ended_at))
        .execute(&mut *write.transaction)
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn recordings_of(&self, event: &EventId) -> Result<Vec<crate::Recording>, StoreError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE event_id = $1 \
             ORDER BY started_at, id LIMIT 1000"
        );
        self.fetch_all(sqlx::query(&sql).bind(event.as_str()), rows::recording)
            .await
    }
}

const STREAM_COLUMNS: &str = "event_id, status, problem, version, key_issued_at, updated_at";
const RECORDING_COLUMNS: &str =
    "id, event_id, object_key, bytes, duration_ms, started_at, ended_at";

/// What a `stream.status` change carries (and the push channel shows).
fn stream_payload(stream: &crate::StreamRecord) -> serde_json::Value {
    serde_json::json!({
        "status": stream.status,
        "problem": stream.problem,
        "version": stream.version,
    })
}

const WEBHOOK_COLUMNS: &str = "id, organizer_id, url, events, secret, description, created_at";
