//! Suricata rule syntax (a subset) -> [`Signature`]s, with a load report.
//!
//! Grammar (Suricata 7 "Rules format"): `action proto src sport dir dst dport
//! (key:value; key; ...)`. Supported:
//! - actions `alert drop reject rejectsrc rejectdst rejectboth pass`;
//! - protocols `tcp udp icmp ip` and the app protocols `http tls dns`, plus
//!   `tcp-pkt` / `tcp-stream` (payload on the packet only / stream only);
//! - addresses and ports with lists, negation and `$VARS` (see [`set`]);
//!   directions `->` and `<>`;
//! - options msg, sid, rev, gid, classtype, priority, metadata, reference,
//!   target; content (`!`, `|hex|`) with nocase, depth, offset, distance,
//!   within, fast_pattern, startswith, endswith; pcre (see [`pcre`]); flow;
//!   flags / tcp.flags; dsize; itype; icode; threshold; detection_filter;
//!   the sticky buffers http.uri, http.method, http.host, http.user_agent,
//!   http.header, http.cookie, http.referer, http.content_type,
//!   http.request_line, tls.sni, dns.query (and their legacy `http_uri`-style
//!   content modifiers / `dns_query`, `tls_sni` keywords).
//!
//! Contract: a rule that uses anything else is skipped whole, with a reason
//! counted in the [`LoadReport`] (never half-loaded, never a panic). Reasons
//! are short and stable (`unsupported keyword: flowbits`) so they aggregate.

pub mod pcre;
pub mod set;

use set::{parse_set, IntervalSet, Kind};
use std::collections::{BTreeMap, HashMap};

/// Where a content or pcre looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// The packet payload (UDP/ICMP/other, `tcp-pkt`) or the reassembled
    /// stream (TCP).
    Payload,
    HttpUri,
    HttpMethod,
    HttpHost,
    HttpUserAgent,
    HttpHeader,
    HttpCookie,
    HttpReferer,
    HttpContentType,
    HttpRequestLine,
    TlsSni,
    DnsQuery,
}

impl Buffer {
    pub const ALL: [Buffer; 12] = [
        Buffer::Payload,
        Buffer::HttpUri,
        Buffer::HttpMethod,
        Buffer::HttpHost,
        Buffer::HttpUserAgent,
        Buffer::HttpHeader,
        Buffer::HttpCookie,
        Buffer::HttpReferer,
        Buffer::HttpContentType,
        Buffer::HttpRequestLine,
        Buffer::TlsSni,
        Buffer::DnsQuery,
    ];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn is_http(self) -> bool {
        !matches!(self, Buffer::Payload | Buffer::TlsSni | Buffer::DnsQuery)
    }
    /// The sticky-buffer keyword naming it, or a legacy content modifier.
    fn from_sticky(k: &str) -> Option<Buffer> {
        Some(match k {
            "http.uri" => Buffer::HttpUri,
            "http.method" => Buffer::HttpMethod,
            "http.host" => Buffer::HttpHost,
            "http.user_agent" => Buffer::HttpUserAgent,
            "http.header" => Buffer::HttpHeader,
            "http.cookie" => Buffer::HttpCookie,
            "http.referer" => Buffer::HttpReferer,
            "http.content_type" => Buffer::HttpContentType,
            "http.request_line" => Buffer::HttpRequestLine,
            "tls.sni" | "tls_sni" => Buffer::TlsSni,
            "dns.query" | "dns_query" => Buffer::DnsQuery,
            "pkt_data" => Buffer::Payload,
            _ => return None,
        })
    }
    fn from_modifier(k: &str) -> Option<Buffer> {
        Some(match k {
            "http_uri" => Buffer::HttpUri,
            "http_method" => Buffer::HttpMethod,
            "http_host" => Buffer::HttpHost,
            "http_user_agent" => Buffer::HttpUserAgent,
            "http_header" => Buffer::HttpHeader,
            "http_cookie" => Buffer::HttpCookie,
            _ => return None,
        })
    }
}

/// Rule action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Alert,
    Drop,
    Reject,
    Pass,
}

impl RuleAction {
    pub fn name(self) -> &'static str {
        match self {
            RuleAction::Alert => "alert",
            RuleAction::Drop => "drop",
            RuleAction::Reject => "reject",
            RuleAction::Pass => "pass",
        }
    }
}

/// The protocol a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Tcp,
    /// `tcp-pkt`: TCP, payload matched per packet (not the stream).
    TcpPkt,
    /// `tcp-stream`: TCP, payload matched on the stream only.
    TcpStream,
    Udp,
    Icmp,
    Http,
    Tls,
    Dns,
}

/// An application protocol detected on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProto {
    Http,
    Tls,
    Dns,
}

