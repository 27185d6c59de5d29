//! One conformance suite for push hubs, run against the in-process hub, Redis
//! (`MARQUEE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and a three-primary Redis Cluster
//! this binary starts (`marquee-testkit`); each test has its own key prefix. Cross-node delivery
//! is tested with two Redis hubs sharing a prefix.

use marquee_push::{
    Channel, HubLimits, InProcessHub, PushHub, PushMessage, RedisHub, Start, Subscription,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(10);

type Hub = Arc<dyn PushHub>;

fn prefix() -> String {
    format!("test:{}:", ulid::Ulid::new())
}

async fn in_process(limits: HubLimits) -> Hub {
    Arc::new(InProcessHub::new(limits))
}

async fn node(url: &str, prefix: &str, limits: HubLimits) -> RedisHub {
    RedisHub::connect(url, prefix, limits).await.expect("redis")
}

async fn redis(limits: HubLimits) -> Hub {
    Arc::new(node(&marquee_testkit::redis_url(), &prefix(), limits).await)
}

async fn redis_cluster(limits: HubLimits) -> Hub {
    Arc::new(node(&marquee_testkit::redis_cluster_url(), &prefix(), limits).await)
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::in_process).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis_cluster).await })*
        }
    };
}

/// Tests of nodes sharing Redis, on the single server and on the cluster.
macro_rules! across_nodes {
    ($($test:ident),* $(,)?) => {
        mod nodes_on_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(marquee_testkit::redis_url()).await })*
        }
        mod nodes_on_redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(marquee_testkit::redis_cluster_url()).await })*
        }
    };
}

across_nodes!(
    a_message_published_on_one_node_reaches_another_with_the_same_offset,
    a_node_receives_only_the_channels_it_follows,
);

conformance!(
    offsets_grow_by_one_and_resume_is_exact,
    a_gap_beyond_history_starts_with_a_reset,
    caller_offsets_are_idempotent_and_a_jump_resets,
    a_seeded_channel_resumes_from_its_owner_offset,
    every_subscriber_gets_every_message_in_order,
    a_slow_consumer_is_told_it_lagged,
    history_ages_out,
    a_unique_publish_happens_once,
);

fn channel(name: &str) -> Channel {
    Channel::parse(&format!("user:{name}")).expect("channel")
}

fn offsets(messages: &[Arc<PushMessage>]) -> Vec<u64> {
    messages.iter().map(|message| message.offset).collect()
}

fn replayed(start: &Start) -> Vec<u64> {
    match start {
        Start::Replay(messages) => offsets(messages),
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// The next live message after `after`, skipping any a replay already delivered.
async fn next_after(subscription: &mut Subscription, after: u64) -> Arc<PushMessage> {
    loop {
        let message = tokio::time::timeout(PATIENCE, subscription.live.recv())
            .await
            .expect("a message in time")
            .expect("not lagged");
        if message.offset > after {
            return message;
        }
    }
}

async fn offsets_grow_by_one_and_resume_is_exact<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits::default()).await;
    let ann = channel("ann");
    for n in 1..=5u64 {
        let offset = hub
            .publish(&ann, "note", &json!({ "n": n }))
            .await
            .expect("publish");
        assert_eq!(offset, n);
    }
    let mut resumed = hub.subscribe(&ann, Some(2)).await.expect("subscribe");
    assert_eq!(replayed(&resumed.start), vec![3, 4, 5]);
    let Start::Replay(messages) = &resumed.start else {
        unreachable!()
    };
    let wire: serde_json::Value = serde_json::from_slice(&messages[0].json).expect("json");
    assert_eq!(
        wire,
        json!({"channel": "user:ann", "offset": 3, "type": "note", "data": {"n": 3}})
    );
    assert_eq!(messages[0].kind, "note");
    hub.publish(&ann, "note", &json!({"n": 6}))
        .await
        .expect("publish");
    assert_eq!(next_after(&mut resumed, 5).await.offset, 6);
    // Up to date: nothing to replay. Live only: no replay either.
    assert_eq!(
        replayed(&hub.subscribe(&ann, Some(6)).await.expect("subscribe").start),
        Vec::<u64>::new()
    );
    assert_eq!(
        hub.subscribe(&ann, None).await.expect("subscribe").start,
        Start::Live { offset: 6 }
    );
    // Channels are independent.
    assert_eq!(
        hub.publish(&channel("bob"), "note", &json!({}))
            .await
            .expect("publish"),
        1
    );
}

async fn a_gap_beyond_history_starts_with_a_reset<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits {
        history_len: 3,
        ..HubLimits::default()
    })
    .await;
    let ann = channel("ann");
    for _ in 0..10 {
        hub.publish(&ann, "note", &json!({}))
            .await
            .expect("publish");
    }
    let stale = hub.subscribe(&ann, Some(2)).await.expect("subscribe");
    assert_eq!(stale.start, Start::Reset { offset: 10 });
    assert_eq!(
        replayed(&hub.subscribe(&ann, Some(7)).await.expect("subscribe").start),
        vec![8, 9, 10]
    );
    // An offset from the future (a client of a hub that lost its state) is reset too.
    assert_eq!(
        hub.subscribe(&ann, Some(11))
            .await
            .expect("subscribe")
            .start,
        Start::Reset { offset: 10 }
    );
    assert_eq!(
        hub.subscribe(&channel("new"), Some(3))
            .await
            .expect("subscribe")
            .start,
        Start::Reset { offset: 0 }
    );
}

