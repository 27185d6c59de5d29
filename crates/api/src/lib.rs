//! The HTTP contract (`docs/api.md`): routes, extractors, wire types, error bodies and
//! the OpenAPI document, which is generated from the handlers' annotations so it cannot drift
//! from what the server does.
//!
//! **Boundary:** this is the only crate that knows HTTP and JSON wire formats. It receives its
//! backends as trait objects in [`AppState`] and never chooses one.
//!
//! A request passes, outermost first: request id (created, or the client's echoed) → trace span →
//! request-id scope and metrics → panic guard → body limit → routing → extractors (auth, role,
//! ownership, JSON) → handler → [`ApiError`] for every failure.

mod access;
mod booking_limit;
pub mod connections;
mod error;
pub mod extract;
mod idempotency;
pub mod lean_listener;
pub mod live;
pub mod media_listener;
mod middleware;
pub mod notifications;
mod openapi;
pub mod operator;
pub mod push;
pub mod push_listener;
pub mod queue;
mod rate_limit;
mod request_context;
pub mod routes;
mod state;
pub mod wire;
pub mod zero_copy;

pub use booking_limit::BookingLimit;
pub use connections::{ConnectionCap, HttpLimits, TimedIo};
pub use error::ApiError;
pub use lean_listener::{lean_listener, LeanListener, LeanPaths};
pub use live::{spawn_status_recorder, Live, LiveSettings, RecordingKeeper, StreamKeyGate};
pub use notifications::{spawn_notifications, NotificationSettings, Notifications};
pub use operator::OperatorAccess;
pub use push::{spawn_change_feed, Push, PushSettings};
pub use queue::{spawn_queue_driver, Queue, QueueSettings};
pub use rate_limit::{AuthLimits, RateLimits};
pub use request_context::current_request_id;
pub use state::{
    ApiSettings, AppState, Dependency, EventCache, EventJson, SeatMapCache, SharedEvents,
    VenueCache,
};
pub use zero_copy::{zero_copy, ZeroCopyListener, ZeroCopyStream};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::system::healthz))
        .routes(routes!(routes::system::readyz))
        .routes(routes!(routes::system::metrics_for_admins))
        .routes(routes!(routes::accounts::register))
        .routes(routes!(routes::accounts::login))
        .routes(routes!(routes::accounts::me))
        .routes(routes!(
            routes::venues::create_venue,
            routes::venues::list_venues
        ))
        .routes(routes!(routes::venues::get_venue))
        .routes(routes!(
            routes::events::create_event,
            routes::events::list_events
        ))
        .routes(routes!(
            routes::events::get_event,
            routes::events::patch_event
        ))
        .routes(routes!(routes::events::publish_event))
        .routes(routes!(routes::events::cancel_event))
        .routes(routes!(routes::events::event_seats))
        .routes(routes!(routes::holds::create_hold))
        .routes(routes!(
            routes::holds::get_hold,
            routes::holds::release_hold
        ))
        .routes(routes!(routes::holds::extend_hold))
        .routes(routes!(routes::orders::create_order))
        .routes(routes!(routes::orders::get_order))
        .routes(routes!(routes::orders::order_history))
        .routes(routes!(routes::orders::ticket_qr))
        .routes(routes!(routes::orders::refund_order))
        .routes(routes!(routes::events::check_in))
        .routes(routes!(routes::orders::my_orders))
        .routes(routes!(routes::search::search))
        .routes(routes!(routes::search::suggest))
        .routes(routes!(routes::search::similar))
        .routes(routes!(
            routes::queue::join_queue,
            routes::queue::queue_stats
        ))
        .routes(routes!(
            routes::queue::queue_place,
            routes::queue::leave_queue
        ))
        .routes(routes!(routes::queue::pause_queue))
        .routes(routes!(routes::queue::resume_queue))
        .routes(routes!(routes::queue::end_queue))
        .routes(routes!(routes::push::sse))
        .routes(routes!(routes::push::poll))
        .routes(routes!(routes::push::websocket))
        .routes(routes!(
            routes::webhooks::create_webhook,
            routes::webhooks::list_webhooks
        ))
        .routes(routes!(
            routes::webhooks::get_webhook,
            routes::webhooks::delete_webhook
        ))
        .routes(routes!(routes::webhooks::ping_webhook))
        .routes(routes!(routes::webhooks::list_deliveries))
        .routes(routes!(routes::webhooks::replay_delivery))
        .routes(routes!(
            routes::live::issue_stream_key,
            routes::live::get_stream
        ))
        .routes(routes!(routes::live::list_recordings))
        .routes(routes!(routes::live::download_recording))
}

