//! One conformance suite for the waiting room, run against the in-process room, Redis
//! (`MARQUEE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) and a three-primary Redis Cluster
//! this binary starts (`marquee-testkit`); each test has its own key prefix. Time is simulated: every operation takes `now`, so a minute of pacing runs in
//! milliseconds and is exact.

use marquee_waitroom::{
    Control, InProcessWaitingRoom, PassRefusal, RedisWaitingRoom, RoomConfig, RoomSigner,
    RoomState, RoomTimings, Standing, WaitingRoom, WaitroomError,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

const SECRET: &[u8] = b"conformance-secret-of-32-bytes!!";
/// The simulated opening time (any Unix ms works).
const OPEN: u64 = 1_900_000_000_000;
const MINUTE: u64 = 60_000;

fn timings() -> RoomTimings {
    RoomTimings {
        idle_timeout: Duration::from_secs(60),
        quiet_period: Duration::from_secs(120),
    }
}

fn config(rate: u32) -> RoomConfig {
    RoomConfig {
        event: Ulid::new(),
        opens_at: OPEN,
        join_from: OPEN - 30 * MINUTE,
        admit_per_minute: rate,
        pass_ttl_ms: 15 * MINUTE,
        max_active: None,
        closes_at: OPEN + 10 * 24 * 60 * MINUTE,
    }
}

async fn in_process() -> Arc<dyn WaitingRoom> {
    Arc::new(InProcessWaitingRoom::new(
        RoomSigner::new(SECRET),
        timings(),
    ))
}

async fn on_redis(url: &str) -> Arc<dyn WaitingRoom> {
    let prefix = format!("test:{}", Ulid::new());
    Arc::new(
        RedisWaitingRoom::connect(url, &prefix, RoomSigner::new(SECRET), timings())
            .await
            .expect("redis"),
    )
}

async fn redis() -> Arc<dyn WaitingRoom> {
    on_redis(&marquee_testkit::redis_url()).await
}

async fn redis_cluster() -> Arc<dyn WaitingRoom> {
    on_redis(&marquee_testkit::redis_cluster_url()).await
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::in_process().await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis().await).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::redis_cluster().await).await })*
        }
    };
}

conformance!(
    early_arrivals_are_ordered_at_random,
    later_arrivals_are_first_come_first_served,
    admission_is_paced_within_five_percent_over_a_minute,
    admission_respects_the_active_cap,
    joining_again_returns_the_same_place,
    leaving_gives_the_place_up,
    silent_fans_lose_their_place,
    passes_bind_user_event_and_time,
    holds_need_a_pass_only_while_the_room_gates,
    a_quiet_room_deactivates_and_wakes_up_again,
    the_organizer_pauses_resumes_and_ends,
    eta_follows_the_measured_rate,
    tokens_are_checked_before_lookup,
    joining_before_the_window_is_refused,
    concurrent_joins_get_distinct_places,
    rooms_are_driven_from_the_first_join_and_retired_when_the_event_starts,
    passes_expire_on_time_when_the_ttl_changes,
    idle_places_are_swept_on_time_in_any_order,
    one_touch_keeps_places_in_several_rooms,
);

fn position(standing: &Standing) -> u64 {
    match standing {
        Standing::Waiting { position, .. } => *position,
        other => panic!("expected waiting, got {other:?}"),
    }
}

/// Drives the room in steps of `step` ms from `from` to `to`, the fans of `present` listening
/// all along; returns the admitted users in order and the largest number admitted in one step.
async fn drive_present(
    room: &Arc<dyn WaitingRoom>,
    event: Ulid,
    present: &[String],
    (from, to, step): (u64, u64, u64),
) -> (Vec<Ulid>, usize) {
    let mut admitted = Vec::new();
    let mut largest = 0;
    let mut now = from;
    let mut touched = 0;
    while now <= to {
        if now >= touched + 10_000 {
            room.touch(present, now).await.expect("touch");
            touched = now;
        }
        let outcome = room.tick(event, now).await.expect("tick");
        largest = largest.max(outcome.admitted.len());
        admitted.extend(outcome.admitted.iter().map(|admission| admission.user));
        now += step;
    }
    (admitted, largest)
}

async fn drive(
    room: &Arc<dyn WaitingRoom>,
    event: Ulid,
    from: u64,
    to: u64,
    step: u64,
) -> (Vec<Ulid>, usize) {
    drive_present(room, event, &[], (from, to, step)).await
}

