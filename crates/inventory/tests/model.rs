//! A model-based property test: random interleavings of hold, release, lapse, order and refund
//! by a few fans over a few seats, run against the real inventory (in-process leases) on each
//! store engine — SQLite, whose hot writes go through the group-committing writer thread, and
//! PostgreSQL (a schema per case) — compared after every step with a plain model of who holds
//! and who owns each seat.

use chrono::{Duration as ChronoDuration, Utc};
use marquee_domain::{
    Category, Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus, Hold,
    Order, OrderLimits, PriceTier, Role, SeatId, SeatMap, SectionSpec, StreamingSettings, User,
    UserId, Venue, VenueDetails, VenueId, WaitingRoomSettings,
};
use marquee_inventory::{
    HoldRequest, Inventory, InventoryError, InventorySettings, TestPaymentProvider, TicketSigner,
};
use marquee_lease::{InProcessLeases, LeaseStore};
use marquee_store::{CatalogStore, InventoryStore, SqlCatalogStore, StoreOptions};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

const SEATS: usize = 6;
const FANS: usize = 3;
const TTL: Duration = Duration::from_millis(400);
/// A hold this close to its deadline may lapse during a step; the harness lets it lapse first.
const MARGIN: chrono::Duration = chrono::Duration::milliseconds(150);

#[derive(Debug, Clone)]
enum Step {
    Hold {
        fan: usize,
        seats: BTreeSet<usize>,
    },
    Release {
        fan: usize,
    },
    Order {
        fan: usize,
    },
    Refund {
        fan: usize,
    },
    /// Time passes until every live hold has lapsed.
    Lapse,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..FANS, prop::collection::btree_set(0..SEATS, 1..=3))
            .prop_map(|(fan, seats)| Step::Hold { fan, seats }),
        1 => (0..FANS).prop_map(|fan| Step::Release { fan }),
        3 => (0..FANS).prop_map(|fan| Step::Order { fan }),
        1 => (0..FANS).prop_map(|fan| Step::Refund { fan }),
        1 => Just(Step::Lapse),
    ]
}

/// What the world should look like.
#[derive(Default)]
struct Model {
    /// fan → seats of their live hold.
    holds: HashMap<usize, BTreeSet<usize>>,
    /// seat → owning fan.
    sold: HashMap<usize, usize>,
    /// fan → their confirmed orders' seats.
    orders: HashMap<usize, Vec<BTreeSet<usize>>>,
}

impl Model {
    fn taken(&self, seat: usize) -> bool {
        self.sold.contains_key(&seat) || self.holds.values().any(|held| held.contains(&seat))
    }
}

#[derive(Debug, Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// What a case leaves behind: a temp dir, or a PostgreSQL schema to drop.
enum Scratch {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema { admin_url: String, name: String },
}

impl Scratch {
    async fn new(engine: Engine) -> (Scratch, String) {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
                (Scratch::Dir(dir), url)
            }
            Engine::Postgres => {
                let admin_url = std::env::var("MARQUEE_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
                let name = format!("model_{}", ulid::Ulid::new().to_string().to_lowercase());
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
                sqlx::query(&format!("CREATE SCHEMA {name}"))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                admin.close().await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{name}");
                (Scratch::Schema { admin_url, name }, url)
            }
        }
    }

    async fn finish(self) {
        if let Scratch::Schema { admin_url, name } = self {
            if let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA {name} CASCADE"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
    }
}

struct World {
    scratch: Scratch,
    lapse_follower: tokio::task::JoinHandle<()>,
    store: Arc<SqlCatalogStore>,
    leases: Arc<InProcessLeases>,
    inventory: Arc<Inventory>,
    event: Event,
    venue: Venue,
    fans: Vec<UserId>,
    seats: Vec<SeatId>,
    live: HashMap<usize, Hold>,
    confirmed: HashMap<usize, Vec<Order>>,
}