/// The public application: every route of the contract with its middleware.
pub fn router(state: AppState) -> Router {
    let (routes, document) = api_routes().split_for_parts();
    let document = Arc::new(document);
    let routes = routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        // After routing, so route quotas see the matched path; before the handlers.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            booking_limit::enforce,
        ))
        // Outermost of the two: a request over its quota is refused without taking a booking
        // slot.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        });
    with_middleware(routes, &state)
        .merge(media_router(&state))
        .with_state(state)
}

/// The media origin (`/live/…`): every viewer fetches a playlist every segment and each
/// segment once, so these requests outnumber the API's by far. They carry their own access
/// check (the playback token), and get lean middleware: no request id, span or rate-limit
/// lookup per request; panics are still caught and every request still counted.
fn media_router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/live/_auth", get(routes::live::media_auth))
        .route("/live/{event}/{token}/{file}", get(routes::live::media))
        .layer(
            ServiceBuilder::new()
                .layer(node_header(state))
                .layer(no_sniff())
                .layer(axum::middleware::from_fn(middleware::observe))
                .layer(CatchPanicLayer::custom(middleware::panic_response)),
        )
}

/// The admin listener: metrics, probes and operator announcements (`POST /push/publish`)
/// without authentication, for a port only operators can reach.
pub fn admin_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(routes::system::render_metrics))
        .route("/healthz", get(routes::system::healthz))
        .route("/readyz", get(routes::system::readyz))
        .route(
            "/push/publish",
            axum::routing::post(routes::push::operator_publish),
        )
        .fallback(|| async { ApiError::not_found("route").into_response() })
        // Inside the request-id layers, so a refusal carries a request id like any error.
        .layer(axum::middleware::from_fn_with_state(
            state.settings.operator_access.clone(),
            operator::require_operator,
        ));
    with_middleware(routes, &state).with_state(state)
}

/// `x-marquee-node` on every response: which node answered.
fn node_header(state: &AppState) -> SetResponseHeaderLayer<HeaderValue> {
    let node_id = HeaderValue::from_str(&state.settings.node_id)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-id"));
    SetResponseHeaderLayer::overriding(HeaderName::from_static("x-marquee-node"), node_id)
}

fn no_sniff() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    )
}

fn with_middleware(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    let request_id = HeaderName::from_static(middleware::REQUEST_ID_HEADER);
    routes.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(node_header(state))
            .layer(no_sniff())
            .layer(
                TraceLayer::new_for_http()
                    .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                    // 503s are refusals the node chose (shedding, a dependency down); `observe`
                    // logs the ones that are not shedding, once. Logging each shed request at
                    // error level would add work exactly when the node has none to spare.
                    .on_failure(
                        |class: ServerErrorsFailureClass,
                         latency: std::time::Duration,
                         _span: &tracing::Span| {
                            if !matches!(
                                class,
                                ServerErrorsFailureClass::StatusCode(
                                    StatusCode::SERVICE_UNAVAILABLE
                                )
                            ) {
                                tracing::error!(
                                    classification = %class,
                                    latency = ?latency,
                                    "response failed"
                                );
                            }
                        },
                    )
                    .make_span_with(|request: &Request<_>| {
                        let request_id = request
                            .headers()
                            .get(middleware::REQUEST_ID_HEADER)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id = %request_id,
                        )
                    }),
            )
            .layer(axum::middleware::from_fn(middleware::observe))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::client_address,
            ))
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            // A body that stops arriving fails its request rather than hold the handler (and
            // the connection) open: the body read timeout runs per frame of the body.
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                state.settings.http.body_read_timeout,
            ))
            .layer(DefaultBodyLimit::max(state.settings.body_limit_bytes)),
    )
}
