//! The cache block: bounded in-process caches with real eviction policies, in front of a store
//! of record.
//!
//! - [`LocalTier`]: a bounded map evicting by [`Policy`] — LRU, LFU, FIFO or TinyLFU. LRU and
//!   TinyLFU are moka's (its W-TinyLFU admission is the part worth not writing again); moka has
//!   neither pure LFU nor FIFO, so those two are written here, small and `O(log n)`.
//! - [`Cache`]: read-through over a [`Backing`] store with TTLs, **single-flight** loads (a
//!   stampede on a cold key makes one load; the others share its answer), **negative caching**
//!   (a known absence is served for its own, shorter TTL), invalidation that a load already in
//!   flight cannot undo (striped generations checked under the same lock invalidation takes), and
//!   three write modes: **through**, **around** and **back** (a bounded set of unwritten values,
//!   flushed on an interval, when full, and on shutdown).
//!
//! - [`RedisTier`]: an optional [`SharedTier`] under every node's local tier, one copy per key
//!   for all nodes, with per-key versions so a fill that raced an invalidation is dropped inside
//!   Redis (one Lua round trip per lookup, fill or invalidation).
//!
//! TTLs run on tokio's clock, so tests drive them with paused time. Metrics:
//! `cache_hits_total`, `cache_misses_total`, `cache_loads_total`,
//! `cache_write_back_failures_total`, each labelled `cache`.
//!
//! `marquee-bench cache` measures each policy's hit ratio on a Zipf(1.0) trace (BENCHMARKS.md).

mod cache;
mod local;
mod shared;

pub use cache::{Backing, BackingError, Cache, CacheError, CacheSettings, CacheStats, WriteMode};
pub use local::{LocalTier, Policy};
pub use shared::{Codec, RedisTier, Shared, SharedTier};
