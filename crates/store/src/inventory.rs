//! The inventory's records: holds, orders, tickets, fences, general-admission counters and
//! idempotency keys, on the same engines as the catalog.
//!
//! Leases decide who holds a seat; these tables are the durable record and the **last guard**:
//! - a partial unique index allows one valid ticket per (event, seat);
//! - `general_admission` has a CHECK that held + sold never exceed capacity, and every change to
//!   it is a conditional UPDATE;
//! - `seat_fences` keeps the largest fencing token that has held each seat; an order commits
//!   only if its hold's token is still that largest one, so a hold whose lease lapsed and was
//!   granted to someone newer cannot sell, however the timing falls.

use crate::rows::millis;
use crate::sql::{is_unique_violation, SqlCatalogStore, WriteTransaction};
use crate::sqlite_inventory;
use crate::{Backend, ChangeKind, ChangePosition, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{
    EventId, GeneralAdmissionQuantity, Hold, HoldId, HoldStatus, Order, OrderId, OrderStatus,
    SeatId, Ticket, TicketId, UserId,
};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

/// Every seat that is not available, and how full each general-admission section is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatSnapshot {
    /// The offset on `event:{id}:seats` of the last change included (the event's seat sequence).
    pub version: ChangePosition,
    pub held: Vec<SeatId>,
    pub sold: Vec<SeatId>,
    /// Section → (held, sold).
    pub general_admission: HashMap<String, (u32, u32)>,
}

/// One record of an order's append-only history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHistoryEntry {
    pub sequence: i64,
    /// `created`, `paid`, `refunded` or `checked_in`.
    pub kind: String,
    pub data: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// The outcome of presenting a ticket at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckIn {
    Admitted(Ticket),
    AlreadyCheckedIn(DateTime<Utc>),
    Refunded,
    NotFound,
}

/// A response kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status_code: u16,
    pub body: String,
}

#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Records a live hold: raises its seats' fences, reserves general-admission places (with
    /// `ga_capacity` the section's capacity) and announces the seats as held. Refuses with
    /// `SeatsSold` when a seat already has a valid ticket (sold seats carry no lease, so this is
    /// where a hold on them is caught).
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError>;
    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError>;
    /// Moves an active hold to `released` or `lapsed` and announces its seats as available.
    /// False when the hold was no longer active (someone else ended it first).
    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError>;
    async fn extend_hold(&self, id: &HoldId, expires_at: DateTime<Utc>)
        -> Result<bool, StoreError>;
    /// Active holds whose time has run out, oldest first.
    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Hold>, StoreError>;
    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError>;
    /// The event's seat sequence: the offset of its newest seat change (zero before any).
    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError>;

    /// Writes the order and its tickets and turns the hold into `ordered`, in one transaction,
    /// if the hold is still active and its fencing token still the newest for every seat.
    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError>;
    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;
    /// The order a hold became, if it became one.
    async fn order_of_hold(&self, hold: &HoldId) -> Result<Option<Order>, StoreError>;
    async fn orders_of(
        &self,
        user: &UserId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError>;
    /// Orders of an event, in id order after a cursor (for cancellation and dashboards).
    async fn orders_of_event(
        &self,
        event: &EventId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError>;
    /// Refunds a confirmed order: its tickets become invalid and its places available again.
    /// False when the order was not confirmed (already refunded).
    async fn refund_order(&self, order: &Order, reason: &str) -> Result<bool, StoreError>;
    /// The order's history, oldest first.
    async fn order_history(&self, order: &OrderId) -> Result<Vec<OrderHistoryEntry>, StoreError>;
    /// Checks a ticket in at the door, once.
    async fn check_in(
        &self,
        event: &EventId,
        ticket: &TicketId,
        at: DateTime<Utc>,
    ) -> Result<CheckIn, StoreError>;

    async fn idempotent_response(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError>;
    /// Keeps the first response for a key; false when another request stored one first.
    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError>;
}

/// What the seat stream says about some seats of an event.
#[derive(Serialize)]
pub(crate) struct SeatChange<'a> {
    pub(crate) event_id: &'a EventId,
    pub(crate) hold_id: &'a HoldId,
    /// Whose hold or order it is: the change stream turns some changes into that user's
    /// notifications (order confirmed, refunded).
    pub(crate) user_id: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) order_id: Option<&'a OrderId>,
    pub(crate) seat_ids: &'a [SeatId],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) general_admission: Option<&'a GeneralAdmissionQuantity>,
    pub(crate) reason: &'a str,
    /// The hold's deadline, on changes made from a hold (its reminder is planned from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl<'a> SeatChange<'a> {
    pub(crate) fn of_hold(hold: &'a Hold, reason: &'a str) -> Self {
        SeatChange {
            event_id: &hold.event_id,
            hold_id: &hold.id,
            user_id: &hold.user_id,
            order_id: None,
            seat_ids: &hold.seat_ids,
            general_admission: hold.general_admission.as_ref(),
            reason,
            expires_at: Some(hold.expires_at),
        }
    }
}

