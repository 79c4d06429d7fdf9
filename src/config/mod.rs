//! Configuration: the TOML file (plus `PORTCULLIS__*` environment overrides),
//! read through the `config` crate and validated into a compiled [`Config`].
//!
//! Contract:
//! - [`load`] reads the file and the environment; [`load_str`] reads text only
//!   (no environment; for tests and fuzzing). Nothing panics on any input.
//! - Every problem is collected and reported at once ([`ConfigError`]); each
//!   names the file (or the environment variable), the key path
//!   (`rule[3].dport`, array indices from 0), the bad value and what is
//!   expected. Unknown keys are errors, with a "did you mean" hint.
//! - The result is compiled: peers are zones ([`ZoneTable`]), names and sets
//!   are resolved, rules are [`Rule`](crate::rules::Rule)s in three [`ChainDef`]s, durations are
//!   [`std::time::Duration`]s, keys are bytes.
//!
//! Behaviour borrowed from elsewhere, and where it deliberately differs:
//! - keys, allowed IPs, endpoints and keepalives follow `wg(8)`/`wg-quick(8)`;
//!   host bits in allowed IPs and rule CIDRs are cleared like `wg` does
//!   (`10.1.2.3/8` means `10.0.0.0/8`); but the same network in two peers'
//!   allowed IPs is refused (`wg` silently moves it to the last peer). Nested
//!   networks (an upstream peer's `0.0.0.0/0` and a client's `/32`) are fine:
//!   routing is longest-prefix match.
//! - chain policies, rule order (first match wins), reject types and ICMP type
//!   names follow nftables.
//! - environment overrides: `PORTCULLIS__SECTION__KEY=value` sets
//!   `section.key` (e.g. `PORTCULLIS__INTERFACE__LISTEN_PORT=51821`); list keys
//!   take comma-separated values. The `[[peer]]` and `[[rule]]` arrays can't
//!   be overridden from the environment.

mod build;
mod error;
mod nat;
pub mod ops;
pub mod parse;
mod value;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, Problem};
pub use parse::Endpoint;

use crate::conntrack::CtConfig;
use crate::packet::FragConfig;
use crate::rules::model::ChainDef;
use crate::zone::{ZoneId, ZoneTable};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/portcullis/gateway.toml";

/// A validated, compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (or the origin given to [`load_str`]).
    pub source: PathBuf,
    pub interface: Interface,
    /// Peers in file order; `peers[i].zone == ZoneId::peer(i)`.
    pub peers: Vec<Peer>,
    pub zones: ZoneTable,
    /// Named address sets (`@name` in rules), host bits cleared.
    pub sets: BTreeMap<String, Vec<IpNetwork>>,
    pub input: ChainDef,
    pub forward: ChainDef,
    pub output: ChainDef,
    /// `[[nat]]` rules in file order (first match wins per stage).
    pub nat: Vec<crate::nat::NatRule>,
    pub conntrack: CtConfig,
    pub fragments: FragConfig,
    pub reject: RejectLimit,
    pub log: LogConfig,
    /// Rootless mode's stack (used when `interface.mode` is netstack).
    pub netstack: crate::netstack::NetstackConfig,
    /// Control socket, metrics, events, capture, limits (`config::ops`).
    pub ops: ops::Ops,
    pub ids: IdsSettings,
    /// `[blocklist]`, with the peers (name, key) peer entries resolve against.
    pub blocklist: crate::blocklist::BlockConfig,
}

impl Config {
    /// What the pipeline's blocking takes from this config.
    pub fn protection(&self) -> crate::blocklist::Protection {
        crate::blocklist::Protection {
            blocklist: self.blocklist.clone(),
            anomaly: self.ids.anomaly.clone(),
            ids_block_on_drop: self.ids.block_on_drop.filter(|_| self.ids.enabled),
        }
    }
}

/// `[ids]`: intrusion detection settings and the loaded rules.
#[derive(Debug, Clone)]
pub struct IdsSettings {
    pub enabled: bool,
    pub engine: crate::ids::IdsConfig,
    /// The files `rule_files` expanded to, in order.
    pub rule_files: Vec<PathBuf>,
    /// Rule variables: Suricata's defaults, overridden by `ids.vars`.
    pub vars: crate::ids::rule::Vars,
    /// EVE JSON output file.
    pub eve_log: Option<PathBuf>,
    /// Loaded rules (empty when disabled).
    pub rules: Vec<crate::ids::rule::Signature>,
    pub report: crate::ids::rule::LoadReport,
    /// `[ids.anomaly]` (`None`: off). Runs whether or not signatures are enabled.
    pub anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// `ids.block_on_drop`: block a flow's initiator when a drop/reject signature hits it.
    pub block_on_drop: Option<std::time::Duration>,
}

