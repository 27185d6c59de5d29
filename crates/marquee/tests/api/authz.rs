//! Issue #33: the authorization matrix. Every operation the server serves, taken from its own
//! OpenAPI document (which utoipa builds from the router, so a new route is in it), crossed with
//! every kind of caller, against one fixture. A row of [`TABLE`] says what each persona must get;
//! the test fails when the document has an operation without a row or a row names an operation
//! the document lacks, so a new route cannot be forgotten.
//!
//! What the outcomes mean (docs/api.md, "General rules"):
//! - [`Expect::Unauthenticated`]: 401, no or bad token.
//! - [`Expect::Forbidden`]: 403, signed in but not allowed.
//! - [`Expect::NotFound`]: 404, the object is someone else's (never leaking that it exists).
//! - [`Expect::Ok`]: *passed authorization*: anything but 401, 403 and 404. The matrix sends
//!   minimal bodies and runs operations in a fixed order, so an allowed caller may well get 400,
//!   409 or 422 (an event already published, a hold already extended, a second refund); that is
//!   validation or state, not access, and other tests own it. 5xx is never accepted.

use crate::support::{event_body, venue_body, TestApp};
use marquee_domain::{DisplayName, Email, Password, Role, User, UserId};
use marquee_store::{CatalogStore, Recording};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Who calls. The order is the order of each row's outcomes in [`TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persona {
    Anonymous,
    /// Holds a live hold and owns an order (with a ticket) on the owner's event.
    Fan,
    OtherFan,
    /// Owns the venue, the events, the webhook and the recording.
    Owner,
    OtherOrganizer,
    Admin,
}

const PERSONAS: [Persona; 6] = [
    Persona::Anonymous,
    Persona::Fan,
    Persona::OtherFan,
    Persona::Owner,
    Persona::OtherOrganizer,
    Persona::Admin,
];

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Not 401, 403 or 404 (and not 5xx): the caller got past authorization.
    Ok,
    Unauthenticated,
    Forbidden,
    NotFound,
    /// Any of these; only where a row's comment says why.
    Either(&'static [Expect]),
}

impl Expect {
    fn admits(self, status: StatusCode) -> bool {
        match self {
            Expect::Ok => !matches!(status.as_u16(), 401 | 403 | 404) && !status.is_server_error(),
            Expect::Unauthenticated => status == StatusCode::UNAUTHORIZED,
            Expect::Forbidden => status == StatusCode::FORBIDDEN,
            Expect::NotFound => status == StatusCode::NOT_FOUND,
            Expect::Either(options) => options.iter().any(|option| option.admits(status)),
        }
    }

    /// Allowed callers run after refused ones within a row, so a destructive operation (a
    /// release, a refund, a cancel) is refused to everyone else while its object still exists.
    fn allows(self) -> bool {
        matches!(self, Expect::Ok)
    }
}

const OK: Expect = Expect::Ok;
const UNAUTH: Expect = Expect::Unauthenticated;
const FORBID: Expect = Expect::Forbidden;
const GONE: Expect = Expect::NotFound;

/// Outcomes in [`PERSONAS`] order: anonymous, fan, other fan, owner, other organizer, admin.
type Outcomes = [Expect; 6];

/// Anyone, signed in or not.
const PUBLIC: Outcomes = [OK, OK, OK, OK, OK, OK];
/// Any signed-in user.
const SIGNED_IN: Outcomes = [UNAUTH, OK, OK, OK, OK, OK];
/// Organizers and admins (the `Organizer` extractor), on nothing that belongs to anyone.
const ORGANIZERS: Outcomes = [UNAUTH, FORBID, FORBID, OK, OK, OK];
/// The event's organizer and admins (`OwnedEvent`); the event is published, so others get 403:
/// its existence is public (a draft would answer them 404).
const EVENT_OWNER: Outcomes = [UNAUTH, FORBID, FORBID, OK, FORBID, OK];
/// The fan's own hold: nobody else's business, admins included (404, never leaking it exists).
const HOLD_OWNER: Outcomes = [UNAUTH, OK, GONE, GONE, GONE, GONE];
/// The fan's order: its buyer, the event's organizer and admins; anyone else 404.
const ORDER_VIEWERS: Outcomes = [UNAUTH, OK, GONE, OK, GONE, OK];
/// The owner's webhook endpoint: the organizer's own setting (it carries the signing secret),
/// so another organizer and admins too get 404, as for a missing one; fans are not organizers.
const WEBHOOK_OWNER: Outcomes = [UNAUTH, FORBID, FORBID, OK, GONE, GONE];

