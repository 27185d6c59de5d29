//! Organizer webhooks: signing, the address policy, delivery.

use crate::Transience;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use reqwest::Url;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The header a receiver checks: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "marquee-signature";
/// The longest webhook URL accepted.
pub const MAX_WEBHOOK_URL: usize = 2_048;
/// The largest body a delivery carries.
pub const MAX_WEBHOOK_BODY: usize = 64 * 1024;
/// How much of a failing receiver's answer is kept for the job's error.
const KEPT_ANSWER: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is {age_seconds} s away from now, beyond the tolerance")]
    Stale { age_seconds: i64 },
    #[error("no v1 signature matches")]
    Mismatch,
}

/// What a receiver does: checks that `header` signs `body` with `secret` and that its timestamp
/// is within `tolerance_seconds` of `now` (unix seconds). Every `v1=` value is tried, so a
/// sender rotating secrets may send two. Compared in constant time.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.saturating_sub(timestamp);
    if age.saturating_abs() > tolerance_seconds {
        return Err(SignatureError::Stale { age_seconds: age });
    }
    let expected = mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// True for addresses on the public internet; false for loopback, private (RFC 1918, unique
/// local, the old site-local `fec0::/10`), link-local, CGNAT, documentation, benchmarking,
/// multicast, broadcast, unspecified, the IPv4-mapped forms of all of them, and the IPv6
/// forms that carry an IPv4 address to a translator or relay — IPv4-compatible `::a.b.c.d`,
/// NAT64, 6to4 `2002::/16` and Teredo `2001::/32` — refused whole: all are deprecated or
/// tunnels, and through them a "public" IPv6 address can reach an internal IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x2001 && v6.segments()[1] == 0x0000 // Teredo
                || first == 0x2002 // 6to4
                || v6.segments()[..6] == [0; 6] // IPv4-compatible ::a.b.c.d
                || first == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 reaches IPv4 ranges
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("the URL is longer than {MAX_WEBHOOK_URL} characters")]
    TooLong,
    #[error("only http and https URLs are accepted")]
    Scheme,
    #[error("the URL must not carry credentials; the signature authenticates deliveries")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} resolves to {address}, which is not a public address")]
    NotPublic { host: String, address: IpAddr },
    #[error("{host} does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
}

/// Which addresses webhooks may reach: the public internet, plus ranges an operator allows
/// (a receiver on the same network in a test, say).
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allowed }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Parses and checks a URL as given: syntax, scheme, no credentials, and (when the host is
    /// an address) the address. Names are checked at delivery, when they are resolved.
    pub fn check_url(&self, raw: &str) -> Result<Url, WebhookUrlError> {
        if raw.len() > MAX_WEBHOOK_URL {
            return Err(WebhookUrlError::TooLong);
        }
        let url = Url::parse(raw).map_err(|error| WebhookUrlError::Invalid(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookUrlError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookUrlError::Credentials);
        }
        let host = match url.host() {
            Some(host) => host,
            None => return Err(WebhookUrlError::NoHost),
        };
        let literal = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                // Names that mean this machine whatever DNS says.
                if name == "localhost" || name.ends_with(".localhost") {
                    Some(IpAddr::from([127, 0, 0, 1]))
                } else {
                    None
                }
            }
        };
        if let Some(address) = literal {
            if !self.permits(address) {
                return Err(WebhookUrlError::NotPublic {
                    host: host.to_string(),
                    address,
                });
            }
        }
        Ok(url)
    }

    /// Resolves the URL's host and checks every address; answers the one to connect to.
    pub async fn resolve(&self, url: &Url) -> Result<SocketAddr, WebhookUrlError> {
        let host = url.host_str().ok_or(WebhookUrlError::NoHost)?;
        let port = url.port_or_known_default().ok_or(WebhookUrlError::NoHost)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|error| WebhookUrlError::Unresolvable {
                host: host.to_string(),
                reason: error.to_string(),
            })?
            .collect();
        if let Some(refused) = addresses.iter().find(|address| !self.permits(address.ip())) {
            return Err(WebhookUrlError::NotPublic {
                host: host.to_string(),
                address: refused.ip(),
            });
        }
        addresses
            .first()
            .copied()
            .ok_or_else(|| WebhookUrlError::Unresolvable {
                host: host.to_string(),
                reason: "no addresses".into(),
            })
    }
}

/// One delivery: what is sent, under which ids.
#[derive(Debug, Clone)]
pub struct WebhookDelivery<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    /// `order.confirmed`, …; sent as `marquee-event`.
    pub event_type: &'a str,
    /// Stable across retries (sent as `marquee-delivery`), so receivers can de-duplicate.
    pub delivery_id: &'a str,
    pub body: &'a [u8],
    /// Unix seconds, signed with the body.
    pub timestamp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("refused before sending: {0}")]
    Refused(#[from] WebhookUrlError),
    #[error("the body is {size} bytes; at most {MAX_WEBHOOK_BODY} are sent")]
    TooLarge { size: usize },
    #[error("the receiver answered {status}: {answer}")]
    Status { status: u16, answer: String },
    #[error("could not reach the receiver: {0}")]
    Transport(String),
}

