//! The waiting room as the HTTP layer uses it: turning an event into a room configuration,
//! the pass check in front of holds, join rate limits, the wire shape of a place, and the
//! driver that steps every room, announces admissions on `queue:{token}` and keeps listening
//! fans present and informed.

use crate::{ApiError, AppState};
use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use marquee_domain::{Event, UserId};
use marquee_push::{Channel, ChannelKind};
use marquee_ratelimit::{Quota, RateLimiter};
use marquee_waitroom::{Millis, Place, RoomConfig, RoomStats, Standing, WaitingRoom};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ulid::Ulid;
use utoipa::ToSchema;

/// The header that carries a pass to the hold endpoint.
pub const PASS_HEADER: &str = "x-marquee-pass";

#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// How long before the on-sale fans may join (they are ordered at random at opening).
    pub join_window: Duration,
    /// Joins (and re-joins) per client IP per minute.
    pub joins_per_ip_per_minute: u32,
    /// Joins per account per minute.
    pub joins_per_user_per_minute: u32,
    /// How often fans listening on `queue:{token}` get their position (at most 20 s apart).
    pub update_interval: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            join_window: Duration::from_secs(30 * 60),
            joins_per_ip_per_minute: 60,
            joins_per_user_per_minute: 20,
            update_interval: Duration::from_secs(10),
        }
    }
}

/// The waiting room and what guards it.
pub struct Queue {
    pub room: Arc<dyn WaitingRoom>,
    pub settings: QueueSettings,
    /// Counts joins per IP and per account: on Redis when the room is, so a fan cannot spread
    /// joins over nodes.
    join_limits: Arc<dyn RateLimiter>,
}

fn per_minute(count: u32) -> Result<Quota, marquee_ratelimit::QuotaError> {
    Quota::new(count.max(1), Duration::from_secs(60))
}

impl Queue {
    pub fn new(
        room: Arc<dyn WaitingRoom>,
        settings: QueueSettings,
        join_limits: Arc<dyn RateLimiter>,
    ) -> Queue {
        Queue {
            room,
            settings,
            join_limits,
        }
    }

    /// Refuses a join beyond the per-IP or per-account rate with 429 and `Retry-After`.
    pub async fn check_join_rate(&self, ip: IpAddr, user: &UserId) -> Result<(), ApiError> {
        let checks = [
            (
                format!("queue-join:ip:{ip}"),
                self.settings.joins_per_ip_per_minute,
            ),
            (
                format!("queue-join:user:{user}"),
                self.settings.joins_per_user_per_minute,
            ),
        ];
        for (key, per_minute_count) in checks {
            let Ok(quota) = per_minute(per_minute_count) else {
                continue; // finer than one join per microsecond: no limit worth counting
            };
            if let Some(wait) =
                crate::rate_limit::wait_required(self.join_limits.as_ref(), &key, quota).await
            {
                return Err(ApiError::rate_limited(wait));
            }
        }
        Ok(())
    }

    /// The room of `event`, or 404 `waiting_room_disabled`.
    pub fn config(&self, event: &Event) -> Result<RoomConfig, ApiError> {
        let settings = event.details.waiting_room;
        if !settings.enabled {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "waiting_room_disabled",
                "this event has no waiting room",
            ));
        }
        let id = Ulid::from_string(event.id.as_str()).map_err(|_| ApiError::not_found("event"))?;
        let opens_at = millis(event.details.on_sale_at);
        let window = u64::try_from(self.settings.join_window.as_millis()).unwrap_or(u64::MAX);
        Ok(RoomConfig {
            event: id,
            opens_at,
            join_from: opens_at.saturating_sub(window),
            admit_per_minute: settings.admit_per_minute,
            pass_ttl_ms: u64::from(settings.pass_ttl_seconds) * 1000,
            max_active: settings.max_active,
            closes_at: millis(event.details.starts_at),
        })
    }

    /// Lets a hold through only with a valid pass while the event's room gates holds.
    pub async fn check_hold(
        &self,
        event: &Event,
        user: &UserId,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        if !event.details.waiting_room.enabled {
            return Ok(());
        }
        let config = self.config(event)?;
        let now = now_ms();
        if !self.room.requires_pass(&config, now).await? {
            return Ok(());
        }
        let Some(pass) = headers.get(PASS_HEADER) else {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "queue_required",
                "this on-sale has a waiting room: join it and send your pass in x-marquee-pass",
            )
            .with_detail("reason", "missing")
            .with_detail("queue", format!("/api/v1/events/{}/queue", event.id)));
        };
        let pass = pass.to_str().unwrap_or("");
        let user = Ulid::from_string(user.as_str()).map_err(|_| ApiError::not_found("user"))?;
        self.room
            .check_pass(pass, config.event, user, now)
            .await
            .map_err(ApiError::from)
    }
}

