//! The waiting room on Redis, shared by every node.
//!
//! Per room: a hash of settings and pacing state, a sorted set of waiting places (score: the
//! pre-queue draw below 2^52, then 2^52 + join number, so one `ZRANK` is the position before
//! and after opening), a sorted set of last-seen times for the idle sweep, a sorted set of
//! admitted places by pass expiry (its size is the active count), account → place and
//! place → account hashes, and the reasons places were lost. Every operation is one Lua script
//! over those keys, so admission is atomic however many nodes drive the room: credit accrues
//! from the time of the previous step, whoever took it.
//!
//! Joins are batched per node and room (`group_commit`): concurrent joins queue in the node
//! and one `JOIN` call runs a batch of them in order, each exactly as it would run alone, so a
//! hot room pays the round trip and the room state's load and save once per batch, not per
//! fan. A lone join is sent at once; batches form only while one is in flight.
//!
//! Keys: `<prefix>:wr:{<event>}:room` (and `:wait`, `:seen`, `:adm`, `:users`, `:slots`,
//! `:gone`; braces literal), all tagged by the event, so on a Redis Cluster a room's scripts run
//! on the one node owning its slot and rooms spread over the cluster. The set of rooms the
//! drivers step, `<prefix>:wr:rooms`, cannot share every room's slot, so no script touches it:
//! a join whose room is not yet marked `listed` (a field of the room hash), and every control,
//! add the room after their script; a tick that retires a room removes it after its script.
//! Adding before marking means a room marked listed is in the set; a node that dies in between
//! leaves the mark unset, and the next join lists the room again.
//!
//! The pre-queue draw is `HMAC(room secret, user)`, computed here: the secret is created once
//! per room (`HSETNX`) and cached by each node, since it never changes.

use crate::group_commit::{BatchStats, GroupCommit};
use crate::pacing::Pacer;
use crate::signing::{order_key, FIFO_BASE};
use crate::{
    room_secret, Admission, Control, Millis, PassClaims, PassRefusal, Place, Result, RoomConfig,
    RoomSigner, RoomState, RoomStats, RoomTimings, Standing, TickOutcome, WaitingRoom,
    WaitroomError,
};
use async_trait::async_trait;
use marquee_redis::RedisConnection;
use redis::Script;
use std::collections::HashMap;
use std::sync::Mutex;
use ulid::Ulid;

/// Shared by every script: room state in a table `r`, loaded once and saved once.
const PRELUDE: &str = r#"
local room, wait, seen, adm, users, slots, gone =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local RATE_MEMORY = 30000.0
local CREDIT_CAP_MS = 1000.0
local F = {'opened','state','opens_at','join_from','apm','ttl','max_active','credit','credit_at',
  'rate','rate_at','busy_ms','busy_at','admitted_total','abandoned_total','seq','closes_at'}
local r = {}
local loaded = {}
local exists = false
-- The room's numbers travel as one MessagePack value (doubles round-trip exactly): one HGET to
-- load, one HSET to save, and only when something changed. `state` is mirrored in its own field
-- for the hold check, which reads nothing else.
local function load()
  local packed = redis.call('HGET', room, 'pack')
  if packed then
    r = cmsgpack.unpack(packed)
    exists = true
  end
  for _, f in ipairs(F) do
    r[f] = r[f] or 0
    loaded[f] = r[f]
  end
end
local function save()
  local changed = not exists
  for _, f in ipairs(F) do
    if r[f] ~= loaded[f] then changed = true end
  end
  if not changed then return end
  if r.state ~= loaded.state or not exists then
    redis.call('HSET', room, 'pack', cmsgpack.pack(r), 'state', r.state)
  else
    redis.call('HSET', room, 'pack', cmsgpack.pack(r))
  end
end
local function configure(opens_at, join_from, apm, ttl, max_active, closes_at)
  if r.opened ~= 1 then r.opens_at = opens_at; r.join_from = join_from end
  r.apm = apm; r.ttl = ttl; r.max_active = max_active; r.closes_at = closes_at
