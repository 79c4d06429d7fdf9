//! The WireGuard peer table: one boringtun `Tunn` per peer, datagram
//! demultiplexing, endpoint roaming, handshake rate limits, the kill switch.
//!
//! [`WgDevice`] turns UDP datagrams into decrypted IP packets tagged with the
//! sending peer's zone, and IP packets for a peer zone into datagrams. It owns
//! no socket: every output is a [`WgOutput`] the IO shell (`crate::io`) sends.
//!
//! It follows the WireGuard whitepaper and boringtun's own `Device`:
//! - demultiplexing (whitepaper 5.4): handshake initiations name no peer, so the
//!   initiator's static key is decrypted (`parse_handshake_anon`, one DH) and
//!   looked up; responses, cookie replies and data carry our receiver index,
//!   whose upper 24 bits (`Tunn::new`'s `index`, shifted left by 8) name the
//!   peer slot directly: `slot = (idx >> 8) - base` with a random 24-bit base;
//! - DoS defence (5.3): the mac1 check and boringtun's shared cookie
//!   `RateLimiter` run before any DH (above [`HANDSHAKE_RATE_LIMIT`] handshake
//!   messages per second we answer with cookie replies), then a per-source token
//!   bucket ([`ratelimit::SourceLimiter`], as the kernel's `ratelimiter.c`);
//! - roaming (2.1): a peer's endpoint becomes the source address of its most
//!   recent authenticated handshake or data packet (never of a cookie reply or
//!   an unauthenticated packet);
//! - cryptokey routing: the *egress* choice (AllowedIPs longest-prefix match)
//!   and the *ingress* check (a decrypted packet's source must be inside its
//!   sender's AllowedIPs) are done by the pipeline, which sees every decrypted
//!   packet with its peer zone — this layer never writes to the TUN itself;
//! - kill switch: a packet for a peer without a valid session is never sent in
//!   clear nor elsewhere. It waits (bounded: [`PENDING_MAX`] packets, at most
//!   [`PENDING_MAX_AGE`]) while a handshake runs, and is dropped and counted
//!   (`kill_switch_drops`) when the queue is full, the peer has no endpoint, the
//!   packet ages out, or the handshake gives up.
//!
//! Clock: boringtun's `Tunn` reads the monotonic clock internally (timers,
//! cookies, session expiry), so this layer is a thin IO-adjacent wrapper rather
//! than a pure sans-IO state machine. Its own logic (rate limits, queue ages)
//! still takes `now: Instant` as a parameter. Call [`WgDevice::update_timers`]
//! every 100-250 ms (boringtun's device uses 250 ms).

pub mod helping;
pub mod keys;
pub mod parallel;
pub mod quick;
pub mod ratelimit;

use crate::zone::ZoneId;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use rand::RngCore;
use ratelimit::SourceLimiter;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshake messages per second (all peers) before boringtun's rate limiter
/// answers with cookie replies. boringtun's `Device` uses 100
/// (`device/mod.rs: HANDSHAKE_RATE_LIMIT`). Note that a handshake message is
/// counted twice — once in our pre-DH check, once inside `Tunn::decapsulate` —
/// exactly as in boringtun's device, so cookies start at ~50 handshakes/s.
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Packets held per peer while its handshake runs: enough for a TCP SYN and a
/// burst of pings or DNS queries over one handshake round trip; kernel
/// WireGuard holds up to 1024 (`MAX_STAGED_PACKETS`... 128 in older kernels),
/// we keep it small because a gateway has many peers and the kill switch
/// prefers dropping to buffering.
pub const PENDING_MAX: usize = 64;
/// Longest a packet waits for a session: one handshake attempt
/// (REKEY_TIMEOUT = 5 s, whitepaper 6.4). Older packets are dropped (kill switch).
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(5);
/// Sessions are unusable after REJECT_AFTER_TIME (whitepaper 6.2: 180 s).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Largest datagram or IP packet handled: the IP total-length limit, plus the
/// WireGuard data overhead (32 bytes: 16 header + 16 tag).
pub const MAX_PACKET: usize = 65535;
const SCRATCH_LEN: usize = MAX_PACKET + DATA_OVERHEAD;
/// Bytes WireGuard adds to an IP packet (whitepaper 5.4.6: 4 type + 4 index +
/// 8 counter + 16 Poly1305 tag; boringtun `DATA_OVERHEAD_SZ`, no padding).
pub const DATA_OVERHEAD: usize = 32;
/// A buffer this large holds any decrypted or encrypted packet
/// ([`WgDevice::handle_datagram_into`], [`WgDevice::encapsulate_into`]).
pub const BUF_LEN: usize = SCRATCH_LEN;
/// Indices are 24 bits (`Tunn::new` shifts them left by 8).
const INDEX_MASK: u32 = 0x00ff_ffff;

