//! Fault and hostile-input runs of the built binary (issue 14): each module
//! reproduces one concern and asserts the fixed behaviour.

mod common;

mod interrupt;
mod output;
mod progress;
mod prompt_file;
mod stdout;
