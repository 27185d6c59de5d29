//! Sharded pub/sub: a node follows only the channels it is asked to, each on the node that owns
//! the channel's slot.
//!
//! One task owns the subscriptions. It keeps a RESP3 connection per Redis node it needs (RESP3
//! because the `redis` crate delivers `smessage` pushes only there; a RESP2 pub/sub connection
//! understands `message` alone), and serialises subscribing, the periodic unsubscribing of
//! channels nobody wants any more, and the repairs after a connection drops or a slot moves.
//! Serialising them is what makes "unsubscribe if nobody wants it" safe: whether a channel is
//! wanted is asked (through [`Wanted`]) when the unsubscribe is about to be sent, and a
//! subscribe requested after that is handled after it, so it is subscribed again.
//!
//! Each `SSUBSCRIBE`/`SUNSUBSCRIBE` names one channel, so each has exactly one reply and the
//! connection's replies stay matched to their commands. Messages go straight from the connection
//! to the consumer's queue, never through the task, so subscribing never delays them.

use crate::{config_error, RedisConnection, RedisTarget};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    RedisError, RedisResult, Value,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How often channels nobody wants are unsubscribed. Dropping a subscriber has no hook, so
/// this bounds how long a node keeps receiving a channel after its last local subscriber left.
const REAP_EVERY: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// A dead node must not stall every later subscription behind it.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Slot moves during one subscription round before its callers are given an error.
const REDIRECTS: usize = 3;

/// Whether someone on this node still wants a channel; asked before unsubscribing it.
pub type Wanted = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One message received on a shard channel.
#[derive(Debug, Clone)]
pub struct ShardMessage {
    pub channel: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A handle on the subscription task; clones share it. The task ends when every handle is gone.
#[derive(Clone)]
pub struct ShardedSubscriber {
    commands: mpsc::UnboundedSender<Command>,
    subscribed: Arc<AtomicUsize>,
}

type Waiter = oneshot::Sender<RedisResult<bool>>;
/// A channel to subscribe, whoever waits for it, and whether it is new to this node.
type Pending = (String, Vec<Waiter>, bool);
/// Channels to subscribe on one node.
type NodeBatch = (ConnectionInfo, Vec<Pending>);

enum Command {
    Subscribe {
        channel: String,
        done: Waiter,
    },
    /// The server ended a subscription by itself (its slot moved to another node).
    Dropped {
        connection: u64,
        channel: String,
    },
    Disconnected {
        connection: u64,
    },
}

impl ShardedSubscriber {
    /// Starts the subscription task. `data` is a connection to the same Redis, used to read the
    /// cluster's slot map. Fails now when Redis cannot be reached (a single server) or cannot
    /// tell its slot map (a cluster), rather than at the first subscription.
    pub async fn start(
        target: &RedisTarget,
        data: RedisConnection,
        wanted: Wanted,
        messages: mpsc::UnboundedSender<ShardMessage>,
    ) -> RedisResult<ShardedSubscriber> {
        let (commands, inbox) = mpsc::unbounded_channel();
        let subscribed = Arc::new(AtomicUsize::new(0));
        let mut task = Task {
            target: target.clone(),
            data,
            wanted,
            messages,
            commands: commands.downgrade(),
            slots: Vec::new(),
            nodes: HashMap::new(),
            channels: HashMap::new(),
            orphans: HashSet::new(),
            next_connection: 0,
            subscribed: Arc::clone(&subscribed),
        };
        match target {
            RedisTarget::Single(info) => {
                task.node(info.addr.to_string(), info.clone()).await?;
            }
            RedisTarget::Cluster(_) => task.refresh_slots().await?,
        }
        tokio::spawn(task.run(inbox));
        Ok(ShardedSubscriber {
            commands,
            subscribed,
        })
    }

    /// Subscribes to `channel` on the node owning its slot, and returns once Redis confirmed it:
    /// from then on every message published on it arrives. True when the channel was not
    /// followed before (never, or unsubscribed as unwanted), false when it was subscribed
    /// already or is being restored after a dropped connection (its consumer may then have
    /// missed messages, and should look for holes).
    pub async fn subscribe(&self, channel: &str) -> RedisResult<bool> {
        let (done, confirmed) = oneshot::channel();
        let stopped = || config_error("the pub/sub task stopped".into());
        self.commands
            .send(Command::Subscribe {
                channel: channel.to_string(),
                done,
            })
            .map_err(|_| stopped())?;
        confirmed.await.map_err(|_| stopped())?
    }

