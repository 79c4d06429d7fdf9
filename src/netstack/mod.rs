//! Rootless mode's userspace network stack (sans IO): flows the pipeline lets
//! out to zone `host` (or to the gateway's own addresses, zone `local`) are
//! terminated here and relayed through ordinary host sockets by the IO shell
//! (`io::netstack`), like Tailscale's userspace networking or onetun — with
//! the whole firewall pipeline in front.
//!
//! What it does, per protocol:
//! - **TCP** is terminated in smoltcp with AnyIP on (every destination address
//!   is "ours"). A client's SYN for a new flow is *held*: the shell is asked to
//!   connect the host socket first ([`NetEvent::Connect`]). When it connects,
//!   a listening smoltcp socket is created for exactly that destination
//!   (address and port) and the held SYN is fed to it, so the client sees the
//!   server's own address and the handshake only completes when the server
//!   accepted. A refused host connection becomes a TCP RST to the client, an
//!   unreachable one an ICMP destination unreachable (host/net, RFC 792 /
//!   RFC 4443 codes), like a router would answer.
//! - **UDP** is not given to smoltcp: each (client, server) pair is a
//!   connected host UDP socket; payloads go out as they are, replies are
//!   wrapped in IP/UDP with the server as source.
//! - **ICMP echo** is relayed through unprivileged ping sockets (the shell
//!   opens them); replies are rebuilt with the client's echo identifier.
//!   Echo requests to the gateway's own addresses are answered here.
//! - The gateway's own addresses: UDP/TCP port 53 goes to the DNS resolver
//!   (when `dns` is on); `host_services` ports go to the host's loopback;
//!   anything else is refused (RST / port unreachable).
//! - **Port forwards** (host port -> service on a peer): TCP: the shell
//!   accepts a host connection and calls [`Netstack::open_outbound`], which
//!   connects a smoltcp socket from the gateway's tunnel address to the peer.
//!   UDP: the shell hands each datagram of the forward's host socket to
//!   [`Netstack::handle_forward_datagram`]; per host client an association
//!   ([`udpfwd`]: idle timeout, bounded count) gives it a port of the
//!   gateway's tunnel address, and the service's replies to that port come
//!   back as [`NetEvent::ForwardReply`] for that client. Both leave through
//!   the pipeline's `output` chain like any other packet the gateway
//!   originates (rules, conntrack, IDS); the replies pass it as the flow's
//!   reply direction.
//! - **Fragments**: the pipeline judges the reassembled datagram and releases
//!   its original fragments; the netstack reassembles them again (RFC 791 /
//!   RFC 8200, the pipeline's reassembler) and relays the whole datagram.
//!   Datagrams from the host (UDP flow replies, UDP port forwards) that do
//!   not fit the tunnel MTU leave as IP fragments ([`packet::fragment`]).
//! - **Host errors**: a refused TCP connect is an RST to the client; an
//!   unreachable host or net (TCP connect, or a UDP flow's socket reporting
//!   EHOSTUNREACH/ENETUNREACH/ECONNREFUSED) an ICMP destination unreachable
//!   (host 1 / net 0 / port 3; ICMPv6 address/no route/port).
//! - **Reload**: [`Netstack::reconfigure`] takes
//!   [`NetstackConfig::LIVE_KEYS`]; the rest waits for a restart and the
//!   reload reports it ([`NetstackConfig::restart_keys`]).
//!
//! Bounds and back-pressure (nothing grows without a limit):
//! - at most `max_connections` relayed flows (TCP, UDP and ping together);
//!   beyond that a new TCP SYN gets an RST, UDP/ICMP are dropped and counted;
//!   UDP port forward associations are bounded per forward (`max_flows`; they
//!   hold no host socket of their own);
//! - per TCP flow: smoltcp's receive and send buffers (fixed sizes), at most
//!   `host_window` bytes handed to the host socket and not yet written
//!   (tunnel -> host: when the host socket is slow the smoltcp receive buffer
//!   fills and the advertised window closes), and at most `host_window` bytes
//!   read from the host and not yet taken by smoltcp (host -> tunnel: the
//!   shell reads only as much as it was granted with [`NetEvent::Grant`]);
//! - idle timeouts per protocol; a flow idle longer is aborted (TCP: RST to
//!   the client) and its host socket closed.
//!
//! Contract with the shell: feed packets with [`Netstack::handle_packet`],
//! host-side happenings with [`Netstack::handle_host`], call
//! [`Netstack::poll`] at [`Netstack::poll_at`] and [`Netstack::handle_timeout`]
//! about once a second; then drain [`Netstack::poll_event`] (host socket work) and
//! [`Netstack::poll_transmit`] (packets towards the tunnel, which must go
//! through the pipeline with the zone they carry). No IO, no clock reads.

pub mod device;
#[cfg(test)]
mod tests;
pub mod udpfwd;

