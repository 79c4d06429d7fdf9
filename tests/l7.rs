//! L7 rule fields end to end through `Pipeline::handle`: `tls_sni`,
//! `http_host` and `dns_qname` rules loaded from TOML, with TLS ClientHellos
//! (whole and split over two segments), HTTP requests, DNS queries over UDP
//! and TCP built here, checking verdicts, resets, counters and log events.

#![allow(clippy::unwrap_used)]

use portcullis::config::load_str;
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags::{ACK, PSH, RST, SYN};
use portcullis::packet::{self, L4};
use portcullis::pipeline::{Pipeline, PipelineConfig};
use portcullis::verdict::{Chain, DropReason, Verdict};
use portcullis::zone::ZoneId;
use std::net::SocketAddr;
use std::time::Instant;

const LAPTOP: ZoneId = ZoneId(ZoneId::FIRST_PEER);
const PHONE: ZoneId = ZoneId(ZoneId::FIRST_PEER + 1);
const TUN: ZoneId = ZoneId::TUN;

const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32"]
groups = ["staff"]

[[peer]]
name = "phone"
public_key = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA="
allowed_ips = ["100.64.0.3/32"]
groups = ["guests"]

[[rule]]
chain = "forward"
name = "guests-not-example-net"
from = "group:guests"
tls_sni = ["*.example.net", "example.net"]
http_host = ["*.example.net", "example.net"]
dns_qname = ["*.example.net", "example.net"]
action = "reject"
log = true

[[rule]]
chain = "forward"
name = "nobody-evil"
tls_sni = "~.*evil.*"
http_host = "~.*evil.*"
dns_qname = "~.*evil.*"
action = "drop"

[[rule]]
chain = "forward"
name = "rest"
action = "accept"
"#;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let spec = TcpSpec {
        flags,
        seq,
        ack,
        window: 65535,
        wscale: None,
        mss: None,
    };
    synth::tcp(src, dst, spec, payload).unwrap()
}

struct H {
    p: Pipeline,
    now: Instant,
}

impl H {
    fn new(extra: &str) -> H {
        let text = format!("{BASE}\n{extra}");
        let cfg = load_str(&text, "test.toml").unwrap_or_else(|e| panic!("config: {e}"));
        let now = Instant::now();
        H {
            p: Pipeline::new(PipelineConfig::from_config(&cfg), (1, 2), now),
            now,
        }
    }

    /// An allow-list: peer laptop only, forward policy drop, one accept
    /// rule with the given keys (besides `chain` and `action`).
    fn allow_only(rule_keys: &str) -> H {
        let text = format!(
            r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32"]

[chains.forward]
policy = "drop"

[[rule]]
chain = "forward"
action = "accept"
{rule_keys}
"#
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|e| panic!("config: {e}"));
        let now = Instant::now();
        H {
            p: Pipeline::new(PipelineConfig::from_config(&cfg), (1, 2), now),
            now,
        }
    }

    fn send(&mut self, mut pkt: Vec<u8>, zone: ZoneId) -> Verdict {
        self.p.handle(&mut pkt, zone, self.now)
    }

    fn rule(&self, name: &str) -> u32 {
        let rules = &self.p.rules().chain(Chain::Forward).rules;
        rules
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
            .unwrap() as u32
    }

    /// A handshake; returns the client's next sequence number (1001).
    fn handshake(&mut self, c: SocketAddr, s: SocketAddr, cz: ZoneId) -> u32 {
        assert_eq!(
            self.send(tcp(c, s, SYN, 1000, 0, b""), cz),
            Verdict::Forward(TUN)
        );
        assert_eq!(
            self.send(tcp(s, c, SYN | ACK, 5000, 1001, b""), TUN),
            Verdict::Forward(cz)
        );
        assert_eq!(
            self.send(tcp(c, s, ACK, 1001, 5001, b""), cz),
            Verdict::Forward(TUN)
        );
        1001
    }

    /// Sends `data` from the client in segments of the given sizes; returns
    /// the verdicts.
    fn stream(
        &mut self,
        c: SocketAddr,
        s: SocketAddr,
        cz: ZoneId,
        data: &[u8],
        cuts: &[usize],
    ) -> Vec<Verdict> {
        let mut seq = 1001u32;
        let mut out = Vec::new();
        let mut rest = data;
        for &n in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let (seg, r) = rest.split_at(n.min(rest.len()));
            out.push(self.send(tcp(c, s, ACK | PSH, seq, 5001, seg), cz));
            seq += seg.len() as u32;
            rest = r;
        }
        out
    }

    /// The generated packets as (zone, TCP flags or None).
    fn transmits(&mut self) -> Vec<(ZoneId, Option<u8>)> {
        std::iter::from_fn(|| self.p.poll_transmit())
            .map(|t| {
                let m = packet::parse(&t.packet).unwrap();
                let f = match m.l4 {
                    L4::Tcp(t) => Some(t.flags),
                    _ => None,
                };
                (t.zone, f)
            })
            .collect()
    }
}

