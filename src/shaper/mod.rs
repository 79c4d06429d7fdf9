//! Rate limits and connection limits: token buckets per peer and per rule,
//! concurrent and new-connection limits per source address or per peer.
//!
//! Sans-IO: every call takes `now: Instant`; nothing reads a clock.
//!
//! Token buckets follow the classic definition (RFC 2697's committed bucket,
//! Linux `tc police`/`nft limit`): a bucket of depth `burst` fills at `rate`
//! tokens per second; a packet of cost `c` passes if `c` tokens are there and
//! takes them, otherwise it is dropped (policing: no queue, so a TCP sender
//! backs off on the loss and settles near the rate). A limit may have a bytes
//! bucket and a packets bucket; a packet passes only if both have room, and
//! takes from both.
//!
//! Per-peer limits apply per direction (from the peer, to the peer) so a
//! 10 Mbit/s limit holds each direction to 10 Mbit/s. Per-rule limits apply to
//! every packet of the flows the rule admitted, both directions together.
//!
//! Connection limits (like nftables `ct count` and `limit rate` on `ct state
//! new`): a new flow from a source is refused when that source already has
//! `max_concurrent` tracked flows, or when its new-flow bucket is empty.
//! The per-source table is keyed by SipHash with a caller-given key, holds at
//! most [`MAX_SOURCES`] addresses and forgets idle sources on [`Shaper::sweep`];
//! when full, new sources are refused (fail closed, counted in `table_full`).

use crate::verdict::Chain;
use crate::zone::ZoneId;
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// Sources tracked for connection limits: 2^16 sources at ~64 bytes each is
/// 4 MiB; more distinct sources than that at once is a scan, refused.
pub const MAX_SOURCES: usize = 1 << 16;

/// A token bucket. `rate` tokens per second, depth `burst`, full at start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. A `burst` of 0 is taken as 1 token (one packet may pass).
    pub fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
    }

    /// True if `cost` tokens are available now (without taking them).
    pub fn check(&mut self, cost: u64, now: Instant) -> bool {
        self.refill(now);
        // A packet larger than the whole bucket passes when the bucket is full
        // (otherwise it could never pass), like `tc police` with mtu = burst.
        self.tokens >= (cost as f64).min(self.burst)
    }

    /// Takes `cost` tokens (the bucket may not go below zero... except by the
    /// oversize rule of [`TokenBucket::check`], where it empties).
    pub fn take(&mut self, cost: u64) {
        self.tokens = (self.tokens - cost as f64).max(0.0);
    }

    /// Checks and takes in one step.
    pub fn allow(&mut self, cost: u64, now: Instant) -> bool {
        if self.check(cost, now) {
            self.take(cost);
            true
        } else {
            false
        }
    }

    /// Tokens available (after the last refill).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

/// A rate: bytes per second and/or packets per second, each with its burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateSpec {
    pub bytes_per_sec: Option<u64>,
    /// Bucket depth in bytes (default: 1/4 s of `bytes_per_sec`, at least 64 KiB).
    pub burst_bytes: Option<u64>,
    pub packets_per_sec: Option<u64>,
    /// Bucket depth in packets (default: 1/10 s of `packets_per_sec`, at least 10).
    pub burst_packets: Option<u64>,
}

impl RateSpec {
    pub fn is_empty(&self) -> bool {
        self.bytes_per_sec.is_none() && self.packets_per_sec.is_none()
    }
}

/// The buckets of one [`RateSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    bytes: Option<TokenBucket>,
    packets: Option<TokenBucket>,
}

