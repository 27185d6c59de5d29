//! Workers with the job clock paused: backoff timing, dead letters and replay, lapsed claims,
//! time limits. The job clock (what claims, visibility timeouts and backoff are measured in) is
//! a [`ManualClock`] the test moves; tokio's own clock is left alone, because tokio's paused
//! time jumps to the next timer whenever every task waits — and a task waiting on SQLite's
//! thread or a connection being returned to the pool would then see its acquire timeout fire.

mod common;

use common::{Engine, Harness};
use marquee_jobs::{
    Backoff, Job, JobFailure, JobFilter, JobHandler, JobQueue, JobState, ManualClock, NewJob,
    Worker, WorkerSettings,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fails while `failing` is set, recording when (by the job clock) each attempt ran.
struct Flaky {
    failing: AtomicBool,
    attempts: Mutex<Vec<(u32, chrono::DateTime<chrono::Utc>)>>,
    clock: Arc<ManualClock>,
    permanent: bool,
}

#[async_trait::async_trait]
impl JobHandler for Flaky {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        use marquee_jobs::Clock;
        self.attempts
            .lock()
            .expect("lock")
            .push((job.attempt, self.clock.now()));
        match (self.failing.load(Ordering::SeqCst), self.permanent) {
            (false, _) => Ok(()),
            (true, false) => Err(JobFailure::Retry("SMTP 451 try again later".into())),
            (true, true) => Err(JobFailure::Permanent("HTTP 410 Gone".into())),
        }
    }
}

fn settings(backoff: Backoff) -> WorkerSettings {
    WorkerSettings {
        concurrency: 4,
        visibility: Duration::from_secs(30),
        poll: Duration::from_millis(100),
        backoff,
    }
}

fn flaky(clock: &Arc<ManualClock>, permanent: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        failing: AtomicBool::new(true),
        attempts: Mutex::new(Vec::new()),
        clock: clock.clone(),
        permanent,
    })
}

#[tokio::test]
async fn a_poison_job_backs_off_exponentially_then_is_dead_lettered_and_replays() {
    let harness = paused().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let handler = flaky(&clock, false);
    let worker = Worker::new(
        harness.jobs.clone(),
        "mail",
        handler.clone(),
        settings(Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(10),
            jitter: 0.0,
        }),
    )
    .with_clock(clock.clone());
    let id = harness
        .jobs
        .enqueue(
            &[NewJob::new("mail", json!({"to": "fan"})).attempts(5)],
            clock_now(&clock),
        )
        .await
        .expect("enqueue")[0]
        .id();
    // Each failure waits 2 s, 4 s, 8 s, then the cap of 10 s; the worker looks every 500 ms.
    for _ in 0..100 {
        worker.tick().await.expect("tick");
        clock.advance(Duration::from_millis(500));
    }
    let attempts = handler.attempts.lock().expect("lock").clone();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    let gaps: Vec<i64> = attempts
        .windows(2)
        .map(|pair| (pair[1].1 - pair[0].1).num_milliseconds())
        .collect();
    assert_eq!(gaps, [2_000, 4_000, 8_000, 10_000]);
    let dead = harness.jobs.get(id).await.expect("get").expect("job");
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("attempt 5 of 5: SMTP 451 try again later")
    );
    let listed = harness
        .jobs
        .list(&JobFilter {
            state: Some(JobState::Dead),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    // The fault is fixed; the operator replays the dead letter and it goes through.
    handler.failing.store(false, Ordering::SeqCst);
    let replayed = harness
        .jobs
        .replay(id, clock_now(&clock))
        .await
        .expect("replay")
        .expect("was dead");
    assert_eq!(worker.tick().await.expect("tick"), 1);
    assert_eq!(harness.jobs.get(replayed).await.expect("get"), None);
    assert_eq!(
        handler.attempts.lock().expect("lock").last().map(|a| a.0),
        Some(1)
    );
    harness.finish().await;
}

#[tokio::test]
async fn jitter_spreads_retries_within_their_share_of_the_delay() {
    let harness = paused().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let handler = flaky(&clock, false);
    let worker = Worker::new(
        harness.jobs.clone(),
        "webhooks",
        handler.clone(),
        WorkerSettings {
            concurrency: 50,
            ..settings(Backoff {
                base: Duration::from_secs(10),
                cap: Duration::from_secs(60),
                jitter: 0.5,
            })
        },
    )
    .with_clock(clock.clone());
    let now = clock_now(&clock);
    let batch: Vec<NewJob> = (0..40).map(|n| NewJob::new("webhooks", json!(n))).collect();
    let ids: Vec<i64> = harness
        .jobs
        .enqueue(&batch, now)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|enqueued| enqueued.id())
        .collect();
    assert_eq!(worker.tick().await.expect("tick"), 40);
    let mut delays = Vec::new();
    for id in ids {
        let job = harness.jobs.get(id).await.expect("get").expect("job");
        delays.push((job.run_at - now).num_milliseconds());
    }
    assert!(
        delays.iter().all(|delay| (5_000..=10_000).contains(delay)),
        "{delays:?}"
    );
    let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
    assert!(
        distinct.len() > 20,
        "jitter spread only {} ways",
        distinct.len()
    );
    harness.finish().await;
}

