//! Ticket codes: `{ticket id}.{signature}`, the signature an HMAC-SHA256 of the ticket and event
//! ids under a secret key, truncated to 128 bits. A code cannot be guessed (2^-128) or forged
//! without the key, and it names its ticket so check-in needs one lookup.

use base64::Engine;
use hmac::{Hmac, Mac};
use marquee_domain::{EventId, TicketId};
use sha2::Sha256;

#[derive(Clone)]
pub struct TicketSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(***)")
    }
}

impl TicketSigner {
    pub fn new(key: &[u8]) -> TicketSigner {
        TicketSigner { key: key.to_vec() }
    }

    fn signature(&self, ticket: &TicketId, event: &EventId) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(b"marquee-ticket-v1\0");
        mac.update(ticket.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(event.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    pub fn code(&self, ticket: &TicketId, event: &EventId) -> String {
        format!("{ticket}.{}", self.signature(ticket, event))
    }

    /// The ticket a code names, if the code was signed by us for `event`.
    pub fn verify(&self, code: &str, event: &EventId) -> Option<TicketId> {
        let (ticket, signature) = code.trim().split_once('.')?;
        let ticket = TicketId::from_string(ticket);
        let expected = self.signature(&ticket, event);
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
}
