//! Offline replay: feeds IP packets (from a capture) to an [`Ids`] without
//! the rest of the gateway, for tests, benchmarks and suricata-verify cases.
//!
//! It does the two jobs the pipeline otherwise does before the IDS: IP
//! fragment reassembly (`packet::frag`, the datagram is inspected once
//! complete) and flow identification (the first packet's sender is the
//! client: `Dir::Original`; a SYN+ACK seen first makes its receiver the
//! client). Unlike conntrack it accepts every packet (no TCP window checks),
//! as Suricata's pcap mode does. Flow ids are handed out in order.

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
        let Ok(meta) = packet::parse(pkt) else {
            self.malformed += 1;
            return None;
        };
        if meta.frag.is_some() {
            return match self.frag.handle(pkt, &meta, ZoneId::TUN, now) {
                FragResult::Complete { datagram, .. } => {
                    let Ok(m2) = packet::parse(&datagram) else {
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
        let (sp, dp) = meta.ports();
        let k: Key = (meta.src, meta.dst, sp, dp, meta.proto);
        let r: Key = (meta.dst, meta.src, dp, sp, meta.proto);
        let (id, dir) = if let Some(id) = self.flows.get(&k) {
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
        };
        self.ids.inspect(id, dir, meta, pkt, now)
    }
}
