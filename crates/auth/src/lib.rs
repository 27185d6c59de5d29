//! Credentials and access tokens.
//!
//! - **Passwords** are hashed with argon2id (the `argon2` crate's defaults, which follow the OWASP
//!   recommendation of 19 MiB memory, 2 passes). Hashing is deliberately slow, so it runs on the
//!   blocking pool, never on the async runtime. Login for an unknown email still verifies against a
//!   fixed dummy hash, so response time does not reveal which emails have accounts.
//! - **Access tokens** are JWTs signed with HMAC-SHA256 over a secret of at least 32 bytes. The
//!   verifier accepts HS256 only (a pinned algorithm: a token claiming `none` or RS256 is
//!   refused), requires `exp`, `iat`, `sub` and our issuer, and allows no clock leeway beyond
//!   a few seconds.
//! - **The keyring** ([`Keyring`]) holds every signing key of a cluster, by purpose
//!   (`access-tokens`, `ticket-codes`, `queue-passes` for waiting-room tokens and passes,
//!   `playback`) and id (`k1`, `k2`, …). Each key has its own random root; the bytes a purpose
//!   signs with are HKDF-SHA256 of that root with the purpose's name as `info`, so purposes
//!   never share a key and rotating one (access tokens, say) never touches another (sold ticket
//!   codes). A node keeps the keyring in its catalog database (table `signing_keys`, SQLite or
//!   PostgreSQL alike), reloads it every 15 s and, on a value naming a key id it does not know,
//!   once more (at most once a second) before refusing it.
//!   - *Signing and verifying.* The current key of a purpose is the newest whose `active_from`
//!     has passed and that is not retired; every key not past its `retire_at` verifies, including
//!     one not active yet. Rotation (`marquee keys rotate`) adds a key active only after a
//!     propagation delay (60 s, longer than the reload), so every node verifies it before any
//!     node signs with it, and retires the purpose's previous keys after a grace period —
//!     except ticket codes', which are never retired: a sold ticket must always check in.
//!   - *Key ids in what is signed.* JWT header `kid`; ticket codes `{ticket}.{kid}.{sig}`;
//!     waiting-room tokens `{kid}_{token}` and passes `wp2.{kid}.{pass}`; playback tokens
//!     `{viewer}.{expires}.{kid}.{mac}` (the kid is under the MAC in the last three). Verification
//!     looks the key up by id; it never tries keys in turn. Values without a kid (signed before
//!     the keyring) verify under the purpose's first key, `k1`.
//!   - *Bootstrap.* The first node to start inserts `k1` of each purpose with
//!     `ON CONFLICT DO NOTHING` and every node loads what won, so nodes starting at once agree
//!     and no node invents a key its peers do not know. When a single node had a root from before
//!     the keyring (its `<data_dir>/jwt-secret`), `k1` is derived from it exactly as keys were before ([`Derivation::Legacy`]), so tokens, codes and
//!     passes already out keep verifying; otherwise each `k1` gets a fresh root and HKDF.
//!   - *A configured secret* (`--jwt-secret`, which the gateway and tests use) bypasses the
//!     keyring: one implicit key per purpose derived from it as before, and nothing signed
//!     names a key — byte for byte what such nodes always signed ([`Keyring::from_secret`]).

pub mod keyring;
mod password;
mod token;

pub use keyring::{
    Derivation, KeyRecord, KeySource, Keyring, KeyringError, Purpose, PurposeKeys, SigningKey,
};
pub use password::{hash_password, set_hashing_concurrency, verify_password, PasswordError};
pub use token::{AccessClaims, SigningSecret, TokenError, TokenIssuer};
