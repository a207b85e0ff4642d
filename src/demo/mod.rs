//! The demo model's companions: the evaluator that says what a generated
//! 64x64 scene shows (`tools/demo/evaluate.py` ported), and its spec.

pub mod evaluate;
pub mod spec;

pub use evaluate::{measure, Accuracy, Measured, ShapeFound};
pub use spec::{Attributes, Caption, Spec, ATTRIBUTES};
