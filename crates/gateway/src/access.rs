//! Authentication and route-level RBAC at the edge: a bearer token that does not verify (forged,
//! expired, another issuer's, another algorithm's) is answered 401 here and never reaches a node;
//! routes that need a role are refused 401/403 before they cost a node anything. The nodes still
//! check ownership themselves — the edge only knows roles.
//!
//! Patterns match path segments: `*` one segment, a final `**` any number (zero included).

use marquee_auth::{AccessClaims, TokenError, TokenIssuer};
use marquee_domain::Role;
use std::str::FromStr;

use crate::config::ConfigError;

/// Who may call the routes a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Any verified token.
    SignedIn,
    Roles(Vec<Role>),
}

/// `METHOD PATTERN=ROLES`: `ROLES` is `signed-in` or a comma list of `fan`, `organizer`,
/// `admin`; `METHOD` may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    method: Option<String>,
    pattern: Vec<String>,
    allowed: Allowed,
}

impl FromStr for AccessRule {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<AccessRule, ConfigError> {
        let error = || ConfigError::AccessRule(text.to_string());
        let (route, roles) = text.rsplit_once('=').ok_or_else(error)?;
        let (method, pattern) = route.trim().split_once(' ').ok_or_else(error)?;
        let pattern = pattern.trim();
        if !pattern.starts_with('/') || method.is_empty() {
            return Err(error());
        }
        let method = match method {
            "*" => None,
            method if method.bytes().all(|b| b.is_ascii_uppercase()) => Some(method.to_string()),
            _ => return Err(error()),
        };
        let allowed = if roles.trim() == "signed-in" {
            Allowed::SignedIn
        } else {
            let roles = roles
                .split(',')
                .map(|role| Role::parse(role.trim()).map_err(|_| error()))
                .collect::<Result<Vec<Role>, ConfigError>>()?;
            Allowed::Roles(roles)
        };
        Ok(AccessRule {
            method,
            pattern: segments(pattern).map(str::to_string).collect(),
            allowed,
        })
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

impl AccessRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        let mut path = segments(path);
        for (index, part) in self.pattern.iter().enumerate() {
            if part == "**" && index + 1 == self.pattern.len() {
                return true;
            }
            match path.next() {
                Some(segment) if part == "*" || part == segment => {}
                _ => return false,
            }
        }
        path.next().is_none()
    }
}

/// The rules the contract implies: organizer routes, admin routes and signed-in routes.
pub fn default_rules() -> Vec<AccessRule> {
    [
        "GET /metrics=admin",
        "POST /api/v1/venues=organizer,admin",
        "POST /api/v1/events=organizer,admin",
        "PATCH /api/v1/events/*=organizer,admin",
        "POST /api/v1/events/*/publish=organizer,admin",
        "POST /api/v1/events/*/cancel=organizer,admin",
        "POST /api/v1/events/*/checkin=organizer,admin",
        "POST /api/v1/events/*/stream=organizer,admin",
        "POST /api/v1/events/*/holds=signed-in",
        "POST /api/v1/events/*/queue=signed-in",
        "* /api/v1/holds/**=signed-in",
        "* /api/v1/orders/**=signed-in",
        "* /api/v1/me/**=signed-in",
    ]
    .into_iter()
    .filter_map(|rule| rule.parse().ok())
    .collect()
}

/// Why the edge refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No usable token where one is needed, or a token that does not verify.
    Unauthenticated(&'static str),
    Forbidden,
}

pub(crate) struct EdgeAuth {
    tokens: Option<TokenIssuer>,
    rules: Vec<AccessRule>,
}

impl EdgeAuth {
    pub(crate) fn new(tokens: Option<TokenIssuer>, rules: Vec<AccessRule>) -> EdgeAuth {
        EdgeAuth { tokens, rules }
    }

