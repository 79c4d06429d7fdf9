//! Unit tests for the netstack core: a scripted client speaks TCP/UDP/ICMP
//! to it with synthesized packets; the "host" is played by the test through
//! `handle_host`.

use super::*;
use crate::packet::synth::{self, TcpSpec};
use crate::packet::tcp_flags::*;

const GW: &str = "100.64.0.1";
const CLIENT: &str = "100.64.0.2:40000";
const SERVER: &str = "203.0.113.2:80";
const RESOLVER: &str = "203.0.113.53:53";

fn cfg() -> NetstackConfig {
    NetstackConfig {
        max_connections: 4,
        tcp_rx_buffer: 8192,
        tcp_tx_buffer: 8192,
        host_window: 4096,
        udp_idle_timeout: Duration::from_secs(60),
        ..NetstackConfig::default()
    }
}

fn stack(c: NetstackConfig, now: Instant) -> Netstack {
    Netstack::new(
        c,
        vec![GW.parse().unwrap()],
        Some(RESOLVER.parse().unwrap()),
        1420,
        (1, 2),
        now,
    )
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn seg(src: &str, dst: &str, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    synth::tcp(
        sa(src),
        sa(dst),
        TcpSpec {
            flags,
            seq,
            ack,
            window: 65535,
            wscale: None,
            mss: Some(1380),
        },
        payload,
    )
    .unwrap()
}

fn events(ns: &mut Netstack) -> Vec<NetEvent> {
    std::iter::from_fn(|| ns.poll_event()).collect()
}

fn transmits(ns: &mut Netstack) -> Vec<(NetTransmit, packet::PacketMeta)> {
    std::iter::from_fn(|| ns.poll_transmit())
        .map(|t| {
            let m = packet::parse(&t.packet).unwrap();
            (t, m)
        })
        .collect()
}

fn tcp_of(m: &packet::PacketMeta) -> packet::TcpInfo {
    match m.l4 {
        L4::Tcp(t) => t,
        other => panic!("not tcp: {other:?}"),
    }
}

/// Client SYN -> Connect; host connected -> SYN-ACK from the server's address.
/// Returns (netstack, flow id, client next seq, server next seq).
fn established(now: Instant) -> (Netstack, ConnId, u32, u32) {
    let mut ns = stack(cfg(), now);
    ns.handle_packet(seg(CLIENT, SERVER, SYN, 1000, 0, b""), now);
    let ev = events(&mut ns);
    let id = match ev.as_slice() {
        [NetEvent::Connect {
            id,
            kind: Kind::Tcp,
            target,
        }] => {
            assert_eq!(*target, sa(SERVER));
            *id
        }
        other => panic!("expected one connect, got {other:?}"),
    };
    // Nothing answers the client before the host connect completed.
    assert!(transmits(&mut ns).is_empty());
    // A retransmitted SYN meanwhile is absorbed.
    ns.handle_packet(seg(CLIENT, SERVER, SYN, 1000, 0, b""), now);
    assert!(events(&mut ns).is_empty());
    ns.handle_host(id, HostInput::Connected, now);
    let tx = transmits(&mut ns);
    let (t, m) = tx.first().expect("a SYN-ACK");
    assert_eq!(t.zone, ZoneId::HOST);
    assert_eq!(
        m.src,
        sa(SERVER).ip(),
        "the client sees the server's address"
    );
    let th = tcp_of(m);
    assert_eq!(th.flags & (SYN | ACK), SYN | ACK);
    assert_eq!(th.ack, 1001);
    assert!(events(&mut ns)
        .iter()
        .any(|e| matches!(e, NetEvent::Grant { id: g, bytes: 4096 } if *g == id)));
    ns.handle_packet(seg(CLIENT, SERVER, ACK, 1001, th.seq + 1, b""), now);
    (ns, id, 1001, th.seq + 1)
}

#[test]
fn tcp_relays_both_ways_with_the_servers_address() {
    let now = Instant::now();
    let (mut ns, id, cseq, sseq) = established(now);
    let _ = transmits(&mut ns);
    ns.handle_packet(seg(CLIENT, SERVER, ACK | PSH, cseq, sseq, b"GET /"), now);
    let ev = events(&mut ns);
    assert!(
        ev.contains(&NetEvent::ToHost {
            id,
            data: b"GET /".to_vec()
        }),
        "{ev:?}"
    );
    ns.handle_host(id, HostInput::Written(5), now);
    ns.handle_host(id, HostInput::Data(b"200 OK".to_vec()), now);
    let tx = transmits(&mut ns);
    let data: Vec<u8> = tx
        .iter()
        .filter(|(_, m)| m.payload_len() > 0)
        .flat_map(|(t, m)| t.packet[usize::from(m.payload_offset)..].to_vec())
        .collect();
    assert_eq!(data, b"200 OK");
    assert!(tx.iter().all(|(_, m)| m.src == sa(SERVER).ip()));
    // The data taken by smoltcp is granted back to the host reader.
    assert!(events(&mut ns).contains(&NetEvent::Grant { id, bytes: 6 }));
    // Host EOF -> FIN to the client.
    ns.handle_host(id, HostInput::Eof, now);
    let tx = transmits(&mut ns);
    assert!(tx.iter().any(|(_, m)| tcp_of(m).flags & FIN != 0));
}

#[test]
fn refused_host_connect_becomes_rst_and_unreachable_becomes_icmp() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    ns.handle_packet(seg(CLIENT, SERVER, SYN, 7, 0, b""), now);
    let Some(NetEvent::Connect { id, .. }) = ns.poll_event() else {
        panic!("no connect")
    };
    ns.handle_host(id, HostInput::Failed(FailKind::Refused), now);
    let tx = transmits(&mut ns);
    assert_eq!(tx.len(), 1);
    let t = tcp_of(&tx[0].1);
    assert_eq!(t.flags & RST, RST);
    assert_eq!(t.ack, 8);
    assert_eq!(ns.connections(), 0);

    ns.handle_packet(seg("100.64.0.2:40001", SERVER, SYN, 7, 0, b""), now);
    let Some(NetEvent::Connect { id, .. }) = ns.poll_event() else {
        panic!("no connect")
    };
    ns.handle_host(id, HostInput::Failed(FailKind::HostUnreachable), now);
    let tx = transmits(&mut ns);
    match tx[0].1.l4 {
        L4::Icmp(i) => assert_eq!((i.ty, i.code), (3, 1)),
        other => panic!("expected ICMP unreachable, got {other:?}"),
    }
}

