//! A running node: the store opened, the listeners bound, graceful shutdown.

use crate::ServerConfig;
use anyhow::Context;
use axum::serve::ListenerExt;
use marquee_api::HttpLimits;
use marquee_api::{ApiSettings, AppState, Push};
use marquee_auth::TokenIssuer;
use marquee_inventory::{Inventory, InventorySettings, TestPaymentProvider, TicketSigner};
use marquee_lease::{InProcessLeases, LeaseStore, RedisLeases};
use marquee_push::{InProcessHub, PushHub, RedisHub};
use marquee_store::{redact_url, CatalogStore, SqlCatalogStore, StoreOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node that is serving. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    lapse_follower: JoinHandle<()>,
    change_feed: JoinHandle<()>,
    indexer: JoinHandle<()>,
    queue_driver: JoinHandle<()>,
    relay: Option<JoinHandle<()>>,
    notifications: Vec<JoinHandle<()>>,
    pub rtmp_addr: Option<SocketAddr>,
    pub srt_addr: Option<SocketAddr>,
    live_tasks: Vec<JoinHandle<()>>,
    transcoders: JoinHandle<()>,
    stop_transcoders: watch::Sender<bool>,
}

impl Server {
    /// Opens the store (running migrations), binds the listeners and starts serving.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = open_sql_store(&config).await?;
        // On PostgreSQL the jobs live in the catalog's database: one pool per node there.
        let shared = store.backend() == marquee_store::Backend::Postgres;
        let jobs_pool = shared.then(|| store.pool());
        let keyring = config.keyring(&store).await?;
        Self::start_with(config, store, jobs_pool, keyring).await
    }

    pub async fn start_with_store(
        config: ServerConfig,
        store: Arc<dyn CatalogStore>,
    ) -> anyhow::Result<Server> {
        let keyring = marquee_auth::Keyring::from_secret(&config.signing_secret()?);
        Self::start_with(config, store, None, keyring).await
    }

    async fn start_with(
        config: ServerConfig,
        store: Arc<dyn CatalogStore>,
        jobs_pool: Option<sqlx::AnyPool>,
        keyring: marquee_auth::Keyring,
    ) -> anyhow::Result<Server> {
        let metrics = marquee_telemetry::install_metrics()?;
        // Before any hash: argon2 at most this many at once (0: one per core).
        marquee_auth::set_hashing_concurrency(config.hashing_concurrency);
        let leases = open_leases(&config).await?;
        let inventory = Inventory::new(
            store.clone(),
            Arc::clone(&leases),
            Arc::new(TestPaymentProvider::default()),
            TicketSigner::from_keyring(&keyring),
            InventorySettings {
                hold_ttl: config.hold_ttl,
                payment_timeout: config.payment_timeout,
                idempotency_retention: config.idempotency_retention,
                ..InventorySettings::default()
            },
        );
        let lapse_follower = inventory.spawn_lapse_follower();
        let (stop, stopped) = watch::channel(false);
        spawn_keyring_reload(keyring.clone(), config.key_reload_interval, stopped.clone());
        let hub = open_push_hub(&config).await?;
        let mut dependencies: Vec<Arc<dyn marquee_api::Dependency>> = Vec::new();
        if config.redis_url.is_some() {
            dependencies.push(Arc::new(RedisDependency(Arc::clone(&leases))));
        }
        let (changes, relay) = open_change_stream(&config, &store, stopped.clone()).await?;
        if relay.is_some() {
            dependencies.push(Arc::new(NatsDependency(Arc::clone(&changes))));
        }
        let search = Arc::new(open_search_index(&config)?);
        let indexer = marquee_search::spawn_indexer(
            search.clone(),
            store.clone(),
            changes.clone(),
            stopped.clone(),
        );
        let rate_limiter = open_rate_limiter(&config).await?;
        let live_streams = marquee_media::LiveStreams::with_limit(
            config.live.reconnect_grace,
            config.live.max_transcodes,
        );
        let rtmp_listener = match config.live.rtmp_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the RTMP listener {addr}"))?,
            ),
            None => None,
        };
        let rtmp_addr = rtmp_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let srt = match config.live.srt_listen {
            Some(addr) => Some(
                marquee_media::spawn_srt_listener(
                    addr,
                    Arc::new(marquee_api::StreamKeyGate {
                        store: store.clone(),
                    }),
                    Arc::clone(&live_streams),
                    marquee_media::SrtSettings {
                        ffmpeg: config.live.ffmpeg.clone(),
                        ..marquee_media::SrtSettings::default()
                    },
                    stopped.clone(),
                )
                .await
                .with_context(|| format!("binding the SRT listener {addr}"))?,
            ),
            None => None,
        };
        let srt_addr = srt.as_ref().map(|srt| srt.local_addr);
        let recordings = match &config.live.recordings_url {
            Some(url) => marquee_media::RecordingStore::from_url(url),
            None => marquee_media::RecordingStore::local(&config.data_dir.join("recordings")),
        }
        .context("opening the recordings store")?;
        let media_root = config.data_dir.join("live");
        let live = Arc::new(marquee_api::Live::new(
            Arc::clone(&live_streams),
            marquee_media::PlaybackTokens::from_keyring(&keyring),
            marquee_api::LiveSettings {
                rtmp_url: config.live.rtmp_public_url.clone().unwrap_or_else(|| {
                    let addr = rtmp_addr.unwrap_or_else(|| ([127, 0, 0, 1], 1935).into());
                    format!("rtmp://{addr}/live")
                }),
                srt_url: config
                    .live
                    .srt_public_url
                    .clone()
                    .or_else(|| srt_addr.map(|addr| format!("srt://{addr}"))),
                public_url: config.live.public_url.clone(),
                token_ttl: config.live.playback_token_ttl,
                media_root: media_root.clone(),
            },
            recordings.clone(),
        ));
        let state = AppState {
            venues: marquee_api::VenueCache::default(),
            events: marquee_api::EventCache::with_shared(
                store.clone(),
                Duration::from_secs(2),
                open_shared_events(&config).await?,
            ),
            seat_maps: marquee_api::SeatMapCache::new(store.clone(), Duration::from_secs(2)),
            inventory,
            store,
            tokens: TokenIssuer::from_keyring(&keyring, config.token_ttl),
            metrics: Some(metrics.clone()),
            settings: Arc::new(ApiSettings {
                body_limit_bytes: config.body_limit_bytes,
                hold_ttl: config.hold_ttl,
                node_id: config.node_id.clone(),
                trusted_proxies: marquee_gateway::TrustedProxies::new(
                    config.trusted_proxies.clone(),
                ),
                operator_access: marquee_api::OperatorAccess::new(config.operator_token.as_deref()),
                http: config.http,
            }),
            push: Arc::new(Push::new(hub, config.push.clone(), stopped.clone())),
            search,
            queue: Arc::new(marquee_api::Queue::new(
                open_waiting_room(&config, &keyring).await?,
                config.queue.clone(),
                rate_limiter.clone(),
            )),
            rate_limits: marquee_api::RateLimits::new(rate_limiter, config.rate_limits.clone())
                .with_auth_limits(config.auth_limits),
            booking_limit: marquee_api::BookingLimit::new(config.booking_max_in_flight),
            changes,
            dependencies: Arc::new(dependencies),
            notifications: Arc::new(open_notifications(&config, jobs_pool).await?),
            live,
        };
        let mut live_tasks = vec![marquee_api::spawn_status_recorder(
            state.clone(),
            stopped.clone(),
        )];
        if let Some(srt) = srt {
            live_tasks.push(srt.task);
        }
        if let Some(listener) = rtmp_listener {
            live_tasks.push(marquee_media::spawn_rtmp_listener(
                listener,
                Arc::new(marquee_api::StreamKeyGate {
                    store: state.store.clone(),
                }),
                Arc::clone(&live_streams),
                marquee_media::IngestLimits::default(),
                stopped.clone(),
            ));
        }
        // Stopped by the streams ending (see `shutdown`), not by the stop signal, so that every
        // ffmpeg finishes its files first.
        let (stop_transcoders, transcoders_stop) = watch::channel(false);
        let transcoders = marquee_media::spawn_transcoders(
            Arc::clone(&live_streams),
            marquee_media::TranscodeSettings {
                ffmpeg: config.live.ffmpeg.clone(),
                output_root: media_root,
                preset: config.live.preset.clone(),
                ..marquee_media::TranscodeSettings::default()
            },
            Arc::new(marquee_api::RecordingKeeper {
                store: state.store.clone(),
                recordings,
            }),
            transcoders_stop,
        );
        let change_feed = marquee_api::spawn_change_feed(state.clone(), stopped.clone());
        let notifications = marquee_api::spawn_notifications(state.clone(), stopped.clone());
        let queue_driver = marquee_api::spawn_queue_driver(state.clone(), stopped.clone());
        let mut tasks = Vec::new();

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        // The web app's pages and assets sit beside the API on the same listener.
        let router = marquee_api::router(state.clone()).merge(marquee_web::router());
        // Responses are written whole; Nagle would hold a small one back until the client's
        // delayed ACK of the previous one (tens of milliseconds on an idle keep-alive connection).
        let nodelay = |stream: &mut marquee_api::TimedIo<marquee_api::ZeroCopyStream>| {
            let _ = stream.get_ref().get_ref().set_nodelay(true);
        };
        // Either way, cached live segments go out with sendfile (see `marquee_api::zero_copy`).
        let lean = marquee_api::LeanPaths {
            sse: config.push_lean_sse,
            media: config.media_lean_http,
        };
        if lean.sse || lean.media {
            // SSE and media connections are served by lean paths of their own; the rest by
            // axum.
            // The lean listener applies the cap and idle timeout itself, across its paths.
            let listener = marquee_api::lean_listener(listener, state.clone(), lean)?;
            tasks.push(serve(
                listener.tap_io(nodelay),
                router,
                config.http,
                stopped.clone(),
            ));
        } else {
            let listener =
                marquee_api::connections::limited(marquee_api::zero_copy(listener), &config.http);
            tasks.push(serve(
                listener.tap_io(nodelay),
                router,
                config.http,
                stopped.clone(),
            ));
        }

        let admin_addr = match config.admin_listen {
            Some(admin_listen) => {
                let listener = TcpListener::bind(admin_listen)
                    .await
                    .with_context(|| format!("binding admin listener {admin_listen}"))?;
                let admin_addr = listener.local_addr()?;
                if config.operator_token.is_none() && !admin_listen.ip().is_loopback() {
                    tracing::warn!(
                        %admin_addr,
                        "no operator token: the operators' listener answers loopback peers only"
                    );
                }
                tasks.push(serve(
                    marquee_api::connections::limited(listener, &config.http),
                    marquee_api::admin_router(state.clone()),
                    config.http,
                    stopped.clone(),
                ));
                Some(admin_addr)
            }
            None => None,
        };

        // Histograms are summarised lazily; keep them bounded between scrapes.
        let mut upkeep_stopped = stopped;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.run_upkeep(),
                    _ = upkeep_stopped.changed() => break,
                }
            }
        });

        tracing::info!(%addr, admin = ?admin_addr, node = %config.node_id, "serving");
        Ok(Server {
            addr,
            admin_addr,
            state,
            stop,
            tasks,
            lapse_follower,
            change_feed,
            indexer: indexer.task,
            queue_driver,
            relay,
            notifications,
            rtmp_addr,
            srt_addr,
            live_tasks,
            transcoders,
            stop_transcoders,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, and returns when every listener is done.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        // Live shows end: each transcoder writes its last segments and its recording.
        self.state
            .live
            .streams
            .end_all(Some("the server is shutting down".into()));
        for task in self.live_tasks {
            task.abort();
            let _ = task.await;
        }
        let _ = self.stop_transcoders.send(true);
        if tokio::time::timeout(Duration::from_secs(20), self.transcoders)
            .await
            .is_err()
        {
            tracing::warn!("transcoders did not stop within 20 s");
        }
        for task in self.tasks {
            task.await.context("server task panicked")??;
        }
        // Wait for the aborted tasks to be dropped, not just told: they hold the node's state
        // (the search index among it), and a restart in the same data dir needs it released.
        for task in [self.lapse_follower, self.change_feed, self.queue_driver] {
            task.abort();
            let _ = task.await;
        }
        // The relay gives its lease back when told to stop, so another node takes over at once.
        if let Some(relay) = self.relay {
            if tokio::time::timeout(Duration::from_secs(5), relay)
                .await
                .is_err()
            {
                tracing::warn!("change relay did not stop within 5 s");
            }
        }
        // Workers finish the jobs they are running (or leave their claims to lapse).
        for task in self.notifications {
            if tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .is_err()
            {
                tracing::warn!("a jobs worker did not stop within 15 s");
            }
        }
        // The indexer commits what it applied since its last commit, so a restart replays less.
        if tokio::time::timeout(Duration::from_secs(10), self.indexer)
            .await
            .is_err()
        {
            tracing::warn!("search indexer did not stop within 10 s");
        }
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        self.shutdown().await
    }
}

pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn CatalogStore>> {
    Ok(open_sql_store(config).await?)
}

pub async fn open_sql_store(config: &ServerConfig) -> anyhow::Result<Arc<SqlCatalogStore>> {
    let url = config.database_url();
    let store = SqlCatalogStore::connect(
        &url,
        StoreOptions {
            max_connections: config.database_max_connections,
            write_batches: config.database_write_batches as usize,
            idle_transaction_timeout: config.database_idle_transaction_timeout,
            ..StoreOptions::default()
        },
    )
    .await
    .with_context(|| format!("opening the store at {}", redact_url(&url)))?;
    Ok(Arc::new(store))
}

/// The jobs queue (SQLite beside an embedded catalog, the catalog's PostgreSQL at scale) and
/// the senders of e-mail and webhooks.
pub async fn open_notifications(
    config: &ServerConfig,
    catalog_pool: Option<sqlx::AnyPool>,
) -> anyhow::Result<marquee_api::Notifications> {
    let url = config.jobs_url();
    let jobs = match catalog_pool {
        Some(pool) => marquee_jobs::SqlJobQueue::on_postgres_pool(pool).await,
        None => marquee_jobs::SqlJobQueue::connect(&url, 4).await,
    }
    .with_context(|| format!("opening the jobs queue at {}", redact_url(&url)))?;
    let mailer: Option<Arc<dyn marquee_notify::Mailer>> = match &config.smtp_url {
        Some(smtp) => Some(Arc::new(
            marquee_notify::SmtpMailer::new(smtp, &config.mail_from, Duration::from_secs(30))
                .with_context(|| format!("the SMTP settings ({})", redact_url(smtp)))?,
        )),
        None => {
            tracing::info!("no --smtp-url: e-mail is off");
            None
        }
    };
    Ok(marquee_api::Notifications::new(
        Arc::new(jobs),
        mailer,
        config.notifications.clone(),
    ))
}

