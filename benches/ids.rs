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

#[path = "common/ids_mix.rs"]
mod ids_mix;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use ids_mix::{et_open, mix, pcap_mix, round};
use portcullis::ids::{Ids, IdsConfig};

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

fn main() {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (sigs, rep) = et_open();
    let ids_full = Ids::new(sigs, IdsConfig::default(), (1, 2));
    let took = t0.elapsed();
    let mem = ALLOCATED.load(Ordering::Relaxed).saturating_sub(before);
    println!("{}", rep.render());
    println!(
        "ET Open load + compile: {:.0} ms, engine heap {:.1} MiB",
        took.as_secs_f64() * 1e3,
        mem as f64 / (1 << 20) as f64
    );
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
    let (real, real_bytes) = pcap_mix();
    println!("pcap mix: {} packets, {real_bytes} bytes", real.len());
    let mut g = c.benchmark_group("inspect_pcaps");
    g.throughput(Throughput::Bytes(real_bytes));
    g.bench_function("no_rules", |b| b.iter(|| round(&mut empty, &real, now)));
    g.bench_function("et_open", |b| b.iter(|| round(&mut ids_full, &real, now)));
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
