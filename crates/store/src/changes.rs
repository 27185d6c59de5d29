//! The records of the outbox: what changed, in which order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A position in the change stream. Positions only grow; zero is "before the first change".
pub type ChangePosition = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    User,
    Venue,
    Event,
    /// Seat inventory of one event; the entity id is the event's.
    Seats,
    /// The live stream of one event; the entity id is the event's.
    Stream,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Venue => "venue",
            EntityKind::Event => "event",
            EntityKind::Seats => "seats",
            EntityKind::Stream => "stream",
        }
    }
}

/// What happened. The payload of each kind is the entity as it is after the change (for users,
/// only id, name and role: emails do not travel on the change stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    #[serde(rename = "user.registered")]
    UserRegistered,
    #[serde(rename = "venue.created")]
    VenueCreated,
    #[serde(rename = "event.created")]
    EventCreated,
    #[serde(rename = "event.updated")]
    EventUpdated,
    #[serde(rename = "event.published")]
    EventPublished,
    #[serde(rename = "event.cancelled")]
    EventCancelled,
    #[serde(rename = "seats.held")]
    SeatsHeld,
    /// Seats available again: a hold released or lapsed, or an order refunded.
    #[serde(rename = "seats.available")]
    SeatsAvailable,
    #[serde(rename = "seats.sold")]
    SeatsSold,
    /// A live stream went idle, live or ended (payload: status, problem, version).
    #[serde(rename = "stream.status")]
    StreamStatus,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 10] = [
        ChangeKind::UserRegistered,
        ChangeKind::VenueCreated,
        ChangeKind::EventCreated,
        ChangeKind::EventUpdated,
        ChangeKind::EventPublished,
        ChangeKind::EventCancelled,
        ChangeKind::SeatsHeld,
        ChangeKind::SeatsAvailable,
        ChangeKind::SeatsSold,
        ChangeKind::StreamStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::UserRegistered => "user.registered",
            ChangeKind::VenueCreated => "venue.created",
            ChangeKind::EventCreated => "event.created",
            ChangeKind::EventUpdated => "event.updated",
            ChangeKind::EventPublished => "event.published",
            ChangeKind::EventCancelled => "event.cancelled",
            ChangeKind::SeatsHeld => "seats.held",
            ChangeKind::SeatsAvailable => "seats.available",
            ChangeKind::SeatsSold => "seats.sold",
            ChangeKind::StreamStatus => "stream.status",
        }
    }

    pub fn parse(raw: &str) -> Option<ChangeKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    pub fn entity(self) -> EntityKind {
        match self {
            ChangeKind::UserRegistered => EntityKind::User,
            ChangeKind::VenueCreated => EntityKind::Venue,
            ChangeKind::EventCreated
            | ChangeKind::EventUpdated
            | ChangeKind::EventPublished
            | ChangeKind::EventCancelled => EntityKind::Event,
            ChangeKind::SeatsHeld | ChangeKind::SeatsAvailable | ChangeKind::SeatsSold => {
                EntityKind::Seats
            }
            ChangeKind::StreamStatus => EntityKind::Stream,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub position: ChangePosition,
    pub kind: ChangeKind,
    pub entity_id: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}
