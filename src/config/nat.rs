//! The `[[nat]]` section: NAT rules, validated into [`crate::nat::NatRule`]s.
//!
//! Each entry has a `kind` (`masquerade`, `snat`, `dnat`), the match keys of
//! a filter rule (`from`, `to`, `src`, `dst`, `proto`, `sport`, `dport`,
//! `family`; evaluated by the same code) and the translation: `to_address`
//! (one address or a list: an SNAT pool, the masquerade address for the `tun`
//! zone, the single DNAT target), `to_ports` (an SNAT port range, or the DNAT
//! target port), `backends` + `strategy` (load-balanced DNAT), `mss_clamp`
//! and `log`. Problems name the key (`nat[2].backends[1].weight`), the value
//! and what is expected, like the rest of the config.

use super::build::Builder;
use super::parse;
use super::value::{join, show, Tab};
use crate::nat::{Backend, HealthCheck, NatAction, NatRule, Strategy};
use crate::packet::proto;
use crate::rules::linear::zone_matches;
use crate::zone::{ZoneId, ZoneTable};
use config::{Map, Value, ValueKind};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(super) const NAT_KEYS: &[&str] = &[
    "kind",
    "name",
    "from",
    "to",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "family",
    "to_address",
    "to_ports",
    "backends",
    "strategy",
    "mss_clamp",
    "log",
    "health_check",
];
/// The keys handed to the filter-rule match builder.
const MATCH_KEYS: &[&str] = &[
    "name", "from", "to", "src", "dst", "proto", "sport", "dport", "family",
];
const BACKEND_KEYS: &[&str] = &["address", "weight", "down"];
const HEALTH_KEYS: &[&str] = &["interval", "timeout"];
/// Health-check bounds: at least 100 ms between checks (10 connects per
/// second per backend at most), at most an hour; the timeout must be below
/// the interval (one check in flight per backend).
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
/// Most backends per rule (a bound on the per-packet selection loop).
const MAX_BACKENDS: usize = 256;
/// Largest backend weight (keeps the weighted arithmetic far from overflow).
const MAX_WEIGHT: i128 = 1000;

impl Builder {
    pub(super) fn nat(
        &mut self,
        top: Tab<'_>,
        zones: &ZoneTable,
        sets: &BTreeMap<String, Vec<IpNetwork>>,
    ) -> Vec<NatRule> {
        let mut out = Vec::new();
        for (path, map) in self.table_array(top, "nat") {
            let t = Tab { path: &path, map };
            self.ctx.check_keys(t, NAT_KEYS);
            let before = self.ctx.problems.len();
            if let Some(r) = self.nat_rule(t, zones, sets) {
                if self.ctx.problems.len() == before {
                    out.push(r);
                }
            }
        }
        out
    }