end
local function open_if_due(now)
  if r.opened ~= 1 and now >= r.opens_at then
    r.opened = 1; r.credit = 1; r.credit_at = now; r.rate = 0; r.rate_at = now
    r.busy_ms = 0; r.busy_at = now
  end
end
local function forget(seq)
  local user = redis.call('HGET', slots, seq)
  if user and redis.call('HGET', users, user) == seq then redis.call('HDEL', users, user) end
end
local function expire_passes(now)
  local expired = redis.call('ZRANGEBYSCORE', adm, '-inf', now, 'LIMIT', 0, 1000)
  for _, seq in ipairs(expired) do
    redis.call('ZREM', adm, seq)
    redis.call('HSET', gone, seq, 'expired')
    forget(seq)
  end
end
local function per_ms() return r.apm / 60000.0 end
local function accrue(now)
  local elapsed = math.max(now - r.credit_at, 0)
  r.credit = math.min(r.credit + elapsed * per_ms(), math.max(per_ms() * CREDIT_CAP_MS, 1.0))
  r.credit_at = math.max(r.credit_at, now)
end
local function record(now, n, backlogged)
  local elapsed = math.max(now - r.rate_at, 0)
  if backlogged then
    r.rate = r.rate * math.exp(-elapsed / RATE_MEMORY)
    r.busy_ms = r.busy_ms + elapsed
  end
  r.rate = r.rate + n / RATE_MEMORY
  r.rate_at = math.max(r.rate_at, now)