const PHONE_C: &str = "100.64.0.3:40000";
const LAPTOP_C: &str = "100.64.0.2:40000";
const SERVER_443: &str = "203.0.113.2:443";
const SERVER_80: &str = "203.0.113.2:80";
const SERVER_53: &str = "203.0.113.53:53";

#[test]
fn tls_sni_allowed_and_blocked_in_one_segment() {
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_443));
    h.handshake(c, s, PHONE);
    assert_eq!(h.p.l7_pending(), 1);
    let v = h.stream(
        c,
        s,
        PHONE,
        &synth::tls_client_hello("www.example.org"),
        &[],
    );
    assert_eq!(v, vec![Verdict::Forward(TUN)]);
    assert_eq!(h.p.l7_pending(), 0);
    // The flow goes on on the fast path, counted on the accepting rule.
    let next = 1001 + synth::tls_client_hello("www.example.org").len() as u32;
    assert_eq!(
        h.send(tcp(s, c, ACK | PSH, 5001, next, b"server hello"), TUN),
        Verdict::Forward(PHONE)
    );
    let rest = h.rule("rest") as usize;
    assert!(h.p.rule_counters(Chain::Forward)[rest].packets >= 2);

    let mut h = H::new("");
    h.handshake(c, s, PHONE);
    let v = h.stream(
        c,
        s,
        PHONE,
        &synth::tls_client_hello("Shop.Example.NET."),
        &[],
    );
    let r = h.rule("guests-not-example-net");
    assert_eq!(
        v,
        vec![Verdict::Reject(DropReason::Rule {
            chain: Chain::Forward,
            rule: r
        })]
    );
    // RST both ways: to the server (TUN) and to the client.
    let t = h.transmits();
    assert!(t.contains(&(TUN, Some(RST | ACK))), "{t:?}");
    assert!(
        t.iter()
            .any(|(z, f)| *z == PHONE && f.is_some_and(|f| f & RST != 0)),
        "{t:?}"
    );
    // The flow is gone: the server's next packet is not forwarded.
    assert!(!matches!(
        h.send(tcp(s, c, ACK, 5001, 1001, b""), TUN),
        Verdict::Forward(_)
    ));
    assert!(h.p.rule_counters(Chain::Forward)[r as usize].packets >= 1);
    let ev = h.p.poll_event().expect("log event of the L7 reject");
    assert_eq!(ev.rule, Some(r));
    assert_eq!(h.p.l7_stats().blocked, 1);
}

/// Under masquerade the server knows the client as the NAT address and
/// port: the RST that cuts a blocked flow must carry that tuple, or the
/// server's connection is not reset.
#[test]
fn reset_to_the_server_carries_the_masqueraded_tuple() {
    let mut h = H::new(
        r#"
[[nat]]
kind = "masquerade"
from = "group:guests"
to = "tun"
to_address = "100.64.0.254"
"#,
    );
    let (c, s) = (sa(PHONE_C), sa(SERVER_443));
    let mut syn = tcp(c, s, SYN, 1000, 0, b"");
    assert_eq!(h.p.handle(&mut syn, PHONE, h.now), Verdict::Forward(TUN));
    let m = packet::parse(&syn).unwrap();
    let L4::Tcp(t) = m.l4 else { panic!("{m:?}") };
    let nat = SocketAddr::new(m.src, t.sport);
    assert_eq!(nat.ip().to_string(), "100.64.0.254");
    assert_eq!(
        h.send(tcp(s, nat, SYN | ACK, 5000, 1001, b""), TUN),
        Verdict::Forward(PHONE)
    );
    assert_eq!(
        h.send(tcp(c, s, ACK, 1001, 5001, b""), PHONE),
        Verdict::Forward(TUN)
    );
    let v = h.stream(
        c,
        s,
        PHONE,
        &synth::tls_client_hello("shop.example.net"),
        &[],
    );
    assert!(matches!(v[..], [Verdict::Reject(_)]), "{v:?}");
    let mut to_server = Vec::new();
    while let Some(t) = h.p.poll_transmit() {
        if t.zone == TUN {
            to_server.push(packet::parse(&t.packet).unwrap());
        }
    }
    let [m] = &to_server[..] else {
        panic!("one RST to the server expected: {to_server:?}")
    };
    let L4::Tcp(t) = m.l4 else { panic!("{m:?}") };
    assert_eq!(t.flags & RST, RST);
    assert_eq!(
        SocketAddr::new(m.src, t.sport),
        nat,
        "RST from the NAT tuple"
    );
    assert_eq!(SocketAddr::new(m.dst, t.dport), s);
}

