//! Many `marquee serve` processes on the real PostgreSQL, Redis and NATS JetStream, proven
//! under failure: fans racing across three nodes, a change crossing nodes, a node SIGKILLed in
//! the middle of a sale, Redis and NATS restarted in the middle of one.
//!
//! Each test has its own PostgreSQL schema, Redis key prefix and JetStream stream; the tests that
//! restart Redis or NATS run a server of their own, so the machine's shared ones stay up.

use crate::gateway::gateway_config;
use crate::gateway_processes::marquee_via;
use crate::push::SseStream;
use crate::support::{
    event_body, own_address, postgres_url, sqlx_admin, ulid_lower, TestApp, JWT_SECRET,
};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use marquee_gateway::{Gateway, Policy};
use marquee_store::{CatalogStore, SqlCatalogStore, StoreOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::watch;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("MARQUEE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn nats_url() -> String {
    std::env::var("MARQUEE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A Redis or NATS server this test owns, so it can be killed and started again on the same
/// port (NATS keeps its JetStream data dir across restarts; Redis, like the machine's, keeps
/// nothing).
pub(crate) struct OwnServer {
    program: &'static str,
    /// Its own loopback address: restarted on it, it is never anyone else's while down.
    address: std::net::SocketAddr,
    dir: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl OwnServer {
    pub(crate) fn redis() -> OwnServer {
        Self::start("redis-server")
    }

    pub(crate) fn nats() -> OwnServer {
        Self::start("nats-server")
    }

    fn start(program: &'static str) -> OwnServer {
        let mut server = OwnServer {
            program,
            address: own_address(),
            dir: tempfile::tempdir().expect("tempdir"),
            process: None,
        };
        server.restart();
        server
    }

    pub(crate) fn url(&self) -> String {
        match self.program {
            "redis-server" => format!("redis://{}", self.address),
            _ => format!("nats://{}", self.address),
        }
    }

    pub(crate) fn restart(&mut self) {
        let (ip, port) = (
            self.address.ip().to_string(),
            self.address.port().to_string(),
        );
        let mut command = std::process::Command::new(self.program);
        match self.program {
            "redis-server" => command.args([
                "--port",
                &port,
                "--bind",
                &ip,
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
            _ => command
                .args(["-a", &ip, "-p", &port, "-js", "-sd"])
                .arg(self.dir.path()),
        };
        let process = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "{} starts (scripts/test installs it): {error}",
                    self.program
                )
            });
        self.process = Some(process);
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{} did not listen on {}", self.program, self.address);
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Node {
    id: String,
    /// Where it listens, kept across restarts: its own loopback address unless placed.
    address: std::net::SocketAddr,
    /// The command line before `marquee` (e.g. `ip netns exec …`), and its environment.
    wrapper: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// Nodes over one schema, one Redis prefix and one stream.
pub(crate) struct Cluster {
    _dir: tempfile::TempDir,
    schema: String,
    pub(crate) database_url: String,
    pub(crate) redis_url: String,
    redis_prefix: String,
    pub(crate) nats_url: String,
    pub(crate) stream: String,
    nodes: Vec<Node>,
    node_args: Vec<String>,
    pub(crate) own_redis: Option<OwnServer>,
    pub(crate) own_nats: Option<OwnServer>,
}

#[derive(Default)]
pub(crate) struct ClusterOptions {
    pub(crate) own_redis: bool,
    pub(crate) own_nats: bool,
    /// More `marquee serve` flags for every node.
    pub(crate) node_args: Vec<String>,
    /// Where each node runs, by index; a node without one runs here on a loopback address of
    /// its own.
    pub(crate) placements: Vec<Placement>,
    /// The services as the nodes reach them, when not at the machine's addresses (the test
    /// process reaches them there too): PostgreSQL's URL without the schema, Redis, NATS.
    pub(crate) postgres_url: Option<String>,
    pub(crate) redis_url: Option<String>,
    pub(crate) nats_url: Option<String>,
    /// PostgreSQL settings for the nodes' sessions (`name=value`), as an operator sets them on
    /// the nodes' role.
    pub(crate) postgres_settings: Vec<String>,
}

/// Where one node runs and how it is started.
#[derive(Clone)]
pub(crate) struct Placement {
    pub(crate) address: std::net::SocketAddr,
    /// Put before the `marquee` command line: `["ip", "netns", "exec", "ns"]`.
    pub(crate) wrapper: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

impl Cluster {
    pub(crate) async fn start(nodes: usize, options: ClusterOptions) -> Cluster {
        let schema = format!("cluster_{}", ulid_lower());
        sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
        let own_redis = options.own_redis.then(OwnServer::redis);
        let own_nats = options.own_nats.then(OwnServer::nats);
        let dir = tempfile::tempdir().expect("tempdir");
        let postgres = options.postgres_url.unwrap_or_else(postgres_url);
        let settings: String = options
            .postgres_settings
            .iter()
            .map(|setting| format!("%20-c%20{}", setting.replace('=', "%3D")))
            .collect();
        let mut cluster = Cluster {
            database_url: format!("{postgres}?options=-c%20search_path%3D{schema}{settings}"),
            schema,
            redis_url: options
                .redis_url
                .unwrap_or_else(|| own_redis.as_ref().map_or_else(redis_url, OwnServer::url)),
            redis_prefix: format!("cluster:{}:", ulid_lower()),
            nats_url: options
                .nats_url
                .unwrap_or_else(|| own_nats.as_ref().map_or_else(nats_url, OwnServer::url)),
            stream: format!("CLUSTER_{}", ulid_lower().to_uppercase()),
            nodes: (1..=nodes)
                .map(|n| {
                    let placement = options.placements.get(n - 1).cloned();
                    Node {
                        id: format!("node-{n}"),
                        address: placement
                            .as_ref()
                            .map_or_else(own_address, |placement| placement.address),
                        wrapper: placement
                            .as_ref()
                            .map(|placement| placement.wrapper.clone())
                            .unwrap_or_default(),
                        env: placement.map(|placement| placement.env).unwrap_or_default(),
                        data_dir: dir.path().join(format!("node-{n}")),
                        process: None,
                    }
                })
                .collect(),
            _dir: dir,
            node_args: options.node_args,
            own_redis,
            own_nats,
        };
        // The first node migrates the schema; the others start once it has.
        cluster.start_node(0).await;
        let rest: Vec<usize> = (1..nodes).collect();
        for index in rest {
            cluster.start_node(index).await;
        }
        cluster
    }

    pub(crate) fn url(&self, index: usize) -> String {
        format!("http://{}", self.nodes[index].address)
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|index| self.url(index)).collect()
    }

    pub(crate) fn client(&self, index: usize) -> TestApp {
        TestApp::client_of(self.url(index))
    }

    pub(crate) async fn start_node(&mut self, index: usize) {
        let node = &self.nodes[index];
        let process = marquee_via(&node.wrapper)
            .envs(node.env.iter().map(|(name, value)| (name, value)))
            .env("MARQUEE_RTMP_LISTEN", "off")
            .env("MARQUEE_SRT_LISTEN", "off")
            .args(["serve", "--listen", &node.address.to_string()])
            .args(["--node-id", &node.id])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--database-url", &self.database_url])
            .args(["--redis-url", &self.redis_url])
            .args(["--redis-prefix", &self.redis_prefix])
            .args(["--nats-url", &self.nats_url])
            .args(["--nats-stream", &self.stream])
            .args(&self.node_args)
            .spawn()
            .expect("marquee serve starts");
        self.nodes[index].process = Some(process);
        ready(&self.url(index)).await;
    }

    /// SIGKILL: no shutdown, no goodbye.
    pub(crate) async fn kill_node(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            process.start_kill().expect("kill");
            process.wait().await.expect("reaped");
        }
    }

    /// The cluster's database, as the nodes see it.
    pub(crate) async fn store(&self) -> Arc<dyn CatalogStore> {
        Arc::new(
            SqlCatalogStore::connect(
                &self.database_url,
                StoreOptions {
                    max_connections: 4,
                    ..StoreOptions::default()
                },
            )
            .await
            .expect("the cluster's database"),
        )
    }

    pub(crate) async fn stop(mut self) {
        for index in 0..self.nodes.len() {
            self.kill_node(index).await;
        }
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&self.stream)
                .await;
        }
        sqlx_admin(&format!("DROP SCHEMA {} CASCADE", self.schema)).await;
    }
}

/// Waits for `/readyz` to answer 200 (the store, Redis and NATS all answering).
pub(crate) async fn ready(url: &str) {
    let client = reqwest::Client::new();
    let ready = async {
        loop {
            if let Ok(response) = client.get(format!("{url}/readyz")).send().await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, ready)
        .await
        .unwrap_or_else(|_| panic!("{url} never became ready"));
}

/// An on-sale: 500 reserved seats in ten rows and a standing area of 200, published, no
/// waiting room.
pub(crate) struct Sale {
    pub(crate) event_id: String,
    pub(crate) seat_ids: Vec<String>,
}

pub(crate) const STANDING_CAPACITY: u64 = 200;

pub(crate) async fn on_sale(app: &TestApp) -> Sale {
    on_sale_with(app, None).await
}

/// [`on_sale`], with the waiting room described by `waiting_room` (open at once: the event is
/// on sale from its creation).
pub(crate) async fn on_sale_with(app: &TestApp, waiting_room: Option<Value>) -> Sale {
    let (organizer, _) = app.register("organizer").await;
    let rows: Vec<Value> = (0..10)
        .map(|row| json!({"label": format!("R{row}"), "seats": 50}))
        .collect();
    let venue = app
        .post(
            "/api/v1/venues",
            Some(&organizer),
            json!({"name": "Arena", "city": "Leeds", "country": "GB", "lat": 53.8, "lon": -1.55,
                   "sections": [{"name": "Bowl", "rows": rows},
                                {"name": "Floor", "capacity": STANDING_CAPACITY}]}),
        )
        .await
        .expect(StatusCode::CREATED);
    let seat_ids: Vec<String> = venue["sections"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    let mut body = json!({"title": "Cluster Night", "venue_id": venue["id"], "category": "concert",
           "starts_at": "2031-01-01T20:00:00Z",
           "limits": {"max_seats_per_order": 4},
           "price_tiers": [
               {"name": "Bowl", "price_cents": 5000, "currency": "GBP", "sections": ["Bowl"]},
               {"name": "Floor", "price_cents": 3000, "currency": "GBP", "sections": ["Floor"]}]});
    if let Some(waiting_room) = waiting_room {
        body["waiting_room"] = waiting_room;
    }
    let event = app
        .post("/api/v1/events", Some(&organizer), body)
        .await
        .expect(StatusCode::CREATED);
    let event_id = event["id"].as_str().expect("id").to_string();
    app.post(
        &format!("/api/v1/events/{event_id}/publish"),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    Sale { event_id, seat_ids }
}

/// Fans made in the store directly (a thousand argon2 hashes would only test argon2), with
/// tokens every node accepts.
pub(crate) async fn fans(store: &dyn CatalogStore, count: usize) -> Vec<String> {
    let issuer = TokenIssuer::new(
        &SigningSecret::new(JWT_SECRET.as_bytes().to_vec()).expect("secret"),
        Duration::from_secs(3600),
    );
    let mut tokens = Vec::with_capacity(count);
    for index in 0..count {
        let user = User {
            id: UserId::generate(),
            email: Email::parse(&format!("fan{index}-{}@cluster.test", ulid_lower()))
                .expect("email"),
            name: DisplayName::parse("Fan").expect("name"),
            role: Role::Fan,
            created_at: marquee_domain::timestamp_now(),
        };
        store.create_user(&user, "unused").await.expect("fan");
        tokens.push(issuer.issue(&user.id, Role::Fan).expect("token"));
    }
    tokens
}

/// What one fan got.
#[derive(Debug)]
pub(crate) struct FanOutcome {
    pub(crate) hold: u16,
    /// The error code when the hold was refused.
    pub(crate) hold_code: String,
    /// A retry told "you already hold seats": its first attempt died with the killed node after
    /// taking the fan's lease but before writing the hold (a hold that was written is given
    /// back to the retry instead); the lease lapses at its TTL.
    pub(crate) lost_hold: bool,
    pub(crate) order: Option<u16>,
    /// The confirmed order's body.
    pub(crate) confirmed: Option<Value>,
    /// What was asked under `hold-{fan}` and `order-{fan}` and the last answer's body, so a
    /// test can ask again under the same keys.
    pub(crate) hold_request: Value,
    pub(crate) hold_body: Value,
    pub(crate) order_request: Option<Value>,
    pub(crate) order_body: Option<Value>,
    /// The waiting-room pass the hold was asked with (`x-marquee-pass`), which a hold asked
    /// again under its key needs too: the pass is checked before the idempotent part.
    pub(crate) pass: Option<String>,
}

/// The statuses a fan's client tries again on, with the same idempotency key: no answer (0),
/// or the gateway's 502/503.
pub(crate) const RETRY_UNANSWERED: &[u16] = &[0, 502, 503];

/// Each fan holds (seats, best available, or standing) then buys, on `targets[fan % n]`, at most
/// `concurrency` fans at a time. Every request carries an idempotency key, and a fan whose
/// request got no answer or a 502/503 tries again with the same key (as a real client does):
/// a retry can never buy twice. `answered` counts fans done, for whoever waits on it.
pub(crate) async fn race(
    targets: &[String],
    sale: &Sale,
    tokens: &[String],
    concurrency: usize,
    answered: Arc<watch::Sender<usize>>,
) -> Vec<FanOutcome> {
    race_retrying(
        targets,
        sale,
        tokens,
        concurrency,
        answered,
        RETRY_UNANSWERED,
    )
    .await
}

/// [`race`], the fans' clients trying again on the statuses in `retry_on`.
pub(crate) async fn race_retrying(
    targets: &[String],
    sale: &Sale,
    tokens: &[String],
    concurrency: usize,
    answered: Arc<watch::Sender<usize>>,
    retry_on: &'static [u16],
) -> Vec<FanOutcome> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let seat_ids = Arc::new(sale.seat_ids.clone());
    let racers: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            let client = client.clone();
            let token = token.clone();
            let url = targets[index % targets.len()].clone();
            let event_id = sale.event_id.clone();
            let seat_ids = Arc::clone(&seat_ids);
            let permits = Arc::clone(&permits);
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let _permit = permits.acquire().await.expect("permits");
                let mut rng = StdRng::seed_from_u64(index as u64);
                let body = match index % 5 {
                    0 => json!({"quantity": rng.gen_range(1..=4)}),
                    1 => json!({"general_admission": {"section": "Floor", "quantity": rng.gen_range(1..=4)}}),
                    _ => {
                        // The first 150 seats only, so fans collide often.
                        let count = rng.gen_range(1..=3);
                        let wanted: Vec<&String> =
                            seat_ids[..150].choose_multiple(&mut rng, count).collect();
                        json!({"seat_ids": wanted})
                    }
                };
                let (hold_status, hold) = send(
                    &client,
                    &format!("{url}/api/v1/events/{event_id}/holds"),
                    &token,
                    &body,
                    &format!("hold-{index}"),
                    retry_on,
                )
                .await;
                let mut outcome = FanOutcome {
                    hold: hold_status,
                    hold_code: hold["error"]["code"].as_str().unwrap_or("").to_string(),
                    lost_hold: hold["error"]["message"]
                        .as_str()
                        .is_some_and(|message| message.contains("already hold")),
                    order: None,
                    confirmed: None,
                    hold_request: body,
                    hold_body: hold.clone(),
                    order_request: None,
                    order_body: None,
                    pass: None,
                };
                if hold_status == 201 {
                    let request = json!({"hold_id": hold["id"], "payment": {"method": "card", "token": "tok_visa"}});
                    let (order_status, order) = send(
                        &client,
                        &format!("{url}/api/v1/orders"),
                        &token,
                        &request,
                        &format!("order-{index}"),
                        retry_on,
                    )
                    .await;
                    outcome.order = Some(order_status);
                    outcome.order_request = Some(request);
                    outcome.order_body = Some(order.clone());
                    if order_status == 201 {
                        outcome.confirmed = Some(order);
                    }
                }
                answered.send_modify(|done| *done += 1);
                outcome
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(racers.len());
    for racer in racers {
        outcomes.push(racer.await.expect("racer"));
    }
    outcomes
}

/// A count of fans done, for [`race`].
pub(crate) fn progress() -> Arc<watch::Sender<usize>> {
    Arc::new(watch::channel(0).0)
}

/// Resolves once 200 of a race's 600 fans have their answers.
async fn a_third_answered(answered: &watch::Sender<usize>) {
    let mut done = answered.subscribe();
    tokio::time::timeout(PATIENCE, done.wait_for(|done| *done >= 200))
        .await
        .expect("fans keep being answered")
        .expect("the race is running");
}

/// POSTs with an idempotency key, trying again (same key) while the answer's status is in
/// `retry_on` (0: no answer); gives up after a minute with the last status.
pub(crate) async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    key: &str,
    retry_on: &[u16],
) -> (u16, Value) {
    let sent = send_with(client, url, token, &[], body, key, retry_on).await;
    (sent.status, sent.body)
}

/// One try of a [`send_with`]: its status (0: no answer), its `Retry-After` in seconds, and
/// how long it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) elapsed: Duration,
}

/// What [`send_with`] ended with, and every try on the way.
pub(crate) struct Sent {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) attempts: Vec<Attempt>,
}

/// [`send`] with extra headers, keeping every try. A refusal with `Retry-After` is tried again
/// after that wait, as a well-behaved client does (else after 100 ms).
pub(crate) async fn send_with(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
    key: &str,
    retry_on: &[u16],
) -> Sent {
    let deadline = Instant::now() + PATIENCE;
    let mut sent = Sent {
        status: 0,
        body: Value::Null,
        attempts: Vec::new(),
    };
    while Instant::now() < deadline {
        let mut request = client
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut wait = Duration::from_millis(100);
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                sent.attempts.push(Attempt {
                    status,
                    retry_after,
                    elapsed: started.elapsed(),
                });
                (sent.status, sent.body) = (status, body);
                if !retry_on.contains(&status) {
                    return sent;
                }
                if let Some(seconds) = retry_after {
                    wait = wait.max(Duration::from_secs(seconds));
                }
            }
            Err(_) => {
                sent.attempts.push(Attempt {
                    status: 0,
                    retry_after: None,
                    elapsed: started.elapsed(),
                });
                (sent.status, sent.body) = (0, Value::Null);
            }
        }
        tokio::time::sleep(wait).await;
    }
    sent
}

