//! Orders: buy what a live hold holds; read orders.

use crate::extract::{CurrentUser, JsonBody, PageRequest};
use crate::wire::orders::{CreateOrderRequest, OrderBody};
use crate::wire::{ErrorBody, Page};
use crate::{idempotency, ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use marquee_domain::{HoldId, OrderId};

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
    idempotency::run(&state, &caller.id, key, "order", &request, || async {
        if request.payment.method != "card" {
            return Err(ApiError::invalid_field("payment.method", "must be card"));
        }
        let hold = state
            .inventory
            .owned_hold(&HoldId::from_string(request.hold_id.clone()), &caller.id)
            .await?;
        let event = state
            .store
            .event(&hold.event_id)
            .await?
            .ok_or_else(|| ApiError::not_found("event"))?;
        let venue = state
            .store
            .venue(&event.venue_id)
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
    let order = state
        .inventory
        .order(&OrderId::from_string(id))
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let allowed = caller.may_manage(&order.user_id)
        || state
            .store
            .event(&order.event_id)
            .await?
            .is_some_and(|event| event.owner_id == caller.id);
    if !allowed {
        return Err(ApiError::not_found("order"));
    }
    Ok(Json(OrderBody::from(&order)))
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
