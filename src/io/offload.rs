//! TUN offloads: the `virtio_net_hdr` framing of an `IFF_VNET_HDR` TUN, and
//! TCP and UDP coalescing (userspace GRO) of decrypted packets before they
//! are written to the TUN.
//!
//! Kernel behaviour followed (drivers/net/tun.c, include/linux/virtio_net.h,
//! include/uapi/linux/virtio_net.h):
//! - with `IFF_VNET_HDR` every read and write starts with a 10-byte
//!   `struct virtio_net_hdr` (flags, gso_type, hdr_len, gso_size, csum_start,
//!   csum_offset; host byte order, little-endian here);
//! - `TUNSETOFFLOAD` ([`enable_offloads`]) with CSUM + TSO4/6, and USO4/6
//!   where the kernel has them (Linux >= 6.2; older kernels refuse the bits
//!   with EINVAL and get TSO only): reads may then carry a partial checksum
//!   (`NEEDS_CSUM`, completed by [`complete_csum`], what
//!   `skb_checksum_help` does) or be a TCP (`gso_type` TCPV4/TCPV6) or UDP
//!   (`UDP_L4`) super-packet, cut by [`gso_segment`] into the segments the
//!   kernel's `tcp_gso_segment` / `__udp_gso_segment` would make, each with
//!   full checksums, before the pipeline. Without the offloads (or with
//!   `PORTCULLIS_NO_TSO`) only complete packets arrive; a GSO type that was
//!   not enabled is refused ([`OffloadError::GsoOnRead`]);
//! - on write, `virtio_net_hdr_to_skb` accepts a TCP super-packet with
//!   `gso_type` TCPV4/TCPV6, `gso_size` = the segments' payload size,
//!   `NEEDS_CSUM` with `csum_start` = the TCP header offset, `csum_offset` =
//!   16 and the checksum field holding the pseudo-header sum (not inverted:
//!   `~tcp_v4_check(len, s, d, 0)` in `__tcp_v4_send_check`). The kernel
//!   forwards it as one skb (a veth carries it whole) and segments it only
//!   where a device cannot (`tcp_gso_segment`, which also puts PSH on the
//!   last segment only and gives IPv4 segments consecutive IDs);
//! - on write, Linux >= 6.2 (the kernels that accept `TUN_F_USO4/6`) also
//!   takes a UDP super-packet: `gso_type` UDP_L4, `gso_size` = the
//!   datagrams' payload size, `NEEDS_CSUM` at `csum_offset` 6 with the
//!   pseudo-header sum, the UDP length covering the whole super-packet;
//!   `__udp_gso_segment` cuts it where needed (a local socket without
//!   `UDP_GRO` gets the datagrams one by one).
//!
//! Coalescing rules ([`TunTx::push`]), the kernel's `tcp_gro_receive` made
//! stricter: only the packet just before may be extended; both TCP over IPv4
//! without options (DF set, not a fragment) or IPv6 without extension
//! headers; same addresses, TOS/traffic class and flow label, TTL/hop limit,
//! ports, ACK number, window, TCP header length and option bytes; flags ACK
//! (PSH allowed and closes the run); sequence numbers contiguous; every
//! segment's payload equal to the first one's (the last may be shorter, and
//! closes the run); at most [`MAX_COALESCE`] bytes. UDP ([`Coalesce::udp`]):
//! the same IP rules (IPv4 not a fragment, DF equal), same ports, payloads
//! as for TCP, at most [`MAX_UDP_SEGMENTS`] datagrams. Anything else is
//! written as it is. Each segment has passed the pipeline (rules, conntrack, NAT)
//! before it is coalesced; WireGuard authenticated its bytes, and the kernel
//! recomputes every segment's checksum from the super-packet, so the
//! original TCP checksums are not re-verified here (wireguard-go's
//! tun/offload_linux.go makes the same choice).

use crate::packet::checksum::fill_ipv4_checksum;
use std::io;
use std::os::fd::RawFd;

/// `sizeof(struct virtio_net_hdr)` (no `num_buffers`: we never set
/// `TUNSETVNETHDRSZ`, whose default is this size).
pub const VNET_HDR_LEN: usize = 10;
/// include/uapi/linux/virtio_net.h.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// Largest super-packet: the IPv4 total-length limit (also used for IPv6,
/// whose payload-length limit is 40 bytes larger).
pub const MAX_COALESCE: usize = 65535;
/// Arena for one batch of TUN writes (a receive batch is at most 128
/// datagrams of <= 64 KiB after GRO splitting... of MTU-sized packets, so
/// 512 KiB leaves room; a full arena is flushed early).
pub const TUN_TX_ARENA: usize = 512 * 1024;

/// drivers/net/tun.c `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// include/uapi/linux/if_tun.h offload bits.
pub const TUN_F_CSUM: libc::c_uint = 0x01;
pub const TUN_F_TSO4: libc::c_uint = 0x02;
pub const TUN_F_TSO6: libc::c_uint = 0x04;
pub const TUN_F_USO4: libc::c_uint = 0x20;
pub const TUN_F_USO6: libc::c_uint = 0x40;

