//! One file per subcommand: argument struct and `run`.

pub mod bench;
pub mod generate;
pub mod info;
pub mod interrupt;
pub mod progress_bar;
pub mod stdout;
pub mod tokenize;
