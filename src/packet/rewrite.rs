//! In-place rewrite of addresses, ports and ICMP ids with incremental checksum
//! updates (RFC 1624 eqn. 3), for NAT.
//!
//! Contract: every function takes the buffer and the [`PacketMeta`] that
//! [`parse`](super::parse()) returned for it, checks every offset before it
//! writes anything (a failed call leaves the buffer untouched), keeps `meta`
//! in step with the bytes, and never allocates or panics.
//!
//! Checksums kept valid:
//! - the IPv4 header checksum on any IPv4 address change;
//! - the transport checksum when its pseudo-header or covered fields change:
//!   TCP, UDP (IPv4 UDP checksum 0 = "none" stays 0; a computed 0 is sent as
//!   0xffff, RFC 768), ICMPv6 (pseudo-header, RFC 4443 2.3); ICMPv4 has no
//!   pseudo-header so address changes leave it alone.
//!
//! Fragments: an address rewrite of a non-first fragment (`L4::Other`) only
//! touches the IP header: the transport checksum lives in the first fragment,
//! whose rewrite applies the pseudo-header change for the whole datagram.
//! Ports and ICMP ids exist only in first fragments (and unfragmented packets).
//!
//! ICMP errors (`set_inner_*`): the quoted packet is rewritten the way Linux
//! `nf_nat_icmp_reply_translation` does: the inner address/port, the inner IPv4
//! header checksum, and the inner transport checksum *when its field lies within
//! the quote* (UDP and ICMP always do with an 8-byte quote, TCP's only when at
//! least 18 bytes of it are quoted; IPv4 UDP checksum 0 stays 0); then the outer
//! ICMP/ICMPv6 checksum is updated for every 16-bit word that changed.
//! For a quoted ICMP echo, `set_inner_sport` rewrites the echo id (and the
//! quoted ICMP checksum); `set_inner_dport` is `NoPorts`.

use std::net::IpAddr;

use super::checksum::{update_addr, update_bytes, update_u16};
use super::parse::{for_each_tcp_option, parse_inner_at, tcp_opt};
use super::{proto, tcp_flags, IcmpInfo, PacketMeta, L4};

/// Why a rewrite was refused (the buffer is left untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("address family does not match the packet")]
    FamilyMismatch,
    #[error("packet has no ports (not TCP/UDP, or a non-first fragment)")]
    NoPorts,
    #[error("packet is not an ICMP echo request/reply")]
    NotEcho,
    #[error("packet is not an ICMP error with a parsed quoted header")]
    NoInner,
    #[error("buffer shorter than the parsed packet")]
    Truncated,
}

type R<T> = Result<T, RewriteError>;

fn rd16(buf: &[u8], at: usize) -> R<u16> {
    let s = buf.get(at..at + 2).ok_or(RewriteError::Truncated)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn wr(buf: &mut [u8], at: usize, bytes: &[u8]) -> R<()> {
    buf.get_mut(at..at + bytes.len())
        .ok_or(RewriteError::Truncated)?
        .copy_from_slice(bytes);
    Ok(())
}

fn addr_bytes(a: &IpAddr) -> ([u8; 16], usize) {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            (b, 4)
        }
        IpAddr::V6(v) => (v.octets(), 16),
    }
}

/// How a transport checksum treats zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsumKind {
    Plain,
    /// UDP: over IPv4, 0 = no checksum (leave it); a result of 0 is sent as 0xffff.
    Udp {
        v4: bool,
    },
}

/// Position of the transport checksum field of an L4 header at `l4` and
/// whether it covers the IP addresses (pseudo-header).
fn l4_csum(proto_: u8, v6: bool, l4: usize) -> Option<(usize, CsumKind, bool)> {
    match (proto_, v6) {
        (proto::TCP, _) => Some((l4 + 16, CsumKind::Plain, true)),
        (proto::UDP, v6) => Some((l4 + 6, CsumKind::Udp { v4: !v6 }, true)),
        (proto::ICMP, false) => Some((l4 + 2, CsumKind::Plain, false)),
        (proto::ICMPV6, true) => Some((l4 + 2, CsumKind::Plain, true)),
        _ => None,
    }
}

