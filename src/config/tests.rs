//! Validation tests: one per rule, each checking the key path, the bad value
//! and the expectation in the message; plus "all problems at once",
//! environment overrides, key files and a no-panic property test.

use super::*;
use crate::rules::model::{Action, RejectWith};
use std::io::Write as _;

const PRIV: &str = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY=";
const K1: &str = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo=";
const K2: &str = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA=";
const K3: &str = "+HsTippB+Bu3boEL/OVk9EaoV3dl661jnEbOmWh8NCo=";

fn base() -> String {
    format!(
        r#"
[interface]
addresses = ["100.64.0.1/24", "2001:db8:64::1/64"]
private_key = "{PRIV}"

[[peer]]
name = "laptop"
public_key = "{K1}"
allowed_ips = ["100.64.0.2/32"]
groups = ["staff"]

[[peer]]
name = "phone"
public_key = "{K2}"
allowed_ips = ["100.64.0.3/32", "2001:db8:64::3/128"]
groups = ["staff", "guests"]

[sets]
servers = ["203.0.113.0/24"]
v6servers = ["2001:db8:1::/48"]
"#
    )
}

fn ok_with(extra: &str) -> Config {
    let text = format!("{}{extra}", base());
    load_str(&text, "/cfg/test.toml").unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn err_with(extra: &str) -> ConfigError {
    let text = format!("{}{extra}", base());
    match load_str(&text, "/cfg/test.toml") {
        Ok(_) => panic!("expected an error for:\n{extra}"),
        Err(e) => e,
    }
}

/// Asserts a problem at exactly `key` whose message contains every needle.
fn assert_problem(e: &ConfigError, key: &str, needles: &[&str]) {
    let p = e
        .problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at `{key}` in:\n{e}"));
    for n in needles {
        assert!(
            p.message.contains(n),
            "problem at `{key}` lacks {n:?}: {}",
            p.message
        );
    }
    assert_eq!(p.file, "/cfg/test.toml");
}

fn rule(body: &str) -> String {
    format!("\n[[rule]]\n{body}\n")
}

#[test]
fn base_config_compiles_with_defaults() {
    let c = ok_with("");
    assert_eq!(c.interface.name, "pc0");
    assert_eq!(c.interface.mtu, 1420);
    assert_eq!(c.interface.listen_port, 51820);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[1].zone, ZoneId::peer(1));
    assert_eq!(c.zones.peer("phone"), Some(ZoneId::peer(1)));
    let staff = c.zones.resolve("group:staff").unwrap();
    assert!(staff.contains(ZoneId::peer(0)) && staff.contains(ZoneId::peer(1)));
    assert_eq!(c.input.policy, Action::Drop);
    assert_eq!(c.forward.policy, Action::Drop);
    assert_eq!(c.output.policy, Action::Accept);
    assert_eq!(c.conntrack, crate::conntrack::CtConfig::default());
    assert_eq!(c.fragments, crate::packet::FragConfig::default());
    assert_eq!(
        c.reject,
        RejectLimit {
            per_sec: 100,
            burst: 50
        }
    );
    assert_eq!(c.source, PathBuf::from("/cfg/test.toml"));
    // The public key is derived from the private key (RFC 7748 X25519).
    assert_ne!(c.interface.public_key(), c.interface.private_key);
    assert!(c.summary().contains("laptop [100.64.0.2/32]"));
}

#[test]
fn unknown_keys_are_errors_with_hints() {
    let e = err_with("\n[[peers]]\nname = \"x\"\n");
    assert_problem(
        &e,
        "peers",
        &["unknown key `peers`", "did you mean `peer`?"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\ndprot = 22\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].dprot",
        &["unknown key", "did you mean `dport`?"],
    );
    let e = err_with("\n[conntrack.timeouts]\ntcp_establised = 5\n");
    assert_problem(
        &e,
        "conntrack.timeouts.tcp_establised",
        &["did you mean `tcp_established`?"],
    );
}

#[test]
fn type_errors_name_the_expected_type() {
    let e = err_with("\n[log]\nlevel = 3\n");
    assert_problem(
        &e,
        "log.level",
        &["expected a string", "found an integer 3"],
    );
    let text = base().replace("[interface]", "[interface]\nmtu = \"big\"");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.mtu", &["\"big\"", "expected an integer"]);
}

#[test]
fn cidrs_are_checked_and_host_bits_cleared() {
    let text = base().replace("\"100.64.0.3/32\", ", "\"100.64.0.300/32\", ");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "peer[1].allowed_ips[0]",
        &["\"100.64.0.300/32\"", "not an IP address", "expected"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\ndst = \"10.0.0.0/40\"\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].dst", &["\"10.0.0.0/40\"", "0..=32"]);
    // Host bits: cleared like wg does.
    let text = base().replace("\"100.64.0.2/32\"", "\"10.1.2.3/8\"");
    let c = load_str(&text, "/cfg/test.toml").unwrap();
    assert_eq!(c.peers[0].allowed_ips[0].to_string(), "10.0.0.0/8");
    let c = ok_with(&rule(
        "chain = \"forward\"\nsrc = \"192.168.1.77/24\"\naction = \"drop\"",
    ));
    assert_eq!(
        c.forward.rules[0].src.as_ref().unwrap().nets[0].to_string(),
        "192.168.1.0/24"
    );
    assert_eq!(c.forward.rules[0].family, Some(4));
}

