//! `marquee-bench jobs`: how many jobs a second the jobs block moves, embedded (SQLite) and on
//! PostgreSQL, beside RabbitMQ and NATS JetStream moving the same messages on the same machine.
//!
//! Every system gets a queue of its own (a SQLite file in a temporary directory, a PostgreSQL
//! schema, a RabbitMQ queue, a JetStream stream), the same messages (a ~100-byte JSON body each)
//! and the same shape of load: a few producers each enqueueing batches, every batch durable
//! before the producer sends the next (a committed transaction; publisher confirms; JetStream
//! publish acks awaited after the whole batch is sent), and consumers that do nothing but
//! acknowledge (a handler answering `Ok`; a manual ack per message).
//!
//! Three figures per system, each the median of `--rounds` rounds, every round on a fresh queue:
//! - **end to end**: consumers running while the producers enqueue; messages / (first enqueue →
//!   the last one acknowledged; for Marquee, the queue seen empty: nothing due, running or
//!   scheduled);
//! - **enqueue only**: producers alone into an empty queue with no consumer;
//! - **drain only**: then consumers start and empty that full queue.
//!
//! Marquee runs twice on each engine: without ordering keys, and with 1,000 keys (jobs of one
//! key run one at a time in order, the feature the claim pays for). On PostgreSQL several
//! workers, each with its own `SqlJobQueue`, stand for as many nodes; each producer enqueues
//! through one of them and wakes that node's worker, as an enqueue on a node does.
//!
//! Durability differs and is part of the comparison: the embedded queue runs SQLite in WAL mode
//! with `synchronous = NORMAL` (a commit survives the process, not the power), PostgreSQL
//! flushes its WAL at every commit, RabbitMQ confirms persistent messages once they are on disk,
//! and JetStream's file store acknowledges before it syncs (every two minutes by default).
//!
//! Producers and consumers run in this process, on the same two cores as the servers: figures
//! are what one machine does end to end, not what a server alone could reach.

use crate::product::ScratchDatabase;
use crate::JobsBenchArgs;
use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use marquee_jobs::{
    Job, JobFailure, JobHandler, JobQueue, NewJob, SqlJobQueue, Worker, WorkerSettings,
};
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use ulid::Ulid;

/// The queue every Marquee run uses (each run has a database of its own).
const QUEUE: &str = "bench";
/// How long one pass may take before the bench gives up on it.
const PASS_TIMEOUT: Duration = Duration::from_secs(600);

/// Which systems a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Sqlite,
    SqliteKeyed,
    Postgres,
    PostgresKeyed,
    RabbitMq,
    JetStream,
}

impl System {
    const ALL: [System; 6] = [
        System::Sqlite,
        System::SqliteKeyed,
        System::Postgres,
        System::PostgresKeyed,
        System::RabbitMq,
        System::JetStream,
    ];

    fn is_marquee(self) -> bool {
        !matches!(self, System::RabbitMq | System::JetStream)
    }
}

/// The settings of one run, from the command line.
struct Bench {
    messages: usize,
    batch: usize,
    producers: usize,
    concurrency: usize,
    pg_nodes: usize,
    keys: usize,
    prefetch: u16,
    postgres_url: Option<String>,
    amqp_url: Option<String>,
    nats_url: Option<String>,
}

/// One pass's timings.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    end_to_end: f64,
    enqueue: f64,
    drain: f64,
}

/// Whether consumers run while producers enqueue, or only after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Together,
    Apart,
}

/// What one pass measured: the whole run (together), or its two halves (apart).
#[derive(Debug, Clone, Copy)]
enum Timing {
    Together(Duration),
    Apart { enqueue: Duration, drain: Duration },
}

/// The messages of a run, the same for every system.
struct Messages {
    bodies: Vec<Value>,
    bytes: Vec<Vec<u8>>,
}

