//! One conformance suite for the catalog store, run against SQLite and PostgreSQL alike. Each test
//! gets its own SQLite file or its own PostgreSQL schema, so the suite runs in parallel.
//! PostgreSQL comes from `MARQUEE_TEST_DATABASE_URL` (default: the local `test` database).

use chrono::Duration;
use marquee_domain::{
    Category, Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus,
    OrderLimits, PriceTier, Role, SeatMap, SectionSpec, StreamingSettings, User, UserId, Venue,
    VenueDetails, VenueId, WaitingRoomSettings,
};
use marquee_store::{
    CatalogStore, ChangeKind, EventQuery, SqlCatalogStore, StoreError, StoreOptions,
    StoredSigningKey, VenueQuery,
};
use std::collections::BTreeSet;
use std::sync::Arc;

struct Harness {
    store: Arc<SqlCatalogStore>,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("catalog.db").display()
        );
        let store = SqlCatalogStore::connect(&url, StoreOptions::default())
            .await
            .expect("sqlite store");
        Harness {
            store: Arc::new(store),
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    async fn postgres() -> Harness {
        let admin_url = std::env::var("MARQUEE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!(
            "conformance_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
        let store = SqlCatalogStore::connect(&url, StoreOptions::default())
            .await
            .expect("postgres store");
        Harness {
            store: Arc::new(store),
            cleanup: Cleanup::Postgres { admin_url, schema },
        }
    }

    async fn finish(self) {
        if let Cleanup::Postgres { admin_url, schema } = self.cleanup {
            let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .expect("drop schema");
        }
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let harness = super::Harness::sqlite().await;
                super::$test(harness.store.clone()).await;
                harness.finish().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let harness = super::Harness::postgres().await;
                super::$test(harness.store.clone()).await;
                harness.finish().await;
            })*
        }
    };
}

conformance!(
    users_round_trip_and_emails_are_unique,
    a_venue_keeps_its_seat_map,
    venues_list_by_owner_in_pages,
    event_updates_need_the_current_version,
    concurrent_updates_of_one_version_let_exactly_one_win,
    events_list_by_status_and_owner_in_pages,
    every_change_lands_in_the_outbox_in_order,
    a_failed_write_leaves_no_change_behind,
    idempotency_records_are_forgotten_after_their_retention,
    a_follower_reading_during_concurrent_writes_misses_nothing,
    webhook_endpoints_belong_to_their_organizer,
    signing_keys_bootstrap_once_and_retire,
);

fn signing_key(purpose: &str, id: &str, secret: &str, active_from: i64) -> StoredSigningKey {
    StoredSigningKey {
        purpose: purpose.to_string(),
        id: id.to_string(),
        secret: secret.to_string(),
        derivation: "hkdf-sha256".to_string(),
        created_at: 1_000,
        active_from,
        retire_at: None,
    }
}

async fn signing_keys_bootstrap_once_and_retire(store: Arc<SqlCatalogStore>) {
    assert!(store.signing_keys().await.expect("list").is_empty());
    // Nodes starting at once each offer a first key; exactly one insert wins.
    let offers: Vec<_> = (0..4)
        .map(|node| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_signing_key(&signing_key(
                        "access-tokens",
                        "k1",
                        &format!("{node:064x}"),
                        1_000,
                    ))
                    .await
                    .expect("insert")
            })
        })
        .collect();
    let mut won = 0;
    for offer in offers {
        won += usize::from(offer.await.expect("task"));
    }
    assert_eq!(won, 1, "exactly one first key is inserted");
    let ticket = signing_key("ticket-codes", "k1", &"ab".repeat(32), 1_000);
    assert!(store.insert_signing_key(&ticket).await.expect("insert"));
    let rotated = signing_key("access-tokens", "k2", &"cd".repeat(32), 61_000);
    assert!(store.insert_signing_key(&rotated).await.expect("insert"));
    assert!(!store.insert_signing_key(&rotated).await.expect("again"));

    assert!(store
        .retire_signing_key("access-tokens", "k1", 9_000)
        .await
        .expect("retire"));
    // A later retirement never pushes an earlier one back.
    assert!(store
        .retire_signing_key("access-tokens", "k1", 99_000)
        .await
        .expect("retire"));
    assert!(!store
        .retire_signing_key("access-tokens", "k9", 9_000)
        .await
        .expect("retire"));

    let keys = store.signing_keys().await.expect("list");
    assert_eq!(keys.len(), 3);
    let first = keys
        .iter()
        .find(|key| key.purpose == "access-tokens" && key.id == "k1")
        .expect("k1");
    assert_eq!(first.retire_at, Some(9_000));
    assert_eq!(first.secret.len(), 64);
    assert!(keys.contains(&rotated));
    assert!(keys.contains(&ticket), "other purposes are untouched");
    assert!(!format!("{rotated:?}").contains(&rotated.secret));
}

