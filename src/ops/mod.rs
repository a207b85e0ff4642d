//! Every op the models use, with one signature for both backends.
//!
//! Each op checks shapes and dtypes once at entry (a mismatch is a bug in the
//! caller and panics with both shapes), then runs the CPU twin
//! (`crate::cpu::<family>`) or the GPU kernel (`crate::gpu::ops::<family>`).
//! Operands must share device and dtype. Storage is f32 or f16; arithmetic is
//! f32 everywhere, and f16 results are rounded once when stored.
//!
//! Shape letters used in comments: B batch, C channels, H/W height/width,
//! L sequence length, D head dim, M/N/K matrix sizes.

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod norm;

pub use attention::{attention, attention_variant, AttentionOpts};
pub use conv::ConvOpts;
pub use elementwise::{Binary, Unary};
pub use matmul::MatmulOpts;

use crate::tensor::Tensor;

/// Which implementation of a kernel family to run. `Tuned` is the default
/// everywhere; `Naive` is kept for tests and benchmarks to compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    #[default]
    Tuned,
    Naive,
}

/// Panics unless all tensors share the first one's device and dtype.
pub(crate) fn check_same(op: &str, ts: &[&Tensor]) {
    let (d0, t0) = (ts[0].device(), ts[0].dtype());
    for t in &ts[1..] {
        assert!(t.device().same(&d0), "{op}: operands on different devices");
        assert_eq!(t.dtype(), t0, "{op}: mixed dtypes");
    }
}
