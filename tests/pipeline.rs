//! Pipeline scenarios end to end through `Pipeline::handle`: synthesized
//! packets (`packet::synth`) on the fixed testbed and on configs loaded from
//! TOML text, checking verdicts, generated replies (parsed back), log events
//! and counters. Every packet handed in is followed by a check of the counter
//! invariants (one verdict per packet, one drop reason per drop/reject).

#![allow(clippy::unwrap_used)]

use portcullis::config::load_str;
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags::{ACK, PSH, RST, SYN};
use portcullis::packet::{self, proto, L4};
use portcullis::pipeline::{testbed, Pipeline, PipelineConfig, Transmit};
use portcullis::rules::{Action, ChainDef, CtStateMask, PortMatch, RejectWith, Rule};
use portcullis::verdict::{Chain, DropReason, Verdict};
use portcullis::zone::ZoneId;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const LAPTOP: ZoneId = ZoneId(ZoneId::FIRST_PEER);
const PHONE: ZoneId = ZoneId(ZoneId::FIRST_PEER + 1);
const TUN: ZoneId = ZoneId::TUN;

/// Addresses of the testbed (and of the TOML configs below) per family.
#[derive(Clone, Copy)]
struct Fam {
    v6: bool,
}

impl Fam {
    fn ip(self, v4: &str, v6: &str) -> IpAddr {
        if self.v6 { v6 } else { v4 }.parse().unwrap()
    }
    fn laptop(self) -> IpAddr {
        self.ip("100.64.0.2", "2001:db8:64::2")
    }
    fn phone(self) -> IpAddr {
        self.ip("100.64.0.3", "2001:db8:64::3")
    }
    fn gw(self) -> IpAddr {
        self.ip("100.64.0.1", "2001:db8:64::1")
    }
    /// A server behind the TUN.
    fn server(self) -> IpAddr {
        self.ip("203.0.113.2", "2001:db8:203::2")
    }
    /// A router behind the TUN that sends ICMP errors.
    fn router(self) -> IpAddr {
        self.ip("198.51.100.9", "2001:db8:ff::9")
    }
}

const BOTH: [Fam; 2] = [Fam { v6: false }, Fam { v6: true }];

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let spec = TcpSpec {
        flags,
        seq,
        ack,
        window: 65535,
        wscale: (flags & SYN != 0).then_some(7),
        mss: (flags & SYN != 0).then_some(1380),
    };
    synth::tcp(src, dst, spec, payload).unwrap()
}

fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    synth::udp(src, dst, payload).unwrap()
}

/// A pipeline plus a clock; every packet is followed by the counter checks.
struct Harness {
    p: Pipeline,
    now: Instant,
}

impl Harness {
    fn new(cfg: PipelineConfig) -> Self {
        let now = Instant::now();
        Harness {
            p: Pipeline::new(cfg, testbed::KEY, now),
            now,
        }
    }

    fn testbed(forward: ChainDef) -> Self {
        Self::new(testbed::config(forward))
    }

    fn toml(text: &str) -> Self {
        Self::new(toml_cfg(text))
    }

    fn send(&mut self, mut pkt: Vec<u8>, zone: ZoneId) -> Verdict {
        let v = self.p.handle(&mut pkt, zone, self.now);
        check_counters(&self.p);
        v
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.p.poll_transmit()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Index of the rule called `name` in `chain`.
    fn rule(&self, chain: Chain, name: &str) -> u32 {
        self.p
            .rules()
            .chain(chain)
            .rules
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no rule {name} in {chain:?}")) as u32
    }

    /// A TCP handshake client -> server (client in `zone`, server behind the TUN
    /// or in `server_zone`), each packet asserted forwarded.
    fn handshake(&mut self, c: SocketAddr, s: SocketAddr, cz: ZoneId, sz: ZoneId) {
        assert_eq!(
            self.send(tcp(c, s, SYN, 1000, 0, b""), cz),
            Verdict::Forward(sz)
        );
        assert_eq!(
            self.send(tcp(s, c, SYN | ACK, 5000, 1001, b""), sz),
            Verdict::Forward(cz)
        );
        assert_eq!(
            self.send(tcp(c, s, ACK, 1001, 5001, b""), cz),
            Verdict::Forward(sz)
        );
    }
}

/// The accounting invariants: every packet has exactly one outcome, and every
/// drop or reject is counted under exactly one reason.
fn check_counters(p: &Pipeline) {
    let s = p.stats();
    assert_eq!(
        s.received.packets,
        s.forwarded.packets
            + s.local.packets
            + s.held.packets
            + s.dropped.packets
            + s.rejected.packets,
        "every packet gets exactly one verdict: {s:?}"
    );
    assert_eq!(
        s.received.bytes,
        s.forwarded.bytes + s.local.bytes + s.held.bytes + s.dropped.bytes + s.rejected.bytes
    );
    assert_eq!(
        s.drop_reason_total(),
        s.dropped.packets + s.rejected.packets
    );
    assert!(s.fast_path.packets <= s.forwarded.packets);
}

/// Interface and the two testbed peers; rules and chain policies are appended.
const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24", "2001:db8:64::1/64"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32", "2001:db8:64::2/128"]
groups = ["staff"]

[[peer]]
name = "phone"
public_key = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA="
allowed_ips = ["100.64.0.3/32", "2001:db8:64::3/128"]
groups = ["guests"]
"#;

/// The usual first forward rule: replies and related packets pass.
const ESTABLISHED: &str = r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
"#;

fn toml_cfg(rules: &str) -> PipelineConfig {
    cfg_text(&format!("{BASE}\n{rules}"))
}

fn cfg_text(text: &str) -> PipelineConfig {
    let cfg = load_str(text, "test.toml").unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    PipelineConfig::from_config(&cfg)
}

fn port(p: u16) -> Option<PortMatch> {
    Some(PortMatch {
        ranges: vec![(p, p)],
        negate: false,
    })
}

/// Forward chain: established/related accepted, `dport` rejected with `with`,
/// everything else accepted.
fn reject_port(p: u16, proto_: u8, with: RejectWith) -> ChainDef {
    ChainDef {
        rules: vec![
            Rule {
                ct_state: Some(CtStateMask(CtStateMask::ESTABLISHED | CtStateMask::RELATED)),
                ..Rule::any(Action::Accept)
            },
            Rule {
                proto: Some(proto_),
                dport: port(p),
                ..Rule::any(Action::Reject(with))
            },
            Rule::any(Action::Accept),
        ],
        policy: Action::Drop,
    }
}

