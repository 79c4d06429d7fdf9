//! Connection tracking: the flow table.
//!
//! Flows are keyed by ingress zone + 5-tuple ([`FlowKey`]); both directions of
//! a flow (the original key and the reply key) map to one entry. The semantics
//! follow the Linux kernel's nf_conntrack:
//!
//! - TCP: the kernel's state machine and window tracking (see `tcp`); invalid
//!   flag combinations, packets not allowed in the state and out-of-window
//!   packets are INVALID and change nothing (no state, window, timeout or
//!   seen-reply change). A SYN in TIME_WAIT/CLOSE deletes the old flow and the
//!   SYN may start a new one. Without `tcp_loose`, a non-SYN packet with no
//!   flow is INVALID.
//! - UDP, ICMP echo and other protocols: NEW until a reply is seen, then
//!   ESTABLISHED (a packet of a known flow is reported as `CtState::New` while
//!   the flow has seen no reply, as the kernel's ctinfo does).
//!   An unsolicited ICMP echo reply is INVALID.
//! - ICMP errors are RELATED to the flow named by their quoted (inner) header,
//!   looked up as the inverse of the quoted packet seen from the error's
//!   ingress zone; otherwise INVALID. They refresh nothing.
//! - Per-state timeouts ([`Timeouts`]); every accepted packet refreshes the
//!   flow's timeout for its new state (kernel "ignored" TCP packets do not).
//!   A flow whose timeout has passed is absent for [`Conntrack::track`] and
//!   [`Conntrack::insert`] even before [`Conntrack::expire`] sweeps it.
//!
//! The table is bounded ([`CtConfig::max_entries`]). When it is full, `insert`
//! first drops an expired flow if one is at hand, then the oldest flow that is
//! not assured (TCP: never reached ESTABLISHED through the handshake; others:
//! never saw a reply), and only then refuses. So a SYN flood can only evict
//! its own kind, never established flows (the kernel's `early_drop` does the
//! same, by sampling).
//!
//! Layout: flows live in a slab (`Vec<Flow>`, free slots chained); the index is
//! a `hashbrown::HashTable<u32>` of `slot << 1 | direction` for both keys,
//! compared against the slab entry, so the index costs ~5 bytes per key slot.
//! Hashing is keyed (`FlowHasher`: a keyed folded multiply, see `key`). [`Conntrack::track`] never allocates; flow
//! ids are slot numbers and are reused after a flow is removed.
//! The sweep is a clock hand over the slab, a bounded number of slots per call.

mod config;
mod flow;
mod key;
mod tcp;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use config::{CtConfig, Timeouts};
pub use flow::Flow;
pub use key::{FlowHasher, FlowKey};

use key::KeyRef;

use std::time::{Duration, Instant};

use hashbrown::HashTable;

use crate::packet::{proto, IcmpInfo, PacketMeta, TcpInfo, L4};
use crate::rules::CtStateMask;
use crate::zone::ZoneId;

use flow::{
    CLASS_NAMES, C_ICMP, C_OTHER, C_UDP_REPLIED, C_UDP_UNREPLIED, FL_ASSURED, FL_IS_TCP, FL_LIVE,
    FL_S2, FL_SEEN_REPLY, FL_XLATE, NIL, N_CLASSES,
};

/// The connection state of a packet, as rules match it (`ct_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

impl CtState {
    /// The bit of this state in a [`CtStateMask`].
    pub fn mask_bit(self) -> u8 {
        match self {
            CtState::New => CtStateMask::NEW,
            CtState::Established => CtStateMask::ESTABLISHED,
            CtState::Related => CtStateMask::RELATED,
            CtState::Invalid => CtStateMask::INVALID,
        }
    }
}

/// Direction of a packet relative to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The direction of the packet that created the flow.
    Original = 0,
    Reply = 1,
}

impl Dir {
    pub fn opposite(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }

    fn from_bit(b: u32) -> Dir {
        if b & 1 == 0 {
            Dir::Original
        } else {
            Dir::Reply
        }
    }
}

/// Identifies a flow in the table (a slot number; reused after removal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId(pub u32);

/// TCP connection states (the kernel's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

