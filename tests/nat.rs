//! NAT end to end without root: `[[nat]]` config text -> validated config ->
//! `Pipeline::handle`, plus the config's error messages for NAT entries.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic
use portcullis::config;
use portcullis::packet::synth::{self, TcpSpec};
use portcullis::packet::{parse, tcp_flags};
use portcullis::pipeline::{Pipeline, PipelineConfig};
use portcullis::verdict::{DropReason, Verdict};
use portcullis::zone::ZoneId;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

const PRIV: &str = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY=";
const K1: &str = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo=";
const K2: &str = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA=";
const K3: &str = "Kdrp1drEQqIgmfrNYkOPO6UVnE8KJtwaFxEeBjKiy1o=";

fn base(extra: &str) -> String {
    format!(
        r#"
[interface]
addresses = ["100.64.0.1/24", "2001:db8:64::1/64", "100.64.1.2/24"]
private_key = "{PRIV}"

[[peer]]
name = "laptop"
public_key = "{K1}"
allowed_ips = ["100.64.0.2/32", "2001:db8:64::2/128"]

[[peer]]
name = "upstream"
public_key = "{K2}"
allowed_ips = ["0.0.0.0/0"]

[[peer]]
name = "web2"
public_key = "{K3}"
allowed_ips = ["100.64.0.3/32"]

[chains.forward]
policy = "drop"

[[rule]]
chain = "forward"
state = ["established", "related"]
action = "accept"

[[rule]]
chain = "forward"
from = "tun"
to = "upstream"
action = "accept"

[[rule]]
chain = "forward"
to = ["laptop", "web2"]
proto = "tcp"
dport = 80
action = "accept"
{extra}
"#
    )
}

fn pipeline(extra: &str) -> (Pipeline, Instant) {
    let c = config::load_str(&base(extra), "nat-test.toml").unwrap();
    let now = Instant::now();
    (
        Pipeline::new(PipelineConfig::from_config(&c), (3, 4), now),
        now,
    )
}

fn problems(extra: &str) -> String {
    config::load_str(&base(extra), "nat-test.toml")
        .unwrap_err()
        .to_string()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const UPSTREAM: ZoneId = ZoneId(4);
const LAPTOP: ZoneId = ZoneId(3);
const WEB2: ZoneId = ZoneId(5);

#[test]
fn lan_to_vpn_masquerades_onto_the_upstream_tunnel_address() {
    let (mut pl, now) = pipeline(
        r#"
[[nat]]
kind = "masquerade"
from = "tun"
to = "upstream"
mss_clamp = true
"#,
    );
    let spec = TcpSpec {
        mss: Some(1460),
        ..TcpSpec::default()
    };
    let mut syn = synth::tcp(
        sa("198.51.100.130:40000"),
        sa("203.0.113.66:443"),
        spec,
        b"",
    )
    .unwrap();
    let (v, log) = pl.trace(&mut syn, ZoneId::TUN, now);
    assert_eq!(v, Verdict::Forward(UPSTREAM));
    let text = format!("{log:?}");
    assert!(
        text.contains("binding"),
        "trace shows the NAT decision: {text}"
    );
    let m = parse(&syn).unwrap();
    assert_eq!(m.src, ip("100.64.1.2"));
    let portcullis::packet::L4::Tcp(t) = m.l4 else {
        panic!()
    };
    assert_eq!(t.mss, Some(1380));
    let spec = TcpSpec {
        flags: tcp_flags::SYN | tcp_flags::ACK,
        seq: 1,
        ack: 1001,
        mss: Some(1460),
        ..TcpSpec::default()
    };
    let mut synack = synth::tcp(
        sa("203.0.113.66:443"),
        SocketAddr::new(ip("100.64.1.2"), t.sport),
        spec,
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut synack, UPSTREAM, now),
        Verdict::Forward(ZoneId::TUN)
    );
    let m = parse(&synack).unwrap();
    assert_eq!((m.dst, m.ports().1), (ip("198.51.100.130"), 40000));
    let portcullis::packet::L4::Tcp(t) = m.l4 else {
        panic!()
    };
    assert_eq!(t.mss, Some(1380), "SYN-ACK clamped too");
    assert!(pl.report().contains("snat bindings 1"), "{}", pl.report());
}