use crate::packet::frag::{FragResult, Reassembler};
use crate::packet::{self, build, proto, tcp_flags, FragConfig, L4};
use crate::zone::ZoneId;
use device::QueueDevice;
use siphasher::sip::SipHasher13;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A transport protocol for services and forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A host port forwarded to a service on a peer (onetun-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub proto: Proto,
    /// The host address and port to listen on.
    pub listen: SocketAddr,
    /// The peer's service (an address inside some peer's AllowedIPs).
    pub to: SocketAddr,
    /// UDP: most host clients with an association at once (see [`udpfwd`]).
    pub max_flows: usize,
    /// UDP: an association idle this long is dropped.
    pub idle_timeout: Duration,
}

impl PortForward {
    /// Per-forward UDP association bound: like `max_connections`, a small
    /// NAT box's worth; each association costs a table entry and one of the
    /// 16,384 tunnel-side ports (no host socket: the forward's own serves all).
    pub const DEFAULT_MAX_FLOWS: usize = 1024;
}

/// The netstack's settings (the `[netstack]` config section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetstackConfig {
    /// Most relayed flows (TCP + UDP + ICMP echo) at once.
    pub max_connections: usize,
    /// smoltcp receive buffer per TCP flow (the window offered to the client).
    pub tcp_rx_buffer: usize,
    /// smoltcp send buffer per TCP flow.
    pub tcp_tx_buffer: usize,
    /// Bytes in flight between a flow and its host socket, each way.
    pub host_window: usize,
    pub tcp_idle_timeout: Duration,
    pub udp_idle_timeout: Duration,
    pub icmp_idle_timeout: Duration,
    /// How long a host connect may take before the client gets an ICMP unreachable.
    pub connect_timeout: Duration,
    /// Answer DNS (UDP and TCP port 53) on the gateway's tunnel addresses.
    pub dns: bool,
    /// The resolver; `None`: the first `nameserver` of /etc/resolv.conf.
    pub dns_upstream: Option<SocketAddr>,
    /// Ports of the host itself reachable on the gateway's tunnel addresses
    /// (relayed to the host's loopback).
    pub host_services: Vec<(Proto, u16)>,
    pub forwards: Vec<PortForward>,
}

impl Default for NetstackConfig {
    fn default() -> Self {
        NetstackConfig {
            // Like a small NAT box; each idle TCP flow costs two smoltcp
            // buffers (allocated zeroed, touched only as used) and a host fd.
            max_connections: 1024,
            // 128 KiB: the window for ~1 Gbit/s at 1 ms RTT (BDP = 125 KB);
            // measured in the lab no slower than 256 KiB. Worst case per flow
            // with the defaults: 128 + 64 + 2 x 128 KiB = 448 KiB.
            tcp_rx_buffer: 128 * 1024,
            // The send buffer bounds smoltcp's bursts towards the tunnel: a
            // peer's UDP receive buffer (Linux default 208 KiB, ~2.3 KiB of
            // truesize per 1.4 KB packet) drops a larger burst, and smoltcp
            // recovers slowly (it ignores duplicate ACKs that move the window).
            // 64 KiB is 1 Gbit/s at 0.5 ms RTT.
            tcp_tx_buffer: 64 * 1024,
            // One window's worth in flight to/from the host socket each way.
            host_window: 128 * 1024,
            // Linux conntrack's established timeout is 5 days; a relay holding
            // an fd per flow is stricter: one hour.
            tcp_idle_timeout: Duration::from_secs(3600),
            // Linux conntrack: udp 30 s unreplied, 120 s stream; one minute.
            udp_idle_timeout: Duration::from_secs(60),
            // Linux conntrack's icmp timeout.
            icmp_idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            dns: true,
            dns_upstream: None,
            host_services: Vec::new(),
            forwards: Vec::new(),
        }
    }
}

impl NetstackConfig {
    /// The keys a hot reload applies live (to the flows opened from then
    /// on, and the timeouts and the limit to every flow at the next
    /// housekeeping); every other key needs a restart.
    pub const LIVE_KEYS: &'static [&'static str] = &[
        "max_connections",
        "tcp_rx_buffer",
        "tcp_tx_buffer",
        "tcp_idle_timeout",
        "udp_idle_timeout",
        "icmp_idle_timeout",
        "connect_timeout",
        "host_services",
    ];

    /// `self` (the running settings) with the live keys taken from `new`.
    pub fn with_live(&self, new: &NetstackConfig) -> NetstackConfig {
        NetstackConfig {
            max_connections: new.max_connections,
            tcp_rx_buffer: new.tcp_rx_buffer,
            tcp_tx_buffer: new.tcp_tx_buffer,
            tcp_idle_timeout: new.tcp_idle_timeout,
            udp_idle_timeout: new.udp_idle_timeout,
            icmp_idle_timeout: new.icmp_idle_timeout,
            connect_timeout: new.connect_timeout,
            host_services: new.host_services.clone(),
            ..self.clone()
        }
    }

    /// The changed keys a reload cannot apply (they need a restart):
    /// `host_window` (in-flight accounting of live flows), `dns` and
    /// `dns_upstream` (the resolver is chosen at start) and `forward` (the
    /// listening sockets are bound at start).
    pub fn restart_keys(&self, new: &NetstackConfig) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.host_window != new.host_window {
            v.push("host_window");
        }
        if self.dns != new.dns {
            v.push("dns");
        }
        if self.dns_upstream != new.dns_upstream {
            v.push("dns_upstream");
        }
        if self.forwards != new.forwards {
            v.push("forward");
        }
        v
    }
}

