//! The fuzz targets' corpora, replayed as regression tests, plus a bounded
//! property test of random inputs through the same entry points
//! (`portcullis::fuzzing::{pipeline, config}`), so the suite runs exactly what
//! the fuzzers run (`fuzz/`, see `src/fuzzing.rs`).
//!
//! The seed corpus for the pipeline target is built by
//! [`seeds`]: packet sequences in the format `fuzzing::pipeline` reads
//! (`[zone][len_hi][len_lo][bytes...]`). `seed_corpus_is_up_to_date` checks the
//! committed files; regenerate them with
//! `PORTCULLIS_WRITE_SEEDS=1 cargo test --test fuzz_corpus seed_corpus`.
//! Crash inputs found by the fuzzers are added to the corpus directories by
//! hand (named `crash-*` / `regress-*`) and stay there.

#![allow(clippy::unwrap_used)]

use portcullis::fuzzing;
use portcullis::packet::fragment;
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

const PIPELINE_CORPUS: &str = "fuzz/corpus/pipeline";
const CONFIG_CORPUS: &str = "fuzz/corpus/config";

/// Zone bytes (`fuzzing::pipeline`: zone = byte % 3, clock += byte >> 5
/// seconds, bit 0x10 runs the timers).
const TUN: u8 = 0;
const LAPTOP: u8 = 1;
const PHONE: u8 = 2;
/// The same zone, `secs` (0..=7) seconds later.
const fn later(z: u8, secs: u8) -> u8 {
    z + (secs << 5)
}
/// The same zone, with the timers run after the packet.
const fn timers(z: u8) -> u8 {
    z | 0x10
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn pipeline_corpus_replays() {
    let fs = files(PIPELINE_CORPUS);
    assert!(fs.len() >= 8, "seed corpus missing: {fs:?}");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        fuzzing::pipeline(&data);
    }
}

#[test]
fn config_corpus_replays() {
    let fs = files(CONFIG_CORPUS);
    assert!(fs.len() >= 3, "seed corpus missing: {fs:?}");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        fuzzing::config(&data);
    }
}

/// The example configs (the fuzzer's seeds; copies live in the corpus, which
/// may lag behind) go through the same entry point.
#[test]
fn example_configs_replay() {
    let fs = files("conf");
    assert!(fs.iter().any(|f| f.ends_with("gateway.toml")), "{fs:?}");
    for f in fs {
        fuzzing::config(&std::fs::read(&f).unwrap());
    }
}

// --- seed generation -------------------------------------------------------

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Appends one packet record.
fn rec(out: &mut Vec<u8>, zone: u8, pkt: &[u8]) {
    let len = u16::try_from(pkt.len()).unwrap();
    out.push(zone);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(pkt);
}

fn tcp(src: &str, dst: &str, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let spec = TcpSpec {
        flags,
        seq,
        ack,
        window: 502,
        wscale: (flags & SYN != 0).then_some(7),
        mss: (flags & SYN != 0).then_some(1380),
    };
    synth::tcp(sa(src), sa(dst), spec, payload).unwrap()
}

/// Byte ranges of `len` bytes of data cut at `cuts`.
fn ranges(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut b = vec![0];
    b.extend_from_slice(cuts);
    b.push(len);
    b.windows(2).map(|w| (w[0], w[1])).collect()
}

/// IPv4 fragments of `pkt` at the given payload boundaries (multiples of 8).
fn frag_v4(pkt: &[u8], cuts: &[usize], id: u16) -> Vec<Vec<u8>> {
    let hlen = usize::from(pkt[0] & 0xf) * 4;
    fragment::split(pkt, &ranges(pkt.len() - hlen, cuts), u32::from(id)).unwrap()
}

/// IPv6 fragments (no extension headers before the Fragment header).
fn frag_v6(pkt: &[u8], cuts: &[usize], id: u32) -> Vec<Vec<u8>> {
    fragment::split(pkt, &ranges(pkt.len() - 40, cuts), id).unwrap()
}

