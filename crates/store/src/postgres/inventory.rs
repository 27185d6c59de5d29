//! The inventory on PostgreSQL: the operations it does its own way. The booking hot path —
//! holds, hold ends, orders and idempotent answers — runs in batches, one round trip and one
//! commit for whatever a node's fans asked for meanwhile (see `batch`), in functions of
//! migration 0013 that check what the unbatched statements checked: sold seats, fences,
//! standing-place capacity, the event still on sale. Seat changes are announced in the outbox
//! with no lock shared by other writers; their seat version, which lives in the outbox, is
//! numbered after commit. The other operations are shared with the other engine (`common`).

use super::batch::Failure;
use super::changes::assign;
use super::PostgresStore;
use crate::common::catalog_reads::fetch_optional;
use crate::common::engine::BookingEngine;
use crate::common::inventory_reads::{self as reads, SeatVersionSql};
use crate::common::payloads::{new_order_history, SeatChange, SeatChangeRecord};
use crate::common::rows::{self, millis, to_i64, HOLD_COLUMNS};
use crate::{ChangeKind, SeatSnapshot, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, SeatId, UserId};
use serde_json::json;

/// The seat version is numbered by the outbox's assigner (see `changes`): the newest numbered
/// seat change of the event carries it.
const SEAT_VERSION: SeatVersionSql = SeatVersionSql(
    "SELECT MAX(seat_version) AS seat_version FROM outbox \
     WHERE entity_id = $1 AND seat_version IS NOT NULL",
);