/// What an operation's path parameters name.
#[derive(Clone, Copy, Debug)]
enum On {
    Nothing,
    /// The owner's published event, on sale, no waiting room: seats, holds, orders, stream.
    Event,
    /// The owner's published event with a waiting room, for the queue's operations.
    RoomEvent,
    Venue,
    Hold,
    Order,
    Webhook,
    /// The fan's place in the waiting room (`{token}`).
    QueuePlace,
}

struct Row {
    method: &'static str,
    path: &'static str,
    on: On,
    expect: Outcomes,
}

const fn row(method: &'static str, path: &'static str, on: On, expect: Outcomes) -> Row {
    Row {
        method,
        path,
        on,
        expect,
    }
}

/// Routes the router serves outside the OpenAPI document (crates/api/src/lib.rs `router`):
/// the document itself and the media origin, whose access is a playback token in the path, not
/// a bearer token. They have rows below all the same; if the document ever lists one of them,
/// the test fails so that this list is corrected. (The operators' listener, `admin_router`, is
/// another port reachable only by operators; system and push tests cover it.)
const OUTSIDE_THE_DOCUMENT: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/live/_auth"),
    ("GET", "/live/{event}/{token}/{file}"),
];

/// The matrix, run top to bottom. Destructive operations come last, in an order that keeps
/// each one's object alive for the rows before it.
const TABLE: &[Row] = &[
    // System.
    row("GET", "/healthz", On::Nothing, PUBLIC),
    // Ok, not 200: the node may answer 503 for a dependency; that is no access decision.
    row("GET", "/readyz", On::Nothing, PUBLIC),
    // On the public listener, admins only (the operators' listener is another port).
    row(
        "GET",
        "/metrics",
        On::Nothing,
        [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK],
    ),
    row("GET", "/api/v1/openapi.json", On::Nothing, PUBLIC),
    // Accounts: open to anyone; a bearer token sent along changes nothing.
    row("POST", "/api/v1/auth/register", On::Nothing, PUBLIC),
    row("POST", "/api/v1/auth/login", On::Nothing, PUBLIC),
    row("GET", "/api/v1/me", On::Nothing, SIGNED_IN),
    row("GET", "/api/v1/me/orders", On::Nothing, SIGNED_IN),
    // Venues.
    row("GET", "/api/v1/venues", On::Nothing, ORGANIZERS),
    row("POST", "/api/v1/venues", On::Nothing, ORGANIZERS),
    // A venue is public: every event body shows its venue.
    row("GET", "/api/v1/venues/{id}", On::Venue, PUBLIC),
    // Events.
    row("GET", "/api/v1/events", On::Nothing, PUBLIC),
    // At the owner's venue: another organizer gets 403, not 404, because venues are public
    // (the row above), so there is no existence to hide.
    row(
        "POST",
        "/api/v1/events",
        On::Nothing,
        [UNAUTH, FORBID, FORBID, OK, FORBID, OK],
    ),
    row("GET", "/api/v1/events/{id}", On::Event, PUBLIC),
    row("PATCH", "/api/v1/events/{id}", On::Event, EVENT_OWNER),
    row(
        "POST",
        "/api/v1/events/{id}/publish",
        On::Event,
        EVENT_OWNER,
    ),
    row("GET", "/api/v1/events/{id}/seats", On::Event, PUBLIC),
    row("GET", "/api/v1/events/{id}/similar", On::Event, PUBLIC),
    row("GET", "/api/v1/search", On::Nothing, PUBLIC),
    row("GET", "/api/v1/search/suggest", On::Nothing, PUBLIC),
    // Holds: any signed-in user may hold seats (the fan, who already holds, gets 422).
    row("POST", "/api/v1/events/{id}/holds", On::Event, SIGNED_IN),
    row("GET", "/api/v1/holds/{id}", On::Hold, HOLD_OWNER),
    row("POST", "/api/v1/holds/{id}/extend", On::Hold, HOLD_OWNER),
    // Buying someone else's hold: their hold is as absent as a missing one, admins included.
    row("POST", "/api/v1/orders", On::Hold, HOLD_OWNER),
    row("GET", "/api/v1/orders/{id}", On::Order, ORDER_VIEWERS),
    row(
        "GET",
        "/api/v1/orders/{id}/history",
        On::Order,
        ORDER_VIEWERS,
    ),
    row(
        "GET",
        "/api/v1/orders/{id}/tickets/{ticket_id}/qr.svg",
        On::Order,
        ORDER_VIEWERS,
    ),
    // The door: the organizer (and admins) with the fan's real ticket code.
    row(
        "POST",
        "/api/v1/events/{id}/checkin",
        On::Event,
        EVENT_OWNER,
    ),
    // Waiting room.
    row(
        "POST",
        "/api/v1/events/{id}/queue",
        On::RoomEvent,
        SIGNED_IN,
    ),
    row(
        "GET",
        "/api/v1/events/{id}/queue",
        On::RoomEvent,
        EVENT_OWNER,
    ),
    row(
        "POST",
        "/api/v1/events/{id}/queue/pause",
        On::RoomEvent,
        EVENT_OWNER,
    ),
    row(
        "POST",
        "/api/v1/events/{id}/queue/resume",
        On::RoomEvent,
        EVENT_OWNER,
    ),
    // A place's token is its capability (unguessable, signed): whoever has it may look.
    row("GET", "/api/v1/queue/{token}", On::QueuePlace, PUBLIC),
    // Push. `user:{fan}` is private to the fan (403 for anyone else signed in: the channel's
    // name is the user id, which the caller already knows, so there is nothing to hide).
    row(
        "GET",
        "/api/v1/push/poll",
        On::Nothing,
        [UNAUTH, OK, FORBID, FORBID, FORBID, FORBID],
    ),
    row(
        "GET",
        "/api/v1/push/sse",
        On::Nothing,
        [UNAUTH, OK, FORBID, FORBID, FORBID, FORBID],
    ),
    // The socket itself is open to anyone (public channels need no token); each subscription
    // is authorized in-band by the same check as SSE and polling (push tests cover that).
    row("GET", "/api/v1/push/ws", On::Nothing, PUBLIC),
    // Webhooks.
    row("GET", "/api/v1/webhooks", On::Nothing, ORGANIZERS),
    row("POST", "/api/v1/webhooks", On::Nothing, ORGANIZERS),
    row("GET", "/api/v1/webhooks/{id}", On::Webhook, WEBHOOK_OWNER),
    row(
        "GET",
        "/api/v1/webhooks/{id}/deliveries",
        On::Webhook,
        WEBHOOK_OWNER,
    ),
    row(
        "POST",
        "/api/v1/webhooks/{id}/ping",
        On::Webhook,
        WEBHOOK_OWNER,
    ),
    row(
        "POST",
        "/api/v1/webhooks/{id}/deliveries/{job_id}/replay",
        On::Webhook,
        WEBHOOK_OWNER,
    ),
    // Live streaming: keys for the organizer; the stream for ticket holders too.
    row("POST", "/api/v1/events/{id}/stream", On::Event, EVENT_OWNER),
    row(
        "GET",
        "/api/v1/events/{id}/stream",
        On::Event,
        [UNAUTH, OK, FORBID, OK, FORBID, OK],
    ),
    row(
        "GET",
        "/api/v1/events/{id}/recordings",
        On::Event,
        EVENT_OWNER,
    ),
    row(
        "GET",
        "/api/v1/events/{id}/recordings/{recording_id}",
        On::Event,
        EVENT_OWNER,
    ),
    // The media origin takes no bearer token: without a playback token (or with a forged one)
    // every caller is refused, whoever they are.
    row("GET", "/live/_auth", On::Event, [FORBID; 6]),
    row(
        "GET",
        "/live/{event}/{token}/{file}",
        On::Event,
        [FORBID; 6],
    ),
    // Destructive, last.
    row("DELETE", "/api/v1/holds/{id}", On::Hold, HOLD_OWNER),
    row("DELETE", "/api/v1/queue/{token}", On::QueuePlace, PUBLIC),
    row(
        "POST",
        "/api/v1/events/{id}/queue/end",
        On::RoomEvent,
        EVENT_OWNER,
    ),
    row(
        "POST",
        "/api/v1/orders/{id}/refund",
        On::Order,
        ORDER_VIEWERS,
    ),
    row(
        "DELETE",
        "/api/v1/webhooks/{id}",
        On::Webhook,
        WEBHOOK_OWNER,
    ),
    row("POST", "/api/v1/events/{id}/cancel", On::Event, EVENT_OWNER),
];

