//! The pipeline: every packet's path through the gateway, sans IO.
//!
//! `Pipeline::handle(packet, ingress zone, now) -> Verdict` is the single entry
//! point for packets from the TUN device, from decrypted WireGuard peers and
//! from the netstack. It does no IO, reads no clock and takes no locks; packets
//! the pipeline itself originates (rejects, released fragments) are queued and
//! drained with [`Pipeline::poll_transmit`], log events with
//! [`Pipeline::poll_event`].
//!
//! The path of a packet:
//!
//! 1. **parse** (`packet::parse`): malformed packets are dropped with their reason.
//! 2. **defrag**: fragments are held until their datagram is complete; the
//!    reassembled datagram is classified and, if allowed, its original
//!    fragments are released to the egress zone (the path MTU is unchanged).
//! 3. **conntrack**: a packet of a known flow takes the fast path — one hash
//!    lookup, the TCP state/window check, counters, and the flow's cached
//!    egress zone. A flow admitted under an older rule generation is re-checked
//!    first (as if its first packet came again), so a reload that revokes
//!    access cuts live flows.
//! 4. **route** (new flows): the gateway's own addresses go through the
//!    `input` chain (and on to the host over the TUN); packets the host sends
//!    from the gateway's addresses go through `output`; everything else through
//!    `forward`. The egress zone is the peer whose AllowedIPs hold the
//!    destination (longest prefix), otherwise the TUN. A peer may only send
//!    from its own AllowedIPs (cryptokey routing's anti-spoofing rule); this
//!    holds for new, RELATED and INVALID packets alike (a known flow's packets
//!    match a key holding an already checked source).
//! 5. **rules**: first match wins, then the chain policy. Accepted flows enter
//!    connection tracking; rejects queue a TCP RST or ICMP unreachable
//!    (rate-limited, never in answer to an ICMP error, a non-first fragment or
//!    a broadcast/multicast packet).
//!
//! 6. **NAT** (`nat`): on a new flow, DNAT runs before routing and the rules
//!    (which see the translated destination), SNAT/masquerade after the rules
//!    accepted; the binding is the flow's reply tuple, so established packets,
//!    replies and RELATED ICMP errors are translated on the fast path from the
//!    flow itself. No free external tuple: a `nat_exhausted` drop and a log event.
//! 7. **ids** (when installed with [`Pipeline::set_ids`]): the accepted
//!    packet of a new flow and every fast-path packet are inspected
//!    ([`crate::ids::Ids::inspect`]); in prevent mode a drop/reject signature
//!    drops the packet and the rest of its flow (`DropReason::Ids`), a reject
//!    also resets both ends. Alerts: [`Pipeline::poll_ids_alert`].
//!
//! 8. **blocklist** ([`crate::blocklist`]): checked first, right after
//!    parsing (before defragmentation and connection tracking): a packet
//!    from a blocked source address/network or blocked peer is dropped
//!    (`DropReason::Blocked`); an empty blocklist costs one branch. Entries
//!    come from the config, `ctl block`, anomaly detection (below), rules
//!    with `block = "10m"` and, in prevent mode, `ids.block_on_drop`.
//! 9. **anomaly detection** ([`crate::anomaly`], when configured): every
//!    packet that opens no known flow (after the anti-spoofing check,
//!    before NAT and the rules, so denied probes count too) is counted per
//!    source, destination and service; a detection is queued for
//!    [`Pipeline::poll_anomaly`] and may block the source.
//!
//! Connection states as rules see them follow the kernel: NEW until the flow
//! has seen a reply, then ESTABLISHED; ICMP errors about a known flow are
//! RELATED; packets connection tracking refuses are INVALID. INVALID packets
//! are dropped (reason `invalid`) unless a rule that names the `invalid`
//! state decides them; such a rule cannot create a flow.

pub mod http_stream;
pub mod l7;
pub mod route;
pub mod stats;
pub mod testbed;
pub mod trace;

use crate::conntrack::{Conntrack, CtConfig, Dir, EndCause, Flow, FlowId, FlowKey, Track};
use crate::nat::{xlate, DnatTo, Nat, NatConfig, NatEvent};
use crate::packet::build::{self, ReplyLimiter};
use crate::packet::frag::{FragResult, Reassembler};
use crate::packet::{self, proto, FragConfig, PacketMeta, L4};
use crate::rules::{Action, ChainDef, CtStateMask, Decision, MatchInput, RejectWith, RuleSet};
use crate::shaper::{Shaper, ShaperConfig};
use crate::verdict::{Chain, DropReason, Verdict};
use crate::zone::{ZoneId, ZoneTable};
use ipnetwork::IpNetwork;
use route::RouteTable;
use stats::{chain_slot, Count, Stats};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;
use trace::{trace_step, NoTrace, TraceLog, Tracer};

/// Everything the pipeline needs, built from the validated config.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub zones: ZoneTable,
    /// Each peer zone with its AllowedIPs.
    pub peer_routes: Vec<(ZoneId, Vec<IpNetwork>)>,
    /// The gateway's own addresses (its tunnel addresses).
    pub local_addrs: Vec<IpAddr>,
    pub input: ChainDef,
    pub forward: ChainDef,
    pub output: ChainDef,
    pub conntrack: CtConfig,
    pub fragments: FragConfig,
    /// Rate limit for generated replies (RST / ICMP errors).
    pub reply_per_sec: u32,
    pub reply_burst: u32,
    /// Netstack (rootless) mode: the gateway's own addresses are zone `local`
    /// (answered by the netstack) and destinations no peer routes go to zone
    /// `host` (re-originated through host sockets) instead of the TUN.
    pub netstack: bool,
    /// NAT rules (empty: no translation).
    pub nat: NatConfig,
}

/// A packet the pipeline originated, to be sent to `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub zone: ZoneId,
    pub packet: Vec<u8>,
}

/// A log event: a rule with `log` matched, or a flow was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub chain: Chain,
    /// The deciding rule, `None` for the policy.
    pub rule: Option<u32>,
    pub action: Action,
    /// True when a reload revoked a live flow.
    pub revoked: bool,
    pub ingress: ZoneId,
    pub egress: ZoneId,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// How many log events are queued before new ones are counted as suppressed.
const EVENT_QUEUE: usize = 1024;
/// Flow-end records queued before new ones are counted as suppressed (the
/// IO shell drains them after every packet and every housekeeping tick).
const FLOW_END_QUEUE: usize = 8192;
/// Flows expired per `handle_timeout` batch: below the conntrack ended-flow
/// queue bound (`conntrack::ENDED_MAX`) so no record is lost between drains.
const EXPIRE_BATCH: usize = 4096;

/// A flow that ended, with its final counters (for EVE `flow` records).
#[derive(Debug, Clone)]
pub struct FlowEnd {
    pub flow: Flow,
    pub cause: EndCause,
    /// From the flow's first packet to its end.
    pub duration: std::time::Duration,
    /// Its last state (`established`, `time_wait`, `udp_replied`, ...).
    pub state: &'static str,
}

/// The compiled, ready-to-swap part of a [`PipelineConfig`] (see
/// [`Pipeline::prepare`]): built off the data path, swapped in by
/// [`Pipeline::reload_prepared`] in O(1).
#[derive(Debug)]
pub struct Prepared {
    rules: RuleSet,
    zones: ZoneTable,
    routes: RouteTable,
    local_addrs: Vec<IpAddr>,
    netstack: bool,
    reply_per_sec: u32,
    reply_burst: u32,
    nat: NatConfig,
}
/// Flows expired per `handle_timeout` call (the sweep is amortised).
const EXPIRE_BUDGET: usize = 65_536;

