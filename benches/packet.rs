//! Packet fast-path micro-benchmarks: parse, rewrite, reassembly.
//! Run briefly: `cargo bench --bench packet -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::packet::{self, rewrite, FragConfig, Reassembler};
use portcullis::zone::ZoneId;

/// A 40-byte IPv4 TCP ACK (no options, no payload), checksums valid.
fn small_tcp() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 1, 203, 0, 113, 7, // IPv4
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0x13, 0x88, 0, 0, 0x1e, 0x61, 0x50, 0x10, 0x04, 0, 0, 0, 0,
        0, // TCP
    ];
    packet::checksum::fill_ipv4_checksum(&mut p);
    let m = packet::parse_with(
        &p,
        packet::ParseOptions {
            verify_l4_checksum: false,
        },
    )
    .expect("fixture parses");
    packet::checksum::fill_l4_checksum(&mut p, &m);
    p
}

fn bench(c: &mut Criterion) {
    let p = small_tcp();
    assert!(packet::parse(&p).is_ok());
    c.bench_function("parse_v4_tcp_40B", |b| {
        b.iter(|| packet::parse(black_box(&p)))
    });
    let mut big = p.clone();
    big.resize(1440, 0xab);
    big[2..4].copy_from_slice(&1440u16.to_be_bytes());
    packet::checksum::fill_ipv4_checksum(&mut big);
    let m = packet::parse_with(
        &big,
        packet::ParseOptions {
            verify_l4_checksum: false,
        },
    )
    .expect("fixture parses");
    packet::checksum::fill_l4_checksum(&mut big, &m);
    c.bench_function("parse_v4_tcp_1440B", |b| {
        b.iter(|| packet::parse(black_box(&big)))
    });
    c.bench_function("parse_v4_tcp_1440B_no_l4_csum", |b| {
        b.iter(|| {
            packet::parse_with(
                black_box(&big),
                packet::ParseOptions {
                    verify_l4_checksum: false,
                },
            )
        })
    });
    c.bench_function("rewrite_snat_v4_tcp", |b| {
        let mut buf = p.clone();
        let mut meta = packet::parse(&buf).expect("parses");
        let a = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
        let z = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        b.iter(|| {
            let _ = rewrite::set_src(&mut buf, &mut meta, black_box(a));
            let _ = rewrite::set_sport(&mut buf, &mut meta, black_box(50000));
            let _ = rewrite::set_src(&mut buf, &mut meta, black_box(z));
        })
    });
    c.bench_function("reassemble_2_frags", |b| {
        let mut f0 = p.clone();
        f0.resize(60, 1);
        f0[2..4].copy_from_slice(&60u16.to_be_bytes());
        f0[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        packet::checksum::fill_ipv4_checksum(&mut f0);
        let mut f1 = f0.clone();
        f1[6..8].copy_from_slice(&5u16.to_be_bytes());
        packet::checksum::fill_ipv4_checksum(&mut f1);
        let frags = [f0, f1];
        let metas: Vec<_> = frags
            .iter()
            .map(|f| packet::parse(f).expect("parses"))
            .collect();
        let mut r = Reassembler::new(FragConfig::default(), (1, 2));
        let now = Instant::now();
        b.iter(|| {
            for (f, m) in frags.iter().zip(&metas) {
                black_box(r.handle(f, m, ZoneId::TUN, now));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
