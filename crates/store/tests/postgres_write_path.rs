//! The PostgreSQL write path under concurrent writers on several nodes: outbox positions
//! numbered after commit must still reach every follower exactly once, gap-free and in one
//! order that never changes, however late a transaction commits; a seat snapshot's version must
//! split an event's seat changes exactly into those it includes and those that follow it; and
//! the booking writes a node batches into one transaction must each stand or fall alone.
//!
//! Each test has its own schema and two stores over it (two "nodes", each with its own pool
//! and listener). Late commits are made with transactions of the test's own, opened beside the
//! store and inserting into the outbox as a writer does, then held while the store's writers
//! run. Nothing here asserts time.

use chrono::{Duration, Utc};
use marquee_domain::{
    Category, Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus, Hold,
    HoldId, HoldStatus, Order, OrderId, OrderLimits, OrderStatus, PriceTier, Role, SeatId, SeatMap,
    SectionSpec, StreamingSettings, Ticket, TicketId, User, UserId, Venue, VenueDetails, VenueId,
    WaitingRoomSettings,
};
use marquee_store::{
    CatalogStore, ChangeKind, ChangeRecord, InventoryStore, SeatSnapshot, SqlCatalogStore,
    StoreError, StoreOptions,
};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

struct Cluster {
    nodes: [Arc<SqlCatalogStore>; 2],
    /// A pool of the test's own over the same schema, for transactions held open by hand.
    raw: sqlx::AnyPool,
    admin_url: String,
    schema: String,
}

impl Cluster {
    async fn new(prefix: &str) -> Cluster {
        Cluster::with_options(
            prefix,
            StoreOptions {
                max_connections: 12,
                ..StoreOptions::default()
            },
        )
        .await
    }

    async fn with_options(prefix: &str, options: StoreOptions) -> Cluster {
        let admin_url = std::env::var("MARQUEE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
        let first = SqlCatalogStore::connect(&url, options.clone())
            .await
            .expect("first node");
        let second = SqlCatalogStore::connect(&url, options)
            .await
            .expect("second node");
        let raw = sqlx::any::AnyPoolOptions::new()
            .max_connections(6)
            .connect(&url)
            .await
            .expect("raw pool");
        Cluster {
            nodes: [Arc::new(first), Arc::new(second)],
            raw,
            admin_url,
            schema,
        }
    }

    fn node(&self, index: usize) -> Arc<SqlCatalogStore> {
        Arc::clone(&self.nodes[index % 2])
    }

    async fn finish(self) {
        self.raw.close().await;
        for node in &self.nodes {
            node.close().await;
        }
        let admin = sqlx::AnyPool::connect(&self.admin_url)
            .await
            .expect("postgres");
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&admin)
            .await
            .expect("drop schema");
    }
}

fn user(name: &str) -> User {
    User {
        id: UserId::generate(),
        email: Email::parse(&format!("{name}-{}@example.com", UserId::generate())).expect("email"),
        name: DisplayName::parse("Fan").expect("name"),
        role: Role::Fan,
        created_at: marquee_domain::timestamp_now(),
    }
}

/// Opens a transaction that appends a sign-up to the outbox as a writer does (the user row is
/// not needed: followers only read the outbox), and returns it uncommitted.
async fn open_late_writer(raw: &sqlx::AnyPool, id: &str) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut transaction = raw.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at, txid) \
         VALUES ('user', $1, 'user.registered', $2, 0, pg_current_xact_id())",
    )
    .bind(id)
    .bind(serde_json::json!({"id": id, "name": "Late", "role": "fan"}).to_string())
    .execute(&mut *transaction)
    .await
    .expect("late append");
    transaction
}

/// What a follower has read, checked as it reads: each batch continues the last one with no
/// gap, and nothing comes twice.
#[derive(Default)]
struct Follower {
    seen: Vec<ChangeRecord>,
    ids: HashSet<String>,
}

