//! JWT access tokens: HS256 only, with our issuer and an expiry, signed by the keyring's
//! `access-tokens` key named in the header's `kid`.

use crate::keyring::{Keyring, Purpose, PurposeKeys};
use chrono::Utc;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use marquee_domain::{Role, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

const ISSUER: &str = "marquee";

/// The key that signs tokens. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub const MIN_BYTES: usize = 32;

    pub fn new(bytes: Vec<u8>) -> Result<SigningSecret, TokenError> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(TokenError::WeakSecret);
        }
        Ok(SigningSecret(bytes))
    }

    /// A fresh random secret, for a data dir that has none yet.
    pub fn generate() -> SigningSecret {
        use rand::RngCore;
        let mut bytes = vec![0u8; 48];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SigningSecret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    #[error("the signing secret must be at least 32 bytes")]
    WeakSecret,
    #[error("the token could not be signed")]
    Signing,
    /// Signed by a key this node does not know (or no longer accepts).
    #[error("the token names an unknown signing key")]
    UnknownKey,
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

impl AccessClaims {
    pub fn user_id(&self) -> UserId {
        UserId::from_string(self.sub.clone())
    }
}

/// Issues and verifies access tokens with the keyring's `access-tokens` keys.
#[derive(Clone)]
pub struct TokenIssuer {
    keys: PurposeKeys,
    validation: Validation,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer(***)")
    }
}

impl TokenIssuer {
    /// One secret, used as the HS256 key as is, and tokens without a `kid`: what the gateway
    /// and every `--jwt-secret` node verify.
    pub fn new(secret: &SigningSecret, lifetime: Duration) -> TokenIssuer {
        TokenIssuer::from_keyring(&Keyring::from_secret(secret), lifetime)
    }

