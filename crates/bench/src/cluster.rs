//! `marquee-bench cluster`: booking throughput with one, two and three `marquee serve` processes
//! over the same PostgreSQL, Redis and NATS JetStream, and the change stream's lag from a
//! commit to every node.
//!
//! Each node count gets a fresh PostgreSQL schema, Redis prefix and JetStream stream. The load
//! is a closed loop of `clients` fans spread over the nodes, each booking two seats of its own
//! (hold, then order) of one 20,000-seat event, one fresh fan per booking: every booking
//! succeeds, so the figure is the write path's capacity, not contention (`bench booking`
//! measures collisions). Every write of one event bumps its seat version, so all bookings of the
//! event are serialised on that row in PostgreSQL, whichever node makes them. The load
//! generator runs in this process on the same machine as the nodes and the three engines, so on
//! a small machine the ratio between node counts says more than the absolute figures.
//!
//! The anchor is `pgbench` (TPC-B-like, the same client count and duration) on the same
//! PostgreSQL in the same run, when installed: a booking is two write transactions (hold, order)
//! with reads around them, a TPC-B transaction five statements.
//!
//! Lag: with every node subscribed over SSE to the event's seat channel, holds are made on
//! node 1 at a steady pace; a hold's lag is from its `201` arriving at the client (the commit is
//! already done) to the seat change arriving from the last node. The clock is the client's, for
//! every event, so no clocks need agreeing.

