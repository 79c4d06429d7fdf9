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
//! - SIGUSR1: log the counters report (`Pipeline::report`);
//! - SIGHUP or `ctl reload`: hot reload ([`reload`]): the config is read and
//!   compiled in a blocking task, then swapped in between two packets;
//! - control requests ([`control`]) and metrics scrapes ([`metrics`]): small
//!   tasks read the sockets and hand complete requests to the loop, which
//!   answers from the state it owns (no locks, no shared state).
//!
//! The data path is batched (`batched`, [`batch`], [`offload`]): one TUN
//! readiness event reads up to 64 packets, one UDP readiness event calls
//! `recvmmsg` (UDP GRO on), datagrams are decrypted into one buffer and
//! encrypted straight into a send arena that is flushed with `sendmmsg` (UDP
//! GSO) at the end of every loop turn; TUN writes are queued and coalesced
//! into TCP and UDP super-packets (IFF_VNET_HDR; UDP where the kernel took
//! USO) and written at the same point.
//! `PORTCULLIS_NO_GRO`, `PORTCULLIS_NO_GSO`, `PORTCULLIS_NO_TUN_OFFLOAD` turn
//! each offload off (comparisons, broken drivers). `PORTCULLIS_BENCH_BYPASS=1`
//! skips the pipeline altogether (benchmarks only: [`bypass`]).
//! `[interface] tun_queues` > 1 opens a multi-queue TUN: the loop reads every
//! queue and each queue is written by its own thread, flows hashed to queues
//! ([`tun_writer`]). `[interface] udp_sockets` > 1 binds the WireGuard port
//! several times (`SO_REUSEPORT`), each socket read by its own thread that
//! hands its `recvmmsg` batches to the loop ([`udp_readers`]).
//! `[interface] crypto_threads` > 1 spreads
//! the WireGuard crypto of a batch over threads by peer
//! ([`crate::wg::parallel`]); the pipeline stays on the loop. Netstack mode has no TUN
//! (the TUN arm of the loop never fires, nothing is queued for it) but uses
//! the same batched UDP path.
//!
//! The clock is read once per receive batch (a TUN batch, a `recvmmsg`
//! call): every packet of the batch gets that `now`. Per packet the loop also
//! measures the pipeline latency (receive, i.e. the batch's read, to verdict
//! carried out: one clock read per packet), writes the packet to the pcap capture
//! when it qualifies ([`capture`]), and feeds drops, rule log events and flow
//! ends to the rate-limited event stream ([`events`]).
//! - IDS alerts (`Pipeline::poll_ids_alert`) are written as EVE JSON lines to
//!   `ids.eve_log` (opened for append before privileges are dropped), with
//!   wall-clock timestamps mapped from the core's `Instant`s.
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

pub mod batch;
mod batched;
pub mod bypass;
pub mod capture;
pub mod control;
pub mod events;
pub mod health;
pub mod metrics;
pub mod netstack;
pub mod offload;
pub mod privs;
pub mod reload;
pub mod tun;
pub mod tun_writer;
pub mod udp_readers;

use crate::pipeline::{Pipeline, PipelineConfig};
use crate::verdict::{DropReason, Verdict};
use crate::wg::keys::encode_key;
use crate::wg::parallel::{CryptoPool, RxBatch, TxBatch};
use crate::wg::{EncapStatus, WgConfig, WgDevice, WgOutput};
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
    /// `interface.crypto_threads` (0: one per core, 1: inline).
    pub crypto_threads: u16,
    /// `interface.tun_queues` (1: one queue, written by the loop; 0: one
    /// per core; more: a multi-queue TUN with a writer thread per queue).
    pub tun_queues: u16,
    /// `interface.udp_sockets` (1: one socket, read by the loop; 0: one per
    /// core; more: `SO_REUSEPORT` sockets, each read by its own thread).
    pub udp_sockets: u16,
    pub pipeline: PipelineConfig,
    /// TUN device or the userspace stack.
    pub mode: crate::config::Mode,
    pub netstack: crate::netstack::NetstackConfig,
    /// The config file (for reloads); `None`: reload unavailable.
    pub config_path: Option<std::path::PathBuf>,
    pub ops: crate::config::ops::Ops,
    /// Each peer's AllowedIPs, by name (for `ctl peers`).
    pub peer_ips: Vec<(String, Vec<IpNetwork>)>,
    pub log: crate::config::LogConfig,
    /// The IDS rules and settings, when `[ids]` is enabled.
    pub ids: Option<(Vec<crate::ids::rule::Signature>, crate::ids::IdsConfig)>,
    /// EVE JSON alert file (opened before privileges are dropped, appended to).
    pub eve_log: Option<std::path::PathBuf>,
    /// The blocklist, anomaly detectors and `ids.block_on_drop`.
    pub protect: crate::blocklist::Protection,
}

