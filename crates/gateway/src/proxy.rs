//! One request through the gateway: edge checks (token, role, rate, load), a node picked by the
//! group's policy, the request forwarded with its forwarding headers, retried on another node
//! when that is safe and the budget allows, and the answer streamed back unbuffered (SSE frames
//! pass as they come; a WebSocket upgrade becomes a byte tunnel).

use crate::access::{EdgeAuth, Refusal};
use crate::balancer::{event_affinity, Group, InFlight, Pick};
use crate::config::{EjectionSettings, GatewayConfig};
use crate::forwarded::TrustedProxies;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use marquee_ratelimit::{ConcurrencyLimiter, Decision, Priority, RateLimiter, Scope, ScopedQuota};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::retry::budget::{Budget, TpsBudget};

pub(crate) type UpstreamClient = Client<HttpConnector, Full<Bytes>>;
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Responses up to this size (by `Content-Length`) are read whole before they are sent on.
pub(crate) const BUFFERED_RESPONSE_BYTES: usize = 256 * 1024;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the gateway answers itself, in the contract's error body.
#[derive(Debug)]
pub(crate) enum EdgeError {
    Unauthenticated(&'static str),
    Forbidden,
    PayloadTooLarge(usize),
    /// The request head is over the configured size or header count.
    HeadersTooLarge,
    BadRequest(&'static str),
    RateLimited(Duration),
    Overloaded,
    BadGateway,
    GatewayTimeout,
}

impl EdgeError {
    fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let (status, headers, body) = self.into_parts(request_id);
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// Status, headers and the contract's error body; both server paths answer with these.
    pub(crate) fn into_parts(self, request_id: &HeaderValue) -> (StatusCode, HeaderMap, Bytes) {
        let body_left_unread = matches!(
            self,
            EdgeError::PayloadTooLarge(_) | EdgeError::BadRequest(_) | EdgeError::HeadersTooLarge
        );
        let (status, code, message) = match &self {
            EdgeError::Unauthenticated(message) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            ),
            EdgeError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role may not use this route".to_string(),
            ),
            EdgeError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over {limit} bytes"),
            ),
            EdgeError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request head is too large".to_string(),
            ),
            EdgeError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "invalid_input",
                message.to_string(),
            ),
            EdgeError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the time in Retry-After".to_string(),
            ),
            EdgeError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is at capacity; retry shortly".to_string(),
            ),
            EdgeError::BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "no node could answer the request".to_string(),
            ),
            EdgeError::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the node did not answer in time".to_string(),
            ),
        };
        let mut error = serde_json::json!({
            "code": code,
            "message": message,
            "request_id": request_id.to_str().unwrap_or_default(),
        });
        let retry_after = match self {
            EdgeError::RateLimited(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            EdgeError::Overloaded => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            error["retry_after_seconds"] = seconds.into();
        }
        let body = serde_json::json!({ "error": error }).to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if body_left_unread {
            // The rest of the body is still on the connection: say it closes, so the client
            // does not send its next request after bytes the server will never read.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        (status, headers, Bytes::from(body))
    }
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the gateway knows of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
}

/// One finished request, for metrics and the access log.
pub(crate) struct Exchange<'a> {
    pub(crate) started: Instant,
    pub(crate) client_ip: IpAddr,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) request_id: &'a HeaderValue,
}

/// One worker's proxy: its own pool of connections to the nodes, everything else (groups and
/// their health, limits, budget) shared by every worker.
#[derive(Clone)]
pub(crate) struct Proxy {
    client: UpstreamClient,
    /// This worker's idle HTTP/1.1 connections to the nodes, for the fast path.
    pub(crate) pool: Arc<crate::h1::Pool>,
    /// `(prefix, group index)`, longest prefix first.
    routes: Vec<(String, usize)>,
    pub(crate) groups: Arc<Vec<Group>>,
    default_group: usize,
    edge: Arc<EdgeAuth>,
    pub(crate) trusted: TrustedProxies,
    limiter: Option<Arc<dyn RateLimiter>>,
    quotas: Vec<ScopedQuota>,
    concurrency: Arc<ConcurrencyLimiter>,
    pub(crate) budget: Arc<TpsBudget>,
    pub(crate) retries: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) ejection: EjectionSettings,
    access_log: bool,
    duration: metrics::Histogram,
}

/// A request let through the edge: its slot under the concurrency cap and its upstream group.
pub(crate) struct Admission {
    _permit: marquee_ratelimit::ConcurrencyPermit,
    pub(crate) group: usize,
}