fn user(role: Role, email: &str) -> User {
    User {
        id: UserId::generate(),
        email: Email::parse(email).expect("email"),
        name: DisplayName::parse("Test User").expect("name"),
        role,
        created_at: marquee_domain::timestamp_now(),
    }
}

async fn organizer(store: &impl CatalogStore) -> User {
    let organizer = user(
        Role::Organizer,
        &format!("org-{}@example.com", UserId::generate()),
    );
    store
        .create_user(&organizer, "$argon2id$placeholder")
        .await
        .expect("create organizer");
    organizer
}

fn venue(owner: &UserId) -> Venue {
    let seat_map = SeatMap::parse(vec![
        SectionSpec {
            name: "Stalls".into(),
            rows: Some(vec![("A".into(), 20), ("B".into(), 22)]),
            capacity: None,
        },
        SectionSpec {
            name: "Standing".into(),
            rows: None,
            capacity: Some(500),
        },
    ])
    .expect("seat map");
    Venue {
        id: VenueId::generate(),
        owner_id: owner.clone(),
        details: VenueDetails {
            name: "Roundhouse".into(),
            address: "Chalk Farm Rd".into(),
            city: "London".into(),
            country: "GB".into(),
            location: Coordinates::new(51.5432, -0.1519).expect("coordinates"),
        },
        seat_map,
        created_at: marquee_domain::timestamp_now(),
    }
}

fn event(venue: &Venue) -> Event {
    let now = marquee_domain::timestamp_now();
    let starts_at = now + Duration::days(60);
    let tier = |name: &str, price: i64, section: &str| {
        PriceTier::parse(name, price, "GBP", vec![section.to_string()]).expect("tier")
    };
    Event {
        id: EventId::generate(),
        owner_id: venue.owner_id.clone(),
        venue_id: venue.id.clone(),
        status: EventStatus::Draft,
        version: 1,
        details: EventDetails {
            title: "Metallica — M72 World Tour".into(),
            description: "Two nights, no repeats.".into(),
            category: Category::parse("concert").expect("category"),
            tags: vec!["metal".into()],
            performers: vec!["Metallica".into()],
            starts_at,
            ends_at: starts_at + Duration::hours(4),
            on_sale_at: now,
            price_tiers: vec![
                tier("Stalls", 8900, "Stalls"),
                tier("Standing", 6500, "Standing"),
            ],
            limits: OrderLimits::default(),
            waiting_room: WaitingRoomSettings::default(),
            streaming: StreamingSettings::default(),
        },
        created_at: now,
        updated_at: now,
    }
}

async fn users_round_trip_and_emails_are_unique(store: Arc<SqlCatalogStore>) {
    let ada = user(Role::Fan, "ada@example.com");
    store.create_user(&ada, "hash-1").await.expect("create");
    assert_eq!(store.user(&ada.id).await.expect("read"), Some(ada.clone()));
    let credentials = store
        .credentials_by_email(&ada.email)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(credentials.user, ada);
    assert_eq!(credentials.password_hash, "hash-1");

    let twin = user(Role::Organizer, "ADA@example.com");
    let error = store.create_user(&twin, "hash-2").await.expect_err("taken");
    assert!(matches!(error, StoreError::EmailTaken), "{error:?}");
    assert_eq!(store.user(&twin.id).await.expect("read"), None);
    let unknown = Email::parse("nobody@example.com").expect("email");
    assert!(store
        .credentials_by_email(&unknown)
        .await
        .expect("read")
        .is_none());
}

