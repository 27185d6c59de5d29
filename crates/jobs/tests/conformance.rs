//! One suite for every job queue: SQLite and PostgreSQL, each test on data of its own.

mod common;

use chrono::{DateTime, Utc};
use common::{Engine, Harness};
use marquee_jobs::{
    Backoff, Enqueued, Job, JobFailure, JobFilter, JobHandler, JobQueue, JobState, JobsError,
    NewJob, SqlJobQueue, Worker, WorkerSettings, MAX_PAYLOAD_BYTES,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + seconds, 0).expect("time")
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|job| job.id).collect()
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let harness = super::Harness::open(super::Engine::Sqlite).await;
                    super::$test(&harness).await;
                    harness.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let harness = super::Harness::open(super::Engine::Postgres).await;
                    super::$test(&harness).await;
                    harness.finish().await;
                }
            )*
        }
    };
}

conformance!(
    a_job_is_claimed_once_with_its_payload_and_gone_once_complete,
    jobs_of_one_key_run_one_at_a_time_in_enqueue_order_across_retries,
    a_lapsed_claim_runs_again_and_the_old_claim_is_fenced_off,
    a_claim_that_lapses_on_the_last_attempt_is_dead_lettered,
    a_retry_waits_for_its_time_and_records_the_error,
    dead_letters_are_listed_replayed_at_the_end_of_the_line_and_dropped,
    a_deduplication_key_answers_the_first_job_until_purged,
    enqueue_after_moves_the_cursor_with_the_jobs_once_across_followers,
    bad_jobs_are_refused_and_nothing_of_their_batch_is_kept,
    stats_count_each_state_and_the_oldest_due_age,
    per_key_order_holds_with_many_workers_at_once,
    a_second_process_on_the_same_data_sees_the_same_jobs,
);

async fn a_job_is_claimed_once_with_its_payload_and_gone_once_complete(harness: &Harness) {
    let jobs = &harness.jobs;
    let payload = json!({"order_id": "o1", "amounts": [1, 2.5], "note": "✓ ünïcode"});
    let enqueued = jobs
        .enqueue(&[NewJob::new("mail", payload.clone())], at(0))
        .await
        .expect("enqueue");
    let Enqueued::Created(id) = enqueued[0] else {
        panic!("created: {enqueued:?}");
    };
    let claimed = jobs.claim("mail", 10, MINUTE, at(1)).await.expect("claim");
    assert_eq!(ids(&claimed), [id]);
    assert_eq!(claimed[0].payload, payload);
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(claimed[0].max_attempts, 8);
    assert!(jobs
        .claim("mail", 10, MINUTE, at(2))
        .await
        .expect("claim")
        .is_empty());
    assert!(jobs
        .claim("other", 10, MINUTE, at(2))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        jobs.complete(&[claimed[0].claim()], at(3))
            .await
            .expect("complete"),
        1
    );
    assert_eq!(jobs.get(id).await.expect("get"), None);
    // Completing twice changes nothing.
    assert_eq!(
        jobs.complete(&[claimed[0].claim()], at(4))
            .await
            .expect("complete"),
        0
    );
}

async fn jobs_of_one_key_run_one_at_a_time_in_enqueue_order_across_retries(harness: &Harness) {
    let jobs = &harness.jobs;
    let batch = vec![
        NewJob::new("mail", json!(1)).ordered_by("order-a"),
        NewJob::new("mail", json!(2)).ordered_by("order-a"),
        NewJob::new("mail", json!(3)).ordered_by("order-b"),
        NewJob::new("mail", json!(4)).ordered_by("order-a"),
        NewJob::new("mail", json!(5)),
    ];
    let created: Vec<i64> = jobs
        .enqueue(&batch, at(0))
        .await
        .expect("enqueue")
        .into_iter()
        .map(Enqueued::id)
        .collect();
    let first = jobs.claim("mail", 10, MINUTE, at(1)).await.expect("claim");
    assert_eq!(ids(&first), [created[0], created[2], created[4]]);
    // The head of order-a fails and is put back for later: its followers keep waiting.
    jobs.retry(first[0].claim(), at(30), "503", at(2))
        .await
        .expect("retry");
    jobs.complete(&[first[1].claim(), first[2].claim()], at(2))
        .await
        .expect("complete");
    assert!(jobs
        .claim("mail", 10, MINUTE, at(10))
        .await
        .expect("claim")
        .is_empty());
    let again = jobs.claim("mail", 10, MINUTE, at(30)).await.expect("claim");
    assert_eq!(ids(&again), [created[0]]);
    assert_eq!(again[0].attempt, 2);
    jobs.complete(&[again[0].claim()], at(31))
        .await
        .expect("complete");
    let second = jobs.claim("mail", 10, MINUTE, at(32)).await.expect("claim");
    assert_eq!(ids(&second), [created[1]]);
    // A dead-lettered head stops blocking its key.
    jobs.bury(second[0].claim(), "poison", at(33))
        .await
        .expect("bury");
    let third = jobs.claim("mail", 10, MINUTE, at(34)).await.expect("claim");
    assert_eq!(ids(&third), [created[3]]);
}

