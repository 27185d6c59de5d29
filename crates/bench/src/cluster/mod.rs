//! `marquee-bench cluster`: booking throughput with one, two and three `marquee serve` processes
//! over the same PostgreSQL, Redis and NATS JetStream, on two workloads, and the change stream's
//! lag from a commit to every node.
//!
//! Each measurement (round × workload × node count) gets a fresh PostgreSQL schema, Redis prefix
//! and JetStream stream. The load is a closed loop of `clients` fans spread over the nodes, each
//! booking two seats of its own (hold, then order), one fresh fan per booking: every booking
//! succeeds, so the figure is the write path's capacity, not contention (`bench booking`
//! measures collisions). The workloads (see [`workload`]): *hot*, all fans on one event, whose
//! seat version row serialises every booking in PostgreSQL whichever node makes it; *spread*,
//! the fans over 30 events. The load generator runs in this process on the same machine as the
//! nodes and the three engines, so on a small machine the ratio between node counts says more
//! than the absolute figures; the CPU seconds of every process during the timed run (see
//! [`cpu`]) tell a saturated machine from waiting on locks.
//!
//! Rounds run every workload and node count in turn (interleaved, so drift on a shared machine
//! touches all of them alike); figures are printed per round and as medians of rounds. With
//! `--cpu-quota`, each node runs in a CPU-capped cgroup of its own with one runtime worker, so
//! node counts compare as if each node had its own small machine.
//!
//! The anchor (see [`anchor`]) is `pgbench` TPC-B-like on the same PostgreSQL in each round,
//! with the nodes' `synchronous_commit`: a booking is two write transactions (hold, order)
//! with reads around them, a TPC-B transaction five statements.
//!
//! Lag: with every node subscribed over SSE to the first event's seat channel, holds are made
//! on node 1 at a steady pace; a hold's lag is from its `201` arriving at the client (the commit
//! is already done) to the seat change arriving from the last node. The clock is the client's,
//! for every event, so no clocks need agreeing.

mod anchor;
mod cpu;
mod report;
pub mod surge;
mod workload;

pub use workload::Workload;

use anyhow::Context;
use cpu::{CpuCap, CpuGroup, CpuSnapshot, CpuUsage};
use marquee_store::{CatalogStore, SqlCatalogStore, StoreOptions};
use report::{percentile, Measurement};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const SECRET: &str = "benchmark-secret-of-at-least-thirty-two-bytes";

#[derive(Debug, Clone)]
pub struct ClusterBench {
    /// Runs with 1..=max_nodes nodes.
    pub max_nodes: usize,
    pub workloads: Vec<Workload>,
    pub rounds: usize,
    pub clients: usize,
    pub duration: Duration,
    /// Holds made for the lag measurement (at 20 a second).
    pub lag_samples: usize,
    /// Fans ask for two best-available seats instead of two of their own (a rush on the
    /// front rows: contention, not capacity).
    pub best_available: bool,
    /// Cores each node may use (a cgroup CPU quota and one runtime worker), or uncapped.
    pub cpu_quota: Option<f64>,
    /// The run's database, to create the schemas in.
    pub database_url: String,
    pub redis_url: String,
    pub nats_url: String,
}

struct Cluster {
    schema: String,
    stream: String,
    urls: Vec<String>,
    children: Vec<Child>,
    groups: Vec<CpuGroup>,
    store: Arc<dyn CatalogStore>,
}