impl Messages {
    fn new(count: usize) -> Messages {
        let bodies: Vec<Value> = (0..count)
            .map(|n| {
                json!({
                    "order_id": Ulid::new().to_string(),
                    "n": n,
                    "event": "order.confirmed",
                    "to": format!("fan-{n}@example.com"),
                })
            })
            .collect();
        let bytes = bodies
            .iter()
            .map(|body| body.to_string().into_bytes())
            .collect();
        Messages { bodies, bytes }
    }

    fn average_bytes(&self) -> usize {
        self.bytes.iter().map(Vec::len).sum::<usize>() / self.bytes.len().max(1)
    }
}

/// Messages consumed so far, and a wake-up once all are.
/// Times one pass of a peer (RabbitMQ, JetStream): its consumer started before the producers
/// (`Together`) or after they finished (`Apart`), until `progress` has seen every message.
async fn time_peer<C, P>(
    mode: Mode,
    progress: &Progress,
    consume: impl FnOnce() -> C,
    produce: impl FnOnce() -> P,
) -> anyhow::Result<Timing>
where
    C: std::future::Future<Output = anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    P: std::future::Future<Output = anyhow::Result<()>>,
{
    let (timing, consumer) = match mode {
        Mode::Together => {
            let consumer = consume().await?;
            let started = Instant::now();
            produce().await?;
            progress.wait().await?;
            (Timing::Together(started.elapsed()), consumer)
        }
        Mode::Apart => {
            let started = Instant::now();
            produce().await?;
            let enqueue = started.elapsed();
            let started = Instant::now();
            let consumer = consume().await?;
            progress.wait().await?;
            let drain = started.elapsed();
            (Timing::Apart { enqueue, drain }, consumer)
        }
    };
    consumer.await.context("the consumer panicked")??;
    Ok(timing)
}

struct Progress {
    done: AtomicUsize,
    target: usize,
    reached: Notify,
}

impl Progress {
    fn new(target: usize) -> Arc<Progress> {
        Arc::new(Progress {
            done: AtomicUsize::new(0),
            target,
            reached: Notify::new(),
        })
    }

    fn record(&self, count: usize) {
        if self.done.fetch_add(count, Ordering::AcqRel) + count >= self.target {
            self.reached.notify_one();
        }
    }

    async fn wait(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PASS_TIMEOUT;
        loop {
            let notified = self.reached.notified();
            let done = self.done.load(Ordering::Acquire);
            if done >= self.target {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "only {done} of {} messages consumed after {PASS_TIMEOUT:?}",
                    self.target
                );
            }
        }
    }
}

/// The handler of the Marquee runs: counts and succeeds.
struct Counting(Arc<Progress>);

#[async_trait]
impl JobHandler for Counting {
    async fn run(&self, _job: &Job) -> Result<(), JobFailure> {
        self.0.record(1);
        Ok(())
    }
}

pub(crate) async fn run(args: JobsBenchArgs, use_existing_database: bool) -> anyhow::Result<()> {
    let database = match args.postgres_url.as_str() {
        "none" => None,
        url => Some(ScratchDatabase::create(url, use_existing_database).await?),
    };
    let outcome = run_in(args, database.as_ref().map(|database| database.url.clone())).await;
    if let Some(database) = database {
        database.drop_database().await?;
    }
    outcome
}

