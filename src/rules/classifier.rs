//! The compiled rule classifier: first-match classification whose per-packet
//! cost grows sub-linearly with the number of rules.
//!
//! # Contract
//!
//! [`Classifier::classify`] returns exactly what [`linear::evaluate`] returns
//! for the same chain and input (same action, same rule index, same `log`),
//! for every input — including mixed-family and nonsensical ones. The
//! property test `rules::tests::classifier_equals_linear` checks this, for
//! the chosen plan and for every other plan, over 2,000 random rule sets of
//! up to 60 rules and ~80 packets each.
//!
//! # Design: one index per rule, candidate lists, quick checks
//!
//! Every rule is filed in exactly one *index*, under one field that must
//! match for the rule to match:
//!
//! - `dst` / `src` address indexes: non-negated CIDR lists. Prefix lengths
//!   are grouped (greedy interval cover) so that each prefix is expanded by at
//!   most [`MAX_EXPAND_BITS`] bits to its group's length (a /17 in a /20 group
//!   becomes 8 /20 keys — controlled prefix expansion, Srinivasan & Varghese
//!   1999); each group is a hash map from the masked address to the list of
//!   rules, so a lookup costs one probe per group: /16../32 IPv4 rules form
//!   4 groups however many rules there are. Rules that are TCP/UDP with at
//!   most [`MAX_QUALIFIED_PORTS`] destination ports are keyed by (masked
//!   address, protocol, port) instead — tuple-space search (Srinivasan,
//!   Suri & Varghese 1999; Open vSwitch's classifier) over the most common
//!   rule shape, so that rules on the same subnet but other services are not
//!   even candidates. Such a group costs a second probe.
//! - `dport` / `sport` indexes: non-negated port lists of at most
//!   [`MAX_INDEXED_PORTS`] ports, expanded to single ports in a hash map
//!   (consulted only for TCP/UDP packets, the only ones ports can match).
//! - `ingress` / `egress` zone indexes: non-negated zone sets, a vector by
//!   zone id.
//! - `proto` index: a 256-entry table by protocol number.
//! - the *residual* list: rules with nothing indexable (only negations, only
//!   ct_state/flags/ICMP, wide port ranges, ...). These are candidates for
//!   every packet, so a chain made only of such rules is classified in linear
//!   time — the fallback is correct, not fast.
//!
//! A key match is exact for its field (expanded prefixes partition the net;
//! ports, zones and protocols are keyed one value at a time), so the lists
//! found for a packet contain every rule that can match it. Each list holds
//! the rules in ascending (priority) order as inline 36-byte `Quick`
//! records (rule index plus the fields that have a flat form: protocol,
//! ct_state, family, one port range per direction, one IPv4 net per
//! direction, one zone per direction). `classify` walks each list until it
//! reaches an index at or above the best match found so far; a candidate is
//! rejected by its quick check, accepted by it when the quick record plus the
//! key decide the rule exactly (`EXACT`), and otherwise checked with
//! [`linear::rule_matches`] — the reference itself, so the slow path cannot
//! drift from it. The lowest matching index wins: the linear first match. An
//! empty non-negated list (no nets, no zones, no ports) can never match, so
//! such a rule is filed under that field with no keys.
//!
//! # Choosing the index: plans measured on the rules
//!
//! Which field is best depends on the chain: per-host rules sharing a few
//! service ports want the address index, per-service rules on one big subnet
//! want the port index. [`Classifier::compile`] builds one classifier per
//! preference order in `PLANS` (addresses first, ports first, smallest
//! estimated coverage) and keeps the one with the least work — probes made
//! plus candidates listed — over inputs built from the rules' own values
//! (`sample_inputs`, at most `MAX_SAMPLES`). Within a plan a rule is filed
//! under the first field in the order whose estimated coverage is at most
//! `SELECTIVE` (so rules share indexes and probes), else under the field
//! with the smallest coverage. Compile time (three builds, release): about
//! 4 ms for 1,000 rules and 90 ms for 10,000.
//!
//! # Cost
//!
//! Per packet: one or two hash probes per address group in use (usually
//! 2–5 per family), at most two port probes, two vector reads, one table
//! read, then the candidates — the rules whose indexed key matches, i.e. the
//! few rules on the packet's subnet *and* service, not the chain length.
//! Measured with `benches/classify.rs` on a 2-core KVM guest shared with
//! other jobs, ns per classification. "min" is the fastest of 200
//! interleaved rounds of 20x1,024 packets (the least disturbed figure, printed
//! by the bench); "criterion" is criterion's mean, which scatters by tens of
//! percent from run to run on the loaded machine:
//!
//! | shape                                   | 10 rules | 1,000 | 10,000 | 10k/10 |
//! |-----------------------------------------|---------:|------:|-------:|-------:|
//! | `ports` (ports from 1..65000), min      |     14.1 |  15.4 |   18.8 |   1.33 |
//! | `services` (20 service ports), min      |     15.3 |  23.3 |   26.4 |   1.73 |
//! | `ports`, criterion                      |     14.0 |  14.3 |   18.8 |   1.34 |
//! | `services`, criterion                   |     20.2 |  25.1 |   22.9 |   1.13 |
//! | linear reference, `ports`, criterion    |       40 | 7,200 | 110,000|  2,700 |
//!
//! Re-measured in session 3 (load ~1), before / after the filter also
//! covers (address, service) keys: `services` min 12.9 / 26.7 / 29.6 ns
//! (ratio 2.30) -> 13.0 / 23.1 / 25.4 ns (1.95; 1.87 in a second run),
//! criterion 11.8 / 20.1 / 23.7 µs per 1,024 (1.98) -> 11.4 / 21.6 /
//! 22.2 (1.95); `ports` min 12.5 / 14.3 / 18.2 ns (1.46), criterion 1.18.
//! The random half of the `services` packets (a random port to an address
//! of 10/8) now skips the qualified probe of a group holding the address but
//! not the service.
//!
//! The `services` 10-rule chain is served by the port plan (few rules per
//! port) and the larger ones by the qualified address index, hence the step
//! from 10 to 1,000 and the nearly flat cost from 1,000 to 10,000. Without
//! the per-group address filter the `services` 10,000-rule case cost 35 ns
//! (4 probes into ~3 MB of tables); without qualified keys, 65 ns (about 5
//! candidates per packet on a dense /8). Memory for 10,000 `services` rules:
//! ~200k keys and ~200k 36-byte list entries (about 10 MB); each indexed value
//! is expanded at most 16x (prefix) x 16 (qualified ports), or 256x for a
//! port index.
//!
//! # Hashing
//!
//! The tables are filled only from the configuration and never change after
//! `compile`, so a packet cannot lengthen a probe sequence; still, following
//! the project rule that hashes over packet data are keyed, the hasher is a
//! folded 64x64->128-bit multiply (as in foldhash/aHash's fallback) keyed with
//! random keys drawn from `std`'s `RandomState` at compile time. Classification
//! itself is deterministic: the result never depends on the key.
//!
//! [`linear::evaluate`]: super::linear::evaluate
//! [`linear::rule_matches`]: super::linear::rule_matches

