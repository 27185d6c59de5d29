//! [`InProcessRateLimiter`]: GCRA over a sharded map of theoretical arrival times, and sliding
//! window counters in a second map beside it.

use crate::{
    gcra, sliding_window, Algorithm, Decision, Quota, RateLimitError, RateLimiter, WindowCounts,
};
use async_trait::async_trait;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use tokio::time::Instant;

const SHARDS: usize = 16;
/// A shard this large drops the keys whose TAT has passed (they mean the same as no entry).
const PRUNE_AT: usize = 4_096;

struct Shard {
    tats: HashMap<String, u64>,
    windows: HashMap<String, WindowCounts>,
    prune_at: usize,
}

/// One node's limits. Keys whose allowance has fully refilled are forgotten, so memory follows
/// the number of recently active keys, not every key ever seen.
pub struct InProcessRateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Microseconds are counted from here, on tokio's clock (paused in tests).
    epoch: Instant,
}

impl Default for InProcessRateLimiter {
    fn default() -> Self {
        InProcessRateLimiter::new()
    }
}

impl InProcessRateLimiter {
    pub fn new() -> InProcessRateLimiter {
        InProcessRateLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: HashMap::new(),
                        windows: HashMap::new(),
                        prune_at: PRUNE_AT,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// The decision, without an await: usable from synchronous code and middleware alike.
    pub fn check_now(&self, key: &str, quota: Quota) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        // A poisoned shard only means another thread panicked mid-update of plain integers.
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if quota.algorithm() == Algorithm::SlidingWindow {
            return Self::check_window(&mut shard, key, now, quota);
        }
        let (decision, tat) = gcra(shard.tats.get(key).copied(), now, quota);
        if let Some(tat) = tat {
            match shard.tats.get_mut(key) {
                Some(stored) => *stored = tat,
                None => {
                    shard.tats.insert(key.to_string(), tat);
                    if shard.tats.len() >= shard.prune_at {
                        shard.tats.retain(|_, &mut tat| tat > now);
                        shard.prune_at = (shard.tats.len() * 2).max(PRUNE_AT);
                    }
                }
            }
        }
        decision
    }

    fn check_window(shard: &mut Shard, key: &str, now: u64, quota: Quota) -> Decision {
        let (decision, counts) = sliding_window(shard.windows.get(key).copied(), now, quota);
        if let Some(counts) = counts {
            if shard.windows.insert(key.to_string(), counts).is_none()
                && shard.windows.len() >= shard.prune_at
            {
                // A key two windows old counts nothing any more.
                let period = quota.period_micros().max(1);
                let window = now / period;
                shard
                    .windows
                    .retain(|_, counts| counts.window + 1 >= window);
                shard.prune_at = (shard.windows.len() * 2).max(PRUNE_AT);
            }
        }
        decision
    }

    /// Keys currently remembered (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.tats.len() + shard.windows.len()
            })
            .sum()
    }
}

#[async_trait]
impl RateLimiter for InProcessRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RateLimitError> {
        Ok(self.check_now(key, quota))
    }

    fn backend(&self) -> &'static str {
        "in-process"
    }
}
