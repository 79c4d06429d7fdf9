//! IP fragmentation of datagrams the gateway originates (RFC 791 §3.2 and
//! §2.3 "Fragmentation", RFC 8200 §4.5), and of test fixtures.
//!
//! [`to_mtu`] cuts a whole (unfragmented) IPv4 or IPv6 datagram into
//! fragments that each fit `mtu` bytes; [`split`] and [`split_v6_after`] cut
//! it at given byte ranges of its fragmentable part (ranges may overlap or
//! leave gaps: tests build reassembly evasions with them).
//!
//! Promises: never panics on any input; refuses (`None`) what it cannot cut
//! correctly: a datagram that is already a fragment, a malformed header, a
//! range outside the data, an IPv4 cut not on an 8-byte boundary (the
//! fragment offset counts 8-byte units), an MTU too small for one 8-byte
//! unit after the headers. IPv4 fragments copy the whole header (options
//! included — this gateway never originates options that must not be
//! copied), clear DF, set MF on every fragment that does not end the data,
//! and get a new header checksum. IPv6 fragments carry a Fragment header
//! right after the unfragmentable part (for [`split`] and [`to_mtu`]: the
//! 40-byte fixed header; the gateway originates no extension headers).
//! Identification: the caller's (RFC 6864 §4.1 / RFC 7739: unique per
//! source, destination and protocol while fragments may live; the caller
//! keeps a counter from a random start). IPv4 uses its low 16 bits.

use super::checksum;

/// Fragment header: next header, reserved, offset/flags, identification.
const FRAG_HDR_LEN: usize = 8;
/// IPv6 next-header value of the Fragment header.
const NH_FRAGMENT: u8 = 44;
/// IPv6 fixed header length.
const V6_HDR_LEN: usize = 40;

/// Cuts `pkt` into fragments of at most `mtu` bytes each; a datagram that
/// already fits is returned whole (one element).
pub fn to_mtu(pkt: &[u8], mtu: usize, id: u32) -> Option<Vec<Vec<u8>>> {
    if pkt.len() <= mtu {
        return Some(vec![pkt.to_vec()]);
    }
    let (unfrag, extra) = match pkt.first()? >> 4 {
        4 => (ipv4_header_len(pkt)?, 0),
        6 => (V6_HDR_LEN, FRAG_HDR_LEN),
        _ => return None,
    };
    let data_len = pkt.len().checked_sub(unfrag)?;
    let chunk = mtu.checked_sub(unfrag + extra)? / 8 * 8;
    if chunk == 0 {
        return None;
    }
    let ranges: Vec<(usize, usize)> = (0..data_len)
        .step_by(chunk)
        .map(|s| (s, (s + chunk).min(data_len)))
        .collect();
    split(pkt, &ranges, id)
}

/// Cuts `pkt` (IPv4, or IPv6 without extension headers) into one fragment
/// per byte range of its data (the part after the IP header).
pub fn split(pkt: &[u8], ranges: &[(usize, usize)], id: u32) -> Option<Vec<Vec<u8>>> {
    match pkt.first()? >> 4 {
        4 => split_v4(pkt, ranges, id as u16),
        6 => split_v6_after(pkt, V6_HDR_LEN, 6, ranges, id),
        _ => None,
    }
}