async fn a_venue_keeps_its_seat_map(store: Arc<SqlCatalogStore>) {
    let owner = organizer(&*store).await;
    let venue = venue(&owner.id);
    store.create_venue(&venue).await.expect("create");
    let read = store
        .venue(&venue.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read, venue);
    assert_eq!(read.seat_map.seats(&read.id).count(), 42);
    assert_eq!(read.seat_map.capacity(), 542);
    assert!(store
        .venue(&VenueId::generate())
        .await
        .expect("read")
        .is_none());
}

async fn venues_list_by_owner_in_pages(store: Arc<SqlCatalogStore>) {
    let first = organizer(&*store).await;
    let second = organizer(&*store).await;
    let mut mine = Vec::new();
    for index in 0..5 {
        let owner = if index % 2 == 0 { &first } else { &second };
        let venue = venue(&owner.id);
        store.create_venue(&venue).await.expect("create");
        if index % 2 == 0 {
            mine.push(venue.id.clone());
        }
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_venues(&VenueQuery {
                owner: Some(first.id.clone()),
                after: after.clone(),
                limit: 2,
            })
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|venue| venue.id.clone());
        seen.extend(page.into_iter().map(|venue| venue.id));
    }
    assert_eq!(seen, mine);
    let all = store
        .list_venues(&VenueQuery {
            limit: 100,
            ..VenueQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 5);
}