/// The packet path.
#[derive(Debug)]
pub struct Pipeline {
    zones: ZoneTable,
    routes: RouteTable,
    local_addrs: Vec<IpAddr>,
    netstack: bool,
    rules: RuleSet,
    generation: u32,
    ct: Conntrack,
    frag: Reassembler,
    limiter: ReplyLimiter,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    nat: Nat,
    nat_events: VecDeque<NatEvent>,
    /// Seeds the NAT port search (keyed from `hash_key`, so unpredictable).
    nat_seed: (u64, u64, u64),
    /// The translation `decide` applied to the last packet (for fragments).
    last_xlate: Option<xlate::Tuple>,
    shaper: Shaper,
    /// Start of each flow slot's current flow, ms since `epoch` (4 bytes... 8
    /// per slot, beside the table, so the flow itself stays the same size).
    flow_start: Vec<u64>,
    epoch: Instant,
    flow_log: bool,
    flow_ends: VecDeque<FlowEnd>,
    /// Intrusion detection (see [`crate::ids`]), when enabled.
    ids: Option<crate::ids::Ids>,
    /// IDS alerts with the WireGuard peer involved (ingress, else egress).
    ids_alerts: VecDeque<(crate::ids::Alert, Option<ZoneId>)>,
    /// Flows whose rule decision waits for their L7 name ([`l7`]).
    l7: l7::L7State,
    /// Blocked sources and peers, checked before anything else.
    blocklist: crate::blocklist::Blocklist,
    /// Anomaly detectors, when configured (`[ids.anomaly]`).
    anomaly: Option<crate::anomaly::Anomaly>,
    /// `ids.block_on_drop`: block a flow's initiator on a drop/reject signature.
    ids_block: Option<std::time::Duration>,
    /// Anomaly detections for the shell, each with whether it blocked.
    detections: VecDeque<(crate::anomaly::Detection, bool)>,
    guard_key: (u64, u64),
}

/// A new flow's pending DNAT decision, carried from routing to flow creation.
#[derive(Debug, Clone, Copy)]
struct NewFlow {
    dnat: Option<DnatTo>,
    /// Set by [`l7`] for flows its rules decide: the first packet as the
    /// rules saw it (a TCP flow becomes pending L7).
    l7: Option<MatchInput>,
}

fn build_routes(peer_routes: &[(ZoneId, Vec<IpNetwork>)]) -> RouteTable {
    let mut routes = RouteTable::new();
    for (zone, nets) in peer_routes {
        for n in nets {
            routes.insert(*n, *zone);
        }
    }
    routes
}

fn rule_counters(rules: &RuleSet) -> [Vec<Count>; 3] {
    Chain::ALL.map(|c| vec![Count::default(); rules.chain(c).rules.len()])
}

/// The ports a rule sees: TCP/UDP ports, 0 otherwise.
fn rule_ports(meta: &PacketMeta) -> (u16, u16) {
    match meta.l4 {
        L4::Tcp(t) => (t.sport, t.dport),
        L4::Udp { sport, dport } => (sport, dport),
        _ => (0, 0),
    }
}

fn match_input(meta: &PacketMeta, ingress: ZoneId, egress: ZoneId, ct_state: u8) -> MatchInput {
    let (sport, dport) = rule_ports(meta);
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
        ct_state,
    }
}

impl Pipeline {
    /// Builds the pipeline. `hash_key` keys every table indexed by packet data
    /// (pass random bits; tests may pass constants).
    pub fn new(cfg: PipelineConfig, hash_key: (u64, u64), now: Instant) -> Self {
        let rules = RuleSet::new(cfg.input, cfg.forward, cfg.output);
        let stats = Stats {
            rules: rule_counters(&rules),
            ..Stats::default()
        };
        let frag_key = (
            hash_key.0 ^ 0x9e37_79b9_7f4a_7c15,
            hash_key.1.rotate_left(17),
        );
        let mut ct = Conntrack::new(cfg.conntrack, hash_key, now);
        ct.set_report_ended(true);
        let shaper_key = (
            hash_key.0.rotate_left(29) ^ 0x5851_f42d_4c95_7f2d,
            hash_key.1 ^ 0x1405_7b7e_f767_814f,
        );
        Pipeline {
            zones: cfg.zones,
            routes: build_routes(&cfg.peer_routes),
            local_addrs: cfg.local_addrs,
            netstack: cfg.netstack,
            rules,
            generation: 1,
            ct,
            frag: Reassembler::new(cfg.fragments, frag_key),
            limiter: ReplyLimiter::new(cfg.reply_per_sec, cfg.reply_burst),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats,
            nat: Nat::new(
                cfg.nat,
                (hash_key.0.rotate_left(29), hash_key.1 ^ 0x5851_f42d),
            ),
            nat_events: VecDeque::new(),
            nat_seed: (hash_key.1.rotate_left(7), hash_key.0 ^ 0x2545_f491, 0),
            last_xlate: None,
            shaper: Shaper::new(&ShaperConfig::default(), shaper_key),
            flow_start: Vec::new(),
            epoch: now,
            flow_log: false,
            flow_ends: VecDeque::new(),
            ids: None,
            ids_alerts: VecDeque::new(),
            l7: l7::L7State::default(),
            blocklist: crate::blocklist::Blocklist::new((
                hash_key.0.rotate_left(41) ^ 0x3c6e_f372_fe94_f82b,
                hash_key.1.rotate_left(3),
            )),
            anomaly: None,
            ids_block: None,
            detections: VecDeque::new(),
            guard_key: (
                hash_key.1.rotate_left(53),
                hash_key.0 ^ 0xa54f_f53a_5f1d_36f1,
            ),
        }
    }

    /// Sets the blocklist config, anomaly detectors and `ids.block_on_drop`
    /// (at start and on every reload). Run-time blocklist entries stay;
    /// detector state stays unless the detector settings changed.
    pub fn set_protection(&mut self, p: &crate::blocklist::Protection, now: Instant) {
        self.blocklist.reconfigure(&p.blocklist, now);
        self.ids_block = p.ids_block_on_drop;
        self.anomaly = match (&p.anomaly, self.anomaly.take()) {
            (None, _) => None,
            (Some(c), Some(a)) if a.config() == c => Some(a),
            (Some(c), _) => Some(crate::anomaly::Anomaly::new(c.clone(), self.guard_key, now)),
        };
    }

    pub fn blocklist(&self) -> &crate::blocklist::Blocklist {
        &self.blocklist
    }

    /// The blocklist, for run-time changes (`ctl block` / `unblock`).
    pub fn blocklist_mut(&mut self) -> &mut crate::blocklist::Blocklist {
        &mut self.blocklist
    }

    pub fn anomaly(&self) -> Option<&crate::anomaly::Anomaly> {
        self.anomaly.as_ref()
    }

    /// Anomaly detections, oldest first, each with whether it blocked the source.
    #[must_use]
    pub fn poll_anomaly(&mut self) -> Option<(crate::anomaly::Detection, bool)> {
        self.detections.pop_front()
    }

    /// Blocklist events (blocked, unblocked, expired, refused), oldest first.
    #[must_use]
    pub fn poll_block_event(&mut self) -> Option<crate::blocklist::BlockEvent> {
        self.blocklist.poll_event()
    }

    /// Blocks `src` for `ttl` (an automatic block: anomaly, rule, ids).
    fn block_source<T: Tracer>(
        &mut self,
        src: IpAddr,
        origin: crate::blocklist::Origin,
        reason: String,
        ttl: std::time::Duration,
        now: Instant,
        t: &mut T,
    ) -> bool {
        let target = crate::blocklist::Target::addr(src);
        let ok = self
            .blocklist
            .add(target, origin, reason, Some(ttl), now)
            .is_ok();
        trace_step!(
            t,
            "blocklist",
            "{} {src} for {}s ({})",
            if ok { "blocked" } else { "could not block" },
            ttl.as_secs(),
            origin.name()
        );
        ok
    }

