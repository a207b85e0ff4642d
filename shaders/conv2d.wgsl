// 2-D convolution, NCHW: out[n, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx]
//   * x[n, ci, oy*S + ky - pad_t, ox*S + kx - pad_l] + bias[co] + residual.
// CPU twin: src/cpu/conv.rs. Storage T, arithmetic f32.
//
// The tuned kernel is an implicit GEMM on the register-tiled core of
// gemm_tile.wgsl (prepended): per image, C[co, p] = W[co, k] X[k, p] with
// M = output channels, N = output pixels P, K = C_in*KH*KW. C is then the
// NCHW output itself (pixels contiguous), W is the weight tensor as stored,
// and X (im2col) is never materialised: the gather happens while the B slab
// is loaded.
//
// Windows (src/gpu/ops/conv.rs): x is bound from input channel c0 of image n0,
// w from row co0 with `w_off` = c0*KH*KW selecting the input channels, out and
// residual from channel co0. When the input is split into channel chunks,
// later chunks add the partial sums already in `o` (`accumulate`).
// Defines: KH, KW (kernel size, so index math divides by constants); VEC4
// (K and P multiples of 4 and every offset too: vec4 weight loads, vec4
// output / residual along pixels); POINTWISE (1x1, stride 1, no padding,
// with VEC4: vec4 input loads); TALL / WIDE (128 channels / pixels per
// tile); WG = 256.

struct Params {
    images: u32,
    c_in: u32,      // input channels of this window
    h: u32,
    w: u32,
    c_out: u32,     // output channels of this window
    h_out: u32,
    w_out: u32,
    stride: u32,
    pad_t: u32,
    pad_l: u32,
    x_bs: u32,      // elements per image of x, out (whole tensors)
    o_bs: u32,
    w_ld: u32,      // C_in * KH * KW of the whole weight
    x_off: u32,
    w_off: u32,
    o_off: u32,
    r_off: u32,
    bias_off: u32,
    has_bias: u32,
    has_res: u32,
    accumulate: u32,
    tiles_m: u32,
    tiles_n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if POINTWISE
@group(0) @binding(1) var<storage, read> x: array<T4>;
#else
@group(0) @binding(1) var<storage, read> x: array<T>;
#endif
@group(0) @binding(3) var<storage, read> bias: array<T>;
#if VEC4
@group(0) @binding(2) var<storage, read> w: array<T4>;
@group(0) @binding(4) var<storage, read> res: array<T4>;
@group(0) @binding(5) var<storage, read_write> o: array<T4>;
#else
@group(0) @binding(2) var<storage, read> w: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> o: array<T>;
#endif

const KK: u32 = KH * KW;

// ----- naive: one thread per output element ---------------------------------

#if VEC4
#else
@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let pixels = p.h_out * p.w_out;
    if (i >= p.images * p.c_out * pixels) { return; }
    let px = i % pixels;
    let co = (i / pixels) % p.c_out;
    let img = i / (pixels * p.c_out);
    let oy = px / p.w_out;
    let ox = px % p.w_out;
    let xb = p.x_off + img * p.x_bs;
    let wb = p.w_off + co * p.w_ld;
    var sum = 0.0;
    for (var ci = 0u; ci < p.c_in; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            // Unsigned wrap-around makes taps in the top/left padding fail `< h`.
            let iy = oy * p.stride + ky - p.pad_t;
            if (iy >= p.h) { continue; }
            for (var kx = 0u; kx < KW; kx++) {
                let ix = ox * p.stride + kx - p.pad_l;
                if (ix >= p.w) { continue; }
                sum += f32(x[xb + (ci * p.h + iy) * p.w + ix]) * f32(w[wb + ci * KK + ky * KW + kx]);
            }
        }
    }
    let oi = img * p.o_bs + co * pixels + px;
    var v = sum;
    if (p.has_bias != 0u) { v += f32(bias[p.bias_off + co]); }
    if (p.has_res != 0u) { v += f32(res[p.r_off + oi]); }
    if (p.accumulate != 0u) { v += f32(o[p.o_off + oi]); }
    o[p.o_off + oi] = T(v);
}
#endif

// ----- tuned: implicit GEMM -------------------------------------------------

// Load l of the weight slab at k0 (rows co, k contiguous).
fn fetch_w(co0: u32, k0: u32, l: u32) -> vec4<f32> {
    let co = co0 + l / 4u;
    let k = k0 + (l % 4u) * 4u;
    let kn = p.c_in * KK;
    let i = p.w_off + co * p.w_ld + k;
#if VEC4
    if (co < p.c_out && k < kn) { return vec4<f32>(w[i / 4u]); }
    return vec4<f32>();
#else
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        if (co < p.c_out && k + j < kn) { v[j] = f32(w[i + j]); }
    }
    return v;
#endif
}

// Where the 4 output pixels of one thread read the input: the top-left tap
// (oy*S - pad_t, ox*S - pad_l), and whether the pixel exists.
struct Taps {
    iy: vec4<i32>,
    ix: vec4<i32>,
    ok: vec4<bool>,
}

