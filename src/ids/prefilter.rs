//! The multi-literal prefilter: every occurrence of every fast pattern in a
//! (lowercased) buffer, in one pass.
//!
//! Why not an Aho-Corasick DFA: with the whole ET Open set a buffer's group
//! holds ~1,700 patterns (~23 KB); the DFA over them is ~20k states × the
//! byte classes × 4 bytes, megabytes per group, and on payloads that leave
//! the hot states (compressed or encrypted bytes, varied HTML) nearly every
//! byte is a cache miss: 27 ns/byte measured on the benchmark mix
//! (0.3 Gbit/s). This is the hashed n-gram filter Hyperscan's FDR and the
//! Wu-Manber family use instead: a bit table small enough to stay in the
//! first-level caches says whether a pattern can start here, and only then
//! is the short list of patterns with that prefix compared.
//!
//! How: the patterns are split by length class L = min(len, 4). A rolling
//! 32-bit window holds the four bytes from the current position; a direct
//! 65,536-bit table of the first two bytes of every pattern of 2+ bytes is
//! the first stage (one lookup per byte), then, for each class, the first L
//! bytes are hashed (keyed multiplicative hash; L = 1, 2 index their table
//! directly) to a bit. A set bit leads to the sorted (gram, pattern) list:
//! the patterns whose first L bytes are those bytes are compared in full at
//! that position. Each occurrence of each pattern that
//! lies wholly inside the buffer is reported once: the same set as
//! Aho-Corasick's overlapping search.
//!
//! Promises: exact (no missed occurrence, no false report); the work per
//! byte is bounded by the number of length classes plus the patterns
//! sharing the prefix at a hit. The hash is keyed (house rule: tables
//! indexed by attacker data), so crafted bytes cannot aim at the table's
//! false positives; bytes that really start patterns cost a comparison each,
//! as in any literal matcher.

/// Bits per pattern in a hashed table: 64 gives a false-positive rate of at
/// most ~1.6% per class per byte (one bit set per pattern).
const BITS_PER_PATTERN: usize = 64;
/// Table size bounds: 2^12 bits (512 B) to 2^20 bits (128 KiB).
const MIN_TABLE_LOG2: u32 = 12;
const MAX_TABLE_LOG2: u32 = 20;

/// Patterns of one length class (their first `len` bytes are the gram).
#[derive(Debug, Clone)]
struct Class {
    len: usize,
    log2: u32,
    bits: Vec<u64>,
    /// (gram, pattern id), sorted.
    grams: Vec<(u32, u32)>,
}

/// A compiled set of literal patterns.
#[derive(Debug, Clone)]
pub struct Prefilter {
    pats: Vec<Box<[u8]>>,
    /// Length class 1 (one-byte patterns), if any.
    one: Option<Class>,
    /// Classes 2..=4.
    longer: Vec<Class>,
    /// Direct 65,536-bit table: some pattern of 2+ bytes starts with these
    /// two bytes (the first stage for `longer`).
    two: Vec<u64>,
    key: (u32, u32),
}

impl Prefilter {
    /// Compiles `pats` (pattern id = index; empty patterns never match).
    /// `key` keys the hash.
    pub fn new(pats: &[Vec<u8>], key: (u64, u64)) -> Prefilter {
        // A well-mixed odd multiplier derived from the key (a raw key word
        // can be as poor a multiplier as 2^30 + 1).
        let mix = |x: u64| {
            use std::hash::Hasher;
            let mut h = siphasher::sip::SipHasher13::new_with_keys(key.0, key.1);
            h.write_u64(x);
            h.finish()
        };
        let key = (mix(1) as u32, (mix(2) as u32) | 1);
        let mut classes = Vec::new();
        let mut two = vec![0u64; (1 << 16) / 64];
        for len in 1..=4usize {
            let mut grams: Vec<(u32, u32)> = pats
                .iter()
                .enumerate()
                .filter(|(_, p)| p.len().min(4) == len)
                .map(|(i, p)| (gram(p.get(..len).unwrap_or(&[])), i as u32))
                .collect();
            if grams.is_empty() {
                continue;
            }
            grams.sort_unstable();
            let log2 = match len {
                1 => 8,
                2 => 16,
                _ => (grams.len() * BITS_PER_PATTERN)
                    .next_power_of_two()
                    .trailing_zeros()
                    .clamp(MIN_TABLE_LOG2, MAX_TABLE_LOG2),
            };
            let mut c = Class {
                len,
                log2,
                bits: vec![0; (1usize << log2) / 64],
                grams,
            };
            for i in 0..c.grams.len() {
                let g = c.grams[i].0;
                let h = c.slot(g, key);
                set_bit(&mut c.bits, h);
                if len >= 2 {
                    set_bit(&mut two, (g & 0xffff) as usize);
                }
            }
            classes.push(c);
        }
        let one = classes.first().filter(|c| c.len == 1).cloned();
        classes.retain(|c| c.len >= 2);
        Prefilter {
            pats: pats.iter().map(|p| p.clone().into_boxed_slice()).collect(),
            one,
            longer: classes,
            two,
            key,
        }
    }

