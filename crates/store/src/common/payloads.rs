//! What the outbox and an order's history carry, built the same way by both engines so a
//! follower cannot tell which engine wrote a change.

use crate::{ChangeKind, StreamRecord};
use chrono::{DateTime, Utc};
use marquee_domain::{
    EventId, GeneralAdmissionQuantity, Hold, HoldId, Order, OrderId, SeatId, UserId,
};
use serde::Serialize;
use std::collections::HashMap;

/// A `user.registered` change: emails do not travel on the change stream.
#[derive(Serialize)]
pub(crate) struct UserChange<'a> {
    pub(crate) id: &'a UserId,
    pub(crate) name: &'a str,
    pub(crate) role: &'a str,
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

/// What a `stream.status` change carries (and the push channel shows).
pub(crate) fn stream_payload(stream: &StreamRecord) -> serde_json::Value {
    serde_json::json!({
        "status": stream.status,
        "problem": stream.problem,
        "version": stream.version,
    })
}

/// The first two records of every order's history: created, then paid (sequences 1 and 2).
pub(crate) fn new_order_history(order: &Order) -> (String, String) {
    let created = serde_json::json!({
        "total_cents": order.total_cents,
        "currency": order.currency,
        "tickets": order.tickets.len(),
    });
    let paid = serde_json::json!({"payment_reference": order.payment_reference});
    (created.to_string(), paid.to_string())
}

/// How many general-admission places each section of a refunded order gives back.
pub(crate) fn standing_places(order: &Order) -> HashMap<&str, u32> {
    let mut standing: HashMap<&str, u32> = HashMap::new();
    for ticket in order
        .tickets
        .iter()
        .filter(|ticket| ticket.seat_id.is_none())
    {
        *standing.entry(ticket.section.as_str()).or_default() += 1;
    }
    standing
}

/// The general-admission part a refund announces: one section's (an order's places are all in
/// the section its hold reserved).
pub(crate) fn announced_section(standing: &HashMap<&str, u32>) -> Option<GeneralAdmissionQuantity> {
    standing
        .iter()
        .next()
        .map(|(section, quantity)| GeneralAdmissionQuantity {
            section: (*section).to_string(),
            quantity: *quantity,
        })
}
