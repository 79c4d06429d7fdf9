//! Userspace NAT: SNAT / masquerade, DNAT port forwards and load-balanced
//! DNAT, for IPv4 and IPv6 (NAT66), without netfilter.
//!
//! What it does, in netfilter's order:
//! - [`Nat::dnat`] runs on a flow's first packet *before* routing and the
//!   filter rules (netfilter's `prerouting` nat hook): the first `dnat` rule
//!   that matches picks a backend (a single `to_address`, or one of several
//!   `backends` by `round-robin`, `weighted` (smooth weighted round-robin, as
//!   nginx), `least-connections` (live tracked flows per backend, divided by the
//!   weight, as IPVS `wlc` without the inactive term) or `source-hash`
//!   (rendezvous hashing of the client address: sticky, and removing one backend
//!   only moves its own clients)); backends marked `down` get no new flows.
//! - The pipeline then routes and filters the *translated* packet.
//! - [`Nat::snat`] runs after the filter accepted (the `postrouting` hook):
//!   the first `snat`/`masquerade` rule that matches the translated packet
//!   (with its egress zone) gives the new source address; [`alloc`] picks the
//!   source port / ICMP echo id.
//! - The binding is the flow's reply tuple in connection tracking
//!   (`Conntrack::insert(.., reply = Some(..))`): no side table, no extra
//!   bytes per flow. A flow is translated iff `reply != orig.inverse(zone)`;
//!   the translation of either direction is read from the two keys
//!   ([`xlate`]). Replies are reverse-translated; ICMP errors about a
//!   translated flow (RELATED) get the quoted header and the outer addresses
//!   rewritten the way Linux `nf_nat_icmp_reply_translation` does.
//!
//! Port allocation ([`alloc`]) follows `nf_nat_l4proto_unique_tuple`: keep the
//! original port if the tuple is free and in range, else start at a random
//! offset (from a seed the caller passes: the core draws no randomness) and try
//! at most [`alloc::MAX_TRIES`] ports; the port class (below 1024 / 1024 and
//! above) is kept; a tuple is free iff connection tracking has no live key
//! equal to the candidate reply tuple, so two live flows never share an
//! external tuple. Exhaustion is an error (the pipeline counts a
//! `nat_exhausted` drop and logs it), never a panic.
//!
//! Masquerade address of the egress zone: for a peer, the gateway's interface
//! address (same family) whose network holds one of the peer's allowed IPs;
//! for a peer with only a default route (an upstream), the interface address
//! whose network holds no other peer's allowed IPs (its tunnel address
//! towards that peer); for `tun`, the rule's `to_address` (an address the host
//! routes into the TUN but does not own — see conf/gateway.toml for the host
//! route / proxy-ARP it needs). A rule without an address for the packet's
//! family and zone does not match.
//!
//! NAT66 caveats: this is stateful NAPT for IPv6 (like Linux `masquerade` for
//! ip6), not RFC 6296 stateless prefix translation; it breaks end-to-end
//! addressing like NAT44 does, and protocols that embed addresses are not
//! fixed up (no ALGs, for v4 or v6).

pub mod alloc;
pub mod health;
pub mod lb;
#[cfg(test)]
mod tests;
pub mod xlate;

use crate::conntrack::{Conntrack, Flow, FlowKey};
use crate::packet::{proto, PacketMeta, L4};
use crate::rules::linear::rule_matches;
use crate::rules::model::{MatchInput, Rule};
use crate::rules::CtStateMask;
use crate::zone::ZoneId;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::time::Instant;

pub use alloc::AllocError;
pub use health::HealthCheck;
pub use lb::{Backend, Strategy};

/// What a NAT rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatAction {
    /// Source to one of `addrs` (a pool: the client address picks one, so a
    /// client keeps its external address), port from `ports` (default: the
    /// whole class of the original port).
    Snat {
        addrs: Vec<IpAddr>,
        ports: Option<(u16, u16)>,
    },
    /// Source to the egress zone's address (`tun_addrs`: the addresses used
    /// when the egress zone is `tun`, per family).
    Masquerade {
        tun_addrs: Vec<IpAddr>,
        ports: Option<(u16, u16)>,
    },
    /// Destination to one of `backends` (a single port forward is one backend).
    Dnat {
        backends: Vec<Backend>,
        strategy: Strategy,
    },
}

