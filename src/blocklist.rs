//! The blocklist: source addresses, networks and WireGuard peers whose
//! packets are dropped at the very front of the pipeline (after parsing,
//! before defragmentation and connection tracking), with the reason
//! `blocked`.
//!
//! What it promises:
//! - An entry blocks a source address or network (`Target::Net`), or a
//!   WireGuard peer (`Target::Peer`, by public key: the peer is blocked
//!   whatever source address it uses, and the key is resolved to its zone
//!   again on every reconfiguration, since a reload may renumber zones).
//! - Each entry has an [`Origin`] (config, anomaly, rule, ids, ctl), a
//!   reason, an optional expiry and a hit counter. Expired entries stop
//!   blocking at once ([`Blocklist::check`] compares with `now`) and are
//!   removed, with an [`BlockEvent::Expired`] event, by
//!   [`Blocklist::expire`] (the pipeline's `handle_timeout`).
//! - An empty blocklist costs one branch per packet ([`Blocklist::is_empty`]).
//!   Otherwise: one keyed-hash lookup for the source address (SipHash-1-3
//!   with the pipeline's random key: the automatic entries are
//!   attacker-chosen addresses), plus a linear scan of the network entries
//!   and, for packets from a peer, of the peer entries (both come only from
//!   the config and `ctl`, so they are few).
//! - The size is bounded by `max_entries`. When full, an automatic entry
//!   (anomaly, rule, ids) replaces the automatic entry that expires first
//!   (fail2ban-like: the newest offender is the one worth blocking); when no
//!   automatic entry is left to replace, or for a `ctl` entry, the add is
//!   refused ([`AddError::Full`]) and counted. Config entries must fit
//!   (the config is rejected otherwise).
//! - Adding a target already present keeps one entry: the later expiry
//!   wins (no expiry is the latest), the new origin and reason replace the
//!   old ones, hits carry on. A reconfiguration (reload) replaces the
//!   config entries with the new config's and keeps the others.
//!
//! Sans IO: no clock reads (`now` is a parameter), no locks.

use crate::wg::ratelimit::KeyedHasher;
use crate::zone::ZoneId;
use ipnetwork::IpNetwork;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The default bound on entries: 65536 entries of ~100 bytes each, a few MiB.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;
/// Events queued before further ones are dropped (counted): the io shell
/// drains them after every packet, so only a burst of blocks in one packet's
/// processing could fill it, and one packet adds at most one.
const EVENT_QUEUE: usize = 1024;

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Config,
    Anomaly,
    Rule,
    Ids,
    Ctl,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Anomaly => "anomaly",
            Origin::Rule => "rule",
            Origin::Ids => "ids",
            Origin::Ctl => "ctl",
        }
    }

    /// Entries the gateway added by itself (may be replaced when full).
    fn automatic(self) -> bool {
        matches!(self, Origin::Anomaly | Origin::Rule | Origin::Ids)
    }
}

/// What an entry blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A source address (a host prefix) or network; host bits cleared.
    Net(IpNetwork),
    /// A WireGuard peer by public key.
    Peer([u8; 32]),
}

impl Target {
    /// A single address.
    pub fn addr(a: IpAddr) -> Target {
        Target::Net(IpNetwork::from(a))
    }

    fn host(&self) -> Option<IpAddr> {
        match self {
            Target::Net(n) if n.prefix() == max_prefix(n.ip()) => Some(n.ip()),
            _ => None,
        }
    }
}

fn max_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// One blocklist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub target: Target,
    pub origin: Origin,
    pub reason: String,
    pub added: Instant,
    /// `None`: until removed.
    pub expires: Option<Instant>,
    /// Packets dropped because of this entry.
    pub hits: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// What the blocklist reports (the io shell logs it and writes EVE records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockEvent {
    Blocked {
        target: Target,
        origin: Origin,
        reason: String,
        ttl: Option<Duration>,
    },
    Unblocked {
        target: Target,
        origin: Origin,
    },
    Expired {
        target: Target,
        origin: Origin,
        hits: u64,
    },
    /// An automatic add was refused: the list is full of entries that may
    /// not be replaced.
    Refused {
        target: Target,
        origin: Origin,
    },
}