async fn early_arrivals_are_ordered_at_random(room: Arc<dyn WaitingRoom>) {
    let config = config(600);
    let fans: Vec<Ulid> = (0..400).map(|_| Ulid::new()).collect();
    let mut tokens = Vec::new();
    for (i, fan) in fans.iter().enumerate() {
        let place = room
            .join(&config, *fan, OPEN - 10 * MINUTE + i as u64)
            .await
            .expect("join early");
        assert!(
            matches!(place.standing, Standing::PreQueue { waiting, .. } if waiting == i as u64 + 1),
            "{:?}",
            place.standing
        );
        tokens.push(place.token);
    }
    // Opening draws the order: every fan gets a distinct place 1..=400.
    let mut positions = Vec::new();
    for token in &tokens {
        let place = room.status(token, OPEN).await.expect("status");
        positions.push(position(&place.standing));
    }
    let distinct: HashSet<u64> = positions.iter().copied().collect();
    assert_eq!(distinct.len(), 400);
    assert_eq!(distinct.iter().max(), Some(&400));
    // Spearman's rank correlation between joining order and place. For a random order its
    // standard deviation is 1/sqrt(399) ≈ 0.05; joining order would give exactly 1.
    let n = positions.len() as f64;
    let d2: f64 = positions
        .iter()
        .enumerate()
        .map(|(i, position)| {
            let d = (i as f64 + 1.0) - *position as f64;
            d * d
        })
        .sum();
    let rho = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
    assert!(rho.abs() < 0.25, "order follows joining order: rho = {rho}");
    // And the first 50 joiners are not bunched at the front: about 50/8 of them land in the
    // first 50 places, never all of them.
    let early_in_front = positions[..50].iter().filter(|p| **p <= 50).count();
    assert!(
        early_in_front < 25,
        "{early_in_front} of the first 50 in front"
    );
}

async fn later_arrivals_are_first_come_first_served(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    let early = room
        .join(&config, Ulid::new(), OPEN - MINUTE)
        .await
        .expect("early");
    let fans: Vec<Ulid> = (0..30).map(|_| Ulid::new()).collect();
    let mut tokens = Vec::new();
    for (i, fan) in fans.iter().enumerate() {
        let place = room
            .join(&config, *fan, OPEN + 1 + i as u64)
            .await
            .expect("join");
        tokens.push(place.token);
    }
    // The early fan went straight through at opening or is first; later fans follow in order.
    let early = room.status(&early.token, OPEN + 100).await.expect("status");
    let offset = match early.standing {
        Standing::Admitted { .. } => 0,
        Standing::Waiting { position: 1, .. } => 1,
        other => panic!("{other:?}"),
    };
    for (i, token) in tokens.iter().enumerate() {
        let place = room.status(token, OPEN + 100).await.expect("status");
        assert_eq!(position(&place.standing), offset + i as u64 + 1);
    }
    let (admitted, _) = drive(&room, config.event, OPEN + 100, OPEN + MINUTE, 250).await;
    let later: Vec<Ulid> = admitted
        .into_iter()
        .filter(|user| fans.contains(user))
        .collect();
    assert!(later.len() >= 20, "{}", later.len());
    assert_eq!(later, fans[..later.len()].to_vec(), "admitted out of order");
}

async fn admission_is_paced_within_five_percent_over_a_minute(room: Arc<dyn WaitingRoom>) {
    for (rate, step) in [(600u32, 100u64), (3_000, 37), (120, 1_000)] {
        let config = config(rate);
        let mut tokens = Vec::new();
        for i in 0..(rate as u64 * 2) {
            let place = room
                .join(&config, Ulid::new(), OPEN - 1_000 + i % 1000)
                .await
                .expect("join");
            tokens.push(place.token);
        }
        // Opening admits the first fan at once; then a simulated minute of steps.
        let (admitted, largest) =
            drive_present(&room, config.event, &tokens, (OPEN, OPEN + MINUTE, step)).await;
        let expected = f64::from(rate);
        let got = admitted.len() as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "rate {rate}/min with {step} ms steps admitted {got}"
        );
        // Smooth: no step lets in more than its own time's worth (rounded up, plus one).
        let cap = (f64::from(rate) / 60_000.0 * step as f64).ceil() as usize + 1;
        assert!(largest <= cap, "a burst of {largest} (cap {cap})");
        let distinct: HashSet<Ulid> = admitted.iter().copied().collect();
        assert_eq!(distinct.len(), admitted.len(), "a fan admitted twice");
    }
}

async fn admission_respects_the_active_cap(room: Arc<dyn WaitingRoom>) {
    let config = RoomConfig {
        max_active: Some(5),
        pass_ttl_ms: MINUTE,
        ..config(6_000)
    };
    let mut tokens = Vec::new();
    for _ in 0..50 {
        let place = room.join(&config, Ulid::new(), OPEN - 1).await;
        tokens.push(place.expect("join").token);
    }
    let (admitted, _) =
        drive_present(&room, config.event, &tokens, (OPEN, OPEN + 30_000, 100)).await;
    assert_eq!(admitted.len(), 5, "capped by live passes");
    let stats = room
        .stats(config.event, OPEN + 30_000)
        .await
        .expect("stats")
        .expect("room");
    assert_eq!(stats.active, 5);
    // The passes expire after a minute: five more get in.
    let (admitted, _) = drive_present(
        &room,
        config.event,
        &tokens,
        (OPEN + MINUTE, OPEN + MINUTE + 30_000, 100),
    )
    .await;
    assert_eq!(admitted.len(), 5);
}

