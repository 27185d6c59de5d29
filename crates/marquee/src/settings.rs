//! A node's settings: one model, read from a `marquee.toml`, then `MARQUEE_*` environment
//! variables, then flags — each layer overriding the one before.
//!
//! [`NodeSettings`] is the whole model, one section per block (`[database]`, `[redis]`,
//! `[push]`, …); its `Default` is the only place a default is written (where a block has a
//! default of its own, the node's is read from it). The flags ([`crate::cli`]) are the same
//! shape with every field optional and no defaults; clap reads each from its flag or its
//! variable. The layers are merged by figment: the defaults, the file, then whatever flags or
//! variables were given, and the result is checked once by [`NodeSettings::into_server_config`].
//! `marquee config check` prints the effective settings as TOML, secrets redacted.
//!
//! Durations are written as humantime strings (`90s`, `10m`, `24h`); every key is documented in
//! `docs/configuration.md`, with `marquee.example.toml` at the root of the repository.

use crate::config::{LiveConfig, ServerConfig};
use anyhow::Context;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything that configures a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Address of the public HTTP listener.
    pub listen: SocketAddr,
    /// The operators' listener (`/metrics`, probes, `/push/publish`); off unless given.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the operators' listener requires; without one it serves loopback peers
    /// only.
    pub operator_token: Option<String>,
    /// Embedded storage, the search index, recordings.
    pub data_dir: PathBuf,
    /// Sent as `x-marquee-node`; the host name when absent.
    pub node_id: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Proxies whose `X-Forwarded-For` names the client (CIDR).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Request quotas: `ip=50/s`, `user=600/m`, `route=POST /api/v1/orders=5/s`.
    #[serde(with = "as_strings")]
    pub rate_limits: Vec<marquee_ratelimit::ScopedQuota>,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub booking: BookingSettings,
    pub redis: RedisSettings,
    pub nats: NatsSettings,
    pub push: PushSettings,
    pub queue: QueueSettings,
    pub notify: NotifySettings,
    pub live: LiveSettings,
}

/// Connection limits of every HTTP listener (public, lean paths, operators'): slow or idle
/// clients cannot hold connections (slowloris), and a flood cannot exhaust descriptors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Longest wait for a request head, from the connection (or the previous answer) on.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a request body may take to arrive.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` for many nodes; SQLite at `<data_dir>/marquee.db` when absent.
    pub url: Option<String>,
    pub max_connections: u32,
    /// PostgreSQL: booking write batches in flight at once (one commit each).
    pub write_batches: u32,
    /// PostgreSQL: sessions idle inside a transaction longer than this are ended by the server.
    #[serde(with = "humantime_serde")]
    pub idle_transaction_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Access-token signing secret (≥ 32 bytes); when absent, the cluster's keyring in the
    /// catalog database (see `marquee keys`).
    pub jwt_secret: Option<String>,
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Sign-ins and registrations per client IP per minute (429 beyond).
    pub attempts_per_ip: u32,
    /// Sign-ins per account (e-mail) per minute, whoever tries.
    pub attempts_per_account: u32,
    /// Password hashes computed at once; 0 means one per core.
    pub hashing_concurrency: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BookingSettings {
    /// How long a seat hold lasts.
    #[serde(with = "humantime_serde")]
    pub hold_ttl: Duration,
    /// How long a payment may take before the order fails (the hold stays).
    #[serde(with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// How long a request's answer is kept for a retry under its idempotency key.
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
    /// Booking requests (holds, hold changes, orders) this node handles at once; past it, 503
    /// with `Retry-After` at once rather than a growing queue.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Shared leases, waiting rooms, rate limits, push and cache; in-process when absent.
    pub url: Option<String>,
    /// Prefix of every key this node writes.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// JetStream carries the change stream; each node reads the outbox when absent.
    pub url: Option<String>,
    /// The stream; one per cluster.
    pub stream: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Messages each channel keeps for clients that reconnect.
    pub history: usize,
    #[serde(with = "humantime_serde")]
    pub history_age: Duration,
    /// Messages a connection may fall behind before it is closed.
    pub buffer: usize,
    pub max_per_ip: usize,
    pub max_per_user: usize,
    /// Channels one node's hub tracks at most; a subscription to a new one beyond it is
    /// refused (each costs a broadcast ring while followed).
    pub max_channels: usize,
    /// SSE on the lean listener path rather than through hyper.
    pub lean_sse: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    #[serde(with = "humantime_serde")]
    pub join_window: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub quiet_period: Duration,
    pub joins_per_ip: u32,
    pub joins_per_user: u32,
    /// At most 20 s.
    #[serde(with = "humantime_serde")]
    pub update_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// `smtp://host:25`, `smtps://user:password@host:465`; no e-mail when absent.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// Private ranges webhooks may reach after all (CIDR).
    pub webhook_allow_cidr: Vec<ipnet::IpNet>,
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Attempts of a job before it is dead-lettered (1–100).
    pub job_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub job_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub job_backoff_cap: Duration,
    /// The web app's public address, for links in e-mails and playback URLs.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    /// `host:port`, or `off`.
    pub rtmp_listen: ListenOrOff,
    pub rtmp_public_url: Option<String>,
    /// `host:port` (UDP), or `off`.
    pub srt_listen: ListenOrOff,
    pub srt_public_url: Option<String>,
    pub ffmpeg: PathBuf,
    /// Streams transcoded at once (1–64).
    pub max_transcodes: u64,
    pub transcode_preset: String,
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub playback_token_ttl: Duration,
    /// `file:///dir` or `s3://bucket/prefix`; `<data_dir>/recordings` when absent.
    pub recordings_url: Option<String>,
    /// `/live/…` on the lean HTTP/1.1 path rather than through hyper.
    pub media_lean_http: bool,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOrOff(pub Option<SocketAddr>);

impl std::str::FromStr for ListenOrOff {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "off" | "" => Ok(ListenOrOff(None)),
            addr => addr
                .parse()
                .map(|addr| ListenOrOff(Some(addr)))
                .map_err(|_| format!("`{addr}` is not host:port (or `off`)")),
        }
    }
}