fn parse_reply(t: &Transmit) -> packet::PacketMeta {
    packet::parse(&t.packet).unwrap_or_else(|e| panic!("unparsable reply: {e}"))
}

// ---------------------------------------------------------------------------

#[test]
fn tcp_handshake_both_ways_takes_the_fast_path() {
    for f in BOTH {
        let mut h = Harness::testbed(reject_port(22, proto::TCP, RejectWith::Default));
        let (c, s) = (sa(f.laptop(), 40000), sa(f.server(), 443));
        h.handshake(c, s, LAPTOP, TUN);
        let data = tcp(c, s, ACK | PSH, 1001, 5001, &[7; 100]);
        assert_eq!(h.send(data, LAPTOP), Verdict::Forward(TUN));
        let reply = tcp(s, c, ACK | PSH, 5001, 1101, &[8; 50]);
        assert_eq!(h.send(reply, TUN), Verdict::Forward(LAPTOP));
        let st = h.p.stats();
        assert_eq!(st.flows_created, 1);
        // all but the SYN are established-flow packets
        assert_eq!(st.fast_path.packets, 4, "v6={}", f.v6);
        assert_eq!(st.forwarded.packets, 5);
        assert_eq!(h.p.conntrack().len(), 1);
        assert!(h.transmits().is_empty());
    }
}

#[test]
fn rejected_syn_gets_a_rst_to_the_sender() {
    for f in BOTH {
        let mut h = Harness::testbed(reject_port(22, proto::TCP, RejectWith::Default));
        let (c, s) = (sa(f.laptop(), 40001), sa(f.server(), 22));
        let v = h.send(tcp(c, s, SYN, 777, 0, b""), LAPTOP);
        assert_eq!(
            v,
            Verdict::Reject(DropReason::Rule {
                chain: Chain::Forward,
                rule: 1
            })
        );
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].zone, LAPTOP,
            "the RST goes back to the sender's zone"
        );
        let m = parse_reply(&out[0]);
        assert_eq!((m.src, m.dst), (s.ip(), c.ip()));
        let L4::Tcp(t) = m.l4 else {
            panic!("not tcp: {m:?}")
        };
        assert_eq!((t.sport, t.dport), (22, 40001));
        assert_eq!(t.flags, RST | ACK);
        assert_eq!(t.seq, 0);
        assert_eq!(t.ack, 778, "acks the SYN");
        assert_eq!(h.p.stats().replies_sent, 1);
        assert_eq!(h.p.conntrack().len(), 0, "a rejected SYN creates no flow");
    }
}

#[test]
fn rejected_ack_gets_a_rst_with_its_ack_as_seq() {
    // tcp_loose lets a mid-stream ACK start a flow; a reject then answers it
    // with seq = the segment's ack (RFC 9293 3.10.7.1).
    let mut h = Harness::toml(
        r#"
[conntrack]
tcp_loose = true
[[rule]]
chain = "forward"
proto = "tcp"
dport = 22
action = "reject"
"#,
    );
    let (c, s) = (
        sa(Fam { v6: false }.laptop(), 40002),
        sa(Fam { v6: false }.server(), 22),
    );
    let v = h.send(tcp(c, s, ACK, 10, 123_456, b""), LAPTOP);
    assert!(
        matches!(v, Verdict::Reject(DropReason::Rule { .. })),
        "{v:?}"
    );
    let out = h.transmits();
    assert_eq!(out.len(), 1);
    let L4::Tcp(t) = parse_reply(&out[0]).l4 else {
        panic!()
    };
    assert_eq!((t.flags, t.seq), (RST, 123_456));
}

#[test]
fn rejected_udp_gets_port_unreachable_quoting_the_original() {
    for f in BOTH {
        let mut h = Harness::testbed(reject_port(161, proto::UDP, RejectWith::Default));
        let (c, s) = (sa(f.laptop(), 5555), sa(f.server(), 161));
        let orig = udp(c, s, b"public-get");
        let v = h.send(orig.clone(), LAPTOP);
        assert!(matches!(
            v,
            Verdict::Reject(DropReason::Rule {
                chain: Chain::Forward,
                rule: 1
            })
        ));
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].zone, LAPTOP);
        let m = parse_reply(&out[0]);
        assert_eq!((m.src, m.dst), (s.ip(), c.ip()));
        let L4::Icmp(i) = m.l4 else {
            panic!("not icmp: {m:?}")
        };
        let (ty, code, p) = if f.v6 {
            (1, 4, proto::ICMPV6)
        } else {
            (3, 3, proto::ICMP)
        };
        assert_eq!((m.proto, i.ty, i.code), (p, ty, code), "v6={}", f.v6);
        assert!(i.is_error);
        // the quoted packet is the original, byte for byte
        let quoted = &out[0].packet[usize::from(m.l4_offset) + 8..];
        assert_eq!(quoted, &orig[..quoted.len()]);
        assert_eq!(quoted.len(), orig.len(), "a small datagram is quoted whole");
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.src, inner.dst, inner.sport, inner.dport),
            (c.ip(), s.ip(), 5555, 161)
        );
    }
}

#[test]
fn reject_with_admin_prohibited_from_toml() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[chains.forward]
policy = "reject"
reject_with = "admin-prohibited"
"#,
        );
        let v = h.send(udp(sa(f.laptop(), 1), sa(f.server(), 2), b"x"), LAPTOP);
        assert_eq!(v, Verdict::Reject(DropReason::Policy(Chain::Forward)));
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        let L4::Icmp(i) = parse_reply(&out[0]).l4 else {
            panic!()
        };
        // v4 code 13, mapped to ICMPv6 code 1 (RFC 4443 3.1)
        assert_eq!((i.ty, i.code), if f.v6 { (1, 1) } else { (3, 13) });
    }
}

#[test]
fn dropped_packet_yields_nothing() {
    for f in BOTH {
        let mut h = Harness::toml("");
        let v = h.send(
            tcp(sa(f.laptop(), 40000), sa(f.server(), 443), SYN, 1, 0, b""),
            LAPTOP,
        );
        assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Forward)));
        let v = h.send(udp(sa(f.laptop(), 40000), sa(f.server(), 53), b"q"), LAPTOP);
        assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Forward)));
        assert!(h.transmits().is_empty());
        let s = h.p.stats();
        assert_eq!((s.replies_sent, s.replies_suppressed), (0, 0));
        assert_eq!(s.drop_reasons.get("policy"), Some(&2));
    }
}

