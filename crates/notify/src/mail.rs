//! E-mail over SMTP.

use crate::Transience;
use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// A stable id (the job's key), sent as `Message-ID`, so a message sent twice (a worker
    /// that died after the server's `250`) can be recognised as one.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the address {0:?} is not a valid mailbox")]
    Address(String),
    #[error("the SMTP URL is not usable: {0}")]
    Config(String),
    #[error("SMTP: {message}")]
    Send {
        message: String,
        transience: Transience,
    },
}

impl MailError {
    pub fn transience(&self) -> Transience {
        match self {
            MailError::Address(_) | MailError::Config(_) => Transience::Permanent,
            MailError::Send { transience, .. } => *transience,
        }
    }
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// SMTP through a pooled `lettre` transport.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// `url` is `smtp://host:port` (STARTTLS when offered… or not: lettre's `smtp://` is plain
    /// unless `?tls=required`), `smtps://host:port` (implicit TLS), with optional
    /// `user:password@`. `from` is the sender mailbox, e.g. `Marquee <tickets@example.com>`.
    pub fn new(url: &str, from: &str, timeout: Duration) -> Result<SmtpMailer, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|_| MailError::Address(from.to_string()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|error| MailError::Config(error.to_string()))?
            .timeout(Some(timeout))
            .build();
        Ok(SmtpMailer { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|_| MailError::Address(email.to.clone()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(format!("<{}@marquee>", email.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.text.clone())
            .map_err(|error| MailError::Config(error.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| MailError::Send {
                transience: if error.is_permanent() {
                    Transience::Permanent
                } else {
                    Transience::Transient
                },
                message: error.to_string(),
            })
    }
}
