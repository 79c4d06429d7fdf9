//! A small, fixed gateway setup for tests, benchmarks, fuzzing and examples.
//!
//! Zones: peer `laptop` (100.64.0.2/32, 2001:db8:64::2/128, group `staff`),
//! peer `phone` (100.64.0.3/32, 2001:db8:64::3/128, group `guests`), the TUN
//! (everything else); the gateway's own addresses are 100.64.0.1 and
//! 2001:db8:64::1. Nothing here is used on the data path of a real gateway.

use super::{Pipeline, PipelineConfig};
use crate::conntrack::CtConfig;
use crate::packet::FragConfig;
use crate::rules::{Action, ChainDef, Rule};
use crate::zone::{ZoneId, ZoneTable};
use std::time::Instant;

/// A fixed hash key: tests must be reproducible.
pub const KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

fn net(s: &str) -> ipnetwork::IpNetwork {
    s.parse().unwrap_or_else(|_| {
        ipnetwork::IpNetwork::V4(ipnetwork::Ipv4Network::from(
            std::net::Ipv4Addr::UNSPECIFIED,
        ))
    })
}

/// The testbed with the given forward chain (input accepts, output accepts).
pub fn config(forward: ChainDef) -> PipelineConfig {
    let zones = ZoneTable::new(vec![
        ("laptop".into(), vec!["staff".into()]),
        ("phone".into(), vec!["guests".into()]),
    ]);
    PipelineConfig {
        zones,
        peer_routes: vec![
            (
                ZoneId::peer(0),
                vec![net("100.64.0.2/32"), net("2001:db8:64::2/128")],
            ),
            (
                ZoneId::peer(1),
                vec![net("100.64.0.3/32"), net("2001:db8:64::3/128")],
            ),
        ],
        local_addrs: vec![
            "100.64.0.1"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            "2001:db8:64::1"
                .parse()
                .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into()),
        ],
        input: ChainDef {
            rules: vec![],
            policy: Action::Accept,
        },
        forward,
        output: ChainDef {
            rules: vec![],
            policy: Action::Accept,
        },
        conntrack: CtConfig::default(),
        fragments: FragConfig::default(),
        reply_per_sec: 1000,
        reply_burst: 1000,
        netstack: false,
        nat: Default::default(),
    }
}

/// A pipeline whose forward chain accepts everything.
pub fn pipeline_accept_forward(now: Instant) -> Pipeline {
    Pipeline::new(
        config(ChainDef {
            rules: vec![Rule::any(Action::Accept)],
            policy: Action::Drop,
        }),
        KEY,
        now,
    )
}

/// Sets up an established TCP flow from `client` (peer `laptop`) to `server`
/// (behind the TUN) through `p` — SYN, SYN-ACK, ACK — and returns an
/// in-window data segment of that flow carrying `payload_len` bytes.
/// `None` when the pipeline did not forward one of the handshake packets.
pub fn established_tcp(
    p: &mut Pipeline,
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    payload_len: usize,
    now: Instant,
) -> Option<Vec<u8>> {
    use crate::packet::synth::{self, TcpSpec};
    use crate::packet::tcp_flags::{ACK, PSH, SYN};
    use crate::verdict::Verdict;
    let laptop = ZoneId::peer(0);
    let syn = TcpSpec {
        flags: SYN,
        seq: 1000,
        ack: 0,
        window: 65535,
        wscale: Some(7),
        mss: Some(1380),
    };
    let synack = TcpSpec {
        flags: SYN | ACK,
        seq: 5000,
        ack: 1001,
        ..syn
    };
    let ack = TcpSpec {
        flags: ACK,
        seq: 1001,
        ack: 5001,
        window: 2048,
        wscale: None,
        mss: None,
    };
    let steps = [
        (synth::tcp(client, server, syn, b"")?, laptop, ZoneId::TUN),
        (
            synth::tcp(server, client, synack, b"")?,
            ZoneId::TUN,
            laptop,
        ),
        (synth::tcp(client, server, ack, b"")?, laptop, ZoneId::TUN),
    ];
    for (mut pkt, from, to) in steps {
        if p.handle(&mut pkt, from, now) != Verdict::Forward(to) {
            return None;
        }
    }
    let data = TcpSpec {
        flags: ACK | PSH,
        ..ack
    };
    synth::tcp(client, server, data, &vec![0x5a; payload_len])
}
