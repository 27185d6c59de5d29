//! One conformance suite for leases, run against the in-process store, Redis
//! (`MARQUEE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and a three-primary Redis Cluster
//! this test binary starts (`marquee-testkit`); each test has its own key prefix.
//! Lapse tests use short real TTLs because Redis keeps its own clock; they await the lapse
//! announcement rather than sleeping. Exact TTL boundaries are tested with paused time on the
//! in-process store at the end of this file.

use marquee_lease::{InProcessLeases, LeaseError, LeaseStore, RedisLeases};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(150);
/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(10);

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

async fn in_process() -> Arc<dyn LeaseStore> {
    Arc::new(InProcessLeases::new())
}

async fn on_redis(url: &str) -> Arc<dyn LeaseStore> {
    let prefix = format!("test:{}:", ulid::Ulid::new());
    Arc::new(RedisLeases::connect(url, &prefix).await.expect("redis"))
}

async fn redis() -> Arc<dyn LeaseStore> {
    on_redis(&marquee_testkit::redis_url()).await
}

async fn redis_cluster() -> Arc<dyn LeaseStore> {
    on_redis(&marquee_testkit::redis_cluster_url()).await
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::in_process().await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis().await).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis_cluster().await).await })*
        }
    };
}

conformance!(
    acquiring_is_all_or_nothing,
    every_grant_has_a_larger_token,
    release_frees_the_keys_once,
    extend_keeps_a_live_lease_only,
    a_lapse_frees_the_keys_and_is_announced_once,
    a_lapsed_holder_is_fenced_out_by_the_next_one,
    racing_acquirers_get_one_winner,
    malformed_requests_are_refused,
    the_keys_of_a_lease_share_a_hash_tag,
    a_holder_is_granted_its_own_lease_again,
);

async fn acquiring_is_all_or_nothing(leases: Arc<dyn LeaseStore>) {
    let first = leases
        .acquire(&keys(&["a", "b"]), "ann", LONG)
        .await
        .expect("a, b");
    let refused = leases.acquire(&keys(&["b", "c"]), "bob", LONG).await;
    assert_eq!(refused, Err(LeaseError::Taken { keys: keys(&["b"]) }));
    // Nothing of the refused request stayed held: c is free.
    let second = leases.acquire(&keys(&["c"]), "cat", LONG).await.expect("c");
    assert!(leases
        .is_held(&keys(&["a", "b"]), first.token)
        .await
        .expect("held"));
    assert!(leases
        .is_held(&keys(&["c"]), second.token)
        .await
        .expect("held"));
    assert!(!leases
        .is_held(&keys(&["a", "c"]), first.token)
        .await
        .expect("held"));
    assert_eq!(first.holder, "ann");
    assert!(first.expires_at > chrono::Utc::now());
}

async fn every_grant_has_a_larger_token(leases: Arc<dyn LeaseStore>) {
    let mut last = None;
    for index in 0..20 {
        let lease = leases
            .acquire(&[format!("k{index}")], "ann", LONG)
            .await
            .expect("acquire");
        if let Some(previous) = last {
            assert!(lease.token > previous, "{} after {previous}", lease.token);
        }
        last = Some(lease.token);
    }
}

async fn release_frees_the_keys_once(leases: Arc<dyn LeaseStore>) {
    let lease = leases
        .acquire(&keys(&["x", "y"]), "ann", LONG)
        .await
        .expect("x, y");
    leases.release(&lease).await.expect("release");
    assert!(!leases
        .is_held(&lease.keys, lease.token)
        .await
        .expect("held"));
    assert_eq!(leases.release(&lease).await, Err(LeaseError::NotHeld));
    let next = leases
        .acquire(&keys(&["y", "x"]), "bob", LONG)
        .await
        .expect("again");
    // A stale holder cannot release the new lease by replaying its own.
    assert_eq!(leases.release(&lease).await, Err(LeaseError::NotHeld));
    assert!(leases.is_held(&next.keys, next.token).await.expect("held"));
}

