//! Object-level access: loading an event named in the path and deciding whether the caller may
//! see or change it. Handlers receive an already-authorised event, so no handler can forget the
//! check. Another owner's draft answers 404, exactly like an id that does not exist.

use crate::extract::{CurrentUser, MaybeUser};
use crate::{ApiError, AppState};
use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use marquee_domain::{Event, EventId, EventStatus};
use std::sync::Arc;

async fn event_id<S>(parts: &mut Parts, state: &S) -> Result<EventId, ApiError>
where
    S: Send + Sync,
{
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("event"))?;
    Ok(EventId::from_string(id))
}

pub(crate) fn is_public(event: &Event) -> bool {
    event.status != EventStatus::Draft
}

/// An event the caller may see: published or cancelled events for anyone, drafts for their
/// owner and admins.
///
/// The event may come from the node's short-lived [`crate::EventCache`].
pub struct VisibleEvent {
    pub event: Arc<Event>,
    pub viewer: Option<CurrentUser>,
}

impl<S> FromRequestParts<S> for VisibleEvent
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let MaybeUser(viewer) = MaybeUser::from_request_parts(parts, state).await?;
        let id = event_id(parts, state).await?;
        let state = AppState::from_ref(state);
        let event = state
            .events
            .get(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("event"))?;
        let may_see = is_public(&event)
            || viewer
                .as_ref()
                .is_some_and(|viewer| viewer.may_manage(&event.owner_id));
        if may_see {
            Ok(VisibleEvent { event, viewer })
        } else {
            Err(ApiError::not_found("event"))
        }
    }
}

/// An event the caller may change: its owner or an admin. Others get 404 for a draft (they may
/// not know it exists) and 403 for a public event.
pub struct OwnedEvent {
    pub event: Event,
    pub user: CurrentUser,
}

impl<S> FromRequestParts<S> for OwnedEvent
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        let id = event_id(parts, state).await?;
        // Always the stored event: changes check its version against it.
        let event = AppState::from_ref(state)
            .store
            .event(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("event"))?;
        if user.may_manage(&event.owner_id) {
            Ok(OwnedEvent { event, user })
        } else if is_public(&event) {
            Err(ApiError::forbidden(
                "only the event's organizer or an admin may do this",
            ))
        } else {
            Err(ApiError::not_found("event"))
        }
    }
}
