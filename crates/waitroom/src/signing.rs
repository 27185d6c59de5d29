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
//! Both keys derive with a label each from the keyring's `queue-passes` key, so no other signed
//! value (access tokens, ticket codes) can be replayed as one of these.
//!
//! **Key ids.** A keyring node names the key: a token is `{kid}_` + the 48 characters above
//! (`_`, not `.`, because the token is also a push channel's name, which allows letters, digits,
//! `-` and `_`; the kid is `k` and digits, so the first `_` ends it) and a pass is
//! `wp2.{kid}.` + the base64 above. In both the MAC also covers the kid. Unprefixed 48-character
//! tokens and `wp1.` passes (signed before the keyring, or by a node with a configured secret,
//! which still signs them) verify under the purpose's first key, `k1`. Tokens and passes live
//! for one sale's queue, so rotating this purpose with a grace of a day leaves every place valid.

use crate::{PassRefusal, WaitroomError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use marquee_auth::{Keyring, Purpose, PurposeKeys};
use sha2::Sha256;
use ulid::Ulid;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_BYTES: usize = 16 + 8 + 12;
const PASS_BYTES: usize = 16 + 16 + 8 + 8 + 16;
const PASS_PREFIX: &str = "wp1.";
const PASS_PREFIX_V2: &str = "wp2.";
const TOKEN_CHARS: usize = TOKEN_BYTES.div_ceil(3) * 4;

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
    keys: PurposeKeys,
}

/// A `queue-passes` key's two keys, and its id when values name it.
struct RoomKeys {
    kid: Option<String>,
    token_key: [u8; 32],
    pass_key: [u8; 32],
}

impl RoomKeys {
    fn derive(material: &[u8], kid: Option<String>) -> RoomKeys {
        RoomKeys {
            kid,
            token_key: hmac(material, &[b"marquee-waitroom-token-v1"]),
            pass_key: hmac(material, &[b"marquee-waitroom-pass-v1"]),
        }
    }

    /// What the MAC covers before the value itself: nothing for unnamed values (as before the
    /// keyring), else the kid and a separator.
    fn kid_prefix(&self) -> Vec<u8> {
        match &self.kid {
            Some(kid) => [kid.as_bytes(), b"\0"].concat(),
            None => Vec::new(),
        }
    }
}

impl std::fmt::Debug for RoomSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSigner(***)")
    }
}

impl RoomSigner {
    /// Derives the keys from one secret, used for values without key ids (as before the
    /// keyring, and under a configured secret).
    pub fn new(secret: &[u8]) -> RoomSigner {
        RoomSigner::from_keyring(&Keyring::single(Purpose::QueuePasses, secret))
    }

    pub fn from_keyring(keyring: &Keyring) -> RoomSigner {
        RoomSigner {
            keys: keyring.purpose(Purpose::QueuePasses),
        }
    }

    fn signing(&self) -> RoomKeys {
        let key = self.keys.signing_key();
        let kid = self.keys.tags_key_ids().then(|| key.id().to_string());
        RoomKeys::derive(key.material(), kid)
    }

    /// The keys a value names (`None`: an unnamed value, under the first key).
    fn named(&self, kid: Option<&str>) -> Option<RoomKeys> {
        match kid {
            Some(kid) => match self.keys.get(kid) {
                Some(key) => Some(RoomKeys::derive(key.material(), Some(kid.to_string()))),
                None => {
                    self.keys.unknown_key_seen();
                    None
                }
            },
            None => self
                .keys
                .unnamed()
                .map(|key| RoomKeys::derive(key.material(), None)),
        }
    }

