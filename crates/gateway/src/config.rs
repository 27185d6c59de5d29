//! The gateway's settings and the flag syntax of its repeatable parts: upstreams
//! (`[GROUP=]URL`), routes (`PREFIX=GROUP`), balancing (`[GROUP=]POLICY`) and access rules
//! (`METHOD PATTERN=ROLE,ROLE`).

use crate::access::AccessRule;
use hyper::Uri;
use ipnet::IpNet;
use marquee_auth::SigningSecret;
use marquee_ratelimit::{RateLimiter, ScopedQuota};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The group a bare `--upstream URL` joins and every unrouted path goes to.
pub const DEFAULT_GROUP: &str = "api";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("expected [GROUP=]URL with an http:// URL and no path, got {0:?}")]
    Upstream(String),
    #[error("expected PREFIX=GROUP with PREFIX starting with '/', got {0:?}")]
    Route(String),
    #[error(
        "expected [GROUP=]POLICY with POLICY one of round-robin, least-conn, event-hash, got {0:?}"
    )]
    Policy(String),
    #[error(
        "expected METHOD PATTERN=ROLES (e.g. \"POST /api/v1/venues=organizer,admin\"), got {0:?}"
    )]
    AccessRule(String),
    #[error("route {prefix} names group {group:?}, which has no upstream")]
    UnknownGroup { prefix: String, group: String },
    #[error("at least one --upstream is required")]
    NoUpstream,
    #[error("group {0:?} has no upstream")]
    EmptyGroup(String),
    #[error("the checkout reserve ({reserve}) must be smaller than the in-flight cap ({cap})")]
    Reserve { reserve: usize, cap: usize },
}

/// One upstream node and the group it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub group: String,
    /// `http://host:port`, no path.
    pub url: Uri,
}

impl FromStr for UpstreamSpec {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<UpstreamSpec, ConfigError> {
        let error = || ConfigError::Upstream(text.to_string());
        let (group, url) = match text.split_once('=') {
            Some((group, url)) if is_group_name(group) => (group, url),
            Some(_) => return Err(error()),
            None => (DEFAULT_GROUP, text),
        };
        let url: Uri = url.trim_end_matches('/').parse().map_err(|_| error())?;
        let plain_http = url.scheme_str() == Some("http");
        let no_path = url.path() == "/" && url.query().is_none();
        if !plain_http || url.authority().is_none() || !no_path {
            return Err(error());
        }
        Ok(UpstreamSpec {
            group: group.to_string(),
            url,
        })
    }
}

/// Requests whose path starts with `prefix` go to `group` (longest prefix wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: String,
    pub group: String,
}

impl FromStr for RouteSpec {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<RouteSpec, ConfigError> {
        match text.rsplit_once('=') {
            Some((prefix, group)) if prefix.starts_with('/') && is_group_name(group) => {
                Ok(RouteSpec {
                    prefix: prefix.to_string(),
                    group: group.to_string(),
                })
            }
            _ => Err(ConfigError::Route(text.to_string())),
        }
    }
}

/// How a group picks a node for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    /// The node with the fewest requests in flight.
    LeastConnections,
    /// Rendezvous hashing on the event id in the path or push channel, so one event's seat
    /// stream, waiting room and holds land on one node; least connections when there is none.
    EventHash,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastConnections => "least-conn",
            Policy::EventHash => "event-hash",
        })
    }
}

/// `--balance [GROUP=]POLICY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    pub group: String,
    pub policy: Policy,
}

impl FromStr for GroupPolicy {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<GroupPolicy, ConfigError> {
        let (group, policy) = match text.split_once('=') {
            Some((group, policy)) => (group, policy),
            None => (DEFAULT_GROUP, text),
        };
        let policy = match policy {
            "round-robin" => Policy::RoundRobin,
            "least-conn" => Policy::LeastConnections,
            "event-hash" => Policy::EventHash,
            _ => return Err(ConfigError::Policy(text.to_string())),
        };
        if !is_group_name(group) {
            return Err(ConfigError::Policy(text.to_string()));
        }
        Ok(GroupPolicy {
            group: group.to_string(),
            policy,
        })
    }
}

fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

