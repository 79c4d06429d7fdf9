//! Full evaluation of one buffer's matchers (content, pcre) for a candidate rule.
//!
//! Semantics follow Suricata's `detect-engine-content-inspection.c`:
//! - an absolute content is searched in `[offset, offset + depth)`;
//! - a relative content (distance/within) in `[prev_end + distance,
//!   prev_end + distance + within)` where `prev_end` is the end of the
//!   previous match in the same buffer;
//! - `startswith` is offset 0 depth len, `endswith` requires the match to end
//!   at the end of the buffer;
//! - a negated content matches when the pattern does not occur in its window
//!   (and does not move `prev_end`);
//! - when a later relative match fails, the previous content is retried at
//!   its next occurrence (backtracking), bounded by [`BACKTRACK_BUDGET`]
//!   (Suricata's `inspection_recursion_limit` is 3000).
//! - pcre: searched from 0, or from `prev_end` with `R`; `^` anchors at the
//!   search start.

use super::rule::{Content, Matcher};
use memchr::memmem;

/// Bound on occurrences tried per evaluation (Suricata: inspection recursion limit 3000).
pub const BACKTRACK_BUDGET: u32 = 3000;

/// A buffer and its lowercase copy (made on first nocase use).
pub struct Buf<'a> {
    pub data: &'a [u8],
    lower: std::cell::OnceCell<Vec<u8>>,
}

impl<'a> Buf<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Buf {
            data,
            lower: std::cell::OnceCell::new(),
        }
    }
    fn lower(&self) -> &[u8] {
        self.lower.get_or_init(|| self.data.to_ascii_lowercase())
    }
}

/// True when all `ms` match `buf` in order.
pub fn match_buffer(ms: &[Matcher], buf: &Buf<'_>) -> bool {
    let mut budget = BACKTRACK_BUDGET;
    if let Some((Matcher::DotPrefix, rest)) = ms.split_first() {
        let mut d = Vec::with_capacity(buf.data.len() + 1);
        d.push(b'.');
        d.extend_from_slice(buf.data);
        return eval(rest, &Buf::new(&d), 0, &mut budget);
    }
    eval(ms, buf, 0, &mut budget)
}

fn window(c: &Content, prev_end: usize, len: usize) -> Option<(usize, usize)> {
    let plen = c.pattern.len();
    let (start, end) = if c.relative() {
        let base = prev_end as i64 + i64::from(c.distance.unwrap_or(0));
        let start = base.max(0) as usize;
        let end = match c.within {
            Some(w) => (base + i64::from(w)).max(0) as usize,
            None => len,
        };
        (start, end)
    } else if c.startswith {
        (0, plen)
    } else {
        let start = c.offset as usize;
        let end = match c.depth {
            Some(d) => start.saturating_add(d as usize),
            None => len,
        };
        (start, end)
    };
    let end = end.min(len);
    (start <= end && end - start >= plen).then_some((start, end))
}

fn eval(ms: &[Matcher], buf: &Buf<'_>, prev_end: usize, budget: &mut u32) -> bool {
    let Some((m, rest)) = ms.split_first() else {
        return true;
    };
    let len = buf.data.len();
    match m {
        Matcher::Content(c) => {
            let Some((start, end)) = window(c, prev_end, len) else {
                return c.negated && eval(rest, buf, prev_end, budget);
            };
            let (hay, pat) = if c.nocase {
                (buf.lower().get(start..end), &c.lower)
            } else {
                (buf.data.get(start..end), &c.pattern)
            };
            let Some(hay) = hay else {
                return c.negated && eval(rest, buf, prev_end, budget);
            };
            let finder = memmem::Finder::new(pat);
            if c.negated {
                if finder.find(hay).is_some() {
                    return false;
                }
                return eval(rest, buf, prev_end, budget);
            }
            let mut from = 0;
            while let Some(p) = finder.find(hay.get(from..).unwrap_or(&[])) {
                let at = start + from + p;
                let m_end = at + pat.len();
                if *budget == 0 {
                    return false;
                }
                *budget -= 1;
                if (!c.endswith || m_end == len) && eval(rest, buf, m_end, budget) {
                    return true;
                }
                // Only relative successors make another occurrence worth trying.
                if !rest_is_relative(rest) && !c.endswith {
                    return false;
                }
                from += p + 1;
            }
            false
        }
        Matcher::DotPrefix => eval(rest, buf, prev_end, budget),
        Matcher::Bsize(c) => c.test(len as u32) && eval(rest, buf, prev_end, budget),
        Matcher::IsDataAt {
            n,
            relative,
            negated,
        } => {
            let base = if *relative { prev_end } else { 0 };
            let has = base + (*n as usize) < len;
            has != *negated && eval(rest, buf, prev_end, budget)
        }
        Matcher::Pcre(p) => {
            let start = if p.relative { prev_end.min(len) } else { 0 };
            let hay = buf.data.get(start..).unwrap_or(&[]);
            match p.re.find(hay) {
                Some(mm) => !p.negated && eval(rest, buf, start + mm.end(), budget),
                None => p.negated && eval(rest, buf, prev_end, budget),
            }
        }
    }
}

