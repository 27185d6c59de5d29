//! The keyring: every signing key of a cluster, by purpose and id, reloaded from where the
//! cluster keeps it (see the crate documentation for the design).

use crate::SigningSecret;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a key signs. Each purpose has keys of its own, so rotating one never touches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    AccessTokens,
    TicketCodes,
    /// Waiting-room tokens and passes.
    QueuePasses,
    Playback,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::AccessTokens,
        Purpose::TicketCodes,
        Purpose::QueuePasses,
        Purpose::Playback,
    ];

    /// The name kept in the database, and the HKDF `info` of the purpose's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::AccessTokens => "access-tokens",
            Purpose::TicketCodes => "ticket-codes",
            Purpose::QueuePasses => "queue-passes",
            Purpose::Playback => "playback",
        }
    }

    /// Whether rotation may retire this purpose's old keys. Ticket codes are printed and sold:
    /// a sold ticket must check in whatever was rotated since, so their keys are kept.
    pub fn retires_old_keys(self) -> bool {
        self != Purpose::TicketCodes
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = KeyringError;

    fn from_str(text: &str) -> Result<Purpose, KeyringError> {
        Purpose::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == text)
            .ok_or_else(|| KeyringError::UnknownPurpose(text.to_string()))
    }
}

/// How a key's bytes come from its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivation {
    /// HKDF-SHA256, the root as input key material, the purpose's name as `info`: every key
    /// made by this version (a fresh random root per key).
    HkdfSha256,
    /// What nodes did before the keyring, from the one root they shared, so that tokens, ticket
    /// codes and passes signed before an upgrade keep verifying: the raw root for access
    /// tokens, SHA-256 of a label and the root for ticket codes, the raw root (which the
    /// waiting room and playback tokens derive from with labels of their own) for the rest.
    Legacy,
}

impl Derivation {
    pub fn as_str(self) -> &'static str {
        match self {
            Derivation::HkdfSha256 => "hkdf-sha256",
            Derivation::Legacy => "legacy-v1",
        }
    }
}

impl std::str::FromStr for Derivation {
    type Err = KeyringError;

    fn from_str(text: &str) -> Result<Derivation, KeyringError> {
        match text {
            "hkdf-sha256" => Ok(Derivation::HkdfSha256),
            "legacy-v1" => Ok(Derivation::Legacy),
            other => Err(KeyringError::UnknownDerivation(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("unknown key purpose {0:?} (expected access-tokens, ticket-codes, queue-passes or playback)")]
    UnknownPurpose(String),
    #[error("unknown key derivation {0:?}")]
    UnknownDerivation(String),
    #[error("key id {0:?} is not of the form k<number>")]
    BadKeyId(String),
    #[error("the root of key {purpose}/{id} is under 32 bytes")]
    WeakRoot { purpose: Purpose, id: String },
    #[error("the keyring has no key for {0}")]
    MissingPurpose(Purpose),
    #[error("loading the keyring failed: {0}")]
    Source(String),
}

/// The first key of every purpose: nodes bootstrapping at once all insert this id, so exactly
/// one insert wins and every node reads the winner back.
pub const FIRST_KEY_ID: &str = "k1";

/// Roots drawn for new keys, in bytes.
pub const ROOT_BYTES: usize = 32;

/// The id of the key after `ids` (`k1`, `k2`, …).
pub fn next_key_id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let highest = ids.into_iter().filter_map(key_number).max().unwrap_or(0);
    format!("k{}", highest + 1)
}

fn key_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('k')?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A fresh random root for a new key.
pub fn generate_root() -> Vec<u8> {
    use rand::RngCore;
    let mut root = vec![0u8; ROOT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut root);
    root
}

/// One key as the cluster keeps it. Times are Unix milliseconds. `Debug` never shows the root.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub purpose: Purpose,
    pub id: String,
    pub root: Vec<u8>,
    pub derivation: Derivation,
    pub created_at: i64,
    /// When nodes start signing with it; it verifies from the moment they load it.
    pub active_from: i64,
    /// When it stops verifying (and signing); `None` is never.
    pub retire_at: Option<i64>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("purpose", &self.purpose)
            .field("id", &self.id)
            .field("root", &"***")
            .field("derivation", &self.derivation)
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

/// A key ready to sign or verify one purpose's values. `Debug` never shows it.
pub struct SigningKey {
    id: String,
    material: Vec<u8>,
}

impl SigningKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn material(&self) -> &[u8] {
        &self.material
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, ***)", self.id)
    }
}