impl AppProto {
    pub fn name(self) -> &'static str {
        match self {
            AppProto::Http => "http",
            AppProto::Tls => "tls",
            AppProto::Dns => "dns",
        }
    }
}

/// One content match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub pattern: Vec<u8>,
    /// Lowercased pattern (for nocase matching and the prefilter).
    pub lower: Vec<u8>,
    pub nocase: bool,
    pub negated: bool,
    pub offset: u32,
    pub depth: Option<u32>,
    pub distance: Option<i32>,
    pub within: Option<u32>,
    pub startswith: bool,
    pub endswith: bool,
    pub fast_pattern: bool,
}

impl Content {
    pub fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// A payload matcher (in rule order within its buffer).
#[derive(Debug, Clone)]
pub enum Matcher {
    Content(Content),
    Pcre(pcre::Pcre),
    /// `bsize` (and `urilen` on http.uri): the buffer's length.
    Bsize(Cmp),
    /// `isdataat:[!]n[,relative]`.
    IsDataAt {
        n: u32,
        relative: bool,
        negated: bool,
    },
    /// `dotprefix`: the buffer is matched with a '.' in front (first in its list).
    DotPrefix,
}

/// A numeric comparison (`dsize`, `itype`, `icode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq(u32),
    Ne(u32),
    Lt(u32),
    Gt(u32),
    Le(u32),
    Ge(u32),
    /// Exclusive range `a<>b`.
    Range(u32, u32),
}

impl Cmp {
    pub fn test(self, v: u32) -> bool {
        match self {
            Cmp::Eq(a) => v == a,
            Cmp::Ne(a) => v != a,
            Cmp::Lt(a) => v < a,
            Cmp::Gt(a) => v > a,
            Cmp::Le(a) => v <= a,
            Cmp::Ge(a) => v >= a,
            Cmp::Range(a, b) => v > a && v < b,
        }
    }
    fn parse(s: &str) -> Option<Cmp> {
        let s = s.trim();
        let n = |t: &str| t.trim().parse::<u32>().ok();
        if let Some((a, b)) = s.split_once("<>") {
            return Some(Cmp::Range(n(a)?, n(b)?));
        }
        if let Some(r) = s.strip_prefix("<=") {
            return Some(Cmp::Le(n(r)?));
        }
        if let Some(r) = s.strip_prefix(">=") {
            return Some(Cmp::Ge(n(r)?));
        }
        if let Some(r) = s.strip_prefix('<') {
            return Some(Cmp::Lt(n(r)?));
        }
        if let Some(r) = s.strip_prefix('>') {
            return Some(Cmp::Gt(n(r)?));
        }
        if let Some(r) = s.strip_prefix('!') {
            return Some(Cmp::Ne(n(r)?));
        }
        if let Some(r) = s.strip_prefix('=') {
            return Some(Cmp::Eq(n(r)?));
        }
        Some(Cmp::Eq(n(s)?))
    }
}

/// `flow:` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowCond {
    /// `Some(true)`: to_server; `Some(false)`: to_client.
    pub to_server: Option<bool>,
    /// `Some(true)`: established; `Some(false)`: not_established.
    pub established: Option<bool>,
}

/// `flags:` test (Suricata `detect-tcp-flags.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsCond {
    pub flags: u8,
    /// Bits ignored before the test.
    pub mask: u8,
    pub modifier: FlagsMod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagsMod {
    /// Exactly these (after the mask).
    Exact,
    /// `+`: at least these.
    Plus,
    /// `*`: any of these.
    Any,
    /// `!`: none of these.
    Not,
}

impl FlagsCond {
    pub fn test(&self, f: u8) -> bool {
        let f = f & !self.mask;
        match self.modifier {
            FlagsMod::Exact => f == self.flags,
            FlagsMod::Plus => f & self.flags == self.flags,
            FlagsMod::Any => f & self.flags != 0,
            FlagsMod::Not => f & self.flags == 0,
        }
    }
}

/// What a threshold counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    BySrc,
    ByDst,
    ByRule,
    ByBoth,
    ByFlow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    /// Alert on the first `count` matches per window.
    Limit,
    /// Alert on every `count`th match.
    Threshold,
    /// Alert once per window, on the `count`th match.
    Both,
    /// `detection_filter`: alert on every match after the first `count`.
    DetectionFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub kind: ThresholdKind,
    pub track: Track,
    pub count: u32,
    pub seconds: u32,
}