impl Follower {
    async fn read(&mut self, store: &SqlCatalogStore) -> usize {
        let after = self.seen.last().map_or(0, |change| change.position);
        let batch = store.read_changes(after, 37).await.expect("read");
        let mut expected = after;
        for change in &batch {
            expected += 1;
            assert_eq!(change.position, expected, "positions are gap-free");
            assert!(
                self.ids.insert(change.entity_id.clone()),
                "{} delivered twice",
                change.entity_id
            );
        }
        let count = batch.len();
        self.seen.extend(batch);
        count
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_see_every_change_once_in_one_order_despite_late_commits() {
    const WRITERS: usize = 16;
    const WRITES: usize = 50;
    let cluster = Cluster::new("outbox_order").await;

    // One transaction held open across everything the writers do, committed last: its
    // change must come after everything numbered before it, not be skipped.
    let longest = open_late_writer(&cluster.raw, "late-longest").await;
    let mut expected: BTreeSet<String> = BTreeSet::from(["late-longest".to_string()]);

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = cluster.node(writer);
            let raw = cluster.raw.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for index in 0..WRITES {
                    if index % 10 == writer % 10 && writer % 4 == 0 {
                        // Held while a few of this writer's own writes commit, then committed
                        // (or, one in two, rolled back: it must leave no trace and no gap).
                        let id = format!("late-{writer}-{index}");
                        let held = open_late_writer(&raw, &id).await;
                        for _ in 0..3 {
                            let user = user(&format!("w{writer}"));
                            store.create_user(&user, "hash").await.expect("create");
                            ids.push(user.id.as_str().to_string());
                        }
                        if index % 20 == writer % 20 {
                            held.commit().await.expect("late commit");
                            ids.push(id);
                        } else {
                            held.rollback().await.expect("rollback");
                        }
                    } else {
                        let user = user(&format!("w{writer}"));
                        store.create_user(&user, "hash").await.expect("create");
                        ids.push(user.id.as_str().to_string());
                    }
                }
                ids
            })
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = (0..2)
        .map(|node| {
            let store = cluster.node(node);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut follower = Follower::default();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let read = follower.read(&store).await;
                    if finished && read == 0 {
                        return follower;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    for writer in writers {
        expected.extend(writer.await.expect("writer"));
    }
    // Everything committed so far is numbered by now (reads number first)…
    let numbered_before = cluster.node(1).latest_change().await.expect("latest");
    longest.commit().await.expect("late commit");
    done.store(true, Ordering::Release);

    let everything = cluster
        .node(0)
        .read_changes(0, 100_000)
        .await
        .expect("read all");
    let positions: Vec<i64> = everything.iter().map(|change| change.position).collect();
    assert_eq!(
        positions,
        (1..=everything.len() as i64).collect::<Vec<_>>(),
        "positions are 1, 2, 3… with no gap"
    );
    let ids: BTreeSet<String> = everything
        .iter()
        .map(|change| change.entity_id.clone())
        .collect();
    assert_eq!(ids.len(), everything.len(), "no change twice");
    assert_eq!(
        ids, expected,
        "every committed change, and nothing rolled back"
    );
    // …and the transaction that began first but committed last comes after all of it.
    let longest = everything
        .iter()
        .find(|change| change.entity_id == "late-longest")
        .expect("the longest transaction's change");
    assert!(
        longest.position > numbered_before,
        "a change that commits late is numbered after everything numbered before it committed"
    );
    for follower in followers {
        let follower = follower.await.expect("follower");
        assert_eq!(
            follower.seen, everything,
            "a follower read the one order, and nothing was renumbered after it read it"
        );
    }
    assert_eq!(
        cluster.node(1).latest_change().await.expect("latest"),
        everything.len() as i64
    );
    cluster.finish().await;
}

fn venue(owner: &UserId) -> Venue {
    let seat_map = SeatMap::parse(vec![SectionSpec {
        name: "Stalls".into(),
        rows: Some(vec![("A".into(), 20)]),
        capacity: None,
    }])
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
    Event {
        id: EventId::generate(),
        owner_id: venue.owner_id.clone(),
        venue_id: venue.id.clone(),
        status: EventStatus::Draft,
        version: 1,
        details: EventDetails {
            title: "Snapshot under load".into(),
            description: "Holds everywhere.".into(),
            category: Category::parse("concert").expect("category"),
            tags: vec![],
            performers: vec![],
            starts_at,
            ends_at: starts_at + Duration::hours(4),
            on_sale_at: now,
            price_tiers: vec![
                PriceTier::parse("Stalls", 8900, "GBP", vec!["Stalls".into()]).expect("tier"),
            ],
            limits: OrderLimits::default(),
            waiting_room: WaitingRoomSettings::default(),
            streaming: StreamingSettings::default(),
        },
        created_at: now,
        updated_at: now,
    }
}

/// Held seats after applying an event's seat changes, in seat-version order, to `held`.
fn apply(mut held: BTreeSet<String>, changes: &[&ChangeRecord]) -> BTreeSet<String> {
    for change in changes {
        let seats = change.payload["seat_ids"]
            .as_array()
            .expect("seat ids")
            .iter()
            .map(|seat| seat.as_str().expect("seat id").to_string());
        match change.kind {
            ChangeKind::SeatsHeld => {
                for seat in seats {
                    assert!(held.insert(seat), "a seat held twice over");
                }
            }
            ChangeKind::SeatsAvailable => {
                for seat in seats {
                    assert!(held.remove(&seat), "a seat released that was not held");
                }
            }
            other => panic!("unexpected change {other:?}"),
        }
    }
    held
}

fn held_of(snapshot: &SeatSnapshot) -> BTreeSet<String> {
    snapshot.held.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_snapshot_and_the_changes_after_its_version_make_the_final_state() {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 12;
    let cluster = Cluster::new("seat_snapshot").await;
    let owner = user("owner");
    cluster
        .node(0)
        .create_user(&owner, "hash")
        .await
        .expect("owner");
    let venue = venue(&owner.id);
    cluster.node(0).create_venue(&venue).await.expect("venue");
    let event = event(&venue);
    cluster.node(0).create_event(&event).await.expect("event");
    // Other events' seat changes share the outbox but not the seat versions.
    let other = self::event(&venue);
    cluster.node(1).create_event(&other).await.expect("event");

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = cluster.node(writer);
            let event = event.id.clone();
            let other = other.id.clone();
            let fan = user(&format!("fan{writer}"));
            tokio::spawn(async move {
                store.create_user(&fan, "hash").await.expect("fan");
                for round in 0..ROUNDS {
                    for event in [&event, &other] {
                        let hold = Hold {
                            id: HoldId::generate(),
                            event_id: event.clone(),
                            user_id: fan.id.clone(),
                            seat_ids: vec![SeatId::from_string(format!("s{writer}-{round}"))],
                            general_admission: None,
                            fencing_token: 1,
                            status: HoldStatus::Active,
                            extended: false,
                            expires_at: Utc::now() + Duration::hours(1),
                            created_at: Utc::now(),
                        };
                        store.create_hold(&hold, None).await.expect("hold");
                        // Every other hold is released again, so seats come and go.
                        if round % 2 == 1 {
                            assert!(store
                                .end_hold(&hold.id, HoldStatus::Released)
                                .await
                                .expect("release"));
                        }
                    }
                }
            })
        })
        .collect();

    // Snapshots taken on both nodes while the writers run.
    let snapshots = {
        let nodes = [cluster.node(0), cluster.node(1)];
        let event = event.id.clone();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            for turn in 0..60 {
                let snapshot = nodes[turn % 2]
                    .seat_snapshot(&event, Utc::now())
                    .await
                    .expect("snapshot");
                taken.push(snapshot);
                tokio::task::yield_now().await;
            }
            taken
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut snapshots = snapshots.await.expect("snapshots");
    snapshots.push(
        cluster
            .node(1)
            .seat_snapshot(&event.id, Utc::now())
            .await
            .expect("final snapshot"),
    );

    let everything = cluster
        .node(0)
        .read_changes(0, 100_000)
        .await
        .expect("read all");
    let seat_changes: Vec<&ChangeRecord> = everything
        .iter()
        .filter(|change| {
            change.kind.entity() == marquee_store::EntityKind::Seats
                && change.entity_id == event.id.as_str()
        })
        .collect();
    let versions: Vec<i64> = seat_changes
        .iter()
        .map(|change| change.payload["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(
        versions,
        (1..=seat_changes.len() as i64).collect::<Vec<_>>(),
        "seat versions are 1, 2, 3… per event, in position order"
    );
    let final_held = apply(BTreeSet::new(), &seat_changes);
    let last = snapshots.last().expect("final snapshot");
    assert_eq!(last.version, seat_changes.len() as i64);
    assert_eq!(held_of(last), final_held);
    assert_eq!(
        cluster
            .node(0)
            .seat_version(&event.id)
            .await
            .expect("version"),
        last.version
    );

    for snapshot in &snapshots {
        let version = usize::try_from(snapshot.version).expect("version");
        // Everything at or below the version is in the snapshot, nothing above it is…
        assert_eq!(
            held_of(snapshot),
            apply(BTreeSet::new(), &seat_changes[..version]),
            "the snapshot at version {version} is exactly the changes up to it"
        );
        // …so loading it and following the stream from its version ends at the final state,
        // with no change applied twice (`apply` refuses a seat held twice over).
        assert_eq!(
            apply(held_of(snapshot), &seat_changes[version..]),
            final_held
        );
    }
    cluster.finish().await;
}

fn hold_of(event: &EventId, fan: &UserId, seats: &[&str], token: u64) -> Hold {
    Hold {
        id: HoldId::generate(),
        event_id: event.clone(),
        user_id: fan.clone(),
        seat_ids: seats
            .iter()
            .map(|seat| SeatId::from_string(*seat))
            .collect(),
        general_admission: None,
        fencing_token: token,
        status: HoldStatus::Active,
        extended: false,
        expires_at: Utc::now() + Duration::hours(1),
        created_at: Utc::now(),
    }
}

fn order_of(hold: &Hold) -> Order {
    Order {
        id: OrderId::generate(),
        event_id: hold.event_id.clone(),
        user_id: hold.user_id.clone(),
        hold_id: hold.id.clone(),
        status: OrderStatus::Confirmed,
        total_cents: 8900 * hold.seat_ids.len() as i64,
        currency: "GBP".into(),
        payment_reference: format!("test-{}", hold.id),
        tickets: hold
            .seat_ids
            .iter()
            .map(|seat| Ticket {
                id: TicketId::generate(),
                seat_id: Some(seat.clone()),
                section: "Stalls".into(),
                row: Some("A".into()),
                number: Some(1),
                price_cents: 8900,
                code: format!("code-{}", TicketId::generate()),
                checked_in_at: None,
            })
            .collect(),
        created_at: Utc::now(),
    }
}

async fn count(raw: &sqlx::AnyPool, sql: &str, event: &EventId) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .bind(event.as_str())
        .fetch_one(raw)
        .await
        .expect("count")
        .try_get(0)
        .expect("a count")
}

/// Holds and orders sent at once share batches (one transaction each); a hold refused inside a
/// batch (one of its seats is sold), an order whose fence was raised under it, and one whose
/// seat another order sold, each undo their own writes and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_writes_in_a_shared_batch_undo_only_themselves() {
    const FANS: usize = 48;
    // One batch in flight: everything sent meanwhile must wait and share the next.
    let cluster = Cluster::with_options(
        "write_batches",
        StoreOptions {
            max_connections: 12,
            write_batches: 1,
            ..StoreOptions::default()
        },
    )
    .await;
    let store = cluster.node(0);
    let owner = user("owner");
    store.create_user(&owner, "hash").await.expect("owner");
    let venue = venue(&owner.id);
    store.create_venue(&venue).await.expect("venue");
    let event = Event {
        status: EventStatus::Published,
        ..self::event(&venue)
    };
    store.create_event(&event).await.expect("event");
    let fan = user("fan");
    store.create_user(&fan, "hash").await.expect("fan");

    // Sold before the rush: seat "sold".
    let first = hold_of(&event.id, &fan.id, &["sold"], 1);
    store.create_hold(&first, None).await.expect("first hold");
    store
        .confirm_order(&order_of(&first), &first)
        .await
        .expect("first order");
    // A hold whose seat a newer lease fenced (token 3 over its 2) before it orders.
    let fenced = hold_of(&event.id, &fan.id, &["fenced"], 2);
    store.create_hold(&fenced, None).await.expect("fenced hold");
    store
        .create_hold(&hold_of(&event.id, &fan.id, &["fenced"], 3), None)
        .await
        .expect("newer hold");
    let before = store.write_batch_stats().expect("postgres batches");

    let rush: Vec<_> = (0..FANS)
        .map(|fan_index| {
            let store = cluster.node(0);
            let event = event.id.clone();
            let fan = fan.id.clone();
            tokio::spawn(async move {
                let free = format!("free-{fan_index}");
                // Every other fan also asks for the sold seat.
                let seats: Vec<&str> = if fan_index % 2 == 0 {
                    vec![free.as_str()]
                } else {
                    vec![free.as_str(), "sold"]
                };
                let hold = hold_of(&event, &fan, &seats, 10 + fan_index as u64);
                (fan_index, store.create_hold(&hold, None).await)
            })
        })
        .collect();
    let late_order = {
        let store = cluster.node(0);
        let fenced = fenced.clone();
        tokio::spawn(async move { store.confirm_order(&order_of(&fenced), &fenced).await })
    };
    for fan in rush {
        let (index, outcome) = fan.await.expect("fan");
        if index % 2 == 0 {
            outcome.expect("a hold on a free seat is made");
        } else {
            match outcome {
                Err(StoreError::SeatsSold { seat_ids }) => assert_eq!(seat_ids, ["sold"]),
                other => panic!("a hold on a sold seat answered {other:?}"),
            }
        }
    }
    assert!(matches!(
        late_order.await.expect("order"),
        Err(StoreError::Fenced)
    ));
    let after = store.write_batch_stats().expect("postgres batches");
    let operations = after.operations - before.operations;
    let batches = after.batches - before.batches;
    assert_eq!(operations, FANS as u64 + 1, "every operation was sent once");
    assert!(
        batches < operations,
        "{operations} operations sent at once went in {batches} batches"
    );

    // Exactly the accepted holds left rows, fences and changes; the refused left none.
    let raw = &cluster.raw;
    let holds = "SELECT COUNT(*) FROM holds WHERE event_id = $1";
    assert_eq!(count(raw, holds, &event.id).await, 3 + FANS as i64 / 2);
    let fences = "SELECT COUNT(*) FROM seat_fences WHERE event_id = $1 AND seat_id LIKE 'free-%'";
    assert_eq!(count(raw, fences, &event.id).await, FANS as i64 / 2);
    let changes = "SELECT COUNT(*) FROM outbox WHERE entity = 'seats' AND entity_id = $1";
    // first hold, its sale, the fenced hold, the newer hold, then the rush's accepted holds
    assert_eq!(count(raw, changes, &event.id).await, 4 + FANS as i64 / 2);
    let orders = "SELECT COUNT(*) FROM orders WHERE event_id = $1";
    assert_eq!(count(raw, orders, &event.id).await, 1);

    // Two orders for one seat in one batch (two holds whose fences both still match cannot
    // happen with leases; here the store alone is asked): the unique index sells it once.
    let twice_a = hold_of(&event.id, &fan.id, &["twice"], 100);
    store.create_hold(&twice_a, None).await.expect("hold a");
    let twice_b = Hold {
        id: HoldId::generate(),
        ..twice_a.clone()
    };
    store.create_hold(&twice_b, None).await.expect("hold b");
    let (order_a, order_b) = (order_of(&twice_a), order_of(&twice_b));
    let (a, b) = tokio::join!(
        store.confirm_order(&order_a, &twice_a),
        store.confirm_order(&order_b, &twice_b)
    );
    match (a, b) {
        (Ok(()), Err(StoreError::SeatsSold { seat_ids }))
        | (Err(StoreError::SeatsSold { seat_ids }), Ok(())) => assert_eq!(seat_ids, ["twice"]),
        other => panic!("one seat, one sale; got {other:?}"),
    }
    let tickets = "SELECT COUNT(*) FROM tickets WHERE event_id = $1 AND seat_id = 'twice'";
    assert_eq!(count(raw, tickets, &event.id).await, 1);
    cluster.finish().await;
}
