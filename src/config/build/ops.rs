//! Validation of the operations sections (see `config::ops`).

use super::Builder;
use crate::config::ops::{Capture, CaptureWhat, Control, Events, Ops};
use crate::config::value::{join, Tab};
use crate::rules::model::ChainDef;
use crate::shaper::{ConnSpec, PeerLimits, RateSpec, ShaperConfig};
use crate::verdict::Chain;
use crate::zone::ZoneTable;
use config::{Map, Value, ValueKind};
use std::path::PathBuf;

const CONTROL_KEYS: &[&str] = &["socket", "group", "enabled"];
const METRICS_KEYS: &[&str] = &["listen"];
const EVENTS_KEYS: &[&str] = &["eve_file", "flows", "drops", "rate_per_sec", "burst"];
const CAPTURE_KEYS: &[&str] = &["file", "what", "rules", "max_bytes", "files"];
const LIMITS_KEYS: &[&str] = &[
    "per_source_max_conns",
    "per_source_new_per_sec",
    "per_source_new_burst",
    "peer",
    "rule",
];
const PEER_LIMIT_KEYS: &[&str] = &[
    "peer",
    "bytes_per_sec",
    "burst_bytes",
    "packets_per_sec",
    "burst_packets",
    "max_conns",
    "new_conns_per_sec",
    "new_conns_burst",
];
const RULE_LIMIT_KEYS: &[&str] = &[
    "rule",
    "bytes_per_sec",
    "burst_bytes",
    "packets_per_sec",
    "burst_packets",
];
/// 100 Gbit/s in bytes: anything above is a typo.
const MAX_BYTES_PER_SEC: i128 = 12_500_000_000;
const MAX_PACKETS_PER_SEC: i128 = 100_000_000;

impl Builder {
    fn path_at(&mut self, t: Tab<'_>, key: &str) -> Option<PathBuf> {
        let s = self.ctx.str_at(t, key)?;
        if s.is_empty() {
            self.bad_at(t, key, "expected a file path");
            return None;
        }
        let p = PathBuf::from(s);
        Some(if p.is_relative() {
            self.base_dir.join(p)
        } else {
            p
        })
    }

    pub(super) fn ops(&mut self, top: Tab<'_>, zones: &ZoneTable, chains: [&ChainDef; 3]) -> Ops {
        Ops {
            control: self.control(top),
            metrics: self.metrics(top),
            events: self.events(top),
            capture: self.capture(top, chains),
            limits: self.limits(top, zones, chains),
        }
    }

    fn control(&mut self, top: Tab<'_>) -> Control {
        let mut c = Control::default();
        let Some(t) = self.section(top, "control") else {
            return c;
        };
        self.ctx.check_keys(t, CONTROL_KEYS);
        if let Some(p) = self.path_at(t, "socket") {
            c.socket = Some(p);
        }
        if let Some(g) = self.ctx.str_at(t, "group") {
            if g.is_empty() || g.contains(['/', ':', ' ']) {
                self.bad_at(t, "group", "expected a group name or number");
            } else {
                c.group = Some(g);
            }
        }
        if self.ctx.bool_at(t, "enabled") == Some(false) {
            c.socket = None;
        }
        c
    }