/// What a peer's `Tunn` made of one datagram (see [`WgDevice::settle`]).
enum Decap {
    /// Accepted, nothing to deliver (a keepalive, a cookie reply).
    Done,
    Rejected(WireGuardError),
    /// A reply to send back (handshake response, keepalive, cookie).
    Network(Vec<u8>),
    /// A decrypted IP packet of this length at the start of the buffer.
    Tunnel(usize),
}

/// One WireGuard peer, as the WireGuard layer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// The peer's zone (`ZoneId::peer(i)` for the i-th peer of the config).
    pub zone: ZoneId,
    pub name: String,
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    /// Initial endpoint; roaming replaces it.
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives (0 or None: off).
    pub persistent_keepalive: Option<u16>,
}

/// The WireGuard interface: our key, port and peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConfig {
    pub private_key: [u8; 32],
    pub listen_port: u16,
    pub peers: Vec<WgPeer>,
}

/// Something the IO shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgOutput {
    /// Send this datagram to this address over the WireGuard UDP socket.
    Network { to: SocketAddr, data: Vec<u8> },
    /// A decrypted IP packet from the peer of `zone`: hand it to the pipeline
    /// with `zone` as ingress.
    Packet { zone: ZoneId, data: Vec<u8> },
}

/// What [`WgDevice::encapsulate`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapStatus {
    /// Encrypted and queued as a `WgOutput::Network`.
    Sent,
    /// Held until the handshake (started or already running) completes.
    Queued,
    /// Dropped: the peer has no session and none can be made now, or the
    /// hold queue is full. Counted as a kill-switch drop.
    KillSwitch,
    /// No peer has this zone (a bug in the caller's mapping).
    NoPeer,
    /// Larger than [`MAX_PACKET`].
    TooBig,
}

/// What [`WgDevice::encapsulate_into`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapInto {
    /// Encrypted into the first `len` bytes of the caller's buffer: send
    /// them to `to`.
    Written { to: SocketAddr, len: usize },
    /// Anything else, as [`WgDevice::encapsulate`] reports it (datagrams it
    /// produced, such as a handshake initiation, are in `out`).
    Other(EncapStatus),
}

/// Errors building the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WgError {
    #[error("peer {name}: public key is also used by peer {other}")]
    DuplicateKey { name: String, other: String },
    #[error("peer {name}: zone {zone:?} is not a peer zone or is used twice")]
    BadZone { name: String, zone: ZoneId },
    #[error("peer {name}: its public key is the gateway's own")]
    OwnKey { name: String },
    #[error("too many peers ({0}); at most 2^24")]
    TooManyPeers(usize),
}

/// Device-wide counters (datagrams that matched no peer or were refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WgCounters {
    /// Not a WireGuard message (wrong type or length).
    pub invalid: u64,
    /// Handshake messages with a bad mac1.
    pub bad_mac: u64,
    /// Cookie replies sent (under load).
    pub cookies_sent: u64,
    /// Handshake initiations refused by the per-source limit.
    pub handshake_rate_limited: u64,
    /// Authenticated-looking messages for no known peer (unknown key or index).
    pub unknown_peer: u64,
    /// Messages a peer's `Tunn` refused (bad tag, replay, stale index, ...).
    pub rejected: u64,
    /// Packets larger than `MAX_PACKET`.
    pub too_big: u64,
}

