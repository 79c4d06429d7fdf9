//! The IDS benchmark inputs, shared by `benches/ids.rs` and
//! `examples/ids_count.rs` (instruction counts): the loaded ET Open set and
//! the packet mixes.

#![allow(dead_code)]

use portcullis::conntrack::{Dir, FlowId};
use portcullis::ids::rule::{load_text, LoadReport, Signature, Vars};
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags::{ACK, PSH, SYN};
use portcullis::packet::{self as pk, PacketMeta};
use std::net::SocketAddr;
use std::path::Path;

pub fn et_open() -> (Vec<Signature>, LoadReport) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/rules/et-open");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "rules"));
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let mut sigs = Vec::new();
    let mut rep = LoadReport::default();
    for t in &texts {
        rep.files += 1;
        load_text(t, &Vars::suricata_defaults(), &mut sigs, &mut rep);
    }
    (sigs, rep)
}

pub type Pkt = (FlowId, Dir, PacketMeta, Vec<u8>);

fn tcp_flow(id: u32, c: SocketAddr, s: SocketAddr, req: &[u8], resp: &[&[u8]], out: &mut Vec<Pkt>) {
    let mut push = |dir: Dir, p: Vec<u8>| {
        if let Ok(m) = pk::parse(&p) {
            out.push((FlowId(id), dir, m, p));
        }
    };
    let spec = |flags, seq, ack| TcpSpec {
        flags,
        seq,
        ack,
        ..TcpSpec::default()
    };
    let (cs, ss) = (1000u32, 5000u32);
    push(
        Dir::Original,
        synth::tcp(c, s, spec(SYN, cs - 1, 0), b"").unwrap_or_default(),
    );
    push(
        Dir::Reply,
        synth::tcp(s, c, spec(SYN | ACK, ss - 1, cs), b"").unwrap_or_default(),
    );
    push(
        Dir::Original,
        synth::tcp(c, s, spec(ACK, cs, ss), b"").unwrap_or_default(),
    );
    push(
        Dir::Original,
        synth::tcp(c, s, spec(ACK | PSH, cs, ss), req).unwrap_or_default(),
    );
    let cack = cs + req.len() as u32;
    let mut off = 0u32;
    for seg in resp {
        push(
            Dir::Reply,
            synth::tcp(s, c, spec(ACK | PSH, ss + off, cack), seg).unwrap_or_default(),
        );
        off += seg.len() as u32;
        push(
            Dir::Original,
            synth::tcp(c, s, spec(ACK, cack, ss + off), b"").unwrap_or_default(),
        );
    }
}

fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0x00, 0x2b, 0, 3, 2, 3, 4]); // supported_versions
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(32);
    body.extend_from_slice(&[0x11; 32]);
    body.extend_from_slice(&[0, 6, 0x13, 1, 0x13, 2, 0x13, 3, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Pseudo-random bytes (xorshift), deterministic.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn mix() -> (Vec<Pkt>, u64) {
    let mut out = Vec::new();
    let html: Vec<u8> = b"<div class=\"item\"><a href=\"/products/view?id=1234&amp;ref=home\">Product name</a> <span>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</span></div>\n"
        .iter()
        .copied()
        .cycle()
        .take(1400 * 8)
        .collect();
    let mut id = 0;
    for i in 0..40u32 {
        let c: SocketAddr = format!("192.168.1.{}:{}", 10 + i % 200, 40000 + i)
            .parse()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let s: SocketAddr = format!("203.0.113.{}:80", 1 + i % 50).parse().unwrap_or(c);
        let req = format!("GET /shop/item/{i}?session=abc123&lang=en HTTP/1.1\r\nHost: www.example{i}.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nCookie: id=0123456789abcdef; theme=dark\r\nConnection: keep-alive\r\n\r\n");
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 11200\r\nServer: nginx\r\n\r\n".to_vec();
        resp.extend_from_slice(&html[..1400 * 8 - resp.len()]);
        let segs: Vec<&[u8]> = resp.chunks(1400).collect();
        tcp_flow(id, c, s, req.as_bytes(), &segs, &mut out);
        id += 1;
        let s443: SocketAddr = format!("198.51.100.{}:443", 1 + i % 50)
            .parse()
            .unwrap_or(c);
        let data = noise(1400 * 8, u64::from(i) + 7);
        let segs: Vec<&[u8]> = data.chunks(1400).collect();
        let ch = client_hello(&format!("api{i}.example.net"));
        tcp_flow(
            id,
            SocketAddr::new(c.ip(), c.port() + 1000),
            s443,
            &ch,
            &segs,
            &mut out,
        );
        id += 1;
        for q in 0..4u32 {
            let cq = SocketAddr::new(c.ip(), 50000 + (i * 4 + q) as u16);
            let p = synth::udp(
                cq,
                "192.168.1.1:53".parse().unwrap_or(c),
                &portcullis::packet::synth::dns_query(&format!("cdn{q}.service{i}.example.org")),
            )
            .unwrap_or_default();
            if let Ok(m) = pk::parse(&p) {
                out.push((FlowId(id), Dir::Original, m, p));
            }
            id += 1;
        }
    }
    let bytes = out.iter().map(|p| p.3.len() as u64).sum();
    (out, bytes)
}

/// One benchmark round: every packet of the mix, alerts drained, then the
/// flows forgotten (the next round is new flows).
pub fn round(ids: &mut portcullis::ids::Ids, pkts: &[Pkt], now: std::time::Instant) {
    for (f, d, m, p) in pkts {
        std::hint::black_box(ids.inspect(*f, *d, m, p, now));
    }
    while ids.poll_alert().is_some() {}
    for (f, ..) in pkts {
        ids.flow_closed(*f);
    }
}

/// Real traffic: the HTTP, TLS and DNS captures of ../shared/data/pcaps
/// (suricata-verify, OISF, MIT), replayed `COPIES` times as distinct flows.
/// Handshake-heavy (the captures hold little bulk data), so it weighs the
/// per-packet and per-flow costs; `mix` weighs the per-byte costs.
pub fn pcap_mix() -> (Vec<Pkt>, u64) {
    const COPIES: u32 = 20;
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/pcaps");
    let files = [
        "suricata-verify/tests/flowbit-oring/input.pcap",
        "samples/suricata-verify/http-ipv6-loopback.pcap",
        "suricata-verify/tests/bug-7264-tcp-3whs-ack-data-tls-01/input.pcap",
        "suricata-verify/tests/tls-alpn-log-detect-02/input.pcap",
        "suricata-verify/tests/tls/tls-client-hello-frag-01/dump_mtu300.pcap",
        "samples/suricata-verify/dns-udp-google.com-a-aaaa-mx.pcap",
        "suricata-verify/tests/dns/dns-query/dns-detect-query-01/input.pcap",
    ];
    let mut one = Vec::new();
    let mut label = portcullis::ids::replay::Replay::new(portcullis::ids::Ids::new(
        Vec::new(),
        portcullis::ids::IdsConfig::default(),
        (1, 2),
    ));
    for f in files {
        let Ok(bytes) = std::fs::read(base.join(f)) else {
            continue;
        };
        let Ok(cap) = pk::pcap::parse_pcap(&bytes) else {
            continue;
        };
        for p in cap.packets {
            if let Some((data, meta)) = portcullis::ids::replay::parse_captured(&p.data) {
                let (flow, dir) = label.flow_of(&meta);
                one.push((flow, dir, meta, data));
            }
        }
    }
    let flows = one.iter().map(|p| p.0 .0 + 1).max().unwrap_or(0);
    let mut out = Vec::new();
    for c in 0..COPIES {
        out.extend(
            one.iter()
                .map(|(f, d, m, p)| (FlowId(f.0 + c * flows), *d, *m, p.clone())),
        );
    }
    let bytes = out.iter().map(|p| p.3.len() as u64).sum();
    (out, bytes)
}
