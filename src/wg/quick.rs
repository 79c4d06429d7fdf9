//! wg-quick files: import into our TOML, export a client's config.
//!
//! [`import_wg_quick`] reads a `wg-quick(8)` / `wg(8)` configuration
//! (`[Interface]` and `[Peer]` sections, `Key = Value` lines, `#` comments,
//! keys case-insensitive, list values comma-separated and repeatable, as in
//! wireguard-tools' `config.c`) and writes the equivalent portcullis TOML:
//!
//! ```toml
//! [interface]
//! name = "wg0"
//! addresses = ["100.64.0.1/24"]
//! mtu = 1420
//! listen_port = 51820
//! private_key = "..."
//!
//! [[peer]]
//! name = "laptop"
//! public_key = "..."
//! preshared_key = "..."       # if present
//! allowed_ips = ["100.64.0.2/32"]
//! endpoint = "198.51.100.2:51820"  # if present
//! persistent_keepalive = 25   # if present
//! groups = []
//! ```
//!
//! Peers are named from a `# Name = x` comment inside their section, else
//! from the comment line right above `[Peer]` (the style of wg-easy and many
//! hand-written files), else `peer1`, `peer2`, ... Names are reduced to the
//! config's name alphabet (letters, digits, `_ - .`, at most 64) and made
//! unique. wg-quick-only settings (`DNS`, `Table`, `PreUp`/`PostUp`/`PreDown`/
//! `PostDown`, `SaveConfig`, `FwMark`) have no meaning here: they are dropped
//! and reported in [`Imported::notes`] (and as comments in the TOML).
//! Malformed keys, addresses, ports or endpoints are errors naming the line.
//!
//! [`peer_config`] writes the reverse: a ready wg-quick file for one client of
//! the gateway.

use crate::wg::keys::{decode_key, encode_key};
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::fmt::Write as _;

/// A wg-quick file that could not be imported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuickError {
    #[error("line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("no [Interface] section")]
    NoInterface,
    #[error("[Interface] has no PrivateKey (portcullis needs the gateway's private key)")]
    NoPrivateKey,
    #[error("[Peer] ending at line {line} has no PublicKey")]
    NoPublicKey { line: usize },
}

/// The result of an import: our TOML plus what was dropped or renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct OutInterface {
    name: String,
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_port: Option<u16>,
    private_key: String,
}

#[derive(Debug, Serialize)]
struct OutPeer {
    name: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    preshared_key: Option<String>,
    allowed_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_keepalive: Option<u16>,
    groups: Vec<String>,
}

#[derive(Debug, Serialize)]
struct OutFile {
    interface: OutInterface,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peer: Vec<OutPeer>,
}

#[derive(Default)]
struct RawPeer {
    comment_name: Option<String>,
    above_name: Option<String>,
    public_key: Option<String>,
    preshared_key: Option<String>,
    allowed_ips: Vec<String>,
    endpoint: Option<String>,
    keepalive: Option<u16>,
    end_line: usize,
}

enum Section {
    None,
    Interface,
    Peer,
}

fn err(line: usize, msg: impl Into<String>) -> QuickError {
    QuickError::Line {
        line,
        msg: msg.into(),
    }
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn check_key(line: usize, what: &str, v: &str) -> Result<String, QuickError> {
    decode_key(v)
        .map(|k| encode_key(&k))
        .map_err(|e| err(line, format!("{what}: {e}")))
}

fn cidr(line: usize, what: &str, v: &str) -> Result<String, QuickError> {
    // wg accepts a bare address as /32 or /128
    let n: IpNetwork = v
        .parse()
        .map_err(|e| err(line, format!("{what} {v:?}: {e}")))?;
    Ok(n.to_string())
}

/// `host:port`, `[v6]:port`: the port must parse; the host is kept as written
/// (wg resolves names at load time, so do we).
fn endpoint(line: usize, v: &str) -> Result<String, QuickError> {
    let bad = || {
        err(
            line,
            format!("Endpoint {v:?}: expected host:port or [ipv6]:port"),
        )
    };
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(bad());
    }
    Ok(v.to_string())
}