/// One `[[nat]]` entry: what it matches (a filter rule's match fields; the
/// rule's action is ignored) and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    pub name: String,
    pub matches: Rule,
    pub action: NatAction,
    /// Clamp the MSS of TCP SYNs of flows this rule translates to the tunnel MTU.
    pub mss_clamp: bool,
    /// Log every binding this rule makes.
    pub log: bool,
    /// TCP connect health checks of the backends (dnat with backends only).
    pub health: Option<health::HealthCheck>,
}

/// The NAT part of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatConfig {
    pub rules: Vec<NatRule>,
    /// The gateway's interface addresses with their prefixes.
    pub local_nets: Vec<IpNetwork>,
    /// Each peer zone with its AllowedIPs (for the masquerade address).
    pub peer_routes: Vec<(ZoneId, Vec<IpNetwork>)>,
    /// The tunnel MTU (for MSS clamping: MTU - 40 over IPv4, MTU - 60 over IPv6).
    pub mtu: u16,
}

/// A DNAT decision for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnatTo {
    pub rule: u32,
    pub backend: u32,
    pub addr: IpAddr,
    /// The new destination port (unchanged when the backend has none).
    pub port: u16,
}

/// An SNAT decision for a new flow (the port is allocated later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatTo {
    pub rule: u32,
    pub addr: IpAddr,
    pub ports: Option<(u16, u16)>,
}

/// NAT counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Flows created with a source translation.
    pub snat_bindings: u64,
    /// Flows created with a destination translation.
    pub dnat_bindings: u64,
    /// New flows refused because no external tuple was free.
    pub exhausted: u64,
    /// Packets rewritten on the established path (both directions).
    pub translated: u64,
    /// ICMP errors whose quoted header was rewritten.
    pub icmp_errors_translated: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
}

/// The NAT engine: rules, masquerade addresses, load-balancer state.
#[derive(Debug, Clone)]
pub struct Nat {
    rules: Vec<NatRule>,
    /// Masquerade address per (zone, family) for peer zones.
    zone_addrs: Vec<(ZoneId, IpAddr)>,
    lb: Vec<lb::LbState>,
    hash_key: (u64, u64),
    mss_v4: u16,
    mss_v6: u16,
    any_mss_clamp: bool,
    any_dnat: bool,
    any_least_conn: bool,
    pub stats: NatStats,
}

/// IPv4 + TCP headers without options (RFC 879: MSS = MTU - 40).
const V4_TCP_HEADERS: u16 = 40;
/// IPv6 + TCP headers without options (RFC 8200 / 879: MSS = MTU - 60).
const V6_TCP_HEADERS: u16 = 60;

/// The masquerade address of every peer zone, per family (see the module docs).
fn masquerade_addrs(
    local: &[IpNetwork],
    peers: &[(ZoneId, Vec<IpNetwork>)],
) -> Vec<(ZoneId, IpAddr)> {
    let mut out = Vec::new();
    for (zone, nets) in peers {
        for v6 in [false, true] {
            let fam = |n: &IpNetwork| n.is_ipv6() == v6;
            // An interface network that holds one of the peer's own (non-default) prefixes.
            let direct = local.iter().filter(|l| fam(l)).find(|l| {
                nets.iter()
                    .filter(|n| fam(n) && n.prefix() > 0)
                    .any(|n| l.contains(n.ip()))
            });
            let upstream = nets.iter().any(|n| fam(n) && n.prefix() == 0);
            let chosen = direct.or_else(|| {
                if !upstream {
                    return None;
                }
                local.iter().filter(|l| fam(l)).find(|l| {
                    !peers.iter().any(|(z, ns)| {
                        z != zone && ns.iter().any(|n| n.prefix() > 0 && l.contains(n.ip()))
                    })
                })
            });
            if let Some(l) = chosen {
                out.push((*zone, l.ip()));
            }
        }
    }
    out
}

