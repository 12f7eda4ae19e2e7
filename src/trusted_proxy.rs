//! Trusted proxies: address blocks (`--trusted-proxy CIDR`) and the client
//! a trusted proxy forwards in `X-Forwarded-For`. Imports nothing from the
//! crate, so both [`crate::config`] (which checks the blocks) and
//! [`crate::ip_table`] (which keys peers by the forwarded client) use it.

use std::net::IpAddr;

/// An address block (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address block (such as 10.0.0.0/8 or ::1)");
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        // An IPv4-mapped block (`::ffff:10.0.0.1`, `::ffff:0:0/96`) is its
        // IPv4 form: `contains` compares the peer in that form.
        if let (IpAddr::V4(v4), true) = (addr.to_canonical(), prefix >= 96 && addr.is_ipv6()) {
            return Ok(Cidr { addr: IpAddr::V4(v4), prefix: prefix - 96 });
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 form) is in the block.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let bits =
            |prefix: u8, width: u32| if prefix == 0 { 0 } else { u128::MAX << (width - u32::from(prefix)) };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = bits(self.prefix, 32) as u32;
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = bits(self.prefix, 128);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

/// The client a trusted proxy forwards: the rightmost `X-Forwarded-For`
/// entry (over every such header, in order) that is not itself in
/// `trusted`; the leftmost when all are. `None` when the header is absent,
/// or that entry is not an address (then the peer counts as the client).
pub(crate) fn forwarded_client(headers: &[(String, String)], trusted: &[Cidr]) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    let parse = |entry: &str| -> Option<IpAddr> {
        // `1.2.3.4`, `::1`, or with a port: `1.2.3.4:5`, `[::1]:5`.
        entry
            .parse()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
    };
    for entry in entries.iter().rev() {
        let ip = parse(entry)?;
        if !trusted.iter().any(|cidr| cidr.contains(ip)) {
            return Some(ip);
        }
    }
    entries.first().and_then(|entry| parse(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_blocks_and_forwarded_clients() {
        let cidr = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(cidr("::ffff:127.0.0.1").contains(ip("127.0.0.1")), "a mapped address is its IPv4 form");
        assert!(cidr("::ffff:127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        assert!(!cidr("::ffff:10.0.0.0/104").contains(ip("11.0.0.1")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")) && !cidr("fd00::/8").contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "x/8", "::/129", "10.0.0.0/+8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let trusted = [cidr("127.0.0.1"), cidr("10.0.0.0/8")];
        let xff = |values: &[&str]| -> Vec<(String, String)> {
            values.iter().map(|v| ("X-Forwarded-For".to_owned(), (*v).to_owned())).collect()
        };
        let client = |values: &[&str]| forwarded_client(&xff(values), &trusted);
        assert_eq!(client(&["9.9.9.9, 1.2.3.4"]), Some(ip("1.2.3.4")), "the rightmost untrusted");
        assert_eq!(client(&["1.2.3.4, 10.1.1.1"]), Some(ip("1.2.3.4")), "past a trusted hop");
        assert_eq!(client(&["9.9.9.9", "1.2.3.4:5, 10.1.1.1"]), Some(ip("1.2.3.4")), "two headers");
        assert_eq!(client(&["[2001:db8::1]:5"]), Some(ip("2001:db8::1")));
        assert_eq!(client(&["10.1.1.1, 127.0.0.1"]), Some(ip("10.1.1.1")), "all trusted: the leftmost");
        assert_eq!(client(&["1.2.3.4, junk"]), None, "garbage from the proxy: the peer counts");
        assert_eq!(client(&[]), None);
    }
}
