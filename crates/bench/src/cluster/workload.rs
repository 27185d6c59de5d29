//! The two workloads, their fixture, the timed booking loop and the lag phase.
//!
//! *Hot*: every fan books on one event, so every booking bumps that event's seat version, one
//! row in PostgreSQL, whichever node makes it. *Spread*: the same fans spread round-robin over
//! 30 events of the same venue, so bookings of different events need not wait for each other.
//! Both have the same seats per fan and the same number of fans.

use super::{Cluster, ClusterBench, SECRET};
use anyhow::Context;
use futures::StreamExt;
use marquee_auth::{SigningSecret, TokenIssuer};
use marquee_domain::{DisplayName, Email, Role, User, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fans available to the timed loop: a run ends early if they run out (two seats each).
pub const LOAD_FANS: usize = 9_000;
/// The most seats in one row of the venue.
const MAX_SEATS_PER_ROW: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// All fans on one event.
    Hot,
    /// Fans spread over 30 events.
    Spread,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Hot => "hot",
            Workload::Spread => "spread",
        }
    }

    pub fn events(self) -> usize {
        match self {
            Workload::Hot => 1,
            Workload::Spread => 30,
        }
    }
}

/// Rows × seats of the venue every event of a workload uses: two seats for each of the event's
/// share of the load's fans, and one for each lag sample (made on the first event).
pub fn venue_layout(events: usize, lag_samples: usize) -> (usize, usize) {
    let seats = 2 * LOAD_FANS.div_ceil(events.max(1)) + lag_samples;
    let rows = seats.div_ceil(MAX_SEATS_PER_ROW);
    (rows, seats.div_ceil(rows))
}

/// The event a fan books on and the first of its two seats (by index into the venue's seats).
pub fn fan_target(fan: usize, events: usize) -> (usize, usize) {
    let events = events.max(1);
    (fan % events, 2 * (fan / events))
}

pub struct Fixture {
    pub events: Vec<String>,
    pub seats: Vec<String>,
    /// The load's fans first, then `lag_samples` for the lag phase.
    pub tokens: Vec<String>,
}

