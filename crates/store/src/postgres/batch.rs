//! The booking hot path on PostgreSQL, batched per node: group commit, as the SQLite writer
//! does it, for a database across the network.
//!
//! A fan's hold used to cost six round trips (begin, the sold-seat check, the fences, the hold,
//! the outbox row, commit), an order eight, and the idempotent answer after each three more;
//! PostgreSQL spent most of its CPU on parsing, planning, logging and committing those
//! statements one fan at a time. Here every hold, hold end, order and idempotent answer of a
//! node goes through one queue. A task takes from it whatever has queued, up to
//! [`MAX_BATCH`] operations, and sends them as one JSON array to `marquee_booking_batch()`
//! (migration 0013): one call in one transaction, one commit for the batch, each operation
//! in a subtransaction of its own so a refused one undoes only itself. While
//! [`BatchOptions::in_flight`] batches are running, new operations wait and form the next
//! batch: under light load a batch is one operation and costs one round trip; under a surge
//! batches grow and the cost per fan falls, with no timer and no added delay.
//!
//! Failures:
//! - An operation refused for a reason its caller branches on (seats sold, capacity, hold no
//!   longer active, fenced, no such event) answers as the unbatched code did.
//! - An operation chosen as a deadlock victim (holds of two batches waiting on each other's
//!   standing-place counters) was undone alone; it is retried in a later batch.
//! - A batch that failed as a whole (connection lost, the database down) fails every
//!   operation in it with the same error, and, as for any write whose answer was lost, a
//!   caller retrying under its idempotency key finds out whether it committed.

use crate::StoreError;
use serde::Deserialize;
use serde_json::Value;
use sqlx::{AnyPool, Row};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;

/// At most this many operations a batch: each runs in a subtransaction that writes, and past
/// 64 of those in one transaction PostgreSQL's per-backend cache of them overflows, which
/// slows every other session's snapshots.
pub(crate) const MAX_BATCH: usize = 32;

/// How many times an operation undone as a deadlock victim or serialization failure is sent
/// again before its caller is told.
const RETRIES: usize = 3;

/// How a node batches its booking writes.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Batches running at once (each on a pooled connection). Fewer make larger batches and
    /// fewer commits; more cut the wait under light load.
    pub in_flight: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { in_flight: 4 }
    }
}

/// One operation of a batch: its JSON for `marquee_booking_batch()` and where its answer goes.
struct Pending {
    operation: Value,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// What the database answered for one operation.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    Failed(Failure),
    Done(Value),
}

/// An operation the database refused (and undid).
#[derive(Debug, Deserialize)]
pub(crate) struct Failure {
    pub(crate) sqlstate: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) constraint: Option<String>,
}

impl Failure {
    /// Refusals raised by the batch functions themselves (`RAISE EXCEPTION '<code>'`).
    fn raised(&self, code: &str) -> bool {
        self.sqlstate == "P0001" && self.message == code
    }

    fn is_transient(&self) -> bool {
        // deadlock_detected, serialization_failure, lock_not_available
        matches!(self.sqlstate.as_str(), "40P01" | "40001" | "55P03")
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        self.sqlstate == "23505"
    }

    /// The store's error for a refusal every operation shares.
    pub(crate) fn into_store_error(self) -> StoreError {
        if self.raised("seats_sold") {
            let seat_ids = self
                .detail
                .as_deref()
                .and_then(|detail| serde_json::from_str(detail).ok())
                .unwrap_or_default();
            return StoreError::SeatsSold { seat_ids };
        }
        if self.raised("capacity_exceeded") {
            return StoreError::CapacityExceeded {
                section: self.detail.unwrap_or_default(),
            };
        }
        if self.raised("hold_not_active") {
            return StoreError::HoldNotActive;
        }
        if self.raised("fenced") {
            return StoreError::Fenced;
        }
        if self.raised("not_found") {
            return StoreError::NotFound;
        }
        StoreError::Refused {
            sqlstate: self.sqlstate,
            message: self.message,
            constraint: self.constraint,
        }
    }
}

