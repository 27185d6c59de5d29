//! Rate limits: how many requests a key (a client IP, a user, a route) may make per period.
//!
//! The algorithm is **GCRA** (the generic cell rate algorithm, as in ATM networks and
//! `governor`): a quota of `n` per `period` is a "theoretical arrival time" (TAT) per key that
//! each allowed request pushes `period / n` further; a request is refused when that would put the
//! TAT more than one period ahead of now. It is a token bucket of capacity `n` refilled
//! continuously, kept as one number per key — no timers, no counters to reset, exact at any
//! instant (no fixed-window double bursts), and the refusal says exactly when to retry.
//!
//! Two implementations of [`RateLimiter`], checked by one conformance suite:
//! - [`InProcessRateLimiter`]: a sharded map of TATs on the node's monotonic clock (tokio's, so
//!   tests run on paused time). `governor` does GCRA in-process too, but fixes the quota per
//!   limiter at construction; here the quota is an argument, so one limiter serves every route.
//! - [`RedisRateLimiter`]: the same arithmetic in one Lua script (one round trip), on the
//!   Redis server's clock, so every gateway and node sharing the server shares the quota.
//!
//! [`ConcurrencyLimiter`] sheds load by requests in flight rather than by rate, keeping a reserve
//! for checkout requests.
//!
//! **Boundary:** keys are opaque strings, quotas plain numbers; nothing here knows HTTP.

mod concurrency;
mod in_process;
mod quota;
mod redis_limiter;

pub use concurrency::{ConcurrencyLimiter, ConcurrencyPermit, Priority};
pub use in_process::InProcessRateLimiter;
pub use quota::{Quota, QuotaError, Scope, ScopedQuota};
pub use redis_limiter::RedisRateLimiter;

use async_trait::async_trait;
use std::time::Duration;

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// Requests that could still be made right now.
        remaining: u32,
    },
    Refused {
        /// When the next request would be allowed.
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit store unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error("unexpected answer from the rate limit store: {0}")]
    Protocol(String),
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` against `quota` and says whether it may proceed.
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RateLimitError>;

    /// `in-process` or `redis`.
    fn backend(&self) -> &'static str;
}

/// The GCRA step shared by both implementations (the Lua script mirrors it), in microseconds.
/// Returns the decision and the new TAT to store when allowed.
pub(crate) fn gcra(tat: Option<u64>, now: u64, quota: Quota) -> (Decision, Option<u64>) {
    let emission = quota.emission_micros();
    let period = quota.period_micros();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(emission);
    let allow_at = new_tat.saturating_sub(period);
    if allow_at > now {
        return (
            Decision::Refused {
                retry_after: Duration::from_micros(allow_at - now),
            },
            None,
        );
    }
    let remaining = (period - (new_tat - now)) / emission;
    (
        Decision::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        },
        Some(new_tat),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over any sequence of request times, GCRA allows at most the burst (`limit`) plus the
        /// rate (`limit` per period) over any interval, and never refuses a request when fewer
        /// than `limit` were allowed in the period before it.
        #[test]
        fn allows_the_burst_plus_the_rate_and_nothing_more(
            limit in 1u32..20,
            gaps in prop::collection::vec(0u64..300_000, 1..200),
        ) {
            let quota = Quota::new(limit, Duration::from_secs(1)).expect("quota");
            let emission = quota.emission_micros();
            let mut tat = None;
            let mut now = 0u64;
            let mut allowed: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let (decision, next) = gcra(tat, now, quota);
                let recent = allowed.iter().filter(|&&t| t + 1_000_000 > now).count();
                if decision.is_allowed() {
                    tat = next;
                    allowed.push(now);
                    for (i, &earlier) in allowed.iter().enumerate() {
                        let count = (allowed.len() - i) as u64;
                        prop_assert!(
                            count <= u64::from(limit) + (now - earlier) / emission,
                            "{count} allowed in {} µs", now - earlier
                        );
                    }
                } else {
                    prop_assert!(recent >= limit as usize, "refused after only {recent} in the last period");
                }
            }
        }
    }
}
