//! App-layer parsers feeding the sticky buffers: HTTP/1 requests, the TLS
//! ClientHello SNI, DNS queries. Pure functions over bytes; never panic.
//!
//! - HTTP/1.x (RFC 9112 §3, §5): request line `METHOD SP target SP
//!   HTTP/x.y CRLF`, header fields up to the empty line. Bare LF line ends are
//!   accepted (as servers do). Header blocks over [`MAX_HTTP_HEADER`] are
//!   refused. `http.header` is the header block as received minus the request
//!   line (Suricata normalises; ours is the raw block, CRLF separated).
//! - TLS (RFC 8446 §4.1.2, RFC 6066 §3): the handshake message is collected
//!   across TLS records (a ClientHello may span several), then the
//!   server_name extension's first host_name.
//! - DNS (RFC 1035 §4.1): questions of a query message; names as dotted
//!   text without the final dot (Suricata's `dns.query`), compression
//!   pointers refused in questions (RFC 1035 allows them; queries don't use
//!   them). Over TCP each message has a 2-byte length prefix (RFC 1035 §4.2.2).

/// Largest HTTP request header block parsed (Suricata's default
/// `request-body-limit` is 100 KiB; headers beyond 64 KiB are refused by
/// common servers such as nginx's `large_client_header_buffers` 4×8 KiB).
pub const MAX_HTTP_HEADER: usize = 64 * 1024;
/// Largest ClientHello collected (TLS handshake messages may be up to 2^24,
/// real ClientHellos with post-quantum key shares are under 4 KiB).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// One parsed HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Vec<u8>,
    pub uri: Vec<u8>,
    pub request_line: Vec<u8>,
    pub host: Option<Vec<u8>>,
    pub user_agent: Option<Vec<u8>>,
    pub cookie: Option<Vec<u8>>,
    pub referer: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
    /// Header lines, each ending in CRLF (request line excluded).
    pub headers: Vec<u8>,
    /// Content-Length of the body (0 when absent).
    pub body_len: usize,
}

/// Outcome of parsing the start of `data` as an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpParse {
    /// A request whose header block is `consumed` bytes long.
    Request(Box<HttpRequest>, usize),
    /// More data needed.
    Incomplete,
    /// Not HTTP.
    Invalid,
}

const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
];

/// True when `data` starts like an HTTP request (for app-proto detection).
pub fn looks_like_http(data: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| data.len() > m.len() && data.starts_with(m) && data.get(m.len()) == Some(&b' '))
}

fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    // Returns (end of last header line, end of block).
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            match data.get(i + 1) {
                Some(b'\n') => return Some((i + 1, i + 2)),
                Some(b'\r') if data.get(i + 2) == Some(&b'\n') => return Some((i + 1, i + 3)),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |p| p + 1);
    v.get(s..e).unwrap_or(&[])
}