use anyhow::Context;
use futures::StreamExt;
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use marquee_store::{CatalogStore, SqlCatalogStore, StoreOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const SECRET: &str = "benchmark-secret-of-at-least-thirty-two-bytes";
const ROWS: usize = 40;
const SEATS_PER_ROW: usize = 500;

#[derive(Debug, Clone)]
pub struct ClusterBench {
    /// Runs with 1..=max_nodes nodes.
    pub max_nodes: usize,
    pub clients: usize,
    pub duration: Duration,
    /// Holds made for the lag measurement (at 20 a second).
    pub lag_samples: usize,
    /// Fans ask for two best-available seats instead of two of their own (a rush on the
    /// front rows: contention, not capacity).
    pub best_available: bool,
    /// PostgreSQL to create the schemas in (`…/test`).
    pub database_url: String,
    pub redis_url: String,
    pub nats_url: String,
}

#[derive(Debug, Clone)]
pub struct ClusterRun {
    pub nodes: usize,
    pub bookings_per_sec: f64,
    pub hold_p50_ms: f64,
    pub hold_p99_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
}

struct Cluster {
    schema: String,
    stream: String,
    urls: Vec<String>,
    children: Vec<Child>,
    store: Arc<dyn CatalogStore>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn admin(database_url: &str, statement: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await?;
    sqlx::query(statement).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/readyz")).send().await {
            if response.status() == StatusCode::OK {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} never became ready")
}

async fn start_cluster(
    bench: &ClusterBench,
    nodes: usize,
    client: &reqwest::Client,
    dir: &std::path::Path,
) -> anyhow::Result<Cluster> {
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let schema = format!("bench_cluster_{suffix}");
    admin(&bench.database_url, &format!("CREATE SCHEMA {schema}")).await?;
    let separator = if bench.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let database_url = format!(
        "{}{separator}options=-c%20search_path%3D{schema}",
        bench.database_url
    );
    let stream = format!("BENCH_{}", suffix.to_uppercase());
    let exe = crate::product::marquee_binary()?;
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for n in 1..=nodes {
        let port = free_port()?;
        let child = Command::new(&exe)
            .env("MARQUEE_RTMP_LISTEN", "off")
            .env("MARQUEE_SRT_LISTEN", "off")
            .args(["--log-filter", "error", "serve"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--node-id", &format!("node-{n}")])
            .arg("--data-dir")
            .arg(dir.join(format!("{nodes}-{n}")))
            .args(["--database-url", &database_url])
            .args(["--database-max-connections", "32"])
            .args(["--redis-url", &bench.redis_url])
            .args(["--redis-prefix", &format!("bench:{suffix}:")])
            .args(["--nats-url", &bench.nats_url])
            .args(["--nats-stream", &stream])
            .env("MARQUEE_JWT_SECRET", SECRET)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting marquee serve")?;
        children.push(child);
        let url = format!("http://127.0.0.1:{port}");
        // The first node migrates the schema before the others start.
        ready(client, &url).await?;
        urls.push(url);
    }
    let store: Arc<dyn CatalogStore> = Arc::new(
        SqlCatalogStore::connect(
            &database_url,
            StoreOptions {
                max_connections: 8,
                ..StoreOptions::default()
            },
        )
        .await?,
    );
    Ok(Cluster {
        schema,
        stream,
        urls,
        children,
        store,
    })
}

async fn stop_cluster(bench: &ClusterBench, mut cluster: Cluster) -> anyhow::Result<()> {
    for child in &mut cluster.children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Ok(client) = async_nats::connect(&bench.nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&cluster.stream)
            .await;
    }
    admin(
        &bench.database_url,
        &format!("DROP SCHEMA {} CASCADE", cluster.schema),
    )
    .await
}

/// An organizer's published 20,000-seat event (its id and seat ids), and `fans` tokens.
async fn fixture(
    cluster: &Cluster,
    client: &reqwest::Client,
    fans: usize,
) -> anyhow::Result<(String, Vec<String>, Vec<String>)> {
    let issuer = TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec())?,
        Duration::from_secs(7200),
    );
    let organizer = user(Role::Organizer, "organizer")?;
    cluster.store.create_user(&organizer, "unused").await?;
    let token = issuer.issue(&organizer.id, Role::Organizer)?;
    let url = &cluster.urls[0];
    let rows: Vec<Value> = (0..ROWS)
        .map(|r| json!({"label": format!("R{r}"), "seats": SEATS_PER_ROW}))
        .collect();
    let venue: Value = client
        .post(format!("{url}/api/v1/venues"))
        .bearer_auth(&token)
        .json(
            &json!({"name": "Bench Stadium", "city": "Leeds", "country": "GB", "lat": 53.8,
                      "lon": -1.55, "sections": [{"name": "Bowl", "rows": rows}]}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let event: Value = client
        .post(format!("{url}/api/v1/events"))
        .bearer_auth(&token)
        .json(
            &json!({"title": "Cluster Bench Night", "venue_id": venue["id"],
                      "category": "concert", "starts_at": "2031-01-01T20:00:00Z",
                      "price_tiers": [{"name": "Bowl", "price_cents": 5000, "currency": "GBP",
                                       "sections": ["Bowl"]}]}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let event_id = event["id"].as_str().context("event id")?.to_string();
    client
        .post(format!("{url}/api/v1/events/{event_id}/publish"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let store = Arc::clone(&cluster.store);
    let made = futures::stream::iter((0..fans).map(|_| {
        let store = Arc::clone(&store);
        let issuer = issuer.clone();
        async move {
            let fan = user(Role::Fan, "fan")?;
            store.create_user(&fan, "unused").await?;
            anyhow::Ok(issuer.issue(&fan.id, Role::Fan)?)
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let tokens = made.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let seats: Vec<String> = venue["sections"][0]["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    Ok((event_id, seats, tokens))
}

fn user(role: Role, kind: &str) -> anyhow::Result<User> {
    let id = UserId::generate();
    Ok(User {
        email: Email::parse(&format!("{kind}-{id}@bench.test")).map_err(anyhow::Error::msg)?,
        id,
        name: DisplayName::parse("Bench").map_err(anyhow::Error::msg)?,
        role,
        created_at: marquee_domain::timestamp_now(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `pgbench` TPC-B-like transactions/s with `clients` clients for `duration`, in a schema of its
/// own on the same database; `None` when pgbench is not installed or fails.
pub async fn pgbench_anchor(
    database_url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Option<f64>> {
    let schema = format!(
        "bench_pgbench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    admin(database_url, &format!("CREATE SCHEMA {schema}")).await?;
    let options = format!("-c search_path={schema}");
    let initialised = Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", database_url])
        .env("PGOPTIONS", &options)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    let mut tps = None;
    if initialised.is_ok_and(|status| status.success()) {
        let run = Command::new("pgbench")
            .args([
                "-n",
                "-c",
                &clients.to_string(),
                "-j",
                "2",
                "-T",
                &duration.as_secs().max(1).to_string(),
                database_url,
            ])
            .env("PGOPTIONS", &options)
            .output()
            .await;
        if let Ok(output) = run {
            tps = String::from_utf8_lossy(&output.stdout)
                .lines()
                .find(|line| line.starts_with("tps = "))
                .and_then(|line| line.split_whitespace().nth(2))
                .and_then(|value| value.parse::<f64>().ok());
        }
    }
    admin(database_url, &format!("DROP SCHEMA {schema} CASCADE")).await?;
    Ok(tps)
}

pub async fn run_cluster(bench: &ClusterBench) -> anyhow::Result<Vec<ClusterRun>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.clients + 16)
        .timeout(Duration::from_secs(30))
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    // Enough fans for every seat to be booked twice over; a run ends early if seats run out.
    // Two seats per booking fan, leaving a tenth of the seats for the lag phase.
    let fans = ROWS * SEATS_PER_ROW * 9 / 20 + bench.lag_samples;
    for nodes in 1..=bench.max_nodes {
        let cluster = start_cluster(bench, nodes, &client, dir.path()).await?;
        let (event_id, seats, tokens) = fixture(&cluster, &client, fans).await?;
        let outcome = measure(bench, &cluster, &client, &event_id, &seats, &tokens).await;
        stop_cluster(bench, cluster).await?;
        let run = outcome?;
        println!(
            "{} node(s): {:.0} bookings/s, hold p50 {:.1} ms p99 {:.1} ms; lag to every node p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            run.nodes,
            run.bookings_per_sec,
            run.hold_p50_ms,
            run.hold_p99_ms,
            run.lag_p50_ms,
            run.lag_p99_ms,
            run.lag_max_ms
        );
        runs.push(run);
    }
    if let Some(one) = runs.first().map(|run| run.bookings_per_sec) {
        for run in &runs {
            println!(
                "{} node(s) ÷ 1 node: {:.2}",
                run.nodes,
                run.bookings_per_sec / one
            );
        }
    }
    match pgbench_anchor(&bench.database_url, bench.clients, bench.duration).await? {
        Some(tps) => {
            println!(
                "pgbench TPC-B-like, {} clients: {tps:.0} tps",
                bench.clients
            );
            for run in &runs {
                println!(
                    "{} node(s): bookings/s ÷ pgbench tps = {:.3}",
                    run.nodes,
                    run.bookings_per_sec / tps
                );
            }
        }
        None => println!("pgbench: not installed or failed; no anchor"),
    }
    Ok(runs)
}

async fn measure(
    bench: &ClusterBench,
    cluster: &Cluster,
    client: &reqwest::Client,
    event_id: &str,
    seats: &[String],
    tokens: &[String],
) -> anyhow::Result<ClusterRun> {
    let nodes = cluster.urls.len();
    let load_tokens = &tokens[..tokens.len() - bench.lag_samples];
    let next_fan = Arc::new(AtomicUsize::new(0));
    let bookings = Arc::new(AtomicU64::new(0));
    let hold_latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let started = Instant::now();
    let deadline = started + bench.duration;
    let workers: Vec<_> = (0..bench.clients)
        .map(|_| {
            let (client, next_fan, bookings, hold_latencies) = (
                client.clone(),
                Arc::clone(&next_fan),
                Arc::clone(&bookings),
                Arc::clone(&hold_latencies),
            );
            let urls = cluster.urls.clone();
            let tokens = load_tokens.to_vec();
            let seats = seats.to_vec();
            let best_available = bench.best_available;
            let event_id = event_id.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let fan = next_fan.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(fan) else { break };
                    let url = &urls[fan % urls.len()];
                    let sent = Instant::now();
                    let Ok(hold) = client
                        .post(format!("{url}/api/v1/events/{event_id}/holds"))
                        .bearer_auth(token)
                        .json(&if best_available {
                            json!({"quantity": 2})
                        } else {
                            json!({"seat_ids": [seats[2 * fan], seats[2 * fan + 1]]})
                        })
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = hold.status();
                    let body: Value = hold.json().await.unwrap_or(Value::Null);
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if status != StatusCode::CREATED {
                        continue;
                    }
                    let order = client
                        .post(format!("{url}/api/v1/orders"))
                        .bearer_auth(token)
                        .json(&json!({"hold_id": body["id"],
                                      "payment": {"method": "card", "token": "tok_visa"}}))
                        .send()
                        .await;
                    if order.is_ok_and(|order| order.status() == StatusCode::CREATED) {
                        bookings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Ok(mut all) = hold_latencies.lock() {
                    all.extend(latencies);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bookings = bookings.load(Ordering::Relaxed);
    let mut holds = hold_latencies
        .lock()
        .map(|all| all.clone())
        .unwrap_or_default();
    holds.sort_by(f64::total_cmp);

    // Lag: every node's seat stream watched, holds made on node 1 at 20 a second.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    // How many arrivals there were, so the end of the run can wait for the last of them.
    let arrived = Arc::new(tokio::sync::watch::channel(0usize).0);
    let channel = format!("event:{event_id}:seats");
    let mut readers = Vec::new();
    for url in &cluster.urls {
        let response = client
            .get(format!("{url}/api/v1/push/sse?channel={channel}"))
            .timeout(Duration::from_secs(3600))
            .send()
            .await?
            .error_for_status()?;
        let arrivals = Arc::clone(&arrivals);
        let arrived = Arc::clone(&arrived);
        readers.push(tokio::spawn(async move {
            let mut response = response;
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|line| line.strip_prefix("data:"))
                    else {
                        continue;
                    };
                    let Ok(message) = serde_json::from_str::<Value>(data.trim()) else {
                        continue;
                    };
                    if message["data"]["status"] != "held" {
                        continue;
                    }
                    if let Some(seats) = message["data"]["seat_ids"].as_array() {
                        if let (Some(first), Ok(mut arrivals)) =
                            (seats.first().and_then(Value::as_str), arrivals.lock())
                        {
                            arrivals.entry(first.to_string()).or_default().push(now);
                            arrived.send_modify(|count| *count += 1);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for token in &tokens[tokens.len() - bench.lag_samples..] {
        pace.tick().await;
        let response = client
            .post(format!(
                "{}/api/v1/events/{event_id}/holds",
                cluster.urls[0]
            ))
            .bearer_auth(token)
            .json(&json!({"quantity": 1}))
            .send()
            .await?;
        let at = Instant::now();
        if response.status() != StatusCode::CREATED {
            continue;
        }
        let body: Value = response.json().await?;
        if let Some(seat) = body["seat_ids"][0].as_str() {
            answered.push((seat.to_string(), at));
        }
    }
    // Every answered hold's change from every node, or what came within 5 s.
    let expected = answered.len() * nodes;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        arrived.subscribe().wait_for(|count| *count >= expected),
    )
    .await;
    for reader in &readers {
        reader.abort();
    }
    let mut lags = Vec::new();
    if let Ok(arrivals) = arrivals.lock() {
        for (seat, at) in &answered {
            let Some(times) = arrivals.get(seat) else {
                continue;
            };
            if times.len() < nodes {
                continue;
            }
            let last = times.iter().max().copied().unwrap_or(*at);
            lags.push(last.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    anyhow::ensure!(
        lags.len() * 10 >= answered.len() * 9,
        "only {} of {} lag samples reached every node",
        lags.len(),
        answered.len()
    );
    lags.sort_by(f64::total_cmp);
    Ok(ClusterRun {
        nodes,
        bookings_per_sec: bookings as f64 / elapsed,
        hold_p50_ms: percentile(&holds, 0.50),
        hold_p99_ms: percentile(&holds, 0.99),
        lag_p50_ms: percentile(&lags, 0.50),
        lag_p99_ms: percentile(&lags, 0.99),
        lag_max_ms: lags.last().copied().unwrap_or(f64::NAN),
    })
}