/// The seed corpus: named packet sequences covering each path of the fuzz
/// rules (accept tcp/80 with a whole session, reject tcp/22 with a log,
/// reject udp with ICMP 13, accept icmp, established/related, fragments,
/// invalid and spoofed packets, peer to peer, timers).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();

    // A full HTTP session over IPv4, laptop -> server, then its close.
    let (c, s) = ("100.64.0.2:40000", "203.0.113.2:80");
    let mut d = Vec::new();
    rec(&mut d, LAPTOP, &tcp(c, s, SYN, 1000, 0, b""));
    rec(&mut d, TUN, &tcp(s, c, SYN | ACK, 5000, 1001, b""));
    rec(&mut d, LAPTOP, &tcp(c, s, ACK, 1001, 5001, b""));
    rec(
        &mut d,
        LAPTOP,
        &tcp(c, s, ACK | PSH, 1001, 5001, b"GET / HTTP/1.1\r\n\r\n"),
    );
    rec(
        &mut d,
        TUN,
        &tcp(s, c, ACK | PSH, 5001, 1019, b"HTTP/1.1 200 OK\r\n\r\n"),
    );
    rec(&mut d, LAPTOP, &tcp(c, s, FIN | ACK, 1019, 5020, b""));
    rec(&mut d, TUN, &tcp(s, c, FIN | ACK, 5020, 1020, b""));
    rec(&mut d, later(LAPTOP, 1), &tcp(c, s, ACK, 1020, 5021, b""));
    v.push(("tcp-session-v4", d));

    // The same over IPv6, with an out-of-window segment and an RST.
    let (c, s) = ("[2001:db8:64::2]:40001", "[2001:db8:203::2]:80");
    let mut d = Vec::new();
    rec(&mut d, LAPTOP, &tcp(c, s, SYN, 7, 0, b""));
    rec(&mut d, TUN, &tcp(s, c, SYN | ACK, 900, 8, b""));
    rec(&mut d, LAPTOP, &tcp(c, s, ACK | PSH, 8, 901, b"data"));
    rec(&mut d, TUN, &tcp(s, c, ACK, 901, 3_000_000_000, b""));
    rec(&mut d, TUN, &tcp(s, c, RST | ACK, 901, 12, b""));
    v.push(("tcp-session-v6-rst", d));

    // Rejected SSH (RST + log event), v4 and v6; a bare ACK (invalid).
    let mut d = Vec::new();
    rec(
        &mut d,
        LAPTOP,
        &tcp("100.64.0.2:40002", "203.0.113.2:22", SYN, 1, 0, b""),
    );
    rec(
        &mut d,
        LAPTOP,
        &tcp(
            "[2001:db8:64::2]:40002",
            "[2001:db8:203::2]:22",
            SYN,
            1,
            0,
            b"",
        ),
    );
    rec(
        &mut d,
        LAPTOP,
        &tcp("100.64.0.2:40003", "203.0.113.2:443", ACK, 1, 1, b""),
    );
    v.push(("tcp-reject-invalid", d));

    // UDP rejected with ICMP 13; ICMP echo both ways; an ICMP error quoting the echo.
    let mut d = Vec::new();
    let q = synth::udp(sa("100.64.0.2:5353"), sa("203.0.113.2:53"), b"query").unwrap();
    rec(&mut d, LAPTOP, &q);
    let q6 = synth::udp(
        sa("[2001:db8:64::2]:5353"),
        sa("[2001:db8:203::2]:53"),
        b"q",
    )
    .unwrap();
    rec(&mut d, LAPTOP, &q6);
    let ping = synth::icmp_echo(ip("100.64.0.2"), ip("203.0.113.2"), 1, 1, false, b"ping").unwrap();
    rec(&mut d, LAPTOP, &ping);
    let pong = synth::icmp_echo(ip("203.0.113.2"), ip("100.64.0.2"), 1, 1, true, b"ping").unwrap();
    rec(&mut d, TUN, &pong);
    let err = synth::icmp_raw(ip("198.51.100.9"), ip("100.64.0.2"), 11, 0, [0; 4], &ping).unwrap();
    rec(&mut d, TUN, &err);
    let ping6 = synth::icmp_echo(
        ip("2001:db8:64::2"),
        ip("2001:db8:203::2"),
        2,
        1,
        false,
        b"p6",
    )
    .unwrap();
    rec(&mut d, LAPTOP, &ping6);
    let err6 = synth::icmp_raw(
        ip("2001:db8:ff::9"),
        ip("2001:db8:64::2"),
        1,
        3,
        [0; 4],
        &ping6,
    )
    .unwrap();
    rec(&mut d, TUN, &err6);
    v.push(("udp-icmp-related", d));

    // A TCP/80 segment fragmented (v4, out of order) and a v6 UDP datagram fragmented.
    let (c, s) = ("100.64.0.2:40004", "203.0.113.2:80");
    let mut d = Vec::new();
    rec(&mut d, LAPTOP, &tcp(c, s, SYN, 1, 0, b""));
    rec(&mut d, TUN, &tcp(s, c, SYN | ACK, 50, 2, b""));
    let big = tcp(c, s, ACK | PSH, 2, 51, &[0x41; 1400]);
    let fr = frag_v4(&big, &[512, 1024], 0x1234);
    for i in [2, 0, 1] {
        rec(&mut d, LAPTOP, &fr[i]);
    }
    let u6 = synth::udp(
        sa("[2001:db8:64::2]:7"),
        sa("[2001:db8:203::2]:7"),
        &[9; 1500],
    )
    .unwrap();
    for f in frag_v6(&u6, &[1232], 0xabcdef) {
        rec(&mut d, LAPTOP, &f);
    }
    v.push(("fragments", d));

    // Overlapping fragments, and a fragment left to expire (timers run later).
    let mut d = Vec::new();
    let u = synth::udp(sa("100.64.0.2:9"), sa("203.0.113.2:9"), &[1; 600]).unwrap();
    let a = frag_v4(&u, &[304], 7);
    let b = frag_v4(&u, &[296], 7);
    rec(&mut d, LAPTOP, &a[0]);
    rec(&mut d, LAPTOP, &b[1]);
    let lone = frag_v4(&u, &[304], 8);
    rec(&mut d, LAPTOP, &lone[0]);
    rec(&mut d, timers(later(TUN, 7)), &pong);
    v.push(("fragments-overlap-expire", d));

    // Peer to peer, a spoofed source, the gateway's own addresses, no route.
    let mut d = Vec::new();
    rec(
        &mut d,
        LAPTOP,
        &tcp("100.64.0.2:1", "100.64.0.3:80", SYN, 1, 0, b""),
    );
    rec(
        &mut d,
        PHONE,
        &tcp("100.64.0.3:80", "100.64.0.2:1", SYN | ACK, 9, 2, b""),
    );
    rec(
        &mut d,
        PHONE,
        &tcp("100.64.0.2:2", "203.0.113.2:80", SYN, 1, 0, b""),
    );
    let gw = synth::icmp_echo(ip("100.64.0.2"), ip("100.64.0.1"), 3, 1, false, b"").unwrap();
    rec(&mut d, LAPTOP, &gw);
    let out = synth::udp(sa("100.64.0.1:53"), sa("100.64.0.3:53"), b"x").unwrap();
    rec(&mut d, TUN, &out);
    rec(
        &mut d,
        TUN,
        &synth::udp(sa("203.0.113.2:1"), sa("198.51.100.1:1"), b"").unwrap(),
    );
    v.push(("zones", d));

    // Flows that expire: a UDP flow, the clock jumps, its reply comes late.
    let mut d = Vec::new();
    rec(&mut d, LAPTOP, &ping);
    rec(&mut d, timers(later(TUN, 7)), &pong);
    rec(&mut d, timers(later(TUN, 7)), &pong);
    rec(&mut d, timers(later(TUN, 7)), &pong);
    rec(&mut d, timers(later(TUN, 7)), &pong);
    rec(&mut d, TUN, &pong);
    v.push(("expiry", d));

    // Malformed: truncated headers, a bad checksum, garbage, an empty record.
    let mut d = Vec::new();
    rec(&mut d, LAPTOP, &ping[..10]);
    let mut bad = ping.clone();
    bad[25] ^= 0xff;
    rec(&mut d, LAPTOP, &bad);
    rec(&mut d, TUN, &[0x60, 0, 0, 0, 0, 8, 17, 64]);
    rec(&mut d, TUN, &[]);
    v.push(("malformed", d));
    v
}