impl std::fmt::Display for ListenOrOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for ListenOrOff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        let push = marquee_api::PushSettings::default();
        let hub = marquee_push::HubLimits::default();
        let queue = marquee_api::QueueSettings::default();
        let room = marquee_waitroom::RoomTimings::default();
        let notifications = marquee_api::NotificationSettings::default();
        let http = marquee_api::HttpLimits::default();
        let auth_limits = marquee_api::AuthLimits::default();
        NodeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            operator_token: None,
            data_dir: PathBuf::from("marquee-data"),
            node_id: None,
            body_limit: 1024 * 1024,
            trusted_proxies: Vec::new(),
            rate_limits: Vec::new(),
            http: HttpSettings {
                header_read_timeout: http.header_read_timeout,
                body_read_timeout: http.body_read_timeout,
                idle_timeout: http.idle_timeout,
                max_connections: http.max_connections,
            },
            database: DatabaseSettings {
                url: None,
                max_connections: 16,
                write_batches: 4,
                idle_transaction_timeout: Duration::from_secs(5),
            },
            auth: AuthSettings {
                jwt_secret: None,
                token_ttl: Duration::from_secs(24 * 3600),
                attempts_per_ip: auth_limits.attempts_per_ip_per_minute,
                attempts_per_account: auth_limits.attempts_per_account_per_minute,
                hashing_concurrency: 0,
            },
            booking: BookingSettings {
                hold_ttl: Duration::from_secs(600),
                payment_timeout: Duration::from_secs(10),
                idempotency_retention: marquee_inventory::InventorySettings::default()
                    .idempotency_retention,
                // Four write batches of up to ~50 requests each in flight, and as many again
                // waiting for the next ones: a request past that would wait longer than it takes
                // a client to be told to come back.
                max_in_flight: 512,
            },
            redis: RedisSettings {
                url: None,
                prefix: "marquee:".to_string(),
            },
            nats: NatsSettings {
                url: None,
                stream: "MARQUEE_CHANGES".to_string(),
            },
            push: PushSettings {
                heartbeat: push.heartbeat,
                history: hub.history_len,
                history_age: hub.history_age,
                buffer: hub.subscriber_buffer,
                max_per_ip: push.max_connections_per_ip,
                max_per_user: push.max_connections_per_user,
                max_channels: hub.max_channels,
                lean_sse: true,
            },
            queue: QueueSettings {
                join_window: queue.join_window,
                idle_timeout: room.idle_timeout,
                quiet_period: room.quiet_period,
                joins_per_ip: queue.joins_per_ip_per_minute,
                joins_per_user: queue.joins_per_user_per_minute,
                update_interval: queue.update_interval,
            },
            notify: NotifySettings {
                smtp_url: None,
                mail_from: "Marquee <tickets@marquee.invalid>".to_string(),
                webhook_allow_cidr: Vec::new(),
                webhook_timeout: notifications.webhook_timeout,
                job_attempts: notifications.max_attempts,
                // A first retry sooner than a second rarely finds a flaky receiver back.
                job_backoff: Duration::from_secs(2),
                job_backoff_cap: notifications.worker.backoff.cap,
                public_url: None,
            },
            live: LiveSettings {
                // A node takes encoders on loopback unless told where else.
                rtmp_listen: ListenOrOff(Some(SocketAddr::from(([127, 0, 0, 1], 1935)))),
                rtmp_public_url: None,
                srt_listen: ListenOrOff(Some(SocketAddr::from(([127, 0, 0, 1], 9000)))),
                srt_public_url: None,
                ffmpeg: PathBuf::from("ffmpeg"),
                max_transcodes: 2,
                transcode_preset: "veryfast".to_string(),
                reconnect_grace: Duration::from_secs(10),
                playback_token_ttl: Duration::from_secs(4 * 3600),
                recordings_url: None,
                media_lean_http: true,
            },
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Figment(#[from] Box<figment::Error>),
}

