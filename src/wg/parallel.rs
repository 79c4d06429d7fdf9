//! WireGuard decryption and encryption spread over cores *by peer* (issue 8,
//! item 4).
//!
//! What it does: the IO shell hands over the datagrams of one receive round
//! (one `recvmmsg` call, GRO segments split). [`WgDevice::predecrypt`] groups
//! the data messages by peer (receiver index -> peer slot, as the sequential
//! path demultiplexes them) and decrypts each group, in arrival order, on one
//! worker of a [`CryptoPool`] with that peer's `&mut Tunn`, into the group's
//! own region of the round's arena. The peers' states are split into disjoint
//! `&mut` borrows (no lock, no sharing). Then the shell walks the round in
//! arrival order and calls [`WgDevice::finish_datagram`] for each datagram:
//! a pre-decrypted one gets the bookkeeping of the sequential path
//! (`WgDevice::settle`: counters, authenticated roaming, the packets that
//! waited for a session); every other one goes through
//! [`WgDevice::handle_datagram_into`] exactly as before.
//!
//! What it promises: the same packets, in the same order per peer, the same
//! counters and endpoint updates as the sequential path. That holds because a
//! data message only touches its own peer's `Tunn` (boringtun's rate limiter
//! checks handshake messages only), each peer's data messages are decrypted
//! in their arrival order, and nothing that could change a peer's sessions
//! is reordered around them:
//! - a peer's data messages after a handshake response or cookie reply *of
//!   that peer* in the round are left to the sequential path (a response
//!   installs the session they may need);
//! - a handshake initiation names no peer before its DH, so every data
//!   message after an initiation in the round is left to the sequential path
//!   (an initiation stores a session in the responder's ring and could evict
//!   one a later data message uses; rare: one per peer per two minutes).
//!
//! Encryption: while a batch runs, a packet the pipeline forwards to a peer
//! with a session and nothing waiting ([`WgDevice::deferrable`], the fast
//! path of `encapsulate_into`) takes its datagram's place in the send arena
//! at once (so the send order is the forwarding order) and its plaintext is
//! staged in a [`TxBatch`] (a TSO segment lives in one reused buffer). At the
//! flush, [`WgDevice::encrypt_deferred`] cuts the arena into the staged
//! datagrams' disjoint slices and encrypts each peer's packets in order on
//! one thread. Packets for a peer without a session take the usual path
//! (hold queue, handshake, kill switch).
//!
//! Granularity: one peer's packets stay on one core and in order, as with
//! SO_REUSEPORT sharding (WireGuard's replay window and send counter belong
//! to the session, and boringtun's `Tunn` takes `&mut self`; parallel crypto
//! *within* a peer needs boringtun's `Session`, which it keeps private). The
//! firewall (conntrack, NAT, rules, IDS) stays on the event loop.
//!
//! Small rounds stay inline: with fewer than [`MIN_PARALLEL`] data messages,
//! a single peer, or less than [`MIN_MOVABLE_BYTES`] outside the heaviest
//! peer's group in the round, nothing is pre-decrypted and no worker is
//! woken, so the single-peer path costs one header parse per datagram more
//! than before (the classification) and nothing else.

use super::helping::HelpingPool;
use super::{Decap, WgDevice, WgOutput, MAX_PACKET};
use crate::zone::ZoneId;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::SocketAddr;
use std::time::Instant;

/// Data messages in a round below which it is decrypted inline. A worker
/// wake-up costs a few microseconds (futex wake + the worker's scheduling);
/// one 1,400-byte ChaCha20-Poly1305 open costs ~1-2 µs here, so a round must
/// carry several packets per peer group before spreading it pays.
pub const MIN_PARALLEL: usize = 8;

/// Bytes a round must carry outside its heaviest peer group before it is
/// spread: the caller keeps (at least) the heaviest group, so only the rest
/// can move to a worker, and below about three full-size packets that is
/// less work than the wake-up. Rounds of ACKs or other small packets (two
/// iperf3 clients uploading: the gateway's encryption rounds are all ACKs)
/// stay inline.
pub const MIN_MOVABLE_BYTES: usize = 4096;

/// Whether a round with these per-peer byte counts and `messages` messages
/// is worth spreading over the workers.
fn worth_spreading(group_bytes: impl Iterator<Item = usize>, messages: usize) -> bool {
    let (n, total, max) =
        group_bytes.fold((0, 0, 0), |(n, t, m), b| (n + 1, t + b, usize::max(m, b)));
    n >= 2 && messages >= MIN_PARALLEL && total - max >= MIN_MOVABLE_BYTES
}

/// Marks a peer slot whose later data messages in the round go sequential.
const BLOCKED: u32 = u32::MAX;

/// The crypto workers (`[interface] crypto_threads`). One thread (or one
/// core) means no pool: everything stays inline on the caller's thread.
pub struct CryptoPool {
    pool: Option<HelpingPool>,
    threads: usize,
}

