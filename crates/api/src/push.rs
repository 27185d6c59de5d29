//! Push as the HTTP layer sees it: settings, per-IP and per-user connection limits, who may
//! follow which channel, and the change feed that turns the store's outbox into push messages.

use crate::extract::CurrentUser;
use crate::{ApiError, AppState};
use marquee_domain::EventId;
use marquee_push::{Channel, ChannelKind, PushHub};
use marquee_store::{ChangeKind, ChangeRecord};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Limits and timings of the push transports.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// SSE comment / WebSocket ping interval.
    pub heartbeat: Duration,
    /// Channels one connection may follow.
    pub max_channels: usize,
    /// Open push connections per client address.
    pub max_connections_per_ip: usize,
    /// Open push connections per signed-in user.
    pub max_connections_per_user: usize,
    /// Longest long poll a client may ask for.
    pub max_poll: Duration,
    /// Largest WebSocket message a client may send.
    pub max_ws_message_bytes: usize,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            heartbeat: Duration::from_secs(15),
            max_channels: 16,
            max_connections_per_ip: 1_000,
            max_connections_per_user: 32,
            max_poll: Duration::from_secs(60),
            max_ws_message_bytes: 4 * 1024,
        }
    }
}

/// The hub with its limits and the node's shutdown signal (push connections end on it, so a
/// graceful shutdown is not held open by clients that never hang up).
pub struct Push {
    pub hub: Arc<dyn PushHub>,
    pub settings: PushSettings,
    pub shutdown: watch::Receiver<bool>,
    open: Mutex<HashMap<Holder, usize>>,
    /// The outbox position the change feed has published up to.
    applied: watch::Sender<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    Ip(IpAddr),
    User(String),
}

impl Push {
    pub fn new(
        hub: Arc<dyn PushHub>,
        settings: PushSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Push {
            hub,
            settings,
            shutdown,
            open: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(0),
        }
    }

    /// The outbox position this node's change feed has applied up to (published on push,
    /// dropped from caches).
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Waits (briefly) until the change feed has published every change committed so far, so
    /// a subscription made right after a change sees it in history rather than missing it.
    async fn caught_up(&self, state: &AppState) -> Result<(), ApiError> {
        const PATIENCE: Duration = Duration::from_secs(2);
        let target = state.store.latest_change().await?;
        let mut applied = self.applied.subscribe();
        let caught_up = tokio::time::timeout(PATIENCE, async {
            let _ = applied
                .wait_for(|position| *position >= target)
                .await
                .map(|_| ());
        })
        .await;
        if caught_up.is_err() {
            tracing::warn!(
                target,
                "push: the change feed is lagging; subscribing anyway"
            );
        }
        Ok(())
    }

    /// Counts a connection against its address and user, or refuses it with 429.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        user: Option<&CurrentUser>,
    ) -> Result<ConnectionSlot, ApiError> {
        let mut holders = vec![(Holder::Ip(ip), self.settings.max_connections_per_ip)];
        if let Some(user) = user {
            holders.push((
                Holder::User(user.id.as_str().to_string()),
                self.settings.max_connections_per_user,
            ));
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (holder, limit) in &holders {
            if open.get(holder).copied().unwrap_or(0) >= *limit {
                return Err(ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    format!("at most {limit} push connections at once"),
                ));
            }
        }
        for (holder, _) in &holders {
            *open.entry(holder.clone()).or_insert(0) += 1;
        }
        metrics::gauge!("marquee_push_connections").increment(1.0);
        Ok(ConnectionSlot {
            push: Arc::clone(self),
            holders: holders.into_iter().map(|(holder, _)| holder).collect(),
        })
    }
}

/// An admitted connection; dropping it frees its place.
pub struct ConnectionSlot {
    push: Arc<Push>,
    holders: Vec<Holder>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .push
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for holder in &self.holders {
            if let Some(count) = open.get_mut(holder) {
                *count -= 1;
                if *count == 0 {
                    open.remove(holder);
                }
            }
        }
        metrics::gauge!("marquee_push_connections").decrement(1.0);
    }
}

