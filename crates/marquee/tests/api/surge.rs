//! The surge, end to end (issue #32 item 10): fans arriving all at once at an on-sale with its
//! waiting room active, on three `marquee serve` processes behind the gateway over the real
//! PostgreSQL, Redis and NATS — join, wait for admission (long polling `queue:{token}`), hold
//! with the pass, pay under an `Idempotency-Key` — while a subscriber on each node follows the
//! event's seat channel. Then the same beyond capacity: twice the fans at twice the pace, nodes
//! with a tight booking limit, and fans without a pass hammering the hold endpoint.
//!
//! Asserted: admissions in join order (the room is open, so first come, first served: nobody is
//! admitted before a fan who joined ahead of them), nothing sold twice (PostgreSQL), every
//! confirmed order on every node, every keyed request answering the same when asked again,
//! every node's seat channel contiguous and ending at the node's seat map; beyond capacity,
//! every request answered, refusals early and with `Retry-After` (503 or 429) or a 403 for a
//! missing pass, never another 5xx. Latencies per step are printed (eprintln), never asserted.

use crate::cluster::{
    fans, on_sale_with, send_with, tally, Attempt, Cluster, ClusterOptions, FanOutcome, Sale,
};
use crate::faults::check_sale;
use crate::gateway::gateway_config;
use crate::push::SseStream;
use crate::support::TestApp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use marquee_gateway::{Gateway, Policy};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(120);
/// Passes outlive the test, so a hold asked again afterwards under its key still gets past the
/// pass check (which comes before the idempotent part).
const PASS_TTL_SECONDS: u64 = 900;
/// What a well-behaved client tries again on, same key, after `Retry-After`: no answer, a quota
/// (429) and shedding (503).
const RETRY_SHED: &[u16] = &[0, 429, 503];

/// Three nodes behind an in-process gateway that spreads requests round robin (so every node
/// books: the surge is the cluster's, not one node's).
struct Stage {
    cluster: Cluster,
    gateway: Gateway,
}

impl Stage {
    async fn start(node_args: &[&str]) -> Stage {
        let mut args: Vec<String> = vec![
            // Every fan here comes from 127.0.0.1: the per-IP join limit would count them as
            // one client.
            "--queue-joins-per-ip".into(),
            "1000000".into(),
        ];
        args.extend(node_args.iter().map(|arg| arg.to_string()));
        let cluster = Cluster::start(
            3,
            ClusterOptions {
                node_args: args,
                ..ClusterOptions::default()
            },
        )
        .await;
        let mut config = gateway_config(&cluster.urls());
        config.policies = vec![marquee_gateway::GroupPolicy {
            group: "api".into(),
            policy: Policy::RoundRobin,
        }];
        let gateway = Gateway::start(config).await.expect("gateway");
        Stage { cluster, gateway }
    }

    /// An event on sale now whose waiting room admits `admit_per_minute`.
    async fn sale(&self, admit_per_minute: u32) -> Sale {
        on_sale_with(
            &TestApp::client_of(self.gateway.url()),
            Some(
                json!({"enabled": true, "admit_per_minute": admit_per_minute,
                        "pass_ttl_seconds": PASS_TTL_SECONDS}),
            ),
        )
        .await
    }

    async fn stop(self) {
        self.gateway.shutdown().await;
        self.cluster.stop().await;
    }
}

/// What one fan of a surge went through.
struct Fan {
    outcome: FanOutcome,
    /// The place's join number and admission time (ms), from the pass the room signed.
    seq: u64,
    admitted_at: u64,
    join: Duration,
    /// From the join's answer to the pass in hand.
    wait: Duration,
    /// Hold and order from the first try to the final answer (shed tries and their waits
    /// included), and the final try alone (the work of a request that was let in).
    hold: Option<Duration>,
    hold_accepted: Option<Duration>,
    order: Option<Duration>,
    order_accepted: Option<Duration>,
    /// When the hold and the order were answered, for push delivery times.
    held_at: Option<Instant>,
    sold_at: Option<Instant>,
    /// Every try of every request the fan made.
    attempts: Vec<Attempt>,
}

/// The seats a fan asks for: best available, or one or two of the first 300 seats so that
/// fans collide.
fn seats_wanted(index: usize, sale: &Sale) -> Value {
    let mut rng = StdRng::seed_from_u64(index as u64);
    if index.is_multiple_of(3) {
        json!({"quantity": rng.gen_range(1..=2)})
    } else {
        let count = rng.gen_range(1..=2);
        let wanted: Vec<&String> = sale.seat_ids[..300]
            .choose_multiple(&mut rng, count)
            .collect();
        json!({"seat_ids": wanted})
    }
}

