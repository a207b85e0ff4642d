//! Fault and hostile-input runs (issue 14), mostly of the built binary on
//! the demo model: each module reproduces one concern and asserts the fixed
//! behaviour.

mod common;

mod handover;
mod interrupt;
mod output;
mod progress;
mod prompt_file;
mod stdout;
