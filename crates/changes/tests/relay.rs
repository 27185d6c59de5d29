//! The change stream against the real PostgreSQL and NATS JetStream: the relay copies the outbox
//! into the stream exactly once and in order, across restarts, two relays at once and a NATS
//! restart; a node's feed serves every change in order whichever source it comes from.
//!
//! Each test has its own PostgreSQL schema and its own stream name; the NATS restart test runs
//! its own `nats-server`.

use async_nats::jetstream;
use futures::StreamExt;
use marquee_changes::{
    connect_nats, ensure_stream, read_tail, relay_batch, spawn_relay, ChangeFeed, JetStreamFeed,
    OutboxFeed, RelaySettings, DUPLICATE_WINDOW,
};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use marquee_lease::{InProcessLeases, LeaseStore};
use marquee_store::{CatalogStore, ChangePosition, SqlCatalogStore, StoreOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn nats_url() -> String {
    std::env::var("MARQUEE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

struct Database {
    store: Arc<dyn CatalogStore>,
    schema: String,
    admin_url: String,
}

impl Database {
    async fn new() -> Database {
        let admin_url = std::env::var("MARQUEE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = unique("changes");
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
        Database {
            store: Arc::new(store),
            schema,
            admin_url,
        }
    }

    /// Makes `count` changes (sign-ups), a few at a time concurrently.
    async fn change(&self, count: usize) {
        let writes = (0..count).map(|_| {
            let store = Arc::clone(&self.store);
            async move {
                let user = User {
                    id: UserId::generate(),
                    email: Email::parse(&format!("{}@example.com", UserId::generate()))
                        .expect("email"),
                    name: DisplayName::parse("Fan").expect("name"),
                    role: Role::Fan,
                    created_at: marquee_domain::timestamp_now(),
                };
                store
                    .create_user(&user, "$argon2id$placeholder")
                    .await
                    .expect("sign-up");
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }

    async fn outbox(&self) -> Vec<ChangePosition> {
        let mut positions = Vec::new();
        loop {
            let after = positions.last().copied().unwrap_or(0);
            let batch = self.store.read_changes(after, 1000).await.expect("outbox");
            if batch.is_empty() {
                return positions;
            }
            positions.extend(batch.iter().map(|record| record.position));
        }
    }

    async fn drop_schema(self) {
        let admin = sqlx::AnyPool::connect(&self.admin_url)
            .await
            .expect("postgres");
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&admin)
            .await
            .expect("drop schema");
    }
}

/// Every message of the stream, in stream order: (position from the message id, position from
/// the payload).
async fn stream_positions(js: &jetstream::Context, name: &str) -> Vec<ChangePosition> {
    let mut stream = ensure_stream(js, name, DUPLICATE_WINDOW)
        .await
        .expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut positions = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let id: ChangePosition = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .expect("message id")
            .as_str()
            .parse()
            .expect("numeric id");
        let record: marquee_store::ChangeRecord =
            serde_json::from_slice(&message.payload).expect("a change record");
        assert_eq!(id, record.position, "the id is the record's position");
        positions.push(id);
    }
    positions
}

/// Waits until the stream's tail carries the outbox's newest position.
async fn relayed(js: &jetstream::Context, name: &str, database: &Database) {
    let latest = database.store.latest_change().await.expect("latest");
    let mut stream = ensure_stream(js, name, DUPLICATE_WINDOW)
        .await
        .expect("stream");
    for _ in 0..300 {
        if read_tail(&mut stream).await.expect("tail").position >= latest {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay did not reach position {latest} within 15 s");
}

fn relay(
    database: &Database,
    leases: Arc<dyn LeaseStore>,
    js: &jetstream::Context,
    stream: &str,
    holder: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    relay_with(database, leases, js, RelaySettings::new(stream, holder))
}

fn relay_with(
    database: &Database,
    leases: Arc<dyn LeaseStore>,
    js: &jetstream::Context,
    settings: RelaySettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let task = spawn_relay(
        Arc::clone(&database.store),
        leases,
        js.clone(),
        settings,
        stopped,
    );
    (stop, task)
}

async fn stop_relay((stop, task): (watch::Sender<bool>, tokio::task::JoinHandle<()>)) {
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the relay stops when told")
        .expect("the relay did not panic");
}

#[tokio::test]
async fn the_relay_copies_the_outbox_once_and_in_order_across_restarts() {
    let database = Database::new().await;
    let client = connect_nats(&nats_url(), "test").await.expect("nats");
    let js = jetstream::new(client);
    let stream = unique("RELAY");
    let leases: Arc<dyn LeaseStore> = Arc::new(InProcessLeases::new());

    database.change(40).await;
    let first = relay(&database, Arc::clone(&leases), &js, &stream, "node-a");
    relayed(&js, &stream, &database).await;
    database.change(40).await;
    relayed(&js, &stream, &database).await;
    stop_relay(first).await;

    // Changes made while no relay runs are relayed by the next one, after the stream's tail.
    database.change(40).await;
    let second = relay(&database, leases, &js, &stream, "node-b");
    relayed(&js, &stream, &database).await;
    stop_relay(second).await;

    let outbox = database.outbox().await;
    assert_eq!(outbox.len(), 120);
    assert_eq!(stream_positions(&js, &stream).await, outbox);
    js.delete_stream(&stream).await.expect("delete stream");
    database.drop_schema().await;
}

#[tokio::test]
async fn two_relays_at_once_still_write_one_chain() {
    // Each relay has its own lease store, so both believe they lead (a lease that lapsed under
    // a paused process looks like this) and race over the same records.
    let database = Database::new().await;
    let client = connect_nats(&nats_url(), "test").await.expect("nats");
    let js = jetstream::new(client);
    let stream = unique("SPLIT");
    let a = relay_with(
        &database,
        Arc::new(InProcessLeases::new()),
        &js,
        RelaySettings::new(&stream, "node-a"),
    );
    let b = relay_with(
        &database,
        Arc::new(InProcessLeases::new()),
        &js,
        RelaySettings::new(&stream, "node-b"),
    );
    for _ in 0..10 {
        database.change(30).await;
    }
    relayed(&js, &stream, &database).await;
    stop_relay(a).await;
    stop_relay(b).await;

    let outbox = database.outbox().await;
    assert_eq!(outbox.len(), 300);
    assert_eq!(stream_positions(&js, &stream).await, outbox);
    js.delete_stream(&stream).await.expect("delete stream");
    database.drop_schema().await;
}

#[tokio::test]
async fn a_stale_relay_cannot_append_behind_the_tail() {
    // A relay that was paused past its lease, and past the de-duplication window, wakes up
    // believing the stream ends where it left it and publishes records another relay already
    // wrote. Message ids no longer catch them; the expected sequence must.
    let database = Database::new().await;
    let client = connect_nats(&nats_url(), "test").await.expect("nats");
    let js = jetstream::new(client);
    let stream = unique("STALE");
    let subject = format!("{stream}.outbox");
    let mut handle = ensure_stream(&js, &stream, Duration::from_millis(100))
        .await
        .expect("stream");
    database.change(20).await;
    let records = database.store.read_changes(0, 100).await.expect("outbox");
    let start = read_tail(&mut handle).await.expect("tail");
    let (paused_at, appended) = relay_batch(&js, &mut handle, &subject, start, &records[..10])
        .await
        .expect("first relay");
    assert_eq!(appended, 10);
    let (tail, appended) = relay_batch(&js, &mut handle, &subject, paused_at, &records[10..])
        .await
        .expect("the relay that took over");
    assert_eq!(appended, 10);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (answer, appended) = relay_batch(&js, &mut handle, &subject, paused_at, &records[10..])
        .await
        .expect("the stale relay is answered, not failed");
    assert_eq!(appended, 0, "nothing appended behind the real tail");
    assert_eq!(answer, tail, "the stale relay learns the real tail");
    assert_eq!(
        stream_positions(&js, &stream).await,
        database.outbox().await
    );
    js.delete_stream(&stream).await.expect("delete stream");
    database.drop_schema().await;
}

/// Reads everything after `after` through `feed` until `count` records arrived.
async fn read_all(
    feed: &dyn ChangeFeed,
    mut after: ChangePosition,
    count: usize,
) -> Vec<ChangePosition> {
    let mut positions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while positions.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} changes arrived: {positions:?}",
            positions.len()
        );
        let batch = feed
            .read(after, 7, Duration::from_millis(200))
            .await
            .expect("read");
        for record in batch {
            assert!(record.position > after, "in order, once");
            after = record.position;
            positions.push(record.position);
        }
    }
    positions
}

#[tokio::test]
async fn both_feeds_serve_every_change_in_order_from_either_source() {
    let database = Database::new().await;
    let client = connect_nats(&nats_url(), "test").await.expect("nats");
    let js = jetstream::new(client.clone());
    let stream = unique("FEED");
    // History from before the node started: only the outbox has it.
    database.change(25).await;
    let relay = relay(
        &database,
        Arc::new(InProcessLeases::new()),
        &js,
        &stream,
        "node-a",
    );
    relayed(&js, &stream, &database).await;
    let jetstream_feed = JetStreamFeed::start(
        Arc::clone(&database.store),
        client,
        &stream,
        16,
        Duration::from_millis(25),
    )
    .await
    .expect("feed");
    let outbox_feed = OutboxFeed::new(Arc::clone(&database.store), Duration::from_millis(25));
    assert_eq!(jetstream_feed.backend(), "jetstream");
    jetstream_feed.check().await.expect("connected");

    // Live changes while readers follow: more than the window holds, so readers cross from
    // the outbox into the window and back.
    let writer = async {
        for _ in 0..5 {
            database.change(10).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let (_, from_stream, from_outbox) = tokio::join!(
        writer,
        read_all(&jetstream_feed, 0, 75),
        read_all(&outbox_feed, 0, 75)
    );
    let outbox = database.outbox().await;
    assert_eq!(from_stream, outbox);
    assert_eq!(from_outbox, outbox);

    // A reader at the end waits for the next change rather than answering at once...
    let latest = *outbox.last().expect("changes");
    let waiting = jetstream_feed.read(latest, 10, Duration::from_secs(5));
    let (batch, ()) = tokio::join!(waiting, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        database.change(1).await;
    });
    assert_eq!(batch.expect("read").len(), 1, "woken by the new change");
    // ...and answers with nothing once its wait is over.
    let latest = database.store.latest_change().await.expect("latest");
    let idle = jetstream_feed
        .read(latest, 10, Duration::from_millis(100))
        .await
        .expect("read");
    assert!(idle.is_empty());

    stop_relay(relay).await;
    js.delete_stream(&stream).await.expect("delete stream");
    database.drop_schema().await;
}

/// A `nats-server` of this test's own, with JetStream on a data dir that outlives restarts.
struct PrivateNats {
    /// On a loopback address of its own (127.0.0.0/8 is all loopback): on 127.0.0.1, while it
    /// is down another test binding port 0 could be handed its port.
    address: std::net::SocketAddr,
    dir: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl PrivateNats {
    fn start() -> PrivateNats {
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        let [a, b, c, ..] = random.to_le_bytes();
        let ip = std::net::Ipv4Addr::new(127, a.clamp(1, 254), b, c.clamp(1, 254));
        let address = std::net::TcpListener::bind((ip, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port on a loopback address");
        let mut nats = PrivateNats {
            address,
            dir: tempfile::tempdir().expect("tempdir"),
            process: None,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    fn restart(&mut self) {
        let process = std::process::Command::new("nats-server")
            .args([
                "-a",
                &self.address.ip().to_string(),
                "-p",
                &self.address.port().to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/test installs it)");
        self.process = Some(process);
        for _ in 0..100 {
            if std::net::TcpStream::connect(self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {}", self.address);
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_nats_restart_loses_and_duplicates_nothing() {
    let database = Database::new().await;
    let mut nats = PrivateNats::start();
    let client = connect_nats(&nats.url(), "test").await.expect("nats");
    let js = jetstream::new(client.clone());
    let stream = "RESTART";
    let relay = relay(
        &database,
        Arc::new(InProcessLeases::new()),
        &js,
        stream,
        "node-a",
    );
    let feed = JetStreamFeed::start(
        Arc::clone(&database.store),
        client.clone(),
        stream,
        1024,
        Duration::from_millis(25),
    )
    .await
    .expect("feed");
    database.change(30).await;
    relayed(&js, stream, &database).await;
    let mut seen = read_all(&feed, 0, 30).await;

    // NATS goes away: the node's followers keep reading, from the outbox.
    nats.kill();
    database.change(30).await;
    let after = *seen.last().expect("seen");
    seen.extend(read_all(&feed, after, 30).await);
    let mut noticed = false;
    for _ in 0..100 {
        if feed.check().await.is_err() {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(noticed, "the feed reports NATS as down");

    // NATS comes back: the relay resumes after the stream's tail, the feed re-subscribes.
    nats.restart();
    database.change(30).await;
    relayed(&js, stream, &database).await;
    let after = *seen.last().expect("seen");
    seen.extend(read_all(&feed, after, 30).await);
    for _ in 0..100 {
        if feed.check().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    feed.check().await.expect("connected again");

    let outbox = database.outbox().await;
    assert_eq!(seen, outbox, "the feed served every change once, in order");
    assert_eq!(
        stream_positions(&js, stream).await,
        outbox,
        "the stream is the outbox: nothing lost or doubled by the restart"
    );
    stop_relay(relay).await;
    database.drop_schema().await;
}