#[test]
fn port_forward_from_the_tun_side() {
    let (mut pl, now) = pipeline(
        r#"
[[nat]]
kind = "dnat"
from = "tun"
dst = "100.64.0.200"
proto = "tcp"
dport = 8080
to_address = "100.64.0.2"
to_ports = 80
log = true
"#,
    );
    let mut syn = synth::tcp(
        sa("203.0.113.2:40000"),
        sa("100.64.0.200:8080"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut syn, ZoneId::TUN, now),
        Verdict::Forward(LAPTOP)
    );
    let m = parse(&syn).unwrap();
    assert_eq!((m.dst, m.ports().1), (ip("100.64.0.2"), 80));
    let e = pl.poll_nat_event().unwrap();
    let line = pl.nat_event_line(&e);
    assert!(
        line.contains("100.64.0.200:8080") && line.contains("100.64.0.2:80"),
        "{line}"
    );
    // Another port is not forwarded: it follows the normal route (the upstream), untranslated.
    let mut other = synth::tcp(
        sa("203.0.113.2:40001"),
        sa("100.64.0.200:8081"),
        TcpSpec::default(),
        b"",
    )
    .unwrap();
    assert_eq!(
        pl.handle(&mut other, ZoneId::TUN, now),
        Verdict::Forward(UPSTREAM)
    );
    assert_eq!(parse(&other).unwrap().dst, ip("100.64.0.200"));
}

#[test]
fn drained_backend_gets_no_new_flows() {
    let (mut pl, now) = pipeline(
        r#"
[[nat]]
kind = "dnat"
dst = "100.64.0.201"
proto = "tcp"
dport = 80
strategy = "round-robin"
backends = [{ address = "100.64.0.2:80" }, { address = "100.64.0.3:80", down = true }]
"#,
    );
    for i in 0..20u16 {
        let mut syn = synth::tcp(
            SocketAddr::new(ip("203.0.113.2"), 30000 + i),
            sa("100.64.0.201:80"),
            TcpSpec::default(),
            b"",
        )
        .unwrap();
        assert_eq!(
            pl.handle(&mut syn, ZoneId::TUN, now),
            Verdict::Forward(LAPTOP)
        );
    }
    let _ = WEB2;
}

