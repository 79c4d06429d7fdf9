//! TUN writes on threads, one per queue of a multi-queue TUN
//! (`[interface] tun_queues`), with every flow hashed to one queue: issue 8's
//! item 4 for the largest cost left on the event loop. See
//! docs/throughput.md ("Multi-core") for the design and the figures.
//!
//! The event loop queues decrypted packets in one [`TunTx`] per queue
//! (coalesced into TCP and UDP super-packets); [`flow_queue`] picks the
//! queue from the conntrack's keyed hash ([`FlowHasher`]) of the packet's
//! addresses, protocol and ports, the two ends in a fixed order, so that it
//! is the same in both directions. At the flush the loop hands each
//! non-empty `TunTx` to its queue's writer thread and carries on with a spare
//! one (at most [`DEPTH`] batches in flight per writer; when none is free the
//! loop waits for that writer: back-pressure, nothing is dropped). The
//! kernel work a TUN write triggers in the writer's context (`tun_get_user`
//! -> `netif_receive_skb` -> forwarding -> the veth and, in the lab, the
//! receiver's TCP receive: a third of the gateway's CPU in the session-5
//! profile) then runs on the writers' cores, one flow on one core, while the
//! loop receives, decrypts and runs the firewall. The kernel steers the
//! packets it hands back for a flow (the replies) to the queue that last
//! wrote that flow (tun's automatic queue selection), so a flow stays on one
//! queue both ways; the loop reads every queue.
//!
//! Promises: a flow's packets go to one writer, which writes its batches in
//! the order they were handed over, so packets of a flow keep their order
//! (packets of different flows may be reordered, as across the queues of any
//! NIC); fragments of an IPv4 datagram and IPv6 packets with extension
//! headers are hashed without ports, so they stay together; no lock on the
//! data path (two bounded channels per writer); each thread owns a `dup` of
//! its queue's fd and ends when the loop drops its [`TunOut`] (or the
//! process ends: the device still vanishes with the process, fail closed).
//! If a writer is gone, the loop writes that queue's batch itself.
//! With one queue (the default) there is no thread: the loop writes.

use super::offload::{be16, Coalesce, TunTx, TunTxReport};
use crate::conntrack::{FlowHasher, FlowKey};
use crate::zone::ZoneId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// Batches in flight per writer: one being written, one waiting (double
/// buffering; a batch is at most one loop turn, <= `offload::TUN_TX_ARENA`
/// bytes).
pub const DEPTH: usize = 2;

/// The queue (of `n`) for an IP packet: the conntrack's keyed hash
/// ([`FlowHasher`]) of its addresses, protocol and (TCP, UDP, SCTP,
/// UDP-Lite, not a fragment, no IPv6 extension header) ports, with the two
/// ends in a fixed order so that both directions of a flow agree.
/// Anything unparsable goes to queue 0.
pub fn flow_queue(pkt: &[u8], n: usize, hasher: &FlowHasher) -> usize {
    if n <= 1 {
        return 0;
    }
    let Some(h) = flow_hash(pkt, hasher) else {
        return 0;
    };
    // the high half of a 64x64 multiply: uniform over 0..n
    ((u128::from(h) * n as u128) >> 64) as usize
}

fn flow_hash(p: &[u8], hasher: &FlowHasher) -> Option<u64> {
    let (proto, a, b, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            let whole = be16(p, 6)? & 0x3fff == 0; // neither MF nor an offset
            let addr = |at: usize| -> Option<IpAddr> {
                Some(Ipv4Addr::from(<[u8; 4]>::try_from(p.get(at..at + 4)?).ok()?).into())
            };
            (*p.get(9)?, addr(12)?, addr(16)?, whole.then_some(ihl))
        }
        6 => {
            let addr = |at: usize| -> Option<IpAddr> {
                Some(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(at..at + 16)?).ok()?).into())
            };
            (*p.get(6)?, addr(8)?, addr(24)?, Some(40))
        }
        _ => return None,
    };
    let ports = match (proto, l4) {
        (6 | 17 | 132 | 136, Some(at)) => Some((be16(p, at)?, be16(p, at + 2)?)),
        _ => None,
    };
    let (pa, pb) = ports.unwrap_or((0, 0));
    // the lower end first: the same key for both directions
    let ((src, sport), (dst, dport)) = if (a, pa) <= (b, pb) {
        ((a, pa), (b, pb))
    } else {
        ((b, pb), (a, pa))
    };
    Some(hasher.hash(&FlowKey {
        zone: ZoneId::TUN,
        proto,
        src,
        dst,
        sport,
        dport,
    }))
}

