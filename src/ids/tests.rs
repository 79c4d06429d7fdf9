//! Engine tests: synthesized flows through [`Replay`].

use super::replay::Replay;
use super::rule::{load_text, LoadReport, Vars};
use super::*;
use crate::packet::synth::{self, TcpSpec};
use crate::packet::tcp_flags::{ACK, PSH, SYN};
use std::net::SocketAddr;

pub(crate) fn engine(rules: &str, mode: Mode) -> Replay {
    let mut sigs = Vec::new();
    let mut rep = LoadReport::default();
    load_text(rules, &Vars::suricata_defaults(), &mut sigs, &mut rep);
    assert_eq!(rep.skipped_total(), 0, "{}", rep.render());
    Replay::new(Ids::new(
        sigs,
        IdsConfig {
            mode,
            ..IdsConfig::default()
        },
        (1, 2),
    ))
}

const C: &str = "192.168.1.10:40000";
const S: &str = "203.0.113.5:80";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP client->server session: handshake, then `segs` as (relative seq, bytes).
pub(crate) fn session(r: &mut Replay, server: &str, segs: &[(u32, &[u8])]) -> Vec<IdsVerdict> {
    let now = Instant::now();
    let (c, s) = (sa(C), sa(server));
    let syn = synth::tcp(
        c,
        s,
        TcpSpec {
            flags: SYN,
            seq: 999,
            ..TcpSpec::default()
        },
        b"",
    )
    .unwrap();
    let synack = synth::tcp(
        s,
        c,
        TcpSpec {
            flags: SYN | ACK,
            seq: 4999,
            ack: 1000,
            ..TcpSpec::default()
        },
        b"",
    )
    .unwrap();
    let ack = synth::tcp(
        c,
        s,
        TcpSpec {
            flags: ACK,
            seq: 1000,
            ack: 5000,
            ..TcpSpec::default()
        },
        b"",
    )
    .unwrap();
    for p in [syn, synack, ack] {
        r.packet(&p, now);
    }
    segs.iter()
        .map(|(off, d)| {
            let p = synth::tcp(
                c,
                s,
                TcpSpec {
                    flags: ACK | PSH,
                    seq: 1000 + off,
                    ack: 5000,
                    ..TcpSpec::default()
                },
                d,
            )
            .unwrap();
            r.packet(&p, now).unwrap()
        })
        .collect()
}

fn sids(r: &mut Replay) -> Vec<u32> {
    let mut v = Vec::new();
    while let Some(a) = r.ids.poll_alert() {
        if a.event == EventType::Alert {
            v.push(a.sid);
        }
    }
    v
}

const HTTP_RULES: &str = r#"
alert http any any -> any any (msg:"uri"; flow:established,to_server; http.uri; content:"/evil.php"; sid:1;)
alert http any any -> any any (msg:"ua"; http.user_agent; content:"sqlmap"; nocase; sid:2;)
alert tcp any any -> any 80 (msg:"raw"; flow:to_server; content:"cmd.exe"; sid:3;)
drop http any any -> any any (msg:"host"; http.host; content:"bad.example"; endswith; sid:4;)
alert http any any -> any any (msg:"method+uri"; http.method; content:"POST"; http.uri; content:"/login"; startswith; sid:5;)
"#;

#[test]
fn http_buffers() {
    let mut r = engine(HTTP_RULES, Mode::Detect);
    session(&mut r, S, &[(0, b"GET /x/evil.php?a=1 HTTP/1.1\r\nHost: www.bad.example\r\nUser-Agent: SQLMap/1.0\r\n\r\n")]);
    let mut got = sids(&mut r);
    got.sort();
    assert_eq!(got, vec![1, 2, 4]);
    let mut r = engine(HTTP_RULES, Mode::Detect);
    session(
        &mut r,
        S,
        &[(0, b"POST /login HTTP/1.1\r\nHost: ok\r\n\r\n")],
    );
    assert_eq!(sids(&mut r), vec![5]);
    let mut r = engine(HTTP_RULES, Mode::Detect);
    session(
        &mut r,
        S,
        &[(0, b"GET /login HTTP/1.1\r\nHost: bad.example.org\r\n\r\n")],
    );
    assert_eq!(sids(&mut r), Vec::<u32>::new());
}

