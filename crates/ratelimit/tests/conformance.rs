//! One suite, both implementations: what every caller of `RateLimiter` relies on, on Redis both
//! as a single server and as a three-primary cluster this binary starts (`marquee-testkit`).
//! Each test gets its own Redis key prefix, so tests run at once.

use marquee_ratelimit::{
    Algorithm, Decision, InProcessRateLimiter, Quota, RateLimiter, RedisRateLimiter,
};
use std::sync::Arc;
use std::time::Duration;

fn prefix() -> String {
    format!("test:{}:", ulid::Ulid::new())
}

async fn redis_limiter(url: &str) -> RedisRateLimiter {
    RedisRateLimiter::connect(url, &prefix())
        .await
        .expect("redis")
}

fn per_hour(limit: u32) -> Quota {
    Quota::new(limit, Duration::from_secs(3600)).expect("quota")
}

/// Ten of a burst of 15 pass against 10 per hour, counting down `remaining`; the refusals say
/// when to retry, within `longest_wait`.
async fn a_burst_gets_exactly_the_limit(
    limiter: &dyn RateLimiter,
    quota: Quota,
    longest_wait: Duration,
) {
    let mut remaining = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..15 {
        match limiter.check("fan-1", quota).await.expect("check") {
            Decision::Allowed { remaining: left } => remaining.push(left),
            Decision::Refused { retry_after } => refused.push(retry_after),
        }
    }
    assert_eq!(remaining, (0..10).rev().collect::<Vec<u32>>());
    assert_eq!(refused.len(), 5);
    for retry_after in refused {
        assert!(retry_after > Duration::ZERO && retry_after <= longest_wait);
    }
}

async fn a_burst_gets_exactly_the_limit_then_a_retry_after(limiter: &dyn RateLimiter) {
    // One emission interval (6 minutes) at most.
    a_burst_gets_exactly_the_limit(limiter, per_hour(10), Duration::from_secs(360)).await;
}

/// A sliding window of 10 per hour: ten at once, then refusals until (at least) the next
/// window; the GCRA and the window counters of one key are separate allowances.
async fn a_sliding_window_burst_gets_exactly_the_limit(limiter: &dyn RateLimiter) {
    let quota = per_hour(10).with_algorithm(Algorithm::SlidingWindow);
    // Without a previous window the estimate is the plain count.
    a_burst_gets_exactly_the_limit(limiter, quota, Duration::from_secs(7200)).await;
    assert!(limiter
        .check("fan-1", per_hour(10))
        .await
        .expect("check")
        .is_allowed());
}

async fn keys_do_not_share_an_allowance(limiter: &dyn RateLimiter) {
    let quota = per_hour(2);
    for key in ["ip:10.0.0.1", "ip:10.0.0.2", "user:01J"] {
        assert!(limiter.check(key, quota).await.expect("check").is_allowed());
        assert!(limiter.check(key, quota).await.expect("check").is_allowed());
        assert!(!limiter.check(key, quota).await.expect("check").is_allowed());
    }
}