/// Counters kept by the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub tun_rx: u64,
    pub tun_tx: u64,
    pub udp_rx: u64,
    pub udp_tx: u64,
    pub send_errors: u64,
    /// `recvmmsg` / `sendmmsg` calls and TUN readiness batches (the
    /// datagrams and packets per call are `udp_rx / udp_rx_calls`, ...).
    pub udp_rx_calls: u64,
    pub tun_tx_writes: u64,
    /// Segments cut from super-packets read from the TUN (TSO, USO).
    pub tun_rx_segments: u64,
    /// UDP super-packets read from the TUN (USO).
    pub tun_rx_uso: u64,
    /// UDP super-packets written to the TUN (decrypted datagrams coalesced).
    pub tun_tx_uso: u64,
    pub udp_tx_calls: u64,
    pub tun_rx_batches: u64,
    /// Receive rounds decrypted by peer on the crypto threads, and the data
    /// messages they carried (`wg::parallel`; 0 with `crypto_threads = 1`).
    pub udp_rx_parallel_rounds: u64,
    pub udp_rx_parallel: u64,
    /// The same for encryption: flushes whose packets were encrypted by peer
    /// on the crypto threads, and those packets.
    pub udp_tx_parallel_rounds: u64,
    pub udp_tx_parallel: u64,
    /// Packets read from each TUN queue (`interface.tun_queues`).
    pub tun_rx_by_queue: Vec<u64>,
    /// Datagrams received on each UDP socket (`interface.udp_sockets`).
    pub udp_rx_by_socket: Vec<u64>,
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
pub fn run(mut settings: RunSettings) -> anyhow::Result<()> {
    let wg = WgDevice::new(settings.wg.clone()).context("WireGuard peers")?;
    let netstack_mode = settings.mode == crate::config::Mode::Netstack;
    let bypass = bypass::Bypass::from_env(&settings, netstack_mode);
    // netstack mode has no TUN (and so no vnet header)
    let tun_vnet = !netstack_mode && batched::want_tun_offload();
    // writer threads need the vnet header (their batches are coalesced)
    let queues = match (netstack_mode, tun_vnet, settings.tun_queues) {
        (true, ..) => 0,
        (_, false, _) | (_, _, 1) => 1,
        (_, _, 0) => std::thread::available_parallelism().map_or(1, usize::from),
        (.., n) => usize::from(n),
    };
    if !netstack_mode && !tun_vnet && settings.tun_queues != 1 {
        tracing::warn!("interface.tun_queues needs the TUN offloads (PORTCULLIS_NO_TUN_OFFLOAD is set): one queue");
    }
    let (dev, more_queues) = if netstack_mode {
        (None, Vec::new())
    } else {
        let (d, more) = tun::open_tun_queues(
            &settings.tun_name,
            settings.mtu,
            &settings.addresses,
            tun_vnet,
            queues,
        )?;
        (Some(d), more)
    };
    let sockets = match settings.udp_sockets {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => usize::from(n),
    };
    let (mut udp_group, dual) = tun::bind_udp_group(settings.wg.listen_port, sockets)?;
    if udp_group.is_empty() {
        anyhow::bail!("no UDP socket bound");
    }
    let udp = udp_group.remove(0);
    let eve = match &settings.eve_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening the EVE log {}", p.display()))?,
        )),
        None => None,
    };
    let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
    // Sockets that need privileges (a root-owned directory) come before the drop.
    let ctl = match &settings.ops.control.socket {
        Some(path) => match control::bind(path, settings.ops.control.group.as_deref()) {
            Ok(l) => {
                tracing::info!(socket = %path.display(), "control socket ready");
                Some(l)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "control socket unavailable; running without it");
                None
            }
        },
        None => None,
    };
    let metrics_listener = match settings.ops.metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            tracing::info!(%addr, "metrics endpoint ready (GET /metrics)");
            Some(l)
        }
        None => None,
    };
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
        // batched IO (see `batched`): the TUN fd under our own readiness,
        // GRO/GSO on the UDP socket when the kernel has them (both modes)
        // UDP super-packets on TUN writes: where the kernel took USO (>= 6.2)
        let mut tun_uso = false;
        let tun = match dev {
            Some(dev) => {
                if tun_vnet && std::env::var_os("PORTCULLIS_NO_TSO").is_none() {
                    use std::os::fd::AsRawFd;
                    let uso = std::env::var_os("PORTCULLIS_NO_USO").is_none();
                    match offload::enable_offloads(dev.as_raw_fd(), uso) {
                        Ok(true) => {
                            tun_uso = true;
                            tracing::debug!("TUN offloads: checksum, TSO, USO");
                        }
                        Ok(false) => tracing::info!("TUN offloads: checksum, TSO (no USO: kernel < 6.2 or PORTCULLIS_NO_USO)"),
                        Err(e) => tracing::warn!(error = %e, "TUN TSO offload refused: reading single packets"),
                    }
                }
                Some(batched::async_tun(dev)?)
            }
            None => None,
        };
        let tun_coalesce = offload::Coalesce {
            tcp: tun_vnet,
            udp: tun_vnet && tun_uso,
        };
        let mut tun_out = tun_writer::TunOut::inline(tun_coalesce);
        if let (Some(t), false) = (&tun, more_queues.is_empty()) {
            use std::os::fd::AsRawFd;
            let fds: Vec<_> = std::iter::once(t.get_ref().as_raw_fd())
                .chain(more_queues.iter().map(AsRawFd::as_raw_fd))
                .collect();
            let hasher = crate::conntrack::FlowHasher::new(hk.0 ^ 0x7475_6e71, hk.1);
            match tun_writer::TunOut::start(&fds, tun_coalesce, hasher) {
                Ok(o) => tun_out = o,
                Err(e) => tracing::warn!(error = %e, "TUN writer threads unavailable: the loop writes every queue"),
            }
        }
        let tun_more = more_queues
            .into_iter()
            .map(batched::async_queue)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (gro, gso) = batched::udp_offloads(&udp);
        // more than one socket: every one (the first through a `dup`, as
        // the loop sends from it) is read by a thread of its own
        let udp_readers = if udp_group.is_empty() {
            None
        } else {
            let mut all = vec![udp.try_clone().context("UDP socket dup")?];
            all.append(&mut udp_group);
            if gro {
                // the first has it already (`udp_offloads`)
                for s in all.iter().skip(1) {
                    use std::os::fd::AsRawFd;
                    batch::enable_gro(s.as_raw_fd());
                }
            }
            match udp_readers::UdpReaders::start(all, gro, crate::wg::MAX_PACKET) {
                Ok(r) => Some(r),
                Err(e) => anyhow::bail!("UDP reader threads: {e}"),
            }
        };
        tracing::info!(
            udp_gro = gro,
            udp_gso = gso,
            tun_vnet_hdr = tun_vnet,
            tun_queues = if tun.is_some() { 1 + tun_more.len() } else { 0 },
            tun_writer_threads = tun_out.threads(),
            udp_sockets = udp_readers.as_ref().map_or(1, udp_readers::UdpReaders::threads),
            "batched IO"
        );
        let udp = tokio::net::UdpSocket::from_std(udp).context("UDP async")?;
        let net = if netstack_mode {
            let locals = settings.addresses.iter().map(|n| n.ip()).collect();
            let nk = (
                hk.0.rotate_left(29) ^ 0x5bd1_e995,
                hk.1 ^ 0x27d4_eb2f_1656_67c5,
            );
            Some(
                netstack::NetShell::new(
                    settings.netstack.clone(),
                    locals,
                    usize::from(settings.mtu),
                    nk,
                )
                .await?,
            )
        } else {
            None
        };
        let mut pipeline = Pipeline::new(settings.pipeline.clone(), hk, Instant::now());
        pipeline.set_shaper(&settings.ops.limits);
        pipeline.set_protection(&settings.protect, Instant::now());
        let events = events::EventSink::new(&settings.ops.events);
        pipeline.set_flow_log(events.wants_flows());
        let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
        if let Some(l) = ctl {
            let l = tokio::net::UnixListener::from_std(l).context("control socket async")?;
            tokio::spawn(control::serve(l, ctl_tx.clone()));
        }
        let (scrape_tx, scrape_rx) = tokio::sync::mpsc::channel(16);
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l).context("metrics socket async")?;
            tokio::spawn(metrics::serve(l, scrape_tx.clone()));
        }
        if let Some((sigs, cfg)) = settings.ids.take() {
            let n = sigs.len();
            pipeline.set_ids(Some(crate::ids::Ids::new(sigs, cfg, (hk.1, hk.0))));
            tracing::info!(rules = n, "IDS enabled");
        }
        let (health, health_rx) = health::Checker::new();
        // after the privilege drop: the workers run as the configured user
        let crypto = match CryptoPool::new(usize::from(settings.crypto_threads)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "crypto threads unavailable: decrypting inline");
                CryptoPool::inline()
            }
        };
        tracing::info!(crypto_threads = crypto.threads(), "WireGuard decryption by peer");
        let mut shell = Shell {
            health,
            health_rx,
            tun,
            tun_more,
            net,
            net_deadline: None,
            udp,
            udp_readers,
            dual,
            wg,
            pipeline,
            bypass,
            counters: IoCounters::default(),
            outs: Vec::new(),
            tx: batch::UdpTx::new(gso),
            rx_gro: gro,
            tun_vnet,
            tun_out,
            dec: vec![0; crate::wg::BUF_LEN],
            crypto,
            rxb: RxBatch::default(),
            txb: TxBatch::default(),
            capture: capture::RotatingPcap::new(&settings.ops.capture),
            events,
            latency: crate::telemetry::histogram::Histogram::default(),
            started: Instant::now(),
            reloads_ok: 0,
            reloads_failed: 0,
            reload_task: None,
            reload_waiters: Vec::new(),
            settings,
            ctl_rx,
            scrape_rx,
            _keep: (ctl_tx, scrape_tx),
            eve,
            clock: (Instant::now(), std::time::SystemTime::now()),
        };
        shell.run_loop().await?;
        anyhow::Ok(shell.counters)
    })?;
    tracing::info!(?counters, "portcullis stopped");
    Ok(())
}