#[tokio::test]
async fn a_permanent_failure_goes_straight_to_the_dead_letters() {
    let harness = paused().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let handler = flaky(&clock, true);
    let worker = Worker::new(
        harness.jobs.clone(),
        "webhooks",
        handler.clone(),
        settings(Backoff::default()),
    )
    .with_clock(clock.clone());
    let id = harness
        .jobs
        .enqueue(&[NewJob::new("webhooks", json!({}))], clock_now(&clock))
        .await
        .expect("enqueue")[0]
        .id();
    assert_eq!(worker.tick().await.expect("tick"), 1);
    let job = harness.jobs.get(id).await.expect("get").expect("job");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(
        job.last_error.as_deref(),
        Some("attempt 1 of 8: HTTP 410 Gone")
    );
    harness.finish().await;
}

/// Runs forever on its first attempt (a worker that hangs or was killed), then succeeds.
struct HangsOnce {
    runs: tokio::sync::watch::Sender<u32>,
}

#[async_trait::async_trait]
impl JobHandler for HangsOnce {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        self.runs.send_modify(|runs| *runs += 1);
        if job.attempt == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_it_to_run_again_elsewhere() {
    let harness = paused().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let handler = Arc::new(HangsOnce {
        runs: tokio::sync::watch::Sender::new(0),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let doomed = Worker::new(
        harness.jobs.clone(),
        "mail",
        handler.clone(),
        settings(Backoff::default()),
    )
    .with_clock(clock.clone())
    .spawn(stopped, Duration::from_secs(1));
    let id = harness
        .jobs
        .enqueue(&[NewJob::new("mail", json!("confirm"))], clock_now(&clock))
        .await
        .expect("enqueue")[0]
        .id();
    handler
        .runs
        .subscribe()
        .wait_for(|runs| *runs > 0)
        .await
        .expect("the handler lives");
    // Killed mid-job: its task is gone, its claim stays behind.
    doomed.abort();
    drop(stop);
    let job = harness.jobs.get(id).await.expect("get").expect("job");
    assert_eq!((job.state, job.attempt), (JobState::Running, 1));
    let rescuer = Worker::new(
        harness.jobs.clone(),
        "mail",
        handler.clone(),
        settings(Backoff::default()),
    )
    .with_clock(clock.clone());
    assert_eq!(
        rescuer.tick().await.expect("tick"),
        0,
        "the claim still holds"
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(rescuer.tick().await.expect("tick"), 1);
    assert_eq!(*handler.runs.borrow(), 2);
    assert_eq!(harness.jobs.get(id).await.expect("get"), None);
    harness.finish().await;
}

/// Takes a minute, much longer than its claim.
struct Slow;

#[async_trait::async_trait]
impl JobHandler for Slow {
    async fn run(&self, _job: &Job) -> Result<(), JobFailure> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_job_past_its_claim_is_abandoned_and_retried_never_run_twice_at_once() {
    let harness = paused().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let worker = Worker::new(
        harness.jobs.clone(),
        "mail",
        Arc::new(Slow),
        WorkerSettings {
            visibility: Duration::from_secs(1),
            ..settings(Backoff::default())
        },
    )
    .with_clock(clock.clone());
    let id = harness
        .jobs
        .enqueue(&[NewJob::new("mail", json!({}))], clock_now(&clock))
        .await
        .expect("enqueue")[0]
        .id();
    worker.tick().await.expect("tick");
    // The worker gave up on its own, at 90 % of the claim, and put the job back for a retry:
    // its claim never lapsed with the job still running somewhere.
    let job = harness.jobs.get(id).await.expect("get").expect("job");
    assert_eq!((job.state, job.attempt), (JobState::Ready, 1));
    assert!(job.locked_until.is_none(), "{job:?}");
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|error| error.contains("90 % of the visibility timeout")),
        "{job:?}"
    );
    harness.finish().await;
}

#[tokio::test]
async fn a_spawned_worker_finishes_its_jobs_in_flight_when_stopped() {
    let harness = Harness::open(Engine::Sqlite).await;
    /// Runs until released, so the worker is stopped with its jobs in flight.
    struct Steady {
        started: tokio::sync::watch::Sender<usize>,
        release: tokio::sync::watch::Receiver<bool>,
    }
    #[async_trait::async_trait]
    impl JobHandler for Steady {
        async fn run(&self, _job: &Job) -> Result<(), JobFailure> {
            self.started.send_modify(|started| *started += 1);
            let mut release = self.release.clone();
            let _ = release.wait_for(|released| *released).await;
            Ok(())
        }
    }
    let (release, released) = tokio::sync::watch::channel(false);
    let steady = Arc::new(Steady {
        started: tokio::sync::watch::Sender::new(0),
        release: released,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = Worker::new(
        harness.jobs.clone(),
        "mail",
        steady.clone(),
        settings(Backoff::default()),
    );
    let waker = worker.waker();
    let task = worker.spawn(stopped, Duration::from_secs(10));
    let batch: Vec<NewJob> = (0..4).map(|n| NewJob::new("mail", json!(n))).collect();
    harness
        .jobs
        .enqueue(&batch, chrono::Utc::now())
        .await
        .expect("enqueue");
    waker.notify_one();
    steady
        .started
        .subscribe()
        .wait_for(|started| *started == 4)
        .await
        .expect("the handler lives");
    // Stopped with all four in flight; they finish after the stop, and are recorded.
    stop.send_replace(true);
    release.send_replace(true);
    task.await.expect("worker");
    let left = harness
        .jobs
        .list(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    harness.finish().await;
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use marquee_jobs::Clock;
    clock.now()
}

async fn paused() -> Harness {
    Harness::open(Engine::Sqlite).await
}
