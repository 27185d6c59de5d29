//! A node's runtime configuration, in the blocks' own types, built from
//! [`crate::settings::NodeSettings`] (file, variables, flags); what is not given is derived from
//! the data dir: the SQLite file and the jobs file. Signing keys come from the configured
//! secret or the cluster's keyring (see [`ServerConfig::keyring`]).

use crate::settings::{ListenOrOff, NodeSettings};
use anyhow::{bail, Context};
use marquee_auth::SigningSecret;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `serve` (and `demo`) needs to run a node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A second listener for `/metrics` and probes without authentication.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token the operators' listener requires; without one it serves loopback only.
    pub operator_token: Option<String>,
    /// Timeouts and connection cap of every HTTP listener.
    pub http: marquee_api::HttpLimits,
    /// Sign-in and registration throttles (always on; `--rate-limit` quotas come on top).
    pub auth_limits: marquee_api::AuthLimits,
    /// Password hashes computed at once; 0 means one per core.
    pub hashing_concurrency: usize,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means `marquee.db` in the data dir.
    pub database_url: Option<String>,
    pub hold_ttl: Duration,
    /// `None` means the cluster's keyring in the catalog database (see
    /// [`ServerConfig::keyring`]).
    pub jwt_secret: Option<String>,
    /// How often the node reads the keyring again (rotated keys, retirements).
    pub key_reload_interval: Duration,
    pub token_ttl: Duration,
    pub node_id: String,
    pub body_limit_bytes: usize,
    pub database_max_connections: u32,
    /// PostgreSQL: booking write batches in flight at once.
    pub database_write_batches: u32,
    /// PostgreSQL: sessions idle inside a transaction longer than this are ended.
    pub database_idle_transaction_timeout: Duration,
    /// `redis://…` selects Redis leases (shared by every node); `None` keeps them in-process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this node writes.
    pub redis_prefix: String,
    /// How long a payment may take before an order fails with 503 (the hold stays).
    pub payment_timeout: Duration,
    /// How long an idempotency key's response is kept for replay.
    pub idempotency_retention: Duration,
    /// Booking requests handled at once; past it, 503 with `Retry-After`.
    pub booking_max_in_flight: usize,
    /// Push transports' limits and heartbeat.
    pub push: marquee_api::PushSettings,
    /// Push channels' history and buffers (on Redis too when `redis_url` is set).
    pub push_hub: marquee_push::HubLimits,
    /// SSE on the lean listener path rather than through hyper (see `marquee_api::lean_listener`).
    pub push_lean_sse: bool,
    /// `/live/…` media requests on the lean HTTP/1.1 path rather than through hyper.
    pub media_lean_http: bool,
    /// Waiting rooms: join window, join limits, update interval.
    pub queue: marquee_api::QueueSettings,
    /// Waiting rooms: idle timeout and quiet period.
    pub queue_timings: marquee_waitroom::RoomTimings,
    /// `--rate-limit` quotas (shared through Redis when a Redis URL is configured).
    pub rate_limits: Vec<marquee_ratelimit::ScopedQuota>,
    /// Proxies in front (the gateway) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `nats://…` carries the change stream over JetStream (one relay per cluster copies the
    /// outbox into it); `None` has every follower read the outbox itself.
    pub nats_url: Option<String>,
    /// The JetStream stream of the change stream; every node of one cluster names the same.
    pub nats_stream: String,
    /// SMTP server for fans' e-mail (`smtp://host:port`, `smtps://user:pass@host`); `None`
    /// sends none (and makes no e-mail jobs).
    pub smtp_url: Option<String>,
    /// The sender of those e-mails, e.g. `Marquee <tickets@example.com>`.
    pub mail_from: String,
    /// Jobs (attempts, backoff, concurrency) and webhooks (allowed private ranges, timeout).
    pub notifications: marquee_api::NotificationSettings,
    /// Live streaming: ingest listeners, transcoders, playback tokens, recordings.
    pub live: LiveConfig,
}

#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The RTMP ingest listener; `None` takes no RTMP (tests opt in with port 0).
    pub rtmp_listen: Option<SocketAddr>,
    /// What encoders are told to publish to; `None` derives `rtmp://<listen>/live`.
    pub rtmp_public_url: Option<String>,
    /// The SRT ingest listener (UDP); `None` takes no SRT.
    pub srt_listen: Option<SocketAddr>,
    /// What SRT encoders are told to call; `None` derives `srt://<listen>`.
    pub srt_public_url: Option<String>,
    /// The origin's base URL in playback URLs (`http://host:port`); `None` gives paths.
    pub public_url: Option<String>,
    pub ffmpeg: PathBuf,
    /// Live streams (each one ffmpeg) this node takes at once; more are refused.
    pub max_transcodes: usize,
    /// How long a publisher that dropped may take to come back before its stream ends.
    pub reconnect_grace: Duration,
    pub playback_token_ttl: Duration,
    /// `file:///…` or `s3://bucket/prefix`; `None` keeps recordings in the data dir.
    pub recordings_url: Option<String>,
    /// x264 preset of the renditions.
    pub preset: String,
}

