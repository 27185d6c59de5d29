//! The inventory's reads, one SQL text for both engines. The SQLite engine reads a hold through
//! its writer thread instead (see `sqlite::writer`), so that read is not here.

use crate::common::catalog_reads::{fetch_all, fetch_optional};
use crate::common::rows::{self, millis, HOLD_COLUMNS, ORDER_COLUMNS, TICKET_COLUMNS};
use crate::{OrderHistoryEntry, SeatSnapshot, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, Hold, Order, OrderId, OrderStatus, SeatId, UserId};
use sqlx::{AnyConnection, AnyPool, Row};

/// Whose orders a page lists.
#[derive(Clone, Copy)]
pub(crate) enum OrdersOf {
    User,
    Event,
}

pub(crate) async fn expired_holds(
    pool: &AnyPool,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Hold>, StoreError> {
    let sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'active' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2"
    );
    let statement = sqlx::query(&sql).bind(millis(now)).bind(i64::from(limit));
    fetch_all(pool, statement, rows::hold).await
}

/// Where an engine keeps an event's seat version: a query for `seat_version` given the event
/// id as `$1`, answering no row when there is none yet.
#[derive(Clone, Copy)]
pub(crate) struct SeatVersionSql(pub(crate) &'static str);

pub(crate) async fn seat_version(
    connection: &mut AnyConnection,
    sql: SeatVersionSql,
    event: &EventId,
) -> Result<i64, StoreError> {
    let row = sqlx::query(sql.0)
        .bind(event.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>, _>("seat_version")?.unwrap_or(0),
        None => 0,
    })
}

/// Reads the snapshot on `transaction`, which the engine opened so that all of its statements
/// see one state of the database.
pub(crate) async fn seat_snapshot(
    transaction: &mut AnyConnection,
    version_sql: SeatVersionSql,
    event: &EventId,
    now: DateTime<Utc>,
) -> Result<SeatSnapshot, StoreError> {
    let version = seat_version(&mut *transaction, version_sql, event).await?;
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
    Ok(snapshot)
}

/// An order with its tickets, its status as its history tells it.
pub(crate) async fn order(pool: &AnyPool, id: &OrderId) -> Result<Option<Order>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let Some(mut order) =
        fetch_optional(pool, sqlx::query(&sql).bind(id.as_str()), rows::order).await?
    else {
        return Ok(None);
    };
    tickets_of(pool, &mut order).await?;
    let history = order_history(pool, &order.id).await?;
    if let Some(status) = OrderStatus::from_history(history.iter().map(|e| e.kind.as_str())) {
        order.status = status;
    }
    Ok(Some(order))
}

pub(crate) async fn order_of_hold(
    pool: &AnyPool,
    hold: &marquee_domain::HoldId,
) -> Result<Option<Order>, StoreError> {
    let id: Option<String> = sqlx::query("SELECT id FROM orders WHERE hold_id = $1")
        .bind(hold.as_str())
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get("id"))
        .transpose()?;
    match id {
        Some(id) => order(pool, &OrderId::from_string(id)).await,
        None => Ok(None),
    }
}

/// A page of orders, with their tickets, of one user or one event.
pub(crate) async fn orders_page(
    pool: &AnyPool,
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
    let mut orders = fetch_all(pool, statement, rows::order).await?;
    for order in &mut orders {
        tickets_of(pool, order).await?;
    }
    Ok(orders)
}

async fn tickets_of(pool: &AnyPool, order: &mut Order) -> Result<(), StoreError> {
    let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE order_id = $1 ORDER BY id");
    order.tickets = fetch_all(
        pool,
        sqlx::query(&sql).bind(order.id.as_str()),
        rows::ticket,
    )
    .await?;
    Ok(())
}

pub(crate) async fn order_history(
    pool: &AnyPool,
    order: &OrderId,
) -> Result<Vec<OrderHistoryEntry>, StoreError> {
    let statement = sqlx::query(
        "SELECT sequence, kind, data, recorded_at FROM order_events WHERE order_id = $1 \
         ORDER BY sequence",
    )
    .bind(order.as_str());
    fetch_all(pool, statement, rows::order_history_entry).await
}

pub(crate) async fn idempotent_response(
    pool: &AnyPool,
    user: &UserId,
    key: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    let statement = sqlx::query(
        "SELECT request_hash, status_code, response FROM idempotency_keys \
         WHERE user_id = $1 AND key = $2",
    )
    .bind(user.as_str())
    .bind(key);
    fetch_optional(pool, statement, rows::stored_response).await
}
