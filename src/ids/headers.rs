//! Address index of header rules: the rules whose addresses can fit a flow,
//! without testing every rule.
//!
//! Suricata groups signatures by protocol, direction and port into
//! "signature group heads" (`detect-engine-build.c`) so a packet looks up
//! its candidate list. The ET Open header-only rules (no content) all have
//! `any` ports, but most carry a list of single addresses on one side
//! (`tor.rules`, `ciarmy.rules`, `compromised.rules`: ~800 TCP rules of ten
//! addresses each), so this index is by address instead: a one-directional
//! rule whose source (else destination) set is made of narrow intervals
//! (at most `MAX_SPAN` + 1 addresses each) is found through those
//! intervals; every other rule (bidirectional, or wide on both sides such as
//! `$EXTERNAL_NET -> $HOME_NET`) is always a candidate.
//!
//! Promises: [`HeaderIndex::candidates`] returns, in rule order and without
//! repeats, a superset of the rules whose source and destination sets hold
//! the given addresses (a rule left out cannot fit); the caller still tests
//! each candidate in full. Work per lookup: a binary search per side plus
//! the intervals starting within `MAX_SPAN` below the address.

use super::rule::Signature;

/// Widest indexed interval, minus one: 256 addresses (an IPv4 /24). A lookup
/// scans the intervals starting up to this far below the address, so wider
/// intervals (e.g. whole networks) stay in the always-tested list.
const MAX_SPAN: u128 = 255;

/// (first address, last address, rule) sorted by first address.
type Spans = Vec<(u128, u128, u32)>;

/// Candidate header rules by source and destination address.
#[derive(Debug, Default)]
pub struct HeaderIndex {
    by_src: Spans,
    by_dst: Spans,
    /// Rules tested for every flow.
    rest: Vec<u32>,
}

fn narrow(iv: &[(u128, u128)]) -> bool {
    iv.iter().all(|&(lo, hi)| hi - lo <= MAX_SPAN)
}

impl HeaderIndex {
    /// Indexes `rules` (indices into `sigs`).
    pub fn new(rules: &[u32], sigs: &[Signature]) -> HeaderIndex {
        let mut ix = HeaderIndex::default();
        for &i in rules {
            let Some(s) = sigs.get(i as usize) else {
                continue;
            };
            let (src, dst) = (s.src.intervals(), s.dst.intervals());
            let side = if s.bidirectional {
                None
            } else if narrow(src) {
                Some((&mut ix.by_src, src))
            } else if narrow(dst) {
                Some((&mut ix.by_dst, dst))
            } else {
                None
            };
            match side {
                Some((spans, iv)) => spans.extend(iv.iter().map(|&(lo, hi)| (lo, hi, i))),
                None => ix.rest.push(i),
            }
        }
        ix.by_src.sort_unstable();
        ix.by_dst.sort_unstable();
        ix
    }

    /// The candidate rules for a packet from `src` to `dst` (address
    /// values), sorted, into `out` (cleared first).
    pub fn candidates(&self, src: u128, dst: u128, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.rest);
        for (spans, v) in [(&self.by_src, src), (&self.by_dst, dst)] {
            let from = spans.partition_point(|&(lo, _, _)| lo < v.saturating_sub(MAX_SPAN));
            for &(lo, hi, i) in spans.get(from..).unwrap_or(&[]) {
                if lo > v {
                    break;
                }
                if hi >= v {
                    out.push(i);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Number of distinct rules in the index.
    pub fn rule_count(&self) -> usize {
        let mut all: Vec<u32> = self
            .by_src
            .iter()
            .chain(&self.by_dst)
            .map(|x| x.2)
            .chain(self.rest.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::rule::set::addr_value;
    use crate::ids::rule::{parse_rule, Vars};

    fn sig(h: &str) -> Signature {
        parse_rule(
            &format!("alert {h} (msg:\"x\"; sid:1;)"),
            &Vars::suricata_defaults(),
        )
        .unwrap()
    }

    proptest::proptest! {
        /// Every rule whose addresses hold the packet's is a candidate.
        #[test]
        fn superset_of_fitting_rules(a in 0u8..6, b in 0u8..6, c in 0u8..6, d in 0u8..6) {
            let sigs: Vec<Signature> = [
                "ip [10.0.0.1,10.0.0.3] any -> any any",
                "ip 10.0.0.0/24 any -> [10.0.1.2,10.0.1.4] any",
                "ip any any -> 10.0.1.3 any",
                "ip 10.0.0.0/8 any -> 10.0.0.0/8 any",
                "ip [10.0.0.2,10.0.1.1] any <> 10.0.0.4 any",
                "ip !10.0.0.2 any -> 10.0.1.0/30 any",
                "ip [10.0.0.5,10.0.1.0/24] any -> any any",
            ]
            .iter()
            .map(|h| sig(h))
            .collect();
            let ix = HeaderIndex::new(&(0..sigs.len() as u32).collect::<Vec<_>>(), &sigs);
            proptest::prop_assert_eq!(ix.rule_count(), sigs.len());
            let src = addr_value(format!("10.0.{}.{}", a % 2, b).parse().unwrap());
            let dst = addr_value(format!("10.0.{}.{}", c % 2, d).parse().unwrap());
            let mut got = Vec::new();
            ix.candidates(src, dst, &mut got);
            proptest::prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            for (i, s) in sigs.iter().enumerate() {
                let fits = s.src.contains(src) && s.dst.contains(dst);
                let back = s.bidirectional && s.src.contains(dst) && s.dst.contains(src);
                if fits || back {
                    proptest::prop_assert!(got.contains(&(i as u32)), "rule {} left out", i);
                }
            }
            // The narrow rules not fitting are left out.
            proptest::prop_assert_eq!(got.contains(&0), s_has(&sigs[0], src, dst));
        }
    }

    fn s_has(s: &Signature, src: u128, dst: u128) -> bool {
        s.src.contains(src) && s.dst.contains(dst)
    }
}
