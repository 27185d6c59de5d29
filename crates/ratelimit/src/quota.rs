//! Quotas and their flag syntax: `50/s`, `600/m`, `10000/h` (GCRA) or `600/m sliding` (a
//! sliding window counter), scoped as `ip=50/s`, `user=10/s` or `route=POST /api/v1/orders=5/s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// GCRA: a token bucket of `limit`, refilled continuously; exact at every instant.
    #[default]
    Gcra,
    /// Sliding window counter: this fixed window's count plus the previous window's, weighted
    /// by how much of it still overlaps the last `period`. Two counters per key, never more
    /// than `limit` in one fixed window, and a smooth estimate across the boundary (no double
    /// burst at the edge of a fixed window). Flag suffix ` sliding`.
    SlidingWindow,
}

/// `limit` requests per `period`, with a burst of up to `limit` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    period: Duration,
    algorithm: Algorithm,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("expected LIMIT/UNIT such as 50/s, 600/m or 10000/h, got {0:?}")]
    Syntax(String),
    #[error("a quota must allow at least one request")]
    Zero,
    #[error("quota {0:?} is finer than one request per microsecond")]
    TooFine(String),
    #[error("expected SCOPE=QUOTA with SCOPE one of ip, user or route=METHOD PATH, got {0:?}")]
    Scope(String),
}

impl Quota {
    pub fn new(limit: u32, period: Duration) -> Result<Quota, QuotaError> {
        if limit == 0 || period.is_zero() {
            return Err(QuotaError::Zero);
        }
        let quota = Quota {
            limit,
            period,
            algorithm: Algorithm::Gcra,
        };
        if quota.period_micros() / u64::from(limit) == 0 {
            return Err(QuotaError::TooFine(quota.to_string()));
        }
        Ok(quota)
    }

    /// The same quota, counted with `algorithm`.
    pub fn with_algorithm(self, algorithm: Algorithm) -> Quota {
        Quota { algorithm, ..self }
    }

    pub fn algorithm(self) -> Algorithm {
        self.algorithm
    }

    pub fn limit(self) -> u32 {
        self.limit
    }

    pub fn period(self) -> Duration {
        self.period
    }

    pub(crate) fn period_micros(self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// Time between two requests at the sustained rate.
    pub(crate) fn emission_micros(self) -> u64 {
        self.period_micros() / u64::from(self.limit)
    }
}

impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(text: &str) -> Result<Quota, QuotaError> {
        let syntax = || QuotaError::Syntax(text.to_string());
        let (text, algorithm) = match text.trim().strip_suffix("sliding") {
            Some(rest) => (rest, Algorithm::SlidingWindow),
            None => (text, Algorithm::Gcra),
        };
        let (limit, unit) = text.trim().split_once('/').ok_or_else(syntax)?;
        let limit: u32 = limit.trim().parse().map_err(|_| syntax())?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(syntax()),
        };
        Ok(Quota::new(limit, period)?.with_algorithm(algorithm))
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.algorithm {
            Algorithm::Gcra => "",
            Algorithm::SlidingWindow => " sliding",
        };
        match self.period.as_secs() {
            1 => write!(f, "{}/s{suffix}", self.limit),
            60 => write!(f, "{}/m{suffix}", self.limit),
            3600 => write!(f, "{}/h{suffix}", self.limit),
            _ => write!(f, "{}/{:?}{suffix}", self.limit, self.period),
        }
    }
}

/// Whose requests a quota counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Each client IP.
    Ip,
    /// Each signed-in user (anonymous requests are counted by IP instead).
    User,
    /// Each client IP on one route, e.g. `POST /api/v1/orders` (the path as routed, with
    /// `{param}` placeholders).
    Route { method: String, path: String },
}

/// A quota with its scope: one `--rate-limit` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedQuota {
    pub scope: Scope,
    pub quota: Quota,
}

impl FromStr for ScopedQuota {
    type Err = QuotaError;

    fn from_str(text: &str) -> Result<ScopedQuota, QuotaError> {
        let scope_error = || QuotaError::Scope(text.to_string());
        // The quota is after the last '=' (a route's path has none).
        let (scope, quota) = text.rsplit_once('=').ok_or_else(scope_error)?;
        let quota: Quota = quota.parse()?;
        let scope = match scope.trim() {
            "ip" => Scope::Ip,
            "user" => Scope::User,
            route => {
                let route = route.strip_prefix("route=").ok_or_else(scope_error)?;
                let (method, path) = route.trim().split_once(' ').ok_or_else(scope_error)?;
                let method = method.trim().to_ascii_uppercase();
                let path = path.trim().to_string();
                if method.is_empty() || !path.starts_with('/') {
                    return Err(scope_error());
                }
                Scope::Route { method, path }
            }
        };
        Ok(ScopedQuota { scope, quota })
    }
}

/// Spelt as it is parsed, so a quota survives a round trip through a configuration file.
impl fmt::Display for ScopedQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Ip => write!(f, "ip={}", self.quota),
            Scope::User => write!(f, "user={}", self.quota),
            Scope::Route { method, path } => write!(f, "route={method} {path}={}", self.quota),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_quotas_round_trip_through_text() {
        for text in [
            "ip=50/s",
            "user=600/m sliding",
            "route=POST /api/v1/orders=5/s",
        ] {
            let scoped: ScopedQuota = text.parse().expect("parses");
            assert_eq!(scoped.to_string(), text);
        }
    }

    #[test]
    fn a_sliding_suffix_picks_the_sliding_window() {
        let scoped: ScopedQuota = "ip=600/m sliding".parse().expect("parses");
        assert_eq!(scoped.quota.algorithm(), Algorithm::SlidingWindow);
        assert_eq!(scoped.quota.limit(), 600);
        assert_eq!(scoped.quota.to_string(), "600/m sliding");
        let plain: Quota = "600/m".parse().expect("parses");
        assert_eq!(plain.algorithm(), Algorithm::Gcra);
        assert!("600/m slid".parse::<Quota>().is_err());
    }

    #[test]
    fn parses_the_flag_syntax() {
        assert_eq!(
            "ip=50/s".parse::<ScopedQuota>(),
            Ok(ScopedQuota {
                scope: Scope::Ip,
                quota: Quota::new(50, Duration::from_secs(1)).expect("quota"),
            })
        );
        assert_eq!(
            "route=post /api/v1/orders=5/m"
                .parse::<ScopedQuota>()
                .map(|q| (q.scope, q.quota.to_string())),
            Ok((
                Scope::Route {
                    method: "POST".into(),
                    path: "/api/v1/orders".into()
                },
                "5/m".to_string()
            ))
        );
        assert_eq!(
            "user=600/m".parse::<ScopedQuota>().map(|q| q.scope),
            Ok(Scope::User)
        );
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        for bad in [
            "ip=0/s",
            "ip=50",
            "ip=50/fortnight",
            "ip=-1/s",
            "host=5/s",
            "route=/x=5/s",
            "route=GET x=5/s",
            "50/s",
            "ip=2000000/s",
        ] {
            assert!(bad.parse::<ScopedQuota>().is_err(), "{bad} parsed");
        }
    }
}
