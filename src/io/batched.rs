//! The batched data path of the shell: many packets per readiness event and
//! per system call, no allocation per packet.
//!
//! - TUN: one readiness event reads until `EAGAIN`, at most [`TUN_BATCH`]
//!   packets, into a fixed pool ([`TunPool`]); each packet then goes through
//!   the pipeline in order. (The `tun` crate's `AsyncDevice` reads one packet
//!   per wake-up; we keep the crate to open and configure the device and
//!   drive its fd ourselves with tokio's `AsyncFd`.) A multi-queue TUN
//!   (`interface.tun_queues`) has one such fd per queue; the loop waits on
//!   all of them and reads the ready one the same way.
//! - UDP: one readiness event calls `recvmmsg` ([`batch::UdpRx`], GRO on when
//!   the kernel has it) until `EAGAIN` or [`UDP_ROUNDS`] calls; each datagram
//!   is decrypted into the shell's one decryption buffer
//!   ([`crate::wg::WgDevice::handle_datagram_into`]); with crypto threads
//!   (`interface.crypto_threads`), a round's data messages from several
//!   peers are first decrypted by peer in parallel
//!   ([`crate::wg::parallel`]), then every datagram of the round goes
//!   through the pipeline in arrival order on the loop. With several
//!   `SO_REUSEPORT` sockets (`interface.udp_sockets`) reader threads make
//!   the `recvmmsg` calls ([`super::udp_readers`]) and the loop runs each
//!   batch they hand over the same way ([`Shell::on_udp_batch`]).
//! - Encryption goes straight into the send arena
//!   ([`crate::wg::WgDevice::encapsulate_into`] into [`batch::UdpTx::reserve`]);
//!   with crypto threads, a packet for a peer with a session takes its place
//!   in the arena ([`batch::UdpTx::commit_later`]) and waits in a
//!   [`crate::wg::parallel::TxBatch`]; the flush first encrypts them by peer
//!   on the crypto threads ([`crate::wg::WgDevice::encrypt_deferred`]);
//!   the arena is flushed with `sendmmsg` (+ UDP GSO) once per batch (at the
//!   end of every event-loop turn) or when it is full.
//!
//! Order and fairness: a batch is bounded ([`TUN_BATCH`], `RX_BATCH` x
//! [`UDP_ROUNDS`]) so neither direction, timers nor signals starve; packets of
//! one batch keep their arrival order.

use super::batch::{self, TxReport, UdpRx};
use super::offload::{self, TunTxReport};
use super::Shell;
use crate::wg::{canonical, EncapInto, EncapStatus, DATA_OVERHEAD};
use crate::zone::ZoneId;
use anyhow::Context;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

/// TUN packets per readiness event (one `read` each: the TUN has no
/// multi-packet read without IFF_VNET_HDR offloads). 64 x 1420-byte packets =
/// 90 KB, about one TCP window burst of the lab's flows.
pub const TUN_BATCH: usize = 64;
/// Reads per event when reads may be 64 KiB super-packets (16 x 64 KiB =
/// 1 MiB of buffers; each read then carries up to ~45 segments).
pub const TUN_BATCH_TSO: usize = 16;
/// `recvmmsg` calls per readiness event (x `batch::RX_BATCH` messages).
pub const UDP_ROUNDS: usize = 4;
/// Reader-thread batches per loop turn (`interface.udp_sockets` > 1): as
/// many as [`UDP_ROUNDS`] per socket of two.
pub const READER_ROUNDS: usize = 2 * UDP_ROUNDS;

/// Whether to open the TUN with IFF_VNET_HDR and coalesce TCP segments
/// before writing (off with `PORTCULLIS_NO_TUN_OFFLOAD`, for comparisons).
pub fn want_tun_offload() -> bool {
    std::env::var_os("PORTCULLIS_NO_TUN_OFFLOAD").is_none()
}

