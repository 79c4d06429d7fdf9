//! Walking the merged `config` value tree with exact key paths.
//!
//! The `config` crate merges the TOML file and the `PORTCULLIS__*` environment
//! overrides into one tree of [`Value`]s. Instead of deserialising it with
//! serde (which stops at the first error and loses the key path), the
//! validator walks the tree with these helpers: each one reports a
//! [`Problem`] with the key path, the bad value and the expected type, and
//! returns `None` so validation goes on and every problem is collected.
//!
//! Values from the environment are always strings (the `config` crate's
//! `try_parsing` is off): the helpers parse them into the type the key expects
//! (`"51821"` for an integer key, `"true"` for a boolean, a comma-separated
//! list for a list key), and problems with them name the variable
//! (`environment variable PORTCULLIS__INTERFACE__LISTEN_PORT`).

use super::error::Problem;
use config::{Map, Value, ValueKind};

/// The origin the `config` crate gives values from the environment.
pub(crate) const ENV_ORIGIN: &str = "the environment";
/// The prefix of environment overrides (`PORTCULLIS__SECTION__KEY`).
pub(crate) const ENV_PREFIX: &str = "PORTCULLIS";
/// The separator between the prefix and key path segments.
pub(crate) const ENV_SEPARATOR: &str = "__";

/// True if this value came from an environment variable.
pub(crate) fn is_env(v: &Value) -> bool {
    v.origin() == Some(ENV_ORIGIN)
}

/// The environment variable that sets the key path `key`
/// (`interface.addresses[1]` -> `PORTCULLIS__INTERFACE__ADDRESSES`).
pub(crate) fn env_var_name(key: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for seg in key.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        name.push_str(ENV_SEPARATOR);
        name.push_str(&seg.to_uppercase());
    }
    name
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A short rendering of a value for messages (strings quoted, lists and
/// tables abbreviated).
pub(crate) fn show(v: &Value) -> String {
    match &v.kind {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(i) => i.to_string(),
        ValueKind::I128(i) => i.to_string(),
        ValueKind::U64(i) => i.to_string(),
        ValueKind::U128(i) => i.to_string(),
        ValueKind::Float(x) => x.to_string(),
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Array(a) => {
            let items: Vec<String> = a.iter().take(4).map(show).collect();
            let more = if a.len() > 4 { ", ..." } else { "" };
            format!("[{}{more}]", items.join(", "))
        }
        ValueKind::Table(t) => {
            let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let more = if keys.len() > 4 { ", ..." } else { "" };
            keys.truncate(4);
            format!("{{ {}{more} }}", keys.join(", "))
        }
    }
}

/// The first value from the environment inside `v` (itself included).
pub(crate) fn env_leaf(v: &Value) -> Option<&Value> {
    if is_env(v) {
        return Some(v);
    }
    match &v.kind {
        ValueKind::Table(t) => t.values().find_map(env_leaf),
        ValueKind::Array(a) => a.iter().find_map(env_leaf),
        _ => None,
    }
}

/// The name of a value's type, for "expected X, found Y" messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match &v.kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Array(_) => "a list",
        ValueKind::Table(_) => "a table",
    }
}

/// Edit distance counting an adjacent transposition as one edit (optimal
/// string alignment), for "did you mean" hints on unknown keys: `dprot` is
/// one edit from `dport`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A table in the tree and its key path.
#[derive(Clone, Copy)]
pub(crate) struct Tab<'v> {
    pub path: &'v str,
    pub map: &'v Map<String, Value>,
}

