//! NAT through `Pipeline::handle`: bindings, reverse path, ICMP errors,
//! exhaustion, load balancing, and property tests (round trip = identity,
//! checksums verified by full recomputation, unique external tuples).

use super::*;
use crate::conntrack::FlowKey;
use crate::packet::checksum::{ipv4_header_checksum, l4_checksum_ok};
use crate::packet::synth::{self, TcpSpec};
use crate::packet::{self, parse, tcp_flags};
use crate::pipeline::{testbed, Pipeline};
use crate::rules::{Action, ChainDef, Rule};
use crate::verdict::{DropReason, Verdict};
use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::Strategy as PStrategy;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

const LAPTOP: ZoneId = ZoneId(3);
const PHONE: ZoneId = ZoneId(4);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn any_rule() -> Rule {
    Rule::any(Action::Accept)
}

fn masq(to_tun: &[&str], ports: Option<(u16, u16)>) -> NatRule {
    NatRule {
        name: "masq".into(),
        matches: any_rule(),
        action: NatAction::Masquerade {
            tun_addrs: to_tun.iter().map(|a| ip(a)).collect(),
            ports,
        },
        mss_clamp: false,
        log: true,
        health: None,
    }
}

fn dnat(matches: Rule, backends: Vec<Backend>, strategy: Strategy) -> NatRule {
    NatRule {
        name: "dnat".into(),
        matches,
        action: NatAction::Dnat { backends, strategy },
        mss_clamp: false,
        log: false,
        health: None,
    }
}

fn backend(a: &str, port: u16, weight: u32) -> Backend {
    Backend {
        addr: ip(a),
        port: Some(port),
        weight,
        down: false,
    }
}

fn pipeline(rules: Vec<NatRule>, forward: ChainDef) -> (Pipeline, Instant) {
    let now = Instant::now();
    let mut cfg = testbed::config(forward);
    cfg.nat = NatConfig {
        rules,
        local_nets: vec![
            "100.64.0.1/24".parse().unwrap(),
            "2001:db8:64::1/64".parse().unwrap(),
        ],
        peer_routes: cfg.peer_routes.clone(),
        mtu: 1420,
    };
    (Pipeline::new(cfg, testbed::KEY, now), now)
}

fn accept_all() -> ChainDef {
    ChainDef {
        rules: vec![any_rule()],
        policy: Action::Drop,
    }
}

/// Full recomputation of every checksum of a packet (IPv4 header, transport,
/// and for ICMPv4 errors the quoted IPv4 header).
fn checksums_ok(p: &[u8]) -> bool {
    let Ok(m) = parse(p) else { return false };
    if !m.is_v6() {
        let hl = usize::from(p[0] & 0x0f) * 4;
        if ipv4_header_checksum(&p[..hl]) != u16::from_be_bytes([p[10], p[11]]) {
            return false;
        }
    }
    if let packet::L4::Icmp(packet::IcmpInfo { inner: Some(h), .. }) = m.l4 {
        if !m.is_v6() {
            let o = usize::from(h.offset);
            let hl = usize::from(p[o] & 0x0f) * 4;
            let q = &p[o..o + hl];
            if ipv4_header_checksum(q) != u16::from_be_bytes([q[10], q[11]]) {
                return false;
            }
        }
    }
    l4_checksum_ok(p, &m)
}

fn udp(src: &str, dst: &str) -> Vec<u8> {
    synth::udp(sa(src), sa(dst), b"hello").unwrap()
}

fn meta(p: &[u8]) -> packet::PacketMeta {
    parse(p).unwrap()
}