/// Parses a channel name and checks the caller may follow it: seat channels of events they may
/// see (404 otherwise, like the event itself), their own `user:` channel only (401 anonymous,
/// 403 another user's), and queue channels by their unguessable token.
///
/// A seat channel is first brought up to date (the change feed has published what the store
/// committed), then seeded with the store's seat version, so a hub that restarted (and knows
/// nothing of the channel) resumes a client that loaded the snapshot instead of resetting it.
pub async fn authorize_channel(
    state: &AppState,
    raw: &str,
    viewer: Option<&CurrentUser>,
) -> Result<Channel, ApiError> {
    let channel = Channel::parse(raw).map_err(|error| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_channel",
            error.to_string(),
        )
    })?;
    match channel.kind() {
        ChannelKind::EventSeats => {
            let id = EventId::from_string(channel.subject());
            let event = state
                .events
                .get(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("event"))?;
            let may_see = crate::access::is_public(&event)
                || viewer.is_some_and(|viewer| viewer.may_manage(&event.owner_id));
            if !may_see {
                return Err(ApiError::not_found("event"));
            }
            state.push.caught_up(state).await?;
            let version = state.store.seat_version(&id).await?;
            state
                .push
                .hub
                .seed(&channel, u64::try_from(version).unwrap_or(0))
                .await
                .map_err(push_unavailable)?;
        }
        ChannelKind::EventStream => {
            let id = EventId::from_string(channel.subject());
            let event = state
                .events
                .get(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("event"))?;
            let Some(viewer) = viewer else {
                return Err(ApiError::unauthorized());
            };
            crate::live::may_watch(state, viewer, &event).await?;
            state.push.caught_up(state).await?;
            let version = state
                .store
                .stream(&id)
                .await?
                .map_or(0, |stream| stream.version);
            state
                .push
                .hub
                .seed(&channel, u64::try_from(version).unwrap_or(0))
                .await
                .map_err(push_unavailable)?;
        }
        ChannelKind::User => match viewer {
            None => return Err(ApiError::unauthorized()),
            Some(viewer) if viewer.id.as_str() == channel.subject() => {}
            Some(_) => {
                return Err(ApiError::forbidden(
                    "user channels are private to their user",
                ))
            }
        },
        ChannelKind::Queue => {
            // The token is checked (its signature, then the place) before anything is
            // subscribed: otherwise every made-up `queue:<name>` would cost the hub a channel.
            // A forged token costs an HMAC and no lookup; an unknown place is a 404 either way.
            match state
                .queue
                .room
                .status(channel.subject(), crate::queue::now_ms())
                .await
            {
                Ok(_) => {}
                Err(
                    marquee_waitroom::WaitroomError::MalformedToken
                    | marquee_waitroom::WaitroomError::UnknownToken,
                ) => return Err(ApiError::not_found("queue place")),
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(channel)
}

/// Resolves once the node is shutting down (or its shutdown signal is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here rather than across an await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

pub fn push_unavailable(error: marquee_push::PushError) -> ApiError {
    match error {
        // The node's hub is full of followed channels: a load condition, not an outage.
        marquee_push::PushError::TooManyChannels { .. } => ApiError::unavailable_saying(
            "push",
            "this node follows as many channels as it may; retry later",
        ),
        marquee_push::PushError::Backend(_) => ApiError::unavailable("push", error),
    }
}

/// Follows the change stream from its current end and publishes what fans and users see:
/// - every seat change on `event:{id}:seats`, at the change's seat version (so every node may
///   relay the same stream into a shared hub: the hub keeps each offset once);
/// - `order.confirmed`, `order.refunded` and `event.cancelled` on the user's channel;
/// - a `hold.expiring` reminder one minute before a hold lapses;
///
/// and forgets cached events that changed.
pub fn spawn_change_feed(state: AppState, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut after = loop {
            match state.store.latest_change().await {
                Ok(position) => {
                    state.push.applied.send_replace(position);
                    break position;
                }
                Err(error) => {
                    tracing::warn!(%error, "change feed: cannot read the outbox yet");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = crate::push::stopping(&mut stopped) => return,
                    }
                }
            }
        };
        loop {
            // The read waits (up to a quarter second) for the next change, so an idle feed
            // neither spins nor adds latency.
            let batch = tokio::select! {
                batch = state.changes.read(after, 500, Duration::from_millis(250)) => batch,
                _ = crate::push::stopping(&mut stopped) => return,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "change feed: reading the change stream failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = crate::push::stopping(&mut stopped) => return,
                    }
                    continue;
                }
            };
            let mut failed = false;
            for change in &batch {
                if let Err(error) = apply(&state, change).await {
                    // The hub is down: try the same change again rather than skip it.
                    tracing::warn!(%error, position = change.position, "change feed: publishing failed");
                    failed = true;
                    break;
                }
                after = change.position;
            }
            if !batch.is_empty() {
                state.push.applied.send_replace(after);
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = crate::push::stopping(&mut stopped) => return,
                }
            }
        }
    })
}

