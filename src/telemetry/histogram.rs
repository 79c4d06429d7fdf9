//! A fixed-bucket latency histogram (Prometheus `histogram` semantics:
//! cumulative `le` buckets, `_sum` in seconds, `_count`).
//!
//! Bucket bounds span 1 µs to 10 ms in 1-2-5 steps: a packet through the
//! userspace pipeline takes a few µs; tens of ms means the loop stalled.

use std::time::Duration;

/// Upper bounds in seconds (a final `+Inf` bucket is implicit).
pub const BOUNDS: [f64; 13] = [
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3,
];

/// Counts per bucket (non-cumulative; the last slot is `+Inf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: [u64; 14],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += s;
        self.count += 1;
    }

    /// `(le, cumulative count)` pairs, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut acc = 0;
        let mut v = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            let le = BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
            v.push((le, acc));
        }
        v
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_nanos(500));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_secs(1));
        let c = h.cumulative();
        assert_eq!(c.first(), Some(&("0.000001".to_string(), 1)));
        assert_eq!(c.get(2), Some(&("0.000005".to_string(), 2)));
        assert_eq!(c.last(), Some(&("+Inf".to_string(), 3)));
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 1.0000035).abs() < 1e-9);
    }
}