async fn joining_again_returns_the_same_place(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    let fan = Ulid::new();
    let first = room.join(&config, fan, OPEN - MINUTE).await.expect("join");
    let again = room.join(&config, fan, OPEN - 30_000).await.expect("again");
    assert_eq!(first.token, again.token);
    // After opening too, and the position does not move back.
    let others: Vec<Ulid> = (0..5).map(|_| Ulid::new()).collect();
    for other in &others {
        room.join(&config, *other, OPEN + 1).await.expect("join");
    }
    let before = room.status(&first.token, OPEN + 2).await.expect("status");
    let again = room.join(&config, fan, OPEN + 3).await.expect("again");
    assert_eq!(again.token, first.token);
    assert_eq!(again.standing.position(), before.standing.position());
    // Once admitted, joining again returns the admission.
    let (admitted, _) = drive(&room, config.event, OPEN + 10, OPEN + 20_000, 500).await;
    assert!(admitted.contains(&fan));
    let again = room.join(&config, fan, OPEN + 20_001).await.expect("again");
    assert_eq!(again.token, first.token);
    assert!(matches!(again.standing, Standing::Admitted { .. }));
}

async fn leaving_gives_the_place_up(room: Arc<dyn WaitingRoom>) {
    let config = config(1);
    let fans: Vec<Ulid> = (0..4).map(|_| Ulid::new()).collect();
    let mut tokens = Vec::new();
    for (i, fan) in fans.iter().enumerate() {
        tokens.push(
            room.join(&config, *fan, OPEN + i as u64)
                .await
                .expect("join")
                .token,
        );
    }
    // fans[0] went straight through; fans[1..] wait at 1, 2, 3.
    room.leave(&tokens[1], OPEN + 10).await.expect("leave");
    let left = room.status(&tokens[1], OPEN + 11).await.expect("status");
    assert_eq!(left.standing, Standing::Left);
    assert_eq!(
        position(
            &room
                .status(&tokens[3], OPEN + 11)
                .await
                .expect("s")
                .standing
        ),
        2
    );
    // Re-joining queues at the back with a new token: no way to keep the old place.
    let back = room
        .join(&config, fans[1], OPEN + 12)
        .await
        .expect("rejoin");
    assert_ne!(back.token, tokens[1]);
    assert_eq!(position(&back.standing), 3);
    // Leaving after admission revokes the pass.
    let admitted = room.status(&tokens[0], OPEN + 13).await.expect("status");
    let Standing::Admitted { pass, .. } = admitted.standing else {
        panic!("{admitted:?}");
    };
    room.check_pass(&pass, config.event, fans[0], OPEN + 14)
        .await
        .expect("valid");
    room.leave(&tokens[0], OPEN + 15).await.expect("leave");
    assert_eq!(
        room.check_pass(&pass, config.event, fans[0], OPEN + 16)
            .await,
        Err(WaitroomError::Pass(PassRefusal::Revoked))
    );
}

async fn silent_fans_lose_their_place(room: Arc<dyn WaitingRoom>) {
    let config = config(1);
    let first = room.join(&config, Ulid::new(), OPEN).await.expect("join");
    assert!(matches!(first.standing, Standing::Admitted { .. }));
    let silent = room
        .join(&config, Ulid::new(), OPEN + 1)
        .await
        .expect("join");
    let polling = room
        .join(&config, Ulid::new(), OPEN + 2)
        .await
        .expect("join");
    let listening = room
        .join(&config, Ulid::new(), OPEN + 3)
        .await
        .expect("join");
    // 50 s later: one polls, one listens on push; the silent one does neither.
    room.status(&polling.token, OPEN + 50_000)
        .await
        .expect("status");
    room.touch(std::slice::from_ref(&listening.token), OPEN + 50_000)
        .await
        .expect("touch");
    let outcome = room.tick(config.event, OPEN + 61_000).await.expect("tick");
    assert_eq!(outcome.abandoned, 1);
    let silent = room.status(&silent.token, OPEN + 61_001).await.expect("s");
    assert_eq!(silent.standing, Standing::Expired);
    // The others move up (one of them may have been admitted by the tick).
    let polling = room.status(&polling.token, OPEN + 61_002).await.expect("s");
    let listening = room
        .status(&listening.token, OPEN + 61_002)
        .await
        .expect("s");
    let places: Vec<Option<u64>> = vec![polling.standing.position(), listening.standing.position()];
    assert!(
        places == vec![Some(0), Some(1)] || places == vec![Some(1), Some(2)],
        "{places:?}"
    );
}

