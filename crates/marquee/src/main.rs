//! `marquee`: the command line. Every setting is a flag and a `MARQUEE_*` environment variable.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use marquee::demo::{SeedOutcome, DEMO_ACCOUNTS};
use marquee::{Server, ServerConfig};
use marquee_domain::{DisplayName, Email, Password, Role, User, UserId};
use marquee_telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod bench_jobs;

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// buffers across threads, and a profile of `marquee bench booking` showed about a tenth of all
/// CPU time in glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Marquee: an open live-events platform. Organizers put on events; fans find them, buy seats
/// fairly, watch seat maps change live, and watch the show.
#[derive(Debug, Parser)]
#[command(
    name = "marquee",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log format: `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    #[arg(long, env = "MARQUEE_LOG_FORMAT", default_value = "auto", global = true,
          value_parser = ["auto", "json", "pretty"])]
    log_format: String,

    /// Which logs to keep, in RUST_LOG syntax.
    #[arg(
        long,
        env = "MARQUEE_LOG",
        default_value = "info,sqlx=warn,tower_http=info,tantivy=warn",
        global = true
    )]
    log_filter: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node of the platform.
    Serve(NodeArgs),
    /// Run a node on a data dir seeded with demo venues, events and accounts.
    Demo(DemoArgs),
    /// Run the gateway: a reverse proxy in front of many nodes (TLS, JWT and roles at the
    /// edge, rate limits, load balancing, health checks, retries).
    Gateway(GatewayArgs),
    /// Administrative tasks that are never exposed over HTTP.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Load runs over HTTP against a node started in this process (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The search index of a data dir.
    #[command(subcommand)]
    Search(SearchCommand),
    /// The jobs queue (e-mail, webhooks, reminders): list, inspect, replay and drop dead
    /// letters, and see each queue's depth.
    Jobs(JobsArgs),
}

#[derive(Debug, Args)]
struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    /// The node's data dir (its `jobs.db`), unless --database-url names PostgreSQL.
    #[arg(
        long,
        env = "MARQUEE_DATA_DIR",
        default_value = "marquee-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The node's PostgreSQL database, where the jobs are kept beside the catalog.
    #[arg(
        long,
        env = "MARQUEE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// ready, running, dead or done.
        #[arg(long, value_parser = parse_job_state)]
        state: Option<marquee_jobs::JobState>,
        /// Only jobs older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// One job in full, as JSON.
    Inspect { id: i64 },
    /// Run dead letters again from their first attempt.
    Replay {
        ids: Vec<i64>,
        /// Every dead letter of this queue, oldest first.
        #[arg(long, conflicts_with = "ids")]
        all: Option<String>,
    },
    /// Delete dead letters.
    Drop {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Each queue's due, scheduled, running and dead jobs, and the oldest due job's wait.
    Stats,
}

fn parse_job_state(raw: &str) -> Result<marquee_jobs::JobState, String> {
    marquee_jobs::JobState::parse(raw)
        .ok_or_else(|| "expected ready, running, dead or done".to_string())
}

async fn jobs_command(args: JobsArgs) -> anyhow::Result<()> {
    use marquee::jobs_cli::JobsAction;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), args.data_dir);
    config.database_url = args.database_url;
    let url = config.jobs_url();
    if url.starts_with("sqlite:") && !config.data_dir.join("jobs.db").exists() {
        anyhow::bail!(
            "no jobs database at {} (is --data-dir the node's?)",
            config.data_dir.join("jobs.db").display()
        );
    }
    let jobs = marquee_jobs::SqlJobQueue::connect(&url, 2)
        .await
        .with_context(|| {
            format!(
                "opening the jobs queue at {}",
                marquee_store::redact_url(&url)
            )
        })?;
    let action = match args.command {
        JobsCommand::List {
            queue,
            state,
            before,
            limit,
        } => JobsAction::List {
            queue,
            state,
            before,
            limit,
        },
        JobsCommand::Inspect { id } => JobsAction::Inspect(id),
        JobsCommand::Replay { ids, all } => {
            if ids.is_empty() && all.is_none() {
                anyhow::bail!("name the jobs to replay, or --all <queue>");
            }
            JobsAction::Replay { ids, all_of: all }
        }
        JobsCommand::Drop { ids } => JobsAction::Drop(ids),
        JobsCommand::Stats => JobsAction::Stats,
    };
    let result = marquee::jobs_cli::run(&jobs, action).await;
    jobs.close().await;
    print!("{}", result?);
    Ok(())
}

#[derive(Debug, Subcommand)]
enum SearchCommand {
    /// Rebuild the search index from the store (stop the node on this data dir first; a
    /// running node resumes from its own index and needs no rebuild).
    Reindex(ReindexArgs),
}

#[derive(Debug, Args)]
struct ReindexArgs {
    /// The node's data dir; the index is its `search/` directory.
    #[arg(long, env = "MARQUEE_DATA_DIR", default_value = "marquee-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
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
    /// The gateway beside nginx as a reverse proxy in front of the same node: peak requests/s
    /// with wrk and added p50/p99 at a fixed rate.
    Gateway(GatewayBenchArgs),
    /// The waiting room: a million fans through the block's own API (joins/s, lookups/s,
    /// memory), the Redis room beside `redis-benchmark`, and joins over HTTP.
    Waitroom(WaitroomBenchArgs),
    /// Many nodes: bookings/s with one, two and three `marquee serve` processes over the same
    /// PostgreSQL, Redis and NATS, and the change stream's lag from a commit to every node.
    Cluster(ClusterBenchArgs),
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
    /// PostgreSQL for the scale-out runs (a schema of their own, dropped after); `none` skips.
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
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
    /// PostgreSQL in which each run makes (and drops) its own schema.
    #[arg(
        long,
        env = "MARQUEE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    database_url: String,
    #[arg(
        long,
        env = "MARQUEE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    #[arg(
        long,
        env = "MARQUEE_NATS_URL",
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
        env = "MARQUEE_REDIS_URL",
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
    /// The PostgreSQL peer (needs `postgresql-15-postgis-3`); `none` skips it.
    #[arg(
        long,
        env = "MARQUEE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
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
    #[arg(long, env = "MARQUEE_REDIS_URL")]
    redis_url: Option<String>,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// Address of the public HTTP listener.
    #[arg(long, env = "MARQUEE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Address of an operators' listener serving /metrics, /healthz and /readyz without
    /// authentication. Off unless given.
    #[arg(long, env = "MARQUEE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// Directory for embedded storage and the generated JWT secret.
    #[arg(long, env = "MARQUEE_DATA_DIR", default_value = "marquee-data")]
    data_dir: PathBuf,

    #[command(flatten)]
    store: StoreArgs,

    /// How long a seat hold lasts before its seats are released (e.g. `90s`, `10m`).
    #[arg(long, env = "MARQUEE_HOLD_TTL", default_value = "10m", value_parser = parse_duration)]
    hold_ttl: Duration,

    /// Secret for signing access tokens (at least 32 bytes). When absent, a random one is
    /// generated once and kept in `<data-dir>/jwt-secret` with mode 0600.
    #[arg(long, env = "MARQUEE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,

    /// How long an access token stays valid.
    #[arg(long, env = "MARQUEE_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    token_ttl: Duration,

    /// This node's name, sent in the `x-marquee-node` response header. Defaults to the host name.
    #[arg(long, env = "MARQUEE_NODE_ID")]
    node_id: Option<String>,

    /// Redis for leases shared by every node (`redis://127.0.0.1:6379`). Without it, leases
    /// live in this process.
    #[arg(long, env = "MARQUEE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// Prefix of every Redis key this node writes, so clusters can share one Redis.
    #[arg(long, env = "MARQUEE_REDIS_PREFIX", default_value = "marquee:")]
    redis_prefix: String,

    /// NATS with JetStream for the change stream (`nats://127.0.0.1:4222`): one node relays
    /// the outbox into it and every node follows it. Without it, each node reads the outbox.
    #[arg(long, env = "MARQUEE_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,

    /// The JetStream stream carrying the change stream; one per cluster.
    #[arg(long, env = "MARQUEE_NATS_STREAM", default_value = "MARQUEE_CHANGES")]
    nats_stream: String,

    #[command(flatten)]
    notify: NotifyArgs,

    #[command(flatten)]
    live: LiveArgs,

    /// How long a payment may take before the order fails (the hold stays).
    #[arg(long, env = "MARQUEE_PAYMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    payment_timeout: Duration,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MARQUEE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,

    #[command(flatten)]
    push: PushArgs,

    #[command(flatten)]
    queue: QueueArgs,

    /// A request quota, repeatable: `ip=50/s`, `user=600/m`, `route=POST /api/v1/orders=5/s`
    /// (per client IP on that routed path). Exceeding one answers 429 with `Retry-After`.
    /// Shared by every node through Redis when `--redis-url` is set. Env: comma-separated.
    #[arg(long = "rate-limit", env = "MARQUEE_RATE_LIMIT", value_delimiter = ',')]
    rate_limits: Vec<marquee_ratelimit::ScopedQuota>,

    /// A proxy in front of this node (the gateway, a load balancer) whose `X-Forwarded-For`
    /// names the client for per-IP limits (CIDR, repeatable). Nobody else's is believed.
    #[arg(
        long = "trusted-proxy",
        env = "MARQUEE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Args)]
struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "MARQUEE_GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// An operators' listener: `/metrics` (Prometheus), `/healthz` and `/upstreams` (the
    /// balancer's view of every node), without authentication. Off unless given.
    #[arg(long, env = "MARQUEE_GATEWAY_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// A node, repeatable: `http://10.0.0.1:8080`, or `GROUP=URL` for a group other than
    /// `api` (e.g. `push=http://10.0.0.5:8080`). Env: comma-separated.
    #[arg(
        long = "upstream",
        env = "MARQUEE_UPSTREAMS",
        value_delimiter = ',',
        required = true
    )]
    upstreams: Vec<marquee_gateway::UpstreamSpec>,

    /// Send paths with this prefix to a group, repeatable: `/api/v1/push=push`. Longest prefix
    /// wins; everything else goes to `api`.
    #[arg(long = "route", env = "MARQUEE_GATEWAY_ROUTES", value_delimiter = ',')]
    routes: Vec<marquee_gateway::RouteSpec>,

    /// How a group picks a node: `[GROUP=]round-robin`, `least-conn` or `event-hash`
    /// (consistent hashing on the event id; least connections where there is none). Default
    /// `event-hash`.
    #[arg(
        long = "balance",
        env = "MARQUEE_GATEWAY_BALANCE",
        value_delimiter = ','
    )]
    policies: Vec<marquee_gateway::GroupPolicy>,

    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN). Needs --tls-key.
    #[arg(long, env = "MARQUEE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "MARQUEE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// A proxy or load balancer in front of the gateway whose `X-Forwarded-For` is believed
    /// (CIDR, repeatable). Anyone else's is replaced by their own address.
    #[arg(
        long = "trusted-proxy",
        env = "MARQUEE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<ipnet::IpNet>,

    /// The nodes' token signing secret: tokens are verified at the edge and route roles
    /// enforced. Without it, tokens pass through unchecked.
    #[arg(long, env = "MARQUEE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,

    /// An extra route rule, repeatable: `"METHOD PATTERN=ROLES"` with `*` one path segment,
    /// a final `**` any rest, ROLES `signed-in` or `fan,organizer,admin`. Checked before the
    /// built-in rules the contract implies.
    #[arg(
        long = "require",
        env = "MARQUEE_GATEWAY_ACCESS",
        value_delimiter = ';'
    )]
    access_rules: Vec<marquee_gateway::AccessRule>,

    /// A request quota, repeatable: `ip=50/s`, `user=600/m`, `route=POST /api/v1/orders=5/s`.
    /// Shared by every gateway through Redis when `--redis-url` is set. Env: comma-separated.
    #[arg(long = "rate-limit", env = "MARQUEE_RATE_LIMIT", value_delimiter = ',')]
    rate_limits: Vec<marquee_ratelimit::ScopedQuota>,

    /// Redis shared by every gateway for rate limits.
    #[arg(long, env = "MARQUEE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// Prefix of every Redis key the gateway writes.
    #[arg(long, env = "MARQUEE_REDIS_PREFIX", default_value = "marquee:")]
    redis_prefix: String,

    /// Requests in flight before the gateway sheds load with 503.
    #[arg(long, env = "MARQUEE_GATEWAY_MAX_IN_FLIGHT", default_value_t = 10_000)]
    max_in_flight: usize,

    /// Of those, slots kept for checkout (holds and orders).
    #[arg(
        long,
        env = "MARQUEE_GATEWAY_CHECKOUT_RESERVE",
        default_value_t = 1_000
    )]
    checkout_reserve: usize,

    /// Requests in flight to one node before it counts as full (circuit breaking).
    #[arg(
        long,
        env = "MARQUEE_GATEWAY_UPSTREAM_MAX_IN_FLIGHT",
        default_value_t = 2_048
    )]
    upstream_max_in_flight: usize,

    /// HTTP/1.1 connections each worker keeps open to one node at most; past it, requests wait
    /// for one to come back rather than opening more.
    #[arg(
        long,
        env = "MARQUEE_GATEWAY_UPSTREAM_CONNECTIONS",
        default_value_t = 256
    )]
    upstream_connections: usize,

    /// Extra attempts on another node for idempotent requests (GET, PUT, DELETE, or any
    /// request with an `Idempotency-Key`), within a budget of 20% of requests.
    #[arg(long, env = "MARQUEE_GATEWAY_RETRIES", default_value_t = 2)]
    retries: u32,

    /// Time to open a connection to a node. Over a second, so one dropped SYN (retried after
    /// 1 s) under a burst of connects is not a failed request.
    #[arg(long, env = "MARQUEE_GATEWAY_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Until a node's response headers (streams are not cut after it).
    #[arg(long, env = "MARQUEE_GATEWAY_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    response_timeout: Duration,

    /// A client must send a whole request head within this.
    #[arg(long, env = "MARQUEE_GATEWAY_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// Largest request head accepted (431 past it).
    #[arg(long, env = "MARQUEE_GATEWAY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,

    /// Largest request body accepted (413 past it).
    #[arg(long, env = "MARQUEE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,

    /// Path of the nodes' health check.
    #[arg(long, env = "MARQUEE_GATEWAY_HEALTH_PATH", default_value = "/readyz")]
    health_path: String,

    #[arg(long, env = "MARQUEE_GATEWAY_HEALTH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    health_interval: Duration,

    /// Failures in a row that eject a node.
    #[arg(long, env = "MARQUEE_GATEWAY_EJECT_AFTER", default_value_t = 3)]
    eject_after: u32,

    /// First ejection's length (doubled for each one in a row).
    #[arg(long, env = "MARQUEE_GATEWAY_EJECT_FOR", default_value = "5s", value_parser = parse_duration)]
    eject_for: Duration,

    /// Open client connections before new ones are refused.
    #[arg(
        long,
        env = "MARQUEE_GATEWAY_MAX_CONNECTIONS",
        default_value_t = 16_384
    )]
    max_connections: usize,

    /// Worker threads, each with its own event loop and listener (default: one per core).
    #[arg(long, env = "MARQUEE_GATEWAY_WORKERS")]
    workers: Option<usize>,

    /// Log every request (target `marquee_gateway::access`).
    #[arg(long, env = "MARQUEE_GATEWAY_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    access_log: bool,
}