/// The same request, cut and reordered many ways, alerts exactly as whole.
#[test]
fn evasions_alert_like_the_plain_stream() {
    let req: &[u8] = b"GET /run?x=cmd.exe HTTP/1.1\r\nHost: a\r\n\r\n";
    let whole = {
        let mut r = engine(HTTP_RULES, Mode::Detect);
        session(&mut r, S, &[(0, req)]);
        sids(&mut r)
    };
    assert_eq!(whole, vec![3]);
    let split: Vec<(u32, &[u8])> = vec![(0, &req[..13]), (13, &req[13..16]), (16, &req[16..])];
    let mut reversed = split.clone();
    reversed.reverse();
    let tiny: Vec<(u32, &[u8])> = (0..req.len()).map(|i| (i as u32, &req[i..i + 1])).collect();
    // Overlap with the same data, then a conflicting later copy that must lose.
    let overlap: Vec<(u32, &[u8])> = vec![(0, &req[..20]), (10, &req[10..]), (14, b"XXXXXXX")];
    for (name, segs) in [
        ("split", split),
        ("reversed", reversed),
        ("tiny", tiny),
        ("overlap", overlap),
    ] {
        let mut r = engine(HTTP_RULES, Mode::Detect);
        session(&mut r, S, &segs);
        assert_eq!(sids(&mut r), whole, "{name}");
    }
}

#[test]
fn prevent_mode_drops_the_flow() {
    let req: &[u8] = b"GET / HTTP/1.1\r\nHost: bad.example\r\n\r\n";
    let mut r = engine(HTTP_RULES, Mode::Prevent);
    let v = session(
        &mut r,
        S,
        &[
            (0, &req[..10]),
            (10, &req[10..]),
            (req.len() as u32, b"more"),
        ],
    );
    assert_eq!(
        v,
        vec![IdsVerdict::Pass, IdsVerdict::Drop, IdsVerdict::Drop]
    );
    // Detect mode: the same alert, nothing dropped, action "allowed".
    let mut r = engine(HTTP_RULES, Mode::Detect);
    let v = session(&mut r, S, &[(0, req)]);
    assert_eq!(v, vec![IdsVerdict::Pass]);
    let a = r.ids.poll_alert().unwrap();
    assert!(a.sid == 4 && !a.blocked);
}

#[test]
fn conflicting_overlap_is_an_anomaly_and_dropped_in_prevent() {
    let mut r = engine(
        "alert tcp any any -> any any (content:\"zzz\"; sid:1;)",
        Mode::Prevent,
    );
    let v = session(&mut r, S, &[(0, b"hello"), (0, b"HELLO")]);
    assert_eq!(v, vec![IdsVerdict::Pass, IdsVerdict::Drop]);
    assert_eq!(
        r.ids.poll_alert().map(|a| a.event),
        Some(EventType::Anomaly)
    );
}

#[test]
fn pass_wins_and_reject() {
    let rules = "pass tcp any any -> any 80 (content:\"ok-token\"; sid:9;)\nreject tcp any any -> any 80 (content:\"attack\"; sid:10;)\n";
    let mut r = engine(rules, Mode::Prevent);
    let v = session(&mut r, S, &[(0, b"attack ok-token")]);
    assert_eq!(v, vec![IdsVerdict::Pass]);
    let mut r = engine(rules, Mode::Prevent);
    let v = session(&mut r, S, &[(0, b"attack")]);
    assert_eq!(v, vec![IdsVerdict::Reject]);
}

#[test]
fn tls_sni_and_dns() {
    let rules = "alert tls any any -> any any (tls.sni; content:\"blocked.example\"; sid:1;)\nalert dns any any -> any any (dns.query; content:\"evil\"; sid:2;)\nalert udp any any -> any 53 (content:\"|04|evil\"; sid:3;)\n";
    let mut r = engine(rules, Mode::Detect);
    let hello = synth::tls_client_hello("www.blocked.example");
    session(
        &mut r,
        "203.0.113.5:443",
        &[(0, &hello[..30]), (30, &hello[30..])],
    );
    assert_eq!(sids(&mut r), vec![1]);
    let q = synth::udp(
        sa(C),
        sa("203.0.113.53:53"),
        &synth::dns_query("www.evil.com"),
    )
    .unwrap();
    r.packet(&q, Instant::now());
    let mut got = sids(&mut r);
    got.sort();
    assert_eq!(got, vec![2, 3]);
    // DNS over TCP, length-prefixed, split in two segments.
    let m = synth::dns_query("evil.org");
    let mut tcpmsg = (m.len() as u16).to_be_bytes().to_vec();
    tcpmsg.extend_from_slice(&m);
    session(
        &mut r,
        "203.0.113.53:53",
        &[(0, &tcpmsg[..5]), (5, &tcpmsg[5..])],
    );
    assert_eq!(sids(&mut r), vec![2]);
}

