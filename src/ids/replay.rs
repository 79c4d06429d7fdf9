//! Offline replay: feeds IP packets (from a capture) to an [`Ids`] without
//! the rest of the gateway, for tests, benchmarks and suricata-verify cases.
//!
//! It does the two jobs the pipeline otherwise does before the IDS: IP
//! fragment reassembly (`packet::frag`, the datagram is inspected once
//! complete) and flow identification (the first packet's sender is the
//! client: `Dir::Original`; a SYN+ACK seen first makes its receiver the
//! client). Unlike conntrack it accepts every packet (no TCP window checks),
//! as Suricata's pcap mode does. Flow ids are handed out in order.
//!
//! Checksums are not verified (Suricata's `-k none`, which suricata-verify
//! uses: captures taken on the sending host carry offloaded, unfilled
//! checksums), and tiny first fragments are accepted (Suricata reassembles
//! them; the gateway's own data path drops them, RFC 1858).

use super::{Ids, IdsVerdict};
use crate::conntrack::{Dir, FlowId};
use crate::packet::frag::{FragResult, Reassembler};
use crate::packet::{self, FragConfig, L4};
use crate::zone::ZoneId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

type Key = (IpAddr, IpAddr, u16, u16, u8);

/// Replays packets into an engine.
#[derive(Debug)]
pub struct Replay {
    pub ids: Ids,
    flows: HashMap<Key, FlowId>,
    frag: Reassembler,
    next: u32,
    /// Packets that did not parse.
    pub malformed: usize,
}

impl Replay {
    pub fn new(ids: Ids) -> Self {
        Replay {
            ids,
            flows: HashMap::new(),
            frag: Reassembler::new(FragConfig::default(), (7, 11)),
            next: 0,
            malformed: 0,
        }
    }

    /// One IP packet. `None` when it was held (fragment) or malformed.
    pub fn packet(&mut self, pkt: &[u8], now: Instant) -> Option<IdsVerdict> {
        let mut fixed;
        let mut pkt = pkt;
        if pkt.first().map(|b| b >> 4) == Some(4) {
            fixed = pkt.to_vec();
            fill_ipv4_header_checksum(&mut fixed);
            pkt = &fixed;
        }
        let Ok(meta) = parse(pkt) else {
            self.malformed += 1;
            return None;
        };
        if meta.frag.is_some() {
            return match self.frag.handle(pkt, &meta, ZoneId::TUN, now) {
                FragResult::Complete { datagram, .. } => {
                    let Ok(m2) = parse(&datagram) else {
                        self.malformed += 1;
                        return None;
                    };
                    Some(self.inspect(&datagram, &m2, now))
                }
                _ => None,
            };
        }
        Some(self.inspect(pkt, &meta, now))
    }

    fn inspect(&mut self, pkt: &[u8], meta: &packet::PacketMeta, now: Instant) -> IdsVerdict {
        let (id, dir) = self.flow_of(meta);
        self.ids.inspect(id, dir, meta, pkt, now)
    }

    /// The flow and direction of a packet (a new flow id for a new 5-tuple).
    pub fn flow_of(&mut self, meta: &packet::PacketMeta) -> (FlowId, Dir) {
        let (sp, dp) = meta.ports();
        let k: Key = (meta.src, meta.dst, sp, dp, meta.proto);
        let r: Key = (meta.dst, meta.src, dp, sp, meta.proto);
        if let Some(id) = self.flows.get(&k) {
            (*id, Dir::Original)
        } else if let Some(id) = self.flows.get(&r) {
            (*id, Dir::Reply)
        } else {
            let id = FlowId(self.next);
            self.next += 1;
            let synack = matches!(meta.l4, L4::Tcp(t) if t.flags & 0x12 == 0x12);
            if synack {
                self.flows.insert(r, id);
                (id, Dir::Reply)
            } else {
                self.flows.insert(k, id);
                (id, Dir::Original)
            }
        }
    }
}

/// Parses a captured IP packet as the replay does (checksums not verified,
/// tiny first fragments accepted); an IPv4 header checksum is filled in first.
pub fn parse_captured(pkt: &[u8]) -> Option<(Vec<u8>, packet::PacketMeta)> {
    let mut p = pkt.to_vec();
    if p.first().map(|b| b >> 4) == Some(4) {
        fill_ipv4_header_checksum(&mut p);
    }
    let m = parse(&p).ok()?;
    Some((p, m))
}

fn parse(pkt: &[u8]) -> Result<packet::PacketMeta, packet::ParseError> {
    packet::parse::parse_allowing_tiny_fragments(
        pkt,
        packet::parse::ParseOptions {
            verify_l4_checksum: false,
        },
    )
}

/// Recomputes an IPv4 header checksum in place (RFC 1071).
fn fill_ipv4_header_checksum(p: &mut [u8]) {
    let hlen = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
    if hlen < 20 || p.len() < hlen {
        return;
    }
    p[10] = 0;
    p[11] = 0;
    let mut sum: u32 = 0;
    for w in p[..hlen].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}
