//! Why this exists: the media origin's lean path (`marquee_api::media_listener`) parses every
//! viewer's request head itself, and decides from it whether to answer or to hand the
//! connection, with the bytes read, to hyper. It must never panic on any bytes; what it answers
//! must be a whole `GET`/`HEAD` head of a `/live/{event}/{token}/{file}` path, no more bytes
//! than it was given and no larger than its limit; and a request it answers must be read the
//! same way when only its own bytes are there (pipelined requests are read one at a time).

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_api::media_listener::{parse, Parsed, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Partial => assert!(data.len() < MAX_HEAD, "waits past the head limit"),
        Parsed::Other => {}
        Parsed::Media { request, len } => {
            assert!(len <= data.len() && len <= MAX_HEAD);
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut head = httparse::Request::new(&mut fields);
            assert_eq!(head.parse(&data[..len]), Ok(httparse::Status::Complete(len)));
            assert!(matches!(head.method, Some("GET" | "HEAD")));
            assert_eq!(head.method == Some("HEAD"), request.head_only);
            assert!(head.path.is_some_and(|path| path.starts_with("/live/")));
            for segment in [&request.event, &request.token, &request.file] {
                assert!(!segment.is_empty());
            }
            match parse(&data[..len]) {
                Parsed::Media { request: alone, len: alone_len } => {
                    assert_eq!((alone, alone_len), (request, len));
                }
                other => panic!("read differently on its own: {other:?}"),
            }
        }
    }
});
