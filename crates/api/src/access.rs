//! Object-level access: loading an event named in the path and deciding whether the caller may
//! see or change it. Handlers receive an already-authorised event, so no handler can forget the
//! check. Another owner's draft answers 404, exactly like an id that does not exist.

use crate::extract::{CurrentUser, MaybeUser};
use crate::{ApiError, AppState};
use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use marquee_domain::{Event, EventId, EventStatus};

async fn load_event<S>(parts: &mut Parts, state: &S) -> Result<Event, ApiError>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("event"))?;
    let state = AppState::from_ref(state);
    state
        .store
        .event(&EventId::from_string(id))
        .await?
        .ok_or_else(|| ApiError::not_found("event"))
}

fn is_public(event: &Event) -> bool {
    event.status != EventStatus::Draft
}

/// An event the caller may see: published or cancelled events for anyone, drafts for their
/// owner and admins.
pub struct VisibleEvent {
    pub event: Event,
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
        let event = load_event(parts, state).await?;
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
        let event = load_event(parts, state).await?;
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
