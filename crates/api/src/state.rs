//! What every handler can reach: the store, the token issuer, metrics and settings.

use marquee_auth::TokenIssuer;
use marquee_domain::{Venue, VenueId};
use marquee_inventory::Inventory;
use marquee_store::{CatalogStore, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the HTTP layer, composed by the binary from flags and environment.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// How long a seat hold lasts (used from the holds issue on; exposed in `/api/v1/config`).
    pub hold_ttl: Duration,
    /// This node's id, sent as `x-marquee-node` so routing is observable.
    pub node_id: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            body_limit_bytes: 1024 * 1024,
            hold_ttl: Duration::from_secs(600),
            node_id: "node-1".to_string(),
        }
    }
}

/// Venues never change once created, so each node keeps the ones it has read. Events do change
/// and are read from the store every time.
#[derive(Clone)]
pub struct VenueCache {
    venues: moka::future::Cache<VenueId, Arc<Venue>>,
}

impl Default for VenueCache {
    fn default() -> Self {
        VenueCache {
            venues: moka::future::Cache::new(10_000),
        }
    }
}

impl VenueCache {
    pub async fn get(
        &self,
        store: &Arc<dyn CatalogStore>,
        id: &VenueId,
    ) -> Result<Option<Arc<Venue>>, StoreError> {
        if let Some(venue) = self.venues.get(id).await {
            return Ok(Some(venue));
        }
        let Some(venue) = store.venue(id).await? else {
            return Ok(None);
        };
        let venue = Arc::new(venue);
        self.venues.insert(id.clone(), venue.clone()).await;
        Ok(Some(venue))
    }
}

#[derive(Clone)]
pub struct AppState {
    pub venues: VenueCache,
    pub store: Arc<dyn CatalogStore>,
    pub inventory: Arc<Inventory>,
    pub tokens: TokenIssuer,
    pub metrics: Option<PrometheusHandle>,
    pub settings: Arc<ApiSettings>,
}