async fn apply(state: &AppState, change: &ChangeRecord) -> Result<(), marquee_push::PushError> {
    let payload = &change.payload;
    match change.kind {
        ChangeKind::EventCreated
        | ChangeKind::EventUpdated
        | ChangeKind::EventPublished
        | ChangeKind::EventCancelled => {
            state
                .events
                .forget(&EventId::from_string(change.entity_id.clone()))
                .await;
            Ok(())
        }
        ChangeKind::SeatsHeld | ChangeKind::SeatsAvailable | ChangeKind::SeatsSold => {
            state
                .seat_maps
                .forget(&EventId::from_string(change.entity_id.clone()));
            let Ok(channel) = Channel::event_seats(&change.entity_id) else {
                return Ok(());
            };
            let version = payload["version"].as_u64().unwrap_or(0);
            let mut data = json!({
                "seat_ids": payload["seat_ids"],
                "status": payload["status"],
            });
            if payload["general_admission"].is_object() {
                data["general_admission"] = payload["general_admission"].clone();
            }
            state
                .push
                .hub
                .publish_at(&channel, version, "seats", &data)
                .await?;
            notify_user(state, change).await
        }
        ChangeKind::StreamStatus => {
            let Ok(channel) = Channel::event_stream(&change.entity_id) else {
                return Ok(());
            };
            let version = payload["version"].as_u64().unwrap_or(0);
            let data = json!({
                "status": payload["status"],
                "problem": payload["problem"],
            });
            state
                .push
                .hub
                .publish_at(&channel, version, "stream", &data)
                .await
                .map(|_| ())
        }
        ChangeKind::UserRegistered | ChangeKind::VenueCreated => Ok(()),
    }
}

async fn notify_user(
    state: &AppState,
    change: &ChangeRecord,
) -> Result<(), marquee_push::PushError> {
    let payload = &change.payload;
    let Some(user) = payload["user_id"].as_str() else {
        return Ok(());
    };
    let Ok(channel) = Channel::user(user) else {
        return Ok(());
    };
    let event_id = &change.entity_id;
    let (kind, data): (&str, Value) = match (change.kind, payload["reason"].as_str()) {
        (ChangeKind::SeatsSold, _) => (
            "order.confirmed",
            json!({"order_id": payload["order_id"], "event_id": event_id}),
        ),
        (ChangeKind::SeatsAvailable, Some("event cancelled")) => (
            "event.cancelled",
            json!({"order_id": payload["order_id"], "event_id": event_id, "refunded": true}),
        ),
        (ChangeKind::SeatsAvailable, Some(_)) if payload["order_id"].is_string() => (
            "order.refunded",
            json!({"order_id": payload["order_id"], "event_id": event_id}),
        ),
        // The "expiring in a minute" reminder is a job (see `notifications`).
        _ => return Ok(()),
    };
    let key = format!("change:{}", change.position);
    state
        .push
        .hub
        .publish_unique(&channel, &key, kind, &data)
        .await
        .map(|_| ())
}
