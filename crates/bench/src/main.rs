//! `marquee-bench`: the load runs and their peers (see BENCHMARKS.md), kept out of the product.
//!
//! Each run drives the product's own crates as a library (a node started in this process) or
//! the `marquee` binary built beside this one as child processes (`MARQUEE_BIN` to choose
//! another), beside a well-known peer on the same machine in the same run: `redis-benchmark`,
//! `pgbench`, nginx (with nchan or rtmp), RabbitMQ, PostgreSQL full-text search.
//!
//! Runs that need PostgreSQL make a database of their own on the server they are given and drop
//! it after (see [`product::ScratchDatabase`]); they never read the node's `MARQUEE_*` settings,
//! so a bench started on an operator's host cannot touch the production database by accident.
//!
//! Dependencies that only the benchmarks need (lapin for RabbitMQ, m3u8-rs for players'
//! playlists) live here and nowhere in the product.

mod booking;
mod cache;
mod cluster;
mod gateway;
mod jobs;
mod live;
mod product;
mod push;
mod push_nodes;
mod search;
mod search_data;
mod search_pg;
mod waitroom;

use clap::{Args, Parser, Subcommand};
use product::ScratchDatabase;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Marquee's benchmarks: each beside a well-known peer, on the same machine, in the same run.
#[derive(Debug, Parser)]
#[command(name = "marquee-bench", version, max_term_width = 100)]
struct Cli {
    /// Which logs to keep, in RUST_LOG syntax.
    #[arg(long, env = "MARQUEE_BENCH_LOG", default_value = "warn", global = true)]
    log_filter: String,
    /// Work inside the PostgreSQL database the URL names (making and dropping schemas there)
    /// instead of a database of the run's own. Only for a database that is yours to damage.
    #[arg(long, global = true)]
    use_existing_database: bool,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Holds and orders on one contended event, for each lease backend, beside
    /// `redis-benchmark -t set` as the anchor.
    Booking(BookingArgs),
    /// Search: indexing, fuzzy + geo and "near me" queries, update to visible, size and memory,
    /// beside PostgreSQL full-text search + pg_trgm + PostGIS on the same data.
    Search(SearchBenchArgs),
    /// SSE push: idle connections held (memory each) and one hot channel fanned out, against
    /// a `marquee serve` child process and nginx + nchan with the same client.
    Push(PushBenchArgs),
    /// Push across nodes: the bytes each node receives from Redis with its subscribers' channels
    /// spread over the nodes, and with every node following every channel.
    PushNodes(PushNodesArgs),
    /// The gateway beside nginx as a reverse proxy in front of the same node: peak requests/s
    /// with wrk and added p50/p99 at a fixed rate.
    Gateway(GatewayBenchArgs),
    /// The waiting room: a million fans through the block's own API (joins/s, lookups/s,
    /// memory), the Redis room beside `redis-benchmark`, and joins over HTTP.
    Waitroom(WaitroomBenchArgs),
    /// One node of `waitroom --nodes N` (started by it, not by hand).
    #[command(hide = true)]
    WaitroomNode(WaitroomNodeArgs),
    /// Many nodes: bookings/s with one, two and three `marquee serve` processes over the same
    /// PostgreSQL, Redis and NATS, on one hot event and on 30 events, the CPU time of every
    /// process, and the change stream's lag from a commit to every node, beside pgbench.
    Cluster(ClusterBenchArgs),
    /// The surge end to end: fans through a waiting room, holding with the pass and paying, on
    /// three nodes behind a gateway, at capacity and at twice it (plus fans without a pass
    /// hammering holds): admissions/s, bookings/s, p50/p99 per step, shed tries, beside pgbench.
    Surge(SurgeBenchArgs),
    /// Cache policies: hit ratio of LRU, LFU, FIFO and TinyLFU on a Zipf(1.0) trace at 1%, 5%
    /// and 10% of the key space.
    Cache(CacheBenchArgs),
    /// Jobs: end-to-end, enqueue-only and drain-only jobs/s of the jobs block on SQLite and on
    /// PostgreSQL (with and without ordering keys), beside RabbitMQ and JetStream moving the
    /// same messages.
    Jobs(JobsBenchArgs),
    /// Live streaming: glass-to-glass latency beside nginx-rtmp fed the same stream, the
    /// transcoder's CPU per rendition, and segment requests/s from the origin beside nginx
    /// serving the same files.
    Live(LiveBenchArgs),
}

