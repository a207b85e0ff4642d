//! GPU side of the norm family (`shaders/norm.wgsl`).
//!
//! Both ops normalise groups of contiguous values: a group norm group is the
//! `C / G` channels of one image (`[N, C, *spatial]` is row-major), a layer
//! norm row is a group with `D` channels of one value each. Small groups take
//! one workgroup each (`fused`); big ones (the VAE's: 8 channels x 512^2
//! pixels) are cut into chunks so that many workgroups share a group: `stats`
//! writes per-chunk partials, `apply` merges them and normalises. Tensors over
//! the binding limit are processed in windows of whole chunks.

use std::sync::LazyLock;

use super::params::{params, Params as _};
use super::{buf, ctx, new_tensor, windows};
use crate::gpu::{grid_1d, Define, Dispatch, Kernel, Shader};
use crate::tensor::{DType, Tensor};

pub(super) static NORM: Shader = crate::shader!("norm");

/// Threads of the `stats` / `apply` workgroups and of `fused` on long rows.
const WG: u32 = 256;
/// Threads of `fused` on rows up to `SMALL_ROW` values (layer norm rows of
/// 320..1280): fewer idle threads and a shorter reduction.
const WG_SMALL: u32 = 64;
const SMALL_ROW: usize = 2048;
/// Groups up to this many values are normalised by one workgroup.
const FUSED_MAX: usize = 4096;
/// Target values per chunk of a big group (32 per thread).
const CHUNK: usize = 8192;

pub(super) static DEFINES: LazyLock<[[Define; 1]; 2]> = LazyLock::new(|| {
    [
        [Define {
            name: "WG",
            value: WG,
        }],
        [Define {
            name: "WG",
            value: WG_SMALL,
        }],
    ]
});

params! {
    /// The `Params` uniform of norm.wgsl.
    pub(super) struct Params {
        x_off: u32,
        o_off: u32,
        win_start: u32,
        k0: u32,
        nk: u32,
        len: u32,
        chunk: u32,
        parts: u32,
        spatial: u32,
        cpg: u32,
        groups: u32,
        silu: u32,
        eps: f32,
    }
}

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        shader: &NORM,
        entry,
        inputs: 3,
        outputs: 2,
    }
}

/// How a tensor of `count` groups of `len` values is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Chunks per group (1: the fused kernel).
    parts: usize,
    /// Values per chunk; the last chunk of a group may be shorter.
    chunk: usize,
}

impl Plan {
    fn new(len: usize) -> Plan {
        if len <= FUSED_MAX {
            return Plan { parts: 1, chunk: len };
        }
        // `apply` merges a group's partials with one thread each: parts <= WG.
        let parts = len.div_ceil(CHUNK).clamp(2, WG as usize);
        Plan {
            parts,
            chunk: len.div_ceil(parts),
        }
    }
}

/// The shared shape of both ops: `count` groups of `len` values, channel of
/// value i of group g = `(g % groups) * cpg + i / spatial`.
struct Norm<'a> {
    x: &'a Tensor,
    gamma: &'a Tensor,
    beta: &'a Tensor,
    count: usize,
    len: usize,
    spatial: usize,
    cpg: usize,
    groups: usize,
    eps: f32,
    silu: bool,
}

pub fn group_norm(x: &Tensor, groups: usize, eps: f32, gamma: &Tensor, beta: &Tensor, silu: bool) -> Tensor {
    // x: [N, C, *spatial]
    let (n, c) = (x.dim(0), x.dim(1));
    let spatial = x.elem_count() / (n * c).max(1);
    run(&Norm {
        x,
        gamma,
        beta,
        count: n * groups,
        len: c / groups * spatial,
        spatial,
        cpg: c / groups,
        groups,
        eps,
        silu,
    })
}

pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
    // x: [*, D]
    let d = x.dim(-1);
    run(&Norm {
        x,
        gamma,
        beta,
        count: x.elem_count() / d.max(1),
        len: d,
        spatial: 1,
        cpg: d,
        groups: 1,
        eps,
        silu: false,
    })
}

fn run(nm: &Norm) -> Tensor {
    let c = ctx(nm.x);
    let dt = nm.x.dtype();
    let out = new_tensor(&c, nm.x.shape(), dt);
    if nm.x.elem_count() == 0 {
        return out;
    }
    let plan = Plan::new(nm.len);
    let chunks = nm.count * plan.parts;
    // Partials of every chunk (vec4 each); a placeholder binding for `fused`.
    let part = c.alloc(16 * if plan.parts > 1 { chunks } else { 1 });
    let (gb, _) = c.bind(buf(nm.gamma), dt, 0, nm.gamma.elem_count());
    let (bb, _) = c.bind(buf(nm.beta), dt, 0, nm.beta.elem_count());
    let (pb, _) = c.bind(&part, DType::F32, 0, 4 * chunks.max(1));
    let per_window = (c.max_binding_elems(dt) / plan.chunk).max(1);
    let chunk_start = |k: usize| k / plan.parts * nm.len + k % plan.parts * plan.chunk;
    let chunk_end = |k: usize| chunk_start(k) + plan.chunk.min(nm.len - k % plan.parts * plan.chunk);
    let entries: &[&'static str] = if plan.parts == 1 {
        &["fused"]
    } else {
        &["stats", "apply"]
    };
    let small = plan.parts == 1 && nm.len <= SMALL_ROW;
    let defines = &DEFINES[small as usize];
    // Every `stats` window before any `apply`: a group may straddle windows.
    for &entry in entries {
        for (k0, nk) in windows(chunks, per_window, 1) {
            let (start, end) = (chunk_start(k0), chunk_end(k0 + nk - 1));
            let (xb, x_off) = c.bind(buf(nm.x), dt, start, end - start);
            let (ob, o_off) = c.bind(buf(&out), dt, start, end - start);
            let params = Params {
                x_off,
                o_off,
                win_start: start as u32,
                k0: k0 as u32,
                nk: nk as u32,
                len: nm.len as u32,
                chunk: plan.chunk as u32,
                parts: plan.parts as u32,
                spatial: nm.spatial as u32,
                cpg: nm.cpg as u32,
                groups: nm.groups as u32,
                silu: nm.silu as u32,
                eps: nm.eps,
            };
            c.dispatch(&Dispatch {
                kernel: kernel(entry),
                dtype: dt,
                defines,
                params: params.words(),
                inputs: &[xb, gb, bb],
                outputs: &[ob, pb],
                groups: grid_1d(nk as u32, c.max_workgroups_per_dim()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(Plan::new(1), Plan { parts: 1, chunk: 1 });
        assert_eq!(
            Plan::new(4096),
            Plan {
                parts: 1,
                chunk: 4096
            }
        );
        // SD 1.5 UNet at 64x64: 10 channels x 4096 pixels.
        assert_eq!(
            Plan::new(40960),
            Plan {
                parts: 5,
                chunk: 8192
            }
        );
        // VAE at 1024^2 with 256 channels: 8 x 2^20 values, capped at WG parts.
        let p = Plan::new(8 << 20);
        assert_eq!(p.parts, WG as usize);
        assert_eq!(
            Plan::new(5000),
            Plan {
                parts: 2,
                chunk: 2500
            }
        );
        for len in [4097, 10_000, 40_961, 1 << 20, 3 << 20, 8 << 20] {
            let p = Plan::new(len);
            // Chunks cover the group and none is empty.
            assert!(p.parts * p.chunk >= len && (p.parts - 1) * p.chunk < len, "{len}");
        }
    }
}