/// The committed seed files match what [`seeds`] builds (or are rewritten
/// with `PORTCULLIS_WRITE_SEEDS=1`).
#[test]
fn seed_corpus_is_up_to_date() {
    let write = std::env::var_os("PORTCULLIS_WRITE_SEEDS").is_some();
    for (name, data) in seeds() {
        // every seed is a valid run of the target
        fuzzing::pipeline(&data);
        let path = Path::new(PIPELINE_CORPUS).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(PIPELINE_CORPUS).unwrap();
            std::fs::write(&path, &data).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == data,
                "{} is stale: PORTCULLIS_WRITE_SEEDS=1 cargo test --test fuzz_corpus seed_corpus",
                path.display()
            );
        }
    }
}

// --- random inputs ---------------------------------------------------------

/// A packet record built from a seed packet with a few bytes flipped, cut or
/// extended: mostly-valid packets reach deeper than uniform random bytes.
fn mutated_record() -> impl Strategy<Value = Vec<u8>> {
    let packets: Vec<Vec<u8>> = seeds()
        .into_iter()
        .flat_map(|(_, d)| split_records(&d))
        .collect();
    (
        0..packets.len(),
        any::<u8>(),
        prop::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        prop::option::of(any::<u16>()),
    )
        .prop_map(move |(i, zone, flips, cut)| {
            let mut p = packets[i].clone();
            for (at, x) in flips {
                if !p.is_empty() {
                    let n = p.len();
                    p[usize::from(at) % n] ^= x;
                }
            }
            if let Some(c) = cut {
                p.truncate(usize::from(c) % (p.len() + 1));
            }
            let mut r = Vec::new();
            rec(&mut r, zone, &p);
            r
        })
}

fn split_records(mut d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [_, hi, lo, rest @ ..] = d {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
        out.push(rest[..n].to_vec());
        d = &rest[n..];
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::pipeline(&data);
        fuzzing::config(&data);
    }

    #[test]
    fn mutated_packet_sequences_never_panic(recs in prop::collection::vec(mutated_record(), 1..24)) {
        let data: Vec<u8> = recs.concat();
        fuzzing::pipeline(&data);
    }

    #[test]
    fn mutated_configs_never_panic(
        which in 0usize..3,
        edits in prop::collection::vec((any::<u16>(), any::<u8>()), 0..6),
    ) {
        let mut fs = files(CONFIG_CORPUS);
        fs.retain(|f| f.extension().is_some_and(|e| e == "toml"));
        let mut text = std::fs::read(&fs[which % fs.len()]).unwrap();
        for (at, b) in edits {
            if !text.is_empty() {
                let n = text.len();
                // printable edits keep the text UTF-8, so the TOML parser sees them
                text[usize::from(at) % n] = b' ' + b % 95;
            }
        }
        fuzzing::config(&text);
    }
}
