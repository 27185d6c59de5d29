//! The one place where failures become HTTP responses with the contract's error body:
//! `{"error": {"code", "message", "request_id", ...details}}`.
//!
//! Every error of the crates below maps here through an exhaustive `match`, so a new variant
//! cannot silently become a 500. Internal errors are logged once, here, with the request id, and
//! their details never reach the response body.

use crate::request_context;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use marquee_auth::{PasswordError, TokenError};
use marquee_domain::{FieldErrors, PricingError, TransitionError};
use marquee_inventory::{InventoryError, PaymentError};
use marquee_lease::LeaseError;
use marquee_search::SearchError;
use marquee_store::StoreError;
use marquee_waitroom::{PassRefusal, WaitroomError};
use serde_json::{json, Map, Value};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_secs: None,
        }
    }

    /// Adds a field to the error object beside `code` and `message`.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    #[cfg(test)]
    pub(crate) fn details_for_tests(&self) -> &Map<String, Value> {
        &self.details
    }

    pub fn invalid_input(fields: FieldErrors) -> Self {
        let message = fields.to_string();
        let fields: Map<String, Value> = fields
            .fields()
            .iter()
            .map(|(field, message)| (field.clone(), Value::String(message.clone())))
            .collect();
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            .with_detail("fields", fields)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::invalid_input(FieldErrors::single(field, message))
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in: send Authorization: Bearer <token>",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The same answer for "does not exist" and "exists but is not yours".
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit_bytes} bytes"),
        )
        .with_detail("limit_bytes", limit_bytes)
    }

    /// 503 naming the dependency that failed. The cause (a database, Redis, NATS or
    /// object-store message: host names, file paths, library internals) is logged here with the
    /// request id and never reaches the body, which says only which dependency and how to report.
    pub fn unavailable(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(dependency, cause = %cause, "dependency unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{dependency} is unavailable right now; retry later, and quote the request id if it persists"
            ),
        )
        .with_detail("dependency", dependency)
    }

    /// 503 with a message of our own (never a lower error's text: hence `&'static str`), for
    /// refusals the client can act on, such as a payment that timed out with the seats held.
    pub fn unavailable_saying(dependency: &'static str, message: &'static str) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_detail("dependency", dependency)
    }

    /// 429 with `Retry-After` in whole seconds, rounded up (`0` would invite an immediate retry).
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let retry_after_secs =
            (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        )
        .with_detail("retry_after_seconds", retry_after_secs);
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// 503 `overloaded` with `Retry-After: 1`: the node is at its booking capacity and refused
    /// the request before doing any of it (a retry under the same idempotency key starts
    /// afresh).
    pub fn overloaded() -> Self {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "this node is at capacity; retry after the time in Retry-After",
        )
        .with_detail("retry_after_seconds", 1);
        error.retry_after_secs = Some(1);
        error
    }

    /// A failure that is our fault. The cause is logged here and kept out of the body.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; quote the request id when reporting it",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), Value::String(self.code.to_string()));
        error.insert("message".into(), Value::String(self.message));
        if let Some(request_id) = request_context::current_request_id() {
            error.insert("request_id".into(), Value::String(request_id));
        }
        error.extend(self.details);
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<FieldErrors> for ApiError {
    fn from(fields: FieldErrors) -> Self {
        ApiError::invalid_input(fields)
    }
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::Invalid { field, message } => ApiError::invalid_field(field, message),
            SearchError::BadCursor => {
                ApiError::invalid_field("cursor", "is not a cursor this search returned")
            }
            SearchError::NotFound => ApiError::not_found("event"),
            SearchError::Store(error) => ApiError::from(error),
            SearchError::Changes(error) => ApiError::unavailable("changes", error),
            SearchError::Index(_) | SearchError::Directory(_) | SearchError::Task(_) => {
                ApiError::internal(&error)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => {
                ApiError::conflict("email_taken", "an account with this email already exists")
            }
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::VersionConflict { expected } => ApiError::conflict(
                "version_conflict",
                "the resource was changed by someone else; fetch it and try again",
            )
            .with_detail("expected_version", expected),
            StoreError::Unavailable(_)
            | StoreError::BatchUnavailable(_)
            | StoreError::WriterStopped => ApiError::unavailable("store", &error),
            StoreError::CapacityExceeded { section } => ApiError::conflict(
                "seats_unavailable",
                "not enough general-admission places left",
            )
            .with_detail("section", section)
            .with_detail("seat_ids", Vec::<String>::new()),
            StoreError::SeatsSold { seat_ids } => {
                ApiError::conflict("seats_unavailable", "some seats are sold")
                    .with_detail("seat_ids", seat_ids)
            }
            StoreError::HoldNotActive | StoreError::Fenced => {
                ApiError::conflict("hold_expired", "the hold has expired or ended")
            }
            StoreError::Database(_)
            | StoreError::BatchFailed(_)
            | StoreError::Refused { .. }
            | StoreError::Sqlite(_)
            | StoreError::Migration(_)
            | StoreError::UnsupportedUrl(_)
            | StoreError::Corrupt(_) => ApiError::internal(&error),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(error: InventoryError) -> Self {
        match error {
            InventoryError::Invalid(fields) => ApiError::invalid_input(fields),
            InventoryError::SeatsUnavailable { seat_ids } => {
                ApiError::conflict("seats_unavailable", "some of those seats are held or sold")
                    .with_detail("seat_ids", seat_ids)
            }
            InventoryError::SoldOut { section } => ApiError::conflict(
                "seats_unavailable",
                "not enough general-admission places left",
            )
            .with_detail("section", section)
            .with_detail("seat_ids", Vec::<String>::new()),
            InventoryError::LimitExceeded(message) => {
                ApiError::unprocessable("limit_exceeded", message)
            }
            InventoryError::NotOnSale(message) => ApiError::unprocessable("not_on_sale", message),
            InventoryError::HoldNotFound => ApiError::not_found("hold"),
            InventoryError::HoldExpired => {
                ApiError::conflict("hold_expired", "the hold has expired or ended")
            }
            InventoryError::AlreadyExtended => {
                ApiError::conflict("already_extended", "a hold can be extended once")
            }
            InventoryError::AlreadyRefunded => {
                ApiError::conflict("already_refunded", "the order was already refunded")
            }
            InventoryError::RefundWindowClosed => ApiError::unprocessable(
                "refund_window_closed",
                "fans can refund only before the event starts; ask the organizer",
            ),
            InventoryError::TicketNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "ticket_not_found",
                "no ticket with that code for this event",
            ),
            InventoryError::AlreadyCheckedIn(at) => {
                ApiError::conflict("already_checked_in", "this ticket was already checked in")
                    .with_detail("checked_in_at", at.to_rfc3339())
            }
            InventoryError::TicketRefunded => {
                ApiError::conflict("ticket_refunded", "this ticket was refunded")
            }
            InventoryError::PaymentDeclined => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment_declined",
                "the card was declined; your seats are still held",
            ),
            InventoryError::PaymentFailed(PaymentError::InvalidToken) => ApiError::invalid_field(
                "payment.token",
                "is not a payment token this provider accepts",
            ),
            InventoryError::PaymentFailed(PaymentError::TimedOut | PaymentError::Declined) => {
                ApiError::unavailable_saying(
                    "payments",
                    "the payment provider did not answer in time; your seats are still held",
                )
            }
            InventoryError::Store(error) => error.into(),
            InventoryError::Lease(error) => error.into(),
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Taken { keys } => {
                ApiError::conflict("seats_unavailable", "those seats are held")
                    .with_detail("seat_ids", keys)
            }
            LeaseError::NotHeld => {
                ApiError::conflict("hold_expired", "the hold has expired or ended")
            }
            LeaseError::Unavailable(_) => ApiError::unavailable("leases", &error),
            LeaseError::Invalid(_) => ApiError::internal(&error),
        }
    }
}

