//! Sharded pub/sub on the three-primary cluster this binary starts (`marquee-testkit`): every
//! channel is subscribed on its slot's node, subscriptions come back after their connections are
//! killed, and unwanted channels are given up. (This binary is the cluster's only user, so
//! killing its pub/sub clients disturbs no other test.)

use marquee_redis::{RedisConnection, RedisTarget, ShardMessage, ShardedSubscriber, Wanted};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(connection: &mut RedisConnection, channel: &str, payload: &str) {
    let _: i64 = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(connection)
        .await
        .expect("spublish");
}

/// Publishes on `channel` until a message on it arrives (a restored subscription may still be
/// on its way back).
async fn round_trip(
    connection: &mut RedisConnection,
    arrivals: &mut mpsc::UnboundedReceiver<ShardMessage>,
    channel: &str,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        publish(connection, channel, "ping").await;
        match tokio::time::timeout(Duration::from_millis(100), arrivals.recv()).await {
            Ok(Some(message)) if message.channel == channel.as_bytes() => return,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the subscriber stopped"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing on {channel}"
        );
    }
}

/// Drops every pub/sub client of every node; returns how many there were.
async fn kill_pubsub_clients(url: &str) -> i64 {
    let mut killed = 0;
    for node in url.trim_start_matches("redis+cluster://").split(',') {
        let client = redis::Client::open(format!("redis://{node}")).expect("url");
        let mut node = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let count: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut node)
            .await
            .expect("client kill");
        killed += count;
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_follow_their_slots_survive_dropped_connections_and_are_given_up() {
    let url = marquee_testkit::redis_cluster_url();
    let target = RedisTarget::parse(&url).expect("url");
    let mut connection = target.connect().await.expect("cluster");
    let wanted_set: Arc<Mutex<HashSet<String>>> = Arc::default();
    let wanted: Wanted = {
        let wanted_set = Arc::clone(&wanted_set);
        Arc::new(move |channel: &str| {
            wanted_set
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(channel)
        })
    };
    let want = |channel: Option<&str>| {
        let mut set = wanted_set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match channel {
            Some(channel) => set.insert(channel.to_string()),
            None => {
                set.clear();
                true
            }
        };
    };
    let (messages, mut arrivals) = mpsc::unbounded_channel();
    let subscriber = ShardedSubscriber::start(&target, connection.clone(), wanted, messages)
        .await
        .expect("subscriber");
    // Tags spread over the slots, so over all three primaries.
    let channels: Vec<String> = (0..12).map(|n| format!("sub-test:{{{n}}}")).collect();
    for channel in &channels {
        want(Some(channel));
        assert!(subscriber.subscribe(channel).await.expect("subscribe"));
        assert!(
            !subscriber.subscribe(channel).await.expect("again"),
            "already followed"
        );
    }
    for channel in &channels {
        publish(&mut connection, channel, "hello").await;
        let message = tokio::time::timeout(PATIENCE, arrivals.recv())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(message.channel, channel.as_bytes());
        assert_eq!(message.payload, b"hello");
    }

    assert_eq!(
        kill_pubsub_clients(&url).await,
        3,
        "one subscriber connection per primary"
    );
    for channel in &channels {
        round_trip(&mut connection, &mut arrivals, channel).await;
    }
    assert_eq!(subscriber.subscribed(), channels.len());

    // Nobody wants them any more: they are unsubscribed, and nothing more arrives.
    want(None);
    until("unsubscribed", || subscriber.subscribed() == 0).await;
    while arrivals.try_recv().is_ok() {}
    for channel in &channels {
        publish(&mut connection, channel, "late").await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), arrivals.recv())
            .await
            .is_err(),
        "a message on a channel given up"
    );
}
