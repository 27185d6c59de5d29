//! Load shedding at the node: at most `max_in_flight` booking requests (holds and their
//! changes, orders) in this node's handlers at once; the next is answered at once with 503
//! `overloaded` and `Retry-After`, before it touches Redis or PostgreSQL.
//!
//! Why at the node as well as the gateway's `--max-in-flight`: the gateway counts requests to
//! every node of every route, so a surge on one event (one node, by event hashing) or traffic
//! that reaches nodes some other way is not bounded by it. Without this, a node past its
//! booking capacity queues every request on its write batches and connection pool: latency
//! grows with the backlog until fans' clients time out and retry, adding more work, or the pool
//! times out with a 500. Refusing early keeps the admitted requests' latency bounded and tells
//! the client when to come back; a refused request did nothing, so a retry under the same
//! `Idempotency-Key` runs as if it were the first.

use crate::{ApiError, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marquee_ratelimit::{ConcurrencyLimiter, Priority};
use std::sync::Arc;

/// The booking routes, as `(method, matched path)`: the ones that write through the
/// inventory (a lease, a fence, a batch commit) and so share its capacity.
const BOOKING_ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/events/{id}/holds"),
    (Method::DELETE, "/api/v1/holds/{id}"),
    (Method::POST, "/api/v1/holds/{id}/extend"),
    (Method::POST, "/api/v1/orders"),
];

/// The node's booking slots.
#[derive(Clone)]
pub struct BookingLimit {
    slots: Arc<ConcurrencyLimiter>,
}

impl BookingLimit {
    /// At most `max_in_flight` booking requests at once (at least one).
    pub fn new(max_in_flight: usize) -> BookingLimit {
        BookingLimit {
            slots: ConcurrencyLimiter::new(max_in_flight.max(1), 0),
        }
    }

    /// Booking requests in this node's handlers now.
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }
}

fn is_booking(method: &Method, route: Option<&MatchedPath>) -> bool {
    let Some(route) = route else {
        return false;
    };
    BOOKING_ROUTES
        .iter()
        .any(|(booking_method, path)| booking_method == method && *path == route.as_str())
}

/// Takes a slot for a booking request, or answers 503 with `Retry-After` when none is free.
/// Other routes pass untouched.
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !is_booking(request.method(), request.extensions().get::<MatchedPath>()) {
        return next.run(request).await;
    }
    // The slot is held until the handler has answered (dropped after `run`).
    let Some(_slot) = state.booking_limit.slots.try_acquire(Priority::Checkout) else {
        metrics::counter!("marquee_booking_shed_total").increment(1);
        return ApiError::overloaded().into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_and_never_exceeded() {
        let limit = BookingLimit::new(2);
        let first = limit.slots.try_acquire(Priority::Checkout);
        let second = limit.slots.try_acquire(Priority::Checkout);
        assert!(first.is_some() && second.is_some());
        assert!(limit.slots.try_acquire(Priority::Checkout).is_none());
        drop(first);
        assert_eq!(limit.in_flight(), 1);
        assert!(limit.slots.try_acquire(Priority::Checkout).is_some());
    }

    #[test]
    fn a_limit_of_zero_still_lets_one_through() {
        let limit = BookingLimit::new(0);
        assert!(limit.slots.try_acquire(Priority::Checkout).is_some());
    }
}
