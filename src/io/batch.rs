//! Batched UDP IO for the WireGuard socket: `recvmmsg` with UDP GRO on
//! receive, `sendmmsg` with UDP GSO (`UDP_SEGMENT`) on send.
//!
//! What it promises:
//! - [`UdpRx::recv`] reads up to [`RX_BATCH`] messages in one system call
//!   (never blocks: `MSG_DONTWAIT`). With GRO on (`setsockopt(SOL_UDP,
//!   UDP_GRO)`, Linux >= 5.0, net/ipv4/udp_offload.c) one message may carry
//!   several datagrams of the same flow glued together; the kernel reports
//!   their size in a `SOL_UDP/UDP_GRO` control message (every segment has that
//!   size except the last, which may be shorter) and [`segments`] splits
//!   them again, so callers always see single WireGuard datagrams.
//! - [`UdpTx`] collects outgoing datagrams in one arena (no allocation per
//!   datagram: callers encrypt straight into [`UdpTx::reserve`]) and
//!   [`UdpTx::flush`] sends them with `sendmmsg`. With GSO on, consecutive
//!   datagrams to the same address whose sizes are equal (the last of a run
//!   may be shorter) travel as one message with a `UDP_SEGMENT` control
//!   message, at most [`GSO_MAX_SEGMENTS`] segments and [`GSO_MAX_BYTES`]
//!   bytes (the kernel's `UDP_MAX_SEGMENTS` and the IP length limit,
//!   include/linux/udp.h, net/ipv4/udp.c `udp_send_skb`).
//! - Fallbacks: if the kernel refuses `UDP_GRO` at setup, messages are single
//!   datagrams (segment size = length). If a GSO send fails with `EIO` (the
//!   device cannot checksum-offload, `udp_send_skb`) GSO is turned off for
//!   good and the same datagrams are sent again one per message; `EINVAL`
//!   from an old kernel that does not know `UDP_SEGMENT` does the same.
//!   Any other send error drops that one message (counted) and carries on:
//!   UDP is unreliable and one unreachable peer must not stall the others.
//!
//! No async here: the shell waits for readiness (tokio) and calls these on
//! the non-blocking socket's fd.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// include/uapi/linux/udp.h: `#define UDP_SEGMENT 103`.
pub const UDP_SEGMENT: libc::c_int = 103;
/// include/uapi/linux/udp.h: `#define UDP_GRO 104`.
pub const UDP_GRO: libc::c_int = 104;
/// Messages per `recvmmsg`: 32 x 64 KiB = 2 MiB of receive buffers with GRO
/// (a full socket receive queue of 1400-byte datagrams at 212 KiB, the
/// default `rmem_default`, is ~150 datagrams: 32 per call amortises the call
/// to ~3% of its cost while keeping latency to one batch).
pub const RX_BATCH: usize = 32;
/// Receive buffer per message: the largest UDP payload (64 KiB minus headers)
/// a GRO message can carry; without GRO, one datagram.
pub const RX_BUF: usize = 65536;
/// include/linux/udp.h `UDP_MAX_SEGMENTS` (1 << 6).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Largest GSO message payload: 65535 (IP total length) - 40 (IPv6 header)
/// - 8 (UDP header), rounded down for IPv4 options room.
pub const GSO_MAX_BYTES: usize = 65000;
/// Messages per `sendmmsg` call (the kernel's `UIO_MAXIOV` is 1024).
pub const TX_MAX_MSGS: usize = 128;
/// Arena for outgoing datagrams: 512 KiB holds a full receive batch's worth
/// of re-encrypted packets before a flush is forced.
pub const TX_ARENA: usize = 512 * 1024;

/// Space for one control message with an `int` (GRO) or `u16` (GSO) payload.
const CMSG_BUF: usize = 64;

