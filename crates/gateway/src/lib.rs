//! The gateway: the face in front of many `marquee serve` nodes. It takes the cross-cutting
//! concerns off the nodes — TLS, authentication and roles, rate limits, load shedding — and
//! spreads requests over the nodes with health checks, ejection and safe retries.
//!
//! **Why hyper and tower, not Pingora.** Pingora is a proxy *framework* with its own server,
//! runtime and configuration model; adopting it would mean a second way to run, configure and
//! observe a Marquee process, a BoringSSL/OpenSSL build, and a much heavier compile on our
//! two-core builders, for a proxy whose hard parts (who may pass, which node, when to retry)
//! are ours either way. hyper is the HTTP engine under axum, reqwest and the nodes already;
//! with hyper-util's auto-negotiating server and tower's retry budget, what is left to write is
//! the proxy logic itself.
//!
//! **Why a hand-written HTTP/1.1 path beside it.** Measured against nginx in front of the same
//! node (`marquee-bench gateway`, BENCHMARKS.md), hyper's server with its pooled client peaked at
//! 0.74 of nginx's throughput: every request paid for two header maps, the pool's channel to a
//! separate connection task and the wake-ups around it. Clear-text HTTP/1.1 requests without
//! upgrades or chunked bodies — nearly all of them — now go through [`h1`]: parsed once with
//! `httparse` (hyper's own parser), the head rewritten straight into the bytes the node gets,
//! the answer passed back on the same task over a pooled connection, four system calls for a
//! small exchange, as in nginx. Everything else (TLS, HTTP/2, h2c, WebSocket, chunked uploads,
//! HTTP/1.0) is handed to hyper on the same connection before a byte of it is answered. Both
//! paths share every edge decision.
//!
//! The request path, in order ([`proxy`] and [`h1`] alike): request id; client IP from trusted proxies only
//! ([`forwarded`]); token and route role ([`access`]); rate limits (the `marquee-ratelimit`
//! block, in-process or shared through Redis); load shedding with a checkout reserve; the
//! route's upstream group and a node by its policy ([`balancer`]); the request forwarded,
//! retried on another node when it is idempotent (or never reached a node) and the retry budget
//! allows; the answer streamed back. [`health`] runs the active checks.
//!
//! Threads ([`Gateway::start`]): one worker per core, each a single-threaded event loop with its
//! own `SO_REUSEPORT` listener and its own pool of connections to the nodes, so a request and
//! its upstream exchange never cross threads (nginx's and Envoy's model; under tokio's
//! work-stealing runtime the client side and the pooled upstream connection often woke on
//! different cores). Groups, health, limits and the retry budget are shared.
//!
//! Connections: HTTP/1.1 and HTTP/2 (ALPN over TLS, prior knowledge in
//! clear), a cap on open connections, a deadline for the first request head and for every
//! later one (slowloris), a cap on header size (431), and a graceful drain on shutdown.

mod access;
mod balancer;
mod config;
mod forwarded;
pub mod h1;
mod health;
mod proxy;
mod tls;

pub use access::{default_rules, AccessRule, Allowed};
pub use config::{
    ConfigError, EjectionSettings, GatewayConfig, GroupPolicy, HealthSettings, Policy, RouteSpec,
    TlsFiles, UpstreamSpec, DEFAULT_GROUP,
};
pub use forwarded::TrustedProxies;

use balancer::{Group, Upstream};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use proxy::{Connection, Proxy, UpstreamClient};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("could not start a worker thread: {0}")]
    Worker(#[source] std::io::Error),
    #[error("could not listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What the gateway currently thinks of one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamStatus {
    pub group: String,
    pub url: String,
    /// Passing its active health checks.
    pub healthy: bool,
    /// Left out after failed requests, for now.
    pub ejected: bool,
    pub in_flight: usize,
}

/// Reads the balancer's view of the nodes while the gateway runs.
#[derive(Clone)]
pub struct GatewayStatus(Arc<Proxy>);

