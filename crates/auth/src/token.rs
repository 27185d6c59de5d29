//! JWT access tokens: HS256 only, with our issuer and an expiry.

use chrono::Utc;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// Issues and verifies access tokens with one secret.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

impl TokenIssuer {
    pub fn new(secret: &SigningSecret, lifetime: Duration) -> TokenIssuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        TokenIssuer {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            lifetime,
        }
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
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<AccessClaims>(token, &self.decoding, &self.validation)
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