use super::l7::L7Name;
use super::linear::{has_ports, rule_matches};
use super::model::{ChainDef, Decision, Rule};
use super::MatchInput;
use hashbrown::HashMap;
use ipnetwork::IpNetwork;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// At most this many bits of prefix expansion (a prefix becomes at most 2^4 =
/// 16 keys). 4 keeps /16../32 rules in 4 groups (16-20, 21-25, 26-30, 31-32)
/// while bounding memory at 16x; measured in `benches/classify.rs`.
pub const MAX_EXPAND_BITS: u8 = 4;

/// An address rule with at most this many destination ports is keyed by
/// (address, protocol, port), see `qual_codes`. 16 covers single ports and
/// the usual small ranges while bounding the key expansion at 16x.
pub const MAX_QUALIFIED_PORTS: u32 = 16;

/// Address filter size per group: 8 bits per distinct key, rounded up to a
/// power of two (a one-hash filter then passes about 1/8 of absent keys).
const FILTER_BITS_PER_KEY: usize = 8;

/// At most 2^21 bits (256 KiB) of filter per group: half of this machine's
/// 2 MiB L2, for ~260k keys; more keys only raise the pass rate.
const MAX_FILTER_BITS: usize = 1 << 21;

/// A port list with more ports than this is not indexed by port (it would be
/// expanded into this many hash keys). 256 covers the usual small ranges
/// (e.g. 6000-6063) while keeping a rule's port entries within 1 KiB.
pub const MAX_INDEXED_PORTS: u32 = 256;

/// A field whose match is estimated to cover at most this share of packets
/// (a /12 prefix, 16 ports) is selective enough: the first such field in the
/// order dst, src, dport, sport, ingress, egress, proto is used.
const SELECTIVE: f64 = 1.0 / 4096.0;

/// Estimated share of packets in one zone, used only to choose a rule's index
/// (a gateway typically has a handful of zones with traffic).
const ZONE_SHARE: f64 = 1.0 / 16.0;

/// Estimated share of packets with one given protocol (TCP, UDP and ICMP
/// dominate), used only to choose a rule's index.
const PROTO_SHARE: f64 = 1.0 / 4.0;

/// A slice of the flat rule-index storage.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// Which index a rule is filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Dst,
    Src,
    Dport,
    Sport,
    Ingress,
    Egress,
    Proto,
    Residual,
}

/// A keyed `BuildHasher` (see the module docs).
#[derive(Debug, Clone)]
struct KeyedState {
    k0: u64,
    k1: u64,
}

impl KeyedState {
    fn random() -> Self {
        let s = std::collections::hash_map::RandomState::new();
        KeyedState {
            k0: s.hash_one(0x243f_6a88_85a3_08d3_u64),
            // Odd, so the multiply is a bijection on the low bits.
            k1: s.hash_one(0x1319_8a2e_0370_7344_u64) | 1,
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            h: self.k0,
            k: self.k1,
        }
    }
}

#[derive(Debug, Clone)]
struct KeyedHasher {
    h: u64,
    k: u64,
}

impl KeyedHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        let p = u128::from(self.h ^ v) * u128::from(self.k);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.mix(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.mix(v as u64);
        self.mix((v >> 64) as u64);
    }
}

/// An address-family-specific integer view of addresses.
trait AddrBits: Copy + Eq + std::hash::Hash + std::fmt::Debug {
    fn mask(len: u8) -> Self;
    fn and(self, other: Self) -> Self;
    /// `self | (i << (BITS - len))`: the `i`-th sub-prefix of length `len`.
    fn with_sub(self, i: u32, len: u8) -> Self;
}

