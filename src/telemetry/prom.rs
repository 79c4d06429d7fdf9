//! Prometheus text exposition format 0.0.4, writer and checker.
//!
//! Format (prometheus.io/docs/instrumenting/exposition_formats): `# HELP name
//! text` and `# TYPE name counter|gauge|histogram` once per family, before its
//! samples; samples `name{label="value",...} number`; metric names match
//! `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`; label
//! values escape `\`, `"` and newline; HELP text escapes `\` and newline.
//! Histograms add `_bucket` (with `le`), `_sum` and `_count` samples.

use std::fmt::Write as _;

/// Builds an exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", fmt_value(value));
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per row, each labelled `label="row name"`.
    pub fn labelled<S: AsRef<str>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        rows: impl IntoIterator<Item = (S, f64)>,
    ) {
        self.family(name, kind, help);
        for (v, n) in rows {
            self.sample(name, &[(label, v.as_ref())], n);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Parses a label set `{a="x",b="y"}` (the part after the name); returns the
/// rest of the line.
fn parse_labels(s: &str) -> Result<&str, String> {
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok(r);
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let (name, r) = rest.split_at(eq);
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut r = r
            .get(1..)
            .ok_or("cut")?
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        // find the closing quote, honouring escapes
        let mut end = None;
        let mut esc = false;
        for (i, c) in r.char_indices() {
            match (esc, c) {
                (true, '\\' | '"' | 'n') => esc = false,
                (true, _) => return Err("bad escape in label value".into()),
                (false, '\\') => esc = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, '\n') => return Err("newline in label value".into()),
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        r = r.get(end + 1..).ok_or("cut")?;
        rest = r.strip_prefix(',').unwrap_or(r);
    }
}

/// Checks that every line of `text` is valid exposition format: comments,
/// HELP/TYPE lines (TYPE before the family's samples, once), samples with
/// valid names, labels and numbers. Returns the number of samples.
pub fn check(text: &str) -> Result<usize, String> {
    let mut samples = 0;
    let mut typed = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts.next().unwrap_or("");
                    let kind = parts.next().unwrap_or("");
                    if !is_metric_name(name) {
                        return Err(err("bad metric name in TYPE".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("bad type {kind:?}")));
                    }
                    if !typed.insert(name.to_string()) {
                        return Err(err("TYPE given twice".into()));
                    }
                }
                Some("HELP") if !parts.next().is_some_and(is_metric_name) => {
                    return Err(err("bad metric name in HELP".into()));
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let (name, rest) = line.split_at(name_end);
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let rest = if rest.starts_with('{') {
            parse_labels(rest).map_err(err)?
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let v = fields.next().ok_or_else(|| err("no value".into()))?;
        let ok = matches!(v, "NaN" | "+Inf" | "-Inf") || v.parse::<f64>().is_ok();
        if !ok {
            return Err(err(format!("bad value {v:?}")));
        }
        if let Some(ts) = fields.next() {
            if ts.parse::<i64>().is_err() {
                return Err(err("bad timestamp".into()));
            }
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        samples += 1;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_text_checks() {
        let mut e = Exposition::new();
        e.family(
            "portcullis_packets_total",
            "counter",
            "Packets by verdict.\nsecond line",
        );
        e.sample("portcullis_packets_total", &[("verdict", "forward")], 12.0);
        e.sample(
            "portcullis_packets_total",
            &[("verdict", "drop"), ("reason", "we\"ird\\\nname")],
            3.0,
        );
        e.single("portcullis_up", "gauge", "1", 1.0);
        e.sample("portcullis_x", &[], f64::INFINITY);
        let t = e.finish();
        assert!(t.contains("reason=\"we\\\"ird\\\\\\nname\""), "{t}");
        assert_eq!(check(&t), Ok(4));
    }

    #[test]
    fn checker_refuses_bad_lines() {
        for bad in [
            "1bad 3",
            "ok{l=\"x} 3",
            "ok{l=x} 3",
            "ok 3 4 5",
            "ok abc",
            "ok{9l=\"x\"} 1",
            "# TYPE ok bogus",
            "# TYPE ok counter\n# TYPE ok counter",
        ] {
            assert!(check(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(check("ok{a=\"1\",b=\"2\"} 1 1700000000000\n"), Ok(1));
    }
}