    /// Channels subscribed on Redis right now.
    pub fn subscribed(&self) -> usize {
        self.subscribed.load(Ordering::Relaxed)
    }
}

struct SlotRange {
    first: u16,
    last: u16,
    host: String,
    port: u16,
}

struct Node {
    id: u64,
    connection: MultiplexedConnection,
}

struct Task {
    target: RedisTarget,
    data: RedisConnection,
    wanted: Wanted,
    messages: mpsc::UnboundedSender<ShardMessage>,
    /// Weak, so the connections' push handlers do not keep the task alive.
    commands: mpsc::WeakUnboundedSender<Command>,
    slots: Vec<SlotRange>,
    /// By address.
    nodes: HashMap<String, Node>,
    /// Channel → the connection it is subscribed on.
    channels: HashMap<String, u64>,
    /// Channels whose subscription was lost and not restored yet.
    orphans: HashSet<String>,
    next_connection: u64,
    subscribed: Arc<AtomicUsize>,
}

fn copy_error(error: &RedisError) -> RedisError {
    RedisError::from((error.kind(), "Redis pub/sub failed", error.to_string()))
}

fn fail(waiters: Vec<Waiter>, error: &RedisError) {
    for waiter in waiters {
        let _ = waiter.send(Err(copy_error(error)));
    }
}

fn text(value: &Value) -> Option<Vec<u8>> {
    redis::from_redis_value(value).ok()
}

/// What a node connection does with what Redis pushes to it.
fn push_handler(
    connection: u64,
    messages: mpsc::UnboundedSender<ShardMessage>,
    commands: mpsc::WeakUnboundedSender<Command>,
) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |push: PushInfo| {
        let command = |command: Command| {
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(command);
            }
        };
        match (push.kind, push.data.as_slice()) {
            (PushKind::SMessage, [channel, payload, ..]) => {
                if let (Some(channel), Some(payload)) = (text(channel), text(payload)) {
                    let _ = messages.send(ShardMessage { channel, payload });
                }
            }
            // Also the reply to our own SUNSUBSCRIBE; the task tells them apart.
            (PushKind::SUnsubscribe, [channel, ..]) => {
                if let Some(channel) = text(channel).and_then(|raw| String::from_utf8(raw).ok()) {
                    command(Command::Dropped {
                        connection,
                        channel,
                    });
                }
            }
            (PushKind::Disconnection, _) => command(Command::Disconnected { connection }),
            _ => {}
        }
        Ok(())
    }
}

fn parse_slots(reply: &Value) -> RedisResult<Vec<SlotRange>> {
    let malformed = || config_error("an unexpected CLUSTER SLOTS reply".into());
    let Value::Array(ranges) = reply else {
        return Err(malformed());
    };
    let mut slots = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(malformed());
        };
        let [first, last, Value::Array(primary), ..] = fields.as_slice() else {
            return Err(malformed());
        };
        let [host, port, ..] = primary.as_slice() else {
            return Err(malformed());
        };
        slots.push(SlotRange {
            first: redis::from_redis_value(first)?,
            last: redis::from_redis_value(last)?,
            host: redis::from_redis_value(host)?,
            port: redis::from_redis_value(port)?,
        });
    }
    Ok(slots)
}