/// A node touches the places of every room its fans listen in at once (on a cluster, rooms
/// live on different nodes).
async fn one_touch_keeps_places_in_several_rooms(room: Arc<dyn WaitingRoom>) {
    let mut rooms = Vec::new();
    for _ in 0..4 {
        let config = config(1);
        room.join(&config, Ulid::new(), OPEN).await.expect("join");
        let kept = room
            .join(&config, Ulid::new(), OPEN + 1)
            .await
            .expect("join");
        let silent = room
            .join(&config, Ulid::new(), OPEN + 2)
            .await
            .expect("join");
        rooms.push((config, kept, silent));
    }
    let kept: Vec<String> = rooms
        .iter()
        .map(|(_, kept, _)| kept.token.clone())
        .collect();
    room.touch(&kept, OPEN + 50_000).await.expect("touch");
    for (config, kept, silent) in &rooms {
        let outcome = room.tick(config.event, OPEN + 61_000).await.expect("tick");
        assert_eq!(outcome.abandoned, 1, "only the silent place of each room");
        let silent = room.status(&silent.token, OPEN + 61_001).await.expect("s");
        assert_eq!(silent.standing, Standing::Expired);
        let kept = room.status(&kept.token, OPEN + 61_001).await.expect("s");
        assert_ne!(kept.standing, Standing::Expired);
    }
    room.touch(&[], OPEN + 62_000)
        .await
        .expect("touching nothing");
}

async fn passes_bind_user_event_and_time(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    let fan = Ulid::new();
    let place = room.join(&config, fan, OPEN).await.expect("join");
    let Standing::Admitted { pass, expires_at } = place.standing else {
        panic!("{place:?}");
    };
    assert_eq!(expires_at, OPEN + 15 * MINUTE);
    room.check_pass(&pass, config.event, fan, OPEN + 1)
        .await
        .expect("valid");
    let refusal = |result: Result<(), WaitroomError>| match result {
        Err(WaitroomError::Pass(refusal)) => refusal,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refusal(
            room.check_pass(&pass, config.event, Ulid::new(), OPEN + 1)
                .await
        ),
        PassRefusal::OtherUser
    );
    assert_eq!(
        refusal(room.check_pass(&pass, Ulid::new(), fan, OPEN + 1).await),
        PassRefusal::OtherEvent
    );
    assert_eq!(
        refusal(room.check_pass(&pass, config.event, fan, expires_at).await),
        PassRefusal::Expired
    );
    let forger = RoomSigner::new(b"not-the-secret-but-32-bytes-long");
    let forged = forger.pass(&marquee_waitroom::PassClaims {
        event: config.event,
        user: fan,
        seq: 0,
        expires_at: u64::MAX,
    });
    assert_eq!(
        refusal(room.check_pass(&forged, config.event, fan, OPEN + 1).await),
        PassRefusal::Forged
    );
    for malformed in ["", "wp1.", "wp1.!!!!", "Bearer x", &pass[..pass.len() - 1]] {
        assert_eq!(
            refusal(
                room.check_pass(malformed, config.event, fan, OPEN + 1)
                    .await
            ),
            PassRefusal::Malformed,
            "{malformed:?}"
        );
    }
    // A pass signed with our key for a place that was never admitted is refused too.
    let signer = RoomSigner::new(SECRET);
    let minted = signer.pass(&marquee_waitroom::PassClaims {
        event: config.event,
        user: fan,
        seq: 99,
        expires_at: OPEN + 10 * MINUTE,
    });
    assert_eq!(
        refusal(room.check_pass(&minted, config.event, fan, OPEN + 1).await),
        PassRefusal::Revoked
    );
    // The status shows the same pass until it expires, then "expired".
    let again = room.status(&place.token, OPEN + 2).await.expect("status");
    assert!(matches!(again.standing, Standing::Admitted { pass: ref p, .. } if *p == pass));
    let later = room.status(&place.token, expires_at).await.expect("status");
    assert_eq!(later.standing, Standing::Expired);
}

async fn holds_need_a_pass_only_while_the_room_gates(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    assert!(!room.requires_pass(&config, OPEN - 1).await.expect("before"));
    assert!(
        room.requires_pass(&config, OPEN)
            .await
            .expect("no room yet"),
        "an enabled room gates from opening even before anyone joins"
    );
    room.control(&config, Control::Pause, OPEN)
        .await
        .expect("pause");
    assert!(room.requires_pass(&config, OPEN + 1).await.expect("paused"));
    room.control(&config, Control::End, OPEN + 2)
        .await
        .expect("end");
    assert!(!room.requires_pass(&config, OPEN + 3).await.expect("ended"));
}

