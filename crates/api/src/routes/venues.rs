//! Venues and their seat maps.

use crate::extract::{JsonBody, Organizer, PageRequest};
use crate::wire::venues::{CreateVenueRequest, VenueBody, VenueDraft};
use crate::wire::{ErrorBody, Page};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use marquee_domain::{Venue, VenueId};
use marquee_store::VenueQuery;

/// Create a venue with its seat map.
#[utoipa::path(
    post, path = "/api/v1/venues", tag = "venues",
    security(("bearer" = [])),
    request_body = CreateVenueRequest,
    responses(
        (status = 201, description = "Venue created, with every seat's id", body = VenueBody),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an organizer", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
    )
)]
pub async fn create_venue(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    JsonBody(request): JsonBody<CreateVenueRequest>,
) -> Result<(StatusCode, Json<VenueBody>), ApiError> {
    let draft = VenueDraft::try_from(request)?;
    let venue = Venue {
        id: VenueId::generate(),
        owner_id: caller.id,
        details: draft.details,
        seat_map: draft.seat_map,
        created_at: marquee_domain::timestamp_now(),
    };
    state.store.create_venue(&venue).await?;
    Ok((StatusCode::CREATED, Json(VenueBody::from(&venue))))
}

/// A venue and its seat map. Venues are public: events show where they happen.
#[utoipa::path(
    get, path = "/api/v1/venues/{id}", tag = "venues",
    params(("id" = String, Path, description = "Venue id")),
    responses(
        (status = 200, description = "The venue", body = VenueBody),
        (status = 404, description = "No such venue", body = ErrorBody),
    )
)]
pub async fn get_venue(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VenueBody>, ApiError> {
    let venue = state
        .store
        .venue(&VenueId::from_string(id))
        .await?
        .ok_or_else(|| ApiError::not_found("venue"))?;
    Ok(Json(VenueBody::from(&venue)))
}

/// The caller's venues (all venues for an admin), oldest first.
#[utoipa::path(
    get, path = "/api/v1/venues", tag = "venues",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of venues", body = Page<VenueBody>),
        (status = 403, description = "Not an organizer", body = ErrorBody),
    )
)]
pub async fn list_venues(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    page: PageRequest,
) -> Result<Json<Page<VenueBody>>, ApiError> {
    let venues = state
        .store
        .list_venues(&VenueQuery {
            owner: (!caller.is_admin()).then(|| caller.id.clone()),
            after: page.cursor.clone().map(VenueId::from_string),
            limit: page.limit,
        })
        .await?;
    let next_cursor = page.next_cursor(venues.len(), venues.last().map(|v| v.id.as_str()));
    Ok(Json(Page {
        items: venues.iter().map(VenueBody::from).collect(),
        next_cursor,
    }))
}
