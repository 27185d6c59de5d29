//! The inventory on SQLite. The booking hot path (holds, orders, idempotency keys) runs on the
//! writer thread, with its statements in `booking_writes`; the rarer writes (extending a hold,
//! refunds, check-in) go through `sqlx` behind the write gate; reads are shared.

use super::{booking_writes, SqliteStore, WriteTransaction};
use crate::common::inventory_reads::{self as reads, OrdersOf, SeatVersionSql};
use crate::common::payloads::{announced_section, standing_places, SeatChange};
use crate::common::rows::{self, millis};
use crate::{
    ChangeKind, CheckIn, InventoryStore, OrderHistoryEntry, SeatSnapshot, StoreError,
    StoredResponse,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, OrderId, SeatId, TicketId, UserId};
use sqlx::Row;

/// One writer at a time, so the seat version is a counter on the event row, bumped by the write.
const SEAT_VERSION: SeatVersionSql =
    SeatVersionSql("SELECT seat_version FROM events WHERE id = $1");

impl WriteTransaction<'_> {
    /// Moves a general-admission section's counters, within its capacity (the table's CHECK
    /// is the last guard; the conditions here turn a violation into a typed error).
    async fn change_general_admission(
        &mut self,
        event: &EventId,
        section: &str,
        held_delta: i64,
        sold_delta: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE general_admission SET held = held + $1, sold = sold + $2 \
             WHERE event_id = $3 AND section = $4 \
             AND held + $1 >= 0 AND sold + $2 >= 0 AND held + $1 + sold + $2 <= capacity",
        )
        .bind(held_delta)
        .bind(sold_delta)
        .bind(event.as_str())
        .bind(section)
        .execute(&mut *self.transaction)
        .await?;
        if updated.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::CapacityExceeded {
                section: section.to_string(),
            })
        }
    }

    /// Appends to an order's history with the next sequence number. Within the write
    /// transaction (one writer at a time), so sequences never collide.
    async fn append_order_event(
        &mut self,
        order: &OrderId,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO order_events (order_id, sequence, kind, data, recorded_at) \
             SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3, $4 FROM order_events \
             WHERE order_id = $1",
        )
        .bind(order.as_str())
        .bind(kind)
        .bind(data.to_string())
        .bind(millis(marquee_domain::timestamp_now()))
        .execute(&mut *self.transaction)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl InventoryStore for SqliteStore {
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

    async fn extend_hold(
        &self,
        id: &HoldId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut write = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE holds SET expires_at = $1, extended = 1 \
             WHERE id = $2 AND status = 'active' AND extended = 0",
        )
        .bind(millis(expires_at))
        .bind(id.as_str())
        .execute(&mut *write.transaction)
        .await?;
        write.commit().await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Hold>, StoreError> {
        reads::expired_holds(&self.pool, now, limit).await
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

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        reads::order(&self.pool, id).await
    }

    async fn order_of_hold(&self, hold: &HoldId) -> Result<Option<Order>, StoreError> {
        reads::order_of_hold(&self.pool, hold).await
    }

    async fn orders_of(
        &self,
        user: &UserId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        reads::orders_page(&self.pool, OrdersOf::User, user.as_str(), after, limit).await
    }

    async fn orders_of_event(
        &self,
        event: &EventId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        reads::orders_page(&self.pool, OrdersOf::Event, event.as_str(), after, limit).await
    }

    async fn refund_order(&self, order: &Order, reason: &str) -> Result<bool, StoreError> {
        let mut write = self.begin_write().await?;
        let refunded = sqlx::query(
            "UPDATE orders SET status = 'refunded' WHERE id = $1 AND status = 'confirmed'",
        )
        .bind(order.id.as_str())
        .execute(&mut *write.transaction)
        .await?;
        if refunded.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE tickets SET valid = 0 WHERE order_id = $1")
            .bind(order.id.as_str())
            .execute(&mut *write.transaction)
            .await?;
        let seats: Vec<SeatId> = order
            .tickets
            .iter()
            .filter_map(|ticket| ticket.seat_id.clone())
            .collect();
        let standing = standing_places(order);
        for (section, quantity) in &standing {
            write
                .change_general_admission(&order.event_id, section, 0, -i64::from(*quantity))
                .await?;
        }
        write
            .append_order_event(&order.id, "refunded", serde_json::json!({"reason": reason}))
            .await?;
        let general = announced_section(&standing);
        write
            .announce_seats(
                ChangeKind::SeatsAvailable,
                &SeatChange {
                    event_id: &order.event_id,
                    hold_id: &order.hold_id,
                    user_id: &order.user_id,
                    order_id: Some(&order.id),
                    seat_ids: &seats,
                    general_admission: general.as_ref(),
                    reason,
                    expires_at: None,
                },
            )
            .await?;
        write.commit().await?;
        Ok(true)
    }

    async fn order_history(&self, order: &OrderId) -> Result<Vec<OrderHistoryEntry>, StoreError> {
        reads::order_history(&self.pool, order).await
    }

    async fn check_in(
        &self,
        event: &EventId,
        ticket: &TicketId,
        at: DateTime<Utc>,
    ) -> Result<CheckIn, StoreError> {
        let mut write = self.begin_write().await?;
        let admitted = sqlx::query(
            "UPDATE tickets SET checked_in_at = $1 WHERE id = $2 AND event_id = $3 \
             AND valid = 1 AND checked_in_at IS NULL",
        )
        .bind(millis(at))
        .bind(ticket.as_str())
        .bind(event.as_str())
        .execute(&mut *write.transaction)
        .await?;
        let row = sqlx::query(
            "SELECT id, order_id, seat_id, section, row_label, number, price_cents, code, \
             checked_in_at, valid FROM tickets WHERE id = $1 AND event_id = $2",
        )
        .bind(ticket.as_str())
        .bind(event.as_str())
        .fetch_optional(&mut *write.transaction)
        .await?;
        let Some(row) = row else {
            return Ok(CheckIn::NotFound);
        };
        let valid: i64 = row.try_get("valid")?;
        let stored = rows::ticket(&row)?;
        let outcome = if admitted.rows_affected() == 1 {
            let order = OrderId::from_string(row.try_get::<String, _>("order_id")?);
            write
                .append_order_event(
                    &order,
                    "checked_in",
                    serde_json::json!({"ticket_id": ticket.as_str()}),
                )
                .await?;
            CheckIn::Admitted(stored)
        } else if valid == 0 {
            CheckIn::Refunded
        } else {
            CheckIn::AlreadyCheckedIn(stored.checked_in_at.unwrap_or(at))
        };
        write.commit().await?;
        Ok(outcome)
    }

    async fn idempotent_response(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        reads::idempotent_response(&self.pool, user, key).await
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
