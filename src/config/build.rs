//! Validation: the merged value tree -> [`Config`].
//!
//! Each section has a builder that checks its keys (unknown keys are errors),
//! types and values, reports every problem to the [`Ctx`] and goes on with a
//! placeholder, so one run finds all problems. Cross-references (zones, sets)
//! are resolved after peers and sets are read. The config is returned only if
//! no problem was found.

use super::parse;
use super::value::{
    env_leaf, env_var_name, join, show, Ctx, Tab, ENV_ORIGIN, ENV_PREFIX, ENV_SEPARATOR,
};
use super::{
    Config, ConfigError, IdsSettings, Interface, LogConfig, LogFormat, Mode, Peer, RejectLimit,
};
use crate::conntrack::{CtConfig, Timeouts};
use crate::netstack::{NetstackConfig, PortForward, Proto as NsProto};
use crate::packet::{proto, FragConfig};
use crate::rules::l7::{L7Kind, NameList, NamePattern};
use crate::rules::model::{
    Action, AddrMatch, ChainDef, CtStateMask, PortMatch, RejectWith, Rule, ZoneMatch,
};
use crate::zone::{ZoneId, ZoneTable};
use config::{Map, Value, ValueKind};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod guard;
mod ops;

const TOP_KEYS: &[&str] = &[
    "interface",
    "peer",
    "sets",
    "chains",
    "rule",
    "nat",
    "conntrack",
    "fragments",
    "reject",
    "log",
    "netstack",
    // operations sections (build/ops.rs)
    "control",
    "metrics",
    "events",
    "capture",
    "limits",
    "ids",
    "blocklist",
];
const IDS_KEYS: &[&str] = &[
    "enabled",
    "mode",
    "rule_files",
    "vars",
    "stream_depth",
    "eve_log",
    "max_flows",
    "flow_timeout",
    "anomaly",
    "block_on_drop",
];
/// `interface.crypto_threads` upper bound: far above any core count the
/// peer-sharded decryption can use (a round is at most 256 datagrams), low
/// enough that a typo does not spawn thousands of threads.
const MAX_CRYPTO_THREADS: i128 = 256;
/// `interface.tun_queues` upper bound: the kernel's `MAX_TAP_QUEUES` (256)
/// is far above what one event loop can feed; a typo must not open
/// hundreds of queues and threads.
const MAX_TUN_QUEUES: i128 = 64;
/// `interface.udp_sockets` upper bound (the same reasoning).
const MAX_UDP_SOCKETS: i128 = 64;
const INTERFACE_KEYS: &[&str] = &[
    "name",
    "mode",
    "addresses",
    "mtu",
    "listen_port",
    "private_key",
    "private_key_file",
    "user",
    "crypto_threads",
    "tun_queues",
    "udp_sockets",
];
const PEER_KEYS: &[&str] = &[
    "name",
    "public_key",
    "preshared_key",
    "preshared_key_file",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
    "groups",
];
const CHAIN_NAMES: &[&str] = &["input", "forward", "output"];
const CHAIN_KEYS: &[&str] = &["policy", "reject_with"];
const RULE_KEYS: &[&str] = &[
    "chain",
    "name",
    "from",
    "to",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "icmp_type",
    "icmp_code",
    "tcp_flags",
    "state",
    "family",
    "action",
    "reject_with",
    "log",
    "tls_sni",
    "http_host",
    "dns_qname",
    "block",
    "capture",
];
const CONNTRACK_KEYS: &[&str] = &["max_entries", "tcp_loose", "timeouts"];
const TIMEOUT_KEYS: &[&str] = &[
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_established",
    "tcp_fin_wait",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_time_wait",
    "tcp_close",
    "udp_unreplied",
    "udp_replied",
    "icmp",
    "other",
];
const FRAGMENT_KEYS: &[&str] = &["max_bytes", "max_datagrams", "max_fragments", "timeout"];
const REJECT_KEYS: &[&str] = &["rate_per_sec", "burst"];
const LOG_KEYS: &[&str] = &["level", "format"];
const NETSTACK_KEYS: &[&str] = &[
    "max_connections",
    "tcp_rx_buffer",
    "tcp_tx_buffer",
    "host_window",
    "tcp_idle_timeout",
    "udp_idle_timeout",
    "icmp_idle_timeout",
    "connect_timeout",
    "dns",
    "dns_upstream",
    "host_services",
    "forward",
];
const FORWARD_KEYS: &[&str] = &["proto", "listen", "to", "max_flows", "idle_timeout"];

/// Zone names peers may not take: the fixed zones.
const RESERVED_ZONE_NAMES: &[&str] = &["tun", "local", "host"];

/// Most peers a zone id can number (`ZoneId` is a u16, peers start at 3).
const MAX_PEERS: usize = (u16::MAX - ZoneId::FIRST_PEER) as usize;

/// Largest flow table accepted (2^24 flows; at a few hundred bytes per flow
/// that is already several GiB).
const MAX_CT_ENTRIES: i128 = 1 << 24;

/// Key files larger than this are not key files (a key is 44 characters).
const MAX_KEY_FILE: u64 = 4096;

/// `"tcp/22"` -> (tcp, 22).
fn parse_service(s: &str) -> Option<(NsProto, u16)> {
    let (p, port) = s.split_once('/')?;
    let proto = match p {
        "tcp" => NsProto::Tcp,
        "udp" => NsProto::Udp,
        _ => return None,
    };
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((proto, port))
}

/// The chain policy / action names.
pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Drop => "drop",
        Action::Reject(_) => "reject",
    }
}

/// Merges the text and the environment through the `config` crate, then
/// validates.
pub(crate) fn load_text(
    text: &str,
    origin: &str,
    path: &Path,
    env: Option<Map<String, String>>,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if let Some(vars) = env {
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(vars)),
        );
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError::single(origin, "", e.to_string()))?;
    let empty = Map::new();
    let root = match &merged.cache.kind {
        ValueKind::Table(m) => m,
        _ => &empty,
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut b = Builder {
        ctx: Ctx::new(origin),
        base_dir,
    };
    let config = b.config(root, PathBuf::from(origin));
    if b.ctx.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            problems: b.ctx.problems,
        })
    }
}

/// An address family constraint as a bit set: bit 0 IPv4, bit 1 IPv6.
type Families = u8;
const V4: Families = 1;
const V6: Families = 2;
const ANY_FAMILY: Families = V4 | V6;

fn families_of(nets: &[IpNetwork]) -> Families {
    nets.iter()
        .map(|n| if n.is_ipv4() { V4 } else { V6 })
        .fold(0, |a, b| a | b)
}

fn family_words(f: Families) -> &'static str {
    match f {
        V4 => "IPv4 only",
        V6 => "IPv6 only",
        _ => "both families",
    }
}

pub(super) struct Builder {
    pub(super) ctx: Ctx,
    base_dir: PathBuf,
}

