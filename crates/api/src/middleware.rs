//! Request-wide middleware: the request id scope, per-route metrics, and panics turned into the
//! contract's 500 body.

use crate::{request_context, ApiError};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marquee_telemetry::names;
use std::any::Any;
use std::time::Instant;

pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Runs the rest of the stack inside the request-id scope and records rate, errors and latency
/// per route template (never the raw path, which would explode label cardinality).
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let in_flight = metrics::gauge!(names::HTTP_REQUESTS_IN_FLIGHT);
    in_flight.increment(1.0);
    let started = Instant::now();
    let response = request_context::scope(request_id, next.run(request)).await;
    in_flight.decrement(1.0);
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(names::HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(started.elapsed().as_secs_f64());
    // A 503 with `Retry-After` is a refusal the node chose (shedding past its booking limit):
    // counted (`marquee_booking_shed_total`), not logged, or an overload would also flood
    // the logs.
    if response.status().is_server_error()
        && !response
            .headers()
            .contains_key(axum::http::header::RETRY_AFTER)
    {
        tracing::warn!(status = response.status().as_u16(), "request failed");
    }
    response
}

/// A panic in a handler is a bug: log it, answer 500 with the request id, keep serving.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    #[derive(Debug, thiserror::Error)]
    #[error("handler panicked: {0}")]
    struct Panicked(String);
    ApiError::internal(&Panicked(detail.to_string())).into_response()
}

/// Behind a trusted proxy, the client's address replaces the proxy's in `ConnectInfo`, so every
/// per-IP limit downstream (quotas, push connections, waiting-room joins) counts clients, not
/// the gateway.
pub async fn client_address(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let trusted = &state.settings.trusted_proxies;
    if !trusted.is_empty() {
        let info = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|axum::extract::ConnectInfo(peer)| *peer);
        if let Some(peer) = info {
            // The socket's own peer stays available to checks that must not believe any
            // header (the operators' listener admits loopback peers only, not loopback claims).
            request.extensions_mut().insert(TcpPeer(peer));
            let client = trusted.client_addr(peer, request.headers());
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(client));
        }
    }
    next.run(request).await
}

/// The TCP peer of a request, before `X-Forwarded-For` from a trusted proxy replaced it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpPeer(pub std::net::SocketAddr);