/// The seat status a change announces, derived from its kind so the two cannot disagree.
#[derive(Serialize)]
pub(crate) struct SeatChangeRecord<'a> {
    #[serde(flatten)]
    pub(crate) change: &'a SeatChange<'a>,
    pub(crate) status: &'static str,
    /// The event's seat sequence after this change: its push offset.
    pub(crate) version: i64,
}

impl SeatChangeRecord<'_> {
    /// The seat status a change of `kind` announces.
    pub(crate) fn status_of(kind: ChangeKind) -> &'static str {
        match kind {
            ChangeKind::SeatsHeld => "held",
            ChangeKind::SeatsSold => "sold",
            ChangeKind::SeatsAvailable
            | ChangeKind::UserRegistered
            | ChangeKind::VenueCreated
            | ChangeKind::EventCreated
            | ChangeKind::EventUpdated
            | ChangeKind::EventPublished
            | ChangeKind::EventCancelled
            | ChangeKind::StreamStatus => "available",
        }
    }
}

/// Whose orders a page lists.
#[derive(Clone, Copy)]
enum OrdersOf {
    User,
    Event,
}

pub(crate) const HOLD_COLUMNS: &str = "id, event_id, user_id, seat_ids, ga_section, ga_quantity, \
     fencing_token, status, extended, expires_at, created_at";
pub(crate) const ORDER_COLUMNS: &str =
    "id, event_id, user_id, hold_id, status, total_cents, currency, payment_reference, created_at";

fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let value: i64 = row.try_get(column)?;
    DateTime::from_timestamp_millis(value)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} out of range")))
}

/// A `holds` row as stored, read by either driver and turned into a [`Hold`] in one place.
pub(crate) struct HoldRow {
    pub(crate) id: String,
    pub(crate) event_id: String,
    pub(crate) user_id: String,
    pub(crate) seat_ids: String,
    pub(crate) ga_section: Option<String>,
    pub(crate) ga_quantity: i64,
    pub(crate) fencing_token: i64,
    pub(crate) status: String,
    pub(crate) extended: i64,
    pub(crate) expires_at: i64,
    pub(crate) created_at: i64,
}

impl HoldRow {
    pub(crate) fn into_hold(self) -> Result<Hold, StoreError> {
        let time = |millis: i64, column: &str| {
            DateTime::from_timestamp_millis(millis)
                .ok_or_else(|| StoreError::Corrupt(format!("{column} out of range")))
        };
        let status = self.status;
        Ok(Hold {
            id: HoldId::from_string(self.id),
            event_id: EventId::from_string(self.event_id),
            user_id: UserId::from_string(self.user_id),
            seat_ids: serde_json::from_str(&self.seat_ids)?,
            general_admission: self.ga_section.map(|section| GeneralAdmissionQuantity {
                section,
                quantity: u32::try_from(self.ga_quantity).unwrap_or(0),
            }),
            fencing_token: u64::try_from(self.fencing_token).unwrap_or(0),
            status: HoldStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("hold status {status:?}")))?,
            extended: self.extended != 0,
            expires_at: time(self.expires_at, "expires_at")?,
            created_at: time(self.created_at, "created_at")?,
        })
    }
}

fn hold_row(row: &AnyRow) -> Result<Hold, StoreError> {
    HoldRow {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        user_id: row.try_get("user_id")?,
        seat_ids: row.try_get("seat_ids")?,
        ga_section: row.try_get("ga_section")?,
        ga_quantity: row.try_get("ga_quantity")?,
        fencing_token: row.try_get("fencing_token")?,
        status: row.try_get("status")?,
        extended: row.try_get("extended")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
    }
    .into_hold()
}

