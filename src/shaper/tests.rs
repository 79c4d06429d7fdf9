use super::*;
use std::time::Duration;

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

#[test]
fn bucket_starts_full_then_refills_at_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(1000, 100);
    assert!(b.allow(100, t0));
    assert!(!b.allow(1, t0));
    // 50 ms at 1000/s = 50 tokens
    assert!(b.allow(50, ms(t0, 50)));
    assert!(!b.allow(1, ms(t0, 50)));
    // never above burst
    assert!(!b.allow(101, ms(t0, 10_000)) || b.tokens() <= 100.0);
}

#[test]
fn bucket_long_run_matches_rate_within_one_burst() {
    // 10 Mbit/s = 1.25 MB/s of 1250-byte packets offered at 2x the rate for 10 s.
    let t0 = Instant::now();
    let rate = 1_250_000u64;
    let burst = 125_000u64;
    let mut b = TokenBucket::new(rate, burst);
    let mut passed = 0u64;
    let offered_per_ms = 2; // 2 packets/ms * 1250 B = 2.5 MB/s
    for i in 0..10_000u64 {
        for _ in 0..offered_per_ms {
            if b.allow(1250, ms(t0, i)) {
                passed += 1250;
            }
        }
    }
    let expect = rate * 10 + burst;
    assert!(
        passed <= expect && passed + 2 * 1250 >= rate * 10,
        "passed {passed}, expected about {expect}"
    );
}

#[test]
fn oversize_packet_passes_only_on_full_bucket() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(10, 100);
    assert!(b.allow(1000, t0));
    assert!(!b.allow(1000, ms(t0, 1000)));
    assert!(b.allow(1000, ms(t0, 20_000)));
}

#[test]
fn limit_needs_both_buckets() {
    let t0 = Instant::now();
    let mut l = Limit::new(&RateSpec {
        bytes_per_sec: Some(1_000_000),
        burst_bytes: Some(1_000_000),
        packets_per_sec: Some(10),
        burst_packets: Some(2),
    });
    assert!(l.allow(100, t0));
    assert!(l.allow(100, t0));
    assert!(!l.allow(100, t0), "packet bucket empty");
    assert!(l.allow(100, ms(t0, 100)));
}

#[test]
fn per_peer_rate_is_per_direction() {
    let t0 = Instant::now();
    let laptop = ZoneId::peer(0);
    let cfg = ShaperConfig {
        peers: vec![(
            laptop,
            PeerLimits {
                rate: RateSpec {
                    bytes_per_sec: Some(1000),
                    burst_bytes: Some(1500),
                    ..RateSpec::default()
                },
                conns: ConnSpec::default(),
            },
        )],
        ..ShaperConfig::default()
    };
    let mut s = Shaper::new(&cfg, (1, 2));
    assert!(!s.is_idle());
    assert!(s
        .packet(laptop, ZoneId::TUN, Chain::Forward, None, 1500, t0)
        .is_ok());
    assert_eq!(
        s.packet(laptop, ZoneId::TUN, Chain::Forward, None, 1500, t0),
        Err(Refusal::PeerRate)
    );
    // the other direction has its own bucket
    assert!(s
        .packet(ZoneId::TUN, laptop, Chain::Forward, None, 1500, t0)
        .is_ok());
    // other peers are not limited
    assert!(s
        .packet(ZoneId::peer(1), ZoneId::TUN, Chain::Forward, None, 9000, t0)
        .is_ok());
    assert_eq!(
        s.refused().find(|(n, _)| *n == "peer_rate").map(|x| x.1),
        Some(1)
    );
}

#[test]
fn per_rule_rate() {
    let t0 = Instant::now();
    let cfg = ShaperConfig {
        rules: vec![(
            Chain::Forward,
            2,
            RateSpec {
                packets_per_sec: Some(1),
                burst_packets: Some(1),
                ..RateSpec::default()
            },
        )],
        ..ShaperConfig::default()
    };
    let mut s = Shaper::new(&cfg, (1, 2));
    let z = ZoneId::TUN;
    assert!(s.packet(z, z, Chain::Forward, Some(2), 60, t0).is_ok());
    assert_eq!(
        s.packet(z, z, Chain::Forward, Some(2), 60, t0),
        Err(Refusal::RuleRate)
    );
    assert!(s.packet(z, z, Chain::Forward, Some(1), 60, t0).is_ok());
    assert!(s.packet(z, z, Chain::Input, Some(2), 60, t0).is_ok());
    assert!(s.packet(z, z, Chain::Forward, None, 60, t0).is_ok());
}

#[test]
fn concurrent_limit_per_source_refuses_the_n_plus_first() {
    let t0 = Instant::now();
    let cfg = ShaperConfig {
        per_source: ConnSpec {
            max_concurrent: Some(3),
            ..ConnSpec::default()
        },
        ..ShaperConfig::default()
    };
    let mut s = Shaper::new(&cfg, (1, 2));
    let a: IpAddr = "100.64.0.2".parse().unwrap();
    let b: IpAddr = "100.64.0.3".parse().unwrap();
    for _ in 0..3 {
        assert!(s.admit_flow(a, ZoneId::peer(0), t0).is_ok());
    }
    assert_eq!(
        s.admit_flow(a, ZoneId::peer(0), t0),
        Err(Refusal::SourceConcurrent)
    );
    assert!(s.admit_flow(b, ZoneId::peer(1), t0).is_ok());
    s.flow_ended(a, ZoneId::peer(0));
    assert_eq!(s.source_flows(a), 2);
    assert!(s.admit_flow(a, ZoneId::peer(0), t0).is_ok());
    // reconfigure keeps the live counts
    s.reconfigure(&cfg);
    assert_eq!(s.source_flows(a), 3);
    assert!(s.admit_flow(a, ZoneId::peer(0), t0).is_err());
}

#[test]
fn new_flow_rate_per_peer_and_sweep() {
    let t0 = Instant::now();
    let p = ZoneId::peer(0);
    let cfg = ShaperConfig {
        peers: vec![(
            p,
            PeerLimits {
                rate: RateSpec::default(),
                conns: ConnSpec {
                    max_concurrent: None,
                    new_per_sec: Some(2),
                    new_burst: Some(2),
                },
            },
        )],
        per_source: ConnSpec {
            new_per_sec: Some(100),
            ..ConnSpec::default()
        },
        ..ShaperConfig::default()
    };
    let mut s = Shaper::new(&cfg, (1, 2));
    let a: IpAddr = "100.64.0.2".parse().unwrap();
    assert!(s.admit_flow(a, p, t0).is_ok());
    assert!(s.admit_flow(a, p, t0).is_ok());
    assert_eq!(s.admit_flow(a, p, t0), Err(Refusal::PeerNewRate));
    assert!(s.admit_flow(a, p, ms(t0, 500)).is_ok());
    s.flow_ended(a, p);
    s.flow_ended(a, p);
    s.flow_ended(a, p);
    assert_eq!(s.sources(), 1);
    s.sweep(ms(t0, 10_000));
    assert_eq!(s.sources(), 0);
}

#[test]
fn idle_shaper() {
    let mut s = Shaper::new(&ShaperConfig::default(), (0, 0));
    assert!(s.is_idle());
    // a reload that adds a limit makes it active; one that removes it, idle
    let limited = ShaperConfig {
        per_source: ConnSpec {
            max_concurrent: Some(3),
            ..ConnSpec::default()
        },
        ..ShaperConfig::default()
    };
    s.reconfigure(&limited);
    assert!(!s.is_idle());
    s.reconfigure(&ShaperConfig::default());
    assert!(s.is_idle());
}