async fn caller_offsets_are_idempotent_and_a_jump_resets<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits::default()).await;
    let seats = Channel::event_seats("e1").expect("channel");
    let mut live = hub.subscribe(&seats, None).await.expect("subscribe");
    for offset in [1, 2] {
        assert!(hub
            .publish_at(&seats, offset, "seats", &json!({"o": offset}))
            .await
            .expect("publish"));
    }
    // The same change relayed by a second node is not a second message.
    assert!(!hub
        .publish_at(&seats, 2, "seats", &json!({"o": 2}))
        .await
        .expect("publish"));
    assert!(!hub
        .publish_at(&seats, 1, "seats", &json!({}))
        .await
        .expect("publish"));
    assert!(hub
        .publish_at(&seats, 7, "seats", &json!({"o": 7}))
        .await
        .expect("publish"));
    assert_eq!(next_after(&mut live, 0).await.offset, 1);
    assert_eq!(next_after(&mut live, 1).await.offset, 2);
    assert_eq!(next_after(&mut live, 2).await.offset, 7);
    assert_eq!(
        hub.subscribe(&seats, Some(2))
            .await
            .expect("subscribe")
            .start,
        Start::Reset { offset: 7 },
        "3 to 6 were never seen, so resuming from 2 cannot be exact"
    );
    assert_eq!(
        replayed(
            &hub.subscribe(&seats, Some(6))
                .await
                .expect("subscribe")
                .start
        ),
        vec![7]
    );
}

async fn a_seeded_channel_resumes_from_its_owner_offset<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits::default()).await;
    let seats = Channel::event_seats("e2").expect("channel");
    hub.seed(&seats, 57).await.expect("seed");
    let mut current = hub.subscribe(&seats, Some(57)).await.expect("subscribe");
    assert_eq!(replayed(&current.start), Vec::<u64>::new());
    assert_eq!(
        hub.subscribe(&seats, Some(50))
            .await
            .expect("subscribe")
            .start,
        Start::Reset { offset: 57 }
    );
    // A seed behind the hub changes nothing.
    hub.publish_at(&seats, 58, "seats", &json!({}))
        .await
        .expect("publish");
    hub.seed(&seats, 40).await.expect("seed");
    assert_eq!(next_after(&mut current, 57).await.offset, 58);
    assert_eq!(
        replayed(
            &hub.subscribe(&seats, Some(57))
                .await
                .expect("subscribe")
                .start
        ),
        vec![58]
    );
}

async fn every_subscriber_gets_every_message_in_order<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits::default()).await;
    let ann = channel("ann");
    let mut subscribers = Vec::new();
    for _ in 0..50 {
        subscribers.push(hub.subscribe(&ann, None).await.expect("subscribe"));
    }
    let publisher = {
        let hub = Arc::clone(&hub);
        let ann = ann.clone();
        tokio::spawn(async move {
            for n in 1..=100u64 {
                hub.publish(&ann, "note", &json!({ "n": n }))
                    .await
                    .expect("publish");
            }
        })
    };
    for subscriber in &mut subscribers {
        let mut last = 0;
        while last < 100 {
            let message = next_after(subscriber, last).await;
            assert_eq!(message.offset, last + 1, "in order, no gaps");
            last = message.offset;
        }
    }
    publisher.await.expect("publisher");
}

async fn a_slow_consumer_is_told_it_lagged<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits {
        subscriber_buffer: 4,
        ..HubLimits::default()
    })
    .await;
    let ann = channel("ann");
    let mut slow = hub.subscribe(&ann, None).await.expect("subscribe");
    let mut fast = hub.subscribe(&ann, None).await.expect("subscribe");
    let mut last_fast = 0;
    for _ in 0..20 {
        let offset = hub
            .publish(&ann, "note", &json!({}))
            .await
            .expect("publish");
        // The fast one keeps up and is never affected by the slow one.
        while last_fast < offset {
            last_fast = next_after(&mut fast, last_fast).await.offset;
        }
    }
    let lagged = loop {
        match tokio::time::timeout(PATIENCE, slow.live.recv())
            .await
            .expect("in time")
        {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert!(matches!(lagged, RecvError::Lagged(_)), "{lagged:?}");
}

async fn history_ages_out<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits {
        history_age: Duration::from_millis(200),
        ..HubLimits::default()
    })
    .await;
    let ann = channel("ann");
    hub.publish(&ann, "note", &json!({}))
        .await
        .expect("publish");
    hub.publish(&ann, "note", &json!({}))
        .await
        .expect("publish");
    assert_eq!(
        replayed(&hub.subscribe(&ann, Some(0)).await.expect("subscribe").start),
        vec![1, 2]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        hub.subscribe(&ann, Some(0)).await.expect("subscribe").start,
        Start::Reset { offset: 2 }
    );
    hub.publish(&ann, "note", &json!({}))
        .await
        .expect("publish");
    assert_eq!(
        replayed(&hub.subscribe(&ann, Some(2)).await.expect("subscribe").start),
        vec![3]
    );
}