end
local function admit_one(seq, now, out)
  redis.call('ZREM', wait, seq)
  redis.call('ZREM', seen, seq)
  -- Nodes step a room with their own `now`, read before the script runs, so one may step it
  -- just after another with a slightly earlier time: date an admission no earlier than any
  -- before it (credit_at is the latest step's time), so admission times follow queue order.
  local expires = math.max(now, r.credit_at) + r.ttl
  redis.call('ZADD', adm, expires, seq)
  r.admitted_total = r.admitted_total + 1
  out[#out + 1] = seq
  out[#out + 1] = redis.call('HGET', slots, seq) or ''
  out[#out + 1] = string.format('%.17g', expires)
end
local function admit(now, out)
  if r.opened ~= 1 or r.state ~= 0 then return end
  local backlogged = r.busy_at >= r.rate_at
  accrue(now)
  local n = math.floor(r.credit)
  if r.max_active > 0 then
    expire_passes(now)
    local active = redis.call('ZCARD', adm)
    n = math.min(n, math.max(r.max_active - active, 0))
  end
  local admitted = 0
  if n > 0 then
    local front = redis.call('ZPOPMIN', wait, n)
    for i = 1, #front, 2 do
      admit_one(front[i], now, out)
      admitted = admitted + 1
    end
  end
  r.credit = r.credit - admitted
  record(now, admitted, backlogged)
  if redis.call('ZCARD', wait) > 0 then r.busy_at = now end
end
local function touch(seq, now)
  redis.call('ZADD', seen, 'XX', 'GT', now, seq)
end
local function let_through_if_ended(seq, now)
  if r.state == 3 and redis.call('ZSCORE', wait, seq) then admit_one(seq, now, {}) end
end
local function place(seq, now)
  local kind, a, user = 'expired', '0', ''
  local rank = redis.call('ZRANK', wait, seq)
  if rank then
    if r.opened == 1 then
      kind = 'wait'; a = tostring(rank + 1)
    else
      kind = 'pre'; a = tostring(redis.call('ZCARD', wait))
    end
  else
    local expires = redis.call('ZSCORE', adm, seq)
    if expires and tonumber(expires) > now then
      kind = 'adm'; a = expires; user = redis.call('HGET', slots, seq) or ''
    elseif redis.call('HGET', gone, seq) == 'left' then
      kind = 'left'
    end
  end
  return {kind, tostring(seq), a, tostring(r.state), string.format('%.17g', r.opens_at),
    string.format('%.17g', r.rate), string.format('%.17g', r.busy_ms), tostring(r.apm), user}
end
local function stats()
  return {tostring(r.state), tostring(r.opened), string.format('%.17g', r.opens_at),
    tostring(redis.call('ZCARD', wait)), tostring(redis.call('ZCARD', adm)),
    tostring(r.admitted_total), tostring(r.abandoned_total), tostring(r.apm),
    string.format('%.17g', r.rate), string.format('%.17g', r.busy_ms)}
end
"#;

/// Fields per join in `JOIN`'s ARGV.
const JOIN_FIELDS: usize = 9;

/// A batch of joins into one room, run in ARGV order as if each were its own script (the room
/// state is loaded once and saved once, which is most of what batching saves). ARGV: per join,
/// `JOIN_FIELDS` values: now, user, opens_at, join_from, apm, ttl, max_active, closes_at, draw.
/// Returns `{{'list'} or {}, row, row, …}`: whether the room must be listed (see
/// `RedisWaitingRoom::list`), then each join's place, or `{'early', join_from}`.
const JOIN: &str = r#"
load()
local unlisted = redis.call('HEXISTS', room, 'listed') == 0
-- Whether any join was let in: a batch of early joins stores nothing, like one early join.
local joined = false
local function join(now, user, opens_at, join_from, apm, ttl, max_active, closes_at, draw)
  -- What configure() would leave in r.join_from (fixed once opened), compared before it runs:
  -- an early join changes nothing, while the joins batched with it keep their changes.
  local from = join_from
  if r.opened == 1 then from = r.join_from end
  if now < from then
    -- Nothing is stored: the first join that is let in creates the room and lists it.
    return {'early', string.format('%.17g', from)}
  end
  joined = true
  configure(opens_at, join_from, apm, ttl, max_active, closes_at)
  open_if_due(now)
  -- Expired passes are swept by the driver's steps; here an expiry is compared where it matters.
  local seq = redis.call('HGET', users, user)
  if seq then
    local expires = redis.call('ZSCORE', adm, seq)
    if redis.call('ZSCORE', wait, seq) or (expires and tonumber(expires) > now) then
      touch(seq, now)
      let_through_if_ended(seq, now)
      return place(seq, now)
    end
  end
  seq = tostring(r.seq)
  r.seq = r.seq + 1
  redis.call('HSET', users, user, seq)
  redis.call('HSET', slots, seq, user)
  redis.call('ZADD', seen, now, seq)
  if r.opened == 1 then
    if r.state == 2 then
      accrue(now)
      if r.credit < 1 then r.state = 0 end
    end
    redis.call('ZADD', wait, FIFO_BASE + tonumber(seq), seq)
    if r.state == 0 then
      if redis.call('ZCARD', wait) == 1 then admit(now, {}) end
    elseif r.state == 2 then
      r.credit = r.credit - 1
      admit_one(seq, now, {})
    elseif r.state == 3 then
      admit_one(seq, now, {})
    end
  else
    redis.call('ZADD', wait, draw, seq)
  end
  return place(seq, now)
end
local out = {{}}
for i = 0, #ARGV / JOIN_FIELDS - 1 do
  local a = i * JOIN_FIELDS
  out[#out + 1] = join(tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3]),
    tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]),
    tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9]))
end
if joined then
  save()
  if unlisted then out[1] = {'list'} end
end
return out
"#;

/// ARGV: now, seq.
const STATUS: &str = r#"
local now = tonumber(ARGV[1])
local seq = ARGV[2]
load()
if not exists or redis.call('HEXISTS', slots, seq) == 0 then return {'unknown'} end
if r.closes_at > 0 and now >= r.closes_at then return {'unknown'} end
open_if_due(now)
touch(seq, now)
let_through_if_ended(seq, now)
save()
return place(seq, now)
"#;

/// ARGV: seq.
const LEAVE: &str = r#"
local seq = ARGV[1]
if not redis.call('HGET', slots, seq) then return 0 end
local waiting = redis.call('ZREM', wait, seq)
local admitted = redis.call('ZREM', adm, seq)
redis.call('ZREM', seen, seq)
if waiting == 1 or admitted == 1 then
  redis.call('HSET', gone, seq, 'left')
  forget(seq)
