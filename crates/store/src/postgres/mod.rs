//! [`PostgresStore`]: the catalog on PostgreSQL, the source of truth of a cluster of nodes.
//!
//! Writers of every node share the database, so what orders them is in the database: the event
//! row's lock for one event's seat changes, and a transaction-scoped advisory lock for outbox
//! appends ([`changes`]). Each node also queues its own writers for the outbox before they reach
//! those locks (the outbox turn), which keeps the queue inside PostgreSQL short.
//!
//! Still on `sqlx::Any` (the SQL is PostgreSQL's alone; only the driver is generic): the jobs
//! queue keeps its tables in this database and takes this pool ([`PostgresStore::pool`]), which
//! keeps a node within one connection budget, and the jobs queue takes an `AnyPool`. Moving to
//! a typed `PgPool` needs the jobs queue to take one too.

mod catalog;
mod changes;
mod inventory;

use crate::{Backend, StoreError, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: AnyPool,
    /// This process's turn at the outbox (see [`WriteTransaction::take_outbox_turn`]).
    outbox_turns: Mutex<()>,
}

/// A write transaction and, once it reaches the outbox, this process's turn there, released
/// when it is dropped (after its commit).
pub(crate) struct WriteTransaction<'a> {
    pub(crate) transaction: Transaction<'static, Any>,
    outbox_turns: &'a Mutex<()>,
    outbox_turn: Option<MutexGuard<'a, ()>>,
}

impl WriteTransaction<'_> {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        if Backend::of_url(url)? != Backend::Postgres {
            return Err(StoreError::UnsupportedUrl(crate::redact_url(url)));
        }
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(PostgresStore {
            pool,
            outbox_turns: Mutex::new(()),
        })
    }

    /// The connection pool, for blocks that keep their tables in the catalog's database (the
    /// jobs), so a node opens one pool there, not one per block.
    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    /// Closes the connection pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<WriteTransaction<'_>, StoreError> {
        Ok(WriteTransaction {
            transaction: self.pool.begin().await?,
            outbox_turns: &self.outbox_turns,
            outbox_turn: None,
        })
    }
}
