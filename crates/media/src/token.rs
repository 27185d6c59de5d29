//! Playback tokens: who may fetch an event's media, until when.
//!
//! A token is a path segment, `{viewer}.{expires}.{mac}`, placed before the playlist's name
//! (`/live/{event}/{token}/master.m3u8`), so every relative URL inside the playlists (media
//! playlists, init and media segments) inherits it without the packager knowing about tokens.
//! The MAC is HMAC-SHA256 over the event, the viewer and the expiry: a token names one viewer of
//! one event and cannot be moved to another event or stretched past its expiry. It is checked
//! by the origin; a point of presence in front asks the origin once per token (nginx
//! `auth_request`, cached) and caches the media itself under a key without the token.
//!
//! **Key ids.** A keyring node signs `{viewer}.{expires}.{kid}.{mac}` with the keyring's
//! `playback` key of that id, the kid also under the MAC (after the expiry). Three-part tokens
//! (before the keyring, or from a node with a configured secret, which still signs them) verify
//! under the purpose's first key, `k1`. Tokens live minutes, so any grace outlives them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use marquee_auth::{Keyring, Purpose, PurposeKeys};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest viewer id a token may carry.
const MAX_VIEWER_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the playback token is malformed")]
    Malformed,
    #[error("the playback token is not valid for this event")]
    BadSignature,
    #[error("the playback token has expired")]
    Expired,
}

/// Signs and checks playback tokens with the keyring's `playback` keys (shared by every node).
#[derive(Clone)]
pub struct PlaybackTokens {
    keys: PurposeKeys,
}

impl std::fmt::Debug for PlaybackTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackTokens(..)")
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub viewer: String,
    pub expires_at: i64,
}

impl PlaybackTokens {
    /// Derives the token key from the node's secret, so that a token key never doubles as a
    /// JWT key.
    /// Values without key ids from one secret (as before the keyring).
    pub fn derived_from(secret: &[u8]) -> PlaybackTokens {
        PlaybackTokens::from_keyring(&Keyring::single(Purpose::Playback, secret))
    }

    pub fn from_keyring(keyring: &Keyring) -> PlaybackTokens {
        PlaybackTokens {
            keys: keyring.purpose(Purpose::Playback),
        }
    }

    fn mac(
        material: &[u8],
        event: &str,
        viewer: &str,
        expires_at: i64,
        kid: Option<&str>,
    ) -> HmacSha256 {
        let mut key = HmacSha256::new_from_slice(material).expect("HMAC takes keys of any size");
        key.update(b"marquee playback tokens v1");
        let key = key.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any size");
        mac.update(event.as_bytes());
        mac.update(b"\n");
        mac.update(viewer.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at.to_string().as_bytes());
        if let Some(kid) = kid {
            mac.update(b"\n");
            mac.update(kid.as_bytes());
        }
        mac
    }

    /// A token for `viewer` of `event`, valid until `expires_at` (Unix seconds).
    pub fn sign(&self, event: &str, viewer: &str, expires_at: i64) -> String {
        let key = self.keys.signing_key();
        if self.keys.tags_key_ids() {
            let kid = key.id();
            let tag = Self::mac(key.material(), event, viewer, expires_at, Some(kid))
                .finalize()
                .into_bytes();
            format!(
                "{viewer}.{expires_at}.{kid}.{}",
                URL_SAFE_NO_PAD.encode(tag)
            )
        } else {
            let tag = Self::mac(key.material(), event, viewer, expires_at, None)
                .finalize()
                .into_bytes();
            format!("{viewer}.{expires_at}.{}", URL_SAFE_NO_PAD.encode(tag))
        }
    }

