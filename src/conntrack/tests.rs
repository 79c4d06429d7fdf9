//! Unit tests of the flow table and TCP tracking with a fake clock.

use super::*;
use crate::packet::{tcp_flags as F, InnerHeader};
use std::net::{IpAddr, Ipv4Addr};

pub(super) const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
pub(super) const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
/// Zone of host A (a peer) and of host B (the TUN side).
pub(super) const ZA: ZoneId = ZoneId(3);
pub(super) const ZB: ZoneId = ZoneId::TUN;

pub(super) fn meta(from_a: bool, proto: u8, l4: L4, payload: u16) -> PacketMeta {
    let (src, dst) = if from_a { (A, B) } else { (B, A) };
    PacketMeta {
        src,
        dst,
        proto,
        ttl: 64,
        total_len: 40 + payload,
        l4_offset: 20,
        payload_offset: 40,
        frag: None,
        l4,
    }
}

pub(super) fn tcp_info(from_a: bool, flags: u8, seq: u32, ack: u32, window: u16) -> TcpInfo {
    let (sport, dport) = if from_a { (40000, 443) } else { (443, 40000) };
    TcpInfo {
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
        ..TcpInfo::default()
    }
}

fn tcp(from_a: bool, flags: u8, seq: u32, ack: u32, len: u16) -> PacketMeta {
    meta(
        from_a,
        proto::TCP,
        L4::Tcp(tcp_info(from_a, flags, seq, ack, 65535)),
        len,
    )
}

fn udp(from_a: bool) -> PacketMeta {
    let (sport, dport) = if from_a { (5000, 53) } else { (53, 5000) };
    meta(from_a, proto::UDP, L4::Udp { sport, dport }, 10)
}

fn echo(from_a: bool, ty: u8, id: u16) -> PacketMeta {
    meta(
        from_a,
        proto::ICMP,
        L4::Icmp(IcmpInfo {
            ty,
            code: 0,
            echo_id: Some(id),
            is_error: false,
            inner: None,
        }),
        8,
    )
}

/// An ICMP error sent by the `from_a` side, quoting a UDP packet that went
/// from `quoted_from_a`'s side to the other.
fn udp_error(from_a: bool, quoted_from_a: bool) -> PacketMeta {
    let q = udp(quoted_from_a);
    let L4::Udp { sport, dport } = q.l4 else {
        unreachable!()
    };
    meta(
        from_a,
        proto::ICMP,
        L4::Icmp(IcmpInfo {
            ty: 3,
            code: 3,
            echo_id: None,
            is_error: true,
            inner: Some(InnerHeader {
                src: q.src,
                dst: q.dst,
                proto: proto::UDP,
                sport,
                dport,
                offset: 28,
            }),
        }),
        0,
    )
}

struct H {
    ct: Conntrack,
    t0: Instant,
    now: Instant,
}

impl H {
    fn new(cfg: CtConfig) -> H {
        let t0 = Instant::now();
        H {
            ct: Conntrack::new(cfg, (0x0123_4567, 0x89ab_cdef), t0),
            t0,
            now: t0,
        }
    }

    fn at(&mut self, secs_f: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs_f);
    }

    fn track(&mut self, m: &PacketMeta) -> Track {
        let z = if m.src == A { ZA } else { ZB };
        self.ct.track(z, m, self.now)
    }

    fn insert(&mut self, m: &PacketMeta) -> Result<FlowId, CtError> {
        let (z, e) = if m.src == A { (ZA, ZB) } else { (ZB, ZA) };
        self.ct.insert(z, m, e, None, 1, self.now)
    }

    /// Track (must be New) and insert.
    fn open(&mut self, m: &PacketMeta) -> FlowId {
        assert_eq!(self.track(m), Track::New);
        self.insert(m).unwrap()
    }

    fn state(&self, id: FlowId) -> Option<TcpState> {
        self.ct.flow(id).and_then(Flow::tcp_state)
    }

    /// A completed handshake A -> B, ISNs 100 (A) and 5000 (B).
    fn established(&mut self) -> FlowId {
        let id = self.open(&tcp(true, F::SYN, 100, 0, 0));
        self.track(&tcp(false, F::SYN | F::ACK, 5000, 101, 0));
        self.track(&tcp(true, F::ACK, 101, 5001, 0));
        assert_eq!(self.state(id), Some(TcpState::Established));
        id
    }
}

fn tracked(id: FlowId, dir: Dir, state: CtState) -> Track {
    Track::Tracked { id, dir, state }
}

