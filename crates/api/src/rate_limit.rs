//! Rate limits at the node's edge: the `--rate-limit` quotas, checked before a routed request
//! reaches its handler, answered with 429 and `Retry-After` when exceeded.
//!
//! Keys: `ip:{address}` (the TCP peer — behind a proxy, that proxy, until trusted-proxy
//! forwarding is configured), `user:{id}` from a *verified* bearer token (an unverified subject
//! would let anyone spend someone else's allowance; anonymous requests count by IP), and
//! `route:{METHOD} {path}:{address}` per routed path. When the limiter's store is unreachable
//! requests go through: a limit is protection, not a dependency worth an outage.

use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marquee_ratelimit::{Decision, Quota, RateLimiter, Scope, ScopedQuota};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Sign-in and registration throttles. Always on, whatever `--rate-limit` says: each attempt
/// costs an argon2 hash, so these are what keep password guessing and hashing floods slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Sign-ins and registrations per client IP per minute (behind a trusted proxy, the client
    /// it names).
    pub attempts_per_ip_per_minute: u32,
    /// Attempts per account (the e-mail given, known or not) per minute, from any address.
    pub attempts_per_account_per_minute: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            attempts_per_ip_per_minute: 30,
            attempts_per_account_per_minute: 10,
        }
    }
}

/// The node's quotas and the limiter that counts them.
#[derive(Clone)]
pub struct RateLimits {
    limiter: Arc<dyn RateLimiter>,
    quotas: Arc<Vec<ScopedQuota>>,
    /// Whether a quota counts per user: only then is the bearer token verified here.
    per_user: bool,
    auth: AuthLimits,
}

impl RateLimits {
    pub fn new(limiter: Arc<dyn RateLimiter>, quotas: Vec<ScopedQuota>) -> RateLimits {
        RateLimits {
            limiter,
            per_user: quotas.iter().any(|quota| quota.scope == Scope::User),
            quotas: Arc::new(quotas),
            auth: AuthLimits::default(),
        }
    }

    pub fn with_auth_limits(mut self, auth: AuthLimits) -> RateLimits {
        self.auth = auth;
        self
    }

    /// Counts one sign-in or registration attempt from `ip` naming `email`; refused with 429
    /// and `Retry-After` past either allowance. The account is keyed by the e-mail as given
    /// (trimmed, lower-cased) whether or not it exists, so the answer for an unknown account
    /// is the same as for a known one.
    pub(crate) async fn check_auth_attempt(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        let per_minute = |count: u32| Quota::new(count.max(1), Duration::from_secs(60));
        // Bounded (an e-mail address is at most 254 characters), so a key costs little.
        let account: String = email.trim().to_lowercase().chars().take(254).collect();
        let checks = [
            (
                format!("auth:ip:{ip}"),
                per_minute(self.auth.attempts_per_ip_per_minute),
                "ip",
            ),
            (
                format!("auth:account:{account}"),
                per_minute(self.auth.attempts_per_account_per_minute),
                "account",
            ),
        ];
        let mut longest_wait: Option<Duration> = None;
        for (key, quota, scope) in checks {
            let Ok(quota) = quota else { continue };
            if let Some(wait) = wait_required(self.limiter.as_ref(), &key, quota).await {
                metrics::counter!("rate_limit_refusals_total", "scope" => format!("auth_{scope}"))
                    .increment(1);
                longest_wait = Some(longest_wait.map_or(wait, |longest| longest.max(wait)));
            }
        }
        match longest_wait {
            Some(wait) => Err(ApiError::rate_limited(wait)),
            None => Ok(()),
        }
    }
}

/// Counts one request of `key`; the wait it must observe if refused. An unreachable limiter
/// lets the request through (logged).
pub(crate) async fn wait_required(
    limiter: &dyn RateLimiter,
    key: &str,
    quota: Quota,
) -> Option<Duration> {
    match limiter.check(key, quota).await {
        Ok(Decision::Allowed { .. }) => None,
        Ok(Decision::Refused { retry_after }) => Some(retry_after),
        Err(error) => {
            tracing::warn!(%error, "rate limiter unavailable; letting the request through");
            None
        }
    }
}

pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if limits.quotas.is_empty() {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let method = request.method().as_str().to_string();
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let user = bearer
        .filter(|_| limits.per_user)
        .and_then(|token| state.tokens.verify(token).ok())
        .map(|claims| claims.sub);
    let mut longest_wait: Option<Duration> = None;
    for ScopedQuota { scope, quota } in limits.quotas.iter() {
        let key = match scope {
            Scope::Ip => format!("ip:{ip}"),
            Scope::User => match &user {
                Some(user) => format!("user:{user}"),
                None => format!("ip:{ip}"),
            },
            Scope::Route {
                method: quota_method,
                path,
            } => {
                if *quota_method != method || route.as_deref() != Some(path.as_str()) {
                    continue;
                }
                format!("route:{method} {path}:{ip}")
            }
        };
        if let Some(wait) = wait_required(limits.limiter.as_ref(), &key, *quota).await {
            metrics::counter!("rate_limit_refusals_total", "scope" => scope_name(scope))
                .increment(1);
            longest_wait = Some(longest_wait.map_or(wait, |longest| longest.max(wait)));
        }
    }
    match longest_wait {
        Some(wait) => ApiError::rate_limited(wait).into_response(),
        None => next.run(request).await,
    }
}

fn scope_name(scope: &Scope) -> &'static str {
    match scope {
        Scope::Ip => "ip",
        Scope::User => "user",
        Scope::Route { .. } => "route",
    }
}
