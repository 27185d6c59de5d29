//! What the platform tells people after the fact: e-mail to fans (order confirmed, refunded,
//! event cancelled), signed webhooks to organizers, and the "hold expiring in one minute"
//! reminder on the fan's push channel. All of it runs as jobs (the `jobs` block), so nothing is
//! lost when a node restarts, an SMTP server is down or a receiver answers 500.
//!
//! **Where jobs come from.** The notifier follows the change stream — the same ordered outbox
//! search and push follow — and turns each relevant change into jobs, enqueued together with
//! the stream position they came from ([`JobQueue::enqueue_after`]). Every node runs it; the
//! cursor lets one node's batch in and turns the others away, so each change makes its jobs
//! once, and a node that crashes between reading and enqueueing reads the same changes again.
//!
//! **Order.** A fan's e-mails are ordered by order id (the confirmation before the refund), a
//! webhook endpoint's deliveries by the order or event they are about.

use crate::AppState;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::{EventId, HoldId, HoldStatus, OrderId, UserId};
use marquee_jobs::{
    Job, JobFailure, JobHandler, JobQueue, NewJob, Worker, WorkerSettings, MAX_BATCH,
};
use marquee_notify::{AddressPolicy, Email, Mailer, Transience, WebhookDelivery, WebhookSender};
use marquee_push::Channel;
use marquee_store::{ChangeKind, ChangeRecord, WebhookEndpoint};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The queues.
pub const MAIL_QUEUE: &str = "mail";
pub const WEBHOOK_QUEUE: &str = "webhooks";
pub const REMINDER_QUEUE: &str = "reminders";
/// The notifier's cursor on the change stream.
const CURSOR: &str = "notifications";
/// How long before a hold lapses its fan is reminded.
const REMINDER_NOTICE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The event types a webhook endpoint can receive.
pub const WEBHOOK_EVENTS: [&str; 4] = [
    "order.confirmed",
    "order.refunded",
    "event.published",
    "event.cancelled",
];

/// How notifications are sent, composed by the binary.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    pub worker: WorkerSettings,
    /// Where webhooks may not go (see [`AddressPolicy`]).
    pub webhook_policy: AddressPolicy,
    pub webhook_timeout: Duration,
    /// The web app's address, for links in e-mails (`None`: no links).
    pub public_url: Option<String>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            max_attempts: 8,
            worker: WorkerSettings::default(),
            webhook_policy: AddressPolicy::default(),
            webhook_timeout: Duration::from_secs(10),
            public_url: None,
        }
    }
}

/// The jobs queue and the senders; part of [`AppState`].
pub struct Notifications {
    pub jobs: Arc<dyn JobQueue>,
    /// `None` when no SMTP server is configured: no e-mail jobs are made.
    pub mailer: Option<Arc<dyn Mailer>>,
    pub webhooks: WebhookSender,
    pub settings: NotificationSettings,
    wakers: std::sync::Mutex<Vec<Arc<tokio::sync::Notify>>>,
}