/// What [`WgDevice::update_peers`] did, by peer name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Zone, name, endpoint or allowed IPs changed; session kept.
    pub changed: Vec<String>,
    /// Preshared key or keepalive changed: new session.
    pub rekeyed: Vec<String>,
    pub kept: Vec<String>,
}

/// Per-peer status, as `wg show` would print it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    pub zone: ZoneId,
    pub name: String,
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// Time since the current session's handshake, if there is a session.
    pub last_handshake: Option<Duration>,
    pub has_session: bool,
    /// Decrypted payload bytes received / plaintext bytes sent (boringtun's counters).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets dropped because no session could carry them.
    pub kill_switch_drops: u64,
    /// Packets waiting for a handshake now.
    pub pending: usize,
    /// Times the endpoint changed (roaming).
    pub roams: u64,
}

struct PeerState {
    cfg: WgPeer,
    tunn: Box<Tunn>,
    endpoint: Option<SocketAddr>,
    pending: VecDeque<(Instant, Vec<u8>)>,
    kill_switch_drops: u64,
    roams: u64,
    expired_logged: bool,
    /// Removed by [`WgDevice::update_peers`]: the slot is kept (so receiver
    /// indices of other peers stay valid) until a new peer reuses it.
    removed: bool,
}

impl PeerState {
    fn has_session(&self) -> bool {
        self.tunn
            .time_since_last_handshake()
            .is_some_and(|d| d < REJECT_AFTER_TIME)
    }
}

/// The peer table. See the module documentation.
pub struct WgDevice {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    listen_port: u16,
    peers: Vec<PeerState>,
    by_key: HashMap<[u8; 32], usize>,
    by_zone: Vec<Option<usize>>,
    index_base: u32,
    limiter: Arc<RateLimiter>,
    sources: SourceLimiter,
    counters: WgCounters,
    scratch: Vec<u8>,
    /// Decryption buffer of the allocating [`WgDevice::handle_datagram`]
    /// (sized on first use).
    decap: Vec<u8>,
    last_sweep: Option<Instant>,
}

impl std::fmt::Debug for WgDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgDevice")
            .field("public", &keys::encode_key(self.public.as_bytes()))
            .field("listen_port", &self.listen_port)
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// Canonical form of a UDP source: IPv4-mapped IPv6 (from a dual-stack
/// socket) becomes plain IPv4, so endpoints and rate-limit keys compare equal.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn is_cookie_reply(d: &[u8]) -> bool {
    d.first() == Some(&3) && d.len() == 64
}

impl WgDevice {
    /// Builds the peer table. The source-limiter hash key and the index base
    /// come from the OS random source.
    pub fn new(cfg: WgConfig) -> Result<Self, WgError> {
        let mut rng = rand::rngs::OsRng;
        Self::with_keys(cfg, (rng.next_u64(), rng.next_u64()), rng.next_u32())
    }

