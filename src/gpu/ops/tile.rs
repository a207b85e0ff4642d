//! What the matmul and conv2d families share: the register-tiled GEMM core
//! (`shaders/gemm_tile.wgsl`, prepended to both shaders), its tile sizes, and
//! the window arithmetic that splits operands over the binding limit.

use super::windows;
use crate::gpu::{Define, GpuContext};
use crate::tensor::DType;

/// Threads per workgroup of every matmul / conv2d kernel (16 x 16 in the tiled ones).
pub(crate) const WG: u32 = 256;

/// The output tile of one workgroup: 64 or 128 rows (`TALL`) by 64 or 128
/// columns (`WIDE`), one thread computing 4-8 x 4-8 outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    pub tall: bool,
    pub wide: bool,
}

impl Tile {
    pub const SMALL: Tile = Tile {
        tall: false,
        wide: false,
    };

    pub fn rows(self) -> usize {
        64 << self.tall as usize
    }

    pub fn cols(self) -> usize {
        64 << self.wide as usize
    }

    pub fn groups(self, batch: usize, rows: usize, cols: usize) -> usize {
        batch * rows.div_ceil(self.rows()) * cols.div_ceil(self.cols())
    }

    /// The `TALL` and `WIDE` defines.
    pub fn defines(self) -> [Define; 2] {
        [
            Define {
                name: "TALL",
                value: self.tall as u32,
            },
            Define {
                name: "WIDE",
                value: self.wide as u32,
            },
        ]
    }

    /// The largest tile that does not waste much on padding and, on a
    /// hardware adapter, still gives every compute unit a few workgroups.
    /// Bigger tiles do more FMAs per workgroup-memory read; on a software
    /// adapter (llvmpipe: 2-16 threads, every non-uniform load a scalar loop
    /// over SIMD lanes) that ratio is all that matters.
    pub fn choose(software: bool, batch: usize, rows: usize, cols: usize) -> Tile {
        // 128 only when rounding up to it costs < 10% over rounding to 64
        // (320 channels would be 384: 17% more).
        let big = |x: usize| x > 64 && x.next_multiple_of(128) * 10 < x.next_multiple_of(64) * 11;
        let (tall, wide) = (big(rows), big(cols));
        let candidates = [(tall, wide), (tall, false), (false, wide), (false, false)];
        candidates
            .into_iter()
            .map(|(tall, wide)| Tile { tall, wide })
            .find(|t| software || t.groups(batch, rows, cols) >= MIN_GROUPS)
            .unwrap_or(Tile::SMALL)
    }
}

/// Workgroups a bigger tile must still produce on a hardware adapter: an
/// H100 has 132 SMs, each running two 256-thread workgroups of this kernel
/// at once. A guess not yet measured on hardware.
const MIN_GROUPS: usize = 512;

/// Prepends the tile core to a family's shader source at compile time.
#[macro_export]
macro_rules! tiled_shader {
    ($name:literal) => {
        $crate::gpu::Shader {
            name: $name,
            source: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/gemm_tile.wgsl")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl"))
            ),
        }
    };
}

/// Whether `ctx.bind(.., dtype, start, len)` stays within the binding limit:
/// `bind`'s own window, so a tensor exactly at the limit (the VAE's
/// [1, 128, 512, 512] f32) is bound whole when it starts aligned.
pub(crate) fn fits(ctx: &GpuContext, dtype: DType, start: usize, len: usize) -> bool {
    ctx.window(dtype, start, len).bytes() <= ctx.max_binding_bytes()
}

/// How many rows of `row_len` elements one binding window may hold. When a
/// row is a whole number of alignment units, every window of whole rows
/// starts aligned and may fill the limit exactly (128 channels of 512x512
/// f32 are exactly 128 MiB); otherwise the alignment slack is kept free.
pub(crate) fn max_rows(ctx: &GpuContext, dtype: DType, row_len: usize) -> usize {
    let row_bytes = (row_len * dtype.size()) as u64;
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    if row_bytes == 0 {
        usize::MAX
    } else if row_bytes.is_multiple_of(align) {
        (ctx.max_binding_bytes() / row_bytes) as usize
    } else {
        ctx.max_binding_elems(dtype) / row_len
    }
}

/// `(start, len)` pieces of `0..total`: the fewest with at most `max` items,
/// of near-equal size, rounded up to a multiple of `granule` where that
/// still fits `max`.
pub(crate) fn balanced(total: usize, max: usize, granule: usize) -> Vec<(usize, usize)> {
    let max = max.max(1);
    let parts = total.div_ceil(max).max(1);
    let even = total.div_ceil(parts);
    let rounded = even.next_multiple_of(granule);
    windows(total, if rounded <= max { rounded } else { even }, 1)
}

#[cfg(test)]
mod tests {
    use super::{balanced, Tile};

    #[test]
    fn balanced_pieces() {
        assert_eq!(balanced(128, 127, 1), vec![(0, 64), (64, 64)]);
        assert_eq!(balanced(256, 100, 4), vec![(0, 88), (88, 88), (176, 80)]);
        assert_eq!(balanced(10, 100, 64), vec![(0, 10)]);
        assert_eq!(
            balanced(300, 3, 64),
            (0..100).map(|i| (3 * i, 3)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn tile_choice() {
        let t = |tall, wide| Tile { tall, wide };
        assert_eq!(Tile::choose(false, 1, 4096, 4096), t(true, true));
        // 320 columns would be padded to 384: 64-wide tiles; then 128 rows
        // leave 320 workgroups: too few.
        assert_eq!(Tile::choose(false, 1, 8192, 320), t(false, false));
        assert_eq!(Tile::choose(false, 1, 32768, 320), t(true, false));
        // Too few workgroups on hardware, fine on a software adapter.
        assert_eq!(Tile::choose(false, 1, 512, 512), t(false, false));
        assert_eq!(Tile::choose(true, 1, 512, 512), t(true, true));
        assert_eq!(Tile::choose(true, 1, 64, 1000), t(false, true));
    }
}
