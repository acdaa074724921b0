//! The IP allowlist: [`IpAllowlist`], IPv4 and IPv6 CIDR ranges, an IPv4 client matched
//! in its IPv4-mapped IPv6 form too, and the parsing of its entries.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::macros::source_list_impls;
use super::quote;
use crate::error::InputError;

/// The client addresses a key may be used from: IPv4 and IPv6 CIDR ranges; a bare
/// address is a single host (`/32`, `/128`). Empty means unrestricted.
///
/// An IPv4 address and its IPv4-mapped IPv6 form (`10.0.0.1` and `::ffff:10.0.0.1`) are
/// the same client: an address is allowed when some range contains it in either form.
/// So `::ffff:10.0.0.1` (as a dual-stack socket reports an IPv4 peer) matches
/// `10.0.0.0/8`, `10.0.0.1` matches `::ffff:10.0.0.0/104`, and a v6 range that covers
/// the whole mapped block (`::/0`, `::ffff:0:0/96`) covers every IPv4 client. Other
/// embeddings (IPv4-compatible `::a.b.c.d`, NAT64) are not folded.
///
/// A range written with host bits set (`10.1.2.3/8`) means its network (`10.0.0.0/8`).
/// Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct IpAllowlist {
    sources: Vec<String>,
    /// IPv4 ranges, plus the IPv4 part of every v6 range that overlaps `::ffff:0:0/96`.
    v4: Vec<Range<u32>>,
    /// IPv6 ranges as written.
    v6: Vec<Range<u128>>,
}

impl IpAllowlist {
    /// Parses a list of addresses and CIDR ranges.
    ///
    /// # Errors
    /// [`InputError::InvalidCidr`] for the first entry that is neither an address nor a
    /// range (a prefix longer than the address, whitespace, a zone id, ...).
    pub fn new<I, S>(entries: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = IpAllowlist::default();
        for entry in entries {
            let entry = entry.as_ref();
            let net = parse_cidr(entry).map_err(|why| InputError::InvalidCidr(format!("{}: {why}", quote(entry))))?;
            list.push(net);
            list.sources.push(entry.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty or some range contains `ip` (either form of an
    /// IPv4 / IPv4-mapped address, see the type's docs). Does not allocate.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.allows_v4(v4),
                None => {
                    let a = u128::from(v6);
                    self.v6.iter().any(|r| a & r.mask == r.network)
                }
            },
        }
    }

    /// The entries, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.v4.iter().any(|r| a & r.mask == r.network)
    }

    fn push(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => self.v4.push(Range {
                network: u32::from(n.network()),
                mask: u32::from(n.netmask()),
            }),
            IpNet::V6(n) => {
                let network = u128::from(n.network());
                let mask = u128::from(n.netmask());
                self.v6.push(Range { network, mask });
                if let Some(r) = mapped_part(network, mask, n.prefix_len()) {
                    self.v4.push(r);
                }
            }
        }
    }
}

source_list_impls!(IpAllowlist);

/// A network and its mask, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range<T> {
    network: T,
    mask: T,
}

/// `::ffff:0:0`, the start of the IPv4-mapped block (`::ffff:0:0/96`).
const MAPPED_V4_NETWORK: u128 = 0xffff_0000_0000;
/// The mask of a `/96`.
const MASK_96: u128 = !0xffff_ffff;

/// The IPv4 addresses whose mapped form lies in the v6 range `network/prefix_len`.
fn mapped_part(network: u128, mask: u128, prefix_len: u8) -> Option<Range<u32>> {
    if prefix_len <= 96 {
        // The range is at least as wide as the mapped block: it holds all of it or none.
        return (MAPPED_V4_NETWORK & mask == network).then_some(Range { network: 0, mask: 0 });
    }
    if network & MASK_96 != MAPPED_V4_NETWORK {
        return None;
    }
    // Both fit in the low 32 bits here: the high 96 bits of `network` are the mapped
    // prefix and the mask's low 32 bits are its IPv4 part.
    let low = |x: u128| u32::try_from(x & 0xffff_ffff).unwrap_or(0);
    Some(Range {
        network: low(network),
        mask: low(mask),
    })
}