/// Applies `f` to the checksum at `at` honouring `kind`; returns the (old, new) field.
fn csum_new(old: u16, kind: CsumKind, f: impl FnOnce(u16) -> u16) -> u16 {
    match kind {
        CsumKind::Udp { v4: true } if old == 0 => 0,
        CsumKind::Udp { .. } => match f(old) {
            0 => 0xffff,
            c => c,
        },
        CsumKind::Plain => f(old),
    }
}

fn outer_l4_csum(meta: &PacketMeta) -> Option<(usize, CsumKind, bool)> {
    if matches!(meta.l4, L4::Other) {
        return None;
    }
    l4_csum(meta.proto, meta.is_v6(), usize::from(meta.l4_offset))
}

fn set_addr(buf: &mut [u8], meta: &mut PacketMeta, addr: IpAddr, src: bool) -> R<()> {
    let old = if src { meta.src } else { meta.dst };
    if old.is_ipv4() != addr.is_ipv4() {
        return Err(RewriteError::FamilyMismatch);
    }
    if buf.len() < usize::from(meta.total_len) {
        return Err(RewriteError::Truncated);
    }
    let (pos, ip_csum) = match (addr, src) {
        (IpAddr::V4(_), true) => (12, Some(10)),
        (IpAddr::V4(_), false) => (16, Some(10)),
        (IpAddr::V6(_), true) => (8, None),
        (IpAddr::V6(_), false) => (24, None),
    };
    // Compute everything first, then write (no partial rewrites).
    let new_ip_csum = match ip_csum {
        Some(at) => Some((at, update_addr(rd16(buf, at)?, old, addr))),
        None => None,
    };
    let new_l4 = match outer_l4_csum(meta) {
        Some((at, kind, true)) => {
            let c = rd16(buf, at)?;
            Some((at, csum_new(c, kind, |c| update_addr(c, old, addr))))
        }
        _ => None,
    };
    let (bytes, n) = addr_bytes(&addr);
    wr(buf, pos, &bytes[..n])?;
    if let Some((at, c)) = new_ip_csum {
        wr(buf, at, &c.to_be_bytes())?;
    }
    if let Some((at, c)) = new_l4 {
        wr(buf, at, &c.to_be_bytes())?;
    }
    if src {
        meta.src = addr;
    } else {
        meta.dst = addr;
    }
    Ok(())
}

/// Rewrites the source address (and the checksums that cover it).
pub fn set_src(buf: &mut [u8], meta: &mut PacketMeta, addr: IpAddr) -> Result<(), RewriteError> {
    set_addr(buf, meta, addr, true)
}

/// Rewrites the destination address (and the checksums that cover it).
pub fn set_dst(buf: &mut [u8], meta: &mut PacketMeta, addr: IpAddr) -> Result<(), RewriteError> {
    set_addr(buf, meta, addr, false)
}

fn set_port(buf: &mut [u8], meta: &mut PacketMeta, port: u16, src: bool) -> R<()> {
    let l4 = usize::from(meta.l4_offset);
    let at = if src { l4 } else { l4 + 2 };
    let (csum_at, kind) = match meta.l4 {
        L4::Tcp(_) => (l4 + 16, CsumKind::Plain),
        L4::Udp { .. } => (l4 + 6, CsumKind::Udp { v4: !meta.is_v6() }),
        _ => return Err(RewriteError::NoPorts),
    };
    let old = rd16(buf, at)?;
    let c = csum_new(rd16(buf, csum_at)?, kind, |c| update_u16(c, old, port));
    wr(buf, at, &port.to_be_bytes())?;
    wr(buf, csum_at, &c.to_be_bytes())?;
    match &mut meta.l4 {
        L4::Tcp(t) if src => t.sport = port,
        L4::Tcp(t) => t.dport = port,
        L4::Udp { sport, .. } if src => *sport = port,
        L4::Udp { dport, .. } => *dport = port,
        _ => {}
    }
    Ok(())
}

