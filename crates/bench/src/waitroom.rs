//! `marquee-bench waitroom`: the waiting room under a million fans.
//!
//! 1. **In-process, through the block's own API** (no HTTP): a million fans join the pre-queue
//!    of one room (joins/s), the room opens (the draw of a million places, timed), then random
//!    position lookups by token (lookups/s), and the memory the room holds — its own
//!    accounting and the process's RSS growth, which includes the allocator's slack. A second
//!    room takes a million first-come joins after opening.
//! 2. **Redis**: the same joins and lookups through `RedisWaitingRoom` from many concurrent
//!    tasks, beside `redis-benchmark` on the same server in the same run (`SET`, and `ZADD`
//!    into one sorted set, the cheapest command a join contains).
//! 3. **Redis, several nodes**: `nodes` OS processes (this binary's hidden `waitroom-node`
//!    subcommand), each with its own `RedisWaitingRoom` batching its joins, join one hot room at
//!    once; total joins/s from the first "go" to the last process done, then `redis-benchmark`'s
//!    `ZADD` on the same server as the anchor.
//! 4. **HTTP**: joins over `POST /api/v1/events/{id}/queue` against a node in this process,
//!    each from its own signed-in fan.
//!
//! Clients run in the same process as what they measure, on the same two cores: figures are
//! what one machine does end to end, not what a server alone could reach.

use crate::search::current_rss_bytes;
use anyhow::Context;
use marquee::{Server, ServerConfig};
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{Role, UserId};
use marquee_waitroom::{
    InProcessWaitingRoom, RedisWaitingRoom, RoomConfig, RoomSigner, RoomTimings, WaitingRoom,
};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ulid::Ulid;

const SECRET: &str = "waiting-room-bench-secret-of-32-bytes-or-more";
const OPEN: u64 = 1_900_000_000_000;

pub struct WaitroomBench {
    pub fans: usize,
    pub lookups: usize,
    pub redis_url: Option<String>,
    pub redis_fans: usize,
    pub http_fans: usize,
    pub concurrency: usize,
    /// Most joins per script call (1: no batching).
    pub max_join_batch: usize,
    /// Processes joining one hot Redis room (0 to skip).
    pub nodes: usize,
    /// Fans each of those processes joins.
    pub node_fans: usize,
    /// Concurrent joining tasks in each of those processes.
    pub node_concurrency: usize,
}

#[derive(Debug, Default)]
pub struct InProcessReport {
    pub fans: usize,
    pub prequeue_joins_per_sec: f64,
    pub opening_draw_ms: f64,
    pub lookups_per_sec: f64,
    pub room_bytes: usize,
    pub rss_growth_bytes: u64,
    pub fifo_joins_per_sec: f64,
}

#[derive(Debug, Default)]
pub struct RedisReport {
    pub fans: usize,
    pub concurrency: usize,
    pub joins_per_sec: f64,
    pub lookups_per_sec: f64,
    pub redis_memory_growth_bytes: u64,
    pub redis_benchmark_set: Option<f64>,
    pub redis_benchmark_zadd: Option<f64>,
    /// `JOIN` script calls that carried the joins.
    pub join_calls: u64,
}

#[derive(Debug, Default)]
pub struct NodesReport {
    pub nodes: usize,
    pub fans_per_node: usize,
    pub concurrency_per_node: usize,
    pub max_join_batch: usize,
    pub joins: u64,
    pub joins_per_sec: f64,
    /// Each process's own joins/s over its own run.
    pub per_node_joins_per_sec: Vec<f64>,
    pub join_calls: u64,
    /// Places in the room afterwards (waiting + admitted): must equal the joins.
    pub places: u64,
    pub redis_benchmark_zadd: Option<f64>,
}

#[derive(Debug, Default)]
pub struct HttpReport {
    pub fans: usize,
    pub concurrency: usize,
    pub joins_per_sec: f64,
    pub refused: u64,
}

#[derive(Debug, Default)]
pub struct WaitroomReport {
    pub in_process: Option<InProcessReport>,
    pub redis: Option<RedisReport>,
    pub nodes: Option<NodesReport>,
    pub http: Option<HttpReport>,
}