async fn a_quiet_room_deactivates_and_wakes_up_again(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    let first = room.join(&config, Ulid::new(), OPEN).await.expect("join");
    assert!(matches!(first.standing, Standing::Admitted { .. }));
    // Nobody waits for the quiet period: the room stops gating holds.
    room.tick(config.event, OPEN + 60_000).await.expect("tick");
    assert!(room
        .requires_pass(&config, OPEN + 60_000)
        .await
        .expect("gates"));
    room.tick(config.event, OPEN + 121_000).await.expect("tick");
    assert!(!room
        .requires_pass(&config, OPEN + 121_000)
        .await
        .expect("quiet"));
    // Joins within the rate go straight through...
    let second = room
        .join(&config, Ulid::new(), OPEN + 122_000)
        .await
        .expect("join");
    assert!(matches!(second.standing, Standing::Admitted { .. }));
    assert_eq!(second.room, RoomState::Inactive);
    // ...and joins outrunning it wake the room up.
    let mut last = second;
    for i in 0..5 {
        last = room
            .join(&config, Ulid::new(), OPEN + 122_001 + i)
            .await
            .expect("join");
    }
    assert_eq!(last.room, RoomState::Active);
    assert!(matches!(last.standing, Standing::Waiting { .. }));
    assert!(room
        .requires_pass(&config, OPEN + 122_010)
        .await
        .expect("gates"));
}

async fn the_organizer_pauses_resumes_and_ends(room: Arc<dyn WaitingRoom>) {
    let config = config(600);
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(
            room.join(&config, Ulid::new(), OPEN - 1)
                .await
                .expect("j")
                .token,
        );
    }
    let paused = room
        .control(&config, Control::Pause, OPEN)
        .await
        .expect("pause");
    assert_eq!(paused.state, RoomState::Paused);
    let (admitted, _) = drive(&room, config.event, OPEN, OPEN + 10_000, 100).await;
    assert!(admitted.is_empty(), "a paused room admits nobody");
    let waiting = room.status(&tokens[0], OPEN + 10_001).await.expect("s");
    assert!(matches!(
        waiting.standing,
        Standing::Waiting { eta_ms: None, .. }
    ));
    room.control(&config, Control::Resume, OPEN + 10_002)
        .await
        .expect("resume");
    let (admitted, _) = drive(&room, config.event, OPEN + 10_100, OPEN + 11_000, 100).await;
    assert!(
        !admitted.is_empty() && admitted.len() <= 12,
        "{}",
        admitted.len()
    );
    let ended = room
        .control(&config, Control::End, OPEN + 11_001)
        .await
        .expect("end");
    assert_eq!(ended.state, RoomState::Ended);
    // Everyone still waiting goes through as they ask.
    for token in &tokens {
        let place = room.status(token, OPEN + 11_002).await.expect("s");
        assert!(
            matches!(place.standing, Standing::Admitted { .. }),
            "{place:?}"
        );
    }
    let stats = room
        .stats(config.event, OPEN + 11_003)
        .await
        .expect("stats")
        .expect("room");
    assert_eq!(stats.waiting, 0);
    assert_eq!(stats.admitted_total, 20);
}

async fn eta_follows_the_measured_rate(room: Arc<dyn WaitingRoom>) {
    let config = config(600);
    let mut tokens = Vec::new();
    for _ in 0..2_000 {
        tokens.push(
            room.join(&config, Ulid::new(), OPEN - 1)
                .await
                .expect("j")
                .token,
        );
    }
    // Before any measurement the configured rate answers: place p waits p/10 s.
    let mut last_token = String::new();
    for token in &tokens {
        let place = room.status(token, OPEN).await.expect("s");
        if place.standing.position() == Some(1_999) {
            last_token = place.token;
        }
    }
    let last = room.status(&last_token, OPEN).await.expect("s");
    let Standing::Waiting {
        position,
        eta_ms: Some(eta),
    } = last.standing
    else {
        panic!("{last:?}");
    };
    let expected = position as f64 / 10.0 * 1000.0;
    assert!(
        (eta as f64 - expected).abs() < expected * 0.02,
        "{eta} vs {expected}"
    );
    // After a minute at the rate the measured rate agrees.
    drive_present(&room, config.event, &tokens, (OPEN, OPEN + MINUTE, 100)).await;
    let later = room.status(&last_token, OPEN + MINUTE).await.expect("s");
    let Standing::Waiting {
        position,
        eta_ms: Some(eta),
    } = later.standing
    else {
        panic!("{later:?}");
    };
    let expected = position as f64 / 10.0 * 1000.0;
    assert!(
        (eta as f64 - expected).abs() < expected * 0.1,
        "{eta} vs {expected}"
    );
    let stats = room
        .stats(config.event, OPEN + MINUTE)
        .await
        .expect("s")
        .expect("r");
    assert!(
        (stats.measured_per_minute - 600.0).abs() < 30.0,
        "{stats:?}"
    );
}

