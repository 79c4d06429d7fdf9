//! Reply builders: TCP RST, ICMP/ICMPv6 destination unreachable, echo reply,
//! and a token-bucket [`ReplyLimiter`] for them.
//!
//! Contract: each builder takes the offending packet and its [`PacketMeta`]
//! and returns a complete IP packet (checksums filled) or `None` when the
//! rules below forbid a reply. They never panic.
//!
//! - [`tcp_reset`] follows RFC 9293 3.10.7.1 (RFC 793 "reset generation"): if
//!   the segment has ACK, the RST has `seq = SEG.ACK` and no ACK; otherwise
//!   RST|ACK with `seq = 0, ack = SEG.SEQ + SEG.LEN` (SYN and FIN count one each).
//!   Never answers a RST. Source = the original destination (the reply appears
//!   to come from the server). Fragments are not answered: the pipeline answers
//!   the reassembled datagram.
//! - [`icmp_unreachable`]: IPv4 type 3 with the given code, quoting the IP
//!   header and as much of the datagram as keeps the reply within 576 bytes
//!   (RFC 1812 4.3.2.3); IPv6 type 1 quoting as much as fits in 1280 bytes
//!   (RFC 4443 2.4(c)). IPv6 codes are mapped from the IPv4 code:
//!   0 net -> 0 no route, 1 host -> 3 address unreachable, 3 port -> 4 port
//!   unreachable, 9/10/13 (admin prohibited) -> 1, anything else -> 1
//!   (administratively prohibited: the firewall is what refused it).
//!   No reply (RFC 1812 4.3.2.7, RFC 4443 2.4(e)) to: ICMP errors, ICMPv6
//!   errors and redirects (type 137), non-first fragments, multicast or
//!   broadcast destinations (v4 224.0.0.0/4, 255.255.255.255; v6 ff00::/8;
//!   directed broadcasts cannot be known here), sources that are not a unique
//!   unicast host (unspecified, loopback, multicast, broadcast, v4 240.0.0.0/4).
//!   `from`, if given, must be of the packet's family (else `None`).
//! - [`icmp_echo_reply`]: the gateway answers echo requests to its own address:
//!   addresses swapped, type 0/129, same id/seq/data; IPv4 options are not
//!   copied (RFC 1122 3.2.2.6 makes that optional). Same source/destination
//!   restrictions (no reply to a broadcast ping: smurf amplification).
//! - All replies use TTL / hop limit 64 (Linux `ip_default_ttl`).
//! - [`ReplyLimiter`] is a sans-IO token bucket (RFC 1812 4.3.2.8, RFC 4443
//!   2.4(f) require rate limiting). For reference, Linux limits ICMP errors per
//!   destination to 1/s with a burst of 6 (`icmp_ratelimit`, XRLIM_BURST_FACTOR)
//!   and globally to `icmp_msgs_per_sec` 1000 with `icmp_msgs_burst` 50.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use super::checksum::{finish, pseudo, sum};
use super::{proto, tcp_flags, IcmpInfo, PacketMeta, L4};

/// TTL / hop limit of generated packets (Linux net.ipv4.ip_default_ttl = 64).
pub const REPLY_TTL: u8 = 64;
/// Largest IPv4 ICMP error (RFC 1812 4.3.2.3: at most 576 bytes).
pub const ICMP4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 2.4(c): the IPv6 minimum MTU, 1280).
pub const ICMP6_MAX: usize = 1280;

