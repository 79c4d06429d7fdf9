//! Anomaly detection on new-flow attempts: port scans, host sweeps, SYN,
//! UDP and ICMP floods, and brute force, each with its own threshold and
//! sliding window. Independent of the signature engine (`crate::ids`); the
//! pipeline owns it and feeds it every packet that is not part of a known
//! flow (accepted, dropped or rejected by the rules alike: a scan mostly
//! hits closed or denied ports). Declared in `lib.rs` as
//! `crate::anomaly` (the file lives beside the IDS it belongs to).
//!
//! Detectors (all counts are of new-flow attempts within `window`, ending
//! at the current packet, so windows slide):
//! - `port_scan`: distinct TCP/UDP destination ports per source (any
//!   destination), like Snort's sfPortscan "portscan" and Suricata's
//!   thresholded scan signatures;
//! - `host_sweep`: distinct destination addresses per source;
//! - `syn_flood`: TCP SYNs (without ACK) opening flows, per destination;
//! - `udp_flood`: UDP packets opening flows, per source;
//! - `icmp_flood`: ICMP/ICMPv6 packets opening flows, per source;
//! - `brute_force`: new TCP connections from one source to one service
//!   (destination address and port), like fail2ban's "maxretry in findtime".
//!
//! A packet of an established flow is not counted: floods inside one flow
//! (one UDP 5-tuple, one ICMP echo id) are the shaper's business (per-rule
//! and per-peer rate limits).
//!
//! A detector fires when its count reaches the threshold (the packet that
//! makes the count equal to the threshold fires, none before), then its
//! state for that key is cleared, so it fires again only after `threshold`
//! more attempts.
//!
//! Memory is bounded: three tables (per source, per destination, per
//! service), each at most `max_tracked` keys, keyed SipHash (attacker-chosen
//! addresses); distinct-value sets hold at most `threshold` values. When a
//! table is full, keys idle for longer than every window are swept (at most
//! once per second), and if it is still full an arbitrary key (the keyed
//! hash makes it unpredictable) is evicted; evictions are counted.
//! Rate counters use [`SLOTS`](crate::anomaly::SLOTS) sub-windows (exact when the attempts fall in
//! one slot; otherwise a slot's counts leave the window all at once).
//!
//! Sans IO: `now` is a parameter.

use crate::packet::{proto, PacketMeta, L4};
use crate::wg::ratelimit::KeyedHasher;
use crate::zone::ZoneId;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sub-windows of a rate counter: 8 keeps the error under 1/8 of a window
/// for a 16-byte counter state.
pub const SLOTS: usize = 8;
/// Default bound on each table: 16384 keys of ~200 bytes (with default
/// thresholds) is a few MiB.
pub const DEFAULT_MAX_TRACKED: usize = 16_384;
/// Largest threshold accepted (distinct-value sets hold this many values).
pub const MAX_THRESHOLD: u32 = 4096;
/// Detections queued before further ones are dropped (counted).
const QUEUE: usize = 1024;
/// How often a full table may be swept of idle keys.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PortScan,
    HostSweep,
    SynFlood,
    UdpFlood,
    IcmpFlood,
    BruteForce,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::PortScan,
        Kind::HostSweep,
        Kind::SynFlood,
        Kind::UdpFlood,
        Kind::IcmpFlood,
        Kind::BruteForce,
    ];

    /// The config key and EVE name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PortScan => "port_scan",
            Kind::HostSweep => "host_sweep",
            Kind::SynFlood => "syn_flood",
            Kind::UdpFlood => "udp_flood",
            Kind::IcmpFlood => "icmp_flood",
            Kind::BruteForce => "brute_force",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The defaults: tuned to catch `nmap` defaults (a 1000-port scan in
    /// seconds) and `hydra`-style guessing, and to stay quiet for a browser
    /// opening a few dozen connections to a handful of hosts.
    pub fn default_detector(self) -> Detector {
        let d = |threshold, secs| Detector {
            threshold,
            window: Duration::from_secs(secs),
            block: None,
        };
        match self {
            Kind::PortScan => d(25, 10),
            Kind::HostSweep => d(25, 10),
            Kind::SynFlood => d(1000, 1),
            Kind::UdpFlood => d(1000, 1),
            Kind::IcmpFlood => d(200, 1),
            Kind::BruteForce => d(20, 60),
        }
    }
}

