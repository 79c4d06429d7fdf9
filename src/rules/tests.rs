//! Tests for the rule semantics (each field, both evaluators) and the
//! property test: the compiled classifier (every plan) equals the linear
//! reference on random rule sets and packets.

use super::classifier::Classifier;
use super::linear;
use super::*;
use crate::verdict::Chain;
use crate::zone::{ZoneId, ZoneTable};
use ipnetwork::IpNetwork;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn addrs(nets: &[&str], negate: bool) -> Option<AddrMatch> {
    Some(AddrMatch {
        nets: nets.iter().map(|s| net(s)).collect(),
        negate,
    })
}

fn ports(ranges: &[(u16, u16)], negate: bool) -> Option<PortMatch> {
    Some(PortMatch {
        ranges: ranges.to_vec(),
        negate,
    })
}

fn input(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> MatchInput {
    MatchInput {
        ingress: ZoneId::TUN,
        egress: ZoneId::peer(0),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        sport,
        dport,
        icmp: None,
        tcp_flags: if proto == 6 { Some(0x02) } else { None },
        ct_state: CtStateMask::NEW,
    }
}

fn icmp(src: &str, dst: &str, proto: u8, t: u8, c: u8) -> MatchInput {
    MatchInput {
        icmp: Some((t, c)),
        ..input(src, dst, proto, 0, 0)
    }
}

/// Evaluates one rule (accept; policy drop) with both evaluators, asserts they
/// agree, and says whether the rule matched.
fn matches(rule: &Rule, m: &MatchInput) -> bool {
    let chain = ChainDef {
        rules: vec![rule.clone()],
        policy: Action::Drop,
    };
    let lin = linear::evaluate(&chain, m);
    assert_eq!(
        Classifier::compile(&chain).classify(m),
        lin,
        "{rule:?} {m:?}"
    );
    assert_eq!(lin.rule.is_some(), linear::rule_matches(rule, m));
    lin.rule == Some(0)
}

fn rule(f: impl FnOnce(&mut Rule)) -> Rule {
    let mut r = Rule::any(Action::Accept);
    f(&mut r);
    r
}

#[test]
fn addresses_negation_and_families() {
    let r = rule(|r| r.dst = addrs(&["10.1.0.0/16", "2001:db8::/32"], false));
    assert!(matches(&r, &input("1.1.1.1", "10.1.2.3", 6, 1, 2)));
    assert!(!matches(&r, &input("1.1.1.1", "10.2.0.1", 6, 1, 2)));
    assert!(matches(&r, &input("::1", "2001:db8::5", 6, 1, 2)));
    assert!(!matches(&r, &input("::1", "2001:db9::5", 6, 1, 2)));
    // Host bits of the net are ignored.
    let r = rule(|r| r.src = addrs(&["192.168.1.77/24"], false));
    assert!(matches(&r, &input("192.168.1.1", "10.0.0.1", 17, 1, 2)));
    // A negated v4-only list matches every v6 address.
    let r = rule(|r| r.src = addrs(&["10.0.0.0/8"], true));
    assert!(!matches(&r, &input("10.9.9.9", "10.0.0.1", 6, 1, 2)));
    assert!(matches(&r, &input("11.0.0.1", "10.0.0.1", 6, 1, 2)));
    assert!(matches(&r, &input("2001:db8::1", "2001:db8::2", 6, 1, 2)));
    // A non-negated v4 list never matches v6; an empty list matches nothing,
    // an empty negated list everything.
    let r = rule(|r| r.src = addrs(&["0.0.0.0/0"], false));
    assert!(matches(&r, &input("8.8.8.8", "10.0.0.1", 6, 1, 2)));
    assert!(!matches(&r, &input("::1", "::2", 6, 1, 2)));
    let r = rule(|r| r.dst = addrs(&[], false));
    assert!(!matches(&r, &input("8.8.8.8", "10.0.0.1", 6, 1, 2)));
    let r = rule(|r| r.dst = addrs(&[], true));
    assert!(matches(&r, &input("8.8.8.8", "10.0.0.1", 6, 1, 2)));
    // /32 and /128 exact hosts.
    let r = rule(|r| r.dst = addrs(&["10.0.0.7/32", "2001:db8::7/128"], false));
    assert!(matches(&r, &input("1.1.1.1", "10.0.0.7", 6, 1, 2)));
    assert!(!matches(&r, &input("1.1.1.1", "10.0.0.6", 6, 1, 2)));
    assert!(matches(&r, &input("::1", "2001:db8::7", 6, 1, 2)));
}

#[test]
fn family_restricts_version() {
    let r4 = rule(|r| r.family = Some(4));
    let r6 = rule(|r| r.family = Some(6));
    let v4 = input("10.0.0.1", "10.0.0.2", 6, 1, 2);
    let v6 = input("2001:db8::1", "2001:db8::2", 6, 1, 2);
    assert!(matches(&r4, &v4) && !matches(&r4, &v6));
    assert!(matches(&r6, &v6) && !matches(&r6, &v4));
    assert!(!matches(&rule(|r| r.family = Some(0)), &v4));
}

#[test]
fn ports_ranges_and_protocols() {
    let r = rule(|r| r.dport = ports(&[(22, 22), (8000, 8080)], false));
    assert!(matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1, 22)));
    assert!(matches(&r, &input("10.0.0.1", "10.0.0.2", 17, 1, 8000)));
    assert!(matches(&r, &input("10.0.0.1", "10.0.0.2", 17, 1, 8080)));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 17, 1, 8081)));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1, 23)));
    // Ports only match TCP/UDP, even when the number would fit.
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 132, 1, 22)));
    // Negated: any other port, still only TCP/UDP.
    let r = rule(|r| r.sport = ports(&[(1024, 65535)], true));
    assert!(matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 80, 1)));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1024, 1)));
    assert!(!matches(&r, &icmp("10.0.0.1", "10.0.0.2", 1, 8, 0)));
    // A wide range (not indexed by port) behaves the same.
    let r = rule(|r| r.dport = ports(&[(1, 60000)], false));
    assert!(matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1, 60000)));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1, 0)));
    // An inverted range matches nothing.
    let r = rule(|r| r.dport = ports(&[(90, 80)], false));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 1, 85)));
}