/// ICMPv4 destination-unreachable codes (RFC 792, RFC 1812 5.2.7.1).
pub mod unreach {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Maps an ICMPv4 unreachable code to the ICMPv6 one (see the module doc).
pub fn v6_unreach_code(v4_code: u8) -> u8 {
    match v4_code {
        unreach::NET => 0,
        unreach::HOST => 3,
        unreach::PORT => 4,
        _ => 1,
    }
}

fn bad_v4_src(a: Ipv4Addr) -> bool {
    a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.octets()[0] >= 240
}

fn bad_v4_dst(a: Ipv4Addr) -> bool {
    a.is_multicast() || a.is_broadcast() || a.is_unspecified()
}

fn bad_v6_src(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast()
}

fn bad_v6_dst(a: Ipv6Addr) -> bool {
    a.is_multicast() || a.is_unspecified()
}

/// True if a reply to this packet's source is allowed by its addresses.
fn addresses_allow_reply(meta: &PacketMeta) -> bool {
    match (meta.src, meta.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => !bad_v4_src(s) && !bad_v4_dst(d),
        (IpAddr::V6(s), IpAddr::V6(d)) => !bad_v6_src(s) && !bad_v6_dst(d),
        _ => false,
    }
}

/// Writes an IP header for a reply into `out` (which must be empty) and returns
/// the offset of the transport header.
fn ip_header(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    proto_: u8,
    l4_len: usize,
) -> Option<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + l4_len).ok()?;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, REPLY_TTL, proto_, 0, 0]); // id 0, DF
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = finish(sum(out.get(..20)?));
            out.get_mut(10..12)?.copy_from_slice(&c.to_be_bytes());
            Some(20)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pl = u16::try_from(l4_len).ok()?;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&pl.to_be_bytes());
            out.extend_from_slice(&[proto_, REPLY_TTL]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            Some(40)
        }
        _ => None,
    }
}

/// Fills the transport checksum of a reply at `l4` (field at `l4 + field`).
fn fill_csum(
    out: &mut [u8],
    l4: usize,
    field: usize,
    src: IpAddr,
    dst: IpAddr,
    proto_: u8,
) -> Option<()> {
    let seg = out.get(l4..)?;
    let len = u16::try_from(seg.len()).ok()?;
    let ph = if proto_ == proto::ICMP {
        0
    } else {
        pseudo(src, dst, proto_, len)
    };
    let c = finish(sum(seg) + ph);
    out.get_mut(l4 + field..l4 + field + 2)?
        .copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Builds the RST answering a TCP segment (see the module doc).
pub fn tcp_reset(buf: &[u8], meta: &PacketMeta) -> Option<Vec<u8>> {
    let L4::Tcp(t) = meta.l4 else { return None };
    if meta.frag.is_some() || t.flags & tcp_flags::RST != 0 || !addresses_allow_reply(meta) {
        return None;
    }
    buf.get(..usize::from(meta.total_len))?;
    let (seq, ack, flags) = if t.flags & tcp_flags::ACK != 0 {
        (t.ack, 0, tcp_flags::RST)
    } else {
        let len = u32::try_from(meta.payload_len()).ok()?
            + u32::from(t.flags & tcp_flags::SYN != 0)
            + u32::from(t.flags & tcp_flags::FIN != 0);
        (0, t.seq.wrapping_add(len), tcp_flags::RST | tcp_flags::ACK)
    };
    let (src, dst) = (meta.dst, meta.src);
    let mut out = Vec::with_capacity(60);
    let l4 = ip_header(&mut out, src, dst, proto::TCP, 20)?;
    out.extend_from_slice(&t.dport.to_be_bytes());
    out.extend_from_slice(&t.sport.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ack.to_be_bytes());
    out.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]); // doff 5, window 0, csum, urg
    fill_csum(&mut out, l4, 16, src, dst, proto::TCP)?;
    Some(out)
}

/// True for ICMP messages that must never be answered with an ICMP error.
fn is_icmp_error_or_redirect(meta: &PacketMeta) -> bool {
    match meta.l4 {
        L4::Icmp(IcmpInfo { is_error, ty, .. }) => is_error || (meta.is_v6() && ty == 137),
        _ => false,
    }
}

