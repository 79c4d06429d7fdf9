//! `portcullis trace`: describe how the gateway would treat one packet.
//!
//! The packet is synthesized from the command line (protocol, addresses,
//! ports, TCP flags, ICMP type), handed to a fresh pipeline built from the
//! config, and every stage it passes is printed with the rule that decided
//! it. Nothing is sent anywhere; no state survives the command.

use crate::config::Config;
use crate::packet::{self, synth, tcp_flags};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::verdict::Verdict;
use crate::zone::ZoneId;
use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// What to trace.
#[derive(Debug, Clone, Default)]
pub struct TraceRequest {
    /// Ingress zone: `tun`, a peer name or `peer:NAME`.
    pub from: String,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    pub proto: String,
    /// `ADDR:PORT` for TCP/UDP (IPv6 in brackets), `ADDR` for ICMP.
    pub src: String,
    pub dst: String,
    /// TCP flags as letters (`S`, `SA`, `A`, `FA`, `R`...). Default `S`.
    pub flags: Option<String>,
    /// ICMP type (default echo request) and code.
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Payload bytes (UTF-8 text).
    pub payload: Option<String>,
}

/// Parses TCP flag letters (`S`, `A`, `F`, `R`, `P`, `U`, `E`, `C`), as the
/// config's `tcp_flags` does.
pub fn parse_flags(s: &str) -> Result<u8> {
    crate::config::parse::flag_bits(s)
        .map_err(|e| anyhow!("{e} in {s:?}: expected letters from S A F R P U E C"))
}

fn sock(s: &str, what: &str) -> Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{what} {s:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)"))
}

fn addr(s: &str, what: &str) -> Result<IpAddr> {
    s.parse()
        .with_context(|| format!("{what} {s:?} is not an IP address"))
}

/// Builds the packet described by `req`.
pub fn build_packet(req: &TraceRequest) -> Result<Vec<u8>> {
    let payload = req.payload.as_deref().unwrap_or("").as_bytes();
    let family_err = || anyhow!("source and destination must be of the same IP family");
    match req.proto.as_str() {
        "tcp" => {
            let flags = parse_flags(req.flags.as_deref().unwrap_or("S"))?;
            let spec = synth::TcpSpec {
                flags,
                ack: if flags & tcp_flags::ACK != 0 { 1 } else { 0 },
                ..synth::TcpSpec::default()
            };
            synth::tcp(
                sock(&req.src, "source")?,
                sock(&req.dst, "destination")?,
                spec,
                payload,
            )
            .ok_or_else(family_err)
        }
        "udp" => synth::udp(
            sock(&req.src, "source")?,
            sock(&req.dst, "destination")?,
            payload,
        )
        .ok_or_else(family_err),
        "icmp" | "icmpv6" => {
            let (s, d) = (addr(&req.src, "source")?, addr(&req.dst, "destination")?);
            if s.is_ipv6() != (req.proto == "icmpv6") {
                bail!(
                    "{} needs {} addresses",
                    req.proto,
                    if req.proto == "icmp" { "IPv4" } else { "IPv6" }
                );
            }
            let echo = if s.is_ipv6() { 128 } else { 8 };
            match req.icmp_type.unwrap_or(echo) {
                t if t == echo && req.icmp_code.unwrap_or(0) == 0 => {
                    synth::icmp_echo(s, d, 1, 1, false, payload)
                }
                t => synth::icmp_raw(s, d, t, req.icmp_code.unwrap_or(0), [0, 1, 0, 1], payload),
            }
            .ok_or_else(family_err)
        }
        p => bail!("unknown protocol {p:?}: expected tcp, udp, icmp or icmpv6"),
    }
}

/// Traces the packet through a fresh pipeline built from `config`; returns the report.
pub fn trace(config: &Config, req: &TraceRequest) -> Result<String> {
    let zone = match req.from.as_str() {
        "tun" => ZoneId::TUN,
        other => {
            let name = other.strip_prefix("peer:").unwrap_or(other);
            config.zones.peer(name).ok_or_else(|| {
                let peers: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
                anyhow!(
                    "--from {other:?}: no such zone; expected `tun` or a peer name ({})",
                    peers.join(", ")
                )
            })?
        }
    };
    let mut pkt = build_packet(req)?;
    let now = Instant::now();
    let mut p = Pipeline::new(
        PipelineConfig::from_config(config),
        (rand::random(), rand::random()),
        now,
    );
    let (verdict, log) = p.trace(&mut pkt, zone, now);
    let mut out = String::new();
    for (stage, detail) in &log.steps {
        out.push_str(&format!("{stage:>10}: {detail}\n"));
    }
    let zones = p.zones().clone();
    let v = match &verdict {
        Verdict::Forward(z) => format!("ACCEPT: forwarded to zone {}", zones.name(*z)),
        Verdict::Local => "ACCEPT: delivered to the gateway".to_string(),
        Verdict::Held => "HELD: waiting for more fragments".to_string(),
        Verdict::Drop(r) => format!("DROP ({})", r.name()),
        Verdict::Reject(r) => format!("REJECT ({})", r.name()),
    };
    out.push_str(&format!("{:>10}: {v}\n", "result"));
    while let Some(t) = p.poll_transmit() {
        let desc = packet::parse(&t.packet)
            .map(|m| crate::pipeline::describe(&m))
            .unwrap_or_else(|e| format!("unparsable: {e}"));
        out.push_str(&format!(
            "{:>10}: to zone {}: {desc}\n",
            "reply",
            zones.name(t.zone)
        ));
    }
    Ok(out)
}