#[test]
fn no_reply_to_an_icmp_error_or_a_rst() {
    for f in BOTH {
        // invalid packets are rejected explicitly, so both reach the reject action
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule {
                ct_state: Some(CtStateMask(CtStateMask::INVALID)),
                ..Rule::any(Action::Reject(RejectWith::Default))
            }],
            policy: Action::Reject(RejectWith::Default),
        });
        let (c, s) = (sa(f.laptop(), 4000), sa(f.server(), 80));
        let rst = tcp(c, s, RST | ACK, 1, 2, b"");
        assert!(matches!(h.send(rst, LAPTOP), Verdict::Reject(_)));
        let quoted = udp(sa(f.server(), 53), sa(f.laptop(), 9), b"x");
        let (ty, code) = if f.v6 { (1, 4) } else { (3, 3) };
        let err = synth::icmp_raw(f.laptop(), f.server(), ty, code, [0; 4], &quoted).unwrap();
        assert!(matches!(h.send(err, LAPTOP), Verdict::Reject(_)));
        // a new ICMP error with no flow (policy reject)
        let err2 =
            synth::icmp_raw(f.laptop(), f.server(), ty, code, [0; 4], &quoted[..20]).unwrap();
        assert!(matches!(h.send(err2, LAPTOP), Verdict::Reject(_)));
        assert!(h.transmits().is_empty(), "v6={}", f.v6);
        let s = h.p.stats();
        assert_eq!((s.replies_sent, s.replies_suppressed), (0, 3));
        // ...while an ordinary packet still gets its answer
        assert!(matches!(
            h.send(udp(c, s_addr(f), b"x"), LAPTOP),
            Verdict::Reject(_)
        ));
        assert_eq!(h.transmits().len(), 1);
    }
}

fn s_addr(f: Fam) -> SocketAddr {
    sa(f.server(), 53)
}

#[test]
fn reject_replies_are_rate_limited() {
    for f in BOTH {
        let mut cfg = testbed::config(reject_port(22, proto::TCP, RejectWith::Default));
        cfg.reply_per_sec = 2;
        cfg.reply_burst = 3;
        let mut h = Harness::new(cfg);
        for i in 0..10u16 {
            let syn = tcp(sa(f.laptop(), 1000 + i), sa(f.server(), 22), SYN, 1, 0, b"");
            assert!(matches!(h.send(syn, LAPTOP), Verdict::Reject(_)));
        }
        assert_eq!(h.transmits().len(), 3, "the burst");
        assert_eq!(h.p.stats().replies_suppressed, 7);
        // one second later, two more tokens
        h.advance(Duration::from_secs(1));
        for i in 0..5u16 {
            let syn = tcp(sa(f.laptop(), 2000 + i), sa(f.server(), 22), SYN, 1, 0, b"");
            assert!(matches!(h.send(syn, LAPTOP), Verdict::Reject(_)));
        }
        assert_eq!(h.transmits().len(), 2);
        let s = h.p.stats();
        assert_eq!((s.replies_sent, s.replies_suppressed), (5, 10));
        assert_eq!(s.rejected.packets, 15);
    }
}

#[test]
fn invalid_is_dropped_unless_a_rule_names_the_state() {
    for f in BOTH {
        let bare_ack = || tcp(sa(f.laptop(), 40000), sa(f.server(), 443), ACK, 5, 6, b"");
        // accept-everything does not decide invalid packets
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule::any(Action::Accept)],
            policy: Action::Accept,
        });
        assert_eq!(
            h.send(bare_ack(), LAPTOP),
            Verdict::Drop(DropReason::Invalid)
        );
        assert_eq!(h.p.stats().drop_reasons.get("invalid"), Some(&1));
        assert_eq!(h.p.conntrack().len(), 0);

        // a rule naming invalid decides: accept (no flow is created) ...
        let mut h = Harness::testbed(ChainDef {
            rules: vec![
                Rule {
                    ct_state: Some(CtStateMask(CtStateMask::INVALID)),
                    ..Rule::any(Action::Accept)
                },
                Rule::any(Action::Drop),
            ],
            policy: Action::Drop,
        });
        assert_eq!(h.send(bare_ack(), LAPTOP), Verdict::Forward(TUN));
        assert_eq!(
            h.p.conntrack().len(),
            0,
            "an invalid packet never creates a flow"
        );
        assert_eq!(h.p.stats().rule(Chain::Forward, 0).packets, 1);

        // ... or drop, counted as that rule
        let mut h = Harness::toml(
            r#"
[chains.forward]
policy = "accept"
[[rule]]
chain = "forward"
name = "no-invalid"
state = "invalid"
action = "drop"
"#,
        );
        let idx = h.rule(Chain::Forward, "no-invalid");
        assert_eq!(
            h.send(bare_ack(), LAPTOP),
            Verdict::Drop(DropReason::Rule {
                chain: Chain::Forward,
                rule: idx
            })
        );
        assert_eq!(h.p.stats().drop_reasons.get("rule"), Some(&1));
    }
}

#[test]
fn spoofed_source_from_a_peer_is_dropped() {
    for f in BOTH {
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule::any(Action::Accept)],
            policy: Action::Accept,
        });
        // the laptop sends with the phone's address, and with a foreign one
        let v = h.send(udp(sa(f.phone(), 1), sa(f.server(), 53), b"x"), LAPTOP);
        assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
        let v = h.send(
            udp(
                sa(f.server(), 1),
                sa(f.ip("8.8.8.8", "2001:4860::8888"), 53),
                b"x",
            ),
            LAPTOP,
        );
        assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
        // its own address passes
        let v = h.send(udp(sa(f.laptop(), 1), sa(f.server(), 53), b"x"), LAPTOP);
        assert_eq!(v, Verdict::Forward(TUN));
        assert_eq!(h.p.stats().drop_reasons.get("spoofed_source"), Some(&2));
        assert!(h.transmits().is_empty());
    }
}

