//! How long a failed job waits before its next attempt.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with jitter: attempt `n` (1-based) failed → wait
/// `min(cap, base × 2^(n-1))`, less a random part of up to `jitter` of it.
///
/// The jitter spreads the retries of jobs that failed together (an endpoint that was down for
/// everyone), so they do not all come back in the same instant; taking it off the delay rather
/// than adding it keeps `cap` a true ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// 0.0 (none) to 1.0 (anywhere from zero to the full delay).
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, 2 s, 4 s … up to 10 minutes, each up to 20 % sooner.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The full delay after attempt `attempt` failed, before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << exponent.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay after attempt `attempt` failed, jitter drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return ceiling;
        }
        let cut: f64 = rng.gen_range(0.0..=jitter);
        ceiling.mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=6)
            .map(|attempt| backoff.ceiling(attempt).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_share_and_under_the_cap(
            attempt in 1u32..80,
            jitter in 0.0f64..=1.0,
            seed: u64,
        ) {
            let backoff = Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(60), jitter };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let delay = backoff.delay(attempt, &mut rng);
            let ceiling = backoff.ceiling(attempt);
            prop_assert!(delay <= ceiling);
            prop_assert!(delay >= ceiling.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
        }
    }
}
