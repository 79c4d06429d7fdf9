//! The gateway's Prometheus metrics: renders the counters of the pipeline,
//! connection tracking, the shaper, the WireGuard peers and the IO shell
//! into the text exposition format ([`super::prom`]).
//!
//! Metric names follow Prometheus conventions (`_total` for counters, base
//! units: bytes, seconds). Label values are zone, chain and rule names from
//! the config and fixed reason names: bounded cardinality.

use super::histogram::Histogram;
use super::prom::Exposition;
use crate::pipeline::Pipeline;
use crate::verdict::Chain;
use crate::wg::PeerStats;
use std::collections::BTreeMap;

/// What the IO shell adds to the pipeline's own counters.
#[derive(Debug, Default, Clone)]
pub struct ShellMetrics<'a> {
    pub peers: &'a [PeerStats],
    pub latency: Option<&'a Histogram>,
    /// Drops the shell counted after the verdict (kill switch, no route to a peer).
    pub io_drops: Option<&'a BTreeMap<&'static str, u64>>,
    pub log_suppressed: u64,
    pub capture_packets: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub uptime_secs: f64,
}

/// Renders all metrics.
pub fn render(p: &Pipeline, sh: &ShellMetrics<'_>) -> String {
    let mut e = Exposition::new();
    let s = p.stats();
    e.single("portcullis_up", "gauge", "1 while the gateway runs.", 1.0);
    e.single(
        "portcullis_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        sh.uptime_secs,
    );
    let verdicts = [
        ("received", s.received),
        ("forward", s.forwarded),
        ("local", s.local),
        ("held", s.held),
        ("drop", s.dropped),
        ("reject", s.rejected),
    ];
    e.labelled(
        "portcullis_packets_total",
        "counter",
        "Packets by pipeline verdict.",
        "verdict",
        verdicts.map(|(v, c)| (v, c.packets as f64)),
    );
    e.labelled(
        "portcullis_bytes_total",
        "counter",
        "Bytes by pipeline verdict.",
        "verdict",
        verdicts.map(|(v, c)| (v, c.bytes as f64)),
    );
    e.single(
        "portcullis_fast_path_packets_total",
        "counter",
        "Packets forwarded on the established-flow fast path.",
        s.fast_path.packets as f64,
    );
    e.family(
        "portcullis_drops_total",
        "counter",
        "Dropped and rejected packets by reason (pipeline, and shell after the verdict).",
    );
    let mut reasons: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (k, v) in &s.drop_reasons {
        reasons.insert(("pipeline", k), *v);
    }
    if let Some(io) = sh.io_drops {
        for (k, v) in io {
            if matches!(*k, "kill_switch" | "no_route") {
                *reasons.entry(("egress", k)).or_insert(0) += v;
            }
        }
    }
    for ((stage, reason), v) in &reasons {
        e.sample(
            "portcullis_drops_total",
            &[("stage", stage), ("reason", reason)],
            *v as f64,
        );
    }
    e.family(
        "portcullis_rule_packets_total",
        "counter",
        "Packets decided by each rule (new flows) plus later packets of the flows it admitted.",
    );
    let mut rule_rows = Vec::new();
    for chain in Chain::ALL {
        for (i, c) in p.rule_counters(chain).iter().enumerate() {
            rule_rows.push((chain, p.rule_label(chain, Some(i as u32)), *c));
        }
        rule_rows.push((chain, p.rule_label(chain, None), s.policy(chain)));
    }
    for (chain, label, c) in &rule_rows {
        e.sample(
            "portcullis_rule_packets_total",
            &[("chain", chain.name()), ("rule", label)],
            c.packets as f64,
        );
    }
    e.family(
        "portcullis_rule_bytes_total",
        "counter",
        "Bytes per rule (as packets).",
    );
    for (chain, label, c) in &rule_rows {
        e.sample(
            "portcullis_rule_bytes_total",
            &[("chain", chain.name()), ("rule", label)],
            c.bytes as f64,
        );
    }
    let ct = p.conntrack().stats();
    e.labelled(
        "portcullis_conntrack_entries",
        "gauge",
        "Tracked flows by state.",
        "state",
        ct.by_state.iter().map(|&(st, n)| (st, n as f64)),
    );
    e.single(
        "portcullis_conntrack_max_entries",
        "gauge",
        "Flow table capacity.",
        ct.max_entries as f64,
    );
    e.single(
        "portcullis_conntrack_pressure_ratio",
        "gauge",
        "Flows stored / capacity (table pressure, 0..1).",
        if ct.max_entries == 0 {
            0.0
        } else {
            ct.entries as f64 / ct.max_entries as f64
        },
    );
    e.single(
        "portcullis_conntrack_unassured_entries",
        "gauge",
        "Flows that may be evicted early under pressure.",
        ct.unassured as f64,
    );
    e.labelled(
        "portcullis_conntrack_events_total",
        "counter",
        "Flow table events.",
        "event",
        [
            ("inserted", ct.inserted),
            ("removed", ct.removed),
            ("expired", ct.expired),
            ("evicted_early", ct.evicted_early),
            ("refused_full", ct.refused_full),
        ]
        .map(|(ev, n)| (ev, n as f64)),
    );
    e.labelled(
        "portcullis_conntrack_invalid_total",
        "counter",
        "Packets connection tracking found invalid, by reason.",
        "reason",
        ct.invalid.iter().map(|&(r, n)| (r, n as f64)),
    );
    e.single(
        "portcullis_flows_revoked_total",
        "counter",
        "Live flows cut by a reload (generation re-check).",
        s.flows_revoked as f64,
    );
    e.single(
        "portcullis_rule_generation",
        "gauge",
        "Rule generation (bumped by every reload).",
        f64::from(p.generation()),
    );
    e.labelled(
        "portcullis_shaper_refused_total",
        "counter",
        "Packets and new flows refused by rate and connection limits.",
        "limit",
        p.shaper().refused().map(|(k, n)| (k, n as f64)),
    );
    type PeerValue = fn(&PeerStats) -> f64;
    let per_peer: [(&str, &str, &str, PeerValue); 5] = [
        (
            "portcullis_peer_rx_bytes_total",
            "counter",
            "Bytes received from each peer (decrypted).",
            |ps| ps.rx_bytes as f64,
        ),
        (
            "portcullis_peer_tx_bytes_total",
            "counter",
            "Bytes sent to each peer (plaintext).",
            |ps| ps.tx_bytes as f64,
        ),
        (
            "portcullis_peer_handshake_age_seconds",
            "gauge",
            "Seconds since each peer's last handshake (NaN: none yet).",
            |ps| ps.last_handshake.map_or(f64::NAN, |d| d.as_secs_f64()),
        ),
        (
            "portcullis_peer_session_up",
            "gauge",
            "1 if the peer has a usable session.",
            |ps| if ps.has_session { 1.0 } else { 0.0 },
        ),
        (
            "portcullis_peer_kill_switch_drops_total",
            "counter",
            "Packets for each peer dropped because no session could carry them.",
            |ps| ps.kill_switch_drops as f64,
        ),
    ];
    for (name, kind, help, value) in per_peer {
        e.labelled(
            name,
            kind,
            help,
            "peer",
            sh.peers.iter().map(|ps| (ps.name.as_str(), value(ps))),
        );
    }
    if let Some(h) = sh.latency {
        let name = "portcullis_pipeline_latency_seconds";
        e.family(
            name,
            "histogram",
            "Time from receiving a packet to its verdict being carried out.",
        );
        for (le, n) in h.cumulative() {
            e.sample(&format!("{name}_bucket"), &[("le", &le)], n as f64);
        }
        e.sample(&format!("{name}_sum"), &[], h.sum());
        e.sample(&format!("{name}_count"), &[], h.count() as f64);
    }
    e.single(
        "portcullis_log_suppressed_total",
        "counter",
        "Event records suppressed by the log rate limit.",
        (sh.log_suppressed + s.events_suppressed + s.flow_ends_suppressed) as f64,
    );
    e.single(
        "portcullis_capture_packets_total",
        "counter",
        "Packets written to the pcap capture.",
        sh.capture_packets as f64,
    );
    let mut by_origin: BTreeMap<&str, u64> = [
        crate::blocklist::Origin::Config,
        crate::blocklist::Origin::Anomaly,
        crate::blocklist::Origin::Rule,
        crate::blocklist::Origin::Ids,
        crate::blocklist::Origin::Ctl,
    ]
    .into_iter()
    .map(|o| (o.name(), 0))
    .collect();
    for en in p.blocklist().entries() {
        *by_origin.entry(en.origin.name()).or_insert(0) += 1;
    }
    e.labelled(
        "portcullis_blocklist_entries",
        "gauge",
        "Blocklist entries by origin (config, anomaly, rule, ids, ctl).",
        "origin",
        by_origin.iter().map(|(o, n)| (*o, *n as f64)),
    );
    let bs = p.blocklist().stats;
    e.labelled(
        "portcullis_blocklist_changes_total",
        "counter",
        "Blocklist changes: entries added, expired, removed (unblocked), evicted when full, refused when full.",
        "change",
        [
            ("added", bs.added),
            ("expired", bs.expired),
            ("removed", bs.removed),
            ("evicted", bs.evicted),
            ("refused", bs.refused),
        ]
        .map(|(k, v)| (k, v as f64)),
    );
    e.labelled(
        "portcullis_anomaly_alerts_total",
        "counter",
        "Anomaly detections by detector.",
        "detector",
        crate::anomaly::Kind::ALL.into_iter().map(|k| {
            let n = p
                .anomaly()
                .and_then(|a| a.stats.detections.get(k as usize).copied())
                .unwrap_or(0);
            (k.name(), n as f64)
        }),
    );
    let l7 = p.l7_stats();
    e.single(
        "portcullis_l7_pending_flows",
        "gauge",
        "TCP flows admitted provisionally, waiting for their L7 name (tls_sni, http_host, dns_qname rules).",
        p.l7_pending() as f64,
    );
    e.labelled(
        "portcullis_l7_decisions_total",
        "counter",
        "L7 rule decisions: pending TCP flows started, flows decided with their name, of which blocked (dropped or rejected), later UDP datagrams decided by their own names, of which blocked, segments held back while pending.",
        "event",
        [
            ("pending_started", l7.pending_started),
            ("decided", l7.decided),
            ("blocked", l7.blocked),
            ("datagrams_decided", l7.datagrams_decided),
            ("datagrams_blocked", l7.datagrams_blocked),
            ("requests_decided", l7.requests_decided),
            ("requests_blocked", l7.requests_blocked),
            ("held_back", l7.held_back),
        ]
        .map(|(k, v)| (k, v as f64)),
    );
    e.labelled(
        "portcullis_reloads_total",
        "counter",
        "Configuration reloads by result.",
        "result",
        [("ok", sh.reloads_ok), ("failed", sh.reloads_failed)].map(|(r, n)| (r, n as f64)),
    );
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testbed;
    use std::time::{Duration, Instant};

    #[test]
    fn rendered_metrics_parse_and_count() {
        let t0 = Instant::now();
        let mut p = testbed::pipeline_accept_forward(t0);
        let mut bad = vec![0x45u8, 0, 0];
        let _ = p.handle(&mut bad, crate::zone::ZoneId::TUN, t0);
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(3));
        let peers = vec![PeerStats {
            zone: crate::zone::ZoneId::peer(0),
            name: "lap\"top".into(),
            public_key: [0; 32],
            endpoint: None,
            last_handshake: None,
            has_session: false,
            rx_bytes: 10,
            tx_bytes: 20,
            kill_switch_drops: 0,
            pending: 0,
            roams: 0,
        }];
        let text = render(
            &p,
            &ShellMetrics {
                peers: &peers,
                latency: Some(&h),
                ..ShellMetrics::default()
            },
        );
        let n = super::super::prom::check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(n > 40, "{n} samples");
        assert!(
            text.contains("portcullis_packets_total{verdict=\"received\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("portcullis_packets_total{verdict=\"drop\"} 1\n"));
        assert!(text.contains("portcullis_peer_rx_bytes_total{peer=\"lap\\\"top\"} 10\n"));
        assert!(text.contains("portcullis_pipeline_latency_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("portcullis_rule_packets_total{chain=\"forward\",rule="));
        assert!(text.contains("portcullis_blocklist_entries{origin=\"ctl\"} 0\n"));
        assert!(text.contains("portcullis_anomaly_alerts_total{detector=\"port_scan\"} 0\n"));
        assert!(text.contains("portcullis_l7_pending_flows 0\n"));
        assert!(text.contains("portcullis_l7_decisions_total{event=\"datagrams_blocked\"} 0\n"));
    }

    /// A port scan detected and blocked shows in the anomaly counter and
    /// the blocklist gauge.
    #[test]
    fn anomaly_and_blocklist_metrics_count() {
        use crate::anomaly::{AnomalyConfig, Kind};
        let t0 = Instant::now();
        let mut p = testbed::pipeline_accept_forward(t0);
        let mut a = AnomalyConfig {
            block: Some(Duration::from_secs(60)),
            ..AnomalyConfig::default()
        };
        a.detectors = [None; 6];
        a.detectors[Kind::PortScan as usize] = Some(crate::anomaly::Detector {
            threshold: 3,
            window: Duration::from_secs(10),
            block: None,
        });
        p.set_protection(
            &crate::blocklist::Protection {
                anomaly: Some(a),
                ..Default::default()
            },
            t0,
        );
        for port in 1..=3 {
            let mut pkt = crate::packet::synth::tcp(
                "100.64.0.2:40000".parse().unwrap(),
                std::net::SocketAddr::new("198.51.100.7".parse().unwrap(), port),
                crate::packet::synth::TcpSpec::default(),
                &[],
            )
            .unwrap();
            let _ = p.handle(&mut pkt, crate::zone::ZoneId::peer(0), t0);
        }
        let text = render(&p, &ShellMetrics::default());
        super::super::prom::check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            text.contains("portcullis_anomaly_alerts_total{detector=\"port_scan\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_blocklist_entries{origin=\"anomaly\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_blocklist_changes_total{change=\"added\"} 1\n"),
            "{text}"
        );
    }
}
