//! GPU side of the attention family: fused flash-style attention
//! (`Variant::Tuned`, `shaders/attention_flash.wgsl`) and a naive
//! one-thread-per-row kernel (`Variant::Naive`, `shaders/attention_naive.wgsl`),
//! each after the shared part `shaders/attention.wgsl`.
//!
//! Shape letters: B batch, L sequence (Lq queries, Lk keys), H heads, D head
//! dim, W = H*D the row width of q, k, v and the output.
//!
//! Both attention kernels can run as several passes over key ranges, carrying
//! the unnormalised output and the running max and sum of every row in an f32
//! state buffer. Hardware adapters take one pass; software ones (llvmpipe)
//! need several on long sequences, see `plan::key_passes`.

pub(super) mod plan;

use super::params::{params, Params as _};
use super::{buf, ctx, new_tensor};
use crate::gpu::{grid_1d, Binding, Define, Dispatch, GpuContext, Kernel, Shader};
use crate::ops::{AttentionOpts, Variant};
use crate::tensor::{DType, Tensor};
use plan::{attention_windows, key_passes, FlashPlan, Window, BK, WG};

/// `shaders/attention.wgsl` followed by the kernel file `$name`.
macro_rules! attention_shader {
    ($name:literal) => {
        Shader {
            name: $name,
            source: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/attention.wgsl")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl"))
            ),
        }
    };
}

pub(super) static FLASH: Shader = attention_shader!("attention_flash");
pub(super) static NAIVE: Shader = attention_shader!("attention_naive");

params! {
    /// The `Params` uniform of attention.wgsl.
    pub(super) struct Params {
        lq: u32,
        lk: u32,
        width: u32,
        heads: u32,
        scale: f32,
        causal: u32,
        q0: u32,
        groups: u32,
        q_off: u32,
        k_off: u32,
        v_off: u32,
        o_off: u32,
        q_bstride: u32,
        k_bstride: u32,
        qblocks: u32,
        k_begin: u32,
        k_end: u32,
        first: u32,
        last: u32,
        ml_off: u32,
    }
}

/// The bindings and dtype of one attention window.
struct Bound<'a> {
    dt: DType,
    inputs: [Binding<'a>; 3],
    out: Binding<'a>,
    state: Binding<'a>,
}

impl Bound<'_> {
    fn dispatch(
        &self,
        c: &GpuContext,
        shader: &'static Shader,
        entry: &'static str,
        defines: &[Define],
        params: &Params,
        groups: u32,
    ) {
        c.dispatch(&Dispatch {
            kernel: Kernel {
                shader,
                entry,
                inputs: 3,
                outputs: 2,
            },
            dtype: self.dt,
            defines,
            params: params.words(),
            inputs: &self.inputs,
            outputs: &[self.out, self.state],
            groups: grid_1d(groups, c.max_workgroups_per_dim()),
        });
    }
}