impl Cluster {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn admin(database_url: &str, statement: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await?;
    sqlx::query(statement).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/readyz")).send().await {
            if response.status() == StatusCode::OK {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} never became ready")
}

/// The nodes' database URL: the run's database with the measurement's schema first.
fn schema_url(database_url: &str, schema: &str) -> String {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{separator}options=-c%20search_path%3D{schema}")
}

/// Kills the nodes, then removes their CPU groups.
async fn stop_nodes(children: &mut Vec<Child>, groups: &mut Vec<CpuGroup>) {
    for child in children.iter_mut() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    children.clear();
    for group in groups.drain(..) {
        if let Err(error) = group.remove().await {
            println!("warning: {error:#}");
        }
    }
}

/// `nodes` nodes over a fresh schema, prefix and stream, each started with `node_args` too.
async fn start_cluster(
    bench: &ClusterBench,
    cap: Option<&CpuCap>,
    nodes: usize,
    node_args: &[String],
    client: &reqwest::Client,
    dir: &std::path::Path,
) -> anyhow::Result<Cluster> {
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let schema = format!("bench_cluster_{suffix}");
    admin(&bench.database_url, &format!("CREATE SCHEMA {schema}")).await?;
    let database_url = schema_url(&bench.database_url, &schema);
    let stream = format!("BENCH_{}", suffix.to_uppercase());
    let mut children = Vec::new();
    let mut groups = Vec::new();
    let mut urls = Vec::new();
    let started = async {
        let exe = crate::product::marquee_binary()?;
        for n in 1..=nodes {
            let port = free_port()?;
            let mut command = Command::new(&exe);
            // Benchmarks sign many fans in from one address: lift the sign-in throttle.
            command.env("MARQUEE_AUTH_ATTEMPTS_PER_IP", "1000000");
            command
                .env("MARQUEE_RTMP_LISTEN", "off")
                .env("MARQUEE_SRT_LISTEN", "off")
                .args(["--log-filter", "error", "serve"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--node-id", &format!("node-{n}")])
                .arg("--data-dir")
                .arg(dir.join(format!("{suffix}-{n}")))
                .args(["--database-url", &database_url])
                .args(["--database-max-connections", "32"])
                .args(["--redis-url", &bench.redis_url])
                .args(["--redis-prefix", &format!("bench:{suffix}:")])
                .args(["--nats-url", &bench.nats_url])
                .args(["--nats-stream", &stream])
                .args(node_args)
                .env("MARQUEE_JWT_SECRET", SECRET)
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true);
            if cap.is_some() {
                // #[tokio::main]'s multi-thread runtime reads it: one worker for a fraction of a core.
                command.env("TOKIO_WORKER_THREADS", "1");
            }
            let child = command.spawn().context("starting marquee serve")?;
            let pid = child.id();
            children.push(child);
            if let Some(cap) = cap {
                let group = cap.create(&format!("marquee-bench-{suffix}-{n}"))?;
                let added = pid
                    .context("the node exited at once")
                    .and_then(|pid| group.add(pid));
                groups.push(group);
                added?;
            }
            let url = format!("http://127.0.0.1:{port}");
            // The first node migrates the schema before the others start.
            ready(client, &url).await?;
            urls.push(url);
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = started {
        stop_nodes(&mut children, &mut groups).await;
        let _ = admin(
            &bench.database_url,
            &format!("DROP SCHEMA {schema} CASCADE"),
        )
        .await;
        return Err(error);
    }
    let store: Arc<dyn CatalogStore> = Arc::new(
        SqlCatalogStore::connect(
            &database_url,
            StoreOptions {
                max_connections: 8,
                ..StoreOptions::default()
            },
        )
        .await?,
    );
    Ok(Cluster {
        schema,
        stream,
        urls,
        children,
        groups,
        store,
    })
}

async fn stop_cluster(bench: &ClusterBench, mut cluster: Cluster) -> anyhow::Result<()> {
    stop_nodes(&mut cluster.children, &mut cluster.groups).await;
    if let Ok(client) = async_nats::connect(&bench.nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&cluster.stream)
            .await;
    }
    admin(
        &bench.database_url,
        &format!("DROP SCHEMA {} CASCADE", cluster.schema),
    )
    .await
}

/// One measurement: the fixture, then CPU time read around the timed booking loop, then lag.
async fn measure(
    bench: &ClusterBench,
    cluster: &Cluster,
    client: &reqwest::Client,
    workload: Workload,
    round: usize,
    ticks_per_sec: u64,
) -> anyhow::Result<Measurement> {
    let fixture = workload::fixture(bench, cluster, client, workload).await?;
    let pids = cluster.pids();
    anyhow::ensure!(pids.len() == cluster.urls.len(), "a node has exited");
    let before = CpuSnapshot::take(&pids);
    let load = workload::load(bench, cluster, client, &fixture).await?;
    let after = CpuSnapshot::take(&pids);
    let lags = workload::lag(bench, cluster, client, &fixture).await?;
    Ok(Measurement {
        round,
        workload,
        nodes: cluster.urls.len(),
        bookings: load.bookings,
        bookings_per_sec: load.bookings as f64 / load.elapsed.as_secs_f64(),
        hold_p50_ms: percentile(&load.holds_ms, 0.50),
        hold_p99_ms: percentile(&load.holds_ms, 0.99),
        lag_p50_ms: percentile(&lags, 0.50),
        lag_p99_ms: percentile(&lags, 0.99),
        lag_max_ms: lags.last().copied().unwrap_or(f64::NAN),
        cpu: CpuUsage::between(&before, &after, ticks_per_sec),
    })
}

pub async fn run_cluster(bench: &ClusterBench) -> anyhow::Result<Vec<Measurement>> {
    let cap = match bench.cpu_quota {
        Some(cores) => {
            let cap = CpuCap::detect(cores)?;
            println!(
                "CPU cap: {cores} core per node, one runtime worker (TOKIO_WORKER_THREADS=1); {}",
                cap.describe()
            );
            Some(cap)
        }
        None => None,
    };
    let ticks_per_sec = cpu::clock_ticks();
    let synchronous_commit = anchor::synchronous_commit(&bench.database_url).await?;
    println!(
        "PostgreSQL synchronous_commit = {synchronous_commit} (nodes and pgbench); CLK_TCK = {ticks_per_sec}"
    );
    println!("pgbench -i -s 64 …");
    let pgbench = anchor::Pgbench::init(&bench.database_url, &synchronous_commit).await?;
    let outcome = rounds(bench, cap.as_ref(), ticks_per_sec, pgbench.as_ref()).await;
    if let Some(pgbench) = pgbench {
        pgbench.drop_schema().await?;
    }
    let (measurements, tps) = outcome?;
    print_summary(bench, &measurements, &tps);
    Ok(measurements)
}

async fn rounds(
    bench: &ClusterBench,
    cap: Option<&CpuCap>,
    ticks_per_sec: u64,
    pgbench: Option<&anchor::Pgbench>,
) -> anyhow::Result<(Vec<Measurement>, Vec<f64>)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.clients + 16)
        .timeout(Duration::from_secs(30))
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut measurements = Vec::new();
    let mut tps = Vec::new();
    for round in 1..=bench.rounds {
        for &workload in &bench.workloads {
            for nodes in 1..=bench.max_nodes {
                let cluster = start_cluster(bench, cap, nodes, &[], &client, dir.path()).await?;
                let outcome =
                    measure(bench, &cluster, &client, workload, round, ticks_per_sec).await;
                stop_cluster(bench, cluster).await?;
                let measurement = outcome.with_context(|| {
                    format!("round {round}, {}, {nodes} node(s)", workload.name())
                })?;
                println!("{}", measurement.line());
                measurements.push(measurement);
            }
        }
        if let Some(pgbench) = pgbench {
            match pgbench.run(bench.clients, bench.duration).await {
                Some(value) => {
                    println!(
                        "round {round} · pgbench TPC-B-like, {} clients: {value:.0} tps",
                        bench.clients
                    );
                    tps.push(value);
                }
                None => println!("round {round} · pgbench: failed"),
            }
        }
    }
    Ok((measurements, tps))
}

fn print_summary(bench: &ClusterBench, measurements: &[Measurement], tps: &[f64]) {
    let pgbench_tps = (!tps.is_empty()).then(|| report::median(tps.iter().copied()));
    let summaries: Vec<_> = bench
        .workloads
        .iter()
        .flat_map(|&workload| {
            (1..=bench.max_nodes)
                .filter_map(move |nodes| report::summarise(measurements, workload, nodes))
        })
        .collect();
    println!();
    println!(
        "Medians of {} round(s), {} clients, {:?} each{}:",
        bench.rounds,
        bench.clients,
        bench.duration,
        bench.cpu_quota.map_or_else(String::new, |cores| format!(
            ", nodes capped at {cores} core"
        ))
    );
    for workload in &bench.workloads {
        let of = |nodes: usize| {
            summaries
                .iter()
                .find(|s| s.workload == *workload && s.nodes == nodes)
        };
        if let (Some(one), Some(most)) = (of(1), of(bench.max_nodes)) {
            println!(
                "{}: {} nodes ÷ 1 node bookings/s = {:.2}",
                workload.name(),
                bench.max_nodes,
                most.bookings_per_sec / one.bookings_per_sec
            );
        }
        for summary in summaries.iter().filter(|s| s.workload == *workload) {
            println!(
                "{}: {} node(s): {:.1} bookings per node-CPU-second",
                workload.name(),
                summary.nodes,
                summary.per_node_cpu_sec
            );
        }
    }
    println!();
    print!("{}", report::table(&summaries, pgbench_tps, bench.clients));
}
