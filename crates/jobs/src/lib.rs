//! Durable background jobs: what must happen after a request has been answered (an e-mail, a
//! webhook, a reminder), done at least once, in order per key, and never lost.
//!
//! - A job is a row: a queue name, a JSON payload, an optional **ordering key** and an optional
//!   **de-duplication key**. Jobs of one key run one at a time in the order they were enqueued
//!   (a refund's e-mail never overtakes the confirmation's), including across retries: the next
//!   job of a key waits until the one before it has succeeded or been dead-lettered.
//! - A worker **claims** jobs for a **visibility timeout**. A worker that dies mid-job leaves its
//!   claim to lapse; the job then runs again, under a higher attempt number. The attempt number
//!   is the claim's fencing token: a worker that comes back after its claim lapsed cannot
//!   complete, retry or bury a job that someone else now holds.
//! - A failure is retried with **exponential backoff and jitter** ([`Backoff`]) until the job's
//!   **maximum attempts**; then, or at once for a failure the handler calls permanent, the job
//!   goes to the **dead-letter queue**, where `marquee jobs` lists, inspects, replays and drops it.
//! - [`JobQueue::enqueue_after`] enqueues the jobs a change-stream position produced and moves a
//!   named cursor in the same transaction, so a follower that crashes between the two neither
//!   loses nor doubles them, and many nodes following the same stream enqueue each job once.
//!
//! ## Why SQL on both sides, and PostgreSQL `SKIP LOCKED` rather than JetStream at scale
//!
//! [`SqlJobQueue`] is one implementation over `sqlx::Any`: SQLite embedded (a file of its own
//! beside the catalog's, so jobs never wait on the booking writer), PostgreSQL at scale (the
//! catalog's database). The jobs of this platform are born from changes committed in that
//! database, and three things decide the backend:
//! - **Per-key order.** In SQL it is one `NOT EXISTS` in the claim: a job is claimable when no
//!   earlier job of its key is still ready or running. On JetStream, order per key needs one
//!   consumer per key partition with a single message in flight (`max_ack_pending = 1`),
//!   because a NAK'd message redelivered after a later one breaks order; throughput then falls
//!   to one job per partition per round trip, and a poison job stalls its whole partition.
//! - **Operating the dead letters.** List, inspect, replay and drop are queries. A JetStream
//!   dead-letter queue is a second stream fed by advisories, and replaying one message means
//!   republishing it and deleting it by sequence.
//! - **One truth.** Enqueueing with the cursor of the change stream in one transaction needs
//!   the jobs in a transactional store; with JetStream it would take a de-duplication window
//!   and idempotent consumers to get the same guarantee.
//!
//! `FOR UPDATE SKIP LOCKED` lets workers on many nodes claim from one table without waiting on
//! each other's rows. `marquee-bench jobs` measures both engines beside RabbitMQ and JetStream
//! moving the same messages (BENCHMARKS.md).

mod backoff;
mod sql;
mod worker;

pub use crate::backoff::Backoff;
pub use crate::sql::SqlJobQueue;
pub use crate::worker::{
    spawn_stats_sampler, Clock, JobFailure, JobHandler, ManualClock, SystemClock, Worker,
    WorkerSettings,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// A job's id: it also orders jobs of one key (ids only grow).
pub type JobId = i64;

/// The largest payload a job may carry, serialised.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// The longest queue name, ordering key or de-duplication key.
pub const MAX_NAME_BYTES: usize = 200;
/// The most jobs one enqueue call accepts.
pub const MAX_BATCH: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the job's payload is {size} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")]
    PayloadTooLarge { size: usize },
    #[error("{what} is empty or longer than {MAX_NAME_BYTES} bytes")]
    BadName { what: &'static str },
    #[error("at most {MAX_BATCH} jobs may be enqueued at once, not {count}")]
    BatchTooLarge { count: usize },
    #[error("max_attempts must be at least 1")]
    NoAttempts,
    #[error("the stored job {id} is corrupt: {reason}")]
    Corrupt { id: JobId, reason: String },
    #[error("unsupported database URL {0} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub payload: serde_json::Value,
    /// Jobs with the same key (within the queue) run one at a time, in enqueue order.
    pub ordering_key: Option<String>,
    /// A second job with the same key (within the queue) is not created while the first is
    /// ready, running, dead, or done within the retention window; enqueue answers the first.
    pub dedupe_key: Option<String>,
    /// Not before this instant (a reminder); `None` is "now".
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
}

impl NewJob {
    /// A job on `queue` with the default of 8 attempts.
    pub fn new(queue: impl Into<String>, payload: serde_json::Value) -> NewJob {
        NewJob {
            queue: queue.into(),
            payload,
            ordering_key: None,
            dedupe_key: None,
            run_at: None,
            max_attempts: 8,
        }
    }

    pub fn ordered_by(mut self, key: impl Into<String>) -> NewJob {
        self.ordering_key = Some(key.into());
        self
    }

    pub fn deduplicated_by(mut self, key: impl Into<String>) -> NewJob {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn at(mut self, run_at: DateTime<Utc>) -> NewJob {
        self.run_at = Some(run_at);
        self
    }

    pub fn attempts(mut self, max_attempts: u32) -> NewJob {
        self.max_attempts = max_attempts;
        self
    }

    /// Checks the limits and serialises the payload.
    pub(crate) fn checked_payload(&self) -> Result<String, JobsError> {
        check_name("the queue name", Some(&self.queue))?;
        if self.ordering_key.is_some() {
            check_name("the ordering key", self.ordering_key.as_deref())?;
        }
        if self.dedupe_key.is_some() {
            check_name("the de-duplication key", self.dedupe_key.as_deref())?;
        }
        if self.max_attempts == 0 {
            return Err(JobsError::NoAttempts);
        }
        let payload = self.payload.to_string();
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(JobsError::PayloadTooLarge {
                size: payload.len(),
            });
        }
        Ok(payload)
    }
}

fn check_name(what: &'static str, name: Option<&str>) -> Result<(), JobsError> {
    match name {
        Some(name) if !name.is_empty() && name.len() <= MAX_NAME_BYTES => Ok(()),
        _ => Err(JobsError::BadName { what }),
    }
}

/// What enqueueing one job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A job with the same de-duplication key exists; this is its id.
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A claimed job, handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub ordering_key: Option<String>,
    pub payload: serde_json::Value,
    /// 1 on the first run. Also the claim's fencing token.
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at: DateTime<Utc>,
}