#[test]
fn exhaustion_through_config_ranges() {
    let (mut pl, now) = pipeline(
        r#"
[[nat]]
kind = "snat"
from = "tun"
to = "upstream"
to_address = "100.64.1.2"
to_ports = "40000-40009"
"#,
    );
    let mut ok = 0;
    let mut exhausted = 0;
    for i in 0..50u16 {
        let mut p = synth::udp(
            SocketAddr::new(ip("198.51.100.130"), 1024 + i),
            sa("203.0.113.66:53"),
            b"q",
        )
        .unwrap();
        match pl.handle(&mut p, ZoneId::TUN, now) {
            Verdict::Forward(UPSTREAM) => ok += 1,
            Verdict::Drop(DropReason::NatExhausted) => exhausted += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!((ok, exhausted), (10, 40));
    assert_eq!(pl.nat().stats.exhausted, 40);
}

#[test]
fn nat_config_errors_name_key_value_and_expectation() {
    let e = problems("[[nat]]\nkind = \"snatt\"\n");
    assert!(
        e.contains("nat[0].kind") && e.contains("snatt") && e.contains("\"masquerade\""),
        "{e}"
    );
    let e = problems("[[nat]]\nkind = \"snat\"\n");
    assert!(e.contains("nat[0].to_address"), "{e}");
    let e = problems("[[nat]]\nkind = \"masquerade\"\nfrom = \"laptop\"\n");
    assert!(e.contains("nat[0]") && e.contains("to_address"), "{e}");
    let e = problems("[[nat]]\nkind = \"dnat\"\nto = \"laptop\"\nto_address = \"100.64.0.2\"\n");
    assert!(
        e.contains("nat[0].to") && e.contains("before routing"),
        "{e}"
    );
    let e = problems("[[nat]]\nkind = \"dnat\"\nproto = \"tcp\"\nbackends = [{ address = \"100.64.0.2:80\", weight = 0 }]\n");
    assert!(e.contains("nat[0].backends[0].weight"), "{e}");
    let e = problems(
        "[[nat]]\nkind = \"dnat\"\nproto = \"tcp\"\nbackends = [{ address = \"nope\" }]\n",
    );
    assert!(
        e.contains("nat[0].backends[0].address") && e.contains("ADDRESS:PORT"),
        "{e}"
    );
    let e = problems("[[nat]]\nkind = \"dnat\"\nproto = \"tcp\"\nstrategy = \"fastest\"\nbackends = [{ address = \"100.64.0.2:80\" }]\n");
    assert!(
        e.contains("nat[0].strategy") && e.contains("least-connections"),
        "{e}"
    );
    let e = problems("[[nat]]\nkind = \"dnat\"\nto_address = \"100.64.0.2\"\nto_ports = 80\n");
    assert!(e.contains("needs proto"), "{e}");
    let e = problems("[[nat]]\nkind = \"snat\"\nto_address = \"100.64.1.2\"\nto_ports = \"5-2\"\n");
    assert!(e.contains("nat[0].to_ports"), "{e}");
    let e = problems("[[nat]]\nkind = \"snat\"\nto_address = \"100.64.1.2\"\ntypo = 1\n");
    assert!(e.contains("nat[0].typo"), "{e}");
    let e = problems("[[nat]]\nkind = \"snat\"\nfamily = \"ipv6\"\nto_address = \"100.64.1.2\"\n");
    assert!(e.contains("IPv6"), "{e}");
}

#[test]
fn health_check_config_and_its_errors() {
    let (pl, _) = pipeline(
        r#"
[[nat]]
kind = "dnat"
name = "pool"
dst = "100.64.0.201"
proto = "tcp"
dport = 80
health_check = { interval = "2s", timeout = "500ms" }
backends = [{ address = "100.64.0.2:80" }, { address = "100.64.0.3:8080" }]
"#,
    );
    let t = pl.nat().health_targets();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].addr, sa("100.64.0.3:8080"));
    assert_eq!(t[0].check.interval, std::time::Duration::from_secs(2));
    assert_eq!(t[0].check.timeout, std::time::Duration::from_millis(500));
    let lb =
        "[[nat]]\nkind = \"dnat\"\nproto = \"tcp\"\nbackends = [{ address = \"100.64.0.2:80\" }]\n";
    let e = problems(&format!(
        "{lb}health_check = {{ interval = \"1s\", timeout = \"2s\" }}\n"
    ));
    assert!(
        e.contains("nat[0].health_check") && e.contains("below the interval"),
        "{e}"
    );
    let e = problems(&format!("{lb}health_check = {{ interval = \"10ms\" }}\n"));
    assert!(e.contains("100ms to 1h"), "{e}");
    let e = problems(&format!("{lb}health_check = {{ every = \"1s\" }}\n"));
    assert!(e.contains("nat[0].health_check.every"), "{e}");
    let e = problems("[[nat]]\nkind = \"dnat\"\nproto = \"tcp\"\nbackends = [{ address = \"100.64.0.2\" }]\nhealth_check = {}\n");
    assert!(e.contains("every backend's port"), "{e}");
    let e = problems("[[nat]]\nkind = \"snat\"\nto_address = \"100.64.1.2\"\nhealth_check = {}\n");
    assert!(e.contains("health checks are for kind = \"dnat\""), "{e}");
}
