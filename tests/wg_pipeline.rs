//! The WireGuard layer wired to the pipeline, in memory (no root): a client
//! `WgDevice` talks to a gateway `WgDevice`; decrypted packets go through
//! `Pipeline::handle` with the sending peer's zone, as the IO shell does.

#![allow(clippy::unwrap_used)]

use ipnetwork::IpNetwork;
use portcullis::pipeline::{Pipeline, PipelineConfig};
use portcullis::rules::model::{Action, ChainDef};
use portcullis::verdict::{DropReason, Verdict};
use portcullis::wg::keys::{generate_private, public_key};
use portcullis::wg::{EncapStatus, WgConfig, WgDevice, WgOutput, WgPeer};
use portcullis::zone::{ZoneId, ZoneTable};
use std::net::SocketAddr;
use std::time::Instant;

/// A valid UDP/IPv4 datagram (port 53 to 53, empty payload).
fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let s = std::net::SocketAddr::from((src, 53));
    let d = std::net::SocketAddr::from((dst, 53));
    portcullis::packet::synth::udp(s, d, b"").expect("udp")
}

fn peer(zone: ZoneId, name: &str, key: [u8; 32], ep: Option<SocketAddr>) -> WgPeer {
    WgPeer {
        zone,
        name: name.into(),
        public_key: key,
        preshared_key: None,
        endpoint: ep,
        persistent_keepalive: None,
    }
}

/// Packets decrypted by each client.
type PerClient = Vec<Vec<Vec<u8>>>;

struct Lab {
    gw: WgDevice,
    clients: Vec<(WgDevice, SocketAddr)>,
    pipeline: Pipeline,
    gw_addr: SocketAddr,
}

/// Gateway with two clients (100.64.0.2/32 and 100.64.0.3/32).
fn lab() -> Lab {
    let gk = generate_private();
    let ck: Vec<[u8; 32]> = (0..2).map(|_| generate_private()).collect();
    let gw_addr: SocketAddr = "198.51.100.1:51820".parse().unwrap();
    let gw = WgDevice::new(WgConfig {
        private_key: gk,
        listen_port: 51820,
        peers: vec![
            peer(ZoneId::peer(0), "a", public_key(&ck[0]), None),
            peer(ZoneId::peer(1), "b", public_key(&ck[1]), None),
        ],
    })
    .unwrap();
    let clients = ck
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let dev = WgDevice::new(WgConfig {
                private_key: *k,
                listen_port: 0,
                peers: vec![peer(ZoneId::peer(0), "gw", public_key(&gk), Some(gw_addr))],
            })
            .unwrap();
            (dev, format!("203.0.113.{}:4000", i + 2).parse().unwrap())
        })
        .collect();
    let accept = ChainDef {
        rules: vec![],
        policy: Action::Accept,
    };
    let net = |s: &str| s.parse::<IpNetwork>().unwrap();
    let pipeline = Pipeline::new(
        PipelineConfig {
            zones: ZoneTable::new(vec![("a".into(), vec![]), ("b".into(), vec![])]),
            peer_routes: vec![
                (ZoneId::peer(0), vec![net("100.64.0.2/32")]),
                (ZoneId::peer(1), vec![net("100.64.0.3/32")]),
            ],
            local_addrs: vec!["100.64.0.1".parse().unwrap()],
            input: accept.clone(),
            forward: accept.clone(),
            output: accept,
            conntrack: Default::default(),
            fragments: Default::default(),
            reply_per_sec: 10,
            reply_burst: 10,
            netstack: false,
            nat: Default::default(),
        },
        (1, 2),
        Instant::now(),
    );
    Lab {
        gw,
        clients,
        pipeline,
        gw_addr,
    }
}

