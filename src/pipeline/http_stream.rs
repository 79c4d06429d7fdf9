//! Framing an HTTP/1 client byte stream into requests, so that every request
//! on a keep-alive connection can be decided by its own Host (see the
//! [`super::l7`] module docs), not only the first.
//!
//! [`HttpFramer::feed`] takes the client's bytes in order and reports the
//! Host of every request whose header block they complete. Between header
//! blocks it skips the request bodies by their framing (RFC 9112 §6):
//! `Transfer-Encoding: chunked` (chunk sizes, chunk data, trailers), else
//! `Content-Length`, else no body. Body bytes are counted, never kept; only
//! an unfinished header block, chunk-size line or trailer is buffered, at
//! most [`MAX_LINE_BYTES`]. Empty lines before a request line are skipped,
//! as servers do.
//!
//! What it cannot frame ends the reading, so nothing after it is taken for
//! a request the rules saw:
//! - bytes that are not an HTTP request where one must start, a header
//!   block or trailer over the bound, a malformed chunk, or a
//!   `Transfer-Encoding` whose last coding is not `chunked` (the body has
//!   no length a server would agree on): [`End::Unframed`];
//! - the same after a request that asked to switch protocols (`Upgrade`,
//!   or `CONNECT`): the server switched (WebSocket frames, a tunnel), and
//!   what follows is not HTTP: [`End::Switched`]. If what follows parses as
//!   a request, it is one (a server that ignored the switch reads it as
//!   one), and it is reported like any other.

use crate::ids::app::{self, HttpParse};

/// The most bytes buffered for one header block, chunk-size line or
/// trailer block (as the first request's bound, `l7::MAX_CLIENT_BYTES`).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Where the framer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or in) a request's header block.
    Header,
    /// In a body of known length: bytes left.
    Body(u64),
    /// At (or in) a chunk-size line.
    ChunkSize,
    /// In a chunk's data: bytes left.
    ChunkData(u64),
    /// After a chunk's data: CR LF expected (bytes of it seen).
    ChunkEnd(u8),
    /// In the trailer section after the last chunk.
    Trailer,
    /// Reading ended (see [`End`]).
    Done(End),
}

/// Why the reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The bytes cannot be framed as requests: decide them with no name.
    Unframed,
    /// The connection switched protocols after an accepted request: what
    /// follows is not HTTP.
    Switched,
}

/// What one [`HttpFramer::feed`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// The Host (lowercased, without port) of every request whose header
    /// block was completed, in order; `None`: a request without Host.
    pub requests: Vec<Option<Vec<u8>>>,
    /// Set when the reading ended with these bytes.
    pub end: Option<End>,
}

/// The framing state of one client stream.
#[derive(Debug)]
pub struct HttpFramer {
    state: State,
    /// The unfinished header block, chunk-size line or trailer.
    buf: Vec<u8>,
    /// The last request asked to switch protocols.
    switch_asked: bool,
    /// Bytes of the trailer section so far.
    trailer: usize,
}

impl Default for HttpFramer {
    fn default() -> Self {
        HttpFramer::new()
    }
}

impl HttpFramer {
    /// A framer at the start of a request.
    pub fn new() -> HttpFramer {
        HttpFramer {
            state: State::Header,
            buf: Vec::new(),
            switch_asked: false,
            trailer: 0,
        }
    }

    /// Bytes buffered (an unfinished header block, line or trailer).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the reading has ended.
    pub fn ended(&self) -> Option<End> {
        match self.state {
            State::Done(e) => Some(e),
            _ => None,
        }
    }

    /// Reads the next client bytes (in stream order).
    pub fn feed(&mut self, mut data: &[u8]) -> Fed {
        let mut fed = Fed::default();
        while !data.is_empty() {
            match self.state {
                State::Done(_) => break,
                State::Body(n) | State::ChunkData(n) => {
                    let k = data.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    data = data.get(k..).unwrap_or(&[]);
                    let left = n - k as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Header,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkEnd(0),
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkEnd(seen) => {
                    let (b, rest) = data.split_first().unwrap_or((&0, &[]));
                    data = rest;
                    self.state = match (seen, *b) {
                        (0, b'\r') => State::ChunkEnd(1),
                        (_, b'\n') => State::ChunkSize,
                        _ => State::Done(End::Unframed),
                    };
                }
                State::Header => {
                    if self.buf.is_empty() {
                        // empty lines before a request line are skipped
                        let skip = data
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        data = data.get(skip..).unwrap_or(&[]);
                        if data.is_empty() {
                            break;
                        }
                    }
                    data = self.header(data, &mut fed);
                }
                State::ChunkSize | State::Trailer => data = self.line(data),
            }
        }
        fed.end = self.ended();
        fed
    }

    /// Appends to the buffered header block and, once it is complete,
    /// reports the request and moves to its body. Returns the bytes after
    /// the block (none while it is incomplete).
    fn header<'a>(&mut self, data: &'a [u8], fed: &mut Fed) -> &'a [u8] {
        let had = self.buf.len();
        let room = MAX_LINE_BYTES.saturating_sub(had);
        let take = data.len().min(room);
        self.buf.extend_from_slice(data.get(..take).unwrap_or(&[]));
        match app::parse_http_request(&self.buf) {
            HttpParse::Request(req, consumed) => {
                let used = consumed.saturating_sub(had);
                let rest = data.get(used..).unwrap_or(&[]);
                let framing = body_framing(&req.headers, req.body_len);
                let switch = req.method.eq_ignore_ascii_case(b"CONNECT")
                    || header_value(&req.headers, b"upgrade").is_some();
                fed.requests.push(req.host);
                self.buf.clear();
                self.switch_asked = switch;
                self.state = framing;
                rest
            }
            HttpParse::Incomplete if self.buf.len() < MAX_LINE_BYTES => &[],
            HttpParse::Incomplete | HttpParse::Invalid => {
                self.buf.clear();
                self.state = State::Done(if self.switch_asked {
                    End::Switched
                } else {
                    End::Unframed
                });
                &[]
            }
        }
    }

    /// A chunk-size line or a trailer line: buffered up to its LF, then
    /// acted on. Returns the bytes after the line.
    fn line<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Some(lf) = data.iter().position(|&b| b == b'\n') else {
            self.buf.extend_from_slice(data);
            if self.buf.len() > MAX_LINE_BYTES {
                self.buf.clear();
                self.state = State::Done(End::Unframed);
            }
            return &[];
        };
        self.buf.extend_from_slice(data.get(..lf).unwrap_or(&[]));
        let rest = data.get(lf + 1..).unwrap_or(&[]);
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        self.trailer += self.buf.len() + 1;
        self.state = match self.state {
            State::ChunkSize => match chunk_size(line) {
                Some(0) => {
                    self.trailer = 0;
                    State::Trailer
                }
                Some(n) => State::ChunkData(n),
                None => State::Done(End::Unframed),
            },
            // the trailer section ends with an empty line
            _ if line.is_empty() => State::Header,
            // and is bounded as a whole
            _ if self.trailer > MAX_LINE_BYTES => State::Done(End::Unframed),
            _ => State::Trailer,
        };
        self.buf.clear();
        rest
    }
}

