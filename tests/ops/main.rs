//! The op suite: every op on the GPU against its CPU twin, in f32 and f16,
//! with a per-op normalised-MSE bound and seeded random inputs. Cases include
//! the real SD 1.5 shapes and awkward ones (odd sizes, 1-sized dims, batch > 1).
//!
//! Filter by family or dtype: `cargo test --release --test ops -- matmul`.
//! GPU tests fail, never skip, when no adapter is found.

mod attention;
// The shape tables shared with the kernel benches; each target uses its part.
#[allow(dead_code)]
mod cases;
mod common;
mod conv;
mod elementwise;
mod layout;
mod matmul;
mod norm;
