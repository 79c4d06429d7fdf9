//! Established-flow fast path: ns per packet through `Pipeline::handle`.
//!
//! A TCP flow is set up (SYN, SYN-ACK, ACK) through a forward chain that
//! accepts it; then the same in-window data segment is handed to the pipeline
//! over and over (a retransmission as far as window tracking goes, which takes
//! the same path as new data). Anchors from the issue: Tailscale's filter
//! 17-47 ns/op, libtelio 14-34 ns; target <= 50 ns.
//!
//! Run: `cargo bench --bench fastpath`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::pipeline::testbed;
use portcullis::verdict::Verdict;
use portcullis::zone::ZoneId;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fastpath");
    for (label, client, server) in [
        ("ipv4", "100.64.0.2:40000", "203.0.113.2:443"),
        ("ipv6", "[2001:db8:64::2]:40000", "[2001:db8:203::2]:443"),
    ] {
        let client: SocketAddr = client.parse().expect("addr");
        let server: SocketAddr = server.parse().expect("addr");
        for payload_len in [0usize, 1200] {
            let now = Instant::now();
            let mut p = testbed::pipeline_accept_forward(now);
            let laptop = ZoneId::peer(0);
            let data = testbed::established_tcp(&mut p, client, server, payload_len, now)
                .expect("the testbed forwards the handshake");
            let mut buf = data.clone();
            assert_eq!(
                p.handle(&mut buf, laptop, now),
                Verdict::Forward(ZoneId::TUN)
            );
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(label, format!("{}B", data.len())), |b| {
                b.iter(|| {
                    buf.copy_from_slice(&data);
                    black_box(p.handle(black_box(&mut buf), laptop, now))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