impl GatewayArgs {
    async fn into_config(self) -> anyhow::Result<marquee_gateway::GatewayConfig> {
        let mut config = marquee_gateway::GatewayConfig::new(self.listen, self.upstreams);
        config.routes = self.routes;
        config.policies = self.policies;
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert_chain), Some(private_key)) => Some(marquee_gateway::TlsFiles {
                cert_chain,
                private_key,
            }),
            _ => None,
        };
        config.trusted_proxies = self.trusted_proxies;
        config.jwt_secret = self
            .jwt_secret
            .map(|secret| marquee_auth::SigningSecret::new(secret.into_bytes()))
            .transpose()
            .context("MARQUEE_JWT_SECRET / --jwt-secret must be at least 32 bytes")?;
        let mut rules = self.access_rules;
        rules.extend(marquee_gateway::default_rules());
        config.access_rules = rules;
        if !self.rate_limits.is_empty() {
            let limiter: Arc<dyn marquee_ratelimit::RateLimiter> = match &self.redis_url {
                Some(url) => Arc::new(
                    marquee_ratelimit::RedisRateLimiter::connect(url, &self.redis_prefix)
                        .await
                        .context("connecting rate limits to Redis")?,
                ),
                None => Arc::new(marquee_ratelimit::InProcessRateLimiter::new()),
            };
            config.rate_limiter = Some(limiter);
        }
        config.rate_limits = self.rate_limits;
        config.max_in_flight = self.max_in_flight;
        config.checkout_reserve = self.checkout_reserve;
        config.upstream_max_in_flight = self.upstream_max_in_flight;
        config.upstream_connections_per_worker = self.upstream_connections;
        config.retries = self.retries;
        config.connect_timeout = self.connect_timeout;
        config.response_timeout = self.response_timeout;
        config.header_read_timeout = self.header_read_timeout;
        config.max_header_bytes = self.max_header_bytes;
        config.max_body_bytes = self.body_limit;
        config.health.path = self.health_path;
        config.health.interval = self.health_interval;
        config.ejection.consecutive_failures = self.eject_after.max(1);
        config.ejection.base = self.eject_for;
        config.max_connections = self.max_connections;
        config.access_log = self.access_log;
        if let Some(workers) = self.workers {
            config.workers = workers.max(1);
        }
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct QueueArgs {
    /// How long before an on-sale fans may join its waiting room (early joiners are ordered at
    /// random at opening).
    #[arg(long, env = "MARQUEE_QUEUE_JOIN_WINDOW", default_value = "30m", value_parser = parse_duration)]
    queue_join_window: Duration,

    /// A fan who neither polls their place nor listens on its push channel for this long
    /// loses it.
    #[arg(long, env = "MARQUEE_QUEUE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    queue_idle_timeout: Duration,

    /// A waiting room where nobody had to wait for this long stops gating holds.
    #[arg(long, env = "MARQUEE_QUEUE_QUIET_PERIOD", default_value = "2m", value_parser = parse_duration)]
    queue_quiet_period: Duration,

    /// Waiting-room joins allowed per client IP per minute.
    #[arg(long, env = "MARQUEE_QUEUE_JOINS_PER_IP", default_value_t = 60)]
    queue_joins_per_ip: u32,

    /// Waiting-room joins allowed per account per minute.
    #[arg(long, env = "MARQUEE_QUEUE_JOINS_PER_USER", default_value_t = 20)]
    queue_joins_per_user: u32,

    /// How often fans listening on their queue channel are sent their position (≤ 20s).
    #[arg(long, env = "MARQUEE_QUEUE_UPDATE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    queue_update_interval: Duration,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Interval of SSE heartbeat comments and WebSocket pings.
    #[arg(long, env = "MARQUEE_PUSH_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    push_heartbeat: Duration,

    /// Messages each push channel keeps for clients that reconnect.
    #[arg(long, env = "MARQUEE_PUSH_HISTORY", default_value_t = 1_000)]
    push_history: usize,

    /// How long a push message stays available for resume.
    #[arg(long, env = "MARQUEE_PUSH_HISTORY_AGE", default_value = "10m", value_parser = parse_duration)]
    push_history_age: Duration,

    /// Messages a push connection may fall behind before it is closed as a slow consumer.
    #[arg(long, env = "MARQUEE_PUSH_BUFFER", default_value_t = 1_024)]
    push_buffer: usize,

    /// Open push connections allowed per client address.
    #[arg(long, env = "MARQUEE_PUSH_MAX_PER_IP", default_value_t = 1_000)]
    push_max_per_ip: usize,

    /// Serve SSE connections on the lean path (a few KiB each) instead of through hyper.
    #[arg(long, env = "MARQUEE_PUSH_LEAN_SSE", default_value_t = true, action = clap::ArgAction::Set)]
    push_lean_sse: bool,

    /// Open push connections allowed per signed-in user.
    #[arg(long, env = "MARQUEE_PUSH_MAX_PER_USER", default_value_t = 32)]
    push_max_per_user: usize,
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Database URL: `postgres://…` for many nodes. Default: SQLite at `<data-dir>/marquee.db`.
    #[arg(long, env = "MARQUEE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Most database connections this node opens.
    #[arg(long, env = "MARQUEE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    database_max_connections: u32,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Live streaming: ingest, transcoding, playback, recordings.
#[derive(Debug, Args)]
struct LiveArgs {
    /// The RTMP ingest listener (encoders publish to rtmp://<this>/live with the event's key);
    /// `off` takes no RTMP.
    #[arg(long, env = "MARQUEE_RTMP_LISTEN", default_value = "127.0.0.1:1935", value_parser = parse_listen_or_off)]
    rtmp_listen: ListenOrOff,

    /// The RTMP URL encoders are given, when it is not the listen address (a public name).
    #[arg(long, env = "MARQUEE_RTMP_PUBLIC_URL")]
    rtmp_public_url: Option<String>,

    /// The SRT ingest listener, UDP (encoders call srt://<this> with the event's key as the
    /// stream id); `off` takes no SRT.
    #[arg(long, env = "MARQUEE_SRT_LISTEN", default_value = "127.0.0.1:9000", value_parser = parse_listen_or_off)]
    srt_listen: ListenOrOff,

    /// The SRT URL encoders are given, when it is not the listen address (a public name).
    #[arg(long, env = "MARQUEE_SRT_PUBLIC_URL")]
    srt_public_url: Option<String>,

    /// The ffmpeg that transcodes live streams (and remuxes SRT's MPEG-TS).
    #[arg(long, env = "MARQUEE_FFMPEG", default_value = "ffmpeg")]
    ffmpeg: PathBuf,

    /// Live streams this node transcodes at once (each is one ffmpeg encoding up to three
    /// renditions); more publishers are refused until one ends.
    #[arg(long, env = "MARQUEE_MAX_TRANSCODES", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_transcodes: u64,

    /// x264 preset of the renditions (`ultrafast` … `medium`): CPU against quality.
    #[arg(long, env = "MARQUEE_TRANSCODE_PRESET", default_value = "veryfast")]
    transcode_preset: String,

    /// How long a publisher that dropped may take to come back before the show ends.
    #[arg(long, env = "MARQUEE_RECONNECT_GRACE", default_value = "10s", value_parser = parse_duration)]
    reconnect_grace: Duration,

    /// How long a playback URL works (viewers fetch the stream endpoint again for a new one).
    #[arg(long, env = "MARQUEE_PLAYBACK_TOKEN_TTL", default_value = "4h", value_parser = parse_duration)]
    playback_token_ttl: Duration,

    /// Where recordings go: `file:///dir` or `s3://bucket/prefix` (credentials from AWS_*
    /// variables); by default `recordings/` in the data dir.
    #[arg(long, env = "MARQUEE_RECORDINGS_URL")]
    recordings_url: Option<String>,

    /// Serve `/live/…` media requests on the lean HTTP/1.1 path instead of through hyper
    /// (the same answers with less work per request).
    #[arg(long, env = "MARQUEE_MEDIA_LEAN_HTTP", default_value_t = true, action = clap::ArgAction::Set)]
    media_lean_http: bool,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy)]
