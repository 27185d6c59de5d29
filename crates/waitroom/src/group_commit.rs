//! Per-room group commit: concurrent requests for one room queue in this process and go to the
//! backend together, one call per batch.
//!
//! A hot room on Redis is one slot on one Redis core, so its throughput is bounded by what one
//! script run costs per request. Most of that cost is per call (the round trip, `EVALSHA`'s
//! dispatch, loading and saving the room's state), so one call for many fans pays it once.
//!
//! The batching is adaptive and adds no timer: a request for a room with nothing in flight is
//! sent at once (a batch of one), and requests arriving while a batch is in flight wait and form
//! the next one. Under light load a request waits for nobody; under heavy load batches grow
//! until one call's time covers the arrivals meanwhile, up to `max_batch`.
//!
//! Each room has at most one batch in flight from this process, so the order of the requests
//! within a room is the order they reached [`GroupCommit::submit`], and the backend runs them in
//! that order. A room's entry in the map exists exactly while a flusher task serves it, so an
//! idle room costs nothing and a retired room is forgotten.
//!
//! The batch is sent by a task of its own, not by the first caller: a caller whose future is
//! dropped (a client hanging up) must not strand the requests queued behind it.

use crate::{Result, WaitroomError};
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;
use ulid::Ulid;

/// Sends one room's batch; returns one answer per request, in order. An `Err` fails the whole
/// batch (the call itself failed); an answer's own `Err` fails only that request.
pub(crate) type Flush<Req, Resp> =
    dyn Fn(Ulid, Vec<Req>) -> BoxFuture<'static, Result<Vec<Result<Resp>>>> + Send + Sync;

type Waiter<Resp> = oneshot::Sender<Result<Resp>>;

/// Per room with a flusher running: what waits for its next batch.
type Queues<Req, Resp> = HashMap<Ulid, VecDeque<(Req, Waiter<Resp>)>>;

struct Shared<Req, Resp> {
    max_batch: usize,
    rooms: Mutex<Queues<Req, Resp>>,
    flush: Box<Flush<Req, Resp>>,
    batches: AtomicU64,
    requests: AtomicU64,
}

impl<Req, Resp> Shared<Req, Resp> {
    fn rooms(&self) -> MutexGuard<'_, Queues<Req, Resp>> {
        // Nothing under this lock can leave the map half-updated, so a poisoned lock is usable.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How much batching happened: backend calls against the requests they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub calls: u64,
    pub requests: u64,
}

pub(crate) struct GroupCommit<Req, Resp> {
    shared: Arc<Shared<Req, Resp>>,
}

/// Removes a room's entry if its flusher ends without emptying it (a panic in `flush`): the
/// queued requests' senders drop with it, so their callers get an error instead of waiting for
/// a flusher that is gone, and the next request starts a new one.
struct Abandon<'a, Req, Resp> {
    shared: &'a Shared<Req, Resp>,
    event: Ulid,
    armed: bool,
}

impl<Req, Resp> Drop for Abandon<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.rooms().remove(&self.event);
        }
    }
}

impl<Req, Resp> GroupCommit<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    pub(crate) fn new(max_batch: usize, flush: Box<Flush<Req, Resp>>) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                max_batch: max_batch.max(1),
                rooms: Mutex::new(HashMap::new()),
                flush,
                batches: AtomicU64::new(0),
                requests: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            calls: self.shared.batches.load(Ordering::Relaxed),
            requests: self.shared.requests.load(Ordering::Relaxed),
        }
    }

    /// Queues `request` for `event`'s next batch and waits for its answer.
    pub(crate) async fn submit(&self, event: Ulid, request: Req) -> Result<Resp> {
        let (sender, receiver) = oneshot::channel();
        let start_flusher = {
            let mut rooms = self.shared.rooms();
            match rooms.get_mut(&event) {
                // A flusher serves the room: it takes this request with the next batch.
                Some(queue) => {
                    queue.push_back((request, sender));
                    false
                }
                None => {
                    rooms.insert(event, VecDeque::from([(request, sender)]));
                    true
                }
            }
        };
        if start_flusher {
            tokio::spawn(flusher(self.shared.clone(), event));
        }
        receiver.await.unwrap_or_else(|_| {
            Err(WaitroomError::Unavailable(
                "the batch carrying this request was lost".into(),
            ))
        })
    }
}