impl Task {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut reap = tokio::time::interval(REAP_EVERY);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = FIRST_RETRY;
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                command = inbox.recv() => {
                    let Some(command) = command else {
                        return;
                    };
                    let mut batch = vec![command];
                    while let Ok(command) = inbox.try_recv() {
                        batch.push(command);
                    }
                    self.handle(batch).await;
                }
                _ = reap.tick() => self.reap().await,
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if retry_at.is_some() => {
                    retry_at = None;
                    self.restore().await;
                    backoff = (backoff * 2).min(LAST_RETRY);
                }
            }
            if self.orphans.is_empty() {
                backoff = FIRST_RETRY;
                retry_at = None;
            } else if retry_at.is_none() {
                tracing::warn!(
                    channels = self.orphans.len(),
                    "redis pub/sub: subscriptions lost; restoring"
                );
                retry_at = Some(Instant::now() + backoff);
            }
            self.subscribed
                .store(self.channels.len(), Ordering::Relaxed);
        }
    }

    async fn handle(&mut self, batch: Vec<Command>) {
        let mut waiting: HashMap<String, Vec<Waiter>> = HashMap::new();
        // Subscribe requests for these answer "not new": their subscription was lost, not
        // given up, so messages may have been missed.
        let mut restoring: HashSet<String> = self.orphans.clone();
        // Lost in this batch: tried again at once. Older orphans wait for the retry timer, so a
        // node that is down is not dialled again on every subscription.
        let mut lost: Vec<String> = Vec::new();
        let mut repair = false;
        for command in batch {
            match command {
                Command::Subscribe { channel, done } => {
                    if self.channels.contains_key(&channel) {
                        let _ = done.send(Ok(false));
                    } else {
                        waiting.entry(channel).or_default().push(done);
                    }
                }
                Command::Dropped {
                    connection,
                    channel,
                } => {
                    if self.channels.get(&channel) == Some(&connection) {
                        self.channels.remove(&channel);
                        restoring.insert(channel.clone());
                        lost.push(channel);
                        // The slot moved: read the new owner before subscribing again.
                        repair = true;
                    }
                }
                Command::Disconnected { connection } => {
                    self.nodes.retain(|_, node| node.id != connection);
                    self.channels.retain(|channel, on| {
                        let keep = *on != connection;
                        if !keep {
                            restoring.insert(channel.clone());
                            lost.push(channel.clone());
                        }
                        keep
                    });
                }
            }
        }
        if repair && self.target.is_cluster() {
            if let Err(error) = self.refresh_slots().await {
                tracing::warn!(%error, "redis pub/sub: cannot read the slot map");
            }
        }
        let wanted = Arc::clone(&self.wanted);
        for channel in lost {
            if wanted(&channel) {
                waiting.entry(channel).or_default();
            }
        }
        let todo = waiting
            .into_iter()
            .map(|(channel, waiters)| {
                let new = !restoring.contains(&channel);
                (channel, waiters, new)
            })
            .collect();
        self.subscribe_all(todo).await;
    }

    /// Subscribes the channels in the wanted ones again, after a drop.
    async fn restore(&mut self) {
        let wanted = Arc::clone(&self.wanted);
        let todo: Vec<Pending> = std::mem::take(&mut self.orphans)
            .into_iter()
            .filter(|channel| wanted(channel))
            .map(|channel| (channel, Vec::new(), false))
            .collect();
        if todo.is_empty() {
            return;
        }
        if self.target.is_cluster() {
            if let Err(error) = self.refresh_slots().await {
                tracing::warn!(%error, "redis pub/sub: cannot read the slot map");
            }
        }
        self.subscribe_all(todo).await;
    }

    async fn subscribe_all(&mut self, mut pending: Vec<Pending>) {
        for _ in 0..REDIRECTS {
            if pending.is_empty() {
                return;
            }
            let mut by_node: HashMap<String, NodeBatch> = HashMap::new();
            for (channel, waiters, new) in pending.drain(..) {
                match self.node_info(&channel) {
                    Ok((address, info)) => by_node
                        .entry(address)
                        .or_insert_with(|| (info, Vec::new()))
                        .1
                        .push((channel, waiters, new)),
                    Err(error) => {
                        fail(waiters, &error);
                        self.orphans.insert(channel);
                    }
                }
            }
            let mut moved = Vec::new();
            for (address, (info, items)) in by_node {
                let (id, connection) = match self.node(address, info).await {
                    Ok(node) => node,
                    Err(error) => {
                        for (channel, waiters, _) in items {
                            fail(waiters, &error);
                            self.orphans.insert(channel);
                        }
                        continue;
                    }
                };
                let replies = join_all(items.iter().map(|(channel, _, _)| {
                    let mut connection = connection.clone();
                    async move {
                        redis::cmd("SSUBSCRIBE")
                            .arg(channel)
                            .query_async::<Value>(&mut connection)
                            .await
                    }
                }))
                .await;
                for ((channel, waiters, new), reply) in items.into_iter().zip(replies) {
                    match reply {
                        Ok(_) => {
                            self.orphans.remove(&channel);
                            self.channels.insert(channel, id);
                            for waiter in waiters {
                                let _ = waiter.send(Ok(new));
                            }
                        }
                        Err(error) if error.redirect_node().is_some() => {
                            moved.push((channel, waiters, new));
                        }
                        Err(error) => {
                            fail(waiters, &error);
                            self.orphans.insert(channel);
                        }
                    }
                }
            }
            if !moved.is_empty() {
                if let Err(error) = self.refresh_slots().await {
                    tracing::warn!(%error, "redis pub/sub: cannot read the slot map");
                }
            }
            pending = moved;
        }
        let unsettled = config_error("a channel's slot kept moving".into());
        for (channel, waiters, _) in pending {
            fail(waiters, &unsettled);
            self.orphans.insert(channel);
        }
    }

    /// Unsubscribes the channels nobody wants any more.
    async fn reap(&mut self) {
        let wanted = Arc::clone(&self.wanted);
        self.orphans.retain(|channel| wanted(channel));
        let unwanted: Vec<(String, u64)> = self
            .channels
            .iter()
            .filter(|(channel, _)| !wanted(channel))
            .map(|(channel, on)| (channel.clone(), *on))
            .collect();
        if unwanted.is_empty() {
            return;
        }
        for (channel, _) in &unwanted {
            self.channels.remove(channel);
        }
        let connections: HashMap<u64, MultiplexedConnection> = self
            .nodes
            .values()
            .map(|node| (node.id, node.connection.clone()))
            .collect();
        let replies = join_all(unwanted.iter().filter_map(|(channel, on)| {
            let mut connection = connections.get(on)?.clone();
            Some(async move {
                redis::cmd("SUNSUBSCRIBE")
                    .arg(channel)
                    .query_async::<Value>(&mut connection)
                    .await
            })
        }))
        .await;
        for error in replies.into_iter().filter_map(Result::err) {
            // The connection is gone, and its subscriptions with it.
            tracing::debug!(%error, "redis pub/sub: an unsubscribe failed");
        }
    }

    /// The address and connection details of the node that owns `channel`'s slot.
    fn node_info(&self, channel: &str) -> RedisResult<(String, ConnectionInfo)> {
        let (seed, addr) = match &self.target {
            RedisTarget::Single(info) => (info, info.addr.clone()),
            RedisTarget::Cluster(seeds) => {
                let slot = crate::slot(channel.as_bytes());
                let range = self
                    .slots
                    .iter()
                    .find(|range| range.first <= slot && slot <= range.last)
                    .ok_or_else(|| config_error(format!("no node serves slot {slot}")))?;
                let seed = seeds
                    .first()
                    .ok_or_else(|| config_error("a cluster without seeds".into()))?;
                (seed, ConnectionAddr::Tcp(range.host.clone(), range.port))
            }
        };
        let info = ConnectionInfo {
            addr,
            redis: seed.redis.clone(),
        };
        Ok((info.addr.to_string(), info))
    }

    async fn node(
        &mut self,
        address: String,
        info: ConnectionInfo,
    ) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(node) = self.nodes.get(&address) {
            return Ok((node.id, node.connection.clone()));
        }
        let id = self.next_connection;
        self.next_connection += 1;
        let info = ConnectionInfo {
            redis: redis::RedisConnectionInfo {
                protocol: ProtocolVersion::RESP3,
                ..info.redis
            },
            ..info
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_push_sender(push_handler(
                id,
                self.messages.clone(),
                self.commands.clone(),
            ));
        let connection = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.nodes.insert(
            address,
            Node {
                id,
                connection: connection.clone(),
            },
        );
        Ok((id, connection))
    }

    async fn refresh_slots(&mut self) -> RedisResult<()> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.data.clone())
            .await?;
        self.slots = parse_slots(&reply)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_maps_are_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
                node("10.0.0.3", 7002),
            ]),
        ]);
        let slots = parse_slots(&reply).expect("slots");
        assert_eq!(slots.len(), 2);
        assert_eq!(
            (
                slots[1].first,
                slots[1].last,
                slots[1].host.as_str(),
                slots[1].port
            ),
            (5461, 16383, "10.0.0.2", 7001)
        );
        assert!(parse_slots(&Value::Array(vec![Value::Int(1)])).is_err());
    }
}