fn parse_cidr(entry: &str) -> Result<IpNet, &'static str> {
    const HINT: &str = "expected an IP address or a CIDR range, e.g. 10.0.0.0/8, 203.0.113.7, 2001:db8::/32";
    if entry.is_empty() {
        return Err("it is empty; expected an IP address or a CIDR range, e.g. 10.0.0.0/8");
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        // The address as the standard library reads it (no leading-zero octets, as for a
        // bare address: ipnet alone took `010.0.0.0/8` for 10.0.0.0/8), the prefix as plain
        // decimal digits.
        let addr = IpAddr::from_str(addr).map_err(|_| HINT)?;
        const PREFIX: &str = "the prefix length must be a number up to 32 (IPv4) or 128 (IPv6)";
        if prefix.is_empty()
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() > 1 && prefix.starts_with('0'))
        {
            return Err(PREFIX);
        }
        let len = prefix.parse::<u8>().map_err(|_| PREFIX)?;
        let net = IpNet::new(addr, len).map_err(|_| PREFIX)?;
        return Ok(net.trunc());
    }
    IpAddr::from_str(entry).map(IpNet::from).map_err(|_| HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_allowlist_table() {
        let list = IpAllowlist::new([
            "10.0.0.0/8",
            "192.168.1.7",
            "2001:db8::/32",
            "::1",
            "::ffff:172.16.0.0/108",
            "100.64.1.2/16",
        ])
        .unwrap();
        for (ip, expected) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::1", true),
            ("::2", false),
            // IPv4-mapped clients match IPv4 ranges.
            ("::ffff:10.0.0.1", true),
            ("::ffff:192.168.1.7", true),
            ("::ffff:11.0.0.1", false),
            // IPv4 clients match mapped v6 ranges.
            ("172.16.5.5", true),
            ("::ffff:172.16.5.5", true),
            ("172.32.0.1", false),
            // Host bits in a range are ignored.
            ("100.64.200.1", true),
            // IPv4-compatible addresses are not folded.
            ("::10.0.0.1", false),
        ] {
            assert_eq!(list.allows(ip.parse().unwrap()), expected, "{ip}");
        }
        assert!(IpAllowlist::default().allows("1.2.3.4".parse().unwrap()));
        assert!(IpAllowlist::new(Vec::<String>::new()).unwrap().is_empty());
        let v6_only = IpAllowlist::new(["2001:db8::/32"]).unwrap();
        assert!(!v6_only.allows("10.0.0.1".parse().unwrap()));
        let all_v6 = IpAllowlist::new(["::/0"]).unwrap();
        assert!(
            all_v6.allows("10.0.0.1".parse().unwrap()),
            "::/0 covers the mapped block"
        );
        let v4_only = IpAllowlist::new(["0.0.0.0/0"]).unwrap();
        assert!(!v4_only.allows("2001:db8::1".parse().unwrap()));
        assert!(v4_only.allows("::ffff:1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn ip_allowlist_refuses_bad_entries() {
        for (entry, needle) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix length"),
            ("2001:db8::/129", "prefix length"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0/8", "expected an IP address"),
            ("10.0.0.256", "expected an IP address"),
            (" 10.0.0.1", "expected an IP address"),
            ("fe80::1%eth0", "expected an IP address"),
            ("example.com", "expected an IP address"),
        ] {
            match IpAllowlist::new(["10.0.0.0/8", entry]) {
                Err(InputError::InvalidCidr(msg)) => assert!(msg.contains(needle), "{entry:?}: {msg}"),
                other => panic!("{entry:?} gave {other:?}"),
            }
        }
    }
}
