//! Real captures replayed through the pipeline.
//!
//! Every capture under `../shared/data/pcaps` (Suricata-verify test data:
//! Ethernet with VLAN tags, raw IP, BSD loopback) is read with
//! `packet::pcap` and handed packet by packet to `Pipeline::handle`, under a
//! permissive and a restrictive rule set, with the capture's clock.
//!
//! Zones: the source of the capture's first packet is the `client` peer
//! (AllowedIPs = that address as /32 or /128); every other packet enters from
//! the TUN. In loopback captures (both ends ::1) the server end is given an
//! address of its own first ([`separate_loopback_ends`]).
//!
//! Checked: no panic, one verdict per packet, counters add up, the clean
//! sessions are forwarded whole by the permissive set, and the restrictive
//! set drops what it should with the right reasons. Per-capture verdict counts
//! are printed (`cargo test --test pcap_replay -- --nocapture`).

#![allow(clippy::unwrap_used)]

use portcullis::config::load_str;
use portcullis::packet::checksum::{
    fill_ipv4_checksum, fill_l4_checksum, l4_checksum_field, update_addr,
};
use portcullis::packet::parse::{parse_with, ParseOptions};
use portcullis::packet::pcap::{parse_pcap, Pcap};
use portcullis::packet::{self, L4};
use portcullis::pipeline::describe;
use portcullis::pipeline::{testbed, Pipeline, PipelineConfig};
use portcullis::verdict::{Chain, DropReason, Verdict};
use portcullis::zone::ZoneId;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

const CLIENT: ZoneId = ZoneId(ZoneId::FIRST_PEER);
const PCAPS: &str = "../shared/data/pcaps";

fn captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "pcap" || x == "cap" || x == "pcapng")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(PCAPS), &mut out);
    out.sort();
    out
}

/// The rule sets a capture is replayed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// Forward (and input) policy accept.
    Permissive,
    /// Forward policy drop; only the client's DNS (udp/53) and its replies.
    Restrictive,
}

