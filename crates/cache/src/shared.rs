//! The shared tier: one copy per key in Redis for every node, between each node's local tier
//! and the store of record.
//!
//! A shared tier has the stale-fill race across nodes: node A reads the old value from the
//! store, the change is made and invalidated everywhere, then A's write of the old value lands.
//! Each key therefore has a version in Redis (`<prefix>{<key>}:n`; braces are literal, angle
//! brackets are placeholders): an invalidation increments it and deletes the value in one
//! script, a lookup that misses returns the version it saw, and a fill writes only if the
//! version is still that one — so a fill that raced an invalidation is dropped inside Redis,
//! atomically. One round trip each (Lua).
//!
//! The value (`<prefix>{<key>}:v`) and the version share the cache key as their hash tag, so
//! each script's two keys are in one Redis Cluster slot while different cache keys spread over
//! the cluster. The tag ends the common part of both names, so they hash alike whatever the key
//! or the prefix hold.

use crate::cache::BackingError;
use async_trait::async_trait;
use marquee_redis::RedisConnection;
use std::fmt::Display;
use std::marker::PhantomData;
use std::time::Duration;

/// What a lookup in the shared tier found.
pub enum Shared<V> {
    /// A value, or a known absence (`None`).
    Hit(Option<V>),
    /// Nothing; a fill must present this version.
    Miss { version: u64 },
}

/// A tier every node shares.
#[async_trait]
pub trait SharedTier<K, V>: Send + Sync + 'static {
    async fn lookup(&self, key: &K) -> Result<Shared<V>, BackingError>;
    /// Stores what a load found, unless the key was invalidated since `version` was read.
    async fn fill(
        &self,
        key: &K,
        value: &Option<V>,
        ttl: Duration,
        version: u64,
    ) -> Result<(), BackingError>;
    async fn invalidate(&self, key: &K) -> Result<(), BackingError>;
}

/// How values are written to bytes for the shared tier.
pub trait Codec<V>: Send + Sync + 'static {
    fn encode(&self, value: &V) -> Vec<u8>;
    /// `None` for bytes that are not a value (another version's format): treated as a miss.
    fn decode(&self, bytes: &[u8]) -> Option<V>;
}

const LOOKUP: &str = r#"
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
"#;

const FILL: &str = r#"
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

const INVALIDATE: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"#;

/// A version outlives any value's TTL by far; after it expires a key starts again at 0, which
/// no load that read a later version can match.
const VERSION_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// Values in Redis under `<prefix>{<key>}:v`, versions under `<prefix>{<key>}:n`.
pub struct RedisTier<V, C> {
    connection: RedisConnection,
    prefix: String,
    codec: C,
    lookup: redis::Script,
    fill: redis::Script,
    invalidate: redis::Script,
    _values: PhantomData<fn() -> V>,
}

impl<V, C: Codec<V>> RedisTier<V, C> {
    /// On `connection` (one server or a cluster: `marquee_redis::connect`).
    pub fn new(
        connection: impl Into<RedisConnection>,
        prefix: impl Into<String>,
        codec: C,
    ) -> Self {
        RedisTier {
            connection: connection.into(),
            prefix: prefix.into(),
            codec,
            lookup: redis::Script::new(LOOKUP),
            fill: redis::Script::new(FILL),
            invalidate: redis::Script::new(INVALIDATE),
            _values: PhantomData,
        }
    }

    fn keys(&self, key: &impl Display) -> (String, String) {
        let base = format!("{}{{{key}}}", self.prefix);
        (format!("{base}:v"), format!("{base}:n"))
    }
}

fn redis_error(error: redis::RedisError) -> BackingError {
    BackingError(format!("redis: {error}"))
}

#[async_trait]
impl<K, V, C> SharedTier<K, V> for RedisTier<V, C>
where
    K: Display + Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<V>,
{
    async fn lookup(&self, key: &K) -> Result<Shared<V>, BackingError> {
        let (value_key, version_key) = self.keys(key);
        let (found, payload): (u8, redis::Value) = self
            .lookup
            .key(value_key)
            .key(version_key)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(redis_error)?;
        if found == 0 {
            let version = redis::from_redis_value(&payload).map_err(redis_error)?;
            return Ok(Shared::Miss { version });
        }
        let bytes: Vec<u8> = redis::from_redis_value(&payload).map_err(redis_error)?;
        Ok(match bytes.split_first() {
            Some((0, _)) => Shared::Hit(None),
            Some((1, encoded)) => match self.codec.decode(encoded) {
                Some(value) => Shared::Hit(Some(value)),
                // Unreadable: as good as absent, and the next invalidation clears it.
                None => Shared::Miss { version: u64::MAX },
            },
            _ => Shared::Miss { version: u64::MAX },
        })
    }

    async fn fill(
        &self,
        key: &K,
        value: &Option<V>,
        ttl: Duration,
        version: u64,
    ) -> Result<(), BackingError> {
        let (value_key, version_key) = self.keys(key);
        let bytes = match value {
            None => vec![0],
            Some(value) => {
                let mut bytes = vec![1];
                bytes.extend(self.codec.encode(value));
                bytes
            }
        };
        let _: u8 = self
            .fill
            .key(value_key)
            .key(version_key)
            .arg(version)
            .arg(bytes)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn invalidate(&self, key: &K) -> Result<(), BackingError> {
        let (value_key, version_key) = self.keys(key);
        let _: u8 = self
            .invalidate
            .key(value_key)
            .key(version_key)
            .arg(VERSION_LIFETIME_MS)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}