impl AddrBits for u32 {
    fn mask(len: u8) -> Self {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        }
    }
    fn and(self, other: Self) -> Self {
        self & other
    }
    fn with_sub(self, i: u32, len: u8) -> Self {
        // Only called with 1 <= len <= 32 (len > the expanded prefix's length).
        self | i.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }
}

impl AddrBits for u128 {
    fn mask(len: u8) -> Self {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len.min(128)))
        }
    }
    fn and(self, other: Self) -> Self {
        self & other
    }
    fn with_sub(self, i: u32, len: u8) -> Self {
        self | u128::from(i).checked_shl(128 - u32::from(len)).unwrap_or(0)
    }
}

/// One prefix-length group: every prefix in it was expanded to `len` bits.
#[derive(Debug, Clone)]
struct Group<A: AddrBits> {
    mask: A,
    /// A one-hash Bloom filter over the group's keys, both maps: masked
    /// addresses (`map`) and (masked address, qual code) pairs (`qmap`). A
    /// clear bit proves the key absent, saving that map's probe: a packet
    /// whose address is in the group but whose service is not skips the
    /// qualified probe too. Sized at [`FILTER_BITS_PER_KEY`] bits per key, so
    /// about 1/8 of absent keys pass; it stays in L1/L2 while the maps may
    /// not.
    filter: Vec<u64>,
    /// `64 - log2(filter bits)`: the filter index is the hash's top bits.
    filter_shift: u32,
    /// Rules keyed by address only.
    map: HashMap<A, Span, KeyedState>,
    /// Rules keyed by address, protocol and destination port ([`qual_codes`]).
    qmap: HashMap<(A, u32), Span, KeyedState>,
}

impl<A: AddrBits> Group<A> {
    /// False when the filter proves the key with hash `h` absent.
    #[inline(always)]
    fn may_hold(&self, h: u64) -> bool {
        let i = (h >> self.filter_shift) as usize;
        self.filter
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Groups of one family, searched one or two hash probes each.
#[derive(Debug, Clone)]
struct FamilyIndex<A: AddrBits> {
    groups: Vec<Group<A>>,
}

type AddrBuilder<K> = HashMap<K, Vec<u32>, KeyedState>;
/// A group's two builders: by address, and by (address, qual code).
type GroupBuilder<A> = (AddrBuilder<A>, AddrBuilder<(A, u32)>);

impl<A: AddrBits> FamilyIndex<A> {
    /// `entries`: (network bits, prefix length, rule), rules ascending.
    fn build(
        entries: &[(A, u8, u32)],
        rules: &[Rule],
        flat: &mut FlatBuilder<'_>,
        hasher: &KeyedState,
    ) -> Self {
        let mut lens: Vec<u8> = entries.iter().map(|e| e.1).collect();
        lens.sort_unstable();
        lens.dedup();
        // Greedy interval cover: the smallest uncovered length l opens a group
        // whose length is the longest present length <= l + MAX_EXPAND_BITS.
        let mut group_lens: Vec<u8> = Vec::new();
        let mut i = 0;
        while let Some(&l) = lens.get(i) {
            let limit = l.saturating_add(MAX_EXPAND_BITS);
            let mut t = l;
            while let Some(&n) = lens.get(i) {
                if n > limit {
                    break;
                }
                t = n;
                i += 1;
            }
            group_lens.push(t);
        }
        let mut builders: Vec<GroupBuilder<A>> = group_lens
            .iter()
            .map(|_| {
                (
                    HashMap::with_hasher(hasher.clone()),
                    HashMap::with_hasher(hasher.clone()),
                )
            })
            .collect();
        let push = |list: &mut Vec<u32>, rule: u32| {
            if list.last() != Some(&rule) {
                list.push(rule);
            }
        };
        for &(bits, len, rule) in entries {
            let Some(g) = group_lens.iter().position(|&t| t >= len) else {
                continue; // unreachable: every length is covered by a group
            };
            let (Some(&t), Some((map, qmap))) = (group_lens.get(g), builders.get_mut(g)) else {
                continue;
            };
            let quals = rules.get(rule as usize).and_then(qual_codes);
            let base = bits.and(A::mask(len));
            let n = 1u32 << (t - len).min(MAX_EXPAND_BITS);
            for sub in 0..n {
                let key = if t == len {
                    base
                } else {
                    base.with_sub(sub, t)
                };
                match &quals {
                    Some(codes) => {
                        for &c in codes {
                            push(qmap.entry((key, c)).or_default(), rule);
                        }
                    }
                    None => push(map.entry(key).or_default(), rule),
                }
            }
        }
        let groups = group_lens
            .iter()
            .zip(builders)
            .map(|(&t, (b, qb))| {
                let addrs = b.len() + qb.len();
                let bits = (addrs * FILTER_BITS_PER_KEY)
                    .next_power_of_two()
                    .clamp(64, MAX_FILTER_BITS);
                let filter_shift = 64 - bits.trailing_zeros();
                let mut filter = vec![0u64; bits / 64];
                let hashes = b
                    .keys()
                    .map(|k| hasher.hash_one(k))
                    .chain(qb.keys().map(|k| hasher.hash_one(k)));
                for h in hashes {
                    let i = (h >> filter_shift) as usize;
                    if let Some(w) = filter.get_mut(i / 64) {
                        *w |= 1 << (i % 64);
                    }
                }
                Group {
                    mask: A::mask(t),
                    filter,
                    filter_shift,
                    map: freeze(b, flat, hasher),
                    qmap: freeze(qb, flat, hasher),
                }
            })
            .collect();
        FamilyIndex { groups }
    }

    /// Calls `f` with every list for `addr`; `qual` is the packet's
    /// [`qual_code`] (None when it has no ports).
    #[inline]
    fn lookup(&self, addr: A, qual: Option<u32>, mut f: impl FnMut(Span)) {
        for g in &self.groups {
            let key = addr.and(g.mask);
            if !g.map.is_empty() && g.may_hold(g.map.hasher().hash_one(key)) {
                if let Some(s) = g.map.get(&key) {
                    f(*s);
                }
            }
            if let Some(q) = qual {
                if !g.qmap.is_empty() && g.may_hold(g.qmap.hasher().hash_one((key, q))) {
                    if let Some(s) = g.qmap.get(&(key, q)) {
                        f(*s);
                    }
                }
            }
        }
    }

    /// Hash probes a lookup makes.
    fn probes(&self, qual: bool) -> usize {
        self.groups
            .iter()
            .map(|g| usize::from(!g.map.is_empty()) + usize::from(qual && !g.qmap.is_empty()))
            .sum()
    }

    fn entries(&self) -> usize {
        self.groups.iter().map(|g| g.map.len() + g.qmap.len()).sum()
    }
}

/// An index over one address field (both families).
#[derive(Debug, Clone)]
struct AddrIndex {
    v4: FamilyIndex<u32>,
    v6: FamilyIndex<u128>,
}

impl AddrIndex {
    fn build(
        entries: &[(IpNetwork, u32)],
        rules: &[Rule],
        flat: &mut FlatBuilder<'_>,
        hasher: &KeyedState,
    ) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &(net, rule) in entries {
            match net {
                IpNetwork::V4(n) => v4.push((u32::from(n.ip()), n.prefix(), rule)),
                IpNetwork::V6(n) => v6.push((u128::from(n.ip()), n.prefix(), rule)),
            }
        }
        AddrIndex {
            v4: FamilyIndex::build(&v4, rules, flat, hasher),
            v6: FamilyIndex::build(&v6, rules, flat, hasher),
        }
    }

    #[inline]
    fn lookup(&self, addr: IpAddr, qual: Option<u32>, f: impl FnMut(Span)) {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a), qual, f),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a), qual, f),
        }
    }

    fn probes(&self, addr: IpAddr, qual: bool) -> usize {
        match addr {
            IpAddr::V4(_) => self.v4.probes(qual),
            IpAddr::V6(_) => self.v6.probes(qual),
        }
    }
}

