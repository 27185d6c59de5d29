//! Appending to the outbox from a `sqlx` write. The write gate is held for the whole
//! transaction, so positions commit in the order they are handed out and nothing more is needed
//! here. (The writer thread's writes append with the same statements, in `booking_writes`.)

use super::WriteTransaction;
use crate::common::engine::SqlWrite;
use crate::common::payloads::{SeatChange, SeatChangeRecord};
use crate::{ChangeKind, StoreError};
use sqlx::{AnyConnection, Row};

impl SqlWrite for WriteTransaction<'_> {
    const APPEND: &'static str =
        "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at) \
         VALUES ($1, $2, $3, $4, $5)";

    fn connection(&mut self) -> &mut AnyConnection {
        &mut self.transaction
    }

    /// Bumps the event's seat sequence and appends the change, numbered with it, to the outbox.
    async fn announce_seats(
        &mut self,
        kind: ChangeKind,
        change: &SeatChange<'_>,
    ) -> Result<(), StoreError> {
        let version: i64 = sqlx::query(
            "UPDATE events SET seat_version = seat_version + 1 WHERE id = $1 RETURNING seat_version",
        )
        .bind(change.event_id.as_str())
        .fetch_one(&mut *self.transaction)
        .await?
        .try_get("seat_version")?;
        let record = SeatChangeRecord {
            change,
            status: SeatChangeRecord::status_of(kind),
            version,
        };
        self.append_change(kind, change.event_id.as_str(), &record)
            .await
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }
}