/// The bytes a purpose's signer uses, from a key's root.
pub fn derive_material(purpose: Purpose, derivation: Derivation, root: &[u8]) -> Vec<u8> {
    match derivation {
        Derivation::HkdfSha256 => {
            let mut okm = vec![0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 blocks, so expand cannot fail.
            if Hkdf::<Sha256>::new(None, root)
                .expand(purpose.as_str().as_bytes(), &mut okm)
                .is_err()
            {
                unreachable!("HKDF-SHA256 expands to 32 bytes");
            }
            okm
        }
        Derivation::Legacy => match purpose {
            Purpose::TicketCodes => {
                let mut hasher = Sha256::new();
                hasher.update(b"marquee ticket codes v1");
                hasher.update([0]);
                hasher.update(root);
                hasher.finalize().to_vec()
            }
            Purpose::AccessTokens | Purpose::QueuePasses | Purpose::Playback => root.to_vec(),
        },
    }
}

/// Where a keyring reloads from (the catalog database in a node).
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    async fn load(&self) -> Result<Vec<KeyRecord>, KeyringError>;
}

struct Entry {
    key: Arc<SigningKey>,
    active_from: i64,
    created_at: i64,
    number: u64,
    retire_at: Option<i64>,
}

impl Entry {
    fn verifies_at(&self, now: i64) -> bool {
        self.retire_at.is_none_or(|retire_at| now < retire_at)
    }
}

#[derive(Default)]
struct Loaded {
    by_purpose: HashMap<Purpose, Vec<Entry>>,
}

impl Loaded {
    fn build(records: Vec<KeyRecord>) -> Result<Loaded, KeyringError> {
        let mut loaded = Loaded::default();
        for record in records {
            let number =
                key_number(&record.id).ok_or_else(|| KeyringError::BadKeyId(record.id.clone()))?;
            if record.root.len() < ROOT_BYTES {
                return Err(KeyringError::WeakRoot {
                    purpose: record.purpose,
                    id: record.id,
                });
            }
            let material = derive_material(record.purpose, record.derivation, &record.root);
            loaded
                .by_purpose
                .entry(record.purpose)
                .or_default()
                .push(Entry {
                    key: Arc::new(SigningKey {
                        id: record.id,
                        material,
                    }),
                    active_from: record.active_from,
                    created_at: record.created_at,
                    number,
                    retire_at: record.retire_at,
                });
        }
        Ok(loaded)
    }
}

/// Forced reloads (a value naming a key this node does not know) come at most this often, so
/// a flood of made-up key ids cannot turn into a flood of queries.
const FORCED_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

struct Inner {
    /// Whether signed values name their key. Off only for a configured `--jwt-secret`, whose
    /// values stay byte for byte what they were (the gateway and older peers read them).
    tags_key_ids: bool,
    keys: RwLock<Arc<Loaded>>,
    source: Option<Arc<dyn KeySource>>,
    last_forced: Mutex<Option<Instant>>,
    reload_wanted: tokio::sync::Notify,
}

