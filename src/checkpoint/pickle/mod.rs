//! A non-executing reader of Python pickles, enough for `torch.save` files.
//!
//! `torch.load` runs arbitrary code found in a pickle; this reader only builds
//! data. Globals are resolved against a whitelist (`globals.rs`), storages come
//! from persistent ids, and the result is an arena of [`Node`]s that the torch
//! reader (`src/checkpoint/torch.rs`) walks to find tensors.

mod globals;
mod input;
mod value;
mod vm;

pub use globals::Global;
pub use value::{Elem, Id, Node, Pickle, Storage, TensorRef};
pub use vm::parse;
