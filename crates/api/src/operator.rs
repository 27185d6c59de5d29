//! Who may use an operators' listener (`/push/publish`, `/metrics`, `/readyz`; the gateway's
//! `/upstreams`): with an operator token configured, requests that carry it as
//! `Authorization: Bearer <token>`; without one, loopback peers only. `/healthz` stays open: it
//! says nothing but "up", and load balancers probe it without credentials.
//!
//! Why both: publishing on any channel and reading every metric are operator powers, and an
//! operators' listener bound to `0.0.0.0` (as in a container) would otherwise hand them to
//! whoever can reach the port.

use crate::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The operators' credentials; cheap to clone.
#[derive(Clone, Default)]
pub struct OperatorAccess {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for OperatorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.token.is_some() { "***" } else { "none" };
        write!(f, "OperatorAccess(token: {token})")
    }
}

impl OperatorAccess {
    /// An empty token counts as none (a variable set to nothing must not open the door).
    pub fn new(token: Option<&str>) -> OperatorAccess {
        OperatorAccess {
            token: token.filter(|token| !token.is_empty()).map(Arc::from),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `Ok` when a request from `peer` with these headers may use the listener.
    pub fn check(
        &self,
        path: &str,
        peer: Option<SocketAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        if path == "/healthz" {
            return Ok(());
        }
        match &self.token {
            Some(token) => {
                let given = authorization
                    .and_then(|value| {
                        let value = std::str::from_utf8(value).ok()?;
                        let (scheme, rest) = value.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    })
                    .unwrap_or("");
                if same(given.as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the operators' listener needs Authorization: Bearer <operator token>",
                    ))
                }
            }
            None if peer.is_some_and(|peer| peer.ip().to_canonical().is_loopback()) => Ok(()),
            None => Err(ApiError::forbidden(
                "without an operator token the operators' listener serves loopback only",
            )),
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Axum middleware guarding an operators' router (needs `ConnectInfo<SocketAddr>`).
pub async fn require_operator(
    axum::extract::State(access): axum::extract::State<OperatorAccess>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<crate::middleware::TcpPeer>()
        .map(|peer| peer.0)
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| *peer)
        });
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.as_bytes());
    match access.check(request.uri().path(), peer, authorization) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4]) -> Option<SocketAddr> {
        Some((ip, 4000).into())
    }

    #[test]
    fn a_token_is_required_when_configured_and_loopback_otherwise() {
        let open = OperatorAccess::new(None);
        assert!(open.check("/metrics", peer([127, 0, 0, 1]), None).is_ok());
        assert!(open.check("/metrics", peer([10, 0, 0, 1]), None).is_err());
        assert!(open.check("/healthz", peer([10, 0, 0, 1]), None).is_ok());
        assert!(OperatorAccess::new(Some(""))
            .check("/metrics", peer([10, 0, 0, 1]), None)
            .is_err());
        let guarded = OperatorAccess::new(Some("s3cret"));
        assert!(guarded
            .check("/metrics", peer([127, 0, 0, 1]), None)
            .is_err());
        assert!(guarded
            .check("/metrics", peer([10, 0, 0, 1]), Some(b"Bearer s3cret"))
            .is_ok());
        assert!(guarded
            .check("/metrics", peer([10, 0, 0, 1]), Some(b"Bearer s3cre"))
            .is_err());
        assert!(guarded
            .check("/readyz", None, Some(b"Basic s3cret"))
            .is_err());
    }
}