impl NodeSettings {
    /// The defaults, then the file at `file` (if any), then `overrides` — the flags and
    /// variables given, serialised with the fields that were not given left out.
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(NodeSettings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError::Invalid(format!(
                    "the configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: NodeSettings = figment
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot say.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |message: String| Err(SettingsError::Invalid(message));
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.len() < 32 {
                return invalid("auth.jwt_secret must be at least 32 bytes".into());
            }
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return invalid(
                    "database.url must be postgres://… or sqlite://… (leave it out for the embedded store)"
                        .into(),
                );
            }
        }
        for (key, url, schemes) in [
            ("redis.url", &self.redis.url, &["redis", "rediss"][..]),
            ("nats.url", &self.nats.url, &["nats", "tls"][..]),
            (
                "notify.smtp_url",
                &self.notify.smtp_url,
                &["smtp", "smtps"][..],
            ),
            (
                "notify.public_url",
                &self.notify.public_url,
                &["http", "https"][..],
            ),
        ] {
            if let Some(url) = url {
                let parsed = url::Url::parse(url)
                    .map_err(|error| SettingsError::Invalid(format!("{key}: {error}")))?;
                if !schemes.contains(&parsed.scheme()) {
                    return invalid(format!("{key} must use {}", schemes.join(" or ")));
                }
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1".into());
        }
        if self.database.write_batches == 0
            || self.database.write_batches >= self.database.max_connections
        {
            return invalid(
                "database.write_batches must be at least 1 and below database.max_connections"
                    .into(),
            );
        }
        if self.booking.max_in_flight == 0 {
            return invalid("booking.max_in_flight must be at least 1".into());
        }
        if !(1..=100).contains(&self.notify.job_attempts) {
            return invalid("notify.job_attempts must be between 1 and 100".into());
        }
        if !(1..=64).contains(&self.live.max_transcodes) {
            return invalid("live.max_transcodes must be between 1 and 64".into());
        }
        if self.queue.update_interval > Duration::from_secs(20) {
            return invalid("queue.update_interval must be at most 20s".into());
        }
        if self.nats.stream.is_empty() || self.redis.prefix.is_empty() {
            return invalid("nats.stream and redis.prefix must not be empty".into());
        }
        Ok(())
    }

    /// The settings as TOML with every secret replaced, for `marquee config check`.
    pub fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        if shown.operator_token.is_some() {
            shown.operator_token = Some("<redacted>".into());
        }
        if shown.auth.jwt_secret.is_some() {
            shown.auth.jwt_secret = Some("<redacted>".into());
        }
        for url in [
            &mut shown.database.url,
            &mut shown.redis.url,
            &mut shown.nats.url,
            &mut shown.notify.smtp_url,
        ]
        .into_iter()
        .flatten()
        {
            *url = marquee_store::redact_url(url);
        }
        toml::to_string_pretty(&shown).context("writing the settings as TOML")
    }

