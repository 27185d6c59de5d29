//! The cost of one rate-limit decision, GCRA and sliding window: in-process (one hot key, and
//! spread over 100,000 keys)
//! and through Redis (one Lua round trip), beside a plain Redis `INCR` on the same connection as
//! the anchor. Run: `cargo bench -p marquee-ratelimit` (needs Redis on 127.0.0.1:6379, or
//! `MARQUEE_TEST_REDIS_URL`; the Redis group is skipped without one).

use criterion::{criterion_group, criterion_main, Criterion};
use marquee_ratelimit::{Algorithm, InProcessRateLimiter, Quota, RateLimiter, RedisRateLimiter};
use std::hint::black_box;
use std::time::Duration;

fn in_process(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let limiter = InProcessRateLimiter::new();
    let quota = Quota::new(1_000_000, Duration::from_secs(1)).expect("quota");
    let keys: Vec<String> = (0..100_000).map(|key| format!("ip:10.0.{key}")).collect();
    let mut group = c.benchmark_group("in-process");
    group.bench_function("one key", |b| {
        b.iter(|| black_box(limiter.check_now("ip:10.0.0.1", quota)));
    });
    let sliding = quota.with_algorithm(Algorithm::SlidingWindow);
    group.bench_function("one key, sliding window", |b| {
        b.iter(|| black_box(limiter.check_now("ip:10.0.0.2", sliding)));
    });
    let mut next = 0;
    group.bench_function("100k keys", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            black_box(limiter.check_now(&keys[next], quota))
        });
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let url = std::env::var("MARQUEE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Ok(limiter) = runtime.block_on(RedisRateLimiter::connect(&url, "bench:ratelimit:")) else {
        eprintln!("no Redis at {url}; skipping the Redis group");
        return;
    };
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return;
    };
    let Ok(mut connection) = runtime.block_on(client.get_multiplexed_async_connection()) else {
        return;
    };
    let quota = Quota::new(1_000_000, Duration::from_secs(1)).expect("quota");
    let mut group = c.benchmark_group("redis");
    group.bench_function("gcra decision", |b| {
        b.iter(|| {
            runtime
                .block_on(limiter.check("ip:10.0.0.1", quota))
                .expect("check")
        });
    });
    let sliding = quota.with_algorithm(Algorithm::SlidingWindow);
    group.bench_function("sliding window decision", |b| {
        b.iter(|| {
            runtime
                .block_on(limiter.check("ip:10.0.0.2", sliding))
                .expect("check")
        });
    });
    group.bench_function("INCR (anchor)", |b| {
        b.iter(|| {
            runtime
                .block_on(
                    redis::cmd("INCR")
                        .arg("bench:ratelimit:incr")
                        .query_async::<i64>(&mut connection),
                )
                .expect("incr")
        });
    });
    group.finish();
}

criterion_group!(benches, in_process, redis);
criterion_main!(benches);
