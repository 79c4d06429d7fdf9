//! Packet synthesis: well-formed IPv4/IPv6 packets from a few parameters.
//!
//! Used by `portcullis trace` (to describe a packet given on the command
//! line), by tests and by benchmarks. Checksums are always correct; the
//! builders never panic (errors from etherparse are returned as `None`).

use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};
use std::net::{IpAddr, SocketAddr};

/// What to put in a synthesized TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSpec {
    /// Flag byte (see `packet::tcp_flags`).
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Window scale option (added only to SYN segments).
    pub wscale: Option<u8>,
    /// MSS option (added only to SYN segments).
    pub mss: Option<u16>,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            flags: super::tcp_flags::SYN,
            seq: 1000,
            ack: 0,
            window: 65_535,
            wscale: None,
            mss: None,
        }
    }
}

fn ip_builder(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> Option<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), ttl)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), ttl)),
        _ => None,
    }
}

/// A TCP segment from `src` to `dst`.
pub fn tcp(src: SocketAddr, dst: SocketAddr, spec: TcpSpec, payload: &[u8]) -> Option<Vec<u8>> {
    use super::tcp_flags::*;
    let mut h = TcpHeader::new(src.port(), dst.port(), spec.seq, spec.window);
    h.fin = spec.flags & FIN != 0;
    h.syn = spec.flags & SYN != 0;
    h.rst = spec.flags & RST != 0;
    h.psh = spec.flags & PSH != 0;
    h.ack = spec.flags & ACK != 0;
    h.urg = spec.flags & URG != 0;
    h.ece = spec.flags & ECE != 0;
    h.cwr = spec.flags & CWR != 0;
    h.acknowledgment_number = spec.ack;
    if h.syn {
        let mut opts = Vec::new();
        if let Some(m) = spec.mss {
            opts.push(TcpOptionElement::MaximumSegmentSize(m));
        }
        if let Some(w) = spec.wscale {
            opts.push(TcpOptionElement::Noop);
            opts.push(TcpOptionElement::WindowScale(w));
        }
        if !opts.is_empty() {
            h.set_options(&opts).ok()?;
        }
    }
    let b = ip_builder(src.ip(), dst.ip(), 64)?.tcp_header(h);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).ok()?;
    Some(out)
}

/// A UDP datagram from `src` to `dst`.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let b = ip_builder(src.ip(), dst.ip(), 64)?.udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).ok()?;
    Some(out)
}

/// Serialises a finished builder step into a new vector.
macro_rules! finish {
    ($b:expr, $payload:expr) => {{
        let b = $b;
        let mut out = Vec::with_capacity(b.size($payload.len()));
        b.write(&mut out, $payload).ok().map(|_| out)
    }};
}

/// An ICMP (v4) or ICMPv6 echo request (`reply = false`) or reply.
pub fn icmp_echo(
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    reply: bool,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let b = ip_builder(src, dst, 64)?;
    match (src.is_ipv6(), reply) {
        (false, false) => finish!(b.icmpv4_echo_request(id, seq), payload),
        (false, true) => finish!(b.icmpv4_echo_reply(id, seq), payload),
        (true, false) => finish!(b.icmpv6_echo_request(id, seq), payload),
        (true, true) => finish!(b.icmpv6_echo_reply(id, seq), payload),
    }
}

/// An ICMP (v4) or ICMPv6 message of any type/code with a raw 4-byte
/// "rest of header" and payload (e.g. an error quoting another packet).
pub fn icmp_raw(
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
) -> Option<Vec<u8>> {
    let b = ip_builder(src, dst, 64)?;
    if src.is_ipv6() {
        finish!(b.icmpv6_raw(ty, code, rest), payload)
    } else {
        finish!(b.icmpv4_raw(ty, code, rest), payload)
    }
}

/// A packet of any other IP protocol with a raw payload.
pub fn raw(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let b = ip_builder(src, dst, 64)?;
    let mut out = Vec::new();
    b.write(&mut out, etherparse::IpNumber(proto), payload)
        .ok()?;
    Some(out)
}

/// A minimal TLS 1.3 ClientHello record carrying `sni` (one cipher suite,
/// the server_name extension only).
pub fn tls_client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = Vec::new();
    let list_len = 3 + name.len();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // compression null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A DNS query message for `name` (id 0x1234, RD, type A, class IN).
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_headers() {
        let p = tcp(
            "100.64.0.2:40000".parse().unwrap(),
            "203.0.113.2:443".parse().unwrap(),
            TcpSpec {
                wscale: Some(7),
                mss: Some(1380),
                ..TcpSpec::default()
            },
            b"",
        )
        .unwrap();
        let s = etherparse::SlicedPacket::from_ip(&p).unwrap();
        match s.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                assert!(t.syn() && !t.ack());
                assert_eq!(t.destination_port(), 443);
            }
            other => panic!("not tcp: {other:?}"),
        }
        assert!(udp(
            "[2001:db8::1]:53".parse().unwrap(),
            "[2001:db8::2]:53".parse().unwrap(),
            b"x"
        )
        .is_some());
        assert!(icmp_echo(
            "100.64.0.2".parse().unwrap(),
            "100.64.0.1".parse().unwrap(),
            7,
            1,
            false,
            b"ping"
        )
        .is_some());
        // mixed families cannot be built
        assert!(udp(
            "1.2.3.4:1".parse().unwrap(),
            "[::1]:1".parse().unwrap(),
            b""
        )
        .is_none());
    }
}