    fn nat_rule(
        &mut self,
        t: Tab<'_>,
        zones: &ZoneTable,
        sets: &BTreeMap<String, Vec<IpNetwork>>,
    ) -> Option<NatRule> {
        let path = t.path;
        let kind = match self.ctx.str_at(t, "kind") {
            Some(k) if ["masquerade", "snat", "dnat"].contains(&k.as_str()) => Some(k),
            Some(_) => {
                self.bad_at(t, "kind", "expected \"masquerade\", \"snat\" or \"dnat\"");
                None
            }
            None => {
                if !t.map.contains_key("kind") {
                    self.ctx
                        .missing(t, "kind", "\"masquerade\", \"snat\" or \"dnat\"");
                }
                None
            }
        };
        let dnat = kind.as_deref() == Some("dnat");
        if dnat {
            if let Some(v) = t.map.get("to") {
                self.ctx.report(&join(path, "to"), Some(v), "dnat decides before routing, so the egress zone is not known yet; expected no `to` (the forward rules see the translated packet and may match its zone)");
            }
        }
        // The match part: a filter rule with a dummy action.
        let mut mm: Map<String, Value> = Map::new();
        for k in MATCH_KEYS {
            if let Some(v) = t.map.get(*k) {
                if !(dnat && *k == "to") {
                    mm.insert((*k).to_owned(), v.clone());
                }
            }
        }
        mm.insert(
            "action".into(),
            Value::new(None, ValueKind::String("accept".into())),
        );
        let matches = self.rule(Tab { path, map: &mm }, Some(1), zones, sets)?;
        let name = matches.name.clone().unwrap_or_else(|| path.to_owned());

        let addrs = self.nat_addresses(t);
        let ports = self.nat_ports(t, dnat);
        let ported = matches!(matches.proto, Some(proto::TCP) | Some(proto::UDP));
        let action = match kind.as_deref() {
            Some("snat") => {
                self.no_lb_keys(t, "snat");
                match addrs {
                    Some(a) if !a.is_empty() => Some(NatAction::Snat { addrs: a, ports }),
                    Some(_) => None,
                    None => {
                        self.ctx.missing(t, "to_address", "the address (or list of addresses) to translate the source to, e.g. \"203.0.113.7\"");
                        None
                    }
                }
            }
            Some("masquerade") => {
                self.no_lb_keys(t, "masquerade");
                let tun_addrs = addrs.unwrap_or_default();
                let to_tun = matches
                    .egress
                    .as_ref()
                    .is_none_or(|z| zone_matches(z, ZoneId::TUN));
                if to_tun && tun_addrs.is_empty() {
                    self.ctx.report(path, None, "masquerade towards the `tun` zone needs `to_address`: an address the host routes into the TUN without owning it (the gateway's own tunnel addresses belong to the host); expected `to_address = \"...\"`, or `to` naming peer zones only (their address is derived from [interface] addresses)");
                }
                Some(NatAction::Masquerade { tun_addrs, ports })
            }
            Some(_) => {
                let backends = self.backends(t);
                let strategy = match self.ctx.str_at(t, "strategy") {
                    None => Strategy::RoundRobin,
                    Some(s) => match Strategy::parse(&s) {
                        Some(st) => st,
                        None => {
                            self.bad_at(t, "strategy", "expected \"round-robin\", \"weighted\", \"least-connections\" or \"source-hash\"");
                            Strategy::RoundRobin
                        }
                    },
                };
                let backends = match (addrs, backends) {
                    (Some(_), Some(_)) => {
                        self.ctx.report(path, None, "both `to_address` and `backends` are set; expected one: `to_address` (+ `to_ports`) for a port forward, `backends` for load balancing");
                        None
                    }
                    (Some(a), None) => {
                        if t.map.contains_key("strategy") {
                            self.bad_at(t, "strategy", "a strategy needs `backends`; expected no `strategy` with `to_address`");
                        }
                        if a.len() != 1 {
                            self.bad_at(t, "to_address", "dnat translates to one address; expected a single address (use `backends` for several)");
                        }
                        let port = ports.map(|(p, _)| p);
                        Some(
                            a.into_iter()
                                .map(|addr| Backend {
                                    addr,
                                    port,
                                    weight: 1,
                                    down: false,
                                })
                                .collect::<Vec<_>>(),
                        )
                    }
                    (None, Some(b)) => {
                        if t.map.contains_key("to_ports") {
                            self.bad_at(t, "to_ports", "backends carry their own ports; expected no `to_ports` with `backends`");
                        }
                        Some(b)
                    }
                    (None, None) => {
                        self.ctx.report(path, None, "dnat needs `to_address` (a port forward) or `backends` (load balancing)");
                        None
                    }
                };
                let backends = backends?;
                if !ported && backends.iter().any(|b| b.port.is_some()) {
                    self.ctx.report(path, None, "a new destination port needs proto = \"tcp\" or \"udp\"; expected a proto with ports, or addresses without ports");
                }
                Some(NatAction::Dnat { backends, strategy })
            }
            None => None,
        }?;
        // Addresses must fit the rule's family.
        let fams: Vec<IpAddr> = match &action {
            NatAction::Snat { addrs, .. } => addrs.clone(),
            NatAction::Masquerade { tun_addrs, .. } => tun_addrs.clone(),
            NatAction::Dnat { backends, .. } => backends.iter().map(|b| b.addr).collect(),
        };
        if let Some(f) = matches.family {
            if !fams.is_empty()
                && !fams
                    .iter()
                    .any(|a| (a.is_ipv4() && f == 4) || (a.is_ipv6() && f == 6))
            {
                self.ctx.report(path, None, format!("the rule matches IPv{f} only but no translation address is IPv{f}; expected an address of that family"));
            }
        }
        let health = self.health_check(t, &action);
        Some(NatRule {
            name,
            matches,
            action,
            mss_clamp: self.ctx.bool_at(t, "mss_clamp").unwrap_or(false),
            log: self.ctx.bool_at(t, "log").unwrap_or(false),
            health,
        })
    }