impl BookingEngine for PostgresStore {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        let operation = json!({
            "op": "create_hold",
            "hold": hold_columns(hold)?,
            "ga_capacity": ga_capacity,
            "change": seat_change(ChangeKind::SeatsHeld, &SeatChange::of_hold(hold, "held"))?,
        });
        self.batcher
            .run(operation)
            .await?
            .map(drop)
            .map_err(Failure::into_store_error)
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
        fetch_optional(&self.pool, sqlx::query(&sql).bind(id.as_str()), rows::hold).await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        // What the change announces is the hold's, which never changes after it is made, so it
        // is read before the batch; whether the hold is still active is decided in it.
        let Some(hold) = BookingEngine::hold(self, id).await? else {
            return Err(StoreError::NotFound);
        };
        let operation = json!({
            "op": "end_hold",
            "id": hold.id.as_str(),
            "status": status.as_str(),
            "event_id": hold.event_id.as_str(),
            "ga_section": hold.general_admission.as_ref().map(|g| g.section.as_str()),
            "ga_quantity": hold.general_admission.as_ref().map_or(0, |g| g.quantity),
            "change": seat_change(
                ChangeKind::SeatsAvailable,
                &SeatChange::of_hold(&hold, status.as_str()),
            )?,
        });
        let answer = self
            .batcher
            .run(operation)
            .await?
            .map_err(Failure::into_store_error)?;
        Ok(answer.get("ended").and_then(serde_json::Value::as_bool) == Some(true))
    }

    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError> {
        // Read committed would let a hold turn into an order between the statements, and the
        // seat show up as neither held nor sold (or as both). The version must be that of the
        // last change the snapshot includes: every seat change the snapshot sees must have a
        // version, and none it does not see may get one at or below it.
        //
        // First without the assigner's lock, so snapshots of the cluster do not queue on it:
        // if every seat change of the event the snapshot sees is numbered, the newest version
        // it sees is right (a change it does not see commits after it, and is numbered by an
        // assigner that sees these numbers, above them).
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *transaction)
            .await?;
        let snapshot = reads::seat_snapshot(&mut transaction, SEAT_VERSION, event, now).await?;
        let unnumbered = sqlx::query(
            "SELECT 1 AS unnumbered FROM outbox \
             WHERE position IS NULL AND entity = 'seats' AND entity_id = $1 LIMIT 1",
        )
        .bind(event.as_str())
        .fetch_optional(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if unnumbered.is_none() {
            return Ok(snapshot);
        }
        // Otherwise number them in the snapshot itself: the assigner's lock is taken before
        // the transaction's snapshot (`LOCK TABLE` is not a query, so the statement after it
        // takes the snapshot), and the assigner then numbers every change that snapshot sees;
        // whatever commits later is numbered by a later assigner, after these.
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *transaction)
            .await?;
        sqlx::query("LOCK TABLE outbox_assigner IN EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
        assign(&mut transaction).await?;
        let snapshot = reads::seat_snapshot(&mut transaction, SEAT_VERSION, event, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError> {
        self.assign_positions().await?;
        let mut connection = self.pool.acquire().await?;
        reads::seat_version(&mut connection, SEAT_VERSION, event).await
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        let (created_record, paid_record) = new_order_history(order);
        let tickets: Vec<serde_json::Value> = order
            .tickets
            .iter()
            .map(|ticket| {
                json!({
                    "id": ticket.id.as_str(),
                    "seat_id": ticket.seat_id.as_ref().map(SeatId::as_str),
                    "section": ticket.section,
                    "row_label": ticket.row,
                    "number": ticket.number,
                    "price_cents": ticket.price_cents,
                    "code": ticket.code,
                })
            })
            .collect();
        let change = SeatChange {
            order_id: Some(&order.id),
            ..SeatChange::of_hold(hold, "ordered")
        };
        let operation = json!({
            "op": "confirm_order",
            "order": {
                "id": order.id.as_str(),
                "event_id": order.event_id.as_str(),
                "user_id": order.user_id.as_str(),
                "hold_id": order.hold_id.as_str(),
                "status": order.status.as_str(),
                "total_cents": order.total_cents,
                "currency": order.currency,
                "payment_reference": order.payment_reference,
                "created_at": millis(order.created_at),
            },
            "fencing_token": to_i64(hold.fencing_token),
            "seat_ids": hold.seat_ids.iter().map(SeatId::as_str).collect::<Vec<_>>(),
            "ga_section": hold.general_admission.as_ref().map(|g| g.section.as_str()),
            "ga_quantity": hold.general_admission.as_ref().map_or(0, |g| g.quantity),
            "tickets": tickets,
            "created_record": created_record,
            "paid_record": paid_record,
            "change": seat_change(ChangeKind::SeatsSold, &change)?,
        });
        match self.batcher.run(operation).await? {
            Ok(_) => Ok(()),
            // The last word on double sales: one valid ticket per seat (and unique codes).
            Err(failure)
                if failure.is_unique_violation()
                    && failure
                        .constraint
                        .as_deref()
                        .is_some_and(|name| name.starts_with("tickets")) =>
            {
                Err(StoreError::SeatsSold {
                    seat_ids: hold.seat_ids.iter().map(ToString::to_string).collect(),
                })
            }
            Err(failure) => Err(failure.into_store_error()),
        }
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let operation = json!({
            "op": "save_response",
            "user_id": user.as_str(),
            "key": key,
            "request_hash": response.request_hash,
            "status_code": response.status_code,
            "response": response.body,
            "created_at": millis(marquee_domain::timestamp_now()),
        });
        let answer = self
            .batcher
            .run(operation)
            .await?
            .map_err(Failure::into_store_error)?;
        Ok(answer.get("saved").and_then(serde_json::Value::as_bool) == Some(true))
    }
}

/// A hold's row, as `marquee_create_hold()` reads it.
fn hold_columns(hold: &Hold) -> Result<serde_json::Value, StoreError> {
    Ok(json!({
        "id": hold.id.as_str(),
        "event_id": hold.event_id.as_str(),
        "user_id": hold.user_id.as_str(),
        "seat_ids": hold.seat_ids.iter().map(SeatId::as_str).collect::<Vec<_>>(),
        // The column keeps the list as JSON text, as the other engine does.
        "seat_ids_json": serde_json::to_string(&hold.seat_ids)?,
        "ga_section": hold.general_admission.as_ref().map(|g| g.section.as_str()),
        "ga_quantity": hold.general_admission.as_ref().map_or(0, |g| g.quantity),
        "fencing_token": to_i64(hold.fencing_token),
        "status": hold.status.as_str(),
        "extended": i64::from(hold.extended),
        "expires_at": millis(hold.expires_at),
        "created_at": millis(hold.created_at),
    }))
}

/// A seat change's outbox columns, as `marquee_announce_seats()` reads them. The assigner
/// writes its version into the payload after commit.
fn seat_change(kind: ChangeKind, change: &SeatChange<'_>) -> Result<serde_json::Value, StoreError> {
    let payload = serde_json::to_string(&SeatChangeRecord {
        change,
        status: SeatChangeRecord::status_of(kind),
        version: 0,
    })?;
    Ok(json!({
        "kind": kind.as_str(),
        "payload": payload,
        "recorded_at": millis(marquee_domain::timestamp_now()),
    }))
}
