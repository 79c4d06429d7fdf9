//! IDS benchmarks.
//!
//! - Load: parsing the whole ET Open set (../shared/data/rules/et-open) and
//!   compiling the prefilters; the heap the compiled engine holds is measured
//!   with a counting global allocator and printed first.
//! - `inspect/*`: `Ids::inspect` throughput over a realistic mix of flows,
//!   with 0 rules and with the whole loaded ET Open set. The mix per round:
//!   HTTP flows (request ~450 B, response headers + 8 × 1,400 B of HTML
//!   body), TLS flows (ClientHello ~250 B, then 8 × 1,400 B of encrypted
//!   records), DNS queries over UDP. Every packet (handshakes and pure ACKs
//!   included) counts its IP bytes. State is reset between rounds (each round
//!   is new flows), so stream reassembly, app-layer parsing and prefiltering
//!   are all measured. Target: >= 1 Gbit/s per core with the full set.

#![allow(clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use portcullis::conntrack::{Dir, FlowId};
use portcullis::ids::rule::{load_text, LoadReport, Signature, Vars};
use portcullis::ids::{Ids, IdsConfig};
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags::{ACK, PSH, SYN};
use portcullis::packet::{self as pk, PacketMeta};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn et_open() -> (Vec<Signature>, LoadReport) {
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

type Pkt = (FlowId, Dir, PacketMeta, Vec<u8>);

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

fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
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

fn mix() -> (Vec<Pkt>, u64) {
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
                &dns_query(&format!("cdn{q}.service{i}.example.org")),
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

fn round(ids: &mut Ids, pkts: &[Pkt], now: Instant) {
    for (f, d, m, p) in pkts {
        black_box(ids.inspect(*f, *d, m, p, now));
    }
    while ids.poll_alert().is_some() {}
    for (f, ..) in pkts {
        ids.flow_closed(*f);
    }
}

fn main() {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (sigs, rep) = et_open();
    let rep_sigs = sigs.clone();
    let ids_full = Ids::new(sigs, IdsConfig::default(), (1, 2));
    let took = t0.elapsed();
    let mem = ALLOCATED.load(Ordering::Relaxed).saturating_sub(before);
    println!("{}", rep.render());
    println!(
        "ET Open load + compile: {:.0} ms, engine heap {:.1} MiB",
        took.as_secs_f64() * 1e3,
        mem as f64 / (1 << 20) as f64
    );
    if std::env::var_os("IDS_AC_PROBE").is_some() {
        let pats: Vec<Vec<u8>> = ids_full_patterns(&rep_sigs);
        let hay: Vec<u8> = b"<div class=\"item\"><a href=\"/products/view?id=1234\">Lorem ipsum dolor sit amet</a></div>\n".iter().copied().cycle().take(1 << 20).collect();
        for kind in [
            aho_corasick::AhoCorasickKind::DFA,
            aho_corasick::AhoCorasickKind::ContiguousNFA,
        ] {
            for ci in [true, false] {
                let ac = aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(ci)
                    .kind(Some(kind))
                    .build(&pats)
                    .expect("automaton");
                let t = Instant::now();
                let n = ac.find_overlapping_iter(&hay).count();
                println!(
                    "probe {kind:?} ci={ci}: {} patterns, {n} hits, {:.0} MB/s",
                    pats.len(),
                    1.0 / t.elapsed().as_secs_f64()
                );
            }
        }
    }
    let (pkts, bytes) = mix();
    let now = Instant::now();
    // One warm round to report alerts (false positives on benign traffic).
    let mut ids_full = ids_full;
    for (f, d, m, p) in &pkts {
        ids_full.inspect(*f, *d, m, p, now);
    }
    let mut n = 0;
    while let Some(a) = ids_full.poll_alert() {
        if n < 5 {
            println!("  alert on the mix: sid {} {}", a.sid, a.msg);
        }
        n += 1;
    }
    println!(
        "mix: {} packets, {} bytes, {n} alerts per round; stats {:?}",
        pkts.len(),
        bytes,
        ids_full.stats()
    );
    for (f, ..) in &pkts {
        ids_full.flow_closed(*f);
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("inspect");
    g.throughput(Throughput::Bytes(bytes));
    let mut empty = Ids::new(Vec::new(), IdsConfig::default(), (1, 2));
    g.bench_function("no_rules", |b| b.iter(|| round(&mut empty, &pkts, now)));
    g.bench_function("et_open", |b| b.iter(|| round(&mut ids_full, &pkts, now)));
    g.finish();
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("et_open", |b| {
        b.iter(|| {
            let (s, _) = et_open();
            black_box(Ids::new(s, IdsConfig::default(), (1, 2)))
        })
    });
    g.finish();
    c.final_summary();
}

fn ids_full_patterns(sigs: &[Signature]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = sigs
        .iter()
        .filter_map(|s| s.fast.as_ref())
        .filter(|(b, _)| *b == portcullis::ids::rule::Buffer::Payload)
        .map(|(_, p)| p[..p.len().min(32)].to_vec())
        .collect();
    v.sort();
    v.dedup();
    v
}