/// Reduces a free-text name to `[A-Za-z0-9_.-]{1,64}`.
fn sanitize(s: &str) -> Option<String> {
    let mut out: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// Imports a wg-quick file. `ifname` becomes `interface.name` (usually the
/// file's stem: `wg0` for `wg0.conf`).
pub fn import_wg_quick(text: &str, ifname: &str) -> Result<Imported, QuickError> {
    let mut notes = Vec::new();
    let mut section = Section::None;
    let mut seen_interface = false;
    let mut private_key = None;
    let mut listen_port = None;
    let mut mtu = None;
    let mut addresses = Vec::new();
    let mut peers: Vec<RawPeer> = Vec::new();
    let mut last_comment: Option<String> = None;

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim().trim_start_matches('#').trim();
            if let (Section::Peer, Some(p)) = (&section, peers.last_mut()) {
                if let Some((k, v)) = c.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("name") {
                        p.comment_name = sanitize(v);
                    }
                }
            }
            last_comment = Some(c.to_string());
            continue;
        }
        if line.starts_with('[') {
            match line.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    section = Section::Interface;
                    seen_interface = true;
                }
                "[peer]" => {
                    section = Section::Peer;
                    let above = last_comment.as_deref().map(|c| {
                        c.split_once('=')
                            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("name"))
                            .map_or(c, |(_, v)| v)
                    });
                    peers.push(RawPeer {
                        above_name: above.and_then(sanitize),
                        ..RawPeer::default()
                    });
                }
                _ => return Err(err(n, format!("unknown section {line}"))),
            }
            last_comment = None;
            continue;
        }
        last_comment = None;
        // strip trailing comments
        let line = line.split_once('#').map_or(line, |(a, _)| a).trim();
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err(n, format!("expected Key = Value, got {line:?}")))?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match section {
            Section::None => return Err(err(n, "setting outside of [Interface] or [Peer]")),
            Section::Interface => match k.as_str() {
                "privatekey" => private_key = Some(check_key(n, "PrivateKey", v)?),
                "listenport" => {
                    listen_port = Some(
                        v.parse::<u16>()
                            .map_err(|_| err(n, format!("ListenPort {v:?}: expected 0-65535")))?,
                    )
                }
                "mtu" => {
                    mtu = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|m| *m >= 576)
                            .ok_or_else(|| err(n, format!("MTU {v:?}: expected 576-65535")))?,
                    )
                }
                "address" => {
                    for a in list(v) {
                        addresses.push(cidr(n, "Address", a)?);
                    }
                }
                "dns" | "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig"
                | "fwmark" => notes.push(format!(
                    "line {n}: {k} is a wg-quick/host setting with no meaning in portcullis; ignored"
                )),
                _ => return Err(err(n, format!("unknown [Interface] key {k:?}"))),
            },
            Section::Peer => {
                let Some(p) = peers.last_mut() else {
                    return Err(err(n, "setting outside of a section"));
                };
                p.end_line = n;
                match k.as_str() {
                    "publickey" => p.public_key = Some(check_key(n, "PublicKey", v)?),
                    "presharedkey" => p.preshared_key = Some(check_key(n, "PresharedKey", v)?),
                    "allowedips" => {
                        for a in list(v) {
                            p.allowed_ips.push(cidr(n, "AllowedIPs", a)?);
                        }
                    }
                    "endpoint" => p.endpoint = Some(endpoint(n, v)?),
                    "persistentkeepalive" => {
                        p.keepalive = if v.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            let k = v.parse::<u16>().map_err(|_| {
                                err(n, format!("PersistentKeepalive {v:?}: expected off or 0-65535"))
                            })?;
                            (k > 0).then_some(k)
                        }
                    }
                    _ => return Err(err(n, format!("unknown [Peer] key {k:?}"))),
                }
            }
        }
    }
    if !seen_interface {
        return Err(QuickError::NoInterface);
    }
    let private_key = private_key.ok_or(QuickError::NoPrivateKey)?;

    let mut used: Vec<String> = Vec::new();
    let mut out_peers = Vec::new();
    for (i, p) in peers.into_iter().enumerate() {
        let public_key = p
            .public_key
            .ok_or(QuickError::NoPublicKey { line: p.end_line })?;
        let mut name = p
            .comment_name
            .or(p.above_name)
            .unwrap_or_else(|| format!("peer{}", i + 1));
        if matches!(name.as_str(), "tun" | "local" | "host") {
            notes.push(format!(
                "peer {name}: renamed to peer-{name} (a reserved zone name)"
            ));
            name = format!("peer-{name}");
        }
        if used.contains(&name) {
            let base = name.clone();
            let mut k = 2;
            while used.contains(&name) {
                name = format!("{base}-{k}");
                k += 1;
            }
            notes.push(format!("peer {base}: name used twice, renamed to {name}"));
        }
        used.push(name.clone());
        out_peers.push(OutPeer {
            name,
            public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips,
            endpoint: p.endpoint,
            persistent_keepalive: p.keepalive,
            groups: vec![],
        });
    }
    let file = OutFile {
        interface: OutInterface {
            name: ifname.to_string(),
            addresses,
            mtu,
            listen_port,
            private_key,
        },
        peer: out_peers,
    };
    let body = toml::to_string(&file).map_err(|e| err(0, e.to_string()))?;
    let mut toml = String::from("# Imported from a wg-quick file by `portcullis import`.\n");
    for note in &notes {
        let _ = writeln!(toml, "# note: {note}");
    }
    toml.push('\n');
    toml.push_str(&body);
    Ok(Imported { toml, notes })
}