    /// Calls `hit(pattern id, start)` for every occurrence of every pattern
    /// in `hay`, by increasing start; at one start, by length class (1, 2,
    /// 3, 4+ bytes), then by pattern id.
    #[inline]
    pub fn for_each(&self, hay: &[u8], mut hit: impl FnMut(usize, usize)) {
        // `w` holds hay[s..s + 4], first byte lowest, zero-padded past the
        // end (a gram with padding never verifies: the comparison is
        // bounded by the haystack).
        let mut w = gram(hay.get(..4).unwrap_or(hay));
        for s in 0..hay.len() {
            if let Some(c) = &self.one {
                let g = w & 0xff;
                if test_bit(&c.bits, g as usize) {
                    self.verify(c, g, hay, s, &mut hit);
                }
            }
            if test_bit(&self.two, (w & 0xffff) as usize) {
                for c in &self.longer {
                    let g = w & (u32::MAX >> (8 * (4 - c.len)));
                    if test_bit(&c.bits, c.slot(g, self.key)) {
                        self.verify(c, g, hay, s, &mut hit);
                    }
                }
            }
            w = (w >> 8) | (u32::from(hay.get(s + 4).copied().unwrap_or(0)) << 24);
        }
    }

    #[cold]
    fn verify(&self, c: &Class, g: u32, hay: &[u8], at: usize, hit: &mut impl FnMut(usize, usize)) {
        let from = c.grams.partition_point(|&(x, _)| x < g);
        for &(x, id) in c.grams.get(from..).unwrap_or(&[]) {
            if x != g {
                break;
            }
            let Some(p) = self.pats.get(id as usize) else {
                continue;
            };
            if hay.get(at..at + p.len()) == Some(&p[..]) {
                hit(id as usize, at);
            }
        }
    }

    /// The length of pattern `id` (0 for an unknown id).
    pub fn pattern_len(&self, id: usize) -> usize {
        self.pats.get(id).map_or(0, |p| p.len())
    }

    /// Heap bytes held (for the load report).
    pub fn heap_bytes(&self) -> usize {
        self.pats.iter().map(|p| p.len()).sum::<usize>()
            + self.two.len() * 8
            + self
                .one
                .iter()
                .chain(&self.longer)
                .map(|c| c.bits.len() * 8 + c.grams.len() * 8)
                .sum::<usize>()
    }
}

fn set_bit(t: &mut [u64], i: usize) {
    if let Some(w) = t.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

#[inline]
fn test_bit(t: &[u64], i: usize) -> bool {
    t.get(i / 64).is_some_and(|x| x & (1 << (i % 64)) != 0)
}

impl Class {
    #[inline]
    fn slot(&self, g: u32, key: (u32, u32)) -> usize {
        if self.len <= 2 {
            // Direct index: 256 / 65,536 entries.
            g as usize
        } else {
            ((g ^ key.0).wrapping_mul(key.1) >> (32 - self.log2)) as usize
        }
    }
}

/// The first up-to-4 bytes as the window holds them (first byte lowest).
fn gram(b: &[u8]) -> u32 {
    b.iter()
        .enumerate()
        .fold(0u32, |g, (i, &x)| g | (u32::from(x) << (8 * i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(pats: &[Vec<u8>], hay: &[u8]) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            for (at, w) in hay.windows(p.len()).enumerate() {
                if w == &p[..] {
                    v.push((at, i));
                }
            }
        }
        v.sort_unstable();
        v
    }

    fn hits(pats: &[Vec<u8>], hay: &[u8]) -> Vec<usize> {
        let pf = Prefilter::new(pats, (3, 5));
        let mut v = Vec::new();
        pf.for_each(hay, |i, at| {
            assert_eq!(hay.get(at..at + pats[i].len()), Some(&pats[i][..]));
            v.push(i);
        });
        v.sort_unstable();
        v
    }

    #[test]
    fn every_occurrence_of_every_length() {
        let pats: Vec<Vec<u8>> = ["a", "ab", "abc", "abcd", "abcde", "bcd", "e", "zz"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let hay = b"xabcdeabcdzzz";
        let mut want: Vec<usize> = naive(&pats, hay).into_iter().map(|x| x.1).collect();
        want.sort_unstable();
        assert_eq!(hits(&pats, hay), want);
        assert!(hits(&pats, b"").is_empty());
        assert_eq!(hits(&pats, b"a"), vec![0]);
    }

    proptest::proptest! {
        /// Same occurrences (counted per pattern) as a naive search, on a
        /// small alphabet so patterns share prefixes and overlap.
        #[test]
        fn agrees_with_naive(pats in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..7), 1..30),
                             hay in proptest::collection::vec(0u8..3, 0..80)) {
            let mut want: Vec<usize> = naive(&pats, &hay).into_iter().map(|x| x.1).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(hits(&pats, &hay), want);
        }
    }
}