impl std::fmt::Debug for CryptoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl CryptoPool {
    /// No workers: everything inline (`crypto_threads = 1`).
    pub fn inline() -> CryptoPool {
        CryptoPool {
            pool: None,
            threads: 1,
        }
    }

    /// `threads` cores doing crypto: the caller's thread and `threads - 1`
    /// workers; 0 = one per available core. 1 (or one core) is
    /// [`CryptoPool::inline`].
    pub fn new(threads: usize) -> std::io::Result<CryptoPool> {
        let n = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if n <= 1 {
            return Ok(CryptoPool::inline());
        }
        let pool = HelpingPool::new(n - 1, "pc-crypto")?;
        Ok(CryptoPool {
            pool: Some(pool),
            threads: n,
        })
    }

    /// Cores doing crypto (1: inline).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// What a worker made of one data message.
enum Pre {
    /// Decrypted: `len` bytes at `off` in the round's arena.
    Packet {
        off: usize,
        len: usize,
    },
    Done,
    Rejected(WireGuardError),
    /// boringtun never answers a data message, but if it did, the reply is
    /// sent as the sequential path would.
    Network(Vec<u8>),
}

/// One peer's data messages in a round.
#[derive(Default)]
struct Group {
    slot: usize,
    /// (datagram index in the round, offset in the group's arena region).
    items: Vec<(usize, usize)>,
    bytes: usize,
    results: Vec<Pre>,
}

/// State of one receive round, reused across rounds (no allocation per
/// round once the vectors have grown).
#[derive(Default)]
pub struct RxBatch {
    /// Per datagram of the round: its pre-decryption result and peer slot.
    pre: Vec<Option<(usize, Pre)>>,
    arena: Vec<u8>,
    groups: Vec<Group>,
    ngroups: usize,
    /// Per peer slot: 0 none, `BLOCKED`, else group index + 1.
    group_of_slot: Vec<u32>,
    touched: Vec<usize>,
    /// Rounds that were pre-decrypted in parallel, and their data messages
    /// (for the shell's counters).
    pub parallel_rounds: u64,
    pub parallel_packets: u64,
}

impl RxBatch {
    fn reset(&mut self, n: usize) {
        self.pre.clear();
        self.pre.resize_with(n, || None);
        for g in self.groups.iter_mut().take(self.ngroups) {
            g.items.clear();
            g.results.clear();
            g.bytes = 0;
        }
        self.ngroups = 0;
        for &s in &self.touched {
            if let Some(x) = self.group_of_slot.get_mut(s) {
                *x = 0;
            }
        }
        self.touched.clear();
    }
}

/// One worker's share: a peer's `Tunn`, its data messages, its arena region.
struct Work<'a> {
    tunn: &'a mut Tunn,
    group: &'a mut Group,
    arena: &'a mut [u8],
    base: usize,
}

impl Work<'_> {
    fn run(&mut self, round: &[(SocketAddr, &[u8])]) {
        let g = &mut *self.group;
        for &(i, off) in &g.items {
            let Some(&(from, d)) = round.get(i) else {
                g.results.push(Pre::Done);
                continue;
            };
            let Some(dst) = self.arena.get_mut(off..off + d.len()) else {
                g.results
                    .push(Pre::Rejected(WireGuardError::DestinationBufferTooSmall));
                continue;
            };
            let r = match self.tunn.decapsulate(Some(from.ip()), d, dst) {
                TunnResult::Done => Pre::Done,
                TunnResult::Err(e) => Pre::Rejected(e),
                TunnResult::WriteToNetwork(n) => Pre::Network(n.to_vec()),
                // boringtun returns the packet at the start of `dst`
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    Pre::Packet {
                        off: self.base + off,
                        len: p.len(),
                    }
                }
            };
            g.results.push(r);
        }
    }
}

/// Runs `run` over `work` on the caller and the pool's workers, the
/// heaviest first (each thread claims the next one when it is free: see
/// [`HelpingPool`]).
fn spread<W: Send>(
    workers: &HelpingPool,
    mut work: Vec<W>,
    weight: impl Fn(&W) -> usize,
    run: impl Fn(&mut W) + Sync,
) {
    work.sort_unstable_by_key(|w| std::cmp::Reverse(weight(w)));
    workers.run(&mut work, run);
}