/// One detector's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detector {
    /// Fires when the count within `window` reaches this (>= 1).
    pub threshold: u32,
    pub window: Duration,
    /// Overrides [`AnomalyConfig::block`] for this detector.
    pub block: Option<Option<Duration>>,
}

/// `[ids.anomaly]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyConfig {
    /// Per [`Kind`] (index = `Kind as usize`); `None`: detector off.
    pub detectors: [Option<Detector>; 6],
    /// Block the source this long on a detection (`None`: alert only).
    pub block: Option<Duration>,
    pub max_tracked: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            detectors: Kind::ALL.map(|k| Some(k.default_detector())),
            block: None,
            max_tracked: DEFAULT_MAX_TRACKED,
        }
    }
}

impl AnomalyConfig {
    pub fn detector(&self, k: Kind) -> Option<&Detector> {
        self.detectors.get(k.index()).and_then(Option::as_ref)
    }

    /// How long to block the source after a detection by `k`.
    pub fn block_for(&self, k: Kind) -> Option<Duration> {
        self.detector(k).and_then(|d| d.block).unwrap_or(self.block)
    }
}

/// A detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Kind,
    pub now: Instant,
    /// The packet that crossed the threshold.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ingress: ZoneId,
    pub count: u32,
    pub threshold: u32,
    pub window: Duration,
    /// How long the pipeline blocks the source (`None`: alert only).
    pub block: Option<Duration>,
}

/// Distinct values seen within the window: (value, last seen ms).
#[derive(Debug, Default, Clone)]
struct Distinct(Vec<(u64, u64)>);

impl Distinct {
    /// Adds `v`; returns the number of distinct values in the window.
    fn add(&mut self, v: u64, now: u64, window: u64, cap: usize) -> u32 {
        self.0.retain(|&(_, t)| now.saturating_sub(t) < window);
        let len = self.0.len();
        match self.0.iter_mut().find(|(x, _)| *x == v) {
            Some(e) => e.1 = now,
            None if len < cap => self.0.push((v, now)),
            None => {}
        }
        self.0.len() as u32
    }
}

/// A sliding-window rate counter of [`SLOTS`] sub-windows.
#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    /// The slot number (ms / slot length) of `counts[0]`'s newest use.
    head: u64,
    counts: [u32; SLOTS],
}

impl Rate {
    fn add(&mut self, now: u64, window: u64) -> u32 {
        let slot_len = (window / SLOTS as u64).max(1);
        let slot = now / slot_len;
        let age = slot.saturating_sub(self.head);
        if age >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            for i in 1..=age {
                if let Some(c) = self
                    .counts
                    .get_mut(((self.head + i) % SLOTS as u64) as usize)
                {
                    *c = 0;
                }
            }
        }
        self.head = self.head.max(slot);
        if let Some(c) = self.counts.get_mut((slot % SLOTS as u64) as usize) {
            *c = c.saturating_add(1);
        }
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(*c))
    }
}

#[derive(Debug, Default)]
struct SrcState {
    last: u64,
    ports: Distinct,
    hosts: Distinct,
    udp: Rate,
    icmp: Rate,
}

#[derive(Debug, Default)]
struct CountState {
    last: u64,
    rate: Rate,
}

/// A bounded keyed-hash table with idle sweeping and eviction.
#[derive(Debug)]
struct Table<K, V> {
    map: HashMap<K, V, KeyedHasher>,
    last_sweep: u64,
}

impl<K: Hash + Eq + Copy, V: Default> Table<K, V> {
    fn new(key: (u64, u64)) -> Self {
        Table {
            map: HashMap::with_hasher(KeyedHasher(key.0, key.1)),
            last_sweep: 0,
        }
    }

    /// The key's state, making room when full. `idle(v)` says a value may be swept.
    fn entry(
        &mut self,
        k: K,
        now: u64,
        max: usize,
        idle: impl Fn(&V) -> bool,
        evicted: &mut u64,
    ) -> &mut V {
        if !self.map.contains_key(&k) && self.map.len() >= max {
            if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY.as_millis() as u64 {
                self.last_sweep = now;
                self.map.retain(|_, v| !idle(v));
            }
            if self.map.len() >= max {
                let victim = self.map.keys().next().copied();
                if let Some(v) = victim {
                    self.map.remove(&v);
                    *evicted += 1;
                }
            }
        }
        self.map.entry(k).or_default()
    }
}

