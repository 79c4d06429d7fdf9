//! Backend health for load-balanced DNAT: the state machine fed by TCP
//! connect checks, and the run-time (administrative) drain state.
//!
//! The checks themselves (a TCP connect to each backend's address and port
//! every `interval`, given up after `timeout`) run in the IO shell
//! (`crate::io::health`); this module only turns their results into up/down,
//! the way HAProxy's `rise`/`fall` do: a backend that is up goes down after
//! [`FALL`] consecutive failed checks, and a backend that is down comes back
//! after [`RISE`] consecutive successful ones. Every backend starts up (so a
//! freshly started gateway serves at once; a dead backend is found within
//! `FALL * interval + timeout`).
//!
//! Effective state of a backend: down if the config says `down = true` and no
//! operator override says otherwise (`ctl nat undrain` forces it up, `ctl nat
//! drain` forces it down), or if its health check says so. Down backends get
//! no new flows; live flows keep their binding (draining).

use std::time::Duration;

/// Consecutive failed checks that take an up backend down (HAProxy's default
/// `fall` is 3; 2 finds a dead backend one interval sooner, and a single lost
/// SYN is still forgiven).
pub const FALL: u8 = 2;
/// Consecutive successful checks that bring a down backend back (HAProxy's default `rise`).
pub const RISE: u8 = 2;

/// A rule's health-check settings (`health_check = { interval, timeout }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The health of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results against the current state.
    streak: u8,
    /// Checks seen (0: never checked).
    pub checks: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: true,
            streak: 0,
            checks: 0,
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns the new state when it changed.
    pub fn report(&mut self, ok: bool) -> Option<bool> {
        self.checks = self.checks.saturating_add(1);
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let need = if self.up { FALL } else { RISE };
        if self.streak >= need {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_up_and_falls_after_fall_failures() {
        let mut h = Health::default();
        assert!(h.is_up());
        for _ in 1..FALL {
            assert_eq!(h.report(false), None);
            assert!(h.is_up());
        }
        assert_eq!(h.report(false), Some(false));
        assert!(!h.is_up());
        // more failures: no new transition
        assert_eq!(h.report(false), None);
    }

    #[test]
    fn rises_after_rise_successes() {
        let mut h = Health::default();
        for _ in 0..FALL {
            h.report(false);
        }
        assert!(!h.is_up());
        for _ in 1..RISE {
            assert_eq!(h.report(true), None);
            assert!(!h.is_up());
        }
        assert_eq!(h.report(true), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_single_success_resets_the_fall_streak() {
        let mut h = Health::default();
        // fail, ok, fail, ok ... never FALL in a row: stays up
        for _ in 0..20 {
            assert_eq!(h.report(false), None);
            assert_eq!(h.report(true), None);
        }
        assert!(h.is_up());
        assert_eq!(h.checks, 40);
    }

    #[test]
    fn flapping_while_down_needs_consecutive_successes() {
        let mut h = Health::default();
        for _ in 0..FALL {
            h.report(false);
        }
        for _ in 0..10 {
            h.report(true);
            h.report(false);
        }
        assert!(!h.is_up(), "RISE={RISE} consecutive successes are needed");
    }
}