impl Nat {
    /// Builds the engine. `hash_key` keys the source hash (random bits).
    pub fn new(cfg: NatConfig, hash_key: (u64, u64)) -> Nat {
        let zone_addrs = masquerade_addrs(&cfg.local_nets, &cfg.peer_routes);
        let lb = cfg
            .rules
            .iter()
            .map(|r| match &r.action {
                NatAction::Dnat { backends, .. } => lb::LbState::new(backends.len()),
                _ => lb::LbState::new(0),
            })
            .collect();
        let mtu = cfg.mtu.max(576);
        Nat {
            any_mss_clamp: cfg.rules.iter().any(|r| r.mss_clamp),
            any_dnat: cfg
                .rules
                .iter()
                .any(|r| matches!(r.action, NatAction::Dnat { .. })),
            any_least_conn: cfg.rules.iter().any(|r| {
                matches!(
                    r.action,
                    NatAction::Dnat {
                        strategy: Strategy::LeastConnections,
                        ..
                    }
                )
            }),
            rules: cfg.rules,
            zone_addrs,
            lb,
            hash_key,
            mss_v4: mtu - V4_TCP_HEADERS,
            mss_v6: mtu - V6_TCP_HEADERS,
            stats: NatStats::default(),
        }
    }

    /// The source-hash key this engine was built with (kept across reloads).
    pub fn hash_key(&self) -> (u64, u64) {
        self.hash_key
    }