/// The pass's join number and expiry: `wp1.` or `wp2.{kid}.`, then base64url of event (16) ‖
/// user (16) ‖ seq (8) ‖ expires (8) ‖ MAC (16), big-endian (`waitroom::signing`).
fn pass_claims(pass: &str) -> (u64, u64) {
    let encoded = pass.rsplit('.').next().expect("a pass has a body");
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("a pass is base64url");
    assert_eq!(bytes.len(), 64, "a pass's bytes");
    let number = |range: std::ops::Range<usize>| {
        u64::from_be_bytes(bytes[range].try_into().expect("eight bytes"))
    };
    (number(32..40), number(40..48))
}

/// Long-polls `queue:{token}` through `base` until the admission arrives; the pass.
async fn await_admission(
    client: &reqwest::Client,
    base: &str,
    queue_token: &str,
    attempts: &mut Vec<Attempt>,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut since = 0;
    loop {
        assert!(Instant::now() < deadline, "no admission for {queue_token}");
        let started = Instant::now();
        let response = client
            .get(format!(
                "{base}/api/v1/push/poll?channel=queue:{queue_token}&since={since}&timeout_s=10"
            ))
            .send()
            .await;
        let Ok(response) = response else {
            attempts.push(Attempt {
                status: 0,
                retry_after: None,
                elapsed: started.elapsed(),
            });
            continue;
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        attempts.push(Attempt {
            status,
            retry_after,
            elapsed: started.elapsed(),
        });
        if status != 200 {
            assert!(
                RETRY_SHED.contains(&status),
                "polling the queue answered {status}: {body}"
            );
            tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
            continue;
        }
        for message in body.as_array().cloned().unwrap_or_default() {
            if message["data"]["status"] == "admitted" {
                return message["data"]["pass"]
                    .as_str()
                    .expect("an admission carries the pass")
                    .to_string();
            }
            since = message["offset"].as_u64().unwrap_or(since);
        }
    }
}

/// One fan: join (once `go` is set, with every other fan), wait, hold with the pass, pay.
async fn fan(
    client: reqwest::Client,
    base: String,
    sale: Arc<Sale>,
    token: String,
    index: usize,
    mut go: watch::Receiver<bool>,
) -> Fan {
    go.wait_for(|go| *go).await.expect("the start");
    let started = Instant::now();
    let joined = send_with(
        &client,
        &format!("{base}/api/v1/events/{}/queue", sale.event_id),
        &token,
        &[],
        &json!({}),
        &format!("join-{index}"),
        RETRY_SHED,
    )
    .await;
    let join = started.elapsed();
    let mut attempts = joined.attempts;
    assert_eq!(joined.status, 201, "a join: {}", joined.body);
    let pass = match joined.body["pass"].as_str() {
        Some(pass) => pass.to_string(),
        None => {
            let queue_token = joined.body["token"].as_str().expect("a queue token");
            await_admission(&client, &base, queue_token, &mut attempts).await
        }
    };
    let wait = started.elapsed() - join;
    let (seq, expires_at) = pass_claims(&pass);

    let hold_request = seats_wanted(index, &sale);
    let holding = Instant::now();
    let held = send_with(
        &client,
        &format!("{base}/api/v1/events/{}/holds", sale.event_id),
        &token,
        &[("x-marquee-pass", pass.as_str())],
        &hold_request,
        &format!("hold-{index}"),
        RETRY_SHED,
    )
    .await;
    let hold = holding.elapsed();
    let hold_accepted = held.attempts.last().map(|attempt| attempt.elapsed);
    attempts.extend(held.attempts.iter().copied());
    let mut fan = Fan {
        outcome: FanOutcome {
            hold: held.status,
            hold_code: held.body["error"]["code"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            lost_hold: false,
            order: None,
            confirmed: None,
            hold_request,
            hold_body: held.body.clone(),
            order_request: None,
            order_body: None,
            pass: Some(pass),
        },
        seq,
        admitted_at: expires_at - PASS_TTL_SECONDS * 1000,
        join,
        wait,
        hold: Some(hold),
        hold_accepted,
        order: None,
        order_accepted: None,
        held_at: (held.status == 201).then(Instant::now),
        sold_at: None,
        attempts,
    };
    if held.status == 201 {
        let request =
            json!({"hold_id": held.body["id"], "payment": {"method": "card", "token": "tok_visa"}});
        let ordering = Instant::now();
        let ordered = send_with(
            &client,
            &format!("{base}/api/v1/orders"),
            &token,
            &[],
            &request,
            &format!("order-{index}"),
            RETRY_SHED,
        )
        .await;
        fan.order = Some(ordering.elapsed());
        fan.order_accepted = ordered.attempts.last().map(|attempt| attempt.elapsed);
        fan.attempts.extend(ordered.attempts.iter().copied());
        fan.outcome.order = Some(ordered.status);
        fan.outcome.order_request = Some(request);
        fan.outcome.order_body = Some(ordered.body.clone());
        if ordered.status == 201 {
            fan.sold_at = Some(Instant::now());
            fan.outcome.confirmed = Some(ordered.body);
        }
    }
    fan
}

/// Fans `tokens[..count]` all join at once through the gateway and go through to payment.
async fn surge(stage: &Stage, sale: &Sale, tokens: &[String], count: usize) -> Vec<Fan> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(count)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let sale = Arc::new(Sale {
        event_id: sale.event_id.clone(),
        seat_ids: sale.seat_ids.clone(),
    });
    let (go, ready) = watch::channel(false);
    let fans: Vec<_> = tokens[..count]
        .iter()
        .enumerate()
        .map(|(index, token)| {
            tokio::spawn(fan(
                client.clone(),
                stage.gateway.url(),
                Arc::clone(&sale),
                token.clone(),
                index,
                ready.clone(),
            ))
        })
        .collect();
    go.send_replace(true);
    let mut outcomes = Vec::with_capacity(count);
    for fan in fans {
        outcomes.push(
            tokio::time::timeout(PATIENCE, fan)
                .await
                .expect("every fan is answered")
                .expect("fan"),
        );
    }
    outcomes
}

/// Nobody was admitted before a fan who joined ahead of them: in join order, admission times
/// (the room's clock, from the passes) never go back. Each place was admitted once.
fn assert_admitted_in_join_order(fans: &[Fan]) {
    let mut by_place: Vec<(u64, u64)> = fans.iter().map(|fan| (fan.seq, fan.admitted_at)).collect();
    by_place.sort_unstable();
    assert!(
        by_place.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "every fan has a place of their own"
    );
    let out_of_order: Vec<_> = by_place
        .windows(2)
        .filter(|pair| pair[1].1 < pair[0].1)
        .collect();
    assert!(
        out_of_order.is_empty(),
        "admitted before someone who joined ahead (place, admitted at): {out_of_order:?}"
    );
}

/// p50 and p99 of `samples`, as "p50 … ms, p99 … ms (n)".
fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |quantile: f64| {
        let rank = (samples.len() as f64 * quantile).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms (n = {})",
        at(0.5),
        at(0.99),
        samples.len()
    )
}