async fn extend_keeps_a_live_lease_only(leases: Arc<dyn LeaseStore>) {
    let mut lapses = leases.lapses();
    let lease = leases
        .acquire(&keys(&["e"]), "ann", SHORT)
        .await
        .expect("e");
    let extended = leases.extend(&lease, LONG).await.expect("extend");
    assert_eq!(extended.token, lease.token);
    assert!(extended.expires_at > lease.expires_at);
    // Past the original deadline the lease is still held, and no lapse was announced for it.
    let other = leases
        .acquire(&keys(&["f"]), "bob", SHORT)
        .await
        .expect("f");
    let lapsed = tokio::time::timeout(PATIENCE, lapses.recv())
        .await
        .expect("a lapse in time")
        .expect("lapse");
    assert_eq!(
        lapsed.token, other.token,
        "only the unextended lease lapsed"
    );
    assert!(leases
        .is_held(&keys(&["e"]), lease.token)
        .await
        .expect("held"));
    assert_eq!(leases.extend(&other, LONG).await, Err(LeaseError::NotHeld));
}

async fn a_lapse_frees_the_keys_and_is_announced_once(leases: Arc<dyn LeaseStore>) {
    let mut lapses = leases.lapses();
    let lease = leases
        .acquire(&keys(&["l1", "l2"]), "ann", SHORT)
        .await
        .expect("acquire");
    let lapsed = tokio::time::timeout(PATIENCE, lapses.recv())
        .await
        .expect("a lapse in time")
        .expect("lapse");
    assert_eq!(lapsed.token, lease.token);
    assert_eq!(lapsed.holder, "ann");
    let announced: HashSet<String> = lapsed.keys.into_iter().collect();
    assert_eq!(announced, keys(&["l1", "l2"]).into_iter().collect());
    assert!(!leases
        .is_held(&lease.keys, lease.token)
        .await
        .expect("held"));
    leases
        .acquire(&keys(&["l2"]), "bob", LONG)
        .await
        .expect("free again");
    // Nothing else lapses: the announcement was made once.
    let marker = leases
        .acquire(&keys(&["marker"]), "m", SHORT)
        .await
        .expect("marker");
    let next = tokio::time::timeout(PATIENCE, lapses.recv())
        .await
        .expect("a lapse in time")
        .expect("lapse");
    assert_eq!(next.token, marker.token);
}

async fn a_lapsed_holder_is_fenced_out_by_the_next_one(leases: Arc<dyn LeaseStore>) {
    let mut lapses = leases.lapses();
    let stale = leases
        .acquire(&keys(&["seat"]), "ann", SHORT)
        .await
        .expect("ann");
    tokio::time::timeout(PATIENCE, lapses.recv())
        .await
        .expect("a lapse in time")
        .expect("lapse");
    let fresh = leases
        .acquire(&keys(&["seat"]), "bob", LONG)
        .await
        .expect("bob");
    assert!(fresh.token > stale.token);
    assert!(!leases
        .is_held(&keys(&["seat"]), stale.token)
        .await
        .expect("held"));
    assert!(leases
        .is_held(&keys(&["seat"]), fresh.token)
        .await
        .expect("held"));
    assert_eq!(leases.extend(&stale, LONG).await, Err(LeaseError::NotHeld));
    assert_eq!(leases.release(&stale).await, Err(LeaseError::NotHeld));
}

/// A request retried after its first attempt took the keys and died (the inventory names a
/// hold's lease by the hold's id) gets the same lease back, not a refusal until the TTL; anyone
/// else is still refused, and a lease of the holder's that was released is not revived.
async fn a_holder_is_granted_its_own_lease_again(leases: Arc<dyn LeaseStore>) {
    let first = leases
        .acquire(&keys(&["r1", "r2"]), "hold-1", SHORT)
        .await
        .expect("first attempt");
    assert_eq!(
        leases.acquire(&keys(&["r2"]), "hold-2", LONG).await,
        Err(LeaseError::Taken {
            keys: keys(&["r2"])
        })
    );
    let again = leases
        .acquire(&keys(&["r1", "r2", "r3"]), "hold-1", LONG)
        .await
        .expect("the retry");
    assert_eq!(again.token, first.token, "the same lease, so fences agree");
    assert!(again.expires_at >= first.expires_at);
    assert!(leases
        .is_held(&keys(&["r1", "r2", "r3"]), first.token)
        .await
        .expect("held"));
    // Granted for the longer TTL: still held after the first grant's TTL.
    tokio::time::sleep(SHORT * 2).await;
    assert!(leases
        .is_held(&keys(&["r1", "r2", "r3"]), again.token)
        .await
        .expect("held"));
    leases.release(&again).await.expect("release");
    let fresh = leases
        .acquire(&keys(&["r1"]), "hold-1", LONG)
        .await
        .expect("free again");
    assert!(fresh.token > first.token, "a released lease is not revived");
}