end
return 1
"#;

/// ARGV: now, idle_ms, quiet_ms, event. `{'retired'}` asks for the room to leave the list.
const TICK: &str = r#"
local now = tonumber(ARGV[1])
load()
-- Listed but gone: its keys expired after it was retired and the unlisting did not happen.
if not exists then return {'retired'} end
if r.closes_at > 0 and now >= r.closes_at then
  -- The event has started: retire the room. Its keys linger a day, for support, then go.
  for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], 86400000) end
  return {'retired'}
end
open_if_due(now)
expire_passes(now)
local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. (now - tonumber(ARGV[2])),
  'LIMIT', 0, 10000)
for _, seq in ipairs(stale) do
  redis.call('ZREM', wait, seq)
  redis.call('ZREM', seen, seq)
  redis.call('HSET', gone, seq, 'expired')
  forget(seq)
end
r.abandoned_total = r.abandoned_total + #stale
local out = {tostring(#stale), '0'}
admit(now, out)
out[2] = tostring(redis.call('ZCARD', wait))
if r.opened == 1 and r.state == 0 and redis.call('ZCARD', wait) == 0
    and now - r.busy_at >= tonumber(ARGV[3]) then
  r.state = 2
end
save()
return out
"#;

/// ARGV: now, event, opens_at, join_from, apm, ttl, max_active, closes_at, action (0 pause,
/// 1 resume, 2 end).
const CONTROL: &str = r#"
local now = tonumber(ARGV[1])
load()
configure(tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7]), tonumber(ARGV[8]))
open_if_due(now)
local action = ARGV[9]
if action == '0' then
  r.state = 1
elseif action == '1' then
  r.busy_at = now
  r.credit = math.min(r.credit, 1)
  r.credit_at = now
  r.state = 0
else
  r.state = 3
end
save()
return stats()
"#;

/// ARGV: now.
const STATS: &str = r#"
local now = tonumber(ARGV[1])
load()
if not exists then return {} end
open_if_due(now)
expire_passes(now)
save()
return stats()
"#;

struct Scripts {
    join: Script,
    status: Script,
    leave: Script,
    tick: Script,
    control: Script,
    stats: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with_prelude = |body: &str| {
            Script::new(&format!(
                "local FIFO_BASE = {FIFO_BASE}\nlocal JOIN_FIELDS = {JOIN_FIELDS}\n{PRELUDE}{body}"
            ))
        };
        Scripts {
            join: with_prelude(JOIN),
            status: with_prelude(STATUS),
            leave: with_prelude(LEAVE),
            tick: with_prelude(TICK),
            control: with_prelude(CONTROL),
            stats: with_prelude(STATS),
        }
    }
}

/// Joins one batch carries at most by default: 256 joins run in a few milliseconds of the room's
/// Redis core, short enough not to stall the other rooms on that core.
pub const DEFAULT_MAX_JOIN_BATCH: usize = 256;

/// One fan's join, waiting for its room's next batch.
struct JoinRequest {
    config: RoomConfig,
    user: Ulid,
    now: Millis,
    draw: u64,
}

/// Waiting rooms in Redis.
pub struct RedisWaitingRoom {
    connection: RedisConnection,
    prefix: String,
    signer: RoomSigner,
    timings: RoomTimings,
    scripts: Scripts,
    /// Room secrets never change once created, so each node reads each one once.
    secrets: Mutex<HashMap<Ulid, [u8; 32]>>,
    /// This node's joins, one `JOIN` call per batch per room (see `group_commit`).
    joins: GroupCommit<JoinRequest, Vec<String>>,
}

fn number<T: std::str::FromStr>(raw: Option<&String>) -> Result<T> {
    raw.and_then(|raw| raw.parse::<T>().ok())
        .ok_or_else(|| WaitroomError::Unavailable(format!("unexpected reply field {raw:?}")))
}

