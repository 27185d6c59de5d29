//! Turning `sqlx::any` rows back into domain values. The `Any` driver speaks only plain types
//! (text, integers, floats), so every conversion from those is spelled out here, once.

use crate::{ChangeKind, ChangeRecord, StoreError};
use chrono::{DateTime, Utc};
use marquee_domain::{
    Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus, Role, SeatMap,
    User, UserId, Venue, VenueDetails, VenueId,
};
use sqlx::any::AnyRow;
use sqlx::Row;

pub(crate) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let millis: i64 = row.try_get(column)?;
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} out of range: {millis}")))
}

fn corrupt(column: &str, message: String) -> StoreError {
    StoreError::Corrupt(format!("{column}: {message}"))
}

pub(crate) fn user(row: &AnyRow) -> Result<User, StoreError> {
    let email: String = row.try_get("email")?;
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    Ok(User {
        id: UserId::from_string(row.try_get::<String, _>("id")?),
        email: Email::parse(&email).map_err(|m| corrupt("email", m))?,
        name: DisplayName::parse(&name).map_err(|m| corrupt("name", m))?,
        role: Role::parse(&role).map_err(|m| corrupt("role", m))?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn venue(row: &AnyRow) -> Result<Venue, StoreError> {
    let lat: f64 = row.try_get("lat")?;
    let lon: f64 = row.try_get("lon")?;
    let seat_map: String = row.try_get("seat_map")?;
    let seat_map: SeatMap = serde_json::from_str(&seat_map)?;
    Ok(Venue {
        id: VenueId::from_string(row.try_get::<String, _>("id")?),
        owner_id: UserId::from_string(row.try_get::<String, _>("owner_id")?),
        details: VenueDetails {
            name: row.try_get("name")?,
            address: row.try_get("address")?,
            city: row.try_get("city")?,
            country: row.try_get("country")?,
            location: Coordinates::new(lat, lon).map_err(|m| corrupt("lat/lon", m))?,
        },
        seat_map,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn event(row: &AnyRow) -> Result<Event, StoreError> {
    let status: String = row.try_get("status")?;
    let details: String = row.try_get("details")?;
    let details: EventDetails = serde_json::from_str(&details)?;
    Ok(Event {
        id: EventId::from_string(row.try_get::<String, _>("id")?),
        owner_id: UserId::from_string(row.try_get::<String, _>("owner_id")?),
        venue_id: VenueId::from_string(row.try_get::<String, _>("venue_id")?),
        status: EventStatus::parse(&status).map_err(|m| corrupt("status", m))?,
        version: row.try_get("version")?,
        details,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn change(row: &AnyRow) -> Result<ChangeRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let payload: String = row.try_get("payload")?;
    Ok(ChangeRecord {
        position: row.try_get("position")?,
        kind: ChangeKind::parse(&kind)
            .ok_or_else(|| corrupt("kind", format!("unknown change kind {kind:?}")))?,
        entity_id: row.try_get("entity_id")?,
        payload: serde_json::from_str(&payload)?,
        recorded_at: time(row, "recorded_at")?,
    })
}

pub(crate) fn webhook(row: &AnyRow) -> Result<crate::WebhookEndpoint, StoreError> {
    let events: String = row.try_get("events")?;
    Ok(crate::WebhookEndpoint {
        id: row.try_get("id")?,
        organizer_id: UserId::from_string(row.try_get::<String, _>("organizer_id")?),
        url: row.try_get("url")?,
        events: serde_json::from_str(&events).map_err(|e| corrupt("events", e.to_string()))?,
        secret: row.try_get("secret")?,
        description: row.try_get("description")?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn stream(row: &AnyRow) -> Result<crate::StreamRecord, StoreError> {
    Ok(crate::StreamRecord {
        event_id: EventId::from_string(row.try_get::<String, _>("event_id")?),
        status: row.try_get("status")?,
        problem: row.try_get("problem")?,
        version: row.try_get("version")?,
        key_issued_at: time(row, "key_issued_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn recording(row: &AnyRow) -> Result<crate::Recording, StoreError> {
    Ok(crate::Recording {
        id: row.try_get("id")?,
        event_id: EventId::from_string(row.try_get::<String, _>("event_id")?),
        object_key: row.try_get("object_key")?,
        bytes: row.try_get("bytes")?,
        duration_ms: row.try_get("duration_ms")?,
        started_at: time(row, "started_at")?,
        ended_at: time(row, "ended_at")?,
    })
}
