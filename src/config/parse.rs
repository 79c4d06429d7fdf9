//! Parsers for the scalar notations of the config file: CIDRs, ports and port
//! ranges, durations, sizes, protocol / ICMP type / TCP flag names, WireGuard
//! keys and endpoints.
//!
//! Each parser is pure and returns `Err(message)` where the message says what
//! is wrong and what is expected; callers prefix the key path and the value.
//! Names follow nftables (`nft describe icmp type`, `icmpv6 type`) and the
//! IANA protocol numbers registry; key notation follows `wg(8)` (base64 of 32
//! bytes, 44 characters); durations follow the usual `1d2h3m4s500ms` form.

use base64::Engine as _;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Parses `ADDR/PREFIX` or a bare address (a /32 or /128). Returns the
/// network as written (host bits kept: interface addresses need them).
pub fn cidr(s: &str) -> Result<IpNetwork, String> {
    const EXPECT: &str = "expected an address or CIDR like \"10.0.0.0/8\" or \"2001:db8::/32\"";
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address; {EXPECT}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "prefix length `{p}` is not a number in 0..={max}; {EXPECT}"
                ))
            }
        },
    };
    IpNetwork::new(ip, prefix).map_err(|e| format!("{e}; {EXPECT}"))
}

/// The network with host bits cleared (`10.1.2.3/8` -> `10.0.0.0/8`), as
/// `wg(8)` does for allowed IPs.
pub fn masked(n: IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).unwrap_or(n)
}

/// A port (`443`) or an inclusive range (`"8000-8999"`) given as a string.
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    const EXPECT: &str = "expected a port 0..=65535 or a range like \"8000-8999\"";
    let one = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{}` is not a port; {EXPECT}", p.trim()))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (one(a)?, one(b)?);
            if lo > hi {
                Err(format!(
                    "range {lo}-{hi} is empty (start above end); {EXPECT}"
                ))
            } else {
                Ok((lo, hi))
            }
        }
        None => one(s).map(|p| (p, p)),
    }
}

/// A duration: seconds as an integer elsewhere, or a string like `"30s"`,
/// `"5m"`, `"1h30m"`, `"1d"`, `"500ms"` (units d, h, m, s, ms).
pub fn duration(s: &str) -> Result<Duration, String> {
    const EXPECT: &str =
        "expected seconds as an integer or a duration like \"30s\", \"5m\", \"1h30m\", \"1d\", \"500ms\"";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {EXPECT}"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        if num.is_empty() {
            return Err(format!("`{s}` has no number before `{tail}`; {EXPECT}"));
        }
        let n: u128 = num
            .parse()
            .map_err(|_| format!("`{num}` is too large; {EXPECT}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` is missing a unit after {num}; {EXPECT}")),
            u => return Err(format!("unknown unit `{u}`; {EXPECT}")),
        };
        total = total.saturating_add(n.saturating_mul(ms_per));
        rest = next;
    }
    let ms = u64::try_from(total).map_err(|_| format!("`{s}` is too long; {EXPECT}"))?;
    Ok(Duration::from_millis(ms))
}

/// A size in bytes as a string: `"4MiB"`, `"512KiB"`, `"4M"`, `"65536"`
/// (K/M/G and KiB/MiB/GiB are all powers of 1024 here).
pub fn size(s: &str) -> Result<u64, String> {
    const EXPECT: &str =
        "expected bytes as an integer or a size like \"512KiB\", \"4MiB\", \"1GiB\"";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number; {EXPECT}"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        u => return Err(format!("unknown unit `{u}`; {EXPECT}")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("`{s}` is too large; {EXPECT}"))
}

/// IP protocol names (IANA "Assigned Internet Protocol Numbers").
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("udplite", 136),
];

/// A protocol name.
pub fn protocol(s: &str) -> Result<u8, String> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown protocol; expected one of {} or a number 0..=255",
                names.join(", ")
            )
        })
}

/// ICMP (v4) type names, as nftables spells them (RFC 792, RFC 950).
pub const ICMP4_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

/// ICMPv6 type names, as nftables spells them (RFC 4443, RFC 4861, RFC 2710,
/// RFC 3810).
pub const ICMP6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("ind-neighbor-solicit", 141),
    ("ind-neighbor-advert", 142),
    ("mld2-listener-report", 143),
];

