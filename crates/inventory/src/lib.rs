//! The seat inventory: holds (explicit seats, best-available, general admission), their release,
//! extension and lapse, and orders that turn a live hold into tickets.
//!
//! How a seat is never sold twice, layer by layer:
//! 1. **Leases** (`marquee-lease`): a hold acquires one lease over all its seats plus a per-fan key
//!    for the event, all or nothing; so two fans never hold one seat, and a fan holds at most one
//!    live hold per event. The lease lapses by itself after the hold TTL. Lease keys carry the
//!    event as their hash tag (`seat:{event}:A12`), so a hold's keys share one Redis Cluster slot.
//! 2. **Fencing**: each lease has a token larger than every earlier one of its event (tokens are
//!    counted per hash tag; a seat's fence only ever compares tokens of its own event); creating
//!    a hold raises each seat's fence to it, and an order commits only while its token is still
//!    the fence.
//!    A fan whose hold lapsed and whose seats were re-held cannot buy them, whatever the timing.
//! 3. **The database**: one valid ticket per (event, seat) by a unique index, and
//!    general-admission counters that a CHECK keeps within capacity.
//!
//! **Boundary:** no HTTP here. Errors are [`InventoryError`]; the api crate maps them.

mod best_available;
mod payment;
mod tickets;

pub use payment::{PaymentError, PaymentProvider, PaymentReceipt, TestPaymentProvider};
pub use tickets::TicketSigner;