/// The loop's TUN output: one batch being filled per queue and, with more
/// than one queue, one writer thread per queue.
pub struct TunOut {
    cur: Vec<TunTx>,
    writers: Vec<TunWriter>,
    hasher: FlowHasher,
    /// Packets queued for each queue (for `ctl stats`).
    pub queued: Vec<u64>,
}

impl TunOut {
    /// One queue, written by the loop.
    pub fn inline(coalesce: Coalesce) -> TunOut {
        TunOut {
            cur: vec![TunTx::new(coalesce)],
            writers: Vec::new(),
            hasher: FlowHasher::new(0, 0),
            queued: vec![0],
        }
    }

    /// One writer thread per queue fd in `fds` (at least two), flows hashed
    /// to them with `hasher`.
    pub fn start(fds: &[RawFd], coalesce: Coalesce, hasher: FlowHasher) -> std::io::Result<TunOut> {
        let writers = fds
            .iter()
            .enumerate()
            .map(|(i, &fd)| TunWriter::start(fd, coalesce, i))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(TunOut {
            cur: fds.iter().map(|_| TunTx::new(coalesce)).collect(),
            writers,
            hasher,
            queued: vec![0; fds.len()],
        })
    }

    /// Writer threads (0: the loop writes).
    pub fn threads(&self) -> usize {
        self.writers.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.cur.iter().all(TunTx::is_empty)
    }

    /// Queues a packet for its flow's queue; `false`: that batch is full
    /// (flush, then push again).
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        let q = flow_queue(pkt, self.cur.len(), &self.hasher);
        let (Some(t), Some(c)) = (self.cur.get_mut(q), self.queued.get_mut(q)) else {
            return false;
        };
        let ok = t.push(pkt);
        if ok {
            *c += 1;
        }
        ok
    }

    /// Hands every non-empty batch to its writer; without writers (or if
    /// one is gone) the loop writes the batch to `fd` itself. Reports of the
    /// batches written meanwhile are added to `rep`.
    pub fn flush(&mut self, fd: RawFd, rep: &mut TunTxReport) {
        for (i, t) in self.cur.iter_mut().enumerate() {
            if t.is_empty() {
                continue;
            }
            let handed = self.writers.get_mut(i).is_some_and(|w| w.hand_over(t, rep));
            if !handed {
                t.flush(fd, rep);
            }
        }
    }
}

/// The loop's side of one writer thread.
pub struct TunWriter {
    to: SyncSender<TunTx>,
    back: Receiver<(TunTx, TunTxReport)>,
    spare: Vec<TunTx>,
}

fn add(into: &mut TunTxReport, r: TunTxReport) {
    into.packets += r.packets;
    into.writes += r.writes;
    into.uso += r.uso;
    into.errors += r.errors;
}

impl TunWriter {
    /// Starts the writer (thread `tun-writer-N`) on a duplicate of `fd`.
    pub fn start(fd: RawFd, coalesce: Coalesce, n: usize) -> std::io::Result<TunWriter> {
        // SAFETY: dup of an open fd; the new fd is ours alone.
        let d = unsafe { libc::dup(fd) };
        if d < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `d` is a fresh, open fd owned by nothing else.
        let own = unsafe { OwnedFd::from_raw_fd(d) };
        let (to, rx) = sync_channel::<TunTx>(DEPTH);
        let (done, back) = sync_channel(DEPTH);
        std::thread::Builder::new()
            .name(format!("tun-writer-{n}"))
            .spawn(move || {
                // Until the loop drops its sender: every batch handed over is
                // written, also those still queued when the loop has gone
                // (its receiver of spent batches gone with it: no report).
                while let Ok(mut t) = rx.recv() {
                    let mut rep = TunTxReport::default();
                    t.flush(own.as_raw_fd(), &mut rep);
                    let _ = done.send((t, rep));
                }
            })?;
        Ok(TunWriter {
            to,
            back,
            spare: (0..DEPTH).map(|_| TunTx::new(coalesce)).collect(),
        })
    }

