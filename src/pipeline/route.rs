//! Routing: which zone a destination address belongs to.
//!
//! WireGuard's cryptokey routing: each peer owns its AllowedIPs, and the
//! longest matching prefix decides the egress peer (as `wg` does). The same
//! table answers the reverse question for received packets — is this source
//! address allowed for the peer that sent it? — which is the anti-spoofing
//! check of the WireGuard whitepaper (section 2).
//!
//! The table is small (one entry per AllowedIPs prefix) and read on the
//! new-flow path only. Per family it keeps one sorted vector per prefix length
//! and probes the lengths from longest to shortest with a binary search each:
//! O(L log n) for L distinct prefix lengths, no hashing of attacker-chosen data.

use crate::zone::ZoneId;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// One prefix length's entries: (masked address, zone), sorted by address.
#[derive(Debug, Clone, Default)]
struct Level<A> {
    len: u8,
    entries: Vec<(A, ZoneId)>,
}

/// A longest-prefix-match table from prefixes to zones.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    v4: Vec<Level<u32>>,
    v6: Vec<Level<u128>>,
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn insert_level<A: Ord + Copy>(levels: &mut Vec<Level<A>>, len: u8, addr: A, zone: ZoneId) {
    let pos = levels.iter().position(|l| l.len <= len);
    let idx = match pos {
        Some(i) if levels[i].len == len => i,
        Some(i) => {
            levels.insert(
                i,
                Level {
                    len,
                    entries: Vec::new(),
                },
            );
            i
        }
        None => {
            levels.push(Level {
                len,
                entries: Vec::new(),
            });
            levels.len() - 1
        }
    };
    let entries = &mut levels[idx].entries;
    match entries.binary_search_by(|(a, _)| a.cmp(&addr)) {
        Ok(i) => entries[i].1 = zone,
        Err(i) => entries.insert(i, (addr, zone)),
    }
}

fn lookup_level<A: Ord + Copy>(
    levels: &[Level<A>],
    mask: impl Fn(u8) -> A,
    and: impl Fn(A, A) -> A,
    addr: A,
) -> Option<ZoneId> {
    levels.iter().find_map(|l| {
        let key = and(addr, mask(l.len));
        l.entries
            .binary_search_by(|(a, _)| a.cmp(&key))
            .ok()
            .map(|i| l.entries[i].1)
    })
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `net -> zone`; a later insert of the same prefix replaces the zone.
    pub fn insert(&mut self, net: IpNetwork, zone: ZoneId) {
        match net {
            IpNetwork::V4(n) => {
                let len = n.prefix();
                insert_level(&mut self.v4, len, u32::from(n.ip()) & mask32(len), zone)
            }
            IpNetwork::V6(n) => {
                let len = n.prefix();
                insert_level(&mut self.v6, len, u128::from(n.ip()) & mask128(len), zone)
            }
        }
    }

    /// The zone owning the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<ZoneId> {
        match addr {
            IpAddr::V4(a) => lookup_level(&self.v4, mask32, |x, m| x & m, u32::from(a)),
            IpAddr::V6(a) => lookup_level(&self.v6, mask128, |x, m| x & m, u128::from(a)),
        }
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        t.insert(net("0.0.0.0/0"), ZoneId(3));
        t.insert(net("100.64.0.0/24"), ZoneId(4));
        t.insert(net("100.64.0.7/32"), ZoneId(5));
        t.insert(net("::/0"), ZoneId(3));
        t.insert(net("2001:db8:64::/64"), ZoneId(4));
        assert_eq!(t.lookup("100.64.0.7".parse().unwrap()), Some(ZoneId(5)));
        assert_eq!(t.lookup("100.64.0.8".parse().unwrap()), Some(ZoneId(4)));
        assert_eq!(t.lookup("203.0.113.9".parse().unwrap()), Some(ZoneId(3)));
        assert_eq!(t.lookup("2001:db8:64::9".parse().unwrap()), Some(ZoneId(4)));
        assert_eq!(t.lookup("2001:db8:1::9".parse().unwrap()), Some(ZoneId(3)));
    }

    #[test]
    fn no_default_no_route() {
        let mut t = RouteTable::new();
        t.insert(net("100.64.0.2/32"), ZoneId(3));
        assert_eq!(t.lookup("100.64.0.3".parse().unwrap()), None);
        assert_eq!(t.lookup("::1".parse().unwrap()), None);
        // host bits in the configured prefix are masked
        t.insert(net("198.51.100.77/24"), ZoneId(6));
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(ZoneId(6)));
    }
}