#[test]
fn ports_ranges_and_lists() {
    let c = ok_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\ndport = [80, \"8000-8999\"]\nsport = \"!22\"\naction = \"accept\"",
    ));
    let r = &c.forward.rules[0];
    assert_eq!(
        r.dport.as_ref().unwrap().ranges,
        vec![(80, 80), (8000, 8999)]
    );
    let sp = r.sport.as_ref().unwrap();
    assert!(sp.negate);
    assert_eq!(sp.ranges, vec![(22, 22)]);

    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\ndport = [80, 70000]\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].dport[1]", &["70000", "0..=65535"]);
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"udp\"\ndport = \"9000-8000\"\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].dport", &["\"9000-8000\"", "empty", "expected"]);
}

#[test]
fn ports_need_tcp_or_udp() {
    let e = err_with(&rule(
        "chain = \"forward\"\ndport = 443\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].dport",
        &["443", "needs proto = \"tcp\" or \"udp\"", "not set"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"icmp\"\nsport = 1\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].sport", &["\"icmp\""]);
}

#[test]
fn protocols_by_name_and_number() {
    let c = ok_with(&rule(
        "chain = \"forward\"\nproto = 47\naction = \"accept\"",
    ));
    assert_eq!(c.forward.rules[0].proto, Some(47));
    let c = ok_with(&rule(
        "chain = \"forward\"\nproto = \"esp\"\naction = \"accept\"",
    ));
    assert_eq!(c.forward.rules[0].proto, Some(50));
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"tpc\"\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].proto",
        &["\"tpc\"", "unknown protocol", "tcp, udp"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = 256\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].proto", &["256", "0..=255"]);
}

#[test]
fn icmp_names_depend_on_the_family() {
    let c = ok_with(&rule("chain = \"forward\"\nproto = \"icmpv6\"\nicmp_type = \"echo-request\"\naction = \"accept\""));
    assert_eq!(c.forward.rules[0].icmp_type, Some(128));
    assert_eq!(c.forward.rules[0].family, Some(6));
    let c = ok_with(&rule("chain = \"forward\"\nproto = \"icmp\"\nicmp_type = \"echo-request\"\nicmp_code = 0\naction = \"accept\""));
    assert_eq!(c.forward.rules[0].icmp_type, Some(8));
    assert_eq!(c.forward.rules[0].icmp_code, Some(0));
    let e = err_with(&rule("chain = \"forward\"\nproto = \"icmp\"\nicmp_type = \"packet-too-big\"\naction = \"accept\""));
    assert_problem(
        &e,
        "rule[0].icmp_type",
        &["\"packet-too-big\"", "unknown ICMP type", "echo-request"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\nicmp_type = 8\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].icmp_type",
        &["needs proto = \"icmp\" or \"icmpv6\"", "\"tcp\""],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nicmp_code = 3\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].icmp_code", &["needs proto"]);
}

#[test]
fn tcp_flags_only_with_tcp() {
    let c = ok_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\ntcp_flags = \"S/SA\"\naction = \"accept\"",
    ));
    assert_eq!(c.forward.rules[0].tcp_flags, Some((0x12, 0x02)));
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"udp\"\ntcp_flags = \"S/SA\"\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].tcp_flags",
        &["\"S/SA\"", "needs proto = \"tcp\""],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"tcp\"\ntcp_flags = \"Q/S\"\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].tcp_flags", &["\"Q/S\"", "VALUE/MASK"]);
}