async fn world(engine: Engine) -> World {
    let (scratch, url) = Scratch::new(engine).await;
    let store = Arc::new(
        SqlCatalogStore::connect(&url, StoreOptions::default())
            .await
            .expect("store"),
    );
    let mut users = Vec::new();
    for index in 0..=FANS {
        let user = User {
            id: UserId::generate(),
            email: Email::parse(&format!("u{index}@model.test")).expect("email"),
            name: DisplayName::parse("U").expect("name"),
            role: if index == 0 {
                Role::Organizer
            } else {
                Role::Fan
            },
            created_at: marquee_domain::timestamp_now(),
        };
        store.create_user(&user, "x").await.expect("user");
        users.push(user.id);
    }
    let venue = Venue {
        id: VenueId::generate(),
        owner_id: users[0].clone(),
        details: VenueDetails {
            name: "Hall".into(),
            address: String::new(),
            city: "X".into(),
            country: "GB".into(),
            location: Coordinates::new(0.0, 0.0).expect("coordinates"),
        },
        seat_map: SeatMap::parse(vec![SectionSpec {
            name: "Stalls".into(),
            rows: Some(vec![("A".into(), SEATS as i64)]),
            capacity: None,
        }])
        .expect("map"),
        created_at: marquee_domain::timestamp_now(),
    };
    store.create_venue(&venue).await.expect("venue");
    let now = marquee_domain::timestamp_now();
    let event = Event {
        id: EventId::generate(),
        owner_id: users[0].clone(),
        venue_id: venue.id.clone(),
        status: EventStatus::Published,
        version: 1,
        details: EventDetails {
            title: "Model".into(),
            description: String::new(),
            category: Category::parse("concert").expect("category"),
            tags: vec![],
            performers: vec![],
            starts_at: now + ChronoDuration::days(30),
            ends_at: now + ChronoDuration::days(31),
            on_sale_at: now - ChronoDuration::hours(1),
            price_tiers: vec![
                PriceTier::parse("All", 1000, "GBP", vec!["Stalls".into()]).expect("tier")
            ],
            limits: OrderLimits::default(),
            waiting_room: WaitingRoomSettings::default(),
            streaming: StreamingSettings::default(),
        },
        created_at: now,
        updated_at: now,
    };
    store.create_event(&event).await.expect("event");
    let leases = Arc::new(InProcessLeases::new());
    let inventory = Inventory::new(
        store.clone(),
        leases.clone(),
        Arc::new(TestPaymentProvider::default()),
        TicketSigner::new(b"model test key"),
        InventorySettings {
            hold_ttl: TTL,
            payment_timeout: Duration::from_secs(5),
            ..InventorySettings::default()
        },
    );
    let lapse_follower = inventory.spawn_lapse_follower();
    let seats = venue
        .seat_map
        .seats(&venue.id)
        .map(|seat| seat.id)
        .collect();
    World {
        scratch,
        lapse_follower,
        store,
        leases,
        inventory,
        event,
        venue,
        fans: users[1..].to_vec(),
        seats,
        live: HashMap::new(),
        confirmed: HashMap::new(),
    }
}