#[derive(Debug, Args)]
struct LiveBenchArgs {
    /// How the publisher reaches the node: `rtmp` or `srt` (nginx-rtmp always gets RTMP).
    #[arg(long, default_value = "rtmp", value_parser = ["rtmp", "srt"])]
    ingest: String,
    /// Length of the show.
    #[arg(long, default_value_t = 40)]
    seconds: u32,
    /// Frames per second of the source.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Source size.
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// x264 preset of the renditions.
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// wrk connections for segment serving.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Length of each segment-serving run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    serve_duration: Duration,
    /// Interleaved segment-serving rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Serve media on the node's lean HTTP/1.1 path (`false` measures it through hyper and
    /// the router, as `--media-lean-http false` would serve it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    media_lean_http: bool,
}

#[derive(Debug, Args)]
struct JobsBenchArgs {
    /// Messages (jobs) moved by each system in each pass.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Rounds; the table shows each figure's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Messages per enqueue call (at most 1,000) and per batch of confirmed publishes.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Jobs each Marquee worker runs at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Workers on PostgreSQL, each with its own connection pool, as that many nodes would be.
    #[arg(long, default_value_t = 4)]
    pg_nodes: usize,
    /// Distinct ordering keys in the keyed runs.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// RabbitMQ's prefetch and JetStream's pull batch.
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Only these systems (sqlite, sqlite-keyed, postgres, postgres-keyed, rabbitmq,
    /// jetstream); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The PostgreSQL server for the scale-out runs (in a database the run makes, see
    /// `--use-existing-database`); `none` skips them.
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The RabbitMQ peer; `none` skips it.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The JetStream peer; `none` skips it.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

#[derive(Debug, Args)]
struct CacheBenchArgs {
    /// Distinct keys in the trace.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Accesses in the trace.
    #[arg(long, default_value_t = 2_000_000)]
    accesses: u64,
    /// The Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    exponent: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, Args)]
struct ClusterBenchArgs {
    /// The largest cluster; runs go from one node up to it.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent fans booking (closed loop).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of each booking run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Holds timed from commit to every node (made at 20 a second).
    #[arg(long, default_value_t = 200)]
    lag_samples: usize,
    /// Fans ask for two best-available seats instead of two of their own (a rush on the front
    /// rows: measures contention rather than capacity).
    #[arg(long)]
    best_available: bool,
    /// One hot event (all fans on it), 30 events (fans spread over them), or both.
    #[arg(long, value_enum, default_value_t = ClusterWorkload::Both)]
    workload: ClusterWorkload,
    /// Interleaved rounds of every workload and node count; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Cap each node at this many cores (its own cgroup CPU quota, 10 ms period) with one
    /// runtime worker thread. Needs root and a cgroup CPU controller.
    #[arg(long)]
    cpu_quota: Option<f64>,
    /// The PostgreSQL server: the run makes a database of its own there (see
    /// `--use-existing-database`).
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    postgres_url: String,
    /// Redis shared by the nodes (each run uses a key prefix of its own).
    #[arg(
        long,
        env = "MARQUEE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// NATS with JetStream shared by the nodes (each run makes a stream of its own).
    #[arg(
        long,
        env = "MARQUEE_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    nats_url: String,
}

#[derive(Debug, Args)]
struct SurgeBenchArgs {
    /// Fans of the run at capacity; the 2× run has twice as many, plus a third as many without
    /// a pass.
    #[arg(long, default_value_t = 600)]
    fans: usize,
    /// Admissions a second of the waiting room at capacity (twice it at 2×).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Every node's `--booking-max-in-flight`; the product's default when absent.
    #[arg(long)]
    booking_max_in_flight: Option<usize>,
    /// Rounds of both runs, each followed by pgbench; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// pgbench's clients and run length.
    #[arg(long, default_value_t = 64)]
    pgbench_clients: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pgbench_duration: Duration,
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    postgres_url: String,
    #[arg(
        long,
        env = "MARQUEE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    #[arg(
        long,
        env = "MARQUEE_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    nats_url: String,
}

#[derive(Debug, Args)]
struct GatewayBenchArgs {
    /// Length of each timed run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// wrk connections (the same for every target).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Interleaved rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Fixed rate of the latency phase (default: half the lower proxy peak).
    #[arg(long)]
    rate: Option<u64>,
    /// Path requested from the node.
    #[arg(long, default_value = "/healthz")]
    path: String,
}

#[derive(Debug, Args)]
struct WaitroomBenchArgs {
    /// Fans queued in-process.
    #[arg(long, default_value_t = 1_000_000)]
    fans: usize,
    /// Position lookups timed (in-process; at most 200,000 on Redis).
    #[arg(long, default_value_t = 1_000_000)]
    lookups: usize,
    /// Redis for the scale-out room (`none` to skip).
    #[arg(
        long,
        env = "MARQUEE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Fans queued on Redis.
    #[arg(long, default_value_t = 200_000)]
    redis_fans: usize,
    /// Fans joining over HTTP (0 to skip).
    #[arg(long, default_value_t = 50_000)]
    http_fans: usize,
    /// Concurrent tasks for Redis and connections for HTTP.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Most joins into one room per Redis script call (1: every join its own call).
    #[arg(long, default_value_t = marquee_waitroom::DEFAULT_MAX_JOIN_BATCH)]
    max_join_batch: usize,
    /// Node processes joining one hot Redis room at once (0 to skip).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Fans each node process joins.
    #[arg(long, default_value_t = 200_000)]
    node_fans: usize,
    /// Concurrent joining tasks in each node process (a node's concurrent requests).
    #[arg(long, default_value_t = 512)]
    node_concurrency: usize,
}

#[derive(Debug, Args)]
struct WaitroomNodeArgs {
    #[arg(long)]
    redis_url: String,
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    event: ulid::Ulid,
    #[arg(long)]
    fans: usize,
    #[arg(long)]
    concurrency: usize,
    #[arg(long)]
    max_join_batch: usize,
}

#[derive(Debug, Args)]
struct SearchBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Timed queries of each kind (as many again warm the caches first).
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Timed update-to-visible rounds.
    #[arg(long, default_value_t = 50)]
    updates: usize,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// The PostgreSQL server of the peer (needs `postgresql-15-postgis-3`; in a database the
    /// run makes, see `--use-existing-database`); `none` skips it.
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
}

#[derive(Debug, Args)]
struct PushBenchArgs {
    /// Idle SSE connections to hold (the process limit here is 20,000 open files).
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// Subscribers of the hot channel.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Messages published on the hot channel.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Messages published per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Skip the nginx + nchan run.
    #[arg(long)]
    no_nchan: bool,
}

#[derive(Debug, Args)]
struct PushNodesArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 1_000)]
    channels: usize,
    /// Messages published on every channel.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Bytes of data in each message.
    #[arg(long, default_value_t = 200)]
    data_bytes: usize,
    /// `redis://…` or `redis+cluster://seed,…`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Debug, Args)]
