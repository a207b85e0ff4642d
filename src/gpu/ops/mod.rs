//! GPU implementations of the ops, one file per kernel family, each the
//! counterpart of `crate::cpu::<family>` with the same signature.
//!
//! Conventions every family follows:
//! - every kernel's uniform block (binding 0) is a `params!` struct, checked
//!   against the WGSL struct by a test (`params`);
//! - all entry points of one shader file share one binding signature
//!   (binding 0 params, then inputs, then outputs), since a WGSL module can
//!   declare each binding once;
//! - an op whose tensors exceed the storage-binding limit is split into
//!   windows (`windows`) along a dim where the work is independent, and each
//!   window is bound with `GpuContext::bind`, whose element offset the kernel
//!   adds to its indices;
//! - workgroup counts go through `grid_1d` so no dimension exceeds the limit.

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod params;
mod tile;

use std::sync::Arc;

use super::{GpuBuffer, GpuContext};
use crate::tensor::{DType, Storage, Tensor};

/// A new uninitialised GPU tensor on `ctx`.
pub(crate) fn new_tensor(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let buf = ctx.alloc(n * dtype.size());
    Tensor::from_storage(Storage::Gpu(Arc::new(buf)), shape, dtype)
}

/// The context of a GPU tensor.
pub(crate) fn ctx(t: &Tensor) -> Arc<GpuContext> {
    t.gpu_context().expect("GPU op on a CPU tensor")
}

/// Buffer of a GPU tensor.
pub(crate) fn buf(t: &Tensor) -> &GpuBuffer {
    t.gpu_buffer()
}

/// `(start, len)` pieces of `0..total` of at most `max` items each, each a
/// multiple of `granule` except possibly the last.
pub(crate) fn windows(total: usize, max: usize, granule: usize) -> Vec<(usize, usize)> {
    let step = (max / granule).max(1) * granule;
    (0..total.max(1))
        .step_by(step)
        .map(|s| (s, step.min(total - s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    fn windows_cover() {
        assert_eq!(windows(10, 4, 1), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(windows(10, 5, 3), vec![(0, 3), (3, 3), (6, 3), (9, 1)]);
        assert_eq!(windows(3, 100, 1), vec![(0, 3)]);
    }
}
