//! Push shared by every node through Redis (one server or a Redis Cluster; Redis 7 or later, for
//! sharded pub/sub).
//!
//! Per channel `<c>` (braces literal, angle brackets placeholders), `<prefix>push:{<c>}` is a
//! hash (`last` offset, `floor` below which history is gone) and `<prefix>push:{<c>}:log` a
//! stream whose entry ids are the offsets, so history is an `XRANGE` from the client's offset;
//! `<prefix>push:{<c>}:once:<key>` marks a unique publish. Appending is one Lua script: it
//! numbers the message (or checks a caller's offset is new), splices the offset into the
//! already serialised JSON, appends with `MAXLEN`, and publishes with `SPUBLISH` on the shard
//! channel `<prefix>push:{<c>}` in the same atomic step — so pub/sub carries messages in offset
//! order and every node sees the same numbering. The channel name is the hash tag of all of
//! these, so on a cluster a channel's keys and its shard channel share one slot (a script may
//! only publish on a shard channel of its own slot) and channels spread over the cluster. A
//! unique publish is therefore unique per channel, which is what its callers mean (their keys
//! name one change, and a change goes to one channel).
//!
//! Each node subscribes only to the channels its own subscribers follow: the first local
//! subscriber of a channel makes the node `SSUBSCRIBE` (on the cluster node owning the channel's
//! slot, through [`marquee_redis::ShardedSubscriber`]) before history is read, and about a
//! second after the last one leaves the node unsubscribes. What arrives feeds the node's local
//! rings (the same ones [`crate::InProcessHub`] uses). If a node notices a hole in a channel's
//! offsets (its pub/sub connection dropped and came back), it reads the hole from the stream
//! before going on, so its subscribers still see every offset once, in order. A channel followed
//! anew (not followed since its last subscriber left) starts without a known offset instead,
//! since nobody here was waiting for the messages in between.

use crate::local::{spawn_sweeper, LocalChannels};
use crate::{
    wire_parts, Channel, ChannelKind, HubLimits, PushError, PushHub, PushMessage, Start,
    Subscription,
};
use async_trait::async_trait;
use bytes::Bytes;
use marquee_redis::{RedisConnection, RedisTarget, ShardMessage, ShardedSubscriber, Wanted};
use redis::Script;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Channels nobody writes to for this long are forgotten by Redis.
const KEY_TTL_MS: u64 = 24 * 3_600_000;

/// KEYS: meta, log, and a unique-publish key or none. ARGV: head, tail, kind, maxlen, topic,
/// name, explicit offset or "", ttl. Returns the offset, or 0 for a repeat.
const APPEND: &str = r#"
local meta, log, unique = KEYS[1], KEYS[2], KEYS[3]
local head, tail, kind, maxlen, topic, name, explicit, ttl =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
if unique and not redis.call('SET', unique, '1', 'NX', 'PX', ttl) then return 0 end
local last = tonumber(redis.call('HGET', meta, 'last') or '0')
local offset
if explicit == '' then
  offset = last + 1
else
  offset = tonumber(explicit)
  if offset <= last then return 0 end
  if offset ~= last + 1 then
    redis.call('DEL', log)
    redis.call('HSET', meta, 'floor', string.format('%d', offset - 1))
  end
end
local o = string.format('%d', offset)
local json = head .. o .. tail
local now = redis.call('TIME')
local ms = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('HSET', meta, 'last', o)
if maxlen > 0 then
  redis.call('XADD', log, 'MAXLEN', maxlen, o .. '-0', 'm', json, 't', ms)
  redis.call('PEXPIRE', log, ttl)
else
  redis.call('HSET', meta, 'floor', o)
end
redis.call('PEXPIRE', meta, ttl)
redis.call('SPUBLISH', topic, name .. '\n' .. o .. '\n' .. kind .. '\n' .. json)
return offset
"#;

/// KEYS: meta, log. ARGV: since (or "" for live), max age in ms, count.
/// Returns {last, floor, id1, json1, id2, json2, ...} with the entries after `since`.
const READ: &str = r#"
local meta, log = KEYS[1], KEYS[2]
local since, age, count = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local last = tonumber(redis.call('HGET', meta, 'last') or '0')
local floor = tonumber(redis.call('HGET', meta, 'floor') or '0')
local now = redis.call('TIME')
local cutoff = now[1] * 1000 + math.floor(now[2] / 1000) - age
while true do
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #first == 0 then
    floor = last
    break
  end
  local id = first[1][1]
  local offset = tonumber(string.match(id, '^(%d+)'))
  if tonumber(first[1][2][4]) >= cutoff then
    if offset - 1 > floor then floor = offset - 1 end
    break
  end
  redis.call('XDEL', log, id)
