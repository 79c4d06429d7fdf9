//! Intrusion detection and prevention, inline and sans IO.
//!
//! [`Ids::inspect`] sees every packet the rules accepted (new flows) and every
//! packet of an established flow (the fast path), with the flow's id and
//! direction from connection tracking, and returns an [`IdsVerdict`]. Alerts
//! are drained with [`Ids::poll_alert`]; [`eve`] turns them into EVE JSON.
//!
//! Inspection of one packet:
//! 1. a flow dropped earlier (prevent mode) drops the packet;
//! 2. header-only rules: IP-only rules once per flow direction, packet rules
//!    (flags, dsize, itype...) on every packet; both found through an
//!    address index ([`headers`]), rules needing a flowbit through the bits
//!    the flow has;
//! 3. payload: UDP/ICMP payloads directly; TCP payloads go through
//!    per-direction [`stream`] reassembly and the in-order bytes are
//!    inspected (`tcp-pkt` rules see the packet payload instead; an in-order
//!    segment is the stream's new bytes, so one prefilter scan serves both);
//! 4. app layer ([`app`]): HTTP/1 requests, the TLS ClientHello SNI and DNS
//!    queries fill the sticky buffers, each request/hello/query inspected once;
//! 5. for each buffer a multi-literal [`prefilter`] over the rules' fast
//!    patterns (case-insensitive; the full evaluation checks case) yields the
//!    candidates, and only those are evaluated in full ([`detect`]).
//!
//! Actions (Suricata's order of precedence): a matching `pass` rule
//! silences every other match of the packet; `drop` drops the packet and the
//! rest of the flow; `reject` also answers with a TCP RST / ICMP unreachable
//! (the pipeline sends it); `alert` only alerts. In `detect` mode nothing is
//! dropped: drop/reject rules alert with action "allowed".
//! Stream content matches alert once per rule per flow direction (the
//! stream is inspected again as it grows, like Suricata's raw stream
//! inspection which does not re-alert on the same data).

pub mod app;
pub mod detect;
pub mod eve;
pub mod headers;
pub mod prefilter;
pub mod replay;
pub mod rule;
pub mod stream;

use crate::conntrack::{Dir, FlowId};
use crate::packet::{PacketMeta, L4};
use detect::{match_buffer, Buf};
use headers::HeaderIndex;
use prefilter::Prefilter;
use rule::set::addr_value;
use rule::{AppProto, Buffer, Matcher, Proto, RuleAction, Signature, ThresholdKind, Track};
use siphasher::sip::SipHasher13;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// detect: alert only; prevent: drop/reject rules act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Detect,
    Prevent,
}

/// Engine settings (from `[ids]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsConfig {
    pub mode: Mode,
    /// Bytes reassembled and inspected per direction of a TCP flow.
    pub stream_depth: usize,
    /// Flows with inspection state (beyond this new flows get packet-only inspection).
    pub max_flows: usize,
    /// Idle time after which a flow's inspection state is dropped.
    pub flow_timeout: Duration,
    /// Threshold/detection_filter tracking entries.
    pub max_thresholds: usize,
    /// Queued alerts before new ones are counted as lost.
    pub max_alerts: usize,
}

impl Default for IdsConfig {
    fn default() -> Self {
        IdsConfig {
            mode: Mode::Detect,
            // Suricata's default stream.reassembly.depth is 1 MiB; 256 KiB
            // covers request/response headers and the start of bodies.
            stream_depth: 256 * 1024,
            max_flows: 65_536,
            // The conntrack established timeout order of magnitude; state is
            // also dropped when the pipeline reports the flow gone.
            flow_timeout: Duration::from_secs(600),
            max_thresholds: 65_536,
            max_alerts: 4096,
        }
    }
}

/// What to do with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsVerdict {
    Pass,
    Drop,
    /// Drop and answer (TCP RST / ICMP unreachable).
    Reject,
}

/// EVE event types the engine produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Alert,
    /// A stream anomaly (overlap with different data).
    Anomaly,
    /// A packet dropped because its flow was dropped.
    Drop,
}

/// One alert (or anomaly / drop event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub event: EventType,
    pub now: Instant,
    pub flow: FlowId,
    /// Per-flow serial (EVE `flow_id`).
    pub flow_serial: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub app_proto: Option<AppProto>,
    /// The rule's action; `blocked` says whether it was enforced.
    pub action: RuleAction,
    pub blocked: bool,
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
    pub classtype: Option<String>,
    pub severity: u8,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdsStats {
    pub packets: u64,
    pub bytes: u64,
    pub candidates: u64,
    pub matches: u64,
    pub alerts: u64,
    pub alerts_lost: u64,
    pub drops: u64,
    pub overlap_conflicts: u64,
    pub flows_untracked: u64,
    pub threshold_full: u64,
    /// Bytes run through the prefilter automata.
    pub scanned: u64,
    /// Prefilter pattern hits.
    pub hits: u64,
}

/// Keyed SipHash-1-3 for tables indexed by packet data.
#[derive(Debug, Clone, Copy)]
pub struct SipBuild(u64, u64);