    /// The node's runtime configuration: the one place settings become the blocks' own types.
    pub fn into_server_config(self) -> ServerConfig {
        let push_defaults = marquee_api::PushSettings::default();
        let worker_defaults = marquee_jobs::WorkerSettings::default();
        ServerConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            operator_token: self.operator_token,
            http: marquee_api::HttpLimits {
                header_read_timeout: self.http.header_read_timeout,
                body_read_timeout: self.http.body_read_timeout,
                idle_timeout: self.http.idle_timeout,
                max_connections: self.http.max_connections.max(1),
            },
            auth_limits: marquee_api::AuthLimits {
                attempts_per_ip_per_minute: self.auth.attempts_per_ip,
                attempts_per_account_per_minute: self.auth.attempts_per_account,
            },
            hashing_concurrency: self.auth.hashing_concurrency,
            data_dir: self.data_dir,
            database_url: self.database.url,
            hold_ttl: self.booking.hold_ttl,
            jwt_secret: self.auth.jwt_secret,
            key_reload_interval: crate::keys::DEFAULT_RELOAD_INTERVAL,
            token_ttl: self.auth.token_ttl,
            node_id: self.node_id.unwrap_or_else(crate::config::default_node_id),
            body_limit_bytes: self.body_limit,
            database_max_connections: self.database.max_connections,
            database_write_batches: self.database.write_batches,
            database_idle_transaction_timeout: self.database.idle_transaction_timeout,
            redis_url: self.redis.url,
            redis_prefix: self.redis.prefix,
            payment_timeout: self.booking.payment_timeout,
            idempotency_retention: self.booking.idempotency_retention,
            booking_max_in_flight: self.booking.max_in_flight,
            push: marquee_api::PushSettings {
                heartbeat: self.push.heartbeat,
                max_connections_per_ip: self.push.max_per_ip,
                max_connections_per_user: self.push.max_per_user,
                ..push_defaults
            },
            push_hub: marquee_push::HubLimits {
                history_len: self.push.history,
                history_age: self.push.history_age,
                subscriber_buffer: self.push.buffer,
                max_channels: self.push.max_channels.max(1),
            },
            push_lean_sse: self.push.lean_sse,
            media_lean_http: self.live.media_lean_http,
            queue: marquee_api::QueueSettings {
                join_window: self.queue.join_window,
                joins_per_ip_per_minute: self.queue.joins_per_ip,
                joins_per_user_per_minute: self.queue.joins_per_user,
                update_interval: self.queue.update_interval.min(Duration::from_secs(20)),
            },
            queue_timings: marquee_waitroom::RoomTimings {
                idle_timeout: self.queue.idle_timeout,
                quiet_period: self.queue.quiet_period,
            },
            rate_limits: self.rate_limits,
            trusted_proxies: self.trusted_proxies,
            nats_url: self.nats.url,
            nats_stream: self.nats.stream,
            smtp_url: self.notify.smtp_url,
            mail_from: self.notify.mail_from,
            notifications: marquee_api::NotificationSettings {
                max_attempts: self.notify.job_attempts,
                worker: marquee_jobs::WorkerSettings {
                    backoff: marquee_jobs::Backoff {
                        base: self.notify.job_backoff,
                        cap: self.notify.job_backoff_cap.max(self.notify.job_backoff),
                        ..worker_defaults.backoff
                    },
                    ..worker_defaults
                },
                webhook_policy: marquee_notify::AddressPolicy::new(self.notify.webhook_allow_cidr),
                webhook_timeout: self.notify.webhook_timeout,
                public_url: self.notify.public_url.clone(),
            },
            live: LiveConfig {
                rtmp_listen: self.live.rtmp_listen.0,
                rtmp_public_url: self.live.rtmp_public_url,
                srt_listen: self.live.srt_listen.0,
                srt_public_url: self.live.srt_public_url,
                public_url: self.notify.public_url,
                ffmpeg: self.live.ffmpeg,
                max_transcodes: usize::try_from(self.live.max_transcodes).unwrap_or(64),
                reconnect_grace: self.live.reconnect_grace,
                playback_token_ttl: self.live.playback_token_ttl,
                recordings_url: self.live.recordings_url,
                preset: self.live.transcode_preset,
            },
        }
    }
}

