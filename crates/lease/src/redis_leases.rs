//! Leases on Redis (one server or a Redis Cluster), shared by every node. Each operation is one
//! Lua script, so it is atomic on the server, and every key a script touches is passed in
//! `KEYS`, all under one hash tag: the lease keys' own tag, or `_` for keys without one (see the
//! crate docs). Per tag (braces are literal, angle brackets are placeholders):
//! - `<prefix>{<tag>}:lease:<key>` holds the token of the lease that holds `key`, with a TTL
//!   (`PX`), so Redis frees the key at the deadline by itself;
//! - `<prefix>{<tag>}:deadlines` is a sorted set of the tag's outstanding leases (token →
//!   deadline in ms): a lease is in it until it is released or its lapse is announced. The
//!   keys of a lease are not stored: the node that announces the lapse is the one that granted
//!   it, and it has them (one key per tag rather than two per lease, whose names would depend on
//!   a token made inside the script, which a cluster cannot route);
//! - `<prefix>{<tag>}:holders` maps each outstanding lease's token to its holder, so that a
//!   holder asking again for keys its own lease holds is granted that lease again (see
//!   [`LeaseStore::acquire`]);
//! - `<prefix>{<tag>}:fence` is the tag's token counter. Redis may run without persistence, so
//!   the script never hands out a token below the caller's clock in microseconds: tokens keep
//!   growing across a Redis restart. It has no TTL, so a tag's tokens never go back.
//!
//! Lapses are announced by the node that granted the lease: a timer fires at the deadline and a
//! script claims the announcement, so it is made once. A node that dies with leases outstanding
//! leaves their keys to expire in Redis (nothing stays held), but their lapse is not announced;
//! the inventory's own sweep of expired holds covers that case. Their entries in `deadlines`
//! are dropped by a later acquire of the tag an hour after their deadline.

use crate::{
    check_request, expiry_after, lease_tag, FencingToken, LapsedLease, Lease, LeaseError,
    LeaseStore,
};
use async_trait::async_trait;
use marquee_redis::RedisConnection;
use redis::Script;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The tag of keys that carry none.
const UNTAGGED: &str = "_";

/// How long after its deadline an unclaimed lease is forgotten (its granting node died).
const GRACE_MS: u64 = 3_600_000;

/// KEYS: fence, deadlines, holders, then the lease's keys. ARGV: ttl, floor, grace, holder.
/// Returns {1, token}, or {0, positions of the taken keys (1-based)}. Keys held by one lease of
/// the same holder are not taken: that lease is granted again under its token.
const ACQUIRE: &str = r#"
local fence, deadlines, holders = KEYS[1], KEYS[2], KEYS[3]
local ttl, floor, grace, holder = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local taken, own = {}, false
for i = 4, #KEYS do
  local held = redis.call('GET', KEYS[i])
  if held then
    if (not own or own == held) and redis.call('HGET', holders, held) == holder then
      own = held
    else
      taken[#taken + 1] = i - 3
    end
  end
end
if #taken > 0 then return {0, taken} end
local token = own
if not token then
  token = redis.call('INCR', fence)
  if token < floor then
    redis.call('SET', fence, string.format('%d', floor))
    token = floor
  end
  -- Lua numbers are doubles: spell the token as an integer string once and use only that.
  token = string.format('%d', token)
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], token, 'PX', ttl) end
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local stale = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now_ms - grace, 'LIMIT', 0, 16)
if #stale > 0 then
  redis.call('ZREM', deadlines, unpack(stale))
  redis.call('HDEL', holders, unpack(stale))
end
redis.call('ZADD', deadlines, now_ms + ttl, token)
redis.call('HSET', holders, token, holder)
for _, key in ipairs({deadlines, holders}) do
  if redis.call('PTTL', key) < ttl + grace then redis.call('PEXPIRE', key, ttl + grace) end
end
return {1, token}
"#;