#[test]
fn header_rules_thresholds_and_ip_only() {
    let rules = "alert icmp any any -> any any (itype:8; threshold:type limit, track by_src, count 2, seconds 60; sid:1;)\nalert ip 203.0.113.0/24 any -> any any (msg:\"bad net\"; sid:2;)\nalert tcp any any -> any any (flags:S; sid:3;)\n";
    let mut r = engine(rules, Mode::Detect);
    let now = Instant::now();
    for i in 0..5 {
        let p = synth::icmp_echo(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            1,
            i,
            false,
            b"x",
        )
        .unwrap();
        r.packet(&p, now);
    }
    assert_eq!(sids(&mut r), vec![1, 1]);
    session(&mut r, S, &[(0, b"abc")]);
    let mut got = sids(&mut r);
    got.sort();
    // SYN matches flags:S; the server's packets (src 203.0.113.5) hit the
    // IP-only rule once for that direction.
    assert_eq!(got, vec![2, 3]);
}

#[test]
fn dotprefix_matches_the_name_and_subdomains_only() {
    let rules = "alert dns any any -> any any (dns.query; dotprefix; content:\".evil.com\"; endswith; sid:1;)\n";
    let mut r = engine(rules, Mode::Detect);
    for (name, hit) in [
        ("evil.com", true),
        ("a.evil.com", true),
        ("notevil.com", false),
    ] {
        let q = synth::udp(sa(C), sa("203.0.113.53:53"), &synth::dns_query(name)).unwrap();
        r.packet(&q, Instant::now());
        assert_eq!(sids(&mut r) == vec![1], hit, "{name}");
    }
}

#[test]
fn flowbits_across_directions() {
    let rules = "alert tcp any any -> any 80 (flow:to_server; content:\"login\"; flowbits:set,seen_login; flowbits:noalert; sid:1;)\n\
alert tcp any 80 -> any any (flow:to_client; content:\"welcome\"; flowbits:isset,other|seen_login; sid:2;)\n\
alert tcp any 80 -> any any (flow:to_client; content:\"welcome\"; flowbits:isnotset,seen_login; sid:3;)\n";
    let run = |req: &[u8]| {
        let mut r = engine(rules, Mode::Detect);
        session(&mut r, S, &[(0, req)]);
        let now = Instant::now();
        let p = synth::tcp(
            sa(S),
            sa(C),
            TcpSpec {
                flags: ACK | PSH,
                seq: 5000,
                ack: 1000 + req.len() as u32,
                ..TcpSpec::default()
            },
            b"welcome",
        )
        .unwrap();
        r.packet(&p, now);
        sids(&mut r)
    };
    assert_eq!(
        run(b"POST /login"),
        vec![2],
        "sid 1 is silent, sid 2 sees the bit"
    );
    assert_eq!(run(b"GET /"), vec![3]);
}

/// `tcp-pkt` and stream rules on the same and on separate patterns: an
/// in-order segment is scanned once for both groups (`Ids::run_tcp`), other
/// segments separately; either way a `tcp-pkt` rule sees only whole packets
/// and a stream rule the reassembled bytes.
#[test]
fn tcp_pkt_and_stream_rules_in_and_out_of_order() {
    const RULES: &str = r#"
alert tcp-pkt any any -> any 80 (msg:"pkt"; content:"attack"; sid:10;)
alert tcp-stream any any -> any 80 (msg:"stream"; content:"attack"; sid:11;)
alert tcp-pkt any any -> any 80 (msg:"pkt only"; content:"zzpkt"; sid:12;)
"#;
    let run = |segs: &[(u32, &[u8])]| {
        let mut r = engine(RULES, Mode::Detect);
        session(&mut r, S, segs);
        let mut got = sids(&mut r);
        got.sort();
        got
    };
    assert_eq!(run(&[(0, b"an attack zzpkt")]), vec![10, 11, 12]);
    // Split: only the stream sees "attack"; the window of the second
    // segment starts before its payload, and that part is not the packet's:
    // rule 10 is not even a candidate (11 by the stream, 12 by the payload).
    let mut r = engine(RULES, Mode::Detect);
    session(&mut r, S, &[(0, b"xxatt"), (5, b"ackyy zzpkt")]);
    assert_eq!(r.ids.stats().candidates, 2);
    let mut got = sids(&mut r);
    got.sort();
    assert_eq!(got, vec![11, 12]);
    assert_eq!(
        run(&[(0, b"xxattack"), (8, b"zzp"), (11, b"kt")]),
        vec![10, 11]
    );
    // Out of order: the later segment waits, the earlier one completes the
    // stream with more bytes than its own payload.
    assert_eq!(run(&[(5, b"ck zzpkt"), (0, b"xatta")]), vec![11, 12]);
    assert_eq!(run(&[(5, b"ck attack"), (0, b"xatta")]), vec![10, 11]);
}
