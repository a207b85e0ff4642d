//! Tiled VAE passes, exactly as diffusers' `AutoencoderKL.enable_tiling()`:
//! the input is cut into square tiles of `tile_in` (the config's
//! `sample_size`: 512 px or 64 latents for SD) starting every `3/4` tile;
//! each tile is run separately; each result is blended linearly into its
//! upper and left neighbours over a quarter tile (in place, row by row, in
//! diffusers' order), cropped to `3/4` tile and the crops are placed side by
//! side. Memory is that of one tile whatever the image size. Because every
//! tile normalises with its own group-norm statistics the result differs
//! slightly from an untiled pass, so tiling is only used for large images.

use crate::{Error, Result, Tensor};

/// A host array `[B, C, H, W]` in f32.
pub struct HostImage {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl HostImage {
    fn at(&self, b: usize, c: usize, y: usize, x: usize) -> usize {
        ((b * self.shape[1] + c) * self.shape[2] + y) * self.shape[3] + x
    }
}

/// Tile geometry on the input side and the output side of a pass.
#[derive(Debug, Clone, Copy)]
pub struct TileGeometry {
    /// Tile edge on the input.
    pub tile_in: usize,
    /// Tile edge on the output (`tile_in` times the pass's scale).
    pub tile_out: usize,
}

impl TileGeometry {
    /// Distance between tile starts on the input: `int(tile_in * 0.75)`.
    fn stride(&self) -> usize {
        self.tile_in * 3 / 4
    }

    /// Blend width on the output: `int(tile_out * 0.25)`.
    fn blend(&self) -> usize {
        self.tile_out / 4
    }

    /// Each tile keeps its first `row_limit` rows and columns.
    fn row_limit(&self) -> usize {
        self.tile_out - self.blend()
    }
}

/// Runs `pass` on every tile of `input [B, C, H, W]` and blends the results.
/// `pass` maps a tile to its output on the host; `scale` is output size over
/// input size (8 for the SD decoder, 1/8 for the encoder as `(1, 8)`).
pub fn run_tiled(
    input: &Tensor,
    geo: TileGeometry,
    scale: (usize, usize),
    mut pass: impl FnMut(&Tensor) -> Result<HostImage>,
) -> Result<HostImage> {
    let (h, w) = (input.dim(2), input.dim(3));
    let stride = geo.stride();
    if stride == 0 || !geo.tile_out.is_multiple_of(4) || !geo.tile_in.is_multiple_of(4) {
        return Err(Error::invalid(
            "VAE tile size",
            format!(
                "tiles of {} in / {} out do not split into quarters; use a tile size that is a multiple of 4 latents",
                geo.tile_in, geo.tile_out
            ),
        ));
    }
    // 1. Run every tile.
    let mut rows: Vec<Vec<HostImage>> = Vec::new();
    for i in (0..h).step_by(stride) {
        let mut row = Vec::new();
        for j in (0..w).step_by(stride) {
            let tile = input
                .narrow(2, i, geo.tile_in.min(h - i))
                .narrow(3, j, geo.tile_in.min(w - j)); // [B, C, th, tw]
            row.push(pass(&tile)?);
        }
        rows.push(row);
    }
    // 2. Blend each tile into the (already blended) tiles above and to the left.
    let blend = geo.blend();
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            if i > 0 {
                let (above, below) = rows.split_at_mut(i);
                blend_v(&above[i - 1][j], &mut below[0][j], blend);
            }
            if j > 0 {
                let (left, right) = rows[i].split_at_mut(j);
                blend_h(&left[j - 1], &mut right[0], blend);
            }
        }
    }
    // 3. Crop each tile to `row_limit` and place the crops side by side.
    let limit = geo.row_limit();
    let crop = |t: &HostImage| (t.shape[2].min(limit), t.shape[3].min(limit));
    let out_h: usize = rows.iter().map(|r| crop(&r[0]).0).sum();
    let out_w: usize = rows[0].iter().map(|t| crop(t).1).sum();
    let (b, c) = (rows[0][0].shape[0], rows[0][0].shape[1]);
    if out_h * scale.1 != h * scale.0 || out_w * scale.1 != w * scale.0 {
        return Err(Error::invalid(
            "VAE tiling",
            format!(
                "tiles of {} do not tile a {h}x{w} input evenly (the output would be {out_h}x{out_w}); \
                 use a size that is a multiple of 8 pixels",
                geo.tile_in
            ),
        ));
    }
    let mut out = HostImage {
        shape: [b, c, out_h, out_w],
        data: vec![0.0; b * c * out_h * out_w],
    };
    let mut y0 = 0;
    for row in &rows {
        let mut x0 = 0;
        for t in row {
            let (th, tw) = crop(t);
            for bi in 0..b {
                for ci in 0..c {
                    for y in 0..th {
                        let src = t.at(bi, ci, y, 0);
                        let dst = out.at(bi, ci, y0 + y, x0);
                        out.data[dst..dst + tw].copy_from_slice(&t.data[src..src + tw]);
                    }
                }
            }
            x0 += tw;
        }
        y0 += crop(&row[0]).0;
    }
    Ok(out)
}

/// diffusers `blend_v`: the first `extent` rows of `b` fade in from the last
/// `extent` rows of `a`.
fn blend_v(a: &HostImage, b: &mut HostImage, extent: usize) {
    let extent = extent.min(a.shape[2]).min(b.shape[2]);
    let (bs, cs, w) = (b.shape[0], b.shape[1], b.shape[3].min(a.shape[3]));
    for y in 0..extent {
        let (wa, wb) = weights(y, extent);
        for bi in 0..bs {
            for ci in 0..cs {
                let ra = a.at(bi, ci, a.shape[2] - extent + y, 0);
                let rb = b.at(bi, ci, y, 0);
                for x in 0..w {
                    b.data[rb + x] = a.data[ra + x] * wa + b.data[rb + x] * wb;
                }
            }
        }
    }
}

/// diffusers `blend_h`: the first `extent` columns of `b` fade in from the
/// last `extent` columns of `a`.
fn blend_h(a: &HostImage, b: &mut HostImage, extent: usize) {
    let extent = extent.min(a.shape[3]).min(b.shape[3]);
    let (bs, cs, h) = (b.shape[0], b.shape[1], b.shape[2].min(a.shape[2]));
    for x in 0..extent {
        let (wa, wb) = weights(x, extent);
        for bi in 0..bs {
            for ci in 0..cs {
                for y in 0..h {
                    let ia = a.at(bi, ci, y, a.shape[3] - extent + x);
                    let ib = b.at(bi, ci, y, x);
                    b.data[ib] = a.data[ia] * wa + b.data[ib] * wb;
                }
            }
        }
    }
}

/// `(1 - k/extent, k/extent)` computed in f64 and rounded to f32, as PyTorch
/// does with a Python float scalar.
fn weights(k: usize, extent: usize) -> (f32, f32) {
    let t = k as f64 / extent as f64;
    ((1.0 - t) as f32, t as f32)
}
