//! L7 decisions: completing the verdict of flows whose deciding rule has
//! `tls_sni`, `http_host` or `dns_qname` predicates.
//!
//! The name such a rule looks at exists only once the client has sent its
//! first payload, so a new flow is decided in two steps (the semantics are
//! specified in the [`crate::rules`] module docs; this module implements
//! them):
//!
//! 1. **Flow start**: the chain is evaluated with the name unknown (L7
//!    predicates ignored). When the first matching rule has L7 predicates:
//!    - UDP: the first datagram *is* the client's first payload (a DNS
//!      query), so the names are read from it and the chain is evaluated
//!      again at once, once per question name (the first non-accepting
//!      decision wins); its verdict is applied to the packet as usual. An
//!      accepted UDP flow is then *watched*: every later client datagram is
//!      decided the same way by its own names, and a blocked one is dropped
//!      (rejected: ICMP to the client) alone, the flow staying for its other
//!      queries — a resolver library reuses one socket for several queries,
//!      so deciding only the first would let the second through unchecked.
//!    - other non-TCP protocols carry no name: evaluated again at once with
//!      no name.
//!    - TCP: the flow is created *provisionally* ("pending L7"): its packets
//!      take the ordinary fast path, counted on the rule that admitted it.
//! 2. **First payload** (TCP): the client's bytes are collected in order
//!    (from the SYN's sequence number + 1; at most [`MAX_CLIENT_BYTES`] per
//!    flow, [`MAX_PENDING_BYTES`] over all pending flows) and handed to
//!    [`app::stream_first_name`] (TLS ClientHello SNI, HTTP/1 Host, DNS over
//!    TCP) after each segment. When it yields a name, proves there is none,
//!    or the per-flow bound fills, the chain is evaluated again from the top
//!    with the name known ([`RuleSet::evaluate_named`]), using the flow's
//!    first packet as the rules saw it. Accept: the flow goes on, now counted
//!    on the deciding rule, with nothing more than the fast path's one
//!    "anything pending?" check. Drop or reject: the packet that completed
//!    the name is dropped, the flow removed, and a TCP RST sent to the server
//!    (so it forgets the half-received request: a retransmission cannot
//!    complete it); reject also answers the client (RST, or ICMP for UDP,
//!    through the ordinary reject path and its rate limit).
//!
//! Segments before the decision are *forwarded*, not held: a partial
//! ClientHello or a request header without its end cannot make the server
//! act (a TLS server waits for the whole ClientHello before answering, an
//! HTTP server for the empty line ending the header block), and the segment
//! that completes the name is the one the decision drops. A segment beyond
//! the bytes collected so far (out of order, or a gap) is dropped while the
//! flow is pending — forwarding it would let the server assemble bytes the
//! parser never saw; the client retransmits it after the gap is filled
//! (RFC 9293 §3.10.7.4). Overlapping data keeps the first copy, as the
//! buffer only grows at its end. Collecting does not stop with the decision
//! where one connection carries many names:
//! - DNS over TCP (RFC 7766 lets a client pipeline many queries on one
//!   connection): an accepted one is read on, every later query decided by
//!   all its question names (`DnsStream`; a blocked one cuts the
//!   connection like the first, bytes past those read are dropped so the
//!   server never gets a query the rules did not see);
//! - HTTP/1 (keep-alive, pipelining): an accepted connection whose first
//!   payload was a request (with a Host or without) is read on
//!   (`HttpStream`, framed by [`super::http_stream`]: bodies skipped by
//!   their Content-Length or chunked framing, only unfinished header blocks
//!   buffered); every later request is decided by its own Host, a blocked
//!   one cutting the connection on the segment that completes its header
//!   block (as for the first); segments past the bytes read are dropped.
//!   After a protocol switch (Upgrade, CONNECT) the rest passes unread; bytes
//!   that cannot be framed are decided once with no name, then pass unread.
//!
//! Reloads: a flow decided here is re-checked with its recorded name; a
//! pending flow stays pending while its first candidate still has L7
//! predicates. State is freed when the decision is made or the flow ends.

use super::http_stream::{End, HttpFramer};
use super::trace::{trace_step, Tracer};
use super::{Event, Pipeline};
use crate::conntrack::{Dir, FlowId, FlowKey};
use crate::ids::app::{self, FirstName, HttpParse};
use crate::packet::{tcp_flags, PacketMeta, L4};
use crate::rules::{Action, Decision, L7Kind, L7Name, MatchInput, RuleSet};
use crate::verdict::{Chain, DropReason, Verdict};
use crate::zone::ZoneId;
use std::collections::HashMap;
use std::time::Instant;