impl Default for IdsSettings {
    fn default() -> Self {
        IdsSettings {
            enabled: false,
            engine: crate::ids::IdsConfig::default(),
            rule_files: Vec::new(),
            vars: crate::ids::rule::Vars::suricata_defaults(),
            eve_log: None,
            rules: Vec::new(),
            report: crate::ids::rule::LoadReport::default(),
            anomaly: None,
            block_on_drop: None,
        }
    }
}

/// How packets reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A kernel TUN device (needs CAP_NET_ADMIN to create it).
    Tun,
    /// No TUN: a userspace TCP/IP stack (smoltcp) and ordinary host sockets;
    /// needs no privilege at all.
    Netstack,
}

/// The gateway's own interface: the TUN device and the WireGuard socket.
#[derive(Clone, PartialEq, Eq)]
pub struct Interface {
    /// TUN device name (`pc0`).
    pub name: String,
    pub mode: Mode,
    /// The gateway's addresses on the tunnel, with their prefix (host bits
    /// kept: `100.64.0.1/24`).
    pub addresses: Vec<IpNetwork>,
    pub mtu: u16,
    /// WireGuard UDP port (0: any free port, for client-only setups).
    pub listen_port: u16,
    /// The gateway's X25519 private key.
    pub private_key: [u8; 32],
    /// Drop privileges to this user after opening the TUN and the socket.
    pub user: Option<String>,
    /// Threads doing WireGuard crypto by peer (0 (default): one per core,
    /// 1: inline; see `wg::parallel`).
    pub crypto_threads: u16,
    /// TUN queues (multi-queue TUN), each written by its own thread with
    /// the flows hashed to it (1 (default): one queue, written by the
    /// loop; 0: one per core; see `io::tun_writer`).
    pub tun_queues: u16,
    /// WireGuard UDP sockets on the listen port (`SO_REUSEPORT`), each read
    /// by its own thread (1 (default): one socket, read by the loop; 0: one
    /// per core; see `io::udp_readers`).
    pub udp_sockets: u16,
}

impl Interface {
    /// The public key of [`Interface::private_key`] (what peers configure).
    pub fn public_key(&self) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(self.private_key);
        x25519_dalek::PublicKey::from(&secret).to_bytes()
    }
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("addresses", &self.addresses)
            .field("mtu", &self.mtu)
            .field("listen_port", &self.listen_port)
            .field("private_key", &"<redacted>")
            .field("user", &self.user)
            .field("crypto_threads", &self.crypto_threads)
            .field("tun_queues", &self.tun_queues)
            .field("udp_sockets", &self.udp_sockets)
            .finish()
    }
}

/// A WireGuard peer (and the zone named after it).
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub zone: ZoneId,
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    /// Host bits cleared, no network listed twice across peers.
    pub allowed_ips: Vec<IpNetwork>,
    pub endpoint: Option<Endpoint>,
    /// Seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
    pub groups: Vec<String>,
}

impl Peer {
    /// True for an upstream peer: its allowed IPs include a default route.
    pub fn is_upstream(&self) -> bool {
        self.allowed_ips.iter().any(|n| n.prefix() == 0)
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("zone", &self.zone)
            .field("public_key", &parse::key_to_base64(&self.public_key))
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("groups", &self.groups)
            .finish()
    }
}

/// Rate limit for the replies `reject` sends (ICMP errors, TCP RSTs), a token
/// bucket like the kernel's `icmp_ratelimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectLimit {
    /// Replies per second (0: never reply; reject then acts like drop).
    pub per_sec: u32,
    /// Bucket depth.
    pub burst: u32,
}

impl Default for RejectLimit {
    fn default() -> Self {
        RejectLimit {
            per_sec: 100,
            burst: 50,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub level: tracing::Level,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: tracing::Level::INFO,
            format: LogFormat::Human,
        }
    }
}

/// Reads and validates the config file at `path`, with environment overrides
/// (`PORTCULLIS__SECTION__KEY=value`). Relative key file paths are relative
/// to the config file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Like [`load`], with the environment given explicitly (only variables
/// starting with `PORTCULLIS__` are used).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single(&origin, "", format!("cannot read the file: {e}")))?;
    let prefix = format!("{}{}", value::ENV_PREFIX, value::ENV_SEPARATOR);
    let vars: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    build::load_text(&text, &origin, path, Some(vars))
}

