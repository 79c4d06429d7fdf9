use super::*;
use crate::pipeline::testbed;
use crate::zone::ZoneId;
use proptest::prelude::*;
use std::time::Instant;

fn syn(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, [198, 51, 100, 7], 64)
        .tcp(sport, 443, 1000, 64240)
        .syn()
        .write(&mut v, b"")
        .unwrap();
    v
}

fn with_view<R>(p: &mut Pipeline, f: impl FnOnce(&mut View<'_>) -> R) -> R {
    let ips = |name: &str| vec![format!("{name}-ips")];
    let mut v = View {
        pipeline: p,
        peers: &[],
        allowed_ips: &ips,
        status: StatusBase {
            config: "/etc/portcullis/gateway.toml".into(),
            ..StatusBase::default()
        },
        io: Default::default(),
        now: Instant::now(),
    };
    f(&mut v)
}

fn reply(p: &mut Pipeline, line: &str) -> Response {
    match with_view(p, |v| handle(line.as_bytes(), v)) {
        Outcome::Reply(r) => r,
        Outcome::Reload => panic!("unexpected reload"),
    }
}

fn populated() -> Pipeline {
    let t0 = Instant::now();
    let mut p = testbed::pipeline_accept_forward(t0);
    for port in 1000..1005 {
        let mut s = syn([100, 64, 0, 2], port);
        p.handle(&mut s, ZoneId::peer(0), t0);
    }
    let mut s = syn([100, 64, 0, 3], 2000);
    p.handle(&mut s, ZoneId::peer(1), t0);
    assert_eq!(p.conntrack().len(), 6);
    p
}

#[test]
fn malformed_requests_get_error_replies() {
    let mut p = populated();
    for (line, want) in [
        ("", "empty request"),
        ("not json", "malformed JSON"),
        ("{\"cmd\":\"status\"}", "missing protocol version"),
        (
            "{\"v\":2,\"cmd\":\"status\"}",
            "unsupported protocol version 2",
        ),
        ("{\"v\":1,\"cmd\":\"explode\"}", "bad request"),
        ("{\"v\":1}", "bad request"),
        ("{\"v\":1,\"cmd\":\"status\",\"extra\":1}", "bad request"),
        (
            "{\"v\":1,\"cmd\":\"conntrack\",\"filter\":{\"addr\":\"nope\"}}",
            "bad request",
        ),
        (
            "{\"v\":1,\"cmd\":\"conntrack\",\"filter\":{\"peer\":\"mallory\"}}",
            "no peer named",
        ),
        (
            "{\"v\":1,\"cmd\":\"conntrack\",\"filter\":{\"proto\":\"sctpx\"}}",
            "unknown protocol",
        ),
        (
            "{\"v\":1,\"cmd\":\"block\",\"addr\":\"peer:mallory\"}",
            "no peer named",
        ),
        (
            "{\"v\":1,\"cmd\":\"block\",\"addr\":\"300.1.1.1\"}",
            "bad target",
        ),
        (
            "{\"v\":1,\"cmd\":\"block\",\"addr\":\"192.0.2.1\",\"ttl_secs\":0}",
            "above zero",
        ),
        (
            "{\"v\":1,\"cmd\":\"unblock\",\"addr\":\"192.0.2.1\"}",
            "not on the blocklist",
        ),
        (
            "{\"v\":1,\"cmd\":\"unblock\",\"addr\":\"192.0.2.1\",\"ttl_secs\":3}",
            "unknown field",
        ),
        ("{\"v\":1,\"cmd\":\"nat\",\"flush\":true}", "unknown field"),
        (
            "{\"v\":1,\"cmd\":\"nat_drain\",\"backend\":\"no-such\"}",
            "bad backend",
        ),
        (
            "{\"v\":1,\"cmd\":\"nat_drain\",\"backend\":\"192.0.2.9:80\"}",
            "no load-balancer backend 192.0.2.9:80",
        ),
        ("{\"v\":1,\"cmd\":\"nat_undrain\"}", "bad request"),
    ] {
        let r = reply(&mut p, line);
        assert!(!r.ok, "{line}");
        let e = r.error.clone().unwrap_or_default();
        assert!(e.contains(want), "{line}: {e}");
        // every reply is one JSON line that parses back
        let back: Response = serde_json::from_str(r.to_line().trim_end()).unwrap();
        assert_eq!(back, r);
    }
    let huge = vec![b' '; MAX_REQUEST + 1];
    let r = match with_view(&mut p, |v| handle(&huge, v)) {
        Outcome::Reply(r) => r,
        Outcome::Reload => panic!(),
    };
    assert!(r.error.unwrap().contains("too long"));
    assert_eq!(p.conntrack().len(), 6, "errors change nothing");
}

#[test]
fn status_rules_stats() {
    let mut p = populated();
    let r = reply(&mut p, r#"{"v":1,"cmd":"status"}"#);
    assert!(r.ok);
    let s: Status = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!(s.flows, 6);
    assert_eq!(s.packets, 6);
    assert!(render::human(&Command::Status, &r)
        .unwrap()
        .contains("flows:      6 of"));

    let r = reply(&mut p, r#"{"v":1,"cmd":"rules"}"#);
    let rules: Vec<RuleInfo> = serde_json::from_value(r.data.clone()).unwrap();
    let fwd0 = rules
        .iter()
        .find(|x| x.chain == "forward" && x.index == Some(0))
        .unwrap();
    assert_eq!((fwd0.packets, fwd0.action.as_str()), (6, "accept"));
    assert!(rules
        .iter()
        .any(|x| x.chain == "input" && x.index.is_none()));
    assert!(render::human(&Command::Rules, &r)
        .unwrap()
        .contains("forward"));

    let r = reply(&mut p, r#"{"v":1,"cmd":"stats"}"#);
    let st: StatsInfo = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!(st.received[0], 6);
    assert_eq!(st.conntrack_by_state.get("syn_sent"), Some(&6));
    assert!(render::human(&Command::Stats, &r)
        .unwrap()
        .contains("received"));
}

#[test]
fn conntrack_filters_and_flush() {
    let mut p = populated();
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"conntrack","filter":{"addr":"100.64.0.2"}}"#,
    );
    let l: FlowList = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!((l.total, l.matched, l.flows.len()), (6, 5, 5));
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"conntrack","filter":{"peer":"phone","proto":"tcp","state":"syn_sent"}}"#,
    );
    let l: FlowList = serde_json::from_value(r.data).unwrap();
    assert_eq!(l.matched, 1);
    assert_eq!(l.flows[0].sport, 2000);
    assert_eq!(l.flows[0].ingress, "phone");
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"conntrack","filter":{"port":1003},"limit":0}"#,
    );
    let l: FlowList = serde_json::from_value(r.data).unwrap();
    assert_eq!((l.matched, l.flows.len()), (1, 0));
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"conntrack","filter":{"peer":"laptop"},"flush":true}"#,
    );
    let l: FlowList = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!(l.flushed, 5);
    assert_eq!(p.conntrack().len(), 1);
    assert!(render::human(
        &Command::Conntrack {
            filter: FlowFilter::default(),
            flush: true,
            limit: None
        },
        &r
    )
    .unwrap()
    .contains("flushed 5 of 6"));
}

