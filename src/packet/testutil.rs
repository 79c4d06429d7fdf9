//! Test-only packet fixtures built with etherparse's `PacketBuilder`, plus
//! hand-made IPv6 extension headers and a fragmenter.

use etherparse::{PacketBuilder, TcpOptionElement};

pub const A4: [u8; 4] = [198, 51, 100, 1];
pub const B4: [u8; 4] = [203, 0, 113, 7];
pub const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub fn v4_tcp_syn(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(A4, B4, 64)
        .tcp(40000, 443, 1000, 64240)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn v4_tcp_ack(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(A4, B4, 64)
        .tcp(40000, 443, 5000, 1024)
        .ack(7777)
        .psh();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn v6_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(A6, B6, 64)
        .tcp(40000, 22, 1, 512)
        .ack(99)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement((100, 200), [Some((300, 400)), None, None]),
        ])
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn v4_udp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(A4, B4, 64)
        .udp(5353, 53)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub fn v6_udp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(A6, B6, 64)
        .udp(5353, 53)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub fn v4_echo(id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(A4, B4, 64)
        .icmpv4_echo_request(id, 1)
        .write(&mut v, b"pingpingpingping")
        .unwrap();
    v
}

pub fn v6_echo(id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(A6, B6, 64)
        .icmpv6_echo_request(id, 1)
        .write(&mut v, b"pingpingpingping")
        .unwrap();
    v
}

/// An ICMPv4 error (type, code) from `router` to the sender of `quoted`, quoting `quoted`.
pub fn v4_icmp_error(ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([192, 0, 2, 1], A4, 64)
        .icmpv4_raw(ty, code, [0; 4])
        .write(&mut v, quoted)
        .unwrap();
    v
}

pub fn v6_icmp_error(ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let router = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
    ];
    PacketBuilder::ipv6(router, A6, 64)
        .icmpv6_raw(ty, code, [0; 4])
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// Inserts raw IPv6 extension headers (each `(next-header-number, bytes)`, bytes
/// with their own first byte to be overwritten) after the fixed header of `pkt`.
/// Transport checksums stay valid: the pseudo-header uses the upper-layer length.
pub fn v6_with_ext(pkt: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = pkt[..40].to_vec();
    let upper = pkt[6];
    let mut prev_nh_pos = 6;
    for (num, bytes) in exts {
        out[prev_nh_pos] = *num;
        prev_nh_pos = out.len();
        out.extend_from_slice(bytes);
    }
    out[prev_nh_pos] = upper;
    out.extend_from_slice(&pkt[40..]);
    let pl = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&pl.to_be_bytes());
    out
}

/// An 8-byte generic option-style extension header (hop-by-hop / dest opts / routing).
pub fn ext8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0] // next, len 0, PadN of 4
}

/// Byte ranges of a datagram's data cut at `cuts` (cuts outside the data
/// are ignored).
fn ranges(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < len));
    bounds.push(len);
    bounds.dedup();
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Fragments an IPv4 datagram at the given data boundaries (multiples of
/// 8), returning the fragments in offset order.
pub fn frag_v4(pkt: &[u8], cuts: &[usize], id: u16) -> Vec<Vec<u8>> {
    let hlen = usize::from(pkt[0] & 0xf) * 4;
    crate::packet::fragment::split(pkt, &ranges(pkt.len() - hlen, cuts), u32::from(id))
        .expect("fragmentable IPv4 datagram")
}

/// Fragments an IPv6 datagram without extension headers at data boundaries.
pub fn frag_v6(pkt: &[u8], cuts: &[usize], id: u32) -> Vec<Vec<u8>> {
    frag_v6_ext(pkt, 40, 6, cuts, id)
}

/// Fragments an IPv6 datagram whose unfragmentable part is `pkt[..unfrag]`, the
/// next-header byte to replace with 44 being at `prev_nh`.
pub fn frag_v6_ext(
    pkt: &[u8],
    unfrag: usize,
    prev_nh: usize,
    cuts: &[usize],
    id: u32,
) -> Vec<Vec<u8>> {
    let r = ranges(pkt.len() - unfrag, cuts);
    crate::packet::fragment::split_v6_after(pkt, unfrag, prev_nh, &r, id)
        .expect("fragmentable IPv6 datagram")
}
