//! Address and port sets of rule headers, compiled to sorted disjoint intervals.
//!
//! Suricata's grammar (`any`, single values, CIDRs, port ranges `a:b`, `a:`,
//! `:b`, lists `[..]` that nest, negation `!x`, variables `$NAME`) is
//! evaluated once at load time with exact set algebra: a list is the union of
//! its positive members (everything when it has none) minus the union of its
//! negated members, as Suricata's address/port group code does. The result is
//! a sorted list of disjoint inclusive intervals, so a lookup is a binary
//! search whatever the list size (the ET `tor.rules`/`ciarmy.rules` lists hold
//! hundreds of addresses).
//!
//! Addresses live in one 128-bit space: IPv4 `a.b.c.d` is the IPv4-mapped
//! IPv6 address `::ffff:a.b.c.d`, so IPv4 and IPv6 entries never overlap.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// A set of values as sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntervalSet {
    iv: Vec<(u128, u128)>,
}

impl IntervalSet {
    pub fn full(max: u128) -> Self {
        IntervalSet { iv: vec![(0, max)] }
    }
    pub fn empty() -> Self {
        IntervalSet { iv: Vec::new() }
    }
    pub fn range(lo: u128, hi: u128) -> Self {
        IntervalSet { iv: vec![(lo, hi)] }
    }
    pub fn is_full(&self, max: u128) -> bool {
        self.iv == [(0, max)]
    }
    pub fn contains(&self, v: u128) -> bool {
        // First interval whose end is >= v.
        let i = self.iv.partition_point(|&(_, hi)| hi < v);
        self.iv.get(i).is_some_and(|&(lo, _)| lo <= v)
    }
    fn normalize(mut iv: Vec<(u128, u128)>) -> Self {
        iv.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(iv.len());
        for (lo, hi) in iv {
            if let Some(last) = out.last_mut() {
                if lo <= last.1.saturating_add(1) {
                    last.1 = last.1.max(hi);
                    continue;
                }
            }
            out.push((lo, hi));
        }
        IntervalSet { iv: out }
    }
    pub fn union(&self, o: &IntervalSet) -> Self {
        let mut v = self.iv.clone();
        v.extend_from_slice(&o.iv);
        Self::normalize(v)
    }
    pub fn complement(&self, max: u128) -> Self {
        let mut out = Vec::new();
        let mut next = 0u128;
        let mut done = false;
        for &(lo, hi) in &self.iv {
            if lo > next {
                out.push((next, lo - 1));
            }
            if hi == max {
                done = true;
                break;
            }
            next = hi + 1;
        }
        if !done {
            out.push((next, max));
        }
        IntervalSet { iv: out }
    }
    pub fn minus(&self, o: &IntervalSet, max: u128) -> Self {
        // a \ b = a ∩ ¬b = ¬(¬a ∪ b)
        self.complement(max).union(o).complement(max)
    }
    pub fn is_empty(&self) -> bool {
        self.iv.is_empty()
    }
    /// The sorted, disjoint inclusive intervals.
    pub fn intervals(&self) -> &[(u128, u128)] {
        &self.iv
    }
}

/// The largest address value (all of IPv6, IPv4 mapped inside it).
pub const ADDR_MAX: u128 = u128::MAX;
/// The largest port value.
pub const PORT_MAX: u128 = 65_535;

/// An address as a point of the 128-bit space.
pub fn addr_value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Why a header set did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("undefined variable ${0}")]
    UndefinedVar(String),
    #[error("bad address {0:?}")]
    BadAddr(String),
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("unbalanced brackets")]
    Brackets,
    #[error("variables nest too deep")]
    TooDeep,
    #[error("set matches nothing")]
    Empty,
}

/// Which grammar a set follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Addr,
    Port,
}

impl Kind {
    fn max(self) -> u128 {
        match self {
            Kind::Addr => ADDR_MAX,
            Kind::Port => PORT_MAX,
        }
    }
}

/// Recursion bound for variables that name variables (Suricata has none; a
/// cycle `A = $B`, `B = $A` must not loop). 16 covers every real config.
const MAX_DEPTH: usize = 16;

/// Parses an address or port expression with `vars` (names without `$`).
pub fn parse_set(
    s: &str,
    kind: Kind,
    vars: &HashMap<String, String>,
) -> Result<IntervalSet, SetError> {
    let set = parse_expr(s.trim(), kind, vars, 0)?;
    if set.is_empty() {
        return Err(SetError::Empty);
    }
    Ok(set)
}

fn parse_expr(
    s: &str,
    kind: Kind,
    vars: &HashMap<String, String>,
    depth: usize,
) -> Result<IntervalSet, SetError> {
    if depth > MAX_DEPTH {
        return Err(SetError::TooDeep);
    }
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('!') {
        return Ok(parse_expr(rest, kind, vars, depth + 1)?.complement(kind.max()));
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(SetError::Brackets)?;
        let mut pos = IntervalSet::empty();
        let mut neg = IntervalSet::empty();
        let mut any_pos = false;
        for item in split_top(inner)? {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if let Some(n) = item.strip_prefix('!') {
                neg = neg.union(&parse_expr(n, kind, vars, depth + 1)?);
            } else {
                any_pos = true;
                pos = pos.union(&parse_expr(item, kind, vars, depth + 1)?);
            }
        }
        if !any_pos {
            pos = IntervalSet::full(kind.max());
        }
        return Ok(pos.minus(&neg, kind.max()));
    }
    if let Some(name) = s.strip_prefix('$') {
        let v = vars
            .get(name)
            .ok_or_else(|| SetError::UndefinedVar(name.to_string()))?;
        return parse_expr(v, kind, vars, depth + 1);
    }
    if s.eq_ignore_ascii_case("any") {
        return Ok(IntervalSet::full(kind.max()));
    }
    match kind {
        Kind::Addr => parse_addr(s),
        Kind::Port => parse_port(s),
    }
}

