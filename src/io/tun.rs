//! Opening the TUN device and the WireGuard UDP socket (before the privilege drop).
//!
//! TUN: the `tun` crate creates a layer-3, non-persistent device without
//! packet information (`IFF_TUN | IFF_NO_PI`), sets the MTU, the first IPv4
//! address with its netmask, and brings it up (SIOCSIF* ioctls). The kernel
//! then adds the connected route for each address's prefix, so in routed mode
//! the host reaches the tunnel prefix through the TUN with no extra setup.
//! The `tun` crate sets one IPv4 address only, so:
//! - IPv6 addresses are added with the `SIOCSIFADDR` ioctl on an `AF_INET6`
//!   socket and a `struct in6_ifreq` (what `ifconfig` does; net/ipv6/addrconf.c
//!   `addrconf_add_ifaddr`);
//! - further IPv4 addresses (rare) with `ip -4 addr add` (iproute2), because
//!   the ioctl interface can only replace the primary IPv4 address; adding
//!   secondaries needs rtnetlink, which this crate does not implement.
//!
//! With `interface.tun_queues` > 1 the device is multi-queue
//! (`IFF_MULTI_QUEUE`): created here with one `TUNSETIFF` per queue, since
//! the crate opens single-queue devices only, then configured by the crate
//! through its first fd ([`open_tun_queues`]).
//!
//! Because the device is not persistent, it disappears with the last fd, that
//! is when the process exits for any reason (clean shutdown, crash, SIGKILL):
//! its addresses and connected routes go with it, and nothing is left that
//! could route traffic around the gateway (fail closed). We never enable IP
//! forwarding or touch any other interface.
//!
//! UDP: one socket on `[::]:port` with `IPV6_V6ONLY` off (IPv4 peers appear as
//! `::ffff:a.b.c.d`); if IPv6 is unavailable, `0.0.0.0:port`.

use anyhow::{anyhow, bail, Context};
use ipnetwork::IpNetwork;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

/// Opens and configures the TUN device (synchronous; no runtime needed).
pub fn open_tun(name: &str, mtu: u16, addresses: &[IpNetwork]) -> anyhow::Result<tun::Device> {
    open_tun_with(name, mtu, addresses, false)
}

/// [`open_tun`], optionally with `IFF_VNET_HDR` (every read and write then
/// carries a `virtio_net_hdr`: see `io::offload`).
pub fn open_tun_with(
    name: &str,
    mtu: u16,
    addresses: &[IpNetwork],
    vnet_hdr: bool,
) -> anyhow::Result<tun::Device> {
    Ok(open_tun_queues(name, mtu, addresses, vnet_hdr, 1)?.0)
}

