//! Notifications that leave the platform: e-mail to fans and webhooks to organizers.
//!
//! Both are sent from jobs (the `jobs` block), so this crate only knows how to send one message
//! and how to say whether a failure is worth another attempt ([`Transience`]); retries, backoff
//! and dead letters are the jobs block's.
//!
//! - [`SmtpMailer`] sends over SMTP with `lettre` (the maintained Rust SMTP client: pooling,
//!   STARTTLS and implicit TLS, reply-code classes; none of it worth writing again). A `4xx`
//!   reply or a connection failure is transient; a `5xx` is permanent.
//! - [`WebhookSender`] POSTs a JSON body signed with HMAC-SHA256 over `"{timestamp}.{body}"`
//!   ([`sign`], [`verify`]), the scheme Stripe and GitHub taught receivers to check: the
//!   timestamp lets a receiver refuse replays of an old delivery.
//! - [`AddressPolicy`] stops webhooks from reaching into the platform's own network (SSRF):
//!   loopback, private, link-local, CGNAT, multicast and other special ranges are refused
//!   unless configured as allowed. The check is made on every address the host name resolves
//!   to at delivery time, and the request goes to the address that was checked (so a DNS answer
//!   that changes between check and connect — rebinding — cannot slip through), with redirects
//!   off.

mod mail;
mod webhook;

pub use crate::mail::{Email, MailError, Mailer, SmtpMailer};
pub use crate::webhook::{
    is_public, sign, verify, AddressPolicy, DeliveryError, SignatureError, WebhookDelivery,
    WebhookSender, WebhookUrlError, MAX_WEBHOOK_BODY, MAX_WEBHOOK_URL, SIGNATURE_HEADER,
};

/// Whether a failed send may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    Transient,
    Permanent,
}

/// A fresh webhook signing secret: `whsec_` and 32 random bytes, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