impl Job {
    pub fn claim(&self) -> Claim {
        Claim {
            id: self.id,
            attempt: self.attempt,
        }
    }

    /// True on the job's last allowed attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Which claim a completion, retry or burial is for: a worker whose claim lapsed holds an
/// attempt number that no longer matches, and its word is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub id: JobId,
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` (and for the jobs before it in its key).
    Ready,
    Running,
    /// In the dead-letter queue.
    Dead,
    /// Succeeded; kept only while its de-duplication key must keep answering.
    Done,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Dead => "dead",
            JobState::Done => "done",
        }
    }

    pub fn parse(raw: &str) -> Option<JobState> {
        [
            JobState::Ready,
            JobState::Running,
            JobState::Dead,
            JobState::Done,
        ]
        .into_iter()
        .find(|state| state.as_str() == raw)
    }
}

/// A job as stored, for operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub queue: String,
    pub state: JobState,
    pub ordering_key: Option<String>,
    pub dedupe_key: Option<String>,
    pub payload: serde_json::Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs whose ordering key starts with this (one webhook endpoint's deliveries).
    pub key_prefix: Option<String>,
    /// Only ids below this (the previous page's last id).
    pub before: Option<JobId>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// One queue's depth and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Ready and due now.
    pub due: u64,
    /// Ready but scheduled for later (backoff, reminders).
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
    /// How long the oldest due job has waited past its `run_at`.
    pub oldest_due_age: Duration,
}

/// Where jobs are kept. One suite (`tests/conformance.rs`) holds every implementation to the
/// same behaviour. Every method takes `now`, so time is the caller's (a worker's [`Clock`]).
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Adds jobs, all or none.
    async fn enqueue(
        &self,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, JobsError>;

    /// Adds jobs and moves the cursor `name` (made by [`JobQueue::cursor`]) from `from` to `to`,
    /// in one transaction, only if the cursor is still at `from`; answers false, adding
    /// nothing, when someone else moved it first.
    async fn enqueue_after(
        &self,
        cursor: &str,
        from: i64,
        to: i64,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<bool, JobsError>;

    /// Where the cursor `name` is; creates it at `initial` when it does not exist.
    async fn cursor(&self, name: &str, initial: i64) -> Result<i64, JobsError>;

    /// Claims up to `limit` due jobs of `queue` for `visibility`. First puts back jobs whose
    /// claim lapsed (and buries those that were on their last attempt).
    async fn claim(
        &self,
        queue: &str,
        limit: u32,
        visibility: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, JobsError>;

    /// Marks claimed jobs done; answers how many claims were still current.
    async fn complete(&self, claims: &[Claim], now: DateTime<Utc>) -> Result<u64, JobsError>;

    /// Puts a claimed job back to run again at `at`, recording `error`.
    async fn retry(
        &self,
        claim: Claim,
        at: DateTime<Utc>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, JobsError>;

    /// Moves a claimed job to the dead-letter queue, recording `error`.
    async fn bury(&self, claim: Claim, error: &str, now: DateTime<Utc>) -> Result<bool, JobsError>;

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobsError>;

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, JobsError>;

    /// Runs a dead job again from its first attempt, at the end of its key's line (a new id,
    /// answered). `None` when `id` is not a dead job.
    async fn replay(&self, id: JobId, now: DateTime<Utc>) -> Result<Option<JobId>, JobsError>;

    /// Deletes a dead job; false when `id` is not a dead job.
    async fn drop_dead(&self, id: JobId) -> Result<bool, JobsError>;

    /// Every queue's depth, oldest due age and dead letters.
    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, JobsError>;

    /// Forgets done jobs (kept for their de-duplication keys) last touched before `before`.
    async fn purge_done(&self, before: DateTime<Utc>) -> Result<u64, JobsError>;
}