#[test]
fn connection_limit_refuses_with_rst() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    for p in 0..6u16 {
        let c = format!("100.64.0.2:{}", 41000 + p);
        ns.handle_packet(seg(&c, SERVER, SYN, 1, 0, b""), now);
    }
    let connects = events(&mut ns)
        .into_iter()
        .filter(|e| matches!(e, NetEvent::Connect { .. }))
        .count();
    assert_eq!(connects, 4);
    assert_eq!(ns.connections(), 4);
    let rsts = transmits(&mut ns)
        .iter()
        .filter(|(_, m)| tcp_of(m).flags & RST != 0)
        .count();
    assert_eq!(rsts, 2);
    assert_eq!(ns.stats().refused_limit, 2);
}

#[test]
fn slow_host_closes_the_window_and_bounds_inflight() {
    let now = Instant::now();
    let (mut ns, id, mut cseq, sseq) = established(now);
    let _ = events(&mut ns);
    let chunk = [7u8; 1000];
    let mut handed = 0;
    let mut last_window = u16::MAX;
    // The host never reports anything written.
    for _ in 0..40 {
        ns.handle_packet(seg(CLIENT, SERVER, ACK, cseq, sseq, &chunk), now);
        for e in events(&mut ns) {
            if let NetEvent::ToHost { data, .. } = e {
                handed += data.len();
            }
        }
        for (_, m) in transmits(&mut ns) {
            let t = tcp_of(&m);
            if t.flags & ACK != 0 {
                last_window = t.window;
                // Only data smoltcp acknowledged counts as sent.
                cseq = t.ack;
            }
        }
    }
    assert!(
        handed <= 4096,
        "handed {handed} bytes to a host that wrote none"
    );
    assert_eq!(last_window, 0, "the window closes when nothing drains");
    // Written -> more is handed over.
    ns.handle_host(id, HostInput::Written(handed), now);
    let more: usize = events(&mut ns)
        .iter()
        .map(|e| match e {
            NetEvent::ToHost { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(more > 0 && more <= 4096);
}

#[test]
fn udp_relays_and_replies_from_the_server() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    let p = synth::udp(sa(CLIENT), sa("203.0.113.2:7"), b"ping").unwrap();
    ns.handle_packet(p, now);
    let ev = events(&mut ns);
    let id = match ev.first() {
        Some(NetEvent::Connect {
            id,
            kind: Kind::Udp,
            target,
        }) => {
            assert_eq!(*target, sa("203.0.113.2:7"));
            *id
        }
        other => panic!("{other:?}"),
    };
    assert!(ev.contains(&NetEvent::ToHost {
        id,
        data: b"ping".to_vec()
    }));
    ns.handle_host(id, HostInput::Data(b"pong".to_vec()), now);
    let tx = transmits(&mut ns);
    assert_eq!(tx.len(), 1);
    let (t, m) = &tx[0];
    assert_eq!(t.zone, ZoneId::HOST);
    assert_eq!(m.ports(), (7, 40000));
    assert_eq!(&t.packet[usize::from(m.payload_offset)..], b"pong");
    // A reply larger than the tunnel MTU (a big DNS answer, say) leaves as
    // IP fragments, each within the MTU, all from the server's address.
    ns.handle_host(id, HostInput::Data(vec![7; 2000]), now);
    let tx: Vec<NetTransmit> = std::iter::from_fn(|| ns.poll_transmit()).collect();
    assert_eq!(tx.len(), 2);
    for t in &tx {
        let m = packet::parse(&t.packet).unwrap();
        assert!(t.packet.len() <= 1420 && m.frag.is_some(), "{m:?}");
        assert_eq!((t.zone, m.src), (ZoneId::HOST, sa("203.0.113.2:7").ip()));
    }
    // Idle timeout closes it.
    ns.handle_timeout(now + Duration::from_secs(61));
    assert!(events(&mut ns).contains(&NetEvent::Close { id }));
    assert_eq!(ns.connections(), 0);
}

#[test]
fn dns_on_the_gateway_goes_to_the_resolver_other_ports_are_refused() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    let q = synth::udp(sa(CLIENT), sa("100.64.0.1:53"), b"query").unwrap();
    ns.handle_packet(q, now);
    match ns.poll_event() {
        Some(NetEvent::Connect { target, .. }) => assert_eq!(target, sa(RESOLVER)),
        other => panic!("{other:?}"),
    }
    let _ = events(&mut ns);
    let Some(id) = ns.conns.keys().copied().next() else {
        panic!("no flow")
    };
    ns.handle_host(id, HostInput::Data(b"answer".to_vec()), now);
    let tx = transmits(&mut ns);
    assert_eq!(
        tx[0].0.zone,
        ZoneId::LOCAL,
        "answers come from the gateway itself"
    );
    assert_eq!(tx[0].1.src, GW.parse::<IpAddr>().unwrap());
    assert_eq!(events(&mut ns), vec![NetEvent::Grant { id, bytes: 6 }]);
    // TCP to port 53 too.
    ns.handle_packet(seg(CLIENT, "100.64.0.1:53", SYN, 1, 0, b""), now);
    assert!(matches!(
        ns.poll_event(),
        Some(NetEvent::Connect { kind: Kind::Tcp, target, .. }) if target == sa(RESOLVER)
    ));
    // No service on port 22: RST, no host socket.
    ns.handle_packet(seg(CLIENT, "100.64.0.1:22", SYN, 1, 0, b""), now);
    assert!(events(&mut ns).is_empty());
    let tx = transmits(&mut ns);
    assert_eq!(tcp_of(&tx[0].1).flags & RST, RST);
    // UDP to an unserved port: port unreachable.
    ns.handle_packet(
        synth::udp(sa(CLIENT), sa("100.64.0.1:9999"), b"x").unwrap(),
        now,
    );
    let tx = transmits(&mut ns);
    assert!(matches!(tx[0].1.l4, L4::Icmp(i) if (i.ty, i.code) == (3, 3)));
}

#[test]
fn host_services_map_to_loopback() {
    let now = Instant::now();
    let mut c = cfg();
    c.host_services = vec![(Proto::Tcp, 8080)];
    let mut ns = stack(c, now);
    ns.handle_packet(seg(CLIENT, "100.64.0.1:8080", SYN, 1, 0, b""), now);
    assert!(matches!(
        ns.poll_event(),
        Some(NetEvent::Connect { target, .. }) if target == sa("127.0.0.1:8080")
    ));
}

#[test]
fn ping_relays_with_the_clients_id_and_gateway_answers_its_own() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    let gw: IpAddr = GW.parse().unwrap();
    let client: IpAddr = "100.64.0.2".parse().unwrap();
    let server: IpAddr = "203.0.113.2".parse().unwrap();
    ns.handle_packet(
        synth::icmp_echo(client, gw, 77, 1, false, b"hi").unwrap(),
        now,
    );
    let tx = transmits(&mut ns);
    assert!(matches!(tx[0].1.l4, L4::Icmp(i) if i.ty == 0 && i.echo_id == Some(77)));
    assert!(events(&mut ns).is_empty());

    ns.handle_packet(
        synth::icmp_echo(client, server, 77, 5, false, b"abc").unwrap(),
        now,
    );
    let ev = events(&mut ns);
    let id = match ev.first() {
        Some(NetEvent::Connect {
            id,
            kind: Kind::Ping,
            ..
        }) => *id,
        other => panic!("{other:?}"),
    };
    // The kernel's reply carries its own identifier (here 9999).
    let mut reply = vec![0u8, 0, 0, 0, 0x27, 0x0f, 0, 5];
    reply.extend_from_slice(b"abc");
    ns.handle_host(id, HostInput::Data(reply), now);
    let tx = transmits(&mut ns);
    let (t, m) = &tx[0];
    assert_eq!((m.src, m.dst), (server, client));
    assert!(matches!(m.l4, L4::Icmp(i) if i.ty == 0 && i.echo_id == Some(77)));
    assert_eq!(&t.packet[t.packet.len() - 3..], b"abc");
}