fn print_steps(label: &str, fans: &[Fan]) {
    let step = |pick: &dyn Fn(&Fan) -> Option<Duration>| -> String {
        percentiles(fans.iter().filter_map(pick).collect())
    };
    eprintln!("{label}: {:?}", tally(&outcomes_of(fans)));
    eprintln!("  join                  {}", step(&|fan| Some(fan.join)));
    eprintln!("  wait for admission    {}", step(&|fan| Some(fan.wait)));
    eprintln!("  hold (with retries)   {}", step(&|fan| fan.hold));
    eprintln!("  hold (let in)         {}", step(&|fan| fan.hold_accepted));
    eprintln!("  order (with retries)  {}", step(&|fan| fan.order));
    eprintln!(
        "  order (let in)        {}",
        step(&|fan| fan.order_accepted)
    );
}

fn outcomes_of(fans: &[Fan]) -> Vec<FanOutcome> {
    fans.iter()
        .map(|fan| FanOutcome {
            hold: fan.outcome.hold,
            hold_code: fan.outcome.hold_code.clone(),
            lost_hold: fan.outcome.lost_hold,
            order: fan.outcome.order,
            confirmed: fan.outcome.confirmed.clone(),
            hold_request: fan.outcome.hold_request.clone(),
            hold_body: fan.outcome.hold_body.clone(),
            order_request: fan.outcome.order_request.clone(),
            order_body: fan.outcome.order_body.clone(),
            pass: fan.outcome.pass.clone(),
        })
        .collect()
}