/// A rule whose protocol is TCP or UDP and whose destination ports are a
/// non-negated list of at most [`MAX_QUALIFIED_PORTS`] ports is keyed in the
/// address indexes by (address, protocol, port) — tuple-space search over
/// the most common rule shape, "this subnet, this service" — so that rules
/// sharing a subnet but not a service are not candidates. Returns the
/// [`qual_code`]s to key it under.
fn qual_codes(rule: &Rule) -> Option<Vec<u32>> {
    let proto = rule.proto.filter(|p| has_ports(*p))?;
    let p = rule.dport.as_ref().filter(|p| !p.negate)?;
    let n: u32 = p.ranges.iter().map(|&(lo, hi)| port_count(lo, hi)).sum();
    if n > MAX_QUALIFIED_PORTS {
        return None;
    }
    let mut codes: Vec<u32> = p
        .ranges
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi)
        .map(|port| qual_code(proto, port))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    Some(codes)
}

/// Protocol and destination port as one key component.
#[inline]
fn qual_code(proto: u8, dport: u16) -> u32 {
    (u32::from(proto) << 16) | u32::from(dport)
}

fn port_count(lo: u16, hi: u16) -> u32 {
    if hi >= lo {
        u32::from(hi - lo) + 1
    } else {
        0
    }
}

/// Moves the builder's lists into `flat` and keeps only their spans.
fn freeze<K: std::hash::Hash + Eq>(
    b: HashMap<K, Vec<u32>, KeyedState>,
    flat: &mut FlatBuilder<'_>,
    hasher: &KeyedState,
) -> HashMap<K, Span, KeyedState> {
    let mut out = HashMap::with_capacity_and_hasher(b.len(), hasher.clone());
    for (k, v) in b {
        out.insert(k, push_list(flat, &v));
    }
    out
}

fn push_list(flat: &mut FlatBuilder<'_>, v: &[u32]) -> Span {
    let s = Span {
        start: flat.out.len() as u32,
        len: v.len() as u32,
    };
    flat.out
        .extend(v.iter().filter_map(|&i| flat.quick.get(i as usize)));
    s
}

/// Collects the candidate lists: each entry is the rule's `Quick` form,
/// copied inline so that a list is checked with sequential reads.
struct FlatBuilder<'a> {
    quick: &'a [Quick],
    out: Vec<Quick>,
}

