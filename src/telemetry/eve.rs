//! EVE JSON records (Suricata's event format: one JSON object per line with
//! `timestamp`, `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`,
//! `proto`, and a per-type object).
//!
//! - `flow`: a flow ended. As Suricata's flow record: `flow.pkts_toserver`,
//!   `pkts_toclient`, `bytes_toserver`, `bytes_toclient`, `start`, `end`,
//!   `age` (seconds), `state`, `reason` (`timeout`, `removed`, `evicted`,
//!   `reopened`, `flushed`). Our additions sit under `portcullis`: the
//!   verdict (`accept`: a tracked flow was accepted), the deciding rule, the
//!   ingress and egress zones (the peer), and `duration_ms`.
//! - `drop`: a packet dropped or rejected, with its reason.
//! - `rule`: a rule with `log = true` matched (or a reload revoked a flow).
//!
//! "Server" is the destination of the flow's first packet. Times come from
//! the caller (`SystemTime`); nothing here reads a clock.

use crate::pipeline::{proto_name, Event, FlowEnd};
use crate::zone::ZoneTable;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-22T00:10:29.123456+0000`, Suricata's timestamp format (UTC).
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 -> (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn proto_upper(p: u8) -> String {
    proto_name(p).to_ascii_uppercase()
}

fn has_ports(p: u8) -> bool {
    matches!(p, crate::packet::proto::TCP | crate::packet::proto::UDP)
}

fn base(
    ts: SystemTime,
    ty: &str,
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Value {
    let mut v = json!({
        "timestamp": timestamp(ts),
        "event_type": ty,
        "src_ip": src.to_string(),
        "dest_ip": dst.to_string(),
        "proto": proto_upper(proto),
    });
    if has_ports(proto) {
        v["src_port"] = json!(sport);
        v["dest_port"] = json!(dport);
    }
    v
}

/// The `flow` record of an ended flow. `now` is the wall-clock end time;
/// `rule` is the label of the accepting rule.
pub fn flow_record(e: &FlowEnd, zones: &ZoneTable, rule: &str, now: SystemTime) -> Value {
    let f = &e.flow;
    let o = f.orig;
    let start = now.checked_sub(e.duration).unwrap_or(now);
    let mut v = base(now, "flow", o.proto, o.src, o.sport, o.dst, o.dport);
    v["flow"] = json!({
        "pkts_toserver": f.packets[0],
        "pkts_toclient": f.packets[1],
        "bytes_toserver": f.bytes[0],
        "bytes_toclient": f.bytes[1],
        "start": timestamp(start),
        "end": timestamp(now),
        "age": e.duration.as_secs(),
        "state": e.state,
        "reason": e.cause.name(),
    });
    v["portcullis"] = json!({
        "verdict": "accept",
        "chain": f.chain.name(),
        "rule": rule,
        "ingress": zones.name(f.ingress()),
        "egress": zones.name(f.egress()),
        "duration_ms": u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
    });
    v
}

/// What a `drop` record says about the packet.
#[derive(Debug, Clone, Copy)]
pub struct DropInfo<'a> {
    pub reason: &'a str,
    /// `drop` or `reject`.
    pub action: &'a str,
    pub ingress: &'a str,
    pub len: usize,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The deciding rule, when a rule or policy dropped it.
    pub rule: Option<&'a str>,
}

pub fn drop_record(d: &DropInfo<'_>, now: SystemTime) -> Value {
    let mut v = base(now, "drop", d.proto, d.src, d.sport, d.dst, d.dport);
    v["drop"] = json!({
        "reason": d.reason,
        "action": d.action,
        "len": d.len,
        "ingress": d.ingress,
    });
    if let Some(r) = d.rule {
        v["drop"]["rule"] = json!(r);
    }
    v
}

/// A rule `log` event (or a revoked flow).
pub fn rule_record(e: &Event, zones: &ZoneTable, rule: &str, now: SystemTime) -> Value {
    let mut v = base(now, "rule", e.proto, e.src, e.sport, e.dst, e.dport);
    v["rule"] = json!({
        "chain": e.chain.name(),
        "rule": rule,
        "action": format!("{:?}", e.action).to_ascii_lowercase(),
        "revoked": e.revoked,
        "ingress": zones.name(e.ingress),
        "egress": zones.name(e.egress),
    });
    v
}

/// A `stats`-type summary record (log suppression summaries).
pub fn notice_record(message: &str, now: SystemTime) -> Value {
    json!({ "timestamp": timestamp(now), "event_type": "notice", "message": message })
}

/// Unix time of `t`, for pcap records.
pub fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testbed;
    use crate::zone::ZoneId;
    use std::time::Instant;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5_000);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.000005+0000");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000+0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(timestamp(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn flow_record_carries_counters_both_ways() {
        let t0 = Instant::now();
        let mut p = testbed::pipeline_accept_forward(t0);
        p.set_flow_log(true);
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4([100, 64, 0, 2], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 1000, 64240)
            .syn()
            .write(&mut syn, b"")
            .unwrap();
        let v = p.handle(&mut syn, ZoneId::peer(0), t0);
        assert_eq!(v, crate::verdict::Verdict::Forward(ZoneId::TUN));
        let n = p.remove_flows(|_| true, t0 + Duration::from_millis(1500));
        let e = p.poll_flow_end();
        assert_eq!(n, 1);
        let e = e.expect("a flow end");
        let rec = flow_record(
            &e,
            p.zones(),
            "forward/0",
            UNIX_EPOCH + Duration::from_secs(100),
        );
        assert_eq!(rec["event_type"], "flow");
        assert_eq!(rec["flow"]["pkts_toserver"], 1);
        assert_eq!(rec["flow"]["pkts_toclient"], 0);
        assert_eq!(rec["flow"]["bytes_toserver"], syn.len() as u64);
        assert_eq!(rec["flow"]["reason"], "removed");
        assert_eq!(rec["portcullis"]["duration_ms"], 1500);
        assert_eq!(rec["portcullis"]["ingress"], "laptop");
        assert_eq!(rec["proto"], "TCP");
    }
}