#[test]
fn peer_to_peer_goes_through_the_forward_chain() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
name = "laptop-to-phone"
from = "laptop"
to = "phone"
action = "accept"
"#,
        );
        let idx = h.rule(Chain::Forward, "laptop-to-phone");
        let (l, p) = (sa(f.laptop(), 50000), sa(f.phone(), 8080));
        h.handshake(l, p, LAPTOP, PHONE);
        assert_eq!(h.p.stats().rule(Chain::Forward, idx).packets, 3);
        // the phone may not open a connection to the laptop
        let v = h.send(
            tcp(sa(f.phone(), 50001), sa(f.laptop(), 22), SYN, 1, 0, b""),
            PHONE,
        );
        assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Forward)));
        // nor reach the TUN side
        let v = h.send(udp(sa(f.phone(), 5), sa(f.server(), 53), b"q"), PHONE);
        assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Forward)));
    }
}

#[test]
fn the_gateways_own_address_goes_through_input() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[chains.forward]
policy = "accept"
[[rule]]
chain = "input"
name = "ping-gw"
from = "laptop"
proto = "icmp"
icmp_type = "echo-request"
action = "accept"
[[rule]]
chain = "input"
name = "ping6-gw"
from = "laptop"
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
"#,
        );
        let ping = synth::icmp_echo(f.laptop(), f.gw(), 9, 1, false, b"hi").unwrap();
        // the host behind the TUN answers for the gateway's addresses
        assert_eq!(h.send(ping, LAPTOP), Verdict::Forward(TUN));
        let name = if f.v6 { "ping6-gw" } else { "ping-gw" };
        assert_eq!(
            h.p.stats()
                .rule(Chain::Input, h.rule(Chain::Input, name))
                .packets,
            1
        );
        let pong = synth::icmp_echo(f.gw(), f.laptop(), 9, 1, true, b"hi").unwrap();
        assert_eq!(h.send(pong, TUN), Verdict::Forward(LAPTOP));
        // forward's accept policy does not apply to the gateway itself
        let ssh = tcp(sa(f.laptop(), 40000), sa(f.gw(), 22), SYN, 1, 0, b"");
        assert_eq!(
            h.send(ssh, LAPTOP),
            Verdict::Drop(DropReason::Policy(Chain::Input))
        );
        // the phone may not ping it
        let ping = synth::icmp_echo(f.phone(), f.gw(), 9, 1, false, b"hi").unwrap();
        assert_eq!(
            h.send(ping, PHONE),
            Verdict::Drop(DropReason::Policy(Chain::Input))
        );
        assert_eq!(h.p.stats().policy(Chain::Input).packets, 2);
        assert_eq!(h.p.stats().policy(Chain::Forward).packets, 0);
    }
}

#[test]
fn the_gateways_own_traffic_goes_through_output() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[chains.forward]
policy = "accept"
[chains.output]
policy = "drop"
[[rule]]
chain = "output"
name = "gw-to-laptop"
to = "laptop"
proto = "udp"
action = "accept"
"#,
        );
        let v = h.send(udp(sa(f.gw(), 53), sa(f.laptop(), 999), b"a"), TUN);
        assert_eq!(v, Verdict::Forward(LAPTOP));
        assert_eq!(
            h.p.stats()
                .rule(Chain::Output, h.rule(Chain::Output, "gw-to-laptop"))
                .packets,
            1
        );
        let v = h.send(udp(sa(f.gw(), 53), sa(f.phone(), 999), b"a"), TUN);
        assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Output)));
        // another host behind the TUN is forwarded, not output
        let v = h.send(udp(sa(f.server(), 53), sa(f.phone(), 999), b"a"), TUN);
        assert_eq!(v, Verdict::Forward(PHONE));
    }
}

#[test]
fn icmp_error_related_to_a_flow_passes_when_related_is_accepted() {
    for f in BOTH {
        let rules_with = r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
from = "laptop"
state = "new"
action = "accept"
"#;
        let rules_without = r#"
[[rule]]
chain = "forward"
state = "established"
action = "accept"
[[rule]]
chain = "forward"
from = "laptop"
state = "new"
action = "accept"
"#;
        for (text, passes) in [(rules_with, true), (rules_without, false)] {
            let mut h = Harness::toml(text);
            let (c, s) = (sa(f.laptop(), 33434), sa(f.server(), 33435));
            let orig = udp(c, s, b"probe");
            assert_eq!(h.send(orig.clone(), LAPTOP), Verdict::Forward(TUN));
            let (ty, code) = if f.v6 { (1, 4) } else { (3, 3) };
            let err = synth::icmp_raw(f.router(), f.laptop(), ty, code, [0; 4], &orig).unwrap();
            let v = h.send(err, TUN);
            if passes {
                // it goes where the flow's replies go: the laptop's zone
                assert_eq!(v, Verdict::Forward(LAPTOP), "v6={}", f.v6);
            } else {
                assert_eq!(v, Verdict::Drop(DropReason::Policy(Chain::Forward)));
            }
            // an error about a flow that does not exist is invalid
            let other = udp(c, sa(f.server(), 9), b"never sent");
            let err = synth::icmp_raw(f.router(), f.laptop(), ty, code, [0; 4], &other).unwrap();
            assert_eq!(h.send(err, TUN), Verdict::Drop(DropReason::Invalid));
        }
    }
}