pub fn now_ms() -> Millis {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

pub fn millis(at: DateTime<Utc>) -> Millis {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

fn rfc3339(ms: Millis) -> Option<String> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A place in a waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePlaceBody {
    /// Names the place: `GET /api/v1/queue/{token}`, push channel `queue:{token}`.
    pub token: String,
    pub event_id: String,
    /// `waiting`, `admitted`, `left` (the fan left) or `expired` (the place was lost to
    /// inactivity, or the pass ran out): join again.
    pub status: &'static str,
    /// 1 is next; 0 once admitted. Before opening: the size of the pre-queue (places are drawn
    /// at random at opening).
    pub position: Option<u64>,
    pub eta_seconds: Option<u64>,
    /// Once admitted: send it as `x-marquee-pass` with holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_expires_at: Option<String>,
    /// Before opening: when the order is drawn and admissions start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<String>,
    /// The room: `active`, `paused`, `inactive` (no waiting needed) or `ended`.
    pub room: &'static str,
}

impl QueuePlaceBody {
    pub fn new(place: &Place) -> QueuePlaceBody {
        let (pass, pass_expires_at) = match &place.standing {
            Standing::Admitted { pass, expires_at } => (Some(pass.clone()), rfc3339(*expires_at)),
            _ => (None, None),
        };
        let opens_at = match &place.standing {
            Standing::PreQueue { opens_at, .. } => rfc3339(*opens_at),
            _ => None,
        };
        QueuePlaceBody {
            token: place.token.clone(),
            event_id: place.event.to_string(),
            status: place.standing.status(),
            position: place.standing.position(),
            eta_seconds: place.standing.eta_seconds(),
            pass,
            pass_expires_at,
            opens_at,
            room: place.room.as_str(),
        }
    }
}

/// The organizer's view of a waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatsBody {
    pub event_id: String,
    /// `active`, `paused`, `inactive`, `ended`, or `not_started` before anyone joined.
    pub state: &'static str,
    pub opened: bool,
    pub opens_at: Option<String>,
    pub waiting: u64,
    /// Admitted fans whose pass is still live.
    pub active: u64,
    pub admitted_total: u64,
    pub abandoned_total: u64,
    pub admit_per_minute: u32,
    /// Measured while fans were waiting.
    pub measured_admit_per_minute: f64,
}

impl QueueStatsBody {
    pub fn new(event: &Event, stats: Option<RoomStats>) -> QueueStatsBody {
        let settings = event.details.waiting_room;
        match stats {
            Some(stats) => QueueStatsBody {
                event_id: event.id.to_string(),
                state: stats.state.as_str(),
                opened: stats.opened,
                opens_at: rfc3339(stats.opens_at),
                waiting: stats.waiting,
                active: stats.active,
                admitted_total: stats.admitted_total,
                abandoned_total: stats.abandoned_total,
                admit_per_minute: stats.admit_per_minute,
                measured_admit_per_minute: (stats.measured_per_minute * 10.0).round() / 10.0,
            },
            None => QueueStatsBody {
                event_id: event.id.to_string(),
                state: "not_started",
                opened: false,
                opens_at: rfc3339(millis(event.details.on_sale_at)),
                waiting: 0,
                active: 0,
                admitted_total: 0,
                abandoned_total: 0,
                admit_per_minute: settings.admit_per_minute,
                measured_admit_per_minute: 0.0,
            },
        }
    }
}

const STEP: Duration = Duration::from_millis(100);
/// Rooms with nobody waiting are stepped this often (they only need to notice quiet).
const IDLE_STEP: Duration = Duration::from_secs(1);
const PRESENCE_STEP: Duration = Duration::from_secs(1);

/// Steps every room: admissions are announced at once on `queue:{token}`; fans listening on
/// this node are marked present every second and told their position every update interval.
pub fn spawn_queue_driver(state: AppState, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let queue = state.queue.clone();
        let mut ticker = tokio::time::interval(STEP);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_until: HashMap<Ulid, tokio::time::Instant> = HashMap::new();
        let mut announced: HashMap<Ulid, Announced> = HashMap::new();
        let mut last_presence = tokio::time::Instant::now();
        let mut last_update = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::push::stopping(&mut stopped) => return,
            }
            let started = tokio::time::Instant::now();
            let rooms = match queue.room.rooms().await {
                Ok(rooms) => rooms,
                Err(error) => {
                    tracing::warn!(%error, "queue driver: listing rooms failed");
                    continue;
                }
            };
            for event in rooms {
                if idle_until.get(&event).is_some_and(|until| *until > started) {
                    continue;
                }
                match queue.room.tick(event, now_ms()).await {
                    Ok(outcome) => {
                        metrics::counter!("marquee_queue_admitted_total")
                            .increment(outcome.admitted.len() as u64);
                        metrics::counter!("marquee_queue_abandoned_total")
                            .increment(outcome.abandoned);
                        metrics::gauge!("marquee_queue_waiting", "event" => event.to_string())
                            .set(outcome.waiting as f64);
                        if outcome.waiting == 0 && outcome.admitted.is_empty() {
                            idle_until.insert(event, started + IDLE_STEP);
                        } else {
                            idle_until.remove(&event);
                        }
                        for admission in &outcome.admitted {
                            announce_admission(&state, event, admission).await;
                        }
                        announce_stats(&state, event, started, &mut announced).await;
                    }
                    Err(error) => tracing::warn!(%error, %event, "queue driver: step failed"),
                }
            }
            if started.duration_since(last_presence) >= PRESENCE_STEP {
                last_presence = started;
                let listened = listened_tokens(&state);
                if !listened.is_empty() {
                    if let Err(error) = queue.room.touch(&listened, now_ms()).await {
                        tracing::warn!(%error, "queue driver: presence update failed");
                    }
                }
                if started.duration_since(last_update) >= queue.settings.update_interval {
                    last_update = started;
                    for token in &listened {
                        publish_place(&state, token).await;
                    }
                }
            }
        }
    })
}