impl From<WaitroomError> for ApiError {
    fn from(error: WaitroomError) -> Self {
        match error {
            WaitroomError::NotJoinableYet { join_from } => ApiError::unprocessable(
                "queue_not_open",
                "the waiting room does not take places yet",
            )
            .with_detail(
                "joinable_from",
                chrono::DateTime::from_timestamp_millis(i64::try_from(join_from).unwrap_or(0))
                    .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
            ),
            WaitroomError::MalformedToken => {
                ApiError::invalid_field("token", "is not a queue token")
            }
            WaitroomError::UnknownToken => ApiError::not_found("queue place"),
            WaitroomError::Pass(refusal) => ApiError::new(
                StatusCode::FORBIDDEN,
                "queue_required",
                format!("join the waiting room first: {refusal}"),
            )
            .with_detail(
                "reason",
                match refusal {
                    PassRefusal::Malformed => "malformed",
                    PassRefusal::Forged => "forged",
                    PassRefusal::OtherEvent => "other_event",
                    PassRefusal::OtherUser => "other_user",
                    PassRefusal::Expired => "expired",
                    PassRefusal::Revoked => "revoked",
                },
            ),
            WaitroomError::Unavailable(_) => ApiError::unavailable("waiting room", &error),
            WaitroomError::Invalid(_) => ApiError::internal(&error),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the token has expired; sign in again",
            ),
            TokenError::Invalid | TokenError::UnknownKey => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token is not valid",
            ),
            TokenError::WeakSecret | TokenError::Signing => ApiError::internal(&error),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Hashing(_) | PasswordError::Cancelled => ApiError::internal(&error),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(error: TransitionError) -> Self {
        ApiError::conflict("invalid_state", error.to_string()).with_detail("status", error.from)
    }
}

impl From<PricingError> for ApiError {
    fn from(error: PricingError) -> Self {
        let message = error.to_string();
        let base = ApiError::unprocessable("invalid_price_tiers", message);
        match error {
            PricingError::SectionUnpriced(section) => base
                .with_detail("reason", "section_unpriced")
                .with_detail("section", section),
            PricingError::SectionPricedTwice(section) => base
                .with_detail("reason", "section_priced_twice")
                .with_detail("section", section),
            PricingError::UnknownSection { tier, section } => base
                .with_detail("reason", "unknown_section")
                .with_detail("tier", tier)
                .with_detail("section", section),
            PricingError::MixedCurrencies => base.with_detail("reason", "mixed_currencies"),
        }
    }
}