struct Shell {
    /// The TUN device (TUN mode), under our own readiness (see `batched`).
    tun: Option<tokio::io::unix::AsyncFd<::tun::Device>>,
    /// The TUN's further queues (`interface.tun_queues` > 1), read as `tun`.
    tun_more: Vec<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    /// The userspace stack and its host sockets (netstack mode).
    net: Option<netstack::NetShell>,
    /// When the netstack's timers want to run next.
    net_deadline: Option<Instant>,
    /// Backend health checks (TCP connects) and their results.
    health: health::Checker,
    health_rx: tokio::sync::mpsc::Receiver<health::HealthResult>,
    udp: tokio::net::UdpSocket,
    /// With `interface.udp_sockets` > 1: the threads that read the sockets
    /// (the loop then never reads `udp`, only sends from it).
    udp_readers: Option<udp_readers::UdpReaders>,
    dual: bool,
    wg: WgDevice,
    pipeline: Pipeline,
    /// Benchmarks only: skip the pipeline (`PORTCULLIS_BENCH_BYPASS=1`).
    bypass: Option<bypass::Bypass>,
    counters: IoCounters,
    outs: Vec<WgOutput>,
    /// Datagrams collected during one batch, sent by `flush_tx`.
    tx: batch::UdpTx,
    rx_gro: bool,
    /// The TUN has IFF_VNET_HDR: writes are queued in `tun_out` (coalesced,
    /// by queue; written by the queues' threads when there are several).
    tun_vnet: bool,
    tun_out: tun_writer::TunOut,
    /// Decryption buffer (no allocation per packet).
    dec: Vec<u8>,
    /// Crypto threads (`interface.crypto_threads`) and the state of one
    /// receive round decrypted by peer on them (`wg::parallel`).
    crypto: CryptoPool,
    rxb: RxBatch,
    /// Packets for peers waiting to be encrypted by peer at the flush.
    txb: TxBatch,
    capture: Option<capture::RotatingPcap>,
    events: events::EventSink,
    latency: crate::telemetry::histogram::Histogram,
    started: Instant,
    reloads_ok: u64,
    reloads_failed: u64,
    reload_task: Option<tokio::task::JoinHandle<Result<reload::Loaded, Vec<String>>>>,
    reload_waiters: Vec<tokio::sync::oneshot::Sender<String>>,
    /// The settings in force (updated by reloads).
    settings: RunSettings,
    ctl_rx: tokio::sync::mpsc::Receiver<control::CtlMsg>,
    scrape_rx: tokio::sync::mpsc::Receiver<metrics::Scrape>,
    /// Senders kept so the receivers pend (instead of closing) without sockets.
    _keep: (
        tokio::sync::mpsc::Sender<control::CtlMsg>,
        tokio::sync::mpsc::Sender<metrics::Scrape>,
    ),
    eve: Option<std::io::BufWriter<std::fs::File>>,
    /// Maps the core's `Instant`s to wall-clock time for EVE timestamps.
    clock: (Instant, std::time::SystemTime),
}