/// A relayed flow's id (never reused).
pub type ConnId = u64;

/// The kind of host socket a flow needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    /// An unprivileged ICMP (or ICMPv6) echo socket.
    Ping,
}

/// Work for the shell's host sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// Open a host socket of this kind to `target` (TCP: connect, answering
    /// with [`HostInput::Connected`] or [`HostInput::Failed`]).
    Connect {
        id: ConnId,
        kind: Kind,
        target: SocketAddr,
    },
    /// Write these bytes (TCP), send this datagram (UDP) or this ICMP echo
    /// message (ping; the kernel sets the identifier and checksum).
    ToHost { id: ConnId, data: Vec<u8> },
    /// The flow may take `bytes` more from the host socket.
    Grant { id: ConnId, bytes: usize },
    /// The client finished sending: shut the host socket's write side.
    ShutdownHost { id: ConnId },
    /// The flow is gone: close the host socket.
    Close { id: ConnId },
    /// A UDP port forward's reply: send `data` from forward `forward`'s
    /// listening socket (its index in the config's forward list) to the
    /// host client `to`.
    ForwardReply {
        forward: usize,
        to: SocketAddr,
        data: Vec<u8>,
    },
}

/// Why a host connect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    Refused,
    HostUnreachable,
    NetUnreachable,
    TimedOut,
    /// Anything else (including ping sockets not allowed): the flow is dropped.
    Other,
}

impl FailKind {
    /// Maps an OS error to a fail kind.
    pub fn from_io(e: &std::io::Error) -> FailKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => FailKind::Refused,
            Some(libc::EHOSTUNREACH) => FailKind::HostUnreachable,
            Some(libc::ENETUNREACH) => FailKind::NetUnreachable,
            Some(libc::ETIMEDOUT) => FailKind::TimedOut,
            _ if e.kind() == std::io::ErrorKind::TimedOut => FailKind::TimedOut,
            _ => FailKind::Other,
        }
    }
}

/// What happened on a flow's host socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostInput {
    Connected,
    Failed(FailKind),
    /// Bytes read (TCP), a datagram (UDP) or an ICMP echo reply message (ping).
    Data(Vec<u8>),
    /// The host side finished sending (TCP FIN).
    Eof,
    /// This many bytes of earlier [`NetEvent::ToHost`] data were written.
    Written(usize),
    /// The host socket failed or was reset.
    Closed,
}

/// A packet towards the tunnel; it must pass the pipeline entering from `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetTransmit {
    pub zone: ZoneId,
    pub packet: Vec<u8>,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub opened: u64,
    pub refused_limit: u64,
    pub refused_no_service: u64,
    pub connect_failed: u64,
    pub idle_closed: u64,
    pub dropped: u64,
    pub echo_local: u64,
    /// UDP datagrams from the host sent into the tunnel as IP fragments
    /// (larger than the tunnel MTU).
    pub fragmented: u64,
    /// UDP port forwards' associations.
    pub udp_forward: udpfwd::UdpFwdStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    client: SocketAddr,
    server: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Open,
}

#[derive(Debug)]
struct Conn {
    key: Key,
    kind: Kind,
    state: St,
    handle: Option<SocketHandle>,
    /// The client's SYN, held while the host connect is in progress.
    syn: Option<Vec<u8>>,
    /// Host -> tunnel bytes not yet taken by smoltcp (the front chunk from `off`).
    from_host: VecDeque<Vec<u8>>,
    off: usize,
    /// Tunnel -> host bytes handed to the shell and not yet written.
    inflight: usize,
    host_eof: bool,
    closed_to_client: bool,
    shutdown_sent: bool,
    last_active: Instant,
}

