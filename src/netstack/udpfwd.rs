//! UDP port forwards' association table (sans IO): a host UDP port forwarded
//! to a UDP service on a peer, onetun-style.
//!
//! UDP has no connections, so the forward keeps one *association* per host
//! client (its address and port), like a NAT binding (RFC 4787's
//! endpoint-independent mapping): the client's datagrams leave into the
//! tunnel from the gateway's tunnel address and a port of its own
//! (`local`), and datagrams the peer's service sends back to that `local`
//! address go to that client and no other. Only the forward's target may
//! answer (RFC 4787 "address and port-dependent filtering"); anything else
//! sent to a `local` address is not the association's.
//!
//! Bounds (nothing grows without a limit):
//! - per forward at most `max_flows` associations; a new client when the
//!   forward is full evicts that forward's least recently active one (as a
//!   NAT box recycles its oldest binding; the evicted client gets a new
//!   association, and so a new tunnel-side port, if it sends again);
//! - an association idle (no datagram either way) longer than the forward's
//!   `idle_timeout` is dropped by [`UdpForwards::expire`] (Linux conntrack's
//!   UDP timeouts are 30 s unreplied, 120 s stream; the default is the
//!   netstack's `udp_idle_timeout`, one minute);
//! - tunnel-side ports come from the IANA dynamic range (RFC 6335,
//!   49152..=65535, 16,384 ports per tunnel address): when all are taken the
//!   datagram is dropped and counted.
//!
//! The tables are keyed by attacker-controlled addresses (any host client may
//! send to a forward's port), hence the keyed hash.

use super::{Keyed, PortForward, Proto, EPHEMERAL};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Counters of the UDP forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpFwdStats {
    /// Associations created.
    pub opened: u64,
    /// Associations evicted because their forward was full.
    pub evicted: u64,
    /// Associations dropped after their idle timeout.
    pub expired: u64,
    /// Datagrams dropped: no tunnel address of the target's family, or no
    /// free tunnel-side port.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    to: SocketAddr,
    /// The gateway's tunnel address of `to`'s family (`None`: it has none).
    local_ip: Option<IpAddr>,
    max: usize,
    idle: Duration,
    count: usize,
}

#[derive(Debug, Clone, Copy)]
struct Assoc {
    local: SocketAddr,
    last: Instant,
}

/// The associations of every UDP forward.
#[derive(Debug)]
pub struct UdpForwards {
    /// By forward index (the index in the config's forward list; TCP
    /// forwards have no slot).
    slots: HashMap<usize, Slot>,
    by_client: HashMap<(usize, SocketAddr), Assoc, Keyed>,
    by_local: HashMap<SocketAddr, (usize, SocketAddr), Keyed>,
    next_port: u16,
    stats: UdpFwdStats,
}

impl UdpForwards {
    /// The UDP entries of `forwards` (their index in that list names them),
    /// sending from the first of `local_addrs` of each target's family.
    pub fn new(forwards: &[PortForward], local_addrs: &[IpAddr], hash_key: (u64, u64)) -> Self {
        let slots = forwards
            .iter()
            .enumerate()
            .filter(|(_, f)| f.proto == Proto::Udp)
            .map(|(i, f)| {
                let local_ip = local_addrs
                    .iter()
                    .find(|a| a.is_ipv4() == f.to.is_ipv4())
                    .copied();
                let slot = Slot {
                    to: f.to,
                    local_ip,
                    max: f.max_flows.max(1),
                    idle: f.idle_timeout,
                    count: 0,
                };
                (i, slot)
            })
            .collect();
        // Different keys for the two tables (each is keyed by other data).
        let (k0, k1) = hash_key;
        UdpForwards {
            slots,
            by_client: HashMap::with_hasher(Keyed(k0, k1)),
            by_local: HashMap::with_hasher(Keyed(k1 ^ 0x5ca1_ab1e, k0)),
            next_port: *EPHEMERAL.start(),
            stats: UdpFwdStats::default(),
        }
    }

    pub fn stats(&self) -> &UdpFwdStats {
        &self.stats
    }

