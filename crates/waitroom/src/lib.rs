//! The virtual waiting room: the choke point in front of checkout during an on-sale surge.
//!
//! Each event whose waiting room is enabled gets a **room**. Fans who join before it opens (at
//! the event's on-sale time; joining starts a configurable time earlier) wait in a *pre-queue*
//! and are put in a uniformly random order at opening; later arrivals queue first come, first
//! served. The random order is the order of `HMAC-SHA256(room secret, user id)`, the secret drawn
//! from the operating system's CSPRNG when the room is created and never shown: a fan's draw is
//! fixed per account, so leaving and re-joining cannot re-roll it, and nobody (including the
//! fan) can predict it.
//!
//! Admission is paced by a credit that accrues at `admit_per_minute` and is capped at one
//! second's worth (at least one fan). The driver steps every 100 ms, so fans are let in a tenth
//! of a second's worth at a time, and a late step catches up without ever releasing a burst; it is optionally capped further by the number of admitted fans
//! whose pass is still live. An admitted fan receives a **pass**: a signed value bound to the
//! user, the event and the place, which expires after `pass_ttl_seconds` and is revoked when the
//! fan leaves. Fans who stop polling or listening for the idle timeout lose their place, so the
//! ETA stays honest. A room deactivates by itself when nobody has had to wait for the quiet
//! period, and reactivates when joins outrun the rate again; the organizer can pause, resume and
//! end it.
//!
//! Positions are O(log n): an appendable Fenwick tree over queue order in-process, a sorted set
//! on Redis. The ETA divides the position by the *measured* admission rate: an exponentially
//! weighted rate over the time the queue was backlogged, so a cap on active fans or a pause
//! shows in it, and an idle queue does not drag it down.
//!
//! The block is a state machine over time: every operation takes `now` (Unix milliseconds)
//! from the caller, so tests drive simulated minutes exactly, and nodes driving one Redis room
//! agree because each admission step accrues credit from the time of the previous one.
//!
//! Two implementations pass one conformance suite (`tests/conformance.rs`):
//! [`InProcessWaitingRoom`] for one node and [`RedisWaitingRoom`] (sorted sets; admit and every
//! other change one Lua script each, and each node's concurrent joins into a room one script
//! call per batch, run in order) so every node sees one queue.
//!
//! **Boundary:** ids are ULIDs; this crate knows nothing of HTTP, events or seats.

mod fenwick;
mod group_commit;
mod in_process;
mod pacing;
mod redis_room;
mod signing;

pub use group_commit::BatchStats;
pub use in_process::InProcessWaitingRoom;
pub use redis_room::{RedisWaitingRoom, DEFAULT_MAX_JOIN_BATCH};
pub use signing::{PassClaims, RoomSigner};

use async_trait::async_trait;
use std::time::Duration;
use ulid::Ulid;

/// Unix time in milliseconds.
pub type Millis = u64;

/// What the room needs to know about its event; sent with every join so changes the organizer
/// makes reach the room. The opening time is fixed once the room has opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub event: Ulid,
    /// When the room opens (the event's on-sale time).
    pub opens_at: Millis,
    /// When joining starts (before `opens_at`).
    pub join_from: Millis,
    pub admit_per_minute: u32,
    pub pass_ttl_ms: u64,
    /// Most admitted fans whose pass is still live; `None` for no cap.
    pub max_active: Option<u32>,
    /// When the room is retired (the event's start: nothing is sold after it). Its places and
    /// passes are then forgotten and its tokens are unknown.
    pub closes_at: Millis,
}

/// Server-wide timings, the same for every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomTimings {
    /// A fan who neither polls nor listens for this long loses their place.
    pub idle_timeout: Duration,
    /// A room where nobody had to wait for this long deactivates.
    pub quiet_period: Duration,
}

impl Default for RoomTimings {
    fn default() -> Self {
        RoomTimings {
            idle_timeout: Duration::from_secs(60),
            quiet_period: Duration::from_secs(120),
        }
    }
}

impl RoomTimings {
    fn idle_ms(&self) -> u64 {
        u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    fn quiet_ms(&self) -> u64 {
        u64::try_from(self.quiet_period.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The life of a room once it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomState {
    /// Admitting at the rate (or waiting to open).
    Active,
    /// The organizer stopped admissions; fans keep their places.
    Paused,
    /// Nobody had to wait for the quiet period: holds need no pass until joins outrun the rate.
    Inactive,
    /// The organizer ended the room: everyone may go through.
    Ended,
}

impl RoomState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomState::Active => "active",
            RoomState::Paused => "paused",
            RoomState::Inactive => "inactive",
            RoomState::Ended => "ended",
        }
    }

    fn from_code(code: u8) -> RoomState {
        match code {
            1 => RoomState::Paused,
            2 => RoomState::Inactive,
            3 => RoomState::Ended,
            _ => RoomState::Active,
        }
    }

    /// Whether holds need a pass (once the room has opened).
    pub fn gates_holds(self) -> bool {
        matches!(self, RoomState::Active | RoomState::Paused)
    }
}

/// Where a fan stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Before opening: one of `waiting` fans whose order is drawn at opening. `position` is
    /// `waiting` (the last place they could get), the ETA the expected wait of a random place.
    PreQueue {
        waiting: u64,
        opens_at: Millis,
        eta_ms: u64,
    },
    /// In line: `position` 1 is next. No ETA while the room is paused.
    Waiting { position: u64, eta_ms: Option<u64> },
    /// Through: the pass goes in `x-marquee-pass` until it expires.
    Admitted { pass: String, expires_at: Millis },
    /// The fan left; re-joining queues again at the back.
    Left,
    /// The fan stopped polling and lost the place, or the pass expired.
    Expired,
}