impl Notifications {
    pub fn new(
        jobs: Arc<dyn JobQueue>,
        mailer: Option<Arc<dyn Mailer>>,
        settings: NotificationSettings,
    ) -> Notifications {
        Notifications {
            jobs,
            mailer,
            webhooks: WebhookSender::new(settings.webhook_policy.clone(), settings.webhook_timeout),
            settings,
            wakers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Enqueues jobs made outside the change stream (a webhook ping) and wakes the workers.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<(), marquee_jobs::JobsError> {
        self.jobs.enqueue(jobs, Utc::now()).await?;
        self.wake_workers();
        Ok(())
    }

    /// Wakes this node's workers (jobs were made or replayed) instead of leaving them to poll.
    pub fn wake_workers(&self) {
        if let Ok(wakers) = self.wakers.lock() {
            for waker in wakers.iter() {
                waker.notify_one();
            }
        }
    }
}

/// Starts the notifier and a worker per queue; they stop when `stop` turns true.
pub fn spawn_notifications(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let notifications = state.notifications.clone();
    let mut tasks = Vec::new();
    let settings = notifications.settings.worker.clone();
    let grace = Duration::from_secs(10);
    let mut handlers: Vec<(&str, Arc<dyn JobHandler>)> = vec![
        (WEBHOOK_QUEUE, Arc::new(WebhookJobs(state.clone()))),
        (REMINDER_QUEUE, Arc::new(ReminderJobs(state.clone()))),
    ];
    if let Some(mailer) = notifications.mailer.clone() {
        handlers.push((
            MAIL_QUEUE,
            Arc::new(MailJobs {
                state: state.clone(),
                mailer,
            }),
        ));
    }
    for (queue, handler) in handlers {
        let worker = Worker::new(
            Arc::clone(&notifications.jobs),
            queue,
            handler,
            settings.clone(),
        );
        if let Ok(mut wakers) = notifications.wakers.lock() {
            wakers.push(worker.waker());
        }
        tasks.push(worker.spawn(stop.clone(), grace));
    }
    tasks.push(marquee_jobs::spawn_stats_sampler(
        Arc::clone(&notifications.jobs),
        Duration::from_secs(5),
        Duration::from_secs(24 * 3600),
        stop.clone(),
    ));
    tasks.push(spawn_notifier(state, notifications, stop));
    tasks
}

fn spawn_notifier(
    state: AppState,
    notifications: Arc<Notifications>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut after = loop {
            let latest = state.changes.latest().await;
            let cursor = match latest {
                // A new cursor starts at the present: history is not re-announced.
                Ok(latest) => notifications.jobs.cursor(CURSOR, latest).await.ok(),
                Err(_) => None,
            };
            if let Some(cursor) = cursor {
                break cursor;
            }
            tracing::warn!("notifications: cannot read the cursor yet; retrying");
            if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                return;
            }
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let records = tokio::select! {
                records = state.changes.read(after, 256, Duration::from_secs(1)) => records,
                _ = stop.changed() => return,
            };
            let records = match records {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "notifications: change stream unreadable");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            let (jobs, to) = match plan(&state, &notifications, &records).await {
                Ok(planned) => planned,
                Err(error) => {
                    tracing::warn!(%error, "notifications: could not plan jobs; retrying");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            match notifications
                .jobs
                .enqueue_after(CURSOR, after, to, &jobs, Utc::now())
                .await
            {
                Ok(true) => {
                    after = to;
                    if !jobs.is_empty() {
                        notifications.wake_workers();
                    }
                }
                // Another node enqueued these changes' jobs first: carry on from where it is.
                Ok(false) => match notifications.jobs.cursor(CURSOR, after).await {
                    Ok(cursor) => after = cursor.max(after),
                    Err(error) => tracing::warn!(%error, "notifications: cursor unreadable"),
                },
                Err(error) => {
                    tracing::warn!(%error, "notifications: could not enqueue; retrying");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    })
}

/// True when stopped.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("store: {0}")]
    Store(#[from] marquee_store::StoreError),
}

/// The jobs `records` call for, and the position up to which they cover the records (a batch
/// that would exceed one enqueue's limit stops early).
async fn plan(
    state: &AppState,
    notifications: &Notifications,
    records: &[ChangeRecord],
) -> Result<(Vec<NewJob>, i64), PlanError> {
    let mut jobs = Vec::new();
    let mut covered = records.first().map_or(0, |record| record.position - 1);
    // An organizer's endpoints, read once per batch of changes rather than once per order: in
    // an on-sale every change of the batch is the same organizer's.
    let mut endpoints_of = HashMap::new();
    for record in records {
        let before = jobs.len();
        plan_one(state, notifications, record, &mut endpoints_of, &mut jobs).await?;
        if jobs.len() > MAX_BATCH && before > 0 {
            jobs.truncate(before);
            break;
        }
        covered = record.position;
    }
    Ok((jobs, covered))
}

async fn plan_one(
    state: &AppState,
    notifications: &Notifications,
    record: &ChangeRecord,
    endpoints_of: &mut HashMap<UserId, Vec<WebhookEndpoint>>,
    jobs: &mut Vec<NewJob>,
) -> Result<(), PlanError> {
    let attempts = notifications.settings.max_attempts;
    let payload = &record.payload;
    let order_id = payload["order_id"].as_str();
    let (kind, subject) = match (record.kind, order_id, payload["reason"].as_str()) {
        (ChangeKind::SeatsSold, Some(order), _) => ("order.confirmed", order.to_string()),
        (ChangeKind::SeatsAvailable, Some(order), Some("event cancelled")) => {
            ("event.cancelled", order.to_string())
        }
        (ChangeKind::SeatsAvailable, Some(order), _) => ("order.refunded", order.to_string()),
        (ChangeKind::SeatsHeld, _, _) => {
            let Some(hold) = payload["hold_id"].as_str() else {
                return Ok(());
            };
            // The deadline travels with the change (no read per hold on the booking path);
            // older records without it are looked up.
            let deadline = payload["expires_at"]
                .as_str()
                .and_then(|raw| DateTime::parse_from_rfc3339(raw).ok())
                .map(|deadline| deadline.with_timezone(&Utc));
            let job = match deadline {
                Some(deadline) => Some(reminder_job(hold, deadline, attempts)),
                None => reminder(state, &HoldId::from_string(hold), attempts).await?,
            };
            jobs.extend(job);
            return Ok(());
        }
        (ChangeKind::EventPublished, _, _) => ("event.published", record.entity_id.clone()),
        (ChangeKind::EventCancelled, _, _) => ("event.cancelled", record.entity_id.clone()),
        _ => return Ok(()),
    };
    let is_order = order_id.is_some();
    if is_order && notifications.mailer.is_some() {
        jobs.push(
            NewJob::new(
                MAIL_QUEUE,
                json!({"template": kind, "order_id": subject, "position": record.position}),
            )
            .ordered_by(format!("order:{subject}"))
            .attempts(attempts),
        );
    }
    // Webhooks: per order for order changes; once per event for the event's own changes
    // (a cancellation's per-order refunds are `event.cancelled` e-mails, not webhooks).
    let webhook_type = match (record.kind, is_order) {
        (ChangeKind::SeatsAvailable, true) if kind == "event.cancelled" => "order.refunded",
        _ => kind,
    };
    let event_id = EventId::from_string(record.entity_id.clone());
    let Some(event) = state.events.get(&event_id).await? else {
        return Ok(());
    };
    let endpoints = match endpoints_of.entry(event.owner_id.clone()) {
        std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
        std::collections::hash_map::Entry::Vacant(unknown) => {
            unknown.insert(state.store.webhooks_of(&event.owner_id).await?)
        }
    };
    for endpoint in endpoints
        .iter()
        .filter(|endpoint| endpoint.events.iter().any(|wanted| wanted == webhook_type))
    {
        let mut data = json!({"event_id": event.id});
        if let Some(order) = order_id {
            data["order_id"] = json!(order);
        }
        if record.kind == ChangeKind::SeatsAvailable {
            data["reason"] = payload["reason"].clone();
        }
        let body = json!({
            "id": format!("evt_{}", record.position),
            "type": webhook_type,
            "created_at": record.recorded_at,
            "data": data,
        });
        jobs.push(
            NewJob::new(
                WEBHOOK_QUEUE,
                json!({
                    "endpoint_id": endpoint.id,
                    "delivery_id": format!("whd_{}_{}", record.position, endpoint.id),
                    "body": body,
                }),
            )
            .ordered_by(format!("{}:{subject}", endpoint.id))
            .attempts(attempts),
        );
    }
    Ok(())
}

/// The reminder job for a hold: due a minute before it lapses (now, for a hold shorter than
/// that).
async fn reminder(
    state: &AppState,
    hold: &HoldId,
    attempts: u32,
) -> Result<Option<NewJob>, PlanError> {
    let Some(hold) = state.store.hold(hold).await? else {
        return Ok(None);
    };
    if hold.status != HoldStatus::Active {
        return Ok(None);
    }
    Ok(Some(reminder_job(
        hold.id.as_str(),
        hold.expires_at,
        attempts,
    )))
}

fn reminder_job(hold: &str, expires_at: DateTime<Utc>, attempts: u32) -> NewJob {
    NewJob::new(REMINDER_QUEUE, json!({"hold_id": hold}))
        .at(expires_at - REMINDER_NOTICE)
        .deduplicated_by(format!("{hold}:{}", expires_at.timestamp_millis()))
        .attempts(attempts)
}

fn retry(error: impl std::fmt::Display) -> JobFailure {
    JobFailure::Retry(error.to_string())
}

fn field<'a>(job: &'a Job, name: &str) -> Result<&'a str, JobFailure> {
    job.payload[name]
        .as_str()
        .ok_or_else(|| JobFailure::Permanent(format!("the job has no {name}")))
}

/// E-mails to fans about their orders.
struct MailJobs {
    state: AppState,
    mailer: Arc<dyn Mailer>,
}

#[async_trait]
impl JobHandler for MailJobs {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        let template = field(job, "template")?;
        let order_id = OrderId::from_string(field(job, "order_id")?.to_string());
        let Some(order) = self.state.store.order(&order_id).await.map_err(retry)? else {
            return Err(JobFailure::Permanent(format!(
                "order {order_id} does not exist"
            )));
        };
        let Some(user) = self.state.store.user(&order.user_id).await.map_err(retry)? else {
            return Err(JobFailure::Permanent(format!(
                "the fan of {order_id} is gone"
            )));
        };
        let event = self
            .state
            .events
            .get(&order.event_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobFailure::Permanent(format!("the event of {order_id} is gone")))?;
        let public_url = self.state.notifications.settings.public_url.clone();
        let email = compose(template, &order, &event, user.name.as_str(), public_url)
            .ok_or_else(|| JobFailure::Permanent(format!("unknown template {template:?}")))?;
        let email = Email {
            to: user.email.as_str().to_string(),
            id: format!("{}.{template}.{}", order.id, job.id),
            ..email
        };
        self.mailer
            .send(&email)
            .await
            .map_err(|error| match error.transience() {
                Transience::Transient => JobFailure::Retry(error.to_string()),
                Transience::Permanent => JobFailure::Permanent(error.to_string()),
            })
    }
}

fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, (cents % 100).abs())
}