fn float(raw: Option<&String>) -> Result<f64> {
    number::<f64>(raw)
}

/// Integers as Lua formats them (`%.17g` of a whole double has no fraction or exponent below
/// 10^17, but go through f64 to be safe).
fn whole(raw: Option<&String>) -> Result<u64> {
    let value = float(raw)?;
    if value.is_finite() && value >= 0.0 {
        Ok(value as u64)
    } else {
        Err(WaitroomError::Unavailable(format!(
            "unexpected reply field {raw:?}"
        )))
    }
}

/// A room's keys, all tagged by the event so each script's keys share a cluster slot.
fn room_keys(prefix: &str, event: Ulid) -> [String; 7] {
    let p = prefix;
    [
        format!("{p}:wr:{{{event}}}:room"),
        format!("{p}:wr:{{{event}}}:wait"),
        format!("{p}:wr:{{{event}}}:seen"),
        format!("{p}:wr:{{{event}}}:adm"),
        format!("{p}:wr:{{{event}}}:users"),
        format!("{p}:wr:{{{event}}}:slots"),
        format!("{p}:wr:{{{event}}}:gone"),
    ]
}

/// The set of rooms the drivers step. It is a key of its own, so no script touches it (a
/// script's keys must share one slot): joins and controls list a room after their script, and
/// ticks unlist it after retiring it.
fn rooms_key(prefix: &str) -> String {
    format!("{prefix}:wr:rooms")
}

fn invoke<'a>(script: &'a Script, prefix: &str, event: Ulid) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for key in room_keys(prefix, event) {
        invocation.key(key);
    }
    invocation
}

/// Lists a room, then marks it listed (in that order, so "listed" never lies and a failure in
/// between is repaired by the next join).
async fn list(mut connection: RedisConnection, prefix: &str, event: Ulid) -> Result<()> {
    let _: i64 = redis::cmd("SADD")
        .arg(rooms_key(prefix))
        .arg(event.to_string())
        .query_async(&mut connection)
        .await?;
    let _: i64 = redis::cmd("HSET")
        .arg(&room_keys(prefix, event)[0])
        .arg("listed")
        .arg(1)
        .query_async(&mut connection)
        .await?;
    Ok(())
}

/// One `JOIN` call for a batch of joins into `event`'s room; one row per join, in order.
async fn send_joins(
    mut connection: RedisConnection,
    prefix: &str,
    script: &Script,
    event: Ulid,
    batch: Vec<JoinRequest>,
) -> Result<Vec<Result<Vec<String>>>> {
    let mut invocation = invoke(script, prefix, event);
    for join in &batch {
        let config = &join.config;
        invocation
            .arg(join.now)
            .arg(join.user.to_string())
            .arg(config.opens_at)
            .arg(config.join_from)
            .arg(config.admit_per_minute)
            .arg(config.pass_ttl_ms)
            .arg(config.max_active.unwrap_or(0))
            .arg(config.closes_at)
            .arg(join.draw);
    }
    let mut reply: Vec<Vec<String>> = invocation.invoke_async(&mut connection).await?;
    if reply.len() != batch.len() + 1 {
        return Err(WaitroomError::Unavailable(format!(
            "a batch of {} joins got {} rows",
            batch.len(),
            reply.len().saturating_sub(1)
        )));
    }
    let rows = reply.split_off(1);
    let flags = reply.concat();
    if flags.first().map(String::as_str) == Some("list") {
        // Every fan of the batch is in the room; a failure here fails their joins, as it did
        // one join at a time, and the next join lists the room again.
        list(connection, prefix, event).await?;
    }
    Ok(rows.into_iter().map(Ok).collect())
}

fn pacer(rate: f64, busy_ms: f64) -> Pacer {
    Pacer {
        rate,
        busy_ms,
        ..Pacer::default()
    }
}