fn rest_is_relative(rest: &[Matcher]) -> bool {
    rest.iter().any(|m| match m {
        Matcher::Content(c) => c.relative(),
        Matcher::Pcre(p) => p.relative,
        Matcher::IsDataAt { relative, .. } => *relative,
        Matcher::Bsize(_) | Matcher::DotPrefix => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::rule::{parse_rule, Vars};

    fn ms(opts: &str) -> Vec<Matcher> {
        let r = format!("alert tcp any any -> any any ({opts} sid:1;)");
        let s = parse_rule(&r, &Vars::suricata_defaults()).unwrap();
        s.buffers
            .into_iter()
            .next()
            .map(|b| b.1)
            .unwrap_or_default()
    }
    fn m(opts: &str, data: &[u8]) -> bool {
        match_buffer(&ms(opts), &Buf::new(data))
    }

    #[test]
    fn absolute_windows() {
        assert!(m(r#"content:"abc";"#, b"xxabcxx"));
        assert!(!m(r#"content:"ABC";"#, b"xxabcxx"));
        assert!(m(r#"content:"ABC"; nocase;"#, b"xxabcxx"));
        assert!(m(r#"content:"abc"; depth:5;"#, b"xxabcxx"));
        assert!(!m(r#"content:"abc"; depth:4;"#, b"xxabcxx"));
        assert!(m(r#"content:"abc"; offset:2;"#, b"xxabcxx"));
        assert!(!m(r#"content:"abc"; offset:3;"#, b"xxabcxx"));
        assert!(m(r#"content:"xx"; startswith;"#, b"xxabc"));
        assert!(!m(r#"content:"ab"; startswith;"#, b"xxabc"));
        assert!(m(r#"content:"bc"; endswith;"#, b"xxabc"));
        assert!(!m(r#"content:"xx"; endswith;"#, b"xxabcx"));
        assert!(
            m(r#"content:"x"; endswith;"#, b"xxabcx"),
            "later occurrence ends the buffer"
        );
        assert!(m(r#"content:"|00 01|";"#, b"a\x00\x01"));
    }

    #[test]
    fn relative_and_backtracking() {
        assert!(m(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"a a ab"
        ));
        assert!(!m(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"a a a b"
        ));
        assert!(m(r#"content:"a"; content:"b"; distance:2;"#, b"axxb"));
        assert!(!m(r#"content:"a"; content:"b"; distance:3;"#, b"axxb"));
        assert!(m(
            r#"content:"b"; content:"a"; distance:-2; within:1;"#,
            b"ab"
        ));
        // within counts from prev_end + distance (Suricata).
        assert!(m(
            r#"content:"a"; content:"b"; distance:2; within:1;"#,
            b"axxb"
        ));
    }

    #[test]
    fn negation_and_pcre() {
        assert!(m(
            r#"content:"a"; content:!"b"; distance:0; within:2;"#,
            b"axxb"
        ));
        assert!(!m(
            r#"content:"a"; content:!"b"; distance:0; within:3;"#,
            b"axxb"
        ));
        assert!(m(r#"content:!"evil";"#, b"good"));
        assert!(m(r#"content:"id="; pcre:"/^\d+/R";"#, b"x id=42"));
        assert!(!m(r#"content:"id="; pcre:"/^\d+/R";"#, b"x id=a42"));
        assert!(m(r#"pcre:!"/zz/";"#, b"abc"));
        assert!(m(r#"content:"ab"; isdataat:1,relative;"#, b"abcd"));
        assert!(!m(r#"content:"ab"; isdataat:2,relative;"#, b"abcd"));
        assert!(m(r#"content:"ab"; isdataat:!2,relative;"#, b"abcd"));
        assert!(m(r#"content:"ab"; bsize:4;"#, b"abcd"));
        assert!(!m(r#"content:"ab"; bsize:<4;"#, b"abcd"));
    }

    proptest::proptest! {
        #[test]
        fn content_agrees_with_naive_search(hay in proptest::collection::vec(0u8..4, 0..40), pat in proptest::collection::vec(0u8..4, 1..4)) {
            let hex: String = pat.iter().map(|b| format!("{b:02x} ")).collect();
            let got = m(&format!("content:\"|{hex}|\";"), &hay);
            let want = hay.windows(pat.len()).any(|w| w == pat.as_slice());
            proptest::prop_assert_eq!(got, want);
        }
    }
}