/// Marks pass `i` of `n` over keys `range` in a copy of `params`.
fn pass(params: &Params, (k_begin, k_end): (usize, usize), i: usize, n: usize) -> Params {
    Params {
        k_begin: k_begin as u32,
        k_end: k_end as u32,
        first: (i == 0) as u32,
        last: (i + 1 == n) as u32,
        ..*params
    }
}

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts, variant: Variant) -> Tensor {
    let c = ctx(q);
    let dt = q.dtype();
    let (b, lq, w) = (q.dim(0), q.dim(1), q.dim(2));
    let lk = k.dim(1);
    let h = opts.heads;
    let d = w / h;
    let dp4 = d.div_ceil(4);
    let out = new_tensor(&c, q.shape(), dt); // [B, Lq, W]
    let plan = FlashPlan::new(d as u32);
    // Key passes: the flash kernel steps through whole tiles; the naive one
    // reads DP4 vec4 per key to find the max and twice that to accumulate.
    let (passes_a, passes_b) = match variant {
        Variant::Tuned => (key_passes(&c, lk, plan.loop_iters_per_key(), BK as usize), vec![]),
        Variant::Naive => (
            key_passes(&c, lk, dp4 as f64 + 1.0, 1),
            key_passes(&c, lk, 2.0 * dp4 as f64 + 1.0, 1),
        ),
    };
    // Only the naive kernel's max needs state when one pass suffices.
    let with_acc = passes_a.len() > 1 || passes_b.len() > 1;
    let with_ml = with_acc || variant == Variant::Naive;
    for win in attention_windows(&c, dt, [b, lq, lk, w, h]) {
        let q_start = (win.b0 * lq + win.q0) * w;
        let q_len = ((win.nb - 1) * lq + win.nq) * w;
        let kv_start = win.b0 * lk * w;
        let kv_len = win.nb * lk * w;
        let (qb, q_off) = c.bind(buf(q), dt, q_start, q_len);
        let (kb, k_off) = c.bind(buf(k), dt, kv_start, kv_len);
        let (vb, v_off) = c.bind(buf(v), dt, kv_start, kv_len);
        let (ob, o_off) = c.bind(buf(&out), dt, q_start, q_len);
        // State: DP4 vec4 of unnormalised output per (batch, row, head), then
        // one (max, sum) vec4 each.
        let rows = win.nb * win.nq * h;
        let ml_off = if with_acc { rows * dp4 } else { 0 };
        let vec4s = ml_off + if with_ml { rows } else { 0 };
        let state = c.alloc(vec4s.max(1) * 16);
        let (sb, _) = c.bind(&state, DType::F32, 0, vec4s.max(1) * 4);
        let bound = Bound {
            dt,
            inputs: [qb, kb, vb],
            out: ob,
            state: sb,
        };
        // 128-bit loads need D and every window offset to be multiples of 4.
        let vec4 = d.is_multiple_of(4) && [q_off, k_off, v_off, o_off].iter().all(|o| o.is_multiple_of(4));
        let params = Params {
            lq: win.nq as u32,
            lk: lk as u32,
            width: w as u32,
            heads: h as u32,
            scale: opts.scale,
            causal: opts.causal as u32,
            q0: win.q0 as u32,
            q_off,
            k_off,
            v_off,
            o_off,
            q_bstride: (lq * w) as u32,
            k_bstride: (lk * w) as u32,
            ml_off: ml_off as u32,
            ..Default::default()
        };
        match variant {
            Variant::Tuned => flash(&c, &bound, &plan, vec4, &params, &win, &passes_a),
            Variant::Naive => naive(&c, &bound, d as u32, vec4, &params, rows, [&passes_a, &passes_b]),
        }
    }
    out
}

fn flash(
    c: &GpuContext,
    bound: &Bound,
    plan: &FlashPlan,
    vec4: bool,
    params: &Params,
    win: &Window,
    passes: &[(usize, usize)],
) {
    let defines = plan.defines(vec4);
    let qblocks = (win.nq as u32).div_ceil(plan.bq);
    let groups = qblocks * params.heads * win.nb as u32;
    let base = Params {
        // The kernel uses exp2: fold log2(e) into the scale.
        scale: params.scale * std::f32::consts::LOG2_E,
        qblocks,
        groups,
        ..*params
    };
    for (i, &range) in passes.iter().enumerate() {
        bound.dispatch(
            c,
            &FLASH,
            "flash",
            &defines,
            &pass(&base, range, i, passes.len()),
            groups,
        );
    }
}

/// The naive kernel: `naive_max` over `max_passes` finds each row's max,
/// then `naive_out` over `out_passes` sums and accumulates and writes.
fn naive(
    c: &GpuContext,
    bound: &Bound,
    d: u32,
    vec4: bool,
    params: &Params,
    rows: usize,
    [max_passes, out_passes]: [&[(usize, usize)]; 2],
) {
    let defines = naive_defines(d, vec4);
    let base = Params {
        groups: rows as u32,
        ..*params
    };
    let groups = (rows as u32).div_ceil(WG);
    for (entry, passes) in [("naive_max", max_passes), ("naive_out", out_passes)] {
        for (i, &range) in passes.iter().enumerate() {
            bound.dispatch(
                c,
                &NAIVE,
                entry,
                &defines,
                &pass(&base, range, i, passes.len()),
                groups,
            );
        }
    }
}

/// The defines of the naive kernel for head dim `d`.
pub(super) fn naive_defines(d: u32, vec4: bool) -> [Define; 4] {
    let def = |name, value| Define { name, value };
    [
        def("VEC4", vec4 as u32),
        def("WG", WG),
        def("D", d),
        def("DP4", d.div_ceil(4)),
    ]
}
