//! The catalog on either engine: one implementation, so a statement or an outbox record cannot
//! drift between them. What the engines do differently is behind [`SqlEngine`]: the write
//! transaction (SQLite's write gate, PostgreSQL's wake of the assigner), how a change is
//! appended, and PostgreSQL's numbering of the outbox before it is read.

use crate::common::catalog_reads as reads;
use crate::common::engine::{execute, execute_recorded, SqlEngine, SqlWrite};
use crate::common::payloads::{stream_payload, UserChange};
use crate::common::rows::{self, millis, STREAM_COLUMNS};
use crate::error::is_unique_violation;
use crate::{
    Backend, CatalogStore, ChangeKind, ChangePosition, ChangeRecord, EventQuery, InventoryStore,
    Recording, StoreError, StoredCredentials, StreamRecord, VenueQuery, WebhookEndpoint,
};
use async_trait::async_trait;
use marquee_domain::{Email, Event, EventId, EventStatus, User, UserId, Venue, VenueId};
use sqlx::AnyConnection;

#[async_trait]
impl<E: SqlEngine + InventoryStore> CatalogStore for E {
    fn backend(&self) -> Backend {
        E::BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(self.read_pool()).await
    }

    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut write = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, role, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(password_hash)
        .bind(millis(user.created_at))
        .execute(write.connection())
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => return Err(StoreError::EmailTaken),
            other => other?,
        };
        let change = UserChange {
            id: &user.id,
            name: user.name.as_str(),
            role: user.role.as_str(),
        };
        write
            .append_change(ChangeKind::UserRegistered, user.id.as_str(), &change)
            .await?;
        write.commit().await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        reads::user(self.read_pool(), id).await
    }

    async fn credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        reads::credentials_by_email(self.read_pool(), email).await
    }

    async fn create_venue(&self, venue: &Venue) -> Result<(), StoreError> {
        let seat_map = serde_json::to_string(&venue.seat_map)?;
        let capacity = i64::try_from(venue.seat_map.capacity())
            .map_err(|_| StoreError::Corrupt("capacity overflows".into()))?;
        let insert = sqlx::query(
            "INSERT INTO venues (id, owner_id, name, address, city, country, lat, lon, seat_map, \
             capacity, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(venue.id.as_str())
        .bind(venue.owner_id.as_str())
        .bind(&venue.details.name)
        .bind(&venue.details.address)
        .bind(&venue.details.city)
        .bind(&venue.details.country)
        .bind(venue.details.location.lat())
        .bind(venue.details.location.lon())
        .bind(seat_map)
        .bind(capacity)
        .bind(millis(venue.created_at));
        execute_recorded(
            self,
            insert,
            ChangeKind::VenueCreated,
            venue.id.as_str(),
            venue,
        )
        .await
    }

    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError> {
        reads::venue(self.read_pool(), id).await
    }

    async fn list_venues(&self, query: &VenueQuery) -> Result<Vec<Venue>, StoreError> {
        reads::list_venues(self.read_pool(), query).await
    }

    async fn create_event(&self, event: &Event) -> Result<(), StoreError> {
        let details = serde_json::to_string(&event.details)?;
        let insert = sqlx::query(
            "INSERT INTO events (id, owner_id, venue_id, status, version, title, starts_at, \
             details, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(event.id.as_str())
        .bind(event.owner_id.as_str())
        .bind(event.venue_id.as_str())
        .bind(event.status.as_str())
        .bind(event.version)
        .bind(&event.details.title)
        .bind(millis(event.details.starts_at))
        .bind(details)
        .bind(millis(event.created_at))
        .bind(millis(event.updated_at));
        execute_recorded(
            self,
            insert,
            ChangeKind::EventCreated,
            event.id.as_str(),
            event,
        )
        .await
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        reads::event(self.read_pool(), id).await
    }

    async fn update_event(&self, event: &Event, change: ChangeKind) -> Result<Event, StoreError> {
        let mut stored = event.clone();
        stored.version = event.version + 1;
        stored.updated_at = marquee_domain::timestamp_now();
        let details = serde_json::to_string(&stored.details)?;
        let mut write = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE events SET status = $1, version = $2, title = $3, starts_at = $4, \
             details = $5, updated_at = $6 WHERE id = $7 AND version = $8",
        )
        .bind(stored.status.as_str())
        .bind(stored.version)
        .bind(&stored.details.title)
        .bind(millis(stored.details.starts_at))
        .bind(details)
        .bind(millis(stored.updated_at))
        .bind(event.id.as_str())
        .bind(event.version)
        .execute(write.connection())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(if event_exists(write.connection(), &event.id).await? {
                StoreError::VersionConflict {
                    expected: event.version,
                }
            } else {
                StoreError::NotFound
            });
        }
        write
            .append_change(change, stored.id.as_str(), &stored)
            .await?;
        write.commit().await?;
        Ok(stored)
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        reads::list_events(self.read_pool(), query).await
    }

    async fn count_events(&self, status: Option<EventStatus>) -> Result<u64, StoreError> {
        reads::count_events(self.read_pool(), status).await
    }

    async fn read_changes(
        &self,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        self.number_outbox().await?;
        reads::read_changes(self.read_pool(), after, limit).await
    }

    async fn latest_change(&self) -> Result<ChangePosition, StoreError> {
        self.number_outbox().await?;
        reads::latest_change(self.read_pool()).await
    }

    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.outbox_signal()
    }

    async fn create_webhook(&self, webhook: &WebhookEndpoint) -> Result<(), StoreError> {
        let insert = sqlx::query(
            "INSERT INTO webhooks (id, organizer_id, url, events, secret, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(webhook.id.as_str())
        .bind(webhook.organizer_id.as_str())
        .bind(webhook.url.as_str())
        .bind(serde_json::to_string(&webhook.events)?)
        .bind(webhook.secret.as_str())
        .bind(webhook.description.as_str())
        .bind(millis(webhook.created_at));
        execute(self, insert).await?;
        Ok(())
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        reads::webhook(self.read_pool(), id).await
    }

    async fn webhooks_of(&self, organizer: &UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        reads::webhooks_of(self.read_pool(), organizer).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let delete = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id);
        Ok(execute(self, delete).await? == 1)
    }

    async fn issue_stream_key(
        &self,
        event: &EventId,
        key_hash: &str,
    ) -> Result<StreamRecord, StoreError> {
        let now = millis(marquee_domain::timestamp_now());
        let mut write = self.begin_write().await?;
        if !event_exists(write.connection(), event).await? {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO event_streams \
             (event_id, key_hash, status, problem, version, key_issued_at, updated_at) \
             VALUES ($1, $2, 'idle', NULL, 1, $3, $3) \
             ON CONFLICT (event_id) DO UPDATE SET key_hash = excluded.key_hash, \
             status = CASE WHEN event_streams.status = 'live' THEN 'live' ELSE 'idle' END, \
             problem = NULL, version = event_streams.version + 1, \
             key_issued_at = excluded.key_issued_at, updated_at = excluded.updated_at",
        )
        .bind(event.as_str())
        .bind(key_hash)
        .bind(now)
        .execute(write.connection())
        .await?;
        let stream = stream_of(write.connection(), event)
            .await?
            .ok_or(StoreError::NotFound)?;
        record_stream(write, event, stream).await
    }

    async fn stream_by_key_hash(&self, key_hash: &str) -> Result<Option<EventId>, StoreError> {
        reads::stream_by_key_hash(self.read_pool(), key_hash).await
    }

    async fn stream(&self, event: &EventId) -> Result<Option<StreamRecord>, StoreError> {
        reads::stream(self.read_pool(), event).await
    }

    async fn set_stream_status(
        &self,
        event: &EventId,
        status: &str,
        problem: Option<&str>,
    ) -> Result<StreamRecord, StoreError> {
        let mut write = self.begin_write().await?;
        let mut stream = stream_of(write.connection(), event)
            .await?
            .ok_or(StoreError::NotFound)?;
        if stream.status == status && stream.problem.as_deref() == problem {
            return Ok(stream);
        }
        stream.status = status.to_string();
        stream.problem = problem.map(str::to_string);
        stream.version += 1;
        stream.updated_at = marquee_domain::timestamp_now();
        sqlx::query(
            "UPDATE event_streams SET status = $1, problem = $2, version = $3, updated_at = $4 \
             WHERE event_id = $5",
        )
        .bind(status)
        .bind(problem)
        .bind(stream.version)
        .bind(millis(stream.updated_at))
        .bind(event.as_str())
        .execute(write.connection())
        .await?;
        record_stream(write, event, stream).await
    }

    async fn holds_ticket(&self, user: &UserId, event: &EventId) -> Result<bool, StoreError> {
        reads::holds_ticket(self.read_pool(), user, event).await
    }

    async fn add_recording(&self, recording: &Recording) -> Result<(), StoreError> {
        let insert = sqlx::query(
            "INSERT INTO recordings \
             (id, event_id, object_key, bytes, duration_ms, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(recording.id.as_str())
        .bind(recording.event_id.as_str())
        .bind(recording.object_key.as_str())
        .bind(recording.bytes)
        .bind(recording.duration_ms)
        .bind(millis(recording.started_at))
        .bind(millis(recording.ended_at));
        execute(self, insert).await?;
        Ok(())
    }

    async fn recordings_of(&self, event: &EventId) -> Result<Vec<Recording>, StoreError> {
        reads::recordings_of(self.read_pool(), event).await
    }
}

/// Inside a write, so that a failed conditional write can tell "gone" from "changed".
async fn event_exists(connection: &mut AnyConnection, event: &EventId) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT 1 FROM events WHERE id = $1")
        .bind(event.as_str())
        .fetch_optional(connection)
        .await?
        .is_some())
}

/// The stream as this write sees it (the shared read runs outside any transaction).
async fn stream_of(
    connection: &mut AnyConnection,
    event: &EventId,
) -> Result<Option<StreamRecord>, StoreError> {
    let sql = format!("SELECT {STREAM_COLUMNS} FROM event_streams WHERE event_id = $1");
    sqlx::query(&sql)
        .bind(event.as_str())
        .fetch_optional(connection)
        .await?
        .as_ref()
        .map(rows::stream)
        .transpose()
}

/// Records the stream's new status in the outbox and commits.
async fn record_stream(
    mut write: impl SqlWrite,
    event: &EventId,
    stream: StreamRecord,
) -> Result<StreamRecord, StoreError> {
    write
        .append_change(
            ChangeKind::StreamStatus,
            event.as_str(),
            &stream_payload(&stream),
        )
        .await?;
    write.commit().await?;
    Ok(stream)
}