async fn tokens_are_checked_before_lookup(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    let place = room
        .join(&config, Ulid::new(), OPEN - 1)
        .await
        .expect("join");
    let forger = RoomSigner::new(b"not-the-secret-but-32-bytes-long");
    let forged = forger.token(config.event, 0);
    assert_eq!(
        room.status(&forged, OPEN).await,
        Err(WaitroomError::UnknownToken)
    );
    for malformed in ["", "x", "../../etc", &place.token[1..]] {
        assert_eq!(
            room.status(malformed, OPEN).await,
            Err(WaitroomError::MalformedToken),
            "{malformed:?}"
        );
    }
    // Signed by us, but for a place or room that does not exist.
    let signer = RoomSigner::new(SECRET);
    assert_eq!(
        room.status(&signer.token(config.event, 7), OPEN).await,
        Err(WaitroomError::UnknownToken)
    );
    assert_eq!(
        room.status(&signer.token(Ulid::new(), 0), OPEN).await,
        Err(WaitroomError::UnknownToken)
    );
    assert_eq!(
        room.leave(&forged, OPEN).await,
        Err(WaitroomError::UnknownToken)
    );
}

async fn joining_before_the_window_is_refused(room: Arc<dyn WaitingRoom>) {
    let config = config(60);
    assert_eq!(
        room.join(&config, Ulid::new(), config.join_from - 1).await,
        Err(WaitroomError::NotJoinableYet {
            join_from: config.join_from
        })
    );
    room.join(&config, Ulid::new(), config.join_from)
        .await
        .expect("the window opens");
}

async fn concurrent_joins_get_distinct_places(room: Arc<dyn WaitingRoom>) {
    let config = config(1);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let room = Arc::clone(&room);
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let fan = Ulid::new();
            let first = room.join(&config, fan, OPEN + 1).await.expect("join");
            let again = room.join(&config, fan, OPEN + 2).await.expect("again");
            assert_eq!(first.token, again.token);
            again.standing.position().expect("a place")
        }));
    }
    let mut places = Vec::new();
    for task in tasks {
        places.push(task.await.expect("task"));
    }
    places.sort_unstable();
    // One fan went straight through (place 0); the rest hold places 1..=199.
    let expected: Vec<u64> = (0..200).collect();
    assert_eq!(places, expected);
}

async fn rooms_are_driven_from_the_first_join_and_retired_when_the_event_starts(
    room: Arc<dyn WaitingRoom>,
) {
    let config = config(60);
    // A join before the window is refused, and must not leave a room the driver cannot see.
    room.join(&config, Ulid::new(), config.join_from - 1)
        .await
        .expect_err("too early");
    let place = room
        .join(&config, Ulid::new(), OPEN - 1)
        .await
        .expect("join");
    assert!(room.rooms().await.expect("rooms").contains(&config.event));
    assert!(room.requires_pass(&config, OPEN).await.expect("gates"));
    // Once the event starts the room is retired: not driven, its places unknown, no gate.
    let outcome = room
        .tick(config.event, config.closes_at)
        .await
        .expect("tick");
    assert!(outcome.admitted.is_empty());
    assert!(!room.rooms().await.expect("rooms").contains(&config.event));
    assert_eq!(
        room.status(&place.token, config.closes_at).await,
        Err(WaitroomError::UnknownToken)
    );
    assert!(!room
        .requires_pass(&config, config.closes_at)
        .await
        .expect("no gate"));
}

async fn passes_expire_on_time_when_the_ttl_changes(room: Arc<dyn WaitingRoom>) {
    let long = RoomConfig {
        pass_ttl_ms: 15 * MINUTE,
        ..config(600)
    };
    let short = RoomConfig {
        pass_ttl_ms: MINUTE,
        ..long.clone()
    };
    room.join(&long, Ulid::new(), OPEN).await.expect("first");
    // The organizer shortens the pass; the next fan's pass expires before the first one's.
    let second = room
        .join(&short, Ulid::new(), OPEN + 1_000)
        .await
        .expect("second");
    assert!(
        matches!(second.standing, Standing::Admitted { .. }),
        "{second:?}"
    );
    let stats = room
        .stats(long.event, OPEN + 1_000 + MINUTE)
        .await
        .expect("stats")
        .expect("room");
    assert_eq!(
        stats.active, 1,
        "the short pass has expired, the long one not"
    );
}

