//! Blocklist and anomaly detection end to end through `Pipeline::handle`,
//! on configs loaded from TOML: a port scan from one peer gets it blocked
//! at exactly the configured count (denied probes count), other peers are
//! unaffected, the block ends with its TTL; `block = "..."` on a rule
//! blocks the source of matching packets; config entries (addresses and
//! peers) block, survive as ctl entries do across a reload, and a peer
//! block follows the peer's key when a reload renumbers the zones.

#![allow(clippy::unwrap_used)]

use portcullis::blocklist::{BlockEvent, Origin, Target};
use portcullis::config::load_str;
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::pipeline::{Pipeline, PipelineConfig};
use portcullis::verdict::{DropReason, Verdict};
use portcullis::zone::ZoneId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LAPTOP: ZoneId = ZoneId(ZoneId::FIRST_PEER);
const PHONE: ZoneId = ZoneId(ZoneId::FIRST_PEER + 1);
const SERVER: &str = "198.51.100.7";

const PEERS: &str = r#"
[[peer]]
name = "laptop"
public_key = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo="
allowed_ips = ["100.64.0.2/32"]

[[peer]]
name = "phone"
public_key = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA="
allowed_ips = ["100.64.0.3/32"]
"#;

const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY="

[chains.forward]
policy = "drop"

[[rule]]
chain = "forward"
name = "web"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
chain = "forward"
name = "telnet-trap"
proto = "tcp"
dport = 23
action = "drop"
block = "30s"
"#;

fn load(extra: &str, peers: &str) -> portcullis::config::Config {
    let text = format!("{BASE}\n{peers}\n{extra}");
    load_str(&text, "test.toml").unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn pipeline(extra: &str, t0: Instant) -> Pipeline {
    let c = load(extra, PEERS);
    let mut p = Pipeline::new(PipelineConfig::from_config(&c), (11, 22), t0);
    p.set_protection(&c.protection(), t0);
    p
}

fn syn(src: &str, sport: u16, dport: u16) -> Vec<u8> {
    synth::tcp(
        SocketAddr::new(src.parse().unwrap(), sport),
        SocketAddr::new(SERVER.parse().unwrap(), dport),
        TcpSpec::default(),
        &[],
    )
    .unwrap()
}

fn send(p: &mut Pipeline, zone: ZoneId, mut pkt: Vec<u8>, now: Instant) -> Verdict {
    p.handle(&mut pkt, zone, now)
}

const BLOCKED: Verdict = Verdict::Drop(DropReason::Blocked);

#[test]
fn port_scan_blocks_at_threshold_others_unaffected_unblocked_after_ttl() {
    const N: u16 = 12;
    let t0 = Instant::now();
    let mut p = pipeline(
        &format!(
            "[ids.anomaly]\nblock = \"5s\"\n[ids.anomaly.port_scan]\nthreshold = {N}\nwindow = \"10s\"\n"
        ),
        t0,
    );
    // N - 1 probes of distinct ports: the rules decide them (port 80 accepted, the rest dropped)
    for i in 0..N - 1 {
        let v = send(&mut p, LAPTOP, syn("100.64.0.2", 40000 + i, 79 + i), t0);
        assert_ne!(v, BLOCKED, "blocked at probe {} of {N}", i + 1);
    }
    assert!(p.blocklist().is_empty());
    assert!(p.poll_anomaly().is_none());
    // the Nth distinct port: detected, blocked, and this probe dropped as blocked
    let v = send(&mut p, LAPTOP, syn("100.64.0.2", 41000, 2000), t0);
    assert_eq!(v, BLOCKED);
    let (d, blocked) = p.poll_anomaly().unwrap();
    assert!(blocked);
    assert_eq!(
        (d.kind.name(), d.count, d.threshold),
        ("port_scan", u32::from(N), u32::from(N))
    );
    assert_eq!(d.src.to_string(), "100.64.0.2");
    assert_eq!(d.ingress, LAPTOP);
    assert!(matches!(
        p.poll_block_event(),
        Some(BlockEvent::Blocked { origin: Origin::Anomaly, ttl: Some(t), .. }) if t == Duration::from_secs(5)
    ));
    // now even the allowed port is blocked for the scanner, at any time in the TTL
    let t1 = t0 + Duration::from_secs(4);
    assert_eq!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 42000, 80), t1),
        BLOCKED
    );
    // the other peer is unaffected
    assert!(matches!(
        send(&mut p, PHONE, syn("100.64.0.3", 42000, 80), t1),
        Verdict::Forward(_)
    ));
    assert_eq!(p.stats().drop_reasons.get("blocked"), Some(&2));
    // after the TTL: the housekeeping expires the entry, traffic flows again
    let t2 = t0 + Duration::from_secs(5);
    p.handle_timeout(t2);
    assert!(p.blocklist().is_empty());
    assert!(matches!(
        p.poll_block_event(),
        Some(BlockEvent::Expired {
            origin: Origin::Anomaly,
            // the probe that triggered the block is dropped by the detector
            // (counted under `blocked`), not by the entry
            hits: 1,
            ..
        })
    ));
    assert!(matches!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 43000, 80), t2),
        Verdict::Forward(_)
    ));
}