#[test]
fn icmp_type_and_code() {
    let r = rule(|r| {
        r.proto = Some(1);
        r.icmp_type = Some(8);
    });
    assert!(matches(&r, &icmp("10.0.0.1", "10.0.0.2", 1, 8, 0)));
    assert!(!matches(&r, &icmp("10.0.0.1", "10.0.0.2", 1, 0, 0)));
    let r = rule(|r| {
        r.icmp_type = Some(3);
        r.icmp_code = Some(4);
    });
    assert!(matches(&r, &icmp("10.0.0.1", "10.0.0.2", 1, 3, 4)));
    assert!(!matches(&r, &icmp("10.0.0.1", "10.0.0.2", 1, 3, 3)));
    assert!(matches(&r, &icmp("2001:db8::1", "2001:db8::2", 58, 3, 4)));
    // Non-ICMP packets never match an ICMP field.
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 6, 3, 4)));
    let r = rule(|r| r.icmp_code = Some(0));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 17, 0, 0)));
}

#[test]
fn tcp_flags_mask_value() {
    // SYN without ACK: mask SYN|ACK (0x12), value SYN (0x02).
    let r = rule(|r| r.tcp_flags = Some((0x12, 0x02)));
    let mut m = input("10.0.0.1", "10.0.0.2", 6, 1, 2);
    assert!(matches(&r, &m));
    m.tcp_flags = Some(0x12);
    assert!(!matches(&r, &m));
    m.tcp_flags = Some(0x02 | 0x08);
    assert!(matches(&r, &m));
    assert!(!matches(&r, &input("10.0.0.1", "10.0.0.2", 17, 1, 2)));
}

#[test]
fn ct_state_mask() {
    let r =
        rule(|r| r.ct_state = Some(CtStateMask(CtStateMask::ESTABLISHED | CtStateMask::RELATED)));
    let mut m = input("10.0.0.1", "10.0.0.2", 6, 1, 2);
    assert!(!matches(&r, &m));
    for (st, want) in [
        (CtStateMask::ESTABLISHED, true),
        (CtStateMask::RELATED, true),
        (CtStateMask::INVALID, false),
        (CtStateMask::NEW, false),
    ] {
        m.ct_state = st;
        assert_eq!(matches(&r, &m), want, "state {st}");
    }
}

