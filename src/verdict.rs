//! What the pipeline decides for a packet, and why it drops one.
//!
//! Every drop carries a [`DropReason`]; its [`DropReason::name`] is the label
//! that counters, logs and metrics use, so each distinct reason is visible.

use crate::packet::ParseError;
use crate::zone::ZoneId;

/// Index of a rule within its chain (as written in the config).
pub type RuleIndex = u32;

/// The rule chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chain {
    /// To the gateway itself.
    Input,
    /// Through the gateway.
    Forward,
    /// From the gateway itself.
    Output,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Input, Chain::Forward, Chain::Output];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Input => "input",
            Chain::Forward => "forward",
            Chain::Output => "output",
        }
    }
}

/// Why a packet was dropped (or rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The packet did not parse.
    Malformed(ParseError),
    /// A rule with action drop or reject matched.
    Rule { chain: Chain, rule: RuleIndex },
    /// No rule matched and the chain's policy is drop/reject.
    Policy(Chain),
    /// Connection tracking found the packet invalid (bad flags, out of window, ...).
    Invalid,
    /// The source address is not in the sending peer's allowed IPs.
    SpoofedSource,
    /// No route for the destination.
    NoRoute,
    /// The connection tracking table is full.
    ConntrackFull,
    /// Fragment reassembly failed (overlap, too many, memory bound, timeout).
    Fragment,
    /// The egress tunnel has no valid session (kill switch).
    KillSwitch,
    /// Rate limit exceeded.
    RateLimited,
    /// The source or peer is on the blocklist.
    Blocked,
    /// The IDS decided to drop.
    Ids,
    /// NAT could not allocate a binding.
    NatExhausted,
    /// TTL/hop limit expired in the gateway.
    TtlExpired,
    /// A segment of a flow waiting for its L7 decision arrived out of order
    /// (or the pending buffers were full); the client retransmits it.
    L7Pending,
}

impl DropReason {
    /// A stable snake_case label for counters, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::Malformed(e) => e.name(),
            DropReason::Rule { .. } => "rule",
            DropReason::Policy(_) => "policy",
            DropReason::Invalid => "invalid",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::NoRoute => "no_route",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::Fragment => "fragment",
            DropReason::KillSwitch => "kill_switch",
            DropReason::RateLimited => "rate_limited",
            DropReason::Blocked => "blocked",
            DropReason::Ids => "ids",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::L7Pending => "l7_pending",
        }
    }
}

/// The pipeline's decision for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) packet to this zone.
    Forward(ZoneId),
    /// The packet is for the gateway itself and was consumed (any answer is queued
    /// for `Pipeline::poll_transmit`).
    Local,
    /// Held for fragment reassembly; the datagram's fragments come out of
    /// `Pipeline::poll_transmit` once it is complete and allowed.
    Held,
    /// Dropped silently.
    Drop(DropReason),
    /// Dropped with an answer (TCP RST or ICMP unreachable) queued for
    /// `Pipeline::poll_transmit` when one may be sent.
    Reject(DropReason),
}
