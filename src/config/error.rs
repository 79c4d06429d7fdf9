//! Configuration problems: every problem names where it is (the file, or the
//! environment variable that set the value), the key path (`rule[3].dport`,
//! `peer[1].allowed_ips[0]`, `interface.private_key_file`; array indices count
//! from 0), the bad value and what was expected.
//!
//! Validation never stops at the first problem: [`ConfigError`] carries all of
//! them, in the order they were found (file order), like a compiler does.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file, or `environment variable PORTCULLIS__...` for a value
    /// that came from the environment.
    pub file: String,
    /// The key path (`rule[3].dport`); empty for a problem with the whole file
    /// (unreadable, not TOML).
    pub key: String,
    /// What is wrong: the bad value and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// The configuration is invalid: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// An error with a single problem.
    pub fn single(file: &str, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                file: file.to_owned(),
                key: key.to_owned(),
                message: message.into(),
            }],
        }
    }

    /// True if some problem is at exactly this key path.
    pub fn has_key(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
