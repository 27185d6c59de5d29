//! The scale-out change stream: the relay that fills a JetStream stream from the outbox, and
//! the feed each node follows it with.

use crate::{poll_store, ChangeFeed, ChangeFeedError};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use futures::StreamExt;
use marquee_lease::{LeaseError, LeaseStore};
use marquee_store::{CatalogStore, ChangePosition, ChangeRecord};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The header naming the position of the record before this one in the outbox.
const PREVIOUS: &str = "Marquee-Previous";
/// The stream keeps at most this many records; the outbox keeps the rest.
const STREAM_MAX_MESSAGES: i64 = 1_000_000;
const STREAM_MAX_BYTES: i64 = 1 << 30;

/// Connects to NATS, retrying the first connection too (a node may start before NATS does).
pub async fn connect_nats(url: &str, name: &str) -> Result<async_nats::Client, ChangeFeedError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(ChangeFeedError::nats)
}

fn subject(stream: &str) -> String {
    format!("{stream}.outbox")
}

/// How long JetStream remembers message ids to drop a re-published one.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream if it is missing: one subject, file storage, the oldest records
/// discarded past a million or 1 GiB (followers further behind read the outbox), and message
/// ids remembered for `duplicate_window`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    duplicate_window: Duration,
) -> Result<stream::Stream, ChangeFeedError> {
    js.get_or_create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject(name)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_messages: STREAM_MAX_MESSAGES,
        max_bytes: STREAM_MAX_BYTES,
        duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(ChangeFeedError::nats)
}

/// Where the stream ends: its last sequence and the outbox position that message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTail {
    pub sequence: u64,
    pub position: ChangePosition,
}

/// Reads the stream's tail. The last message is always there: the stream discards only its
/// oldest messages, and never by age.
pub async fn read_tail(stream: &mut stream::Stream) -> Result<StreamTail, ChangeFeedError> {
    let sequence = stream
        .info()
        .await
        .map_err(ChangeFeedError::nats)?
        .state
        .last_sequence;
    if sequence == 0 {
        return Ok(StreamTail::default());
    }
    let message = stream
        .get_raw_message(sequence)
        .await
        .map_err(ChangeFeedError::nats)?;
    let position = message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .and_then(|id| id.as_str().parse::<ChangePosition>().ok())
        .ok_or_else(|| {
            ChangeFeedError::Nats(format!(
                "message {sequence} of the change stream has no position"
            ))
        })?;
    Ok(StreamTail { sequence, position })
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The JetStream stream's name (its subject is `{stream}.outbox`).
    pub stream: String,
    /// Who is relaying, for the lease and logs (the node id).
    pub holder: String,
    /// The relay lease's lifetime; it is extended every third of it. A relay that dies is
    /// replaced within about this long.
    pub lease_ttl: Duration,
    /// How often the outbox is read while it has nothing new (at least [`crate::SIGNALLED_POLL`]
    /// when the store signals new changes: the signal wakes the relay, the poll is a fallback).
    pub poll: Duration,
    /// Most records published per round trip.
    pub batch: u32,
    /// The stream's de-duplication window, when the relay creates it.
    pub duplicate_window: Duration,
}

impl RelaySettings {
    pub fn new(stream: impl Into<String>, holder: impl Into<String>) -> RelaySettings {
        RelaySettings {
            stream: stream.into(),
            holder: holder.into(),
            lease_ttl: Duration::from_secs(5),
            poll: Duration::from_millis(10),
            batch: 500,
            duplicate_window: DUPLICATE_WINDOW,
        }
    }
}

/// Runs on every node; the one holding the relay lease copies the outbox into the stream.
pub fn spawn_relay(
    store: Arc<dyn CatalogStore>,
    leases: Arc<dyn LeaseStore>,
    js: jetstream::Context,
    settings: RelaySettings,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let key = vec![format!("changes-relay:{}", settings.stream)];
        loop {
            if *stop.borrow() {
                return;
            }
            let lease = match leases
                .acquire(&key, &settings.holder, settings.lease_ttl)
                .await
            {
                Ok(lease) => lease,
                Err(LeaseError::Taken { .. }) => {
                    if pause(&mut stop, settings.lease_ttl / 3).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "change relay: cannot take the relay lease");
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!(holder = %settings.holder, stream = %settings.stream, "change relay: relaying");
            metrics::gauge!("marquee_changes_relay_leader").set(1.0);
            let outcome = relay(
                store.as_ref(),
                leases.as_ref(),
                lease,
                &js,
                &settings,
                &mut stop,
            )
            .await;
            metrics::gauge!("marquee_changes_relay_leader").set(0.0);
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "change relay: stopped relaying");
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    })
}