const PASSWORD: &str = "correct horse battery";

struct Fixture {
    app: TestApp,
    /// Bearer tokens in [`PERSONAS`] order (none for the anonymous caller).
    tokens: [Option<String>; 6],
    fan_id: String,
    fan_email: String,
    venue_id: String,
    event_id: String,
    room_event_id: String,
    hold_id: String,
    order_id: String,
    ticket_id: String,
    ticket_code: String,
    webhook_id: String,
    job_id: i64,
    recording_id: String,
    queue_token: String,
    /// The owner's draft event (and a recording of it), for [`draft_outcomes`].
    draft_event_id: String,
    draft_recording_id: String,
}

impl Fixture {
    async fn build() -> Fixture {
        let app = TestApp::spawn_with(|config| {
            // The webhook points at loopback; deliveries fail, which matters to nobody here.
            config.notifications.webhook_policy =
                marquee_notify::AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("net")]);
        })
        .await;
        let (fan_email, fan, fan_id) = register(&app, "fan").await;
        let (_, other_fan, _) = register(&app, "fan").await;
        let (_, owner, _) = register(&app, "organizer").await;
        let (_, other_organizer, _) = register(&app, "organizer").await;
        let admin = admin(&app).await;

        let venue = app.create_venue(&owner).await;
        let venue_id = venue["id"].as_str().expect("venue id").to_string();
        let seat_ids: Vec<String> = venue["sections"][0]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
            .filter_map(|seat| seat["id"].as_str().map(str::to_string))
            .collect();
        let event_id = on_sale(&app, &owner, &venue_id, json!({"enabled": false})).await;
        let room_event_id = on_sale(
            &app,
            &owner,
            &venue_id,
            json!({"enabled": true, "admit_per_minute": 600, "pass_ttl_seconds": 900}),
        )
        .await;

        // The fan's order (with its ticket), then a live hold besides.
        let bought = app
            .post(
                &format!("/api/v1/events/{event_id}/holds"),
                Some(&fan),
                json!({"seat_ids": &seat_ids[..1]}),
            )
            .await
            .expect(StatusCode::CREATED);
        let order = app
            .post(
                "/api/v1/orders",
                Some(&fan),
                json!({"hold_id": bought["id"], "payment": {"method": "card", "token": "tok_visa"}}),
            )
            .await
            .expect(StatusCode::CREATED);
        let ticket = &order["tickets"][0];
        let hold = app
            .post(
                &format!("/api/v1/events/{event_id}/holds"),
                Some(&fan),
                json!({"seat_ids": &seat_ids[1..2]}),
            )
            .await
            .expect(StatusCode::CREATED);

        let place = app
            .post(
                &format!("/api/v1/events/{room_event_id}/queue"),
                Some(&fan),
                json!({}),
            )
            .await
            .expect(StatusCode::CREATED);

        let webhook = app
            .post(
                "/api/v1/webhooks",
                Some(&owner),
                json!({"url": "http://127.0.0.1:9/authz"}),
            )
            .await
            .expect(StatusCode::CREATED);
        let webhook_id = webhook["id"].as_str().expect("webhook id").to_string();
        app.post(
            &format!("/api/v1/webhooks/{webhook_id}/ping"),
            Some(&owner),
            json!({}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        let deliveries = app
            .get(
                &format!("/api/v1/webhooks/{webhook_id}/deliveries"),
                Some(&owner),
            )
            .await
            .expect(StatusCode::OK);
        let job_id = deliveries["items"][0]["job_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("a delivery: {deliveries}"));

        let draft_event_id = app.create_event(&owner, &venue_id).await["id"]
            .as_str()
            .expect("draft id")
            .to_string();
        let recording_id = recording(&app, &event_id, "rec_authz_published").await;
        let draft_recording_id = recording(&app, &draft_event_id, "rec_authz_draft").await;

        // `similar` answers from the search index, which follows the catalog asynchronously.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while app
            .get(&format!("/api/v1/events/{event_id}/similar"), None)
            .await
            .status
            != StatusCode::OK
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the event never reached the search index"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        Fixture {
            app,
            tokens: [
                None,
                Some(fan),
                Some(other_fan),
                Some(owner),
                Some(other_organizer),
                Some(admin),
            ],
            fan_id,
            fan_email,
            venue_id,
            event_id,
            room_event_id,
            hold_id: hold["id"].as_str().expect("hold id").to_string(),
            order_id: order["id"].as_str().expect("order id").to_string(),
            ticket_id: ticket["id"].as_str().expect("ticket id").to_string(),
            ticket_code: ticket["code"].as_str().expect("ticket code").to_string(),
            webhook_id,
            job_id,
            recording_id,
            queue_token: place["token"].as_str().expect("queue token").to_string(),
            draft_event_id,
            draft_recording_id,
        }
    }

    /// The concrete path of `row`: each `{parameter}` filled from the fixture.
    fn path(&self, row: &Row, draft: bool) -> String {
        let mut path = String::new();
        let mut rest = row.path;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').expect("closing brace") + start;
            path.push_str(&rest[..start]);
            let name = &rest[start + 1..end];
            let value = match (name, row.on) {
                ("id", On::Event) | ("event", On::Event) if draft => self.draft_event_id.clone(),
                ("recording_id", _) if draft => self.draft_recording_id.clone(),
                ("id", On::Event) | ("event", On::Event) => self.event_id.clone(),
                ("id", On::RoomEvent) => self.room_event_id.clone(),
                ("id", On::Venue) => self.venue_id.clone(),
                ("id", On::Hold) => self.hold_id.clone(),
                ("id", On::Order) => self.order_id.clone(),
                ("id", On::Webhook) => self.webhook_id.clone(),
                ("token", On::QueuePlace) => self.queue_token.clone(),
                ("ticket_id", _) => self.ticket_id.clone(),
                ("recording_id", _) => self.recording_id.clone(),
                ("job_id", _) => self.job_id.to_string(),
                // A forged playback token: see the media rows.
                ("token", On::Event) => "forged-playback-token".to_string(),
                ("file", _) => "master.m3u8".to_string(),
                _ => panic!(
                    "{} {}: no fixture object for {{{name}}} on {:?}",
                    row.method, row.path, row.on
                ),
            };
            path.push_str(&value);
            rest = &rest[end + 1..];
        }
        path.push_str(rest);
        path
    }

    /// The query string and body a row's request carries: the minimum to reach the access
    /// check with something that would otherwise be accepted.
    fn query_and_body(&self, row: &Row) -> (String, Option<Value>) {
        let fan_channel = format!("channel=user:{}", self.fan_id);
        match (row.method, row.path) {
            ("POST", "/api/v1/auth/register") => (
                String::new(),
                Some(json!({
                    "email": format!("matrix-{}@example.com", crate::support::ulid_lower()),
                    "password": PASSWORD, "name": "Matrix"
                })),
            ),
            ("POST", "/api/v1/auth/login") => (
                String::new(),
                Some(json!({"email": self.fan_email, "password": PASSWORD})),
            ),
            ("POST", "/api/v1/venues") => (String::new(), Some(venue_body())),
            ("POST", "/api/v1/events") => (String::new(), Some(event_body(&self.venue_id))),
            ("PATCH", "/api/v1/events/{id}") => (
                String::new(),
                Some(json!({"description": "Patched by the authorization matrix."})),
            ),
            ("GET", "/api/v1/search") => ("q=metallica".to_string(), None),
            ("GET", "/api/v1/search/suggest") => ("q=metal".to_string(), None),
            ("POST", "/api/v1/events/{id}/holds") => (String::new(), Some(json!({"quantity": 1}))),
            ("POST", "/api/v1/orders") => (
                String::new(),
                Some(json!({
                    "hold_id": self.hold_id,
                    "payment": {"method": "card", "token": "tok_visa"}
                })),
            ),
            ("POST", "/api/v1/events/{id}/checkin") => {
                (String::new(), Some(json!({"code": self.ticket_code})))
            }
            ("GET", "/api/v1/push/poll") => (format!("{fan_channel}&since=0&timeout_s=1"), None),
            ("GET", "/api/v1/push/sse") => (format!("{fan_channel}&since=0"), None),
            ("POST", "/api/v1/webhooks") => (
                String::new(),
                Some(json!({"url": "http://127.0.0.1:9/authz-matrix"})),
            ),
            (method, _) if method != "GET" && method != "DELETE" => {
                (String::new(), Some(json!({})))
            }
            _ => (String::new(), None),
        }
    }

    async fn send(&self, row: &Row, persona: Persona, draft: bool) -> (StatusCode, String) {
        let token = self.tokens[PERSONAS
            .iter()
            .position(|each| *each == persona)
            .expect("persona")]
        .as_deref();
        let path = self.path(row, draft);
        let (query, body) = self.query_and_body(row);
        let url = if query.is_empty() {
            format!("{}{path}", self.app.url)
        } else {
            format!("{}{path}?{query}", self.app.url)
        };
        if row.path == "/api/v1/push/ws" {
            return websocket(&url, token).await;
        }
        let method = Method::from_bytes(row.method.as_bytes()).expect("method");
        let mut request = self
            .app
            .client
            .request(method, url)
            .header("idempotency-key", crate::support::ulid_lower());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .expect("an answer in time")
            .expect("request sent");
        let status = response.status();
        let streaming = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        // An event stream never ends; its status is all the matrix needs.
        let body = if streaming {
            "<event stream>".to_string()
        } else {
            response.text().await.unwrap_or_default()
        };
        (status, body)
    }
}