fn config(client: IpAddr, set: Set) -> PipelineConfig {
    let prefix = if client.is_ipv4() { 32 } else { 128 };
    let rules = match set {
        Set::Permissive => {
            r#"
[chains.input]
policy = "accept"
[chains.forward]
policy = "accept"
"#
        }
        Set::Restrictive => {
            r#"
[chains.input]
policy = "drop"
[chains.forward]
policy = "drop"
[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"
[[rule]]
chain = "forward"
name = "dns"
from = "client"
proto = "udp"
dport = 53
action = "accept"
"#
        }
    };
    let text = format!(
        r#"
[interface]
addresses = ["100.64.0.1/24", "fd00:64::1/64"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="
[[peer]]
name = "client"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["{client}/{prefix}"]
{rules}
"#
    );
    let cfg = load_str(&text, "replay.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    PipelineConfig::from_config(&cfg)
}

/// What happened to each packet of one replay.
#[derive(Debug, Default)]
struct Replay {
    verdicts: Vec<Verdict>,
    /// The parsed packets (None when malformed), for the assertions.
    metas: Vec<Option<packet::PacketMeta>>,
    zones: Vec<ZoneId>,
    released: usize,
    pipeline_report: String,
    drop_reasons: BTreeMap<&'static str, u64>,
}

impl Replay {
    fn forwarded(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward(_)))
            .count()
    }
    fn summary(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for v in &self.verdicts {
            let k = match v {
                Verdict::Forward(_) => "forward".to_string(),
                Verdict::Local => "local".to_string(),
                Verdict::Held => "held".to_string(),
                Verdict::Drop(r) => format!("drop:{}", r.name()),
                Verdict::Reject(r) => format!("reject:{}", r.name()),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

/// Recomputes the IPv4 header and transport checksums of every unfragmented
/// packet. Captures taken on the sending host carry the checksums the NIC
/// would have filled in (checksum offload: tcpdump -vv says "incorrect"), and
/// GRO-merged segments carry stale ones; the gateway verifies them (a TUN
/// device hands over complete checksums), so raw replays drop those packets
/// as malformed. Replays with fixed checksums exercise connection tracking on
/// the sessions as the hosts saw them.
fn fix_checksums(cap: &mut Pcap) {
    for p in &mut cap.packets {
        if p.data.first().is_some_and(|b| b >> 4 == 4) {
            fill_ipv4_checksum(&mut p.data);
        }
        if let Ok(m) = parse_with(&p.data, NO_CSUM) {
            if m.frag.is_none() {
                fill_l4_checksum(&mut p.data, &m);
            }
        }
    }
}

const NO_CSUM: ParseOptions = ParseOptions {
    verify_l4_checksum: false,
};

/// Byte range of the source address in an IP header (the destination follows).
fn src_range(ip: &[u8]) -> Option<std::ops::Range<usize>> {
    match ip.first()? >> 4 {
        4 => Some(12..16),
        6 => Some(8..24),
        _ => None,
    }
}

/// Gives the server end of a capture whose two ends share one address (::1 to
/// ::1) its own address (that address + 1), so the two ends can sit in
/// different zones. The side of a packet is told by the client's first source
/// port; a packet without ports (a non-first fragment) keeps the side of the
/// one before it. Transport checksums are adjusted (RFC 1624) for the new
/// pseudo-header, in the first fragment for fragmented datagrams.
fn separate_loopback_ends(cap: &mut Pcap) {
    let Some(first) = cap.packets.first() else {
        return;
    };
    let Some(client) = raw_src(&first.data) else {
        return;
    };
    let client_port = parse_with(&first.data, NO_CSUM).map_or(0, |m| m.ports().0);
    let server = match client {
        IpAddr::V4(a) => IpAddr::from(u32::from(a).wrapping_add(1).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(u128::from(a).wrapping_add(1).to_be_bytes()),
    };
    let mut client_side = true;
    for p in &mut cap.packets {
        let (Some(s), Some(d), Some(r)) = (raw_src(&p.data), raw_dst(&p.data), src_range(&p.data))
        else {
            continue;
        };
        if s != client || d != client {
            continue;
        }
        let meta = parse_with(&p.data, NO_CSUM).ok();
        if let Some(m) = meta.filter(|m| m.ports() != (0, 0)) {
            client_side = m.ports().0 == client_port;
        }
        // the server's address: the destination of client packets, the source of its own
        let at = if client_side {
            r.end..r.end + r.len()
        } else {
            r
        };
        let bytes: Vec<u8> = match server {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        p.data[at].copy_from_slice(&bytes);
        if p.data[0] >> 4 == 4 {
            fill_ipv4_checksum(&mut p.data);
        }
        let Some(m) = meta else { continue };
        if m.frag.is_some_and(|f| f.offset != 0) {
            continue;
        }
        if let Some(field) = l4_checksum_field(&m) {
            let at = usize::from(m.l4_offset) + field;
            if let Some(c) = p.data.get(at..at + 2) {
                let old = u16::from_be_bytes([c[0], c[1]]);
                let new = update_addr(old, client, server);
                p.data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            }
        }
    }
}

fn replay(path: &Path, set: Set) -> Option<Replay> {
    replay_with(path, set, true)
}

fn replay_with(path: &Path, set: Set, fix: bool) -> Option<Replay> {
    let bytes = std::fs::read(path).unwrap();
    let mut cap = parse_pcap(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if fix {
        fix_checksums(&mut cap);
    }
    separate_loopback_ends(&mut cap);
    let first = cap.packets.first()?;
    // the client's address from the IP header itself: the first packet may not
    // parse (a first fragment cut inside its TCP header, a bad checksum)
    let client = raw_src(&first.data)?;
    let start = Instant::now();
    let ts0 = first.ts;
    let mut p = Pipeline::new(config(client, set), testbed::KEY, start);
    let mut r = Replay::default();
    for pkt in &cap.packets {
        let meta = packet::parse(&pkt.data).ok();
        let src = raw_src(&pkt.data);
        let zone = if src == Some(client) {
            CLIENT
        } else {
            ZoneId::TUN
        };
        let now = start + pkt.ts.saturating_sub(ts0);
        let mut buf = pkt.data.clone();
        let v = p.handle(&mut buf, zone, now);
        while let Some(t) = p.poll_transmit() {
            // released fragments and replies: never back into their own zone
            // for fragments, always parseable
            assert!(t.packet.first().is_some_and(|b| b >> 4 == 4 || b >> 4 == 6));
            r.released += 1;
        }
        while p.poll_event().is_some() {}
        if let Verdict::Forward(out) = v {
            assert_ne!(
                out,
                zone,
                "{}: forwarded back into its zone",
                path.display()
            );
        }
        r.verdicts.push(v);
        r.metas.push(meta);
        r.zones.push(zone);
    }
    let s = p.stats();
    assert_eq!(s.received.packets as usize, cap.packets.len());
    assert_eq!(
        s.received.packets,
        s.forwarded.packets
            + s.local.packets
            + s.held.packets
            + s.dropped.packets
            + s.rejected.packets,
        "{}: one verdict per packet",
        path.display()
    );
    assert_eq!(
        s.drop_reason_total(),
        s.dropped.packets + s.rejected.packets
    );
    assert_eq!(s.forwarded.packets as usize, r.forwarded());
    r.pipeline_report = p.report();
    r.drop_reasons = s.drop_reasons.clone();
    Some(r)
}

/// The destination address of an IP packet, read from its header.
fn raw_dst(ip: &[u8]) -> Option<IpAddr> {
    match ip.first()? >> 4 {
        4 => {
            let a: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        6 => {
            let a: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// The source address of an IP packet, read from its header.
fn raw_src(ip: &[u8]) -> Option<IpAddr> {
    match ip.first()? >> 4 {
        4 => {
            let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        6 => {
            let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

fn name(path: &Path) -> String {
    path.strip_prefix(PCAPS)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_capture_replays_under_both_rule_sets() {
    let caps = captures();
    assert!(caps.len() >= 10, "captures found: {caps:?}");
    let mut replayed = 0;
    for path in &caps {
        for (set, fix) in [
            (Set::Permissive, false),
            (Set::Permissive, true),
            (Set::Restrictive, false),
            (Set::Restrictive, true),
        ] {
            let mode = if fix { "checksums fixed" } else { "raw" };
            let Some(r) = replay_with(path, set, fix) else {
                println!("{}: {set:?} {mode}: no IP packets", name(path));
                continue;
            };
            replayed += 1;
            println!(
                "{}\n    {set:?}, {mode}: {} packets {:?} released {}",
                name(path),
                r.verdicts.len(),
                r.summary(),
                r.released
            );
            if set == Set::Permissive && fix && r.forwarded() < r.verdicts.len() {
                for (i, (v, m)) in r.verdicts.iter().zip(&r.metas).enumerate() {
                    {
                        let d = m.as_ref().map_or("unparsable".into(), describe);
                        println!("      #{} {d}: {v:?}", i + 1);
                    }
                }
            }
            match set {
                Set::Permissive => {
                    // nothing is dropped by a rule or a policy
                    for v in &r.verdicts {
                        assert!(
                            !matches!(
                                v,
                                Verdict::Drop(DropReason::Rule { .. } | DropReason::Policy(_))
                                    | Verdict::Reject(_)
                            ),
                            "{}: {v:?}",
                            name(path)
                        );
                    }
                }
                Set::Restrictive => check_restrictive(path, &r),
            }
        }
    }
    assert!(replayed >= 40);
}

/// Under the restrictive set: no TCP or ICMP packet passes, DNS does, and
/// every drop is the policy (new flows) or invalid (their unsolicited replies).
fn check_restrictive(path: &Path, r: &Replay) {
    for ((v, m), z) in r.verdicts.iter().zip(&r.metas).zip(&r.zones) {
        let Some(m) = m else { continue };
        match m.l4 {
            L4::Udp { sport, dport } if (dport == 53 && *z == CLIENT) || sport == 53 => {
                assert!(
                    matches!(v, Verdict::Forward(_)),
                    "{}: dns {v:?}",
                    name(path)
                );
            }
            L4::Tcp(_) | L4::Icmp(_) => match v {
                Verdict::Drop(DropReason::Policy(Chain::Forward) | DropReason::Invalid) => {}
                Verdict::Held if m.frag.is_some() => {}
                other => panic!("{}: {m:?} -> {other:?}", name(path)),
            },
            _ => assert!(!matches!(v, Verdict::Forward(_)) || m.frag.is_some()),
        }
    }
    for v in &r.verdicts {
        match v {
            Verdict::Forward(_) | Verdict::Held => {}
            Verdict::Drop(
                DropReason::Policy(Chain::Forward)
                | DropReason::Invalid
                | DropReason::Fragment
                | DropReason::Malformed(_),
            ) => {}
            other => panic!("{}: unexpected {other:?}", name(path)),
        }
    }
}

fn find(suffix: &str) -> PathBuf {
    captures()
        .into_iter()
        .find(|p| p.ends_with(suffix))
        .unwrap_or_else(|| panic!("capture {suffix} missing"))
}

/// The clean sessions: every packet forwarded under the permissive set, as
/// recorded where the checksums are right, and with fixed checksums
/// ([`fix_checksums`]) where the capture carries offloaded ones.
#[test]
fn clean_sessions_are_forwarded_whole() {
    for (suffix, n, raw_ok) in [
        ("flowbit-oring/input.pcap", 10, true),
        ("samples/suricata-verify/http-ipv6-loopback.pcap", 14, false),
        (
            "samples/suricata-verify/dns-udp-google.com-a-aaaa-mx.pcap",
            6,
            true,
        ),
        ("tls-alpn-log-detect-02/input.pcap", 28, true),
        ("eve-overlap-payload-01/tcp-overlap.pcap", 7, true),
        ("threshold-rule-flow/icmp.pcap", 12, true),
        // IPv4 header checksum 0 in the capture
        ("dns-detect-query-01/input.pcap", 1, false),
        // one GRO-merged segment with a stale checksum
        ("bug-7264-tcp-3whs-ack-data-tls-01/input.pcap", 28, false),
        // captured on the client: its segments carry offloaded checksums
        ("tls-client-hello-frag-01/dump_mtu300.pcap", 62, false),
    ] {
        let path = find(suffix);
        let r = replay_with(&path, Set::Permissive, true).unwrap();
        assert_eq!(r.verdicts.len(), n, "{suffix}");
        assert_eq!(
            r.forwarded(),
            n,
            "{suffix}: {:?}\n{}",
            r.summary(),
            r.pipeline_report
        );
        let raw = replay_with(&path, Set::Permissive, false).unwrap();
        assert_eq!(
            raw.forwarded() == n,
            raw_ok,
            "{suffix} raw: {:?}",
            raw.summary()
        );
        if !raw_ok {
            // what the raw replay loses is malformed packets and what follows from them
            for v in &raw.verdicts {
                assert!(
                    matches!(
                        v,
                        Verdict::Forward(_)
                            | Verdict::Drop(DropReason::Malformed(_) | DropReason::Invalid)
                    ),
                    "{suffix}: {v:?}"
                );
            }
        }
    }
}

/// The DNS sample under the restrictive set: all six pass (queries by the
/// dns rule, answers as established).
#[test]
fn restrictive_set_passes_dns_and_stops_tcp() {
    let r = replay(
        &find("samples/suricata-verify/dns-udp-google.com-a-aaaa-mx.pcap"),
        Set::Restrictive,
    )
    .unwrap();
    assert_eq!(r.forwarded(), 6);
    let r = replay(&find("flowbit-oring/input.pcap"), Set::Restrictive).unwrap();
    assert_eq!(r.forwarded(), 0);
    // the SYN hits the policy, everything after it has no flow
    assert_eq!(r.drop_reasons.get("policy"), Some(&1));
    assert_eq!(r.drop_reasons.get("invalid"), Some(&9));
}

/// The loopback capture as recorded (offloaded checksums): every packet is
/// dropped as malformed, none reaches connection tracking.
#[test]
fn loopback_capture_with_offloaded_checksums_is_dropped_as_malformed() {
    let path = find("samples/suricata-verify/http-ipv6-loopback.pcap");
    let r = replay_with(&path, Set::Permissive, false).unwrap();
    assert_eq!(r.forwarded(), 0);
    assert_eq!(r.drop_reasons.get("bad_l4_checksum"), Some(&14));
}

/// A TCP SYN cut into three 8-byte fragments (Ethernet + VLAN): the first
/// fragment cannot hold the TCP header and the second sits at offset 8 (the
/// tiny-fragment attack of RFC 1858 3.1): both are dropped as
/// `tiny_fragment`; the third waits for a datagram that can never complete
/// (it expires), so nothing is released.
#[test]
fn tiny_fragment_syn_is_not_released() {
    for set in [Set::Permissive, Set::Restrictive] {
        let r = replay(&find("frag-eth-vlan-ip-tcp-syn.pcap"), set).unwrap();
        assert_eq!(r.verdicts.len(), 3);
        assert_eq!(r.verdicts[2], Verdict::Held);
        assert_eq!(
            r.drop_reasons.get("tiny_fragment"),
            Some(&2),
            "{:?}",
            r.verdicts
        );
        assert_eq!(r.released, 0);
    }
}

/// An IPv6 TCP segment in three fragments (Ethernet + VLAN): reassembled,
/// it is a data segment of a connection never seen (no SYN), so INVALID:
/// the first two fragments are held, the datagram is dropped, nothing released.
#[test]
fn fragmented_v6_segment_without_a_flow_is_invalid() {
    let r = replay(&find("frag-eth-vlan-ipv6-tcp.pcap"), Set::Permissive).unwrap();
    assert_eq!(
        r.verdicts,
        vec![
            Verdict::Held,
            Verdict::Held,
            Verdict::Drop(DropReason::Invalid)
        ]
    );
    assert_eq!(r.released, 0);
}
