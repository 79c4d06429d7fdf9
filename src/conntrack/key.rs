//! Flow keys: zone + 5-tuple, and their keyed hash.
//!
//! A [`FlowKey`] names one direction of a flow as the packets of that
//! direction are seen entering the gateway: the ingress zone, the protocol,
//! the addresses and the ports. ICMP echo request and reply carry the echo
//! identifier as both "ports" (like the kernel's `nf_conntrack_proto_icmp`,
//! which keys echo flows by id); protocols without ports use 0/0.
//!
//! Hashing is keyed SipHash-1-3 (the key is chosen at random by the caller), so
//! an attacker who controls packet fields cannot aim packets at one hash
//! bucket. IPv4 keys are hashed as two 64-bit words (one for zone, protocol,
//! ports and family, one for both addresses) to keep the fast path short.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

use crate::packet::PacketMeta;
use crate::zone::ZoneId;

/// One direction of a flow: ingress zone + protocol + addresses + ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub zone: ZoneId,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the direction `meta` travels in, entering from `zone`.
    /// ICMP echo: `sport = dport = echo id`; protocols without ports: 0/0.
    pub fn from_meta(zone: ZoneId, meta: &PacketMeta) -> FlowKey {
        let (sport, dport) = meta.ports();
        FlowKey {
            zone,
            proto: meta.proto,
            src: meta.src,
            dst: meta.dst,
            sport,
            dport,
        }
    }

    /// The opposite direction, as its packets are seen entering from `zone`
    /// (endpoints and ports swapped; ICMP echo keeps its id in both).
    pub fn inverse(&self, zone: ZoneId) -> FlowKey {
        FlowKey {
            zone,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// Keyed SipHash-1-3 of the key.
    #[inline]
    pub(crate) fn hash_with(&self, k0: u64, k1: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(k0, k1);
        let head = u64::from(self.zone.0)
            | u64::from(self.proto) << 16
            | u64::from(self.sport) << 24
            | u64::from(self.dport) << 40;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                h.write_u64(head | 4 << 56);
                h.write_u64(u64::from(u32::from(s)) << 32 | u64::from(u32::from(d)));
            }
            (s, d) => {
                h.write_u64(head | 6 << 56);
                for a in [s, d] {
                    let bits = match a {
                        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                        IpAddr::V6(v6) => u128::from(v6),
                    };
                    h.write_u64((bits >> 64) as u64);
                    h.write_u64(bits as u64);
                }
            }
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{IcmpInfo, L4};
    use std::net::Ipv4Addr;

    fn meta(l4: L4, proto: u8) -> PacketMeta {
        PacketMeta {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            proto,
            ttl: 64,
            total_len: 28,
            l4_offset: 20,
            payload_offset: 28,
            frag: None,
            l4,
        }
    }

    #[test]
    fn echo_id_is_both_ports_and_inverse_swaps() {
        let m = meta(
            L4::Icmp(IcmpInfo {
                ty: 8,
                code: 0,
                echo_id: Some(77),
                is_error: false,
                inner: None,
            }),
            1,
        );
        let k = FlowKey::from_meta(ZoneId(3), &m);
        assert_eq!((k.sport, k.dport), (77, 77));
        let r = k.inverse(ZoneId::TUN);
        assert_eq!((r.src, r.dst, r.zone), (m.dst, m.src, ZoneId::TUN));
        assert_eq!((r.sport, r.dport), (77, 77));
        let u = FlowKey::from_meta(
            ZoneId(3),
            &meta(
                L4::Udp {
                    sport: 5,
                    dport: 53,
                },
                17,
            ),
        );
        let ui = u.inverse(ZoneId(4));
        assert_eq!((ui.sport, ui.dport), (53, 5));
        assert_eq!(ui.inverse(ZoneId(3)), u);
    }

    #[test]
    fn keyed_hash_depends_on_key_and_fields() {
        let m = meta(
            L4::Udp {
                sport: 5,
                dport: 53,
            },
            17,
        );
        let k = FlowKey::from_meta(ZoneId(3), &m);
        assert_eq!(k.hash_with(1, 2), k.hash_with(1, 2));
        assert_ne!(k.hash_with(1, 2), k.hash_with(1, 3));
        assert_ne!(k.hash_with(1, 2), k.hash_with(3, 2));
        assert_ne!(k.hash_with(1, 2), k.inverse(ZoneId(3)).hash_with(1, 2));
        let mut z = k;
        z.zone = ZoneId(4);
        assert_ne!(k.hash_with(1, 2), z.hash_with(1, 2));
        let mut v6 = k;
        v6.src = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        v6.dst = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        assert_ne!(k.hash_with(1, 2), v6.hash_with(1, 2));
    }
}
