//! Notifications end to end: e-mail through a real SMTP server (aiosmtpd, see
//! `tests/support/smtp_sink.py`), signed webhooks to a real receiver, retries and dead letters
//! in the node's jobs database, and `marquee jobs` replaying them.

use crate::holds::{on_sale, OnSale};
use crate::support::{own_address, TestApp};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use marquee_jobs::{JobFilter, JobQueue, JobState, SqlJobQueue};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it answers, for up to 30 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An aiosmtpd server on an address of its own.
struct SmtpSink {
    _child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    async fn start(address: SocketAddr) -> SmtpSink {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("mail.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(address.ip().to_string())
            .arg(address.port().to_string())
            .arg(&out)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (installed by scripts/test)");
        eventually("the SMTP sink to listen", || async {
            tokio::net::TcpStream::connect(address)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        SmtpSink {
            _child: child,
            out,
            _dir: dir,
        }
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    async fn await_messages(&self, count: usize) -> Vec<Value> {
        eventually(&format!("{count} e-mail(s)"), || async {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        })
        .await
    }
}

async fn email_of(app: &TestApp, token: &str) -> String {
    app.get("/api/v1/me", Some(token))
        .await
        .expect(StatusCode::OK)["email"]
        .as_str()
        .expect("email")
        .to_string()
}

async fn buy(sale: &OnSale, fan: &str, seat: usize) -> String {
    let hold = sale
        .hold(fan, json!({"seat_ids": [sale.seat_ids[seat]]}))
        .await
        .expect(StatusCode::CREATED);
    let order = sale
        .order(fan, hold["id"].as_str().expect("hold id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    order["id"].as_str().expect("order id").to_string()
}

async fn jobs_of(app: &TestApp) -> SqlJobQueue {
    let url = format!(
        "sqlite://{}?mode=rwc",
        app.data_dir().join("jobs.db").display()
    );
    SqlJobQueue::connect(&url, 1)
        .await
        .expect("the node's jobs")
}

/// The test's receivers listen on loopback, which webhooks may not reach by default.
fn allow_loopback_webhooks(config: &mut marquee::ServerConfig) {
    config.notifications.webhook_policy =
        marquee_notify::AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("net")]);
}

fn quick_retries(config: &mut marquee::ServerConfig, attempts: u32) {
    config.notifications.max_attempts = attempts;
    config.notifications.worker.backoff = marquee_jobs::Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(400),
        jitter: 0.2,
    };
    config.notifications.worker.poll = Duration::from_millis(50);
}

#[tokio::test]
async fn fans_get_an_email_for_each_confirmation_refund_and_cancellation_in_order() {
    let address = own_address();
    let sink = SmtpSink::start(address).await;
    let app = TestApp::spawn_with(|config| {
        config.smtp_url = Some(format!("smtp://{address}"));
        config.mail_from = "Marquee Tickets <tickets@marquee.test>".into();
        config.notifications.public_url = Some("https://tickets.example".into());
    })
    .await;
    let sale = on_sale(app).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let ann_email = email_of(&sale.app, &ann).await;
    let bob_email = email_of(&sale.app, &bob).await;

    let first = buy(&sale, &ann, 0).await;
    let refund = sale
        .app
        .post(
            &format!("/api/v1/orders/{first}/refund"),
            Some(&ann),
            json!({}),
        )
        .await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.body);
    let second = buy(&sale, &bob, 1).await;
    sale.app
        .post(
            &format!("/api/v1/events/{}/cancel", sale.event_id),
            Some(&sale.organizer),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);

    // Four e-mails: Ann's confirmation and refund, Bob's confirmation and cancellation. Jobs
    // of different orders run side by side, so they may arrive in any order between orders.
    let messages = sink.await_messages(4).await;
    let title = "Metallica — M72 World Tour";
    let to_ann: Vec<&Value> = messages
        .iter()
        .filter(|message| message["rcpt_tos"] == json!([ann_email]))
        .collect();
    assert_eq!(to_ann.len(), 2, "{messages:#?}");
    // The confirmation, then the refund: one order's e-mails keep their order.
    assert_eq!(to_ann[0]["subject"], format!("Your tickets for {title}"));
    let body = to_ann[0]["body"].as_str().expect("body");
    assert!(body.contains(&first), "{body}");
    assert!(body.contains("89.00 GBP"), "{body}");
    assert!(
        body.contains(&format!("https://tickets.example/orders/{first}")),
        "{body}"
    );
    assert_eq!(to_ann[1]["subject"], format!("Refund for {title}"));
    assert_eq!(
        to_ann[0]["from"], "Marquee Tickets <tickets@marquee.test>",
        "{:?}",
        to_ann[0]
    );
    let to_bob: Vec<&Value> = messages
        .iter()
        .filter(|message| message["rcpt_tos"] == json!([bob_email]))
        .collect();
    assert_eq!(to_bob.len(), 2, "{messages:#?}");
    assert_eq!(to_bob[0]["subject"], format!("Your tickets for {title}"));
    assert_eq!(to_bob[1]["subject"], format!("{title} is cancelled"));
    assert!(to_bob[1]["body"]
        .as_str()
        .is_some_and(|body| body.contains(&second) && body.contains("refunded in full")));
    // Once every mail job is done, nothing more can be sent: there were exactly four.
    let jobs = jobs_of(&sale.app).await;
    eventually("every mail job done", || async {
        jobs.list(&JobFilter {
            queue: Some("mail".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list")
        .is_empty()
        .then_some(())
    })
    .await;
    jobs.close().await;
    assert_eq!(sink.messages().len(), 4);
    sale.app.stop().await;
}

#[tokio::test]
async fn while_smtp_is_unreachable_the_email_waits_in_its_job_and_goes_once_it_is_back() {
    // The app keeps trying this address while the sink is not up: one no other test binds.
    let address = own_address();
    let app = TestApp::spawn_with(|config| {
        config.smtp_url = Some(format!("smtp://{address}"));
        quick_retries(config, 100);
    })
    .await;
    let sale = on_sale(app).await;
    let (fan, _) = sale.app.register("fan").await;
    let order = buy(&sale, &fan, 0).await;
    let jobs = jobs_of(&sale.app).await;
    let failing = eventually("a failed attempt recorded", || async {
        let listed = jobs
            .list(&JobFilter {
                queue: Some("mail".into()),
                limit: 10,
                ..JobFilter::default()
            })
            .await
            .expect("list");
        listed
            .into_iter()
            .find(|job| job.attempt >= 2 && job.last_error.is_some())
    })
    .await;
    assert_eq!(failing.payload["order_id"], json!(order));
    assert_ne!(failing.state, JobState::Dead);
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("SMTP")),
        "{failing:?}"
    );
    let sink = SmtpSink::start(address).await;
    let messages = sink.await_messages(1).await;
    assert!(messages[0]["body"]
        .as_str()
        .is_some_and(|body| body.contains(&order)));
    eventually("the job to be done", || async {
        jobs.get(failing.id)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    jobs.close().await;
    sale.app.stop().await;
}

/// What a receiver got: each delivery's headers and body.
type Deliveries = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// An organizer's receiver: records what it gets and answers `status`.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    received: Deliveries,
}

async fn receiver() -> Receiver {
    let status = Arc::new(AtomicU16::new(204));
    let received: Deliveries = Arc::new(Mutex::new(Vec::new()));
    let (answer, record) = (status.clone(), received.clone());
    let app = axum::Router::new().route(
        "/hooks/marquee",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (answer, record) = (answer.clone(), record.clone());
            async move {
                record.lock().expect("lock").push((headers, body.to_vec()));
                AxumStatus::from_u16(answer.load(Ordering::SeqCst))
                    .unwrap_or(AxumStatus::INTERNAL_SERVER_ERROR)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url: format!("http://{address}/hooks/marquee"),
        status,
        received,
    }
}

impl Receiver {
    fn deliveries(&self) -> Vec<(HeaderMap, Vec<u8>)> {
        self.received.lock().expect("lock").clone()
    }
}

fn marquee(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("jobs")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("MARQUEE_DATABASE_URL")
        .output()
        .expect("marquee jobs runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test]
async fn webhooks_are_signed_retried_dead_lettered_and_replayed_with_marquee_jobs() {
    let hook = receiver().await;
    let app = TestApp::spawn_with(|config| {
        allow_loopback_webhooks(config);
        quick_retries(config, 3);
    })
    .await;
    let sale = on_sale(app).await;
    let created = sale
        .app
        .post(
            "/api/v1/webhooks",
            Some(&sale.organizer),
            json!({"url": hook.url, "events": ["order.confirmed", "order.refunded"], "description": "box office"}),
        )
        .await
        .expect(StatusCode::CREATED);
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        created["events"],
        json!(["order.confirmed", "order.refunded"])
    );

    let (fan, _) = sale.app.register("fan").await;
    let order = buy(&sale, &fan, 0).await;
    let (headers, body) = eventually("the confirmation webhook", || async {
        hook.deliveries().into_iter().next()
    })
    .await;
    let signature = headers
        .get("marquee-signature")
        .and_then(|value| value.to_str().ok())
        .expect("signed");
    let now = chrono::Utc::now().timestamp();
    marquee_notify::verify(&secret, signature, &body, now, 300).expect("a valid signature");
    assert!(marquee_notify::verify("whsec_wrong", signature, &body, now, 300).is_err());
    let payload: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(payload["type"], "order.confirmed");
    assert_eq!(payload["data"]["order_id"], json!(order));
    assert_eq!(payload["data"]["event_id"], json!(sale.event_id));
    assert_eq!(
        headers.get("marquee-event").and_then(|v| v.to_str().ok()),
        Some("order.confirmed")
    );

    // The receiver breaks; the refund's delivery is tried 3 times, then dead-lettered.
    hook.status.store(500, Ordering::SeqCst);
    sale.app
        .post(
            &format!("/api/v1/orders/{order}/refund"),
            Some(&fan),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    let jobs = jobs_of(&sale.app).await;
    let dead = eventually("the refund webhook in the dead letters", || async {
        jobs.list(&JobFilter {
            queue: Some("webhooks".into()),
            state: Some(JobState::Dead),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .next()
    })
    .await;
    assert_eq!(dead.attempt, 3);
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|error| error.contains("attempt 3 of 3") && error.contains("500")),
        "{dead:?}"
    );
    let refund_attempts: Vec<String> = hook
        .deliveries()
        .iter()
        .skip(1)
        .filter_map(|(headers, _)| {
            headers
                .get("marquee-delivery")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(refund_attempts.len(), 3, "{refund_attempts:?}");
    assert!(
        refund_attempts.windows(2).all(|pair| pair[0] == pair[1]),
        "one delivery id across retries: {refund_attempts:?}"
    );

    // The operator sees it, fixes the receiver and replays it.
    let (ok, listed) = marquee(sale.app.data_dir(), &["list", "--state", "dead"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&dead.id.to_string()) && listed.contains("webhooks"),
        "{listed}"
    );
    let (ok, inspected) = marquee(sale.app.data_dir(), &["inspect", &dead.id.to_string()]);
    assert!(ok, "{inspected}");
    let record: Value = serde_json::from_str(&inspected).expect("json");
    assert_eq!(record["payload"]["body"]["type"], "order.refunded");
    hook.status.store(200, Ordering::SeqCst);
    let (ok, replayed) = marquee(sale.app.data_dir(), &["replay", &dead.id.to_string()]);
    assert!(ok && replayed.contains("replayed"), "{replayed}");
    eventually("the replayed delivery", || async {
        (hook.deliveries().len() == 5).then_some(())
    })
    .await;
    let (_, last) = hook.deliveries().pop().expect("delivery");
    let last: Value = serde_json::from_slice(&last).expect("json");
    assert_eq!(last["type"], "order.refunded");
    let (ok, again) = marquee(sale.app.data_dir(), &["replay", &dead.id.to_string()]);
    assert!(!ok && again.contains("not a dead letter"), "{again}");
    let (ok, stats) = marquee(sale.app.data_dir(), &["stats"]);
    assert!(ok && stats.contains("QUEUE"), "{stats}");
    jobs.close().await;
    sale.app.stop().await;
}

#[tokio::test]
async fn webhook_urls_into_private_networks_and_bad_registrations_are_refused() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.1.1]/hook",
        "http://2130706433/hook",
    ] {
        app.post("/api/v1/webhooks", Some(&organizer), json!({"url": url}))
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused");
    }
    for body in [
        json!({"url": "ftp://example.com/hook"}),
        json!({"url": "https://user:pw@example.com/hook"}),
        json!({"url": "not a url"}),
        json!({"url": format!("https://example.com/{}", "a".repeat(2_100))}),
        json!({"url": "https://example.com/hook", "events": []}),
        json!({"url": "https://example.com/hook", "events": ["order.stolen"]}),
        json!({"url": "https://example.com/hook", "description": "x".repeat(201)}),
        json!({"url": "https://example.com/hook", "secret": "mine"}),
        json!({"events": ["order.confirmed"]}),
    ] {
        let response = app
            .post("/api/v1/webhooks", Some(&organizer), body.clone())
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            response.body
        );
    }
    let (fan, _) = app.register("fan").await;
    app.post(
        "/api/v1/webhooks",
        Some(&fan),
        json!({"url": "https://example.com/hook"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.get("/api/v1/webhooks", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn an_organizer_sees_and_removes_only_their_own_webhooks() {
    let hook = receiver().await;
    let app = TestApp::spawn_with(|config| {
        allow_loopback_webhooks(config);
    })
    .await;
    let (owner, _) = app.register("organizer").await;
    let (rival, _) = app.register("organizer").await;
    let created = app
        .post("/api/v1/webhooks", Some(&owner), json!({"url": hook.url}))
        .await
        .expect(StatusCode::CREATED);
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["events"].as_array().map(Vec::len), Some(4));
    let listed = app
        .get("/api/v1/webhooks", Some(&owner))
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed["items"][0]["id"], json!(id));
    assert!(
        listed["items"][0].get("secret").is_none(),
        "lists never show secrets"
    );
    let single = app
        .get(&format!("/api/v1/webhooks/{id}"), Some(&owner))
        .await
        .expect(StatusCode::OK);
    assert_eq!(single["secret"], created["secret"]);
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/webhooks/{id}")),
        (reqwest::Method::DELETE, format!("/api/v1/webhooks/{id}")),
        (reqwest::Method::POST, format!("/api/v1/webhooks/{id}/ping")),
    ] {
        app.request(method, &path, Some(&rival), Some(json!({})))
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        app.get("/api/v1/webhooks", Some(&rival))
            .await
            .expect(StatusCode::OK)["items"],
        json!([])
    );
    // A ping reaches the receiver, signed.
    let ping = app
        .post(
            &format!("/api/v1/webhooks/{id}/ping"),
            Some(&owner),
            json!({}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let (headers, body) = eventually("the ping", || async {
        hook.deliveries().into_iter().next()
    })
    .await;
    assert_eq!(
        headers
            .get("marquee-delivery")
            .and_then(|v| v.to_str().ok()),
        ping["delivery_id"].as_str()
    );
    let signature = headers
        .get("marquee-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    marquee_notify::verify(
        created["secret"].as_str().expect("secret"),
        signature,
        &body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("valid");
    let response = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/webhooks/{id}"), Some(&owner))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn a_postgres_node_keeps_its_jobs_beside_the_catalog_and_delivers_them() {
    let hook = receiver().await;
    let schema = format!("notify_{}", crate::support::ulid_lower());
    crate::support::sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let database_url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        crate::support::postgres_url()
    );
    let url = database_url.clone();
    let app = TestApp::spawn_with(move |config| {
        config.database_url = Some(url);
        allow_loopback_webhooks(config);
        quick_retries(config, 3);
    })
    .await;
    let sale = on_sale(app).await;
    sale.app
        .post(
            "/api/v1/webhooks",
            Some(&sale.organizer),
            json!({"url": hook.url, "events": ["order.confirmed"]}),
        )
        .await
        .expect(StatusCode::CREATED);
    let (fan, _) = sale.app.register("fan").await;
    hook.status.store(503, Ordering::SeqCst);
    let order = buy(&sale, &fan, 0).await;
    // The failed first attempt is a row in the catalog's own database.
    let jobs = SqlJobQueue::connect(&database_url, 1).await.expect("jobs");
    assert_eq!(jobs.backend(), "postgres");
    let retried = eventually("a retried delivery in PostgreSQL", || async {
        jobs.list(&JobFilter {
            queue: Some("webhooks".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .find(|job| job.last_error.as_deref().is_some_and(|e| e.contains("503")))
    })
    .await;
    assert_eq!(retried.payload["body"]["data"]["order_id"], json!(order));
    hook.status.store(204, Ordering::SeqCst);
    eventually("the delivery once the receiver is back", || async {
        jobs.get(retried.id)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(hook.deliveries().len() >= 2);
    jobs.close().await;
    sale.app.stop().await;
    crate::support::sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

#[tokio::test]
async fn an_organizer_sees_a_failed_delivery_and_replays_it_once_the_receiver_is_fixed() {
    let hook = receiver().await;
    let app = TestApp::spawn_with(|config| {
        allow_loopback_webhooks(config);
        quick_retries(config, 2);
    })
    .await;
    let (owner, _) = app.register("organizer").await;
    let (rival, _) = app.register("organizer").await;
    let created = app
        .post("/api/v1/webhooks", Some(&owner), json!({"url": hook.url}))
        .await
        .expect(StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_string();
    hook.status.store(500, Ordering::SeqCst);
    app.post(
        &format!("/api/v1/webhooks/{id}/ping"),
        Some(&owner),
        json!({}),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let dead = eventually("the ping in the dead letters", || async {
        let listed = app
            .get(&deliveries, Some(&owner))
            .await
            .expect(StatusCode::OK);
        listed["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["state"] == "dead").cloned())
    })
    .await;
    assert_eq!(dead["type"], "ping");
    assert_eq!(dead["attempt"], 2);
    assert!(dead["last_error"]
        .as_str()
        .is_some_and(|error| error.contains("500")));
    // Nobody else sees or replays it.
    app.get(&deliveries, Some(&rival))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let job = dead["job_id"].as_i64().expect("job id");
    let replay = format!("/api/v1/webhooks/{id}/deliveries/{job}/replay");
    app.post(&replay, Some(&rival), json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    hook.status.store(204, Ordering::SeqCst);
    let replayed = app
        .post(&replay, Some(&owner), json!({}))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(replayed["delivery_id"], dead["delivery_id"]);
    eventually("the replayed ping delivered", || async {
        (hook.deliveries().len() == 3).then_some(())
    })
    .await;
    // It was replayed: the old job is gone, and a second replay finds nothing.
    app.post(&replay, Some(&owner), json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let listed = app
        .get(&deliveries, Some(&owner))
        .await
        .expect(StatusCode::OK);
    let left = listed["items"].as_array().map(Vec::len);
    assert!(left.is_some_and(|left| left <= 1), "{listed}");
    app.stop().await;
}

/// Issue #33 (low): IPv6 forms that carry or reach IPv4 or private space are refused too —
/// IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16` (its relays reach the embedded IPv4), Teredo
/// `2001::/32` and the old site-local `fec0::/10`.
#[tokio::test]
async fn webhook_urls_in_ipv6_tunnel_and_site_local_forms_are_refused() {
    let app = TestApp::spawn().await;
    let (organizer, _) = app.register("organizer").await;
    for url in [
        "http://[::127.0.0.1]/hook",
        "http://[::a9fe:a9fe]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[2002:c0a8:101::1]/hook",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
        "http://[fec0::1]/hook",
    ] {
        let response = app
            .post("/api/v1/webhooks", Some(&organizer), json!({"url": url}))
            .await;
        assert_eq!(
            (response.status, response.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused"),
            "{url}: {}",
            response.body
        );
    }
    app.stop().await;
}
