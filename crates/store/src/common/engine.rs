//! What an engine supplies so that the catalog and inventory operations can be written once
//! (`common::catalog`, `common::inventory`) yet stay the engine's own where the engines differ:
//! how a write transaction keeps writers apart and appends to the outbox, whether the outbox
//! must be numbered before it is read, and the booking operations each engine runs its own way.
//!
//! The futures are spelled `impl Future + Send` rather than `async fn` so that the generic
//! operations, which `async_trait` boxes as `Send`, can await them for any engine.

use crate::common::payloads::SeatChange;
use crate::{Backend, ChangeKind, SeatSnapshot, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, UserId};
use serde::Serialize;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool};
use std::future::Future;
use tokio::sync::watch;

/// An engine's write transaction. Nothing is written unless [`SqlWrite::commit`] is called:
/// dropping it rolls back (and, on SQLite, lets the next writer in).
pub(crate) trait SqlWrite: Send {
    /// The engine's outbox insert, taking the change's columns as `$1`–`$5` (see
    /// [`insert_change`]).
    const APPEND: &'static str;

    /// The transaction's connection, for the statements both engines write alike.
    fn connection(&mut self) -> &mut AnyConnection;

    /// Called once this transaction has appended to the outbox.
    fn appended(&mut self) {}

    /// Appends a change to the outbox in this transaction.
    fn append_change(
        &mut self,
        kind: ChangeKind,
        entity_id: &str,
        payload: &(impl Serialize + Sync),
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let payload = serde_json::to_string(payload)?;
            insert_change(self.connection(), Self::APPEND, kind, entity_id, payload).await?;
            self.appended();
            Ok(())
        }
    }

    /// Appends a seat change of an event, with the event's next seat version (the engines
    /// number it differently).
    fn announce_seats(
        &mut self,
        kind: ChangeKind,
        change: &SeatChange<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An engine under the shared `CatalogStore` implementation.
pub(crate) trait SqlEngine: Send + Sync + 'static {
    type Write<'a>: SqlWrite
    where
        Self: 'a;

    const BACKEND: Backend;

    /// The pool the shared reads run on.
    fn read_pool(&self) -> &AnyPool;

    fn begin_write(&self) -> impl Future<Output = Result<Self::Write<'_>, StoreError>> + Send;

    /// Makes every committed change readable at its position before the outbox is read
    /// (PostgreSQL numbers positions after commit; SQLite's are numbered as they are written).
    fn number_outbox(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// See `CatalogStore::change_signal`.
    fn outbox_signal(&self) -> Option<watch::Receiver<u64>>;
}

/// The inventory operations the engines do not share: the booking hot path (a writer thread on
/// SQLite, concurrent transactions fenced by the database on PostgreSQL) and where an event's
/// seat version lives.
pub(crate) trait BookingEngine: SqlEngine {
    fn create_hold(
        &self,
        hold: &Hold,
        ga_capacity: Option<u32>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn hold(&self, id: &HoldId) -> impl Future<Output = Result<Option<Hold>, StoreError>> + Send;

    fn end_hold(
        &self,
        id: &HoldId,
        status: HoldStatus,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<SeatSnapshot, StoreError>> + Send;

    fn seat_version(&self, event: &EventId)
        -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn confirm_order(
        &self,
        order: &Order,
        hold: &Hold,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Runs one statement in a write transaction of its own; answers how many rows it changed.
pub(crate) async fn execute<'q, E: SqlEngine>(
    engine: &E,
    statement: Query<'q, Any, AnyArguments<'q>>,
) -> Result<u64, StoreError> {
    let mut write = engine.begin_write().await?;
    let done = statement.execute(write.connection()).await?;
    write.commit().await?;
    Ok(done.rows_affected())
}

/// Runs one statement and appends the change it makes, in one write transaction.
pub(crate) async fn execute_recorded<'q, E: SqlEngine>(
    engine: &E,
    statement: Query<'q, Any, AnyArguments<'q>>,
    kind: ChangeKind,
    entity_id: &str,
    payload: &(impl Serialize + Sync),
) -> Result<(), StoreError> {
    let mut write = engine.begin_write().await?;
    statement.execute(write.connection()).await?;
    write.append_change(kind, entity_id, payload).await?;
    write.commit().await
}

/// Inserts one outbox row with `insert`, an engine's statement that takes the change's columns
/// as `$1`–`$5` (entity, entity id, kind, payload, recorded at); answers how many rows it
/// inserted (a conditional insert may insert none).
pub(crate) async fn insert_change(
    connection: &mut AnyConnection,
    insert: &'static str,
    kind: ChangeKind,
    entity_id: &str,
    payload: String,
) -> Result<u64, StoreError> {
    let inserted = sqlx::query(insert)
        .bind(kind.entity().as_str())
        .bind(entity_id)
        .bind(kind.as_str())
        .bind(payload)
        .bind(crate::common::rows::millis(marquee_domain::timestamp_now()))
        .execute(connection)
        .await?;
    Ok(inserted.rows_affected())
}
