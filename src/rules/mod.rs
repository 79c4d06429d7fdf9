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
