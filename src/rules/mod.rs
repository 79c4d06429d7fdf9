//! Rules: the model, the linear reference evaluator and the compiled classifier.
//!
//! Three named chains, as in netfilter: `input` (to the gateway itself),
//! `forward` (through it) and `output` (from it), each an ordered list of
//! rules with a default policy. First match wins; when nothing matches the
//! chain's policy decides (`Decision::rule` is then `None`).
//!
//! [`RuleSet`] holds the three chains compiled into [`Classifier`]s (whose
//! cost grows sub-linearly with the number of rules; design and measured costs
//! in [`classifier`]); [`linear::evaluate`] is the obviously-correct
//! reference the classifier is property-tested against, and its module docs
//! define exactly what each rule field means. Per-rule packet/byte counters
//! are kept by the pipeline, indexed by chain and rule index; this module
//! only decides.
//!
//! # L7 predicates (`tls_sni`, `http_host`, `dns_qname`)
//!
//! Forward rules may also match the flow's L7 name (patterns in [`l7`]: exact,
//! `*.suffix` strictly under the suffix, or an anchored `~regex`). The name is
//! known only after the flow has started (the ClientHello, the HTTP request,
//! the DNS query), so a chain is decided in two steps:
//!
//! 1. At flow start, [`RuleSet::evaluate`] runs with the name *unknown*: L7
//!    predicates are ignored, so a rule with them is a candidate whenever its
//!    other fields match. When the first matching rule has L7 predicates
//!    ([`RuleSet::rule_has_l7`]), the decision is provisional: the flow is
//!    admitted "pending L7" (TCP), or, when the first packet already carries
//!    the client's payload (a UDP DNS query) or cannot carry a name (other
//!    protocols), decided at once by step 2.
//! 2. When the client's first payload yields the name, or proves there is
//!    none (not TLS/HTTP/DNS, no SNI/Host, or a bound of client bytes passed
//!    without a name), [`RuleSet::evaluate_named`] evaluates the chain again
//!    *from the top* with the name known, on the flow's first packet as the
//!    rules saw it (a UDP datagram with several DNS questions: once per
//!    name, the first non-accepting decision wins): a rule with L7 predicates matches only when the name is
//!    of a kind it lists and one of that list's patterns matches it (several
//!    L7 fields on one rule are alternatives); rules without L7 predicates
//!    match as before. A flow without a name matches no L7 rule. That verdict
//!    is final for TCP: accept lets the flow go on; drop/reject cuts it.
//!    An accepted UDP flow repeats step 2 on every later client datagram
//!    (each DNS query is decided by its own names; a blocked one is dropped
//!    alone), an accepted DNS-over-TCP flow on every later query on the
//!    connection, and an accepted HTTP/1 flow on every later request on the
//!    connection, by its Host (a blocked one cuts the connection).
//!
//! The pipeline side (buffering the client's first bytes, what happens to
//! segments before the decision, resets) is in [`crate::pipeline::l7`].

pub mod classifier;
pub mod l7;
pub mod linear;
pub mod model;

#[cfg(test)]
mod tests;

pub use classifier::{Classifier, ClassifierStats};
pub use l7::{L7Kind, L7Name, NameList, NamePattern};
pub use model::*;

use crate::verdict::Chain;

/// The three compiled chains.
#[derive(Debug, Clone)]
pub struct RuleSet {
    input: Classifier,
    forward: Classifier,
    output: Classifier,
}

impl RuleSet {
    /// Compiles the three chains.
    pub fn new(input: ChainDef, forward: ChainDef, output: ChainDef) -> RuleSet {
        RuleSet {
            input: Classifier::compile(&input),
            forward: Classifier::compile(&forward),
            output: Classifier::compile(&output),
        }
    }

    /// No rules, every policy accept.
    pub fn accept_all() -> RuleSet {
        let empty = || ChainDef {
            rules: Vec::new(),
            policy: Action::Accept,
        };
        RuleSet::new(empty(), empty(), empty())
    }

    fn classifier(&self, chain: Chain) -> &Classifier {
        match chain {
            Chain::Input => &self.input,
            Chain::Forward => &self.forward,
            Chain::Output => &self.output,
        }
    }

    /// Classifies `m` in `chain` (first match wins, else the policy).
    pub fn evaluate(&self, chain: Chain, m: &MatchInput) -> Decision {
        self.classifier(chain).classify(m)
    }

    /// Classifies `m` in `chain` with the flow's L7 name known (`None`: the
    /// flow has none); see [`linear::evaluate_named`].
    pub fn evaluate_named(&self, chain: Chain, m: &MatchInput, name: Option<&L7Name>) -> Decision {
        self.classifier(chain).classify_named(m, name)
    }

    /// True when rule `idx` of `chain` has L7 predicates (a decision by it
    /// at flow start is provisional).
    pub fn rule_has_l7(&self, chain: Chain, idx: u32) -> bool {
        self.chain(chain)
            .rules
            .get(idx as usize)
            .is_some_and(Rule::has_l7)
    }

    /// The source rules of `chain` (for printing and sizing counters).
    pub fn chain(&self, chain: Chain) -> &ChainDef {
        self.classifier(chain).chain()
    }

    /// Sizes of `chain`'s compiled classifier.
    pub fn stats(&self, chain: Chain) -> ClassifierStats {
        self.classifier(chain).stats()
    }

    /// The rule's configured name, else `rule[N]` (also for an index out of range).
    pub fn rule_name(&self, chain: Chain, idx: u32) -> String {
        self.chain(chain)
            .rules
            .get(idx as usize)
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| format!("rule[{idx}]"))
    }
}