#[test]
fn outbound_connection_goes_from_the_gateway_address() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    let id = ns.open_outbound(sa("100.64.0.2:8000"), now).unwrap();
    let tx = transmits(&mut ns);
    let (t, m) = &tx[0];
    assert_eq!(t.zone, ZoneId::LOCAL);
    assert_eq!(m.src, GW.parse::<IpAddr>().unwrap());
    let th = tcp_of(m);
    assert_eq!(th.flags, SYN);
    assert!(EPHEMERAL.contains(&th.sport));
    // The peer refuses: the flow closes and the host socket is told.
    let local = SocketAddr::new(m.src, th.sport);
    let rst = seg(
        "100.64.0.2:8000",
        &local.to_string(),
        RST | ACK,
        0,
        th.seq + 1,
        b"",
    );
    ns.handle_packet(rst, now);
    assert!(events(&mut ns).contains(&NetEvent::Close { id }));
    assert_eq!(ns.connections(), 0);
}

#[test]
fn garbage_never_panics() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now);
    for len in 0..80 {
        let mut p = vec![0x45u8; len];
        if len > 9 {
            p[9] = 6;
        }
        ns.handle_packet(p, now);
    }
    ns.handle_host(12345, HostInput::Data(vec![1, 2, 3]), now);
    ns.handle_timeout(now + Duration::from_secs(3600 * 3));
    assert_eq!(ns.connections(), 0);
}