    /// No rules: nothing is ever translated.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[NatRule] {
        &self.rules
    }

    /// The name of rule `i` (for traces and logs).
    pub fn rule_name(&self, i: u32) -> &str {
        self.rules.get(i as usize).map_or("?", |r| r.name.as_str())
    }

    /// The masquerade address for `zone` in the family of `like`.
    pub fn zone_addr(&self, zone: ZoneId, like: IpAddr) -> Option<IpAddr> {
        self.zone_addrs
            .iter()
            .find(|(z, a)| *z == zone && a.is_ipv4() == like.is_ipv4())
            .map(|(_, a)| *a)
    }

    fn input(meta: &PacketMeta, ingress: ZoneId, egress: ZoneId) -> MatchInput {
        let (sport, dport) = match meta.l4 {
            L4::Tcp(t) => (t.sport, t.dport),
            L4::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        };
        MatchInput {
            ingress,
            egress,
            src: meta.src,
            dst: meta.dst,
            proto: meta.proto,
            sport,
            dport,
            icmp: match meta.l4 {
                L4::Icmp(i) => Some((i.ty, i.code)),
                _ => None,
            },
            tcp_flags: match meta.l4 {
                L4::Tcp(t) => Some(t.flags),
                _ => None,
            },
            ct_state: CtStateMask::NEW,
        }
    }

    /// The DNAT decision for a new flow's first packet (before routing), or `None`.
    pub fn dnat(&mut self, meta: &PacketMeta, ingress: ZoneId) -> Option<DnatTo> {
        if !self.any_dnat {
            return None;
        }
        let m = Self::input(meta, ingress, ingress);
        for (i, r) in self.rules.iter().enumerate() {
            let NatAction::Dnat { backends, strategy } = &r.action else {
                continue;
            };
            if !rule_matches(&r.matches, &m) {
                continue;
            }
            let state = self.lb.get_mut(i)?;
            let b = lb::pick(
                *strategy,
                backends,
                state,
                meta.src,
                meta.is_v6(),
                self.hash_key,
            )?;
            let be = backends.get(b)?;
            let (_, dport) = meta.ports();
            let port = if matches!(meta.l4, L4::Tcp(_) | L4::Udp { .. }) {
                be.port.unwrap_or(dport)
            } else {
                dport
            };
            return Some(DnatTo {
                rule: i as u32,
                backend: b as u32,
                addr: be.addr,
                port,
            });
        }
        None
    }

    /// The SNAT decision for a new flow's (DNAT-translated) first packet that
    /// the filter accepted, leaving to `egress`; or `None`.
    pub fn snat(&self, meta: &PacketMeta, ingress: ZoneId, egress: ZoneId) -> Option<SnatTo> {
        let m = Self::input(meta, ingress, egress);
        for (i, r) in self.rules.iter().enumerate() {
            let (addr, ports) = match &r.action {
                NatAction::Dnat { .. } => continue,
                NatAction::Snat { addrs, ports } => {
                    let fam: Vec<&IpAddr> = addrs
                        .iter()
                        .filter(|a| a.is_ipv4() == meta.src.is_ipv4())
                        .collect();
                    if fam.is_empty() {
                        continue;
                    }
                    let h = lb::hash_addr(self.hash_key, meta.src, 0) as usize;
                    (fam.get(h % fam.len()).map(|a| **a), *ports)
                }
                NatAction::Masquerade { tun_addrs, ports } => {
                    let a = if egress == ZoneId::TUN || !egress.is_peer() {
                        tun_addrs
                            .iter()
                            .find(|a| a.is_ipv4() == meta.src.is_ipv4())
                            .copied()
                    } else {
                        self.zone_addr(egress, meta.src)
                    };
                    (a, *ports)
                }
            };
            let Some(addr) = addr else { continue };
            if !rule_matches(&r.matches, &m) {
                continue;
            }
            return Some(SnatTo {
                rule: i as u32,
                addr,
                ports,
            });
        }
        None
    }

    /// Whether rule `i` asks for MSS clamping.
    pub fn mss_clamp_rule(&self, i: u32) -> bool {
        self.rules.get(i as usize).is_some_and(|r| r.mss_clamp)
    }

    /// Whether rule `i` logs its bindings.
    pub fn log_rule(&self, i: u32) -> bool {
        self.rules.get(i as usize).is_some_and(|r| r.log)
    }

    /// True when any rule clamps MSS (SYN-ACKs of translated flows are then clamped too).
    pub fn any_mss_clamp(&self) -> bool {
        self.any_mss_clamp
    }

    /// The MSS limit for a packet of this family.
    pub fn mss_limit(&self, v6: bool) -> u16 {
        if v6 {
            self.mss_v6
        } else {
            self.mss_v4
        }
    }

    /// Builds the reply tuple of a new flow with the given translations:
    /// allocates the source port / echo id when the source is translated.
    /// `seed` is fresh randomness from the caller (the start offset).
    #[allow(clippy::too_many_arguments)]
    pub fn binding(
        &self,
        ct: &Conntrack,
        meta: &PacketMeta,
        ingress: ZoneId,
        egress: ZoneId,
        dnat: Option<DnatTo>,
        snat: Option<SnatTo>,
        seed: u64,
        now: Instant,
    ) -> Result<FlowKey, AllocError> {
        let orig = FlowKey::from_meta(ingress, meta);
        let echo = matches!(
            meta.l4,
            L4::Icmp(crate::packet::IcmpInfo {
                echo_id: Some(_),
                ..
            })
        );
        let (dst, dport) = match dnat {
            Some(d) if echo => (d.addr, orig.dport),
            Some(d) => (d.addr, d.port),
            None => (orig.dst, orig.dport),
        };
        let src = snat.map_or(orig.src, |s| s.addr);
        let mut reply = FlowKey {
            zone: egress,
            proto: orig.proto,
            src: dst,
            dst: src,
            sport: if echo { orig.sport } else { dport },
            dport: orig.sport,
        };
        let ported = echo || matches!(meta.l4, L4::Tcp(_) | L4::Udp { .. });
        let taken = ct.key_in_use(&reply, now);
        if !ported || (snat.is_none() && !taken) {
            // No ports to choose, or a destination-only translation whose tuple
            // is free (a clash makes it pick a new source port, as netfilter does).
            if taken {
                return Err(AllocError::Exhausted);
            }
            return Ok(reply);
        }
        let ports = snat.and_then(|s| s.ports);
        let port = alloc::allocate(orig.sport, ports, echo, seed, |p| {
            let mut k = reply;
            k.dport = p;
            if echo {
                k.sport = p;
            }
            !ct.key_in_use(&k, now)
        })?;
        reply.dport = port;
        if echo {
            reply.sport = port;
        }
        Ok(reply)
    }

    /// Notes a new binding (counters, least-connections).
    pub fn bound(&mut self, dnat: Option<DnatTo>, snat: Option<SnatTo>) {
        if let Some(d) = dnat {
            self.stats.dnat_bindings += 1;
            if let Some(s) = self.lb.get_mut(d.rule as usize) {
                s.opened(d.backend as usize);
            }
        }
        if snat.is_some() {
            self.stats.snat_bindings += 1;
        }
    }

    /// Recounts live connections per backend for `least-connections` from the
    /// flow table (call periodically; between recounts new bindings count up).
    pub fn recount<'a>(&mut self, flows: impl Iterator<Item = &'a Flow>) {
        if !self.any_least_conn {
            return;
        }
        for s in &mut self.lb {
            s.reset_conns();
        }
        for f in flows {
            if !xlate::is_translated(f) || closing(f) {
                continue;
            }
            for (i, r) in self.rules.iter().enumerate() {
                let NatAction::Dnat {
                    backends,
                    strategy: Strategy::LeastConnections,
                } = &r.action
                else {
                    continue;
                };
                if let Some(b) = backends.iter().position(|b| {
                    b.addr == f.reply.src
                        && b.port.is_none_or(|p| p == f.reply.sport)
                        && f.reply.src != f.orig.dst
                }) {
                    if let Some(s) = self.lb.get_mut(i) {
                        s.opened(b);
                    }
                }
            }
        }
    }

    /// Live connections per backend of rule `i` (least-connections bookkeeping).
    pub fn backend_conns(&self, i: u32) -> Vec<u32> {
        self.lb
            .get(i as usize)
            .map(|s| s.conns().to_vec())
            .unwrap_or_default()
    }
}

