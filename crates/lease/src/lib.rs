//! Leases: the distributed lock of the seat inventory.
//!
//! A lease holds many keys at once, all or nothing, for a TTL. Every grant carries a
//! [`FencingToken`] larger than every token granted before it, so a storage write can refuse a
//! holder whose lease lapsed and was granted to someone else meanwhile (the holder may not know
//! yet: it may have paused, or its network may be slow). Leases are extended, released, or they
//! lapse by themselves: a delay queue fires at each deadline and announces the lapse on
//! [`LeaseStore::lapses`], so nothing needs a request or a cron job to free a key.
//!
//! Two implementations pass one conformance suite (`tests/conformance.rs`):
//! - [`InProcessLeases`] for one node (embedded mode);
//! - [`RedisLeases`] for many nodes, on one Redis server or a Redis Cluster: acquire, extend and
//!   release are single Lua scripts, so they are atomic on the server; tokens come from a Redis
//!   counter per hash tag (below).
//!
//! **Hash tags.** A key may carry a Redis-style hash tag, the text in its first `{…}` (say
//! `seat:{event-1}:A12`). All keys of one lease must carry the same tag, or none (then they share
//! one store-wide group); both stores refuse a lease that mixes them, so a caller learns it on
//! the in-process store too. The tag is what lets a lease's keys, and its fencing counter, live
//! in one Redis Cluster slot, while leases of different tags spread over the cluster. Tokens are
//! therefore monotonic per tag: every key a token guards shares that tag, which is what fencing
//! needs (a storage write compares tokens of one key).
//!
//! **Boundary:** keys are opaque strings (only their tag means something here). This crate knows
//! nothing of seats or events.

mod in_process;
mod redis_leases;

pub use in_process::InProcessLeases;
pub use redis_leases::RedisLeases;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;
use tokio::sync::broadcast;

/// A number that grows with every grant. Writes guarded by a lease carry it; storage keeps the
/// largest token it has seen per key and refuses smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub keys: Vec<String>,
    pub holder: String,
    pub token: FencingToken,
    pub expires_at: DateTime<Utc>,
}

/// A lease that ran out without being released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedLease {
    pub keys: Vec<String>,
    pub holder: String,
    pub token: FencingToken,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Some keys are held by another lease; nothing was acquired.
    #[error("keys are held by another lease: {keys:?}")]
    Taken { keys: Vec<String> },
    /// The lease is no longer current: it lapsed, was released, or was never granted.
    #[error("the lease is no longer held")]
    NotHeld,
    #[error("invalid lease request: {0}")]
    Invalid(&'static str),
    #[error("the lease backend is unavailable: {0}")]
    Unavailable(String),
}

/// Most keys one lease may cover; bounds the work of one request.
pub const MAX_KEYS_PER_LEASE: usize = 1024;

#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Which backend answers, for `/readyz` and logs.
    fn backend(&self) -> &'static str;

    /// Acquires every key for `ttl`, or none of them: [`LeaseError::Taken`] names the keys
    /// another live lease holds.
    ///
    /// Keys held by one live lease of the same `holder` are not taken from the caller: that
    /// lease is granted again (the same token, its deadline now + `ttl`, the keys asked for
    /// added to it). A holder names one request (the inventory uses the hold's id, derived from
    /// the request's idempotency key), so a retry of a request whose first attempt took the
    /// keys and died before recording what it did gets them back instead of waiting out the TTL.
    async fn acquire(
        &self,
        keys: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError>;

    /// Moves the lease's deadline to now + `ttl`, if it is still held.
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError>;

    /// Gives the keys back. Releasing a lease that is no longer held is [`LeaseError::NotHeld`].
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// True when every key is held, right now, by the lease with `token`.
    async fn is_held(&self, keys: &[String], token: FencingToken) -> Result<bool, LeaseError>;

    /// Lapses, as they happen. Each lapse is announced once by this store.
    fn lapses(&self) -> broadcast::Receiver<LapsedLease>;

    /// Answers when the backend can serve requests.
    async fn ping(&self) -> Result<(), LeaseError>;
}

pub(crate) fn check_request(keys: &[String], ttl: Duration) -> Result<(), LeaseError> {
    if keys.is_empty() {
        return Err(LeaseError::Invalid("a lease needs at least one key"));
    }
    if keys.len() > MAX_KEYS_PER_LEASE {
        return Err(LeaseError::Invalid("too many keys for one lease"));
    }
    if ttl.is_zero() {
        return Err(LeaseError::Invalid("a lease needs a positive TTL"));
    }
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(LeaseError::Invalid("a lease cannot name a key twice"));
    }
    lease_tag(keys)?;
    Ok(())
}

/// The hash tag every key of one lease shares (`None`: they all have none).
pub(crate) fn lease_tag(keys: &[String]) -> Result<Option<&str>, LeaseError> {
    let mut tags = keys.iter().map(|key| marquee_redis::hash_tag(key));
    let first = tags.next().flatten();
    if tags.any(|tag| tag != first) {
        return Err(LeaseError::Invalid(
            "the keys of one lease must share one hash tag, or have none",
        ));
    }
    Ok(first)
}

pub(crate) fn expiry_after(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}
