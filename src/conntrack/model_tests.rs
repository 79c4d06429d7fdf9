//! Property test: the table against a small reference model.
//!
//! The model is a `BTreeMap` from (protocol, endpoint pair) to a flow record
//! with an explicit deadline, the kernel's TCP transitions written out state by
//! state, and per-direction "next sequence number" bookkeeping. Packets are
//! generated abstractly (who sends, which flags, how much data, in or far out
//! of window) and given concrete sequence/ack numbers from the model, so the
//! real window tracker must accept exactly the in-window ones. Random clock
//! advances exercise the timeouts; sweeps check that expired flows go.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::{meta, tcp_info, A, B, ZA, ZB};
use super::*;
use crate::packet::{tcp_flags as F, InnerHeader};

#[derive(Debug, Clone)]
enum Op {
    Tcp {
        ep: u8,
        from_a: bool,
        kind: usize,
        len: u8,
        oow: bool,
        insert: bool,
    },
    Udp {
        ep: u8,
        from_a: bool,
        insert: bool,
    },
    Echo {
        ep: u8,
        from_a: bool,
        reply: bool,
        insert: bool,
    },
    IcmpErr {
        proto: u8,
        ep: u8,
        quoted_from_a: bool,
        right_zone: bool,
    },
    Advance(u32),
    Expire(u8),
}

const KINDS: [u8; 12] = [
    F::SYN,
    F::SYN | F::ACK,
    F::FIN | F::ACK,
    F::ACK,
    F::RST,
    F::RST | F::ACK,
    F::ACK | F::PSH,
    F::SYN | F::RST,
    F::SYN | F::FIN,
    F::FIN,
    0,
    F::FIN | F::RST | F::ACK,
];