/// This node's search index replica, in the data dir (each node keeps its own, fed by the same
/// change stream).
pub fn open_search_index(config: &ServerConfig) -> anyhow::Result<marquee_search::EventIndex> {
    let path = config.data_dir.join("search");
    marquee_search::EventIndex::open(&marquee_search::IndexOptions {
        path: Some(path.clone()),
        ..marquee_search::IndexOptions::default()
    })
    .with_context(|| {
        format!(
            "opening the search index at {} (is another node using this data dir?)",
            path.display()
        )
    })
}

/// Waiting rooms on Redis when a Redis URL is configured (every node sees one queue), else in
/// this process.
pub async fn open_waiting_room(
    config: &ServerConfig,
    keyring: &marquee_auth::Keyring,
) -> anyhow::Result<Arc<dyn marquee_waitroom::WaitingRoom>> {
    let signer = marquee_waitroom::RoomSigner::from_keyring(keyring);
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            marquee_waitroom::RedisWaitingRoom::connect(
                url,
                &format!("{}waitroom", config.redis_prefix),
                signer,
                config.queue_timings,
            )
            .await
            .with_context(|| format!("connecting waiting rooms to Redis at {}", redact_url(url)))?,
        ),
        None => Arc::new(marquee_waitroom::InProcessWaitingRoom::new(
            signer,
            config.queue_timings,
        )),
    })
}

