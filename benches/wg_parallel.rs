//! WireGuard decryption of one receive round, inline vs spread by peer
//! (`wg::parallel`): a round of 64 data datagrams (1,420-byte IP packets,
//! the lab's MTU) from 4 peers interleaved, and from 1 peer, decrypted with
//! `crypto_threads` 1 (inline, no pool) and 2. Each peer has a real boringtun
//! session (a handshake in the setup, as the wg tests do). The measured part
//! is `predecrypt` + `finish_datagram` for every datagram (no pipeline);
//! the clients encrypt a fresh round in the untimed setup (the replay window
//! refuses a datagram twice). The 1-peer case must not be slower with the
//! pool than inline (the round stays inline: one peer).
//!
//! Encryption: the same 64 packets for 4 peers (or 1) from the gateway:
//! with 1 thread today's path (`encapsulate_into` straight into the send
//! arena, one packet at a time), with 2 the shell's deferred path (`stage`
//! every packet, then `encrypt_deferred` by peer), staging copies included.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use portcullis::wg::keys::{generate_private, public_key};
use portcullis::wg::parallel::{CryptoPool, RxBatch, TxBatch};
use portcullis::wg::{
    EncapInto, EncapStatus, WgConfig, WgDevice, WgOutput, WgPeer, BUF_LEN, DATA_OVERHEAD,
};
use portcullis::zone::ZoneId;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

const ROUND: usize = 64;
const PKT: usize = 1420;

struct World {
    gw: WgDevice,
    gw_addr: SocketAddr,
    clients: Vec<(WgDevice, SocketAddr)>,
}

fn network(out: Vec<WgOutput>) -> Vec<Vec<u8>> {
    out.into_iter()
        .filter_map(|o| match o {
            WgOutput::Network { data, .. } => Some(data),
            WgOutput::Packet { .. } => None,
        })
        .collect()
}

fn world(peers: usize) -> World {
    let gk = generate_private();
    let gw_addr: SocketAddr = "198.51.100.1:51820".parse().expect("addr");
    let keys: Vec<[u8; 32]> = (0..peers).map(|_| generate_private()).collect();
    let addr = |i: usize| SocketAddr::new([203, 0, 113, 10 + i as u8].into(), 40000);
    let gw = WgDevice::new(WgConfig {
        private_key: gk,
        listen_port: 51820,
        peers: keys
            .iter()
            .enumerate()
            .map(|(i, k)| WgPeer {
                zone: ZoneId::peer(i),
                name: format!("c{i}"),
                public_key: public_key(k),
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
            })
            .collect(),
    })
    .expect("gateway");
    let mut w = World {
        gw,
        gw_addr,
        clients: Vec::new(),
    };
    let now = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        let mut c = WgDevice::new(WgConfig {
            private_key: *k,
            listen_port: 0,
            peers: vec![WgPeer {
                zone: ZoneId::peer(0),
                name: "gw".into(),
                public_key: public_key(&gk),
                preshared_key: None,
                endpoint: Some(gw_addr),
                persistent_keepalive: None,
            }],
        })
        .expect("client");
        // handshake: init -> response -> the queued packet confirms it
        let mut out = Vec::new();
        let st = c.encapsulate(ZoneId::peer(0), &packet(i as u8), now, &mut out);
        assert_eq!(st, EncapStatus::Queued);
        let mut to_gw = network(out);
        for _ in 0..3 {
            let mut back = Vec::new();
            for d in to_gw.drain(..) {
                w.gw.handle_datagram(addr(i), &d, now, &mut back);
            }
            let mut next = Vec::new();
            for d in network(back) {
                c.handle_datagram(w.gw_addr, &d, now, &mut next);
            }
            to_gw = network(next);
        }
        assert!(w.gw.has_session(ZoneId::peer(i)), "peer {i} has a session");
        w.clients.push((c, addr(i)));
    }
    w
}

fn packet(tag: u8) -> Vec<u8> {
    let mut p = vec![tag; PKT];
    p[0] = 0x45;
    p[2] = (PKT >> 8) as u8;
    p[3] = PKT as u8;
    p
}

/// A round of `ROUND` datagrams, the peers' in turn.
fn round(clients: &mut [(WgDevice, SocketAddr)]) -> Vec<(SocketAddr, Vec<u8>)> {
    let n = clients.len();
    let now = Instant::now();
    (0..ROUND)
        .map(|k| {
            let (c, a) = &mut clients[k % n];
            let mut out = Vec::new();
            let st = c.encapsulate(ZoneId::peer(0), &packet(k as u8), now, &mut out);
            assert_eq!(st, EncapStatus::Sent);
            (*a, network(out).pop().expect("datagram"))
        })
        .collect()
}

fn decrypt(
    gw: &mut WgDevice,
    pool: &CryptoPool,
    batch: &mut RxBatch,
    dst: &mut [u8],
    r: &[(SocketAddr, Vec<u8>)],
) -> usize {
    let now = Instant::now();
    let refs: Vec<(SocketAddr, &[u8])> = r.iter().map(|(a, d)| (*a, &d[..])).collect();
    gw.predecrypt(pool, &refs, batch);
    let mut out = Vec::new();
    let mut bytes = 0;
    for (i, &(from, d)) in refs.iter().enumerate() {
        if let Some((_, p)) = gw.finish_datagram(batch, i, from, d, now, dst, &mut out) {
            bytes += black_box(p).len();
        }
    }
    assert_eq!(bytes, ROUND * PKT, "every datagram decrypted");
    bytes
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wg_decrypt_round");
    g.throughput(Throughput::Bytes((ROUND * PKT) as u64));
    for peers in [4usize, 1] {
        for threads in [1usize, 2] {
            let pool = CryptoPool::new(threads).expect("pool");
            let World {
                mut gw,
                mut clients,
                ..
            } = world(peers);
            let mut batch = RxBatch::default();
            let mut dst = vec![0u8; BUF_LEN];
            g.bench_function(format!("{peers}_peers_{threads}_threads"), |b| {
                b.iter_batched(
                    || round(&mut clients),
                    |r| decrypt(&mut gw, &pool, &mut batch, &mut dst, &r),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("wg_encrypt_round");
    g.throughput(Throughput::Bytes((ROUND * PKT) as u64));
    let pkts: Vec<Vec<u8>> = (0..ROUND).map(|k| packet(k as u8)).collect();
    let mut arena = vec![0u8; ROUND * (PKT + DATA_OVERHEAD)];
    for peers in [4usize, 1] {
        for threads in [1usize, 2] {
            let pool = CryptoPool::new(threads).expect("pool");
            let World { mut gw, .. } = world(peers);
            let mut txb = TxBatch::default();
            let mut out = Vec::new();
            g.bench_function(format!("{peers}_peers_{threads}_threads"), |b| {
                b.iter(|| {
                    let now = Instant::now();
                    let mut at = 0;
                    for (k, p) in pkts.iter().enumerate() {
                        let z = ZoneId::peer(k % peers);
                        let need = p.len() + DATA_OVERHEAD;
                        if threads == 1 {
                            let dst = &mut arena[at..at + need];
                            let r = gw.encapsulate_into(z, p, now, dst, &mut out);
                            assert!(matches!(r, EncapInto::Written { .. }));
                        } else {
                            txb.stage(z, p, at);
                        }
                        at += need;
                    }
                    gw.encrypt_deferred(&pool, &mut txb, &mut arena[..at]);
                    black_box(&arena);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