/// A loaded signature.
#[derive(Debug, Clone)]
pub struct Signature {
    pub action: RuleAction,
    pub proto: Proto,
    pub src: IntervalSet,
    pub sport: IntervalSet,
    pub dst: IntervalSet,
    pub dport: IntervalSet,
    pub bidirectional: bool,
    pub msg: String,
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub classtype: Option<String>,
    pub priority: u8,
    /// Matchers grouped by buffer, each group in rule order.
    pub buffers: Vec<(Buffer, Vec<Matcher>)>,
    pub flow: FlowCond,
    pub flags: Option<FlagsCond>,
    pub dsize: Option<Cmp>,
    pub itype: Option<Cmp>,
    pub icode: Option<Cmp>,
    pub threshold: Option<Threshold>,
    pub detection_filter: Option<Threshold>,
    /// The prefilter pattern: buffer, lowercased bytes.
    pub fast: Option<(Buffer, Vec<u8>)>,
    /// `alert` keyword on a pass rule: alert as well as pass (Suricata 8).
    pub pass_alert: bool,
    /// `flowbits` conditions and actions, in rule order.
    pub flowbits: Vec<FlowbitOp>,
    /// `flowbits:noalert` (or `noalert`): match silently.
    pub noalert: bool,
}

/// A `flowbits` operation (Suricata `detect-flowbits.c`); names are interned
/// by the engine. `IsSet`/`IsNotSet` with several names are OR groups (`a|b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowbitOp {
    Set(String),
    Unset(String),
    Toggle(String),
    IsSet(Vec<String>),
    IsNotSet(Vec<String>),
}

impl Signature {
    /// Header-only on addresses: no payload, no packet fields, no flow.
    pub fn ip_only(&self) -> bool {
        self.buffers.is_empty()
            && self.proto == Proto::Ip
            && self.flow == FlowCond::default()
            && self.flags.is_none()
            && self.dsize.is_none()
            && self.itype.is_none()
            && self.icode.is_none()
            && self.flowbits.is_empty()
    }
    /// The app protocol a rule requires (by proto or by its buffers).
    pub fn app_proto(&self) -> Option<AppProto> {
        match self.proto {
            Proto::Http => return Some(AppProto::Http),
            Proto::Tls => return Some(AppProto::Tls),
            Proto::Dns => return Some(AppProto::Dns),
            _ => {}
        }
        self.buffers.iter().find_map(|(b, _)| match b {
            Buffer::TlsSni => Some(AppProto::Tls),
            Buffer::DnsQuery => Some(AppProto::Dns),
            b if b.is_http() => Some(AppProto::Http),
            _ => None,
        })
    }
}

/// Why a rule was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Skip(pub String);

fn skip<T>(s: impl Into<String>) -> Result<T, Skip> {
    Err(Skip(s.into()))
}

/// Variables: `$NAME` -> text, as in suricata.yaml `vars`.
#[derive(Debug, Clone, Default)]
pub struct Vars(pub HashMap<String, String>);

impl Vars {
    /// Suricata's shipped suricata.yaml defaults (address-groups and
    /// port-groups), which the ET rules assume.
    pub fn suricata_defaults() -> Vars {
        let mut m = HashMap::new();
        let home = "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]";
        for (k, v) in [
            ("HOME_NET", home),
            ("EXTERNAL_NET", "!$HOME_NET"),
            ("HTTP_SERVERS", "$HOME_NET"),
            ("SMTP_SERVERS", "$HOME_NET"),
            ("SQL_SERVERS", "$HOME_NET"),
            ("DNS_SERVERS", "$HOME_NET"),
            ("TELNET_SERVERS", "$HOME_NET"),
            ("AIM_SERVERS", "$EXTERNAL_NET"),
            ("DC_SERVERS", "$HOME_NET"),
            ("DNP3_SERVER", "$HOME_NET"),
            ("DNP3_CLIENT", "$HOME_NET"),
            ("MODBUS_CLIENT", "$HOME_NET"),
            ("MODBUS_SERVER", "$HOME_NET"),
            ("ENIP_CLIENT", "$HOME_NET"),
            ("ENIP_SERVER", "$HOME_NET"),
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ] {
            m.insert(k.to_string(), v.to_string());
        }
        Vars(m)
    }
}

/// Loaded/skipped counts, skipped by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    pub loaded: usize,
    /// Commented-out rules are not counted anywhere.
    pub skipped: BTreeMap<String, usize>,
    /// Duplicate sids (the later rule is skipped, as Suricata does).
    pub duplicate_sids: usize,
}

impl LoadReport {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_insert(0) += 1;
    }
    /// A human report, reasons by count (largest first).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ids rules: {} loaded, {} skipped, from {} file(s)",
            self.loaded,
            self.skipped_total(),
            self.files
        );
        let mut v: Vec<_> = self.skipped.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (r, n) in v {
            let _ = writeln!(s, "  skipped {n:>6}  {r}");
        }
        s
    }
}

