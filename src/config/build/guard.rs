//! Validation of `[blocklist]`, `[ids.anomaly]` and `ids.block_on_drop`
//! (see `crate::blocklist` and `crate::anomaly`; every key is documented in
//! `conf/gateway.toml`).

use super::Builder;
use crate::anomaly::{AnomalyConfig, Detector, Kind, MAX_THRESHOLD};
use crate::blocklist::{BlockConfig, ConfigEntry, Target};
use crate::config::parse;
use crate::config::value::{join, Tab};
use crate::config::Peer;
use config::ValueKind;
use std::time::Duration;

const BLOCKLIST_KEYS: &[&str] = &["max_entries", "default_ttl", "addresses", "peers"];
const ANOMALY_KEYS: &[&str] = &[
    "enabled",
    "block",
    "max_tracked",
    "port_scan",
    "host_sweep",
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "brute_force",
];
const DETECTOR_KEYS: &[&str] = &["enabled", "threshold", "window", "block"];
/// 2^24 entries: far above any real list, below what would exhaust memory
/// (~100 bytes an entry).
const MAX_BLOCK_ENTRIES: i128 = 1 << 24;
/// 2^22 keys per detector table.
const MAX_TRACKED: i128 = 1 << 22;

impl Builder {
    /// `[blocklist]`, resolved against the peers (by name or public key).
    pub(super) fn blocklist(&mut self, top: super::Tab<'_>, peers: &[Peer]) -> BlockConfig {
        let mut b = BlockConfig {
            peers: peers
                .iter()
                .map(|p| (p.name.clone(), p.public_key))
                .collect(),
            ..BlockConfig::default()
        };
        let Some(t) = self.section(top, "blocklist") else {
            return b;
        };
        self.ctx.check_keys(t, BLOCKLIST_KEYS);
        if let Some(n) = self.ctx.int_at(t, "max_entries", 1, MAX_BLOCK_ENTRIES) {
            b.max_entries = n as usize;
        }
        if let Some(d) = self.duration_at(t, "default_ttl") {
            b.default_ttl = Some(d);
        }
        if let Some(list) = self.ctx.list_at(
            t,
            "addresses",
            "addresses or networks (\"192.0.2.7\", \"198.51.100.0/24\")",
        ) {
            for (path, v) in list {
                let Some(s) = self.ctx.as_str(&path, &v) else {
                    continue;
                };
                match parse::cidr(s.trim()) {
                    Ok(n) => b.entries.push(ConfigEntry {
                        target: Target::Net(parse::masked(n)),
                        reason: format!("config {path}"),
                    }),
                    Err(e) => self.ctx.bad(&path, &v, e),
                }
            }
        }
        if let Some(list) = self.ctx.list_at(t, "peers", "peer names or public keys") {
            for (path, v) in list {
                let Some(s) = self.ctx.as_str(&path, &v) else {
                    continue;
                };
                let s = s.trim();
                let by_name = peers.iter().find(|p| p.name == s);
                let by_key = parse::key(s)
                    .ok()
                    .and_then(|k| peers.iter().find(|p| p.public_key == k));
                match by_name.or(by_key) {
                    Some(p) => b.entries.push(ConfigEntry {
                        target: Target::Peer(p.public_key),
                        reason: format!("config {path}"),
                    }),
                    None => self.ctx.bad(
                        &path,
                        &v,
                        "no [[peer]] has this name or public key (expected a peer's name or key)",
                    ),
                }
            }
        }
        if b.entries.len() > b.max_entries {
            self.ctx.report(
                "blocklist.max_entries",
                t.map.get("max_entries"),
                format!(
                    "{} entries are listed in [blocklist] but max_entries is {}",
                    b.entries.len(),
                    b.max_entries
                ),
            );
        }
        b
    }

    /// `ids.block_on_drop`: a duration; only meaningful in prevent mode.
    pub(super) fn block_on_drop(&mut self, t: Tab<'_>, mode: crate::ids::Mode) -> Option<Duration> {
        let d = self.duration_at(t, "block_on_drop")?;
        if mode != crate::ids::Mode::Prevent {
            self.bad_at(
                t,
                "block_on_drop",
                "only applies with ids.mode = \"prevent\" (detect mode drops nothing)",
            );
            return None;
        }
        Some(d)
    }

