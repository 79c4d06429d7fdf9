//! Connection-tracking settings: table size and per-state timeouts.
//!
//! Defaults follow the Linux kernel's (`nf_conntrack_tcp_timeout_*`,
//! `nf_conntrack_udp_timeout*`, `nf_conntrack_icmp_timeout`), except the
//! established TCP timeout: the kernel's 5 days keeps dead flows for too long
//! on a gateway; 1 day is used here (still far above any keepalive interval).

use std::time::Duration;

/// Per-state timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    /// UDP flow that has seen packets one way only.
    pub udp_unreplied: Duration,
    /// UDP flow that has seen a reply.
    pub udp_replied: Duration,
    pub icmp: Duration,
    /// Other IP protocols.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(86_400),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_replied: s(120),
            icmp: s(30),
            other: s(600),
        }
    }
}

/// Connection-tracking table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtConfig {
    /// Maximum number of flows in the table.
    pub max_entries: usize,
    pub timeouts: Timeouts,
    /// Pick up TCP connections mid-stream (a non-SYN packet with no flow starts
    /// one), like the kernel's `nf_conntrack_tcp_loose`. Off by default: a
    /// non-SYN packet without a flow is INVALID.
    pub tcp_loose: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            max_entries: 262_144,
            timeouts: Timeouts::default(),
            tcp_loose: false,
        }
    }
}