async fn a_lapsed_claim_runs_again_and_the_old_claim_is_fenced_off(harness: &Harness) {
    let jobs = &harness.jobs;
    let id = jobs
        .enqueue(&[NewJob::new("webhooks", json!({"n": 1}))], at(0))
        .await
        .expect("enqueue")[0]
        .id();
    // A worker claims it and dies: nothing more is heard from it.
    let dead_worker = jobs
        .claim("webhooks", 1, Duration::from_secs(30), at(0))
        .await
        .expect("claim");
    assert_eq!(ids(&dead_worker), [id]);
    assert!(jobs
        .claim("webhooks", 1, Duration::from_secs(30), at(29))
        .await
        .expect("claim")
        .is_empty());
    let rescued = jobs
        .claim("webhooks", 1, Duration::from_secs(30), at(30))
        .await
        .expect("claim");
    assert_eq!(ids(&rescued), [id]);
    assert_eq!(rescued[0].attempt, 2);
    let record = jobs.get(id).await.expect("get").expect("job");
    assert!(record
        .last_error
        .as_deref()
        .is_some_and(|error| error.contains("lapsed")));
    // The first worker wakes up: its word no longer counts.
    let stale = dead_worker[0].claim();
    assert_eq!(jobs.complete(&[stale], at(31)).await.expect("complete"), 0);
    assert!(!jobs
        .retry(stale, at(40), "late", at(31))
        .await
        .expect("retry"));
    assert!(!jobs.bury(stale, "late", at(31)).await.expect("bury"));
    assert_eq!(
        jobs.get(id).await.expect("get").map(|job| job.state),
        Some(JobState::Running)
    );
    assert_eq!(
        jobs.complete(&[rescued[0].claim()], at(32))
            .await
            .expect("complete"),
        1
    );
}

async fn a_claim_that_lapses_on_the_last_attempt_is_dead_lettered(harness: &Harness) {
    let jobs = &harness.jobs;
    let id = jobs
        .enqueue(&[NewJob::new("mail", json!("crash")).attempts(2)], at(0))
        .await
        .expect("enqueue")[0]
        .id();
    for attempt in 1..=2 {
        let claimed = jobs
            .claim("mail", 1, MINUTE, at(100 * attempt))
            .await
            .expect("claim");
        assert_eq!(ids(&claimed), [id], "attempt {attempt}");
    }
    assert!(jobs
        .claim("mail", 1, MINUTE, at(1_000))
        .await
        .expect("claim")
        .is_empty());
    let dead = jobs.get(id).await.expect("get").expect("job");
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, 2);
    assert!(dead
        .last_error
        .as_deref()
        .is_some_and(|error| error.contains("last attempt")));
}

async fn a_retry_waits_for_its_time_and_records_the_error(harness: &Harness) {
    let jobs = &harness.jobs;
    let id = jobs
        .enqueue(&[NewJob::new("mail", json!({}))], at(0))
        .await
        .expect("enqueue")[0]
        .id();
    let claimed = jobs.claim("mail", 1, MINUTE, at(0)).await.expect("claim");
    assert!(jobs
        .retry(claimed[0].claim(), at(8), "SMTP 451: try later", at(1))
        .await
        .expect("retry"));
    let record = jobs.get(id).await.expect("get").expect("job");
    assert_eq!(record.state, JobState::Ready);
    assert_eq!(record.run_at, at(8));
    assert_eq!(record.last_error.as_deref(), Some("SMTP 451: try later"));
    assert!(jobs
        .claim("mail", 1, MINUTE, at(7))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        ids(&jobs.claim("mail", 1, MINUTE, at(8)).await.expect("claim")),
        [id]
    );
}

