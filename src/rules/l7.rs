//! L7 name patterns for the rule fields `tls_sni`, `http_host` and
//! `dns_qname`, and the name a flow carries once its first payload is seen.
//!
//! # Names
//!
//! A flow's L7 name is the TLS ClientHello's `server_name` (RFC 6066 §3), the
//! HTTP/1 request's `Host` header without its port (RFC 9110 §7.2), or the
//! first question name of a DNS query (RFC 1035 §4.1.2). Before matching it
//! is *normalised*: ASCII letters lowercased (DNS names compare
//! case-insensitively, RFC 4343) and one trailing dot removed (`example.com.`
//! is the fully qualified `example.com`). Bytes that are not UTF-8 become
//! U+FFFD, which no exact or suffix pattern contains.
//!
//! # Patterns (each field is a list; any pattern matching is a match)
//!
//! - `name` — exact: the normalised name equals the normalised pattern
//!   (`Example.COM.` and `example.com` are the same pattern and match the
//!   same names).
//! - `*.suffix` — any name *strictly under* `suffix`: `*.example.net` matches
//!   `a.example.net` and `a.b.example.net`, not `example.net` itself nor
//!   `badexample.net`. Not matching the bare suffix follows the wildcard in
//!   certificates (RFC 6125 §6.4.3) and DNS (RFC 4592 §2.1.1); unlike them
//!   the `*` here spans any number of labels. List both `example.net` and
//!   `*.example.net` to cover the domain and everything under it.
//! - `~regex` — a regular expression (the `regex` crate's syntax: no
//!   backreferences or lookaround, linear-time matching) that must match the
//!   *whole* normalised name (it is anchored as `^(?:regex)$`) and is
//!   case-insensitive. `~(www\.)?example\.(com|net)` matches exactly those
//!   four names; write `~.*evil.*` for "contains evil".
//!
//! Invalid patterns (empty, whitespace, a `*` anywhere but a leading `*.`,
//! a bare `*`, an invalid or oversized regex) are rejected with a message
//! saying why ([`NamePattern::parse`]); the config names file and key.

use std::fmt;

/// A compiled regex may use at most this much memory (the `regex` crate's
/// compiled-program size limit): 1 MiB is far above any hostname pattern
/// (hostnames are at most 253 characters) and bounds what a config can cost.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest exact name or suffix accepted: a DNS name is at most 253
/// characters in text form (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_NAME: usize = 253;

/// Which L7 field a name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L7Kind {
    /// TLS ClientHello server_name.
    TlsSni,
    /// HTTP/1 Host header (without port).
    HttpHost,
    /// DNS query question name.
    DnsQname,
}

impl L7Kind {
    /// The rule key for this kind (`tls_sni`, `http_host`, `dns_qname`).
    pub fn key(self) -> &'static str {
        match self {
            L7Kind::TlsSni => "tls_sni",
            L7Kind::HttpHost => "http_host",
            L7Kind::DnsQname => "dns_qname",
        }
    }
}

/// A flow's L7 name, normalised (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Name {
    pub kind: L7Kind,
    pub name: String,
}

impl L7Name {
    /// Normalises raw name bytes from a packet.
    pub fn new(kind: L7Kind, raw: &[u8]) -> L7Name {
        L7Name {
            kind,
            name: normalise(&String::from_utf8_lossy(raw)),
        }
    }
}

impl fmt::Display for L7Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.key(), self.name)
    }
}

/// ASCII-lowercased, one trailing dot removed.
pub fn normalise(s: &str) -> String {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.to_ascii_lowercase()
}

#[derive(Debug, Clone)]
enum Kind {
    /// The normalised name.
    Exact(String),
    /// `.suffix` (normalised, with its leading dot).
    Suffix(String),
    Regex(regex::Regex),
}

