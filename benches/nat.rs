//! NAT cost on the fast path: ns per packet through `Pipeline::handle` for
//! packets of established UDP and TCP flows, with and without a masquerade
//! rule translating them (both directions alternate). 1,024 flows per table; each
//! iteration copies a template packet (the pipeline rewrites in place), in
//! both variants, so the difference is the translation.
//! Target: NAT costs <= 5% of the per-packet time of the untranslated path.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::nat::{NatAction, NatConfig, NatRule};
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags;
use portcullis::pipeline::{testbed, Pipeline};
use portcullis::rules::{Action, ChainDef, Rule};
use portcullis::verdict::Verdict;
use portcullis::zone::ZoneId;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

const FLOWS: u16 = 1024;
const LAPTOP: ZoneId = ZoneId(3);

fn pipeline(nat: bool, now: Instant) -> Pipeline {
    let mut cfg = testbed::config(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Drop,
    });
    if nat {
        cfg.nat = NatConfig {
            rules: vec![NatRule {
                name: "bench".into(),
                matches: Rule::any(Action::Accept),
                action: NatAction::Masquerade {
                    tun_addrs: vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, 254))],
                    ports: None,
                },
                mss_clamp: false,
                log: false,
                health: None,
            }],
            local_nets: vec![],
            peer_routes: cfg.peer_routes.clone(),
            mtu: 1420,
        };
    }
    Pipeline::new(cfg, testbed::KEY, now)
}

/// Sets up `FLOWS` flows (first packet + a reply each); returns (original, reply) packets.
fn flows(pl: &mut Pipeline, tcp: bool, now: Instant) -> Vec<(Vec<u8>, Vec<u8>)> {
    let client = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
    let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 443);
    let payload = [0u8; 1200];
    let mut out = Vec::new();
    for i in 0..FLOWS {
        let c = SocketAddr::new(client, 20_000 + i);
        let mk = |src, dst, flags, seq, ack, data: &[u8]| {
            if tcp {
                let spec = TcpSpec {
                    flags,
                    seq,
                    ack,
                    ..TcpSpec::default()
                };
                synth::tcp(src, dst, spec, data)
            } else {
                synth::udp(src, dst, data)
            }
            .unwrap_or_default()
        };
        let mut first = mk(c, server, tcp_flags::SYN, 1000, 0, &[]);
        if pl.handle(&mut first, LAPTOP, now) != Verdict::Forward(ZoneId::TUN) {
            panic!("setup: first packet not forwarded");
        }
        let ext = portcullis::packet::parse(&first)
            .map(|m| SocketAddr::new(m.src, m.ports().0))
            .unwrap_or(c);
        let mut synack = mk(
            server,
            ext,
            tcp_flags::SYN | tcp_flags::ACK,
            5000,
            1001,
            &[],
        );
        pl.handle(&mut synack, ZoneId::TUN, now);
        let mut ack = mk(c, server, tcp_flags::ACK, 1001, 5001, &[]);
        pl.handle(&mut ack, LAPTOP, now);
        let data = mk(c, server, tcp_flags::ACK, 1001, 5001, &payload);
        let reply = mk(server, ext, tcp_flags::ACK, 5001, 1001, &payload);
        out.push((data, reply));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_established");
    g.throughput(criterion::Throughput::Elements(1));
    for tcp in [false, true] {
        for nat in [false, true] {
            let now = Instant::now();
            let mut pl = pipeline(nat, now);
            let pkts = flows(&mut pl, tcp, now);
            let mut buf = vec![0u8; 2048];
            let mut i = 0usize;
            let name = format!(
                "{}_{}",
                if tcp { "tcp" } else { "udp" },
                if nat { "nat" } else { "plain" }
            );
            g.bench_function(name, |b| {
                b.iter(|| {
                    let (o, r) = &pkts[(i >> 1) % pkts.len()];
                    let (p, z) = if i & 1 == 0 {
                        (o, LAPTOP)
                    } else {
                        (r, ZoneId::TUN)
                    };
                    i = i.wrapping_add(1);
                    let n = p.len();
                    buf[..n].copy_from_slice(p);
                    black_box(pl.handle(&mut buf[..n], z, now))
                })
            });
            assert!(
                pl.stats().dropped.packets == 0,
                "bench packets must not be dropped"
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
