//! Why this exists: every JSON request body the API accepts is attacker-controlled bytes that go
//! through `marquee_api::extract::parse_json` (serde_json + serde_path_to_error + our error
//! classification) and then through the wire-to-domain conversions. A panic there is a 500 for
//! any client that can send a body, so this target feeds arbitrary bytes to the parser for each
//! request wire type and, when a body parses, runs the same conversions and checks the handlers
//! run. Nothing may panic; rejecting the input is always fine.

#![no_main]

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use marquee_api::extract::parse_json;
use marquee_api::wire::accounts::{LoginRequest, RegisterRequest, Registration};
use marquee_api::wire::events::{CreateEventRequest, EventDraft, PatchEventRequest};
use marquee_api::wire::venues::{CreateVenueRequest, VenueDraft};
use marquee_domain::{
    Category, Event, EventDetails, EventId, EventStatus, OrderLimits, PriceTier, SeatMap,
    SectionSpec, StreamingSettings, UserId, VenueId, WaitingRoomSettings,
};
use std::sync::OnceLock;

/// A small venue map for the pricing checks the event handlers run after parsing.
fn seat_map() -> &'static SeatMap {
    static MAP: OnceLock<SeatMap> = OnceLock::new();
    MAP.get_or_init(|| {
        SeatMap::parse(vec![
            SectionSpec {
                name: "Stalls".into(),
                rows: Some(vec![("A".into(), 10), ("B".into(), 12)]),
                capacity: None,
            },
            SectionSpec {
                name: "Floor".into(),
                rows: None,
                capacity: Some(500),
            },
        ])
        .expect("the fixed seat map is valid")
    })
}

/// A draft event on that map, as `PATCH /events/{id}` would load it from the store.
fn draft_event() -> Event {
    let starts_at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2030, 6, 1, 19, 0, 0)
        .single()
        .expect("fixed date");
    Event {
        id: EventId::generate(),
        owner_id: UserId::generate(),
        venue_id: VenueId::generate(),
        status: EventStatus::Draft,
        version: 1,
        details: EventDetails {
            title: "Fuzz Night".into(),
            description: String::new(),
            category: Category::parse("concert").expect("fixed category"),
            tags: vec![],
            performers: vec![],
            starts_at,
            ends_at: starts_at + Duration::hours(3),
            on_sale_at: starts_at - Duration::days(30),
            price_tiers: vec![PriceTier::parse(
                "Standard",
                2500,
                "GBP",
                vec!["Stalls".into(), "Floor".into()],
            )
            .expect("fixed tier")],
            limits: OrderLimits::default(),
            waiting_room: WaitingRoomSettings::default(),
            streaming: StreamingSettings::default(),
        },
        created_at: starts_at - Duration::days(60),
        updated_at: starts_at - Duration::days(60),
    }
}

fuzz_target!(|data: &[u8]| {
    // POST /api/v1/accounts/register
    if let Ok(request) = parse_json::<RegisterRequest>(data) {
        let _ = Registration::try_from(request);
    }

    // POST /api/v1/accounts/login (the handler only parses the email before the store lookup)
    if let Ok(request) = parse_json::<LoginRequest>(data) {
        let _ = marquee_domain::Email::parse(&request.email);
    }

    // POST /api/v1/venues
    if let Ok(request) = parse_json::<CreateVenueRequest>(data) {
        if let Ok(draft) = VenueDraft::try_from(request) {
            let map = &draft.seat_map;
            assert!(map.reserved_seat_count() <= 100_000);
            assert!(map.capacity() >= map.reserved_seat_count());
        }
    }

    // POST /api/v1/events
    if let Ok(request) = parse_json::<CreateEventRequest>(data) {
        if let Ok(draft) = EventDraft::parse(request, Utc::now()) {
            let _ = draft.details.check_pricing(seat_map());
        }
    }

    // PATCH /api/v1/events/{id}
    if let Ok(request) = parse_json::<PatchEventRequest>(data) {
        let event = draft_event();
        if let Ok(patch) = request.parse(&event) {
            if let Ok(details) = event.patched(patch) {
                let _ = details.check_schedule();
                let _ = details.check_pricing(seat_map());
            }
        }
    }
});
