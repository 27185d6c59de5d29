//! Active health checks: every node is asked `GET {path}` each interval; after
//! `unhealthy_after` failures in a row it stops receiving requests, after `healthy_after`
//! passes in a row it is taken back — and a passive ejection still running then ends too, since
//! the node has been seen to go down and come back.

use crate::balancer::Upstream;
use crate::config::HealthSettings;
use crate::proxy::UpstreamClient;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri};
use std::sync::Arc;

pub(crate) async fn check_forever(
    client: UpstreamClient,
    upstream: Arc<Upstream>,
    settings: HealthSettings,
) {
    let Ok(uri) = format!("http://{}{}", upstream.authority, settings.path).parse::<Uri>() else {
        tracing::error!(upstream = %upstream.authority, path = %settings.path, "health check path is not a valid URI");
        return;
    };
    let mut interval = tokio::time::interval(settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        interval.tick().await;
        let request = Request::get(uri.clone())
            .header("user-agent", "marquee-gateway-health")
            .body(Full::new(Bytes::new()));
        let Ok(request) = request else { return };
        let passed = matches!(
            tokio::time::timeout(settings.timeout, client.request(request)).await,
            Ok(Ok(response)) if response.status().is_success()
        );
        if passed {
            passes += 1;
            failures = 0;
            if !upstream.is_healthy() && passes >= settings.healthy_after {
                upstream.set_healthy(true);
                // It went down and came back: a restarted node starts with a clean record.
                upstream.readmit();
                tracing::info!(upstream = %upstream.authority, "health checks pass again; taken back");
            }
        } else {
            failures += 1;
            passes = 0;
            if upstream.is_healthy() && failures >= settings.unhealthy_after {
                upstream.set_healthy(false);
                tracing::warn!(upstream = %upstream.authority, failures, "failing health checks; taken out");
            }
        }
        metrics::gauge!("gateway_upstream_healthy", "upstream" => upstream.authority.to_string())
            .set(if upstream.is_healthy() { 1.0 } else { 0.0 });
    }
}