/// Every key of every purpose, shared by a node's signers; cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.snapshot();
        let mut list = f.debug_map();
        for (purpose, entries) in &keys.by_purpose {
            let ids: Vec<&str> = entries.iter().map(|entry| entry.key.id()).collect();
            list.entry(purpose, &ids);
        }
        list.finish()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Keyring {
    fn with(tags_key_ids: bool, loaded: Loaded, source: Option<Arc<dyn KeySource>>) -> Keyring {
        Keyring {
            inner: Arc::new(Inner {
                tags_key_ids,
                keys: RwLock::new(Arc::new(loaded)),
                source,
                last_forced: Mutex::new(None),
                reload_wanted: tokio::sync::Notify::new(),
            }),
        }
    }

    /// One implicit key per purpose from a configured secret, derived as before the keyring,
    /// and values signed without key ids: exactly what a node with `--jwt-secret` always did.
    pub fn from_secret(secret: &SigningSecret) -> Keyring {
        let records = Purpose::ALL
            .into_iter()
            .map(|purpose| legacy_record(purpose, secret.expose().to_vec()))
            .collect();
        // The secret is at least 32 bytes and the id is fixed, so this cannot fail.
        let loaded = Loaded::build(records).unwrap_or_default();
        Keyring::with(false, loaded, None)
    }

    /// A keyring of one purpose holding `material` as is (no derivation), without key ids: the
    /// signers' constructors from a bare key, kept for tests and embedders.
    pub fn single(purpose: Purpose, material: &[u8]) -> Keyring {
        let mut loaded = Loaded::default();
        loaded.by_purpose.insert(
            purpose,
            vec![Entry {
                key: Arc::new(SigningKey {
                    id: FIRST_KEY_ID.to_string(),
                    material: material.to_vec(),
                }),
                active_from: 0,
                created_at: 0,
                number: 1,
                retire_at: None,
            }],
        );
        Keyring::with(false, loaded, None)
    }

    /// A keyring of the given keys that names its keys in what it signs. Every purpose needs at
    /// least one key.
    pub fn from_records(records: Vec<KeyRecord>) -> Result<Keyring, KeyringError> {
        Ok(Keyring::with(true, checked(records)?, None))
    }

    /// Loads the keyring from `source`, which [`Keyring::reload`] reads again.
    pub async fn load(source: Arc<dyn KeySource>) -> Result<Keyring, KeyringError> {
        let loaded = checked(source.load().await?)?;
        Ok(Keyring::with(true, loaded, Some(source)))
    }

    /// Reads the source again; on failure the keys already loaded stay in use.
    pub async fn reload(&self) -> Result<(), KeyringError> {
        let Some(source) = &self.inner.source else {
            return Ok(());
        };
        let loaded = checked(source.load().await?)?;
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Reloads unless a forced reload ran within the last second; true when it reloaded.
    /// For a value naming a key id this node does not know (a peer may have loaded a rotated
    /// key first), before refusing it.
    pub async fn reload_unless_recent(&self) -> bool {
        if self.inner.source.is_none() {
            return false;
        }
        {
            let mut last = self
                .inner
                .last_forced
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < FORCED_RELOAD_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.reload().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "reloading the keyring for an unknown key id failed");
                false
            }
        }
    }

    /// Asks the node's reload task to reload soon, from code that cannot wait for it.
    pub fn request_reload(&self) {
        self.inner.reload_wanted.notify_one();
    }

    /// Resolves when [`Keyring::request_reload`] was called (for the node's reload task).
    pub async fn reload_requested(&self) {
        self.inner.reload_wanted.notified().await;
    }

    pub fn tags_key_ids(&self) -> bool {
        self.inner.tags_key_ids
    }

    fn snapshot(&self) -> Arc<Loaded> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key that signs `purpose` at `now` (Unix ms): the newest that is active and not
    /// retired.
    pub fn current_at(&self, purpose: Purpose, now: i64) -> Option<Arc<SigningKey>> {
        let keys = self.snapshot();
        keys.by_purpose
            .get(&purpose)?
            .iter()
            .filter(|entry| entry.active_from <= now && entry.verifies_at(now))
            .max_by_key(|entry| (entry.active_from, entry.created_at, entry.number))
            .map(|entry| Arc::clone(&entry.key))
    }

    pub fn current(&self, purpose: Purpose) -> Option<Arc<SigningKey>> {
        self.current_at(purpose, now_ms())
    }

    /// The key `id` of `purpose` if it still verifies at `now` (Unix ms), whether or not it
    /// signs yet: a rotated key verifies from the moment a node loads it.
    pub fn verification_key_at(
        &self,
        purpose: Purpose,
        id: &str,
        now: i64,
    ) -> Option<Arc<SigningKey>> {
        let keys = self.snapshot();
        keys.by_purpose
            .get(&purpose)?
            .iter()
            .find(|entry| entry.key.id() == id && entry.verifies_at(now))
            .map(|entry| Arc::clone(&entry.key))
    }

    pub fn verification_key(&self, purpose: Purpose, id: &str) -> Option<Arc<SigningKey>> {
        self.verification_key_at(purpose, id, now_ms())
    }

    /// The ids of `purpose`'s keys that verify at `now`, oldest first.
    pub fn verification_ids_at(&self, purpose: Purpose, now: i64) -> Vec<String> {
        let keys = self.snapshot();
        let mut entries: Vec<&Entry> = keys
            .by_purpose
            .get(&purpose)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|entry| entry.verifies_at(now))
                    .collect()
            })
            .unwrap_or_default();
        entries.sort_by_key(|entry| entry.number);
        entries
            .iter()
            .map(|entry| entry.key.id().to_string())
            .collect()
    }

    /// The keys of one purpose, for that purpose's signer.
    pub fn purpose(&self, purpose: Purpose) -> PurposeKeys {
        PurposeKeys {
            ring: self.clone(),
            purpose,
        }
    }
}

