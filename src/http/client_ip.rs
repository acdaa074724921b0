//! The client's address: the connection's peer, or what trusted proxies say it is.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::error::InputError;
use crate::policy::IpAllowlist;

/// The name of the header proxies append the client's address to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR ranges.
///
/// The client's address is the connection's peer, unless that peer is a trusted proxy.
/// Then `X-Forwarded-For` is read from the right (the entry the nearest proxy added) and
/// every entry that is itself a trusted proxy is skipped; the first one that is not is the
/// client. A client behind only trusted hops is the leftmost entry. An entry that is not an
/// address stops the walk at the last address vouched for. So a client that sends its own
/// `X-Forwarded-For` cannot choose its address: an untrusted peer's header is ignored, and
/// behind a trusted proxy a forged entry stands left of the one the proxy appended.
///
/// The default trusts no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Never empty when set: an empty [`IpAllowlist`] would allow every address.
    list: Option<IpAllowlist>,
}

impl TrustedProxies {
    /// Trusts no proxy: the client is always the connection's peer.
    pub fn none() -> Self {
        TrustedProxies::default()
    }

    /// Trusts these addresses and ranges (`10.0.0.0/8`, `::1`, `192.0.2.7`).
    ///
    /// # Errors
    /// [`InputError::InvalidCidr`] for the first entry that is neither an address nor a range.
    pub fn new<I, S>(entries: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = IpAllowlist::new(entries)?;
        Ok(TrustedProxies {
            list: (!list.is_empty()).then_some(list),
        })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.list.as_ref().is_some_and(|l| l.allows(ip))
    }

    /// The client's address for a connection from `peer` with these request headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        // Several X-Forwarded-For fields are one list, in order.
        let entries = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`[::1]:80`, `192.0.2.1:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            proxies.client_ip(ip("192.0.2.1"), &xff(&["203.0.113.9"])),
            ip("192.0.2.1")
        );
        assert_eq!(
            TrustedProxies::none().client_ip(ip("10.0.0.1"), &xff(&["1.2.3.4"])),
            ip("10.0.0.1")
        );
        // An empty list trusts no one (an empty allowlist would allow everyone).
        let empty = TrustedProxies::new(Vec::<String>::new()).unwrap();
        assert!(!empty.contains(ip("10.0.0.1")));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let proxies = TrustedProxies::new(["10.0.0.0/8", "::1"]).unwrap();
        let peer = ip("10.0.0.2");
        // The client forged "6.6.6.6"; the proxy appended the real address.
        assert_eq!(
            proxies.client_ip(peer, &xff(&["6.6.6.6, 198.51.100.7"])),
            ip("198.51.100.7")
        );
        // Two proxies, in two fields.
        assert_eq!(
            proxies.client_ip(peer, &xff(&["198.51.100.7", "10.1.1.1"])),
            ip("198.51.100.7")
        );
        // Only trusted hops: the leftmost.
        assert_eq!(proxies.client_ip(peer, &xff(&["10.9.9.9, 10.1.1.1"])), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(proxies.client_ip(peer, &HeaderMap::new()), peer);
        // Garbage stops the walk at the last address vouched for.
        assert_eq!(proxies.client_ip(peer, &xff(&["6.6.6.6, nonsense"])), peer);
        // Ports, brackets and IPv4-mapped peers.
        assert_eq!(proxies.client_ip(peer, &xff(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(proxies.client_ip(peer, &xff(&["192.0.2.5:80"])), ip("192.0.2.5"));
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.2"), &xff(&["192.0.2.5"])),
            ip("192.0.2.5")
        );
        assert_eq!(proxies.client_ip(ip("::1"), &xff(&["192.0.2.5"])), ip("192.0.2.5"));
    }
}
