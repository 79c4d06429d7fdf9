//! Netstack mode's host side (tokio): the host sockets that re-originate the
//! flows the sans-IO [`Netstack`] terminates, the port-forward listeners and
//! the resolver choice. Runs inside the single-owner shell of [`crate::io`]:
//! [`NetShell::dispatch`] turns the core's [`NetEvent`]s into socket tasks
//! and commands; the tasks report back through one channel
//! ([`NetShell::next`]) as [`HostInput`]s.
//!
//! Per flow there are at most two small tasks: a reader (reads the host
//! socket only as far as the core granted: back-pressure host -> tunnel) and a
//! writer (writes what the core handed over and reports it written:
//! back-pressure tunnel -> host). Channels are unbounded but carry at most
//! `host_window` bytes per flow each way, because the core hands out no more.
//!
//! A UDP port forward is one host socket bound to its `listen` address and
//! one reader task; the datagrams go to the core through a bounded queue
//! (`FORWARD_QUEUE`: when the core lags, the reader waits and the kernel's
//! socket buffer drops the excess) and the core's replies are sent from the
//! same socket without waiting (a full socket buffer drops them, as the
//! kernel would for any UDP sender).
//!
//! Nothing here needs a privilege: TCP/UDP sockets to any address, listeners
//! on unprivileged ports, and ICMP echo through `SOCK_DGRAM`/`IPPROTO_ICMP`
//! ping sockets, which Linux allows to groups in `net.ipv4.ping_group_range`
//! (when it doesn't, one log line says so and echo requests are dropped).

