//! The rule model: what a rule matches and what it does, after validation.
//!
//! This is the compiled form the config produces (names resolved to zones,
//! sets expanded to CIDR lists). Both evaluators — the linear reference in
//! `linear` and the fast classifier in `classifier` — read it, and must agree
//! on every packet: first match wins, then the chain's policy.

use super::l7::{L7Kind, L7Name, NameList};
use crate::zone::ZoneSet;
use ipnetwork::IpNetwork;

/// A list of CIDRs, possibly negated ("not in any of these").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrMatch {
    pub nets: Vec<IpNetwork>,
    pub negate: bool,
}

/// Inclusive port ranges (a single port is `(p, p)`), possibly negated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMatch {
    pub ranges: Vec<(u16, u16)>,
    pub negate: bool,
}

/// Matches zones (a set; resolved from names and `group:NAME`), possibly negated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneMatch {
    pub zones: ZoneSet,
    pub negate: bool,
}

/// Connection-tracking states as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtStateMask(pub u8);

impl CtStateMask {
    pub const NEW: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    pub const INVALID: u8 = 8;
    pub const ALL: CtStateMask = CtStateMask(15);

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// What to answer with on reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectWith {
    /// TCP RST for TCP, ICMP(v6) port unreachable otherwise.
    #[default]
    Default,
    /// TCP RST (falls back to `Default` for non-TCP).
    TcpReset,
    /// ICMP destination unreachable with this code (v4 codes; mapped for v6:
    /// admin-prohibited 13 -> 1, port 3 -> 4, host 1 -> 3, net 0 -> 0).
    IcmpUnreachable(u8),
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject(RejectWith),
}

/// The chain policy (what happens when no rule matches).
pub type Policy = Action;

/// One rule. `None` / empty fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Optional name for logs (`rule[3]` is used otherwise).
    pub name: Option<String>,
    pub ingress: Option<ZoneMatch>,
    pub egress: Option<ZoneMatch>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    /// IP protocol number.
    pub proto: Option<u8>,
    pub sport: Option<PortMatch>,
    pub dport: Option<PortMatch>,
    /// ICMP / ICMPv6 type and code (only match ICMP packets when set).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// TCP flags: `(mask, value)` — matches when `flags & mask == value`
    /// (only TCP packets match when set).
    pub tcp_flags: Option<(u8, u8)>,
    /// Connection states; `None` is all.
    pub ct_state: Option<CtStateMask>,
    /// IP version restriction (4 or 6), from the CIDRs or explicit.
    pub family: Option<u8>,
    pub action: Action,
    /// Emit a log event when this rule matches.
    pub log: bool,
    /// L7 predicates (forward chain only; see [`super::l7`] for the patterns
    /// and the rules module docs for when they are decided).
    pub tls_sni: Option<NameList>,
    pub http_host: Option<NameList>,
    pub dns_qname: Option<NameList>,
    /// Block the source of matching new-flow packets for this long
    /// (`block = "10m"`, see [`crate::blocklist`]).
    pub block: Option<std::time::Duration>,
    /// Write the packets this rule drops or rejects to the pcap capture
    /// (`capture = true`; needs `[capture] file`, see `io::capture`).
    pub capture: bool,
}

impl Rule {
    /// A rule that matches everything with this action.
    pub fn any(action: Action) -> Self {
        Rule {
            name: None,
            ingress: None,
            egress: None,
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            icmp_type: None,
            icmp_code: None,
            tcp_flags: None,
            ct_state: None,
            family: None,
            action,
            log: false,
            tls_sni: None,
            http_host: None,
            dns_qname: None,
            block: None,
            capture: false,
        }
    }

    /// True when the rule has any L7 predicate (`tls_sni`, `http_host`, `dns_qname`).
    pub fn has_l7(&self) -> bool {
        self.tls_sni.is_some() || self.http_host.is_some() || self.dns_qname.is_some()
    }

    /// The L7 list for names of `kind`.
    pub fn l7_list(&self, kind: L7Kind) -> Option<&NameList> {
        match kind {
            L7Kind::TlsSni => self.tls_sni.as_ref(),
            L7Kind::HttpHost => self.http_host.as_ref(),
            L7Kind::DnsQname => self.dns_qname.as_ref(),
        }
    }

    /// The L7 part of the rule given the flow's (known) name: true for a rule
    /// without L7 predicates; otherwise the flow must have a name whose kind
    /// the rule has a list for, and a pattern of that list must match it.
    pub fn l7_matches(&self, name: Option<&L7Name>) -> bool {
        if !self.has_l7() {
            return true;
        }
        name.is_some_and(|n| self.l7_list(n.kind).is_some_and(|l| l.matches(&n.name)))
    }
}

/// An ordered chain with its default policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    pub rules: Vec<Rule>,
    pub policy: Policy,
}

/// The fields of a packet (plus context) that rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchInput {
    pub ingress: crate::zone::ZoneId,
    pub egress: crate::zone::ZoneId,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub proto: u8,
    /// Ports for TCP/UDP (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    /// ICMP type/code when proto is ICMP/ICMPv6.
    pub icmp: Option<(u8, u8)>,
    /// TCP flags when proto is TCP.
    pub tcp_flags: Option<u8>,
    /// One of the `CtStateMask` bits.
    pub ct_state: u8,
}

/// The outcome of evaluating a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The matching rule, or `None` when the policy decided.
    pub rule: Option<u32>,
    pub log: bool,
}