    fn metrics(&mut self, top: Tab<'_>) -> Option<std::net::SocketAddr> {
        let t = self.section(top, "metrics")?;
        self.ctx.check_keys(t, METRICS_KEYS);
        let s = self.ctx.str_at(t, "listen")?;
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad_at(
                    t,
                    "listen",
                    "expected an address and port, like \"127.0.0.1:9587\" or \"[::1]:9587\"",
                );
                None
            }
        }
    }

    fn events(&mut self, top: Tab<'_>) -> Events {
        let mut e = Events::default();
        let Some(t) = self.section(top, "events") else {
            return e;
        };
        self.ctx.check_keys(t, EVENTS_KEYS);
        e.eve_file = self.path_at(t, "eve_file");
        if let Some(b) = self.ctx.bool_at(t, "flows") {
            e.flows = b;
        }
        if let Some(b) = self.ctx.bool_at(t, "drops") {
            e.drops = b;
        }
        if let Some(n) = self.ctx.int_at(t, "rate_per_sec", 0, 1_000_000) {
            e.rate_per_sec = n as u32;
        }
        if let Some(n) = self.ctx.int_at(t, "burst", 1, 1_000_000) {
            e.burst = n as u32;
        }
        e
    }

    /// Resolves a rule name to `(chain, index)`; reports unknown names.
    fn rule_ref(
        &mut self,
        key: &str,
        v: &Value,
        name: &str,
        chains: [&ChainDef; 3],
    ) -> Option<(Chain, u32)> {
        for (chain, def) in Chain::ALL.into_iter().zip(chains) {
            if let Some(i) = def
                .rules
                .iter()
                .position(|r| r.name.as_deref() == Some(name))
            {
                return Some((chain, i as u32));
            }
        }
        self.ctx
            .bad(key, v, "expected the name of a [[rule]] (its `name` key)");
        None
    }

    fn capture(&mut self, top: Tab<'_>, chains: [&ChainDef; 3]) -> Capture {
        let mut c = Capture::default();
        let wanted = chains.iter().any(|d| d.rules.iter().any(|r| r.capture));
        let Some(t) = self.section(top, "capture") else {
            if wanted {
                self.ctx.missing(
                    top,
                    "capture",
                    "a [capture] section with a file (a rule has capture = true)",
                );
            }
            return c;
        };
        self.ctx.check_keys(t, CAPTURE_KEYS);
        c.file = self.path_at(t, "file");
        if let Some(s) = self.ctx.str_at(t, "what") {
            match s.as_str() {
                "drops" => c.what = CaptureWhat::Drops,
                "all" => c.what = CaptureWhat::All,
                "rules" => c.what = CaptureWhat::Rules,
                _ => self.bad_at(t, "what", "expected \"drops\", \"all\" or \"rules\""),
            }
        }
        if let Some(v) = t.map.get("rules") {
            let key = join(t.path, "rules");
            for (k, item) in self.ctx.one_or_many(&key, v) {
                if let Some(name) = self.ctx.as_str(&k, &item).map(str::to_owned) {
                    if let Some(r) = self.rule_ref(&k, &item, &name, chains) {
                        c.rules.push(r);
                    }
                }
            }
        }
        // rules with `capture = true` (by position in their chain)
        for (chain, def) in Chain::ALL.into_iter().zip(chains) {
            for (i, r) in def.rules.iter().enumerate() {
                if r.capture && !c.rules.contains(&(chain, i as u32)) {
                    c.rules.push((chain, i as u32));
                }
            }
        }
        if wanted && c.file.is_none() {
            self.ctx
                .missing(t, "file", "a pcap file (a rule has capture = true)");
        }
        if c.what == CaptureWhat::Rules && c.rules.is_empty() && !t.map.contains_key("rules") {
            self.ctx
                .missing(t, "rules", "a list of rule names (with what = \"rules\")");
        }
        if let Some(n) = self.ctx.int_at(t, "max_bytes", 4096, 1 << 40) {
            c.max_bytes = n as u64;
        }
        if let Some(n) = self.ctx.int_at(t, "files", 1, 1000) {
            c.files = n as u32;
        }
        c
    }

    fn rate(&mut self, t: Tab<'_>) -> RateSpec {
        let mut r = RateSpec::default();
        let get = |b: &mut Builder, k: &str, hi: i128| b.ctx.int_at(t, k, 1, hi).map(|n| n as u64);
        r.bytes_per_sec = get(self, "bytes_per_sec", MAX_BYTES_PER_SEC);
        r.burst_bytes = get(self, "burst_bytes", MAX_BYTES_PER_SEC);
        r.packets_per_sec = get(self, "packets_per_sec", MAX_PACKETS_PER_SEC);
        r.burst_packets = get(self, "burst_packets", MAX_PACKETS_PER_SEC);
        r
    }

    fn nested_tables<'v>(
        &mut self,
        t: Tab<'v>,
        key: &str,
    ) -> Vec<(String, &'v Map<String, Value>)> {
        let Some(v) = t.map.get(key) else {
            return Vec::new();
        };
        let path = join(t.path, key);
        let ValueKind::Array(items) = &v.kind else {
            self.ctx
                .wrong_type(&path, v, &format!("a list of tables, written [[{path}]]"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(m) = self.ctx.as_table(&p, item) {
                out.push((p, m));
            }
        }
        out
    }

    fn limits(&mut self, top: Tab<'_>, zones: &ZoneTable, chains: [&ChainDef; 3]) -> ShaperConfig {
        let mut s = ShaperConfig::default();
        let Some(t) = self.section(top, "limits") else {
            return s;
        };
        self.ctx.check_keys(t, LIMITS_KEYS);
        s.per_source = ConnSpec {
            max_concurrent: self
                .ctx
                .int_at(t, "per_source_max_conns", 1, u32::MAX.into())
                .map(|n| n as u32),
            new_per_sec: self
                .ctx
                .int_at(t, "per_source_new_per_sec", 1, u32::MAX.into())
                .map(|n| n as u32),
            new_burst: self
                .ctx
                .int_at(t, "per_source_new_burst", 1, u32::MAX.into())
                .map(|n| n as u32),
        };
        for (path, map) in self.nested_tables(t, "peer") {
            let pt = Tab { path: &path, map };
            self.ctx.check_keys(pt, PEER_LIMIT_KEYS);
            let Some(name) = self.ctx.str_at(pt, "peer") else {
                self.ctx.missing(pt, "peer", "the name of a [[peer]]");
                continue;
            };
            let Some(zone) = zones.peer(&name) else {
                self.bad_at(pt, "peer", "expected the name of a [[peer]]");
                continue;
            };
            let rate = self.rate(pt);
            let conns = ConnSpec {
                max_concurrent: self
                    .ctx
                    .int_at(pt, "max_conns", 1, u32::MAX.into())
                    .map(|n| n as u32),
                new_per_sec: self
                    .ctx
                    .int_at(pt, "new_conns_per_sec", 1, u32::MAX.into())
                    .map(|n| n as u32),
                new_burst: self
                    .ctx
                    .int_at(pt, "new_conns_burst", 1, u32::MAX.into())
                    .map(|n| n as u32),
            };
            if rate.is_empty() && conns.is_empty() {
                self.ctx.missing(
                    pt,
                    "bytes_per_sec",
                    "at least one of bytes_per_sec, packets_per_sec, max_conns, new_conns_per_sec",
                );
            }
            if s.peers.iter().any(|(z, _)| *z == zone) {
                self.bad_at(pt, "peer", "this peer already has a [[limits.peer]] entry");
                continue;
            }
            s.peers.push((zone, PeerLimits { rate, conns }));
        }
        for (path, map) in self.nested_tables(t, "rule") {
            let rt = Tab { path: &path, map };
            self.ctx.check_keys(rt, RULE_LIMIT_KEYS);
            let Some(name) = self.ctx.str_at(rt, "rule") else {
                self.ctx.missing(rt, "rule", "the name of a [[rule]]");
                continue;
            };
            let Some(v) = map.get("rule") else { continue };
            let key = join(&path, "rule");
            let Some((chain, idx)) = self.rule_ref(&key, v, &name, chains) else {
                continue;
            };
            let rate = self.rate(rt);
            if rate.is_empty() {
                self.ctx
                    .missing(rt, "bytes_per_sec", "bytes_per_sec and/or packets_per_sec");
            }
            s.rules.push((chain, idx, rate));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use crate::config::ops::CaptureWhat;
    use crate::verdict::Chain;
    use crate::zone::ZoneId;

    const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32"]

[[rule]]
chain = "forward"
name = "web"
dport = 80
proto = "tcp"
action = "accept"

[[rule]]
chain = "forward"
name = "no-smb"
dport = 445
proto = "tcp"
action = "drop"
"#;

    #[test]
    fn defaults_when_absent() {
        let c = load_str(BASE, "/etc/portcullis/gateway.toml").unwrap();
        assert_eq!(
            c.ops.control.socket.as_deref(),
            Some(std::path::Path::new(crate::config::ops::DEFAULT_SOCKET))
        );
        assert_eq!(c.ops.metrics, None);
        assert_eq!(c.ops.capture.file, None);
        assert_eq!(c.ops.events.eve_file, None);
        assert!(c.ops.limits.is_empty());
    }

    #[test]
    fn all_sections_parse() {
        let text = format!(
            "{BASE}\n{}",
            r#"
[control]
socket = "run/ctl.sock"
group = "portcullis"

[metrics]
listen = "127.0.0.1:9587"

[events]
eve_file = "/var/log/portcullis/eve.json"
flows = false
rate_per_sec = 50
burst = 10

[capture]
file = "/var/log/portcullis/drops.pcap"
what = "rules"
rules = ["no-smb"]
max_bytes = 1048576
files = 3

[limits]
per_source_max_conns = 5
per_source_new_per_sec = 10

[[limits.peer]]
peer = "laptop"
bytes_per_sec = 1250000
max_conns = 3

[[limits.rule]]
rule = "web"
packets_per_sec = 100
"#
        );
        let c = load_str(&text, "/etc/portcullis/gateway.toml").unwrap();
        let o = &c.ops;
        assert_eq!(
            o.control.socket.as_deref(),
            Some(std::path::Path::new("/etc/portcullis/run/ctl.sock"))
        );
        assert_eq!(o.control.group.as_deref(), Some("portcullis"));
        assert_eq!(o.metrics, Some("127.0.0.1:9587".parse().unwrap()));
        assert!(!o.events.flows && o.events.drops);
        assert_eq!((o.events.rate_per_sec, o.events.burst), (50, 10));
        assert_eq!(o.capture.what, CaptureWhat::Rules);
        assert_eq!(o.capture.rules, vec![(Chain::Forward, 1)]);
        assert_eq!((o.capture.max_bytes, o.capture.files), (1_048_576, 3));
        assert_eq!(o.limits.per_source.max_concurrent, Some(5));
        assert_eq!(o.limits.peers.len(), 1);
        assert_eq!(o.limits.peers[0].0, ZoneId::peer(0));
        assert_eq!(o.limits.peers[0].1.rate.bytes_per_sec, Some(1_250_000));
        assert_eq!(o.limits.peers[0].1.conns.max_concurrent, Some(3));
        assert_eq!(o.limits.rules.len(), 1);
        assert_eq!(o.limits.rules[0].0, Chain::Forward);
        assert_eq!(o.limits.rules[0].1, 0);
    }

    /// `capture = true` on a rule adds it to the captured rules (with any
    /// `what`), and asks for a capture file.
    #[test]
    fn rule_capture_key() {
        let rule = r#"
[[rule]]
chain = "input"
name = "no-ssh"
dport = 22
proto = "tcp"
action = "reject"
capture = true
"#;
        let text = format!(
            "{BASE}{rule}\n[capture]\nfile = \"/tmp/x.pcap\"\nwhat = \"rules\"\nrules = [\"no-smb\"]\n"
        );
        let c = load_str(&text, "gw.toml").unwrap();
        assert_eq!(c.ops.capture.what, CaptureWhat::Rules);
        assert_eq!(
            c.ops.capture.rules,
            vec![(Chain::Forward, 1), (Chain::Input, 0)]
        );
        let e = load_str(&format!("{BASE}{rule}"), "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gw.toml") && e.contains("capture"), "{e}");
        let e = load_str(
            &format!("{BASE}{rule}\n[capture]\nwhat = \"drops\"\n"),
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("capture.file"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = format!(
            "{BASE}\n{}",
            r#"
[control]
sockt = "x"

[metrics]
listen = "localhost"

[capture]
what = "some"
rules = ["nope"]

[events]
rate_per_sec = -1

[[limits.peer]]
peer = "mallory"
bytes_per_sec = 10

[[limits.rule]]
rule = "web"
"#
        );
        let e = load_str(&text, "gw.toml").unwrap_err().to_string();
        for want in [
            "control.sockt",
            "metrics.listen",
            "capture.what",
            "capture.rules",
            "events.rate_per_sec",
            "limits.peer[0].peer",
            "limits.rule[0]",
        ] {
            assert!(e.contains(want), "missing {want} in:\n{e}");
        }
    }
}
