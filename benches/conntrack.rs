//! Connection-tracking benchmarks.
//!
//! - `track/*`: `Conntrack::track` for a packet of an established flow in a
//!   table of 100,000 flows (the fast path's lookup + state machine).
//! - Memory: bytes per flow with 1,000,000 flows in the table, measured with
//!   a counting global allocator (everything the table allocates: the flow
//!   slab and the hash index), printed before the timing runs.
//!   Target: <= 200 bytes per flow (the Linux kernel needs ~300).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, Criterion};
use portcullis::conntrack::{Conntrack, CtConfig, Track};
use portcullis::packet::{proto, tcp_flags as F, PacketMeta, TcpInfo, L4};
use portcullis::zone::ZoneId;

/// Counts the bytes currently allocated.
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

const PEER: ZoneId = ZoneId(3);
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

/// Client number `i`: a distinct address in 100.64.0.0/10 and port.
fn client(i: u32) -> (IpAddr, u16) {
    let a = 0x6440_0000u32 | (i >> 4);
    (IpAddr::V4(Ipv4Addr::from(a)), 10_000 + (i & 15) as u16)
}

fn tcp(i: u32, from_client: bool, flags: u8, seq: u32, ack: u32, len: u16) -> PacketMeta {
    let (c, port) = client(i);
    let (src, dst, sport, dport) = if from_client {
        (c, SERVER, port, 443)
    } else {
        (SERVER, c, 443, port)
    };
    PacketMeta {
        src,
        dst,
        proto: proto::TCP,
        ttl: 64,
        total_len: 40 + len,
        l4_offset: 20,
        payload_offset: 40,
        frag: None,
        l4: L4::Tcp(TcpInfo {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: 65535,
            ..TcpInfo::default()
        }),
    }
}

fn udp(i: u32, from_client: bool) -> PacketMeta {
    let mut m = tcp(i, from_client, 0, 0, 0, 100);
    let (_, port) = client(i);
    m.proto = proto::UDP;
    m.l4 = if from_client {
        L4::Udp {
            sport: port,
            dport: 53,
        }
    } else {
        L4::Udp {
            sport: 53,
            dport: port,
        }
    };
    m
}

/// A table with `n` established TCP flows (full handshakes).
fn table(n: u32, t0: Instant) -> Conntrack {
    let cfg = CtConfig {
        max_entries: n as usize,
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg, (0x5eed_1234, 0x0bad_cafe), t0);
    for i in 0..n {
        let syn = tcp(i, true, F::SYN, 100, 0, 0);
        ct.insert(PEER, &syn, ZoneId::TUN, None, 1, t0)
            .expect("insert");
        ct.track(
            ZoneId::TUN,
            &tcp(i, false, F::SYN | F::ACK, 5000, 101, 0),
            t0,
        );
        let r = ct.track(PEER, &tcp(i, true, F::ACK, 101, 5001, 0), t0);
        assert!(matches!(r, Track::Tracked { .. }));
    }
    ct
}

fn memory() {
    const N: u32 = 1_000_000;
    let t0 = Instant::now();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let start = Instant::now();
    let ct = table(N, t0);
    let built = start.elapsed();
    let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
    assert_eq!(ct.len(), N as usize);
    println!(
        "conntrack memory: {} flows, {} bytes, {:.1} bytes/flow (target <= 200; kernel ~300); \
         built in {:.2?} ({:.0} ns per 3-packet handshake)",
        N,
        bytes,
        bytes as f64 / f64::from(N),
        built,
        built.as_nanos() as f64 / f64::from(N)
    );
    drop(ct);
}

fn bench_track(c: &mut Criterion) {
    const N: u32 = 100_000;
    let t0 = Instant::now();
    let mut ct = table(N, t0);
    let mut g = c.benchmark_group("track");
    let data = tcp(N / 2, true, F::ACK | F::PSH, 101, 5001, 1000);
    let ack = tcp(N / 2, false, F::ACK, 5001, 1101, 0);
    g.bench_function("tcp_established_orig_100k", |b| {
        b.iter(|| ct.track(black_box(PEER), black_box(&data), t0))
    });
    g.bench_function("tcp_established_reply_100k", |b| {
        b.iter(|| ct.track(black_box(ZoneId::TUN), black_box(&ack), t0))
    });
    // Many different flows: the lookup misses the CPU caches more often.
    let pkts: Vec<PacketMeta> = (0..4096u32)
        .map(|i| tcp(i * 24 % N, true, F::ACK, 101, 5001, 0))
        .collect();
    let mut k = 0usize;
    g.bench_function("tcp_established_spread_100k", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            ct.track(PEER, black_box(&pkts[k]), t0)
        })
    });
    // UDP: lookup + reply bookkeeping only.
    let mut cu = Conntrack::new(CtConfig::default(), (1, 2), t0);
    for i in 0..N {
        cu.insert(PEER, &udp(i, true), ZoneId::TUN, None, 1, t0)
            .expect("insert");
        cu.track(ZoneId::TUN, &udp(i, false), t0);
    }
    let u = udp(N / 3, true);
    g.bench_function("udp_established_100k", |b| {
        b.iter(|| cu.track(black_box(PEER), black_box(&u), t0))
    });
    // A packet with no flow (the first step of every new flow).
    let miss = tcp(N + 7, true, F::SYN, 1, 0, 0);
    g.bench_function("tcp_syn_miss_100k", |b| {
        b.iter(|| ct.track(black_box(PEER), black_box(&miss), t0))
    });
    g.finish();
}

criterion_group!(benches, bench_track);

fn main() {
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