fn order_row(row: &AnyRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Order {
        id: OrderId::from_string(row.try_get::<String, _>("id")?),
        event_id: EventId::from_string(row.try_get::<String, _>("event_id")?),
        user_id: UserId::from_string(row.try_get::<String, _>("user_id")?),
        hold_id: HoldId::from_string(row.try_get::<String, _>("hold_id")?),
        status: OrderStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("order status {status:?}")))?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        payment_reference: row.try_get("payment_reference")?,
        tickets: Vec::new(),
        created_at: time(row, "created_at")?,
    })
}

fn ticket_row(row: &AnyRow) -> Result<Ticket, StoreError> {
    let number: Option<i64> = row.try_get("number")?;
    let checked_in_at: Option<i64> = row.try_get("checked_in_at")?;
    Ok(Ticket {
        id: TicketId::from_string(row.try_get::<String, _>("id")?),
        seat_id: row
            .try_get::<Option<String>, _>("seat_id")?
            .map(SeatId::from_string),
        section: row.try_get("section")?,
        row: row.try_get("row_label")?,
        number: number.and_then(|number| u32::try_from(number).ok()),
        price_cents: row.try_get("price_cents")?,
        code: row.try_get("code")?,
        checked_in_at: checked_in_at.and_then(DateTime::from_timestamp_millis),
    })
}