struct BookingArgs {
    /// Concurrent fans in the closed loop and in the order burst.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Length of each timed phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Offered hold attempts per second in the open-loop phase.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Also run with Redis leases on this server.
    #[arg(long, env = "MARQUEE_BENCH_REDIS_URL")]
    redis_url: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ClusterWorkload {
    Hot,
    Spread,
    Both,
}

impl ClusterWorkload {
    fn workloads(self) -> Vec<cluster::Workload> {
        match self {
            ClusterWorkload::Hot => vec![cluster::Workload::Hot],
            ClusterWorkload::Spread => vec![cluster::Workload::Spread],
            ClusterWorkload::Both => vec![cluster::Workload::Hot, cluster::Workload::Spread],
        }
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|error| format!("{error} (try `90s`, `10m`, `1h`)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    marquee_telemetry::init_logging(marquee_telemetry::LogFormat::Pretty, &cli.log_filter)?;
    match cli.command {
        BenchCommand::Booking(args) => bench_booking(args).await,
        BenchCommand::Push(args) => bench_push(args).await,
        BenchCommand::PushNodes(args) => bench_push_nodes(args).await,
        BenchCommand::Search(args) => bench_search(args, cli.use_existing_database).await,
        BenchCommand::Waitroom(args) => bench_waitroom(args).await,
        BenchCommand::WaitroomNode(args) => {
            waitroom::run_node(waitroom::NodeTask {
                redis_url: args.redis_url,
                prefix: args.prefix,
                event: args.event,
                fans: args.fans,
                concurrency: args.concurrency.max(1),
                max_join_batch: args.max_join_batch,
            })
            .await
        }
        BenchCommand::Gateway(args) => bench_gateway(args).await,
        BenchCommand::Cache(args) => bench_cache(args),
        BenchCommand::Jobs(args) => jobs::run(args, cli.use_existing_database).await,
        BenchCommand::Live(args) => {
            let bench = live::LiveBench {
                ingest: match args.ingest.as_str() {
                    "srt" => live::Ingest::Srt,
                    _ => live::Ingest::Rtmp,
                },
                seconds: args.seconds.clamp(10, 3_600),
                fps: args.fps.clamp(1, 60),
                size: args.size,
                preset: args.preset,
                connections: args.connections.max(1),
                serve_duration: args.serve_duration,
                rounds: args.rounds.max(1),
                media_lean_http: args.media_lean_http,
            };
            let report = live::run_live_bench(&bench).await?;
            live::print_report(&bench, &report);
            Ok(())
        }
        BenchCommand::Cluster(args) => {
            let database =
                ScratchDatabase::create(&args.postgres_url, cli.use_existing_database).await?;
            let bench = cluster::ClusterBench {
                max_nodes: args.nodes.clamp(1, 8),
                workloads: args.workload.workloads(),
                rounds: args.rounds.max(1),
                clients: args.clients.max(1),
                duration: args.duration,
                lag_samples: args.lag_samples.max(10),
                best_available: args.best_available,
                cpu_quota: args.cpu_quota,
                database_url: database.url.clone(),
                redis_url: args.redis_url,
                nats_url: args.nats_url,
            };
            let outcome = cluster::run_cluster(&bench).await.map(|_| ());
            database.drop_database().await?;
            outcome
        }
        BenchCommand::Surge(args) => {
            let database =
                ScratchDatabase::create(&args.postgres_url, cli.use_existing_database).await?;
            let bench = cluster::surge::SurgeBench {
                cluster: cluster::ClusterBench {
                    max_nodes: 3,
                    workloads: Vec::new(),
                    rounds: args.rounds.max(1),
                    clients: args.pgbench_clients.max(1),
                    duration: args.pgbench_duration,
                    lag_samples: 0,
                    best_available: false,
                    cpu_quota: None,
                    database_url: database.url.clone(),
                    redis_url: args.redis_url,
                    nats_url: args.nats_url,
                },
                fans: args.fans.max(3),
                rate: args.rate.max(1),
                booking_max_in_flight: args.booking_max_in_flight,
            };
            let outcome = cluster::surge::run_surge(&bench).await.map(|_| ());
            database.drop_database().await?;
            outcome
        }
    }
}

fn bench_cache(args: CacheBenchArgs) -> anyhow::Result<()> {
    use crate::cache::{run_cache_bench, CacheBench};
    let results = run_cache_bench(&CacheBench {
        keys: args.keys,
        accesses: args.accesses,
        exponent: args.exponent,
        seed: args.seed,
    })?;
    println!(
        "Zipf({}) over {} keys, {} accesses (seed {})",
        args.exponent, args.keys, args.accesses, args.seed
    );
    println!(
        "{:>6} {:>9} {:>9} {:>10} {:>14}",
        "size", "capacity", "policy", "hit ratio", "accesses/s"
    );
    for result in &results {
        println!(
            "{:>5}% {:>9} {:>9} {:>10.4} {:>14.0}",
            result.percent,
            result.capacity,
            result.policy.name(),
            result.ratio,
            result.accesses_per_second
        );
    }
    Ok(())
}

async fn bench_gateway(args: GatewayBenchArgs) -> anyhow::Result<()> {
    use crate::gateway::{median, run_gateway_bench, GatewayBench};
    let report = run_gateway_bench(&GatewayBench {
        duration: args.duration,
        connections: args.connections,
        rounds: args.rounds.max(1),
        rate: args.rate,
        path: args.path,
    })
    .await?;
    let direct = &report.targets[0];
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "target", "peak req/s", "p50 ms", "p99 ms", "added p50", "added p99"
    );
    for target in &report.targets {
        println!(
            "{:<16} {:>12.0} {:>10.3} {:>10.3} {:>12.3} {:>12.3}",
            target.name,
            median(&target.peak_rps),
            median(&target.p50_ms),
            median(&target.p99_ms),
            median(&target.p50_ms) - median(&direct.p50_ms),
            median(&target.p99_ms) - median(&direct.p99_ms),
        );
    }
    println!(
        "latency at {} req/s; peaks per round: {}",
        report.rate,
        report
            .targets
            .iter()
            .map(|t| format!(
                "{} {:?}",
                t.name,
                t.peak_rps.iter().map(|r| r.round()).collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let ratio = median(&report.targets[1].peak_rps) / median(&report.targets[2].peak_rps);
    println!("gateway / nginx peak throughput: {ratio:.2}");
    Ok(())
}

async fn bench_search(args: SearchBenchArgs, use_existing_database: bool) -> anyhow::Result<()> {
    use crate::search::{run_search, EngineReport, SearchBench};
    let database = match args.postgres_url.as_str() {
        "none" => None,
        url => Some(ScratchDatabase::create(url, use_existing_database).await?),
    };
    let outcome = run_search(&SearchBench {
        events: args.events,
        queries: args.queries,
        updates: args.updates,
        seed: args.seed,
        postgres_url: database.as_ref().map(|database| database.url.clone()),
    })
    .await;
    if let Some(database) = database {
        database.drop_database().await?;
    }
    let report = outcome?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("\nsearch over {} events", report.events);
    println!(
        "{:<36} {:>10} {:>22} {:>22} {:>12} {:>16} {:>10}",
        "engine",
        "docs/s",
        "fuzzy+geo p50/p99 ms",
        "near-me p50/p99 ms",
        "fuzzy q/s",
        "update p50/p95",
        "size MiB"
    );
    let row = |r: &EngineReport| {
        println!(
            "{:<36} {:>10.0} {:>22} {:>22} {:>12.0} {:>16} {:>10.0}",
            r.engine,
            r.docs_per_sec,
            format!("{:.2} / {:.2}", r.fuzzy_geo.p50_ms, r.fuzzy_geo.p99_ms),
            format!("{:.2} / {:.2}", r.near_me.p50_ms, r.near_me.p99_ms),
            r.fuzzy_geo.per_sec,
            format!(
                "{:.0} / {:.0} ms",
                r.update_visible_p50_ms, r.update_visible_p95_ms
            ),
            mib(r.size_bytes),
        );
        println!(
            "{:<36} indexed in {:.1} s; near-me q/s {:.0}; fuzzy+geo queries with hits {:.0}%",
            "",
            r.index_secs,
            r.near_me.per_sec,
            r.fuzzy_geo_hit_rate * 100.0
        );
    };
    row(&report.marquee);
    if let Some(postgres) = &report.postgres {
        row(postgres);
        let m = &report.marquee;
        println!(
            "ratios marquee/postgresql: docs/s {:.2}, fuzzy+geo p50 {:.3} p99 {:.3} q/s {:.2}, near-me p50 {:.3} p99 {:.3}, update p95 {:.2}, size {:.2}",
            m.docs_per_sec / postgres.docs_per_sec,
            m.fuzzy_geo.p50_ms / postgres.fuzzy_geo.p50_ms,
            m.fuzzy_geo.p99_ms / postgres.fuzzy_geo.p99_ms,
            m.fuzzy_geo.per_sec / postgres.fuzzy_geo.per_sec,
            m.near_me.p50_ms / postgres.near_me.p50_ms,
            m.near_me.p99_ms / postgres.near_me.p99_ms,
            m.update_visible_p95_ms / postgres.update_visible_p95_ms.max(0.001),
            m.size_bytes as f64 / postgres.size_bytes.max(1) as f64,
        );
    }
    println!(
        "bench process memory: {:.0} MiB with the generated events, peak {:.0} MiB while indexing (+{:.0}), {:.0} MiB while querying (events dropped)",
        mib(report.generated_rss_bytes),
        mib(report.peak_rss_bytes),
        mib(report.peak_rss_bytes.saturating_sub(report.generated_rss_bytes)),
        mib(report.query_rss_bytes)
    );
    Ok(())
}

async fn bench_waitroom(args: WaitroomBenchArgs) -> anyhow::Result<()> {
    use crate::waitroom::{run_waitroom, WaitroomBench};
    let report = run_waitroom(&WaitroomBench {
        fans: args.fans,
        lookups: args.lookups,
        redis_url: (args.redis_url != "none").then_some(args.redis_url),
        redis_fans: args.redis_fans,
        http_fans: args.http_fans,
        concurrency: args.concurrency,
        max_join_batch: args.max_join_batch.max(1),
        nodes: args.nodes,
        node_fans: args.node_fans,
        node_concurrency: args.node_concurrency.max(1),
    })
    .await?;
    if let Some(local) = &report.in_process {
        print_in_process(local);
    }
    if let Some(redis) = &report.redis {
        print_redis(redis);
    }
    if let Some(nodes) = &report.nodes {
        println!(
            "\nRedis room, {} node processes × {} fans from {} tasks each, batches of at most {}",
            nodes.nodes, nodes.fans_per_node, nodes.concurrency_per_node, nodes.max_join_batch
        );
        println!("| measure | value |\n|---|---|");
        println!("| total joins/s | {:.0} |", nodes.joins_per_sec);
        let each: Vec<String> = nodes
            .per_node_joins_per_sec
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect();
        println!("| each node's joins/s | {} |", each.join(", "));
        println!(
            "| script calls / joins | {} / {} ({:.1} joins per call) |",
            nodes.join_calls,
            nodes.joins,
            nodes.joins as f64 / nodes.join_calls.max(1) as f64
        );
        println!(
            "| places in the room (joins + warm-ups) | {} |",
            nodes.places
        );
        if let Some(rate) = nodes.redis_benchmark_zadd {
            println!(
                "| redis-benchmark ZADD | {rate:.0} req/s (joins = {:.2}x) |",
                nodes.joins_per_sec / rate
            );
        }
    }
    if let Some(http) = &report.http {
        println!(
            "\nHTTP: {} joins from {} connections: {:.0} joins/s ({} refused)",
            http.fans, http.concurrency, http.joins_per_sec, http.refused
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_in_process(local: &crate::waitroom::InProcessReport) {
    println!("\nin-process room, {} fans", local.fans);
    println!("| measure | value |\n|---|---|");
    println!(
        "| pre-queue joins/s | {:.0} |",
        local.prequeue_joins_per_sec
    );
    println!(
        "| opening draw of {} places | {:.0} ms |",
        local.fans, local.opening_draw_ms
    );
    println!("| position lookups/s | {:.0} |", local.lookups_per_sec);
    println!(
        "| room memory (own accounting) | {:.1} MiB |",
        mib(local.room_bytes as u64)
    );
    println!(
        "| process RSS growth | {:.1} MiB |",
        mib(local.rss_growth_bytes)
    );
    println!(
        "| first-come joins/s after opening | {:.0} |",
        local.fifo_joins_per_sec
    );
}

fn print_redis(redis: &crate::waitroom::RedisReport) {
    println!(
        "\nRedis room, {} fans from {} tasks",
        redis.fans, redis.concurrency
    );
    println!("| measure | value |\n|---|---|");
    println!("| joins/s | {:.0} |", redis.joins_per_sec);
    println!(
        "| script calls / joins | {} / {} ({:.1} joins per call) |",
        redis.join_calls,
        redis.fans,
        redis.fans as f64 / redis.join_calls.max(1) as f64
    );
    println!("| position lookups/s | {:.0} |", redis.lookups_per_sec);
    println!(
        "| Redis memory growth | {:.1} MiB |",
        mib(redis.redis_memory_growth_bytes)
    );
    for (name, rate) in [
        ("redis-benchmark SET", redis.redis_benchmark_set),
        ("redis-benchmark ZADD", redis.redis_benchmark_zadd),
    ] {
        if let Some(rate) = rate {
            println!(
                "| {name} | {rate:.0} req/s (joins = {:.2}x) |",
                redis.joins_per_sec / rate
            );
        }
    }
}

async fn bench_push_nodes(args: PushNodesArgs) -> anyhow::Result<()> {
    use crate::push_nodes::{run_push_nodes, PushNodesBench};
    let bench = PushNodesBench {
        nodes: args.nodes,
        channels: args.channels,
        messages: args.messages,
        data_bytes: args.data_bytes,
        redis_url: args.redis_url,
    };
    let receipts = run_push_nodes(&bench).await?;
    let published = (bench.channels * bench.messages) as u64;
    println!(
        "{} nodes, {} channels, {} messages each ({published} messages, {} data bytes each)\n",
        bench.nodes, bench.channels, bench.messages, bench.data_bytes
    );
    println!("| layout | node | channels followed | messages received | of all published | bytes received from Redis | bytes per message |");
    println!("|---|---|---|---|---|---|---|");
    for receipt in &receipts {
        println!(
            "| {} | {} | {} | {} | {:.3} | {} | {:.0} |",
            receipt.layout,
            receipt.node,
            receipt.channels_followed,
            receipt.messages_received,
            receipt.messages_received as f64 / published as f64,
            receipt.bytes_received,
            receipt.bytes_received as f64 / receipt.messages_received.max(1) as f64,
        );
    }
    let total = |layout: &str| -> u64 {
        receipts
            .iter()
            .filter(|receipt| receipt.layout == layout)
            .map(|receipt| receipt.bytes_received)
            .sum()
    };
    println!(
        "\nbytes received by all nodes, spread ÷ everywhere: {:.3}",
        total("spread") as f64 / total("everywhere").max(1) as f64
    );
    Ok(())
}

async fn bench_push(args: PushBenchArgs) -> anyhow::Result<()> {
    use crate::push::{run_push, PushBench};
    let reports = run_push(&PushBench {
        idle: args.idle,
        subscribers: args.subscribers,
        messages: args.messages,
        rate: args.rate,
        with_nchan: !args.no_nchan,
    })
    .await?;
    println!(
        "| server | idle SSE connections | server memory per idle connection | subscribers | delivered / expected | deliveries/s | p50 / p99 delay |"
    );
    println!("|---|---|---|---|---|---|---|");
    for report in &reports {
        println!(
            "| {} | {} | {:.1} KiB | {} | {} / {} | {:.0} | {:.1} ms / {:.1} ms |",
            report.target,
            report.idle_connections,
            report.idle_bytes_per_connection / 1024.0,
            report.subscribers,
            report.delivered,
            report.expected,
            report.deliveries_per_sec,
            report.p50_ms,
            report.p99_ms,
        );
    }
    if let [marquee, nchan] = reports.as_slice() {
        println!(
            "\nmarquee ÷ nchan: deliveries/s {:.2}, p99 {:.2}, memory per idle connection {:.2}",
            marquee.deliveries_per_sec / nchan.deliveries_per_sec.max(1.0),
            marquee.p99_ms / nchan.p99_ms.max(0.001),
            marquee.idle_bytes_per_connection / nchan.idle_bytes_per_connection.max(1.0),
        );
    }
    Ok(())
}

async fn bench_booking(args: BookingArgs) -> anyhow::Result<()> {
    use crate::booking::{redis_set_anchor, run_booking, BookingBench};
    let mut runs = vec![None];
    if let Some(url) = &args.redis_url {
        runs.push(Some(url.clone()));
    }
    let anchor = redis_set_anchor(50);
    println!(
        "| lease backend | hold attempts/s ({} clients) | of which granted/s | p50 / p99 at {}/s offered | confirmed orders/s | redis-benchmark SET/s | attempts/s ÷ SET/s |",
        args.clients, args.rate
    );
    println!("|---|---|---|---|---|---|---|");
    for redis_url in runs {
        let report = run_booking(&BookingBench {
            clients: args.clients,
            duration: args.duration,
            rate: args.rate,
            redis_url,
        })
        .await?;
        let ratio = anchor.map_or("n/a".to_string(), |set| {
            format!("{:.3}", report.hold_attempts_per_sec / set)
        });
        println!(
            "| {} | {:.0} | {:.0} | {:.1} ms / {:.1} ms ({} sent) | {:.0} ({} orders) | {} | {} |",
            report.backend,
            report.hold_attempts_per_sec,
            report.holds_granted_per_sec,
            report.p50_ms,
            report.p99_ms,
            report.open_loop_sent,
            report.orders_per_sec,
            report.orders,
            anchor.map_or("n/a".to_string(), |set| format!("{set:.0}")),
            ratio,
        );
    }
    Ok(())
}