fn config(event: Ulid) -> RoomConfig {
    RoomConfig {
        event,
        opens_at: OPEN,
        join_from: 0,
        admit_per_minute: 600,
        pass_ttl_ms: 900_000,
        max_active: None,
        closes_at: OPEN + 86_400_000,
    }
}

fn timings() -> RoomTimings {
    // Nobody is swept during the run: the bench measures joins and lookups, not abandonment.
    RoomTimings {
        idle_timeout: Duration::from_secs(86_400),
        quiet_period: Duration::from_secs(86_400),
    }
}

pub async fn run_waitroom(bench: &WaitroomBench) -> anyhow::Result<WaitroomReport> {
    let mut report = WaitroomReport::default();
    if bench.fans > 0 {
        report.in_process = Some(in_process(bench).await?);
    }
    if let Some(url) = &bench.redis_url {
        if bench.redis_fans > 0 {
            report.redis = Some(on_redis(bench, url).await?);
        }
        if bench.nodes > 0 {
            report.nodes = Some(on_redis_nodes(bench, url).await?);
        }
    }
    if bench.http_fans > 0 {
        report.http = Some(over_http(bench).await?);
    }
    Ok(report)
}

/// Joins `fans` through `room`, from `tasks` concurrent tasks; returns joins per second.
async fn join_all(
    room: &Arc<dyn WaitingRoom>,
    event: Ulid,
    fans: &Arc<Vec<Ulid>>,
    tasks: usize,
    now: impl Fn(usize) -> u64 + Send + Sync + Copy + 'static,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let room = room.clone();
            let fans = fans.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let config = config(event);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(fan) = fans.get(i) else {
                        return Ok::<_, marquee_waitroom::WaitroomError>(());
                    };
                    room.join(&config, *fan, now(i)).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(fans.len() as f64 / started.elapsed().as_secs_f64())
}

/// `lookups` status calls on random places `0..places`; returns lookups per second.
async fn look_up(
    room: &Arc<dyn WaitingRoom>,
    signer: &RoomSigner,
    event: Ulid,
    places: usize,
    lookups: usize,
    tasks: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per_task = lookups.div_ceil(tasks);
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let room = room.clone();
            let signer = signer.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(task as u64);
                for _ in 0..per_task {
                    let seq = rng.gen_range(0..places) as u64;
                    room.status(&signer.token(event, seq), OPEN + 1).await?;
                }
                Ok::<_, marquee_waitroom::WaitroomError>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok((per_task * tasks) as f64 / started.elapsed().as_secs_f64())
}

async fn in_process(bench: &WaitroomBench) -> anyhow::Result<InProcessReport> {
    let signer = RoomSigner::new(SECRET.as_bytes());
    let fans: Arc<Vec<Ulid>> = Arc::new((0..bench.fans).map(|_| Ulid::new()).collect());
    let concrete = Arc::new(InProcessWaitingRoom::new(signer.clone(), timings()));
    let room: Arc<dyn WaitingRoom> = concrete.clone();
    let event = Ulid::new();
    let rss_before = current_rss_bytes();
    println!("in-process: {} fans join the pre-queue", bench.fans);
    let prequeue_joins_per_sec = join_all(&room, event, &fans, 2, |_| OPEN - 1).await?;
    let started = Instant::now();
    room.tick(event, OPEN).await?;
    let opening_draw_ms = started.elapsed().as_secs_f64() * 1000.0;
    let room_bytes = concrete.memory_bytes();
    let rss_growth_bytes = current_rss_bytes().saturating_sub(rss_before);
    println!("in-process: {} position lookups", bench.lookups);
    let lookups_per_sec = look_up(&room, &signer, event, bench.fans, bench.lookups, 2).await?;
    drop(room);
    drop(concrete);

    println!("in-process: {} first-come joins after opening", bench.fans);
    let room: Arc<dyn WaitingRoom> = Arc::new(InProcessWaitingRoom::new(signer.clone(), timings()));
    // A room that admits nobody during the run, so every join queues.
    let fifo_joins_per_sec =
        join_all(&room, Ulid::new(), &fans, 2, |i| OPEN + 1 + i as u64 / 1000).await?;
    Ok(InProcessReport {
        fans: bench.fans,
        prequeue_joins_per_sec,
        opening_draw_ms,
        lookups_per_sec,
        room_bytes,
        rss_growth_bytes,
        fifo_joins_per_sec,
    })
}

