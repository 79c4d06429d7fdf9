//! The pipeline: every packet's path through the gateway, sans IO.
//!
//! `Pipeline::handle(packet, ingress zone, now) -> Verdict` is the single entry
//! point for packets from the TUN device, from decrypted WireGuard peers and
//! from the netstack. It does no IO, reads no clock and takes no locks; packets
//! the pipeline itself originates (rejects, echo replies, released fragments)
//! are queued and drained with [`Pipeline::poll_transmit`].
//!
//! INTERIM: this version routes only (cryptokey routing + anti-spoofing); the
//! full stateful path (parse, defrag, conntrack, rules) replaces it.

pub mod route;

use crate::conntrack::CtConfig;
use crate::packet::FragConfig;
use crate::rules::ChainDef;
use crate::verdict::{DropReason, Verdict};
use crate::zone::{ZoneId, ZoneTable};
use ipnetwork::IpNetwork;
use route::RouteTable;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Everything the pipeline needs, built from the validated config.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub zones: ZoneTable,
    /// Each peer zone with its AllowedIPs.
    pub peer_routes: Vec<(ZoneId, Vec<IpNetwork>)>,
    /// The gateway's own addresses (its tunnel addresses): traffic to them is `local`.
    pub local_addrs: Vec<IpAddr>,
    pub input: ChainDef,
    pub forward: ChainDef,
    pub output: ChainDef,
    pub conntrack: CtConfig,
    pub fragments: FragConfig,
    /// Rate limit for generated replies (RST / ICMP errors / echo replies).
    pub reply_per_sec: u32,
    pub reply_burst: u32,
}

/// A packet the pipeline originated, to be sent to `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub zone: ZoneId,
    pub packet: Vec<u8>,
}

/// The packet path.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    routes: RouteTable,
    out: VecDeque<Transmit>,
}

fn header_addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let s: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some((Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into()))
        }
        6 if pkt.len() >= 40 => {
            let s: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some((Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into()))
        }
        _ => None,
    }
}

impl Pipeline {
    /// Builds the pipeline. `hash_key` keys every table indexed by packet data.
    pub fn new(cfg: PipelineConfig, _hash_key: (u64, u64), _now: Instant) -> Self {
        let mut routes = RouteTable::new();
        for (zone, nets) in &cfg.peer_routes {
            for n in nets {
                routes.insert(*n, *zone);
            }
        }
        Pipeline {
            cfg,
            routes,
            out: VecDeque::new(),
        }
    }

    /// Decides one packet. The packet may be rewritten in place (NAT).
    pub fn handle(&mut self, pkt: &mut [u8], ingress: ZoneId, _now: Instant) -> Verdict {
        let Some((src, dst)) = header_addrs(pkt) else {
            return Verdict::Drop(DropReason::Malformed(
                crate::packet::ParseError::TruncatedIp,
            ));
        };
        if ingress.is_peer() && self.routes.lookup(src) != Some(ingress) {
            return Verdict::Drop(DropReason::SpoofedSource);
        }
        if self.cfg.local_addrs.contains(&dst) {
            return Verdict::Local;
        }
        match self.routes.lookup(dst) {
            Some(z) if z != ingress => Verdict::Forward(z),
            Some(_) => Verdict::Drop(DropReason::NoRoute),
            None if ingress != ZoneId::TUN => Verdict::Forward(ZoneId::TUN),
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }

    /// Packets the pipeline originated (rejects, echo replies, released fragments).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Housekeeping: expiry of flows and fragments. Call about once a second.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The zone table in use.
    pub fn zones(&self) -> &ZoneTable {
        &self.cfg.zones
    }
}