impl GatewayStatus {
    pub fn upstreams(&self) -> Vec<UpstreamStatus> {
        self.0.upstream_status()
    }
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    proxy: Arc<Proxy>,
    tls: bool,
    shutdown: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    health: Vec<JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listeners = bind_listeners(config.listen, config.workers.max(1))?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| GatewayError::Listen {
                address: config.listen,
                source,
            })?;
        let client = upstream_client(&config);
        let groups = upstream_groups(&config);
        let health = groups
            .iter()
            .flat_map(|group| group.upstreams.iter())
            .map(|upstream| {
                tokio::spawn(health::check_forever(
                    client.clone(),
                    Arc::clone(upstream),
                    config.health.clone(),
                ))
            })
            .collect();
        // The lifetime is the issuer's; the edge only verifies.
        let lifetime = Duration::from_secs(3600);
        let tokens = match (&config.jwt_secret, &config.edge_keyring) {
            (Some(secret), _) => Some(marquee_auth::TokenIssuer::new(secret, lifetime)),
            (None, Some(keyring)) => {
                Some(marquee_auth::TokenIssuer::from_keyring(keyring, lifetime))
            }
            (None, None) => None,
        };
        if tokens.is_none() {
            tracing::warn!("no JWT secret and no keyring: tokens pass to the nodes unchecked and route roles are not enforced at the edge");
        }
        let edge = access::EdgeAuth::new(tokens, config.access_rules.clone());
        let proxy = Arc::new(Proxy::new(&config, client, groups, edge));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let builder = Arc::new(server_builder(&config));
        let open = Arc::new(Semaphore::new(config.max_connections));
        let mut workers = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            // Each worker owns its connections from accept to close, both sides: no request
            // crosses threads, as in nginx and Envoy.
            let worker = WorkerSetup {
                listener,
                proxy: Arc::new(proxy.with_client(upstream_client(&config))),
                tls: tls.clone(),
                builder: Arc::clone(&builder),
                limits: ConnectionLimits {
                    open: Arc::clone(&open),
                    first_request_deadline: config.header_read_timeout,
                },
                shutdown: shutdown_rx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("gateway-{index}"))
                .spawn(move || worker.run())
                .map_err(GatewayError::Worker)?;
            workers.push(handle);
        }
        tracing::info!(%local_addr, tls = config.tls.is_some(), upstreams = config.upstreams.len(), "gateway listening");
        Ok(Gateway {
            local_addr,
            proxy,
            tls: config.tls.is_some(),
            shutdown,
            workers,
            health,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Every node of every group, as the balancer sees it now.
    pub fn upstreams(&self) -> Vec<UpstreamStatus> {
        self.proxy.upstream_status()
    }

    /// A handle that reads [`Gateway::upstreams`] from elsewhere (an operators' listener).
    pub fn status(&self) -> GatewayStatus {
        GatewayStatus(Arc::clone(&self.proxy))
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in &self.health {
            task.abort();
        }
        let workers = self.workers;
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), joined).await;
    }
}

fn upstream_client(config: &GatewayConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

fn upstream_groups(config: &GatewayConfig) -> Vec<Group> {
    let mut names: Vec<&str> = config.upstreams.iter().map(|u| u.group.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut next_index = 0;
    names
        .into_iter()
        .map(|name| {
            let upstreams = config
                .upstreams
                .iter()
                .filter(|spec| spec.group == name)
                .map(|spec| {
                    next_index += 1;
                    Arc::new(Upstream::new(
                        spec.url.clone(),
                        config.upstream_max_in_flight,
                        next_index - 1,
                    ))
                })
                .collect();
            let policy = config
                .policies
                .iter()
                .rev()
                .find(|policy| policy.group == name)
                .map_or(Policy::EventHash, |policy| policy.policy);
            Group::new(name.to_string(), upstreams, policy)
        })
        .collect()
}

fn server_builder(config: &GatewayConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// `count` listeners on one address (`SO_REUSEPORT`: the kernel spreads connections over
/// them), as std listeners so each worker can adopt its own into its own event loop.
fn bind_listeners(
    address: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, GatewayError> {
    let error = |source| GatewayError::Listen { address, source };
    let mut bound = address;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = if bound.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(error)?;
        socket.set_reuseaddr(true).map_err(error)?;
        socket.set_reuseport(true).map_err(error)?;
        socket.bind(bound).map_err(error)?;
        let listener = socket.listen(4096).map_err(error)?;
        // Port 0 picks a port once; the other workers join that one.
        bound = listener.local_addr().map_err(error)?;
        listeners.push(listener.into_std().map_err(error)?);
    }
    Ok(listeners)
}

struct WorkerSetup {
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
}

impl WorkerSetup {
    /// One event loop on this thread until shutdown.
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "gateway worker could not start its event loop");
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(self.listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "gateway worker could not adopt its listener");
                    return;
                }
            };
            accept_loop(
                listener,
                self.proxy,
                self.tls,
                self.builder,
                self.limits,
                self.shutdown,
            )
            .await;
        });
    }
}

struct ConnectionLimits {
    open: Arc<Semaphore>,
    /// A connection that has not sent a whole request head by then is closed.
    first_request_deadline: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&limits.open).try_acquire_owned() else {
            metrics::counter!("gateway_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let builder = Arc::clone(&builder);
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let deadline = limits.first_request_deadline;
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let connection = Connection { peer, tls: false };
                    h1::serve(stream, connection, proxy, builder, deadline, shutdown).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = Connection { peer, tls: true };
                            serve(stream, connection, proxy, &builder, deadline, shutdown).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

pub(crate) async fn serve<IO>(
    io: IO,
    connection: Connection,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    first_request_deadline: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = Arc::clone(&started);
        service_fn(move |request| {
            started.store(true, Ordering::Relaxed);
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.serve(request, connection).await) }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // hyper's header timeout covers a request head once it has begun; this covers a connection
    // that never gets that far (a silent client, or one stalling inside protocol detection).
    let first_request = tokio::time::sleep(first_request_deadline);
    tokio::pin!(first_request);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %connection.peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = &mut first_request, if !started.load(Ordering::Relaxed) => {
                metrics::counter!("gateway_connections_timed_out_total").increment(1);
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