struct ListenOrOff(Option<std::net::SocketAddr>);

fn parse_listen_or_off(raw: &str) -> Result<ListenOrOff, String> {
    match raw {
        "off" | "" => Ok(ListenOrOff(None)),
        addr => addr
            .parse()
            .map(|addr| ListenOrOff(Some(addr)))
            .map_err(|_| format!("`{addr}` is not host:port (or `off`)")),
    }
}

impl LiveArgs {
    fn apply(self, config: &mut ServerConfig, public_url: Option<String>) {
        config.live.rtmp_listen = self.rtmp_listen.0;
        config.live.rtmp_public_url = self.rtmp_public_url;
        config.live.srt_listen = self.srt_listen.0;
        config.live.srt_public_url = self.srt_public_url;
        config.live.ffmpeg = self.ffmpeg;
        config.live.max_transcodes = usize::try_from(self.max_transcodes).unwrap_or(2);
        config.live.preset = self.transcode_preset;
        config.live.reconnect_grace = self.reconnect_grace;
        config.live.playback_token_ttl = self.playback_token_ttl;
        config.live.recordings_url = self.recordings_url;
        config.media_lean_http = self.media_lean_http;
        config.live.public_url = public_url;
    }
}

/// E-mail, webhooks and the jobs that send them.
#[derive(Debug, Args)]
struct NotifyArgs {
    /// SMTP server for fans' e-mail: `smtp://host:25`, `smtp://host:587?tls=required`,
    /// `smtps://user:password@host:465`. Without it no e-mail is sent.
    #[arg(long, env = "MARQUEE_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,

