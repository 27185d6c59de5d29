//! argon2id password hashing, off the async runtime, at most a few at once.
//!
//! One argon2id hash is ~19 MiB of memory and tens of milliseconds of a core. Unbounded, a
//! burst of sign-ins queues as many on the blocking pool (512 threads): gigabytes of memory and
//! every core busy hashing. A semaphore sized to the cores (or [`set_hashing_concurrency`])
//! admits that many at once; the rest wait their turn in order, so the work is bounded
//! whatever arrives (the API throttles sign-ins per IP and per account in front of this).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use marquee_domain::Password;
use std::sync::OnceLock;
use tokio::sync::Semaphore;

static HASHING: OnceLock<Semaphore> = OnceLock::new();

/// Sets how many hashes may be computed at once (0: one per core). Takes effect only before
/// the first hash; returns false when it came too late (a node sets it at start-up).
pub fn set_hashing_concurrency(permits: usize) -> bool {
    let mut set = false;
    HASHING.get_or_init(|| {
        set = true;
        Semaphore::new(permits_or_cores(permits))
    });
    set
}

fn permits_or_cores(permits: usize) -> usize {
    if permits > 0 {
        return permits;
    }
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Runs one hashing job on the blocking pool once a permit is free.
async fn hashing<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let semaphore = HASHING.get_or_init(|| Semaphore::new(permits_or_cores(0)));
    // The semaphore is never closed, so acquiring fails only in theory.
    let _permit = semaphore
        .acquire()
        .await
        .map_err(|_| PasswordError::Cancelled)?;
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|_| PasswordError::Cancelled)?
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the hashing task was cancelled")]
    Cancelled,
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub async fn hash_password(password: Password) -> Result<String, PasswordError> {
    hashing(move || hash_blocking(password.expose())).await
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
    hashing(move || {
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
    async fn hashes_beyond_the_permits_wait_their_turn() {
        // Another test may have made the semaphore first (one permit per core then).
        let total = if set_hashing_concurrency(1) {
            1
        } else {
            permits_or_cores(0)
        };
        let semaphore = HASHING.get().expect("configured");
        let held = semaphore
            .acquire_many(u32::try_from(total).expect("few cores"))
            .await
            .expect("permits");
        let password = Password::parse("correct horse battery".into()).expect("valid");
        let waiting = tokio::spawn(hash_password(password));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "no permit, no hashing");
        drop(held);
        assert!(waiting.await.expect("joined").is_ok());
    }

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