use crate::netstack::{
    ConnId, FailKind, HostInput, Kind, NetEvent, Netstack, NetstackConfig, Proto,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Largest single host read (matches the core's chunk).
const READ_CHUNK: usize = 64 * 1024;

enum WriteCmd {
    Data(Vec<u8>),
    Shutdown,
}

struct Handles {
    write: UnboundedSender<WriteCmd>,
    grant: UnboundedSender<usize>,
}

/// What [`NetShell::next`] yields.
pub enum NetInput {
    Host(ConnId, HostInput),
    Accept(SocketAddr, TcpStream),
    /// A datagram on UDP port forward `.0` (its index in the forward list)
    /// from host client `.1`.
    Datagram(usize, SocketAddr, Vec<u8>),
}

/// Datagrams read from the UDP forwards' sockets and not yet taken by the
/// core: the reader tasks wait when this many are queued, so a flood fills
/// the kernel's socket buffer (and is dropped there), not this process.
const FORWARD_QUEUE: usize = 256;

/// The host side of netstack mode.
pub struct NetShell {
    pub core: Netstack,
    tx: UnboundedSender<(ConnId, HostInput)>,
    rx: UnboundedReceiver<(ConnId, HostInput)>,
    accept_rx: UnboundedReceiver<(SocketAddr, TcpStream)>,
    dgram_rx: tokio::sync::mpsc::Receiver<(usize, SocketAddr, Vec<u8>)>,
    /// The UDP forwards' listening sockets, by forward index.
    udp_forwards: HashMap<usize, std::sync::Arc<UdpSocket>>,
    conns: HashMap<ConnId, Handles>,
    connect_timeout: Duration,
    ping_warned: bool,
}

/// The first `nameserver` in resolv.conf text.
pub fn resolver_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|rest| {
            let a = rest.trim();
            // Strip an IPv6 zone (fe80::1%eth0): a relay can't use it.
            let a = a.split('%').next().unwrap_or(a);
            a.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

impl NetShell {
    /// Builds the host side. Must run inside the tokio runtime (binds the
    /// port-forward listeners).
    pub async fn new(
        cfg: NetstackConfig,
        local_addrs: Vec<IpAddr>,
        mtu: usize,
        hash_key: (u64, u64),
    ) -> anyhow::Result<NetShell> {
        use anyhow::Context;
        let resolver = match cfg.dns_upstream {
            Some(a) => Some(a),
            None if cfg.dns => {
                let r = std::fs::read_to_string("/etc/resolv.conf")
                    .ok()
                    .and_then(|t| resolver_from_resolv_conf(&t));
                if r.is_none() {
                    tracing::warn!("netstack: no nameserver in /etc/resolv.conf and no netstack.dns_upstream: DNS on the tunnel address is refused");
                }
                r
            }
            None => None,
        };
        let (accept_tx, accept_rx) = unbounded_channel();
        let (dgram_tx, dgram_rx) = tokio::sync::mpsc::channel(FORWARD_QUEUE);
        let mut udp_forwards = HashMap::new();
        for (index, f) in cfg.forwards.iter().enumerate() {
            match f.proto {
                Proto::Tcp => {
                    let l = TcpListener::bind(f.listen)
                        .await
                        .with_context(|| format!("netstack.forward: listening on {}", f.listen))?;
                    tracing::info!(listen = %f.listen, to = %f.to, "port forward (tcp)");
                    let (to, tx) = (f.to, accept_tx.clone());
                    tokio::spawn(async move {
                        loop {
                            match l.accept().await {
                                Ok((s, _)) => {
                                    if tx.send((to, s)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "forward accept");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            }
                        }
                    });
                }
                Proto::Udp => {
                    let s = UdpSocket::bind(f.listen).await.with_context(|| {
                        format!("netstack.forward: listening on udp {}", f.listen)
                    })?;
                    let s = std::sync::Arc::new(s);
                    tracing::info!(listen = %f.listen, to = %f.to, max_flows = f.max_flows, "port forward (udp)");
                    udp_forwards.insert(index, s.clone());
                    let tx = dgram_tx.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        loop {
                            match s.recv_from(&mut buf).await {
                                Ok((n, from)) => {
                                    let d = buf.get(..n).unwrap_or_default().to_vec();
                                    if tx.send((index, from, d)).await.is_err() {
                                        return;
                                    }
                                }
                                // ICMP errors for earlier replies (ECONNREFUSED ...): not fatal.
                                Err(e) => tracing::debug!(error = %e, "udp forward receive"),
                            }
                        }
                    });
                }
            }
        }
        let (tx, rx) = unbounded_channel();
        let connect_timeout = cfg.connect_timeout;
        tracing::info!(
            resolver = ?resolver,
            max_connections = cfg.max_connections,
            "netstack ready"
        );
        let core = Netstack::new(
            cfg,
            local_addrs,
            resolver,
            mtu,
            hash_key,
            std::time::Instant::now(),
        );
        Ok(NetShell {
            core,
            tx,
            rx,
            accept_rx,
            dgram_rx,
            udp_forwards,
            conns: HashMap::new(),
            connect_timeout,
            ping_warned: false,
        })
    }

    /// The next host-side happening: a socket task's report or an accepted
    /// port-forward connection.
    pub async fn next(&mut self) -> NetInput {
        tokio::select! {
            Some((id, input)) = self.rx.recv() => NetInput::Host(id, input),
            Some((to, s)) = self.accept_rx.recv() => NetInput::Accept(to, s),
            Some((f, from, d)) = self.dgram_rx.recv() => NetInput::Datagram(f, from, d),
            else => std::future::pending().await,
        }
    }

    /// A hot reload's netstack settings (see [`Netstack::reconfigure`]).
    pub fn reconfigure(&mut self, new: &NetstackConfig) {
        self.core.reconfigure(new);
        self.connect_timeout = self.core.config().connect_timeout;
    }

    /// Hands a host-side happening to the core.
    pub fn handle(&mut self, input: NetInput, now: std::time::Instant) {
        match input {
            NetInput::Host(id, input) => self.core.handle_host(id, input, now),
            NetInput::Accept(to, s) => self.on_accept(to, s, now),
            NetInput::Datagram(f, from, d) => self.core.handle_forward_datagram(f, from, &d, now),
        }
    }

    /// Takes a port-forward connection: a flow in the core and its relay tasks.
    pub fn on_accept(&mut self, to: SocketAddr, s: TcpStream, now: std::time::Instant) {
        match self.core.open_outbound(to, now) {
            Some(id) => {
                let h = spawn_tcp_relay(id, s, self.tx.clone());
                self.conns.insert(id, h);
            }
            None => {
                tracing::info!(%to, "port forward refused: connection limit or no tunnel address of that family")
            }
        }
    }

    /// Turns the core's events into host socket work. Returns true if any.
    pub fn dispatch(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.core.poll_event() {
            any = true;
            match ev {
                NetEvent::Connect { id, kind, target } => {
                    let h = match kind {
                        Kind::Tcp => {
                            spawn_tcp_connect(id, target, self.connect_timeout, self.tx.clone())
                        }
                        Kind::Udp => spawn_udp(id, target, self.tx.clone()),
                        Kind::Ping => match ping_socket(target) {
                            Ok(s) => spawn_ping(id, s, self.tx.clone()),
                            Err(e) => {
                                if !self.ping_warned {
                                    self.ping_warned = true;
                                    tracing::warn!(error = %e, "netstack: ICMP echo cannot be relayed: unprivileged ping sockets are not allowed for this group (sysctl net.ipv4.ping_group_range); echo requests are dropped");
                                }
                                let _ = self.tx.send((id, HostInput::Failed(FailKind::Other)));
                                continue;
                            }
                        },
                    };
                    self.conns.insert(id, h);
                }
                NetEvent::ToHost { id, data } => {
                    if let Some(h) = self.conns.get(&id) {
                        let _ = h.write.send(WriteCmd::Data(data));
                    }
                }
                NetEvent::Grant { id, bytes } => {
                    if let Some(h) = self.conns.get(&id) {
                        let _ = h.grant.send(bytes);
                    }
                }
                NetEvent::ShutdownHost { id } => {
                    if let Some(h) = self.conns.get(&id) {
                        let _ = h.write.send(WriteCmd::Shutdown);
                    }
                }
                NetEvent::Close { id } => {
                    // Dropping the senders ends both tasks (and closes the socket).
                    self.conns.remove(&id);
                }
                NetEvent::ForwardReply { forward, to, data } => {
                    // Non-blocking: a full socket buffer drops the datagram,
                    // as the kernel would.
                    if let Some(s) = self.udp_forwards.get(&forward) {
                        if let Err(e) = s.try_send_to(&data, to) {
                            tracing::debug!(%to, error = %e, "udp forward reply");
                        }
                    }
                }
            }
        }
        any
    }
}

fn spawn_tcp_connect(
    id: ConnId,
    target: SocketAddr,
    timeout: Duration,
    tx: UnboundedSender<(ConnId, HostInput)>,
) -> Handles {
    let (wtx, wrx) = unbounded_channel();
    let (gtx, grx) = unbounded_channel();
    tokio::spawn(async move {
        let s = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%target, error = %e, "netstack: host connect failed");
                let _ = tx.send((id, HostInput::Failed(FailKind::from_io(&e))));
                return;
            }
            Err(_) => {
                let _ = tx.send((id, HostInput::Failed(FailKind::TimedOut)));
                return;
            }
        };
        let _ = tx.send((id, HostInput::Connected));
        run_tcp_relay(id, s, wrx, grx, tx);
    });
    Handles {
        write: wtx,
        grant: gtx,
    }
}

