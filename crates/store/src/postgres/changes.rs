//! Appending to the outbox, in position order across the cluster.
//!
//! PostgreSQL hands out identity values before commit, so two concurrent writers could commit
//! positions 8 then 7, and a reader at 7 would skip 8 forever. Appending takes a
//! transaction-scoped advisory lock first, so positions commit in order. The lock is taken as the
//! last step of a write, keeping the serialised section short.

use super::WriteTransaction;
use crate::common::payloads::{SeatChange, SeatChangeRecord};
use crate::common::rows::millis;
use crate::{ChangeKind, StoreError};
use serde::Serialize;

/// Key of the advisory lock that orders outbox appends ("MRQOUTBX" in ASCII).
const OUTBOX_LOCK_KEY: i64 = 0x4D52_514F_5554_4258;

impl WriteTransaction<'_> {
    /// Waits for this process's turn at the outbox and keeps it until the write commits. From
    /// its first statement under the outbox lock (and the event row, for seat changes) to its
    /// commit, a writer makes every other writer of the cluster wait; when tens of them queue
    /// inside PostgreSQL for one hot row and one advisory lock, each release wakes them all and
    /// throughput falls as concurrency rises. Queued here instead, at most one writer per node
    /// waits in the database. Taken before the transaction locks the event row or the outbox,
    /// and nothing is locked after it but those two, so it cannot deadlock.
    pub(crate) async fn take_outbox_turn(&mut self) {
        if self.outbox_turn.is_none() {
            self.outbox_turn = Some(self.outbox_turns.lock().await);
        }
    }

    pub(crate) async fn append_change(
        &mut self,
        kind: ChangeKind,
        entity_id: &str,
        payload: &impl Serialize,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(payload)?;
        self.take_outbox_turn().await;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_LOCK_KEY)
            .execute(&mut *self.transaction)
            .await?;
        sqlx::query(
            "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind.entity().as_str())
        .bind(entity_id)
        .bind(kind.as_str())
        .bind(payload)
        .bind(millis(marquee_domain::timestamp_now()))
        .execute(&mut *self.transaction)
        .await?;
        Ok(())
    }

    /// The seat version bump, the outbox lock and the outbox append in one statement. They are
    /// the last writes before the commit, and from the first of them every other write of the
    /// event (its row) and of the whole outbox (the advisory lock) waits for this transaction:
    /// one round trip instead of three under those locks is what lets one event's bookings go
    /// faster than network latency allows otherwise. The event row is locked before the outbox,
    /// the same order as every other writer, so the two cannot deadlock.
    pub(crate) async fn announce_seats(
        &mut self,
        kind: ChangeKind,
        change: &SeatChange<'_>,
    ) -> Result<(), StoreError> {
        self.take_outbox_turn().await;
        // The version is filled in by the statement itself.
        let payload = serde_json::to_string(&SeatChangeRecord {
            change,
            status: SeatChangeRecord::status_of(kind),
            version: 0,
        })?;
        let appended = sqlx::query(
            "WITH version AS ( \
                 UPDATE events SET seat_version = seat_version + 1 WHERE id = $1 \
                 RETURNING seat_version), \
             outbox_lock AS (SELECT pg_advisory_xact_lock($2) FROM version) \
             INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at) \
             SELECT $3, $1, $4, jsonb_set($5::jsonb, '{version}', to_jsonb(version.seat_version))::text, $6 \
             FROM version, outbox_lock",
        )
        .bind(change.event_id.as_str())
        .bind(OUTBOX_LOCK_KEY)
        .bind(kind.entity().as_str())
        .bind(kind.as_str())
        .bind(payload)
        .bind(millis(marquee_domain::timestamp_now()))
        .execute(&mut *self.transaction)
        .await?;
        if appended.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }
}