/// What a node's seat-channel subscriber saw.
struct SeatLog {
    node: String,
    /// The offsets of every message, in arrival order.
    offsets: Vec<u64>,
    /// Each seat's status after applying every message to the map it started from.
    statuses: BTreeMap<String, String>,
    /// When each (seat, status) first arrived.
    arrivals: HashMap<(String, String), Instant>,
}

/// Each seat's status in a `GET /seats` answer, and the answer's seat version.
fn seat_map(seats: &Value) -> (BTreeMap<String, String>, u64) {
    let statuses = seats["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|seat| {
            (
                seat["id"].as_str().expect("seat id").to_string(),
                seat["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    (statuses, seats["version"].as_u64().expect("seat version"))
}

/// Follows `event:{id}:seats` on node `index` from the version of its seat map, applying each
/// change, until it has reached the offset `until` is set to.
async fn follow_seats(
    cluster: &Cluster,
    index: usize,
    sale: &Sale,
    mut until: watch::Receiver<Option<u64>>,
) -> tokio::task::JoinHandle<SeatLog> {
    let app = cluster.client(index);
    let node = format!("node-{}", index + 1);
    let seats = app
        .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
        .await
        .expect(StatusCode::OK);
    let (statuses, version) = seat_map(&seats);
    let response = app
        .client
        .get(format!(
            "{}/api/v1/push/sse?channel=event:{}:seats&since={version}",
            app.url, sale.event_id
        ))
        .send()
        .await
        .expect("subscribed");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-marquee-node"], node.as_str());
    let mut stream = SseStream::from_response(response);
    tokio::spawn(async move {
        let mut log = SeatLog {
            node,
            offsets: Vec::new(),
            statuses,
            arrivals: HashMap::new(),
        };
        let mut last = version;
        loop {
            if until.borrow().is_some_and(|target| last >= target) {
                return log;
            }
            tokio::select! {
                event = stream.next() => {
                    let event = event.expect("the seat stream stays open");
                    assert_ne!(event.event, "reset", "{}: the stream lost history", log.node);
                    if event.event != "seats" {
                        continue;
                    }
                    let offset = event.data["offset"].as_u64().expect("offset");
                    log.offsets.push(offset);
                    last = offset;
                    let status = event.data["data"]["status"].as_str().expect("status");
                    for seat in event.data["data"]["seat_ids"].as_array().cloned().unwrap_or_default() {
                        let seat = seat.as_str().expect("seat id").to_string();
                        log.arrivals
                            .entry((seat.clone(), status.to_string()))
                            .or_insert_with(Instant::now);
                        log.statuses.insert(seat, status.to_string());
                    }
                }
                changed = until.changed() => {
                    changed.expect("the test keeps the target");
                }
            }
        }
    })
}

/// A: 300 fans at once through the room (1,200 admissions a minute) on three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_through_the_waiting_room_on_three_nodes_buys_in_join_order() {
    const FANS: usize = 300;
    let stage = Stage::start(&[]).await;
    let sale = stage.sale(1200).await;
    let tokens = fans(stage.cluster.store().await.as_ref(), FANS).await;
    let (target, until) = watch::channel(None);
    let mut subscribers = Vec::new();
    for index in 0..3 {
        subscribers.push(follow_seats(&stage.cluster, index, &sale, until.clone()).await);
    }

    let fans = surge(&stage, &sale, &tokens, FANS).await;
    print_steps("the surge, 300 fans, three nodes", &fans);
    assert_admitted_in_join_order(&fans);
    for fan in &fans {
        assert!(
            fan.attempts.iter().all(|attempt| attempt.status == 201
                || attempt.status == 200
                || [409, 422].contains(&attempt.status)),
            "at capacity nothing is shed or fails: {:?}",
            fan.attempts
        );
        assert!(
            fan.outcome.order.is_none_or(|order| order == 201),
            "every hold is bought"
        );
    }
    let outcomes = outcomes_of(&fans);
    check_sale(&stage.cluster, &sale, &tokens, &outcomes, "the surge").await;

    // Every node's subscriber saw every seat change, offsets contiguous, and ends at the
    // node's own seat map.
    let seats = stage
        .cluster
        .client(0)
        .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
        .await
        .expect(StatusCode::OK);
    let (_, version) = seat_map(&seats);
    target.send_replace(Some(version));
    let mut deliveries = Vec::new();
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let log = tokio::time::timeout(PATIENCE, subscriber)
            .await
            .expect("every change reaches every node")
            .expect("subscriber");
        let first = log.offsets.first().copied().unwrap_or(version);
        assert!(
            log.offsets
                .iter()
                .enumerate()
                .all(|(n, offset)| *offset == first + n as u64),
            "{}: offsets are contiguous: {:?}",
            log.node,
            log.offsets
        );
        assert_eq!(log.offsets.last().copied(), Some(version), "{}", log.node);
        let on_node = stage
            .cluster
            .client(index)
            .get(&format!("/api/v1/events/{}/seats", sale.event_id), None)
            .await
            .expect(StatusCode::OK);
        let (statuses, node_version) = seat_map(&on_node);
        assert_eq!(
            node_version, version,
            "{}: its seat map's version",
            log.node
        );
        assert!(
            statuses == log.statuses,
            "{}: the seat channel's map is the node's seat map",
            log.node
        );
        // From each fan's answer to the change reaching this node's subscriber (0 when it
        // arrived first).
        for fan in &fans {
            let changes = [
                (fan.held_at, &fan.outcome.hold_body["seat_ids"], "held"),
                (fan.sold_at, &fan.outcome.hold_body["seat_ids"], "sold"),
            ];
            for (answered, seats, status) in changes {
                let Some(answered) = answered else { continue };
                for seat in seats.as_array().cloned().unwrap_or_default() {
                    let key = (seat.as_str().unwrap_or("").to_string(), status.to_string());
                    if let Some(arrived) = log.arrivals.get(&key) {
                        deliveries.push(arrived.saturating_duration_since(answered));
                    }
                }
            }
        }
    }
    eprintln!(
        "  push delivery         {} (after the answer, every node)",
        percentiles(deliveries)
    );
    stage.stop().await;
}

/// B: beyond capacity. The same cluster runs the surge at capacity (150 fans, 600 admissions a
/// minute), then at twice it (300 fans at 1,200 a minute) with 100 fans who never joined
/// hammering the hold endpoint; nodes may book 6 requests at once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_the_excess_is_shed_early_and_nothing_is_lost() {
    const AT_CAPACITY: usize = 150;
    const BEYOND: usize = 300;
    const CRASHERS: usize = 100;
    let stage = Stage::start(&["--booking-max-in-flight", "6"]).await;
    // Fans of their own for each run: idempotency keys are per account, and each run's fan `i`
    // asks under `hold-{i}` and `order-{i}`.
    let tokens = fans(
        stage.cluster.store().await.as_ref(),
        BEYOND + AT_CAPACITY + CRASHERS,
    )
    .await;
    let (tokens, calm_tokens) = tokens.split_at(BEYOND);
    let (calm_tokens, crasher_tokens) = calm_tokens.split_at(AT_CAPACITY);

    let calm = stage.sale(600).await;
    let at_capacity = surge(&stage, &calm, calm_tokens, AT_CAPACITY).await;
    print_steps("at capacity, 150 fans", &at_capacity);

    let sale = stage.sale(1200).await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let crashers: Vec<_> = crasher_tokens
        .iter()
        .enumerate()
        .map(|(n, token)| {
            let (client, stop, token) = (client.clone(), Arc::clone(&stop), token.clone());
            let url = format!(
                "{}/api/v1/events/{}/holds",
                stage.gateway.url(),
                sale.event_id
            );
            let seat = sale.seat_ids[n % 150].clone();
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                let mut tries = 0;
                while !stop.load(Ordering::Relaxed) {
                    tries += 1;
                    let sent = send_with(
                        &client,
                        &url,
                        &token,
                        &[],
                        &json!({"seat_ids": [seat]}),
                        &format!("crash-{n}-{tries}"),
                        &[],
                    )
                    .await;
                    let wait = sent
                        .attempts
                        .last()
                        .and_then(|attempt| attempt.retry_after)
                        .map_or(Duration::from_millis(20), Duration::from_secs);
                    attempts.extend(sent.attempts);
                    tokio::time::sleep(wait).await;
                }
                attempts
            })
        })
        .collect();
    let beyond = surge(&stage, &sale, tokens, BEYOND).await;
    stop.store(true, Ordering::Relaxed);
    let mut crashed = Vec::new();
    for crasher in crashers {
        crashed.extend(crasher.await.expect("crasher"));
    }
    print_steps("twice capacity, 300 fans + 100 without a pass", &beyond);

    // Every request answered; refusals early, with Retry-After; no other server error.
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for attempt in beyond
        .iter()
        .flat_map(|fan| fan.attempts.iter())
        .chain(crashed.iter())
    {
        *statuses.entry(attempt.status).or_default() += 1;
        assert_ne!(attempt.status, 0, "a request went unanswered");
        if attempt.status >= 500 || attempt.status == 429 {
            assert!(
                [429, 503].contains(&attempt.status) && attempt.retry_after.is_some(),
                "only 503 or 429 with Retry-After: {attempt:?}"
            );
        }
    }
    let mut crasher_statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for attempt in &crashed {
        *crasher_statuses.entry(attempt.status).or_default() += 1;
        assert!(
            [403, 429, 503].contains(&attempt.status),
            "a hold without a pass is refused: {attempt:?}"
        );
    }
    let shed = beyond
        .iter()
        .flat_map(|fan| fan.attempts.iter())
        .filter(|attempt| [429, 503].contains(&attempt.status))
        .count();
    eprintln!(
        "  statuses {statuses:?}; fans' tries shed {shed}; without a pass {crasher_statuses:?}"
    );
    let p99 = |fans: &[Fan], pick: &dyn Fn(&Fan) -> Option<Duration>| {
        percentiles(fans.iter().filter_map(pick).collect())
    };
    eprintln!(
        "  let-in hold: at capacity {} / twice {}; let-in order: at capacity {} / twice {}",
        p99(&at_capacity, &|fan| fan.hold_accepted),
        p99(&beyond, &|fan| fan.hold_accepted),
        p99(&at_capacity, &|fan| fan.order_accepted),
        p99(&beyond, &|fan| fan.order_accepted),
    );

    assert_admitted_in_join_order(&at_capacity);
    assert_admitted_in_join_order(&beyond);
    check_sale(
        &stage.cluster,
        &calm,
        calm_tokens,
        &outcomes_of(&at_capacity),
        "at capacity",
    )
    .await;
    check_sale(
        &stage.cluster,
        &sale,
        tokens,
        &outcomes_of(&beyond),
        "twice capacity",
    )
    .await;
    stage.stop().await;
}

