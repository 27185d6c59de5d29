//! Upstream groups and how a request picks a node in one.
//!
//! A node is *available* while its active health checks pass and it is not ejected. Each node
//! caps its requests in flight (circuit breaking): a full node is skipped, and when every node is
//! full the request is shed rather than queued. When no node is available at all, the group
//! tries every node it has not tried yet anyway (Envoy's "panic mode"): health checks can be
//! wrong, and a request that might succeed beats a certain 503.
//!
//! Consistent hashing is rendezvous (highest-random-weight) hashing: each node scores
//! `hash(event id, node)` and the best available score wins. With a handful of nodes it costs a
//! few hashes, needs no ring of virtual nodes, and when a node leaves only its own events move.

use crate::config::{EjectionSettings, Policy};
use hyper::Uri;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct Upstream {
    /// `host:port`: where requests go, and the node's name in logs and in the hash.
    /// `host:port`, shared cheaply with every answer that names its node.
    pub(crate) authority: std::sync::Arc<str>,
    /// The same, parsed once for building request URIs.
    pub(crate) uri_authority: hyper::http::uri::Authority,
    /// Its place among every node of the gateway: the index of its idle connections in each
    /// worker's pool.
    pub(crate) index: usize,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a success between them (the backoff exponent).
    ejections: AtomicU32,
    /// Microseconds since [`clock_base`] until which the node is ejected; 0 when it is not.
    ejected_until: AtomicU64,
}

/// The origin of the ejection clock: one atomic per node instead of a lock on the request path.
fn clock_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn micros_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock_base()).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Upstream {
    pub(crate) fn new(url: Uri, max_in_flight: usize, index: usize) -> Upstream {
        let uri_authority = url
            .authority()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::Authority::from_static("invalid"));
        Upstream {
            authority: std::sync::Arc::from(uri_authority.as_str()),
            uri_authority,
            index,
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > micros_since_base(now)
    }

    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    /// Takes a slot unless the node is at its cap.
    fn try_acquire(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |current| {
                (current < self.max_in_flight).then_some(current + 1)
            })
            .ok()
            .map(|_| InFlight(Arc::clone(self)))
    }

    pub(crate) fn record_success(&self) {
        if self.consecutive_failures.swap(0, Ordering::Relaxed) > 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failed request; ejects the node after enough in a row. True when it ejected.
    pub(crate) fn record_failure(&self, settings: &EjectionSettings) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < settings.consecutive_failures {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let exponent = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let duration = settings
            .base
            .saturating_mul(1 << exponent)
            .min(settings.max);
        self.ejected_until.store(
            micros_since_base(Instant::now() + duration),
            Ordering::Relaxed,
        );
        tracing::warn!(upstream = %self.authority, ?duration, "ejected after consecutive failures");
        metrics::counter!("gateway_ejections_total", "upstream" => self.authority.to_string())
            .increment(1);
        true
    }

    /// Ends an ejection early: the node failed its health checks and now passes them again.
    pub(crate) fn readmit(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }
}

/// A request's slot on a node, given back when dropped.
pub(crate) struct InFlight(Arc<Upstream>);

impl InFlight {
    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) enum Pick {
    Upstream(InFlight),
    /// Every node not yet tried is at its in-flight cap.
    AllBusy,
    /// Every node has been tried.
    Exhausted,
}

pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    policy: Policy,
    next: AtomicUsize,
}

