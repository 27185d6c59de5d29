//! Playback tokens: who may fetch an event's media, until when.
//!
//! A token is a path segment, `{viewer}.{expires}.{mac}`, placed before the playlist's name
//! (`/live/{event}/{token}/master.m3u8`), so every relative URL inside the playlists (media
//! playlists, init and media segments) inherits it without the packager knowing about tokens.
//! The MAC is HMAC-SHA256 over the event, the viewer and the expiry: a token names one viewer of
//! one event and cannot be moved to another event or stretched past its expiry. It is checked
//! by the origin; a point of presence in front asks the origin once per token (nginx
//! `auth_request`, cached) and caches the media itself under a key without the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
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

/// Signs and checks playback tokens with one secret (shared by every node).
#[derive(Clone)]
pub struct PlaybackTokens {
    key: Vec<u8>,
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
    pub fn derived_from(secret: &[u8]) -> PlaybackTokens {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size");
        mac.update(b"marquee playback tokens v1");
        PlaybackTokens {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, event: &str, viewer: &str, expires_at: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(event.as_bytes());
        mac.update(b"\n");
        mac.update(viewer.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at.to_string().as_bytes());
        mac
    }

    /// A token for `viewer` of `event`, valid until `expires_at` (Unix seconds).
    pub fn sign(&self, event: &str, viewer: &str, expires_at: i64) -> String {
        let tag = self.mac(event, viewer, expires_at).finalize().into_bytes();
        format!("{viewer}.{expires_at}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks `token` for `event` at `now` (Unix seconds).
    pub fn verify(&self, event: &str, token: &str, now: i64) -> Result<Viewer, TokenError> {
        let mut parts = token.split('.');
        let (Some(viewer), Some(expires), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
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
        self.mac(event, viewer, expires_at)
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

    proptest! {
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,200}") {
            let tokens = PlaybackTokens::derived_from(b"secret");
            prop_assert!(tokens.verify("ev1", &token, 0).is_err());
        }
    }
}