/// One load-balancer backend as the control interface shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    pub rule: u32,
    pub index: u32,
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub weight: u32,
    /// `down = true` in the config.
    pub config_down: bool,
    /// The operator override (`Some(true)` drained, `Some(false)` forced up).
    pub admin: Option<bool>,
    /// The health check's verdict (`None`: the rule has no health check).
    pub healthy: Option<bool>,
    /// Takes new flows.
    pub up: bool,
    /// Live connections (least-connections bookkeeping, 0 for other strategies).
    pub conns: u32,
}

/// A backend to health-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTarget {
    pub rule: u32,
    pub backend: u32,
    pub addr: std::net::SocketAddr,
    pub check: HealthCheck,
}

/// Run-time backend changes that name no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("no load-balancer backend {0}{1}")]
    NoSuchBackend(String, String),
    #[error("no dnat rule named {0:?}")]
    NoSuchRule(String),
}

impl Nat {
    /// Every backend of every `dnat` rule with its state.
    pub fn backends(&self) -> Vec<BackendState> {
        let mut v = Vec::new();
        for (ri, r) in self.rules.iter().enumerate() {
            let NatAction::Dnat { backends, .. } = &r.action else {
                continue;
            };
            let Some(st) = self.lb.get(ri) else { continue };
            for (bi, b) in backends.iter().enumerate() {
                v.push(BackendState {
                    rule: ri as u32,
                    index: bi as u32,
                    addr: b.addr,
                    port: b.port,
                    weight: b.weight,
                    config_down: b.down,
                    admin: st.admin(bi),
                    healthy: r.health.map(|_| st.health(bi).is_up()),
                    up: st.is_up(bi, b),
                    conns: st.conns().get(bi).copied().unwrap_or(0),
                });
            }
        }
        v
    }

    /// Drains (`Some(true)`), forces up (`Some(false)`) or returns to the
    /// config (`None`) every backend at `addr` (and `port`, when given) of
    /// the rule named `rule` (or of every dnat rule). Returns how many
    /// backends changed; naming no backend is an error.
    pub fn set_backend_admin(
        &mut self,
        rule: Option<&str>,
        addr: IpAddr,
        port: Option<u16>,
        drained: Option<bool>,
    ) -> Result<usize, BackendError> {
        if let Some(name) = rule {
            let known = self
                .rules
                .iter()
                .any(|r| r.name == name && matches!(r.action, NatAction::Dnat { .. }));
            if !known {
                return Err(BackendError::NoSuchRule(name.to_string()));
            }
        }
        let mut n = 0;
        for (ri, r) in self.rules.iter().enumerate() {
            let NatAction::Dnat { backends, .. } = &r.action else {
                continue;
            };
            if rule.is_some_and(|name| r.name != name) {
                continue;
            }
            let Some(st) = self.lb.get_mut(ri) else {
                continue;
            };
            for (bi, b) in backends.iter().enumerate() {
                if b.addr == addr && port.is_none_or(|p| b.port == Some(p)) {
                    st.set_admin(bi, drained);
                    n += 1;
                }
            }
        }
        if n == 0 {
            let shown = match port {
                Some(p) => std::net::SocketAddr::new(addr, p).to_string(),
                None => addr.to_string(),
            };
            let within = rule.map_or(String::new(), |r| format!(" in rule {r:?}"));
            return Err(BackendError::NoSuchBackend(shown, within));
        }
        Ok(n)
    }

