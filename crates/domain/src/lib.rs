//! Marquee's domain: the nouns of the product (users, venues and their seat maps, events) and the
//! rules that keep them valid. Nothing here performs I/O or knows about HTTP, SQL or JSON wire
//! formats; the `api` crate parses wire types into these types at the edge, and every other crate
//! can rely on a value of a domain type being valid.
//!
//! **Invariant:** a value of `Venue`, `Event` or one of their parts was built through a `parse`
//! or constructor function here, so it satisfies every rule written in this crate.

mod event;
mod ids;
mod inventory;
mod user;
mod validation;
mod venue;

pub use event::{
    Category, Event, EventDetails, EventPatch, EventStatus, OrderLimits, PriceTier, PricingError,
    StreamingSettings, TransitionError, WaitingRoomSettings,
};
pub use ids::{EventId, SeatId, UserId, VenueId};
pub use inventory::{
    GeneralAdmissionQuantity, Hold, HoldId, HoldStatus, Order, OrderId, OrderStatus, Ticket,
    TicketId,
};
pub use user::{DisplayName, Email, Password, Role, User};
pub use validation::{FieldErrors, FieldResult};
pub use venue::{
    Coordinates, GeneralAdmissionArea, Row, SeatLayout, SeatMap, SeatMapLimits, Section,
    SectionLayout, SectionSpec, Venue, VenueDetails,
};

/// Trims a free-text value and checks its length in characters (not bytes).
pub(crate) fn bounded_text(raw: &str, min: usize, max: usize) -> FieldResult<String> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if count < min {
        return Err(if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if count > max {
        return Err(format!("must be at most {max} characters"));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".to_string());
    }
    Ok(trimmed.to_string())
}

/// The current time at the precision the stores keep (milliseconds), so that a value written and
/// read back compares equal to the one the caller holds.
pub fn timestamp_now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}