#[test]
fn unknown_zones_peers_groups_and_sets() {
    let e = err_with(&rule(
        "chain = \"forward\"\nfrom = \"tablet\"\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].from",
        &["\"tablet\"", "unknown", "laptop", "group:staff"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nto = [\"tun\", \"group:admins\"]\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].to[1]",
        &["\"group:admins\"", "no peer is in this group"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\ndst = \"@srvs\"\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].dst", &["\"@srvs\"", "unknown set", "@servers"]);
    let c = ok_with(&rule(
        "chain = \"forward\"\nfrom = \"peer:phone\"\nto = \"group:guests\"\naction = \"accept\"",
    ));
    let r = &c.forward.rules[0];
    assert!(r.ingress.as_ref().unwrap().zones.contains(ZoneId::peer(1)));
    assert!(r.egress.as_ref().unwrap().zones.contains(ZoneId::peer(1)));
    assert!(!r.egress.as_ref().unwrap().zones.contains(ZoneId::peer(0)));
}

#[test]
fn negation_applies_to_the_whole_list() {
    let c = ok_with(&rule("chain = \"forward\"\nfrom = \"!tun\"\ndst = [\"!@servers\", \"!10.0.0.0/8\"]\naction = \"accept\""));
    let r = &c.forward.rules[0];
    assert!(r.ingress.as_ref().unwrap().negate);
    assert!(r.ingress.as_ref().unwrap().zones.contains(ZoneId::TUN));
    let d = r.dst.as_ref().unwrap();
    assert!(d.negate);
    assert_eq!(d.nets.len(), 2);
    // A negated v4 list does not restrict the family.
    assert_eq!(r.family, None);
    let e = err_with(&rule(
        "chain = \"forward\"\nsrc = [\"!10.0.0.0/8\", \"192.168.0.0/16\"]\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].src", &["mixes negated", "on every entry"]);
    let e = err_with(&rule(
        "chain = \"forward\"\nfrom = \"!!tun\"\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].from", &["\"!tun\"", "unknown"]);
    let e = err_with(&rule("chain = \"forward\"\nsrc = []\naction = \"accept\""));
    assert_problem(&e, "rule[0].src", &["empty list matches nothing"]);
}

#[test]
fn peer_names_must_be_unique_and_not_reserved() {
    let text = base().replace("name = \"phone\"", "name = \"laptop\"");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "peer[1].name", &["\"laptop\"", "duplicate", "peer[0]"]);
    let text = base().replace("name = \"phone\"", "name = \"tun\"");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "peer[1].name", &["\"tun\"", "fixed zone"]);
    let text = base().replace("name = \"phone\"", "name = \"group:x\"");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "peer[1].name", &["\"group:x\"", "':'"]);
}

#[test]
fn public_keys_unique_valid_and_not_our_own() {
    let text = base().replace(K2, K1);
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "peer[1].public_key",
        &[K1, "peer[0] has the same public key"],
    );
    let text = base().replace(K2, "AAAA");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "peer[1].public_key",
        &["\"AAAA\"", "3 bytes, not 32", "base64"],
    );
    let own = parse::key_to_base64(&ok_with("").interface.public_key());
    let text = base().replace(K2, &own);
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "peer[1].public_key", &["gateway's own public key"]);
}

#[test]
fn private_keys_are_never_echoed() {
    let bad = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
    let text = base().replace(PRIV, bad);
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.private_key", &["30 bytes, not 32"]);
    assert!(!e.to_string().contains(bad));
    let c = ok_with("");
    assert!(!format!("{c:?}").contains(PRIV));
}

#[test]
fn identical_allowed_ips_in_two_peers_are_refused_nested_ones_allowed() {
    let text = base().replace("\"100.64.0.3/32\"", "\"100.64.0.2/32\"");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "peer[1].allowed_ips[0]",
        &[
            "100.64.0.2/32",
            "already in peer[0] (laptop)",
            "one peer only",
        ],
    );
    let c = ok_with(&format!(
        "\n[[peer]]\nname = \"upstream\"\npublic_key = \"{K3}\"\nendpoint = \"vpn.example.net:51820\"\nallowed_ips = [\"0.0.0.0/0\", \"::/0\"]\npersistent_keepalive = 25\n"
    ));
    let up = &c.peers[2];
    assert!(up.is_upstream());
    assert_eq!(
        up.endpoint.as_ref().unwrap().to_string(),
        "vpn.example.net:51820"
    );
    assert_eq!(up.persistent_keepalive, Some(25));
    assert!(c.summary().contains("upstream"));
}

#[test]
fn endpoints_and_keepalives() {
    let e = err_with(&format!(
        "\n[[peer]]\nname = \"x\"\npublic_key = \"{K3}\"\nendpoint = \"2001:db8::1:51820\"\npersistent_keepalive = 70000\n"
    ));
    assert_problem(
        &e,
        "peer[2].endpoint",
        &["\"2001:db8::1:51820\"", "brackets"],
    );
    assert_problem(&e, "peer[2].persistent_keepalive", &["70000", "0..=65535"]);
    let c = ok_with(&format!(
        "\n[[peer]]\nname = \"x\"\npublic_key = \"{K3}\"\nendpoint = \"[2001:db8::1]:51820\"\npersistent_keepalive = \"off\"\n"
    ));
    assert_eq!(c.peers[2].persistent_keepalive, None);
    assert!(c.peers[2]
        .endpoint
        .as_ref()
        .unwrap()
        .socket_addr()
        .is_some());
}

#[test]
fn interface_keys_required_and_exclusive() {
    let text = base().replace(&format!("private_key = \"{PRIV}\""), "");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "interface.private_key_file",
        &["missing required key", "genkey"],
    );
    let text = base().replace(
        &format!("private_key = \"{PRIV}\""),
        &format!("private_key = \"{PRIV}\"\nprivate_key_file = \"k\""),
    );
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(
        &e,
        "interface.private_key_file",
        &["both `private_key` and `private_key_file`"],
    );
    let e = load_str("[[peer]]\nname = \"a\"\n", "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface", &["missing required key"]);
    assert_problem(&e, "peer[0].public_key", &["missing required key"]);
}