/// Rewrites the TCP/UDP source port.
pub fn set_sport(buf: &mut [u8], meta: &mut PacketMeta, port: u16) -> Result<(), RewriteError> {
    set_port(buf, meta, port, true)
}

/// Rewrites the TCP/UDP destination port.
pub fn set_dport(buf: &mut [u8], meta: &mut PacketMeta, port: u16) -> Result<(), RewriteError> {
    set_port(buf, meta, port, false)
}

/// Rewrites the identifier of an ICMP/ICMPv6 echo request or reply.
pub fn set_icmp_echo_id(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    id: u16,
) -> Result<(), RewriteError> {
    let L4::Icmp(IcmpInfo {
        echo_id: Some(_), ..
    }) = meta.l4
    else {
        return Err(RewriteError::NotEcho);
    };
    let l4 = usize::from(meta.l4_offset);
    let old = rd16(buf, l4 + 4)?;
    let c = update_u16(rd16(buf, l4 + 2)?, old, id);
    wr(buf, l4 + 4, &id.to_be_bytes())?;
    wr(buf, l4 + 2, &c.to_be_bytes())?;
    if let L4::Icmp(i) = &mut meta.l4 {
        i.echo_id = Some(id);
    }
    Ok(())
}

/// A batch of word-aligned writes inside an ICMP error message that keeps the
/// outer ICMP checksum in step. Writes are staged and only applied by `commit`
/// once every position has been checked.
struct IcmpEdit {
    outer_csum_at: usize,
    outer_csum: u16,
    writes: [(usize, [u8; 16], usize); 4],
    n: usize,
}

impl IcmpEdit {
    fn new(buf: &[u8], outer_csum_at: usize) -> R<Self> {
        Ok(IcmpEdit {
            outer_csum_at,
            outer_csum: rd16(buf, outer_csum_at)?,
            writes: [(0, [0; 16], 0); 4],
            n: 0,
        })
    }

    /// Stages `new` at `at` (must be in bounds of `lim`), updating the outer checksum.
    fn stage(&mut self, buf: &[u8], lim: usize, at: usize, new: &[u8]) -> R<()> {
        if at + new.len() > lim || new.len() > 16 {
            return Err(RewriteError::Truncated);
        }
        let old = buf.get(at..at + new.len()).ok_or(RewriteError::Truncated)?;
        self.outer_csum = update_bytes(self.outer_csum, old, new);
        let slot = self.writes.get_mut(self.n).ok_or(RewriteError::Truncated)?;
        slot.0 = at;
        slot.1[..new.len()].copy_from_slice(new);
        slot.2 = new.len();
        self.n += 1;
        Ok(())
    }

    fn commit(self, buf: &mut [u8]) -> R<()> {
        for (at, bytes, n) in self.writes.iter().take(self.n) {
            wr(buf, *at, &bytes[..*n])?;
        }
        wr(buf, self.outer_csum_at, &self.outer_csum.to_be_bytes())
    }
}

/// Locates the quoted packet of an ICMP error: (inner IP offset, inner L4
/// offset, non-first fragment, end of the outer packet).
fn inner_layout(buf: &[u8], meta: &PacketMeta) -> R<(usize, usize, bool, usize)> {
    let L4::Icmp(IcmpInfo {
        inner: Some(ih), ..
    }) = meta.l4
    else {
        return Err(RewriteError::NoInner);
    };
    let end = usize::from(meta.total_len);
    let io = usize::from(ih.offset);
    let quote = buf.get(io..end).ok_or(RewriteError::Truncated)?;
    let (_, l4rel, nonfirst) = parse_inner_at(quote, meta.is_v6()).ok_or(RewriteError::NoInner)?;
    Ok((io, io + l4rel, nonfirst, end))
}