/// Validates config text (no environment). `origin` names it in problems and
/// in [`Config::source`]; relative key file paths are relative to `origin`'s
/// directory.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    build::load_text(text, origin, Path::new(origin), None)
}

impl Config {
    /// The zone table a rule set needs (same as `self.zones`).
    pub fn zone_table(&self) -> &ZoneTable {
        &self.zones
    }

    /// A human summary, as `portcullis check` prints it.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let i = &self.interface;
        let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "configuration: {}", self.source.display());
        let _ = writeln!(
            s,
            "interface {} ({}): {}, mtu {}, listen port {}",
            i.name,
            match i.mode {
                Mode::Tun => "tun",
                Mode::Netstack => "netstack",
            },
            addrs.join(" "),
            i.mtu,
            i.listen_port
        );
        let _ = writeln!(
            s,
            "  public key {}{}",
            parse::key_to_base64(&i.public_key()),
            i.user
                .as_ref()
                .map(|u| format!(", runs as user {u}"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "peers: {}", self.peers.len());
        for p in &self.peers {
            let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            let mut extra = Vec::new();
            if !p.groups.is_empty() {
                extra.push(format!("groups {}", p.groups.join(",")));
            }
            if let Some(e) = &p.endpoint {
                extra.push(format!("endpoint {e}"));
            }
            if let Some(k) = p.persistent_keepalive {
                extra.push(format!("keepalive {k}s"));
            }
            if p.preshared_key.is_some() {
                extra.push("preshared key".into());
            }
            if p.is_upstream() {
                extra.push("upstream (default route)".into());
            }
            let _ = writeln!(
                s,
                "  {} [{}]{}{}",
                p.name,
                if ips.is_empty() {
                    "no allowed IPs".into()
                } else {
                    ips.join(" ")
                },
                if extra.is_empty() { "" } else { "; " },
                extra.join("; ")
            );
        }
        let groups: Vec<&str> = self.zones.group_names().collect();
        if !groups.is_empty() {
            let _ = writeln!(s, "groups: {}", groups.join(", "));
        }
        if !self.sets.is_empty() {
            let sets: Vec<String> = self
                .sets
                .iter()
                .map(|(k, v)| format!("{k} ({})", v.len()))
                .collect();
            let _ = writeln!(s, "sets: {}", sets.join(", "));
        }
        for (name, c) in [
            ("input", &self.input),
            ("forward", &self.forward),
            ("output", &self.output),
        ] {
            let _ = writeln!(
                s,
                "chain {name}: {} rule{}, policy {}",
                c.rules.len(),
                if c.rules.len() == 1 { "" } else { "s" },
                build::action_name(c.policy)
            );
        }
        let ct = &self.conntrack;
        let _ = writeln!(
            s,
            "conntrack: up to {} flows, tcp_loose {}, tcp established timeout {}s",
            ct.max_entries,
            if ct.tcp_loose { "on" } else { "off" },
            ct.timeouts.tcp_established.as_secs()
        );
        let f = &self.fragments;
        let _ = writeln!(
            s,
            "fragments: {} bytes, {} datagrams, {} fragments each, timeout {}s",
            f.max_bytes,
            f.max_datagrams,
            f.max_fragments,
            f.timeout.as_secs()
        );
        let _ = writeln!(
            s,
            "reject replies: {}/s, burst {}",
            self.reject.per_sec, self.reject.burst
        );
        let _ = writeln!(
            s,
            "log: {} {}",
            self.log.level.as_str().to_ascii_lowercase(),
            match self.log.format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            }
        );
        if self.ids.enabled {
            let _ = writeln!(
                s,
                "ids: {} mode, {} rule file(s), stream depth {} bytes{}",
                match self.ids.engine.mode {
                    crate::ids::Mode::Detect => "detect",
                    crate::ids::Mode::Prevent => "prevent",
                },
                self.ids.rule_files.len(),
                self.ids.engine.stream_depth,
                self.ids
                    .eve_log
                    .as_ref()
                    .map(|p| format!(", eve log {}", p.display()))
                    .unwrap_or_default()
            );
            s.push_str(&self.ids.report.render());
        } else {
            let _ = writeln!(s, "ids: disabled");
        }
        s
    }
}
