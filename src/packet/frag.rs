//! IPv4 / IPv6 fragment reassembly (RFC 791, RFC 8200 4.5, RFC 5722), sans-IO.
//!
//! [`Reassembler::handle`] takes one parsed fragment and returns
//! [`FragResult::Incomplete`], [`FragResult::Complete`] (the reassembled
//! datagram *and* the original fragments, in arrival order, so the pipeline can
//! inspect the whole datagram but forward the fragments unchanged, keeping the
//! path MTU) or [`FragResult::Dropped`] with a reason.
//!
//! The reassembled datagram reads as if it had never been fragmented: IPv4 with
//! MF=0, offset 0, total length and header checksum fixed (DF and the id are
//! kept); IPv6 with the Fragment header removed, the payload length and the
//! preceding next-header field fixed. Its transport checksum is *not* checked
//! here: parsing it with [`parse`](super::parse()) does that.
//!
//! Use in the pipeline: `parse` each packet; if `meta.frag.is_some()`, hand it
//! to [`Reassembler::handle`]; on `Complete`, `parse(&datagram)` (which verifies
//! the transport checksum) and classify that, then forward `fragments`
//! (rewritten one by one if NAT applies: see `rewrite`'s fragment rules).
//! Call [`Reassembler::expire`] from the timer path.
//!
//! Datagrams are keyed by (ingress zone, src, dst, id, protocol) in a map with a
//! keyed SipHash-1-3 (the key comes from the caller). Per-fragment checks: data
//! length non-zero and, unless it is the last fragment, a multiple of 8 (RFC 8200
//! 4.5; the same for IPv4 since offsets are in 8-byte units).
//!
//! Datagram policy (the whole datagram is dropped, and any later fragment of it
//! is dropped as `Poisoned` until the entry expires):
//! - any overlap, even with identical data (RFC 5722 for IPv6; the same policy
//!   for IPv4, where overlaps are only an evasion tool: RFC 1858, Ptacek-Newsham);
//! - more than `max_fragments` fragments (kernel: `ipfrag_max_dist`-like bound);
//! - reassembled size beyond 65535 bytes (RFC 791 total length; the IPv6 payload
//!   length of a non-jumbo packet);
//! - a conflicting last fragment (two different ends, or data beyond the end).
//!
//! Memory: `max_bytes` bounds the bytes of fragments held (each fragment counts
//! its IP total length), `max_datagrams` the entries (including poisoned ones,
//! which hold no bytes). When either bound would be exceeded by a new fragment,
//! the oldest entries (by creation) other than the fragment's own datagram are
//! evicted first, like the kernel's `inet_frag` eviction under
//! `ipfrag_high_thresh`; a fragment that cannot fit even then is dropped
//! (`NoMemory`). An incomplete datagram expires `timeout` after its first
//! fragment arrived (kernel `ipfrag_time`), see [`Reassembler::expire`]; an
//! expired entry found by `handle` is replaced by a fresh one.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use siphasher::sip::SipHasher13;

use super::checksum::fill_ipv4_checksum;
use super::parse::walk_v6_until;
use super::{FragConfig, PacketMeta};
use crate::zone::ZoneId;

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FragError {
    #[error("packet is not a fragment")]
    NotFragment,
    #[error("malformed fragment")]
    Malformed,
    #[error("fragment data empty or not a multiple of 8 bytes")]
    BadLength,
    #[error("overlapping fragments")]
    Overlap,
    #[error("too many fragments")]
    TooMany,
    #[error("reassembled datagram larger than 65535 bytes")]
    TooBig,
    #[error("conflicting last fragment")]
    Conflict,
    #[error("fragment of a datagram already dropped")]
    Poisoned,
    #[error("reassembly memory exhausted")]
    NoMemory,
}

impl FragError {
    /// A stable snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            FragError::NotFragment => "not_fragment",
            FragError::Malformed => "frag_malformed",
            FragError::BadLength => "frag_bad_length",
            FragError::Overlap => "frag_overlap",
            FragError::TooMany => "frag_too_many",
            FragError::TooBig => "frag_too_big",
            FragError::Conflict => "frag_conflict",
            FragError::Poisoned => "frag_poisoned",
            FragError::NoMemory => "frag_no_memory",
        }
    }
}

/// The outcome of handing a fragment to the reassembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragResult {
    /// Held; the datagram is not complete yet.
    Incomplete,
    /// The datagram is complete.
    Complete {
        /// The reassembled datagram, as if never fragmented.
        datagram: Vec<u8>,
        /// The original fragments (each cut to its IP total length), in arrival order.
        fragments: Vec<Vec<u8>>,
    },
    /// Dropped (see [`FragError`]).
    Dropped(FragError),
}