/// Anomaly counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnomalyStats {
    /// Detections per [`Kind`] (index = `Kind as usize`).
    pub detections: [u64; 6],
    /// Keys evicted from full tables.
    pub evicted: u64,
    pub dropped: u64,
}

/// The detectors' state.
#[derive(Debug)]
pub struct Anomaly {
    cfg: AnomalyConfig,
    epoch: Instant,
    sources: Table<IpAddr, SrcState>,
    dests: Table<IpAddr, CountState>,
    services: Table<(IpAddr, IpAddr, u16), CountState>,
    hasher: KeyedHasher,
    /// Longest window (ms): keys idle longer hold nothing.
    idle_ms: u64,
    out: VecDeque<Detection>,
    pub stats: AnomalyStats,
}

impl Anomaly {
    pub fn new(cfg: AnomalyConfig, hash_key: (u64, u64), now: Instant) -> Self {
        let k = |r: u32| (hash_key.0.rotate_left(r), hash_key.1.rotate_right(r));
        let idle_ms = cfg
            .detectors
            .iter()
            .flatten()
            .map(|d| d.window.as_millis() as u64)
            .max()
            .unwrap_or(0);
        Anomaly {
            cfg,
            epoch: now,
            sources: Table::new(k(11)),
            dests: Table::new(k(23)),
            services: Table::new(k(37)),
            hasher: KeyedHasher(hash_key.1 ^ 0x51a3, hash_key.0 ^ 0x9c2f),
            idle_ms,
            out: VecDeque::new(),
            stats: AnomalyStats::default(),
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    /// Keys tracked (sources, destinations, services).
    pub fn tracked(&self) -> (usize, usize, usize) {
        (
            self.sources.map.len(),
            self.dests.map.len(),
            self.services.map.len(),
        )
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts one new-flow attempt (a packet not part of a known flow).
    pub fn observe(&mut self, meta: &PacketMeta, ingress: ZoneId, now: Instant) {
        let t = self.ms(now);
        let (sport, dport) = meta.ports();
        let syn = matches!(meta.l4, L4::Tcp(tcp) if tcp.flags & crate::packet::tcp_flags::SYN != 0
            && tcp.flags & crate::packet::tcp_flags::ACK == 0);
        let is_icmp = matches!(meta.proto, proto::ICMP | proto::ICMPV6);
        let ported = matches!(meta.proto, proto::TCP | proto::UDP);
        let (max, idle) = (self.cfg.max_tracked, self.idle_ms);
        let det = self.cfg.detectors;
        let mut fired: [Option<u32>; 6] = [None; 6];
        let dst_hash = self.hasher.hash_one(meta.dst);

        // per source
        let s = self.sources.entry(
            meta.src,
            t,
            max,
            |v: &SrcState| t.saturating_sub(v.last) >= idle,
            &mut self.stats.evicted,
        );
        s.last = t;
        let mut check = |k: Kind, count: u32, d: &Detector, reset: &mut dyn FnMut()| {
            if count >= d.threshold {
                fired[k.index()] = Some(count);
                reset();
            }
        };
        if let (Some(d), true) = (det[Kind::PortScan.index()], ported) {
            let c = s
                .ports
                .add(u64::from(dport), t, window_ms(&d), d.threshold as usize);
            check(Kind::PortScan, c, &d, &mut || s.ports.0.clear());
        }
        if let Some(d) = det[Kind::HostSweep.index()] {
            let c = s
                .hosts
                .add(dst_hash, t, window_ms(&d), d.threshold as usize);
            check(Kind::HostSweep, c, &d, &mut || s.hosts.0.clear());
        }
        if let (Some(d), proto::UDP) = (det[Kind::UdpFlood.index()], meta.proto) {
            let c = s.udp.add(t, window_ms(&d));
            check(Kind::UdpFlood, c, &d, &mut || s.udp = Rate::default());
        }
        if let (Some(d), true) = (det[Kind::IcmpFlood.index()], is_icmp) {
            let c = s.icmp.add(t, window_ms(&d));
            check(Kind::IcmpFlood, c, &d, &mut || s.icmp = Rate::default());
        }
        // per destination
        if let (Some(d), true) = (det[Kind::SynFlood.index()], syn) {
            let e = self.dests.entry(
                meta.dst,
                t,
                max,
                |v: &CountState| t.saturating_sub(v.last) >= idle,
                &mut self.stats.evicted,
            );
            e.last = t;
            let c = e.rate.add(t, window_ms(&d));
            check(Kind::SynFlood, c, &d, &mut || e.rate = Rate::default());
        }
        // per service
        if let (Some(d), true) = (det[Kind::BruteForce.index()], syn) {
            let e = self.services.entry(
                (meta.src, meta.dst, dport),
                t,
                max,
                |v: &CountState| t.saturating_sub(v.last) >= idle,
                &mut self.stats.evicted,
            );
            e.last = t;
            let c = e.rate.add(t, window_ms(&d));
            check(Kind::BruteForce, c, &d, &mut || e.rate = Rate::default());
        }
        for k in Kind::ALL {
            let (Some(count), Some(d)) = (fired[k.index()], det[k.index()]) else {
                continue;
            };
            if let Some(n) = self.stats.detections.get_mut(k.index()) {
                *n += 1;
            }
            if self.out.len() >= QUEUE {
                self.stats.dropped += 1;
                continue;
            }
            self.out.push_back(Detection {
                kind: k,
                now,
                src: meta.src,
                dst: meta.dst,
                proto: meta.proto,
                sport,
                dport,
                ingress,
                count,
                threshold: d.threshold,
                window: d.window,
                block: self.cfg.block_for(k),
            });
        }
    }

    /// Detections, oldest first.
    #[must_use]
    pub fn poll_detection(&mut self) -> Option<Detection> {
        self.out.pop_front()
    }

    /// Drops keys idle for longer than every window.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.ms(now);
        let idle = self.idle_ms;
        self.sources
            .map
            .retain(|_, v| t.saturating_sub(v.last) < idle);
        self.dests
            .map
            .retain(|_, v| t.saturating_sub(v.last) < idle);
        self.services
            .map
            .retain(|_, v| t.saturating_sub(v.last) < idle);
    }
}

fn window_ms(d: &Detector) -> u64 {
    (d.window.as_millis() as u64).max(1)
}

/// One EVE JSON line (`event_type: "anomaly"`) for a detection, in the
/// shape of Suricata's anomaly records plus the detector's numbers.
pub fn eve_line(d: &Detection, timestamp: &str, peer: Option<&str>, blocked: bool) -> String {
    use serde_json::{json, Map, Value};
    let mut m = Map::new();
    m.insert("timestamp".into(), json!(timestamp));
    m.insert("event_type".into(), json!("anomaly"));
    m.insert("src_ip".into(), json!(d.src.to_string()));
    m.insert("dest_ip".into(), json!(d.dst.to_string()));
    if matches!(d.proto, proto::TCP | proto::UDP) {
        m.insert("src_port".into(), json!(d.sport));
        m.insert("dest_port".into(), json!(d.dport));
    }
    m.insert(
        "proto".into(),
        json!(match d.proto {
            proto::TCP => "TCP".to_string(),
            proto::UDP => "UDP".to_string(),
            proto::ICMP => "ICMP".to_string(),
            proto::ICMPV6 => "IPv6-ICMP".to_string(),
            n => n.to_string(),
        }),
    );
    if let Some(p) = peer {
        m.insert("wg_peer".into(), json!(p));
    }
    m.insert(
        "anomaly".into(),
        json!({
            "type": "detector",
            "event": d.kind.name(),
            "count": d.count,
            "threshold": d.threshold,
            "window_secs": d.window.as_secs_f64(),
            "action": if blocked { "blocked" } else { "allowed" },
            "block_secs": d.block.map(|b| b.as_secs()),
        }),
    );
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::synth;

    fn only(k: Kind, threshold: u32, window: Duration) -> AnomalyConfig {
        let mut detectors = [None; 6];
        detectors[k.index()] = Some(Detector {
            threshold,
            window,
            block: None,
        });
        AnomalyConfig {
            detectors,
            block: None,
            max_tracked: 64,
        }
    }

    fn sa(a: &str, p: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::new(a.parse().unwrap(), p)
    }

    fn tcp(src: &str, dst: &str, dport: u16, flags: u8) -> PacketMeta {
        let spec = synth::TcpSpec {
            flags,
            ..synth::TcpSpec::default()
        };
        let p = synth::tcp(sa(src, 40000), sa(dst, dport), spec, &[]).unwrap();
        crate::packet::parse(&p).unwrap()
    }

    fn udp(src: &str, dst: &str, dport: u16) -> PacketMeta {
        let p = synth::udp(sa(src, 40000), sa(dst, dport), &[]).unwrap();
        crate::packet::parse(&p).unwrap()
    }

    fn icmp(src: &str, dst: &str) -> PacketMeta {
        let p =
            synth::icmp_echo(src.parse().unwrap(), dst.parse().unwrap(), 7, 1, false, &[]).unwrap();
        crate::packet::parse(&p).unwrap()
    }

    const SYN: u8 = crate::packet::tcp_flags::SYN;

    /// Feeds `n` packets made by `mk(i)` at `now`; returns detections.
    fn feed(
        a: &mut Anomaly,
        now: Instant,
        n: u32,
        mk: impl Fn(u32) -> PacketMeta,
    ) -> Vec<Detection> {
        for i in 0..n {
            a.observe(&mk(i), ZoneId::peer(0), now);
        }
        std::iter::from_fn(|| a.poll_detection()).collect()
    }

    /// Each detector: nothing at threshold - 1, exactly one detection at the threshold.
    #[test]
    fn each_detector_fires_exactly_at_its_threshold() {
        let w = Duration::from_secs(10);
        type Make = Box<dyn Fn(u32) -> PacketMeta>;
        let cases: Vec<(Kind, Make)> = vec![
            (
                Kind::PortScan,
                Box::new(|i| tcp("10.0.0.1", "10.0.0.9", 1000 + i as u16, SYN)),
            ),
            (
                Kind::HostSweep,
                Box::new(|i| tcp("10.0.0.1", &format!("10.0.1.{}", i + 1), 80, SYN)),
            ),
            (
                Kind::SynFlood,
                Box::new(|i| tcp(&format!("10.0.2.{}", i % 200 + 1), "10.0.0.9", 80, SYN)),
            ),
            (
                Kind::UdpFlood,
                Box::new(|i| udp("10.0.0.1", "10.0.0.9", 1000 + i as u16)),
            ),
            (Kind::IcmpFlood, Box::new(|_| icmp("10.0.0.1", "10.0.0.9"))),
            (
                Kind::BruteForce,
                Box::new(|_| tcp("10.0.0.1", "10.0.0.9", 22, SYN)),
            ),
        ];
        for (k, mk) in cases {
            for thr in [1u32, 5, 17] {
                let t0 = Instant::now();
                let mut a = Anomaly::new(only(k, thr, w), (1, 2), t0);
                let d = feed(&mut a, t0, thr - 1, &mk);
                assert!(d.is_empty(), "{k:?} fired below its threshold {thr}: {d:?}");
                a.observe(&mk(thr - 1), ZoneId::peer(0), t0);
                let d: Vec<_> = std::iter::from_fn(|| a.poll_detection()).collect();
                assert_eq!(d.len(), 1, "{k:?} at threshold {thr}");
                assert_eq!((d[0].kind, d[0].count, d[0].threshold), (k, thr, thr));
                assert_eq!(a.stats.detections[k.index()], 1);
            }
        }
    }

    #[test]
    fn acks_and_repeats_are_not_scans() {
        let t0 = Instant::now();
        let mut a = Anomaly::new(only(Kind::PortScan, 3, Duration::from_secs(10)), (1, 2), t0);
        // the same port again and again is one distinct port
        assert!(feed(&mut a, t0, 10, |_| tcp("10.0.0.1", "10.0.0.9", 80, SYN)).is_empty());
        let mut b = Anomaly::new(only(Kind::SynFlood, 3, Duration::from_secs(10)), (1, 2), t0);
        let ack = crate::packet::tcp_flags::ACK;
        assert!(feed(&mut b, t0, 10, |_| tcp("10.0.0.1", "10.0.0.9", 80, ack)).is_empty());
    }

    #[test]
    fn windows_slide() {
        let w = Duration::from_secs(8);
        let t0 = Instant::now();
        // distinct sets: 4 ports at t0, 4 more at t0+5s (threshold 6): the
        // first four are still inside the window -> fires at the 2nd port of
        // the second batch. After the window they are gone.
        let mut a = Anomaly::new(only(Kind::PortScan, 6, w), (1, 2), t0);
        assert!(feed(&mut a, t0, 4, |i| tcp(
            "10.0.0.1",
            "10.0.0.9",
            100 + i as u16,
            SYN
        ))
        .is_empty());
        let d = feed(&mut a, t0 + Duration::from_secs(5), 2, |i| {
            tcp("10.0.0.1", "10.0.0.9", 200 + i as u16, SYN)
        });
        assert_eq!(d.len(), 1);
        let mut a = Anomaly::new(only(Kind::PortScan, 6, w), (1, 2), t0);
        assert!(feed(&mut a, t0, 4, |i| tcp(
            "10.0.0.1",
            "10.0.0.9",
            100 + i as u16,
            SYN
        ))
        .is_empty());
        let d = feed(&mut a, t0 + Duration::from_secs(9), 5, |i| {
            tcp("10.0.0.1", "10.0.0.9", 200 + i as u16, SYN)
        });
        assert!(d.is_empty(), "old ports should have left the window: {d:?}");
        // rates: 5 at t0, 5 at t0+9s (threshold 8, window 8s) -> no alert
        let mut r = Anomaly::new(only(Kind::UdpFlood, 8, w), (1, 2), t0);
        assert!(feed(&mut r, t0, 5, |i| udp("10.0.0.1", "10.0.0.9", i as u16)).is_empty());
        assert!(feed(&mut r, t0 + Duration::from_secs(9), 5, |i| udp(
            "10.0.0.1", "10.0.0.9", i as u16
        ))
        .is_empty());
        // 5 at t0+18s (the t0+9s ones left the window), then 3 at t0+21s:
        // 8 within 8 s -> exactly one alert, at the last packet
        let u = |i: u32| udp("10.0.0.1", "10.0.0.9", i as u16);
        assert!(feed(&mut r, t0 + Duration::from_secs(18), 5, u).is_empty());
        assert!(feed(&mut r, t0 + Duration::from_secs(21), 2, u).is_empty());
        assert_eq!(feed(&mut r, t0 + Duration::from_secs(21), 1, u).len(), 1);
    }

    #[test]
    fn memory_is_bounded_under_a_random_source_flood() {
        let t0 = Instant::now();
        let mut cfg = AnomalyConfig {
            max_tracked: 100,
            ..AnomalyConfig::default()
        };
        cfg.detectors[Kind::BruteForce.index()] = Some(Kind::BruteForce.default_detector());
        let mut a = Anomaly::new(cfg, (5, 6), t0);
        let mut x: u32 = 0x1234_5678;
        for i in 0..20_000u32 {
            // xorshift: a different source and port every packet
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let src = std::net::Ipv4Addr::from(x).to_string();
            let m = tcp(&src, "10.0.0.9", (x >> 16) as u16, SYN);
            a.observe(
                &m,
                ZoneId::TUN,
                t0 + Duration::from_millis(u64::from(i / 10)),
            );
        }
        let (s, d, v) = a.tracked();
        assert!(s <= 100 && d <= 100 && v <= 100, "{s} {d} {v}");
        assert!(a.stats.evicted > 0);
        a.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(a.tracked(), (0, 0, 0));
    }

    #[test]
    fn eve_line_names_detector_and_numbers() {
        let t0 = Instant::now();
        let mut a = Anomaly::new(only(Kind::PortScan, 2, Duration::from_secs(1)), (1, 2), t0);
        let d = feed(&mut a, t0, 2, |i| {
            tcp("10.0.0.1", "10.0.0.9", 1 + i as u16, SYN)
        });
        let line = eve_line(
            &d[0],
            "2024-01-01T00:00:00.000000+0000",
            Some("alice"),
            true,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], "anomaly");
        assert_eq!(v["anomaly"]["event"], "port_scan");
        assert_eq!(v["anomaly"]["count"], 2);
        assert_eq!(v["wg_peer"], "alice");
        assert_eq!(v["src_ip"], "10.0.0.1");
        assert_eq!(v["dest_port"], 2);
    }
}
