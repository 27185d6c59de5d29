//! The catalog's reads, one SQL text for both engines: plain `SELECT`s outside any transaction,
//! which neither engine's write path (gate, outbox turn, advisory lock) is involved in.

use crate::common::rows::{
    self, CHANGE_COLUMNS, EVENT_COLUMNS, RECORDING_COLUMNS, STREAM_COLUMNS, USER_COLUMNS,
    VENUE_COLUMNS, WEBHOOK_COLUMNS,
};
use crate::{
    ChangePosition, ChangeRecord, EventQuery, Recording, StoreError, StoredCredentials,
    StreamRecord, VenueQuery, WebhookEndpoint,
};
use marquee_domain::{Email, Event, EventId, EventStatus, User, UserId, Venue, VenueId};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Row};

pub(crate) async fn fetch_optional<'q, T>(
    pool: &AnyPool,
    query: Query<'q, Any, AnyArguments<'q>>,
    map: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    query
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(map)
        .transpose()
}

pub(crate) async fn fetch_all<'q, T>(
    pool: &AnyPool,
    query: Query<'q, Any, AnyArguments<'q>>,
    map: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    query.fetch_all(pool).await?.iter().map(map).collect()
}

pub(crate) async fn ping(pool: &AnyPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

pub(crate) async fn user(pool: &AnyPool, id: &UserId) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(id.as_str()), rows::user).await
}

pub(crate) async fn credentials_by_email(
    pool: &AnyPool,
    email: &Email,
) -> Result<Option<StoredCredentials>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(email.as_str()), |row| {
        Ok(StoredCredentials {
            user: rows::user(row)?,
            password_hash: row.try_get("password_hash")?,
        })
    })
    .await
}

pub(crate) async fn venue(pool: &AnyPool, id: &VenueId) -> Result<Option<Venue>, StoreError> {
    let sql = format!("SELECT {VENUE_COLUMNS} FROM venues WHERE id = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(id.as_str()), rows::venue).await
}

pub(crate) async fn list_venues(
    pool: &AnyPool,
    query: &VenueQuery,
) -> Result<Vec<Venue>, StoreError> {
    let sql = format!(
        "SELECT {VENUE_COLUMNS} FROM venues \
         WHERE ($1 IS NULL OR owner_id = $1) AND ($2 IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    );
    let statement = sqlx::query(&sql)
        .bind(query.owner.as_ref().map(|id| id.as_str().to_string()))
        .bind(query.after.as_ref().map(|id| id.as_str().to_string()))
        .bind(i64::from(query.limit));
    fetch_all(pool, statement, rows::venue).await
}

pub(crate) async fn event(pool: &AnyPool, id: &EventId) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(id.as_str()), rows::event).await
}

pub(crate) async fn list_events(
    pool: &AnyPool,
    query: &EventQuery,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE ($1 IS NULL OR owner_id = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    );
    let statement = sqlx::query(&sql)
        .bind(query.owner.as_ref().map(|id| id.as_str().to_string()))
        .bind(query.status.map(|status| status.as_str().to_string()))
        .bind(query.after.as_ref().map(|id| id.as_str().to_string()))
        .bind(i64::from(query.limit));
    fetch_all(pool, statement, rows::event).await
}

pub(crate) async fn count_events(
    pool: &AnyPool,
    status: Option<EventStatus>,
) -> Result<u64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS count FROM events WHERE ($1 IS NULL OR status = $1)")
        .bind(status.map(|status| status.as_str().to_string()))
        .fetch_one(pool)
        .await?;
    let count: i64 = row.try_get("count")?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) async fn read_changes(
    pool: &AnyPool,
    after: ChangePosition,
    limit: u32,
) -> Result<Vec<ChangeRecord>, StoreError> {
    let sql = format!(
        "SELECT {CHANGE_COLUMNS} FROM outbox WHERE position > $1 ORDER BY position LIMIT $2"
    );
    let statement = sqlx::query(&sql).bind(after).bind(i64::from(limit));
    fetch_all(pool, statement, rows::change).await
}

pub(crate) async fn latest_change(pool: &AnyPool) -> Result<ChangePosition, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS position FROM outbox")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("position")?)
}

pub(crate) async fn webhook(
    pool: &AnyPool,
    id: &str,
) -> Result<Option<WebhookEndpoint>, StoreError> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(id), rows::webhook).await
}

pub(crate) async fn webhooks_of(
    pool: &AnyPool,
    organizer: &UserId,
) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE organizer_id = $1 ORDER BY id");
    fetch_all(
        pool,
        sqlx::query(&sql).bind(organizer.as_str()),
        rows::webhook,
    )
    .await
}

pub(crate) async fn stream_by_key_hash(
    pool: &AnyPool,
    key_hash: &str,
) -> Result<Option<EventId>, StoreError> {
    fetch_optional(
        pool,
        sqlx::query("SELECT event_id FROM event_streams WHERE key_hash = $1").bind(key_hash),
        |row| Ok(EventId::from_string(row.try_get::<String, _>("event_id")?)),
    )
    .await
}

pub(crate) async fn stream(
    pool: &AnyPool,
    event: &EventId,
) -> Result<Option<StreamRecord>, StoreError> {
    let sql = format!("SELECT {STREAM_COLUMNS} FROM event_streams WHERE event_id = $1");
    fetch_optional(pool, sqlx::query(&sql).bind(event.as_str()), rows::stream).await
}

pub(crate) async fn holds_ticket(
    pool: &AnyPool,
    user: &UserId,
    event: &EventId,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT 1 AS held FROM orders WHERE user_id = $1 AND event_id = $2 \
         AND status = 'confirmed' LIMIT 1",
    )
    .bind(user.as_str())
    .bind(event.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

pub(crate) async fn recordings_of(
    pool: &AnyPool,
    event: &EventId,
) -> Result<Vec<Recording>, StoreError> {
    let sql = format!(
        "SELECT {RECORDING_COLUMNS} FROM recordings WHERE event_id = $1 \
         ORDER BY started_at, id LIMIT 1000"
    );
    fetch_all(
        pool,
        sqlx::query(&sql).bind(event.as_str()),
        rows::recording,
    )
    .await
}
