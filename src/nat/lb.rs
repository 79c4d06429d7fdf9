//! Load-balanced DNAT: backend selection.
//!
//! Strategies (backends marked `down` never get new flows; live flows to them
//! keep their binding, so `down` also drains):
//! - `round-robin`: the next backend that is up, in order.
//! - `weighted`: smooth weighted round-robin (nginx's algorithm: every pick
//!   adds each backend's weight to its current score, picks the highest and
//!   subtracts the total), so any window of `sum(weights)` picks follows the
//!   weights exactly and picks are interleaved.
//! - `least-connections`: fewest live connections divided by weight (IPVS
//!   `wlc` without its inactive-connection term); the counts come from
//!   connection tracking ([`super::Nat::recount`]) plus the bindings made since.
//!   Ties go to the lowest index.
//! - `source-hash`: rendezvous (highest-random-weight) hashing of the client
//!   address with a keyed SipHash: a client sticks to its backend, and taking
//!   one backend down only moves that backend's clients.
//!
//! A backend is up unless it is configured `down` (and not forced up at run
//! time with `ctl nat undrain`), drained at run time (`ctl nat drain`), or
//! failing its health check ([`super::health`]); that state lives here, beside
//! the balancer's counters.
//!
//! Contract: `pick` returns an index of a backend that is up, or `None` when
//! none is; it never panics and never allocates.

use super::health::Health;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::IpAddr;

/// A DNAT backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    /// The new destination port (`None`: keep the packet's).
    pub port: Option<u16>,
    /// Relative weight (1..=1000), used by `weighted`, `least-connections`
    /// and `source-hash`.
    pub weight: u32,
    /// Down or drained: no new flows.
    pub down: bool,
}

/// How a backend is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    RoundRobin,
    Weighted,
    LeastConnections,
    SourceHash,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastConnections => "least-connections",
            Strategy::SourceHash => "source-hash",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "round-robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "least-connections" => Strategy::LeastConnections,
            "source-hash" => Strategy::SourceHash,
            _ => return None,
        })
    }
}

/// Per-rule balancer state.
#[derive(Debug, Clone, Default)]
pub struct LbState {
    next: usize,
    current: Vec<i64>,
    conns: Vec<u32>,
    /// Operator override per backend: `Some(true)` drained, `Some(false)`
    /// forced up (over a configured `down`), `None` as configured.
    admin: Vec<Option<bool>>,
    /// Health-check state per backend (always up without checks).
    health: Vec<Health>,
}

impl LbState {
    pub fn new(n: usize) -> Self {
        LbState {
            next: 0,
            current: vec![0; n],
            conns: vec![0; n],
            admin: vec![None; n],
            health: vec![Health::default(); n],
        }
    }

    /// Whether backend `i` (described by `b`) takes new flows.
    pub fn is_up(&self, i: usize, b: &Backend) -> bool {
        let down = self.admin(i).unwrap_or(b.down);
        !down && self.health(i).is_up()
    }

    /// The operator override of backend `i`.
    pub fn admin(&self, i: usize) -> Option<bool> {
        self.admin.get(i).copied().flatten()
    }

    pub fn set_admin(&mut self, i: usize, drained: Option<bool>) {
        if let Some(a) = self.admin.get_mut(i) {
            *a = drained;
        }
    }

    pub fn health(&self, i: usize) -> Health {
        self.health.get(i).copied().unwrap_or_default()
    }

    pub fn set_health(&mut self, i: usize, h: Health) {
        if let Some(x) = self.health.get_mut(i) {
            *x = h;
        }
    }

    /// Feeds a health-check result for backend `i`; the new state on a change.
    pub fn report_health(&mut self, i: usize, ok: bool) -> Option<bool> {
        self.health.get_mut(i).and_then(|h| h.report(ok))
    }

    pub fn opened(&mut self, b: usize) {
        if let Some(c) = self.conns.get_mut(b) {
            *c = c.saturating_add(1);
        }
    }

    pub fn reset_conns(&mut self) {
        self.conns.iter_mut().for_each(|c| *c = 0);
    }