/// Parses one HTTP request header block at the start of `data`.
pub fn parse_http_request(data: &[u8]) -> HttpParse {
    if !looks_like_http(data) {
        // Not yet enough to tell, or not HTTP.
        let short = data.len() < 8
            && METHODS
                .iter()
                .any(|m| m.starts_with(data) || data.starts_with(m));
        return if short {
            HttpParse::Incomplete
        } else {
            HttpParse::Invalid
        };
    }
    let Some((last_line_end, consumed)) = find_header_end(data) else {
        return if data.len() > MAX_HTTP_HEADER {
            HttpParse::Invalid
        } else {
            HttpParse::Incomplete
        };
    };
    let block = data.get(..last_line_end).unwrap_or(&[]);
    let mut lines = block
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(rl) = lines.next() else {
        return HttpParse::Invalid;
    };
    let mut parts = rl.splitn(3, |&c| c == b' ');
    let (Some(method), Some(uri)) = (parts.next(), parts.next()) else {
        return HttpParse::Invalid;
    };
    let mut req = HttpRequest {
        method: method.to_vec(),
        uri: uri.to_vec(),
        request_line: rl.to_vec(),
        ..HttpRequest::default()
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        req.headers.extend_from_slice(line);
        req.headers.extend_from_slice(b"\r\n");
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = trim(line.get(..colon).unwrap_or(&[]));
        let value = trim(line.get(colon + 1..).unwrap_or(&[])).to_vec();
        let slot = if name.eq_ignore_ascii_case(b"host") {
            &mut req.host
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            &mut req.user_agent
        } else if name.eq_ignore_ascii_case(b"cookie") {
            &mut req.cookie
        } else if name.eq_ignore_ascii_case(b"referer") {
            &mut req.referer
        } else if name.eq_ignore_ascii_case(b"content-type") {
            &mut req.content_type
        } else {
            if name.eq_ignore_ascii_case(b"content-length") {
                req.body_len = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            continue;
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    // Suricata's http.host is the host without a port, lowercased.
    if let Some(h) = &mut req.host {
        let no_port = match h.iter().rposition(|&c| c == b':') {
            Some(p) if !h.contains(&b']') || h.get(p.saturating_sub(1)) == Some(&b']') => {
                h.get(..p).unwrap_or(&[]).to_vec()
            }
            _ => h.clone(),
        };
        *h = no_port.to_ascii_lowercase();
    }
    HttpParse::Request(Box::new(req), consumed)
}

/// Outcome of looking for a ClientHello's SNI in the start of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsParse {
    /// The ClientHello was parsed; `Some(sni)` if it named a host.
    Done(Option<Vec<u8>>),
    Incomplete,
    Invalid,
}

/// True when `data` starts like a TLS handshake record.
pub fn looks_like_tls(data: &[u8]) -> bool {
    matches!(data, [0x16, 0x03, 0..=0x04, ..])
}

/// Collects the first handshake message across records and extracts the SNI.
pub fn parse_client_hello(stream: &[u8]) -> TlsParse {
    let mut hs = Vec::new();
    let mut pos = 0;
    loop {
        let Some(hdr) = stream.get(pos..pos + 5) else {
            return TlsParse::Incomplete;
        };
        if hdr[0] != 0x16 || hdr[1] != 0x03 {
            return TlsParse::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        let Some(body) = stream.get(pos + 5..pos + 5 + len) else {
            // Use what is there if the message is already complete.
            if let Some(part) = stream.get(pos + 5..) {
                let mut tmp = hs.clone();
                tmp.extend_from_slice(part);
                if let Some(r) = client_hello_sni(&tmp) {
                    return TlsParse::Done(r);
                }
            }
            return TlsParse::Incomplete;
        };
        hs.extend_from_slice(body);
        pos += 5 + len;
        if let Some(r) = client_hello_sni(&hs) {
            return TlsParse::Done(r);
        }
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return TlsParse::Invalid;
            }
            let mlen = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if mlen > MAX_CLIENT_HELLO || hs.len() >= 4 + mlen {
                return TlsParse::Invalid;
            }
        }
    }
}

/// SNI from a complete ClientHello handshake message (`None` if incomplete).
fn client_hello_sni(hs: &[u8]) -> Option<Option<Vec<u8>>> {
    let (&ty, rest) = hs.split_first()?;
    if ty != 1 {
        return Some(None);
    }
    let len = usize::from(*rest.first()?) << 16
        | usize::from(*rest.get(1)?) << 8
        | usize::from(*rest.get(2)?);
    let body = rest.get(3..3 + len)?;
    Some(sni_from_body(body))
}

fn sni_from_body(b: &[u8]) -> Option<Vec<u8>> {
    // version(2) random(32)
    let mut p = 34;
    let sid_len = usize::from(*b.get(p)?);
    p += 1 + sid_len;
    let cs_len = usize::from(u16::from_be_bytes([*b.get(p)?, *b.get(p + 1)?]));
    p += 2 + cs_len;
    let cm_len = usize::from(*b.get(p)?);
    p += 1 + cm_len;
    let ext_len = usize::from(u16::from_be_bytes([*b.get(p)?, *b.get(p + 1)?]));
    p += 2;
    let exts = b.get(p..p + ext_len)?;
    let mut q = 0;
    while q + 4 <= exts.len() {
        let ty = u16::from_be_bytes([exts[q], exts[q + 1]]);
        let l = usize::from(u16::from_be_bytes([exts[q + 2], exts[q + 3]]));
        let data = exts.get(q + 4..q + 4 + l)?;
        if ty == 0 {
            // server_name_list: len(2), then name_type(1) len(2) name.
            let mut r = 2;
            while r + 3 <= data.len() {
                let nt = data[r];
                let nl = usize::from(u16::from_be_bytes([data[r + 1], data[r + 2]]));
                let name = data.get(r + 3..r + 3 + nl)?;
                if nt == 0 {
                    return Some(name.to_vec());
                }
                r += 3 + nl;
            }
            return None;
        }
        q += 4 + l;
    }
    None
}

/// The question names of a DNS message (UDP payload, no length prefix).
/// Empty when the message is not a well-formed query.
pub fn dns_queries(msg: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Some(h) = msg.get(..12) else {
        return out;
    };
    let qr = h[2] & 0x80 != 0;
    let qd = u16::from_be_bytes([h[4], h[5]]);
    if qr || qd == 0 || qd > 16 {
        return out;
    }
    let mut p = 12;
    for _ in 0..qd {
        let mut name = Vec::new();
        loop {
            let Some(&l) = msg.get(p) else {
                return Vec::new();
            };
            p += 1;
            if l == 0 {
                break;
            }
            if l & 0xc0 != 0 {
                // Compression pointer or reserved label type in a question.
                return Vec::new();
            }
            let Some(label) = msg.get(p..p + usize::from(l)) else {
                return Vec::new();
            };
            if !name.is_empty() {
                name.push(b'.');
            }
            name.extend_from_slice(label);
            p += usize::from(l);
            if name.len() > 255 {
                return Vec::new();
            }
        }
        // qtype, qclass
        if msg.get(p..p + 4).is_none() {
            return Vec::new();
        }
        p += 4;
        out.push(name);
    }
    out
}

/// What a client's first bytes say about the flow's name (for the
/// firewall's L7 rule fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstName {
    /// A TLS ClientHello's server_name.
    Sni(Vec<u8>),
    /// An HTTP/1 request's Host (lowercased, without port).
    Host(Vec<u8>),
    /// A DNS query's first question name.
    Qname(Vec<u8>),
    /// The bytes are not TLS/HTTP/DNS, or carry no name (a ClientHello
    /// without SNI, a request without Host, a DNS response).
    None,
    /// More bytes are needed to tell.
    Incomplete,
}