/// SipHash-1-3 with the caller's key for the flow table.
#[derive(Debug, Clone, Copy)]
struct Keyed(u64, u64);

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// Largest chunk moved between smoltcp and the host at once (a socket read's size).
const CHUNK: usize = 64 * 1024;
/// Reassembly of what the pipeline released: it releases a datagram's
/// fragments all at once, and only complete, judged datagrams, so little is
/// ever held; the bounds are the kernel's defaults (`FragConfig::default`:
/// 4 MiB, 64 fragments a datagram) with a shorter hold (fragments that do
/// not complete at once never will).
const NETSTACK_FRAG: FragConfig = FragConfig {
    max_bytes: 4 << 20,
    max_datagrams: 1024,
    max_fragments: 64,
    timeout: Duration::from_secs(5),
};
/// Local ports for gateway-initiated connections (the IANA dynamic range, RFC 6335).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The userspace stack and its flow table.
pub struct Netstack {
    cfg: NetstackConfig,
    local_addrs: Vec<IpAddr>,
    resolver: Option<SocketAddr>,
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
    epoch: Instant,
    conns: HashMap<ConnId, Conn>,
    by_key: HashMap<Key, ConnId, Keyed>,
    next_id: ConnId,
    next_port: u16,
    events: VecDeque<NetEvent>,
    out: VecDeque<NetTransmit>,
    stats: NetStats,
    udp_fwd: udpfwd::UdpForwards,
    mtu: usize,
    /// Reassembles the fragments the pipeline releases (see `handle_packet`).
    frag: Reassembler,
    /// Identification of the next datagram this stack fragments (a counter
    /// from a random start: RFC 6864 §4.1, RFC 7739 §5.1).
    frag_id: u32,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Per-socket settings: no Nagle and no delayed ACKs (the relay already
/// batches: a host read is up to 64 KiB); CUBIC congestion control (RFC 8312)
/// so that smoltcp does not send its whole window at once.
fn tune(s: &mut tcp::Socket<'_>) {
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s.set_congestion_control(tcp::CongestionControl::Cubic);
}

fn ep(a: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(IpAddress::from(a.ip()), a.port())
}

impl Netstack {
    /// Builds the stack. `local_addrs` are the gateway's tunnel addresses,
    /// `resolver` the DNS server (already chosen by the shell), `mtu` the
    /// tunnel MTU, `hash_key` random bits for the flow table.
    pub fn new(
        cfg: NetstackConfig,
        local_addrs: Vec<IpAddr>,
        resolver: Option<SocketAddr>,
        mtu: usize,
        hash_key: (u64, u64),
        now: Instant,
    ) -> Self {
        let mut dev = QueueDevice::new(mtu);
        let mut iface = Interface::new(
            IfaceConfig::new(HardwareAddress::Ip),
            &mut dev,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.set_any_ip(true);
        iface.update_ip_addrs(|a| {
            // smoltcp needs one address per family to originate from; the
            // gateway's own (or a documentation placeholder when it has none).
            let v4 = local_addrs
                .iter()
                .find(|a| a.is_ipv4())
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
            let v6 = local_addrs
                .iter()
                .find(|a| a.is_ipv6())
                .copied()
                .unwrap_or(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
            for ip in [v4, v6] {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                let _ = a.push(IpCidr::new(IpAddress::from(ip), prefix));
            }
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(smoltcp::wire::Ipv4Address::new(192, 0, 2, 1));
        let udp_fwd = udpfwd::UdpForwards::new(&cfg.forwards, &local_addrs, hash_key);
        Netstack {
            cfg,
            local_addrs,
            resolver,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            epoch: now,
            conns: HashMap::new(),
            by_key: HashMap::with_hasher(Keyed(hash_key.0, hash_key.1)),
            next_id: 1,
            next_port: *EPHEMERAL.start(),
            events: VecDeque::new(),
            out: VecDeque::new(),
            stats: NetStats::default(),
            udp_fwd,
            mtu,
            frag: Reassembler::new(NETSTACK_FRAG, (hash_key.1, hash_key.0)),
            frag_id: (hash_key.0 ^ hash_key.1.rotate_left(32)) as u32,
        }
    }

    fn ts(&self, now: Instant) -> smoltcp::time::Instant {
        let us = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }

    pub fn config(&self) -> &NetstackConfig {
        &self.cfg
    }

    /// A hot reload: takes the live keys of `new` (see
    /// [`NetstackConfig::LIVE_KEYS`]); the others keep their running values.
    pub fn reconfigure(&mut self, new: &NetstackConfig) {
        self.cfg = self.cfg.with_live(new);
    }

    pub fn stats(&self) -> NetStats {
        NetStats {
            udp_forward: self.udp_fwd.stats().clone(),
            ..self.stats.clone()
        }
    }

    /// UDP port forward associations right now.
    pub fn udp_forward_flows(&self) -> usize {
        self.udp_fwd.len()
    }

    /// A datagram from host client `client` on UDP port forward `forward`
    /// (its index in the config's forward list): it leaves into the tunnel
    /// from the gateway's tunnel address and the client's association port
    /// (through the pipeline's `output` chain). A datagram that does not fit
    /// the tunnel MTU leaves as IP fragments.
    pub fn handle_forward_datagram(
        &mut self,
        forward: usize,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Some((local, to)) = self.udp_fwd.outbound(forward, client, now) else {
            return;
        };
        self.emit_udp(local, to, data);
    }

    /// Emits a UDP datagram into the tunnel: whole when it fits the tunnel
    /// MTU, else as IP fragments (RFC 791 / RFC 8200; the pipeline judges
    /// the reassembled datagram and releases the fragments). One that cannot
    /// be built (over 64 KiB) is dropped and counted.
    fn emit_udp(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Some(p) = packet::synth::udp(from, to, data) else {
            self.stats.dropped += 1;
            return;
        };
        if p.len() <= self.mtu {
            self.emit(p);
            return;
        }
        self.frag_id = self.frag_id.wrapping_add(1);
        match packet::fragment::to_mtu(&p, self.mtu, self.frag_id) {
            Some(frags) => {
                self.stats.fragmented += 1;
                for f in frags {
                    self.emit(f);
                }
            }
            None => self.stats.dropped += 1,
        }
    }

    /// Relayed flows right now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The zone a packet from `src` enters the pipeline from.
    fn zone_of(&self, src: IpAddr) -> ZoneId {
        if self.local_addrs.contains(&src) {
            ZoneId::LOCAL
        } else {
            ZoneId::HOST
        }
    }

    fn emit(&mut self, packet: Vec<u8>) {
        let zone = match packet::parse(&packet) {
            Ok(m) => self.zone_of(m.src),
            Err(_) => return,
        };
        self.out.push_back(NetTransmit { zone, packet });
    }

    /// Where a flow to `dst` is relayed on the host, or `None` when nothing
    /// serves it.
    fn target_for(&self, p: Proto, dst: SocketAddr) -> Option<SocketAddr> {
        if !self.local_addrs.contains(&dst.ip()) {
            return Some(dst);
        }
        if dst.port() == 53 && self.cfg.dns {
            return self.resolver;
        }
        if self.cfg.host_services.contains(&(p, dst.port())) {
            let lo = if dst.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            };
            return Some(SocketAddr::new(lo, dst.port()));
        }
        None
    }

    fn new_conn(&mut self, key: Key, kind: Kind, state: St, now: Instant) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                key,
                kind,
                state,
                handle: None,
                syn: None,
                from_host: VecDeque::new(),
                off: 0,
                inflight: 0,
                host_eof: false,
                closed_to_client: false,
                shutdown_sent: false,
                last_active: now,
            },
        );
        self.by_key.insert(key, id);
        self.stats.opened += 1;
        id
    }

    /// A packet the pipeline forwarded to zone `host` or `local`.
    pub fn handle_packet(&mut self, pkt: Vec<u8>, now: Instant) {
        let Ok(meta) = packet::parse(&pkt) else {
            self.stats.dropped += 1;
            return;
        };
        if meta.frag.is_some() {
            // The pipeline judged the reassembled datagram and releases its
            // original fragments (back to back); the relay needs the whole
            // datagram, so it reassembles them again.
            match self.frag.handle(&pkt, &meta, ZoneId::LOCAL, now) {
                FragResult::Complete { datagram, .. } => {
                    if packet::parse(&datagram).is_ok_and(|m| m.frag.is_none()) {
                        self.handle_packet(datagram, now);
                    } else {
                        self.stats.dropped += 1;
                    }
                }
                FragResult::Incomplete => {}
                FragResult::Dropped(_) => self.stats.dropped += 1,
            }
            return;
        }
        match meta.l4 {
            L4::Tcp(t) => {
                let key = Key {
                    proto: proto::TCP,
                    client: SocketAddr::new(meta.src, t.sport),
                    server: SocketAddr::new(meta.dst, t.dport),
                };
                if let Some(&id) = self.by_key.get(&key) {
                    let Some(c) = self.conns.get_mut(&id) else {
                        return;
                    };
                    c.last_active = now;
                    if c.state == St::Connecting {
                        // A retransmitted SYN while the host connect runs.
                        return;
                    }
                    self.dev.rx.push_back(pkt);
                    self.poll_iface(now);
                    self.pump(id, now);
                    return;
                }
                let syn =
                    t.flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN;
                if !syn {
                    // Unknown segment: smoltcp answers it with an RST.
                    self.dev.rx.push_back(pkt);
                    self.poll_iface(now);
                    return;
                }
                if self.conns.len() >= self.cfg.max_connections {
                    self.stats.refused_limit += 1;
                    if let Some(r) = build::tcp_reset(&pkt, &meta) {
                        self.emit(r);
                    }
                    return;
                }
                let Some(target) = self.target_for(Proto::Tcp, key.server) else {
                    self.stats.refused_no_service += 1;
                    if let Some(r) = build::tcp_reset(&pkt, &meta) {
                        self.emit(r);
                    }
                    return;
                };
                let id = self.new_conn(key, Kind::Tcp, St::Connecting, now);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.syn = Some(pkt);
                }
                self.events.push_back(NetEvent::Connect {
                    id,
                    kind: Kind::Tcp,
                    target,
                });
            }
            L4::Udp { sport, dport } => {
                let key = Key {
                    proto: proto::UDP,
                    client: SocketAddr::new(meta.src, sport),
                    server: SocketAddr::new(meta.dst, dport),
                };
                let payload = pkt
                    .get(usize::from(meta.payload_offset)..usize::from(meta.total_len))
                    .unwrap_or_default()
                    .to_vec();
                // A UDP port forward's target answering its host client.
                if let Some((forward, to)) = self.udp_fwd.inbound(key.server, key.client, now) {
                    self.events.push_back(NetEvent::ForwardReply {
                        forward,
                        to,
                        data: payload,
                    });
                    return;
                }
                let id = match self.by_key.get(&key) {
                    Some(&id) => id,
                    None => {
                        if self.conns.len() >= self.cfg.max_connections {
                            self.stats.refused_limit += 1;
                            return;
                        }
                        let Some(target) = self.target_for(Proto::Udp, key.server) else {
                            self.stats.refused_no_service += 1;
                            if let Some(r) = build::icmp_unreachable(&pkt, &meta, 3, None) {
                                self.emit(r);
                            }
                            return;
                        };
                        let id = self.new_conn(key, Kind::Udp, St::Open, now);
                        self.events.push_back(NetEvent::Connect {
                            id,
                            kind: Kind::Udp,
                            target,
                        });
                        self.events.push_back(NetEvent::Grant {
                            id,
                            bytes: self.cfg.host_window,
                        });
                        id
                    }
                };
                self.datagram_to_host(id, payload, now);
            }
            L4::Icmp(i) if i.ty == 8 || i.ty == 128 => {
                let Some(echo_id) = i.echo_id else { return };
                if self.local_addrs.contains(&meta.dst) {
                    self.stats.echo_local += 1;
                    if let Some(r) = build::icmp_echo_reply(&pkt, &meta) {
                        self.emit(r);
                    }
                    return;
                }
                let key = Key {
                    proto: meta.proto,
                    client: SocketAddr::new(meta.src, echo_id),
                    server: SocketAddr::new(meta.dst, 0),
                };
                let id = match self.by_key.get(&key) {
                    Some(&id) => id,
                    None => {
                        if self.conns.len() >= self.cfg.max_connections {
                            self.stats.refused_limit += 1;
                            return;
                        }
                        let id = self.new_conn(key, Kind::Ping, St::Open, now);
                        self.events.push_back(NetEvent::Connect {
                            id,
                            kind: Kind::Ping,
                            target: key.server,
                        });
                        self.events.push_back(NetEvent::Grant {
                            id,
                            bytes: self.cfg.host_window,
                        });
                        id
                    }
                };
                if let Some(c) = self.conns.get_mut(&id) {
                    c.last_active = now;
                }
                // The ICMP message as it is (type, code, checksum, id, seq, data).
                let msg = pkt
                    .get(usize::from(meta.l4_offset)..usize::from(meta.total_len))
                    .unwrap_or_default()
                    .to_vec();
                self.datagram_to_host(id, msg, now);
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// Hands a datagram (UDP payload or ICMP echo message) to the host socket
    /// unless `host_window` bytes are already waiting to be sent there
    /// (then it is dropped, as a full socket buffer would).
    fn datagram_to_host(&mut self, id: ConnId, data: Vec<u8>, now: Instant) {
        let window = self.cfg.host_window;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.last_active = now;
        if c.inflight + data.len() > window {
            self.stats.dropped += 1;
            return;
        }
        c.inflight += data.len();
        self.events.push_back(NetEvent::ToHost { id, data });
    }

    /// Something happened on flow `id`'s host socket.
    pub fn handle_host(&mut self, id: ConnId, input: HostInput, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.last_active = now;
        let (kind, key) = (c.kind, c.key);
        match (kind, input) {
            (Kind::Tcp, HostInput::Connected) => {
                let Some(syn) = c.syn.take() else { return };
                c.state = St::Open;
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; self.cfg.tcp_rx_buffer]),
                    tcp::SocketBuffer::new(vec![0; self.cfg.tcp_tx_buffer]),
                );
                tune(&mut s);
                let le = IpListenEndpoint {
                    addr: Some(IpAddress::from(key.server.ip())),
                    port: key.server.port(),
                };
                if s.listen(le).is_err() {
                    self.remove(id);
                    return;
                }
                let h = self.sockets.add(s);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.handle = Some(h);
                }
                self.events.push_back(NetEvent::Grant {
                    id,
                    bytes: self.cfg.host_window,
                });
                self.dev.rx.push_back(syn);
                self.poll_iface(now);
                self.pump(id, now);
            }
            (Kind::Tcp, HostInput::Failed(f)) => {
                self.stats.connect_failed += 1;
                let syn = c.syn.take();
                self.remove(id);
                let Some(syn) = syn else { return };
                let Ok(meta) = packet::parse(&syn) else {
                    return;
                };
                let reply = match f {
                    FailKind::Refused | FailKind::Other => build::tcp_reset(&syn, &meta),
                    // RFC 792: code 0 net unreachable, 1 host unreachable.
                    FailKind::NetUnreachable => build::icmp_unreachable(&syn, &meta, 0, None),
                    FailKind::HostUnreachable | FailKind::TimedOut => {
                        build::icmp_unreachable(&syn, &meta, 1, None)
                    }
                };
                if let Some(r) = reply {
                    self.emit(r);
                }
            }
            (Kind::Tcp, HostInput::Data(d)) => {
                if !d.is_empty() {
                    c.from_host.push_back(d);
                }
                self.pump(id, now);
            }
            (Kind::Tcp, HostInput::Eof) => {
                c.host_eof = true;
                self.pump(id, now);
            }
            (Kind::Tcp, HostInput::Written(n)) => {
                c.inflight = c.inflight.saturating_sub(n);
                self.pump(id, now);
            }
            (Kind::Udp | Kind::Ping, HostInput::Written(n)) => {
                c.inflight = c.inflight.saturating_sub(n);
            }
            (
                Kind::Udp,
                HostInput::Failed(
                    f @ (FailKind::Refused | FailKind::HostUnreachable | FailKind::NetUnreachable),
                ),
            ) => {
                // The host got an ICMP port/host/net unreachable for an
                // earlier datagram (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH
                // on a connected socket): tell the client the same way
                // (RFC 792 codes 3, 1, 0; `icmp_unreachable` maps them to
                // ICMPv6 for IPv6), quoting a datagram of this flow. The
                // flow stays: UDP has no connection to lose.
                let code = match f {
                    FailKind::Refused => 3,
                    FailKind::HostUnreachable => 1,
                    _ => 0,
                };
                let q = packet::synth::udp(key.client, key.server, b"");
                if let Some(q) = q {
                    if let Ok(m) = packet::parse(&q) {
                        if let Some(r) = build::icmp_unreachable(&q, &m, code, None) {
                            self.emit(r);
                        }
                    }
                }
            }
            (Kind::Udp, HostInput::Data(d)) => {
                let n = d.len();
                self.emit_udp(key.server, key.client, &d);
                self.events.push_back(NetEvent::Grant { id, bytes: n });
            }
            (Kind::Ping, HostInput::Data(d)) => {
                let n = d.len();
                // An echo reply message: type, code, checksum, id, seq, data.
                let reply_ty = if key.server.is_ipv4() { 0 } else { 129 };
                if d.first() == Some(&reply_ty) {
                    if let (Some(seq), Some(data)) = (d.get(6..8), d.get(8..)) {
                        let seq = u16::from_be_bytes([seq[0], seq[1]]);
                        if let Some(p) = packet::synth::icmp_echo(
                            key.server.ip(),
                            key.client.ip(),
                            key.client.port(),
                            seq,
                            true,
                            data,
                        ) {
                            self.emit(p);
                        }
                    }
                }
                self.events.push_back(NetEvent::Grant { id, bytes: n });
            }
            (_, HostInput::Closed) | (Kind::Udp | Kind::Ping, HostInput::Failed(_)) => {
                if let Some(h) = c.handle {
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    self.poll_iface(now);
                }
                self.remove(id);
                self.events.push_back(NetEvent::Close { id });
            }
            _ => {}
        }
    }