impl Standing {
    pub fn status(&self) -> &'static str {
        match self {
            Standing::PreQueue { .. } | Standing::Waiting { .. } => "waiting",
            Standing::Admitted { .. } => "admitted",
            Standing::Left => "left",
            Standing::Expired => "expired",
        }
    }

    /// The place in line: 0 once admitted.
    pub fn position(&self) -> Option<u64> {
        match self {
            Standing::PreQueue { waiting, .. } => Some(*waiting),
            Standing::Waiting { position, .. } => Some(*position),
            Standing::Admitted { .. } => Some(0),
            Standing::Left | Standing::Expired => None,
        }
    }

    pub fn eta_seconds(&self) -> Option<u64> {
        match self {
            Standing::PreQueue { eta_ms, .. } => Some(eta_ms.div_ceil(1000)),
            Standing::Waiting { eta_ms, .. } => eta_ms.map(|eta| eta.div_ceil(1000)),
            Standing::Admitted { .. } => Some(0),
            Standing::Left | Standing::Expired => None,
        }
    }
}

/// A fan's place: the token names it (and is the `queue:{token}` push channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub token: String,
    pub event: Ulid,
    pub standing: Standing,
    pub room: RoomState,
}

/// A fan let through by an admission step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub token: String,
    pub user: Ulid,
    pub pass: String,
    pub expires_at: Millis,
}

/// What one admission step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickOutcome {
    pub admitted: Vec<Admission>,
    /// Places lost to the idle timeout in this step.
    pub abandoned: u64,
    /// Fans left waiting (in the pre-queue, before opening).
    pub waiting: u64,
}

/// The organizer's view of a room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomStats {
    pub state: RoomState,
    pub opened: bool,
    pub opens_at: Millis,
    /// Fans in line (or in the pre-queue before opening).
    pub waiting: u64,
    /// Admitted fans whose pass is still live.
    pub active: u64,
    pub admitted_total: u64,
    pub abandoned_total: u64,
    pub admit_per_minute: u32,
    /// The measured admission rate while fans were waiting, per minute.
    pub measured_per_minute: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    End,
}

/// Why a pass does not let its bearer through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassRefusal {
    #[error("the pass is not a pass")]
    Malformed,
    #[error("the pass's signature does not match")]
    Forged,
    #[error("the pass is for another event")]
    OtherEvent,
    #[error("the pass belongs to another account")]
    OtherUser,
    #[error("the pass has expired")]
    Expired,
    #[error("the pass was revoked: its holder left the queue or the room was reset")]
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitroomError {
    /// Joining before the join window opens.
    #[error("the waiting room opens for joining at {join_from} (Unix ms)")]
    NotJoinableYet { join_from: Millis },
    /// A token that is not well formed.
    #[error("not a queue token")]
    MalformedToken,
    /// A well-formed token we did not sign, or whose room is gone.
    #[error("no such place in any queue")]
    UnknownToken,
    #[error("{0}")]
    Pass(PassRefusal),
    #[error("invalid waiting-room request: {0}")]
    Invalid(&'static str),
    #[error("the waiting-room backend is unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for WaitroomError {
    fn from(error: redis::RedisError) -> Self {
        WaitroomError::Unavailable(error.to_string())
    }
}

pub type Result<T, E = WaitroomError> = std::result::Result<T, E>;

#[async_trait]
pub trait WaitingRoom: Send + Sync + 'static {
    /// Which backend answers, for `/readyz` and logs.
    fn backend(&self) -> &'static str;

    /// Joins `user` to the room of `config.event` (creating the room), or returns the place the
    /// user already has. Counts as presence.
    async fn join(&self, config: &RoomConfig, user: Ulid, now: Millis) -> Result<Place>;

    /// Where the place named by `token` stands. Counts as presence.
    async fn status(&self, token: &str, now: Millis) -> Result<Place>;

    /// Gives the place up (revoking a pass it earned).
    async fn leave(&self, token: &str, now: Millis) -> Result<()>;

    /// Marks places as present (their fans listen on the push channel).
    async fn touch(&self, tokens: &[String], now: Millis) -> Result<()>;

    /// Rooms that exist, for the driver.
    async fn rooms(&self) -> Result<Vec<Ulid>>;

    /// One step of the room: opens it when due, expires passes and idle places, admits what the
    /// pacing allows, deactivates a quiet room.
    async fn tick(&self, event: Ulid, now: Millis) -> Result<TickOutcome>;

    /// Whether holds on this event need a pass right now.
    async fn requires_pass(&self, config: &RoomConfig, now: Millis) -> Result<bool>;

    /// Checks that `pass` lets `user` hold seats on `event` now.
    async fn check_pass(&self, pass: &str, event: Ulid, user: Ulid, now: Millis) -> Result<()>;

    /// Pause, resume or end the room (creating it if needed).
    async fn control(&self, config: &RoomConfig, action: Control, now: Millis)
        -> Result<RoomStats>;

    /// The room's figures, `None` when it does not exist.
    async fn stats(&self, event: Ulid, now: Millis) -> Result<Option<RoomStats>>;
}

/// A fresh room secret from the operating system's CSPRNG.
fn room_secret() -> [u8; 32] {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}
