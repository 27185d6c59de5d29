//! The fan-out of one node: per channel, the last offset, a bounded history and a broadcast ring.
//! [`InProcessHub`] is this alone; the Redis hub feeds it from pub/sub.
//!
//! A subscription is registered on the ring under the same lock that appends, so the replayed
//! history and the live messages meet exactly: nothing falls between them, nothing is in both.

use crate::{
    Channel, ChannelKind, HubLimits, PushError, PushHub, PushMessage, Start, Subscription,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

struct ChannelState {
    /// The offset of the newest message (zero before the first).
    last: u64,
    /// History covers the offsets in `(floor, last]`; a client behind `floor` needs a reset.
    floor: u64,
    history: VecDeque<(Instant, Arc<PushMessage>)>,
    /// The fan-out ring, made by the first subscriber: a ring preallocates its whole capacity
    /// (`subscriber_buffer` slots), which a channel that only keeps history does not need.
    sender: Option<broadcast::Sender<Arc<PushMessage>>>,
    touched: Instant,
}

impl ChannelState {
    fn new() -> Self {
        ChannelState {
            last: 0,
            floor: 0,
            history: VecDeque::new(),
            sender: None,
            touched: Instant::now(),
        }
    }

    /// True while someone on this node is subscribed.
    fn followed(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    fn prune(&mut self, limits: &HubLimits, now: Instant) {
        while let Some((at, message)) = self.history.front() {
            let too_many = self.history.len() > limits.history_len;
            let too_old = now.saturating_duration_since(*at) > limits.history_age;
            if !(too_many || too_old) {
                break;
            }
            self.floor = message.offset;
            self.history.pop_front();
        }
    }

    /// Appends `message`, whose offset is beyond `last`. A jump past `last + 1` means the
    /// messages between were never seen here, so history restarts after the gap.
    fn append(&mut self, message: Arc<PushMessage>, limits: &HubLimits) {
        let now = Instant::now();
        if message.offset != self.last + 1 {
            self.history.clear();
            self.floor = message.offset - 1;
        }
        self.last = message.offset;
        self.touched = now;
        if limits.history_len > 0 {
            self.history.push_back((now, Arc::clone(&message)));
        } else {
            self.floor = message.offset;
        }
        self.prune(limits, now);
        // No receivers is not an error: nobody is listening right now.
        if let Some(sender) = &self.sender {
            let _ = sender.send(message);
        }
    }

    fn start_after(&mut self, since: Option<u64>, limits: &HubLimits) -> Start {
        self.prune(limits, Instant::now());
        match since {
            None => Start::Live { offset: self.last },
            Some(since) if since > self.last || since < self.floor => {
                Start::Reset { offset: self.last }
            }
            Some(since) => Start::Replay(
                self.history
                    .iter()
                    .filter(|(_, message)| message.offset > since)
                    .map(|(_, message)| Arc::clone(message))
                    .collect(),
            ),
        }
    }
}

pub(crate) struct LocalChannels {
    limits: HubLimits,
    channels: Mutex<HashMap<Channel, Arc<Mutex<ChannelState>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a few
    // assignments), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalChannels {
    pub(crate) fn new(limits: HubLimits) -> Self {
        LocalChannels {
            limits,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel's state, made if new. At the cap, room is made by forgetting channels
    /// nobody follows (aged-out ones, then the least recently used); when every channel is
    /// followed, a new one is refused.
    fn state(&self, channel: &Channel) -> Result<Arc<Mutex<ChannelState>>, PushError> {
        let mut channels = lock(&self.channels);
        if let Some(state) = channels.get(channel) {
            return Ok(Arc::clone(state));
        }
        let limit = self.limits.max_channels.max(1);
        if channels.len() >= limit {
            let now = Instant::now();
            let age = self.limits.history_age;
            channels.retain(|_, state| {
                let state = lock(state);
                state.followed() || now.saturating_duration_since(state.touched) <= age
            });
        }
        if channels.len() >= limit {
            let oldest = channels
                .iter()
                .filter_map(|(name, state)| {
                    let state = lock(state);
                    (!state.followed()).then(|| (state.touched, name.clone()))
                })
                .min()
                .map(|(_, name)| name);
            match oldest {
                Some(name) => {
                    channels.remove(&name);
                }
                None => return Err(PushError::TooManyChannels { limit }),
            }
        }
        let state = Arc::new(Mutex::new(ChannelState::new()));
        channels.insert(channel.clone(), Arc::clone(&state));
        Ok(state)
    }

    /// The channel's state if this node tracks it (never makes one).
    fn existing(&self, channel: &Channel) -> Option<Arc<Mutex<ChannelState>>> {
        lock(&self.channels).get(channel).map(Arc::clone)
    }

    /// Channels tracked right now.
    pub(crate) fn count(&self) -> usize {
        lock(&self.channels).len()
    }

    /// Numbers and appends a message; returns its offset.
    pub(crate) fn publish(
        &self,
        channel: &Channel,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<u64, PushError> {
        let state = self.state(channel)?;
        let mut state = lock(&state);
        let offset = state.last + 1;
        let message = Arc::new(PushMessage::new(channel.clone(), offset, kind, data));
        state.append(message, &self.limits);
        Ok(offset)
    }

    /// Appends a message with its own offset unless the channel has it already.
    pub(crate) fn deliver(&self, message: Arc<PushMessage>) -> Result<bool, PushError> {
        let state = self.state(&message.channel)?;
        let mut state = lock(&state);
        if message.offset <= state.last {
            return Ok(false);
        }
        state.append(message, &self.limits);
        Ok(true)
    }

    /// The newest offset this node has seen on `channel`, if it has seen any.
    pub(crate) fn last(&self, channel: &Channel) -> Option<u64> {
        let channels = lock(&self.channels);
        channels
            .get(channel)
            .map(|state| lock(state).last)
            .filter(|last| *last > 0)
    }

    /// Forgets the newest offset seen on `channel`, so the next message starts it afresh.
    pub(crate) fn restart(&self, channel: &Channel) {
        let Some(state) = self.existing(channel) else {
            return;
        };
        let mut state = lock(&state);
        state.history.clear();
        state.last = 0;
        state.floor = 0;
    }

    /// True while someone on this node is subscribed to `channel`.
    pub(crate) fn has_receivers(&self, channel: &Channel) -> bool {
        let channels = lock(&self.channels);
        channels
            .get(channel)
            .is_some_and(|state| lock(state).followed())
    }

    pub(crate) fn seed(&self, channel: &Channel, offset: u64) -> Result<(), PushError> {
        if offset == 0 {
            // Nothing to tell: a channel at zero is what an unknown channel already is.
            return Ok(());
        }
        let state = self.state(channel)?;
        let mut state = lock(&state);
        if offset > state.last {
            state.history.clear();
            state.last = offset;
            state.floor = offset;
        }
        Ok(())
    }

    pub(crate) fn subscribe(
        &self,
        channel: &Channel,
        since: Option<u64>,
    ) -> Result<Subscription, PushError> {
        let state = self.state(channel)?;
        let mut state = lock(&state);
        state.touched = Instant::now();
        let buffer = self.limits.subscriber_buffer.max(1);
        let live = state
            .sender
            .get_or_insert_with(|| broadcast::channel(buffer).0)
            .subscribe();
        let start = state.start_after(since, &self.limits);
        Ok(Subscription {
            channel: channel.clone(),
            start,
            live,
        })
    }

    /// Channels of `kind` that someone on this node is subscribed to right now.
    pub(crate) fn listened(&self, kind: ChannelKind) -> Vec<Channel> {
        let channels = lock(&self.channels);
        channels
            .iter()
            .filter(|(channel, state)| channel.kind() == kind && lock(state).followed())
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    /// Forgets channels nobody listens to whose history has aged out, so a long-running node
    /// does not keep one entry per user it ever notified.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let age = self.limits.history_age;
        let mut channels = lock(&self.channels);
        channels.retain(|_, state| {
            let state = lock(state);
            state.followed() || now.saturating_duration_since(state.touched) <= age
        });
        channels.len()
    }
}

/// Spawns the periodic sweep; it ends when the channels are dropped.
pub(crate) fn spawn_sweeper(channels: &Arc<LocalChannels>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<LocalChannels> = Arc::downgrade(channels);
    let period = (channels.limits.history_age / 4).max(Duration::from_secs(1));
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(channels) = weak.upgrade() else {
                return;
            };
            channels.sweep();
        }
    });
}

/// Keys of recent unique publishes, oldest first, bounded.
#[derive(Default)]
struct RecentKeys {
    seen: std::collections::HashSet<String>,
    order: VecDeque<String>,
}

const RECENT_KEYS: usize = 100_000;

impl RecentKeys {
    /// True the first time `key` is offered.
    fn first(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() >= RECENT_KEYS {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(key.to_string());
        self.order.push_back(key.to_string());
        true
    }
}

/// Push for one node: everything in memory.
#[derive(Clone)]
pub struct InProcessHub {
    channels: Arc<LocalChannels>,
    recent: Arc<Mutex<RecentKeys>>,
}

impl InProcessHub {
    pub fn new(limits: HubLimits) -> Self {
        let channels = Arc::new(LocalChannels::new(limits));
        spawn_sweeper(&channels);
        InProcessHub {
            channels,
            recent: Arc::default(),
        }
    }

    /// Channels currently tracked (for metrics and tests of the sweep).
    pub fn sweep(&self) -> usize {
        self.channels.sweep()
    }
}

impl Default for InProcessHub {
    fn default() -> Self {
        Self::new(HubLimits::default())
    }
}

#[async_trait]
impl PushHub for InProcessHub {
    async fn publish(
        &self,
        channel: &Channel,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<u64, PushError> {
        self.channels.publish(channel, kind, data)
    }

    async fn publish_unique(
        &self,
        channel: &Channel,
        key: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<Option<u64>, PushError> {
        if !lock(&self.recent).first(key) {
            return Ok(None);
        }
        self.channels.publish(channel, kind, data).map(Some)
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
        let message = Arc::new(PushMessage::new(channel.clone(), offset, kind, data));
        self.channels.deliver(message)
    }

    async fn seed(&self, channel: &Channel, offset: u64) -> Result<(), PushError> {
        self.channels.seed(channel, offset)
    }

    fn listened(&self, kind: ChannelKind) -> Vec<Channel> {
        self.channels.listened(kind)
    }

    fn channel_count(&self) -> usize {
        self.channels.count()
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        since: Option<u64>,
    ) -> Result<Subscription, PushError> {
        self.channels.subscribe(channel, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_channels: usize) -> HubLimits {
        HubLimits {
            max_channels,
            ..HubLimits::default()
        }
    }

    #[tokio::test]
    async fn the_channel_count_stays_under_the_cap_whatever_names_come() {
        let hub = InProcessHub::new(limits(100));
        let mut followed = Vec::new();
        for index in 0..20_000 {
            let channel = Channel::queue(&format!("made-up-{index}")).expect("name");
            hub.publish(&channel, "note", &serde_json::json!({}))
                .await
                .expect("an unfollowed channel makes room");
            if index < 10 {
                followed.push(hub.subscribe(&channel, None).await.expect("subscribe"));
            }
            assert!(hub.channel_count() <= 100);
        }
        // The followed channels were never the ones forgotten.
        for subscription in &followed {
            assert!(hub.channels.has_receivers(&subscription.channel));
        }
    }

    #[tokio::test]
    async fn a_new_channel_is_refused_when_every_tracked_one_is_followed() {
        let hub = InProcessHub::new(limits(2));
        let _a = hub
            .subscribe(&Channel::user("a").expect("a"), None)
            .await
            .expect("a");
        let _b = hub
            .subscribe(&Channel::user("b").expect("b"), None)
            .await
            .expect("b");
        let refused = hub.subscribe(&Channel::user("c").expect("c"), None).await;
        assert!(matches!(
            refused,
            Err(PushError::TooManyChannels { limit: 2 })
        ));
    }

    #[test]
    fn a_channel_without_subscribers_has_no_ring() {
        let channels = LocalChannels::new(HubLimits::default());
        let channel = Channel::user("a").expect("a");
        channels
            .publish(&channel, "note", &serde_json::json!({}))
            .expect("publish");
        let state = channels.existing(&channel).expect("tracked");
        assert!(lock(&state).sender.is_none());
    }
}
