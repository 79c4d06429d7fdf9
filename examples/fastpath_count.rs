//! Runs N established-flow packets through `Pipeline::handle`, for instruction
//! counting (the shared bench machine is too noisy for wall-clock numbers):
//!
//! ```text
//! cargo build --release --example fastpath_count
//! valgrind --tool=callgrind --toggle-collect='*fastpath_count*run*' \
//!     target/release/examples/fastpath_count v4 0 100000
//! ```
//!
//! Arguments: family (`v4` / `v6`), TCP payload length, packet count, and
//! optionally `tick` (every packet gets its own `now`, 1 µs apart, as a shell
//! reading the clock per packet would pass; the instants are made before
//! `run`). The
//! setup matches `benches/fastpath.rs`; `run` holds only the timed loop, so
//! instructions collected in it divided by the count are instructions/packet
//! (including the per-iteration buffer copy, as in the bench).

use portcullis::pipeline::{testbed, Pipeline};
use portcullis::verdict::Verdict;
use portcullis::zone::ZoneId;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

#[inline(never)]
fn run(p: &mut Pipeline, data: &[u8], buf: &mut [u8], nows: &[Instant], n: u64) -> u64 {
    let mut fwd = 0;
    for i in 0..n {
        let now = nows[i as usize % nows.len()];
        buf.copy_from_slice(data);
        if let Verdict::Forward(_) = black_box(p.handle(black_box(&mut *buf), ZoneId::peer(0), now))
        {
            fwd += 1;
        }
    }
    fwd
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fam = args.get(1).map_or("v4", String::as_str);
    let payload_len: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let n: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let (client, server) = if fam == "v6" {
        ("[2001:db8:64::2]:40000", "[2001:db8:203::2]:443")
    } else {
        ("100.64.0.2:40000", "203.0.113.2:443")
    };
    let client: SocketAddr = client.parse().expect("addr");
    let server: SocketAddr = server.parse().expect("addr");
    let now = Instant::now();
    let mut p = testbed::pipeline_accept_forward(now);
    let data = testbed::established_tcp(&mut p, client, server, payload_len, now)
        .expect("the testbed forwards the handshake");
    let mut buf = data.clone();
    let nows: Vec<Instant> = if args.get(4).map(String::as_str) == Some("tick") {
        (0..n)
            .map(|i| now + std::time::Duration::from_micros(i + 1))
            .collect()
    } else {
        vec![now]
    };
    let fwd = run(&mut p, &data, &mut buf, &nows, n);
    assert_eq!(fwd, n, "every packet must take the fast path");
    println!("{fam} {} bytes: {n} packets forwarded", data.len());
}
