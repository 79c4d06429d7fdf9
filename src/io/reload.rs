//! Hot reload: read, validate and compile the config off the data path
//! (in a blocking task), then swap it into the running shell in one step.
//!
//! What a reload changes live: rules (the generation bump re-checks live
//! flows, so revoked access is cut), peers (added, removed, changed; sessions
//! of kept peers survive — see `WgDevice::update_peers`), AllowedIPs and
//! routes, groups and sets, reject limits, rate and connection limits, event
//! rates. What waits for a restart (reported, not an error): the interface
//! (name, addresses, MTU, port, private key, user), the control socket, the
//! metrics address, the EVE and capture files, conntrack and fragment sizes,
//! log level and format, the interface mode. In netstack mode the `[netstack]`
//! keys in `NetstackConfig::LIVE_KEYS` apply live (limits, timeouts, buffer
//! sizes of new flows, host services); `host_window`, `dns`, `dns_upstream`
//! and the port forwards are reported as waiting for a restart.
//!
//! An invalid config is rejected whole with every problem; nothing changes.
//! Note for `interface.user`: the reload runs as that user, so the config
//! file (and key files) must be readable by it (e.g. group-readable).
//!
//! Zones are numbered by peer order in the file: removing or reordering
//! peers renumbers the zones of the peers after them; their live flows then
//! fail the re-check's AllowedIPs test and are cut (their WireGuard sessions
//! survive). Append new peers at the end to keep every flow.

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
    let settings = RunSettings::from_config(&config).map_err(|e| vec![format!("{e:#}")])?;
    let rules = config.input.rules.len() + config.forward.rules.len() + config.output.rules.len();
    let prepared = Pipeline::prepare(PipelineConfig::from_config(&config));
    Ok(Loaded {
        config,
        settings,
        prepared,
        rules,
        started,
    })
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
    check(old.mode != new.mode, "interface.mode");
    if old.mode == crate::config::Mode::Netstack {
        for k in old.netstack.restart_keys(&new.netstack) {
            v.push(format!("netstack.{k}"));
        }
    }
    v
}
