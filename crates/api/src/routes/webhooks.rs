//! Organizers' webhook endpoints (an extension of the contract): where the platform POSTs
//! `order.confirmed`, `order.refunded`, `event.published` and `event.cancelled` for their
//! events, signed with the endpoint's secret (`marquee-signature: t=<unix>,v1=<hex>`, an
//! HMAC-SHA256 of `"{t}.{body}"`). Deliveries are jobs: retried with backoff, then dead-lettered
//! (`marquee jobs`).

use crate::extract::{JsonBody, Organizer};
use crate::notifications::{WEBHOOK_EVENTS, WEBHOOK_QUEUE};
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use marquee_domain::{FieldErrors, UserId};
use marquee_jobs::NewJob;
use marquee_notify::WebhookUrlError;
use marquee_store::WebhookEndpoint;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Endpoints one organizer may have.
pub const MAX_WEBHOOKS_PER_ORGANIZER: usize = 20;
const MAX_DESCRIPTION: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// `https://…` (or `http://…`); must reach a public address unless the operator allowed
    /// the range (`--webhook-allow-cidr`).
    pub url: String,
    /// Which event types to receive; all four by default.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The signing secret: on creation and on a single endpoint's page, never in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PingQueued {
    pub delivery_id: String,
}

impl WebhookBody {
    fn of(endpoint: &WebhookEndpoint, with_secret: bool) -> WebhookBody {
        WebhookBody {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            description: endpoint.description.clone(),
            created_at: endpoint.created_at,
            secret: with_secret.then(|| endpoint.secret.clone()),
        }
    }
}

impl From<WebhookUrlError> for ApiError {
    fn from(error: WebhookUrlError) -> Self {
        match error {
            WebhookUrlError::NotPublic { .. } | WebhookUrlError::Unresolvable { .. } => {
                ApiError::unprocessable("webhook_url_refused", error.to_string())
            }
            _ => ApiError::invalid_field("url", error.to_string()),
        }
    }
}

impl From<marquee_jobs::JobsError> for ApiError {
    fn from(error: marquee_jobs::JobsError) -> Self {
        ApiError::unavailable("jobs", error)
    }
}

/// Register a webhook endpoint for the caller's events.
#[utoipa::path(
    post, path = "/api/v1/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Registered; the body carries the signing secret", body = WebhookBody),
        (status = 400, description = "Invalid URL, event type or description", body = ErrorBody),
        (status = 403, description = "Not an organizer", body = ErrorBody),
        (status = 422, description = "`webhook_url_refused`: the URL reaches a private or special address; `webhook_limit`: too many endpoints", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    JsonBody(request): JsonBody<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookBody>), ApiError> {
    let mut fields = FieldErrors::default();
    let events = match request.events {
        None => WEBHOOK_EVENTS.iter().map(|kind| kind.to_string()).collect(),
        Some(events) => {
            if events.is_empty() {
                fields.add("events", "must name at least one event type");
            }
            let mut kept: Vec<String> = Vec::new();
            for kind in events {
                if !WEBHOOK_EVENTS.contains(&kind.as_str()) {
                    fields.add(
                        "events",
                        format!("{kind:?} is not one of {}", WEBHOOK_EVENTS.join(", ")),
                    );
                } else if !kept.contains(&kind) {
                    kept.push(kind);
                }
            }
            kept
        }
    };
    let description = request.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        fields.add(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
    fields.into_result()?;
    let policy = state.notifications.webhooks.policy();
    let url = policy.check_url(request.url.trim())?;
    // Names are checked now too (and again at every delivery, where it counts).
    policy.resolve(&url).await?;
    if state.store.webhooks_of(&caller.id).await?.len() >= MAX_WEBHOOKS_PER_ORGANIZER {
        return Err(ApiError::unprocessable(
            "webhook_limit",
            format!("an organizer may have at most {MAX_WEBHOOKS_PER_ORGANIZER} webhook endpoints"),
        ));
    }
    let endpoint = WebhookEndpoint {
        id: format!("wh_{}", ulid::Ulid::new().to_string().to_lowercase()),
        organizer_id: caller.id,
        url: url.to_string(),
        events,
        secret: marquee_notify::new_secret(),
        description,
        created_at: marquee_domain::timestamp_now(),
    };
    state.store.create_webhook(&endpoint).await?;
    Ok((StatusCode::CREATED, Json(WebhookBody::of(&endpoint, true))))
}

/// The caller's webhook endpoints, oldest first (without their secrets).
#[utoipa::path(
    get, path = "/api/v1/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's endpoints", body = WebhookList),
        (status = 403, description = "Not an organizer", body = ErrorBody),
    )
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
) -> Result<Json<WebhookList>, ApiError> {
    let endpoints = state.store.webhooks_of(&caller.id).await?;
    Ok(Json(WebhookList {
        items: endpoints
            .iter()
            .map(|endpoint| WebhookBody::of(endpoint, false))
            .collect(),
    }))
}

