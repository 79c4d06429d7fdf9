//! `portcullis import` and `portcullis peer-config` end to end: a wg-quick
//! file imports into a config that `check` accepts, and the client file
//! printed for a peer names the gateway's public key and the peer's addresses.

use std::process::{Command, Output};

const GW_PRIV: &str = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY=";
const LAPTOP_PUB: &str = "5/zOzBtScQIc2BXfE39Hxy5mAThmIJSSb188efYBVVo=";
const PHONE_PUB: &str = "76Ty/4Ta2LnheofckEucwILo0SKEb90uSGI3S0Gc6ZA=";
const PSK: &str = "EuEnIn6KiiZfm3LcBOa6QypiB/afq2/Xcn57q2TXGzc=";

fn portcullis(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run portcullis")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn import_then_check_then_peer_config() {
    let dir = tempfile::tempdir().unwrap();
    let wgq = dir.path().join("wg7.conf");
    std::fs::write(
        &wgq,
        format!(
            "[Interface]\nPrivateKey = {GW_PRIV}\nListenPort = 51820\nAddress = 100.64.0.1/24, 2001:db8:64::1/64\nMTU = 1420\nDNS = 192.0.2.53\n\n\
             [Peer]\n# Name = laptop\nPublicKey = {LAPTOP_PUB}\nAllowedIPs = 100.64.0.2/32, 2001:db8:64::2/128\nPersistentKeepalive = 25\n\n\
             [Peer]\nPublicKey = {PHONE_PUB}\nPresharedKey = {PSK}\nAllowedIPs = 100.64.0.3/32\nEndpoint = 198.51.100.7:51820\n"
        ),
    )
    .unwrap();
    let out = portcullis(&["import", wgq.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    assert!(toml.contains("name = \"wg7\""), "{toml}");
    assert!(toml.contains("name = \"laptop\""), "{toml}");
    // DNS has no meaning for the gateway: noted, not silently dropped
    assert!(
        text(&out.stderr).to_lowercase().contains("dns"),
        "{}",
        text(&out.stderr)
    );

    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let c = cfg.to_str().unwrap();
    let out = portcullis(&["check", "-c", c]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "imported config must validate: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("peers: 2"),
        "{}",
        text(&out.stdout)
    );

    let out = portcullis(&[
        "peer-config",
        "-c",
        c,
        "laptop",
        "--endpoint",
        "203.0.113.1:51820",
        "--keepalive",
        "25",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let client = text(&out.stdout);
    let gw_pub = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), GW_PRIV.as_bytes()).unwrap();
        text(&child.wait_with_output().unwrap().stdout)
            .trim()
            .to_string()
    };
    assert!(
        client.contains("[Interface]") && client.contains("[Peer]"),
        "{client}"
    );
    assert!(
        client.contains(&format!("PublicKey = {gw_pub}")),
        "{client}"
    );
    assert!(client.contains("100.64.0.2/32"), "{client}");
    assert!(client.contains("Endpoint = 203.0.113.1:51820"), "{client}");
    assert!(client.contains("100.64.0.0/24"), "{client}");

    let out = portcullis(&["peer-config", "-c", c, "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no peer named"),
        "{}",
        text(&out.stderr)
    );
}
