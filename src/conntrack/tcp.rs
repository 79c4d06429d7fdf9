//! The TCP state machine and window tracking.
//!
//! Follows the Linux kernel's `net/netfilter/nf_conntrack_proto_tcp.c`:
//!
//! - Flag validity (`tcp_error`'s `tcp_valid_flags`): after masking PSH, ECE
//!   and CWR, only SYN, SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG,
//!   ACK and ACK+URG are valid. Everything else (SYN+RST, SYN+FIN, FIN+RST,
//!   FIN without ACK, no flags, ...) is INVALID before any lookup.
//! - The state table (`tcp_conntracks`): indexed by direction, the packet's
//!   flag class (`get_conntrack_index`: RST, SYN, SYN+ACK, FIN, ACK, none) and
//!   the current state. Results are a new state, "invalid" or "ignore"
//!   (accepted, no state or window change, no timeout refresh).
//!   Simultaneous open uses the kernel's SYN_SENT2, which is reported as
//!   `SynSent`.
//! - Window tracking (`tcp_in_window`, after Guido van Rooij, "Real stateful
//!   TCP packet filtering in IP Filter"): per direction `td_end` (highest
//!   sequence sent + 1), `td_maxend` (highest sequence the peer allows),
//!   `td_maxwin` (largest window seen) and the window scale. A packet is in
//!   window when (I) `seq <= sender.maxend`, (II) `end >= sender.end -
//!   receiver.maxwin`, (III) `ack <= receiver.end` and (IV) `ack >=
//!   receiver.end - MAXACKWINDOW`. RFC 7323 window scaling applies only when
//!   both SYNs carried the option; with SACK permitted (RFC 2018) the highest
//!   SACK right edge stands in for the ack in (III)/(IV).
//!
//! Differences from the kernel, on purpose: only a SYN re-initialises the
//! sender's window in SYN_SENT/SYN_RECV; a SYN in TIME_WAIT/CLOSE always
//! reopens (the kernel also checks that the close was seen); no
//! retransmission/unacknowledged-data timeouts; an RST that is the only reply
//! moves the flow to CLOSE (short timeout) instead of deleting it at once.

use crate::packet::{tcp_flags as F, TcpInfo};

/// Kernel `MAXACKWINCONST`: the ack window used before a side's maximum
/// window is known (a little above the largest unscaled window, 65535).
const MAX_ACK_WIN_CONST: u32 = 66_000;
/// RFC 7323 section 2.3: the shift count is at most 14.
const MAX_WSCALE: u8 = 14;

/// Per-direction flags.
pub(super) const WF_WSCALE: u8 = 1;
pub(super) const WF_SACK: u8 = 2;
/// Accept out-of-window packets (connections picked up mid-stream).
pub(super) const WF_LIBERAL: u8 = 4;

/// Internal TCP states; the first eight are also the public `TcpState` order
/// and the per-state class/timeout index. `S2` is the kernel's SYN_SENT2.
pub(super) const SS: u8 = 0;
pub(super) const SR: u8 = 1;
pub(super) const ES: u8 = 2;
pub(super) const FW: u8 = 3;
pub(super) const CW: u8 = 4;
pub(super) const LA: u8 = 5;
pub(super) const TW: u8 = 6;
pub(super) const CL: u8 = 7;
pub(super) const S2: u8 = 8;
const IV: u8 = 9;
const IG: u8 = 10;

/// Flag classes (kernel `get_conntrack_index`).
const I_SYN: usize = 0;
const I_SYNACK: usize = 1;
const I_FIN: usize = 2;
const I_ACK: usize = 3;
const I_RST: usize = 4;
const I_NONE: usize = 5;