/// Active health checks: `GET {path}` on every node each `interval`.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed checks in a row before a node is taken out.
    pub unhealthy_after: u32,
    /// Passed checks in a row before it is taken back.
    pub healthy_after: u32,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings {
            path: "/readyz".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// Passive ejection: a node that fails `consecutive_failures` requests in a row (connection
/// refused or reset, timeout, 502/503/504) is left out for `base`, doubled at each ejection in
/// a row up to `max`.
#[derive(Debug, Clone)]
pub struct EjectionSettings {
    pub consecutive_failures: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for EjectionSettings {
    fn default() -> EjectionSettings {
        EjectionSettings {
            consecutive_failures: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

/// Everything `marquee gateway` needs.
#[derive(Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    pub policies: Vec<GroupPolicy>,
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-For` is believed; everyone else's is replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Verifies bearer tokens at the edge; `None` passes them through unchecked to the nodes
    /// (unless `edge_keyring` is set).
    pub jwt_secret: Option<SigningSecret>,
    /// The cluster's keyring (nodes without a configured secret sign with it): tokens are
    /// verified at the edge with its access-token keys. Whoever made it keeps it reloaded.
    /// `jwt_secret` wins when both are set.
    pub edge_keyring: Option<marquee_auth::Keyring>,
    pub access_rules: Vec<AccessRule>,
    pub rate_limits: Vec<ScopedQuota>,
    pub rate_limiter: Option<Arc<dyn RateLimiter>>,
    /// Requests in flight through this gateway before it sheds load with 503.
    pub max_in_flight: usize,
    /// Of `max_in_flight`, slots only checkout requests (holds, orders) may take.
    pub checkout_reserve: usize,
    /// Requests in flight to one node before it counts as full (circuit breaking).
    pub upstream_max_in_flight: usize,
    /// HTTP/1.1 connections one worker keeps open to one node at most; past it, requests wait
    /// for one to come back (a burst of clients never becomes a burst of connects).
    pub upstream_connections_per_worker: usize,
    /// Over a second, so one dropped SYN (retried after 1 s) is not a failed request.
    pub connect_timeout: Duration,
    /// Until the node's response headers; streams (SSE, WebSocket) are not cut after it.
    pub response_timeout: Duration,
    /// A client must finish sending its request head within this (slowloris).
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// Extra attempts on another node for a request that may be repeated.
    pub retries: u32,
    /// Retries allowed as a share of requests (plus 10 per second), so retries cannot
    /// multiply the load on a struggling cluster.
    pub retry_budget_percent: f32,
    pub health: HealthSettings,
    pub ejection: EjectionSettings,
    pub max_connections: usize,
    pub access_log: bool,
    /// Worker threads, each with its own event loop, listener (`SO_REUSEPORT`) and pool of
    /// connections to the nodes.
    pub workers: usize,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("upstreams", &self.upstreams)
            .field("routes", &self.routes)
            .field("policies", &self.policies)
            .field("tls", &self.tls)
            .field(
                "edge_auth",
                &(self.jwt_secret.is_some() || self.edge_keyring.is_some()),
            )
            .field("rate_limits", &self.rate_limits.len())
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Defaults in front of `upstreams`, listening on `listen` (tests pass port 0).
    pub fn new(listen: SocketAddr, upstreams: Vec<UpstreamSpec>) -> GatewayConfig {
        GatewayConfig {
            listen,
            upstreams,
            routes: Vec::new(),
            policies: Vec::new(),
            tls: None,
            trusted_proxies: Vec::new(),
            jwt_secret: None,
            edge_keyring: None,
            access_rules: crate::access::default_rules(),
            rate_limits: Vec::new(),
            rate_limiter: None,
            max_in_flight: 10_000,
            checkout_reserve: 1_000,
            upstream_max_in_flight: 2_048,
            upstream_connections_per_worker: 256,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            retries: 2,
            retry_budget_percent: 20.0,
            health: HealthSettings::default(),
            ejection: EjectionSettings::default(),
            max_connections: 16_384,
            access_log: true,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::NoUpstream);
        }
        let has_group = |group: &str| self.upstreams.iter().any(|u| u.group == group);
        if !has_group(DEFAULT_GROUP) {
            return Err(ConfigError::EmptyGroup(DEFAULT_GROUP.to_string()));
        }
        for route in &self.routes {
            if !has_group(&route.group) {
                return Err(ConfigError::UnknownGroup {
                    prefix: route.prefix.clone(),
                    group: route.group.clone(),
                });
            }
        }
        if self.checkout_reserve >= self.max_in_flight {
            return Err(ConfigError::Reserve {
                reserve: self.checkout_reserve,
                cap: self.max_in_flight,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_take_an_optional_group() {
        let bare: UpstreamSpec = "http://10.0.0.1:8080".parse().expect("parses");
        assert_eq!(bare.group, "api");
        assert_eq!(bare.url, "http://10.0.0.1:8080");
        let grouped: UpstreamSpec = "push=http://10.0.0.2:8080/".parse().expect("parses");
        assert_eq!(grouped.group, "push");
        for bad in [
            "10.0.0.1:8080",
            "https://10.0.0.1",
            "http://10.0.0.1/api",
            "API=http://x",
            "=http://x",
        ] {
            assert!(
                bad.parse::<UpstreamSpec>().is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn routes_and_policies_parse() {
        let route: RouteSpec = "/api/v1/push=push".parse().expect("parses");
        assert_eq!(
            (route.prefix.as_str(), route.group.as_str()),
            ("/api/v1/push", "push")
        );
        assert!("api/v1=push".parse::<RouteSpec>().is_err());
        let policy: GroupPolicy = "push=event-hash".parse().expect("parses");
        assert_eq!(policy.policy, Policy::EventHash);
        let bare: GroupPolicy = "round-robin".parse().expect("parses");
        assert_eq!(
            (bare.group.as_str(), bare.policy),
            ("api", Policy::RoundRobin)
        );
        assert!("api=random".parse::<GroupPolicy>().is_err());
    }
}