#[test]
fn mtu_bounds_depend_on_ipv6() {
    let text = base().replace("[interface]", "[interface]\nmtu = 1000");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.mtu", &["1000", "1280..=65535", "RFC 8200"]);
    let text = base()
        .replace(", \"2001:db8:64::1/64\"", "")
        .replace("[interface]", "[interface]\nmtu = 1000");
    let c = load_str(&text, "/cfg/test.toml").unwrap();
    assert_eq!(c.interface.mtu, 1000);
    let text = base()
        .replace(", \"2001:db8:64::1/64\"", "")
        .replace("[interface]", "[interface]\nmtu = 500");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.mtu", &["576..=65535"]);
}

#[test]
fn rule_families_must_agree() {
    let e = err_with(&rule(
        "chain = \"forward\"\nsrc = \"10.0.0.0/8\"\ndst = \"@v6servers\"\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0]",
        &["can never match", "src is IPv4 only", "dst is IPv6 only"],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"icmp\"\nfamily = \"ipv6\"\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0]",
        &["can never match", "family = \"ipv6\"", "proto \"icmp\""],
    );
    let c = ok_with(&rule("chain = \"forward\"\nsrc = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nfamily = \"ipv6\"\naction = \"accept\""));
    assert_eq!(c.forward.rules[0].family, Some(6));
    let e = err_with(&rule(
        "chain = \"forward\"\nfamily = \"inet\"\naction = \"accept\"",
    ));
    assert_problem(&e, "rule[0].family", &["\"inet\"", "\"ipv4\" or \"ipv6\""]);
}

#[test]
fn actions_reject_types_and_policies() {
    let c = ok_with(&format!(
        "\n[chains.forward]\npolicy = \"reject\"\nreject_with = \"admin-prohibited\"\n{}",
        rule("chain = \"forward\"\nproto = \"tcp\"\naction = \"reject\"\nreject_with = \"tcp-reset\"\nlog = true")
    ));
    assert_eq!(
        c.forward.policy,
        Action::Reject(RejectWith::IcmpUnreachable(13))
    );
    assert_eq!(
        c.forward.rules[0].action,
        Action::Reject(RejectWith::TcpReset)
    );
    assert!(c.forward.rules[0].log);
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"udp\"\naction = \"reject\"\nreject_with = \"tcp-reset\"",
    ));
    assert_problem(
        &e,
        "rule[0].reject_with",
        &["\"tcp-reset\"", "needs proto = \"tcp\""],
    );
    let e = err_with(&rule(
        "chain = \"forward\"\naction = \"accept\"\nreject_with = \"port-unreachable\"",
    ));
    assert_problem(
        &e,
        "rule[0].reject_with",
        &["only applies to action = \"reject\""],
    );
    let e = err_with(&rule("chain = \"forward\"\naction = \"allow\""));
    assert_problem(
        &e,
        "rule[0].action",
        &["\"allow\"", "\"accept\", \"drop\" or \"reject\""],
    );
    let e = err_with(&rule("chain = \"prerouting\"\naction = \"accept\""));
    assert_problem(&e, "rule[0].chain", &["\"prerouting\"", "\"input\""]);
    let e = err_with(&rule("chain = \"forward\""));
    assert_problem(&e, "rule[0].action", &["missing required key"]);
    let e = err_with("\n[chains.input]\npolicy = \"maybe\"\n");
    assert_problem(&e, "chains.input.policy", &["\"maybe\""]);
}

#[test]
fn chains_keep_rule_order_and_default_names() {
    let c = ok_with(&format!(
        "{}{}{}",
        rule("chain = \"forward\"\nname = \"first\"\naction = \"accept\""),
        rule("chain = \"input\"\naction = \"drop\""),
        rule("chain = \"forward\"\naction = \"drop\"")
    ));
    assert_eq!(c.forward.rules.len(), 2);
    assert_eq!(c.forward.rules[0].name.as_deref(), Some("first"));
    assert_eq!(c.forward.rules[1].name.as_deref(), Some("rule[2]"));
    assert_eq!(c.input.rules[0].name.as_deref(), Some("rule[1]"));
}

#[test]
fn input_has_no_egress_output_has_no_ingress() {
    let e = err_with(&format!(
        "{}{}",
        rule("chain = \"input\"\nto = \"tun\"\naction = \"accept\""),
        rule("chain = \"output\"\nfrom = \"tun\"\naction = \"accept\"")
    ));
    assert_problem(&e, "rule[0].to", &["chain \"input\"", "expected no `to`"]);
    assert_problem(
        &e,
        "rule[1].from",
        &["chain \"output\"", "expected no `from`"],
    );
}

#[test]
fn states() {
    let c = ok_with(&rule(
        "chain = \"forward\"\nstate = [\"established\", \"related\"]\naction = \"accept\"",
    ));
    assert_eq!(
        c.forward.rules[0].ct_state,
        Some(crate::rules::model::CtStateMask(
            crate::rules::model::CtStateMask::ESTABLISHED
                | crate::rules::model::CtStateMask::RELATED
        ))
    );
    let e = err_with(&rule(
        "chain = \"forward\"\nstate = [\"new\", \"estabished\"]\naction = \"accept\"",
    ));
    assert_problem(
        &e,
        "rule[0].state[1]",
        &["\"estabished\"", "\"established\""],
    );
}