/// Turns UDP GRO on for a socket. Returns `false` if the kernel refuses.
pub fn enable_gro(fd: RawFd) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: valid fd; option value is an int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Whether the kernel accepts `UDP_SEGMENT` on this socket (probe: setting a
/// default segment size of 0 means "off" and is accepted iff GSO is known).
pub fn probe_gso(fd: RawFd) -> bool {
    let zero: libc::c_int = 0;
    // SAFETY: as above.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&zero as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in; storage is large enough.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn std_to_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Receive side: buffers for one `recvmmsg` batch.
pub struct UdpRx {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u8; CMSG_BUF]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Per received message: (source, length, segment size).
    got: Vec<(Option<SocketAddr>, usize, usize)>,
    slot: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into this
// value's own heap buffers (`bufs`, `names`, `ctrl`, `iovs`), which do not
// move when the value moves, and `recv` rewrites all of them before every
// `recvmmsg`; the value is moved whole between threads (`io::udp_readers`),
// never shared, so no pointer is used by two threads.
unsafe impl Send for UdpRx {}

impl UdpRx {
    /// Buffers for [`RX_BATCH`] messages; `gro`: whether GRO is on (each
    /// buffer then holds [`RX_BUF`] bytes, else `mtu_datagram` bytes).
    pub fn new(gro: bool, max_datagram: usize) -> UdpRx {
        let slot = if gro { RX_BUF } else { max_datagram.max(1) };
        UdpRx {
            bufs: vec![0; slot * RX_BATCH],
            // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid values.
            names: vec![unsafe { zeroed() }; RX_BATCH],
            ctrl: vec![[0; CMSG_BUF]; RX_BATCH],
            iovs: vec![unsafe { zeroed() }; RX_BATCH],
            hdrs: vec![unsafe { zeroed() }; RX_BATCH],
            got: Vec::with_capacity(RX_BATCH),
            slot,
        }
    }

    /// One `recvmmsg(MSG_DONTWAIT)`; returns how many messages arrived
    /// (`WouldBlock` when none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.got.clear();
        let base = self.bufs.as_mut_ptr();
        for i in 0..RX_BATCH {
            let (Some(iov), Some(h), Some(name), Some(ctrl)) = (
                self.iovs.get_mut(i),
                self.hdrs.get_mut(i),
                self.names.get_mut(i),
                self.ctrl.get_mut(i),
            ) else {
                break;
            };
            // SAFETY: i * slot + slot <= bufs.len().
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.slot;
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_BUF as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs points at RX_BATCH initialised mmsghdr whose buffers
        // live in self and outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RX_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(RX_BATCH);
        for i in 0..n {
            let (Some(h), Some(name)) = (self.hdrs.get(i), self.names.get(i)) else {
                break;
            };
            let len = (h.msg_len as usize).min(self.slot);
            let mut seg = len;
            // SAFETY: msg_hdr was filled by the kernel; the CMSG macros stay
            // within msg_control/msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        if v > 0 {
                            seg = v as usize;
                        }
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
            self.got.push((sockaddr_to_std(name), len, seg));
        }
        Ok(self.got.len())
    }

    /// Message `i` of the last batch: source, bytes, GRO segment size.
    pub fn message(&self, i: usize) -> Option<(SocketAddr, &[u8], usize)> {
        let &(from, len, seg) = self.got.get(i)?;
        let start = i * self.slot;
        Some((from?, self.bufs.get(start..start + len)?, seg))
    }

    /// Messages in the last batch.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Whether the last batch was empty.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

/// The datagrams a GRO message carries (`seg` bytes each, the last may be
/// shorter; `seg == 0` means one datagram).
pub fn segments(data: &[u8], seg: usize) -> std::slice::Chunks<'_, u8> {
    data.chunks(if seg == 0 { data.len().max(1) } else { seg })
}

struct TxMsg {
    to: libc::sockaddr_storage,
    to_len: libc::socklen_t,
    key: SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxReport {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams dropped by a send error.
    pub errors: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
    /// GSO was turned off during this flush (EIO/EINVAL).
    pub gso_disabled: bool,
}

/// Send side: datagrams collected during one batch.
pub struct UdpTx {
    arena: Vec<u8>,
    used: usize,
    msgs: Vec<TxMsg>,
    /// Index of the first message not yet sent (a flush interrupted by
    /// `WouldBlock` resumes here).
    next: usize,
    gso: bool,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    ctrl: Vec<[u8; CMSG_BUF]>,
}

impl UdpTx {
    /// An empty batch; `gso`: whether to glue runs with `UDP_SEGMENT`.
    pub fn new(gso: bool) -> UdpTx {
        UdpTx {
            arena: vec![0; TX_ARENA],
            used: 0,
            msgs: Vec::with_capacity(TX_MAX_MSGS),
            next: 0,
            gso,
            iovs: Vec::with_capacity(TX_MAX_MSGS),
            hdrs: Vec::with_capacity(TX_MAX_MSGS),
            ctrl: vec![[0; CMSG_BUF]; TX_MAX_MSGS],
        }
    }

    /// Whether GSO is (still) on.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Datagrams waiting.
    pub fn is_empty(&self) -> bool {
        self.next >= self.msgs.len()
    }

    /// Whether [`UdpTx::reserve`] of `need` bytes would succeed now (else
    /// flush first).
    pub fn has_room(&self, need: usize) -> bool {
        self.used + need <= self.arena.len() && self.msgs.len() < TX_MAX_MSGS
    }

    /// Writable space of `need` bytes at the end of the arena, for a
    /// datagram to be [`UdpTx::commit`]ted; `None` when full (flush first).
    pub fn reserve(&mut self, need: usize) -> Option<&mut [u8]> {
        if !self.has_room(need) {
            return None;
        }
        self.arena.get_mut(self.used..self.used + need)
    }

    /// Adds the `len` bytes just written at the start of the last
    /// [`UdpTx::reserve`] as a datagram to `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        if self.used + len > self.arena.len() || len == 0 {
            return;
        }
        let start = self.used;
        self.used += len;
        let unsent = self.next < self.msgs.len();
        if self.gso && unsent {
            if let Some(m) = self.msgs.last_mut() {
                // Glue onto the previous message: same destination, all
                // segments so far full-size, this one no larger, limits kept.
                if m.key == to
                    && m.start + m.len == start
                    && m.len == m.seg * m.count
                    && len <= m.seg
                    && m.count < GSO_MAX_SEGMENTS
                    && m.len + len <= GSO_MAX_BYTES
                {
                    m.len += len;
                    m.count += 1;
                    return;
                }
            }
        }
        let (ss, sl) = std_to_sockaddr(to);
        self.msgs.push(TxMsg {
            to: ss,
            to_len: sl,
            key: to,
            start,
            len,
            seg: len,
            count: 1,
        });
    }

    /// Adds a datagram of `len` bytes to `to` whose bytes are written later,
    /// before the next [`UdpTx::flush`] (through [`UdpTx::arena_mut`]);
    /// returns its offset in the arena, `None` when full (flush first).
    pub fn commit_later(&mut self, to: SocketAddr, len: usize) -> Option<usize> {
        if !self.has_room(len) || len == 0 {
            return None;
        }
        let at = self.used;
        self.commit(to, len);
        Some(at)
    }

    /// The arena's datagrams so far (to fill those of [`UdpTx::commit_later`]).
    pub fn arena_mut(&mut self) -> &mut [u8] {
        let used = self.used.min(self.arena.len());
        self.arena.get_mut(..used).unwrap_or_default()
    }

    /// Copies `data` in as a datagram to `to` (handshake messages and other
    /// rare outputs). Returns `false` when full (flush first).
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        match self.reserve(data.len()) {
            Some(buf) => {
                buf.copy_from_slice(data);
                self.commit(to, data.len());
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.next = 0;
        self.used = 0;
    }

    /// Splits every glued message back into single datagrams (GSO refused).
    fn unglue(&mut self) {
        let old = std::mem::take(&mut self.msgs);
        for m in old.into_iter().skip(self.next) {
            let mut off = 0;
            while off < m.len {
                let l = m.seg.min(m.len - off);
                self.msgs.push(TxMsg {
                    to: m.to,
                    to_len: m.to_len,
                    key: m.key,
                    start: m.start + off,
                    len: l,
                    seg: l,
                    count: 1,
                });
                off += l;
            }
        }
        self.next = 0;
    }

    /// Sends everything collected (`sendmmsg`, several calls if needed).
    /// `WouldBlock` means the socket buffer is full: wait for writability and
    /// call again (what was sent stays sent; the rest waits).
    pub fn flush(&mut self, fd: RawFd, report: &mut TxReport) -> io::Result<()> {
        while self.next < self.msgs.len() {
            let batch: Vec<usize> = (self.next..self.msgs.len()).take(TX_MAX_MSGS).collect();
            self.iovs.clear();
            self.hdrs.clear();
            let base = self.arena.as_mut_ptr();
            for &i in &batch {
                let Some(m) = self.msgs.get(i) else { break };
                self.iovs.push(libc::iovec {
                    // SAFETY: start + len <= used <= arena.len().
                    iov_base: unsafe { base.add(m.start) }.cast(),
                    iov_len: m.len,
                });
            }
            for (k, &i) in batch.iter().enumerate() {
                let (Some(m), Some(iov), Some(ctrl)) = (
                    self.msgs.get_mut(i),
                    self.iovs.get_mut(k),
                    self.ctrl.get_mut(k),
                ) else {
                    break;
                };
                // SAFETY: zeroed mmsghdr is valid; pointers set below.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut m.to as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = m.to_len;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                if m.count > 1 {
                    h.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE is a pure size computation.
                    let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
                    h.msg_hdr.msg_controllen = space as _;
                    // SAFETY: ctrl has CMSG_BUF >= space bytes; the header
                    // and data are written within it.
                    unsafe {
                        let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                        if !c.is_null() {
                            (*c).cmsg_level = libc::SOL_UDP;
                            (*c).cmsg_type = UDP_SEGMENT;
                            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                            std::ptr::write_unaligned(
                                libc::CMSG_DATA(c).cast::<u16>(),
                                u16::try_from(m.seg).unwrap_or(u16::MAX),
                            );
                        }
                    }
                }
                self.hdrs.push(h);
            }
            // SAFETY: hdrs/iovs/ctrl/arena/msgs stay alive and unmoved for
            // the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            report.calls += 1;
            if n < 0 {
                let e = io::Error::last_os_error();
                let first_glued = self.msgs.get(self.next).is_some_and(|m| m.count > 1);
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Err(e),
                    Some(libc::EINTR) => continue,
                    Some(libc::EIO) | Some(libc::EINVAL) if first_glued && self.gso => {
                        tracing::warn!(error = %e, "UDP GSO refused: sending datagrams one by one");
                        self.gso = false;
                        report.gso_disabled = true;
                        self.unglue();
                    }
                    _ => {
                        // the first message failed: drop it, go on
                        if let Some(m) = self.msgs.get(self.next) {
                            report.errors += m.count as u64;
                        }
                        tracing::debug!(error = %e, "UDP send");
                        self.next += 1;
                    }
                }
                continue;
            }
            let n = usize::try_from(n).unwrap_or(0);
            for m in self.msgs.iter().skip(self.next).take(n) {
                report.sent += m.count as u64;
            }
            self.next += n.max(1).min(self.msgs.len() - self.next);
            if n == 0 {
                // nothing sent yet no error: treat like a full buffer
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
        }
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn recv_all(rx: &mut UdpRx, fd: RawFd) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..50 {
            match rx.recv(fd) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, data, seg) = rx.message(i).unwrap();
                        for d in segments(data, seg) {
                            out.push((from, d.to_vec()));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !out.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn sendmmsg_recvmmsg_round_trip_with_and_without_offloads() {
        for offload in [false, true] {
            let (a, b) = pair();
            let gro = offload && enable_gro(b.as_raw_fd());
            let gso = offload && probe_gso(a.as_raw_fd());
            let mut tx = UdpTx::new(gso);
            let to = b.local_addr().unwrap();
            // 10 full-size datagrams, then a short one, then a different size
            let mut sent = Vec::new();
            for i in 0..10u8 {
                sent.push(vec![i; 1200]);
            }
            sent.push(vec![99; 300]);
            sent.push(vec![100; 1000]);
            for d in &sent {
                assert!(tx.push(to, d));
            }
            if gso {
                // 11 glued (10 x 1200 + 300), the 1000 starts a new message
                assert_eq!(tx.msgs.len(), 2);
            } else {
                assert_eq!(tx.msgs.len(), 12);
            }
            let mut rep = TxReport::default();
            tx.flush(a.as_raw_fd(), &mut rep).unwrap();
            assert_eq!(rep.sent, 12);
            assert!(tx.is_empty());
            let mut rx = UdpRx::new(gro, 1500);
            let got = recv_all(&mut rx, b.as_raw_fd());
            let from = a.local_addr().unwrap();
            assert_eq!(got.len(), 12, "offload={offload}");
            for (g, s) in got.iter().zip(&sent) {
                assert_eq!(g.0, from);
                assert_eq!(&g.1, s);
            }
        }
    }

    #[test]
    fn gso_runs_respect_destination_and_limits() {
        let mut tx = UdpTx::new(true);
        let x: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let y: SocketAddr = "192.0.2.2:1".parse().unwrap();
        for _ in 0..(GSO_MAX_SEGMENTS + 1) {
            assert!(tx.push(x, &[1; 100]));
        }
        assert!(tx.push(y, &[1; 100]));
        assert!(tx.push(y, &[1; 101])); // larger than the run's size: new message
        let counts: Vec<usize> = tx.msgs.iter().map(|m| m.count).collect();
        assert_eq!(counts, vec![GSO_MAX_SEGMENTS, 1, 1, 1]);
        tx.unglue();
        assert_eq!(tx.msgs.len(), GSO_MAX_SEGMENTS + 3);
        assert!(tx.msgs.iter().all(|m| m.count == 1 && m.len == m.seg));
    }

    #[test]
    fn send_error_drops_one_message_and_continues() {
        let (a, b) = pair();
        let mut tx = UdpTx::new(false);
        // port 0 is refused by the kernel (EINVAL): dropped, the rest goes
        assert!(tx.push("127.0.0.1:0".parse().unwrap(), b"lost"));
        assert!(tx.push(b.local_addr().unwrap(), b"kept"));
        let mut rep = TxReport::default();
        tx.flush(a.as_raw_fd(), &mut rep).unwrap();
        assert_eq!(rep.errors, 1);
        assert_eq!(rep.sent, 1);
        let mut rx = UdpRx::new(false, 1500);
        let got = recv_all(&mut rx, b.as_raw_fd());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"kept");
    }

    #[test]
    fn arena_full_asks_for_a_flush() {
        let mut tx = UdpTx::new(false);
        let x: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut n = 0;
        while tx.push(x, &[0; 60000]) {
            n += 1;
        }
        assert_eq!(n, TX_ARENA / 60000);
        assert!(tx.reserve(60000).is_none());
        tx.clear();
        assert!(tx.reserve(60000).is_some());
    }

    #[test]
    fn segments_split_gro_messages() {
        let d = [0u8; 250];
        let v: Vec<usize> = segments(&d, 100).map(<[u8]>::len).collect();
        assert_eq!(v, vec![100, 100, 50]);
        assert_eq!(segments(&d, 0).count(), 1);
    }
}