/// Wraps the TUN device for tokio readiness (non-blocking fd).
pub fn async_tun(dev: ::tun::Device) -> anyhow::Result<AsyncFd<::tun::Device>> {
    set_nonblocking(dev.as_raw_fd()).context("TUN O_NONBLOCK")?;
    // SAFETY: `tun::Device` owns its fd, keeps it open until dropped, and
    // `as_raw_fd` always returns that same fd.
    unsafe { AsyncFd::register_with_interest(dev, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("TUN async: {e}"))
}

/// Turns UDP GRO on and probes GSO; returns `(gro, gso)`.
pub fn udp_offloads(udp: &std::net::UdpSocket) -> (bool, bool) {
    let fd = udp.as_raw_fd();
    let gro = std::env::var_os("PORTCULLIS_NO_GRO").is_none() && batch::enable_gro(fd);
    let gso = std::env::var_os("PORTCULLIS_NO_GSO").is_none() && batch::probe_gso(fd);
    (gro, gso)
}

/// Wraps a further queue of a multi-queue TUN for tokio readiness
/// (non-blocking fd).
pub fn async_queue(fd: OwnedFd) -> anyhow::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(fd.as_raw_fd()).context("TUN queue O_NONBLOCK")?;
    // SAFETY: `OwnedFd` keeps its fd open until dropped, and `as_raw_fd`
    // always returns that fd.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("TUN queue async: {e}"))
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an open fd.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Receive buffers for one TUN batch.
pub struct TunPool {
    vnet: bool,
    max: usize,
    /// One segment cut from a super-packet.
    seg: Vec<u8>,
    buf: Vec<u8>,
    lens: Vec<usize>,
    slot: usize,
}

impl TunPool {
    /// [`TUN_BATCH`] slots of MTU + 256 bytes (a TUN without offloads never
    /// hands over more than its MTU; the margin is for safety).
    /// With the vnet header (and TSO), slots hold a whole super-packet
    /// (64 KiB + the header) and a batch is [`TUN_BATCH_TSO`] reads.
    pub fn new(mtu: u16, vnet: bool) -> TunPool {
        let (slot, max) = if vnet {
            (crate::wg::MAX_PACKET + offload::VNET_HDR_LEN, TUN_BATCH_TSO)
        } else {
            (usize::from(mtu) + 256, TUN_BATCH)
        };
        TunPool {
            vnet,
            max,
            seg: if vnet {
                vec![0; crate::wg::MAX_PACKET]
            } else {
                Vec::new()
            },
            buf: vec![0; slot * max],
            lens: Vec::with_capacity(TUN_BATCH),
            slot,
        }
    }
}

/// Reads TUN packets (of one queue) until `EAGAIN` or the pool is full;
/// returns how many.
pub fn read_tun<T: AsRawFd>(
    mut g: AsyncFdReadyGuard<'_, T>,
    pool: &mut TunPool,
) -> std::io::Result<usize> {
    pool.lens.clear();
    while pool.lens.len() < pool.max {
        let start = pool.lens.len() * pool.slot;
        let Some(slot) = pool.buf.get_mut(start..start + pool.slot) else {
            break;
        };
        match g.try_io(|t| read_fd(t.get_ref().as_raw_fd(), slot)) {
            Ok(Ok(n)) => pool.lens.push(n),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                if pool.lens.is_empty() {
                    return Err(e);
                }
                break;
            }
            Err(_would_block) => break,
        }
    }
    Ok(pool.lens.len())
}

/// One `read`.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

impl Shell {
    /// Reads a batch from TUN queue `q` (0: the device, then `tun_more`)
    /// into `pool`; counts it by queue.
    pub(super) async fn read_tun_queue(
        &mut self,
        q: usize,
        pool: &mut TunPool,
    ) -> std::io::Result<()> {
        let n = match (q.checked_sub(1), &self.tun) {
            (None, Some(t)) => read_tun(t.readable().await?, pool)?,
            (Some(m), _) => match self.tun_more.get(m) {
                Some(f) => read_tun(f.readable().await?, pool)?,
                None => 0,
            },
            (None, None) => 0,
        };
        if let Some(c) = self.counters.tun_rx_by_queue.get_mut(q) {
            *c += n as u64;
        }
        Ok(())
    }