impl RedisWaitingRoom {
    /// Connects to `url` (`redis://…` or `redis+cluster://host:port,…`, see `marquee-redis`);
    /// `prefix` namespaces every key (one per deployment, or per test).
    pub async fn connect(
        url: &str,
        prefix: &str,
        signer: RoomSigner,
        timings: RoomTimings,
    ) -> Result<Self> {
        Self::connect_batching(url, prefix, signer, timings, DEFAULT_MAX_JOIN_BATCH).await
    }

    /// As [`connect`](Self::connect), sending at most `max_join_batch` joins into one room per
    /// script call (1 turns batching off: every join is its own call, as before batching).
    pub async fn connect_batching(
        url: &str,
        prefix: &str,
        signer: RoomSigner,
        timings: RoomTimings,
        max_join_batch: usize,
    ) -> Result<Self> {
        let connection = marquee_redis::connect(url).await?;
        let scripts = Scripts::new();
        let joins = {
            let connection = connection.clone();
            let prefix = prefix.to_string();
            let script = scripts.join.clone();
            GroupCommit::new(
                max_join_batch,
                Box::new(move |event, batch: Vec<JoinRequest>| {
                    let connection = connection.clone();
                    let prefix = prefix.clone();
                    let script = script.clone();
                    Box::pin(
                        async move { send_joins(connection, &prefix, &script, event, batch).await },
                    )
                }),
            )
        };
        Ok(RedisWaitingRoom {
            connection,
            prefix: prefix.to_string(),
            signer,
            timings,
            scripts,
            secrets: Mutex::new(HashMap::new()),
            joins,
        })
    }

    /// Join script calls made by this instance and the joins they carried: fewer calls than
    /// joins means joins were batched.
    pub fn join_batches(&self) -> BatchStats {
        self.joins.stats()
    }

    fn keys(&self, event: Ulid) -> [String; 7] {
        room_keys(&self.prefix, event)
    }

    fn rooms_key(&self) -> String {
        rooms_key(&self.prefix)
    }

    async fn list(&self, event: Ulid) -> Result<()> {
        list(self.connection.clone(), &self.prefix, event).await
    }

    async fn secret(&self, event: Ulid) -> Result<[u8; 32]> {
        if let Some(secret) = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&event)
        {
            return Ok(*secret);
        }
        let key = &self.keys(event)[0];
        let mut connection = self.connection.clone();
        let fresh = room_secret();
        let _: bool = redis::cmd("HSETNX")
            .arg(key)
            .arg("secret")
            .arg(&fresh[..])
            .query_async(&mut connection)
            .await?;
        let stored: Vec<u8> = redis::cmd("HGET")
            .arg(key)
            .arg("secret")
            .query_async(&mut connection)
            .await?;
        let secret: [u8; 32] = stored
            .try_into()
            .map_err(|_| WaitroomError::Unavailable("a room secret is corrupt".into()))?;
        self.secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(event, secret);
        Ok(secret)
    }

    fn invoke<'a>(&self, script: &'a Script, event: Ulid) -> redis::ScriptInvocation<'a> {
        invoke(script, &self.prefix, event)
    }

    fn place(&self, event: Ulid, row: &[String], now: Millis) -> Result<Place> {
        let kind = row.first().map(String::as_str).unwrap_or("");
        let seq = whole(row.get(1))?;
        let a = row.get(2);
        let state = RoomState::from_code(whole(row.get(3))? as u8);
        let opens_at = whole(row.get(4))?;
        let pacer = pacer(float(row.get(5))?, float(row.get(6))?);
        let admit_per_minute = u32::try_from(whole(row.get(7))?).unwrap_or(u32::MAX);
        let standing = match kind {
            "pre" => {
                let waiting = whole(a)?;
                Standing::PreQueue {
                    waiting,
                    opens_at,
                    eta_ms: opens_at
                        .saturating_sub(now)
                        .saturating_add(crate::pacing::eta(
                            waiting.div_ceil(2),
                            crate::pacing::per_ms(admit_per_minute),
                        )),
                }
            }
            "wait" => {
                let position = whole(a)?;
                Standing::Waiting {
                    position,
                    eta_ms: (state != RoomState::Paused)
                        .then(|| pacer.eta_ms(position, admit_per_minute)),
                }
            }
            "adm" => {
                let expires_at = whole(a)?;
                let user = row
                    .get(8)
                    .and_then(|user| Ulid::from_string(user).ok())
                    .ok_or_else(|| WaitroomError::Unavailable("a place lost its user".into()))?;
                Standing::Admitted {
                    pass: self.signer.pass(&PassClaims {
                        event,
                        user,
                        seq,
                        expires_at,
                    }),
                    expires_at,
                }
            }
            "left" => Standing::Left,
            _ => Standing::Expired,
        };
        Ok(Place {
            token: self.signer.token(event, seq),
            event,
            standing,
            room: state,
        })
    }

    fn stats_from(row: &[String]) -> Result<RoomStats> {
        let pacer = pacer(float(row.get(8))?, float(row.get(9))?);
        Ok(RoomStats {
            state: RoomState::from_code(whole(row.first())? as u8),
            opened: whole(row.get(1))? == 1,
            opens_at: whole(row.get(2))?,
            waiting: whole(row.get(3))?,
            active: whole(row.get(4))?,
            admitted_total: whole(row.get(5))?,
            abandoned_total: whole(row.get(6))?,
            admit_per_minute: u32::try_from(whole(row.get(7))?).unwrap_or(u32::MAX),
            measured_per_minute: pacer.measured().unwrap_or(0.0) * 60_000.0,
        })
    }

    fn config_args(invocation: &mut redis::ScriptInvocation<'_>, config: &RoomConfig) {
        invocation
            .arg(config.opens_at)
            .arg(config.join_from)
            .arg(config.admit_per_minute)
            .arg(config.pass_ttl_ms)
            .arg(config.max_active.unwrap_or(0))
            .arg(config.closes_at);
    }
}