/// A recording of `event` as the transcoder leaves one: its object in the local recordings store
/// (the node's data dir when no `recordings_url` is set), its row in the catalog.
async fn recording(app: &TestApp, event: &str, id: &str) -> String {
    let object = app.data_dir().join("recordings").join("authz");
    std::fs::create_dir_all(&object).expect("recordings dir");
    std::fs::write(object.join(format!("{id}.mp4")), b"not really an mp4").expect("recording");
    store(app)
        .add_recording(&Recording {
            id: id.to_string(),
            event_id: marquee_domain::EventId::from_string(event.to_string()),
            object_key: format!("authz/{id}.mp4"),
            bytes: 17,
            duration_ms: 1,
            started_at: chrono::Utc::now(),
            ended_at: chrono::Utc::now(),
        })
        .await
        .expect("recording stored");
    id.to_string()
}

/// The same rows against the owner's *draft* event, for the operations that name an event
/// (`On::Event`): a draft's existence is the owner's secret, so everyone but its owner and
/// admins gets 404 where the published event answered them 403 or let them through; a
/// missing token is still 401. `None`: the row is not run against the draft.
fn draft_outcomes(row: &Row) -> Option<Outcomes> {
    if !matches!(row.on, On::Event) || row.path.starts_with("/live/") {
        return None;
    }
    let mut outcomes = row.expect;
    for (index, outcome) in outcomes.iter_mut().enumerate() {
        if matches!(PERSONAS[index], Persona::Owner | Persona::Admin) {
            continue;
        }
        if !matches!(outcome, Expect::Unauthenticated) {
            *outcome = Expect::NotFound;
        }
    }
    match (row.method, row.path) {
        // Discovery knows only published events: a draft is 404 to everyone, its owner too.
        ("GET", "/api/v1/events/{id}/similar") => Some([GONE; 6]),
        // The fan's ticket is for the published event, so at the draft's door it is an
        // unknown ticket (404) even to the owner; what matters here is that nobody else
        // learns the draft exists.
        ("POST", "/api/v1/events/{id}/checkin") => {
            const OWNER_SIDE: Expect = Expect::Either(&[Expect::Ok, Expect::NotFound]);
            outcomes[3] = OWNER_SIDE;
            outcomes[5] = OWNER_SIDE;
            Some(outcomes)
        }
        _ => Some(outcomes),
    }
}