/// Everything about a flow that a packet could change.
fn snapshot(ct: &Conntrack, id: FlowId) -> (u8, u8, u64, tcp::TcpWin) {
    let f = ct.flow(id).unwrap();
    (f.class, f.flags, f.deadline, f.win)
}

#[test]
fn three_way_handshake() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    assert_eq!(h.state(id), Some(TcpState::SynSent));
    assert!(!h.ct.flow(id).unwrap().seen_reply());
    let r = h.track(&tcp(false, F::SYN | F::ACK, 5000, 101, 0));
    assert_eq!(r, tracked(id, Dir::Reply, CtState::Established));
    assert_eq!(h.state(id), Some(TcpState::SynRecv));
    assert!(!h.ct.flow(id).unwrap().assured());
    let r = h.track(&tcp(true, F::ACK, 101, 5001, 0));
    assert_eq!(r, tracked(id, Dir::Original, CtState::Established));
    assert_eq!(h.state(id), Some(TcpState::Established));
    assert!(h.ct.flow(id).unwrap().assured());
    // Data both ways.
    assert_eq!(
        h.track(&tcp(true, F::ACK | F::PSH, 101, 5001, 500)),
        tracked(id, Dir::Original, CtState::Established)
    );
    assert_eq!(
        h.track(&tcp(false, F::ACK, 5001, 601, 1000)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(h.ct.len(), 1);
    assert_eq!(h.ct.stats().unassured, 0);
}

#[test]
fn orig_packets_are_new_until_reply() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    // Retransmitted SYN: same flow, still NEW.
    assert_eq!(
        h.track(&tcp(true, F::SYN, 100, 0, 0)),
        tracked(id, Dir::Original, CtState::New)
    );
    assert_eq!(h.state(id), Some(TcpState::SynSent));
    // A SYN/ACK from the original side is not allowed in SYN_SENT.
    let before = snapshot(&h.ct, id);
    assert_eq!(
        h.track(&tcp(true, F::SYN | F::ACK, 100, 1, 0)),
        Track::Invalid(InvalidReason::BadState)
    );
    assert_eq!(snapshot(&h.ct, id), before);
}