/// Why connection tracking called a packet INVALID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// A TCP flag combination no stack sends (SYN+RST, SYN+FIN, FIN without ACK, none, ...).
    BadFlags,
    /// A TCP segment outside the tracked window.
    OutOfWindow,
    /// No flow: non-SYN TCP without a flow, an ICMP error naming no flow,
    /// an unsolicited echo reply.
    NoFlow,
    /// The packet is not allowed in its flow's state or direction (e.g. a
    /// SYN/ACK from the original side, an echo reply travelling the original way).
    BadState,
    /// TCP/UDP/ICMP without its transport header (a non-first fragment).
    NoTransport,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 5] = [
        InvalidReason::BadFlags,
        InvalidReason::OutOfWindow,
        InvalidReason::NoFlow,
        InvalidReason::BadState,
        InvalidReason::NoTransport,
    ];

    /// A stable snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            InvalidReason::BadFlags => "bad_flags",
            InvalidReason::OutOfWindow => "out_of_window",
            InvalidReason::NoFlow => "no_flow",
            InvalidReason::BadState => "bad_state",
            InvalidReason::NoTransport => "no_transport",
        }
    }
}

/// What connection tracking says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// No flow; this packet may start one (TCP SYN without ACK, UDP, ICMP echo
    /// request / non-error ICMP, other protocols).
    New,
    /// A packet of a known flow. `state` is `CtState::New` while the flow has
    /// seen no reply (kernel semantics), else `Established`.
    Tracked {
        id: FlowId,
        dir: Dir,
        state: CtState,
    },
    /// An ICMP error whose inner header names a known flow (`dir` = the
    /// direction the error travels relative to that flow).
    Related {
        id: FlowId,
        dir: Dir,
    },
    Invalid(InvalidReason),
}

impl Track {
    /// The `ct_state` rules see for this packet.
    pub fn ct_state(&self) -> CtState {
        match self {
            Track::New => CtState::New,
            Track::Tracked { state, .. } => *state,
            Track::Related { .. } => CtState::Related,
            Track::Invalid(_) => CtState::Invalid,
        }
    }
}

/// Why a flow could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CtError {
    #[error("connection tracking table full (no flow could be evicted)")]
    Full,
    #[error("a live flow already uses this tuple")]
    Exists,
    #[error("this packet cannot start a flow")]
    NotNew,
}

/// Table statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtStats {
    /// Flows stored (including expired ones not yet swept).
    pub entries: usize,
    pub max_entries: usize,
    /// Flows per state, by state name (see [`Flow::state_name`]).
    pub by_state: [(&'static str, u64); 12],
    /// Flows that may be evicted to make room.
    pub unassured: u64,
    pub inserted: u64,
    /// Removed by `remove`, reopen or flush.
    pub removed: u64,
    /// Unassured flows evicted to make room.
    pub evicted_early: u64,
    /// Inserts refused because the table was full.
    pub refused_full: u64,
    pub expired: u64,
    /// INVALID verdicts by reason.
    pub invalid: [(&'static str, u64); 5],
}

/// Timeouts converted to nanoseconds, indexed by state class.
fn timeout_table(t: &Timeouts) -> [u64; N_CLASSES] {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    [
        ns(t.tcp_syn_sent),
        ns(t.tcp_syn_recv),
        ns(t.tcp_established),
        ns(t.tcp_fin_wait),
        ns(t.tcp_close_wait),
        ns(t.tcp_last_ack),
        ns(t.tcp_time_wait),
        ns(t.tcp_close),
        ns(t.udp_unreplied),
        ns(t.udp_replied),
        ns(t.icmp),
        ns(t.other),
    ]
}

/// Highest slot number: the index stores `slot << 1 | dir` in a `u32`.
const MAX_SLOTS: usize = (u32::MAX >> 1) as usize;
/// Slots the insert path inspects for an expired flow before evicting a live one.
const INSERT_SWEEP: usize = 8;
/// First slab allocation (flows): small tables stay small.
const MIN_GROW: usize = 1024;

fn is_echo_reply(meta: &PacketMeta, i: &IcmpInfo) -> bool {
    (meta.proto == proto::ICMP && i.ty == 0) || (meta.proto == proto::ICMPV6 && i.ty == 129)
}

fn is_echo_request(meta: &PacketMeta, i: &IcmpInfo) -> bool {
    (meta.proto == proto::ICMP && i.ty == 8) || (meta.proto == proto::ICMPV6 && i.ty == 128)
}

fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6)
}

/// The connection-tracking table. Sans-IO: every call takes `now`.
#[derive(Debug)]
pub struct Conntrack {
    cfg: CtConfig,
    max: usize,
    timeouts: [u64; N_CLASSES],
    hasher: FlowHasher,
    epoch: Instant,
    /// The last `now` converted by `ns_cached` and its value.
    last_now: Instant,
    last_ns: u64,
    slab: Vec<Flow>,
    free_head: u32,
    index: HashTable<u32>,
    len: usize,
    /// Unassured flows, oldest first (doubly linked through the slab).
    ua_head: u32,
    ua_tail: u32,
    ua_len: u64,
    hand: usize,
    by_class: [u64; N_CLASSES],
    inserted: u64,
    removed: u64,
    evicted_early: u64,
    refused_full: u64,
    expired: u64,
    invalid: [u64; 5],
    report_ended: bool,
    ended: std::collections::VecDeque<Ended>,
    ended_lost: u64,
}

/// Most ended flows waiting in the queue: 8192 clones of ~170 bytes is
/// ~1.4 MiB, far more than one `expire` batch the pipeline asks for.
pub const ENDED_MAX: usize = 8192;

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// Its timeout passed.
    Expired,
    /// Removed by [`Conntrack::remove`] (a revoked flow, `ctl conntrack flush` with a filter).
    Removed,
    /// An unassured flow evicted to make room (table pressure).
    Evicted,
    /// A TCP flow re-opened by a new SYN on the same tuple.
    Reopened,
    /// [`Conntrack::flush`].
    Flushed,
}