/// Relays while the lease holds; `Ok` when told to stop (the lease is then given back).
async fn relay(
    store: &dyn CatalogStore,
    leases: &dyn LeaseStore,
    mut lease: marquee_lease::Lease,
    js: &jetstream::Context,
    settings: &RelaySettings,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ChangeFeedError> {
    let mut stream = ensure_stream(js, &settings.stream, settings.duplicate_window).await?;
    let subject = subject(&settings.stream);
    let mut tail = read_tail(&mut stream).await?;
    let newest = store.latest_change().await?;
    if tail.position > newest {
        return Err(ChangeFeedError::ForeignStream {
            stream: settings.stream.clone(),
            stream_position: tail.position,
            database_position: newest,
        });
    }
    let mut extended = Instant::now();
    let mut signal = store.change_signal();
    loop {
        if extended.elapsed() >= settings.lease_ttl / 3 {
            lease = leases
                .extend(&lease, settings.lease_ttl)
                .await
                .map_err(|error| ChangeFeedError::Nats(format!("relay lease lost: {error}")))?;
            extended = Instant::now();
        }
        if let Some(signal) = signal.as_mut() {
            signal.borrow_and_update();
        }
        let records = store.read_changes(tail.position, settings.batch).await?;
        if records.is_empty() {
            // Woken by the store's signal when it has one (a commit anywhere), and never
            // asleep past a third of the lease, which must be extended.
            let nap = match signal {
                Some(_) => crate::SIGNALLED_POLL.max(settings.poll),
                None => settings.poll,
            }
            .min(settings.lease_ttl / 3);
            let stopping = tokio::select! {
                stopping = pause(stop, nap) => stopping,
                () = crate::wait_for_change(signal.as_mut(), nap, nap) => false,
            };
            if stopping {
                let _ = leases.release(&lease).await;
                return Ok(());
            }
            continue;
        }
        let relayed;
        (tail, relayed) = relay_batch(js, &mut stream, &subject, tail, &records).await?;
        metrics::counter!("marquee_changes_relayed_total").increment(relayed);
        metrics::gauge!("marquee_changes_relay_position").set(tail.position as f64);
    }
}

/// Publishes `records` (read from the outbox after `tail.position`) after `tail`, and answers
/// the new tail and how many were appended. A stale `tail` (another relay wrote meanwhile)
/// appends nothing: the server refuses the first message's expected sequence, and the answer
/// is the stream's real tail, to read the outbox after.
pub async fn relay_batch(
    js: &jetstream::Context,
    stream: &mut stream::Stream,
    subject: &str,
    mut tail: StreamTail,
    records: &[ChangeRecord],
) -> Result<(StreamTail, u64), ChangeFeedError> {
    // Publish the whole batch, then collect the acknowledgements: the server applies the
    // messages in order, and each expects the sequence the one before it will get.
    let mut pending = Vec::with_capacity(records.len());
    let mut previous = tail.position;
    for (offset, record) in records.iter().enumerate() {
        let payload = serde_json::to_vec(record)
            .map_err(|error| ChangeFeedError::Nats(format!("encoding a change: {error}")))?;
        let mut message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(record.position.to_string())
            .header(PREVIOUS, previous.to_string().as_str());
        if tail.sequence > 0 {
            message = message.expected_last_sequence(tail.sequence + offset as u64);
        }
        let ack = js
            .send_publish(subject.to_string(), message)
            .await
            .map_err(ChangeFeedError::nats)?;
        pending.push((record.position, ack));
        previous = record.position;
    }
    let mut relayed = 0u64;
    for (position, ack) in pending {
        match ack.await {
            Ok(ack) if ack.duplicate => {
                // Already in the stream (an earlier attempt whose acknowledgement was lost,
                // or another relay): the stream's tail is the truth.
                tail = read_tail(stream).await?;
                break;
            }
            Ok(ack) => {
                tail = StreamTail {
                    sequence: ack.sequence,
                    position,
                };
                relayed += 1;
            }
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                tracing::warn!(
                    position,
                    "change relay: the stream moved under us (another relay?); re-reading its tail"
                );
                tail = read_tail(stream).await?;
                break;
            }
            Err(error) => return Err(ChangeFeedError::nats(error)),
        }
    }
    Ok((tail, relayed))
}