#[test]
fn reload_revoking_a_port_cuts_a_live_flow() {
    let allow = |port: u16| {
        toml_cfg(&format!(
            r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
name = "web"
from = "laptop"
proto = "tcp"
dport = {port}
action = "accept"
log = true
"#
        ))
    };
    for f in BOTH {
        let (c, s) = (sa(f.laptop(), 41000), sa(f.server(), 443));
        // a reload that keeps the port allowed keeps the flow
        let mut h = Harness::new(allow(443));
        h.handshake(c, s, LAPTOP, TUN);
        while h.p.poll_event().is_some() {}
        h.p.reload(allow(443));
        assert_eq!(
            h.send(tcp(s, c, ACK | PSH, 5001, 1001, b"hello"), TUN),
            Verdict::Forward(LAPTOP)
        );
        assert_eq!(
            h.send(tcp(c, s, ACK, 1001, 5006, b""), LAPTOP),
            Verdict::Forward(TUN)
        );
        assert_eq!(h.p.stats().flows_revoked, 0);
        assert_eq!(h.p.conntrack().len(), 1);
        assert!(
            h.p.poll_event().is_none(),
            "no new log events on a kept flow"
        );

        // a reload that revokes it cuts it on its next packet (either direction)
        h.p.reload(allow(80));
        let v = h.send(tcp(s, c, ACK | PSH, 5006, 1001, b"more"), TUN);
        assert_eq!(
            v,
            Verdict::Drop(DropReason::Policy(Chain::Forward)),
            "v6={}",
            f.v6
        );
        assert_eq!(h.p.stats().flows_revoked, 1);
        assert_eq!(h.p.conntrack().len(), 0);
        let ev = h.p.poll_event().expect("a revocation event");
        assert!(ev.revoked);
        assert_eq!(
            (ev.src, ev.dst, ev.sport, ev.dport),
            (c.ip(), s.ip(), 41000, 443)
        );
        assert_eq!((ev.ingress, ev.egress), (LAPTOP, TUN));
        // later packets of the cut flow are invalid (no flow), not forwarded
        let v = h.send(tcp(c, s, ACK, 1001, 5010, b""), LAPTOP);
        assert_eq!(v, Verdict::Drop(DropReason::Invalid));
        assert!(h.transmits().is_empty());
    }
}

#[test]
fn reload_to_a_reject_rule_tells_the_sender() {
    let cfg = |action: &str| {
        toml_cfg(&format!(
            r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
name = "web"
from = "laptop"
proto = "tcp"
dport = 443
action = "{action}"
"#
        ))
    };
    let f = Fam { v6: false };
    let (c, s) = (sa(f.laptop(), 41000), sa(f.server(), 443));
    let mut h = Harness::new(cfg("accept"));
    h.handshake(c, s, LAPTOP, TUN);
    h.p.reload(cfg("reject"));
    let v = h.send(tcp(c, s, ACK | PSH, 1001, 5001, b"GET"), LAPTOP);
    assert!(
        matches!(v, Verdict::Reject(DropReason::Rule { .. })),
        "{v:?}"
    );
    let out = h.transmits();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].zone, LAPTOP);
    let L4::Tcp(t) = parse_reply(&out[0]).l4 else {
        panic!()
    };
    assert_eq!((t.flags, t.seq), (RST, 5001));
}

#[test]
fn reload_moving_a_peer_address_revokes_its_flows_as_spoofed() {
    // After a reload the laptop's address belongs to the phone: the laptop's
    // live flow fails the anti-spoofing check of the re-check.
    let f = Fam { v6: false };
    let mut h = Harness::testbed(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Drop,
    });
    let (c, s) = (sa(f.laptop(), 41000), sa(f.server(), 443));
    h.handshake(c, s, LAPTOP, TUN);
    let mut cfg = testbed::config(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Drop,
    });
    cfg.peer_routes[0].1.retain(|n| n.ip() != f.laptop());
    cfg.peer_routes[1].1.push("100.64.0.2/32".parse().unwrap());
    h.p.reload(cfg);
    let v = h.send(tcp(c, s, ACK, 1001, 5001, b""), LAPTOP);
    assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
    assert_eq!(h.p.stats().flows_revoked, 1);
}

#[test]
fn reload_that_renumbers_peers_keeps_the_kept_peers_flows() {
    // Zones are numbered by peer order. Removing the first peer moves the
    // second one from zone peer(1) to peer(0); reordering swaps them. Live
    // flows follow their peers: nothing of a kept peer is cut, nothing is
    // attributed to the other peer, and the removed peer's flows end.
    let rules = format!(
        "{ESTABLISHED}{}",
        "[[rule]]\nchain = \"forward\"\nto = \"tun\"\nproto = \"tcp\"\ndport = 443\naction = \"accept\"\n"
    );
    // BASE's interface and peer blocks, the peers in the order given
    let blocks: Vec<&str> = BASE.split("[[peer]]").collect();
    let cfg = |order: &[usize]| {
        let peers: Vec<String> = order
            .iter()
            .map(|&i| format!("[[peer]]{}", blocks[i]))
            .collect();
        cfg_text(&format!("{}{}\n{rules}", blocks[0], peers.concat()))
    };
    let (laptop_block, phone_block) = (1, 2);
    for f in BOTH {
        let mut h = Harness::new(cfg(&[laptop_block, phone_block]));
        h.p.set_flow_log(true);
        let s = sa(f.server(), 443);
        let (lc, pc) = (sa(f.laptop(), 41000), sa(f.phone(), 42000));
        h.handshake(lc, s, LAPTOP, TUN);
        h.handshake(pc, s, PHONE, TUN);
        assert_eq!(h.p.conntrack().len(), 2);

        // reordered: the phone is peer(0) now, the laptop peer(1)
        h.p.reload(cfg(&[phone_block, laptop_block]));
        assert_eq!(h.p.conntrack().len(), 2);
        let (phone, laptop) = (ZoneId::peer(0), ZoneId::peer(1));
        assert_eq!(
            h.send(tcp(pc, s, ACK | PSH, 1001, 5001, b"hi"), phone),
            Verdict::Forward(TUN)
        );
        assert_eq!(
            h.send(tcp(s, pc, ACK, 5001, 1003, b""), TUN),
            Verdict::Forward(phone),
            "the reply goes to the phone's new zone"
        );
        assert_eq!(
            h.send(tcp(s, lc, ACK | PSH, 5001, 1001, b"yo"), TUN),
            Verdict::Forward(laptop)
        );
        assert_eq!(
            h.send(tcp(lc, s, ACK, 1001, 5003, b""), laptop),
            Verdict::Forward(TUN)
        );

        // the laptop removed: its flow ends, the phone's carries on
        h.p.reload(cfg(&[phone_block]));
        assert_eq!(h.p.conntrack().len(), 1);
        let ends: Vec<_> = std::iter::from_fn(|| h.p.poll_flow_end()).collect();
        assert_eq!(ends.len(), 1, "v6={}", f.v6);
        assert_eq!(ends[0].flow.orig.src, f.laptop());
        assert_eq!(ends[0].cause, portcullis::conntrack::EndCause::Removed);
        assert_eq!(
            h.send(tcp(pc, s, ACK | PSH, 1003, 5001, b"on"), phone),
            Verdict::Forward(TUN)
        );
        assert_eq!(
            h.send(tcp(s, pc, ACK, 5001, 1005, b""), TUN),
            Verdict::Forward(phone)
        );
        assert_eq!(h.p.stats().flows_revoked, 0, "v6={}", f.v6);
        assert_eq!(h.p.conntrack().len(), 1);
    }
}