impl WgDevice {
    /// Pre-decrypts the data messages of one receive round on `pool`, by
    /// peer (see the module documentation). `round` is in arrival order,
    /// sources as received (canonicalised here). Afterwards call
    /// [`WgDevice::finish_datagram`] for every datagram of the round, in
    /// order, with the same `batch`.
    pub fn predecrypt(
        &mut self,
        pool: &CryptoPool,
        round: &[(SocketAddr, &[u8])],
        batch: &mut RxBatch,
    ) {
        batch.reset(round.len());
        let Some(workers) = pool.pool.as_ref() else {
            return;
        };
        if round.len() < MIN_PARALLEL {
            return;
        }
        if batch.group_of_slot.len() < self.peers.len() {
            batch.group_of_slot.resize(self.peers.len(), 0);
        }
        let mut data = 0usize;
        let mut after_init = false;
        for (i, &(_, d)) in round.iter().enumerate() {
            if d.len() > MAX_PACKET {
                continue;
            }
            let (idx, is_data) = match Tunn::parse_incoming_packet(d) {
                Ok(Packet::HandshakeInit(_)) => {
                    after_init = true;
                    continue;
                }
                Ok(Packet::HandshakeResponse(p)) => (p.receiver_idx, false),
                Ok(Packet::PacketCookieReply(p)) => (p.receiver_idx, false),
                Ok(Packet::PacketData(p)) => (p.receiver_idx, true),
                Err(_) => continue,
            };
            let Some(slot) = self.slot_of_index(idx) else {
                continue;
            };
            if self.peers.get(slot).is_none_or(|p| p.removed) {
                continue;
            }
            let Some(mark) = batch.group_of_slot.get_mut(slot) else {
                continue;
            };
            if *mark == 0 {
                batch.touched.push(slot);
            }
            if !is_data {
                *mark = BLOCKED;
                continue;
            }
            if after_init || *mark == BLOCKED {
                continue;
            }
            if *mark == 0 {
                if batch.groups.len() <= batch.ngroups {
                    batch.groups.push(Group::default());
                }
                let Some(g) = batch.groups.get_mut(batch.ngroups) else {
                    continue;
                };
                g.slot = slot;
                batch.ngroups += 1;
                *mark = batch.ngroups as u32;
            }
            let Some(g) = batch.groups.get_mut(*mark as usize - 1) else {
                continue;
            };
            g.items.push((i, g.bytes));
            g.bytes += d.len();
            data += 1;
        }
        let bytes = batch.groups.iter().take(batch.ngroups).map(|g| g.bytes);
        if !worth_spreading(bytes, data) {
            // inline: finish_datagram takes the sequential path for all
            for g in batch.groups.iter_mut().take(batch.ngroups) {
                g.items.clear();
                g.bytes = 0;
            }
            return;
        }
        // Disjoint borrows: groups sorted by slot, peers split along them,
        // the arena split in the same order.
        let groups = batch.groups.get_mut(..batch.ngroups).unwrap_or_default();
        groups.sort_unstable_by_key(|g| g.slot);
        let total: usize = groups.iter().map(|g| g.bytes).sum();
        if batch.arena.len() < total {
            batch.arena.resize(total, 0);
        }
        let mut work = Vec::with_capacity(groups.len());
        let mut peers = &mut self.peers[..];
        let mut peer_base = 0usize;
        let mut arena = &mut batch.arena[..];
        let mut base = 0usize;
        for g in groups.iter_mut() {
            let Some(rest) = g
                .slot
                .checked_sub(peer_base)
                .and_then(|k| peers.get_mut(k..))
            else {
                break;
            };
            let Some((p, tail)) = rest.split_first_mut() else {
                break;
            };
            peers = tail;
            peer_base = g.slot + 1;
            let a = std::mem::take(&mut arena);
            let k = g.bytes.min(a.len());
            let (mine, more) = a.split_at_mut(k);
            arena = more;
            let bytes = g.bytes;
            work.push(Work {
                tunn: &mut p.tunn,
                group: g,
                arena: mine,
                base,
            });
            base += bytes;
        }
        spread(workers, work, |w| w.group.bytes, |w| w.run(round));
        batch.parallel_rounds += 1;
        batch.parallel_packets += data as u64;
        for g in batch.groups.iter_mut().take(batch.ngroups) {
            for (&(i, _), r) in g.items.iter().zip(g.results.drain(..)) {
                if let Some(p) = batch.pre.get_mut(i) {
                    *p = Some((g.slot, r));
                }
            }
        }
    }

    /// The sequential phase for datagram `i` of the round given to
    /// [`WgDevice::predecrypt`]: a decrypted IP packet (in `dst` or in the
    /// round's arena) with its peer zone, as
    /// [`WgDevice::handle_datagram_into`] returns it; everything else goes
    /// to `out`. `dst` is at least [`super::BUF_LEN`] bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_datagram<'a>(
        &mut self,
        batch: &'a mut RxBatch,
        i: usize,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        dst: &'a mut [u8],
        out: &mut Vec<WgOutput>,
    ) -> Option<(ZoneId, &'a mut [u8])> {
        let Some((slot, pre)) = batch.pre.get_mut(i).and_then(Option::take) else {
            let (zone, n) = self.handle_datagram_into(from, datagram, now, dst, out)?;
            return Some((zone, dst.get_mut(..n)?));
        };
        let from = super::canonical(from);
        let (res, at) = match pre {
            Pre::Packet { off, len } => (Decap::Tunnel(len), Some(off)),
            Pre::Done => (Decap::Done, None),
            Pre::Rejected(e) => (Decap::Rejected(e), None),
            Pre::Network(d) => (Decap::Network(d), None),
        };
        let (zone, n) = self.settle(slot, from, true, res, now, dst, out)?;
        let off = at?;
        Some((zone, batch.arena.get_mut(off..off + n)?))
    }
}

