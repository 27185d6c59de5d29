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
pub use quota::{Algorithm, Quota, QuotaError, Scope, ScopedQuota};
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

/// A sliding-window key's counters: the index of its current fixed window, and the counts of
/// that window and the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowCounts {
    pub(crate) window: u64,
    pub(crate) previous: u64,
    pub(crate) current: u64,
}

/// The sliding-window step shared by both implementations (the Lua script mirrors it), in
/// microseconds. A request is allowed when `previous × overlap + current + 1 ≤ limit`, with
/// `overlap` the share of the previous window still inside the last period; the arithmetic is
/// in integers scaled by the period, so both implementations agree exactly.
pub(crate) fn sliding_window(
    counts: Option<WindowCounts>,
    now: u64,
    quota: Quota,
) -> (Decision, Option<WindowCounts>) {
    let period = u128::from(quota.period_micros());
    let limit = u128::from(quota.limit());
    let now = u128::from(now);
    let window = now / period;
    let elapsed = now - window * period;
    let (previous, current) = match counts {
        Some(c) if u128::from(c.window) == window => {
            (u128::from(c.previous), u128::from(c.current))
        }
        Some(c) if u128::from(c.window) + 1 == window => (u128::from(c.current), 0),
        _ => (0, 0),
    };
    let scaled = previous * (period - elapsed) + (current + 1) * period;
    if scaled <= limit * period {
        let counts = WindowCounts {
            window: u64::try_from(window).unwrap_or(u64::MAX),
            previous: u64::try_from(previous).unwrap_or(u64::MAX),
            current: u64::try_from(current + 1).unwrap_or(u64::MAX),
        };
        let remaining = (limit * period - scaled) / period;
        return (
            Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            },
            Some(counts),
        );
    }
    // When would `previous × overlap + current + 1 ≤ limit` hold again?
    let wait = if current + 1 > limit {
        // Not in this window: in the next one this window's count becomes the previous.
        let into_next = ((limit - 1) * period)
            .checked_div(current)
            .map_or(0, |fits| period.saturating_sub(fits));
        (period - elapsed) + into_next
    } else {
        // Later in this window, once enough of the previous one has slid out.
        let at = period.saturating_sub((limit - current - 1) * period / previous.max(1));
        at.saturating_sub(elapsed)
    };
    let wait = u64::try_from(wait.max(1)).unwrap_or(u64::MAX);
    (
        Decision::Refused {
            retry_after: Duration::from_micros(wait),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The sliding window never allows more than `limit` in one fixed window, never more
        /// than `2 × limit` in any period, refuses only when the weighted estimate is full, and
        /// a refusal's `retry_after` is exactly when the next request would be allowed.
        #[test]
        fn sliding_window_bounds_and_honest_retry_after(
            limit in 1u32..20,
            gaps in prop::collection::vec(0u64..300_000, 1..200),
        ) {
            let quota = Quota::new(limit, Duration::from_secs(1)).expect("quota");
            let mut counts = None;
            let mut now = 0u64;
            let mut allowed: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let (decision, next) = sliding_window(counts, now, quota);
                match decision {
                    Decision::Allowed { .. } => {
                        counts = next;
                        allowed.push(now);
                        let window = now / 1_000_000;
                        let in_window = allowed.iter().filter(|&&t| t / 1_000_000 == window).count();
                        prop_assert!(in_window <= limit as usize);
                        let in_period = allowed.iter().filter(|&&t| t + 1_000_000 > now).count();
                        prop_assert!(in_period <= 2 * limit as usize);
                    }
                    Decision::Refused { retry_after } => {
                        let wait = u64::try_from(retry_after.as_micros()).expect("fits");
                        prop_assert!(wait >= 1);
                        let (later, _) = sliding_window(counts, now + wait, quota);
                        prop_assert!(later.is_allowed(), "not allowed after the advertised {wait} µs");
                        if wait > 1 {
                            let (sooner, _) = sliding_window(counts, now + wait - 1, quota);
                            prop_assert!(!sooner.is_allowed(), "allowed before the advertised {wait} µs");
                        }
                    }
                }
            }
        }
    }

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