#[test]
fn connection_limits_applied_by_a_reload_count_the_live_flows() {
    // Two flows from the laptop exist when a reload limits it to two at
    // once: a third is refused at once, and admitted after one ends.
    use portcullis::shaper::{ConnSpec, PeerLimits, ShaperConfig};
    let f = Fam { v6: false };
    let mut h = Harness::toml(&format!(
        "{ESTABLISHED}{}",
        "[[rule]]\nchain = \"forward\"\nfrom = \"laptop\"\naction = \"accept\"\n"
    ));
    let s = sa(f.server(), 443);
    let (c1, c2, c3) = (
        sa(f.laptop(), 41001),
        sa(f.laptop(), 41002),
        sa(f.laptop(), 41003),
    );
    h.handshake(c1, s, LAPTOP, TUN);
    h.handshake(c2, s, LAPTOP, TUN);
    let conns = ConnSpec {
        max_concurrent: Some(2),
        ..ConnSpec::default()
    };
    let limits = ShaperConfig {
        peers: vec![(
            LAPTOP,
            PeerLimits {
                conns,
                ..PeerLimits::default()
            },
        )],
        ..ShaperConfig::default()
    };
    h.p.set_shaper(&limits);
    assert_eq!(
        h.send(tcp(c3, s, SYN, 1000, 0, b""), LAPTOP),
        Verdict::Drop(DropReason::RateLimited),
        "the two live flows count against the new limit"
    );
    // the first flow ends (RST): room for one more
    assert_eq!(
        h.send(tcp(c1, s, RST | ACK, 1001, 5001, b""), LAPTOP),
        Verdict::Forward(TUN)
    );
    h.advance(Duration::from_secs(30));
    h.p.handle_timeout(h.now);
    assert_eq!(h.p.conntrack().len(), 1);
    h.handshake(c3, s, LAPTOP, TUN);
}

/// Fragments an IP datagram into pieces covering the given byte ranges of its
/// payload (ranges may overlap, to build evasion attempts).
fn fragments(pkt: &[u8], ranges: &[(usize, usize)], id: u32) -> Vec<Vec<u8>> {
    portcullis::packet::fragment::split(pkt, ranges, id).unwrap()
}

#[test]
fn allowed_fragmented_datagram_is_released_to_the_egress_zone() {
    for f in BOTH {
        let mut h = Harness::testbed(reject_port(161, proto::UDP, RejectWith::Default));
        let dgram = udp(sa(f.laptop(), 7000), sa(f.server(), 4789), &[0xab; 3000]);
        let n = dgram.len() - if f.v6 { 40 } else { 20 };
        let frags = fragments(&dgram, &[(0, 1232), (1232, 2464), (2464, n)], 77);
        // arrival out of order
        let order = [1usize, 2, 0];
        for (k, &i) in order.iter().enumerate() {
            assert_eq!(h.send(frags[i].clone(), LAPTOP), Verdict::Held);
            if k < 2 {
                assert!(
                    h.transmits().is_empty(),
                    "nothing leaves before the datagram is complete"
                );
            }
        }
        let out = h.transmits();
        assert_eq!(out.len(), 3, "v6={}", f.v6);
        for (t, &i) in out.iter().zip(&order) {
            assert_eq!(t.zone, TUN);
            assert_eq!(t.packet, frags[i], "released unchanged, in arrival order");
        }
        let s = h.p.stats();
        assert_eq!(s.held.packets, 3);
        assert_eq!(s.flows_created, 1);
        // the reply (unfragmented) is part of the flow
        let reply = udp(sa(f.server(), 4789), sa(f.laptop(), 7000), b"ok");
        assert_eq!(h.send(reply, TUN), Verdict::Forward(LAPTOP));
        assert_eq!(h.p.stats().fast_path.packets, 1);
    }
}

#[test]
fn overlapping_fragments_are_dropped() {
    for f in BOTH {
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule::any(Action::Accept)],
            policy: Action::Accept,
        });
        let dgram = udp(sa(f.laptop(), 7000), sa(f.server(), 53), &[0x11; 2000]);
        let n = dgram.len() - if f.v6 { 40 } else { 20 };
        // the second fragment rewrites bytes 1000..1024 of the first
        let frags = fragments(&dgram, &[(0, 1024), (1000 / 8 * 8, n)], 99);
        assert_eq!(h.send(frags[0].clone(), LAPTOP), Verdict::Held);
        assert_eq!(
            h.send(frags[1].clone(), LAPTOP),
            Verdict::Drop(DropReason::Fragment)
        );
        // the datagram stays poisoned: a clean retry of the same id is dropped too
        let clean = fragments(&dgram, &[(0, 1024), (1024, n)], 99);
        for c in clean {
            assert_eq!(h.send(c, LAPTOP), Verdict::Drop(DropReason::Fragment));
        }
        assert!(h.transmits().is_empty());
        assert_eq!(h.p.stats().drop_reasons.get("fragment"), Some(&3));
    }
}

#[test]
fn rule_dropped_fragmented_datagram_releases_nothing() {
    for f in BOTH {
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule {
                proto: Some(proto::UDP),
                dport: port(53),
                ..Rule::any(Action::Drop)
            }],
            policy: Action::Accept,
        });
        let dgram = udp(sa(f.laptop(), 7000), sa(f.server(), 53), &[0x22; 2000]);
        let n = dgram.len() - if f.v6 { 40 } else { 20 };
        let frags = fragments(&dgram, &[(0, 1024), (1024, n)], 5);
        assert_eq!(h.send(frags[0].clone(), LAPTOP), Verdict::Held);
        let v = h.send(frags[1].clone(), LAPTOP);
        assert_eq!(
            v,
            Verdict::Drop(DropReason::Rule {
                chain: Chain::Forward,
                rule: 0
            })
        );
        assert!(h.transmits().is_empty());
        assert_eq!(h.p.conntrack().len(), 0);
        // a rejected one is answered once, for the datagram, not per fragment
        let mut h = Harness::testbed(reject_port(53, proto::UDP, RejectWith::Default));
        for (i, fr) in frags.iter().enumerate() {
            let v = h.send(fr.clone(), LAPTOP);
            assert_eq!(matches!(v, Verdict::Reject(_)), i == 1, "{v:?}");
        }
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        let L4::Icmp(i) = parse_reply(&out[0]).l4 else {
            panic!()
        };
        assert!(i.is_error);
    }
}

