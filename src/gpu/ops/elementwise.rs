//! GPU side of the element-wise family (`shaders/elementwise.wgsl`, `cast.wgsl`).

use std::sync::LazyLock;

use super::params::{params, Params as _};
use super::{buf, ctx, new_tensor, windows};
use crate::gpu::{grid_1d, Define, Dispatch, Kernel, Shader};
use crate::ops::elementwise::broadcast_strides;
use crate::ops::{Binary, Unary};
use crate::tensor::{DType, Tensor};

pub(super) static ELEMENTWISE: Shader = crate::shader!("elementwise");
pub(super) static CAST: Shader = crate::shader!("cast");

/// Threads per workgroup, one element each.
const WG: u32 = 256;
pub(super) static DEFINES: LazyLock<[Define; 1]> = LazyLock::new(|| {
    [Define {
        name: "WG",
        value: WG,
    }]
});

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        shader: &ELEMENTWISE,
        entry,
        inputs: 2,
        outputs: 1,
    }
}

params! {
    /// The `Params` uniform of elementwise.wgsl.
    pub(super) struct Params {
        n: u32,
        x_off: u32,
        y_off: u32,
        o_off: u32,
        op: u32,
        p0: f32,
        p1: f32,
        rank: u32,
        start: u32,
        y_full: u32,
        inner: u32,
        _pad: u32,
        shape: [u32; 8],
        ystride: [u32; 8],
    }
}

params! {
    /// The `Params` uniform of cast.wgsl.
    pub(super) struct CastParams {
        n: u32,
        x_off: u32,
        o_off: u32,
        _pad: u32,
    }
}

fn unary_code(op: Unary) -> (u32, f32, f32) {
    match op {
        Unary::Gelu => (0, 0.0, 0.0),
        Unary::QuickGelu => (1, 0.0, 0.0),
        Unary::Silu => (2, 0.0, 0.0),
        Unary::Exp => (3, 0.0, 0.0),
        Unary::Affine { mul, add } => (4, mul, add),
        Unary::Clamp { min, max } => (5, min, max),
    }
}

pub fn unary(x: &Tensor, op: Unary) -> Tensor {
    let c = ctx(x);
    let out = new_tensor(&c, x.shape(), x.dtype());
    let (code, p0, p1) = unary_code(op);
    let dt = x.dtype();
    for (start, len) in windows(x.elem_count(), c.max_binding_elems(dt), 1) {
        let (xb, x_off) = c.bind(buf(x), dt, start, len);
        let (ob, o_off) = c.bind(buf(&out), dt, start, len);
        let params = Params {
            n: len as u32,
            x_off,
            y_off: x_off,
            o_off,
            op: code,
            p0,
            p1,
            ..Default::default()
        };
        c.dispatch(&Dispatch {
            kernel: kernel("unary"),
            dtype: dt,
            defines: &*DEFINES,
            params: params.words(),
            inputs: &[xb, xb],
            outputs: &[ob],
            groups: grid_1d((len as u32).div_ceil(WG), c.max_workgroups_per_dim()),
        });
    }
    out
}

pub fn binary(x: &Tensor, op: Binary, y: &Tensor) -> Tensor {
    let c = ctx(x);
    let dt = x.dtype();
    let out = new_tensor(&c, x.shape(), dt);
    let full = y.shape() == x.shape();
    let strides = broadcast_strides(x.shape(), y.shape()).expect("checked at op entry");
    assert!(x.rank() <= 8, "binary: rank > 8");
    let mut shape = [1u32; 8];
    let mut ystride = [0u32; 8];
    for (i, (&d, &s)) in x.shape().iter().zip(&strides).enumerate() {
        shape[i] = d as u32;
        ystride[i] = s as u32;
    }
    let code = match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
    };
    for (start, len) in windows(x.elem_count(), c.max_binding_elems(dt), 1) {
        let (xb, x_off) = c.bind(buf(x), dt, start, len);
        let (ob, o_off) = c.bind(buf(&out), dt, start, len);
        // A broadcast y is small (bias, time embedding): bind it whole.
        let (yb, y_off) = if full {
            c.bind(buf(y), dt, start, len)
        } else {
            c.bind(buf(y), dt, 0, y.elem_count())
        };
        let params = Params {
            n: len as u32,
            x_off,
            y_off,
            o_off,
            op: code,
            rank: x.rank() as u32,
            start: start as u32,
            y_full: full as u32,
            shape,
            ystride,
            ..Default::default()
        };
        c.dispatch(&Dispatch {
            kernel: kernel("binary"),
            dtype: dt,
            defines: &*DEFINES,
            params: params.words(),
            inputs: &[xb, yb],
            outputs: &[ob],
            groups: grid_1d((len as u32).div_ceil(WG), c.max_workgroups_per_dim()),
        });
    }
    out
}

pub fn geglu(x: &Tensor) -> Tensor {
    let c = ctx(x);
    let dt = x.dtype();
    let f = x.dim(-1) / 2;
    let rows = x.elem_count() / (2 * f);
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = f;
    let out = new_tensor(&c, &shape, dt);
    // Windows of whole rows, sized by the (larger) input.
    let max_rows = (c.max_binding_elems(dt) / (2 * f)).max(1);
    for (r0, nr) in windows(rows, max_rows, 1) {
        let (xb, x_off) = c.bind(buf(x), dt, r0 * 2 * f, nr * 2 * f);
        let (ob, o_off) = c.bind(buf(&out), dt, r0 * f, nr * f);
        let params = Params {
            n: (nr * f) as u32,
            x_off,
            y_off: x_off,
            o_off,
            inner: f as u32,
            ..Default::default()
        };
        c.dispatch(&Dispatch {
            kernel: kernel("geglu"),
            dtype: dt,
            defines: &*DEFINES,
            params: params.words(),
            inputs: &[xb, xb],
            outputs: &[ob],
            groups: grid_1d(((nr * f) as u32).div_ceil(WG), c.max_workgroups_per_dim()),
        });
    }
    out
}

pub fn cast(x: &Tensor, dtype: DType) -> Tensor {
    let c = ctx(x);
    let out = new_tensor(&c, x.shape(), dtype);
    let defines = cast_defines(dtype == DType::F16);
    // Window size by the wider (f32) side.
    for (start, len) in windows(x.elem_count(), c.max_binding_elems(DType::F32), 1) {
        let (xb, x_off) = c.bind(buf(x), x.dtype(), start, len);
        let (ob, o_off) = c.bind(buf(&out), dtype, start, len);
        c.dispatch(&Dispatch {
            kernel: Kernel {
                shader: &CAST,
                entry: "convert",
                inputs: 1,
                outputs: 1,
            },
            dtype: DType::F16,
            defines: &defines,
            params: CastParams {
                n: len as u32,
                x_off,
                o_off,
                _pad: 0,
            }
            .words(),
            inputs: &[xb],
            outputs: &[ob],
            groups: grid_1d((len as u32).div_ceil(WG), c.max_workgroups_per_dim()),
        });
    }
    out
}

/// The defines of the cast kernel: to f16, or from f16 to f32.
pub(super) fn cast_defines(to_f16: bool) -> [Define; 2] {
    let def = |name, value| Define { name, value };
    [def("WG", WG), def("TO_F16", to_f16 as u32)]
}