#[test]
fn zones_groups_and_negation() {
    let t = ZoneTable::new(vec![
        ("laptop".into(), vec!["staff".into()]),
        ("phone".into(), vec!["staff".into()]),
        ("guest".into(), vec![]),
    ]);
    let staff = t.resolve("group:staff").unwrap();
    let r = rule(|r| {
        r.ingress = Some(ZoneMatch {
            zones: staff.clone(),
            negate: false,
        })
    });
    let mut m = input("10.0.0.1", "10.0.0.2", 6, 1, 2);
    for (name, want) in [("laptop", true), ("phone", true), ("guest", false)] {
        m.ingress = t.peer(name).unwrap();
        assert_eq!(matches(&r, &m), want, "{name}");
    }
    m.ingress = ZoneId::TUN;
    assert!(!matches(&r, &m));
    let r = rule(|r| {
        r.egress = Some(ZoneMatch {
            zones: t.resolve("tun").unwrap(),
            negate: true,
        })
    });
    m.egress = ZoneId::TUN;
    assert!(!matches(&r, &m));
    m.egress = t.peer("guest").unwrap();
    assert!(matches(&r, &m));
    let empty = rule(|r| r.ingress = Some(ZoneMatch::default()));
    assert!(!matches(&empty, &m));
}

#[test]
fn first_match_wins_then_policy() {
    let chain = ChainDef {
        rules: vec![
            rule(|r| {
                r.dst = addrs(&["10.0.0.0/8"], false);
                r.dport = ports(&[(22, 22)], false);
                r.action = Action::Reject(RejectWith::TcpReset);
                r.log = true;
            }),
            rule(|r| r.dst = addrs(&["10.1.0.0/16"], false)),
            rule(|r| r.proto = Some(17)),
        ],
        policy: Action::Drop,
    };
    let c = Classifier::compile(&chain);
    let check = |m: MatchInput, action: Action, idx: Option<u32>, log: bool| {
        let d = c.classify(&m);
        assert_eq!(d, linear::evaluate(&chain, &m));
        assert_eq!(
            d,
            Decision {
                action,
                rule: idx,
                log
            }
        );
    };
    let reject = Action::Reject(RejectWith::TcpReset);
    check(
        input("1.1.1.1", "10.1.0.1", 6, 1, 22),
        reject,
        Some(0),
        true,
    );
    check(
        input("1.1.1.1", "10.1.0.1", 6, 1, 80),
        Action::Accept,
        Some(1),
        false,
    );
    check(
        input("1.1.1.1", "10.2.0.1", 17, 1, 80),
        Action::Accept,
        Some(2),
        false,
    );
    check(
        input("1.1.1.1", "10.2.0.1", 6, 1, 80),
        Action::Drop,
        None,
        false,
    );
}

#[test]
fn ruleset_chains_names_and_accept_all() {
    let named = Rule {
        name: Some("ssh".into()),
        ..rule(|r| r.dport = ports(&[(22, 22)], false))
    };
    let set = RuleSet::new(
        ChainDef {
            rules: vec![named, Rule::any(Action::Drop)],
            policy: Action::Accept,
        },
        ChainDef {
            rules: vec![],
            policy: Action::Drop,
        },
        ChainDef {
            rules: vec![],
            policy: Action::Accept,
        },
    );
    let m = input("10.0.0.1", "10.0.0.2", 6, 1, 22);
    assert_eq!(set.evaluate(Chain::Input, &m).rule, Some(0));
    assert_eq!(set.evaluate(Chain::Forward, &m).action, Action::Drop);
    assert_eq!(set.evaluate(Chain::Output, &m).action, Action::Accept);
    assert_eq!(set.rule_name(Chain::Input, 0), "ssh");
    assert_eq!(set.rule_name(Chain::Input, 1), "rule[1]");
    assert_eq!(set.rule_name(Chain::Input, 9), "rule[9]");
    assert_eq!(set.chain(Chain::Input).rules.len(), 2);
    let all = RuleSet::accept_all();
    for c in Chain::ALL {
        let d = all.evaluate(c, &m);
        assert_eq!((d.action, d.rule), (Action::Accept, None));
    }
}

