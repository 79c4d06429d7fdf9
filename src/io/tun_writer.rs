//! Experimental, off by default (`PORTCULLIS_TUN_THREAD=1`): TUN writes on a
//! thread of their own — the first, measured multi-core step of issue 8
//! (item 4). See docs/throughput.md ("Multi-core") for the design, the
//! figures and what remains.
//!
//! The event loop still queues decrypted packets in a [`TunTx`] (coalesced
//! into TCP super-packets); at the flush, instead of writing them itself, it
//! hands the whole `TunTx` to the writer thread and carries on with a spare
//! one (at most [`DEPTH`] batches in flight; when none is free the loop waits
//! for the writer: back-pressure, nothing is dropped). The kernel work a TUN
//! write triggers in the writer's context (`tun_get_user` ->
//! `netif_receive_skb` -> forwarding -> the veth and the receiver's TCP
//! receive: `writev` was 19 % of the gateway's CPU in the profile) then runs
//! on another core than receiving, decrypting and the pipeline.
//!
//! Promises: one writer, batches written in the order they were handed over,
//! so packets keep their order (as without the thread); no lock on the data
//! path (two bounded channels); the thread owns a `dup` of the TUN fd and
//! ends when the loop drops its [`TunWriter`] (or the process ends: the
//! device still vanishes with the process, fail closed). If the thread is
//! gone, [`TunWriter::hand_over`] gives the batch back and the loop writes it
//! itself.

use super::offload::{Coalesce, TunTx, TunTxReport};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// The environment switch.
pub const ENV: &str = "PORTCULLIS_TUN_THREAD";
/// Batches in flight: one being written, one waiting (double buffering; a
/// batch is at most one loop turn, <= `offload::TUN_TX_ARENA` bytes).
pub const DEPTH: usize = 2;

/// Whether the switch is on (`=1`).
pub fn wanted() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
}

/// The loop's side of the writer thread.
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
    /// Starts the writer on a duplicate of `fd`.
    pub fn start(fd: RawFd, coalesce: Coalesce) -> std::io::Result<TunWriter> {
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
            .name("tun-writer".into())
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

    /// The writer writes every batch, in order, to its fd (a pipe here).
    #[test]
    fn batches_are_written_in_order() {
        let mut fds = [0; 2];
        // SAFETY: pipe into a 2-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds, owned here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut wr = TunWriter::start(w.as_raw_fd(), Coalesce::default()).unwrap();
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
