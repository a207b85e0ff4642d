//! GPU side of the conv2d family (`shaders/conv2d.wgsl`). PLACEHOLDER: being written.

use crate::ops::conv::{ConvDims, ConvOpts};
use crate::ops::Variant;
use crate::tensor::Tensor;

pub fn conv2d(_x: &Tensor, _w: &Tensor, _opts: &ConvOpts, _d: ConvDims, _v: Variant) -> Tensor {
    unimplemented!("GPU conv2d")
}
