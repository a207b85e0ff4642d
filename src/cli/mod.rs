//! One file per subcommand: argument struct and `run`.

pub mod bench;
pub mod info;
pub mod tokenize;