#[test]
fn tls_client_hello_split_over_two_segments() {
    for (sni, blocked) in [("a.example.net", true), ("ok.example.org", false)] {
        let mut h = H::new("");
        let (c, s) = (sa(PHONE_C), sa(SERVER_443));
        h.handshake(c, s, PHONE);
        let ch = synth::tls_client_hello(sni);
        let v = h.stream(c, s, PHONE, &ch, &[20]);
        assert_eq!(v.len(), 2);
        // The partial ClientHello is forwarded; the second segment decides.
        assert_eq!(v[0], Verdict::Forward(TUN));
        assert_eq!(matches!(v[1], Verdict::Reject(_)), blocked, "{sni}: {v:?}");
        assert_eq!(h.p.l7_pending(), 0);
    }
}

#[test]
fn out_of_order_segment_is_dropped_while_pending() {
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_443));
    h.handshake(c, s, PHONE);
    let ch = synth::tls_client_hello("x.example.net");
    let (a, b) = ch.split_at(30);
    // The second half first: not collected, not forwarded.
    assert_eq!(
        h.send(tcp(c, s, ACK, 1001 + 30, 5001, b), PHONE),
        Verdict::Drop(DropReason::L7Pending)
    );
    assert_eq!(
        h.send(tcp(c, s, ACK, 1001, 5001, a), PHONE),
        Verdict::Forward(TUN)
    );
    // Its retransmission in order completes the name.
    assert!(matches!(
        h.send(tcp(c, s, ACK, 1001 + 30, 5001, b), PHONE),
        Verdict::Reject(_)
    ));
}

#[test]
fn zone_and_group_combination() {
    // The laptop (group staff) may reach *.example.net; the phone (guests) may not.
    let mut h = H::new("");
    let (c, s) = (sa(LAPTOP_C), sa(SERVER_443));
    h.handshake(c, s, LAPTOP);
    let v = h.stream(c, s, LAPTOP, &synth::tls_client_hello("a.example.net"), &[]);
    assert_eq!(v, vec![Verdict::Forward(TUN)]);
    // ... but nobody reaches *evil*.
    let mut h = H::new("");
    h.handshake(c, s, LAPTOP);
    let v = h.stream(c, s, LAPTOP, &synth::tls_client_hello("www.evil.com"), &[]);
    assert_eq!(
        v,
        vec![Verdict::Drop(DropReason::Rule {
            chain: Chain::Forward,
            rule: h.rule("nobody-evil")
        })]
    );
    // Drop: nothing to the client; the server's half is reset.
    let t = h.transmits();
    assert_eq!(t, vec![(TUN, Some(RST | ACK))]);
}

#[test]
fn http_host() {
    let (c, s) = (sa(PHONE_C), sa(SERVER_80));
    let req =
        |host: &str| format!("GET /index.html HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n");
    let mut h = H::new("");
    h.handshake(c, s, PHONE);
    let v = h.stream(c, s, PHONE, req("www.example.org:80").as_bytes(), &[10]);
    assert_eq!(v, vec![Verdict::Forward(TUN), Verdict::Forward(TUN)]);

    let mut h = H::new("");
    h.handshake(c, s, PHONE);
    let v = h.stream(c, s, PHONE, req("WWW.Example.Net:8080").as_bytes(), &[10]);
    assert_eq!(v[0], Verdict::Forward(TUN));
    assert!(matches!(v[1], Verdict::Reject(_)), "{v:?}");
}

#[test]
fn non_tls_payload_on_a_tls_sni_rule_has_no_name() {
    // An SSH banner to port 443: no name, so the L7 rules do not match and
    // `rest` accepts.
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_443));
    h.handshake(c, s, PHONE);
    let v = h.stream(c, s, PHONE, b"SSH-2.0-OpenSSH_9.6\r\n", &[]);
    assert_eq!(v, vec![Verdict::Forward(TUN)]);
    assert_eq!(h.p.l7_pending(), 0);
}

#[test]
fn no_name_within_the_bound_decides() {
    // An HTTP request whose header block never ends: decided "no name" once
    // 16 KiB passed (rest accepts), and the pending state is freed.
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_80));
    h.handshake(c, s, PHONE);
    let mut data = b"GET / HTTP/1.1\r\n".to_vec();
    while data.len() < 17 * 1024 {
        data.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let v = h.stream(c, s, PHONE, &data, &[1200; 20]);
    assert!(v.iter().all(|v| *v == Verdict::Forward(TUN)), "{v:?}");
    assert_eq!(h.p.l7_pending(), 0);
    assert_eq!(h.p.l7_stats().decided, 1);
}

