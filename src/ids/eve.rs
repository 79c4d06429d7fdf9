//! EVE JSON lines for alerts, anomalies and drops, in the shape Suricata's
//! `eve.json` uses (so jq recipes, Evebox, Filebeat's suricata module read it):
//! `timestamp`, `flow_id`, `event_type`, `src_ip`, `src_port`, `dest_ip`,
//! `dest_port`, `proto`, `app_proto`, `alert{action, gid, signature_id, rev,
//! signature, category, severity}`, plus `wg_peer` (the WireGuard peer
//! name, when the packet came from or goes to a peer).
//!
//! The timestamp is passed in (the core reads no clock): the io shell maps
//! the alert's `Instant` to wall time and formats it as Suricata does
//! (`2024-01-31T12:00:00.123456+0000`, see [`format_timestamp`]).

use super::{Alert, EventType};
use crate::ids::rule::classtype_name;
use serde_json::{json, Map, Value};

fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        n => n.to_string(),
    }
}

/// One EVE line (no trailing newline).
pub fn to_json(a: &Alert, timestamp: &str, peer: Option<&str>) -> String {
    let mut m = Map::new();
    m.insert("timestamp".into(), json!(timestamp));
    m.insert("flow_id".into(), json!(a.flow_serial));
    m.insert(
        "event_type".into(),
        json!(match a.event {
            EventType::Alert => "alert",
            EventType::Anomaly => "anomaly",
            EventType::Drop => "drop",
        }),
    );
    m.insert("src_ip".into(), json!(a.src.to_string()));
    m.insert("dest_ip".into(), json!(a.dst.to_string()));
    if matches!(a.proto, 6 | 17) {
        m.insert("src_port".into(), json!(a.sport));
        m.insert("dest_port".into(), json!(a.dport));
    }
    m.insert("proto".into(), json!(proto_name(a.proto)));
    if let Some(app) = a.app_proto {
        m.insert("app_proto".into(), json!(app.name()));
    }
    if let Some(p) = peer {
        m.insert("wg_peer".into(), json!(p));
    }
    let action = if a.blocked { "blocked" } else { "allowed" };
    match a.event {
        EventType::Alert | EventType::Drop => {
            let category = a
                .classtype
                .as_deref()
                .and_then(classtype_name)
                .unwrap_or("");
            m.insert(
                "alert".into(),
                json!({
                    "action": action,
                    "gid": a.gid,
                    "signature_id": a.sid,
                    "rev": a.rev,
                    "signature": a.msg,
                    "category": category,
                    "severity": a.severity,
                }),
            );
        }
        EventType::Anomaly => {
            m.insert(
                "anomaly".into(),
                json!({"type": "stream", "event": a.msg, "action": action}),
            );
        }
    }
    Value::Object(m).to_string()
}

/// Formats seconds + microseconds since the Unix epoch (UTC) as Suricata does.
pub fn format_timestamp(secs: u64, micros: u32) -> String {
    // Civil-from-days (H. Hinnant's algorithm), proleptic Gregorian, UTC.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::FlowId;
    use crate::ids::rule::{AppProto, RuleAction};
    use std::time::Instant;

    #[test]
    fn alert_line_has_suricata_fields() {
        let a = Alert {
            event: EventType::Alert,
            now: Instant::now(),
            flow: FlowId(3),
            flow_serial: 77,
            src: "10.0.0.1".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            sport: 1234,
            dport: 80,
            proto: 6,
            app_proto: Some(AppProto::Http),
            action: RuleAction::Drop,
            blocked: true,
            gid: 1,
            sid: 2100498,
            rev: 7,
            msg: "GPL ATTACK_RESPONSE id check returned root".into(),
            classtype: Some("bad-unknown".into()),
            severity: 2,
        };
        let line = to_json(&a, "2024-01-01T00:00:00.000000+0000", Some("laptop"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["flow_id"], 77);
        assert_eq!(v["src_ip"], "10.0.0.1");
        assert_eq!(v["dest_port"], 80);
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["app_proto"], "http");
        assert_eq!(v["wg_peer"], "laptop");
        assert_eq!(v["alert"]["signature_id"], 2100498);
        assert_eq!(v["alert"]["action"], "blocked");
        assert_eq!(v["alert"]["category"], "Potentially Bad Traffic");
        assert_eq!(v["alert"]["severity"], 2);
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(
            format_timestamp(1_709_210_096, 42),
            "2024-02-29T12:34:56.000042+0000"
        );
    }
}
