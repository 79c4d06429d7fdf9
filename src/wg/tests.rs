//! In-memory tests: two (or three) `WgDevice`s exchanging datagrams.

use super::*;
use crate::wg::keys::generate_private;

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4/ICMP echo-like packet (header checksum not needed by WireGuard).
pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (len >> 8) as u8,
        len as u8,
        0,
        0,
        0,
        0,
        64,
        1,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

struct Node {
    dev: WgDevice,
    addr: SocketAddr,
}

/// gateway (peer 0 = client), client (peer 0 = gateway, with endpoint).
fn pair() -> (Node, Node) {
    let gk = generate_private();
    let ck = generate_private();
    let gw_addr = addr("198.51.100.1:51820");
    let cl_addr = addr("203.0.113.7:40000");
    let gw = WgDevice::new(WgConfig {
        private_key: gk,
        listen_port: 51820,
        peers: vec![WgPeer {
            zone: ZoneId::peer(0),
            name: "client".into(),
            public_key: keys::public_key(&ck),
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
        }],
    })
    .unwrap();
    let cl = WgDevice::new(WgConfig {
        private_key: ck,
        listen_port: 0,
        peers: vec![WgPeer {
            zone: ZoneId::peer(0),
            name: "gateway".into(),
            public_key: keys::public_key(&gk),
            preshared_key: None,
            endpoint: Some(gw_addr),
            persistent_keepalive: None,
        }],
    })
    .unwrap();
    (
        Node {
            dev: gw,
            addr: gw_addr,
        },
        Node {
            dev: cl,
            addr: cl_addr,
        },
    )
}

/// Delivers datagrams back and forth until quiet; returns decrypted packets per node.
fn pump(
    a: &mut Node,
    b: &mut Node,
    mut from_a: Vec<WgOutput>,
    mut from_b: Vec<WgOutput>,
) -> (Vec<WgOutput>, Vec<WgOutput>) {
    let (mut got_a, mut got_b) = (vec![], vec![]);
    let now = Instant::now();
    for _ in 0..20 {
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
        let mut next_a = vec![];
        let mut next_b = vec![];
        for o in from_a.drain(..) {
            match o {
                WgOutput::Network { to, data } if to == b.addr => {
                    b.dev.handle_datagram(a.addr, &data, now, &mut next_b)
                }
                WgOutput::Network { .. } => {} // lost
                p @ WgOutput::Packet { .. } => got_a.push(p),
            }
        }
        for o in from_b.drain(..) {
            match o {
                WgOutput::Network { to, data } if to == a.addr => {
                    a.dev.handle_datagram(b.addr, &data, now, &mut next_a)
                }
                WgOutput::Network { .. } => {}
                p @ WgOutput::Packet { .. } => got_b.push(p),
            }
        }
        // split packets out
        from_a = next_a;
        from_b = next_b;
    }
    (got_a, got_b)
}

#[test]
fn handshake_and_data_both_ways() {
    let (mut gw, mut cl) = pair();
    let z = ZoneId::peer(0);
    assert!(!cl.dev.has_session(z));
    let ping = ipv4([100, 64, 0, 2], [100, 64, 0, 1], b"hello");
    let mut out = vec![];
    let st = cl.dev.encapsulate(z, &ping, Instant::now(), &mut out);
    assert_eq!(st, EncapStatus::Queued);
    assert_eq!(out.len(), 1, "one handshake initiation");
    let (got_gw, got_cl) = pump(&mut gw, &mut cl, vec![], out);
    assert!(cl.dev.has_session(z));
    assert!(
        gw.dev.has_session(z),
        "responder session confirmed by the first data packet"
    );
    assert_eq!(
        got_gw,
        vec![WgOutput::Packet {
            zone: z,
            data: ping.clone()
        }]
    );
    assert!(got_cl.is_empty());
    // gateway learned the client's endpoint by roaming
    assert_eq!(gw.dev.endpoint(z), Some(cl.addr));

    let pong = ipv4([100, 64, 0, 1], [100, 64, 0, 2], b"world");
    let mut out = vec![];
    assert_eq!(
        gw.dev.encapsulate(z, &pong, Instant::now(), &mut out),
        EncapStatus::Sent
    );
    let (_, got_cl) = pump(&mut gw, &mut cl, out, vec![]);
    assert_eq!(
        got_cl,
        vec![WgOutput::Packet {
            zone: z,
            data: pong
        }]
    );
    let s = gw.dev.stats();
    assert_eq!(s.len(), 1);
    assert!(s[0].rx_bytes >= ping.len() as u64 && s[0].tx_bytes >= 25);
    assert!(s[0].last_handshake.is_some());
}

