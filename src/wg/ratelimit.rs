//! Per-source handshake rate limit: a token bucket per source IP address.
//!
//! WireGuard's own defence against handshake floods is the cookie mechanism
//! (whitepaper section 5.3, boringtun's `RateLimiter`): above a global rate the
//! responder answers with a cookie instead of doing Diffie-Hellman. That bounds
//! the total DH rate but lets one source take the whole budget. This table adds
//! a per-source bound checked *before* any DH work (and after the cheap mac1
//! check, so only holders of our public key consume entries), like the Linux
//! kernel's `ratelimiter.c` for WireGuard (per-IP token bucket; IPv6 sources are
//! grouped by /64 as the kernel does, since one host owns a whole /64).
//!
//! Contract: sans-IO (`now` is a parameter), bounded memory ([`SourceLimiter::CAPACITY`]
//! entries; when full, entries idle for a full bucket refill are swept, and if
//! none are, the new source is refused — fail closed under an address-spraying
//! flood), keyed hashing (SipHash-1-3 with a caller-supplied key) since the
//! keys are attacker-chosen addresses.

use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A `BuildHasher` for SipHash-1-3 with a fixed secret key.
#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher(pub u64, pub u64);

impl BuildHasher for KeyedHasher {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-source token buckets for handshake initiations.
#[derive(Debug)]
pub struct SourceLimiter {
    per_sec: f64,
    burst: f64,
    table: HashMap<[u8; 16], Bucket, KeyedHasher>,
}

impl SourceLimiter {
    /// Most sources tracked at once. 4096 entries of ~48 bytes: ~200 KiB.
    pub const CAPACITY: usize = 4096;
    /// The kernel's WireGuard allows 20 handshake packets per second per
    /// source with a burst of 5 (drivers/net/wireguard/ratelimiter.c:
    /// PACKETS_PER_SECOND = 20, PACKETS_BURSTABLE = 5).
    pub const DEFAULT_PER_SEC: u32 = 20;
    pub const DEFAULT_BURST: u32 = 5;

    pub fn new(per_sec: u32, burst: u32, hash_key: (u64, u64)) -> Self {
        SourceLimiter {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            table: HashMap::with_hasher(KeyedHasher(hash_key.0, hash_key.1)),
        }
    }

    fn key(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => {
                let a = match a.to_ipv4_mapped() {
                    Some(v4) => return v4.to_ipv6_mapped().octets(),
                    None => a,
                };
                // group by /64
                let mut o = a.octets();
                o[8..].fill(0);
                o
            }
        }
    }

    /// True if a handshake from `src` may be processed now (consumes a token).
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let key = Self::key(src);
        if !self.table.contains_key(&key) && self.table.len() >= Self::CAPACITY {
            self.sweep(now);
            if self.table.len() >= Self::CAPACITY {
                return false;
            }
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let b = self.table.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose bucket has been full for a while (idle sources).
    pub fn sweep(&mut self, now: Instant) {
        let refill = Duration::from_secs_f64(self.burst / self.per_sec) + Duration::from_secs(1);
        self.table
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut l = SourceLimiter::new(20, 5, (1, 2));
        let t0 = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "198.51.100.8".parse().unwrap();
        let allowed = (0..10).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, 5);
        // another source is unaffected
        assert!(l.allow(b, t0));
        // 20/s: after 100 ms two more tokens
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..10).filter(|_| l.allow(a, t1)).count(), 2);
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let mut l = SourceLimiter::new(1, 1, (3, 4));
        let t0 = Instant::now();
        assert!(l.allow("2001:db8::1".parse().unwrap(), t0));
        assert!(!l.allow("2001:db8::2".parse().unwrap(), t0));
        assert!(l.allow("2001:db8:0:1::1".parse().unwrap(), t0));
        // v4-mapped v6 is the same source as v4
        assert!(l.allow("203.0.113.1".parse().unwrap(), t0));
        assert!(!l.allow("::ffff:203.0.113.1".parse().unwrap(), t0));
    }

    #[test]
    fn bounded_and_fails_closed_when_full() {
        let mut l = SourceLimiter::new(20, 5, (5, 6));
        let t0 = Instant::now();
        for i in 0..SourceLimiter::CAPACITY as u32 {
            assert!(l.allow(IpAddr::V4(i.into()), t0));
        }
        assert_eq!(l.len(), SourceLimiter::CAPACITY);
        assert!(!l.allow("203.0.113.9".parse().unwrap(), t0));
        // once the old entries are idle, they are swept and new sources fit
        let later = t0 + Duration::from_secs(5);
        assert!(l.allow("203.0.113.9".parse().unwrap(), later));
        assert_eq!(l.len(), 1);
    }
}