/// Client bytes collected per pending flow before deciding "no name": a
/// ClientHello with post-quantum key shares is under 4 KiB and typical
/// request header blocks under 8 KiB, so 16 KiB holds both with room.
pub const MAX_CLIENT_BYTES: usize = 16 * 1024;

/// Client bytes held over all pending flows: 4,096 flows at the per-flow
/// bound. Past it, segments that would be collected are dropped (the client
/// retransmits them), never forwarded unseen.
pub const MAX_PENDING_BYTES: usize = 4096 * MAX_CLIENT_BYTES;

/// A flow admitted provisionally, waiting for its name.
#[derive(Debug)]
struct Pending {
    /// The flow's key (a slot may be reused by another flow).
    orig: FlowKey,
    chain: Chain,
    /// The flow's first packet as the rules saw it (after DNAT).
    first: MatchInput,
    /// Sequence number of the next client byte to collect.
    next_seq: u32,
    buf: Vec<u8>,
}

/// An accepted DNS-over-TCP flow whose later queries are each decided by
/// their names (RFC 7766: a client may send many on one connection).
#[derive(Debug)]
struct DnsStream {
    orig: FlowKey,
    chain: Chain,
    /// The flow's first packet as the rules saw it (after DNAT).
    first: MatchInput,
    /// Sequence number of the next client byte.
    next_seq: u32,
    /// The client's bytes not yet decided: the start of the next message
    /// (2-byte length prefix first), at most [`MAX_CLIENT_BYTES`].
    buf: Vec<u8>,
    /// Bytes of an oversize message still to come, skipped unread (so the
    /// next message is found where the server will find it).
    skip: usize,
}

/// An accepted HTTP/1 flow whose later requests are each decided by their
/// Host (keep-alive and pipelining: many requests on one connection).
#[derive(Debug)]
struct HttpStream {
    orig: FlowKey,
    chain: Chain,
    /// The flow's first packet as the rules saw it (after DNAT).
    first: MatchInput,
    /// Sequence number of the next client byte.
    next_seq: u32,
    /// Where the stream is: header block, body, chunk (`http_stream`).
    framer: HttpFramer,
    /// Requests to pass undecided: the first one, decided already.
    skip_requests: usize,
}

/// A UDP flow whose client datagrams are each decided by their names.
#[derive(Debug)]
struct Watched {
    orig: FlowKey,
    chain: Chain,
    /// The flow's first packet as the rules saw it (after DNAT).
    first: MatchInput,
}

/// L7 decision state of the pipeline.
#[derive(Debug, Default)]
pub(super) struct L7State {
    pending: HashMap<FlowId, Pending>,
    /// Flows accepted by an L7 decision, with their name (for reloads).
    named: HashMap<FlowId, (FlowKey, Option<L7Name>)>,
    /// UDP flows accepted by an L7 decision: every later client datagram is
    /// decided by its own names (see [`Pipeline::l7_datagram`]).
    watched: HashMap<FlowId, Watched>,
    /// TCP flows accepted by a DNS name: every later query is decided too.
    dns_streams: HashMap<FlowId, DnsStream>,
    /// HTTP flows accepted by an L7 decision: every later request is
    /// decided by its own Host.
    http_streams: HashMap<FlowId, HttpStream>,
    /// Sum of the pending buffers' lengths.
    bytes: usize,
    /// The flow `start` registered last (read right after flow creation).
    last: Option<FlowId>,
    /// Decisions made, by outcome.
    pub(super) stats: L7Stats,
}

/// Counters of L7 decisions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct L7Stats {
    /// Flows whose decision waited for their first payload.
    pub pending_started: u64,
    /// Decisions made with the name known (or proven absent).
    pub decided: u64,
    /// ... of which dropped or rejected the flow.
    pub blocked: u64,
    /// Segments dropped while pending (out of order, or the global bound).
    pub held_back: u64,
    /// Later DNS queries of accepted flows decided by their own names (UDP
    /// datagrams, and messages on a TCP connection).
    pub datagrams_decided: u64,
    /// ... of which dropped or rejected.
    pub datagrams_blocked: u64,
    /// Later requests on accepted HTTP connections decided by their own
    /// Host.
    pub requests_decided: u64,
    /// ... of which dropped or rejected.
    pub requests_blocked: u64,
}

