//! `marquee gateway`: the reverse proxy in front of many nodes, and its operators' listener.

use super::parse_duration;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "MARQUEE_GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// An operators' listener: `/metrics` (Prometheus), `/healthz` and `/upstreams` (the
    /// balancer's view of every node). Off unless given; see --operator-token.
    #[arg(long, env = "MARQUEE_GATEWAY_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// Bearer token the operators' listener requires (`Authorization: Bearer <token>`);
    /// without one it serves loopback peers only.
    #[arg(long, env = "MARQUEE_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,

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

    /// The nodes' catalog database: without --jwt-secret, tokens are verified at the edge with
    /// the cluster's keyring kept there (read only, reloaded every 15 s).
    #[arg(long, env = "MARQUEE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

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
        if config.jwt_secret.is_none() {
            if let Some(url) = &self.database_url {
                config.edge_keyring = Some(
                    marquee::keys::edge_keyring(url, marquee::keys::DEFAULT_RELOAD_INTERVAL)
                        .await?,
                );
            }
        }
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

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let admin_listen = args.admin_listen;
    let operator_access = marquee_api::OperatorAccess::new(args.operator_token.as_deref());
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
            )
            .layer(axum::middleware::from_fn_with_state(
                operator_access,
                marquee_api::operator::require_operator,
            ));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        println!("  Operators: http://{address}/metrics, /upstreams");
        tokio::spawn(async move {
            // The node's serve loop, so this listener has the same header, body and idle
            // timeouts and connection cap as a node's (it lives as long as the process).
            let limits = marquee_api::HttpLimits::default();
            let (_never, stopped) = tokio::sync::watch::channel(false);
            let listener = marquee_api::connections::limited(listener, &limits);
            if let Err(error) =
                marquee_api::connections::serve(listener, admin, limits, stopped).await
            {
                tracing::error!(%error, "the operators' listener stopped");
            }
        });
    }
    marquee::server::shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    gateway.shutdown().await;
    Ok(())
}