/// What [`peer_config`] needs to write one client's wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The client's name (a comment line).
    pub name: String,
    /// The client's private key, if the gateway knows it (usually it does
    /// not: a placeholder line is written instead).
    pub private_key: Option<[u8; 32]>,
    /// The client's tunnel addresses: its AllowedIPs on the gateway.
    pub addresses: Vec<IpNetwork>,
    pub mtu: Option<u16>,
    /// DNS servers for the client, if any.
    pub dns: Vec<std::net::IpAddr>,
    pub gateway_public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    /// `host:port` clients use to reach the gateway (None: a placeholder).
    pub gateway_endpoint: Option<String>,
    /// The prefixes the client routes into the tunnel (the tunnel prefixes,
    /// or `0.0.0.0/0, ::/0` for full tunnel).
    pub allowed_ips: Vec<IpNetwork>,
    pub persistent_keepalive: Option<u16>,
}

/// The networks of the gateway's interface addresses (`100.64.0.1/24` ->
/// `100.64.0.0/24`): the default AllowedIPs for a client's `[Peer]`.
pub fn tunnel_prefixes(addresses: &[IpNetwork]) -> Vec<IpNetwork> {
    let mut v: Vec<IpNetwork> = addresses
        .iter()
        .filter_map(|a| IpNetwork::new(a.network(), a.prefix()).ok())
        .collect();
    v.dedup();
    v
}