fn set_inner_addr(buf: &mut [u8], meta: &mut PacketMeta, addr: IpAddr, src: bool) -> R<()> {
    let (io, il4, nonfirst, end) = inner_layout(buf, meta)?;
    let L4::Icmp(IcmpInfo {
        inner: Some(ih), ..
    }) = meta.l4
    else {
        return Err(RewriteError::NoInner);
    };
    let old = if src { ih.src } else { ih.dst };
    if old.is_ipv4() != addr.is_ipv4() {
        return Err(RewriteError::FamilyMismatch);
    }
    let mut e = IcmpEdit::new(buf, usize::from(meta.l4_offset) + 2)?;
    let (bytes, n) = addr_bytes(&addr);
    let pos = match (addr.is_ipv4(), src) {
        (true, true) => io + 12,
        (true, false) => io + 16,
        (false, true) => io + 8,
        (false, false) => io + 24,
    };
    e.stage(buf, end, pos, &bytes[..n])?;
    if addr.is_ipv4() {
        let c = update_addr(rd16(buf, io + 10)?, old, addr);
        e.stage(buf, end, io + 10, &c.to_be_bytes())?;
    }
    if !nonfirst {
        if let Some((at, kind, true)) = l4_csum(ih.proto, meta.is_v6(), il4) {
            if at + 2 <= end {
                let c0 = rd16(buf, at)?;
                let c = csum_new(c0, kind, |c| update_addr(c, old, addr));
                e.stage(buf, end, at, &c.to_be_bytes())?;
            }
        }
    }
    e.commit(buf)?;
    if let L4::Icmp(IcmpInfo { inner: Some(h), .. }) = &mut meta.l4 {
        if src {
            h.src = addr;
        } else {
            h.dst = addr;
        }
    }
    Ok(())
}

fn set_inner_port(buf: &mut [u8], meta: &mut PacketMeta, port: u16, src: bool) -> R<()> {
    let (_, il4, nonfirst, end) = inner_layout(buf, meta)?;
    let L4::Icmp(IcmpInfo {
        inner: Some(ih), ..
    }) = meta.l4
    else {
        return Err(RewriteError::NoInner);
    };
    if nonfirst {
        return Err(RewriteError::NoPorts);
    }
    let v6 = meta.is_v6();
    let icmp_inner = matches!((ih.proto, v6), (proto::ICMP, false) | (proto::ICMPV6, true));
    let (at, csum) = match ih.proto {
        proto::TCP | proto::UDP => (if src { il4 } else { il4 + 2 }, l4_csum(ih.proto, v6, il4)),
        _ if icmp_inner && src => {
            let ty = buf.get(il4).copied().ok_or(RewriteError::Truncated)?;
            if !matches!(ty, 0 | 8 | 128 | 129) {
                return Err(RewriteError::NoPorts);
            }
            (il4 + 4, l4_csum(ih.proto, v6, il4))
        }
        _ => return Err(RewriteError::NoPorts),
    };
    let mut e = IcmpEdit::new(buf, usize::from(meta.l4_offset) + 2)?;
    let old = rd16(buf, at)?;
    e.stage(buf, end, at, &port.to_be_bytes())?;
    if let Some((cat, kind, _)) = csum {
        if cat + 2 <= end {
            let c = csum_new(rd16(buf, cat)?, kind, |c| update_u16(c, old, port));
            e.stage(buf, end, cat, &c.to_be_bytes())?;
        }
    }
    e.commit(buf)?;
    if let L4::Icmp(IcmpInfo { inner: Some(h), .. }) = &mut meta.l4 {
        if src {
            h.sport = port;
        } else {
            h.dport = port;
        }
    }
    Ok(())
}

/// Rewrites the source address of the packet quoted in an ICMP error.
pub fn set_inner_src(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    addr: IpAddr,
) -> Result<(), RewriteError> {
    set_inner_addr(buf, meta, addr, true)
}

