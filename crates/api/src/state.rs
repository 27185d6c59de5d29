//! What every handler can reach: the store, the token issuer, metrics and settings.

use marquee_auth::TokenIssuer;
use marquee_domain::{Event, EventId, Venue, VenueId};
use marquee_inventory::Inventory;
use marquee_store::{CatalogStore, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the HTTP layer, composed by the binary from flags and environment.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// How long a seat hold lasts (used from the holds issue on; exposed in `/api/v1/config`).
    pub hold_ttl: Duration,
    /// This node's id, sent as `x-marquee-node` so routing is observable.
    pub node_id: String,
    /// The gateways or load balancers in front whose `X-Forwarded-For` names the client (for
    /// per-IP limits); nobody by default.
    pub trusted_proxies: marquee_gateway::TrustedProxies,
    /// Who may use the operators' listener (see [`crate::operator`]).
    pub operator_access: crate::OperatorAccess,
    /// Timeouts and cap of the listeners, the lean paths' included.
    pub http: crate::HttpLimits,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            body_limit_bytes: 1024 * 1024,
            hold_ttl: Duration::from_secs(600),
            node_id: "node-1".to_string(),
            trusted_proxies: marquee_gateway::TrustedProxies::default(),
            operator_access: crate::OperatorAccess::default(),
            http: crate::HttpLimits::default(),
        }
    }
}

/// Venues never change once created, so each node keeps the ones it has read.
#[derive(Clone)]
pub struct VenueCache {
    venues: moka::future::Cache<VenueId, Arc<Venue>>,
}

impl Default for VenueCache {
    fn default() -> Self {
        VenueCache {
            venues: moka::future::Cache::new(10_000),
        }
    }
}

impl VenueCache {
    pub async fn get(
        &self,
        store: &Arc<dyn CatalogStore>,
        id: &VenueId,
    ) -> Result<Option<Arc<Venue>>, StoreError> {
        if let Some(venue) = self.venues.get(id).await {
            return Ok(Some(venue));
        }
        let Some(venue) = store.venue(id).await? else {
            return Ok(None);
        };
        let venue = Arc::new(venue);
        self.venues.insert(id.clone(), venue.clone()).await;
        Ok(Some(venue))
    }
}

/// Events as fans see them on the hot path (seat maps, holds), kept for a short time, through
/// the cache block (TinyLFU, single-flight loads: when an entry expires under an on-sale rush, a
/// thousand concurrent misses make one query instead of a thousand queueing for the pool).
///
/// A node forgets an event the moment it changes it itself, and changes made elsewhere are
/// forgotten when the change stream reaches this node; a load in flight when that happens does
/// not put the old event back. The time limit bounds staleness should that stream lag. What a
/// stale copy could let through is caught later anyway: an order is confirmed only while the
/// stored event is still published. Writes (PATCH, publish, cancel) always read the stored
/// event, since they check its version.
#[derive(Clone)]
pub struct EventCache {
    store: Arc<dyn CatalogStore>,
    events: Arc<marquee_cache::Cache<EventId, Arc<Event>, CatalogEvents>>,
}

/// The catalog as the event cache's store of record.
struct CatalogEvents(Arc<dyn CatalogStore>);

#[async_trait::async_trait]
impl marquee_cache::Backing<EventId, Arc<Event>> for CatalogEvents {
    async fn load(&self, id: &EventId) -> Result<Option<Arc<Event>>, marquee_cache::BackingError> {
        self.0
            .event(id)
            .await
            .map(|event| event.map(Arc::new))
            .map_err(|error| marquee_cache::BackingError(error.to_string()))
    }
}

/// Events in the shared tier as JSON (what the API serves anyway).
pub struct EventJson;

impl marquee_cache::Codec<Arc<Event>> for EventJson {
    fn encode(&self, event: &Arc<Event>) -> Vec<u8> {
        serde_json::to_vec(event.as_ref()).unwrap_or_default()
    }

    fn decode(&self, bytes: &[u8]) -> Option<Arc<Event>> {
        serde_json::from_slice(bytes).ok().map(Arc::new)
    }
}

/// The shared tier the event cache can sit on (Redis, on many nodes).
pub type SharedEvents = Arc<dyn marquee_cache::SharedTier<EventId, Arc<Event>>>;

impl EventCache {
    pub fn new(store: Arc<dyn CatalogStore>, time_to_live: Duration) -> Self {
        Self::with_shared(store, time_to_live, None)
    }

    /// With a shared tier under this node's: one copy of each event for every node.
    pub fn with_shared(
        store: Arc<dyn CatalogStore>,
        time_to_live: Duration,
        shared: Option<SharedEvents>,
    ) -> Self {
        let mut settings = marquee_cache::CacheSettings::new(
            "events",
            marquee_cache::Policy::TinyLfu,
            10_000,
            time_to_live,
        );
        // Ids are random, so a missing one is a typo or a probe; remembering that briefly
        // keeps probes off the database.
        settings.negative_ttl = time_to_live.min(Duration::from_secs(1));
        EventCache {
            events: marquee_cache::Cache::with_shared(
                settings,
                Arc::new(CatalogEvents(Arc::clone(&store))),
                shared,
            ),
            store,
        }
    }

    pub async fn get(&self, id: &EventId) -> Result<Option<Arc<Event>>, StoreError> {
        match self.events.get(id).await {
            Ok(event) => Ok(event),
            // The shared failure is text; ask once more for a typed error of our own.
            Err(_) => Ok(self.store.event(id).await?.map(Arc::new)),
        }
    }