async fn dead_letters_are_listed_replayed_at_the_end_of_the_line_and_dropped(harness: &Harness) {
    let jobs = &harness.jobs;
    let created: Vec<i64> = jobs
        .enqueue(
            &[
                NewJob::new("webhooks", json!("poison")).ordered_by("endpoint-1"),
                NewJob::new("webhooks", json!("next")).ordered_by("endpoint-1"),
                NewJob::new("webhooks", json!("other poison")),
            ],
            at(0),
        )
        .await
        .expect("enqueue")
        .into_iter()
        .map(Enqueued::id)
        .collect();
    let claimed = jobs
        .claim("webhooks", 10, MINUTE, at(1))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), [created[0], created[2]]);
    for job in &claimed {
        jobs.bury(job.claim(), "HTTP 410 Gone", at(2))
            .await
            .expect("bury");
    }
    let dead = jobs
        .list(&JobFilter {
            queue: Some("webhooks".into()),
            state: Some(JobState::Dead),
            key_prefix: None,
            before: None,
            limit: 50,
        })
        .await
        .expect("list");
    assert_eq!(
        dead.iter().map(|job| job.id).collect::<Vec<_>>(),
        [created[2], created[0]]
    );
    // One endpoint's jobs by their key's prefix; `_` and `%` in it are plain characters.
    let of_endpoint = jobs
        .list(&JobFilter {
            key_prefix: Some("endpoint-1".into()),
            limit: 50,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        of_endpoint.iter().map(|job| job.id).collect::<Vec<_>>(),
        [created[1], created[0]]
    );
    for pattern in ["endpoint_1", "%", "endpoint-1%x"] {
        let none = jobs
            .list(&JobFilter {
                key_prefix: Some(pattern.into()),
                limit: 50,
                ..JobFilter::default()
            })
            .await
            .expect("list");
        assert!(none.is_empty(), "{pattern}: {none:?}");
    }
    assert!(dead
        .iter()
        .all(|job| job.last_error.as_deref() == Some("HTTP 410 Gone")));
    let next = jobs
        .claim("webhooks", 10, MINUTE, at(3))
        .await
        .expect("claim");
    assert_eq!(ids(&next), [created[1]]);
    let replayed = jobs
        .replay(created[0], at(4))
        .await
        .expect("replay")
        .expect("was dead");
    assert!(
        replayed > created[2],
        "a replay joins the end of its key's line"
    );
    assert_eq!(jobs.get(created[0]).await.expect("get"), None);
    let record = jobs.get(replayed).await.expect("get").expect("replayed");
    assert_eq!(
        (record.state, record.attempt, record.payload.clone()),
        (JobState::Ready, 0, json!("poison"))
    );
    // Behind "next", which is still running.
    assert!(jobs
        .claim("webhooks", 10, MINUTE, at(5))
        .await
        .expect("claim")
        .is_empty());
    jobs.complete(&[next[0].claim()], at(6))
        .await
        .expect("complete");
    assert_eq!(
        ids(&jobs
            .claim("webhooks", 10, MINUTE, at(7))
            .await
            .expect("claim")),
        [replayed]
    );
    // Only dead jobs can be replayed or dropped.
    assert_eq!(jobs.replay(replayed, at(8)).await.expect("replay"), None);
    assert!(!jobs.drop_dead(replayed).await.expect("drop"));
    assert!(jobs.drop_dead(created[2]).await.expect("drop"));
    assert_eq!(jobs.get(created[2]).await.expect("get"), None);
    assert!(!jobs.drop_dead(created[2]).await.expect("drop"));
}

async fn a_deduplication_key_answers_the_first_job_until_purged(harness: &Harness) {
    let jobs = &harness.jobs;
    let job = NewJob::new("mail", json!({"n": 1})).deduplicated_by("order-1:confirmed");
    let first = jobs
        .enqueue(std::slice::from_ref(&job), at(0))
        .await
        .expect("enqueue")[0];
    let Enqueued::Created(id) = first else {
        panic!("created: {first:?}");
    };
    assert_eq!(
        jobs.enqueue(std::slice::from_ref(&job), at(1))
            .await
            .expect("enqueue")[0],
        Enqueued::Duplicate(id)
    );
    // The same key on another queue is another job.
    let elsewhere = NewJob {
        queue: "webhooks".into(),
        ..job.clone()
    };
    assert!(matches!(
        jobs.enqueue(&[elsewhere], at(1)).await.expect("enqueue")[0],
        Enqueued::Created(_)
    ));
    let claimed = jobs.claim("mail", 1, MINUTE, at(2)).await.expect("claim");
    jobs.complete(&[claimed[0].claim()], at(3))
        .await
        .expect("complete");
    assert_eq!(
        jobs.get(id).await.expect("get").map(|job| job.state),
        Some(JobState::Done)
    );
    assert_eq!(
        jobs.enqueue(std::slice::from_ref(&job), at(4))
            .await
            .expect("enqueue")[0],
        Enqueued::Duplicate(id)
    );
    assert_eq!(jobs.purge_done(at(3)).await.expect("purge"), 0);
    assert_eq!(jobs.purge_done(at(4)).await.expect("purge"), 1);
    assert!(matches!(
        jobs.enqueue(&[job], at(5)).await.expect("enqueue")[0],
        Enqueued::Created(new) if new != id
    ));
}