    /// The sender of fans' e-mail.
    #[arg(
        long,
        env = "MARQUEE_MAIL_FROM",
        default_value = "Marquee <tickets@marquee.invalid>"
    )]
    mail_from: String,

    /// Private or special address ranges webhooks may reach after all (repeat, or comma-separate
    /// in the environment), e.g. `10.20.0.0/16` for receivers inside the network. Loopback,
    /// private, link-local and similar ranges are refused otherwise (no SSRF).
    #[arg(long, env = "MARQUEE_WEBHOOK_ALLOW_CIDR", value_delimiter = ',')]
    webhook_allow_cidr: Vec<ipnet::IpNet>,

    /// How long a webhook receiver may take to answer.
    #[arg(long, env = "MARQUEE_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    webhook_timeout: Duration,

    /// Attempts of an e-mail, webhook or reminder job before it is dead-lettered.
    #[arg(long, env = "MARQUEE_JOB_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    job_attempts: u32,

    /// The first retry's delay; each later one doubles, up to --job-backoff-cap, less up to
    /// 20 % jitter.
    #[arg(long, env = "MARQUEE_JOB_BACKOFF", default_value = "2s", value_parser = parse_duration)]
    job_backoff: Duration,

    #[arg(long, env = "MARQUEE_JOB_BACKOFF_CAP", default_value = "10m", value_parser = parse_duration)]
    job_backoff_cap: Duration,

    /// The web app's public address, for links in e-mails.
    #[arg(long, env = "MARQUEE_PUBLIC_URL")]
    public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin account (admins are never made over HTTP).
    Create(AdminCreateArgs),
}