/// The name in the first bytes a client sent on a TCP stream: a TLS
/// ClientHello (first byte 0x16), an HTTP/1 request (a known method), else a
/// DNS message with its 2-byte length prefix (RFC 1035 §4.2.2) whose header
/// says "query" with 1..=16 questions. Recognised by content, on any port.
pub fn stream_first_name(stream: &[u8]) -> FirstName {
    let Some(&first) = stream.first() else {
        return FirstName::Incomplete;
    };
    if first == 0x16 {
        return match parse_client_hello(stream) {
            TlsParse::Done(Some(sni)) => FirstName::Sni(sni),
            TlsParse::Done(None) | TlsParse::Invalid => FirstName::None,
            TlsParse::Incomplete => FirstName::Incomplete,
        };
    }
    match parse_http_request(stream) {
        HttpParse::Request(req, _) => return req.host.map_or(FirstName::None, FirstName::Host),
        HttpParse::Incomplete => return FirstName::Incomplete,
        HttpParse::Invalid => {}
    }
    let Some(len) = stream
        .get(..2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
    else {
        return FirstName::Incomplete;
    };
    let msg = stream.get(2..).unwrap_or(&[]);
    // Each header field is checked as soon as it has arrived.
    let response = msg.get(2).is_some_and(|f| f & 0x80 != 0);
    let bad_qd = msg
        .get(4..6)
        .is_some_and(|q| !(1..=16).contains(&u16::from_be_bytes([q[0], q[1]])));
    if len < 12 || response || bad_qd {
        return FirstName::None;
    }
    match msg.get(..len) {
        Some(m) => datagram_first_name(m),
        None => FirstName::Incomplete,
    }
}

/// The name in a UDP datagram's payload: a DNS query's first question
/// name (DTLS and QUIC carry no plain-text name the parsers read).
pub fn datagram_first_name(payload: &[u8]) -> FirstName {
    dns_queries(payload)
        .into_iter()
        .next()
        .map_or(FirstName::None, FirstName::Qname)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn http_request() {
        let r = b"GET /a?b=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: curl/8\r\nX: y\r\n\r\nBODY";
        let HttpParse::Request(req, n) = parse_http_request(r) else {
            panic!()
        };
        assert_eq!(n, r.len() - 4);
        assert_eq!(req.method, b"GET");
        assert_eq!(req.uri, b"/a?b=1");
        assert_eq!(req.host.as_deref(), Some(&b"example.com"[..]));
        assert_eq!(req.user_agent.as_deref(), Some(&b"curl/8"[..]));
        assert!(req.headers.windows(6).any(|w| w == b"X: y\r\n"));
        assert_eq!(
            parse_http_request(b"GET / HTTP/1.1\r\nHost: a"),
            HttpParse::Incomplete
        );
        assert_eq!(parse_http_request(b"GE"), HttpParse::Incomplete);
        assert_eq!(
            parse_http_request(b"\x16\x03\x01\x00\x10garbage"),
            HttpParse::Invalid
        );
        let HttpParse::Request(req, _) =
            parse_http_request(b"POST /x HTTP/1.0\nContent-Length: 5\n\nhello")
        else {
            panic!()
        };
        assert_eq!(req.body_len, 5);
    }

    #[test]
    fn tls_sni_across_records() {
        let rec = crate::packet::synth::tls_client_hello("www.example.org");
        assert_eq!(
            parse_client_hello(&rec),
            TlsParse::Done(Some(b"www.example.org".to_vec()))
        );
        // Split the handshake message into two records.
        let hs = &rec[5..];
        let (a, b) = hs.split_at(20);
        let mut two = vec![0x16, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        assert_eq!(parse_client_hello(&two), TlsParse::Incomplete);
        two.extend_from_slice(&[0x16, 3, 1]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(
            parse_client_hello(&two),
            TlsParse::Done(Some(b"www.example.org".to_vec()))
        );
        assert_eq!(
            parse_client_hello(&rec[..rec.len() - 3]),
            TlsParse::Incomplete
        );
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), TlsParse::Invalid);
    }

    #[test]
    fn dns() {
        assert_eq!(
            dns_queries(&crate::packet::synth::dns_query("www.google.com")),
            vec![b"www.google.com".to_vec()]
        );
        let mut resp = crate::packet::synth::dns_query("a.b");
        resp[2] |= 0x80;
        assert!(dns_queries(&resp).is_empty());
        assert!(dns_queries(&crate::packet::synth::dns_query("a.b")[..14]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_http_request(&data);
            let _ = parse_client_hello(&data);
            let _ = dns_queries(&data);
        }
    }

    #[test]
    fn first_names() {
        let ch = crate::packet::synth::tls_client_hello("Blocked.Example.NET");
        assert_eq!(
            stream_first_name(&ch),
            FirstName::Sni(b"Blocked.Example.NET".to_vec())
        );
        assert_eq!(stream_first_name(&ch[..7]), FirstName::Incomplete);
        assert_eq!(
            stream_first_name(&ch[..ch.len() - 1]),
            FirstName::Incomplete
        );
        assert_eq!(stream_first_name(b""), FirstName::Incomplete);
        assert_eq!(
            stream_first_name(b"GET / HTTP/1.1\r\nHost: A.b:80\r\n"),
            FirstName::Incomplete
        );
        assert_eq!(
            stream_first_name(b"GET / HTTP/1.1\r\nHost: A.b:80\r\n\r\n"),
            FirstName::Host(b"a.b".to_vec())
        );
        assert_eq!(
            stream_first_name(b"GET / HTTP/1.0\r\n\r\n"),
            FirstName::None
        );
        let q = crate::packet::synth::dns_query("x.example.org");
        let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&q);
        assert_eq!(
            stream_first_name(&tcp),
            FirstName::Qname(b"x.example.org".to_vec())
        );
        assert_eq!(stream_first_name(&tcp[..9]), FirstName::Incomplete);
        assert_eq!(
            stream_first_name(&tcp[..tcp.len() - 1]),
            FirstName::Incomplete
        );
        assert_eq!(
            datagram_first_name(&q),
            FirstName::Qname(b"x.example.org".to_vec())
        );
        assert_eq!(datagram_first_name(b"hello"), FirstName::None);
        assert_eq!(
            stream_first_name(b"SSH-2.0-OpenSSH_9.6\r\n"),
            FirstName::None
        );
        let mut resp = tcp.clone();
        resp[4] |= 0x80;
        assert_eq!(stream_first_name(&resp), FirstName::None);
    }
}