#[test]
fn per_rule_counters_count_the_flows_later_packets() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[[rule]]
chain = "forward"
name = "web"
from = "laptop"
proto = "tcp"
dport = 443
action = "accept"
[[rule]]
chain = "forward"
name = "dns"
from = "laptop"
proto = "udp"
dport = 53
action = "accept"
"#,
        );
        let (web, dns) = (h.rule(Chain::Forward, "web"), h.rule(Chain::Forward, "dns"));
        let (c, s) = (sa(f.laptop(), 40000), sa(f.server(), 443));
        let pkts = [
            (tcp(c, s, SYN, 1000, 0, b""), LAPTOP),
            (tcp(s, c, SYN | ACK, 5000, 1001, b""), TUN),
            (tcp(c, s, ACK, 1001, 5001, b""), LAPTOP),
            (tcp(c, s, ACK | PSH, 1001, 5001, &[1; 300]), LAPTOP),
            (tcp(s, c, ACK | PSH, 5001, 1301, &[2; 900]), TUN),
        ];
        let bytes: usize = pkts.iter().map(|(p, _)| p.len()).sum();
        for (p, z) in pkts {
            assert!(matches!(h.send(p, z), Verdict::Forward(_)));
        }
        let dq = udp(sa(f.laptop(), 5353), sa(f.server(), 53), b"query");
        let dr = udp(sa(f.server(), 53), sa(f.laptop(), 5353), b"answer!");
        let dns_bytes = dq.len() + dr.len();
        assert_eq!(h.send(dq, LAPTOP), Verdict::Forward(TUN));
        assert_eq!(h.send(dr, TUN), Verdict::Forward(LAPTOP));
        let st = h.p.stats();
        assert_eq!(st.rule(Chain::Forward, web).packets, 5);
        assert_eq!(st.rule(Chain::Forward, web).bytes, bytes as u64);
        assert_eq!(st.rule(Chain::Forward, dns).packets, 2);
        assert_eq!(st.rule(Chain::Forward, dns).bytes, dns_bytes as u64);
        assert_eq!(st.policy(Chain::Forward).packets, 0);
        assert_eq!(h.p.rule_counters(Chain::Forward)[web as usize].packets, 5);
    }
}

#[test]
fn log_rules_emit_events() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[[rule]]
chain = "forward"
name = "ssh"
from = "laptop"
proto = "tcp"
dport = 22
action = "accept"
log = true
[[rule]]
chain = "forward"
name = "telnet"
proto = "tcp"
dport = 23
action = "reject"
log = true
[[rule]]
chain = "forward"
name = "quiet"
proto = "tcp"
dport = 443
action = "accept"
"#,
        );
        let (c, s) = (sa(f.laptop(), 40000), sa(f.server(), 22));
        h.handshake(c, s, LAPTOP, TUN);
        let ev = h.p.poll_event().expect("ssh accept logged");
        assert_eq!(ev.rule, Some(h.rule(Chain::Forward, "ssh")));
        assert_eq!(
            (ev.chain, ev.action, ev.revoked),
            (Chain::Forward, Action::Accept, false)
        );
        assert_eq!((ev.ingress, ev.egress), (LAPTOP, TUN));
        assert_eq!(
            (ev.src, ev.dst, ev.proto, ev.sport, ev.dport),
            (c.ip(), s.ip(), proto::TCP, 40000, 22)
        );
        assert!(
            h.p.poll_event().is_none(),
            "established packets are not logged again"
        );
        let line = h.p.event_line(&ev);
        assert!(line.contains("ssh") && line.contains("tcp"), "{line}");

        let v = h.send(
            tcp(sa(f.laptop(), 40001), sa(f.server(), 23), SYN, 1, 0, b""),
            LAPTOP,
        );
        assert!(matches!(v, Verdict::Reject(_)));
        let ev = h.p.poll_event().expect("telnet reject logged");
        assert_eq!(ev.action, Action::Reject(RejectWith::Default));
        assert_eq!(ev.rule, Some(h.rule(Chain::Forward, "telnet")));

        let v = h.send(
            tcp(sa(f.laptop(), 40002), sa(f.server(), 443), SYN, 1, 0, b""),
            LAPTOP,
        );
        assert_eq!(v, Verdict::Forward(TUN));
        assert!(h.p.poll_event().is_none(), "rules without log stay quiet");
    }
}

#[test]
fn udp_and_icmp_flows_reply_through_the_fast_path() {
    for f in BOTH {
        let mut h = Harness::toml(
            r#"
[[rule]]
chain = "forward"
from = "laptop"
action = "accept"
"#,
        );
        let ping = synth::icmp_echo(f.laptop(), f.server(), 77, 1, false, b"abc").unwrap();
        let pong = synth::icmp_echo(f.server(), f.laptop(), 77, 1, true, b"abc").unwrap();
        assert_eq!(h.send(ping, LAPTOP), Verdict::Forward(TUN));
        assert_eq!(h.send(pong.clone(), TUN), Verdict::Forward(LAPTOP));
        // an unsolicited echo reply is invalid
        let stray = synth::icmp_echo(f.server(), f.laptop(), 78, 1, true, b"abc").unwrap();
        assert_eq!(h.send(stray, TUN), Verdict::Drop(DropReason::Invalid));
        let q = udp(sa(f.laptop(), 9999), sa(f.server(), 123), b"ntp");
        let r = udp(sa(f.server(), 123), sa(f.laptop(), 9999), b"ntp");
        assert_eq!(h.send(q, LAPTOP), Verdict::Forward(TUN));
        assert_eq!(h.send(r, TUN), Verdict::Forward(LAPTOP));
        assert_eq!(h.p.stats().fast_path.packets, 2);
        // an unrelated packet from the TUN side is not let in
        let r2 = udp(sa(f.server(), 123), sa(f.laptop(), 9998), b"ntp");
        assert_eq!(
            h.send(r2, TUN),
            Verdict::Drop(DropReason::Policy(Chain::Forward))
        );
    }
}