/// Sleeps, or returns true at once when the node is stopping.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|stopping| *stopping) => true,
    }
}

/// The node's in-memory copy of the stream's live edge.
struct Window {
    /// Every outbox record after this position, up to the last one held, is in `records`.
    /// `None` until the first message arrives.
    complete_after: Option<ChangePosition>,
    records: VecDeque<ChangeRecord>,
    capacity: usize,
}

impl Window {
    /// Appends a record the stream delivered after the one at `previous`.
    fn push(&mut self, record: ChangeRecord, previous: ChangePosition) {
        let last = self
            .records
            .back()
            .map(|record| record.position)
            .or(self.complete_after);
        match last {
            Some(last) if record.position <= last => return,
            Some(last) if last == previous => {}
            // A jump (the stream was re-read from elsewhere): only what follows is vouched for.
            _ => {
                self.records.clear();
                self.complete_after = Some(previous);
            }
        }
        self.records.push_back(record);
        while self.records.len() > self.capacity {
            if let Some(evicted) = self.records.pop_front() {
                self.complete_after = Some(evicted.position);
            }
        }
    }

    /// The records after `after`, or `None` when the window cannot vouch for them all.
    fn after(&self, after: ChangePosition, limit: u32) -> Option<Vec<ChangeRecord>> {
        let complete_after = self.complete_after?;
        if after < complete_after {
            return None;
        }
        let start = self
            .records
            .partition_point(|record| record.position <= after);
        Some(
            self.records
                .range(start..)
                .take(limit as usize)
                .cloned()
                .collect(),
        )
    }
}

struct Shared {
    window: Mutex<Window>,
    /// Bumped at every arrival, so readers can wait for one.
    arrivals: watch::Sender<u64>,
    subscribed: AtomicBool,
}

/// Follows the change stream from NATS, falling back to the store for what its window does not
/// hold (see the crate doc).
pub struct JetStreamFeed {
    store: Arc<dyn CatalogStore>,
    client: async_nats::Client,
    shared: Arc<Shared>,
    poll: Duration,
    task: JoinHandle<()>,
}

impl JetStreamFeed {
    /// Subscribes to `stream` (creating it if needed) from its last message on, keeping the
    /// newest `window` records in memory. `poll` paces reads of the store while NATS is away.
    pub async fn start(
        store: Arc<dyn CatalogStore>,
        client: async_nats::Client,
        stream: &str,
        window: usize,
        poll: Duration,
    ) -> Result<JetStreamFeed, ChangeFeedError> {
        let js = jetstream::new(client.clone());
        let handle = ensure_stream(&js, stream, DUPLICATE_WINDOW).await?;
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                complete_after: None,
                records: VecDeque::new(),
                capacity: window.max(1),
            }),
            arrivals: watch::channel(0).0,
            subscribed: AtomicBool::new(false),
        });
        let task = tokio::spawn(follow(handle, Arc::clone(&shared)));
        Ok(JetStreamFeed {
            store,
            client,
            shared,
            poll,
            task,
        })
    }

    fn live(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl Drop for JetStreamFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ChangeFeed for JetStreamFeed {
    fn backend(&self) -> &'static str {
        "jetstream"
    }

    async fn read(
        &self,
        after: ChangePosition,
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ChangeRecord>, ChangeFeedError> {
        let deadline = Instant::now() + wait;
        loop {
            let mut arrivals = self.shared.arrivals.subscribe();
            let held = match self.shared.window.lock() {
                Ok(window) => window.after(after, limit),
                Err(poisoned) => poisoned.into_inner().after(after, limit),
            };
            let covered = held.is_some();
            let records = match held {
                Some(records) => records,
                // Behind the window, or nothing received yet: the outbox has it.
                None => self.store.read_changes(after, limit).await?,
            };
            let now = Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records);
            }
            if !self.live() {
                // NATS is away: behave as the embedded feed until it is back.
                return poll_store(self.store.as_ref(), after, limit, deadline - now, self.poll)
                    .await;
            }
            let nap = if covered {
                deadline - now
            } else {
                self.poll.min(deadline - now)
            };
            let _ = tokio::time::timeout(nap, arrivals.changed()).await;
        }
    }

    async fn latest(&self) -> Result<ChangePosition, ChangeFeedError> {
        Ok(self.store.latest_change().await?)
    }

    async fn check(&self) -> Result<(), ChangeFeedError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(ChangeFeedError::Nats(format!("not connected ({state:?})"))),
        }
    }
}