    /// Like [`WgDevice::new`] with the hash key and index base given (tests).
    pub fn with_keys(
        cfg: WgConfig,
        hash_key: (u64, u64),
        index_base: u32,
    ) -> Result<Self, WgError> {
        if cfg.peers.len() > INDEX_MASK as usize {
            return Err(WgError::TooManyPeers(cfg.peers.len()));
        }
        let secret = x25519::StaticSecret::from(cfg.private_key);
        let public = x25519::PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let index_base = index_base & INDEX_MASK;
        let mut dev = WgDevice {
            secret,
            public,
            listen_port: cfg.listen_port,
            peers: Vec::with_capacity(cfg.peers.len()),
            by_key: HashMap::new(),
            by_zone: Vec::new(),
            index_base,
            limiter,
            sources: SourceLimiter::new(
                SourceLimiter::DEFAULT_PER_SEC,
                SourceLimiter::DEFAULT_BURST,
                hash_key,
            ),
            counters: WgCounters::default(),
            scratch: vec![0; SCRATCH_LEN],
            decap: Vec::new(),
            last_sweep: None,
        };
        for (slot, p) in cfg.peers.into_iter().enumerate() {
            if p.public_key == *dev.public.as_bytes() {
                return Err(WgError::OwnKey { name: p.name });
            }
            if let Some(&other) = dev.by_key.get(&p.public_key) {
                let other = dev
                    .peers
                    .get(other)
                    .map(|o| o.cfg.name.clone())
                    .unwrap_or_default();
                return Err(WgError::DuplicateKey {
                    name: p.name,
                    other,
                });
            }
            let zi = usize::from(p.zone.0);
            if !p.zone.is_peer() || dev.by_zone.get(zi).is_some_and(Option::is_some) {
                return Err(WgError::BadZone {
                    name: p.name,
                    zone: p.zone,
                });
            }
            if dev.by_zone.len() <= zi {
                dev.by_zone.resize(zi + 1, None);
            }
            if let Some(z) = dev.by_zone.get_mut(zi) {
                *z = Some(slot);
            }
            dev.by_key.insert(p.public_key, slot);
            let st = dev.new_peer_state(p, slot);
            dev.peers.push(st);
        }
        Ok(dev)
    }

    fn new_peer_state(&self, p: WgPeer, slot: usize) -> PeerState {
        let index = (self.index_base.wrapping_add(slot as u32)) & INDEX_MASK;
        let tunn = Tunn::new(
            self.secret.clone(),
            x25519::PublicKey::from(p.public_key),
            p.preshared_key,
            p.persistent_keepalive.filter(|k| *k > 0),
            index,
            Some(Arc::clone(&self.limiter)),
        );
        PeerState {
            endpoint: p.endpoint.map(canonical),
            cfg: p,
            tunn: Box::new(tunn),
            pending: VecDeque::new(),
            kill_switch_drops: 0,
            roams: 0,
            expired_logged: false,
            removed: false,
        }
    }