async fn concurrent_requests_never_exceed_the_limit(
    limiters: Vec<Arc<dyn RateLimiter>>,
    algorithm: Algorithm,
) {
    let quota = per_hour(100).with_algorithm(algorithm);
    let tasks: Vec<_> = (0..60)
        .map(|task| {
            let limiter = limiters[task % limiters.len()].clone();
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..5 {
                    if limiter
                        .check("hot", quota)
                        .await
                        .expect("check")
                        .is_allowed()
                    {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.expect("task");
    }
    assert_eq!(allowed, 100, "300 requests at once against 100/h");
}

mod in_process {
    use super::*;

    #[tokio::test]
    async fn a_burst_gets_exactly_the_limit_then_a_retry_after() {
        super::a_burst_gets_exactly_the_limit_then_a_retry_after(&InProcessRateLimiter::new())
            .await;
    }

    #[tokio::test]
    async fn a_sliding_window_burst_gets_exactly_the_limit() {
        super::a_sliding_window_burst_gets_exactly_the_limit(&InProcessRateLimiter::new()).await;
    }

    #[tokio::test]
    async fn keys_do_not_share_an_allowance() {
        super::keys_do_not_share_an_allowance(&InProcessRateLimiter::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_never_exceed_the_limit() {
        for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
            let limiter: Arc<dyn RateLimiter> = Arc::new(InProcessRateLimiter::new());
            super::concurrent_requests_never_exceed_the_limit(vec![limiter], algorithm).await;
        }
    }

    /// On paused time: the previous window's count slides out linearly.
    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_lets_the_previous_window_slide_out() {
        let limiter = InProcessRateLimiter::new();
        let quota = Quota::new(10, Duration::from_secs(10))
            .expect("quota")
            .with_algorithm(Algorithm::SlidingWindow);
        // Align to a window boundary of the limiter's own clock.
        let Decision::Allowed { .. } = limiter.check_now("k", quota) else {
            panic!("first request refused");
        };
        let allowed_now = (0..20)
            .filter(|_| limiter.check_now("k", quota).is_allowed())
            .count();
        assert_eq!(allowed_now, 9, "the rest of the window's ten");
        let Decision::Refused { retry_after } = limiter.check_now("k", quota) else {
            panic!("an eleventh request in the window was allowed");
        };
        tokio::time::advance(retry_after).await;
        assert!(
            limiter.check_now("k", quota).is_allowed(),
            "allowed at the advertised time"
        );
        // Two whole periods later nothing of the burst counts any more.
        tokio::time::advance(Duration::from_secs(20)).await;
        let allowed = (0..20)
            .filter(|_| limiter.check_now("k", quota).is_allowed())
            .count();
        assert!(allowed >= 10, "{allowed}");
    }

    /// On paused time: the allowance refills at exactly the quota's rate.
    #[tokio::test(start_paused = true)]
    async fn the_allowance_refills_at_the_rate() {
        let limiter = InProcessRateLimiter::new();
        let quota = Quota::new(4, Duration::from_secs(1)).expect("quota");
        for _ in 0..4 {
            assert!(limiter.check_now("k", quota).is_allowed());
        }
        let Decision::Refused { retry_after } = limiter.check_now("k", quota) else {
            panic!("a fifth request within the burst was allowed");
        };
        assert_eq!(retry_after, Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(249)).await;
        assert!(!limiter.check_now("k", quota).is_allowed());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check_now("k", quota).is_allowed());
        assert!(!limiter.check_now("k", quota).is_allowed());
        // A whole idle period refills the whole burst, and no more.
        tokio::time::advance(Duration::from_secs(5)).await;
        let allowed = (0..10)
            .filter(|_| limiter.check_now("k", quota).is_allowed())
            .count();
        assert_eq!(allowed, 4);
    }

    /// Keys whose allowance has refilled are forgotten: memory follows active keys.
    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten() {
        let limiter = InProcessRateLimiter::new();
        let quota = Quota::new(1, Duration::from_secs(1)).expect("quota");
        for key in 0..100_000 {
            limiter.check_now(&format!("ip:{key}"), quota);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for key in 0..100_000 {
            limiter.check_now(&format!("other:{key}"), quota);
        }
        assert!(
            limiter.tracked_keys() < 150_000,
            "{} keys kept",
            limiter.tracked_keys()
        );
    }
}

/// The Redis suite, on the single server and on a three-primary cluster.
macro_rules! on_redis {
    ($name:ident, $url:expr) => {
        mod $name {
            use super::*;

            fn redis_url() -> String {
                $url
            }

            #[tokio::test]
            async fn a_burst_gets_exactly_the_limit_then_a_retry_after() {
                super::a_burst_gets_exactly_the_limit_then_a_retry_after(
                    &redis_limiter(&redis_url()).await,
                )
                .await;
            }

            #[tokio::test]
            async fn a_sliding_window_burst_gets_exactly_the_limit() {
                super::a_sliding_window_burst_gets_exactly_the_limit(
                    &redis_limiter(&redis_url()).await,
                )
                .await;
            }

            #[tokio::test]
            async fn keys_do_not_share_an_allowance() {
                super::keys_do_not_share_an_allowance(&redis_limiter(&redis_url()).await).await;
            }

            /// Three limiters (as three gateways would be) sharing one prefix share one allowance.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_requests_never_exceed_the_limit_across_three_processes() {
                for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
                    let prefix = prefix();
                    let mut limiters: Vec<Arc<dyn RateLimiter>> = Vec::new();
                    for _ in 0..3 {
                        limiters.push(Arc::new(
                            RedisRateLimiter::connect(&redis_url(), &prefix)
                                .await
                                .expect("redis"),
                        ));
                    }
                    super::concurrent_requests_never_exceed_the_limit(limiters, algorithm).await;
                }
            }

            /// Waiting the advertised `retry_after` is enough for the next request.
            #[tokio::test]
            async fn waiting_the_advertised_time_is_enough() {
                let limiter = redis_limiter(&redis_url()).await;
                let quota = Quota::new(5, Duration::from_secs(1)).expect("quota");
                let mut refusal = None;
                for _ in 0..6 {
                    if let Decision::Refused { retry_after } =
                        limiter.check("k", quota).await.expect("check")
                    {
                        refusal = Some(retry_after);
                    }
                }
                let retry_after = refusal.expect("the sixth request of a burst of 5 was allowed");
                assert!(retry_after <= Duration::from_millis(200));
                tokio::time::sleep(retry_after).await;
                assert!(limiter.check("k", quota).await.expect("check").is_allowed());
            }
        }
    };
}

on_redis!(redis, marquee_testkit::redis_url());
on_redis!(redis_cluster, marquee_testkit::redis_cluster_url());
