//! Faults across a real network: three `marquee serve` nodes, each in a network namespace of
//! its own (support/network.rs), behind the gateway, selling seats to fans who retry under
//! their idempotency keys, while one node is cut from PostgreSQL, Redis, NATS or the gateway by
//! nftables rules in its namespace, loses a share of its packets, talks to its services through
//! a delay, or has its wall clock moved past the hold TTL, and then heals.
//!
//! Each scenario asserts the same things afterwards: no seat has two valid tickets in
//! PostgreSQL, every order a fan saw confirmed is there (on every node), every request asked
//! again under its key answers what it answered the fan, and the nodes' seat maps agree. It
//! prints (eprintln) how long the gateway took to take the node out and how long the node took
//! to recover after the heal. Times are measured, never asserted.
//!
//! Run them alone: `cargo nextest run -p marquee --test api faults::` (as root).

use crate::cluster::{
    assert_nothing_sold_twice, fans, on_sale, progress, race_retrying, ready, send, send_with,
    tally, Cluster, ClusterOptions, FanOutcome, Placement, Sale, Sent,
};
use crate::gateway::gateway_config;
use crate::support::network::{service_address, Clock, Network, Relay};
use crate::support::{postgres_url, TestApp};
use marquee_gateway::{Gateway, Policy};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);
/// The node the faults happen to (`node-2`).
const FAULTY: usize = 1;
const FANS: usize = 240;
/// Fans' clients try again, same key, on no answer and on any server error.
const RETRY_ON_FAILURE: &[u16] = &[0, 500, 502, 503, 504];

enum Fault {
    CutFromPostgres,
    CutFromRedis,
    CutFromNats,
    CutFromGateway,
    /// Percent of packets dropped each way.
    PacketLoss(u8),
    /// Added each way to every chunk between the node and its services.
    Latency(Duration),
    /// Seconds the node's wall clock jumps ahead, against holds of `HOLD_TTL`.
    ClockSkew(i64),
}

/// Short holds, so a skew of seconds outruns them.
const HOLD_TTL: &str = "10s";

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::CutFromPostgres => "node-2 cut from PostgreSQL".into(),
            Fault::CutFromRedis => "node-2 cut from Redis".into(),
            Fault::CutFromNats => "node-2 cut from NATS".into(),
            Fault::CutFromGateway => "node-2 cut from the gateway".into(),
            Fault::PacketLoss(percent) => format!("node-2 losing {percent}% of its packets"),
            Fault::Latency(delay) => {
                format!("node-2 {} ms from its services", delay.as_millis())
            }
            Fault::ClockSkew(seconds) => {
                format!("node-2's clock {seconds:+} s against {HOLD_TTL} holds")
            }
        }
    }
}

/// The services on the bridge's address, a cluster in namespaces, the gateway in front, and a
/// published sale.
struct Harness {
    cluster: Cluster,
    gateway: Gateway,
    sale: Sale,
    tokens: Vec<String>,
    postgres: Relay,
    redis: Relay,
    nats: Relay,
    clock: Clock,
    // Last: the namespaces go after the processes in them.
    network: Network,
}