use chrono::{DateTime, Utc};
use marquee_domain::{
    Event, EventId, EventStatus, FieldErrors, GeneralAdmissionQuantity, Hold, HoldId, HoldStatus,
    Order, OrderId, OrderLimits, OrderStatus, SeatId, SectionLayout, Ticket, TicketId, UserId,
    Venue,
};
use marquee_lease::{FencingToken, Lease, LeaseError, LeaseStore};
use marquee_store::{CatalogStore, CheckIn, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What a fan asks to hold.
#[derive(Debug, Clone)]
pub enum HoldRequest {
    Seats(Vec<String>),
    BestAvailable {
        quantity: i64,
        section: Option<String>,
    },
    GeneralAdmission {
        section: String,
        quantity: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("invalid hold request: {0}")]
    Invalid(FieldErrors),
    #[error("seats are not available: {seat_ids:?}")]
    SeatsUnavailable { seat_ids: Vec<String> },
    #[error("not enough places left in {section:?}")]
    SoldOut { section: String },
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    NotOnSale(&'static str),
    #[error("hold not found")]
    HoldNotFound,
    #[error("the hold has expired or ended")]
    HoldExpired,
    #[error("the hold was already extended once")]
    AlreadyExtended,
    #[error("the order was already refunded")]
    AlreadyRefunded,
    #[error("fans can refund only before the event starts")]
    RefundWindowClosed,
    #[error("no ticket with that code for this event")]
    TicketNotFound,
    #[error("the ticket was checked in at {0}")]
    AlreadyCheckedIn(DateTime<Utc>),
    #[error("the ticket was refunded")]
    TicketRefunded,
    #[error("payment declined")]
    PaymentDeclined,
    #[error("payment failed: {0}")]
    PaymentFailed(PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(LeaseError),
}

#[derive(Debug, Clone)]
pub struct InventorySettings {
    pub hold_ttl: Duration,
    /// How long a payment may take before the order fails (and the hold stays).
    pub payment_timeout: Duration,
    /// How often holds past their deadline are ended even though no lapse was announced for
    /// them (see [`Inventory::spawn_lapse_follower`]).
    pub lapse_sweep: Duration,
    /// How long an idempotency key's response is kept for replay; the lapse sweep deletes older
    /// ones, so the table holds about a day of requests instead of growing forever.
    pub idempotency_retention: Duration,
}

impl Default for InventorySettings {
    fn default() -> Self {
        InventorySettings {
            hold_ttl: Duration::from_secs(600),
            payment_timeout: Duration::from_secs(10),
            lapse_sweep: Duration::from_secs(30),
            idempotency_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Ids in one request beyond this are refused before any lookup.
pub const MAX_SEAT_IDS_PER_REQUEST: usize = OrderLimits::MAX as usize;

pub struct Inventory {
    store: Arc<dyn CatalogStore>,
    leases: Arc<dyn LeaseStore>,
    payments: Arc<dyn PaymentProvider>,
    signer: TicketSigner,
    settings: InventorySettings,
    /// Best-available requests being served by this process, to tell a rush from a quiet sale.
    best_available_in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a best-available request in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The event in braces is the lease's hash tag: one hold's keys (its seats and the fan key) are
/// of one event, so they share a Redis Cluster slot and a fencing counter, and events spread
/// over the cluster.
fn seat_key(event: &EventId, seat: &SeatId) -> String {
    format!("{}{seat}", seat_key_prefix(event))
}

fn seat_key_prefix(event: &EventId) -> String {
    format!("seat:{{{event}}}:")
}

fn fan_key(event: &EventId, user: &UserId) -> String {
    format!("fan:{{{event}}}:{user}")
}

/// The lease keys a hold of `seats` by `user` takes: one per seat and the fan's own key for the
/// event, all under the event's hash tag.
pub fn lease_keys(event: &EventId, user: &UserId, seats: &[SeatId]) -> Vec<String> {
    let mut keys: Vec<String> = seats.iter().map(|seat| seat_key(event, seat)).collect();
    keys.push(fan_key(event, user));
    keys
}

fn lease_of(hold: &Hold) -> Lease {
    Lease {
        keys: lease_keys(&hold.event_id, &hold.user_id, &hold.seat_ids),
        holder: hold.id.to_string(),
        token: FencingToken(hold.fencing_token),
        expires_at: hold.expires_at,
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

impl Inventory {
    pub fn new(
        store: Arc<dyn CatalogStore>,
        leases: Arc<dyn LeaseStore>,
        payments: Arc<dyn PaymentProvider>,
        signer: TicketSigner,
        settings: InventorySettings,
    ) -> Arc<Inventory> {
        Arc::new(Inventory {
            store,
            leases,
            payments,
            signer,
            settings,
            best_available_in_flight: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn leases(&self) -> &Arc<dyn LeaseStore> {
        &self.leases
    }

    /// Holds seats for `user`, all or nothing.
    pub async fn hold(
        &self,
        event: &Event,
        venue: &Venue,
        user: &UserId,
        request: HoldRequest,
    ) -> Result<Hold, InventoryError> {
        self.hold_as(event, venue, user, request, None).await
    }

    /// [`Inventory::hold`], with the hold's id chosen by the caller: one derived from the
    /// request's idempotency key, so that a retry whose first attempt made the hold but never
    /// got the answer (the node died in between) is given that hold instead of being told the
    /// fan already holds seats.
    pub async fn hold_as(
        &self,
        event: &Event,
        venue: &Venue,
        user: &UserId,
        request: HoldRequest,
        id: Option<HoldId>,
    ) -> Result<Hold, InventoryError> {
        let id = id.as_ref();
        let now = Utc::now();
        match event.status {
            EventStatus::Published => {}
            EventStatus::Draft => {
                return Err(InventoryError::NotOnSale("the event is not published"))
            }
            EventStatus::Cancelled => {
                return Err(InventoryError::NotOnSale("the event is cancelled"))
            }
        }
        if now < event.details.on_sale_at {
            return Err(InventoryError::NotOnSale("tickets are not on sale yet"));
        }
        if now >= event.details.starts_at {
            return Err(InventoryError::NotOnSale("the event has started"));
        }
        // One live hold per fan is enforced by the per-fan lease key, atomically with the
        // seats, so this hot path needs no database read before the lease.
        let max = event.details.limits.max_seats_per_order;
        match request {
            HoldRequest::Seats(raw) => {
                let seats = parse_seat_ids(venue, raw, max)?;
                self.acquire_and_record(event, user, seats, None, id).await
            }
            HoldRequest::BestAvailable { quantity, section } => {
                let quantity = parse_quantity(quantity, max)?;
                if let Some(name) = &section {
                    match venue.seat_map.section(name).map(|s| &s.layout) {
                        Some(SectionLayout::Reserved { .. }) => {}
                        _ => {
                            return Err(InventoryError::Invalid(FieldErrors::single(
                                "section",
                                "is not a reserved-seating section of this venue",
                            )))
                        }
                    }
                }
                self.hold_best_available(event, venue, user, quantity, section.as_deref(), id)
                    .await
            }
            HoldRequest::GeneralAdmission { section, quantity } => {
                let quantity = parse_quantity(quantity, max)?;
                let capacity = match venue.seat_map.section(&section).map(|s| &s.layout) {
                    Some(SectionLayout::GeneralAdmission { capacity }) => *capacity,
                    _ => {
                        return Err(InventoryError::Invalid(FieldErrors::single(
                            "general_admission.section",
                            "is not a general-admission section of this venue",
                        )))
                    }
                };
                let general = GeneralAdmissionQuantity { section, quantity };
                self.acquire_and_record(event, user, Vec::new(), Some((general, capacity)), id)
                    .await
            }
        }
    }

    async fn hold_best_available(
        &self,
        event: &Event,
        venue: &Venue,
        user: &UserId,
        quantity: u32,
        section: Option<&str>,
        id: Option<&HoldId>,
    ) -> Result<Hold, InventoryError> {
        let snapshot = self.store.seat_snapshot(&event.id, Utc::now()).await?;
        let mut unavailable: HashSet<SeatId> =
            snapshot.held.into_iter().chain(snapshot.sold).collect();
        // A quiet request gets the best run itself. In a rush (others in flight here, or a
        // collision with another node's) it picks among more of the best runs each attempt, so
        // concurrent fans stop choosing the same seats (see `best_available`).
        let others = self
            .best_available_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _in_flight = InFlight(&self.best_available_in_flight);
        for attempt in 0..4 {
            let spread = match (attempt, others) {
                (0, 0) => 1,
                (0, _) => BEST_AVAILABLE_SPREAD,
                _ => BEST_AVAILABLE_SPREAD << (2 * (attempt - 1)),
            };
            let chosen = best_available::choose(
                venue,
                section,
                quantity,
                &unavailable,
                spread,
                &mut rand::thread_rng(),
            );
            let Some(seats) = chosen else {
                return Err(InventoryError::SeatsUnavailable {
                    seat_ids: Vec::new(),
                });
            };
            match self.acquire_and_record(event, user, seats, None, id).await {
                Err(InventoryError::SeatsUnavailable { seat_ids }) if !seat_ids.is_empty() => {
                    unavailable.extend(seat_ids.into_iter().map(SeatId::from_string));
                }
                other => return other,
            }
        }
        Err(InventoryError::SeatsUnavailable {
            seat_ids: Vec::new(),
        })
    }

    async fn acquire_and_record(
        &self,
        event: &Event,
        user: &UserId,
        seats: Vec<SeatId>,
        general: Option<(GeneralAdmissionQuantity, u32)>,
        id: Option<&HoldId>,
    ) -> Result<Hold, InventoryError> {
        let hold_id = id.cloned().unwrap_or_else(HoldId::generate);
        let keys = lease_keys(&event.id, user, &seats);
        let lease = match self
            .leases
            .acquire(&keys, hold_id.as_str(), self.settings.hold_ttl)
            .await
        {
            Ok(lease) => lease,
            Err(LeaseError::Taken { keys: taken }) => {
                let fan = fan_key(&event.id, user);
                if taken.contains(&fan) {
                    if let Some(existing) = self.made_by_this_request(id, user).await? {
                        return Ok(existing);
                    }
                    return Err(InventoryError::LimitExceeded(
                        "you already hold seats for this event".into(),
                    ));
                }
                let prefix = seat_key_prefix(&event.id);
                return Err(InventoryError::SeatsUnavailable {
                    seat_ids: taken
                        .iter()
                        .filter_map(|key| key.strip_prefix(&prefix).map(str::to_string))
                        .collect(),
                });
            }
            Err(other) => return Err(InventoryError::Lease(other)),
        };
        let now = marquee_domain::timestamp_now();
        let (general_admission, capacity) = match general {
            Some((general, capacity)) => (Some(general), Some(capacity)),
            None => (None, None),
        };
        let hold = Hold {
            id: hold_id,
            event_id: event.id.clone(),
            user_id: user.clone(),
            seat_ids: seats,
            general_admission,
            fencing_token: lease.token.0,
            status: HoldStatus::Active,
            extended: false,
            expires_at: now + chrono_duration(self.settings.hold_ttl),
            created_at: now,
        };
        let recorded = match self.store.create_hold(&hold, capacity).await {
            Err(StoreError::CapacityExceeded { section }) => {
                Err(InventoryError::SoldOut { section })
            }
            Err(StoreError::SeatsSold { seat_ids }) => {
                Err(InventoryError::SeatsUnavailable { seat_ids })
            }
            other => other.map_err(InventoryError::from),
        };
        if let Err(error) = recorded {
            // The id is taken: this request's first attempt made the hold. Its retry is given
            // that hold, and the lease it was granted again (the same one, its holder being the
            // hold's id) stays with the hold while the hold lives.
            if let Some(existing) = self.made_by_this_request(id, user).await? {
                if existing.status != HoldStatus::Active {
                    let _ = self.leases.release(&lease).await;
                }
                return Ok(existing);
            }
            let _ = self.leases.release(&lease).await;
            return Err(error);
        }
        Ok(hold)
    }

    /// The hold a request's earlier attempt made, when the request named its hold's id.
    async fn made_by_this_request(
        &self,
        id: Option<&HoldId>,
        user: &UserId,
    ) -> Result<Option<Hold>, InventoryError> {
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(self
            .store
            .hold(id)
            .await?
            .filter(|hold| &hold.user_id == user))
    }

    /// The hold, if it exists and belongs to `user`.
    pub async fn owned_hold(&self, id: &HoldId, user: &UserId) -> Result<Hold, InventoryError> {
        match self.store.hold(id).await? {
            Some(hold) if &hold.user_id == user => Ok(hold),
            _ => Err(InventoryError::HoldNotFound),
        }
    }

    /// The order `hold` already became, if it did: what a buyer who never got the answer (the
    /// node died after the commit, before its idempotency record was kept) is given when they
    /// ask again under the same idempotency key.
    pub async fn order_of_hold(&self, hold: &Hold) -> Result<Option<Order>, InventoryError> {
        if hold.status != HoldStatus::Ordered {
            return Ok(None);
        }
        Ok(self.store.order_of_hold(&hold.id).await?)
    }

    pub async fn release(&self, hold: &Hold) -> Result<(), InventoryError> {
        if !hold.is_live(Utc::now()) {
            return Err(InventoryError::HoldExpired);
        }
        if !self.store.end_hold(&hold.id, HoldStatus::Released).await? {
            return Err(InventoryError::HoldExpired);
        }
        let _ = self.leases.release(&lease_of(hold)).await;
        Ok(())
    }

    /// Extends a live hold once, to a full hold TTL from now.
    pub async fn extend(&self, hold: &Hold) -> Result<Hold, InventoryError> {
        if !hold.is_live(Utc::now()) {
            return Err(InventoryError::HoldExpired);
        }
        if hold.extended {
            return Err(InventoryError::AlreadyExtended);
        }
        match self
            .leases
            .extend(&lease_of(hold), self.settings.hold_ttl)
            .await
        {
            Ok(_) => {}
            Err(LeaseError::NotHeld) => return Err(InventoryError::HoldExpired),
            Err(other) => return Err(InventoryError::Lease(other)),
        }
        let expires_at = marquee_domain::timestamp_now() + chrono_duration(self.settings.hold_ttl);
        if !self.store.extend_hold(&hold.id, expires_at).await? {
            return Err(InventoryError::AlreadyExtended);
        }
        Ok(Hold {
            expires_at,
            extended: true,
            ..hold.clone()
        })
    }

    /// Charges for a live hold and turns it into an order with tickets.
    pub async fn confirm(
        &self,
        hold: &Hold,
        event: &Event,
        venue: &Venue,
        payment_token: &str,
    ) -> Result<Order, InventoryError> {
        let now = marquee_domain::timestamp_now();
        if event.status != EventStatus::Published {
            return Err(InventoryError::NotOnSale("the event is not on sale"));
        }
        if !hold.is_live(now) {
            return Err(InventoryError::HoldExpired);
        }
        let lease = lease_of(hold);
        match self.leases.is_held(&lease.keys, lease.token).await {
            Ok(true) => {}
            Ok(false) => return Err(InventoryError::HoldExpired),
            Err(error) => return Err(InventoryError::Lease(error)),
        }
        let order_id = OrderId::generate();
        let tickets = self.tickets_for(hold, event, venue)?;
        let total_cents = tickets.iter().map(|ticket| ticket.price_cents).sum();
        let currency = event
            .details
            .min_price()
            .map(|tier| tier.currency.clone())
            .unwrap_or_default();
        let charge = self
            .payments
            .charge(payment_token, total_cents, &currency, order_id.as_str());
        let receipt = match tokio::time::timeout(self.settings.payment_timeout, charge).await {
            Ok(Ok(receipt)) => receipt,
            Ok(Err(PaymentError::Declined)) => return Err(InventoryError::PaymentDeclined),
            Ok(Err(other)) => return Err(InventoryError::PaymentFailed(other)),
            Err(_) => return Err(InventoryError::PaymentFailed(PaymentError::TimedOut)),
        };
        let order = Order {
            id: order_id,
            event_id: event.id.clone(),
            user_id: hold.user_id.clone(),
            hold_id: hold.id.clone(),
            status: OrderStatus::Confirmed,
            total_cents,
            currency,
            payment_reference: receipt.reference,
            tickets,
            created_at: now,
        };
        let refused = match self.store.confirm_order(&order, hold).await {
            Ok(()) => None,
            Err(StoreError::HoldNotActive | StoreError::Fenced) => {
                Some(InventoryError::HoldExpired)
            }
            Err(StoreError::SeatsSold { seat_ids }) => {
                Some(InventoryError::SeatsUnavailable { seat_ids })
            }
            Err(StoreError::CapacityExceeded { section }) => {
                Some(InventoryError::SoldOut { section })
            }
            Err(other) => Some(other.into()),
        };
        if let Some(error) = refused {
            // The card was charged but no order exists: give the money back before answering.
            if let Err(refund) = self
                .payments
                .refund(&order.payment_reference, order.total_cents)
                .await
            {
                tracing::error!(order = %order.id, %refund, "a charge without an order could not be refunded");
            }
            return Err(error);
        }
        // The tickets are written: the seats stay unavailable without the lease.
        let _ = self.leases.release(&lease).await;
        Ok(order)
    }

    fn tickets_for(
        &self,
        hold: &Hold,
        event: &Event,
        venue: &Venue,
    ) -> Result<Vec<Ticket>, InventoryError> {
        let price_of = |section: &str| {
            event
                .details
                .tier_for_section(section)
                .map(|tier| tier.price_cents)
                .ok_or_else(|| {
                    InventoryError::Store(StoreError::Corrupt(format!(
                        "section {section:?} of event {} has no tier",
                        event.id
                    )))
                })
        };
        let mut tickets = Vec::new();
        for seat in &hold.seat_ids {
            let layout = venue.seat_map.locate(&venue.id, seat).ok_or_else(|| {
                InventoryError::Store(StoreError::Corrupt(format!(
                    "held seat {seat} is not in the map"
                )))
            })?;
            let id = TicketId::generate();
            tickets.push(Ticket {
                code: self.signer.code(&id, &event.id),
                id,
                seat_id: Some(seat.clone()),
                section: layout.section.to_string(),
                row: Some(layout.row.to_string()),
                number: Some(layout.number),
                price_cents: price_of(layout.section)?,
                checked_in_at: None,
            });
        }
        if let Some(general) = &hold.general_admission {
            let price = price_of(&general.section)?;
            for _ in 0..general.quantity {
                let id = TicketId::generate();
                tickets.push(Ticket {
                    code: self.signer.code(&id, &event.id),
                    id,
                    seat_id: None,
                    section: general.section.clone(),
                    row: None,
                    number: None,
                    price_cents: price,
                    checked_in_at: None,
                });
            }
        }
        Ok(tickets)
    }

    /// Ends holds whose lease lapsed, as lapses are announced, and sweeps holds past their
    /// deadline that nobody announced: at start (they expired while no process listened) and
    /// every `lapse_sweep` after (a Redis that restarted forgot its leases and their deadlines;
    /// without the sweep their holds would stay held in the store, and general-admission places
    /// with them, until a node restarted). Runs until the lease store is dropped.
    pub fn spawn_lapse_follower(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let inventory = Arc::clone(self);
        let mut lapses = self.leases.lapses();
        tokio::spawn(async move {
            inventory.sweep_expired().await;
            let mut sweep = tokio::time::interval(
                inventory
                    .settings
                    .lapse_sweep
                    .max(Duration::from_millis(10)),
            );
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            sweep.tick().await;
            loop {
                let lapsed = tokio::select! {
                    lapsed = lapses.recv() => lapsed,
                    _ = sweep.tick() => {
                        inventory.sweep_expired().await;
                        continue;
                    }
                };
                match lapsed {
                    Ok(lapsed) => {
                        let hold = HoldId::from_string(lapsed.holder);
                        match inventory.store.end_hold(&hold, HoldStatus::Lapsed).await {
                            Ok(_) | Err(StoreError::NotFound) => {}
                            Err(error) => tracing::warn!(%error, %hold, "could not lapse a hold"),
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "lapse announcements were missed; sweeping");
                        inventory.sweep_expired().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    async fn sweep_expired(&self) {
        self.forget_old_idempotency_records().await;
        loop {
            let expired = match self.store.expired_holds(Utc::now(), 500).await {
                Ok(expired) => expired,
                Err(error) => {
                    tracing::warn!(%error, "could not sweep expired holds");
                    return;
                }
            };
            if expired.is_empty() {
                return;
            }
            for hold in expired {
                if let Err(error) = self.store.end_hold(&hold.id, HoldStatus::Lapsed).await {
                    tracing::warn!(%error, hold = %hold.id, "could not lapse a hold");
                    return;
                }
            }
        }
    }

    /// Deletes responses kept past the retention, a batch at a time, at most a few batches a
    /// sweep so one sweep never runs long.
    async fn forget_old_idempotency_records(&self) {
        const BATCH: u32 = 1_000;
        let before = Utc::now() - chrono_duration(self.settings.idempotency_retention);
        for _ in 0..10 {
            match self.store.forget_idempotent_responses(before, BATCH).await {
                Ok(deleted) if deleted == u64::from(BATCH) => continue,
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, "could not delete expired idempotency records");
                    return;
                }
            }
        }
    }

    /// Refunds an order: the payment is returned, the tickets void, the places on sale again.
    /// `by_fan` applies the fans' rule: only before the event starts.
    pub async fn refund(
        &self,
        order: &Order,
        event: &Event,
        by_fan: bool,
        reason: &str,
    ) -> Result<Order, InventoryError> {
        if order.status == OrderStatus::Refunded {
            return Err(InventoryError::AlreadyRefunded);
        }
        if by_fan && Utc::now() >= event.details.starts_at {
            return Err(InventoryError::RefundWindowClosed);
        }
        self.payments
            .refund(&order.payment_reference, order.total_cents)
            .await
            .map_err(InventoryError::PaymentFailed)?;
        if !self.store.refund_order(order, reason).await? {
            return Err(InventoryError::AlreadyRefunded);
        }
        Ok(Order {
            status: OrderStatus::Refunded,
            ..order.clone()
        })
    }

    /// Refunds every confirmed order of a cancelled event; returns how many were refunded.
    pub async fn refund_all(&self, event: &Event) -> Result<usize, InventoryError> {
        let mut refunded = 0;
        let mut after: Option<OrderId> = None;
        loop {
            let page = self
                .store
                .orders_of_event(&event.id, after.as_ref(), 200)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for order in page.iter().filter(|o| o.status == OrderStatus::Confirmed) {
                match self.refund(order, event, false, "event cancelled").await {
                    Ok(_) => refunded += 1,
                    Err(InventoryError::AlreadyRefunded) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(refunded)
    }

    /// Admits the holder of a ticket code at the door, once.
    pub async fn check_in(&self, event: &Event, code: &str) -> Result<Ticket, InventoryError> {
        let ticket = self
            .signer
            .verify_reloading(code, &event.id)
            .await
            .ok_or(InventoryError::TicketNotFound)?;
        match self
            .store
            .check_in(&event.id, &ticket, marquee_domain::timestamp_now())
            .await?
        {
            CheckIn::Admitted(ticket) => Ok(ticket),
            CheckIn::AlreadyCheckedIn(at) => Err(InventoryError::AlreadyCheckedIn(at)),
            CheckIn::Refunded => Err(InventoryError::TicketRefunded),
            CheckIn::NotFound => Err(InventoryError::TicketNotFound),
        }
    }

    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>, InventoryError> {
        Ok(self.store.order(id).await?)
    }
}

/// In a rush, best-available requests choose among this many of the best runs at first, four
/// times more on each retry.
const BEST_AVAILABLE_SPREAD: usize = 8;

fn parse_quantity(quantity: i64, max: u32) -> Result<u32, InventoryError> {
    if !(1..=OrderLimits::MAX).contains(&quantity) {
        return Err(InventoryError::Invalid(FieldErrors::single(
            "quantity",
            format!("must be 1..={}", OrderLimits::MAX),
        )));
    }
    let quantity = u32::try_from(quantity).unwrap_or(u32::MAX);
    if quantity > max {
        return Err(InventoryError::LimitExceeded(format!(
            "at most {max} seats per order"
        )));
    }
    Ok(quantity)
}

fn parse_seat_ids(
    venue: &Venue,
    raw: Vec<String>,
    max: u32,
) -> Result<Vec<SeatId>, InventoryError> {
    if raw.is_empty() {
        return Err(InventoryError::Invalid(FieldErrors::single(
            "seat_ids",
            "must name at least one seat",
        )));
    }
    if raw.len() > MAX_SEAT_IDS_PER_REQUEST {
        return Err(InventoryError::Invalid(FieldErrors::single(
            "seat_ids",
            format!("must name at most {MAX_SEAT_IDS_PER_REQUEST} seats"),
        )));
    }
    let mut errors = FieldErrors::new();
    let mut seen = HashSet::new();
    let mut seats = Vec::with_capacity(raw.len());
    for (index, id) in raw.into_iter().enumerate() {
        let seat = SeatId::from_string(id);
        if !seen.insert(seat.clone()) {
            errors.add(format!("seat_ids[{index}]"), "names a seat twice");
        } else if venue.seat_map.locate(&venue.id, &seat).is_none() {
            errors.add(format!("seat_ids[{index}]"), "is not a seat of this event");
        }
        seats.push(seat);
    }
    errors.into_result().map_err(InventoryError::Invalid)?;
    if seats.len() > max as usize {
        return Err(InventoryError::LimitExceeded(format!(
            "at most {max} seats per order"
        )));
    }
    Ok(seats)
}