/// Lets the kernel hand over checksum-partial packets and TCP super-packets
/// (TSO) on reads, and UDP super-packets (USO) unless `uso` is false or the
/// kernel does not know them: [`rx_packet`] completes checksums and
/// [`gso_segment`] cuts super-packets into segments before the pipeline.
/// Returns whether USO is on.
pub fn enable_offloads(fd: RawFd, uso: bool) -> io::Result<bool> {
    let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    let set = |flags: libc::c_uint| {
        // SAFETY: TUNSETOFFLOAD takes the flags as the integer argument.
        let rc = unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if uso && set(tso | TUN_F_USO4 | TUN_F_USO6).is_ok() {
        return Ok(true);
    }
    set(tso).map(|()| false)
}

/// A super-packet from a TUN read: TCP (TSO) or UDP (USO), and the payload
/// size of its segments (`gso_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub udp: bool,
    pub size: usize,
}

/// Cuts a super-packet into its segments (see [`gso_segment`]), each built
/// in `scratch` and passed to `f`. Returns the number of segments.
pub fn split_gso(
    pkt: &[u8],
    gso: Gso,
    scratch: &mut [u8],
    mut f: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let mut i = 0;
    while let Some(len) = gso_segment(pkt, gso, i, scratch)? {
        if let Some(seg) = scratch.get_mut(..len) {
            f(seg);
        }
        i += 1;
    }
    Ok(i)
}

/// Segment `i` of a super-packet, built in `scratch`: its length, or `None`
/// past the last one. What the kernel's segmentation does: headers copied,
/// payload cut into `gso.size` bytes (the last may be shorter), IPv4 ID + i,
/// IP lengths; TCP: sequence numbers, FIN/PSH on the last segment only, CWR
/// on the first only (`tcp_gso_segment`); UDP: each segment's length
/// (`__udp_gso_segment`); IP and TCP/UDP checksums computed in full (a UDP
/// checksum of 0 is sent as 0xffff). Errors for anything but plain TCP/UDP
/// over IPv4 without options or IPv6 without extension headers, or a zero
/// segment size.
pub fn gso_segment(
    pkt: &[u8],
    gso: Gso,
    i: usize,
    scratch: &mut [u8],
) -> Result<Option<usize>, OffloadError> {
    let bad = OffloadError::BadGso;
    let proto = if gso.udp { 17 } else { 6 };
    let v6 = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.first() == Some(&0x45) && pkt.get(9) == Some(&proto) => false,
        Some(6) if pkt.get(6) == Some(&proto) => true,
        _ => return Err(bad),
    };
    let iph = if v6 { 40 } else { 20 };
    let l4h = if gso.udp {
        8
    } else {
        usize::from(pkt.get(iph + 12).ok_or(bad.clone())? >> 4) * 4
    };
    let hl = iph + l4h;
    let size = gso.size;
    let l4_min = if gso.udp { 8 } else { 20 };
    if l4h < l4_min || hl > pkt.len() || size == 0 || hl + size > scratch.len() {
        return Err(bad);
    }
    let id0 = be16(pkt, 4).ok_or(bad.clone())?;
    let (head, payload) = pkt.split_at(hl);
    let n = payload.len().div_ceil(size).max(1);
    if i >= n {
        return Ok(None);
    }
    let chunk = payload.chunks(size).nth(i).unwrap_or_default();
    let len = hl + chunk.len();
    let Some(seg) = scratch.get_mut(..len) else {
        return Err(bad);
    };
    seg[..hl].copy_from_slice(head);
    seg[hl..].copy_from_slice(chunk);
    let l4_len = len - iph;
    let csum_at = if gso.udp {
        seg[iph + 4..iph + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        iph + 6
    } else {
        let seq0 = be32(pkt, iph + 4).ok_or(bad.clone())?;
        let seq = seq0.wrapping_add((i * size) as u32);
        seg[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = seg[iph + 13];
        if i + 1 < n {
            flags &= !(0x01 | TCP_PSH); // FIN, PSH
        }
        if i > 0 {
            flags &= !0x80; // CWR
        }
        seg[iph + 13] = flags;
        iph + 16
    };
    let pseudo_rest = u64::from(proto) + l4_len as u64;
    let pseudo = if v6 {
        seg[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        sum16(&seg[8..40], pseudo_rest)
    } else {
        seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        fill_ipv4_checksum(seg);
        sum16(&seg[12..20], pseudo_rest)
    };
    seg[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum16(&seg[iph..], pseudo));
    if gso.udp && c == 0 {
        c = 0xffff;
    }
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(Some(len))
}

/// Errors of the vnet framing.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OffloadError {
    #[error(
        "super-packet from the TUN that is not plain TCP/UDP over IPv4/IPv6 or has no segment size"
    )]
    BadGso,
    #[error("TUN read shorter than the virtio_net_hdr")]
    Short,
    #[error("GSO packet from the TUN of a type that was not enabled (gso_type {0})")]
    GsoOnRead(u8),
    #[error("NEEDS_CSUM with checksum position {start}+{offset} outside the {len}-byte packet")]
    BadCsum {
        start: usize,
        offset: usize,
        len: usize,
    },
}