impl Harness {
    async fn start(fault: &Fault) -> Harness {
        let network = Network::create(3);
        let postgres_upstream = postgres_url();
        let redis_upstream = std::env::var("MARQUEE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let nats_upstream = std::env::var("MARQUEE_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let postgres = Relay::start(network.host, service_address(&postgres_upstream, 5432)).await;
        let redis = Relay::start(network.host, service_address(&redis_upstream, 6379)).await;
        let nats = Relay::start(network.host, service_address(&nats_upstream, 4222)).await;
        // For the skew, the faulty node runs on a clock of its own (no offset until moved).
        let clock = Clock::new();
        let skewed = matches!(fault, Fault::ClockSkew(_));
        let placements = (0..3)
            .map(|index| Placement {
                address: network.node_address(index),
                wrapper: network.wrapper(index),
                env: if index == FAULTY && skewed {
                    clock.env()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let cluster = Cluster::start(
            3,
            ClusterOptions {
                node_args: vec!["--hold-ttl".into(), HOLD_TTL.into()],
                placements,
                postgres_url: Some(postgres.url(&postgres_upstream)),
                redis_url: Some(redis.url(&redis_upstream)),
                nats_url: Some(nats.url(&nats_upstream)),
                ..ClusterOptions::default()
            },
        )
        .await;
        let mut config = gateway_config(&cluster.urls());
        config.policies = vec![marquee_gateway::GroupPolicy {
            group: "api".into(),
            policy: Policy::RoundRobin,
        }];
        config.health.interval = Duration::from_millis(100);
        config.ejection.base = Duration::from_secs(1);
        // A request stuck on a node cut off mid-way comes back as a 504 the fan retries.
        config.response_timeout = Duration::from_secs(5);
        config.connect_timeout = Duration::from_secs(2);
        let gateway = Gateway::start(config).await.expect("gateway");
        let sale = on_sale(&TestApp::client_of(gateway.url())).await;
        let tokens = fans(cluster.store().await.as_ref(), FANS).await;
        Harness {
            cluster,
            gateway,
            sale,
            tokens,
            postgres,
            redis,
            nats,
            clock,
            network,
        }
    }

    fn inject(&self, fault: &Fault) {
        let node = self.network.node_ip(FAULTY).into();
        match fault {
            Fault::CutFromPostgres => self
                .network
                .cut_from_host_port(FAULTY, self.postgres.address.port()),
            Fault::CutFromRedis => self
                .network
                .cut_from_host_port(FAULTY, self.redis.address.port()),
            Fault::CutFromNats => self
                .network
                .cut_from_host_port(FAULTY, self.nats.address.port()),
            Fault::CutFromGateway => self.network.cut_inbound(FAULTY),
            Fault::PacketLoss(percent) => self.network.lose(FAULTY, *percent),
            Fault::Latency(delay) => {
                for relay in [&self.postgres, &self.redis, &self.nats] {
                    relay.delay(node, *delay);
                }
            }
            Fault::ClockSkew(seconds) => self.clock.set_offset(*seconds),
        }
    }

    fn heal(&self) {
        let node = self.network.node_ip(FAULTY).into();
        self.network.heal(FAULTY);
        for relay in [&self.postgres, &self.redis, &self.nats] {
            relay.delay(node, Duration::ZERO);
        }
        self.clock.set_offset(0);
    }

    /// Whether the gateway sends the faulty node requests.
    fn in_rotation(&self) -> bool {
        let status = &self.gateway.upstreams()[FAULTY];
        status.healthy && !status.ejected
    }

    async fn stop(self) {
        self.gateway.shutdown().await;
        self.cluster.stop().await;
    }
}

/// What a scenario measured.
#[derive(Debug)]
struct Timings {
    /// From the fault to the gateway taking the node out, if it did.
    taken_out: Option<Duration>,
    fault_lasted: Duration,
    /// From the heal to the node answering `/readyz` 200 itself.
    ready: Duration,
    /// From the heal to the gateway sending it requests again.
    in_rotation: Duration,
    /// From the end of the sale to every node's seat map being the same.
    maps_agree: Duration,
}

/// Waits until `done` fans have their answers.
async fn answered(progress: &tokio::sync::watch::Sender<usize>, done: usize) {
    let mut answered = progress.subscribe();
    tokio::time::timeout(PATIENCE, answered.wait_for(|answered| *answered >= done))
        .await
        .expect("the sale goes on: fans keep being answered")
        .expect("the sale is running");
}

/// A sale through the gateway; a quarter of the way in, `fault`, held for at least 4 s and
/// while another eighth of the fans are answered; then the heal, and the checks.
async fn scenario(fault: Fault) {
    let harness = Harness::start(&fault).await;
    let name = fault.name();
    let progress = progress();
    let targets = vec![harness.gateway.url()];
    let racing = race_retrying(
        &targets,
        &harness.sale,
        &harness.tokens,
        24,
        Arc::clone(&progress),
        RETRY_ON_FAILURE,
    );
    let faulting = async {
        answered(&progress, FANS / 4).await;
        let at_fault = *progress.borrow();
        harness.inject(&fault);
        let faulted = Instant::now();
        let mut taken_out = None;
        let hold_for = async {
            loop {
                if taken_out.is_none() && !harness.in_rotation() {
                    taken_out = Some(faulted.elapsed());
                }
                if faulted.elapsed() >= Duration::from_secs(4)
                    && *progress.borrow() >= at_fault + FANS / 8
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(PATIENCE, hold_for)
            .await
            .unwrap_or_else(|_| panic!("{name}: the sale stopped under the fault"));
        let fault_lasted = faulted.elapsed();
        harness.heal();
        let healed = Instant::now();
        ready(&harness.cluster.url(FAULTY)).await;
        let ready = healed.elapsed();
        let back = async {
            while !harness.in_rotation() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(PATIENCE, back)
            .await
            .unwrap_or_else(|_| panic!("{name}: the gateway never took node-2 back"));
        (taken_out, fault_lasted, ready, healed.elapsed())
    };
    let (outcomes, (taken_out, fault_lasted, ready, in_rotation)) = tokio::join!(racing, faulting);
    let tally = tally(&outcomes);
    eprintln!("{name}: {tally:?}");
    let sale_ended = Instant::now();
    let timings = Timings {
        taken_out,
        fault_lasted,
        ready,
        in_rotation,
        maps_agree: seat_maps_agree(&harness, &name).await - sale_ended,
    };
    check(&harness, &outcomes, &name).await;
    eprintln!(
        "{name}: taken out of the gateway after {}, fault held {} ms; after the heal ready in \
         {} ms, back in the gateway's rotation in {} ms; seat maps agreed {} ms after the sale",
        timings
            .taken_out
            .map_or("(never)".to_string(), |out| format!(
                "{} ms",
                out.as_millis()
            )),
        timings.fault_lasted.as_millis(),
        timings.ready.as_millis(),
        timings.in_rotation.as_millis(),
        timings.maps_agree.as_millis(),
    );
    harness.stop().await;
}

async fn check(harness: &Harness, outcomes: &[FanOutcome], name: &str) {
    check_sale(
        &harness.cluster,
        &harness.sale,
        &harness.tokens,
        outcomes,
        name,
    )
    .await;
}

/// Every answer final and clean, nothing sold twice, nothing confirmed lost, every keyed
/// request answering the same again, on every node of `cluster` (fan `i` has `tokens[i]`).
pub(crate) async fn check_sale(
    cluster: &Cluster,
    sale: &Sale,
    tokens: &[String],
    outcomes: &[FanOutcome],
    name: &str,
) {
    let tally = tally(outcomes);
    for outcome in outcomes {
        assert!(
            [201, 409, 422].contains(&outcome.hold),
            "{name}: every hold is granted or refused cleanly: {tally:?}"
        );
        // 409: the hold ended under the fault (a lease or deadline lapsed), refused cleanly.
        assert!(
            outcome
                .order
                .is_none_or(|order| order == 201 || order == 409),
            "{name}: every order is confirmed or refused cleanly: {tally:?}"
        );
    }
    assert!(
        tally.get("order 201").copied().unwrap_or(0) > 0,
        "{name}: orders were confirmed: {tally:?}"
    );
    // PostgreSQL: one valid ticket per seat, and the seats with one are exactly those of the
    // orders the fans saw confirmed.
    let store = cluster.database_url.clone();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&store).await.expect("database");
    let twice: Vec<(String, i64)> = sqlx::query_as(
        "SELECT seat_id, COUNT(*) FROM tickets WHERE event_id = $1 AND valid = 1 \
         AND seat_id IS NOT NULL GROUP BY seat_id HAVING COUNT(*) > 1",
    )
    .bind(&sale.event_id)
    .fetch_all(&pool)
    .await
    .expect("tickets");
    assert!(twice.is_empty(), "{name}: seats sold twice: {twice:?}");
    let in_database: BTreeSet<String> = sqlx::query_as::<_, (String,)>(
        "SELECT seat_id FROM tickets WHERE event_id = $1 AND valid = 1 AND seat_id IS NOT NULL",
    )
    .bind(&sale.event_id)
    .fetch_all(&pool)
    .await
    .expect("tickets")
    .into_iter()
    .map(|(seat,)| seat)
    .collect();
    pool.close().await;
    let confirmed_seats: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.confirmed.as_ref())
        .flat_map(|order| order["tickets"].as_array().cloned().unwrap_or_default())
        .filter_map(|ticket| ticket["seat_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        in_database, confirmed_seats,
        "{name}: the database's sold seats are the confirmed orders' seats"
    );
    assert_nothing_sold_twice(outcomes, &cluster.client(0), sale).await;

    // Every node: each confirmed order is there, and each keyed request asked again answers
    // what the fan was answered.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let checks = outcomes
        .iter()
        .enumerate()
        .flat_map(|(fan, outcome)| (0..3).map(move |node| (fan, outcome, node)));
    let failures: Vec<String> =
        futures::StreamExt::collect::<Vec<Option<String>>>(futures::StreamExt::buffer_unordered(
            futures::stream::iter(checks.map(|(fan, outcome, node)| {
                let client = client.clone();
                let url = cluster.url(node);
                let token = tokens[fan].clone();
                let event_id = sale.event_id.clone();
                async move {
                    same_answers(&client, &url, &token, &event_id, fan, outcome)
                        .await
                        .err()
                }
            })),
            24,
        ))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        failures.is_empty(),
        "{name}: {} answers differ, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Asks node `url` for fan `fan`'s order, and asks again under the fan's keys.
async fn same_answers(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    event_id: &str,
    fan: usize,
    outcome: &FanOutcome,
) -> Result<(), String> {
    let pass: Vec<(&str, &str)> = outcome
        .pass
        .as_deref()
        .map(|pass| ("x-marquee-pass", pass))
        .into_iter()
        .collect();
    let Sent { status, body, .. } = send_with(
        client,
        &format!("{url}/api/v1/events/{event_id}/holds"),
        token,
        &pass,
        &outcome.hold_request,
        &format!("hold-{fan}"),
        // A node at its booking limit sheds before doing anything: ask again.
        &[503],
    )
    .await;
    if (status, &body) != (outcome.hold, &outcome.hold_body) {
        return Err(format!(
            "{url}: hold-{fan} answered {status} {body}, first {} {}",
            outcome.hold, outcome.hold_body
        ));
    }
    if let (Some(order), Some(request), Some(first)) =
        (outcome.order, &outcome.order_request, &outcome.order_body)
    {
        let (status, body) = send(
            client,
            &format!("{url}/api/v1/orders"),
            token,
            request,
            &format!("order-{fan}"),
            &[503],
        )
        .await;
        if (status, &body) != (order, first) {
            return Err(format!(
                "{url}: order-{fan} answered {status} {body}, first {order} {first}"
            ));
        }
    }
    if let Some(confirmed) = &outcome.confirmed {
        let id = confirmed["id"].as_str().unwrap_or_default();
        let response = client
            .get(format!("{url}/api/v1/orders/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|error| format!("{url}: order {id}: {error}"))?;
        let status = response.status();
        let stored: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK || stored["status"] != "confirmed" {
            return Err(format!("{url}: confirmed order {id} is {status} {stored}"));
        }
    }
    Ok(())
}

/// Waits until every node answers the same seat map (status of each seat, standing places
/// left) and returns when they did.
async fn seat_maps_agree(harness: &Harness, name: &str) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut maps = Vec::new();
        for node in 0..3 {
            let seats = harness
                .cluster
                .client(node)
                .get(
                    &format!("/api/v1/events/{}/seats", harness.sale.event_id),
                    None,
                )
                .await
                .expect(StatusCode::OK);
            let statuses: BTreeMap<String, String> = seats["seats"]
                .as_array()
                .expect("seats")
                .iter()
                .map(|seat| (seat["id"].to_string(), seat["status"].to_string()))
                .collect();
            maps.push((statuses, seats["general_admission"][0]["available"].clone()));
        }
        if maps.windows(2).all(|pair| pair[0] == pair[1]) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the nodes' seat maps never agreed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_postgres_then_healed() {
    scenario(Fault::CutFromPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_redis_then_healed() {
    scenario(Fault::CutFromRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_nats_then_healed() {
    scenario(Fault::CutFromNats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_gateway_then_healed() {
    scenario(Fault::CutFromGateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_losing_a_fifth_of_its_packets_then_healed() {
    scenario(Fault::PacketLoss(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_from_its_services_then_healed() {
    scenario(Fault::Latency(Duration::from_millis(100))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_past_the_hold_ttl_then_healed() {
    scenario(Fault::ClockSkew(15)).await;
}
