//! The cluster end to end (issue 21): a real `nats-server -js` on a free loopback port
//! with its own store directory, `sd-wgpu worker`s and `sd-wgpu serve --nats` gateways
//! (CPU backend, demo model), driven over HTTP, with faults injected. nats-server must be
//! installed (.ci/run installs it): these tests fail without it, never skip.
//!
//! `nats` starts servers and processes and reads the job records; one module per fault.

#[path = "../serve/common.rs"]
#[allow(dead_code)]
mod common;
mod faults;
mod nats;
mod routes;