impl DeliveryError {
    /// Refusals and oversized bodies never improve; a `410 Gone` says the receiver is gone for
    /// good. Everything else (5xx, 429, other 4xx that a fix on the receiver's side may cure,
    /// timeouts, refused connections) is tried again until the job's attempts run out.
    pub fn transience(&self) -> Transience {
        match self {
            DeliveryError::Refused(_) | DeliveryError::TooLarge { .. } => Transience::Permanent,
            DeliveryError::Status { status: 410, .. } => Transience::Permanent,
            DeliveryError::Status { .. } | DeliveryError::Transport(_) => Transience::Transient,
        }
    }
}

/// POSTs signed deliveries to the address the policy checked.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    policy: AddressPolicy,
    timeout: Duration,
}

impl WebhookSender {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> WebhookSender {
        WebhookSender { policy, timeout }
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Sends one delivery; a 2xx answer is success.
    pub async fn deliver(&self, delivery: &WebhookDelivery<'_>) -> Result<u16, DeliveryError> {
        if delivery.body.len() > MAX_WEBHOOK_BODY {
            return Err(DeliveryError::TooLarge {
                size: delivery.body.len(),
            });
        }
        let url = self.policy.check_url(delivery.url)?;
        let address = self.policy.resolve(&url).await?;
        let host = url.host_str().ok_or(WebhookUrlError::NoHost)?.to_string();
        // A client per delivery, pinned to the checked address: webhooks are few, and this is
        // what makes rebinding between the check and the connect impossible.
        let client = reqwest::Client::builder()
            .resolve(&host, address)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("Marquee-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| DeliveryError::Transport(error.to_string()))?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                sign(delivery.secret, delivery.timestamp, delivery.body),
            )
            .header("marquee-event", delivery.event_type)
            .header("marquee-delivery", delivery.delivery_id)
            .body(delivery.body.to_vec())
            .send()
            .await
            .map_err(|error| DeliveryError::Transport(without_url(&error)))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(status);
        }
        let mut answer = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            answer.extend_from_slice(&chunk);
            if answer.len() >= KEPT_ANSWER {
                answer.truncate(KEPT_ANSWER);
                break;
            }
        }
        Err(DeliveryError::Status {
            status,
            answer: String::from_utf8_lossy(&answer).into_owned(),
        })
    }
}

/// reqwest's errors name the URL, which may carry an organizer's path secrets; keep the kind.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let body = br#"{"type":"order.confirmed"}"#;
        let header = sign("whsec_test", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify("whsec_test", &header, body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify("whsec_other", &header, body, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_test", &header, b"{}", 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        let replayed = header.replace("t=1700000000", "t=1700000500");
        assert_eq!(
            verify("whsec_test", &replayed, body, 1_700_000_500, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_test", &header, body, 1_700_001_000, 300),
            Err(SignatureError::Stale { age_seconds: 1_000 })
        );
        for malformed in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify("whsec_test", malformed, body, 1, 300),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn special_ranges_are_not_public() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
            "::8.8.8.8",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "feff::1",
        ] {
            let ip: IpAddr = address.parse().expect("address");
            assert!(!is_public(ip), "{address}");
        }
        for address in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            let ip: IpAddr = address.parse().expect("address");
            assert!(is_public(ip), "{address}");
        }
    }

    #[test]
    fn urls_into_the_platforms_network_are_refused_unless_allowed() {
        let strict = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://api.localhost./hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/hook",
            "http://[::ffff:192.168.0.1]/hook",
            "http://2130706433/hook",
        ] {
            assert!(
                matches!(
                    strict.check_url(url),
                    Err(WebhookUrlError::NotPublic { .. })
                ),
                "{url}: {:?}",
                strict.check_url(url)
            );
        }
        assert_eq!(
            strict.check_url("ftp://example.com/x"),
            Err(WebhookUrlError::Scheme)
        );
        assert_eq!(
            strict.check_url("https://user:pw@example.com/x"),
            Err(WebhookUrlError::Credentials)
        );
        assert!(matches!(
            strict.check_url("not a url"),
            Err(WebhookUrlError::Invalid(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL));
        assert_eq!(strict.check_url(&long), Err(WebhookUrlError::TooLong));
        assert!(strict
            .check_url("https://hooks.example.com/marquee")
            .is_ok());
        let loopback_allowed = AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("net")]);
        assert!(loopback_allowed
            .check_url("http://127.0.0.1:9/hook")
            .is_ok());
        assert!(loopback_allowed.check_url("http://10.0.0.1/hook").is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_into_a_private_range_is_refused_at_delivery() {
        let sender = WebhookSender::new(AddressPolicy::default(), Duration::from_secs(2));
        // `localhost.` is caught by name; a name resolving to loopback through the resolver:
        let error = sender
            .deliver(&WebhookDelivery {
                url: "http://ip6-localhost/hook",
                secret: "s",
                event_type: "ping",
                delivery_id: "d1",
                body: b"{}",
                timestamp: 0,
            })
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error,
                DeliveryError::Refused(
                    WebhookUrlError::NotPublic { .. } | WebhookUrlError::Unresolvable { .. }
                )
            ),
            "{error}"
        );
        assert_eq!(error.transience(), Transience::Permanent);
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_any_header(header in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verify("secret", &header, &body, 1_700_000_000, 300);
        }

        #[test]
        fn what_is_signed_verifies(secret in "[ -~]{1,64}", timestamp in 0i64..4_000_000_000, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let header = sign(&secret, timestamp, &body);
            prop_assert_eq!(verify(&secret, &header, &body, timestamp, 0), Ok(()));
        }
    }
}
