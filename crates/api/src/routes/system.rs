//! Liveness, readiness, metrics.

use crate::extract::Admin;
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    pub status: &'static str,
    /// Each dependency and how it answered.
    #[schema(value_type = Object)]
    pub checks: std::collections::BTreeMap<&'static str, String>,
}

/// 200 while the process is up.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Up", body = HealthBody)))]
pub async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// 200 when every dependency answers, else 503 naming the one that does not.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "A dependency is down; `dependency` names it", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<ReadyBody>, ApiError> {
    let backend = state.store.backend().name();
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(ReadyBody {
            status: "ready",
            checks: [("store", format!("ok ({backend})"))].into_iter().collect(),
        })),
        Ok(Err(error)) => Err(ApiError::unavailable(
            "store",
            format!("the {backend} store is not answering: {error}"),
        )),
        Err(_) => Err(ApiError::unavailable(
            "store",
            format!("the {backend} store did not answer within 2 s"),
        )),
    }
}

/// Prometheus metrics; on the main listener for admins only (the admin listener serves them to
/// anyone who can reach it).
#[utoipa::path(get, path = "/metrics", tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn metrics_for_admins(state: State<AppState>, _admin: Admin) -> impl IntoResponse {
    render_metrics(state).await
}

pub async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
