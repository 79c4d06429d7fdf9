//! The linear reference evaluator: rules are tried one after another, first
//! match wins, else the chain's policy decides.
//!
//! This is the obviously-correct definition of what a rule means; the compiled
//! [`Classifier`](super::classifier::Classifier) is property-tested to give
//! exactly the same [`Decision`] (same action, same rule index) on every
//! input. Its cost is linear in the number of rules, so the pipeline uses the
//! classifier; this evaluator is kept for tests, tracing and benchmarks.
//!
//! Semantics of a [`Rule`] (every field that is set must match; `None` is a
//! wildcard):
//!
//! - `family`: `Some(4)` matches only IPv4 packets, `Some(6)` only IPv6 ones
//!   (the version is that of `MatchInput::src`); any other value matches
//!   nothing.
//! - `ingress` / `egress`: `zones.contains(zone) XOR negate`. Groups are
//!   already expanded into the set, so `group:NAME` is just a set of peers.
//! - `src` / `dst`: the address is in any of `nets` (as
//!   [`IpNetwork::contains`](ipnetwork::IpNetwork::contains): host bits of the
//!   net are ignored), XOR `negate`. A net of the other family never contains
//!   the address, so a negated IPv4-only list matches every IPv6 address and an
//!   empty non-negated list matches nothing.
//! - `proto`: equal to the IP protocol number (ICMPv6 is 58, not 1).
//! - `sport` / `dport`: the packet must be TCP (6) or UDP (17) — a rule with
//!   ports never matches anything else, negated or not — and then the port is
//!   in any inclusive range, XOR `negate`.
//! - `icmp_type` / `icmp_code`: the packet must carry ICMP/ICMPv6 type and code
//!   (`MatchInput::icmp` is `Some`), and each set field is equal.
//! - `tcp_flags = (mask, value)`: the packet must be TCP (`MatchInput::tcp_flags`
//!   is `Some`) and `flags & mask == value`.
//! - `ct_state`: `mask.contains(input.ct_state)`.
//!
//! - `tls_sni` / `http_host` / `dns_qname` (the L7 predicates): ignored by
//!   [`evaluate`] and [`rule_matches`] — they describe the chain *before* the
//!   flow's L7 name is known, where a rule with L7 predicates is a candidate
//!   whenever its other fields match (the pipeline then holds the decision
//!   open, see the rules module docs). [`evaluate_named`] evaluates with the
//!   name known: a rule with L7 predicates matches only when
//!   [`Rule::l7_matches`] (the flow has a name of a kind the rule lists, and
//!   one of that list's patterns matches it); several L7 fields on one rule
//!   are alternatives (a flow has one name of one kind).
//!
//! This mirrors iptables/nftables chain traversal (first terminal verdict
//! wins, the base chain's policy applies when nothing matched), with the
//! port/ICMP/flag matches implying their protocol the way nftables'
//! `tcp dport` / `icmp type` expressions do.

use super::l7::L7Name;
use super::model::{AddrMatch, ChainDef, Decision, MatchInput, PortMatch, Rule, ZoneMatch};
use crate::zone::ZoneId;
use std::net::IpAddr;

/// IP protocol numbers that carry ports for `sport`/`dport` (IANA: TCP 6, UDP 17).
pub const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Evaluates `chain` rule by rule: the first matching rule decides, else the policy.
pub fn evaluate(chain: &ChainDef, m: &MatchInput) -> Decision {
    for (i, rule) in chain.rules.iter().enumerate() {
        if rule_matches(rule, m) {
            return Decision {
                action: rule.action,
                rule: Some(i as u32),
                log: rule.log,
            };
        }
    }
    Decision {
        action: chain.policy,
        rule: None,
        log: false,
    }
}

/// Like [`evaluate`] with the flow's L7 name known (`None`: the flow has no
/// name): rules with L7 predicates must also match the name.
pub fn evaluate_named(chain: &ChainDef, m: &MatchInput, name: Option<&L7Name>) -> Decision {
    for (i, rule) in chain.rules.iter().enumerate() {
        if rule_matches(rule, m) && rule.l7_matches(name) {
            return Decision {
                action: rule.action,
                rule: Some(i as u32),
                log: rule.log,
            };
        }
    }
    Decision {
        action: chain.policy,
        rule: None,
        log: false,
    }
}

/// True when every set field of `rule` matches `m` (see the module docs;
/// the L7 predicates are not looked at).
pub fn rule_matches(rule: &Rule, m: &MatchInput) -> bool {
    if let Some(f) = rule.family {
        if f != ip_version(m.src) {
            return false;
        }
    }
    if let Some(p) = rule.proto {
        if p != m.proto {
            return false;
        }
    }
    if let Some(ct) = rule.ct_state {
        if !ct.contains(m.ct_state) {
            return false;
        }
    }
    if let Some((mask, value)) = rule.tcp_flags {
        match m.tcp_flags {
            Some(f) if f & mask == value => {}
            _ => return false,
        }
    }
    if rule.icmp_type.is_some() || rule.icmp_code.is_some() {
        let Some((t, c)) = m.icmp else {
            return false;
        };
        if rule.icmp_type.is_some_and(|rt| rt != t) || rule.icmp_code.is_some_and(|rc| rc != c) {
            return false;
        }
    }
    if let Some(z) = &rule.ingress {
        if !zone_matches(z, m.ingress) {
            return false;
        }
    }
    if let Some(z) = &rule.egress {
        if !zone_matches(z, m.egress) {
            return false;
        }
    }
    if rule.sport.is_some() || rule.dport.is_some() {
        if !has_ports(m.proto) {
            return false;
        }
        if rule
            .sport
            .as_ref()
            .is_some_and(|p| !port_matches(p, m.sport))
        {
            return false;
        }
        if rule
            .dport
            .as_ref()
            .is_some_and(|p| !port_matches(p, m.dport))
        {
            return false;
        }
    }
    if rule.src.as_ref().is_some_and(|a| !addr_matches(a, m.src)) {
        return false;
    }
    if rule.dst.as_ref().is_some_and(|a| !addr_matches(a, m.dst)) {
        return false;
    }
    true
}

/// 4 or 6.
pub fn ip_version(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

/// True for the protocols whose ports `sport`/`dport` look at.
pub fn has_ports(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}

/// `zones.contains(z) XOR negate`.
pub fn zone_matches(z: &ZoneMatch, zone: ZoneId) -> bool {
    z.zones.contains(zone) != z.negate
}

/// Address in any net (same family only), XOR `negate`.
pub fn addr_matches(a: &AddrMatch, addr: IpAddr) -> bool {
    a.nets.iter().any(|n| n.contains(addr)) != a.negate
}

/// Port in any inclusive range, XOR `negate`.
pub fn port_matches(p: &PortMatch, port: u16) -> bool {
    p.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi) != p.negate
}