/// The subject and text of an e-mail (`to` and `id` are left for the caller).
fn compose(
    template: &str,
    order: &marquee_domain::Order,
    event: &marquee_domain::Event,
    name: &str,
    public_url: Option<String>,
) -> Option<Email> {
    let title = &event.details.title;
    let when = event.details.starts_at.format("%A %-d %B %Y, %H:%M UTC");
    let total = money(order.total_cents, &order.currency);
    let link = public_url
        .map(|base| format!("\n{}/orders/{}\n", base.trim_end_matches('/'), order.id))
        .unwrap_or_default();
    let seats: Vec<String> = order
        .tickets
        .iter()
        .map(|ticket| match (&ticket.row, ticket.number) {
            (Some(row), Some(number)) => format!("  {} row {row} seat {number}", ticket.section),
            _ => format!("  {} (standing)", ticket.section),
        })
        .collect();
    let (subject, text) = match template {
        "order.confirmed" => (
            format!("Your tickets for {title}"),
            format!(
                "Hello {name},\n\nyour order {} is confirmed: {} ticket(s), {total}.\n\n{title}\n{when}\n\n{}\n{link}\nShow the ticket codes at the door.\n",
                order.id,
                order.tickets.len(),
                seats.join("\n"),
            ),
        ),
        "order.refunded" => (
            format!("Refund for {title}"),
            format!(
                "Hello {name},\n\nyour order {} for {title} has been refunded: {total}.\nIts tickets are no longer valid.\n{link}",
                order.id
            ),
        ),
        "event.cancelled" => (
            format!("{title} is cancelled"),
            format!(
                "Hello {name},\n\nwe are sorry: {title} ({when}) has been cancelled by its organizer.\nYour order {} has been refunded in full: {total}.\n{link}",
                order.id
            ),
        ),
        _ => return None,
    };
    Some(Email {
        to: String::new(),
        subject,
        text,
        id: String::new(),
    })
}

