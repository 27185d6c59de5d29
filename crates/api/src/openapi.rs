//! The OpenAPI document's frame: title, security scheme and tags. Paths and schemas come from the
//! handlers' `#[utoipa::path]` annotations, collected as routes are registered.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marquee",
        description = "Live events: catalog, seats, orders, push, search and streaming.",
        version = "1"
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, readiness, metrics"),
        (name = "accounts", description = "Register, log in, who am I"),
        (name = "venues", description = "Venues and seat maps (organizers)"),
        (name = "events", description = "Events and their lifecycle"),
        (name = "holds", description = "Seat holds (leases with a TTL)"),
        (name = "orders", description = "Orders and tickets"),
        (name = "queue", description = "The virtual waiting room of an on-sale: places, passes, organizer controls"),
        (name = "search", description = "Discovery: typo-tolerant, geo-aware search, suggestions, similar events"),
        (name = "push", description = "Live updates: SSE, WebSocket and long polling with resume"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
