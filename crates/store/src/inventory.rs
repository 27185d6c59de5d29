//! The inventory's records: holds, orders, tickets, fences, general-admission counters and
//! idempotency keys, on the same engines as the catalog (`sqlite::inventory`,
//! `postgres::inventory`).
//!
//! Leases decide who holds a seat; these tables are the durable record and the **last guard**:
//! - a partial unique index allows one valid ticket per (event, seat);
//! - `general_admission` has a CHECK that held + sold never exceed capacity, and every change to
//!   it is a conditional UPDATE;
//! - `seat_fences` keeps the largest fencing token that has held each seat; an order commits
//!   only if its hold's token is still that largest one, so a hold whose lease lapsed and was
//!   granted to someone newer cannot sell, however the timing falls.

use crate::{ChangePosition, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{
    EventId, Hold, HoldId, HoldStatus, Order, OrderId, SeatId, Ticket, TicketId, UserId,
};
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
    /// Deletes up to `limit` kept responses stored before `before` (their retention is over: a
    /// retry after that is a new request), oldest first; how many were deleted.
    async fn forget_idempotent_responses(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;
}