/// Signed deliveries to organizers' endpoints.
struct WebhookJobs(AppState);

#[async_trait]
impl JobHandler for WebhookJobs {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        let state = &self.0;
        let notifications = &state.notifications;
        let endpoint_id = field(job, "endpoint_id")?;
        let delivery_id = field(job, "delivery_id")?;
        let Some(endpoint) = state.store.webhook(endpoint_id).await.map_err(retry)? else {
            // Deleted since: nobody to tell.
            return Ok(());
        };
        let body = job.payload["body"].to_string();
        let event_type = job.payload["body"]["type"].as_str().unwrap_or("unknown");
        let delivered = notifications
            .webhooks
            .deliver(&WebhookDelivery {
                url: &endpoint.url,
                secret: &endpoint.secret,
                event_type,
                delivery_id,
                body: body.as_bytes(),
                timestamp: Utc::now().timestamp(),
            })
            .await;
        match delivered {
            Ok(status) => {
                metrics::counter!("marquee_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                tracing::debug!(endpoint = endpoint_id, status, "webhook delivered");
                Ok(())
            }
            Err(error) => {
                metrics::counter!("marquee_webhook_deliveries_total", "outcome" => "failed")
                    .increment(1);
                Err(match error.transience() {
                    Transience::Transient => JobFailure::Retry(error.to_string()),
                    Transience::Permanent => JobFailure::Permanent(error.to_string()),
                })
            }
        }
    }
}

