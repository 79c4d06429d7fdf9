//! A minimal pcap (libpcap classic format) reader that yields IP packets.
//!
//! For replay tests and benchmarks: it parses an in-memory capture (the caller
//! reads the file; this module does no IO) and returns, for every record whose
//! frame carries IPv4 or IPv6, the IP packet bytes and the timestamp.
//!
//! Supported: both byte orders, the microsecond magic `a1b2c3d4` and the
//! nanosecond magic `a1b23c4d`; link types 1 (Ethernet, with any number of
//! 802.1Q / 802.1ad VLAN tags), 0 (BSD loopback, 4-byte family header),
//! 101 and 12 (raw IP), 228 / 229 (raw IPv4 / IPv6) and 113 (Linux cooked).
//! Frames that carry something else are counted in `skipped`. A record cut
//! by the end of the file ends the capture (`truncated` is set) — captures
//! written by a killed tcpdump commonly end like that. Never panics.

use std::time::Duration;

/// One IP packet from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapPacket {
    /// Time since the epoch as recorded.
    pub ts: Duration,
    /// The IP packet (link-layer header removed).
    pub data: Vec<u8>,
}

/// A parsed capture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pcap {
    pub link_type: u32,
    pub packets: Vec<PcapPacket>,
    /// Records that were not IP (or whose link header was cut).
    pub skipped: usize,
    /// The last record was cut by the end of the data.
    pub truncated: bool,
}

/// Why a capture could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file (bad magic)")]
    BadMagic,
    #[error("pcap global header truncated")]
    Truncated,
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
}

/// Link-layer header types (<https://www.tcpdump.org/linktypes.html>).
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW_OLD: u32 = 12;
    pub const RAW: u32 = 101;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;

/// Parses a whole capture held in memory.
pub fn parse_pcap(bytes: &[u8]) -> Result<Pcap, PcapError> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or(PcapError::Truncated)?;
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err(PcapError::BadMagic),
    };
    let rd32 = |at: usize| -> Option<u32> {
        let s: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    // The upper bits of the link-type field carry FCS information (pcap-savefile(5)).
    let link_type = rd32(20).ok_or(PcapError::Truncated)? & 0x0fff_ffff;
    match link_type {
        linktype::NULL
        | linktype::ETHERNET
        | linktype::RAW_OLD
        | linktype::RAW
        | linktype::LINUX_SLL
        | linktype::IPV4
        | linktype::IPV6 => {}
        other => return Err(PcapError::UnsupportedLinkType(other)),
    }
    let mut out = Pcap {
        link_type,
        ..Pcap::default()
    };
    let mut at = 24usize;
    while at < bytes.len() {
        let (Some(sec), Some(frac), Some(incl)) = (rd32(at), rd32(at + 4), rd32(at + 8)) else {
            out.truncated = true;
            break;
        };
        let start = at + 16;
        let Some(frame) = usize::try_from(incl)
            .ok()
            .and_then(|n| bytes.get(start..start.checked_add(n)?))
        else {
            out.truncated = true;
            break;
        };
        at = start + frame.len();
        let ts = Duration::from_secs(u64::from(sec))
            + if nanos {
                Duration::from_nanos(u64::from(frac))
            } else {
                Duration::from_micros(u64::from(frac))
            };
        match ip_payload(link_type, frame) {
            Some(ip) => out.packets.push(PcapPacket {
                ts,
                data: ip.to_vec(),
            }),
            None => out.skipped += 1,
        }
    }
    Ok(out)
}

fn is_ip(p: &[u8]) -> bool {
    matches!(p.first().map(|b| b >> 4), Some(4 | 6))
}