impl L7State {
    /// True when no flow is pending or watched (the fast path's only L7
    /// check).
    #[inline(always)]
    pub(super) fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.watched.is_empty()
            && self.dns_streams.is_empty()
            && self.http_streams.is_empty()
    }

    /// Forgets an ended flow (only if the slot still holds that flow).
    pub(super) fn forget(&mut self, id: FlowId, orig: &FlowKey) {
        if !self.pending.is_empty() && self.pending.get(&id).is_some_and(|p| p.orig == *orig) {
            if let Some(p) = self.pending.remove(&id) {
                self.bytes = self.bytes.saturating_sub(p.buf.len());
            }
        }
        if !self.named.is_empty() && self.named.get(&id).is_some_and(|n| n.0 == *orig) {
            self.named.remove(&id);
        }
        if !self.watched.is_empty() && self.watched.get(&id).is_some_and(|w| w.orig == *orig) {
            self.watched.remove(&id);
        }
        if !self.dns_streams.is_empty()
            && self.dns_streams.get(&id).is_some_and(|d| d.orig == *orig)
        {
            self.drop_stream(id);
        }
        if !self.http_streams.is_empty()
            && self.http_streams.get(&id).is_some_and(|h| h.orig == *orig)
        {
            self.drop_http(id);
        }
    }

    /// Follows [`crate::conntrack::Conntrack::renumber_zones`]: the flows'
    /// keys and rule inputs name the zones their peers have after a reload.
    pub(super) fn renumber_zones(&mut self, map: impl Fn(ZoneId) -> ZoneId) {
        let input = |m: &mut MatchInput| {
            m.ingress = map(m.ingress);
            m.egress = map(m.egress);
        };
        for p in self.pending.values_mut() {
            p.orig.zone = map(p.orig.zone);
            input(&mut p.first);
        }
        for (orig, _) in self.named.values_mut() {
            orig.zone = map(orig.zone);
        }
        for w in self.watched.values_mut() {
            w.orig.zone = map(w.orig.zone);
            input(&mut w.first);
        }
        for d in self.dns_streams.values_mut() {
            d.orig.zone = map(d.orig.zone);
            input(&mut d.first);
        }
        for h in self.http_streams.values_mut() {
            h.orig.zone = map(h.orig.zone);
            input(&mut h.first);
        }
    }

    /// Appends client bytes read in order to a DNS-over-TCP flow's stream
    /// (past those of an oversize message still being skipped). The
    /// buffered bytes count against [`MAX_PENDING_BYTES`] with the pending
    /// flows'.
    fn dns_push(&mut self, id: FlowId, bytes: &[u8]) {
        let Some(s) = self.dns_streams.get_mut(&id) else {
            return;
        };
        s.next_seq = s.next_seq.wrapping_add(bytes.len() as u32);
        let skipped = s.skip.min(bytes.len());
        s.skip -= skipped;
        let kept = bytes.get(skipped..).unwrap_or(&[]);
        s.buf.extend_from_slice(kept);
        self.bytes = self.bytes.saturating_add(kept.len());
    }

    /// Stops reading a DNS-over-TCP flow (its buffered bytes leave the
    /// global count).
    fn drop_stream(&mut self, id: FlowId) {
        if let Some(s) = self.dns_streams.remove(&id) {
            self.bytes = self.bytes.saturating_sub(s.buf.len());
        }
    }

    /// Stops reading an HTTP flow (its buffered bytes leave the global
    /// count).
    fn drop_http(&mut self, id: FlowId) {
        if let Some(h) = self.http_streams.remove(&id) {
            self.bytes = self.bytes.saturating_sub(h.framer.buffered());
        }
    }

    fn take(&mut self, id: FlowId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(p.buf.len());
        Some(p)
    }
}

/// The flow's name from what the parsers found.
fn to_name(f: FirstName) -> Option<L7Name> {
    match f {
        FirstName::Sni(n) => Some(L7Name::new(L7Kind::TlsSni, &n)),
        FirstName::Host(n) => Some(L7Name::new(L7Kind::HttpHost, &n)),
        FirstName::Qname(n) => Some(L7Name::new(L7Kind::DnsQname, &n)),
        FirstName::None | FirstName::Incomplete => None,
    }
}

/// The state of flow slot `id` if it belongs to the flow now in that slot
/// (`orig`: slots are reused); a stale entry is removed.
fn current<'m, V>(
    map: &'m mut HashMap<FlowId, V>,
    id: FlowId,
    orig: &FlowKey,
    key: impl Fn(&V) -> &FlowKey,
) -> Option<&'m mut V> {
    if key(map.get(&id)?) != orig {
        map.remove(&id);
        return None;
    }
    map.get_mut(&id)
}