/// KEYS: deadlines, holders, then the lease's keys, held by the token in ARGV[1]; ARGV[2] =
/// 'extend' with ARGV[3] the TTL and ARGV[4] the grace, or 'release'.
const EXTEND_OR_RELEASE: &str = r#"
local deadlines, holders, token, action = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) ~= token then return 0 end
end
if action == 'release' then
  redis.call('DEL', unpack(KEYS, 3))
  redis.call('ZREM', deadlines, token)
  redis.call('HDEL', holders, token)
  return 1
end
local ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 3, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
local now = redis.call('TIME')
redis.call('ZADD', deadlines, now[1] * 1000 + math.floor(now[2] / 1000) + ttl, token)
for _, key in ipairs({deadlines, holders}) do
  if redis.call('PTTL', key) < ttl + grace then redis.call('PEXPIRE', key, ttl + grace) end
end
return 1
"#;

/// KEYS: deadlines, holders. ARGV: token. Claims the lapse announcement of a lease: returns {1}
/// when its deadline has passed, {2, ms_left} when it was extended, {0} when it was released or
/// already announced.
const CLAIM_LAPSE: &str = r#"
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline then return {0} end
local now = redis.call('TIME')
local left = tonumber(deadline) - (now[1] * 1000 + math.floor(now[2] / 1000))
if left > 0 then return {2, left} end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return {1}
"#;

struct Shared {
    connection: RedisConnection,
    prefix: String,
    acquire: Script,
    extend_or_release: Script,
    claim_lapse: Script,
    lapses: broadcast::Sender<LapsedLease>,
}

/// Leases on Redis, namespaced by a key prefix.
#[derive(Clone)]
pub struct RedisLeases {
    shared: Arc<Shared>,
}

fn unavailable(error: redis::RedisError) -> LeaseError {
    LeaseError::Unavailable(error.to_string())
}

/// The Redis names of one lease's keys, all under its tag.
struct TagKeys {
    fence: String,
    deadlines: String,
    /// Token → holder of the tag's outstanding leases, so a holder can be given its own back.
    holders: String,
    leases: Vec<String>,
}