/// Sends `event`'s queued requests, a batch at a time, until none are left.
async fn flusher<Req, Resp>(shared: Arc<Shared<Req, Resp>>, event: Ulid) {
    let mut guard = Abandon {
        shared: &shared,
        event,
        armed: true,
    };
    loop {
        let batch: Vec<(Req, Waiter<Resp>)> = {
            let mut rooms = shared.rooms();
            let Some(queue) = rooms.get_mut(&event) else {
                // Only this task removes the entry; gone means a panic elsewhere cleaned up.
                guard.armed = false;
                return;
            };
            if queue.is_empty() {
                // Removed under the lock, so a request arriving now starts a new flusher.
                rooms.remove(&event);
                guard.armed = false;
                return;
            }
            let take = queue.len().min(shared.max_batch);
            queue.drain(..take).collect()
        };
        let (requests, waiters): (Vec<Req>, Vec<Waiter<Resp>>) = batch.into_iter().unzip();
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .requests
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        let expected = requests.len();
        match (shared.flush)(event, requests).await {
            Ok(answers) if answers.len() == expected => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    // A caller that went away no longer wants its answer; its effect stands.
                    let _ = waiter.send(answer);
                }
            }
            Ok(answers) => {
                let error = WaitroomError::Unavailable(format!(
                    "a batch of {expected} requests got {} answers",
                    answers.len()
                ));
                for waiter in waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn echo(max_batch: usize, seen: Arc<Mutex<Vec<Vec<u32>>>>) -> GroupCommit<u32, u32> {
        GroupCommit::new(
            max_batch,
            Box::new(move |_, requests: Vec<u32>| {
                let seen = seen.clone();
                Box::pin(async move {
                    // Long enough for the other callers to queue behind the first batch.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    seen.lock().expect("seen").push(requests.clone());
                    Ok(requests
                        .into_iter()
                        .map(|n| {
                            if n == 7 {
                                Err(WaitroomError::Invalid("seven"))
                            } else {
                                Ok(n * 2)
                            }
                        })
                        .collect())
                })
            }),
        )
    }

    #[tokio::test]
    async fn a_lone_request_goes_at_once_and_later_ones_share_calls_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(echo(4, seen.clone()));
        let event = Ulid::new();
        assert_eq!(batcher.submit(event, 1).await, Ok(2));
        assert_eq!(
            batcher.stats(),
            BatchStats {
                calls: 1,
                requests: 1
            }
        );
        let mut tasks = Vec::new();
        for n in 10..20u32 {
            let batcher = batcher.clone();
            tasks.push(tokio::spawn(async move { batcher.submit(event, n).await }));
            // Submitted in this order, one at a time, so the queue order is known.
            tokio::task::yield_now().await;
        }
        for (n, task) in (10..20u32).zip(tasks) {
            assert_eq!(task.await.expect("task"), Ok(n * 2));
        }
        let batches = seen.lock().expect("seen").clone();
        let flat: Vec<u32> = batches.iter().flatten().copied().collect();
        assert_eq!(flat[0], 1);
        assert_eq!(
            flat[1..],
            (10..20).collect::<Vec<_>>()[..],
            "in submission order"
        );
        assert!(batches.iter().all(|batch| batch.len() <= 4));
        assert!(batches.len() < 11, "{batches:?}");
        // The room's entry is gone once its queue drained.
        assert!(batcher.shared.rooms().is_empty());
    }

    #[tokio::test]
    async fn one_answer_fails_alone() {
        let batcher = Arc::new(echo(8, Arc::new(Mutex::new(Vec::new()))));
        let event = Ulid::new();
        let (a, b) = tokio::join!(batcher.submit(event, 7), batcher.submit(event, 8));
        assert_eq!(a, Err(WaitroomError::Invalid("seven")));
        assert_eq!(b, Ok(16));
    }
}
