//! Flow keys: zone + 5-tuple, and their keyed hash.
//!
//! A [`FlowKey`] names one direction of a flow as the packets of that
//! direction are seen entering the gateway: the ingress zone, the protocol,
//! the addresses and the ports. ICMP echo request and reply carry the echo
//! identifier as both "ports" (like the kernel's `nf_conntrack_proto_icmp`,
//! which keys echo flows by id); protocols without ports use 0/0.
//!
//! Hashing is keyed ([`FlowHasher`]; the key is chosen at random by the
//! caller), so an attacker who controls packet fields cannot aim packets at
//! one hash bucket without knowing the key. The key is packed into 64-bit
//! words (one for zone, protocol, ports and family; one for both IPv4
//! addresses, or four for IPv6) and mixed by a keyed folded multiply (the
//! construction of foldhash / aHash's fallback: `fold(a ^ k0) * (b ^ k1)`,
//! the 128-bit product's halves xored), finished by one more keyed round.
//!
//! Why not SipHash-1-3, which the design first named: measured on the
//! established-flow fast path (callgrind, `examples/fastpath_count.rs`),
//! SipHash-1-3 of an IPv4 key cost ~136 instructions per packet, a fifth of
//! the whole connection-tracking cost; the folded multiply costs ~15. The DoS
//! consideration (see `docs/decisions.md`): the hash is not a PRF; its keys
//! are 6 random words derived from the caller's 128-bit key through
//! SipHash-1-3 at start, never leave the process and are not observable
//! except through timing. An attacker who cannot learn them cannot predict
//! which keys collide; one who could would at worst lengthen the probe
//! sequences of the bounded table (each probe compares a full key), which
//! `max_entries` and the per-peer connection limits bound, not corrupt it.

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

    /// True when `reply` is not the plain inverse of `self` (addresses or
    /// ports differ from the swapped original: the flow is translated). Zones
    /// are not compared: a reply enters from the egress zone.
    pub fn translates_to(&self, reply: &FlowKey) -> bool {
        self.src != reply.dst
            || self.dst != reply.src
            || self.sport != reply.dport
            || self.dport != reply.sport
    }

    /// The keyed hash of this key (see [`FlowHasher`]).
    #[inline]
    pub(crate) fn hash_with(&self, h: &FlowHasher) -> u64 {
        h.hash(self)
    }
}

/// A flow key read in place from a parsed packet: the protocol and addresses
/// stay in the `PacketMeta`, so a lookup neither copies them into a
/// [`FlowKey`] nor passes one through memory (the fast path's lookup takes
/// this in two registers). Names the same key as [`FlowKey::from_meta`] when
/// the ports are `meta.ports()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyRef<'a> {
    pub meta: &'a PacketMeta,
    pub zone: ZoneId,
    pub sport: u16,
    pub dport: u16,
}

