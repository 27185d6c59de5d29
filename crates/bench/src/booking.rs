//! `marquee-bench booking`: a load run of the booking path over real HTTP against a node started
//! in this process, with the load generator in the same process (so figures include its cost).
//!
//! Three phases on one contended event:
//! 1. **Peak hold attempts/s** — a closed loop of `clients` fans, each asking for 2 random seats
//!    of the same 200 hot seats (an on-sale rush: most attempts collide and get 409) and
//!    releasing on success so the hot seats keep changing hands, as fast as answers come back.
//! 2. **Latency at a fixed offered rate** — an open loop sending hold attempts on a schedule of
//!    `rate` per second regardless of answers, over at most `clients` connections; latency is
//!    measured from each request's scheduled time to its hold's answer (the release that follows
//!    a granted hold is load, not latency), so a stall counts against every request it delays
//!    (no coordinated omission).
//! 3. **Confirmed orders/s** — every fan holds one distinct seat, then all pay at once.
//!
//! The anchor is `redis-benchmark -t set` on the same machine in the same run, if installed.

use marquee::{Server, ServerConfig};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BookingBench {
    pub clients: usize,
    pub duration: Duration,
    pub rate: u64,
    pub redis_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BookingReport {
    pub backend: &'static str,
    pub hold_attempts_per_sec: f64,
    pub holds_granted_per_sec: f64,
    pub open_loop_sent: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub orders_per_sec: f64,
    pub orders: usize,
}

const SECRET: &str = "benchmark-secret-of-at-least-thirty-two-bytes";

struct Fixture {
    url: String,
    event_id: String,
    seats: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    client: reqwest::Client,
}

async fn fixture(server: &Server, fans: usize) -> anyhow::Result<Fixture> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(fans + 16)
        .build()?;
    let url = server.url();
    let store = server.state.store.clone();
    let issuer = TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec())?,
        Duration::from_secs(7200),
    );
    let organizer = User {
        id: UserId::generate(),
        email: Email::parse("organizer@bench.test").map_err(anyhow::Error::msg)?,
        name: DisplayName::parse("Bench").map_err(anyhow::Error::msg)?,
        role: Role::Organizer,
        created_at: marquee_domain::timestamp_now(),
    };
    store.create_user(&organizer, "unused").await?;
    let organizer_token = issuer.issue(&organizer.id, Role::Organizer)?;
    let rows: Vec<Value> = (0..50)
        .map(|r| json!({"label": format!("R{r}"), "seats": 100}))
        .collect();
    let (venue_id, seats) =
        crate::product::venue_seats(&client, &url, &organizer_token, "Bench Arena", rows).await?;
    let event_id = crate::product::publish_event(
        &client,
        &url,
        &organizer_token,
        &json!({"title": "Bench Night", "venue_id": venue_id, "category": "concert",
                      "starts_at": "2031-01-01T20:00:00Z",
                      "price_tiers": [{"name": "Bowl", "price_cents": 5000, "currency": "GBP",
                                       "sections": ["Bowl"]}]}),
    )
    .await?;
    let mut tokens = Vec::with_capacity(fans);
    for index in 0..fans {
        let fan = User {
            id: UserId::generate(),
            email: Email::parse(&format!("fan{index}@bench.test")).map_err(anyhow::Error::msg)?,
            name: DisplayName::parse("Fan").map_err(anyhow::Error::msg)?,
            role: Role::Fan,
            created_at: marquee_domain::timestamp_now(),
        };
        store.create_user(&fan, "unused").await?;
        tokens.push(issuer.issue(&fan.id, Role::Fan)?);
    }
    Ok(Fixture {
        url,
        event_id,
        seats: Arc::new(seats),
        tokens: Arc::new(tokens),
        client,
    })
}

/// Seats every fan in the rush wants.
const HOT_SEATS: usize = 200;

/// One hold attempt on 2 random hot seats; releases on success so contention stays steady.
/// `answered` is called with the hold's status as soon as it comes back, before the release.
async fn attempt(
    fixture: &Fixture,
    fan: usize,
    rng: &mut StdRng,
    answered: impl FnOnce(StatusCode),
) -> anyhow::Result<StatusCode> {
    let hot = &fixture.seats[..HOT_SEATS.min(fixture.seats.len())];
    let seats: Vec<&String> = hot.choose_multiple(rng, 2).collect();
    let token = &fixture.tokens[fan % fixture.tokens.len()];
    let response = fixture
        .client
        .post(format!(
            "{}/api/v1/events/{}/holds",
            fixture.url, fixture.event_id
        ))
        .bearer_auth(token)
        .json(&json!({"seat_ids": seats}))
        .send()
        .await?;
    let status = response.status();
    answered(status);
    if status == StatusCode::CREATED {
        let hold: Value = response.json().await?;
        let id = hold["id"].as_str().unwrap_or_default();
        fixture
            .client
            .delete(format!("{}/api/v1/holds/{id}", fixture.url))
            .bearer_auth(token)
            .send()
            .await?;
    }
    Ok(status)
}

