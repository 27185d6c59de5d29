//! `marquee-bench push-nodes`: what each node receives from Redis when push spans nodes.
//!
//! Cross-node push goes through Redis sharded pub/sub: a node subscribes to a channel's shard
//! channel only while it has a subscriber of that channel, so it should receive the messages of
//! the channels its own subscribers follow and nothing else. Here `nodes` push hubs (each a
//! `RedisHub` with connections of its own, as a node has) follow `channels` channels, each
//! channel followed on exactly one node (round-robin), and a further hub publishes `messages`
//! messages on every channel. Two layouts are measured:
//!
//! - **spread**: each channel's subscribers on one node (fans of one channel on one node, as
//!   the gateway's event-hash balancing arranges for event channels);
//! - **everywhere**: every node has a subscriber on every channel, which is what every node
//!   received before sharding (broadcast pub/sub), for comparison.
//!
//! Bytes are the kernel's own count: `ss -ti` reports `bytes_received` for every TCP socket, and
//! each node's sockets to Redis are told apart by the sockets this process opened while that
//! node connected and subscribed. They include the replies to the node's own commands (the
//! subscribe's history read), which is small beside the messages.

use anyhow::{bail, Context};
use marquee_push::{Channel, HubLimits, PushHub, RedisHub};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PushNodesBench {
    pub nodes: usize,
    pub channels: usize,
    pub messages: usize,
    /// Bytes of data per message.
    pub data_bytes: usize,
    pub redis_url: String,
}

#[derive(Debug, Clone)]
pub struct NodeReceipt {
    pub layout: &'static str,
    pub node: usize,
    pub channels_followed: usize,
    pub messages_received: u64,
    pub bytes_received: u64,
}

/// This process's established TCP sockets: local port → bytes received so far.
fn sockets() -> anyhow::Result<BTreeMap<String, u64>> {
    let pid = std::process::id();
    let output = std::process::Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
        .context("running ss (iproute2)")?;
    anyhow::ensure!(output.status.success(), "ss failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut found = BTreeMap::new();
    let mut lines = text.lines();
    // `ss -ti` prints each socket on one line and its TCP info on the next.
    while let Some(line) = lines.next() {
        let info = lines.next().unwrap_or_default();
        if !line.contains(&format!("pid={pid},")) {
            continue;
        }
        let Some(local) = line.split_whitespace().nth(2) else {
            continue;
        };
        let received = info
            .split_whitespace()
            .find_map(|field| field.strip_prefix("bytes_received:"))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        found.insert(local.to_string(), received);
    }
    Ok(found)
}

fn channel(index: usize) -> anyhow::Result<Channel> {
    Channel::parse(&format!("user:bench{index:05}")).map_err(anyhow::Error::from)
}

async fn run_layout(
    bench: &PushNodesBench,
    layout: &'static str,
    everywhere: bool,
) -> anyhow::Result<Vec<NodeReceipt>> {
    let prefix = format!("bench-push-nodes-{}:", ulid::Ulid::new());
    let mut nodes = Vec::new();
    let mut sockets_of = Vec::new();
    let mut subscriptions = Vec::new();
    let mut followed = Vec::new();
    for node in 0..bench.nodes {
        let before: BTreeSet<String> = sockets()?.into_keys().collect();
        let hub = RedisHub::connect(&bench.redis_url, &prefix, HubLimits::default()).await?;
        let mut count = 0;
        for index in 0..bench.channels {
            if everywhere || index % bench.nodes == node {
                subscriptions.push(hub.subscribe(&channel(index)?, None).await?);
                count += 1;
            }
        }
        let mine: BTreeSet<String> = sockets()?
            .into_keys()
            .filter(|socket| !before.contains(socket))
            .collect();
        anyhow::ensure!(!mine.is_empty(), "node {node} opened no socket to Redis");
        sockets_of.push(mine);
        followed.push(count);
        nodes.push(hub);
    }
    let publisher = RedisHub::connect(&bench.redis_url, &prefix, HubLimits::default()).await?;
    let data = serde_json::json!({ "note": "x".repeat(bench.data_bytes) });
    let start: BTreeMap<String, u64> = sockets()?;
    let received_before: Vec<u64> = nodes.iter().map(RedisHub::received).collect();
    for round in 0..bench.messages {
        for index in 0..bench.channels {
            publisher
                .publish(&channel(index)?, "bench", &data)
                .await
                .with_context(|| format!("publishing round {round}"))?;
        }
    }
    // Every node gets its channels' messages: wait until each has them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = nodes.iter().enumerate().all(|(node, hub)| {
            hub.received() - received_before[node] >= (followed[node] * bench.messages) as u64
        });
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("{layout}: not every message arrived within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for anything a node should not get to arrive anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let end = sockets()?;
    let receipts = nodes
        .iter()
        .enumerate()
        .map(|(node, hub)| {
            let bytes_received = sockets_of[node]
                .iter()
                .map(|socket| {
                    end.get(socket)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(start.get(socket).copied().unwrap_or(0))
                })
                .sum();
            NodeReceipt {
                layout,
                node: node + 1,
                channels_followed: followed[node],
                messages_received: hub.received() - received_before[node],
                bytes_received,
            }
        })
        .collect();
    drop(subscriptions);
    Ok(receipts)
}

pub async fn run_push_nodes(bench: &PushNodesBench) -> anyhow::Result<Vec<NodeReceipt>> {
    anyhow::ensure!(bench.nodes > 0 && bench.channels > 0, "nothing to measure");
    let mut receipts = run_layout(bench, "spread", false).await?;
    receipts.extend(run_layout(bench, "everywhere", true).await?);
    Ok(receipts)
}
