//! A read-through cache in front of a [`Backing`] store: TTLs, single-flight loads, negative
//! caching, invalidation that can never be undone by a load already in flight, and the three
//! write modes.

use crate::local::{LocalTier, Policy};
use crate::shared::{Shared, SharedTier};
use async_trait::async_trait;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Why the store behind a cache could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackingError(pub String);

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("the store behind the cache failed: {0}")]
    Backing(#[from] BackingError),
    #[error("{failed} of the cache's unwritten values could not be written back: {first}")]
    WriteBack { failed: usize, first: BackingError },
}

/// The source of truth a cache sits in front of.
#[async_trait]
pub trait Backing<K, V>: Send + Sync + 'static {
    /// The value now, or `None` when there is none (cached too, as a negative entry).
    async fn load(&self, key: &K) -> Result<Option<V>, BackingError>;

    /// Writes a value; read-only stores keep the default.
    async fn store(&self, _key: &K, _value: &V) -> Result<(), BackingError> {
        Err(BackingError("this store is read-only".into()))
    }
}

/// How [`Cache::put`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The store first, then the cache: a read after `put` returns never sees an older value.
    Through,
    /// The store only, and the key's cache entry dropped: for values written more often than
    /// read, which would only push readers' entries out.
    Around,
    /// The cache now, the store later, in batches: every `interval` and on
    /// [`Cache::shutdown`], or at once when `max_dirty` values are waiting. A crash loses what
    /// was not written yet, so this is for values that may be lost (counters, last-seen
    /// marks) — never orders or holds.
    Back {
        max_dirty: usize,
        interval: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// A name for metrics (`cache` label).
    pub name: &'static str,
    pub policy: Policy,
    pub capacity: u64,
    /// How long a found value is served before it is loaded again.
    pub ttl: Duration,
    /// How long "there is none" is served (shorter: absence is usually about to change).
    pub negative_ttl: Duration,
    pub write: WriteMode,
}

