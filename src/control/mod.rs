//! The control protocol (`portcullis ctl` <-> the running gateway) and its
//! pure handler.
//!
//! Transport (in `crate::io::control`): a Unix stream socket; the client
//! writes one request as one line of JSON and reads one line of JSON back,
//! then the connection closes. Requests are at most [`MAX_REQUEST`] bytes.
//!
//! Protocol version [`VERSION`] (`"v"` in every message). A request:
//! `{"v":1,"cmd":"conntrack","filter":{"addr":"100.64.0.2"},"flush":false}`.
//! A reply: `{"v":1,"ok":true,"data":{...}}` or
//! `{"v":1,"ok":false,"error":"...","errors":[...]}`. Commands: `status`,
//! `peers`, `conntrack` (filters: addr, port, peer, state, proto; `flush`;
//! `limit`), `rules`, `stats`, `reload`, `nat` (NAT bindings with the
//! conntrack filters, load-balancer backends, NAT counters), `nat_drain` /
//! `nat_undrain` (`backend`: `"ADDR[:PORT]"`, optional `rule`), `block`
//! (`addr`: "ADDR", "NET/PREFIX", "peer:NAME" or "peer:KEY"; optional
//! `ttl_secs`, default `blocklist.default_ttl`; optional `reason`),
//! `unblock` (`addr`), `blocklist`. Unknown fields are errors; a newer version is refused with
//! the version this gateway speaks.
//!
//! Contract of [`handle`]: any byte string gets a [`Response`] (malformed
//! JSON, unknown commands, bad filters are error replies); it never panics
//! and does no IO. `reload` is not done here: the handler answers
//! [`Outcome::Reload`] and the shell reloads off the data path, then replies
//! with [`reload_response`].

pub mod render;

use crate::conntrack::Flow;
use crate::pipeline::{proto_name, Pipeline};
use crate::verdict::Chain;
use crate::wg::PeerStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Instant;

/// Protocol version.
pub const VERSION: u32 = 1;
/// Longest request line accepted (a request is a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Flows listed by default (`limit` raises it).
pub const DEFAULT_FLOW_LIMIT: usize = 1000;

/// Selects tracked flows. Every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either end of the flow (original or reply tuple).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// Either port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The ingress or egress zone name (`tun` or a peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// State name (`established`, `syn_sent`, `udp_replied`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Status,
    Peers,
    Conntrack {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default)]
        flush: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Rules,
    Stats,
    Reload,
    Nat {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Mark a load-balancer backend down: no new flows (live ones go on).
    NatDrain {
        backend: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// Mark a load-balancer backend up again (also over `down = true` in the config).
    NatUndrain {
        backend: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// Block an address, network or peer (`peer:NAME`).
    Block {
        addr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Unblock {
        addr: String,
    },
    Blocklist,
}

/// A request: the version and the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub cmd: Command,
}

impl Request {
    pub fn new(cmd: Command) -> Self {
        Request { v: VERSION, cmd }
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// All problems, when there are several (a rejected reload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        Response {
            v: VERSION,
            ok: true,
            error: None,
            errors: Vec::new(),
            data: serde_json::to_value(data).unwrap_or(Value::Null),
        }
    }

    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            error: Some(msg.into()),
            errors: Vec::new(),
            data: Value::Null,
        }
    }

    /// One line of JSON, newline-terminated.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"v":1,"ok":false,"error":"reply not serializable"}"#.into());
        s.push('\n');
        s
    }
}

/// `status` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub protocol: u32,
    pub config: String,
    pub interface: String,
    pub listen_port: u16,
    pub public_key: String,
    pub uptime_secs: u64,
    pub peers: usize,
    pub peers_up: usize,
    pub flows: usize,
    pub max_flows: usize,
    pub rule_generation: u32,
    pub reloads: u64,
    pub packets: u64,
    pub dropped: u64,
}

/// `peers` data, one per peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the last handshake.
    pub last_handshake_secs: Option<u64>,
    pub session: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub kill_switch_drops: u64,
}

/// `conntrack` data, one per flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub id: u32,
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub ingress: String,
    pub egress: String,
    pub state: String,
    pub rule: String,
    pub packets: [u32; 2],
    pub bytes: [u64; 2],
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowList {
    pub total: usize,
    pub matched: usize,
    pub flows: Vec<FlowInfo>,
    /// With `flush`: flows removed.
    #[serde(default)]
    pub flushed: usize,
}