async fn redis_used_memory(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}

async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `redis-benchmark` requests per second for `command` (e.g. `-t set`), or None if absent.
fn redis_benchmark(args: &[&str], clients: usize, requests: usize) -> Option<f64> {
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-q",
            "-n",
            &requests.to_string(),
            "-c",
            &clients.to_string(),
        ])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // The summary ("ZADD benchz …: 123456.79 requests per second") is the last line with a rate.
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .filter(|window| window[1] == "requests" && window[2] == "per")
        .filter_map(|window| window[0].parse().ok())
        .next_back()
}

async fn on_redis(bench: &WaitroomBench, url: &str) -> anyhow::Result<RedisReport> {
    let signer = RoomSigner::new(SECRET.as_bytes());
    let prefix = format!("bench:{}", Ulid::new());
    let concrete = Arc::new(
        RedisWaitingRoom::connect_batching(
            url,
            &prefix,
            signer.clone(),
            timings(),
            bench.max_join_batch,
        )
        .await
        .context("connecting to Redis")?,
    );
    let room: Arc<dyn WaitingRoom> = concrete.clone();
    let fans: Arc<Vec<Ulid>> = Arc::new((0..bench.redis_fans).map(|_| Ulid::new()).collect());
    let event = Ulid::new();
    let memory_before = redis_used_memory(url).await?;
    println!(
        "redis: {} fans join from {} tasks",
        bench.redis_fans, bench.concurrency
    );
    let joins_per_sec = join_all(&room, event, &fans, bench.concurrency, |i| {
        OPEN + 1 + i as u64 / 1000
    })
    .await?;
    let join_calls = concrete.join_batches().calls;
    let redis_memory_growth_bytes = redis_used_memory(url).await?.saturating_sub(memory_before);
    println!("redis: {} position lookups", bench.lookups.min(200_000));
    let lookups_per_sec = look_up(
        &room,
        &signer,
        event,
        bench.redis_fans,
        bench.lookups.min(200_000),
        bench.concurrency,
    )
    .await?;
    delete_prefix(url, &prefix).await?;
    println!("redis-benchmark on the same server");
    let requests = bench.redis_fans.max(100_000);
    let redis_benchmark_set = redis_benchmark(&["-t", "set"], bench.concurrency, requests);
    let redis_benchmark_zadd = redis_benchmark_zadd(url, bench.concurrency, requests).await;
    Ok(RedisReport {
        fans: bench.redis_fans,
        concurrency: bench.concurrency,
        joins_per_sec,
        lookups_per_sec,
        redis_memory_growth_bytes,
        redis_benchmark_set,
        redis_benchmark_zadd,
        join_calls,
    })
}

/// `ZADD` into one sorted set, the cheapest command a join contains: `redis-benchmark`'s rate
/// from `clients` connections, or None if it is absent.
async fn redis_benchmark_zadd(url: &str, clients: usize, requests: usize) -> Option<f64> {
    let zkey = format!("bench:{}:zadd", Ulid::new());
    let rate = redis_benchmark(
        &[
            "-r",
            "100000000",
            "zadd",
            &zkey,
            "__rand_int__",
            "__rand_int__",
        ],
        clients,
        requests,
    );
    // The key is the bench's own; failing to delete it only leaves a few MiB behind.
    if let Err(error) = delete_prefix(url, &zkey).await {
        eprintln!("could not delete {zkey}: {error:#}");
    }
    rate
}

/// What one `waitroom-node` process is told to do.
#[derive(Debug, Clone)]
pub struct NodeTask {
    pub redis_url: String,
    pub prefix: String,
    pub event: Ulid,
    pub fans: usize,
    pub concurrency: usize,
    pub max_join_batch: usize,
}