/// Receives the stream into the window, re-subscribing after the last sequence it saw whenever
/// the subscription ends.
async fn follow(stream: stream::Stream, shared: Arc<Shared>) {
    let mut last_sequence: Option<u64> = None;
    loop {
        let deliver_policy = match last_sequence {
            Some(sequence) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
            // The last message names the position before it, so the window starts complete.
            None => consumer::DeliverPolicy::Last,
        };
        let messages = match stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                ..Default::default()
            })
            .await
        {
            Ok(consumer) => consumer.messages().await,
            Err(error) => {
                tracing::warn!(%error, "change feed: cannot subscribe to the change stream");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "change feed: cannot read the change stream");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        shared.subscribed.store(true, Ordering::Release);
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "change feed: the change stream subscription failed");
                    break;
                }
            };
            if let Ok(info) = message.info() {
                last_sequence = Some(info.stream_sequence);
            }
            let previous = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(PREVIOUS))
                .and_then(|value| value.as_str().parse::<ChangePosition>().ok());
            let record = serde_json::from_slice::<ChangeRecord>(&message.payload);
            let (Some(previous), Ok(record)) = (previous, record) else {
                tracing::warn!(
                    sequence = ?last_sequence,
                    "change feed: skipping a message that is not an outbox record"
                );
                continue;
            };
            let lag = (chrono::Utc::now() - record.recorded_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!("marquee_changes_lag_seconds").record(lag.as_secs_f64());
            metrics::counter!("marquee_changes_received_total").increment(1);
            match shared.window.lock() {
                Ok(mut window) => window.push(record, previous),
                Err(poisoned) => poisoned.into_inner().push(record, previous),
            }
            shared.arrivals.send_modify(|count| *count += 1);
        }
        shared.subscribed.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_store::ChangeKind;

    fn record(position: ChangePosition) -> ChangeRecord {
        ChangeRecord {
            position,
            kind: ChangeKind::EventUpdated,
            entity_id: format!("e{position}"),
            payload: serde_json::Value::Null,
            recorded_at: chrono::Utc::now(),
        }
    }

    fn window(capacity: usize) -> Window {
        Window {
            complete_after: None,
            records: VecDeque::new(),
            capacity,
        }
    }

    fn positions(records: Option<Vec<ChangeRecord>>) -> Option<Vec<ChangePosition>> {
        records.map(|records| records.iter().map(|record| record.position).collect())
    }

    #[test]
    fn an_empty_window_vouches_for_nothing() {
        assert_eq!(positions(window(8).after(0, 10)), None);
    }

    #[test]
    fn the_first_record_vouches_from_its_previous_position() {
        let mut window = window(8);
        window.push(record(7), 5);
        assert_eq!(positions(window.after(4, 10)), None, "6 might exist");
        assert_eq!(positions(window.after(5, 10)), Some(vec![7]));
        assert_eq!(positions(window.after(7, 10)), Some(vec![]));
        assert_eq!(positions(window.after(9, 10)), Some(vec![]), "ahead: wait");
    }

    #[test]
    fn a_chain_keeps_growing_and_duplicates_are_ignored() {
        let mut window = window(8);
        window.push(record(1), 0);
        window.push(record(2), 1);
        window.push(record(2), 1);
        window.push(record(4), 2);
        assert_eq!(positions(window.after(0, 10)), Some(vec![1, 2, 4]));
        assert_eq!(positions(window.after(1, 1)), Some(vec![2]));
    }

    #[test]
    fn a_jump_restarts_the_window() {
        let mut window = window(8);
        window.push(record(1), 0);
        window.push(record(2), 1);
        window.push(record(9), 8);
        assert_eq!(positions(window.after(2, 10)), None, "3..8 were never seen");
        assert_eq!(positions(window.after(8, 10)), Some(vec![9]));
    }

    #[test]
    fn eviction_moves_the_complete_bound() {
        let mut window = window(2);
        for position in 1..=5 {
            window.push(record(position), position - 1);
        }
        assert_eq!(positions(window.after(2, 10)), None);
        assert_eq!(positions(window.after(3, 10)), Some(vec![4, 5]));
    }
}
