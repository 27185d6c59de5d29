//! [`PostgresStore`]: the catalog on PostgreSQL, the source of truth of a cluster of nodes.
//!
//! Writers of every node share the database and commit concurrently: nothing on the write path
//! is shared by all writers. An outbox row is inserted without a position; positions (and seat
//! versions) are numbered after commit by the assigner ([`changes`]), which every reader of the
//! outbox runs before it reads. The database's own constraints (unique indexes, CHECKs,
//! conditional updates, fences) keep concurrent writers from overselling.
//!
//! A commit that appended to the outbox wakes this node's assigner task ([`run_assigner`]),
//! which numbers what committed and, when it numbered anything, sends a `NOTIFY` in the same
//! transaction (delivered at its commit). Each store listens on a connection of its own and
//! bumps its change signal (`CatalogStore::change_signal`) on every notification, so every
//! node's followers wake as soon as a change of any node is numbered; their slow poll is only
//! a fallback for notifications lost while a listening connection was down. Writers do not
//! notify themselves: `NOTIFY` holds a database-wide lock through its transaction's commit,
//! which would queue all writers' commits again.
//!
//! Still on `sqlx::Any` (the SQL is PostgreSQL's alone; only the driver is generic): the jobs
//! queue keeps its tables in this database and takes this pool ([`PostgresStore::pool`]), which
//! keeps a node within one connection budget, and the jobs queue takes an `AnyPool`. Moving to
//! a typed `PgPool` needs the jobs queue to take one too. The listener is the one typed
//! connection, because `Any` has no `LISTEN`.

mod batch;
mod changes;
mod inventory;

pub use batch::WriteBatchStats;

use crate::common::engine::SqlEngine;
use crate::{Backend, StoreError, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel `outbox_assign()` notifies when it numbered changes (the name is
/// also in migration 0006). Database-wide (not per schema): a store over another schema of the same database is woken
/// for nothing now and then, which costs one empty read.
pub(crate) const OUTBOX_CHANNEL: &str = "marquee_outbox";

pub struct PostgresStore {
    pool: AnyPool,
    /// Bumped whenever the outbox may have grown: a notification from any node, or a commit of
    /// this process's own.
    changes: Arc<watch::Sender<u64>>,
    /// Wakes this node's assigner task after a commit that appended to the outbox.
    assigner_wake: Arc<Notify>,
    listener: JoinHandle<()>,
    assigner: JoinHandle<()>,
    /// The booking hot path's writes, batched ([`batch`]).
    batcher: batch::WriteBatcher,
}

/// A write transaction; if it appended to the outbox, its commit wakes this node's assigner.
pub(crate) struct WriteTransaction<'a> {
    pub(crate) transaction: Transaction<'static, Any>,
    assigner_wake: &'a Notify,
    pub(crate) appended: bool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        if Backend::of_url(url)? != Backend::Postgres {
            return Err(StoreError::UnsupportedUrl(crate::redact_url(url)));
        }
        sqlx::any::install_default_drivers();
        let idle_timeout = format!(
            "SET idle_in_transaction_session_timeout = {}",
            options.idle_transaction_timeout.as_millis().max(1)
        );
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |connection, _| {
                let idle_timeout = idle_timeout.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(connection, idle_timeout.as_str()).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        MIGRATIONS.run(&pool).await?;
        let changes = Arc::new(watch::Sender::new(0u64));
        let assigner_wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(url.to_string(), Arc::downgrade(&changes)));
        let assigner = tokio::spawn(run_assigner(
            pool.clone(),
            Arc::clone(&assigner_wake),
            Arc::downgrade(&changes),
        ));
        let batcher = batch::WriteBatcher::start(
            pool.clone(),
            Arc::clone(&assigner_wake),
            batch::BatchOptions {
                in_flight: options.write_batches,
            },
        );
        Ok(PostgresStore {
            pool,
            changes,
            assigner_wake,
            listener,
            assigner,
            batcher,
        })
    }

    /// The connection pool, for blocks that keep their tables in the catalog's database (the
    /// jobs), so a node opens one pool there, not one per block.
    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    /// How this node's booking writes were batched so far.
    pub fn write_batch_stats(&self) -> WriteBatchStats {
        self.batcher.stats()
    }

    /// Closes the connection pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.listener.abort();
        self.assigner.abort();
        self.pool.close().await;
    }
}

impl SqlEngine for PostgresStore {
    type Write<'a> = WriteTransaction<'a>;

    const BACKEND: Backend = Backend::Postgres;

    fn read_pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<WriteTransaction<'_>, StoreError> {
        Ok(WriteTransaction {
            transaction: self.pool.begin().await?,
            assigner_wake: &self.assigner_wake,
            appended: false,
        })
    }

    /// "Assign, then read" (see the crate's doc): a caller that has seen its write commit reads
    /// it numbered, without waiting for the assigner task.
    async fn number_outbox(&self) -> Result<(), StoreError> {
        self.assign_positions().await?;
        Ok(())
    }

    fn outbox_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.assigner.abort();
    }
}

/// Listens for outbox notifications until the store is gone, reconnecting after failures. A
/// lost connection may have lost notifications too, so every (re)connection counts as one.
async fn listen(url: String, changes: Weak<watch::Sender<u64>>) {
    let bump = |changes: &Weak<watch::Sender<u64>>| match changes.upgrade() {
        Some(changes) => {
            changes.send_modify(|count| *count = count.wrapping_add(1));
            true
        }
        None => false,
    };
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "outbox listener: cannot connect; followers poll meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(OUTBOX_CHANNEL).await {
            tracing::warn!(%error, "outbox listener: LISTEN failed; followers poll meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if !bump(&changes) {
            return;
        }
        loop {
            match listener.try_recv().await {
                // `None`: the connection dropped (and reconnects on the next call); anything
                // sent meanwhile is lost, so wake the followers to read.
                Ok(_) => {
                    if !bump(&changes) {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox listener: lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

/// Numbers what this node's writers committed, once per wake (wakes that come while it runs
/// make one more run). It also bumps the local signal itself, so this node's followers do not
/// wait for the notification's round trip through the database.
async fn run_assigner(pool: AnyPool, wake: Arc<Notify>, signal: Weak<watch::Sender<u64>>) {
    loop {
        wake.notified().await;
        let assigned = changes::assign_committed(&pool).await;
        match assigned {
            Ok(0) => {}
            Ok(_) => match signal.upgrade() {
                Some(signal) => signal.send_modify(|count| *count = count.wrapping_add(1)),
                None => return,
            },
            Err(error) => {
                // Readers number before they read, so nothing waits on this run but latency.
                tracing::warn!(%error, "outbox assigner: numbering failed; readers will");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
