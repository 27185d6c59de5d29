//! Workers: claim, run, settle.

use crate::{Backoff, Claim, Job, JobQueue, JobsError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// Where a worker reads the time it writes into jobs (`run_at`, claims).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock: what every node of a cluster agrees on.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: tests and simulations drive the job clock by hand
/// (claims, visibility timeouts, backoff), while the runtime's own timers run as usual.
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: std::sync::Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// Worth another attempt (a timeout, a 503, a refused connection).
    Retry(String),
    /// Will never succeed (a malformed payload, a 410 Gone): straight to the dead letters.
    Permanent(String),
}

impl JobFailure {
    fn message(&self) -> &str {
        match self {
            JobFailure::Retry(message) | JobFailure::Permanent(message) => message,
        }
    }
}

/// What runs a queue's jobs. It must be idempotent: a job runs at least once, and more than
/// once when a worker dies after the work but before recording it.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<(), JobFailure>;
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs run at once by this worker.
    pub concurrency: usize,
    /// How long a claim lasts; a job still running at 90 % of it is abandoned and retried, so
    /// it never runs twice at once.
    pub visibility: Duration,
    /// How often an idle worker looks for due jobs (an enqueue on this node wakes it at once).
    pub poll: Duration,
    pub backoff: Backoff,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 16,
            visibility: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            backoff: Backoff::default(),
        }
    }
}

/// How one run ended.
enum Outcome {
    Done(Claim),
    Failed(Job, JobFailure),
}

