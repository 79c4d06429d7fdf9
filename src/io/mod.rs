//! The IO shell: the TUN device, the WireGuard UDP socket, timers and signals
//! around the sans-IO core.
//!
//! [`run`] opens the TUN device and the UDP socket (as root), drops to the
//! configured user ([`privs`]), then runs one task on a current-thread tokio
//! runtime that owns the [`Pipeline`] and the [`WgDevice`] and `select!`s over:
//! - a TUN read: `pipeline.handle(pkt, tun)` -> verdict;
//! - a UDP datagram: `wg.handle_datagram` -> handshake replies go out, each
//!   decrypted packet goes to `pipeline.handle(pkt, peer zone)` -> verdict;
//! - a timer tick every [`TICK`]: `wg.update_timers`, and every second
//!   `pipeline.handle_timeout`;
//! - SIGINT / SIGTERM: leave the loop (logging the counters report); dropping
//!   the TUN fd removes the device;
//! - SIGUSR1: log the counters report (`Pipeline::report`).
//!
//! Verdicts: `Forward(tun)` writes to the TUN, `Forward(peer)` encrypts to that
//! peer (no session: held for the handshake or dropped and counted as
//! `kill_switch` — never sent anywhere else), `Drop`/`Reject` are counted by
//! [`DropReason::name`]; after every `handle`, `pipeline.poll_transmit` is
//! drained and each packet sent to its zone the same way (rejects travel back
//! through the tunnel they came from). No locks on the data path: one owner.
//!
//! Fail closed: the TUN device is not persistent, so when the process dies the
//! device, its addresses and its routes vanish; we configure no kernel
//! forwarding and touch no other interface, so no path around the gateway
//! exists while it is down.
//!
//! Logging (`tracing`): a startup line with the listen port and public key;
//! verdicts at debug; the first and every 2^n-th drop of each reason at info.

pub mod netstack;
pub mod privs;
pub mod tun;

use crate::pipeline::{Pipeline, PipelineConfig};
use crate::verdict::{DropReason, Verdict};
use crate::wg::keys::encode_key;
use crate::wg::{canonical, EncapStatus, WgConfig, WgDevice, WgOutput};
use crate::zone::ZoneId;
use anyhow::Context;
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often WireGuard timers run (boringtun's device: 250 ms).
pub const TICK: Duration = Duration::from_millis(250);
/// How often the pipeline's housekeeping runs.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Everything `portcullis run` needs, mapped from the validated config.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub tun_name: String,
    pub mtu: u16,
    /// The gateway's tunnel addresses (set on the TUN; prefixes become routes).
    pub addresses: Vec<IpNetwork>,
    pub wg: WgConfig,
    /// Switch to this user after opening the TUN and the socket (name or `uid:gid`).
    pub user: Option<String>,
    pub pipeline: PipelineConfig,
    /// TUN device or the userspace stack.
    pub mode: crate::config::Mode,
    pub netstack: crate::netstack::NetstackConfig,
}

/// Counters kept by the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub tun_rx: u64,
    pub tun_tx: u64,
    pub udp_rx: u64,
    pub udp_tx: u64,
    pub send_errors: u64,
    /// Drops and rejects by reason name (`kill_switch`, `spoofed_source`, ...).
    pub drops: BTreeMap<&'static str, u64>,
}

impl IoCounters {
    fn count_drop(&mut self, r: &DropReason, zone: ZoneId) {
        let n = self.drops.entry(r.name()).or_insert(0);
        *n += 1;
        if n.is_power_of_two() {
            tracing::info!(
                reason = r.name(),
                count = *n,
                ingress = zone.0,
                "packets dropped"
            );
        }
    }
}