/// Builds a destination-unreachable error for `buf` (see the module doc).
pub fn icmp_unreachable(
    buf: &[u8],
    meta: &PacketMeta,
    code: u8,
    from: Option<IpAddr>,
) -> Option<Vec<u8>> {
    if is_icmp_error_or_redirect(meta) || !addresses_allow_reply(meta) {
        return None;
    }
    // ICMP-in-the-wrong-family or an ICMP error hidden in a fragment: the
    // parser reports the protocol; a first fragment of an ICMP error is still an error.
    if meta.frag.is_some_and(|f| f.offset != 0) {
        return None;
    }
    let src = from.unwrap_or(meta.dst);
    if src.is_ipv4() != meta.dst.is_ipv4() {
        return None;
    }
    let dst = meta.src;
    let dgram = buf.get(..usize::from(meta.total_len))?;
    let v6 = meta.is_v6();
    let (max, ip_len, ty, code) = if v6 {
        (ICMP6_MAX, 40, 1u8, v6_unreach_code(code))
    } else {
        (ICMP4_MAX, 20, 3u8, code)
    };
    let quote = dgram.get(..dgram.len().min(max - ip_len - 8))?;
    let icmp_proto = if v6 { proto::ICMPV6 } else { proto::ICMP };
    let mut out = Vec::with_capacity(ip_len + 8 + quote.len());
    let l4 = ip_header(&mut out, src, dst, icmp_proto, 8 + quote.len())?;
    out.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(quote);
    fill_csum(&mut out, l4, 2, src, dst, icmp_proto)?;
    Some(out)
}

/// Builds the echo reply to an ICMP/ICMPv6 echo request (see the module doc).
pub fn icmp_echo_reply(buf: &[u8], meta: &PacketMeta) -> Option<Vec<u8>> {
    let L4::Icmp(IcmpInfo {
        ty,
        echo_id: Some(_),
        ..
    }) = meta.l4
    else {
        return None;
    };
    let v6 = meta.is_v6();
    let (request, reply, icmp_proto) = if v6 {
        (128, 129, proto::ICMPV6)
    } else {
        (8, 0, proto::ICMP)
    };
    if ty != request || meta.frag.is_some() || !addresses_allow_reply(meta) {
        return None;
    }
    let msg = buf.get(usize::from(meta.l4_offset)..usize::from(meta.total_len))?;
    let (src, dst) = (meta.dst, meta.src);
    let mut out = Vec::with_capacity(40 + msg.len());
    let l4 = ip_header(&mut out, src, dst, icmp_proto, msg.len())?;
    out.extend_from_slice(msg);
    *out.get_mut(l4)? = reply;
    *out.get_mut(l4 + 1)? = 0;
    out.get_mut(l4 + 2..l4 + 4)?.copy_from_slice(&[0, 0]);
    fill_csum(&mut out, l4, 2, src, dst, icmp_proto)?;
    Some(out)
}

/// A token bucket limiting generated replies (sans-IO: the caller passes `now`).
#[derive(Debug, Clone)]
pub struct ReplyLimiter {
    /// Tokens in units of 1e-9 token, so refill needs no floating point.
    tokens: u64,
    cap: u64,
    per_sec: u64,
    last: Option<Instant>,
}

/// One token in the limiter's fixed-point units.
const TOKEN: u64 = 1_000_000_000;