#[test]
fn without_block_the_detection_only_alerts() {
    let t0 = Instant::now();
    let mut p = pipeline("[ids.anomaly.port_scan]\nthreshold = 3\n", t0);
    for i in 0..3 {
        let _ = send(&mut p, LAPTOP, syn("100.64.0.2", 40000 + i, 100 + i), t0);
    }
    let (d, blocked) = p.poll_anomaly().unwrap();
    assert!(!blocked);
    assert_eq!(d.kind.name(), "port_scan");
    assert!(p.blocklist().is_empty());
}

#[test]
fn rule_block_blocks_the_source_of_matching_packets() {
    let t0 = Instant::now();
    let mut p = pipeline("", t0);
    assert!(matches!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40000, 80), t0),
        Verdict::Forward(_)
    ));
    // the trap port: dropped by its rule, and the source blocked for 30 s
    assert_eq!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40001, 23), t0),
        Verdict::Drop(DropReason::Rule {
            chain: portcullis::verdict::Chain::Forward,
            rule: 1
        })
    );
    let e: Vec<_> = p.blocklist().entries().collect();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].origin, e[0].reason.as_str()),
        (Origin::Rule, "rule telnet-trap")
    );
    assert_eq!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40002, 80), t0),
        BLOCKED
    );
    let t1 = t0 + Duration::from_secs(30);
    p.handle_timeout(t1);
    assert!(matches!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40003, 80), t1),
        Verdict::Forward(_)
    ));
}

#[test]
fn config_entries_block_and_reload_keeps_runtime_entries_and_follows_peer_keys() {
    let t0 = Instant::now();
    let extra = "[blocklist]\naddresses = [\"100.64.0.3\"]\npeers = [\"laptop\"]\n";
    let mut p = pipeline(extra, t0);
    assert_eq!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40000, 80), t0),
        BLOCKED
    );
    assert_eq!(
        send(&mut p, PHONE, syn("100.64.0.3", 40000, 80), t0),
        BLOCKED
    );
    // a run-time (ctl) block of an outside address
    let outside = Target::addr("203.0.113.9".parse().unwrap());
    p.blocklist_mut()
        .add(outside, Origin::Ctl, "ctl", None, t0)
        .unwrap();
    // reload: no config entries any more, and the peers swapped places
    let swapped = "\n[[peer]]\nname = \"phone\"\npublic_key = \"76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA=\"\nallowed_ips = [\"100.64.0.3/32\"]\n\n[[peer]]\nname = \"laptop\"\npublic_key = \"5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo=\"\nallowed_ips = [\"100.64.0.2/32\"]\n";
    let c = load("[blocklist]\npeers = [\"laptop\"]\n", swapped);
    p.reload(PipelineConfig::from_config(&c));
    p.set_protection(&c.protection(), t0);
    let names: Vec<String> = p
        .blocklist()
        .entries()
        .map(|e| p.blocklist().target_name(&e.target))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"203.0.113.9".to_string()));
    assert!(names.contains(&"peer:laptop".to_string()));
    // laptop is now zone peer(1), phone peer(0): the block follows the key
    assert_eq!(
        send(&mut p, PHONE, syn("100.64.0.2", 40001, 80), t0),
        BLOCKED
    );
    assert!(matches!(
        send(&mut p, LAPTOP, syn("100.64.0.3", 40001, 80), t0),
        Verdict::Forward(_)
    ));
}