/// An organizer's venue, the workload's published events there, and the fans' tokens.
pub async fn fixture(
    bench: &ClusterBench,
    cluster: &Cluster,
    client: &reqwest::Client,
    workload: Workload,
) -> anyhow::Result<Fixture> {
    let issuer = TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec())?,
        Duration::from_secs(7200),
    );
    let organizer = user(Role::Organizer, "organizer")?;
    cluster.store.create_user(&organizer, "unused").await?;
    let token = issuer.issue(&organizer.id, Role::Organizer)?;
    let url = &cluster.urls[0];
    let (row_count, per_row) = venue_layout(workload.events(), bench.lag_samples);
    let rows: Vec<Value> = (0..row_count)
        .map(|r| json!({"label": format!("R{r}"), "seats": per_row}))
        .collect();
    let venue = crate::product::post_json(
        client,
        url,
        "/api/v1/venues",
        &token,
        &json!({"name": "Bench Stadium", "city": "Leeds", "country": "GB", "lat": 53.8,
                      "lon": -1.55, "sections": [{"name": "Bowl", "rows": rows}]}),
    )
    .await?;
    let mut events = Vec::new();
    for n in 0..workload.events() {
        let event_id = crate::product::publish_event(
            client,
            url,
            &token,
            &json!({"title": format!("Cluster Bench Night {n}"), "venue_id": venue["id"],
                          "category": "concert", "starts_at": "2031-01-01T20:00:00Z",
                          "price_tiers": [{"name": "Bowl", "price_cents": 5000, "currency": "GBP",
                                           "sections": ["Bowl"]}]}),
        )
        .await?;
        events.push(event_id);
    }
    let store = Arc::clone(&cluster.store);
    let made = futures::stream::iter((0..LOAD_FANS + bench.lag_samples).map(|_| {
        let store = Arc::clone(&store);
        let issuer = issuer.clone();
        async move {
            let fan = user(Role::Fan, "fan")?;
            store.create_user(&fan, "unused").await?;
            anyhow::Ok(issuer.issue(&fan.id, Role::Fan)?)
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let tokens = made.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let seats: Vec<String> = venue["sections"][0]["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    Ok(Fixture {
        events,
        seats,
        tokens,
    })
}

pub(super) fn user(role: Role, kind: &str) -> anyhow::Result<User> {
    let id = UserId::generate();
    Ok(User {
        email: Email::parse(&format!("{kind}-{id}@bench.test")).map_err(anyhow::Error::msg)?,
        id,
        name: DisplayName::parse("Bench").map_err(anyhow::Error::msg)?,
        role,
        created_at: marquee_domain::timestamp_now(),
    })
}

/// What the timed booking loop did.
pub struct Load {
    pub bookings: u64,
    pub elapsed: Duration,
    /// Every hold attempt's latency, sorted.
    pub holds_ms: Vec<f64>,
}

/// The closed loop: `clients` fans at a time, each fan booking (hold, then order) once, spread
/// over the nodes round-robin, for `duration` or until the fans run out.
pub async fn load(
    bench: &ClusterBench,
    cluster: &Cluster,
    client: &reqwest::Client,
    fixture: &Fixture,
) -> anyhow::Result<Load> {
    let load_tokens = Arc::new(fixture.tokens[..LOAD_FANS].to_vec());
    let seats = Arc::new(fixture.seats.clone());
    let events = Arc::new(fixture.events.clone());
    let urls = Arc::new(cluster.urls.clone());
    let next_fan = Arc::new(AtomicUsize::new(0));
    let bookings = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bench.duration;
    let workers: Vec<_> = (0..bench.clients)
        .map(|_| {
            let (client, next_fan, bookings) =
                (client.clone(), Arc::clone(&next_fan), Arc::clone(&bookings));
            let (urls, tokens, seats, events) = (
                Arc::clone(&urls),
                Arc::clone(&load_tokens),
                Arc::clone(&seats),
                Arc::clone(&events),
            );
            let best_available = bench.best_available;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let fan = next_fan.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(fan) else { break };
                    let url = &urls[fan % urls.len()];
                    let (event, seat) = fan_target(fan, events.len());
                    let event_id = &events[event];
                    let sent = Instant::now();
                    let Ok(hold) = client
                        .post(format!("{url}/api/v1/events/{event_id}/holds"))
                        .bearer_auth(token)
                        .json(&if best_available {
                            json!({"quantity": 2})
                        } else {
                            json!({"seat_ids": [seats[seat], seats[seat + 1]]})
                        })
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = hold.status();
                    let body: Value = hold.json().await.unwrap_or(Value::Null);
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if status != StatusCode::CREATED {
                        continue;
                    }
                    let order = client
                        .post(format!("{url}/api/v1/orders"))
                        .bearer_auth(token)
                        .json(&json!({"hold_id": body["id"],
                                      "payment": {"method": "card", "token": "tok_visa"}}))
                        .send()
                        .await;
                    if order.is_ok_and(|order| order.status() == StatusCode::CREATED) {
                        bookings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut holds_ms = Vec::new();
    for worker in workers {
        holds_ms.extend(worker.await?);
    }
    let elapsed = started.elapsed();
    if next_fan.load(Ordering::Relaxed) >= LOAD_FANS {
        println!(
            "  (fans ran out after {:.1} s: the run is shorter than --duration)",
            elapsed.as_secs_f64()
        );
    }
    holds_ms.sort_by(f64::total_cmp);
    Ok(Load {
        bookings: bookings.load(Ordering::Relaxed),
        elapsed,
        holds_ms,
    })
}

/// Change lag to every node, sorted, in ms: every node's seat stream of the first event
/// watched over SSE, holds made on node 1 at 20 a second; a hold's lag is from its `201` at the
/// client to its change arriving from the last node.
pub async fn lag(
    bench: &ClusterBench,
    cluster: &Cluster,
    client: &reqwest::Client,
    fixture: &Fixture,
) -> anyhow::Result<Vec<f64>> {
    let nodes = cluster.urls.len();
    let event_id = &fixture.events[0];
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    // How many arrivals there were, so the end of the run can wait for the last of them.
    let arrived = Arc::new(tokio::sync::watch::channel(0usize).0);
    let channel = format!("event:{event_id}:seats");
    let mut readers = Vec::new();
    for url in &cluster.urls {
        let response = client
            .get(format!("{url}/api/v1/push/sse?channel={channel}"))
            .timeout(Duration::from_secs(3600))
            .send()
            .await?
            .error_for_status()?;
        let arrivals = Arc::clone(&arrivals);
        let arrived = Arc::clone(&arrived);
        readers.push(tokio::spawn(async move {
            let mut response = response;
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for message in crate::product::take_sse_messages(&mut buffer) {
                    if message["data"]["status"] != "held" {
                        continue;
                    }
                    if let Some(seats) = message["data"]["seat_ids"].as_array() {
                        if let (Some(first), Ok(mut arrivals)) =
                            (seats.first().and_then(Value::as_str), arrivals.lock())
                        {
                            arrivals.entry(first.to_string()).or_default().push(now);
                            arrived.send_modify(|count| *count += 1);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for token in &fixture.tokens[LOAD_FANS..] {
        pace.tick().await;
        let response = client
            .post(format!(
                "{}/api/v1/events/{event_id}/holds",
                cluster.urls[0]
            ))
            .bearer_auth(token)
            .json(&json!({"quantity": 1}))
            .send()
            .await?;
        let at = Instant::now();
        if response.status() != StatusCode::CREATED {
            continue;
        }
        let body: Value = response.json().await?;
        if let Some(seat) = body["seat_ids"][0].as_str() {
            answered.push((seat.to_string(), at));
        }
    }
    // Every answered hold's change from every node, or what came within 5 s.
    let expected = answered.len() * nodes;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        arrived.subscribe().wait_for(|count| *count >= expected),
    )
    .await;
    for reader in &readers {
        reader.abort();
    }
    let mut lags = Vec::new();
    if let Ok(arrivals) = arrivals.lock() {
        for (seat, at) in &answered {
            let Some(times) = arrivals.get(seat) else {
                continue;
            };
            if times.len() < nodes {
                continue;
            }
            let last = times.iter().max().copied().unwrap_or(*at);
            lags.push(last.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    anyhow::ensure!(
        lags.len() * 10 >= answered.len() * 9,
        "only {} of {} lag samples reached every node",
        lags.len(),
        answered.len()
    );
    anyhow::ensure!(
        answered.len() * 2 >= bench.lag_samples,
        "only {} of {} lag holds were granted",
        answered.len(),
        bench.lag_samples
    );
    lags.sort_by(f64::total_cmp);
    Ok(lags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fan_has_two_seats_of_its_own_and_the_lag_samples_fit() {
        for (events, lag) in [(1, 200), (30, 200), (30, 1000), (1, 10)] {
            let (rows, per_row) = venue_layout(events, lag);
            assert!(per_row <= MAX_SEATS_PER_ROW);
            let seats = rows * per_row;
            let (_, last_seat) = fan_target(LOAD_FANS - 1, events);
            assert!(last_seat + 1 < seats, "{events} events");
            // The first event's load leaves room for the lag phase's holds.
            let first_event_fans = LOAD_FANS.div_ceil(events);
            assert!(seats - 2 * first_event_fans >= lag);
        }
    }

    #[test]
    fn fans_go_round_robin_over_the_events() {
        assert_eq!(fan_target(0, 30), (0, 0));
        assert_eq!(fan_target(29, 30), (29, 0));
        assert_eq!(fan_target(30, 30), (0, 2));
        assert_eq!(fan_target(7, 1), (0, 14));
    }
}
