//! One file per subcommand: argument struct and `run`; `flags` holds the flags and flag
//! parsers they share.

pub mod bench;
pub mod flags;
pub mod generate;
pub mod info;
pub mod inpaint;
pub mod interrupt;
pub mod progress_bar;
pub mod samplers;
pub mod serve;
pub mod stdout;
pub mod tokenize;
pub mod worker;