#[derive(Debug, Args)]
struct AdminCreateArgs {
    #[arg(long)]
    email: String,
    /// At least 8 characters. Prefer MARQUEE_ADMIN_PASSWORD so it stays out of shell history.
    #[arg(long, env = "MARQUEE_ADMIN_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long, default_value = "Administrator")]
    name: String,
    /// Directory of the embedded database (ignored with --database-url).
    #[arg(long, env = "MARQUEE_DATA_DIR", default_value = "marquee-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|error| format!("{error} (try `90s`, `10m`, `1h`)"))
}

impl NodeArgs {
    fn into_config(self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir);
        config.admin_listen = self.admin_listen;
        config.database_url = self.store.database_url;
        config.database_max_connections = self.store.database_max_connections;
        config.hold_ttl = self.hold_ttl;
        config.jwt_secret = self.jwt_secret;
        config.token_ttl = self.token_ttl;
        if let Some(node_id) = self.node_id {
            config.node_id = node_id;
        }
        config.body_limit_bytes = self.body_limit;
        config.redis_url = self.redis_url;
        config.redis_prefix = self.redis_prefix;
        config.nats_url = self.nats_url;
        config.nats_stream = self.nats_stream;
        config.smtp_url = self.notify.smtp_url;
        config.mail_from = self.notify.mail_from;
        config.notifications = marquee_api::NotificationSettings {
            max_attempts: self.notify.job_attempts,
            worker: marquee_jobs::WorkerSettings {
                backoff: marquee_jobs::Backoff {
                    base: self.notify.job_backoff,
                    cap: self.notify.job_backoff_cap.max(self.notify.job_backoff),
                    jitter: 0.2,
                },
                ..marquee_jobs::WorkerSettings::default()
            },
            webhook_policy: marquee_notify::AddressPolicy::new(self.notify.webhook_allow_cidr),
            webhook_timeout: self.notify.webhook_timeout,
            public_url: self.notify.public_url.clone(),
        };
        self.live.apply(&mut config, self.notify.public_url);
        config.rate_limits = self.rate_limits;
        config.trusted_proxies = self.trusted_proxies;
        config.payment_timeout = self.payment_timeout;
        config.push.heartbeat = self.push.push_heartbeat;
        config.push_lean_sse = self.push.push_lean_sse;
        config.push.max_connections_per_ip = self.push.push_max_per_ip;
        config.push.max_connections_per_user = self.push.push_max_per_user;
        config.push_hub.history_len = self.push.push_history;
        config.push_hub.history_age = self.push.push_history_age;
        config.push_hub.subscriber_buffer = self.push.push_buffer;
        config.queue = marquee_api::QueueSettings {
            join_window: self.queue.queue_join_window,
            joins_per_ip_per_minute: self.queue.queue_joins_per_ip,
            joins_per_user_per_minute: self.queue.queue_joins_per_user,
            update_interval: self
                .queue
                .queue_update_interval
                .min(Duration::from_secs(20)),
        };
        config.queue_timings = marquee_waitroom::RoomTimings {
            idle_timeout: self.queue.queue_idle_timeout,
            quiet_period: self.queue.queue_quiet_period,
        };
        config
    }
}

