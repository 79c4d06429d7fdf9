//! Per-direction TCP stream reassembly for inspection.
//!
//! Contract:
//! - bytes are delivered in sequence order, whatever order segments arrive
//!   in; out-of-order segments wait (bounded by [`MAX_PENDING`] bytes);
//! - on overlap the first data received for a sequence range wins (later
//!   copies are ignored), and an overlap whose bytes differ from what was
//!   already received is reported (`conflict`), so that prevent mode can
//!   refuse it: a receiver with a "last data wins" policy would otherwise see
//!   other bytes than the ones inspected (Ptacek & Newsham 1998; Suricata's
//!   `stream.reassembly` overlap handling and `stream-event:reassembly_overlap_different_data`);
//! - at most `depth` bytes per direction are kept and inspected (Suricata's
//!   `stream.reassembly.depth`); later bytes are counted, not inspected.
//! - sequence numbers wrap (RFC 9293 §3.4): offsets are computed with
//!   wrapping arithmetic from the first sequence number of the data (ISN + 1
//!   when the SYN was seen, else the first data segment's: midstream pickup).

use std::collections::BTreeMap;

/// Out-of-order bytes held per direction: 256 KiB (about four 64 KiB
/// windows; Suricata bounds this globally with `stream.reassembly.memcap`).
pub const MAX_PENDING: usize = 256 * 1024;

/// What adding a segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Added {
    /// Offset in the stream where newly in-order bytes start.
    pub new_from: usize,
    /// Number of newly in-order bytes (0: nothing new to inspect).
    pub new_len: usize,
    /// The segment overlapped earlier data with different bytes.
    pub conflict: bool,
    /// The segment was not kept (pending buffer full).
    pub dropped: bool,
}

/// One direction of a TCP stream.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    base: Option<u32>,
    data: Vec<u8>,
    /// Stream offset -> bytes, non-overlapping, all beyond `delivered()`.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// Bytes seen beyond the depth.
    pub beyond_depth: u64,
}