impl EndCause {
    pub fn name(self) -> &'static str {
        match self {
            EndCause::Expired => "timeout",
            EndCause::Removed => "removed",
            EndCause::Evicted => "evicted",
            EndCause::Reopened => "reopened",
            EndCause::Flushed => "flushed",
        }
    }
}

/// A flow that left the table, with its final counters.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The slot it had (reused by later flows).
    pub id: FlowId,
    pub flow: Flow,
    pub cause: EndCause,
}

/// The hash of an index entry (`slot << 1 | direction`): its key's.
fn entry_hash(slab: &[Flow], hasher: &FlowHasher, e: u32) -> u64 {
    slab.get((e >> 1) as usize).map_or(0, |f| {
        if e & 1 == 0 {
            f.orig.hash_with(hasher)
        } else {
            f.reply.hash_with(hasher)
        }
    })
}

impl Conntrack {
    /// An empty table. `hash_key` keys the flow hash (pick it at random); `now` is the
    /// table's epoch.
    pub fn new(cfg: CtConfig, hash_key: (u64, u64), now: Instant) -> Self {
        Conntrack {
            max: cfg.max_entries.min(MAX_SLOTS),
            timeouts: timeout_table(&cfg.timeouts),
            cfg,
            hasher: FlowHasher::new(hash_key.0, hash_key.1),
            epoch: now,
            last_now: now,
            last_ns: 0,
            slab: Vec::new(),
            free_head: NIL,
            index: HashTable::new(),
            len: 0,
            ua_head: NIL,
            ua_tail: NIL,
            ua_len: 0,
            hand: 0,
            by_class: [0; N_CLASSES],
            inserted: 0,
            removed: 0,
            evicted_early: 0,
            refused_full: 0,
            expired: 0,
            invalid: [0; 5],
            report_ended: false,
            ended: std::collections::VecDeque::new(),
            ended_lost: 0,
        }
    }

    /// Turns on the ended-flow queue: from now on every flow that leaves the
    /// table (expiry, removal, eviction, reopen, flush) is queued for
    /// [`Conntrack::poll_ended`] (at most [`ENDED_MAX`] waiting; more are
    /// counted in [`Conntrack::ended_lost`]). Off by default: no cost.
    pub fn set_report_ended(&mut self, on: bool) {
        self.report_ended = on;
        if !on {
            self.ended.clear();
        }
    }

    /// The next ended flow (oldest first). Drain after every call that may
    /// remove flows (`track`, `insert`, `remove`, `expire`, `flush`).
    #[must_use]
    pub fn poll_ended(&mut self) -> Option<Ended> {
        self.ended.pop_front()
    }

    /// True if ended flows wait in the queue.
    pub fn has_ended(&self) -> bool {
        !self.ended.is_empty()
    }

    /// Ended flows not queued because the queue was full.
    pub fn ended_lost(&self) -> u64 {
        self.ended_lost
    }

    pub fn config(&self) -> &CtConfig {
        &self.cfg
    }

