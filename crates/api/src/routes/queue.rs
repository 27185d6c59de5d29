//! The waiting room: join, look up, leave; and the organizer's view and controls.

use crate::access::{OwnedEvent, VisibleEvent};
use crate::extract::CurrentUser;
use crate::queue::{now_ms, QueuePlaceBody, QueueStatsBody};
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use marquee_domain::EventStatus;
use marquee_waitroom::Control;
use std::net::SocketAddr;
use ulid::Ulid;

/// Join an event's waiting room (or get the place you already have).
#[utoipa::path(
    post, path = "/api/v1/events/{id}/queue", tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 201, description = "Your place (the same one when you join again)", body = QueuePlaceBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "`not_found`, or `waiting_room_disabled`", body = ErrorBody),
        (status = 422, description = "`queue_not_open` before the join window; `not_on_sale` for a cancelled or started event", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many joins from this IP or account", body = ErrorBody),
    )
)]
pub async fn join_queue(
    State(state): State<AppState>,
    caller: CurrentUser,
    visible: VisibleEvent,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<(StatusCode, Json<QueuePlaceBody>), ApiError> {
    let event = &visible.event;
    let config = state.queue.config(event)?;
    if event.status != EventStatus::Published || event.details.starts_at <= chrono::Utc::now() {
        return Err(ApiError::unprocessable(
            "not_on_sale",
            "this event is not on sale",
        ));
    }
    state.queue.check_join_rate(peer.ip(), &caller.id).await?;
    let user = Ulid::from_string(caller.id.as_str()).map_err(|_| ApiError::not_found("user"))?;
    let place = state.queue.room.join(&config, user, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(QueuePlaceBody::new(&place))))
}

/// Where a place stands; polling it keeps the place (so does listening on `queue:{token}`).
#[utoipa::path(
    get, path = "/api/v1/queue/{token}", tag = "queue",
    params(("token" = String, Path, description = "The token from joining")),
    responses(
        (status = 200, description = "The place; `pass` once admitted", body = QueuePlaceBody),
        (status = 400, description = "Not a queue token", body = ErrorBody),
        (status = 404, description = "No such place (a forged token)", body = ErrorBody),
    )
)]
pub async fn queue_place(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<QueuePlaceBody>, ApiError> {
    let mut place = state.queue.room.status(&token, now_ms()).await?;
    // The room signs the place's name afresh, under the current key; after a rotation that is
    // another string than the fan holds (and listens on), so keep the one that just verified.
    place.token = token;
    Ok(Json(QueuePlaceBody::new(&place)))
}

/// Leave the queue (an admitted fan's pass is revoked).
#[utoipa::path(
    delete, path = "/api/v1/queue/{token}", tag = "queue",
    params(("token" = String, Path, description = "The token from joining")),
    responses(
        (status = 204, description = "Left"),
        (status = 400, description = "Not a queue token", body = ErrorBody),
        (status = 404, description = "No such place", body = ErrorBody),
    )
)]
pub async fn leave_queue(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.queue.room.leave(&token, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organizer's view of the waiting room.
#[utoipa::path(
    get, path = "/api/v1/events/{id}/queue", tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The room's figures", body = QueueStatsBody),
        (status = 403, description = "Not the organizer", body = ErrorBody),
        (status = 404, description = "`not_found`, or `waiting_room_disabled`", body = ErrorBody),
    )
)]
pub async fn queue_stats(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<QueueStatsBody>, ApiError> {
    let config = state.queue.config(&owned.event)?;
    let stats = state.queue.room.stats(config.event, now_ms()).await?;
    Ok(Json(QueueStatsBody::new(&owned.event, stats)))
}

async fn control(
    state: &AppState,
    owned: &OwnedEvent,
    action: Control,
) -> Result<Json<QueueStatsBody>, ApiError> {
    let config = state.queue.config(&owned.event)?;
    let stats = state.queue.room.control(&config, action, now_ms()).await?;
    tracing::info!(event = %owned.event.id, ?action, by = %owned.user.id, "waiting room control");
    Ok(Json(QueueStatsBody::new(&owned.event, Some(stats))))
}

/// Stop admitting; fans keep their places.
#[utoipa::path(
    post, path = "/api/v1/events/{id}/queue/pause", tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Paused", body = QueueStatsBody),
        (status = 403, description = "Not the organizer", body = ErrorBody),
        (status = 404, description = "`not_found`, or `waiting_room_disabled`", body = ErrorBody),
    )
)]
pub async fn pause_queue(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<QueueStatsBody>, ApiError> {
    control(&state, &owned, Control::Pause).await
}

/// Admit again at the rate (also reactivates an inactive or ended room).
#[utoipa::path(
    post, path = "/api/v1/events/{id}/queue/resume", tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Admitting", body = QueueStatsBody),
        (status = 403, description = "Not the organizer", body = ErrorBody),
        (status = 404, description = "`not_found`, or `waiting_room_disabled`", body = ErrorBody),
    )
)]
pub async fn resume_queue(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<QueueStatsBody>, ApiError> {
    control(&state, &owned, Control::Resume).await
}

/// End the room: everyone waiting goes through, holds need no pass.
#[utoipa::path(
    post, path = "/api/v1/events/{id}/queue/end", tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Ended", body = QueueStatsBody),
        (status = 403, description = "Not the organizer", body = ErrorBody),
        (status = 404, description = "`not_found`, or `waiting_room_disabled`", body = ErrorBody),
    )
)]
pub async fn end_queue(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<QueueStatsBody>, ApiError> {
    control(&state, &owned, Control::End).await
}