/// The hidden `waitroom-node` subcommand: one node of [`on_redis_nodes`]. It connects, joins a
/// warm-up fan (loading the script and the room secret, so the timed run starts warm), prints
/// `ready`, waits for a line on stdin, joins its fans from `concurrency` tasks and prints
/// `done <joins> <seconds> <calls>`.
pub async fn run_node(task: NodeTask) -> anyhow::Result<()> {
    let concrete = Arc::new(
        RedisWaitingRoom::connect_batching(
            &task.redis_url,
            &task.prefix,
            RoomSigner::new(SECRET.as_bytes()),
            timings(),
            task.max_join_batch,
        )
        .await
        .context("connecting to Redis")?,
    );
    let room: Arc<dyn WaitingRoom> = concrete.clone();
    let fans: Arc<Vec<Ulid>> = Arc::new((0..task.fans).map(|_| Ulid::new()).collect());
    room.join(&config(task.event), Ulid::new(), OPEN + 1)
        .await
        .context("warm-up join")?;
    let calls_before = concrete.join_batches().calls;
    println!("ready");
    std::io::stdout().flush()?;
    let read =
        tokio::task::spawn_blocking(|| std::io::stdin().lock().read_line(&mut String::new()))
            .await??;
    // End of input instead of "go": the parent gave up, so do not load its Redis.
    anyhow::ensure!(read > 0, "the bench ended before the run started");
    let started = Instant::now();
    join_all(&room, task.event, &fans, task.concurrency, |i| {
        OPEN + 1 + i as u64 / 1000
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "done {} {seconds} {}",
        fans.len(),
        concrete.join_batches().calls - calls_before
    );
    std::io::stdout().flush()?;
    Ok(())
}

/// A `waitroom-node` child: its stdin (the "go" line) and its stdout's lines.
struct NodeProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// A child left running when the bench fails is ended, so no stray process keeps loading Redis.
impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl NodeProcess {
    fn expect_line(&mut self, starts: &str) -> anyhow::Result<String> {
        let line = self.lines.next().context("a node process ended early")??;
        anyhow::ensure!(
            line.starts_with(starts),
            "a node process said {line:?}, not {starts:?}"
        );
        Ok(line)
    }
}

/// `bench.nodes` processes, each its own `RedisWaitingRoom`, join one hot room at once.
async fn on_redis_nodes(bench: &WaitroomBench, url: &str) -> anyhow::Result<NodesReport> {
    let prefix = format!("bench:{}", Ulid::new());
    let event = Ulid::new();
    let exe = std::env::current_exe().context("locating the bench binary")?;
    println!(
        "redis, {} node processes: {} fans each from {} tasks into one room",
        bench.nodes, bench.node_fans, bench.node_concurrency
    );
    let mut nodes = Vec::new();
    for _ in 0..bench.nodes {
        let mut child = Command::new(&exe)
            .arg("waitroom-node")
            .args(["--redis-url", url, "--prefix", &prefix])
            .args(["--event", &event.to_string()])
            .args(["--fans", &bench.node_fans.to_string()])
            .args(["--concurrency", &bench.node_concurrency.to_string()])
            .args(["--max-join-batch", &bench.max_join_batch.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a waitroom-node process")?;
        let stdin = child.stdin.take().context("the node's stdin")?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        nodes.push(NodeProcess {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }
    // Blocking reads and writes on the children's pipes, off the runtime's workers.
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        for node in &mut nodes {
            node.expect_line("ready")?;
        }
        let started = Instant::now();
        for node in &mut nodes {
            node.stdin.write_all(b"go\n")?;
            node.stdin.flush()?;
        }
        let mut done = Vec::new();
        for node in &mut nodes {
            let line = node.expect_line("done")?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parse = |i: usize| -> anyhow::Result<f64> {
                fields
                    .get(i)
                    .and_then(|field| field.parse().ok())
                    .with_context(|| format!("a node's report {line:?}"))
            };
            done.push((parse(1)? as u64, parse(2)?, parse(3)? as u64));
        }
        let elapsed = started.elapsed().as_secs_f64();
        for node in &mut nodes {
            let status = node.child.wait()?;
            anyhow::ensure!(status.success(), "a node process failed: {status}");
        }
        Ok((done, elapsed))
    })
    .await??;
    let (done, elapsed) = outcome;
    let joins: u64 = done.iter().map(|(joins, _, _)| joins).sum();
    let join_calls: u64 = done.iter().map(|(_, _, calls)| calls).sum();
    // The room must hold every fan exactly once: the warm-up fans too.
    let checker =
        RedisWaitingRoom::connect(url, &prefix, RoomSigner::new(SECRET.as_bytes()), timings())
            .await
            .context("connecting to Redis")?;
    let stats = checker
        .stats(event, OPEN + 1)
        .await?
        .context("the hot room is missing")?;
    let places = stats.waiting + stats.admitted_total;
    anyhow::ensure!(
        places == joins + bench.nodes as u64,
        "the room holds {places} places after {joins} joins and {} warm-up joins",
        bench.nodes
    );
    delete_prefix(url, &prefix).await?;
    println!("redis-benchmark ZADD on the same server");
    let redis_benchmark_zadd =
        redis_benchmark_zadd(url, bench.concurrency, (joins as usize).max(100_000)).await;
    Ok(NodesReport {
        nodes: bench.nodes,
        fans_per_node: bench.node_fans,
        concurrency_per_node: bench.node_concurrency,
        max_join_batch: bench.max_join_batch,
        joins,
        joins_per_sec: joins as f64 / elapsed,
        per_node_joins_per_sec: done
            .iter()
            .map(|(joins, seconds, _)| *joins as f64 / seconds)
            .collect(),
        join_calls,
        places,
        redis_benchmark_zadd,
    })
}

async fn over_http(bench: &WaitroomBench) -> anyhow::Result<HttpReport> {
    let data_dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir.path().into());
    config.jwt_secret = Some(SECRET.to_string());
    config.queue.joins_per_ip_per_minute = u32::MAX;
    config.queue.joins_per_user_per_minute = u32::MAX;
    config.queue_timings = timings();
    let server = Server::start(config).await?;
    let url = server.url();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.concurrency + 16)
        .build()?;
    let issuer = TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec())?,
        Duration::from_secs(7200),
    );
    let organizer = marquee_domain::User {
        id: UserId::generate(),
        email: marquee_domain::Email::parse("organizer@bench.test").map_err(anyhow::Error::msg)?,
        name: marquee_domain::DisplayName::parse("Bench").map_err(anyhow::Error::msg)?,
        role: Role::Organizer,
        created_at: marquee_domain::timestamp_now(),
    };
    server.state.store.create_user(&organizer, "unused").await?;
    let organizer_token = issuer.issue(&organizer.id, Role::Organizer)?;
    let venue = crate::product::post_json(
        &client,
        &url,
        "/api/v1/venues",
        &organizer_token,
        &json!({"name": "Bench Arena", "city": "Leeds", "country": "GB", "lat": 53.8,
                      "lon": -1.55, "sections": [{"name": "Floor", "capacity": 50000}]}),
    )
    .await?;
    // On sale in a day: every join lands in the pre-queue.
    let on_sale = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let event_id = crate::product::publish_event(
        &client,
        &url,
        &organizer_token,
        &json!({"title": "Bench Night", "venue_id": venue["id"], "category": "concert",
                      "starts_at": "2031-01-01T20:00:00Z", "on_sale_at": on_sale,
                      "price_tiers": [{"name": "Floor", "price_cents": 5000, "currency": "GBP",
                                       "sections": ["Floor"]}],
                      "waiting_room": {"enabled": true}}),
    )
    .await?;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..bench.http_fans)
            .map(|_| issuer.issue(&UserId::generate(), Role::Fan))
            .collect::<Result<_, _>>()?,
    );
    println!(
        "http: {} fans join from {} connections",
        bench.http_fans, bench.concurrency
    );
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let join_url = Arc::new(format!("{url}/api/v1/events/{event_id}/queue"));
    let started = Instant::now();
    let workers: Vec<_> = (0..bench.concurrency)
        .map(|_| {
            let client = client.clone();
            let tokens = tokens.clone();
            let next = next.clone();
            let refused = refused.clone();
            let join_url = join_url.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(token) = tokens.get(i) else {
                        return;
                    };
                    let ok = client
                        .post(join_url.as_str())
                        .bearer_auth(token)
                        .send()
                        .await
                        .map(|response| response.status() == reqwest::StatusCode::CREATED)
                        .unwrap_or(false);
                    if !ok {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let joins_per_sec = bench.http_fans as f64 / started.elapsed().as_secs_f64();
    server.shutdown().await?;
    Ok(HttpReport {
        fans: bench.http_fans,
        concurrency: bench.concurrency,
        joins_per_sec,
        refused: refused.load(Ordering::Relaxed),
    })
}