end
local out = {string.format('%d', last), string.format('%d', floor)}
if since ~= '' then
  local start = string.format('%d', tonumber(since) + 1) .. '-0'
  local entries = redis.call('XRANGE', log, start, '+', 'COUNT', count)
  for _, entry in ipairs(entries) do
    out[#out + 1] = string.match(entry[1], '^(%d+)')
    out[#out + 1] = entry[2][2]
  end
end
return out
"#;

/// KEYS: meta, log. ARGV: offset.
const SEED: &str = r#"
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local offset = tonumber(ARGV[1])
if offset > last then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'last', ARGV[1], 'floor', ARGV[1])
end
return 0
"#;

/// KEYS: log. ARGV: from offset, to offset. Entries for filling a hole.
const RANGE: &str = r#"
local entries = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', ARGV[2] .. '-0')
local out = {}
for _, entry in ipairs(entries) do
  out[#out + 1] = string.match(entry[1], '^(%d+)')
  out[#out + 1] = entry[2][2]
end
return out
"#;

struct Scripts {
    append: Script,
    read: Script,
    seed: Script,
    range: Script,
}

/// Push on Redis, shared by every node connected with the same prefix.
#[derive(Clone)]
pub struct RedisHub {
    connection: RedisConnection,
    prefix: Arc<str>,
    limits: HubLimits,
    local: Arc<LocalChannels>,
    scripts: Arc<Scripts>,
    subscriber: ShardedSubscriber,
    /// Messages that reached this node through pub/sub.
    received: Arc<AtomicU64>,
}

/// `<prefix>push:{<channel>}`: the channel's hash, and the shard channel its messages go on.
fn channel_base(prefix: &str, channel: &Channel) -> String {
    format!("{prefix}push:{{{channel}}}")
}

impl RedisHub {
    /// Connects to `url` (`redis://…` or `redis+cluster://host:port,…`, see `marquee-redis`).
    /// Nothing is subscribed yet: each [`PushHub::subscribe`] returns once its channel's
    /// pub/sub subscription is live, so nothing published after that can be missed.
    pub async fn connect(url: &str, prefix: &str, limits: HubLimits) -> Result<Self, PushError> {
        let target = RedisTarget::parse(url)?;
        let connection = target.connect().await?;
        let local = Arc::new(LocalChannels::new(HubLimits {
            // Redis keeps the history; the local rings only fan out.
            history_len: 0,
            ..limits
        }));
        spawn_sweeper(&local);
        let wanted: Wanted = {
            let local = Arc::clone(&local);
            let start = format!("{prefix}push:{{");
            Arc::new(move |topic: &str| {
                topic
                    .strip_prefix(start.as_str())
                    .and_then(|rest| rest.strip_suffix('}'))
                    .and_then(|name| Channel::parse(name).ok())
                    .is_some_and(|channel| local.has_receivers(&channel))
            })
        };
        let (messages, arrivals) = mpsc::unbounded_channel();
        let subscriber =
            ShardedSubscriber::start(&target, connection.clone(), wanted, messages).await?;
        let hub = RedisHub {
            connection,
            prefix: Arc::from(prefix),
            limits,
            local,
            scripts: Arc::new(Scripts {
                append: Script::new(APPEND),
                read: Script::new(READ),
                seed: Script::new(SEED),
                range: Script::new(RANGE),
            }),
            subscriber,
            received: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(hub.clone().listen(arrivals));
        Ok(hub)
    }

    /// Messages this node has received through pub/sub so far (for metrics, and to show that a
    /// node receives only the channels it follows).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Channels this node is subscribed to on Redis right now.
    pub fn followed(&self) -> usize {
        self.subscriber.subscribed()
    }

    fn topic(&self, channel: &Channel) -> String {
        channel_base(&self.prefix, channel)
    }

    fn keys(&self, channel: &Channel) -> (String, String) {
        let meta = channel_base(&self.prefix, channel);
        let log = format!("{meta}:log");
        (meta, log)
    }

    fn limits(&self) -> &HubLimits {
        &self.limits
    }

    /// Runs for the life of the process: fans out what this node's subscriptions receive. The
    /// subscriber restores subscriptions after a drop; holes are filled on the next message.
    async fn listen(self, mut arrivals: mpsc::UnboundedReceiver<ShardMessage>) {
        while let Some(arrival) = arrivals.recv().await {
            self.received.fetch_add(1, Ordering::Relaxed);
            match parse_payload(&arrival.payload) {
                Some(message) => self.arrive(message).await,
                None => tracing::warn!("push: ignored a malformed pub/sub message"),
            }
        }
    }

    async fn arrive(&self, message: PushMessage) {
        if let Some(last) = self.local.last(&message.channel) {
            if message.offset > last + 1 {
                self.fill(&message.channel, last + 1, message.offset - 1)
                    .await;
            }
        }
        if let Err(error) = self.local.deliver(Arc::new(message)) {
            tracing::warn!(%error, "push: dropped a message for want of room");
        }
    }

    /// Delivers the offsets `from..=to` of `channel` from the stream, when history has them.
    async fn fill(&self, channel: &Channel, from: u64, to: u64) {
        let (_, log) = self.keys(channel);
        let mut connection = self.connection.clone();
        let entries: Result<Vec<String>, _> = self
            .scripts
            .range
            .key(&log)
            .arg(from)
            .arg(to)
            .invoke_async(&mut connection)
            .await;
        match entries {
            Ok(entries) => {
                for (offset, json) in pairs(channel, &entries) {
                    let delivered = self.local.deliver(Arc::new(PushMessage {
                        channel: channel.clone(),
                        offset,
                        kind: kind_of(&json),
                        json,
                    }));
                    if let Err(error) = delivered {
                        tracing::warn!(%error, %channel, "push: could not fill a hole");
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, %channel, "push: could not fill a hole"),
        }
    }

    async fn append(
        &self,
        channel: &Channel,
        explicit: Option<u64>,
        unique: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<u64, PushError> {
        let (head, tail) = wire_parts(channel, kind, data);
        let (meta, log) = self.keys(channel);
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.append.key(&meta);
        invocation.key(&log);
        if let Some(unique) = unique {
            invocation.key(format!("{meta}:once:{unique}"));
        }
        let offset: u64 = invocation
            .arg(head)
            .arg(tail)
            .arg(kind)
            .arg(self.limits().history_len)
            .arg(self.topic(channel))
            .arg(channel.as_str())
            .arg(
                explicit
                    .map(|offset| offset.to_string())
                    .unwrap_or_default(),
            )
            .arg(KEY_TTL_MS)
            .invoke_async(&mut connection)
            .await?;
        Ok(offset)
    }
}

/// `name\noffset\nkind\njson`
fn parse_payload(payload: &[u8]) -> Option<PushMessage> {
    let mut parts = payload.splitn(4, |byte| *byte == b'\n');
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let kind = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let json = Bytes::copy_from_slice(parts.next()?);
    Some(PushMessage {
        channel: Channel::parse(name).ok()?,
        offset,
        kind,
        json,
    })
}

fn kind_of(json: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|value| value["type"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn pairs(_channel: &Channel, flat: &[String]) -> Vec<(u64, Bytes)> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            let offset = pair[0].parse().ok()?;
            Some((offset, Bytes::from(pair[1].clone())))
        })
        .collect()
}

#[async_trait]
impl PushHub for RedisHub {
    async fn publish(
        &self,
        channel: &Channel,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<u64, PushError> {
        self.append(channel, None, None, kind, data).await
    }

    async fn publish_unique(
        &self,
        channel: &Channel,
        key: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<Option<u64>, PushError> {
        let offset = self.append(channel, None, Some(key), kind, data).await?;
        Ok((offset != 0).then_some(offset))
    }

    async fn publish_at(
        &self,
        channel: &Channel,
        offset: u64,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<bool, PushError> {
        if offset == 0 {
            return Ok(false);
        }
        Ok(self.append(channel, Some(offset), None, kind, data).await? != 0)
    }

    async fn seed(&self, channel: &Channel, offset: u64) -> Result<(), PushError> {
        let (meta, log) = self.keys(channel);
        let mut connection = self.connection.clone();
        let _: i64 = self
            .scripts
            .seed
            .key(&meta)
            .key(&log)
            .arg(offset)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    fn listened(&self, kind: ChannelKind) -> Vec<Channel> {
        self.local.listened(kind)
    }

    fn channel_count(&self) -> usize {
        self.local.count()
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        since: Option<u64>,
    ) -> Result<Subscription, PushError> {
        // Listen first (locally, then on Redis), then read: whatever is appended in between is
        // in both, and the subscriber skips live offsets it already has.
        let mut subscription = self.local.subscribe(channel, None)?;
        if self.subscriber.subscribe(&self.topic(channel)).await? {
            // What this node last saw of the channel is from before it stopped following it:
            // a jump from there is not a hole anyone here waits to have filled.
            self.local.restart(channel);
        }
        let (meta, log) = self.keys(channel);
        let mut connection = self.connection.clone();
        let age_ms = u64::try_from(self.limits().history_age.as_millis()).unwrap_or(u64::MAX);
        let reply: Vec<String> = self
            .scripts
            .read
            .key(&meta)
            .key(&log)
            .arg(since.map(|since| since.to_string()).unwrap_or_default())
            .arg(age_ms)
            .arg(self.limits().history_len.max(1))
            .invoke_async(&mut connection)
            .await?;
        let number = |index: usize| -> u64 {
            reply
                .get(index)
                .and_then(|raw| raw.parse().ok())
                .unwrap_or(0)
        };
        let (last, floor) = (number(0), number(1));
        subscription.start = match since {
            None => Start::Live { offset: last },
            Some(since) if since > last || since < floor => Start::Reset { offset: last },
            Some(_) => Start::Replay(
                pairs(channel, reply.get(2..).unwrap_or_default())
                    .into_iter()
                    .map(|(offset, json)| {
                        Arc::new(PushMessage {
                            channel: channel.clone(),
                            offset,
                            kind: kind_of(&json),
                            json,
                        })
                    })
                    .collect(),
            ),
        };
        Ok(subscription)
    }
}
