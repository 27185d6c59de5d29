//! Leases on Redis, shared by every node. Each operation is one Lua script, so it is atomic on
//! the server:
//! - `{prefix}lease:{key}` holds the token of the lease that holds `key`, with a TTL (`PX`), so
//!   Redis frees the key at the deadline by itself;
//! - `{prefix}meta:{token}` (holder, deadline) and `{prefix}keys:{token}` (the keys) describe a
//!   lease until it is released or its lapse is announced;
//! - `{prefix}fence` is the token counter. Redis may run without persistence, so the script never
//!   hands out a token below the caller's clock in microseconds: tokens keep growing across a
//!   Redis restart.
//!
//! Lapses are announced by the node that granted (or last extended) the lease: a timer fires at
//! the deadline and a script claims the announcement, so it is made once. A node that dies with
//! leases outstanding leaves their keys to expire in Redis (nothing stays held), but their lapse
//! is not announced; the inventory's own sweep of expired holds covers that case.

use crate::{
    check_request, expiry_after, FencingToken, LapsedLease, Lease, LeaseError, LeaseStore,
};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const ACQUIRE: &str = r#"
local prefix, holder, ttl, floor = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local taken = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then taken[#taken + 1] = i end
end
if #taken > 0 then return {0, taken} end
local token = redis.call('INCR', prefix .. 'fence')
if token < floor then
  redis.call('SET', prefix .. 'fence', string.format('%d', floor))
  token = floor
end
-- Lua numbers are doubles: spell the token as an integer string once and use only that.
token = string.format('%d', token)
for _, key in ipairs(KEYS) do redis.call('SET', key, token, 'PX', ttl) end
local now = redis.call('TIME')
local deadline = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000) + ttl)
local meta = prefix .. 'meta:' .. token
redis.call('HSET', meta, 'holder', holder, 'deadline', deadline)
redis.call('PEXPIRE', meta, ttl + 3600000)
local list = prefix .. 'keys:' .. token
for i = 5, #ARGV do redis.call('RPUSH', list, ARGV[i]) end
redis.call('PEXPIRE', list, ttl + 3600000)
return {1, token}
"#;

/// Keys are held by the token in ARGV[2]; ARGV[3] = 'extend' with ARGV[4] the TTL, or 'release'.
const EXTEND_OR_RELEASE: &str = r#"
local prefix, token, action = ARGV[1], ARGV[2], ARGV[3]
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= token then return 0 end
end
local meta, list = prefix .. 'meta:' .. token, prefix .. 'keys:' .. token
if action == 'release' then
  redis.call('DEL', unpack(KEYS))
  redis.call('DEL', meta, list)
  return 1
end
local ttl = tonumber(ARGV[4])
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
local now = redis.call('TIME')
redis.call('HSET', meta, 'deadline', string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000) + ttl))
redis.call('PEXPIRE', meta, ttl + 3600000)
redis.call('PEXPIRE', list, ttl + 3600000)
return 1
"#;

/// Claims the lapse announcement of a lease: returns {1, holder, keys...} when its deadline has
/// passed, {2, ms_left} when it was extended, {0} when it was released or already announced.
const CLAIM_LAPSE: &str = r#"
local prefix, token = ARGV[1], ARGV[2]
local meta, list = prefix .. 'meta:' .. token, prefix .. 'keys:' .. token
local fields = redis.call('HMGET', meta, 'holder', 'deadline')
if not fields[1] then return {0} end
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local left = tonumber(fields[2]) - now_ms
if left > 0 then return {2, left} end
local keys = redis.call('LRANGE', list, 0, -1)
redis.call('DEL', meta, list)
local reply = {1, fields[1]}
for _, key in ipairs(keys) do reply[#reply + 1] = key end
return reply
"#;

struct Shared {
    connection: ConnectionManager,
    prefix: String,
    acquire: Script,
    extend_or_release: Script,
    claim_lapse: Script,
    lapses: broadcast::Sender<LapsedLease>,
}

/// Leases on one Redis server, namespaced by a key prefix.
#[derive(Clone)]
pub struct RedisLeases {
    shared: Arc<Shared>,
}

fn unavailable(error: redis::RedisError) -> LeaseError {
    LeaseError::Unavailable(error.to_string())
}

impl RedisLeases {
    /// Connects to `url` (`redis://127.0.0.1:6379`); every key starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLeases, LeaseError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
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

    fn redis_key(&self, key: &str) -> String {
        format!("{}lease:{key}", self.shared.prefix)
    }

    fn redis_keys(&self, keys: &[String]) -> Vec<String> {
        keys.iter().map(|key| self.redis_key(key)).collect()
    }

    /// Waits for the deadline, then claims and announces the lapse (re-arming if extended).
    fn schedule_lapse(&self, token: FencingToken, after: Duration) {
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
                    .arg(&shared.prefix)
                    .arg(token.0)
                    .invoke_async(&mut connection)
                    .await;
                match reply.as_deref() {
                    Ok([redis::Value::Int(1), holder, keys @ ..]) => {
                        let text = |value: &redis::Value| {
                            redis::from_redis_value::<String>(value).unwrap_or_default()
                        };
                        let _ = shared.lapses.send(LapsedLease {
                            keys: keys.iter().map(text).collect(),
                            holder: text(holder),
                            token,
                        });
                        return;
                    }
                    Ok([redis::Value::Int(2), redis::Value::Int(left), ..]) => {
                        wait = Duration::from_millis(u64::try_from(*left).unwrap_or(1).max(1));
                    }
                    Ok(_) => return,
                    Err(error) => {
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
        let mut connection = self.shared.connection.clone();
        let mut invocation = self.shared.extend_or_release.prepare_invoke();
        for key in self.redis_keys(&lease.keys) {
            invocation.key(key);
        }
        invocation
            .arg(&self.shared.prefix)
            .arg(lease.token.0)
            .arg(action)
            .arg(ttl_millis(ttl));
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
        let mut connection = self.shared.connection.clone();
        let mut invocation = self.shared.acquire.prepare_invoke();
        for key in self.redis_keys(keys) {
            invocation.key(key);
        }
        let floor = chrono::Utc::now().timestamp_micros();
        invocation
            .arg(&self.shared.prefix)
            .arg(holder)
            .arg(ttl_millis(ttl))
            .arg(floor);
        for key in keys {
            invocation.arg(key);
        }
        let reply: (i64, redis::Value) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match reply {
            (1, token) => {
                let token: u64 = redis::from_redis_value(&token).map_err(unavailable)?;
                let token = FencingToken(token);
                self.schedule_lapse(token, ttl);
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
        let holders: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(self.redis_keys(keys))
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