#[test]
fn masquerade_to_tun_and_back() {
    let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254"], None)], accept_all());
    let mut p = udp("100.64.0.2:5000", "198.51.100.10:53");
    assert_eq!(
        pl.handle(&mut p, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    let m = meta(&p);
    assert_eq!((m.src, m.ports()), (ip("100.64.0.254"), (5000, 53)));
    assert!(checksums_ok(&p));
    let mut r = udp("198.51.100.10:53", "100.64.0.254:5000");
    assert_eq!(
        pl.handle(&mut r, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    let m = meta(&r);
    assert_eq!(
        (m.src, m.dst, m.ports()),
        (ip("198.51.100.10"), ip("100.64.0.2"), (53, 5000))
    );
    assert!(checksums_ok(&r));
    assert_eq!(pl.nat().stats.snat_bindings, 1);
    assert_eq!(pl.nat().stats.translated, 1);
    let ev = pl.poll_nat_event().expect("binding logged");
    assert!(
        pl.nat_event_line(&ev).contains("100.64.0.254:5000"),
        "{}",
        pl.nat_event_line(&ev)
    );
    // Unsolicited traffic to the NAT address finds no flow: not forwarded to the laptop.
    let mut u = udp("198.51.100.10:53", "100.64.0.254:5001");
    assert_ne!(
        pl.handle(&mut u, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
}

#[test]
fn clashing_source_ports_get_distinct_external_ports() {
    let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254"], None)], accept_all());
    let mut a = udp("100.64.0.2:5000", "198.51.100.10:53");
    let mut b = udp("100.64.0.3:5000", "198.51.100.10:53");
    assert_eq!(
        pl.handle(&mut a, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    assert_eq!(pl.handle(&mut b, PHONE, now), Verdict::Forward(ZoneId::TUN));
    let (pa, pb) = (meta(&a).ports().0, meta(&b).ports().0);
    assert_eq!(pa, 5000);
    assert_ne!(pb, 5000);
    assert!(pb >= 1024, "port class kept: {pb}");
    let mut rb = udp("198.51.100.10:53", &format!("100.64.0.254:{pb}"));
    assert_eq!(
        pl.handle(&mut rb, ZoneId::TUN, now),
        Verdict::Forward(PHONE)
    );
    assert_eq!(meta(&rb).dst, ip("100.64.0.3"));
}

#[test]
fn privileged_source_ports_stay_privileged() {
    let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254"], None)], accept_all());
    let mut a = udp("100.64.0.2:123", "198.51.100.10:123");
    let mut b = udp("100.64.0.3:123", "198.51.100.10:123");
    pl.handle(&mut a, LAPTOP, now);
    pl.handle(&mut b, PHONE, now);
    let pb = meta(&b).ports().0;
    assert!(pb < 1024 && pb != 123, "{pb}");
}

#[test]
fn exhaustion_is_a_counted_drop_and_old_flows_keep_working() {
    let (mut pl, now) = pipeline(
        vec![masq(&["100.64.0.254"], Some((2000, 2003)))],
        accept_all(),
    );
    let mut ext = Vec::new();
    for sport in 3000..3004u16 {
        let mut p = udp(&format!("100.64.0.2:{sport}"), "198.51.100.10:53");
        assert_eq!(
            pl.handle(&mut p, LAPTOP, now),
            Verdict::Forward(ZoneId::TUN)
        );
        ext.push(meta(&p).ports().0);
    }
    let uniq: HashSet<u16> = ext.iter().copied().collect();
    assert_eq!(uniq.len(), 4);
    assert!(ext.iter().all(|p| (2000..=2003).contains(p)));
    let mut p = udp("100.64.0.2:3010", "198.51.100.10:53");
    assert_eq!(
        pl.handle(&mut p, LAPTOP, now),
        Verdict::Drop(DropReason::NatExhausted)
    );
    assert_eq!(pl.nat().stats.exhausted, 1);
    assert_eq!(pl.stats().drop_reasons.get("nat_exhausted"), Some(&1));
    let mut saw_exhausted = false;
    while let Some(e) = pl.poll_nat_event() {
        saw_exhausted |= e.kind == NatEventKind::Exhausted;
    }
    assert!(saw_exhausted);
    // Existing flows still pass both ways.
    for (i, sport) in (3000..3004u16).enumerate() {
        let mut p = udp(&format!("100.64.0.2:{sport}"), "198.51.100.10:53");
        assert_eq!(
            pl.handle(&mut p, LAPTOP, now),
            Verdict::Forward(ZoneId::TUN)
        );
        assert_eq!(meta(&p).ports().0, ext[i]);
        let mut r = udp("198.51.100.10:53", &format!("100.64.0.254:{}", ext[i]));
        assert_eq!(
            pl.handle(&mut r, ZoneId::TUN, now),
            Verdict::Forward(LAPTOP)
        );
        assert_eq!(meta(&r).ports().1, sport);
    }
}

#[test]
fn echo_ids_are_translated() {
    let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254"], None)], accept_all());
    let mut a = synth::icmp_echo(ip("100.64.0.2"), ip("198.51.100.10"), 7, 1, false, b"x").unwrap();
    let mut b = synth::icmp_echo(ip("100.64.0.3"), ip("198.51.100.10"), 7, 1, false, b"x").unwrap();
    assert_eq!(
        pl.handle(&mut a, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    assert_eq!(pl.handle(&mut b, PHONE, now), Verdict::Forward(ZoneId::TUN));
    let (ia, ib) = (meta(&a).ports().0, meta(&b).ports().0);
    assert_eq!(ia, 7);
    assert_ne!(ib, 7);
    assert!(checksums_ok(&b));
    let mut r =
        synth::icmp_echo(ip("198.51.100.10"), ip("100.64.0.254"), ib, 1, true, b"x").unwrap();
    assert_eq!(pl.handle(&mut r, ZoneId::TUN, now), Verdict::Forward(PHONE));
    let m = meta(&r);
    assert_eq!((m.dst, m.ports().0), (ip("100.64.0.3"), 7));
    assert!(checksums_ok(&r));
}

#[test]
fn port_forward_rules_see_the_translated_packet() {
    let mut to_laptop_80 = Rule::any(Action::Accept);
    to_laptop_80.egress = Some(crate::rules::ZoneMatch {
        zones: {
            let mut z = crate::zone::ZoneSet::new();
            z.insert(LAPTOP);
            z
        },
        negate: false,
    });
    to_laptop_80.proto = Some(proto::TCP);
    to_laptop_80.dport = Some(crate::rules::PortMatch {
        ranges: vec![(80, 80)],
        negate: false,
    });
    let mut m = Rule::any(Action::Accept);
    m.dst = Some(crate::rules::AddrMatch {
        nets: vec!["100.64.0.200/32".parse().unwrap()],
        negate: false,
    });
    m.proto = Some(proto::TCP);
    m.dport = Some(crate::rules::PortMatch {
        ranges: vec![(8080, 8080)],
        negate: false,
    });
    let rule = dnat(m, vec![backend("100.64.0.2", 80, 1)], Strategy::RoundRobin);
    let (mut pl, now) = pipeline(
        vec![rule],
        ChainDef {
            rules: vec![to_laptop_80],
            policy: Action::Drop,
        },
    );
    let mut syn = synth::tcp(
        sa("198.51.100.10:40000"),
        sa("100.64.0.200:8080"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut syn, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    let m = meta(&syn);
    assert_eq!((m.dst, m.ports()), (ip("100.64.0.2"), (40000, 80)));
    assert!(checksums_ok(&syn));
    let sa_spec = TcpSpec {
        flags: tcp_flags::SYN | tcp_flags::ACK,
        seq: 5000,
        ack: 1001,
        ..TcpSpec::default()
    };
    let mut synack =
        synth::tcp(sa("100.64.0.2:80"), sa("198.51.100.10:40000"), sa_spec, b"").unwrap();
    assert_eq!(
        pl.handle(&mut synack, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    let m = meta(&synack);
    assert_eq!((m.src, m.ports()), (ip("100.64.0.200"), (8080, 40000)));
    assert!(checksums_ok(&synack));
    // A port the rule does not forward is not translated, and the filter drops it.
    let mut other = synth::tcp(
        sa("198.51.100.10:40001"),
        sa("100.64.0.200:8081"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert!(matches!(
        pl.handle(&mut other, ZoneId::TUN, now),
        Verdict::Drop(_)
    ));
    assert_eq!(pl.nat().stats.dnat_bindings, 1);
}

#[test]
fn hairpin_peer_to_peer_forward() {
    let mut m = Rule::any(Action::Accept);
    m.proto = Some(proto::TCP);
    m.dst = Some(crate::rules::AddrMatch {
        nets: vec!["100.64.0.200/32".parse().unwrap()],
        negate: false,
    });
    let (mut pl, now) = pipeline(
        vec![dnat(
            m,
            vec![backend("100.64.0.3", 80, 1)],
            Strategy::RoundRobin,
        )],
        accept_all(),
    );
    let mut syn = synth::tcp(
        sa("100.64.0.2:40000"),
        sa("100.64.0.200:8080"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert_eq!(pl.handle(&mut syn, LAPTOP, now), Verdict::Forward(PHONE));
    let sa_spec = TcpSpec {
        flags: tcp_flags::SYN | tcp_flags::ACK,
        seq: 5000,
        ack: 1001,
        ..TcpSpec::default()
    };
    let mut synack = synth::tcp(sa("100.64.0.3:80"), sa("100.64.0.2:40000"), sa_spec, b"").unwrap();
    assert_eq!(pl.handle(&mut synack, PHONE, now), Verdict::Forward(LAPTOP));
    assert_eq!(meta(&synack).src, ip("100.64.0.200"));
}

#[test]
fn icmp_frag_needed_from_beyond_the_nat_reaches_the_client() {
    let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254"], None)], accept_all());
    let mut a = udp("100.64.0.3:5000", "198.51.100.10:53");
    let mut b = udp("100.64.0.2:5000", "198.51.100.10:53");
    pl.handle(&mut a, PHONE, now);
    pl.handle(&mut b, LAPTOP, now);
    let ext = meta(&b).ports().0;
    assert_ne!(ext, 5000);
    // A router beyond the NAT quotes the translated packet.
    let mut err = synth::icmp_raw(
        ip("198.51.100.99"),
        ip("100.64.0.254"),
        3,
        4,
        [0, 0, 5, 0x78],
        &b,
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut err, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    let m = meta(&err);
    assert_eq!((m.src, m.dst), (ip("198.51.100.99"), ip("100.64.0.2")));
    let packet::L4::Icmp(packet::IcmpInfo {
        inner: Some(h),
        ty: 3,
        code: 4,
        ..
    }) = m.l4
    else {
        panic!("{m:?}")
    };
    assert_eq!(
        (h.src, h.dst, h.sport, h.dport),
        (ip("100.64.0.2"), ip("198.51.100.10"), 5000, 53)
    );
    assert!(checksums_ok(&err));
    assert_eq!(pl.nat().stats.icmp_errors_translated, 1);
}

#[test]
fn dnat_backend_port_unreachable_comes_from_the_virtual_address() {
    let mut m = Rule::any(Action::Accept);
    m.proto = Some(proto::UDP);
    let (mut pl, now) = pipeline(
        vec![dnat(
            m,
            vec![backend("100.64.0.2", 53, 1)],
            Strategy::RoundRobin,
        )],
        accept_all(),
    );
    let mut q = udp("198.51.100.10:4000", "100.64.0.200:5353");
    assert_eq!(
        pl.handle(&mut q, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    let mut err = synth::icmp_raw(ip("100.64.0.2"), ip("198.51.100.10"), 3, 3, [0; 4], &q).unwrap();
    assert_eq!(
        pl.handle(&mut err, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    let m = meta(&err);
    assert_eq!(m.src, ip("100.64.0.200"));
    let packet::L4::Icmp(packet::IcmpInfo { inner: Some(h), .. }) = m.l4 else {
        panic!()
    };
    assert_eq!(
        (h.src, h.dst, h.sport, h.dport),
        (ip("198.51.100.10"), ip("100.64.0.200"), 4000, 5353)
    );
    assert!(checksums_ok(&err));
}

#[test]
fn ipv6_masquerade_and_back() {
    let (mut pl, now) = pipeline(
        vec![masq(&["100.64.0.254", "2001:db8:64::fe"], None)],
        accept_all(),
    );
    let mut p = synth::tcp(
        sa("[2001:db8:64::2]:40000"),
        sa("[2001:db8:203::2]:80"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut p, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    assert_eq!(meta(&p).src, ip("2001:db8:64::fe"));
    assert!(checksums_ok(&p));
    let spec = TcpSpec {
        flags: tcp_flags::SYN | tcp_flags::ACK,
        seq: 9,
        ack: 1001,
        ..TcpSpec::default()
    };
    let mut r = synth::tcp(
        sa("[2001:db8:203::2]:80"),
        sa("[2001:db8:64::fe]:40000"),
        spec,
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut r, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    assert_eq!(meta(&r).dst, ip("2001:db8:64::2"));
    assert!(checksums_ok(&r));
}

#[test]
fn masquerade_onto_an_upstream_peer_uses_the_tunnel_address() {
    let routes = vec![
        (ZoneId(3), vec!["100.64.0.2/32".parse().unwrap()]),
        (ZoneId(4), vec!["0.0.0.0/0".parse().unwrap()]),
    ];
    let local: Vec<IpNetwork> = vec![
        "100.64.0.1/24".parse().unwrap(),
        "100.64.1.2/24".parse().unwrap(),
    ];
    let addrs = masquerade_addrs(&local, &routes);
    assert!(addrs.contains(&(ZoneId(3), ip("100.64.0.1"))));
    assert!(addrs.contains(&(ZoneId(4), ip("100.64.1.2"))));
    assert!(!addrs
        .iter()
        .any(|(z, a)| *z == ZoneId(4) && *a == ip("100.64.0.1")));
}

#[test]
fn mss_is_clamped_for_translated_flows() {
    let mut r = masq(&["100.64.0.254"], None);
    r.mss_clamp = true;
    let (mut pl, now) = pipeline(vec![r], accept_all());
    let spec = TcpSpec {
        mss: Some(1460),
        ..TcpSpec::default()
    };
    let mut p = synth::tcp(sa("100.64.0.2:40000"), sa("198.51.100.10:80"), spec, b"").unwrap();
    assert_eq!(
        pl.handle(&mut p, LAPTOP, now),
        Verdict::Forward(ZoneId::TUN)
    );
    let packet::L4::Tcp(t) = meta(&p).l4 else {
        panic!()
    };
    assert_eq!(t.mss, Some(1380));
    assert!(checksums_ok(&p));
}

#[test]
fn weighted_backends_through_the_pipeline() {
    let mut m = Rule::any(Action::Accept);
    m.proto = Some(proto::TCP);
    let bs = vec![backend("100.64.0.2", 80, 3), backend("100.64.0.3", 80, 1)];
    let (mut pl, now) = pipeline(vec![dnat(m, bs, Strategy::Weighted)], accept_all());
    let mut n = [0u32; 2];
    for i in 0..400u16 {
        let mut syn = synth::tcp(
            SocketAddr::new(ip("198.51.100.10"), 10000 + i),
            sa("100.64.0.200:80"),
            TcpSpec::default(),
            b"",
        )
        .unwrap();
        match pl.handle(&mut syn, ZoneId::TUN, now) {
            Verdict::Forward(LAPTOP) => n[0] += 1,
            Verdict::Forward(PHONE) => n[1] += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(n, [300, 100]);
}

#[test]
fn least_connections_counts_live_flows() {
    let mut m = Rule::any(Action::Accept);
    m.proto = Some(proto::UDP);
    let bs = vec![backend("100.64.0.2", 53, 1), backend("100.64.0.3", 53, 1)];
    let (mut pl, now) = pipeline(vec![dnat(m, bs, Strategy::LeastConnections)], accept_all());
    for i in 0..10u16 {
        let mut q = udp(&format!("198.51.100.10:{}", 4000 + i), "100.64.0.200:53");
        pl.handle(&mut q, ZoneId::TUN, now);
    }
    pl.handle_timeout(now);
    assert_eq!(pl.nat().backend_conns(0), vec![5, 5]);
    // Flows expire: the recount forgets them.
    pl.handle_timeout(now + std::time::Duration::from_secs(3600));
    assert_eq!(pl.nat().backend_conns(0), vec![0, 0]);
}

/// One random flow: which peer, protocol, ports.
fn flow_strategy() -> impl PStrategy<Value = (bool, u8, u16, u16, bool)> {
    (
        any::<bool>(),
        0u8..3,
        1u16..65535,
        1u16..65535,
        any::<bool>(),
    )
}

fn build(proto_: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, reply: bool) -> Vec<u8> {
    match proto_ {
        0 => synth::udp(
            SocketAddr::new(src, sport),
            SocketAddr::new(dst, dport),
            b"payload",
        )
        .unwrap(),
        1 => {
            let spec = if reply {
                TcpSpec {
                    flags: tcp_flags::SYN | tcp_flags::ACK,
                    seq: 77,
                    ack: 1001,
                    ..TcpSpec::default()
                }
            } else {
                TcpSpec::default()
            };
            synth::tcp(
                SocketAddr::new(src, sport),
                SocketAddr::new(dst, dport),
                spec,
                b"",
            )
            .unwrap()
        }
        _ => synth::icmp_echo(src, dst, sport, 1, reply, b"ping").unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Translate, answer the translated packet, reverse-translate: the client
    /// sees exactly the inverse of what it sent; every checksum verifies; no
    /// two live flows share an external tuple.
    #[test]
    fn round_trip_is_identity(flows in proptest::collection::vec(flow_strategy(), 1..40), v6 in any::<bool>()) {
        let (mut pl, now) = pipeline(vec![masq(&["100.64.0.254", "2001:db8:64::fe"], Some((20000, 20031)))], accept_all());
        let mut seen: HashSet<(u8, IpAddr, u16, IpAddr, u16)> = HashSet::new();
        for (phone, p, sport, dport, _) in flows {
            let (zone, src) = match (phone, v6) {
                (false, false) => (LAPTOP, ip("100.64.0.2")),
                (true, false) => (PHONE, ip("100.64.0.3")),
                (false, true) => (LAPTOP, ip("2001:db8:64::2")),
                (true, true) => (PHONE, ip("2001:db8:64::3")),
            };
            let dst = if v6 { ip("2001:db8:203::2") } else { ip("198.51.100.10") };
            let dport = if p == 2 { sport } else { dport };
            if !seen.insert((p, src, sport, dst, dport)) { continue; }
            let mut pkt = build(p, src, dst, sport, dport, false);
            match pl.handle(&mut pkt, zone, now) {
                Verdict::Forward(ZoneId::TUN) => {}
                Verdict::Drop(DropReason::NatExhausted) => continue,
                v => { prop_assert!(false, "{v:?}"); }
            }
            prop_assert!(checksums_ok(&pkt));
            let m = meta(&pkt);
            prop_assert_eq!(m.dst, dst);
            let (xs, xd) = m.ports();
            let mut rep = build(p, m.dst, m.src, xd, xs, true);
            prop_assert_eq!(pl.handle(&mut rep, ZoneId::TUN, now), Verdict::Forward(zone));
            prop_assert!(checksums_ok(&rep));
            let r = meta(&rep);
            prop_assert_eq!((r.src, r.dst), (dst, src));
            prop_assert_eq!(r.ports(), if p == 2 { (sport, sport) } else { (dport, sport) });
        }
        let mut ext: HashSet<FlowKey> = HashSet::new();
        for (_, f) in pl.conntrack().iter() {
            prop_assert!(ext.insert(f.reply), "external tuple shared: {:?}", f.reply);
        }
    }
}

fn rr_pick(pl: &mut Pipeline, now: Instant, sport: u16) -> Verdict {
    let mut syn = synth::tcp(
        SocketAddr::new(ip("198.51.100.10"), sport),
        sa("100.64.0.200:80"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    pl.handle(&mut syn, ZoneId::TUN, now)
}

fn rr_rule() -> NatRule {
    let mut m = Rule::any(Action::Accept);
    m.proto = Some(proto::TCP);
    let bs = vec![backend("100.64.0.2", 80, 1), backend("100.64.0.3", 80, 1)];
    let mut r = dnat(m, bs, Strategy::RoundRobin);
    r.name = "web".into();
    r
}

#[test]
fn drained_backend_gets_no_new_flows_and_live_ones_go_on() {
    let (mut pl, now) = pipeline(vec![rr_rule()], accept_all());
    assert_eq!(rr_pick(&mut pl, now, 20000), Verdict::Forward(LAPTOP));
    let n = pl
        .nat_mut()
        .set_backend_admin(Some("web"), ip("100.64.0.2"), Some(80), Some(true))
        .unwrap();
    assert_eq!(n, 1);
    for i in 0..10 {
        assert_eq!(rr_pick(&mut pl, now, 20001 + i), Verdict::Forward(PHONE));
    }
    // the live flow to the drained backend keeps its binding
    assert_eq!(rr_pick(&mut pl, now, 20000), Verdict::Forward(LAPTOP));
    let st = pl.nat().backends();
    assert_eq!(st.len(), 2);
    assert!(!st[0].up && st[0].admin == Some(true) && st[1].up, "{st:?}");
    // errors name what is missing
    assert_eq!(
        pl.nat_mut()
            .set_backend_admin(Some("nope"), ip("100.64.0.2"), None, Some(true)),
        Err(BackendError::NoSuchRule("nope".into()))
    );
    assert!(matches!(
        pl.nat_mut()
            .set_backend_admin(None, ip("100.64.0.9"), None, Some(true)),
        Err(BackendError::NoSuchBackend(..))
    ));
    // undrain: both again
    pl.nat_mut()
        .set_backend_admin(None, ip("100.64.0.2"), None, Some(false))
        .unwrap();
    let mut seen = HashSet::new();
    for i in 0..4 {
        if let Verdict::Forward(z) = rr_pick(&mut pl, now, 21000 + i) {
            seen.insert(z);
        }
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn health_checks_take_a_backend_out_and_back() {
    let mut r = rr_rule();
    r.health = Some(HealthCheck {
        interval: std::time::Duration::from_secs(2),
        timeout: std::time::Duration::from_secs(1),
    });
    let (mut pl, now) = pipeline(vec![r], accept_all());
    let t = pl.nat().health_targets();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].addr, sa("100.64.0.3:80"));
    for _ in 0..health::FALL {
        pl.nat_mut().report_health(0, 1, false);
    }
    assert_eq!(pl.nat().backends()[1].healthy, Some(false));
    for i in 0..6 {
        assert_eq!(rr_pick(&mut pl, now, 30000 + i), Verdict::Forward(LAPTOP));
    }
    let mut changes = Vec::new();
    for _ in 0..health::RISE {
        changes.push(pl.nat_mut().report_health(0, 1, true));
    }
    assert_eq!(changes.last(), Some(&Some(true)));
    let mut seen = HashSet::new();
    for i in 0..4 {
        if let Verdict::Forward(z) = rr_pick(&mut pl, now, 31000 + i) {
            seen.insert(z);
        }
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_reload_keeps_drains_by_rule_name_and_backend() {
    let (mut pl, now) = pipeline(vec![rr_rule()], accept_all());
    pl.nat_mut()
        .set_backend_admin(None, ip("100.64.0.3"), Some(80), Some(true))
        .unwrap();
    let mut cfg = testbed::config(accept_all());
    cfg.nat = NatConfig {
        rules: vec![rr_rule()],
        local_nets: vec!["100.64.0.1/24".parse().unwrap()],
        peer_routes: cfg.peer_routes.clone(),
        mtu: 1420,
    };
    pl.reload(cfg);
    assert_eq!(pl.nat().backends()[1].admin, Some(true));
    for i in 0..4 {
        assert_eq!(rr_pick(&mut pl, now, 40000 + i), Verdict::Forward(LAPTOP));
    }
}