/// `acc` plus the RFC 1071 sum of `data` (big-endian words, an odd last byte
/// zero-padded), unfolded: the vectorized sum of `packet::checksum` (every
/// segment cut from a super-packet and every NEEDS_CSUM read is summed whole:
/// 2-byte steps made `tso_segment` 8 % of a portcullis client's CPU).
fn sum16(data: &[u8], acc: u64) -> u64 {
    acc + u64::from(crate::packet::checksum::sum(data))
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Strips the virtio_net_hdr of a TUN read and finishes a partial checksum.
/// Returns the offset of the IP packet in `buf` and, for a super-packet
/// (only after [`enable_offloads`]), its kind and segment size: cut it with
/// [`gso_segment`] (whose full checksums make the partial one irrelevant).
pub fn rx_packet(buf: &mut [u8]) -> Result<(usize, Option<Gso>), OffloadError> {
    let hdr = buf.get(..VNET_HDR_LEN).ok_or(OffloadError::Short)?;
    let (flags, gso) = (hdr[0], hdr[1] & !0x80); // 0x80: the ECN bit
    let size = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
    match gso {
        VIRTIO_NET_HDR_GSO_NONE => {}
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
            return Ok((VNET_HDR_LEN, Some(Gso { udp: false, size })));
        }
        VIRTIO_NET_HDR_GSO_UDP_L4 => {
            return Ok((VNET_HDR_LEN, Some(Gso { udp: true, size })));
        }
        g => return Err(OffloadError::GsoOnRead(g)),
    }
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
        let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
        let pkt = buf.get_mut(VNET_HDR_LEN..).ok_or(OffloadError::Short)?;
        complete_csum(pkt, start, offset)?;
    }
    Ok((VNET_HDR_LEN, None))
}

/// `skb_checksum_help`: the field at `start + offset` holds the
/// pseudo-header sum; the checksum over `pkt[start..]` (field included)
/// replaces it.
pub fn complete_csum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let len = pkt.len();
    let bad = OffloadError::BadCsum { start, offset, len };
    if start + offset + 2 > len {
        return Err(bad);
    }
    let c = !fold(sum16(pkt.get(start..).ok_or(bad)?, 0));
    if let Some(f) = pkt.get_mut(start + offset..start + offset + 2) {
        f.copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// A TCP segment or UDP datagram as far as coalescing needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    udp: bool,
    v6: bool,
    iph: usize,
    /// TCP header length; 8 for UDP.
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// Most datagrams in one UDP super-packet (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_UDP_SEGMENTS: usize = 64;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

pub(super) fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn be32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *p.get(at)?,
        *p.get(at + 1)?,
        *p.get(at + 2)?,
        *p.get(at + 3)?,
    ]))
}

/// The IP header of a packet that may join a run: IPv4 without options,
/// protocol `proto`, not a fragment (TCP: DF required), total length exact;
/// or IPv6 without extension headers, payload length exact. Returns
/// (IPv6, IP header length).
fn plain_ip(p: &[u8], proto: u8) -> Option<(bool, usize)> {
    match p.first()? >> 4 {
        4 => {
            let frag = be16(p, 6)?;
            let frag_ok = if proto == 6 {
                frag == 0x4000
            } else {
                frag & 0x3fff == 0 // neither MF nor an offset
            };
            let ok = *p.first()? == 0x45
                && *p.get(9)? == proto
                && frag_ok
                && usize::from(be16(p, 2)?) == p.len();
            ok.then_some((false, 20))
        }
        6 => {
            (*p.get(6)? == proto && usize::from(be16(p, 4)?) + 40 == p.len()).then_some((true, 40))
        }
        _ => None,
    }
}

/// A coalescable TCP segment, or `None`.
fn tcp_seg(p: &[u8]) -> Option<Seg> {
    let (v6, iph) = plain_ip(p, 6)?;
    let thl = usize::from(p.get(iph + 12)? >> 4) * 4;
    let flags = *p.get(iph + 13)?;
    if thl < 20 || iph + thl > p.len() || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
        return None;
    }
    if be16(p, iph + 18)? != 0 {
        return None; // urgent pointer
    }
    Some(Seg {
        udp: false,
        v6,
        iph,
        thl,
        seq: be32(p, iph + 4)?,
        flags,
        payload: p.len() - iph - thl,
    })
}

/// A coalescable UDP datagram (UDP length exact), or `None`.
fn udp_seg(p: &[u8]) -> Option<Seg> {
    let (v6, iph) = plain_ip(p, 17)?;
    if usize::from(be16(p, iph + 4)?) + iph != p.len() {
        return None;
    }
    Some(Seg {
        udp: true,
        v6,
        iph,
        thl: 8,
        seq: 0,
        flags: 0,
        payload: p.len() - iph - 8,
    })
}

/// Whether `b` may follow `a` (headers only; sequence and sizes are
/// checked by the caller).
fn same_flow(a: &[u8], sa: &Seg, b: &[u8], sb: &Seg) -> bool {
    if sa.udp != sb.udp || sa.v6 != sb.v6 || sa.thl != sb.thl {
        return false;
    }
    let ip_same = if sa.v6 {
        a.get(0..4) == b.get(0..4) && a.get(6..40) == b.get(6..40)
    } else {
        a.get(1) == b.get(1)
            && a.get(6..7) == b.get(6..7) // DF
            && a.get(8..10) == b.get(8..10)
            && a.get(12..20) == b.get(12..20)
    };
    let t = sa.iph;
    let ports = a.get(t..t + 4) == b.get(t..t + 4);
    if sa.udp {
        return ip_same && ports;
    }
    ip_same
        && ports
        && a.get(t + 8..t + 13) == b.get(t + 8..t + 13) // ack, data offset
        && a.get(t + 14..t + 16) == b.get(t + 14..t + 16) // window
        && a.get(t + 20..t + sa.thl) == b.get(t + 20..t + sa.thl) // options
}