async fn event_updates_need_the_current_version(store: Arc<SqlCatalogStore>) {
    let owner = organizer(&*store).await;
    let venue = venue(&owner.id);
    store.create_venue(&venue).await.expect("venue");
    let mut draft = event(&venue);
    store.create_event(&draft).await.expect("create");
    assert_eq!(
        store.event(&draft.id).await.expect("read"),
        Some(draft.clone())
    );

    draft.publish().expect("publish");
    let published = store
        .update_event(&draft, ChangeKind::EventPublished)
        .await
        .expect("update");
    assert_eq!(published.version, 2);
    assert_eq!(
        store.event(&draft.id).await.expect("read"),
        Some(published.clone())
    );

    // `draft` still carries version 1: a write based on it is stale.
    let error = store
        .update_event(&draft, ChangeKind::EventUpdated)
        .await
        .expect_err("stale");
    assert!(
        matches!(error, StoreError::VersionConflict { expected: 1 }),
        "{error:?}"
    );

    let mut ghost = event(&venue);
    ghost.id = EventId::generate();
    let error = store
        .update_event(&ghost, ChangeKind::EventUpdated)
        .await
        .expect_err("missing");
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

async fn concurrent_updates_of_one_version_let_exactly_one_win(store: Arc<SqlCatalogStore>) {
    let owner = organizer(&*store).await;
    let venue = venue(&owner.id);
    store.create_venue(&venue).await.expect("venue");
    let original = event(&venue);
    store.create_event(&original).await.expect("create");

    let writers = (0..16).map(|index| {
        let store = store.clone();
        let mut attempt = original.clone();
        attempt.details.title = format!("Title {index}");
        tokio::spawn(async move { store.update_event(&attempt, ChangeKind::EventUpdated).await })
    });
    let mut winners = Vec::new();
    for writer in writers {
        match writer.await.expect("join") {
            Ok(stored) => winners.push(stored),
            Err(StoreError::VersionConflict { expected: 1 }) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let stored = store
        .event(&original.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored, winners[0]);
    let updates = store
        .read_changes(0, 1000)
        .await
        .expect("changes")
        .into_iter()
        .filter(|change| change.kind == ChangeKind::EventUpdated)
        .count();
    assert_eq!(updates, 1, "only the winning write is in the outbox");
}

async fn events_list_by_status_and_owner_in_pages(store: Arc<SqlCatalogStore>) {
    let owner = organizer(&*store).await;
    let other = organizer(&*store).await;
    let venue_one = venue(&owner.id);
    let venue_two = venue(&other.id);
    store.create_venue(&venue_one).await.expect("venue");
    store.create_venue(&venue_two).await.expect("venue");
    let mut published = Vec::new();
    for index in 0..6 {
        let venue = if index < 4 { &venue_one } else { &venue_two };
        let mut event = event(venue);
        store.create_event(&event).await.expect("create");
        if index % 2 == 0 {
            event.publish().expect("publish");
            store
                .update_event(&event, ChangeKind::EventPublished)
                .await
                .expect("publish");
            published.push(event.id.clone());
        }
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_events(&EventQuery {
                status: Some(EventStatus::Published),
                after: after.clone(),
                limit: 2,
                ..EventQuery::default()
            })
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        assert!(page
            .iter()
            .all(|event| event.status == EventStatus::Published));
        seen.extend(page.into_iter().map(|event| event.id));
    }
    assert_eq!(seen, published);
    let published_count = store
        .count_events(Some(EventStatus::Published))
        .await
        .expect("count");
    assert_eq!(published_count, published.len() as u64);
    let all = store.count_events(None).await.expect("count");
    assert!(all > published_count);
    let owned = store
        .list_events(&EventQuery {
            owner: Some(other.id.clone()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(owned.len(), 2);
    assert!(owned.iter().all(|event| event.owner_id == other.id));
}

async fn every_change_lands_in_the_outbox_in_order(store: Arc<SqlCatalogStore>) {
    assert_eq!(store.latest_change().await.expect("head"), 0);
    let owner = organizer(&*store).await;
    let venue = venue(&owner.id);
    store.create_venue(&venue).await.expect("venue");
    let mut event = event(&venue);
    store.create_event(&event).await.expect("event");
    event.publish().expect("publish");
    let mut event = store
        .update_event(&event, ChangeKind::EventPublished)
        .await
        .expect("publish");
    event.cancel().expect("cancel");
    store
        .update_event(&event, ChangeKind::EventCancelled)
        .await
        .expect("cancel");

    let changes = store.read_changes(0, 100).await.expect("changes");
    let kinds: Vec<ChangeKind> = changes.iter().map(|change| change.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::UserRegistered,
            ChangeKind::VenueCreated,
            ChangeKind::EventCreated,
            ChangeKind::EventPublished,
            ChangeKind::EventCancelled,
        ]
    );
    assert!(changes
        .windows(2)
        .all(|pair| pair[0].position < pair[1].position));
    assert_eq!(changes[0].entity_id, owner.id.as_str());
    assert!(
        changes[0].payload.get("email").is_none(),
        "emails stay off the change stream"
    );
    assert_eq!(changes[4].payload["status"], "cancelled");
    assert_eq!(changes[4].payload["version"], 3);

    let head = store.latest_change().await.expect("head");
    assert_eq!(head, changes[4].position);
    let tail = store
        .read_changes(changes[2].position, 100)
        .await
        .expect("tail");
    assert_eq!(tail, changes[3..].to_vec());
    let limited = store.read_changes(0, 2).await.expect("limited");
    assert_eq!(limited, changes[..2].to_vec());
    assert!(store
        .read_changes(head, 10)
        .await
        .expect("empty")
        .is_empty());
}

async fn a_failed_write_leaves_no_change_behind(store: Arc<SqlCatalogStore>) {
    let ada = user(Role::Fan, "ada@example.com");
    store.create_user(&ada, "hash").await.expect("create");
    let head = store.latest_change().await.expect("head");
    let twin = user(Role::Fan, "ada@example.com");
    assert!(store.create_user(&twin, "hash").await.is_err());
    assert_eq!(store.latest_change().await.expect("head"), head);
}

/// Kept answers expire: the sweep deletes those stored before the cut-off, oldest first and at
/// most `limit` at a time, and leaves the newer ones to replay.
async fn idempotency_records_are_forgotten_after_their_retention(store: Arc<SqlCatalogStore>) {
    use marquee_store::InventoryStore;
    let ada = user(Role::Fan, "keys@example.com");
    store.create_user(&ada, "hash").await.expect("create");
    let response = |body: &str| marquee_store::StoredResponse {
        request_hash: "h".into(),
        status_code: 201,
        body: body.into(),
    };
    for key in ["old-1", "old-2", "old-3"] {
        assert!(store
            .save_idempotent_response(&ada.id, key, &response(key))
            .await
            .expect("save"));
    }
    let cut_off = chrono::Utc::now() + chrono::Duration::milliseconds(5);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(store
        .save_idempotent_response(&ada.id, "new", &response("new"))
        .await
        .expect("save"));
    assert_eq!(
        store
            .forget_idempotent_responses(cut_off, 2)
            .await
            .expect("forget"),
        2
    );
    assert_eq!(
        store
            .forget_idempotent_responses(cut_off, 2)
            .await
            .expect("forget"),
        1
    );
    for key in ["old-1", "old-2", "old-3"] {
        assert!(store
            .idempotent_response(&ada.id, key)
            .await
            .expect("read")
            .is_none());
    }
    assert_eq!(
        store
            .idempotent_response(&ada.id, "new")
            .await
            .expect("read")
            .map(|kept| kept.body),
        Some("new".to_string())
    );
}

/// A follower that reads from its last position while writers commit concurrently must end
/// with every change: positions must never become visible out of order.
async fn a_follower_reading_during_concurrent_writes_misses_nothing(store: Arc<SqlCatalogStore>) {
    const WRITERS: usize = 8;
    const USERS_PER_WRITER: usize = 15;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for index in 0..USERS_PER_WRITER {
                    let user = user(Role::Fan, &format!("w{writer}-{index}@example.com"));
                    store.create_user(&user, "hash").await.expect("create");
                }
            })
        })
        .collect();
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut position = 0;
            while seen.len() < WRITERS * USERS_PER_WRITER {
                let batch = store.read_changes(position, 7).await.expect("read");
                if let Some(last) = batch.last() {
                    position = last.position;
                }
                seen.extend(batch.into_iter().map(|change| change.entity_id));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = follower.await.expect("follower");
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no change delivered twice");
    let all = store.read_changes(0, 1000).await.expect("all");
    let expected: Vec<String> = all.into_iter().map(|change| change.entity_id).collect();
    assert_eq!(
        seen, expected,
        "the follower saw every change in commit order"
    );
}

async fn webhook_endpoints_belong_to_their_organizer(store: Arc<SqlCatalogStore>) {
    let owner = organizer(store.as_ref()).await;
    let endpoint = |id: &str| marquee_store::WebhookEndpoint {
        id: id.to_string(),
        organizer_id: owner.id.clone(),
        url: format!("https://hooks.example.com/{id}"),
        events: vec!["order.confirmed".into(), "order.refunded".into()],
        secret: format!("whsec_{id}"),
        description: "box office".into(),
        created_at: chrono::DateTime::from_timestamp_millis(1_900_000_000_123).expect("time"),
    };
    for id in ["wh_b", "wh_a"] {
        store.create_webhook(&endpoint(id)).await.expect("create");
    }
    assert_eq!(
        store.webhook("wh_a").await.expect("read"),
        Some(endpoint("wh_a"))
    );
    let listed = store.webhooks_of(&owner.id).await.expect("list");
    assert_eq!(listed, [endpoint("wh_a"), endpoint("wh_b")]);
    let stranger = user(Role::Organizer, "stranger@example.com");
    store.create_user(&stranger, "hash").await.expect("user");
    assert!(store
        .webhooks_of(&stranger.id)
        .await
        .expect("list")
        .is_empty());
    assert!(store.delete_webhook("wh_a").await.expect("delete"));
    assert!(!store.delete_webhook("wh_a").await.expect("delete"));
    assert_eq!(store.webhook("wh_a").await.expect("read"), None);
}