/// Reassembly counters and current holdings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragStats {
    /// Entries held (incomplete and poisoned datagrams).
    pub held_datagrams: usize,
    /// Bytes of fragments held.
    pub held_bytes: usize,
    pub completed: u64,
    /// Datagrams dropped for overlapping fragments.
    pub overlaps: u64,
    /// Incomplete datagrams that expired.
    pub timeouts: u64,
    /// Datagrams evicted to stay within the memory bounds.
    pub evicted: u64,
    /// Datagrams dropped for having too many fragments.
    pub too_many: u64,
    /// Fragments dropped for any reason (each `Dropped` result).
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    zone: ZoneId,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u32,
    end: u32,
    /// Index into `Entry::frags` and where the data starts in that buffer.
    frag: usize,
    data_off: usize,
}

/// Where the offset-0 fragment's parts are.
#[derive(Debug, Clone, Copy)]
struct First {
    /// Index into `Entry::frags`.
    frag: usize,
    /// Start of its fragment data.
    data_off: usize,
    /// IPv6: offset of the Fragment header and of the next-header byte naming it.
    v6: Option<(usize, usize)>,
}

#[derive(Debug)]
struct Entry {
    created: Instant,
    seq: u64,
    poisoned: bool,
    frags: Vec<Vec<u8>>,
    pieces: Vec<Piece>,
    /// Data length of the datagram, known once the last fragment arrived.
    total: Option<u32>,
    received: u32,
    /// The offset-0 fragment.
    first: Option<First>,
    bytes: usize,
}

/// A [`BuildHasher`] for SipHash-1-3 with a caller-chosen key.
#[derive(Debug, Clone, Copy)]
struct SipBuild(u64, u64);

impl BuildHasher for SipBuild {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// Where a fragment's data is and how it is keyed.
struct Layout {
    /// Start of the fragment data (after the Fragment header for IPv6).
    data_off: usize,
    /// IPv6: (Fragment header offset, offset of the next-header byte naming it).
    v6: Option<(usize, usize)>,
    /// Protocol for the key (IPv6: the Fragment header's next header).
    proto: u8,
}

/// Fragment reassembly state (see the module doc).
#[derive(Debug)]
pub struct Reassembler {
    cfg: FragConfig,
    map: HashMap<Key, Entry, SipBuild>,
    /// Creation order, for expiry and eviction: seq -> key.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
    stats: FragStats,
}

/// Largest IP datagram (RFC 791 total length; IPv6 payload length + 40 without jumbograms).
const MAX_DATAGRAM: usize = 65535;

impl Reassembler {
    pub fn new(cfg: FragConfig, hash_key: (u64, u64)) -> Self {
        Reassembler {
            cfg,
            map: HashMap::with_hasher(SipBuild(hash_key.0, hash_key.1)),
            order: BTreeMap::new(),
            next_seq: 0,
            stats: FragStats::default(),
        }
    }

    pub fn stats(&self) -> FragStats {
        FragStats {
            held_datagrams: self.map.len(),
            ..self.stats
        }
    }