    /// A rule with `block = TTL` that decided a new flow blocks its source.
    fn rule_block<T: Tracer>(
        &mut self,
        chain: Chain,
        rule: Option<u32>,
        src: IpAddr,
        now: Instant,
        t: &mut T,
    ) {
        let ttl = rule
            .and_then(|r| self.rules.chain(chain).rules.get(r as usize))
            .and_then(|r| r.block);
        if let Some(ttl) = ttl {
            let name = format!("rule {}", self.rule_label(chain, rule));
            self.block_source(src, crate::blocklist::Origin::Rule, name, ttl, now, t);
        }
    }

    /// Feeds a new-flow attempt to the anomaly detectors; a detection may
    /// block the source, and then this packet is dropped too.
    fn observe_anomaly<T: Tracer>(
        &mut self,
        meta: &PacketMeta,
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let a = self.anomaly.as_mut()?;
        a.observe(meta, ingress, now);
        let mut blocked = false;
        while let Some(d) = self.anomaly.as_mut().and_then(|a| a.poll_detection()) {
            trace_step!(
                t,
                "anomaly",
                "{}: {} within {:?} (threshold {})",
                d.kind.name(),
                d.count,
                d.window,
                d.threshold
            );
            let b = match d.block {
                Some(ttl) => self.block_source(
                    d.src,
                    crate::blocklist::Origin::Anomaly,
                    format!("{} ({} in {:?})", d.kind.name(), d.count, d.window),
                    ttl,
                    now,
                    t,
                ),
                None => false,
            };
            blocked |= b;
            if self.detections.len() < EVENT_QUEUE {
                self.detections.push_back((d, b));
            } else {
                self.stats.events_suppressed += 1;
            }
        }
        blocked.then_some(Verdict::Drop(DropReason::Blocked))
    }

