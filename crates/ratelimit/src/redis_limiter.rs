//! [`RedisRateLimiter`]: GCRA in one Lua script on the Redis server's clock.

use crate::{Decision, Quota, RateLimitError, RateLimiter};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
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

/// Limits shared by every process using the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl RedisRateLimiter {
    /// `prefix` namespaces the keys (one per deployment, or per test).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisRateLimiter, RateLimitError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(RedisRateLimiter {
            connection,
            prefix: format!("{prefix}rl:"),
            script: redis::Script::new(GCRA),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RateLimitError> {
        let mut connection = self.connection.clone();
        let (allowed, remaining, retry_after): (i64, i64, i64) = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(quota.emission_micros())
            .arg(quota.period_micros())
            .invoke_async(&mut connection)
            .await?;
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
