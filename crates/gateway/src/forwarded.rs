//! The client's address. `X-Forwarded-For` is written by whoever sends it, so it is believed
//! only as far as the chain of trusted proxies goes: walking it from the right (the hop nearest
//! us), each address vouched for by a trusted peer is taken, and the first untrusted one is the
//! client. A client talking to us directly cannot forge its address at all.

use hyper::header::HeaderValue;
use hyper::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The peers whose `X-Forwarded-For` is believed. Used by the gateway for its clients, and by
/// a node for the gateway (or load balancer) in front of it.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { networks }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The client's address, given the TCP peer and the request's headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.client_ip_from(
            peer,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    /// [`TrustedProxies::client_ip`] over the raw `X-Forwarded-For` values, in the order they
    /// came (the gateway's HTTP/1.1 path reads them straight off the request head).
    pub fn client_ip_from<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<&str>>();
        for hop in hops.into_iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                // Garbage in the chain: nothing to its left can be believed.
                Err(_) => break,
            }
        }
        client
    }

    /// The peer address with the client's IP in place of a trusted proxy's (same port).
    pub fn client_addr(
        &self,
        peer: std::net::SocketAddr,
        headers: &HeaderMap,
    ) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.client_ip(peer.ip(), headers), peer.port())
    }

    /// The `X-Forwarded-For` to send on: the resolved client alone, so a node that trusts
    /// this gateway reads the client from its last entry without trusting anything further.
    pub(crate) fn forwarded_for(client: IpAddr) -> HeaderValue {
        HeaderValue::from_str(&client.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(xff).expect("header"),
        );
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let forged = headers("1.2.3.4");
        assert_eq!(
            proxies.client_ip(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_chain_is_walked_from_the_right() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        // The client forged 1.2.3.4; the first trusted hop saw 198.51.100.7.
        let chain = headers("1.2.3.4, 198.51.100.7, 10.0.0.5");
        assert_eq!(
            proxies.client_ip(ip("10.0.0.9"), &chain),
            ip("198.51.100.7")
        );
        let garbage = headers("1.2.3.4, not-an-ip");
        assert_eq!(proxies.client_ip(ip("10.0.0.9"), &garbage), ip("10.0.0.9"));
    }
}
