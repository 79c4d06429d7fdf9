//! Hot reload: read, validate and compile the config off the data path
//! (in a blocking task), then swap it into the running shell in one step.
//!
//! What a reload changes live: rules (the generation bump re-checks live
//! flows, so revoked access is cut), peers (added, removed, changed; sessions
//! of kept peers survive — see `WgDevice::update_peers`), AllowedIPs and
//! routes, groups and sets, reject limits, rate and connection limits, event
//! rates. What waits for a restart (reported, not an error): the interface
//! (name, addresses, MTU, port, private key, user, crypto threads, TUN
//! queues, UDP sockets), the
//! control socket, the
//! metrics address, the EVE and capture files, conntrack and fragment sizes,
//! log level and format, the interface mode. In netstack mode the `[netstack]`
//! keys in `NetstackConfig::LIVE_KEYS` apply live (limits, timeouts, buffer
//! sizes of new flows, host services); `host_window`, `dns`, `dns_upstream`
//! and the port forwards are reported as waiting for a restart.
//!
//! The IDS (`[ids]`): the rule files are read again and the rule set is
//! compiled here, off the data path, then swapped in at once
//! ([`swap_ids`]). As at startup, rules this engine cannot load are skipped
//! and counted per reason (logged with the reload); a missing rule file or
//! an invalid `[ids]` value is a config error and rejects the reload whole.
//! Live flows keep their inspection state across the swap (reassembled
//! streams, app-layer progress, dropped/passed flows, flowbits by name,
//! threshold counts and "already alerted" marks of kept rules by sid: see
//! [`crate::ids::Ids::adopt`]); a signature added by the reload fires on a
//! live flow's next data. Enabling or disabling the IDS applies too (a new
//! engine starts with no flow state); a changed `ids.eve_log` waits for a
//! restart.
//!
//! An invalid config is rejected whole with every problem; nothing changes.
//! Note for `interface.user`: the reload runs as that user, so the config
//! file (and key files) must be readable by it (e.g. group-readable).
//!
//! Zones are numbered by peer order in the file: adding, removing or
//! reordering peers gives other peers other zone ids. Live flows follow
//! their peers by name (`Pipeline::reload_prepared`: connection tracking
//! and pending L7 decisions are renumbered, the index rebuilt), so every
//! flow of a kept peer survives; the flows of a removed peer end (flow-end
//! cause `removed`). A renamed peer is a removed and an added one.

use super::RunSettings;
use crate::config::Config;
use crate::pipeline::{Pipeline, PipelineConfig, Prepared};
use std::path::Path;
use std::time::Instant;

/// A validated, compiled config ready to swap in.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub settings: RunSettings,
    pub prepared: Prepared,
    pub rules: usize,
    /// The compiled IDS (`None`: `[ids]` disabled).
    pub ids: Option<crate::ids::Ids>,
    pub started: Instant,
}

/// Reads, validates and compiles `path` (blocking). Errors: every problem.
pub fn load(path: &Path, started: Instant) -> Result<Loaded, Vec<String>> {
    let config = crate::config::load(path).map_err(|e| {
        e.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    })?;
    let mut settings = RunSettings::from_config(&config).map_err(|e| vec![format!("{e:#}")])?;
    let rules = config.input.rules.len() + config.forward.rules.len() + config.output.rules.len();
    let prepared = Pipeline::prepare(PipelineConfig::from_config(&config));
    let ids = compile_ids(&mut settings);
    Ok(Loaded {
        config,
        settings,
        prepared,
        rules,
        ids,
        started,
    })
}

/// Compiles the IDS rules of `settings` (taken out of it, as at startup),
/// with a fresh hash key.
fn compile_ids(settings: &mut RunSettings) -> Option<crate::ids::Ids> {
    let (sigs, cfg) = settings.ids.take()?;
    let mut k = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
    let (a, b) = k.split_at(8);
    let key = (
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        u64::from_le_bytes(b.try_into().unwrap_or_default()),
    );
    Some(crate::ids::Ids::new(sigs, cfg, key))
}