/// One packet staged for encryption: its peer zone, its plaintext in
/// [`TxBatch`]'s buffer, and where its datagram goes in the send arena.
struct TxItem {
    zone: ZoneId,
    plain: usize,
    len: usize,
    dst: usize,
}

/// Packets the pipeline forwarded to peers with a session during one batch,
/// encrypted by peer at the flush ([`WgDevice::encrypt_deferred`]). Their
/// datagrams already hold their place (and so their order) in the send arena;
/// the plaintexts wait here (a TSO segment lives in one reused buffer, a
/// packet read from the TUN in the next read's slot).
#[derive(Default)]
pub struct TxBatch {
    plain: Vec<u8>,
    items: Vec<TxItem>,
    /// The one peer this flush's packets went to so far, encrypted at once
    /// (nothing staged yet).
    inline_peer: Option<ZoneId>,
    /// Flushes encrypted in parallel and the packets they carried.
    pub parallel_rounds: u64,
    pub parallel_packets: u64,
}

impl TxBatch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a packet for `zone` should be staged (encrypted by peer at
    /// the flush) instead of encrypted at once: only from the first packet
    /// for a second peer in this flush on. A flush whose packets all go to
    /// one peer, the common case, is encrypted as it comes, with no staging
    /// copy; the packets encrypted before staging began lie before the
    /// staged ones in the send arena, so each peer's order is kept.
    pub fn wants(&mut self, zone: ZoneId) -> bool {
        if !self.items.is_empty() {
            return true;
        }
        match self.inline_peer {
            None => {
                self.inline_peer = Some(zone);
                false
            }
            Some(z) => z != zone,
        }
    }

    /// The flush is done: the next one starts afresh.
    pub fn flushed(&mut self) {
        self.inline_peer = None;
    }

    /// Stages `packet` for `zone`; its datagram (`packet.len()` +
    /// [`super::DATA_OVERHEAD`] bytes) is at `dst` in the send arena.
    pub fn stage(&mut self, zone: ZoneId, packet: &[u8], dst: usize) {
        let plain = self.plain.len();
        self.plain.extend_from_slice(packet);
        self.items.push(TxItem {
            zone,
            plain,
            len: packet.len(),
            dst,
        });
    }
}

/// A staged plaintext and its datagram's bytes in the send arena.
type EncJob<'a> = (&'a [u8], &'a mut [u8]);

/// One peer's staged packets.
struct EncWork<'a> {
    tunn: &'a mut Tunn,
    jobs: Vec<EncJob<'a>>,
    bytes: usize,
    drops: u64,
}

impl EncWork<'_> {
    fn run(&mut self) {
        for (plain, dst) in self.jobs.iter_mut() {
            // `has_session` was checked when the packet was staged and no
            // handshake ran since (the flush ends the same loop turn); without
            // a current session boringtun would write a 148-byte initiation
            // (panicking on a smaller buffer), so check again: the datagram
            // then stays zeroed (an invalid message the peer ignores) and the
            // packet counts as a kill-switch drop.
            let ok = self.tunn.time_since_last_handshake().is_some()
                && matches!(
                    self.tunn.encapsulate(plain, dst),
                    TunnResult::WriteToNetwork(_)
                );
            if !ok {
                dst.fill(0);
                self.drops += 1;
            }
        }
    }
}

impl WgDevice {
    /// Whether a packet of `len` bytes for `zone` takes the fast path of
    /// [`WgDevice::encapsulate_into`] (a session, nothing waiting, an
    /// endpoint) and so may be staged in a [`TxBatch`]: its destination.
    pub fn deferrable(&self, zone: ZoneId, len: usize) -> Option<SocketAddr> {
        if len > MAX_PACKET {
            return None;
        }
        let p = self.slot_of_zone(zone).and_then(|s| self.peers.get(s))?;
        (p.pending.is_empty() && p.has_session())
            .then_some(p.endpoint)
            .flatten()
    }

