//! `pcre:"/re/flags"` compiled with the `regex` crate (byte mode, no Unicode).
//!
//! The `regex` crate guarantees linear-time matching and so lacks the PCRE
//! features that need backtracking. Those are detected before compiling and
//! the rule is refused with the named feature (never approximated):
//! backreferences (`\1`, `\k<n>`, `(?P=n)`), lookahead/lookbehind, atomic
//! groups `(?>`, possessive quantifiers (`*+ ++ ?+ }+`), conditionals `(?(`,
//! recursion/subroutines (`(?R` `(?1` `(?&`), `\G`, `\K`, backtracking verbs
//! `(*...)`, and `\Z`. Anything else the regex parser refuses is reported as
//! "pcre: regex syntax".
//!
//! Flags (Suricata's `detect-pcre.c`): `i s m x` map to regex flags, `A`
//! anchors, `E` is the regex default (`$` is end of data), `G` swaps greed,
//! `R` is relative to the previous match; `U H M W V` pick the http.uri,
//! http.header, http.method, http.host and http.user_agent buffers. Other
//! flags (raw/body/cookie buffers, `O`...) refuse the rule.

use super::Buffer;
use regex::bytes::{Regex, RegexBuilder};

/// A compiled pcre option.
#[derive(Debug, Clone)]
pub struct Pcre {
    pub re: Regex,
    pub negated: bool,
    pub relative: bool,
    /// A buffer chosen by a flag (`U`, `H`...).
    pub buffer: Option<Buffer>,
}

/// Compiled-size limit per regex: 1 MiB (regex's default is 10 MiB; ET
/// patterns compile to well under 100 KiB, and 2,400 of them must fit in memory).
const SIZE_LIMIT: usize = 1 << 20;

/// Parses and compiles a pcre value (the text after `pcre:`, with quotes).
pub fn compile(value: &str) -> Result<Pcre, String> {
    let v = value.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim_start()),
        None => (false, v),
    };
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .ok_or("pcre: value not quoted")?;
    let v = v.strip_prefix('/').ok_or("pcre: missing leading /")?;
    let end = v.rfind('/').ok_or("pcre: missing closing /")?;
    let (pat, flags) = (&v[..end], &v[end + 1..]);
    // Suricata unescapes \" and \; inside the quoted value.
    let pat = pat.replace("\\\"", "\"").replace("\\;", ";");
    check_features(&pat)?;
    let mut b = RegexBuilder::new(&pat);
    b.unicode(false).size_limit(SIZE_LIMIT);
    let mut relative = false;
    let mut buffer = None;
    let mut anchored = false;
    for f in flags.chars() {
        match f {
            'i' => {
                b.case_insensitive(true);
            }
            's' => {
                b.dot_matches_new_line(true);
            }
            'm' => {
                b.multi_line(true);
            }
            'x' => {
                b.ignore_whitespace(true);
            }
            'G' => {
                b.swap_greed(true);
            }
            'E' => {}
            'A' => anchored = true,
            'R' => relative = true,
            'U' => buffer = Some(Buffer::HttpUri),
            'H' => buffer = Some(Buffer::HttpHeader),
            'M' => buffer = Some(Buffer::HttpMethod),
            'W' => buffer = Some(Buffer::HttpHost),
            'V' => buffer = Some(Buffer::HttpUserAgent),
            other => return Err(format!("pcre: flag {other}")),
        }
    }
    let re = if anchored {
        let mut b2 = RegexBuilder::new(&format!("\\A(?:{pat})"));
        b2.unicode(false).size_limit(SIZE_LIMIT);
        for f in flags.chars() {
            match f {
                'i' => {
                    b2.case_insensitive(true);
                }
                's' => {
                    b2.dot_matches_new_line(true);
                }
                'm' => {
                    b2.multi_line(true);
                }
                'x' => {
                    b2.ignore_whitespace(true);
                }
                'G' => {
                    b2.swap_greed(true);
                }
                _ => {}
            }
        }
        b2.build()
    } else {
        b.build()
    };
    let re = re.map_err(|e| match e {
        regex::Error::CompiledTooBig(_) => "pcre: compiled regex too big".to_string(),
        _ => "pcre: regex syntax".to_string(),
    })?;
    Ok(Pcre {
        re,
        negated,
        relative,
        buffer,
    })
}