    /// Checks `token` for `event` at `now` (Unix seconds).
    pub fn verify(&self, event: &str, token: &str, now: i64) -> Result<Viewer, TokenError> {
        let mut parts = token.split('.');
        let (viewer, expires, kid, tag) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(viewer), Some(expires), Some(tag), None, None) => (viewer, expires, None, tag),
            (Some(viewer), Some(expires), Some(kid), Some(tag), None)
                if marquee_auth::keyring::is_key_id(kid) =>
            {
                (viewer, expires, Some(kid), tag)
            }
            _ => return Err(TokenError::Malformed),
        };
        let valid_viewer = !viewer.is_empty()
            && viewer.len() <= MAX_VIEWER_LEN
            && viewer
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid_viewer || expires.len() > 12 {
            return Err(TokenError::Malformed);
        }
        let expires_at: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let key = match kid {
            Some(kid) => self.keys.get(kid).ok_or_else(|| {
                self.keys.unknown_key_seen();
                TokenError::BadSignature
            })?,
            None => self.keys.unnamed().ok_or(TokenError::BadSignature)?,
        };
        Self::mac(key.material(), event, viewer, expires_at, kid)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(Viewer {
            viewer: viewer.to_string(),
            expires_at,
        })
    }
}

/// A fresh stream key: `live_` and 32 random bytes, URL-safe base64 (what goes in the
/// encoder's "stream key" box).
pub fn new_stream_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("live_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// How a stream key is stored and looked up: SHA-256, hex. Keys carry 256 random bits, so a
/// slow password hash would add nothing but latency to every publish.
pub fn stream_key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_opens_its_own_event_until_it_expires() {
        let tokens = PlaybackTokens::derived_from(b"secret");
        let token = tokens.sign("ev1", "user_1", 1_000);
        assert_eq!(
            tokens.verify("ev1", &token, 999),
            Ok(Viewer {
                viewer: "user_1".into(),
                expires_at: 1_000
            })
        );
        assert_eq!(
            tokens.verify("ev1", &token, 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            tokens.verify("ev2", &token, 999),
            Err(TokenError::BadSignature)
        );
        let other = PlaybackTokens::derived_from(b"other secret");
        assert_eq!(
            other.verify("ev1", &token, 999),
            Err(TokenError::BadSignature)
        );
        // Stretching the expiry breaks the MAC.
        let stretched = token.replacen("1000", "9000", 1);
        assert_eq!(
            tokens.verify("ev1", &stretched, 999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn keyring_tokens_name_their_key_and_unnamed_ones_verify_under_k1() {
        use marquee_auth::keyring::{Derivation, KeyRecord};
        let records = |extra: bool| {
            let mut records: Vec<KeyRecord> = Purpose::ALL
                .into_iter()
                .map(|purpose| KeyRecord {
                    purpose,
                    id: "k1".into(),
                    root: [3u8; 32].to_vec(),
                    derivation: Derivation::Legacy,
                    created_at: 0,
                    active_from: 0,
                    retire_at: None,
                })
                .collect();
            if extra {
                records.push(KeyRecord {
                    purpose: Purpose::Playback,
                    id: "k2".into(),
                    root: [4u8; 32].to_vec(),
                    derivation: Derivation::HkdfSha256,
                    created_at: 1,
                    active_from: 1,
                    retire_at: None,
                });
            }
            Keyring::from_records(records).expect("ring")
        };
        let before = PlaybackTokens::from_keyring(&records(false));
        let after = PlaybackTokens::from_keyring(&records(true));
        let old = before.sign("ev1", "v", 1_000);
        assert!(old.starts_with("v.1000.k1."), "{old}");
        let new = after.sign("ev1", "v", 1_000);
        assert!(new.starts_with("v.1000.k2."), "{new}");
        let unnamed = PlaybackTokens::derived_from(&[3u8; 32]).sign("ev1", "v", 1_000);
        for token in [&old, &new, &unnamed] {
            assert!(after.verify("ev1", token, 0).is_ok(), "{token}");
        }
        assert_eq!(before.verify("ev1", &new, 0), Err(TokenError::BadSignature));
        assert_eq!(
            after.verify("ev1", &new.replacen(".k2.", ".k1.", 1), 0),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,200}") {
            let tokens = PlaybackTokens::derived_from(b"secret");
            prop_assert!(tokens.verify("ev1", &token, 0).is_err());
        }
    }
}