/// Runs the jobs of one queue with one handler.
#[derive(Clone)]
pub struct Worker {
    jobs: Arc<dyn JobQueue>,
    queue: String,
    handler: Arc<dyn JobHandler>,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl Worker {
    pub fn new(
        jobs: Arc<dyn JobQueue>,
        queue: impl Into<String>,
        handler: Arc<dyn JobHandler>,
        settings: WorkerSettings,
    ) -> Worker {
        Worker {
            jobs,
            queue: queue.into(),
            handler,
            settings,
            clock: Arc::new(SystemClock),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Worker {
        self.clock = clock;
        self
    }

    /// Wakes an idle worker (after an enqueue on this node) instead of waiting for its poll.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Claims what is due (up to the concurrency), runs it all and settles it; answers how many
    /// jobs ran. The step a test drives by hand; [`Worker::spawn`] pipelines the same steps.
    pub async fn tick(&self) -> Result<usize, JobsError> {
        let claimed = self
            .jobs
            .claim(
                &self.queue,
                self.settings.concurrency as u32,
                self.settings.visibility,
                self.clock.now(),
            )
            .await?;
        let count = claimed.len();
        let outcomes =
            futures::future::join_all(claimed.into_iter().map(|job| self.run(job))).await;
        let mut done = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Done(claim) => done.push(claim),
                Outcome::Failed(job, failure) => self.settle_failure(&job, &failure).await?,
            }
        }
        if !done.is_empty() {
            self.jobs.complete(&done, self.clock.now()).await?;
        }
        Ok(count)
    }

    async fn run(&self, job: Job) -> Outcome {
        let started = tokio::time::Instant::now();
        let limit = self.settings.visibility.mul_f64(0.9);
        let result = match tokio::time::timeout(limit, self.handler.run(&job)).await {
            Ok(result) => result,
            Err(_) => Err(JobFailure::Retry(format!(
                "still running after {} ms, 90 % of the visibility timeout",
                limit.as_millis()
            ))),
        };
        metrics::histogram!("marquee_job_run_seconds", "queue" => self.queue.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => Outcome::Done(job.claim()),
            Err(failure) => Outcome::Failed(job, failure),
        }
    }

    async fn settle_failure(&self, job: &Job, failure: &JobFailure) -> Result<(), JobsError> {
        let now = self.clock.now();
        let last = job.is_last_attempt() || matches!(failure, JobFailure::Permanent(_));
        if last {
            let reason = format!(
                "attempt {} of {}: {}",
                job.attempt,
                job.max_attempts,
                failure.message()
            );
            if self.jobs.bury(job.claim(), &reason, now).await? {
                metrics::counter!("marquee_jobs_dead_total", "queue" => self.queue.clone())
                    .increment(1);
                tracing::warn!(queue = %self.queue, job = job.id, error = %reason, "job dead-lettered");
            }
        } else {
            let delay = self
                .settings
                .backoff
                .delay(job.attempt, &mut rand::thread_rng());
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            if self
                .jobs
                .retry(job.claim(), at, failure.message(), now)
                .await?
            {
                metrics::counter!("marquee_jobs_retried_total", "queue" => self.queue.clone())
                    .increment(1);
                tracing::info!(
                    queue = %self.queue,
                    job = job.id,
                    attempt = job.attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    error = failure.message(),
                    "job failed; will retry"
                );
            }
        }
        Ok(())
    }

    /// Runs the queue until `stop` turns true: claims as permits free up, runs each job on its
    /// own task, and records completions in batches. On stop it claims nothing more and waits
    /// up to `grace` for the jobs in flight; any still running then lapse and run again
    /// elsewhere.
    pub fn spawn(self, mut stop: watch::Receiver<bool>, grace: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
            let (finished, mut completions) = mpsc::unbounded_channel::<Claim>();
            let completer = {
                let worker = self.clone();
                tokio::spawn(async move {
                    let mut batch = Vec::new();
                    while let Some(claim) = completions.recv().await {
                        batch.push(claim);
                        while batch.len() < 500 {
                            match completions.try_recv() {
                                Ok(claim) => batch.push(claim),
                                Err(_) => break,
                            }
                        }
                        worker.complete_batch(&mut batch).await;
                    }
                })
            };
            loop {
                if *stop.borrow() {
                    break;
                }
                // Wait for one free permit before claiming, so a claim never outruns them.
                let free = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => { drop(permit); permits.available_permits() }
                        Err(_) => break,
                    },
                    _ = stopped(&mut stop) => break,
                };
                let claimed = match self
                    .jobs
                    .claim(
                        &self.queue,
                        free as u32,
                        self.settings.visibility,
                        self.clock.now(),
                    )
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::warn!(queue = %self.queue, %error, "jobs: claim failed");
                        Vec::new()
                    }
                };
                if claimed.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.poll) => {}
                        _ = self.wake.notified() => {}
                        _ = stopped(&mut stop) => break,
                    }
                    continue;
                }
                for job in claimed {
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        break;
                    };
                    let worker = self.clone();
                    let finished = finished.clone();
                    tokio::spawn(async move {
                        match worker.run(job).await {
                            Outcome::Done(claim) => {
                                let _ = finished.send(claim);
                            }
                            Outcome::Failed(job, failure) => {
                                if let Err(error) = worker.settle_failure(&job, &failure).await {
                                    tracing::warn!(
                                        queue = %worker.queue,
                                        job = job.id,
                                        %error,
                                        "jobs: could not record a failure; the claim will lapse"
                                    );
                                }
                            }
                        }
                        drop(permit);
                    });
                }
            }
            let all = self.settings.concurrency.max(1) as u32;
            let _ = tokio::time::timeout(grace, permits.acquire_many(all)).await;
            drop(finished);
            let _ = completer.await;
        })
    }

    async fn complete_batch(&self, batch: &mut Vec<Claim>) {
        let count = batch.len() as u64;
        for attempt in 0..5u32 {
            match self.jobs.complete(batch, self.clock.now()).await {
                Ok(_) => {
                    metrics::counter!("marquee_jobs_completed_total", "queue" => self.queue.clone())
                        .increment(count);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    tracing::warn!(queue = %self.queue, %error, attempt, "jobs: completion failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        // The claims lapse and the jobs run again: at least once, never lost.
        batch.clear();
    }
}

/// Every `every`, publishes each queue's depth, oldest due age and dead letters as gauges, and
/// forgets done jobs older than `retention`.
pub fn spawn_stats_sampler(
    jobs: Arc<dyn JobQueue>,
    every: Duration,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = Utc::now();
            match jobs.stats(now).await {
                Ok(stats) => {
                    for queue in stats {
                        let name = queue.queue.clone();
                        metrics::gauge!("marquee_jobs_due", "queue" => name.clone())
                            .set(queue.due as f64);
                        metrics::gauge!("marquee_jobs_scheduled", "queue" => name.clone())
                            .set(queue.scheduled as f64);
                        metrics::gauge!("marquee_jobs_running", "queue" => name.clone())
                            .set(queue.running as f64);
                        metrics::gauge!("marquee_jobs_dead", "queue" => name.clone())
                            .set(queue.dead as f64);
                        metrics::gauge!("marquee_jobs_oldest_due_age_seconds", "queue" => name)
                            .set(queue.oldest_due_age.as_secs_f64());
                    }
                }
                Err(error) => tracing::warn!(%error, "jobs: could not read queue stats"),
            }
            let horizon = now - chrono::Duration::from_std(retention).unwrap_or_default();
            if let Err(error) = jobs.purge_done(horizon).await {
                tracing::warn!(%error, "jobs: could not purge done jobs");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    })
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}
