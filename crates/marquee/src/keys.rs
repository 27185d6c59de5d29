//! The cluster's keyring in the catalog database: bootstrap on a node's start, the reload
//! source, and rotation (`marquee keys rotate`). The design is in `marquee_auth`'s
//! documentation.

use anyhow::{bail, Context};
use marquee_auth::keyring::{generate_root, next_key_id, FIRST_KEY_ID};
use marquee_auth::{Derivation, KeyRecord, KeySource, Keyring, KeyringError, Purpose};
use marquee_store::{SqlCatalogStore, StoredSigningKey};
use std::sync::Arc;
use std::time::Duration;

/// How long a rotated key waits before nodes sign with it: longer than a node's reload
/// interval, so every node verifies it before any node signs with it.
pub const DEFAULT_PROPAGATION_DELAY: Duration = Duration::from_secs(60);

/// How often a node reads the keyring again.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(15);

/// How long the previous keys of a rotated purpose keep verifying, unless told.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The keyring in the catalog database, as a node reloads it.
pub struct StoreKeys(pub Arc<SqlCatalogStore>);

#[async_trait::async_trait]
impl KeySource for StoreKeys {
    async fn load(&self) -> Result<Vec<KeyRecord>, KeyringError> {
        let rows = self
            .0
            .signing_keys()
            .await
            .map_err(|error| KeyringError::Source(error.to_string()))?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            // A purpose a newer version added: not ours to use, not a reason to stop.
            let Ok(purpose) = row.purpose.parse::<Purpose>() else {
                continue;
            };
            let root = hex::decode(&row.secret).map_err(|_| {
                KeyringError::Source(format!("key {}/{} is not hex", row.purpose, row.id))
            })?;
            records.push(KeyRecord {
                purpose,
                id: row.id,
                root,
                derivation: row.derivation.parse()?,
                created_at: row.created_at,
                active_from: row.active_from,
                retire_at: row.retire_at,
            });
        }
        Ok(records)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Gives every purpose that has no key yet its first key, `k1`, and loads the keyring.
///
/// `legacy_root` is the root a single SQLite node signed with before the keyring (its
/// `<data_dir>/jwt-secret`): `k1` is then derived from it exactly as
/// before, so what was signed keeps verifying. Without one, each purpose's `k1` gets a fresh
/// random root. Every node inserts `k1` with `ON CONFLICT DO NOTHING` and loads what won, so
/// nodes starting at once agree and no node signs with a key its peers do not know.
pub async fn bootstrap(
    store: Arc<SqlCatalogStore>,
    legacy_root: Option<Vec<u8>>,
) -> anyhow::Result<Keyring> {
    let existing = store
        .signing_keys()
        .await
        .context("reading the cluster's signing keys")?;
    let now = now_ms();
    for purpose in Purpose::ALL {
        if existing.iter().any(|key| key.purpose == purpose.as_str()) {
            continue;
        }
        let (root, derivation) = match &legacy_root {
            Some(root) => (root.clone(), Derivation::Legacy),
            None => (generate_root(), Derivation::HkdfSha256),
        };
        store
            .insert_signing_key(&StoredSigningKey {
                purpose: purpose.as_str().to_string(),
                id: FIRST_KEY_ID.to_string(),
                secret: hex::encode(root),
                derivation: derivation.as_str().to_string(),
                created_at: now,
                active_from: now,
                retire_at: None,
            })
            .await
            .with_context(|| format!("storing the first {purpose} key"))?;
    }
    Keyring::load(Arc::new(StoreKeys(store)))
        .await
        .context("loading the cluster's signing keys")
}

/// The cluster's keyring as the gateway needs it: read from the catalog database at
/// `database_url` (never written: the nodes make the keys) and reloaded every `reload` for as
/// long as the process runs, so keys rotated on the nodes verify at the edge before any node
/// signs with them (a new key signs only after the propagation delay, 60 s by default).
pub async fn edge_keyring(database_url: &str, reload: Duration) -> anyhow::Result<Keyring> {
    let store = SqlCatalogStore::connect(
        database_url,
        marquee_store::StoreOptions {
            max_connections: 2,
            write_batches: 1,
            ..marquee_store::StoreOptions::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "opening the catalog at {} for its signing keys",
            marquee_store::redact_url(database_url)
        )
    })?;
    let keyring = Keyring::load(Arc::new(StoreKeys(Arc::new(store))))
        .await
        .context("loading the cluster's signing keys")?;
    if keyring.current(Purpose::AccessTokens).is_none() {
        tracing::warn!("the catalog has no access-token key yet (no node has started): every token is refused at the edge until one has");
    }
    let reloading = keyring.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(reload);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(error) = reloading.reload().await {
                tracing::warn!(%error, "reloading the signing keys failed; keeping the loaded ones");
            }
        }
    });
    Ok(keyring)
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub purpose: Purpose,
    pub id: String,
    /// Unix ms from which nodes sign with the new key.
    pub active_from: i64,
    /// The previous keys given a retirement, and when (Unix ms).
    pub retired: Vec<(String, i64)>,
}

/// Adds a key to `purpose` that signs after `propagation_delay`, and retires the purpose's
/// previous keys `grace` from now — except ticket codes', which are kept: a sold ticket must
/// always check in.
pub async fn rotate(
    store: &SqlCatalogStore,
    purpose: Purpose,
    grace: Duration,
    propagation_delay: Duration,
) -> anyhow::Result<Rotation> {
    if purpose.retires_old_keys() && grace < propagation_delay {
        // The old key signs until the new one activates; retiring it first would leave the
        // purpose with nothing to sign with in between.
        bail!("the grace period must be at least the propagation delay");
    }
    let keys = store
        .signing_keys()
        .await
        .context("reading the cluster's signing keys")?;
    let previous: Vec<&StoredSigningKey> = keys
        .iter()
        .filter(|key| key.purpose == purpose.as_str())
        .collect();
    if previous.is_empty() {
        bail!("{purpose} has no key yet: start a node on this database first");
    }
    let id = next_key_id(previous.iter().map(|key| key.id.as_str()));
    let now = now_ms();
    let active_from = now.saturating_add(millis(propagation_delay));
    let added = store
        .insert_signing_key(&StoredSigningKey {
            purpose: purpose.as_str().to_string(),
            id: id.clone(),
            secret: hex::encode(generate_root()),
            derivation: Derivation::HkdfSha256.as_str().to_string(),
            created_at: now,
            active_from,
            retire_at: None,
        })
        .await
        .context("storing the new key")?;
    if !added {
        bail!("another rotation of {purpose} added {id} at the same time; run `marquee keys list`");
    }
    let mut retired = Vec::new();
    if purpose.retires_old_keys() {
        let retire_at = now.saturating_add(millis(grace));
        for key in previous {
            if key.retire_at.is_some_and(|at| at <= retire_at) {
                continue;
            }
            store
                .retire_signing_key(&key.purpose, &key.id, retire_at)
                .await
                .with_context(|| format!("retiring {purpose} key {}", key.id))?;
            retired.push((key.id.clone(), retire_at));
        }
    }
    Ok(Rotation {
        purpose,
        id,
        active_from,
        retired,
    })
}
