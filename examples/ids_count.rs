//! Runs the IDS benchmark mix through `Ids::inspect`, for instruction counting
//! (the shared bench machine is too noisy for wall-clock before/after numbers):
//!
//! ```text
//! cargo build --release --example ids_count
//! valgrind --tool=callgrind --toggle-collect='*ids_count*run*' \
//!     target/release/examples/ids_count et_open synth 5
//! ```
//!
//! Arguments: rule set (`et_open` / `none`), mix (`synth` / `pcaps`), rounds.
//! The inputs are the ones of `benches/ids.rs` (`benches/common/ids_mix.rs`);
//! `run` holds only the timed loop (a round inspects every packet of the mix
//! as new flows, then forgets them), so instructions collected in it divided
//! by rounds × mix bytes are instructions per inspected byte.

#[path = "../benches/common/ids_mix.rs"]
mod ids_mix;

use ids_mix::Pkt;
use portcullis::ids::{Ids, IdsConfig};
use std::hint::black_box;
use std::time::Instant;

#[inline(never)]
fn run(ids: &mut Ids, pkts: &[Pkt], rounds: u32, now: Instant) {
    for _ in 0..rounds {
        ids_mix::round(ids, pkts, now);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let set = args.get(1).map_or("et_open", String::as_str);
    let which = args.get(2).map_or("synth", String::as_str);
    let rounds: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let sigs = if set == "none" {
        Vec::new()
    } else {
        ids_mix::et_open().0
    };
    let mut ids = Ids::new(sigs, IdsConfig::default(), (1, 2));
    println!(
        "load + compile: {:.0} ms, RSS +{} KiB",
        t0.elapsed().as_secs_f64() * 1e3,
        rss_kib().saturating_sub(rss0)
    );
    let (ip_only, hdr, _, _) = ids.shape();
    println!(
        "{} rules: {ip_only} IP-only, header rules [tcp, udp, icmp, other] {hdr:?}",
        ids.rule_count()
    );
    let (pkts, bytes) = if which == "pcaps" {
        ids_mix::pcap_mix()
    } else {
        ids_mix::mix()
    };
    let now = Instant::now();
    let t = Instant::now();
    run(&mut ids, &pkts, rounds, now);
    let s = t.elapsed().as_secs_f64();
    println!(
        "{set} {which}: {} packets, {bytes} bytes x {rounds} rounds: {:.3} Gbit/s; {:?}",
        pkts.len(),
        (bytes * u64::from(rounds)) as f64 * 8.0 / s / 1e9,
        black_box(ids.stats())
    );
}

/// Resident set size from /proc/self/status (0 when unavailable).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
