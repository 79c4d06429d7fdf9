//! Packets: checked parsing, in-place rewrite and reply builders.
//!
//! [`parse()`] turns raw IP bytes (IPv4 or IPv6, no link layer) into a
//! [`PacketMeta`]: a small, owned summary of every header field the rest of the
//! gateway looks at, with the offsets needed to rewrite the packet in place.
//! It never panics on any input; malformed input is a [`ParseError`] that names
//! what was wrong (and becomes a counted drop reason). [`parse_into`] does the
//! same into a `PacketMeta` the caller holds (the data path: no copy out of a
//! `Result`).
//!
//! Submodules:
//! - `parse`: the checked parser (etherparse underneath), ICMP error inner headers.
//! - `checksum`: RFC 1071 sums and RFC 1624 incremental updates.
//! - `rewrite`: in-place rewrite of addresses, ports and ICMP ids.
//! - `build`: TCP RST and ICMP/ICMPv6 destination-unreachable replies (RFC 792, 1812, 4443).
//! - `frag`: IPv4/IPv6 fragment reassembly (RFC 791, 8200, 5722).
//! - `fragment`: IPv4/IPv6 fragmentation of datagrams the gateway originates.
//! - `pcap`: a small capture reader (Ethernet/VLAN, raw IP, loopback) for replay tests and benches.

use std::net::IpAddr;

/// IP protocol numbers used across the crate.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Fragment information of an IP datagram that is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInfo {
    /// Identification (IPv4: 16 bits, IPv6: 32 bits).
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
}

/// The TCP fields connection tracking needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// The flags byte (see [`tcp_flags`]).
    pub flags: u8,
    /// The raw (unscaled) window field.
    pub window: u16,
    /// Window scale option (only meaningful on SYN segments).
    pub wscale: Option<u8>,
    /// SACK-permitted option seen.
    pub sack_permitted: bool,
    /// Highest right edge of any SACK block in this segment, if any.
    pub sack_max_right: Option<u32>,
    /// Maximum segment size option.
    pub mss: Option<u16>,
}

/// The header of the packet quoted inside an ICMP error (enough to find its flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports for TCP/UDP, (echo id, 0) for ICMP echo, (0, 0) otherwise.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the inner IP header within the outer packet.
    pub offset: u16,
}

/// ICMP / ICMPv6 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpInfo {
    pub ty: u8,
    pub code: u8,
    /// Echo identifier for echo request/reply (v4 types 8/0, v6 128/129).
    pub echo_id: Option<u16>,
    /// True for error messages (v4: 3,4,5,11,12; v6: types < 128).
    pub is_error: bool,
    /// The quoted header of an error message, when it parses.
    pub inner: Option<InnerHeader>,
}

/// Transport-layer summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// Another protocol, or a non-first fragment (no transport header).
    /// (First: discriminant 0, so [`PacketMeta::UNSPECIFIED`] is all zero
    /// bytes, which the data path writes with a few vector stores.)
    Other,
    Tcp(TcpInfo),
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp(IcmpInfo),
}

/// An owned summary of a parsed packet. Offsets are from the start of the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Total length of the IP datagram (may be less than the buffer).
    pub total_len: u16,
    /// Offset of the transport header (after IPv4 options / IPv6 extension headers).
    pub l4_offset: u16,
    /// Offset of the transport payload (== total_len when there is none).
    pub payload_offset: u16,
    pub frag: Option<FragInfo>,
    pub l4: L4,
}

impl PacketMeta {
    /// A placeholder for [`parse_into`] to overwrite: every byte zero (IPv4
    /// 0.0.0.0, `L4::Other`, a fragment field of zeros), so writing it costs
    /// a few vector stores. Not a packet.
    pub const UNSPECIFIED: PacketMeta = PacketMeta {
        src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        proto: 0,
        ttl: 0,
        total_len: 0,
        l4_offset: 0,
        payload_offset: 0,
        frag: Some(FragInfo {
            id: 0,
            offset: 0,
            more: false,
        }),
        l4: L4::Other,
    };

    pub fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// Source and destination port (or ICMP echo id as both; 0 otherwise).
    pub fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp(t) => (t.sport, t.dport),
            L4::Udp { sport, dport } => (sport, dport),
            L4::Icmp(IcmpInfo {
                echo_id: Some(id), ..
            }) => (id, id),
            _ => (0, 0),
        }
    }

    /// Transport payload length in bytes.
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len.saturating_sub(self.payload_offset))
    }
}

/// Why a packet could not be parsed. Each variant is a counted drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("empty packet")]
    Empty,
    #[error("unknown IP version")]
    BadVersion,
    #[error("truncated IP header")]
    TruncatedIp,
    #[error("bad IPv4 header length")]
    BadIhl,
    #[error("IP total length disagrees with the packet")]
    BadLength,
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    #[error("malformed IPv6 extension header")]
    BadExtension,
    #[error("truncated transport header")]
    TruncatedL4,
    #[error("bad transport header")]
    BadL4,
    #[error("bad transport checksum")]
    BadL4Checksum,
    #[error("first fragment too small to hold the transport header")]
    TinyFragment,
}

impl ParseError {
    /// A stable snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::BadVersion => "bad_version",
            ParseError::TruncatedIp => "truncated_ip",
            ParseError::BadIhl => "bad_ihl",
            ParseError::BadLength => "bad_length",
            ParseError::BadIpChecksum => "bad_ip_checksum",
            ParseError::BadExtension => "bad_extension",
            ParseError::TruncatedL4 => "truncated_l4",
            ParseError::BadL4 => "bad_l4",
            ParseError::BadL4Checksum => "bad_l4_checksum",
            ParseError::TinyFragment => "tiny_fragment",
        }
    }
}

mod frag_config;
pub use frag_config::FragConfig;

pub mod build;
pub mod checksum;
pub mod frag;
pub mod fragment;
pub mod parse;
pub mod pcap;
pub mod rewrite;
pub mod synth;
#[cfg(test)]
pub(crate) mod testutil;

pub use build::{icmp_echo_reply, icmp_unreachable, tcp_reset, ReplyLimiter};
pub use frag::{FragError, FragResult, FragStats, Reassembler};
pub use parse::{parse, parse_into, parse_with, ParseOptions};
pub use rewrite::RewriteError;