impl BuildHasher for SipBuild {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// Fast patterns are cut to this many bytes (Hyperscan-style literal
/// prefilters rarely gain from longer literals; a new stream chunk is scanned
/// from this many bytes - 1 before it).
const MAX_FAST_PATTERN: usize = 32;

/// Index of the group for `tcp-pkt` payload rules (after the buffers).
const PKT_GROUP: usize = Buffer::ALL.len();
const GROUPS: usize = PKT_GROUP + 1;

/// No pattern (in [`TcpScan::ids`]).
const NO_PAT: u32 = u32::MAX;

/// The stream and `tcp-pkt` payload groups in one prefilter: an in-order
/// segment's bytes are both the packet payload and the stream's new bytes,
/// so they are scanned once for both groups.
#[derive(Debug)]
struct TcpScan {
    pf: Prefilter,
    /// Merged pattern id -> (stream group pattern id, `tcp-pkt` group
    /// pattern id), [`NO_PAT`] when not in that group. Stream patterns keep
    /// their ids (so hits come in the stream group's order).
    ids: Vec<(u32, u32)>,
}

/// A flowbit operation with the name interned.
#[derive(Debug, Clone)]
enum BitOp {
    Set(u16),
    Unset(u16),
    Toggle(u16),
    IsSet(Vec<u16>),
    IsNotSet(Vec<u16>),
}

/// Rules whose fast pattern lives in one buffer.
#[derive(Debug, Default)]
struct Group {
    ac: Option<Prefilter>,
    /// Pattern id -> rule indices.
    by_pattern: Vec<Vec<u32>>,
    /// Rules with matchers in this buffer but no fast pattern.
    always: Vec<u32>,
    max_pat: usize,
}

#[derive(Debug)]
struct FlowState {
    serial: u64,
    key: (IpAddr, IpAddr, u16, u16, u8),
    last: Option<Instant>,
    streams: [stream::Stream; 2],
    syn: bool,
    synack: bool,
    established: bool,
    seen: [bool; 2],
    app: Option<AppProto>,
    /// Stream-payload rules already alerted per direction.
    fired: [Vec<u32>; 2],
    http_off: usize,
    tls_done: bool,
    dns_off: usize,
    dropped: bool,
    /// A pass rule matched: the rest of the flow is not inspected.
    passed: bool,
    /// Flowbits set on this flow.
    bits: Vec<u16>,
    /// Per direction: the plain header rules whose addresses and ports fit
    /// the flow.
    hdr: [Option<Vec<u32>>; 2],
}

impl FlowState {
    fn new(serial: u64, key: (IpAddr, IpAddr, u16, u16, u8)) -> Self {
        FlowState {
            serial,
            key,
            last: None,
            streams: Default::default(),
            syn: false,
            synack: false,
            established: false,
            seen: [false; 2],
            app: None,
            fired: Default::default(),
            http_off: 0,
            tls_done: false,
            dns_off: 0,
            dropped: false,
            passed: false,
            bits: Vec::new(),
            hdr: [None, None],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TKey {
    Addr(IpAddr),
    Pair(IpAddr, IpAddr),
    Flow(u64),
    Rule,
}

#[derive(Debug, Clone, Copy)]
struct TState {
    start: Instant,
    count: u32,
}

/// Everything known about the packet being inspected.
struct Ctx<'a> {
    meta: &'a PacketMeta,
    to_server: bool,
    established: bool,
    app: Option<AppProto>,
    payload_len: usize,
    payload: Option<&'a [u8]>,
    stream: bool,
    http: Option<&'a app::HttpRequest>,
    sni: Option<&'a [u8]>,
    dns: &'a [Vec<u8>],
    bits: &'a [u16],
}

/// The engine.
#[derive(Debug)]
pub struct Ids {
    cfg: IdsConfig,
    sigs: Vec<Signature>,
    groups: Vec<Group>,
    ip_only: Vec<u32>,
    /// `ip_only` by address.
    ip_index: HeaderIndex,
    /// Header rules by transport: tcp, udp, icmp, other.
    pkt_rules: [Vec<u32>; 4],
    /// `pkt_rules` by address.
    pkt_index: [HeaderIndex; 4],
    /// Header rules that need a flowbit set: only for flows with bits.
    pkt_isset: [Vec<u32>; 4],
    /// The same by flowbit id: the rules whose first `isset` group names
    /// that bit (a rule can match only when one of them is set), so a flow
    /// with bits looks up its few candidates instead of testing every
    /// rule (ET Open: 825 of the 844 TCP header rules need a bit).
    isset_by_bit: [Vec<Vec<u32>>; 4],
    flows: HashMap<FlowId, FlowState>,
    next_serial: u64,
    thresholds: HashMap<(u32, TKey), TState, SipBuild>,
    alerts: VecDeque<Alert>,
    seen: Vec<u32>,
    stamp: u32,
    /// Per rule: its flowbit operations (names interned).
    bit_ops: Vec<Vec<BitOp>>,
    /// Flowbit names by interned id.
    bit_names: Vec<String>,
    stats: IdsStats,
    /// The lowercased haystack of the current prefilter scan.
    scratch: Vec<u8>,
    /// Candidate rules of the current lookup (kept for its capacity).
    cands: Vec<u32>,
    /// `tcp-pkt` candidates of a merged scan, and its pending hits.
    pkt_cands: Vec<u32>,
    pkt_hits: Vec<(usize, u32)>,
    tcp_scan: Option<TcpScan>,
}

fn l4_slot(proto: u8) -> usize {
    match proto {
        6 => 0,
        17 => 1,
        1 | 58 => 2,
        _ => 3,
    }
}

/// Whether a rule's protocol covers a packet of IP protocol `p`.
fn proto_ok(rp: Proto, p: u8) -> bool {
    match rp {
        Proto::Ip => true,
        Proto::Tcp | Proto::TcpPkt | Proto::TcpStream | Proto::Http | Proto::Tls => p == 6,
        Proto::Udp => p == 17,
        Proto::Icmp => p == 1 || p == 58,
        Proto::Dns => p == 6 || p == 17,
    }
}

impl Ids {
    /// Compiles the prefilters. `hash_key` keys the tracking tables.
    pub fn new(sigs: Vec<Signature>, cfg: IdsConfig, hash_key: (u64, u64)) -> Ids {
        let mut pats: Vec<Vec<Vec<u8>>> = vec![Vec::new(); GROUPS];
        let mut pat_ix: Vec<HashMap<Vec<u8>, usize>> = vec![HashMap::new(); GROUPS];
        let mut groups: Vec<Group> = (0..GROUPS).map(|_| Group::default()).collect();
        let mut ip_only = Vec::new();
        let mut pkt_rules: [Vec<u32>; 4] = Default::default();
        let mut pkt_isset: [Vec<u32>; 4] = Default::default();
        for (i, s) in sigs.iter().enumerate() {
            let i = i as u32;
            if s.buffers.is_empty() {
                if s.ip_only() {
                    ip_only.push(i);
                } else {
                    let needs_bit = s
                        .flowbits
                        .iter()
                        .any(|op| matches!(op, rule::FlowbitOp::IsSet(_)));
                    for (slot, p) in [(0usize, 6u8), (1, 17), (2, 1), (3, 0)] {
                        if proto_ok(s.proto, p) || (slot == 3 && s.proto == Proto::Ip) {
                            if needs_bit {
                                pkt_isset[slot].push(i);
                            } else {
                                pkt_rules[slot].push(i);
                            }
                        }
                    }
                }
                continue;
            }
            let group_of = |b: Buffer| {
                if b == Buffer::Payload && s.proto == Proto::TcpPkt {
                    PKT_GROUP
                } else {
                    b.index()
                }
            };
            match &s.fast {
                Some((b, pat)) => {
                    // A prefix of the fast pattern is as sound a prefilter
                    // (the content occurs only if its prefix does) and bounds
                    // how far back a growing stream is rescanned.
                    let pat = &pat[..pat.len().min(MAX_FAST_PATTERN)].to_vec();
                    let g = group_of(*b);
                    let next = pats[g].len();
                    let id = *pat_ix[g].entry(pat.clone()).or_insert(next);
                    if id == next {
                        pats[g].push(pat.clone());
                        groups[g].by_pattern.push(Vec::new());
                        groups[g].max_pat = groups[g].max_pat.max(pat.len());
                    }
                    if let Some(v) = groups[g].by_pattern.get_mut(id) {
                        v.push(i);
                    }
                }
                None => {
                    // Evaluated whenever its first buffer is inspected.
                    if let Some((b, _)) = s.buffers.first() {
                        groups[group_of(*b)].always.push(i);
                    }
                }
            }
        }
        // The prefilter hash is keyed apart from the tracking tables.
        let pf_key = (hash_key.0.rotate_left(17), hash_key.1.rotate_left(29));
        let tcp_scan = {
            let stream = pats
                .get(Buffer::Payload.index())
                .cloned()
                .unwrap_or_default();
            let pkt = pats.get(PKT_GROUP).cloned().unwrap_or_default();
            let mut ids: Vec<(u32, u32)> = (0..stream.len() as u32).map(|i| (i, NO_PAT)).collect();
            let mut all = stream;
            let payload_ix = pat_ix.get(Buffer::Payload.index());
            for (j, p) in pkt.iter().enumerate() {
                match payload_ix.and_then(|m| m.get(p)) {
                    Some(&k) => {
                        if let Some(e) = ids.get_mut(k) {
                            e.1 = j as u32;
                        }
                    }
                    None => {
                        all.push(p.clone());
                        ids.push((NO_PAT, j as u32));
                    }
                }
            }
            (!all.is_empty()).then(|| TcpScan {
                pf: Prefilter::new(&all, pf_key),
                ids,
            })
        };
        for (g, p) in groups.iter_mut().zip(pats) {
            if !p.is_empty() {
                // Patterns are lowercase and the haystack is lowercased
                // before the scan.
                g.ac = Some(Prefilter::new(&p, pf_key));
            }
        }
        let n = sigs.len();
        let mut names: HashMap<String, u16> = HashMap::new();
        let mut intern = |s: &str| {
            let next = u16::try_from(names.len()).unwrap_or(u16::MAX);
            *names.entry(s.to_string()).or_insert(next)
        };
        let bit_ops: Vec<Vec<BitOp>> = sigs
            .iter()
            .map(|s| {
                s.flowbits
                    .iter()
                    .map(|op| match op {
                        rule::FlowbitOp::Set(n) => BitOp::Set(intern(n)),
                        rule::FlowbitOp::Unset(n) => BitOp::Unset(intern(n)),
                        rule::FlowbitOp::Toggle(n) => BitOp::Toggle(intern(n)),
                        rule::FlowbitOp::IsSet(v) => {
                            BitOp::IsSet(v.iter().map(|n| intern(n)).collect())
                        }
                        rule::FlowbitOp::IsNotSet(v) => {
                            BitOp::IsNotSet(v.iter().map(|n| intern(n)).collect())
                        }
                    })
                    .collect()
            })
            .collect();
        let mut isset_by_bit: [Vec<Vec<u32>>; 4] = Default::default();
        for (slot, rules) in pkt_isset.iter().enumerate() {
            let by_bit = &mut isset_by_bit[slot];
            for &i in rules {
                let first = bit_ops.get(i as usize).and_then(|ops: &Vec<BitOp>| {
                    ops.iter().find_map(|op| match op {
                        BitOp::IsSet(v) => Some(v),
                        _ => None,
                    })
                });
                for &b in first.into_iter().flatten() {
                    let b = usize::from(b);
                    if by_bit.len() <= b {
                        by_bit.resize(b + 1, Vec::new());
                    }
                    // Rules are visited in index order: each list is sorted.
                    if let Some(v) = by_bit.get_mut(b) {
                        v.push(i);
                    }
                }
            }
        }
        let mut bit_names = vec![String::new(); names.len()];
        for (n, i) in names {
            if let Some(slot) = bit_names.get_mut(usize::from(i)) {
                *slot = n;
            }
        }
        let ip_index = HeaderIndex::new(&ip_only, &sigs);
        let pkt_index = [0, 1, 2, 3].map(|slot| HeaderIndex::new(&pkt_rules[slot], &sigs));
        Ids {
            ip_index,
            pkt_index,
            bit_ops,
            bit_names,
            cfg,
            sigs,
            groups,
            ip_only,
            pkt_rules,
            pkt_isset,
            isset_by_bit,
            flows: HashMap::new(),
            next_serial: 1,
            thresholds: HashMap::with_hasher(SipBuild(hash_key.0, hash_key.1)),
            alerts: VecDeque::new(),
            seen: vec![0; n],
            stamp: 0,
            stats: IdsStats::default(),
            scratch: Vec::new(),
            cands: Vec::new(),
            pkt_cands: Vec::new(),
            pkt_hits: Vec::new(),
            tcp_scan,
        }
    }

    /// How the rules were grouped: (IP-only, header rules per transport
    /// [tcp, udp, icmp, other], prefiltered per group, always-evaluated per group).
    pub fn shape(&self) -> (usize, [usize; 4], Vec<usize>, Vec<usize>) {
        (
            self.ip_only.len(),
            [0, 1, 2, 3].map(|i| self.pkt_rules[i].len() + self.pkt_isset[i].len()),
            self.groups
                .iter()
                .map(|g| g.by_pattern.iter().map(Vec::len).sum())
                .collect(),
            self.groups.iter().map(|g| g.always.len()).collect(),
        )
    }

    pub fn rule_count(&self) -> usize {
        self.sigs.len()
    }

    /// Takes over the live state of the engine this one replaces (a rule
    /// reload): per-flow state (reassembled streams, TCP and app-layer
    /// progress, dropped/passed flows, flowbits), threshold counters, queued
    /// alerts, counters and flow serials. What refers to rules is mapped by
    /// (gid, sid): a rule kept across the reload does not alert again on a
    /// stream it already alerted on, and keeps its threshold counts; state of
    /// removed rules is dropped. Flowbits are mapped by name (bits no rule
    /// of the new set names are dropped). The per-direction header-rule
    /// lists are recomputed on each flow's next packet. The streams are
    /// inspected again only from their next new bytes (the usual
    /// pattern-length overlap included), so a new signature fires on a live
    /// flow's next data, not on what was inspected before the reload.
    pub fn adopt(&mut self, old: Ids) {
        let by_sid: HashMap<(u32, u32), u32> = self
            .sigs
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.gid, s.sid), i as u32))
            .collect();
        let map_rule = |i: u32| {
            old.sigs
                .get(i as usize)
                .and_then(|s| by_sid.get(&(s.gid, s.sid)).copied())
        };
        let bit_ids: HashMap<&str, u16> = self
            .bit_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        let map_bit = |b: &u16| {
            old.bit_names
                .get(usize::from(*b))
                .and_then(|n| bit_ids.get(n.as_str()).copied())
        };
        let mut flows = old.flows;
        for fs in flows.values_mut() {
            for f in &mut fs.fired {
                *f = f.iter().filter_map(|&i| map_rule(i)).collect();
            }
            fs.bits = fs.bits.iter().filter_map(map_bit).collect();
            fs.hdr = [None, None];
        }
        self.flows = flows;
        self.thresholds.clear();
        for ((i, k), st) in old.thresholds {
            if let Some(j) = map_rule(i) {
                self.thresholds.insert((j, k), st);
            }
        }
        self.alerts = old.alerts;
        self.stats = old.stats;
        self.next_serial = old.next_serial;
    }
    pub fn stats(&self) -> IdsStats {
        self.stats
    }
    pub fn config(&self) -> &IdsConfig {
        &self.cfg
    }
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// Alerts and events, oldest first.
    #[must_use]
    pub fn poll_alert(&mut self) -> Option<Alert> {
        self.alerts.pop_front()
    }

