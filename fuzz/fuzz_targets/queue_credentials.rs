//! Why this exists: queue tokens (in paths and push channel names) and passes (the
//! `x-marquee-pass` header) come straight from clients. Parsing must never panic; anything that
//! parses must be exactly what we signed (a token re-signs to itself, a pass to itself), so no
//! other byte string is accepted as a credential.

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_waitroom::RoomSigner;

fuzz_target!(|data: &[u8]| {
    let signer = RoomSigner::new(b"fuzzing-secret-of-at-least-32-bytes");
    let text = String::from_utf8_lossy(data);
    if let Ok((event, seq)) = signer.parse_token(&text) {
        assert_eq!(signer.token(event, seq), text);
    }
    if let Ok(claims) = signer.parse_pass(&text) {
        assert_eq!(signer.pass(&claims), text.trim());
    }
    // A pass we signed survives a round trip, and flipping any byte of it breaks it.
    let event = ulid::Ulid(u128::from(data.len() as u64) << 64 | 7);
    let claims = marquee_waitroom::PassClaims {
        event,
        user: ulid::Ulid(0x1234),
        seq: data.len() as u64,
        expires_at: 1_900_000_000_000,
    };
    let pass = signer.pass(&claims);
    assert_eq!(signer.parse_pass(&pass), Ok(claims));
    if let Some(&byte) = data.first() {
        let mut mangled = pass.clone().into_bytes();
        let at = 4 + usize::from(byte) % (mangled.len() - 4);
        mangled[at] = if mangled[at] == b'A' { b'B' } else { b'A' };
        let mangled = String::from_utf8(mangled).expect("ascii");
        assert_ne!(signer.parse_pass(&mangled), Ok(claims));
    }
});
