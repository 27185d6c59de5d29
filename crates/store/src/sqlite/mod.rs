//! [`SqliteStore`]: the catalog embedded in one SQLite file in the data dir.
//!
//! SQLite allows one writer at a time and upgrades a reading transaction to a writing one by
//! failing with `SQLITE_BUSY` under contention, so every write takes an in-process gate first.
//! The embedded store belongs to one process, which makes that gate sufficient, and it also keeps
//! outbox positions committing in the order they were handed out.
//!
//! The booking hot path's writes (holds, orders, idempotency keys) skip `sqlx` and go to a
//! writer thread that commits them in groups under the same gate ([`writer`]); their statements
//! are in [`booking_writes`]. The other writes and the reads are the ones both engines share
//! (`common`), through `sqlx` and behind the gate ([`changes`] appends to the outbox).

pub(crate) mod booking_writes;
mod changes;
mod inventory;
pub(crate) mod writer;

use crate::common::engine::SqlEngine;
use crate::{Backend, StoreError, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{watch, Mutex, MutexGuard};
use writer::SqliteWriter;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: AnyPool,
    /// Held by every write, `sqlx` or writer thread; see the module comment.
    write_gate: Arc<Mutex<()>>,
    /// The booking hot path's writes, one hand-off each, committed in groups.
    writer: SqliteWriter,
}

/// A write transaction and the gate that keeps it the only writer, released when it is
/// dropped (after its commit).
pub(crate) struct WriteTransaction<'a> {
    pub(crate) transaction: Transaction<'static, Any>,
    _gate: MutexGuard<'a, ()>,
}

impl SqliteStore {
    /// Opens (creating it if the URL says `mode=rwc`) the file of `url`, `sqlite://path?…` or
    /// `sqlite:path`, applies migrations and starts the writer thread.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        if Backend::of_url(url)? != Backend::Sqlite {
            return Err(StoreError::UnsupportedUrl(crate::redact_url(url)));
        }
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A connection to a local file does not go stale the way a network one does, and
            // the liveness ping sqlx sends on every acquire is one more hand-off to SQLite's
            // worker thread on every query and transaction.
            .test_before_acquire(false)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    // No auto-checkpoints: the writer's checkpoint thread does them (see
                    // `writer`), never a `sqlx` write.
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                             PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 0;",
                        )
                        .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        MIGRATIONS.run(&pool).await?;
        let write_gate = Arc::new(Mutex::new(()));
        let writer = SqliteWriter::start(&database_path(url), write_gate.clone())?;
        Ok(SqliteStore {
            pool,
            write_gate,
            writer,
        })
    }

    /// The `sqlx` connection pool (the writer thread has its own connection).
    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    /// Closes the connection pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqlEngine for SqliteStore {
    type Write<'a> = WriteTransaction<'a>;

    const BACKEND: Backend = Backend::Sqlite;

    fn read_pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<WriteTransaction<'_>, StoreError> {
        let gate = self.write_gate.lock().await;
        Ok(WriteTransaction {
            transaction: self.pool.begin().await?,
            _gate: gate,
        })
    }

    /// Positions are handed out as rows are inserted, and the gate commits them in that order.
    async fn number_outbox(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One process owns the file, and its followers poll it.
    fn outbox_signal(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// The file of a `sqlite://path?options` (or `sqlite:path`) URL.
fn database_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}
