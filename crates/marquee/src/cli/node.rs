//! `marquee serve` and `marquee demo`: the node's flags and how a node is started.
//!
//! Every flag is optional and has no default of its own: a flag or its `MARQUEE_*` variable
//! overrides the configuration file, which overrides the defaults in
//! [`marquee::settings::NodeSettings`]. The flags serialise in the same shape as the file
//! (sections by block), leaving out what was not given, so the layers merge without a copy of
//! each field.

use super::{parse_duration, ConfigFile};
use anyhow::Context;
use clap::Args;
use marquee::demo::{SeedOutcome, DEMO_ACCOUNTS};
use marquee::settings::{ListenOrOff, NodeSettings};
use marquee::Server;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of a node: the same keys as `marquee.toml`.
#[derive(Debug, Args, Serialize)]
pub struct NodeFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub config: ConfigFile,

    /// Address of the public HTTP listener [default: 127.0.0.1:8080].
    #[arg(long, env = "MARQUEE_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Address of an operators' listener serving /metrics, /healthz, /readyz and
    /// /push/publish (see --operator-token). Off unless given.
    #[arg(long, env = "MARQUEE_ADMIN_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token the operators' listener requires (`Authorization: Bearer <token>`);
    /// without one it serves loopback peers only.
    #[arg(long, env = "MARQUEE_OPERATOR_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,

    /// Directory for embedded storage and the generated JWT secret [default: marquee-data].
    #[arg(long, env = "MARQUEE_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// This node's name, sent in the `x-marquee-node` response header [default: host name].
    #[arg(long, env = "MARQUEE_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MARQUEE_BODY_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<usize>,

    /// A proxy in front of this node (the gateway, a load balancer) whose `X-Forwarded-For`
    /// names the client for per-IP limits (CIDR, repeatable). Nobody else's is believed.
    #[arg(
        long = "trusted-proxy",
        env = "MARQUEE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// A request quota, repeatable: `ip=50/s`, `user=600/m`, `route=POST /api/v1/orders=5/s`
    /// (per client IP on that routed path). Exceeding one answers 429 with `Retry-After`.
    /// Shared by every node through Redis when a Redis URL is set. Env: comma-separated.
    #[arg(long = "rate-limit", env = "MARQUEE_RATE_LIMIT", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<String>,

    #[command(flatten)]
    pub http: HttpFlags,
    #[command(flatten)]
    pub database: DatabaseFlags,
    #[command(flatten)]
    pub auth: AuthFlags,
    #[command(flatten)]
    pub booking: BookingFlags,
    #[command(flatten)]
    pub redis: RedisFlags,
    #[command(flatten)]
    pub nats: NatsFlags,
    #[command(flatten)]
    pub push: PushFlags,
    #[command(flatten)]
    pub queue: QueueFlags,
    #[command(flatten)]
    pub notify: NotifyFlags,
    #[command(flatten)]
    pub live: LiveFlags,
}

/// `[http]`
#[derive(Debug, Args, Serialize)]
pub struct HttpFlags {
    /// A request head must arrive whole within this of the connection's start or the previous
    /// answer, on every listener (slowloris) [default: 10s].
    #[arg(long, env = "MARQUEE_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub header_read_timeout: Option<Duration>,

    /// A request body that stops arriving for this long fails its request [default: 30s].
    #[arg(long, env = "MARQUEE_BODY_READ_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub body_read_timeout: Option<Duration>,

    /// A connection on which nothing moves while the node waits on the client is closed after
    /// this; keep it above the longest long poll (60s) [default: 2m].
    #[arg(long, env = "MARQUEE_IDLE_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub idle_timeout: Option<Duration>,

    /// Open connections per listener; more wait in the kernel's backlog [default: 100000].
    #[arg(long, env = "MARQUEE_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// `[database]`
#[derive(Debug, Args, Serialize)]
pub struct DatabaseFlags {
    /// Database URL: `postgres://…` for many nodes. Default: SQLite at `<data-dir>/marquee.db`.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "MARQUEE_DATABASE_URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Most database connections this node opens [default: 16].
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "MARQUEE_DATABASE_MAX_CONNECTIONS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,

    /// PostgreSQL: booking write batches this node runs at once; the holds, orders and
    /// answers that arrive meanwhile wait and share the next (one commit each) [default: 4].
    #[arg(
        id = "database_write_batches",
        long = "database-write-batches",
        env = "MARQUEE_DATABASE_WRITE_BATCHES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_batches: Option<u32>,