async fn idle_places_are_swept_on_time_in_any_order(room: Arc<dyn WaitingRoom>) {
    let config = config(1);
    room.join(&config, Ulid::new(), OPEN)
        .await
        .expect("straight through");
    let ann = room
        .join(&config, Ulid::new(), OPEN + 1)
        .await
        .expect("ann");
    // Paused, so nobody is admitted meanwhile: only the sweep moves anyone.
    room.control(&config, Control::Pause, OPEN + 2)
        .await
        .expect("pause");
    let bob = room
        .join(&config, Ulid::new(), OPEN + 30_000)
        .await
        .expect("bob");
    room.status(&ann.token, OPEN + 50_000)
        .await
        .expect("ann polls");
    let cat = room
        .join(&config, Ulid::new(), OPEN + 60_000)
        .await
        .expect("cat");
    // The first sweep finds Ann's join record out of date (she polled at 50 s) and keeps her.
    let first = room.tick(config.event, OPEN + 70_000).await.expect("tick");
    assert_eq!(first.abandoned, 0);
    room.status(&cat.token, OPEN + 100_000)
        .await
        .expect("cat polls");
    // At 111 s Ann (last seen at 50 s) and Bob (30 s) are both past the 60 s timeout; Cat is not.
    let second = room.tick(config.event, OPEN + 111_000).await.expect("tick");
    assert_eq!(second.abandoned, 2);
    assert_eq!(
        room.status(&ann.token, OPEN + 111_001)
            .await
            .expect("ann")
            .standing,
        Standing::Expired
    );
    assert_eq!(
        room.status(&bob.token, OPEN + 111_001)
            .await
            .expect("bob")
            .standing,
        Standing::Expired
    );
}

/// Redis only: joins batched per node (one script call per batch per room, see
/// `RedisWaitingRoom::join_batches`) keep every join's meaning, on one server and on the cluster.
mod batched_joins {
    use super::*;
    use marquee_waitroom::BatchStats;

    /// `nodes` rooms over one Redis and one key prefix, as separate nodes would have.
    async fn nodes(url: &str, nodes: usize) -> Vec<Arc<RedisWaitingRoom>> {
        let prefix = format!("test:{}", Ulid::new());
        let mut rooms = Vec::new();
        for _ in 0..nodes {
            rooms.push(Arc::new(
                RedisWaitingRoom::connect(url, &prefix, RoomSigner::new(SECRET), timings())
                    .await
                    .expect("redis"),
            ));
        }
        rooms
    }

    fn total(rooms: &[Arc<RedisWaitingRoom>]) -> BatchStats {
        rooms.iter().fold(BatchStats::default(), |sum, room| {
            let stats = room.join_batches();
            BatchStats {
                calls: sum.calls + stats.calls,
                requests: sum.requests + stats.requests,
            }
        })
    }

    /// 3 nodes × 400 fans join one room at once; every fourth fan joins twice at once (the two
    /// land next to each other in the node's queue, usually in one batch), and a few joins come
    /// before the window. Every fan gets one place, the places are 0 (the first fan, straight
    /// through) then 1, 2, … with no gap or duplicate, a double join answers the same place
    /// twice, and early joins are refused without disturbing the batch they rode in.
    async fn several_nodes_get_consecutive_places(url: &str) {
        let rooms = nodes(url, 3).await;
        let config = config(1);
        let per_node = 400;
        let mut tasks = Vec::new();
        for room in &rooms {
            for i in 0..per_node {
                let room = room.clone();
                let config = config.clone();
                tasks.push(tokio::spawn(async move {
                    let fan = Ulid::new();
                    if i % 50 == 7 {
                        let early = room.join(&config, fan, config.join_from - 1).await;
                        assert_eq!(
                            early,
                            Err(WaitroomError::NotJoinableYet {
                                join_from: config.join_from
                            })
                        );
                    }
                    if i % 4 == 0 {
                        let (first, again) = tokio::join!(
                            room.join(&config, fan, OPEN + 1),
                            room.join(&config, fan, OPEN + 1)
                        );
                        let (first, again) = (first.expect("join"), again.expect("again"));
                        assert_eq!(first.token, again.token);
                        assert_eq!(first.standing.position(), again.standing.position());
                        (fan, first)
                    } else {
                        (fan, room.join(&config, fan, OPEN + 1).await.expect("join"))
                    }
                }));
            }
        }
        let mut places = Vec::new();
        let mut tokens = HashSet::new();
        let mut fans = Vec::new();
        for task in tasks {
            let (fan, place) = task.await.expect("task");
            assert!(tokens.insert(place.token.clone()), "a token twice");
            places.push(place.standing.position().expect("a place"));
            fans.push((fan, place.token));
        }
        places.sort_unstable();
        let expected: Vec<u64> = (0..(3 * per_node) as u64).collect();
        assert_eq!(places, expected);
        // Joining again later, from another node, returns the same place.
        for (n, (fan, token)) in fans.iter().enumerate().step_by(97) {
            let room = &rooms[(n + 1) % rooms.len()];
            let again = room.join(&config, *fan, OPEN + 2).await.expect("again");
            assert_eq!(&again.token, token);
        }
        let stats = room_stats(&rooms[0], config.event).await;
        assert_eq!(stats.waiting + stats.admitted_total, (3 * per_node) as u64);
        assert!(rooms[0]
            .rooms()
            .await
            .expect("rooms")
            .contains(&config.event));
    }