fn spawn_tcp_relay(id: ConnId, s: TcpStream, tx: UnboundedSender<(ConnId, HostInput)>) -> Handles {
    let (wtx, wrx) = unbounded_channel();
    let (gtx, grx) = unbounded_channel();
    run_tcp_relay(id, s, wrx, grx, tx);
    Handles {
        write: wtx,
        grant: gtx,
    }
}

/// Starts the reader and writer tasks of a connected host TCP socket.
fn run_tcp_relay(
    id: ConnId,
    s: TcpStream,
    mut wrx: UnboundedReceiver<WriteCmd>,
    mut grx: UnboundedReceiver<usize>,
    tx: UnboundedSender<(ConnId, HostInput)>,
) {
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let txr = tx.clone();
    tokio::spawn(async move {
        let mut credit = 0usize;
        loop {
            if credit == 0 {
                match grx.recv().await {
                    Some(n) => credit += n,
                    None => return,
                }
                continue;
            }
            // A fresh buffer per read, handed over as it is: no copy, and an
            // idle flow holds no read buffer.
            let want = credit.min(READ_CHUNK);
            let mut buf = Vec::with_capacity(want);
            tokio::select! {
                g = grx.recv() => match g {
                    Some(n) => credit += n,
                    None => return,
                },
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => {
                        let _ = txr.send((id, HostInput::Eof));
                        // Stay until the flow is closed (dropping rd is harmless).
                        while grx.recv().await.is_some() {}
                        return;
                    }
                    Ok(n) => {
                        credit = credit.saturating_sub(n);
                        let _ = txr.send((id, HostInput::Data(buf)));
                    }
                    Err(_) => {
                        let _ = txr.send((id, HostInput::Closed));
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(cmd) = wrx.recv().await {
            match cmd {
                WriteCmd::Data(d) => {
                    if wr.write_all(&d).await.is_err() {
                        let _ = tx.send((id, HostInput::Closed));
                        return;
                    }
                    let _ = tx.send((id, HostInput::Written(d.len())));
                }
                WriteCmd::Shutdown => {
                    let _ = wr.shutdown().await;
                }
            }
        }
    });
}

/// A connected UDP socket towards `target`; datagrams both ways.
fn spawn_udp(id: ConnId, target: SocketAddr, tx: UnboundedSender<(ConnId, HostInput)>) -> Handles {
    let (wtx, wrx) = unbounded_channel();
    let (gtx, grx) = unbounded_channel();
    tokio::spawn(async move {
        let bind: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send((id, HostInput::Failed(FailKind::from_io(&e))));
                return;
            }
        };
        if let Err(e) = s.connect(target).await {
            // No route: the core answers with an ICMP unreachable; then the
            // flow ends (the next datagram tries again).
            let _ = tx.send((id, HostInput::Failed(FailKind::from_io(&e))));
            let _ = tx.send((id, HostInput::Closed));
            return;
        }
        datagram_loop(id, s, wrx, grx, tx).await;
    });
    Handles {
        write: wtx,
        grant: gtx,
    }
}

/// An unprivileged ICMP echo socket connected to `target`.
fn ping_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto) = if target.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    let s = Socket::new(domain, Type::DGRAM, Some(proto))?;
    s.set_nonblocking(true)?;
    s.connect(&target.into())?;
    UdpSocket::from_std(std::net::UdpSocket::from(s))
}