    /// PostgreSQL: how long this node's sessions may sit idle inside a transaction before the
    /// server ends them, so a node cut off mid-transaction cannot keep row locks from the
    /// others [default: 5s].
    #[arg(
        id = "database_idle_transaction_timeout",
        long = "database-idle-transaction-timeout",
        env = "MARQUEE_DATABASE_IDLE_TRANSACTION_TIMEOUT",
        value_parser = parse_duration
    )]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub idle_transaction_timeout: Option<Duration>,
}

/// `[auth]`
#[derive(Debug, Args, Serialize)]
pub struct AuthFlags {
    /// Secret for signing access tokens (at least 32 bytes), which nodes and the gateway then
    /// share; nothing signed names a key and nothing rotates. When absent, nodes use the
    /// cluster's keyring in the catalog database (see `marquee keys`).
    #[arg(long, env = "MARQUEE_JWT_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,

    /// How long an access token stays valid [default: 24h].
    #[arg(long, env = "MARQUEE_TOKEN_TTL", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub token_ttl: Option<Duration>,

    /// Sign-ins and registrations per client IP per minute; 429 beyond [default: 30].
    #[arg(long = "auth-attempts-per-ip", env = "MARQUEE_AUTH_ATTEMPTS_PER_IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_per_ip: Option<u32>,

    /// Sign-in and registration attempts per account (e-mail) per minute [default: 10].
    #[arg(
        long = "auth-attempts-per-account",
        env = "MARQUEE_AUTH_ATTEMPTS_PER_ACCOUNT"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_per_account: Option<u32>,

    /// Password hashes computed at once; 0 means one per core [default: 0].
    #[arg(long, env = "MARQUEE_HASHING_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashing_concurrency: Option<usize>,
}

/// `[booking]`
#[derive(Debug, Args, Serialize)]
pub struct BookingFlags {
    /// How long a seat hold lasts before its seats are released (e.g. `90s`) [default: 10m].
    #[arg(long, env = "MARQUEE_HOLD_TTL", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub hold_ttl: Option<Duration>,

    /// How long a payment may take before the order fails (the hold stays) [default: 10s].
    #[arg(long, env = "MARQUEE_PAYMENT_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub payment_timeout: Option<Duration>,

    /// How long a request's answer is kept for a retry under its idempotency key
    /// [default: 24h].
    #[arg(long, env = "MARQUEE_IDEMPOTENCY_RETENTION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub idempotency_retention: Option<Duration>,

    /// Booking requests (holds, hold changes, orders) this node handles at once; more are
    /// answered 503 with `Retry-After` at once instead of queueing [default: 512].
    #[arg(long = "booking-max-in-flight", env = "MARQUEE_BOOKING_MAX_IN_FLIGHT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// `[redis]`
#[derive(Debug, Args, Serialize)]
pub struct RedisFlags {
    /// Redis shared by every node (`redis://127.0.0.1:6379`): leases, waiting rooms, rate
    /// limits, push, cache. Without it, all of them live in this process.
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "MARQUEE_REDIS_URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Prefix of every Redis key this node writes, so clusters can share one Redis
    /// [default: marquee:].
    #[arg(
        id = "redis_prefix",
        long = "redis-prefix",
        env = "MARQUEE_REDIS_PREFIX"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `[nats]`
#[derive(Debug, Args, Serialize)]
pub struct NatsFlags {
    /// NATS with JetStream for the change stream (`nats://127.0.0.1:4222`): one node relays
    /// the outbox into it and every node follows it. Without it, each node reads the outbox.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "MARQUEE_NATS_URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The JetStream stream carrying the change stream; one per cluster
    /// [default: MARQUEE_CHANGES].
    #[arg(id = "nats_stream", long = "nats-stream", env = "MARQUEE_NATS_STREAM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `[push]`
#[derive(Debug, Args, Serialize)]
pub struct PushFlags {
    /// Interval of SSE heartbeat comments and WebSocket pings [default: 15s].
    #[arg(id = "push_heartbeat", long = "push-heartbeat", env = "MARQUEE_PUSH_HEARTBEAT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub heartbeat: Option<Duration>,

    /// Messages each push channel keeps for clients that reconnect [default: 1000].
    #[arg(
        id = "push_history",
        long = "push-history",
        env = "MARQUEE_PUSH_HISTORY"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,