/// Parses every rule in `text` (one per line, `\` continues a line, `#`
/// comments), appending to `out` and counting in `report`.
pub fn load_text(text: &str, vars: &Vars, out: &mut Vec<Signature>, report: &mut LoadReport) {
    let mut seen: std::collections::HashSet<(u32, u32)> =
        out.iter().map(|s| (s.gid, s.sid)).collect();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(body) = t.strip_suffix('\\') {
            pending.push_str(body);
            continue;
        }
        pending.push_str(t);
        let rule = std::mem::take(&mut pending);
        let rule = rule.trim();
        if rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        match parse_rule(rule, vars) {
            Ok(sig) => {
                if seen.insert((sig.gid, sig.sid)) {
                    report.loaded += 1;
                    out.push(sig);
                } else {
                    report.duplicate_sids += 1;
                    report.skip("duplicate sid");
                }
            }
            Err(Skip(r)) => report.skip(&r),
        }
    }
}

/// Splits the option list at `;` outside quotes (a `\` escapes the next char).
fn split_options(s: &str) -> Result<Vec<&str>, Skip> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_q = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' => in_q = !in_q,
            ';' if !in_q => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_q {
        return skip("syntax: unterminated quote");
    }
    if !s[start..].trim().is_empty() {
        return skip("syntax: option without ';'");
    }
    Ok(out)
}

/// Decodes a content string: `|41 42|` hex, `\"` `\;` `\\` `\:` escapes.
pub fn parse_content_bytes(s: &str) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let mut hex = false;
    let mut nib: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if hex {
            match c {
                b'|' => {
                    if nib.is_some() {
                        return skip("syntax: odd hex digits in content");
                    }
                    hex = false;
                }
                b' ' => {}
                c if c.is_ascii_hexdigit() => {
                    let v = (c as char).to_digit(16).unwrap_or(0) as u8;
                    match nib.take() {
                        Some(h) => out.push(h << 4 | v),
                        None => nib = Some(v),
                    }
                }
                _ => return skip("syntax: bad hex in content"),
            }
        } else if c == b'|' {
            hex = true;
        } else if c == b'\\' {
            match b.get(i + 1) {
                Some(&e @ (b'"' | b';' | b'\\' | b':')) => {
                    out.push(e);
                    i += 1;
                }
                _ => return skip("syntax: bad escape in content"),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    if hex {
        return skip("syntax: unterminated hex in content");
    }
    if out.is_empty() {
        return skip("syntax: empty content");
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_u32(v: &str, what: &str) -> Result<u32, Skip> {
    v.trim()
        .parse::<u32>()
        .or_else(|_| skip(format!("syntax: bad {what}")))
}

fn parse_flags(v: &str) -> Result<FlagsCond, Skip> {
    let (f, m) = match v.split_once(',') {
        Some((f, m)) => (f.trim(), Some(m.trim())),
        None => (v.trim(), None),
    };
    let mut modifier = FlagsMod::Exact;
    let mut flags = 0u8;
    let bit = |c: char| -> Option<u8> {
        Some(match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' | '2' => 0x40,
            'C' | '1' => 0x80,
            '0' => 0,
            _ => return None,
        })
    };
    for c in f.chars() {
        match c {
            '+' => modifier = FlagsMod::Plus,
            '*' => modifier = FlagsMod::Any,
            '!' => modifier = FlagsMod::Not,
            c => flags |= bit(c).ok_or_else(|| Skip("syntax: bad flags".into()))?,
        }
    }
    let mut mask = 0u8;
    if let Some(m) = m {
        for c in m.chars() {
            mask |= bit(c).ok_or_else(|| Skip("syntax: bad flags mask".into()))?;
        }
    }
    Ok(FlagsCond {
        flags,
        mask,
        modifier,
    })
}

fn parse_threshold(v: &str, df: bool) -> Result<Threshold, Skip> {
    let mut kind = if df {
        Some(ThresholdKind::DetectionFilter)
    } else {
        None
    };
    let (mut track, mut count, mut seconds) = (None, None, None);
    for part in v.split(',') {
        let mut it = part.split_whitespace();
        let (Some(k), Some(val)) = (it.next(), it.next()) else {
            return skip("syntax: bad threshold");
        };
        match k {
            "type" if !df => {
                kind = Some(match val {
                    "limit" => ThresholdKind::Limit,
                    "threshold" => ThresholdKind::Threshold,
                    "both" => ThresholdKind::Both,
                    _ => return skip("threshold: unsupported type"),
                })
            }
            "track" => {
                track = Some(match val {
                    "by_src" => Track::BySrc,
                    "by_dst" => Track::ByDst,
                    "by_rule" => Track::ByRule,
                    "by_both" => Track::ByBoth,
                    "by_flow" => Track::ByFlow,
                    _ => return skip("threshold: unsupported track"),
                })
            }
            "count" => count = Some(parse_u32(val, "threshold count")?),
            "seconds" => seconds = Some(parse_u32(val, "threshold seconds")?),
            _ => return skip("syntax: bad threshold"),
        }
    }
    match (kind, track, count, seconds) {
        (Some(kind), Some(track), Some(count), Some(seconds)) => Ok(Threshold {
            kind,
            track,
            count,
            seconds,
        }),
        _ => skip("syntax: incomplete threshold"),
    }
}

fn last_content_of<'a>(
    list: &'a mut [(Buffer, Matcher)],
    key: &str,
) -> Result<&'a mut Content, Skip> {
    // Like Suricata (DetectGetLastSMFromLists): the most recent content,
    // past buffer-level keywords such as bsize / isdataat / pcre.
    match list.iter_mut().rev().find_map(|(_, m)| match m {
        Matcher::Content(c) => Some(c),
        _ => None,
    }) {
        Some(c) => Ok(c),
        None => skip(format!("syntax: {key} without a content")),
    }
}