/// `rules` data, one per rule (and per chain policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub chain: String,
    /// Index in the chain; `None` for the policy.
    pub index: Option<u32>,
    pub name: String,
    pub action: String,
    pub log: bool,
    pub packets: u64,
    pub bytes: u64,
    /// The rule's L7 predicates (`tls_sni [..] http_host [..] dns_qname [..]`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<String>,
}

/// `stats` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsInfo {
    pub received: [u64; 2],
    pub forwarded: [u64; 2],
    pub fast_path: [u64; 2],
    pub dropped: [u64; 2],
    pub rejected: [u64; 2],
    pub held: [u64; 2],
    pub drop_reasons: std::collections::BTreeMap<String, u64>,
    pub shaper_refused: std::collections::BTreeMap<String, u64>,
    pub flows: usize,
    pub flows_created: u64,
    pub flows_revoked: u64,
    pub replies_sent: u64,
    pub replies_suppressed: u64,
    pub conntrack_by_state: std::collections::BTreeMap<String, u64>,
    /// Counters the IO shell keeps (datagrams, TUN packets, egress drops).
    pub io: std::collections::BTreeMap<String, u64>,
    /// NAT counters (bindings, exhausted, translated packets, ...).
    #[serde(default)]
    pub nat: std::collections::BTreeMap<String, u64>,
}

/// `nat` data: one translated flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatBinding {
    pub id: u32,
    pub proto: String,
    /// `snat`, `dnat` or `snat+dnat`.
    pub kind: String,
    /// The flow as its initiator sent it.
    pub orig_src: String,
    pub orig_sport: u16,
    pub orig_dst: String,
    pub orig_dport: u16,
    /// The same packet after translation.
    pub xlat_src: String,
    pub xlat_sport: u16,
    pub xlat_dst: String,
    pub xlat_dport: u16,
    pub ingress: String,
    pub egress: String,
    pub state: String,
}

/// `nat` data: one load-balancer backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub rule: String,
    pub address: String,
    pub weight: u32,
    /// `up`, `down (config)`, `drained`, `unhealthy`.
    pub state: String,
    pub up: bool,
    /// The health check's verdict (`None`: no health check).
    pub healthy: Option<bool>,
    pub conns: u32,
}

/// `nat` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatList {
    /// Translated flows in the table.
    pub total: usize,
    pub matched: usize,
    pub bindings: Vec<NatBinding>,
    pub backends: Vec<BackendInfo>,
    pub stats: std::collections::BTreeMap<String, u64>,
}

/// `nat_drain` / `nat_undrain` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub backend: String,
    pub drained: bool,
    /// Backends changed (one per rule holding the address).
    pub changed: usize,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    pub config: String,
    pub rule_generation: u32,
    pub rules: usize,
    pub peers_added: Vec<String>,
    pub peers_removed: Vec<String>,
    pub peers_changed: Vec<String>,
    pub peers_rekeyed: Vec<String>,
    /// Things that could not be applied live and wait for a restart.
    pub needs_restart: Vec<String>,
    pub elapsed_ms: u64,
}

/// What the gateway state looks like to the handler.
pub struct View<'a> {
    pub pipeline: &'a mut Pipeline,
    pub peers: &'a [PeerStats],
    /// AllowedIPs per peer name.
    pub allowed_ips: &'a dyn Fn(&str) -> Vec<String>,
    pub status: StatusBase,
    pub io: std::collections::BTreeMap<String, u64>,
    pub now: Instant,
}

/// The static part of `status`, from the shell.
#[derive(Debug, Clone, Default)]
pub struct StatusBase {
    pub config: String,
    pub interface: String,
    pub listen_port: u16,
    pub public_key: String,
    pub uptime_secs: u64,
    pub reloads: u64,
}

/// What the shell must do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply(Response),
    /// Reload the configuration, then answer with [`reload_response`].
    Reload,
}