/// [`open_tun_with`] with `queues` queues: more than one makes a
/// multi-queue device (`IFF_MULTI_QUEUE`, one fd per queue): the first
/// queue is the returned device, the others are the fds after it. The
/// kernel spreads the packets it hands over among the queues (by the queue
/// that last wrote each flow, else by flow hash), and every queue may be
/// written. The `tun` crate creates single-queue devices only, so a
/// multi-queue device is created here (`TUNSETIFF` once per queue, the same
/// flags each time) and the crate takes over its first fd to configure it.
pub fn open_tun_queues(
    name: &str,
    mtu: u16,
    addresses: &[IpNetwork],
    vnet_hdr: bool,
    queues: usize,
) -> anyhow::Result<(tun::Device, Vec<OwnedFd>)> {
    let mut cfg = tun::Configuration::default();
    cfg.tun_name(name).mtu(mtu).up();
    #[cfg(target_os = "linux")]
    cfg.platform_config(|p| {
        p.vnet_hdr(vnet_hdr);
    });
    let mut v4 = addresses.iter().filter_map(|a| match a {
        IpNetwork::V4(n) => Some(*n),
        IpNetwork::V6(_) => None,
    });
    let first_v4 = v4.next();
    if let Some(n) = first_v4 {
        cfg.address(n.ip()).netmask(n.mask());
    }
    let context =
        || format!("cannot create TUN device {name:?} (needs CAP_NET_ADMIN and /dev/net/tun)");
    let (dev, more) = if queues <= 1 {
        (tun::create(&cfg).with_context(context)?, Vec::new())
    } else {
        let mut fds = (0..queues)
            .map(|_| attach_queue(name, vnet_hdr))
            .collect::<std::io::Result<Vec<OwnedFd>>>()
            .with_context(|| format!("{} ({queues} queues)", context()))?;
        let first = fds.remove(0);
        cfg.raw_fd(first.into_raw_fd());
        let mut dev = tun::create(&cfg).with_context(context)?;
        // the crate configures only the devices it opens itself
        tun::AbstractDevice::configure(&mut dev, &cfg)
            .with_context(|| format!("cannot configure TUN device {name:?}"))?;
        (dev, fds)
    };
    for n in v4 {
        let out = std::process::Command::new("ip")
            .args(["-4", "addr", "add", &n.to_string(), "dev", name])
            .output()
            .with_context(|| format!("cannot run `ip` to add {n} to {name}"))?;
        if !out.status.success() {
            bail!(
                "adding {n} to {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    for a in addresses {
        if let IpNetwork::V6(n) = a {
            add_ipv6(name, n.ip(), n.prefix())
                .with_context(|| format!("cannot add {a} to {name} (is IPv6 disabled?)"))?;
        }
    }
    Ok((dev, more))
}

/// Opens `/dev/net/tun` and attaches the fd as one queue of the multi-queue
/// TUN device `name` (created by the first call): layer 3, no packet
/// information, optionally the vnet header.
fn attach_queue(name: &str, vnet_hdr: bool) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name)?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: a plain open of a path literal.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq that lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Adds an IPv6 address to an interface with the SIOCSIFADDR ioctl.
pub fn add_ipv6(ifname: &str, addr: Ipv6Addr, prefix: u8) -> anyhow::Result<()> {
    let cname = std::ffi::CString::new(ifname)?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error()).context("if_nametoindex");
    }
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, None).context("AF_INET6 socket")?;
    let req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: index as libc::c_int,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket takes a pointer to in6_ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e).context("SIOCSIFADDR (IPv6)");
        }
    }
    Ok(())
}

/// Binds the WireGuard UDP socket: dual-stack `[::]:port`, else `0.0.0.0:port`.
/// Returns the std socket (non-blocking) and whether it is IPv6 (dual-stack).
pub fn bind_udp(port: u16) -> anyhow::Result<(std::net::UdpSocket, bool)> {
    let (mut v, dual) = bind_udp_group(port, 1)?;
    let s = v.pop().ok_or_else(|| anyhow!("no UDP socket"))?;
    Ok((s, dual))
}

/// [`bind_udp`] `n` times on one port with `SO_REUSEPORT` when `n` > 1 (the
/// kernel then spreads datagrams over the sockets by 4-tuple hash; see
/// `io::udp_readers`). With `port` 0 the first socket picks the port and the
/// others join it. All sockets are non-blocking.
pub fn bind_udp_group(port: u16, n: usize) -> anyhow::Result<(Vec<std::net::UdpSocket>, bool)> {
    match bind_udp_group_on(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port, n) {
        Ok(v) => Ok((v, true)),
        Err(e6) => {
            let v = bind_udp_group_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port, n)
                .map_err(|e4| anyhow!("cannot bind UDP port {port}: [::]: {e6}; 0.0.0.0: {e4}"))?;
            tracing::warn!(error = %e6, "IPv6 unavailable: WireGuard listens on IPv4 only");
            Ok((v, false))
        }
    }
}

/// `n` UDP sockets on `ip:port` (IPv6: dual-stack), `SO_REUSEPORT` when
/// `n` > 1.
pub fn bind_udp_group_on(
    ip: IpAddr,
    port: u16,
    n: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let mut port = port;
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let s = Socket::new(
            Domain::for_address(SocketAddr::new(ip, 0)),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if ip.is_ipv6() {
            s.set_only_v6(false)?;
        }
        if n > 1 {
            let one: libc::c_int = 1;
            // SAFETY: SO_REUSEPORT takes an int; the pointer and length match.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        s.bind(&SocketAddr::new(ip, port).into())?;
        s.set_nonblocking(true)?;
        let s: std::net::UdpSocket = s.into();
        port = s.local_addr()?.port();
        out.push(s);
    }
    Ok(out)
}