async fn apply(world: &mut World, model: &mut Model, step: &Step) {
    match step {
        Step::Hold { fan, seats } => {
            let ids: Vec<String> = seats.iter().map(|&s| world.seats[s].to_string()).collect();
            let result = world
                .inventory
                .hold(
                    &world.event,
                    &world.venue,
                    &world.fans[*fan],
                    HoldRequest::Seats(ids),
                )
                .await;
            let expected_ok =
                !model.holds.contains_key(fan) && seats.iter().all(|&s| !model.taken(s));
            match result {
                Ok(hold) => {
                    assert!(
                        expected_ok,
                        "hold {seats:?} by fan {fan} should have failed"
                    );
                    model.holds.insert(*fan, seats.clone());
                    world.live.insert(*fan, hold);
                }
                Err(InventoryError::LimitExceeded(_)) => assert!(model.holds.contains_key(fan)),
                Err(InventoryError::SeatsUnavailable { .. }) => {
                    assert!(
                        !expected_ok,
                        "hold {seats:?} by fan {fan} should have succeeded"
                    )
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        Step::Release { fan } => {
            if let Some(hold) = world.live.remove(fan) {
                world
                    .inventory
                    .release(&hold)
                    .await
                    .expect("release a live hold");
                model.holds.remove(fan);
            }
        }
        Step::Order { fan } => {
            if let Some(hold) = world.live.remove(fan) {
                let order = world
                    .inventory
                    .confirm(&hold, &world.event, &world.venue, "tok_visa")
                    .await
                    .expect("a live hold is bought");
                let seats = model.holds.remove(fan).expect("model hold");
                for &seat in &seats {
                    model.sold.insert(seat, *fan);
                }
                model.orders.entry(*fan).or_default().push(seats);
                world.confirmed.entry(*fan).or_default().push(order);
            }
        }
        Step::Refund { fan } => {
            let order = world.confirmed.get_mut(fan).and_then(Vec::pop);
            if let Some(order) = order {
                world
                    .inventory
                    .refund(&order, &world.event, true, "model")
                    .await
                    .expect("refund");
                let seats = model
                    .orders
                    .get_mut(fan)
                    .and_then(Vec::pop)
                    .expect("model order");
                for seat in seats {
                    model.sold.remove(&seat);
                }
            }
        }
        Step::Lapse => {
            let waiting: Vec<Hold> = world.live.drain().map(|(_, hold)| hold).collect();
            await_lapses(world, &waiting).await;
            // A lapsed hold can never be bought.
            if let Some(hold) = waiting.first() {
                let refused = world
                    .inventory
                    .confirm(hold, &world.event, &world.venue, "tok_visa")
                    .await;
                assert!(
                    matches!(refused, Err(InventoryError::HoldExpired)),
                    "{refused:?}"
                );
            }
            model.holds.clear();
        }
    }
}

/// Waits until each hold's lapse has been announced and recorded.
async fn await_lapses(world: &World, holds: &[Hold]) {
    let mut lapses = world.leases.lapses();
    for hold in holds {
        // Await the hold's own lapse (or find it already lapsed), then its recording.
        while world
            .store
            .hold(&hold.id)
            .await
            .expect("read")
            .map(|h| h.status)
            == Some(marquee_domain::HoldStatus::Active)
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), lapses.recv()).await;
        }
    }
}

/// Lets holds near their deadline lapse before a step, so the model never races the clock.
async fn settle(world: &mut World, model: &mut Model) {
    let cutoff = Utc::now() + MARGIN;
    let due: Vec<usize> = world
        .live
        .iter()
        .filter(|(_, hold)| hold.expires_at <= cutoff)
        .map(|(fan, _)| *fan)
        .collect();
    let holds: Vec<Hold> = due
        .iter()
        .filter_map(|fan| world.live.remove(fan))
        .collect();
    await_lapses(world, &holds).await;
    for fan in due {
        model.holds.remove(&fan);
    }
}

async fn check(world: &World, model: &Model) {
    let snapshot = world
        .store
        .seat_snapshot(&world.event.id, Utc::now())
        .await
        .expect("snapshot");
    let index = |id: &SeatId| {
        world
            .seats
            .iter()
            .position(|seat| seat == id)
            .expect("known seat")
    };
    let sold: BTreeSet<usize> = snapshot.sold.iter().map(index).collect();
    assert_eq!(sold.len(), snapshot.sold.len(), "a seat sold twice");
    assert_eq!(sold, model.sold.keys().copied().collect());
    let held: BTreeSet<usize> = snapshot.held.iter().map(index).collect();
    assert_eq!(held.len(), snapshot.held.len(), "a seat held twice");
    let model_held: BTreeSet<usize> = model.holds.values().flatten().copied().collect();
    assert_eq!(held, model_held);
    assert!(held.is_disjoint(&sold), "a seat both held and sold");
}

fn run_case(engine: Engine, steps: &[Step]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut world = world(engine).await;
        let mut model = Model::default();
        for step in steps {
            settle(&mut world, &mut model).await;
            apply(&mut world, &mut model, step).await;
            settle(&mut world, &mut model).await;
            check(&world, &model).await;
        }
        world.lapse_follower.abort();
        world.store.close().await;
        world.scratch.finish().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_inventory_matches_the_model_after_every_step_on_sqlite(steps in prop::collection::vec(step(), 1..30)) {
        run_case(Engine::Sqlite, &steps);
    }

    #[test]
    fn the_inventory_matches_the_model_after_every_step_on_postgres(steps in prop::collection::vec(step(), 1..30)) {
        run_case(Engine::Postgres, &steps);
    }
}