impl KeyRef<'_> {
    /// True when `key` is the key this names.
    #[inline(always)]
    pub(crate) fn matches(self, key: &FlowKey) -> bool {
        key.zone == self.zone
            && key.sport == self.sport
            && key.dport == self.dport
            && key.proto == self.meta.proto
            && key.src == self.meta.src
            && key.dst == self.meta.dst
    }

    /// The [`FlowKey`] this names.
    #[cfg(test)]
    pub(crate) fn to_key(self) -> FlowKey {
        FlowKey {
            zone: self.zone,
            proto: self.meta.proto,
            src: self.meta.src,
            dst: self.meta.dst,
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// The folded multiply: the 128-bit product's halves xored (foldhash, aHash).
#[inline(always)]
fn fmul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The keyed flow-key hash (see the module doc for the construction and why
/// it replaced SipHash-1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHasher {
    k: [u64; 6],
}

impl FlowHasher {
    /// Derives the six mixing keys from the caller's (random) 128-bit key with
    /// SipHash-1-3, so related or low-entropy caller keys still give unrelated
    /// mixing keys.
    pub fn new(k0: u64, k1: u64) -> Self {
        let mut k = [0u64; 6];
        for (i, w) in k.iter_mut().enumerate() {
            let mut s = SipHasher13::new_with_keys(k0, k1);
            s.write_u64(0x666c_6f77_6b65_7930 + i as u64); // "flowkey0" + i
            *w = s.finish();
        }
        FlowHasher { k }
    }

    /// Hashes one flow key.
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hash_fields(
            key.zone, key.proto, &key.src, &key.dst, key.sport, key.dport,
        )
    }

    /// Hashes a flow key given as its fields (the same value as
    /// [`FlowHasher::hash`] of the `FlowKey` made of them).
    #[inline(always)]
    fn hash_fields(
        &self,
        zone: ZoneId,
        proto: u8,
        src: &IpAddr,
        dst: &IpAddr,
        sport: u16,
        dport: u16,
    ) -> u64 {
        let [k0, k1, k2, k3, k4, k5] = self.k;
        let head = u64::from(zone.0)
            | u64::from(proto) << 16
            | u64::from(sport) << 24
            | u64::from(dport) << 40;
        let h = match (src, dst) {
            // Addresses as native-endian words of their octets: the hash
            // needs no byte order, and the byte swaps cost ~4 instructions a
            // packet (IPv4; ~8 for IPv6).
            (IpAddr::V4(s), IpAddr::V4(d)) => fmul(
                (head | 4 << 56) ^ k0,
                (u64::from(u32::from_ne_bytes(s.octets())) << 32
                    | u64::from(u32::from_ne_bytes(d.octets())))
                    ^ k1,
            ),
            (&s, &d) => {
                let bits = |a: IpAddr| match a {
                    IpAddr::V4(v4) => u128::from_ne_bytes(v4.to_ipv6_mapped().octets()),
                    IpAddr::V6(v6) => u128::from_ne_bytes(v6.octets()),
                };
                let (s, d) = (bits(s), bits(d));
                let a = fmul((s >> 64) as u64 ^ k0, s as u64 ^ k1);
                let b = fmul((d >> 64) as u64 ^ k2, d as u64 ^ k3);
                fmul(a ^ (head | 6 << 56) ^ k4, b ^ k5)
            }
        };
        fmul(h ^ k2, k5 | 1)
    }

    /// Hashes the key a [`KeyRef`] names (equal to [`FlowHasher::hash`] of
    /// [`KeyRef::to_key`]).
    #[inline(always)]
    pub(crate) fn hash_ref(&self, r: KeyRef<'_>) -> u64 {
        self.hash_fields(
            r.zone,
            r.meta.proto,
            &r.meta.src,
            &r.meta.dst,
            r.sport,
            r.dport,
        )
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
        let h12 = FlowHasher::new(1, 2);
        assert_eq!(k.hash_with(&h12), k.hash_with(&FlowHasher::new(1, 2)));
        assert_ne!(k.hash_with(&h12), k.hash_with(&FlowHasher::new(1, 3)));
        assert_ne!(k.hash_with(&h12), k.hash_with(&FlowHasher::new(3, 2)));
        assert_ne!(k.hash_with(&h12), k.inverse(ZoneId(3)).hash_with(&h12));
        let mut z = k;
        z.zone = ZoneId(4);
        assert_ne!(k.hash_with(&h12), z.hash_with(&h12));
        let mut v6 = k;
        v6.src = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        v6.dst = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        assert_ne!(k.hash_with(&h12), v6.hash_with(&h12));
        let mut swapped = v6;
        std::mem::swap(&mut swapped.src, &mut swapped.dst);
        assert_ne!(v6.hash_with(&h12), swapped.hash_with(&h12));
    }

    /// A key read in place from the packet hashes and compares like the
    /// `FlowKey` it names, for both families and every field.
    #[test]
    fn key_ref_hashes_and_matches_like_the_key() {
        let h = FlowHasher::new(7, 9);
        let v4 = meta(
            L4::Udp {
                sport: 5,
                dport: 53,
            },
            17,
        );
        let mut v6 = v4;
        v6.src = "2001:db8::1".parse().unwrap();
        v6.dst = "2001:db8::2".parse().unwrap();
        for m in [v4, v6] {
            let r = KeyRef {
                meta: &m,
                zone: ZoneId(3),
                sport: 5,
                dport: 53,
            };
            let k = FlowKey::from_meta(ZoneId(3), &m);
            assert_eq!(r.to_key(), k);
            assert_eq!(h.hash_ref(r), h.hash(&k));
            assert!(r.matches(&k));
            let mut others = [k; 6];
            others[0].zone = ZoneId(4);
            others[1].proto = 6;
            others[2].sport = 6;
            others[3].dport = 54;
            others[4].src = m.dst;
            others[5].dst = m.src;
            for o in others {
                assert!(!r.matches(&o), "{o:?}");
                assert_ne!(h.hash_ref(r), h.hash(&o), "{o:?}");
            }
        }
    }

    /// Keys that differ in one field only (ports counting up, addresses
    /// counting up: what a scan or a flood sends) spread over hashbrown's
    /// bucket bits (low bits) and its tag bits (top 7) about evenly: no bucket
    /// of 256 gets more than twice its share of 65,536 keys, for both families
    /// and for several hash keys.
    #[test]
    fn sequential_keys_spread_over_buckets_and_tags() {
        for (k0, k1) in [(1, 2), (0, 0), (u64::MAX, 0x1234)] {
            let h = FlowHasher::new(k0, k1);
            for v6 in [false, true] {
                let mut low = [0u32; 256];
                let mut top = [0u32; 128];
                for i in 0u32..65_536 {
                    let (src, dst) = if v6 {
                        (
                            IpAddr::V6(std::net::Ipv6Addr::from(
                                0x2001_0db8_u128 << 96 | u128::from(i >> 4),
                            )),
                            IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_0001_u128 << 80)),
                        )
                    } else {
                        (
                            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 4))),
                            IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
                        )
                    };
                    let key = FlowKey {
                        zone: ZoneId(3),
                        proto: 6,
                        src,
                        dst,
                        sport: 40_000 + (i & 15) as u16,
                        dport: 443,
                    };
                    let x = h.hash(&key);
                    low[(x & 255) as usize] += 1;
                    top[(x >> 57) as usize] += 1;
                }
                assert!(low.iter().all(|&c| c < 2 * 256 && c > 256 / 2), "{low:?}");
                assert!(top.iter().all(|&c| c < 2 * 512 && c > 512 / 2), "{top:?}");
            }
        }
    }
}