    /// Hands the batch in `cur` to the writer and leaves an empty one in
    /// its place; the reports of the batches written meanwhile are added to
    /// `rep`. `false`: the writer is gone and `cur` is untouched (write it
    /// yourself).
    pub fn hand_over(&mut self, cur: &mut TunTx, rep: &mut TunTxReport) -> bool {
        loop {
            match self.back.try_recv() {
                Ok((t, r)) => {
                    add(rep, r);
                    self.spare.push(t);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        let mut next = match self.spare.pop() {
            Some(t) => t,
            // all in flight: wait for the writer (a TUN write never blocks long)
            None => match self.back.recv() {
                Ok((t, r)) => {
                    add(rep, r);
                    t
                }
                Err(_) => return false,
            },
        };
        std::mem::swap(cur, &mut next);
        match self.to.send(next) {
            Ok(()) => true,
            Err(e) => {
                // gone: put the batch back where it was
                let mut full = e.0;
                std::mem::swap(cur, &mut full);
                self.spare.push(full);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(n: u8) -> Vec<u8> {
        // a minimal IPv4 header (not TCP: written as it is), marked by its id
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[3] = 20;
        p[5] = n;
        p[9] = 17;
        p
    }

    /// A pipe: (read end, write end).
    pub fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe into a 2-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds, owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// The writer writes every batch, in order, to its fd (a pipe here).
    #[test]
    fn batches_are_written_in_order() {
        let (r, w) = pipe();
        let mut wr = TunWriter::start(w.as_raw_fd(), Coalesce::default(), 0).unwrap();
        drop(w);
        let mut cur = TunTx::new(Coalesce::default());
        let mut rep = TunTxReport::default();
        for b in 0..10u8 {
            for i in 0..3u8 {
                assert!(cur.push(&pkt(b * 3 + i)));
            }
            assert!(wr.hand_over(&mut cur, &mut rep), "writer gone");
            assert!(cur.is_empty());
        }
        drop(wr); // the thread ends and closes its fd: read to EOF
        let mut got = Vec::new();
        let mut f = std::fs::File::from(r);
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        let frame = super::super::offload::VNET_HDR_LEN + 20;
        assert_eq!(got.len(), 30 * frame);
        let ids: Vec<u8> = got.chunks(frame).map(|c| c[frame - 20 + 5]).collect();
        assert_eq!(ids, (0..30).collect::<Vec<u8>>());
        assert!(rep.packets <= 30);
    }
}

#[cfg(test)]
mod sharding_tests {
    use super::tests_support::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both directions of a flow hash to the same queue, IPv4 and IPv6,
        /// TCP and UDP, whatever the key and the number of queues.
        #[test]
        fn both_directions_of_a_flow_share_a_queue(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            a in any::<[u8; 16]>(),
            b in any::<[u8; 16]>(),
            pa in any::<u16>(),
            pb in any::<u16>(),
            key in any::<u64>(),
            n in 2usize..17,
        ) {
            let proto = if tcp { 6 } else { 17 };
            let there = ip_packet(v6, proto, &a, &b, pa, pb, 0);
            let back = ip_packet(v6, proto, &b, &a, pb, pa, 0);
            let h = FlowHasher::new(key, !key);
            prop_assert_eq!(flow_queue(&there, n, &h), flow_queue(&back, n, &h));
            prop_assert!(flow_queue(&there, n, &h) < n);
        }
    }

    /// Flows that differ only in one port (a NAT's consecutive ports, a
    /// client's consecutive source ports) spread evenly.
    #[test]
    fn consecutive_ports_spread_over_the_queues() {
        for v6 in [false, true] {
            for n in [2usize, 3, 4, 8] {
                let mut per = vec![0u32; n];
                for port in 40_000..42_000u16 {
                    let p = ip_packet(v6, 6, &[100; 16], &[203; 16], port, 5201, 0);
                    per[flow_queue(&p, n, &FlowHasher::new(0x1234, 5))] += 1;
                }
                let fair = 2_000 / n as u32;
                for (q, c) in per.iter().enumerate() {
                    assert!(
                        c * 10 > fair * 8 && c * 10 < fair * 12,
                        "v6={v6} n={n}: queue {q} got {c} of 2000 ({per:?})"
                    );
                }
            }
        }
    }

    /// The pieces of a fragmented IPv4 datagram (the first carries the
    /// ports, the others do not) all go to one queue; so does everything
    /// that is not IP, and everything when there is one queue.
    #[test]
    fn fragments_stay_together_and_junk_goes_to_queue_0() {
        for k in 0..64u64 {
            let key = &FlowHasher::new(k, 7);
            let first = ip_packet(false, 17, &[1; 16], &[2; 16], 1000 + k as u16, 53, 0x2000);
            let later = ip_packet(false, 17, &[1; 16], &[2; 16], 7, 9, 0x0010);
            let last = ip_packet(false, 17, &[1; 16], &[2; 16], 7, 9, 0x0020);
            let q = flow_queue(&first, 4, key);
            assert_eq!(flow_queue(&later, 4, key), q);
            assert_eq!(flow_queue(&last, 4, key), q);
        }
        let h = FlowHasher::new(1, 2);
        assert_eq!(flow_queue(&[], 4, &h), 0);
        assert_eq!(flow_queue(&[0x45, 0, 0], 4, &h), 0);
        assert_eq!(flow_queue(&[0x20; 60], 4, &h), 0);
        let p = ip_packet(true, 6, &[1; 16], &[2; 16], 1, 2, 0);
        assert_eq!(flow_queue(&p, 1, &h), 0);
    }

    /// With two queues (pipes here), every flow's packets end up on one
    /// queue, in the order they were pushed, and both queues are used.
    #[test]
    fn each_flow_is_written_whole_and_in_order_to_one_queue() {
        let (r0, w0) = pipe();
        let (r1, w1) = pipe();
        let mut out = TunOut::start(
            &[w0.as_raw_fd(), w1.as_raw_fd()],
            Coalesce::default(),
            FlowHasher::new(0xfeed, 0xbeef),
        )
        .unwrap();
        drop((w0, w1));
        let mut rep = TunTxReport::default();
        // 16 flows (source ports), 10 packets each, interleaved, flushed
        // every 7 packets; each packet's IP id = flow * 16 + sequence
        let mut pushed = 0;
        for seq in 0..10u16 {
            for flow in 0..16u16 {
                let mut p = ip_packet(false, 17, &[10; 16], &[20; 16], 3000 + flow, 53, 0);
                p[4..6].copy_from_slice(&(flow * 16 + seq).to_be_bytes());
                assert!(out.push(&p));
                pushed += 1;
                if pushed % 7 == 0 {
                    out.flush(-1, &mut rep);
                }
            }
        }
        out.flush(-1, &mut rep);
        assert_eq!(out.queued.iter().sum::<u64>(), 160);
        drop(out); // the threads finish and close their fds
        let mut seen = std::collections::BTreeMap::new();
        for (q, r) in [r0, r1].into_iter().enumerate() {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
            let frame = super::super::offload::VNET_HDR_LEN + 28;
            assert_eq!(got.len() % frame, 0);
            let ids: Vec<u16> = got
                .chunks(frame)
                .map(|c| u16::from_be_bytes([c[frame - 28 + 4], c[frame - 28 + 5]]))
                .collect();
            assert!(!ids.is_empty(), "queue {q} was never written");
            for id in ids {
                let (flow, seq) = (id / 16, id % 16);
                let e = seen.entry(flow).or_insert((q, 0));
                assert_eq!(e.0, q, "flow {flow} written to two queues");
                assert_eq!(e.1, seq, "flow {flow} out of order on queue {q}");
                e.1 += 1;
            }
        }
        assert_eq!(seen.len(), 16);
        assert!(seen.values().all(|&(_, n)| n == 10));
    }
}

/// Packets for the tests.
#[cfg(test)]
mod tests_support {
    pub use super::tests::pipe;

    /// An IPv4 (addresses from the first 4 bytes) or IPv6 packet from
    /// `a:pa` to `b:pb` with an 8-byte TCP/UDP stub; `frag`: IPv4 flags and
    /// fragment offset.
    pub fn ip_packet(
        v6: bool,
        proto: u8,
        a: &[u8; 16],
        b: &[u8; 16],
        pa: u16,
        pb: u16,
        frag: u16,
    ) -> Vec<u8> {
        let mut p = if v6 {
            let mut p = vec![0u8; 48];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&8u16.to_be_bytes());
            p[6] = proto;
            p[7] = 64;
            p[8..24].copy_from_slice(a);
            p[24..40].copy_from_slice(b);
            p
        } else {
            let mut p = vec![0u8; 28];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&28u16.to_be_bytes());
            p[6..8].copy_from_slice(&frag.to_be_bytes());
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&a[..4]);
            p[16..20].copy_from_slice(&b[..4]);
            p
        };
        let l4 = if v6 { 40 } else { 20 };
        p[l4..l4 + 2].copy_from_slice(&pa.to_be_bytes());
        p[l4 + 2..l4 + 4].copy_from_slice(&pb.to_be_bytes());
        p
    }
}
