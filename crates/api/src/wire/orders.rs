//! Holds, orders and tickets on the wire.

use chrono::{DateTime, Utc};
use marquee_domain::{Hold, HoldStatus, Order, Ticket};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One of three shapes: `seat_ids`; `quantity` (best available, optionally in `section`); or
/// `general_admission`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct HoldRequestBody {
    pub seat_ids: Option<Vec<String>>,
    pub quantity: Option<i64>,
    pub section: Option<String>,
    pub general_admission: Option<GeneralAdmissionRequest>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct GeneralAdmissionRequest {
    pub section: String,
    pub quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeneralAdmissionBody {
    pub section: String,
    pub quantity: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldBody {
    pub id: String,
    pub event_id: String,
    pub seat_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub general_admission: Option<GeneralAdmissionBody>,
    /// `active`, `released`, `lapsed` or `ordered`.
    pub status: &'static str,
    pub expires_at: DateTime<Utc>,
    pub extended: bool,
    /// The lease's fencing token: grows with every grant.
    pub fencing_token: u64,
    pub created_at: DateTime<Utc>,
}

impl From<&Hold> for HoldBody {
    fn from(hold: &Hold) -> Self {
        HoldBody {
            id: hold.id.to_string(),
            event_id: hold.event_id.to_string(),
            seat_ids: hold.seat_ids.iter().map(ToString::to_string).collect(),
            general_admission: hold.general_admission.as_ref().map(|general| {
                GeneralAdmissionBody {
                    section: general.section.clone(),
                    quantity: general.quantity,
                }
            }),
            // Past its deadline an active hold has lapsed, even in the moment before the lapse
            // follower records it: the seat map already shows its seats available.
            status: if hold.status == HoldStatus::Active && !hold.is_live(Utc::now()) {
                HoldStatus::Lapsed.as_str()
            } else {
                hold.status.as_str()
            },
            expires_at: hold.expires_at,
            extended: hold.extended,
            fencing_token: hold.fencing_token,
            created_at: hold.created_at,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CreateOrderRequest {
    pub hold_id: String,
    pub payment: PaymentRequest,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PaymentRequest {
    /// `card`.
    pub method: String,
    /// With the built-in test provider: `tok_visa` approves, `tok_declined` declines,
    /// `tok_slow` times out.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketBody {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat_id: Option<String>,
    pub section: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    pub price_cents: i64,
    /// Signed: cannot be forged or guessed. Shown at the door.
    pub code: String,
    pub checked_in_at: Option<DateTime<Utc>>,
}

impl From<&Ticket> for TicketBody {
    fn from(ticket: &Ticket) -> Self {
        TicketBody {
            id: ticket.id.to_string(),
            seat_id: ticket.seat_id.as_ref().map(ToString::to_string),
            section: ticket.section.clone(),
            row: ticket.row.clone(),
            number: ticket.number,
            price_cents: ticket.price_cents,
            code: ticket.code.clone(),
            checked_in_at: ticket.checked_in_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    pub id: String,
    /// `confirmed` or `refunded`.
    pub status: &'static str,
    pub event_id: String,
    pub hold_id: String,
    pub total_cents: i64,
    pub currency: String,
    pub tickets: Vec<TicketBody>,
    pub created_at: DateTime<Utc>,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        OrderBody {
            id: order.id.to_string(),
            status: order.status.as_str(),
            event_id: order.event_id.to_string(),
            hold_id: order.hold_id.to_string(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            tickets: order.tickets.iter().map(TicketBody::from).collect(),
            created_at: order.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderHistoryBody {
    pub sequence: i64,
    /// `created`, `paid`, `refunded` or `checked_in`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CheckInRequest {
    /// The ticket's code, as shown on the ticket.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckInBody {
    pub ticket: TicketBody,
}