/// A lease store that forgot a hold's lease (a Redis that restarted) never announces its lapse:
/// the lapse follower's periodic sweep must end the hold at its deadline all the same.
#[tokio::test]
async fn a_hold_whose_lease_was_forgotten_still_lapses_at_its_deadline() {
    let world = world(Engine::Sqlite).await;
    let settings = InventorySettings {
        hold_ttl: Duration::from_millis(500),
        payment_timeout: Duration::from_secs(5),
        lapse_sweep: Duration::from_millis(100),
        ..InventorySettings::default()
    };
    // The hold is taken through one lease store...
    let before_restart = Inventory::new(
        world.store.clone(),
        Arc::new(InProcessLeases::new()),
        Arc::new(TestPaymentProvider::default()),
        TicketSigner::new(b"model test key"),
        settings.clone(),
    );
    let hold = before_restart
        .hold(
            &world.event,
            &world.venue,
            &world.fans[0],
            HoldRequest::Seats(vec![world.seats[0].to_string()]),
        )
        .await
        .expect("hold");
    // ...and followed by another that never heard of it.
    let after_restart = Inventory::new(
        world.store.clone(),
        Arc::new(InProcessLeases::new()),
        Arc::new(TestPaymentProvider::default()),
        TicketSigner::new(b"model test key"),
        settings,
    );
    let follower = after_restart.spawn_lapse_follower();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = world
            .store
            .hold(&hold.id)
            .await
            .expect("read")
            .expect("hold");
        if stored.status == marquee_domain::HoldStatus::Lapsed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forgotten hold is still {:?}",
            stored.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    world.lapse_follower.abort();
    world.scratch.finish().await;
}

/// A node that died after taking a hold's leases and before recording the hold left its seats
/// held until the TTL, and the fan's retry under the same idempotency key was told
/// `limit_exceeded`. The retry names the same hold id (the lease's holder), so it is granted
/// the lease again and records the hold; another request of the fan's is still refused.
#[tokio::test]
async fn a_retry_gets_the_hold_whose_first_attempt_died_before_recording_it() {
    let world = world(Engine::Sqlite).await;
    let fan = &world.fans[0];
    let seats = world.seats[..2].to_vec();
    let hold_id = marquee_domain::HoldId::generate();
    let first_attempt = world
        .leases
        .acquire(
            &marquee_inventory::lease_keys(&world.event.id, fan, &seats),
            hold_id.as_str(),
            Duration::from_secs(60),
        )
        .await
        .expect("the first attempt's leases");
    let request = || HoldRequest::Seats(seats.iter().map(ToString::to_string).collect());
    let hold = world
        .inventory
        .hold_as(
            &world.event,
            &world.venue,
            fan,
            request(),
            Some(hold_id.clone()),
        )
        .await
        .expect("the retry gets the hold");
    assert_eq!(hold.id, hold_id);
    assert_eq!(hold.fencing_token, first_attempt.token.0);
    let stored = world.store.hold(&hold_id).await.expect("read");
    assert_eq!(
        stored.map(|hold| hold.status),
        Some(marquee_domain::HoldStatus::Active)
    );
    // The retry again, once the hold is recorded: the same hold, its lease kept.
    let replayed = world
        .inventory
        .hold_as(
            &world.event,
            &world.venue,
            fan,
            request(),
            Some(hold_id.clone()),
        )
        .await
        .expect("replayed");
    assert_eq!(replayed.id, hold_id);
    assert!(world
        .leases
        .is_held(&first_attempt.keys, first_attempt.token)
        .await
        .expect("held"));
    let other = world
        .inventory
        .hold_as(
            &world.event,
            &world.venue,
            fan,
            request(),
            Some(marquee_domain::HoldId::generate()),
        )
        .await;
    assert!(
        matches!(other, Err(InventoryError::LimitExceeded(_))),
        "{other:?}"
    );
    world.lapse_follower.abort();
    world.scratch.finish().await;
}
