//! The inventory on SQLite where it is SQLite's own. The booking hot path (holds, orders,
//! idempotency keys) runs on the writer thread, with its statements in `booking_writes`; the
//! seat version is a counter on the event row. The other operations are shared (`common`).

use super::{booking_writes, SqliteStore};
use crate::common::engine::BookingEngine;
use crate::common::inventory_reads::{self as reads, SeatVersionSql};
use crate::{SeatSnapshot, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, UserId};

/// One writer at a time, so the seat version is a counter on the event row, bumped by the write.
const SEAT_VERSION: SeatVersionSql =
    SeatVersionSql("SELECT seat_version FROM events WHERE id = $1");

impl BookingEngine for SqliteStore {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        let hold = hold.clone();
        self.writer
            .write(move |connection| booking_writes::create_hold(connection, &hold, ga_capacity))
            .await
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        let id = id.clone();
        self.writer
            .read(move |connection| booking_writes::hold(connection, &id))
            .await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer
            .write(move |connection| booking_writes::end_hold(connection, &id, status))
            .await
    }

    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError> {
        // A transaction in WAL mode reads one snapshot of the file from its first statement on.
        let mut transaction = self.pool.begin().await?;
        let snapshot = reads::seat_snapshot(&mut transaction, SEAT_VERSION, event, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError> {
        let mut connection = self.pool.acquire().await?;
        reads::seat_version(&mut connection, SEAT_VERSION, event).await
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        let (order, hold) = (order.clone(), hold.clone());
        self.writer
            .write(move |connection| booking_writes::confirm_order(connection, &order, &hold))
            .await
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let (user, key, response) = (user.clone(), key.to_string(), response.clone());
        self.writer
            .write(move |connection| {
                booking_writes::save_idempotent_response(connection, &user, &key, &response)
            })
            .await
    }
}