/// The bytes of a client segment starting at `seq` that lie past those read
/// so far (`next_seq`; empty for a retransmission), or `Err(gap)` when the
/// segment starts `gap` bytes beyond them.
fn unread(data: &[u8], seq: u32, next_seq: u32) -> Result<&[u8], u32> {
    let ahead = seq.wrapping_sub(next_seq) as i32;
    if ahead > 0 {
        return Err(ahead.unsigned_abs());
    }
    Ok(data.get(ahead.unsigned_abs() as usize..).unwrap_or(&[]))
}

fn payload<'a>(pkt: &'a [u8], meta: &PacketMeta) -> &'a [u8] {
    pkt.get(usize::from(meta.payload_offset)..usize::from(meta.total_len))
        .unwrap_or(&[])
}

/// True when `d` was decided by a rule with L7 predicates.
fn by_l7_rule(rules: &RuleSet, chain: Chain, d: &Decision) -> bool {
    d.rule.is_some_and(|r| rules.rule_has_l7(chain, r))
}

impl Pipeline {
    /// L7 counters.
    pub fn l7_stats(&self) -> L7Stats {
        self.l7.stats
    }

    /// Flows waiting for their L7 decision.
    pub fn l7_pending(&self) -> usize {
        self.l7.pending.len()
    }

    /// Client bytes held for L7 decisions (pending flows, and DNS-over-TCP
    /// queries not complete yet), at most [`MAX_PENDING_BYTES`].
    pub fn l7_buffered_bytes(&self) -> usize {
        self.l7.bytes
    }