async fn register(app: &TestApp, role: &str) -> (String, String, String) {
    let email = format!("{role}-{}@example.com", crate::support::ulid_lower());
    let body = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "password": PASSWORD, "name": "Matrix", "role": role}),
        )
        .await
        .expect(StatusCode::CREATED);
    (
        email,
        body["token"].as_str().expect("token").to_string(),
        body["user"]["id"].as_str().expect("id").to_string(),
    )
}

fn store(app: &TestApp) -> std::sync::Arc<dyn CatalogStore> {
    app.server.as_ref().expect("server").state.store.clone()
}

/// An admin as `marquee admin create` makes one (straight into the store; the contract has no
/// HTTP way to make admins), then signed in over HTTP like anyone.
async fn admin(app: &TestApp) -> String {
    let email = format!("admin-{}@example.com", crate::support::ulid_lower());
    let user = User {
        id: UserId::generate(),
        email: Email::parse(&email).expect("email"),
        name: DisplayName::parse("Root").expect("name"),
        role: Role::Admin,
        created_at: marquee_domain::timestamp_now(),
    };
    let hash = marquee_auth::hash_password(Password::parse(PASSWORD.to_string()).expect("pw"))
        .await
        .expect("hash");
    store(app)
        .create_user(&user, &hash)
        .await
        .expect("admin stored");
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(login["user"]["role"], "admin");
    login["token"].as_str().expect("token").to_string()
}