    /// Associations right now (all forwards).
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// A datagram from host client `client` on forward `fwd`: the
    /// association's (tunnel-side source, target) pair, created when new.
    /// `None` (and counted when it is a UDP forward): the datagram cannot go.
    pub fn outbound(
        &mut self,
        fwd: usize,
        client: SocketAddr,
        now: Instant,
    ) -> Option<(SocketAddr, SocketAddr)> {
        let slot = *self.slots.get(&fwd)?;
        if let Some(a) = self.by_client.get_mut(&(fwd, client)) {
            a.last = now;
            return Some((a.local, slot.to));
        }
        let Some(ip) = slot.local_ip else {
            self.stats.dropped += 1;
            return None;
        };
        if slot.count >= slot.max {
            self.evict_oldest(fwd);
        }
        let Some(local) = self.free_port(ip) else {
            self.stats.dropped += 1;
            return None;
        };
        self.by_client
            .insert((fwd, client), Assoc { local, last: now });
        self.by_local.insert(local, (fwd, client));
        if let Some(s) = self.slots.get_mut(&fwd) {
            s.count += 1;
        }
        self.stats.opened += 1;
        Some((local, slot.to))
    }

    /// A datagram from `from` in the tunnel to the gateway's `local`
    /// address: the (forward, host client) it answers, if `local` is an
    /// association's and `from` its forward's target.
    pub fn inbound(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        now: Instant,
    ) -> Option<(usize, SocketAddr)> {
        let &(fwd, client) = self.by_local.get(&local)?;
        if self.slots.get(&fwd)?.to != from {
            return None;
        }
        if let Some(a) = self.by_client.get_mut(&(fwd, client)) {
            a.last = now;
        }
        Some((fwd, client))
    }

    /// Drops the associations idle longer than their forward's timeout;
    /// returns how many. O(associations): call about once a second.
    pub fn expire(&mut self, now: Instant) -> usize {
        let slots = &self.slots;
        let gone: Vec<(usize, SocketAddr)> = self
            .by_client
            .iter()
            .filter(|((fwd, _), a)| {
                slots
                    .get(fwd)
                    .is_none_or(|s| now.saturating_duration_since(a.last) > s.idle)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(*k);
        }
        self.stats.expired += gone.len() as u64;
        gone.len()
    }

    fn remove(&mut self, key: (usize, SocketAddr)) {
        if let Some(a) = self.by_client.remove(&key) {
            self.by_local.remove(&a.local);
            if let Some(s) = self.slots.get_mut(&key.0) {
                s.count = s.count.saturating_sub(1);
            }
        }
    }

    /// Makes room in forward `fwd`: drops its least recently active
    /// association. O(associations), only when a forward is full.
    fn evict_oldest(&mut self, fwd: usize) {
        let oldest = self
            .by_client
            .iter()
            .filter(|((f, _), _)| *f == fwd)
            .min_by_key(|(_, a)| a.last)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.remove(k);
            self.stats.evicted += 1;
        }
    }