#[test]
fn durations_sizes_and_limits() {
    let c = ok_with(
        "\n[conntrack]\nmax_entries = 1000\ntcp_loose = true\n[conntrack.timeouts]\ntcp_established = \"1h30m\"\nudp_replied = 90\n[fragments]\nmax_bytes = \"1MiB\"\ntimeout = \"500ms\"\n[reject]\nrate_per_sec = 0\nburst = 5\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
    );
    assert_eq!(c.conntrack.max_entries, 1000);
    assert!(c.conntrack.tcp_loose);
    assert_eq!(c.conntrack.timeouts.tcp_established.as_secs(), 5400);
    assert_eq!(c.conntrack.timeouts.udp_replied.as_secs(), 90);
    assert_eq!(c.fragments.max_bytes, 1 << 20);
    assert_eq!(c.fragments.timeout.as_millis(), 500);
    assert_eq!(
        c.reject,
        RejectLimit {
            per_sec: 0,
            burst: 5
        }
    );
    assert_eq!(c.log.level, tracing::Level::DEBUG);
    assert_eq!(c.log.format, LogFormat::Json);

    let e = err_with("\n[conntrack.timeouts]\nicmp = \"5w\"\nother = 0\n[fragments]\nmax_bytes = 100\n[conntrack]\nmax_entries = 0\n");
    assert_problem(
        &e,
        "conntrack.timeouts.icmp",
        &["\"5w\"", "unknown unit `w`", "\"30s\""],
    );
    assert_problem(&e, "conntrack.timeouts.other", &["0", "above zero"]);
    assert_problem(&e, "fragments.max_bytes", &["100", "65535..="]);
    assert_problem(&e, "conntrack.max_entries", &["0", "1..=16777216"]);
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = err_with(&format!(
        "\n[log]\nlevel = \"loud\"\n{}{}",
        rule("chain = \"forward\"\nproto = \"tcp\"\ndport = 99999\naction = \"accept\""),
        rule("chain = \"forward\"\nfrom = \"nobody\"\naction = \"dorp\"")
    ));
    assert!(e.problems.len() >= 4, "{e}");
    for key in [
        "log.level",
        "rule[0].dport",
        "rule[1].from",
        "rule[1].action",
    ] {
        assert!(e.has_key(key), "missing {key} in {e}");
    }
    let shown = e.to_string();
    assert!(shown.starts_with(&format!(
        "invalid configuration: {} problems",
        e.problems.len()
    )));
    assert!(shown.contains("/cfg/test.toml: rule[0].dport: 99999 is invalid"));
}

#[test]
fn toml_syntax_errors_are_one_problem() {
    let e = load_str("[interface\nname = 1", "/cfg/test.toml").unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].key, "");
    assert_eq!(e.problems[0].file, "/cfg/test.toml");
}

#[test]
fn empty_sets_and_bad_set_names() {
    let e = err_with("empty = []\n");
    assert_problem(&e, "sets.empty", &["the set is empty"]);
}

#[cfg(unix)]
fn write_key(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "{text}").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[cfg(unix)]
#[test]
fn key_files_permissions_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "private.key", PRIV, 0o600);
    write_key(dir.path(), "phone.psk", K3, 0o644);
    let cfg = dir.path().join("gateway.toml");
    let text = base()
        .replace(
            &format!("private_key = \"{PRIV}\""),
            "private_key_file = \"private.key\"",
        )
        .replace(
            &format!("public_key = \"{K2}\""),
            &format!("public_key = \"{K2}\"\npreshared_key_file = \"phone.psk\""),
        );
    let origin = cfg.display().to_string();
    let e = load_str(&text, &origin).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    let p = &e.problems[0];
    assert_eq!(p.key, "peer[1].preshared_key_file");
    assert!(
        p.message
            .contains("readable by others (mode 0644); chmod 600 it"),
        "{p}"
    );
    assert!(p.message.contains("phone.psk"));

    write_key(dir.path(), "phone.psk", K3, 0o600);
    let c = load_str(&text, &origin).unwrap();
    assert_eq!(c.interface.private_key, parse::key(PRIV).unwrap());
    assert_eq!(c.peers[1].preshared_key, Some(parse::key(K3).unwrap()));

    let text = text.replace("\"private.key\"", "\"missing.key\"");
    let e = load_str(&text, &origin).unwrap_err();
    assert_eq!(e.problems[0].key, "interface.private_key_file");
    assert!(e.problems[0].message.contains("cannot open"));

    write_key(dir.path(), "private.key", "not a key", 0o600);
    let text = text.replace("\"missing.key\"", "\"private.key\"");
    let e = load_str(&text, &origin).unwrap_err();
    assert!(e.problems[0].message.contains("base64"), "{e}");
}

