//! Events: create, list, read, patch, publish, cancel, and the seat map with statuses.

use crate::access::{OwnedEvent, VisibleEvent};
use crate::extract::{JsonBody, MaybeUser, Organizer, PageRequest, QueryParams};
use crate::wire::events::{
    CreateEventRequest, EventBody, EventDraft, PatchEventRequest, SeatsBody,
};
use crate::wire::orders::{CheckInBody, CheckInRequest, TicketBody};
use crate::wire::{ErrorBody, Page};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use marquee_domain::{Event, EventId, EventStatus, Venue, VenueId};
use marquee_store::{ChangeKind, EventQuery, StoreError};
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::IntoParams;

async fn venue_of(state: &AppState, event: &Event) -> Result<Venue, ApiError> {
    state.store.venue(&event.venue_id).await?.ok_or_else(|| {
        ApiError::from(StoreError::Corrupt(format!(
            "event {} refers to missing venue {}",
            event.id, event.venue_id
        )))
    })
}

async fn event_body(state: &AppState, event: &Event) -> Result<EventBody, ApiError> {
    Ok(EventBody::new(event, &venue_of(state, event).await?))
}

/// Create a draft event at one of the caller's venues.
#[utoipa::path(
    post, path = "/api/v1/events", tag = "events",
    security(("bearer" = [])),
    request_body = CreateEventRequest,
    responses(
        (status = 201, description = "Draft created", body = EventBody),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not an organizer, or not the venue's owner", body = ErrorBody),
        (status = 404, description = "No such venue", body = ErrorBody),
        (status = 422, description = "`invalid_price_tiers`: a section unpriced or priced twice", body = ErrorBody),
    )
)]
pub async fn create_event(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    JsonBody(request): JsonBody<CreateEventRequest>,
) -> Result<(StatusCode, Json<EventBody>), ApiError> {
    let now = marquee_domain::timestamp_now();
    let draft = EventDraft::parse(request, now)?;
    let venue = state
        .store
        .venue(&draft.venue_id)
        .await?
        .ok_or_else(|| ApiError::not_found("venue").with_detail("field", "venue_id"))?;
    if !caller.may_manage(&venue.owner_id) {
        return Err(ApiError::forbidden(
            "events can only be created at venues you own",
        ));
    }
    draft.details.check_pricing(&venue.seat_map)?;
    let event = Event {
        id: EventId::generate(),
        owner_id: venue.owner_id.clone(),
        venue_id: venue.id.clone(),
        status: EventStatus::Draft,
        version: 1,
        details: draft.details,
        created_at: now,
        updated_at: now,
    };
    state.store.create_event(&event).await?;
    Ok((StatusCode::CREATED, Json(EventBody::new(&event, &venue))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// `true`: the caller's own events in every status (organizers and admins).
    #[serde(default)]
    mine: bool,
    /// `draft`, `published` or `cancelled`; with `mine` only.
    status: Option<String>,
}

/// Published events, oldest first; or with `mine=true` the caller's own events.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(
        EventListParams,
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of events", body = Page<EventBody>),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    MaybeUser(caller): MaybeUser,
    QueryParams(params): QueryParams<EventListParams>,
    page: PageRequest,
) -> Result<Json<Page<EventBody>>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(EventStatus::parse)
        .transpose()
        .map_err(|message| ApiError::invalid_field("status", message))?;
    let query = if params.mine {
        let caller = caller.ok_or_else(ApiError::unauthorized)?;
        EventQuery {
            owner: (!caller.is_admin()).then_some(caller.id),
            status,
            after: page.cursor.clone().map(EventId::from_string),
            limit: page.limit,
        }
    } else {
        if status.is_some_and(|status| status != EventStatus::Published) {
            return Err(ApiError::invalid_field(
                "status",
                "only published events are listed publicly; add mine=true for your own",
            ));
        }
        EventQuery {
            owner: None,
            status: Some(EventStatus::Published),
            after: page.cursor.clone().map(EventId::from_string),
            limit: page.limit,
        }
    };
    let events = state.store.list_events(&query).await?;
    let mut venues: HashMap<VenueId, Venue> = HashMap::new();
    let mut items = Vec::with_capacity(events.len());
    for event in &events {
        if !venues.contains_key(&event.venue_id) {
            let venue = venue_of(&state, event).await?;
            venues.insert(venue.id.clone(), venue);
        }
        if let Some(venue) = venues.get(&event.venue_id) {
            items.push(EventBody::new(event, venue));
        }
    }
    let next_cursor = page.next_cursor(events.len(), events.last().map(|e| e.id.as_str()));
    Ok(Json(Page { items, next_cursor }))
}

/// An event: anyone for published and cancelled events, drafts for their organizer and admins.
#[utoipa::path(
    get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = EventBody),
        (status = 404, description = "No such event, or a draft that is not yours", body = ErrorBody),
    )
)]
pub async fn get_event(
    State(state): State<AppState>,
    visible: VisibleEvent,
) -> Result<Json<EventBody>, ApiError> {
    Ok(Json(event_body(&state, &visible.event).await?))
}