impl Builder {
    fn config(&mut self, root: &Map<String, Value>, source: PathBuf) -> Config {
        let top = Tab {
            path: "",
            map: root,
        };
        self.ctx.check_keys(top, TOP_KEYS);

        let interface = self.interface(top);
        let peers = self.peers(top, &interface);
        let zones = ZoneTable::new(
            peers
                .iter()
                .map(|p| (p.name.clone(), p.groups.clone()))
                .collect(),
        );
        let sets = self.sets(top);
        let mut chains = self.chains(top);
        self.rules(top, &zones, &sets, &mut chains);
        let [input, forward, output] = chains;
        let nat = self.nat(top, &zones, &sets);
        let conntrack = self.conntrack(top);
        let fragments = self.fragments(top);
        let reject = self.reject(top);
        let log = self.log(top);
        let netstack = self.netstack(top);
        let ops = self.ops(top, &zones, [&input, &forward, &output]);
        let ids = self.ids(top);
        let blocklist = self.blocklist(top, &peers);
        Config {
            source,
            interface,
            peers,
            zones,
            sets,
            input,
            forward,
            output,
            nat,
            conntrack,
            fragments,
            reject,
            log,
            netstack,
            ops,
            ids,
            blocklist,
        }
    }

    /// A sub-table of the root (absent: an empty one).
    fn section<'v>(&mut self, top: Tab<'v>, key: &'v str) -> Option<Tab<'v>> {
        let map = self.ctx.table_at(top, key)?;
        Some(Tab { path: key, map })
    }

    // ------------------------------------------------------------ interface

    fn interface(&mut self, top: Tab<'_>) -> Interface {
        let mut iface = Interface {
            name: "pc0".into(),
            mode: Mode::Tun,
            addresses: Vec::new(),
            mtu: 1420,
            listen_port: 51820,
            private_key: [0; 32],
            user: None,
            // one per core: a gain with several peers, neutral with one
            // (docs/throughput.md "Multi-core")
            crypto_threads: 0,
            // one queue written by the loop: writer threads pay off only
            // with cores to spare (docs/throughput.md "Multi-core")
            tun_queues: 1,
            udp_sockets: 1,
        };
        let Some(t) = self.section(top, "interface") else {
            if !top.map.contains_key("interface") {
                self.ctx.missing(
                    top,
                    "interface",
                    "an [interface] table with at least `addresses` and a private key",
                );
            }
            return iface;
        };
        self.ctx.check_keys(t, INTERFACE_KEYS);
        if let Some(name) = self.ctx.str_at(t, "name") {
            match parse::ifname(&name) {
                Ok(()) => iface.name = name,
                Err(e) => self.bad_at(t, "name", &e),
            }
        }
        if let Some(mode) = self.ctx.str_at(t, "mode") {
            match mode.as_str() {
                "tun" => iface.mode = Mode::Tun,
                "netstack" => iface.mode = Mode::Netstack,
                _ => self.bad_at(t, "mode", "expected \"tun\" or \"netstack\""),
            }
        }
        match t.map.get("addresses") {
            None => self.ctx.missing(
                t,
                "addresses",
                "the gateway's tunnel addresses, like [\"100.64.0.1/24\", \"2001:db8:64::1/64\"]",
            ),
            Some(v) => {
                if let Some(items) = self.ctx.as_list("interface.addresses", v, "CIDRs") {
                    if items.is_empty() {
                        self.ctx.report(
                            "interface.addresses",
                            Some(v),
                            "the list is empty: expected at least one address like \"100.64.0.1/24\"",
                        );
                    }
                    for (path, item) in items {
                        let Some(s) = self.ctx.as_str(&path, &item) else {
                            continue;
                        };
                        match parse::cidr(s) {
                            Ok(n) if iface.addresses.contains(&n) => self.ctx.bad(
                                &path,
                                &item,
                                "listed twice; expected each address once",
                            ),
                            Ok(n) => iface.addresses.push(n),
                            Err(e) => self.ctx.bad(&path, &item, e),
                        }
                    }
                }
            }
        }
        let has_v6 = iface.addresses.iter().any(IpNetwork::is_ipv6);
        // RFC 8200 §5: IPv6 needs a link MTU of at least 1280; RFC 791: every
        // IPv4 host must accept 576-byte datagrams.
        let min_mtu = if has_v6 { 1280 } else { 576 };
        if let Some(v) = t.map.get("mtu") {
            match self.ctx.as_int("interface.mtu", v, 0, i128::from(u16::MAX)) {
                Some(m) if m < min_mtu => self.ctx.bad(
                    "interface.mtu",
                    v,
                    format_args!(
                        "expected {min_mtu}..=65535 ({})",
                        if has_v6 {
                            "IPv6 addresses need at least 1280, RFC 8200"
                        } else {
                            "IPv4 needs at least 576, RFC 791"
                        }
                    ),
                ),
                Some(m) => iface.mtu = m as u16,
                None => {}
            }
        }
        if let Some(p) = self.ctx.int_at(t, "listen_port", 0, 65535) {
            iface.listen_port = p as u16;
        }
        if let Some(n) = self.ctx.int_at(t, "crypto_threads", 0, MAX_CRYPTO_THREADS) {
            iface.crypto_threads = n as u16;
        }
        if let Some(n) = self.ctx.int_at(t, "tun_queues", 0, MAX_TUN_QUEUES) {
            iface.tun_queues = n as u16;
        }
        if let Some(n) = self.ctx.int_at(t, "udp_sockets", 0, MAX_UDP_SOCKETS) {
            iface.udp_sockets = n as u16;
        }
        match self.key_pair(t, "private_key", "private_key_file") {
            KeyOutcome::Key(k) => iface.private_key = k,
            KeyOutcome::Absent => self.ctx.missing(
                t,
                "private_key_file",
                "`private_key_file = \"/etc/portcullis/private.key\"` (made with `portcullis genkey`) or an inline `private_key`",
            ),
            KeyOutcome::Reported => {}
        }
        if let Some(u) = self.ctx.str_at(t, "user") {
            let ok = !u.is_empty()
                && u.len() <= 32
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if ok {
                iface.user = Some(u);
            } else {
                self.bad_at(
                    t,
                    "user",
                    "expected a user name (1 to 32 letters, digits, '_', '-', '.'), like \"portcullis\"",
                );
            }
        }
        iface
    }

    pub(super) fn bad_at(&mut self, t: Tab<'_>, key: &str, msg: &str) {
        if let Some(v) = t.map.get(key) {
            self.ctx.bad(&join(t.path, key), v, msg);
        }
    }

    // ----------------------------------------------------------------- keys

    /// A key given inline (`inline`) or in a file (`file`), at most one of them.
    fn key_pair(&mut self, t: Tab<'_>, inline: &str, file: &str) -> KeyOutcome {
        match (t.map.get(inline), t.map.get(file)) {
            (None, None) => KeyOutcome::Absent,
            (Some(_), Some(f)) => {
                self.ctx.report(
                    &join(t.path, file),
                    Some(f),
                    format!("both `{inline}` and `{file}` are set; expected only one of them"),
                );
                KeyOutcome::Reported
            }
            (Some(v), None) => {
                let key = join(t.path, inline);
                let Some(s) = self.ctx.as_str(&key, v) else {
                    return KeyOutcome::Reported;
                };
                match parse::key(s) {
                    Ok(k) => KeyOutcome::Key(k),
                    Err(e) => {
                        // Never echo a (possibly secret) key.
                        self.ctx.report(&key, Some(v), format!("the key is {e}"));
                        KeyOutcome::Reported
                    }
                }
            }
            (None, Some(v)) => {
                let key = join(t.path, file);
                let Some(s) = self.ctx.as_str(&key, v) else {
                    return KeyOutcome::Reported;
                };
                match self.read_key_file(s) {
                    Ok(k) => KeyOutcome::Key(k),
                    Err(e) => {
                        // The message names the file already.
                        self.ctx.report(&key, Some(v), e);
                        KeyOutcome::Reported
                    }
                }
            }
        }
    }

