//! Kernel descriptions and the per-dispatch binding helpers shared by every
//! op family.

use super::preprocess::Define;
use crate::tensor::DType;

/// A WGSL source file from `shaders/`.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// Declares a `Shader` for `shaders/<name>.wgsl`.
#[macro_export]
macro_rules! shader {
    ($name:literal) => {
        $crate::gpu::Shader {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
}

/// One compute entry point of a shader, with its binding signature: binding 0
/// is the uniform params block, then `inputs` read-only storage buffers, then
/// `outputs` read-write storage buffers, in that order.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub inputs: u32,
    pub outputs: u32,
}

/// A contiguous byte range of a buffer bound to one storage binding.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

/// Everything a single dispatch needs.
pub struct Dispatch<'a> {
    pub kernel: Kernel,
    pub dtype: DType,
    pub defines: &'a [Define],
    /// Uniform block contents as 32-bit words (`Params::words`), <= 64 words.
    pub params: &'a [u32],
    pub inputs: &'a [Binding<'a>],
    pub outputs: &'a [Binding<'a>],
    pub groups: [u32; 3],
}

/// Splits `n` workgroups into an (x, y, 1) grid with x <= `max_dim`.
/// Kernels recover the linear index as `wg.x + wg.y * nwg.x` and must ignore
/// indices >= n (the last row may be partial).
pub fn grid_1d(n: u32, max_dim: u32) -> [u32; 3] {
    if n <= max_dim {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max_dim);
        [n.div_ceil(y), y, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::grid_1d;

    #[test]
    fn grid_covers() {
        for n in [1u32, 7, 65535, 65536, 1 << 20, 4_000_000] {
            let [x, y, _] = grid_1d(n, 65535);
            assert!(x <= 65535 && y <= 65535);
            assert!(x as u64 * y as u64 >= n as u64);
            assert!((x as u64) * (y as u64 - 1) < n as u64);
        }
    }
}