/// A published event of `owner` at `venue_id`, on sale now.
async fn on_sale(app: &TestApp, owner: &str, venue_id: &str, waiting_room: Value) -> String {
    let mut body = event_body(venue_id);
    body.as_object_mut().expect("object").remove("on_sale_at");
    body["waiting_room"] = waiting_room;
    let event = app
        .post("/api/v1/events", Some(owner), body)
        .await
        .expect(StatusCode::CREATED);
    let id = event["id"].as_str().expect("id").to_string();
    app.post(
        &format!("/api/v1/events/{id}/publish"),
        Some(owner),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    id
}

/// A WebSocket handshake: 101 when the socket opens, else the refusal's status.
async fn websocket(url: &str, token: Option<&str>) -> (StatusCode, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url
        .replacen("http", "ws", 1)
        .into_client_request()
        .expect("ws request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            (
                StatusCode::from_u16(response.status().as_u16()).expect("status"),
                String::new(),
            )
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            StatusCode::from_u16(response.status().as_u16()).expect("status"),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(error) => panic!("websocket handshake failed: {error}"),
    }
}

/// Every (method, path) of the served OpenAPI document.
async fn documented_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let document = app
        .get("/api/v1/openapi.json", None)
        .await
        .expect(StatusCode::OK);
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            ) {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn every_operation_answers_every_kind_of_caller_as_the_table_says() {
    let fixture = Fixture::build().await;

    // The table covers exactly the document plus the routes listed outside it.
    let documented = documented_operations(&fixture.app).await;
    let outside: BTreeSet<(String, String)> = OUTSIDE_THE_DOCUMENT
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let listed_and_documented: Vec<_> = outside.intersection(&documented).collect();
    assert!(
        listed_and_documented.is_empty(),
        "now in the OpenAPI document, remove from OUTSIDE_THE_DOCUMENT: {listed_and_documented:?}"
    );
    let mut tabled = BTreeSet::new();
    for row in TABLE {
        assert!(
            tabled.insert((row.method.to_string(), row.path.to_string())),
            "two rows for {} {}",
            row.method,
            row.path
        );
    }
    let served: BTreeSet<_> = documented.union(&outside).cloned().collect();
    let without_row: Vec<_> = served.difference(&tabled).collect();
    let without_route: Vec<_> = tabled.difference(&served).collect();
    assert!(
        without_row.is_empty() && without_route.is_empty(),
        "the authorization table is out of date.\n  operations without a row: {without_row:?}\n  \
         rows the server does not serve: {without_route:?}"
    );
    let draft_rows = TABLE
        .iter()
        .filter(|row| draft_outcomes(row).is_some())
        .count();
    let cells = (TABLE.len() + draft_rows) * PERSONAS.len();
    eprintln!(
        "authorization matrix: {} operations x {} personas = {} cells, and {draft_rows} of them \
         again against a draft event: {cells} cells in all (less the owner's and admin's \
         publishing of the draft)",
        TABLE.len(),
        PERSONAS.len(),
        TABLE.len() * PERSONAS.len(),
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    let published = TABLE.iter().map(|row| (row, row.expect, false));
    let drafts = TABLE
        .iter()
        .filter_map(|row| draft_outcomes(row).map(|outcomes| (row, outcomes, true)));
    for (row, outcomes, draft) in published.chain(drafts) {
        // Refused callers first, then allowed ones (see `Expect::allows`).
        let mut order: Vec<usize> = (0..PERSONAS.len()).collect();
        order.sort_by_key(|&index| outcomes[index].allows());
        for index in order {
            let persona = PERSONAS[index];
            let expect = outcomes[index];
            // Publishing the draft would end it for the rows after; refusals are still checked.
            if draft && row.path == "/api/v1/events/{id}/publish" && expect.allows() {
                continue;
            }
            let (status, body) = fixture.send(row, persona, draft).await;
            checked += 1;
            // `AUTHZ_TRACE=1 … --no-capture` prints every cell's answer.
            if std::env::var_os("AUTHZ_TRACE").is_some() {
                eprintln!(
                    "{} {} {persona:?} draft={draft} {status}",
                    row.method, row.path
                );
            }
            if !expect.admits(status) {
                let mut body = body;
                body.truncate(300);
                let on = if draft { " (draft)" } else { "" };
                failures.push(format!(
                    "{} {}{on} as {persona:?}: expected {expect:?}, got {status}: {body}",
                    row.method, row.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells disagree with the table:\n{}",
        failures.len(),
        failures.join("\n")
    );
    fixture.app.stop().await;
}
