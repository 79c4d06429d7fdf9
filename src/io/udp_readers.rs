//! WireGuard UDP receive on threads, one per `SO_REUSEPORT` socket
//! (`[interface] udp_sockets`): issue 8's item 4 for the socket receive
//! (`recvmmsg` was a sixth of the gateway's CPU in the session-5 profile,
//! on the event loop).
//!
//! With N > 1 the listen port is bound N times with `SO_REUSEPORT`
//! ([`super::tun::bind_udp_group`]); the kernel gives every datagram to the
//! socket its 4-tuple hashes to, so each peer endpoint's datagrams land on
//! one socket, in order. Each socket has a reader thread (`udp-rx-N`) that
//! waits for it (`poll`), calls `recvmmsg` (GRO on, as on the loop) into a
//! batch buffer ([`UdpRx`]) and hands the filled buffer to the event loop over
//! a bounded channel; the loop decrypts (by peer on the crypto threads) and
//! runs the firewall exactly as for a batch it read itself, then gives the
//! buffer back. The loop sends from the first socket (same port).
//!
//! Promises: one reader per socket and batches handed over in the order they
//! were read, so a peer's datagrams keep their order (a peer that roams to
//! another endpoint may land on another socket; WireGuard's replay window
//! accepts that reordering, as it does the network's); no lock on the data
//! path (channels); at most [`DEPTH`] + 1 buffers per reader, so when the
//! loop falls behind a reader waits for a buffer and the socket's receive
//! buffer absorbs (then drops) the excess, as it does for the loop alone;
//! the threads end when the loop drops its [`UdpReaders`] (within
//! [`POLL_MS`]). A socket error other than "nothing to read" is counted by
//! the reader and never ends it (ICMP errors surface as receive errors).

use super::batch::UdpRx;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Filled buffers in flight per reader (handed over, not yet given back).
pub const DEPTH: usize = 2;
/// How long a reader waits for its socket before checking for shutdown.
pub const POLL_MS: i32 = 100;

/// A filled buffer: what socket `socket`'s reader received in one
/// `recvmmsg` call.
pub struct UdpBatch {
    pub socket: usize,
    pub rx: UdpRx,
}

/// The loop's side of the reader threads.
pub struct UdpReaders {
    batches: tokio::sync::mpsc::Receiver<UdpBatch>,
    back: Vec<SyncSender<UdpRx>>,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
}

impl UdpReaders {
    /// Starts one reader per socket (each keeps its socket open until it
    /// ends); `gro`: whether GRO is on; `max_datagram`: the buffer slot size
    /// without GRO (as [`UdpRx::new`]).
    pub fn start(
        sockets: Vec<std::net::UdpSocket>,
        gro: bool,
        max_datagram: usize,
    ) -> std::io::Result<UdpReaders> {
        let (to_loop, batches) = tokio::sync::mpsc::channel(sockets.len().max(1) * DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut back = Vec::with_capacity(sockets.len());
        for (i, sock) in sockets.into_iter().enumerate() {
            let (give, free) = sync_channel(DEPTH + 1);
            for _ in 0..=DEPTH {
                let _ = give.send(UdpRx::new(gro, max_datagram));
            }
            back.push(give);
            let (to_loop, stop, errors) = (to_loop.clone(), stop.clone(), errors.clone());
            std::thread::Builder::new()
                .name(format!("udp-rx-{i}"))
                .spawn(move || read_loop(i, &sock, &free, &to_loop, &stop, &errors))?;
        }
        Ok(UdpReaders {
            batches,
            back,
            stop,
            errors,
        })
    }

    /// The next filled buffer (cancel-safe: a batch is never lost to a
    /// cancelled wait).
    pub async fn next(&mut self) -> Option<UdpBatch> {
        self.batches.recv().await
    }

    /// A filled buffer that is already waiting, if any (no wait).
    pub fn try_next(&mut self) -> Option<UdpBatch> {
        self.batches.try_recv().ok()
    }

    /// Gives a buffer back to its reader.
    pub fn give_back(&self, b: UdpBatch) {
        if let Some(g) = self.back.get(b.socket) {
            // never blocks: a reader has at most DEPTH + 1 buffers
            let _ = g.try_send(b.rx);
        }
    }

    /// Readers (sockets).
    pub fn threads(&self) -> usize {
        self.back.len()
    }

    /// Receive errors the readers met (other than "nothing to read").
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for UdpReaders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits up to [`POLL_MS`] for `fd` to be readable (or an error).
fn wait_readable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, POLL_MS) };
}

fn read_loop(
    i: usize,
    sock: &std::net::UdpSocket,
    free: &Receiver<UdpRx>,
    to_loop: &tokio::sync::mpsc::Sender<UdpBatch>,
    stop: &AtomicBool,
    errors: &AtomicU64,
) {
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // a free buffer first (back-pressure: the loop gives them back)
        let mut rx = match free.recv_timeout(std::time::Duration::from_millis(POLL_MS as u64)) {
            Ok(rx) => rx,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => return,
        };
        // read first, wait only when there is nothing (under load one
        // system call per batch, as on the loop)
        loop {
            if stop.load(Ordering::Relaxed) || to_loop.is_closed() {
                return;
            }
            match rx.recv(fd) {
                Ok(0) => {}
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_readable(fd);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if to_loop.blocking_send(UdpBatch { socket: i, rx }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};

    /// Two sockets on one port (SO_REUSEPORT), 32 senders, 20 datagrams
    /// each: every datagram arrives once, each sender's in order and all on
    /// one socket, and both sockets receive.
    #[test]
    fn each_sender_lands_on_one_socket_in_order() {
        let socks = super::super::tun::bind_udp_group_on([127, 0, 0, 1].into(), 0, 2)
            .expect("bind two sockets");
        let port = socks[0].local_addr().unwrap().port();
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = UdpReaders::start(socks, false, 2048).unwrap();
            assert_eq!(r.threads(), 2);
            let senders: Vec<UdpSocket> = (0..32)
                .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            let mut next = [0u8; 32];
            let mut socket_of = vec![None; 32];
            let mut per_socket = [0; 2];
            let mut got = 0;
            // a round from every sender, then read it (the receive buffers
            // hold a few hundred small datagrams, not all 640)
            for seq in 0..20u8 {
                for (s, u) in senders.iter().enumerate() {
                    u.send_to(&[s as u8, seq], to).unwrap();
                }
                while got < 32 * (usize::from(seq) + 1) {
                    let b = tokio::time::timeout(std::time::Duration::from_secs(10), r.next())
                        .await
                        .expect("datagrams lost")
                        .expect("readers gone");
                    for m in 0..b.rx.len() {
                        let (_, d, _) = b.rx.message(m).unwrap();
                        let (s, seq) = (usize::from(d[0]), d[1]);
                        assert_eq!(seq, next[s], "sender {s} out of order");
                        next[s] += 1;
                        assert_eq!(
                            *socket_of[s].get_or_insert(b.socket),
                            b.socket,
                            "sender {s} on two sockets"
                        );
                        per_socket[b.socket] += 1;
                        got += 1;
                    }
                    r.give_back(b);
                }
            }
            assert!(per_socket.iter().all(|&n| n > 0), "{per_socket:?}");
            assert_eq!(r.errors(), 0);
        });
    }
}