    /// Drops incomplete datagrams older than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((&seq, &key)) = self.order.iter().next() {
            let expired = match self.map.get(&key) {
                Some(e) => now.saturating_duration_since(e.created) >= self.cfg.timeout,
                None => true, // stale index entry
            };
            if !expired {
                break;
            }
            self.order.remove(&seq);
            if let Some(e) = self.map.remove(&key) {
                self.stats.held_bytes = self.stats.held_bytes.saturating_sub(e.bytes);
                if !e.poisoned {
                    self.stats.timeouts += 1;
                }
                n += 1;
            }
        }
        n
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.order.remove(&e.seq);
        self.stats.held_bytes = self.stats.held_bytes.saturating_sub(e.bytes);
        Some(e)
    }

    /// Frees an entry's data and marks it so later fragments are dropped.
    fn poison(&mut self, key: &Key, why: FragError) -> FragResult {
        if let Some(e) = self.map.get_mut(key) {
            self.stats.held_bytes = self.stats.held_bytes.saturating_sub(e.bytes);
            e.poisoned = true;
            e.bytes = 0;
            e.frags = Vec::new();
            e.pieces = Vec::new();
        }
        match why {
            FragError::Overlap => self.stats.overlaps += 1,
            FragError::TooMany => self.stats.too_many += 1,
            _ => {}
        }
        self.drop_with(why)
    }

    fn drop_with(&mut self, why: FragError) -> FragResult {
        self.stats.dropped += 1;
        FragResult::Dropped(why)
    }

    /// Evicts the oldest entries other than `keep` until `need` more bytes and
    /// (if `new_entry`) one more entry fit. Returns false if they cannot.
    fn make_room(&mut self, keep: &Key, need: usize, new_entry: bool) -> bool {
        loop {
            let over_bytes = self.stats.held_bytes + need > self.cfg.max_bytes;
            let over_count = new_entry && self.map.len() >= self.cfg.max_datagrams;
            if !over_bytes && !over_count {
                return true;
            }
            let victim = self.order.values().copied().find(|k| k != keep);
            let Some(v) = victim else { return false };
            self.remove(&v);
            self.stats.evicted += 1;
        }
    }

    fn layout(pkt: &[u8], meta: &PacketMeta) -> Option<Layout> {
        if meta.is_v6() {
            let chain = walk_v6_until(pkt, true).ok()?;
            let (off, _) = chain.frag?;
            Some(Layout {
                data_off: off + 8,
                v6: Some((off, chain.frag_prev_nh)),
                proto: *pkt.get(off)?,
            })
        } else {
            let hlen = usize::from(pkt.first()? & 0x0f) * 4;
            Some(Layout {
                data_off: hlen,
                v6: None,
                proto: meta.proto,
            })
        }
    }

    /// Handles one fragment (see the module doc). `meta` is what `parse` returned for `buf`.
    pub fn handle(
        &mut self,
        buf: &[u8],
        meta: &PacketMeta,
        zone: ZoneId,
        now: Instant,
    ) -> FragResult {
        let Some(f) = meta.frag else {
            return self.drop_with(FragError::NotFragment);
        };
        let Some(pkt) = buf.get(..usize::from(meta.total_len)) else {
            return self.drop_with(FragError::Malformed);
        };
        let Some(lay) = Self::layout(pkt, meta) else {
            return self.drop_with(FragError::Malformed);
        };
        let data_len = pkt.len().saturating_sub(lay.data_off);
        if lay.data_off > pkt.len() || data_len == 0 || (f.more && data_len % 8 != 0) {
            return self.drop_with(FragError::BadLength);
        }
        let start = u32::from(f.offset);
        let end = start + data_len as u32; // data_len <= 65535
        let key = Key {
            zone,
            src: meta.src,
            dst: meta.dst,
            id: f.id,
            proto: lay.proto,
        };
        // An expired entry is replaced.
        if let Some(e) = self.map.get(&key) {
            if now.saturating_duration_since(e.created) >= self.cfg.timeout {
                if !e.poisoned {
                    self.stats.timeouts += 1;
                }
                self.remove(&key);
            }
        }
        let exists = self.map.contains_key(&key);
        if exists && self.map.get(&key).is_some_and(|e| e.poisoned) {
            return self.drop_with(FragError::Poisoned);
        }
        if pkt.len() > self.cfg.max_bytes || !self.make_room(&key, pkt.len(), !exists) {
            return self.drop_with(FragError::NoMemory);
        }
        if !exists {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.insert(seq, key);
            self.map.insert(
                key,
                Entry {
                    created: now,
                    seq,
                    poisoned: false,
                    frags: Vec::new(),
                    pieces: Vec::new(),
                    total: None,
                    received: 0,
                    first: None,
                    bytes: 0,
                },
            );
        }
        // The datagram's size: unfragmentable part + data.
        let unfrag = lay.v6.map_or(lay.data_off, |(fh, _)| fh);
        if unfrag + end as usize > MAX_DATAGRAM {
            return self.poison(&key, FragError::TooBig);
        }
        let max_fragments = self.cfg.max_fragments;
        let Some(e) = self.map.get_mut(&key) else {
            return self.drop_with(FragError::Malformed);
        };
        if e.frags.len() >= max_fragments {
            return self.poison(&key, FragError::TooMany);
        }
        if !f.more {
            if e.total.is_some_and(|t| t != end) || e.pieces.iter().any(|p| p.end > end) {
                return self.poison(&key, FragError::Conflict);
            }
        } else if e.total.is_some_and(|t| end > t) {
            return self.poison(&key, FragError::Conflict);
        }
        // Pieces are sorted by start and disjoint: find the insertion point and
        // check the neighbours only.
        let idx = e.pieces.partition_point(|p| p.start < start);
        let overlaps_prev = idx > 0 && e.pieces.get(idx - 1).is_some_and(|p| p.end > start);
        let overlaps_next = e.pieces.get(idx).is_some_and(|p| p.start < end);
        if overlaps_prev || overlaps_next {
            return self.poison(&key, FragError::Overlap);
        }
        let fi = e.frags.len();
        e.frags.push(pkt.to_vec());
        e.pieces.insert(
            idx,
            Piece {
                start,
                end,
                frag: fi,
                data_off: lay.data_off,
            },
        );
        e.bytes += pkt.len();
        e.received += end - start;
        if !f.more {
            e.total = Some(end);
        }
        if start == 0 {
            e.first = Some(First {
                frag: fi,
                data_off: lay.data_off,
                v6: lay.v6,
            });
        }
        self.stats.held_bytes += pkt.len();
        let done = e.total.is_some_and(|t| t == e.received);
        if !done {
            return FragResult::Incomplete;
        }
        let Some(e) = self.remove(&key) else {
            return self.drop_with(FragError::Malformed);
        };
        match assemble(&e) {
            Some(datagram) => {
                self.stats.completed += 1;
                FragResult::Complete {
                    datagram,
                    fragments: e.frags,
                }
            }
            None => self.drop_with(FragError::TooBig),
        }
    }
}

