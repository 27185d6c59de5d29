//! `marquee-bench surge`: the surge end to end on three `marquee serve` processes behind a
//! `marquee gateway` process (round robin), at capacity and at twice it.
//!
//! A run: an event with its waiting room admitting `rate` fans a second; `fans` fans join at
//! once through the gateway, each waits for its admission by long polling `queue:{token}`, holds
//! two seats of its own with the pass (so every booking can succeed: the figure is capacity, not
//! contention) and pays, every request under an `Idempotency-Key` and tried again after
//! `Retry-After` when shed (503) or over a quota (429). A seat-channel subscriber on each node
//! times push delivery from each answer. The 2× run doubles the fans and the rate and adds a
//! third as many fans without a pass hammering the hold endpoint. Each round runs both, then
//! `pgbench` TPC-B-like on the same PostgreSQL (the cluster bench's anchor), so figures compare
//! across machines as ratios; medians of rounds are reported.
//!
//! Everything — nodes, gateway, PostgreSQL, Redis, NATS and this load generator — shares one
//! machine, so "capacity" here is that machine's.

use super::{anchor, ready, report, start_cluster, stop_cluster, Cluster, ClusterBench, SECRET};
use anyhow::Context;
use futures::StreamExt;
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::Role;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct SurgeBench {
    /// Where the nodes' engines are (and pgbench's clients and run length).
    pub cluster: ClusterBench,
    /// Fans of the run at capacity (twice as many at 2×).
    pub fans: usize,
    /// Admissions a second at capacity (twice it at 2×).
    pub rate: u32,
    /// `--booking-max-in-flight` of every node; the product's default when absent.
    pub booking_max_in_flight: Option<usize>,
}

/// What one fan's client saw.
#[derive(Default)]
struct FanTimes {
    join_ms: f64,
    wait_ms: f64,
    admitted_at: Option<Instant>,
    /// The try that was let in, and from the first try to the final answer.
    hold_ms: Option<f64>,
    hold_total_ms: Option<f64>,
    order_ms: Option<f64>,
    order_total_ms: Option<f64>,
    held: Option<(Vec<String>, Instant)>,
    sold: Option<Instant>,
    hold_started: Option<Instant>,
    /// Tries refused with 503 or 429, and answers that are neither success nor a clean refusal.
    shed: usize,
    failed: Vec<u16>,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct SurgeRun {
    pub level: usize,
    pub fans: usize,
    pub admissions_per_sec: f64,
    pub bookings_per_sec: f64,
    pub bookings: usize,
    /// Step → (p50, p99) in ms.
    pub steps: BTreeMap<&'static str, (f64, f64)>,
    pub shed: usize,
    pub crasher_refusals: BTreeMap<u16, usize>,
    pub failures: usize,
}

/// A POST under `key`, tried again after `Retry-After` on 429 and 503 (and 100 ms after no
/// answer) for up to a minute: the final status and body, the final try's time, and the tries
/// refused.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    pass: Option<&str>,
    body: &Value,
    key: &str,
) -> (u16, Value, f64, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shed = 0;
    loop {
        let mut request = client
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body);
        if let Some(pass) = pass {
            request = request.header("x-marquee-pass", pass);
        }
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let took = started.elapsed().as_secs_f64() * 1000.0;
                if !matches!(status, 429 | 503) || Instant::now() > deadline {
                    return (status, body, took, shed);
                }
                shed += 1;
                wait = wait.max(Duration::from_secs(retry_after.unwrap_or(1)));
            }
            Err(_) if Instant::now() > deadline => return (0, Value::Null, 0.0, shed),
            Err(_) => {}
        }
        tokio::time::sleep(wait).await;
    }
}

