// Attention family, the part both kernels share: parameters, bindings, vec4
// loads and stores, the pass state. The Rust side (src/gpu/ops/attention/)
// prepends this file to attention_flash.wgsl (fused flash attention, the
// tuned kernel) or attention_naive.wgsl (one thread per row, kept for
// comparison). CPU twin: src/cpu/attention.rs. Storage T, arithmetic f32.
//
// Layout: q [B, Lq, H*D], k/v [B, Lk, H*D], out like q; head h owns channels
// h*D..(h+1)*D of every row (W = H*D is the row stride). Every entry point
// binds (q, k, v, out, st).
//
// Key passes: both attention kernels process keys [k_begin, k_end) per
// dispatch and can resume from / save to the f32 state `st`. A hardware
// adapter needs one pass; llvmpipe silently stops every loop of an invocation
// after 65535 iterations in total, so long sequences take several there.

struct Params {
    lq: u32,         // query rows per batch item in this window
    lk: u32,         // keys per batch item
    width: u32,      // W = H*D
    heads: u32,
    scale: f32,      // flash: scale * log2(e) (it uses exp2); naive: scale
    causal: u32,     // 1: query i sees keys 0..=i only
    q0: u32,         // index of the window's first query (for the causal mask)
    groups: u32,     // flash: workgroups of work; naive: rows
    q_off: u32,      // element offsets of the windows inside the bindings
    k_off: u32,
    v_off: u32,
    o_off: u32,
    q_bstride: u32,  // elements between batch items of q / out (Lq * W)
    k_bstride: u32,  // elements between batch items of k / v (Lk * W)
    qblocks: u32,    // flash: query blocks per (batch, head)
    k_begin: u32,    // keys [k_begin, k_end) are processed by this pass
    k_end: u32,
    first: u32,      // 1: start fresh; 0: resume from the state in `st`
    last: u32,       // 1: write the output; 0: save the state for the next pass
    ml_off: u32,     // vec4 index in `st` of the per-row (max, sum) part
}

// Pass state in `st`: per (batch, row, head) of the window DP4 vec4 of
// unnormalised output, then from ml_off one vec4 (running max, running sum,
// 0, 0) each. The flash max is in the log2 domain, the naive one is not.
#if VEC4
alias IN = vec4<T>;  // D and every offset are multiples of 4: 128-bit (f32) loads
#else
alias IN = T;
#endif
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<IN>;
@group(0) @binding(2) var<storage, read> k: array<IN>;
@group(0) @binding(3) var<storage, read> v: array<IN>;
@group(0) @binding(4) var<storage, read_write> o: array<IN>;
@group(0) @binding(5) var<storage, read_write> st: array<vec4<f32>>;

// Channels d..d+3 (d a multiple of 4) of input `which` (0 q, 1 k, 2 v) at
// element index e (the index of channel d); channels >= D read as 0.
fn fetch4(which: u32, e: u32, d: u32) -> vec4<f32> {
#if VEC4
    switch which {
        case 0u: { return vec4<f32>(q[e / 4u]); }
        case 1u: { return vec4<f32>(k[e / 4u]); }
        default: { return vec4<f32>(v[e / 4u]); }
    }
#else
    var r = vec4<f32>(0.0);
    switch which {
        case 0u: {
            r.x = f32(q[e]);
            if (d + 1u < D) { r.y = f32(q[e + 1u]); }
            if (d + 2u < D) { r.z = f32(q[e + 2u]); }
            if (d + 3u < D) { r.w = f32(q[e + 3u]); }
        }
        case 1u: {
            r.x = f32(k[e]);
            if (d + 1u < D) { r.y = f32(k[e + 1u]); }
            if (d + 2u < D) { r.z = f32(k[e + 2u]); }
            if (d + 3u < D) { r.w = f32(k[e + 3u]); }
        }
        default: {
            r.x = f32(v[e]);
            if (d + 1u < D) { r.y = f32(v[e + 1u]); }
            if (d + 2u < D) { r.z = f32(v[e + 2u]); }
            if (d + 3u < D) { r.w = f32(v[e + 3u]); }
        }
    }
    return r;
#endif
}

// Writes channels d..d+3 (those < D) of the output at element index e.
fn store4(e: u32, d: u32, x: vec4<f32>) {
#if VEC4
    o[e / 4u] = vec4<T>(x);
#else
    o[e] = T(x.x);
    if (d + 1u < D) { o[e + 1u] = T(x.y); }
    if (d + 2u < D) { o[e + 2u] = T(x.z); }
    if (d + 3u < D) { o[e + 3u] = T(x.w); }
#endif
}

// A masked score: finite, so differences of two never give NaN.
const NEG: f32 = -1.0e30;

// Index in `st` of the state of (window batch b, row i, head h): the first of
// its DP4 output vec4, or with `ml` its (max, sum) vec4.
fn state_index(b: u32, i: u32, h: u32) -> u32 {
    return (b * p.lq + i) * p.heads + h;
}