impl CacheSettings {
    pub fn new(name: &'static str, policy: Policy, capacity: u64, ttl: Duration) -> Self {
        CacheSettings {
            name,
            policy,
            capacity,
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(5)),
            write: WriteMode::Through,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Loads from the store (one per miss that was not joined to another's load).
    pub loads: u64,
}

/// What the local tier holds: a value or its known absence, and until when it may be served.
#[derive(Clone)]
struct Entry<V> {
    value: Option<V>,
    fresh_until: Instant,
}

type Flight<V> = Arc<OnceCell<Result<Option<V>, BackingError>>>;

/// Invalidation generations, striped by key hash: a load remembers its key's stripe before it
/// reads the store and caches its result only if no invalidation of that stripe came since. A
/// shared stripe can only cost a skipped insert, never a stale one.
const STRIPES: usize = 256;

pub struct Cache<K, V, B> {
    settings: CacheSettings,
    tier: LocalTier<K, Entry<V>>,
    /// Between this node's tier and the store: one copy for every node (Redis).
    shared: Option<Arc<dyn SharedTier<K, V>>>,
    backing: Arc<B>,
    /// Loads in flight, one per key; also the lock that orders invalidations against inserts.
    flights: Mutex<HashMap<K, Flight<V>>>,
    generations: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    /// Write-back: values in the cache not yet in the store.
    dirty: tokio::sync::Mutex<HashMap<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    /// Resolved once: the macros look a metric up by name and labels on every call.
    counters: Counters,
}

struct Counters {
    hits: metrics::Counter,
    misses: metrics::Counter,
    loads: metrics::Counter,
    write_back_failures: metrics::Counter,
}

impl<K, V, B> Cache<K, V, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    B: Backing<K, V>,
{
    pub fn new(settings: CacheSettings, backing: Arc<B>) -> Arc<Self> {
        Self::with_shared(settings, backing, None)
    }

    /// A cache with a shared tier under the local one. Every node must then apply an
    /// invalidation with [`Cache::invalidate_shared`].
    pub fn with_shared(
        settings: CacheSettings,
        backing: Arc<B>,
        shared: Option<Arc<dyn SharedTier<K, V>>>,
    ) -> Arc<Self> {
        let name = settings.name;
        let cache = Arc::new(Cache {
            tier: LocalTier::new(settings.policy, settings.capacity),
            shared,
            settings,
            backing,
            flights: Mutex::new(HashMap::new()),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
            dirty: tokio::sync::Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            counters: Counters {
                hits: metrics::counter!("cache_hits_total", "cache" => name),
                misses: metrics::counter!("cache_misses_total", "cache" => name),
                loads: metrics::counter!("cache_loads_total", "cache" => name),
                write_back_failures: metrics::counter!(
                    "cache_write_back_failures_total",
                    "cache" => name
                ),
            },
        });
        if let WriteMode::Back { interval, .. } = cache.settings.write {
            // The flusher holds only a weak handle: dropping the cache ends it.
            let weak = Arc::downgrade(&cache);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(cache) = weak.upgrade() else { return };
                    if let Err(error) = cache.flush().await {
                        tracing::warn!(cache = cache.settings.name, %error, "write-back flush failed; the values stay dirty");
                    }
                }
            });
        }
        cache
    }

    fn stripe(&self, key: &K) -> &AtomicU64 {
        &self.generations[(self.hasher.hash_one(key) as usize) % STRIPES]
    }

    fn lock_flights(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value for `key`: from the cache while fresh, else loaded once however many ask at
    /// the same moment (the others wait for that load and share its answer).
    pub async fn get(&self, key: &K) -> Result<Option<V>, CacheError> {
        if let Some(entry) = self.tier.get(key) {
            if entry.fresh_until > Instant::now() {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.counters.hits.increment(1);
                return Ok(entry.value);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.counters.misses.increment(1);
        let flight = Arc::clone(
            self.lock_flights()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(OnceCell::new())),
        );
        let result = flight
            .get_or_init(|| async {
                // A load that finished between the look above and joining its flight.
                match self.tier.get(key) {
                    Some(entry) if entry.fresh_until > Instant::now() => Ok(entry.value),
                    _ => self.load(key).await,
                }
            })
            .await
            .clone();
        let mut flights = self.lock_flights();
        if flights
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            flights.remove(key);
        }
        Ok(result?)
    }

    async fn load(&self, key: &K) -> Result<Option<V>, BackingError> {
        let generation = self.stripe(key).load(Ordering::Acquire);
        let mut fill_version = None;
        if let Some(shared) = &self.shared {
            match shared.lookup(key).await {
                Ok(Shared::Hit(value)) => {
                    self.insert_unless_invalidated(key, generation, &value);
                    return Ok(value);
                }
                Ok(Shared::Miss { version }) => fill_version = Some(version),
                // The shared tier is an optimisation: without it, the store answers.
                Err(error) => {
                    tracing::warn!(cache = self.settings.name, %error, "shared cache tier unavailable")
                }
            }
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.counters.loads.increment(1);
        let loaded = self.backing.load(key).await?;
        if let (Some(shared), Some(version)) = (&self.shared, fill_version) {
            let ttl = self.ttl_for(&loaded);
            if let Err(error) = shared.fill(key, &loaded, ttl, version).await {
                tracing::warn!(cache = self.settings.name, %error, "could not fill the shared cache tier");
            }
        }
        self.insert_unless_invalidated(key, generation, &loaded);
        Ok(loaded)
    }

    fn ttl_for(&self, value: &Option<V>) -> Duration {
        if value.is_some() {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        }
    }

    fn insert_unless_invalidated(&self, key: &K, generation: u64, value: &Option<V>) {
        let flights = self.lock_flights();
        // Under the lock invalidations take: either the invalidation came first and this load
        // may have read the old value (so it is not cached), or it comes after and removes it.
        if self.stripe(key).load(Ordering::Acquire) == generation {
            self.tier.insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    fresh_until: Instant::now() + self.ttl_for(value),
                },
            );
        }
        drop(flights);
    }

    /// [`Cache::invalidate`] in the shared tier too: there first, so no reader here can fetch
    /// the old value from it after the local entry is gone.
    pub async fn invalidate_shared(&self, key: &K) -> Result<(), CacheError> {
        let shared = match &self.shared {
            Some(shared) => shared.invalidate(key).await.map_err(CacheError::Backing),
            None => Ok(()),
        };
        self.invalidate(key);
        shared
    }

    /// Forgets `key` (the store changed). Once this returns, no read sees a value loaded
    /// before it: the entry is gone, a load in flight will not cache what it read, and later
    /// readers start a load of their own.
    pub fn invalidate(&self, key: &K) {
        let mut flights = self.lock_flights();
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
        self.tier.remove(key);
        flights.remove(key);
    }

    /// Writes `value` for `key` by the cache's [`WriteMode`].
    pub async fn put(&self, key: K, value: V) -> Result<(), CacheError> {
        match self.settings.write {
            WriteMode::Through => {
                self.backing.store(&key, &value).await?;
                self.invalidate_shared(&key).await?;
                self.replace(key, Some(value));
            }
            WriteMode::Around => {
                self.backing.store(&key, &value).await?;
                self.invalidate_shared(&key).await?;
            }
            WriteMode::Back { max_dirty, .. } => {
                let waiting = {
                    let mut dirty = self.dirty.lock().await;
                    dirty.insert(key.clone(), value.clone());
                    dirty.len()
                };
                self.replace(key, Some(value));
                if waiting >= max_dirty {
                    self.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// The cache's entry for `key` set to `value`, ordered like an invalidation so that no load
    /// in flight overwrites it with what it read before.
    fn replace(&self, key: K, value: Option<V>) {
        let mut flights = self.lock_flights();
        self.stripe(&key).fetch_add(1, Ordering::AcqRel);
        flights.remove(&key);
        self.tier.insert(
            key,
            Entry {
                value,
                fresh_until: Instant::now() + self.settings.ttl,
            },
        );
    }

    /// Writes every waiting write-back value to the store. Values that fail stay waiting
    /// (unless a newer one was put meanwhile) for the next flush.
    pub async fn flush(&self) -> Result<(), CacheError> {
        let batch = std::mem::take(&mut *self.dirty.lock().await);
        let mut failed = Vec::new();
        let mut first = None;
        for (key, value) in batch {
            let stored = match self.backing.store(&key, &value).await {
                Ok(()) => match &self.shared {
                    Some(shared) => shared.invalidate(&key).await,
                    None => Ok(()),
                },
                Err(error) => Err(error),
            };
            if let Err(error) = stored {
                first.get_or_insert(error);
                failed.push((key, value));
            }
        }
        let Some(first) = first else {
            return Ok(());
        };
        let count = failed.len();
        let mut dirty = self.dirty.lock().await;
        for (key, value) in failed {
            dirty.entry(key).or_insert(value);
        }
        self.counters.write_back_failures.increment(count as u64);
        Err(CacheError::WriteBack {
            failed: count,
            first,
        })
    }

    /// Values put in write-back mode and not yet written.
    pub async fn dirty_len(&self) -> usize {
        self.dirty.lock().await.len()
    }

    /// Writes back what is waiting; call before the process exits.
    pub async fn shutdown(&self) -> Result<(), CacheError> {
        self.flush().await
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
        }
    }
}