async fn run_in(args: JobsBenchArgs, postgres_url: Option<String>) -> anyhow::Result<()> {
    let skip = |url: String| (url != "none").then_some(url);
    let bench = Bench {
        messages: args.messages.max(1),
        batch: args.batch.clamp(1, marquee_jobs::MAX_BATCH),
        producers: args.producers.max(1),
        concurrency: args.concurrency.max(1),
        pg_nodes: args.pg_nodes.max(1),
        keys: args.keys.max(1),
        prefetch: args.prefetch.max(1),
        postgres_url,
        amqp_url: skip(args.amqp_url),
        nats_url: skip(args.nats_url),
    };
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|system| match system {
            System::Postgres | System::PostgresKeyed => bench.postgres_url.is_some(),
            System::RabbitMq => bench.amqp_url.is_some(),
            System::JetStream => bench.nats_url.is_some(),
            System::Sqlite | System::SqliteKeyed => true,
        })
        .filter(|system| {
            args.only.is_empty() || args.only.iter().any(|only| only == name(*system).0)
        })
        .collect();
    let messages = Messages::new(bench.messages);
    println!(
        "{} messages of {} bytes on average; {} producers, batches of {}; Marquee workers of \
         concurrency {} ({} on PostgreSQL), {} ordering keys; prefetch {}; {} rounds",
        bench.messages,
        messages.average_bytes(),
        bench.producers,
        bench.batch,
        bench.concurrency,
        bench.pg_nodes,
        bench.keys,
        bench.prefetch,
        args.rounds.max(1),
    );
    let mut results: Vec<(System, Vec<Rates>)> =
        systems.iter().map(|system| (*system, Vec::new())).collect();
    for round in 1..=args.rounds.max(1) {
        for (system, rounds) in &mut results {
            let together = pass(&bench, &messages, *system, Mode::Together).await?;
            let apart = pass(&bench, &messages, *system, Mode::Apart).await?;
            let per_second = |elapsed: Duration| bench.messages as f64 / elapsed.as_secs_f64();
            let mut rates = Rates::default();
            for timing in [together, apart] {
                match timing {
                    Timing::Together(elapsed) => rates.end_to_end = per_second(elapsed),
                    Timing::Apart { enqueue, drain } => {
                        rates.enqueue = per_second(enqueue);
                        rates.drain = per_second(drain);
                    }
                }
            }
            println!(
                "round {round}: {:<40} end to end {:>8.0}/s, enqueue only {:>8.0}/s, drain only {:>8.0}/s",
                name(*system).1,
                rates.end_to_end,
                rates.enqueue,
                rates.drain
            );
            rounds.push(rates);
        }
    }
    print_table(&bench, &results);
    Ok(())
}