#[test]
fn large_chains_of_both_shapes() {
    // Host-style (many distinct destinations, shared ports) and service-style
    // (distinct ports) chains compile to different plans; both must agree
    // with the reference.
    let mut host = Vec::new();
    let mut service = Vec::new();
    for i in 0..600u32 {
        let ip = Ipv4Addr::from(0x0a00_0000 | (i << 8));
        host.push(rule(|r| {
            r.dst = Some(AddrMatch {
                nets: vec![IpNetwork::new(IpAddr::V4(ip), 24).unwrap()],
                negate: false,
            });
            r.dport = ports(&[(443, 443)], false);
            r.proto = Some(6);
        }));
        service.push(rule(|r| {
            r.dport = ports(&[(1000 + i as u16, 1000 + i as u16)], false);
            r.dst = addrs(&["10.0.0.0/8"], false);
        }));
    }
    for rules in [host, service] {
        let chain = ChainDef {
            rules,
            policy: Action::Drop,
        };
        let c = Classifier::compile(&chain);
        for i in (0..1400u32).step_by(7) {
            let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0005 | (i << 8)));
            let mut m = input("1.1.1.1", "10.0.0.1", 6, 5, 443);
            m.dst = dst;
            assert_eq!(c.classify(&m), linear::evaluate(&chain, &m));
            m.dport = 1000 + i as u16;
            assert_eq!(c.classify(&m), linear::evaluate(&chain, &m));
        }
        let s = c.stats();
        assert!(s.keys > 0 && s.residual == 0, "{s:?}");
    }
}

// ---- property test ----

const V4_POOL: [u32; 4] = [0x0a00_0000, 0x0a01_0000, 0xc0a8_0100, 0x6440_0000];
const V6_POOL: [u128; 3] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
    0x2001_0db8_0001_0000_0000_0000_0000_0000,
    0xfe80_0000_0000_0000_0000_0000_0000_0000,
];
/// Noise bits added to pool addresses: few enough that packets and nets collide.
const V4_NOISE: u32 = 0x0000_0307;
const V6_NOISE: u128 = 0x0003_0000_0000_0000_0000_0000_0000_0107;
const PROTOS: [u8; 5] = [1, 6, 17, 58, 47];
const PORTS: [u16; 8] = [0, 22, 80, 443, 1000, 1500, 2000, 65535];

fn arb_addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    (0usize..4, any::<u128>()).prop_map(move |(i, noise)| {
        if v6 {
            let base = V6_POOL[i % V6_POOL.len()];
            IpAddr::V6(Ipv6Addr::from(base | (noise & V6_NOISE)))
        } else {
            let base = V4_POOL[i % V4_POOL.len()];
            IpAddr::V4(Ipv4Addr::from(base | (noise as u32 & V4_NOISE)))
        }
    })
}

fn arb_net() -> impl Strategy<Value = IpNetwork> {
    (any::<bool>(), any::<u8>(), arb_addr(false), arb_addr(true)).prop_map(|(v6, len, a4, a6)| {
        if v6 {
            // Mostly long prefixes (inside the pool), sometimes short ones.
            let len = if len < 32 { len % 33 } else { 96 + len % 33 };
            IpNetwork::new(a6, len).unwrap()
        } else {
            let len = if len < 40 { len % 33 } else { 16 + len % 17 };
            IpNetwork::new(a4, len).unwrap()
        }
    })
}

fn arb_addr_match() -> impl Strategy<Value = AddrMatch> {
    (
        prop::collection::vec(arb_net(), 0..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(nets, negate)| AddrMatch { nets, negate })
}

fn arb_port() -> impl Strategy<Value = u16> {
    prop_oneof![4 => prop::sample::select(PORTS.to_vec()), 1 => any::<u16>()]
}

fn arb_port_match() -> impl Strategy<Value = PortMatch> {
    let range = prop_oneof![
        3 => arb_port().prop_map(|p| (p, p)),
        2 => (arb_port(), 0u16..20).prop_map(|(p, w)| (p, p.saturating_add(w))),
        1 => (arb_port(), arb_port()),
    ];
    (
        prop::collection::vec(range, 0..3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ranges, negate)| PortMatch { ranges, negate })
}

fn arb_zone_match() -> impl Strategy<Value = ZoneMatch> {
    (
        prop::collection::vec(0u16..6, 0..3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(z, negate)| ZoneMatch {
            zones: z.into_iter().map(ZoneId).collect(),
            negate,
        })
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Accept),
        Just(Action::Drop),
        Just(Action::Reject(RejectWith::Default)),
        (0u8..16).prop_map(|c| Action::Reject(RejectWith::IcmpUnreachable(c))),
    ]
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.3, s)
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    let a = (
        opt(arb_zone_match()),
        opt(arb_zone_match()),
        prop::option::weighted(0.5, arb_addr_match()),
        prop::option::weighted(0.6, arb_addr_match()),
        opt(prop::sample::select(PROTOS.to_vec())),
        opt(arb_port_match()),
        prop::option::weighted(0.5, arb_port_match()),
    );
    let b = (
        prop::option::weighted(0.1, prop::sample::select(vec![0u8, 3, 8, 128])),
        prop::option::weighted(0.1, 0u8..3),
        prop::option::weighted(0.1, (0u8..0x20, 0u8..0x20)),
        prop::option::weighted(0.15, (0u8..16).prop_map(CtStateMask)),
        prop::option::weighted(0.15, prop::sample::select(vec![4u8, 6, 4, 6, 0])),
        arb_action(),
        any::<bool>(),
    );
    let c = (
        prop::option::weighted(0.15, arb_names()),
        prop::option::weighted(0.1, arb_names()),
        prop::option::weighted(0.1, arb_names()),
    );
    (a, b, c).prop_map(
        |(
            (ingress, egress, src, dst, proto, sport, dport),
            (icmp_type, icmp_code, tcp_flags, ct_state, family, action, log),
            (tls_sni, http_host, dns_qname),
        )| Rule {
            name: None,
            ingress,
            egress,
            src,
            dst,
            proto,
            sport,
            dport,
            icmp_type,
            icmp_code,
            tcp_flags,
            ct_state,
            family,
            action,
            log,
            tls_sni,
            http_host,
            dns_qname,
            block: None,
            capture: false,
        },
    )
}