/// Change some of an event's fields. Price tiers are fixed once published; cancelled events
/// are frozen.
#[utoipa::path(
    patch, path = "/api/v1/events/{id}", tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    request_body = PatchEventRequest,
    responses(
        (status = 200, description = "The updated event", body = EventBody),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such event, or not yours", body = ErrorBody),
        (status = 409, description = "`invalid_state` or `version_conflict`", body = ErrorBody),
        (status = 422, description = "`invalid_price_tiers`", body = ErrorBody),
    )
)]
pub async fn patch_event(
    State(state): State<AppState>,
    owned: OwnedEvent,
    JsonBody(request): JsonBody<PatchEventRequest>,
) -> Result<Json<EventBody>, ApiError> {
    let OwnedEvent { mut event, .. } = owned;
    let patch = request.parse(&event)?;
    let details = event.patched(patch)?;
    details.check_schedule()?;
    let venue = venue_of(&state, &event).await?;
    details.check_pricing(&venue.seat_map)?;
    event.details = details;
    let stored = state
        .store
        .update_event(&event, ChangeKind::EventUpdated)
        .await?;
    state.events.forget(&stored.id).await;
    Ok(Json(EventBody::new(&stored, &venue)))
}

/// Make a draft visible to fans (and searchable).
#[utoipa::path(
    post, path = "/api/v1/events/{id}/publish", tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Published", body = EventBody),
        (status = 404, description = "No such event, or not yours", body = ErrorBody),
        (status = 409, description = "`invalid_state`: already published or cancelled", body = ErrorBody),
        (status = 422, description = "`event_ended`", body = ErrorBody),
    )
)]
pub async fn publish_event(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<EventBody>, ApiError> {
    let OwnedEvent { mut event, .. } = owned;
    event.publish()?;
    if event.has_ended(chrono::Utc::now()) {
        return Err(ApiError::unprocessable(
            "event_ended",
            "an event that has already ended cannot be published",
        ));
    }
    let stored = state
        .store
        .update_event(&event, ChangeKind::EventPublished)
        .await?;
    state.events.forget(&stored.id).await;
    Ok(Json(event_body(&state, &stored).await?))
}

/// Cancel an event (refunding its orders once orders exist).
#[utoipa::path(
    post, path = "/api/v1/events/{id}/cancel", tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Cancelled", body = EventBody),
        (status = 404, description = "No such event, or not yours", body = ErrorBody),
        (status = 409, description = "`invalid_state`: already cancelled", body = ErrorBody),
    )
)]
pub async fn cancel_event(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<EventBody>, ApiError> {
    let OwnedEvent { mut event, .. } = owned;
    event.cancel()?;
    let stored = state
        .store
        .update_event(&event, ChangeKind::EventCancelled)
        .await?;
    state.events.forget(&stored.id).await;
    // The cancellation is recorded first, so no new order can start; then every order is
    // refunded. A failure part-way leaves the rest for a retry of this call to finish.
    let refunded = state.inventory.refund_all(&stored).await?;
    tracing::info!(event = %stored.id, refunded, "event cancelled");
    Ok(Json(event_body(&state, &stored).await?))
}

/// Every seat with its tier, price and status, and each general-admission area.
#[utoipa::path(
    get, path = "/api/v1/events/{id}/seats", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The seat map with statuses", body = SeatsBody),
        (status = 404, description = "No such event, or a draft that is not yours", body = ErrorBody),
    )
)]
pub async fn event_seats(
    State(state): State<AppState>,
    visible: VisibleEvent,
) -> Result<Json<SeatsBody>, ApiError> {
    let venue = venue_of(&state, &visible.event).await?;
    let snapshot = state.seat_maps.get(&visible.event.id).await?;
    Ok(Json(SeatsBody::new(&visible.event, &venue, &snapshot)))
}

/// Admit a ticket holder at the door: 200 the first time, 409 `already_checked_in` after.
#[utoipa::path(
    post, path = "/api/v1/events/{id}/checkin", tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    request_body = CheckInRequest,
    responses(
        (status = 200, description = "Admitted", body = CheckInBody),
        (status = 404, description = "`ticket_not_found`: no such code for this event", body = ErrorBody),
        (status = 409, description = "`already_checked_in` or `ticket_refunded`", body = ErrorBody),
    )
)]
pub async fn check_in(
    State(state): State<AppState>,
    owned: OwnedEvent,
    JsonBody(request): JsonBody<CheckInRequest>,
) -> Result<Json<CheckInBody>, ApiError> {
    let ticket = state
        .inventory
        .check_in(&owned.event, &request.code)
        .await?;
    Ok(Json(CheckInBody {
        ticket: TicketBody::from(&ticket),
    }))
}