    async fn room_stats(room: &Arc<RedisWaitingRoom>, event: Ulid) -> marquee_waitroom::RoomStats {
        room.stats(event, OPEN + 3)
            .await
            .expect("stats")
            .expect("room")
    }

    /// A lone join is one call of its own; 500 joins at once from one node share calls.
    async fn concurrent_joins_share_script_calls(url: &str) {
        let rooms = nodes(url, 1).await;
        let room = rooms[0].clone();
        let config = config(60);
        room.join(&config, Ulid::new(), OPEN).await.expect("lone");
        assert_eq!(
            room.join_batches(),
            BatchStats {
                calls: 1,
                requests: 1
            }
        );
        let joins: Vec<_> = (0..500)
            .map(|_| {
                let room = room.clone();
                let config = config.clone();
                tokio::spawn(async move { room.join(&config, Ulid::new(), OPEN + 1).await })
            })
            .collect();
        for join in joins {
            join.await.expect("task").expect("join");
        }
        let stats = total(&rooms);
        assert_eq!(stats.requests, 501);
        assert!(
            stats.calls < stats.requests,
            "joins were not batched: {stats:?}"
        );
    }

    /// One fan joining ten times at once, between other fans: on a single-threaded runtime the
    /// batch's sender cannot run before all twenty joins are queued (in one poll), so they
    /// travel in one call, and the script, running them in order, gives the fan one place and
    /// every other fan a place of its own.
    async fn a_fan_joining_again_within_a_batch_keeps_one_place(url: &str) {
        let rooms = nodes(url, 1).await;
        let room = rooms[0].clone();
        let config = config(1);
        // Straight through, and caches the room secret so the joins below queue at once.
        room.join(&config, Ulid::new(), OPEN).await.expect("first");
        let before = room.join_batches();
        let fan = Ulid::new();
        let others: Vec<Ulid> = (0..10).map(|_| Ulid::new()).collect();
        let joins = others
            .iter()
            .flat_map(|other| [fan, *other])
            .map(|user| room.join(&config, user, OPEN + 1));
        let places: Vec<_> = futures::future::join_all(joins)
            .await
            .into_iter()
            .map(|place| place.expect("join"))
            .collect();
        let after = room.join_batches();
        assert_eq!(after.requests - before.requests, 20);
        assert_eq!(after.calls - before.calls, 1, "{before:?} → {after:?}");
        let mine: Vec<_> = places.iter().step_by(2).collect();
        assert!(mine.iter().all(|place| place.token == mine[0].token));
        assert!(mine.iter().all(|place| place.standing == mine[0].standing));
        // The fan queued first (place 1), the others after it in order.
        let positions: Vec<u64> = places
            .iter()
            .map(|place| place.standing.position().expect("a place"))
            .collect();
        let expected: Vec<u64> = (2..12).flat_map(|other| [1, other]).collect();
        assert_eq!(positions, expected);
    }

    /// With batching off (batches of one), every join is a call: the counter counts calls.
    async fn batches_of_one_are_one_call_per_join(url: &str) {
        let room = Arc::new(
            RedisWaitingRoom::connect_batching(
                url,
                &format!("test:{}", Ulid::new()),
                RoomSigner::new(SECRET),
                timings(),
                1,
            )
            .await
            .expect("redis"),
        );
        let config = config(60);
        let joins: Vec<_> = (0..50)
            .map(|_| {
                let room = room.clone();
                let config = config.clone();
                tokio::spawn(async move { room.join(&config, Ulid::new(), OPEN + 1).await })
            })
            .collect();
        for join in joins {
            join.await.expect("task").expect("join");
        }
        assert_eq!(
            room.join_batches(),
            BatchStats {
                calls: 50,
                requests: 50
            }
        );
    }

    macro_rules! on_both {
        ($($test:ident),* $(,)?) => {
            mod redis {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() { super::$test(&marquee_testkit::redis_url()).await })*
            }
            mod redis_cluster {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() { super::$test(&marquee_testkit::redis_cluster_url()).await })*
            }
        };
    }

    // Single-threaded on purpose (see the test): the queueing order is then exact.
    mod in_one_batch {
        #[tokio::test(flavor = "current_thread")]
        async fn redis() {
            super::a_fan_joining_again_within_a_batch_keeps_one_place(&marquee_testkit::redis_url())
                .await
        }
        #[tokio::test(flavor = "current_thread")]
        async fn redis_cluster() {
            super::a_fan_joining_again_within_a_batch_keeps_one_place(
                &marquee_testkit::redis_cluster_url(),
            )
            .await
        }
    }

    on_both!(
        several_nodes_get_consecutive_places,
        concurrent_joins_share_script_calls,
        batches_of_one_are_one_call_per_join,
    );
}