#[test]
fn environment_overrides_apply_and_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, base()).unwrap();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("UNRELATED".to_string(), "x".to_string())])
            .collect()
    };
    let c = load_with_env(
        &cfg,
        env(&[
            ("PORTCULLIS__INTERFACE__LISTEN_PORT", "51821"),
            (
                "PORTCULLIS__INTERFACE__ADDRESSES",
                "100.64.9.1/24, 2001:db8:9::1/64",
            ),
            ("PORTCULLIS__CONNTRACK__TCP_LOOSE", "true"),
            ("PORTCULLIS__CONNTRACK__TIMEOUTS__UDP_REPLIED", "3m"),
            ("PORTCULLIS__LOG__LEVEL", "warn"),
            ("PORTCULLIS_CONFIG", "/elsewhere.toml"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.interface.listen_port, 51821);
    assert_eq!(c.interface.addresses.len(), 2);
    assert_eq!(c.interface.addresses[0].to_string(), "100.64.9.1/24");
    assert!(c.conntrack.tcp_loose);
    assert_eq!(c.conntrack.timeouts.udp_replied.as_secs(), 180);
    assert_eq!(c.log.level, tracing::Level::WARN);

    let e = load_with_env(
        &cfg,
        env(&[
            ("PORTCULLIS__INTERFACE__LISTEN_PORT", "99999"),
            ("PORTCULLIS__INTERFACE__LISTEN_PROT", "1"),
        ]),
    )
    .unwrap_err();
    let p = e
        .problems
        .iter()
        .find(|p| p.key == "interface.listen_port")
        .unwrap();
    assert_eq!(
        p.file,
        "environment variable PORTCULLIS__INTERFACE__LISTEN_PORT"
    );
    assert!(
        p.message.contains("99999") && p.message.contains("0..=65535"),
        "{p}"
    );
    let p = e
        .problems
        .iter()
        .find(|p| p.key == "interface.listen_prot")
        .unwrap();
    assert_eq!(
        p.file,
        "environment variable PORTCULLIS__INTERFACE__LISTEN_PROT"
    );
    assert!(p.message.contains("did you mean `listen_port`?"));
}

#[test]
fn peers_and_rules_cannot_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, base()).unwrap();
    let e = load_with_env(
        &cfg,
        vec![("PORTCULLIS__PEER__0__NAME".to_string(), "x".to_string())],
    )
    .unwrap_err();
    let p = e.problems.iter().find(|p| p.key == "peer").unwrap();
    assert_eq!(p.file, "environment variable PORTCULLIS__PEER");
    assert!(
        p.message.contains("can't be set from the environment"),
        "{p}"
    );
}

#[test]
fn unreadable_file_is_one_problem() {
    let e = load(Path::new("/nonexistent/portcullis.toml")).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].message.contains("cannot read the file"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "chain",
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
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "\"forward\"",
        "\"input\"",
        "\"output\"",
        "\"tcp\"",
        "\"icmpv6\"",
        "\"icmp\"",
        "\"udp\"",
        "443",
        "-1",
        "70000",
        "\"8000-8999\"",
        "\"!22\"",
        "[]",
        "[1, \"2-3\"]",
        "\"laptop\"",
        "\"!tun\"",
        "\"group:staff\"",
        "\"@servers\"",
        "\"10.0.0.0/8\"",
        "\"2001:db8::/32\"",
        "\"S/SAFR\"",
        "\"echo-request\"",
        "[\"new\"]",
        "\"ipv6\"",
        "\"accept\"",
        "\"reject\"",
        "\"tcp-reset\"",
        "true",
        "1.5",
        "{ a = 1 }",
        "\"\"",
        "\"!\"",
        "\"@\"",
        "\"!@\"",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary text never panics the loader.
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = load_str(&s, "fuzz.toml");
        }

        /// Random rules never panic; an accepted config puts every rule in a
        /// chain, a refused one names at least one rule key.
        #[test]
        fn random_rules_validate_without_panics(
            rules in proptest::collection::vec(
                proptest::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..8), 1..4)
        ) {
            let mut text = base();
            for r in &rules {
                text.push_str("\n[[rule]]\n");
                let mut seen = std::collections::HashSet::new();
                for (k, v) in r {
                    if seen.insert(*k) {
                        text.push_str(&format!("{} = {}\n", KEYS[*k], VALUES[*v]));
                    }
                }
            }
            match load_str(&text, "fuzz.toml") {
                Ok(c) => {
                    let n = c.input.rules.len() + c.forward.rules.len() + c.output.rules.len();
                    prop_assert_eq!(n, rules.len());
                }
                Err(e) => {
                    prop_assert!(!e.problems.is_empty());
                    prop_assert!(e.problems.iter().all(|p| !p.message.is_empty()));
                    prop_assert!(e.problems.iter().any(|p| p.key.starts_with("rule[")), "{}", e);
                }
            }
        }
    }
}

