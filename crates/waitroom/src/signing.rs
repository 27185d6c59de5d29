//! Queue tokens and passes: stateless, signed, compact.
//!
//! A **token** is `base64url(event ‖ seq ‖ mac₁₂)` (48 characters): the event's ULID, the place's
//! join number, and 96 bits of HMAC-SHA256 over both. It is the place's name, its push channel and
//! its only credential, so it must not be guessable (2^-96 per guess) and it is checked before
//! any lookup: a forged token costs one HMAC and no storage access.
//!
//! A **pass** is `wp1.` + `base64url(event ‖ user ‖ seq ‖ expires ‖ mac₁₆)`. The bindings are in
//! the signed bytes, so a pass of another event, another account or an earlier time is refused
//! without storage; the room then confirms that the place still holds that admission (a fan who
//! left has their pass revoked).
//!
//! Both keys derive from the node's signing secret with a label each, so no other signed value
//! (access tokens, ticket codes) can be replayed as one of these.

use crate::{PassRefusal, WaitroomError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use ulid::Ulid;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_BYTES: usize = 16 + 8 + 12;
const PASS_BYTES: usize = 16 + 16 + 8 + 8 + 16;
const PASS_PREFIX: &str = "wp1.";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality: the compared bytes are the secret part.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a verified pass says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassClaims {
    pub event: Ulid,
    pub user: Ulid,
    pub seq: u64,
    pub expires_at: u64,
}

#[derive(Clone)]
pub struct RoomSigner {
    token_key: [u8; 32],
    pass_key: [u8; 32],
}

impl std::fmt::Debug for RoomSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSigner(***)")
    }
}

impl RoomSigner {
    /// Derives the keys from the node's signing secret (the same on every node).
    pub fn new(secret: &[u8]) -> RoomSigner {
        RoomSigner {
            token_key: hmac(secret, &[b"marquee-waitroom-token-v1"]),
            pass_key: hmac(secret, &[b"marquee-waitroom-pass-v1"]),
        }
    }

