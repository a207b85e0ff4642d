//! The SD 1.x networks written on the tensor API, configured from diffusers
//! `config.json` files.

pub mod config;