/// A rule's fields in a flat 32-byte form, checked before (and, when `EXACT`,
/// instead of) [`rule_matches`]: every condition here is implied by the rule,
/// so a failed quick check proves the rule does not match. `EXACT` says the
/// quick check plus the index key the rule was found under decide the rule
/// exactly (every field is either represented here, or the indexed field,
/// whose key match is exact: expanded prefixes partition the net, ports and
/// zones are keyed one by one).
#[derive(Debug, Clone, Copy, Default)]
struct Quick {
    /// The rule's index in the chain.
    rule: u32,
    src_net: u32,
    src_mask: u32,
    dst_net: u32,
    dst_mask: u32,
    dport: (u16, u16),
    sport: (u16, u16),
    ingress: u16,
    egress: u16,
    flags: u8,
    proto: u8,
    ct: u8,
    /// 0: any; else must equal the packet's IP version.
    family: u8,
}

const Q_PROTO_ANY: u8 = 1;
const Q_CT_ANY: u8 = 2;
const Q_NEEDS_PORTS: u8 = 4;
const Q_SRC4: u8 = 8;
const Q_DST4: u8 = 16;
const Q_INGRESS: u8 = 32;
const Q_EGRESS: u8 = 64;
const Q_EXACT: u8 = 128;

impl Quick {
    fn new(idx: u32, rule: &Rule, indexed: Field) -> Quick {
        let mut q = Quick {
            rule: idx,
            dport: (0, u16::MAX),
            sport: (0, u16::MAX),
            ..Quick::default()
        };
        let mut exact = true;
        if let Some(f) = rule.family {
            // Some(0) matches nothing in the reference; 0 means "any" here.
            q.family = if f == 0 { u8::MAX } else { f };
        }
        match rule.proto {
            Some(p) => q.proto = p,
            None => q.flags |= Q_PROTO_ANY,
        }
        match rule.ct_state {
            Some(c) => q.ct = c.0,
            None => q.flags |= Q_CT_ANY,
        }
        if rule.tcp_flags.is_some() || rule.icmp_type.is_some() || rule.icmp_code.is_some() {
            exact = false;
        }
        if rule.sport.is_some() || rule.dport.is_some() {
            q.flags |= Q_NEEDS_PORTS;
        }
        let mut ports = |p: Option<&super::PortMatch>, f: Field, out: &mut (u16, u16)| {
            let Some(p) = p else { return };
            match p.ranges.as_slice() {
                [r] if !p.negate => *out = *r,
                _ => {
                    if !p.negate {
                        // The hull of the ranges: implied, not exact.
                        let lo = p.ranges.iter().map(|r| r.0).min().unwrap_or(1);
                        let hi = p.ranges.iter().map(|r| r.1).max().unwrap_or(0);
                        *out = (lo, hi);
                    }
                    exact &= indexed == f;
                }
            }
        };
        ports(rule.sport.as_ref(), Field::Sport, &mut q.sport);
        ports(rule.dport.as_ref(), Field::Dport, &mut q.dport);
        let mut addr = |a: Option<&super::AddrMatch>, f: Field, flag: u8| -> Option<(u32, u32)> {
            let a = a?;
            match a.nets.as_slice() {
                [IpNetwork::V4(n)] if !a.negate => {
                    q.flags |= flag;
                    let mask = <u32 as AddrBits>::mask(n.prefix());
                    Some((u32::from(n.ip()) & mask, mask))
                }
                _ => {
                    exact &= indexed == f;
                    None
                }
            }
        };
        if let Some((net, mask)) = addr(rule.src.as_ref(), Field::Src, Q_SRC4) {
            (q.src_net, q.src_mask) = (net, mask);
        }
        if let Some((net, mask)) = addr(rule.dst.as_ref(), Field::Dst, Q_DST4) {
            (q.dst_net, q.dst_mask) = (net, mask);
        }
        let mut zone = |z: Option<&super::ZoneMatch>, f: Field, flag: u8| -> Option<u16> {
            let z = z?;
            let mut it = z.zones.iter();
            match (it.next(), it.next()) {
                (Some(one), None) if !z.negate => {
                    q.flags |= flag;
                    Some(one.0)
                }
                _ => {
                    exact &= indexed == f;
                    None
                }
            }
        };
        if let Some(id) = zone(rule.ingress.as_ref(), Field::Ingress, Q_INGRESS) {
            q.ingress = id;
        }
        if let Some(id) = zone(rule.egress.as_ref(), Field::Egress, Q_EGRESS) {
            q.egress = id;
        }
        if exact {
            q.flags |= Q_EXACT;
        }
        q
    }

    /// Conditions implied by the rule (all of them when `EXACT`, given the key).
    #[inline]
    fn check(&self, m: &MatchInput) -> bool {
        let f = self.flags;
        if f & Q_PROTO_ANY == 0 && self.proto != m.proto {
            return false;
        }
        if f & Q_CT_ANY == 0 && self.ct & m.ct_state == 0 {
            return false;
        }
        if self.family != 0 && self.family != super::linear::ip_version(m.src) {
            return false;
        }
        if f & Q_NEEDS_PORTS != 0
            && (!has_ports(m.proto)
                || m.dport < self.dport.0
                || m.dport > self.dport.1
                || m.sport < self.sport.0
                || m.sport > self.sport.1)
        {
            return false;
        }
        if f & Q_INGRESS != 0 && m.ingress.0 != self.ingress {
            return false;
        }
        if f & Q_EGRESS != 0 && m.egress.0 != self.egress {
            return false;
        }
        if f & Q_SRC4 != 0 && !v4_in(m.src, self.src_net, self.src_mask) {
            return false;
        }
        if f & Q_DST4 != 0 && !v4_in(m.dst, self.dst_net, self.dst_mask) {
            return false;
        }
        true
    }
}