impl Group {
    pub(crate) fn new(name: String, upstreams: Vec<Arc<Upstream>>, policy: Policy) -> Group {
        Group {
            name,
            upstreams,
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a node for a request, skipping the indexes in `tried` (earlier attempts).
    /// `affinity` is the event id, for [`Policy::EventHash`].
    pub(crate) fn pick(&self, affinity: Option<&str>, tried: &[usize]) -> (Pick, Option<usize>) {
        let now = Instant::now();
        let untried = |index: &usize| !tried.contains(index);
        let mut candidates: Vec<usize> = (0..self.upstreams.len())
            .filter(untried)
            .filter(|&index| self.upstreams[index].is_available(now))
            .collect();
        if candidates.is_empty() {
            candidates = (0..self.upstreams.len()).filter(untried).collect();
            if candidates.is_empty() {
                return (Pick::Exhausted, None);
            }
        }
        self.order(&mut candidates, affinity);
        for index in candidates {
            if let Some(slot) = self.upstreams[index].try_acquire() {
                return (Pick::Upstream(slot), Some(index));
            }
        }
        (Pick::AllBusy, None)
    }

    /// Puts `candidates` in the order the policy prefers them.
    fn order(&self, candidates: &mut [usize], affinity: Option<&str>) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let len = candidates.len();
        match (self.policy, affinity) {
            (Policy::RoundRobin, _) => candidates.rotate_left(start % len),
            (Policy::EventHash, Some(key)) => {
                candidates.sort_by_cached_key(|&index| {
                    std::cmp::Reverse(rendezvous_score(key, &self.upstreams[index].authority))
                });
            }
            (Policy::LeastConnections, _) | (Policy::EventHash, None) => {
                // Rotating first spreads ties instead of piling them on the first node.
                candidates.rotate_left(start % len);
                candidates.sort_by_key(|&index| self.upstreams[index].in_flight());
            }
        }
    }
}

fn rendezvous_score(key: &str, node: &str) -> u64 {
    // SipHash with fixed keys: the same on every gateway process, so they all agree.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    node.hash(&mut hasher);
    hasher.finish()
}

/// The event a request is about: `/api/v1/events/{id}/…`, or the first `event:{id}:…` push
/// channel in the query.
pub(crate) fn event_affinity<'a>(path: &'a str, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(rest) = path.strip_prefix("/api/v1/events/") {
        let id = rest.split('/').next().unwrap_or_default();
        return (!id.is_empty()).then_some(id);
    }
    query?
        .split('&')
        .filter_map(|pair| pair.strip_prefix("channel="))
        .find_map(|channel| {
            let channel = channel.strip_prefix("event")?;
            let channel = channel
                .strip_prefix(':')
                .or_else(|| channel.strip_prefix("%3A"))
                .or_else(|| channel.strip_prefix("%3a"))?;
            channel.split([':', '%']).next().filter(|id| !id.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn group(policy: Policy, nodes: usize, cap: usize) -> Group {
        let upstreams = (0..nodes)
            .map(|n| {
                let url: Uri = format!("http://10.0.0.{n}:8080").parse().expect("uri");
                Arc::new(Upstream::new(url, cap, n))
            })
            .collect();
        Group::new("api".into(), upstreams, policy)
    }

    fn pick(group: &Group, affinity: Option<&str>) -> (Option<InFlight>, Option<usize>) {
        match group.pick(affinity, &[]) {
            (Pick::Upstream(slot), index) => (Some(slot), index),
            _ => (None, None),
        }
    }

    #[test]
    fn round_robin_visits_every_node_in_turn() {
        let group = group(Policy::RoundRobin, 3, 10);
        let picked: Vec<usize> = (0..6).filter_map(|_| pick(&group, None).1).collect();
        assert_eq!(picked, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_prefers_the_idle_node() {
        let group = group(Policy::LeastConnections, 3, 10);
        let (first, a) = pick(&group, None);
        let (second, b) = pick(&group, None);
        let (_third, c) = pick(&group, None);
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(all, vec![Some(0), Some(1), Some(2)]);
        drop(first);
        drop(second);
        let (_, next) = pick(&group, None);
        assert!(
            next == a || next == b,
            "a node with nothing in flight is chosen"
        );
    }

    #[test]
    fn full_nodes_are_skipped_then_shed() {
        let group = group(Policy::RoundRobin, 2, 1);
        let (_a, _) = pick(&group, None);
        let (_b, _) = pick(&group, None);
        assert!(matches!(group.pick(None, &[]).0, Pick::AllBusy));
    }

    #[test]
    fn ejected_nodes_are_left_out_until_readmitted() {
        let group = group(Policy::RoundRobin, 2, 10);
        let settings = EjectionSettings {
            consecutive_failures: 2,
            ..EjectionSettings::default()
        };
        assert!(!group.upstreams[0].record_failure(&settings));
        assert!(group.upstreams[0].record_failure(&settings));
        for _ in 0..4 {
            assert_eq!(pick(&group, None).1, Some(1));
        }
        group.upstreams[0].readmit();
        let picked: Vec<usize> = (0..4).filter_map(|_| pick(&group, None).1).collect();
        assert!(picked.contains(&0));
    }

    #[test]
    fn with_every_node_down_the_untried_ones_are_still_tried() {
        let group = group(Policy::RoundRobin, 2, 10);
        for upstream in &group.upstreams {
            upstream.set_healthy(false);
        }
        let (Pick::Upstream(_), Some(first)) = group.pick(None, &[]) else {
            panic!("panic mode picks a node");
        };
        assert!(matches!(group.pick(None, &[0, 1]).0, Pick::Exhausted));
        assert!(first < 2);
    }

    #[test]
    fn event_ids_come_from_the_path_or_the_push_channel() {
        assert_eq!(event_affinity("/api/v1/events/e1/holds", None), Some("e1"));
        assert_eq!(event_affinity("/api/v1/events/e1", None), Some("e1"));
        assert_eq!(event_affinity("/api/v1/events", None), None);
        assert_eq!(
            event_affinity("/api/v1/push/sse", Some("channel=event%3Ae2%3Aseats")),
            Some("e2")
        );
        assert_eq!(
            event_affinity("/api/v1/push/poll", Some("since=1&channel=event:e3:seats")),
            Some("e3")
        );
        assert_eq!(
            event_affinity("/api/v1/push/sse", Some("channel=queue:t")),
            None
        );
    }

    proptest! {
        /// Consistent hashing: an event stays on its node while that node is up, and when a
        /// node leaves only the events it owned move.
        #[test]
        fn only_the_departed_nodes_events_move(events in proptest::collection::vec("[a-z0-9]{4,12}", 1..50), gone in 0usize..4) {
            let group = group(Policy::EventHash, 4, 1_000);
            let before: Vec<Option<usize>> = events.iter().map(|e| pick(&group, Some(e)).1).collect();
            let again: Vec<Option<usize>> = events.iter().map(|e| pick(&group, Some(e)).1).collect();
            prop_assert_eq!(&before, &again);
            group.upstreams[gone].set_healthy(false);
            for (event, owner) in events.iter().zip(&before) {
                let now = pick(&group, Some(event)).1;
                if *owner != Some(gone) {
                    prop_assert_eq!(now, *owner);
                } else {
                    prop_assert_ne!(now, Some(gone));
                }
            }
        }
    }
}