    pub fn token(&self, event: Ulid, seq: u64) -> String {
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..16].copy_from_slice(&event.0.to_be_bytes());
        bytes[16..24].copy_from_slice(&seq.to_be_bytes());
        let mac = hmac(&self.token_key, &[&bytes[..24]]);
        bytes[24..].copy_from_slice(&mac[..12]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The event and join number a token names, if we signed it.
    pub fn parse_token(&self, token: &str) -> Result<(Ulid, u64), WaitroomError> {
        if token.len() != TOKEN_BYTES.div_ceil(3) * 4 {
            return Err(WaitroomError::MalformedToken);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| WaitroomError::MalformedToken)?;
        let bytes: [u8; TOKEN_BYTES] = bytes
            .try_into()
            .map_err(|_| WaitroomError::MalformedToken)?;
        let mac = hmac(&self.token_key, &[&bytes[..24]]);
        if !same(&mac[..12], &bytes[24..]) {
            return Err(WaitroomError::UnknownToken);
        }
        let event = Ulid(u128::from_be_bytes(array(&bytes[..16])));
        let seq = u64::from_be_bytes(array(&bytes[16..24]));
        Ok((event, seq))
    }

    pub fn pass(&self, claims: &PassClaims) -> String {
        let mut bytes = [0u8; PASS_BYTES];
        bytes[..16].copy_from_slice(&claims.event.0.to_be_bytes());
        bytes[16..32].copy_from_slice(&claims.user.0.to_be_bytes());
        bytes[32..40].copy_from_slice(&claims.seq.to_be_bytes());
        bytes[40..48].copy_from_slice(&claims.expires_at.to_be_bytes());
        let mac = hmac(&self.pass_key, &[&bytes[..48]]);
        bytes[48..].copy_from_slice(&mac[..16]);
        format!("{PASS_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The claims of a pass we signed. Expiry and bindings are the caller's to check.
    pub fn parse_pass(&self, pass: &str) -> Result<PassClaims, PassRefusal> {
        let body = pass
            .trim()
            .strip_prefix(PASS_PREFIX)
            .ok_or(PassRefusal::Malformed)?;
        if body.len() != PASS_BYTES.div_ceil(3) * 4 - 2 {
            return Err(PassRefusal::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PassRefusal::Malformed)?;
        let bytes: [u8; PASS_BYTES] = bytes.try_into().map_err(|_| PassRefusal::Malformed)?;
        let mac = hmac(&self.pass_key, &[&bytes[..48]]);
        if !same(&mac[..16], &bytes[48..]) {
            return Err(PassRefusal::Forged);
        }
        Ok(PassClaims {
            event: Ulid(u128::from_be_bytes(array(&bytes[..16]))),
            user: Ulid(u128::from_be_bytes(array(&bytes[16..32]))),
            seq: u64::from_be_bytes(array(&bytes[32..40])),
            expires_at: u64::from_be_bytes(array(&bytes[40..48])),
        })
    }

    /// Verifies a pass for `event` and `user` at `now` (everything but revocation).
    pub fn verify_pass(
        &self,
        pass: &str,
        event: Ulid,
        user: Ulid,
        now: u64,
    ) -> Result<PassClaims, PassRefusal> {
        let claims = self.parse_pass(pass)?;
        if claims.event != event {
            return Err(PassRefusal::OtherEvent);
        }
        if claims.user != user {
            return Err(PassRefusal::OtherUser);
        }
        if claims.expires_at <= now {
            return Err(PassRefusal::Expired);
        }
        Ok(claims)
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// A fan's draw in a room's random order: 52 bits (exact in a Redis score) of
/// `HMAC-SHA256(room secret, user)`.
pub(crate) fn order_key(room_secret: &[u8], user: Ulid) -> u64 {
    let mac = hmac(room_secret, &[&user.0.to_be_bytes()]);
    u64::from_be_bytes(array(&mac[..8])) >> 12
}

/// Scores at or above this are first-come places; below it, pre-queue draws.
pub(crate) const FIFO_BASE: u64 = 1 << 52;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let signer = RoomSigner::new(b"0123456789abcdef0123456789abcdef");
        let event = Ulid::new();
        let token = signer.token(event, 42);
        assert_eq!(token.len(), 48);
        assert_eq!(signer.parse_token(&token), Ok((event, 42)));
        let other = RoomSigner::new(b"another secret of thirty-two bytes");
        assert_eq!(other.parse_token(&token), Err(WaitroomError::UnknownToken));
        let mut tampered = token.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(
            signer.parse_token(&tampered),
            Err(WaitroomError::UnknownToken)
        );
        assert_eq!(
            signer.parse_token("short"),
            Err(WaitroomError::MalformedToken)
        );
        assert_eq!(
            signer.parse_token(&"!".repeat(48)),
            Err(WaitroomError::MalformedToken)
        );
    }

    #[test]
    fn passes_bind_event_user_and_time() {
        let signer = RoomSigner::new(b"0123456789abcdef0123456789abcdef");
        let claims = PassClaims {
            event: Ulid::new(),
            user: Ulid::new(),
            seq: 7,
            expires_at: 10_000,
        };
        let pass = signer.pass(&claims);
        assert_eq!(
            signer.verify_pass(&pass, claims.event, claims.user, 9_999),
            Ok(claims)
        );
        assert_eq!(
            signer.verify_pass(&pass, claims.event, claims.user, 10_000),
            Err(PassRefusal::Expired)
        );
        assert_eq!(
            signer.verify_pass(&pass, Ulid::new(), claims.user, 0),
            Err(PassRefusal::OtherEvent)
        );
        assert_eq!(
            signer.verify_pass(&pass, claims.event, Ulid::new(), 0),
            Err(PassRefusal::OtherUser)
        );
        let forged = signer.pass(&PassClaims {
            expires_at: u64::MAX,
            ..claims
        });
        let spliced = format!("{}{}", &forged[..60], &pass[60..]);
        assert_eq!(
            signer.verify_pass(&spliced, claims.event, claims.user, 0),
            Err(PassRefusal::Forged)
        );
        assert_eq!(
            signer.parse_pass("wp1.nonsense"),
            Err(PassRefusal::Malformed)
        );
        assert_eq!(signer.parse_pass(""), Err(PassRefusal::Malformed));
    }

    #[test]
    fn order_keys_fit_a_redis_score() {
        let secret = [7u8; 32];
        for _ in 0..1000 {
            assert!(order_key(&secret, Ulid::new()) < FIFO_BASE);
        }
    }
}