/// Parses a request line; errors are already replies.
pub fn parse(line: &[u8]) -> Result<Request, Response> {
    if line.len() > MAX_REQUEST {
        return Err(Response::err(format!(
            "request too long ({} bytes, at most {MAX_REQUEST})",
            line.len()
        )));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| Response::err("request is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Err(Response::err("empty request"));
    }
    let mut raw: Value =
        serde_json::from_str(text).map_err(|e| Response::err(format!("malformed JSON: {e}")))?;
    let Some(obj) = raw.as_object_mut() else {
        return Err(Response::err("bad request: expected a JSON object"));
    };
    match obj.remove("v").as_ref().and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(Response::err(format!(
                "unsupported protocol version {v} (this gateway speaks {VERSION})"
            )))
        }
        None => return Err(Response::err("missing protocol version \"v\"")),
    }
    // serde ignores unknown fields next to unit variants of a tagged enum:
    // check the field names here.
    let allowed: &[&str] = match obj.get("cmd").and_then(Value::as_str) {
        Some("conntrack") => &["cmd", "filter", "flush", "limit"],
        Some("nat") => &["cmd", "filter", "limit"],
        Some("nat_drain" | "nat_undrain") => &["cmd", "backend", "rule"],
        Some("block") => &["cmd", "addr", "ttl_secs", "reason"],
        Some("unblock") => &["cmd", "addr"],
        _ => &["cmd"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Response::err(format!("bad request: unknown field {k:?}")));
    }
    let cmd: Command =
        serde_json::from_value(raw).map_err(|e| Response::err(format!("bad request: {e}")))?;
    Ok(Request::new(cmd))
}

/// Handles one request line against the gateway state.
pub fn handle(line: &[u8], view: &mut View<'_>) -> Outcome {
    match parse(line) {
        Ok(req) => handle_request(&req, view),
        Err(r) => Outcome::Reply(r),
    }
}

fn proto_matches(want: &str, p: u8) -> bool {
    want.eq_ignore_ascii_case(&proto_name(p)) || want.parse::<u8>().is_ok_and(|n| n == p)
}

fn flow_matches(f: &Flow, filt: &FlowFilter, zones: &crate::zone::ZoneTable) -> bool {
    let (o, r) = (f.orig, f.reply);
    filt.addr
        .is_none_or(|a| o.src == a || o.dst == a || r.src == a || r.dst == a)
        && filt
            .port
            .is_none_or(|p| o.sport == p || o.dport == p || r.sport == p || r.dport == p)
        && filt
            .peer
            .as_deref()
            .is_none_or(|n| zones.name(f.ingress()) == n || zones.name(f.egress()) == n)
        && filt.state.as_deref().is_none_or(|s| f.state_name() == s)
        && filt
            .proto
            .as_deref()
            .is_none_or(|p| proto_matches(p, o.proto))
}

fn check_filter(f: &FlowFilter, view: &View<'_>) -> Result<(), String> {
    if let Some(p) = &f.peer {
        if p != "tun" && view.pipeline.zones().peer(p).is_none() {
            return Err(format!("no peer named {p:?}"));
        }
    }
    if let Some(p) = &f.proto {
        let known = ["tcp", "udp", "icmp", "icmpv6"];
        if !known.iter().any(|k| k.eq_ignore_ascii_case(p)) && p.parse::<u8>().is_err() {
            return Err(format!(
                "unknown protocol {p:?} (expected tcp, udp, icmp, icmpv6 or a number)"
            ));
        }
    }
    Ok(())
}

fn action_name(a: crate::rules::Action) -> String {
    match a {
        crate::rules::Action::Accept => "accept".into(),
        crate::rules::Action::Drop => "drop".into(),
        crate::rules::Action::Reject(_) => "reject".into(),
    }
}

/// Handles a parsed request.
pub fn handle_request(req: &Request, view: &mut View<'_>) -> Outcome {
    let r = match &req.cmd {
        Command::Status => status(view),
        Command::Peers => Response::ok(peers(view)),
        Command::Conntrack {
            filter,
            flush,
            limit,
        } => conntrack(view, filter, *flush, *limit),
        Command::Rules => Response::ok(rules(view.pipeline)),
        Command::Stats => Response::ok(stats(view)),
        Command::Reload => return Outcome::Reload,
        Command::Nat { filter, limit } => nat_list(view, filter, *limit),
        Command::NatDrain { backend, rule } => nat_drain(view, backend, rule.as_deref(), true),
        Command::NatUndrain { backend, rule } => nat_drain(view, backend, rule.as_deref(), false),
        Command::Block {
            addr,
            ttl_secs,
            reason,
        } => block(view, addr, *ttl_secs, reason.as_deref()),
        Command::Unblock { addr } => unblock(view, addr),
        Command::Blocklist => Response::ok(blocklist(view.pipeline, view.now)),
    };
    Outcome::Reply(r)
}