    /// Applies a new peer list without a restart (a reload). Peers are matched
    /// by public key:
    /// - a kept peer keeps its boringtun session, counters and roamed endpoint
    ///   (its zone and name follow the new config; a changed configured
    ///   endpoint replaces the current one);
    /// - a peer whose preshared key or keepalive changed gets a fresh `Tunn`
    ///   in the same slot (it handshakes again: the key schedule changed);
    /// - a removed peer's slot is retired (its session dies, packets for it
    ///   are refused as from an unknown peer); new peers reuse retired slots
    ///   first, so the slot table does not grow with churn.
    ///
    /// The whole list is validated first (own key, duplicate keys, zones);
    /// on error nothing changes.
    pub fn update_peers(&mut self, peers: Vec<WgPeer>) -> Result<PeerChanges, WgError> {
        if peers.len() > INDEX_MASK as usize {
            return Err(WgError::TooManyPeers(peers.len()));
        }
        let mut keys: HashMap<[u8; 32], &str> = HashMap::new();
        let mut zones = std::collections::HashSet::new();
        for p in &peers {
            if p.public_key == *self.public.as_bytes() {
                return Err(WgError::OwnKey {
                    name: p.name.clone(),
                });
            }
            if let Some(other) = keys.insert(p.public_key, &p.name) {
                return Err(WgError::DuplicateKey {
                    name: p.name.clone(),
                    other: other.to_string(),
                });
            }
            if !p.zone.is_peer() || !zones.insert(p.zone) {
                return Err(WgError::BadZone {
                    name: p.name.clone(),
                    zone: p.zone,
                });
            }
        }
        let mut ch = PeerChanges::default();
        // retire peers that are gone
        for st in self.peers.iter_mut().filter(|st| !st.removed) {
            if !keys.contains_key(&st.cfg.public_key) {
                st.removed = true;
                st.kill_switch_drops += st.pending.len() as u64;
                st.pending.clear();
                self.by_key.remove(&st.cfg.public_key);
                ch.removed.push(st.cfg.name.clone());
            }
        }
        for p in peers {
            match self.by_key.get(&p.public_key).copied() {
                Some(slot) => {
                    let rebuild = match self.peers.get(slot) {
                        Some(st) => {
                            st.cfg.preshared_key != p.preshared_key
                                || st.cfg.persistent_keepalive != p.persistent_keepalive
                        }
                        None => continue,
                    };
                    if rebuild {
                        let mut fresh = self.new_peer_state(p.clone(), slot);
                        if let Some(old) = self.peers.get(slot) {
                            fresh.endpoint = p.endpoint.map(canonical).or(old.endpoint);
                            fresh.kill_switch_drops = old.kill_switch_drops;
                            fresh.roams = old.roams;
                        }
                        if let Some(st) = self.peers.get_mut(slot) {
                            *st = fresh;
                        }
                        ch.rekeyed.push(p.name.clone());
                    } else if let Some(st) = self.peers.get_mut(slot) {
                        let changed = st.cfg != p;
                        if p.endpoint != st.cfg.endpoint {
                            if let Some(e) = p.endpoint {
                                st.endpoint = Some(canonical(e));
                            }
                        }
                        st.cfg = p.clone();
                        if changed {
                            ch.changed.push(p.name.clone());
                        } else {
                            ch.kept.push(p.name.clone());
                        }
                    }
                }
                None => {
                    let slot = self
                        .peers
                        .iter()
                        .position(|st| st.removed)
                        .unwrap_or(self.peers.len());
                    self.by_key.insert(p.public_key, slot);
                    ch.added.push(p.name.clone());
                    let st = self.new_peer_state(p, slot);
                    match self.peers.get_mut(slot) {
                        Some(old) => *old = st,
                        None => self.peers.push(st),
                    }
                }
            }
        }
        self.by_zone.clear();
        for (slot, st) in self.peers.iter().enumerate() {
            if st.removed {
                continue;
            }
            let zi = usize::from(st.cfg.zone.0);
            if self.by_zone.len() <= zi {
                self.by_zone.resize(zi + 1, None);
            }
            if let Some(z) = self.by_zone.get_mut(zi) {
                *z = Some(slot);
            }
        }
        Ok(ch)
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn counters(&self) -> WgCounters {
        self.counters
    }

    fn slot_of_zone(&self, zone: ZoneId) -> Option<usize> {
        self.by_zone.get(usize::from(zone.0)).copied().flatten()
    }

    fn slot_of_index(&self, receiver_idx: u32) -> Option<usize> {
        let slot = ((receiver_idx >> 8).wrapping_sub(self.index_base) & INDEX_MASK) as usize;
        (slot < self.peers.len()).then_some(slot)
    }

    /// True if the peer of `zone` has a session that can carry data now.
    pub fn has_session(&self, zone: ZoneId) -> bool {
        self.slot_of_zone(zone)
            .and_then(|s| self.peers.get(s))
            .is_some_and(PeerState::has_session)
    }

    /// The current endpoint of the peer of `zone`.
    pub fn endpoint(&self, zone: ZoneId) -> Option<SocketAddr> {
        self.slot_of_zone(zone)
            .and_then(|s| self.peers.get(s))
            .and_then(|p| p.endpoint)
    }

    /// Status of every peer, in slot order (config order until a reload
    /// adds or removes peers).
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .filter(|p| !p.removed)
            .map(Self::peer_stats)
            .collect()
    }

    fn peer_stats(p: &PeerState) -> PeerStats {
        let (last, tx, rx, _, _) = p.tunn.stats();
        PeerStats {
            zone: p.cfg.zone,
            name: p.cfg.name.clone(),
            public_key: p.cfg.public_key,
            endpoint: p.endpoint,
            has_session: p.has_session(),
            last_handshake: last,
            rx_bytes: rx as u64,
            tx_bytes: tx as u64,
            kill_switch_drops: p.kill_switch_drops,
            pending: p.pending.len(),
            roams: p.roams,
        }
    }

