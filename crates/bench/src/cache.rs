//! `marquee-bench cache`: each eviction policy's hit ratio on the same Zipf(1.0) trace of event
//! reads, at cache sizes of 1%, 5% and 10% of the key space, and its cost per access.
//!
//! The trace is drawn once from a seeded generator, so every policy sees the same requests and
//! a run is repeatable. Each access is a read; a miss inserts the key (read-through). Hit ratio
//! is over the whole trace (cold start included, the same for every policy).

use marquee_cache::{LocalTier, Policy};
use rand::SeedableRng;
use rand_distr::Distribution;
use std::time::Instant;

pub struct CacheBench {
    /// Distinct keys (events).
    pub keys: u64,
    /// Accesses in the trace.
    pub accesses: u64,
    /// Zipf exponent (1.0: the classic web-cache skew).
    pub exponent: f64,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct HitRatio {
    pub policy: Policy,
    pub percent: u64,
    pub capacity: u64,
    pub ratio: f64,
    /// Accesses per second, one thread.
    pub accesses_per_second: f64,
}

pub fn run_cache_bench(bench: &CacheBench) -> anyhow::Result<Vec<HitRatio>> {
    let zipf = rand_distr::Zipf::new(bench.keys, bench.exponent)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(bench.seed);
    let trace: Vec<u64> = (0..bench.accesses)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect();
    let mut results = Vec::new();
    for percent in [1, 5, 10] {
        let capacity = (bench.keys * percent / 100).max(1);
        for policy in Policy::ALL {
            let tier: LocalTier<u64, ()> = LocalTier::new(policy, capacity);
            let mut hits = 0u64;
            let started = Instant::now();
            for (index, key) in trace.iter().enumerate() {
                if tier.get(key).is_some() {
                    hits += 1;
                } else {
                    tier.insert(*key, ());
                }
                // moka admits and evicts in batches; settle them regularly so its size bound
                // holds as it would under a steady stream of requests.
                if index % 1024 == 1023 {
                    tier.settle();
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            results.push(HitRatio {
                policy,
                percent,
                capacity,
                ratio: hits as f64 / trace.len().max(1) as f64,
                accesses_per_second: trace.len() as f64 / elapsed.max(f64::EPSILON),
            });
        }
    }
    Ok(results)
}