/// Why an add failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// `max_entries` reached and nothing may be replaced.
    Full(usize),
    /// A peer key that no configured peer has.
    UnknownPeer,
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Full(n) => write!(
                f,
                "the blocklist is full ({n} entries, blocklist.max_entries); unblock something first"
            ),
            AddError::UnknownPeer => write!(f, "no configured peer has this public key"),
        }
    }
}

/// A config entry (`[blocklist]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub target: Target,
    pub reason: String,
}

/// `[blocklist]`, plus the peers (name and key, in zone order) the pipeline
/// resolves peer entries with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    pub max_entries: usize,
    /// TTL for `ctl block` without `--ttl` (`None`: until unblocked).
    pub default_ttl: Option<Duration>,
    pub entries: Vec<ConfigEntry>,
    /// `peers[i]` is zone `ZoneId::peer(i)`.
    pub peers: Vec<(String, [u8; 32])>,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            max_entries: DEFAULT_MAX_ENTRIES,
            default_ttl: None,
            entries: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// Everything the pipeline's blocking takes from the config
/// ([`crate::pipeline::Pipeline::set_protection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    pub blocklist: BlockConfig,
    /// `[ids.anomaly]` when enabled.
    pub anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// `ids.block_on_drop` (prevent mode only).
    pub ids_block_on_drop: Option<Duration>,
}

/// Blocklist counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub added: u64,
    pub expired: u64,
    pub removed: u64,
    /// Automatic entries replaced because the list was full.
    pub evicted: u64,
    /// Adds refused because the list was full.
    pub refused: u64,
    pub events_dropped: u64,
}

/// The blocklist (see the module docs).
#[derive(Debug)]
pub struct Blocklist {
    /// Host entries, by address.
    hosts: HashMap<IpAddr, Entry, KeyedHasher>,
    /// Network entries (prefix shorter than a host's).
    nets: Vec<Entry>,
    /// Peer entries with their resolved zone (`None`: the key is not in the
    /// current config; kept, and resolved again on the next reload).
    peers: Vec<(Option<ZoneId>, Entry)>,
    len: usize,
    cfg: BlockConfig,
    events: VecDeque<BlockEvent>,
    pub stats: BlockStats,
}

impl Blocklist {
    pub fn new(hash_key: (u64, u64)) -> Self {
        Blocklist {
            hosts: HashMap::with_hasher(KeyedHasher(hash_key.0, hash_key.1)),
            nets: Vec::new(),
            peers: Vec::new(),
            len: 0,
            cfg: BlockConfig::default(),
            events: VecDeque::new(),
            stats: BlockStats::default(),
        }
    }