#[test]
fn malformed_and_unroutable_packets_are_dropped_with_their_reason() {
    let mut h = Harness::testbed(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Accept,
    });
    assert!(matches!(
        h.send(vec![0x45, 0, 0], LAPTOP),
        Verdict::Drop(DropReason::Malformed(_))
    ));
    assert!(matches!(
        h.send(vec![], TUN),
        Verdict::Drop(DropReason::Malformed(_))
    ));
    // a corrupted TCP checksum
    let mut p = tcp(
        sa(Fam { v6: false }.laptop(), 1),
        sa(Fam { v6: false }.server(), 2),
        SYN,
        1,
        0,
        b"",
    );
    let last = p.len() - 1;
    p[last - 10] ^= 0xff;
    assert!(matches!(
        h.send(p, LAPTOP),
        Verdict::Drop(DropReason::Malformed(_))
    ));
    // from the TUN to an address nobody owns: no route
    let f = Fam { v6: true };
    let v = h.send(
        udp(sa(f.server(), 1), sa(f.ip("", "2001:db8:99::1"), 2), b""),
        TUN,
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
    let s = h.p.stats();
    assert_eq!(s.dropped.packets, 4);
    assert!(h.p.report().contains("dropped 4"), "{}", h.p.report());
}

/// A peer may only send from its AllowedIPs on every path, not only when a
/// packet starts a flow: an INVALID packet accepted by an explicit rule and an
/// ICMP error RELATED to a flow are checked too (regression: both skipped the
/// check).
#[test]
fn spoofed_source_is_dropped_on_the_invalid_and_related_paths() {
    for f in BOTH {
        let mut h = Harness::testbed(ChainDef {
            rules: vec![Rule {
                ct_state: Some(CtStateMask(
                    CtStateMask::INVALID | CtStateMask::RELATED | CtStateMask::ESTABLISHED,
                )),
                ..Rule::any(Action::Accept)
            }],
            policy: Action::Accept,
        });
        let foreign = f.ip("192.0.2.66", "2001:db8:66::66");
        // invalid (a bare ACK with no flow) from a source the laptop does not own
        let v = h.send(
            tcp(sa(foreign, 1), sa(f.server(), 80), ACK, 1, 1, b""),
            LAPTOP,
        );
        assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource), "v6={}", f.v6);
        // the same from its own address is decided by the invalid rule
        let v = h.send(
            tcp(sa(f.laptop(), 1), sa(f.server(), 80), ACK, 1, 1, b""),
            LAPTOP,
        );
        assert_eq!(v, Verdict::Forward(TUN));

        // a phone -> laptop flow; the laptop answers with ICMP errors about it
        let orig = udp(sa(f.phone(), 4444), sa(f.laptop(), 5555), b"hello");
        assert_eq!(h.send(orig.clone(), PHONE), Verdict::Forward(LAPTOP));
        let (ty, code) = if f.v6 { (1, 4) } else { (3, 3) };
        let spoofed = synth::icmp_raw(foreign, f.phone(), ty, code, [0; 4], &orig).unwrap();
        assert_eq!(
            h.send(spoofed, LAPTOP),
            Verdict::Drop(DropReason::SpoofedSource)
        );
        let honest = synth::icmp_raw(f.laptop(), f.phone(), ty, code, [0; 4], &orig).unwrap();
        assert_eq!(h.send(honest, LAPTOP), Verdict::Forward(PHONE));
        // from the TUN side any router may send errors
        let q = udp(sa(f.laptop(), 7), sa(f.server(), 7), b"q");
        assert_eq!(h.send(q.clone(), LAPTOP), Verdict::Forward(TUN));
        let err = synth::icmp_raw(f.router(), f.laptop(), ty, code, [0; 4], &q).unwrap();
        assert_eq!(h.send(err, TUN), Verdict::Forward(LAPTOP));
    }
}

/// A reload that keeps an ICMP rule must keep the flows it admitted. The
/// re-check rebuilds a flow's first packet from its key, which for ICMP only
/// holds the echo id, and the type and code the flow stored (regression: a
/// timestamp flow (13) was re-checked as an echo request, missed its rule and
/// was revoked by a reload that changed nothing).
#[test]
fn reload_keeps_a_non_echo_icmp_flow_its_rule_still_allows() {
    let mut h = Harness::new(icmp_type_13_cfg());
    let f = Fam { v6: false };
    let ts_req = synth::icmp_raw(f.laptop(), f.server(), 13, 0, [0, 1, 0, 1], &[0; 12]).unwrap();
    assert_eq!(h.send(ts_req.clone(), LAPTOP), Verdict::Forward(TUN));
    assert_eq!(h.p.conntrack().len(), 1);
    h.p.reload(icmp_type_13_cfg());
    assert_eq!(h.send(ts_req, LAPTOP), Verdict::Forward(TUN));
    assert_eq!(h.p.stats().flows_revoked, 0);
    let ts_reply = synth::icmp_raw(f.server(), f.laptop(), 14, 0, [0, 1, 0, 1], &[0; 12]).unwrap();
    assert_eq!(h.send(ts_reply, TUN), Verdict::Forward(LAPTOP));
}

fn icmp_type_13_cfg() -> PipelineConfig {
    toml_cfg(
        r#"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
from = "laptop"
proto = "icmp"
icmp_type = 13
action = "accept"
"#,
    )
}

/// The same when the first packet after the reload is the reply: its type
/// says nothing about the request that started the flow; the flow keeps the
/// first packet's type for the re-check.
#[test]
fn reload_keeps_a_non_echo_icmp_flow_when_the_reply_comes_first() {
    let mut h = Harness::new(icmp_type_13_cfg());
    let f = Fam { v6: false };
    let ts_req = synth::icmp_raw(f.laptop(), f.server(), 13, 0, [0, 1, 0, 1], &[0; 12]).unwrap();
    assert_eq!(h.send(ts_req, LAPTOP), Verdict::Forward(TUN));
    h.p.reload(icmp_type_13_cfg());
    let ts_reply = synth::icmp_raw(f.server(), f.laptop(), 14, 0, [0, 1, 0, 1], &[0; 12]).unwrap();
    assert_eq!(h.send(ts_reply, TUN), Verdict::Forward(LAPTOP));
    assert_eq!(h.p.stats().flows_revoked, 0);
}
