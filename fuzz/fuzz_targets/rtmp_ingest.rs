//! The RTMP ingest's parsing path: handshake, chunk streams, commands and media, fed arbitrary
//! bytes in arbitrary pieces, with every publish request accepted so media parsing is reached.
//! Whatever arrives, the connection answers or fails with an error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_media::{Incoming, IngestLimits, RtmpConnection};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

static QUIET_PANICS: std::sync::Once = std::sync::Once::new();

fuzz_target!(|input: (bool, Vec<u16>, Vec<u8>)| {
    // `RtmpConnection` contains panics inside `rml_rtmp` (it has one: see
    // `RtmpError::Library`), so the aborting hook libfuzzer-sys installs must not fire for them.
    // A panic anywhere else still unwinds to libfuzzer-sys's own catch, which aborts: found.
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let (handshake_first, cuts, bytes) = input;
    let mut connection = RtmpConnection::new(IngestLimits {
        max_setup_bytes: usize::MAX,
        ..IngestLimits::default()
    });
    // Half the runs start past a real handshake, so the fuzzer spends its effort on chunks,
    // commands and media rather than on the handshake's random bytes.
    if handshake_first && !handshake(&mut connection) {
        return;
    }
    let mut rest: &[u8] = &bytes;
    let mut cut = cuts.into_iter().map(usize::from);
    while !rest.is_empty() {
        let size = cut.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        let Ok(incoming) = connection.receive(piece) else {
            return;
        };
        for item in incoming {
            if let Incoming::PublishRequested { request_id, .. } = item {
                if connection.accept(request_id).is_err() {
                    return;
                }
            }
        }
    }
});

/// Completes a client handshake against the connection; false if it did not complete.
fn handshake(connection: &mut RtmpConnection) -> bool {
    let mut client = Handshake::new(PeerType::Client);
    let Ok(mut outbound) = client.generate_outbound_p0_and_p1() else {
        return false;
    };
    for _ in 0..4 {
        let Ok(incoming) = connection.receive(&outbound) else {
            return false;
        };
        let answer: Vec<u8> = incoming
            .into_iter()
            .filter_map(|item| match item {
                Incoming::Send(bytes) => Some(bytes),
                _ => None,
            })
            .flatten()
            .collect();
        match client.process_bytes(&answer) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => outbound = response_bytes,
            Ok(HandshakeProcessResult::Completed { response_bytes, .. }) => {
                return connection.receive(&response_bytes).is_ok();
            }
            Err(_) => return false,
        }
    }
    false
}