/// `ids.block_on_drop`: a drop signature in prevent mode drops the flow and
/// blocks its initiator, so the same source's next new flow (another port,
/// no signature content) is refused as `blocked` until the TTL passes.
/// Built through the real config path (rule file on disk, `[ids]` section).
#[test]
fn ids_block_on_drop_blocks_the_flows_initiator() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.rules"),
        "drop tcp any any -> any 80 (msg:\"evil\"; flow:to_server,established; content:\"EVILSIG\"; sid:100;)\n",
    )
    .unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "{BASE}\n{PEERS}\n[ids]\nenabled = true\nmode = \"prevent\"\nblock_on_drop = \"1m\"\nrule_files = [\"local.rules\"]\n"
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut l = portcullis::io::reload::load(&cfg, t0).unwrap_or_else(|e| panic!("{e:?}"));
    let mut p = Pipeline::new(l.settings.pipeline.clone(), (11, 22), t0);
    p.set_protection(&l.settings.protect, t0);
    p.set_ids(l.ids.take());
    assert!(p.ids().is_some());

    let client: SocketAddr = "100.64.0.2:40000".parse().unwrap();
    let server: SocketAddr = SocketAddr::new(SERVER.parse().unwrap(), 80);
    // a clean flow first: forwarded, nothing blocked
    let mut data = portcullis::pipeline::testbed::established_tcp(&mut p, client, server, 20, t0)
        .expect("handshake forwarded");
    assert!(matches!(
        p.handle(&mut data, LAPTOP, t0),
        Verdict::Forward(_)
    ));
    assert_eq!(p.blocklist().entries().count(), 0);

    // the signature's content on a second flow: dropped by the IDS, source blocked
    let client2: SocketAddr = "100.64.0.2:40001".parse().unwrap();
    let _ = portcullis::pipeline::testbed::established_tcp(&mut p, client2, server, 0, t0)
        .expect("handshake forwarded");
    let spec = TcpSpec {
        flags: portcullis::packet::tcp_flags::ACK | portcullis::packet::tcp_flags::PSH,
        seq: 1001,
        ack: 5001,
        window: 2048,
        wscale: None,
        mss: None,
    };
    let mut evil = synth::tcp(client2, server, spec, b"GET /EVILSIG HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        p.handle(&mut evil, LAPTOP, t0),
        Verdict::Drop(DropReason::Ids)
    );
    let e: Vec<_> = p.blocklist().entries().collect();
    assert_eq!(e.len(), 1, "one entry");
    assert_eq!(e[0].origin, Origin::Ids);
    assert_eq!(e[0].target, Target::addr("100.64.0.2".parse().unwrap()));

    // the source's other traffic is now refused; another peer's is not
    assert_eq!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40002, 443), t0),
        BLOCKED
    );
    assert!(matches!(
        send(&mut p, PHONE, syn("100.64.0.3", 40000, 80), t0),
        Verdict::Forward(_)
    ));
    // after the TTL the block expires
    let t1 = t0 + Duration::from_secs(60);
    p.handle_timeout(t1);
    assert_eq!(p.blocklist().entries().count(), 0);
    assert!(matches!(
        send(&mut p, LAPTOP, syn("100.64.0.2", 40003, 80), t1),
        Verdict::Forward(_)
    ));
    let evs: Vec<_> = std::iter::from_fn(|| p.poll_block_event()).collect();
    assert!(
        evs.iter().any(|ev| matches!(
            ev,
            BlockEvent::Blocked {
                origin: Origin::Ids,
                ..
            }
        )),
        "{evs:?}"
    );
}
