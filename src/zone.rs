//! Zones: where a packet comes from and where it goes.
//!
//! Every packet enters from a zone and leaves to a zone. The fixed zones are
//! `tun` (the host side), `local` (the gateway itself) and `host` (netstack
//! mode's host sockets); every WireGuard peer is a zone of its own, named by
//! the peer's name. Peers may belong to groups (`group:staff`), which rules
//! match as sets of zones. Zones are interned as small integers ([`ZoneId`])
//! so that flow keys and rule matching stay compact and cheap.

use std::collections::BTreeMap;

/// An interned zone. `0..3` are the fixed zones, peers start at [`ZoneId::FIRST_PEER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ZoneId(pub u16);

impl ZoneId {
    pub const TUN: ZoneId = ZoneId(0);
    pub const LOCAL: ZoneId = ZoneId(1);
    pub const HOST: ZoneId = ZoneId(2);
    pub const FIRST_PEER: u16 = 3;

    /// True for a WireGuard peer zone.
    pub fn is_peer(self) -> bool {
        self.0 >= Self::FIRST_PEER
    }

    /// The index of a peer zone among the peers (0 for the first peer).
    pub fn peer_index(self) -> Option<usize> {
        self.is_peer()
            .then(|| usize::from(self.0 - Self::FIRST_PEER))
    }

    /// The zone of the peer with index `i`.
    pub fn peer(i: usize) -> ZoneId {
        ZoneId(Self::FIRST_PEER + i as u16)
    }
}

/// A set of zones, as a bitmap over zone ids (cheap to test, cheap to intersect).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ZoneSet {
    bits: Vec<u64>,
}

impl ZoneSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, z: ZoneId) {
        let (w, b) = (usize::from(z.0) / 64, z.0 % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        self.bits[w] |= 1 << b;
    }

    pub fn contains(&self, z: ZoneId) -> bool {
        let (w, b) = (usize::from(z.0) / 64, z.0 % 64);
        self.bits.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = ZoneId> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, bits)| {
            (0..64u16)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| ZoneId(w as u16 * 64 + b))
        })
    }
}

impl FromIterator<ZoneId> for ZoneSet {
    fn from_iter<I: IntoIterator<Item = ZoneId>>(iter: I) -> Self {
        let mut s = ZoneSet::new();
        for z in iter {
            s.insert(z);
        }
        s
    }
}

/// Names of zones and membership of groups, built from the config.
#[derive(Debug, Clone, Default)]
pub struct ZoneTable {
    /// Peer names in zone order: `peers[i]` is zone `ZoneId::peer(i)`.
    peers: Vec<String>,
    /// group name (without `group:`) -> member zones.
    groups: BTreeMap<String, ZoneSet>,
}

impl ZoneTable {
    /// Builds the table from the peer names (in order) and their groups.
    pub fn new(peers: Vec<(String, Vec<String>)>) -> Self {
        let mut t = ZoneTable::default();
        for (i, (name, groups)) in peers.into_iter().enumerate() {
            for g in groups {
                t.groups.entry(g).or_default().insert(ZoneId::peer(i));
            }
            t.peers.push(name);
        }
        t
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The name of a zone as written in configs and logs.
    pub fn name(&self, z: ZoneId) -> &str {
        match z {
            ZoneId::TUN => "tun",
            ZoneId::LOCAL => "local",
            ZoneId::HOST => "host",
            _ => z
                .peer_index()
                .and_then(|i| self.peers.get(i))
                .map_or("?", String::as_str),
        }
    }

    /// Resolves a zone expression: `tun`, `local`, `host`, a peer name,
    /// `peer:NAME` or `group:NAME`. Returns `None` if nothing by that name exists.
    pub fn resolve(&self, expr: &str) -> Option<ZoneSet> {
        match expr {
            "tun" => return Some([ZoneId::TUN].into_iter().collect()),
            "local" => return Some([ZoneId::LOCAL].into_iter().collect()),
            "host" => return Some([ZoneId::HOST].into_iter().collect()),
            _ => {}
        }
        if let Some(g) = expr.strip_prefix("group:") {
            return self.groups.get(g).cloned();
        }
        let name = expr.strip_prefix("peer:").unwrap_or(expr);
        self.peer(name).map(|z| [z].into_iter().collect())
    }

    /// The zone of the peer called `name`.
    pub fn peer(&self, name: &str) -> Option<ZoneId> {
        self.peers.iter().position(|p| p == name).map(ZoneId::peer)
    }

    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_fixed_peers_and_groups() {
        let t = ZoneTable::new(vec![
            ("laptop".into(), vec!["staff".into()]),
            ("phone".into(), vec!["staff".into(), "guests".into()]),
        ]);
        assert!(t.resolve("tun").unwrap().contains(ZoneId::TUN));
        assert_eq!(t.peer("phone"), Some(ZoneId(4)));
        let staff = t.resolve("group:staff").unwrap();
        assert!(staff.contains(ZoneId(3)) && staff.contains(ZoneId(4)));
        assert!(!t.resolve("group:guests").unwrap().contains(ZoneId(3)));
        assert!(t.resolve("nobody").is_none());
        assert_eq!(t.name(ZoneId(3)), "laptop");
        assert_eq!(staff.iter().collect::<Vec<_>>(), vec![ZoneId(3), ZoneId(4)]);
    }
}