#[test]
fn dns_over_udp_decides_on_the_first_datagram() {
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_53));
    let q = synth::udp(c, s, &synth::dns_query("www.example.org")).unwrap();
    assert_eq!(h.send(q, PHONE), Verdict::Forward(TUN));
    let (c2, s2) = (sa("100.64.0.3:40001"), sa(SERVER_53));
    let q = synth::udp(c2, s2, &synth::dns_query("mail.example.net")).unwrap();
    assert!(matches!(h.send(q, PHONE), Verdict::Reject(_)));
    // Reject on UDP: an ICMP port unreachable to the client.
    let t = h.transmits();
    assert_eq!(t, vec![(PHONE, None)]);
    let q = synth::udp(
        sa("100.64.0.2:40002"),
        s2,
        &synth::dns_query("EVIL.example.org."),
    )
    .unwrap();
    assert!(matches!(
        h.send(q, LAPTOP),
        Verdict::Drop(DropReason::Rule { .. })
    ));
    assert_eq!(h.p.l7_pending(), 0);
}

#[test]
fn every_query_of_an_accepted_udp_flow_is_decided() {
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_53));
    let q = |name: &str| synth::udp(c, s, &synth::dns_query(name)).unwrap();
    assert_eq!(h.send(q("www.example.org"), PHONE), Verdict::Forward(TUN));
    let answer = synth::udp(s, c, b"\x12\x34\x81\x80\0\x01\0\x01\0\0\0\0").unwrap();
    assert_eq!(h.send(answer.clone(), TUN), Verdict::Forward(PHONE));
    // The same socket asks for a name the guests may not resolve: rejected
    // (ICMP to the client), not carried by the first query's verdict.
    let guests = h.rule("guests-not-example-net");
    assert_eq!(
        h.send(q("mail.example.net"), PHONE),
        Verdict::Reject(DropReason::Rule {
            chain: Chain::Forward,
            rule: guests
        })
    );
    assert_eq!(h.transmits(), vec![(PHONE, None)]);
    assert!(matches!(
        h.send(q("x.evil.example.org"), PHONE),
        Verdict::Drop(DropReason::Rule { .. })
    ));
    // The flow stays: its allowed queries and answers go on.
    assert_eq!(h.send(q("www.example.org"), PHONE), Verdict::Forward(TUN));
    assert_eq!(h.send(answer, TUN), Verdict::Forward(PHONE));
    let st = h.p.l7_stats();
    assert_eq!((st.datagrams_decided, st.datagrams_blocked), (3, 2));
    // The laptop (not a guest) may resolve example.net names on its socket.
    let (lc, ls) = (sa(LAPTOP_C), sa(SERVER_53));
    let lq = |name: &str| synth::udp(lc, ls, &synth::dns_query(name)).unwrap();
    assert_eq!(h.send(lq("www.example.org"), LAPTOP), Verdict::Forward(TUN));
    assert_eq!(
        h.send(lq("mail.example.net"), LAPTOP),
        Verdict::Forward(TUN)
    );
}

#[test]
fn every_question_of_a_dns_query_is_decided() {
    // QDCOUNT 2: an allowed name first, a blocked one second.
    let mut two = synth::dns_query("www.example.org");
    let second = synth::dns_query("evil.example.org");
    two[5] = 2;
    two.extend_from_slice(&second[12..]);
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_53));
    assert!(matches!(
        h.send(synth::udp(c, s, &two).unwrap(), PHONE),
        Verdict::Drop(DropReason::Rule { .. })
    ));
    // ... also as a later datagram of an accepted flow.
    let one = synth::dns_query("www.example.org");
    assert_eq!(
        h.send(synth::udp(c, s, &one).unwrap(), PHONE),
        Verdict::Forward(TUN)
    );
    assert!(matches!(
        h.send(synth::udp(c, s, &two).unwrap(), PHONE),
        Verdict::Drop(DropReason::Rule { .. })
    ));
}

#[test]
fn dns_over_tcp_is_length_prefixed() {
    for (name, blocked) in [("a.b.example.net", true), ("example.com", false)] {
        let mut h = H::new("");
        let (c, s) = (sa(PHONE_C), sa(SERVER_53));
        h.handshake(c, s, PHONE);
        let v = h.stream(c, s, PHONE, &tcp_dns(name), &[1]);
        assert_eq!(v[0], Verdict::Forward(TUN));
        assert_eq!(matches!(v[1], Verdict::Reject(_)), blocked, "{name}: {v:?}");
    }
}

/// A DNS message with its 2-byte length prefix (RFC 1035 §4.2.2).
fn tcp_dns(name: &str) -> Vec<u8> {
    let q = synth::dns_query(name);
    let mut data = (q.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&q);
    data
}