#[test]
fn roaming_follows_latest_authenticated_source() {
    let (mut gw, mut cl) = pair();
    let z = ZoneId::peer(0);
    let mut out = vec![];
    cl.dev.encapsulate(
        z,
        &ipv4([100, 64, 0, 2], [100, 64, 0, 1], b"a"),
        Instant::now(),
        &mut out,
    );
    pump(&mut gw, &mut cl, vec![], out);
    assert_eq!(gw.dev.endpoint(z), Some(cl.addr));
    // the client moves (NAT rebinding / new network)
    cl.addr = addr("[2001:db8::7]:5555");
    let mut out = vec![];
    cl.dev.encapsulate(
        z,
        &ipv4([100, 64, 0, 2], [100, 64, 0, 1], b"b"),
        Instant::now(),
        &mut out,
    );
    let (got, _) = pump(&mut gw, &mut cl, vec![], out);
    assert_eq!(got.len(), 1);
    assert_eq!(gw.dev.endpoint(z), Some(cl.addr));
    assert_eq!(gw.dev.stats()[0].roams, 1);
    // replies go to the new address
    let mut out = vec![];
    gw.dev.encapsulate(
        z,
        &ipv4([100, 64, 0, 1], [100, 64, 0, 2], b"c"),
        Instant::now(),
        &mut out,
    );
    assert!(matches!(&out[..], [WgOutput::Network { to, .. }] if *to == cl.addr));

    // an unauthenticated datagram from elsewhere (garbage data message with a
    // valid-looking index) must not move the endpoint
    let mut forged = vec![4u8, 0, 0, 0];
    forged.extend_from_slice(&[0u8; 60]);
    let mut o = vec![];
    for idx in 0..=255u32 {
        forged[4..8].copy_from_slice(&((gw.dev.index_base << 8) | idx).to_le_bytes());
        gw.dev
            .handle_datagram(addr("192.0.2.66:1"), &forged, Instant::now(), &mut o);
    }
    assert!(o.is_empty());
    assert_eq!(gw.dev.endpoint(z), Some(cl.addr));
    assert!(gw.dev.counters().rejected >= 256);
}

#[test]
fn v4_mapped_sources_are_canonical() {
    assert_eq!(
        canonical(addr("[::ffff:198.51.100.9]:7")),
        addr("198.51.100.9:7")
    );
    assert_eq!(canonical(addr("[2001:db8::1]:7")), addr("[2001:db8::1]:7"));
}