/// Raises the soft limit on open files to the hard one, as Go's runtime does: a node holds a
/// descriptor per push connection and per cached live segment (sent with `sendfile`), and
/// many systems start processes at a soft limit of 1,024 under a far higher hard one.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "open files limit raised"),
            Err(error) => tracing::warn!(%error, "the open files limit could not be raised"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = LogFormat::parse(&cli.log_format).unwrap_or(LogFormat::Auto);
    marquee_telemetry::init_logging(format, &cli.log_filter)?;
    raise_open_files_limit();
    match cli.command {
        Command::Serve(args) => serve(args.into_config()).await,
        Command::Demo(args) => demo(args).await,
        Command::Gateway(args) => gateway(args).await,
        Command::Admin(AdminCommand::Create(args)) => create_admin(args).await,
        Command::Bench(BenchCommand::Booking(args)) => bench_booking(args).await,
        Command::Bench(BenchCommand::Push(args)) => bench_push(args).await,
        Command::Bench(BenchCommand::Search(args)) => bench_search(args).await,
        Command::Bench(BenchCommand::Waitroom(args)) => bench_waitroom(args).await,
        Command::Bench(BenchCommand::Gateway(args)) => bench_gateway(args).await,
        Command::Bench(BenchCommand::Cache(args)) => bench_cache(args),
        Command::Bench(BenchCommand::Jobs(args)) => bench_jobs::run(args).await,
        Command::Bench(BenchCommand::Live(args)) => {
            let bench = marquee::bench_live::LiveBench {
                ingest: match args.ingest.as_str() {
                    "srt" => marquee::bench_live::Ingest::Srt,
                    _ => marquee::bench_live::Ingest::Rtmp,
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
            let report = marquee::bench_live::run_live_bench(&bench).await?;
            marquee::bench_live::print_report(&bench, &report);
            Ok(())
        }
        Command::Bench(BenchCommand::Cluster(args)) => {
            let bench = marquee::bench_cluster::ClusterBench {
                max_nodes: args.nodes.clamp(1, 8),
                clients: args.clients.max(1),
                duration: args.duration,
                lag_samples: args.lag_samples.max(10),
                best_available: args.best_available,
                database_url: args.database_url,
                redis_url: args.redis_url,
                nats_url: args.nats_url,
            };
            marquee::bench_cluster::run_cluster(&bench)
                .await
                .map(|_| ())
        }
        Command::Search(SearchCommand::Reindex(args)) => reindex(args).await,
        Command::Jobs(args) => jobs_command(args).await,
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    println!("Marquee is serving on {}", server.url());
    println!("  Web app: {}/", server.url());
    println!("  API description: {}/api/v1/openapi.json", server.url());
    if let Some(rtmp) = server.rtmp_addr {
        println!("  RTMP ingest: rtmp://{rtmp}/live");
    }
    if let Some(srt) = server.srt_addr {
        println!("  SRT ingest: srt://{srt}");
    }
    server.run_until_signalled().await
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let admin_listen = args.admin_listen;
    let metrics = match admin_listen {
        Some(_) => Some(marquee_telemetry::install_metrics()?),
        None => None,
    };
    let gateway = marquee_gateway::Gateway::start(args.into_config().await?).await?;
    println!("Marquee gateway is serving on {}", gateway.url());
    if let (Some(address), Some(metrics)) = (admin_listen, metrics) {
        // Histograms keep their samples until summarised: without this they would grow with
        // every request between scrapes (tens of thousands a second).
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        let status = gateway.status();
        let admin = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move { metrics.render() }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/upstreams",
                axum::routing::get(move || {
                    let status = status.clone();
                    async move { axum::Json(status.upstreams()) }
                }),
            );
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        println!("  Operators: http://{address}/metrics, /upstreams");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, admin).await {
                tracing::error!(%error, "the operators' listener stopped");
            }
        });
    }
    marquee::server::shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    gateway.shutdown().await;
    Ok(())
}