/// Splits a list body at top-level commas.
fn split_top(s: &str) -> Result<Vec<&str>, SetError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SetError::Brackets);
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SetError::Brackets);
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_addr(s: &str) -> Result<IntervalSet, SetError> {
    let bad = || SetError::BadAddr(s.to_string());
    let (ip, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let (bits, base) = match ip {
        IpAddr::V4(_) => (32u32, 96u32),
        IpAddr::V6(_) => (128, 0),
    };
    let plen: u32 = match prefix {
        None => bits,
        Some(p) => {
            if let Ok(n) = p.parse::<u32>() {
                n
            } else if let (IpAddr::V4(_), Ok(mask)) = (ip, p.parse::<std::net::Ipv4Addr>()) {
                // Dotted netmask form, 255.255.255.0.
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() != 32 {
                    return Err(bad());
                }
                m.leading_ones()
            } else {
                return Err(bad());
            }
        }
    };
    if plen > bits {
        return Err(bad());
    }
    let total = base + plen;
    let v = addr_value(ip);
    let host_bits = 128 - total;
    let mask = if host_bits >= 128 {
        0
    } else {
        u128::MAX << host_bits
    };
    let lo = v & mask;
    let hi = lo | !mask;
    Ok(IntervalSet::range(lo, hi))
}

fn parse_port(s: &str) -> Result<IntervalSet, SetError> {
    let bad = || SetError::BadPort(s.to_string());
    let num = |t: &str| t.trim().parse::<u16>().map_err(|_| bad());
    if let Some((a, b)) = s.split_once(':') {
        let lo = if a.trim().is_empty() { 0 } else { num(a)? };
        let hi = if b.trim().is_empty() {
            u16::MAX
        } else {
            num(b)?
        };
        if lo > hi {
            return Err(bad());
        }
        return Ok(IntervalSet::range(u128::from(lo), u128::from(hi)));
    }
    let p = num(s)?;
    Ok(IntervalSet::range(u128::from(p), u128::from(p)))
}

/// Converts a point back to an address (for tests and reports).
pub fn value_addr(v: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(v);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        let mut v = HashMap::new();
        v.insert("HOME_NET".into(), "[10.0.0.0/8,192.168.0.0/16]".into());
        v.insert("EXTERNAL_NET".into(), "!$HOME_NET".into());
        v.insert("HTTP_PORTS".into(), "[80,8000:8080]".into());
        v.insert("LOOP".into(), "$LOOP".into());
        v
    }
    fn has(s: &IntervalSet, a: &str) -> bool {
        s.contains(addr_value(a.parse().unwrap()))
    }

    #[test]
    fn addresses_lists_negation_vars() {
        let v = vars();
        let home = parse_set("$HOME_NET", Kind::Addr, &v).unwrap();
        assert!(has(&home, "10.1.2.3") && has(&home, "192.168.9.9"));
        assert!(!has(&home, "172.16.0.1") && !has(&home, "::1"));
        let ext = parse_set("$EXTERNAL_NET", Kind::Addr, &v).unwrap();
        assert!(!has(&ext, "10.1.2.3") && has(&ext, "8.8.8.8") && has(&ext, "2001:db8::1"));
        let l = parse_set("[10.0.0.0/8,!10.1.0.0/16]", Kind::Addr, &v).unwrap();
        assert!(has(&l, "10.2.0.1") && !has(&l, "10.1.0.1") && !has(&l, "11.0.0.1"));
        let only_neg = parse_set("[!1.2.3.4]", Kind::Addr, &v).unwrap();
        assert!(has(&only_neg, "1.2.3.5") && !has(&only_neg, "1.2.3.4"));
        let nested = parse_set("[$HOME_NET,![10.0.0.1,10.0.0.2]]", Kind::Addr, &v).unwrap();
        assert!(has(&nested, "10.0.0.3") && !has(&nested, "10.0.0.2"));
        let v6 = parse_set("2001:db8::/32", Kind::Addr, &v).unwrap();
        assert!(has(&v6, "2001:db8:1::1") && !has(&v6, "2001:db9::1"));
        assert!(matches!(
            parse_set("$NOPE", Kind::Addr, &v),
            Err(SetError::UndefinedVar(_))
        ));
        assert_eq!(parse_set("$LOOP", Kind::Addr, &v), Err(SetError::TooDeep));
        assert!(parse_set("[1.2.3.4", Kind::Addr, &v).is_err());
        assert!(parse_set("1.2.3.4/33", Kind::Addr, &v).is_err());
        assert_eq!(
            parse_set("[1.2.3.4,!1.2.3.4]", Kind::Addr, &v),
            Err(SetError::Empty)
        );
    }

    #[test]
    fn ports() {
        let v = vars();
        let p = parse_set("$HTTP_PORTS", Kind::Port, &v).unwrap();
        assert!(p.contains(80) && p.contains(8080) && !p.contains(81));
        let p = parse_set("[1024:,!5000]", Kind::Port, &v).unwrap();
        assert!(p.contains(65535) && !p.contains(5000) && !p.contains(80));
        let p = parse_set("!80", Kind::Port, &v).unwrap();
        assert!(!p.contains(80) && p.contains(0));
        assert!(parse_set("70000", Kind::Port, &v).is_err());
        assert!(parse_set("9:3", Kind::Port, &v).is_err());
        assert!(parse_set("any", Kind::Port, &v).unwrap().is_full(PORT_MAX));
    }
}