/// `tcp_conntracks` without the NONE column; columns: SS SR ES FW CW LA TW CL S2.
#[rustfmt::skip]
const TABLE: [[[u8; 9]; 6]; 2] = [
    // ORIGINAL
    [
        /* syn    */ [SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    // REPLY
    [
        /* syn    */ [S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

/// Window-tracking state of both directions (index 0 = original, 1 = reply).
/// Kept as parallel arrays so the struct is 28 bytes with no padding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TcpWin {
    pub end: [u32; 2],
    pub maxend: [u32; 2],
    pub maxwin: [u32; 2],
    pub scale: [u8; 2],
    pub flags: [u8; 2],
}

/// What the state machine decided for a packet of a known flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// In window; the new internal state (the window was updated).
    Accept(u8),
    /// Tolerated, nothing changes (kernel "ignore").
    Ignore,
    /// Not allowed in this state.
    BadState,
    /// Outside the window.
    OutOfWindow,
    /// A SYN in TIME_WAIT/CLOSE: the old flow must go, the SYN may start a new one.
    Reopen,
}

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Kernel `tcp_valid_flags`: is this flag combination allowed at all?
#[inline]
pub(super) fn valid_flags(flags: u8) -> bool {
    let f = flags & !(F::PSH | F::ECE | F::CWR);
    matches!(
        f,
        x if x == F::SYN
            || x == F::SYN | F::URG
            || x == F::SYN | F::ACK
            || x == F::RST
            || x == F::RST | F::ACK
            || x == F::FIN | F::ACK
            || x == F::FIN | F::ACK | F::URG
            || x == F::ACK
            || x == F::ACK | F::URG
    )
}

#[inline]
fn flag_class(flags: u8) -> usize {
    if flags & F::RST != 0 {
        I_RST
    } else if flags & F::SYN != 0 {
        if flags & F::ACK != 0 {
            I_SYNACK
        } else {
            I_SYN
        }
    } else if flags & F::FIN != 0 {
        I_FIN
    } else if flags & F::ACK != 0 {
        I_ACK
    } else {
        I_NONE
    }
}

/// True for a SYN without ACK (a packet that may open a connection).
#[inline]
pub(super) fn is_syn_only(flags: u8) -> bool {
    flags & (F::SYN | F::ACK | F::RST | F::FIN) == F::SYN
}

/// A packet that the loose pick-up may start a flow with (kernel: ACK from NONE).
#[inline]
pub(super) fn is_pickup(flags: u8) -> bool {
    flag_class(flags) == I_ACK
}

/// Sequence number after the segment: seq + payload + SYN + FIN.
#[inline]
fn seg_end(t: &TcpInfo, payload_len: usize) -> u32 {
    t.seq
        .wrapping_add(payload_len as u32)
        .wrapping_add(u32::from(t.flags & F::SYN != 0))
        .wrapping_add(u32::from(t.flags & F::FIN != 0))
}

/// Kernel `tcp_options`: reset the scale and flags (keeping "liberal"), then
/// take the window scale and SACK-permitted options of this segment.
fn options(w: &mut TcpWin, d: usize, t: &TcpInfo) {
    w.scale[d] = 0;
    w.flags[d] &= WF_LIBERAL;
    if let Some(s) = t.wscale {
        w.scale[d] = s.min(MAX_WSCALE);
        w.flags[d] |= WF_WSCALE;
    }
    if t.sack_permitted {
        w.flags[d] |= WF_SACK;
    }
}

/// Initial window state and TCP state for the first packet of a new flow
/// (kernel `tcp_new`), or `None` if the packet cannot start one.
pub(super) fn new_flow(t: &TcpInfo, payload_len: usize, loose: bool) -> Option<(u8, TcpWin)> {
    if !valid_flags(t.flags) {
        return None;
    }
    let mut w = TcpWin::default();
    let end = seg_end(t, payload_len);
    let state = if is_syn_only(t.flags) {
        w.end[0] = end;
        w.maxend[0] = end;
        w.maxwin[0] = u32::from(t.window).max(1);
        options(&mut w, 0, t);
        SS
    } else if loose && is_pickup(t.flags) {
        w.end[0] = end;
        w.maxwin[0] = u32::from(t.window).max(1);
        w.maxend[0] = end.wrapping_add(w.maxwin[0]);
        // History lost: assume SACK and accept what the window check cannot verify.
        w.flags = [WF_SACK | WF_LIBERAL; 2];
        ES
    } else {
        return None;
    };
    // The first packet then goes through the window check like any other.
    let mut st = state;
    in_window(&mut w, &mut st, 0, t, payload_len);
    Some((state, w))
}

/// Runs the state machine for a packet of a known flow in direction `d`
/// (0 = original). On `Accept`, `w` holds the updated window; otherwise `w`
/// is unchanged.
#[inline]
pub(super) fn packet(
    w: &mut TcpWin,
    state: u8,
    d: usize,
    t: &TcpInfo,
    payload_len: usize,
) -> Outcome {
    if let Some(ok) = established_ack(w, state, d, t, payload_len) {
        return if ok {
            Outcome::Accept(ES)
        } else {
            Outcome::OutOfWindow
        };
    }
    let old = usize::from(state.min(S2));
    let new = TABLE
        .get(d)
        .and_then(|r| r.get(flag_class(t.flags)))
        .and_then(|r| r.get(old))
        .copied()
        .unwrap_or(IV);
    match new {
        IV => return Outcome::BadState,
        IG => return Outcome::Ignore,
        SS if state == TW || state == CL => return Outcome::Reopen,
        _ => {}
    }
    let mut copy = *w;
    let mut st = state;
    if in_window(&mut copy, &mut st, d, t, payload_len) {
        *w = copy;
        Outcome::Accept(new)
    } else {
        Outcome::OutOfWindow
    }
}

/// The common case of [`packet`]: a plain ACK (no SYN/FIN/RST) in
/// ESTABLISHED whose sender's window is known. TABLE keeps ESTABLISHED for
/// it in both directions and none of `in_window`'s set-up applies, so this
/// is the window check alone: `Some(true)` = in window (`w` updated, the
/// state stays ESTABLISHED), `Some(false)` = out of window (`w` unchanged),
/// `None` = not this case (use [`packet`]). `check_and_update` changes
/// nothing unless it accepts, so it works on `w` directly, without a copy.
#[inline(always)]
pub(super) fn established_ack(
    w: &mut TcpWin,
    state: u8,
    d: usize,
    t: &TcpInfo,
    payload_len: usize,
) -> Option<bool> {
    let (s, r) = if d == 0 { (0, 1) } else { (1, 0) };
    if state != ES || t.flags & (F::SYN | F::FIN | F::RST | F::ACK) != F::ACK || w.maxwin[s] == 0 {
        return None;
    }
    let sack = sack_edge(w, r, t);
    let end = seg_end(t, payload_len);
    Some(check_and_update(
        w, s, r, t.seq, end, t.ack, sack, t.window, false,
    ))
}

/// Kernel `tcp_in_window`. Updates `w` as it goes; callers work on a copy.
fn in_window(w: &mut TcpWin, state: &mut u8, d: usize, t: &TcpInfo, payload_len: usize) -> bool {
    let (s, r) = if d == 0 { (0, 1) } else { (1, 0) };
    let syn = t.flags & F::SYN != 0;
    let ackf = t.flags & F::ACK != 0;
    let rst = t.flags & F::RST != 0;
    let mut seq = t.seq;
    let mut ack = t.ack;
    let win = u32::from(t.window);
    let mut end = seg_end(t, payload_len);

    let mut sack = sack_edge(w, r, t);

    if w.maxwin[s] == 0 {
        if syn {
            // SYN/ACK answering a SYN, or a SYN from the reply side (simultaneous open).
            w.end[s] = end;
            w.maxend[s] = end;
            w.maxwin[s] = win.max(1);
            options(w, s, t);
            // RFC 7323: scaling only if both sides sent the option.
            if w.flags[s] & WF_WSCALE == 0 || w.flags[r] & WF_WSCALE == 0 {
                w.scale = [0, 0];
            }
            if !ackf {
                return true;
            }
        } else {
            // Mid-stream: take what this packet says.
            w.end[s] = end;
            let swin = win << w.scale[s];
            w.maxwin[s] = swin.max(1);
            w.maxend[s] = end.wrapping_add(w.maxwin[s]);
            if w.maxwin[r] == 0 {
                w.end[r] = sack;
                w.maxend[r] = sack;
            } else if sack == w.end[r].wrapping_add(1) {
                // Likely the answer to a keepalive.
                w.end[r] = w.end[r].wrapping_add(1);
            }
        }
    } else if syn && ((*state == SS && s == 0) || (*state == SR && s == 1)) && after(end, w.end[s])
    {
        // RFC 793: a reinitialised sender only has to use higher sequence numbers.
        w.end[s] = end;
        w.maxend[s] = end;
        w.maxwin[s] = win.max(1);
        options(w, s, t);
    }

    if !ackf || (rst && ack == 0) {
        // No ACK (or a broken stack's RST+ACK with ack 0): pretend it acks everything.
        ack = w.end[r];
        sack = ack;
    }
    if rst && seq == 0 && *state == SS {
        // RST answering a SYN.
        seq = w.end[s];
        end = seq;
    }

    check_and_update(w, s, r, seq, end, ack, sack, t.window, syn)
}

/// The acknowledgement edge bounds (III)/(IV) check: the highest SACK right
/// edge when the receiver allowed SACK and it is beyond the ack, else the ack.
#[inline]
fn sack_edge(w: &TcpWin, r: usize, t: &TcpInfo) -> u32 {
    match t.sack_max_right {
        Some(right) if w.flags[r] & WF_SACK != 0 && after(right, t.ack) => right,
        _ => t.ack,
    }
}

/// The tail of `tcp_in_window`: the four bounds, then the window update of
/// sender `s` / receiver `r`. Changes nothing unless the packet is in window
/// (an out-of-window packet of a liberal sender is accepted unchanged).
#[allow(clippy::too_many_arguments)]
#[inline]
fn check_and_update(
    w: &mut TcpWin,
    s: usize,
    r: usize,
    seq: u32,
    end: u32,
    ack: u32,
    sack: u32,
    window: u16,
    syn: bool,
) -> bool {
    let mut win = u32::from(window);
    let in_recv_win =
        w.maxwin[r] == 0 || after(end, w.end[s].wrapping_sub(w.maxwin[r]).wrapping_sub(1));
    let max_ack_win = if w.maxwin[s] != 0 {
        w.maxwin[s]
    } else {
        MAX_ACK_WIN_CONST
    };
    let ok = before(seq, w.maxend[s].wrapping_add(1))
        && in_recv_win
        && before(sack, w.end[r].wrapping_add(1))
        && after(sack, w.end[r].wrapping_sub(max_ack_win).wrapping_sub(1));
    if !ok {
        return w.flags[s] & WF_LIBERAL != 0;
    }

    if !syn {
        win <<= w.scale[s];
    }
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if w.maxwin[s] < swin {
        w.maxwin[s] = swin;
    }
    if after(end, w.end[s]) {
        w.end[s] = end;
    }
    if w.maxwin[r] != 0 && after(end, w.maxend[s]) {
        w.maxwin[r] = w.maxwin[r].wrapping_add(end.wrapping_sub(w.maxend[s]));
    }
    if after(sack.wrapping_add(win), w.maxend[r].wrapping_sub(1)) {
        w.maxend[r] = sack.wrapping_add(win);
        if win == 0 {
            w.maxend[r] = w.maxend[r].wrapping_add(1);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, window: u16) -> TcpInfo {
        TcpInfo {
            sport: 1000,
            dport: 80,
            seq,
            ack,
            flags,
            window,
            ..TcpInfo::default()
        }
    }

    #[test]
    fn valid_flag_table_matches_kernel() {
        let ok = [
            F::SYN,
            F::SYN | F::URG,
            F::SYN | F::ACK,
            F::RST,
            F::RST | F::ACK,
            F::FIN | F::ACK,
            F::FIN | F::ACK | F::URG,
            F::ACK,
            F::ACK | F::URG,
        ];
        for f in 0..=255u8 {
            let base = f & !(F::PSH | F::ECE | F::CWR);
            assert_eq!(valid_flags(f), ok.contains(&base), "flags {f:#x}");
        }
        for bad in [F::SYN | F::RST, F::SYN | F::FIN, F::FIN | F::RST, F::FIN, 0] {
            assert!(!valid_flags(bad));
        }
    }

    #[test]
    fn handshake_windows() {
        let (st, mut w) = new_flow(&seg(F::SYN, 100, 0, 1000), 0, false).unwrap();
        assert_eq!(st, SS);
        assert_eq!(w.end[0], 101);
        let o = packet(&mut w, st, 1, &seg(F::SYN | F::ACK, 5000, 101, 2000), 0);
        assert_eq!(o, Outcome::Accept(SR));
        assert_eq!(w.end[1], 5001);
        // ack beyond what the original side sent: bound III.
        let mut w2 = w;
        assert_eq!(
            packet(&mut w2, SR, 0, &seg(F::ACK, 101, 6000, 1000), 0),
            Outcome::OutOfWindow
        );
        assert_eq!(w2, w, "rejected packet changed the window");
        assert_eq!(
            packet(&mut w, SR, 0, &seg(F::ACK, 101, 5001, 1000), 0),
            Outcome::Accept(ES)
        );
        // data up to the peer's advertised window (2000) is fine, beyond it is not.
        let mut w3 = w;
        assert_eq!(
            packet(&mut w3, ES, 0, &seg(F::ACK, 101 + 2000, 5001, 1000), 0),
            Outcome::Accept(ES)
        );
        assert_eq!(
            packet(&mut w, ES, 0, &seg(F::ACK, 101 + 2001, 5001, 1000), 0),
            Outcome::OutOfWindow
        );
    }
}