/// The IPv4 header length, if `pkt` is a well-formed, unfragmented IPv4
/// datagram whose total length is its length.
fn ipv4_header_len(pkt: &[u8]) -> Option<usize> {
    let hlen = usize::from(pkt.first()? & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
    let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
    let ok = hlen >= 20 && total == pkt.len() && total >= hlen && frag & 0x3fff == 0;
    ok.then_some(hlen)
}

fn split_v4(pkt: &[u8], ranges: &[(usize, usize)], id: u16) -> Option<Vec<Vec<u8>>> {
    let hlen = ipv4_header_len(pkt)?;
    let (header, data) = (pkt.get(..hlen)?, pkt.get(hlen..)?);
    let mut out = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges {
        let piece = data.get(s..e)?;
        if s % 8 != 0 {
            return None;
        }
        let more = e < data.len();
        let mut f = Vec::with_capacity(hlen + piece.len());
        f.extend_from_slice(header);
        f.extend_from_slice(piece);
        let total = u16::try_from(f.len()).ok()?;
        let fo = u16::try_from(s / 8).ok()? | if more { 0x2000 } else { 0 };
        f.get_mut(2..4)?.copy_from_slice(&total.to_be_bytes());
        f.get_mut(4..6)?.copy_from_slice(&id.to_be_bytes());
        f.get_mut(6..8)?.copy_from_slice(&fo.to_be_bytes());
        if !checksum::fill_ipv4_checksum(&mut f) {
            return None;
        }
        out.push(f);
    }
    Some(out)
}

/// IPv6: the unfragmentable part is `pkt[..unfrag]` and the next-header
/// byte that must now name the Fragment header is `pkt[prev_nh]` (6 for the
/// fixed header's).
pub fn split_v6_after(
    pkt: &[u8],
    unfrag: usize,
    prev_nh: usize,
    ranges: &[(usize, usize)],
    id: u32,
) -> Option<Vec<Vec<u8>>> {
    let payload_len = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
    if pkt.first()? >> 4 != 6
        || payload_len + V6_HDR_LEN != pkt.len()
        || unfrag < V6_HDR_LEN
        || prev_nh >= unfrag
    {
        return None;
    }
    let (head, data) = (pkt.get(..unfrag)?, pkt.get(unfrag..)?);
    let nh = *pkt.get(prev_nh)?;
    if nh == NH_FRAGMENT {
        return None;
    }
    let mut out = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges {
        let piece = data.get(s..e)?;
        if s % 8 != 0 {
            return None;
        }
        let more = e < data.len();
        let mut f = Vec::with_capacity(unfrag + FRAG_HDR_LEN + piece.len());
        f.extend_from_slice(head);
        *f.get_mut(prev_nh)? = NH_FRAGMENT;
        let fo = u16::try_from(s).ok()? & 0xfff8 | u16::from(more);
        f.extend_from_slice(&[nh, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(piece);
        let pl = u16::try_from(f.len() - V6_HDR_LEN).ok()?;
        f.get_mut(4..6)?.copy_from_slice(&pl.to_be_bytes());
        out.push(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::frag::{FragResult, Reassembler};
    use crate::packet::{parse, synth, FragConfig};
    use std::time::Instant;

    fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
        let mut r = Reassembler::new(FragConfig::default(), (1, 2));
        let now = Instant::now();
        let mut whole = None;
        for f in frags {
            let m = parse(f).unwrap();
            assert!(m.frag.is_some(), "not a fragment: {m:?}");
            if let FragResult::Complete { datagram, .. } =
                r.handle(f, &m, crate::zone::ZoneId::LOCAL, now)
            {
                whole = Some(datagram);
            }
        }
        whole.expect("the fragments reassemble")
    }

    #[test]
    fn to_mtu_round_trips_v4_and_v6() {
        let data: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        for (src, dst) in [
            ("100.64.0.1:5353", "100.64.0.2:53"),
            ("[2001:db8:64::1]:5353", "[2001:db8:64::2]:53"),
        ] {
            let pkt = synth::udp(src.parse().unwrap(), dst.parse().unwrap(), &data).unwrap();
            let frags = to_mtu(&pkt, 1420, 0x1234_5678).unwrap();
            assert_eq!(frags.len(), 3);
            assert!(frags.iter().all(|f| f.len() <= 1420));
            let whole = reassemble(&frags);
            let (a, b) = (parse(&whole).unwrap(), parse(&pkt).unwrap());
            assert_eq!((a.src, a.dst, a.l4), (b.src, b.dst, b.l4));
            assert_eq!(whole[usize::from(a.payload_offset)..], data[..]);
        }
    }

    #[test]
    fn fits_whole_and_refusals() {
        let pkt = synth::udp(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
            b"x",
        )
        .unwrap();
        assert_eq!(to_mtu(&pkt, 1420, 1).unwrap(), vec![pkt.clone()]);
        let big = synth::udp(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
            &[0; 100],
        )
        .unwrap();
        assert_eq!(to_mtu(&big, 27, 1), None, "no room for 8 bytes");
        assert_eq!(split(&big, &[(0, 12), (12, 108)], 1), None, "not on 8");
        assert_eq!(split(&big, &[(0, 200)], 1), None, "beyond the data");
        let frags = split(&big, &[(0, 64), (64, 108)], 1).unwrap();
        assert_eq!(to_mtu(&frags[0], 60, 2), None, "already a fragment");
        assert_eq!(to_mtu(&[0x45, 0, 0], 1, 1), None);
        assert_eq!(to_mtu(&[0x60; 10], 5, 1), None);
        for n in 0..48 {
            let _ = to_mtu(&big[..n], 30, 1);
            let _ = split(&big[..n], &[(0, 8)], 1);
        }
    }
}
