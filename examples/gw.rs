//! A minimal gateway for manual end-to-end tests of the WireGuard layer and
//! the IO shell, before `portcullis run` is wired to the full config loader.
//!
//! Usage: `gw CONFIG.toml [--kernel-answers]`
//!
//! Reads the `[interface]` / `[[peer]]` subset written by `portcullis import`
//! (plus `interface.user` and `interface.private_key_file`), accepts every
//! packet (empty chains, policy accept) and runs `portcullis::io::run`.
//! `--kernel-answers` leaves the gateway's own addresses out of the pipeline's
//! local set, so the kernel answers pings to the TUN address (the interim
//! pipeline consumes `local` packets without answering).

use anyhow::Context;
use ipnetwork::IpNetwork;
use portcullis::io::RunSettings;
use portcullis::pipeline::PipelineConfig;
use portcullis::rules::model::{Action, ChainDef};
use portcullis::wg::keys::{decode_key, read_key_file};
use portcullis::wg::{WgConfig, WgPeer};
use portcullis::zone::{ZoneId, ZoneTable};
use serde::Deserialize;
use std::net::ToSocketAddrs;

#[derive(Deserialize)]
struct File {
    interface: Iface,
    #[serde(default)]
    peer: Vec<Peer>,
}

#[derive(Deserialize)]
struct Iface {
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    mtu: Option<u16>,
    listen_port: Option<u16>,
    private_key: Option<String>,
    private_key_file: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize)]
struct Peer {
    name: String,
    public_key: String,
    preshared_key: Option<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    endpoint: Option<String>,
    persistent_keepalive: Option<u16>,
    #[serde(default)]
    groups: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: gw CONFIG.toml [--kernel-answers]")?;
    let kernel_answers = args.any(|a| a == "--kernel-answers");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let f: File = toml::from_str(&text).with_context(|| path.clone())?;

    let private_key = match (&f.interface.private_key, &f.interface.private_key_file) {
        (Some(k), _) => decode_key(k)?,
        (None, Some(p)) => read_key_file(p.as_ref())?,
        _ => anyhow::bail!("interface.private_key or private_key_file needed"),
    };
    let addresses: Vec<IpNetwork> = f
        .interface
        .addresses
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut peers = Vec::new();
    let mut routes = Vec::new();
    let mut names = Vec::new();
    for (i, p) in f.peer.iter().enumerate() {
        let zone = ZoneId::peer(i);
        let endpoint = match &p.endpoint {
            Some(e) => Some(
                e.to_socket_addrs()?
                    .next()
                    .with_context(|| format!("peer {}: endpoint {e}", p.name))?,
            ),
            None => None,
        };
        peers.push(WgPeer {
            zone,
            name: p.name.clone(),
            public_key: decode_key(&p.public_key)?,
            preshared_key: p.preshared_key.as_deref().map(decode_key).transpose()?,
            endpoint,
            persistent_keepalive: p.persistent_keepalive,
        });
        let nets: Vec<IpNetwork> = p
            .allowed_ips
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        routes.push((zone, nets));
        names.push((p.name.clone(), p.groups.clone()));
    }
    let accept = ChainDef {
        rules: vec![],
        policy: Action::Accept,
    };
    let pipeline = PipelineConfig {
        zones: ZoneTable::new(names),
        peer_routes: routes,
        local_addrs: if kernel_answers {
            vec![]
        } else {
            addresses.iter().map(|a| a.ip()).collect()
        },
        input: accept.clone(),
        forward: accept.clone(),
        output: accept,
        conntrack: Default::default(),
        fragments: Default::default(),
        reply_per_sec: 100,
        reply_burst: 50,
    };
    portcullis::io::run(RunSettings {
        tun_name: f.interface.name,
        mtu: f.interface.mtu.unwrap_or(1420),
        addresses,
        wg: WgConfig {
            private_key,
            listen_port: f.interface.listen_port.unwrap_or(51820),
            peers,
        },
        user: f.interface.user,
        pipeline,
    })
}
