//! Appending to the outbox, and numbering it after commit.
//!
//! Writers insert outbox rows with no position and the id of their transaction
//! (`pg_current_xact_id()`): nothing here is shared by every writer, so writers on every node
//! commit concurrently. After a commit that appended, the writer wakes its node's assigner task
//! (`super::run_assigner`), which numbers the new rows and, in the same transaction, notifies
//! every node's followers (`super::OUTBOX_CHANNEL`). Positions are numbered after commit by
//! [`assign`] (the `outbox_assign()` function of migration 0006): under a lock only the
//! assigner takes, it numbers the committed rows that have none in (transaction, insertion)
//! order, consecutively after the newest position, and gives each seat change the next seat
//! version of its event. A row that commits late is numbered when it commits, after everything
//! numbered before: a follower that has read up to position P never finds a new row at or
//! below P, and every follower sees the same order, because a position, once numbered, is
//! never changed.
//!
//! Every read of the outbox's order (changes, the newest position, a seat version, a seat
//! snapshot) runs the assigner first, so a caller that saw its write commit reads it with a
//! position; with nothing to number it is one index probe and takes no lock.

use super::{PostgresStore, WriteTransaction};
use crate::common::engine::{insert_change, SqlWrite};
use crate::common::payloads::{SeatChange, SeatChangeRecord};
use crate::{ChangeKind, StoreError};
use sqlx::AnyConnection;

/// Numbers the outbox rows committed so far that have no position yet; answers how many.
pub(crate) async fn assign(connection: &mut AnyConnection) -> Result<i64, StoreError> {
    use sqlx::Row;
    let row = sqlx::query("SELECT outbox_assign() AS assigned")
        .fetch_one(connection)
        .await?;
    Ok(row.try_get("assigned")?)
}

/// Runs the assigner in an explicit transaction: its numbering holds the assigner's lock until
/// commit, and a pooled connection left inside a stray transaction (a cancelled request's)
/// would otherwise keep the lock, and the numbers uncommitted, until that transaction ends.
pub(crate) async fn assign_committed(pool: &sqlx::AnyPool) -> Result<i64, StoreError> {
    let mut transaction = pool.begin().await?;
    let assigned = assign(&mut transaction).await?;
    transaction.commit().await?;
    Ok(assigned)
}

impl PostgresStore {
    /// Runs the assigner on a connection of the pool, in a transaction of its own (see
    /// [`assign_committed`]).
    pub(crate) async fn assign_positions(&self) -> Result<i64, StoreError> {
        assign_committed(&self.pool).await
    }
}

impl SqlWrite for WriteTransaction<'_> {
    const APPEND: &'static str =
        "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at, txid) \
         VALUES ($1, $2, $3, $4, $5, pg_current_xact_id())";

    fn connection(&mut self) -> &mut AnyConnection {
        &mut self.transaction
    }

    /// Its commit wakes the assigner.
    fn appended(&mut self) {
        self.appended = true;
    }

    /// Appends a seat change of an event that must exist. Its seat version (the offset on the
    /// event's seat channel) is numbered after commit with its position, so seat writers of one
    /// event no longer queue for a counter on the event row.
    async fn announce_seats(
        &mut self,
        kind: ChangeKind,
        change: &SeatChange<'_>,
    ) -> Result<(), StoreError> {
        // The assigner writes the version into the payload.
        let payload = serde_json::to_string(&SeatChangeRecord {
            change,
            status: SeatChangeRecord::status_of(kind),
            version: 0,
        })?;
        let appended = insert_change(
            &mut self.transaction,
            "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at, txid) \
             SELECT $1, $2, $3, $4, $5, pg_current_xact_id() \
             WHERE EXISTS (SELECT 1 FROM events WHERE id = $2)",
            kind,
            change.event_id.as_str(),
            payload,
        )
        .await?;
        if appended == 1 {
            self.appended();
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        if self.appended {
            // A permit is kept when the assigner is busy, so commits during its run cause one
            // more run, not one each.
            self.assigner_wake.notify_one();
        }
        Ok(())
    }
}