/// How many batches a node has sent and how many operations they carried: their ratio is
/// what batching saves (an operation retried after a deadlock counts each time it is sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBatchStats {
    pub batches: u64,
    pub operations: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    operations: AtomicU64,
}

/// The queue of a node's booking writes and the task that batches them.
pub(crate) struct WriteBatcher {
    queue: mpsc::UnboundedSender<Pending>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl WriteBatcher {
    /// Starts batching onto `pool`; commits that appended to the outbox wake `assigner`.
    pub(crate) fn start(pool: AnyPool, assigner: Arc<Notify>, options: BatchOptions) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            pool,
            pending,
            assigner,
            options.in_flight.max(1),
            Arc::clone(&counters),
        ));
        WriteBatcher {
            queue,
            task,
            counters,
        }
    }

    pub(crate) fn stats(&self) -> WriteBatchStats {
        WriteBatchStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            operations: self.counters.operations.load(Ordering::Relaxed),
        }
    }

    /// Runs `operation` in a batch; answers what the database answered for it, after the
    /// batch committed. Deadlock victims are sent again.
    pub(crate) async fn run(&self, operation: Value) -> Result<Result<Value, Failure>, StoreError> {
        let mut attempt = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(Pending {
                    operation: operation.clone(),
                    reply,
                })
                .map_err(|_| StoreError::WriterStopped)?;
            match answer.await.map_err(|_| StoreError::WriterStopped)?? {
                Answer::Done(value) => return Ok(Ok(value)),
                Answer::Failed(failure) if failure.is_transient() && attempt < RETRIES => {
                    attempt += 1;
                }
                Answer::Failed(failure) => return Ok(Err(failure)),
            }
        }
    }
}

impl Drop for WriteBatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    pool: AnyPool,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    assigner: Arc<Notify>,
    in_flight: usize,
    counters: Arc<Counters>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // A slot first, then the operations: while every slot is busy, operations queue and
        // the next batch takes them all.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = pending.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .operations
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let pool = pool.clone();
        let assigner = Arc::clone(&assigner);
        tokio::spawn(async move {
            execute(&pool, batch, &assigner).await;
            drop(slot);
        });
    }
}

/// Sends one batch and hands each operation its answer.
async fn execute(pool: &AnyPool, batch: Vec<Pending>, assigner: &Notify) {
    let operations = Value::Array(
        batch
            .iter()
            .map(|pending| pending.operation.clone())
            .collect(),
    );
    let answers = send(pool, &operations).await;
    match answers {
        Ok(answers) if answers.len() == batch.len() => {
            // Every operation that committed anything appended to the outbox (a hold end that
            // found the hold already ended appends nothing, and waking for it costs one probe).
            if answers
                .iter()
                .any(|answer| matches!(answer, Answer::Done(_)))
            {
                assigner.notify_one();
            }
            for (pending, answer) in batch.into_iter().zip(answers) {
                let _ = pending.reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let message = format!(
                "a batch of {} operations was answered {} times",
                batch.len(),
                answers.len()
            );
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(StoreError::Corrupt(message.clone())));
            }
        }
        Err(error) => {
            let shared = Arc::new(error);
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(StoreError::of_batch(Arc::clone(&shared))));
            }
        }
    }
}

async fn send(pool: &AnyPool, operations: &Value) -> Result<Vec<Answer>, sqlx::Error> {
    // In a transaction of its own rather than as one autocommitted statement: a pooled
    // connection can come back still inside a transaction that a cancelled request began (the
    // fault suite caught one: `there is already a transaction in progress`), and a batch run
    // there as "autocommit" would answer success for writes that commit only if, and when,
    // that stray transaction does — or vanish when the server ends it. Our own COMMIT is the
    // only success we report.
    let mut transaction = pool.begin().await?;
    // Text in, text out: the `Any` driver speaks neither JSON nor JSONB.
    let row = sqlx::query("SELECT marquee_booking_batch($1::jsonb)::text AS answers")
        .bind(operations.to_string())
        .fetch_one(&mut *transaction)
        .await?;
    transaction.commit().await?;
    let answers: String = row.try_get("answers")?;
    serde_json::from_str(&answers).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}