    pub fn token(&self, event: Ulid, seq: u64) -> String {
        let keys = self.signing();
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..16].copy_from_slice(&event.0.to_be_bytes());
        bytes[16..24].copy_from_slice(&seq.to_be_bytes());
        let mac = hmac(
            &keys.token_key,
            &[keys.kid_prefix().as_slice(), &bytes[..24]],
        );
        bytes[24..].copy_from_slice(&mac[..12]);
        match &keys.kid {
            Some(kid) => format!("{kid}_{}", URL_SAFE_NO_PAD.encode(bytes)),
            None => URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    /// The event and join number a token names, if we signed it.
    pub fn parse_token(&self, token: &str) -> Result<(Ulid, u64), WaitroomError> {
        let (kid, body) = if token.len() == TOKEN_CHARS {
            (None, token)
        } else {
            let (kid, body) = token.split_once('_').ok_or(WaitroomError::MalformedToken)?;
            if !marquee_auth::keyring::is_key_id(kid) || body.len() != TOKEN_CHARS {
                return Err(WaitroomError::MalformedToken);
            }
            (Some(kid), body)
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| WaitroomError::MalformedToken)?;
        let bytes: [u8; TOKEN_BYTES] = bytes
            .try_into()
            .map_err(|_| WaitroomError::MalformedToken)?;
        let keys = self.named(kid).ok_or(WaitroomError::UnknownToken)?;
        let mac = hmac(
            &keys.token_key,
            &[keys.kid_prefix().as_slice(), &bytes[..24]],
        );
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
        let keys = self.signing();
        let mac = hmac(
            &keys.pass_key,
            &[keys.kid_prefix().as_slice(), &bytes[..48]],
        );
        bytes[48..].copy_from_slice(&mac[..16]);
        match &keys.kid {
            Some(kid) => format!("{PASS_PREFIX_V2}{kid}.{}", URL_SAFE_NO_PAD.encode(bytes)),
            None => format!("{PASS_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)),
        }
    }

    /// The claims of a pass we signed. Expiry and bindings are the caller's to check.
    pub fn parse_pass(&self, pass: &str) -> Result<PassClaims, PassRefusal> {
        let pass = pass.trim();
        let (kid, body) = if let Some(body) = pass.strip_prefix(PASS_PREFIX) {
            (None, body)
        } else {
            let (kid, body) = pass
                .strip_prefix(PASS_PREFIX_V2)
                .and_then(|rest| rest.split_once('.'))
                .ok_or(PassRefusal::Malformed)?;
            if !marquee_auth::keyring::is_key_id(kid) {
                return Err(PassRefusal::Malformed);
            }
            (Some(kid), body)
        };
        if body.len() != PASS_BYTES.div_ceil(3) * 4 - 2 {
            return Err(PassRefusal::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PassRefusal::Malformed)?;
        let bytes: [u8; PASS_BYTES] = bytes.try_into().map_err(|_| PassRefusal::Malformed)?;
        let keys = self.named(kid).ok_or(PassRefusal::Forged)?;
        let mac = hmac(
            &keys.pass_key,
            &[keys.kid_prefix().as_slice(), &bytes[..48]],
        );
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

    fn ring(ids: &[&str]) -> Keyring {
        use marquee_auth::keyring::{Derivation, KeyRecord};
        let mut records: Vec<KeyRecord> = Purpose::ALL
            .into_iter()
            .map(|purpose| KeyRecord {
                purpose,
                id: "k1".into(),
                root: b"0123456789abcdef0123456789abcdef".to_vec(),
                derivation: Derivation::Legacy,
                created_at: 0,
                active_from: 0,
                retire_at: None,
            })
            .collect();
        for (index, id) in ids.iter().enumerate() {
            records.push(KeyRecord {
                purpose: Purpose::QueuePasses,
                id: (*id).into(),
                root: vec![index as u8; 32],
                derivation: Derivation::HkdfSha256,
                created_at: 0,
                active_from: 1 + index as i64,
                retire_at: None,
            });
        }
        Keyring::from_records(records).expect("ring")
    }

    #[test]
    fn keyring_tokens_and_passes_name_their_key_and_old_ones_verify() {
        let legacy = RoomSigner::new(b"0123456789abcdef0123456789abcdef");
        let signer = RoomSigner::from_keyring(&ring(&["k2"]));
        let event = Ulid::new();
        let token = signer.token(event, 9);
        assert!(token.starts_with("k2_"), "{token}");
        assert!(marquee_push_safe(&token));
        assert_eq!(signer.parse_token(&token), Ok((event, 9)));
        assert_eq!(legacy.parse_token(&token), Err(WaitroomError::UnknownToken));
        // Signed before the keyring: verifies under k1, derived from the same root.
        let old = legacy.token(event, 3);
        assert_eq!(signer.parse_token(&old), Ok((event, 3)));
        // Another kid's label on the same body fails: the kid is signed.
        let relabelled = token.replacen("k2_", "k1_", 1);
        assert_eq!(
            signer.parse_token(&relabelled),
            Err(WaitroomError::UnknownToken)
        );
        assert_eq!(
            signer.parse_token(&token.replacen("k2_", "k7_", 1)),
            Err(WaitroomError::UnknownToken)
        );

        let claims = PassClaims {
            event,
            user: Ulid::new(),
            seq: 3,
            expires_at: 50,
        };
        let pass = signer.pass(&claims);
        assert!(pass.starts_with("wp2.k2."), "{pass}");
        assert_eq!(signer.verify_pass(&pass, event, claims.user, 0), Ok(claims));
        let old_pass = legacy.pass(&claims);
        assert!(old_pass.starts_with("wp1."));
        assert_eq!(
            signer.verify_pass(&old_pass, event, claims.user, 0),
            Ok(claims)
        );
        assert_eq!(
            signer.parse_pass(&pass.replacen(".k2.", ".k1.", 1)),
            Err(PassRefusal::Forged)
        );
    }

    fn marquee_push_safe(token: &str) -> bool {
        token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    }

    #[test]
    fn order_keys_fit_a_redis_score() {
        let secret = [7u8; 32];
        for _ in 0..1000 {
            assert!(order_key(&secret, Ulid::new()) < FIFO_BASE);
        }
    }
}
