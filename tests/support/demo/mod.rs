//! The demo model's companions: the evaluator that says what a generated
//! 64x64 scene shows (`tools/demo/evaluate.py` ported), and its spec. Test
//! support, not library: included by tests/demo.rs and tests/demo_evaluator.rs
//! (`#[path = "support/demo/mod.rs"] mod demo;`).

pub mod evaluate;
pub mod spec;

pub use evaluate::{measure, Accuracy, Measured};
pub use spec::{Attributes, Caption, Spec, ATTRIBUTES};