#[test]
fn netstack_mode_and_section() {
    let text = base().replace("[interface]\n", "[interface]\nmode = \"netstack\"\n");
    let text = format!(
        r#"{text}
[netstack]
max_connections = 200
tcp_rx_buffer = "128KiB"
host_window = 65536
udp_idle_timeout = "2m"
dns_upstream = "203.0.113.53"
host_services = ["tcp/22", "udp/5353"]

[[netstack.forward]]
listen = "127.0.0.1:8022"
to = "100.64.0.2:22"

[[netstack.forward]]
proto = "udp"
listen = "127.0.0.1:5300"
to = "100.64.0.2:53"
max_flows = 64

[[netstack.forward]]
proto = "udp"
listen = "127.0.0.1:5301"
to = "100.64.0.2:53"
idle_timeout = "15s"
"#
    );
    let c = load_str(&text, "t.toml").unwrap();
    assert_eq!(c.interface.mode, Mode::Netstack);
    let n = &c.netstack;
    assert_eq!(n.max_connections, 200);
    assert_eq!(n.tcp_rx_buffer, 128 * 1024);
    assert_eq!(n.tcp_tx_buffer, 64 * 1024, "default kept");
    assert_eq!(n.host_window, 65536);
    assert_eq!(n.udp_idle_timeout, std::time::Duration::from_secs(120));
    assert_eq!(n.dns_upstream, Some("203.0.113.53:53".parse().unwrap()));
    use crate::netstack::Proto;
    assert_eq!(n.host_services, vec![(Proto::Tcp, 22), (Proto::Udp, 5353)]);
    assert_eq!(n.forwards.len(), 3);
    assert_eq!(n.forwards[0].proto, Proto::Tcp);
    assert_eq!(n.forwards[0].to, "100.64.0.2:22".parse().unwrap());
    assert_eq!(n.forwards[1].proto, Proto::Udp);
    assert_eq!(
        (n.forwards[1].max_flows, n.forwards[1].idle_timeout),
        (64, std::time::Duration::from_secs(120)),
        "idle_timeout defaults to udp_idle_timeout"
    );
    assert_eq!(
        (n.forwards[2].max_flows, n.forwards[2].idle_timeout),
        (1024, std::time::Duration::from_secs(15))
    );
    assert!(c.summary().contains("(netstack)"));
    assert!(crate::pipeline::PipelineConfig::from_config(&c).netstack);
}

#[test]
fn netstack_bad_values_name_their_keys() {
    let e = err_with(
        r#"
[netstack]
max_connections = 0
tcp_rx_buffer = "1KiB"
dns_upstream = "not-an-address"
host_services = ["tcp/0", "sctp/9"]
bogus = 1

[[netstack.forward]]
proto = "icmp"
listen = "nowhere"

[[netstack.forward]]
proto = "tcp"
listen = "127.0.0.1:1"
to = "100.64.0.2:1"
max_flows = 5

[[netstack.forward]]
proto = "udp"
listen = "127.0.0.1:2"
to = "100.64.0.2:2"
max_flows = 20000
idle_timeout = "0s"
"#,
    );
    assert_problem(&e, "netstack.max_connections", &["1"]);
    assert_problem(&e, "netstack.tcp_rx_buffer", &["3000"]);
    assert_problem(&e, "netstack.dns_upstream", &["203.0.113.2"]);
    assert_problem(&e, "netstack.host_services[0]", &["tcp/PORT"]);
    assert_problem(&e, "netstack.host_services[1]", &["tcp/PORT"]);
    assert_problem(&e, "netstack.bogus", &[]);
    assert_problem(&e, "netstack.forward[0].proto", &["tcp"]);
    assert_problem(&e, "netstack.forward[0].listen", &["127.0.0.1:8080"]);
    assert_problem(&e, "netstack.forward[0].to", &[]);
    assert_problem(&e, "netstack.forward[1].max_flows", &["udp"]);
    assert_problem(&e, "netstack.forward[2].max_flows", &["16384"]);
    assert_problem(&e, "netstack.forward[2].idle_timeout", &[]);
}

mod ids_section {
    use super::super::load_str;

    const BASE: &str = r#"
[interface]
addresses = ["100.64.0.1/24"]
private_key = "YNqHwpcAmVj0lVzPSt4oLXe4WLZ6b7P6XWgGjrmZb1Y="
"#;

    #[test]
    fn ids_loads_rules_with_vars_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rules"),
            "alert tcp $LAN any -> any $WEB (content:\"x\"; sid:1;)\nalert ftp any any -> any any (sid:2;)\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.rules"),
            "drop udp any any -> any 53 (content:\"y\"; sid:3;)\n",
        )
        .unwrap();
        let cfg_path = dir.path().join("gw.toml");
        let text = format!(
            "{BASE}\n[ids]\nenabled = true\nmode = \"prevent\"\nrule_files = [\"*.rules\"]\nstream_depth = \"1MiB\"\neve_log = \"eve.json\"\n[ids.vars]\nLAN = \"10.0.0.0/8\"\nWEB = \"[80,443]\"\n"
        );
        let c = load_str(&text, cfg_path.to_str().unwrap()).unwrap();
        assert!(c.ids.enabled);
        assert_eq!(c.ids.engine.mode, crate::ids::Mode::Prevent);
        assert_eq!(c.ids.rule_files.len(), 2);
        assert_eq!(c.ids.report.loaded, 2);
        assert_eq!(
            c.ids.report.skipped.get("unsupported protocol: ftp"),
            Some(&1)
        );
        assert_eq!(c.ids.engine.stream_depth, 1 << 20);
        assert_eq!(
            c.ids.eve_log.as_deref(),
            Some(dir.path().join("eve.json").as_path())
        );
        assert!(c.summary().contains("ids: prevent mode, 2 rule file(s)"));
        assert!(c.summary().contains("2 loaded, 1 skipped"));
    }

    #[test]
    fn ids_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.toml");
        let text = format!("{BASE}\n[ids]\nenabled = true\nmode = \"block\"\nrule_files = [\"nothing-*.rules\"]\nstream_depht = 5\n");
        let e = load_str(&text, p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ids.mode"), "{e}");
        assert!(
            e.contains("ids.rule_files[0]") && e.contains("no file matches"),
            "{e}"
        );
        assert!(e.contains("stream_depht"), "{e}");
    }
}