/// Patterns for the L7 fields, and names that hit and miss them.
const L7_PATTERNS: &[&str] = &["example.net", "*.example.net", "~.*evil.*", "x.test"];
const L7_NAMES: &[&str] = &[
    "a.example.net",
    "example.net",
    "evil.org",
    "x.test",
    "other",
];

fn arb_names() -> impl Strategy<Value = NameList> {
    prop::collection::vec(prop::sample::select(L7_PATTERNS.to_vec()), 0..3).prop_map(|v| {
        NameList(
            v.into_iter()
                .filter_map(|p| NamePattern::parse(p).ok())
                .collect(),
        )
    })
}

fn arb_input() -> impl Strategy<Value = MatchInput> {
    (
        (
            0u16..7,
            0u16..7,
            prop::bool::weighted(0.4),
            prop::bool::weighted(0.05),
        ),
        (
            arb_addr(false),
            arb_addr(true),
            arb_addr(false),
            arb_addr(true),
        ),
        (
            prop::sample::select(PROTOS.to_vec()),
            arb_port(),
            arb_port(),
        ),
        (
            0u8..4,
            0u8..3,
            any::<u8>(),
            prop::sample::select(vec![1u8, 2, 4, 8, 0]),
        ),
    )
        .prop_map(
            |((zi, ze, v6, mixed), (s4, s6, d4, d6), (proto, sport, dport), (it, ic, fl, ct))| {
                let (src, dst) = match (v6, mixed) {
                    (false, false) => (s4, d4),
                    (true, false) => (s6, d6),
                    (false, true) => (s4, d6),
                    (true, true) => (s6, d4),
                };
                let ports = proto == 6 || proto == 17;
                MatchInput {
                    ingress: ZoneId(zi),
                    egress: ZoneId(ze),
                    src,
                    dst,
                    proto,
                    sport: if ports { sport } else { 0 },
                    dport: if ports { dport } else { 0 },
                    icmp: (proto == 1 || proto == 58)
                        .then_some(([0u8, 3, 8, 128][it as usize], ic)),
                    tcp_flags: (proto == 6).then_some(fl & 0x3f),
                    ct_state: ct,
                }
            },
        )
}

fn arb_case() -> impl Strategy<Value = (ChainDef, Vec<MatchInput>)> {
    (
        prop::collection::vec(arb_rule(), 0..60),
        arb_action(),
        prop::collection::vec(arb_input(), 48),
    )
        .prop_map(|(rules, policy, inputs)| (ChainDef { rules, policy }, inputs))
}