impl Proxy {
    pub(crate) fn new(
        config: &GatewayConfig,
        client: UpstreamClient,
        groups: Vec<Group>,
        edge: EdgeAuth,
    ) -> Proxy {
        let index_of = |name: &str| groups.iter().position(|group| group.name == name);
        let mut routes: Vec<(String, usize)> = config
            .routes
            .iter()
            .filter_map(|route| Some((route.prefix.clone(), index_of(&route.group)?)))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let default_group = index_of(crate::config::DEFAULT_GROUP).unwrap_or(0);
        let nodes = groups.iter().map(|group| group.upstreams.len()).sum();
        Proxy {
            client,
            pool: Arc::new(crate::h1::Pool::new(
                nodes,
                config.upstream_connections_per_worker,
            )),
            routes,
            default_group,
            groups: Arc::new(groups),
            edge: Arc::new(edge),
            trusted: TrustedProxies::new(config.trusted_proxies.clone()),
            limiter: config.rate_limiter.clone(),
            quotas: config.rate_limits.clone(),
            concurrency: ConcurrencyLimiter::new(config.max_in_flight, config.checkout_reserve),
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                10,
                config.retry_budget_percent / 100.0,
            )),
            retries: config.retries,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes.max(8192),
            max_body_bytes: config.max_body_bytes,
            ejection: config.ejection.clone(),
            access_log: config.access_log,
            // Resolved once: the macro looks the metric up by name on every call.
            duration: metrics::histogram!("gateway_request_duration_seconds"),
        }
    }

    /// The same proxy with its own connection pools, for another worker thread.
    pub(crate) fn with_client(&self, client: UpstreamClient) -> Proxy {
        Proxy {
            client,
            pool: Arc::new(crate::h1::Pool::new(
                self.pool.nodes(),
                self.pool.per_node(),
            )),
            ..self.clone()
        }
    }

    /// Metrics and the access log for one finished request, whichever path served it.
    pub(crate) fn record(&self, exchange: Exchange<'_>) {
        let elapsed = exchange.started.elapsed();
        self.duration.record(elapsed.as_secs_f64());
        if self.access_log {
            tracing::info!(
                target: "marquee_gateway::access",
                client = %exchange.client_ip,
                method = exchange.method,
                path = exchange.path,
                status = exchange.status,
                upstream = exchange.upstream.unwrap_or("-"),
                micros = elapsed.as_micros() as u64,
                request_id = exchange.request_id.to_str().unwrap_or_default(),
            );
        }
    }

    /// The token and route role, checked before anything else is spent on the request.
    pub(crate) fn authenticate(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<Option<marquee_auth::AccessClaims>, EdgeError> {
        self.edge
            .check(
                method.as_str(),
                path,
                authorization,
                query_token(query).as_deref(),
            )
            .map_err(|refusal| match refusal {
                Refusal::Unauthenticated(message) => EdgeError::Unauthenticated(message),
                Refusal::Forbidden => EdgeError::Forbidden,
            })
    }

    /// Rate limits and load shedding for an authenticated request; its group when it may pass.
    pub(crate) async fn admit(
        &self,
        method: &Method,
        path: &str,
        client_ip: IpAddr,
        user: Option<&str>,
    ) -> Result<Admission, EdgeError> {
        self.enforce_rate_limits(method, path, client_ip, user)
            .await?;
        let priority = if is_checkout(method, path) {
            Priority::Checkout
        } else {
            Priority::Normal
        };
        let permit = self
            .concurrency
            .try_acquire(priority)
            .ok_or(EdgeError::Overloaded)?;
        Ok(Admission {
            _permit: permit,
            group: self.route(path),
        })
    }

    /// Whether another attempt may be made after `attempts` so far: within the configured
    /// retries and the shared budget.
    pub(crate) fn may_retry(&self, attempts: usize) -> bool {
        attempts <= self.retries as usize && self.budget.withdraw()
    }

    pub(crate) async fn serve(
        &self,
        request: Request<Incoming>,
        connection: Connection,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = request_id(request.headers());
        let client_ip = self
            .trusted
            .client_ip(connection.peer.ip(), request.headers());
        // Kept only for the access log: the request itself moves into `forward`.
        let logged = self
            .access_log
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        let (mut response, upstream) = match self
            .forward(request, connection, client_ip, &request_id)
            .await
        {
            Ok((response, upstream)) => (response, Some(upstream)),
            Err(error) => (error.into_response(&request_id), None),
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.clone());
        let (method, path) = logged
            .as_ref()
            .map_or(("", ""), |(method, path)| (method.as_str(), path.as_str()));
        self.record(Exchange {
            started,
            client_ip,
            method,
            path,
            status: response.status().as_u16(),
            upstream: upstream.as_deref(),
            request_id: &request_id,
        });
        response
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        connection: Connection,
        client_ip: IpAddr,
        request_id: &HeaderValue,
    ) -> Result<(Response<ProxyBody>, std::sync::Arc<str>), EdgeError> {
        let method = request.method().clone();
        let claims = self.authenticate(
            &method,
            request.uri().path(),
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            request.uri().query(),
        )?;
        let admission = self
            .admit(
                &method,
                request.uri().path(),
                client_ip,
                claims.as_ref().map(|claims| claims.sub.as_str()),
            )
            .await?;
        let group = &self.groups[admission.group];
        let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let body = if upgrade.is_some() {
            Bytes::new()
        } else {
            read_body(body, self.max_body_bytes).await?
        };
        // Moved into the first attempt; a retry (rare) builds them again rather than every
        // request paying for a copy.
        let mut headers = Some(forwarded_headers(
            &parts,
            connection,
            client_ip,
            request_id,
            upgrade.is_some(),
        ));
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let affinity = event_affinity(parts.uri.path(), parts.uri.query());
        let repeatable =
            is_idempotent(&parts.method) || parts.headers.contains_key(IDEMPOTENCY_KEY);

        self.budget.deposit();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = EdgeError::BadGateway;
        loop {
            let slot = match group.pick(affinity, &tried) {
                (Pick::Upstream(slot), Some(index)) => {
                    tried.push(index);
                    slot
                }
                (Pick::AllBusy, _) => return Err(EdgeError::Overloaded),
                _ => return Err(last_error),
            };
            let may_retry = |proxy: &Proxy| proxy.may_retry(tried.len());
            let attempt_headers = headers.take().unwrap_or_else(|| {
                forwarded_headers(&parts, connection, client_ip, request_id, upgrade.is_some())
            });
            let upstream_request = build_request(
                &slot,
                &parts.method,
                &path_and_query,
                attempt_headers,
                body.clone(),
            )?;
            let outcome =
                tokio::time::timeout(self.response_timeout, self.client.request(upstream_request))
                    .await;
            let upstream = slot.upstream();
            match outcome {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let failed = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if failed {
                        upstream.record_failure(&self.ejection);
                        if repeatable && upgrade.is_none() && may_retry(self) {
                            metrics::counter!("gateway_retries_total").increment(1);
                            continue;
                        }
                    } else {
                        upstream.record_success();
                    }
                    let authority = upstream.authority.clone();
                    return Ok((self.respond(response, upgrade, slot).await?, authority));
                }
                Ok(Err(error)) => {
                    upstream.record_failure(&self.ejection);
                    tracing::debug!(upstream = %upstream.authority, %error, "upstream request failed");
                    // A request that never reached the node may go elsewhere whatever it is.
                    if (repeatable || error.is_connect()) && may_retry(self) {
                        metrics::counter!("gateway_retries_total").increment(1);
                        continue;
                    }
                    last_error = EdgeError::BadGateway;
                }
                Err(_) => {
                    upstream.record_failure(&self.ejection);
                    if repeatable && may_retry(self) {
                        metrics::counter!("gateway_retries_total").increment(1);
                        continue;
                    }
                    last_error = EdgeError::GatewayTimeout;
                }
            }
            return Err(last_error);
        }
    }

    /// The node's answer for the client: hop-by-hop headers dropped; a small body of known
    /// length read whole first (like nginx's proxy buffering: the client then gets head and body
    /// in one write, and a slow client never holds a node's connection), anything else — SSE,
    /// long bodies, chunked streams — streamed as it comes; a `101 Switching Protocols` joins
    /// the two upgraded connections into one tunnel.
    async fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        slot: InFlight,
    ) -> Result<Response<ProxyBody>, EdgeError> {
        let small = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .is_some_and(|length| length <= BUFFERED_RESPONSE_BYTES);
        if small && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(response.headers_mut());
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|_| EdgeError::BadGateway)?
                .to_bytes();
            drop(slot);
            return Ok(Response::from_parts(parts, full(body)));
        }
        drop(slot);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade)
                    else {
                        return;
                    };
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
                let (parts, _) = response.into_parts();
                return Ok(Response::from_parts(parts, full(Bytes::new())));
            }
        }
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| body.boxed_unsync()))
    }

    pub(crate) fn upstream_status(&self) -> Vec<crate::UpstreamStatus> {
        let now = Instant::now();
        self.groups
            .iter()
            .flat_map(|group| {
                group
                    .upstreams
                    .iter()
                    .map(move |upstream| crate::UpstreamStatus {
                        group: group.name.clone(),
                        url: format!("http://{}", upstream.authority),
                        healthy: upstream.is_healthy(),
                        ejected: upstream.is_ejected(now),
                        in_flight: upstream.in_flight(),
                    })
            })
            .collect()
    }

    fn route(&self, path: &str) -> usize {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or(self.default_group, |(_, group)| *group)
    }

    async fn enforce_rate_limits(
        &self,
        method: &Method,
        path: &str,
        client_ip: IpAddr,
        user: Option<&str>,
    ) -> Result<(), EdgeError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let mut longest_wait: Option<Duration> = None;
        for ScopedQuota { scope, quota } in &self.quotas {
            let key = match (scope, user) {
                (Scope::Ip, _) | (Scope::User, None) => format!("ip:{client_ip}"),
                (Scope::User, Some(user)) => format!("user:{user}"),
                (
                    Scope::Route {
                        method: m,
                        path: template,
                    },
                    _,
                ) => {
                    if m != method.as_str() || !template_matches(template, path) {
                        continue;
                    }
                    format!("route:{m} {template}:{client_ip}")
                }
            };
            match limiter.check(&key, *quota).await {
                Ok(Decision::Allowed { .. }) => {}
                Ok(Decision::Refused { retry_after }) => {
                    metrics::counter!("gateway_rate_limited_total").increment(1);
                    longest_wait = Some(longest_wait.map_or(retry_after, |w| w.max(retry_after)));
                }
                Err(error) => {
                    tracing::warn!(%error, "rate limiter unavailable; letting the request through");
                }
            }
        }
        match longest_wait {
            Some(wait) => Err(EdgeError::RateLimited(wait)),
            None => Ok(()),
        }
    }
}