async fn enqueue_after_moves_the_cursor_with_the_jobs_once_across_followers(harness: &Harness) {
    let jobs = &harness.jobs;
    let other = SqlJobQueue::connect(&harness.url, 2)
        .await
        .expect("second node");
    assert_eq!(jobs.cursor("notify", 40).await.expect("cursor"), 40);
    // An existing cursor keeps its place.
    assert_eq!(other.cursor("notify", 0).await.expect("cursor"), 40);
    let batch = |n: i64| vec![NewJob::new("mail", json!({"position": n}))];
    // Two nodes read the same changes 41..=45 and race to enqueue their jobs.
    let (mine, theirs) = (batch(45), batch(45));
    let (first, second) = tokio::join!(
        jobs.enqueue_after("notify", 40, 45, &mine, at(0)),
        other.enqueue_after("notify", 40, 45, &theirs, at(0)),
    );
    let won = [first.expect("first"), second.expect("second")];
    assert_eq!(won.iter().filter(|won| **won).count(), 1, "{won:?}");
    assert_eq!(jobs.cursor("notify", 0).await.expect("cursor"), 45);
    // A follower behind the cursor changes nothing.
    assert!(!jobs
        .enqueue_after("notify", 41, 50, &batch(50), at(1))
        .await
        .expect("stale"));
    let listed = jobs
        .list(&JobFilter {
            queue: Some("mail".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(jobs
        .enqueue_after("notify", 45, 50, &batch(50), at(1))
        .await
        .expect("next"));
    other.close().await;
}

async fn bad_jobs_are_refused_and_nothing_of_their_batch_is_kept(harness: &Harness) {
    let jobs = &harness.jobs;
    let huge = "x".repeat(MAX_PAYLOAD_BYTES);
    let cases = [
        (NewJob::new("mail", json!(huge)), "payload"),
        (NewJob::new("", json!(1)), "queue"),
        (NewJob::new("mail", json!(1)).ordered_by(""), "key"),
        (
            NewJob::new("mail", json!(1)).deduplicated_by("k".repeat(201)),
            "key",
        ),
        (NewJob::new("mail", json!(1)).attempts(0), "attempts"),
    ];
    for (bad, what) in cases {
        let batch = [NewJob::new("mail", json!("fine")), bad];
        let error = jobs.enqueue(&batch, at(0)).await.expect_err(what);
        assert!(
            matches!(
                error,
                JobsError::PayloadTooLarge { .. }
                    | JobsError::BadName { .. }
                    | JobsError::NoAttempts
            ),
            "{what}: {error}"
        );
    }
    let too_many = vec![NewJob::new("mail", json!(1)); 1_001];
    assert!(matches!(
        jobs.enqueue(&too_many, at(0)).await,
        Err(JobsError::BatchTooLarge { count: 1_001 })
    ));
    assert!(jobs
        .list(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list")
        .is_empty());
}

async fn stats_count_each_state_and_the_oldest_due_age(harness: &Harness) {
    let jobs = &harness.jobs;
    jobs.enqueue(
        &[
            NewJob::new("mail", json!(1)),
            NewJob::new("mail", json!(2)),
            NewJob::new("mail", json!(3)),
            NewJob::new("mail", json!(4)).at(at(3_600)),
            NewJob::new("reminders", json!(5)).at(at(60)),
        ],
        at(0),
    )
    .await
    .expect("enqueue");
    let claimed = jobs.claim("mail", 2, MINUTE, at(10)).await.expect("claim");
    jobs.bury(claimed[0].claim(), "poison", at(10))
        .await
        .expect("bury");
    let stats = jobs.stats(at(20)).await.expect("stats");
    let mail = stats
        .iter()
        .find(|queue| queue.queue == "mail")
        .expect("mail");
    assert_eq!(
        (mail.due, mail.scheduled, mail.running, mail.dead),
        (1, 1, 1, 1)
    );
    assert_eq!(mail.oldest_due_age, Duration::from_secs(20));
    let reminders = stats
        .iter()
        .find(|queue| queue.queue == "reminders")
        .expect("reminders");
    assert_eq!((reminders.due, reminders.scheduled), (0, 1));
}

/// Records, per key, which job is running and the order they ran in.
struct Recorder {
    running: Mutex<HashMap<String, i64>>,
    ran: Mutex<HashMap<String, Vec<i64>>>,
    overlaps: Mutex<u32>,
    /// Jobs that succeeded, for the test to await.
    succeeded: tokio::sync::watch::Sender<usize>,
}

#[async_trait::async_trait]
impl JobHandler for Recorder {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        let key = job.ordering_key.clone().unwrap_or_default();
        let sequence = job.payload["sequence"].as_i64().unwrap_or(-1);
        {
            let mut running = self.running.lock().expect("lock");
            if running.insert(key.clone(), sequence).is_some() {
                *self.overlaps.lock().expect("lock") += 1;
            }
        }
        // Every third job fails once: order must survive retries too.
        let fails = sequence % 3 == 0 && job.attempt == 1;
        tokio::time::sleep(Duration::from_millis(u64::from(job.id as u8 % 3))).await;
        self.running.lock().expect("lock").remove(&key);
        if fails {
            return Err(JobFailure::Retry("once".into()));
        }
        self.ran
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .push(sequence);
        self.succeeded.send_modify(|count| *count += 1);
        Ok(())
    }
}

async fn per_key_order_holds_with_many_workers_at_once(harness: &Harness) {
    const KEYS: i64 = 8;
    const PER_KEY: i64 = 25;
    let recorder = Arc::new(Recorder {
        running: Mutex::new(HashMap::new()),
        ran: Mutex::new(HashMap::new()),
        overlaps: Mutex::new(0),
        succeeded: tokio::sync::watch::Sender::new(0),
    });
    let mut batch = Vec::new();
    for sequence in 0..PER_KEY {
        for key in 0..KEYS {
            batch.push(
                NewJob::new("ordered", json!({"sequence": sequence}))
                    .ordered_by(format!("key-{key}")),
            );
        }
    }
    harness
        .jobs
        .enqueue(&batch, Utc::now())
        .await
        .expect("enqueue");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settings = WorkerSettings {
        concurrency: 6,
        visibility: Duration::from_secs(30),
        poll: Duration::from_millis(5),
        backoff: Backoff {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
            jitter: 0.5,
        },
    };
    // Three workers, each with connections of its own, as three nodes would be.
    let mut workers = Vec::new();
    let mut queues = Vec::new();
    for _ in 0..3 {
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqlJobQueue::connect(&harness.url, 4)
                .await
                .expect("worker queue"),
        );
        queues.push(queue.clone());
        workers.push(
            Worker::new(queue, "ordered", recorder.clone(), settings.clone())
                .spawn(stopped.clone(), Duration::from_secs(5)),
        );
    }
    let total = (KEYS * PER_KEY) as usize;
    let mut succeeded = recorder.succeeded.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        succeeded.wait_for(|count| *count == total),
    )
    .await
    .unwrap_or_else(|_| panic!("only {} jobs ran in 60 s", *recorder.succeeded.borrow()))
    .expect("the recorder lives");
    stop.send_replace(true);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(
        *recorder.overlaps.lock().expect("lock"),
        0,
        "two jobs of a key ran at once"
    );
    let ran = recorder.ran.lock().expect("lock").clone();
    let expected: Vec<i64> = (0..PER_KEY).collect();
    for key in 0..KEYS {
        assert_eq!(ran[&format!("key-{key}")], expected, "key-{key}");
    }
    let left = harness
        .jobs
        .list(&JobFilter {
            queue: Some("ordered".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
}

async fn a_second_process_on_the_same_data_sees_the_same_jobs(harness: &Harness) {
    let id = harness
        .jobs
        .enqueue(&[NewJob::new("mail", json!("kept"))], at(0))
        .await
        .expect("enqueue")[0]
        .id();
    let claimed = harness
        .jobs
        .claim("mail", 1, MINUTE, at(0))
        .await
        .expect("claim");
    harness
        .jobs
        .bury(claimed[0].claim(), "poison", at(1))
        .await
        .expect("bury");
    // The operator's `marquee jobs` is another process over the same data.
    let operator = SqlJobQueue::connect(&harness.url, 1)
        .await
        .expect("operator");
    let record = operator.get(id).await.expect("get").expect("job");
    assert_eq!(
        (record.state, record.payload),
        (JobState::Dead, json!("kept"))
    );
    let replayed = operator
        .replay(id, at(2))
        .await
        .expect("replay")
        .expect("dead");
    operator.close().await;
    let claimed = harness
        .jobs
        .claim("mail", 1, MINUTE, at(3))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), [replayed]);
}