impl RedisLeases {
    /// Connects to `url`: `redis://host:port` for one server, `redis+cluster://host:port,…` for
    /// a cluster (see `marquee-redis`). Every key starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLeases, LeaseError> {
        let connection = marquee_redis::connect(url).await.map_err(unavailable)?;
        let (lapses, _) = broadcast::channel(4096);
        Ok(RedisLeases {
            shared: Arc::new(Shared {
                connection,
                prefix: prefix.to_string(),
                acquire: Script::new(ACQUIRE),
                extend_or_release: Script::new(EXTEND_OR_RELEASE),
                claim_lapse: Script::new(CLAIM_LAPSE),
                lapses,
            }),
        })
    }

    /// `<prefix>{<tag>}:`, the start of every key of one tag.
    fn base(&self, tag: Option<&str>) -> String {
        format!("{}{{{}}}:", self.shared.prefix, tag.unwrap_or(UNTAGGED))
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}lease:{key}", self.base(marquee_redis::hash_tag(key)))
    }

    fn tag_keys(&self, keys: &[String]) -> Result<TagKeys, LeaseError> {
        let base = self.base(lease_tag(keys)?);
        Ok(TagKeys {
            fence: format!("{base}fence"),
            deadlines: format!("{base}deadlines"),
            holders: format!("{base}holders"),
            leases: keys
                .iter()
                .map(|key| format!("{base}lease:{key}"))
                .collect(),
        })
    }

    /// Waits for the deadline, then claims and announces the lapse (re-arming if extended).
    fn schedule_lapse(&self, lapse: LapsedLease, tag_keys: (String, String), after: Duration) {
        let (deadlines, holders) = tag_keys;
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut wait = after;
            loop {
                tokio::time::sleep(wait).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let mut connection = shared.connection.clone();
                let reply: redis::RedisResult<Vec<redis::Value>> = shared
                    .claim_lapse
                    .key(&deadlines)
                    .key(&holders)
                    .arg(lapse.token.0)
                    .invoke_async(&mut connection)
                    .await;
                match reply.as_deref() {
                    Ok([redis::Value::Int(1), ..]) => {
                        let _ = shared.lapses.send(lapse);
                        return;
                    }
                    Ok([redis::Value::Int(2), redis::Value::Int(left), ..]) => {
                        wait = Duration::from_millis(u64::try_from(*left).unwrap_or(1).max(1));
                    }
                    Ok(_) => return,
                    Err(error) => {
                        let token = lapse.token;
                        tracing::warn!(%error, %token, "could not check a lease's lapse; retrying");
                        wait = Duration::from_secs(1);
                    }
                }
            }
        });
    }

    async fn extend_or_release(
        &self,
        lease: &Lease,
        action: &str,
        ttl: Duration,
    ) -> Result<(), LeaseError> {
        let keys = self.tag_keys(&lease.keys)?;
        let mut connection = self.shared.connection.clone();
        let mut invocation = self.shared.extend_or_release.key(&keys.deadlines);
        invocation.key(&keys.holders);
        for key in &keys.leases {
            invocation.key(key);
        }
        invocation
            .arg(lease.token.0)
            .arg(action)
            .arg(ttl_millis(ttl))
            .arg(GRACE_MS);
        let done: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if done == 1 {
            Ok(())
        } else {
            Err(LeaseError::NotHeld)
        }
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl LeaseStore for RedisLeases {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn acquire(
        &self,
        keys: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        check_request(keys, ttl)?;
        let tag_keys = self.tag_keys(keys)?;
        let mut connection = self.shared.connection.clone();
        let mut invocation = self.shared.acquire.key(&tag_keys.fence);
        invocation.key(&tag_keys.deadlines);
        invocation.key(&tag_keys.holders);
        for key in &tag_keys.leases {
            invocation.key(key);
        }
        let floor = chrono::Utc::now().timestamp_micros();
        invocation
            .arg(ttl_millis(ttl))
            .arg(floor)
            .arg(GRACE_MS)
            .arg(holder);
        let reply: (i64, redis::Value) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match reply {
            (1, token) => {
                let token: u64 = redis::from_redis_value(&token).map_err(unavailable)?;
                let token = FencingToken(token);
                self.schedule_lapse(
                    LapsedLease {
                        keys: keys.to_vec(),
                        holder: holder.to_string(),
                        token,
                    },
                    (tag_keys.deadlines, tag_keys.holders),
                    ttl,
                );
                Ok(Lease {
                    keys: keys.to_vec(),
                    holder: holder.to_string(),
                    token,
                    expires_at: expiry_after(ttl),
                })
            }
            (_, taken) => {
                let indexes: Vec<usize> = redis::from_redis_value(&taken).map_err(unavailable)?;
                Err(LeaseError::Taken {
                    keys: indexes
                        .into_iter()
                        .filter_map(|index| keys.get(index.wrapping_sub(1)).cloned())
                        .collect(),
                })
            }
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        check_request(&lease.keys, ttl)?;
        self.extend_or_release(lease, "extend", ttl).await?;
        Ok(Lease {
            expires_at: expiry_after(ttl),
            ..lease.clone()
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.extend_or_release(lease, "release", Duration::from_millis(1))
            .await
    }

    async fn is_held(&self, keys: &[String], token: FencingToken) -> Result<bool, LeaseError> {
        if keys.is_empty() {
            return Ok(false);
        }
        let mut connection = self.shared.connection.clone();
        // Keys of several tags are fine here: the cluster client splits an MGET by slot.
        let redis_keys: Vec<String> = keys.iter().map(|key| self.redis_key(key)).collect();
        let holders: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(redis_keys)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(holders.iter().all(|holder| *holder == Some(token.0)))
    }

    fn lapses(&self) -> broadcast::Receiver<LapsedLease> {
        self.shared.lapses.subscribe()
    }

    async fn ping(&self) -> Result<(), LeaseError> {
        let mut connection = self.shared.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