#[inline]
fn v4_in(a: IpAddr, net: u32, mask: u32) -> bool {
    match a {
        IpAddr::V4(a) => u32::from(a) & mask == net,
        IpAddr::V6(_) => false,
    }
}

/// Sizes of a compiled classifier (for logs, docs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassifierStats {
    /// Rules in the chain.
    pub rules: usize,
    /// Hash probes on the address indexes for an IPv4 / IPv6 packet
    /// (`dst` groups + `src` groups).
    pub v4_groups: usize,
    pub v6_groups: usize,
    /// Keys in all indexes.
    pub keys: usize,
    /// Rule indexes stored in all lists.
    pub list_entries: usize,
    /// Rules checked for every packet.
    pub residual: usize,
}

/// A chain compiled for fast first-match classification (see the module docs).
#[derive(Debug, Clone)]
pub struct Classifier {
    chain: ChainDef,
    /// `(action, log)` by rule index: what a match decides, kept apart from
    /// the (large) rules so that deciding touches one small array.
    actions: Vec<(super::Action, bool)>,
    flat: Vec<Quick>,
    dst: AddrIndex,
    src: AddrIndex,
    dport: HashMap<u16, Span, KeyedState>,
    sport: HashMap<u16, Span, KeyedState>,
    ingress: Vec<Span>,
    egress: Vec<Span>,
    proto: Box<[Span; 256]>,
    residual: Span,
}

impl Classifier {
    /// Compiles `chain`: builds one classifier per preference order in
    /// `PLANS`, estimates each one's work on inputs drawn from the rules
    /// themselves (`sample_inputs`) and keeps the cheapest. Never fails: anything the indexes cannot represent
    /// goes to the residual list.
    pub fn compile(chain: &ChainDef) -> Classifier {
        let samples = sample_inputs(chain);
        let mut best: Option<(u64, Classifier)> = None;
        for order in PLANS {
            let c = Classifier::compile_plan(chain, order);
            let cost: u64 = samples.iter().map(|m| c.work(m)).sum();
            if best.as_ref().is_none_or(|(b, _)| cost < *b) {
                best = Some((cost, c));
            }
            if chain.rules.is_empty() {
                break;
            }
        }
        match best {
            Some((_, c)) => c,
            None => Classifier::compile_plan(chain, &[]),
        }
    }

    /// Compiles with one index preference order.
    fn compile_plan(chain: &ChainDef, order: &[Field]) -> Classifier {
        let hasher = KeyedState::random();
        let mut dst_entries = Vec::new();
        let mut src_entries = Vec::new();
        let mut dport: HashMap<u16, Vec<u32>, KeyedState> = HashMap::with_hasher(hasher.clone());
        let mut sport: HashMap<u16, Vec<u32>, KeyedState> = HashMap::with_hasher(hasher.clone());
        let mut ingress: Vec<Vec<u32>> = Vec::new();
        let mut egress: Vec<Vec<u32>> = Vec::new();
        let mut proto: Vec<Vec<u32>> = vec![Vec::new(); 256];
        let mut residual = Vec::new();
        let mut quick = Vec::with_capacity(chain.rules.len());

        for (i, rule) in chain.rules.iter().enumerate() {
            let idx = i as u32;
            let field = choose_field(rule, order);
            quick.push(Quick::new(idx, rule, field));
            match field {
                Field::Dst => {
                    if let Some(a) = &rule.dst {
                        dst_entries.extend(a.nets.iter().map(|n| (*n, idx)));
                    }
                }
                Field::Src => {
                    if let Some(a) = &rule.src {
                        src_entries.extend(a.nets.iter().map(|n| (*n, idx)));
                    }
                }
                Field::Dport => add_ports(&mut dport, rule.dport.as_ref(), idx),
                Field::Sport => add_ports(&mut sport, rule.sport.as_ref(), idx),
                Field::Ingress => add_zones(&mut ingress, rule.ingress.as_ref(), idx),
                Field::Egress => add_zones(&mut egress, rule.egress.as_ref(), idx),
                Field::Proto => {
                    if let Some(l) = rule.proto.and_then(|p| proto.get_mut(usize::from(p))) {
                        l.push(idx);
                    }
                }
                Field::Residual => residual.push(idx),
            }
        }

        let mut flat = FlatBuilder {
            quick: &quick,
            out: Vec::new(),
        };
        let residual = push_list(&mut flat, &residual);
        let dst = AddrIndex::build(&dst_entries, &chain.rules, &mut flat, &hasher);
        let src = AddrIndex::build(&src_entries, &chain.rules, &mut flat, &hasher);
        let dport = freeze(dport, &mut flat, &hasher);
        let sport = freeze(sport, &mut flat, &hasher);
        let ingress = ingress.iter().map(|l| push_list(&mut flat, l)).collect();
        let egress = egress.iter().map(|l| push_list(&mut flat, l)).collect();
        let mut proto_spans = Box::new([Span::default(); 256]);
        for (s, l) in proto_spans.iter_mut().zip(&proto) {
            *s = push_list(&mut flat, l);
        }
        Classifier {
            chain: chain.clone(),
            actions: chain.rules.iter().map(|r| (r.action, r.log)).collect(),
            flat: flat.out,
            dst,
            src,
            dport,
            sport,
            ingress,
            egress,
            proto: proto_spans,
            residual,
        }
    }

