//! Log rate limiting: one token bucket for all event records (rule `log`
//! events, drops, flow ends), so a flood cannot fill the disk, and a periodic
//! summary of what was suppressed (like the kernel's `printk_ratelimit`
//! "callbacks suppressed" lines).

use crate::shaper::TokenBucket;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Summaries of suppressed records are emitted at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct LogLimiter {
    bucket: Option<TokenBucket>,
    suppressed: BTreeMap<&'static str, u64>,
    total_suppressed: u64,
    last_summary: Option<Instant>,
}

impl LogLimiter {
    /// `per_sec` records per second with bursts of `burst`; 0 means unlimited.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        LogLimiter {
            bucket: (per_sec > 0).then(|| TokenBucket::new(u64::from(per_sec), u64::from(burst))),
            suppressed: BTreeMap::new(),
            total_suppressed: 0,
            last_summary: None,
        }
    }

    /// May a record of `kind` be written now? If not it is counted.
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> bool {
        let ok = self.bucket.as_mut().is_none_or(|b| b.allow(1, now));
        match ok {
            true => true,
            false => {
                *self.suppressed.entry(kind).or_insert(0) += 1;
                self.total_suppressed += 1;
                false
            }
        }
    }

    /// A summary line of what was suppressed since the last one, if anything
    /// was and [`SUMMARY_EVERY`] has passed. The summary itself is not limited.
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        if self.suppressed.is_empty() {
            return None;
        }
        if self
            .last_summary
            .is_some_and(|t| now.saturating_duration_since(t) < SUMMARY_EVERY)
        {
            return None;
        }
        self.last_summary = Some(now);
        let parts: Vec<String> = self
            .suppressed
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        self.suppressed.clear();
        Some(format!("log rate limit: suppressed {}", parts.join(" ")))
    }

    /// All records suppressed since start.
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_is_cut_to_rate_and_summarised() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(10, 5);
        let mut passed = 0;
        // 10 000 records over 2 s
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 200);
            if l.allow("drop", now) {
                passed += 1;
            }
        }
        assert!((5..=5 + 21).contains(&passed), "passed {passed}");
        assert_eq!(l.total_suppressed(), 10_000 - passed);
        let s = l.summary(t0 + Duration::from_secs(2));
        assert_eq!(
            s,
            Some(format!(
                "log rate limit: suppressed drop={}",
                10_000 - passed
            ))
        );
        assert_eq!(l.summary(t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut l = LogLimiter::new(0, 0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| l.allow("flow", t0)));
        assert_eq!(l.summary(t0), None);
    }
}