/// One pattern of a `tls_sni` / `http_host` / `dns_qname` list.
#[derive(Debug, Clone)]
pub struct NamePattern {
    /// The pattern as written (for listings; equality compares this).
    source: String,
    kind: Kind,
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for NamePattern {}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl NamePattern {
    /// Parses `name`, `*.suffix` or `~regex` (see the module docs).
    pub fn parse(s: &str) -> Result<NamePattern, String> {
        let source = s.to_owned();
        if let Some(re) = s.strip_prefix('~') {
            if re.is_empty() {
                return Err("an empty regex after `~`; expected `~REGEX`".into());
            }
            let r = regex::RegexBuilder::new(&format!("^(?:{re})$"))
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("invalid regex: {}", one_line(&e.to_string())))?;
            return Ok(NamePattern {
                source,
                kind: Kind::Regex(r),
            });
        }
        let (suffix, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if s == "*" {
            return Err("a bare `*` is not a pattern; expected `*.suffix` (or omit the key to match every name)".into());
        }
        let name = normalise(rest);
        if name.is_empty() {
            return Err("an empty name; expected a name, `*.suffix` or `~regex`".into());
        }
        if name.len() > MAX_NAME {
            return Err(format!(
                "longer than {MAX_NAME} characters (a DNS name's limit)"
            ));
        }
        if name.contains('*') {
            return Err("`*` is only allowed as a leading `*.` (`*.example.net`); use `~regex` for other wildcards".into());
        }
        if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "contains {c:?}; expected a host name without spaces or control characters"
            ));
        }
        if name.starts_with('.') || name.contains("..") {
            return Err(
                "an empty label (`..` or a leading dot); expected a name like `example.net`".into(),
            );
        }
        let kind = if suffix {
            Kind::Suffix(format!(".{name}"))
        } else {
            Kind::Exact(name)
        };
        Ok(NamePattern { source, kind })
    }

    /// True when the normalised `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Exact(n) => n == name,
            // Strictly under: at least one character before the dot.
            Kind::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            Kind::Regex(r) => r.is_match(name),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A rule's L7 predicate lists: `None` is "not set".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameList(pub Vec<NamePattern>);

impl NameList {
    /// True when any pattern matches the normalised `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }
}

impl fmt::Display for NameList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|p| format!("{:?}", p.source)).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        NamePattern::parse(p)
            .unwrap()
            .matches(&L7Name::new(L7Kind::TlsSni, n.as_bytes()).name)
    }

    #[test]
    fn exact_is_case_insensitive_and_ignores_trailing_dot() {
        assert!(m("example.com", "example.com"));
        assert!(m("example.com", "EXAMPLE.Com"));
        assert!(m("example.com", "example.com."));
        assert!(m("Example.COM.", "example.com"));
        assert!(!m("example.com", "www.example.com"));
        assert!(!m("example.com", "example.co"));
        assert!(!m("example.com", "example.com.."));
    }

    #[test]
    fn suffix_is_strictly_under() {
        assert!(m("*.example.net", "a.example.net"));
        assert!(m("*.example.net", "a.b.example.net"));
        assert!(m("*.example.net", "A.EXAMPLE.NET."));
        assert!(m("*.Example.NET.", "x.example.net"));
        assert!(!m("*.example.net", "example.net"));
        assert!(!m("*.example.net", "example.net."));
        assert!(!m("*.example.net", "badexample.net"));
        assert!(!m("*.example.net", ".example.net.x"));
        assert!(!m("*.example.net", "example.net.evil.com"));
        // A name that is only the dot and the suffix has an empty label; it
        // is still "under" in the text sense but cannot come from DNS.
        assert!(m("*.example.net", "x.example.net"));
    }

    #[test]
    fn regex_is_anchored_and_case_insensitive() {
        assert!(m("~(www\\.)?example\\.(com|net)", "www.example.net"));
        assert!(m("~(www\\.)?example\\.(com|net)", "EXAMPLE.COM"));
        assert!(!m("~(www\\.)?example\\.(com|net)", "www.example.net.evil"));
        assert!(!m("~evil", "notevil.com"));
        assert!(m("~.*evil.*", "notevil.com"));
        assert!(m("~[a-z]+\\.test", "abc.test."));
    }

    #[test]
    fn invalid_patterns_say_why() {
        for (p, why) in [
            ("", "empty"),
            (".", "empty"),
            ("*", "bare"),
            ("*.", "empty"),
            ("a*.example.net", "leading"),
            ("*.*.example.net", "leading"),
            ("exa mple.net", "spaces"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("~", "empty regex"),
            ("~(unclosed", "invalid regex"),
            ("~a{99999}{99999}", "invalid regex"),
        ] {
            let e = NamePattern::parse(p).unwrap_err();
            assert!(e.contains(why), "{p:?}: {e}");
        }
        assert!(NamePattern::parse(&"a".repeat(254)).is_err());
        assert!(NamePattern::parse(&"a".repeat(253)).is_ok());
    }

    #[test]
    fn non_utf8_names_match_no_plain_pattern() {
        let n = L7Name::new(L7Kind::HttpHost, b"ex\xffample.com");
        assert!(!NamePattern::parse("example.com").unwrap().matches(&n.name));
        assert!(!NamePattern::parse("*.com").unwrap().matches("\u{fffd}"));
        assert!(NamePattern::parse("*.com").unwrap().matches(&n.name));
    }
}