/// Long-polls `queue:{token}` through `base` until the admission; the pass.
async fn await_pass(
    client: &reqwest::Client,
    base: &str,
    queue_token: &str,
    times: &mut FanTimes,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut since = 0;
    while Instant::now() < deadline {
        let Ok(response) = client
            .get(format!(
                "{base}/api/v1/push/poll?channel=queue:{queue_token}&since={since}&timeout_s=10"
            ))
            .send()
            .await
        else {
            continue;
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            times.failed.push(status);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        for message in body.as_array().cloned().unwrap_or_default() {
            if message["data"]["status"] == "admitted" {
                return message["data"]["pass"].as_str().map(str::to_string);
            }
            since = message["offset"].as_u64().unwrap_or(since);
        }
    }
    None
}

async fn fan(
    client: reqwest::Client,
    base: String,
    event_id: Arc<String>,
    seats: [String; 2],
    token: String,
    index: usize,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> FanTimes {
    let mut times = FanTimes::default();
    if go.wait_for(|go| *go).await.is_err() {
        return times;
    }
    let started = Instant::now();
    let (status, joined, _, shed) = send(
        &client,
        &format!("{base}/api/v1/events/{event_id}/queue"),
        &token,
        None,
        &json!({}),
        &format!("join-{index}"),
    )
    .await;
    times.shed += shed;
    times.join_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != 201 {
        times.failed.push(status);
        return times;
    }
    let joined_at = Instant::now();
    let pass = match joined["pass"].as_str() {
        Some(pass) => Some(pass.to_string()),
        None => match joined["token"].as_str() {
            Some(queue_token) => await_pass(&client, &base, queue_token, &mut times).await,
            None => None,
        },
    };
    let Some(pass) = pass else {
        times.failed.push(0);
        return times;
    };
    times.admitted_at = Some(Instant::now());
    times.wait_ms = joined_at.elapsed().as_secs_f64() * 1000.0;

    let holding = Instant::now();
    times.hold_started = Some(holding);
    let (status, hold, took, shed) = send(
        &client,
        &format!("{base}/api/v1/events/{event_id}/holds"),
        &token,
        Some(&pass),
        &json!({ "seat_ids": seats }),
        &format!("hold-{index}"),
    )
    .await;
    times.shed += shed;
    times.hold_ms = Some(took);
    times.hold_total_ms = Some(holding.elapsed().as_secs_f64() * 1000.0);
    if status != 201 {
        times.failed.push(status);
        return times;
    }
    times.held = Some((seats.to_vec(), Instant::now()));
    let ordering = Instant::now();
    let (status, _, took, shed) = send(
        &client,
        &format!("{base}/api/v1/orders"),
        &token,
        None,
        &json!({"hold_id": hold["id"], "payment": {"method": "card", "token": "tok_visa"}}),
        &format!("order-{index}"),
    )
    .await;
    times.shed += shed;
    times.order_ms = Some(took);
    times.order_total_ms = Some(ordering.elapsed().as_secs_f64() * 1000.0);
    if status == 201 {
        times.sold = Some(Instant::now());
    } else {
        times.failed.push(status);
    }
    times
}

/// (seat, status) → when it first arrived, from every node's seat channel.
type Arrivals = Arc<Mutex<HashMap<(String, String), Vec<Instant>>>>;

async fn follow_seats(
    client: &reqwest::Client,
    cluster: &Cluster,
    event_id: &str,
    arrivals: &Arrivals,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut readers = Vec::new();
    for url in &cluster.urls {
        let mut response = client
            .get(format!(
                "{url}/api/v1/push/sse?channel=event:{event_id}:seats"
            ))
            .timeout(Duration::from_secs(3600))
            .send()
            .await?
            .error_for_status()?;
        let arrivals = Arc::clone(arrivals);
        readers.push(tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for message in crate::product::take_sse_messages(&mut buffer) {
                    let status = message["data"]["status"].as_str().unwrap_or("").to_string();
                    let Ok(mut arrivals) = arrivals.lock() else {
                        return;
                    };
                    for seat in message["data"]["seat_ids"].as_array().into_iter().flatten() {
                        if let Some(seat) = seat.as_str() {
                            arrivals
                                .entry((seat.to_string(), status.clone()))
                                .or_default()
                                .push(now);
                        }
                    }
                }
            }
        }));
    }
    Ok(readers)
}

/// p50 and p99 of `values` (ms).
fn p50_p99(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        report::percentile(&values, 0.50),
        report::percentile(&values, 0.99),
    )
}