/// Inputs built from the rules' own values (the first net/port/zone of each
/// rule), so that most rules are hit by some packet.
fn inputs_from_rules(chain: &ChainDef, base: &[MatchInput]) -> Vec<MatchInput> {
    chain
        .rules
        .iter()
        .zip(base.iter().cycle())
        .map(|(r, b)| {
            let mut m = *b;
            if let Some(n) = r.src.as_ref().and_then(|a| a.nets.first()) {
                m.src = n.ip();
            }
            if let Some(n) = r.dst.as_ref().and_then(|a| a.nets.first()) {
                m.dst = n.ip();
            }
            if let Some(p) = r.proto {
                m.proto = p;
            }
            if let Some(p) = r.dport.as_ref().and_then(|p| p.ranges.first()) {
                m.dport = p.1;
            }
            if let Some(p) = r.sport.as_ref().and_then(|p| p.ranges.first()) {
                m.sport = p.0;
            }
            if let Some(z) = r.ingress.as_ref().and_then(|z| z.zones.iter().next()) {
                m.ingress = z;
            }
            m
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The compiled classifier (the chosen plan and every other plan) gives
    /// the linear reference's decision on every input.
    #[test]
    fn classifier_equals_linear((chain, inputs) in arb_case()) {
        let derived = inputs_from_rules(&chain, &inputs);
        let all: Vec<MatchInput> = inputs.iter().chain(&derived).copied().collect();
        let mut compiled = vec![Classifier::compile(&chain)];
        compiled.extend(classifier::all_plans(&chain));
        for m in &all {
            let want = linear::evaluate(&chain, m);
            for c in &compiled {
                prop_assert_eq!(c.classify(m), want, "input {:?}", m);
            }
            // With the L7 name known (or known to be absent).
            let names = [L7Kind::TlsSni, L7Kind::HttpHost, L7Kind::DnsQname]
                .into_iter()
                .flat_map(|k| L7_NAMES.iter().map(move |n| Some(L7Name::new(k, n.as_bytes()))))
                .chain([None]);
            for name in names {
                let want = linear::evaluate_named(&chain, m, name.as_ref());
                for c in &compiled {
                    prop_assert_eq!(c.classify_named(m, name.as_ref()), want, "input {:?} {:?}", m, name);
                }
            }
        }
    }
}

/// The generators are useful: a good share of random packets hit a rule, and
/// the derived packets hit most rules.
#[test]
fn generators_hit_rules() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut hits, mut total, mut derived_hits, mut derived_total) = (0, 0, 0, 0);
    for _ in 0..200 {
        let (chain, inputs) = arb_case().new_tree(&mut runner).unwrap().current();
        for m in &inputs {
            total += 1;
            hits += usize::from(linear::evaluate(&chain, m).rule.is_some());
        }
        for m in inputs_from_rules(&chain, &inputs) {
            derived_total += 1;
            derived_hits += usize::from(linear::evaluate(&chain, &m).rule.is_some());
        }
    }
    assert!(hits * 5 > total, "random inputs hit {hits}/{total}");
    assert!(
        derived_hits * 2 > derived_total,
        "derived inputs hit {derived_hits}/{derived_total}"
    );
}

#[test]
fn l7_fields_are_alternatives_and_need_a_name() {
    let list = |p: &str| Some(NameList(vec![NamePattern::parse(p).unwrap()]));
    let r = Rule {
        tls_sni: list("*.example.net"),
        dns_qname: list("example.net"),
        ..Rule::any(Action::Drop)
    };
    let n = |k, s: &str| L7Name::new(k, s.as_bytes());
    assert!(r.has_l7());
    assert!(r.l7_matches(Some(&n(L7Kind::TlsSni, "a.example.net"))));
    assert!(!r.l7_matches(Some(&n(L7Kind::TlsSni, "example.net"))));
    assert!(r.l7_matches(Some(&n(L7Kind::DnsQname, "EXAMPLE.net."))));
    // No http_host list: an HTTP name never matches this rule.
    assert!(!r.l7_matches(Some(&n(L7Kind::HttpHost, "a.example.net"))));
    assert!(!r.l7_matches(None));
    // A rule without L7 fields matches whatever the name.
    assert!(Rule::any(Action::Accept).l7_matches(None));
    // Unknown name (evaluate) vs known (evaluate_named).
    let chain = ChainDef {
        rules: vec![r, Rule::any(Action::Accept)],
        policy: Action::Drop,
    };
    let m = input("10.0.0.1", "10.0.0.2", 6, 1000, 443);
    assert_eq!(linear::evaluate(&chain, &m).rule, Some(0));
    assert_eq!(linear::evaluate_named(&chain, &m, None).rule, Some(1));
    let c = Classifier::compile(&chain);
    assert_eq!(c.classify(&m).rule, Some(0));
    assert_eq!(
        c.classify_named(&m, Some(&n(L7Kind::TlsSni, "x.example.net")))
            .rule,
        Some(0)
    );
    assert_eq!(
        c.classify_named(&m, Some(&n(L7Kind::TlsSni, "example.org")))
            .rule,
        Some(1)
    );
}