    /// How long a push message stays available for resume [default: 10m].
    #[arg(id = "push_history_age", long = "push-history-age", env = "MARQUEE_PUSH_HISTORY_AGE", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub history_age: Option<Duration>,

    /// Messages a push connection may fall behind before it is closed as a slow consumer.
    #[arg(id = "push_buffer", long = "push-buffer", env = "MARQUEE_PUSH_BUFFER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<usize>,

    /// Open push connections allowed per client address.
    #[arg(
        id = "push_max_per_ip",
        long = "push-max-per-ip",
        env = "MARQUEE_PUSH_MAX_PER_IP"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_ip: Option<usize>,

    /// Open push connections allowed per signed-in user.
    #[arg(
        id = "push_max_per_user",
        long = "push-max-per-user",
        env = "MARQUEE_PUSH_MAX_PER_USER"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<usize>,

    /// Channels this node's push hub tracks at most; past it, channels nobody follows are
    /// forgotten and a new subscription when all are followed is refused [default: 100000].
    #[arg(
        id = "push_max_channels",
        long = "push-max-channels",
        env = "MARQUEE_PUSH_MAX_CHANNELS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<usize>,

    /// Serve SSE connections on the lean path (a few KiB each) instead of through hyper.
    #[arg(id = "push_lean_sse", long = "push-lean-sse", env = "MARQUEE_PUSH_LEAN_SSE", action = clap::ArgAction::Set)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lean_sse: Option<bool>,
}

/// `[queue]`
#[derive(Debug, Args, Serialize)]
pub struct QueueFlags {
    /// How long before an on-sale fans may join its waiting room (early joiners are ordered at
    /// random at opening) [default: 30m].
    #[arg(id = "queue_join_window", long = "queue-join-window", env = "MARQUEE_QUEUE_JOIN_WINDOW", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub join_window: Option<Duration>,

    /// A fan who neither polls their place nor listens on its push channel for this long
    /// loses it [default: 60s].
    #[arg(id = "queue_idle_timeout", long = "queue-idle-timeout", env = "MARQUEE_QUEUE_IDLE_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub idle_timeout: Option<Duration>,

    /// A waiting room where nobody had to wait for this long stops gating holds [default: 2m].
    #[arg(id = "queue_quiet_period", long = "queue-quiet-period", env = "MARQUEE_QUEUE_QUIET_PERIOD", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub quiet_period: Option<Duration>,

    /// Waiting-room joins allowed per client IP per minute.
    #[arg(
        id = "queue_joins_per_ip",
        long = "queue-joins-per-ip",
        env = "MARQUEE_QUEUE_JOINS_PER_IP"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joins_per_ip: Option<u32>,

    /// Waiting-room joins allowed per account per minute.
    #[arg(
        id = "queue_joins_per_user",
        long = "queue-joins-per-user",
        env = "MARQUEE_QUEUE_JOINS_PER_USER"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joins_per_user: Option<u32>,

    /// How often fans listening on their queue channel are sent their position (≤ 20s).
    #[arg(id = "queue_update_interval", long = "queue-update-interval", env = "MARQUEE_QUEUE_UPDATE_INTERVAL", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub update_interval: Option<Duration>,
}

/// `[notify]`: e-mail, webhooks and the jobs that send them.
#[derive(Debug, Args, Serialize)]
pub struct NotifyFlags {
    /// SMTP server for fans' e-mail: `smtp://host:25`, `smtp://host:587?tls=required`,
    /// `smtps://user:password@host:465`. Without it no e-mail is sent.
    #[arg(long, env = "MARQUEE_SMTP_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,

    /// The sender of fans' e-mail.
    #[arg(long, env = "MARQUEE_MAIL_FROM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,

    /// Private or special address ranges webhooks may reach after all (repeat, or comma-separate
    /// in the environment), e.g. `10.20.0.0/16` for receivers inside the network. Loopback,
    /// private, link-local and similar ranges are refused otherwise (no SSRF).
    #[arg(long, env = "MARQUEE_WEBHOOK_ALLOW_CIDR", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhook_allow_cidr: Vec<ipnet::IpNet>,

    /// How long a webhook receiver may take to answer.
    #[arg(long, env = "MARQUEE_WEBHOOK_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub webhook_timeout: Option<Duration>,

    /// Attempts of an e-mail, webhook or reminder job before it is dead-lettered (1–100).
    #[arg(long, env = "MARQUEE_JOB_ATTEMPTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_attempts: Option<u32>,

