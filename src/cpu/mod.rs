//! The CPU twins: plain, rayon-parallel implementations of every op. They are
//! the specification the GPU kernels are tested against, and the CPU backend.
//!
//! Inputs are widened to f32, arithmetic is f32 (reductions f64 where cheap),
//! and the result is rounded once to the input dtype.

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod profile;