    /// True when nothing is blocked: the pipeline's one branch.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn config(&self) -> &BlockConfig {
        &self.cfg
    }

    /// Applies a (new) config: the bound, the peers, and the config entries
    /// (the old config's are removed, the others kept). Peer entries are
    /// resolved to zones again. Returns the config entries that did not fit.
    pub fn reconfigure(&mut self, cfg: &BlockConfig, now: Instant) -> usize {
        self.cfg = cfg.clone();
        self.remove_where(|e| e.origin == Origin::Config);
        for (zone, e) in &mut self.peers {
            *zone = resolve(&self.cfg.peers, &e.target);
        }
        let mut refused = 0;
        for c in &cfg.entries {
            if self
                .insert(c.target, Origin::Config, c.reason.clone(), None, now, false)
                .is_err()
            {
                refused += 1;
            }
        }
        refused
    }

    fn remove_where(&mut self, f: impl Fn(&Entry) -> bool) {
        self.hosts.retain(|_, e| !f(e));
        self.nets.retain(|e| !f(e));
        self.peers.retain(|(_, e)| !f(e));
        self.recount();
    }

    fn recount(&mut self) {
        self.len = self.hosts.len() + self.nets.len() + self.peers.len();
    }

    /// Is a packet from `src` arriving from zone `ingress` blocked? Counts
    /// the hit. Call only when [`Blocklist::is_empty`] is false.
    pub fn check(&mut self, src: IpAddr, ingress: ZoneId, now: Instant) -> bool {
        if let Some(e) = self.hosts.get_mut(&src) {
            if e.live(now) {
                e.hits += 1;
                return true;
            }
        }
        for e in &mut self.nets {
            if e.target_contains(src) && e.live(now) {
                e.hits += 1;
                return true;
            }
        }
        if ingress.is_peer() {
            for (z, e) in &mut self.peers {
                if *z == Some(ingress) && e.live(now) {
                    e.hits += 1;
                    return true;
                }
            }
        }
        false
    }

    /// Blocks `target` (see the module docs for duplicates and the bound).
    pub fn add(
        &mut self,
        target: Target,
        origin: Origin,
        reason: impl Into<String>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(), AddError> {
        self.insert(target, origin, reason.into(), ttl, now, true)
    }

    fn insert(
        &mut self,
        target: Target,
        origin: Origin,
        reason: String,
        ttl: Option<Duration>,
        now: Instant,
        report: bool,
    ) -> Result<(), AddError> {
        let target = match target {
            Target::Net(n) => Target::Net(crate::config::parse::masked(n)),
            t => t,
        };
        let zone = match target {
            Target::Peer(_) => {
                let z = resolve(&self.cfg.peers, &target);
                if z.is_none() && origin != Origin::Config {
                    return Err(AddError::UnknownPeer);
                }
                z
            }
            Target::Net(_) => None,
        };
        let expires = ttl.and_then(|d| now.checked_add(d));
        if let Some(e) = self.find_mut(&target) {
            e.expires = match (e.expires, expires) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if e.origin != Origin::Config || origin == Origin::Config {
                e.origin = origin;
            }
            e.reason = reason.clone();
        } else {
            if self.len >= self.cfg.max_entries && !self.make_room(origin) {
                self.stats.refused += 1;
                if report {
                    self.push(BlockEvent::Refused { target, origin });
                }
                return Err(AddError::Full(self.cfg.max_entries));
            }
            let e = Entry {
                target,
                origin,
                reason: reason.clone(),
                added: now,
                expires,
                hits: 0,
            };
            match (target, target.host()) {
                (_, Some(a)) => {
                    self.hosts.insert(a, e);
                }
                (Target::Peer(_), _) => self.peers.push((zone, e)),
                _ => self.nets.push(e),
            }
            self.len += 1;
        }
        self.stats.added += 1;
        if report {
            self.push(BlockEvent::Blocked {
                target,
                origin,
                reason,
                ttl,
            });
        }
        Ok(())
    }

    /// Frees one slot for an automatic entry by removing the automatic
    /// entry that expires first. False when nothing may be removed.
    fn make_room(&mut self, origin: Origin) -> bool {
        if !origin.automatic() {
            return false;
        }
        let key = |e: &Entry| e.expires;
        let mut best: Option<(Option<Instant>, Target)> = None;
        let all = self
            .hosts
            .values()
            .chain(self.nets.iter())
            .chain(self.peers.iter().map(|(_, e)| e));
        for e in all.filter(|e| e.origin.automatic()) {
            // earliest expiry first; entries without one last
            let better = match (&best, key(e)) {
                (None, _) => true,
                (Some((None, _)), Some(_)) => true,
                (Some((Some(b), _)), Some(x)) => x < *b,
                _ => false,
            };
            if better {
                best = Some((key(e), e.target));
            }
        }
        match best {
            Some((_, t)) => {
                self.take(&t);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    fn find_mut(&mut self, t: &Target) -> Option<&mut Entry> {
        if let Some(a) = t.host() {
            return self.hosts.get_mut(&a);
        }
        match t {
            Target::Peer(_) => self
                .peers
                .iter_mut()
                .map(|(_, e)| e)
                .find(|e| e.target == *t),
            Target::Net(_) => self.nets.iter_mut().find(|e| e.target == *t),
        }
    }

    fn take(&mut self, t: &Target) -> Option<Entry> {
        let e = if let Some(a) = t.host() {
            self.hosts.remove(&a)
        } else if let Some(i) = self.nets.iter().position(|e| e.target == *t) {
            Some(self.nets.swap_remove(i))
        } else if let Some(i) = self.peers.iter().position(|(_, e)| e.target == *t) {
            Some(self.peers.swap_remove(i).1)
        } else {
            None
        };
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    /// Removes an entry (any origin; a config entry comes back with the next
    /// reload of a config that still lists it).
    pub fn remove(&mut self, t: &Target) -> Option<Entry> {
        let t = match *t {
            Target::Net(n) => Target::Net(crate::config::parse::masked(n)),
            t => t,
        };
        let e = self.take(&t)?;
        self.stats.removed += 1;
        self.push(BlockEvent::Unblocked {
            target: t,
            origin: e.origin,
        });
        Some(e)
    }

    /// Removes expired entries (each with an [`BlockEvent::Expired`]).
    pub fn expire(&mut self, now: Instant) {
        if self.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        let all = self
            .hosts
            .values()
            .chain(self.nets.iter())
            .chain(self.peers.iter().map(|(_, e)| e));
        for e in all.filter(|e| !e.live(now)) {
            gone.push(e.target);
        }
        for t in gone {
            if let Some(e) = self.take(&t) {
                self.stats.expired += 1;
                self.push(BlockEvent::Expired {
                    target: t,
                    origin: e.origin,
                    hits: e.hits,
                });
            }
        }
    }

    /// Every entry (hosts, then networks, then peers).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.hosts
            .values()
            .chain(self.nets.iter())
            .chain(self.peers.iter().map(|(_, e)| e))
    }

    /// Blocklist events, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BlockEvent> {
        self.events.pop_front()
    }

    fn push(&mut self, e: BlockEvent) {
        if self.events.len() < EVENT_QUEUE {
            self.events.push_back(e);
        } else {
            self.stats.events_dropped += 1;
        }
    }

    /// `peer:NAME` (or the key, when no configured peer has it), an address,
    /// or a network.
    pub fn target_name(&self, t: &Target) -> String {
        match t {
            Target::Net(n) if Some(n.ip()) == t.host() => n.ip().to_string(),
            Target::Net(n) => n.to_string(),
            Target::Peer(k) => match self.cfg.peers.iter().find(|(_, pk)| pk == k) {
                Some((name, _)) => format!("peer:{name}"),
                None => format!("peer:{}", crate::wg::keys::encode_key(k)),
            },
        }
    }

    /// Parses `ADDR`, `NET/PREFIX`, `peer:NAME` or `peer:BASE64KEY`.
    pub fn parse_target(&self, s: &str) -> Result<Target, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("peer:") {
            if let Some((_, k)) = self.cfg.peers.iter().find(|(n, _)| n == p) {
                return Ok(Target::Peer(*k));
            }
            return match crate::config::parse::key(p) {
                Ok(k) if self.cfg.peers.iter().any(|(_, pk)| *pk == k) => Ok(Target::Peer(k)),
                _ => Err(format!("no peer named {p:?} (nor with that public key)")),
            };
        }
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(Target::addr(a));
        }
        crate::config::parse::cidr(s).map(Target::Net).map_err(|_| {
            format!("bad target {s:?}: expected an address, a network (ADDR/PREFIX) or peer:NAME")
        })
    }
}

