//! Liveness, readiness, metrics.

use crate::extract::Admin;
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::time::Duration;
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
    const PATIENCE: Duration = Duration::from_secs(2);
    let backend = state.store.backend().name();
    // What a dependency said is logged by `ApiError::unavailable`, never answered: a probe
    // is reachable by whoever reaches the listener, and error texts name hosts and internals.
    match tokio::time::timeout(PATIENCE, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            return Err(ApiError::unavailable(
                "store",
                format!("the {backend} store is not answering: {error}"),
            ))
        }
        Err(_) => {
            return Err(ApiError::unavailable(
                "store",
                format!("the {backend} store did not answer within 2 s"),
            ))
        }
    }
    let mut checks: std::collections::BTreeMap<&'static str, String> =
        [("store", format!("ok ({backend})"))].into_iter().collect();
    // Every dependency is asked at once, so a dead one costs the probe 2 s, not 2 s each.
    let answers = futures::future::join_all(state.dependencies.iter().map(|dependency| async {
        let answer = tokio::time::timeout(PATIENCE, dependency.check()).await;
        (dependency.name(), answer)
    }))
    .await;
    for (name, answer) in answers {
        match answer {
            Ok(Ok(())) => {
                checks.insert(name, "ok".to_string());
            }
            Ok(Err(error)) => {
                return Err(ApiError::unavailable(
                    name,
                    format!("{name} is not answering: {error}"),
                ))
            }
            Err(_) => {
                return Err(ApiError::unavailable(
                    name,
                    format!("{name} did not answer within 2 s"),
                ))
            }
        }
    }
    checks.insert("changes", state.changes.backend().to_string());
    Ok(Json(ReadyBody {
        status: "ready",
        checks,
    }))
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
    // Set at scrape time: the hub counts its channels, nothing needs to report each change.
    metrics::gauge!("marquee_push_channels").set(state.push.hub.channel_count() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
