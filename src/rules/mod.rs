//! Rules: the model, the linear reference evaluator and the compiled classifier.
//!
//! `RuleSet` holds the three chains (`input`, `forward`, `output`) compiled for
//! fast classification; `linear::evaluate` is the obviously-correct reference
//! the classifier is property-tested against.

pub mod model;

pub use model::*;