fn legacy_record(purpose: Purpose, root: Vec<u8>) -> KeyRecord {
    KeyRecord {
        purpose,
        id: FIRST_KEY_ID.to_string(),
        root,
        derivation: Derivation::Legacy,
        created_at: 0,
        active_from: 0,
        retire_at: None,
    }
}

fn checked(records: Vec<KeyRecord>) -> Result<Loaded, KeyringError> {
    let loaded = Loaded::build(records)?;
    for purpose in Purpose::ALL {
        if loaded.by_purpose.get(&purpose).is_none_or(Vec::is_empty) {
            return Err(KeyringError::MissingPurpose(purpose));
        }
    }
    Ok(loaded)
}

/// One purpose's keys: what a signer (access tokens, ticket codes, the waiting room, playback)
/// holds.
#[derive(Clone)]
pub struct PurposeKeys {
    ring: Keyring,
    purpose: Purpose,
}

impl fmt::Debug for PurposeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PurposeKeys({})", self.purpose)
    }
}

impl PurposeKeys {
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    pub fn keyring(&self) -> &Keyring {
        &self.ring
    }

    /// Whether signed values carry the key's id (see [`Keyring::from_secret`]).
    pub fn tags_key_ids(&self) -> bool {
        self.ring.tags_key_ids()
    }

    /// The key to sign with now. Never fails: when no key is current (every key of the purpose
    /// retired by hand) it signs with the newest it has and logs, so what it signs is refused
    /// everywhere rather than the node stopping.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        if let Some(key) = self.ring.current(self.purpose) {
            return key;
        }
        tracing::error!(purpose = %self.purpose, "no current signing key; signing with the newest");
        let keys = self.ring.snapshot();
        keys.by_purpose
            .get(&self.purpose)
            .and_then(|entries| entries.iter().max_by_key(|entry| entry.number))
            .map(|entry| Arc::clone(&entry.key))
            .unwrap_or_else(|| {
                // Only a keyring built for other purposes gets here: a throwaway key, so that
                // nothing it signs verifies anywhere.
                Arc::new(SigningKey {
                    id: "k0".to_string(),
                    material: generate_root(),
                })
            })
    }

    /// The key named `id`, if it verifies now.
    pub fn get(&self, id: &str) -> Option<Arc<SigningKey>> {
        self.ring.verification_key(self.purpose, id)
    }

    /// The key of values signed without a key id (before the keyring, or under a configured
    /// secret): always the purpose's first key.
    pub fn unnamed(&self) -> Option<Arc<SigningKey>> {
        self.get(FIRST_KEY_ID)
    }

    /// The key named `id`, reloading once (rate-limited) if it is not known here yet.
    pub async fn get_reloading(&self, id: &str) -> Option<Arc<SigningKey>> {
        if let Some(key) = self.get(id) {
            return Some(key);
        }
        if self.ring.reload_unless_recent().await {
            return self.get(id);
        }
        None
    }

    /// A key id was not known: ask the node to reload soon (for code that cannot wait).
    pub fn unknown_key_seen(&self) {
        self.ring.request_reload();
    }
}

