//! One tracked flow: its two keys, the cached verdict, counters and the
//! protocol state.
//!
//! The layout is kept compact (168 bytes on 64-bit targets, checked by a
//! test) because a table holds up to a million of these: timestamps are
//! nanoseconds since the table's epoch in a `u64`, TCP window state is 28
//! bytes for both directions, and the state is a one-byte class index.

use crate::verdict::Chain;
use crate::zone::ZoneId;

use super::key::FlowKey;
use super::tcp::{self, TcpWin};
use super::{Dir, TcpState};

/// Class (state/timeout) indices beyond the eight TCP states.
pub(super) const C_UDP_UNREPLIED: u8 = 8;
pub(super) const C_UDP_REPLIED: u8 = 9;
pub(super) const C_ICMP: u8 = 10;
pub(super) const C_OTHER: u8 = 11;
pub(super) const N_CLASSES: usize = 12;

/// Names of the classes, in index order (counters, logs, `state_name`).
pub(super) const CLASS_NAMES: [&str; N_CLASSES] = [
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
    "udp_unreplied",
    "udp_replied",
    "icmp",
    "other",
];

/// Flow flag bits.
pub(super) const FL_LIVE: u8 = 1;
pub(super) const FL_SEEN_REPLY: u8 = 2;
/// Completed its handshake (TCP) or saw a reply (others): not evicted early.
pub(super) const FL_ASSURED: u8 = 4;
/// TCP simultaneous open (kernel SYN_SENT2; reported as SYN_SENT).
pub(super) const FL_S2: u8 = 8;
pub(super) const FL_IS_TCP: u8 = 16;
/// The reply key is not the plain inverse of the original (NAT): set once at
/// insert, as the keys never change afterwards, so the fast path tests a bit
/// instead of comparing two keys on every packet.
pub(super) const FL_XLATE: u8 = 32;

/// "No slot" in the intrusive lists.
pub(super) const NIL: u32 = u32::MAX;

/// A tracked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The key of the original direction (the packet that created the flow).
    pub orig: FlowKey,
    /// The key of the reply direction (`orig.inverse(egress)`, or the NAT tuple).
    pub reply: FlowKey,
    /// The rule-set generation the cached verdict was computed under.
    pub generation: u32,
    /// The chain that accepted the flow.
    pub chain: Chain,
    /// The rule that accepted the flow (`None`: the chain's policy).
    pub rule: Option<u32>,
    /// Packets per direction (index `Dir as usize`); wraps at 2^32.
    pub packets: [u32; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    /// Expiry time, ns since the table's epoch.
    pub(super) deadline: u64,
    /// Unassured list (insertion order) while live, free list while free.
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) win: TcpWin,
    /// State class: a TCP state (0..8) or one of the `C_*` classes.
    pub(super) class: u8,
    pub(super) flags: u8,
}

impl Flow {
    pub(super) fn vacant(key: FlowKey) -> Flow {
        Flow {
            orig: key,
            reply: key,
            generation: 0,
            chain: Chain::Forward,
            rule: None,
            packets: [0; 2],
            bytes: [0; 2],
            deadline: 0,
            prev: NIL,
            next: NIL,
            win: TcpWin::default(),
            class: 0,
            flags: 0,
        }
    }

    #[inline]
    pub(super) fn live(&self) -> bool {
        self.flags & FL_LIVE != 0
    }

    /// The internal TCP state (with SYN_SENT2).
    #[inline]
    pub(super) fn tcp_internal(&self) -> u8 {
        if self.flags & FL_S2 != 0 {
            tcp::S2
        } else {
            self.class
        }
    }

    /// The TCP state, for TCP flows.
    pub fn tcp_state(&self) -> Option<TcpState> {
        if self.flags & FL_IS_TCP == 0 {
            return None;
        }
        Some(match self.class {
            tcp::SS => TcpState::SynSent,
            tcp::SR => TcpState::SynRecv,
            tcp::ES => TcpState::Established,
            tcp::FW => TcpState::FinWait,
            tcp::CW => TcpState::CloseWait,
            tcp::LA => TcpState::LastAck,
            tcp::TW => TcpState::TimeWait,
            _ => TcpState::Close,
        })
    }

    /// A stable snake_case name of the state (`established`, `udp_replied`, ...).
    pub fn state_name(&self) -> &'static str {
        CLASS_NAMES
            .get(usize::from(self.class))
            .copied()
            .unwrap_or("?")
    }

    /// True once a packet of the reply direction was seen.
    pub fn seen_reply(&self) -> bool {
        self.flags & FL_SEEN_REPLY != 0
    }

    /// True when the reply tuple is not the plain inverse of the original
    /// (the flow is translated: NAT). Cached at insert (see [`FlowKey::translates_to`]).
    #[inline]
    pub fn is_translated(&self) -> bool {
        self.flags & FL_XLATE != 0
    }

    /// True once the flow completed its handshake (TCP) or saw a reply (others);
    /// such flows are never evicted to make room.
    pub fn assured(&self) -> bool {
        self.flags & FL_ASSURED != 0
    }

    /// The ICMP / ICMPv6 type and code of the packet that created the flow
    /// (`None` for other protocols). Rules match on the type, so a re-check
    /// after a reload needs it even when the reply comes first.
    pub fn icmp_type(&self) -> Option<(u8, u8)> {
        (self.class == C_ICMP).then_some((self.win.scale[0], self.win.scale[1]))
    }

    /// Stores the creating packet's ICMP type and code (see
    /// [`Flow::icmp_type`]). ICMP flows have no TCP window state, so the
    /// window's two scale bytes hold them: no extra bytes per flow.
    pub(super) fn set_icmp_type(&mut self, ty: u8, code: u8) {
        self.win.scale = [ty, code];
    }

    /// The zone the flow came from.
    pub fn ingress(&self) -> ZoneId {
        self.orig.zone
    }

    /// The zone the flow goes to (where its replies enter from).
    pub fn egress(&self) -> ZoneId {
        self.reply.zone
    }

    /// Counts one packet of `bytes` bytes in direction `dir`.
    #[inline]
    pub fn count(&mut self, dir: Dir, bytes: usize) {
        let d = dir as usize;
        if let (Some(p), Some(b)) = (self.packets.get_mut(d), self.bytes.get_mut(d)) {
            *p = p.wrapping_add(1);
            *b = b.wrapping_add(bytes as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_is_compact() {
        // 2 keys (84) + counters (24) + verdict (13) + deadline (8) + links (8)
        // + TCP windows (28) + class/flags (2) = 167, padded to 168.
        assert!(std::mem::size_of::<FlowKey>() <= 42);
        assert!(
            std::mem::size_of::<Flow>() <= 168,
            "{}",
            std::mem::size_of::<Flow>()
        );
    }
}