/// How the body after a header block is framed.
fn body_framing(headers: &[u8], content_length: usize) -> State {
    match header_value(headers, b"transfer-encoding") {
        Some(te) => {
            let last = te.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                State::ChunkSize
            } else {
                State::Done(End::Unframed)
            }
        }
        None if content_length > 0 => State::Body(content_length as u64),
        None => State::Header,
    }
}

/// The value of header `name` in CRLF-separated header lines (the first one).
fn header_value<'a>(headers: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    headers.split(|&b| b == b'\n').find_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let colon = l.iter().position(|&b| b == b':')?;
        l.get(..colon)?
            .trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| l.get(colon + 1..).unwrap_or(&[]).trim_ascii())
    })
}

/// A chunk-size line's size (hex, before any `;` extension); `None`: not a
/// size (or one over 2^60).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(&[])
        .trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    let s = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    }

    fn hosts(f: &Fed) -> Vec<String> {
        f.requests
            .iter()
            .map(|h| {
                h.as_deref()
                    .map_or("-".into(), |h| String::from_utf8_lossy(h).into())
            })
            .collect()
    }

    #[test]
    fn pipelined_requests_and_bodies() {
        let mut s = get("a.example");
        // a body that looks like a request must be skipped, not read
        let body = get("evil.example");
        s.extend_from_slice(
            format!(
                "POST /x HTTP/1.1\r\nHost: b.example\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(&body);
        s.extend_from_slice(b"\r\n"); // a stray empty line (old clients)
        s.extend_from_slice(
            b"POST /c HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              5;ext=1\r\nHost:\r\n",
        );
        let inner = get("x.example");
        s.extend_from_slice(format!("{:X}\r\n", inner.len()).as_bytes());
        s.extend_from_slice(&inner);
        s.extend_from_slice(b"\r\n0\r\nTrailer: y\r\n\r\n");
        s.extend_from_slice(b"GET / HTTP/1.1\r\nhost: D.Example:8080\r\n\r\n");
        s.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let want = ["a.example", "b.example", "c.example", "d.example", "-"];
        // whole, and byte by byte: the same requests
        let mut f = HttpFramer::new();
        let fed = f.feed(&s);
        assert_eq!(hosts(&fed), want);
        assert_eq!((fed.end, f.buffered()), (None, 0));
        let mut f = HttpFramer::new();
        let mut all = Vec::new();
        for b in &s {
            let fed = f.feed(std::slice::from_ref(b));
            assert_eq!(fed.end, None);
            all.extend(hosts(&fed));
        }
        assert_eq!(all, want);
    }

    #[test]
    fn what_cannot_be_framed_ends_the_reading() {
        for tail in [
            &b"\x16\x03\x01 not http"[..],
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nbody",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        ] {
            let mut s = get("a.example");
            s.extend_from_slice(tail);
            let mut f = HttpFramer::new();
            let fed = f.feed(&s);
            assert_eq!(
                fed.end,
                Some(End::Unframed),
                "{:?}",
                String::from_utf8_lossy(tail)
            );
            // nothing is read after the end
            assert_eq!(
                f.feed(&get("b.example")),
                Fed {
                    requests: vec![],
                    end: Some(End::Unframed)
                }
            );
        }
        // a header block over the bound
        let mut f = HttpFramer::new();
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_LINE_BYTES + 10, b'a');
        assert_eq!(f.feed(&big).end, Some(End::Unframed));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn after_a_switch_only_requests_are_read() {
        for first in [
            "GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        ] {
            // the server switched: frames or a tunnel follow
            let mut f = HttpFramer::new();
            let fed = f.feed(first.as_bytes());
            assert_eq!(hosts(&fed), ["a.example"]);
            assert_eq!(f.feed(b"\x81\x85\x37\xfa\x21\x3d").end, Some(End::Switched));
            // the server ignored the switch: the next request is read
            let mut f = HttpFramer::new();
            f.feed(first.as_bytes());
            assert_eq!(hosts(&f.feed(&get("evil.example"))), ["evil.example"]);
        }
    }
}