/// An ICMP type name for `icmp` (v4) or `icmpv6`.
pub fn icmp_type(s: &str, v6: bool) -> Result<u8, String> {
    let table = if v6 { ICMP6_TYPES } else { ICMP4_TYPES };
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown {} type; expected one of {} or a number 0..=255",
                if v6 { "ICMPv6" } else { "ICMP" },
                names.join(", ")
            )
        })
}

/// TCP flag letters in bit order: F S R P A U E C (FIN = 0x01 ... CWR = 0x80).
const TCP_FLAG_LETTERS: &[u8; 8] = b"FSRPAUEC";

/// TCP flag letters (any case) as the flags byte: `"SA"` -> SYN|ACK.
pub fn flag_bits(s: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for c in s.chars() {
        let up = c.to_ascii_uppercase();
        let i = TCP_FLAG_LETTERS
            .iter()
            .position(|l| char::from(*l) == up)
            .ok_or_else(|| format!("`{c}` is not a TCP flag letter"))?;
        bits |= 1 << i;
    }
    Ok(bits)
}

/// TCP flags as `"VALUE/MASK"` letters (`"S/SAFR"`: SYN set, ACK FIN RST
/// clear), or `"VALUE"` alone (those flags set, others anything). Returns
/// `(mask, value)` as the rule model stores it.
pub fn tcp_flags(s: &str) -> Result<(u8, u8), String> {
    const EXPECT: &str = "expected \"VALUE/MASK\" flag letters F S R P A U E C, like \"S/SAFR\" (SYN set; ACK, FIN, RST clear)";
    let (value, mask) = match s.split_once('/') {
        Some((v, m)) => (v, m),
        None => (s, s),
    };
    let value = flag_bits(value.trim()).map_err(|e| format!("{e}; {EXPECT}"))?;
    let mask = flag_bits(mask.trim()).map_err(|e| format!("{e}; {EXPECT}"))?;
    if mask == 0 {
        return Err(format!("the mask is empty; {EXPECT}"));
    }
    if value & !mask != 0 {
        return Err(format!(
            "the value has flags outside the mask (they could never match); {EXPECT}"
        ));
    }
    Ok((mask, value))
}

/// A WireGuard key: base64 of 32 bytes (44 characters with `=` padding), as
/// `wg genkey` / `wg pubkey` print it. The message never repeats the input
/// (it may be a secret).
pub fn key(s: &str) -> Result<[u8; 32], String> {
    const EXPECT: &str =
        "expected 44 characters of base64 encoding 32 bytes, as `wg genkey` or `portcullis genkey` prints";
    let s = s.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| format!("not valid base64 ({} characters); {EXPECT}", s.len()))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, not 32; {EXPECT}", bytes.len()))
}