fn status(view: &View<'_>) -> Response {
    let p = &view.pipeline;
    let s = p.stats();
    let b = &view.status;
    Response::ok(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: VERSION,
        config: b.config.clone(),
        interface: b.interface.clone(),
        listen_port: b.listen_port,
        public_key: b.public_key.clone(),
        uptime_secs: b.uptime_secs,
        peers: view.peers.len(),
        peers_up: view.peers.iter().filter(|p| p.has_session).count(),
        flows: p.conntrack().len(),
        max_flows: p.conntrack().stats().max_entries,
        rule_generation: p.generation(),
        reloads: b.reloads,
        packets: s.received.packets,
        dropped: s.dropped.packets + s.rejected.packets,
    })
}

fn peers(view: &View<'_>) -> Vec<PeerInfo> {
    view.peers
        .iter()
        .map(|p| PeerInfo {
            name: p.name.clone(),
            public_key: crate::wg::keys::encode_key(&p.public_key),
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: (view.allowed_ips)(&p.name),
            last_handshake_secs: p.last_handshake.map(|d| d.as_secs()),
            session: p.has_session,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            kill_switch_drops: p.kill_switch_drops,
        })
        .collect()
}

fn flow_info(p: &Pipeline, id: u32, f: &Flow) -> FlowInfo {
    let z = p.zones();
    FlowInfo {
        id,
        proto: proto_name(f.orig.proto),
        src: f.orig.src.to_string(),
        dst: f.orig.dst.to_string(),
        sport: f.orig.sport,
        dport: f.orig.dport,
        ingress: z.name(f.ingress()).to_string(),
        egress: z.name(f.egress()).to_string(),
        state: f.state_name().to_string(),
        rule: format!("{}/{}", f.chain.name(), p.rule_label(f.chain, f.rule)),
        packets: f.packets,
        bytes: f.bytes,
        generation: f.generation,
    }
}

fn conntrack(
    view: &mut View<'_>,
    filt: &FlowFilter,
    flush: bool,
    limit: Option<usize>,
) -> Response {
    if let Err(e) = check_filter(filt, view) {
        return Response::err(e);
    }
    let p = &mut *view.pipeline;
    let total = p.conntrack().len();
    let limit = limit.unwrap_or(DEFAULT_FLOW_LIMIT);
    let mut matched = 0;
    let mut flows = Vec::new();
    {
        let zones = p.zones();
        for (id, f) in p.conntrack().iter() {
            if flow_matches(f, filt, zones) {
                matched += 1;
                if flows.len() < limit {
                    flows.push(flow_info(p, id.0, f));
                }
            }
        }
    }
    let mut flushed = 0;
    if flush {
        let zones = p.zones().clone();
        flushed = p.remove_flows(|f| flow_matches(f, filt, &zones), view.now);
        flows.clear();
    }
    Response::ok(FlowList {
        total,
        matched,
        flows,
        flushed,
    })
}

/// The rules with their hit counters.
pub fn rules(p: &Pipeline) -> Vec<RuleInfo> {
    let mut v = Vec::new();
    for chain in Chain::ALL {
        let def = p.rules().chain(chain);
        let counters = p.rule_counters(chain);
        for (i, r) in def.rules.iter().enumerate() {
            let c = counters.get(i).copied().unwrap_or_default();
            v.push(RuleInfo {
                chain: chain.name().into(),
                index: Some(i as u32),
                name: p.rule_label(chain, Some(i as u32)),
                action: action_name(r.action),
                log: r.log,
                packets: c.packets,
                bytes: c.bytes,
                l7: l7_summary(r),
            });
        }
        let c = p.stats().policy(chain);
        v.push(RuleInfo {
            chain: chain.name().into(),
            index: None,
            name: p.rule_label(chain, None),
            action: action_name(def.policy),
            log: false,
            packets: c.packets,
            bytes: c.bytes,
            l7: None,
        });
    }
    v
}

/// `tls_sni ["a"] dns_qname ["*.b"]` for a rule with L7 predicates.
fn l7_summary(r: &crate::rules::Rule) -> Option<String> {
    let parts: Vec<String> = [
        ("tls_sni", &r.tls_sni),
        ("http_host", &r.http_host),
        ("dns_qname", &r.dns_qname),
    ]
    .into_iter()
    .filter_map(|(k, l)| l.as_ref().map(|l| format!("{k} {l}")))
    .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn stats(view: &View<'_>) -> StatsInfo {
    let p = &view.pipeline;
    let s = p.stats();
    let pair = |c: crate::pipeline::stats::Count| [c.packets, c.bytes];
    let ct = p.conntrack().stats();
    StatsInfo {
        received: pair(s.received),
        forwarded: pair(s.forwarded),
        fast_path: pair(s.fast_path),
        dropped: pair(s.dropped),
        rejected: pair(s.rejected),
        held: pair(s.held),
        drop_reasons: s
            .drop_reasons
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect(),
        shaper_refused: p
            .shaper()
            .refused()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        flows: p.conntrack().len(),
        flows_created: s.flows_created,
        flows_revoked: s.flows_revoked,
        replies_sent: s.replies_sent,
        replies_suppressed: s.replies_suppressed,
        conntrack_by_state: ct
            .by_state
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| ((*k).to_string(), *n))
            .collect(),
        io: view.io.clone(),
        nat: if p.nat().is_empty() {
            Default::default()
        } else {
            nat_stats(p)
        },
    }
}