/// Builds a current-thread runtime and runs the gateway until SIGINT/SIGTERM.
/// The TUN device and socket are opened and privileges dropped *before* the
/// runtime starts, so the drop applies to a single-threaded process.
pub fn run(settings: RunSettings) -> anyhow::Result<()> {
    let wg = WgDevice::new(settings.wg.clone()).context("WireGuard peers")?;
    let netstack_mode = settings.mode == crate::config::Mode::Netstack;
    let dev = if netstack_mode {
        None
    } else {
        Some(tun::open_tun(
            &settings.tun_name,
            settings.mtu,
            &settings.addresses,
        )?)
    };
    let (udp, dual) = tun::bind_udp(settings.wg.listen_port)?;
    let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
    match &settings.user {
        Some(u) => {
            let ids = privs::drop_privileges(u)
                .with_context(|| format!("refusing to run: dropping privileges to {u:?} failed"))?;
            tracing::info!(user = %u, uid = ids.uid, gid = ids.gid, "dropped privileges (no capabilities kept)");
        }
        None => {
            // SAFETY: no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                tracing::warn!("running as root: set interface.user to drop privileges");
            }
        }
    }
    tracing::info!(
        mode = if netstack_mode { "netstack" } else { "tun" },
        tun = %settings.tun_name,
        listen_port = port,
        dual_stack = dual,
        public_key = %encode_key(&wg.public_key()),
        peers = settings.wg.peers.len(),
        "portcullis running"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut hash_key = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut hash_key);
    let hk = (
        u64::from_le_bytes(hash_key[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(hash_key[8..].try_into().unwrap_or_default()),
    );
    let counters = rt.block_on(async move {
        let tun = match dev {
            Some(dev) => Some(::tun::AsyncDevice::new(dev).context("TUN async")?),
            None => None,
        };
        let udp = tokio::net::UdpSocket::from_std(udp).context("UDP async")?;
        let net = if netstack_mode {
            let locals = settings.addresses.iter().map(|n| n.ip()).collect();
            let nk = (
                hk.0.rotate_left(29) ^ 0x5bd1_e995,
                hk.1 ^ 0x27d4_eb2f_1656_67c5,
            );
            Some(
                netstack::NetShell::new(settings.netstack, locals, usize::from(settings.mtu), nk)
                    .await?,
            )
        } else {
            None
        };
        let pipeline = Pipeline::new(settings.pipeline, hk, Instant::now());
        let mut shell = Shell {
            tun,
            net,
            net_deadline: None,
            udp,
            dual,
            wg,
            pipeline,
            counters: IoCounters::default(),
            outs: Vec::new(),
        };
        shell.run_loop().await?;
        anyhow::Ok(shell.counters)
    })?;
    tracing::info!(?counters, "portcullis stopped");
    Ok(())
}

struct Shell {
    /// The TUN device (TUN mode).
    tun: Option<::tun::AsyncDevice>,
    /// The userspace stack and its host sockets (netstack mode).
    net: Option<netstack::NetShell>,
    /// When the netstack's timers want to run next.
    net_deadline: Option<Instant>,
    udp: tokio::net::UdpSocket,
    dual: bool,
    wg: WgDevice,
    pipeline: Pipeline,
    counters: IoCounters,
    outs: Vec<WgOutput>,
}

impl Shell {
    async fn run_loop(&mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sigusr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_housekeeping = Instant::now();
        let mut tun_buf = vec![0u8; crate::wg::MAX_PACKET];
        let mut udp_buf = vec![0u8; crate::wg::MAX_PACKET];
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = sigusr1.recv() => { self.log_report(); }
                r = tun_recv(&self.tun, &mut tun_buf) => {
                    let n = r.context("TUN read")?;
                    self.counters.tun_rx += 1;
                    if let Some(pkt) = tun_buf.get_mut(..n) {
                        self.on_tun_packet(pkt).await;
                    }
                }
                r = self.udp.recv_from(&mut udp_buf) => {
                    match r {
                        Ok((n, from)) => {
                            self.counters.udp_rx += 1;
                            if let Some(d) = udp_buf.get(..n) {
                                self.on_datagram(canonical(from), d).await;
                            }
                        }
                        // ICMP errors surface as recv errors on Linux (ECONNREFUSED): not fatal.
                        Err(e) => tracing::debug!(error = %e, "UDP receive"),
                    }
                }
                h = net_next(&mut self.net) => {
                    let now = Instant::now();
                    if let Some(net) = self.net.as_mut() {
                        match h {
                            netstack::NetInput::Host(id, input) => net.core.handle_host(id, input, now),
                            netstack::NetInput::Accept(to, s) => net.on_accept(to, s, now),
                        }
                    }
                    self.flush_outs(now).await;
                }
                _ = net_timer(self.net_deadline) => {
                    let now = Instant::now();
                    self.net_deadline = None;
                    if let Some(net) = self.net.as_mut() {
                        net.core.poll(now);
                    }
                    self.flush_outs(now).await;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.wg.update_timers(now, &mut self.outs);
                    if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                        self.pipeline.handle_timeout(now);
                        if let Some(net) = self.net.as_mut() {
                            net.core.handle_timeout(now);
                        }
                        last_housekeeping = now;
                        self.drain_transmits(now).await;
                    }
                    self.flush_outs(now).await;
                }
            }
        }
        self.log_report();
        Ok(())
    }

    /// Logs the pipeline's counters report (at shutdown and on SIGUSR1).
    fn log_report(&self) {
        for line in self.pipeline.report().lines() {
            tracing::info!(target: "portcullis::counters", "{line}");
        }
        tracing::info!(target: "portcullis::counters", "io: {:?}", self.counters);
        if let Some(net) = &self.net {
            tracing::info!(
                target: "portcullis::counters",
                "netstack: {} relayed flows, {:?}",
                net.core.connections(),
                net.core.stats()
            );
        }
    }

    async fn on_tun_packet(&mut self, pkt: &mut [u8]) {
        let now = Instant::now();
        let v = self.pipeline.handle(pkt, ZoneId::TUN, now);
        self.apply(v, ZoneId::TUN, pkt, now).await;
        self.drain_transmits(now).await;
        self.flush_outs(now).await;
    }

    async fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        let mut outs = std::mem::take(&mut self.outs);
        self.wg.handle_datagram(from, datagram, now, &mut outs);
        for o in outs.drain(..) {
            match o {
                WgOutput::Network { to, data } => self.send_udp(to, &data).await,
                WgOutput::Packet { zone, mut data } => {
                    let v = self.pipeline.handle(&mut data, zone, now);
                    self.apply(v, zone, &data, now).await;
                    self.drain_transmits(now).await;
                }
            }
        }
        // `outs` is drained; keep whatever the verdicts queued meanwhile.
        if self.outs.is_empty() {
            self.outs = outs;
        }
        self.flush_outs(now).await;
    }

    /// Carries out a verdict for a packet that entered from `ingress`.
    async fn apply(&mut self, v: Verdict, ingress: ZoneId, pkt: &[u8], now: Instant) {
        match v {
            Verdict::Forward(z) => self.send_to_zone(z, pkt, now).await,
            Verdict::Local | Verdict::Held => {
                tracing::debug!(ingress = ingress.0, verdict = ?v, len = pkt.len());
            }
            Verdict::Drop(r) | Verdict::Reject(r) => {
                tracing::debug!(ingress = ingress.0, verdict = ?v, len = pkt.len());
                self.counters.count_drop(&r, ingress);
            }
        }
    }

    async fn send_to_zone(&mut self, z: ZoneId, pkt: &[u8], now: Instant) {
        if z == ZoneId::TUN {
            let Some(tun) = &self.tun else {
                tracing::debug!("packet for the tun zone without a TUN device");
                return;
            };
            tracing::trace!(len = pkt.len(), "to tun");
            match tun.send(pkt).await {
                Ok(_) => self.counters.tun_tx += 1,
                Err(e) => {
                    self.counters.send_errors += 1;
                    tracing::debug!(error = %e, "TUN write");
                }
            }
        } else if let (ZoneId::HOST | ZoneId::LOCAL, Some(net)) = (z, self.net.as_mut()) {
            // Into the userspace stack; what it answers is drained by `drain_net`.
            net.core.handle_packet(pkt.to_vec(), now);
        } else if z.is_peer() {
            let st = self.wg.encapsulate(z, pkt, now, &mut self.outs);
            tracing::trace!(zone = z.0, status = ?st, len = pkt.len(), "to peer");
            match st {
                EncapStatus::Sent => {}
                EncapStatus::Queued => tracing::debug!(zone = z.0, "held for a handshake"),
                EncapStatus::KillSwitch => self.counters.count_drop(&DropReason::KillSwitch, z),
                EncapStatus::NoPeer | EncapStatus::TooBig => {
                    self.counters.count_drop(&DropReason::NoRoute, z)
                }
            }
        } else {
            // local/host zones have no consumer in this shell yet
            tracing::debug!(zone = z.0, "packet for a zone without a sink");
        }
    }

    async fn drain_transmits(&mut self, now: Instant) {
        while let Some(e) = self.pipeline.poll_event() {
            tracing::info!(target: "portcullis::rule", "{}", self.pipeline.event_line(&e));
        }
        while let Some(e) = self.pipeline.poll_nat_event() {
            tracing::info!(target: "portcullis::nat", "{}", self.pipeline.nat_event_line(&e));
        }
        while let Some(t) = self.pipeline.poll_transmit() {
            self.send_to_zone(t.zone, &t.packet, now).await;
        }
    }

    /// Netstack mode: hands the stack's host-socket work to the tasks and
    /// sends the packets it emits through the pipeline (entering from `host`
    /// or `local`), until nothing is left; then re-arms its timer.
    async fn drain_net(&mut self, now: Instant) {
        loop {
            let Some(net) = self.net.as_mut() else {
                return;
            };
            let mut any = net.dispatch();
            while let Some(mut t) = self.net.as_mut().and_then(|n| n.core.poll_transmit()) {
                any = true;
                let v = self.pipeline.handle(&mut t.packet, t.zone, now);
                self.apply(v, t.zone, &t.packet, now).await;
                self.drain_transmits(now).await;
            }
            if !any {
                break;
            }
        }
        if let Some(net) = self.net.as_mut() {
            // At least once a second (idle timeouts), sooner for smoltcp's timers.
            let cap = now + HOUSEKEEPING;
            self.net_deadline = Some(net.core.poll_at(now).map_or(cap, |t| t.min(cap)));
        }
    }

    async fn flush_outs(&mut self, now: Instant) {
        self.drain_net(now).await;
        while !self.outs.is_empty() {
            let mut outs = std::mem::take(&mut self.outs);
            for o in outs.drain(..) {
                match o {
                    WgOutput::Network { to, data } => self.send_udp(to, &data).await,
                    WgOutput::Packet { zone, mut data } => {
                        let v = self.pipeline.handle(&mut data, zone, now);
                        self.apply(v, zone, &data, now).await;
                    }
                }
            }
            if self.outs.is_empty() {
                self.outs = outs;
                break;
            }
        }
    }

    async fn send_udp(&mut self, to: SocketAddr, data: &[u8]) {
        let to = match (to, self.dual) {
            (SocketAddr::V4(a), true) => {
                SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            (a, _) => a,
        };
        match self.udp.send_to(data, to).await {
            Ok(_) => self.counters.udp_tx += 1,
            Err(e) => {
                self.counters.send_errors += 1;
                tracing::debug!(%to, error = %e, "UDP send");
            }
        }
    }
}

