//! The classic libpcap file format, writer side (the reader is
//! `crate::packet::pcap`): a 24-byte global header, then per packet a 16-byte
//! record header (seconds, microseconds, captured length, original length)
//! and the bytes. Link type 101 (`LINKTYPE_RAW`: a raw IPv4 or IPv6 packet,
//! no link header), native microsecond magic `a1b2c3d4` written little-endian
//! — what tcpdump and Wireshark read on every platform.

use std::time::Duration;

/// `LINKTYPE_RAW` (tcpdump.org/linktypes.html).
pub const LINKTYPE_RAW: u32 = 101;
/// Snap length written in the header: the largest IP packet.
pub const SNAPLEN: u32 = 65535;
pub const HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 16;

/// The global header.
pub fn file_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let fields: [(usize, &[u8]); 6] = [
        (0, &0xa1b2_c3d4u32.to_le_bytes()),
        (4, &2u16.to_le_bytes()),
        (6, &4u16.to_le_bytes()),
        // 8..16: thiszone, sigfigs = 0
        (16, &SNAPLEN.to_le_bytes()),
        (20, &LINKTYPE_RAW.to_le_bytes()),
        (8, &[0; 8]),
    ];
    for (off, bytes) in fields {
        if let Some(dst) = h.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    h
}

/// Appends one record (`ts` since the Unix epoch) to `out`. Packets longer
/// than [`SNAPLEN`] are cut (the original length is kept in the header).
pub fn push_record(out: &mut Vec<u8>, ts: Duration, pkt: &[u8]) {
    let cap = pkt.len().min(SNAPLEN as usize);
    let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&ts.subsec_micros().to_le_bytes());
    out.extend_from_slice(&(cap as u32).to_le_bytes());
    out.extend_from_slice(&u32::try_from(pkt.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(pkt.get(..cap).unwrap_or(pkt));
}

/// The size a record of `len` bytes takes in the file.
pub fn record_len(len: usize) -> u64 {
    (RECORD_HEADER_LEN + len.min(SNAPLEN as usize)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::pcap::parse_pcap;

    #[test]
    fn writes_what_the_reader_reads() {
        let a = crate::packet::testutil::v4_udp(b"q");
        let b = crate::packet::testutil::v6_udp(b"xyz");
        let mut f = file_header().to_vec();
        push_record(&mut f, Duration::new(1_700_000_000, 123_456_000), &a);
        push_record(&mut f, Duration::new(1_700_000_001, 0), &b);
        assert_eq!(
            f.len() as u64,
            HEADER_LEN as u64 + record_len(a.len()) + record_len(b.len())
        );
        let p = parse_pcap(&f).expect("parses");
        assert_eq!(p.link_type, LINKTYPE_RAW);
        assert_eq!(p.packets.len(), 2);
        assert_eq!(p.packets[0].data, a);
        assert_eq!(p.packets[0].ts, Duration::new(1_700_000_000, 123_456_000));
        assert_eq!(p.packets[1].data, b);
        assert!(!p.truncated);
    }
}
