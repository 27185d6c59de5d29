//! The shared tier on the real Redis (127.0.0.1:6379, and a three-primary cluster this binary
//! starts; a key prefix of the test's own): nodes share one copy per key, and a node's load that
//! raced an invalidation on another node never leaves the old value in Redis for everyone.

mod common;

use common::Shelf;
use marquee_cache::{Cache, CacheSettings, Codec, Policy, RedisTier, SharedTier};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(&self, value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Where the nodes of one test share their tier: a Redis and a key prefix of the test's own.
struct Tier {
    url: String,
    prefix: String,
}

impl Tier {
    fn new(url: String, test: &str) -> Tier {
        Tier {
            url,
            prefix: format!("marquee-test:cache:{test}:{}:", ulid::Ulid::new()),
        }
    }

    async fn connect(&self) -> Arc<dyn SharedTier<u32, String>> {
        let connection = marquee_redis::connect(&self.url)
            .await
            .expect("Redis on 127.0.0.1:6379 (./scripts/test starts it)");
        Arc::new(RedisTier::new(connection, self.prefix.clone(), Utf8))
    }
}

/// One node: its own local tier over the shared one and the common store.
async fn node(shelf: &Arc<Shelf>, tier: &Tier) -> Arc<Cache<u32, String, Shelf>> {
    let settings = CacheSettings::new("shared-test", Policy::TinyLfu, 100, Duration::from_secs(60));
    Cache::with_shared(settings, Arc::clone(shelf), Some(tier.connect().await))
}

macro_rules! on_redis {
    ($name:ident, $url:expr) => {
        mod $name {
            #[tokio::test]
            async fn nodes_share_one_copy_and_one_invalidation_reaches_all() {
                super::nodes_share_one_copy_and_one_invalidation_reaches_all($url).await;
            }

            #[tokio::test]
            async fn a_load_that_raced_an_invalidation_does_not_fill_redis_with_the_old_value() {
                super::a_load_that_raced_an_invalidation_does_not_fill_redis_with_the_old_value(
                    $url,
                )
                .await;
            }
        }
    };
}

on_redis!(redis, marquee_testkit::redis_url());
on_redis!(redis_cluster, marquee_testkit::redis_cluster_url());

async fn nodes_share_one_copy_and_one_invalidation_reaches_all(url: String) {
    let tier = Tier::new(url, "share");
    let shelf = Arc::new(Shelf::default());
    shelf.set(1, "one");
    let (a, b) = (node(&shelf, &tier).await, node(&shelf, &tier).await);
    assert_eq!(a.get(&1).await.expect("a").as_deref(), Some("one"));
    assert_eq!(b.get(&1).await.expect("b").as_deref(), Some("one"));
    assert_eq!(
        shelf.loads.load(Ordering::SeqCst),
        1,
        "b was served from Redis"
    );
    // Absence is shared too.
    assert_eq!(a.get(&2).await.expect("a"), None);
    assert_eq!(b.get(&2).await.expect("b"), None);
    assert_eq!(shelf.loads.load(Ordering::SeqCst), 2);

    // The change, and its invalidation applied on every node (as the change stream does).
    shelf.set(1, "uno");
    a.invalidate_shared(&1).await.expect("invalidate on a");
    b.invalidate_shared(&1).await.expect("invalidate on b");
    assert_eq!(b.get(&1).await.expect("b").as_deref(), Some("uno"));
    assert_eq!(a.get(&1).await.expect("a").as_deref(), Some("uno"));
    assert_eq!(
        shelf.loads.load(Ordering::SeqCst),
        3,
        "one load for both nodes again"
    );
}

async fn a_load_that_raced_an_invalidation_does_not_fill_redis_with_the_old_value(url: String) {
    let tier = Tier::new(url, "race");
    let shelf = Arc::new(Shelf::default());
    shelf.set(1, "old");
    let (a, b) = (node(&shelf, &tier).await, node(&shelf, &tier).await);
    shelf.hold_loads.store(true, Ordering::SeqCst);
    // Node A misses everywhere, reads "old" from the store and is held there.
    let early = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.get(&1).await }
    });
    shelf.held.notified().await;
    shelf.hold_loads.store(false, Ordering::SeqCst);
    // Node B changes the value and invalidates; A's own invalidation has not arrived yet.
    shelf.set(1, "new");
    b.invalidate_shared(&1).await.expect("invalidate on b");
    shelf.release.notify_one();
    assert_eq!(
        early.await.expect("a").expect("get").as_deref(),
        Some("old")
    );
    // A node that never saw "old" must not get it from Redis.
    let c = node(&shelf, &tier).await;
    assert_eq!(c.get(&1).await.expect("c").as_deref(), Some("new"));
    assert_eq!(b.get(&1).await.expect("b").as_deref(), Some("new"));
}
