//! Fault and hostile-input runs (issue 14), mostly of the built binary on
//! the demo model: each module reproduces one concern and asserts the fixed
//! behaviour.

mod common;
mod device;
mod flags;
mod handover;
mod inputs;
mod interrupt;
mod models;
mod output;
mod progress;
mod prompt_file;
mod stdout;