impl ServerConfig {
    /// Defaults for a node on `data_dir` listening on `listen` (tests pass port 0): the
    /// defaults of [`NodeSettings`], less the ingest listeners, which a node built in code
    /// (tests, embedding) takes only when asked.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        let mut settings = NodeSettings {
            listen,
            data_dir,
            ..NodeSettings::default()
        };
        settings.live.rtmp_listen = ListenOrOff(None);
        settings.live.srt_listen = ListenOrOff(None);
        settings.into_server_config()
    }

    /// Where jobs are kept: the catalog's PostgreSQL database, or `jobs.db` in the data dir
    /// beside an embedded catalog (a file of its own, so jobs never wait on the booking
    /// writer).
    pub fn jobs_url(&self) -> String {
        match &self.database_url {
            Some(url) if url.starts_with("postgres") => url.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("jobs.db").display()
            ),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("marquee.db").display()
            )
        })
    }

    /// The signing secret: the configured one, or the one kept in the data dir.
    pub fn signing_secret(&self) -> anyhow::Result<SigningSecret> {
        match &self.jwt_secret {
            Some(secret) => SigningSecret::new(secret.as_bytes().to_vec())
                .context("MARQUEE_JWT_SECRET / --jwt-secret must be at least 32 bytes"),
            None => load_or_create_secret(&self.data_dir.join("jwt-secret")),
        }
    }
}

impl ServerConfig {
    /// The node's signing keys. With a configured `--jwt-secret`: one implicit key per purpose
    /// derived from it as before the keyring, and nothing signed names a key (the gateway and
    /// tests verify with the raw secret). Without one: the cluster's keyring in the catalog
    /// database (SQLite's or PostgreSQL's alike). On SQLite its first keys come from the root
    /// the node used before, `<data_dir>/jwt-secret`, when there is one, so tokens, ticket codes
    /// and passes already out keep verifying.
    pub async fn keyring(
        &self,
        store: &std::sync::Arc<marquee_store::SqlCatalogStore>,
    ) -> anyhow::Result<marquee_auth::Keyring> {
        use marquee_store::CatalogStore;
        if self.jwt_secret.is_some() {
            return Ok(marquee_auth::Keyring::from_secret(&self.signing_secret()?));
        }
        // One machine before the keyring kept its root in the data dir; a cluster's nodes
        // never shared one, so on PostgreSQL there is nothing to carry over.
        let legacy = match store.backend() {
            marquee_store::Backend::Postgres => None,
            marquee_store::Backend::Sqlite => {
                let path = self.data_dir.join("jwt-secret");
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        check_private(&path)?;
                        Some(
                            decode_hex(text.trim()).with_context(|| {
                                format!("{} is not a hex secret", path.display())
                            })?,
                        )
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                    Err(error) => {
                        return Err(error).with_context(|| format!("reading {}", path.display()))
                    }
                }
            }
        };
        if legacy
            .as_ref()
            .is_some_and(|root| root.len() < SigningSecret::MIN_BYTES)
        {
            bail!("the signing root kept from before the keyring is under 32 bytes");
        }
        crate::keys::bootstrap(std::sync::Arc::clone(store), legacy).await
    }
}

/// The host name, so that `x-marquee-node` tells nodes apart without configuration.
pub fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "marquee".to_string())
}

/// Reads the hex secret at `path`, or creates it (mode 0600, never overwriting a file that
/// appeared meanwhile).
fn load_or_create_secret(path: &Path) -> anyhow::Result<SigningSecret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(path)?;
            let bytes = decode_hex(text.trim())
                .with_context(|| format!("{} is not a hex secret", path.display()))?;
            SigningSecret::new(bytes)
                .with_context(|| format!("{} holds a secret under 32 bytes", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secret = SigningSecret::generate();
            write_private(path, &encode_hex(secret.expose()))?;
            tracing::info!(path = %path.display(), "generated a new JWT signing secret");
            Ok(secret)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|index| {
            text.get(index..index + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .context("not a hex digit")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt-secret");
        let first = load_or_create_secret(&path).expect("create");
        let second = load_or_create_secret(&path).expect("reuse");
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(
                load_or_create_secret(&path).is_err(),
                "a readable secret is refused"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex(&encode_hex(&bytes)).expect("decode"), bytes);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