    /// The backends to health-check (rules with `health_check`, backends with a port).
    pub fn health_targets(&self) -> Vec<HealthTarget> {
        let mut v = Vec::new();
        for (ri, r) in self.rules.iter().enumerate() {
            let (NatAction::Dnat { backends, .. }, Some(check)) = (&r.action, r.health) else {
                continue;
            };
            for (bi, b) in backends.iter().enumerate() {
                if let Some(p) = b.port {
                    v.push(HealthTarget {
                        rule: ri as u32,
                        backend: bi as u32,
                        addr: std::net::SocketAddr::new(b.addr, p),
                        check,
                    });
                }
            }
        }
        v
    }

    /// Feeds one health-check result; returns the backend's new state when
    /// it changed (for a log line).
    pub fn report_health(&mut self, rule: u32, backend: u32, ok: bool) -> Option<bool> {
        self.lb
            .get_mut(rule as usize)
            .and_then(|s| s.report_health(backend as usize, ok))
    }

    /// Keeps the run-time backend state (operator overrides, health) of
    /// `old` across a reload, for backends with the same rule name, address
    /// and port.
    pub fn carry_backend_state(&mut self, old: &Nat) {
        for (ri, r) in self.rules.iter().enumerate() {
            let NatAction::Dnat { backends, .. } = &r.action else {
                continue;
            };
            let Some((oi, or)) = old
                .rules
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == r.name && matches!(o.action, NatAction::Dnat { .. }))
            else {
                continue;
            };
            let NatAction::Dnat { backends: ob, .. } = &or.action else {
                continue;
            };
            let (Some(os), Some(st)) = (old.lb.get(oi), self.lb.get_mut(ri)) else {
                continue;
            };
            for (bi, b) in backends.iter().enumerate() {
                if let Some(obi) = ob.iter().position(|o| o.addr == b.addr && o.port == b.port) {
                    st.set_admin(bi, os.admin(obi));
                    if r.health.is_some() && or.health.is_some() {
                        st.set_health(bi, os.health(obi));
                    }
                }
            }
        }
    }
}

/// What a NAT log event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatEventKind {
    /// A binding was made (rules with `log = true`).
    Binding,
    /// No free external tuple: the flow was dropped.
    Exhausted,
}

/// A NAT log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatEvent {
    pub kind: NatEventKind,
    pub rule: u32,
    pub ingress: ZoneId,
    pub proto: u8,
    pub orig: xlate::Tuple,
    /// The translated tuple (`None` when exhausted).
    pub xlated: Option<xlate::Tuple>,
}

impl NatEvent {
    pub fn binding(rule: u32, orig: &FlowKey, x: xlate::Tuple) -> NatEvent {
        NatEvent {
            kind: NatEventKind::Binding,
            rule,
            ingress: orig.zone,
            proto: orig.proto,
            orig: key_tuple(orig),
            xlated: Some(x),
        }
    }

    pub fn exhausted(rule: u32, orig: &FlowKey) -> NatEvent {
        NatEvent {
            kind: NatEventKind::Exhausted,
            rule,
            ingress: orig.zone,
            proto: orig.proto,
            orig: key_tuple(orig),
            xlated: None,
        }
    }

    /// One log line (`rule_name` resolved by the caller).
    pub fn line(&self, rule_name: &str, zones: &crate::zone::ZoneTable) -> String {
        use crate::pipeline::tuple_line;
        match (self.kind, self.xlated) {
            (NatEventKind::Binding, Some(x)) => format!(
                "nat {rule_name}: binding {} => {} (from {})",
                tuple_line(self.proto, &self.orig),
                tuple_line(self.proto, &x),
                zones.name(self.ingress)
            ),
            _ => format!(
                "nat {rule_name}: exhausted, no free external port; dropped {} (from {})",
                tuple_line(self.proto, &self.orig),
                zones.name(self.ingress)
            ),
        }
    }
}

fn key_tuple(k: &FlowKey) -> xlate::Tuple {
    xlate::Tuple {
        src: k.src,
        dst: k.dst,
        sport: k.sport,
        dport: k.dport,
    }
}

/// A TCP flow that is closing no longer counts as a connection.
fn closing(f: &Flow) -> bool {
    use crate::conntrack::TcpState::*;
    matches!(
        f.tcp_state(),
        Some(FinWait | CloseWait | LastAck | TimeWait | Close)
    )
}

/// Port-carrying protocols (for the docs and config checks).
pub fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP)
}
