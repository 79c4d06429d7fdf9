//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by
//! the corpus-replay test (`tests/fuzz_corpus.rs`), so that the test suite
//! runs exactly what the fuzzers run.
//!
//! Both functions must return normally for every input: a panic is a bug.

use crate::packet;
use crate::pipeline::{testbed, Pipeline};
use crate::rules::{Action, ChainDef, CtStateMask, PortMatch, RejectWith, Rule};
use crate::verdict::Verdict;
use crate::zone::ZoneId;
use std::time::{Duration, Instant};

/// Feeds the bytes to the config loader as TOML text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::load_str(text, "fuzz.toml");
    }
}

/// A restrictive forward chain exercising every action.
fn fuzz_rules() -> ChainDef {
    let ports = |p: u16| {
        Some(PortMatch {
            ranges: vec![(p, p)],
            negate: false,
        })
    };
    ChainDef {
        rules: vec![
            Rule {
                ct_state: Some(CtStateMask(CtStateMask::ESTABLISHED | CtStateMask::RELATED)),
                ..Rule::any(Action::Accept)
            },
            Rule {
                proto: Some(packet::proto::TCP),
                dport: ports(80),
                ..Rule::any(Action::Accept)
            },
            Rule {
                proto: Some(packet::proto::TCP),
                dport: ports(22),
                log: true,
                ..Rule::any(Action::Reject(RejectWith::Default))
            },
            Rule {
                proto: Some(packet::proto::UDP),
                ..Rule::any(Action::Reject(RejectWith::IcmpUnreachable(13)))
            },
            Rule {
                proto: Some(packet::proto::ICMP),
                ..Rule::any(Action::Accept)
            },
            Rule {
                proto: Some(packet::proto::ICMPV6),
                ..Rule::any(Action::Accept)
            },
        ],
        policy: Action::Drop,
    }
}

/// Interprets the bytes as a sequence of packets, each `[zone][len_hi][len_lo][bytes...]`
/// (zone byte modulo 3: tun, laptop, phone; the clock advances by the zone
/// byte's high bits in seconds), and runs them through one pipeline. Checks
/// the pipeline's invariants after every packet.
pub fn pipeline(data: &[u8]) {
    let start = Instant::now();
    let mut p: Pipeline = Pipeline::new(testbed::config(fuzz_rules()), testbed::KEY, start);
    let mut now = start;
    let mut rest = data;
    let mut handled = 0u64;
    while let [z, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (pkt, next) = tail.split_at(len);
        rest = next;
        let zone = match z % 3 {
            0 => ZoneId::TUN,
            1 => ZoneId::peer(0),
            _ => ZoneId::peer(1),
        };
        now += Duration::from_secs(u64::from(z >> 5));
        let mut buf = pkt.to_vec();
        let v = p.handle(&mut buf, zone, now);
        handled += 1;
        if let Verdict::Forward(out) = v {
            assert_ne!(out, zone, "a packet is never sent back to its own zone");
            assert!(out == ZoneId::TUN || out.is_peer(), "forwarded to {out:?}");
            // whatever we forward parses (rewrites keep packets valid)
            assert!(
                packet::parse(&buf).is_ok(),
                "forwarded an unparsable packet"
            );
        }
        while let Some(t) = p.poll_transmit() {
            // replies are built whole; released fragments each parsed on the way in
            assert!(
                packet::parse(&t.packet).is_ok(),
                "queued an unparsable packet"
            );
            assert!(t.zone == ZoneId::TUN || t.zone.is_peer());
        }
        while p.poll_event().is_some() {}
        if z & 0x10 != 0 {
            p.handle_timeout(now);
        }
    }
    let s = p.stats();
    assert_eq!(s.received.packets, handled);
    assert_eq!(
        s.received.packets,
        s.forwarded.packets
            + s.local.packets
            + s.held.packets
            + s.dropped.packets
            + s.rejected.packets,
        "every packet gets exactly one verdict"
    );
    assert_eq!(
        s.drop_reason_total(),
        s.dropped.packets + s.rejected.packets
    );
}

/// Feeds the bytes to the IDS rule parser as rule text (one rule per line).
pub fn ids_rules(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut out = Vec::new();
        let mut rep = crate::ids::rule::LoadReport::default();
        crate::ids::rule::load_text(
            text,
            &crate::ids::rule::Vars::suricata_defaults(),
            &mut out,
            &mut rep,
        );
    }
}

/// Feeds the bytes to the app-layer parsers (HTTP request, TLS ClientHello,
/// DNS) and, as a client TCP stream cut into segments by the first byte,
/// through the IDS with a few rules on every buffer.
pub fn ids_app(data: &[u8]) {
    let _ = crate::ids::app::parse_http_request(data);
    let _ = crate::ids::app::parse_client_hello(data);
    let _ = crate::ids::app::dns_queries(data);
    let rules = "alert http any any -> any any (http.uri; content:\"a\"; http.host; content:\"b\"; sid:1;)\n\
alert tls any any -> any any (tls.sni; dotprefix; content:\".x\"; sid:2;)\n\
alert dns any any -> any any (dns.query; content:\"q\"; pcre:\"/q.*z/R\"; sid:3;)\n\
drop tcp any any -> any any (content:\"GET\"; content:\"x\"; distance:0; within:5; isdataat:!2,relative; sid:4;)\n";
    let mut sigs = Vec::new();
    let mut rep = crate::ids::rule::LoadReport::default();
    crate::ids::rule::load_text(
        rules,
        &crate::ids::rule::Vars::suricata_defaults(),
        &mut sigs,
        &mut rep,
    );
    let mut r = crate::ids::replay::Replay::new(crate::ids::Ids::new(
        sigs,
        crate::ids::IdsConfig::default(),
        (1, 2),
    ));
    let now = Instant::now();
    let step = usize::from(data.first().copied().unwrap_or(7) % 16) + 1;
    for port in [80u16, 443, 53] {
        let c: std::net::SocketAddr = ([10, 0, 0, 1], 40000).into();
        let s: std::net::SocketAddr = ([10, 0, 0, 2], port).into();
        let syn = packet::synth::TcpSpec {
            flags: packet::tcp_flags::SYN,
            seq: 99,
            ..Default::default()
        };
        if let Some(p) = packet::synth::tcp(c, s, syn, &[]) {
            r.packet(&p, now);
        }
        for (i, chunk) in data.chunks(step).enumerate() {
            // Every other segment is sent twice out of order.
            let seq = 100 + (i * step) as u32;
            let spec = packet::synth::TcpSpec {
                flags: packet::tcp_flags::ACK,
                seq,
                ..Default::default()
            };
            if let Some(p) = packet::synth::tcp(c, s, spec, chunk) {
                r.packet(&p, now);
                if i % 2 == 1 {
                    r.packet(&p, now);
                }
            }
        }
        if let Some(p) = packet::synth::udp(c, s, data) {
            r.packet(&p, now);
        }
    }
    while r.ids.poll_alert().is_some() {}
}