impl Stream {
    /// The SYN's sequence number (data starts at `seq + 1`).
    pub fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
        }
    }

    /// The reassembled bytes (up to the depth).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Adds a segment's payload at `seq`.
    pub fn add(&mut self, seq: u32, payload: &[u8], depth: usize) -> Added {
        let mut out = Added {
            new_from: self.data.len(),
            ..Added::default()
        };
        if payload.is_empty() {
            return out;
        }
        let base = *self.base.get_or_insert(seq);
        // Signed distance from the base: segments before it (retransmitted
        // SYN data) are trimmed.
        let rel = i64::from(seq.wrapping_sub(base) as i32);
        let (mut off, mut payload) = if rel < 0 {
            let cut = usize::try_from(-rel).unwrap_or(usize::MAX);
            match payload.get(cut..) {
                Some(p) if !p.is_empty() => (0u64, p),
                _ => return out,
            }
        } else {
            (rel as u64, payload)
        };
        let have = self.data.len() as u64;
        if off >= depth as u64 {
            self.beyond_depth += payload.len() as u64;
            return out;
        }
        // Overlap with delivered data: compare, keep the old bytes.
        if off < have {
            let n = usize::try_from((have - off).min(payload.len() as u64)).unwrap_or(0);
            let old = self.data.get(off as usize..off as usize + n).unwrap_or(&[]);
            if old != payload.get(..n).unwrap_or(&[]) {
                out.conflict = true;
            }
            payload = payload.get(n..).unwrap_or(&[]);
            off += n as u64;
            if payload.is_empty() {
                return out;
            }
        }
        // Cut at the depth.
        let room = (depth as u64).saturating_sub(off);
        if (payload.len() as u64) > room {
            self.beyond_depth += payload.len() as u64 - room;
            payload = payload.get(..room as usize).unwrap_or(&[]);
        }
        if off == self.data.len() as u64 {
            // Pending entries that this segment covers keep their (first) bytes.
            self.append_with_pending(payload, &mut out);
        } else if !self.insert_pending(off, payload, &mut out) {
            out.dropped = true;
        }
        out.new_len = self.data.len() - out.new_from;
        out
    }

    fn append_with_pending(&mut self, payload: &[u8], out: &mut Added) {
        // Pieces of `payload` already held in pending were received first:
        // their pending bytes win.
        let start = self.data.len() as u64;
        let end = start + payload.len() as u64;
        let mut pos = start;
        let held: Vec<(u64, Vec<u8>)> = self
            .pending
            .range(start..end)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (k, v) in held {
            if k > pos {
                let a = (pos - start) as usize;
                let b = (k - start) as usize;
                self.data
                    .extend_from_slice(payload.get(a..b).unwrap_or(&[]));
            }
            let a = (k - start) as usize;
            let n = v.len().min((end - k) as usize);
            if payload.get(a..a + n) != v.get(..n) {
                out.conflict = true;
            }
            self.pending.remove(&k);
            self.pending_bytes -= v.len();
            self.data.extend_from_slice(&v);
            pos = k + v.len() as u64;
        }
        if pos < end {
            let a = (pos - start) as usize;
            self.data.extend_from_slice(payload.get(a..).unwrap_or(&[]));
        }
        self.drain();
    }

    /// Moves pending entries that are now in order into `data`.
    fn drain(&mut self) {
        while let Some((&k, _)) = self.pending.first_key_value() {
            let have = self.data.len() as u64;
            if k > have {
                break;
            }
            let Some(v) = self.pending.remove(&k) else {
                break;
            };
            self.pending_bytes -= v.len();
            let skip = (have - k) as usize;
            if let Some(rest) = v.get(skip..) {
                self.data.extend_from_slice(rest);
            }
        }
    }

    /// Holds an out-of-order segment; only the ranges not already held are
    /// kept (first data wins). False when over [`MAX_PENDING`].
    fn insert_pending(&mut self, off: u64, payload: &[u8], out: &mut Added) -> bool {
        if self.pending_bytes + payload.len() > MAX_PENDING {
            return false;
        }
        let end = off + payload.len() as u64;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut pos = off;
        // Entries that start before `end` and may overlap.
        let overlapping: Vec<(u64, u64)> = self
            .pending
            .range(..end)
            .filter(|(k, v)| **k + v.len() as u64 > off)
            .map(|(k, v)| (*k, *k + v.len() as u64))
            .collect();
        for (s, e) in overlapping {
            if s > pos {
                pieces.push((pos, s));
            }
            // Compare the overlapping bytes.
            let (a, b) = (s.max(off), e.min(end));
            if let (Some(old), Some(new)) = (
                self.pending
                    .get(&s)
                    .and_then(|v| v.get((a - s) as usize..(b - s) as usize)),
                payload.get((a - off) as usize..(b - off) as usize),
            ) {
                if old != new {
                    out.conflict = true;
                }
            }
            pos = pos.max(e);
        }
        if pos < end {
            pieces.push((pos, end));
        }
        for (s, e) in pieces {
            if let Some(p) = payload.get((s - off) as usize..(e - off) as usize) {
                self.pending_bytes += p.len();
                self.pending.insert(s, p.to_vec());
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(segs: &[(u32, &[u8])]) -> (Stream, bool) {
        let mut s = Stream::default();
        s.syn(999);
        let mut conflict = false;
        for (seq, p) in segs {
            conflict |= s.add(*seq, p, 1 << 20).conflict;
        }
        (s, conflict)
    }

    #[test]
    fn in_order_and_out_of_order() {
        let (s, c) = feed(&[(1000, b"abc"), (1003, b"def")]);
        assert_eq!(s.data(), b"abcdef");
        assert!(!c);
        let (s, _) = feed(&[(1003, b"def"), (1006, b"g"), (1000, b"abc")]);
        assert_eq!(s.data(), b"abcdefg");
    }

    #[test]
    fn first_data_wins() {
        let (s, c) = feed(&[(1000, b"EVIL"), (1000, b"GOOD")]);
        assert_eq!(s.data(), b"EVIL");
        assert!(c);
        // Pending first, then an overlapping in-order segment.
        let (s, c) = feed(&[(1002, b"XY"), (1000, b"abcd")]);
        assert_eq!(s.data(), b"abXY");
        assert!(c);
        // Two overlapping pending segments.
        let (s, c) = feed(&[(1002, b"cd"), (1001, b"BCDE"), (1000, b"a")]);
        assert_eq!(s.data(), b"aBcdE");
        assert!(c);
        // Identical retransmission is no conflict.
        let (_, c) = feed(&[(1000, b"abc"), (1001, b"bc")]);
        assert!(!c);
    }

    #[test]
    fn depth_and_wrap() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 1);
        let a = s.add(u32::MAX, b"ab", 3);
        assert_eq!((a.new_from, a.new_len), (0, 2));
        s.add(1, b"cd", 3);
        assert_eq!(s.data(), b"abc");
        assert_eq!(s.beyond_depth, 1);
    }

    proptest::proptest! {
        /// Any arrival order of any segmentation gives the original bytes.
        #[test]
        fn any_order_reassembles(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..200),
                                 cuts in proptest::collection::vec(1usize..200, 0..10),
                                 order in proptest::collection::vec(proptest::prelude::any::<u16>(), 10)) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < data.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut segs = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                segs.push((1000 + prev as u32, &data[prev..c]));
                prev = c;
            }
            // Shuffle deterministically by `order`.
            for i in (1..segs.len()).rev() {
                let j = usize::from(order[i % order.len()]) % (i + 1);
                segs.swap(i, j);
            }
            let (s, c) = feed(&segs);
            proptest::prop_assert_eq!(s.data(), &data[..]);
            proptest::prop_assert!(!c);
        }
    }
}