    /// Flow start when the first candidate `d` has L7 predicates (see the
    /// module docs). `m` is the first packet as the rules saw it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn l7_new_flow<T: Tracer>(
        &mut self,
        d: Decision,
        chain: Chain,
        m: MatchInput,
        pkt: &mut [u8],
        meta: &PacketMeta,
        ingress: crate::zone::ZoneId,
        out: crate::zone::ZoneId,
        dnat: Option<crate::nat::DnatTo>,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let who = d.rule.map(|r| self.rules.rule_name(chain, r));
        if let L4::Tcp(_) = meta.l4 {
            trace_step!(
                t,
                "rules",
                "{} -> pending L7: {} has L7 predicates; the flow is admitted until its first payload names it",
                chain.name(),
                who.unwrap_or_default()
            );
            self.l7.stats.pending_started += 1;
            self.l7.last = None;
            let prov = Decision {
                action: Action::Accept,
                rule: d.rule,
                log: false,
            };
            let create = super::NewFlow { dnat, l7: Some(m) };
            let v = self.apply(prov, chain, pkt, meta, ingress, out, Some(create), now, t);
            if let (Verdict::Forward(_), Some(id)) = (&v, self.l7.last.take()) {
                // Data on the first packet (SYN data, or a mid-stream pickup).
                if meta.payload_len() > 0 {
                    if let Some(v) = self.l7_step(id, Dir::Original, pkt, meta, now, t) {
                        return v;
                    }
                }
            }
            return v;
        }
        let udp = matches!(meta.l4, L4::Udp { .. });
        let (d, name) = if udp {
            self.l7_names_decision(chain, &m, payload(pkt, meta), now, t)
        } else {
            (self.l7_decision(chain, &m, None, now, t), None)
        };
        self.l7.last = None;
        let watch = udp.then_some(m);
        let create = super::NewFlow { dnat, l7: Some(m) };
        let v = self.apply(d, chain, pkt, meta, ingress, out, Some(create), now, t);
        if let Some(id) = self.l7.last.take() {
            // Remember the name for reloads (the flow was just created).
            if let Some(orig) = self.ct.flow(id).map(|f| f.orig) {
                self.l7.named.insert(id, (orig, name));
                if let Some(first) = watch {
                    self.l7.watched.insert(id, Watched { orig, chain, first });
                }
            }
        }
        v
    }

    /// Decides a UDP datagram by the names it carries (every question of a
    /// DNS query): the first name whose decision is not accept decides;
    /// otherwise the first name's (accepting) decision. No name: decided with
    /// the name unknown.
    fn l7_names_decision<T: Tracer>(
        &mut self,
        chain: Chain,
        m: &MatchInput,
        data: &[u8],
        now: Instant,
        t: &mut T,
    ) -> (Decision, Option<L7Name>) {
        let mut names = app::dns_queries(data)
            .into_iter()
            .map(|q| L7Name::new(L7Kind::DnsQname, &q));
        let Some(first) = names.next() else {
            return (self.l7_decision(chain, m, None, now, t), None);
        };
        let d = self.l7_decision(chain, m, Some(&first), now, t);
        if d.action != Action::Accept {
            return (d, Some(first));
        }
        for n in names {
            let dn = self.l7_decision(chain, m, Some(&n), now, t);
            if dn.action != Action::Accept {
                return (dn, Some(n));
            }
        }
        (d, Some(first))
    }

    /// A client datagram of a watched UDP flow (one accepted by an L7
    /// decision): decided by its own names, so a later query on the same
    /// socket cannot ride on the first one's verdict. Drop and reject apply
    /// to this datagram only (the flow stays: its other queries are decided
    /// one by one). `None`: not a watched flow, or accepted.
    fn l7_datagram<T: Tracer>(
        &mut self,
        id: FlowId,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let orig = self.ct.flow(id)?.orig;
        let w = current(&mut self.l7.watched, id, &orig, |w| &w.orig)?;
        let (chain, first) = (w.chain, w.first);
        let (d, name) = self.l7_names_decision(chain, &first, payload(pkt, meta), now, t);
        self.l7.stats.datagrams_decided += 1;
        let reason = match d.rule {
            Some(rule) => DropReason::Rule { chain, rule },
            None => DropReason::Policy(chain),
        };
        match d.action {
            Action::Accept => {
                if let Some(f) = self.ct.flow_mut(id) {
                    f.rule = d.rule;
                }
                self.l7.named.insert(id, (orig, name));
                None
            }
            Action::Drop => {
                self.l7.stats.datagrams_blocked += 1;
                self.stats.count_rule(chain, d.rule, pkt.len());
                Some(Verdict::Drop(reason))
            }
            Action::Reject(w) => {
                self.l7.stats.datagrams_blocked += 1;
                self.stats.count_rule(chain, d.rule, pkt.len());
                let ingress = orig.zone;
                self.queue_reply(pkt, meta, w, ingress, now, t);
                Some(Verdict::Reject(reason))
            }
        }
    }

    /// Called by `apply` for a flow just created by [`Pipeline::l7_new_flow`]:
    /// a TCP flow becomes pending.
    pub(super) fn l7_start(
        &mut self,
        id: FlowId,
        chain: Chain,
        first: MatchInput,
        meta: &PacketMeta,
    ) {
        self.l7.last = Some(id);
        let (L4::Tcp(tcp), Some(f)) = (meta.l4, self.ct.flow(id)) else {
            return;
        };
        let syn = u32::from(tcp.flags & tcp_flags::SYN != 0);
        let p = Pending {
            orig: f.orig,
            chain,
            first,
            next_seq: tcp.seq.wrapping_add(syn),
            buf: Vec::new(),
        };
        if let Some(old) = self.l7.pending.insert(id, p) {
            self.l7.bytes = self.l7.bytes.saturating_sub(old.buf.len());
        }
        self.l7.named.remove(&id);
    }

    /// A packet of a known flow while some flow is pending: collects the
    /// client's bytes of a pending flow and decides when they name it.
    /// `None` lets the packet go on through the fast path.
    pub(super) fn l7_step<T: Tracer>(
        &mut self,
        id: FlowId,
        dir: Dir,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        if dir != Dir::Original {
            return None;
        }
        let tcp = match meta.l4 {
            L4::Tcp(tcp) => tcp,
            L4::Udp { .. } if !self.l7.watched.is_empty() => {
                return self.l7_datagram(id, pkt, meta, now, t)
            }
            _ => return None,
        };
        let data = payload(pkt, meta);
        if data.is_empty() {
            return None;
        }
        if self.l7.dns_streams.contains_key(&id) || self.l7.http_streams.contains_key(&id) {
            return self.l7_read_on(id, tcp.seq, pkt, meta, now, t);
        }
        let orig = self.ct.flow(id)?.orig;
        let total = self.l7.bytes;
        let p = self.l7.pending.get_mut(&id)?;
        if p.orig != orig {
            self.l7.take(id);
            return None;
        }
        let seq = tcp
            .seq
            .wrapping_add(u32::from(tcp.flags & tcp_flags::SYN != 0));
        let new = match unread(data, seq, p.next_seq) {
            Ok(new) => new,
            Err(ahead) => {
                trace_step!(
                    t,
                    "l7",
                    "flow {}: segment {} bytes beyond the collected stream dropped while pending",
                    id.0,
                    ahead
                );
                self.l7.stats.held_back += 1;
                return Some(Verdict::Drop(DropReason::L7Pending));
            }
        };
        let take = new.len().min(MAX_CLIENT_BYTES.saturating_sub(p.buf.len()));
        if total.saturating_add(take) > MAX_PENDING_BYTES {
            trace_step!(
                t,
                "l7",
                "flow {}: pending buffers full, segment dropped",
                id.0
            );
            self.l7.stats.held_back += 1;
            return Some(Verdict::Drop(DropReason::L7Pending));
        }
        p.buf.extend_from_slice(new.get(..take).unwrap_or(&[]));
        p.next_seq = p.next_seq.wrapping_add(take as u32);
        self.l7.bytes = total.saturating_add(take);
        let found = app::stream_first_name(&p.buf);
        if found == FirstName::Incomplete && p.buf.len() < MAX_CLIENT_BYTES {
            trace_step!(
                t,
                "l7",
                "flow {}: {} client bytes, name not complete yet: forwarded",
                id.0,
                p.buf.len()
            );
            return None;
        }
        let name = to_name(found);
        self.l7_decide(id, name, pkt, meta, now, t)
    }

    /// The second evaluation of a pending flow, and its consequences.
    fn l7_decide<T: Tracer>(
        &mut self,
        id: FlowId,
        name: Option<L7Name>,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let p = self.l7.take(id)?;
        let d = self.l7_decision(p.chain, &p.first, name.as_ref(), now, t);
        self.l7.stats.decided += 1;
        if d.action != Action::Accept {
            self.l7.stats.blocked += 1;
            return Some(self.l7_block((id, p.chain, p.orig.zone), &d, pkt, meta, now, t));
        }
        if let Some(f) = self.ct.flow_mut(id) {
            f.rule = d.rule;
        }
        let dns = name.as_ref().is_some_and(|n| n.kind == L7Kind::DnsQname);
        self.l7.named.insert(id, (p.orig, name));
        if dns && matches!(meta.l4, L4::Tcp(_)) {
            // later queries on the connection are decided one by one; the
            // bytes collected past the first message are the next ones
            let first_len = p
                .buf
                .get(..2)
                .map_or(0, |l| 2 + usize::from(u16::from_be_bytes([l[0], l[1]])));
            let rest = p.buf.get(first_len..).unwrap_or(&[]);
            self.l7.dns_streams.insert(
                id,
                DnsStream {
                    orig: p.orig,
                    chain: p.chain,
                    first: p.first,
                    // the stream starts right after the first message
                    next_seq: p.next_seq.wrapping_sub(rest.len() as u32),
                    buf: Vec::new(),
                    skip: 0,
                },
            );
            if !rest.is_empty() {
                self.l7.dns_push(id, rest);
                return self.l7_dns_decide(id, pkt, meta, now, t);
            }
        } else if matches!(meta.l4, L4::Tcp(_))
            && matches!(app::parse_http_request(&p.buf), HttpParse::Request(..))
        {
            // an HTTP request (with a Host or without): every later request
            // on the connection is decided by its own Host; the stream is
            // read again from its start, its first request passing undecided
            self.l7.http_streams.insert(
                id,
                HttpStream {
                    orig: p.orig,
                    chain: p.chain,
                    first: p.first,
                    next_seq: p.next_seq.wrapping_sub(p.buf.len() as u32),
                    framer: HttpFramer::new(),
                    skip_requests: 1,
                },
            );
            let found = self.l7_http_feed(id, &p.buf, t);
            return self.l7_http_decide(id, found, pkt, meta, now, t);
        }
        None
    }

    /// Feeds client bytes read in order to an HTTP flow's framer: the names
    /// of the requests they complete (past those to pass undecided), then a
    /// `None` when the bytes cannot be framed; and whether the reading
    /// ended.
    fn l7_http_feed<T: Tracer>(
        &mut self,
        id: FlowId,
        new: &[u8],
        t: &mut T,
    ) -> (Vec<Option<L7Name>>, bool) {
        let Some(s) = self.l7.http_streams.get_mut(&id) else {
            return (Vec::new(), false);
        };
        let before = s.framer.buffered();
        s.next_seq = s.next_seq.wrapping_add(new.len() as u32);
        let fed = s.framer.feed(new);
        let after = s.framer.buffered();
        let skip = s.skip_requests.min(fed.requests.len());
        s.skip_requests -= skip;
        self.l7.bytes = (self.l7.bytes + after).saturating_sub(before);
        let mut names: Vec<Option<L7Name>> = fed
            .requests
            .into_iter()
            .skip(skip)
            .map(|h| h.map(|h| L7Name::new(L7Kind::HttpHost, &h)))
            .collect();
        if fed.end == Some(End::Unframed) {
            trace_step!(
                t,
                "l7",
                "flow {}: HTTP stream cannot be framed: no name",
                id.0
            );
            names.push(None);
        }
        if let Some(e) = fed.end {
            trace_step!(
                t,
                "l7",
                "flow {}: HTTP stream no longer read ({:?})",
                id.0,
                e
            );
        }
        (names, fed.end.is_some())
    }

    /// Decides the requests [`Pipeline::l7_http_feed`] found, in order; the
    /// first one blocked blocks the flow (as for its first request). When
    /// the reading ended (a protocol switch, or bytes that cannot be
    /// framed, decided with no name), the rest of the flow passes unread.
    fn l7_http_decide<T: Tracer>(
        &mut self,
        id: FlowId,
        (names, ended): (Vec<Option<L7Name>>, bool),
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let s = self.l7.http_streams.get(&id)?;
        let (chain, first, orig) = (s.chain, s.first, s.orig);
        for name in names {
            let d = self.l7_decision(chain, &first, name.as_ref(), now, t);
            self.l7.stats.requests_decided += 1;
            if let Some(v) = self.l7_later((id, chain, orig), &d, name, pkt, meta, now, t) {
                self.l7.stats.requests_blocked += 1;
                return Some(v);
            }
        }
        if ended {
            self.l7.drop_http(id);
        }
        None
    }

    /// Applies decision `d` on a later message (a DNS query, an HTTP
    /// request) of flow `id`, read on after its first: a drop or reject
    /// stops the reading and cuts the flow ([`Pipeline::l7_block`]; `Some`:
    /// its verdict); an accept records the deciding rule and the name.
    #[allow(clippy::too_many_arguments)]
    fn l7_later<T: Tracer>(
        &mut self,
        (id, chain, orig): (FlowId, Chain, FlowKey),
        d: &Decision,
        name: Option<L7Name>,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        if d.action != Action::Accept {
            self.l7.drop_stream(id);
            self.l7.drop_http(id);
            return Some(self.l7_block((id, chain, orig.zone), d, pkt, meta, now, t));
        }
        if let Some(f) = self.ct.flow_mut(id) {
            f.rule = d.rule;
        }
        self.l7.named.insert(id, (orig, name));
        None
    }

    /// Drop or reject decided by `chain` for flow `id` (its client in
    /// `client`) on the client's packet `pkt`: the flow is removed, the
    /// server reset (it forgets the half-received request), and a reject
    /// also answers the client.
    fn l7_block<T: Tracer>(
        &mut self,
        (id, chain, client): (FlowId, Chain, ZoneId),
        d: &Decision,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Verdict {
        let reason = match d.rule {
            Some(rule) => DropReason::Rule { chain, rule },
            None => DropReason::Policy(chain),
        };
        let server = self.ct.flow(id).map(|f| (f.egress(), f.orig, f.reply));
        self.ct.remove(id);
        self.stats.count_rule(chain, d.rule, pkt.len());
        if let Some((server, orig, reply)) = server {
            self.reset_receiver(meta, Dir::Original, &orig, &reply, server, now);
        }
        match d.action {
            Action::Reject(w) => {
                self.queue_reply(pkt, meta, w, client, now, t);
                Verdict::Reject(reason)
            }
            _ => Verdict::Drop(reason),
        }
    }

    /// A client segment of a flow read on after its decision (DNS over
    /// TCP, HTTP): its bytes are read in order and every query or request
    /// they complete is decided by its names. A segment past the bytes read
    /// so far is dropped (the server must not assemble a message the rules
    /// did not see; the client retransmits), a retransmission of read bytes
    /// passes.
    fn l7_read_on<T: Tracer>(
        &mut self,
        id: FlowId,
        seq: u32,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let orig = self.ct.flow(id)?.orig;
        let (of, next_seq, http) = match self.l7.dns_streams.get(&id) {
            Some(s) => (s.orig, s.next_seq, false),
            None => {
                let s = self.l7.http_streams.get(&id)?;
                (s.orig, s.next_seq, true)
            }
        };
        if of != orig {
            self.l7.drop_stream(id);
            self.l7.drop_http(id);
            return None;
        }
        let new = match self.read_on(id, seq, next_seq, payload(pkt, meta), t) {
            Ok(new) => new,
            Err(v) => return Some(v),
        };
        if http {
            let found = self.l7_http_feed(id, new, t);
            return self.l7_http_decide(id, found, pkt, meta, now, t);
        }
        self.l7.dns_push(id, new);
        self.l7_dns_decide(id, pkt, meta, now, t)
    }

    /// The bytes of a client segment (`data`, starting at `seq`) of a flow
    /// read on after its decision (DNS over TCP, HTTP) past those read so
    /// far (`next_seq`); or the verdict holding the segment back: it starts
    /// beyond them (a gap: the server must not assemble bytes the rules did
    /// not see; the client retransmits), or it would take the buffered
    /// bytes over [`MAX_PENDING_BYTES`].
    fn read_on<'a, T: Tracer>(
        &mut self,
        id: FlowId,
        seq: u32,
        next_seq: u32,
        data: &'a [u8],
        t: &mut T,
    ) -> Result<&'a [u8], Verdict> {
        let budget = MAX_PENDING_BYTES.saturating_sub(self.l7.bytes);
        match unread(data, seq, next_seq)
            .ok()
            .filter(|n| n.len() <= budget)
        {
            Some(new) => Ok(new),
            None => {
                trace_step!(
                    t,
                    "l7",
                    "flow {}: segment beyond the bytes read (or past the buffer bound) dropped",
                    id.0
                );
                self.l7.stats.held_back += 1;
                Err(Verdict::Drop(DropReason::L7Pending))
            }
        }
    }

    /// Decides every query the bytes of a DNS-over-TCP flow's stream
    /// complete; the first one blocked blocks the flow (as for its first
    /// query). A message that would not fit [`MAX_CLIENT_BYTES`] is no
    /// query: it is decided with no name when the bound is reached, and its
    /// remaining bytes are skipped unread ([`L7State::dns_push`]), so the
    /// messages after it are still read and decided.
    fn l7_dns_decide<T: Tracer>(
        &mut self,
        id: FlowId,
        pkt: &mut [u8],
        meta: &PacketMeta,
        now: Instant,
        t: &mut T,
    ) -> Option<Verdict> {
        let s = self.l7.dns_streams.get(&id)?;
        let (chain, first, orig) = (s.chain, s.first, s.orig);
        loop {
            let s = self.l7.dns_streams.get_mut(&id)?;
            let len = s
                .buf
                .get(..2)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))?;
            let (msg, oversize): (Vec<u8>, bool) = match s.buf.get(2..2 + len) {
                Some(m) => (m.to_vec(), false),
                None if s.buf.len() < MAX_CLIENT_BYTES => return None,
                None => (Vec::new(), true),
            };
            let used = (2 + len).min(s.buf.len());
            s.buf.drain(..used);
            s.skip = 2 + len - used;
            self.l7.bytes = self.l7.bytes.saturating_sub(used);
            let (d, name) = self.l7_names_decision(chain, &first, &msg, now, t);
            self.l7.stats.datagrams_decided += 1;
            if let Some(v) = self.l7_later((id, chain, orig), &d, name, pkt, meta, now, t) {
                self.l7.stats.datagrams_blocked += 1;
                return Some(v);
            }
            if oversize {
                trace_step!(
                    t,
                    "l7",
                    "flow {}: DNS message over {} bytes: no name",
                    id.0,
                    MAX_CLIENT_BYTES
                );
            }
        }
    }

    /// Evaluates `chain` with the name known; traces and logs the decision.
    fn l7_decision<T: Tracer>(
        &mut self,
        chain: Chain,
        m: &MatchInput,
        name: Option<&L7Name>,
        now: Instant,
        t: &mut T,
    ) -> Decision {
        let d = self.rules.evaluate_named(chain, m, name);
        self.rule_block(chain, d.rule, m.src, now, t);
        if t.enabled() {
            let who = match d.rule {
                Some(r) => self.rules.rule_name(chain, r),
                None => format!("policy of chain {}", chain.name()),
            };
            let what = name.map_or_else(|| "no L7 name".to_owned(), |n| n.to_string());
            t.step(
                "l7",
                format!(
                    "{} with {what} -> {:?} (decided by {who})",
                    chain.name(),
                    d.action
                ),
            );
        }
        if d.log {
            self.push_event(Event {
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
            });
        }
        d
    }

    /// The decision a reload's re-check applies to flow `id` (see the module
    /// docs): with the recorded name for flows decided here; a pending flow
    /// whose first candidate still has L7 predicates stays admitted.
    pub(super) fn l7_recheck(&mut self, id: FlowId, chain: Chain, first: &MatchInput) -> Decision {
        let orig = self.ct.flow(id).map(|f| f.orig);
        if let Some((_, name)) = self.l7.named.get(&id).filter(|n| Some(n.0) == orig) {
            return self.rules.evaluate_named(chain, first, name.as_ref());
        }
        let d = self.rules.evaluate(chain, first);
        if self
            .l7
            .pending
            .get(&id)
            .is_some_and(|p| Some(p.orig) == orig)
        {
            if by_l7_rule(&self.rules, chain, &d) {
                return Decision {
                    action: Action::Accept,
                    ..d
                };
            }
            self.l7.take(id);
        }
        d
    }
}