    /// Handles one UDP datagram received from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        out: &mut Vec<WgOutput>,
    ) {
        let mut scratch = std::mem::take(&mut self.decap);
        scratch.resize(SCRATCH_LEN, 0);
        if let Some((zone, n)) = self.handle_datagram_into(from, datagram, now, &mut scratch, out) {
            if let Some(d) = scratch.get(..n) {
                out.push(WgOutput::Packet {
                    zone,
                    data: d.to_vec(),
                });
            }
        }
        self.decap = scratch;
    }

    /// The batch-friendly form of [`WgDevice::handle_datagram`]: a decrypted
    /// IP packet is written into `dst` (at least [`MAX_PACKET`] + 32 bytes,
    /// else boringtun refuses it) and returned as `(zone, length)` instead of
    /// an allocated `WgOutput::Packet`; everything else (handshake replies,
    /// cookies, packets that waited for the session) still goes to `out`.
    /// `dst` is also the scratch buffer for those, so its content is
    /// unspecified when `None` is returned.
    pub fn handle_datagram_into(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        dst: &mut [u8],
        out: &mut Vec<WgOutput>,
    ) -> Option<(ZoneId, usize)> {
        let from = canonical(from);
        if datagram.len() > MAX_PACKET {
            self.counters.too_big += 1;
            return None;
        }
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            self.counters.invalid += 1;
            return None;
        };
        let (slot, authenticates) = match packet {
            Packet::HandshakeInit(_) => {
                // mac1 (and mac2 under load) before any DH.
                let init = match self.limiter.verify_packet(Some(from.ip()), datagram, dst) {
                    Ok(Packet::HandshakeInit(p)) => p,
                    Ok(_) => {
                        self.counters.invalid += 1;
                        return None;
                    }
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.counters.cookies_sent += 1;
                        out.push(WgOutput::Network {
                            to: from,
                            data: cookie.to_vec(),
                        });
                        return None;
                    }
                    Err(_) => {
                        self.counters.bad_mac += 1;
                        return None;
                    }
                };
                if !self.sources.allow(from.ip(), now) {
                    self.counters.handshake_rate_limited += 1;
                    tracing::debug!(%from, "handshake initiation rate-limited");
                    return None;
                }
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, &init) else {
                    self.counters.unknown_peer += 1;
                    return None;
                };
                match self.by_key.get(&half.peer_static_public) {
                    Some(&s) => (s, true),
                    None => {
                        self.counters.unknown_peer += 1;
                        tracing::debug!(%from, "handshake from an unknown public key");
                        return None;
                    }
                }
            }
            Packet::HandshakeResponse(p) => match self.slot_of_index(p.receiver_idx) {
                Some(s) => (s, true),
                None => {
                    self.counters.unknown_peer += 1;
                    return None;
                }
            },
            Packet::PacketCookieReply(p) => match self.slot_of_index(p.receiver_idx) {
                Some(s) => (s, false),
                None => {
                    self.counters.unknown_peer += 1;
                    return None;
                }
            },
            Packet::PacketData(p) => match self.slot_of_index(p.receiver_idx) {
                Some(s) => (s, true),
                None => {
                    self.counters.unknown_peer += 1;
                    return None;
                }
            },
        };
        let Some(peer) = self.peers.get_mut(slot).filter(|p| !p.removed) else {
            self.counters.unknown_peer += 1;
            return None;
        };
        let res = match peer.tunn.decapsulate(Some(from.ip()), datagram, dst) {
            TunnResult::Done => Decap::Done,
            TunnResult::Err(e) => Decap::Rejected(e),
            TunnResult::WriteToNetwork(d) => Decap::Network(d.to_vec()),
            TunnResult::WriteToTunnelV4(d, _) | TunnResult::WriteToTunnelV6(d, _) => {
                Decap::Tunnel(d.len())
            }
        };
        self.settle(slot, from, authenticates, res, now, dst, out)
    }

    /// The bookkeeping after a peer's `Tunn` handled a datagram from `from`
    /// (inline, or on a crypto worker: [`parallel`]): counters, roaming on
    /// an authenticated message, boringtun's own queue after a handshake,
    /// and the packets that waited for the session. `scratch` is free for
    /// use (at least [`BUF_LEN`] bytes); a decrypted packet is not in it.
    /// Returns the zone and length of a decrypted packet.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        slot: usize,
        from: SocketAddr,
        authenticates: bool,
        res: Decap,
        now: Instant,
        scratch: &mut [u8],
        out: &mut Vec<WgOutput>,
    ) -> Option<(ZoneId, usize)> {
        let peer = self.peers.get_mut(slot)?;
        let zone = peer.cfg.zone;
        let mut authenticated = false;
        let mut flush_tunn_queue = false;
        let mut decrypted = None;
        match res {
            Decap::Done => authenticated = authenticates,
            Decap::Rejected(e) => {
                self.counters.rejected += 1;
                tracing::debug!(peer = %peer.cfg.name, %from, error = ?e, "datagram refused");
            }
            Decap::Network(d) => {
                if is_cookie_reply(&d) {
                    self.counters.cookies_sent += 1;
                } else {
                    authenticated = authenticates;
                    flush_tunn_queue = true;
                }
                out.push(WgOutput::Network { to: from, data: d });
            }
            Decap::Tunnel(n) => {
                authenticated = authenticates;
                decrypted = Some((zone, n));
            }
        }
        if authenticated {
            if peer.endpoint != Some(from) {
                if peer.endpoint.is_some() {
                    peer.roams += 1;
                    tracing::info!(peer = %peer.cfg.name, %from, "peer endpoint changed (roaming)");
                }
                peer.endpoint = Some(from);
            }
            peer.expired_logged = false;
        }
        if flush_tunn_queue {
            // boringtun's own queue (only non-empty if something bypassed ours).
            while let TunnResult::WriteToNetwork(d) = peer.tunn.decapsulate(None, &[], scratch) {
                out.push(WgOutput::Network {
                    to: from,
                    data: d.to_vec(),
                });
            }
        }
        if !peer.pending.is_empty() {
            // `dst` may hold the decrypted packet: encrypt the waiting ones
            // in our own scratch.
            Self::flush_pending(peer, &mut self.scratch, now, out);
        }
        decrypted
    }

    /// Sends what waited for a session, once there is one.
    fn flush_pending(p: &mut PeerState, scratch: &mut [u8], now: Instant, out: &mut Vec<WgOutput>) {
        if p.pending.is_empty() || !p.has_session() {
            return;
        }
        let Some(to) = p.endpoint else { return };
        while let Some((t, pkt)) = p.pending.pop_front() {
            if now.saturating_duration_since(t) > PENDING_MAX_AGE {
                p.kill_switch_drops += 1;
                continue;
            }
            if let TunnResult::WriteToNetwork(d) = p.tunn.encapsulate(&pkt, scratch) {
                out.push(WgOutput::Network {
                    to,
                    data: d.to_vec(),
                });
            }
        }
    }

    /// Encrypts an IP packet for the peer of `zone` (the pipeline's
    /// `Verdict::Forward(zone)`). Without a session, the packet waits for a
    /// handshake (which this starts) or is dropped — never sent elsewhere.
    pub fn encapsulate(
        &mut self,
        zone: ZoneId,
        packet: &[u8],
        now: Instant,
        out: &mut Vec<WgOutput>,
    ) -> EncapStatus {
        if packet.len() > MAX_PACKET {
            self.counters.too_big += 1;
            return EncapStatus::TooBig;
        }
        let Some(p) = self.slot_of_zone(zone).and_then(|s| self.peers.get_mut(s)) else {
            return EncapStatus::NoPeer;
        };
        let Some(to) = p.endpoint else {
            p.kill_switch_drops += 1;
            return EncapStatus::KillSwitch;
        };
        if p.has_session() {
            if !p.pending.is_empty() {
                Self::flush_pending(p, &mut self.scratch, now, out);
            }
            return match p.tunn.encapsulate(packet, &mut self.scratch) {
                TunnResult::WriteToNetwork(d) => {
                    out.push(WgOutput::Network {
                        to,
                        data: d.to_vec(),
                    });
                    EncapStatus::Sent
                }
                _ => {
                    p.kill_switch_drops += 1;
                    EncapStatus::KillSwitch
                }
            };
        }
        let status = if p.pending.len() < PENDING_MAX {
            p.pending.push_back((now, packet.to_vec()));
            EncapStatus::Queued
        } else {
            p.kill_switch_drops += 1;
            EncapStatus::KillSwitch
        };
        if let TunnResult::WriteToNetwork(d) =
            p.tunn.format_handshake_initiation(&mut self.scratch, false)
        {
            tracing::debug!(peer = %p.cfg.name, %to, "starting handshake");
            out.push(WgOutput::Network {
                to,
                data: d.to_vec(),
            });
        }
        status
    }

    /// The batch-friendly form of [`WgDevice::encapsulate`]: when the peer
    /// has a session and nothing waits for it, the datagram is encrypted
    /// straight into `dst` (no allocation); otherwise this is
    /// [`WgDevice::encapsulate`]. `dst` must hold `packet.len()` +
    /// [`DATA_OVERHEAD`] bytes for the fast path (boringtun panics on a
    /// smaller buffer, so a smaller one takes the slow path).
    pub fn encapsulate_into(
        &mut self,
        zone: ZoneId,
        packet: &[u8],
        now: Instant,
        dst: &mut [u8],
        out: &mut Vec<WgOutput>,
    ) -> EncapInto {
        if packet.len() <= MAX_PACKET && dst.len() >= packet.len() + DATA_OVERHEAD {
            if let Some(p) = self.slot_of_zone(zone).and_then(|s| self.peers.get_mut(s)) {
                if let Some(to) = p.endpoint {
                    if p.pending.is_empty() && p.has_session() {
                        return match p.tunn.encapsulate(packet, dst) {
                            TunnResult::WriteToNetwork(d) => {
                                EncapInto::Written { to, len: d.len() }
                            }
                            _ => {
                                p.kill_switch_drops += 1;
                                EncapInto::Other(EncapStatus::KillSwitch)
                            }
                        };
                    }
                }
            }
        }
        EncapInto::Other(self.encapsulate(zone, packet, now, out))
    }

    /// Drives boringtun's timers (handshake retries, rekey, keepalives,
    /// session expiry), cookie-limiter resets and the hold queues. Call every
    /// 100-250 ms.
    pub fn update_timers(&mut self, now: Instant, out: &mut Vec<WgOutput>) {
        self.limiter.reset_count();
        if self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.sources.sweep(now);
            self.last_sweep = Some(now);
        }
        for p in self.peers.iter_mut().filter(|p| !p.removed) {
            match p.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(d) => {
                    if let Some(to) = p.endpoint {
                        out.push(WgOutput::Network {
                            to,
                            data: d.to_vec(),
                        });
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    if !p.pending.is_empty() {
                        p.kill_switch_drops += p.pending.len() as u64;
                        p.pending.clear();
                    }
                    if !p.expired_logged {
                        p.expired_logged = true;
                        tracing::info!(peer = %p.cfg.name, "no session (handshake gave up or expired)");
                    }
                }
                TunnResult::Err(e) => tracing::debug!(peer = %p.cfg.name, error = ?e, "timer"),
                _ => {}
            }
            // age out packets that waited too long for a session
            while p
                .pending
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > PENDING_MAX_AGE)
            {
                p.pending.pop_front();
                p.kill_switch_drops += 1;
            }
            Self::flush_pending(p, &mut self.scratch, now, out);
        }
    }

    /// Sum of kill-switch drops over all peers.
    pub fn kill_switch_drops(&self) -> u64 {
        self.peers.iter().map(|p| p.kill_switch_drops).sum()
    }
}

#[cfg(test)]
mod tests;