/// Values kept as their text form (`Display` out, `FromStr` in), as flags spell them.
mod as_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(
        values: &[T],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|value| value.to_string()))
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Overrides {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<SocketAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        redis: Option<RedisOverride>,
    }

    #[derive(Serialize)]
    struct RedisOverride {
        prefix: String,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn the_defaults_round_trip_through_toml() {
        let text = toml::to_string(&NodeSettings::default()).expect("toml");
        let back: NodeSettings = toml::from_str(&text).expect("parses");
        assert_eq!(back, NodeSettings::default());
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let path = file(
            "listen = \"0.0.0.0:9000\"\n[redis]\nurl = \"redis://10.0.0.1:6379\"\nprefix = \"file:\"\n[booking]\nhold_ttl = \"90s\"\n",
        );
        let overrides = Overrides {
            redis: Some(RedisOverride {
                prefix: "flag:".into(),
            }),
            ..Overrides::default()
        };
        let settings = NodeSettings::load(Some(path.path()), &overrides).expect("loads");
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(settings.redis.url.as_deref(), Some("redis://10.0.0.1:6379"));
        assert_eq!(settings.redis.prefix, "flag:");
        assert_eq!(settings.booking.hold_ttl, Duration::from_secs(90));
        assert_eq!(
            settings.auth.token_ttl,
            NodeSettings::default().auth.token_ttl
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let typo = file("[redis]\nurrl = \"redis://x\"\n");
        assert!(NodeSettings::load(Some(typo.path()), &Overrides::default()).is_err());
        let short = file("[auth]\njwt_secret = \"short\"\n");
        assert!(NodeSettings::load(Some(short.path()), &Overrides::default()).is_err());
        let duration = file("[booking]\nhold_ttl = \"ten minutes\"\n");
        assert!(NodeSettings::load(Some(duration.path()), &Overrides::default()).is_err());
        let quota = file("rate_limits = [\"ip=fast\"]\n");
        assert!(NodeSettings::load(Some(quota.path()), &Overrides::default()).is_err());
        let missing = Path::new("/nonexistent/marquee.toml");
        assert!(NodeSettings::load(Some(missing), &Overrides::default()).is_err());
    }

    #[test]
    fn secrets_are_redacted_when_shown() {
        let mut settings = NodeSettings::default();
        settings.auth.jwt_secret = Some("a-secret-of-at-least-thirty-two-bytes!".into());
        settings.database.url = Some("postgres://app:hunter2@db/marquee".into());
        let shown = settings.redacted_toml().expect("toml");
        assert!(!shown.contains("thirty-two"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db/marquee"), "{shown}");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../marquee.example.toml");
        let text = std::fs::read_to_string(example).expect("marquee.example.toml");
        let full = toml::Table::try_from(NodeSettings::default()).expect("table");
        // Every key of the model appears in the example (commented keys are written out there
        // with their defaults), so the example is the complete reference.
        for (section, value) in &full {
            match value {
                toml::Value::Table(keys) => {
                    for key in keys.keys() {
                        assert!(
                            text.contains(&format!("{key} =")),
                            "[{section}] {key} is missing from marquee.example.toml"
                        );
                    }
                }
                _ => assert!(
                    text.contains(&format!("{section} =")),
                    "{section} is missing from marquee.example.toml"
                ),
            }
        }
        assert!(NodeSettings::load(Some(Path::new(example)), &Overrides::default()).is_ok());
    }
}