    pub fn conns(&self) -> &[u32] {
        &self.conns
    }
}

/// Keyed hash of an address with a salt.
pub fn hash_addr(key: (u64, u64), a: IpAddr, salt: u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.0, key.1);
    match a {
        IpAddr::V4(v) => h.write_u32(u32::from(v)),
        IpAddr::V6(v) => h.write_u128(u128::from(v)),
    }
    h.write_u64(salt);
    h.finish()
}

/// Picks a backend for a new flow from `src` (backends of the wrong family are skipped).
pub fn pick(
    strategy: Strategy,
    backends: &[Backend],
    st: &mut LbState,
    src: IpAddr,
    v6: bool,
    key: (u64, u64),
) -> Option<usize> {
    let n = backends.len();
    match strategy {
        Strategy::RoundRobin => {
            for i in 0..n {
                let idx = (st.next + i) % n;
                if backends
                    .get(idx)
                    .is_some_and(|b| st.is_up(idx, b) && b.addr.is_ipv6() == v6)
                {
                    st.next = (idx + 1) % n;
                    return Some(idx);
                }
            }
            None
        }
        Strategy::Weighted => {
            let mut total = 0i64;
            let mut best: Option<usize> = None;
            for (i, b) in backends.iter().enumerate() {
                if !st.is_up(i, b) || b.addr.is_ipv6() != v6 {
                    continue;
                }
                let w = i64::from(b.weight);
                total += w;
                if let Some(c) = st.current.get_mut(i) {
                    *c += w;
                }
                let cur = st.current.get(i).copied().unwrap_or(0);
                if best.is_none_or(|j| cur > st.current.get(j).copied().unwrap_or(0)) {
                    best = Some(i);
                }
            }
            let b = best?;
            if let Some(c) = st.current.get_mut(b) {
                *c -= total;
            }
            Some(b)
        }
        Strategy::LeastConnections => {
            let mut best: Option<(usize, u64, u64)> = None;
            for (i, b) in backends.iter().enumerate() {
                if !st.is_up(i, b) || b.addr.is_ipv6() != v6 {
                    continue;
                }
                let c = u64::from(st.conns.get(i).copied().unwrap_or(0));
                let w = u64::from(b.weight.max(1));
                // c/w < bc/bw  <=>  c*bw < bc*w (no division, no rounding)
                if best.is_none_or(|(_, bc, bw)| c * bw < bc * w) {
                    best = Some((i, c, w));
                }
            }
            best.map(|(i, _, _)| i)
        }
        Strategy::SourceHash => {
            let mut best: Option<(usize, u128)> = None;
            for (i, b) in backends.iter().enumerate() {
                if !st.is_up(i, b) || b.addr.is_ipv6() != v6 {
                    continue;
                }
                // Weighted rendezvous hashing, integer form: score = h * w.
                let s = u128::from(hash_addr(key, src, i as u64)) * u128::from(b.weight.max(1));
                if best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((i, s));
                }
            }
            best.map(|(i, _)| i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn be(last: u8, weight: u32, down: bool) -> Backend {
        Backend {
            addr: IpAddr::V4(Ipv4Addr::new(100, 64, 0, last)),
            port: Some(80),
            weight,
            down,
        }
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn round_robin_skips_down_backends() {
        let bs = [be(2, 1, false), be(3, 1, true), be(4, 1, false)];
        let mut st = LbState::new(3);
        let picks: Vec<usize> = (0..6)
            .map(|_| pick(Strategy::RoundRobin, &bs, &mut st, client(1), false, (1, 2)).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2, 0, 2]);
        let all_down = [be(2, 1, true)];
        assert_eq!(
            pick(
                Strategy::RoundRobin,
                &all_down,
                &mut LbState::new(1),
                client(1),
                false,
                (1, 2)
            ),
            None
        );
        // Wrong family backends are never picked.
        assert_eq!(
            pick(Strategy::RoundRobin, &bs, &mut st, client(1), true, (1, 2)),
            None
        );
    }

    #[test]
    fn weighted_follows_weights_exactly() {
        let bs = [be(2, 5, false), be(3, 3, false), be(4, 2, false)];
        let mut st = LbState::new(3);
        let mut n = [0u32; 3];
        for _ in 0..3000 {
            n[pick(Strategy::Weighted, &bs, &mut st, client(1), false, (1, 2)).unwrap()] += 1;
        }
        assert_eq!(n, [1500, 900, 600]);
        // Interleaved, not bursts: no backend twice in a row more than the ratio needs.
        let mut st = LbState::new(3);
        let seq: Vec<usize> = (0..10)
            .map(|_| pick(Strategy::Weighted, &bs, &mut st, client(1), false, (1, 2)).unwrap())
            .collect();
        assert!(
            seq.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
            "{seq:?}"
        );
    }

    #[test]
    fn least_connections_uses_counts_and_weights() {
        let bs = [be(2, 1, false), be(3, 1, false), be(4, 2, false)];
        let mut st = LbState::new(3);
        st.conns = vec![5, 1, 3];
        assert_eq!(
            pick(
                Strategy::LeastConnections,
                &bs,
                &mut st,
                client(1),
                false,
                (1, 2)
            ),
            Some(1)
        );
        st.conns = vec![5, 3, 4];
        // 4/2 = 2 < 3/1
        assert_eq!(
            pick(
                Strategy::LeastConnections,
                &bs,
                &mut st,
                client(1),
                false,
                (1, 2)
            ),
            Some(2)
        );
    }

    #[test]
    fn source_hash_is_sticky_and_minimal_on_removal() {
        let mut bs = vec![be(2, 1, false), be(3, 1, false), be(4, 1, false)];
        let mut st = LbState::new(3);
        let before: Vec<usize> = (0..300)
            .map(|i| pick(Strategy::SourceHash, &bs, &mut st, client(i), false, (9, 9)).unwrap())
            .collect();
        let again: Vec<usize> = (0..300)
            .map(|i| pick(Strategy::SourceHash, &bs, &mut st, client(i), false, (9, 9)).unwrap())
            .collect();
        assert_eq!(before, again);
        for b in 0..3 {
            let c = before.iter().filter(|&&x| x == b).count();
            assert!((60..=140).contains(&c), "backend {b}: {c}");
        }
        bs[1].down = true;
        for i in 0..300u32 {
            let p = pick(Strategy::SourceHash, &bs, &mut st, client(i), false, (9, 9)).unwrap();
            assert_ne!(p, 1);
            if before[i as usize] != 1 {
                assert_eq!(p, before[i as usize], "client {i} moved");
            }
        }
    }

    #[test]
    fn drain_and_health_override_the_config() {
        let bs = [be(2, 1, false), be(3, 1, true), be(4, 1, false)];
        let mut st = LbState::new(3);
        let rr = |st: &mut LbState| -> Vec<usize> {
            (0..6)
                .filter_map(|_| pick(Strategy::RoundRobin, &bs, st, client(1), false, (1, 2)))
                .collect()
        };
        assert_eq!(rr(&mut st), vec![0, 2, 0, 2, 0, 2]);
        // forced up over the configured `down`, backend 0 drained
        st.set_admin(1, Some(false));
        st.set_admin(0, Some(true));
        let p = rr(&mut st);
        assert!(
            p.iter().all(|&i| i != 0) && p.contains(&1) && p.contains(&2),
            "{p:?}"
        );
        // backend 2 fails its health checks
        for _ in 0..crate::nat::health::FALL {
            st.report_health(2, false);
        }
        assert_eq!(rr(&mut st), vec![1; 6]);
        // back to the config for 1: nothing is up
        st.set_admin(1, None);
        assert!(rr(&mut st).is_empty());
        for s in [
            Strategy::Weighted,
            Strategy::LeastConnections,
            Strategy::SourceHash,
        ] {
            assert_eq!(
                pick(s, &bs, &mut st, client(1), false, (1, 2)),
                None,
                "{s:?}"
            );
        }
    }
}