impl Entry {
    fn target_contains(&self, a: IpAddr) -> bool {
        matches!(self.target, Target::Net(n) if n.contains(a))
    }
}

fn resolve(peers: &[(String, [u8; 32])], t: &Target) -> Option<ZoneId> {
    match t {
        Target::Peer(k) => peers.iter().position(|(_, pk)| pk == k).map(ZoneId::peer),
        Target::Net(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cfg(max: usize) -> BlockConfig {
        BlockConfig {
            max_entries: max,
            default_ttl: None,
            entries: Vec::new(),
            peers: vec![("alice".into(), [1; 32]), ("bob".into(), [2; 32])],
        }
    }

    fn list(max: usize, now: Instant) -> Blocklist {
        let mut b = Blocklist::new((1, 2));
        b.reconfigure(&cfg(max), now);
        b
    }

    #[test]
    fn address_block_expires_after_its_ttl() {
        let t0 = Instant::now();
        let mut b = list(8, t0);
        assert!(b.is_empty());
        b.add(
            Target::addr(a("100.64.0.2")),
            Origin::Anomaly,
            "port scan",
            Some(Duration::from_secs(5)),
            t0,
        )
        .unwrap();
        assert!(!b.is_empty());
        assert!(b.check(a("100.64.0.2"), ZoneId::peer(0), t0));
        assert!(!b.check(a("100.64.0.3"), ZoneId::peer(0), t0));
        let before = t0 + Duration::from_millis(4999);
        assert!(b.check(a("100.64.0.2"), ZoneId::TUN, before));
        b.expire(before);
        assert_eq!(b.len(), 1);
        let after = t0 + Duration::from_secs(5);
        // stops blocking at the expiry even before the sweep
        assert!(!b.check(a("100.64.0.2"), ZoneId::TUN, after));
        let _ = std::iter::from_fn(|| b.poll_event()).count();
        b.expire(after);
        assert!(b.is_empty());
        assert_eq!(
            b.poll_event(),
            Some(BlockEvent::Expired {
                target: Target::addr(a("100.64.0.2")),
                origin: Origin::Anomaly,
                hits: 2
            })
        );
    }

    #[test]
    fn networks_and_peers_block() {
        let t0 = Instant::now();
        let mut b = list(8, t0);
        b.add(
            Target::Net("10.1.2.3/16".parse().unwrap()),
            Origin::Ctl,
            "",
            None,
            t0,
        )
        .unwrap();
        assert!(b.check(a("10.1.200.1"), ZoneId::TUN, t0));
        assert!(!b.check(a("10.2.0.1"), ZoneId::TUN, t0));
        let bob = b.parse_target("peer:bob").unwrap();
        b.add(bob, Origin::Ctl, "", None, t0).unwrap();
        // bob is zone peer(1): blocked whatever source it uses
        assert!(b.check(a("192.0.2.1"), ZoneId::peer(1), t0));
        assert!(!b.check(a("192.0.2.1"), ZoneId::peer(0), t0));
        assert_eq!(b.target_name(&bob), "peer:bob");
        assert!(b.parse_target("peer:carol").is_err());
        // a reload that renumbers the peers: bob is now zone peer(0)
        let mut c = cfg(8);
        c.peers.reverse();
        b.reconfigure(&c, t0);
        assert!(b.check(a("192.0.2.1"), ZoneId::peer(0), t0));
        assert!(!b.check(a("192.0.2.1"), ZoneId::peer(1), t0));
        assert!(b.remove(&bob).is_some());
        assert!(!b.check(a("192.0.2.1"), ZoneId::peer(0), t0));
    }

    #[test]
    fn size_bound_replaces_automatic_entries_and_refuses_ctl() {
        let t0 = Instant::now();
        let mut b = list(3, t0);
        let ttl = |s| Some(Duration::from_secs(s));
        b.add(Target::addr(a("192.0.2.1")), Origin::Ctl, "", None, t0)
            .unwrap();
        b.add(
            Target::addr(a("192.0.2.2")),
            Origin::Anomaly,
            "",
            ttl(30),
            t0,
        )
        .unwrap();
        b.add(
            Target::addr(a("192.0.2.3")),
            Origin::Anomaly,
            "",
            ttl(10),
            t0,
        )
        .unwrap();
        assert_eq!(b.len(), 3);
        // full: an automatic add replaces the one expiring first (.3)
        b.add(Target::addr(a("192.0.2.4")), Origin::Rule, "", ttl(60), t0)
            .unwrap();
        assert_eq!(b.len(), 3);
        assert!(!b.check(a("192.0.2.3"), ZoneId::TUN, t0));
        assert!(b.check(a("192.0.2.4"), ZoneId::TUN, t0));
        assert_eq!(b.stats.evicted, 1);
        // a ctl add is refused, not replacing anything
        assert_eq!(
            b.add(Target::addr(a("192.0.2.5")), Origin::Ctl, "", None, t0),
            Err(AddError::Full(3))
        );
        assert!(b.check(a("192.0.2.1"), ZoneId::TUN, t0));
        // re-adding a present target does not grow the list
        b.add(
            Target::addr(a("192.0.2.4")),
            Origin::Anomaly,
            "",
            ttl(1),
            t0,
        )
        .unwrap();
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn reload_replaces_config_entries_and_keeps_others() {
        let t0 = Instant::now();
        let mut c = cfg(8);
        c.entries = vec![ConfigEntry {
            target: Target::addr(a("192.0.2.9")),
            reason: "config".into(),
        }];
        let mut b = Blocklist::new((3, 4));
        b.reconfigure(&c, t0);
        b.add(Target::addr(a("192.0.2.1")), Origin::Ctl, "", None, t0)
            .unwrap();
        assert!(b.check(a("192.0.2.9"), ZoneId::TUN, t0));
        c.entries = vec![ConfigEntry {
            target: Target::addr(a("192.0.2.8")),
            reason: "config".into(),
        }];
        b.reconfigure(&c, t0);
        assert!(!b.check(a("192.0.2.9"), ZoneId::TUN, t0));
        assert!(b.check(a("192.0.2.8"), ZoneId::TUN, t0));
        assert!(b.check(a("192.0.2.1"), ZoneId::TUN, t0));
        assert_eq!(b.len(), 2);
    }
}