fn nat_stats(p: &Pipeline) -> std::collections::BTreeMap<String, u64> {
    let n = p.nat().stats;
    [
        ("snat_bindings", n.snat_bindings),
        ("dnat_bindings", n.dnat_bindings),
        ("exhausted", n.exhausted),
        ("translated", n.translated),
        ("icmp_errors_translated", n.icmp_errors_translated),
        ("mss_clamped", n.mss_clamped),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn nat_list(view: &View<'_>, filt: &FlowFilter, limit: Option<usize>) -> Response {
    use crate::conntrack::Dir;
    use crate::nat::xlate;
    if let Err(e) = check_filter(filt, view) {
        return Response::err(e);
    }
    let p = &view.pipeline;
    let zones = p.zones();
    let limit = limit.unwrap_or(DEFAULT_FLOW_LIMIT);
    let (mut total, mut matched) = (0, 0);
    let mut bindings = Vec::new();
    for (id, f) in p.conntrack().iter() {
        if !xlate::is_translated(f) {
            continue;
        }
        total += 1;
        if !flow_matches(f, filt, zones) {
            continue;
        }
        matched += 1;
        if bindings.len() >= limit {
            continue;
        }
        let x = xlate::target(f, Dir::Original);
        let o = f.orig;
        let snat = x.src != o.src || x.sport != o.sport;
        let dnat = x.dst != o.dst || x.dport != o.dport;
        let kind = match (snat, dnat) {
            (true, true) => "snat+dnat",
            (false, true) => "dnat",
            _ => "snat",
        };
        bindings.push(NatBinding {
            id: id.0,
            proto: proto_name(o.proto),
            kind: kind.into(),
            orig_src: o.src.to_string(),
            orig_sport: o.sport,
            orig_dst: o.dst.to_string(),
            orig_dport: o.dport,
            xlat_src: x.src.to_string(),
            xlat_sport: x.sport,
            xlat_dst: x.dst.to_string(),
            xlat_dport: x.dport,
            ingress: zones.name(f.ingress()).to_string(),
            egress: zones.name(f.egress()).to_string(),
            state: f.state_name().to_string(),
        });
    }
    let nat = p.nat();
    let backends = nat
        .backends()
        .into_iter()
        .map(|b| BackendInfo {
            rule: nat.rule_name(b.rule).to_string(),
            address: match b.port {
                Some(port) => std::net::SocketAddr::new(b.addr, port).to_string(),
                None => b.addr.to_string(),
            },
            weight: b.weight,
            state: match (b.admin, b.config_down, b.healthy) {
                (Some(true), _, _) => "drained",
                (None, true, _) => "down (config)",
                (_, _, Some(false)) => "unhealthy",
                _ => "up",
            }
            .into(),
            up: b.up,
            healthy: b.healthy,
            conns: b.conns,
        })
        .collect();
    Response::ok(NatList {
        total,
        matched,
        bindings,
        backends,
        stats: nat_stats(p),
    })
}

/// "ADDR:PORT", "[V6]:PORT" or an address alone.
fn parse_backend(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Some((a.ip(), Some(a.port())));
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|a| (a, None))
}

fn nat_drain(view: &mut View<'_>, backend: &str, rule: Option<&str>, drain: bool) -> Response {
    let Some((addr, port)) = parse_backend(backend) else {
        return Response::err(format!(
            "bad backend {backend:?}: expected ADDRESS:PORT (\"192.0.2.11:80\", \"[2001:db8::2]:80\") or an address"
        ));
    };
    match view
        .pipeline
        .nat_mut()
        .set_backend_admin(rule, addr, port, Some(drain))
    {
        Ok(changed) => Response::ok(DrainReport {
            backend: backend.to_string(),
            drained: drain,
            changed,
        }),
        Err(e) => Response::err(e.to_string()),
    }
}

/// `blocklist` data: one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// An address, a network, or `peer:NAME`.
    pub target: String,
    /// `config`, `anomaly`, `rule`, `ids` or `ctl`.
    pub origin: String,
    pub reason: String,
    /// Seconds until it expires (`None`: until unblocked).
    pub expires_in_secs: Option<u64>,
    pub age_secs: u64,
    /// Packets dropped because of it.
    pub hits: u64,
}

