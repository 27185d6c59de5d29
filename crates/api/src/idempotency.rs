//! `Idempotency-Key`: a retried request with the same key and body gets the first response; the
//! same key with another body is 422 `idempotency_key_reused`. Keys are scoped to the user and
//! stored durably with the response, so a retry after a crash or on another node is answered
//! the same way. Server errors (5xx) are not stored: the client should retry those for real.

use crate::{ApiError, AppState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use marquee_domain::UserId;
use marquee_store::StoredResponse;
use serde::Serialize;
use sha2::{Digest, Sha256};

const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// The key a client sent, validated.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid_field("Idempotency-Key", "must be 1-255 visible ASCII characters")
        })?;
    Ok(Some(key.to_string()))
}

fn fingerprint(scope: &str, request: &impl Serialize) -> String {
    let body = serde_json::to_vec(request).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An id (ULID-shaped) for what a keyed request creates, the same on every retry of it: from
/// the user, the endpoint's scope, the key and the body. A retry whose first answer was lost
/// finds what its first attempt made under this id.
pub fn derived_id(user: &UserId, scope: &str, key: &str, request: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(fingerprint(scope, request).as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    ulid::Ulid::from_bytes(bytes).to_string()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status_code).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        stored.body,
    )
        .into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Runs `operation` once per (user, key, request); `scope` names the endpoint so one key used
/// on two endpoints does not collide.
pub async fn run<F, Fut, T>(
    state: &AppState,
    user: &UserId,
    key: Option<String>,
    scope: &str,
    request: &impl Serialize,
    operation: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, T), ApiError>>,
    T: Serialize,
{
    let Some(key) = key else {
        return match operation().await {
            Ok((status, body)) => (status, axum::Json(body)).into_response(),
            Err(error) => error.into_response(),
        };
    };
    let hash = fingerprint(scope, request);
    match state.store.idempotent_response(user, &key).await {
        Ok(Some(stored)) if stored.request_hash == hash => return replay(stored),
        Ok(Some(_)) => {
            return ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
            .into_response()
        }
        Ok(None) => {}
        Err(error) => return ApiError::from(error).into_response(),
    }
    let (status, body) = match operation().await {
        Ok((status, body)) => (status, serde_json::to_string(&body).unwrap_or_default()),
        Err(error) if error.status().is_server_error() => return error.into_response(),
        Err(error) => {
            let response = error.into_response();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let stored = StoredResponse {
        request_hash: hash,
        status_code: status.as_u16(),
        body,
    };
    match state
        .store
        .save_idempotent_response(user, &key, &stored)
        .await
    {
        Ok(true) => {}
        // A concurrent retry stored its answer first: answer as it did.
        Ok(false) => {
            if let Ok(Some(first)) = state.store.idempotent_response(user, &key).await {
                if first.request_hash == stored.request_hash {
                    return replay(first);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not store an idempotent response"),
    }
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        stored.body,
    )
        .into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("false"));
    response
}
