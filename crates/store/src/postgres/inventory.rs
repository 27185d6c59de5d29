//! The inventory on PostgreSQL. A write that changes seats announces them in the outbox (see
//! `changes`) and takes no lock shared by other events' writers: its seat version is numbered
//! after commit. These are the inventory operations PostgreSQL does its own way: the booking
//! hot path, fenced by the database's constraints, and the seat version, which lives in the
//! outbox. The others are shared with the other engine (`common`).

use super::changes::assign;
use super::PostgresStore;
use crate::common::catalog_reads::fetch_optional;
use crate::common::engine::{execute, BookingEngine, SqlEngine, SqlWrite};
use crate::common::inventory::change_general_admission;
use crate::common::inventory_reads::{self as reads, SeatVersionSql};
use crate::common::payloads::{new_order_history, SeatChange};
use crate::common::rows::{self, millis, to_i64, HOLD_COLUMNS, ORDER_COLUMNS};
use crate::error::is_unique_violation;
use crate::{ChangeKind, SeatSnapshot, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, HoldId, HoldStatus, Order, UserId};
use sqlx::Row;

/// The seat version is numbered by the outbox's assigner (see `changes`): the newest numbered
/// seat change of the event carries it.
const SEAT_VERSION: SeatVersionSql = SeatVersionSql(
    "SELECT MAX(seat_version) AS seat_version FROM outbox \
     WHERE entity_id = $1 AND seat_version IS NOT NULL",
);

