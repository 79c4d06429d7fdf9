//! Validation tests: one per rule, each checking the key path, the value and the expectation.
