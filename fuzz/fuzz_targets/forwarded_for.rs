//! Why this exists: `X-Forwarded-For` is text any client writes, and both the gateway and a node
//! behind it (`--trusted-proxy`) read the client's address out of it to key per-IP limits.
//! Resolution must never panic, must ignore the header entirely when the peer is not trusted (a
//! client cannot choose its own address), and may only ever name the peer or an address that is
//! literally in the header.
//!
//! Input: bytes split at 0xFF into header values (0xFF is not valid in a header, so it is a
//! cheap separator); the first byte picks the peer from a trusted and an untrusted address.

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_gateway::TrustedProxies;
use std::net::{IpAddr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let proxies = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().expect("net"),
        "fd00::/8".parse().expect("net"),
    ]);
    let peer: IpAddr = match pick % 3 {
        0 => "10.1.2.3".parse().expect("ip"),
        1 => "fd00::1".parse().expect("ip"),
        _ => "203.0.113.7".parse().expect("ip"),
    };
    let mut headers = hyper::HeaderMap::new();
    for value in rest.split(|byte| *byte == 0xFF) {
        if let Ok(value) = hyper::header::HeaderValue::from_bytes(value) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = proxies.client_ip(peer, &headers);
    let trusted_peer = pick % 3 != 2;
    if !trusted_peer {
        assert_eq!(client, peer, "an untrusted peer chose its address");
    }
    if client != peer {
        let text = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            text.split(',')
                .any(|hop| hop.trim().parse::<IpAddr>().ok() == Some(client)),
            "{client} is not in {text:?}"
        );
    }
    let addr = proxies.client_addr(SocketAddr::new(peer, 4242), &headers);
    assert_eq!(addr, SocketAddr::new(client, 4242));
});
