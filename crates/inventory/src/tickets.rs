//! Ticket codes: `{ticket id}.{key id}.{signature}`, the signature an HMAC-SHA256 of the ticket
//! and event ids under the keyring's `ticket-codes` key of that id, truncated to 128 bits. A
//! code cannot be guessed (2^-128) or forged without the key, and it names its ticket and key so
//! check-in needs one lookup and one HMAC.
//!
//! Codes sold before the keyring (or by a node with a configured `--jwt-secret`, which signs as
//! before) are `{ticket id}.{signature}`: they verify under the purpose's first key, `k1`, which
//! is derived from the old root exactly as the old key was. The signed bytes are the same in
//! both forms; the key id need not be signed, since another id is another key. Ticket keys are
//! never retired by rotation, so a sold ticket always checks in.

use base64::Engine;
use hmac::{Hmac, Mac};
use marquee_auth::{Keyring, Purpose, PurposeKeys};
use marquee_domain::{EventId, TicketId};
use sha2::Sha256;

#[derive(Clone)]
pub struct TicketSigner {
    keys: PurposeKeys,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(***)")
    }
}

impl TicketSigner {
    /// One key used as is, and codes without a key id (as before the keyring).
    pub fn new(key: &[u8]) -> TicketSigner {
        TicketSigner::from_keyring(&Keyring::single(Purpose::TicketCodes, key))
    }

    pub fn from_keyring(keyring: &Keyring) -> TicketSigner {
        TicketSigner {
            keys: keyring.purpose(Purpose::TicketCodes),
        }
    }

    fn signature(key: &[u8], ticket: &TicketId, event: &EventId) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(b"marquee-ticket-v1\0");
        mac.update(ticket.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(event.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    pub fn code(&self, ticket: &TicketId, event: &EventId) -> String {
        let key = self.keys.signing_key();
        let signature = Self::signature(key.material(), ticket, event);
        if self.keys.tags_key_ids() {
            format!("{ticket}.{}.{signature}", key.id())
        } else {
            format!("{ticket}.{signature}")
        }
    }

    /// The ticket a code names, if the code was signed by us for `event`.
    pub fn verify(&self, code: &str, event: &EventId) -> Option<TicketId> {
        let (ticket, kid, signature) = Self::split(code)?;
        let key = match kid {
            Some(kid) => self.keys.get(kid).or_else(|| {
                self.keys.unknown_key_seen();
                None
            })?,
            None => self.keys.unnamed()?,
        };
        Self::check(key.material(), ticket, event, signature)
    }

    /// [`TicketSigner::verify`], reloading the keyring once (rate-limited) for a key id this
    /// node does not know yet: a door scanner must not turn a fan away because this node has
    /// not loaded a key a peer already signs with.
    pub async fn verify_reloading(&self, code: &str, event: &EventId) -> Option<TicketId> {
        let (ticket, kid, signature) = Self::split(code)?;
        let key = match kid {
            Some(kid) => self.keys.get_reloading(kid).await?,
            None => self.keys.unnamed()?,
        };
        Self::check(key.material(), ticket, event, signature)
    }

    fn split(code: &str) -> Option<(&str, Option<&str>, &str)> {
        let mut parts = code.trim().split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(ticket), Some(signature), None, None) => Some((ticket, None, signature)),
            (Some(ticket), Some(kid), Some(signature), None) => {
                Some((ticket, Some(kid), signature))
            }
            _ => None,
        }
    }

    fn check(key: &[u8], ticket: &str, event: &EventId, signature: &str) -> Option<TicketId> {
        let ticket = TicketId::from_string(ticket);
        let expected = Self::signature(key, &ticket, event);
        // Constant-time comparison: the signature is the secret part.
        let matches = expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        matches.then_some(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_verify_only_for_their_ticket_event_and_key() {
        let signer = TicketSigner::new(b"secret key of some length");
        let ticket = TicketId::generate();
        let event = EventId::generate();
        let code = signer.code(&ticket, &event);
        assert_eq!(signer.verify(&code, &event), Some(ticket.clone()));
        assert_eq!(signer.verify(&code, &EventId::generate()), None);
        assert_eq!(TicketSigner::new(b"other key").verify(&code, &event), None);
        let forged = format!(
            "{}.{}",
            TicketId::generate(),
            code.split_once('.').map(|(_, s)| s).unwrap_or("")
        );
        assert_eq!(signer.verify(&forged, &event), None);
        assert_eq!(signer.verify("garbage", &event), None);
    }

    fn ring(ticket_keys: &[(&str, i64)]) -> Keyring {
        use marquee_auth::keyring::{generate_root, Derivation, KeyRecord};
        let root = generate_root();
        let mut records: Vec<KeyRecord> = Purpose::ALL
            .into_iter()
            .filter(|purpose| *purpose != Purpose::TicketCodes)
            .map(|purpose| KeyRecord {
                purpose,
                id: "k1".into(),
                root: root.clone(),
                derivation: Derivation::HkdfSha256,
                created_at: 0,
                active_from: 0,
                retire_at: None,
            })
            .collect();
        for (index, (id, active_from)) in ticket_keys.iter().enumerate() {
            records.push(KeyRecord {
                purpose: Purpose::TicketCodes,
                id: (*id).into(),
                // The first ticket key shares the test's root so that rings built twice agree.
                root: if index == 0 {
                    [7u8; 32].to_vec()
                } else {
                    root.clone()
                },
                derivation: Derivation::Legacy,
                created_at: 0,
                active_from: *active_from,
                retire_at: None,
            });
        }
        Keyring::from_records(records).expect("ring")
    }

    #[test]
    fn codes_name_their_key_and_old_codes_keep_verifying_after_rotation() {
        let ticket = TicketId::generate();
        let event = EventId::generate();
        let before = TicketSigner::from_keyring(&ring(&[("k1", 0)]));
        let old = before.code(&ticket, &event);
        assert_eq!(old.split('.').nth(1), Some("k1"));
        // A code sold before the keyring: two parts, the legacy derivation of the same root.
        let legacy = TicketSigner::new(&marquee_auth::keyring::derive_material(
            Purpose::TicketCodes,
            marquee_auth::Derivation::Legacy,
            &[7u8; 32],
        ))
        .code(&ticket, &event);
        assert_eq!(legacy.split('.').count(), 2);

        let after = TicketSigner::from_keyring(&ring(&[("k1", 0), ("k2", 1)]));
        let new = after.code(&ticket, &event);
        assert_eq!(new.split('.').nth(1), Some("k2"));
        for code in [&old, &legacy, &new] {
            assert_eq!(after.verify(code, &event), Some(ticket.clone()), "{code}");
        }
        assert_eq!(before.verify(&new, &event), None, "k2 is unknown before");
        let relabelled = new.replacen(".k2.", ".k1.", 1);
        assert_eq!(after.verify(&relabelled, &event), None);
    }
}
