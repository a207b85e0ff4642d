//! GPU side of the matmul family (`shaders/matmul.wgsl`). PLACEHOLDER: being written.

use crate::ops::matmul::{MatmulDims, MatmulOpts};
use crate::ops::Variant;
use crate::tensor::Tensor;

pub fn matmul(
    _a: &Tensor,
    _b: &Tensor,
    _opts: &MatmulOpts,
    _d: MatmulDims,
    _out_shape: &[usize],
    _v: Variant,
) -> Tensor {
    unimplemented!("GPU matmul")
}