struct Entry {
    start: usize,
    len: usize,
    /// Set when this entry is a TCP segment or UDP datagram others may join.
    seg: Option<Seg>,
    /// Segments in the run (1: written as it is).
    count: usize,
    /// Payload bytes in the run.
    payload: usize,
    /// The run may not grow (PSH or a short segment seen, or the UDP
    /// segment limit reached).
    closed: bool,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunTxReport {
    /// IP packets (segments) handed to the kernel.
    pub packets: u64,
    /// `write` calls.
    pub writes: u64,
    /// Of those, UDP super-packets (`gso_type` UDP_L4).
    pub uso: u64,
    pub errors: u64,
}

/// What [`TunTx`] coalesces: TCP segments (the kernel takes TCP
/// super-packets on every kernel with `IFF_VNET_HDR`) and UDP datagrams
/// (UDP_L4 super-packets: Linux >= 6.2, known by `TUN_F_USO4/6` being
/// accepted, see [`enable_offloads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coalesce {
    pub tcp: bool,
    pub udp: bool,
}

/// TUN writes collected during one batch, coalesced. See the module doc.
pub struct TunTx {
    arena: Vec<u8>,
    used: usize,
    entries: Vec<Entry>,
    coalesce: Coalesce,
}

impl TunTx {
    /// `coalesce`: which super-packets to build (with neither, every packet
    /// is written as it is, still with a virtio_net_hdr).
    pub fn new(coalesce: Coalesce) -> TunTx {
        TunTx {
            arena: vec![0; TUN_TX_ARENA],
            used: 0,
            entries: Vec::new(),
            coalesce,
        }
    }

