//! Turning `sqlx::any` rows back into domain values, for both engines. The `Any` driver speaks
//! only plain types (text, integers, floats), so every conversion from those is spelled out here,
//! once, next to the column lists the conversions expect.

use crate::{ChangeKind, ChangeRecord, OrderHistoryEntry, StoreError, StoredResponse};
use chrono::{DateTime, Utc};
use marquee_domain::{
    Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus,
    GeneralAdmissionQuantity, Hold, HoldId, HoldStatus, Order, OrderId, OrderStatus, Role, SeatId,
    SeatMap, Ticket, TicketId, User, UserId, Venue, VenueDetails, VenueId,
};
use sqlx::any::AnyRow;
use sqlx::Row;

pub(crate) const USER_COLUMNS: &str = "id, email, name, role, created_at";
pub(crate) const VENUE_COLUMNS: &str =
    "id, owner_id, name, address, city, country, lat, lon, seat_map, created_at";
pub(crate) const EVENT_COLUMNS: &str =
    "id, owner_id, venue_id, status, version, details, created_at, updated_at";
pub(crate) const WEBHOOK_COLUMNS: &str =
    "id, organizer_id, url, events, secret, description, created_at";
pub(crate) const STREAM_COLUMNS: &str =
    "event_id, status, problem, version, key_issued_at, updated_at";
pub(crate) const RECORDING_COLUMNS: &str =
    "id, event_id, object_key, bytes, duration_ms, started_at, ended_at";
pub(crate) const CHANGE_COLUMNS: &str = "position, entity_id, kind, payload, recorded_at";
pub(crate) const HOLD_COLUMNS: &str = "id, event_id, user_id, seat_ids, ga_section, ga_quantity, \
     fencing_token, status, extended, expires_at, created_at";
pub(crate) const ORDER_COLUMNS: &str =
    "id, event_id, user_id, hold_id, status, total_cents, currency, payment_reference, created_at";
pub(crate) const TICKET_COLUMNS: &str =
    "id, seat_id, section, row_label, number, price_cents, code, checked_in_at";

pub(crate) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// Fencing tokens are `u64` in the domain and `BIGINT` in the schema; tokens past `i64::MAX`
/// never occur (they count lease grants), so saturating is only a guard.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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

/// A `holds` row as stored, read by either driver (`sqlx` or the SQLite writer's `rusqlite`) and
/// turned into a [`Hold`] in one place.
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

pub(crate) fn hold(row: &AnyRow) -> Result<Hold, StoreError> {
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

/// An order without its tickets (they are read separately, see [`TICKET_COLUMNS`]).
pub(crate) fn order(row: &AnyRow) -> Result<Order, StoreError> {
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

pub(crate) fn ticket(row: &AnyRow) -> Result<Ticket, StoreError> {
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

pub(crate) fn order_history_entry(row: &AnyRow) -> Result<OrderHistoryEntry, StoreError> {
    let data: String = row.try_get("data")?;
    Ok(OrderHistoryEntry {
        sequence: row.try_get("sequence")?,
        kind: row.try_get("kind")?,
        data: serde_json::from_str(&data)?,
        recorded_at: time(row, "recorded_at")?,
    })
}

pub(crate) fn stored_response(row: &AnyRow) -> Result<StoredResponse, StoreError> {
    let status: i64 = row.try_get("status_code")?;
    Ok(StoredResponse {
        request_hash: row.try_get("request_hash")?,
        status_code: u16::try_from(status).unwrap_or(500),
        body: row.try_get("response")?,
    })
}
