//! Pipeline counters: packets and bytes by outcome, drops by reason, per-rule hits.
//!
//! Counters only grow; readers take differences. Per-rule counters count the
//! packets a rule decided on the new-flow path plus every later packet of the
//! flows it admitted (so "bytes allowed by rule X" is meaningful even though
//! established packets never re-run the rules).

use crate::verdict::{Chain, DropReason};
use std::collections::BTreeMap;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Count {
    #[inline]
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// All pipeline counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Every packet handed to the pipeline.
    pub received: Count,
    pub forwarded: Count,
    /// Forwarded on the established fast path (a subset of `forwarded`).
    pub fast_path: Count,
    pub local: Count,
    pub held: Count,
    pub dropped: Count,
    pub rejected: Count,
    /// Replies the pipeline generated (RSTs, ICMP errors).
    pub replies_sent: u64,
    /// Replies suppressed by the rate limit or the RFC rules.
    pub replies_suppressed: u64,
    /// Drops (and rejects) by reason label.
    pub drop_reasons: BTreeMap<&'static str, u64>,
    /// Per-rule counters, indexed by chain then rule index.
    pub rules: [Vec<Count>; 3],
    /// Per-chain policy counters.
    pub policy: [Count; 3],
    /// Flows admitted.
    pub flows_created: u64,
    /// Live flows cut by a rule reload (the generation re-check).
    pub flows_revoked: u64,
    /// Log events suppressed because the event queue was full.
    pub events_suppressed: u64,
    /// Flow-end records suppressed because their queue was full.
    pub flow_ends_suppressed: u64,
}

pub(crate) fn chain_slot(c: Chain) -> usize {
    match c {
        Chain::Input => 0,
        Chain::Forward => 1,
        Chain::Output => 2,
    }
}

impl Stats {
    pub(crate) fn count_drop(&mut self, reason: &DropReason, bytes: usize) {
        self.dropped.add(bytes);
        *self.drop_reasons.entry(reason.name()).or_insert(0) += 1;
    }

    pub(crate) fn count_reject(&mut self, reason: &DropReason, bytes: usize) {
        self.rejected.add(bytes);
        *self.drop_reasons.entry(reason.name()).or_insert(0) += 1;
    }

    pub(crate) fn count_rule(&mut self, chain: Chain, rule: Option<u32>, bytes: usize) {
        let slot = chain_slot(chain);
        match rule {
            Some(r) => {
                if let Some(c) = self.rules[slot].get_mut(r as usize) {
                    c.add(bytes)
                }
            }
            None => self.policy[slot].add(bytes),
        }
    }

    /// The counters of rule `idx` in `chain`.
    pub fn rule(&self, chain: Chain, idx: u32) -> Count {
        self.rules[chain_slot(chain)]
            .get(idx as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The policy counter of a chain.
    pub fn policy(&self, chain: Chain) -> Count {
        self.policy[chain_slot(chain)]
    }

    /// Sum of the drop-reason counters.
    pub fn drop_reason_total(&self) -> u64 {
        self.drop_reasons.values().sum()
    }
}