/// Finds PCRE-only features; returns the reason to report.
fn check_features(p: &str) -> Result<(), String> {
    let b = p.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'\\' {
            match next {
                Some(d @ b'1'..=b'9') if !in_class => {
                    let _ = d;
                    return Err("pcre: backreference".into());
                }
                Some(b'k') | Some(b'g') if !in_class => return Err("pcre: backreference".into()),
                Some(b'G') => return Err("pcre: \\G anchor".into()),
                Some(b'K') => return Err("pcre: \\K reset".into()),
                Some(b'Z') => return Err("pcre: \\Z anchor".into()),
                _ => {}
            }
            i += 2;
            continue;
        }
        if in_class {
            if c == b']' {
                in_class = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'[' => {
                in_class = true;
                // A ']' right after '[' or '[^' is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b'(' => {
                let rest = &b[i + 1..];
                if rest.starts_with(b"?=")
                    || rest.starts_with(b"?!")
                    || rest.starts_with(b"?<=")
                    || rest.starts_with(b"?<!")
                {
                    return Err("pcre: lookaround".into());
                }
                if rest.starts_with(b"?>") {
                    return Err("pcre: atomic group".into());
                }
                if rest.starts_with(b"?(") {
                    return Err("pcre: conditional".into());
                }
                if rest.starts_with(b"?P=") || rest.starts_with(b"?P>") {
                    return Err("pcre: backreference".into());
                }
                if rest.starts_with(b"?R")
                    || rest.starts_with(b"?&")
                    || rest.first() == Some(&b'?')
                        && rest
                            .get(1)
                            .is_some_and(|d| d.is_ascii_digit() || *d == b'+' || *d == b'-')
                        && rest
                            .get(2)
                            .is_some_and(|d| d.is_ascii_digit() || *d == b')')
                {
                    return Err("pcre: recursion".into());
                }
                if rest.first() == Some(&b'*') {
                    return Err("pcre: backtracking verb".into());
                }
            }
            b'*' | b'+' | b'?' | b'}' if next == Some(b'+') => {
                return Err("pcre: possessive quantifier".into());
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_flags() {
        let p = compile(r#""/^GET\s+\/x[0-9]{2}/i""#).unwrap();
        assert!(p.re.is_match(b"get /x12"));
        assert!(!p.relative && !p.negated);
        let p = compile(r#"!"/abc/R""#).unwrap();
        assert!(p.negated && p.relative);
        let p = compile(r#""/a.b/s""#).unwrap();
        assert!(p.re.is_match(b"a\nb"));
        let p = compile(r#""/\xff\x00/""#).unwrap();
        assert!(p.re.is_match(b"\xff\x00"));
        let p = compile(r#""/foo/U""#).unwrap();
        assert_eq!(p.buffer, Some(Buffer::HttpUri));
        let p = compile(r#""/b/A""#).unwrap();
        assert!(p.re.is_match(b"bc") && !p.re.is_match(b"ab"));
    }

    #[test]
    fn refuses_pcre_only_features() {
        for (re, why) in [
            (r#""/(a)\1/""#, "backreference"),
            (r#""/a(?=b)/""#, "lookaround"),
            (r#""/(?<!a)b/""#, "lookaround"),
            (r#""/a++/""#, "possessive"),
            (r#""/(?>ab)/""#, "atomic"),
            (r#""/a\Kb/""#, "\\K"),
            (r#""/(?R)/""#, "recursion"),
            (r#""/a/Q""#, "flag Q"),
            (r#""/a(/""#, "syntax"),
        ] {
            let e = compile(re).unwrap_err();
            assert!(e.contains(why), "{re}: {e}");
        }
        // Inside a class these are literals.
        assert!(compile(r#""/[(?=]+/""#).is_ok());
    }
}