fn taps(px0: u32) -> Taps {
    var r: Taps;
    let pixels = p.h_out * p.w_out;
    for (var j = 0u; j < 4u; j++) {
        let px = px0 + j;
        r.iy[j] = i32((px / p.w_out) * p.stride) - i32(p.pad_t);
        r.ix[j] = i32((px % p.w_out) * p.stride) - i32(p.pad_l);
        r.ok[j] = px < pixels;
    }
    return r;
}

// Row k of the im2col slab for the thread's 4 pixels starting at px0.
fn fetch_x(xb: u32, px0: u32, tp: Taps, k: u32) -> vec4<f32> {
#if POINTWISE
    // 1x1, stride 1, no padding: X[k, p] = x[k, p], P a multiple of 4.
    if (k < p.c_in && px0 < p.h_out * p.w_out) {
        return vec4<f32>(x[(xb + k * p.h_out * p.w_out + px0) / 4u]);
    }
    return vec4<f32>();
#else
    let ci = k / KK;
    let ky = i32((k % KK) / KW);
    let kx = i32(k % KW);
    let iy = tp.iy + vec4<i32>(ky);
    let ix = tp.ix + vec4<i32>(kx);
    let inside = tp.ok & (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h)))
        & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(p.w))) & vec4<bool>(ci < p.c_in);
    // Padding taps read element 0 of the window and are zeroed: no branch.
    let idx = select(vec4<i32>(0), (vec4<i32>(i32(ci)) * i32(p.h) + iy) * i32(p.w) + ix, inside);
    let v = vec4<f32>(f32(x[xb + u32(idx.x)]), f32(x[xb + u32(idx.y)]),
                      f32(x[xb + u32(idx.z)]), f32(x[xb + u32(idx.w)]));
    return select(vec4<f32>(), v, inside);
#endif
}

// Writes acc + bias[co] + residual (+ the partial sum in o) for channel co,
// pixels px .. px+3 at element index oi.
fn emit(co: u32, px: u32, oi: u32, v_acc: vec4<f32>) {
    if (co >= p.c_out) { return; }
    var v = v_acc;
    if (p.has_bias != 0u) { v += vec4<f32>(f32(bias[p.bias_off + co])); }
#if VEC4
    if (px >= p.h_out * p.w_out) { return; }
    if (p.has_res != 0u) { v += vec4<f32>(res[(p.r_off + oi) / 4u]); }
    if (p.accumulate != 0u) { v += vec4<f32>(o[(p.o_off + oi) / 4u]); }
    o[(p.o_off + oi) / 4u] = T4(v);
#else
    let pixels = p.h_out * p.w_out;
    for (var j = 0u; j < 4u; j++) {
        if (px + j < pixels) {
            var s = v[j];
            if (p.has_res != 0u) { s += f32(res[p.r_off + oi + j]); }
            if (p.accumulate != 0u) { s += f32(o[p.o_off + oi + j]); }
            o[p.o_off + oi + j] = T(s);
        }
    }
#endif
}

@compute @workgroup_size(WG)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
    // Channel tiles first: neighbouring workgroups gather the same pixels.
    let id = wg.x + wg.y * nwg.x;
    if (id >= p.tiles_m * p.tiles_n * p.images) { return; }
    let co0 = (id % p.tiles_m) * TILE_M;
    let px0 = ((id / p.tiles_m) % p.tiles_n) * TILE_N;
    let img = id / (p.tiles_m * p.tiles_n);
    let tx = t % 16u;
    let ty = t / 16u;
    let kn = p.c_in * KK;
    let xb = p.x_off + img * p.x_bs;
    // This thread gathers pixels gx*4 .. +3 of the tile for slab rows gk
    // (and gk + BK/2 when WIDE: 128 pixels take two passes of 256 threads).
    let gx = t % QN;
    let gk = t / QN;
    let g_px = px0 + gx * 4u;
    let tp = taps(g_px);

    var ra0 = fetch_w(co0, 0u, t);
    var rb0 = fetch_x(xb, g_px, tp, gk);
#if TALL
    var ra1 = fetch_w(co0, 0u, t + WG);
#endif
#if WIDE
    var rb1 = fetch_x(xb, g_px, tp, gk + BK / 2u);
#endif
    for (var k0 = 0u; k0 < kn; k0 += BK) {
        workgroupBarrier();
        put_a_k4(t / 4u, t % 4u, ra0);
        put_b_row4(gk, gx, rb0);
#if TALL
        put_a_k4((t + WG) / 4u, t % 4u, ra1);
#endif
#if WIDE
        put_b_row4(gk + BK / 2u, gx, rb1);
#endif
        workgroupBarrier();
        let k1 = k0 + BK;
        if (k1 < kn) {
            ra0 = fetch_w(co0, k1, t);
            rb0 = fetch_x(xb, g_px, tp, k1 + gk);
#if TALL
            ra1 = fetch_w(co0, k1, t + WG);
#endif
#if WIDE
            rb1 = fetch_x(xb, g_px, tp, k1 + gk + BK / 2u);
#endif
        }
        mma_slab(tx, ty);
    }

    let pixels = p.h_out * p.w_out;
    for (var h = 0u; h < COL_GROUPS; h++) {
        let px = px0 + acc_col(h, tx);
        for (var r = 0u; r < ROW_GROUPS; r++) {
            let co = co0 + acc_row(r, ty);
            emit(co, px, img * p.o_bs + co * pixels + px, acc(h, r));
        }
    }
}
