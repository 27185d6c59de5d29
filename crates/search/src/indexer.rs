//! Keeps the index in step with the catalog by following the change stream (the outbox, read
//! through a `ChangeFeed`: directly on one node, from JetStream on many): micro-batches of
//! changes, each commit carrying the outbox position it covers, so a restart resumes where the
//! index is and a crash between commits only replays a little.

use crate::{EventIndex, SearchDocument, SearchError};
use marquee_changes::ChangeFeed;
use marquee_domain::{Event, EventId, EventStatus, Venue, VenueId};
use marquee_store::{CatalogStore, ChangeKind, EventQuery};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one read of an idle change stream waits for a change; the embedded feed polls the
/// outbox at this pace, so with the commit it bounds how long a change takes to become searchable.
const POLL: Duration = Duration::from_millis(100);
const BATCH: u32 = 1_000;
/// Changes that touch no event (seat holds, sign-ups) still move the position, but committing for
/// them alone every batch would sync files for nothing during an on-sale: at most this often.
const IDLE_COMMIT: Duration = Duration::from_secs(5);

/// The search document of an event, or `None` when it must not be found (not published).
pub fn document_for(event: &Event, venue: &Venue) -> Option<SearchDocument> {
    if event.status != EventStatus::Published {
        return None;
    }
    let details = &event.details;
    let (min_price_cents, currency) = details
        .min_price()
        .map(|tier| (tier.price_cents, tier.currency.clone()))
        .unwrap_or((0, String::new()));
    Some(SearchDocument {
        id: event.id.as_str().to_string(),
        title: details.title.clone(),
        description: details.description.clone(),
        category: details.category.as_str().to_string(),
        tags: details.tags.clone(),
        performers: details.performers.clone(),
        venue_id: venue.id.as_str().to_string(),
        venue_name: venue.details.name.clone(),
        city: venue.details.city.clone(),
        country: venue.details.country.clone(),
        lat: venue.details.location.lat(),
        lon: venue.details.location.lon(),
        starts_at: details.starts_at,
        ends_at: details.ends_at,
        min_price_cents,
        currency,
    })
}

pub struct IndexerHandle {
    /// The outbox position the searchable index covers.
    pub applied: watch::Receiver<i64>,
    pub task: JoinHandle<()>,
}

/// Follows the outbox into `index` until `stop` turns true. A brand-new index is first built
/// from the catalog (faster than replaying every change ever made).
pub fn spawn_indexer(
    index: Arc<EventIndex>,
    store: Arc<dyn CatalogStore>,
    feed: Arc<dyn ChangeFeed>,
    mut stop: watch::Receiver<bool>,
) -> IndexerHandle {
    let (applied_tx, applied) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut follower = Follower {
            index,
            store,
            feed,
            venues: HashMap::new(),
        };
        let mut after = loop {
            match follower.start().await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::warn!(%error, "search indexer: cannot start yet");
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        applied_tx.send_replace(after);
        let mut last_commit = Instant::now();
        let mut uncommitted = false;
        loop {
            match follower.step(after).await {
                Ok(Step {
                    position,
                    touched,
                    full,
                }) => {
                    if position > after {
                        after = position;
                        uncommitted = true;
                    }
                    if uncommitted && (touched || last_commit.elapsed() >= IDLE_COMMIT) {
                        match follower.commit(after).await {
                            Ok(()) => {
                                uncommitted = false;
                                last_commit = Instant::now();
                                applied_tx.send_replace(after);
                            }
                            Err(error) => tracing::warn!(%error, "search indexer: commit failed"),
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, position = after, "search indexer: batch failed, retrying");
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            }
            // The read itself waited for changes; only look whether the node is stopping.
            if pause(&mut stop, Duration::ZERO).await {
                if uncommitted {
                    let _ = follower.commit(after).await;
                }
                return;
            }
        }
    });
    IndexerHandle { applied, task }
}

/// Sleeps, or returns true at once when the node is stopping.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|stopping| *stopping) => true,
    }
}

struct Step {
    position: i64,
    touched: bool,
    full: bool,
}

struct Follower {
    index: Arc<EventIndex>,
    store: Arc<dyn CatalogStore>,
    feed: Arc<dyn ChangeFeed>,
    /// Venues never change once created, so each is loaded once.
    venues: HashMap<VenueId, Venue>,
}