impl Lab {
    /// Client `i` sends `pkt`; returns the gateway's verdicts for what it decrypted
    /// (running the whole exchange, handshake included, to quiescence), and what
    /// each client decrypted.
    fn client_sends(&mut self, i: usize, pkt: &[u8]) -> (Vec<(ZoneId, Verdict)>, PerClient) {
        let now = Instant::now();
        let mut verdicts = vec![];
        let mut got = vec![vec![]; self.clients.len()];
        let mut to_gw: Vec<(SocketAddr, Vec<u8>)> = vec![];
        let mut out = vec![];
        let (c, caddr) = &mut self.clients[i];
        c.encapsulate(ZoneId::peer(0), pkt, now, &mut out);
        to_gw.extend(out.drain(..).filter_map(|o| match o {
            WgOutput::Network { data, .. } => Some((*caddr, data)),
            _ => None,
        }));
        for _ in 0..20 {
            let mut to_clients: Vec<(SocketAddr, Vec<u8>)> = vec![];
            for (from, d) in to_gw.drain(..) {
                let mut o = vec![];
                self.gw.handle_datagram(from, &d, now, &mut o);
                for x in o {
                    match x {
                        WgOutput::Network { to, data } => to_clients.push((to, data)),
                        WgOutput::Packet { zone, mut data } => {
                            let v = self.pipeline.handle(&mut data, zone, now);
                            if let Verdict::Forward(z) = v {
                                if z.is_peer() {
                                    let mut e = vec![];
                                    let st = self.gw.encapsulate(z, &data, now, &mut e);
                                    assert_ne!(st, EncapStatus::NoPeer);
                                    for y in e {
                                        if let WgOutput::Network { to, data } = y {
                                            to_clients.push((to, data));
                                        }
                                    }
                                }
                            }
                            verdicts.push((zone, v));
                        }
                    }
                }
            }
            if to_clients.is_empty() {
                break;
            }
            for (to, d) in to_clients {
                for (k, (c, caddr)) in self.clients.iter_mut().enumerate() {
                    if *caddr == to {
                        let mut o = vec![];
                        c.handle_datagram(self.gw_addr, &d, now, &mut o);
                        for x in o {
                            match x {
                                WgOutput::Network { data, .. } => to_gw.push((*caddr, data)),
                                WgOutput::Packet { data, .. } => got[k].push(data),
                            }
                        }
                    }
                }
            }
        }
        (verdicts, got)
    }
}

#[test]
fn spoofed_source_reaches_the_pipeline_and_is_dropped() {
    let mut l = lab();
    // legitimate: to the gateway itself (the input chain accepts; the host
    // behind the TUN answers)
    let (v, _) = l.client_sends(0, &ipv4([100, 64, 0, 2], [100, 64, 0, 1]));
    assert_eq!(v, vec![(ZoneId::peer(0), Verdict::Forward(ZoneId::TUN))]);
    // a source outside client a's AllowedIPs (even one that belongs to b)
    let (v, _) = l.client_sends(0, &ipv4([100, 64, 0, 3], [100, 64, 0, 1]));
    assert_eq!(
        v,
        vec![(ZoneId::peer(0), Verdict::Drop(DropReason::SpoofedSource))]
    );
    let (v, _) = l.client_sends(0, &ipv4([100, 64, 0, 99], [198, 51, 100, 7]));
    assert_eq!(
        v,
        vec![(ZoneId::peer(0), Verdict::Drop(DropReason::SpoofedSource))]
    );
    // to the host side
    let (v, _) = l.client_sends(0, &ipv4([100, 64, 0, 2], [198, 51, 100, 7]));
    assert_eq!(v, vec![(ZoneId::peer(0), Verdict::Forward(ZoneId::TUN))]);
}

#[test]
fn peer_to_peer_through_the_gateway() {
    let mut l = lab();
    // b must have talked to the gateway first (the gateway learns its endpoint)
    let (v, _) = l.client_sends(1, &ipv4([100, 64, 0, 3], [198, 51, 100, 7]));
    assert_eq!(v, vec![(ZoneId::peer(1), Verdict::Forward(ZoneId::TUN))]);
    let pkt = ipv4([100, 64, 0, 2], [100, 64, 0, 3]);
    let (v, got) = l.client_sends(0, &pkt);
    assert_eq!(
        v,
        vec![(ZoneId::peer(0), Verdict::Forward(ZoneId::peer(1)))]
    );
    assert_eq!(got[1], vec![pkt]);
    assert!(got[0].is_empty());
}

#[test]
fn unknown_endpoint_is_a_kill_switch_drop() {
    let mut l = lab();
    // b never connected: the gateway cannot reach it, a's packet to b is dropped
    let (v, got) = l.client_sends(0, &ipv4([100, 64, 0, 2], [100, 64, 0, 3]));
    assert_eq!(
        v,
        vec![(ZoneId::peer(0), Verdict::Forward(ZoneId::peer(1)))]
    );
    assert!(got.iter().all(Vec::is_empty));
    assert_eq!(l.gw.stats()[1].kill_switch_drops, 1);
    assert!(!l.gw.has_session(ZoneId::peer(1)));
}