async fn a_message_published_on_one_node_reaches_another_with_the_same_offset(url: String) {
    let prefix = prefix();
    let node_a = node(&url, &prefix, HubLimits::default()).await;
    let node_b = node(&url, &prefix, HubLimits::default()).await;
    let seats = Channel::event_seats("shared").expect("channel");
    let mut on_b = node_b.subscribe(&seats, None).await.expect("subscribe");
    for offset in 1..=3 {
        // Both nodes relay the same change stream; each change arrives once.
        for node in [&node_a, &node_b] {
            node.publish_at(&seats, offset, "seats", &json!({ "o": offset }))
                .await
                .expect("publish");
        }
    }
    let ann = channel("ann");
    let mut ann_on_a = node_a.subscribe(&ann, None).await.expect("subscribe");
    assert_eq!(
        node_b
            .publish(&ann, "note", &json!({}))
            .await
            .expect("publish"),
        1
    );
    assert_eq!(
        node_a
            .publish(&ann, "note", &json!({}))
            .await
            .expect("publish"),
        2
    );
    let mut last = 0;
    for expected in 1..=3 {
        let message = next_after(&mut on_b, last).await;
        assert_eq!(message.offset, expected);
        assert_eq!(message.kind, "seats");
        last = message.offset;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), on_b.live.recv())
            .await
            .is_err(),
        "no duplicates"
    );
    assert_eq!(next_after(&mut ann_on_a, 0).await.offset, 1);
    assert_eq!(next_after(&mut ann_on_a, 1).await.offset, 2);
}

/// Sharded pub/sub: a node receives the messages of the channels its subscribers follow, and
/// none once they have left.
async fn a_node_receives_only_the_channels_it_follows(url: String) {
    let prefix = prefix();
    let follower = node(&url, &prefix, HubLimits::default()).await;
    let publisher = node(&url, &prefix, HubLimits::default()).await;
    let (a, b) = (channel("a"), channel("b"));
    let mut on_a = follower.subscribe(&a, None).await.expect("subscribe");
    assert_eq!(follower.followed(), 1);
    for _ in 0..5 {
        publisher
            .publish(&b, "note", &json!({}))
            .await
            .expect("publish");
    }
    publisher
        .publish(&a, "note", &json!({}))
        .await
        .expect("publish");
    assert_eq!(next_after(&mut on_a, 0).await.offset, 1);
    // Time for channel b's messages to arrive, had they been sent here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(follower.received(), 1, "only channel a's message came");
    assert_eq!(
        publisher.received(),
        0,
        "a node nobody follows through receives nothing"
    );

    // The last subscriber leaves: the node stops following the channel.
    drop(on_a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while follower.followed() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "still following a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher
        .publish(&a, "note", &json!({}))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        follower.received(),
        1,
        "nothing after the last subscriber left"
    );

    // Following again starts from the channel's offset and goes on from there.
    let mut again = follower.subscribe(&a, None).await.expect("subscribe");
    assert_eq!(again.start, Start::Live { offset: 2 });
    publisher
        .publish(&a, "note", &json!({}))
        .await
        .expect("publish");
    assert_eq!(next_after(&mut again, 2).await.offset, 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), again.live.recv())
            .await
            .is_err(),
        "the offset missed while not following is not replayed live"
    );
    assert_eq!(follower.received(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_hub_forgets_idle_channels() {
    let hub = InProcessHub::new(HubLimits {
        history_age: Duration::from_millis(50),
        ..HubLimits::default()
    });
    let listened = hub
        .subscribe(&channel("kept"), None)
        .await
        .expect("subscribe");
    hub.publish(&channel("gone"), "note", &json!({}))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(hub.sweep(), 1, "only the channel with a subscriber stays");
    drop(listened);
}

async fn a_unique_publish_happens_once<F, Fut>(make: F)
where
    F: Fn(HubLimits) -> Fut,
    Fut: std::future::Future<Output = Hub>,
{
    let hub = make(HubLimits::default()).await;
    let ann = channel("ann");
    assert_eq!(
        hub.publish_unique(&ann, "change:7", "order.confirmed", &json!({}))
            .await
            .expect("publish"),
        Some(1)
    );
    assert_eq!(
        hub.publish_unique(&ann, "change:7", "order.confirmed", &json!({}))
            .await
            .expect("publish"),
        None,
        "a second node relaying the same change adds nothing"
    );
    assert_eq!(
        hub.publish_unique(&ann, "change:8", "order.refunded", &json!({}))
            .await
            .expect("publish"),
        Some(2)
    );
}
