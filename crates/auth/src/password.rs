//! argon2id password hashing, off the async runtime.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use marquee_domain::Password;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the hashing task was cancelled")]
    Cancelled,
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub async fn hash_password(password: Password) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(password.expose()))
        .await
        .map_err(|_| PasswordError::Cancelled)?
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Hashing(error.to_string()))
}

/// True when `candidate` matches `stored_hash`. With no stored hash (unknown account) it checks
/// against a dummy hash and answers false, taking the same time as a real check.
pub async fn verify_password(
    stored_hash: Option<String>,
    candidate: String,
) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let (hash, known) = match stored_hash {
            Some(hash) => (hash, true),
            None => (dummy_hash()?.to_string(), false),
        };
        let parsed =
            PasswordHash::new(&hash).map_err(|error| PasswordError::Hashing(error.to_string()))?;
        let matches = Argon2::default()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(|_| PasswordError::Cancelled)?
}

fn dummy_hash() -> Result<&'static str, PasswordError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_blocking("not a real password, only a timing equaliser")?;
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let password = Password::parse("correct horse battery".into()).expect("valid");
        let hash = hash_password(password).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password(Some(hash.clone()), "correct horse battery".into())
                .await
                .expect("verify")
        );
        assert!(!verify_password(Some(hash), "wrong horse battery".into())
            .await
            .expect("verify"));
        assert!(!verify_password(None, "anything at all".into())
            .await
            .expect("verify"));
    }
}