/// Placeholder written when the gateway does not know the client's key.
pub const PRIVATE_KEY_PLACEHOLDER: &str =
    "<the client's private key: `portcullis genkey` or `wg genkey`>";

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `portcullis peer-config NAME`: a wg-quick file for one client.
pub fn peer_config(c: &ClientConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}: wg-quick config generated by portcullis", c.name);
    let _ = writeln!(s, "[Interface]");
    match &c.private_key {
        Some(k) => {
            let _ = writeln!(s, "PrivateKey = {}", encode_key(k));
        }
        None => {
            let _ = writeln!(
                s,
                "# Replace the placeholder with the private key matching this peer's public key."
            );
            let _ = writeln!(s, "PrivateKey = {PRIVATE_KEY_PLACEHOLDER}");
        }
    }
    if !c.addresses.is_empty() {
        let _ = writeln!(s, "Address = {}", join(&c.addresses));
    }
    if !c.dns.is_empty() {
        let _ = writeln!(s, "DNS = {}", join(&c.dns));
    }
    if let Some(m) = c.mtu {
        let _ = writeln!(s, "MTU = {m}");
    }
    let _ = writeln!(s, "\n[Peer]");
    let _ = writeln!(s, "# Name = portcullis-gateway");
    let _ = writeln!(s, "PublicKey = {}", encode_key(&c.gateway_public_key));
    if let Some(k) = &c.preshared_key {
        let _ = writeln!(s, "PresharedKey = {}", encode_key(k));
    }
    match &c.gateway_endpoint {
        Some(e) => {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        None => {
            let _ = writeln!(
                s,
                "# Endpoint = <the gateway's public address>:<listen port>"
            );
        }
    }
    let _ = writeln!(s, "AllowedIPs = {}", join(&c.allowed_ips));
    if let Some(k) = c.persistent_keepalive.filter(|k| *k > 0) {
        let _ = writeln!(s, "PersistentKeepalive = {k}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::keys::{genkey, pubkey};

    fn sample() -> (String, String, String, String) {
        let gw = genkey();
        let a = pubkey(&genkey()).unwrap();
        let b = pubkey(&genkey()).unwrap();
        let psk = crate::wg::keys::genpsk();
        (gw, a, b, psk)
    }

    #[test]
    fn imports_interface_and_peers() {
        let (gw, a, b, psk) = sample();
        let text = format!(
            "# my server\n[Interface]\nPrivateKey = {gw}\nListenPort = 51820\n\
             Address = 100.64.0.1/24, 2001:db8::1/64\nMTU = 1420\nDNS = 1.1.1.1\n\
             PostUp = iptables -A FORWARD -j ACCEPT\n\n\
             # laptop\n[Peer]\nPublicKey = {a}\nPresharedKey = {psk}\n\
             AllowedIPs = 100.64.0.2/32\nAllowedIPs = 2001:db8::2/128\n\
             Endpoint = [2001:db8::99]:51820\nPersistentKeepalive = 25\n\n\
             [peer]\n# Name = Phone of Ann\npublickey = {b}\nallowedips = 100.64.0.3/32 # inline\n"
        );
        let imp = import_wg_quick(&text, "wg0").unwrap();
        assert_eq!(imp.notes.len(), 2, "{:?}", imp.notes);
        let v: toml::Value = toml::from_str(&imp.toml).unwrap();
        let i = &v["interface"];
        assert_eq!(i["name"].as_str(), Some("wg0"));
        assert_eq!(i["private_key"].as_str(), Some(gw.as_str()));
        assert_eq!(i["listen_port"].as_integer(), Some(51820));
        assert_eq!(i["mtu"].as_integer(), Some(1420));
        assert_eq!(i["addresses"].as_array().unwrap().len(), 2);
        let peers = v["peer"].as_array().unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0]["name"].as_str(), Some("laptop"));
        assert_eq!(peers[0]["public_key"].as_str(), Some(a.as_str()));
        assert_eq!(peers[0]["preshared_key"].as_str(), Some(psk.as_str()));
        assert_eq!(peers[0]["endpoint"].as_str(), Some("[2001:db8::99]:51820"));
        assert_eq!(peers[0]["persistent_keepalive"].as_integer(), Some(25));
        assert_eq!(
            peers[0]["allowed_ips"].as_array().unwrap()[1].as_str(),
            Some("2001:db8::2/128")
        );
        assert_eq!(peers[1]["name"].as_str(), Some("Phone-of-Ann"));
        assert_eq!(
            peers[1]["allowed_ips"].as_array().unwrap()[0].as_str(),
            Some("100.64.0.3/32")
        );
        assert!(peers[1].get("endpoint").is_none());
        assert!(peers[1]["groups"].as_array().unwrap().is_empty());
    }

    #[test]
    fn default_and_unique_names() {
        let (gw, a, b, _) = sample();
        let c = pubkey(&genkey()).unwrap();
        let text = format!(
            "[Interface]\nPrivateKey = {gw}\n[Peer]\nPublicKey = {a}\n\
             # tun\n[Peer]\nPublicKey = {b}\n# x\n[Peer]\n# name = x\nPublicKey = {c}\n"
        );
        let imp = import_wg_quick(&text, "pc0").unwrap();
        let v: toml::Value = toml::from_str(&imp.toml).unwrap();
        let names: Vec<_> = v["peer"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["peer1", "peer-tun", "x"]);
        // a duplicate
        let text = format!(
            "[Interface]\nPrivateKey = {gw}\n# x\n[Peer]\nPublicKey = {a}\n# x\n[Peer]\nPublicKey = {b}\n"
        );
        let v: toml::Value = toml::from_str(&import_wg_quick(&text, "pc0").unwrap().toml).unwrap();
        assert_eq!(v["peer"][1]["name"].as_str(), Some("x-2"));
    }

    #[test]
    fn errors_name_the_line() {
        let (gw, a, _, _) = sample();
        let cases = [
            ("[Interface]\nPrivateKey = nope\n".to_string(), 2),
            (format!("[Interface]\nPrivateKey = {gw}\nListenPort = 70000\n"), 3),
            (format!("[Interface]\nPrivateKey = {gw}\n[Peer]\nPublicKey = {a}\nAllowedIPs = 10.0.0.0/33\n"), 5),
            (format!("[Interface]\nPrivateKey = {gw}\n[Peer]\nPublicKey = {a}\nEndpoint = 2001:db8::1:51820\n"), 5),
            (format!("[Interface]\nPrivateKey = {gw}\nFoo = 1\n"), 3),
            ("ListenPort = 1\n".to_string(), 1),
            ("[Interface]\n[Bogus]\n".to_string(), 2),
        ];
        for (text, line) in cases {
            match import_wg_quick(&text, "wg0") {
                Err(QuickError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(import_wg_quick("", "wg0"), Err(QuickError::NoInterface));
        assert_eq!(
            import_wg_quick("[Interface]\nListenPort = 1\n", "wg0"),
            Err(QuickError::NoPrivateKey)
        );
        assert!(matches!(
            import_wg_quick(
                &format!("[Interface]\nPrivateKey = {gw}\n[Peer]\nAllowedIPs = 0.0.0.0/0\n"),
                "wg0"
            ),
            Err(QuickError::NoPublicKey { .. })
        ));
    }

    #[test]
    fn peer_config_round_trips_through_import() {
        let gw_priv = genkey();
        let gw_pub = decode_key(&pubkey(&gw_priv).unwrap()).unwrap();
        let client_priv = decode_key(&genkey()).unwrap();
        let cfg = ClientConfig {
            name: "laptop".into(),
            private_key: Some(client_priv),
            addresses: vec![
                "100.64.0.2/32".parse().unwrap(),
                "2001:db8::2/128".parse().unwrap(),
            ],
            mtu: Some(1420),
            dns: vec![],
            gateway_public_key: gw_pub,
            preshared_key: Some([7; 32]),
            gateway_endpoint: Some("198.51.100.1:51820".into()),
            allowed_ips: tunnel_prefixes(&[
                "100.64.0.1/24".parse().unwrap(),
                "2001:db8::1/64".parse().unwrap(),
            ]),
            persistent_keepalive: Some(25),
        };
        let text = peer_config(&cfg);
        assert!(
            text.contains("AllowedIPs = 100.64.0.0/24, 2001:db8::/64"),
            "{text}"
        );
        let imp = import_wg_quick(&text, "wg0").unwrap();
        assert!(imp.notes.is_empty());
        let v: toml::Value = toml::from_str(&imp.toml).unwrap();
        assert_eq!(
            v["interface"]["private_key"].as_str(),
            Some(encode_key(&client_priv).as_str())
        );
        assert_eq!(v["interface"]["mtu"].as_integer(), Some(1420));
        let addrs: Vec<_> = v["interface"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(addrs, vec!["100.64.0.2/32", "2001:db8::2/128"]);
        let p = &v["peer"][0];
        assert_eq!(p["public_key"].as_str(), Some(encode_key(&gw_pub).as_str()));
        assert_eq!(
            p["preshared_key"].as_str(),
            Some(encode_key(&[7; 32]).as_str())
        );
        assert_eq!(p["endpoint"].as_str(), Some("198.51.100.1:51820"));
        assert_eq!(p["persistent_keepalive"].as_integer(), Some(25));
        assert_eq!(p["name"].as_str(), Some("portcullis-gateway"));

        // without the client's key: a placeholder, which import refuses clearly
        let text = peer_config(&ClientConfig {
            private_key: None,
            gateway_endpoint: None,
            ..cfg
        });
        assert!(text.contains(PRIVATE_KEY_PLACEHOLDER));
        assert!(text.contains("# Endpoint = "));
        assert!(matches!(
            import_wg_quick(&text, "wg0"),
            Err(QuickError::Line { .. })
        ));
    }

    #[test]
    fn full_tunnel_client_with_dns() {
        let (gw, a, _, _) = sample();
        let text = peer_config(&ClientConfig {
            name: "n".into(),
            private_key: decode_key(&gw).ok(),
            addresses: vec![],
            mtu: None,
            dns: vec!["100.64.0.1".parse().unwrap()],
            gateway_public_key: decode_key(&a).unwrap(),
            preshared_key: None,
            gateway_endpoint: Some("vpn.example.org:51820".into()),
            allowed_ips: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            persistent_keepalive: None,
        });
        let imp = import_wg_quick(&text, "wg0").unwrap();
        assert_eq!(imp.notes.len(), 1, "DNS is noted");
        let v: toml::Value = toml::from_str(&imp.toml).unwrap();
        assert_eq!(
            v["peer"][0]["endpoint"].as_str(),
            Some("vpn.example.org:51820")
        );
        assert_eq!(v["peer"][0]["allowed_ips"].as_array().unwrap().len(), 2);
    }
}