impl ReplyLimiter {
    /// `per_sec` tokens are added per second, up to `burst` (at least 1); starts full.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let cap = u64::from(burst.max(1)) * TOKEN;
        ReplyLimiter {
            tokens: cap,
            cap,
            per_sec: u64::from(per_sec),
            last: None,
        }
    }

    /// Takes a token if one is available.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last);
            // nanoseconds * tokens/s = 1e-9 tokens; saturate on long idle gaps.
            let add = u64::try_from(dt.as_nanos().saturating_mul(u128::from(self.per_sec)))
                .unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.cap);
            if now > last {
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::parse;
    use crate::packet::testutil::*;
    use crate::packet::{FragInfo, TcpInfo};
    use std::time::Duration;

    #[test]
    fn rst_for_ack_segment() {
        let p = v4_tcp_ack(b"12345");
        let m = parse(&p).unwrap();
        let r = tcp_reset(&p, &m).unwrap();
        let rm = parse(&r).unwrap();
        assert_eq!((rm.src, rm.dst), (m.dst, m.src));
        assert_eq!(rm.ttl, 64);
        let L4::Tcp(t) = rm.l4 else { panic!() };
        assert_eq!((t.sport, t.dport), (443, 40000));
        assert_eq!((t.seq, t.ack, t.flags), (7777, 0, tcp_flags::RST));
        // Never answer a RST.
        let mut rm2 = rm;
        assert!(tcp_reset(&r, &rm2).is_none());
        if let L4::Tcp(t) = &mut rm2.l4 {
            t.flags = tcp_flags::ACK;
        }
        assert!(tcp_reset(&r, &rm2).is_some());
    }

    #[test]
    fn rst_ack_for_syn_v6_and_v4() {
        let p = v4_tcp_syn(b"abc");
        let m = parse(&p).unwrap();
        let r = tcp_reset(&p, &m).unwrap();
        let L4::Tcp(t) = parse(&r).unwrap().l4 else {
            panic!()
        };
        // seq 1000 + 3 bytes + SYN
        assert_eq!(
            (t.seq, t.ack, t.flags),
            (0, 1004, tcp_flags::RST | tcp_flags::ACK)
        );
        let p6 = v6_tcp(b"xy");
        let m6 = parse(&p6).unwrap();
        let r6 = tcp_reset(&p6, &m6).unwrap();
        let rm6 = parse(&r6).unwrap();
        assert_eq!(rm6.src, m6.dst);
        let L4::Tcp(t) = rm6.l4 else { panic!() };
        assert_eq!((t.seq, t.flags), (99, tcp_flags::RST));
    }

    #[test]
    fn rst_refused_for_fragments_and_broadcast() {
        let p = v4_tcp_syn(b"");
        let mut m = parse(&p).unwrap();
        m.frag = Some(FragInfo {
            id: 1,
            offset: 0,
            more: true,
        });
        assert!(tcp_reset(&p, &m).is_none());
        let mut m = parse(&p).unwrap();
        m.dst = "255.255.255.255".parse().unwrap();
        assert!(tcp_reset(&p, &m).is_none());
        let m = PacketMeta {
            l4: L4::Tcp(TcpInfo::default()),
            ..parse(&v4_udp(b"")).unwrap()
        };
        assert!(tcp_reset(&[], &m).is_none()); // buffer shorter than meta
    }

    #[test]
    fn unreachable_v4_quotes_and_bounds() {
        let p = v4_udp(&[0xab; 1000]);
        let m = parse(&p).unwrap();
        let r = icmp_unreachable(&p, &m, unreach::PORT, None).unwrap();
        assert_eq!(r.len(), ICMP4_MAX);
        let rm = parse(&r).unwrap();
        assert_eq!((rm.src, rm.dst, rm.ttl), (m.dst, m.src, 64));
        let L4::Icmp(i) = rm.l4 else { panic!() };
        assert_eq!((i.ty, i.code, i.is_error), (3, 3, true));
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.src, inner.dst, inner.sport, inner.dport),
            (m.src, m.dst, 5353, 53)
        );
        assert_eq!(&r[28..28 + 100], &p[..100]);
        // Small packet: quoted whole.
        let q = v4_tcp_syn(b"");
        let qm = parse(&q).unwrap();
        let from: IpAddr = "192.0.2.254".parse().unwrap();
        let r = icmp_unreachable(&q, &qm, unreach::ADMIN_PROHIBITED, Some(from)).unwrap();
        assert_eq!(r.len(), 28 + q.len());
        assert_eq!(parse(&r).unwrap().src, from);
        // Wrong-family `from`.
        assert!(icmp_unreachable(&q, &qm, 13, Some("::1".parse().unwrap())).is_none());
    }

    #[test]
    fn unreachable_v6_code_map_and_bound() {
        let p = v6_udp(&[1; 1400]);
        let m = parse(&p).unwrap();
        for (c4, c6) in [(0, 0), (1, 3), (3, 4), (13, 1), (10, 1), (2, 1)] {
            let r = icmp_unreachable(&p, &m, c4, None).unwrap();
            assert_eq!(r.len(), ICMP6_MAX);
            let rm = parse(&r).unwrap();
            let L4::Icmp(i) = rm.l4 else { panic!() };
            assert_eq!((i.ty, i.code), (1, c6));
            assert_eq!(i.inner.map(|h| h.dport), Some(53));
        }
    }

    #[test]
    fn unreachable_never_answers_what_it_must_not() {
        // An ICMP error.
        let e = v4_icmp_error(3, 3, &v4_udp(b"abcdefgh"));
        assert!(icmp_unreachable(&e, &parse(&e).unwrap(), 3, None).is_none());
        let e6 = v6_icmp_error(1, 4, &v6_udp(b"a"));
        assert!(icmp_unreachable(&e6, &parse(&e6).unwrap(), 3, None).is_none());
        // An ICMPv6 redirect (type 137).
        let mut rd = Vec::new();
        etherparse::PacketBuilder::ipv6(A6, B6, 255)
            .icmpv6_raw(137, 0, [0; 4])
            .write(&mut rd, &[0; 32])
            .unwrap();
        assert!(icmp_unreachable(&rd, &parse(&rd).unwrap(), 3, None).is_none());
        // Non-first fragment.
        let fr = frag_v4(&v4_udp(&[0; 64]), &[32], 5);
        assert!(icmp_unreachable(&fr[1], &parse(&fr[1]).unwrap(), 3, None).is_none());
        assert!(icmp_unreachable(&fr[0], &parse(&fr[0]).unwrap(), 3, None).is_some());
        // Broadcast / multicast destinations, bad sources.
        let p = v4_udp(b"x");
        let base = parse(&p).unwrap();
        for (s, d) in [
            ("198.51.100.1", "255.255.255.255"),
            ("198.51.100.1", "224.0.0.251"),
            ("0.0.0.0", "203.0.113.7"),
            ("127.0.0.1", "203.0.113.7"),
            ("240.0.0.1", "203.0.113.7"),
        ] {
            let m = PacketMeta {
                src: s.parse().unwrap(),
                dst: d.parse().unwrap(),
                ..base
            };
            assert!(icmp_unreachable(&p, &m, 3, None).is_none(), "{s} -> {d}");
        }
        let q = v6_udp(b"x");
        let base = parse(&q).unwrap();
        for (s, d) in [
            ("2001:db8::1", "ff02::1"),
            ("::", "2001:db8::2"),
            ("::1", "2001:db8::2"),
            ("ff05::1", "2001:db8::2"),
        ] {
            let m = PacketMeta {
                src: s.parse().unwrap(),
                dst: d.parse().unwrap(),
                ..base
            };
            assert!(icmp_unreachable(&q, &m, 3, None).is_none(), "{s} -> {d}");
        }
    }

    #[test]
    fn echo_replies() {
        for p in [v4_echo(42), v6_echo(43)] {
            let m = parse(&p).unwrap();
            let r = icmp_echo_reply(&p, &m).unwrap();
            let rm = parse(&r).unwrap();
            assert_eq!((rm.src, rm.dst), (m.dst, m.src));
            let L4::Icmp(i) = rm.l4 else { panic!() };
            assert_eq!(i.ty, if m.is_v6() { 129 } else { 0 });
            assert_eq!(i.echo_id, m.ports().0.into());
            assert_eq!(
                r[usize::from(rm.l4_offset) + 4..],
                p[usize::from(m.l4_offset) + 4..]
            );
            // A reply is not answered.
            assert!(icmp_echo_reply(&r, &rm).is_none());
        }
        let p = v4_echo(1);
        let m = PacketMeta {
            dst: "255.255.255.255".parse().unwrap(),
            ..parse(&p).unwrap()
        };
        assert!(icmp_echo_reply(&p, &m).is_none());
    }

    #[test]
    fn limiter_refills_and_caps() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(2, 3);
        assert!((0..3).all(|_| l.allow(t0)));
        assert!(!l.allow(t0));
        assert!(!l.allow(t0 + Duration::from_millis(400)));
        assert!(l.allow(t0 + Duration::from_millis(500)));
        assert!(!l.allow(t0 + Duration::from_millis(600)));
        // A long idle gap refills only up to the burst.
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow(t1)).count(), 3);
        // Time going backwards takes nothing and gives nothing.
        assert!(!l.allow(t0));
        let mut z = ReplyLimiter::new(0, 1);
        assert!(z.allow(t0));
        assert!(!z.allow(t1));
    }
}