/// Builds the datagram from a complete entry (pieces disjoint and covering 0..total).
fn assemble(e: &Entry) -> Option<Vec<u8>> {
    let First { frag, data_off, v6 } = e.first?;
    let first = e.frags.get(frag)?;
    let total = usize::try_from(e.total?).ok()?;
    let unfrag_len = v6.map_or(data_off, |(fh, _)| fh);
    let len = unfrag_len + total;
    if len > MAX_DATAGRAM {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(first.get(..unfrag_len)?);
    for p in &e.pieces {
        let n = usize::try_from(p.end - p.start).ok()?;
        out.extend_from_slice(e.frags.get(p.frag)?.get(p.data_off..p.data_off + n)?);
    }
    let len16 = u16::try_from(out.len()).ok()?;
    match v6 {
        None => {
            out.get_mut(2..4)?.copy_from_slice(&len16.to_be_bytes());
            let df = out.get(6)? & 0x40;
            out.get_mut(6..8)?.copy_from_slice(&[df, 0]);
            if !fill_ipv4_checksum(&mut out) {
                return None;
            }
        }
        Some((fh, prev_nh)) => {
            let nh = *first.get(fh)?;
            *out.get_mut(prev_nh)? = nh;
            out.get_mut(4..6)?
                .copy_from_slice(&len16.checked_sub(40)?.to_be_bytes());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::{parse, parse_allowing_tiny_fragments, ParseOptions};
    use crate::packet::pcap::parse_pcap;
    use crate::packet::testutil::*;
    use crate::packet::L4;
    use proptest::prelude::*;
    use std::time::Duration;

    const KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

    fn feed(r: &mut Reassembler, frags: &[Vec<u8>], zone: ZoneId, now: Instant) -> Vec<FragResult> {
        frags
            .iter()
            .map(|f| r.handle(f, &parse(f).unwrap(), zone, now))
            .collect()
    }

    /// The original datagram as the reassembler should rebuild it: id set, DF/MF/offset cleared.
    fn normalized_v4(p: &[u8], id: u16) -> Vec<u8> {
        let mut q = p.to_vec();
        q[4..6].copy_from_slice(&id.to_be_bytes());
        q[6] = 0;
        q[7] = 0;
        crate::packet::checksum::fill_ipv4_checksum(&mut q);
        q
    }

    #[test]
    fn v4_in_order_and_reversed() {
        let p = v4_udp(&(0..200u8).collect::<Vec<_>>());
        let fr = frag_v4(&p, &[64, 128], 42);
        for order in [vec![0, 1, 2], vec![2, 1, 0], vec![1, 2, 0]] {
            let mut r = Reassembler::new(FragConfig::default(), KEY);
            let t = Instant::now();
            let input: Vec<_> = order.iter().map(|i| fr[*i].clone()).collect();
            let mut res = feed(&mut r, &input[..2], ZoneId::TUN, t);
            assert_eq!(res[0], FragResult::Incomplete);
            assert_eq!(res[1], FragResult::Incomplete);
            let s = r.stats();
            assert_eq!(
                (s.held_datagrams, s.held_bytes),
                (1, input[0].len() + input[1].len())
            );
            res.extend(feed(&mut r, &input[2..], ZoneId::TUN, t));
            let FragResult::Complete {
                datagram,
                fragments,
            } = &res[2]
            else {
                panic!("{:?}", res[2])
            };
            assert_eq!(datagram, &normalized_v4(&p, 42));
            assert_eq!(fragments, &input);
            let m = parse(datagram).unwrap();
            assert_eq!(
                m.l4,
                L4::Udp {
                    sport: 5353,
                    dport: 53
                }
            );
            let s = r.stats();
            assert_eq!((s.completed, s.held_datagrams, s.held_bytes), (1, 0, 0));
        }
    }

    #[test]
    fn v6_with_extension_headers_before_the_fragment_header() {
        let p = v6_with_ext(&v6_tcp(&[0x5a; 300]), &[(0, ext8()), (60, ext8())]);
        // Unfragmentable: IPv6 + hop-by-hop (the dest-opts header goes into the fragments).
        let fr = frag_v6_ext(&p, 48, 40, &[80, 160, 240], 0xabcdef);
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        let res = feed(&mut r, &fr, ZoneId(5), t);
        let FragResult::Complete { datagram, .. } = res.last().unwrap() else {
            panic!()
        };
        assert_eq!(datagram, &p);
        let m = parse(datagram).unwrap();
        assert!(matches!(m.l4, L4::Tcp(_)));
        assert_eq!(m.l4_offset, 56);
    }

    #[test]
    fn overlap_drops_the_whole_datagram_until_expiry() {
        let p = v4_udp(&[1; 100]);
        let fr = frag_v4(&p, &[48], 7);
        let cfg = FragConfig::default();
        let mut r = Reassembler::new(cfg, KEY);
        let t = Instant::now();
        assert_eq!(
            feed(&mut r, &fr[..1], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        );
        // The identical fragment again is an overlap (RFC 5722 policy).
        assert_eq!(
            feed(&mut r, &fr[..1], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::Overlap)
        );
        assert_eq!(
            feed(&mut r, &fr[1..], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::Poisoned)
        );
        let s = r.stats();
        assert_eq!(
            (s.overlaps, s.held_bytes, s.held_datagrams, s.dropped),
            (1, 0, 1, 2)
        );
        // After expiry the same id reassembles again.
        let later = t + cfg.timeout;
        let res = feed(&mut r, &fr, ZoneId::TUN, later);
        assert!(matches!(res[1], FragResult::Complete { .. }));
        assert_eq!(
            r.stats().timeouts,
            0,
            "poisoned entries do not count as timeouts"
        );
    }

    #[test]
    fn partial_overlap_v6() {
        let p = v6_udp(&[2; 200]);
        let a = frag_v6(&p, &[64], 9);
        let b = frag_v6(&p, &[32, 128], 9);
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        assert_eq!(
            feed(&mut r, &a[1..], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        );
        // b[1] covers 32..128, overlapping a[1] (64..end).
        assert_eq!(
            feed(&mut r, &b[1..2], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::Overlap)
        );
    }

    #[test]
    fn zones_and_ids_are_separate() {
        let p = v4_udp(&[3; 64]);
        let fr = frag_v4(&p, &[32], 1);
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        assert_eq!(
            r.handle(&fr[0], &parse(&fr[0]).unwrap(), ZoneId(3), t),
            FragResult::Incomplete
        );
        assert_eq!(
            r.handle(&fr[1], &parse(&fr[1]).unwrap(), ZoneId(4), t),
            FragResult::Incomplete
        );
        let other = frag_v4(&p, &[32], 2);
        assert_eq!(
            r.handle(&other[1], &parse(&other[1]).unwrap(), ZoneId(3), t),
            FragResult::Incomplete
        );
        assert_eq!(r.stats().held_datagrams, 3);
        assert!(matches!(
            r.handle(&fr[1], &parse(&fr[1]).unwrap(), ZoneId(3), t),
            FragResult::Complete { .. }
        ));
    }

    #[test]
    fn policy_drops() {
        let t = Instant::now();
        let p = v4_udp(&[4; 96]);
        // Not a fragment.
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        assert_eq!(
            r.handle(&p, &parse(&p).unwrap(), ZoneId::TUN, t),
            FragResult::Dropped(FragError::NotFragment)
        );
        // Non-last fragment whose data is not a multiple of 8.
        let mut f = frag_v4(&p, &[40], 3).remove(0);
        f.truncate(20 + 36);
        f[2..4].copy_from_slice(&56u16.to_be_bytes());
        crate::packet::checksum::fill_ipv4_checksum(&mut f);
        assert_eq!(
            r.handle(&f, &parse(&f).unwrap(), ZoneId::TUN, t),
            FragResult::Dropped(FragError::BadLength)
        );
        // Too many fragments.
        let cfg = FragConfig {
            max_fragments: 3,
            ..FragConfig::default()
        };
        let mut r = Reassembler::new(cfg, KEY);
        let fr = frag_v4(&p, &[8 + 16, 40, 56, 72], 4);
        let res = feed(&mut r, &fr, ZoneId::TUN, t);
        assert_eq!(res[3], FragResult::Dropped(FragError::TooMany));
        assert_eq!(res[4], FragResult::Dropped(FragError::Poisoned));
        assert_eq!(r.stats().too_many, 1);
        // Conflicting last fragments.
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let a = frag_v4(&p, &[48], 5);
        let b = frag_v4(&v4_udp(&[4; 120]), &[80], 5);
        assert_eq!(
            feed(&mut r, &a[1..], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        );
        assert_eq!(
            feed(&mut r, &b[1..], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::Conflict)
        );
        // Data beyond a known end.
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let c = frag_v4(&v4_udp(&[4; 200]), &[48, 96], 6);
        assert_eq!(
            feed(&mut r, &a[1..], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        ); // ends at 104 (8+96)
        assert_eq!(
            feed(&mut r, &c[1..2], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        ); // 48..96 fits
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        assert_eq!(
            feed(&mut r, &a[1..], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        );
        let d = frag_v4(&v4_udp(&[4; 200]), &[96, 160], 5);
        assert_eq!(
            feed(&mut r, &d[1..2], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::Conflict)
        );
        // Reassembled size beyond 65535.
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let mut big = frag_v4(&p, &[48], 8).remove(1);
        // 65472 + 56 data bytes fits the fragment offset rule, + 20 header does not.
        big[6..8].copy_from_slice(&(65472u16 / 8).to_be_bytes());
        crate::packet::checksum::fill_ipv4_checksum(&mut big);
        let m = parse(&big).unwrap();
        assert_eq!(
            r.handle(&big, &m, ZoneId::TUN, t),
            FragResult::Dropped(FragError::TooBig)
        );
    }

    #[test]
    fn expiry() {
        let cfg = FragConfig::default();
        let mut r = Reassembler::new(cfg, KEY);
        let t = Instant::now();
        let fr = frag_v4(&v4_udp(&[5; 64]), &[32], 1);
        feed(&mut r, &fr[..1], ZoneId::TUN, t);
        let fr2 = frag_v4(&v4_udp(&[5; 64]), &[32], 2);
        feed(&mut r, &fr2[..1], ZoneId::TUN, t + Duration::from_secs(10));
        assert_eq!(r.expire(t + cfg.timeout - Duration::from_millis(1)), 0);
        assert_eq!(r.expire(t + cfg.timeout), 1);
        let s = r.stats();
        assert_eq!(
            (s.timeouts, s.held_datagrams, s.held_bytes),
            (1, 1, fr2[0].len())
        );
        // The late second half starts a new (incomplete) datagram.
        assert_eq!(
            feed(&mut r, &fr[1..], ZoneId::TUN, t + cfg.timeout)[0],
            FragResult::Incomplete
        );
        // An expired entry found by handle is replaced.
        let res = feed(&mut r, &fr2[1..], ZoneId::TUN, t + Duration::from_secs(50));
        assert_eq!(res[0], FragResult::Incomplete);
        assert_eq!(r.stats().timeouts, 2);
        assert_eq!(r.expire(t + Duration::from_secs(3600)), 2);
        assert_eq!(r.stats().held_bytes, 0);
    }

    #[test]
    fn memory_bound_evicts_oldest() {
        let t = Instant::now();
        let fr: Vec<Vec<Vec<u8>>> = (0..10u16)
            .map(|id| frag_v4(&v4_udp(&[6; 200]), &[104], id))
            .collect();
        let one = fr[0][0].len();
        let cfg = FragConfig {
            max_bytes: 3 * one,
            ..FragConfig::default()
        };
        let mut r = Reassembler::new(cfg, KEY);
        for (i, f) in fr.iter().enumerate() {
            feed(
                &mut r,
                &f[..1],
                ZoneId::TUN,
                t + Duration::from_millis(i as u64),
            );
            assert!(r.stats().held_bytes <= cfg.max_bytes);
        }
        let s = r.stats();
        assert_eq!((s.held_datagrams, s.evicted), (3, 7));
        // The newest three survive and complete; the oldest was evicted.
        assert!(matches!(
            feed(&mut r, &fr[9][1..], ZoneId::TUN, t)[0],
            FragResult::Complete { .. }
        ));
        assert_eq!(
            feed(&mut r, &fr[0][1..], ZoneId::TUN, t)[0],
            FragResult::Incomplete
        );
        // Count bound.
        let cfg = FragConfig {
            max_datagrams: 2,
            ..FragConfig::default()
        };
        let mut r = Reassembler::new(cfg, KEY);
        for f in &fr[..5] {
            feed(&mut r, &f[..1], ZoneId::TUN, t);
        }
        assert_eq!((r.stats().held_datagrams, r.stats().evicted), (2, 3));
        // A fragment larger than the whole budget.
        let cfg = FragConfig {
            max_bytes: 100,
            ..FragConfig::default()
        };
        let mut r = Reassembler::new(cfg, KEY);
        assert_eq!(
            feed(&mut r, &fr[0][..1], ZoneId::TUN, t)[0],
            FragResult::Dropped(FragError::NoMemory)
        );
    }

    #[test]
    fn v6_tiny_first_fragment_replayed_leniently() {
        // The first fragment holds only a destination-options header (RFC 7112 case).
        let p = v6_with_ext(&v6_udp(&[7; 40]), &[(60, ext8())]);
        let fr = frag_v6_ext(&p, 40, 6, &[8], 77);
        assert_eq!(parse(&fr[0]), Err(crate::packet::ParseError::TinyFragment));
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        let mut last = FragResult::Incomplete;
        for f in &fr {
            let m = parse_allowing_tiny_fragments(f, ParseOptions::default()).unwrap();
            last = r.handle(f, &m, ZoneId::TUN, t);
        }
        let FragResult::Complete { datagram, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(datagram, p);
    }

    fn yaml_expected(path: &str) -> Vec<u8> {
        use base64::Engine;
        let y = std::fs::read_to_string(path).unwrap();
        let line = y
            .lines()
            .find(|l| l.trim_start().starts_with("packet:"))
            .unwrap();
        let b64 = line.split('"').nth(1).unwrap();
        let frame = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        frame[18..].to_vec() // Ethernet (14) + one 802.1Q tag (4)
    }

    /// Suricata-verify bug 6887: a TCP SYN in 3 IPv4 fragments behind a VLAN tag.
    /// Its first two fragments are "tiny" (8 bytes each), which the gateway drops
    /// (RFC 1858); replayed with the lenient parser they reassemble to exactly the
    /// packet Suricata reports.
    #[test]
    fn real_capture_ipv4_tcp_syn() {
        let dir = "../shared/data/pcaps/suricata-verify/tests/defrag/bug-6887-defrag-eth-vlan-ipv4-tcp-syn";
        let cap =
            parse_pcap(&std::fs::read(format!("{dir}/frag-eth-vlan-ip-tcp-syn.pcap")).unwrap())
                .unwrap();
        assert_eq!(cap.packets.len(), 3);
        assert_eq!(
            parse(&cap.packets[0].data),
            Err(crate::packet::ParseError::TinyFragment)
        );
        assert_eq!(
            parse(&cap.packets[1].data),
            Err(crate::packet::ParseError::TinyFragment)
        );
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        let mut last = FragResult::Incomplete;
        for p in &cap.packets {
            let m = parse_allowing_tiny_fragments(&p.data, ParseOptions::default()).unwrap();
            last = r.handle(&p.data, &m, ZoneId::TUN, t);
        }
        let FragResult::Complete {
            datagram,
            fragments,
        } = last
        else {
            panic!("{last:?}")
        };
        assert_eq!(fragments.len(), 3);
        assert_eq!(datagram, yaml_expected(&format!("{dir}/test.yaml")));
        let m = parse(&datagram).unwrap();
        let L4::Tcp(t) = m.l4 else { panic!() };
        assert_eq!(
            (t.sport, t.dport, t.flags),
            (12345, 8080, crate::packet::tcp_flags::SYN)
        );
    }

    /// Suricata-verify bug 6887: a 1000-byte TCP segment in 3 IPv6 fragments.
    #[test]
    fn real_capture_ipv6_tcp() {
        let dir =
            "../shared/data/pcaps/suricata-verify/tests/defrag/bug-6887-defrag-eth-vlan-ipv6-tcp";
        let cap = parse_pcap(&std::fs::read(format!("{dir}/frag-eth-vlan-ipv6-tcp.pcap")).unwrap())
            .unwrap();
        let mut r = Reassembler::new(FragConfig::default(), KEY);
        let t = Instant::now();
        let res = cap
            .packets
            .iter()
            .map(|p| r.handle(&p.data, &parse(&p.data).unwrap(), ZoneId::TUN, t))
            .collect::<Vec<_>>();
        let FragResult::Complete { datagram, .. } = res.last().unwrap() else {
            panic!("{res:?}")
        };
        assert_eq!(datagram, &yaml_expected(&format!("{dir}/test.yaml")));
        let m = parse(datagram).unwrap();
        assert_eq!(m.payload_len(), 1000);
        assert!(matches!(m.l4, L4::Tcp(_)));
    }

    proptest! {
        /// Random fragmentation, random order: reassembles to the original.
        #[test]
        fn random_fragmentation_reassembles(v6 in any::<bool>(), len in 1usize..3000,
                                            seed in any::<u8>(),
                                            cuts in proptest::collection::vec(1usize..100, 0..12),
                                            perm in any::<prop::sample::Index>(), id in any::<u16>()) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let p = if v6 { v6_udp(&payload) } else { v4_udp(&payload) };
            let mut b: Vec<usize> = cuts.iter().scan(0, |a, c| { *a += c * 8; Some(*a) }).collect();
            let data_len = payload.len() + 8; // UDP header + payload
            b.retain(|c| *c < data_len);
            if b.is_empty() {
                b.push(8); // always at least two fragments
            }
            let mut fr = if v6 { frag_v6(&p, &b, u32::from(id)) } else { frag_v4(&p, &b, id) };
            prop_assert!(fr.len() > 1);
            // A deterministic shuffle from `perm`.
            let n = fr.len();
            let k = perm.index(n);
            fr.rotate_left(k);
            if n > 2 { fr.swap(0, n - 1); }
            let mut r = Reassembler::new(FragConfig::default(), KEY);
            let t = Instant::now();
            let res = feed(&mut r, &fr, ZoneId::TUN, t);
            for x in &res[..n - 1] { prop_assert_eq!(x, &FragResult::Incomplete); }
            let FragResult::Complete { datagram, fragments } = &res[n - 1] else { panic!("{:?}", res[n - 1]) };
            let want = if v6 { p.clone() } else { normalized_v4(&p, id) };
            prop_assert_eq!(datagram, &want);
            prop_assert_eq!(fragments, &fr);
            prop_assert!(parse(datagram).is_ok());
            prop_assert_eq!(r.stats().held_bytes, 0);
        }

        /// Arbitrary (parseable) fragments never panic and never exceed the bounds.
        #[test]
        fn arbitrary_fragments_stay_bounded(pkts in proptest::collection::vec(
                (any::<bool>(), 0u16..40, any::<bool>(), 1usize..20, 0u16..3), 1..60)) {
            let cfg = FragConfig { max_bytes: 2000, max_datagrams: 4, max_fragments: 5, ..FragConfig::default() };
            let mut r = Reassembler::new(cfg, KEY);
            let t = Instant::now();
            for (i, (v6, off8, more, dlen, id)) in pkts.into_iter().enumerate() {
                let data = vec![0u8; dlen * 8];
                let base = if v6 { v6_udp(&data) } else { v4_udp(&data) };
                // One fragment cut out of `base`, then placed at offset off8*8.
                let mut f = if v6 { frag_v6(&base, &[], u32::from(id)) } else { frag_v4(&base, &[], id) }.remove(0);
                if v6 {
                    let fo = (off8 * 8) | u16::from(more);
                    f[42..44].copy_from_slice(&fo.to_be_bytes());
                } else {
                    let fo = off8 | if more { 0x2000 } else { 0 };
                    f[6..8].copy_from_slice(&fo.to_be_bytes());
                    crate::packet::checksum::fill_ipv4_checksum(&mut f);
                }
                let Ok(m) = parse(&f) else { continue };
                if m.frag.is_none() { continue; }
                let _ = r.handle(&f, &m, ZoneId::TUN, t + Duration::from_millis(i as u64 * 500));
                let s = r.stats();
                prop_assert!(s.held_bytes <= cfg.max_bytes);
                prop_assert!(s.held_datagrams <= cfg.max_datagrams);
            }
        }
    }
}