/// What the organizer was last told about a room, and when.
struct Announced {
    at: tokio::time::Instant,
    figures: (u64, u64, u64, &'static str),
}

/// At most once a second, and only when they changed, the room's figures go to its organizer's
/// `user:{id}` channel as `queue.stats` (the dashboard follows it). Keyed per second, so several
/// nodes driving one room announce it once.
async fn announce_stats(
    state: &AppState,
    event: Ulid,
    now: tokio::time::Instant,
    announced: &mut HashMap<Ulid, Announced>,
) {
    if announced
        .get(&event)
        .is_some_and(|last| now.duration_since(last.at) < Duration::from_secs(1))
    {
        return;
    }
    let Ok(Some(stats)) = state.queue.room.stats(event, now_ms()).await else {
        return;
    };
    let figures = (
        stats.waiting,
        stats.active,
        stats.admitted_total,
        stats.state.as_str(),
    );
    if announced
        .get(&event)
        .is_some_and(|last| last.figures == figures)
    {
        return;
    }
    announced.insert(event, Announced { at: now, figures });
    let id = marquee_domain::EventId::from_string(event.to_string());
    let Ok(Some(stored)) = state.events.get(&id).await else {
        return;
    };
    let Ok(channel) = Channel::user(stored.owner_id.as_str()) else {
        return;
    };
    let body = serde_json::json!({
        "event_id": event.to_string(),
        "state": stats.state.as_str(),
        "waiting": stats.waiting,
        "active": stats.active,
        "admitted_total": stats.admitted_total,
        "abandoned_total": stats.abandoned_total,
    });
    let key = format!("queue-stats:{event}:{}", now_ms() / 1000);
    if let Err(error) = state
        .push
        .hub
        .publish_unique(&channel, &key, "queue.stats", &body)
        .await
    {
        tracing::warn!(%error, "queue driver: announcing room figures failed");
    }
}

fn listened_tokens(state: &AppState) -> Vec<String> {
    state
        .push
        .hub
        .listened(ChannelKind::Queue)
        .iter()
        .map(|channel| channel.subject().to_string())
        .collect()
}

async fn announce_admission(
    state: &AppState,
    event: Ulid,
    admission: &marquee_waitroom::Admission,
) {
    let place = Place {
        token: admission.token.clone(),
        event,
        standing: Standing::Admitted {
            pass: admission.pass.clone(),
            expires_at: admission.expires_at,
        },
        room: marquee_waitroom::RoomState::Active,
    };
    publish(state, &place, "queue.admitted").await;
}

async fn publish_place(state: &AppState, token: &str) {
    match state.queue.room.status(token, now_ms()).await {
        Ok(mut place) => {
            // Published on the channel the fan listens on: the token it holds, not the one the
            // room signed afresh (which names the current key, another after a rotation).
            place.token = token.to_string();
            let kind = match place.standing {
                Standing::Admitted { .. } => "queue.admitted",
                _ => "queue.position",
            };
            publish(state, &place, kind).await;
        }
        Err(error) => tracing::debug!(%error, "queue driver: no place for a listened token"),
    }
}

async fn publish(state: &AppState, place: &Place, kind: &str) {
    let Ok(channel) = Channel::queue(&place.token) else {
        return;
    };
    let body = match serde_json::to_value(QueuePlaceBody::new(place)) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "queue driver: encoding a place failed");
            return;
        }
    };
    if let Err(error) = state.push.hub.publish(&channel, kind, &body).await {
        tracing::warn!(%error, "queue driver: publishing failed");
    }
}
