//! Human-readable output of `portcullis ctl` (the `--json` output is the
//! reply's `data` as is). Pure: reply in, text out.

use super::{
    BlockList, BlockReport, Command, DrainReport, FlowList, NatList, PeerInfo, ReloadReport,
    Response, RuleInfo, StatsInfo, Status,
};
use std::fmt::Write as _;

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U.get(i).copied().unwrap_or("?"))
    }
}

fn ago(s: Option<u64>) -> String {
    match s {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s} s ago"),
        Some(s) if s < 7200 => format!("{} min ago", s / 60),
        Some(s) => format!("{} h ago", s / 3600),
    }
}

fn parse<T: serde::de::DeserializeOwned>(r: &Response) -> Result<T, String> {
    serde_json::from_value(r.data.clone()).map_err(|e| format!("unexpected reply: {e}"))
}

/// The text `ctl` prints for a successful reply (errors are printed by the caller).
pub fn human(cmd: &Command, r: &Response) -> Result<String, String> {
    let mut o = String::new();
    match cmd {
        Command::Status => {
            let s: Status = parse(r)?;
            let _ = writeln!(
                o,
                "portcullis {} (control protocol {})",
                s.version, s.protocol
            );
            let _ = writeln!(o, "config:     {}", s.config);
            let _ = writeln!(
                o,
                "interface:  {}, listening on port {}",
                s.interface, s.listen_port
            );
            let _ = writeln!(o, "public key: {}", s.public_key);
            let _ = writeln!(o, "uptime:     {} s, {} reloads", s.uptime_secs, s.reloads);
            let _ = writeln!(o, "peers:      {} ({} with a session)", s.peers, s.peers_up);
            let _ = writeln!(
                o,
                "flows:      {} of {}, rule generation {}",
                s.flows, s.max_flows, s.rule_generation
            );
            let _ = writeln!(
                o,
                "packets:    {} received, {} dropped",
                s.packets, s.dropped
            );
        }
        Command::Peers => {
            let v: Vec<PeerInfo> = parse(r)?;
            for p in &v {
                let _ = writeln!(o, "peer: {} ({})", p.name, p.public_key);
                let _ = writeln!(
                    o,
                    "  endpoint: {}",
                    p.endpoint.as_deref().unwrap_or("(none)")
                );
                let _ = writeln!(o, "  allowed ips: {}", p.allowed_ips.join(", "));
                let _ = writeln!(
                    o,
                    "  latest handshake: {}{}",
                    ago(p.last_handshake_secs),
                    if p.session { "" } else { " (no session)" }
                );
                let _ = writeln!(
                    o,
                    "  transfer: {} received, {} sent; kill-switch drops {}",
                    bytes(p.rx_bytes),
                    bytes(p.tx_bytes),
                    p.kill_switch_drops
                );
            }
            if v.is_empty() {
                o.push_str("no peers\n");
            }
        }
        Command::Conntrack { flush, .. } => {
            let l: FlowList = parse(r)?;
            if *flush {
                let _ = writeln!(o, "flushed {} of {} flows", l.flushed, l.total);
            } else {
                for f in &l.flows {
                    let ports = matches!(f.proto.as_str(), "tcp" | "udp");
                    let ep = |a: &str, p: u16| {
                        if !ports {
                            a.to_string()
                        } else if a.contains(':') {
                            format!("[{a}]:{p}")
                        } else {
                            format!("{a}:{p}")
                        }
                    };
                    let _ = writeln!(
                        o,
                        "{:<6} {:<12} {} -> {} ({} -> {}) pkts {}/{} bytes {}/{} rule {}",
                        f.proto,
                        f.state,
                        ep(&f.src, f.sport),
                        ep(&f.dst, f.dport),
                        f.ingress,
                        f.egress,
                        f.packets[0],
                        f.packets[1],
                        f.bytes[0],
                        f.bytes[1],
                        f.rule
                    );
                }
                let _ = writeln!(
                    o,
                    "{} flows shown, {} matched, {} tracked",
                    l.flows.len(),
                    l.matched,
                    l.total
                );
            }
        }
        Command::Rules => {
            let v: Vec<RuleInfo> = parse(r)?;
            let _ = writeln!(
                o,
                "{:<8} {:<5} {:<24} {:<7} {:>12} {:>14}",
                "chain", "#", "rule", "action", "packets", "bytes"
            );
            for ri in &v {
                let _ = writeln!(
                    o,
                    "{:<8} {:<5} {:<24} {:<7} {:>12} {:>14}{}{}",
                    ri.chain,
                    ri.index.map_or("-".into(), |i| i.to_string()),
                    ri.name,
                    ri.action,
                    ri.packets,
                    ri.bytes,
                    if ri.log { "  log" } else { "" },
                    ri.l7
                        .as_deref()
                        .map(|l| format!("  {l}"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Stats => {
            let s: StatsInfo = parse(r)?;
            for (k, v) in [
                ("received", s.received),
                ("forwarded", s.forwarded),
                ("fast path", s.fast_path),
                ("dropped", s.dropped),
                ("rejected", s.rejected),
                ("held", s.held),
            ] {
                let _ = writeln!(o, "{k:<10} {:>12} packets {:>14} bytes", v[0], v[1]);
            }
            let join = |m: &std::collections::BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(o, "drops by reason: {}", join(&s.drop_reasons));
            let _ = writeln!(o, "rate/connection limits: {}", join(&s.shaper_refused));
            let _ = writeln!(
                o,
                "flows: {} tracked ({}), {} created, {} revoked by reload",
                s.flows,
                join(&s.conntrack_by_state),
                s.flows_created,
                s.flows_revoked
            );
            let _ = writeln!(
                o,
                "reject replies: {} sent, {} suppressed",
                s.replies_sent, s.replies_suppressed
            );
            let _ = writeln!(o, "io: {}", join(&s.io));
            if !s.nat.is_empty() {
                let _ = writeln!(o, "nat: {}", join(&s.nat));
            }
        }
        Command::Reload => {
            let rep: ReloadReport = parse(r)?;
            let _ = writeln!(
                o,
                "reloaded {} in {} ms: rule generation {}, {} rules",
                rep.config, rep.elapsed_ms, rep.rule_generation, rep.rules
            );
            for (what, v) in [
                ("added", &rep.peers_added),
                ("removed", &rep.peers_removed),
                ("changed", &rep.peers_changed),
                ("re-keyed", &rep.peers_rekeyed),
            ] {
                if !v.is_empty() {
                    let _ = writeln!(o, "peers {what}: {}", v.join(", "));
                }
            }
            for n in &rep.needs_restart {
                let _ = writeln!(o, "not applied until a restart: {n}");
            }
        }
        Command::Nat { .. } => {
            let n: NatList = parse(r)?;
            let _ = writeln!(
                o,
                "{} translated flows, {} matched{}",
                n.total,
                n.matched,
                if n.bindings.len() < n.matched {
                    format!(" ({} shown)", n.bindings.len())
                } else {
                    String::new()
                }
            );
            let ep = |a: &str, p: u16| {
                if a.contains(':') {
                    format!("[{a}]:{p}")
                } else {
                    format!("{a}:{p}")
                }
            };
            for b in &n.bindings {
                let _ = writeln!(
                    o,
                    "{:<6} {:<9} {} -> {}  =>  {} -> {}  {} -> {}  {}",
                    b.proto,
                    b.kind,
                    ep(&b.orig_src, b.orig_sport),
                    ep(&b.orig_dst, b.orig_dport),
                    ep(&b.xlat_src, b.xlat_sport),
                    ep(&b.xlat_dst, b.xlat_dport),
                    b.ingress,
                    b.egress,
                    b.state
                );
            }
            if !n.backends.is_empty() {
                let _ = writeln!(o, "backends:");
                for b in &n.backends {
                    let _ = writeln!(
                        o,
                        "  {:<16} {:<24} weight {:<4} {:<14} conns {}",
                        b.rule, b.address, b.weight, b.state, b.conns
                    );
                }
            }
            let join = n
                .stats
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(o, "counters: {join}");
        }
        Command::NatDrain { .. } | Command::NatUndrain { .. } => {
            let d: DrainReport = parse(r)?;
            let _ = writeln!(
                o,
                "{} {} ({} backend{})",
                if d.drained { "drained" } else { "undrained" },
                d.backend,
                d.changed,
                if d.changed == 1 { "" } else { "s" }
            );
        }
        Command::Block { .. } | Command::Unblock { .. } => {
            let b: BlockReport = parse(r)?;
            let ttl = match (b.blocked, b.ttl_secs) {
                (true, Some(t)) => format!(" for {t}s"),
                (true, None) => " until unblocked".to_string(),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "{} {}{ttl} ({} entr{} on the blocklist)",
                if b.blocked { "blocked" } else { "unblocked" },
                b.target,
                b.entries,
                if b.entries == 1 { "y" } else { "ies" }
            );
        }
        Command::Blocklist => {
            let l: BlockList = parse(r)?;
            let _ = writeln!(
                o,
                "{} entr{} (at most {})",
                l.entries.len(),
                if l.entries.len() == 1 { "y" } else { "ies" },
                l.max_entries
            );
            if !l.entries.is_empty() {
                let _ = writeln!(
                    o,
                    "{:<28} {:<8} {:>10} {:>8} {:>10}  reason",
                    "target", "origin", "expires", "age", "hits"
                );
            }
            for e in &l.entries {
                let exp = e
                    .expires_in_secs
                    .map_or_else(|| "never".to_string(), |s| format!("{s}s"));
                let _ = writeln!(
                    o,
                    "{:<28} {:<8} {:>10} {:>7}s {:>10}  {}",
                    e.target, e.origin, exp, e.age_secs, e.hits, e.reason
                );
            }
            let join = l
                .stats
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(o, "counters: {join}");
        }
    }
    Ok(o)
}