    pub fn from_keyring(keyring: &Keyring, lifetime: Duration) -> TokenIssuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        TokenIssuer {
            keys: keyring.purpose(Purpose::AccessTokens),
            validation,
            lifetime,
        }
    }

    pub fn keyring(&self) -> &Keyring {
        self.keys.keyring()
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn issue(&self, user: &UserId, role: Role) -> Result<String, TokenError> {
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        self.issue_at(user, role, Utc::now().timestamp(), lifetime)
    }

    /// Issues a token as if at `issued_at` (Unix seconds) valid for `lifetime_secs`; tests use
    /// it to make tokens that have already expired.
    pub fn issue_at(
        &self,
        user: &UserId,
        role: Role,
        issued_at: i64,
        lifetime_secs: i64,
    ) -> Result<String, TokenError> {
        let claims = AccessClaims {
            sub: user.to_string(),
            role,
            iss: ISSUER.to_string(),
            iat: issued_at,
            exp: issued_at.saturating_add(lifetime_secs),
        };
        let key = self.keys.signing_key();
        let mut header = Header::new(Algorithm::HS256);
        if self.keys.tags_key_ids() {
            header.kid = Some(key.id().to_string());
        }
        encode(&header, &claims, &EncodingKey::from_secret(key.material()))
            .map_err(|_| TokenError::Signing)
    }

    /// Verifies with the key the header's `kid` names (a token without one is from before the
    /// keyring, or from a `--jwt-secret` node: the first key). Never tries other keys.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = decode_header(token).map_err(|_| TokenError::Invalid)?.kid;
        let key = match kid {
            Some(kid) => self.keys.get(&kid).ok_or_else(|| {
                self.keys.unknown_key_seen();
                TokenError::UnknownKey
            })?,
            None => self.keys.unnamed().ok_or(TokenError::Invalid)?,
        };
        self.verify_with(token, key.material())
    }

    /// [`TokenIssuer::verify`], but a `kid` this node does not know yet reloads the keyring
    /// once (rate-limited) before the token is refused.
    pub async fn verify_reloading(&self, token: &str) -> Result<AccessClaims, TokenError> {
        match self.verify(token) {
            Err(TokenError::UnknownKey) => {
                let kid = decode_header(token)
                    .map_err(|_| TokenError::Invalid)?
                    .kid
                    .ok_or(TokenError::Invalid)?;
                match self.keys.get_reloading(&kid).await {
                    Some(key) => self.verify_with(token, key.material()),
                    None => Err(TokenError::UnknownKey),
                }
            }
            other => other,
        }
    }

    fn verify_with(&self, token: &str, key: &[u8]) -> Result<AccessClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<AccessClaims>(token, &DecodingKey::from_secret(key), &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_segment(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&SigningSecret::generate(), Duration::from_secs(3600))
    }

    #[test]
    fn a_token_round_trips() {
        let issuer = issuer();
        let user = UserId::generate();
        let token = issuer.issue(&user, Role::Organizer).expect("issue");
        let claims = issuer.verify(&token).expect("verify");
        assert_eq!(claims.user_id(), user);
        assert_eq!(claims.role, Role::Organizer);
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let issuer = issuer();
        let user = UserId::generate();
        let expired = issuer
            .issue_at(&user, Role::Fan, Utc::now().timestamp() - 7200, 3600)
            .expect("issue");
        assert_eq!(issuer.verify(&expired), Err(TokenError::Expired));

        let foreign = super::TokenIssuer::new(&SigningSecret::generate(), Duration::from_secs(60))
            .issue(&user, Role::Admin)
            .expect("issue");
        assert_eq!(issuer.verify(&foreign), Err(TokenError::Invalid));

        // An unsigned token that claims admin must never pass.
        let header = encode_segment(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = encode_segment(
            format!(
                r#"{{"sub":"{user}","role":"admin","iss":"marquee","iat":0,"exp":{}}}"#,
                Utc::now().timestamp() + 3600
            )
            .as_bytes(),
        );
        assert_eq!(
            issuer.verify(&format!("{header}.{payload}.")),
            Err(TokenError::Invalid)
        );

        // Re-signing with the role changed but the old signature kept fails too.
        let token = issuer.issue(&user, Role::Fan).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let tampered_payload = encode_segment(
            format!(
                r#"{{"sub":"{user}","role":"admin","iss":"marquee","iat":0,"exp":{}}}"#,
                Utc::now().timestamp() + 3600
            )
            .as_bytes(),
        );
        let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
        assert_eq!(issuer.verify(&tampered), Err(TokenError::Invalid));
    }

    #[test]
    fn keyring_tokens_name_their_key_and_verify_by_it() {
        use crate::keyring::{generate_root, Derivation, KeyRecord};
        let root = generate_root();
        let record = |purpose, id: &str, root: &[u8], active_from| KeyRecord {
            purpose,
            id: id.to_string(),
            root: root.to_vec(),
            derivation: Derivation::HkdfSha256,
            created_at: 0,
            active_from,
            retire_at: None,
        };
        let mut records: Vec<KeyRecord> = Purpose::ALL
            .into_iter()
            .map(|purpose| record(purpose, "k1", &root, 0))
            .collect();
        let before = Keyring::from_records(records.clone()).expect("ring");
        let old = TokenIssuer::from_keyring(&before, Duration::from_secs(60))
            .issue(&UserId::generate(), Role::Fan)
            .expect("issue");
        assert_eq!(
            decode_header(&old).expect("header").kid.as_deref(),
            Some("k1")
        );
        records.push(record(Purpose::AccessTokens, "k2", &generate_root(), 0));
        let after = TokenIssuer::from_keyring(
            &Keyring::from_records(records).expect("ring"),
            Duration::from_secs(60),
        );
        let new = after.issue(&UserId::generate(), Role::Fan).expect("issue");
        assert_eq!(
            decode_header(&new).expect("header").kid.as_deref(),
            Some("k2")
        );
        assert!(
            after.verify(&old).is_ok(),
            "a token of the previous key verifies"
        );
        assert!(after.verify(&new).is_ok());
        assert_eq!(
            TokenIssuer::from_keyring(&before, Duration::from_secs(60)).verify(&new),
            Err(TokenError::UnknownKey)
        );
        // A token from a configured secret (no kid) is not accepted by another ring's k1.
        assert_eq!(
            after.verify(
                &issuer()
                    .issue(&UserId::generate(), Role::Fan)
                    .expect("issue")
            ),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            SigningSecret::new(vec![7; 16]).map(|_| ()),
            Err(TokenError::WeakSecret)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_verify_or_panic(input in ".{0,400}") {
            prop_assert!(issuer().verify(&input).is_err());
        }
    }
}
