//! GPU side of the attention family (`shaders/attention.wgsl`). PLACEHOLDER: being written.

use crate::ops::{AttentionOpts, Variant};
use crate::tensor::Tensor;

pub fn attention(_q: &Tensor, _k: &Tensor, _v: &Tensor, _opts: &AttentionOpts, _variant: Variant) -> Tensor {
    unimplemented!("GPU attention")
}

pub fn softmax_last(_x: &Tensor) -> Tensor {
    unimplemented!("GPU softmax")
}