impl Follower {
    async fn start(&mut self) -> Result<i64, SearchError> {
        let index = Arc::clone(&self.index);
        let committed = blocking(move || index.committed_position()).await?;
        let latest = self.store.latest_change().await?;
        if committed > latest {
            // The index is ahead of the store: it was built from another database (a data dir
            // reused with a new one). Resuming would skip changes; build it again.
            tracing::warn!(
                committed,
                latest,
                "search indexer: index is ahead of the store, rebuilding"
            );
        } else if committed > 0 {
            tracing::info!(position = committed, "search indexer: resuming");
            return Ok(committed);
        }
        let started = Instant::now();
        let (count, position) = rebuild(&self.index, self.store.as_ref(), &|_| {}).await?;
        tracing::info!(
            events = count,
            position,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "search indexer: built from the catalog"
        );
        Ok(position)
    }

    async fn step(&mut self, after: i64) -> Result<Step, SearchError> {
        let changes = self.feed.read(after, BATCH, POLL).await?;
        let full = changes.len() == BATCH as usize;
        let Some(last) = changes.last() else {
            return Ok(Step {
                position: after,
                touched: false,
                full: false,
            });
        };
        let position = last.position;
        let events: BTreeSet<&str> = changes
            .iter()
            .filter(|change| {
                matches!(
                    change.kind,
                    ChangeKind::EventCreated
                        | ChangeKind::EventUpdated
                        | ChangeKind::EventPublished
                        | ChangeKind::EventCancelled
                )
            })
            .map(|change| change.entity_id.as_str())
            .collect();
        if events.is_empty() {
            return Ok(Step {
                position,
                touched: false,
                full,
            });
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for id in events {
            let event = self
                .store
                .event(&EventId::from_string(id.to_string()))
                .await?;
            let document = match &event {
                Some(event) => match self.venue(&event.venue_id).await? {
                    Some(venue) => document_for(event, &venue),
                    None => None,
                },
                None => None,
            };
            match document {
                Some(document) => upserts.push(document),
                None => deletes.push(id.to_string()),
            }
        }
        let index = Arc::clone(&self.index);
        blocking(move || {
            index.delete(&deletes)?;
            index.upsert(&upserts)
        })
        .await?;
        Ok(Step {
            position,
            touched: true,
            full,
        })
    }

    async fn commit(&self, position: i64) -> Result<(), SearchError> {
        let index = Arc::clone(&self.index);
        blocking(move || index.commit(position)).await
    }

    async fn venue(&mut self, id: &VenueId) -> Result<Option<Venue>, SearchError> {
        if let Some(venue) = self.venues.get(id) {
            return Ok(Some(venue.clone()));
        }
        let venue = self.store.venue(id).await?;
        if let Some(venue) = &venue {
            self.venues.insert(id.clone(), venue.clone());
        }
        Ok(venue)
    }
}

/// Rebuilds `index` from the catalog: every published event, then one commit at the outbox
/// position read *before* listing (changes made while listing are replayed after, harmlessly).
/// Returns the number of events indexed and that position. `progress` is told the running count.
pub async fn rebuild(
    index: &Arc<EventIndex>,
    store: &dyn CatalogStore,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, i64), SearchError> {
    let position = store.latest_change().await?;
    {
        let index = Arc::clone(index);
        blocking(move || index.clear()).await?;
    }
    let mut venues: HashMap<VenueId, Venue> = HashMap::new();
    let mut after = None;
    let mut count = 0u64;
    loop {
        let page = store
            .list_events(&EventQuery {
                owner: None,
                status: Some(EventStatus::Published),
                after: after.clone(),
                limit: 500,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let mut documents = Vec::with_capacity(page.len());
        for event in &page {
            if !venues.contains_key(&event.venue_id) {
                if let Some(venue) = store.venue(&event.venue_id).await? {
                    venues.insert(event.venue_id.clone(), venue);
                }
            }
            if let Some(document) = venues
                .get(&event.venue_id)
                .and_then(|venue| document_for(event, venue))
            {
                documents.push(document);
            }
        }
        count += documents.len() as u64;
        let full = page.len() == 500;
        let index = Arc::clone(index);
        blocking(move || index.upsert(&documents)).await?;
        progress(count);
        if !full {
            break;
        }
    }
    let index = Arc::clone(index);
    blocking(move || index.commit(position)).await?;
    Ok((count, position))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| SearchError::Task(error.to_string()))?
}
