//! Seat holds: take, read, release, extend.

use crate::access::VisibleEvent;
use crate::extract::{CurrentUser, JsonBody};
use crate::wire::orders::{HoldBody, HoldRequestBody};
use crate::wire::ErrorBody;
use crate::{idempotency, ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use marquee_domain::{FieldErrors, HoldId};
use marquee_inventory::HoldRequest;

fn parse_request(body: &HoldRequestBody) -> Result<HoldRequest, ApiError> {
    match (&body.seat_ids, body.quantity, &body.general_admission) {
        (Some(seats), None, None) => Ok(HoldRequest::Seats(seats.clone())),
        (None, Some(quantity), None) => Ok(HoldRequest::BestAvailable {
            quantity,
            section: body.section.clone(),
        }),
        (None, None, Some(general)) => Ok(HoldRequest::GeneralAdmission {
            section: general.section.clone(),
            quantity: general.quantity,
        }),
        _ => Err(FieldErrors::single(
            "body",
            "send exactly one of seat_ids, quantity or general_admission",
        )
        .into()),
    }
}

/// Hold seats, all or nothing. *Idempotent* with `Idempotency-Key`.
#[utoipa::path(
    post, path = "/api/v1/events/{id}/holds", tag = "holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retry safely"),
           ("x-marquee-pass" = Option<String>, Header, description = "The waiting-room pass, while the event's room is active")),
    request_body = HoldRequestBody,
    responses(
        (status = 201, description = "Held", body = HoldBody),
        (status = 400, description = "Unknown or duplicate seats, bad quantity", body = ErrorBody),
        (status = 403, description = "`queue_required`: no valid pass while the waiting room is active (`reason` says why)", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "`seats_unavailable`, with `seat_ids`", body = ErrorBody),
        (status = 422, description = "`limit_exceeded`, `not_on_sale`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`overloaded`: the node is at its booking limit; nothing was done, retry after `Retry-After` (same key)", body = ErrorBody),
    )
)]
pub async fn create_hold(
    State(state): State<AppState>,
    caller: CurrentUser,
    visible: VisibleEvent,
    headers: HeaderMap,
    JsonBody(body): JsonBody<HoldRequestBody>,
) -> Response {
    let key = match idempotency::key_from(&headers) {
        Ok(key) => key,
        Err(error) => return axum::response::IntoResponse::into_response(error),
    };
    // Before the idempotent part: a refusal for want of a pass is not a result to replay.
    if let Err(error) = state
        .queue
        .check_hold(&visible.event, &caller.id, &headers)
        .await
    {
        return axum::response::IntoResponse::into_response(error);
    }
    let scope = format!("hold:{}", visible.event.id);
    let hold_id = key
        .as_deref()
        .map(|key| idempotency::derived_id(&caller.id, &scope, key, &body))
        .map(HoldId::from_string);
    idempotency::run(&state, &caller.id, key, &scope, &body, || async {
        let request = parse_request(&body)?;
        let venue = state
            .venues
            .get(&state.store, &visible.event.venue_id)
            .await?
            .ok_or_else(|| ApiError::not_found("venue"))?;
        let hold = state
            .inventory
            .hold_as(&visible.event, &venue, &caller.id, request, hold_id)
            .await?;
        Ok((StatusCode::CREATED, HoldBody::from(&hold)))
    })
    .await
}

async fn owned_hold(
    state: &AppState,
    caller: &CurrentUser,
    id: String,
) -> Result<marquee_domain::Hold, ApiError> {
    Ok(state
        .inventory
        .owned_hold(&HoldId::from_string(id), &caller.id)
        .await?)
}

/// A hold of the caller's.
#[utoipa::path(
    get, path = "/api/v1/holds/{id}", tag = "holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "The hold", body = HoldBody),
        (status = 404, description = "No such hold, or not yours", body = ErrorBody),
    )
)]
pub async fn get_hold(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<HoldBody>, ApiError> {
    let hold = owned_hold(&state, &caller, id).await?;
    Ok(axum::Json(HoldBody::from(&hold)))
}

/// Give the seats back.
#[utoipa::path(
    delete, path = "/api/v1/holds/{id}", tag = "holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 204, description = "Released"),
        (status = 404, description = "No such hold, or not yours", body = ErrorBody),
        (status = 409, description = "`hold_expired`: already ended", body = ErrorBody),
    )
)]
pub async fn release_hold(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let hold = owned_hold(&state, &caller, id).await?;
    state.inventory.release(&hold).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Extend a live hold once, to a full hold TTL from now.
#[utoipa::path(
    post, path = "/api/v1/holds/{id}/extend", tag = "holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "Extended", body = HoldBody),
        (status = 404, description = "No such hold, or not yours", body = ErrorBody),
        (status = 409, description = "`hold_expired` or `already_extended`", body = ErrorBody),
    )
)]
pub async fn extend_hold(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<HoldBody>, ApiError> {
    let hold = owned_hold(&state, &caller, id).await?;
    let extended = state.inventory.extend(&hold).await?;
    Ok(axum::Json(HoldBody::from(&extended)))
}