    /// Packets waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues an IP packet. `false` when the arena is full (flush first).
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        let tcp = self.coalesce.tcp.then(|| tcp_seg(pkt)).flatten();
        let seg = tcp.or_else(|| self.coalesce.udp.then(|| udp_seg(pkt)).flatten());
        if let (Some(s), Some(last)) = (seg, self.entries.last_mut()) {
            if let Some(ls) = last.seg {
                let first = self.arena.get(last.start..last.start + last.len);
                let fits = !last.closed
                    && s.payload > 0
                    && s.payload <= ls.payload
                    && last.len + s.payload <= MAX_COALESCE
                    && if s.udp {
                        last.count < MAX_UDP_SEGMENTS
                    } else {
                        s.seq == ls.seq.wrapping_add(last.payload as u32)
                    }
                    && self.used + s.payload <= self.arena.len()
                    && first.is_some_and(|f| same_flow(f, &ls, pkt, &s));
                if fits {
                    if let (Some(dst), Some(src)) = (
                        self.arena.get_mut(self.used..self.used + s.payload),
                        pkt.get(s.iph + s.thl..),
                    ) {
                        dst.copy_from_slice(src);
                        self.used += s.payload;
                        last.len += s.payload;
                        last.payload += s.payload;
                        last.count += 1;
                        if s.flags & TCP_PSH != 0 {
                            last.closed = true;
                            if let Some(f) = self.arena.get_mut(last.start + ls.iph + 13) {
                                *f |= TCP_PSH;
                            }
                        }
                        if s.payload < ls.payload || (s.udp && last.count == MAX_UDP_SEGMENTS) {
                            last.closed = true;
                        }
                        return true;
                    }
                }
            }
        }
        let Some(dst) = self.arena.get_mut(self.used..self.used + pkt.len()) else {
            return false;
        };
        dst.copy_from_slice(pkt);
        let seg = seg.filter(|s| s.payload > 0);
        self.entries.push(Entry {
            start: self.used,
            len: pkt.len(),
            closed: seg.is_none_or(|s| s.flags & TCP_PSH != 0),
            payload: seg.map_or(0, |s| s.payload),
            seg,
            count: 1,
        });
        self.used += pkt.len();
        true
    }

    /// Fixes a run's headers and returns its virtio_net_hdr.
    fn finish(&mut self, i: usize) -> [u8; VNET_HDR_LEN] {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let Some(e) = self.entries.get(i) else {
            return hdr;
        };
        let (Some(s), true) = (e.seg, e.count > 1) else {
            return hdr;
        };
        let Some(p) = self.arena.get_mut(e.start..e.start + e.len) else {
            return hdr;
        };
        let l4_len = e.len - s.iph;
        let (proto, csum_offset) = if s.udp { (17, 6) } else { (6, 16) };
        let mut pseudo = proto + l4_len as u64;
        if s.udp {
            // the whole super-packet's UDP length (udp_rcv trims to it)
            if let Some(f) = p.get_mut(s.iph + 4..s.iph + 6) {
                f.copy_from_slice(&(l4_len as u16).to_be_bytes());
            }
        }
        if s.v6 {
            if let Some(f) = p.get_mut(4..6) {
                f.copy_from_slice(&(l4_len as u16).to_be_bytes());
            }
            pseudo = sum16(p.get(8..40).unwrap_or_default(), pseudo);
        } else {
            if let Some(f) = p.get_mut(2..4) {
                f.copy_from_slice(&(e.len as u16).to_be_bytes());
            }
            fill_ipv4_checksum(p);
            pseudo = sum16(p.get(12..20).unwrap_or_default(), pseudo);
        }
        let at = s.iph + csum_offset;
        if let Some(f) = p.get_mut(at..at + 2) {
            f.copy_from_slice(&fold(pseudo).to_be_bytes());
        }
        let gso_size = s.payload as u16;
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr[1] = match (s.udp, s.v6) {
            (true, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (false, true) => VIRTIO_NET_HDR_GSO_TCPV6,
            (false, false) => VIRTIO_NET_HDR_GSO_TCPV4,
        };
        hdr[2..4].copy_from_slice(&((s.iph + s.thl) as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&gso_size.to_le_bytes());
        hdr[6..8].copy_from_slice(&(s.iph as u16).to_le_bytes());
        hdr[8..10].copy_from_slice(&(csum_offset as u16).to_le_bytes());
        hdr
    }

    /// Writes everything (one `writev` per packet or super-packet: a TUN
    /// takes one packet per write). A failed write drops that packet.
    pub fn flush(&mut self, fd: RawFd, rep: &mut TunTxReport) {
        for i in 0..self.entries.len() {
            let hdr = self.finish(i);
            let Some(e) = self.entries.get(i) else { break };
            let Some(p) = self.arena.get(e.start..e.start + e.len) else {
                continue;
            };
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                },
            ];
            // SAFETY: both iovecs point at live buffers of the given sizes.
            let rc = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            rep.writes += 1;
            if rc < 0 {
                rep.errors += e.count as u64;
                tracing::debug!(error = %io::Error::last_os_error(), len = p.len(), "TUN write");
            } else {
                rep.packets += e.count as u64;
                if hdr[1] == VIRTIO_NET_HDR_GSO_UDP_L4 {
                    rep.uso += 1;
                }
            }
        }
        self.entries.clear();
        self.used = 0;
    }

    /// The queued packets with their virtio_net_hdr (tests).
    #[cfg(test)]
    fn take(&mut self) -> Vec<([u8; VNET_HDR_LEN], Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            let hdr = self.finish(i);
            let e = &self.entries[i];
            out.push((hdr, self.arena[e.start..e.start + e.len].to_vec()));
        }
        self.entries.clear();
        self.used = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const TCP: Coalesce = Coalesce {
        tcp: true,
        udp: false,
    };
    const BOTH: Coalesce = Coalesce {
        tcp: true,
        udp: true,
    };

    fn seg4(seq: u32, payload: &[u8], psh: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, seq, 500)
            .ack(77);
        if psh {
            b = b.psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v[6] = 0x40; // DF (etherparse leaves it clear)
        fill_ipv4_checksum(&mut v);
        v
    }

    fn seg6(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv6([0x20; 16], [0x21; 16], 64)
            .tcp(1000, 80, seq, 500)
            .ack(77)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    /// What the kernel's tcp_gso_segment would produce: split the payload,
    /// copy the headers, fix lengths, sequence numbers, PSH and checksums.
    fn resegment(hdr: &[u8; VNET_HDR_LEN], p: &[u8]) -> Vec<Vec<u8>> {
        let hl = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
        let gs = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
        let iph = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
        let v6 = hdr[1] == VIRTIO_NET_HDR_GSO_TCPV6;
        let seq0 = be32(p, iph + 4).unwrap();
        let chunks: Vec<&[u8]> = p[hl..].chunks(gs).collect();
        let n = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = p[..hl].to_vec();
                s.extend_from_slice(c);
                let seq = seq0.wrapping_add((i * gs) as u32);
                s[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < n {
                    s[iph + 13] &= !TCP_PSH;
                }
                let l = s.len();
                if v6 {
                    s[4..6].copy_from_slice(&((l - 40) as u16).to_be_bytes());
                } else {
                    s[2..4].copy_from_slice(&(l as u16).to_be_bytes());
                    fill_ipv4_checksum(&mut s);
                }
                // pseudo-header sum for this length, then complete
                let tl = (l - iph) as u64;
                let addrs = if v6 { &s[8..40] } else { &s[12..20] };
                let ps = fold(sum16(addrs, 6 + tl));
                s[iph + 16..iph + 18].copy_from_slice(&ps.to_be_bytes());
                complete_csum(&mut s, iph, 16).unwrap();
                s
            })
            .collect()
    }

    #[test]
    fn contiguous_segments_coalesce_and_resegment_to_the_originals() {
        let mut tx = TunTx::new(TCP);
        let pay: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000]).collect();
        let mut orig = Vec::new();
        for (i, p) in pay.iter().enumerate() {
            let s = seg4(7000 + 1000 * i as u32, p, i == 4);
            assert!(tx.push(&s));
            orig.push(s);
        }
        let out = tx.take();
        assert_eq!(out.len(), 1);
        let (hdr, sp) = &out[0];
        assert_eq!(hdr[1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(sp.len(), 20 + 20 + 5000);
        // the super-packet's IPv4 header checksum is valid
        assert_eq!(fold(sum16(&sp[..20], 0)), 0xffff);
        let re = resegment(hdr, sp);
        assert_eq!(re, orig);
    }

    #[test]
    fn ipv6_short_last_segment_closes_the_run() {
        let mut tx = TunTx::new(TCP);
        let a = seg6(1, &[1; 1200]);
        let b = seg6(1201, &[2; 1200]);
        let c = seg6(2401, &[3; 100]);
        let d = seg6(2501, &[4; 100]);
        for p in [&a, &b, &c, &d] {
            assert!(tx.push(p));
        }
        let out = tx.take();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0[1], VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!(resegment(&out[0].0, &out[0].1), vec![a, b, c]);
        assert_eq!(out[1].0, [0; VNET_HDR_LEN]);
        assert_eq!(out[1].1, d);
    }

    /// Queues `pkts` and checks that each is written on its own.
    fn none_coalesced(tx: &mut TunTx, pkts: &[&Vec<u8>]) -> Vec<([u8; VNET_HDR_LEN], Vec<u8>)> {
        for p in pkts {
            assert!(tx.push(p));
        }
        let out = tx.take();
        assert_eq!(out.len(), pkts.len());
        assert!(out.iter().all(|(h, _)| *h == [0; VNET_HDR_LEN]));
        out
    }

    #[test]
    fn gaps_other_flows_and_flags_are_not_coalesced() {
        let mut tx = TunTx::new(TCP);
        let a = seg4(1, &[1; 500], false);
        let gap = seg4(1000, &[1; 500], false); // seq 501 expected
        let mut other_ack = seg4(1500, &[1; 500], false);
        other_ack[20 + 8..20 + 12].copy_from_slice(&99u32.to_be_bytes());
        let mut syn = seg4(2000, &[], false);
        syn[20 + 13] = 0x02;
        let out = none_coalesced(&mut tx, &[&a, &gap, &other_ack, &syn]);
        assert_eq!(out[1].1, gap);
        // off: never coalesced
        let mut tx = TunTx::new(Coalesce::default());
        assert!(tx.push(&seg4(1, &[1; 500], false)));
        assert!(tx.push(&seg4(501, &[1; 500], false)));
        assert_eq!(tx.take().len(), 2);
    }

    #[test]
    fn coalescing_stops_at_the_size_limit() {
        let mut tx = TunTx::new(TCP);
        let mut seq = 0u32;
        for _ in 0..60 {
            assert!(tx.push(&seg4(seq, &[7; 1400], false)));
            seq += 1400;
        }
        let out = tx.take();
        assert!(out.len() >= 2);
        assert!(out.iter().all(|(_, p)| p.len() <= MAX_COALESCE));
        let total: usize = out.iter().map(|(h, p)| resegment_len(h, p)).sum();
        assert_eq!(total, 60);
    }

    #[test]
    fn split_tso_equals_the_original_segments_v4_and_v6() {
        // coalesce with our own TunTx (tested against the kernel's rules
        // above), then split: the originals come back, checksums included
        for v6 in [false, true] {
            let mut tx = TunTx::new(TCP);
            let mut orig = Vec::new();
            for i in 0..4u32 {
                let pay = vec![i as u8; if i == 3 { 333 } else { 1000 }];
                let s = if v6 {
                    seg6(10 + 1000 * i, &pay)
                } else {
                    seg4(10 + 1000 * i, &pay, i == 3)
                };
                assert!(tx.push(&s));
                orig.push(s);
            }
            let out = tx.take();
            assert_eq!(out.len(), 1);
            let mut scratch = vec![0u8; 65535];
            let mut got = Vec::new();
            let tcp = Gso {
                udp: false,
                size: 1000,
            };
            let n = split_gso(&out[0].1, tcp, &mut scratch, |s| got.push(s.to_vec())).unwrap();
            assert_eq!(n, 4);
            if !v6 {
                // IPv4 IDs become consecutive (tcp_gso_segment): the
                // originals all had ID 0 from etherparse
                for (i, g) in got.iter_mut().enumerate() {
                    assert_eq!(be16(g, 4), Some(i as u16));
                    g[4..6].copy_from_slice(&[0, 0]);
                    fill_ipv4_checksum(g);
                }
            }
            assert_eq!(got, orig, "v6={v6}");
        }
        let mut scratch = vec![0u8; 100];
        let tcp = |size| Gso { udp: false, size };
        assert_eq!(
            split_gso(&[0x45, 0], tcp(10), &mut scratch, |_| {}),
            Err(OffloadError::BadGso)
        );
        let s = seg4(1, &[0; 500], false);
        assert_eq!(
            split_gso(&s, tcp(0), &mut scratch, |_| {}),
            Err(OffloadError::BadGso)
        );
        // a TCP packet is no UDP super-packet, and the other way round
        let udp = Gso {
            udp: true,
            size: 100,
        };
        assert_eq!(
            split_gso(&s, udp, &mut scratch, |_| {}),
            Err(OffloadError::BadGso)
        );
    }

    /// A UDP datagram built by etherparse (checksums computed by it), with
    /// IPv4 ID `id`.
    fn udp_dgram(v6: bool, id: u16, payload: &[u8]) -> Vec<u8> {
        let b = if v6 {
            PacketBuilder::ipv6([0x20; 16], [0x21; 16], 64)
        } else {
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut v = Vec::new();
        b.udp(4433, 5353).write(&mut v, payload).unwrap();
        if !v6 {
            v[4..6].copy_from_slice(&id.to_be_bytes());
            fill_ipv4_checksum(&mut v);
        }
        v
    }

    #[test]
    fn split_uso_gives_the_datagrams_a_udp_segment_sender_wrote() {
        // a UDP_SEGMENT sender's 3,500 bytes with gso_size 1,200 leave as
        // three datagrams of 1,200, 1,200 and 1,100 bytes, each a complete
        // UDP datagram with its own length and checksum (IPv4: IDs + i)
        let payload: Vec<u8> = (0..3500u32).map(|i| (i * 7 + 3) as u8).collect();
        for v6 in [false, true] {
            let mut sp = udp_dgram(v6, 41, &payload);
            // the super-packet's UDP checksum is partial in a real read:
            // scribble on it, it must not matter
            let iph = if v6 { 40 } else { 20 };
            sp[iph + 6..iph + 8].copy_from_slice(&[0xab, 0xcd]);
            let mut scratch = vec![0u8; 65535];
            let mut got = Vec::new();
            let udp = Gso {
                udp: true,
                size: 1200,
            };
            let n = split_gso(&sp, udp, &mut scratch, |s| got.push(s.to_vec())).unwrap();
            assert_eq!(n, 3, "v6={v6}");
            let want: Vec<Vec<u8>> = payload
                .chunks(1200)
                .enumerate()
                .map(|(i, c)| udp_dgram(v6, 41 + i as u16, c))
                .collect();
            assert_eq!(got, want, "v6={v6}");
        }
        // a checksum that computes to zero is sent as 0xffff (RFC 768): put
        // the checksum of the all-zero segment into its last two bytes
        let mut scratch = vec![0u8; 2000];
        let udp = Gso {
            udp: true,
            size: 20,
        };
        let mut c0 = [0u8; 2];
        split_gso(&udp_dgram(false, 0, &[0; 20]), udp, &mut scratch, |s| {
            c0.copy_from_slice(&s[26..28]);
        })
        .unwrap();
        let mut pay = [0u8; 20];
        pay[18..].copy_from_slice(&c0);
        let mut got = Vec::new();
        split_gso(&udp_dgram(false, 0, &pay), udp, &mut scratch, |s| {
            got.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(&got[0][26..28], &[0xff, 0xff]);
        // and it verifies: the sum over pseudo-header and datagram is 0xffff
        let g = &got[0];
        assert_eq!(fold(sum16(&g[20..], sum16(&g[12..20], 17 + 28))), 0xffff);
    }

    /// Cuts a written super-packet the way the kernel will (our own
    /// `gso_segment` follows `__udp_gso_segment`, tested above).
    fn split_written(hdr: &[u8; VNET_HDR_LEN], sp: &[u8]) -> Vec<Vec<u8>> {
        let gso = Gso {
            udp: hdr[1] == VIRTIO_NET_HDR_GSO_UDP_L4,
            size: usize::from(u16::from_le_bytes([hdr[4], hdr[5]])),
        };
        let mut scratch = vec![0u8; 65535];
        let mut got = Vec::new();
        split_gso(sp, gso, &mut scratch, |s| got.push(s.to_vec())).unwrap();
        got
    }

    #[test]
    fn udp_datagrams_coalesce_into_a_uso_super_packet_v4_and_v6() {
        for v6 in [false, true] {
            let mut tx = TunTx::new(BOTH);
            let orig: Vec<Vec<u8>> = (0..5u16)
                .map(|i| {
                    let n = if i == 4 { 300 } else { 1200 };
                    let pay: Vec<u8> = (0..n).map(|b| (b as u16 * 3 + i) as u8).collect();
                    udp_dgram(v6, 100 + i, &pay)
                })
                .collect();
            for d in &orig {
                assert!(tx.push(d));
            }
            let out = tx.take();
            assert_eq!(out.len(), 1, "v6={v6}");
            let (hdr, sp) = &out[0];
            let iph = if v6 { 40 } else { 20 };
            assert_eq!(hdr[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
            assert_eq!(hdr[1], VIRTIO_NET_HDR_GSO_UDP_L4);
            assert_eq!(u16::from_le_bytes([hdr[2], hdr[3]]), iph as u16 + 8);
            assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1200);
            assert_eq!(u16::from_le_bytes([hdr[6], hdr[7]]), iph as u16);
            assert_eq!(u16::from_le_bytes([hdr[8], hdr[9]]), 6);
            assert_eq!(sp.len(), iph + 8 + 4 * 1200 + 300);
            // the UDP length covers the whole super-packet (udp_rcv trims
            // to it) and the checksum field holds the pseudo-header sum
            assert_eq!(be16(sp, iph + 4), Some((sp.len() - iph) as u16));
            let addrs = if v6 { &sp[8..40] } else { &sp[12..20] };
            let ps = fold(sum16(addrs, 17 + (sp.len() - iph) as u64));
            assert_eq!(be16(sp, iph + 6), Some(ps));
            if !v6 {
                assert_eq!(fold(sum16(&sp[..20], 0)), 0xffff);
            }
            // the kernel's segmentation gives the datagrams back (IPv4 IDs
            // from the first + i, as the originals had)
            assert_eq!(split_written(hdr, sp), orig, "v6={v6}");
        }
    }

    #[test]
    fn udp_runs_break_on_flow_size_fragments_and_the_segment_limit() {
        let a = udp_dgram(false, 1, &[1; 500]);
        let bigger = udp_dgram(false, 2, &[1; 600]); // larger than the first
        let mut other_port = udp_dgram(false, 3, &[1; 500]);
        other_port[21] ^= 1;
        other_port[26..28].copy_from_slice(&[0, 0]); // checksum off: still valid
        let mut frag = udp_dgram(false, 4, &[1; 500]);
        frag[6] = 0x20; // MF
        fill_ipv4_checksum(&mut frag);
        let mut tx = TunTx::new(BOTH);
        let out = none_coalesced(&mut tx, &[&a, &bigger, &other_port, &frag]);
        assert_eq!(out[3].1, frag);
        // TCP only: UDP is written as it is
        let mut tx = TunTx::new(TCP);
        assert!(tx.push(&udp_dgram(true, 0, &[1; 100])));
        assert!(tx.push(&udp_dgram(true, 0, &[1; 100])));
        assert_eq!(tx.take().len(), 2);
        // at most MAX_UDP_SEGMENTS datagrams per super-packet
        let mut tx = TunTx::new(BOTH);
        for i in 0..(MAX_UDP_SEGMENTS as u16 + 6) {
            assert!(tx.push(&udp_dgram(false, i, &[9; 100])));
        }
        let out = tx.take();
        assert_eq!(out.len(), 2);
        assert_eq!(split_written(&out[0].0, &out[0].1).len(), MAX_UDP_SEGMENTS);
        assert_eq!(split_written(&out[1].0, &out[1].1).len(), 6);
    }

    /// A packet of flow `flow` (source port 1000 + flow) of one of four
    /// kinds (TCP or UDP, IPv4 or IPv6); `n` is its number in the flow (IPv4
    /// ID; TCP: the sequence number is `seq`).
    fn flow_pkt(kind: u8, flow: u16, n: u16, seq: u32, psh: bool, payload: &[u8]) -> Vec<u8> {
        let v6 = kind % 2 == 1;
        let b = if v6 {
            PacketBuilder::ipv6([0x20; 16], [0x21; 16], 64)
        } else {
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut v = Vec::new();
        if kind < 2 {
            let mut t = b.tcp(1000 + flow, 80, seq, 500).ack(77);
            if psh {
                t = t.psh();
            }
            t.write(&mut v, payload).unwrap();
        } else {
            b.udp(1000 + flow, 53).write(&mut v, payload).unwrap();
        }
        if !v6 {
            v[4..6].copy_from_slice(&n.to_be_bytes());
            if kind == 0 {
                v[6] = 0x40; // DF
            }
            fill_ipv4_checksum(&mut v);
        }
        v
    }

    proptest::proptest! {
        /// Whatever interleaving of flows, kinds, sizes and PSH flags is
        /// queued, the kernel's segmentation of what is written gives back
        /// exactly the queued packets, in order: nothing lost, reordered or
        /// changed by coalescing.
        #[test]
        fn coalescing_then_segmenting_is_the_identity(
            script in proptest::collection::vec(
                (0u8..4, 0u16..2, proptest::sample::select(vec![0usize, 40, 300, 300, 300, 1200]), proptest::bool::weighted(0.1)),
                1..80,
            )
        ) {
            let mut tx = TunTx::new(BOTH);
            let mut next: std::collections::HashMap<(u8, u16), (u16, u32)> = Default::default();
            let mut want = Vec::new();
            for (kind, flow, len, psh) in script {
                let (n, seq) = next.entry((kind, flow)).or_insert((0, 1));
                let payload: Vec<u8> = (0..len).map(|i| (i as u32 + *seq) as u8).collect();
                let p = flow_pkt(kind, flow, *n, *seq, psh, &payload);
                *n = n.wrapping_add(1);
                *seq = seq.wrapping_add(len as u32);
                proptest::prop_assert!(tx.push(&p));
                want.push(p);
            }
            let mut got = Vec::new();
            for (hdr, p) in tx.take() {
                if hdr == [0; VNET_HDR_LEN] {
                    got.push(p);
                } else {
                    got.extend(split_written(&hdr, &p));
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    fn resegment_len(h: &[u8; VNET_HDR_LEN], p: &[u8]) -> usize {
        if h[1] == 0 {
            1
        } else {
            resegment(h, p).len()
        }
    }

    #[test]
    fn rx_strips_header_and_completes_partial_checksum() {
        let s = seg4(5, &[9; 300], false);
        let want = s.clone();
        let mut partial = s.clone();
        let ps = fold(sum16(&partial[12..20], 6 + (partial.len() - 20) as u64));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        let mut buf = vec![VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 0, 0, 20, 0, 16, 0];
        buf.extend_from_slice(&partial);
        assert_eq!(rx_packet(&mut buf), Ok((VNET_HDR_LEN, None)));
        assert_eq!(&buf[VNET_HDR_LEN..], &want[..]);
        let mut gso = vec![0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0xb4, 0x05, 0, 0, 0, 0];
        let tcp = Gso {
            udp: false,
            size: 1460,
        };
        assert_eq!(rx_packet(&mut gso), Ok((VNET_HDR_LEN, Some(tcp))));
        let mut uso = vec![0, VIRTIO_NET_HDR_GSO_UDP_L4, 0, 0, 0xb0, 0x04, 0, 0, 0, 0];
        let udp = Gso {
            udp: true,
            size: 1200,
        };
        assert_eq!(rx_packet(&mut uso), Ok((VNET_HDR_LEN, Some(udp))));
        let mut udp = vec![0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(rx_packet(&mut udp), Err(OffloadError::GsoOnRead(3)));
        assert_eq!(rx_packet(&mut [0; 3]), Err(OffloadError::Short));
        let mut bad = vec![
            VIRTIO_NET_HDR_F_NEEDS_CSUM,
            0,
            0,
            0,
            0,
            0,
            200,
            0,
            16,
            0,
            1,
            2,
        ];
        assert!(matches!(
            rx_packet(&mut bad),
            Err(OffloadError::BadCsum { .. })
        ));
    }
}