/// "Your hold lapses in a minute", on the fan's push channel.
struct ReminderJobs(AppState);

#[async_trait]
impl JobHandler for ReminderJobs {
    async fn run(&self, job: &Job) -> Result<(), JobFailure> {
        let state = &self.0;
        let hold_id = HoldId::from_string(field(job, "hold_id")?.to_string());
        let Some(hold) = state.store.hold(&hold_id).await.map_err(retry)? else {
            return Ok(());
        };
        let now = Utc::now();
        if hold.status != HoldStatus::Active || hold.expires_at <= now {
            return Ok(());
        }
        // Extended since this reminder was planned: remind before the new deadline instead.
        if hold.expires_at - REMINDER_NOTICE > now + chrono::TimeDelta::seconds(1) {
            let attempts = job.max_attempts;
            state
                .notifications
                .jobs
                .enqueue(
                    &[reminder_job(hold.id.as_str(), hold.expires_at, attempts)],
                    now,
                )
                .await
                .map_err(retry)?;
            return Ok(());
        }
        let Ok(channel) = Channel::user(hold.user_id.as_str()) else {
            return Err(JobFailure::Permanent(
                "the hold's user id is not a channel".into(),
            ));
        };
        let key = format!(
            "hold-expiring:{}:{}",
            hold.id,
            hold.expires_at.timestamp_millis()
        );
        let data: Value = json!({
            "hold_id": hold.id,
            "event_id": hold.event_id,
            "expires_at": hold.expires_at,
        });
        state
            .push
            .hub
            .publish_unique(&channel, &key, "hold.expiring", &data)
            .await
            .map(|_| ())
            .map_err(retry)
    }
}