    /// Sets the rate and connection limits (at start and on every reload).
    /// Applies rate and connection limits (at startup and on reload); the
    /// concurrent-flow counts start from the live flows.
    pub fn set_shaper(&mut self, cfg: &ShaperConfig) {
        self.shaper.reconfigure(cfg);
        let live = self.ct.iter().map(|(_, f)| (f.orig.src, f.orig.zone));
        self.shaper.recount(live);
    }

    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }

    /// Turns flow-end records ([`Pipeline::poll_flow_end`]) on or off.
    pub fn set_flow_log(&mut self, on: bool) {
        self.flow_log = on;
        if !on {
            self.flow_ends.clear();
        }
    }

    /// Compiles the parts of a config a reload swaps (rules, zones, routes).
    /// Pure and independent of the running pipeline: call it off the data path.
    pub fn prepare(cfg: PipelineConfig) -> Prepared {
        Prepared {
            rules: RuleSet::new(cfg.input, cfg.forward, cfg.output),
            zones: cfg.zones,
            routes: build_routes(&cfg.peer_routes),
            local_addrs: cfg.local_addrs,
            netstack: cfg.netstack,
            reply_per_sec: cfg.reply_per_sec,
            reply_burst: cfg.reply_burst,
            nat: cfg.nat,
        }
    }

    /// Swaps in a prepared config: like [`Pipeline::reload`], without the compile.
    pub fn reload_prepared(&mut self, p: Prepared) {
        self.follow_renumbered_peers(&p.zones);
        self.rules = p.rules;
        self.stats.rules = rule_counters(&self.rules);
        self.stats.policy = Default::default();
        self.zones = p.zones;
        self.routes = p.routes;
        self.local_addrs = p.local_addrs;
        self.netstack = p.netstack;
        self.limiter = ReplyLimiter::new(p.reply_per_sec, p.reply_burst);
        // NAT rules are replaced; live bindings stay in their flows, and the
        // counters and the run-time backend state (drains, health) carry on.
        let key = self.nat.hash_key();
        let old = std::mem::replace(&mut self.nat, Nat::new(p.nat, key));
        self.nat.stats = old.stats;
        self.nat.carry_backend_state(&old);
        self.generation = self.generation.wrapping_add(1);
    }

    /// Zones are numbered by peer order: a reload that adds, removes or
    /// reorders peers gives peers other zone ids. Live flows follow their
    /// peers (by name) to the new ids, so no flow of a kept peer is lost or
    /// attributed to another peer; the flows of peers that are gone are
    /// removed (flow-end cause `removed`). Uses the table's last time as
    /// "now" (a reload brings no clock).
    fn follow_renumbered_peers(&mut self, new: &ZoneTable) {
        let map: Vec<Option<ZoneId>> = (0..self.zones.peer_count())
            .map(|i| new.peer(self.zones.name(ZoneId::peer(i))))
            .collect();
        if map
            .iter()
            .enumerate()
            .all(|(i, z)| *z == Some(ZoneId::peer(i)))
        {
            return;
        }
        let target = |z: ZoneId| z.peer_index().map(|i| map.get(i).copied().flatten());
        let gone = |z: ZoneId| target(z) == Some(None);
        let now = self.ct.last_now();
        self.remove_flows(|f| gone(f.orig.zone) || gone(f.reply.zone), now);
        let to = |z: ZoneId| target(z).flatten().unwrap_or(z);
        self.ct.renumber_zones(to);
        self.l7.renumber_zones(to);
    }

    /// Removes the tracked flows `keep_out` selects (all with `|_| true`);
    /// returns how many. Their flow-end records say `removed`.
    pub fn remove_flows(&mut self, mut select: impl FnMut(&Flow) -> bool, now: Instant) -> usize {
        let ids: Vec<FlowId> = self
            .ct
            .iter()
            .filter(|(_, f)| select(f))
            .map(|(id, _)| id)
            .collect();
        let mut n = 0;
        for chunk in ids.chunks(EXPIRE_BATCH) {
            for id in chunk {
                if self.ct.remove(*id).is_some() {
                    n += 1;
                }
            }
            self.drain_ended(now);
        }
        n
    }

    /// Hands ended flows to the shaper (connection counts) and, when flow
    /// logging is on, to the flow-end queue.
    fn drain_ended(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        while let Some(e) = self.ct.poll_ended() {
            let o = e.flow.orig;
            self.shaper.flow_ended(o.src, o.zone);
            self.l7.forget(e.id, &o);
            if !self.flow_log {
                continue;
            }
            if self.flow_ends.len() >= FLOW_END_QUEUE {
                self.stats.flow_ends_suppressed += 1;
                continue;
            }
            let start = self
                .flow_start
                .get(e.id.0 as usize)
                .copied()
                .unwrap_or(now_ms);
            self.flow_ends.push_back(FlowEnd {
                state: e.flow.state_name(),
                duration: std::time::Duration::from_millis(now_ms.saturating_sub(start)),
                flow: e.flow,
                cause: e.cause,
            });
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Flow-end records, oldest first (only with [`Pipeline::set_flow_log`]).
    #[must_use]
    pub fn poll_flow_end(&mut self) -> Option<FlowEnd> {
        self.flow_ends.pop_front()
    }

    /// Replaces zones, routes and rules (a reload). Connection tracking and
    /// fragments are kept; the rule generation is bumped so that every live
    /// flow is re-checked against the new rules on its next packet.
    /// Per-rule counters restart (the rules changed).
    pub fn reload(&mut self, cfg: PipelineConfig) {
        self.reload_prepared(Self::prepare(cfg));
    }

    /// Decides one packet. The packet may be rewritten in place (NAT).
    pub fn handle(&mut self, pkt: &mut [u8], ingress: ZoneId, now: Instant) -> Verdict {
        self.handle_with(pkt, ingress, now, &mut NoTrace)
    }

    /// Like [`Pipeline::handle`], describing every stage the packet passes.
    pub fn trace(&mut self, pkt: &mut [u8], ingress: ZoneId, now: Instant) -> (Verdict, TraceLog) {
        let mut log = TraceLog::default();
        let v = self.handle_with(pkt, ingress, now, &mut log);
        (v, log)
    }

    fn handle_with<T: Tracer>(
        &mut self,
        pkt: &mut [u8],
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let len = pkt.len();
        self.stats.received.add(len);
        trace_step!(
            t,
            "ingress",
            "{} bytes from zone {}",
            len,
            self.zones.name(ingress)
        );
        // Parsed in place into this frame: no ~100-byte copy out of a `Result`.
        let mut parsed = PacketMeta::UNSPECIFIED;
        if let Err(e) = packet::parse_into(pkt, &mut parsed) {
            trace_step!(t, "parse", "malformed: {e}");
            return self.finish(Verdict::Drop(DropReason::Malformed(e)), len);
        }
        let meta = &parsed;
        trace_step!(t, "parse", "{}", describe(meta));
        if !self.blocklist.is_empty() && self.blocklist.check(meta.src, ingress, now) {
            trace_step!(t, "blocklist", "source {} is blocked", meta.src);
            return self.finish(Verdict::Drop(DropReason::Blocked), len);
        }
        if meta.frag.is_some() {
            return self.handle_fragment(pkt, meta, ingress, now, t);
        }
        let v = self.decide(pkt, meta, ingress, now, t);
        if self.ct.has_ended() {
            self.drain_ended(now);
        }
        if let Verdict::Forward(_) = v {
            // The common case, without `finish`'s match.
            self.stats.forwarded.add(len);
            return v;
        }
        self.finish(v, len)
    }

    fn finish(&mut self, v: Verdict, len: usize) -> Verdict {
        match &v {
            Verdict::Forward(_) => self.stats.forwarded.add(len),
            Verdict::Local => self.stats.local.add(len),
            Verdict::Held => self.stats.held.add(len),
            Verdict::Drop(r) => self.stats.count_drop(r, len),
            Verdict::Reject(r) => self.stats.count_reject(r, len),
        }
        v
    }

    fn handle_fragment<T: Tracer>(
        &mut self,
        pkt: &[u8],
        meta: &PacketMeta,
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let len = pkt.len();
        match self.frag.handle(pkt, meta, ingress, now) {
            FragResult::Incomplete => {
                trace_step!(t, "defrag", "fragment held for reassembly");
                self.finish(Verdict::Held, len)
            }
            FragResult::Dropped(e) => {
                trace_step!(t, "defrag", "fragment dropped: {e:?}");
                self.finish(Verdict::Drop(DropReason::Fragment), len)
            }
            FragResult::Complete {
                mut datagram,
                fragments,
            } => {
                let dmeta = match packet::parse(&datagram) {
                    Ok(m) => m,
                    Err(e) => {
                        trace_step!(t, "defrag", "reassembled datagram malformed: {e}");
                        return self.finish(Verdict::Drop(DropReason::Malformed(e)), len);
                    }
                };
                trace_step!(
                    t,
                    "defrag",
                    "reassembled {} fragments: {}",
                    fragments.len(),
                    describe(&dmeta)
                );
                match self.decide_outlined(&mut datagram, &dmeta, ingress, now, t) {
                    Verdict::Forward(zone) => {
                        // The datagram is allowed: its original fragments (this
                        // one included) leave through poll_transmit, in arrival
                        // order, translated like the datagram.
                        let x = self.last_xlate.take();
                        for mut f in fragments {
                            if let (Some(x), Ok(mut fm)) = (x, packet::parse(&f)) {
                                let _ = xlate::rewrite_to(&mut f, &mut fm, x);
                            }
                            self.out.push_back(Transmit { zone, packet: f });
                        }
                        self.finish(Verdict::Held, len)
                    }
                    other => self.finish(other, len),
                }
            }
        }
    }

    /// [`Pipeline::decide`] as a call, for the paths other than `handle_with`
    /// (reassembled datagrams): one copy of `decide` outside the fast path.
    #[inline(never)]
    fn decide_outlined<T: Tracer>(
        &mut self,
        pkt: &mut [u8],
        meta: &PacketMeta,
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        self.decide(pkt, meta, ingress, now, t)
    }

    /// Conntrack, routing and rules for one complete (unfragmented) packet.
    /// Inlined into `handle_with` (the fast path): the call, its eight
    /// arguments and its frame cost more than the code they separate
    /// (measured: IPv4 40 B 729 -> 696 instructions/packet).
    #[inline(always)]
    fn decide<T: Tracer>(
        &mut self,
        pkt: &mut [u8],
        meta: &PacketMeta,
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let len = pkt.len();
        match self.ct.track(ingress, meta, now) {
            Track::Tracked { id, dir, state } => {
                let current = self.generation;
                // One flow access for the generation check and the rest of
                // the fast path (the shaper and the counters are other
                // fields); fetched again only after a re-check.
                let mut flow = self.ct.flow_mut(id);
                if flow.as_ref().is_none_or(|f| f.generation != current) {
                    if let Some(v) = self.recheck(id, pkt, meta, dir, now, t) {
                        return v;
                    }
                    flow = self.ct.flow_mut(id);
                }
                if !self.l7.idle() {
                    if let Some(v) = self.l7_step(id, dir, pkt, meta, now, t) {
                        return v;
                    }
                    flow = self.ct.flow_mut(id);
                }
                let Some(flow) = flow else {
                    return Verdict::Drop(DropReason::Invalid);
                };
                let out = if dir == Dir::Original {
                    flow.egress()
                } else {
                    flow.ingress()
                };
                let (chain, rule) = (flow.chain, flow.rule);
                if !self.shaper.is_idle() {
                    if let Err(r) = self.shaper.packet(ingress, out, chain, rule, len, now) {
                        trace_step!(t, "shaper", "over limit: {}", r.name());
                        return Verdict::Drop(DropReason::RateLimited);
                    }
                }
                flow.count(dir, len);
                let x = xlate::is_translated(flow).then(|| xlate::target(flow, dir));
                self.last_xlate = x;
                // The IDS sees the packet as the peer sent it (before NAT).
                // (Checked here: without an IDS the call's argument set-up
                // alone cost ~35 instructions per packet.)
                if self.ids.is_some() {
                    if let Some(v) = self.ids_stage(id, dir, pkt, meta, ingress, out, now, t) {
                        return v;
                    }
                }
                if let Some(x) = x {
                    let mut m = *meta;
                    if xlate::rewrite_to(pkt, &mut m, x).is_err() {
                        return Verdict::Drop(DropReason::Invalid);
                    }
                    self.nat.stats.translated += 1;
                    let lim = self.nat.mss_limit(m.is_v6());
                    if self.nat.any_mss_clamp() && packet::rewrite::set_tcp_mss(pkt, &mut m, lim) {
                        self.nat.stats.mss_clamped += 1;
                    }
                    trace_step!(t, "nat", "translated to {}", tuple_line(meta.proto, &x));
                }
                self.stats.count_rule(chain, rule, len);
                self.stats.fast_path.add(len);
                trace_step!(
                    t,
                    "conntrack",
                    "flow {} {:?} state {:?}: fast path",
                    id.0,
                    dir,
                    state
                );
                trace_step!(t, "verdict", "forward to {}", self.zones.name(out));
                Verdict::Forward(out)
            }
            Track::Related { id, dir } => {
                if self.spoofed(meta, ingress, t) {
                    return Verdict::Drop(DropReason::SpoofedSource);
                }
                let Some(flow) = self.ct.flow(id) else {
                    return Verdict::Drop(DropReason::Invalid);
                };
                let out = if dir == Dir::Original {
                    flow.egress()
                } else {
                    flow.ingress()
                };
                let chain = flow.chain;
                let nat_flow = xlate::is_translated(flow).then(|| flow.clone());
                trace_step!(t, "conntrack", "related to flow {} ({:?})", id.0, dir);
                let m = match_input(meta, ingress, out, CtStateMask::RELATED);
                let d = self.evaluate(chain, &m, t);
                let v = self.apply(d, chain, pkt, meta, ingress, out, None, now, t);
                if let (Verdict::Forward(_), Some(f)) = (&v, nat_flow) {
                    let mut m = *meta;
                    if xlate::translate_icmp_error(pkt, &mut m, &f, dir).is_err() {
                        return Verdict::Drop(DropReason::Invalid);
                    }
                    self.nat.stats.icmp_errors_translated += 1;
                    trace_step!(t, "nat", "ICMP error translated: {}", describe(&m));
                }
                v
            }
            Track::New => self.new_flow(pkt, meta, ingress, now, t),
            Track::Invalid(reason) => {
                trace_step!(t, "conntrack", "invalid: {reason:?}");
                if self.spoofed(meta, ingress, t) {
                    return Verdict::Drop(DropReason::SpoofedSource);
                }
                let Some((out, chain)) = self.route(meta, ingress) else {
                    return Verdict::Drop(DropReason::Invalid);
                };
                let m = match_input(meta, ingress, out, CtStateMask::INVALID);
                let d = self.evaluate(chain, &m, t);
                let explicit = d
                    .rule
                    .and_then(|r| self.rules.chain(chain).rules.get(r as usize))
                    .is_some_and(|r| r.ct_state.is_some_and(|s| s.contains(CtStateMask::INVALID)));
                if explicit {
                    self.apply(d, chain, pkt, meta, ingress, out, None, now, t)
                } else {
                    trace_step!(
                        t,
                        "verdict",
                        "drop: invalid (no rule names the invalid state)"
                    );
                    Verdict::Drop(DropReason::Invalid)
                }
            }
        }
    }

    fn flow_generation(&self, id: FlowId) -> Option<u32> {
        self.ct.flow(id).map(|f| f.generation)
    }

    /// Re-checks a flow admitted under an older rule generation: its first
    /// packet is evaluated again under the current routes and rules. Returns
    /// `None` when the flow may go on, or the verdict for this packet when the
    /// flow was revoked (and removed).
    fn recheck<T: Tracer>(
        &mut self,
        id: FlowId,
        pkt: &mut [u8],
        meta: &PacketMeta,
        dir: Dir,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let flow = self.ct.flow(id)?;
        let (orig, egress, chain) = (flow.orig, flow.egress(), flow.chain);
        let (reply_src, reply_sport) = (flow.reply.src, flow.reply.sport);
        let icmp_first = flow.icmp_type();
        let spoofed = orig.zone.is_peer() && self.routes.lookup(orig.src) != Some(orig.zone);
        let first = MatchInput {
            ingress: orig.zone,
            egress,
            src: orig.src,
            // The rules saw the destination after DNAT (the reply's source).
            dst: reply_src,
            proto: orig.proto,
            sport: if matches!(orig.proto, proto::TCP | proto::UDP) {
                orig.sport
            } else {
                0
            },
            dport: if matches!(orig.proto, proto::TCP | proto::UDP) {
                reply_sport
            } else {
                0
            },
            // The flow keeps the type and code of the packet that created it.
            icmp: icmp_first,
            tcp_flags: (orig.proto == proto::TCP).then_some(packet::tcp_flags::SYN),
            ct_state: CtStateMask::NEW,
        };
        let d = self.l7_recheck(id, chain, &first);
        trace_step!(
            t,
            "recheck",
            "flow {} from generation {:?} re-checked: {:?}",
            id.0,
            self.flow_generation(id),
            d
        );
        if !spoofed && d.action == Action::Accept {
            let gen = self.generation;
            if let Some(f) = self.ct.flow_mut(id) {
                f.generation = gen;
                f.rule = d.rule;
            }
            return None;
        }
        self.ct.remove(id);
        self.stats.flows_revoked += 1;
        self.push_event(Event {
            chain,
            rule: d.rule,
            action: d.action,
            revoked: true,
            ingress: orig.zone,
            egress,
            src: orig.src,
            dst: orig.dst,
            proto: orig.proto,
            sport: orig.sport,
            dport: orig.dport,
        });
        let reason = match d.rule {
            Some(rule) => DropReason::Rule { chain, rule },
            None => DropReason::Policy(chain),
        };
        let reason = if spoofed {
            DropReason::SpoofedSource
        } else {
            reason
        };
        // Tell the sender of this packet the flow is gone when the rule rejects.
        if let (Action::Reject(with), false) = (d.action, spoofed) {
            let sender = if dir == Dir::Original {
                orig.zone
            } else {
                egress
            };
            self.queue_reply(pkt, meta, with, sender, now, t);
            return Some(Verdict::Reject(reason));
        }
        Some(Verdict::Drop(reason))
    }

    /// Cryptokey routing's ingress rule: a packet from a peer must come from
    /// that peer's AllowedIPs. Checked on every path that is not a known
    /// flow's (a flow's packets match a key that holds the checked source).
    fn spoofed<T: Tracer>(&self, meta: &PacketMeta, ingress: ZoneId, t: &mut T) -> bool {
        if ingress.is_peer() && self.routes.lookup(meta.src) != Some(ingress) {
            trace_step!(
                t,
                "route",
                "source {} is outside the AllowedIPs of {}",
                meta.src,
                self.zones.name(ingress)
            );
            return true;
        }
        false
    }

    /// Where a new packet goes and which chain decides it.
    /// In netstack mode the gateway itself is zone `local` and the outside
    /// is zone `host`; in TUN mode both are behind the TUN.
    fn route(&self, meta: &PacketMeta, ingress: ZoneId) -> Option<(ZoneId, Chain)> {
        let (me, outside) = if self.netstack {
            (ZoneId::LOCAL, ZoneId::HOST)
        } else {
            (ZoneId::TUN, ZoneId::TUN)
        };
        if self.local_addrs.contains(&meta.dst) {
            // To the gateway itself: the host behind the TUN (or the netstack) answers.
            return (ingress != me).then_some((me, Chain::Input));
        }
        let chain = if ingress == me && self.local_addrs.contains(&meta.src) {
            Chain::Output
        } else {
            Chain::Forward
        };
        let out = match self.routes.lookup(meta.dst) {
            Some(z) => z,
            // (the netstack originates only towards peers)
            None if ingress != outside && !(self.netstack && ingress == me) => outside,
            None => return None,
        };
        (out != ingress).then_some((out, chain))
    }

    fn new_flow<T: Tracer>(
        &mut self,
        pkt: &mut [u8],
        meta: &PacketMeta,
        ingress: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        if self.spoofed(meta, ingress, t) {
            return Verdict::Drop(DropReason::SpoofedSource);
        }
        if self.anomaly.is_some() {
            if let Some(v) = self.observe_anomaly(meta, ingress, now, t) {
                return v;
            }
        }
        let dnat = self.nat.dnat(meta, ingress);
        let xm = match dnat {
            Some(d) => {
                trace_step!(
                    t,
                    "nat",
                    "dnat by {}: destination {} -> {}",
                    self.nat.rule_name(d.rule),
                    endpoint(meta.dst, meta.ports().1),
                    endpoint(d.addr, d.port)
                );
                dnat_meta(meta, d)
            }
            None => *meta,
        };
        let Some((out, chain)) = self.route(&xm, ingress) else {
            trace_step!(t, "route", "no route to {}", xm.dst);
            return Verdict::Drop(DropReason::NoRoute);
        };
        trace_step!(t, "conntrack", "new flow");
        trace_step!(
            t,
            "route",
            "to zone {} via chain {}",
            self.zones.name(out),
            chain.name()
        );
        let m = match_input(&xm, ingress, out, CtStateMask::NEW);
        let d = self.rules.evaluate(chain, &m);
        if d.rule.is_some_and(|r| self.rules.rule_has_l7(chain, r)) {
            // decided (and `block` applied) once the L7 name is known
            return self.l7_new_flow(d, chain, m, pkt, meta, ingress, out, dnat, now, t);
        }
        self.report_decision(chain, &m, d, t);
        self.rule_block(chain, d.rule, meta.src, now, t);
        self.apply(
            d,
            chain,
            pkt,
            meta,
            ingress,
            out,
            Some(NewFlow { dnat, l7: None }),
            now,
            t,
        )
    }

    fn evaluate<T: Tracer>(&mut self, chain: Chain, m: &MatchInput, t: &mut T) -> Decision {
        let d = self.rules.evaluate(chain, m);
        self.report_decision(chain, m, d, t);
        d
    }

    /// Traces a rule decision and emits its log event (rules with `log`).
    fn report_decision<T: Tracer>(&mut self, chain: Chain, m: &MatchInput, d: Decision, t: &mut T) {
        if t.enabled() {
            let who = match d.rule {
                Some(r) => self.rules.rule_name(chain, r),
                None => format!("policy of chain {}", chain.name()),
            };
            t.step(
                "rules",
                format!("{} -> {:?} (decided by {who})", chain.name(), d.action),
            );
        }
        if d.log {
            let ev = Event {
                chain,
                rule: d.rule,
                action: d.action,
                revoked: false,
                ingress: m.ingress,
                egress: m.egress,
                src: m.src,
                dst: m.dst,
                proto: m.proto,
                sport: m.sport,
                dport: m.dport,
            };
            self.push_event(ev);
        }
    }

    /// Applies a rule decision. `create` is `Some` when an accept starts a flow.
    #[allow(clippy::too_many_arguments)]
    fn apply<T: Tracer>(
        &mut self,
        d: Decision,
        chain: Chain,
        pkt: &mut [u8],
        meta: &PacketMeta,
        ingress: ZoneId,
        out: ZoneId,
        create: Option<NewFlow>,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let len = pkt.len();
        self.stats.count_rule(chain, d.rule, len);
        let reason = match d.rule {
            Some(rule) => DropReason::Rule { chain, rule },
            None => DropReason::Policy(chain),
        };
        match d.action {
            Action::Accept => {
                if !self.shaper.is_idle() {
                    if create.is_some() {
                        if let Err(r) = self.shaper.admit_flow(meta.src, ingress, now) {
                            trace_step!(t, "shaper", "new flow refused: {}", r.name());
                            return Verdict::Drop(DropReason::RateLimited);
                        }
                    }
                    if let Err(r) = self.shaper.packet(ingress, out, chain, d.rule, len, now) {
                        trace_step!(t, "shaper", "over limit: {}", r.name());
                        if create.is_some() {
                            self.shaper.flow_ended(meta.src, ingress);
                        }
                        return Verdict::Drop(DropReason::RateLimited);
                    }
                }
                if let Some(NewFlow { dnat, l7 }) = create {
                    let reply = match self.nat_binding(meta, ingress, out, dnat, now, t) {
                        Ok(r) => r,
                        Err(v) => {
                            if !self.shaper.is_idle() {
                                self.shaper.flow_ended(meta.src, ingress);
                            }
                            return v;
                        }
                    };
                    match self
                        .ct
                        .insert(ingress, meta, out, reply, self.generation, now)
                    {
                        Ok(id) => {
                            let start = self.ms(now);
                            let slot = id.0 as usize;
                            if self.flow_start.len() <= slot {
                                self.flow_start.resize(slot + 1, start);
                            }
                            if let Some(s) = self.flow_start.get_mut(slot) {
                                *s = start;
                            }
                            if let Some(f) = self.ct.flow_mut(id) {
                                f.chain = chain;
                                f.rule = d.rule;
                                f.count(Dir::Original, len);
                            }
                            self.stats.flows_created += 1;
                            trace_step!(t, "conntrack", "flow {} created", id.0);
                            if let Some(first) = l7 {
                                self.l7_start(id, chain, first, meta);
                            }
                            if let Some(v) =
                                self.ids_stage(id, Dir::Original, pkt, meta, ingress, out, now, t)
                            {
                                return v;
                            }
                            if let Some(r) = reply {
                                let x = xlate::Tuple {
                                    src: r.dst,
                                    dst: r.src,
                                    sport: r.dport,
                                    dport: r.sport,
                                };
                                self.last_xlate = Some(x);
                                let mut m = *meta;
                                if xlate::rewrite_to(pkt, &mut m, x).is_err() {
                                    self.ct.remove(id);
                                    return Verdict::Drop(DropReason::Invalid);
                                }
                                let lim = self.nat.mss_limit(m.is_v6());
                                if self.nat.any_mss_clamp()
                                    && packet::rewrite::set_tcp_mss(pkt, &mut m, lim)
                                {
                                    self.nat.stats.mss_clamped += 1;
                                    trace_step!(t, "nat", "TCP MSS clamped to {lim}");
                                }
                            }
                        }
                        Err(e) => {
                            if !self.shaper.is_idle() {
                                self.shaper.flow_ended(meta.src, ingress);
                            }
                            trace_step!(t, "conntrack", "flow refused: {e:?}");
                            return Verdict::Drop(DropReason::ConntrackFull);
                        }
                    }
                }
                trace_step!(t, "verdict", "forward to {}", self.zones.name(out));
                Verdict::Forward(out)
            }
            Action::Drop => {
                trace_step!(t, "verdict", "drop");
                Verdict::Drop(reason)
            }
            Action::Reject(with) => {
                self.queue_reply(pkt, meta, with, ingress, now, t);
                Verdict::Reject(reason)
            }
        }
    }

    /// Builds and queues the answer to a rejected packet, within the RFC rules
    /// and the rate limit.
    fn queue_reply<T: Tracer>(
        &mut self,
        pkt: &[u8],
        meta: &PacketMeta,
        with: RejectWith,
        to: ZoneId,
        now: Instant,
        t: &mut T,
    ) {
        let is_tcp = matches!(meta.l4, L4::Tcp(_));
        let reply = match with {
            RejectWith::Default | RejectWith::TcpReset if is_tcp => build::tcp_reset(pkt, meta),
            RejectWith::IcmpUnreachable(code) => build::icmp_unreachable(pkt, meta, code, None),
            _ => build::icmp_unreachable(pkt, meta, 3, None),
        };
        match reply {
            Some(r) if self.limiter.allow(now) => {
                trace_step!(
                    t,
                    "reject",
                    "{} byte reply queued to {}",
                    r.len(),
                    self.zones.name(to)
                );
                self.stats.replies_sent += 1;
                self.out.push_back(Transmit {
                    zone: to,
                    packet: r,
                });
            }
            _ => {
                trace_step!(t, "reject", "no reply sent (RFC rules or rate limit)");
                self.stats.replies_suppressed += 1;
            }
        }
    }

    /// SNAT decision and external tuple for a new flow the rules accepted
    /// (`Ok(None)`: not translated). Exhaustion is a counted drop and a log event.
    fn nat_binding<T: Tracer>(
        &mut self,
        meta: &PacketMeta,
        ingress: ZoneId,
        out: ZoneId,
        dnat: Option<DnatTo>,
        now: Instant,
        t: &mut T,
    ) -> Result<Option<crate::conntrack::FlowKey>, Verdict> {
        self.last_xlate = None;
        if self.nat.is_empty() {
            return Ok(None);
        }
        let xm = dnat.map_or(*meta, |d| dnat_meta(meta, d));
        let snat = self.nat.snat(&xm, ingress, out);
        if dnat.is_none() && snat.is_none() {
            return Ok(None);
        }
        self.nat_seed.2 = self.nat_seed.2.wrapping_add(1);
        let seed = {
            use std::hash::Hasher as _;
            let mut h =
                siphasher::sip::SipHasher13::new_with_keys(self.nat_seed.0, self.nat_seed.1);
            h.write_u64(self.nat_seed.2);
            h.finish()
        };
        let rule = snat.map(|s| s.rule).or(dnat.map(|d| d.rule)).unwrap_or(0);
        let orig = crate::conntrack::FlowKey::from_meta(ingress, meta);
        match self
            .nat
            .binding(&self.ct, meta, ingress, out, dnat, snat, seed, now)
        {
            Ok(reply) => {
                self.nat.bound(dnat, snat);
                let x = xlate::Tuple {
                    src: reply.dst,
                    dst: reply.src,
                    sport: reply.dport,
                    dport: reply.sport,
                };
                trace_step!(
                    t,
                    "nat",
                    "binding by {}: {} -> {}",
                    self.nat.rule_name(rule),
                    tuple_line(
                        meta.proto,
                        &xlate::Tuple {
                            src: orig.src,
                            dst: orig.dst,
                            sport: orig.sport,
                            dport: orig.dport
                        }
                    ),
                    tuple_line(meta.proto, &x)
                );
                if self.nat.log_rule(rule) {
                    self.push_nat_event(NatEvent::binding(rule, &orig, x));
                }
                Ok(Some(reply))
            }
            Err(e) => {
                self.nat.stats.exhausted += 1;
                trace_step!(
                    t,
                    "nat",
                    "{} by {}: {e}",
                    "no binding",
                    self.nat.rule_name(rule)
                );
                self.push_nat_event(NatEvent::exhausted(rule, &orig));
                Err(Verdict::Drop(DropReason::NatExhausted))
            }
        }
    }

    /// Installs (or removes) the IDS; it inspects accepted packets of new
    /// flows and every packet on the fast path.
    pub fn set_ids(&mut self, ids: Option<crate::ids::Ids>) {
        self.ids = ids;
    }

    pub fn take_ids(&mut self) -> Option<crate::ids::Ids> {
        self.ids.take()
    }

    pub fn ids(&self) -> Option<&crate::ids::Ids> {
        self.ids.as_ref()
    }

    /// IDS alerts, oldest first, with the WireGuard peer zone involved.
    #[must_use]
    pub fn poll_ids_alert(&mut self) -> Option<(crate::ids::Alert, Option<ZoneId>)> {
        self.ids_alerts.pop_front()
    }

    /// The IDS stage: `None` lets the packet go on; otherwise the drop or
    /// reject verdict (a reject answers the sender and resets the receiver).
    #[allow(clippy::too_many_arguments)]
    fn ids_stage<T: Tracer>(
        &mut self,
        id: FlowId,
        dir: Dir,
        pkt: &[u8],
        meta: &PacketMeta,
        sender: ZoneId,
        receiver: ZoneId,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let ids = self.ids.as_mut()?;
        let v = ids.inspect(id, dir, meta, pkt, now);
        let peer = [sender, receiver].into_iter().find(|z| z.is_peer());
        let mut sid = None;
        while let Some(a) = ids.poll_alert() {
            if a.blocked {
                sid = Some(a.sid);
            }
            if self.ids_alerts.len() < EVENT_QUEUE {
                self.ids_alerts.push_back((a, peer));
            } else {
                self.stats.events_suppressed += 1;
            }
        }
        if let (Some(ttl), false) = (self.ids_block, v == crate::ids::IdsVerdict::Pass) {
            // the flow's initiator
            let src = if dir == Dir::Original {
                meta.src
            } else {
                meta.dst
            };
            let reason = match sid {
                Some(s) => format!("ids signature {s}"),
                None => "ids drop".to_string(),
            };
            self.block_source(src, crate::blocklist::Origin::Ids, reason, ttl, now, t);
        }
        match v {
            crate::ids::IdsVerdict::Pass => None,
            crate::ids::IdsVerdict::Drop => {
                trace_step!(t, "ids", "drop");
                Some(Verdict::Drop(DropReason::Ids))
            }
            crate::ids::IdsVerdict::Reject => {
                trace_step!(t, "ids", "reject");
                self.queue_reply(pkt, meta, RejectWith::Default, sender, now, t);
                let keys = self.ct.flow(id).map(|f| (f.orig, f.reply));
                if let Some((orig, reply)) = keys {
                    self.reset_receiver(meta, dir, &orig, &reply, receiver, now);
                }
                Some(Verdict::Reject(DropReason::Ids))
            }
        }
    }

    /// Resets the receiver's end of the TCP connection `meta` belongs to
    /// (an RST as if from the sender, rate-limited like every reply). `meta`
    /// travels in direction `dir` of the flow with keys `orig` / `reply`;
    /// the RST carries the addresses and ports the receiver sees, i.e. after
    /// NAT (for a masqueraded client the server sees the gateway's address
    /// and port, and only an RST to that tuple resets its connection).
    fn reset_receiver(
        &mut self,
        meta: &PacketMeta,
        dir: Dir,
        orig: &FlowKey,
        reply: &FlowKey,
        receiver: ZoneId,
        now: Instant,
    ) {
        if let (L4::Tcp(tcp), true) = (meta.l4, self.limiter.allow(now)) {
            let (src, sp, dst, dp) = receiver_view(dir, orig, reply);
            let spec = packet::synth::TcpSpec {
                flags: packet::tcp_flags::RST | packet::tcp_flags::ACK,
                seq: tcp.seq,
                ack: tcp.ack,
                window: 0,
                wscale: None,
                mss: None,
            };
            if let Some(rst) = packet::synth::tcp(
                std::net::SocketAddr::new(src, sp),
                std::net::SocketAddr::new(dst, dp),
                spec,
                &[],
            ) {
                self.out.push_back(Transmit {
                    zone: receiver,
                    packet: rst,
                });
            }
        }
    }

    fn push_nat_event(&mut self, ev: NatEvent) {
        if self.nat_events.len() >= EVENT_QUEUE {
            self.stats.events_suppressed += 1;
        } else {
            self.nat_events.push_back(ev);
        }
    }

    /// NAT log events (bindings of rules with `log = true`, exhaustion), oldest first.
    #[must_use]
    pub fn poll_nat_event(&mut self) -> Option<NatEvent> {
        self.nat_events.pop_front()
    }

    /// Formats a NAT event as one line.
    pub fn nat_event_line(&self, e: &NatEvent) -> String {
        e.line(self.nat.rule_name(e.rule), &self.zones)
    }

    /// The NAT engine (counters, rules, balancer state).
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    /// The NAT engine, for run-time backend changes (`ctl nat drain`, health checks).
    pub fn nat_mut(&mut self) -> &mut Nat {
        &mut self.nat
    }

    fn push_event(&mut self, ev: Event) {
        if self.events.len() >= EVENT_QUEUE {
            self.stats.events_suppressed += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// Packets the pipeline originated (rejects, released fragments), in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Log events, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Housekeeping: expiry of flows and incomplete datagrams. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut left = EXPIRE_BUDGET;
        while left > 0 {
            let n = self.ct.expire(now, EXPIRE_BATCH.min(left));
            self.drain_ended(now);
            if n < EXPIRE_BATCH.min(left) {
                break;
            }
            left -= n;
        }
        self.frag.expire(now);
        self.nat.recount(self.ct.iter().map(|(_, f)| f));
        self.shaper.sweep(now);
        if let Some(ids) = self.ids.as_mut() {
            ids.handle_timeout(now);
        }
        self.blocklist.expire(now);
        if let Some(a) = self.anomaly.as_mut() {
            a.handle_timeout(now);
        }
    }

    pub fn zones(&self) -> &ZoneTable {
        &self.zones
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The current rule generation (bumped by every reload).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The name of a chain's rule or policy, for logs.
    pub fn rule_label(&self, chain: Chain, rule: Option<u32>) -> String {
        match rule {
            Some(r) => self.rules.rule_name(chain, r),
            None => format!("{}-policy", chain.name()),
        }
    }

    /// Per-chain rule counters (index = rule index).
    pub fn rule_counters(&self, chain: Chain) -> &[Count] {
        &self.stats.rules[chain_slot(chain)]
    }
}

/// One-line description of a packet for traces.
pub fn describe(m: &PacketMeta) -> String {
    let frag = match m.frag {
        Some(f) => format!(
            " fragment id {} offset {}{}",
            f.id,
            f.offset,
            if f.more { " MF" } else { "" }
        ),
        None => String::new(),
    };
    let l4 = match m.l4 {
        L4::Tcp(t) => format!(
            "tcp {}:{} -> {}:{} flags {}",
            m.src,
            t.sport,
            m.dst,
            t.dport,
            flag_string(t.flags)
        ),
        L4::Udp { sport, dport } => format!("udp {}:{} -> {}:{}", m.src, sport, m.dst, dport),
        L4::Icmp(i) => format!(
            "icmp{} {} -> {} type {} code {}{}",
            if m.is_v6() { "v6" } else { "" },
            m.src,
            m.dst,
            i.ty,
            i.code,
            i.echo_id.map(|id| format!(" id {id}")).unwrap_or_default()
        ),
        L4::Other => format!("proto {} {} -> {}", m.proto, m.src, m.dst),
    };
    format!("{l4}, {} bytes{frag}", m.total_len)
}

/// TCP flags as letters (S, A, F, R, P, U, E, C).
pub fn flag_string(f: u8) -> String {
    use packet::tcp_flags::*;
    let mut s = String::new();
    for (bit, c) in [
        (SYN, 'S'),
        (ACK, 'A'),
        (FIN, 'F'),
        (RST, 'R'),
        (PSH, 'P'),
        (URG, 'U'),
        (ECE, 'E'),
        (CWR, 'C'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

impl PipelineConfig {
    /// The pipeline's part of a validated config.
    pub fn from_config(c: &crate::config::Config) -> Self {
        PipelineConfig {
            zones: c.zones.clone(),
            peer_routes: c
                .peers
                .iter()
                .map(|p| (p.zone, p.allowed_ips.clone()))
                .collect(),
            local_addrs: c.interface.addresses.iter().map(|n| n.ip()).collect(),
            input: c.input.clone(),
            forward: c.forward.clone(),
            output: c.output.clone(),
            conntrack: c.conntrack,
            fragments: c.fragments,
            reply_per_sec: c.reject.per_sec,
            reply_burst: c.reject.burst,
            netstack: c.interface.mode == crate::config::Mode::Netstack,
            nat: NatConfig {
                rules: c.nat.clone(),
                local_nets: c.interface.addresses.clone(),
                peer_routes: c
                    .peers
                    .iter()
                    .map(|p| (p.zone, p.allowed_ips.clone()))
                    .collect(),
                mtu: c.interface.mtu,
            },
        }
    }
}

impl Pipeline {
    /// A human-readable counters report: totals, drops by reason, per-rule
    /// hits, connection tracking. Used for the log at shutdown and on SIGUSR1.
    pub fn report(&self) -> String {
        use std::fmt::Write as _;
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "packets: received {} ({} bytes), forwarded {} (fast path {}), dropped {}, rejected {}, held {}",
            s.received.packets,
            s.received.bytes,
            s.forwarded.packets,
            s.fast_path.packets,
            s.dropped.packets,
            s.rejected.packets,
            s.held.packets
        );
        if !s.drop_reasons.is_empty() {
            let reasons: Vec<String> = s
                .drop_reasons
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "drops by reason: {}", reasons.join(" "));
        }
        for chain in Chain::ALL {
            for (i, c) in self.rule_counters(chain).iter().enumerate() {
                if c.packets > 0 {
                    let _ = writeln!(
                        out,
                        "rule {}/{}: {} packets, {} bytes",
                        chain.name(),
                        self.rules.rule_name(chain, i as u32),
                        c.packets,
                        c.bytes
                    );
                }
            }
            let p = s.policy(chain);
            if p.packets > 0 {
                let _ = writeln!(
                    out,
                    "policy {}: {} packets, {} bytes",
                    chain.name(),
                    p.packets,
                    p.bytes
                );
            }
        }
        let n = self.nat.stats;
        if !self.nat.is_empty() {
            let _ = writeln!(
                out,
                "nat: snat bindings {}, dnat bindings {}, exhausted {}, translated packets {}, icmp errors translated {}, mss clamped {}",
                n.snat_bindings, n.dnat_bindings, n.exhausted, n.translated, n.icmp_errors_translated, n.mss_clamped
            );
        }
        let _ = writeln!(
            out,
            "conntrack: {} flows (created {}, revoked by reload {}); replies sent {}, suppressed {}",
            self.ct.len(),
            s.flows_created,
            s.flows_revoked,
            s.replies_sent,
            s.replies_suppressed
        );
        out
    }

    /// Formats a log event as one line (zone names resolved).
    pub fn event_line(&self, e: &Event) -> String {
        let ports = matches!(e.proto, proto::TCP | proto::UDP);
        let ep = |a: IpAddr, p: u16| match (ports, a) {
            (true, IpAddr::V6(v6)) => format!("[{v6}]:{p}"),
            (true, a) => format!("{a}:{p}"),
            (false, a) => a.to_string(),
        };
        format!(
            "{}{} {} {:?}: {} {} -> {} ({} -> {})",
            if e.revoked { "revoked flow: " } else { "" },
            e.chain.name(),
            self.rule_label(e.chain, e.rule),
            e.action,
            proto_name(e.proto),
            ep(e.src, e.sport),
            ep(e.dst, e.dport),
            self.zones.name(e.ingress),
            self.zones.name(e.egress),
        )
    }
}

/// `addr:port` (`[v6]:port`).
pub fn endpoint(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V6(v6) => format!("[{v6}]:{p}"),
        a => format!("{a}:{p}"),
    }
}

/// A translated tuple for traces and logs.
pub fn tuple_line(proto_: u8, x: &xlate::Tuple) -> String {
    if matches!(proto_, proto::TCP | proto::UDP) {
        format!(
            "{} {} -> {}",
            proto_name(proto_),
            endpoint(x.src, x.sport),
            endpoint(x.dst, x.dport)
        )
    } else if matches!(proto_, proto::ICMP | proto::ICMPV6) {
        format!(
            "{} {} -> {} id {}",
            proto_name(proto_),
            x.src,
            x.dst,
            x.sport
        )
    } else {
        format!("{} {} -> {}", proto_name(proto_), x.src, x.dst)
    }
}

/// The packet summary as the rules see it after DNAT.
/// The endpoints of a packet travelling in direction `dir` as its receiver
/// sees them, (source, source port, destination, destination port): the
/// packets that reach the server carry the reply key swapped (after SNAT and
/// DNAT), those that reach the client the original key swapped.
fn receiver_view(dir: Dir, orig: &FlowKey, reply: &FlowKey) -> (IpAddr, u16, IpAddr, u16) {
    let k = match dir {
        Dir::Original => reply,
        Dir::Reply => orig,
    };
    (k.dst, k.dport, k.src, k.sport)
}

fn dnat_meta(meta: &PacketMeta, d: DnatTo) -> PacketMeta {
    let mut m = *meta;
    m.dst = d.addr;
    match &mut m.l4 {
        L4::Tcp(t) => t.dport = d.port,
        L4::Udp { dport, .. } => *dport = d.port,
        _ => {}
    }
    m
}

/// The name of an IP protocol number for logs.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        n => format!("proto-{n}"),
    }
}