impl Limit {
    pub fn new(s: &RateSpec) -> Limit {
        // Default byte depth: 250 ms of traffic, at least 64 KiB. TCP through
        // a policer needs a bucket deeper than its window bursts: measured in
        // the lab (t-34, 10 Mbit/s, one iperf3 flow, receiver side), a depth
        // of 50 ms gave 2.8 Mbit/s, 100 ms 5.1, 200 ms 9.5, 1 s 9.5.
        // Packets: 100 ms, at least 10.
        Limit {
            bytes: s
                .bytes_per_sec
                .map(|r| TokenBucket::new(r, s.burst_bytes.unwrap_or((r / 4).max(64 * 1024)))),
            packets: s
                .packets_per_sec
                .map(|r| TokenBucket::new(r, s.burst_packets.unwrap_or((r / 10).max(10)))),
        }
    }

    /// One packet of `len` bytes: passes (and is charged) only if both buckets have room.
    pub fn allow(&mut self, len: usize, now: Instant) -> bool {
        let len = len as u64;
        let ok_b = self.bytes.as_mut().is_none_or(|b| b.check(len, now));
        let ok_p = self.packets.as_mut().is_none_or(|b| b.check(1, now));
        if ok_b && ok_p {
            if let Some(b) = self.bytes.as_mut() {
                b.take(len);
            }
            if let Some(b) = self.packets.as_mut() {
                b.take(1);
            }
            true
        } else {
            false
        }
    }
}

/// Connection limits for one scope (per source address, or one peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnSpec {
    /// Most tracked flows at once.
    pub max_concurrent: Option<u32>,
    /// New flows per second (bucket depth `new_burst`, default = the rate).
    pub new_per_sec: Option<u32>,
    pub new_burst: Option<u32>,
}

impl ConnSpec {
    pub fn is_empty(&self) -> bool {
        self.max_concurrent.is_none() && self.new_per_sec.is_none()
    }
}

/// A peer's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerLimits {
    pub rate: RateSpec,
    pub conns: ConnSpec,
}

/// Everything the shaper enforces (from the `[limits]` config).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShaperConfig {
    /// Per-peer limits (traffic from and to the peer, each direction its own bucket).
    pub peers: Vec<(ZoneId, PeerLimits)>,
    /// Per-rule limits: all packets of flows admitted by that rule.
    pub rules: Vec<(Chain, u32, RateSpec)>,
    /// Per-source-address connection limits (every source, any zone).
    pub per_source: ConnSpec,
}

impl ShaperConfig {
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.rules.is_empty() && self.per_source.is_empty()
    }
}

/// Why the shaper refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PeerRate,
    RuleRate,
    SourceConcurrent,
    SourceNewRate,
    PeerConcurrent,
    PeerNewRate,
    /// The per-source table is full.
    TableFull,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PeerRate => "peer_rate",
            Refusal::RuleRate => "rule_rate",
            Refusal::SourceConcurrent => "source_concurrent",
            Refusal::SourceNewRate => "source_new_rate",
            Refusal::PeerConcurrent => "peer_concurrent",
            Refusal::PeerNewRate => "peer_new_rate",
            Refusal::TableFull => "source_table_full",
        }
    }
    pub const ALL: [Refusal; 7] = [
        Refusal::PeerRate,
        Refusal::RuleRate,
        Refusal::SourceConcurrent,
        Refusal::SourceNewRate,
        Refusal::PeerConcurrent,
        Refusal::PeerNewRate,
        Refusal::TableFull,
    ];
}

#[derive(Debug, Clone, Copy)]
struct ConnState {
    live: u32,
    new: Option<TokenBucket>,
}

impl ConnState {
    fn new(s: &ConnSpec) -> Self {
        ConnState {
            live: 0,
            new: s
                .new_per_sec
                .map(|r| TokenBucket::new(u64::from(r), u64::from(s.new_burst.unwrap_or(r)))),
        }
    }