async fn owned(state: &AppState, caller: &UserId, id: &str) -> Result<WebhookEndpoint, ApiError> {
    match state.store.webhook(id).await? {
        // Another organizer's endpoint is as absent as a missing one.
        Some(endpoint) if &endpoint.organizer_id == caller => Ok(endpoint),
        _ => Err(ApiError::not_found("webhook")),
    }
}

/// One of the caller's endpoints, with its secret.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookBody),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
    )
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    Path(id): Path<String>,
) -> Result<Json<WebhookBody>, ApiError> {
    let endpoint = owned(&state, &caller.id, &id).await?;
    Ok(Json(WebhookBody::of(&endpoint, true)))
}

/// Remove an endpoint; deliveries still queued for it are dropped when they come up.
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let endpoint = owned(&state, &caller.id, &id).await?;
    state.store.delete_webhook(&endpoint.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a signed `ping` delivery to the endpoint, to check a receiver.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/ping", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Queued", body = PingQueued),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
    )
)]
pub async fn ping_webhook(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<PingQueued>), ApiError> {
    let endpoint = owned(&state, &caller.id, &id).await?;
    let delivery_id = format!("whd_ping_{}", ulid::Ulid::new().to_string().to_lowercase());
    let body = json!({
        "id": delivery_id,
        "type": "ping",
        "created_at": Utc::now(),
        "data": {"webhook_id": endpoint.id},
    });
    state
        .notifications
        .enqueue(&[NewJob::new(
            WEBHOOK_QUEUE,
            json!({"endpoint_id": endpoint.id, "delivery_id": delivery_id, "body": body}),
        )
        .ordered_by(format!("{}:ping", endpoint.id))
        .attempts(state.notifications.settings.max_attempts)])
        .await?;
    Ok((StatusCode::ACCEPTED, Json(PingQueued { delivery_id })))
}

/// A delivery not yet done: waiting, being sent, or dead-lettered.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    pub job_id: i64,
    pub delivery_id: String,
    /// `order.confirmed`, …, or `ping`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `ready` (waiting for its next attempt), `running` or `dead`.
    pub state: &'static str,
    pub attempt: u32,
    pub max_attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryBody>,
}

fn delivery_body(record: &marquee_jobs::JobRecord) -> DeliveryBody {
    DeliveryBody {
        job_id: record.id,
        delivery_id: record.payload["delivery_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        event_type: record.payload["body"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        state: record.state.as_str(),
        attempt: record.attempt,
        max_attempts: record.max_attempts,
        next_attempt_at: (record.state == marquee_jobs::JobState::Ready).then_some(record.run_at),
        last_error: record.last_error.clone(),
        created_at: record.enqueued_at,
    }
}

/// The endpoint's deliveries still pending and its dead letters, newest first (up to 100);
/// delivered ones are gone.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "Pending and dead deliveries", body = DeliveryList),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    let endpoint = owned(&state, &caller.id, &id).await?;
    let records = state
        .notifications
        .jobs
        .list(&marquee_jobs::JobFilter {
            queue: Some(WEBHOOK_QUEUE.to_string()),
            key_prefix: Some(format!("{}:", endpoint.id)),
            limit: 100,
            ..marquee_jobs::JobFilter::default()
        })
        .await?;
    Ok(Json(DeliveryList {
        items: records
            .iter()
            .filter(|record| record.state != marquee_jobs::JobState::Done)
            .map(delivery_body)
            .collect(),
    }))
}

/// Send a dead-lettered delivery again, from its first attempt (after fixing the receiver).
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/deliveries/{job_id}/replay", tag = "webhooks",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Webhook id"),
        ("job_id" = i64, Path, description = "The delivery's `job_id`"),
    ),
    responses(
        (status = 202, description = "Queued again; the new job", body = DeliveryBody),
        (status = 404, description = "No such endpoint, or no such delivery of it", body = ErrorBody),
        (status = 409, description = "`not_dead`: the delivery is not in the dead letters", body = ErrorBody),
    )
)]
pub async fn replay_delivery(
    State(state): State<AppState>,
    Organizer(caller): Organizer,
    Path((id, job_id)): Path<(String, i64)>,
) -> Result<(StatusCode, Json<DeliveryBody>), ApiError> {
    let endpoint = owned(&state, &caller.id, &id).await?;
    let jobs = &state.notifications.jobs;
    let prefix = format!("{}:", endpoint.id);
    let record = jobs
        .get(job_id)
        .await?
        .filter(|record| {
            record.queue == WEBHOOK_QUEUE
                && record
                    .ordering_key
                    .as_deref()
                    .is_some_and(|key| key.starts_with(&prefix))
        })
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    if record.state != marquee_jobs::JobState::Dead {
        return Err(ApiError::conflict(
            "not_dead",
            "only a dead-lettered delivery can be replayed",
        ));
    }
    let replayed = jobs
        .replay(record.id, Utc::now())
        .await?
        .ok_or_else(|| ApiError::conflict("not_dead", "the delivery was replayed already"))?;
    state.notifications.wake_workers();
    let record = jobs
        .get(replayed)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(delivery_body(&record))))
}