pub async fn run_booking(bench: &BookingBench) -> anyhow::Result<BookingReport> {
    let data_dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir.path().into());
    config.jwt_secret = Some(SECRET.to_string());
    config.redis_url = bench.redis_url.clone();
    config.redis_prefix = format!("bench:{}:", UserId::generate());
    config.database_max_connections = 32;
    // The bench measures what the write path takes from 1,000 fans at once; the node's booking
    // limit (which sheds past 512 in flight by default) would answer some of them 503 instead.
    config.booking_max_in_flight = 100_000;
    let server = Server::start(config).await?;
    let backend = server.state.inventory.leases().backend();
    let fixture = Arc::new(fixture(&server, bench.clients).await?);

    // Phase 1: closed loop.
    let answered = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + bench.duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..bench.clients)
        .map(|fan| {
            let fixture = fixture.clone();
            let answered = answered.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(fan as u64);
                while Instant::now() < deadline {
                    if let Ok(status) = attempt(&fixture, fan, &mut rng, |_| {}).await {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if status == StatusCode::CREATED {
                            held.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hold_attempts_per_sec = answered.load(Ordering::Relaxed) as f64 / elapsed;
    let holds_granted_per_sec = held.load(Ordering::Relaxed) as f64 / elapsed;

    // Phase 2: open loop at a fixed offered rate.
    let interval = Duration::from_secs_f64(1.0 / bench.rate.max(1) as f64);
    let total = (bench.rate as f64 * bench.duration.as_secs_f64()) as u64;
    let connections = Arc::new(tokio::sync::Semaphore::new(bench.clients));
    let start = tokio::time::Instant::now();
    let mut requests = Vec::with_capacity(total as usize);
    for index in 0..total {
        let scheduled = start + interval * index as u32;
        tokio::time::sleep_until(scheduled).await;
        let fixture = fixture.clone();
        let connections = connections.clone();
        requests.push(tokio::spawn(async move {
            // Waiting for a free connection is part of the latency: it is measured from
            // `scheduled`.
            let _connection = connections.acquire_owned().await;
            let mut rng = StdRng::seed_from_u64(index);
            let mut latency = None;
            let _ = attempt(&fixture, index as usize, &mut rng, |_| {
                latency = Some(scheduled.elapsed());
            })
            .await;
            // A request that failed outright counts as answered when it gave up.
            latency.unwrap_or_else(|| scheduled.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(requests.len());
    for request in requests {
        latencies.push(request.await?);
    }
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };

    // Phase 3: everyone holds one distinct seat, then all pay at once.
    let mut holds = Vec::new();
    for (fan, seat) in fixture.seats.iter().enumerate().take(bench.clients) {
        let response = fixture
            .client
            .post(format!(
                "{}/api/v1/events/{}/holds",
                fixture.url, fixture.event_id
            ))
            .bearer_auth(&fixture.tokens[fan])
            .json(&json!({"seat_ids": [seat]}))
            .send()
            .await?;
        if response.status() == StatusCode::CREATED {
            let hold: Value = response.json().await?;
            holds.push((fan, hold["id"].as_str().unwrap_or_default().to_string()));
        }
    }
    let started = Instant::now();
    let payers: Vec<_> = holds
        .into_iter()
        .map(|(fan, hold)| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                fixture
                    .client
                    .post(format!("{}/api/v1/orders", fixture.url))
                    .bearer_auth(&fixture.tokens[fan])
                    .json(&json!({"hold_id": hold, "payment": {"method": "card", "token": "tok_visa"}}))
                    .send()
                    .await
                    .map(|response| response.status() == StatusCode::CREATED)
                    .unwrap_or(false)
            })
        })
        .collect();
    let mut orders = 0;
    for payer in payers {
        if payer.await? {
            orders += 1;
        }
    }
    let orders_per_sec = orders as f64 / started.elapsed().as_secs_f64();
    server.shutdown().await?;
    Ok(BookingReport {
        backend,
        hold_attempts_per_sec,
        holds_granted_per_sec,
        open_loop_sent: total,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        orders_per_sec,
        orders,
    })
}

/// `redis-benchmark -t set` requests per second, the anchor of the report (None if absent).
pub fn redis_set_anchor(clients: usize) -> Option<f64> {
    let output = std::process::Command::new("redis-benchmark")
        .args(["-t", "set", "-n", "200000", "-q", "-c"])
        .arg(clients.min(1000).to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Progress lines ("SET: rps=…") come first, separated by carriage returns; the summary
    // ("SET: 123456.79 requests per second") is the last one that parses.
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "SET:")
        .filter_map(|pair| pair[1].parse().ok())
        .next_back()
}
