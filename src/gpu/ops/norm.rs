//! GPU side of the norm family (`shaders/norm.wgsl`). PLACEHOLDER: being written.

use crate::tensor::Tensor;

pub fn group_norm(
    _x: &Tensor,
    _groups: usize,
    _eps: f32,
    _gamma: &Tensor,
    _beta: &Tensor,
    _silu: bool,
) -> Tensor {
    unimplemented!("GPU group_norm")
}

pub fn layer_norm(_x: &Tensor, _gamma: &Tensor, _beta: &Tensor, _eps: f32) -> Tensor {
    unimplemented!("GPU layer_norm")
}
