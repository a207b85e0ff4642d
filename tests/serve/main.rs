//! `sd-wgpu serve` end to end: the real binary on a loopback port with the demo model on
//! the CPU backend, driven over HTTP. Every wait is bounded; servers are killed on drop.
//!
//! `common` starts servers and speaks HTTP; one module per concern.

mod a1111;
mod a1111_routes;
mod auth;
mod common;
mod concurrency;
mod inpaint;
mod limits;
mod loras;
mod native;
mod openai;
mod ops;