async fn wait_reload(
    t: &mut Option<tokio::task::JoinHandle<Result<reload::Loaded, Vec<String>>>>,
) -> Result<reload::Loaded, Vec<String>> {
    match t.as_mut() {
        Some(h) => {
            let r = h
                .await
                .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]));
            *t = None;
            r
        }
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn run_loop(&mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sigusr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_housekeeping = Instant::now();
        let mut tun_pool = batched::TunPool::new(self.settings.mtu, self.tun_vnet);
        let mut tun_next = 0;
        self.counters.tun_rx_by_queue = vec![0; 1 + self.tun_more.len()];
        self.counters.udp_rx_by_socket = vec![
            0;
            self.udp_readers
                .as_ref()
                .map_or(1, udp_readers::UdpReaders::threads)
        ];
        let mut rx = batch::UdpRx::new(self.rx_gro, crate::wg::MAX_PACKET);
        self.restart_health_checks();
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = sigusr1.recv() => { self.log_report(); }
                _ = sighup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.start_reload(None);
                }
                r = wait_reload(&mut self.reload_task) => { self.finish_reload(r); }
                Some(m) = self.ctl_rx.recv() => { self.on_ctl(m); }
                Some(h) = self.health_rx.recv() => { self.on_health(h); }
                Some(sc) = self.scrape_rx.recv() => {
                    let _ = sc.reply.send(self.render_metrics());
                }
                q = tun_readable(&self.tun, &self.tun_more, tun_next) => {
                    let q = q.context("TUN wait")?;
                    // the next wait starts with the next queue (fairness)
                    tun_next = q + 1;
                    self.read_tun_queue(q, &mut tun_pool).await.context("TUN read")?;
                    self.on_tun_batch(&mut tun_pool).await;
                }
                r = udp_readable(&self.udp, self.udp_readers.is_none()) => {
                    r.context("UDP wait")?;
                    self.on_udp_ready(&mut rx).await;
                }
                Some(b) = udp_batch(&mut self.udp_readers) => {
                    self.on_udp_batch(b).await;
                }
                h = net_next(&mut self.net) => {
                    let now = Instant::now();
                    if let Some(net) = self.net.as_mut() {
                        net.handle(h, now);
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
                    self.events.tick(now);
                    if let Some(c) = self.capture.as_mut() {
                        c.flush();
                    }
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
            if !self.tx.is_empty() {
                self.flush_tx().await;
            }
            if !self.tun_out.is_empty() {
                self.flush_tun();
            }
        }
        self.log_report();
        self.events.tick(Instant::now());
        if let Some(c) = self.capture.as_mut() {
            c.flush();
        }
        Ok(())
    }

    fn restart_health_checks(&mut self) {
        let targets = self.pipeline.nat().health_targets();
        if !targets.is_empty() || !self.health.is_empty() {
            tracing::info!(
                backends = targets.len(),
                "backend health checks (TCP connect)"
            );
        }
        self.health.restart(targets);
    }

    fn on_health(&mut self, h: health::HealthResult) {
        if h.generation != self.health.generation() {
            return;
        }
        if let Some(up) = self
            .pipeline
            .nat_mut()
            .report_health(h.rule, h.backend, h.ok)
        {
            let rule = self.pipeline.nat().rule_name(h.rule).to_string();
            if up {
                tracing::info!(rule = %rule, backend = %h.addr, "backend up: health check passes");
            } else {
                tracing::warn!(rule = %rule, backend = %h.addr, "backend down: health check fails; no new flows");
            }
        }
    }

    fn io_map(&self) -> std::collections::BTreeMap<String, u64> {
        let c = &self.counters;
        let mut m: std::collections::BTreeMap<String, u64> = [
            ("tun_rx", c.tun_rx),
            ("tun_tx", c.tun_tx),
            ("udp_rx", c.udp_rx),
            ("udp_tx", c.udp_tx),
            ("send_errors", c.send_errors),
            ("udp_rx_calls", c.udp_rx_calls),
            ("tun_tx_writes", c.tun_tx_writes),
            ("tun_rx_segments", c.tun_rx_segments),
            ("tun_rx_uso", c.tun_rx_uso),
            ("tun_tx_uso", c.tun_tx_uso),
            ("udp_tx_calls", c.udp_tx_calls),
            ("tun_rx_batches", c.tun_rx_batches),
            ("udp_rx_parallel_rounds", c.udp_rx_parallel_rounds),
            ("udp_rx_parallel", c.udp_rx_parallel),
            ("udp_tx_parallel_rounds", c.udp_tx_parallel_rounds),
            ("udp_tx_parallel", c.udp_tx_parallel),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if c.tun_rx_by_queue.len() > 1 {
            // per queue of a multi-queue TUN: packets read, packets queued
            // for writing (`tun_writer`)
            for (q, n) in c.tun_rx_by_queue.iter().enumerate() {
                m.insert(format!("tun_rx_q{q}"), *n);
            }
            for (q, n) in self.tun_out.queued.iter().enumerate() {
                m.insert(format!("tun_tx_q{q}"), *n);
            }
        }
        if let Some(r) = &self.udp_readers {
            // per socket of the SO_REUSEPORT group: datagrams received;
            // receive errors the reader threads met
            for (s, n) in c.udp_rx_by_socket.iter().enumerate() {
                m.insert(format!("udp_rx_s{s}"), *n);
            }
            m.insert("udp_rx_errors".to_string(), r.errors());
        }
        for (k, v) in &c.drops {
            m.insert(format!("drop_{k}"), *v);
        }
        m
    }

    fn on_ctl(&mut self, m: control::CtlMsg) {
        let peers = self.wg.stats();
        let ips = self.settings.peer_ips.clone();
        let allowed = move |name: &str| -> Vec<String> {
            ips.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.iter().map(ToString::to_string).collect())
                .unwrap_or_default()
        };
        let status = crate::control::StatusBase {
            config: self
                .settings
                .config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            interface: self.settings.tun_name.clone(),
            listen_port: self.udp.local_addr().map(|a| a.port()).unwrap_or(0),
            public_key: encode_key(&self.wg.public_key()),
            uptime_secs: self.started.elapsed().as_secs(),
            reloads: self.reloads_ok,
        };
        let io = self.io_map();
        let mut view = crate::control::View {
            pipeline: &mut self.pipeline,
            peers: &peers,
            allowed_ips: &allowed,
            status,
            io,
            now: Instant::now(),
        };
        match crate::control::handle(&m.line, &mut view) {
            crate::control::Outcome::Reply(r) => {
                let _ = m.reply.send(r.to_line());
            }
            crate::control::Outcome::Reload => self.start_reload(Some(m.reply)),
        }
        // a flush may have ended flows
        self.drain_flow_ends(Instant::now());
    }

    fn render_metrics(&self) -> String {
        let peers = self.wg.stats();
        crate::telemetry::metrics::render(
            &self.pipeline,
            &crate::telemetry::metrics::ShellMetrics {
                peers: &peers,
                latency: Some(&self.latency),
                io_drops: Some(&self.counters.drops),
                log_suppressed: self.events.suppressed(),
                capture_packets: self.capture.as_ref().map_or(0, |c| c.packets),
                reloads_ok: self.reloads_ok,
                reloads_failed: self.reloads_failed,
                uptime_secs: self.started.elapsed().as_secs_f64(),
            },
        )
    }

    /// Starts a reload in a blocking task (one at a time; later requests
    /// wait for the running one's result).
    fn start_reload(&mut self, waiter: Option<tokio::sync::oneshot::Sender<String>>) {
        let Some(path) = self.settings.config_path.clone() else {
            if let Some(w) = waiter {
                let _ = w.send(
                    crate::control::Response::err("reload unavailable: no config file").to_line(),
                );
            }
            return;
        };
        if let Some(w) = waiter {
            self.reload_waiters.push(w);
        }
        if self.reload_task.is_none() {
            let started = Instant::now();
            self.reload_task = Some(tokio::task::spawn_blocking(move || {
                reload::load(&path, started)
            }));
        }
    }

    fn finish_reload(&mut self, r: Result<reload::Loaded, Vec<String>>) {
        let result = r.and_then(|l| self.apply_reload(l));
        match &result {
            Ok(rep) => {
                self.reloads_ok += 1;
                self.restart_health_checks();
                tracing::info!(
                    generation = rep.rule_generation,
                    rules = rep.rules,
                    added = ?rep.peers_added,
                    removed = ?rep.peers_removed,
                    changed = ?rep.peers_changed,
                    elapsed_ms = rep.elapsed_ms,
                    "configuration reloaded"
                );
                for n in &rep.needs_restart {
                    tracing::warn!(setting = %n, "changed setting not applied until a restart");
                }
            }
            Err(errs) => {
                self.reloads_failed += 1;
                tracing::error!(
                    problems = errs.len(),
                    "reload rejected; the running configuration is unchanged"
                );
                for e in errs {
                    tracing::error!("  {e}");
                }
            }
        }
        let line = crate::control::reload_response(result).to_line();
        for w in self.reload_waiters.drain(..) {
            let _ = w.send(line.clone());
        }
    }

    /// Swaps a loaded config in. Peers first (the only step that can still
    /// fail, and it changes nothing when it does), then the rules.
    fn apply_reload(
        &mut self,
        l: reload::Loaded,
    ) -> Result<crate::control::ReloadReport, Vec<String>> {
        let needs_restart = reload::needs_restart(&self.settings, &l.settings);
        let ch = self
            .wg
            .update_peers(l.settings.wg.peers.clone())
            .map_err(|e| vec![format!("peers: {e}")])?;
        self.pipeline.reload_prepared(l.prepared);
        reload::swap_ids(&mut self.pipeline, l.ids, &l.config.ids.report);
        self.pipeline.set_shaper(&l.settings.ops.limits);
        self.pipeline
            .set_protection(&l.settings.protect, Instant::now());
        self.events.reconfigure(&l.settings.ops.events);
        self.pipeline.set_flow_log(self.events.wants_flows());
        let mut keep = l.settings;
        // settings that wait for a restart stay as they run
        keep.tun_name = self.settings.tun_name.clone();
        keep.addresses = self.settings.addresses.clone();
        keep.mtu = self.settings.mtu;
        keep.wg.listen_port = self.settings.wg.listen_port;
        keep.wg.private_key = self.settings.wg.private_key;
        keep.user = self.settings.user.clone();
        keep.ops.control = self.settings.ops.control.clone();
        keep.ops.metrics = self.settings.ops.metrics;
        keep.ops.events.eve_file = self.settings.ops.events.eve_file.clone();
        keep.ops.capture = self.settings.ops.capture.clone();
        keep.pipeline.conntrack = self.settings.pipeline.conntrack;
        keep.pipeline.fragments = self.settings.pipeline.fragments;
        keep.log = self.settings.log;
        keep.eve_log = self.settings.eve_log.clone();
        keep.mode = self.settings.mode;
        keep.netstack = self.settings.netstack.with_live(&keep.netstack);
        if let Some(net) = self.net.as_mut() {
            net.reconfigure(&keep.netstack);
        }
        self.settings = keep;
        Ok(crate::control::ReloadReport {
            config: l.config.source.display().to_string(),
            rule_generation: self.pipeline.generation(),
            rules: l.rules,
            peers_added: ch.added,
            peers_removed: ch.removed,
            peers_changed: ch.changed,
            peers_rekeyed: ch.rekeyed,
            needs_restart,
            elapsed_ms: u64::try_from(l.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn drain_flow_ends(&mut self, now: Instant) {
        while let Some(f) = self.pipeline.poll_flow_end() {
            self.events.flow_end(&self.pipeline, &f, now);
        }
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

    /// The pipeline's verdict, or in a bypass run (benchmarks) straight
    /// forwarding by AllowedIPs.
    fn decide(&mut self, pkt: &mut [u8], ingress: ZoneId, now: Instant) -> Verdict {
        match &self.bypass {
            None => self.pipeline.handle(pkt, ingress, now),
            Some(b) => match b.route(pkt, ingress) {
                Some(z) => Verdict::Forward(z),
                None => Verdict::Drop(DropReason::NoRoute),
            },
        }
    }

    /// One packet from the TUN; `now` is its batch's receive time (one clock
    /// read per batch: the pipeline and conntrack's time conversion see the
    /// same instant for the whole batch).
    async fn on_tun_packet(&mut self, pkt: &mut [u8], now: Instant) {
        let v = self.decide(pkt, ZoneId::TUN, now);
        self.apply(v, ZoneId::TUN, pkt, now).await;
        self.latency.observe(now.elapsed());
        self.drain_transmits(now).await;
        self.flush_outs(now).await;
    }

    /// Datagram `i` of a receive round (`rxb`: what the crypto threads
    /// decrypted of it, see `wg::parallel`); `now` is the round's receive
    /// time (see `on_tun_packet`).
    async fn on_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        rxb: &mut RxBatch,
        i: usize,
        now: Instant,
    ) {
        let mut outs = std::mem::take(&mut self.outs);
        let mut dec = std::mem::take(&mut self.dec);
        if let Some((zone, pkt)) = self
            .wg
            .finish_datagram(rxb, i, from, datagram, now, &mut dec, &mut outs)
        {
            let v = self.decide(pkt, zone, now);
            self.apply(v, zone, pkt, now).await;
            self.latency.observe(now.elapsed());
            self.drain_transmits(now).await;
        }
        self.dec = dec;
        for o in outs.drain(..) {
            match o {
                WgOutput::Network { to, data } => self.send_udp(to, &data).await,
                WgOutput::Packet { zone, mut data } => {
                    let t = Instant::now();
                    let v = self.decide(&mut data, zone, t);
                    self.apply(v, zone, &data, t).await;
                    self.latency.observe(t.elapsed());
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
        if let Some(c) = self.capture.as_mut() {
            if c.wants(&v) {
                c.write(
                    crate::telemetry::eve::since_epoch(std::time::SystemTime::now()),
                    pkt,
                );
            }
        }
        if matches!(v, Verdict::Drop(_) | Verdict::Reject(_)) {
            self.events
                .drop_event(&self.pipeline, &v, ingress, pkt, now);
        }
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
            if self.tun_vnet {
                self.queue_tun(pkt);
                return;
            }
            match tun.get_ref().send(pkt) {
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
            let Some(st) = self.encapsulate_batched(z, pkt, now).await else {
                return;
            };
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
            self.events.rule_event(&self.pipeline, &e, now);
        }
        while let Some(e) = self.pipeline.poll_nat_event() {
            self.events.nat_event(&self.pipeline, &e, now);
        }
        self.drain_flow_ends(now);
        self.write_eve();
        while let Some(t) = self.pipeline.poll_transmit() {
            self.send_to_zone(t.zone, &t.packet, now).await;
        }
    }

    /// Writes queued IDS alerts and anomaly detections as EVE JSON lines
    /// (or logs them when no file); blocklist events go to the event stream.
    fn write_eve(&mut self) {
        use std::io::Write as _;
        // The clock is read only when there is an event (this runs after
        // every packet).
        while let Some(e) = self.pipeline.poll_block_event() {
            self.events.block_event(&self.pipeline, &e, Instant::now());
        }
        let mut wrote = false;
        while let Some((d, blocked)) = self.pipeline.poll_anomaly() {
            let wall = self.clock.1 + d.now.saturating_duration_since(self.clock.0);
            let t = wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ts = crate::ids::eve::format_timestamp(t.as_secs(), t.subsec_micros());
            let peer = d
                .ingress
                .is_peer()
                .then(|| self.pipeline.zones().name(d.ingress).to_string());
            let line = crate::anomaly::eve_line(&d, &ts, peer.as_deref(), blocked);
            tracing::warn!(target: "portcullis::anomaly", "{line}");
            if let Some(f) = self.eve.as_mut() {
                if let Err(e) = writeln!(f, "{line}") {
                    tracing::warn!(error = %e, "EVE log write");
                }
                wrote = true;
            }
        }
        while let Some((a, peer)) = self.pipeline.poll_ids_alert() {
            let wall = self.clock.1 + a.now.saturating_duration_since(self.clock.0);
            let d = wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ts = crate::ids::eve::format_timestamp(d.as_secs(), d.subsec_micros());
            let peer = peer.map(|z| self.pipeline.zones().name(z).to_string());
            let line = crate::ids::eve::to_json(&a, &ts, peer.as_deref());
            match self.eve.as_mut() {
                Some(f) => {
                    if let Err(e) = writeln!(f, "{line}") {
                        tracing::warn!(error = %e, "EVE log write");
                    }
                    wrote = true;
                }
                None => tracing::warn!(target: "portcullis::ids", "{line}"),
            }
        }
        if wrote {
            if let Some(f) = self.eve.as_mut() {
                let _ = f.flush();
            }
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
                        let v = self.decide(&mut data, zone, now);
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
        let to = map_dual(to, self.dual);
        if !self.tx.push(to, data) {
            self.flush_tx().await;
            if !self.tx.push(to, data) {
                self.counters.send_errors += 1;
            }
        }
    }
}

/// A dual-stack socket sends to IPv4 peers as IPv4-mapped IPv6.
fn map_dual(to: SocketAddr, dual: bool) -> SocketAddr {
    match (to, dual) {
        (SocketAddr::V4(a), true) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        (a, _) => a,
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
            crypto_threads: c.interface.crypto_threads,
            tun_queues: c.interface.tun_queues,
            udp_sockets: c.interface.udp_sockets,
            pipeline: PipelineConfig::from_config(c),
            mode: c.interface.mode,
            netstack: c.netstack.clone(),
            config_path: Some(c.source.clone()),
            ops: c.ops.clone(),
            peer_ips: c
                .peers
                .iter()
                .map(|p| (p.name.clone(), p.allowed_ips.clone()))
                .collect(),
            log: c.log,
            ids: c
                .ids
                .enabled
                .then(|| (c.ids.rules.clone(), c.ids.engine.clone())),
            eve_log: c
                .ids
                .eve_log
                .clone()
                .filter(|_| c.ids.enabled || c.ids.anomaly.is_some()),
            protect: c.protection(),
        })
    }
}

/// The TUN's read readiness, or never (netstack mode).
/// Waits until a TUN queue is readable and returns its number (0: `tun`,
/// then `more`), looking at the queues from `start` on; never in netstack
/// mode.
async fn tun_readable(
    tun: &Option<tokio::io::unix::AsyncFd<::tun::Device>>,
    more: &[tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>],
    start: usize,
) -> std::io::Result<usize> {
    use std::task::Poll;
    let Some(tun) = tun else {
        return std::future::pending().await;
    };
    let n = 1 + more.len();
    std::future::poll_fn(|cx| {
        for i in 0..n {
            let q = (start + i) % n;
            // a guard dropped without `clear_ready` leaves the readiness
            // set: the read that follows finds it
            let ready = match q.checked_sub(1) {
                None => tun.poll_read_ready(cx).map_ok(drop),
                Some(m) => match more.get(m) {
                    Some(f) => f.poll_read_ready(cx).map_ok(drop),
                    None => Poll::Pending,
                },
            };
            match ready {
                Poll::Ready(r) => return Poll::Ready(r.map(|()| q)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Waits until the UDP socket is readable, or never when the loop does not
/// read it (`read` false: reader threads do).
async fn udp_readable(udp: &tokio::net::UdpSocket, read: bool) -> std::io::Result<()> {
    if read {
        udp.readable().await
    } else {
        std::future::pending().await
    }
}

/// The next batch from the UDP reader threads, or never without them.
async fn udp_batch(r: &mut Option<udp_readers::UdpReaders>) -> Option<udp_readers::UdpBatch> {
    match r {
        Some(r) => r.next().await,
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
