//! Benchmark-only bypass of the firewall pipeline: the decrypt-and-forward
//! bound of `scripts/bench-gateway` (issue 8: "say how close to that bound
//! you are by also running a gateway that does nothing but decrypt and
//! forward").
//!
//! With `PORTCULLIS_BENCH_BYPASS=1` in the environment at startup (read once,
//! TUN mode only), the shell skips [`crate::pipeline::Pipeline`] entirely:
//! every packet decrypted from a peer goes straight to the TUN, every packet
//! read from the TUN goes to the peer whose AllowedIPs hold its destination
//! (longest prefix, the same [`RouteTable`] the pipeline uses; no match:
//! dropped as `no_route`). No parsing beyond the destination address, no
//! connection tracking, no rules, no NAT, no IDS, no source check against the
//! AllowedIPs (wireguard-go does that one; boringtun's device too): this is
//! *not* a firewall and must never run as one. The startup log says so at
//! warn level, and `ctl status`-style reports still count packets as
//! forwarded by the shell only (the pipeline's counters stay at zero).
//!
//! Everything else is the normal data path (batched IO, UDP GRO/GSO, TUN
//! offloads, the same WireGuard layer), so the difference between a normal
//! run and a bypass run is the cost of the firewall itself.

use crate::pipeline::route::RouteTable;
use crate::zone::ZoneId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The environment switch.
pub const ENV: &str = "PORTCULLIS_BENCH_BYPASS";

/// The bypass's only state: the peers' AllowedIPs.
#[derive(Debug, Clone)]
pub struct Bypass {
    routes: RouteTable,
}

impl Bypass {
    /// `Some` when [`ENV`] is set to `1` (and the gateway runs in TUN mode);
    /// logs loudly either way it is set.
    pub fn from_env(settings: &super::RunSettings, netstack: bool) -> Option<Bypass> {
        let v = std::env::var_os(ENV)?;
        if v != "1" {
            tracing::warn!("{ENV} is set but not to 1: ignored (the firewall is on)");
            return None;
        }
        if netstack {
            tracing::warn!("{ENV}=1 ignored in netstack mode (the firewall is on)");
            return None;
        }
        let b = Bypass::new(settings);
        tracing::warn!(
            "{ENV}=1: BENCHMARK BYPASS: NO FIREWALL. Packets skip the pipeline \
             (no rules, no connection tracking, no NAT, no IDS, no source check): \
             decrypted packets go straight to the TUN, TUN packets to the peer by \
             AllowedIPs. Never run this as a gateway."
        );
        Some(b)
    }

    /// The route table from the peers' AllowedIPs.
    pub fn new(settings: &super::RunSettings) -> Bypass {
        let mut routes = RouteTable::new();
        for p in &settings.wg.peers {
            let nets = settings
                .peer_ips
                .iter()
                .filter(|(name, _)| *name == p.name)
                .flat_map(|(_, nets)| nets.iter());
            for n in nets {
                routes.insert(*n, p.zone);
            }
        }
        Bypass { routes }
    }

    /// Where a packet entering from `ingress` goes: peers' packets to the
    /// TUN, the TUN's to the peer owning the destination; `None`: no route.
    pub fn route(&self, pkt: &[u8], ingress: ZoneId) -> Option<ZoneId> {
        if ingress.is_peer() {
            return Some(ZoneId::TUN);
        }
        self.routes.lookup(dst_addr(pkt)?)
    }
}

/// The destination address of an IPv4 or IPv6 packet (no other checks).
fn dst_addr(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 => {
            let b: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> super::super::RunSettings {
        let toml = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
[[peer]]
name = "a"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32", "2001:db8:64::2/128"]
[[peer]]
name = "b"
public_key = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA="
allowed_ips = ["0.0.0.0/0"]
"#;
        let c = crate::config::load_str(toml, "test").unwrap();
        super::super::RunSettings::from_config(&c).unwrap()
    }

    fn v4(dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn routes_by_allowed_ips_longest_prefix() {
        let s = settings();
        let b = Bypass::new(&s);
        let za = s.wg.peers.iter().find(|p| p.name == "a").unwrap().zone;
        let zb = s.wg.peers.iter().find(|p| p.name == "b").unwrap().zone;
        assert_ne!(za, zb);
        assert_eq!(b.route(&v4([100, 64, 0, 2]), ZoneId::TUN), Some(za));
        assert_eq!(b.route(&v4([203, 0, 113, 2]), ZoneId::TUN), Some(zb));
        let mut p6 = vec![0u8; 40];
        p6[0] = 0x60;
        p6[24..40].copy_from_slice(&"2001:db8:64::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(b.route(&p6, ZoneId::TUN), Some(za));
        p6[39] = 3; // no v6 default route
        assert_eq!(b.route(&p6, ZoneId::TUN), None);
        // from a peer: always to the TUN
        assert_eq!(b.route(&v4([1, 2, 3, 4]), za), Some(ZoneId::TUN));
    }

    #[test]
    fn malformed_packets_have_no_route() {
        let b = Bypass::new(&settings());
        assert_eq!(b.route(&[], ZoneId::TUN), None);
        assert_eq!(b.route(&[0x45, 0, 0], ZoneId::TUN), None);
        assert_eq!(b.route(&[0x60; 30], ZoneId::TUN), None);
        assert_eq!(b.route(&[0x00; 40], ZoneId::TUN), None);
    }
}