    /// The source chain this was compiled from.
    pub fn chain(&self) -> &ChainDef {
        &self.chain
    }

    /// Classifies `m`: the first matching rule, else the policy — exactly
    /// [`linear::evaluate`](super::linear::evaluate).
    pub fn classify(&self, m: &MatchInput) -> Decision {
        self.classify_with(m, |_| true)
    }

    /// Classifies `m` with the flow's L7 name known — exactly
    /// [`linear::evaluate_named`](super::linear::evaluate_named): a candidate
    /// with L7 predicates that do not match the name is skipped.
    pub fn classify_named(&self, m: &MatchInput, name: Option<&L7Name>) -> Decision {
        self.classify_with(m, |i| {
            self.chain
                .rules
                .get(i as usize)
                .is_none_or(|r| r.l7_matches(name))
        })
    }

    /// The classification with `ok(rule)` as an extra condition on the
    /// candidates (`|_| true` for [`Classifier::classify`], which then
    /// compiles to the plain search).
    #[inline(always)]
    fn classify_with(&self, m: &MatchInput, ok: impl Fn(u32) -> bool) -> Decision {
        let ok = &ok;
        let mut best = u32::MAX;
        self.scan(self.residual, m, &mut best, ok);
        let qual = has_ports(m.proto).then(|| qual_code(m.proto, m.dport));
        self.dst
            .lookup(m.dst, qual, |s| self.scan(s, m, &mut best, ok));
        self.src
            .lookup(m.src, qual, |s| self.scan(s, m, &mut best, ok));
        if has_ports(m.proto) {
            if !self.dport.is_empty() {
                if let Some(s) = self.dport.get(&m.dport) {
                    self.scan(*s, m, &mut best, ok);
                }
            }
            if !self.sport.is_empty() {
                if let Some(s) = self.sport.get(&m.sport) {
                    self.scan(*s, m, &mut best, ok);
                }
            }
        }
        if let Some(s) = self.ingress.get(usize::from(m.ingress.0)) {
            self.scan(*s, m, &mut best, ok);
        }
        if let Some(s) = self.egress.get(usize::from(m.egress.0)) {
            self.scan(*s, m, &mut best, ok);
        }
        self.scan(self.proto[usize::from(m.proto)], m, &mut best, ok);

        match self.actions.get(best as usize) {
            Some(&(action, log)) => Decision {
                action,
                rule: Some(best),
                log,
            },
            None => Decision {
                action: self.chain.policy,
                rule: None,
                log: false,
            },
        }
    }

    /// Checks the candidates in `s` (ascending) below `best`; records the first match.
    #[inline]
    fn scan(&self, s: Span, m: &MatchInput, best: &mut u32, ok: &impl Fn(u32) -> bool) {
        let start = s.start as usize;
        let Some(list) = self.flat.get(start..start + s.len as usize) else {
            return;
        };
        for q in list {
            if q.rule >= *best {
                return;
            }
            if !q.check(m) {
                continue;
            }
            if q.flags & Q_EXACT != 0
                || self
                    .chain
                    .rules
                    .get(q.rule as usize)
                    .is_some_and(|r| rule_matches(r, m))
            {
                if !ok(q.rule) {
                    continue;
                }
                *best = q.rule;
                return;
            }
        }
    }

    /// Work estimate for `m`: probes made plus candidates listed (the
    /// candidates' lists in full, an upper bound of what `classify` checks).
    fn work(&self, m: &MatchInput) -> u64 {
        let mut n = u64::from(self.residual.len);
        let mut add = |s: Span| n += u64::from(s.len);
        let qual = has_ports(m.proto).then(|| qual_code(m.proto, m.dport));
        self.dst.lookup(m.dst, qual, &mut add);
        self.src.lookup(m.src, qual, &mut add);
        if has_ports(m.proto) {
            if let Some(s) = self.dport.get(&m.dport) {
                add(*s);
            }
            if let Some(s) = self.sport.get(&m.sport) {
                add(*s);
            }
        }
        if let Some(s) = self.ingress.get(usize::from(m.ingress.0)) {
            add(*s);
        }
        if let Some(s) = self.egress.get(usize::from(m.egress.0)) {
            add(*s);
        }
        add(self.proto[usize::from(m.proto)]);
        let probes = self.dst.probes(m.dst, qual.is_some())
            + self.src.probes(m.src, qual.is_some())
            + usize::from(!self.dport.is_empty())
            + usize::from(!self.sport.is_empty());
        n + probes as u64
    }

    /// Sizes of the compiled indexes.
    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            rules: self.chain.rules.len(),
            v4_groups: self.dst.v4.groups.len() + self.src.v4.groups.len(),
            v6_groups: self.dst.v6.groups.len() + self.src.v6.groups.len(),
            keys: self.dst.v4.entries()
                + self.dst.v6.entries()
                + self.src.v4.entries()
                + self.src.v6.entries()
                + self.dport.len()
                + self.sport.len(),
            list_entries: self.flat.len(),
            residual: self.residual.len as usize,
        }
    }
}

fn add_ports(map: &mut HashMap<u16, Vec<u32>, KeyedState>, p: Option<&super::PortMatch>, idx: u32) {
    let Some(p) = p else { return };
    for &(lo, hi) in &p.ranges {
        for port in lo..=hi {
            let l = map.entry(port).or_default();
            if l.last() != Some(&idx) {
                l.push(idx);
            }
        }
    }
}

