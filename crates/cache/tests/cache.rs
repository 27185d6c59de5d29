//! The cache's promises, on tokio's paused clock: one load per stampede, TTLs and negative
//! entries, no stale read once an invalidation is applied (even with a load in flight), and
//! the three write modes, write-back losing nothing on shutdown or on a failing store.
//!
//! The store behind the cache is `common::Shelf`.

mod common;

use common::Shelf;
use marquee_cache::{Cache, CacheError, CacheSettings, Policy, WriteMode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn settings(write: WriteMode) -> CacheSettings {
    let mut settings = CacheSettings::new("test", Policy::TinyLfu, 1_000, Duration::from_secs(60));
    settings.negative_ttl = Duration::from_secs(5);
    settings.write = write;
    settings
}

fn cache(write: WriteMode) -> (Arc<Cache<u32, String, Shelf>>, Arc<Shelf>) {
    let shelf = Arc::new(Shelf::default());
    (Cache::new(settings(write), Arc::clone(&shelf)), shelf)
}

#[tokio::test(start_paused = true)]
async fn a_stampede_on_a_cold_key_makes_one_load() {
    for policy in Policy::ALL {
        let shelf = Arc::new(Shelf::default());
        shelf.set(7, "seven");
        let mut settings = settings(WriteMode::Through);
        settings.policy = policy;
        let cache = Cache::new(settings, Arc::clone(&shelf));
        let readers: Vec<_> = (0..200)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.get(&7).await })
            })
            .collect();
        for reader in readers {
            assert_eq!(
                reader.await.expect("reader").expect("value").as_deref(),
                Some("seven")
            );
        }
        assert_eq!(shelf.loads.load(Ordering::SeqCst), 1, "{policy:?}");
        assert_eq!(cache.get(&7).await.expect("hit").as_deref(), Some("seven"));
        assert_eq!(
            shelf.loads.load(Ordering::SeqCst),
            1,
            "{policy:?}: then served from the cache"
        );
        let stats = cache.stats();
        assert_eq!((stats.loads, stats.hits), (1, 1), "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn values_expire_after_their_ttl_and_absence_after_its_own() {
    let (cache, shelf) = cache(WriteMode::Through);
    shelf.set(1, "one");
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("one"));
    assert_eq!(cache.get(&2).await.expect("get"), None);
    assert_eq!(shelf.loads.load(Ordering::SeqCst), 2);
    // Within both TTLs: no load, and the absence is served from the cache too.
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(cache.get(&2).await.expect("get"), None);
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("one"));
    assert_eq!(shelf.loads.load(Ordering::SeqCst), 2);
    // Past the negative TTL the absence is asked again; the value still is not.
    shelf.set(2, "two");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(cache.get(&2).await.expect("get").as_deref(), Some("two"));
    assert_eq!(shelf.loads.load(Ordering::SeqCst), 3);
    shelf.set(1, "uno");
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("one"));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("uno"));
}

#[tokio::test(start_paused = true)]
async fn no_read_sees_an_old_value_once_the_invalidation_is_applied() {
    let (cache, shelf) = cache(WriteMode::Through);
    shelf.set(1, "old");
    shelf.hold_loads.store(true, Ordering::SeqCst);
    // A load reads "old" from the store and is held there.
    let early = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.get(&1).await }
    });
    shelf.held.notified().await;
    // The store changes and the change stream's invalidation is applied.
    shelf.set(1, "new");
    cache.invalidate(&1);
    shelf.hold_loads.store(false, Ordering::SeqCst);
    // A reader after the invalidation does not join the load in flight: it gets "new".
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("new"));
    shelf.release.notify_one();
    // The early reader started before the change and may see "old"...
    assert_eq!(
        early.await.expect("early").expect("get").as_deref(),
        Some("old")
    );
    // ...but it did not put "old" back in the cache.
    for _ in 0..3 {
        assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("new"));
    }
}