/// Collects problems while the tree is walked.
pub(crate) struct Ctx {
    /// The config file's name as shown in problems.
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Ctx {
    pub fn new(file: &str) -> Self {
        Ctx {
            file: file.to_owned(),
            problems: Vec::new(),
        }
    }

    /// Reports a problem at `key`; `v` (the offending value, if any) decides
    /// whether the file or an environment variable is named.
    pub fn report(&mut self, key: &str, v: Option<&Value>, message: impl Into<String>) {
        let file = match v {
            Some(v) if is_env(v) => format!("environment variable {}", env_var_name(key)),
            _ => self.file.clone(),
        };
        self.problems.push(Problem {
            file,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Reports "`value` is invalid: MSG" for a value; `msg` says what was
    /// expected.
    pub fn bad(&mut self, key: &str, v: &Value, msg: impl std::fmt::Display) {
        let msg = format!("{} is invalid: {msg}", show(v));
        self.report(key, Some(v), msg);
    }

    /// Reports a wrong type.
    pub fn wrong_type(&mut self, key: &str, v: &Value, expected: &str) {
        let msg = format!("expected {expected}, found {} {}", type_name(v), show(v));
        self.report(key, Some(v), msg);
    }

    /// Reports every key of `t` not in `known` (typos must not pass silently).
    pub fn check_keys(&mut self, t: Tab<'_>, known: &[&str]) {
        let mut keys: Vec<&String> = t.map.keys().collect();
        keys.sort();
        for k in keys {
            if known.contains(&k.as_str()) {
                continue;
            }
            let v = t.map.get(k);
            let hint = match suggest(k, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", known.join(", ")),
            };
            let where_ = if t.path.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in [{}]", t.path)
            };
            self.report(
                &join(t.path, k),
                v,
                format!("unknown key `{k}` {where_}; {hint}"),
            );
        }
    }

    /// Reports a missing required key.
    pub fn missing(&mut self, t: Tab<'_>, key: &str, expected: &str) {
        self.report(
            &join(t.path, key),
            None,
            format!("missing required key `{key}`: expected {expected}"),
        );
    }

    /// A string value at a path.
    pub fn as_str<'v>(&mut self, key: &str, v: &'v Value) -> Option<&'v str> {
        match &v.kind {
            ValueKind::String(s) => Some(s),
            _ => {
                self.wrong_type(key, v, "a string");
                None
            }
        }
    }

    /// An integer value at a path, checked against `lo..=hi`.
    pub fn as_int(&mut self, key: &str, v: &Value, lo: i128, hi: i128) -> Option<i128> {
        let n = match &v.kind {
            ValueKind::I64(i) => Some(i128::from(*i)),
            ValueKind::I128(i) => Some(*i),
            ValueKind::U64(i) => Some(i128::from(*i)),
            ValueKind::U128(i) => i128::try_from(*i).ok(),
            ValueKind::String(s) if is_env(v) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            None => {
                self.wrong_type(key, v, &format!("an integer in {lo}..={hi}"));
                None
            }
            Some(n) if n < lo || n > hi => {
                self.bad(key, v, format_args!("expected an integer in {lo}..={hi}"));
                None
            }
            Some(n) => Some(n),
        }
    }

    /// A boolean value at a path.
    pub fn as_bool(&mut self, key: &str, v: &Value) -> Option<bool> {
        match &v.kind {
            ValueKind::Boolean(b) => Some(*b),
            ValueKind::String(s) if is_env(v) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(true),
                "false" | "no" | "off" | "0" => Some(false),
                _ => {
                    self.bad(key, v, "expected true or false");
                    None
                }
            },
            _ => {
                self.wrong_type(key, v, "true or false");
                None
            }
        }
    }

    /// A list at a path: `(element path, element)`. A string from the
    /// environment is split on commas.
    pub fn as_list(
        &mut self,
        key: &str,
        v: &Value,
        expected: &str,
    ) -> Option<Vec<(String, Value)>> {
        match &v.kind {
            ValueKind::Array(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, e)| (format!("{key}[{i}]"), e.clone()))
                    .collect(),
            ),
            ValueKind::String(s) if is_env(v) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .enumerate()
                    .map(|(i, p)| {
                        let origin = ENV_ORIGIN.to_owned();
                        (
                            format!("{key}[{i}]"),
                            Value::new(Some(&origin), ValueKind::String(p.to_owned())),
                        )
                    })
                    .collect(),
            ),
            _ => {
                self.wrong_type(key, v, &format!("a list of {expected}"));
                None
            }
        }
    }

    /// One value or a list of them (`dport = 443` or `dport = [80, 443]`);
    /// a single value keeps the key's own path.
    pub fn one_or_many(&mut self, key: &str, v: &Value) -> Vec<(String, Value)> {
        match &v.kind {
            ValueKind::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{key}[{i}]"), e.clone()))
                .collect(),
            _ => vec![(key.to_owned(), v.clone())],
        }
    }

    /// A sub-table at a path.
    pub fn as_table<'v>(&mut self, key: &str, v: &'v Value) -> Option<&'v Map<String, Value>> {
        match &v.kind {
            ValueKind::Table(m) => Some(m),
            _ => {
                self.wrong_type(key, v, "a table");
                None
            }
        }
    }

    // ---- key lookups in a table: `None` when absent or already reported ----

    pub fn str_at(&mut self, t: Tab<'_>, key: &str) -> Option<String> {
        let v = t.map.get(key)?;
        self.as_str(&join(t.path, key), v).map(str::to_owned)
    }

    pub fn int_at(&mut self, t: Tab<'_>, key: &str, lo: i128, hi: i128) -> Option<i128> {
        let v = t.map.get(key)?;
        self.as_int(&join(t.path, key), v, lo, hi)
    }

    pub fn bool_at(&mut self, t: Tab<'_>, key: &str) -> Option<bool> {
        let v = t.map.get(key)?;
        self.as_bool(&join(t.path, key), v)
    }

    pub fn list_at(
        &mut self,
        t: Tab<'_>,
        key: &str,
        expected: &str,
    ) -> Option<Vec<(String, Value)>> {
        let v = t.map.get(key)?;
        self.as_list(&join(t.path, key), v, expected)
    }

    pub fn table_at<'v>(&mut self, t: Tab<'v>, key: &str) -> Option<&'v Map<String, Value>> {
        let v = t.map.get(key)?;
        self.as_table(&join(t.path, key), v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_suggestions() {
        assert_eq!(
            env_var_name("interface.listen_port"),
            "PORTCULLIS__INTERFACE__LISTEN_PORT"
        );
        assert_eq!(
            env_var_name("interface.addresses[2]"),
            "PORTCULLIS__INTERFACE__ADDRESSES"
        );
        assert_eq!(
            suggest("listen_prot", &["listen_port", "mtu"]),
            Some("listen_port")
        );
        assert_eq!(suggest("zzzzzz", &["listen_port", "mtu"]), None);
        assert_eq!(suggest("peers", &["peer", "rule"]), Some("peer"));
    }
}
