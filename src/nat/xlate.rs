//! Packet translation for established flows, read from the flow's two keys.
//!
//! A flow's original key is its first packet as it entered; its reply key is
//! the reply as it will enter, i.e. the translated tuple inverted. So a packet
//! of the original direction leaves with `reply` inverted, and a reply leaves
//! with `orig` inverted ([`target`]). Nothing else is stored per binding.
//!
//! ICMP errors (RELATED) follow Linux `nf_nat_icmp_reply_translation`: the
//! quoted packet travelled the other way, so its header is put back to how it
//! looked on the far side of the NAT, and the outer header is translated like
//! the flow (outer destination = the quoted packet's new source; an outer
//! source equal to the quoted destination becomes the new quoted destination,
//! e.g. a DNAT backend's own port-unreachable). Checksums: the rewrite
//! functions of `packet::rewrite` update them incrementally (RFC 1624),
//! including the quoted headers and the outer ICMP checksum.

use crate::conntrack::{Dir, Flow};
use crate::packet::rewrite::{self, RewriteError};
use crate::packet::{IcmpInfo, PacketMeta, L4};
use std::net::IpAddr;

/// A 4-tuple a packet should carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// True when the flow's reply tuple is not the plain inverse of its original
/// (a flag conntrack sets at insert: the keys never change afterwards).
#[inline]
pub fn is_translated(f: &Flow) -> bool {
    f.is_translated()
}

/// The tuple a packet of direction `dir` of `f` leaves with.
#[inline]
pub fn target(f: &Flow, dir: Dir) -> Tuple {
    let k = if dir == Dir::Original {
        &f.reply
    } else {
        &f.orig
    };
    Tuple {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
    }
}

/// The tuple a packet of direction `dir` of `f` arrives with.
pub fn arrival(f: &Flow, dir: Dir) -> Tuple {
    let k = if dir == Dir::Original {
        &f.orig
    } else {
        &f.reply
    };
    Tuple {
        src: k.src,
        dst: k.dst,
        sport: k.sport,
        dport: k.dport,
    }
}

/// Rewrites the packet to carry `t` (only the fields that differ). For an ICMP
/// echo `t.sport` is the echo id; a non-first fragment gets addresses only.
/// Returns true if anything changed.
pub fn rewrite_to(buf: &mut [u8], meta: &mut PacketMeta, t: Tuple) -> Result<bool, RewriteError> {
    let mut changed = false;
    if meta.src != t.src {
        rewrite::set_src(buf, meta, t.src)?;
        changed = true;
    }
    if meta.dst != t.dst {
        rewrite::set_dst(buf, meta, t.dst)?;
        changed = true;
    }
    match meta.l4 {
        L4::Tcp(_) | L4::Udp { .. } => {
            let (sp, dp) = meta.ports();
            if sp != t.sport {
                rewrite::set_sport(buf, meta, t.sport)?;
                changed = true;
            }
            if dp != t.dport {
                rewrite::set_dport(buf, meta, t.dport)?;
                changed = true;
            }
        }
        L4::Icmp(IcmpInfo {
            echo_id: Some(id), ..
        }) if id != t.sport => {
            rewrite::set_icmp_echo_id(buf, meta, t.sport)?;
            changed = true;
        }
        _ => {}
    }
    Ok(changed)
}

/// Translates a packet of an established flow in direction `dir`.
#[inline]
pub fn translate(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    f: &Flow,
    dir: Dir,
) -> Result<bool, RewriteError> {
    rewrite_to(buf, meta, target(f, dir))
}

/// Translates an ICMP error travelling in direction `dir` about flow `f`.
pub fn translate_icmp_error(
    buf: &mut [u8],
    meta: &mut PacketMeta,
    f: &Flow,
    dir: Dir,
) -> Result<bool, RewriteError> {
    let L4::Icmp(IcmpInfo {
        inner: Some(inner), ..
    }) = meta.l4
    else {
        return Err(RewriteError::NoInner);
    };
    // The quoted packet went the other way; put it back to its arrival form.
    let quoted = arrival(f, dir.opposite());
    let echo = matches!(
        inner.proto,
        crate::packet::proto::ICMP | crate::packet::proto::ICMPV6
    );
    let ported = matches!(
        inner.proto,
        crate::packet::proto::TCP | crate::packet::proto::UDP
    );
    let mut changed = false;
    if inner.src != quoted.src {
        rewrite::set_inner_src(buf, meta, quoted.src)?;
        changed = true;
    }
    if inner.dst != quoted.dst {
        rewrite::set_inner_dst(buf, meta, quoted.dst)?;
        changed = true;
    }
    if (ported || echo) && inner.sport != quoted.sport {
        rewrite::set_inner_sport(buf, meta, quoted.sport)?;
        changed = true;
    }
    if ported && inner.dport != quoted.dport {
        rewrite::set_inner_dport(buf, meta, quoted.dport)?;
        changed = true;
    }
    // Outer: to the quoted packet's (new) source; an error from the quoted
    // destination itself comes from its new address.
    if meta.src == inner.dst && inner.dst != quoted.dst {
        rewrite::set_src(buf, meta, quoted.dst)?;
        changed = true;
    }
    if meta.dst != quoted.src {
        rewrite::set_dst(buf, meta, quoted.src)?;
        changed = true;
    }
    Ok(changed)
}