/// A system's short name (for `--only`) and its label in the table.
fn name(system: System) -> (&'static str, &'static str) {
    match system {
        System::Sqlite => ("sqlite", "Marquee jobs, SQLite (embedded)"),
        System::SqliteKeyed => ("sqlite-keyed", "Marquee jobs, SQLite, ordering keys"),
        System::Postgres => ("postgres", "Marquee jobs, PostgreSQL"),
        System::PostgresKeyed => ("postgres-keyed", "Marquee jobs, PostgreSQL, ordering keys"),
        System::RabbitMq => ("rabbitmq", "RabbitMQ (persistent, confirms, acks)"),
        System::JetStream => ("jetstream", "JetStream (file, work queue, acks)"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn print_table(bench: &Bench, results: &[(System, Vec<Rates>)]) {
    let medians: Vec<(System, Rates)> = results
        .iter()
        .map(|(system, rounds)| {
            let of = |pick: fn(&Rates) -> f64| median(rounds.iter().map(pick).collect());
            (
                *system,
                Rates {
                    end_to_end: of(|rates| rates.end_to_end),
                    enqueue: of(|rates| rates.enqueue),
                    drain: of(|rates| rates.drain),
                },
            )
        })
        .collect();
    let rabbit = medians
        .iter()
        .find(|(system, _)| *system == System::RabbitMq)
        .map(|(_, rates)| *rates);
    println!("\nmedians, messages per second");
    println!("| system | end to end | enqueue only | drain only | end to end ÷ RabbitMQ | enqueue ÷ RabbitMQ | drain ÷ RabbitMQ |");
    println!("|---|---|---|---|---|---|---|");
    for (system, rates) in &medians {
        let ratio = |ours: f64, theirs: Option<f64>| match theirs {
            Some(theirs) if system.is_marquee() && theirs > 0.0 => format!("{:.2}", ours / theirs),
            _ => "–".to_string(),
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            name(*system).1,
            rates.end_to_end,
            rates.enqueue,
            rates.drain,
            ratio(rates.end_to_end, rabbit.map(|rabbit| rabbit.end_to_end)),
            ratio(rates.enqueue, rabbit.map(|rabbit| rabbit.enqueue)),
            ratio(rates.drain, rabbit.map(|rabbit| rabbit.drain)),
        );
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    for (system, rates) in &medians {
        match system {
            System::Sqlite => println!(
                "target: ≥ 2,000 jobs/s embedded, end to end: {:.0} — {}",
                rates.end_to_end,
                verdict(rates.end_to_end >= 2_000.0)
            ),
            System::JetStream => println!(
                "target: ≥ 10,000 messages/s on JetStream, end to end: {:.0} — {}",
                rates.end_to_end,
                verdict(rates.end_to_end >= 10_000.0)
            ),
            _ => {}
        }
    }
    if bench.messages < 10_000 {
        println!("(fewer than 10,000 messages: start-up costs weigh on these rates)");
    }
}

/// One pass of one system on a fresh queue.
async fn pass(
    bench: &Bench,
    messages: &Messages,
    system: System,
    mode: Mode,
) -> anyhow::Result<Timing> {
    let label = name(system).1;
    let timing = match system {
        System::Sqlite => marquee_sqlite(bench, messages, false, mode).await,
        System::SqliteKeyed => marquee_sqlite(bench, messages, true, mode).await,
        System::Postgres => marquee_postgres(bench, messages, false, mode).await,
        System::PostgresKeyed => marquee_postgres(bench, messages, true, mode).await,
        System::RabbitMq => rabbitmq(bench, messages, mode).await,
        System::JetStream => jetstream_pass(bench, messages, mode).await,
    };
    timing.with_context(|| format!("{label}, {mode:?}"))
}

/// The batches of a Marquee run, built before the clock starts.
fn job_batches(bench: &Bench, messages: &Messages, keyed: bool) -> Arc<Vec<Vec<NewJob>>> {
    let jobs: Vec<NewJob> = messages
        .bodies
        .iter()
        .enumerate()
        .map(|(n, body)| {
            let job = NewJob::new(QUEUE, body.clone());
            if keyed {
                job.ordered_by(format!("order-{}", n % bench.keys))
            } else {
                job
            }
        })
        .collect();
    Arc::new(jobs.chunks(bench.batch).map(<[NewJob]>::to_vec).collect())
}

async fn marquee_sqlite(
    bench: &Bench,
    messages: &Messages,
    keyed: bool,
    mode: Mode,
) -> anyhow::Result<Timing> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let queue = Arc::new(
        SqlJobQueue::connect(&url, 4)
            .await
            .context("the SQLite jobs file")?,
    );
    let timing = marquee_pass(bench, messages, keyed, mode, vec![Arc::clone(&queue)]).await;
    queue.close().await;
    drop(dir);
    timing
}

async fn marquee_postgres(
    bench: &Bench,
    messages: &Messages,
    keyed: bool,
    mode: Mode,
) -> anyhow::Result<Timing> {
    let admin_url = bench.postgres_url.as_deref().context("no PostgreSQL URL")?;
    let schema = format!("bench_jobs_{}", Ulid::new().to_string().to_lowercase());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(admin_url)
        .await
        .context("PostgreSQL")?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .context("creating the bench schema")?;
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
    let timing = async {
        let mut nodes = Vec::new();
        for _ in 0..bench.pg_nodes {
            nodes.push(Arc::new(
                SqlJobQueue::connect(&url, 8)
                    .await
                    .context("the PostgreSQL jobs tables")?,
            ));
        }
        let timing = marquee_pass(bench, messages, keyed, mode, nodes.clone()).await;
        for node in &nodes {
            node.close().await;
        }
        timing
    }
    .await;
    let dropped = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .context("dropping the bench schema");
    admin.close().await;
    let timing = timing?;
    dropped?;
    Ok(timing)
}

/// Producers enqueue through the nodes round robin while (or before) one worker per node
/// consumes; done when every job has run and the queue is empty.
async fn marquee_pass(
    bench: &Bench,
    messages: &Messages,
    keyed: bool,
    mode: Mode,
    nodes: Vec<Arc<SqlJobQueue>>,
) -> anyhow::Result<Timing> {
    let batches = job_batches(bench, messages, keyed);
    let progress = Progress::new(bench.messages);
    let (stop, stopped) = watch::channel(false);
    let mut wakers: Vec<Arc<Notify>> = Vec::new();
    let mut workers = Vec::new();
    for node in &nodes {
        let worker = Worker::new(
            Arc::clone(node) as Arc<dyn JobQueue>,
            QUEUE,
            Arc::new(Counting(Arc::clone(&progress))),
            WorkerSettings {
                concurrency: bench.concurrency,
                ..WorkerSettings::default()
            },
        );
        wakers.push(worker.waker());
        workers.push(worker);
    }
    let spawn_workers = |workers: Vec<Worker>| {
        workers
            .into_iter()
            .map(|worker| worker.spawn(stopped.clone(), Duration::from_secs(5)))
            .collect::<Vec<_>>()
    };
    let produce = || {
        let producers = (0..bench.producers).map(|producer| {
            let node = Arc::clone(&nodes[producer % nodes.len()]);
            let waker = Arc::clone(&wakers[producer % wakers.len()]);
            let batches = Arc::clone(&batches);
            let producers = bench.producers;
            tokio::spawn(async move {
                for batch in batches.iter().skip(producer).step_by(producers) {
                    node.enqueue(batch, Utc::now()).await?;
                    waker.notify_one();
                }
                anyhow::Ok(())
            })
        });
        futures::future::try_join_all(producers)
    };
    let drained = || async {
        progress.wait().await?;
        // Every job has run; its completion is recorded a moment later, in a batch.
        let deadline = Instant::now() + PASS_TIMEOUT;
        loop {
            let stats = nodes[0].stats(Utc::now()).await?;
            let queue = stats.into_iter().find(|queue| queue.queue == QUEUE);
            if let Some(queue) = &queue {
                anyhow::ensure!(queue.dead == 0, "{} jobs dead-lettered", queue.dead);
            }
            let left = queue.map_or(0, |queue| queue.due + queue.running + queue.scheduled);
            if left == 0 {
                return anyhow::Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{left} jobs never completed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let result = async {
        match mode {
            Mode::Together => {
                let handles = spawn_workers(std::mem::take(&mut workers));
                let started = Instant::now();
                for produced in produce().await? {
                    produced?;
                }
                drained().await?;
                let elapsed = started.elapsed();
                anyhow::Ok((Timing::Together(elapsed), handles))
            }
            Mode::Apart => {
                let started = Instant::now();
                for produced in produce().await? {
                    produced?;
                }
                let enqueue = started.elapsed();
                let started = Instant::now();
                let handles = spawn_workers(std::mem::take(&mut workers));
                drained().await?;
                let drain = started.elapsed();
                anyhow::Ok((Timing::Apart { enqueue, drain }, handles))
            }
        }
    }
    .await;
    let _ = stop.send(true);
    let (timing, handles): (Timing, Vec<_>) = result?;
    for handle in handles {
        handle.await.context("a worker panicked")?;
    }
    Ok(timing)
}

/// RabbitMQ: a durable queue of its own; each producer publishes persistent messages on its own
/// channel with publisher confirms, a batch at a time; one consumer with manual acks and a
/// prefetch.
async fn rabbitmq(bench: &Bench, messages: &Messages, mode: Mode) -> anyhow::Result<Timing> {
    let url = bench.amqp_url.as_deref().context("no AMQP URL")?;
    let publishing = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("RabbitMQ")?;
    let consuming = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("RabbitMQ")?;
    let queue = format!("bench_jobs_{}", Ulid::new().to_string().to_lowercase());
    let setup = publishing.create_channel().await?;
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the bench queue")?;
    let progress = Progress::new(bench.messages);
    let timing = async {
        let produce = || async {
            let mut producers = Vec::new();
            for producer in 0..bench.producers {
                let channel = publishing.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                let batches: Vec<Vec<Vec<u8>>> = messages
                    .bytes
                    .chunks(bench.batch)
                    .skip(producer)
                    .step_by(bench.producers)
                    .map(<[Vec<u8>]>::to_vec)
                    .collect();
                let queue = queue.clone();
                producers.push(async move {
                    for batch in &batches {
                        let mut confirms = Vec::with_capacity(batch.len());
                        for body in batch {
                            confirms.push(
                                channel
                                    .basic_publish(
                                        "".into(),
                                        queue.as_str().into(),
                                        BasicPublishOptions::default(),
                                        body,
                                        BasicProperties::default().with_delivery_mode(2),
                                    )
                                    .await?,
                            );
                        }
                        for confirmation in futures::future::try_join_all(confirms).await? {
                            anyhow::ensure!(confirmation.is_ack(), "RabbitMQ refused a message");
                        }
                    }
                    channel.close(200, "done".into()).await?;
                    anyhow::Ok(())
                });
            }
            futures::future::try_join_all(producers).await?;
            anyhow::Ok(())
        };
        let consume = || async {
            let channel = consuming.create_channel().await?;
            channel
                .basic_qos(bench.prefetch, BasicQosOptions::default())
                .await?;
            let mut deliveries = channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let progress = Arc::clone(&progress);
            let target = bench.messages;
            anyhow::Ok(tokio::spawn(async move {
                let mut seen = 0;
                while let Some(delivery) = deliveries.next().await {
                    delivery?.ack(BasicAckOptions::default()).await?;
                    progress.record(1);
                    seen += 1;
                    if seen >= target {
                        break;
                    }
                }
                channel.close(200, "done".into()).await?;
                anyhow::Ok(())
            }))
        };
        time_peer(mode, &progress, consume, produce).await
    }
    .await;
    let deleted = setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .context("deleting the bench queue");
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    let timing = timing?;
    deleted?;
    Ok(timing)
}

/// JetStream: a file-backed work-queue stream of its own and a durable pull consumer with
/// explicit acks; each producer sends a batch of publishes, then awaits their acks.
async fn jetstream_pass(bench: &Bench, messages: &Messages, mode: Mode) -> anyhow::Result<Timing> {
    let url = bench.nats_url.as_deref().context("no NATS URL")?;
    let client = async_nats::connect(url).await.context("NATS")?;
    let js = jetstream::new(client);
    let name = format!("BENCH_JOBS_{}", Ulid::new());
    let subject = format!("bench_jobs_{}.jobs", name.to_lowercase());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .context("creating the bench stream")?;
    let progress = Progress::new(bench.messages);
    let timing = async {
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("bench".to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .context("creating the bench consumer")?;
        let produce = || async {
            let producers = (0..bench.producers).map(|producer| {
                let js = js.clone();
                let subject = subject.clone();
                async move {
                    for batch in messages
                        .bytes
                        .chunks(bench.batch)
                        .skip(producer)
                        .step_by(bench.producers)
                    {
                        let mut acks = Vec::with_capacity(batch.len());
                        for body in batch {
                            acks.push(js.publish(subject.clone(), body.clone().into()).await?);
                        }
                        futures::future::try_join_all(
                            acks.into_iter().map(IntoFuture::into_future),
                        )
                        .await?;
                    }
                    anyhow::Ok(())
                }
            });
            futures::future::try_join_all(producers).await?;
            anyhow::Ok(())
        };
        let consume = || async {
            let mut fetched = consumer
                .stream()
                .max_messages_per_batch(usize::from(bench.prefetch))
                .messages()
                .await?;
            let progress = Arc::clone(&progress);
            let target = bench.messages;
            anyhow::Ok(tokio::spawn(async move {
                let mut seen = 0;
                while let Some(message) = fetched.next().await {
                    message?
                        .ack()
                        .await
                        .map_err(|error| anyhow::anyhow!("acking a JetStream message: {error}"))?;
                    progress.record(1);
                    seen += 1;
                    if seen >= target {
                        break;
                    }
                }
                anyhow::Ok(())
            }))
        };
        time_peer(mode, &progress, consume, produce).await
    }
    .await;
    let deleted = js
        .delete_stream(&name)
        .await
        .context("deleting the bench stream");
    let timing = timing?;
    deleted?;
    Ok(timing)
}