    /// Opens a gateway-initiated TCP connection to `to` (a port forward's
    /// target). Returns the flow id; the shell's host socket is already
    /// connected (it accepted it), so data may flow once granted.
    pub fn open_outbound(&mut self, to: SocketAddr, now: Instant) -> Option<ConnId> {
        if self.conns.len() >= self.cfg.max_connections {
            self.stats.refused_limit += 1;
            return None;
        }
        let local_ip = self
            .local_addrs
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .copied()?;
        // The next free ephemeral port (the table holds at most
        // max_connections flows, far fewer than the range).
        let mut local = None;
        for _ in 0..=(EPHEMERAL.end() - EPHEMERAL.start()) {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            let key = Key {
                proto: proto::TCP,
                client: to,
                server: SocketAddr::new(local_ip, p),
            };
            if !self.by_key.contains_key(&key) {
                local = Some(key);
                break;
            }
        }
        let key = local?;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.cfg.tcp_rx_buffer]),
            tcp::SocketBuffer::new(vec![0; self.cfg.tcp_tx_buffer]),
        );
        tune(&mut s);
        if s.connect(self.iface.context(), ep(to), ep(key.server))
            .is_err()
        {
            return None;
        }
        let h = self.sockets.add(s);
        let id = self.new_conn(key, Kind::Tcp, St::Open, now);
        if let Some(c) = self.conns.get_mut(&id) {
            c.handle = Some(h);
        }
        self.events.push_back(NetEvent::Grant {
            id,
            bytes: self.cfg.host_window,
        });
        self.poll_iface(now);
        Some(id)
    }

    fn poll_iface(&mut self, now: Instant) {
        let ts = self.ts(now);
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        while let Some(p) = self.dev.tx.pop_front() {
            self.emit(p);
        }
    }

    /// Moves data between a TCP flow's smoltcp socket and its host socket,
    /// within the bounds, and notices the ends of the flow.
    fn pump(&mut self, id: ConnId, now: Instant) {
        let window = self.cfg.host_window;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(h) = c.handle else { return };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let mut granted = 0;
        // host -> tunnel
        while let Some(front) = c.from_host.front() {
            let rest = front.get(c.off..).unwrap_or_default();
            if !s.can_send() {
                break;
            }
            let n = s.send_slice(rest).unwrap_or(0);
            if n == 0 {
                break;
            }
            c.off += n;
            granted += n;
            if c.off >= front.len() {
                c.from_host.pop_front();
                c.off = 0;
            }
        }
        if c.host_eof && c.from_host.is_empty() && !c.closed_to_client {
            s.close();
            c.closed_to_client = true;
        }
        // tunnel -> host
        let mut to_host = Vec::new();
        while c.inflight < window && s.can_recv() {
            let want = (window - c.inflight).min(CHUNK).min(s.recv_queue());
            // Copy straight out of the ring (at most two contiguous pieces),
            // no zero-filled buffer first.
            let mut buf = Vec::with_capacity(want);
            while buf.len() < want {
                let room = want - buf.len();
                let got = s
                    .recv(|ring: &mut [u8]| {
                        let n = ring.len().min(room);
                        buf.extend_from_slice(ring.get(..n).unwrap_or_default());
                        (n, n)
                    })
                    .unwrap_or(0);
                if got == 0 {
                    break;
                }
            }
            let n = buf.len();
            if n == 0 {
                break;
            }
            c.inflight += n;
            to_host.push(buf);
        }
        let state = s.state();
        let client_done = !s.may_recv() && s.recv_queue() == 0 && state != tcp::State::Listen;
        if client_done
            && !c.shutdown_sent
            && matches!(
                state,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            )
        {
            c.shutdown_sent = true;
            to_host.push(Vec::new()); // marker: shutdown after the data
        }
        let finished = matches!(state, tcp::State::Closed | tcp::State::TimeWait)
            && (c.closed_to_client || state == tcp::State::Closed);
        if granted > 0 || !to_host.is_empty() {
            c.last_active = now;
        }
        if granted > 0 {
            self.events
                .push_back(NetEvent::Grant { id, bytes: granted });
        }
        for d in to_host {
            if d.is_empty() {
                self.events.push_back(NetEvent::ShutdownHost { id });
            } else {
                self.events.push_back(NetEvent::ToHost { id, data: d });
            }
        }
        // Whatever smoltcp has to say now (window updates, data, FIN).
        self.poll_iface(now);
        if finished {
            self.remove(id);
            self.events.push_back(NetEvent::Close { id });
        }
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.by_key.remove(&c.key);
            if let Some(h) = c.handle {
                self.sockets.remove(h);
            }
        }
    }

    /// smoltcp's timers only (retransmits, probes): call at [`Netstack::poll_at`].
    pub fn poll(&mut self, now: Instant) {
        self.poll_iface(now);
    }

    /// Housekeeping, about once a second: smoltcp's timers, the idle
    /// timeouts, and a pump of every TCP flow (state changes that timers
    /// caused, like a time-wait ending). O(flows).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_iface(now);
        self.udp_fwd.expire(now);
        self.frag.expire(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            let limit = match c.kind {
                Kind::Tcp => self.cfg.tcp_idle_timeout,
                Kind::Udp => self.cfg.udp_idle_timeout,
                Kind::Ping => self.cfg.icmp_idle_timeout,
            };
            let limit = if c.state == St::Connecting {
                // The shell times connects out itself; this is the backstop.
                self.cfg.connect_timeout * 2
            } else {
                limit
            };
            if now.saturating_duration_since(c.last_active) > limit {
                self.stats.idle_closed += 1;
                if let Some(h) = c.handle {
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                }
                self.poll_iface(now);
                self.remove(id);
                self.events.push_back(NetEvent::Close { id });
            } else if c.kind == Kind::Tcp {
                self.pump(id, now);
            }
        }
    }

    /// When [`Netstack::poll`] should run next (smoltcp's timers).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let ts = self.ts(now);
        let at = self.iface.poll_at(ts, &self.sockets)?;
        let us = u64::try_from(at.total_micros()).unwrap_or(0);
        Some(self.epoch + Duration::from_micros(us))
    }

    /// Host socket work, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NetEvent> {
        self.events.pop_front()
    }

    /// Packets towards the tunnel, in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<NetTransmit> {
        self.out.pop_front()
    }
}
