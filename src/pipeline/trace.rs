//! Tracing a packet through the pipeline, stage by stage (for `portcullis trace`).
//!
//! The pipeline is generic over a [`Tracer`]; the data path uses [`NoTrace`],
//! whose calls compile to nothing, so tracing costs nothing unless asked for.

/// Receives a description of each stage a packet passes.
pub trait Tracer {
    /// True when the tracer records anything (lets callers skip formatting).
    fn enabled(&self) -> bool;
    /// Records a stage.
    fn step(&mut self, stage: &'static str, detail: String);
}

/// A tracer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn enabled(&self) -> bool {
        false
    }
    #[inline(always)]
    fn step(&mut self, _stage: &'static str, _detail: String) {}
}

/// A tracer that keeps every stage in order.
#[derive(Debug, Default, Clone)]
pub struct TraceLog {
    pub steps: Vec<(&'static str, String)>,
}

impl Tracer for TraceLog {
    fn enabled(&self) -> bool {
        true
    }
    fn step(&mut self, stage: &'static str, detail: String) {
        self.steps.push((stage, detail));
    }
}

/// Records a stage, formatting the detail only when the tracer is enabled.
macro_rules! trace_step {
    ($t:expr, $stage:expr, $($fmt:tt)*) => {
        if $t.enabled() {
            $t.step($stage, format!($($fmt)*));
        }
    };
}
pub(crate) use trace_step;