    /// Checks the `Authorization` header and an `access_token` query parameter against the
    /// route; the verified claims when a token was sent.
    pub(crate) fn check(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
    ) -> Result<Option<AccessClaims>, Refusal> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let verify = |token: &str| match tokens.verify(token.trim()) {
            Ok(claims) => Ok(claims),
            Err(TokenError::Expired) => Err(Refusal::Unauthenticated("the token has expired")),
            Err(_) => Err(Refusal::Unauthenticated("the token is not valid")),
        };
        let from_header = match authorization {
            None => None,
            Some(value) => {
                let token = value
                    .strip_prefix(b"Bearer ")
                    .and_then(|token| std::str::from_utf8(token).ok())
                    .ok_or(Refusal::Unauthenticated(
                        "the Authorization header must be `Bearer <token>`",
                    ))?;
                Some(verify(token)?)
            }
        };
        // Browsers' EventSource and WebSocket cannot set headers and send `?access_token=`;
        // such a token is checked here just the same.
        let from_query = query_token.map(verify).transpose()?;
        let claims = from_header.or(from_query);
        let Some(rule) = self.rules.iter().find(|rule| rule.matches(method, path)) else {
            return Ok(claims);
        };
        let Some(found) = &claims else {
            return Err(Refusal::Unauthenticated(
                "this route needs a signed-in user",
            ));
        };
        match &rule.allowed {
            Allowed::SignedIn => Ok(claims),
            Allowed::Roles(roles) if roles.contains(&found.role) => Ok(claims),
            Allowed::Roles(_) => Err(Refusal::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_auth::SigningSecret;
    use marquee_domain::UserId;
    use std::time::Duration;

    fn rule(text: &str) -> AccessRule {
        text.parse().expect("rule parses")
    }

    #[test]
    fn patterns_match_by_segment() {
        let holds = rule("POST /api/v1/events/*/holds=signed-in");
        assert!(holds.matches("POST", "/api/v1/events/abc/holds"));
        assert!(!holds.matches("GET", "/api/v1/events/abc/holds"));
        assert!(!holds.matches("POST", "/api/v1/events/abc/holds/x"));
        assert!(!holds.matches("POST", "/api/v1/events/holds"));
        let me = rule("* /api/v1/me/**=signed-in");
        assert!(me.matches("GET", "/api/v1/me"));
        assert!(me.matches("DELETE", "/api/v1/me/orders/1"));
        assert!(!me.matches("GET", "/api/v1/meet"));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "POST=admin",
            "post /x=admin",
            "POST x=admin",
            "POST /x=root",
            "POST /x",
        ] {
            assert!(bad.parse::<AccessRule>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn tokens_and_roles_are_checked() {
        let secret = SigningSecret::new(vec![7; 32]).expect("secret");
        let issuer = TokenIssuer::new(&secret, Duration::from_secs(60));
        let edge = EdgeAuth::new(Some(issuer.clone()), default_rules());
        let fan = issuer
            .issue(&UserId::from_string("u1"), Role::Fan)
            .expect("token");
        let bearer = format!("Bearer {fan}");
        assert_eq!(edge.check("GET", "/api/v1/events", None, None), Ok(None));
        assert!(edge
            .check(
                "POST",
                "/api/v1/events/e/holds",
                Some(bearer.as_bytes()),
                None
            )
            .is_ok());
        assert_eq!(
            edge.check("POST", "/api/v1/venues", Some(bearer.as_bytes()), None),
            Err(Refusal::Forbidden)
        );
        assert!(matches!(
            edge.check("POST", "/api/v1/orders", None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        let forged = format!("Bearer {}x", fan);
        assert!(matches!(
            edge.check("GET", "/api/v1/events", Some(forged.as_bytes()), None),
            Err(Refusal::Unauthenticated(_))
        ));
        let other = TokenIssuer::new(
            &SigningSecret::new(vec![8; 32]).expect("secret"),
            Duration::from_secs(60),
        );
        let foreign = other
            .issue(&UserId::from_string("u1"), Role::Admin)
            .expect("token");
        assert!(matches!(
            edge.check(
                "GET",
                "/metrics",
                Some(format!("Bearer {foreign}").as_bytes()),
                None
            ),
            Err(Refusal::Unauthenticated(_))
        ));
        // A query token is verified like a header one.
        assert!(edge
            .check("GET", "/api/v1/push/sse", None, Some(fan.as_str()))
            .is_ok());
        assert!(matches!(
            edge.check("GET", "/api/v1/push/sse", None, Some(foreign.as_str())),
            Err(Refusal::Unauthenticated(_))
        ));
    }
}