/// With a Redis URL, the event cache's shared tier: one copy of each event for every node, so
/// an event's first read after it changes is one query for the cluster rather than one a node.
async fn open_shared_events(
    config: &ServerConfig,
) -> anyhow::Result<Option<marquee_api::SharedEvents>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let connection = marquee_redis::connect(url)
        .await
        .with_context(|| format!("connecting the event cache to Redis at {}", redact_url(url)))?;
    let prefix = format!("{}cache:events:", config.redis_prefix);
    Ok(Some(Arc::new(marquee_cache::RedisTier::new(
        connection,
        prefix,
        marquee_api::EventJson,
    ))))
}

/// Rate limits (the `--rate-limit` quotas, waiting-room joins) counted on Redis when a Redis URL
/// is configured, so every node shares one allowance per key, else in this process.
pub async fn open_rate_limiter(
    config: &ServerConfig,
) -> anyhow::Result<Arc<dyn marquee_ratelimit::RateLimiter>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            marquee_ratelimit::RedisRateLimiter::connect(url, &config.redis_prefix)
                .await
                .with_context(|| {
                    format!("connecting rate limits to Redis at {}", redact_url(url))
                })?,
        ),
        None => Arc::new(marquee_ratelimit::InProcessRateLimiter::new()),
    })
}