#[test]
fn l7_fields_parse_and_invalid_patterns_are_named() {
    let c = ok_with(&rule(
        "chain = \"forward\"\ntls_sni = [\"Example.NET.\", \"*.example.net\", \"~(a|b)\\\\.test\"]\nhttp_host = \"x.test\"\ndns_qname = [\"*.example.org\"]\naction = \"drop\"",
    ));
    let r = c.forward.rules.first().unwrap();
    let sni = r.tls_sni.as_ref().unwrap();
    assert_eq!(sni.0.len(), 3);
    assert!(sni.matches("example.net") && sni.matches("a.example.net") && sni.matches("b.test"));
    assert!(!sni.matches("c.test"));
    assert!(r.http_host.as_ref().unwrap().matches("x.test"));
    assert!(r.dns_qname.as_ref().unwrap().matches("a.example.org"));

    let e = err_with(&rule(
        "chain = \"forward\"\ntls_sni = [\"ok.test\", \"a*b.test\"]\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].tls_sni[1]", &["\"a*b.test\"", "leading `*.`"]);
    let e = err_with(&rule(
        "chain = \"forward\"\nhttp_host = \"~(unclosed\"\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].http_host", &["invalid regex"]);
    let e = err_with(&rule(
        "chain = \"forward\"\ndns_qname = []\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].dns_qname", &["empty list"]);
    let e = err_with(&rule(
        "chain = \"input\"\ntls_sni = \"a.test\"\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].tls_sni", &["chain = \"forward\""]);
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"udp\"\ntls_sni = \"a.test\"\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].tls_sni", &["proto = \"tcp\""]);
    let e = err_with(&rule(
        "chain = \"forward\"\nproto = \"icmp\"\ndns_qname = \"a.test\"\naction = \"drop\"",
    ));
    assert_problem(&e, "rule[0].dns_qname", &["\"udp\" or \"tcp\""]);
    let e = err_with(&rule("chain = \"forward\"\ntls_sni = 5\naction = \"drop\""));
    assert_problem(&e, "rule[0].tls_sni", &["string"]);
}

#[test]
fn udp_sockets_default_bounds_and_type() {
    let c = load_str(&base(), "/cfg/test.toml").unwrap();
    assert_eq!(c.interface.udp_sockets, 1, "default: one socket");
    let text = base().replace("[interface]", "[interface]\nudp_sockets = 3");
    assert_eq!(load_str(&text, "t").unwrap().interface.udp_sockets, 3);
    for bad in ["65", "-2", "true"] {
        let text = base().replace("[interface]", &format!("[interface]\nudp_sockets = {bad}"));
        let e = load_str(&text, "/cfg/test.toml").unwrap_err();
        assert_problem(&e, "interface.udp_sockets", &[]);
    }
}

#[test]
fn tun_queues_default_bounds_and_type() {
    let c = load_str(&base(), "/cfg/test.toml").unwrap();
    assert_eq!(c.interface.tun_queues, 1, "default: one queue");
    let text = base().replace("[interface]", "[interface]\ntun_queues = 4");
    assert_eq!(load_str(&text, "t").unwrap().interface.tun_queues, 4);
    let text = base().replace("[interface]", "[interface]\ntun_queues = 0");
    assert_eq!(load_str(&text, "t").unwrap().interface.tun_queues, 0);
    for bad in ["65", "-1", "\"two\""] {
        let text = base().replace("[interface]", &format!("[interface]\ntun_queues = {bad}"));
        let e = load_str(&text, "/cfg/test.toml").unwrap_err();
        assert_problem(&e, "interface.tun_queues", &[]);
    }
}

#[test]
fn crypto_threads_default_bounds_and_type() {
    let c = load_str(&base(), "/cfg/test.toml").unwrap();
    assert_eq!(c.interface.crypto_threads, 0, "default: one per core");
    let text = base().replace("[interface]", "[interface]\ncrypto_threads = 2");
    assert_eq!(load_str(&text, "t").unwrap().interface.crypto_threads, 2);
    let text = base().replace("[interface]", "[interface]\ncrypto_threads = 300");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.crypto_threads", &["300"]);
    let text = base().replace("[interface]", "[interface]\ncrypto_threads = -1");
    let e = load_str(&text, "/cfg/test.toml").unwrap_err();
    assert_problem(&e, "interface.crypto_threads", &["-1"]);
}