fn spawn_ping(id: ConnId, s: UdpSocket, tx: UnboundedSender<(ConnId, HostInput)>) -> Handles {
    let (wtx, wrx) = unbounded_channel();
    let (gtx, grx) = unbounded_channel();
    tokio::spawn(datagram_loop(id, s, wrx, grx, tx));
    Handles {
        write: wtx,
        grant: gtx,
    }
}

/// The ICMP errors a connected datagram socket reports that the core turns
/// into ICMP unreachable towards the client; `None` for other errors.
fn unreachable(e: &std::io::Error) -> Option<FailKind> {
    match FailKind::from_io(e) {
        k @ (FailKind::Refused | FailKind::HostUnreachable | FailKind::NetUnreachable) => Some(k),
        _ => None,
    }
}

/// Sends what the core hands over; receives as far as granted.
async fn datagram_loop(
    id: ConnId,
    s: UdpSocket,
    mut wrx: UnboundedReceiver<WriteCmd>,
    mut grx: UnboundedReceiver<usize>,
    tx: UnboundedSender<(ConnId, HostInput)>,
) {
    let mut credit = 0usize;
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            c = wrx.recv() => match c {
                Some(WriteCmd::Data(d)) => {
                    if let Err(e) = s.send(&d).await {
                        match unreachable(&e) {
                            Some(k) => {
                                let _ = tx.send((id, HostInput::Failed(k)));
                            }
                            None => tracing::debug!(error = %e, "netstack: datagram send"),
                        }
                    }
                    let _ = tx.send((id, HostInput::Written(d.len())));
                }
                Some(WriteCmd::Shutdown) => {}
                None => return,
            },
            g = grx.recv() => match g {
                Some(n) => credit += n,
                None => return,
            },
            r = s.recv(&mut buf), if credit > 0 => match r {
                Ok(n) => {
                    credit = credit.saturating_sub(n.max(1));
                    let _ = tx.send((id, HostInput::Data(buf.get(..n).unwrap_or_default().to_vec())));
                }
                // ICMP port/host/net unreachable for an earlier send
                // (a connected socket reports it on the next call).
                Err(e) => match unreachable(&e) {
                    Some(k) => {
                        let _ = tx.send((id, HostInput::Failed(k)));
                    }
                    None => tracing::debug!(error = %e, "netstack: datagram receive"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_first_nameserver() {
        let t = "# comment\nsearch example\nnameserver 203.0.113.53\nnameserver 8.8.8.8\n";
        assert_eq!(
            resolver_from_resolv_conf(t),
            Some("203.0.113.53:53".parse().unwrap())
        );
        assert_eq!(
            resolver_from_resolv_conf("nameserver fe80::1%eth0\n"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(resolver_from_resolv_conf("search x\n"), None);
    }
}