#[test]
fn reload_is_left_to_the_shell() {
    let mut p = populated();
    let o = with_view(&mut p, |v| handle(br#"{"v":1,"cmd":"reload"}"#, v));
    assert_eq!(o, Outcome::Reload);
    let r = reload_response(Err(vec!["a".into(), "b".into()]));
    assert!(!r.ok);
    assert_eq!(r.errors.len(), 2);
    assert!(r.error.unwrap().contains("2 problems"));
}

#[test]
fn requests_round_trip() {
    for cmd in [
        Command::Status,
        Command::Conntrack {
            filter: FlowFilter {
                addr: Some("2001:db8::1".parse().unwrap()),
                port: Some(22),
                ..FlowFilter::default()
            },
            flush: true,
            limit: Some(3),
        },
        Command::Block {
            addr: "192.0.2.1".into(),
            ttl_secs: Some(60),
            reason: Some("test".into()),
        },
        Command::Nat {
            filter: FlowFilter {
                port: Some(80),
                ..FlowFilter::default()
            },
            limit: None,
        },
        Command::NatDrain {
            backend: "192.0.2.11:80".into(),
            rule: Some("web".into()),
        },
        Command::NatUndrain {
            backend: "[2001:db8::2]:80".into(),
            rule: None,
        },
    ] {
        let req = Request::new(cmd);
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(parse(line.as_bytes()).unwrap(), req);
    }
}

/// A pipeline with one load-balanced DNAT rule "web" (100.64.0.200:80 ->
/// 100.64.0.2:80, 100.64.0.3:80, round-robin) and two flows through it.
fn with_lb() -> Pipeline {
    use crate::nat::{Backend, NatAction, NatConfig, NatRule, Strategy};
    use crate::packet::synth::{self, TcpSpec};
    let now = Instant::now();
    let mut cfg = testbed::config(crate::rules::ChainDef {
        rules: vec![crate::rules::Rule::any(crate::rules::Action::Accept)],
        policy: crate::rules::Action::Drop,
    });
    let mut m = crate::rules::Rule::any(crate::rules::Action::Accept);
    m.proto = Some(crate::packet::proto::TCP);
    let be = |a: &str| Backend {
        addr: a.parse().unwrap(),
        port: Some(80),
        weight: 1,
        down: false,
    };
    cfg.nat = NatConfig {
        rules: vec![NatRule {
            name: "web".into(),
            matches: m,
            action: NatAction::Dnat {
                backends: vec![be("100.64.0.2"), be("100.64.0.3")],
                strategy: Strategy::RoundRobin,
            },
            mss_clamp: false,
            log: false,
            health: None,
        }],
        local_nets: vec!["100.64.0.1/24".parse().unwrap()],
        peer_routes: cfg.peer_routes.clone(),
        mtu: 1420,
    };
    let mut p = Pipeline::new(cfg, testbed::KEY, now);
    for sport in [40000u16, 40001] {
        let mut syn = synth::tcp(
            format!("198.51.100.10:{sport}").parse().unwrap(),
            "100.64.0.200:80".parse().unwrap(),
            TcpSpec::default(),
            b"",
        )
        .unwrap();
        assert!(matches!(
            p.handle(&mut syn, ZoneId::TUN, now),
            crate::verdict::Verdict::Forward(_)
        ));
    }
    p
}

#[test]
fn nat_lists_bindings_backends_and_counters() {
    let mut p = with_lb();
    let r = reply(&mut p, r#"{"v":1,"cmd":"nat"}"#);
    assert!(r.ok, "{r:?}");
    let n: NatList = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!((n.total, n.matched, n.bindings.len()), (2, 2, 2));
    let mut to: Vec<_> = n
        .bindings
        .iter()
        .map(|b| (b.orig_sport, b.xlat_dst.clone()))
        .collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            (40000, "100.64.0.2".to_string()),
            (40001, "100.64.0.3".to_string())
        ]
    );
    let b = &n.bindings[0];
    assert_eq!(
        (
            b.kind.as_str(),
            b.orig_dst.as_str(),
            b.orig_dport,
            b.xlat_dport
        ),
        ("dnat", "100.64.0.200", 80, 80)
    );
    assert_eq!(n.backends.len(), 2);
    assert!(n
        .backends
        .iter()
        .all(|b| b.up && b.state == "up" && b.rule == "web"));
    assert_eq!(n.stats.get("dnat_bindings"), Some(&2));
    // filters: the translated address and the original port both select
    for (f, want) in [
        (r#"{"addr":"100.64.0.3"}"#, 1),
        (r#"{"port":40000}"#, 1),
        (r#"{"addr":"192.0.2.99"}"#, 0),
        (r#"{"proto":"udp"}"#, 0),
    ] {
        let r = reply(&mut p, &format!(r#"{{"v":1,"cmd":"nat","filter":{f}}}"#));
        let n: NatList = serde_json::from_value(r.data).unwrap();
        assert_eq!((n.total, n.matched), (2, want), "{f}");
    }
    let text = render::human(
        &Command::Nat {
            filter: FlowFilter::default(),
            limit: None,
        },
        &r,
    )
    .unwrap();
    assert!(
        text.contains(
            "198.51.100.10:40000 -> 100.64.0.200:80  =>  198.51.100.10:40000 -> 100.64.0.2:80"
        ),
        "{text}"
    );
    assert!(text.contains("100.64.0.3:80"), "{text}");
}

#[test]
fn nat_drain_and_undrain() {
    let mut p = with_lb();
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"nat_drain","backend":"100.64.0.3:80","rule":"web"}"#,
    );
    assert!(r.ok, "{r:?}");
    let d: DrainReport = serde_json::from_value(r.data).unwrap();
    assert_eq!((d.drained, d.changed), (true, 1));
    let n: NatList = serde_json::from_value(reply(&mut p, r#"{"v":1,"cmd":"nat"}"#).data).unwrap();
    let st: Vec<_> = n
        .backends
        .iter()
        .map(|b| (b.state.as_str(), b.up))
        .collect();
    assert_eq!(st, vec![("up", true), ("drained", false)]);
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"nat_drain","backend":"100.64.0.3","rule":"other"}"#,
    );
    assert!(r.error.unwrap().contains("no dnat rule named \"other\""));
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"nat_undrain","backend":"100.64.0.3"}"#,
    );
    assert!(r.ok, "{r:?}");
    let n: NatList = serde_json::from_value(reply(&mut p, r#"{"v":1,"cmd":"nat"}"#).data).unwrap();
    assert!(n.backends.iter().all(|b| b.up));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_bytes_get_a_reply(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut p = testbed::pipeline_accept_forward(Instant::now());
        let o = with_view(&mut p, |v| handle(&bytes, v));
        if let Outcome::Reply(r) = o {
            prop_assert!(r.ok || r.error.is_some());
        }
    }

    #[test]
    fn json_shaped_garbage_gets_a_reply(
        cmd in "[a-z_]{0,12}",
        key in "[a-z]{0,6}",
        val in "[0-9a-z\\.:]{0,10}",
    ) {
        let mut p = testbed::pipeline_accept_forward(Instant::now());
        let line = format!(r#"{{"v":1,"cmd":"{cmd}","{key}":"{val}","filter":{{"{key}":"{val}"}}}}"#);
        let o = with_view(&mut p, |v| handle(line.as_bytes(), v));
        if let Outcome::Reply(r) = o {
            prop_assert!(r.ok || r.error.is_some());
        }
    }
}

#[test]
fn rules_listing_shows_l7_fields() {
    use crate::rules::{Action, NameList, NamePattern, Rule};
    let list = |p: &[&str]| {
        Some(NameList(
            p.iter().map(|p| NamePattern::parse(p).unwrap()).collect(),
        ))
    };
    let r = Rule {
        tls_sni: list(&["*.example.net", "example.net"]),
        dns_qname: list(&["~.*evil.*"]),
        ..Rule::any(Action::Drop)
    };
    assert_eq!(
        super::l7_summary(&r).as_deref(),
        Some(r#"tls_sni ["*.example.net", "example.net"] dns_qname ["~.*evil.*"]"#)
    );
    assert_eq!(super::l7_summary(&Rule::any(Action::Drop)), None);
}

/// `block` / `unblock` / `blocklist` through the pure handler: an address
/// and a peer are blocked (their packets dropped with reason `blocked`),
/// listed with origin, TTL and hits, rendered, and unblocked again.
#[test]
fn block_unblock_and_list() {
    use crate::blocklist::{BlockConfig, Protection};
    let t0 = Instant::now();
    let mut p = testbed::pipeline_accept_forward(t0);
    p.set_protection(
        &Protection {
            blocklist: BlockConfig {
                peers: vec![("laptop".into(), [7; 32]), ("phone".into(), [8; 32])],
                ..BlockConfig::default()
            },
            ..Protection::default()
        },
        t0,
    );
    let r = reply(
        &mut p,
        r#"{"v":1,"cmd":"block","addr":"100.64.0.2","ttl_secs":60,"reason":"testing"}"#,
    );
    assert!(r.ok, "{r:?}");
    let rep: BlockReport = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!(
        (rep.target.as_str(), rep.ttl_secs, rep.entries),
        ("100.64.0.2", Some(60), 1)
    );
    let cmd = Command::Block {
        addr: "100.64.0.2".into(),
        ttl_secs: None,
        reason: None,
    };
    assert!(render::human(&cmd, &r)
        .unwrap()
        .starts_with("blocked 100.64.0.2 for 60s"));
    let r = reply(&mut p, r#"{"v":1,"cmd":"block","addr":"peer:phone"}"#);
    assert!(r.ok, "{r:?}");

    // the blocked address and peer are dropped; the other peer is not blocked
    let mut s = syn([100, 64, 0, 2], 1000);
    assert_eq!(
        p.handle(&mut s, ZoneId::peer(0), t0),
        crate::verdict::Verdict::Drop(crate::verdict::DropReason::Blocked)
    );
    let mut s = syn([100, 64, 0, 3], 1000);
    assert_eq!(
        p.handle(&mut s, ZoneId::peer(1), t0),
        crate::verdict::Verdict::Drop(crate::verdict::DropReason::Blocked)
    );

    let r = reply(&mut p, r#"{"v":1,"cmd":"blocklist"}"#);
    let l: BlockList = serde_json::from_value(r.data.clone()).unwrap();
    assert_eq!(l.entries.len(), 2);
    let a = &l.entries[0];
    assert_eq!(
        (
            a.target.as_str(),
            a.origin.as_str(),
            a.reason.as_str(),
            a.hits
        ),
        ("100.64.0.2", "ctl", "testing", 1)
    );
    assert!(a.expires_in_secs.is_some_and(|s| s <= 60 && s > 0));
    assert_eq!(
        (l.entries[1].target.as_str(), l.entries[1].expires_in_secs),
        ("peer:phone", None)
    );
    let text = render::human(&Command::Blocklist, &r).unwrap();
    assert!(
        text.contains("peer:phone") && text.contains("testing"),
        "{text}"
    );

    let r = reply(&mut p, r#"{"v":1,"cmd":"unblock","addr":"peer:phone"}"#);
    assert!(r.ok, "{r:?}");
    let mut s = syn([100, 64, 0, 3], 1001);
    assert!(matches!(
        p.handle(&mut s, ZoneId::peer(1), t0),
        crate::verdict::Verdict::Forward(_)
    ));
    let r = reply(&mut p, r#"{"v":1,"cmd":"blocklist"}"#);
    let l: BlockList = serde_json::from_value(r.data).unwrap();
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.stats.get("removed"), Some(&1));
}