fn bench_cache(args: CacheBenchArgs) -> anyhow::Result<()> {
    use marquee::bench_cache::{run_cache_bench, CacheBench};
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
    use marquee::bench_gateway::{median, run_gateway_bench, GatewayBench};
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

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut node = args.node;
    // A demo should not touch a production data dir by accident.
    if node.data_dir == std::path::Path::new("marquee-data") {
        node.data_dir = PathBuf::from("marquee-demo");
    }
    let config = node.into_config();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = marquee::server::open_store(&config).await?;
    match marquee::demo::seed(store.as_ref(), true).await? {
        SeedOutcome::Seeded { venues, events } => {
            println!(
                "Seeded {venues} venues and {events} events in {}",
                config.data_dir.display()
            )
        }
        SeedOutcome::AlreadySeeded => {
            println!("Reusing the demo data in {}", config.data_dir.display())
        }
    }
    let server = Server::start_with_store(config, store).await?;
    let url = server.url();
    println!();
    println!("Marquee demo is running at {url}");
    println!("  Web app:       {url}/   (organizers: {url}/organizer)");
    println!("  Events:        {url}/api/v1/events");
    println!("  Search:        {url}/api/v1/search?q=homecomming&lat=51.5&lon=-0.12&radius_km=50");
    println!("  API (OpenAPI): {url}/api/v1/openapi.json");
    println!("  Health:        {url}/healthz");
    if let Some(rtmp) = server.rtmp_addr {
        println!("  RTMP ingest:   rtmp://{rtmp}/live");
    }
    if let Some(srt) = server.srt_addr {
        println!("  SRT ingest:    srt://{srt}");
    }
    println!();
    println!("Go live: as the organizer, POST {url}/api/v1/events/{{id}}/stream for a stream key,");
    println!(
        "publish to the ingest URL with it; ticket holders watch at {url}/events/{{id}}/watch."
    );
    println!();
    println!("Sign in with POST {url}/api/v1/auth/login as:");
    for account in &DEMO_ACCOUNTS {
        println!(
            "  {:<10} {:<30} password: {}",
            account.role.as_str(),
            account.email,
            account.password
        );
    }
    println!();
    println!("Press Ctrl-C to stop.");
    server.run_until_signalled().await
}

async fn reindex(args: ReindexArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), args.data_dir);
    config.database_url = args.store.database_url;
    config.database_max_connections = args.store.database_max_connections;
    let store = marquee::server::open_store(&config).await?;
    let index = Arc::new(marquee::server::open_search_index(&config)?);
    let total = store
        .count_events(Some(marquee_domain::EventStatus::Published))
        .await?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let (count, position) =
        marquee_search::rebuild(&index, store.as_ref(), &|done| bar.set_position(done)).await?;
    bar.finish();
    println!(
        "Indexed {count} published events up to outbox position {position} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_admin(args: AdminCreateArgs) -> anyhow::Result<()> {
    let email =
        Email::parse(&args.email).map_err(|message| anyhow::anyhow!("--email {message}"))?;
    let password = Password::parse(args.password)
        .map_err(|message| anyhow::anyhow!("--password {message}"))?;
    let name =
        DisplayName::parse(&args.name).map_err(|message| anyhow::anyhow!("--name {message}"))?;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), args.data_dir);
    config.database_url = args.store.database_url;
    config.database_max_connections = args.store.database_max_connections;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = marquee::server::open_store(&config).await?;
    let user = User {
        id: UserId::generate(),
        email,
        name,
        role: Role::Admin,
        created_at: marquee_domain::timestamp_now(),
    };
    let hash = marquee_auth::hash_password(password).await?;
    store
        .create_user(&user, &hash)
        .await
        .with_context(|| format!("creating admin {}", user.email.as_str()))?;
    println!("Created admin {} ({})", user.email.as_str(), user.id);
    Ok(())
}

async fn bench_search(args: SearchBenchArgs) -> anyhow::Result<()> {
    use marquee::bench_search::{run_search, EngineReport, SearchBench};
    let report = run_search(&SearchBench {
        events: args.events,
        queries: args.queries,
        updates: args.updates,
        seed: args.seed,
        postgres_url: (args.postgres_url != "none").then_some(args.postgres_url),
    })
    .await?;
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
            "{:<36} near-me q/s {:.0}; fuzzy+geo queries with hits {:.0}%",
            "",
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
    use marquee::bench_waitroom::{run_waitroom, WaitroomBench};
    let report = run_waitroom(&WaitroomBench {
        fans: args.fans,
        lookups: args.lookups,
        redis_url: (args.redis_url != "none").then_some(args.redis_url),
        redis_fans: args.redis_fans,
        http_fans: args.http_fans,
        concurrency: args.concurrency,
    })
    .await?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let local = &report.in_process;
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
    if let Some(redis) = &report.redis {
        println!(
            "\nRedis room, {} fans from {} tasks",
            redis.fans, redis.concurrency
        );
        println!("| measure | value |\n|---|---|");
        println!("| joins/s | {:.0} |", redis.joins_per_sec);
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
    if let Some(http) = &report.http {
        println!(
            "\nHTTP: {} joins from {} connections: {:.0} joins/s ({} refused)",
            http.fans, http.concurrency, http.joins_per_sec, http.refused
        );
    }
    Ok(())
}

async fn bench_push(args: PushBenchArgs) -> anyhow::Result<()> {
    use marquee::bench_push::{run_push, PushBench};
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
    use marquee::bench::{redis_set_anchor, run_booking, BookingBench};
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