    /// `now` as nanoseconds since the epoch (saturating; 2^64 ns is 584 years).
    #[inline]
    fn ns(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Like [`Conntrack::ns`], remembering the last conversion: a caller that
    /// hands a batch of packets the same `now` (one clock read per batch) pays
    /// for the `Instant` subtraction once per batch; a different `now` costs
    /// one extra comparison. Same result either way.
    #[inline]
    fn ns_cached(&mut self, now: Instant) -> u64 {
        if now == self.last_now {
            return self.last_ns;
        }
        let ns = self.ns(now);
        self.last_now = now;
        self.last_ns = ns;
        ns
    }

    #[inline]
    fn timeout(&self, class: u8) -> u64 {
        self.timeouts.get(usize::from(class)).copied().unwrap_or(0)
    }

    /// Finds the slot and direction of `key`, ignoring liveness.
    #[inline]
    fn find(&self, key: &FlowKey) -> Option<(usize, Dir)> {
        let h = key.hash_with(&self.hasher);
        let slab = &self.slab;
        self.index
            .find(h, |&e| {
                slab.get((e >> 1) as usize).is_some_and(|f| {
                    let k = if e & 1 == 0 { &f.orig } else { &f.reply };
                    k == key
                })
            })
            .map(|&e| ((e >> 1) as usize, Dir::from_bit(e)))
    }

    /// [`Conntrack::find`] for a key read in place from the packet (see
    /// [`KeyRef`]): no `FlowKey` is built. Inlined into `track_ns`: with
    /// the key in registers the call's frame and register saves cost more
    /// than they save (measured: IPv4 40 B 752 -> 729 instructions/packet;
    /// forcing `find`, which takes a `FlowKey` in memory, was +10).
    #[inline(always)]
    fn find_ref(&self, key: KeyRef<'_>) -> Option<(usize, Dir)> {
        let h = self.hasher.hash_ref(key);
        let slab = &self.slab;
        self.index
            .find(h, |&e| {
                slab.get((e >> 1) as usize)
                    .is_some_and(|f| key.matches(if e & 1 == 0 { &f.orig } else { &f.reply }))
            })
            .map(|&e| ((e >> 1) as usize, Dir::from_bit(e)))
    }

    /// Finds a live, unexpired flow for `key`; an expired one is removed.
    #[inline]
    fn lookup(&mut self, key: &FlowKey, now: u64) -> Option<(usize, Dir)> {
        let found = self.find(key);
        self.unless_expired(found, now)
    }

    /// [`Conntrack::lookup`] for a key read in place from the packet.
    #[inline]
    fn lookup_ref(&mut self, key: KeyRef<'_>, now: u64) -> Option<(usize, Dir)> {
        let found = self.find_ref(key);
        self.unless_expired(found, now)
    }

    /// `found` unless its flow has expired (then the flow is removed).
    #[inline]
    fn unless_expired(&mut self, found: Option<(usize, Dir)>, now: u64) -> Option<(usize, Dir)> {
        let (slot, dir) = found?;
        let f = self.slab.get(slot)?;
        if f.deadline <= now {
            self.remove_slot(slot, EndCause::Expired);
            self.expired += 1;
            return None;
        }
        Some((slot, dir))
    }

    /// Looks the packet up; for a known flow runs the state machine / window
    /// check and refreshes its timeout. Never creates a flow; never allocates.
    #[inline]
    pub fn track(&mut self, zone: ZoneId, meta: &PacketMeta, now: Instant) -> Track {
        let now = self.ns_cached(now);
        let t = self.track_ns(zone, meta, now);
        if let Track::Invalid(r) = t {
            if let Some(c) = self.invalid.get_mut(r as usize) {
                *c += 1;
            }
        }
        t
    }

    fn track_ns(&mut self, zone: ZoneId, meta: &PacketMeta, now: u64) -> Track {
        match meta.l4 {
            L4::Tcp(ref t) => self.track_tcp(zone, meta, t, now),
            L4::Icmp(i) if i.is_error => self.track_icmp_error(zone, &i, now),
            L4::Icmp(i) => {
                let key = FlowKey::from_meta(zone, meta);
                match self.lookup(&key, now) {
                    Some((slot, dir)) => {
                        let wrong_way = (dir == Dir::Original && is_echo_reply(meta, &i))
                            || (dir == Dir::Reply && is_echo_request(meta, &i));
                        if wrong_way {
                            Track::Invalid(InvalidReason::BadState)
                        } else {
                            self.simple_packet(slot, dir, now)
                        }
                    }
                    None if is_echo_reply(meta, &i) => Track::Invalid(InvalidReason::NoFlow),
                    None => Track::New,
                }
            }
            L4::Udp { .. } | L4::Other => {
                if matches!(meta.l4, L4::Other) && has_ports(meta.proto) {
                    return Track::Invalid(InvalidReason::NoTransport);
                }
                let (sport, dport) = meta.ports();
                let key = KeyRef {
                    meta,
                    zone,
                    sport,
                    dport,
                };
                match self.lookup_ref(key, now) {
                    Some((slot, dir)) => self.simple_packet(slot, dir, now),
                    None => Track::New,
                }
            }
        }
    }

    /// A packet of a UDP / ICMP / other flow: note a reply, refresh the timeout.
    #[inline]
    fn simple_packet(&mut self, slot: usize, dir: Dir, now: u64) -> Track {
        if dir == Dir::Reply {
            let replied = self.slab.get(slot).is_some_and(Flow::seen_reply);
            if !replied {
                if let Some(f) = self.slab.get_mut(slot) {
                    f.flags |= FL_SEEN_REPLY;
                }
                if self
                    .slab
                    .get(slot)
                    .is_some_and(|f| f.class == C_UDP_UNREPLIED)
                {
                    self.set_class(slot, C_UDP_REPLIED);
                }
                self.assure(slot);
            }
        }
        let Some(f) = self.slab.get(slot) else {
            return Track::Invalid(InvalidReason::NoFlow);
        };
        let deadline = now.saturating_add(self.timeout(f.class));
        if let Some(f) = self.slab.get_mut(slot) {
            f.deadline = deadline;
        }
        Track::Tracked {
            id: FlowId(slot as u32),
            dir,
            state: if dir == Dir::Reply || self.slab.get(slot).is_some_and(Flow::seen_reply) {
                CtState::Established
            } else {
                CtState::New
            },
        }
    }

    fn track_tcp(&mut self, zone: ZoneId, meta: &PacketMeta, t: &TcpInfo, now: u64) -> Track {
        if !tcp::valid_flags(t.flags) {
            return Track::Invalid(InvalidReason::BadFlags);
        }
        let key = KeyRef {
            meta,
            zone,
            sport: t.sport,
            dport: t.dport,
        };
        let Some((slot, dir)) = self.lookup_ref(key, now) else {
            return self.tcp_no_flow(t);
        };
        let Some(f) = self.slab.get_mut(slot) else {
            return self.tcp_no_flow(t);
        };
        let old = f.tcp_internal();
        let payload_len = meta.payload_len();
        if let Some(ok) = tcp::established_ack(&mut f.win, old, dir as usize, t, payload_len) {
            // The established fast path: what the general `Accept` arm below
            // does for ESTABLISHED -> ESTABLISHED, without its state changes
            // (no SYN_SENT2 flag, the class stays; the flow is assured the
            // first time it is seen replied).
            if !ok {
                return Track::Invalid(InvalidReason::OutOfWindow);
            }
            let was_replied = f.seen_reply();
            if dir == Dir::Reply {
                f.flags |= FL_SEEN_REPLY;
            }
            let timeout = self.timeouts.get(usize::from(tcp::ES)).copied();
            f.deadline = now.saturating_add(timeout.unwrap_or(0));
            let replied = f.seen_reply();
            if was_replied && !f.assured() {
                self.assure(slot);
            }
            return Track::Tracked {
                id: FlowId(slot as u32),
                dir,
                state: if replied {
                    CtState::Established
                } else {
                    CtState::New
                },
            };
        }
        match tcp::packet(&mut f.win, old, dir as usize, t, payload_len) {
            tcp::Outcome::Accept(new) => {
                let was_replied = f.seen_reply();
                if dir == Dir::Reply {
                    f.flags |= FL_SEEN_REPLY;
                }
                if new == tcp::S2 {
                    f.flags |= FL_S2;
                } else {
                    f.flags &= !FL_S2;
                }
                let class = if new == tcp::S2 { tcp::SS } else { new };
                f.deadline =
                    now.saturating_add(self.timeouts.get(usize::from(class)).copied().unwrap_or(0));
                let replied = f.seen_reply();
                let assured = f.assured();
                if f.class != class {
                    self.set_class(slot, class);
                }
                // Kernel: assured on a valid ESTABLISHED packet after SYN_RECV
                // (or after ESTABLISHED, for flows picked up mid-stream).
                if !assured && was_replied && (old == tcp::SR || old == tcp::ES) && new == tcp::ES {
                    self.assure(slot);
                }
                Track::Tracked {
                    id: FlowId(slot as u32),
                    dir,
                    state: if replied {
                        CtState::Established
                    } else {
                        CtState::New
                    },
                }
            }
            tcp::Outcome::Ignore => {
                if dir == Dir::Reply {
                    f.flags |= FL_SEEN_REPLY;
                }
                Track::Tracked {
                    id: FlowId(slot as u32),
                    dir,
                    state: if f.seen_reply() {
                        CtState::Established
                    } else {
                        CtState::New
                    },
                }
            }
            tcp::Outcome::BadState => Track::Invalid(InvalidReason::BadState),
            tcp::Outcome::OutOfWindow => Track::Invalid(InvalidReason::OutOfWindow),
            tcp::Outcome::Reopen => {
                self.remove_slot(slot, EndCause::Reopened);
                self.removed += 1;
                self.tcp_no_flow(t)
            }
        }
    }

    fn tcp_no_flow(&self, t: &TcpInfo) -> Track {
        if tcp::is_syn_only(t.flags) || (self.cfg.tcp_loose && tcp::is_pickup(t.flags)) {
            Track::New
        } else {
            Track::Invalid(InvalidReason::NoFlow)
        }
    }

    fn track_icmp_error(&mut self, zone: ZoneId, i: &IcmpInfo, now: u64) -> Track {
        let Some(inner) = i.inner else {
            return Track::Invalid(InvalidReason::NoFlow);
        };
        // The quoted packet travelled towards the error's sender; its flow's
        // other direction enters from the zone the error came from.
        let (sport, dport) = if matches!(inner.proto, proto::ICMP | proto::ICMPV6) {
            (inner.sport, inner.sport)
        } else {
            (inner.sport, inner.dport)
        };
        let key = FlowKey {
            zone,
            proto: inner.proto,
            src: inner.dst,
            dst: inner.src,
            sport: dport,
            dport: sport,
        };
        match self.lookup(&key, now) {
            Some((slot, dir)) => Track::Related {
                id: FlowId(slot as u32),
                dir,
            },
            None => Track::Invalid(InvalidReason::NoFlow),
        }
    }

    /// Creates the flow for a packet that `track` called New and that the rules
    /// accepted. `egress` is the zone it leaves to; `reply` overrides the reply
    /// tuple (for NAT), default `orig.inverse(egress)`. Initialises the TCP
    /// state machine from this first packet. When the table is full, drops an
    /// expired flow or the oldest unassured flow before refusing.
    pub fn insert(
        &mut self,
        zone: ZoneId,
        meta: &PacketMeta,
        egress: ZoneId,
        reply: Option<FlowKey>,
        generation: u32,
        now: Instant,
    ) -> Result<FlowId, CtError> {
        let now = self.ns_cached(now);
        let orig = FlowKey::from_meta(zone, meta);
        let reply = reply.unwrap_or_else(|| orig.inverse(egress));
        let (class, flags, win) = match meta.l4 {
            L4::Tcp(t) => {
                let (st, win) = tcp::new_flow(&t, meta.payload_len(), self.cfg.tcp_loose)
                    .ok_or(CtError::NotNew)?;
                (st, FL_IS_TCP, win)
            }
            L4::Udp { .. } => (C_UDP_UNREPLIED, 0, Default::default()),
            L4::Icmp(i) if i.is_error || is_echo_reply(meta, &i) => return Err(CtError::NotNew),
            L4::Icmp(_) => (C_ICMP, 0, Default::default()),
            L4::Other if has_ports(meta.proto) => return Err(CtError::NotNew),
            L4::Other => (C_OTHER, 0, Default::default()),
        };
        if self.lookup(&orig, now).is_some() || self.lookup(&reply, now).is_some() {
            return Err(CtError::Exists);
        }
        if self.len >= self.max && !self.make_room(now) {
            self.refused_full += 1;
            return Err(CtError::Full);
        }
        let slot = self.alloc(orig);
        let h_orig = orig.hash_with(&self.hasher);
        let h_reply = reply.hash_with(&self.hasher);
        let deadline = now.saturating_add(self.timeout(class));
        if let Some(f) = self.slab.get_mut(slot) {
            *f = Flow::vacant(orig);
            f.reply = reply;
            f.generation = generation;
            f.deadline = deadline;
            f.win = win;
            f.class = class;
            f.flags = FL_LIVE | flags;
            if orig.translates_to(&reply) {
                f.flags |= FL_XLATE;
            }
            if let L4::Icmp(i) = meta.l4 {
                f.set_icmp_type(i.ty, i.code);
            }
        }
        let (hasher, slab) = (self.hasher, &self.slab);
        let rehash = |&e: &u32| entry_hash(slab, &hasher, e);
        self.index.insert_unique(h_orig, (slot as u32) << 1, rehash);
        self.index
            .insert_unique(h_reply, (slot as u32) << 1 | 1, rehash);
        self.len += 1;
        self.inserted += 1;
        if let Some(c) = self.by_class.get_mut(usize::from(class)) {
            *c += 1;
        }
        self.ua_push(slot);
        Ok(FlowId(slot as u32))
    }

    /// Frees one slot: an expired flow near the clock hand or at the head of
    /// the unassured list, else the oldest unassured flow.
    fn make_room(&mut self, now: u64) -> bool {
        if self.expire_ns(now, 1, INSERT_SWEEP) > 0 {
            return true;
        }
        let head = self.ua_head;
        if head == NIL {
            return false;
        }
        let slot = head as usize;
        let cause = if self.slab.get(slot).is_some_and(|f| f.deadline <= now) {
            self.expired += 1;
            EndCause::Expired
        } else {
            self.evicted_early += 1;
            EndCause::Evicted
        };
        self.remove_slot(slot, cause);
        true
    }

    fn alloc(&mut self, key: FlowKey) -> usize {
        if self.free_head != NIL {
            let slot = self.free_head as usize;
            self.free_head = self.slab.get(slot).map_or(NIL, |f| f.next);
            return slot;
        }
        if self.slab.len() == self.slab.capacity() {
            // Grow by doubling, but never beyond the configured maximum.
            let cap = self.slab.capacity();
            let want = cap.max(MIN_GROW).min(self.max.saturating_sub(cap)).max(1);
            self.slab.reserve_exact(want);
        }
        self.slab.push(Flow::vacant(key));
        self.slab.len() - 1
    }

    fn set_class(&mut self, slot: usize, class: u8) {
        if let Some(f) = self.slab.get_mut(slot) {
            let old = f.class;
            f.class = class;
            if let Some(c) = self.by_class.get_mut(usize::from(old)) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = self.by_class.get_mut(usize::from(class)) {
                *c += 1;
            }
        }
    }

    fn ua_push(&mut self, slot: usize) {
        let tail = self.ua_tail;
        if let Some(f) = self.slab.get_mut(slot) {
            f.prev = tail;
            f.next = NIL;
        }
        match self.slab.get_mut(tail as usize) {
            Some(t) if tail != NIL => t.next = slot as u32,
            _ => self.ua_head = slot as u32,
        }
        self.ua_tail = slot as u32;
        self.ua_len += 1;
    }

    fn ua_unlink(&mut self, slot: usize) {
        let Some(f) = self.slab.get(slot) else {
            return;
        };
        let (prev, next) = (f.prev, f.next);
        match self.slab.get_mut(prev as usize) {
            Some(p) if prev != NIL => p.next = next,
            _ => self.ua_head = next,
        }
        match self.slab.get_mut(next as usize) {
            Some(n) if next != NIL => n.prev = prev,
            _ => self.ua_tail = prev,
        }
        if let Some(f) = self.slab.get_mut(slot) {
            f.prev = NIL;
            f.next = NIL;
        }
        self.ua_len = self.ua_len.saturating_sub(1);
    }

    /// Marks a flow assured: it leaves the eviction list.
    fn assure(&mut self, slot: usize) {
        if self
            .slab
            .get(slot)
            .is_some_and(|f| f.live() && !f.assured())
        {
            self.ua_unlink(slot);
            if let Some(f) = self.slab.get_mut(slot) {
                f.flags |= FL_ASSURED;
            }
        }
    }

    fn unindex(&mut self, key: &FlowKey, entry: u32) {
        let h = key.hash_with(&self.hasher);
        if let Ok(e) = self.index.find_entry(h, |&x| x == entry) {
            e.remove();
        }
    }

    /// Removes a live flow from the index, the lists and the counts.
    fn remove_slot(&mut self, slot: usize, cause: EndCause) -> Option<Flow> {
        let f = self.slab.get(slot)?;
        if !f.live() {
            return None;
        }
        let (orig, reply, assured, class) = (f.orig, f.reply, f.assured(), f.class);
        self.unindex(&orig, (slot as u32) << 1);
        self.unindex(&reply, (slot as u32) << 1 | 1);
        if !assured {
            self.ua_unlink(slot);
        }
        if let Some(c) = self.by_class.get_mut(usize::from(class)) {
            *c = c.saturating_sub(1);
        }
        let free_head = self.free_head;
        let f = self.slab.get_mut(slot)?;
        let out = f.clone();
        if self.report_ended {
            if self.ended.len() < ENDED_MAX {
                self.ended.push_back(Ended {
                    id: FlowId(slot as u32),
                    flow: out.clone(),
                    cause,
                });
            } else {
                self.ended_lost += 1;
            }
        }
        f.flags = 0;
        f.prev = NIL;
        f.next = free_head;
        self.free_head = slot as u32;
        self.len -= 1;
        Some(out)
    }

    /// True when a live, unexpired flow has `key` as its original or reply
    /// tuple (read-only; NAT uses it to test a candidate external tuple).
    pub fn key_in_use(&self, key: &FlowKey, now: Instant) -> bool {
        let now = self.ns(now);
        self.find(key)
            .and_then(|(slot, _)| self.slab.get(slot))
            .is_some_and(|f| f.live() && f.deadline > now)
    }

    /// The flow with this id, if it is live.
    pub fn flow(&self, id: FlowId) -> Option<&Flow> {
        self.slab.get(id.0 as usize).filter(|f| f.live())
    }

    /// The flow with this id, if it is live (to count packets, cache a verdict).
    pub fn flow_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.slab.get_mut(id.0 as usize).filter(|f| f.live())
    }