/// Encodes a key as base64 (for summaries and peer configs).
pub fn key_to_base64(k: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

/// A peer endpoint: `host:port`, the host an IPv4 address, a bracketed IPv6
/// address (`[2001:db8::1]:51820`) or a DNS name (resolved when the gateway
/// starts, like wg-quick does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address or DNS name, without brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The socket address when the host is a literal address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses an endpoint.
pub fn endpoint(s: &str) -> Result<Endpoint, String> {
    const EXPECT: &str = "expected \"HOST:PORT\" like \"198.51.100.1:51820\", \"[2001:db8::1]:51820\" or \"vpn.example.com:51820\"";
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("port 0 is not a destination port; {EXPECT}"));
        }
        return Ok(Endpoint {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("no port; {EXPECT}"))?;
    if host.contains(':') || host.starts_with('[') {
        return Err(format!(
            "an IPv6 address must be in brackets and valid; {EXPECT}"
        ));
    }
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("`{port}` is not a port in 1..=65535; {EXPECT}")),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!("`{host}` is not an address or DNS name; {EXPECT}"));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// A name for a peer, group, set or rule reference: letters, digits, `_`,
/// `-`, `.`; 1 to 64 characters. Such names can never be confused with the
/// `!` (negation), `@` (set) and `:` (`group:`) syntax.
pub fn name(s: &str) -> Result<(), String> {
    const EXPECT: &str = "expected 1 to 64 letters, digits, '_', '-' or '.'";
    if s.is_empty() || s.len() > 64 {
        return Err(format!("{} characters long; {EXPECT}", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!("contains {c:?}; {EXPECT}"));
    }
    Ok(())
}

/// A Linux interface name (`dev_valid_name`: 1..=15 bytes, not `.` or `..`,
/// no `/`, `:` or whitespace).
pub fn ifname(s: &str) -> Result<(), String> {
    const EXPECT: &str = "expected 1 to 15 characters without '/', ':' or spaces, like \"pc0\"";
    if s.is_empty() || s.len() > 15 || s == "." || s == ".." {
        return Err(EXPECT.to_owned());
    }
    if s.chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(EXPECT.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.0.0.1").unwrap().prefix(), 32);
        assert_eq!(cidr("2001:db8::1").unwrap().prefix(), 128);
        let n = cidr("10.1.2.3/8").unwrap();
        assert_eq!(n.ip().to_string(), "10.1.2.3");
        assert_eq!(masked(n).to_string(), "10.0.0.0/8");
        assert!(cidr("10.0.0.0/33").unwrap_err().contains("0..=32"));
        assert!(cidr("2001:db8::/129").unwrap_err().contains("0..=128"));
        assert!(cidr("10.0.0/8").unwrap_err().contains("not an IP address"));
        assert!(cidr("10.0.0.0/x").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port_range("80").unwrap(), (80, 80));
        assert_eq!(port_range("8000-8999").unwrap(), (8000, 8999));
        assert!(port_range("9000-8000").unwrap_err().contains("empty"));
        assert!(port_range("8000-70000").unwrap_err().contains("`70000`"));
        assert!(port_range("http").is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("30").unwrap_err().contains("missing a unit"));
        assert!(duration("5w").unwrap_err().contains("unknown unit `w`"));
        assert!(duration("").is_err());
        assert!(duration("s").is_err());
        assert_eq!(size("4MiB").unwrap(), 4 << 20);
        assert_eq!(size("512K").unwrap(), 512 << 10);
        assert_eq!(size("100").unwrap(), 100);
        assert!(size("4TB").is_err());
        assert!(size("99999999999999999999G").is_err());
    }

    #[test]
    fn names_protocols_icmp_flags() {
        assert_eq!(protocol("TCP").unwrap(), 6);
        assert_eq!(protocol("ipv6-icmp").unwrap(), 58);
        assert!(protocol("tpc").unwrap_err().contains("tcp, udp"));
        assert_eq!(icmp_type("echo-request", false).unwrap(), 8);
        assert_eq!(icmp_type("echo-request", true).unwrap(), 128);
        assert!(icmp_type("packet-too-big", false).is_err());
        assert_eq!(icmp_type("packet-too-big", true).unwrap(), 2);
        assert_eq!(
            tcp_flags("S/SAFR").unwrap(),
            (0x02 | 0x10 | 0x01 | 0x04, 0x02)
        );
        assert_eq!(tcp_flags("SA").unwrap(), (0x12, 0x12));
        assert!(tcp_flags("SA/S").unwrap_err().contains("outside the mask"));
        assert!(tcp_flags("X/S").unwrap_err().contains("`X`"));
        assert!(name("laptop-1.home").is_ok());
        assert!(name("group:x").is_err());
        assert!(name("").is_err());
        assert!(ifname("pc0").is_ok());
        assert!(ifname("a-very-long-interface").is_err());
    }

    #[test]
    fn keys_and_endpoints() {
        let k = [7u8; 32];
        assert_eq!(key(&key_to_base64(&k)).unwrap(), k);
        assert!(key("abc").unwrap_err().contains("base64"));
        assert!(key("AAAA").unwrap_err().contains("3 bytes"));
        let e = endpoint("198.51.100.1:51820").unwrap();
        assert_eq!(e.socket_addr().unwrap().to_string(), "198.51.100.1:51820");
        let e = endpoint("[2001:db8::1]:51820").unwrap();
        assert_eq!(e.to_string(), "[2001:db8::1]:51820");
        assert_eq!(e.host, "2001:db8::1");
        let e = endpoint("vpn.example.com:443").unwrap();
        assert!(e.socket_addr().is_none());
        assert!(endpoint("2001:db8::1:51820")
            .unwrap_err()
            .contains("brackets"));
        assert!(endpoint("vpn.example.com").unwrap_err().contains("no port"));
        assert!(endpoint("1.2.3.4:0").is_err());
        assert!(endpoint("bad_host:1").is_err());
    }
}