    /// `[ids.anomaly]`: `None` when absent or `enabled = false`.
    pub(super) fn anomaly(&mut self, ids: Tab<'_>) -> Option<AnomalyConfig> {
        let map = self.ctx.table_at(ids, "anomaly")?;
        let t = Tab {
            path: "ids.anomaly",
            map,
        };
        self.ctx.check_keys(t, ANOMALY_KEYS);
        let mut c = AnomalyConfig::default();
        let enabled = self.ctx.bool_at(t, "enabled").unwrap_or(true);
        if let Some(d) = self.duration_at(t, "block") {
            c.block = Some(d);
        }
        if let Some(n) = self.ctx.int_at(t, "max_tracked", 1, MAX_TRACKED) {
            c.max_tracked = n as usize;
        }
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            let path = join("ids.anomaly", k.name());
            let Some(map) = self.ctx.table_at(t, k.name()) else {
                continue;
            };
            let dt = Tab { path: &path, map };
            self.ctx.check_keys(dt, DETECTOR_KEYS);
            let mut d: Detector = k.default_detector();
            if let Some(n) = self
                .ctx
                .int_at(dt, "threshold", 1, i128::from(MAX_THRESHOLD))
            {
                d.threshold = n as u32;
            }
            if let Some(w) = self.duration_at(dt, "window") {
                d.window = w;
            }
            if let Some(v) = dt.map.get("block") {
                d.block = match v.kind {
                    ValueKind::Boolean(false) => Some(None),
                    _ => self.duration_at(dt, "block").map(Some),
                };
            }
            let on = self.ctx.bool_at(dt, "enabled").unwrap_or(true);
            if let Some(slot) = c.detectors.get_mut(i) {
                *slot = on.then_some(d);
            }
        }
        enabled.then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use crate::anomaly::Kind;
    use crate::blocklist::Target;
    use crate::config::load_str;
    use std::time::Duration;

    const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32"]
"#;

    #[test]
    fn absent_means_empty_and_off() {
        let c = load_str(BASE, "gw.toml").unwrap();
        let p = c.protection();
        assert!(p.blocklist.entries.is_empty());
        assert_eq!(p.blocklist.peers.len(), 1);
        assert_eq!(p.anomaly, None);
        assert_eq!(p.ids_block_on_drop, None);
    }

    #[test]
    fn all_keys_parse() {
        let text = format!(
            "{BASE}{}",
            r#"
[[rule]]
chain = "forward"
name = "honeypot"
proto = "tcp"
dport = 23
action = "drop"
block = "10m"

[blocklist]
max_entries = 100
default_ttl = "1h"
addresses = ["192.0.2.7", "198.51.100.9/24"]
peers = ["laptop"]

[ids]
mode = "prevent"
block_on_drop = "5m"

[ids.anomaly]
block = "2m"
max_tracked = 1000

[ids.anomaly.port_scan]
threshold = 10
window = "5s"

[ids.anomaly.icmp_flood]
enabled = false

[ids.anomaly.brute_force]
block = false
"#
        );
        let c = load_str(&text, "gw.toml").unwrap();
        assert_eq!(c.forward.rules[0].block, Some(Duration::from_secs(600)));
        let b = &c.blocklist;
        assert_eq!(b.max_entries, 100);
        assert_eq!(b.default_ttl, Some(Duration::from_secs(3600)));
        let targets: Vec<Target> = b.entries.iter().map(|e| e.target).collect();
        assert_eq!(
            targets,
            vec![
                Target::Net("192.0.2.7/32".parse().unwrap()),
                Target::Net("198.51.100.0/24".parse().unwrap()),
                Target::Peer(c.peers[0].public_key),
            ]
        );
        assert_eq!(c.ids.block_on_drop, Some(Duration::from_secs(300)));
        let a = c.ids.anomaly.clone().unwrap();
        assert_eq!(a.max_tracked, 1000);
        let ps = a.detector(Kind::PortScan).unwrap();
        assert_eq!((ps.threshold, ps.window), (10, Duration::from_secs(5)));
        assert!(a.detector(Kind::IcmpFlood).is_none());
        assert_eq!(a.block_for(Kind::PortScan), Some(Duration::from_secs(120)));
        assert_eq!(a.block_for(Kind::BruteForce), None);
        assert_eq!(
            a.detector(Kind::SynFlood),
            Some(&Kind::SynFlood.default_detector())
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = format!(
            "{BASE}{}",
            r#"
[[rule]]
chain = "forward"
action = "drop"
block = "soon"

[blocklist]
max_entries = 1
addresses = ["192.0.2.300", "192.0.2.1"]
peers = ["mallory"]
default_tll = "1h"

[ids]
block_on_drop = "5m"

[ids.anomaly.port_scan]
threshold = 0
windw = "1s"

[ids.anomaly.telepathy]
threshold = 1
"#
        );
        let e = load_str(&text, "gw.toml").unwrap_err().to_string();
        for want in [
            "rule[0].block",
            "blocklist.addresses[0]",
            "blocklist.peers[0]",
            "blocklist.default_tll",
            "ids.block_on_drop",
            "prevent",
            "ids.anomaly.port_scan.threshold",
            "ids.anomaly.port_scan.windw",
            "ids.anomaly.telepathy",
            "gw.toml",
        ] {
            assert!(e.contains(want), "missing {want} in:\n{e}");
        }
        // two entries over max_entries = 1
        let text = format!(
            "{BASE}[blocklist]\nmax_entries = 1\naddresses = [\"192.0.2.1\", \"192.0.2.2\"]\n"
        );
        let e = load_str(&text, "gw.toml").unwrap_err().to_string();
        assert!(e.contains("blocklist.max_entries"), "{e}");
    }
}