#[test]
fn every_query_on_a_dns_over_tcp_connection_is_decided() {
    // RFC 7766: several queries may share one connection. After an allowed
    // first query, a blocked later one blocks the flow: whether it comes in
    // its own segment, split over two, or in the first query's segment.
    let guests = |h: &H| DropReason::Rule {
        chain: Chain::Forward,
        rule: h.rule("guests-not-example-net"),
    };
    let ok = tcp_dns("www.example.org");
    let bad = tcp_dns("mail.example.net");
    for cuts in [
        vec![ok.len()],
        vec![ok.len(), 5],
        vec![ok.len() + bad.len()],
    ] {
        let mut h = H::new("");
        let (c, s) = (sa(PHONE_C), sa(SERVER_53));
        h.handshake(c, s, PHONE);
        let mut data = ok.clone();
        data.extend_from_slice(&bad);
        data.extend_from_slice(&tcp_dns("www.example.com"));
        let v = h.stream(c, s, PHONE, &data, &cuts);
        let blocked = Verdict::Reject(guests(&h));
        let at = v.iter().position(|x| *x == blocked);
        let want = if cuts.len() == 2 { 2 } else { 1 };
        let want = if cuts[0] > ok.len() { 0 } else { want };
        assert_eq!(at, Some(want), "cuts {cuts:?}: {v:?}");
        assert!(
            v[..want].iter().all(|x| *x == Verdict::Forward(TUN)),
            "{v:?}"
        );
        // the server is reset, the client told (RST), the flow gone
        let tx = h.transmits();
        assert!(
            tx.contains(&(TUN, Some(RST | ACK))) || tx.contains(&(TUN, Some(RST))),
            "{tx:?}"
        );
        assert!(
            tx.iter()
                .any(|(z, f)| *z == PHONE && f.is_some_and(|f| f & RST != 0)),
            "{tx:?}"
        );
        assert_eq!(h.p.conntrack().len(), 0);
    }
    // allowed queries keep the connection; each is counted
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_53));
    h.handshake(c, s, PHONE);
    let mut data = ok.clone();
    data.extend_from_slice(&tcp_dns("www.example.com"));
    data.extend_from_slice(&tcp_dns("a.example.org"));
    let v = h.stream(c, s, PHONE, &data, &[ok.len(), 9]);
    assert!(v.iter().all(|x| *x == Verdict::Forward(TUN)), "{v:?}");
    assert_eq!(h.p.l7_stats().datagrams_decided, 2);
    // a segment past the bytes read is held back; the retransmission of
    // read bytes passes
    let seq = 1001 + data.len() as u32;
    let gap = tcp(c, s, ACK | PSH, seq + 10, 5001, &ok);
    assert_eq!(h.send(gap, PHONE), Verdict::Drop(DropReason::L7Pending));
    let again = tcp(c, s, ACK | PSH, 1001, 5001, &ok);
    assert_eq!(h.send(again, PHONE), Verdict::Forward(TUN));
    // half a query is held (counted) until the rest comes
    let next = tcp_dns("b.example.org");
    let half = tcp(c, s, ACK | PSH, seq, 5001, &next[..6]);
    assert_eq!(h.send(half, PHONE), Verdict::Forward(TUN));
    assert_eq!(h.p.l7_buffered_bytes(), 6);
    let rest = tcp(c, s, ACK | PSH, seq + 6, 5001, &next[6..]);
    assert_eq!(h.send(rest, PHONE), Verdict::Forward(TUN));
    assert_eq!(h.p.l7_buffered_bytes(), 0);
    assert_eq!(h.p.l7_stats().datagrams_decided, 3);
    // a message longer than the 16 KiB bound (65,535 bytes) is no query:
    // decided with no name once the bound is reached, its other bytes are
    // skipped, and the query after it is read and decided (blocked here)
    let mut seq = seq + next.len() as u32;
    let mut big = vec![0xff, 0xff];
    big.extend_from_slice(&[0u8; 65535]);
    big.extend_from_slice(&tcp_dns("mail.example.net"));
    let mut verdicts = Vec::new();
    for chunk in big.chunks(1200) {
        verdicts.push(h.send(tcp(c, s, ACK | PSH, seq, 5001, chunk), PHONE));
        seq += chunk.len() as u32;
        assert!(h.p.l7_buffered_bytes() <= 16 * 1024 + 1200);
    }
    let last = verdicts.pop();
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Forward(TUN)),
        "{verdicts:?}"
    );
    assert!(matches!(last, Some(Verdict::Reject(_))), "{last:?}");
    assert_eq!(h.p.l7_stats().datagrams_decided, 5);
    assert_eq!(h.p.l7_buffered_bytes(), 0);
}