    /// The first retry's delay; each later one doubles, up to --job-backoff-cap, less up to
    /// 20 % jitter.
    #[arg(long, env = "MARQUEE_JOB_BACKOFF", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub job_backoff: Option<Duration>,

    #[arg(long, env = "MARQUEE_JOB_BACKOFF_CAP", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub job_backoff_cap: Option<Duration>,

    /// The web app's public address, for links in e-mails and playback URLs.
    #[arg(long, env = "MARQUEE_PUBLIC_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// `[live]`: ingest, transcoding, playback, recordings.
#[derive(Debug, Args, Serialize)]
pub struct LiveFlags {
    /// The RTMP ingest listener (encoders publish to rtmp://<this>/live with the event's key);
    /// `off` takes no RTMP [default: 127.0.0.1:1935].
    #[arg(long, env = "MARQUEE_RTMP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_listen: Option<ListenOrOff>,

    /// The RTMP URL encoders are given, when it is not the listen address (a public name).
    #[arg(long, env = "MARQUEE_RTMP_PUBLIC_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_public_url: Option<String>,

    /// The SRT ingest listener, UDP (encoders call srt://<this> with the event's key as the
    /// stream id); `off` takes no SRT [default: 127.0.0.1:9000].
    #[arg(long, env = "MARQUEE_SRT_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_listen: Option<ListenOrOff>,

    /// The SRT URL encoders are given, when it is not the listen address (a public name).
    #[arg(long, env = "MARQUEE_SRT_PUBLIC_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_public_url: Option<String>,

    /// The ffmpeg that transcodes live streams (and remuxes SRT's MPEG-TS).
    #[arg(long, env = "MARQUEE_FFMPEG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffmpeg: Option<PathBuf>,

    /// Live streams this node transcodes at once (each is one ffmpeg encoding up to three
    /// renditions, 1–64); more publishers are refused until one ends.
    #[arg(long, env = "MARQUEE_MAX_TRANSCODES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_transcodes: Option<u64>,

    /// x264 preset of the renditions (`ultrafast` … `medium`): CPU against quality.
    #[arg(long, env = "MARQUEE_TRANSCODE_PRESET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcode_preset: Option<String>,

    /// How long a publisher that dropped may take to come back before the show ends.
    #[arg(long, env = "MARQUEE_RECONNECT_GRACE", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub reconnect_grace: Option<Duration>,

    /// How long a playback URL works (viewers fetch the stream endpoint again for a new one).
    #[arg(long, env = "MARQUEE_PLAYBACK_TOKEN_TTL", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub playback_token_ttl: Option<Duration>,

    /// Where recordings go: `file:///dir` or `s3://bucket/prefix` (credentials from AWS_*
    /// variables); by default `recordings/` in the data dir.
    #[arg(long, env = "MARQUEE_RECORDINGS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recordings_url: Option<String>,

    /// Serve `/live/…` media requests on the lean HTTP/1.1 path instead of through hyper
    /// (the same answers with less work per request).
    #[arg(long, env = "MARQUEE_MEDIA_LEAN_HTTP", action = clap::ArgAction::Set)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_lean_http: Option<bool>,
}

impl NodeFlags {
    /// The effective settings: defaults, then the configuration file, then these flags.
    pub fn settings(&self) -> anyhow::Result<NodeSettings> {
        NodeSettings::load(self.config.path().as_deref(), self).context("the node's configuration")
    }
}

pub async fn serve(flags: NodeFlags) -> anyhow::Result<()> {
    let server = Server::start(flags.settings()?.into_server_config()).await?;
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

pub async fn demo(flags: NodeFlags) -> anyhow::Result<()> {
    let mut settings = flags.settings()?;
    // The demo seeds an admin whose password is published in this very binary: seeded into a
    // real database (MARQUEE_DATABASE_URL left over in a shell, a config file), that is a
    // back door. It only ever runs on its own embedded store in its data dir.
    if let Some(url) = &settings.database.url {
        anyhow::bail!(
            "`marquee demo` runs only on its own embedded store, not on {} \
             (unset MARQUEE_DATABASE_URL / --database-url, or use `marquee serve`)",
            marquee_store::redact_url(url)
        );
    }
    // A demo should not touch a production data dir by accident.
    if settings.data_dir == NodeSettings::default().data_dir {
        settings.data_dir = PathBuf::from("marquee-demo");
    }
    let config = settings.into_server_config();
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