/// Swaps the reloaded IDS into the pipeline: the new engine takes over the
/// running one's live state ([`crate::ids::Ids::adopt`]); `None` removes the
/// IDS. One step on the data path (the compilation happened in [`load`]).
pub fn swap_ids(
    pipeline: &mut Pipeline,
    new: Option<crate::ids::Ids>,
    report: &crate::ids::rule::LoadReport,
) {
    let old = pipeline.take_ids();
    let Some(mut new) = new else {
        if old.is_some() {
            tracing::info!("IDS disabled by the reload");
        }
        return;
    };
    if let Some(old) = old {
        new.adopt(old);
    }
    tracing::info!(
        rules = report.loaded,
        skipped = report.skipped_total(),
        files = report.files,
        "IDS rules reloaded"
    );
    for (why, n) in &report.skipped {
        tracing::info!(count = n, reason = %why, "IDS rules skipped");
    }
    pipeline.set_ids(Some(new));
}

/// Settings a reload cannot apply (they need a restart).
pub fn needs_restart(old: &RunSettings, new: &RunSettings) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            v.push(what.to_string());
        }
    };
    check(old.tun_name != new.tun_name, "interface.name");
    check(old.addresses != new.addresses, "interface.addresses");
    check(old.mtu != new.mtu, "interface.mtu");
    check(
        old.wg.listen_port != new.wg.listen_port,
        "interface.listen_port",
    );
    check(
        old.wg.private_key != new.wg.private_key,
        "interface.private_key",
    );
    check(old.user != new.user, "interface.user");
    check(
        old.crypto_threads != new.crypto_threads,
        "interface.crypto_threads",
    );
    check(old.tun_queues != new.tun_queues, "interface.tun_queues");
    check(old.udp_sockets != new.udp_sockets, "interface.udp_sockets");
    check(old.ops.control != new.ops.control, "[control]");
    check(old.ops.metrics != new.ops.metrics, "metrics.listen");
    check(
        old.ops.events.eve_file != new.ops.events.eve_file,
        "events.eve_file",
    );
    check(old.ops.capture != new.ops.capture, "[capture]");
    check(
        old.pipeline.conntrack != new.pipeline.conntrack,
        "[conntrack]",
    );
    check(
        old.pipeline.fragments != new.pipeline.fragments,
        "[fragments]",
    );
    check(old.log != new.log, "[log]");
    check(old.eve_log != new.eve_log, "ids.eve_log");
    check(old.mode != new.mode, "interface.mode");
    if old.mode == crate::config::Mode::Netstack {
        for k in old.netstack.restart_keys(&new.netstack) {
            v.push(format!("netstack.{k}"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conntrack::{Dir, FlowId};
    use crate::ids::Ids;
    use crate::packet::synth::{self, TcpSpec};
    use crate::packet::tcp_flags::{ACK, PSH, SYN};

    const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "YNqHwpcAmVj0lVzPSt4oLXe4WLZ6b7P6XWgGjrmZb1Y="

[ids]
enabled = true
rule_files = ["*.rules"]
"#;

    fn setup(rules: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rules"), rules).unwrap();
        let cfg = dir.path().join("gw.toml");
        std::fs::write(&cfg, BASE).unwrap();
        (dir, cfg)
    }

    /// Client -> server packet of flow 7 at stream offset `off`.
    fn send(ids: &mut Ids, flags: u8, seq: u32, ack: u32, dir: Dir, data: &[u8]) {
        let (c, s) = (
            "10.0.0.2:40000".parse().unwrap(),
            "10.9.9.9:80".parse().unwrap(),
        );
        let (a, b) = if dir == Dir::Original { (c, s) } else { (s, c) };
        let spec = TcpSpec {
            flags,
            seq,
            ack,
            ..TcpSpec::default()
        };
        let p = synth::tcp(a, b, spec, data).unwrap();
        let m = crate::packet::parse(&p).unwrap();
        let _ = ids.inspect(FlowId(7), dir, &m, &p, Instant::now());
    }

    fn sids(ids: &mut Ids) -> Vec<u32> {
        std::iter::from_fn(|| ids.poll_alert())
            .map(|a| a.sid)
            .collect()
    }

    /// The thread and queue counts of the interface are fixed at start: a
    /// reload that changes one reports it as waiting for a restart, and a
    /// reload that changes none reports nothing.
    #[test]
    fn thread_and_queue_counts_need_a_restart() {
        let (_dir, cfg) = setup("");
        let origin = cfg.display().to_string();
        let settings = |extra: &str| {
            let text = BASE.replace("[interface]", &format!("[interface]\n{extra}"));
            let c = crate::config::load_str(&text, &origin).unwrap();
            RunSettings::from_config(&c).unwrap()
        };
        let old = settings("");
        assert!(needs_restart(&old, &settings("")).is_empty());
        for (line, key) in [
            ("crypto_threads = 2", "interface.crypto_threads"),
            ("tun_queues = 2", "interface.tun_queues"),
            ("udp_sockets = 2", "interface.udp_sockets"),
        ] {
            let got = needs_restart(&old, &settings(line));
            assert_eq!(got, vec![key.to_string()], "{line}");
        }
    }

    #[test]
    fn reload_adds_a_signature_that_fires_on_a_live_flow() {
        let (dir, cfg) =
            setup("alert tcp any any -> any any (msg:\"old\"; content:\"aaa\"; sid:1;)\n");
        let mut l1 = load(&cfg, Instant::now()).unwrap();
        let mut ids = l1.ids.take().unwrap();
        assert_eq!(ids.rule_count(), 1);
        send(&mut ids, SYN, 999, 0, Dir::Original, b"");
        send(&mut ids, SYN | ACK, 4999, 1000, Dir::Reply, b"");
        send(&mut ids, ACK, 1000, 5000, Dir::Original, b"");
        send(
            &mut ids,
            ACK | PSH,
            1000,
            5000,
            Dir::Original,
            b"GET /x HTTP/1.1\r\n",
        );
        assert!(sids(&mut ids).is_empty());
        // The rule file gains a signature (and an unloadable rule, skipped).
        std::fs::write(
            dir.path().join("a.rules"),
            "alert tcp any any -> any any (msg:\"old\"; content:\"aaa\"; sid:1;)\n\
             alert tcp any any -> any any (msg:\"new\"; content:\"secret\"; sid:2;)\n\
             alert tcp any any -> any any (msg:\"bad\"; byte_test:1,=,1,0; sid:3;)\n",
        )
        .unwrap();
        let mut l2 = load(&cfg, Instant::now()).unwrap();
        assert_eq!(l2.config.ids.report.loaded, 2);
        assert_eq!(l2.config.ids.report.skipped_total(), 1);
        // Swapped through the pipeline as the shell does.
        let mut p = Pipeline::new(l2.settings.pipeline.clone(), (1, 2), Instant::now());
        p.set_ids(Some(ids));
        swap_ids(&mut p, l2.ids.take(), &l2.config.ids.report);
        let mut ids = p.take_ids().unwrap();
        assert_eq!(ids.rule_count(), 2);
        assert_eq!(ids.stats().packets, 4, "counters carried over");
        // The live flow's next packet carries the new signature's content.
        send(
            &mut ids,
            ACK | PSH,
            1017,
            5000,
            Dir::Original,
            b"Cookie: secret\r\n",
        );
        assert_eq!(sids(&mut ids), vec![2]);
        // The stream was kept: a content that starts before a reload and
        // ends after it matches.
        std::fs::write(
            dir.path().join("a.rules"),
            "alert tcp any any -> any any (msg:\"span\"; content:\"secret|0d 0a 0d 0a|\"; sid:4;)\n",
        )
        .unwrap();
        let mut l4 = load(&cfg, Instant::now()).unwrap();
        let mut next = l4.ids.take().unwrap();
        next.adopt(ids);
        send(&mut next, ACK | PSH, 1033, 5000, Dir::Original, b"\r\n");
        assert_eq!(sids(&mut next), vec![4]);
    }

    #[test]
    fn a_missing_rule_file_rejects_the_reload() {
        let (dir, cfg) = setup("");
        std::fs::write(&cfg, BASE.replace("\"*.rules\"", "\"missing.rules\"")).unwrap();
        let e = load(&cfg, Instant::now()).unwrap_err();
        assert!(e.iter().any(|p| p.contains("ids.rule_files")), "{e:?}");
        std::fs::write(&cfg, format!("{BASE}stream_depth = \"lots\"\n")).unwrap();
        assert!(load(&cfg, Instant::now()).is_err());
        drop(dir);
    }

    #[test]
    fn disabling_removes_the_ids() {
        let (_dir, cfg) = setup("alert tcp any any -> any any (content:\"x\"; sid:1;)\n");
        let mut l = load(&cfg, Instant::now()).unwrap();
        let mut p = Pipeline::new(l.settings.pipeline.clone(), (1, 2), Instant::now());
        p.set_ids(l.ids.take());
        std::fs::write(&cfg, BASE.replace("enabled = true", "enabled = false")).unwrap();
        let l2 = load(&cfg, Instant::now()).unwrap();
        assert!(l2.ids.is_none());
        swap_ids(&mut p, l2.ids, &l2.config.ids.report);
        assert!(p.ids().is_none());
    }
}