/// For a stream of `len` bytes sent in segments of `cuts` (the rest in a
/// last one) with verdicts `v`: every segment is forwarded up to the one
/// holding byte `block_at - 1`, which is blocked and ends the flow; all are
/// forwarded when `block_at` is `None`.
fn check_blocked_at(
    h: &H,
    v: &[Verdict],
    cuts: &[usize],
    len: usize,
    block_at: Option<usize>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut end = 0usize;
    let mut want_at = None;
    for (k, n) in cuts.iter().chain(std::iter::once(&usize::MAX)).enumerate() {
        end = end.saturating_add(*n).min(len);
        if want_at.is_none() && block_at.is_some_and(|b| end >= b) {
            want_at = Some(k);
        }
        if end == len {
            break;
        }
    }
    let got_at = v.iter().position(|x| *x != Verdict::Forward(TUN));
    proptest::prop_assert_eq!(got_at, want_at, "{:?}", v);
    if let Some(k) = got_at {
        let blocked = matches!(
            v[k],
            Verdict::Reject(_) | Verdict::Drop(DropReason::Rule { .. })
        );
        proptest::prop_assert!(blocked, "{:?}", v[k]);
        proptest::prop_assert_eq!(h.p.conntrack().len(), 0);
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]
    /// However a DNS-over-TCP stream of queries is cut into segments, every
    /// segment is forwarded up to the one that completes the first blocked
    /// query, and that one is rejected (or all pass when none is blocked).
    #[test]
    fn dns_over_tcp_decisions_do_not_depend_on_segmentation(
        names in proptest::collection::vec(0usize..4, 1..6),
        cuts in proptest::collection::vec(1usize..90, 0..12),
    ) {
        const NAMES: [(&str, bool); 4] = [
            ("www.example.org", false),
            ("a.example.com", false),
            ("mail.example.net", true),
            ("x.evil.example.org", true),
        ];
        let mut data = Vec::new();
        let mut block_at = None; // end offset of the first blocked query
        for &i in &names {
            data.extend_from_slice(&tcp_dns(NAMES[i].0));
            if NAMES[i].1 && block_at.is_none() {
                block_at = Some(data.len());
            }
        }
        let mut h = H::new("");
        let (c, s) = (sa(PHONE_C), sa(SERVER_53));
        h.handshake(c, s, PHONE);
        let v = h.stream(c, s, PHONE, &data, &cuts);
        check_blocked_at(&h, &v, &cuts, data.len(), block_at)?;
    }
}