/// A node at its booking limit refuses the next booking request at once with 503 and
/// `Retry-After`, without doing any of it: the same request under the same key goes through
/// once a slot is free. Other routes are not limited.
#[tokio::test]
async fn a_node_at_its_booking_limit_answers_503_with_retry_after() {
    let app = TestApp::spawn_with(|config| {
        config.booking_max_in_flight = 1;
        // `tok_slow` pays after 30 s: the order holds the node's one slot until this timeout.
        config.payment_timeout = Duration::from_secs(2);
    })
    .await;
    let room = crate::holds::on_sale(app).await;
    let (slow, _) = room.app.register("fan").await;
    let (fan, _) = room.app.register("fan").await;
    let hold = room
        .hold(&slow, json!({"seat_ids": [room.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let paying = {
        let app = TestApp::client_of(room.app.url.clone());
        let hold_id = hold["id"].as_str().expect("id").to_string();
        tokio::spawn(async move {
            app.post(
                "/api/v1/orders",
                Some(&slow),
                json!({"hold_id": hold_id, "payment": {"method": "card", "token": "tok_slow"}}),
            )
            .await
        })
    };
    // Once the slow order is in its handler (holding the one slot for 2 s), a hold is shed.
    let limit = room
        .app
        .server
        .as_ref()
        .expect("server")
        .state
        .booking_limit
        .clone();
    let deadline = Instant::now() + Duration::from_secs(2);
    while limit.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the slow order never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let holds = format!("/api/v1/events/{}/holds", room.event_id);
    let request = json!({"seat_ids": [room.seat_ids[1]]});
    let key = [("idempotency-key", "shed-then-through")];
    let shed = room
        .app
        .post_with_headers(&holds, Some(&fan), &key, request.clone())
        .await;
    shed.expect_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(shed.headers["retry-after"], "1");
    // Reads are not booking requests.
    room.app
        .get(&format!("/api/v1/events/{}/seats", room.event_id), None)
        .await
        .expect(StatusCode::OK);
    // The slow order ends at the payment timeout, giving the slot back.
    paying.await.expect("the slow order");
    // The refused hold did nothing: the same request under the same key now holds.
    let retried = room
        .app
        .post_with_headers(&holds, Some(&fan), &key, request)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(retried["seat_ids"][0], room.seat_ids[1].as_str());
    room.app.stop().await;
}