fn need_value<'a>(v: Option<&'a str>, key: &str) -> Result<&'a str, Skip> {
    v.ok_or_else(|| Skip(format!("syntax: {key} needs a value")))
}

/// Parses one rule line.
pub fn parse_rule(line: &str, vars: &Vars) -> Result<Signature, Skip> {
    let open = line
        .find('(')
        .ok_or_else(|| Skip("syntax: no options".into()))?;
    let body = line[open + 1..].trim_end();
    let body = body
        .strip_suffix(')')
        .ok_or_else(|| Skip("syntax: options not closed".into()))?;
    let header: Vec<&str> = line[..open].split_whitespace().collect();
    let [action, proto, src, sport, dir, dst, dport] = header[..] else {
        return skip("syntax: header needs 7 fields");
    };
    let action = match action {
        "alert" => RuleAction::Alert,
        "drop" => RuleAction::Drop,
        "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => RuleAction::Reject,
        "pass" => RuleAction::Pass,
        other => return skip(format!("unsupported action: {other}")),
    };
    let proto = match proto {
        "ip" => Proto::Ip,
        "tcp" => Proto::Tcp,
        "tcp-pkt" => Proto::TcpPkt,
        "tcp-stream" => Proto::TcpStream,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "http" | "http1" => Proto::Http,
        "tls" => Proto::Tls,
        "dns" => Proto::Dns,
        other => return skip(format!("unsupported protocol: {other}")),
    };
    let bidirectional = match dir {
        "->" => false,
        "<>" => true,
        _ => return skip("syntax: bad direction"),
    };
    let set = |s: &str, k: Kind| {
        parse_set(s, k, &vars.0).map_err(|e| match e {
            set::SetError::UndefinedVar(_) => Skip("undefined variable".into()),
            e => Skip(format!("header: {e}")),
        })
    };
    let src = set(src, Kind::Addr)?;
    let sport = set(sport, Kind::Port)?;
    let dst = set(dst, Kind::Addr)?;
    let dport = set(dport, Kind::Port)?;

    let mut sig = Signature {
        action,
        proto,
        src,
        sport,
        dst,
        dport,
        bidirectional,
        msg: String::new(),
        gid: 1,
        sid: 0,
        rev: 0,
        classtype: None,
        priority: 3,
        buffers: Vec::new(),
        flow: FlowCond::default(),
        flags: None,
        dsize: None,
        itype: None,
        icode: None,
        threshold: None,
        detection_filter: None,
        fast: None,
        pass_alert: false,
        flowbits: Vec::new(),
        noalert: false,
    };
    let mut has_priority = false;
    let mut has_sid = false;
    // (buffer, matcher) in rule order; legacy modifiers rewrite the last one's buffer.
    let mut list: Vec<(Buffer, Matcher)> = Vec::new();
    let mut sticky = Buffer::Payload;

    for opt in split_options(body)? {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (key, val) = match opt.split_once(':') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (opt, None),
        };
        match key {
            "msg" => {
                sig.msg = unquote(need_value(val, key)?)
                    .replace("\\\"", "\"")
                    .replace("\\;", ";")
            }
            "sid" => {
                sig.sid = parse_u32(need_value(val, key)?, "sid")?;
                has_sid = true;
            }
            "rev" => sig.rev = parse_u32(need_value(val, key)?, "rev")?,
            "gid" => sig.gid = parse_u32(need_value(val, key)?, "gid")?,
            "classtype" => sig.classtype = Some(need_value(val, key)?.to_string()),
            "priority" => {
                let p = parse_u32(need_value(val, key)?, "priority")?;
                sig.priority = u8::try_from(p.clamp(1, 255)).unwrap_or(255);
                has_priority = true;
            }
            "metadata" | "reference" | "target" => {}
            "noalert" if val.is_none() => sig.noalert = true,
            "flowbits" => {
                let v = need_value(val, key)?;
                let (cmd, name) = match v.split_once(',') {
                    Some((c, n)) => (c.trim(), Some(n.trim())),
                    None => (v.trim(), None),
                };
                let names = |n: Option<&str>| -> Result<Vec<String>, Skip> {
                    let n = n
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| Skip("syntax: flowbits without a name".into()))?;
                    if n.contains('&') {
                        return skip("unsupported: flowbits with &");
                    }
                    Ok(n.split('|').map(|x| x.trim().to_string()).collect())
                };
                let one = |n: Option<&str>| -> Result<String, Skip> {
                    let v = names(n)?;
                    match &v[..] {
                        [x] => Ok(x.clone()),
                        _ => skip("unsupported: flowbits action on several names"),
                    }
                };
                match cmd {
                    "noalert" => sig.noalert = true,
                    "set" => sig.flowbits.push(FlowbitOp::Set(one(name)?)),
                    "unset" => sig.flowbits.push(FlowbitOp::Unset(one(name)?)),
                    "toggle" => sig.flowbits.push(FlowbitOp::Toggle(one(name)?)),
                    "isset" => sig.flowbits.push(FlowbitOp::IsSet(names(name)?)),
                    "isnotset" => sig.flowbits.push(FlowbitOp::IsNotSet(names(name)?)),
                    other => return skip(format!("unsupported flowbits command: {other}")),
                }
            }
            "alert" if val.is_none() && action == RuleAction::Pass => sig.pass_alert = true,
            "content" => {
                let v = need_value(val, key)?;
                let (negated, v) = match v.strip_prefix('!') {
                    Some(r) => (true, r.trim_start()),
                    None => (false, v),
                };
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .ok_or_else(|| Skip("syntax: content not quoted".into()))?;
                let pattern = parse_content_bytes(v)?;
                let lower = pattern.to_ascii_lowercase();
                list.push((
                    sticky,
                    Matcher::Content(Content {
                        pattern,
                        lower,
                        nocase: false,
                        negated,
                        offset: 0,
                        depth: None,
                        distance: None,
                        within: None,
                        startswith: false,
                        endswith: false,
                        fast_pattern: false,
                    }),
                ));
            }
            "nocase" => last_content_of(&mut list, key)?.nocase = true,
            "depth" => {
                let n = parse_u32(need_value(val, key)?, "depth")?;
                last_content_of(&mut list, key)?.depth = Some(n)
            }
            "offset" => {
                let n = parse_u32(need_value(val, key)?, "offset")?;
                last_content_of(&mut list, key)?.offset = n
            }
            "distance" => {
                let n = need_value(val, key)?
                    .parse::<i32>()
                    .or_else(|_| skip("unsupported: distance with a variable"))?;
                last_content_of(&mut list, key)?.distance = Some(n)
            }
            "within" => {
                let n = need_value(val, key)?
                    .parse::<u32>()
                    .or_else(|_| skip("unsupported: within with a variable"))?;
                last_content_of(&mut list, key)?.within = Some(n)
            }
            "bsize" => {
                let c = Cmp::parse(need_value(val, key)?)
                    .ok_or_else(|| Skip("syntax: bad bsize".into()))?;
                list.push((sticky, Matcher::Bsize(c)));
            }
            "urilen" => {
                let v = need_value(val, key)?;
                let v = v.split(',').next().unwrap_or(v);
                let c = Cmp::parse(v).ok_or_else(|| Skip("syntax: bad urilen".into()))?;
                list.push((Buffer::HttpUri, Matcher::Bsize(c)));
            }
            "isdataat" => {
                let v = need_value(val, key)?;
                let (negated, v) = match v.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, v),
                };
                let mut parts = v.split(',');
                let n = parse_u32(parts.next().unwrap_or(""), "isdataat")?;
                let mut relative = false;
                for p in parts {
                    match p.trim() {
                        "relative" => relative = true,
                        "rawbytes" => {}
                        _ => return skip("syntax: bad isdataat"),
                    }
                }
                list.push((
                    sticky,
                    Matcher::IsDataAt {
                        n,
                        relative,
                        negated,
                    },
                ));
            }
            "dotprefix" => {
                if !matches!(sticky, Buffer::DnsQuery | Buffer::TlsSni | Buffer::HttpHost) {
                    return skip("syntax: dotprefix outside a name buffer");
                }
                if list.iter().any(|(b, _)| *b == sticky) {
                    return skip("syntax: dotprefix after a match in its buffer");
                }
                list.push((sticky, Matcher::DotPrefix));
            }
            "startswith" => last_content_of(&mut list, key)?.startswith = true,
            "endswith" => last_content_of(&mut list, key)?.endswith = true,
            "fast_pattern" => {
                // `fast_pattern`, `fast_pattern:only`, `fast_pattern:o,l`:
                // the whole content is used (a superset test of the chop).
                last_content_of(&mut list, key)?.fast_pattern = true
            }
            "rawbytes" => {
                last_content_of(&mut list, key)?;
            }
            "pcre" => {
                let p = pcre::compile(need_value(val, key)?).map_err(Skip)?;
                let buf = p.buffer.unwrap_or(sticky);
                list.push((buf, Matcher::Pcre(p)));
            }
            "flow" => {
                for part in need_value(val, key)?.split(',') {
                    match part.trim() {
                        "to_server" | "from_client" => sig.flow.to_server = Some(true),
                        "to_client" | "from_server" => sig.flow.to_server = Some(false),
                        "established" => sig.flow.established = Some(true),
                        "not_established" => sig.flow.established = Some(false),
                        "stateless" => {}
                        other => return skip(format!("unsupported flow option: {other}")),
                    }
                }
            }
            "flags" | "tcp.flags" => sig.flags = Some(parse_flags(need_value(val, key)?)?),
            "dsize" => {
                sig.dsize = Some(
                    Cmp::parse(need_value(val, key)?)
                        .ok_or_else(|| Skip("syntax: bad dsize".into()))?,
                )
            }
            "itype" => {
                sig.itype = Some(
                    Cmp::parse(need_value(val, key)?)
                        .ok_or_else(|| Skip("syntax: bad itype".into()))?,
                )
            }
            "icode" => {
                sig.icode = Some(
                    Cmp::parse(need_value(val, key)?)
                        .ok_or_else(|| Skip("syntax: bad icode".into()))?,
                )
            }
            "threshold" => sig.threshold = Some(parse_threshold(need_value(val, key)?, false)?),
            "detection_filter" => {
                sig.detection_filter = Some(parse_threshold(need_value(val, key)?, true)?)
            }
            k => {
                if val.is_none() {
                    if let Some(b) = Buffer::from_sticky(k) {
                        sticky = b;
                        continue;
                    }
                    if let Some(b) = Buffer::from_modifier(k) {
                        match list.last_mut() {
                            Some((buf, Matcher::Content(_))) => *buf = b,
                            _ => return skip(format!("syntax: {k} without a content")),
                        }
                        continue;
                    }
                }
                return skip(format!("unsupported keyword: {k}"));
            }
        }
    }
    if !has_sid {
        return skip("syntax: no sid");
    }
    if let Some(ct) = &sig.classtype {
        match classtype_priority(ct) {
            Some(p) if !has_priority => sig.priority = p,
            Some(_) => {}
            None => return skip("unknown classtype"),
        }
    }
    // Protocol / option consistency.
    let l4_ok = |p: &[Proto]| p.contains(&sig.proto);
    if sig.flags.is_some() && !l4_ok(&[Proto::Ip, Proto::Tcp, Proto::TcpPkt, Proto::TcpStream]) {
        return skip("syntax: flags on a non-TCP rule");
    }
    if (sig.itype.is_some() || sig.icode.is_some()) && !l4_ok(&[Proto::Ip, Proto::Icmp]) {
        return skip("syntax: itype/icode on a non-ICMP rule");
    }
    // Group by buffer, keeping rule order within each buffer.
    let mut groups: Vec<(Buffer, Vec<Matcher>)> = Vec::new();
    for (b, m) in list {
        match groups.iter_mut().find(|(gb, _)| *gb == b) {
            Some((_, v)) => v.push(m),
            None => groups.push((b, vec![m])),
        }
    }
    for (b, ms) in &groups {
        let first = ms.iter().find(|m| !matches!(m, Matcher::DotPrefix));
        if let Some(Matcher::Content(c)) = first {
            if c.relative() {
                return skip(format!(
                    "syntax: first content in {b:?} is relative (distance/within)"
                ));
            }
        }
    }
    // Buffers must agree with the rule's protocol.
    sig.buffers = groups;
    let app = sig.app_proto();
    for (b, _) in &sig.buffers {
        let need = match b {
            Buffer::Payload => None,
            Buffer::TlsSni => Some(AppProto::Tls),
            Buffer::DnsQuery => Some(AppProto::Dns),
            _ => Some(AppProto::Http),
        };
        if need.is_some() && need != app {
            return skip("syntax: buffers of two app protocols");
        }
    }
    if app.is_some()
        && !matches!(
            sig.proto,
            Proto::Ip | Proto::Tcp | Proto::Udp | Proto::Http | Proto::Tls | Proto::Dns
        )
    {
        return skip("syntax: app-layer buffer on a packet protocol");
    }
    sig.fast = pick_fast(&sig.buffers);
    Ok(sig)
}