#[tokio::test(start_paused = true)]
async fn failed_loads_are_not_cached() {
    let (cache, shelf) = cache(WriteMode::Through);
    shelf.set(1, "one");
    shelf.fail_loads.store(true, Ordering::SeqCst);
    assert!(matches!(cache.get(&1).await, Err(CacheError::Backing(_))));
    shelf.fail_loads.store(false, Ordering::SeqCst);
    assert_eq!(cache.get(&1).await.expect("get").as_deref(), Some("one"));
}

#[tokio::test(start_paused = true)]
async fn write_through_and_write_around_reach_the_store_before_they_return() {
    let (through, shelf) = cache(WriteMode::Through);
    through.put(1, "one".into()).await.expect("put");
    assert_eq!(shelf.value(1).as_deref(), Some("one"));
    assert_eq!(through.get(&1).await.expect("get").as_deref(), Some("one"));
    assert_eq!(
        shelf.loads.load(Ordering::SeqCst),
        0,
        "through: the cache has it already"
    );

    let (around, shelf) = cache(WriteMode::Around);
    assert_eq!(around.get(&1).await.expect("get"), None);
    around.put(1, "one".into()).await.expect("put");
    assert_eq!(shelf.value(1).as_deref(), Some("one"));
    assert_eq!(around.get(&1).await.expect("get").as_deref(), Some("one"));
    assert_eq!(
        shelf.loads.load(Ordering::SeqCst),
        2,
        "around: the write dropped the entry"
    );

    // A store that refuses the write leaves the cache as it was.
    shelf.fail_stores.store(true, Ordering::SeqCst);
    assert!(around.put(1, "uno".into()).await.is_err());
    assert_eq!(around.get(&1).await.expect("get").as_deref(), Some("one"));
}

#[tokio::test(start_paused = true)]
async fn write_back_flushes_when_full_on_its_interval_and_on_shutdown_and_loses_nothing() {
    let interval = Duration::from_secs(10);
    let (cache, shelf) = cache(WriteMode::Back {
        max_dirty: 4,
        interval,
    });
    for key in 0..3 {
        cache.put(key, format!("v{key}")).await.expect("put");
    }
    assert_eq!(shelf.value(0), None, "not written yet");
    assert_eq!(
        cache.get(&0).await.expect("get").as_deref(),
        Some("v0"),
        "but read back"
    );
    assert_eq!(cache.dirty_len().await, 3);
    // The fourth fills the dirty set: all four go at once.
    cache.put(3, "v3".into()).await.expect("put");
    assert_eq!(cache.dirty_len().await, 0);
    assert_eq!(shelf.value(3).as_deref(), Some("v3"));

    // The interval flush.
    cache.put(10, "v10".into()).await.expect("put");
    // Paused time: this moves the clock past the flush's deadline (it is what is tested), then
    // the flusher gets its turn.
    tokio::time::sleep(interval + Duration::from_millis(1)).await;
    for _ in 0..100 {
        if cache.dirty_len().await == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(shelf.value(10).as_deref(), Some("v10"));

    // A store that fails keeps the values dirty; a newer put wins over the failed one.
    shelf.fail_stores.store(true, Ordering::SeqCst);
    cache.put(20, "v20".into()).await.expect("put");
    cache.put(21, "v21".into()).await.expect("put");
    assert!(matches!(
        cache.shutdown().await,
        Err(CacheError::WriteBack { failed: 2, .. })
    ));
    assert_eq!(cache.dirty_len().await, 2);
    shelf.fail_stores.store(false, Ordering::SeqCst);
    cache.put(21, "v21b".into()).await.expect("put");
    cache.shutdown().await.expect("shutdown flush");
    assert_eq!(cache.dirty_len().await, 0);
    assert_eq!(shelf.value(20).as_deref(), Some("v20"));
    assert_eq!(shelf.value(21).as_deref(), Some("v21b"));
}