    /// Removes a flow; returns it.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let f = self.remove_slot(id.0 as usize, EndCause::Removed)?;
        self.removed += 1;
        Some(f)
    }

    /// Removes expired flows, at most `max` per call. Examines at most
    /// `4 * max + 16` slots (and at most the whole slab once) from a clock hand
    /// that keeps going round, so the cost per call is bounded; call it often.
    /// Returns how many flows were removed.
    pub fn expire(&mut self, now: Instant, max: usize) -> usize {
        let now = self.ns_cached(now);
        self.expire_ns(now, max, max.saturating_mul(4).saturating_add(16))
    }

    fn expire_ns(&mut self, now: u64, max: usize, budget: usize) -> usize {
        let n = self.slab.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if removed >= max {
                break;
            }
            if self.hand >= n {
                self.hand = 0;
            }
            let slot = self.hand;
            self.hand += 1;
            if self
                .slab
                .get(slot)
                .is_some_and(|f| f.live() && f.deadline <= now)
            {
                self.remove_slot(slot, EndCause::Expired);
                self.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Flows stored, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All stored flows (including expired ones not yet swept), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, f)| f.live())
            .map(|(i, f)| (FlowId(i as u32), f))
    }

    /// The latest time the table was given (by `track`, `insert` or
    /// `expire`): "now" for work that comes without a clock (a reload).
    pub fn last_now(&self) -> Instant {
        self.last_now
    }

    /// Moves every live flow to the zones `map` gives (a reload that
    /// renumbered the peers: each flow keeps its slot, its state and its
    /// counters, and its keys name the zones its peers have now). The index
    /// is rebuilt when any key changed. `map` must be one-to-one on the
    /// zones of live flows (remove the flows of vanished zones first), so
    /// no two flows end up with one key. Returns how many flows moved.
    pub fn renumber_zones(&mut self, map: impl Fn(ZoneId) -> ZoneId) -> usize {
        let mut moved = 0;
        for f in self.slab.iter_mut().filter(|f| f.live()) {
            let (o, r) = (map(f.orig.zone), map(f.reply.zone));
            if (o, r) != (f.orig.zone, f.reply.zone) {
                f.orig.zone = o;
                f.reply.zone = r;
                moved += 1;
            }
        }
        if moved > 0 {
            let (hasher, slab) = (self.hasher, &self.slab);
            let rehash = |&e: &u32| entry_hash(slab, &hasher, e);
            self.index.clear();
            for (slot, _) in slab.iter().enumerate().filter(|(_, f)| f.live()) {
                for e in [(slot as u32) << 1, (slot as u32) << 1 | 1] {
                    self.index
                        .insert_unique(entry_hash(slab, &hasher, e), e, rehash);
                }
            }
        }
        moved
    }

    /// Removes every flow (keeps the allocation).
    pub fn flush(&mut self) {
        if self.report_ended {
            for (slot, f) in self.slab.iter().enumerate() {
                if !f.live() {
                    continue;
                }
                if self.ended.len() < ENDED_MAX {
                    self.ended.push_back(Ended {
                        id: FlowId(slot as u32),
                        flow: f.clone(),
                        cause: EndCause::Flushed,
                    });
                } else {
                    self.ended_lost += 1;
                }
            }
        }
        self.removed += self.len as u64;
        self.slab.clear();
        self.index.clear();
        self.free_head = NIL;
        self.len = 0;
        self.ua_head = NIL;
        self.ua_tail = NIL;
        self.ua_len = 0;
        self.hand = 0;
        self.by_class = [0; N_CLASSES];
    }

    pub fn stats(&self) -> CtStats {
        let mut by_state = [("", 0u64); N_CLASSES];
        for (i, s) in by_state.iter_mut().enumerate() {
            *s = (
                CLASS_NAMES.get(i).copied().unwrap_or("?"),
                self.by_class.get(i).copied().unwrap_or(0),
            );
        }
        let mut invalid = [("", 0u64); 5];
        for (i, s) in invalid.iter_mut().enumerate() {
            if let Some(r) = InvalidReason::ALL.get(i) {
                *s = (r.name(), self.invalid.get(i).copied().unwrap_or(0));
            }
        }
        CtStats {
            entries: self.len,
            max_entries: self.max,
            by_state,
            unassured: self.ua_len,
            inserted: self.inserted,
            removed: self.removed,
            evicted_early: self.evicted_early,
            refused_full: self.refused_full,
            expired: self.expired,
            invalid,
        }
    }
}