/// The IP packet inside one frame of the given link type.
pub fn ip_payload(link_type: u32, frame: &[u8]) -> Option<&[u8]> {
    let ip = match link_type {
        linktype::ETHERNET => {
            let mut et = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
            let mut off = 14usize;
            while et == ETH_VLAN || et == ETH_QINQ {
                et = u16::from_be_bytes(frame.get(off + 2..off + 4)?.try_into().ok()?);
                off += 4;
            }
            if et != ETH_IPV4 && et != ETH_IPV6 {
                return None;
            }
            frame.get(off..)?
        }
        linktype::LINUX_SLL => {
            let et = u16::from_be_bytes(frame.get(14..16)?.try_into().ok()?);
            if et != ETH_IPV4 && et != ETH_IPV6 {
                return None;
            }
            frame.get(16..)?
        }
        // The 4-byte family is in the capturing host's byte order and its
        // AF_INET6 value differs between BSDs: trust the IP version nibble.
        linktype::NULL => frame.get(4..)?,
        _ => frame,
    };
    is_ip(ip).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(le: bool, nanos: bool, link: u32) -> Vec<u8> {
        let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut h = Vec::new();
        h.extend_from_slice(&w(magic));
        h.extend_from_slice(
            &(if le {
                2u16.to_le_bytes()
            } else {
                2u16.to_be_bytes()
            }),
        );
        h.extend_from_slice(
            &(if le {
                4u16.to_le_bytes()
            } else {
                4u16.to_be_bytes()
            }),
        );
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&w(65535));
        h.extend_from_slice(&w(link));
        h
    }

    fn record(le: bool, sec: u32, frac: u32, frame: &[u8]) -> Vec<u8> {
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut r = Vec::new();
        r.extend_from_slice(&w(sec));
        r.extend_from_slice(&w(frac));
        r.extend_from_slice(&w(frame.len() as u32));
        r.extend_from_slice(&w(frame.len() as u32));
        r.extend_from_slice(frame);
        r
    }

    const IP: [u8; 4] = [0x45, 0, 0, 20];

    #[test]
    fn all_link_types_and_byte_orders() {
        let mut eth_vlan = vec![0u8; 12];
        eth_vlan.extend_from_slice(&[0x81, 0, 0, 6, 0x88, 0xa8, 0, 7, 0x08, 0x00]);
        eth_vlan.extend_from_slice(&IP);
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 0]);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&IP);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd, 0x60, 0]);
        for (le, nanos) in [(true, false), (false, false), (true, true), (false, true)] {
            for (link, frame, want) in [
                (1, &eth_vlan[..], Some(&IP[..])),
                (1, &arp[..], None),
                (0, &null[..], Some(&IP[..])),
                (101, &IP[..], Some(&IP[..])),
                (12, &IP[..], Some(&IP[..])),
                (228, &IP[..], Some(&IP[..])),
                (229, &[0x60u8, 1][..], Some(&[0x60u8, 1][..])),
                (113, &sll[..], Some(&[0x60u8, 0][..])),
            ] {
                let mut f = header(le, nanos, link);
                f.extend(record(le, 10, 500, frame));
                let p = parse_pcap(&f).unwrap();
                assert_eq!(p.link_type, link);
                match want {
                    Some(w) => {
                        assert_eq!(p.packets.len(), 1);
                        assert_eq!(p.packets[0].data, w);
                        let frac = if nanos {
                            Duration::from_nanos(500)
                        } else {
                            Duration::from_micros(500)
                        };
                        assert_eq!(p.packets[0].ts, Duration::from_secs(10) + frac);
                    }
                    None => assert_eq!((p.packets.len(), p.skipped), (0, 1)),
                }
            }
        }
    }

    #[test]
    fn errors_and_truncation() {
        assert_eq!(parse_pcap(&[1, 2]), Err(PcapError::Truncated));
        assert_eq!(parse_pcap(&[0; 24]), Err(PcapError::BadMagic));
        assert_eq!(
            parse_pcap(&header(true, false, 105)),
            Err(PcapError::UnsupportedLinkType(105))
        );
        let mut f = header(true, false, 101);
        f.extend(record(true, 1, 1, &IP));
        f.extend(&record(true, 1, 1, &IP)[..18]);
        let p = parse_pcap(&f).unwrap();
        assert_eq!(p.packets.len(), 1);
        assert!(p.truncated);
    }

    #[test]
    fn real_captures() {
        let dir = "../shared/data/pcaps/suricata-verify/tests/defrag";
        let p = parse_pcap(
            &std::fs::read(format!(
                "{dir}/bug-6887-defrag-eth-vlan-ipv4-tcp-syn/frag-eth-vlan-ip-tcp-syn.pcap"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!((p.link_type, p.packets.len(), p.skipped), (1, 3, 0));
        assert!(p.packets.iter().all(|x| x.data[0] == 0x45));
        let p = parse_pcap(
            &std::fs::read(format!(
                "{dir}/bug-6887-defrag-eth-vlan-ipv6-tcp/frag-eth-vlan-ipv6-tcp.pcap"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.packets.len(), 3);
        assert!(p.packets.iter().all(|x| x.data[0] >> 4 == 6));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), link in 0u32..4) {
            let mut f = header(true, false, [1, 0, 101, 113][link as usize]);
            f.extend(data);
            let _ = parse_pcap(&f);
        }
    }
}