#[test]
fn retransmitted_synack_is_ignored() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    h.at(1.0);
    h.track(&tcp(false, F::SYN | F::ACK, 5000, 101, 0));
    let before = snapshot(&h.ct, id);
    h.at(2.0);
    assert_eq!(
        h.track(&tcp(false, F::SYN | F::ACK, 5000, 101, 0)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    // Ignored: no state change, no timeout refresh.
    assert_eq!(snapshot(&h.ct, id), before);
}

#[test]
fn simultaneous_open() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    // B also sends a SYN (SYN_SENT2, shown as SYN_SENT).
    assert_eq!(
        h.track(&tcp(false, F::SYN, 5000, 0, 0)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(h.state(id), Some(TcpState::SynSent));
    assert_eq!(h.ct.flow(id).unwrap().state_name(), "syn_sent");
    // Both answer with SYN/ACK.
    assert!(matches!(
        h.track(&tcp(true, F::SYN | F::ACK, 100, 5001, 0)),
        Track::Tracked { .. }
    ));
    assert_eq!(h.state(id), Some(TcpState::SynRecv));
    assert!(matches!(
        h.track(&tcp(false, F::SYN | F::ACK, 5000, 101, 0)),
        Track::Tracked { .. }
    ));
    assert!(matches!(
        h.track(&tcp(true, F::ACK, 101, 5001, 0)),
        Track::Tracked { .. }
    ));
    assert_eq!(h.state(id), Some(TcpState::Established));
}

#[test]
fn fin_close_sequence_and_timeouts() {
    let cfg = CtConfig::default();
    let t = cfg.timeouts;
    let mut h = H::new(cfg);
    let id = h.established();
    let steps = [
        (
            tcp(true, F::FIN | F::ACK, 101, 5001, 0),
            TcpState::FinWait,
            t.tcp_fin_wait,
        ),
        (
            tcp(false, F::ACK, 5001, 102, 0),
            TcpState::CloseWait,
            t.tcp_close_wait,
        ),
        (
            tcp(false, F::FIN | F::ACK, 5001, 102, 0),
            TcpState::LastAck,
            t.tcp_last_ack,
        ),
        (
            tcp(true, F::ACK, 102, 5002, 0),
            TcpState::TimeWait,
            t.tcp_time_wait,
        ),
    ];
    for (i, (m, st, timeout)) in steps.iter().enumerate() {
        h.at(i as f64 * 5.0);
        assert!(matches!(h.track(m), Track::Tracked { .. }), "step {i}");
        assert_eq!(h.state(id), Some(*st), "step {i}");
        let f = h.ct.flow(id).unwrap();
        assert_eq!(
            Duration::from_nanos(f.deadline),
            h.now - h.t0 + *timeout,
            "timeout of {st:?}"
        );
    }
    // TIME_WAIT lasts tcp_time_wait, then the flow is gone.
    let end = 15.0 + t.tcp_time_wait.as_secs_f64();
    h.at(end - 0.001);
    assert!(matches!(
        h.track(&tcp(true, F::ACK, 102, 5002, 0)),
        Track::Tracked { .. }
    ));
    h.at(end + 120.0);
    assert_eq!(
        h.track(&tcp(true, F::ACK, 102, 5002, 0)),
        Track::Invalid(InvalidReason::NoFlow)
    );
    assert_eq!(h.ct.len(), 0);
}

#[test]
fn syn_in_time_wait_reopens() {
    let mut h = H::new(CtConfig::default());
    let id = h.established();
    h.track(&tcp(true, F::FIN | F::ACK, 101, 5001, 0));
    h.track(&tcp(false, F::FIN | F::ACK, 5001, 102, 0));
    h.track(&tcp(true, F::ACK, 102, 5002, 0));
    assert_eq!(h.state(id), Some(TcpState::TimeWait));
    assert_eq!(h.track(&tcp(true, F::SYN, 90_000, 0, 0)), Track::New);
    assert!(h.ct.flow(id).is_none());
    let id2 = h.insert(&tcp(true, F::SYN, 90_000, 0, 0)).unwrap();
    assert_eq!(h.state(id2), Some(TcpState::SynSent));
}

#[test]
fn rst_in_and_out_of_window() {
    let mut h = H::new(CtConfig::default());
    let id = h.established();
    let before = snapshot(&h.ct, id);
    // Far outside B's window.
    assert_eq!(
        h.track(&tcp(false, F::RST, 5001 + 3_000_000, 0, 0)),
        Track::Invalid(InvalidReason::OutOfWindow)
    );
    assert_eq!(snapshot(&h.ct, id), before);
    assert_eq!(h.state(id), Some(TcpState::Established));
    // In window.
    assert!(matches!(
        h.track(&tcp(false, F::RST, 5001, 0, 0)),
        Track::Tracked { .. }
    ));
    assert_eq!(h.state(id), Some(TcpState::Close));
    assert_eq!(h.ct.stats().invalid[1], ("out_of_window", 1));
}

#[test]
fn rst_answering_syn_closes() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    assert!(matches!(
        h.track(&tcp(false, F::RST | F::ACK, 0, 101, 0)),
        Track::Tracked { .. }
    ));
    assert_eq!(h.state(id), Some(TcpState::Close));
    // RST+ACK acknowledging something A never sent is out of window.
    let mut h = H::new(CtConfig::default());
    let id = h.open(&tcp(true, F::SYN, 100, 0, 0));
    assert_eq!(
        h.track(&tcp(false, F::RST | F::ACK, 0, 9999, 0)),
        Track::Invalid(InvalidReason::OutOfWindow)
    );
    assert_eq!(h.state(id), Some(TcpState::SynSent));
}

#[test]
fn invalid_flag_combinations_change_nothing() {
    let mut h = H::new(CtConfig::default());
    let id = h.established();
    h.at(3.0);
    let before = snapshot(&h.ct, id);
    for flags in [
        F::SYN | F::RST,
        F::SYN | F::FIN,
        F::FIN | F::RST,
        F::FIN | F::RST | F::ACK,
        F::SYN | F::FIN | F::RST | F::ACK,
        F::FIN,
        F::PSH,
        0,
    ] {
        for from_a in [true, false] {
            let (seq, ack) = if from_a { (101, 5001) } else { (5001, 101) };
            assert_eq!(
                h.track(&tcp(from_a, flags, seq, ack, 0)),
                Track::Invalid(InvalidReason::BadFlags),
                "flags {flags:#x}"
            );
        }
    }
    assert_eq!(snapshot(&h.ct, id), before);
    // Also without a flow: bad flags, never NoFlow or New.
    assert_eq!(
        h.ct.track(ZoneId(9), &tcp(true, F::SYN | F::FIN, 1, 0, 0), h.now),
        Track::Invalid(InvalidReason::BadFlags)
    );
    assert_eq!(h.ct.stats().invalid[0], ("bad_flags", 17));
}

#[test]
fn non_syn_without_flow_is_invalid_unless_loose() {
    let mut h = H::new(CtConfig::default());
    assert_eq!(
        h.track(&tcp(true, F::ACK, 1, 1, 0)),
        Track::Invalid(InvalidReason::NoFlow)
    );
    assert_eq!(
        h.track(&tcp(true, F::SYN | F::ACK, 1, 1, 0)),
        Track::Invalid(InvalidReason::NoFlow)
    );
    assert_eq!(h.insert(&tcp(true, F::ACK, 1, 1, 0)), Err(CtError::NotNew));
    let mut h = H::new(CtConfig {
        tcp_loose: true,
        ..CtConfig::default()
    });
    let id = h.open(&tcp(true, F::ACK, 1000, 7000, 100));
    assert_eq!(h.state(id), Some(TcpState::Established));
    // Picked-up flows are liberal about windows.
    assert!(matches!(
        h.track(&tcp(false, F::ACK, 7000, 1100, 10)),
        Track::Tracked { .. }
    ));
    assert_eq!(
        h.track(&tcp(true, F::SYN | F::ACK, 1, 1, 0)),
        Track::Invalid(InvalidReason::BadState)
    );
}

/// Handshake with the given window-scale options; returns the flow.
fn scaled(h: &mut H, a_ws: Option<u8>, b_ws: Option<u8>) -> FlowId {
    let mut syn = tcp_info(true, F::SYN, 100, 0, 65535);
    syn.wscale = a_ws;
    let id = h.open(&meta(true, proto::TCP, L4::Tcp(syn), 0));
    let mut sa = tcp_info(false, F::SYN | F::ACK, 5000, 101, 65535);
    sa.wscale = b_ws;
    assert!(matches!(
        h.track(&meta(false, proto::TCP, L4::Tcp(sa), 0)),
        Track::Tracked { .. }
    ));
    // B's final window: 1000 units (scaled by 2^7 = 128000 bytes if scaling is on).
    let ack = tcp_info(true, F::ACK, 101, 5001, 1000);
    assert!(matches!(
        h.track(&meta(true, proto::TCP, L4::Tcp(ack), 0)),
        Track::Tracked { .. }
    ));
    let back = tcp_info(false, F::ACK, 5001, 101, 1000);
    assert!(matches!(
        h.track(&meta(false, proto::TCP, L4::Tcp(back), 0)),
        Track::Tracked { .. }
    ));
    id
}

#[test]
fn window_scaling() {
    // B advertised 1000 << 7 = 128000 bytes: A may send at offset 100000.
    let far = tcp(true, F::ACK, 101 + 100_000, 5001, 1000);
    let mut h = H::new(CtConfig::default());
    scaled(&mut h, Some(7), Some(7));
    assert!(matches!(h.track(&far), Track::Tracked { .. }));
    // Beyond 128000 it is out of window.
    let too_far = tcp(true, F::ACK, 101 + 130_000, 5001, 1000);
    assert_eq!(
        h.track(&too_far),
        Track::Invalid(InvalidReason::OutOfWindow)
    );
    // Only one side offered scaling: RFC 7323 says no scaling, 1000 bytes.
    let mut h = H::new(CtConfig::default());
    scaled(&mut h, Some(7), None);
    assert_eq!(h.track(&far), Track::Invalid(InvalidReason::OutOfWindow));
    assert!(matches!(
        h.track(&tcp(true, F::ACK, 101 + 1000, 5001, 0)),
        Track::Tracked { .. }
    ));
}

fn sack_flow(h: &mut H, sack: bool) -> FlowId {
    let mut syn = tcp_info(true, F::SYN, 100, 0, 65535);
    syn.sack_permitted = sack;
    let id = h.open(&meta(true, proto::TCP, L4::Tcp(syn), 0));
    let mut sa = tcp_info(false, F::SYN | F::ACK, 5000, 101, 65535);
    sa.sack_permitted = sack;
    h.track(&meta(false, proto::TCP, L4::Tcp(sa), 0));
    h.track(&tcp(true, F::ACK, 101, 5001, 0));
    // A sends 3000 bytes: td_end(A) = 3101.
    for i in 0..3 {
        assert!(matches!(
            h.track(&tcp(true, F::ACK, 101 + i * 1000, 5001, 1000)),
            Track::Tracked { .. }
        ));
    }
    id
}

fn sack_ack(right: u32) -> PacketMeta {
    let mut t = tcp_info(false, F::ACK, 5001, 101, 65535);
    t.sack_max_right = Some(right);
    meta(false, proto::TCP, L4::Tcp(t), 0)
}

#[test]
fn sack_edges() {
    let mut h = H::new(CtConfig::default());
    sack_flow(&mut h, true);
    // A SACK block ending exactly at A's highest sequence is fine...
    assert!(matches!(h.track(&sack_ack(3101)), Track::Tracked { .. }));
    // ...one beyond it acknowledges data never sent (bound III).
    assert_eq!(
        h.track(&sack_ack(3102)),
        Track::Invalid(InvalidReason::OutOfWindow)
    );
    // Without SACK permitted, SACK blocks are not looked at.
    let mut h = H::new(CtConfig::default());
    sack_flow(&mut h, false);
    assert!(matches!(h.track(&sack_ack(3102)), Track::Tracked { .. }));
}

#[test]
fn udp_new_then_established_both_directions_one_entry() {
    let mut h = H::new(CtConfig::default());
    let id = h.open(&udp(true));
    assert_eq!(
        h.track(&udp(true)),
        tracked(id, Dir::Original, CtState::New)
    );
    assert_eq!(h.ct.flow(id).unwrap().state_name(), "udp_unreplied");
    assert_eq!(
        h.track(&udp(false)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(
        h.track(&udp(true)),
        tracked(id, Dir::Original, CtState::Established)
    );
    let f = h.ct.flow(id).unwrap();
    assert_eq!(f.state_name(), "udp_replied");
    assert_eq!((f.ingress(), f.egress()), (ZA, ZB));
    assert_eq!(f.reply, f.orig.inverse(ZB));
    assert_eq!(h.ct.len(), 1);
    assert_eq!(h.insert(&udp(false)), Err(CtError::Exists));
    assert_eq!(h.insert(&udp(true)), Err(CtError::Exists));
    // The same tuple from another zone is another flow.
    assert_eq!(h.ct.track(ZoneId(7), &udp(true), h.now), Track::New);
    h.ct.flow_mut(id).unwrap().count(Dir::Reply, 100);
    assert_eq!(h.ct.flow(id).unwrap().packets, [0, 1]);
    assert_eq!(h.ct.flow(id).unwrap().bytes, [0, 100]);
}

#[test]
fn icmp_echo_new_then_established() {
    let mut h = H::new(CtConfig::default());
    assert_eq!(
        h.track(&echo(true, 0, 9)),
        Track::Invalid(InvalidReason::NoFlow),
        "unsolicited echo reply"
    );
    assert_eq!(h.insert(&echo(true, 0, 9)), Err(CtError::NotNew));
    let id = h.open(&echo(true, 8, 9));
    assert_eq!(
        h.track(&echo(true, 8, 9)),
        tracked(id, Dir::Original, CtState::New)
    );
    assert_eq!(
        h.track(&echo(false, 0, 9)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(
        h.track(&echo(true, 0, 9)),
        Track::Invalid(InvalidReason::BadState)
    );
    // Another id is another flow.
    assert_eq!(h.track(&echo(true, 8, 10)), Track::New);
    assert_eq!(
        h.track(&echo(false, 0, 10)),
        Track::Invalid(InvalidReason::NoFlow)
    );
}

#[test]
fn icmp_flows_keep_the_first_packets_type_and_code() {
    let mut h = H::new(CtConfig::default());
    let mut ts = echo(true, 13, 0);
    if let L4::Icmp(i) = &mut ts.l4 {
        i.code = 1;
        i.echo_id = None;
    }
    let id = h.open(&ts);
    // A reply (type 14) and later packets do not change what the flow stored.
    let mut reply = echo(false, 14, 0);
    if let L4::Icmp(i) = &mut reply.l4 {
        i.echo_id = None;
    }
    assert_eq!(
        h.track(&reply),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(h.ct.flow(id).unwrap().icmp_type(), Some((13, 1)));
    let echo_id = h.open(&echo(true, 8, 9));
    assert_eq!(h.ct.flow(echo_id).unwrap().icmp_type(), Some((8, 0)));
    let udp_id = h.open(&udp(true));
    assert_eq!(h.ct.flow(udp_id).unwrap().icmp_type(), None);
}

#[test]
fn icmp_errors_are_related_or_invalid() {
    let mut h = H::new(CtConfig::default());
    assert_eq!(
        h.track(&udp_error(false, true)),
        Track::Invalid(InvalidReason::NoFlow)
    );
    let id = h.open(&udp(true));
    // B's side answers A's datagram with port unreachable: travels the reply way.
    assert_eq!(
        h.track(&udp_error(false, true)),
        Track::Related {
            id,
            dir: Dir::Reply
        }
    );
    // A's side complains about B's datagram: travels the original way.
    assert_eq!(
        h.track(&udp_error(true, false)),
        Track::Related {
            id,
            dir: Dir::Original
        }
    );
    // An error from A's side quoting A's own packet names no flow.
    assert_eq!(
        h.track(&udp_error(true, true)),
        Track::Invalid(InvalidReason::NoFlow)
    );
    // Related does not count as a reply.
    assert!(!h.ct.flow(id).unwrap().seen_reply());
    let mut no_inner = udp_error(false, true);
    if let L4::Icmp(i) = &mut no_inner.l4 {
        i.inner = None;
    }
    assert_eq!(h.track(&no_inner), Track::Invalid(InvalidReason::NoFlow));
    assert_eq!(h.insert(&udp_error(false, true)), Err(CtError::NotNew));
    // Errors about an echo flow (inner ports: id, 0).
    let eid = h.open(&echo(true, 8, 42));
    let err = meta(
        false,
        proto::ICMP,
        L4::Icmp(IcmpInfo {
            ty: 11,
            code: 0,
            echo_id: None,
            is_error: true,
            inner: Some(InnerHeader {
                src: A,
                dst: B,
                proto: proto::ICMP,
                sport: 42,
                dport: 0,
                offset: 28,
            }),
        }),
        0,
    );
    assert_eq!(
        h.track(&err),
        Track::Related {
            id: eid,
            dir: Dir::Reply
        }
    );
}

#[test]
fn fragments_without_transport_header_are_invalid() {
    let mut h = H::new(CtConfig::default());
    let m = meta(true, proto::UDP, L4::Other, 100);
    assert_eq!(h.track(&m), Track::Invalid(InvalidReason::NoTransport));
    assert_eq!(h.insert(&m), Err(CtError::NotNew));
    // Other protocols (GRE) are tracked with ports 0/0.
    let gre = meta(true, 47, L4::Other, 100);
    let id = h.open(&gre);
    assert_eq!(
        h.track(&meta(false, 47, L4::Other, 100)),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(h.ct.flow(id).unwrap().state_name(), "other");
}

fn short_timeouts() -> CtConfig {
    let s = Duration::from_secs;
    CtConfig {
        max_entries: 100,
        timeouts: Timeouts {
            tcp_syn_sent: s(11),
            tcp_syn_recv: s(12),
            tcp_established: s(13),
            tcp_fin_wait: s(14),
            tcp_close_wait: s(15),
            tcp_last_ack: s(16),
            tcp_time_wait: s(17),
            tcp_close: s(18),
            udp_unreplied: s(19),
            udp_replied: s(20),
            icmp: s(21),
            other: s(22),
        },
        tcp_loose: false,
    }
}

#[test]
fn per_state_timeouts_with_fake_clock() {
    let mut h = H::new(short_timeouts());
    let u = h.open(&udp(true));
    let e = h.open(&echo(true, 8, 1));
    let t = h.open(&tcp(true, F::SYN, 100, 0, 0));
    // Just before each deadline the flow is there; at it, it is gone.
    h.at(10.999);
    assert!(matches!(
        h.track(&tcp(true, F::SYN, 100, 0, 0)),
        Track::Tracked { .. }
    ));
    h.at(10.999 + 11.0);
    assert_eq!(
        h.track(&tcp(true, F::SYN, 100, 0, 0)),
        Track::New,
        "syn_sent expired"
    );
    assert!(h.ct.flow(t).is_none());
    // UDP unreplied: 19 s from its last packet (at 0).
    h.at(19.0);
    assert_eq!(h.track(&udp(false)), Track::New);
    assert!(h.ct.flow(u).is_none());
    // ICMP: 21 s.
    h.at(20.5);
    assert!(matches!(h.track(&echo(false, 0, 1)), Track::Tracked { .. }));
    // Refreshed at 20.5 -> lives until 41.5.
    h.at(41.4);
    assert!(matches!(h.track(&echo(true, 8, 1)), Track::Tracked { .. }));
    assert!(h.ct.flow(e).is_some());
    // Replied UDP lives 20 s.
    h.at(50.0);
    let u2 = h.open(&udp(true));
    h.track(&udp(false));
    h.at(69.999);
    assert!(matches!(h.track(&udp(true)), Track::Tracked { .. }));
    h.at(89.998);
    assert!(matches!(h.track(&udp(true)), Track::Tracked { .. }));
    h.at(109.998);
    // Expired but not swept: counted in len, absent for track and insert.
    assert_eq!(h.ct.len(), 2);
    let u3 = h.insert(&udp(true)).unwrap();
    assert_eq!(h.ct.len(), 2, "expired flow replaced");
    assert!(h.ct.flow(u2).is_none() || u3 == u2);
    // The sweep removes the expired echo flow.
    assert_eq!(h.ct.expire(h.now, 10), 1);
    assert_eq!(h.ct.len(), 1);
    assert_eq!(h.ct.stats().expired, 4);
}

#[test]
fn expire_is_bounded_per_call() {
    let mut h = H::new(short_timeouts());
    for port in 0..50u16 {
        let m = meta(
            true,
            proto::UDP,
            L4::Udp {
                sport: port,
                dport: 53,
            },
            0,
        );
        h.ct.insert(ZA, &m, ZB, None, 0, h.now).unwrap();
    }
    h.at(100.0);
    assert_eq!(h.ct.expire(h.now, 3), 3);
    assert_eq!(h.ct.len(), 47);
    assert_eq!(h.ct.expire(h.now, 0), 0);
    assert_eq!(h.ct.expire(h.now, usize::MAX), 47);
    assert!(h.ct.is_empty());
    assert_eq!(h.ct.iter().count(), 0);
}

fn syn_from(port: u16) -> PacketMeta {
    let mut t = tcp_info(true, F::SYN, 1, 0, 1000);
    t.sport = port;
    meta(true, proto::TCP, L4::Tcp(t), 0)
}

#[test]
fn syn_flood_evicts_unassured_and_keeps_established() {
    let mut h = H::new(CtConfig {
        max_entries: 20,
        ..CtConfig::default()
    });
    let est = h.established();
    let replied = h.open(&udp(true));
    h.track(&udp(false));
    for port in 1..=1000u16 {
        h.at(f64::from(port) * 0.01);
        assert_eq!(h.track(&syn_from(port)), Track::New);
        h.ct.insert(ZA, &syn_from(port), ZB, None, 0, h.now)
            .unwrap();
        assert!(h.ct.len() <= 20);
    }
    assert_eq!(h.state(est), Some(TcpState::Established));
    assert!(h.ct.flow(replied).is_some());
    assert!(matches!(
        h.track(&tcp(true, F::ACK, 101, 5001, 0)),
        Track::Tracked { .. }
    ));
    let s = h.ct.stats();
    assert_eq!(s.entries, 20);
    assert_eq!(s.evicted_early, 1000 - 18);
    assert_eq!(s.unassured, 18);
    // Oldest first: the 18 most recent SYN flows remain.
    for port in 983..=1000u16 {
        assert!(
            matches!(h.track(&syn_from(port)), Track::Tracked { .. }),
            "{port}"
        );
    }
    assert_eq!(h.track(&syn_from(982)), Track::New);
}

#[test]
fn full_table_of_assured_flows_refuses() {
    let mut h = H::new(CtConfig {
        max_entries: 3,
        ..CtConfig::default()
    });
    for port in 0..3u16 {
        let m = meta(
            true,
            proto::UDP,
            L4::Udp {
                sport: port,
                dport: 53,
            },
            0,
        );
        h.ct.insert(ZA, &m, ZB, None, 0, h.now).unwrap();
        let r = meta(
            false,
            proto::UDP,
            L4::Udp {
                sport: 53,
                dport: port,
            },
            0,
        );
        assert!(matches!(h.ct.track(ZB, &r, h.now), Track::Tracked { .. }));
    }
    assert_eq!(h.insert(&udp(true)), Err(CtError::Full));
    let s = h.ct.stats();
    assert_eq!((s.refused_full, s.entries, s.evicted_early), (1, 3, 0));
    // Removing one makes room again, and the slot is reused.
    let (id, _) = h.ct.iter().next().unwrap();
    assert!(h.ct.remove(id).is_some());
    assert!(h.ct.remove(id).is_none());
    assert_eq!(h.insert(&udp(true)), Ok(id));
    h.ct.flush();
    assert!(h.ct.is_empty());
    assert_eq!(h.track(&udp(true)), Track::New);
}

#[test]
fn stats_count_states() {
    let mut h = H::new(CtConfig::default());
    h.established();
    h.open(&udp(true));
    h.open(&echo(true, 8, 3));
    let s = h.ct.stats();
    let get = |name: &str| s.by_state.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("established"), 1);
    assert_eq!(get("syn_sent"), 0);
    assert_eq!(get("udp_unreplied"), 1);
    assert_eq!(get("icmp"), 1);
    assert_eq!(s.inserted, 3);
    assert_eq!(s.unassured, 2);
    h.track(&udp(false));
    let s = h.ct.stats();
    let get = |name: &str| s.by_state.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!((get("udp_unreplied"), get("udp_replied")), (0, 1));
}

#[test]
fn hash_key_does_not_change_behaviour() {
    for key in [(0, 0), (1, 2), (u64::MAX, 7)] {
        let t0 = Instant::now();
        let mut ct = Conntrack::new(CtConfig::default(), key, t0);
        let id = ct.insert(ZA, &udp(true), ZB, None, 0, t0).unwrap();
        assert_eq!(
            ct.track(ZB, &udp(false), t0),
            tracked(id, Dir::Reply, CtState::Established)
        );
    }
}

#[test]
fn ct_state_mask_bits() {
    assert_eq!(CtState::New.mask_bit(), CtStateMask::NEW);
    assert_eq!(CtState::Established.mask_bit(), CtStateMask::ESTABLISHED);
    assert_eq!(CtState::Related.mask_bit(), CtStateMask::RELATED);
    assert_eq!(CtState::Invalid.mask_bit(), CtStateMask::INVALID);
    assert_eq!(
        Track::Invalid(InvalidReason::NoFlow).ct_state(),
        CtState::Invalid
    );
}

/// The translated flag is computed at insert from the two keys: a plain
/// inverse reply key is not translated, a reply key whose address or port
/// differs (NAT) is, and the reply zone alone does not count.
#[test]
fn translated_flag_cached_at_insert() {
    let mut h = H::new(CtConfig::default());
    let plain = h.open(&udp(true));
    assert!(!h.ct.flow(plain).unwrap().is_translated());
    let m = tcp(true, F::SYN, 100, 0, 0);
    let orig = FlowKey::from_meta(ZA, &m);
    let other_zone = orig.inverse(ZoneId(9));
    assert!(!orig.translates_to(&other_zone));
    let mut snat = orig.inverse(ZB);
    snat.dport = 61_000;
    assert!(orig.translates_to(&snat));
    let mut dnat = orig.inverse(ZB);
    dnat.src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
    assert!(orig.translates_to(&dnat));
    let id = h.ct.insert(ZA, &m, ZB, Some(snat), 1, h.now).unwrap();
    assert!(h.ct.flow(id).unwrap().is_translated());
    // The flag goes with the slot's flow: a reused slot is recomputed.
    h.ct.remove(id).unwrap();
    let id2 = h.ct.insert(ZA, &m, ZB, None, 1, h.now).unwrap();
    assert_eq!(id2, id);
    assert!(!h.ct.flow(id2).unwrap().is_translated());
}

#[test]
fn renumbered_zones_keep_the_flow_under_its_new_keys() {
    let mut h = H::new(CtConfig::default());
    let id = h.established();
    let u = h.open(&udp(true));
    let before = snapshot(&h.ct, id);
    // nothing changes: no rebuild, same lookups
    assert_eq!(h.ct.renumber_zones(|z| z), 0);
    // A's peer zone 3 becomes 5: both flows move, keep their slots and state
    let to = |z: ZoneId| if z == ZA { ZoneId(5) } else { z };
    assert_eq!(h.ct.renumber_zones(to), 2);
    assert_eq!(h.ct.len(), 2);
    assert_eq!(snapshot(&h.ct, id), before);
    let m = tcp(true, F::ACK, 101, 5001, 0);
    assert_eq!(
        h.ct.track(ZoneId(5), &m, h.now),
        tracked(id, Dir::Original, CtState::Established)
    );
    // the old zone finds nothing (an ACK with no flow is invalid)
    assert!(matches!(h.ct.track(ZA, &m, h.now), Track::Invalid(_)));
    // the reply key (entering from the TUN) names the new egress zone
    let r = tcp(false, F::ACK, 5001, 101, 0);
    assert_eq!(
        h.ct.track(ZB, &r, h.now),
        tracked(id, Dir::Reply, CtState::Established)
    );
    assert_eq!(h.ct.flow(id).map(|f| f.reply.zone), Some(ZB));
    assert_eq!(h.ct.flow(u).map(|f| f.orig.zone), Some(ZoneId(5)));
    assert_eq!(h.ct.flow(id).map(|f| f.orig.zone), Some(ZoneId(5)));
    // a removal after the rebuild unindexes the new keys
    assert!(h.ct.remove(u).is_some());
    assert_eq!(h.ct.track(ZoneId(5), &udp(true), h.now), Track::New);
}
