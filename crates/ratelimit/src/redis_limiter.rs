//! [`RedisRateLimiter`]: GCRA or a sliding window counter, each in one Lua script on the Redis
//! server's clock.
//!
//! Each decision touches one key (`{prefix}rl:{key}` for GCRA, `{prefix}rl:sw:{key}` for the
//! window), so it runs as is on a Redis Cluster: keys spread over the slots by themselves, and
//! each key's clock is the clock of the one node that owns it.

use crate::{Algorithm, Decision, Quota, RateLimitError, RateLimiter};
use async_trait::async_trait;
use marquee_redis::RedisConnection;
use std::time::Duration;

/// KEYS[1] = the key's TAT; ARGV = emission interval and period, in microseconds.
/// Returns {allowed (1/0), remaining, retry_after_micros}. The arithmetic mirrors `gcra`.
/// The server's clock (TIME) is the only clock, so gateways with skewed clocks agree.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((period - (new_tat - now)) / emission), 0}
";

/// KEYS[1] = a hash {w = window index, p = previous count, c = current count}; ARGV = period
/// and limit. Returns what GCRA does. The arithmetic mirrors `sliding_window` (exact in Lua's
/// doubles while `limit × period` stays under 2^53 µs, about 28 years of requests per second).
const SLIDING_WINDOW: &str = r"
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local window = math.floor(now / period)
local elapsed = now - window * period
local stored = redis.call('HMGET', KEYS[1], 'w', 'p', 'c')
local w = tonumber(stored[1])
local previous, current = 0, 0
if w == window then
  previous = tonumber(stored[2]); current = tonumber(stored[3])
elseif w == window - 1 then
  previous = tonumber(stored[3])
end
local scaled = previous * (period - elapsed) + (current + 1) * period
if scaled <= limit * period then
  redis.call('HSET', KEYS[1], 'w', window, 'p', previous, 'c', current + 1)
  redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period / 1000) + 1)
  return {1, math.floor((limit * period - scaled) / period), 0}
end
local wait
if current + 1 > limit then
  local into_next = 0
  if current > 0 then
    into_next = period - math.floor((limit - 1) * period / current)
    if into_next < 0 then into_next = 0 end
  end
  wait = (period - elapsed) + into_next
else
  local p = previous
  if p < 1 then p = 1 end
  local at = period - math.floor((limit - current - 1) * period / p)
  if at < 0 then at = 0 end
  wait = at - elapsed
end
if wait < 1 then wait = 1 end
return {0, 0, wait}
";

/// Limits shared by every process using the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: RedisConnection,
    prefix: String,
    script: redis::Script,
    sliding: redis::Script,
}

impl RedisRateLimiter {
    /// Connects to `url` (`redis://…` or `redis+cluster://host:port,…`, see `marquee-redis`);
    /// `prefix` namespaces the keys (one per deployment, or per test).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisRateLimiter, RateLimitError> {
        let connection = marquee_redis::connect(url).await?;
        Ok(RedisRateLimiter {
            connection,
            prefix: format!("{prefix}rl:"),
            script: redis::Script::new(GCRA),
            sliding: redis::Script::new(SLIDING_WINDOW),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RateLimitError> {
        let mut connection = self.connection.clone();
        let (allowed, remaining, retry_after): (i64, i64, i64) = match quota.algorithm() {
            Algorithm::Gcra => {
                self.script
                    .key(format!("{}{key}", self.prefix))
                    .arg(quota.emission_micros())
                    .arg(quota.period_micros())
                    .invoke_async(&mut connection)
                    .await?
            }
            Algorithm::SlidingWindow => {
                self.sliding
                    .key(format!("{}sw:{key}", self.prefix))
                    .arg(quota.period_micros())
                    .arg(quota.limit())
                    .invoke_async(&mut connection)
                    .await?
            }
        };
        match allowed {
            1 => Ok(Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            }),
            0 => Ok(Decision::Refused {
                retry_after: Duration::from_micros(u64::try_from(retry_after).unwrap_or(0)),
            }),
            other => Err(RateLimitError::Protocol(format!("allowed = {other}"))),
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