    /// The next free tunnel-side port on `ip` (round robin over the range).
    fn free_port(&mut self, ip: IpAddr) -> Option<SocketAddr> {
        for _ in 0..=(EPHEMERAL.end() - EPHEMERAL.start()) {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            let a = SocketAddr::new(ip, p);
            if !self.by_local.contains_key(&a) {
                return Some(a);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn fwd(to: &str, max_flows: usize, idle: u64) -> PortForward {
        PortForward {
            proto: Proto::Udp,
            listen: sa("127.0.0.1:5353"),
            to: sa(to),
            max_flows,
            idle_timeout: Duration::from_secs(idle),
        }
    }

    fn table(f: &[PortForward]) -> UdpForwards {
        UdpForwards::new(f, &["100.64.0.1".parse().unwrap()], (7, 9))
    }

    #[test]
    fn replies_go_to_the_client_that_sent() {
        let now = Instant::now();
        let mut t = table(&[fwd("100.64.0.2:53", 8, 60)]);
        let (la, to) = t.outbound(0, sa("127.0.0.1:1111"), now).unwrap();
        let (lb, _) = t.outbound(0, sa("127.0.0.1:2222"), now).unwrap();
        assert_eq!(to, sa("100.64.0.2:53"));
        assert_eq!(la.ip(), "100.64.0.1".parse::<IpAddr>().unwrap());
        assert_ne!(la, lb, "one tunnel-side port per client");
        // The same client keeps its association.
        assert_eq!(t.outbound(0, sa("127.0.0.1:1111"), now).unwrap().0, la);
        assert_eq!(t.inbound(lb, to, now), Some((0, sa("127.0.0.1:2222"))));
        assert_eq!(t.inbound(la, to, now), Some((0, sa("127.0.0.1:1111"))));
        // Only the target may answer; unknown local ports are not ours.
        assert_eq!(t.inbound(la, sa("100.64.0.3:53"), now), None);
        assert_eq!(t.inbound(la, sa("100.64.0.2:54"), now), None);
        assert_eq!(t.inbound(sa("100.64.0.1:1"), to, now), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().opened, 2);
    }

    #[test]
    fn idle_associations_expire_and_activity_keeps_them() {
        let t0 = Instant::now();
        let mut t = table(&[fwd("100.64.0.2:53", 8, 60)]);
        let (la, to) = t.outbound(0, sa("127.0.0.1:1111"), t0).unwrap();
        let (lb, _) = t.outbound(0, sa("127.0.0.1:2222"), t0).unwrap();
        // A reply counts as activity.
        assert!(t.inbound(lb, to, t0 + Duration::from_secs(50)).is_some());
        assert_eq!(t.expire(t0 + Duration::from_secs(60)), 0, "not yet idle");
        assert_eq!(t.expire(t0 + Duration::from_secs(61)), 1);
        assert_eq!(t.inbound(la, to, t0), None, "expired: replies go nowhere");
        assert!(t.inbound(lb, to, t0).is_some());
        assert_eq!(t.expire(t0 + Duration::from_secs(111)), 1);
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn a_full_forward_evicts_its_least_recently_active_association() {
        let t0 = Instant::now();
        let s = |i: u64| t0 + Duration::from_secs(i);
        let mut t = table(&[fwd("100.64.0.2:53", 2, 60), fwd("100.64.0.3:53", 2, 60)]);
        let (la, to) = t.outbound(0, sa("127.0.0.1:1"), s(0)).unwrap();
        let (lb, _) = t.outbound(0, sa("127.0.0.1:2"), s(1)).unwrap();
        // The other forward's associations are its own.
        t.outbound(1, sa("127.0.0.1:9"), s(0)).unwrap();
        // Client 1 is active again: client 2 is now the oldest.
        t.outbound(0, sa("127.0.0.1:1"), s(2)).unwrap();
        let (lc, _) = t.outbound(0, sa("127.0.0.1:3"), s(3)).unwrap();
        assert_eq!(t.len(), 3, "bounded: 2 + 1");
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.inbound(lb, to, s(3)), None, "client 2 was evicted");
        assert_eq!(t.inbound(la, to, s(3)), Some((0, sa("127.0.0.1:1"))));
        assert_eq!(t.inbound(lc, to, s(3)), Some((0, sa("127.0.0.1:3"))));
        let (l9, to9) = t.outbound(1, sa("127.0.0.1:9"), s(3)).unwrap();
        assert_eq!(t.inbound(l9, to9, s(3)), Some((1, sa("127.0.0.1:9"))));
    }

    #[test]
    fn tcp_forwards_and_missing_families_pass_nothing() {
        let now = Instant::now();
        let mut tcp = fwd("100.64.0.2:80", 8, 60);
        tcp.proto = Proto::Tcp;
        let mut t = table(&[tcp, fwd("[2001:db8:64::2]:53", 8, 60)]);
        assert_eq!(t.outbound(0, sa("127.0.0.1:1"), now), None);
        assert_eq!(
            t.outbound(1, sa("127.0.0.1:1"), now),
            None,
            "no v6 tunnel address"
        );
        assert_eq!(t.outbound(7, sa("127.0.0.1:1"), now), None);
        assert_eq!(t.stats().dropped, 1);
        assert!(t.is_empty());
    }
}
