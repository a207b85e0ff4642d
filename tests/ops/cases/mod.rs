//! The SD shapes of each kernel family in one place, shared by the op tests
//! (`tests/ops/`) and the kernel benches (`benches/kernels/`, which include
//! these files by path). Like ggml's `test_case` with `op_flops` and
//! `max_nmse_err`, a case carries its shape, the work it counts (FLOPs) and
//! the NMSE bound a GPU result is held to against the CPU twin.
//!
//! The files depend on the library only, so both targets can include them.

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod matmul;
pub mod norm;

use sd_wgpu::DType;

/// An NMSE bound by the dtype of the result.
pub fn bound(dtype: DType, f32_bound: f64, f16_bound: f64) -> f64 {
    match dtype {
        DType::F32 => f32_bound,
        DType::F16 => f16_bound,
    }
}