/// One run at `level` × capacity on a fresh cluster behind a fresh gateway.
async fn run_level(
    bench: &SurgeBench,
    level: usize,
    client: &reqwest::Client,
    dir: &std::path::Path,
) -> anyhow::Result<SurgeRun> {
    let fans = bench.fans * level;
    let crashers = if level > 1 { bench.fans / 3 } else { 0 };
    let rate = bench.rate * level as u32;
    let mut node_args = vec!["--queue-joins-per-ip".to_string(), "100000000".to_string()];
    if let Some(limit) = bench.booking_max_in_flight {
        node_args.extend(["--booking-max-in-flight".to_string(), limit.to_string()]);
    }
    let cluster = start_cluster(&bench.cluster, None, 3, &node_args, client, dir).await?;
    let outcome = async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let mut gateway = Command::new(crate::product::marquee_binary()?);
        gateway
            .args(["--log-filter", "error", "gateway"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--balance", "round-robin", "--access-log", "false"])
            .env("MARQUEE_JWT_SECRET", SECRET)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for url in &cluster.urls {
            gateway.args(["--upstream", url]);
        }
        let _gateway = gateway.spawn().context("starting marquee gateway")?;
        ready(client, &base).await?;
        surge(&cluster, client, &base, level, fans, crashers, rate).await
    }
    .await;
    stop_cluster(&bench.cluster, cluster).await?;
    outcome
}

async fn surge(
    cluster: &Cluster,
    client: &reqwest::Client,
    base: &str,
    level: usize,
    fans: usize,
    crashers: usize,
    rate: u32,
) -> anyhow::Result<SurgeRun> {
    // The fixture, through node 1: a venue with two seats per fan, the event with its room.
    let issuer = TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec())?,
        Duration::from_secs(7200),
    );
    let organizer = super::workload::user(Role::Organizer, "organizer")?;
    cluster.store.create_user(&organizer, "unused").await?;
    let token = issuer.issue(&organizer.id, Role::Organizer)?;
    let per_row = 500;
    let rows: Vec<Value> = (0..(2 * fans).div_ceil(per_row))
        .map(|row| json!({"label": format!("R{row}"), "seats": per_row}))
        .collect();
    let url = &cluster.urls[0];
    let (venue_id, seats) =
        crate::product::venue_seats(client, url, &token, "Surge Arena", rows).await?;
    let event_id = crate::product::publish_event(
        client,
        url,
        &token,
        &json!({"title": "Surge Night", "venue_id": venue_id, "category": "concert",
                "starts_at": "2031-01-01T20:00:00Z",
                "waiting_room": {"enabled": true, "admit_per_minute": rate * 60,
                                 "pass_ttl_seconds": 900},
                "price_tiers": [{"name": "Bowl", "price_cents": 5000, "currency": "GBP",
                                 "sections": ["Bowl"]}]}),
    )
    .await?;
    let store = Arc::clone(&cluster.store);
    let tokens = futures::stream::iter((0..fans + crashers).map(|_| {
        let (store, issuer) = (Arc::clone(&store), issuer.clone());
        async move {
            let fan = super::workload::user(Role::Fan, "fan")?;
            store.create_user(&fan, "unused").await?;
            anyhow::Ok(issuer.issue(&fan.id, Role::Fan)?)
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;

    let arrivals: Arrivals = Arc::default();
    let readers = follow_seats(client, cluster, &event_id, &arrivals).await?;
    let event_id = Arc::new(event_id);
    let (go, ready) = tokio::sync::watch::channel(false);
    let runners: Vec<_> = tokens[..fans]
        .iter()
        .enumerate()
        .map(|(index, token)| {
            tokio::spawn(fan(
                client.clone(),
                base.to_string(),
                Arc::clone(&event_id),
                [seats[2 * index].clone(), seats[2 * index + 1].clone()],
                token.clone(),
                index,
                ready.clone(),
            ))
        })
        .collect();
    // Fans without a pass, hammering holds (20 ms apart, or after Retry-After) while the
    // surge lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let hammering: Vec<_> = tokens[fans..]
        .iter()
        .enumerate()
        .map(|(n, token)| {
            let (client, stop, token) = (client.clone(), Arc::clone(&stop), token.clone());
            let url = format!("{base}/api/v1/events/{event_id}/holds");
            let seat = seats[n % seats.len()].clone();
            tokio::spawn(async move {
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"seat_ids": [seat]}))
                        .send()
                        .await;
                    let (status, retry_after) = match answer {
                        Ok(response) => (
                            response.status().as_u16(),
                            response
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|value| value.to_str().ok())
                                .and_then(|value| value.parse::<u64>().ok()),
                        ),
                        Err(_) => (0, None),
                    };
                    *statuses.entry(status).or_default() += 1;
                    let wait = retry_after.map_or(Duration::from_millis(20), Duration::from_secs);
                    tokio::time::sleep(wait).await;
                }
                statuses
            })
        })
        .collect();
    let started = Instant::now();
    go.send_replace(true);
    let mut outcomes = Vec::with_capacity(fans);
    for runner in runners {
        outcomes.push(runner.await?);
    }
    stop.store(true, Ordering::Relaxed);
    let mut crasher_refusals: BTreeMap<u16, usize> = BTreeMap::new();
    for hammer in hammering {
        for (status, count) in hammer.await? {
            *crasher_refusals.entry(status).or_default() += count;
        }
    }
    // Seat changes still on their way to the subscribers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for reader in &readers {
        reader.abort();
    }

    let admitted: Vec<Instant> = outcomes.iter().filter_map(|fan| fan.admitted_at).collect();
    let span = |times: &[Instant]| {
        let first = times.iter().min().copied().unwrap_or(started);
        let last = times.iter().max().copied().unwrap_or(started);
        last.saturating_duration_since(first)
            .as_secs_f64()
            .max(0.001)
    };
    let sold: Vec<Instant> = outcomes.iter().filter_map(|fan| fan.sold).collect();
    let booking_window = {
        let first = outcomes
            .iter()
            .filter_map(|fan| fan.hold_started)
            .min()
            .unwrap_or(started);
        let last = sold.iter().max().copied().unwrap_or(first);
        last.saturating_duration_since(first)
            .as_secs_f64()
            .max(0.001)
    };
    let mut deliveries = Vec::new();
    if let Ok(arrivals) = arrivals.lock() {
        for fan in &outcomes {
            let Some((seats, held_at)) = &fan.held else {
                continue;
            };
            let changes = [("held", Some(*held_at)), ("sold", fan.sold)];
            for (status, answered) in changes {
                let Some(answered) = answered else { continue };
                for seat in seats {
                    for arrived in arrivals
                        .get(&(seat.clone(), status.to_string()))
                        .into_iter()
                        .flatten()
                    {
                        deliveries
                            .push(arrived.saturating_duration_since(answered).as_secs_f64() * 1e3);
                    }
                }
            }
        }
    }
    let pick = |f: &dyn Fn(&FanTimes) -> Option<f64>| outcomes.iter().filter_map(f).collect();
    let mut steps = BTreeMap::new();
    steps.insert("1 join", p50_p99(pick(&|fan| Some(fan.join_ms))));
    steps.insert(
        "2 wait for admission",
        p50_p99(pick(&|fan| fan.admitted_at.map(|_| fan.wait_ms))),
    );
    steps.insert("3 hold (let in)", p50_p99(pick(&|fan| fan.hold_ms)));
    steps.insert(
        "4 hold (with retries)",
        p50_p99(pick(&|fan| fan.hold_total_ms)),
    );
    steps.insert("5 order (let in)", p50_p99(pick(&|fan| fan.order_ms)));
    steps.insert(
        "6 order (with retries)",
        p50_p99(pick(&|fan| fan.order_total_ms)),
    );
    steps.insert("7 push delivery", p50_p99(deliveries));
    Ok(SurgeRun {
        level,
        fans,
        admissions_per_sec: admitted.len() as f64 / span(&admitted),
        bookings_per_sec: sold.len() as f64 / booking_window,
        bookings: sold.len(),
        steps,
        shed: outcomes.iter().map(|fan| fan.shed).sum(),
        crasher_refusals,
        failures: outcomes.iter().map(|fan| fan.failed.len()).sum(),
    })
}