#[async_trait]
impl WaitingRoom for RedisWaitingRoom {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn join(&self, config: &RoomConfig, user: Ulid, now: Millis) -> Result<Place> {
        let draw = order_key(&self.secret(config.event).await?, user);
        let request = JoinRequest {
            config: config.clone(),
            user,
            now,
            draw,
        };
        let row = self.joins.submit(config.event, request).await?;
        if row.first().map(String::as_str) == Some("early") {
            return Err(WaitroomError::NotJoinableYet {
                join_from: whole(row.get(1))?,
            });
        }
        // Tokens and passes are signed here, in the caller's task, not in the batch's sender.
        self.place(config.event, &row, now)
    }

    async fn status(&self, token: &str, now: Millis) -> Result<Place> {
        let (event, seq) = self.signer.parse_token(token)?;
        let row: Vec<String> = self
            .invoke(&self.scripts.status, event)
            .arg(now)
            .arg(seq)
            .invoke_async(&mut self.connection.clone())
            .await?;
        if row.first().map(String::as_str) == Some("unknown") {
            return Err(WaitroomError::UnknownToken);
        }
        self.place(event, &row, now)
    }

    async fn leave(&self, token: &str, _now: Millis) -> Result<()> {
        let (event, seq) = self.signer.parse_token(token)?;
        let found: i64 = self
            .invoke(&self.scripts.leave, event)
            .arg(seq)
            .invoke_async(&mut self.connection.clone())
            .await?;
        if found == 1 {
            Ok(())
        } else {
            Err(WaitroomError::UnknownToken)
        }
    }