/// Valid flag combinations most of the time, so that flows get deep into
/// the state machine; each invalid one now and then.
fn kind() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        2 => Just(1),
        3 => Just(2),
        5 => Just(3),
        1 => Just(4),
        1 => Just(5),
        2 => Just(6),
        1 => 7..KINDS.len(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2u8, any::<bool>(), kind(), any::<u8>(), prop::bool::weighted(0.1), prop::bool::weighted(0.8))
            .prop_map(|(ep, from_a, kind, len, oow, insert)| Op::Tcp { ep, from_a, kind, len, oow, insert }),
        2 => (0..2u8, any::<bool>(), any::<bool>()).prop_map(|(ep, from_a, insert)| Op::Udp { ep, from_a, insert }),
        2 => (0..2u8, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(ep, from_a, reply, insert)| Op::Echo { ep, from_a, reply, insert }),
        1 => (0..3u8, 0..2u8, any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(proto, ep, quoted_from_a, right_zone)| Op::IcmpErr { proto, ep, quoted_from_a, right_zone }),
        1 => (0..15_000u32).prop_map(Op::Advance),
        // Whole seconds, to land exactly on deadlines (the timeouts are whole seconds).
        1 => (0..15u32).prop_map(|s| Op::Advance(s * 1000)),
        1 => any::<u8>().prop_map(Op::Expire),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MState {
    SynSent,
    SynSent2,
    SynRecv,
    Est,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MNext {
    To(MState),
    Ignore,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cls {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    NoFlags,
}

fn cls(flags: u8) -> Cls {
    if flags & F::RST != 0 {
        Cls::Rst
    } else if flags & F::SYN != 0 && flags & F::ACK != 0 {
        Cls::SynAck
    } else if flags & F::SYN != 0 {
        Cls::Syn
    } else if flags & F::FIN != 0 {
        Cls::Fin
    } else if flags & F::ACK != 0 {
        Cls::Ack
    } else {
        Cls::NoFlags
    }
}

/// The kernel's transitions, written state by state.
fn next(st: MState, orig: bool, c: Cls) -> MNext {
    use MNext::*;
    use MState::*;
    match (c, orig, st) {
        (Cls::Rst, _, _) => To(Close),
        (Cls::NoFlags, _, _) => Invalid,
        (Cls::Syn, true, SynSent | TimeWait | Close) => To(SynSent),
        (Cls::Syn, true, SynSent2) => To(SynSent2),
        (Cls::Syn, true, _) => Ignore,
        (Cls::Syn, false, SynSent | SynSent2) => To(SynSent2),
        (Cls::Syn, false, TimeWait) => To(SynSent),
        (Cls::Syn, false, _) => Invalid,
        (Cls::SynAck, true, SynRecv | SynSent2) => To(SynRecv),
        (Cls::SynAck, true, _) => Invalid,
        (Cls::SynAck, false, SynSent | SynSent2) => To(SynRecv),
        (Cls::SynAck, false, _) => Ignore,
        (Cls::Fin, _, SynSent | SynSent2) => Invalid,
        (Cls::Fin, _, SynRecv | Est) => To(FinWait),
        (Cls::Fin, _, FinWait | CloseWait | LastAck) => To(LastAck),
        (Cls::Fin, _, TimeWait) => To(TimeWait),
        (Cls::Fin, _, Close) => To(Close),
        (Cls::Ack, true, SynSent | SynSent2) => Invalid,
        (Cls::Ack, false, SynSent | SynSent2) => Ignore,
        (Cls::Ack, true, SynRecv) => To(Est),
        (Cls::Ack, false, SynRecv) => To(SynRecv),
        (Cls::Ack, _, Est) => To(Est),
        (Cls::Ack, _, FinWait | CloseWait) => To(CloseWait),
        (Cls::Ack, _, LastAck | TimeWait) => To(TimeWait),
        (Cls::Ack, _, Close) => To(Close),
    }
}

fn public(st: MState) -> TcpState {
    match st {
        MState::SynSent | MState::SynSent2 => TcpState::SynSent,
        MState::SynRecv => TcpState::SynRecv,
        MState::Est => TcpState::Established,
        MState::FinWait => TcpState::FinWait,
        MState::CloseWait => TcpState::CloseWait,
        MState::LastAck => TcpState::LastAck,
        MState::TimeWait => TcpState::TimeWait,
        MState::Close => TcpState::Close,
    }
}

fn valid(flags: u8) -> bool {
    let f = flags & !(F::PSH | F::ECE | F::CWR);
    [
        F::SYN,
        F::SYN | F::URG,
        F::SYN | F::ACK,
        F::RST,
        F::RST | F::ACK,
        F::FIN | F::ACK,
        F::FIN | F::ACK | F::URG,
        F::ACK,
        F::ACK | F::URG,
    ]
    .contains(&f)
}

#[derive(Debug, Clone)]
struct MTcp {
    st: MState,
    nxt: [u32; 2],
    sent: [bool; 2],
    /// The peer has granted this side a window (see `Run::tcp`).
    acked: [bool; 2],
    isn: [u32; 2],
}

#[derive(Debug, Clone)]
struct MFlow {
    init_a: bool,
    id: FlowId,
    seen_reply: bool,
    deadline: u64,
    tcp: Option<MTcp>,
}

const S: u64 = 1_000_000_000;
/// Timeouts of `cfg()` in ns.
const T_SYN_SENT: u64 = 11 * S;
fn tcp_timeout(st: MState) -> u64 {
    S * match st {
        MState::SynSent | MState::SynSent2 => 11,
        MState::SynRecv => 12,
        MState::Est => 13,
        MState::FinWait => 14,
        MState::CloseWait => 15,
        MState::LastAck => 16,
        MState::TimeWait => 17,
        MState::Close => 18,
    }
}
const T_UDP_UNREPLIED: u64 = 19 * S;
const T_UDP_REPLIED: u64 = 20 * S;
const T_ICMP: u64 = 21 * S;

fn cfg() -> CtConfig {
    let s = Duration::from_secs;
    CtConfig {
        max_entries: 1000,
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

struct Model {
    flows: BTreeMap<(u8, u8), MFlow>,
    now: u64,
    isn: u32,
}

impl Model {
    /// The live flow for a key; an expired one is dropped.
    fn live(&mut self, k: (u8, u8)) -> Option<&mut MFlow> {
        if self.flows.get(&k).is_some_and(|f| f.deadline <= self.now) {
            self.flows.remove(&k);
        }
        self.flows.get_mut(&k)
    }

    fn fresh_isn(&mut self) -> u32 {
        self.isn = self.isn.wrapping_add(1_000_003);
        self.isn
    }
}

fn ports(ep: u8, from_a: bool) -> (u16, u16) {
    let a = 40_000 + u16::from(ep);
    if from_a {
        (a, 443)
    } else {
        (443, a)
    }
}

fn dir_of(f: &MFlow, from_a: bool) -> Dir {
    if f.init_a == from_a {
        Dir::Original
    } else {
        Dir::Reply
    }
}

fn tracked(f: &MFlow, dir: Dir) -> Track {
    Track::Tracked {
        id: f.id,
        dir,
        state: if f.seen_reply {
            CtState::Established
        } else {
            CtState::New
        },
    }
}

fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

struct Run {
    ct: Conntrack,
    m: Model,
    t0: Instant,
}

impl Run {
    fn now(&self) -> Instant {
        self.t0 + Duration::from_nanos(self.m.now)
    }

    fn zones(from_a: bool) -> (ZoneId, ZoneId) {
        if from_a {
            (ZA, ZB)
        } else {
            (ZB, ZA)
        }
    }

    /// Feeds a packet to both; inserts on New if asked. Returns (real, model).
    fn packet(
        &mut self,
        pm: &PacketMeta,
        from_a: bool,
        expect: Track,
        insert: bool,
        new_flow: impl FnOnce(FlowId) -> MFlow,
        key: (u8, u8),
    ) -> Result<(), TestCaseError> {
        let (z, e) = Self::zones(from_a);
        let now = self.now();
        let got = self.ct.track(z, pm, now);
        prop_assert_eq!(got, expect, "packet {:?}", pm.l4);
        if got == Track::New && insert {
            let id = self.ct.insert(z, pm, e, None, 0, now);
            prop_assert!(id.is_ok(), "insert failed: {:?}", id);
            if let Ok(id) = id {
                self.m.flows.insert(key, new_flow(id));
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Advance(ms) => self.m.now += u64::from(ms) * 1_000_000,
            Op::Expire(n) => {
                let max = if n == 255 { usize::MAX } else { usize::from(n) };
                let removed = self.ct.expire(self.now(), max);
                prop_assert!(removed <= max);
                let now = self.m.now;
                self.m.flows.retain(|_, f| f.deadline > now);
                if n == 255 {
                    prop_assert_eq!(self.ct.len(), self.m.flows.len());
                }
            }
            Op::Udp { ep, from_a, insert } => {
                let key = (proto::UDP, ep);
                let now = self.m.now;
                let expect = match self.m.live(key) {
                    Some(f) => {
                        let dir = dir_of(f, from_a);
                        f.seen_reply |= dir == Dir::Reply;
                        f.deadline = now
                            + if f.seen_reply {
                                T_UDP_REPLIED
                            } else {
                                T_UDP_UNREPLIED
                            };
                        tracked(f, dir)
                    }
                    None => Track::New,
                };
                let (sport, dport) = ports(ep, from_a);
                let pm = meta(from_a, proto::UDP, L4::Udp { sport, dport }, 20);
                let mk = move |id| MFlow {
                    init_a: from_a,
                    id,
                    seen_reply: false,
                    deadline: now + T_UDP_UNREPLIED,
                    tcp: None,
                };
                self.packet(&pm, from_a, expect, insert, mk, key)?;
            }
            Op::Echo {
                ep,
                from_a,
                reply,
                insert,
            } => {
                let key = (proto::ICMP, ep);
                let now = self.m.now;
                let expect = match self.m.live(key) {
                    Some(f) => {
                        let dir = dir_of(f, from_a);
                        if reply != (dir == Dir::Reply) {
                            Track::Invalid(InvalidReason::BadState)
                        } else {
                            f.seen_reply |= dir == Dir::Reply;
                            f.deadline = now + T_ICMP;
                            tracked(f, dir)
                        }
                    }
                    None if reply => Track::Invalid(InvalidReason::NoFlow),
                    None => Track::New,
                };
                let pm = meta(
                    from_a,
                    proto::ICMP,
                    L4::Icmp(IcmpInfo {
                        ty: if reply { 0 } else { 8 },
                        code: 0,
                        echo_id: Some(u16::from(ep)),
                        is_error: false,
                        inner: None,
                    }),
                    16,
                );
                let mk = move |id| MFlow {
                    init_a: from_a,
                    id,
                    seen_reply: false,
                    deadline: now + T_ICMP,
                    tcp: None,
                };
                self.packet(&pm, from_a, expect, insert, mk, key)?;
            }
            Op::IcmpErr {
                proto: p,
                ep,
                quoted_from_a,
                right_zone,
            } => {
                let p = [proto::TCP, proto::UDP, proto::ICMP][usize::from(p % 3)];
                let key = (p, ep);
                let expect = match self.m.live(key) {
                    Some(f) if right_zone => Track::Related {
                        id: f.id,
                        dir: dir_of(f, quoted_from_a).opposite(),
                    },
                    _ => Track::Invalid(InvalidReason::NoFlow),
                };
                let (sport, dport) = if p == proto::ICMP {
                    (u16::from(ep), 0)
                } else {
                    ports(ep, quoted_from_a)
                };
                let (src, dst) = if quoted_from_a { (A, B) } else { (B, A) };
                // The error comes back from the quoted packet's destination side.
                let from_a = if right_zone {
                    !quoted_from_a
                } else {
                    quoted_from_a
                };
                let pm = meta(
                    from_a,
                    proto::ICMP,
                    L4::Icmp(IcmpInfo {
                        ty: 3,
                        code: 1,
                        echo_id: None,
                        is_error: true,
                        inner: Some(InnerHeader {
                            src,
                            dst,
                            proto: p,
                            sport,
                            dport,
                            offset: 28,
                        }),
                    }),
                    0,
                );
                let got = self.ct.track(Self::zones(from_a).0, &pm, self.now());
                prop_assert_eq!(got, expect);
            }
            Op::Tcp {
                ep,
                from_a,
                kind,
                len,
                oow,
                insert,
            } => self.tcp(ep, from_a, KINDS[kind], u16::from(len), oow, insert)?,
        }
        Ok(())
    }

    fn tcp(
        &mut self,
        ep: u8,
        from_a: bool,
        flags: u8,
        len: u16,
        oow: bool,
        insert: bool,
    ) -> Result<(), TestCaseError> {
        let key = (proto::TCP, ep);
        let now = self.m.now;
        let syn = flags & F::SYN != 0;
        let syn_only = flags & (F::SYN | F::ACK | F::RST | F::FIN) == F::SYN;
        let fresh = [self.m.fresh_isn(), self.m.fresh_isn()];
        // Concrete numbers from the model's view of the flow.
        // Until the peer grants a window, a sender stays at its SYN's end and
        // sends no data (as a real stack would).
        let mut len = len;
        let (mut seq, ack) = match self.m.live(key).and_then(|f| {
            let d = dir_of(f, from_a) as usize;
            f.tcp.as_ref().map(|t| (t, d))
        }) {
            Some((t, d)) if syn || !t.sent[d] => (t.isn[d], 0),
            Some((t, d)) if !t.acked[d] => {
                len = 0;
                (t.isn[d].wrapping_add(1), 0)
            }
            Some((t, d)) => (t.nxt[d], t.nxt[1 - d]),
            None => (fresh[0], 0),
        };
        let ack = match self
            .m
            .flows
            .get(&key)
            .and_then(|f| f.tcp.as_ref().map(|t| (t, dir_of(f, from_a) as usize)))
        {
            Some((t, d)) if t.sent[1 - d] => t.nxt[1 - d],
            _ => ack,
        };
        if oow && !syn {
            seq = seq.wrapping_add(0x4000_0000);
        }
        let end = seq
            .wrapping_add(u32::from(len))
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(flags & F::FIN != 0));

        let mut reopened = false;
        let expect = if !valid(flags) {
            Track::Invalid(InvalidReason::BadFlags)
        } else {
            match self.m.live(key) {
                None if syn_only => Track::New,
                None => Track::Invalid(InvalidReason::NoFlow),
                Some(f) => {
                    let dir = dir_of(f, from_a);
                    let d = dir as usize;
                    let Some(t) = f.tcp.as_mut() else {
                        return Err(TestCaseError::fail("tcp flow without tcp state"));
                    };
                    match next(t.st, dir == Dir::Original, cls(flags)) {
                        MNext::Invalid => Track::Invalid(InvalidReason::BadState),
                        MNext::Ignore => {
                            f.seen_reply |= dir == Dir::Reply;
                            tracked(f, dir)
                        }
                        MNext::To(MState::SynSent)
                            if matches!(t.st, MState::TimeWait | MState::Close) =>
                        {
                            reopened = true;
                            Track::New
                        }
                        MNext::To(_) if oow && !syn && t.sent[d] => {
                            Track::Invalid(InvalidReason::OutOfWindow)
                        }
                        MNext::To(st) => {
                            if !t.sent[d] || after(end, t.nxt[d]) {
                                t.nxt[d] = end;
                            }
                            // A side's first packet sets up its window: a SYN
                            // allows nothing beyond itself yet, anything else
                            // is taken mid-stream with its own window. Any
                            // other accepted packet updates the peer's limit,
                            // except a side's opening SYN without ACK.
                            if !t.sent[d] {
                                t.acked[d] = !syn;
                            }
                            if t.sent[d] || flags & F::ACK != 0 || !syn {
                                t.acked[1 - d] = true;
                            }
                            t.sent[d] = true;
                            t.st = st;
                            f.seen_reply |= dir == Dir::Reply;
                            f.deadline = now + tcp_timeout(st);
                            tracked(f, dir)
                        }
                    }
                }
            }
        };
        if reopened {
            self.m.flows.remove(&key);
        }
        let mut info = tcp_info(from_a, flags, seq, ack, 65535);
        (info.sport, info.dport) = ports(ep, from_a);
        let pm = meta(from_a, proto::TCP, L4::Tcp(info), len);
        let mk = move |id| MFlow {
            init_a: from_a,
            id,
            seen_reply: false,
            deadline: now + T_SYN_SENT,
            tcp: Some(MTcp {
                st: MState::SynSent,
                nxt: [end, 0],
                sent: [true, false],
                acked: [false, false],
                isn: [seq, fresh[1]],
            }),
        };
        self.packet(&pm, from_a, expect, insert, mk, key)
    }

    /// Every live model flow is in the table with the same state.
    fn check(&self) -> Result<(), TestCaseError> {
        let mut live = 0;
        for (k, f) in &self.m.flows {
            if f.deadline <= self.m.now {
                continue;
            }
            live += 1;
            let real = self.ct.flow(f.id);
            prop_assert!(real.is_some(), "flow {:?} missing", k);
            let Some(real) = real else { continue };
            prop_assert_eq!(real.orig.proto, k.0);
            prop_assert_eq!(real.ingress(), Self::zones(f.init_a).0);
            prop_assert_eq!(real.seen_reply(), f.seen_reply);
            prop_assert_eq!(real.tcp_state(), f.tcp.as_ref().map(|t| public(t.st)));
            prop_assert_eq!(
                Duration::from_nanos(f.deadline),
                Duration::from_nanos(real.deadline)
            );
        }
        prop_assert!(self.ct.len() >= live);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn conntrack_matches_reference_model(ops in prop::collection::vec(op(), 1..80), key in any::<(u64, u64)>()) {
        let t0 = Instant::now();
        let mut run = Run {
            ct: Conntrack::new(cfg(), key, t0),
            m: Model { flows: BTreeMap::new(), now: 0, isn: 7 },
            t0,
        };
        for op in &ops {
            run.step(op)?;
            run.check()?;
        }
        run.step(&Op::Expire(255))?;
    }
}