    /// Encrypts what `batch` staged into its places in `arena` (the send
    /// arena), each peer's packets in order on one thread, the peers spread
    /// over `pool`; inline with one peer or fewer than [`MIN_PARALLEL`]
    /// packets. Empties `batch`.
    pub fn encrypt_deferred(&mut self, pool: &CryptoPool, batch: &mut TxBatch, arena: &mut [u8]) {
        if batch.items.is_empty() {
            return;
        }
        // the items are in arena order: cut the arena along them
        let mut groups: Vec<(usize, Vec<EncJob<'_>>, usize)> = Vec::new();
        let mut rest = arena;
        let mut base = 0usize;
        let mut lost = 0u64;
        for it in &batch.items {
            let (Some(skip), Some(plain), Some(slot)) = (
                it.dst.checked_sub(base),
                batch.plain.get(it.plain..it.plain + it.len),
                self.slot_of_zone(it.zone),
            ) else {
                lost += 1;
                continue;
            };
            let need = it.len + super::DATA_OVERHEAD;
            if skip + need > rest.len() {
                lost += 1;
                continue;
            }
            let (_, r) = std::mem::take(&mut rest).split_at_mut(skip);
            let (dst, r) = r.split_at_mut(need);
            rest = r;
            base = it.dst + need;
            match groups.iter_mut().find(|g| g.0 == slot) {
                Some(g) => {
                    g.1.push((plain, dst));
                    g.2 += need;
                }
                None => groups.push((slot, vec![(plain, dst)], need)),
            }
        }
        let n = batch.items.len();
        groups.sort_unstable_by_key(|g| g.0);
        let mut work = Vec::with_capacity(groups.len());
        let mut peers = &mut self.peers[..];
        let mut peer_base = 0usize;
        for (slot, jobs, bytes) in groups {
            let Some((p, tail)) = slot
                .checked_sub(peer_base)
                .and_then(|k| std::mem::take(&mut peers).get_mut(k..))
                .and_then(|r| r.split_first_mut())
            else {
                break;
            };
            peers = tail;
            peer_base = slot + 1;
            work.push((
                EncWork {
                    tunn: &mut p.tunn,
                    jobs,
                    bytes,
                    drops: 0,
                },
                &mut p.kill_switch_drops,
            ));
        }
        match pool.pool.as_ref() {
            Some(workers) if worth_spreading(work.iter().map(|w| w.0.bytes), n) => {
                spread(
                    workers,
                    work.iter_mut().collect(),
                    |w| w.0.bytes,
                    |w| w.0.run(),
                );
                batch.parallel_rounds += 1;
                batch.parallel_packets += n as u64;
            }
            _ => work.iter_mut().for_each(|w| w.0.run()),
        }
        for (w, drops) in work {
            *drops += w.drops;
        }
        if lost > 0 {
            tracing::debug!(lost, "staged packets without a place in the send arena");
        }
        batch.items.clear();
        batch.plain.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wg::keys::{generate_private, public_key};
    use crate::wg::tests::{addr, ipv4};
    use crate::wg::{EncapStatus, WgConfig, WgPeer, BUF_LEN};

    /// A gateway with `n` peers (zones 0..n) and one client device per peer.
    struct World {
        gw: WgDevice,
        gw_addr: SocketAddr,
        clients: Vec<(WgDevice, SocketAddr)>,
    }

    fn world(n: usize) -> World {
        let gk = generate_private();
        let gw_addr = addr("198.51.100.1:51820");
        let cks: Vec<[u8; 32]> = (0..n).map(|_| generate_private()).collect();
        let gw = WgDevice::new(WgConfig {
            private_key: gk,
            listen_port: 51820,
            peers: cks
                .iter()
                .enumerate()
                .map(|(i, k)| WgPeer {
                    zone: ZoneId::peer(i),
                    name: format!("c{i}"),
                    public_key: public_key(k),
                    preshared_key: None,
                    endpoint: Some(client_addr(i)),
                    persistent_keepalive: None,
                })
                .collect(),
        })
        .unwrap();
        let clients = cks
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let d = WgDevice::new(WgConfig {
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
                .unwrap();
                (d, client_addr(i))
            })
            .collect();
        World {
            gw,
            gw_addr,
            clients,
        }
    }

    fn client_addr(i: usize) -> SocketAddr {
        SocketAddr::new([203, 0, 113, 10 + i as u8].into(), 40000)
    }

    fn net(out: Vec<WgOutput>) -> Vec<(SocketAddr, Vec<u8>)> {
        out.into_iter()
            .filter_map(|o| match o {
                WgOutput::Network { to, data } => Some((to, data)),
                WgOutput::Packet { .. } => None,
            })
            .collect()
    }

    /// Client `i` handshakes with the gateway (client initiates); the
    /// queued first packet is delivered.
    fn connect(w: &mut World, i: usize) {
        let now = Instant::now();
        let (c, a) = &mut w.clients[i];
        let mut out = vec![];
        let first = ipv4([100, 64, 0, 2 + i as u8], [100, 64, 0, 1], b"hi");
        assert_eq!(
            c.encapsulate(ZoneId::peer(0), &first, now, &mut out),
            EncapStatus::Queued
        );
        let mut to_gw = net(out);
        for _ in 0..4 {
            let mut to_cl = vec![];
            for (_, d) in to_gw.drain(..) {
                w.gw.handle_datagram(*a, &d, now, &mut to_cl);
            }
            let mut back = vec![];
            for (to, d) in net(to_cl) {
                assert_eq!(to, *a);
                c.handle_datagram(w.gw_addr, &d, now, &mut back);
            }
            to_gw = net(back);
        }
        assert!(w.gw.has_session(ZoneId::peer(i)));
    }

    /// A data datagram from client `i` carrying `tag`, and the plaintext.
    fn data(w: &mut World, i: usize, tag: u8) -> (Vec<u8>, Vec<u8>) {
        data_sized(w, i, tag, 1000)
    }

    /// A data message from client `i` carrying `len` bytes of payload.
    fn data_sized(w: &mut World, i: usize, tag: u8, len: usize) -> (Vec<u8>, Vec<u8>) {
        let (c, _) = &mut w.clients[i];
        let pkt = ipv4([100, 64, 0, 2 + i as u8], [100, 64, 0, 1], &vec![tag; len]);
        let mut out = vec![];
        assert_eq!(
            c.encapsulate(ZoneId::peer(0), &pkt, Instant::now(), &mut out),
            EncapStatus::Sent
        );
        (net(out).pop().unwrap().1, pkt)
    }

    /// Runs a round through predecrypt + finish_datagram; returns the
    /// decrypted packets in order and what went to the network.
    fn run_round(
        gw: &mut WgDevice,
        pool: &CryptoPool,
        batch: &mut RxBatch,
        round: &[(SocketAddr, Vec<u8>)],
    ) -> (Vec<(ZoneId, Vec<u8>)>, Vec<WgOutput>) {
        let now = Instant::now();
        let refs: Vec<(SocketAddr, &[u8])> = round.iter().map(|(a, d)| (*a, &d[..])).collect();
        gw.predecrypt(pool, &refs, batch);
        let mut dst = vec![0; BUF_LEN];
        let (mut got, mut out) = (vec![], vec![]);
        for (i, &(from, d)) in refs.iter().enumerate() {
            if let Some((z, p)) = gw.finish_datagram(batch, i, from, d, now, &mut dst, &mut out) {
                got.push((z, p.to_vec()));
            }
        }
        (got, out)
    }

    /// Four peers' data interleaved with a handshake initiation (a new
    /// peer), a handshake response (a peer the gateway initiated to), a
    /// tampered message and a roaming peer: the same packets in the same
    /// order, the same counters and endpoints, whether or not the pool
    /// pre-decrypts (the sequential path is `CryptoPool::inline`).
    fn interleaved(pool: &CryptoPool) -> RxBatch {
        let mut w = world(6);
        for i in 0..4 {
            connect(&mut w, i);
        }
        let before = w.gw.counters();
        let now = Instant::now();
        // peer 5: the gateway initiates; its response comes in the round
        let mut out = vec![];
        let to5 = ipv4([100, 64, 0, 1], [100, 64, 0, 7], b"queued for 5");
        assert_eq!(
            w.gw.encapsulate(ZoneId::peer(5), &to5, now, &mut out),
            EncapStatus::Queued
        );
        let (to, init5) = net(out).pop().unwrap();
        assert_eq!(to, client_addr(5));
        let mut out = vec![];
        w.clients[5]
            .0
            .handle_datagram(w.gw_addr, &init5, now, &mut out);
        let (_, resp5) = net(out).pop().unwrap();
        // peer 4: a new handshake initiation in the round
        let mut out = vec![];
        let first4 = ipv4([100, 64, 0, 6], [100, 64, 0, 1], b"four");
        w.clients[4]
            .0
            .encapsulate(ZoneId::peer(0), &first4, now, &mut out);
        let (_, init4) = net(out).pop().unwrap();

        let roamed = addr("192.0.2.99:41000");
        let mut r = (vec![], vec![]);
        type Round = (Vec<(SocketAddr, Vec<u8>)>, Vec<(ZoneId, Vec<u8>)>);
        fn push(r: &mut Round, w: &mut World, i: usize, tag: u8, from: SocketAddr, ok: bool) {
            let (d, p) = data(w, i, tag);
            r.0.push((from, d));
            if ok {
                r.1.push((ZoneId::peer(i), p));
            }
        }
        push(&mut r, &mut w, 0, 1, client_addr(0), true);
        push(&mut r, &mut w, 1, 2, client_addr(1), true);
        push(&mut r, &mut w, 2, 3, client_addr(2), true);
        push(&mut r, &mut w, 3, 4, client_addr(3), true);
        push(&mut r, &mut w, 0, 5, roamed, true);
        push(&mut r, &mut w, 1, 6, client_addr(1), true);
        push(&mut r, &mut w, 2, 7, client_addr(2), false); // tampered below
        push(&mut r, &mut w, 3, 8, client_addr(3), true);
        push(&mut r, &mut w, 0, 9, roamed, true);
        let tampered = r.0.len() - 3;
        if let Some(b) = r.0[tampered].1.last_mut() {
            *b ^= 1;
        }
        r.0.push((client_addr(4), init4));
        push(&mut r, &mut w, 1, 10, client_addr(1), true);
        r.0.push((client_addr(5), resp5));
        push(&mut r, &mut w, 2, 11, client_addr(2), true);
        push(&mut r, &mut w, 3, 12, client_addr(3), true);
        push(&mut r, &mut w, 0, 13, roamed, true);

        let (round, want) = r;
        let mut batch = RxBatch::default();
        let (got, out) = run_round(&mut w.gw, pool, &mut batch, &round);
        assert_eq!(got, want, "same packets, same order");
        let c = w.gw.counters();
        assert_eq!(c.rejected, before.rejected + 1, "the tampered message");
        assert_eq!(c.unknown_peer, before.unknown_peer);
        assert_eq!(c.invalid, before.invalid);
        let stats = w.gw.stats();
        assert_eq!(stats[0].endpoint, Some(roamed));
        assert_eq!(stats[0].roams, 1);
        assert_eq!(stats[1].roams, 0);
        // the initiation was answered, the response installed peer 5's
        // session and sent what waited for it
        assert!(w.gw.has_session(ZoneId::peer(5)));
        assert_eq!(stats[5].pending, 0);
        let out = net(out);
        assert!(out.iter().any(|(to, d)| *to == client_addr(4) && d[0] == 2));
        let to_5: Vec<_> = out.iter().filter(|(to, _)| *to == client_addr(5)).collect();
        assert_eq!(to_5.len(), 2, "keepalive and the queued packet");
        let mut got5 = vec![];
        for (_, d) in to_5 {
            let mut o = vec![];
            w.clients[5].0.handle_datagram(w.gw_addr, d, now, &mut o);
            got5.extend(o.into_iter().filter_map(|o| match o {
                WgOutput::Packet { data, .. } => Some(data),
                WgOutput::Network { .. } => None,
            }));
        }
        assert_eq!(got5, vec![to5]);
        batch
    }

    #[test]
    fn parallel_round_equals_sequential() {
        let seq = interleaved(&CryptoPool::inline());
        assert_eq!(seq.parallel_rounds, 0);
        let par = interleaved(&CryptoPool::new(2).unwrap());
        assert_eq!(par.parallel_rounds, 1);
        assert_eq!(par.parallel_packets, 9, "the data before the initiation");
    }

    /// One peer, or too few messages: nothing is pre-decrypted (no worker
    /// is woken), and the packets come out as before.
    #[test]
    fn single_peer_round_stays_inline() {
        let pool = CryptoPool::new(2).unwrap();
        let mut w = world(2);
        connect(&mut w, 0);
        connect(&mut w, 1);
        let mut round = vec![];
        let mut want = vec![];
        for t in 0..20 {
            let (d, p) = data(&mut w, 0, t);
            round.push((client_addr(0), d));
            want.push((ZoneId::peer(0), p));
        }
        let mut batch = RxBatch::default();
        let (got, _) = run_round(&mut w.gw, &pool, &mut batch, &round);
        assert_eq!(got, want);
        assert_eq!(batch.parallel_rounds, 0);
        // two peers but fewer than MIN_PARALLEL messages
        let mut round = vec![];
        for t in 0..(MIN_PARALLEL as u8 - 1) {
            round.push((
                client_addr(usize::from(t % 2)),
                data(&mut w, usize::from(t % 2), t).0,
            ));
        }
        let (got, _) = run_round(&mut w.gw, &pool, &mut batch, &round);
        assert_eq!(got.len(), MIN_PARALLEL - 1);
        assert_eq!(batch.parallel_rounds, 0);
        // then a round that does spread
        let mut round = vec![];
        for t in 0..16u8 {
            round.push((
                client_addr(usize::from(t % 2)),
                data(&mut w, usize::from(t % 2), t).0,
            ));
        }
        let (got, _) = run_round(&mut w.gw, &pool, &mut batch, &round);
        assert_eq!(got.len(), 16);
        assert_eq!(batch.parallel_rounds, 1);
    }

    /// A replayed data message in a parallel round is refused, as inline.
    #[test]
    fn replay_in_a_parallel_round_is_rejected() {
        let pool = CryptoPool::new(2).unwrap();
        let mut w = world(2);
        connect(&mut w, 0);
        connect(&mut w, 1);
        let mut round = vec![];
        for t in 0..10u8 {
            round.push((
                client_addr(usize::from(t % 2)),
                data(&mut w, usize::from(t % 2), t).0,
            ));
        }
        let again = round[2].clone();
        round.push(again);
        let before = w.gw.counters().rejected;
        let mut batch = RxBatch::default();
        let (got, _) = run_round(&mut w.gw, &pool, &mut batch, &round);
        assert_eq!(got.len(), 10);
        assert_eq!(w.gw.counters().rejected, before + 1);
        assert_eq!(batch.parallel_rounds, 1);
    }

    /// Rounds of small packets (ACKs) from or to several peers stay inline:
    /// what could move to a worker is less than [`MIN_MOVABLE_BYTES`].
    #[test]
    fn rounds_of_small_packets_stay_inline() {
        let pool = CryptoPool::new(2).unwrap();
        let mut w = world(2);
        connect(&mut w, 0);
        connect(&mut w, 1);
        let round: Vec<_> = (0..32u8)
            .map(|t| {
                (
                    client_addr(usize::from(t % 2)),
                    data_sized(&mut w, usize::from(t % 2), t, 40).0,
                )
            })
            .collect();
        let mut batch = RxBatch::default();
        let (got, _) = run_round(&mut w.gw, &pool, &mut batch, &round);
        assert_eq!(got.len(), 32);
        assert_eq!(batch.parallel_rounds, 0);
        let mut txb = TxBatch::default();
        let mut used = 0;
        for k in 0..32usize {
            let pkt = ipv4([100, 64, 0, 1], [100, 64, 0, 2 + (k % 2) as u8], &[7; 40]);
            txb.stage(ZoneId::peer(k % 2), &pkt, used);
            used += pkt.len() + crate::wg::DATA_OVERHEAD;
        }
        let mut arena = vec![0u8; used];
        w.gw.encrypt_deferred(&pool, &mut txb, &mut arena);
        assert_eq!(txb.parallel_rounds, 0);
        assert!(worth_spreading([4096, 5000].into_iter(), MIN_PARALLEL));
        assert!(!worth_spreading([9000, 4095].into_iter(), MIN_PARALLEL));
        assert!(!worth_spreading([9000, 9000].into_iter(), MIN_PARALLEL - 1));
        assert!(!worth_spreading([90000].into_iter(), 64));
    }

    /// A flush stages nothing while its packets go to one peer; from the
    /// first packet for a second peer on, everything is staged (also the
    /// first peer's later packets), until the flush.
    #[test]
    fn staging_starts_with_the_second_peer() {
        let (a, b) = (ZoneId::peer(0), ZoneId::peer(1));
        let mut t = TxBatch::default();
        assert!(!t.wants(a));
        assert!(!t.wants(a));
        assert!(t.wants(b));
        t.stage(b, &[0x45; 20], 0);
        assert!(
            t.wants(a),
            "staging began: the first peer's next packet waits too"
        );
        t.items.clear();
        t.flushed();
        assert!(!t.wants(b), "a new flush starts afresh");
        assert!(t.wants(a));
    }

    /// Packets staged for four peers (unevenly interleaved) are encrypted
    /// into their places, inline or spread by peer: each client decrypts its
    /// own in order; a peer without a session is not deferrable.
    #[test]
    fn deferred_encryption_by_peer() {
        for pool in [CryptoPool::inline(), CryptoPool::new(2).unwrap()] {
            let mut w = world(5);
            for i in 0..4 {
                connect(&mut w, i);
            }
            assert_eq!(w.gw.deferrable(ZoneId::peer(4), 100), None, "no session");
            let mut txb = TxBatch::default();
            let (mut places, mut want) = (vec![], vec![vec![]; 4]);
            let mut used = 0;
            for k in 0..30usize {
                let i = (k * k + k / 3) % 4;
                let pkt = ipv4(
                    [100, 64, 0, 1],
                    [100, 64, 0, 2 + i as u8],
                    &vec![k as u8; 600 + k],
                );
                assert_eq!(
                    w.gw.deferrable(ZoneId::peer(i), pkt.len()),
                    Some(client_addr(i))
                );
                txb.stage(ZoneId::peer(i), &pkt, used);
                places.push((i, used, pkt.len() + crate::wg::DATA_OVERHEAD));
                used += pkt.len() + crate::wg::DATA_OVERHEAD;
                want[i].push(pkt);
            }
            let mut arena = vec![0u8; used];
            w.gw.encrypt_deferred(&pool, &mut txb, &mut arena);
            assert!(txb.is_empty());
            assert_eq!(txb.parallel_rounds, u64::from(pool.threads() > 1));
            let mut got = vec![vec![]; 4];
            for (i, at, len) in places {
                let mut out = vec![];
                let (c, _) = &mut w.clients[i];
                c.handle_datagram(w.gw_addr, &arena[at..at + len], Instant::now(), &mut out);
                for o in out {
                    if let WgOutput::Packet { data, .. } = o {
                        got[i].push(data);
                    }
                }
            }
            assert_eq!(got, want);
            assert_eq!(w.gw.kill_switch_drops(), 0);
        }
    }
}