    /// `health_check = { interval = "2s", timeout = "1s" }` (dnat with
    /// backends that all carry a port).
    fn health_check(&mut self, t: Tab<'_>, action: &NatAction) -> Option<HealthCheck> {
        let v = t.map.get("health_check")?;
        let key = join(t.path, "health_check");
        let m = self.ctx.as_table(&key, v)?;
        let ht = Tab { path: &key, map: m };
        self.ctx.check_keys(ht, HEALTH_KEYS);
        let interval = self
            .duration_at(ht, "interval")
            .unwrap_or(Duration::from_secs(2));
        let timeout = self
            .duration_at(ht, "timeout")
            .unwrap_or(Duration::from_secs(1));
        let NatAction::Dnat { backends, .. } = action else {
            self.ctx.report(&key, Some(v), "health checks are for kind = \"dnat\" with `backends`; expected no `health_check` here");
            return None;
        };
        if backends.iter().any(|b| b.port.is_none()) {
            self.ctx.report(&key, Some(v), "a TCP connect check needs every backend's port; expected addresses like \"192.0.2.11:80\"");
            return None;
        }
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&interval) {
            self.ctx.report(
                &key,
                Some(v),
                format!("interval {interval:?}; expected 100ms to 1h"),
            );
            return None;
        }
        if timeout >= interval {
            self.ctx.report(&key, Some(v), format!("timeout {timeout:?} is not below the interval {interval:?}; expected a shorter timeout"));
            return None;
        }
        Some(HealthCheck { interval, timeout })
    }

    fn no_lb_keys(&mut self, t: Tab<'_>, kind: &str) {
        for k in ["backends", "strategy"] {
            if t.map.contains_key(k) {
                self.bad_at(
                    t,
                    k,
                    &format!(
                        "`{k}` is for kind = \"dnat\"; expected no `{k}` with kind = \"{kind}\""
                    ),
                );
            }
        }
    }

    /// `to_address`: one address or a list.
    fn nat_addresses(&mut self, t: Tab<'_>) -> Option<Vec<IpAddr>> {
        let v = t.map.get("to_address")?;
        let key = join(t.path, "to_address");
        let items = self.ctx.one_or_many(&key, v);
        if items.is_empty() {
            self.ctx.report(
                &key,
                Some(v),
                "an empty list; expected at least one address",
            );
        }
        let mut out = Vec::new();
        for (p, item) in items {
            let Some(s) = self.ctx.as_str(&p, &item) else {
                continue;
            };
            match s.trim().parse::<IpAddr>() {
                Ok(a) if a.is_unspecified() || a.is_multicast() => {
                    self.ctx.bad(&p, &item, "expected a unicast address")
                }
                Ok(a) => out.push(a),
                Err(_) => self.ctx.bad(&p, &item, "expected an IP address like \"203.0.113.7\" or \"2001:db8::7\" (no prefix, no port)"),
            }
        }
        Some(out)
    }

    /// `to_ports`: a range "lo-hi" (or one port) for snat/masquerade; one port for dnat.
    fn nat_ports(&mut self, t: Tab<'_>, dnat: bool) -> Option<(u16, u16)> {
        let v = t.map.get("to_ports")?;
        let key = join(t.path, "to_ports");
        let r = match &v.kind {
            ValueKind::String(s) => parse::port_range(s)
                .map_err(|e| self.ctx.bad(&key, v, e))
                .ok(),
            _ => self
                .ctx
                .as_int(&key, v, 1, 65535)
                .map(|n| (n as u16, n as u16)),
        }?;
        if r.0 == 0 {
            self.ctx
                .bad(&key, v, "port 0 is not a port; expected 1..65535");
            return None;
        }
        if dnat && r.0 != r.1 {
            self.ctx.report(
                &key,
                Some(v),
                format!("{} is a range; dnat expected one target port", show(v)),
            );
            return None;
        }
        Some(r)
    }

    fn backends(&mut self, t: Tab<'_>) -> Option<Vec<Backend>> {
        let v = t.map.get("backends")?;
        let key = join(t.path, "backends");
        let ValueKind::Array(items) = &v.kind else {
            self.ctx.wrong_type(
                &key,
                v,
                "a list of tables like [{ address = \"100.64.0.2:80\", weight = 1 }]",
            );
            return None;
        };
        if items.is_empty() || items.len() > MAX_BACKENDS {
            self.ctx.report(
                &key,
                Some(v),
                format!("{} backends; expected 1 to {MAX_BACKENDS}", items.len()),
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{key}[{i}]");
            let Some(m) = self.ctx.as_table(&p, item) else {
                continue;
            };
            let bt = Tab { path: &p, map: m };
            self.ctx.check_keys(bt, BACKEND_KEYS);
            let addr = match self.ctx.str_at(bt, "address") {
                Some(s) => match parse_backend(&s) {
                    Some(a) => Some(a),
                    None => {
                        self.bad_at(bt, "address", "expected \"ADDRESS:PORT\" (\"100.64.0.2:80\", \"[2001:db8::2]:80\") or an address alone (the port is kept)");
                        None
                    }
                },
                None => {
                    if !m.contains_key("address") {
                        self.ctx
                            .missing(bt, "address", "\"ADDRESS:PORT\" like \"100.64.0.2:80\"");
                    }
                    None
                }
            };
            let weight = self
                .ctx
                .int_at(bt, "weight", 1, MAX_WEIGHT)
                .map_or(1, |w| w as u32);
            let down = self.ctx.bool_at(bt, "down").unwrap_or(false);
            if let Some((addr, port)) = addr {
                out.push(Backend {
                    addr,
                    port,
                    weight,
                    down,
                });
            }
        }
        (out.len() == items.len()).then_some(out)
    }
}

/// "ip:port", "[v6]:port" or a bare address.
fn parse_backend(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return (sa.port() != 0).then_some((sa.ip(), Some(sa.port())));
    }
    let a = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    (!a.is_unspecified()).then_some((a, None))
}
