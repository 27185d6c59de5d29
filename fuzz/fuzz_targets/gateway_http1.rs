//! Why this exists: the gateway's HTTP/1.1 fast path parses every client's request head and
//! every node's answer itself, and rebuilds the head the node is sent. It must never panic on
//! any bytes, and whatever it forwards must carry exactly the framing it read (one
//! `Content-Length` or none, no hop-by-hop header) — anything else is request smuggling.
//!
//! Input: the first byte picks what is fed the rest: a request head, an answer head, or a
//! chunked body (split into two reads at the second byte).

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_gateway::h1::{
    parse_request, parse_response, ChunkProgress, ChunkedEnd, RequestVerdict, ResponseVerdict,
    UpstreamHead, MAX_HEADERS,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let RequestVerdict::Forward(head) = parse_request(rest, &mut headers, 16 * 1024)
            else {
                return;
            };
            assert!(head.len <= rest.len());
            let length = head.content_length;
            let upstream = UpstreamHead::new(&head, "192.0.2.1".parse().expect("ip"), b"id", false);
            let mut wire = Vec::new();
            upstream.write_for("node:1", b"", &mut wire);
            let mut seen = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
            let mut request = httparse::Request::new(&mut seen);
            assert!(matches!(
                request.parse(&wire),
                Ok(httparse::Status::Complete(used)) if used == wire.len()
            ));
            let count = |name: &str| {
                request
                    .headers
                    .iter()
                    .filter(|header| header.name.eq_ignore_ascii_case(name))
                    .count()
            };
            assert_eq!(count("content-length"), usize::from(length.is_some()));
            for hop in ["transfer-encoding", "connection", "upgrade", "te", "keep-alive"] {
                assert_eq!(count(hop), 0, "{hop} was forwarded");
            }
            assert_eq!(count("host"), 1);
            assert_eq!(count("x-forwarded-for"), 1);
        }
        1 => {
            if let ResponseVerdict::Head(head) = parse_response(rest, false, b"id", false) {
                assert!(head.len <= rest.len());
                let mut seen = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
                let mut answer = httparse::Response::new(&mut seen);
                assert!(matches!(
                    answer.parse(&head.client_head),
                    Ok(httparse::Status::Complete(_))
                ));
            }
        }
        _ => {
            let Some((&cut, body)) = rest.split_first() else {
                return;
            };
            let cut = usize::from(cut).min(body.len());
            let mut end = ChunkedEnd::default();
            match end.feed(&body[..cut]) {
                ChunkProgress::Done(used) => assert!(used <= cut),
                ChunkProgress::Malformed => {}
                ChunkProgress::More => {
                    if let ChunkProgress::Done(used) = end.feed(&body[cut..]) {
                        assert!(used <= body.len() - cut);
                    }
                }
            }
        }
    }
});
