//! GPU side of the layout family (`shaders/layout.wgsl`). PLACEHOLDER: being written.

use crate::tensor::Tensor;

pub fn permute(_x: &Tensor, _perm: &[usize]) -> Tensor {
    unimplemented!("GPU permute")
}

pub fn cat(_ts: &[&Tensor], _dim: usize) -> Tensor {
    unimplemented!("GPU cat")
}

pub fn narrow(_x: &Tensor, _dim: usize, _start: usize, _len: usize) -> Tensor {
    unimplemented!("GPU narrow")
}

pub fn upsample_nearest(_x: &Tensor, _h: usize, _w: usize) -> Tensor {
    unimplemented!("GPU upsample")
}

pub fn embedding(_table: &Tensor, _ids: &[u32]) -> Tensor {
    unimplemented!("GPU embedding")
}