fn add_zones(v: &mut Vec<Vec<u32>>, z: Option<&super::ZoneMatch>, idx: u32) {
    let Some(z) = z else { return };
    for zone in z.zones.iter() {
        let i = usize::from(zone.0);
        if v.len() <= i {
            v.resize(i + 1, Vec::new());
        }
        if let Some(l) = v.get_mut(i) {
            if l.last() != Some(&idx) {
                l.push(idx);
            }
        }
    }
}

/// Index preference orders tried by [`Classifier::compile`]: addresses first
/// (rules about hosts and subnets), ports first (rules about services), and
/// pure estimated coverage.
const PLANS: [&[Field]; 3] = [
    &[
        Field::Dst,
        Field::Src,
        Field::Dport,
        Field::Sport,
        Field::Ingress,
        Field::Egress,
        Field::Proto,
    ],
    &[
        Field::Dport,
        Field::Sport,
        Field::Dst,
        Field::Src,
        Field::Ingress,
        Field::Egress,
        Field::Proto,
    ],
    &[],
];

/// One classifier per plan (for tests: each plan must be exact).
#[cfg(test)]
pub(crate) fn all_plans(chain: &ChainDef) -> Vec<Classifier> {
    PLANS
        .iter()
        .map(|o| Classifier::compile_plan(chain, o))
        .collect()
}

/// At most this many sample inputs are drawn from the rules to compare plans
/// (evenly spaced over the chain), bounding compile time at a few ms.
const MAX_SAMPLES: usize = 4096;

/// One input per (sampled) rule, built from the first value of each of its
/// fields, so that the sample follows where the rules are dense.
fn sample_inputs(chain: &ChainDef) -> Vec<MatchInput> {
    let n = chain.rules.len();
    let step = n.div_ceil(MAX_SAMPLES).max(1);
    let first_addr = |a: Option<&super::AddrMatch>, other_v6: bool| -> IpAddr {
        match a.and_then(|a| a.nets.first()) {
            Some(net) => net.ip(),
            None if other_v6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    };
    let first_port =
        |p: Option<&super::PortMatch>| p.and_then(|p| p.ranges.first()).map_or(0, |r| r.0);
    let first_zone = |z: Option<&super::ZoneMatch>| {
        z.and_then(|z| z.zones.iter().next())
            .unwrap_or(crate::zone::ZoneId::TUN)
    };
    chain
        .rules
        .iter()
        .step_by(step)
        .map(|r| {
            let v6 = r.family == Some(6);
            MatchInput {
                ingress: first_zone(r.ingress.as_ref()),
                egress: first_zone(r.egress.as_ref()),
                src: first_addr(r.src.as_ref(), v6),
                dst: first_addr(r.dst.as_ref(), v6),
                proto: r.proto.unwrap_or(super::linear::PROTO_TCP),
                sport: first_port(r.sport.as_ref()),
                dport: first_port(r.dport.as_ref()),
                icmp: None,
                tcp_flags: None,
                ct_state: super::CtStateMask::NEW,
            }
        })
        .collect()
}

/// Picks the first field in `order` that is `SELECTIVE`; else the field
/// whose match is estimated to cover the smallest share of packets (ties: the
/// order of [`Field`]); `Residual` when nothing is indexable.
fn choose_field(rule: &Rule, order: &[Field]) -> Field {
    let mut best = (Field::Residual, 1.0f64);
    let mut consider = |f: Field, cov: Option<f64>| {
        if let Some(c) = cov {
            if c < best.1 {
                best = (f, c);
            }
        }
    };
    let addr_cov = |a: &super::AddrMatch| {
        (!a.negate).then(|| {
            a.nets
                .iter()
                .map(|n| 2f64.powi(-i32::from(n.prefix())))
                .sum::<f64>()
        })
    };
    let port_cov = |p: &super::PortMatch| {
        if p.negate {
            return None;
        }
        let n: u32 = p.ranges.iter().map(|&(lo, hi)| port_count(lo, hi)).sum();
        (n <= MAX_INDEXED_PORTS).then(|| f64::from(n) / 65536.0)
    };
    let zone_cov =
        |z: &super::ZoneMatch| (!z.negate).then(|| z.zones.iter().count() as f64 * ZONE_SHARE);
    let candidates = [
        (Field::Dst, rule.dst.as_ref().and_then(addr_cov)),
        (Field::Src, rule.src.as_ref().and_then(addr_cov)),
        (Field::Dport, rule.dport.as_ref().and_then(port_cov)),
        (Field::Sport, rule.sport.as_ref().and_then(port_cov)),
        (Field::Ingress, rule.ingress.as_ref().and_then(zone_cov)),
        (Field::Egress, rule.egress.as_ref().and_then(zone_cov)),
        (Field::Proto, rule.proto.map(|_| PROTO_SHARE)),
    ];
    // Every index in use costs probes on every packet, so a selective enough
    // field early in the order wins over a slightly more selective later one:
    // chains of destination rules then share one index.
    for f in order {
        if candidates
            .iter()
            .any(|(g, c)| g == f && c.is_some_and(|c| c <= SELECTIVE))
        {
            return *f;
        }
    }
    for (f, c) in candidates {
        consider(f, c);
    }
    best.0
}