/// The pipeline in netstack mode routes the outside to `host`, the gateway's
/// own addresses to `local`, and what the netstack emits back to the peer.
#[test]
fn pipeline_in_netstack_mode_routes_host_and_local() {
    use crate::pipeline::{testbed, Pipeline};
    use crate::rules::{Action, ChainDef, Rule};
    use crate::verdict::Verdict;
    let now = Instant::now();
    let mut pc = testbed::config(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Drop,
    });
    pc.netstack = true;
    let mut pl = Pipeline::new(pc, testbed::KEY, now);
    let laptop = ZoneId::peer(0);
    let mut ns = stack(cfg(), now);

    let mut syn = seg(CLIENT, SERVER, SYN, 1, 0, b"");
    assert_eq!(
        pl.handle(&mut syn, laptop, now),
        Verdict::Forward(ZoneId::HOST)
    );
    ns.handle_packet(syn, now);
    let Some(NetEvent::Connect { id, .. }) = ns.poll_event() else {
        panic!("no connect")
    };
    ns.handle_host(id, HostInput::Connected, now);
    let mut t = ns.poll_transmit().unwrap();
    assert_eq!(t.zone, ZoneId::HOST);
    assert_eq!(
        pl.handle(&mut t.packet, t.zone, now),
        Verdict::Forward(laptop)
    );

    // The gateway's own address: zone local (chain input).
    let mut q = synth::udp(sa(CLIENT), sa("100.64.0.1:53"), b"q").unwrap();
    assert_eq!(
        pl.handle(&mut q, laptop, now),
        Verdict::Forward(ZoneId::LOCAL)
    );

    // Gateway-originated (port forward): local -> peer through chain output.
    let _ = ns.open_outbound(sa("100.64.0.2:8000"), now).unwrap();
    let mut t = ns.poll_transmit().unwrap();
    assert_eq!(t.zone, ZoneId::LOCAL);
    assert_eq!(
        pl.handle(&mut t.packet, t.zone, now),
        Verdict::Forward(laptop)
    );

    // The same packet in TUN mode goes to the TUN, as before.
    let mut tun = Pipeline::new(
        testbed::config(ChainDef {
            rules: vec![Rule::any(Action::Accept)],
            policy: Action::Drop,
        }),
        testbed::KEY,
        now,
    );
    let mut syn = seg(CLIENT, SERVER, SYN, 1, 0, b"");
    assert_eq!(
        tun.handle(&mut syn, laptop, now),
        Verdict::Forward(ZoneId::TUN)
    );
}