impl BookingEngine for PostgresStore {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        let seat_ids = serde_json::to_string(&hold.seat_ids)?;
        let token = to_i64(hold.fencing_token);
        let mut write = self.begin_write().await?;
        if !hold.seat_ids.is_empty() {
            let placeholders: Vec<String> = (0..hold.seat_ids.len())
                .map(|i| format!("${}", i + 2))
                .collect();
            let sql = format!(
                "SELECT seat_id FROM tickets WHERE event_id = $1 AND valid = 1 AND seat_id IN ({})",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(&sql).bind(hold.event_id.as_str());
            for seat in &hold.seat_ids {
                statement = statement.bind(seat.as_str());
            }
            let sold = statement.fetch_all(write.connection()).await?;
            if !sold.is_empty() {
                let seat_ids = sold
                    .iter()
                    .map(|row| row.try_get::<String, _>("seat_id"))
                    .collect::<Result<_, _>>()?;
                return Err(StoreError::SeatsSold { seat_ids });
            }
            // One statement for all seats: each row binds (event, seat, token).
            let rows: Vec<String> = (0..hold.seat_ids.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO seat_fences (event_id, seat_id, token) VALUES {} \
                 ON CONFLICT (event_id, seat_id) DO UPDATE SET token = excluded.token \
                 WHERE seat_fences.token < excluded.token",
                rows.join(", ")
            );
            let mut statement = sqlx::query(&sql);
            for seat in &hold.seat_ids {
                statement = statement
                    .bind(hold.event_id.as_str())
                    .bind(seat.as_str())
                    .bind(token);
            }
            statement.execute(write.connection()).await?;
        }
        if let (Some(general), Some(capacity)) = (&hold.general_admission, ga_capacity) {
            sqlx::query(
                "INSERT INTO general_admission (event_id, section, capacity) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_id, section) DO NOTHING",
            )
            .bind(hold.event_id.as_str())
            .bind(&general.section)
            .bind(i64::from(capacity))
            .execute(write.connection())
            .await?;
            change_general_admission(
                write.connection(),
                &hold.event_id,
                &general.section,
                i64::from(general.quantity),
                0,
            )
            .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO holds ({HOLD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(hold.id.as_str())
        .bind(hold.event_id.as_str())
        .bind(hold.user_id.as_str())
        .bind(seat_ids)
        .bind(hold.general_admission.as_ref().map(|g| g.section.clone()))
        .bind(hold.general_admission.as_ref().map_or(0, |g| i64::from(g.quantity)))
        .bind(token)
        .bind(hold.status.as_str())
        .bind(i64::from(hold.extended))
        .bind(millis(hold.expires_at))
        .bind(millis(hold.created_at))
        .execute(write.connection())
        .await?;
        write
            .announce_seats(ChangeKind::SeatsHeld, &SeatChange::of_hold(hold, "held"))
            .await?;
        write.commit().await
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
        fetch_optional(&self.pool, sqlx::query(&sql).bind(id.as_str()), rows::hold).await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        let mut write = self.begin_write().await?;
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(write.connection())
            .await?
        else {
            return Err(StoreError::NotFound);
        };
        let hold = rows::hold(&row)?;
        let ended = sqlx::query("UPDATE holds SET status = $1 WHERE id = $2 AND status = 'active'")
            .bind(status.as_str())
            .bind(id.as_str())
            .execute(write.connection())
            .await?;
        if ended.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(general) = &hold.general_admission {
            change_general_admission(
                write.connection(),
                &hold.event_id,
                &general.section,
                -i64::from(general.quantity),
                0,
            )
            .await?;
        }
        write
            .announce_seats(
                ChangeKind::SeatsAvailable,
                &SeatChange::of_hold(&hold, status.as_str()),
            )
            .await?;
        write.commit().await?;
        Ok(true)
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
        let mut connection = self.pool.acquire().await?;
        assign(&mut connection).await?;
        reads::seat_version(&mut connection, SEAT_VERSION, event).await
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        let token = to_i64(hold.fencing_token);
        let mut write = self.begin_write().await?;
        // The event must still be on sale: a cancellation that committed first wins. The
        // share lock keeps a cancellation from committing until this order has (so the
        // cancellation's refunds find it), and waits for one in flight; sales do not wait
        // for each other on it.
        let converted = sqlx::query(
            "UPDATE holds SET status = 'ordered' WHERE id = $1 AND status = 'active' \
             AND fencing_token = $2 AND expires_at > $3 AND EXISTS \
             (SELECT 1 FROM events WHERE events.id = holds.event_id \
              AND events.status = 'published' FOR SHARE)",
        )
        .bind(hold.id.as_str())
        .bind(token)
        .bind(millis(order.created_at))
        .execute(write.connection())
        .await?;
        if converted.rows_affected() == 0 {
            return Err(StoreError::HoldNotActive);
        }
        if !hold.seat_ids.is_empty() {
            let placeholders: Vec<String> = (0..hold.seat_ids.len())
                .map(|i| format!("${}", i + 3))
                .collect();
            let sql = format!(
                "SELECT COUNT(*) AS current FROM seat_fences WHERE event_id = $1 AND token = $2 \
                 AND seat_id IN ({})",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(&sql).bind(hold.event_id.as_str()).bind(token);
            for seat in &hold.seat_ids {
                statement = statement.bind(seat.as_str());
            }
            let current: i64 = statement
                .fetch_one(write.connection())
                .await?
                .try_get("current")?;
            if usize::try_from(current).ok() != Some(hold.seat_ids.len()) {
                return Err(StoreError::Fenced);
            }
        }
        if let Some(general) = &hold.general_admission {
            let quantity = i64::from(general.quantity);
            change_general_admission(
                write.connection(),
                &hold.event_id,
                &general.section,
                -quantity,
                quantity,
            )
            .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(order.id.as_str())
        .bind(order.event_id.as_str())
        .bind(order.user_id.as_str())
        .bind(order.hold_id.as_str())
        .bind(order.status.as_str())
        .bind(order.total_cents)
        .bind(&order.currency)
        .bind(&order.payment_reference)
        .bind(millis(order.created_at))
        .execute(write.connection())
        .await?;
        if !order.tickets.is_empty() {
            const COLUMNS: usize = 9;
            let rows: Vec<String> = (0..order.tickets.len())
                .map(|row| {
                    let cells: Vec<String> = (1..=COLUMNS)
                        .map(|c| format!("${}", row * COLUMNS + c))
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO tickets (id, order_id, event_id, seat_id, section, row_label, number, \
                 price_cents, code) VALUES {}",
                rows.join(", ")
            );
            let mut statement = sqlx::query(&sql);
            for ticket in &order.tickets {
                statement = statement
                    .bind(ticket.id.as_str())
                    .bind(order.id.as_str())
                    .bind(order.event_id.as_str())
                    .bind(
                        ticket
                            .seat_id
                            .as_ref()
                            .map(|seat| seat.as_str().to_string()),
                    )
                    .bind(&ticket.section)
                    .bind(ticket.row.clone())
                    .bind(ticket.number.map(i64::from))
                    .bind(ticket.price_cents)
                    .bind(&ticket.code);
            }
            match statement.execute(write.connection()).await {
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::SeatsSold {
                        seat_ids: hold.seat_ids.iter().map(ToString::to_string).collect(),
                    })
                }
                other => other?,
            };
        }
        let (created, paid) = new_order_history(order);
        sqlx::query(
            "INSERT INTO order_events (order_id, sequence, kind, data, recorded_at) \
             VALUES ($1, 1, 'created', $2, $4), ($1, 2, 'paid', $3, $4)",
        )
        .bind(order.id.as_str())
        .bind(created)
        .bind(paid)
        .bind(millis(order.created_at))
        .execute(write.connection())
        .await?;
        write
            .announce_seats(
                ChangeKind::SeatsSold,
                &SeatChange {
                    order_id: Some(&order.id),
                    ..SeatChange::of_hold(hold, "ordered")
                },
            )
            .await?;
        write.commit().await
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let insert = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(key)
        .bind(&response.request_hash)
        .bind(i64::from(response.status_code))
        .bind(&response.body)
        .bind(millis(marquee_domain::timestamp_now()));
        Ok(execute(self, insert).await? == 1)
    }
}