/// The `access_token` query parameter, decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    let query = query?;
    if !query.contains("access_token=") {
        return None;
    }
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

/// Whether `path` fits a route template such as `/api/v1/events/{id}/holds`.
fn template_matches(template: &str, path: &str) -> bool {
    let mut template = template.split('/');
    let mut path = path.split('/');
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(part), Some(segment))
                if part == segment
                    || (part.starts_with('{') && part.ends_with('}') && !segment.is_empty()) => {}
            _ => return false,
        }
    }
}

/// Holds and orders: the requests the concurrency reserve is kept for.
fn is_checkout(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && (path == "/api/v1/orders"
            || (path.starts_with("/api/v1/events/") && path.ends_with("/holds"))
            || path.starts_with("/api/v1/holds/"))
}

/// RFC 9110 §9.2.2: repeating these has the effect of sending them once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The client's `x-request-id` when it is sane, else a new ULID.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    request_id_from(headers.get(X_REQUEST_ID).map(HeaderValue::as_bytes))
}

/// [`request_id`] from the raw header value, if the request had one.
pub(crate) fn request_id_from(sent: Option<&[u8]>) -> HeaderValue {
    sent.filter(|bytes| {
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    })
    .and_then(|bytes| HeaderValue::from_bytes(bytes).ok())
    .unwrap_or_else(|| {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    })
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, EdgeError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(EdgeError::PayloadTooLarge(limit))
        }
        Err(_) => Err(EdgeError::BadRequest("the request body could not be read")),
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove(header::UPGRADE);
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The headers every attempt sends: the client's minus hop-by-hop ones and `Host`, plus the
/// forwarding headers this gateway vouches for.
fn forwarded_headers(
    parts: &hyper::http::request::Parts,
    connection: Connection,
    client_ip: IpAddr,
    request_id: &HeaderValue,
    upgrade: bool,
) -> HeaderMap {
    let mut headers = parts.headers.clone();
    let upgrade_protocol = headers.get(header::UPGRADE).cloned();
    let host = headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(X_FORWARDED_HOST);
    headers.insert(X_FORWARDED_FOR, TrustedProxies::forwarded_for(client_ip));
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if connection.tls { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
    if let (true, Some(protocol)) = (upgrade, upgrade_protocol) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    headers
}

fn build_request(
    slot: &InFlight,
    method: &Method,
    path_and_query: &PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, EdgeError> {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
    parts.authority = Some(slot.upstream().uri_authority.clone());
    parts.path_and_query = Some(path_and_query.clone());
    let uri = Uri::from_parts(parts)
        .map_err(|_| EdgeError::BadRequest("the request target is not a valid path"))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_placeholder() {
        let template = "/api/v1/events/{id}/holds";
        assert!(template_matches(template, "/api/v1/events/e1/holds"));
        assert!(!template_matches(template, "/api/v1/events//holds"));
        assert!(!template_matches(template, "/api/v1/events/e1/holds/x"));
        assert!(!template_matches(template, "/api/v1/events/e1"));
        assert!(template_matches("/api/v1/orders", "/api/v1/orders"));
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("a b<script>"));
        assert_ne!(request_id(&headers), "a b<script>");
    }
}