/// The fast pattern: an explicit `fast_pattern` content, else the longest
/// positive content (Suricata prefers http buffers only through its own
/// scoring; longest is the usual choice and keeps the candidate set small).
fn pick_fast(groups: &[(Buffer, Vec<Matcher>)]) -> Option<(Buffer, Vec<u8>)> {
    let mut best: Option<(Buffer, &Content)> = None;
    for (b, ms) in groups {
        for m in ms {
            if let Matcher::Content(c) = m {
                if c.negated {
                    continue;
                }
                if c.fast_pattern {
                    return Some((*b, c.lower.clone()));
                }
                if best.is_none_or(|(_, bc)| c.pattern.len() > bc.pattern.len()) {
                    best = Some((*b, c));
                }
            }
        }
    }
    best.map(|(b, c)| (b, c.lower.clone()))
}

/// Suricata's classification.config (the file shipped with Suricata 7 and ET
/// Open): classtype -> (description, priority).
pub const CLASSTYPES: &[(&str, &str, u8)] = &[
    ("not-suspicious", "Not Suspicious Traffic", 3),
    ("unknown", "Unknown Traffic", 3),
    ("bad-unknown", "Potentially Bad Traffic", 2),
    ("attempted-recon", "Attempted Information Leak", 2),
    ("successful-recon-limited", "Information Leak", 2),
    (
        "successful-recon-largescale",
        "Large Scale Information Leak",
        2,
    ),
    ("attempted-dos", "Attempted Denial of Service", 2),
    ("successful-dos", "Denial of Service", 2),
    ("attempted-user", "Attempted User Privilege Gain", 1),
    ("unsuccessful-user", "Unsuccessful User Privilege Gain", 1),
    ("successful-user", "Successful User Privilege Gain", 1),
    (
        "attempted-admin",
        "Attempted Administrator Privilege Gain",
        1,
    ),
    (
        "successful-admin",
        "Successful Administrator Privilege Gain",
        1,
    ),
    ("rpc-portmap-decode", "Decode of an RPC Query", 2),
    ("shellcode-detect", "Executable code was detected", 1),
    ("string-detect", "A suspicious string was detected", 3),
    (
        "suspicious-filename-detect",
        "A suspicious filename was detected",
        2,
    ),
    (
        "suspicious-login",
        "An attempted login using a suspicious username was detected",
        2,
    ),
    ("system-call-detect", "A system call was detected", 2),
    ("tcp-connection", "A TCP connection was detected", 4),
    ("trojan-activity", "A Network Trojan was detected", 1),
    (
        "unusual-client-port-connection",
        "A client was using an unusual port",
        2,
    ),
    ("network-scan", "Detection of a Network Scan", 3),
    (
        "denial-of-service",
        "Detection of a Denial of Service Attack",
        2,
    ),
    (
        "non-standard-protocol",
        "Detection of a non-standard protocol or event",
        2,
    ),
    (
        "protocol-command-decode",
        "Generic Protocol Command Decode",
        3,
    ),
    (
        "web-application-activity",
        "access to a potentially vulnerable web application",
        2,
    ),
    ("web-application-attack", "Web Application Attack", 1),
    ("misc-activity", "Misc activity", 3),
    ("misc-attack", "Misc Attack", 2),
    ("icmp-event", "Generic ICMP event", 3),
    (
        "inappropriate-content",
        "Inappropriate Content was Detected",
        1,
    ),
    (
        "policy-violation",
        "Potential Corporate Privacy Violation",
        1,
    ),
    (
        "default-login-attempt",
        "Attempt to login by a default username and password",
        2,
    ),
    (
        "targeted-activity",
        "Targeted Malicious Activity was Detected",
        1,
    ),
    ("exploit-kit", "Exploit Kit Activity Detected", 1),
    (
        "external-ip-check",
        "Device Retrieving External IP Address Detected",
        2,
    ),
    ("domain-c2", "Domain Observed Used for C2 Detected", 1),
    ("pup-activity", "Possibly Unwanted Program Detected", 2),
    (
        "credential-theft",
        "Successful Credential Theft Detected",
        1,
    ),
    (
        "social-engineering",
        "Possible Social Engineering Attempted",
        2,
    ),
    ("coin-mining", "Crypto Currency Mining Activity Detected", 2),
    (
        "command-and-control",
        "Malware Command and Control Activity Detected",
        1,
    ),
];

/// The priority of a classtype.
pub fn classtype_priority(ct: &str) -> Option<u8> {
    CLASSTYPES.iter().find(|c| c.0 == ct).map(|c| c.2)
}

/// The description (EVE `alert.category`) of a classtype.
pub fn classtype_name(ct: &str) -> Option<&'static str> {
    CLASSTYPES.iter().find(|c| c.0 == ct).map(|c| c.1)
}

#[cfg(test)]
mod tests;