    /// Reads a key file: it must exist, be a regular file, not be accessible
    /// by group or others, and hold one base64 key.
    fn read_key_file(&self, name: &str) -> Result<[u8; 32], String> {
        if name.is_empty() {
            return Err("expected the path of a key file".into());
        }
        let path = self.base_dir.join(name);
        let shown = path.display();
        let meta = std::fs::metadata(&path)
            .map_err(|e| format!("cannot open {shown}: {e}; expected a key file made with `portcullis genkey > FILE` (or `wg genkey`) and `chmod 600 FILE`"))?;
        if !meta.is_file() {
            return Err(format!(
                "{shown} is not a regular file; expected a key file"
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "key file {shown} is readable by others (mode {mode:04o}); chmod 600 it (expected no access for group and others)"
                ));
            }
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(format!(
                "{shown} is {} bytes; expected a key file (44 characters)",
                meta.len()
            ));
        }
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
            .map_err(|e| format!("cannot read {shown}: {e}; expected a readable key file"))?;
        parse::key(&text).map_err(|e| format!("the key in {shown} is {e}"))
    }

    // ---------------------------------------------------------------- peers

    /// The array of tables `[[key]]` at the root.
    pub(super) fn table_array<'v>(
        &mut self,
        top: Tab<'v>,
        key: &str,
    ) -> Vec<(String, &'v Map<String, Value>)> {
        let Some(v) = top.map.get(key) else {
            return Vec::new();
        };
        let ValueKind::Array(items) = &v.kind else {
            match env_leaf(v) {
                Some(leaf) => self.ctx.report(
                    key,
                    Some(leaf),
                    format!(
                        "[[{key}]] entries can't be set from the environment; expected no {}__* variables",
                        env_var_name(key)
                    ),
                ),
                None => self
                    .ctx
                    .wrong_type(key, v, &format!("a list of tables, written [[{key}]]")),
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{key}[{i}]");
            if let Some(m) = self.ctx.as_table(&path, item) {
                out.push((path, m));
            }
        }
        out
    }

    fn peers(&mut self, top: Tab<'_>, iface: &Interface) -> Vec<Peer> {
        let own_public = (iface.private_key != [0; 32]).then(|| iface.public_key());
        let mut peers: Vec<Peer> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut pubkeys: HashMap<[u8; 32], usize> = HashMap::new();
        let mut routes: HashMap<IpNetwork, usize> = HashMap::new();
        let tables = self.table_array(top, "peer");
        if tables.len() > MAX_PEERS {
            self.ctx.report(
                "peer",
                top.map.get("peer"),
                format!("{} peers; expected at most {MAX_PEERS}", tables.len()),
            );
            return peers;
        }
        for (i, (path, map)) in tables.iter().enumerate() {
            let t = Tab { path, map };
            self.ctx.check_keys(t, PEER_KEYS);
            let mut peer = Peer {
                name: format!("peer{i}"),
                zone: ZoneId::peer(i),
                public_key: [0; 32],
                preshared_key: None,
                allowed_ips: Vec::new(),
                endpoint: None,
                persistent_keepalive: None,
                groups: Vec::new(),
            };
            match self.ctx.str_at(t, "name") {
                None if !map.contains_key("name") => self.ctx.missing(
                    t,
                    "name",
                    "a name like \"laptop\" (it names the peer's zone in rules)",
                ),
                None => {}
                Some(name) => {
                    if let Err(e) = parse::name(&name) {
                        self.bad_at(t, "name", &e);
                    } else if RESERVED_ZONE_NAMES.contains(&name.as_str()) {
                        self.bad_at(
                            t,
                            "name",
                            "this is a fixed zone's name (tun, local, host); expected another name",
                        );
                    } else if let Some(j) = names.get(&name) {
                        let msg = format!(
                            "duplicate peer name, already used by peer[{j}]; expected unique names"
                        );
                        self.bad_at(t, "name", &msg);
                    } else {
                        names.insert(name.clone(), i);
                    }
                    peer.name = name;
                }
            }
            match t.map.get("public_key") {
                None => self.ctx.missing(
                    t,
                    "public_key",
                    "the peer's public key (base64, from `wg pubkey`)",
                ),
                Some(v) => {
                    let key = join(path, "public_key");
                    if let Some(s) = self.ctx.as_str(&key, v) {
                        match parse::key(s) {
                            Err(e) => self.ctx.bad(&key, v, format_args!("the key is {e}")),
                            Ok(k) if k == [0; 32] => self.ctx.bad(&key, v, "an all-zero key is not a public key; expected the peer's `wg pubkey` output"),
                            Ok(k) if Some(k) == own_public => self.ctx.bad(&key, v, "this is the gateway's own public key; expected the peer's key"),
                            Ok(k) => {
                                if let Some(j) = pubkeys.get(&k) {
                                    self.ctx.bad(&key, v, format_args!("peer[{j}] has the same public key; expected each peer's key once"));
                                } else {
                                    pubkeys.insert(k, i);
                                }
                                peer.public_key = k;
                            }
                        }
                    }
                }
            }
            if let KeyOutcome::Key(k) = self.key_pair(t, "preshared_key", "preshared_key_file") {
                peer.preshared_key = Some(k);
            }
            if let Some(items) = self.ctx.list_at(t, "allowed_ips", "CIDRs") {
                for (ipath, item) in items {
                    let Some(s) = self.ctx.as_str(&ipath, &item) else {
                        continue;
                    };
                    match parse::cidr(s) {
                        Err(e) => self.ctx.bad(&ipath, &item, e),
                        Ok(n) => {
                            let n = parse::masked(n);
                            match routes.get(&n) {
                                Some(j) if *j == i => self.ctx.bad(
                                    &ipath,
                                    &item,
                                    format_args!("{n} is listed twice; expected each network once"),
                                ),
                                Some(j) => {
                                    let other = peers.get(*j).map_or("?", |p| p.name.as_str());
                                    self.ctx.bad(
                                        &ipath,
                                        &item,
                                        format_args!("{n} is already in peer[{j}] ({other})'s allowed_ips; expected each network in one peer only (wg would silently move it)"),
                                    )
                                }
                                None => {
                                    routes.insert(n, i);
                                    peer.allowed_ips.push(n);
                                }
                            }
                        }
                    }
                }
            }
            if let Some(s) = self.ctx.str_at(t, "endpoint") {
                match parse::endpoint(&s) {
                    Ok(e) => peer.endpoint = Some(e),
                    Err(e) => self.bad_at(t, "endpoint", &e),
                }
            }
            if let Some(v) = t.map.get("persistent_keepalive") {
                let key = join(path, "persistent_keepalive");
                let off = matches!(&v.kind, ValueKind::String(s) if s == "off");
                if !off {
                    if let Some(n) = self.ctx.as_int(&key, v, 0, 65535) {
                        peer.persistent_keepalive = (n > 0).then_some(n as u16);
                    }
                }
            }
            if let Some(items) = self.ctx.list_at(t, "groups", "group names") {
                for (gpath, item) in items {
                    let Some(g) = self.ctx.as_str(&gpath, &item) else {
                        continue;
                    };
                    if let Err(e) = parse::name(g) {
                        self.ctx.bad(&gpath, &item, e);
                    } else if peer.groups.iter().any(|x| x == g) {
                        self.ctx
                            .bad(&gpath, &item, "listed twice; expected each group once");
                    } else {
                        peer.groups.push(g.to_owned());
                    }
                }
            }
            peers.push(peer);
        }
        peers
    }

    // ----------------------------------------------------------------- sets

    fn sets(&mut self, top: Tab<'_>) -> BTreeMap<String, Vec<IpNetwork>> {
        let mut sets = BTreeMap::new();
        let Some(t) = self.section(top, "sets") else {
            return sets;
        };
        let mut names: Vec<&String> = t.map.keys().collect();
        names.sort();
        for name in names {
            let key = join("sets", name);
            let Some(v) = t.map.get(name) else { continue };
            if let Err(e) = parse::name(name) {
                self.ctx
                    .report(&key, Some(v), format!("set name `{name}` is invalid: {e}"));
                continue;
            }
            let Some(items) = self.ctx.as_list(&key, v, "CIDRs") else {
                continue;
            };
            if items.is_empty() {
                self.ctx.report(
                    &key,
                    Some(v),
                    "the set is empty; expected at least one address or CIDR",
                );
            }
            let mut nets = Vec::new();
            for (ipath, item) in items {
                let Some(s) = self.ctx.as_str(&ipath, &item) else {
                    continue;
                };
                match parse::cidr(s) {
                    Ok(n) => nets.push(parse::masked(n)),
                    Err(e) => self.ctx.bad(&ipath, &item, e),
                }
            }
            sets.insert(name.clone(), nets);
        }
        sets
    }

    // --------------------------------------------------------------- chains

    fn chains(&mut self, top: Tab<'_>) -> [ChainDef; 3] {
        // Defaults: nothing reaches the gateway or crosses it unless a rule
        // says so; the gateway's own traffic is allowed (like a host firewall).
        let mut chains = [
            ChainDef {
                rules: Vec::new(),
                policy: Action::Drop,
            },
            ChainDef {
                rules: Vec::new(),
                policy: Action::Drop,
            },
            ChainDef {
                rules: Vec::new(),
                policy: Action::Accept,
            },
        ];
        let Some(t) = self.section(top, "chains") else {
            return chains;
        };
        self.ctx.check_keys(t, CHAIN_NAMES);
        for (chain, name) in chains.iter_mut().zip(CHAIN_NAMES) {
            let path = join("chains", name);
            let Some(v) = t.map.get(*name) else { continue };
            let Some(map) = self.ctx.as_table(&path, v) else {
                continue;
            };
            let ct = Tab { path: &path, map };
            self.ctx.check_keys(ct, CHAIN_KEYS);
            let reject_with = self.reject_with(ct, None);
            if let Some(p) = self.action(ct, "policy") {
                chain.policy = match p {
                    Action::Reject(_) => Action::Reject(reject_with.unwrap_or_default()),
                    other => {
                        if reject_with.is_some() {
                            self.bad_at(
                                ct,
                                "reject_with",
                                "reject_with only applies to policy = \"reject\"",
                            );
                        }
                        other
                    }
                };
            }
        }
        chains
    }

    fn action(&mut self, t: Tab<'_>, key: &str) -> Option<Action> {
        let s = self.ctx.str_at(t, key)?;
        match s.as_str() {
            "accept" => Some(Action::Accept),
            "drop" => Some(Action::Drop),
            "reject" => Some(Action::Reject(RejectWith::Default)),
            _ => {
                self.bad_at(t, key, "expected \"accept\", \"drop\" or \"reject\"");
                None
            }
        }
    }

    /// `reject_with`; `proto` (when known) checks that `tcp-reset` is used
    /// with TCP only.
    fn reject_with(&mut self, t: Tab<'_>, proto: Option<u8>) -> Option<RejectWith> {
        let s = self.ctx.str_at(t, "reject_with")?;
        // ICMP destination-unreachable codes (RFC 792): 0 net, 1 host, 3 port,
        // 13 communication administratively prohibited (RFC 1812).
        let r = match s.as_str() {
            "default" => RejectWith::Default,
            "tcp-reset" => RejectWith::TcpReset,
            "net-unreachable" => RejectWith::IcmpUnreachable(0),
            "host-unreachable" => RejectWith::IcmpUnreachable(1),
            "port-unreachable" => RejectWith::IcmpUnreachable(3),
            "admin-prohibited" => RejectWith::IcmpUnreachable(13),
            _ => {
                self.bad_at(t, "reject_with", "expected \"tcp-reset\", \"port-unreachable\", \"host-unreachable\", \"net-unreachable\", \"admin-prohibited\" or \"default\"");
                return None;
            }
        };
        if r == RejectWith::TcpReset {
            if let Some(p) = proto.filter(|p| *p != proto::TCP) {
                let msg = format!("tcp-reset needs proto = \"tcp\" (this rule's proto is {p}); expected an ICMP reject type");
                self.bad_at(t, "reject_with", &msg);
                return None;
            }
        }
        Some(r)
    }

    // ---------------------------------------------------------------- rules

    fn rules(
        &mut self,
        top: Tab<'_>,
        zones: &ZoneTable,
        sets: &BTreeMap<String, Vec<IpNetwork>>,
        chains: &mut [ChainDef; 3],
    ) {
        for (path, map) in self.table_array(top, "rule") {
            let t = Tab { path: &path, map };
            self.ctx.check_keys(t, RULE_KEYS);
            let before = self.ctx.problems.len();
            let chain = match self.ctx.str_at(t, "chain") {
                None => {
                    if !map.contains_key("chain") {
                        self.ctx
                            .missing(t, "chain", "\"input\", \"forward\" or \"output\"");
                    }
                    None
                }
                Some(c) => match CHAIN_NAMES.iter().position(|n| *n == c) {
                    Some(i) => Some(i),
                    None => {
                        self.bad_at(t, "chain", "expected \"input\" (to the gateway), \"forward\" (through it) or \"output\" (from it)");
                        None
                    }
                },
            };
            let rule = self.rule(t, chain, zones, sets);
            if let (Some(c), Some(rule)) = (chain, rule) {
                if self.ctx.problems.len() == before {
                    if let Some(def) = chains.get_mut(c) {
                        def.rules.push(rule);
                    }
                }
            }
        }
    }

    pub(super) fn rule(
        &mut self,
        t: Tab<'_>,
        chain: Option<usize>,
        zones: &ZoneTable,
        sets: &BTreeMap<String, Vec<IpNetwork>>,
    ) -> Option<Rule> {
        let path = t.path;
        let mut action = self.action(t, "action");
        if action.is_none() && !t.map.contains_key("action") {
            self.ctx
                .missing(t, "action", "\"accept\", \"drop\" or \"reject\"");
        }
        let mut rule = Rule::any(action.unwrap_or(Action::Drop));
        // Unnamed rules are named after their place in the file, so logs
        // point at the config.
        rule.name = Some(match self.ctx.str_at(t, "name") {
            Some(n) if !n.trim().is_empty() && n.len() <= 128 => n,
            Some(_) => {
                self.bad_at(t, "name", "expected 1 to 128 characters");
                path.to_owned()
            }
            None => path.to_owned(),
        });

        // Protocol first: ports, ICMP and flags depend on it.
        if let Some(v) = t.map.get("proto") {
            let key = join(path, "proto");
            rule.proto = match &v.kind {
                ValueKind::String(s) if !s.trim().chars().all(|c| c.is_ascii_digit()) => {
                    match parse::protocol(s.trim()) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            self.ctx.bad(&key, v, e);
                            None
                        }
                    }
                }
                _ => self.ctx.as_int(&key, v, 0, 255).map(|p| p as u8),
            };
        }
        let proto_desc = |p: Option<u8>| match p {
            None => "not set".to_owned(),
            Some(p) => parse::PROTOCOLS
                .iter()
                .find(|(_, n)| *n == p)
                .map_or(p.to_string(), |(n, _)| format!("\"{n}\"")),
        };

        // Zones.
        if let Some(v) = t.map.get("from") {
            if chain == Some(2) {
                self.ctx.report(&join(path, "from"), Some(v), "chain \"output\" handles the gateway's own packets (they come from `local`); expected no `from` (or use chain = \"forward\")");
            } else {
                rule.ingress = self.zone_match(&join(path, "from"), v, zones);
            }
        }
        if let Some(v) = t.map.get("to") {
            if chain == Some(0) {
                self.ctx.report(&join(path, "to"), Some(v), "chain \"input\" handles packets to the gateway itself (they go to `local`); expected no `to` (or use chain = \"forward\")");
            } else {
                rule.egress = self.zone_match(&join(path, "to"), v, zones);
            }
        }

        // Addresses and families.
        let mut fam: Families = ANY_FAMILY;
        let mut why: Vec<String> = Vec::new();
        for (k, slot) in [("src", &mut rule.src), ("dst", &mut rule.dst)] {
            let Some(v) = t.map.get(k) else { continue };
            if let Some(m) = self.addr_match(&join(path, k), v, sets) {
                if !m.negate {
                    let f = families_of(&m.nets);
                    if f != ANY_FAMILY {
                        fam &= f;
                        why.push(format!("{k} is {}", family_words(f)));
                    }
                }
                *slot = Some(m);
            }
        }
        if let Some(s) = self.ctx.str_at(t, "family") {
            let f = match s.as_str() {
                "ipv4" => Some(V4),
                "ipv6" => Some(V6),
                _ => {
                    self.bad_at(t, "family", "expected \"ipv4\" or \"ipv6\"");
                    None
                }
            };
            if let Some(f) = f {
                fam &= f;
                why.push(format!("family = \"{s}\""));
            }
        }
        match rule.proto {
            Some(proto::ICMP) => {
                fam &= V4;
                why.push("proto \"icmp\" is IPv4 only".into());
            }
            Some(proto::ICMPV6) => {
                fam &= V6;
                why.push("proto \"icmpv6\" is IPv6 only".into());
            }
            _ => {}
        }
        if fam == 0 {
            self.ctx.report(
                path,
                None,
                format!(
                    "this rule can never match: {}; expected one address family",
                    why.join(", ")
                ),
            );
        }
        rule.family = match fam {
            V4 => Some(4),
            V6 => Some(6),
            _ => None,
        };

        // Ports.
        for (k, slot) in [("sport", &mut rule.sport), ("dport", &mut rule.dport)] {
            let Some(v) = t.map.get(k) else { continue };
            let key = join(path, k);
            if !matches!(rule.proto, Some(proto::TCP) | Some(proto::UDP)) {
                self.ctx.report(
                    &key,
                    Some(v),
                    format!("{} needs proto = \"tcp\" or \"udp\" (proto is {}); expected a proto with ports", show(v), proto_desc(rule.proto)),
                );
                continue;
            }
            *slot = self.port_match(&key, v);
        }

        // ICMP.
        let icmp_ok = matches!(rule.proto, Some(proto::ICMP) | Some(proto::ICMPV6));
        if let Some(v) = t.map.get("icmp_type") {
            let key = join(path, "icmp_type");
            if !icmp_ok {
                self.ctx.report(
                    &key,
                    Some(v),
                    format!(
                        "{} needs proto = \"icmp\" or \"icmpv6\" (proto is {})",
                        show(v),
                        proto_desc(rule.proto)
                    ),
                );
            } else {
                let v6 = rule.proto == Some(proto::ICMPV6);
                rule.icmp_type = match &v.kind {
                    ValueKind::String(s) if !s.trim().chars().all(|c| c.is_ascii_digit()) => {
                        match parse::icmp_type(s.trim(), v6) {
                            Ok(ty) => Some(ty),
                            Err(e) => {
                                self.ctx.bad(&key, v, e);
                                None
                            }
                        }
                    }
                    _ => self.ctx.as_int(&key, v, 0, 255).map(|n| n as u8),
                };
            }
        }
        if let Some(v) = t.map.get("icmp_code") {
            let key = join(path, "icmp_code");
            if !icmp_ok {
                self.ctx.report(
                    &key,
                    Some(v),
                    format!(
                        "{} needs proto = \"icmp\" or \"icmpv6\" (proto is {})",
                        show(v),
                        proto_desc(rule.proto)
                    ),
                );
            } else {
                rule.icmp_code = self.ctx.as_int(&key, v, 0, 255).map(|n| n as u8);
            }
        }

        // TCP flags.
        if let Some(v) = t.map.get("tcp_flags") {
            let key = join(path, "tcp_flags");
            if rule.proto != Some(proto::TCP) {
                self.ctx.report(
                    &key,
                    Some(v),
                    format!(
                        "{} needs proto = \"tcp\" (proto is {})",
                        show(v),
                        proto_desc(rule.proto)
                    ),
                );
            } else if let Some(s) = self.ctx.as_str(&key, v) {
                match parse::tcp_flags(s) {
                    Ok(f) => rule.tcp_flags = Some(f),
                    Err(e) => self.ctx.bad(&key, v, e),
                }
            }
        }

        self.l7_fields(t, chain, &mut rule);

        // Connection states.
        if let Some(v) = t.map.get("state") {
            let key = join(path, "state");
            let items = self.ctx.one_or_many(&key, v);
            if items.is_empty() {
                self.ctx.report(&key, Some(v), "an empty list matches nothing; expected states like [\"new\", \"established\"] (or no `state` to match all)");
            }
            let mut mask = 0u8;
            for (spath, item) in items {
                let Some(s) = self.ctx.as_str(&spath, &item) else {
                    continue;
                };
                let bit = match s {
                    "new" => CtStateMask::NEW,
                    "established" => CtStateMask::ESTABLISHED,
                    "related" => CtStateMask::RELATED,
                    "invalid" => CtStateMask::INVALID,
                    _ => {
                        self.ctx.bad(
                            &spath,
                            &item,
                            "expected \"new\", \"established\", \"related\" or \"invalid\"",
                        );
                        continue;
                    }
                };
                mask |= bit;
            }
            if mask != 0 {
                rule.ct_state = Some(CtStateMask(mask));
            }
        }

        // Action details.
        let rw = self.reject_with(t, rule.proto);
        match (&mut action, rw) {
            (Some(Action::Reject(r)), Some(w)) => *r = w,
            (Some(_), Some(_)) => {
                self.bad_at(
                    t,
                    "reject_with",
                    "reject_with only applies to action = \"reject\"",
                );
            }
            _ => {}
        }
        if let Some(a) = action {
            rule.action = a;
        }
        if let Some(b) = self.ctx.bool_at(t, "log") {
            rule.log = b;
        }
        rule.block = self.duration_at(t, "block");
        if let Some(b) = self.ctx.bool_at(t, "capture") {
            rule.capture = b;
        }
        action.map(|_| rule)
    }

    /// The L7 predicates `tls_sni`, `http_host`, `dns_qname` (forward chain
    /// only; each a name pattern or a list of them, see `rules::l7`).
    fn l7_fields(&mut self, t: Tab<'_>, chain: Option<usize>, rule: &mut Rule) {
        for (k, kind) in [
            ("tls_sni", L7Kind::TlsSni),
            ("http_host", L7Kind::HttpHost),
            ("dns_qname", L7Kind::DnsQname),
        ] {
            let Some(v) = t.map.get(k) else { continue };
            let key = join(t.path, k);
            if chain.is_some_and(|c| c != 1) {
                self.ctx.report(
                    &key,
                    Some(v),
                    format!(
                        "{k} is decided on flows through the gateway; expected chain = \"forward\""
                    ),
                );
                continue;
            }
            // TLS and HTTP run over TCP; DNS over UDP or TCP.
            let fits = match (kind, rule.proto) {
                (_, None) => true,
                (L7Kind::DnsQname, Some(p)) => p == proto::TCP || p == proto::UDP,
                (_, Some(p)) => p == proto::TCP,
            };
            if !fits {
                let want = if kind == L7Kind::DnsQname {
                    "proto = \"udp\" or \"tcp\""
                } else {
                    "proto = \"tcp\""
                };
                self.ctx.report(
                    &key,
                    Some(v),
                    format!(
                        "{k} can never match this rule's protocol; expected {want} (or no proto)"
                    ),
                );
                continue;
            }
            let items = self.ctx.one_or_many(&key, v);
            if items.is_empty() {
                self.ctx.report(&key, Some(v), "an empty list matches nothing; expected names like [\"example.com\", \"*.example.net\", \"~regex\"] (or no key to match every name)");
                continue;
            }
            let mut list = Vec::new();
            for (ipath, item) in items {
                let Some(s) = self.ctx.as_str(&ipath, &item) else {
                    continue;
                };
                match NamePattern::parse(s) {
                    Ok(p) => list.push(p),
                    Err(e) => self.ctx.bad(&ipath, &item, e),
                }
            }
            let slot = match kind {
                L7Kind::TlsSni => &mut rule.tls_sni,
                L7Kind::HttpHost => &mut rule.http_host,
                L7Kind::DnsQname => &mut rule.dns_qname,
            };
            *slot = Some(NameList(list));
        }
    }

    /// Splits a leading `!` off every string of a list: all entries negated
    /// (the list is negated) or none.
    fn negation(
        &mut self,
        key: &str,
        v: &Value,
        items: Vec<(String, Value)>,
    ) -> Option<(bool, Vec<(String, Value)>)> {
        let mut negated = 0usize;
        let total = items.len();
        let mut out = Vec::with_capacity(total);
        for (p, item) in items {
            match &item.kind {
                ValueKind::String(s) if s.starts_with('!') => {
                    negated += 1;
                    let origin = item.origin().map(str::to_owned);
                    let stripped = s.strip_prefix('!').unwrap_or(s).trim().to_owned();
                    out.push((p, Value::new(origin.as_ref(), ValueKind::String(stripped))));
                }
                _ => out.push((p, item)),
            }
        }
        if negated != 0 && negated != total {
            self.ctx.report(
                key,
                Some(v),
                format!("{} mixes negated (\"!...\") and plain entries; expected `!` on every entry (\"none of these\") or on none", show(v)),
            );
            return None;
        }
        if total == 0 {
            self.ctx.report(key, Some(v), "an empty list matches nothing; expected at least one entry (or no key to match anything)");
            return None;
        }
        Some((negated == total, out))
    }

    fn zone_match(&mut self, key: &str, v: &Value, zones: &ZoneTable) -> Option<ZoneMatch> {
        let items = self.ctx.one_or_many(key, v);
        let (negate, items) = self.negation(key, v, items)?;
        let mut m = ZoneMatch {
            zones: Default::default(),
            negate,
        };
        let mut ok = true;
        for (p, item) in items {
            let Some(s) = self.ctx.as_str(&p, &item) else {
                ok = false;
                continue;
            };
            match zones.resolve(s) {
                Some(set) => set.iter().for_each(|z| m.zones.insert(z)),
                None => {
                    ok = false;
                    let peers: Vec<String> = (0..zones.peer_count().min(8))
                        .map(|i| zones.name(ZoneId::peer(i)).to_owned())
                        .collect();
                    let groups: Vec<String> = zones
                        .group_names()
                        .take(8)
                        .map(|g| format!("group:{g}"))
                        .collect();
                    let mut known = vec!["tun".to_owned(), "local".into(), "host".into()];
                    known.extend(peers);
                    known.extend(groups);
                    known.dedup();
                    let what = if s.starts_with("group:") {
                        "no peer is in this group"
                    } else {
                        "no zone by this name"
                    };
                    self.ctx.report(
                        &p,
                        Some(&item),
                        format!(
                            "{} is unknown ({what}); expected a zone: {}",
                            show(&item),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        ok.then_some(m)
    }

    fn addr_match(
        &mut self,
        key: &str,
        v: &Value,
        sets: &BTreeMap<String, Vec<IpNetwork>>,
    ) -> Option<AddrMatch> {
        let items = self.ctx.one_or_many(key, v);
        let (negate, items) = self.negation(key, v, items)?;
        let mut m = AddrMatch {
            nets: Vec::new(),
            negate,
        };
        let mut ok = true;
        for (p, item) in items {
            let Some(s) = self.ctx.as_str(&p, &item) else {
                ok = false;
                continue;
            };
            if let Some(set) = s.strip_prefix('@') {
                match sets.get(set) {
                    Some(nets) => m.nets.extend(nets.iter().copied()),
                    None => {
                        ok = false;
                        let names: Vec<String> = sets.keys().map(|k| format!("@{k}")).collect();
                        let expected = if names.is_empty() {
                            "a set defined under [sets] (there are none)".to_owned()
                        } else {
                            format!("one of {}", names.join(", "))
                        };
                        self.ctx.report(
                            &p,
                            Some(&item),
                            format!("{} names an unknown set; expected {expected}", show(&item)),
                        );
                    }
                }
                continue;
            }
            match parse::cidr(s) {
                Ok(n) => m.nets.push(parse::masked(n)),
                Err(e) => {
                    ok = false;
                    self.ctx.bad(&p, &item, format_args!("{e}, or \"@set\""));
                }
            }
        }
        ok.then_some(m)
    }

    fn port_match(&mut self, key: &str, v: &Value) -> Option<PortMatch> {
        let items = self.ctx.one_or_many(key, v);
        let (negate, items) = self.negation(key, v, items)?;
        let mut m = PortMatch {
            ranges: Vec::new(),
            negate,
        };
        let mut ok = true;
        for (p, item) in items {
            let r = match &item.kind {
                ValueKind::String(s) => parse::port_range(s)
                    .map_err(|e| self.ctx.bad(&p, &item, e))
                    .ok(),
                _ => self
                    .ctx
                    .as_int(&p, &item, 0, 65535)
                    .map(|n| (n as u16, n as u16)),
            };
            match r {
                Some(r) => m.ranges.push(r),
                None => ok = false,
            }
        }
        ok.then_some(m)
    }

    // ---------------------------------------------------- conntrack & co.

    /// A duration key: integer seconds or a string like "30s"; must be > 0.
    pub(super) fn duration_at(&mut self, t: Tab<'_>, key: &str) -> Option<Duration> {
        let v = t.map.get(key)?;
        let path = join(t.path, key);
        let d = match &v.kind {
            ValueKind::String(s) if !(is_env_digits(v, s)) => match parse::duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.ctx.bad(&path, v, e);
                    return None;
                }
            },
            _ => Duration::from_secs(self.ctx.as_int(&path, v, 0, i128::from(u32::MAX))? as u64),
        };
        if d.is_zero() {
            self.ctx
                .bad(&path, v, "expected a duration above zero, like \"30s\"");
            return None;
        }
        Some(d)
    }

    /// A size key: integer bytes or a string like "4MiB", in `lo..=hi`.
    fn size_at(&mut self, t: Tab<'_>, key: &str, lo: u64, hi: u64) -> Option<usize> {
        let v = t.map.get(key)?;
        let path = join(t.path, key);
        let n = match &v.kind {
            ValueKind::String(s) if !(is_env_digits(v, s)) => match parse::size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.ctx.bad(&path, v, e);
                    return None;
                }
            },
            _ => self.ctx.as_int(&path, v, 0, i128::from(u64::MAX))? as u64,
        };
        if n < lo || n > hi {
            self.ctx
                .bad(&path, v, format_args!("expected {lo}..={hi} bytes"));
            return None;
        }
        usize::try_from(n).ok()
    }

    fn conntrack(&mut self, top: Tab<'_>) -> CtConfig {
        let mut c = CtConfig::default();
        let Some(t) = self.section(top, "conntrack") else {
            return c;
        };
        self.ctx.check_keys(t, CONNTRACK_KEYS);
        if let Some(n) = self.ctx.int_at(t, "max_entries", 1, MAX_CT_ENTRIES) {
            c.max_entries = n as usize;
        }
        if let Some(b) = self.ctx.bool_at(t, "tcp_loose") {
            c.tcp_loose = b;
        }
        if let Some(map) = self.ctx.table_at(t, "timeouts") {
            let tt = Tab {
                path: "conntrack.timeouts",
                map,
            };
            self.ctx.check_keys(tt, TIMEOUT_KEYS);
            let to: &mut Timeouts = &mut c.timeouts;
            let slots: [(&str, &mut Duration); 12] = [
                ("tcp_syn_sent", &mut to.tcp_syn_sent),
                ("tcp_syn_recv", &mut to.tcp_syn_recv),
                ("tcp_established", &mut to.tcp_established),
                ("tcp_fin_wait", &mut to.tcp_fin_wait),
                ("tcp_close_wait", &mut to.tcp_close_wait),
                ("tcp_last_ack", &mut to.tcp_last_ack),
                ("tcp_time_wait", &mut to.tcp_time_wait),
                ("tcp_close", &mut to.tcp_close),
                ("udp_unreplied", &mut to.udp_unreplied),
                ("udp_replied", &mut to.udp_replied),
                ("icmp", &mut to.icmp),
                ("other", &mut to.other),
            ];
            for (k, slot) in slots {
                if let Some(d) = self.duration_at(tt, k) {
                    *slot = d;
                }
            }
        }
        c
    }

    fn fragments(&mut self, top: Tab<'_>) -> FragConfig {
        let mut f = FragConfig::default();
        let Some(t) = self.section(top, "fragments") else {
            return f;
        };
        self.ctx.check_keys(t, FRAGMENT_KEYS);
        // At least one maximum-size datagram (65535 bytes) must fit; at most
        // 1 GiB of reassembly memory.
        if let Some(n) = self.size_at(t, "max_bytes", 65_535, 1 << 30) {
            f.max_bytes = n;
        }
        if let Some(n) = self.ctx.int_at(t, "max_datagrams", 1, 1 << 20) {
            f.max_datagrams = n as usize;
        }
        // 65535 bytes in 8-byte fragment units is 8192 fragments.
        if let Some(n) = self.ctx.int_at(t, "max_fragments", 1, 8192) {
            f.max_fragments = n as usize;
        }
        if let Some(d) = self.duration_at(t, "timeout") {
            f.timeout = d;
        }
        f
    }

    fn reject(&mut self, top: Tab<'_>) -> RejectLimit {
        let mut r = RejectLimit::default();
        let Some(t) = self.section(top, "reject") else {
            return r;
        };
        self.ctx.check_keys(t, REJECT_KEYS);
        if let Some(n) = self.ctx.int_at(t, "rate_per_sec", 0, 1_000_000) {
            r.per_sec = n as u32;
        }
        if let Some(n) = self.ctx.int_at(t, "burst", 1, 1_000_000) {
            r.burst = n as u32;
        }
        r
    }

    fn netstack(&mut self, top: Tab<'_>) -> NetstackConfig {
        let mut n = NetstackConfig::default();
        let Some(t) = self.section(top, "netstack") else {
            return n;
        };
        self.ctx.check_keys(t, NETSTACK_KEYS);
        // Each flow holds a host fd; 2^20 is the usual hard RLIMIT_NOFILE ceiling.
        if let Some(v) = self.ctx.int_at(t, "max_connections", 1, 1 << 20) {
            n.max_connections = v as usize;
        }
        // At least two 1500-byte segments; at most 64 MiB (smoltcp's window
        // scale limit is 2^14 * 65535 = 1 GiB, memory is the real bound).
        for (key, slot) in [
            ("tcp_rx_buffer", &mut n.tcp_rx_buffer),
            ("tcp_tx_buffer", &mut n.tcp_tx_buffer),
            ("host_window", &mut n.host_window),
        ] {
            if let Some(v) = self.size_at(t, key, 3000, 64 << 20) {
                *slot = v;
            }
        }
        for (key, slot) in [
            ("tcp_idle_timeout", &mut n.tcp_idle_timeout),
            ("udp_idle_timeout", &mut n.udp_idle_timeout),
            ("icmp_idle_timeout", &mut n.icmp_idle_timeout),
            ("connect_timeout", &mut n.connect_timeout),
        ] {
            if let Some(d) = self.duration_at(t, key) {
                *slot = d;
            }
        }
        if let Some(b) = self.ctx.bool_at(t, "dns") {
            n.dns = b;
        }
        if let Some(s) = self.ctx.str_at(t, "dns_upstream") {
            let parsed = s.parse::<std::net::SocketAddr>().ok().or_else(|| {
                s.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| std::net::SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(a) => n.dns_upstream = Some(a),
                None => self.bad_at(
                    t,
                    "dns_upstream",
                    "expected an address like \"203.0.113.2\" or \"[2001:db8::53]:5353\"",
                ),
            }
        }
        if let Some(items) = self
            .ctx
            .list_at(t, "host_services", "\"tcp/PORT\" or \"udp/PORT\"")
        {
            for (path, item) in items {
                let Some(s) = self.ctx.as_str(&path, &item) else {
                    continue;
                };
                match parse_service(s) {
                    Some(sv) => n.host_services.push(sv),
                    None => self.ctx.bad(
                        &path,
                        &item,
                        "expected \"tcp/PORT\" or \"udp/PORT\" (PORT 1..=65535)",
                    ),
                }
            }
        }
        if let Some(items) = self
            .ctx
            .list_at(t, "forward", "tables with proto, listen and to")
        {
            for (path, item) in items {
                let Some(map) = self.ctx.as_table(&path, &item) else {
                    continue;
                };
                let ft = Tab { path: &path, map };
                self.ctx.check_keys(ft, FORWARD_KEYS);
                let proto = match self.ctx.str_at(ft, "proto").as_deref() {
                    None | Some("tcp") => Some(NsProto::Tcp),
                    Some("udp") => Some(NsProto::Udp),
                    Some(_) => {
                        self.bad_at(ft, "proto", "expected \"tcp\" or \"udp\"");
                        None
                    }
                };
                let addr = |b: &mut Self, key: &str| -> Option<std::net::SocketAddr> {
                    let Some(s) = b.ctx.str_at(ft, key) else {
                        b.ctx
                            .missing(ft, key, "an address and port like \"127.0.0.1:8080\"");
                        return None;
                    };
                    let a = s.parse::<std::net::SocketAddr>().ok();
                    if a.is_none() {
                        b.bad_at(ft, key, "expected an address and port like \"127.0.0.1:8080\" or \"[::1]:8080\"");
                    }
                    a
                };
                let listen = addr(self, "listen");
                let to = addr(self, "to");
                // UDP associations (netstack::udpfwd); the tunnel-side ports
                // (49152..=65535) bound one forward's count.
                let mut max_flows = PortForward::DEFAULT_MAX_FLOWS;
                let mut idle_timeout = n.udp_idle_timeout;
                if proto == Some(NsProto::Tcp) {
                    for key in ["max_flows", "idle_timeout"] {
                        if ft.map.get(key).is_some() {
                            self.bad_at(ft, key, "only for proto = \"udp\" (TCP forwards use max_connections and tcp_idle_timeout)");
                        }
                    }
                } else {
                    if let Some(v) = self.ctx.int_at(ft, "max_flows", 1, 16384) {
                        max_flows = v as usize;
                    }
                    if let Some(d) = self.duration_at(ft, "idle_timeout") {
                        idle_timeout = d;
                    }
                }
                if let (Some(proto), Some(listen), Some(to)) = (proto, listen, to) {
                    n.forwards.push(PortForward {
                        proto,
                        listen,
                        to,
                        max_flows,
                        idle_timeout,
                    });
                }
            }
        }
        n
    }

    fn log(&mut self, top: Tab<'_>) -> LogConfig {
        let mut l = LogConfig::default();
        let Some(t) = self.section(top, "log") else {
            return l;
        };
        self.ctx.check_keys(t, LOG_KEYS);
        if let Some(s) = self.ctx.str_at(t, "level") {
            match s.as_str() {
                "error" => l.level = tracing::Level::ERROR,
                "warn" => l.level = tracing::Level::WARN,
                "info" => l.level = tracing::Level::INFO,
                "debug" => l.level = tracing::Level::DEBUG,
                "trace" => l.level = tracing::Level::TRACE,
                _ => self.bad_at(
                    t,
                    "level",
                    "expected \"error\", \"warn\", \"info\", \"debug\" or \"trace\"",
                ),
            }
        }
        if let Some(s) = self.ctx.str_at(t, "format") {
            match s.as_str() {
                "human" => l.format = LogFormat::Human,
                "json" => l.format = LogFormat::Json,
                _ => self.bad_at(t, "format", "expected \"human\" or \"json\""),
            }
        }
        l
    }
}

impl Builder {
    /// `[ids]`: engine settings, and the rule files read and parsed now (a
    /// missing file or a glob that matches nothing is an error; rules that
    /// use unsupported features are skipped and counted in the report).
    fn ids(&mut self, top: Tab<'_>) -> IdsSettings {
        let mut s = IdsSettings::default();
        let Some(t) = self.section(top, "ids") else {
            return s;
        };
        self.ctx.check_keys(t, IDS_KEYS);
        if let Some(b) = self.ctx.bool_at(t, "enabled") {
            s.enabled = b;
        }
        if let Some(m) = self.ctx.str_at(t, "mode") {
            match m.as_str() {
                "detect" => s.engine.mode = crate::ids::Mode::Detect,
                "prevent" => s.engine.mode = crate::ids::Mode::Prevent,
                _ => self.bad_at(t, "mode", "expected \"detect\" or \"prevent\""),
            }
        }
        // One maximum-size TCP window at least; 64 MiB per direction at most.
        if let Some(n) = self.size_at(t, "stream_depth", 65_535, 64 << 20) {
            s.engine.stream_depth = n;
        }
        if let Some(n) = self.ctx.int_at(t, "max_flows", 1, MAX_CT_ENTRIES) {
            s.engine.max_flows = n as usize;
        }
        if let Some(d) = self.duration_at(t, "flow_timeout") {
            s.engine.flow_timeout = d;
        }
        if let Some(p) = self.ctx.str_at(t, "eve_log") {
            s.eve_log = Some(self.base_dir.join(p));
        }
        s.anomaly = self.anomaly(t);
        s.block_on_drop = self.block_on_drop(t, s.engine.mode);
        if let Some(map) = self.ctx.table_at(t, "vars") {
            for (k, v) in map {
                let path = join("ids.vars", k);
                if let Some(text) = self.ctx.as_str(&path, v) {
                    s.vars.0.insert(k.to_ascii_uppercase(), text.to_string());
                }
            }
        }
        if let Some(list) = self.ctx.list_at(t, "rule_files", "file paths or globs") {
            for (path, v) in list {
                let Some(pattern) = self.ctx.as_str(&path, &v).map(str::to_owned) else {
                    continue;
                };
                match expand_glob(&self.base_dir.join(&pattern)) {
                    Ok(files) if files.is_empty() => self.ctx.bad(
                        &path,
                        &v,
                        "no file matches (expected a rule file or a glob like \"rules/*.rules\")",
                    ),
                    Ok(files) => s.rule_files.extend(files),
                    Err(e) => self.ctx.bad(&path, &v, e),
                }
            }
        }
        if s.enabled {
            for f in s.rule_files.clone() {
                match std::fs::read_to_string(&f) {
                    Ok(text) => {
                        s.report.files += 1;
                        crate::ids::rule::load_text(&text, &s.vars, &mut s.rules, &mut s.report);
                    }
                    Err(e) => self.ctx.report(
                        "ids.rule_files",
                        None,
                        format!("cannot read {}: {e}", f.display()),
                    ),
                }
            }
        }
        s
    }
}

/// Expands `*` and `?` in the last path component (sorted); a path without
/// wildcards must exist.
fn expand_glob(p: &Path) -> Result<Vec<PathBuf>, String> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if p.is_file() {
            Ok(vec![p.to_path_buf()])
        } else {
            Err(format!("{} is not a readable file", p.display()))
        };
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Shell-style match of `*` and `?` (no classes).
fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    match (pat.split_first(), s.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => wildcard(rest, s) || (!s.is_empty() && wildcard(pat, &s[1..])),
        (Some((b'?', rest)), Some((_, srest))) => wildcard(rest, srest),
        (Some((c, rest)), Some((d, srest))) if c == d => wildcard(rest, srest),
        _ => false,
    }
}

/// An environment value that is all digits is an integer (seconds, bytes).
fn is_env_digits(v: &Value, s: &str) -> bool {
    v.origin() == Some(ENV_ORIGIN) && !s.is_empty() && s.trim().chars().all(|c| c.is_ascii_digit())
}

enum KeyOutcome {
    Key([u8; 32]),
    Absent,
    Reported,
}