/// `blocklist` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    pub entries: Vec<BlockInfo>,
    pub max_entries: usize,
    /// Blocklist counters (added, expired, removed, evicted, refused).
    pub stats: std::collections::BTreeMap<String, u64>,
}

/// `block` / `unblock` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockReport {
    pub target: String,
    pub blocked: bool,
    pub ttl_secs: Option<u64>,
    /// Entries on the list afterwards.
    pub entries: usize,
}

/// Longest TTL `ctl block` accepts: ten years (anything longer is "until unblocked").
const MAX_BLOCK_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

fn block(view: &mut View<'_>, addr: &str, ttl_secs: Option<u64>, reason: Option<&str>) -> Response {
    let b = view.pipeline.blocklist_mut();
    let target = match b.parse_target(addr) {
        Ok(t) => t,
        Err(e) => return Response::err(e),
    };
    let ttl = match ttl_secs {
        Some(0) => return Response::err("ttl_secs must be above zero"),
        Some(s) if s > MAX_BLOCK_TTL_SECS => {
            return Response::err(format!(
                "ttl_secs {s} is too long (at most {MAX_BLOCK_TTL_SECS})"
            ))
        }
        Some(s) => Some(std::time::Duration::from_secs(s)),
        None => b.config().default_ttl,
    };
    let reason = reason
        .unwrap_or("ctl block")
        .chars()
        .take(256)
        .collect::<String>();
    match b.add(target, crate::blocklist::Origin::Ctl, reason, ttl, view.now) {
        Ok(()) => Response::ok(BlockReport {
            target: b.target_name(&target),
            blocked: true,
            ttl_secs: ttl.map(|d| d.as_secs()),
            entries: b.len(),
        }),
        Err(e) => Response::err(e.to_string()),
    }
}

fn unblock(view: &mut View<'_>, addr: &str) -> Response {
    let b = view.pipeline.blocklist_mut();
    let target = match b.parse_target(addr) {
        Ok(t) => t,
        Err(e) => return Response::err(e),
    };
    match b.remove(&target) {
        Some(_) => Response::ok(BlockReport {
            target: b.target_name(&target),
            blocked: false,
            ttl_secs: None,
            entries: b.len(),
        }),
        None => Response::err(format!(
            "{} is not on the blocklist",
            b.target_name(&target)
        )),
    }
}

/// The blocklist's entries (live ones; expired entries waiting for the
/// sweep are left out), soonest expiry first, permanent ones last.
pub fn blocklist(p: &Pipeline, now: Instant) -> BlockList {
    let b = p.blocklist();
    let mut entries: Vec<BlockInfo> = b
        .entries()
        .filter(|e| e.expires.is_none_or(|x| x > now))
        .map(|e| BlockInfo {
            target: b.target_name(&e.target),
            origin: e.origin.name().into(),
            reason: e.reason.clone(),
            expires_in_secs: e
                .expires
                .map(|x| x.saturating_duration_since(now).as_secs_f64().ceil() as u64),
            age_secs: now.saturating_duration_since(e.added).as_secs(),
            hits: e.hits,
        })
        .collect();
    entries.sort_by(|x, y| {
        (x.expires_in_secs.is_none(), x.expires_in_secs, &x.target).cmp(&(
            y.expires_in_secs.is_none(),
            y.expires_in_secs,
            &y.target,
        ))
    });
    let s = b.stats;
    BlockList {
        entries,
        max_entries: b.config().max_entries,
        stats: [
            ("added", s.added),
            ("expired", s.expired),
            ("removed", s.removed),
            ("evicted", s.evicted),
            ("refused", s.refused),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// The reply to a reload: the report, or every problem found.
pub fn reload_response(r: Result<ReloadReport, Vec<String>>) -> Response {
    match r {
        Ok(rep) => Response::ok(rep),
        Err(errors) => Response {
            v: VERSION,
            ok: false,
            error: Some(format!(
                "reload rejected ({} problem{}); the running configuration is unchanged",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )),
            errors,
            data: Value::Null,
        },
    }
}

#[cfg(test)]
mod tests;