#[test]
fn kill_switch_without_endpoint_or_session() {
    let (mut gw, mut cl) = pair();
    let z = ZoneId::peer(0);
    let pkt = ipv4([100, 64, 0, 1], [100, 64, 0, 2], b"x");
    // the gateway does not know where the client is: nothing may be sent
    let mut out = vec![];
    assert_eq!(
        gw.dev.encapsulate(z, &pkt, Instant::now(), &mut out),
        EncapStatus::KillSwitch
    );
    assert!(out.is_empty());
    assert_eq!(gw.dev.kill_switch_drops(), 1);
    // the client's upstream is unreachable: packets wait (bounded), then drop
    let now = Instant::now();
    let mut out = vec![];
    let mut queued = 0;
    let mut dropped = 0;
    for _ in 0..PENDING_MAX + 10 {
        match cl.dev.encapsulate(z, &pkt, now, &mut out) {
            EncapStatus::Queued => queued += 1,
            EncapStatus::KillSwitch => dropped += 1,
            s => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((queued, dropped), (PENDING_MAX, 10));
    // only handshake initiations went out, never data
    assert!(out
        .iter()
        .all(|o| matches!(o, WgOutput::Network { data, .. } if data.len() == 148 && data[0] == 1)));
    assert_eq!(out.len(), 1);
    // packets age out
    let mut out = vec![];
    cl.dev
        .update_timers(now + PENDING_MAX_AGE + Duration::from_secs(1), &mut out);
    let s = &cl.dev.stats()[0];
    assert_eq!(s.pending, 0);
    assert_eq!(s.kill_switch_drops, (PENDING_MAX + 10) as u64);
    assert!(!s.has_session);
    // unknown zone
    assert_eq!(
        cl.dev.encapsulate(ZoneId::peer(5), &pkt, now, &mut out),
        EncapStatus::NoPeer
    );
}

fn foreign_init(target_pub: [u8; 32]) -> Vec<u8> {
    let mut t = Tunn::new(
        x25519::StaticSecret::from(generate_private()),
        x25519::PublicKey::from(target_pub),
        None,
        None,
        1,
        None,
    );
    let mut buf = vec![0u8; 256];
    match t.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no init"),
    }
}

#[test]
fn unknown_peers_and_garbage_are_counted() {
    let (mut gw, _cl) = pair();
    let mut out = vec![];
    let init = foreign_init(gw.dev.public_key());
    gw.dev
        .handle_datagram(addr("192.0.2.1:1"), &init, Instant::now(), &mut out);
    assert!(out.is_empty());
    assert_eq!(gw.dev.counters().unknown_peer, 1);
    // a bad mac1
    let mut bad = init.clone();
    bad[120] ^= 1;
    gw.dev
        .handle_datagram(addr("192.0.2.1:1"), &bad, Instant::now(), &mut out);
    assert_eq!(gw.dev.counters().bad_mac, 1);
    // garbage
    for d in [&[][..], &[1, 2, 3], &[4, 0, 0, 0, 1], &[9; 200]] {
        gw.dev
            .handle_datagram(addr("192.0.2.1:1"), d, Instant::now(), &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(gw.dev.counters().invalid, 4);
}

#[test]
fn per_source_handshake_limit_then_cookies_under_load() {
    let (mut gw, _cl) = pair();
    let now = Instant::now();
    let mut out = vec![];
    let src = addr("192.0.2.1:1");
    for _ in 0..10 {
        let init = foreign_init(gw.dev.public_key());
        gw.dev.handle_datagram(src, &init, now, &mut out);
    }
    let c = gw.dev.counters();
    assert_eq!(
        c.handshake_rate_limited,
        10 - u64::from(SourceLimiter::DEFAULT_BURST)
    );
    assert_eq!(c.unknown_peer, u64::from(SourceLimiter::DEFAULT_BURST));
    // many sources: above HANDSHAKE_RATE_LIMIT per second, cookie replies go back
    let mut out = vec![];
    for i in 0..(HANDSHAKE_RATE_LIMIT + 20) {
        let src = SocketAddr::new(IpAddr::V4((0xc000_0200 + i as u32).into()), 1);
        gw.dev
            .handle_datagram(src, &foreign_init(gw.dev.public_key()), now, &mut out);
    }
    let c = gw.dev.counters();
    assert!(c.cookies_sent >= 10, "{c:?}");
    assert_eq!(out.len() as u64, c.cookies_sent);
    assert!(out
        .iter()
        .all(|o| matches!(o, WgOutput::Network { data, .. } if data.len() == 64 && data[0] == 3)));
}

#[test]
fn config_errors() {
    let k = generate_private();
    let other = keys::public_key(&generate_private());
    let peer = |zone, key| WgPeer {
        zone,
        name: "p".into(),
        public_key: key,
        preshared_key: None,
        endpoint: None,
        persistent_keepalive: None,
    };
    let mk = |peers| {
        WgDevice::new(WgConfig {
            private_key: k,
            listen_port: 1,
            peers,
        })
    };
    assert!(matches!(
        mk(vec![
            peer(ZoneId::peer(0), other),
            peer(ZoneId::peer(1), other)
        ]),
        Err(WgError::DuplicateKey { .. })
    ));
    assert!(matches!(
        mk(vec![peer(ZoneId::TUN, other)]),
        Err(WgError::BadZone { .. })
    ));
    assert!(matches!(
        mk(vec![peer(ZoneId::peer(0), keys::public_key(&k))]),
        Err(WgError::OwnKey { .. })
    ));
    assert!(mk(vec![peer(ZoneId::peer(0), other)]).is_ok());
}

#[test]
fn preshared_key_mismatch_fails_handshake() {
    let gk = generate_private();
    let ck = generate_private();
    let mk = |me: [u8; 32], them: [u8; 32], psk: [u8; 32], ep| {
        WgDevice::new(WgConfig {
            private_key: me,
            listen_port: 1,
            peers: vec![WgPeer {
                zone: ZoneId::peer(0),
                name: "x".into(),
                public_key: keys::public_key(&them),
                preshared_key: Some(psk),
                endpoint: ep,
                persistent_keepalive: None,
            }],
        })
        .unwrap()
    };
    let gw_addr = addr("198.51.100.1:51820");
    let mut gw = Node {
        dev: mk(gk, ck, [1; 32], None),
        addr: gw_addr,
    };
    let mut cl = Node {
        dev: mk(ck, gk, [2; 32], Some(gw_addr)),
        addr: addr("203.0.113.1:9"),
    };
    let mut out = vec![];
    cl.dev.encapsulate(
        ZoneId::peer(0),
        &ipv4([1, 1, 1, 1], [2, 2, 2, 2], b""),
        Instant::now(),
        &mut out,
    );
    let (got, _) = pump(&mut gw, &mut cl, vec![], out);
    assert!(got.is_empty());
    assert!(!cl.dev.has_session(ZoneId::peer(0)));
    // and with matching keys it works
    let mut gw = Node {
        dev: mk(gk, ck, [3; 32], None),
        addr: gw_addr,
    };
    let mut cl = Node {
        dev: mk(ck, gk, [3; 32], Some(gw_addr)),
        addr: addr("203.0.113.1:9"),
    };
    let mut out = vec![];
    cl.dev.encapsulate(
        ZoneId::peer(0),
        &ipv4([1, 1, 1, 1], [2, 2, 2, 2], b""),
        Instant::now(),
        &mut out,
    );
    let (got, _) = pump(&mut gw, &mut cl, vec![], out);
    assert_eq!(got.len(), 1);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Arbitrary datagrams never panic and never produce a decrypted packet.
        #[test]
        fn random_datagrams_are_harmless(ty in 0u8..6, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (mut gw, _cl) = pair();
            let mut d = vec![ty, 0, 0, 0];
            d.extend_from_slice(&body);
            let mut out = vec![];
            gw.dev.handle_datagram(addr("192.0.2.3:3"), &d, Instant::now(), &mut out);
            let any_packet = out.iter().any(|o| matches!(o, WgOutput::Packet { .. }));
            prop_assert!(!any_packet);
            prop_assert_eq!(gw.dev.endpoint(ZoneId::peer(0)), None);
        }
    }
}

#[test]
fn update_peers_keeps_sessions_removes_and_adds() {
    let (mut gw, mut cl) = pair();
    let z = ZoneId::peer(0);
    let ping = ipv4([100, 64, 0, 2], [100, 64, 0, 1], b"hello");
    let mut out = vec![];
    cl.dev.encapsulate(z, &ping, Instant::now(), &mut out);
    pump(&mut gw, &mut cl, vec![], out);
    assert!(gw.dev.has_session(z));
    let client = gw.dev.stats()[0].clone();
    let newcomer = keys::public_key(&generate_private());
    // add a peer before the client: the client moves to zone peer(1), keeps its session
    let ch = gw
        .dev
        .update_peers(vec![
            WgPeer {
                zone: ZoneId::peer(0),
                name: "new".into(),
                public_key: newcomer,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
            },
            WgPeer {
                zone: ZoneId::peer(1),
                name: "client".into(),
                public_key: client.public_key,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
            },
        ])
        .unwrap();
    assert_eq!(ch.added, vec!["new".to_string()]);
    assert_eq!(ch.changed, vec!["client".to_string()]);
    assert!(gw.dev.has_session(ZoneId::peer(1)));
    assert!(!gw.dev.has_session(ZoneId::peer(0)));
    // data from the client still decrypts, now tagged with its new zone
    let mut out = vec![];
    assert_eq!(
        cl.dev.encapsulate(z, &ping, Instant::now(), &mut out),
        EncapStatus::Sent
    );
    let (got_gw, _) = pump(&mut gw, &mut cl, vec![], out);
    assert_eq!(
        got_gw,
        vec![WgOutput::Packet {
            zone: ZoneId::peer(1),
            data: ping.clone()
        }]
    );
    // remove the client: its data is refused, the other peer stays
    let before = gw.dev.counters().unknown_peer;
    let ch = gw
        .dev
        .update_peers(vec![WgPeer {
            zone: ZoneId::peer(0),
            name: "new".into(),
            public_key: newcomer,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
        }])
        .unwrap();
    assert_eq!(ch.removed, vec!["client".to_string()]);
    assert_eq!(ch.kept, vec!["new".to_string()]);
    assert_eq!(gw.dev.stats().len(), 1);
    let mut out = vec![];
    cl.dev.encapsulate(z, &ping, Instant::now(), &mut out);
    let (got_gw, _) = pump(&mut gw, &mut cl, vec![], out);
    assert!(got_gw.is_empty());
    assert!(gw.dev.counters().unknown_peer > before);
    // invalid lists change nothing
    let own = gw.dev.public_key();
    let err = gw.dev.update_peers(vec![WgPeer {
        zone: ZoneId::peer(0),
        name: "me".into(),
        public_key: own,
        preshared_key: None,
        endpoint: None,
        persistent_keepalive: None,
    }]);
    assert!(matches!(err, Err(WgError::OwnKey { .. })));
    assert_eq!(gw.dev.stats().len(), 1);
}