    /// Forgets a flow (connection tracking removed it).
    pub fn flow_closed(&mut self, flow: FlowId) {
        self.flows.remove(&flow);
    }

    /// Drops idle flow state and expired threshold entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.cfg.flow_timeout;
        self.flows
            .retain(|_, f| f.last.is_some_and(|l| now.saturating_duration_since(l) < t));
        let sigs = &self.sigs;
        self.thresholds.retain(|(i, _), st| {
            let secs = sigs
                .get(*i as usize)
                .and_then(|s| s.threshold.or(s.detection_filter))
                .map_or(0, |t| t.seconds);
            now.saturating_duration_since(st.start) < Duration::from_secs(u64::from(secs))
        });
    }

    /// Inspects one packet of flow `flow` travelling in `dir`
    /// (`Dir::Original` is client -> server). `pkt` is the whole IP packet.
    pub fn inspect(
        &mut self,
        flow: FlowId,
        dir: Dir,
        meta: &PacketMeta,
        pkt: &[u8],
        now: Instant,
    ) -> IdsVerdict {
        self.stats.packets += 1;
        self.stats.bytes += pkt.len() as u64;
        let payload = pkt
            .get(usize::from(meta.payload_offset)..usize::from(meta.total_len).min(pkt.len()))
            .unwrap_or(&[]);
        let (sport, dport) = meta.ports();
        let key = (meta.src, meta.dst, sport, dport, meta.proto);
        let rkey = (meta.dst, meta.src, dport, sport, meta.proto);
        // Flow state: reset when the slot was reused by another flow (seen
        // on the original direction; replies may carry NATed addresses).
        let mut fs = match self.flows.remove(&flow) {
            Some(f) if dir == Dir::Reply || f.key == key => f,
            _ => {
                if self.flows.len() >= self.cfg.max_flows {
                    self.stats.flows_untracked += 1;
                }
                let okey = if dir == Dir::Original { key } else { rkey };
                let s = self.next_serial;
                self.next_serial += 1;
                FlowState::new(s, okey)
            }
        };
        fs.last = Some(now);
        let d = dir as usize;
        if fs.dropped {
            self.stats.drops += 1;
            let v = self.finish(flow, fs, now, d);
            let _ = v;
            return IdsVerdict::Drop;
        }
        if fs.passed {
            self.finish(flow, fs, now, d);
            return IdsVerdict::Pass;
        }
        let first_in_dir = !fs.seen[d];
        fs.seen[d] = true;
        let mut matched: Vec<u32> = Vec::new();
        let to_server = dir == Dir::Original;

        // TCP state for `flow:established` and stream bases.
        let mut new_stream: Option<stream::Added> = None;
        if let L4::Tcp(t) = meta.l4 {
            let syn = t.flags & crate::packet::tcp_flags::SYN != 0;
            let ack = t.flags & crate::packet::tcp_flags::ACK != 0;
            if syn {
                fs.streams[d].syn(t.seq);
                if ack {
                    fs.synack = true;
                } else {
                    fs.syn = true;
                }
            } else if ack && fs.syn && fs.synack {
                fs.established = true;
            }
            if !payload.is_empty() {
                if fs.syn && fs.synack {
                    fs.established = true;
                }
                let a = fs.streams[d].add(t.seq, payload, self.cfg.stream_depth);
                if a.conflict {
                    self.stats.overlap_conflicts += 1;
                }
                new_stream = Some(a);
            }
        } else if fs.seen[0] && fs.seen[1] {
            fs.established = true;
        }

        // App-layer detection.
        if fs.app.is_none() {
            let (sp, dp) = (sport, dport);
            if meta.proto == 17 && (sp == 53 || dp == 53) {
                fs.app = Some(AppProto::Dns);
            } else if meta.proto == 6 && to_server {
                let data = fs.streams[0].data();
                if app::looks_like_http(data) {
                    fs.app = Some(AppProto::Http);
                } else if app::looks_like_tls(data) {
                    fs.app = Some(AppProto::Tls);
                } else if (sp == 53 || dp == 53) && data.len() >= 2 {
                    fs.app = Some(AppProto::Dns);
                }
            }
        }

        let bits = fs.bits.clone();
        let base = Ctx {
            bits: &bits,
            meta,
            to_server,
            established: fs.established,
            app: fs.app,
            payload_len: payload.len(),
            payload: None,
            stream: false,
            http: None,
            sni: None,
            dns: &[],
        };

        // Header-only rules: the candidates by address (`headers`), tested
        // in full. Rules with a port or protocol condition are found once
        // per flow direction (the 5-tuple does not change) and then
        // evaluated on every packet.
        let (src, dst) = (addr_value(meta.src), addr_value(meta.dst));
        let mut cands = std::mem::take(&mut self.cands);
        if first_in_dir {
            self.ip_index.candidates(src, dst, &mut cands);
            for &i in &cands {
                self.try_rule(i, &base, &mut matched);
            }
        }
        let slot = l4_slot(meta.proto);
        if fs.hdr[d].is_none() {
            self.pkt_index[slot].candidates(src, dst, &mut cands);
            fs.hdr[d] = Some(
                cands
                    .iter()
                    .copied()
                    .filter(|&i| self.header_fits(i, meta))
                    .collect(),
            );
        }
        self.cands = cands;
        let hdr = fs.hdr[d].take();
        for &i in hdr.iter().flatten() {
            self.try_rule(i, &base, &mut matched);
        }
        fs.hdr[d] = hdr;
        if !bits.is_empty() {
            // Rules needing a bit: the candidates of the bits set, in rule
            // order (alerts and flowbit actions keep their order).
            let stamp = self.next_stamp();
            let mut cands = std::mem::take(&mut self.cands);
            cands.clear();
            for &b in &bits {
                let by_bit = self.isset_by_bit[slot].get(usize::from(b));
                add_cands(
                    by_bit.map_or(&[], Vec::as_slice),
                    &mut self.seen,
                    stamp,
                    &mut cands,
                );
            }
            cands.sort_unstable();
            for &i in &cands {
                if self.header_fits(i, meta) {
                    self.try_rule(i, &base, &mut matched);
                }
            }
            self.cands = cands;
        }

        if meta.proto == 6 {
            let data = fs.streams[d].data();
            let grown = new_stream.filter(|a| a.new_len > 0);
            let pkt_ctx = Ctx {
                payload: Some(payload),
                ..base_copy(&base)
            };
            let stream_ctx = Ctx {
                payload: Some(data),
                stream: true,
                ..base_copy(&base)
            };
            let from = grown.map(|a| {
                a.new_from
                    .saturating_sub(self.groups[0].max_pat.saturating_sub(1))
            });
            let mut fired = std::mem::take(&mut fs.fired[d]);
            match (grown, from) {
                // In order: the new stream bytes are this payload.
                (Some(a), Some(from))
                    if !payload.is_empty() && data.get(a.new_from..) == Some(payload) =>
                {
                    self.run_tcp(
                        data,
                        from,
                        a.new_from,
                        &pkt_ctx,
                        &stream_ctx,
                        &mut matched,
                        &mut fired,
                    );
                }
                _ => {
                    // tcp-pkt rules on the packet payload.
                    if !payload.is_empty() {
                        self.run_group(PKT_GROUP, payload, 0, &pkt_ctx, &mut matched, None);
                    }
                    if let Some(from) = from {
                        self.run_group(
                            Buffer::Payload.index(),
                            data,
                            from,
                            &stream_ctx,
                            &mut matched,
                            Some(&mut fired),
                        );
                    }
                }
            }
            fs.fired[d] = fired;
            if grown.is_some() && to_server {
                self.app_layer_tcp(&mut fs, &base, &mut matched);
            }
        } else if !payload.is_empty() {
            let queries = if fs.app == Some(AppProto::Dns) {
                app::dns_queries(payload)
            } else {
                Vec::new()
            };
            let ctx = Ctx {
                payload: Some(payload),
                dns: &queries,
                ..base_copy(&base)
            };
            self.run_group(
                Buffer::Payload.index(),
                payload,
                0,
                &ctx,
                &mut matched,
                None,
            );
            for q in &queries {
                let dq = dot(q);
                self.run_group(Buffer::DnsQuery.index(), &dq, 0, &ctx, &mut matched, None);
            }
        }
        let v = self.act(flow, &mut fs, meta, &matched, now);
        if let Some(a) = new_stream.filter(|a| a.conflict) {
            let _ = a;
            self.push_anomaly(flow, &fs, meta, now);
            if self.cfg.mode == Mode::Prevent {
                fs.dropped = true;
                self.finish(flow, fs, now, d);
                return IdsVerdict::Drop;
            }
        }
        self.finish(flow, fs, now, d);
        v
    }

    fn finish(&mut self, flow: FlowId, fs: FlowState, _now: Instant, _d: usize) -> IdsVerdict {
        if self.flows.len() < self.cfg.max_flows || self.flows.contains_key(&flow) {
            self.flows.insert(flow, fs);
        }
        IdsVerdict::Pass
    }

    /// HTTP requests, the TLS ClientHello and DNS-over-TCP queries in the
    /// client's stream.
    fn app_layer_tcp(&mut self, fs: &mut FlowState, base: &Ctx<'_>, matched: &mut Vec<u32>) {
        let data = fs.streams[0].data().to_vec();
        match fs.app {
            Some(AppProto::Http) => {
                // Bounded: each request consumes at least its request line.
                for _ in 0..64 {
                    let Some(rest) = data.get(fs.http_off..) else {
                        break;
                    };
                    let app::HttpParse::Request(req, n) = app::parse_http_request(rest) else {
                        break;
                    };
                    fs.http_off += n + req.body_len;
                    let ctx = Ctx {
                        payload: Some(&data),
                        stream: true,
                        http: Some(&req),
                        ..base_copy(base)
                    };
                    for b in Buffer::ALL.iter().filter(|b| b.is_http()) {
                        if let Some(buf) = http_buffer(&req, *b) {
                            let buf = if *b == Buffer::HttpHost {
                                dot(buf)
                            } else {
                                buf.to_vec()
                            };
                            self.run_group(b.index(), &buf, 0, &ctx, matched, None);
                        }
                    }
                }
            }
            Some(AppProto::Tls) if !fs.tls_done => match app::parse_client_hello(&data) {
                app::TlsParse::Done(sni) => {
                    fs.tls_done = true;
                    if let Some(sni) = sni {
                        let ctx = Ctx {
                            payload: Some(&data),
                            stream: true,
                            sni: Some(&sni),
                            ..base_copy(base)
                        };
                        let dotted = dot(&sni);
                        self.run_group(Buffer::TlsSni.index(), &dotted, 0, &ctx, matched, None);
                    }
                }
                app::TlsParse::Invalid => fs.tls_done = true,
                app::TlsParse::Incomplete => {}
            },
            Some(AppProto::Dns) => {
                for _ in 0..64 {
                    let Some(len) = data.get(fs.dns_off..fs.dns_off + 2) else {
                        break;
                    };
                    let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
                    let Some(msg) = data.get(fs.dns_off + 2..fs.dns_off + 2 + n) else {
                        break;
                    };
                    fs.dns_off += 2 + n;
                    let qs = app::dns_queries(msg);
                    let ctx = Ctx {
                        dns: &qs,
                        ..base_copy(base)
                    };
                    for q in &qs {
                        let dq = dot(q);
                        self.run_group(Buffer::DnsQuery.index(), &dq, 0, &ctx, matched, None);
                    }
                }
            }
            _ => {}
        }
    }

    /// Prefilters `hay[from..]` with group `g` and evaluates the candidates.
    fn run_group(
        &mut self,
        g: usize,
        hay: &[u8],
        from: usize,
        ctx: &Ctx<'_>,
        matched: &mut Vec<u32>,
        fired: Option<&mut Vec<u32>>,
    ) {
        let stamp = self.next_stamp();
        let Some(group) = self.groups.get(g) else {
            return;
        };
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        let seen = &mut self.seen;
        add_cands(&group.always, seen, stamp, &mut cands);
        if let Some(ac) = &group.ac {
            let window = hay.get(from..).unwrap_or(&[]);
            self.stats.scanned += window.len() as u64;
            let lower = &mut self.scratch;
            lower.clear();
            lower.extend(window.iter().map(u8::to_ascii_lowercase));
            let hits = &mut self.stats.hits;
            ac.for_each(lower.as_slice(), |pat, _| {
                *hits += 1;
                add_cands(
                    group.by_pattern.get(pat).map_or(&[], Vec::as_slice),
                    seen,
                    stamp,
                    &mut cands,
                );
            });
        }
        self.eval_cands(&cands, ctx, matched, fired);
        self.cands = cands;
    }

    /// An in-order TCP segment: one scan of the stream window `data[from..]`
    /// for both the stream group and the `tcp-pkt` group (whose packet
    /// payload is `data[pkt_from..]`). Same candidates, in the same order,
    /// and the same `hits` as `run_group` on each: a `tcp-pkt` pattern counts
    /// only where it starts inside the payload (the window ends with it),
    /// and its hits at one position are ordered as its own prefilter orders
    /// them (length class, then pattern id).
    #[allow(clippy::too_many_arguments)]
    fn run_tcp(
        &mut self,
        data: &[u8],
        from: usize,
        pkt_from: usize,
        pkt_ctx: &Ctx<'_>,
        stream_ctx: &Ctx<'_>,
        matched: &mut Vec<u32>,
        fired: &mut Vec<u32>,
    ) {
        let stamp = self.next_stamp();
        let (Some(scan), Some(sg), Some(pg)) = (
            &self.tcp_scan,
            self.groups.get(Buffer::Payload.index()),
            self.groups.get(PKT_GROUP),
        ) else {
            return;
        };
        let mut sc = std::mem::take(&mut self.cands);
        let mut pc = std::mem::take(&mut self.pkt_cands);
        let mut pend = std::mem::take(&mut self.pkt_hits);
        sc.clear();
        pc.clear();
        pend.clear();
        let seen = &mut self.seen;
        add_cands(&pg.always, seen, stamp, &mut pc);
        add_cands(&sg.always, seen, stamp, &mut sc);
        let window = data.get(from..).unwrap_or(&[]);
        self.stats.scanned += window.len() as u64;
        let lower = &mut self.scratch;
        lower.clear();
        lower.extend(window.iter().map(u8::to_ascii_lowercase));
        let skip = pkt_from.saturating_sub(from);
        let hits = &mut self.stats.hits;
        let pkt_pf = pg.ac.as_ref();
        let pkt_rules = |p: u32| pg.by_pattern.get(p as usize).map_or(&[][..], Vec::as_slice);
        let flush = |pend: &mut Vec<(usize, u32)>, seen: &mut Vec<u32>, pc: &mut Vec<u32>| {
            pend.sort_unstable();
            for &(_, p) in pend.iter() {
                add_cands(pkt_rules(p), seen, stamp, pc);
            }
            pend.clear();
        };
        let mut at = usize::MAX;
        scan.pf.for_each(lower.as_slice(), |id, pos| {
            let Some(&(s, p)) = scan.ids.get(id) else {
                return;
            };
            if s != NO_PAT {
                *hits += 1;
                add_cands(
                    sg.by_pattern.get(s as usize).map_or(&[], Vec::as_slice),
                    seen,
                    stamp,
                    &mut sc,
                );
            }
            if p != NO_PAT && pos >= skip {
                *hits += 1;
                if pos != at {
                    flush(&mut pend, seen, &mut pc);
                    at = pos;
                }
                let class = pkt_pf.map_or(0, |f| f.pattern_len(p as usize).min(4));
                pend.push((class, p));
            }
        });
        flush(&mut pend, seen, &mut pc);
        self.eval_cands(&pc, pkt_ctx, matched, None);
        self.eval_cands(&sc, stream_ctx, matched, Some(fired));
        self.cands = sc;
        self.pkt_cands = pc;
        self.pkt_hits = pend;
    }

    /// Full evaluation of prefilter candidates; `fired`: stream rules that
    /// already alerted on this direction (skipped, and added to).
    fn eval_cands(
        &mut self,
        cands: &[u32],
        ctx: &Ctx<'_>,
        matched: &mut Vec<u32>,
        mut fired: Option<&mut Vec<u32>>,
    ) {
        self.stats.candidates += cands.len() as u64;
        for &i in cands {
            if let Some(f) = fired.as_deref() {
                if f.contains(&i) {
                    continue;
                }
            }
            if self.rule_matches(i, ctx) {
                matched.push(i);
                if let Some(f) = fired.as_deref_mut() {
                    f.push(i);
                }
            }
        }
    }

    /// A fresh mark for `seen` (candidate deduplication).
    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
        self.stamp
    }

    fn try_rule(&mut self, i: u32, ctx: &Ctx<'_>, matched: &mut Vec<u32>) {
        if self.rule_matches(i, ctx) {
            matched.push(i);
        }
    }

    /// Protocol, addresses and ports of rule `i` against a packet.
    fn header_fits(&self, i: u32, m: &PacketMeta) -> bool {
        let Some(s) = self.sigs.get(i as usize) else {
            return false;
        };
        if !proto_ok(s.proto, m.proto) {
            return false;
        }
        let (sp, dp) = m.ports();
        let has_ports = matches!(m.l4, L4::Tcp(_) | L4::Udp { .. });
        let fwd = |src: IpAddr, dst: IpAddr, sp: u16, dp: u16| {
            s.src.contains(addr_value(src))
                && s.dst.contains(addr_value(dst))
                && (!has_ports
                    || (s.sport.contains(u128::from(sp)) && s.dport.contains(u128::from(dp))))
        };
        fwd(m.src, m.dst, sp, dp) || (s.bidirectional && fwd(m.dst, m.src, dp, sp))
    }

    /// Full evaluation of rule `i` against the context.
    fn rule_matches(&self, i: u32, ctx: &Ctx<'_>) -> bool {
        let Some(s) = self.sigs.get(i as usize) else {
            return false;
        };
        let m = ctx.meta;
        if !proto_ok(s.proto, m.proto) {
            return false;
        }
        for op in self.bit_ops.get(i as usize).into_iter().flatten() {
            let ok = match op {
                BitOp::IsSet(v) => v.iter().any(|b| ctx.bits.contains(b)),
                BitOp::IsNotSet(v) => v.iter().any(|b| !ctx.bits.contains(b)),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        match s.proto {
            Proto::TcpPkt if ctx.stream => return false,
            Proto::TcpStream if !ctx.stream && !s.buffers.is_empty() => return false,
            _ => {}
        }
        if let Some(a) = s.app_proto() {
            if ctx.app != Some(a) {
                return false;
            }
        }
        if !self.header_fits(i, m) {
            return false;
        }
        if let Some(ts) = s.flow.to_server {
            if ts != ctx.to_server {
                return false;
            }
        }
        if let Some(e) = s.flow.established {
            if e != ctx.established {
                return false;
            }
        }
        if let Some(f) = s.flags {
            match m.l4 {
                L4::Tcp(t) if f.test(t.flags) => {}
                _ => return false,
            }
        }
        if let Some(c) = s.dsize {
            if !c.test(ctx.payload_len as u32) {
                return false;
            }
        }
        if s.itype.is_some() || s.icode.is_some() {
            let L4::Icmp(ic) = m.l4 else {
                return false;
            };
            if s.itype.is_some_and(|c| !c.test(u32::from(ic.ty)))
                || s.icode.is_some_and(|c| !c.test(u32::from(ic.code)))
            {
                return false;
            }
        }
        for (b, ms) in &s.buffers {
            if !buffer_matches(*b, ms, ctx) {
                return false;
            }
        }
        true
    }

    /// Thresholds, pass precedence, actions and alert queueing.
    fn act(
        &mut self,
        flow: FlowId,
        fs: &mut FlowState,
        meta: &PacketMeta,
        matched: &[u32],
        now: Instant,
    ) -> IdsVerdict {
        if matched.is_empty() {
            return IdsVerdict::Pass;
        }
        self.stats.matches += matched.len() as u64;
        let mut fire: Vec<u32> = Vec::new();
        for &i in matched {
            if self.threshold_allows(i, fs.serial, meta, now) {
                fire.push(i);
            }
        }
        let sigs = &self.sigs;
        let pass = |i: &u32| {
            sigs.get(*i as usize)
                .is_some_and(|s| s.action == RuleAction::Pass)
        };
        if fire.iter().any(pass) {
            // Suricata: a pass match passes the packet and, for flow-level
            // matches, the rest of the flow; only pass rules with `alert` log.
            fs.passed = true;
            fire.retain(|i| pass(i) && sigs.get(*i as usize).is_some_and(|s| s.pass_alert));
        }
        // Flowbit actions of every firing rule (silent ones included).
        for &i in &fire {
            for op in self.bit_ops.get(i as usize).into_iter().flatten() {
                match op {
                    BitOp::Set(b) if !fs.bits.contains(b) => fs.bits.push(*b),
                    BitOp::Unset(b) => fs.bits.retain(|x| x != b),
                    BitOp::Toggle(b) => {
                        if fs.bits.contains(b) {
                            fs.bits.retain(|x| x != b);
                        } else {
                            fs.bits.push(*b);
                        }
                    }
                    _ => {}
                }
            }
        }
        let prevent = self.cfg.mode == Mode::Prevent;
        let mut verdict = IdsVerdict::Pass;
        for i in fire {
            let Some(s) = self.sigs.get(i as usize) else {
                continue;
            };
            let blocked = prevent && matches!(s.action, RuleAction::Drop | RuleAction::Reject);
            if blocked {
                fs.dropped = true;
                verdict = match (verdict, s.action) {
                    (IdsVerdict::Reject, _) | (_, RuleAction::Reject) => IdsVerdict::Reject,
                    _ => IdsVerdict::Drop,
                };
            }
            if s.noalert {
                continue;
            }
            let (sport, dport) = meta.ports();
            let a = Alert {
                event: EventType::Alert,
                now,
                flow,
                flow_serial: fs.serial,
                src: meta.src,
                dst: meta.dst,
                sport,
                dport,
                proto: meta.proto,
                app_proto: fs.app,
                action: s.action,
                blocked,
                gid: s.gid,
                sid: s.sid,
                rev: s.rev,
                msg: s.msg.clone(),
                classtype: s.classtype.clone(),
                severity: s.priority,
            };
            self.push(a);
        }
        if verdict != IdsVerdict::Pass {
            self.stats.drops += 1;
        }
        verdict
    }

    fn push(&mut self, a: Alert) {
        if self.alerts.len() >= self.cfg.max_alerts {
            self.stats.alerts_lost += 1;
        } else {
            self.stats.alerts += 1;
            self.alerts.push_back(a);
        }
    }

    fn push_anomaly(&mut self, flow: FlowId, fs: &FlowState, meta: &PacketMeta, now: Instant) {
        let (sport, dport) = meta.ports();
        self.push(Alert {
            event: EventType::Anomaly,
            now,
            flow,
            flow_serial: fs.serial,
            src: meta.src,
            dst: meta.dst,
            sport,
            dport,
            proto: meta.proto,
            app_proto: fs.app,
            action: if self.cfg.mode == Mode::Prevent {
                RuleAction::Drop
            } else {
                RuleAction::Alert
            },
            blocked: self.cfg.mode == Mode::Prevent,
            gid: 0,
            sid: 0,
            rev: 0,
            msg: "stream.reassembly_overlap_different_data".into(),
            classtype: None,
            severity: 2,
        });
    }

    /// threshold / detection_filter bookkeeping (Suricata `detect-engine-threshold.c`).
    fn threshold_allows(&mut self, i: u32, serial: u64, meta: &PacketMeta, now: Instant) -> bool {
        let Some(s) = self.sigs.get(i as usize) else {
            return false;
        };
        let (df, th) = (s.detection_filter, s.threshold);
        for t in [df, th].into_iter().flatten() {
            let key = match t.track {
                Track::BySrc => TKey::Addr(meta.src),
                Track::ByDst => TKey::Addr(meta.dst),
                Track::ByBoth => TKey::Pair(meta.src, meta.dst),
                Track::ByFlow => TKey::Flow(serial),
                Track::ByRule => TKey::Rule,
            };
            let window = Duration::from_secs(u64::from(t.seconds));
            let k = (i, key);
            if !self.thresholds.contains_key(&k) && self.thresholds.len() >= self.cfg.max_thresholds
            {
                self.stats.threshold_full += 1;
                return false;
            }
            let st = self.thresholds.entry(k).or_insert(TState {
                start: now,
                count: 0,
            });
            if now.saturating_duration_since(st.start) >= window {
                *st = TState {
                    start: now,
                    count: 0,
                };
            }
            st.count = st.count.saturating_add(1);
            let ok = match t.kind {
                ThresholdKind::Limit => st.count <= t.count,
                ThresholdKind::Threshold => {
                    if st.count >= t.count {
                        st.count = 0;
                        true
                    } else {
                        false
                    }
                }
                ThresholdKind::Both => st.count == t.count,
                ThresholdKind::DetectionFilter => st.count > t.count,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Appends the rules of `rules` not yet marked with `stamp` to `out`.
#[inline]
fn add_cands(rules: &[u32], seen: &mut [u32], stamp: u32, out: &mut Vec<u32>) {
    for &i in rules {
        if let Some(s) = seen.get_mut(i as usize) {
            if *s != stamp {
                *s = stamp;
                out.push(i);
            }
        }
    }
}

/// A name buffer with a '.' in front: the prefilter input for buffers that
/// `dotprefix` rules transform (a superset for the others).
fn dot(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.len() + 1);
    v.push(b'.');
    v.extend_from_slice(b);
    v
}

fn base_copy<'a>(c: &Ctx<'a>) -> Ctx<'a> {
    Ctx {
        meta: c.meta,
        to_server: c.to_server,
        established: c.established,
        app: c.app,
        payload_len: c.payload_len,
        payload: c.payload,
        stream: c.stream,
        http: c.http,
        sni: c.sni,
        dns: c.dns,
        bits: c.bits,
    }
}

fn http_buffer(r: &app::HttpRequest, b: Buffer) -> Option<&[u8]> {
    Some(match b {
        Buffer::HttpUri => &r.uri,
        Buffer::HttpMethod => &r.method,
        Buffer::HttpHost => r.host.as_deref()?,
        Buffer::HttpUserAgent => r.user_agent.as_deref()?,
        Buffer::HttpHeader => &r.headers,
        Buffer::HttpCookie => r.cookie.as_deref()?,
        Buffer::HttpReferer => r.referer.as_deref()?,
        Buffer::HttpContentType => r.content_type.as_deref()?,
        Buffer::HttpRequestLine => &r.request_line,
        _ => return None,
    })
}

fn buffer_matches(b: Buffer, ms: &[Matcher], ctx: &Ctx<'_>) -> bool {
    match b {
        Buffer::Payload => ctx.payload.is_some_and(|p| match_buffer(ms, &Buf::new(p))),
        Buffer::TlsSni => ctx.sni.is_some_and(|p| match_buffer(ms, &Buf::new(p))),
        Buffer::DnsQuery => ctx.dns.iter().any(|q| match_buffer(ms, &Buf::new(q))),
        _ => ctx
            .http
            .and_then(|r| http_buffer(r, b))
            .is_some_and(|p| match_buffer(ms, &Buf::new(p))),
    }
}

#[cfg(test)]
mod tests;
