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