fn http_get(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Asserts that the flow was cut: the server reset, the client answered
/// with a RST (reject), no flow left.
fn assert_cut(h: &mut H) {
    let tx = h.transmits();
    assert!(
        tx.contains(&(TUN, Some(RST | ACK))) || tx.contains(&(TUN, Some(RST))),
        "{tx:?}"
    );
    assert!(
        tx.iter()
            .any(|(z, f)| *z == PHONE && f.is_some_and(|f| f & RST != 0)),
        "{tx:?}"
    );
    assert_eq!(h.p.conntrack().len(), 0);
}

#[test]
fn every_request_on_an_http_connection_is_decided() {
    // Keep-alive: after an allowed first request, a later request naming a
    // blocked host blocks the flow, in its own segment, split over two, or
    // in the first request's segment; also after a first request without
    // Host (HTTP/1.0 style).
    let ok = http_get("www.example.org");
    let bad = http_get("mail.example.net");
    for first in [ok.clone(), b"GET / HTTP/1.0\r\n\r\n".to_vec()] {
        for cuts in [
            vec![first.len()],
            vec![first.len(), 9],
            vec![first.len() + bad.len()],
        ] {
            let mut h = H::new("");
            let (c, s) = (sa(PHONE_C), sa(SERVER_80));
            h.handshake(c, s, PHONE);
            let mut data = first.clone();
            data.extend_from_slice(&bad);
            data.extend_from_slice(&http_get("www.example.com"));
            let v = h.stream(c, s, PHONE, &data, &cuts);
            let at = v.iter().position(|x| *x != Verdict::Forward(TUN));
            let want = match cuts.len() {
                2 => 2,
                _ if cuts[0] > first.len() => 0,
                _ => 1,
            };
            assert_eq!(at, Some(want), "cuts {cuts:?}: {v:?}");
            assert!(matches!(v[want], Verdict::Reject(_)), "{v:?}");
            assert_cut(&mut h);
            assert_eq!(h.p.l7_stats().requests_blocked, 1);
        }
    }
}

#[test]
fn http_bodies_are_skipped_not_read_as_requests() {
    // A body that looks like a request for a blocked host is no request:
    // Content-Length and chunked bodies are skipped by their framing, and
    // the requests around them are decided (allowed here) one by one.
    let (c, s) = (sa(PHONE_C), sa(SERVER_80));
    let inner = http_get("mail.example.net");
    let mut data = http_get("www.example.org");
    data.extend_from_slice(
        format!(
            "POST /a HTTP/1.1\r\nHost: www.example.org\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        )
        .as_bytes(),
    );
    data.extend_from_slice(&inner);
    data.extend_from_slice(
        b"POST /b HTTP/1.1\r\nHost: www.example.org\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    data.extend_from_slice(format!("{:x}\r\n", inner.len()).as_bytes());
    data.extend_from_slice(&inner);
    data.extend_from_slice(b"\r\n0\r\n\r\n");
    data.extend_from_slice(&http_get("a.example.com"));
    for cuts in [vec![], vec![7; 80], vec![100, 3, 250]] {
        let mut h = H::new("");
        h.handshake(c, s, PHONE);
        let v = h.stream(c, s, PHONE, &data, &cuts);
        assert!(
            v.iter().all(|x| *x == Verdict::Forward(TUN)),
            "{cuts:?}: {v:?}"
        );
        let st = h.p.l7_stats();
        assert_eq!(
            (st.requests_decided, st.requests_blocked),
            (3, 0),
            "{cuts:?}"
        );
        assert_eq!(h.p.l7_buffered_bytes(), 0);
        // the stream is still read: a blocked request now is caught
        let seq = 1001 + data.len() as u32;
        let v = h.send(
            tcp(c, s, ACK | PSH, seq, 5001, &http_get("x.evil.org")),
            PHONE,
        );
        assert!(matches!(v, Verdict::Drop(DropReason::Rule { .. })), "{v:?}");
        assert_eq!(h.p.conntrack().len(), 0);
    }
}

#[test]
fn http_stream_segments_out_of_order_and_protocol_switch() {
    let (c, s) = (sa(PHONE_C), sa(SERVER_80));
    let mut h = H::new("");
    h.handshake(c, s, PHONE);
    let ok = http_get("www.example.org");
    assert_eq!(h.stream(c, s, PHONE, &ok, &[]), vec![Verdict::Forward(TUN)]);
    let seq = 1001 + ok.len() as u32;
    // a segment past the bytes read is held back; a retransmission passes
    let gap = tcp(c, s, ACK | PSH, seq + 5, 5001, &ok);
    assert_eq!(h.send(gap, PHONE), Verdict::Drop(DropReason::L7Pending));
    let again = tcp(c, s, ACK | PSH, 1001, 5001, &ok);
    assert_eq!(h.send(again, PHONE), Verdict::Forward(TUN));
    // half a header block is forwarded (a server waits for its end) and
    // counted as buffered until the rest comes
    let up = b"GET /chat HTTP/1.1\r\nHost: www.example.org\r\nUpgrade: websocket\r\n\r\n";
    let v = h.send(tcp(c, s, ACK | PSH, seq, 5001, &up[..20]), PHONE);
    assert_eq!(v, Verdict::Forward(TUN));
    assert_eq!(h.p.l7_buffered_bytes(), 20);
    let v = h.send(tcp(c, s, ACK | PSH, seq + 20, 5001, &up[20..]), PHONE);
    assert_eq!(v, Verdict::Forward(TUN));
    assert_eq!(h.p.l7_buffered_bytes(), 0);
    // after the switch: WebSocket frames pass, and the stream is no longer
    // read (a request-looking frame later is not decided)
    let seq = seq + up.len() as u32;
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        h.send(tcp(c, s, ACK | PSH, seq, 5001, &frame), PHONE),
        Verdict::Forward(TUN)
    );
    let later = tcp(
        c,
        s,
        ACK | PSH,
        seq + frame.len() as u32,
        5001,
        &http_get("mail.example.net"),
    );
    assert_eq!(h.send(later, PHONE), Verdict::Forward(TUN));
    assert_eq!(h.p.l7_stats().requests_decided, 1);
}

#[test]
fn unframeable_http_bytes_are_decided_with_no_name() {
    // An allow-list: only www.example.org over HTTP. After an allowed
    // request, bytes that are not a request (nor a protocol switch) have no
    // name and fall to the drop policy.
    let mut h = H::allow_only(
        r#"
proto = "tcp"
dport = 80
http_host = "www.example.org""#,
    );
    let (c, s) = (sa(LAPTOP_C), sa(SERVER_80));
    h.handshake(c, s, LAPTOP);
    let mut data = http_get("www.example.org");
    let first = data.len();
    data.extend_from_slice(b"SSH-2.0-x\r\n");
    let v = h.stream(c, s, LAPTOP, &data, &[first]);
    assert_eq!(v[0], Verdict::Forward(TUN));
    assert_eq!(v[1], Verdict::Drop(DropReason::Policy(Chain::Forward)));
    assert_eq!(h.p.conntrack().len(), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]
    /// However an HTTP keep-alive stream of requests (some with bodies that
    /// look like blocked requests) is cut into segments, every segment is
    /// forwarded up to the one that completes the header block of the first
    /// blocked request, and that one is blocked (or all pass).
    #[test]
    fn http_decisions_do_not_depend_on_segmentation(
        reqs in proptest::collection::vec((0usize..4, 0usize..3), 1..5),
        cuts in proptest::collection::vec(1usize..120, 0..14),
    ) {
        const HOSTS: [(&str, bool); 4] = [
            ("www.example.org", false),
            ("a.example.com", false),
            ("mail.example.net", true),
            ("x.evil.example.org", true),
        ];
        let body = http_get("mail.example.net");
        let mut data = Vec::new();
        let mut block_at = None; // end offset of the first blocked header block
        for &(i, framing) in &reqs {
            let head = match framing {
                0 => format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", HOSTS[i].0),
                1 => format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", HOSTS[i].0, body.len()),
                _ => format!("POST / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", HOSTS[i].0),
            };
            data.extend_from_slice(head.as_bytes());
            if HOSTS[i].1 && block_at.is_none() {
                block_at = Some(data.len());
            }
            match framing {
                0 => {}
                1 => data.extend_from_slice(&body),
                _ => {
                    data.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    data.extend_from_slice(&body);
                    data.extend_from_slice(b"\r\n0\r\n\r\n");
                }
            }
        }
        let mut h = H::new("");
        let (c, s) = (sa(PHONE_C), sa(SERVER_80));
        h.handshake(c, s, PHONE);
        let v = h.stream(c, s, PHONE, &data, &cuts);
        check_blocked_at(&h, &v, &cuts, data.len(), block_at)?;
    }
}

#[test]
fn l7_accept_rule_with_drop_policy() {
    // Only ok.example.org is allowed over TLS; everything else is dropped by
    // the policy, including flows without a name.
    for (payload, ok) in [
        (synth::tls_client_hello("ok.example.org"), true),
        (synth::tls_client_hello("other.example.org"), false),
        (b"SSH-2.0-x\r\n".to_vec(), false),
    ] {
        let mut h = H::allow_only(
            r#"
proto = "tcp"
dport = 443
tls_sni = "ok.example.org""#,
        );
        let (c, s) = (sa(LAPTOP_C), sa(SERVER_443));
        h.handshake(c, s, LAPTOP);
        let v = h.stream(c, s, LAPTOP, &payload, &[]);
        assert_eq!(
            v[0] == Verdict::Forward(TUN),
            ok,
            "{v:?} {:?} {:?}",
            h.p.l7_stats(),
            String::from_utf8_lossy(&payload)
        );
        if !ok {
            assert_eq!(v[0], Verdict::Drop(DropReason::Policy(Chain::Forward)));
        }
        assert_eq!(h.p.l7_pending(), 0);
    }
}

#[test]
fn reload_keeps_decided_names() {
    let mut h = H::new("");
    let (c, s) = (sa(PHONE_C), sa(SERVER_443));
    h.handshake(c, s, PHONE);
    let ch = synth::tls_client_hello("ok.example.org");
    let next = 1001 + ch.len() as u32;
    let v = h.stream(c, s, PHONE, &ch, &[]);
    assert_eq!(v, vec![Verdict::Forward(TUN)]);
    // Reload with a rule blocking ok.example.org for everyone: the live flow
    // is re-checked with its name and revoked.
    let text = BASE.replacen(
        "[[rule]]",
        "[[rule]]\nchain = \"forward\"\ntls_sni = \"ok.example.org\"\naction = \"drop\"\n\n[[rule]]",
        1,
    );
    let cfg = load_str(&text, "t.toml").unwrap();
    h.p.reload(PipelineConfig::from_config(&cfg));
    assert!(!matches!(
        h.send(tcp(c, s, ACK, next, 5001, b""), PHONE),
        Verdict::Forward(_)
    ));
    // A flow with another name survives the same reload.
    let mut h = H::new("");
    h.handshake(c, s, PHONE);
    let ch = synth::tls_client_hello("other.example.org");
    let next = 1001 + ch.len() as u32;
    let _ = h.stream(c, s, PHONE, &ch, &[]);
    h.p.reload(PipelineConfig::from_config(&cfg));
    assert_eq!(
        h.send(tcp(c, s, ACK, next, 5001, b""), PHONE),
        Verdict::Forward(TUN)
    );
}
