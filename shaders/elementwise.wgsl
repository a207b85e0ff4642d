// Element-wise kernels: unary activations, broadcast binary ops, GEGLU.
// CPU twin: src/cpu/elementwise.rs. Arithmetic in f32, storage T.
//
// Every entry point binds (x, y, out); unary ops and GEGLU bind x as y too,
// so the module declares each binding once.

struct Params {
    n: u32,        // elements this dispatch writes
    x_off: u32,    // element offset of the window inside each binding
    y_off: u32,
    o_off: u32,
    op: u32,       // Unary / Binary code, see src/gpu/ops/elementwise.rs
    p0: f32,       // op parameters (affine mul/add, clamp min/max)
    p1: f32,
    rank: u32,     // binary: rank of the output
    start: u32,    // binary: global index of this window's first element
    y_full: u32,   // binary: 1 when y has the output's shape (no broadcast)
    inner: u32,    // geglu: F, half the input row
    _pad: u32,
    shape: array<vec4<u32>, 2>,    // binary: output dims, outermost first
    ystride: array<vec4<u32>, 2>,  // binary: y strides per output dim (0 = broadcast)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> y: array<T>;
@group(0) @binding(3) var<storage, read_write> o: array<T>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// erf by Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
fn erf(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-a * a));
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}

fn unary_op(v: f32) -> f32 {
    switch p.op {
        case 0u: { return gelu(v); }
        case 1u: { return v / (1.0 + exp(-1.702 * v)); }
        case 2u: { return v / (1.0 + exp(-v)); }
        case 3u: { return exp(v); }
        case 4u: { return v * p.p0 + p.p1; }
        default: { return clamp(v, p.p0, p.p1); }
    }
}

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) { return; }
    o[p.o_off + i] = T(unary_op(f32(x[p.x_off + i])));
}

fn dim_at(a: array<vec4<u32>, 2>, d: u32) -> u32 {
    return a[d / 4u][d % 4u];
}

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) { return; }
    var yi = i;
    if (p.y_full == 0u) {
        // Decompose the global output index and dot it with y's strides.
        var rem = p.start + i;
        yi = 0u;
        for (var d = i32(p.rank) - 1; d >= 0; d--) {
            let s = dim_at(p.shape, u32(d));
            yi += (rem % s) * dim_at(p.ystride, u32(d));
            rem /= s;
        }
    }
    let a = f32(x[p.x_off + i]);
    let b = f32(y[p.y_off + yi]);
    var r: f32;
    switch p.op {
        case 0u: { r = a + b; }
        case 1u: { r = a - b; }
        default: { r = a * b; }
    }
    o[p.o_off + i] = T(r);
}

// out[r, j] = x[r, j] * gelu(x[r, F + j]) for rows r of width 2F.
@compute @workgroup_size(WG)
fn geglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) { return; }
    let f = p.inner;
    let row = i / f;
    let j = i % f;
    let h = f32(x[p.x_off + row * 2u * f + j]);
    let g = f32(x[p.x_off + row * 2u * f + f + j]);
    o[p.o_off + i] = T(h * gelu(g));
}
