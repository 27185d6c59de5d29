//! Orders: buy what a live hold holds; read orders.

use crate::extract::{CurrentUser, JsonBody, PageRequest};
use crate::wire::orders::OrderHistoryBody;
use crate::wire::orders::{CreateOrderRequest, OrderBody};
use crate::wire::{ErrorBody, Page};
use crate::{idempotency, ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use marquee_domain::{Event, HoldId, Order, OrderId};

/// Pay for a live hold. *Idempotent* with `Idempotency-Key`.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry safely")),
    request_body = CreateOrderRequest,
    responses(
        (status = 201, description = "Confirmed, with tickets", body = OrderBody),
        (status = 402, description = "`payment_declined`", body = ErrorBody),
        (status = 404, description = "No such hold, or not yours", body = ErrorBody),
        (status = 409, description = "`hold_expired`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`overloaded`: the node is at its booking limit; nothing was done, retry after `Retry-After` (same key). `unavailable` (`dependency: payments`): the payment timed out, the hold stays", body = ErrorBody),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    caller: CurrentUser,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateOrderRequest>,
) -> Response {
    let key = match idempotency::key_from(&headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let retryable = key.is_some();
    idempotency::run(&state, &caller.id, key, "order", &request, || async {
        if request.payment.method != "card" {
            return Err(ApiError::invalid_field("payment.method", "must be card"));
        }
        let hold = state
            .inventory
            .owned_hold(&HoldId::from_string(request.hold_id.clone()), &caller.id)
            .await?;
        // A retry under an idempotency key whose first answer was never recorded (the node
        // died between the commit and the record) gets the order that exists. Without a key,
        // buying a bought hold stays the contract's 409.
        if retryable {
            if let Some(order) = state.inventory.order_of_hold(&hold).await? {
                return Ok((StatusCode::CREATED, OrderBody::from(&order)));
            }
        }
        // The cached event, as the hold used: the order commits only while the stored event
        // is still published, so a copy a moment stale cannot sell into a cancelled event.
        let event = state
            .events
            .get(&hold.event_id)
            .await?
            .ok_or_else(|| ApiError::not_found("event"))?;
        let venue = state
            .venues
            .get(&state.store, &event.venue_id)
            .await?
            .ok_or_else(|| ApiError::not_found("venue"))?;
        let order = state
            .inventory
            .confirm(&hold, &event, &venue, &request.payment.token)
            .await?;
        Ok((StatusCode::CREATED, OrderBody::from(&order)))
    })
    .await
}

/// Who is looking at an order, and so what they may do with it.
enum OrderViewer {
    Buyer,
    Organizer,
    Admin,
}

/// The order if the caller is its buyer, the event's organizer or an admin; 404 otherwise, so
/// nobody learns whether another fan's order exists.
async fn visible_order(
    state: &AppState,
    caller: &CurrentUser,
    id: String,
) -> Result<(Order, Event, OrderViewer), ApiError> {
    let order = state
        .inventory
        .order(&OrderId::from_string(id))
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let event = state
        .store
        .event(&order.event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let viewer = if caller.is_admin() {
        OrderViewer::Admin
    } else if event.owner_id == caller.id {
        OrderViewer::Organizer
    } else if order.user_id == caller.id {
        OrderViewer::Buyer
    } else {
        return Err(ApiError::not_found("order"));
    };
    Ok((order, event, viewer))
}

/// An order: for its buyer, the event's organizer and admins.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "No such order, or not yours", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let (order, _, _) = visible_order(&state, &caller, id).await?;
    Ok(Json(OrderBody::from(&order)))
}

/// A ticket's code as a QR code (SVG) to show at the door: buyer, organizer and admins.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}/tickets/{ticket_id}/qr.svg", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id"),
           ("ticket_id" = String, Path, description = "Ticket id")),
    responses(
        (status = 200, description = "The QR code", content_type = "image/svg+xml", body = String),
        (status = 404, description = "No such order or ticket, or not yours", body = ErrorBody),
    )
)]
pub async fn ticket_qr(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path((id, ticket_id)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    let (order, _, _) = visible_order(&state, &caller, id).await?;
    let ticket = order
        .tickets
        .iter()
        .find(|ticket| ticket.id.as_str() == ticket_id)
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    let code =
        qrcode::QrCode::new(ticket.code.as_bytes()).map_err(|error| ApiError::internal(&error))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok(axum::response::IntoResponse::into_response((
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        svg,
    )))
}

/// The order's append-only history (created, paid, refunded, checked in).
#[utoipa::path(
    get, path = "/api/v1/orders/{id}/history", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The history, oldest first", body = Vec<OrderHistoryBody>),
        (status = 404, description = "No such order, or not yours", body = ErrorBody),
    )
)]
pub async fn order_history(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<OrderHistoryBody>>, ApiError> {
    let (order, _, _) = visible_order(&state, &caller, id).await?;
    let history = state.store.order_history(&order.id).await?;
    Ok(Json(
        history
            .into_iter()
            .map(|entry| OrderHistoryBody {
                sequence: entry.sequence,
                kind: entry.kind,
                data: entry.data,
                recorded_at: entry.recorded_at,
            })
            .collect(),
    ))
}

/// Refund an order: its buyer before the event starts, the event's organizer or an admin.
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/refund", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "Refunded; the seats are on sale again", body = OrderBody),
        (status = 404, description = "No such order, or not yours", body = ErrorBody),
        (status = 409, description = "`already_refunded`", body = ErrorBody),
        (status = 422, description = "`refund_window_closed`", body = ErrorBody),
    )
)]
pub async fn refund_order(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let (order, event, viewer) = visible_order(&state, &caller, id).await?;
    let by_fan = matches!(viewer, OrderViewer::Buyer);
    let refunded = state
        .inventory
        .refund(&order, &event, by_fan, "requested")
        .await?;
    Ok(Json(OrderBody::from(&refunded)))
}

/// The caller's orders, oldest first.
#[utoipa::path(
    get, path = "/api/v1/me/orders", tag = "orders",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of orders", body = Page<OrderBody>))
)]
pub async fn my_orders(
    State(state): State<AppState>,
    caller: CurrentUser,
    page: PageRequest,
) -> Result<Json<Page<OrderBody>>, ApiError> {
    let after = page.cursor.clone().map(OrderId::from_string);
    let orders = state
        .store
        .orders_of(&caller.id, after.as_ref(), page.limit)
        .await?;
    let next_cursor = page.next_cursor(orders.len(), orders.last().map(|o| o.id.as_str()));
    Ok(Json(Page {
        items: orders.iter().map(OrderBody::from).collect(),
        next_cursor,
    }))
}
