//! Holds, orders and tickets: what a fan has reserved or bought.

use crate::{EventId, SeatId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

macro_rules! inventory_id {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                Self(crate::ids::monotonic_ulid().to_string())
            }

            pub fn from_string(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

inventory_id!(HoldId);
inventory_id!(OrderId);
inventory_id!(TicketId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Holding its seats until `expires_at`.
    Active,
    /// Given back by the fan.
    Released,
    /// Ran out of time.
    Lapsed,
    /// Turned into an order.
    Ordered,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Released => "released",
            HoldStatus::Lapsed => "lapsed",
            HoldStatus::Ordered => "ordered",
        }
    }

    pub fn parse(raw: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Active,
            HoldStatus::Released,
            HoldStatus::Lapsed,
            HoldStatus::Ordered,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }
}

/// Places held in a general-admission section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralAdmissionQuantity {
    pub section: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub seat_ids: Vec<SeatId>,
    pub general_admission: Option<GeneralAdmissionQuantity>,
    /// The lease's fencing token; an order is written only while it is still the newest.
    pub fencing_token: u64,
    pub status: HoldStatus,
    pub extended: bool,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Hold {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == HoldStatus::Active && self.expires_at > now
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// An order's state is derived from its append-only history: confirmed once paid, refunded
    /// once a refund is recorded. Check-ins do not change it.
    pub fn from_history<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Option<OrderStatus> {
        kinds.into_iter().fold(None, |status, kind| match kind {
            "paid" => Some(OrderStatus::Confirmed),
            "refunded" => Some(OrderStatus::Refunded),
            _ => status,
        })
    }

    pub fn parse(raw: &str) -> Option<OrderStatus> {
        match raw {
            "confirmed" => Some(OrderStatus::Confirmed),
            "refunded" => Some(OrderStatus::Refunded),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub seat_id: Option<SeatId>,
    pub section: String,
    pub row: Option<String>,
    pub number: Option<u32>,
    pub price_cents: i64,
    /// A signed value naming the ticket; see the inventory crate.
    pub code: String,
    pub checked_in_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub hold_id: HoldId,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub currency: String,
    pub payment_reference: String,
    pub tickets: Vec<Ticket>,
    pub created_at: DateTime<Utc>,
}
