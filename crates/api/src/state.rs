//! What every handler can reach: the store, the token issuer, metrics and settings.

use marquee_auth::TokenIssuer;
use marquee_inventory::Inventory;
use marquee_store::CatalogStore;
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

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn CatalogStore>,
    pub inventory: Arc<Inventory>,
    pub tokens: TokenIssuer,
    pub metrics: Option<PrometheusHandle>,
    pub settings: Arc<ApiSettings>,
}