/// Rewrites the destination address of the packet quoted in an ICMP error.
pub fn set_inner_dst(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    addr: IpAddr,
) -> Result<(), RewriteError> {
    set_inner_addr(buf, meta, addr, false)
}

/// Rewrites the source port (or the echo id of a quoted echo) of the packet quoted in an ICMP error.
pub fn set_inner_sport(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    port: u16,
) -> Result<(), RewriteError> {
    set_inner_port(buf, meta, port, true)
}

/// Rewrites the destination port of the TCP/UDP packet quoted in an ICMP error.
pub fn set_inner_dport(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    port: u16,
) -> Result<(), RewriteError> {
    set_inner_port(buf, meta, port, false)
}

/// Clamps the MSS option of a TCP SYN to `max_mss` (like iptables TCPMSS
/// `--set-mss`, which only lowers it). Returns true if the packet changed.
/// A SYN without an MSS option is left alone.
pub fn set_tcp_mss(buf: &mut [u8], meta: &mut PacketMeta, max_mss: u16) -> bool {
    let L4::Tcp(t) = meta.l4 else { return false };
    if t.flags & tcp_flags::SYN == 0 || t.mss.is_none_or(|m| m <= max_mss) {
        return false;
    }
    let l4 = usize::from(meta.l4_offset);
    let Some(&doff) = buf.get(l4 + 12) else {
        return false;
    };
    let hlen = usize::from(doff >> 4) * 4;
    let Some(opts) = buf.get(l4 + 20..l4 + hlen) else {
        return false;
    };
    let mut pos = None;
    for_each_tcp_option(opts, |kind, i, o| {
        if kind == tcp_opt::MSS && o.len() == 4 {
            pos = Some(l4 + 20 + i + 2);
        }
    });
    let Some(at) = pos else { return false };
    let Ok(c) = rd16(buf, l4 + 16) else {
        return false;
    };
    // The MSS value may sit at an odd offset (options need not be aligned):
    // then update the checksum with the two words that contain it.
    let m = max_mss.to_be_bytes();
    let (w0, new_words, n) = if (at - l4) % 2 == 0 {
        (at, [m[0], m[1], 0, 0], 2)
    } else {
        let Some(s) = buf.get(at - 1..at + 3) else {
            return false;
        };
        (at - 1, [s[0], m[0], m[1], s[3]], 4)
    };
    let Some(old_words) = buf.get(w0..w0 + n) else {
        return false;
    };
    let c = update_bytes(c, old_words, &new_words[..n]);
    if wr(buf, at, &max_mss.to_be_bytes()).is_err() || wr(buf, l4 + 16, &c.to_be_bytes()).is_err() {
        return false;
    }
    if let L4::Tcp(t) = &mut meta.l4 {
        t.mss = Some(max_mss);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::checksum::{fold, l4_checksum, l4_checksum_field, sum};
    use crate::packet::parse::parse;
    use crate::packet::testutil::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The stored transport checksum equals a full recomputation, and the packet parses to `meta`.
    fn assert_consistent(buf: &[u8], meta: &PacketMeta) {
        assert_eq!(parse(buf).as_ref(), Ok(meta));
        if meta.frag.is_none() && !matches!(meta.l4, L4::Other) {
            let at = usize::from(meta.l4_offset) + l4_checksum_field(meta).unwrap();
            let stored = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let udp_none = meta.proto == proto::UDP && !meta.is_v6() && stored == 0;
            if !udp_none {
                assert_eq!(Some(stored), l4_checksum(buf, meta));
            }
        }
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn rewrite_v4_tcp() {
        let mut p = v4_tcp_ack(b"hello");
        let mut m = parse(&p).unwrap();
        set_src(&mut p, &mut m, v4([10, 0, 0, 1])).unwrap();
        set_dst(&mut p, &mut m, v4([10, 9, 8, 7])).unwrap();
        set_sport(&mut p, &mut m, 1234).unwrap();
        set_dport(&mut p, &mut m, 8443).unwrap();
        assert_consistent(&p, &m);
        assert_eq!(m.src, v4([10, 0, 0, 1]));
        assert_eq!(m.ports(), (1234, 8443));
        assert_eq!(&p[12..20], &[10, 0, 0, 1, 10, 9, 8, 7]);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = v4_udp(b"abc");
        p[26] = 0;
        p[27] = 0;
        let mut m = parse(&p).unwrap();
        set_src(&mut p, &mut m, v4([1, 2, 3, 4])).unwrap();
        set_sport(&mut p, &mut m, 9).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert_consistent(&p, &m);
    }

    #[test]
    fn v6_and_icmpv6_pseudo_header() {
        let mut p = v6_echo(5);
        let mut m = parse(&p).unwrap();
        let a: IpAddr = "2001:db8::99".parse().unwrap();
        set_src(&mut p, &mut m, a).unwrap();
        set_icmp_echo_id(&mut p, &mut m, 777).unwrap();
        assert_consistent(&p, &m);
        assert_eq!(m.ports(), (777, 777));
        let mut q = v6_udp(b"xyz");
        let mut m = parse(&q).unwrap();
        set_dst(&mut q, &mut m, a).unwrap();
        set_dport(&mut q, &mut m, 5353).unwrap();
        assert_consistent(&q, &m);
    }

    #[test]
    fn refusals_leave_the_packet_alone() {
        let mut p = v4_echo(1);
        let orig = p.clone();
        let mut m = parse(&p).unwrap();
        let m0 = m;
        let a6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            set_src(&mut p, &mut m, a6),
            Err(RewriteError::FamilyMismatch)
        );
        assert_eq!(set_sport(&mut p, &mut m, 1), Err(RewriteError::NoPorts));
        assert_eq!(
            set_inner_src(&mut p, &mut m, v4([1, 1, 1, 1])),
            Err(RewriteError::NoInner)
        );
        let mut t = v4_tcp_ack(b"");
        let mut tm = parse(&t).unwrap();
        assert_eq!(
            set_icmp_echo_id(&mut t, &mut tm, 3),
            Err(RewriteError::NotEcho)
        );
        // A buffer shorter than meta says.
        let mut short = p[..20].to_vec();
        assert_eq!(
            set_dst(&mut short, &mut m, v4([1, 1, 1, 1])),
            Err(RewriteError::Truncated)
        );
        assert_eq!(p, orig);
        assert_eq!(m, m0);
    }

    #[test]
    fn non_first_fragment_only_touches_ip_header() {
        let dgram = v4_udp(&[5u8; 48]);
        let mut fr = frag_v4(&dgram, &[24], 77);
        let mut m1 = parse(&fr[1]).unwrap();
        let data_before = fr[1][20..].to_vec();
        set_dst(&mut fr[1], &mut m1, v4([10, 1, 1, 1])).unwrap();
        assert_eq!(fr[1][20..], data_before[..]);
        assert_eq!(parse(&fr[1]), Ok(m1));
        let mut m0 = parse(&fr[0]).unwrap();
        set_dst(&mut fr[0], &mut m0, v4([10, 1, 1, 1])).unwrap();
        // Reassembling the rewritten fragments gives a datagram whose UDP checksum verifies.
        let mut whole = fr[0][..20].to_vec();
        whole.extend_from_slice(&fr[0][20..]);
        whole.extend_from_slice(&fr[1][20..]);
        let tl = whole.len() as u16;
        whole[2..4].copy_from_slice(&tl.to_be_bytes());
        whole[6] = 0;
        whole[7] = 0;
        crate::packet::checksum::fill_ipv4_checksum(&mut whole);
        let mw = parse(&whole).unwrap();
        assert_eq!(mw.dst, v4([10, 1, 1, 1]));
    }

    #[test]
    fn icmp_error_inner_rewrite_full_quote() {
        // Quote the whole inner packet so its own checksums can be checked afterwards.
        for (inner, outer_fn) in [
            (
                v4_tcp_ack(b"quoted data!"),
                v4_icmp_error as fn(u8, u8, &[u8]) -> Vec<u8>,
            ),
            (v4_udp(b"quoted"), v4_icmp_error),
            (v4_echo(9), v4_icmp_error),
            (v6_tcp(b"quoted"), v6_icmp_error),
            (v6_udp(b"q"), v6_icmp_error),
            (v6_echo(9), v6_icmp_error),
        ] {
            let mut p = outer_fn(3, 3, &inner); // v6 type 3 = time exceeded, also an error
            let mut m = parse(&p).unwrap();
            let io = usize::from(match m.l4 {
                L4::Icmp(IcmpInfo { inner: Some(h), .. }) => h.offset,
                _ => panic!(),
            });
            let (na, nb): (IpAddr, IpAddr) = if m.is_v6() {
                (
                    "2001:db8:5::5".parse().unwrap(),
                    "2001:db8:6::6".parse().unwrap(),
                )
            } else {
                (v4([100, 64, 0, 5]), v4([100, 64, 0, 6]))
            };
            set_inner_src(&mut p, &mut m, na).unwrap();
            set_inner_dst(&mut p, &mut m, nb).unwrap();
            set_inner_sport(&mut p, &mut m, 4444).unwrap();
            let is_echo = matches!(inner[if m.is_v6() { 6 } else { 9 }], 1 | 58);
            if is_echo {
                assert_eq!(
                    set_inner_dport(&mut p, &mut m, 5),
                    Err(RewriteError::NoPorts)
                );
            } else {
                set_inner_dport(&mut p, &mut m, 5555).unwrap();
            }
            assert_eq!(parse(&p).as_ref(), Ok(&m), "outer checksum");
            let q = parse(&p[io..]).expect("inner packet checksums verify");
            assert_eq!((q.src, q.dst), (na, nb));
            assert_eq!(q.ports().0, 4444);
            if !is_echo {
                assert_eq!(q.ports().1, 5555);
            }
        }
    }

    #[test]
    fn icmp_error_inner_rewrite_short_quote() {
        // RFC 792 minimal quote: the inner TCP checksum is not in the quote.
        let inner = v4_tcp_ack(b"abcdefgh");
        let mut p = v4_icmp_error(3, 1, &inner[..28]);
        let mut m = parse(&p).unwrap();
        set_inner_src(&mut p, &mut m, v4([9, 9, 9, 9])).unwrap();
        set_inner_sport(&mut p, &mut m, 1).unwrap();
        assert_eq!(parse(&p).as_ref(), Ok(&m));
        // The inner IPv4 header checksum is still right.
        assert_eq!(fold(sum(&p[28..48])), 0xffff);
    }

    #[test]
    fn mss_clamp() {
        let mut p = v4_tcp_syn(b"");
        let mut m = parse(&p).unwrap();
        assert!(!set_tcp_mss(&mut p, &mut m, 1500));
        assert!(set_tcp_mss(&mut p, &mut m, 1200));
        assert_consistent(&p, &m);
        let L4::Tcp(t) = m.l4 else { panic!() };
        assert_eq!(t.mss, Some(1200));
        // MSS at an odd offset (after one NOP).
        let b = etherparse::PacketBuilder::ipv4(A4, B4, 64)
            .tcp(1, 2, 3, 4)
            .syn()
            .options_raw(&[1, 2, 4, 0x05, 0xb4, 1, 1, 1])
            .unwrap();
        let mut q = Vec::new();
        b.write(&mut q, b"").unwrap();
        let mut m = parse(&q).unwrap();
        assert!(set_tcp_mss(&mut q, &mut m, 536));
        assert_consistent(&q, &m);
        let L4::Tcp(t) = m.l4 else { panic!() };
        assert_eq!(t.mss, Some(536));
        // Not a SYN: untouched.
        let mut a = v4_tcp_ack(b"");
        let mut am = parse(&a).unwrap();
        assert!(!set_tcp_mss(&mut a, &mut am, 100));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Src([u8; 16]),
        Dst([u8; 16]),
        Sport(u16),
        Dport(u16),
        Echo(u16),
        InnerSrc([u8; 16]),
        InnerDst([u8; 16]),
        InnerSport(u16),
        InnerDport(u16),
        Mss(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(Op::Src),
            any::<[u8; 16]>().prop_map(Op::Dst),
            any::<u16>().prop_map(Op::Sport),
            any::<u16>().prop_map(Op::Dport),
            any::<u16>().prop_map(Op::Echo),
            any::<[u8; 16]>().prop_map(Op::InnerSrc),
            any::<[u8; 16]>().prop_map(Op::InnerDst),
            any::<u16>().prop_map(Op::InnerSport),
            any::<u16>().prop_map(Op::InnerDport),
            any::<u16>().prop_map(Op::Mss),
        ]
    }

    fn addr_like(like: IpAddr, b: [u8; 16]) -> IpAddr {
        match like {
            IpAddr::V4(_) => v4([b[0], b[1], b[2], b[3]]),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(b)),
        }
    }

    proptest! {
        /// Incremental rewrite == full recomputation after any sequence of rewrites.
        #[test]
        fn rewrites_keep_checksums_exact(which in any::<prop::sample::Index>(),
                                         payload in proptest::collection::vec(any::<u8>(), 0..64),
                                         ops in proptest::collection::vec(op(), 1..12)) {
            let pkts = [
                v4_tcp_syn(&payload), v4_tcp_ack(&payload), v6_tcp(&payload),
                v4_udp(&payload), v6_udp(&payload), v4_echo(3), v6_echo(4),
                v4_icmp_error(3, 3, &v4_udp(&payload)), v4_icmp_error(11, 0, &v4_tcp_ack(&payload)[..28]),
                v4_icmp_error(3, 10, &v4_echo(8)),
                v6_icmp_error(1, 4, &v6_udp(&payload)), v6_icmp_error(1, 1, &v6_echo(2)),
                frag_v4(&v4_udp(&[9; 64]), &[32], 1).remove(0), frag_v4(&v4_udp(&[9; 64]), &[32], 1).remove(1),
                frag_v6(&v6_tcp(&[9; 64]), &[48], 1).remove(0),
            ];
            let mut p = which.get(&pkts).clone();
            let mut m = parse(&p).unwrap();
            for o in ops {
                let fam = m.src;
                let inner_fam = match m.l4 { L4::Icmp(IcmpInfo { inner: Some(h), .. }) => h.src, _ => fam };
                let _ = match o {
                    Op::Src(a) => set_src(&mut p, &mut m, addr_like(fam, a)),
                    Op::Dst(a) => set_dst(&mut p, &mut m, addr_like(fam, a)),
                    Op::Sport(x) => set_sport(&mut p, &mut m, x),
                    Op::Dport(x) => set_dport(&mut p, &mut m, x),
                    Op::Echo(x) => set_icmp_echo_id(&mut p, &mut m, x),
                    Op::InnerSrc(a) => set_inner_src(&mut p, &mut m, addr_like(inner_fam, a)),
                    Op::InnerDst(a) => set_inner_dst(&mut p, &mut m, addr_like(inner_fam, a)),
                    Op::InnerSport(x) => set_inner_sport(&mut p, &mut m, x),
                    Op::InnerDport(x) => set_inner_dport(&mut p, &mut m, x),
                    Op::Mss(x) => { set_tcp_mss(&mut p, &mut m, x); Ok(()) }
                };
                assert_consistent(&p, &m);
                prop_assert_eq!(fold(sum(&p[..20])) == 0xffff || m.is_v6(), true);
            }
        }
    }
}
