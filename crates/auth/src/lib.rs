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

pub mod keyring;
mod password;
mod token;

pub use keyring::{
    Derivation, KeyRecord, KeySource, Keyring, KeyringError, Purpose, PurposeKeys, SigningKey,
};
pub use password::{hash_password, verify_password, PasswordError};
pub use token::{AccessClaims, SigningSecret, TokenError, TokenIssuer};