    /// Runs a TUN batch through the pipeline.
    pub(super) async fn on_tun_batch(&mut self, pool: &mut TunPool) {
        self.counters.tun_rx_batches += 1;
        // One clock read for the batch (see `Shell::on_tun_packet`).
        let now = Instant::now();
        for i in 0..pool.lens.len() {
            let (Some(&n), start) = (pool.lens.get(i), i * pool.slot) else {
                break;
            };
            self.counters.tun_rx += 1;
            let Some(mut pkt) = pool.buf.get_mut(start..start + n) else {
                continue;
            };
            if pool.vnet {
                match offload::rx_packet(pkt) {
                    Ok((off, None)) => pkt = pkt.get_mut(off..).unwrap_or_default(),
                    Ok((off, Some(gso))) => {
                        // a TCP (TSO) or UDP (USO) super-packet: one
                        // segment at a time
                        let sp = pkt.get(off..).unwrap_or_default();
                        let mut i = 0;
                        if gso.udp {
                            self.counters.tun_rx_uso += 1;
                        }
                        loop {
                            match offload::gso_segment(sp, gso, i, &mut pool.seg) {
                                Ok(Some(len)) => {
                                    if let Some(seg) = pool.seg.get_mut(..len) {
                                        self.on_tun_packet(seg, now).await;
                                    }
                                    i += 1;
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.counters.send_errors += 1;
                                    tracing::debug!(error = %e, "TUN super-packet refused");
                                    break;
                                }
                            }
                        }
                        self.counters.tun_rx_segments += i as u64;
                        continue;
                    }
                    Err(e) => {
                        self.counters.send_errors += 1;
                        tracing::debug!(error = %e, "TUN read refused");
                        continue;
                    }
                }
            }
            self.on_tun_packet(pkt, now).await;
        }
    }

    /// Drains the UDP socket: up to [`UDP_ROUNDS`] `recvmmsg` calls.
    pub(super) async fn on_udp_ready(&mut self, rx: &mut UdpRx) {
        let fd = self.udp.as_raw_fd();
        for _ in 0..UDP_ROUNDS {
            match self.udp.try_io(Interest::READABLE, || rx.recv(fd)) {
                Ok(n) => {
                    self.on_udp_round(rx).await;
                    if n < batch::RX_BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as recv errors on Linux (ECONNREFUSED): not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive");
                    break;
                }
            }
        }
    }

    /// Runs what one `recvmmsg` call received (on the loop or by a reader
    /// thread) through decryption and the pipeline: its data messages are
    /// decrypted by peer on the crypto threads, then every datagram goes
    /// through the pipeline in arrival order (`wg::parallel`); one clock
    /// read per round. Returns the datagrams (GRO segments) it carried.
    async fn on_udp_round(&mut self, rx: &UdpRx) -> u64 {
        self.counters.udp_rx_calls += 1;
        let now = Instant::now();
        let mut round = Vec::with_capacity(rx.len());
        for i in 0..rx.len() {
            let Some((from, data, seg)) = rx.message(i) else {
                break;
            };
            let from = canonical(from);
            round.extend(batch::segments(data, seg).map(|d| (from, d)));
        }
        let mut rxb = std::mem::take(&mut self.rxb);
        self.wg.predecrypt(&self.crypto, &round, &mut rxb);
        for (i, &(from, d)) in round.iter().enumerate() {
            self.counters.udp_rx += 1;
            self.on_datagram(from, d, &mut rxb, i, now).await;
        }
        self.counters.udp_rx_parallel_rounds = rxb.parallel_rounds;
        self.counters.udp_rx_parallel = rxb.parallel_packets;
        self.rxb = rxb;
        round.len() as u64
    }