/// Appends to an order's history with the next sequence number. Within the write transaction
/// (one writer per order at a time), so sequences never collide.
async fn append_order_event(
    write: &mut WriteTransaction<'_>,
    order: &OrderId,
    kind: &str,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO order_events (order_id, sequence, kind, data, recorded_at) \
         SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3, $4 FROM order_events WHERE order_id = $1",
    )
    .bind(order.as_str())
    .bind(kind)
    .bind(data.to_string())
    .bind(millis(marquee_domain::timestamp_now()))
    .execute(&mut *write.transaction)
    .await?;
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SqlCatalogStore {
    async fn change_general_admission(
        write: &mut WriteTransaction<'_>,
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
        .execute(&mut *write.transaction)
        .await?;
        if updated.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::CapacityExceeded {
                section: section.to_string(),
            })
        }
    }

    async fn announce_seats(
        &self,
        write: &mut WriteTransaction<'_>,
        kind: ChangeKind,
        change: &SeatChange<'_>,
    ) -> Result<(), StoreError> {
        let status = SeatChangeRecord::status_of(kind);
        if self.backend == Backend::Postgres {
            return self
                .announce_seats_postgres(write, kind, change, status)
                .await;
        }
        let version: i64 = sqlx::query(
            "UPDATE events SET seat_version = seat_version + 1 WHERE id = $1 RETURNING seat_version",
        )
        .bind(change.event_id.as_str())
        .fetch_one(&mut *write.transaction)
        .await?
        .try_get("seat_version")?;
        let record = SeatChangeRecord {
            change,
            status,
            version,
        };
        self.append_change(write, kind, change.event_id.as_str(), &record)
            .await
    }

    /// The seat version bump, the outbox lock and the outbox append in one statement. They are
    /// the last writes before the commit, and from the first of them every other write of the
    /// event (its row) and of the whole outbox (the advisory lock) waits for this transaction:
    /// one round trip instead of three under those locks is what lets one event's bookings go
    /// faster than network latency allows otherwise. The event row is locked before the outbox,
    /// the same order as every other writer, so the two cannot deadlock.
    async fn announce_seats_postgres(
        &self,
        write: &mut WriteTransaction<'_>,
        kind: ChangeKind,
        change: &SeatChange<'_>,
        status: &'static str,
    ) -> Result<(), StoreError> {
        self.take_outbox_turn(write).await;
        // The version is filled in by the statement itself.
        let payload = serde_json::to_string(&SeatChangeRecord {
            change,
            status,
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
        .bind(crate::sql::OUTBOX_LOCK_KEY)
        .bind(kind.entity().as_str())
        .bind(kind.as_str())
        .bind(payload)
        .bind(millis(marquee_domain::timestamp_now()))
        .execute(&mut *write.transaction)
        .await?;
        if appended.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// A page of orders, with their tickets, of one user or one event.
    async fn orders_page(
        &self,
        of: OrdersOf,
        id: &str,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let column = match of {
            OrdersOf::User => "user_id",
            OrdersOf::Event => "event_id",
        };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = $1 \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        let statement = sqlx::query(&sql)
            .bind(id)
            .bind(after.map(|id| id.as_str().to_string()))
            .bind(i64::from(limit));
        let mut orders = self.fetch_all(statement, order_row).await?;
        for order in &mut orders {
            self.tickets_of(order).await?;
        }
        Ok(orders)
    }

    async fn tickets_of(&self, order: &mut Order) -> Result<(), StoreError> {
        let statement = sqlx::query(
            "SELECT id, seat_id, section, row_label, number, price_cents, code, checked_in_at \
             FROM tickets WHERE order_id = $1 ORDER BY id",
        )
        .bind(order.id.as_str());
        order.tickets = self.fetch_all(statement, ticket_row).await?;
        Ok(())
    }
}

#[async_trait]
impl InventoryStore for SqlCatalogStore {
    async fn create_hold(&self, hold: &Hold, ga_capacity: Option<u32>) -> Result<(), StoreError> {
        if let Some(writer) = &self.sqlite_writer {
            let hold = hold.clone();
            return writer
                .write(move |connection| {
                    sqlite_inventory::create_hold(connection, &hold, ga_capacity)
                })
                .await;
        }
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
            let sold = statement.fetch_all(&mut *write.transaction).await?;
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
            statement.execute(&mut *write.transaction).await?;
        }
        if let (Some(general), Some(capacity)) = (&hold.general_admission, ga_capacity) {
            sqlx::query(
                "INSERT INTO general_admission (event_id, section, capacity) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_id, section) DO NOTHING",
            )
            .bind(hold.event_id.as_str())
            .bind(&general.section)
            .bind(i64::from(capacity))
            .execute(&mut *write.transaction)
            .await?;
            Self::change_general_admission(
                &mut write,
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
        .execute(&mut *write.transaction)
        .await?;
        self.announce_seats(
            &mut write,
            ChangeKind::SeatsHeld,
            &SeatChange::of_hold(hold, "held"),
        )
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        if let Some(writer) = &self.sqlite_writer {
            let id = id.clone();
            return writer
                .read(move |connection| sqlite_inventory::hold(connection, &id))
                .await;
        }
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
        self.fetch_optional(sqlx::query(&sql).bind(id.as_str()), hold_row)
            .await
    }

    async fn end_hold(&self, id: &HoldId, status: HoldStatus) -> Result<bool, StoreError> {
        if let Some(writer) = &self.sqlite_writer {
            let id = id.clone();
            return writer
                .write(move |connection| sqlite_inventory::end_hold(connection, &id, status))
                .await;
        }
        let mut write = self.begin_write().await?;
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&mut *write.transaction)
            .await?
        else {
            return Err(StoreError::NotFound);
        };
        let hold = hold_row(&row)?;
        let ended = sqlx::query("UPDATE holds SET status = $1 WHERE id = $2 AND status = 'active'")
            .bind(status.as_str())
            .bind(id.as_str())
            .execute(&mut *write.transaction)
            .await?;
        if ended.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(general) = &hold.general_admission {
            Self::change_general_admission(
                &mut write,
                &hold.event_id,
                &general.section,
                -i64::from(general.quantity),
                0,
            )
            .await?;
        }
        self.announce_seats(
            &mut write,
            ChangeKind::SeatsAvailable,
            &SeatChange::of_hold(&hold, status.as_str()),
        )
        .await?;
        write.transaction.commit().await?;
        Ok(true)
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
        write.transaction.commit().await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn expired_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Hold>, StoreError> {
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'active' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        );
        let statement = sqlx::query(&sql).bind(millis(now)).bind(i64::from(limit));
        self.fetch_all(statement, hold_row).await
    }

    async fn seat_version(&self, event: &EventId) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seat_version FROM events WHERE id = $1")
            .bind(event.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("seat_version")?,
            None => 0,
        })
    }

    async fn seat_snapshot(
        &self,
        event: &EventId,
        now: DateTime<Utc>,
    ) -> Result<SeatSnapshot, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *transaction)
                .await?;
        }
        let version_row = sqlx::query("SELECT seat_version FROM events WHERE id = $1")
            .bind(event.as_str())
            .fetch_optional(&mut *transaction)
            .await?;
        let version = match version_row {
            Some(row) => row.try_get("seat_version")?,
            None => 0,
        };
        let mut snapshot = SeatSnapshot {
            version,
            ..SeatSnapshot::default()
        };
        let holds = sqlx::query(
            "SELECT seat_ids FROM holds WHERE event_id = $1 AND status = 'active' AND expires_at > $2",
        )
        .bind(event.as_str())
        .bind(millis(now))
        .fetch_all(&mut *transaction)
        .await?;
        for row in holds {
            let seats: String = row.try_get("seat_ids")?;
            let seats: Vec<SeatId> = serde_json::from_str(&seats)?;
            snapshot.held.extend(seats);
        }
        let sold = sqlx::query(
            "SELECT seat_id FROM tickets WHERE event_id = $1 AND valid = 1 AND seat_id IS NOT NULL",
        )
        .bind(event.as_str())
        .fetch_all(&mut *transaction)
        .await?;
        for row in sold {
            snapshot
                .sold
                .push(SeatId::from_string(row.try_get::<String, _>("seat_id")?));
        }
        let general =
            sqlx::query("SELECT section, held, sold FROM general_admission WHERE event_id = $1")
                .bind(event.as_str())
                .fetch_all(&mut *transaction)
                .await?;
        for row in general {
            let held: i64 = row.try_get("held")?;
            let sold: i64 = row.try_get("sold")?;
            snapshot.general_admission.insert(
                row.try_get("section")?,
                (
                    u32::try_from(held).unwrap_or(0),
                    u32::try_from(sold).unwrap_or(0),
                ),
            );
        }
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn confirm_order(&self, order: &Order, hold: &Hold) -> Result<(), StoreError> {
        if let Some(writer) = &self.sqlite_writer {
            let (order, hold) = (order.clone(), hold.clone());
            return writer
                .write(move |connection| sqlite_inventory::confirm_order(connection, &order, &hold))
                .await;
        }
        let token = to_i64(hold.fencing_token);
        let mut write = self.begin_write().await?;
        // The event must still be on sale: a cancellation that committed first wins.
        let converted = sqlx::query(
            "UPDATE holds SET status = 'ordered' WHERE id = $1 AND status = 'active' \
             AND fencing_token = $2 AND expires_at > $3 AND EXISTS \
             (SELECT 1 FROM events WHERE events.id = holds.event_id AND events.status = 'published')",
        )
        .bind(hold.id.as_str())
        .bind(token)
        .bind(millis(order.created_at))
        .execute(&mut *write.transaction)
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
                .fetch_one(&mut *write.transaction)
                .await?
                .try_get("current")?;
            if usize::try_from(current).ok() != Some(hold.seat_ids.len()) {
                return Err(StoreError::Fenced);
            }
        }
        if let Some(general) = &hold.general_admission {
            let quantity = i64::from(general.quantity);
            Self::change_general_admission(
                &mut write,
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
        .execute(&mut *write.transaction)
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
            match statement.execute(&mut *write.transaction).await {
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::SeatsSold {
                        seat_ids: hold.seat_ids.iter().map(ToString::to_string).collect(),
                    })
                }
                other => other?,
            };
        }
        // A new order's history starts at 1: created, then paid.
        let created = serde_json::json!({
            "total_cents": order.total_cents,
            "currency": order.currency,
            "tickets": order.tickets.len(),
        });
        let paid = serde_json::json!({"payment_reference": order.payment_reference});
        sqlx::query(
            "INSERT INTO order_events (order_id, sequence, kind, data, recorded_at) \
             VALUES ($1, 1, 'created', $2, $4), ($1, 2, 'paid', $3, $4)",
        )
        .bind(order.id.as_str())
        .bind(created.to_string())
        .bind(paid.to_string())
        .bind(millis(order.created_at))
        .execute(&mut *write.transaction)
        .await?;
        self.announce_seats(
            &mut write,
            ChangeKind::SeatsSold,
            &SeatChange {
                order_id: Some(&order.id),
                ..SeatChange::of_hold(hold, "ordered")
            },
        )
        .await?;
        write.transaction.commit().await?;
        Ok(())
    }

    async fn order_of_hold(&self, hold: &HoldId) -> Result<Option<Order>, StoreError> {
        let id: Option<String> = sqlx::query("SELECT id FROM orders WHERE hold_id = $1")
            .bind(hold.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("id"))
            .transpose()?;
        match id {
            Some(id) => self.order(&OrderId::from_string(id)).await,
            None => Ok(None),
        }
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let Some(mut order) = self
            .fetch_optional(sqlx::query(&sql).bind(id.as_str()), order_row)
            .await?
        else {
            return Ok(None);
        };
        self.tickets_of(&mut order).await?;
        let history = self.order_history(&order.id).await?;
        if let Some(status) = OrderStatus::from_history(history.iter().map(|e| e.kind.as_str())) {
            order.status = status;
        }
        Ok(Some(order))
    }

    async fn orders_of(
        &self,
        user: &UserId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.orders_page(OrdersOf::User, user.as_str(), after, limit)
            .await
    }

    async fn orders_of_event(
        &self,
        event: &EventId,
        after: Option<&OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.orders_page(OrdersOf::Event, event.as_str(), after, limit)
            .await
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
        let mut standing: HashMap<&str, u32> = HashMap::new();
        for ticket in order
            .tickets
            .iter()
            .filter(|ticket| ticket.seat_id.is_none())
        {
            *standing.entry(ticket.section.as_str()).or_default() += 1;
        }
        for (section, quantity) in &standing {
            Self::change_general_admission(
                &mut write,
                &order.event_id,
                section,
                0,
                -i64::from(*quantity),
            )
            .await?;
        }
        append_order_event(
            &mut write,
            &order.id,
            "refunded",
            serde_json::json!({"reason": reason}),
        )
        .await?;
        let general = standing
            .iter()
            .next()
            .map(|(section, quantity)| GeneralAdmissionQuantity {
                section: (*section).to_string(),
                quantity: *quantity,
            });
        self.announce_seats(
            &mut write,
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
        write.transaction.commit().await?;
        Ok(true)
    }

    async fn order_history(&self, order: &OrderId) -> Result<Vec<OrderHistoryEntry>, StoreError> {
        let statement = sqlx::query(
            "SELECT sequence, kind, data, recorded_at FROM order_events WHERE order_id = $1 \
             ORDER BY sequence",
        )
        .bind(order.as_str());
        self.fetch_all(statement, |row| {
            let data: String = row.try_get("data")?;
            Ok(OrderHistoryEntry {
                sequence: row.try_get("sequence")?,
                kind: row.try_get("kind")?,
                data: serde_json::from_str(&data)?,
                recorded_at: time(row, "recorded_at")?,
            })
        })
        .await
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
        let stored = ticket_row(&row)?;
        let outcome = if admitted.rows_affected() == 1 {
            let order = OrderId::from_string(row.try_get::<String, _>("order_id")?);
            append_order_event(
                &mut write,
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
        write.transaction.commit().await?;
        Ok(outcome)
    }

    async fn idempotent_response(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let statement = sqlx::query(
            "SELECT request_hash, status_code, response FROM idempotency_keys \
             WHERE user_id = $1 AND key = $2",
        )
        .bind(user.as_str())
        .bind(key);
        self.fetch_optional(statement, |row| {
            let status: i64 = row.try_get("status_code")?;
            Ok(StoredResponse {
                request_hash: row.try_get("request_hash")?,
                status_code: u16::try_from(status).unwrap_or(500),
                body: row.try_get("response")?,
            })
        })
        .await
    }

    async fn save_idempotent_response(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        if let Some(writer) = &self.sqlite_writer {
            let (user, key, response) = (user.clone(), key.to_string(), response.clone());
            return writer
                .write(move |connection| {
                    sqlite_inventory::save_idempotent_response(connection, &user, &key, &response)
                })
                .await;
        }
        let mut write = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(key)
        .bind(&response.request_hash)
        .bind(i64::from(response.status_code))
        .bind(&response.body)
        .bind(millis(marquee_domain::timestamp_now()))
        .execute(&mut *write.transaction)
        .await?;
        write.transaction.commit().await?;
        Ok(inserted.rows_affected() == 1)
    }
}