impl SurgeRun {
    fn line(&self, round: usize) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, (p50, p99))| format!("{}: {p50:.1}/{p99:.1}", &step[2..]))
            .collect();
        format!(
            "round {round} · {}× ({} fans): {:.1} admissions/s, {:.1} bookings/s ({} booked), \
             shed {}, failed {}, without a pass {:?}; p50/p99 ms {}",
            self.level,
            self.fans,
            self.admissions_per_sec,
            self.bookings_per_sec,
            self.bookings,
            self.shed,
            self.failures,
            self.crasher_refusals,
            steps.join(", ")
        )
    }
}

pub async fn run_surge(bench: &SurgeBench) -> anyhow::Result<Vec<(usize, SurgeRun)>> {
    let synchronous_commit = anchor::synchronous_commit(&bench.cluster.database_url).await?;
    println!("PostgreSQL synchronous_commit = {synchronous_commit}; pgbench -i -s 64 …");
    let pgbench = anchor::Pgbench::init(&bench.cluster.database_url, &synchronous_commit).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4 * bench.fans + 64)
        .timeout(Duration::from_secs(60))
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    let mut tps = Vec::new();
    let outcome = async {
        for round in 1..=bench.cluster.rounds {
            for level in [1, 2] {
                let run = run_level(bench, level, &client, dir.path())
                    .await
                    .with_context(|| format!("round {round}, {level}×"))?;
                println!("{}", run.line(round));
                runs.push((round, run));
            }
            if let Some(pgbench) = &pgbench {
                match pgbench
                    .run(bench.cluster.clients, bench.cluster.duration)
                    .await
                {
                    Some(value) => {
                        println!(
                            "round {round} · pgbench TPC-B-like, {} clients: {value:.0} tps",
                            bench.cluster.clients
                        );
                        tps.push(value);
                    }
                    None => println!("round {round} · pgbench: failed"),
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(pgbench) = pgbench {
        pgbench.drop_schema().await?;
    }
    outcome?;
    print_summary(bench, &runs, &tps);
    Ok(runs)
}

fn print_summary(bench: &SurgeBench, runs: &[(usize, SurgeRun)], tps: &[f64]) {
    let pgbench = report::median(tps.iter().copied());
    println!();
    println!(
        "Medians of {} round(s); {} fans at {} admissions/s (1×), twice both (2×) plus {} \
         without a pass; booking limit {}; pgbench {pgbench:.0} tps",
        bench.cluster.rounds,
        bench.fans,
        bench.rate,
        bench.fans / 3,
        bench
            .booking_max_in_flight
            .map_or_else(|| "default".to_string(), |limit| limit.to_string()),
    );
    let of = |level: usize| runs.iter().filter(move |(_, run)| run.level == level);
    let median = |level: usize, f: &dyn Fn(&SurgeRun) -> f64| {
        report::median(of(level).map(|(_, run)| f(run)))
    };
    println!("| | 1× | 2× |");
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&SurgeRun) -> f64, digits: usize| {
        println!(
            "| {name} | {:.digits$} | {:.digits$} |",
            median(1, f),
            median(2, f)
        );
    };
    row("admissions/s", &|run| run.admissions_per_sec, 1);
    row("bookings/s", &|run| run.bookings_per_sec, 1);
    row(
        "bookings/s ÷ pgbench tps",
        &|run| run.bookings_per_sec / pgbench,
        3,
    );
    row("fans' tries shed (503/429)", &|run| run.shed as f64, 0);
    row("fans' failures", &|run| run.failures as f64, 0);
    let steps: Vec<&'static str> = of(1)
        .next()
        .map(|(_, run)| run.steps.keys().copied().collect())
        .unwrap_or_default();
    for step in steps {
        row(
            &format!("{} p50 ms", &step[2..]),
            &|run| run.steps.get(step).map_or(f64::NAN, |(p50, _)| *p50),
            1,
        );
        row(
            &format!("{} p99 ms", &step[2..]),
            &|run| run.steps.get(step).map_or(f64::NAN, |(_, p99)| *p99),
            1,
        );
    }
    let refusals: BTreeMap<u16, usize> = of(2).fold(BTreeMap::new(), |mut all, (_, run)| {
        for (status, count) in &run.crasher_refusals {
            *all.entry(*status).or_default() += count;
        }
        all
    });
    println!("Holds without a pass, all rounds: {refusals:?}");
}