    async fn touch(&self, tokens: &[String], now: Millis) -> Result<()> {
        // One pipeline per room: a cluster refuses a pipeline whose keys span slots.
        let mut rooms: HashMap<Ulid, redis::Pipeline> = HashMap::new();
        for token in tokens {
            if let Ok((event, seq)) = self.signer.parse_token(token) {
                rooms
                    .entry(event)
                    .or_insert_with(redis::pipe)
                    .cmd("ZADD")
                    .arg(&self.keys(event)[2])
                    .arg("XX")
                    .arg("GT")
                    .arg(now)
                    .arg(seq)
                    .ignore();
            }
        }
        let sent = rooms.into_values().map(|pipe| {
            let mut connection = self.connection.clone();
            async move { pipe.query_async::<()>(&mut connection).await }
        });
        for outcome in futures::future::join_all(sent).await {
            outcome?;
        }
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<Ulid>> {
        let key = self.rooms_key();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| Ulid::from_string(member).ok())
            .collect())
    }

    async fn tick(&self, event: Ulid, now: Millis) -> Result<TickOutcome> {
        let row: Vec<String> = self
            .invoke(&self.scripts.tick, event)
            .arg(now)
            .arg(self.timings.idle_ms())
            .arg(self.timings.quiet_ms())
            .arg(event.to_string())
            .invoke_async(&mut self.connection.clone())
            .await?;
        if row.first().map(String::as_str) == Some("retired") {
            // Unlisted after the script: a failure here leaves it listed, and the next tick
            // retires it again.
            let _: i64 = redis::cmd("SREM")
                .arg(self.rooms_key())
                .arg(event.to_string())
                .query_async(&mut self.connection.clone())
                .await?;
            return Ok(TickOutcome {
                admitted: Vec::new(),
                abandoned: 0,
                waiting: 0,
            });
        }
        let abandoned = whole(row.first())?;
        let waiting = whole(row.get(1))?;
        let mut admitted = Vec::new();
        for triple in row.get(2..).unwrap_or_default().chunks_exact(3) {
            let seq = whole(triple.first())?;
            let Ok(user) = Ulid::from_string(&triple[1]) else {
                continue;
            };
            let expires_at = whole(triple.get(2))?;
            admitted.push(Admission {
                token: self.signer.token(event, seq),
                user,
                pass: self.signer.pass(&PassClaims {
                    event,
                    user,
                    seq,
                    expires_at,
                }),
                expires_at,
            });
        }
        Ok(TickOutcome {
            admitted,
            abandoned,
            waiting,
        })
    }

    async fn requires_pass(&self, config: &RoomConfig, now: Millis) -> Result<bool> {
        if now < config.opens_at || now >= config.closes_at {
            return Ok(false);
        }
        let state: Option<String> = redis::cmd("HGET")
            .arg(&self.keys(config.event)[0])
            .arg("state")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(match state {
            None => true,
            Some(state) => {
                RoomState::from_code(state.parse::<f64>().unwrap_or(0.0) as u8).gates_holds()
            }
        })
    }

    async fn check_pass(&self, pass: &str, event: Ulid, user: Ulid, now: Millis) -> Result<()> {
        let claims = self
            .signer
            .verify_pass(pass, event, user, now)
            .map_err(WaitroomError::Pass)?;
        let expires: Option<f64> = redis::cmd("ZSCORE")
            .arg(&self.keys(event)[3])
            .arg(claims.seq)
            .query_async(&mut self.connection.clone())
            .await?;
        if expires.is_some_and(|expires| expires as u64 == claims.expires_at) {
            Ok(())
        } else {
            Err(WaitroomError::Pass(PassRefusal::Revoked))
        }
    }

    async fn control(
        &self,
        config: &RoomConfig,
        action: Control,
        now: Millis,
    ) -> Result<RoomStats> {
        let mut invocation = self.invoke(&self.scripts.control, config.event);
        invocation.arg(now).arg(config.event.to_string());
        Self::config_args(&mut invocation, config);
        invocation.arg(match action {
            Control::Pause => 0,
            Control::Resume => 1,
            Control::End => 2,
        });
        let row: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        self.list(config.event).await?;
        Self::stats_from(&row)
    }

    async fn stats(&self, event: Ulid, now: Millis) -> Result<Option<RoomStats>> {
        let row: Vec<String> = self
            .invoke(&self.scripts.stats, event)
            .arg(now)
            .invoke_async(&mut self.connection.clone())
            .await?;
        if row.is_empty() {
            return Ok(None);
        }
        Self::stats_from(&row).map(Some)
    }
}