    /// Rounds the reader threads received (`interface.udp_sockets` > 1):
    /// `b` and those already waiting behind it, at most [`READER_ROUNDS`]
    /// per loop turn (as [`UDP_ROUNDS`] calls on the loop); each buffer goes
    /// back to its reader.
    pub(super) async fn on_udp_batch(&mut self, b: super::udp_readers::UdpBatch) {
        let mut next = Some(b);
        let mut rounds = 0;
        while let Some(b) = next.take() {
            let n = self.on_udp_round(&b.rx).await;
            if let Some(c) = self.counters.udp_rx_by_socket.get_mut(b.socket) {
                *c += n;
            }
            rounds += 1;
            if let Some(r) = self.udp_readers.as_mut() {
                r.give_back(b);
                if rounds < READER_ROUNDS {
                    next = r.try_next();
                }
            }
        }
    }

    /// Encrypts a packet for a peer into the send arena (flushing first if
    /// it is full). `None`: sent (nothing more to report).
    pub(super) async fn encapsulate_batched(
        &mut self,
        z: ZoneId,
        pkt: &[u8],
        now: Instant,
    ) -> Option<EncapStatus> {
        let need = pkt.len() + DATA_OVERHEAD;
        if !self.tx.has_room(need) {
            self.flush_tx().await;
        }
        if self.crypto.threads() > 1 && self.txb.wants(z) {
            // encrypted by peer at the flush (`wg::parallel`): the datagram
            // takes its place in the arena now, the plaintext waits (once a
            // second peer shows up in this flush: `TxBatch::wants`)
            if let Some(to) = self.wg.deferrable(z, pkt.len()) {
                if let Some(at) = self.tx.commit_later(super::map_dual(to, self.dual), need) {
                    self.txb.stage(z, pkt, at);
                    return None;
                }
            }
        }
        let mut none: [u8; 0] = [];
        let dst = match self.tx.reserve(need) {
            Some(d) => d,
            None => &mut none[..],
        };
        match self.wg.encapsulate_into(z, pkt, now, dst, &mut self.outs) {
            EncapInto::Written { to, len } => {
                self.tx.commit(super::map_dual(to, self.dual), len);
                None
            }
            EncapInto::Other(st) => Some(st),
        }
    }

    /// Sends what the batch collected (waits for writability if the socket
    /// buffer is full).
    pub(super) async fn flush_tx(&mut self) {
        if !self.txb.is_empty() {
            self.wg
                .encrypt_deferred(&self.crypto, &mut self.txb, self.tx.arena_mut());
            self.counters.udp_tx_parallel_rounds = self.txb.parallel_rounds;
            self.counters.udp_tx_parallel = self.txb.parallel_packets;
        }
        self.txb.flushed();
        let fd = self.udp.as_raw_fd();
        let mut rep = TxReport::default();
        let tx = &mut self.tx;
        if let Err(e) = self
            .udp
            .async_io(Interest::WRITABLE, || tx.flush(fd, &mut rep))
            .await
        {
            tracing::debug!(error = %e, "UDP flush");
        }
        self.counters.udp_tx += rep.sent;
        self.counters.udp_tx_calls += rep.calls;
        self.counters.send_errors += rep.errors;
    }

    /// Queues a packet for the TUN (coalesced at the flush).
    pub(super) fn queue_tun(&mut self, pkt: &[u8]) {
        if !self.tun_out.push(pkt) {
            self.flush_tun();
            if !self.tun_out.push(pkt) {
                self.counters.send_errors += 1;
            }
        }
    }

    /// Writes the queued TUN packets (a TUN write does not block).
    pub(super) fn flush_tun(&mut self) {
        let Some(tun) = &self.tun else {
            // netstack mode: nothing is ever queued (no TUN, no vnet header)
            return;
        };
        let mut rep = TunTxReport::default();
        // by queue: the queues' writer threads, or the loop (`tun_writer`)
        self.tun_out.flush(tun.get_ref().as_raw_fd(), &mut rep);
        self.counters.tun_tx += rep.packets;
        self.counters.tun_tx_writes += rep.writes;
        self.counters.tun_tx_uso += rep.uso;
        self.counters.send_errors += rep.errors;
    }
}