#[test]
fn udp_towards_a_stuck_host_socket_is_bounded_and_refusals_become_icmp() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now); // host_window 4096
    let big = [1u8; 1000];
    for _ in 0..10 {
        ns.handle_packet(
            synth::udp(sa(CLIENT), sa("203.0.113.2:7"), &big).unwrap(),
            now,
        );
    }
    let ev = events(&mut ns);
    let handed: usize = ev
        .iter()
        .map(|e| match e {
            NetEvent::ToHost { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(handed, 4000, "only host_window bytes wait for the socket");
    assert_eq!(ns.stats().dropped, 6);
    let Some(NetEvent::Connect { id, .. }) = ev.first().cloned() else {
        panic!("no connect")
    };
    ns.handle_host(id, HostInput::Written(4000), now);
    ns.handle_packet(
        synth::udp(sa(CLIENT), sa("203.0.113.2:7"), &big).unwrap(),
        now,
    );
    assert!(events(&mut ns)
        .iter()
        .any(|e| matches!(e, NetEvent::ToHost { .. })));
    // The host's ICMP port unreachable becomes one for the client; the flow stays.
    ns.handle_host(id, HostInput::Failed(FailKind::Refused), now);
    let tx = transmits(&mut ns);
    let (t, m) = &tx[0];
    assert_eq!(t.zone, ZoneId::HOST);
    assert_eq!((m.src, m.dst), (sa(SERVER).ip(), sa(CLIENT).ip()));
    match m.l4 {
        L4::Icmp(i) => {
            assert_eq!((i.ty, i.code), (3, 3));
            let inner = i.inner.expect("quoted header");
            assert_eq!((inner.sport, inner.dport), (40000, 7));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ns.connections(), 1);
    // Host and net unreachable become ICMP host (1) and net (0) unreachable.
    for (f, code) in [
        (FailKind::HostUnreachable, 1),
        (FailKind::NetUnreachable, 0),
    ] {
        ns.handle_host(id, HostInput::Failed(f), now);
        let tx = transmits(&mut ns);
        match tx.first().map(|(_, m)| m.l4) {
            Some(L4::Icmp(i)) => assert_eq!((i.ty, i.code), (3, code)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ns.connections(), 1, "the UDP flow stays");
}

/// A pipeline in netstack mode whose chains accept everything.
fn netstack_pipeline(now: Instant) -> crate::pipeline::Pipeline {
    use crate::pipeline::{testbed, Pipeline};
    use crate::rules::{Action, ChainDef, Rule};
    let mut pc = testbed::config(ChainDef {
        rules: vec![Rule::any(Action::Accept)],
        policy: Action::Drop,
    });
    pc.netstack = true;
    Pipeline::new(pc, testbed::KEY, now)
}

#[test]
fn udp_port_forward_round_trip_through_the_pipeline() {
    use crate::verdict::Verdict;
    let now = Instant::now();
    let laptop = ZoneId::peer(0);
    let mut pl = netstack_pipeline(now);
    let mut c = cfg();
    c.forwards = vec![
        PortForward {
            proto: Proto::Tcp,
            listen: sa("127.0.0.1:8080"),
            to: sa("100.64.0.2:80"),
            max_flows: 1,
            idle_timeout: Duration::from_secs(60),
        },
        PortForward {
            proto: Proto::Udp,
            listen: sa("127.0.0.1:5300"),
            to: sa("100.64.0.2:53"),
            max_flows: 8,
            idle_timeout: Duration::from_secs(60),
        },
    ];
    let mut ns = stack(c, now);
    let (alice, bob) = (sa("127.0.0.1:1111"), sa("127.0.0.1:2222"));
    let mut locals = Vec::new();
    for (client, msg) in [(alice, &b"from alice"[..]), (bob, b"from bob")] {
        ns.handle_forward_datagram(1, client, msg, now);
        let mut t = ns.poll_transmit().expect("a datagram into the tunnel");
        assert_eq!(t.zone, ZoneId::LOCAL, "gateway-originated: chain output");
        let m = packet::parse(&t.packet).unwrap();
        assert_eq!(m.src, GW.parse::<IpAddr>().unwrap());
        let L4::Udp { sport, dport } = m.l4 else {
            panic!("not udp")
        };
        assert_eq!((m.dst, dport), (sa("100.64.0.2:53").ip(), 53));
        assert_eq!(&t.packet[usize::from(m.payload_offset)..], msg);
        assert_eq!(
            pl.handle(&mut t.packet, t.zone, now),
            Verdict::Forward(laptop)
        );
        locals.push(SocketAddr::new(m.src, sport));
    }
    assert_ne!(locals[0], locals[1]);
    assert_eq!(ns.udp_forward_flows(), 2);
    // The service answers bob first, then alice; each reply goes back to its client.
    for (local, client, msg) in [
        (locals[1], bob, &b"to bob"[..]),
        (locals[0], alice, b"to alice"),
    ] {
        let mut r = synth::udp(sa("100.64.0.2:53"), local, msg).unwrap();
        assert_eq!(
            pl.handle(&mut r, laptop, now),
            Verdict::Forward(ZoneId::LOCAL),
            "a reply of the forward's flow"
        );
        ns.handle_packet(r, now);
        assert_eq!(
            events(&mut ns),
            vec![NetEvent::ForwardReply {
                forward: 1,
                to: client,
                data: msg.to_vec()
            }]
        );
    }
    // Another source sending to an association's port is not a reply.
    ns.handle_packet(
        synth::udp(sa("100.64.0.3:53"), locals[0], b"x").unwrap(),
        now,
    );
    assert!(!events(&mut ns)
        .iter()
        .any(|e| matches!(e, NetEvent::ForwardReply { .. })));
    // (it is a datagram to a closed port of the gateway: port unreachable)
    let tx = transmits(&mut ns);
    assert!(
        matches!(tx.as_slice(), [(_, m)] if matches!(m.l4, L4::Icmp(i) if (i.ty, i.code) == (3, 3)))
    );
    // The TCP forward's index takes no datagrams.
    ns.handle_forward_datagram(0, alice, b"x", now);
    assert!(transmits(&mut ns).is_empty());
    // A datagram over the tunnel MTU leaves as IP fragments; the pipeline
    // judges the whole datagram and releases the fragments to the peer, whose
    // reassembly gives back the client's bytes.
    let big: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    ns.handle_forward_datagram(1, alice, &big, now);
    let frags: Vec<NetTransmit> = std::iter::from_fn(|| ns.poll_transmit()).collect();
    assert_eq!(frags.len(), 3);
    assert_eq!(ns.stats().fragmented, 1);
    let mut released = Vec::new();
    for mut t in frags {
        assert!(t.packet.len() <= 1420);
        assert_eq!(pl.handle(&mut t.packet, t.zone, now), Verdict::Held);
        released.extend(std::iter::from_fn(|| pl.poll_transmit()));
    }
    assert_eq!(released.len(), 3);
    assert!(released.iter().all(|t| t.zone == laptop));
    let mut peer = crate::packet::frag::Reassembler::new(Default::default(), (3, 4));
    let whole = released.iter().find_map(|t| {
        let m = packet::parse(&t.packet).unwrap();
        match peer.handle(&t.packet, &m, laptop, now) {
            crate::packet::frag::FragResult::Complete { datagram, .. } => Some(datagram),
            _ => None,
        }
    });
    let whole = whole.expect("the peer reassembles the datagram");
    let m = packet::parse(&whole).unwrap();
    assert_eq!(&whole[usize::from(m.payload_offset)..], &big[..]);
    assert_eq!(SocketAddr::new(m.src, 0).ip(), locals[0].ip());
    // Idle associations expire in the housekeeping.
    ns.handle_timeout(now + Duration::from_secs(61));
    assert_eq!(ns.udp_forward_flows(), 0);
    assert_eq!(ns.stats().udp_forward.expired, 2);
}

#[test]
fn dns_to_the_relay_passes_the_ids_dns_query_match() {
    use crate::ids::rule::{load_text, LoadReport, Vars};
    use crate::ids::{Ids, IdsConfig, Mode};
    use crate::verdict::{DropReason, Verdict};
    let rules = "drop dns any any -> any any (msg:\"blocked name\"; dns.query; content:\"blocked.example\"; sid:4711;)\n";
    for mode in [Mode::Prevent, Mode::Detect] {
        let now = Instant::now();
        let laptop = ZoneId::peer(0);
        let mut pl = netstack_pipeline(now);
        let (mut sigs, mut rep) = (Vec::new(), LoadReport::default());
        load_text(rules, &Vars::suricata_defaults(), &mut sigs, &mut rep);
        assert_eq!(sigs.len(), 1, "{}", rep.render());
        pl.set_ids(Some(Ids::new(
            sigs,
            IdsConfig {
                mode,
                ..IdsConfig::default()
            },
            (3, 4),
        )));
        let mut ns = stack(cfg(), now);
        let relay = sa("100.64.0.1:53");
        // An innocent name goes through to the resolver, no alert.
        let mut q = synth::udp(
            sa(CLIENT),
            relay,
            &crate::packet::synth::dns_query("www.example.org"),
        )
        .unwrap();
        assert_eq!(
            pl.handle(&mut q, laptop, now),
            Verdict::Forward(ZoneId::LOCAL)
        );
        assert!(pl.poll_ids_alert().is_none());
        // The blocked name, from another client port (a new flow).
        let mut q = synth::udp(
            sa("100.64.0.2:40001"),
            relay,
            &crate::packet::synth::dns_query("www.blocked.example"),
        )
        .unwrap();
        let v = pl.handle(&mut q, laptop, now);
        let (a, peer) = pl.poll_ids_alert().expect("an alert in both modes");
        assert_eq!(a.sid, 4711);
        assert_eq!(peer, Some(laptop));
        match mode {
            Mode::Prevent => assert_eq!(v, Verdict::Drop(DropReason::Ids)),
            Mode::Detect => {
                assert_eq!(v, Verdict::Forward(ZoneId::LOCAL));
                // Detect mode: the relay still gets the query.
                ns.handle_packet(q, now);
                assert!(events(&mut ns).iter().any(|e| matches!(
                    e,
                    NetEvent::Connect { target, kind: Kind::Udp, .. } if *target == sa(RESOLVER)
                )));
            }
        }
    }
}

#[test]
fn fragmented_udp_reaches_the_relay_whole() {
    use crate::packet::testutil::frag_v4;
    use crate::verdict::Verdict;
    let now = Instant::now();
    let laptop = ZoneId::peer(0);
    let mut pl = netstack_pipeline(now);
    let mut ns = stack(cfg(), now);
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let whole = synth::udp(sa(CLIENT), sa("203.0.113.2:7"), &payload).unwrap();
    let frags = frag_v4(&whole, &[1400, 2800], 77);
    assert_eq!(frags.len(), 3);
    for mut f in frags {
        assert_eq!(pl.handle(&mut f, laptop, now), Verdict::Held);
    }
    // The pipeline released the judged datagram's fragments towards `host`.
    while let Some(t) = pl.poll_transmit() {
        assert_eq!(t.zone, ZoneId::HOST);
        ns.handle_packet(t.packet, now);
    }
    let ev = events(&mut ns);
    assert!(
        ev.iter()
            .any(|e| matches!(e, NetEvent::ToHost { data, .. } if *data == payload)),
        "{ev:?}"
    );
    assert_eq!(ns.stats().dropped, 0);
    // A lone fragment is held (and expires), never relayed.
    let lone = frag_v4(&whole, &[1400], 78).remove(0);
    ns.handle_packet(lone, now);
    assert!(events(&mut ns).is_empty());
}

#[test]
fn reload_applies_live_keys_and_names_the_others() {
    let now = Instant::now();
    let mut ns = stack(cfg(), now); // max_connections 4
    let mut new = cfg();
    new.max_connections = 1;
    new.udp_idle_timeout = Duration::from_secs(5);
    new.host_services = vec![(Proto::Udp, 5353)];
    new.host_window = 1 << 20;
    new.dns_upstream = Some(sa("203.0.113.9:53"));
    new.forwards = vec![PortForward {
        proto: Proto::Udp,
        listen: sa("127.0.0.1:5300"),
        to: sa("100.64.0.2:53"),
        max_flows: 8,
        idle_timeout: Duration::from_secs(60),
    }];
    assert_eq!(
        ns.config().restart_keys(&new),
        vec!["host_window", "dns_upstream", "forward"]
    );
    assert!(ns
        .config()
        .restart_keys(&ns.config().with_live(&new))
        .is_empty());
    ns.reconfigure(&new);
    assert_eq!(ns.config().max_connections, 1);
    assert_eq!(ns.config().host_window, 4096, "kept until a restart");
    assert!(ns.config().forwards.is_empty(), "kept until a restart");
    // The new host service answers; the new limit holds.
    ns.handle_packet(
        synth::udp(sa(CLIENT), sa("100.64.0.1:5353"), b"q").unwrap(),
        now,
    );
    assert!(events(&mut ns).iter().any(|e| matches!(
        e,
        NetEvent::Connect { target, .. } if *target == sa("127.0.0.1:5353")
    )));
    ns.handle_packet(
        synth::udp(sa(CLIENT), sa("203.0.113.2:7"), b"x").unwrap(),
        now,
    );
    assert_eq!(ns.stats().refused_limit, 1);
    // The shorter UDP idle timeout applies to the live flow.
    ns.handle_timeout(now + Duration::from_secs(6));
    assert_eq!(ns.connections(), 0);
}