async fn racing_acquirers_get_one_winner(leases: Arc<dyn LeaseStore>) {
    let racers: Vec<_> = (0..50)
        .map(|index| {
            let leases = leases.clone();
            tokio::spawn(async move {
                leases
                    .acquire(&keys(&["hot", "seat"]), &format!("fan{index}"), LONG)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        match racer.await.expect("join") {
            Ok(_) => winners += 1,
            Err(LeaseError::Taken { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
}

async fn malformed_requests_are_refused(leases: Arc<dyn LeaseStore>) {
    assert!(matches!(
        leases.acquire(&[], "ann", LONG).await,
        Err(LeaseError::Invalid(_))
    ));
    assert!(matches!(
        leases.acquire(&keys(&["d", "d"]), "ann", LONG).await,
        Err(LeaseError::Invalid(_))
    ));
    assert!(matches!(
        leases.acquire(&keys(&["z"]), "ann", Duration::ZERO).await,
        Err(LeaseError::Invalid(_))
    ));
    leases.ping().await.expect("ping");
}

async fn the_keys_of_a_lease_share_a_hash_tag(leases: Arc<dyn LeaseStore>) {
    // One event's seats and a fan key share the event's tag; another event is independent.
    let one = leases
        .acquire(
            &keys(&["seat:{e1}:a1", "seat:{e1}:a2", "fan:{e1}:u"]),
            "ann",
            LONG,
        )
        .await
        .expect("e1");
    let two = leases
        .acquire(&keys(&["seat:{e2}:a1", "fan:{e2}:u"]), "ann", LONG)
        .await
        .expect("e2");
    assert!(leases.is_held(&one.keys, one.token).await.expect("held"));
    assert!(leases.is_held(&two.keys, two.token).await.expect("held"));
    assert_eq!(
        leases
            .acquire(&keys(&["seat:{e1}:a2", "seat:{e1}:a3"]), "bob", LONG)
            .await,
        Err(LeaseError::Taken {
            keys: keys(&["seat:{e1}:a2"])
        })
    );
    // Within a tag, every grant has a larger token than the one before.
    let again = leases
        .acquire(&keys(&["seat:{e1}:a3"]), "bob", LONG)
        .await
        .expect("a3");
    assert!(again.token > one.token);
    for mixed in [
        keys(&["seat:{e1}:b1", "seat:{e2}:b1"]),
        keys(&["seat:{e1}:b2", "untagged"]),
    ] {
        assert!(matches!(
            leases.acquire(&mixed, "cat", LONG).await,
            Err(LeaseError::Invalid(_))
        ));
    }
    leases.release(&one).await.expect("release");
    assert!(!leases.is_held(&one.keys, one.token).await.expect("held"));
    leases.extend(&two, LONG).await.expect("extend");
}

/// With the clock paused, a lease is held up to its deadline and free from it on.
#[tokio::test(start_paused = true)]
async fn in_process_ttl_boundaries_with_paused_time() {
    let leases = InProcessLeases::new();
    let mut lapses = leases.lapses();
    let ttl = Duration::from_secs(600);
    let lease = leases
        .acquire(&keys(&["s"]), "ann", ttl)
        .await
        .expect("acquire");
    tokio::time::sleep(ttl - Duration::from_millis(1)).await;
    assert!(leases
        .is_held(&keys(&["s"]), lease.token)
        .await
        .expect("held"));
    assert!(lapses.try_recv().is_err(), "no lapse before the deadline");
    let lapsed = lapses.recv().await.expect("lapse");
    assert_eq!(lapsed.token, lease.token);
    assert!(!leases
        .is_held(&keys(&["s"]), lease.token)
        .await
        .expect("held"));
}