/// No seat in two confirmed orders, standing within capacity, and the database agreeing: every
/// ticket the database holds for the event is in exactly one order it confirmed.
pub(crate) async fn assert_nothing_sold_twice(outcomes: &[FanOutcome], app: &TestApp, sale: &Sale) {
    let mut sold = HashSet::new();
    let mut standing = 0;
    for order in outcomes
        .iter()
        .filter_map(|outcome| outcome.confirmed.as_ref())
    {
        for ticket in order["tickets"].as_array().expect("tickets") {
            match ticket["seat_id"].as_str() {
                Some(seat) => assert!(sold.insert(seat.to_string()), "seat {seat} sold twice"),
                None => standing += 1,
            }
        }
    }
    assert!(
        standing <= STANDING_CAPACITY,
        "standing oversold: {standing}"
    );
    // The seat map (from any node) shows exactly the seats the answers sold.
    let seats = app
        .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
        .await
        .expect(StatusCode::OK);
    let sold_on_map: HashSet<String> = seats["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .filter(|seat| seat["status"] == "sold")
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        sold_on_map, sold,
        "the seat map agrees with the confirmed orders"
    );
    // Standing places are sold or still held, never both and never lost: exactly the unsold
    // ones are available once every hold was bought.
    let available = seats["general_admission"][0]["available"]
        .as_u64()
        .expect("standing availability");
    assert!(
        available + standing <= STANDING_CAPACITY,
        "{available} available + {standing} sold exceeds the standing area"
    );
    if outcomes
        .iter()
        .all(|outcome| outcome.hold != 201 || outcome.order == Some(201))
    {
        // An attempt that died with the killed node between taking its leases and writing its
        // hold leaves the leases until their TTL, and its retry is told `limit_exceeded` (a
        // known gap); each such fan may account for up to four standing places in flight.
        let lost = outcomes.iter().filter(|outcome| outcome.lost_hold).count() as u64;
        let unsold = STANDING_CAPACITY - standing;
        assert!(
            available <= unsold && available + 4 * lost >= unsold,
            "standing availability agrees with the tickets: {available} available, {unsold} \
             unsold, {lost} holds whose answer was lost"
        );
    }
}

