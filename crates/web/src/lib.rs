//! The web app: a few HTML pages and one small ES module, embedded in the binary
//! (`include_str!`), so `cargo run` serves them and nothing is loaded from the internet. The one
//! library the app uses, hls.js for the watch page, is an npm dependency that `build.rs` bundles
//! (`/assets/player.js`, loaded by the watch page alone). Pages are plain HTML shells; `app.js` fills them from the HTTP API with the user's
//! bearer token (kept in `localStorage`), follows seat maps and waiting-room places over SSE, and
//! shows the API's error bodies as they are.
//!
//! **Boundary:** no server-side logic beyond serving files; everything goes through the public
//! API, so the app can do nothing a client of the API could not.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

const LAYOUT: &str = include_str!("../assets/layout.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
/// hls.js and the watch page's glue, bundled by `build.rs` from the npm lockfile.
const PLAYER_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/player.bundle.js"));
/// The demo's GeoNames city extract, so "near a city" works with nothing fetched from outside.
const CITIES_CSV: &str = include_str!("../../marquee/data/cities.csv");

/// One page: its title, its `data-page` (which part of `app.js` runs) and its main content.
struct Page {
    title: &'static str,
    name: &'static str,
    main: &'static str,
}

const HOME: Page = Page {
    title: "Find live events",
    name: "home",
    main: include_str!("../assets/home.html"),
};
const EVENT: Page = Page {
    title: "Event",
    name: "event",
    main: include_str!("../assets/event.html"),
};
const WATCH: Page = Page {
    title: "Watch live",
    name: "watch",
    main: include_str!("../assets/watch.html"),
};
const SIGN_IN: Page = Page {
    title: "Sign in",
    name: "signin",
    main: include_str!("../assets/signin.html"),
};
const ORDERS: Page = Page {
    title: "My orders",
    name: "orders",
    main: include_str!("../assets/orders.html"),
};

const ORGANIZER: Page = Page {
    title: "Organizer",
    name: "organizer",
    main: include_str!("../assets/organizer.html"),
};
const DASHBOARD: Page = Page {
    title: "Event dashboard",
    name: "dashboard",
    main: include_str!("../assets/dashboard.html"),
};

/// What a page may load and who may frame it. Scripts only from this node (no inline script,
/// no eval), so injected markup cannot run; no framing (clickjacking of checkout and refunds);
/// media and fetches may also go to another origin, because playback URLs can name a CDN or
/// point of presence (`public_url`); hls.js plays through `blob:` media and a `blob:` worker;
/// inline styles are allowed for the QR codes' SVG.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
    media-src 'self' blob: https: http:; connect-src 'self' https: http:; \
    worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn render(page: &Page) -> Response {
    let html = LAYOUT
        .replace("{{title}}", page.title)
        .replace("{{page}}", page.name)
        .replace("{{main}}", page.main);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            // For browsers that predate frame-ancestors.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

/// A file served from the binary. Browsers revalidate it on each use (`no-cache`) and get a 304
/// while it is unchanged: its ETag is a hash of its bytes, so a new build's file is fetched
/// anew and an unchanged one (the player bundle is 590 KB) is not sent again.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            content_type,
            body,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            // SipHash with fixed keys: the same bytes give the same tag in every process of
            // this build, which is all an ETag needs (it is not a security boundary).
            let mut hasher = std::hash::DefaultHasher::new();
            self.body.hash(&mut hasher);
            HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let unchanged = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes());
        let mut response = if unchanged {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = (StatusCode::OK, self.body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, etag.clone());
        // A script or stylesheet is only ever what its content type says.
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

static APP_JS_ASSET: Asset = Asset::new("text/javascript; charset=utf-8", APP_JS);
static PLAYER_JS_ASSET: Asset = Asset::new("text/javascript; charset=utf-8", PLAYER_JS);
static CITIES_CSV_ASSET: Asset = Asset::new("text/csv; charset=utf-8", CITIES_CSV);
static APP_CSS_ASSET: Asset = Asset::new("text/css; charset=utf-8", APP_CSS);

/// The pages and assets, for any state: merge into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { render(&HOME) }))
        .route("/events/{id}", get(|| async { render(&EVENT) }))
        .route("/events/{id}/watch", get(|| async { render(&WATCH) }))
        .route("/signin", get(|| async { render(&SIGN_IN) }))
        .route("/me/orders", get(|| async { render(&ORDERS) }))
        .route("/organizer", get(|| async { render(&ORGANIZER) }))
        .route(
            "/organizer/events/{id}",
            get(|| async { render(&DASHBOARD) }),
        )
        .route(
            "/assets/app.js",
            get(|headers: HeaderMap| async move { APP_JS_ASSET.respond(&headers) }),
        )
        .route(
            "/assets/player.js",
            get(|headers: HeaderMap| async move { PLAYER_JS_ASSET.respond(&headers) }),
        )
        .route(
            "/assets/cities.csv",
            get(|headers: HeaderMap| async move { CITIES_CSV_ASSET.respond(&headers) }),
        )
        .route(
            "/assets/app.css",
            get(|headers: HeaderMap| async move { APP_CSS_ASSET.respond(&headers) }),
        )
}