/// The change stream followers read: JetStream when a NATS URL is configured (this node also
/// runs for the relay lease), else the outbox directly.
async fn open_change_stream(
    config: &ServerConfig,
    store: &Arc<dyn CatalogStore>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<dyn marquee_changes::ChangeFeed>, Option<JoinHandle<()>>)> {
    // Followers wait on the feed; this is how often the outbox is read while they do.
    const OUTBOX_POLL: Duration = Duration::from_millis(25);
    const WINDOW: usize = 16_384;
    let Some(url) = &config.nats_url else {
        let feed = marquee_changes::OutboxFeed::new(Arc::clone(store), OUTBOX_POLL);
        return Ok((Arc::new(feed), None));
    };
    let client = marquee_changes::connect_nats(url, &config.node_id)
        .await
        .with_context(|| format!("connecting to NATS at {}", redact_url(url)))?;
    let feed = marquee_changes::JetStreamFeed::start(
        Arc::clone(store),
        client.clone(),
        &config.nats_stream,
        WINDOW,
        OUTBOX_POLL,
    )
    .await
    .with_context(|| format!("opening the change stream {}", config.nats_stream))?;
    // Its own lease store: the relay's lease lapsing is no hold's business.
    let relay_leases: Arc<dyn LeaseStore> = match &config.redis_url {
        Some(redis) => Arc::new(
            RedisLeases::connect(redis, &format!("{}relay:", config.redis_prefix))
                .await
                .with_context(|| format!("connecting to Redis at {}", redact_url(redis)))?,
        ),
        None => Arc::new(InProcessLeases::new()),
    };
    let relay = marquee_changes::spawn_relay(
        Arc::clone(store),
        relay_leases,
        async_nats::jetstream::new(client.clone()),
        // A holder of its own per process: a lease's holder is granted its own lease again (see
        // `LeaseStore::acquire`), and node ids are names operators give, which two processes
        // may share; two relays at once would each copy the outbox.
        marquee_changes::RelaySettings::new(
            &config.nats_stream,
            format!("{}/{}", config.node_id, uuid::Uuid::new_v4()),
        ),
        stopped,
    );
    Ok((Arc::new(feed), Some(relay)))
}

/// `/readyz`'s view of Redis: the lease store's connection (leases are what sales need).
struct RedisDependency(Arc<dyn LeaseStore>);

#[async_trait::async_trait]
impl marquee_api::Dependency for RedisDependency {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|error| error.to_string())
    }
}

/// `/readyz`'s view of NATS: the change stream's own connection.
struct NatsDependency(Arc<dyn marquee_changes::ChangeFeed>);

#[async_trait::async_trait]
impl marquee_api::Dependency for NatsDependency {
    fn name(&self) -> &'static str {
        "nats"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.check().await.map_err(|error| error.to_string())
    }
}

/// Redis leases when a Redis URL is configured, else in-process ones.
pub async fn open_leases(config: &ServerConfig) -> anyhow::Result<Arc<dyn LeaseStore>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            RedisLeases::connect(url, &config.redis_prefix)
                .await
                .with_context(|| format!("connecting to Redis at {}", redact_url(url)))?,
        ),
        None => Arc::new(InProcessLeases::new()),
    })
}

/// Push on Redis when a Redis URL is configured (every node sees every message with the same
/// offsets), else in this process.
pub async fn open_push_hub(config: &ServerConfig) -> anyhow::Result<Arc<dyn PushHub>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            RedisHub::connect(url, &config.redis_prefix, config.push_hub)
                .await
                .with_context(|| format!("connecting push to Redis at {}", redact_url(url)))?,
        ),
        None => Arc::new(InProcessHub::new(config.push_hub)),
    })
}

/// Reads the keyring again every `interval`, and soon after a signer met a key id it did not
/// know (rate-limited by the keyring), so keys rotated on any node reach this one. A failed
/// reload keeps the keys already loaded.
fn spawn_keyring_reload(
    keyring: marquee_auth::Keyring,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let result = tokio::select! {
                _ = tick.tick() => keyring.reload().await,
                () = keyring.reload_requested() => {
                    keyring.reload_unless_recent().await;
                    Ok(())
                }
                _ = stopped.changed() => break,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "reloading the signing keys failed; keeping the loaded ones");
            }
        }
    });
}

/// Serves `router` under the listener's limits (header and body timeouts here; the cap and
/// idle timeout come with the listener) until the node stops.
fn serve<L>(
    listener: L,
    router: axum::Router,
    limits: HttpLimits,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(marquee_api::connections::serve(
        listener, router, limits, stopped,
    ))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