pub(crate) fn tally(outcomes: &[FanOutcome]) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for outcome in outcomes {
        *tally
            .entry(format!(
                "hold {} {}{}",
                outcome.hold,
                outcome.hold_code,
                if outcome.lost_hold {
                    " (answer lost)"
                } else {
                    ""
                }
            ))
            .or_default() += 1;
        if let Some(order) = outcome.order {
            *tally.entry(format!("order {order}")).or_default() += 1;
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fans_on_three_nodes_never_buy_the_same_seat() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    let sale = on_sale(&cluster.client(0)).await;
    let tokens = fans(cluster.store().await.as_ref(), 1000).await;
    let outcomes = race(&cluster.urls(), &sale, &tokens, 1000, progress()).await;
    let tally = tally(&outcomes);
    eprintln!("three nodes, 1,000 fans: {tally:?}");
    for outcome in &outcomes {
        assert!(
            [201, 409, 422].contains(&outcome.hold),
            "every hold is granted or refused cleanly: {tally:?}"
        );
        assert!(
            outcome.order.is_none_or(|order| order == 201),
            "a live hold is bought: {tally:?}"
        );
    }
    assert!(
        outcomes.iter().any(|outcome| outcome.hold == 409),
        "fans collided"
    );
    assert_nothing_sold_twice(&outcomes, &cluster.client(2), &sale).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_push_on_another_and_search_on_a_third() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    let sale = on_sale(&a).await;
    let (fan, _) = a.register("fan").await;

    // A push subscriber on node C, a hold on node A.
    let mut stream = seat_stream(&c, &sale, "node-3").await;
    let seat = sale.seat_ids[7].clone();
    let started = Instant::now();
    a.post(
        &format!("/api/v1/events/{}/holds", sale.event_id),
        Some(&fan),
        json!({"seat_ids": [seat]}),
    )
    .await
    .expect(StatusCode::CREATED);
    loop {
        let event = stream.next().await.expect("the stream stays open");
        if event.event == "seats" && event.data["data"]["seat_ids"][0] == seat.as_str() {
            assert_eq!(event.data["data"]["status"], "held");
            break;
        }
    }
    let push_elapsed = started.elapsed();

    // An event published on node A, searched for on node B.
    let (organizer, _) = a.register("organizer").await;
    let venue = a.create_venue(&organizer).await;
    let word = format!(
        "zephyrine{}",
        ulid_lower().chars().rev().take(6).collect::<String>()
    );
    let mut body = event_body(venue["id"].as_str().expect("venue id"));
    body["title"] = json!(format!("{word} live"));
    body["waiting_room"]["enabled"] = json!(false);
    let event = a
        .post("/api/v1/events", Some(&organizer), body)
        .await
        .expect(StatusCode::CREATED);
    let started = Instant::now();
    a.post(
        &format!(
            "/api/v1/events/{}/publish",
            event["id"].as_str().expect("id")
        ),
        Some(&organizer),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = b
            .get(&format!("/api/v1/search?q={word}"), None)
            .await
            .expect(StatusCode::OK);
        if found["hits"]
            .as_array()
            .is_some_and(|hits| hits.iter().any(|hit| hit["id"] == event["id"]))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node B never found the event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let search_elapsed = started.elapsed();
    // Measured, not asserted (the machines are noisy); `marquee-bench cluster` measures the
    // distribution.
    eprintln!(
        "node A -> push on node C: {} ms; node A -> search on node B: {} ms",
        push_elapsed.as_millis(),
        search_elapsed.as_millis()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_sale_loses_no_order_and_rejoins() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    let mut config = gateway_config(&cluster.urls());
    config.policies = vec![marquee_gateway::GroupPolicy {
        group: "api".into(),
        policy: Policy::RoundRobin,
    }];
    config.health.interval = Duration::from_millis(100);
    config.ejection.base = Duration::from_secs(1);
    let gateway = Gateway::start(config).await.expect("gateway");
    let through = TestApp::client_of(gateway.url());
    let sale = on_sale(&through).await;
    let tokens = fans(cluster.store().await.as_ref(), 600).await;

    // Fans arrive 40 at a time through the gateway; node 2 dies a third of the way in.
    let answered = progress();
    let targets = vec![gateway.url()];
    let racing = race(&targets, &sale, &tokens, 40, Arc::clone(&answered));
    let killing = async {
        a_third_answered(&answered).await;
        cluster.kill_node(1).await;
    };
    let (outcomes, ()) = tokio::join!(racing, killing);
    let tally = tally(&outcomes);
    eprintln!("600 fans through the gateway, node 2 killed: {tally:?}");
    for outcome in &outcomes {
        assert!(
            [201, 409, 422].contains(&outcome.hold),
            "fans carry on through the gateway: {tally:?}"
        );
        assert!(
            outcome.order.is_none_or(|order| order == 201),
            "every order is confirmed, even one whose node died under it: {tally:?}"
        );
    }

    // Every confirmed order is there, asked of the survivors.
    let survivors = [cluster.client(0), cluster.client(2)];
    for (index, outcome) in outcomes.iter().enumerate() {
        let Some(order) = &outcome.confirmed else {
            continue;
        };
        let id = order["id"].as_str().expect("order id");
        let stored = survivors[index % 2]
            .get(&format!("/api/v1/orders/{id}"), Some(&tokens[index]))
            .await
            .expect(StatusCode::OK);
        assert_eq!(stored["status"], "confirmed");
    }
    assert_nothing_sold_twice(&outcomes, &survivors[0], &sale).await;

    // The node comes back and the gateway sends it traffic again.
    cluster.start_node(1).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = through.get("/api/v1/events?limit=1", None).await;
        if response.headers["x-marquee-node"] == "node-2" {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 never rejoined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_sale_still_sells_no_seat_twice() {
    // Holds last 8 s, so the ones whose leases Redis forgot must be ended by the nodes' sweep.
    let mut cluster = Cluster::start(
        3,
        ClusterOptions {
            own_redis: true,
            node_args: vec!["--hold-ttl".into(), "8s".into()],
            ..ClusterOptions::default()
        },
    )
    .await;
    let sale = on_sale(&cluster.client(0)).await;
    let tokens = fans(cluster.store().await.as_ref(), 600).await;
    let answered = progress();
    let urls = cluster.urls();
    let racing = race(&urls, &sale, &tokens, 40, Arc::clone(&answered));
    let mut redis = cluster.own_redis.take().expect("own redis");
    let restarting = async {
        a_third_answered(&answered).await;
        // Every lease, waiting room and push history is gone with it.
        redis.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart();
    };
    let (outcomes, ()) = tokio::join!(racing, restarting);
    let tally = tally(&outcomes);
    eprintln!("600 fans on three nodes, Redis restarted: {tally:?}");
    for outcome in &outcomes {
        assert!(
            [201, 409, 422].contains(&outcome.hold),
            "holds are granted or refused cleanly: {tally:?}"
        );
        assert!(
            outcome
                .order
                .is_none_or(|order| order == 201 || order == 409),
            "a hold whose lease vanished fails cleanly, never 500: {tally:?}"
        );
    }
    assert!(tally.get("order 201").copied().unwrap_or(0) > 0);
    assert_nothing_sold_twice(&outcomes, &cluster.client(1), &sale).await;
    // Holds that outlived their leases end at their deadline all the same, though no lapse
    // will ever be announced for them: their standing places come back.
    let sold_standing = outcomes
        .iter()
        .filter_map(|outcome| outcome.confirmed.as_ref())
        .flat_map(|order| order["tickets"].as_array().cloned().unwrap_or_default())
        .filter(|ticket| ticket["seat_id"].is_null())
        .count() as u64;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seats = cluster
            .client(2)
            .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
            .await
            .expect(StatusCode::OK);
        let available = seats["general_admission"][0]["available"].as_u64();
        if available == Some(STANDING_CAPACITY - sold_standing) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "standing places held by forgotten leases never came back: {available:?} available, {sold_standing} sold"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every node is ready again.
    for url in cluster.urls() {
        ready(&url).await;
    }
    cluster.own_redis = Some(redis);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_restart_the_change_stream_resumes_and_nodes_catch_up() {
    let mut cluster = Cluster::start(
        3,
        ClusterOptions {
            own_nats: true,
            ..ClusterOptions::default()
        },
    )
    .await;
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    let sale = on_sale(&a).await;
    let (fan, _) = a.register("fan").await;
    let mut stream = seat_stream(&c, &sale, "node-3").await;

    let mut nats = cluster.own_nats.take().expect("own nats");
    nats.kill();
    // Readiness names NATS while it is down.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let readiness = b.get("/readyz", None).await;
        if readiness.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(readiness.body["error"]["dependency"], "nats");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never noticed NATS was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Changes made meanwhile still reach the other nodes (from the outbox)...
    let first = sale.seat_ids[0].clone();
    a.post(
        &format!("/api/v1/events/{}/holds", sale.event_id),
        Some(&fan),
        json!({"seat_ids": [first]}),
    )
    .await
    .expect(StatusCode::CREATED);
    await_seat(&mut stream, &first).await;

    // ...and once NATS is back the relay resumes where the stream stopped.
    nats.restart();
    ready(&b.url).await;
    let (other_fan, _) = a.register("fan").await;
    let second = sale.seat_ids[1].clone();
    a.post(
        &format!("/api/v1/events/{}/holds", sale.event_id),
        Some(&other_fan),
        json!({"seat_ids": [second]}),
    )
    .await
    .expect(StatusCode::CREATED);
    await_seat(&mut stream, &second).await;

    // The stream is the outbox: every position once, in order, none lost in the outage.
    let store = cluster.store().await;
    let mut outbox = Vec::new();
    loop {
        let batch = store
            .read_changes(outbox.last().copied().unwrap_or(0), 1000)
            .await
            .expect("outbox");
        if batch.is_empty() {
            break;
        }
        outbox.extend(batch.iter().map(|record| record.position));
    }
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + PATIENCE;
    let relayed = loop {
        let mut stream = js.get_stream(&cluster.stream).await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut positions = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.expect("message");
            positions.push(
                message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .expect("id")
                    .as_str()
                    .parse::<i64>()
                    .expect("position"),
            );
        }
        if positions.len() >= outbox.len() || Instant::now() > deadline {
            break positions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(relayed, outbox);
    cluster.own_nats = Some(nats);
    cluster.stop().await;
}

/// The event's seat stream over SSE from the node `app` speaks to, which must be `node`.
async fn seat_stream(app: &TestApp, sale: &Sale, node: &str) -> SseStream {
    let response = app
        .client
        .get(format!(
            "{}/api/v1/push/sse?channel=event:{}:seats",
            app.url, sale.event_id
        ))
        .send()
        .await
        .expect("subscribed");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-marquee-node"], node);
    SseStream::from_response(response)
}

async fn await_seat(stream: &mut SseStream, seat: &str) {
    loop {
        let event = stream.next().await.expect("the stream stays open");
        if event.event == "seats" && event.data["data"]["seat_ids"][0] == seat {
            return;
        }
    }
}

/// Nodes on one PostgreSQL started without `--jwt-secret` (a step an operator forgets) agree on
/// the signing secret by themselves: a token issued by one is accepted by the other, and a
/// node restarted with a data dir of its own keeps accepting it. Before the cluster kept its
/// signing root in the database, each node invented one and two of three requests were 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_configured_secret_share_one_and_accept_each_others_tokens() {
    let schema = format!("api_{}", ulid_lower());
    sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let start = |data_dir: PathBuf| {
        let url = url.clone();
        async move {
            let mut config = marquee::ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir);
            config.database_url = Some(url);
            assert!(config.jwt_secret.is_none());
            marquee::Server::start(config).await.expect("node starts")
        }
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    // Two nodes starting at once race to write the secret; both must end with the winner's.
    let (first, second) = tokio::join!(
        start(dirs[0].path().to_path_buf()),
        start(dirs[1].path().to_path_buf())
    );
    let client = reqwest::Client::new();
    let token = registered(&client, &first.url()).await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let third = start(dirs[2].path().to_path_buf()).await;
    for node in [&first, &second, &third] {
        let response = client
            .get(format!("{}/api/v1/me", node.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{} refused a token issued by another node",
            node.url()
        );
    }
    for node in [first, second, third] {
        node.shutdown().await.expect("shutdown");
    }
    sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A gateway given the catalog database instead of a secret verifies the keyring's tokens at
/// the edge: a node's token passes, a forged one and a fan on an organizer's route are refused
/// by the gateway itself (its answers carry no node's `x-marquee-node`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_secret_checks_tokens_with_the_clusters_keyring() {
    let schema = format!("api_{}", ulid_lower());
    sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let dir = tempfile::tempdir().expect("dir");
    let mut config = marquee::ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path().into());
    config.database_url = Some(url.clone());
    let node = marquee::Server::start(config).await.expect("node starts");
    let mut gateway = crate::gateway::gateway_config(&[node.url()]);
    gateway.jwt_secret = None;
    gateway.edge_keyring = Some(
        marquee::keys::edge_keyring(&url, Duration::from_secs(15))
            .await
            .expect("keyring"),
    );
    let gateway = marquee_gateway::Gateway::start(gateway)
        .await
        .expect("gateway starts");

    let client = reqwest::Client::new();
    let token = registered(&client, &gateway.url()).await["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(kid_of(&token).is_some(), "the node signed with the keyring");
    let me = client
        .get(format!("{}/api/v1/me", gateway.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);

    // The signature's last characters changed: the edge refuses it before any node sees it.
    let mut forged = token.clone();
    let last = forged.pop().expect("a character");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = client
        .get(format!("{}/api/v1/me", gateway.url()))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("forged");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers().get("x-marquee-node").is_none(),
        "the gateway answered, not a node"
    );
    // A fan on an organizer's route: the role comes from the verified token.
    let forbidden = client
        .post(format!("{}/api/v1/venues", gateway.url()))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("venue");
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(forbidden.headers().get("x-marquee-node").is_none());

    gateway.shutdown().await;
    node.shutdown().await.expect("shutdown");
    sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

fn kid_of(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).expect("header").kid
}

/// Two nodes without a configured secret on one PostgreSQL database: tokens and ticket codes
/// signed before a rotation verify after it on both nodes; once the new key activates, new
/// tokens name it and verify on the other node; the ticket key is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_key_reaches_every_node_and_what_was_signed_before_still_verifies() {
    use marquee_auth::Purpose;
    use marquee_inventory::TicketSigner;
    let schema = format!("api_{}", ulid_lower());
    sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let store = Arc::new(
        SqlCatalogStore::connect(&url, StoreOptions::default())
            .await
            .expect("store"),
    );
    let start = |data_dir: PathBuf| {
        let url = url.clone();
        async move {
            let mut config = marquee::ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir);
            config.database_url = Some(url);
            config.key_reload_interval = Duration::from_millis(100);
            assert!(config.jwt_secret.is_none());
            marquee::Server::start(config).await.expect("node starts")
        }
    };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (first, second) = tokio::join!(
        start(dirs[0].path().to_path_buf()),
        start(dirs[1].path().to_path_buf())
    );
    let client = reqwest::Client::new();
    let me = |node: &marquee::Server, token: &str| {
        client
            .get(format!("{}/api/v1/me", node.url()))
            .bearer_auth(token)
            .send()
    };

    let user = register(&client, &first).await;
    let ticket = marquee_domain::TicketId::generate();
    let event = marquee_domain::EventId::generate();

    // Signed by the nodes before the rotation: named k1.
    let before = first.state.tokens.issue(&user, Role::Fan).expect("token");
    assert_eq!(kid_of(&before).as_deref(), Some("k1"));
    let code_before =
        TicketSigner::from_keyring(first.state.tokens.keyring()).code(&ticket, &event);
    assert_eq!(code_before.split('.').nth(1), Some("k1"));
    let ticket_key_before = first
        .state
        .tokens
        .keyring()
        .current(Purpose::TicketCodes)
        .expect("ticket key")
        .material()
        .to_vec();

    let rotation = marquee::keys::rotate(
        &store,
        Purpose::AccessTokens,
        Duration::from_secs(3600),
        Duration::from_millis(300),
    )
    .await
    .expect("rotate");
    assert_eq!(rotation.id, "k2");
    assert_eq!(rotation.retired.len(), 1);

    // Wait (for a condition, not a time) until the first node signs with k2.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let token = first.state.tokens.issue(&user, Role::Fan).expect("token");
        if kid_of(&token).as_deref() == Some("k2") {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key never became current"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for node in [&first, &second] {
        for token in [&before, &after] {
            let response = me(node, token).await.expect("request");
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{} refused {token}",
                node.url()
            );
        }
        let signer = TicketSigner::from_keyring(node.state.tokens.keyring());
        assert_eq!(
            signer.verify(&code_before, &event),
            Some(ticket.clone()),
            "{code_before}"
        );
        // Rotating access tokens left the ticket key alone.
        let ticket_key = node
            .state
            .tokens
            .keyring()
            .current(Purpose::TicketCodes)
            .expect("ticket key");
        assert_eq!(ticket_key.id(), "k1");
        assert_eq!(ticket_key.material(), ticket_key_before.as_slice());
    }
    let forged = TokenIssuer::new(&SigningSecret::generate(), Duration::from_secs(60))
        .issue(&user, Role::Admin)
        .expect("forged");
    assert_eq!(
        me(&second, &forged).await.expect("request").status(),
        StatusCode::UNAUTHORIZED
    );
    for node in [first, second] {
        node.shutdown().await.expect("shutdown");
    }
    store.close().await;
    sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A new fan registered at `base_url`: the answer's `{"user", "token"}`.
async fn registered(client: &reqwest::Client, base_url: &str) -> Value {
    let email = format!("fan-{}@example.com", ulid_lower());
    client
        .post(format!("{base_url}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": "correct horse", "name": "Fan", "role": "fan"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("body")
}

async fn register(client: &reqwest::Client, node: &marquee::Server) -> UserId {
    let registered = registered(client, &node.url()).await;
    UserId::from_string(
        registered["user"]["id"]
            .as_str()
            .expect("user id")
            .to_string(),
    )
}
