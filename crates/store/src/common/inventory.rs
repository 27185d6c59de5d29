//! The inventory on either engine. The rarer writes (extending a hold, refunds, check-in) and
//! the reads are one implementation here; the booking hot path and seat versions, which the
//! engines do their own ways, are each engine's [`BookingEngine`].

use crate::common::engine::{execute, BookingEngine, SqlWrite};
use crate::common::inventory_reads::{self as reads, OrdersOf};
use crate::common::payloads::{announced_section, standing_places, SeatChange};
use crate::common::rows::{self, millis};
use crate::{
    ChangeKind, CheckIn, InventoryStore, OrderHistoryEntry, SeatSnapshot, StoreError,
    StoredResponse,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, OrderId, SeatId, TicketId, UserId};
use sqlx::{AnyConnection, Row};

#[async_trait]
impl<E: BookingEngine> InventoryStore for E {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        BookingEngine::create_hold(self, hold, ga_capacity).await
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        BookingEngine::hold(self, id).await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        BookingEngine::end_hold(self, id, status).await
    }

    async fn extend_hold(
        &self,
        id: &HoldId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let extend = sqlx::query(
            "UPDATE holds SET expires_at = $1, extended = 1 \
             WHERE id = $2 AND status = 'active' AND extended = 0",
        )
        .bind(millis(expires_at))
        .bind(id.as_str());
        Ok(execute(self, extend).await? == 1)
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Hold>, StoreError> {
        reads::expired_holds(self.read_pool(), now, limit).await
    }

    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError> {
        BookingEngine::seat_snapshot(self, event, now).await
    }

    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError> {
        BookingEngine::seat_version(self, event).await
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        BookingEngine::confirm_order(self, order, hold).await
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        reads::order(self.read_pool(), id).await
    }

    async fn order_of_hold(&self, hold: &HoldId) -> Result<Option<Order>, StoreError> {
        reads::order_of_hold(self.read_pool(), hold).await
    }

    async fn orders_of(
        &self,
        user: &UserId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        reads::orders_page(
            self.read_pool(),
            OrdersOf::User,
            user.as_str(),
            after,
            limit,
        )
        .await
    }

    async fn orders_of_event(
        &self,
        event: &EventId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        reads::orders_page(
            self.read_pool(),
            OrdersOf::Event,
            event.as_str(),
            after,
            limit,
        )
        .await
    }

    async fn refund_order(&self, order: &Order, reason: &str) -> Result<bool, StoreError> {
        let mut write = self.begin_write().await?;
        let refunded = sqlx::query(
            "UPDATE orders SET status = 'refunded' WHERE id = $1 AND status = 'confirmed'",
        )
        .bind(order.id.as_str())
        .execute(write.connection())
        .await?;
        if refunded.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE tickets SET valid = 0 WHERE order_id = $1")
            .bind(order.id.as_str())
            .execute(write.connection())
            .await?;
        let seats: Vec<SeatId> = order
            .tickets
            .iter()
            .filter_map(|ticket| ticket.seat_id.clone())
            .collect();
        let standing = standing_places(order);
        for (section, quantity) in &standing {
            change_general_admission(
                write.connection(),
                &order.event_id,
                section,
                0,
                -i64::from(*quantity),
            )
            .await?;
        }
        append_order_event(
            write.connection(),
            &order.id,
            "refunded",
            serde_json::json!({"reason": reason}),
        )
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
        reads::order_history(self.read_pool(), order).await
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
        .execute(write.connection())
        .await?;
        let row = sqlx::query(
            "SELECT id, order_id, seat_id, section, row_label, number, price_cents, code, \
             checked_in_at, valid FROM tickets WHERE id = $1 AND event_id = $2",
        )
        .bind(ticket.as_str())
        .bind(event.as_str())
        .fetch_optional(write.connection())
        .await?;
        let Some(row) = row else {
            return Ok(CheckIn::NotFound);
        };
        let valid: i64 = row.try_get("valid")?;
        let stored = rows::ticket(&row)?;
        let outcome = if admitted.rows_affected() == 1 {
            let order = OrderId::from_string(row.try_get::<String, _>("order_id")?);
            append_order_event(
                write.connection(),
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
        reads::idempotent_response(self.read_pool(), user, key).await
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        BookingEngine::save_idempotent_response(self, user, key, response).await
    }

    async fn forget_idempotent_responses(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // Bounded, so a backlog (a node that was down for days) is cleared in short
        // transactions that never hold the booking writers back for long.
        execute(
            self,
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
                 SELECT user_id, key FROM idempotency_keys WHERE created_at < $1 \
                 ORDER BY created_at LIMIT $2)",
            )
            .bind(millis(before))
            .bind(i64::from(limit)),
        )
        .await
    }
}

/// Moves a general-admission section's counters, within its capacity (the table's CHECK is the
/// last guard; the conditions here turn a violation into a typed error).
pub(crate) async fn change_general_admission(
    connection: &mut AnyConnection,
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
    .execute(connection)
    .await?;
    if updated.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::CapacityExceeded {
            section: section.to_string(),
        })
    }
}

/// Appends to an order's history with the next sequence number. Only ever inside a write
/// transaction (one writer per order at a time), so sequences never collide.
async fn append_order_event(
    connection: &mut AnyConnection,
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
    .execute(connection)
    .await?;
    Ok(())
}