impl RunSettings {
    /// Maps a validated config to the shell's settings, resolving peer
    /// endpoints given as DNS names (the only IO here).
    pub fn from_config(c: &crate::config::Config) -> anyhow::Result<RunSettings> {
        use std::net::ToSocketAddrs;
        let mut peers = Vec::with_capacity(c.peers.len());
        for p in &c.peers {
            let endpoint = match &p.endpoint {
                None => None,
                Some(e) => match e.socket_addr() {
                    Some(a) => Some(a),
                    None => Some(
                        (e.host.as_str(), e.port)
                            .to_socket_addrs()
                            .with_context(|| format!("peer {}: resolving endpoint {e}", p.name))?
                            .next()
                            .with_context(|| {
                                format!("peer {}: endpoint {e} has no address", p.name)
                            })?,
                    ),
                },
            };
            peers.push(crate::wg::WgPeer {
                zone: p.zone,
                name: p.name.clone(),
                public_key: p.public_key,
                preshared_key: p.preshared_key,
                endpoint,
                persistent_keepalive: p.persistent_keepalive,
            });
        }
        Ok(RunSettings {
            tun_name: c.interface.name.clone(),
            mtu: c.interface.mtu,
            addresses: c.interface.addresses.clone(),
            wg: WgConfig {
                private_key: c.interface.private_key,
                listen_port: c.interface.listen_port,
                peers,
            },
            user: c.interface.user.clone(),
            pipeline: PipelineConfig::from_config(c),
            mode: c.interface.mode,
            netstack: c.netstack.clone(),
        })
    }
}

/// A TUN read, or never (netstack mode).
async fn tun_recv(tun: &Option<::tun::AsyncDevice>, buf: &mut [u8]) -> std::io::Result<usize> {
    match tun {
        Some(t) => t.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// The next host-side happening, or never (TUN mode).
async fn net_next(net: &mut Option<netstack::NetShell>) -> netstack::NetInput {
    match net {
        Some(n) => n.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until the netstack's deadline, or forever without one.
async fn net_timer(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