/// Whether `id` could name a key (`k` and digits), before looking it up.
pub fn is_key_id(id: &str) -> bool {
    key_number(id).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(purpose: Purpose, id: &str, active_from: i64, retire_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            purpose,
            id: id.to_string(),
            root: generate_root(),
            derivation: Derivation::HkdfSha256,
            created_at: active_from,
            active_from,
            retire_at,
        }
    }

    fn bootstrap(root: &[u8]) -> Vec<KeyRecord> {
        Purpose::ALL
            .into_iter()
            .map(|purpose| KeyRecord {
                root: root.to_vec(),
                ..record(purpose, "k1", 0, None)
            })
            .collect()
    }

    #[test]
    fn the_current_key_is_the_newest_active_one_and_pending_keys_already_verify() {
        let mut records = bootstrap(&generate_root());
        records.push(record(Purpose::AccessTokens, "k2", 1_000, None));
        let ring = Keyring::from_records(records).expect("ring");
        // Before k2's activation: k1 signs, both verify.
        let current = ring
            .current_at(Purpose::AccessTokens, 999)
            .expect("current");
        assert_eq!(current.id(), "k1");
        assert!(ring
            .verification_key_at(Purpose::AccessTokens, "k2", 999)
            .is_some());
        assert_eq!(
            ring.verification_ids_at(Purpose::AccessTokens, 999),
            vec!["k1", "k2"]
        );
        // From it on, k2 signs.
        let current = ring
            .current_at(Purpose::AccessTokens, 1_000)
            .expect("current");
        assert_eq!(current.id(), "k2");
    }

    #[test]
    fn retired_keys_neither_sign_nor_verify() {
        let mut records = bootstrap(&generate_root());
        records.retain(|record| record.purpose != Purpose::Playback);
        records.push(record(Purpose::Playback, "k1", 0, Some(5_000)));
        records.push(record(Purpose::Playback, "k2", 100, None));
        let ring = Keyring::from_records(records).expect("ring");
        assert!(ring
            .verification_key_at(Purpose::Playback, "k1", 4_999)
            .is_some());
        assert!(ring
            .verification_key_at(Purpose::Playback, "k1", 5_000)
            .is_none());
        assert_eq!(
            ring.verification_ids_at(Purpose::Playback, 5_000),
            vec!["k2"]
        );
        // A retired key stops signing even if it were the newest active one.
        let mut records = bootstrap(&generate_root());
        records.retain(|record| record.purpose != Purpose::Playback);
        records.push(record(Purpose::Playback, "k1", 0, None));
        records.push(record(Purpose::Playback, "k2", 10, Some(20)));
        let ring = Keyring::from_records(records).expect("ring");
        assert_eq!(
            ring.current_at(Purpose::Playback, 15).expect("k2").id(),
            "k2"
        );
        assert_eq!(
            ring.current_at(Purpose::Playback, 20).expect("k1").id(),
            "k1"
        );
    }

    #[test]
    fn purposes_get_separate_keys_and_rotating_one_leaves_the_others() {
        let root = generate_root();
        let ring = Keyring::from_records(bootstrap(&root)).expect("ring");
        let materials: Vec<Vec<u8>> = Purpose::ALL
            .into_iter()
            .map(|purpose| {
                ring.current_at(purpose, 0)
                    .expect("key")
                    .material()
                    .to_vec()
            })
            .collect();
        for (index, material) in materials.iter().enumerate() {
            assert_ne!(material.as_slice(), root.as_slice());
            for other in &materials[index + 1..] {
                assert_ne!(material, other, "two purposes share a key");
            }
        }
        let ticket_before = ring.current_at(Purpose::TicketCodes, 0).expect("key");

        let mut records = bootstrap(&root);
        records.push(record(Purpose::AccessTokens, "k2", 10, None));
        for record in &mut records {
            if record.purpose == Purpose::AccessTokens && record.id == "k1" {
                record.retire_at = Some(1_000);
            }
        }
        let rotated = Keyring::from_records(records).expect("ring");
        let ticket_after = rotated
            .current_at(Purpose::TicketCodes, 2_000)
            .expect("key");
        assert_eq!(ticket_after.id(), "k1");
        assert_eq!(ticket_after.material(), ticket_before.material());
        assert_eq!(
            rotated
                .current_at(Purpose::AccessTokens, 2_000)
                .expect("key")
                .id(),
            "k2"
        );
    }

    #[test]
    fn legacy_keys_derive_as_before_the_keyring() {
        let secret = SigningSecret::new(vec![9; 40]).expect("secret");
        let ring = Keyring::from_secret(&secret);
        assert!(!ring.tags_key_ids());
        let access = ring.current(Purpose::AccessTokens).expect("key");
        assert_eq!(access.material(), secret.expose());
        let ticket = ring.current(Purpose::TicketCodes).expect("key");
        let mut hasher = Sha256::new();
        hasher.update(b"marquee ticket codes v1\0");
        hasher.update(secret.expose());
        assert_eq!(ticket.material(), hasher.finalize().as_slice());
        assert_eq!(
            ring.current(Purpose::QueuePasses).expect("key").material(),
            secret.expose()
        );
    }

    #[test]
    fn bad_records_and_incomplete_rings_are_refused() {
        let mut records = bootstrap(&generate_root());
        records.push(record(Purpose::Playback, "key-2", 0, None));
        assert_eq!(
            Keyring::from_records(records).map(|_| ()),
            Err(KeyringError::BadKeyId("key-2".into()))
        );
        let mut records = bootstrap(&generate_root());
        records.retain(|record| record.purpose != Purpose::QueuePasses);
        assert_eq!(
            Keyring::from_records(records).map(|_| ()),
            Err(KeyringError::MissingPurpose(Purpose::QueuePasses))
        );
        let mut records = bootstrap(&[1; 16]);
        records.truncate(4);
        assert!(matches!(
            Keyring::from_records(records),
            Err(KeyringError::WeakRoot { .. })
        ));
    }

    #[test]
    fn key_ids_count_up_and_debug_shows_no_secret() {
        assert_eq!(next_key_id(["k1", "k3", "k2"]), "k4");
        assert_eq!(next_key_id([]), "k1");
        assert!(is_key_id("k12") && !is_key_id("k") && !is_key_id("x1") && !is_key_id("k1.2"));
        let record = record(Purpose::Playback, "k1", 0, None);
        let shown = format!("{record:?}");
        assert!(!shown.contains(&format!("{:?}", record.root)));
        assert!(shown.contains("***"));
        let ring = Keyring::from_records(bootstrap(&generate_root())).expect("ring");
        let key = ring.current(Purpose::Playback).expect("key");
        assert_eq!(format!("{key:?}"), "SigningKey(k1, ***)");
    }

    struct Shared(std::sync::Mutex<Vec<KeyRecord>>);

    #[async_trait::async_trait]
    impl KeySource for Shared {
        async fn load(&self) -> Result<Vec<KeyRecord>, KeyringError> {
            Ok(self
                .0
                .lock()
                .map_err(|_| KeyringError::Source("poisoned".into()))?
                .clone())
        }
    }

    #[tokio::test]
    async fn an_unknown_key_id_reloads_once_then_is_rate_limited() {
        let source = Arc::new(Shared(std::sync::Mutex::new(bootstrap(&generate_root()))));
        let ring = Keyring::load(source.clone()).await.expect("ring");
        let keys = ring.purpose(Purpose::AccessTokens);
        assert!(keys.get("k2").is_none());
        source
            .0
            .lock()
            .expect("lock")
            .push(record(Purpose::AccessTokens, "k2", i64::MAX, None));
        assert!(keys.get_reloading("k2").await.is_some(), "reloaded for k2");
        source
            .0
            .lock()
            .expect("lock")
            .push(record(Purpose::AccessTokens, "k3", i64::MAX, None));
        assert!(
            keys.get_reloading("k3").await.is_none(),
            "a second forced reload within a second is skipped"
        );
        ring.reload().await.expect("reload");
        assert!(keys.get("k3").is_some());
    }
}