    /// Drops the event, here and in the shared tier; from now on no read on this node returns
    /// what it was before. (Should the shared tier be down, its copy ages out with its TTL.)
    pub async fn forget(&self, id: &EventId) {
        if let Err(error) = self.events.invalidate_shared(id).await {
            tracing::warn!(%error, event = %id, "could not drop the event from the shared cache");
        }
    }
}

/// Seat-map snapshots (which seats are held and sold), through the cache block: under an
/// on-sale rush thousands of fans reload the map of one event, and each snapshot reads every
/// hold and ticket of it. Here a snapshot is read once per seat change, by one request
/// (single-flight), and served to the rest.
///
/// Two things keep it exact rather than merely fresh:
/// - **Version check.** Every read first reads the event's seat sequence (one indexed row)
///   and serves the cached snapshot only if it is that recent. A fan who just held seats on
///   this node sees them held on the next read; the snapshot's `version` is never behind the
///   seat channel's offset at the time of the request.
/// - **Change stream.** Seat changes made anywhere drop the snapshot when they reach this node
///   (`push::apply`), which keeps memory to live maps; the time limit bounds what a snapshot's
///   `now` (holds past their deadline not yet announced as lapsed) can leave behind.
#[derive(Clone)]
pub struct SeatMapCache {
    store: Arc<dyn CatalogStore>,
    snapshots: Arc<marquee_cache::Cache<EventId, Arc<marquee_store::SeatSnapshot>, SeatSnapshots>>,
}

pub struct SeatSnapshots(Arc<dyn CatalogStore>);

#[async_trait::async_trait]
impl marquee_cache::Backing<EventId, Arc<marquee_store::SeatSnapshot>> for SeatSnapshots {
    async fn load(
        &self,
        id: &EventId,
    ) -> Result<Option<Arc<marquee_store::SeatSnapshot>>, marquee_cache::BackingError> {
        self.0
            .seat_snapshot(id, chrono::Utc::now())
            .await
            .map(|snapshot| Some(Arc::new(snapshot)))
            .map_err(|error| marquee_cache::BackingError(error.to_string()))
    }
}

impl SeatMapCache {
    pub fn new(store: Arc<dyn CatalogStore>, time_to_live: Duration) -> SeatMapCache {
        let settings = marquee_cache::CacheSettings::new(
            "seat_maps",
            marquee_cache::Policy::TinyLfu,
            1_000,
            time_to_live,
        );
        SeatMapCache {
            snapshots: marquee_cache::Cache::new(
                settings,
                Arc::new(SeatSnapshots(Arc::clone(&store))),
            ),
            store,
        }
    }

    /// The event's seat snapshot, at least as recent as its seat sequence now.
    pub async fn get(&self, id: &EventId) -> Result<Arc<marquee_store::SeatSnapshot>, StoreError> {
        let current = self.store.seat_version(id).await?;
        for _ in 0..2 {
            match self.snapshots.get(id).await {
                Ok(Some(snapshot)) if snapshot.version >= current => return Ok(snapshot),
                // Older than a change this node can already see: drop it and load again (one
                // load for every reader that arrives meanwhile).
                Ok(Some(_)) | Ok(None) => self.snapshots.invalidate(id),
                Err(_) => break,
            }
        }
        Ok(Arc::new(
            self.store.seat_snapshot(id, chrono::Utc::now()).await?,
        ))
    }

    /// Drops the event's snapshot; no later read on this node returns it.
    pub fn forget(&self, id: &EventId) {
        self.snapshots.invalidate(id);
    }

    pub fn stats(&self) -> marquee_cache::CacheStats {
        self.snapshots.stats()
    }
}

#[derive(Clone)]
pub struct AppState {
    pub venues: VenueCache,
    pub events: EventCache,
    pub seat_maps: SeatMapCache,
    pub store: Arc<dyn CatalogStore>,
    pub inventory: Arc<Inventory>,
    pub tokens: TokenIssuer,
    pub metrics: Option<PrometheusHandle>,
    pub settings: Arc<ApiSettings>,
    pub push: Arc<crate::Push>,
    /// This node's replica of the search index, fed from the outbox.
    pub search: Arc<marquee_search::EventIndex>,
    /// Waiting rooms, with their join limits.
    pub queue: Arc<crate::Queue>,
    /// The `--rate-limit` quotas.
    pub rate_limits: crate::RateLimits,
    /// The node's booking slots (`booking.max_in_flight`): past them, 503 at once.
    pub booking_limit: crate::BookingLimit,
    /// The change stream this node's followers read (the outbox, or JetStream on many nodes).
    pub changes: Arc<dyn marquee_changes::ChangeFeed>,
    /// What else the node needs besides its store (Redis, NATS), for `/readyz`.
    pub dependencies: Arc<Vec<Arc<dyn crate::Dependency>>>,
    /// Jobs and their senders: e-mail, webhooks, reminders.
    pub notifications: Arc<crate::Notifications>,
    /// Live streams: ingest, transcoders, playback tokens, recordings.
    pub live: Arc<crate::live::Live>,
}

/// A backend a node needs besides its store (Redis, NATS), checked by `/readyz`.
#[async_trait::async_trait]
pub trait Dependency: Send + Sync + 'static {
    /// What `/readyz` and its 503 name it (`"redis"`, `"nats"`).
    fn name(&self) -> &'static str;
    /// `Ok` when it answers; the error says how it failed.
    async fn check(&self) -> Result<(), String>;
}