    fn admit(&mut self, s: &ConnSpec, now: Instant) -> Result<(), bool> {
        if s.max_concurrent.is_some_and(|m| self.live >= m) {
            return Err(true);
        }
        if let Some(b) = self.new.as_mut() {
            if !b.allow(1, now) {
                return Err(false);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct PeerState {
    spec: PeerLimits,
    from: Limit,
    to: Limit,
    conns: ConnState,
}

/// SipHash-1-3 with a secret key, for the per-source table.
#[derive(Debug, Clone, Copy)]
struct Keyed(u64, u64);

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// The shaper state. See the module documentation.
#[derive(Debug, Clone)]
pub struct Shaper {
    /// Indexed by zone id.
    peers: Vec<Option<PeerState>>,
    rules: [Vec<Option<Limit>>; 3],
    per_source: ConnSpec,
    sources: HashMap<IpAddr, ConnState, Keyed>,
    refused: [u64; 7],
    /// Nothing is limited (computed by `reconfigure`; read per packet).
    idle: bool,
}

fn slot(c: Chain) -> usize {
    crate::pipeline::stats::chain_slot(c)
}

impl Shaper {
    pub fn new(cfg: &ShaperConfig, hash_key: (u64, u64)) -> Shaper {
        let mut s = Shaper {
            peers: Vec::new(),
            rules: Default::default(),
            per_source: ConnSpec::default(),
            sources: HashMap::with_hasher(Keyed(hash_key.0, hash_key.1)),
            refused: [0; 7],
            idle: true,
        };
        s.reconfigure(cfg);
        s
    }

    /// Applies a new configuration (a reload). Buckets restart full; the
    /// concurrent-flow counts per source are kept (the flows are kept too)
    /// and per peer start at 0: [`Shaper::recount`] sets both from the flows.
    pub fn reconfigure(&mut self, cfg: &ShaperConfig) {
        self.peers.clear();
        for (z, l) in &cfg.peers {
            let i = usize::from(z.0);
            if self.peers.len() <= i {
                self.peers.resize(i + 1, None);
            }
            if let Some(p) = self.peers.get_mut(i) {
                *p = Some(PeerState {
                    spec: *l,
                    from: Limit::new(&l.rate),
                    to: Limit::new(&l.rate),
                    conns: ConnState::new(&l.conns),
                });
            }
        }
        self.rules = Default::default();
        for (c, r, spec) in &cfg.rules {
            let v = &mut self.rules[slot(*c)];
            let i = *r as usize;
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            if let Some(x) = v.get_mut(i) {
                *x = Some(Limit::new(spec));
            }
        }
        self.per_source = cfg.per_source;
        self.idle = self.peers.is_empty()
            && self.rules.iter().all(Vec::is_empty)
            && self.per_source.is_empty();
        if cfg.per_source.is_empty() {
            self.sources.clear();
        } else {
            // Keep live counts; rebuild the new-flow buckets with the new rate.
            let spec = cfg.per_source;
            for st in self.sources.values_mut() {
                let live = st.live;
                *st = ConnState::new(&spec);
                st.live = live;
            }
        }
    }

    /// Sets the concurrent-flow counts (per peer, per source) from the flows
    /// that exist, given as (original source, ingress zone) — what
    /// [`Shaper::admit_flow`] and [`Shaper::flow_ended`] count. Called after
    /// [`Shaper::reconfigure`]: a reload starts every peer's state afresh, and
    /// flows created while nothing was limited were never counted, so without
    /// it a limit would not hold for the flows that outlive the reload. At
    /// most [`MAX_SOURCES`] sources are tracked.
    pub fn recount(&mut self, flows: impl Iterator<Item = (IpAddr, ZoneId)>) {
        if self.idle {
            return;
        }
        for p in self.peers.iter_mut().flatten() {
            p.conns.live = 0;
        }
        for st in self.sources.values_mut() {
            st.live = 0;
        }
        let spec = self.per_source;
        for (src, zone) in flows {
            if let Some(Some(p)) = self.peers.get_mut(usize::from(zone.0)) {
                p.conns.live += 1;
            }
            if spec.is_empty() {
                continue;
            }
            if let Some(st) = self.sources.get_mut(&src) {
                st.live += 1;
            } else if self.sources.len() < MAX_SOURCES {
                let mut st = ConnState::new(&spec);
                st.live = 1;
                self.sources.insert(src, st);
            }
        }
    }

    /// True when nothing is limited (the pipeline skips the shaper).
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    fn refuse(&mut self, r: Refusal) -> Refusal {
        if let Some(c) = self.refused.get_mut(r as usize) {
            *c += 1;
        }
        r
    }

    /// One packet of a flow admitted by `(chain, rule)`, from `ingress` to `egress`.
    pub fn packet(
        &mut self,
        ingress: ZoneId,
        egress: ZoneId,
        chain: Chain,
        rule: Option<u32>,
        len: usize,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(Some(p)) = self.peers.get_mut(usize::from(ingress.0)) {
            if !p.from.allow(len, now) {
                return Err(self.refuse(Refusal::PeerRate));
            }
        }
        if let Some(Some(p)) = self.peers.get_mut(usize::from(egress.0)) {
            if !p.to.allow(len, now) {
                return Err(self.refuse(Refusal::PeerRate));
            }
        }
        if let Some(r) = rule {
            if let Some(Some(l)) = self.rules[slot(chain)].get_mut(r as usize) {
                if !l.allow(len, now) {
                    return Err(self.refuse(Refusal::RuleRate));
                }
            }
        }
        Ok(())
    }

    /// May a new flow from `src` (entering from `zone`) be created? On `Ok`
    /// the caller creates the flow and must call [`Shaper::flow_ended`] when it ends.
    pub fn admit_flow(&mut self, src: IpAddr, zone: ZoneId, now: Instant) -> Result<(), Refusal> {
        let zi = usize::from(zone.0);
        if let Some(Some(p)) = self.peers.get_mut(zi) {
            let spec = p.spec.conns;
            if let Err(conc) = p.conns.admit(&spec, now) {
                return Err(self.refuse(if conc {
                    Refusal::PeerConcurrent
                } else {
                    Refusal::PeerNewRate
                }));
            }
        }
        if !self.per_source.is_empty() {
            let spec = self.per_source;
            if !self.sources.contains_key(&src) && self.sources.len() >= MAX_SOURCES {
                return Err(self.refuse(Refusal::TableFull));
            }
            let st = self
                .sources
                .entry(src)
                .or_insert_with(|| ConnState::new(&spec));
            if let Err(conc) = st.admit(&spec, now) {
                return Err(self.refuse(if conc {
                    Refusal::SourceConcurrent
                } else {
                    Refusal::SourceNewRate
                }));
            }
            st.live += 1;
        }
        if let Some(Some(p)) = self.peers.get_mut(zi) {
            p.conns.live += 1;
        }
        Ok(())
    }

    /// A flow created after [`Shaper::admit_flow`] ended.
    pub fn flow_ended(&mut self, src: IpAddr, zone: ZoneId) {
        if let Some(st) = self.sources.get_mut(&src) {
            st.live = st.live.saturating_sub(1);
        }
        if let Some(Some(p)) = self.peers.get_mut(usize::from(zone.0)) {
            p.conns.live = p.conns.live.saturating_sub(1);
        }
    }

    /// Forgets sources with no live flow whose new-flow bucket is full again.
    pub fn sweep(&mut self, now: Instant) {
        self.sources.retain(|_, st| {
            st.live > 0
                || st.new.as_mut().is_some_and(|b| {
                    b.refill(now);
                    b.tokens() < b.burst
                })
        });
    }

    /// Refusals by kind.
    pub fn refused(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL.iter().map(|r| {
            (
                r.name(),
                self.refused.get(*r as usize).copied().unwrap_or(0),
            )
        })
    }

    /// Sources in the connection-limit table.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Live flows counted for a source.
    pub fn source_flows(&self, src: IpAddr) -> u32 {
        self.sources.get(&src).map_or(0, |s| s.live)
    }
}

#[cfg(test)]
mod tests;
